//! order_srv's way to inventory_srv: one gRPC channel over every serving replica.
//!
//! `INVENTORY_ENDPOINT` names the replicas: a comma-separated list
//! (`http://inv-1:50052,http://inv-2:50052`), a name that resolves to several addresses
//! (a Kubernetes headless service, `docker compose --scale inventory_srv=3`), or both.
//! A discovery task resolves the names, asks every address's gRPC health service whether
//! `inventory.v1.Inventory` is SERVING, and keeps tonic's balanced channel (power of two
//! choices over the least loaded, `Channel::balance_channel`) to exactly the serving
//! addresses, once per `probe_every`.
//!
//! Why not `Channel::balance_list`: it connects lazily and never forgets an endpoint, so
//! a replica that is gone stays in the balancer and fails every call sent its way (and,
//! failing fast, looks least loaded). Here a replica that stops serving (killed, or
//! NOT_SERVING while it drains on SIGTERM) leaves the balancer within one probe interval;
//! only the Sells already on their way to it fail, and those follow the unknown-outcome
//! rule like any other (the half message returns whatever they may have deducted).

use std::{
    collections::{BTreeMap, BTreeSet},
    net::SocketAddr,
    time::Duration,
};

use anyhow::{Context, bail};
use observe::{IntGauge, grpc::Traced};
use proto::inventory::{self as inv, inventory_client::InventoryClient};
use tokio::sync::mpsc::Sender;
use tonic::transport::{Channel, Endpoint, channel::Change};
use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};

use crate::{db::OrderGoodsRow, error::is_definitive_refusal};

/// The gRPC service a replica must report SERVING to receive Sells.
const SERVICE: &str = "inventory.v1.Inventory";

/// inventory_srv as order_srv sees it: one WARN when Sell stops being answered, one INFO
/// when it is answered again.
pub static INVENTORY: observe::outage::Outage = observe::outage::Outage::new("inventory_srv");

/// Inventory's Sell as CreateOrder calls it (step 4.3).
#[derive(Clone)]
pub struct Inventory {
    /// Every Sell carries the order's trace context (see `observe::grpc::Traced`).
    pub client: InventoryClient<Traced<Channel>>,
    /// Past it the Sell's outcome counts as unknown.
    pub sell_timeout: Duration,
}

impl Inventory {
    /// `Sell(order_sn, items)` within the Sell timeout; past it DEADLINE_EXCEEDED (the
    /// outcome unknown). An answer, or a definitive refusal, counts as inventory being
    /// there ([`INVENTORY`]); the caller says when it is not.
    #[tracing::instrument(skip_all, fields(otel.name = "Sell", otel.kind = "client"))]
    pub async fn sell(
        &self,
        order_sn: &str,
        items: Vec<inv::GoodsNum>,
    ) -> Result<(), tonic::Status> {
        let mut request = tonic::Request::new(inv::SellRequest {
            order_sn: order_sn.to_owned(),
            items,
        });
        request.set_timeout(self.sell_timeout);
        let mut client = self.client.clone();
        match tokio::time::timeout(self.sell_timeout, client.sell(request)).await {
            Ok(Ok(_)) => {
                INVENTORY.answered();
                Ok(())
            }
            Ok(Err(status)) => {
                if is_definitive_refusal(&status) {
                    INVENTORY.answered();
                }
                Err(status)
            }
            Err(_) => Err(tonic::Status::deadline_exceeded("Sell deadline passed")),
        }
    }
}

/// What Sell deducts for these claimed lines: each goods and its quantity.
pub fn sell_items(lines: &[OrderGoodsRow]) -> Vec<inv::GoodsNum> {
    lines
        .iter()
        .map(|l| inv::GoodsNum {
            goods_id: l.goods_id,
            num: l.nums,
        })
        .collect()
}

/// How replicas are found and checked.
#[derive(Clone, Debug)]
pub struct Discovery {
    /// `host:port` of every configured entry (a name may stand for several replicas).
    targets: Vec<String>,
    pub connect_timeout: Duration,
    pub probe_every: Duration,
}

impl Discovery {
    /// Parses `INVENTORY_ENDPOINT`: comma-separated `http://host:port` entries.
    pub fn parse(
        spec: &str,
        connect_timeout: Duration,
        probe_every: Duration,
    ) -> anyhow::Result<Self> {
        let mut targets = Vec::new();
        for entry in spec.split(',').map(str::trim).filter(|e| !e.is_empty()) {
            let uri: tonic::codegen::http::Uri = entry
                .parse()
                .with_context(|| format!("INVENTORY_ENDPOINT: {entry:?} is not a URI"))?;
            if uri.scheme_str() != Some("http") {
                bail!("INVENTORY_ENDPOINT: {entry:?} must start with http:// (plaintext gRPC)");
            }
            let (Some(host), Some(port)) = (uri.host(), uri.port_u16()) else {
                bail!("INVENTORY_ENDPOINT: {entry:?} needs a host and a port");
            };
            targets.push(format!("{host}:{port}"));
        }
        if targets.is_empty() {
            bail!("INVENTORY_ENDPOINT is empty");
        }
        Ok(Self {
            targets,
            connect_timeout,
            probe_every,
        })
    }

    /// The balanced channel, and the discovery task that keeps it to the serving
    /// replicas (it ends when the channel is dropped). The first round runs before this
    /// returns, so a replica that is already up receives the first Sell; none being up
    /// is not an error (Sells wait for one, up to their deadline). `balanced` shows how
    /// many replicas the channel spreads over.
    pub async fn start(self, balanced: IntGauge) -> (Channel, tokio::task::JoinHandle<()>) {
        let (channel, changes) = Channel::balance_channel::<SocketAddr>(64);
        let mut replicas = Replicas {
            health: BTreeMap::new(),
            balanced: BTreeSet::new(),
            gauge: balanced,
        };
        replicas.round(&self, &changes).await;
        let task = tokio::spawn(async move {
            loop {
                tokio::time::sleep(self.probe_every).await;
                if !replicas.round(&self, &changes).await {
                    return;
                }
            }
        });
        (channel, task)
    }

    /// The endpoint of one replica (a socket address always makes a valid URI).
    fn endpoint(&self, addr: SocketAddr) -> Option<Endpoint> {
        observe::grpc::endpoint(&format!("http://{addr}"), self.connect_timeout).ok()
    }
}

/// What the discovery task knows: the health client of every address it has seen, and
/// which addresses are in the balancer.
struct Replicas {
    health: BTreeMap<SocketAddr, HealthClient<Channel>>,
    balanced: BTreeSet<SocketAddr>,
    gauge: IntGauge,
}

impl Replicas {
    /// One round: resolve, probe, update the balancer. `false` once the channel is gone.
    async fn round(
        &mut self,
        discovery: &Discovery,
        changes: &Sender<Change<SocketAddr, Endpoint>>,
    ) -> bool {
        let mut resolved = BTreeSet::new();
        for target in &discovery.targets {
            match tokio::net::lookup_host(target.as_str()).await {
                Ok(addrs) => resolved.extend(addrs),
                // A name that does not resolve right now (its replicas are all gone, DNS
                // hiccup) contributes nothing this round.
                Err(e) => {
                    tracing::debug!(target, error = %e, "inventory replica name did not resolve")
                }
            }
        }
        self.health.retain(|addr, _| resolved.contains(addr));
        let deadline = discovery.probe_every.max(Duration::from_millis(200));
        let mut probes = Vec::new();
        for (addr, endpoint) in resolved
            .iter()
            .filter_map(|addr| Some((*addr, discovery.endpoint(*addr)?)))
        {
            let client = self
                .health
                .entry(addr)
                .or_insert_with(|| HealthClient::new(endpoint.connect_lazy()))
                .clone();
            probes.push(async move { (addr, endpoint, serving(client, deadline).await) });
        }
        for (addr, endpoint, is_serving) in futures::future::join_all(probes).await {
            let change = match (is_serving, self.balanced.contains(&addr)) {
                (true, false) => {
                    tracing::info!(%addr, "inventory replica serving: added");
                    self.balanced.insert(addr);
                    Change::Insert(addr, endpoint)
                }
                (false, true) => {
                    tracing::warn!(%addr, "inventory replica not serving: removed");
                    self.balanced.remove(&addr);
                    Change::Remove(addr)
                }
                _ => continue,
            };
            if changes.send(change).await.is_err() {
                return false;
            }
        }
        let gone: Vec<SocketAddr> = self.balanced.difference(&resolved).copied().collect();
        for addr in gone {
            tracing::info!(%addr, "inventory replica no longer resolved: removed");
            self.balanced.remove(&addr);
            if changes.send(Change::Remove(addr)).await.is_err() {
                return false;
            }
        }
        self.gauge
            .set(i64::try_from(self.balanced.len()).unwrap_or(i64::MAX));
        true
    }
}

/// Whether the replica answers its health check with SERVING within `deadline`.
async fn serving(mut client: HealthClient<Channel>, deadline: Duration) -> bool {
    let mut request = tonic::Request::new(HealthCheckRequest {
        service: SERVICE.to_owned(),
    });
    request.set_timeout(deadline);
    matches!(
        tokio::time::timeout(deadline, client.check(request)).await,
        Ok(Ok(response)) if response.get_ref().status == ServingStatus::Serving as i32
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(spec: &str) -> anyhow::Result<Discovery> {
        Discovery::parse(spec, Duration::from_secs(1), Duration::from_secs(1))
    }

    #[test]
    fn a_list_of_replicas_and_names_parses() {
        let discovery = parse("http://10.0.0.1:50052, http://inventory_srv:50052").expect("valid");
        assert_eq!(discovery.targets, ["10.0.0.1:50052", "inventory_srv:50052"]);
    }

    #[test]
    fn malformed_entries_are_refused_with_the_variable_named() {
        for spec in [
            "",
            " , ",
            "inventory:50052",
            "https://a:1",
            "http://a",
            "http://a:x",
        ] {
            let error = parse(spec).err().map(|e| format!("{e:#}"));
            assert!(
                error
                    .as_deref()
                    .is_some_and(|e| e.contains("INVENTORY_ENDPOINT")),
                "{spec:?}: {error:?}"
            );
        }
    }
}
