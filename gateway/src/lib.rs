//! The web gateway: HTTP/JSON in front of order_srv and inventory_srv.
//!
//! - [`auth`]: the buyer comes from the bearer token only; [`limit`]: per-user rate limit.
//! - [`routes`]: goods, cart, orders, the payment callback, dev routes, the demo page and
//!   `/openapi.json`; [`extract`]: axum's extractors rejecting as problem+json.
//! - [`problem`]: gRPC status → HTTP status + RFC 9457 problem+json, `Retry-After`.
//! - [`backends`]: the gRPC clients, every call with a deadline and the trace context.
//! - [`startup`]: bind, serve with header/body deadlines, drain; one span per request.

pub mod auth;
pub mod backends;
pub mod config;
pub mod extract;
pub mod limit;
pub mod problem;
pub mod routes;
pub mod startup;
