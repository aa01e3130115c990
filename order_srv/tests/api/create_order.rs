//! CreateOrder end to end: the half message, Sell, the local transaction, check-back.

use std::time::Duration;

use futures::future::join_all;
use proto::order as pb;
use sqlx::mysql::{MySqlConnectOptions, MySqlPoolOptions};
use testkit::{PATIENCE, eventually};
use tonic::Code;

use crate::{
    helpers::{arm, order_config, spawn_stack, spawn_stack_with},
    reback_probe::RebackProbe,
};

/// How long "never delivered" is watched: several of the test broker's check intervals.
const ABSENCE_WINDOW: Duration = Duration::from_secs(5);

#[sqlx::test(migrations = false)]
async fn an_order_deducts_stock_empties_the_cart_and_its_reback_is_never_delivered(
    _: MySqlPoolOptions,
    db: MySqlConnectOptions,
) {
    let stack = spawn_stack(db).await;
    let probe = RebackProbe::start(&stack).await;
    stack.goods(1, 1250, 10).await;
    stack.goods(2, 399, 10).await;
    stack.add_to_cart(7, 1, 2).await;
    stack.add_to_cart(7, 2, 3).await;

    let order = stack.create_order(7).await.expect("order placed");

    assert_eq!(order.total_cents, 2 * 1250 + 3 * 399);
    assert_eq!(order.user_id, 7);
    // The reply is built without reading the order back: it must be what was stored.
    let stored = stack
        .order
        .clone()
        .order_detail(pb::OrderDetailRequest {
            order_sn: order.order_sn.clone(),
            user_id: 7,
        })
        .await
        .expect("detail")
        .into_inner();
    assert_eq!(stored.order.as_ref(), Some(&order));
    assert_eq!(stack.stock(1).await, 8);
    assert_eq!(stack.stock(2).await, 7);
    assert_eq!(stack.cart_len(7).await, 0);
    assert_eq!(
        stack.sell_status(&order.order_sn).await.as_deref(),
        Some("DEDUCTED")
    );
    assert_eq!(
        stack.barrier(&order.order_sn).await.as_deref(),
        Some("committed")
    );
    tokio::time::sleep(ABSENCE_WINDOW).await;
    assert!(
        probe.seen().is_empty(),
        "a committed order's reback was delivered"
    );
    probe.stop().await;
    stack.stop().await;
}

#[sqlx::test(migrations = false)]
async fn an_empty_cart_and_unknown_goods_are_refused_without_touching_inventory(
    _: MySqlPoolOptions,
    db: MySqlConnectOptions,
) {
    let stack = spawn_stack(db).await;
    let status = stack.create_order(9).await.expect_err("empty cart");
    assert_eq!(status.code(), Code::FailedPrecondition);

    // In the cart but without a price on the order side: unknown goods.
    stack.goods(3, 100, 5).await;
    stack.add_to_cart(9, 3, 1).await;
    sqlx::query("DELETE FROM goods WHERE id = 3")
        .execute(&stack.order_pool)
        .await
        .expect("delete goods");
    let status = stack.create_order(9).await.expect_err("unknown goods");
    assert_eq!(status.code(), Code::NotFound);
    assert_eq!(stack.stock(3).await, 5);
    assert!(stack.sell_details().await.is_empty());
    assert_eq!(stack.order_count().await, 0);
    stack.stop().await;
}

/// The pay-timeout message goes out with the half message, before the cart is claimed
/// (so that it is stored by the time Sell answers, without competing with Sell), so a
/// CreateOrder refused at its claim leaves one too: it finds no order and is
/// acknowledged untouched.
#[sqlx::test(migrations = false)]
async fn a_create_order_refused_at_its_claim_leaves_a_pay_timeout_that_finds_no_order(
    _: MySqlPoolOptions,
    db: MySqlConnectOptions,
) {
    let mut config = order_config();
    config.pay_timeout = Duration::from_secs(1);
    let stack = spawn_stack_with(db, config).await;
    let status = stack.create_order(9).await.expect_err("empty cart");
    assert_eq!(status.code(), Code::FailedPrecondition);

    eventually(
        PATIENCE,
        "the refused call's pay timeout acknowledged",
        || async { (stack.timeout_counters.left_alone.get() >= 1).then_some(()) },
    )
    .await;
    assert_eq!(stack.timeout_counters.closed.get(), 0);
    assert_eq!(stack.timeout_counters.rebacks_sent.get(), 0);
    assert_eq!(stack.timeout_counters.dead.get(), 0);
    assert_eq!(stack.order_count().await, 0);
    stack.stop().await;
}

#[sqlx::test(migrations = false)]
async fn a_second_instance_answers_check_backs_after_the_sender_is_gone(
    _: MySqlPoolOptions,
    db: MySqlConnectOptions,
) {
    let committed_user = 1_000_004;
    let aborted_user = 1_000_005;
    let mut config = order_config();
    config.mq_instance_name = Some("first".into());
    let mut first = spawn_stack_with(db.clone(), config.clone()).await;
    let probe = RebackProbe::start(&first).await;
    first.goods(1, 100, 10).await;
    first.add_to_cart(committed_user, 1, 1).await;
    first.add_to_cart(aborted_user, 1, 2).await;

    // The committed order loses its END_TRANSACTION; the other dies after Sell.
    let armed_order_after_local_commit = arm(
        "order.after_local_commit",
        &format!("return({committed_user})"),
    )
    .await;
    let committed = first
        .create_order(committed_user)
        .await
        .expect("committed order");
    drop(armed_order_after_local_commit);
    let armed_order_after_sell = arm("order.after_sell", &format!("return({aborted_user})")).await;
    first
        .create_order(aborted_user)
        .await
        .expect_err("died after Sell");
    drop(armed_order_after_sell);
    let aborted_sn = first
        .sell_details()
        .await
        .into_iter()
        .map(|(sn, _)| sn)
        .find(|sn| *sn != committed.order_sn)
        .expect("the second Sell");

    // A second member of the group, on the same database; then the sender goes away.
    let mut second_config = config.clone();
    second_config.mq_instance_name = Some("second".into());
    // Its own pool: stopping the first instance closes the first's.
    let order_pool = service_db::connect(db.clone(), 8)
        .await
        .expect("second pool");
    let second =
        order_srv::startup::Application::build_with_pool(&second_config, order_pool.clone())
            .await
            .expect("second instance");
    let (stop_second, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let second = tokio::spawn(second.run_until(async {
        let _ = stop_rx.await;
    }));
    first.stop_order_service().await;

    eventually(PATIENCE, "the aborted order's reback", || async {
        probe.seen().contains(&aborted_sn).then_some(())
    })
    .await;
    let outcome: Option<String> =
        sqlx::query_scalar("SELECT outcome FROM tx_barrier WHERE order_sn = ?")
            .bind(&aborted_sn)
            .fetch_optional(&order_pool)
            .await
            .expect("barrier");
    assert_eq!(outcome.as_deref(), Some("aborted"));
    tokio::time::sleep(ABSENCE_WINDOW).await;
    assert!(
        !probe.seen().contains(&committed.order_sn),
        "a committed order's stock was returned"
    );
    let _ = stop_second.send(());
    let _ = second.await;
    probe.stop().await;
    first.stop().await;
}

#[sqlx::test(migrations = false)]
async fn a_hundred_concurrent_orders_on_shared_goods_never_oversell(
    _: MySqlPoolOptions,
    db: MySqlConnectOptions,
) {
    let stack = spawn_stack(db).await;
    stack.goods(1, 100, 60).await;
    stack.goods(2, 250, 1_000).await;
    for user in 1..=100 {
        stack.add_to_cart(user, 1, 1).await;
        stack.add_to_cart(user, 2, 2).await;
    }

    let results = join_all((1..=100).map(|user| stack.create_order(user))).await;

    let ok: Vec<_> = results.iter().filter_map(|r| r.as_ref().ok()).collect();
    for failure in results.iter().filter_map(|r| r.as_ref().err()) {
        assert_eq!(
            failure.code(),
            Code::FailedPrecondition,
            "unexpected failure: {failure:?}"
        );
    }
    assert_eq!(ok.len(), 60, "exactly the stock of goods 1 was sold");
    for order in &ok {
        assert_eq!(order.total_cents, 100 + 2 * 250);
        assert_eq!(
            stack.sell_status(&order.order_sn).await.as_deref(),
            Some("DEDUCTED")
        );
    }
    assert_eq!(stack.stock(1).await, 0);
    assert_eq!(stack.stock(2).await, 1_000 - 2 * 60);
    assert_eq!(stack.order_count().await, 60);
    stack.stop().await;
}

/// A double-click or a gateway retry: the same cart submitted four times at once becomes
/// one order. The others fail clearly (ABORTED while the winner holds the cart, or
/// FAILED_PRECONDITION once it emptied it) and never reach Sell, so nothing is deducted
/// twice and no reback is needed.
#[sqlx::test(migrations = false)]
async fn one_cart_submitted_four_times_at_once_becomes_one_order(
    _: MySqlPoolOptions,
    db: MySqlConnectOptions,
) {
    const USERS: i64 = 20;
    const SUBMITS: usize = 4;
    let stack = spawn_stack(db).await;
    stack.goods(1, 100, 1_000).await;
    stack.goods(2, 250, 1_000).await;
    for user in 1..=USERS {
        stack.add_to_cart(user, 1, 1).await;
        stack.add_to_cart(user, 2, 2).await;
    }

    let shared = &stack;
    let results = join_all(
        (1..=USERS)
            .flat_map(|user| std::iter::repeat_n(user, SUBMITS))
            .map(|user| async move { (user, shared.create_order(user).await) }),
    )
    .await;

    let mut acknowledged = Vec::new();
    for user in 1..=USERS {
        let mine: Vec<_> = results.iter().filter(|(u, _)| *u == user).collect();
        let ok: Vec<_> = mine.iter().filter_map(|(_, r)| r.as_ref().ok()).collect();
        assert_eq!(ok.len(), 1, "user {user}: {mine:?}");
        acknowledged.push(ok[0].order_sn.clone());
        for (_, result) in &mine {
            if let Err(status) = result {
                assert!(
                    matches!(status.code(), Code::Aborted | Code::FailedPrecondition),
                    "user {user}: unexpected failure {status:?}"
                );
            }
        }
    }
    assert_eq!(stack.order_count().await, USERS);
    // No loser reached Sell: one detail per order, all deducted.
    let details = stack.sell_details().await;
    assert_eq!(details.len(), acknowledged.len(), "{details:?}");
    assert!(details.iter().all(|(_, status)| status == "DEDUCTED"));
    assert_eq!(stack.stock(1).await, 1_000 - USERS);
    assert_eq!(stack.stock(2).await, 1_000 - 2 * USERS);
    stack.audit(&[(1, 1_000), (2, 1_000)], &acknowledged).await;
    stack.stop().await;
}

/// The loser of a cart race that meets the winner's claim is told so, at once, with
/// ABORTED, and deducts nothing. The winner's claim is its transaction's row locks on the
/// cart lines; here the test holds them, as a CreateOrder between Sell and COMMIT would.
#[sqlx::test(migrations = false)]
async fn a_create_order_of_a_cart_another_order_holds_is_aborted_before_sell(
    _: MySqlPoolOptions,
    db: MySqlConnectOptions,
) {
    let stack = spawn_stack(db).await;
    stack.goods(1, 100, 10).await;
    let user = 4_711;
    stack.add_to_cart(user, 1, 2).await;
    let mut holder = stack.order_pool.begin().await.expect("begin");
    sqlx::query("SELECT id FROM shopping_cart WHERE user_id = ? FOR UPDATE")
        .bind(user)
        .fetch_all(&mut *holder)
        .await
        .expect("lock the cart");

    let loser = stack
        .create_order(user)
        .await
        .expect_err("the cart is held by another order");

    assert_eq!(loser.code(), Code::Aborted, "{loser:?}");
    assert!(loser.message().contains("concurrent"), "{loser:?}");
    assert!(
        stack.sell_details().await.is_empty(),
        "the loser reached Sell"
    );
    assert_eq!(stack.stock(1).await, 10);
    holder.rollback().await.expect("release");
    // Once the holder is gone, the cart orders normally.
    let order = stack
        .create_order(user)
        .await
        .expect("the cart is free again");
    assert_eq!(stack.stock(1).await, 8);
    stack.audit(&[(1, 10)], &[order.order_sn]).await;
    stack.stop().await;
}

/// DESIGN.md §13: CreateOrder has a server-side budget. A call that cannot finish within
/// it (here: COMMIT held up 3 s, the budget 1 s) is answered UNAVAILABLE, outcome unknown,
/// when the budget runs out, not when the call ends; the call goes on and commits, and a
/// retry with the same request_id finds that order. Before, the caller waited as long as
/// the slowest wait inside (a silent database: the whole cut).
#[sqlx::test(migrations = false)]
async fn a_create_order_past_its_budget_is_answered_unknown_and_a_retry_finds_the_order(
    _: MySqlPoolOptions,
    db: MySqlConnectOptions,
) {
    let user = 5_100_001;
    let mut config = order_config();
    config.create_order_budget = Duration::from_secs(1);
    let stack = spawn_stack_with(db, config).await;
    stack.goods(1, 100, 10).await;
    stack.add_to_cart(user, 1, 2).await;
    let request = pb::CreateOrderRequest {
        request_id: "budget-retry-1".into(),
        ..crate::helpers::create_order_request(user)
    };

    let armed_order_pause_before_commit =
        arm("order.pause_before_commit", &format!("return({user}:3000)")).await;
    let started = std::time::Instant::now();
    let status = stack
        .order
        .clone()
        .create_order(request.clone())
        .await
        .expect_err("the budget ran out");
    let took = started.elapsed();
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    assert!(
        status.message().contains("outcome is unknown"),
        "{status:?}"
    );
    assert!(
        took < Duration::from_millis(2_500),
        "answered after {took:?}, not at the 1 s budget"
    );
    // The call went on and committed after its pause.
    eventually(PATIENCE, "the order committed", || async {
        (stack.order_count().await == 1).then_some(())
    })
    .await;
    drop(armed_order_pause_before_commit);
    let order = stack
        .order
        .clone()
        .create_order(request)
        .await
        .expect("the retry finds the order")
        .into_inner();
    assert_eq!(order.user_id, user);
    assert_eq!(stack.stock(1).await, 8);
    stack.audit(&[(1, 10)], &[order.order_sn]).await;
    stack.stop().await;
}
