//! DESIGN.md §9 "broker down briefly": CreateOrder answers UNAVAILABLE while the broker is
//! down and succeeds again within seconds of its return. rocketmq-transport 1.0.0 kept its
//! connection circuit breaker open for 30 s after 5 failed connects, so a 3 s blip cost 30 s
//! of orders; the workspace carries a patched copy (docs/operations.md, "Broker reconnect").

use std::time::{Duration, Instant};

use sqlx::mysql::{MySqlConnectOptions, MySqlPoolOptions};
use testkit::{
    BrokerSettings, EmbeddedBroker,
    broker::{free_broker_port, free_port},
    testing::{PATIENCE, eventually},
};
use tonic::Code;

use crate::helpers::{order_config, spawn_stack_with};

/// What the test allows between the broker accepting connections and the first order
/// placed. The target is 5 s (measured: see docs/operations.md); the margin is for CI's two
/// shared cores. The unpatched client needed about 27 s more.
const RECOVERED_WITHIN: Duration = Duration::from_secs(12);

#[sqlx::test(migrations = false)]
async fn create_order_succeeds_again_within_seconds_of_a_restarted_broker_accepting_connections(
    _: MySqlPoolOptions,
    db: MySqlConnectOptions,
) {
    let store = tempfile::tempdir().expect("store dir");
    let mut config = order_config();
    let settings = BrokerSettings {
        namesrv_port: free_port("127.0.0.1").expect("port"),
        broker_port: free_broker_port("127.0.0.1").expect("port"),
        store_dir: Some(store.path().to_path_buf()),
        topics: vec![config.reback_topic.clone(), config.timeout_topic.clone()],
        ..BrokerSettings::for_tests()
    };
    let broker = EmbeddedBroker::start(settings.clone())
        .await
        .expect("broker starts");
    let broker_addr = broker.broker_addr();
    config.namesrv_addr = broker.namesrv_addr().to_owned();
    let stack = spawn_stack_with(db, config).await;
    stack.goods(1, 100, 100).await;
    stack.add_to_cart(1, 1, 1).await;
    stack.add_to_cart(2, 1, 1).await;
    stack
        .create_order(1)
        .await
        .expect("an order before the blip");

    broker.shutdown().await;
    // Orders keep coming while it is down (enough failed connects to open the breaker).
    let down_until = Instant::now() + Duration::from_secs(3);
    let mut refused = 0;
    while Instant::now() < down_until {
        let status = stack.create_order(2).await.expect_err("the broker is down");
        assert_eq!(status.code(), Code::Unavailable, "{status:?}");
        refused += 1;
    }
    assert!(refused >= 5, "only {refused} orders tried while down");
    assert_eq!(stack.cart_len(2).await, 1, "nothing was touched");

    let restart = tokio::spawn(EmbeddedBroker::start(settings));
    eventually(PATIENCE, "the broker accepting connections", || async {
        tokio::net::TcpStream::connect(broker_addr).await.ok()
    })
    .await;
    let accepting = Instant::now();
    let order = eventually(PATIENCE, "an order after the restart", || async {
        stack.create_order(2).await.ok()
    })
    .await;
    let recovered = accepting.elapsed();
    eprintln!("CreateOrder succeeded {recovered:?} after the broker accepted connections");
    assert!(
        recovered < RECOVERED_WITHIN,
        "CreateOrder took {recovered:?} to recover after the broker came back"
    );

    let broker = restart
        .await
        .expect("restart task")
        .expect("broker restarts");
    assert_eq!(
        stack.sell_status(&order.order_sn).await.as_deref(),
        Some("DEDUCTED")
    );
    stack.stop().await;
    broker.shutdown().await;
}
