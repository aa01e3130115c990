//! The HTTP API under `/v1`, its OpenAPI document, and the demo page.
//!
//! Handlers are thin: typed extractors (the [`Buyer`](crate::auth::Buyer) from the token,
//! a validated body), one or two gRPC calls with the route's budget, a mapping to JSON.

pub mod cart;
pub mod dev;
pub mod goods;
pub mod orders;
pub mod payments;
pub mod site;

use axum::{
    Router,
    extract::DefaultBodyLimit,
    http::{HeaderValue, Method, StatusCode, header},
    routing::{get, patch, post},
};
use tower_http::cors::{AllowOrigin, CorsLayer};
use utoipa::{
    Modify, OpenApi,
    openapi::{
        ContentBuilder, RefOr, ResponseBuilder,
        security::{HttpAuthScheme, HttpBuilder, SecurityScheme},
    },
};

use crate::{
    problem::{InvalidParam, PROBLEM_JSON, Problem, ProblemBody},
    startup::AppState,
};

/// Every route of the gateway, with the body limit and CORS of `state`'s configuration.
pub fn router(state: AppState, body_limit: usize, cors_origins: &[String]) -> Router {
    let api = Router::new()
        .route("/v1/goods", get(goods::list))
        .route("/v1/cart/items", get(cart::list).post(cart::add))
        .route(
            "/v1/cart/items/{goods_id}",
            patch(cart::change).delete(cart::remove),
        )
        .route("/v1/orders", get(orders::list).post(orders::place))
        .route("/v1/orders/{order_sn}", get(orders::detail))
        .route("/v1/orders/{order_sn}/cancel", post(orders::cancel))
        .route("/v1/payments/callback", post(payments::callback))
        .route("/v1/dev/token", post(dev::token))
        .route("/v1/dev/orders/{order_sn}/pay", post(dev::pay))
        .layer(DefaultBodyLimit::max(body_limit));
    let router = Router::new()
        .merge(api)
        .route("/openapi.json", get(site::openapi))
        .route("/healthz", get(site::healthz))
        .route("/readyz", get(site::readyz))
        .route("/", get(site::index))
        .route("/app.js", get(site::script))
        .route("/style.css", get(site::style))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .with_state(state);
    match cors(cors_origins) {
        Some(cors) => router.layer(cors),
        None => router,
    }
}

/// CORS for the configured origins; none configured, no CORS headers at all.
fn cors(origins: &[String]) -> Option<CorsLayer> {
    let origins: Vec<HeaderValue> = origins
        .iter()
        .filter(|o| !o.trim().is_empty())
        .filter_map(|o| HeaderValue::from_str(o.trim()).ok())
        .collect();
    if origins.is_empty() {
        return None;
    }
    Some(
        CorsLayer::new()
            .allow_origin(AllowOrigin::list(origins))
            .allow_methods([Method::GET, Method::POST, Method::PATCH, Method::DELETE])
            .allow_headers([
                header::AUTHORIZATION,
                header::CONTENT_TYPE,
                header::HeaderName::from_static("idempotency-key"),
                header::HeaderName::from_static("traceparent"),
                header::HeaderName::from_static("tracestate"),
            ])
            .expose_headers([header::RETRY_AFTER, header::LOCATION]),
    )
}

async fn not_found() -> Problem {
    Problem::new(StatusCode::NOT_FOUND, "no such route; see /openapi.json")
}

async fn method_not_allowed() -> Problem {
    Problem::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "the route does not take this method; see /openapi.json",
    )
}

/// The API's contract, generated from the handlers and their types.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "shop gateway",
        description = "HTTP/JSON in front of order_srv and inventory_srv. Errors are RFC 9457 \
                       problem+json; the buyer is the token's `sub`.",
        license(name = "Apache-2.0")
    ),
    paths(
        goods::list,
        cart::list, cart::add, cart::change, cart::remove,
        orders::place, orders::list, orders::detail, orders::cancel,
        payments::callback,
        dev::token, dev::pay,
    ),
    components(schemas(ProblemBody, InvalidParam)),
    modifiers(&Security, &CommonProblems),
    tags(
        (name = "goods", description = "The price list with live stock"),
        (name = "cart", description = "The caller's cart"),
        (name = "orders", description = "The caller's orders"),
        (name = "payments", description = "The payment provider's callback (HMAC-signed, no token)"),
        (name = "dev", description = "Demo only, off unless GATEWAY_DEV_TOKENS is set"),
    )
)]
pub struct ApiDoc;

/// The bearer scheme every buyer route declares.
struct Security;

impl Modify for Security {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .build(),
            ),
        );
    }
}

/// The problems any route may answer with, added to every operation once here instead of
/// on each handler: a malformed request, a missing or bad token, a body over the limit or
/// not JSON, the rate limit, a bug, a service away, a budget run out.
struct CommonProblems;

const COMMON: [(&str, &str); 9] = [
    ("400", "The request is malformed; nothing changed"),
    (
        "401",
        "No valid bearer token (or, for the callback, no valid signature)",
    ),
    ("413", "The body is over the limit"),
    ("415", "The body is not JSON"),
    ("429", "Over the per-user rate limit; see Retry-After"),
    ("500", "A bug; the gateway's log has the cause"),
    ("501", "Not implemented by the service"),
    (
        "503",
        "A service or its database is unreachable or busy; see Retry-After",
    ),
    (
        "504",
        "The route's budget ran out; the outcome is unknown (retry with the same Idempotency-Key)",
    ),
];

impl Modify for CommonProblems {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let problem = || {
            ContentBuilder::new()
                .schema(Some(RefOr::Ref(utoipa::openapi::Ref::from_schema_name(
                    "ProblemBody",
                ))))
                .build()
        };
        for item in openapi.paths.paths.values_mut() {
            for operation in [
                &mut item.get,
                &mut item.post,
                &mut item.patch,
                &mut item.delete,
                &mut item.put,
            ]
            .into_iter()
            .flatten()
            {
                for (code, description) in COMMON {
                    operation
                        .responses
                        .responses
                        .entry(code.to_owned())
                        .or_insert_with(|| {
                            RefOr::T(
                                ResponseBuilder::new()
                                    .description(description)
                                    .content(PROBLEM_JSON, problem())
                                    .build(),
                            )
                        });
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::{sync::Arc, time::Duration};

    use axum::{
        body::Body,
        http::{Request, header},
    };
    use tower::ServiceExt;

    use crate::{
        auth::Tokens,
        backends::Backends,
        limit::Limiter,
        startup::{AppState, Budgets},
    };

    fn state() -> AppState {
        AppState {
            // Nothing listens there; these tests never reach a service.
            backends: Backends::connect_lazy("http://127.0.0.1:1", "http://127.0.0.1:1")
                .expect("valid endpoints"),
            tokens: Arc::new(
                Tokens::new(b"0123456789abcdef0123456789abcdef", "shop").expect("a key"),
            ),
            limiter: Arc::new(Limiter::new(0, 1)),
            payment_key: "0123456789abcdef0123456789abcdef".into(),
            budgets: Budgets {
                order: Duration::from_secs(1),
                call: Duration::from_secs(1),
            },
            dev_token_ttl: None,
        }
    }

    async fn preflight(cors_origins: &[String], origin: &str) -> Option<String> {
        let request = Request::builder()
            .method("OPTIONS")
            .uri("/v1/orders")
            .header(header::ORIGIN, origin)
            .header(header::ACCESS_CONTROL_REQUEST_METHOD, "POST")
            .body(Body::empty())
            .expect("a request");
        let response = super::router(state(), 1024, cors_origins)
            .oneshot(request)
            .await
            .expect("an answer");
        response
            .headers()
            .get(header::ACCESS_CONTROL_ALLOW_ORIGIN)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    }

    #[tokio::test]
    async fn cors_is_off_unless_origins_are_configured_and_then_only_for_them() {
        assert_eq!(preflight(&[], "https://shop.example").await, None);
        let allowed = ["https://shop.example".to_owned()];
        assert_eq!(
            preflight(&allowed, "https://shop.example").await.as_deref(),
            Some("https://shop.example")
        );
        assert_eq!(preflight(&allowed, "https://evil.example").await, None);
    }

    #[tokio::test]
    async fn dev_routes_answer_404_when_dev_tokens_are_off() {
        let request = Request::builder()
            .method("POST")
            .uri("/v1/dev/token")
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from(r#"{"user_id":1}"#))
            .expect("a request");
        let response = super::router(state(), 1024, &[])
            .oneshot(request)
            .await
            .expect("an answer");
        assert_eq!(response.status(), axum::http::StatusCode::NOT_FOUND);
    }
}
