//! A healthy system logs no WARN and no ERROR: the broker (`devstack broker`) and both
//! services as processes with their default log filters (RUST_LOG unset, as in the
//! container image), through start, one order, and stop. Each line that should not be
//! there is printed. Needs MariaDB on 127.0.0.1:3306 (scripts/test starts it).

use std::{
    fs::File,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::Duration,
};

use devstack::{
    broker::{free_broker_port, free_port},
    procs::wait_for_port,
    testing::{PATIENCE, eventually, unique},
};
use proto::{
    inventory::{self as inv, inventory_client::InventoryClient},
    order::{self as pb, order_client::OrderClient},
};
use sqlx::{Connection, Executor, MySqlConnection};

const MYSQL: &str = "mysql://root@127.0.0.1:3306";

/// A child process that is killed if the test fails before stopping it.
struct Running {
    name: &'static str,
    child: Child,
    log: PathBuf,
}

impl Running {
    fn start(name: &'static str, args: &[&str], env: &[(&str, String)], dir: &Path) -> Self {
        let log = dir.join(format!("{name}.log"));
        let out = File::create(&log).expect("log file");
        let err = out.try_clone().expect("log file");
        let binary = PathBuf::from(env!("CARGO_BIN_EXE_devstack")).with_file_name(name);
        let child = Command::new(binary)
            .args(args)
            .env_remove("RUST_LOG")
            .env("NO_COLOR", "1")
            .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .expect("process starts");
        Self { name, child, log }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Sends `signal` and waits for the exit.
    async fn stop(&mut self, signal: &str) {
        let _ = Command::new("kill")
            .args([signal, &self.child.id().to_string()])
            .status();
        let deadline = std::time::Instant::now() + PATIENCE;
        while self.child.try_wait().ok().flatten().is_none() {
            assert!(
                std::time::Instant::now() < deadline,
                "{} did not exit",
                self.name
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
    }
}

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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_healthy_system_logs_no_warn_and_no_error_from_start_to_stop() {
    let dir = tempfile::tempdir().expect("temp dir");
    let order_db = unique("quiet_order");
    let inventory_db = unique("quiet_inventory");
    let namesrv_port = free_port("127.0.0.1").expect("port");
    let broker_port = free_broker_port("127.0.0.1").expect("port");
    let namesrv = format!("127.0.0.1:{namesrv_port}");
    let free = || format!("127.0.0.1:{}", free_port("127.0.0.1").expect("port"));
    let (order_addr, inventory_addr) = (free(), free());

    let mut broker = Running::start(
        "devstack",
        &["broker", "--fast"],
        &[
            ("DEVSTACK_NAMESRV_PORT", namesrv_port.to_string()),
            ("DEVSTACK_BROKER_PORT", broker_port.to_string()),
            (
                "DEVSTACK_STORE_DIR",
                dir.path().join("store").display().to_string(),
            ),
        ],
        dir.path(),
    );
    eventually(PATIENCE, "the broker and its topics", || async {
        broker.log().contains("name server on").then_some(())
    })
    .await;
    let mut inventory = Running::start(
        "inventory_srv",
        &[],
        &[
            ("INVENTORY_DATABASE_URL", format!("{MYSQL}/{inventory_db}")),
            ("INVENTORY_GRPC_ADDR", inventory_addr.clone()),
            ("INVENTORY_METRICS_ADDR", free()),
            ("NAMESRV_ADDR", namesrv.clone()),
        ],
        dir.path(),
    );
    wait_for_port(&inventory_addr, PATIENCE)
        .await
        .unwrap_or_else(|e| panic!("{e}:\n{}", inventory.log()));
    let mut order = Running::start(
        "order_srv",
        &[],
        &[
            ("ORDER_DATABASE_URL", format!("{MYSQL}/{order_db}")),
            ("ORDER_GRPC_ADDR", order_addr.clone()),
            ("ORDER_METRICS_ADDR", free()),
            ("INVENTORY_ENDPOINT", format!("http://{inventory_addr}")),
            ("NAMESRV_ADDR", namesrv.clone()),
        ],
        dir.path(),
    );
    wait_for_port(&order_addr, PATIENCE)
        .await
        .unwrap_or_else(|e| panic!("{e}:\n{}", order.log()));

    // One order through the whole protocol.
    let mut order_client = OrderClient::connect(format!("http://{order_addr}"))
        .await
        .expect("connect order_srv");
    let mut inventory_client = InventoryClient::connect(format!("http://{inventory_addr}"))
        .await
        .expect("connect inventory_srv");
    order_client
        .upsert_goods(pb::Goods {
            id: 1,
            name: "keyboard".into(),
            price_cents: 4_590,
        })
        .await
        .expect("goods");
    inventory_client
        .set_inv(inv::SetInvRequest {
            goods_id: 1,
            stocks: 10,
        })
        .await
        .expect("stock");
    order_client
        .create_cart_item(pb::CreateCartItemRequest {
            user_id: 7,
            goods_id: 1,
            nums: 2,
            checked: None,
        })
        .await
        .expect("cart");
    order_client
        .create_order(pb::CreateOrderRequest {
            user_id: 7,
            address: "1 Main St".into(),
            name: "Ada".into(),
            mobile: "13800000000".into(),
            post: String::new(),
        })
        .await
        .expect("an order");
    // Long enough for the consumers' first rebalance and the clients' periodic tasks.
    tokio::time::sleep(Duration::from_secs(5)).await;

    order.stop("-TERM").await;
    inventory.stop("-TERM").await;
    broker.stop("-INT").await;

    let mut loud = Vec::new();
    for running in [&broker, &inventory, &order] {
        for line in loud_lines(&running.log()) {
            loud.push(format!("{}: {line}", running.name));
        }
    }
    assert!(
        loud.is_empty(),
        "a healthy system logged:\n{}",
        loud.join("\n")
    );

    let mut admin = MySqlConnection::connect(MYSQL).await.expect("MariaDB");
    for db in [&order_db, &inventory_db] {
        let _ = admin
            .execute(format!("DROP DATABASE IF EXISTS `{db}`").as_str())
            .await;
    }
}
