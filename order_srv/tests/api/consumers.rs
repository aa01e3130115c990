//! The reback consumer (inventory) and the pay-timeout consumer (order), end to end.

use std::{sync::atomic::Ordering, time::Duration};

use devstack::testing::{PATIENCE, eventually, unique};
use futures::future::join_all;
use inventory_srv::consumer::RebackCounters;
use proto::inventory as inv;
use sqlx::mysql::{MySqlConnectOptions, MySqlPoolOptions};
use tonic::Code;

use crate::helpers::{order_config, spawn_stack, spawn_stack_with};

#[sqlx::test(migrations = false)]
async fn a_reback_delivered_twice_and_to_two_consumers_at_once_returns_the_stock_once(
    _: MySqlPoolOptions,
    db: MySqlConnectOptions,
) {
    let stack = spawn_stack(db).await;
    stack.goods(1, 100, 10).await;
    stack.add_to_cart(21, 1, 3).await;
    let order = stack.create_order(21).await.expect("order");
    assert_eq!(stack.stock(1).await, 7);

    // A second consumer group on the same database: every copy reaches both at once.
    let second_counters = std::sync::Arc::new(RebackCounters::default());
    let mut second = inventory_srv::consumer::start(
        &stack.mq,
        &unique("inventory_reback_second"),
        &stack.config.reback_topic,
        4,
        stack.inventory_pool.clone(),
        second_counters.clone(),
    )
    .await
    .expect("second consumer");
    for _ in 0..3 {
        stack.send_reback(&order.order_sn).await;
    }

    let handled = |c: &RebackCounters| {
        c.returned.load(Ordering::SeqCst) + c.already_returned.load(Ordering::SeqCst)
    };
    eventually(PATIENCE, "six deliveries", || async {
        (handled(&stack.reback_counters) + handled(&second_counters) >= 6).then_some(())
    })
    .await;
    let returned = stack.reback_counters.returned.load(Ordering::SeqCst)
        + second_counters.returned.load(Ordering::SeqCst);
    assert_eq!(returned, 1, "returned exactly once");
    assert_eq!(stack.stock(1).await, 10);
    assert_eq!(
        stack.sell_status(&order.order_sn).await.as_deref(),
        Some("RETURNED")
    );
    rocketmq_client_rust::MQPushConsumer::shutdown(&mut second).await;
    stack.stop().await;
}

#[sqlx::test(migrations = false)]
async fn a_reback_that_overtakes_its_sell_tombstones_the_order_and_the_late_sell_is_refused(
    _: MySqlPoolOptions,
    db: MySqlConnectOptions,
) {
    let stack = spawn_stack(db).await;
    stack.goods(1, 100, 10).await;
    stack.send_reback("LATE-1").await;
    eventually(PATIENCE, "the tombstone", || async {
        stack
            .sell_status("LATE-1")
            .await
            .filter(|s| s == "RETURNED")
    })
    .await;

    let status = stack
        .inventory
        .clone()
        .sell(inv::SellRequest {
            order_sn: "LATE-1".into(),
            items: vec![inv::GoodsNum {
                goods_id: 1,
                num: 2,
            }],
        })
        .await
        .expect_err("late Sell refused");
    assert_eq!(status.code(), Code::FailedPrecondition);
    assert_eq!(stack.stock(1).await, 10);
    assert_eq!(stack.reback_counters.tombstoned.load(Ordering::SeqCst), 1);
    stack.stop().await;
}

#[sqlx::test(migrations = false)]
async fn an_unpaid_order_is_closed_after_the_timeout_and_its_stock_returned_once_even_when_the_first_send_fails(
    _: MySqlPoolOptions,
    db: MySqlConnectOptions,
) {
    let user = 2_000_001;
    let mut config = order_config();
    config.pay_timeout = Duration::from_secs(2);
    let stack = spawn_stack_with(db, config).await;
    stack.goods(1, 100, 10).await;
    stack.add_to_cart(user, 1, 4).await;
    fail::cfg("order.fail_reback_send", &format!("return({user})")).expect("failpoint");
    let order = stack.create_order(user).await.expect("order");
    assert_eq!(stack.stock(1).await, 6);

    eventually(PATIENCE, "the failed reback send", || async {
        (stack.timeout_counters.retried.load(Ordering::SeqCst) >= 1).then_some(())
    })
    .await;
    fail::remove("order.fail_reback_send");
    assert_eq!(
        stack.order_status(&order.order_sn).await.as_deref(),
        Some("TRADE_CLOSED")
    );
    eventually(PATIENCE, "the stock back", || async {
        (stack.stock(1).await == 10).then_some(())
    })
    .await;
    assert_eq!(
        stack.sell_status(&order.order_sn).await.as_deref(),
        Some("RETURNED")
    );
    assert_eq!(stack.timeout_counters.closed.load(Ordering::SeqCst), 1);
    stack
        .audit(&[(1, 10)], std::slice::from_ref(&order.order_sn))
        .await;
    stack.stop().await;
}

#[sqlx::test(migrations = false)]
async fn payment_and_timeout_racing_on_the_same_orders_have_exactly_one_winner_each(
    _: MySqlPoolOptions,
    db: MySqlConnectOptions,
) {
    const ORDERS: i64 = 24;
    let mut config = order_config();
    config.pay_timeout = Duration::from_secs(2);
    let stack = spawn_stack_with(db, config).await;
    stack.goods(1, 100, 1_000).await;
    for user in 1..=ORDERS {
        stack.add_to_cart(user, 1, 2).await;
    }
    let orders: Vec<_> = join_all((1..=ORDERS).map(|user| stack.create_order(user)))
        .await
        .into_iter()
        .map(|r| r.expect("order"))
        .collect();

    // Pay each order at a different moment, from well before its 2 s timeout to well after.
    let payments = join_all(orders.iter().enumerate().map(|(i, order)| {
        let stack = &stack;
        async move {
            tokio::time::sleep(Duration::from_millis(500 + 250 * i as u64)).await;
            (order.order_sn.clone(), stack.pay(&order.order_sn).await)
        }
    }))
    .await;

    let mut paid = 0;
    for (order_sn, payment) in &payments {
        match payment {
            Ok(info) => {
                paid += 1;
                assert_eq!(info.status, proto::order::OrderStatus::TradeSuccess as i32);
            }
            Err(status) => {
                assert_eq!(
                    status.code(),
                    Code::FailedPrecondition,
                    "{order_sn}: {status:?}"
                );
                assert_eq!(
                    stack.order_status(order_sn).await.as_deref(),
                    Some("TRADE_CLOSED")
                );
            }
        }
    }
    let closed = ORDERS as usize - paid;
    assert!(
        paid > 0 && closed > 0,
        "no race happened: {paid} paid, {closed} closed"
    );
    eventually(PATIENCE, "the closed orders' stock back", || async {
        (stack.stock(1).await == 1_000 - 2 * paid as i32).then_some(())
    })
    .await;
    assert_eq!(
        stack.reback_counters.returned.load(Ordering::SeqCst) as usize,
        closed,
        "each closed order returned once"
    );
    let acknowledged: Vec<String> = orders.iter().map(|o| o.order_sn.clone()).collect();
    stack.audit(&[(1, 1_000)], &acknowledged).await;
    stack.stop().await;
}

#[sqlx::test(migrations = false)]
async fn a_reback_arriving_while_the_inventory_database_fails_is_retried_until_it_recovers(
    _: MySqlPoolOptions,
    db: MySqlConnectOptions,
) {
    let stack = spawn_stack(db).await;
    stack.goods(1, 100, 10).await;
    stack.add_to_cart(31, 1, 5).await;
    let order = stack.create_order(31).await.expect("order");

    // Every reback query now fails as if the table were gone.
    sqlx::query("RENAME TABLE stock_sell_detail TO stock_sell_detail_away")
        .execute(&stack.inventory_pool)
        .await
        .expect("rename");
    stack.send_reback(&order.order_sn).await;
    eventually(PATIENCE, "a failed attempt", || async {
        (stack.reback_counters.retried.load(Ordering::SeqCst) >= 1).then_some(())
    })
    .await;
    sqlx::query("RENAME TABLE stock_sell_detail_away TO stock_sell_detail")
        .execute(&stack.inventory_pool)
        .await
        .expect("rename back");

    eventually(PATIENCE, "the stock back after recovery", || async {
        (stack.stock(1).await == 10).then_some(())
    })
    .await;
    assert_eq!(
        stack.sell_status(&order.order_sn).await.as_deref(),
        Some("RETURNED")
    );
    stack.stop().await;
}

#[sqlx::test(migrations = false)]
async fn malformed_messages_on_both_topics_are_recorded_and_the_services_keep_serving(
    _: MySqlPoolOptions,
    db: MySqlConnectOptions,
) {
    let mut config = order_config();
    config.pay_timeout = Duration::from_secs(1);
    let stack = spawn_stack_with(db, config).await;
    let reback_topic = stack.config.reback_topic.clone();
    let timeout_topic = stack.config.timeout_topic.clone();
    stack.send_raw(&reback_topic, b"not json").await;
    stack.send_raw(&reback_topic, br#"{"order_sn": ""}"#).await;
    stack.send_raw(&timeout_topic, b"\xff\xfe").await;

    eventually(PATIENCE, "two dead rebacks", || async {
        (stack.dead_messages(&stack.inventory_pool).await.len() == 2).then_some(())
    })
    .await;
    let dead = eventually(PATIENCE, "one dead pay timeout", || async {
        let dead = stack.dead_messages(&stack.order_pool).await;
        (dead.len() == 1).then_some(dead)
    })
    .await;
    assert_eq!(dead[0].0, timeout_topic);
    assert_eq!(stack.reback_counters.dead.load(Ordering::SeqCst), 2);
    assert_eq!(stack.timeout_counters.dead.load(Ordering::SeqCst), 1);

    stack.goods(1, 100, 10).await;
    stack.add_to_cart(41, 1, 1).await;
    stack.create_order(41).await.expect("still serving");
    stack.stop().await;
}
