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
