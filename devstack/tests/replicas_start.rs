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
