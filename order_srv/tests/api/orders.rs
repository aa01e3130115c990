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
