//! One trace per order (OpenTelemetry): the gateway's trace context reaches inventory's
//! Sell through order_srv, and the pay-timeout and reback consumers later continue the
//! same trace through the messages' properties. The spans are captured in memory
//! (`testkit::spans`); both services run in this process, so only what crosses gRPC
//! metadata and message properties joins them.

use std::time::Duration;

use opentelemetry::trace::{SpanKind, TraceId};
use opentelemetry_sdk::trace::SpanData;
use sqlx::mysql::{MySqlConnectOptions, MySqlPoolOptions};
use testkit::{
    PATIENCE, eventually,
    spans::{self, ancestors},
};
use tonic::metadata::MetadataValue;

use crate::helpers::{create_order_request, order_config, spawn_stack_with};

/// A CreateOrder as a gateway sends it, inside the gateway's span `traceparent`.
fn traced_request(
    user_id: i64,
    traceparent: &str,
) -> tonic::Request<proto::order::CreateOrderRequest> {
    let mut request = tonic::Request::new(create_order_request(user_id));
    request.metadata_mut().insert(
        "traceparent",
        MetadataValue::try_from(traceparent).expect("a traceparent is ASCII"),
    );
    request
}

fn named<'a>(spans: &'a [SpanData], name: &str) -> Option<&'a SpanData> {
    spans.iter().find(|span| span.name == name)
}

/// Waits until every span in `names` of `trace` has finished, and returns the trace.
async fn trace_with(trace: TraceId, names: &[&str]) -> Vec<SpanData> {
    eventually(
        PATIENCE,
        &format!("spans {names:?} in trace {trace}"),
        || {
            let spans = spans::of_trace(trace);
            let all = names.iter().all(|name| named(&spans, name).is_some());
            async move { all.then_some(spans) }
        },
    )
    .await
}

fn names(chain: &[&SpanData]) -> Vec<String> {
    chain.iter().map(|span| span.name.to_string()).collect()
}

#[sqlx::test(migrations = false)]
async fn one_trace_runs_from_the_gateway_through_the_sell_in_inventory(
    _: MySqlPoolOptions,
    db: MySqlConnectOptions,
) {
    assert!(
        spans::capture(),
        "the span capture must be this binary's subscriber"
    );
    let stack = spawn_stack_with(db, order_config()).await;
    stack.goods(1, 500, 10).await;
    stack.add_to_cart(7, 1, 2).await;
    let (traceparent, trace, gateway_span) = spans::new_traceparent();

    stack
        .order
        .clone()
        .create_order(traced_request(7, &traceparent))
        .await
        .expect("the order is created");

    let spans = trace_with(
        trace,
        &[
            "/order.v1.Order/CreateOrder",
            "/inventory.v1.Inventory/Sell",
            "local_transaction",
            "send_pay_timeout",
        ],
    )
    .await;
    let create = named(&spans, "/order.v1.Order/CreateOrder").expect("waited for");
    assert_eq!(create.span_kind, SpanKind::Server);
    assert_eq!(
        create.parent_span_id, gateway_span,
        "CreateOrder continues the gateway's span"
    );
    assert!(create.parent_span_is_remote);

    // inventory's server span hangs under order_srv's Sell call, under the local
    // transaction, under CreateOrder, under the gateway.
    let sell = named(&spans, "/inventory.v1.Inventory/Sell").expect("waited for");
    assert_eq!(sell.span_kind, SpanKind::Server);
    assert!(sell.parent_span_is_remote, "Sell's parent is across gRPC");
    let (chain, root) = ancestors(&spans, sell);
    let chain = names(&chain);
    assert_eq!(root, gateway_span, "{chain:?}");
    for step in [
        "Sell",
        "local_transaction",
        "place",
        "/order.v1.Order/CreateOrder",
    ] {
        assert!(
            chain.iter().any(|name| name == step),
            "{step} not in {chain:?}"
        );
    }
    assert_eq!(
        named(&spans, "Sell").map(|s| s.span_kind.clone()),
        Some(SpanKind::Client)
    );
    // The pay-timeout goes out with the half message: beside the local transaction,
    // under the call's `place`.
    let (chain, root) = ancestors(
        &spans,
        named(&spans, "send_pay_timeout").expect("waited for"),
    );
    assert_eq!(root, gateway_span, "{:?}", names(&chain));
    let chain = names(&chain);
    assert!(chain.iter().any(|name| name == "place"), "{chain:?}");
    assert!(
        !chain.iter().any(|name| name == "local_transaction"),
        "{chain:?}"
    );
    stack.stop().await;
}

#[sqlx::test(migrations = false)]
async fn the_pay_timeout_and_the_reback_continue_the_orders_trace(
    _: MySqlPoolOptions,
    db: MySqlConnectOptions,
) {
    assert!(
        spans::capture(),
        "the span capture must be this binary's subscriber"
    );
    let mut config = order_config();
    config.pay_timeout = Duration::from_secs(1);
    let stack = spawn_stack_with(db, config.clone()).await;
    stack.goods(1, 500, 10).await;
    stack.add_to_cart(8, 1, 3).await;
    let (traceparent, trace, gateway_span) = spans::new_traceparent();

    let order = stack
        .order
        .clone()
        .create_order(traced_request(8, &traceparent))
        .await
        .expect("the order is created")
        .into_inner();
    // Unpaid: the pay timeout closes it and inventory takes the stock back.
    eventually(PATIENCE, "the stock to come back", || async {
        (stack.stock(1).await == 10).then_some(())
    })
    .await;
    assert_eq!(
        stack.order_status(&order.order_sn).await.as_deref(),
        Some("TRADE_CLOSED")
    );

    let timeout_process = format!("{} process", config.timeout_topic);
    let reback_process = format!("{} process", config.reback_topic);
    let spans = trace_with(trace, &[&timeout_process, &reback_process]).await;

    let consumed = named(&spans, &timeout_process).expect("waited for");
    assert_eq!(consumed.span_kind, SpanKind::Consumer);
    let (chain, root) = ancestors(&spans, consumed);
    let chain = names(&chain);
    assert_eq!(root, gateway_span, "{chain:?}");
    assert!(
        chain.iter().any(|name| name == "send_pay_timeout"),
        "the pay-timeout consumer continues the span that sent it: {chain:?}"
    );

    let returned = named(&spans, &reback_process).expect("waited for");
    assert_eq!(returned.span_kind, SpanKind::Consumer);
    let (chain, root) = ancestors(&spans, returned);
    let chain = names(&chain);
    assert_eq!(root, gateway_span, "{chain:?}");
    assert!(
        chain.contains(&timeout_process),
        "inventory's reback continues the pay timeout that sent it: {chain:?}"
    );
    stack.stop().await;
}
