//! Demo only, off unless `GATEWAY_DEV_TOKENS` is set: a token for any user id (the demo
//! page's user picker), and paying one's own order without a payment provider. Off, both
//! answer 404 like any unknown route.

use axum::{Json, extract::State};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::{
    auth::Buyer,
    extract::{Json as Body, Path, integer},
    problem::Problem,
    routes::{
        orders::{Order, order_of},
        payments::mark_paid,
    },
    startup::AppState,
};

#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TokenRequest {
    #[serde(deserialize_with = "integer::i64")]
    #[schema(minimum = 1)]
    pub user_id: i64,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct TokenResponse {
    /// Send as `Authorization: Bearer <token>`.
    pub token: String,
    pub expires_at: DateTime<Utc>,
}

fn off() -> Problem {
    Problem::new(
        axum::http::StatusCode::NOT_FOUND,
        "dev routes are off (GATEWAY_DEV_TOKENS)",
    )
}

/// A token for a demo user (dev only).
#[utoipa::path(
    post, path = "/v1/dev/token", tag = "dev",
    request_body = TokenRequest,
    responses(
        (status = 200, description = "A bearer token for the user", body = TokenResponse),
        (status = 404, description = "Dev routes are off", body = crate::problem::ProblemBody, content_type = "application/problem+json"),
    )
)]
pub async fn token(
    State(state): State<AppState>,
    Body(body): Body<TokenRequest>,
) -> Result<Json<TokenResponse>, Problem> {
    let ttl = state.dev_token_ttl.ok_or_else(off)?;
    if body.user_id <= 0 {
        return Err(Problem::invalid("user_id", "user_id must be positive"));
    }
    let (token, expires_at) = state.tokens.issue(body.user_id, ttl)?;
    Ok(Json(TokenResponse { token, expires_at }))
}

/// Pays one of the caller's orders as a payment provider would (dev only).
#[utoipa::path(
    post, path = "/v1/dev/orders/{order_sn}/pay", tag = "dev",
    params(("order_sn" = String, Path, pattern = "^[A-Za-z0-9_-]{1,64}$", max_length = 64, description = "The order's number")),
    responses(
        (status = 200, description = "The paid order", body = Order),
        (status = 404, description = "Dev routes are off, or ORDER_NOT_FOUND", body = crate::problem::ProblemBody, content_type = "application/problem+json"),
        (status = 409, description = "ORDER_STATUS: closed before the payment", body = crate::problem::ProblemBody, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
pub async fn pay(
    State(state): State<AppState>,
    buyer: Buyer,
    Path(order_sn): Path<String>,
) -> Result<Json<Order>, Problem> {
    state.dev_token_ttl.ok_or_else(off)?;
    // The caller's own order only: order_of answers 404 for anyone else's.
    let (order, _) = order_of(&state, buyer.user_id, order_sn).await?;
    let trade_no = format!("demo-{}", order.order_sn);
    let paid = mark_paid(&state, order.order_sn, "demo", &trade_no).await?;
    Ok(Json(Order::try_from(paid)?))
}
