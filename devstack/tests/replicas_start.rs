//! Replicas start together in every deployment: four order_srv and four inventory_srv
//! processes started at once against a MySQL server on which their databases do not exist
//! yet must all create, migrate and serve (DESIGN.md §9, "N replicas start at once").
//! Needs MariaDB on 127.0.0.1:3306 (scripts/test starts it).

use std::{path::PathBuf, time::Duration};

use devstack::procs::Proc;
use sqlx::{Connection, MySqlConnection};
use testkit::{PATIENCE, broker::free_port, eventually, shared_broker, unique, wait_for_port};
use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};

const REPLICAS: usize = 4;
const MYSQL: &str = "mysql://root@127.0.0.1:3306";

fn binary(name: &str) -> PathBuf {
    let devstack = PathBuf::from(env!("CARGO_BIN_EXE_devstack"));
    devstack.with_file_name(name)
}

async fn serving(addr: &str) -> bool {
    let Ok(endpoint) = tonic::transport::Endpoint::from_shared(format!("http://{addr}")) else {
        return false;
    };
    let Ok(channel) = endpoint.connect().await else {
        return false;
    };
    let mut client = HealthClient::new(channel);
    client
        .check(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .is_ok_and(|r| r.into_inner().status == ServingStatus::Serving as i32)
}

async fn drop_databases(names: &[&str]) {
    let server = MYSQL.parse().expect("literal URL");
    testkit::mysql::drop_databases(&server, names, "127.0.0.1:3306")
        .await
        .expect("MariaDB must be running on 127.0.0.1:3306 (scripts/test starts it)");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn four_replicas_of_each_service_start_at_once_on_a_fresh_database_and_all_serve() {
    let namesrv = shared_broker().to_owned();
    let order_db = unique("race_order");
    let inventory_db = unique("race_inventory");
    drop_databases(&[&order_db, &inventory_db]).await;
    let reback_topic = unique("order_reback");
    let timeout_topic = unique("order_timeout");
    testkit::broker::create_topics(&namesrv, &[&reback_topic, &timeout_topic], 2)
        .await
        .expect("topics");
    let logs = tempfile::tempdir().expect("log dir");
    let tx_group = unique("order_reback_tx");
    let plain_group = unique("order_plain");
    let timeout_group = unique("order_timeout");
    let reback_group = unique("inventory_reback");

    let mut procs = Vec::new();
    let mut grpc_addrs = Vec::new();
    let inventory_addr = format!("127.0.0.1:{}", free_port("127.0.0.1").expect("port"));
    for i in 0..REPLICAS {
        let inv_grpc = if i == 0 {
            inventory_addr.clone()
        } else {
            format!("127.0.0.1:{}", free_port("127.0.0.1").expect("port"))
        };
        let ord_grpc = format!("127.0.0.1:{}", free_port("127.0.0.1").expect("port"));
        let env = |pairs: &[(&str, String)]| -> Vec<(String, String)> {
            pairs
                .iter()
                .map(|(k, v)| ((*k).to_owned(), v.clone()))
                .chain([("NAMESRV_ADDR".to_owned(), namesrv.clone())])
                .collect()
        };
        let inv_env = env(&[
            ("INVENTORY_DATABASE_URL", format!("{MYSQL}/{inventory_db}")),
            ("INVENTORY_GRPC_ADDR", inv_grpc.clone()),
            (
                "INVENTORY_METRICS_ADDR",
                format!("127.0.0.1:{}", free_port("127.0.0.1").expect("port")),
            ),
            ("INVENTORY_REBACK_TOPIC", reback_topic.clone()),
            ("INVENTORY_REBACK_CONSUMER_GROUP", reback_group.clone()),
        ]);
        let ord_env = env(&[
            ("ORDER_DATABASE_URL", format!("{MYSQL}/{order_db}")),
            ("ORDER_GRPC_ADDR", ord_grpc.clone()),
            (
                "ORDER_METRICS_ADDR",
                format!("127.0.0.1:{}", free_port("127.0.0.1").expect("port")),
            ),
            ("INVENTORY_ENDPOINT", format!("http://{inventory_addr}")),
            ("ORDER_REBACK_TOPIC", reback_topic.clone()),
            ("ORDER_TIMEOUT_TOPIC", timeout_topic.clone()),
            ("ORDER_TX_PRODUCER_GROUP", tx_group.clone()),
            ("ORDER_PLAIN_PRODUCER_GROUP", plain_group.clone()),
            ("ORDER_TIMEOUT_CONSUMER_GROUP", timeout_group.clone()),
        ]);
        procs.push(
            Proc::spawn(
                &format!("inventory_srv-{i}"),
                &binary("inventory_srv"),
                &[],
                &inv_env,
                &logs.path().join(format!("inventory_srv-{i}.log")),
            )
            .expect("inventory_srv starts"),
        );
        procs.push(
            Proc::spawn(
                &format!("order_srv-{i}"),
                &binary("order_srv"),
                &[],
                &ord_env,
                &logs.path().join(format!("order_srv-{i}.log")),
            )
            .expect("order_srv starts"),
        );
        grpc_addrs.push(inv_grpc);
        grpc_addrs.push(ord_grpc);
    }

    for (proc, addr) in procs.iter_mut().zip(&grpc_addrs) {
        let waited = wait_for_port(addr, PATIENCE).await;
        let log = std::fs::read_to_string(logs.path().join(format!("{}.log", proc.name)))
            .unwrap_or_default();
        assert!(
            waited.is_ok() && proc.is_running(),
            "{} did not come up on {addr}:\n{log}",
            proc.name
        );
        eventually(PATIENCE, &format!("{} serving", proc.name), || async {
            serving(addr).await.then_some(())
        })
        .await;
    }

    // Each migration was applied exactly once to each database.
    for (db, migrator) in [
        (&order_db, &order_srv::MIGRATOR),
        (&inventory_db, &inventory_srv::MIGRATOR),
    ] {
        let mut conn = MySqlConnection::connect(&format!("{MYSQL}/{db}"))
            .await
            .expect("connect");
        let applied: Vec<i64> = sqlx::query_scalar(
            "SELECT version FROM _sqlx_migrations WHERE success ORDER BY version",
        )
        .fetch_all(&mut conn)
        .await
        .expect("applied migrations");
        let expected: Vec<i64> = migrator.iter().map(|m| m.version).collect();
        assert_eq!(applied, expected, "migrations of {db}");
    }

    for proc in &mut procs {
        proc.stop(Duration::from_secs(20)).await;
    }
    drop_databases(&[&order_db, &inventory_db]).await;
}

/// The value of one sample (`name{labels}` as exposed) at a metrics URL; 0 when absent.
async fn sample(metrics_addr: &str, series: &str) -> u64 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let Ok(mut stream) = tokio::net::TcpStream::connect(metrics_addr).await else {
        return 0;
    };
    let _ = stream
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: test\r\n\r\n")
        .await;
    let mut text = String::new();
    let _ = stream.read_to_string(&mut text).await;
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or(0)
}

/// `host:port` after `marker` in a line of `devstack up`'s banner.
fn addr_after<'a>(line: &'a str, marker: &str) -> Option<&'a str> {
    let rest = &line[line.find(marker)? + marker.len()..];
    Some(
        rest.split(|c: char| c.is_whitespace() || c == '/')
            .next()
            .unwrap_or(rest),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn devstack_up_runs_replicas_and_every_order_srv_spreads_its_sells_over_them() {
    use proto::order::{self as pb, order_client::OrderClient};
    use tokio::io::{AsyncBufReadExt, BufReader};

    let (order_db, inventory_db) = (unique("up_order"), unique("up_inventory"));
    let store = tempfile::tempdir().expect("store dir");
    let mut up = tokio::process::Command::new(env!("CARGO_BIN_EXE_devstack"))
        .args(["up", "--replicas", "2"])
        .env("ORDER_DATABASE_URL", format!("{MYSQL}/{order_db}"))
        .env("INVENTORY_DATABASE_URL", format!("{MYSQL}/{inventory_db}"))
        .env("ORDER_GRPC_ADDR", "127.0.0.1:0")
        .env("INVENTORY_GRPC_ADDR", "127.0.0.1:0")
        .env("ORDER_METRICS_ADDR", "127.0.0.1:0")
        .env("INVENTORY_METRICS_ADDR", "127.0.0.1:0")
        .env(
            "DEVSTACK_NAMESRV_PORT",
            free_port("127.0.0.1").expect("port").to_string(),
        )
        .env(
            "DEVSTACK_BROKER_PORT",
            testkit::broker::free_broker_port("127.0.0.1")
                .expect("port")
                .to_string(),
        )
        .env("DEVSTACK_STORE_DIR", store.path())
        .env("RUST_LOG", "warn")
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("devstack up starts");
    let mut lines = BufReader::new(up.stdout.take().expect("piped")).lines();
    let (mut orders, mut inventories) = (Vec::new(), Vec::new());
    let banner = tokio::time::timeout(PATIENCE * 2, async {
        while let Ok(Some(line)) = lines.next_line().await {
            let replica = addr_after(&line, "grpc://")
                .zip(addr_after(&line, "metrics http://"))
                .map(|(grpc, metrics)| (grpc.to_owned(), metrics.to_owned()));
            match replica {
                Some(replica) if line.contains("order_srv") => orders.push(replica),
                Some(replica) if line.contains("inventory_srv") => inventories.push(replica),
                _ => {}
            }
            if line.contains("Ctrl-C stops everything") {
                return true;
            }
        }
        false
    })
    .await;
    assert_eq!(banner.ok(), Some(true), "devstack up did not come up");
    assert_eq!(
        (orders.len(), inventories.len()),
        (2, 2),
        "{orders:?} {inventories:?}"
    );

    // Orders through both order_srv replicas, as a gateway spreads them; goods 1 is
    // seeded with stock 100.
    for user in 1..=20_i64 {
        let (grpc, _) = &orders[usize::try_from(user).expect("small") % 2];
        let mut client = OrderClient::connect(format!("http://{grpc}"))
            .await
            .expect("connect order_srv");
        client
            .create_cart_item(pb::CreateCartItemRequest {
                user_id: user,
                goods_id: 1,
                nums: 1,
                checked: Some(true),
            })
            .await
            .expect("cart");
        client
            .create_order(pb::CreateOrderRequest {
                user_id: user,
                address: "1 Main St".into(),
                name: "Ada".into(),
                mobile: "13800000000".into(),
                post: String::new(),
                request_id: String::new(),
            })
            .await
            .expect("an order");
    }
    for (_, metrics) in &orders {
        assert_eq!(sample(metrics, "order_orders_created_total").await, 10);
        assert_eq!(sample(metrics, "order_inventory_replicas").await, 2);
    }
    let mut sells = Vec::new();
    for (_, metrics) in &inventories {
        sells.push(sample(metrics, "inventory_sells_total{outcome=\"deducted\"}").await);
    }
    assert_eq!(sells.iter().sum::<u64>(), 20, "{sells:?}");
    assert!(
        sells.iter().all(|n| *n > 0),
        "Sells reach both replicas: {sells:?}"
    );

    let _ = std::process::Command::new("kill")
        .args(["-INT", &up.id().expect("running").to_string()])
        .status();
    let stopped = tokio::time::timeout(PATIENCE, up.wait()).await;
    assert!(
        stopped.is_ok_and(|status| status.is_ok_and(|s| s.success())),
        "devstack up stops cleanly on Ctrl-C"
    );
    drop_databases(&[&order_db, &inventory_db]).await;
}
