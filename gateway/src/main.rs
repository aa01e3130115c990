//! `gateway`: reads its configuration from the environment and serves until
//! SIGINT/SIGTERM.

use clap::Parser;
use gateway::{config::Config, startup::Application};
use observe::telemetry;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = Config::parse();
    let telemetry = telemetry::init(
        telemetry::ServiceName {
            name: "gateway",
            version: env!("CARGO_PKG_VERSION"),
        },
        config.otel_exporter_otlp_endpoint.as_deref(),
        telemetry::DEFAULT_FILTER,
    )?;
    let app = Application::build(&config).await?;
    tracing::info!(addr = %app.http_addr(), "gateway listening");
    let served = app.run_until(telemetry::shutdown_signal()).await;
    telemetry.shutdown();
    served
}
