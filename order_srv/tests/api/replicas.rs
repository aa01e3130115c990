//! More than one replica: order_srv spreads its Sells over every serving inventory_srv
//! replica (`INVENTORY_ENDPOINT` with a list, `order_srv::inventory`), and a replica that
//! stops serving is routed around.

use std::time::Duration;

use sqlx::mysql::{MySqlConnectOptions, MySqlPoolOptions};
use testkit::{PATIENCE, eventually};

use crate::helpers::{create_order_request, order_config, scrape, spawn_stack_with};

/// `inventory_sells_total{outcome="deducted"}` of one inventory replica.
async fn deducted(metrics: std::net::SocketAddr) -> u64 {
    scrape(metrics)
        .await
        .lines()
        .find_map(|line| line.strip_prefix("inventory_sells_total{outcome=\"deducted\"} "))
        .map_or(0, |n| n.trim().parse().expect("a counter"))
}

#[sqlx::test(migrations = false)]
async fn sells_spread_over_both_inventory_replicas_and_a_stopped_one_is_routed_around(
    _: MySqlPoolOptions,
    db: MySqlConnectOptions,
) {
    const SPREAD: i64 = 30;
    const AFTER_STOP: i64 = 20;
    let mut config = order_config();
    config.inventory_probe_interval = Duration::from_millis(200);
    let mut stack = spawn_stack_with(db, config).await;
    let second = stack.add_inventory_replica().await;
    let (replica, mut order) = stack
        .add_order_replica(format!(
            "http://{}, http://{}",
            stack.inventory_addr, second.grpc_addr
        ))
        .await;
    let order_metrics = replica.metrics_addr;
    assert!(
        scrape(order_metrics)
            .await
            .contains("order_inventory_replicas 2"),
        "both replicas serve from the start"
    );
    stack.goods(1, 100, 1_000).await;

    for user in 1..=SPREAD {
        stack.add_to_cart(user, 1, 1).await;
        order
            .create_order(create_order_request(user))
            .await
            .expect("an order while both replicas serve");
    }
    let (first_sells, second_sells) = (
        deducted(stack.inventory_metrics_addr).await,
        deducted(second.metrics_addr).await,
    );
    assert_eq!(first_sells + second_sells, SPREAD as u64);
    assert!(
        first_sells > 0 && second_sells > 0,
        "Sells reach both replicas: {first_sells} and {second_sells}"
    );

    // The second replica stops (SIGTERM: NOT_SERVING, drains, exits). Within a probe
    // interval order_srv balances over the first one alone, and no Sell fails.
    stack.stop_replica(second.index).await;
    eventually(
        PATIENCE,
        "order_srv to drop the stopped replica",
        || async {
            scrape(order_metrics)
                .await
                .contains("order_inventory_replicas 1")
                .then_some(())
        },
    )
    .await;
    for user in 2_001..=2_000 + AFTER_STOP {
        stack.add_to_cart(user, 1, 1).await;
        order
            .create_order(create_order_request(user))
            .await
            .expect("no Sell is sent to the stopped replica");
    }
    stack.stop().await;
}
