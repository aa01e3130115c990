//! The one gRPC edge of both services: a service served with health and reflection, with
//! TCP_NODELAY, a span per call that continues the caller's trace, until shutdown; and
//! [`Traced`], the client side of that trace.
//!
//! Serving through `serve_with_incoming_shutdown` with a plain `TcpListenerStream` drops
//! tonic's default TCP_NODELAY; `TcpIncoming` with nodelay keeps it (small replies are not
//! held back by Nagle's algorithm waiting for a delayed ACK).
//!
//! A peer can go silent without a reset (a partition, a host that froze). Both sides of
//! every gRPC connection notice: HTTP/2 PINGs every [`HTTP2_KEEPALIVE_INTERVAL`]
//! (unanswered within [`HTTP2_KEEPALIVE_TIMEOUT`]: the connection is closed, its calls
//! fail, the next call reconnects) and TCP keepalive after [`TCP_KEEPALIVE`] idle. No
//! handler runs longer than [`HANDLER_WITHIN`] (a shorter `grpc-timeout` from the caller
//! wins; CreateOrder has its own, shorter budget).

use std::{
    convert::Infallible,
    task::{Context, Poll},
    time::Duration,
};

use tokio::net::TcpListener;
use tonic::{
    body::Body,
    codegen::http::{HeaderMap, HeaderName, HeaderValue, Request, Response},
    server::NamedService,
    transport::{Endpoint, server::TcpIncoming},
};
use tower_service::Service;

use crate::trace::Carrier;

/// An HTTP/2 PING goes out on every connection this often...
pub const HTTP2_KEEPALIVE_INTERVAL: Duration = Duration::from_secs(10);
/// ...and a connection whose PING is not answered this soon is closed.
pub const HTTP2_KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(5);
/// TCP keepalive probes start after this long without traffic.
pub const TCP_KEEPALIVE: Duration = Duration::from_secs(30);
/// The longest any handler runs, whatever the caller's deadline.
pub const HANDLER_WITHIN: Duration = Duration::from_secs(10);

/// A client endpoint with the keepalives above, TCP_NODELAY and a connect deadline.
pub fn endpoint(uri: &str, connect_within: Duration) -> Result<Endpoint, tonic::transport::Error> {
    Ok(Endpoint::from_shared(uri.to_owned())?
        .connect_timeout(connect_within)
        .tcp_nodelay(true)
        .tcp_keepalive(Some(TCP_KEEPALIVE))
        .http2_keep_alive_interval(HTTP2_KEEPALIVE_INTERVAL)
        .keep_alive_timeout(HTTP2_KEEPALIVE_TIMEOUT)
        .keep_alive_while_idle(true))
}

/// What [`serve`] serves: a tonic service (a generated `...Server`) that every connection
/// gets a clone of, named for health and reflection.
pub trait GrpcService:
    Service<Request<Body>, Response = Response<Body>, Error = Infallible, Future: Send + 'static>
    + NamedService
    + Clone
    + Send
    + Sync
    + 'static
{
}

impl<T> GrpcService for T where
    T: Service<
            Request<Body>,
            Response = Response<Body>,
            Error = Infallible,
            Future: Send + 'static,
        > + NamedService
        + Clone
        + Send
        + Sync
        + 'static
{
}

/// Serves `service` on `listener` until `shutdown` resolves, with gRPC health (SERVING,
/// then NOT_SERVING as soon as shutdown starts, while the server drains its calls) and
/// reflection in both protocol versions listing only `service`, health and reflection.
/// `descriptors` is the encoded file descriptor set that describes `service`.
pub async fn serve<S: GrpcService>(
    listener: TcpListener,
    service: S,
    descriptors: &'static [u8],
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    serve_with_internal(listener, service, None::<S>, descriptors, shutdown).await
}

/// Like [`serve`], with a second service on the same port for other services of the
/// system, not for the gateway (order_srv's `OrderReconcile`): it has its own health
/// status and is left out of reflection.
pub async fn serve_with_internal<S: GrpcService, I: GrpcService>(
    listener: TcpListener,
    service: S,
    internal: Option<I>,
    descriptors: &'static [u8],
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let (health, health_service) = tonic_health::server::health_reporter();
    health.set_serving::<S>().await;
    let has_internal = internal.is_some();
    if has_internal {
        health.set_serving::<I>().await;
    }
    let (reflection, reflection_v1alpha) = reflection(S::NAME, descriptors)?;
    let draining = async move {
        shutdown.await;
        health.set_not_serving::<S>().await;
        if has_internal {
            health.set_not_serving::<I>().await;
        }
        tracing::info!(
            service = S::NAME,
            "shutting down: NOT_SERVING, draining calls"
        );
    };
    tonic::transport::Server::builder()
        .timeout(HANDLER_WITHIN)
        .http2_keepalive_interval(Some(HTTP2_KEEPALIVE_INTERVAL))
        .http2_keepalive_timeout(Some(HTTP2_KEEPALIVE_TIMEOUT))
        .trace_fn(server_span)
        .add_service(health_service)
        .add_service(reflection)
        .add_service(reflection_v1alpha)
        .add_service(service)
        .add_optional_service(internal)
        .serve_with_incoming_shutdown(
            TcpIncoming::from(listener)
                .with_nodelay(Some(true))
                .with_keepalive(Some(TCP_KEEPALIVE)),
            draining,
        )
        .await?;
    Ok(())
}

/// The span of one incoming call: a child of the caller's span when the request carries
/// a W3C trace context (the gateway's, or order_srv's for a Sell), named after the method.
fn server_span(request: &Request<()>) -> tracing::Span {
    let span = tracing::info_span!(
        "grpc",
        otel.name = request.uri().path(),
        otel.kind = "server",
        trace_id = tracing::field::Empty,
    );
    Carrier::read(|field| header(request.headers(), field)).continue_in(&span);
    span
}

fn header(headers: &HeaderMap, name: &str) -> Option<String> {
    headers.get(name)?.to_str().ok().map(str::to_owned)
}

/// A gRPC client channel that sends the caller's trace context (W3C `traceparent`,
/// `tracestate`) with every request, so the server's span joins the caller's trace.
/// Wrap the channel once, where the client is built: every call through it is traced.
#[derive(Clone, Debug)]
pub struct Traced<S>(pub S);

impl<S, B> Service<Request<B>> for Traced<S>
where
    S: Service<Request<B>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.0.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request<B>) -> Self::Future {
        // Called from the caller's task, inside its span.
        for (name, value) in Carrier::of(&tracing::Span::current()).0 {
            if let (Ok(name), Ok(value)) = (
                HeaderName::from_bytes(name.as_bytes()),
                HeaderValue::from_str(&value),
            ) {
                request.headers_mut().insert(name, value);
            }
        }
        self.0.call(request)
    }
}

/// The reflection services of one gRPC service, in both protocol versions (`v1`, and
/// `v1alpha`, which many tools still speak), listing only what the port serves. Both
/// services' descriptors share one set, so without the list order_srv's port would also
/// advertise `inventory.v1.Inventory`.
#[allow(clippy::type_complexity)]
fn reflection(
    service: &str,
    descriptors: &'static [u8],
) -> Result<
    (
        tonic_reflection::server::v1::ServerReflectionServer<
            impl tonic_reflection::server::v1::ServerReflection,
        >,
        tonic_reflection::server::v1alpha::ServerReflectionServer<
            impl tonic_reflection::server::v1alpha::ServerReflection,
        >,
    ),
    tonic_reflection::server::Error,
> {
    let builder = || {
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(descriptors)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
            .with_service_name(service)
            .with_service_name("grpc.health.v1.Health")
    };
    Ok((
        builder()
            .with_service_name("grpc.reflection.v1.ServerReflection")
            .build_v1()?,
        builder()
            .with_service_name("grpc.reflection.v1alpha.ServerReflection")
            .build_v1alpha()?,
    ))
}
