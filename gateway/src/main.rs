//! `gateway`: reads its configuration from the environment and serves until
//! SIGINT/SIGTERM.

use clap::Parser;
use gateway::{config::Config, startup::Application};
use observe::telemetry::{ServiceName, shutdown_signal};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const SERVICE: ServiceName = ServiceName {
    name: "gateway",
    version: env!("CARGO_PKG_VERSION"),
};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = Config::parse();
    observe::service::run(SERVICE, &config.telemetry, async {
        let app = Application::build(&config).await?;
        tracing::info!(addr = %app.http_addr(), "gateway listening");
        app.run_until(shutdown_signal()).await
    })
    .await
}
