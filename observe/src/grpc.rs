//! The one gRPC edge of both services: a service served with health and reflection, with
//! TCP_NODELAY, until shutdown.
//!
//! Serving through `serve_with_incoming_shutdown` with a plain `TcpListenerStream` drops
//! tonic's default TCP_NODELAY; `TcpIncoming` with nodelay keeps it (small replies are not
//! held back by Nagle's algorithm waiting for a delayed ACK).

use std::convert::Infallible;

use tokio::net::TcpListener;
use tonic::{
    body::Body,
    codegen::http::{Request, Response},
    server::NamedService,
    transport::server::TcpIncoming,
};
use tower_service::Service;

/// Serves `service` on `listener` until `shutdown` resolves, with gRPC health (SERVING,
/// then NOT_SERVING as soon as shutdown starts, while the server drains its calls) and
/// reflection in both protocol versions listing only `service`, health and reflection.
/// `descriptors` is the encoded file descriptor set that describes `service`.
pub async fn serve<S>(
    listener: TcpListener,
    service: S,
    descriptors: &'static [u8],
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()>
where
    S: Service<Request<Body>, Response = Response<Body>, Error = Infallible>
        + NamedService
        + Clone
        + Send
        + Sync
        + 'static,
    S::Future: Send + 'static,
{
    let (health, health_service) = tonic_health::server::health_reporter();
    health.set_serving::<S>().await;
    let (reflection, reflection_v1alpha) = reflection(S::NAME, descriptors)?;
    let draining = async move {
        shutdown.await;
        health.set_not_serving::<S>().await;
        tracing::info!(
            service = S::NAME,
            "shutting down: NOT_SERVING, draining calls"
        );
    };
    tonic::transport::Server::builder()
        .add_service(health_service)
        .add_service(reflection)
        .add_service(reflection_v1alpha)
        .add_service(service)
        .serve_with_incoming_shutdown(
            TcpIncoming::from(listener).with_nodelay(Some(true)),
            draining,
        )
        .await?;
    Ok(())
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
