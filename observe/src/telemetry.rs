//! Tracing set-up (log lines, and spans exported over OTLP when an endpoint is set) and
//! the production shutdown signal.

use anyhow::Context;
use opentelemetry::{KeyValue, trace::TracerProvider};
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::{Resource, trace::SdkTracerProvider};
use std::time::{Duration, Instant};
use tracing::{Level, Metadata};
use tracing_subscriber::{
    EnvFilter, Layer, fmt,
    layer::{Context as LayerContext, Filter, SubscriberExt},
    registry::LookupSpan,
    util::SubscriberInitExt,
};

/// The RocketMQ client's and sqlx's part of the services' log filter (see
/// [`DEFAULT_FILTER`]); `devstack` appends it to the filters it gives the services.
macro_rules! client_filter {
    () => {
        "rocketmq_client_rust=warn,\
         rocketmq_client_rust::implementation::mq_client_api_impl::route=error,\
         rocketmq_client_rust::factory::route_update=error,\
         rocketmq_transport=warn,rocketmq_remoting=warn,rocketmq_runtime=warn,rocketmq_model=warn,\
         rocketmq_observability=warn,\
         rocketmq_transport::clients::rocketmq_tokio_client::connect_flight=off,\
         rocketmq_transport::clients::rocketmq_tokio_client::request=off,\
         rocketmq_client_rust::consumer::pull_callback=error,\
         rocketmq_client_rust::factory::mq_client_instance=error,\
         rocketmq_client_rust::consumer::consumer_impl::re_balance=error,\
         rocketmq_client_rust::producer::producer_impl::default_mq_producer_impl::lifecycle=off,\
         rocketmq_runtime::blocking::executor=error,\
         sqlx_core::pool::connection=error"
    };
}

/// The services' log filter when `RUST_LOG` is unset: their own lines from info up, the
/// RocketMQ client's only from warn up. A healthy service logs no WARN and no ERROR. The
/// client's route lookup warns while a retry topic (`%RETRY%<group>`) does not exist yet,
/// which is normal on a cluster where the broker creates it at the group's first
/// heartbeat; a route that stays missing fails the send or the subscription, and that is
/// logged by the service. Its route refresh also warns when two refreshes of one topic
/// race and the older result is dropped (an optimistic-concurrency conflict, resolved by
/// the newer one: `factory/route_update.rs`), which happens under load at start.
///
/// An outage is logged once by the service ([`crate::outage`]), so the lines written per
/// failed attempt are left out: the RocketMQ transport's for every refused or failed
/// connect and every request that found no connection (1,130 in a 20 s broker
/// partition), the client's for every failed pull, heartbeat, rebalance and route lookup
/// and every listener call slower than a second, the producer's for every check-back
/// answer it could not deliver (361 ERROR lines for one broker restart after a MySQL cut;
/// the broker asks again, and that module logs nothing else a service here can act on:
/// a send without callback, which the services never make, or a check-back listener
/// that panicked: order_srv's runs its work as a task (`mq::run_on`), whose panic the
/// panic hook prints and which answers UNKNOWN), and
/// sqlx's pool's for every connection it closes after its release check failed.
pub const DEFAULT_FILTER: &str = concat!("info,", client_filter!());

/// [`DEFAULT_FILTER`] without its first directive: what a tool appends to its own
/// (e.g. `warn,order_srv=info,` + this).
pub const CLIENT_FILTER: &str = client_filter!();

/// Who is exporting spans: the OpenTelemetry resource of a service.
#[derive(Clone, Copy, Debug)]
pub struct ServiceName {
    pub name: &'static str,
    pub version: &'static str,
}

/// The installed subscriber's exporter; [`Telemetry::shutdown`] sends what is buffered.
#[must_use = "shut it down at exit, or the last spans are lost"]
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
}

impl Telemetry {
    /// Whether spans are exported.
    pub fn exporting(&self) -> bool {
        self.provider.is_some()
    }

    /// Exports the spans still buffered and stops the exporter.
    pub fn shutdown(self) {
        if let Some(provider) = self.provider
            && let Err(e) = provider.shutdown()
        {
            tracing::warn!(error = %e, "exporting the last spans failed");
        }
    }
}

/// Installs the process's subscriber: log lines (a `fmt` layer filtered by `RUST_LOG`,
/// default `default_filter`; lines name their module, so a line leads to its source) and,
/// when `otlp_endpoint` is set, spans exported over OTLP/gRPC in batches
/// ([`crate::trace`] carries their context across the services). Without an endpoint
/// there is no OpenTelemetry layer at all: nothing is built, sent or propagated. Must
/// run inside the tokio runtime (the exporter's gRPC client lives there). Safe to call
/// more than once: later calls install nothing.
pub fn init(
    service: ServiceName,
    otlp_endpoint: Option<&str>,
    default_filter: &str,
) -> anyhow::Result<Telemetry> {
    let provider = match otlp_endpoint.filter(|endpoint| !endpoint.is_empty()) {
        Some(endpoint) => {
            let exporter = opentelemetry_otlp::SpanExporter::builder()
                .with_tonic()
                .with_endpoint(endpoint)
                .build()
                .with_context(|| format!("OTEL_EXPORTER_OTLP_ENDPOINT: {endpoint}"))?;
            Some(
                SdkTracerProvider::builder()
                    .with_batch_exporter(exporter)
                    .with_resource(resource(service))
                    .build(),
            )
        }
        None => None,
    };
    let installed = tracing_subscriber::registry()
        .with(env_filter(default_filter))
        .with(fmt::layer().with_filter(RepeatLimit::default()))
        .with(provider.as_ref().map(|p| layer(p, service)))
        .try_init()
        .is_ok();
    if installed && let Some(endpoint) = otlp_endpoint.filter(|_| provider.is_some()) {
        tracing::info!(endpoint, "exporting traces over OTLP");
    }
    Ok(Telemetry { provider })
}

/// Libraries whose WARN and ERROR lines [`RepeatLimit`] thins out.
const LIBRARIES: [&str; 6] = ["rocketmq_", "sqlx", "tonic", "h2", "hyper", "tower"];

/// The log lines' filter: a WARN or ERROR statement of a library ([`LIBRARIES`]) writes at
/// most one line per [`REPEAT_WITHIN`]; its repeats are dropped. During an outage the
/// libraries write a line per attempt (the RocketMQ consumer one per offset it could not
/// persist and per message it could not send back for retry, every few seconds per
/// queue), while the service says once that the broker is away and once that it is back
/// ([`crate::outage`], with the number of failed attempts). The service's own lines are
/// never dropped.
#[derive(Debug, Default)]
pub struct RepeatLimit {
    last: std::sync::Mutex<
        std::collections::HashMap<(tracing::callsite::Identifier, String), Instant>,
    >,
}

/// How often one library log statement may write a WARN or ERROR line.
pub const REPEAT_WITHIN: Duration = Duration::from_secs(60);

impl RepeatLimit {
    fn limited(metadata: &Metadata<'_>) -> bool {
        metadata.is_event()
            && *metadata.level() <= Level::WARN
            && LIBRARIES.iter().any(|l| metadata.target().starts_with(l))
    }

    /// Whether this line of its statement may be written `now`. A statement is its
    /// callsite and target: `log` records of one level share a callsite, their targets
    /// tell them apart.
    fn admit(&self, metadata: &Metadata<'_>, now: Instant) -> bool {
        let Ok(mut last) = self.last.lock() else {
            return true;
        };
        let statement = (metadata.callsite(), metadata.target().to_owned());
        match last.get(&statement) {
            Some(at) if now.saturating_duration_since(*at) < REPEAT_WITHIN => false,
            _ => {
                last.insert(statement, now);
                true
            }
        }
    }
}

impl<S> Filter<S> for RepeatLimit {
    /// Everything may be wanted; the choice is made per line, in [`Filter::event_enabled`]
    /// (which runs once for each line, where `enabled` may be asked more than once, e.g.
    /// for a `log` record).
    fn enabled(&self, _: &Metadata<'_>, _: &LayerContext<'_, S>) -> bool {
        true
    }

    fn event_enabled(&self, event: &tracing::Event<'_>, _: &LayerContext<'_, S>) -> bool {
        let metadata = event.metadata();
        !Self::limited(metadata) || self.admit(metadata, Instant::now())
    }
}

/// The layer that turns `tracing` spans into OpenTelemetry spans of `provider`'s tracer.
pub fn layer<S>(provider: &SdkTracerProvider, service: ServiceName) -> impl Layer<S> + use<S>
where
    S: tracing::Subscriber + for<'span> LookupSpan<'span>,
{
    tracing_opentelemetry::layer()
        .with_tracer(provider.tracer(service.name))
        // Log events stay log lines; spans carry the timings.
        .with_level(true)
        .with_threads(false)
}

/// The resource attributes of a service's spans: its name and version.
pub fn resource(service: ServiceName) -> Resource {
    Resource::builder()
        .with_service_name(service.name)
        .with_attribute(KeyValue::new("service.version", service.version))
        .build()
}

/// `RUST_LOG`, or `default_filter` when it is unset or malformed.
pub fn env_filter(default_filter: &str) -> EnvFilter {
    EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_filter))
}

/// Tests are silent unless `TEST_LOG=1`.
pub fn init_for_tests() {
    if std::env::var_os("TEST_LOG").is_some() {
        let _ = tracing_subscriber::registry()
            .with(env_filter("info"))
            .with(fmt::layer())
            .try_init();
    }
}

/// Resolves on SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut sig) => {
                sig.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = terminate => {},
    }
    tracing::info!("shutdown signal received");
}

#[cfg(test)]
mod tests {
    use std::{
        io::Write,
        sync::{Arc, Mutex},
    };

    use tracing_subscriber::{Layer, fmt, layer::SubscriberExt};

    use super::RepeatLimit;

    #[derive(Clone, Default)]
    struct Lines(Arc<Mutex<Vec<u8>>>);

    impl Write for Lines {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            if let Ok(mut lines) = self.0.lock() {
                lines.extend_from_slice(buf);
            }
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_library_statement_repeating_writes_one_line_and_the_services_write_every_one() {
        let lines = Lines::default();
        let writer = lines.clone();
        let subscriber = tracing_subscriber::registry().with(
            fmt::layer()
                .with_ansi(false)
                .with_writer(move || writer.clone())
                .with_filter(RepeatLimit::default()),
        );
        tracing::subscriber::with_default(subscriber, || {
            for queue in 0..50 {
                tracing::error!(
                    target: "rocketmq_client_rust::consumer::store::remote_broker_offset_store",
                    queue,
                    "updateConsumeOffsetToBroker exception"
                );
                tracing::warn!(target: "order_srv::timeout", queue, "the service's own line");
                tracing::info!(target: "rocketmq_client_rust::consumer", queue, "an info line");
            }
            tracing::error!(
                target: "rocketmq_client_rust::consumer::consumer_impl",
                "another statement of the library"
            );
        });
        let text = lines
            .0
            .lock()
            .map(|l| String::from_utf8_lossy(&l).into_owned())
            .unwrap_or_default();
        let count = |needle: &str| text.lines().filter(|l| l.contains(needle)).count();
        assert_eq!(count("updateConsumeOffsetToBroker"), 1, "{text}");
        assert_eq!(count("the service's own line"), 50);
        assert_eq!(count("an info line"), 50);
        assert_eq!(count("another statement of the library"), 1);
    }
}
