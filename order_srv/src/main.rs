//! `order_srv`: reads its configuration from the environment and serves until
//! SIGINT/SIGTERM.

use anyhow::Context;
use clap::Parser;
use observe::telemetry::{ServiceName, shutdown_signal};
use order_srv::{config::Config, startup::Application};

// mimalloc instead of glibc's malloc: a call allocates many small, short-lived buffers
// across worker threads, where glibc's malloc and free took about 6% of order_srv's CPU
// (docs/benchmark.md, mimalloc: measured in alternating runs).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const SERVICE: ServiceName = ServiceName {
    name: "order_srv",
    version: env!("CARGO_PKG_VERSION"),
};

fn main() -> anyhow::Result<()> {
    let config = Config::parse();
    let telemetry = config.telemetry.clone();
    // One runtime for the service and its RocketMQ client (`mq::Mq::new`).
    let runtime =
        mq::service_runtime(config.mq_blocking_threads).context("ORDER_MQ_BLOCKING_THREADS")?;
    runtime.block_on(observe::service::run(SERVICE, &telemetry, async {
        // Failpoints from the FAILPOINTS environment variable (chaos runs only).
        #[cfg(feature = "failpoints")]
        let _failpoints = fail::FailScenario::setup();
        let app = Application::build(config).await?;
        app.run_until(shutdown_signal()).await
    }))
}
