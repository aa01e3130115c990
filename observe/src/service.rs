//! What every binary here does around its own work, written once: the settings they all
//! read under the same names (the OTLP collector, the services' gRPC endpoints), the
//! telemetry around the work ([`run`]), a service's bound listeners ([`Listeners`]) and
//! the background tasks one stop signal ends ([`Background`]).

use std::net::SocketAddr;

use anyhow::Context;
use tokio::{net::TcpListener, sync::watch, task::JoinHandle};

use crate::{
    Registry,
    telemetry::{self, ServiceName},
};

/// Where spans go; every binary reads the same variable.
#[derive(Clone, Debug, Default, clap::Args)]
pub struct TelemetryArgs {
    /// OTLP/gRPC endpoint spans are exported to (e.g. `http://jaeger:4317`); unset or
    /// empty, no spans are built or exported and no trace context is propagated.
    #[arg(long, env = "OTEL_EXPORTER_OTLP_ENDPOINT")]
    pub otel_exporter_otlp_endpoint: Option<String>,
}

/// Where order_srv is, for its callers (the gateway, inventory_srv's reconciler).
#[derive(Clone, Debug, clap::Args)]
pub struct OrderEndpoint {
    /// gRPC endpoint of order_srv (`http://host:port`; a Service name in Kubernetes).
    #[arg(long, env = "ORDER_ENDPOINT", default_value = "http://127.0.0.1:50051")]
    pub order_endpoint: String,
}

/// Where inventory_srv is, for its callers (order_srv's Sells, the gateway's stock).
#[derive(Clone, Debug, clap::Args)]
pub struct InventoryEndpoint {
    /// gRPC endpoint of inventory_srv (`http://host:port`; a name may resolve to several
    /// replicas). order_srv also takes several, comma-separated, and balances its Sells
    /// over those whose health check says SERVING (`order_srv::inventory`).
    #[arg(
        long,
        env = "INVENTORY_ENDPOINT",
        default_value = "http://127.0.0.1:50052"
    )]
    pub inventory_endpoint: String,
}

/// Runs a binary's work inside its telemetry: log lines (and OTLP export when
/// configured) are installed first, so the work's start-up is logged; the spans still
/// buffered are sent when the work ends, however it ends.
pub async fn run(
    service: ServiceName,
    args: &TelemetryArgs,
    work: impl Future<Output = anyhow::Result<()>>,
) -> anyhow::Result<()> {
    let telemetry = telemetry::init(
        service,
        args.otel_exporter_otlp_endpoint.as_deref(),
        telemetry::DEFAULT_FILTER,
    )?;
    let outcome = work.await;
    telemetry.shutdown();
    outcome
}

/// A service's edge, bound before anything is served (port 0 picks a free port, and the
/// bound addresses are known to tests and logs): the gRPC listener, the `/metrics`
/// listener and the registry the service's metrics go in.
pub struct Listeners {
    pub grpc: TcpListener,
    pub grpc_addr: SocketAddr,
    pub metrics: TcpListener,
    pub metrics_addr: SocketAddr,
    pub registry: Registry,
}

impl Listeners {
    /// Binds both; an address that cannot be bound fails naming its variable
    /// (`grpc` and `metrics` are each an address and the variable it came from).
    pub async fn bind(
        grpc: (SocketAddr, &str),
        metrics: (SocketAddr, &str),
    ) -> anyhow::Result<Self> {
        let (grpc, grpc_addr) = bind(grpc).await?;
        let (metrics, metrics_addr) = bind(metrics).await?;
        Ok(Self {
            grpc,
            grpc_addr,
            metrics,
            metrics_addr,
            registry: Registry::new(),
        })
    }
}

async fn bind((addr, variable): (SocketAddr, &str)) -> anyhow::Result<(TcpListener, SocketAddr)> {
    let listener = TcpListener::bind(addr)
        .await
        .with_context(|| format!("{variable}: cannot bind {addr}"))?;
    let bound = listener.local_addr()?;
    Ok((listener, bound))
}

/// A service's background tasks (the metrics endpoint, purges, sweeps, the reconciler):
/// each is handed [`Background::stopped`], and [`Background::stop`] sends the one stop
/// signal and waits until every task has ended.
pub struct Background {
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
}

impl Background {
    pub fn new() -> Self {
        Self {
            stop: watch::channel(false).0,
            tasks: Vec::new(),
        }
    }

    /// What a task watches for the stop signal ([`crate::stopped`] resolves on it).
    pub fn stopped(&self) -> watch::Receiver<bool> {
        self.stop.subscribe()
    }

    /// A task that ends once it sees the stop signal.
    pub fn add(&mut self, task: JoinHandle<()>) {
        self.tasks.push(task);
    }

    /// Serves `GET /metrics` from `registry` on `listener` until the stop signal.
    pub fn serve_metrics(&mut self, listener: TcpListener, registry: Registry) {
        let stopped = crate::stopped(self.stopped());
        self.add(tokio::spawn(crate::serve(listener, registry, stopped)));
    }

    /// Sends the stop signal and waits for every task to end.
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        for task in self.tasks {
            let _ = task.await;
        }
    }
}

impl Default for Background {
    fn default() -> Self {
        Self::new()
    }
}
