//! `inventory_srv`: reads its configuration from the environment and serves until
//! SIGINT/SIGTERM.

use anyhow::Context;
use clap::Parser;
use inventory_srv::{config::Config, startup::Application};
use observe::telemetry;

// mimalloc instead of glibc's malloc, as in order_srv: a Sell allocates many small,
// short-lived buffers across worker threads (docs/benchmark.md, mimalloc: inventory_srv's CPU per
// 2,000 orders 0.40-0.44 s against 0.44-0.50 in alternating runs).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> anyhow::Result<()> {
    let config = Config::parse();
    // One runtime for the service and its RocketMQ client (`mq::Mq::new`).
    mq::service_runtime(config.mq_blocking_threads)
        .context("INVENTORY_MQ_BLOCKING_THREADS")?
        .block_on(serve(config))
}

async fn serve(config: Config) -> anyhow::Result<()> {
    let telemetry = telemetry::init(
        telemetry::ServiceName {
            name: "inventory_srv",
            version: env!("CARGO_PKG_VERSION"),
        },
        config.otel_exporter_otlp_endpoint.as_deref(),
        telemetry::DEFAULT_FILTER,
    )?;
    // Failpoints from the FAILPOINTS environment variable (chaos runs only).
    #[cfg(feature = "failpoints")]
    let _failpoints = fail::FailScenario::setup();
    let app = Application::build(config).await?;
    tracing::info!(addr = %app.grpc_addr(), "inventory_srv listening");
    let served = app.run_until(telemetry::shutdown_signal()).await;
    telemetry.shutdown();
    served
}
