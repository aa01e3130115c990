//! The payment provider's callback: only a valid HMAC-SHA256 signature of the body pays.

use gateway::routes::payments::{SIGNATURE, sign};
use reqwest::{Method, StatusCode};
use serde_json::json;
use sqlx::mysql::{MySqlConnectOptions, MySqlPoolOptions};

use crate::helpers::{PAYMENT_SECRET, send, shop_with_cart};

#[sqlx::test(migrations = false)]
async fn a_bad_payment_signature_changes_nothing_and_a_good_one_pays_once(
    _: MySqlPoolOptions,
    db: MySqlConnectOptions,
) {
    let shop = shop_with_cart(db, 3, 100, 10, 1).await;
    let placed = shop.place(3, None).await;
    let order_sn = placed.body["order_sn"].as_str().expect("placed").to_owned();
    let body = serde_json::to_vec(&json!({
        "order_sn": order_sn, "trade_no": "T-1", "pay_type": "card"
    }))
    .expect("json");
    let callback = |signature: Option<String>, body: Vec<u8>| {
        let mut request = shop
            .request(Method::POST, "/v1/payments/callback")
            .header("content-type", "application/json")
            .body(body);
        if let Some(signature) = signature {
            request = request.header(SIGNATURE, signature);
        }
        send(request)
    };

    let forged = [
        None,
        Some("sha256=00".to_owned()),
        Some(sign(b"not the provider's key, but 32 bytes", &body)),
        // A valid signature of another body.
        Some(sign(PAYMENT_SECRET.as_bytes(), b"{}")),
    ];
    for signature in forged {
        let answer = callback(signature.clone(), body.clone()).await;
        assert_eq!(
            answer.status,
            StatusCode::UNAUTHORIZED,
            "{signature:?}: {answer:?}"
        );
        assert_eq!(answer.content_type(), "application/problem+json");
    }
    assert_eq!(
        shop.stack.order_status(&order_sn).await.as_deref(),
        Some("WAIT_BUYER_PAY"),
        "nothing changed"
    );

    let paid = callback(Some(sign(PAYMENT_SECRET.as_bytes(), &body)), body.clone()).await;
    assert_eq!(paid.status, StatusCode::OK, "{paid:?}");
    assert_eq!(paid.body["status"], "TRADE_SUCCESS");
    assert_eq!(paid.body["trade_no"], "T-1");
    // The provider retries its callback: the same answer.
    let again = callback(Some(sign(PAYMENT_SECRET.as_bytes(), &body)), body.clone()).await;
    assert_eq!(again.status, StatusCode::OK, "{again:?}");
    // A paid order cannot be cancelled.
    let cancel = send(
        shop.as_user(3, Method::POST, &format!("/v1/orders/{order_sn}/cancel"))
            .await,
    )
    .await;
    assert_eq!(cancel.status, StatusCode::CONFLICT, "{cancel:?}");
    assert_eq!(cancel.reason(), "ORDER_STATUS");
    shop.stop().await;
}
