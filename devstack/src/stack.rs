//! The whole system in one process, without Docker: the embedded broker, inventory_srv and
//! order_srv against the local MySQL, with demo goods seeded.

use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use proto::{
    inventory::{self as inv, inventory_client::InventoryClient},
    order::{self as pb, order_client::OrderClient},
};
use tokio::{sync::watch, task::JoinSet};

use testkit::{BrokerSettings, EmbeddedBroker};

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
    pub inventory: String,
    pub order: String,
}

/// Starts broker and services, seeds the demo goods, runs until `shutdown` resolves.
/// The services read their usual environment variables (see the README); NAMESRV_ADDR
/// is set to the embedded broker.
pub async fn run(
    broker_settings: BrokerSettings,
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
    let outcome = serve(&namesrv, inventory_config, order_config, shutdown, on_ready).await;
    broker.shutdown().await;
    outcome
}

async fn serve(
    namesrv: &str,
    mut inventory_config: inventory_srv::config::Config,
    mut order_config: order_srv::config::Config,
    shutdown: impl Future<Output = ()>,
    on_ready: impl FnOnce(&StackAddrs),
) -> anyhow::Result<()> {
    inventory_config.namesrv_addr = namesrv.to_owned();
    let inventory = inventory_srv::startup::Application::build(inventory_config)
        .await
        .context("starting inventory_srv")?;
    let inventory_addr = inventory.grpc_addr();
    order_config.namesrv_addr = namesrv.to_owned();
    order_config.inventory_endpoint = format!("http://{inventory_addr}");
    let order = order_srv::startup::Application::build(order_config)
        .await
        .context("starting order_srv")?;
    let order_addr = order.grpc_addr();

    let (stop_tx, stop_rx) = watch::channel(false);
    let stopped = |mut rx: watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|stop| *stop).await;
    };
    let mut services = JoinSet::new();
    services.spawn(inventory.run_until(stopped(stop_rx.clone())));
    services.spawn(order.run_until(stopped(stop_rx)));

    let addrs = StackAddrs {
        namesrv: namesrv.to_owned(),
        inventory: inventory_addr.to_string(),
        order: order_addr.to_string(),
    };
    seed_demo_goods(&addrs)
        .await
        .context("seeding demo goods")?;
    on_ready(&addrs);

    tokio::select! {
        () = shutdown => {}
        Some(ended) = services.join_next() => {
            // A service stopped on its own: report why, then stop the rest.
            let _ = stop_tx.send(true);
            ended.context("service task")?.context("a service stopped")?;
        }
    }
    let _ = stop_tx.send(true);
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
    for (id, name, price_cents, stock) in DEMO_GOODS {
        order
            .upsert_goods(pb::Goods {
                id,
                name: name.to_owned(),
                price_cents,
            })
            .await?;
        let known = inventory
            .inv_detail(inv::InvDetailRequest { goods_id: id })
            .await
            .is_ok();
        if !known {
            inventory
                .set_inv(inv::SetInvRequest {
                    goods_id: id,
                    stocks: stock,
                })
                .await?;
        }
    }
    Ok(())
}
