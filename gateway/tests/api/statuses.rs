//! Each row of the status table (docs/gateway.md): what a caller gets, as problem+json,
//! with Retry-After where a retry may succeed.

use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::json;
use sqlx::mysql::{MySqlConnectOptions, MySqlPoolOptions};

use crate::helpers::{Answer, gateway_config, send, spawn_shop, spawn_shop_with, stack::arm};

fn is_problem(answer: &Answer, status: StatusCode) {
    assert_eq!(answer.status, status, "{answer:?}");
    assert_eq!(
        answer.content_type(),
        "application/problem+json",
        "{answer:?}"
    );
    assert_eq!(answer.body["status"], status.as_u16(), "{answer:?}");
}

#[sqlx::test(migrations = false)]
async fn malformed_requests_are_400_naming_the_field_and_change_nothing(
    _: MySqlPoolOptions,
    db: MySqlConnectOptions,
) {
    let shop = spawn_shop(db).await;
    shop.stack.goods(1, 100, 10).await;
    let user = |m, p: &'static str| {
        let shop = &shop;
        async move { shop.as_user(4, m, p).await }
    };

    let zero = send(
        user(Method::POST, "/v1/cart/items")
            .await
            .json(&json!({"goods_id": 1, "nums": 0})),
    )
    .await;
    is_problem(&zero, StatusCode::BAD_REQUEST);
    assert_eq!(zero.body["invalid_params"][0]["name"], "nums", "{zero:?}");

    let not_json = send(
        user(Method::POST, "/v1/cart/items")
            .await
            .header("content-type", "application/json")
            .body("{"),
    )
    .await;
    is_problem(&not_json, StatusCode::BAD_REQUEST);
    let wrong_type = send(
        user(Method::POST, "/v1/cart/items")
            .await
            .json(&json!({"goods_id": "one", "nums": 1})),
    )
    .await;
    is_problem(&wrong_type, StatusCode::BAD_REQUEST);
    // serde alone takes an array of the fields in order; the API takes objects only.
    let array = send(
        user(Method::POST, "/v1/cart/items")
            .await
            .json(&json!([1, 1])),
    )
    .await;
    is_problem(&array, StatusCode::BAD_REQUEST);
    // JSON Schema's integers include 2.0 (schemathesis sends it): it is the number 2.
    let float = send(
        user(Method::POST, "/v1/cart/items")
            .await
            .json(&json!({"goods_id": 1.0, "nums": 2.0})),
    )
    .await;
    assert_eq!(float.status, StatusCode::CREATED, "{float:?}");
    let half = send(
        user(Method::POST, "/v1/cart/items")
            .await
            .json(&json!({"goods_id": 1, "nums": 1.5})),
    )
    .await;
    is_problem(&half, StatusCode::BAD_REQUEST);
    let no_content_type = send(
        user(Method::POST, "/v1/cart/items")
            .await
            .body(r#"{"goods_id":1,"nums":1}"#),
    )
    .await;
    is_problem(&no_content_type, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    let path = send(
        user(Method::PATCH, "/v1/cart/items/abc")
            .await
            .json(&json!({"nums": 1})),
    )
    .await;
    is_problem(&path, StatusCode::BAD_REQUEST);
    let too_large = send(
        user(Method::POST, "/v1/orders")
            .await
            .json(&json!({"address": "x".repeat(64 * 1024), "name": "a", "mobile": "1"})),
    )
    .await;
    is_problem(&too_large, StatusCode::PAYLOAD_TOO_LARGE);
    let bad_key = send(
        user(Method::POST, "/v1/orders")
            .await
            .header("Idempotency-Key", "no spaces allowed")
            .json(&json!({"address": "a", "name": "a", "mobile": "1"})),
    )
    .await;
    is_problem(&bad_key, StatusCode::BAD_REQUEST);
    assert_eq!(bad_key.body["invalid_params"][0]["name"], "Idempotency-Key");
    let long_mobile = send(
        user(Method::POST, "/v1/orders")
            .await
            .json(&json!({"address": "a", "name": "a", "mobile": "1".repeat(100)})),
    )
    .await;
    is_problem(&long_mobile, StatusCode::BAD_REQUEST);

    assert_eq!(shop.stack.cart_len(4).await, 1, "only the well-formed add");
    assert_eq!(shop.stack.order_count().await, 0);
    let unknown = send(shop.request(Method::GET, "/v1/nothing")).await;
    is_problem(&unknown, StatusCode::NOT_FOUND);
    shop.stop().await;
}

#[sqlx::test(migrations = false)]
async fn missing_or_bad_tokens_are_401_with_a_bearer_challenge(
    _: MySqlPoolOptions,
    db: MySqlConnectOptions,
) {
    let shop = spawn_shop(db).await;
    for authorization in [
        None,
        Some("Bearer nonsense"),
        Some("Basic dXNlcjpwdw=="),
        Some("Bearer "),
    ] {
        let mut request = shop.request(Method::GET, "/v1/cart/items");
        if let Some(value) = authorization {
            request = request.header("authorization", value);
        }
        let answer = send(request).await;
        is_problem(&answer, StatusCode::UNAUTHORIZED);
        assert_eq!(answer.reason(), "UNAUTHENTICATED");
        assert!(
            answer.headers.contains_key("www-authenticate"),
            "{authorization:?}"
        );
    }
    shop.stop().await;
}

#[sqlx::test(migrations = false)]
async fn refusals_carry_the_services_reason(_: MySqlPoolOptions, db: MySqlConnectOptions) {
    let shop = spawn_shop(db).await;
    shop.stack.goods(1, 100, 1).await;

    let unknown_goods = send(
        shop.as_user(6, Method::POST, "/v1/cart/items")
            .await
            .json(&json!({"goods_id": 99, "nums": 1})),
    )
    .await;
    is_problem(&unknown_goods, StatusCode::NOT_FOUND);
    assert_eq!(unknown_goods.reason(), "GOODS_NOT_FOUND");
    let not_in_cart = send(
        shop.as_user(6, Method::PATCH, "/v1/cart/items/1")
            .await
            .json(&json!({"nums": 2})),
    )
    .await;
    is_problem(&not_in_cart, StatusCode::NOT_FOUND);
    assert_eq!(not_in_cart.reason(), "NOT_IN_CART");
    let empty = shop.place(6, None).await;
    is_problem(&empty, StatusCode::CONFLICT);
    assert_eq!(empty.reason(), "CART_EMPTY");
    assert!(
        !empty.headers.contains_key("retry-after"),
        "not worth retrying"
    );

    shop.add_to_cart(6, 1, 2).await;
    let short = shop.place(6, None).await;
    is_problem(&short, StatusCode::CONFLICT);
    assert_eq!(short.reason(), "INSUFFICIENT_STOCK");
    assert_eq!(short.body["domain"], "inventory.v1");
    assert_eq!(short.body["metadata"]["goods_id"], "1", "{short:?}");
    shop.stop().await;
}

#[sqlx::test(migrations = false)]
async fn a_buyer_over_the_rate_limit_gets_429_and_others_do_not(
    _: MySqlPoolOptions,
    db: MySqlConnectOptions,
) {
    let mut config = gateway_config();
    config.rate_per_user = 1;
    config.rate_burst = 3;
    let shop = spawn_shop_with(db, config).await;
    let (busy, calm) = (shop.token(1).await, shop.token(2).await);
    let mut statuses = Vec::new();
    for _ in 0..6 {
        let answer = send(
            shop.request(Method::GET, "/v1/cart/items")
                .bearer_auth(&busy),
        )
        .await;
        statuses.push(answer.status);
        if answer.status == StatusCode::TOO_MANY_REQUESTS {
            is_problem(&answer, StatusCode::TOO_MANY_REQUESTS);
            assert!(answer.headers.contains_key("retry-after"));
        }
    }
    assert!(
        statuses.contains(&StatusCode::TOO_MANY_REQUESTS),
        "{statuses:?}"
    );
    let other = send(
        shop.request(Method::GET, "/v1/cart/items")
            .bearer_auth(&calm),
    )
    .await;
    assert_eq!(other.status, StatusCode::OK, "{other:?}");
    shop.stop().await;
}

#[sqlx::test(migrations = false)]
async fn a_service_away_is_503_with_retry_after(_: MySqlPoolOptions, db: MySqlConnectOptions) {
    let mut shop = spawn_shop(db).await;
    let token = shop.token(8).await;
    shop.stack.stop_order_service().await;
    let answer = send(
        shop.request(Method::GET, "/v1/cart/items")
            .bearer_auth(&token),
    )
    .await;
    is_problem(&answer, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(
        answer
            .headers
            .get("retry-after")
            .and_then(|v| v.to_str().ok()),
        Some("1")
    );
    shop.stop().await;
}

#[sqlx::test(migrations = false)]
async fn a_budget_run_out_says_retry_and_the_retry_with_the_key_finds_the_order(
    _: MySqlPoolOptions,
    db: MySqlConnectOptions,
) {
    let mut config = gateway_config();
    config.order_timeout = Duration::from_secs(1);
    let shop = spawn_shop_with(db, config).await;
    shop.stack.goods(1, 100, 10).await;
    shop.add_to_cart(11, 1, 1).await;
    let pause = arm("order.pause_before_commit", "return(11:3000)").await;

    let late = shop.place(11, Some("slow-network")).await;
    assert!(
        [StatusCode::SERVICE_UNAVAILABLE, StatusCode::GATEWAY_TIMEOUT].contains(&late.status),
        "{late:?}"
    );
    assert_eq!(late.content_type(), "application/problem+json");
    assert!(late.headers.contains_key("retry-after"), "{late:?}");
    drop(pause);

    // The order went on without the caller; the retry finds it.
    let found = testkit::eventually(testkit::PATIENCE, "the retry finds the order", || async {
        let retry = shop.place(11, Some("slow-network")).await;
        (retry.status == StatusCode::CREATED).then_some(retry)
    })
    .await;
    assert_eq!(found.body["status"], "WAIT_BUYER_PAY");
    assert_eq!(shop.stack.order_count().await, 1);
    shop.stop().await;
}
