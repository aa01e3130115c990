//! Two master brokers: CreateOrder carries on while one of them is stopped (its sends go
//! to the other), as a RocketMQ cluster with more than one master is meant to, and the
//! half messages the stopped one holds are resolved when it returns.

use sqlx::mysql::{MySqlConnectOptions, MySqlPoolOptions};
use testkit::{BrokerSettings, EmbeddedBroker, PATIENCE, eventually};

use crate::helpers::{Stack, arm, order_config, spawn_stack_with};

/// Both services on the cluster `first` runs the name server of, their topics on both
/// masters, goods 1 with a stock of 1,000.
async fn stack_on_both(first: &EmbeddedBroker, db: MySqlConnectOptions) -> Stack {
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
    stack
}

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
    let second = EmbeddedBroker::start(BrokerSettings::another_master(
        first.namesrv_addr(),
        "broker-b",
    ))
    .await
    .expect("broker-b");
    let stack = stack_on_both(&first, db).await;

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

#[sqlx::test(migrations = false)]
async fn a_stopped_brokers_unresolved_half_messages_are_checked_back_once_it_returns(
    _: MySqlPoolOptions,
    db: MySqlConnectOptions,
) {
    const LOST: i64 = 8;
    let store = tempfile::tempdir().expect("broker-b's store");
    let first = EmbeddedBroker::start(BrokerSettings {
        topics: Vec::new(),
        ..BrokerSettings::for_tests()
    })
    .await
    .expect("name server and broker-a");
    // The restarted broker's first check-backs go unanswered for about 27 s (measured,
    // not yet explained; see docs/operations.md): let it ask for as long as that takes instead
    // of giving up after its usual 30 tries, so a slow machine measures, not fails.
    let second_settings = BrokerSettings {
        store_dir: Some(store.path().to_path_buf()),
        transaction_check_max: 1_000,
        ..BrokerSettings::another_master(first.namesrv_addr(), "broker-b")
    };
    let second = EmbeddedBroker::start(second_settings.clone())
        .await
        .expect("broker-b");
    let stack = stack_on_both(&first, db).await;

    // Orders whose END_TRANSACTION is lost: each half message waits for a check-back on
    // whichever master stored it. Then broker-b stops at once, before it asks.
    let mut placed = Vec::new();
    for user in 1..=LOST {
        stack.add_to_cart(user, 1, 1).await;
        let lost = arm("order.after_local_commit", &format!("return({user})")).await;
        placed.push(stack.create_order(user).await.expect("committed").order_sn);
        drop(lost);
    }
    second.shutdown().await;
    let keep = rocketmq_client_rust::LocalTransactionState::RollbackMessage;
    let answered_before = stack.order_metrics.check_back_answers(keep);

    // broker-b returns on its store; its half messages are asked about then.
    let back = std::time::Instant::now();
    let second = EmbeddedBroker::start(second_settings)
        .await
        .expect("broker-b restarts on its store");
    eventually(
        PATIENCE * 3,
        "every lost END_TRANSACTION checked back",
        || async { (stack.order_metrics.check_back_answers(keep) >= LOST as u64).then_some(()) },
    )
    .await;
    eprintln!(
        "check-backs: {answered_before} of {LOST} before broker-b returned, all {LOST} {:.1} s after",
        back.elapsed().as_secs_f64()
    );
    // Every order committed, so every check-back kept its stock.
    assert_eq!(stack.stock(1).await, 1_000 - LOST);
    stack.audit(&[(1, 1_000)], &placed).await;
    stack.stop().await;
    second.shutdown().await;
    first.shutdown().await;
}
