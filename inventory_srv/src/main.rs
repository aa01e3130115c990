//! `inventory_srv`: reads its configuration from the environment and serves until
//! SIGINT/SIGTERM.

use anyhow::Context;
use clap::Parser;
use inventory_srv::{config::Config, startup::Application};
use observe::telemetry::{ServiceName, shutdown_signal};

// mimalloc instead of glibc's malloc, as in order_srv: a Sell allocates many small,
// short-lived buffers across worker threads (docs/benchmark.md, mimalloc: inventory_srv's CPU per
// 2,000 orders 0.40-0.44 s against 0.44-0.50 in alternating runs).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const SERVICE: ServiceName = ServiceName {
    name: "inventory_srv",
    version: env!("CARGO_PKG_VERSION"),
};

fn main() -> anyhow::Result<()> {
    let config = Config::parse();
    let telemetry = config.telemetry.clone();
    // One runtime for the service and its RocketMQ client (`mq::Mq::new`).
    let runtime =
        mq::service_runtime(config.mq_blocking_threads).context("INVENTORY_MQ_BLOCKING_THREADS")?;
    runtime.block_on(observe::service::run(SERVICE, &telemetry, async {
        // Failpoints from the FAILPOINTS environment variable (chaos runs only).
        #[cfg(feature = "failpoints")]
        let _failpoints = fail::FailScenario::setup();
        Application::build(config)
            .await?
            .run_until(shutdown_signal())
            .await
    }))
}
