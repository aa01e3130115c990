//! `devstack`: run the system locally without Docker.
//!
//! `devstack broker` runs the embedded name server + broker in the foreground until Ctrl-C.

use std::{path::PathBuf, time::Duration};

use clap::{Parser, Subcommand};
use devstack::{BrokerSettings, EmbeddedBroker};

#[derive(Parser)]
#[command(
    name = "devstack",
    about = "Run the shop's message broker and services locally"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the RocketMQ name server and broker in the foreground until Ctrl-C.
    Broker(BrokerArgs),
}

#[derive(clap::Args)]
struct BrokerArgs {
    #[arg(long, env = "DEVSTACK_HOST", default_value = "127.0.0.1")]
    host: String,
    #[arg(long, env = "DEVSTACK_NAMESRV_PORT", default_value_t = 9876)]
    namesrv_port: u16,
    /// The broker also listens on this port minus 2.
    #[arg(long, env = "DEVSTACK_BROKER_PORT", default_value_t = 10911)]
    broker_port: u16,
    /// Store directory; kept across runs. A throwaway directory when absent.
    #[arg(long, env = "DEVSTACK_STORE_DIR")]
    store_dir: Option<PathBuf>,
    /// Check-back after about a second and short delay levels (as the tests use).
    #[arg(long)]
    fast: bool,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "info,rocketmq=warn".into()),
        )
        .init();
    match Cli::parse().command {
        Command::Broker(args) => run_broker(args).await,
    }
}

async fn run_broker(args: BrokerArgs) -> anyhow::Result<()> {
    let base = if args.fast {
        BrokerSettings::for_tests()
    } else {
        BrokerSettings::default()
    };
    let settings = BrokerSettings {
        host: args.host,
        namesrv_port: args.namesrv_port,
        broker_port: args.broker_port,
        store_dir: args.store_dir,
        ..base
    };
    let broker = EmbeddedBroker::start(settings).await?;
    println!(
        "name server on {}, broker on {}, store in {}; Ctrl-C stops both",
        broker.namesrv_addr(),
        broker.broker_addr(),
        broker.store_dir().display()
    );
    tokio::signal::ctrl_c().await?;
    println!("stopping");
    tokio::time::timeout(Duration::from_secs(30), broker.shutdown())
        .await
        .ok();
    Ok(())
}
