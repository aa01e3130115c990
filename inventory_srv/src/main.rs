//! `inventory_srv`: reads its configuration from the environment and serves until
//! SIGINT/SIGTERM.

use clap::Parser;
use inventory_srv::{config::Config, startup::Application};
use observe::telemetry;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    telemetry::init(telemetry::DEFAULT_FILTER);
    // Failpoints from the FAILPOINTS environment variable (chaos runs only).
    #[cfg(feature = "failpoints")]
    let _failpoints = fail::FailScenario::setup();
    let config = Config::parse();
    let app = Application::build(config).await?;
    tracing::info!(addr = %app.grpc_addr(), "inventory_srv listening");
    app.run_until(telemetry::shutdown_signal()).await
}
