//! W3C trace context across every hop of an order, so one order's life is one trace:
//! gRPC metadata (the gateway → order_srv, order_srv → inventory_srv) and the user
//! properties of every message (the half message, the delayed pay-timeout, the reback).
//!
//! A message continues the trace of the span that sent it, however late it arrives: the
//! pay-timeout is consumed a pay timeout after the order (30 minutes by default), and an
//! operator looking at an order wants its close and its stock coming back in the same
//! trace as its creation, not in a linked one to be found separately. The consumer's span
//! starts when the message is handled, so the gap shows as what it is.
//!
//! With tracing off (no exporter, see [`crate::telemetry`]) spans carry no OpenTelemetry
//! context: [`Carrier::of`] is empty, nothing is added to requests or messages, and an
//! incoming context is ignored.

use opentelemetry::{
    propagation::{Extractor, Injector, TextMapPropagator},
    trace::TraceContextExt,
};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use tracing::Span;
use tracing_opentelemetry::OpenTelemetrySpanExt;

/// The W3C Trace Context fields, as gRPC metadata keys and message user properties.
pub const FIELDS: [&str; 2] = ["traceparent", "tracestate"];

/// A trace context in transit: the W3C fields as name/value pairs.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Carrier(pub Vec<(String, String)>);

impl Carrier {
    /// The context of `span`, to send along; empty when tracing is off.
    pub fn of(span: &Span) -> Self {
        let mut carrier = Self::default();
        TraceContextPropagator::new().inject_context(&span.context(), &mut carrier);
        carrier
    }

    /// Reads the W3C fields with `get` (a header map, a message's properties).
    pub fn read(get: impl Fn(&str) -> Option<String>) -> Self {
        Self(
            FIELDS
                .iter()
                .filter_map(|field| get(field).map(|value| ((*field).to_owned(), value)))
                .collect(),
        )
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Makes `span` part of the trace this carrier names, as a child of the span that
    /// sent it, and records the trace id in the span's `trace_id` field (when it has one)
    /// so that log lines lead to the trace. A carrier without a valid context leaves the
    /// span where it is: a new trace, or the child of its tracing parent.
    pub fn continue_in(&self, span: &Span) {
        let parent = TraceContextPropagator::new().extract(self);
        if parent.span().span_context().is_valid() {
            // Fails only when tracing is off: then there is nothing to continue.
            let _ = span.set_parent(parent);
        }
        record_trace_id(span);
    }
}

/// Records the trace id of `span` in its `trace_id` field (a field declared
/// `trace_id = tracing::field::Empty`); nothing when tracing is off.
pub fn record_trace_id(span: &Span) {
    let context = span.context();
    let span_context = context.span().span_context().clone();
    if span_context.is_valid() {
        span.record("trace_id", span_context.trace_id().to_string());
    }
}

impl Injector for Carrier {
    fn set(&mut self, key: &str, value: String) {
        self.0.push((key.to_owned(), value));
    }
}

impl Extractor for Carrier {
    fn get(&self, key: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(name, _)| name.eq_ignore_ascii_case(key))
            .map(|(_, value)| value.as_str())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.iter().map(|(name, _)| name.as_str()).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_carrier_without_a_context_changes_nothing() {
        let span = Span::none();
        Carrier::default().continue_in(&span);
        assert!(Carrier::of(&span).is_empty());
    }

    #[test]
    fn fields_are_read_by_name_and_looked_up_without_case() {
        let carrier = Carrier::read(|field| (field == "traceparent").then(|| "00-x".to_owned()));
        assert_eq!(
            carrier.0,
            vec![("traceparent".to_owned(), "00-x".to_owned())]
        );
        assert_eq!(carrier.get("TraceParent"), Some("00-x"));
        assert_eq!(carrier.get("tracestate"), None);
    }
}
