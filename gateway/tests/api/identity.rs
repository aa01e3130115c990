//! The buyer is the token's: another buyer's order is 404 and their cart is never seen.

use reqwest::{Method, StatusCode};
use serde_json::json;
use sqlx::mysql::{MySqlConnectOptions, MySqlPoolOptions};

use crate::helpers::{send, spawn_shop};

#[sqlx::test(migrations = false)]
async fn another_buyers_token_gets_404_for_an_order_and_never_sees_the_cart(
    _: MySqlPoolOptions,
    db: MySqlConnectOptions,
) {
    let shop = spawn_shop(db).await;
    shop.stack.goods(1, 100, 10).await;
    shop.stack.goods(2, 300, 10).await;
    shop.add_to_cart(1, 1, 1).await;
    let placed = shop.place(1, None).await;
    let order_sn = placed.body["order_sn"].as_str().expect("placed").to_owned();
    shop.add_to_cart(1, 2, 2).await;

    for (method, path) in [
        (Method::GET, format!("/v1/orders/{order_sn}")),
        (Method::POST, format!("/v1/orders/{order_sn}/cancel")),
        (Method::POST, format!("/v1/dev/orders/{order_sn}/pay")),
    ] {
        let answer = send(shop.as_user(2, method.clone(), &path).await).await;
        assert_eq!(
            answer.status,
            StatusCode::NOT_FOUND,
            "{method} {path}: {answer:?}"
        );
        assert_eq!(answer.content_type(), "application/problem+json");
    }
    let list = send(shop.as_user(2, Method::GET, "/v1/orders").await).await;
    assert_eq!(list.body["orders"], json!([]));
    let cart = send(shop.as_user(2, Method::GET, "/v1/cart/items").await).await;
    assert_eq!(
        cart.body["items"],
        json!([]),
        "user 2 sees only their own cart"
    );
    // A body or query naming another user changes nothing: the fields are refused.
    let sneaky = send(
        shop.as_user(2, Method::POST, "/v1/cart/items")
            .await
            .json(&json!({ "goods_id": 1, "nums": 1, "user_id": 1 })),
    )
    .await;
    assert_eq!(sneaky.status, StatusCode::BAD_REQUEST, "{sneaky:?}");
    let removed = send(shop.as_user(2, Method::DELETE, "/v1/cart/items/2").await).await;
    assert_eq!(removed.status, StatusCode::NOT_FOUND, "{removed:?}");
    assert_eq!(
        shop.stack.cart_len(1).await,
        1,
        "user 1's cart is untouched"
    );
    assert_eq!(
        shop.stack.order_status(&order_sn).await.as_deref(),
        Some("WAIT_BUYER_PAY")
    );
    shop.stop().await;
}
