//! Two master brokers: CreateOrder carries on while one of them is stopped (its sends go
//! to the other), as a RocketMQ cluster with more than one master is meant to.

use sqlx::mysql::{MySqlConnectOptions, MySqlPoolOptions};
use testkit::{BrokerSettings, EmbeddedBroker};

use crate::helpers::{order_config, spawn_stack_with};

#[sqlx::test(migrations = false)]
async fn stopping_one_of_two_brokers_fails_no_create_order(
    _: MySqlPoolOptions,
    db: MySqlConnectOptions,
) {
    const BEFORE: i64 = 20;
    const AFTER: i64 = 30;
    // broker-a with the name server, broker-b in a "process" of its own.
    let first = EmbeddedBroker::start(BrokerSettings {
        topics: Vec::new(),
        ..BrokerSettings::for_tests()
    })
    .await
    .expect("name server and broker-a");
    let second = EmbeddedBroker::start(BrokerSettings {
        join_namesrv: Some(first.namesrv_addr().to_owned()),
        broker_names: vec!["broker-b".into()],
        topics: Vec::new(),
        ..BrokerSettings::for_tests()
    })
    .await
    .expect("broker-b");
    let mut config = order_config();
    config.namesrv_addr = first.namesrv_addr().to_owned();
    testkit::broker::create_topics_on(
        &config.namesrv_addr,
        &[&config.reback_topic, &config.timeout_topic],
        2,
        2,
    )
    .await
    .expect("topics on both brokers");
    let stack = spawn_stack_with(db, config).await;
    stack.goods(1, 100, 1_000).await;

    let mut placed = Vec::new();
    for user in 1..=BEFORE {
        stack.add_to_cart(user, 1, 1).await;
        placed.push(stack.create_order(user).await.expect("an order").order_sn);
    }
    second.shutdown().await;
    for user in 1_001..=1_000 + AFTER {
        stack.add_to_cart(user, 1, 1).await;
        let order = stack
            .create_order(user)
            .await
            .expect("an order while broker-b is stopped");
        placed.push(order.order_sn);
    }
    assert_eq!(stack.stock(1).await, 1_000 - BEFORE - AFTER);
    stack.audit(&[(1, 1_000)], &placed).await;
    stack.stop().await;
    first.shutdown().await;
}
