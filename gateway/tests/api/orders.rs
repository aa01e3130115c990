//! Orders through the gateway: the Idempotency-Key makes `POST /v1/orders` retry-safe.

use futures::future::join_all;
use reqwest::{Method, StatusCode};
use sqlx::mysql::{MySqlConnectOptions, MySqlPoolOptions};

use crate::helpers::{send, shop_with_cart};

#[sqlx::test(migrations = false)]
async fn the_same_idempotency_key_returns_the_same_order(
    _: MySqlPoolOptions,
    db: MySqlConnectOptions,
) {
    let shop = shop_with_cart(db, 7, 250, 10, 2).await;

    let first = shop.place(7, Some("checkout-7-a")).await;
    assert_eq!(first.status, StatusCode::CREATED, "{first:?}");
    let order_sn = first.body["order_sn"]
        .as_str()
        .expect("an order_sn")
        .to_owned();
    assert_eq!(first.body["total_cents"], 500);
    assert_eq!(first.body["status"], "WAIT_BUYER_PAY");
    assert_eq!(
        first.headers.get("location").and_then(|v| v.to_str().ok()),
        Some(format!("/v1/orders/{order_sn}").as_str())
    );

    // The answer was lost; the browser sends the same request again.
    let replay = shop.place(7, Some("checkout-7-a")).await;
    assert_eq!(replay.status, StatusCode::CREATED, "{replay:?}");
    assert_eq!(replay.body["order_sn"], order_sn.as_str());
    assert_eq!(shop.stack.order_count().await, 1);
    assert_eq!(shop.stack.stock(1).await, 8, "one Sell");

    // The order is listed once, with its goods.
    let list = send(shop.as_user(7, Method::GET, "/v1/orders").await).await;
    assert_eq!(list.status, StatusCode::OK);
    assert_eq!(list.body["orders"].as_array().map(Vec::len), Some(1));
    let detail = send(
        shop.as_user(7, Method::GET, &format!("/v1/orders/{order_sn}"))
            .await,
    )
    .await;
    assert_eq!(detail.status, StatusCode::OK, "{detail:?}");
    assert_eq!(detail.body["goods"][0]["nums"], 2);
    // The order shows where it goes as the body it was placed with.
    assert_eq!(
        detail.body["order"]["delivery"],
        serde_json::json!({ "address": "1 Main St", "name": "Ada", "mobile": "555-0100", "post": "" }),
        "{detail:?}"
    );

    // A new key is a new order: the cart is empty now.
    let other = shop.place(7, Some("checkout-7-b")).await;
    assert_eq!(other.status, StatusCode::CONFLICT, "{other:?}");
    assert_eq!(other.reason(), "CART_EMPTY");
    shop.stop().await;
}

#[sqlx::test(migrations = false)]
async fn concurrent_requests_with_one_key_place_one_order(
    _: MySqlPoolOptions,
    db: MySqlConnectOptions,
) {
    let shop = shop_with_cart(db, 9, 100, 100, 3).await;

    let answers = join_all((0..8).map(|_| shop.place(9, Some("double-click")))).await;
    let placed: Vec<&str> = answers
        .iter()
        .filter(|a| a.status == StatusCode::CREATED)
        .filter_map(|a| a.body["order_sn"].as_str())
        .collect();
    assert!(!placed.is_empty(), "{answers:?}");
    assert!(placed.iter().all(|sn| *sn == placed[0]), "{placed:?}");
    for refused in answers.iter().filter(|a| a.status != StatusCode::CREATED) {
        // The others are told to retry with the same key.
        assert_eq!(refused.status, StatusCode::CONFLICT, "{refused:?}");
        assert!(
            ["REQUEST_IN_PROGRESS", "CART_IN_USE"].contains(&refused.reason()),
            "{refused:?}"
        );
        assert!(refused.headers.contains_key("retry-after"));
    }
    // Every retry now returns the one order.
    let retry = shop.place(9, Some("double-click")).await;
    assert_eq!(retry.body["order_sn"], placed[0]);
    assert_eq!(shop.stack.order_count().await, 1);
    testkit::eventually(
        testkit::PATIENCE,
        "the losers' deductions returned",
        || async { (shop.stack.stock(1).await == 97).then_some(()) },
    )
    .await;
    shop.stop().await;
}

#[sqlx::test(migrations = false)]
async fn a_buyer_cancels_an_unpaid_order_and_its_stock_comes_back(
    _: MySqlPoolOptions,
    db: MySqlConnectOptions,
) {
    let shop = shop_with_cart(db, 5, 100, 10, 4).await;
    let placed = shop.place(5, None).await;
    let order_sn = placed.body["order_sn"].as_str().expect("placed").to_owned();
    assert_eq!(shop.stack.stock(1).await, 6);

    let cancelled = send(
        shop.as_user(5, Method::POST, &format!("/v1/orders/{order_sn}/cancel"))
            .await,
    )
    .await;
    assert_eq!(cancelled.status, StatusCode::OK, "{cancelled:?}");
    assert_eq!(cancelled.body["status"], "TRADE_CLOSED");
    testkit::eventually(testkit::PATIENCE, "the stock back", || async {
        (shop.stack.stock(1).await == 10).then_some(())
    })
    .await;

    // Goods show the live stock.
    let goods = send(shop.as_user(5, Method::GET, "/v1/goods").await).await;
    assert_eq!(goods.status, StatusCode::OK, "{goods:?}");
    assert_eq!(goods.body["goods"][0]["stock"], 10);
    assert_eq!(goods.body["goods"][0]["price_cents"], 100);
    shop.stop().await;
}
