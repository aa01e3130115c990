//! What a gateway relies on: idempotent CreateOrder retries with a request_id (AIP-155)
//! and CancelOrder (DESIGN.md §11).

use std::time::Duration;

use futures::future::join_all;
use proto::order as pb;
use sqlx::mysql::{MySqlConnectOptions, MySqlPoolOptions};
use testkit::{PATIENCE, eventually};
use tonic::Code;

use crate::helpers::{
    Stack, arm, closed_orders_come_back_then_audit, create_order_request, order_config,
    race_orders, spawn_stack, spawn_stack_with,
};

async fn create_with(
    stack: &Stack,
    user_id: i64,
    request_id: &str,
) -> Result<pb::OrderInfo, tonic::Status> {
    stack
        .order
        .clone()
        .create_order(pb::CreateOrderRequest {
            request_id: request_id.to_owned(),
            ..create_order_request(user_id)
        })
        .await
        .map(|r| r.into_inner())
}

async fn cancel(
    stack: &Stack,
    order_sn: &str,
    user_id: i64,
) -> Result<pb::OrderInfo, tonic::Status> {
    stack
        .order
        .clone()
        .cancel_order(pb::CancelOrderRequest {
            order_sn: order_sn.to_owned(),
            user_id,
        })
        .await
        .map(|r| r.into_inner())
}

#[sqlx::test(migrations = false)]
async fn a_retry_after_a_lost_reply_returns_the_same_order(
    _: MySqlPoolOptions,
    db: MySqlConnectOptions,
) {
    let stack = spawn_stack(db).await;
    stack.goods(1, 100, 10).await;
    stack.add_to_cart(1, 1, 2).await;

    let first = create_with(&stack, 1, "req-1").await.expect("placed");
    // The reply was lost; the gateway retries. The cart is empty by now.
    let retry = create_with(&stack, 1, "req-1")
        .await
        .expect("the same order");

    assert_eq!(retry, first);
    assert_eq!(stack.order_count().await, 1);
    assert_eq!(stack.sell_details().await.len(), 1, "one Sell");
    assert_eq!(stack.stock(1).await, 8);
    // A new key is a new request: the empty cart refuses it.
    let other = create_with(&stack, 1, "req-2")
        .await
        .expect_err("nothing in the cart");
    assert_eq!(other.code(), Code::FailedPrecondition, "{other:?}");
    stack.audit(&[(1, 10)], &[first.order_sn]).await;
    stack.stop().await;
}

#[sqlx::test(migrations = false)]
async fn thirty_two_concurrent_create_orders_with_one_request_id_give_one_order(
    _: MySqlPoolOptions,
    db: MySqlConnectOptions,
) {
    let stack = spawn_stack(db).await;
    stack.goods(1, 100, 100).await;
    stack.add_to_cart(7, 1, 3).await;
    let shared = &stack;

    let results = join_all((0..32).map(|_| create_with(shared, 7, "double-click"))).await;

    let placed: Vec<&pb::OrderInfo> = results.iter().filter_map(|r| r.as_ref().ok()).collect();
    assert!(!placed.is_empty(), "{results:?}");
    assert!(
        placed.iter().all(|o| o.order_sn == placed[0].order_sn),
        "every caller that got an order got the same one: {placed:?}"
    );
    for failure in results.iter().filter_map(|r| r.as_ref().err()) {
        assert_eq!(
            failure.code(),
            Code::Aborted,
            "in progress, retry: {failure:?}"
        );
    }
    assert_eq!(stack.order_count().await, 1);
    assert_eq!(stack.sell_details().await.len(), 1, "one Sell");
    // Every caller that was told "in progress" gets the order on its retry.
    let retry = create_with(&stack, 7, "double-click")
        .await
        .expect("the order");
    assert_eq!(retry.order_sn, placed[0].order_sn);
    assert_eq!(stack.stock(1).await, 97);
    stack.audit(&[(1, 100)], &[retry.order_sn]).await;
    stack.stop().await;
}

#[sqlx::test(migrations = false)]
async fn a_retry_after_an_attempt_that_placed_no_order_places_it(
    _: MySqlPoolOptions,
    db: MySqlConnectOptions,
) {
    let stack = spawn_stack(db).await;
    stack.goods(1, 100, 1).await;
    stack.add_to_cart(3, 1, 2).await;

    let refused = create_with(&stack, 3, "req-9")
        .await
        .expect_err("not enough stock");
    assert_eq!(refused.code(), Code::FailedPrecondition, "{refused:?}");
    stack
        .inventory
        .clone()
        .set_inv(proto::inventory::SetInvRequest {
            goods_id: 1,
            stocks: 5,
        })
        .await
        .expect("restock");
    let placed = create_with(&stack, 3, "req-9")
        .await
        .expect("now it is placed");

    assert_eq!(stack.order_count().await, 1);
    assert_eq!(stack.stock(1).await, 3);
    stack.audit(&[(1, 5)], &[placed.order_sn]).await;
    stack.stop().await;
}

#[sqlx::test(migrations = false)]
async fn a_malformed_request_id_is_invalid_argument(_: MySqlPoolOptions, db: MySqlConnectOptions) {
    let stack = spawn_stack(db).await;
    stack.goods(1, 100, 10).await;
    stack.add_to_cart(1, 1, 1).await;
    for request_id in ["has space".to_owned(), "x".repeat(65), "ünïcode".to_owned()] {
        let refused = create_with(&stack, 1, &request_id)
            .await
            .expect_err("bad key");
        assert_eq!(
            refused.code(),
            Code::InvalidArgument,
            "{request_id:?}: {refused:?}"
        );
    }
    assert_eq!(stack.order_count().await, 0);
    assert_eq!(stack.cart_len(1).await, 1);
    stack.stop().await;
}

#[sqlx::test(migrations = false)]
async fn cancel_order_closes_an_unpaid_order_and_returns_its_stock_once(
    _: MySqlPoolOptions,
    db: MySqlConnectOptions,
) {
    let stack = spawn_stack(db).await;
    stack.goods(1, 100, 10).await;
    stack.add_to_cart(5, 1, 4).await;
    let order = stack.create_order(5).await.expect("order");

    let stranger = cancel(&stack, &order.order_sn, 6)
        .await
        .expect_err("not theirs");
    assert_eq!(stranger.code(), Code::NotFound, "{stranger:?}");
    let closed = cancel(&stack, &order.order_sn, 5).await.expect("cancelled");
    assert_eq!(closed.status, pb::OrderStatus::TradeClosed as i32);
    // A repeated cancel (a gateway retry) succeeds and returns nothing twice.
    cancel(&stack, &order.order_sn, 5)
        .await
        .expect("cancelled again");

    eventually(PATIENCE, "the stock back", || async {
        (stack.stock(1).await == 10).then_some(())
    })
    .await;
    let paid = stack
        .pay(&order.order_sn)
        .await
        .expect_err("a closed order cannot be paid");
    assert_eq!(paid.code(), Code::FailedPrecondition);
    eventually(PATIENCE, "both rebacks handled", || async {
        (stack.reback_counters.returned.get() + stack.reback_counters.already_returned.get() >= 2)
            .then_some(())
    })
    .await;
    assert_eq!(stack.reback_counters.returned.get(), 1, "returned once");
    assert_eq!(stack.stock(1).await, 10);
    stack.audit(&[(1, 10)], &[]).await;
    stack.stop().await;
}

#[sqlx::test(migrations = false)]
async fn cancelling_a_paid_order_is_refused_and_changes_nothing(
    _: MySqlPoolOptions,
    db: MySqlConnectOptions,
) {
    let stack = spawn_stack(db).await;
    stack.goods(1, 100, 10).await;
    stack.add_to_cart(5, 1, 1).await;
    let order = stack.create_order(5).await.expect("order");
    stack.pay(&order.order_sn).await.expect("paid");

    let refused = cancel(&stack, &order.order_sn, 5).await.expect_err("paid");

    assert_eq!(refused.code(), Code::FailedPrecondition, "{refused:?}");
    assert_eq!(
        stack.order_status(&order.order_sn).await.as_deref(),
        Some("TRADE_SUCCESS")
    );
    assert_eq!(stack.stock(1).await, 9);
    let bad = cancel(&stack, "not a valid sn!", 5)
        .await
        .expect_err("malformed");
    assert_eq!(bad.code(), Code::InvalidArgument);
    stack.stop().await;
}

/// Cancel, payment and the pay timeout on the same orders, at staggered moments around
/// the timeout: each order has exactly one winner, and the audit holds.
#[sqlx::test(migrations = false)]
async fn cancel_payment_and_timeout_racing_have_exactly_one_winner(
    _: MySqlPoolOptions,
    db: MySqlConnectOptions,
) {
    const ORDERS: i64 = 16;
    let mut config = order_config();
    config.pay_timeout = Duration::from_secs(2);
    let stack = spawn_stack_with(db, config).await;
    let orders = race_orders(&stack, ORDERS).await;

    let shared = &stack;
    let outcomes = join_all(orders.iter().enumerate().map(|(i, order)| async move {
        let at = |ms: u64| tokio::time::sleep(Duration::from_millis(ms));
        // Up to 6 s after the orders: the later ones are well past their 2 s timeout even
        // when a loaded machine (the whole test suite at once) delays the consumer.
        let step = 350 * i as u64;
        let pay = async {
            at(1_000 + step).await;
            shared.pay(&order.order_sn).await.is_ok()
        };
        let cancelled = async {
            at(1_100 + step).await;
            cancel(shared, &order.order_sn, order.user_id).await.is_ok()
        };
        let (paid, cancelled) = tokio::join!(pay, cancelled);
        (order.order_sn.clone(), paid, cancelled)
    }))
    .await;

    let mut paid = 0;
    for (order_sn, was_paid, was_cancelled) in &outcomes {
        assert!(
            !(*was_paid && *was_cancelled),
            "{order_sn}: paid and cancelled"
        );
        let status = stack.order_status(order_sn).await;
        if *was_paid {
            paid += 1;
            assert_eq!(status.as_deref(), Some("TRADE_SUCCESS"), "{order_sn}");
        } else {
            assert_eq!(status.as_deref(), Some("TRADE_CLOSED"), "{order_sn}");
        }
    }
    let closed = ORDERS as usize - paid;
    assert!(
        paid > 0 && closed > 0,
        "no race: {paid} paid, {closed} closed"
    );
    closed_orders_come_back_then_audit(&stack, &orders, paid).await;
    stack.stop().await;
}

/// A gateway can tell from a status which field was wrong and why a request was refused:
/// INVALID_ARGUMENT carries a `google.rpc.BadRequest` field violation, refusals carry a
/// `google.rpc.ErrorInfo` reason (inventory's passed through with its metadata).
#[sqlx::test(migrations = false)]
async fn refusals_carry_a_field_violation_or_an_error_info_reason(
    _: MySqlPoolOptions,
    db: MySqlConnectOptions,
) {
    use tonic_types::StatusExt;
    let stack = spawn_stack(db).await;
    stack.goods(1, 100, 1).await;
    let mut order = stack.order.clone();

    let bad = order
        .create_cart_item(pb::CreateCartItemRequest {
            user_id: 1,
            goods_id: 1,
            nums: 0,
            checked: None,
        })
        .await
        .expect_err("nums 0");
    let details = bad.get_error_details();
    let violations = &details.bad_request().expect("BadRequest").field_violations;
    assert_eq!(violations.len(), 1, "{violations:?}");
    assert_eq!(violations[0].field, "nums");

    let empty = stack.create_order(1).await.expect_err("empty cart");
    let info = empty
        .get_error_details()
        .error_info()
        .cloned()
        .expect("ErrorInfo");
    assert_eq!(
        (info.reason.as_str(), info.domain.as_str()),
        ("CART_EMPTY", "order.v1")
    );

    stack.add_to_cart(1, 1, 2).await;
    let short = stack.create_order(1).await.expect_err("one in stock");
    assert_eq!(short.code(), Code::FailedPrecondition);
    let info = short
        .get_error_details()
        .error_info()
        .cloned()
        .expect("ErrorInfo");
    assert_eq!(info.reason, "INSUFFICIENT_STOCK");
    assert_eq!(info.domain, "inventory.v1");
    assert_eq!(info.metadata.get("goods_id").map(String::as_str), Some("1"));
    assert_eq!(
        info.metadata.get("available").map(String::as_str),
        Some("1")
    );
    stack.stop().await;
}

/// A duplicate while the first attempt is paused before its COMMIT is told "in progress";
/// once the first commits, the retry gets its order.
#[sqlx::test(migrations = false)]
async fn a_duplicate_while_the_first_attempt_is_paused_before_commit_is_told_to_retry(
    _: MySqlPoolOptions,
    db: MySqlConnectOptions,
) {
    let user = 4_242;
    let stack = spawn_stack(db).await;
    stack.goods(1, 100, 10).await;
    stack.add_to_cart(user, 1, 1).await;
    let armed = arm("order.pause_before_commit", &format!("return({user}:3000)")).await;

    let first = create_with(&stack, user, "slow-1");
    let duplicate = async {
        eventually(PATIENCE, "the first attempt's Sell", || async {
            (!stack.sell_details().await.is_empty()).then_some(())
        })
        .await;
        create_with(&stack, user, "slow-1").await
    };
    let (first, duplicate) = tokio::join!(first, duplicate);
    drop(armed);

    let first = first.expect("the first attempt commits");
    let duplicate = duplicate.expect_err("in progress");
    assert_eq!(duplicate.code(), Code::Aborted, "{duplicate:?}");
    let retry = create_with(&stack, user, "slow-1")
        .await
        .expect("the order");
    assert_eq!(retry.order_sn, first.order_sn);
    assert_eq!(stack.order_count().await, 1);
    stack.audit(&[(1, 10)], &[first.order_sn]).await;
    stack.stop().await;
}

/// The first attempt fails inside its local transaction (as a crash before COMMIT would
/// leave it: no order, its stock returned); the retry with the same request_id places the
/// order under a new order_sn and never revives the failed one.
#[sqlx::test(migrations = false)]
async fn a_retry_after_a_failure_before_commit_places_a_new_order(
    _: MySqlPoolOptions,
    db: MySqlConnectOptions,
) {
    let user = 4_343;
    let stack = spawn_stack(db).await;
    stack.goods(1, 100, 10).await;
    stack.add_to_cart(user, 1, 2).await;
    let armed = arm("order.fail_local_tx", &format!("return({user})")).await;
    let failed = create_with(&stack, user, "crash-1")
        .await
        .expect_err("failed before COMMIT");
    drop(armed);
    assert_eq!(failed.code(), Code::Unavailable, "{failed:?}");
    let failed_sn = eventually(PATIENCE, "the first attempt's stock back", || async {
        let details = stack.sell_details().await;
        details
            .iter()
            .find(|(_, status)| status == "RETURNED")
            .map(|(sn, _)| sn.clone())
    })
    .await;

    let placed = create_with(&stack, user, "crash-1")
        .await
        .expect("placed now");

    assert_ne!(placed.order_sn, failed_sn, "a new order_sn");
    assert_eq!(
        stack.sell_status(&failed_sn).await.as_deref(),
        Some("RETURNED")
    );
    assert_eq!(stack.order_count().await, 1);
    assert_eq!(stack.stock(1).await, 8);
    stack.audit(&[(1, 10)], &[placed.order_sn]).await;
    stack.stop().await;
}
