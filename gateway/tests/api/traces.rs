//! One trace from the browser's `traceparent` through the gateway and order_srv to
//! inventory's Sell (spans captured in memory, `testkit::spans`).

use opentelemetry::trace::SpanKind;
use opentelemetry_sdk::trace::SpanData;
use reqwest::{Method, StatusCode};
use serde_json::json;
use sqlx::mysql::{MySqlConnectOptions, MySqlPoolOptions};
use testkit::{
    PATIENCE, eventually,
    spans::{self, ancestors},
};

use crate::helpers::{send, shop_with_cart};

fn named<'a>(spans: &'a [SpanData], name: &str) -> Option<&'a SpanData> {
    spans.iter().find(|span| span.name == name)
}

#[sqlx::test(migrations = false)]
async fn one_trace_runs_from_the_http_request_to_inventorys_sell(
    _: MySqlPoolOptions,
    db: MySqlConnectOptions,
) {
    let shop = shop_with_cart(db, 12, 100, 10, 1).await;
    assert!(
        spans::capture(),
        "the span capture is this binary's subscriber"
    );
    let (traceparent, trace, browser_span) = spans::new_traceparent();

    let placed = send(
        shop.as_user(12, Method::POST, "/v1/orders")
            .await
            .header("traceparent", traceparent)
            .json(&json!({ "address": "1 Main St", "name": "Ada", "mobile": "555-0100" })),
    )
    .await;
    assert_eq!(placed.status, StatusCode::CREATED, "{placed:?}");

    let spans = eventually(PATIENCE, "the gateway's and inventory's spans", || {
        let spans = spans::of_trace(trace);
        let done = named(&spans, "POST /v1/orders").is_some()
            && named(&spans, "/inventory.v1.Inventory/Sell").is_some();
        async move { done.then_some(spans) }
    })
    .await;
    let http = named(&spans, "POST /v1/orders").expect("waited for");
    assert_eq!(http.span_kind, SpanKind::Server);
    assert_eq!(
        http.parent_span_id, browser_span,
        "the gateway continues the browser's span"
    );
    assert!(http.parent_span_is_remote);

    let sell = named(&spans, "/inventory.v1.Inventory/Sell").expect("waited for");
    let (chain, root) = ancestors(&spans, sell);
    let chain: Vec<String> = chain.iter().map(|s| s.name.to_string()).collect();
    assert_eq!(root, browser_span, "{chain:?}");
    for hop in ["/order.v1.Order/CreateOrder", "POST /v1/orders"] {
        assert!(
            chain.iter().any(|name| name == hop),
            "{hop} not in {chain:?}"
        );
    }
    shop.stop().await;
}
