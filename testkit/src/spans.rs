//! The spans of this test process, kept in memory so a test can assert the tree of one
//! trace: the same `tracing` → OpenTelemetry layer the services install when they export
//! ([`observe::telemetry::layer`]), with an in-memory exporter instead of OTLP.
//!
//! Both services of a test stack run in the test process and share this one subscriber,
//! but their spans meet only through what crosses the wire (gRPC metadata, message
//! properties): a hop that does not propagate starts a new trace, and the test sees it.

use std::sync::OnceLock;

use opentelemetry::trace::{SpanId, TraceId};
use opentelemetry_sdk::trace::{InMemorySpanExporter, SdkTracerProvider, SpanData};
use tracing_subscriber::{fmt, layer::SubscriberExt, util::SubscriberInitExt};

use observe::telemetry::{self, ServiceName};

static CAPTURE: OnceLock<(SdkTracerProvider, InMemorySpanExporter)> = OnceLock::new();

/// Installs the capturing subscriber once per process (log lines too with `TEST_LOG=1`).
/// Returns `false` when another subscriber was installed first: then nothing is captured.
pub fn capture() -> bool {
    let mut installed_here = false;
    CAPTURE.get_or_init(|| {
        let exporter = InMemorySpanExporter::default();
        let provider = SdkTracerProvider::builder()
            .with_simple_exporter(exporter.clone())
            .build();
        let service = ServiceName {
            name: "test",
            version: env!("CARGO_PKG_VERSION"),
        };
        installed_here = tracing_subscriber::registry()
            .with(telemetry::env_filter(telemetry::DEFAULT_FILTER))
            .with(std::env::var_os("TEST_LOG").map(|_| fmt::layer()))
            .with(telemetry::layer(&provider, service))
            .try_init()
            .is_ok();
        (provider, exporter)
    });
    installed_here || CAPTURE.get().is_some()
}

/// Every finished span of `trace` so far.
pub fn of_trace(trace: TraceId) -> Vec<SpanData> {
    let Some((_, exporter)) = CAPTURE.get() else {
        return Vec::new();
    };
    exporter
        .get_finished_spans()
        .unwrap_or_default()
        .into_iter()
        .filter(|span| span.span_context.trace_id() == trace)
        .collect()
}

/// A fresh W3C `traceparent` (sampled), as a gateway would send it: the trace id and
/// the id of the gateway's span.
pub fn new_traceparent() -> (String, TraceId, SpanId) {
    let trace = TraceId::from(rand::random::<u128>() | 1);
    let span = SpanId::from(rand::random::<u64>() | 1);
    (format!("00-{trace}-{span}-01"), trace, span)
}

/// The chain from `span` up through its parents within `spans`, nearest first, ending at
/// the first parent not among them (for a trace that came in from a gateway: its span).
pub fn ancestors<'a>(spans: &'a [SpanData], span: &'a SpanData) -> (Vec<&'a SpanData>, SpanId) {
    let mut chain = Vec::new();
    let mut parent = span.parent_span_id;
    while let Some(next) = spans.iter().find(|s| s.span_context.span_id() == parent) {
        if chain.len() > spans.len() {
            break;
        }
        chain.push(next);
        parent = next.parent_span_id;
    }
    (chain, parent)
}
