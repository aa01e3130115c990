//! `POST /v1/payments/callback`: the payment provider says an order was paid. No buyer
//! token: the provider proves itself with `X-Payment-Signature: sha256=<hex>`, the
//! HMAC-SHA256 of the exact body bytes under the shared `GATEWAY_PAYMENT_SECRET`. The
//! signature is checked before the body is even parsed; a bad or missing one is 401 and
//! nothing changes. A repeated callback for an order already paid with the same trade
//! number answers 200 again (providers retry until they see a 2xx).

use axum::{Json, body::Bytes, extract::State, http::HeaderMap};
use hmac::{Hmac, Mac};
use proto::order as pb;
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use tonic::Code;
use utoipa::ToSchema;

use crate::{
    backends::within,
    problem::Problem,
    routes::orders::{ANY_OWNER, Order, OrderStatus, order_of},
    startup::AppState,
};

/// The header carrying the body's signature.
pub const SIGNATURE: &str = "x-payment-signature";

/// What the provider reports.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PaymentNotice {
    pub order_sn: String,
    /// The provider's transaction number.
    pub trade_no: String,
    /// e.g. `alipay`, `card`.
    pub pay_type: String,
}

/// `sha256=<hex>` of `body` under `key`: what a provider sends (and tests sign with).
pub fn sign(key: &[u8], body: &[u8]) -> String {
    mac(key, body).map_or_else(String::new, |mac| {
        format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
    })
}

/// The HMAC of `body` under `key`, not yet finalized. HMAC takes a key of any length, so
/// this is always `Some`; a `None` would count as "not signed", never as a panic.
fn mac(key: &[u8], body: &[u8]) -> Option<Hmac<Sha256>> {
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(key).ok()?;
    mac.update(body);
    Some(mac)
}

/// Whether `headers` carry a valid signature of `body` (compared in constant time).
fn signed(key: &[u8], headers: &HeaderMap, body: &[u8]) -> bool {
    let Some(hex_sig) = headers
        .get(SIGNATURE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("sha256="))
    else {
        return false;
    };
    let Ok(signature) = hex::decode(hex_sig) else {
        return false;
    };
    mac(key, body).is_some_and(|mac| mac.verify_slice(&signature).is_ok())
}

/// Marks an order paid (the payment provider's callback).
#[utoipa::path(
    post, path = "/v1/payments/callback", tag = "payments",
    params(("X-Payment-Signature" = String, Header, description = "sha256=<hex HMAC-SHA256 of the body>")),
    request_body = PaymentNotice,
    responses(
        (status = 200, description = "The paid order", body = Order),
        (status = 404, description = "ORDER_NOT_FOUND", body = crate::problem::ProblemBody, content_type = "application/problem+json"),
        (status = 409, description = "ORDER_STATUS: closed before the payment (refund it)", body = crate::problem::ProblemBody, content_type = "application/problem+json"),
    )
)]
pub async fn callback(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<Order>, Problem> {
    if !signed(state.payment_key.as_bytes(), &headers, &body) {
        return Err(Problem::unauthenticated(
            "X-Payment-Signature is missing or does not sign this body",
        ));
    }
    let notice: PaymentNotice = serde_json::from_slice(&body)
        .map_err(|e| Problem::invalid("body", format!("not a payment notice: {e}")))?;
    let paid = mark_paid(
        &state,
        notice.order_sn.clone(),
        &notice.pay_type,
        &notice.trade_no,
    )
    .await;
    match paid {
        Err(status) if status.code() == Code::FailedPrecondition => {
            // Already paid with this trade number: the provider's retry.
            let (order, _) = order_of(&state, ANY_OWNER, notice.order_sn).await?;
            if order.status == OrderStatus::TradeSuccess && order.trade_no == notice.trade_no {
                return Ok(Json(order));
            }
            Err(status.into())
        }
        other => Ok(Json(Order::try_from(other?)?)),
    }
}

/// UpdateOrderStatus to TRADE_SUCCESS.
pub async fn mark_paid(
    state: &AppState,
    order_sn: String,
    pay_type: &str,
    trade_no: &str,
) -> Result<pb::OrderInfo, tonic::Status> {
    Ok(state
        .backends
        .order
        .clone()
        .update_order_status(within(
            pb::UpdateOrderStatusRequest {
                order_sn,
                status: pb::OrderStatus::TradeSuccess as i32,
                pay_type: pay_type.to_owned(),
                trade_no: trade_no.to_owned(),
            },
            state.budgets.call,
        ))
        .await?
        .into_inner())
}

#[cfg(test)]
mod tests {
    use axum::http::{HeaderMap, HeaderValue};

    use super::{SIGNATURE, sign, signed};

    const KEY: &[u8] = b"0123456789abcdef0123456789abcdef";

    #[test]
    fn only_the_keys_signature_of_this_very_body_passes() {
        let body = br#"{"order_sn":"1","trade_no":"t","pay_type":"card"}"#;
        let mut headers = HeaderMap::new();
        assert!(!signed(KEY, &headers, body), "no signature");
        let good = sign(KEY, body);
        headers.insert(SIGNATURE, HeaderValue::from_str(&good).expect("ascii"));
        assert!(signed(KEY, &headers, body));
        assert!(!signed(
            KEY,
            &headers,
            br#"{"order_sn":"2","trade_no":"t","pay_type":"card"}"#
        ));
        assert!(!signed(
            b"another key of thirty-two bytes!!",
            &headers,
            body
        ));
        headers.insert(SIGNATURE, HeaderValue::from_static("sha256=zz"));
        assert!(!signed(KEY, &headers, body));
    }
}
