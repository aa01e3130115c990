//! Both services serve Prometheus metrics of what they did.

use sqlx::mysql::{MySqlConnectOptions, MySqlPoolOptions};
use testkit::{PATIENCE, eventually};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::helpers::spawn_stack;

async fn scrape(addr: std::net::SocketAddr) -> String {
    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    stream
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: test\r\n\r\n")
        .await
        .expect("request");
    let mut response = String::new();
    stream
        .read_to_string(&mut response)
        .await
        .expect("response");
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    response
}

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
