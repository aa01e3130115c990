//! What both services share at their edges: [`telemetry`] (tracing set-up and the
//! shutdown signal), the gRPC edge with health and reflection ([`grpc::serve`]) and the
//! Prometheus `/metrics` endpoint. A service registers its
//! metrics in its own [`Registry`] (two services in one process stay apart) and hands the
//! registry and a bound listener to [`serve`].

pub mod grpc;
pub mod outage;
pub mod service;
pub mod telemetry;
pub mod trace;

use axum::http;
use prometheus::{Encoder, TextEncoder};
pub use prometheus::{
    Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, Opts, Registry,
};
use tokio::net::TcpListener;

/// Resolves once a service's stop signal turns true (or its sender is gone): the one
/// shutdown broadcast that reaches its background tasks (metrics endpoint, purge).
pub async fn stopped(mut stop: tokio::sync::watch::Receiver<bool>) {
    let _ = stop.wait_for(|stop| *stop).await;
}

/// Latency buckets (seconds) that resolve a tenth of a millisecond where one CreateOrder's
/// steps live on an idle machine, single milliseconds under load, up to the multi-second
/// tails of timeouts and check-backs.
pub const LATENCY_BUCKETS: &[f64] = &[
    0.0001, 0.0002, 0.0003, 0.0004, 0.0005, 0.00075, 0.001, 0.0015, 0.002, 0.003, 0.004, 0.005,
    0.0075, 0.01, 0.015, 0.02, 0.03, 0.05, 0.075, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0,
];

/// Registers a latency histogram family (seconds, [`LATENCY_BUCKETS`]).
pub fn latency_vec(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> HistogramVec {
    let histogram = HistogramVec::new(
        HistogramOpts::new(name, help).buckets(LATENCY_BUCKETS.to_vec()),
        labels,
    )
    .unwrap_or_else(|e| panic!("metric {name} is malformed: {e}"));
    registry
        .register(Box::new(histogram.clone()))
        .unwrap_or_else(|e| panic!("metric {name} registered twice: {e}"));
    histogram
}

/// Registers one histogram (no labels) with its own buckets (seconds).
pub fn histogram(registry: &Registry, name: &str, help: &str, buckets: &[f64]) -> Histogram {
    let histogram = Histogram::with_opts(HistogramOpts::new(name, help).buckets(buckets.to_vec()))
        .unwrap_or_else(|e| panic!("metric {name} is malformed: {e}"));
    registry
        .register(Box::new(histogram.clone()))
        .unwrap_or_else(|e| panic!("metric {name} registered twice: {e}"));
    histogram
}

/// Registers a counter family, or explains which name collided.
pub fn counter_vec(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    let counter = IntCounterVec::new(Opts::new(name, help), labels)
        .unwrap_or_else(|e| panic!("metric {name} is malformed: {e}"));
    registry
        .register(Box::new(counter.clone()))
        .unwrap_or_else(|e| panic!("metric {name} registered twice: {e}"));
    counter
}

/// Registers a gauge.
pub fn gauge(registry: &Registry, name: &str, help: &str) -> IntGauge {
    let gauge =
        IntGauge::new(name, help).unwrap_or_else(|e| panic!("metric {name} is malformed: {e}"));
    registry
        .register(Box::new(gauge.clone()))
        .unwrap_or_else(|e| panic!("metric {name} registered twice: {e}"));
    gauge
}

/// Serves `GET /metrics` (text format 0.0.4) until `shutdown` resolves. Anything else
/// gets a 404. Every connection is bounded: its request head must arrive within
/// [`METRICS_HEAD_WITHIN`] and the whole exchange end within [`METRICS_EXCHANGE_WITHIN`]
/// (one request per connection), so a client that connects and goes silent holds
/// nothing for long.
pub async fn serve(listener: TcpListener, registry: Registry, shutdown: impl Future<Output = ()>) {
    let app = axum::Router::new()
        .route(
            "/metrics",
            axum::routing::get(move || {
                let registry = registry.clone();
                async move { metrics_text(&registry) }
            }),
        )
        .fallback(|| async { (http::StatusCode::NOT_FOUND, "try /metrics\n") });
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            () = &mut shutdown => return,
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    let service = hyper_util::service::TowerToHyperService::new(app.clone());
                    tokio::spawn(async move {
                        let connection = hyper::server::conn::http1::Builder::new()
                            .timer(hyper_util::rt::TokioTimer::new())
                            .header_read_timeout(METRICS_HEAD_WITHIN)
                            .keep_alive(false)
                            .serve_connection(hyper_util::rt::TokioIo::new(stream), service);
                        match tokio::time::timeout(METRICS_EXCHANGE_WITHIN, connection).await {
                            Ok(Ok(())) => {}
                            Ok(Err(e)) => tracing::debug!(%peer, error = %e, "metrics request failed"),
                            Err(_) => tracing::debug!(%peer, "metrics request cut at its deadline"),
                        }
                    });
                }
                Err(e) => tracing::warn!(error = %e, "metrics listener accept failed"),
            }
        }
    }
}

/// How long a metrics client has to send its request head.
pub const METRICS_HEAD_WITHIN: std::time::Duration = std::time::Duration::from_secs(5);

/// How long one metrics connection may last in all.
pub const METRICS_EXCHANGE_WITHIN: std::time::Duration = std::time::Duration::from_secs(10);

/// The registry in Prometheus' text format.
fn metrics_text(registry: &Registry) -> axum::response::Response {
    use axum::response::IntoResponse;
    let encoder = TextEncoder::new();
    let mut body = Vec::new();
    match encoder.encode(&registry.gather(), &mut body) {
        Ok(()) => (
            [(http::header::CONTENT_TYPE, encoder.format_type().to_owned())],
            body,
        )
            .into_response(),
        Err(e) => (http::StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::{METRICS_HEAD_WITHIN, Registry, serve};

    async fn endpoint() -> std::net::SocketAddr {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("a listener");
        let addr = listener.local_addr().expect("its address");
        let registry = Registry::new();
        let counter =
            prometheus::IntCounter::new("shop_test_total", "a test counter").expect("a counter");
        counter.inc();
        registry.register(Box::new(counter)).expect("registered");
        tokio::spawn(serve(listener, registry, std::future::pending()));
        addr
    }

    async fn get(addr: std::net::SocketAddr, path: &str) -> String {
        let mut stream = tokio::net::TcpStream::connect(addr)
            .await
            .expect("connects");
        let request = format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n");
        stream.write_all(request.as_bytes()).await.expect("sent");
        let mut answer = String::new();
        stream.read_to_string(&mut answer).await.expect("read");
        answer
    }

    #[tokio::test]
    async fn metrics_are_served_and_anything_else_is_not_found() {
        let addr = endpoint().await;
        let metrics = get(addr, "/metrics").await;
        assert!(metrics.starts_with("HTTP/1.1 200"), "{metrics}");
        assert!(metrics.contains("shop_test_total 1"), "{metrics}");
        assert!(
            metrics
                .to_ascii_lowercase()
                .contains("content-type: text/plain; version=0.0.4")
        );
        let other = get(addr, "/").await;
        assert!(other.starts_with("HTTP/1.1 404"), "{other}");
    }

    /// A client that connects and sends nothing is let go (the hand-written responder
    /// this replaced waited for its first bytes for ever).
    #[tokio::test]
    async fn a_silent_client_is_disconnected_after_the_head_deadline() {
        let addr = endpoint().await;
        let mut silent = tokio::net::TcpStream::connect(addr)
            .await
            .expect("connects");
        let started = Instant::now();
        let mut buf = Vec::new();
        let read = tokio::time::timeout(
            METRICS_HEAD_WITHIN + Duration::from_secs(5),
            silent.read_to_end(&mut buf),
        )
        .await;
        assert!(
            read.is_ok(),
            "still connected after {:?}",
            started.elapsed()
        );
        assert!(started.elapsed() >= METRICS_HEAD_WITHIN - Duration::from_millis(500));
    }
}
