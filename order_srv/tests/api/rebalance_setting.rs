//! The consumers' rebalance interval is read by the RocketMQ client from the process
//! environment, which silently ignores a value it cannot parse: the service refuses one.

use std::time::Duration;

use tokio::process::Command;

#[tokio::test]
async fn a_rebalance_interval_the_client_would_ignore_stops_the_service_naming_it() {
    for bad in ["5s", "500", "-1"] {
        let run = Command::new(env!("CARGO_BIN_EXE_order_srv"))
            .env(mq::REBALANCE_INTERVAL_ENV, bad)
            // Nothing answers here: without the check the service fails on its database.
            .env("ORDER_DATABASE_URL", "mysql://root@127.0.0.1:1/unreachable")
            .env("ORDER_GRPC_ADDR", "127.0.0.1:0")
            .env("ORDER_METRICS_ADDR", "127.0.0.1:0")
            .env("RUST_LOG", "off")
            .kill_on_drop(true)
            .output();
        let output = tokio::time::timeout(Duration::from_secs(60), run)
            .await
            .expect("order_srv exits")
            .expect("order_srv runs");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "{bad}: it started");
        assert!(
            stderr.contains(mq::REBALANCE_INTERVAL_ENV) && !stderr.contains("ORDER_DATABASE_URL"),
            "{bad}: {stderr}"
        );
    }
}
