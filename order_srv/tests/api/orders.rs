//! Reading orders and moving them through the payment states.

use proto::order as pb;
use sqlx::mysql::{MySqlConnectOptions, MySqlPoolOptions};
use tonic::Code;

use crate::helpers::spawn_stack;

fn change(order_sn: &str, status: pb::OrderStatus) -> pb::UpdateOrderStatusRequest {
    pb::UpdateOrderStatusRequest {
        order_sn: order_sn.to_owned(),
        status: status as i32,
        pay_type: "wechat".into(),
        trade_no: "T-1".into(),
    }
}

#[sqlx::test(migrations = false)]
async fn orders_are_listed_per_user_with_their_goods_and_move_only_forward(
    _: MySqlPoolOptions,
    db: MySqlConnectOptions,
) {
    let stack = spawn_stack(db).await;
    stack.goods(1, 500, 10).await;
    stack.add_to_cart(51, 1, 2).await;
    let first = stack.create_order(51).await.expect("first");
    stack.add_to_cart(51, 1, 1).await;
    let second = stack.create_order(51).await.expect("second");
    let mut order = stack.order.clone();

    let list = order
        .order_list(pb::OrderListRequest {
            user_id: 51,
            page: 1,
            page_size: 1,
            ..Default::default()
        })
        .await
        .expect("list")
        .into_inner();
    assert_eq!(list.total, 2);
    assert_eq!(list.orders.len(), 1);
    let other_user = order
        .order_list(pb::OrderListRequest {
            user_id: 52,
            page: 1,
            page_size: 10,
            ..Default::default()
        })
        .await
        .expect("list")
        .into_inner();
    assert_eq!(other_user.total, 0);

    let detail = order
        .order_detail(pb::OrderDetailRequest {
            order_sn: first.order_sn.clone(),
            user_id: 51,
        })
        .await
        .expect("detail")
        .into_inner();
    assert_eq!(detail.goods.len(), 1);
    assert_eq!(
        (
            detail.goods[0].goods_id,
            detail.goods[0].nums,
            detail.goods[0].price_cents
        ),
        (1, 2, 500)
    );
    let foreign = order
        .order_detail(pb::OrderDetailRequest {
            order_sn: first.order_sn.clone(),
            user_id: 52,
        })
        .await
        .expect_err("another user's order");
    assert_eq!(foreign.code(), Code::NotFound);

    // Forward: paid, paid again (a retried callback), finished.
    let paid = order
        .update_order_status(change(&first.order_sn, pb::OrderStatus::TradeSuccess))
        .await
        .expect("pay");
    assert_eq!(paid.into_inner().trade_no, "T-1");
    order
        .update_order_status(change(&first.order_sn, pb::OrderStatus::TradeSuccess))
        .await
        .expect("idempotent");
    order
        .update_order_status(change(&first.order_sn, pb::OrderStatus::TradeFinished))
        .await
        .expect("finish");
    // Backward or sideways: refused, nothing changes.
    let back = order
        .update_order_status(change(&first.order_sn, pb::OrderStatus::WaitBuyerPay))
        .await
        .expect_err("no way back");
    assert!(
        matches!(
            back.code(),
            Code::FailedPrecondition | Code::InvalidArgument
        ),
        "{back:?}"
    );
    assert_eq!(
        stack.order_status(&first.order_sn).await.as_deref(),
        Some("TRADE_FINISHED")
    );

    // A closed order is never reopened by a payment.
    sqlx::query("UPDATE order_info SET status = 'TRADE_CLOSED' WHERE order_sn = ?")
        .bind(&second.order_sn)
        .execute(&stack.order_pool)
        .await
        .expect("close");
    let refused = order
        .update_order_status(change(&second.order_sn, pb::OrderStatus::TradeSuccess))
        .await
        .expect_err("closed");
    assert_eq!(refused.code(), Code::FailedPrecondition);
    assert_eq!(
        stack.order_status(&second.order_sn).await.as_deref(),
        Some("TRADE_CLOSED")
    );

    let unknown = order
        .update_order_status(change("NO-SUCH-ORDER", pb::OrderStatus::TradeSuccess))
        .await
        .expect_err("unknown");
    assert_eq!(unknown.code(), Code::NotFound);
    stack.stop().await;
}

/// Orders of `user_id` written straight into the order table (no stock involved: these
/// tests read lists only): `n` orders, `same_moment` of them created in one microsecond.
async fn past_orders(stack: &crate::helpers::Stack, user_id: i64, n: u32, same_moment: u32) {
    for i in 0..n {
        let second = if i < same_moment { 0 } else { i };
        sqlx::query(
            "INSERT INTO order_info (order_sn, user_id, status, total_cents, address, name, \
             mobile, created_at) VALUES (?, ?, 'TRADE_SUCCESS', 100, 'a', 'n', '1', \
             TIMESTAMPADD(SECOND, ?, '2026-01-01'))",
        )
        .bind(format!("PAST-{user_id}-{i}"))
        .bind(user_id)
        .bind(second)
        .execute(&stack.order_pool)
        .await
        .expect("a past order");
    }
}

#[sqlx::test(migrations = false)]
async fn page_tokens_walk_every_order_once_newest_first_even_within_one_microsecond(
    _: MySqlPoolOptions,
    db: MySqlConnectOptions,
) {
    let stack = spawn_stack(db).await;
    past_orders(&stack, 61, 25, 12).await;
    past_orders(&stack, 62, 3, 0).await;
    let mut order = stack.order.clone();
    let (mut seen, mut token, mut pages) = (Vec::new(), String::new(), 0);
    loop {
        let page = order
            .order_list(pb::OrderListRequest {
                user_id: 61,
                page_size: 10,
                page_token: token.clone(),
                ..Default::default()
            })
            .await
            .expect("a page")
            .into_inner();
        pages += 1;
        assert_eq!((page.total, page.total_is_lower_bound), (25, false));
        seen.extend(page.orders.iter().map(|o| (o.created_at.clone(), o.id)));
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
        assert!(pages < 10, "the pages never end");
    }
    assert_eq!(pages, 3);
    assert_eq!(seen.len(), 25, "every order once: {seen:?}");
    let mut sorted = seen.clone();
    sorted.sort_by(|a, b| b.cmp(a));
    sorted.dedup();
    assert_eq!(seen, sorted, "newest first, no order twice");
}

#[sqlx::test(migrations = false)]
async fn a_page_token_of_another_user_or_made_up_and_deep_page_numbers_are_refused(
    _: MySqlPoolOptions,
    db: MySqlConnectOptions,
) {
    let stack = spawn_stack(db).await;
    past_orders(&stack, 71, 3, 0).await;
    let mut order = stack.order.clone();
    let first = order
        .order_list(pb::OrderListRequest {
            user_id: 71,
            page_size: 1,
            ..Default::default()
        })
        .await
        .expect("a page")
        .into_inner();
    assert!(!first.next_page_token.is_empty());
    let refused = [
        // Another user's list.
        pb::OrderListRequest {
            user_id: 72,
            page_size: 1,
            page_token: first.next_page_token.clone(),
            ..Default::default()
        },
        // Made up, or cut short.
        pb::OrderListRequest {
            user_id: 71,
            page_token: "not a token".into(),
            ..Default::default()
        },
        pb::OrderListRequest {
            user_id: 71,
            page_token: first.next_page_token[..8].to_owned(),
            ..Default::default()
        },
        // Well formed, for this user, but a time no row can have (year -882).
        pb::OrderListRequest {
            user_id: 71,
            page_token: "v1:71:-90000000000000000:1"
                .bytes()
                .map(|b| format!("{b:02x}"))
                .collect(),
            ..Default::default()
        },
        // A page number with a token.
        pb::OrderListRequest {
            user_id: 71,
            page: 2,
            page_token: first.next_page_token.clone(),
            ..Default::default()
        },
        // Offset paging past the first 10,000 orders.
        pb::OrderListRequest {
            user_id: 71,
            page: 101,
            page_size: 100,
            ..Default::default()
        },
    ];
    for request in refused {
        let status = order
            .order_list(request.clone())
            .await
            .expect_err(&format!("{request:?} is refused"));
        assert_eq!(
            status.code(),
            Code::InvalidArgument,
            "{request:?}: {status:?}"
        );
    }
}
