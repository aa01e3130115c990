//! `devstack`: run the system locally without Docker.
//!
//! `devstack` (or `devstack up`) runs the embedded broker and both services against the
//! local MySQL with demo goods; `devstack broker` runs only the name server + broker.
//! Both stay in the foreground until Ctrl-C.

use std::{path::PathBuf, time::Duration};

use clap::{Parser, Subcommand};
use testkit::{BrokerSettings, EmbeddedBroker};

#[derive(Parser)]
#[command(
    name = "devstack",
    about = "Run the shop's message broker and services locally"
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// The whole system: broker, inventory_srv and order_srv, demo goods seeded (default).
    Up(UpArgs),
    /// Run the RocketMQ name server and broker in the foreground until Ctrl-C.
    Broker(BrokerArgs),
    /// CreateOrder over gRPC against the raw-SQL baseline (run a release build).
    Bench(devstack::bench::BenchArgs),
    /// Kill processes while orders flow, then audit (order_srv needs the failpoints feature).
    Chaos(devstack::chaos::ChaosArgs),
    /// The failure-table scenarios that can be shown live, with timelines, then the audit.
    Demo(devstack::demo::DemoArgs),
    /// Orders at a steady rate for a long time, sampled every minute, then the audit.
    Soak(devstack::soak::SoakArgs),
    /// Check invariants I1-I6 across both databases; exits non-zero on a violation.
    Audit(AuditArgs),
}

#[derive(clap::Parser)]
struct AuditArgs {
    #[arg(
        long,
        env = "ORDER_DATABASE_URL",
        default_value = "mysql://root@127.0.0.1:3306/shop_order",
        hide_env_values = true
    )]
    order_database_url: String,
    #[arg(
        long,
        env = "INVENTORY_DATABASE_URL",
        default_value = "mysql://root@127.0.0.1:3306/shop_inventory",
        hide_env_values = true
    )]
    inventory_database_url: String,
    /// Initial stock per goods for I1, `id=stock,id=stock`. `--demo-initial` uses the
    /// stock `devstack up` seeds. Without either, I1 is skipped.
    #[arg(long, value_delimiter = ',')]
    initial: Vec<String>,
    #[arg(long, conflicts_with = "initial")]
    demo_initial: bool,
    /// The services' ORDER_PAY_TIMEOUT, for I6 (liveness: no unpaid order older than it
    /// plus --liveness-slack); without it I6 is skipped.
    #[arg(long, env = "ORDER_PAY_TIMEOUT", value_parser = humantime::parse_duration)]
    pay_timeout: Option<Duration>,
    /// How far past the pay timeout an unpaid order may still be open (I6), and past the
    /// reconciler's horizon a deduction without a live order.
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    liveness_slack: Duration,
    /// inventory_srv's INVENTORY_RECONCILE_HORIZON, for I6's second half (deductions
    /// without a live order); without it that half is skipped.
    #[arg(long, env = "INVENTORY_RECONCILE_HORIZON", value_parser = humantime::parse_duration)]
    reconcile_horizon: Option<Duration>,
}

#[derive(clap::Parser)]
struct UpArgs {
    #[command(flatten)]
    broker: BrokerArgs,
    /// Replicas of each service, on the same databases: order_srv on 50051, 50053, ...,
    /// inventory_srv on 50052, 50054, ... (metrics 9101, 9103, ... and 9102, 9104, ...);
    /// every order_srv balances its Sells over every inventory_srv.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u8).range(1..=16))]
    replicas: u8,
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
    /// The first broker's HA listener; 0 picks a free port.
    #[arg(long, env = "DEVSTACK_HA_PORT", default_value_t = 0)]
    ha_port: u16,
    /// Store directory, kept across runs. `up` defaults to ~/.cache/shop-devstack/store;
    /// `broker` to a throwaway directory.
    #[arg(long, env = "DEVSTACK_STORE_DIR")]
    store_dir: Option<PathBuf>,
    /// Check-back after about a second and short delay levels (as the tests use).
    #[arg(long)]
    fast: bool,
    /// Master brokers in the cluster (`broker-a`, `broker-b`, ...); the first listens on
    /// --broker-port, the others on free ports (printed).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u8).range(1..=26))]
    brokers: u8,
    /// Register with this running name server (`host:port`) instead of starting one: a
    /// further broker of a cluster, in a process of its own.
    #[arg(long)]
    join: Option<String>,
    /// The broker's name (with --brokers 1), e.g. `broker-b` for a second master.
    #[arg(long, default_value = "broker-a", conflicts_with = "brokers")]
    broker_name: String,
}

/// The services at info; the RocketMQ libraries only when something is wrong.
const QUIET_BROKER: &str = "info,rocketmq_broker=error,rocketmq_namesrv=error,rocketmq_store=error,\
     rocketmq_store_local=error,rocketmq_client_rust=error,rocketmq_runtime=error,\
     rocketmq_transport=error,rocketmq_remoting=error,rocketmq_observability=error,\
     rocketmq_model=warn";

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| QUIET_BROKER.into()),
        )
        .init();
    match Cli::parse().command {
        None => run_up(UpArgs::parse_from(["up"])).await,
        Some(Command::Up(args)) => run_up(args).await,
        Some(Command::Broker(args)) => run_broker(args).await,
        Some(Command::Audit(args)) => run_audit(args).await,
        Some(Command::Bench(args)) => devstack::bench::run(args).await,
        Some(Command::Chaos(args)) => devstack::chaos::run(args).await,
        Some(Command::Demo(args)) => devstack::demo::run(args).await,
        Some(Command::Soak(args)) => devstack::soak::run(args).await,
    }
}

async fn run_audit(args: AuditArgs) -> anyhow::Result<()> {
    use anyhow::Context;
    let initial = if args.demo_initial {
        Some(
            devstack::stack::DEMO_GOODS
                .iter()
                .map(|(id, _, _, stock)| (*id, i64::from(*stock)))
                .collect(),
        )
    } else if args.initial.is_empty() {
        None
    } else {
        let mut map = std::collections::HashMap::new();
        for pair in &args.initial {
            let (id, stock) = pair
                .split_once('=')
                .with_context(|| format!("--initial wants id=stock, got {pair:?}"))?;
            map.insert(
                id.trim()
                    .parse::<i32>()
                    .with_context(|| format!("goods id in {pair:?}"))?,
                stock
                    .trim()
                    .parse::<i64>()
                    .with_context(|| format!("stock in {pair:?}"))?,
            );
        }
        Some(map)
    };
    let order = sqlx::MySqlPool::connect(&args.order_database_url)
        .await
        .context("ORDER_DATABASE_URL: cannot connect")?;
    let inventory = sqlx::MySqlPool::connect(&args.inventory_database_url)
        .await
        .context("INVENTORY_DATABASE_URL: cannot connect")?;
    let input = testkit::audit::AuditInput {
        initial_stock: initial,
        acknowledged: Vec::new(),
        liveness: args
            .pay_timeout
            .map(|pay_timeout| testkit::audit::Liveness {
                pay_timeout,
                slack: args.liveness_slack,
                reconcile_horizon: args.reconcile_horizon,
            }),
    };
    let verdicts = testkit::audit::audit(&order, &inventory, &input).await?;
    print!("{}", testkit::audit::report(&verdicts));
    if verdicts.iter().all(testkit::audit::Verdict::passed) {
        Ok(())
    } else {
        std::process::exit(1);
    }
}

async fn run_up(args: UpArgs) -> anyhow::Result<()> {
    let mut settings = args.broker.settings();
    // Keep messages across restarts: a pay timeout may be due after the next start.
    if settings.store_dir.is_none() {
        let home = std::env::var_os("HOME")
            .map(PathBuf::from)
            .unwrap_or_else(std::env::temp_dir);
        settings.store_dir = Some(home.join(".cache/shop-devstack/store"));
    }
    let replicas = usize::from(args.replicas);
    devstack::stack::run(settings, replicas, wait_for_ctrl_c(), |addrs| {
        println!("shop is up:");
        for (i, (grpc, metrics)) in addrs.order_replicas.iter().enumerate() {
            println!(
                "  order_srv {}      grpc://{grpc}   (order.v1.Order), metrics http://{metrics}/metrics",
                i + 1
            );
        }
        for (i, (grpc, metrics)) in addrs.inventory_replicas.iter().enumerate() {
            println!(
                "  inventory_srv {}  grpc://{grpc}   (inventory.v1.Inventory), metrics http://{metrics}/metrics",
                i + 1
            );
        }
        println!("  name server      {}", addrs.namesrv);
        println!(
            "  web gateway      http://{}   (the demo page; API under /v1, contract at /openapi.json)",
            addrs.gateway
        );
        if let Some(dev) = &addrs.gateway_dev {
            println!(
                "  dev tokens on (POST /v1/dev/token); payment callback key for this run: {}",
                dev.payment_secret
            );
        }
        println!("demo goods 1-5 are seeded; try:");
        println!("  grpcurl -plaintext {} list", addrs.order);
        println!("Ctrl-C stops everything");
    })
    .await
}

async fn wait_for_ctrl_c() {
    let _ = tokio::signal::ctrl_c().await;
    println!("stopping");
}

impl BrokerArgs {
    fn settings(self) -> BrokerSettings {
        let base = if self.fast {
            BrokerSettings::for_tests()
        } else {
            BrokerSettings::default()
        };
        let broker_names = if self.brokers == 1 {
            vec![self.broker_name]
        } else {
            (b'a'..)
                .take(usize::from(self.brokers))
                .map(|letter| format!("broker-{}", char::from(letter)))
                .collect()
        };
        BrokerSettings {
            host: self.host,
            namesrv_port: self.namesrv_port,
            join_namesrv: self.join,
            broker_names,
            broker_port: self.broker_port,
            ha_port: self.ha_port,
            store_dir: self.store_dir,
            ..base
        }
    }
}

async fn run_broker(args: BrokerArgs) -> anyhow::Result<()> {
    let settings = args.settings();
    let names = settings.broker_names.clone();
    let broker = EmbeddedBroker::start(settings).await?;
    let brokers: Vec<String> = names
        .iter()
        .zip(broker.broker_addrs())
        .map(|(name, addr)| format!("{name} on {addr}"))
        .collect();
    println!(
        "name server on {}, {}, store in {}; Ctrl-C stops them",
        broker.namesrv_addr(),
        brokers.join(", "),
        broker.store_dir().display()
    );
    tokio::signal::ctrl_c().await?;
    println!("stopping");
    tokio::time::timeout(Duration::from_secs(30), broker.shutdown())
        .await
        .ok();
    Ok(())
}
