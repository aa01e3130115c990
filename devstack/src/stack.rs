//! The whole system in one process, without Docker: the embedded broker, inventory_srv and
//! order_srv against the local MySQL, with demo goods seeded.

use std::{net::SocketAddr, time::Duration};

use anyhow::Context;
use clap::Parser;
use proto::{
    inventory::inventory_client::InventoryClient,
    order::{self as pb, order_client::OrderClient},
};
use tokio::{sync::watch, task::JoinSet};

use testkit::{BrokerSettings, EmbeddedBroker};

use crate::calls::{self, Stock};

/// Goods the demo starts with: id, name, price in cents, initial stock.
pub const DEMO_GOODS: [(i32, &str, i64, i32); 5] = [
    (1, "Mechanical keyboard", 45_900, 100),
    (2, "USB-C cable", 1_290, 1_000),
    (3, "27\" monitor", 189_900, 20),
    (4, "Desk lamp", 3_450, 50),
    (5, "Limited-edition mug", 1_500, 3),
];

/// Addresses of a running stack.
#[derive(Debug, Clone)]
pub struct StackAddrs {
    pub namesrv: String,
    /// The first inventory_srv's gRPC address.
    pub inventory: String,
    /// The first order_srv's gRPC address.
    pub order: String,
    /// Every replica: (gRPC, metrics) of each inventory_srv, then of each order_srv.
    pub inventory_replicas: Vec<(SocketAddr, SocketAddr)>,
    pub order_replicas: Vec<(SocketAddr, SocketAddr)>,
    /// The web gateway (HTTP: the demo page, `/v1`, `/openapi.json`).
    pub gateway: SocketAddr,
    /// Whether the gateway's secrets were made up for this run (none in the environment):
    /// then its dev token route is on, and the payment key is printed for curl.
    pub gateway_dev: Option<DevSecrets>,
}

/// The secrets made up for a local run.
#[derive(Debug, Clone)]
pub struct DevSecrets {
    pub payment_secret: String,
}

/// The gateway's configuration for the local stack: the environment's (`GATEWAY_*`), with
/// throwaway secrets and the dev token route on unless the environment sets the secrets.
pub fn gateway_config(
    order: &str,
    inventory: &str,
) -> anyhow::Result<(gateway::config::Config, Option<DevSecrets>)> {
    let mut args = vec!["gateway".to_owned()];
    let local = std::env::var_os("GATEWAY_JWT_SECRET").is_none()
        && std::env::var_os("GATEWAY_PAYMENT_SECRET").is_none();
    let dev = local.then(|| DevSecrets {
        payment_secret: throwaway_secret(),
    });
    if let Some(dev) = &dev {
        args.extend([
            "--jwt-secret".to_owned(),
            throwaway_secret(),
            "--payment-secret".to_owned(),
            dev.payment_secret.clone(),
        ]);
        if std::env::var_os("GATEWAY_DEV_TOKENS").is_none() {
            args.push("--dev-tokens=true".to_owned());
        }
    }
    let mut config = gateway::config::Config::try_parse_from(args)
        .context("gateway configuration (GATEWAY_*)")?;
    config.order.order_endpoint = format!("http://{order}");
    config.inventory.inventory_endpoint = format!("http://{inventory}");
    Ok((config, dev))
}

fn throwaway_secret() -> String {
    use rand::{Rng, distr::Alphanumeric};
    rand::rng()
        .sample_iter(Alphanumeric)
        .take(40)
        .map(char::from)
        .collect()
}

/// The address of replica `i` when the first one is at `first`: ports two apart (the
/// first order_srv on 50051, inventory_srv on 50052, the second ones on 50053 and
/// 50054, ...); port 0 stays 0.
fn replica_addr(first: SocketAddr, i: usize) -> anyhow::Result<SocketAddr> {
    if first.port() == 0 {
        return Ok(first);
    }
    let port = u16::try_from(i)
        .ok()
        .and_then(|i| i.checked_mul(2))
        .and_then(|offset| first.port().checked_add(offset))
        .with_context(|| format!("no port for replica {} after {first}", i + 1))?;
    Ok(SocketAddr::new(first.ip(), port))
}

/// Starts broker and services, seeds the demo goods, runs until `shutdown` resolves.
/// The services read their usual environment variables (docs/operations.md); NAMESRV_ADDR
/// is set to the embedded broker.
pub async fn run(
    broker_settings: BrokerSettings,
    replicas: usize,
    shutdown: impl Future<Output = ()>,
    on_ready: impl FnOnce(&StackAddrs),
) -> anyhow::Result<()> {
    let inventory_config = inventory_srv::config::Config::try_parse_from(["inventory_srv"])
        .context("inventory_srv configuration")?;
    let order_config = order_srv::config::Config::try_parse_from(["order_srv"])
        .context("order_srv configuration")?;
    check_mysql(&order_config.database_url).await?;

    let broker = EmbeddedBroker::start(broker_settings)
        .await
        .context("starting the embedded RocketMQ broker")?;
    let namesrv = broker.namesrv_addr().to_owned();
    let outcome = serve(
        &namesrv,
        replicas.max(1),
        inventory_config,
        order_config,
        shutdown,
        on_ready,
    )
    .await;
    broker.shutdown().await;
    outcome
}

async fn serve(
    namesrv: &str,
    replicas: usize,
    mut inventory_config: inventory_srv::config::Config,
    mut order_config: order_srv::config::Config,
    shutdown: impl Future<Output = ()>,
    on_ready: impl FnOnce(&StackAddrs),
) -> anyhow::Result<()> {
    inventory_config.namesrv_addr = namesrv.to_owned();
    // The reconciler asks the first order_srv (it binds the configured address below).
    inventory_config.order.order_endpoint = format!("http://{}", order_config.grpc_addr);
    let inventories = start_inventories(&inventory_config, replicas).await?;
    let inventory_replicas: Vec<(SocketAddr, SocketAddr)> = inventories
        .iter()
        .map(|app| (app.grpc_addr(), app.metrics_addr()))
        .collect();
    order_config.namesrv_addr = namesrv.to_owned();
    order_config.inventory.inventory_endpoint = inventory_replicas
        .iter()
        .map(|(grpc, _)| format!("http://{grpc}"))
        .collect::<Vec<_>>()
        .join(",");
    let orders = start_orders(&order_config, replicas).await?;
    let order_replicas: Vec<(SocketAddr, SocketAddr)> = orders
        .iter()
        .map(|app| (app.grpc_addr(), app.metrics_addr()))
        .collect();

    let (stop_tx, stop_rx) = watch::channel(false);
    // A closure, not an `async fn`: with the latter, proving the services' futures `Send`
    // overflows the compiler's recursion limit.
    let stopped = |mut rx: watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|stop| *stop).await;
    };
    let mut services = JoinSet::new();
    for app in inventories {
        services.spawn(app.run_until(stopped(stop_rx.clone())));
    }
    for app in orders {
        services.spawn(app.run_until(stopped(stop_rx.clone())));
    }
    let first = |replicas: &[(SocketAddr, SocketAddr)]| {
        replicas
            .first()
            .map(|(grpc, _)| grpc.to_string())
            .unwrap_or_default()
    };
    let (order, inventory) = (first(&order_replicas), first(&inventory_replicas));
    let (gateway_config, gateway_dev) = gateway_config(&order, &inventory)?;
    let gateway = gateway::startup::Application::build(&gateway_config)
        .await
        .context("starting the gateway")?;
    let gateway_addr = gateway.http_addr();
    services.spawn(gateway.run_until(stopped(stop_rx.clone())));
    let addrs = StackAddrs {
        namesrv: namesrv.to_owned(),
        inventory,
        order,
        inventory_replicas,
        order_replicas,
        gateway: gateway_addr,
        gateway_dev,
    };
    seed_demo_goods(&addrs)
        .await
        .context("seeding demo goods")?;
    on_ready(&addrs);
    run_until_shutdown(services, &stop_tx, shutdown).await
}

/// `replicas` inventory_srv, replica `i` on the ports [`replica_addr`] gives it.
async fn start_inventories(
    config: &inventory_srv::config::Config,
    replicas: usize,
) -> anyhow::Result<Vec<inventory_srv::startup::Application>> {
    let mut inventories = Vec::new();
    for i in 0..replicas {
        let mut replica = config.clone();
        replica.grpc_addr = replica_addr(config.grpc_addr, i)?;
        replica.metrics_addr = replica_addr(config.metrics_addr, i)?;
        inventories.push(
            inventory_srv::startup::Application::build(replica)
                .await
                .with_context(|| format!("starting inventory_srv {}", i + 1))?,
        );
    }
    Ok(inventories)
}

/// `replicas` order_srv, replica `i` on the ports [`replica_addr`] gives it.
async fn start_orders(
    config: &order_srv::config::Config,
    replicas: usize,
) -> anyhow::Result<Vec<order_srv::startup::Application>> {
    let mut orders = Vec::new();
    for i in 0..replicas {
        let mut replica = config.clone();
        replica.grpc_addr = replica_addr(config.grpc_addr, i)?;
        replica.metrics_addr = replica_addr(config.metrics_addr, i)?;
        orders.push(
            order_srv::startup::Application::build(replica)
                .await
                .with_context(|| format!("starting order_srv {}", i + 1))?,
        );
    }
    Ok(orders)
}

/// Runs the services until `shutdown` resolves or one of them stops on its own, then
/// stops them all and reports the first error.
async fn run_until_shutdown(
    mut services: JoinSet<anyhow::Result<()>>,
    stop: &watch::Sender<bool>,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    tokio::select! {
        () = shutdown => {}
        Some(ended) = services.join_next() => {
            // A service stopped on its own: report why, then stop the rest.
            let _ = stop.send(true);
            ended.context("service task")?.context("a service stopped")?;
        }
    }
    let _ = stop.send(true);
    while let Some(ended) = services.join_next().await {
        ended.context("service task")??;
    }
    Ok(())
}

/// Fails with what to start when MySQL does not answer.
async fn check_mysql(database_url: &str) -> anyhow::Result<()> {
    use sqlx::{Connection, mysql::MySqlConnectOptions};
    let options: MySqlConnectOptions = database_url
        .parse()
        .context("ORDER_DATABASE_URL is not a valid MySQL URL")?;
    let options = options.database("");
    match tokio::time::timeout(
        Duration::from_secs(5),
        sqlx::MySqlConnection::connect_with(&options),
    )
    .await
    {
        Ok(Ok(conn)) => {
            let _ = conn.close().await;
            Ok(())
        }
        Ok(Err(e)) => anyhow::bail!(
            "cannot reach MySQL for ORDER_DATABASE_URL ({e}).\n\
             Start MySQL or MariaDB on 127.0.0.1:3306 with user root and no password \
             (e.g. `sudo service mariadb start`, or `docker run -p 3306:3306 -e MYSQL_ALLOW_EMPTY_PASSWORD=1 mysql:8`), \
             or point ORDER_DATABASE_URL and INVENTORY_DATABASE_URL at yours."
        ),
        Err(_) => anyhow::bail!(
            "MySQL did not answer within 5 s on ORDER_DATABASE_URL; start it on 127.0.0.1:3306 \
             or point ORDER_DATABASE_URL and INVENTORY_DATABASE_URL at yours"
        ),
    }
}

/// Prices on the order side, stock on the inventory side; existing stock is kept.
pub async fn seed_demo_goods(addrs: &StackAddrs) -> anyhow::Result<()> {
    let mut order = OrderClient::connect(format!("http://{}", addrs.order)).await?;
    let mut inventory = InventoryClient::connect(format!("http://{}", addrs.inventory)).await?;
    let goods = DEMO_GOODS.map(|(id, name, price_cents, stock)| {
        let goods = pb::Goods {
            id,
            name: name.to_owned(),
            price_cents,
        };
        (goods, stock)
    });
    calls::seed_goods(&mut order, &mut inventory, goods, Stock::KeepKnown).await
}
