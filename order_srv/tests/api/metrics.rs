//! Both services serve Prometheus metrics of what they did.

use sqlx::mysql::{MySqlConnectOptions, MySqlPoolOptions};
use testkit::{PATIENCE, eventually};

use crate::helpers::{order_config, scrape, spawn_stack, spawn_stack_with};

#[sqlx::test(migrations = false)]
async fn both_services_count_orders_check_backs_and_rebacks_on_their_metrics_endpoint(
    _: MySqlPoolOptions,
    db: MySqlConnectOptions,
) {
    let stack = spawn_stack(db).await;
    stack.goods(1, 100, 1).await;
    stack.add_to_cart(81, 1, 1).await;
    stack.create_order(81).await.expect("order");
    stack.add_to_cart(82, 1, 1).await;
    stack.create_order(82).await.expect_err("out of stock");
    stack.send_reback("SCRAPE-1").await;

    let order = scrape(stack.order_metrics_addr).await;
    assert!(order.contains("order_orders_created_total 1"), "{order}");
    assert!(
        order.contains("order_orders_failed_total{reason=\"FailedPrecondition\"} 1"),
        "{order}"
    );
    // Both local transactions keep the stock: one order committed, one Sell refused.
    assert!(
        order.contains("order_local_transactions_total{answer=\"rollback_reback\"} 2"),
        "{order}"
    );
    let inventory = eventually(PATIENCE, "the tombstone counted", || async {
        let text = scrape(stack.inventory_metrics_addr).await;
        text.contains("inventory_rebacks_total{outcome=\"tombstoned\"} 1")
            .then_some(text)
    })
    .await;
    assert!(
        inventory.contains("inventory_dead_messages_total 0"),
        "{inventory}"
    );
    stack.stop().await;
}

/// The count of a histogram series in a scrape (`<name>_count{<labels>} N`).
fn histogram_count(scrape: &str, series: &str) -> u64 {
    scrape
        .lines()
        .find_map(|line| line.strip_prefix(&format!("{series} ")))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or(0)
}

#[sqlx::test(migrations = false)]
async fn latency_histograms_resolve_milliseconds_for_every_step_and_handler(
    _: MySqlPoolOptions,
    db: MySqlConnectOptions,
) {
    let mut config = order_config();
    config.pay_timeout = std::time::Duration::from_secs(1);
    let stack = spawn_stack_with(db, config).await;
    stack.goods(1, 100, 1).await;
    stack.add_to_cart(91, 1, 1).await;
    stack.create_order(91).await.expect("order");
    stack.add_to_cart(92, 1, 1).await;
    stack.create_order(92).await.expect_err("out of stock");
    stack.send_reback("HISTO-1").await;

    // END_TRANSACTION goes out after the caller's reply: wait until both are counted.
    let order = eventually(PATIENCE, "both END_TRANSACTIONs counted", || async {
        let text = scrape(stack.order_metrics_addr).await;
        (histogram_count(&text, "order_step_seconds_count{step=\"end_transaction\"}") >= 2)
            .then_some(text)
    })
    .await;
    for (series, at_least) in [
        ("order_create_order_seconds_count{outcome=\"OK\"}", 1),
        (
            "order_create_order_seconds_count{outcome=\"FailedPrecondition\"}",
            1,
        ),
        ("order_step_seconds_count{step=\"half_message\"}", 2),
        ("order_step_seconds_count{step=\"claim_cart\"}", 2),
        ("order_step_seconds_count{step=\"sell\"}", 2),
        ("order_step_seconds_count{step=\"order_writes\"}", 1),
        ("order_step_seconds_count{step=\"commit\"}", 1),
        ("order_step_seconds_count{step=\"pay_timeout_send\"}", 1),
        ("order_step_seconds_count{step=\"end_transaction\"}", 2),
    ] {
        assert!(
            histogram_count(&order, series) >= at_least,
            "{series} below {at_least}:\n{order}"
        );
    }
    assert!(
        order.contains("order_step_seconds_bucket{step=\"sell\",le=\"0.001\"}"),
        "millisecond buckets: {order}"
    );
    let inventory = eventually(PATIENCE, "the reback handled", || async {
        let text = scrape(stack.inventory_metrics_addr).await;
        (histogram_count(&text, "inventory_reback_seconds_count") >= 1).then_some(text)
    })
    .await;
    assert!(
        inventory.contains("inventory_reback_seconds_bucket{le=\"0.0005\"}"),
        "{inventory}"
    );
    eventually(PATIENCE, "the pay timeout handled", || async {
        let text = scrape(stack.order_metrics_addr).await;
        (histogram_count(&text, "order_pay_timeout_seconds_count") >= 1).then_some(())
    })
    .await;
    stack.stop().await;
}
