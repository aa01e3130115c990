//! Cart and price rules a gateway relies on: bounded money, one quantity limit for both
//! cart RPCs, one meaning of `checked`, and trimmed text.

use proto::order as pb;
use sqlx::mysql::{MySqlConnectOptions, MySqlPoolOptions};
use tonic::Code;

use crate::helpers::{create_order_request, spawn_stack};

fn add(user_id: i64, goods_id: i32, nums: i32, checked: Option<bool>) -> pb::CreateCartItemRequest {
    pb::CreateCartItemRequest {
        user_id,
        goods_id,
        nums,
        checked,
    }
}

#[sqlx::test(migrations = false)]
async fn prices_past_the_bound_are_refused_and_a_huge_total_is_a_clear_error_not_a_panic(
    _: MySqlPoolOptions,
    db: MySqlConnectOptions,
) {
    let stack = spawn_stack(db).await;
    let mut order = stack.order.clone();
    for price_cents in [i64::MAX, order_srv::domain::MAX_PRICE_CENTS + 1, -1] {
        let refused = order
            .upsert_goods(pb::Goods {
                id: 1,
                name: "gold".into(),
                price_cents,
            })
            .await
            .expect_err("price out of bounds");
        assert_eq!(refused.code(), Code::InvalidArgument, "{refused:?}");
    }
    stack.goods(1, order_srv::domain::MAX_PRICE_CENTS, 10).await;

    // A price written before the bound existed (or by hand): the total would overflow.
    stack.goods(2, 1, 10).await;
    sqlx::query("UPDATE goods SET price_cents = ? WHERE id = 2")
        .bind(i64::MAX)
        .execute(&stack.order_pool)
        .await
        .expect("set a huge price");
    stack.add_to_cart(5, 2, 2).await;

    let refused = stack
        .create_order(5)
        .await
        .expect_err("the total does not fit");

    assert_eq!(refused.code(), Code::FailedPrecondition, "{refused:?}");
    assert!(refused.message().contains("total"), "{refused:?}");
    assert!(
        stack.sell_details().await.is_empty(),
        "nothing was deducted"
    );
    assert_eq!(stack.stock(2).await, 10);
    assert_eq!(stack.cart_len(5).await, 1, "the cart is untouched");
    // The service kept serving.
    stack.add_to_cart(6, 1, 3).await;
    let placed = stack.create_order(6).await.expect("a bounded order");
    assert_eq!(placed.total_cents, 3 * order_srv::domain::MAX_PRICE_CENTS);
    stack.stop().await;
}

#[sqlx::test(migrations = false)]
async fn adding_to_a_cart_line_respects_the_limit_update_enforces(
    _: MySqlPoolOptions,
    db: MySqlConnectOptions,
) {
    let stack = spawn_stack(db).await;
    stack.goods(1, 100, 10).await;
    let mut order = stack.order.clone();
    let max = order_srv::domain::MAX_CART_NUMS;
    order
        .create_cart_item(add(1, 1, max, None))
        .await
        .expect("a full line");

    let refused = order
        .create_cart_item(add(1, 1, max, None))
        .await
        .expect_err("two full adds would pass the limit");
    assert_eq!(refused.code(), Code::FailedPrecondition, "{refused:?}");
    let refused = order
        .create_cart_item(add(1, 1, 1, None))
        .await
        .expect_err("one more would pass the limit");
    assert_eq!(refused.code(), Code::FailedPrecondition, "{refused:?}");

    let items = order
        .cart_item_list(pb::UserRequest { user_id: 1 })
        .await
        .expect("list")
        .into_inner()
        .items;
    assert_eq!(items.len(), 1);
    assert_eq!(items[0].nums, max, "the line is unchanged");
    // What Create can build, Update accepts.
    order
        .update_cart_item(pb::UpdateCartItemRequest {
            user_id: 1,
            goods_id: 1,
            nums: Some(items[0].nums),
            checked: None,
        })
        .await
        .expect("update accepts every line create can make");
    stack.stop().await;
}

#[sqlx::test(migrations = false)]
async fn a_cart_holds_at_most_the_goods_one_order_may_hold(
    _: MySqlPoolOptions,
    db: MySqlConnectOptions,
) {
    let stack = spawn_stack(db).await;
    let lines = i32::try_from(order_srv::domain::MAX_CART_LINES).expect("small");
    let price_list: Vec<String> = (1..=lines + 1)
        .map(|id| format!("({id}, 'goods {id}', 100)"))
        .collect();
    sqlx::query(&format!(
        "INSERT INTO goods (id, name, price_cents) VALUES {}",
        price_list.join(",")
    ))
    .execute(&stack.order_pool)
    .await
    .expect("a price list one goods longer than a cart");
    let mut order = stack.order.clone();
    for goods_id in 1..=lines {
        order
            .create_cart_item(add(1, goods_id, 1, None))
            .await
            .expect("within the limit");
    }
    let refused = order
        .create_cart_item(add(1, lines + 1, 1, None))
        .await
        .expect_err("one goods too many");
    assert_eq!(refused.code(), Code::FailedPrecondition, "{refused:?}");
    // Adding to a line already there is still fine.
    order
        .create_cart_item(add(1, 1, 1, None))
        .await
        .expect("an existing line grows");
    assert_eq!(
        stack.cart_len(1).await,
        usize::try_from(lines).expect("small")
    );
    stack.stop().await;
}

/// `checked` means the same in both RPCs: when given, it sets the line's flag; when
/// absent, CreateCartItem checks a new line and leaves an existing line's flag alone.
#[sqlx::test(migrations = false)]
async fn checked_sets_the_line_flag_when_given_and_is_kept_when_absent(
    _: MySqlPoolOptions,
    db: MySqlConnectOptions,
) {
    let stack = spawn_stack(db).await;
    stack.goods(1, 100, 10).await;
    let mut order = stack.order.clone();
    let line = order
        .create_cart_item(add(1, 1, 1, None))
        .await
        .expect("new line")
        .into_inner();
    assert!(line.checked, "a new line is checked by default");
    order
        .update_cart_item(pb::UpdateCartItemRequest {
            user_id: 1,
            goods_id: 1,
            nums: None,
            checked: Some(false),
        })
        .await
        .expect("uncheck");

    let line = order
        .create_cart_item(add(1, 1, 2, None))
        .await
        .expect("add without a flag")
        .into_inner();
    assert_eq!(line.nums, 3);
    assert!(!line.checked, "an add without a flag keeps the line's flag");

    let line = order
        .create_cart_item(add(1, 1, 1, Some(true)))
        .await
        .expect("add with a flag")
        .into_inner();
    assert_eq!(line.nums, 4);
    assert!(
        line.checked,
        "an explicit flag applies to the line, as in Update"
    );
    stack.stop().await;
}

#[sqlx::test(migrations = false)]
async fn leading_and_trailing_spaces_of_text_fields_are_trimmed(
    _: MySqlPoolOptions,
    db: MySqlConnectOptions,
) {
    let stack = spawn_stack(db).await;
    stack.goods(1, 100, 10).await;
    stack.add_to_cart(1, 1, 1).await;
    let placed = stack
        .order
        .clone()
        .create_order(pb::CreateOrderRequest {
            name: "  Ada  ".into(),
            address: "\t1 Main St ".into(),
            ..create_order_request(1)
        })
        .await
        .expect("order")
        .into_inner();
    assert_eq!(placed.name, "Ada");
    assert_eq!(placed.address, "1 Main St");
    stack.stop().await;
}

#[sqlx::test(migrations = false)]
async fn the_price_list_pages_by_id_and_refuses_a_foreign_page_token(
    _: MySqlPoolOptions,
    db: MySqlConnectOptions,
) {
    let stack = spawn_stack(db).await;
    for id in 1..=5 {
        stack.goods(id, i64::from(id) * 100, 1).await;
    }
    let mut order = stack.order.clone();
    let mut seen = Vec::new();
    let mut token = String::new();
    loop {
        let page = order
            .goods_list(pb::GoodsListRequest {
                page_size: 2,
                page_token: token.clone(),
            })
            .await
            .expect("a page")
            .into_inner();
        assert!(page.goods.len() <= 2);
        seen.extend(page.goods.iter().map(|g| (g.id, g.price_cents)));
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    assert_eq!(seen, [(1, 100), (2, 200), (3, 300), (4, 400), (5, 500)]);
    // A token past every goods id an i32 holds is the page after everything, not an error.
    let beyond = order
        .goods_list(pb::GoodsListRequest {
            page_size: 0,
            page_token: "99999999999".into(),
        })
        .await
        .expect("an empty page")
        .into_inner();
    assert!(beyond.goods.is_empty() && beyond.next_page_token.is_empty());
    for (page_size, page_token) in [(201, ""), (0, "x"), (0, "-3")] {
        let refused = order
            .goods_list(pb::GoodsListRequest {
                page_size,
                page_token: page_token.into(),
            })
            .await
            .expect_err("refused");
        assert_eq!(
            refused.code(),
            Code::InvalidArgument,
            "{page_size} {page_token:?}"
        );
    }
}
