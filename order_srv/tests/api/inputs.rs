//! Bad input on every RPC: INVALID_ARGUMENT and nothing written.

use proto::order as pb;
use sqlx::mysql::{MySqlConnectOptions, MySqlPoolOptions};
use tonic::Code;

use crate::helpers::{create_order_request, spawn_stack};

fn invalid<T: std::fmt::Debug>(result: Result<tonic::Response<T>, tonic::Status>) {
    let status = result.expect_err("bad input must be refused");
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
}

#[sqlx::test(migrations = false)]
async fn bad_input_on_every_rpc_is_invalid_argument_and_writes_nothing(
    _: MySqlPoolOptions,
    db: MySqlConnectOptions,
) {
    let stack = spawn_stack(db).await;
    stack.goods(1, 100, 10).await;
    let mut order = stack.order.clone();

    invalid(order.cart_item_list(pb::UserRequest { user_id: 0 }).await);
    for (user_id, goods_id, nums) in [(0, 1, 1), (1, 0, 1), (1, 1, 0), (1, 1, -3), (-1, 1, 1)] {
        invalid(
            order
                .create_cart_item(pb::CreateCartItemRequest {
                    user_id,
                    goods_id,
                    nums,
                    checked: None,
                })
                .await,
        );
    }
    invalid(
        order
            .update_cart_item(pb::UpdateCartItemRequest {
                user_id: 1,
                goods_id: 1,
                nums: Some(0),
                checked: None,
            })
            .await,
    );
    invalid(
        order
            .delete_cart_item(pb::DeleteCartItemRequest {
                user_id: 0,
                goods_id: 1,
            })
            .await,
    );
    let mut bad_orders = vec![
        pb::CreateOrderRequest {
            user_id: 0,
            ..create_order_request(1)
        },
        pb::CreateOrderRequest {
            address: String::new(),
            ..create_order_request(1)
        },
        pb::CreateOrderRequest {
            name: "  ".into(),
            ..create_order_request(1)
        },
        pb::CreateOrderRequest {
            mobile: String::new(),
            ..create_order_request(1)
        },
        pb::CreateOrderRequest {
            address: "x".repeat(1_000),
            ..create_order_request(1)
        },
    ];
    for request in bad_orders.drain(..) {
        invalid(order.create_order(request).await);
    }
    invalid(
        order
            .order_list(pb::OrderListRequest {
                user_id: 0,
                page: 1,
                page_size: 10,
                ..Default::default()
            })
            .await,
    );
    invalid(
        order
            .order_list(pb::OrderListRequest {
                user_id: 1,
                page: 1,
                page_size: 10_000,
                ..Default::default()
            })
            .await,
    );
    invalid(
        order
            .order_detail(pb::OrderDetailRequest {
                order_sn: String::new(),
                user_id: 1,
            })
            .await,
    );
    for request in [
        pb::UpdateOrderStatusRequest {
            order_sn: String::new(),
            status: pb::OrderStatus::TradeSuccess as i32,
            ..Default::default()
        },
        pb::UpdateOrderStatusRequest {
            order_sn: "abc".into(),
            status: 99,
            ..Default::default()
        },
        pb::UpdateOrderStatusRequest {
            order_sn: "abc".into(),
            status: pb::OrderStatus::Unspecified as i32,
            ..Default::default()
        },
    ] {
        invalid(order.update_order_status(request).await);
    }
    for goods in [
        pb::Goods {
            id: 0,
            name: "g".into(),
            price_cents: 1,
        },
        pb::Goods {
            id: 5,
            name: String::new(),
            price_cents: 1,
        },
        pb::Goods {
            id: 5,
            name: "g".into(),
            price_cents: -1,
        },
    ] {
        invalid(order.upsert_goods(goods).await);
    }

    assert_eq!(stack.cart_len(1).await, 0);
    assert_eq!(stack.order_count().await, 0);
    let goods: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM goods")
        .fetch_one(&stack.order_pool)
        .await
        .expect("count");
    assert_eq!(goods, 1);
    assert!(stack.sell_details().await.is_empty());
    stack.stop().await;
}
