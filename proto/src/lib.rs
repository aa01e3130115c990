//! gRPC contracts of the two services: `inventory.v1` and `order.v1`.
//!
//! The generated code lives here so both services, the devstack tools and the tests
//! speak exactly the same types.

/// Stock keeping: `Sell`, `Reback`, and admin calls.
pub mod inventory {
    tonic::include_proto!("inventory.v1");
}

/// Cart, orders and payment status.
pub mod order {
    tonic::include_proto!("order.v1");
}

/// Encoded descriptors of both packages, for tonic-reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("shop_descriptor");

/// The reflection services of one gRPC service, in both protocol versions (`v1`, and
/// `v1alpha`, which many tools still speak), listing only what that port serves: the
/// service itself, health and reflection. Both services' descriptors share one set, so
/// without the list order_srv's port would also advertise `inventory.v1.Inventory`.
pub fn reflection(
    service: &str,
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
            .register_encoded_file_descriptor_set(FILE_DESCRIPTOR_SET)
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
