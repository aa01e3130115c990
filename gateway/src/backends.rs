//! The gRPC clients of order_srv and inventory_srv. Every call carries the caller's trace
//! context ([`observe::grpc::Traced`]) and a deadline ([`within`]) that travels as
//! `grpc-timeout`, so the service stops working for a caller that gave up; tonic also
//! enforces it on this side. A caller that hangs up drops its handler, and with it the
//! call: the stream is reset and the service sees it cancelled.

use std::time::Duration;

use observe::grpc::Traced;
use proto::{inventory::inventory_client::InventoryClient, order::order_client::OrderClient};
use tonic::transport::Channel;
use tonic_health::pb::health_client::HealthClient;

/// How long connecting to a service may take.
pub const CONNECT_WITHIN: Duration = Duration::from_secs(2);

#[derive(Clone)]
pub struct Backends {
    pub order: OrderClient<Traced<Channel>>,
    pub inventory: InventoryClient<Traced<Channel>>,
    pub order_health: HealthClient<Channel>,
}

impl Backends {
    /// Clients that connect on first use: the gateway starts before (or without) the
    /// services and answers 503 until they are there.
    pub fn connect_lazy(order: &str, inventory: &str) -> anyhow::Result<Self> {
        use anyhow::Context as _;
        let order_channel = observe::grpc::endpoint(order, CONNECT_WITHIN)
            .with_context(|| format!("ORDER_ENDPOINT: {order}"))?
            .connect_lazy();
        let inventory_channel = observe::grpc::endpoint(inventory, CONNECT_WITHIN)
            .with_context(|| format!("INVENTORY_ENDPOINT: {inventory}"))?
            .connect_lazy();
        Ok(Self {
            order: OrderClient::new(Traced(order_channel.clone())),
            inventory: InventoryClient::new(Traced(inventory_channel)),
            order_health: HealthClient::new(order_channel),
        })
    }
}

/// `message` as a request that must be answered within `budget`.
pub fn within<T>(message: T, budget: Duration) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request.set_timeout(budget);
    request
}
