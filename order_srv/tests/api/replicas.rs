//! More than one replica: order_srv spreads its Sells over every serving inventory_srv
//! replica (`INVENTORY_ENDPOINT` with a list, `order_srv::inventory`), and a replica that
//! stops serving is routed around.

use std::time::Duration;

use sqlx::mysql::{MySqlConnectOptions, MySqlPoolOptions};
use testkit::{PATIENCE, eventually};

use crate::helpers::{create_order_request, order_config, sample, scrape, spawn_stack_with};

/// `inventory_sells_total{outcome="deducted"}` of one inventory replica.
async fn deducted(metrics: std::net::SocketAddr) -> u64 {
    sample(metrics, "inventory_sells_total{outcome=\"deducted\"}").await
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
    let second = stack.add_inventory_replica(false).await;
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

#[sqlx::test(migrations = false)]
async fn with_two_replicas_of_each_consumer_every_pay_timeout_and_reback_has_one_effect(
    _: MySqlPoolOptions,
    db: MySqlConnectOptions,
) {
    const ORDERS: i64 = 30;
    let mut config = order_config();
    config.pay_timeout = Duration::from_secs(1);
    let mut stack = spawn_stack_with(db, config).await;
    // A second member of the reback group and of the pay-timeout group.
    let inventory = stack.add_inventory_replica(true).await;
    let (order_replica, replica_client) = stack
        .add_order_replica(format!(
            "http://{},http://{}",
            stack.inventory_addr, inventory.grpc_addr
        ))
        .await;
    stack.goods(1, 100, 1_000).await;

    // Unpaid orders through both order_srv replicas, as a gateway spreads them.
    let mut placed = Vec::new();
    for user in 1..=ORDERS {
        stack.add_to_cart(user, 1, 2).await;
        let mut client = if user % 2 == 0 {
            stack.order.clone()
        } else {
            replica_client.clone()
        };
        let order = client
            .create_order(create_order_request(user))
            .await
            .expect("an order")
            .into_inner();
        placed.push(order.order_sn);
    }

    // Every order closes and returns its stock exactly once, whichever replica's
    // consumer got its messages (redeliveries and rebalances included).
    eventually(
        PATIENCE,
        "every order closed and its stock back",
        || async {
            let closed: i64 =
                sqlx::query_scalar("SELECT COUNT(*) FROM order_info WHERE status = 'TRADE_CLOSED'")
                    .fetch_one(&stack.order_pool)
                    .await
                    .expect("count");
            (closed == ORDERS && stack.stock(1).await == 1_000).then_some(())
        },
    )
    .await;
    let closed = sample(
        stack.order_metrics_addr,
        "order_pay_timeouts_total{outcome=\"closed\"}",
    )
    .await
        + sample(
            order_replica.metrics_addr,
            "order_pay_timeouts_total{outcome=\"closed\"}",
        )
        .await;
    let returned = sample(
        stack.inventory_metrics_addr,
        "inventory_rebacks_total{outcome=\"returned\"}",
    )
    .await
        + sample(
            inventory.metrics_addr,
            "inventory_rebacks_total{outcome=\"returned\"}",
        )
        .await;
    assert_eq!(closed, ORDERS as u64, "each order closed once");
    assert_eq!(returned, ORDERS as u64, "each order's stock returned once");
    stack.audit(&[(1, 1_000)], &placed).await;
    stack.stop().await;
}
