//! A healthy system logs no WARN and no ERROR: the broker (`devstack broker`) and both
//! services as processes with their default log filters (RUST_LOG unset, as in the
//! container image), through start, one order, and stop. Each line that should not be
//! there is printed. Needs MariaDB on 127.0.0.1:3306 (scripts/test starts it).

use std::{path::Path, time::Duration};

use devstack::procs::{Parts, Proc};
use proto::{
    inventory::{self as inv, inventory_client::InventoryClient},
    order::{self as pb, order_client::OrderClient},
};
use testkit::unique;

const MYSQL: &str = "mysql://root@127.0.0.1:3306";

/// The WARN and ERROR lines of a log, colour codes removed.
fn loud_lines(log: &str) -> Vec<String> {
    log.lines()
        .map(strip_ansi)
        .filter(|line| line.contains(" WARN ") || line.contains(" ERROR "))
        .collect()
}

fn strip_ansi(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            // ESC [ ... letter
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

async fn place_one_order(parts: &Parts) {
    let mut order = OrderClient::connect(parts.order_addr())
        .await
        .expect("connect order_srv");
    let mut inventory = InventoryClient::connect(parts.inventory_addr())
        .await
        .expect("connect inventory_srv");
    order
        .upsert_goods(pb::Goods {
            id: 1,
            name: "keyboard".into(),
            price_cents: 4_590,
        })
        .await
        .expect("goods");
    inventory
        .set_inv(inv::SetInvRequest {
            goods_id: 1,
            stocks: 10,
        })
        .await
        .expect("stock");
    order
        .create_cart_item(pb::CreateCartItemRequest {
            user_id: 7,
            goods_id: 1,
            nums: 2,
            checked: None,
        })
        .await
        .expect("cart");
    order
        .create_order(pb::CreateOrderRequest {
            user_id: 7,
            address: "1 Main St".into(),
            name: "Ada".into(),
            mobile: "13800000000".into(),
            post: String::new(),
            request_id: String::new(),
        })
        .await
        .expect("an order");
}

fn log_of(dir: &Path, name: &str) -> String {
    std::fs::read_to_string(dir.join(format!("{name}.log"))).unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_healthy_system_logs_no_warn_and_no_error_from_start_to_stop() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (order_db, inventory_db) = (unique("quiet_order"), unique("quiet_inventory"));
    let parts = Parts::new(
        dir.path(),
        format!("{MYSQL}/{order_db}"),
        format!("{MYSQL}/{inventory_db}"),
        Duration::from_secs(3600),
    )
    .expect("ports")
    .default_service_logs();

    let mut broker = parts.broker().await.expect("broker");
    testkit::broker::create_topics(&parts.namesrv(), &testkit::SYSTEM_TOPICS, 4)
        .await
        .expect("topics");
    let mut inventory = parts.inventory(false).await.expect("inventory_srv");
    let mut order = parts.order_with(None).await.expect("order_srv");
    place_one_order(&parts).await;
    // Long enough for the consumers' first rebalance and the clients' periodic tasks.
    tokio::time::sleep(Duration::from_secs(5)).await;
    for proc in [&mut order, &mut inventory] {
        proc.stop(Duration::from_secs(30)).await;
    }
    stop_broker(&mut broker).await;

    let mut loud = Vec::new();
    for name in ["broker", "inventory_srv", "order_srv"] {
        for line in loud_lines(&log_of(dir.path(), name)) {
            loud.push(format!("{name}: {line}"));
        }
    }
    assert!(
        loud.is_empty(),
        "a healthy system logged:\n{}",
        loud.join("\n")
    );

    let server = MYSQL.parse().expect("literal URL");
    testkit::mysql::drop_databases(&server, &[&order_db, &inventory_db], "127.0.0.1:3306")
        .await
        .expect("drop the test databases");
}

/// `devstack broker` stops on Ctrl-C (SIGINT).
async fn stop_broker(broker: &mut Proc) {
    let _ = std::process::Command::new("kill")
        .args(["-INT", &broker.pid().to_string()])
        .status();
    broker.stop(Duration::from_secs(30)).await;
}
