//! What is not the API: the demo page (static files compiled into the binary, no build
//! step, no external assets), the OpenAPI document, and the probes.

use std::{sync::OnceLock, time::Duration};

use axum::{
    Json,
    extract::State,
    http::{HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};
use tonic_health::pb::{HealthCheckRequest, health_check_response::ServingStatus};
use utoipa::OpenApi as _;

use crate::{backends::within, problem::Problem, routes::ApiDoc, startup::AppState};

/// How long the readiness probe waits for order_srv's health check.
const READY_WITHIN: Duration = Duration::from_secs(1);

/// The page may load only what the gateway itself serves.
const CSP: &str = "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'";

fn asset(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, HeaderValue::from_static(content_type)),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
            (
                header::CONTENT_SECURITY_POLICY,
                HeaderValue::from_static(CSP),
            ),
            (
                header::X_CONTENT_TYPE_OPTIONS,
                HeaderValue::from_static("nosniff"),
            ),
        ],
        body,
    )
        .into_response()
}

pub async fn index() -> Response {
    asset(
        "text/html; charset=utf-8",
        include_str!("../../static/index.html"),
    )
}

pub async fn script() -> Response {
    asset(
        "text/javascript; charset=utf-8",
        include_str!("../../static/app.js"),
    )
}

pub async fn style() -> Response {
    asset(
        "text/css; charset=utf-8",
        include_str!("../../static/style.css"),
    )
}

/// The OpenAPI 3.1 document, generated once.
pub async fn openapi() -> Response {
    static DOCUMENT: OnceLock<serde_json::Value> = OnceLock::new();
    let document = DOCUMENT.get_or_init(|| {
        serde_json::to_value(ApiDoc::openapi()).unwrap_or_else(|e| {
            tracing::error!(error = %e, "the OpenAPI document does not serialize");
            serde_json::Value::Null
        })
    });
    Json(document.clone()).into_response()
}

/// Liveness: the process answers.
pub async fn healthz() -> &'static str {
    "ok\n"
}

/// Readiness: order_srv answers its health check with SERVING.
pub async fn readyz(State(state): State<AppState>) -> Result<&'static str, Problem> {
    let answer = state
        .backends
        .order_health
        .clone()
        .check(within(
            HealthCheckRequest {
                service: proto::order::order_server::SERVICE_NAME.to_owned(),
            },
            READY_WITHIN,
        ))
        .await?
        .into_inner();
    if answer.status() == ServingStatus::Serving {
        Ok("ready\n")
    } else {
        Err(Problem::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "order_srv is not serving",
        ))
    }
}
