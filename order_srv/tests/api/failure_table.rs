//! DESIGN.md §9, the failure table: one test per row, named after it (row08 has two, one
//! for each side of the race). Faults are injected with failpoints that target one user id
//! (`order_srv/src/faults.rs`); a failpoint that answers `Unknown` stands for the process
//! dying at that step, since the broker then sees exactly what it sees after a crash: no
//! END_TRANSACTION, and a check-back answered by whichever group member is alive.
//!
//! | row | where it fails | expected end state |
//! |---|---|---|
//! | 01 | broker down at step 3 | `UNAVAILABLE`; no deduction, no order |
//! | 02 | order_srv killed after half message, before Sell | check-back → aborted → reback → tombstone; stock unchanged |
//! | 03 | Sell refused | Rollback; error to caller; stock unchanged |
//! | 04 | Sell outcome unknown (inventory slow/killed) | reback committed; stock returned or a later Sell refused |
//! | 05 | order_srv killed after Sell, before local commit | check-back → aborted → reback → stock returned |
//! | 06 | local transaction fails | reback committed → stock returned |
//! | 07 | order_srv killed after local commit, before END_TRANSACTION | check-back → committed → no reback |
//! | 08 | check-back during a slow local transaction | barrier serializes them; I1–I5 hold either way |
//! | 09 | reback delivered twice, or concurrently | returned once |
//! | 10 | reback before Sell (reordering) | tombstone; late Sell refused |
//! | 11 | timeout fires, order unpaid | closed, stock returned once |
//! | 12 | payment and timeout race | exactly one wins; a late payment is refused |
//! | 13 | inventory DB down while consuming | retried; after recovery stock returned |
//! | 14 | malformed message | logged, counted, not retried forever; service keeps serving |

use std::time::Duration;

use futures::future::join_all;
use inventory_srv::consumer::RebackCounters;
use proto::inventory as inv;
use rocketmq_client_rust::LocalTransactionState::{
    CommitMessage as ReturnStock, RollbackMessage as KeepStock, Unknown,
};
use sqlx::mysql::{MySqlConnectOptions, MySqlPoolOptions};
use testkit::{PATIENCE, eventually, unique};
use tonic::Code;

use crate::{
    helpers::{
        arm, closed_orders_come_back_then_audit, order_config, race_orders, spawn_stack,
        spawn_stack_with,
    },
    reback_probe::RebackProbe,
};

/// How long "never delivered" is watched: several of the test broker's check intervals.
const ABSENCE_WINDOW: Duration = Duration::from_secs(5);

#[sqlx::test(migrations = false)]
async fn row01_broker_down_at_step_3_gives_unavailable_and_touches_nothing(
    _: MySqlPoolOptions,
    db: MySqlConnectOptions,
) {
    let broker = testkit::EmbeddedBroker::start(testkit::BrokerSettings::for_tests())
        .await
        .expect("dedicated broker");
    let mut config = order_config();
    config.namesrv_addr = broker.namesrv_addr().to_owned();
    let stack = spawn_stack_with(db, config).await;
    stack.goods(1, 100, 10).await;
    stack.add_to_cart(62, 1, 2).await;
    broker.shutdown().await;

    let status = stack.create_order(62).await.expect_err("broker is down");

    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    assert_eq!(stack.stock(1).await, 10);
    assert!(
        stack.sell_details().await.is_empty(),
        "inventory was touched"
    );
    assert_eq!(stack.order_count().await, 0);
    assert_eq!(stack.cart_len(62).await, 1);
    stack.stop().await;
}

#[sqlx::test(migrations = false)]
async fn row02_a_crash_after_the_half_message_is_checked_back_to_a_tombstone(
    _: MySqlPoolOptions,
    db: MySqlConnectOptions,
) {
    let user = 3_000_002;
    let stack = spawn_stack(db).await;
    let probe = RebackProbe::start(&stack).await;
    stack.goods(1, 100, 10).await;
    stack.add_to_cart(user, 1, 2).await;
    // The listener stops right after the half message, as if the process died there.
    let armed_order_after_half_message =
        arm("order.after_half_message", &format!("return({user})")).await;
    let result = stack.create_order(user).await;
    drop(armed_order_after_half_message);
    assert_eq!(result.expect_err("died").code(), Code::Unavailable);

    let order_sn = eventually(PATIENCE, "the checked-back reback", || async {
        probe.seen().first().cloned()
    })
    .await;
    eventually(PATIENCE, "the tombstone", || async {
        stack
            .sell_status(&order_sn)
            .await
            .filter(|s| s == "RETURNED")
    })
    .await;
    assert_eq!(stack.barrier(&order_sn).await.as_deref(), Some("aborted"));
    assert_eq!(stack.stock(1).await, 10);
    assert_eq!(stack.order_count().await, 0);
    stack.audit(&[(1, 10)], &[]).await;
    probe.stop().await;
    stack.stop().await;
}

#[sqlx::test(migrations = false)]
async fn row03_a_refused_sell_rolls_back_and_keeps_stock_and_cart(
    _: MySqlPoolOptions,
    db: MySqlConnectOptions,
) {
    let stack = spawn_stack(db).await;
    stack.goods(1, 100, 10).await;
    stack.goods(2, 100, 1).await;
    stack.add_to_cart(8, 1, 2).await;
    stack.add_to_cart(8, 2, 5).await;

    let status = stack.create_order(8).await.expect_err("refused");

    assert_eq!(status.code(), Code::FailedPrecondition);
    assert!(
        status.message().contains("goods 2"),
        "message names the goods: {}",
        status.message()
    );
    assert_eq!(stack.stock(1).await, 10);
    assert_eq!(stack.stock(2).await, 1);
    assert_eq!(stack.cart_len(8).await, 2);
    assert_eq!(stack.order_count().await, 0);
    assert_eq!(
        stack.order_metrics.answers(KeepStock),
        1,
        "the listener rolled back"
    );
    stack.stop().await;
}

#[sqlx::test(migrations = false)]
async fn row04_an_unknown_sell_outcome_commits_the_reback(
    _: MySqlPoolOptions,
    db: MySqlConnectOptions,
) {
    let mut stack = spawn_stack(db).await;
    let probe = RebackProbe::start(&stack).await;
    stack.goods(1, 100, 10).await;
    stack.add_to_cart(61, 1, 1).await;
    stack.stop_inventory_service().await;

    let status = stack.create_order(61).await.expect_err("inventory is down");

    assert_eq!(status.code(), Code::Unavailable);
    assert_eq!(stack.order_count().await, 0);
    assert_eq!(stack.cart_len(61).await, 1);
    // The Sell outcome is unknown to order_srv: it commits the reback, which returns
    // the stock (or tombstones the order_sn) once inventory consumes again. The listener
    // itself decides; the check-back (which would also return the stock) is only the net.
    assert_eq!(
        stack.order_metrics.answers(ReturnStock),
        1,
        "the listener committed the reback"
    );
    assert_eq!(stack.order_metrics.answers(KeepStock), 0);
    eventually(PATIENCE, "the committed reback", || async {
        (!probe.seen().is_empty()).then_some(())
    })
    .await;
    probe.stop().await;
    stack.stop().await;
}

#[sqlx::test(migrations = false)]
async fn row05_a_crash_after_sell_is_checked_back_and_the_stock_returned(
    _: MySqlPoolOptions,
    db: MySqlConnectOptions,
) {
    let user = 3_000_005;
    let stack = spawn_stack(db).await;
    stack.goods(1, 100, 10).await;
    stack.add_to_cart(user, 1, 4).await;
    let armed_order_after_sell = arm("order.after_sell", &format!("return({user})")).await;
    let result = stack.create_order(user).await;
    drop(armed_order_after_sell);
    assert_eq!(result.expect_err("died").code(), Code::Unavailable);
    assert_eq!(stack.stock(1).await, 6, "Sell ran");

    eventually(PATIENCE, "the stock back", || async {
        (stack.stock(1).await == 10).then_some(())
    })
    .await;
    let details = stack.sell_details().await;
    assert_eq!(details.len(), 1);
    assert_eq!(details[0].1, "RETURNED");
    assert_eq!(
        stack.barrier(&details[0].0).await.as_deref(),
        Some("aborted")
    );
    assert_eq!(stack.order_count().await, 0);
    stack.audit(&[(1, 10)], &[]).await;
    stack.stop().await;
}

#[sqlx::test(migrations = false)]
async fn row06_a_failed_local_transaction_returns_the_stock(
    _: MySqlPoolOptions,
    db: MySqlConnectOptions,
) {
    let user = 1_000_001;
    let stack = spawn_stack(db).await;
    let probe = RebackProbe::start(&stack).await;
    stack.goods(1, 100, 10).await;
    stack.add_to_cart(user, 1, 4).await;
    let armed_order_fail_local_tx = arm("order.fail_local_tx", &format!("return({user})")).await;

    let status = stack
        .create_order(user)
        .await
        .expect_err("local transaction failed");
    drop(armed_order_fail_local_tx);

    assert_eq!(status.code(), Code::Unavailable);
    let details = stack.sell_details().await;
    assert_eq!(details.len(), 1, "Sell ran once");
    let order_sn = details[0].0.clone();
    assert_eq!(
        stack.order_metrics.answers(ReturnStock),
        1,
        "the listener committed the reback"
    );
    assert_eq!(stack.order_metrics.answers(KeepStock), 0);
    eventually(PATIENCE, "the committed reback", || async {
        probe.seen().contains(&order_sn).then_some(())
    })
    .await;
    assert_eq!(stack.order_count().await, 0);
    assert_eq!(stack.cart_len(user).await, 1, "the cart is intact");
    // No barrier row, or 'aborted' if a slow run let a check-back in first: never committed.
    assert_ne!(stack.barrier(&order_sn).await.as_deref(), Some("committed"));
    eventually(PATIENCE, "the stock back", || async {
        (stack.stock(1).await == 10).then_some(())
    })
    .await;
    assert_eq!(
        stack.sell_status(&order_sn).await.as_deref(),
        Some("RETURNED")
    );
    probe.stop().await;
    stack.stop().await;
}

#[sqlx::test(migrations = false)]
async fn row07_a_lost_end_transaction_after_commit_keeps_the_order_and_the_deduction(
    _: MySqlPoolOptions,
    db: MySqlConnectOptions,
) {
    let user = 3_000_007;
    let stack = spawn_stack(db).await;
    let probe = RebackProbe::start(&stack).await;
    stack.goods(1, 100, 10).await;
    stack.add_to_cart(user, 1, 3).await;
    // The local transaction commits, then the listener answers Unknown, as if the
    // process died before END_TRANSACTION: only the check-back can decide.
    let armed_order_after_local_commit =
        arm("order.after_local_commit", &format!("return({user})")).await;
    let order = stack.create_order(user).await;
    drop(armed_order_after_local_commit);
    let order = order.expect("committed");
    assert_eq!(stack.order_metrics.answers(Unknown), 1);

    // The broker checks back after about a second; the barrier says committed.
    eventually(PATIENCE, "the check-back keeping the stock", || async {
        (stack.order_metrics.check_back_answers(KeepStock) > 0).then_some(())
    })
    .await;
    assert_eq!(stack.order_metrics.check_back_answers(ReturnStock), 0);
    tokio::time::sleep(ABSENCE_WINDOW).await;
    assert!(
        probe.seen().is_empty(),
        "stock of a committed order was returned"
    );
    assert_eq!(stack.stock(1).await, 7);
    assert_eq!(
        stack.sell_status(&order.order_sn).await.as_deref(),
        Some("DEDUCTED")
    );
    assert_eq!(
        stack.order_status(&order.order_sn).await.as_deref(),
        Some("WAIT_BUYER_PAY")
    );
    stack
        .audit(&[(1, 10)], std::slice::from_ref(&order.order_sn))
        .await;
    probe.stop().await;
    stack.stop().await;
}

#[sqlx::test(migrations = false)]
async fn row08_a_check_back_during_a_slow_local_transaction_waits_for_it(
    _: MySqlPoolOptions,
    db: MySqlConnectOptions,
) {
    let user = 1_000_002;
    let stack = spawn_stack(db).await;
    let probe = RebackProbe::start(&stack).await;
    stack.goods(1, 100, 10).await;
    stack.add_to_cart(user, 1, 3).await;
    // Longer than the test broker's transactionTimeout plus a check interval.
    let armed_order_pause_before_commit =
        arm("order.pause_before_commit", &format!("return({user}:4000)")).await;

    let order = stack.create_order(user).await;
    drop(armed_order_pause_before_commit);

    let order = order.expect("the order commits");
    assert_eq!(
        stack.barrier(&order.order_sn).await.as_deref(),
        Some("committed")
    );
    tokio::time::sleep(ABSENCE_WINDOW).await;
    assert!(
        probe.seen().is_empty(),
        "the check-back returned stock of a committed order"
    );
    assert_eq!(stack.stock(1).await, 7);
    assert_eq!(
        stack.sell_status(&order.order_sn).await.as_deref(),
        Some("DEDUCTED")
    );
    probe.stop().await;
    stack.stop().await;
}

#[sqlx::test(migrations = false)]
async fn row08_a_check_back_before_the_local_transaction_makes_it_fail(
    _: MySqlPoolOptions,
    db: MySqlConnectOptions,
) {
    let user = 1_000_003;
    let stack = spawn_stack(db).await;
    let probe = RebackProbe::start(&stack).await;
    stack.goods(1, 100, 10).await;
    stack.add_to_cart(user, 1, 2).await;
    // Paused before the barrier insert would be ideal; pausing the Sell step's aftermath
    // is the same race seen from the check-back: claim "aborted" by hand, as a check-back
    // arriving first would.
    let status = {
        let stack_ref = &stack;
        let claim = async {
            let sn = eventually(PATIENCE, "the Sell", || async {
                stack_ref
                    .sell_details()
                    .await
                    .first()
                    .map(|(sn, _)| sn.clone())
            })
            .await;
            order_srv::create_order::check_back::answer(&stack_ref.order_pool, &sn).await;
            sn
        };
        let armed_order_pause_before_barrier = arm(
            "order.pause_before_barrier",
            &format!("return({user}:3000)"),
        )
        .await;
        let (result, sn) = tokio::join!(stack.create_order(user), claim);
        drop(armed_order_pause_before_barrier);
        (result, sn)
    };
    let (result, order_sn) = status;
    assert_eq!(
        result.expect_err("the barrier was taken").code(),
        Code::Unavailable
    );
    assert_eq!(stack.barrier(&order_sn).await.as_deref(), Some("aborted"));
    assert_eq!(stack.order_count().await, 0);
    eventually(PATIENCE, "the reback", || async {
        probe.seen().contains(&order_sn).then_some(())
    })
    .await;
    probe.stop().await;
    stack.stop().await;
}

#[sqlx::test(migrations = false)]
async fn row09_a_reback_delivered_twice_or_concurrently_returns_once(
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
    let mut second = mq::consumer::start(
        &stack.mq,
        &unique("inventory_reback_second"),
        &stack.config.reback_topic,
        4,
        None,
        std::sync::Arc::new(inventory_srv::consumer::RebackHandler {
            pool: stack.inventory_pool.clone(),
            counters: second_counters.clone(),
        }),
        tokio::runtime::Handle::current(),
    )
    .await
    .expect("second consumer");
    for _ in 0..3 {
        stack.send_reback(&order.order_sn).await;
    }

    let handled = |c: &RebackCounters| c.returned.get() + c.already_returned.get();
    eventually(PATIENCE, "six deliveries", || async {
        (handled(&stack.reback_counters) + handled(&second_counters) >= 6).then_some(())
    })
    .await;
    let returned = stack.reback_counters.returned.get() + second_counters.returned.get();
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
async fn row10_a_reback_before_its_sell_tombstones_and_refuses_the_late_sell(
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
    assert_eq!(stack.reback_counters.tombstoned.get(), 1);
    stack.stop().await;
}

#[sqlx::test(migrations = false)]
async fn row11_an_unpaid_order_is_closed_and_its_stock_returned_once(
    _: MySqlPoolOptions,
    db: MySqlConnectOptions,
) {
    let user = 2_000_001;
    let mut config = order_config();
    config.pay_timeout = Duration::from_secs(2);
    let stack = spawn_stack_with(db, config).await;
    stack.goods(1, 100, 10).await;
    stack.add_to_cart(user, 1, 4).await;
    let armed_order_fail_reback_send =
        arm("order.fail_reback_send", &format!("return({user})")).await;
    let order = stack.create_order(user).await.expect("order");
    assert_eq!(stack.stock(1).await, 6);

    eventually(PATIENCE, "the failed reback send", || async {
        (stack.timeout_counters.retried.get() >= 1).then_some(())
    })
    .await;
    drop(armed_order_fail_reback_send);
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
    assert_eq!(stack.timeout_counters.closed.get(), 1);
    stack
        .audit(&[(1, 10)], std::slice::from_ref(&order.order_sn))
        .await;
    stack.stop().await;
}

/// The pay-timeout is sent with the half message, so it can come before the order is
/// written (a pay timeout shorter than a slow call). Finding no order, it claims the
/// barrier as a check-back does, so the order is never written and its stock comes back.
/// Before, it was acknowledged, the order was written after it and never closed.
#[sqlx::test(migrations = false)]
async fn row11_a_pay_timeout_that_comes_before_its_order_is_written_keeps_it_from_being_written(
    _: MySqlPoolOptions,
    db: MySqlConnectOptions,
) {
    let user = 2_000_003;
    let stack = spawn_stack(db).await;
    let probe = RebackProbe::start(&stack).await;
    stack.goods(1, 100, 10).await;
    stack.add_to_cart(user, 1, 3).await;
    // The writes wait long enough for the pay timeout to come first on a slow machine.
    let armed_order_pause_before_barrier = arm(
        "order.pause_before_barrier",
        &format!("return({user}:3000)"),
    )
    .await;
    let early_pay_timeout = async {
        let order_sn = eventually(PATIENCE, "the Sell", || async {
            stack.sell_details().await.first().map(|(sn, _)| sn.clone())
        })
        .await;
        // What the pay-timeout consumer does with a delivery of this order's pay timeout:
        // no order to close.
        let closed = order_srv::timeout::close_unpaid_order(
            &stack.closer,
            &order_sn,
            order_srv::db::CloseCause::PayTimeout,
        )
        .await
        .expect("the pay timeout handled");
        assert!(!closed);
        // It claimed the barrier itself: the broker's check-back, which would claim it
        // too, comes a second or more after the half message, this within milliseconds.
        assert_eq!(stack.barrier(&order_sn).await.as_deref(), Some("aborted"));
        order_sn
    };
    let (result, order_sn) = tokio::join!(stack.create_order(user), early_pay_timeout);
    drop(armed_order_pause_before_barrier);

    assert_eq!(
        result.expect_err("the pay timeout took the barrier").code(),
        Code::Unavailable
    );
    assert_eq!(stack.barrier(&order_sn).await.as_deref(), Some("aborted"));
    assert_eq!(stack.order_count().await, 0);
    assert_eq!(stack.timeout_counters.left_alone.get(), 1);
    eventually(PATIENCE, "the reback", || async {
        probe.seen().contains(&order_sn).then_some(())
    })
    .await;
    eventually(PATIENCE, "the stock back", || async {
        (stack.stock(1).await == 10).then_some(())
    })
    .await;
    probe.stop().await;
    stack.stop().await;
}

#[sqlx::test(migrations = false)]
async fn row12_payment_and_timeout_racing_have_exactly_one_winner(
    _: MySqlPoolOptions,
    db: MySqlConnectOptions,
) {
    const ORDERS: i64 = 24;
    let mut config = order_config();
    config.pay_timeout = Duration::from_secs(2);
    let stack = spawn_stack_with(db, config).await;
    let orders = race_orders(&stack, ORDERS).await;

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
    closed_orders_come_back_then_audit(&stack, &orders, paid).await;
    stack.stop().await;
}

#[sqlx::test(migrations = false)]
async fn row13_a_reback_during_an_inventory_db_outage_is_retried_until_recovery(
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
        (stack.reback_counters.retried.get() >= 1).then_some(())
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
async fn row14_malformed_messages_are_recorded_and_the_services_keep_serving(
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
    assert_eq!(stack.reback_counters.dead.get(), 2);
    assert_eq!(stack.timeout_counters.dead.get(), 1);

    stack.goods(1, 100, 10).await;
    stack.add_to_cart(41, 1, 1).await;
    stack.create_order(41).await.expect("still serving");
    stack.stop().await;
}

#[sqlx::test(migrations = false)]
async fn row13_a_reback_that_fails_inside_the_consumer_is_redelivered_and_applied_once(
    _: MySqlPoolOptions,
    db: MySqlConnectOptions,
) {
    let stack = spawn_stack(db).await;
    stack.goods(1, 100, 10).await;
    stack.add_to_cart(3_000_013, 1, 2).await;
    let order = stack.create_order(3_000_013).await.expect("order");
    let armed_inventory_before_reback = arm(
        "inventory.before_reback",
        &format!("return({})", order.order_sn),
    )
    .await;
    stack.send_reback(&order.order_sn).await;
    eventually(PATIENCE, "a failed delivery", || async {
        (stack.reback_counters.retried.get() >= 1).then_some(())
    })
    .await;
    drop(armed_inventory_before_reback);
    eventually(PATIENCE, "the redelivered reback applied", || async {
        (stack.reback_counters.returned.get() == 1).then_some(())
    })
    .await;
    assert_eq!(stack.stock(1).await, 10);
    stack.stop().await;
}

/// DESIGN.md §9, "a pay-timeout message is lost": the overdue sweep closes the order once
/// it is past its pay timeout plus the grace, through the pay timeout's own close, and
/// the stock comes back. The close is counted apart and marked as the sweep's, so the
/// audit shows it. Before the sweep existed the order stayed unpaid, holding its stock.
#[sqlx::test(migrations = false)]
async fn a_lost_pay_timeout_message_is_made_up_for_by_the_overdue_sweep(
    _: MySqlPoolOptions,
    db: MySqlConnectOptions,
) {
    let user = 2_000_011;
    let mut config = order_config();
    config.pay_timeout = Duration::from_secs(2);
    config.overdue_sweep_grace = Duration::from_secs(1);
    config.overdue_sweep_interval = Duration::from_millis(500);
    let stack = spawn_stack_with(db, config).await;
    stack.goods(1, 100, 10).await;
    stack.add_to_cart(user, 1, 4).await;
    let armed_order_drop_pay_timeout =
        arm("order.drop_pay_timeout", &format!("return({user})")).await;
    let order = stack.create_order(user).await.expect("order");
    drop(armed_order_drop_pay_timeout);
    assert_eq!(stack.stock(1).await, 6);

    eventually(PATIENCE, "the sweep's close and the stock back", || async {
        (stack.order_status(&order.order_sn).await.as_deref() == Some("TRADE_CLOSED")
            && stack.stock(1).await == 10)
            .then_some(())
    })
    .await;
    let (closed_by, open_for): (Option<String>, i64) = sqlx::query_as(
        "SELECT closed_by, TIMESTAMPDIFF(MICROSECOND, created_at, closed_at) \
         FROM order_info WHERE order_sn = ?",
    )
    .bind(&order.order_sn)
    .fetch_one(&stack.order_pool)
    .await
    .expect("order row");
    assert_eq!(closed_by.as_deref(), Some("sweep"));
    assert!(
        open_for >= 3_000_000,
        "closed {open_for} µs after it was placed: before its pay timeout and grace"
    );
    assert_eq!(stack.timeout_counters.swept.get(), 1);
    assert_eq!(
        stack.timeout_counters.closed.get(),
        0,
        "no pay timeout came"
    );
    let closes = testkit::audit::close_report(&stack.order_pool, Duration::from_secs(2))
        .await
        .expect("close report");
    assert_eq!((closes.by_sweep, closes.by_pay_timeout), (1, 0));
    stack
        .audit(&[(1, 10)], std::slice::from_ref(&order.order_sn))
        .await;
    stack.stop().await;
}
