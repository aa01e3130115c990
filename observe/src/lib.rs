//! What both services share at their edges: [`telemetry`] (tracing set-up and the
//! shutdown signal), the gRPC edge with health and reflection ([`grpc::serve`]) and the
//! Prometheus `/metrics` endpoint. A service registers its
//! metrics in its own [`Registry`] (two services in one process stay apart) and hands the
//! registry and a bound listener to [`serve`].

pub mod grpc;
pub mod outage;
pub mod telemetry;
pub mod trace;

use std::net::SocketAddr;

use prometheus::{Encoder, TextEncoder};
pub use prometheus::{
    Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, Opts, Registry,
};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
};

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
/// gets a 404.
pub async fn serve(listener: TcpListener, registry: Registry, shutdown: impl Future<Output = ()>) {
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            () = &mut shutdown => return,
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    let registry = registry.clone();
                    tokio::spawn(async move {
                        if let Err(e) = answer(stream, &registry).await {
                            tracing::debug!(%peer, error = %e, "metrics request failed");
                        }
                    });
                }
                Err(e) => tracing::warn!(error = %e, "metrics listener accept failed"),
            }
        }
    }
}

async fn answer(mut stream: TcpStream, registry: &Registry) -> std::io::Result<()> {
    let mut request = [0_u8; 1024];
    let n = stream.read(&mut request).await?;
    let head = String::from_utf8_lossy(&request[..n]);
    let (status, content_type, body) = if head.starts_with("GET /metrics") {
        let mut body = Vec::new();
        let encoder = TextEncoder::new();
        encoder
            .encode(&registry.gather(), &mut body)
            .map_err(std::io::Error::other)?;
        ("200 OK", encoder.format_type().to_owned(), body)
    } else {
        (
            "404 Not Found",
            "text/plain".to_owned(),
            b"try /metrics\n".to_vec(),
        )
    };
    let header = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(header.as_bytes()).await?;
    stream.write_all(&body).await?;
    stream.shutdown().await
}

/// Binds the metrics listener, naming the variable on failure.
pub async fn bind(addr: SocketAddr, variable: &str) -> Result<TcpListener, String> {
    TcpListener::bind(addr)
        .await
        .map_err(|e| format!("{variable}: cannot bind {addr}: {e}"))
}
