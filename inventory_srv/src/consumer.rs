//! The `order_reback` consumer: "give this order's stock back", exactly once in effect.
//!
//! It runs the same code as the `Reback` RPC ([`stock::reback`]): a redelivered or
//! concurrently delivered message finds the detail RETURNED and does nothing; a reback
//! that overtakes its Sell leaves a tombstone that refuses the late Sell. A database
//! error asks for redelivery. A body that is not `{"order_sn": ...}` with a valid
//! order_sn can never succeed: it is recorded in `dead_message` and acknowledged.

use std::sync::Arc;

use observe::{Histogram, IntCounter, Registry};

use mq::{Delivery, Handler, OrderSnBody, Outcome};
use sqlx::MySqlPool;

use crate::{domain::OrderSn, error::Error, faults, stock};

/// What the consumer has done since start: Prometheus counters (`/metrics`), also read
/// by tests.
#[derive(Debug, Clone)]
pub struct RebackCounters {
    pub returned: IntCounter,
    pub already_returned: IntCounter,
    pub tombstoned: IntCounter,
    /// Deliveries that asked for redelivery (a transient failure).
    pub retried: IntCounter,
    /// Messages recorded in `dead_message` (the service's dead letters).
    pub dead: IntCounter,
    /// How long handling one delivery took (`inventory_reback_seconds`).
    pub handled_seconds: Histogram,
}

impl RebackCounters {
    pub fn register(registry: &Registry) -> Self {
        let rebacks = observe::counter_vec(
            registry,
            "inventory_rebacks_total",
            "order_reback messages applied, by outcome",
            &["outcome"],
        );
        Self {
            returned: rebacks.with_label_values(&["returned"]),
            already_returned: rebacks.with_label_values(&["already_returned"]),
            tombstoned: rebacks.with_label_values(&["tombstoned"]),
            retried: observe::counter_vec(
                registry,
                "inventory_reback_retries_total",
                "order_reback deliveries that asked for redelivery",
                &[],
            )
            .with_label_values(&[] as &[&str]),
            dead: observe::counter_vec(
                registry,
                "inventory_dead_messages_total",
                "malformed messages recorded in dead_message",
                &[],
            )
            .with_label_values(&[] as &[&str]),
            handled_seconds: observe::latency_vec(
                registry,
                "inventory_reback_seconds",
                "latency of handling one order_reback delivery",
                &[],
            )
            .with_label_values(&[] as &[&str]),
        }
    }
}

impl Default for RebackCounters {
    /// Counters in a registry of their own (a consumer nobody scrapes).
    fn default() -> Self {
        Self::register(&Registry::new())
    }
}

/// The `order_reback` handler.
pub struct RebackHandler {
    pub pool: MySqlPool,
    pub counters: Arc<RebackCounters>,
}

impl Handler for RebackHandler {
    async fn handle(&self, delivery: &Delivery) -> Outcome {
        let started = std::time::Instant::now();
        let outcome = self.apply(delivery).await;
        self.counters
            .handled_seconds
            .observe(started.elapsed().as_secs_f64());
        outcome
    }

    async fn bury(&self, delivery: &Delivery, reason: &str) -> Result<(), String> {
        service_db::bury(&self.pool, delivery, reason).await?;
        self.counters.dead.inc();
        Ok(())
    }
}

impl RebackHandler {
    #[tracing::instrument(skip_all, fields(order_sn))]
    async fn apply(&self, delivery: &Delivery) -> Outcome {
        let order_sn = match OrderSnBody::parse(Some(&delivery.body)) {
            Some(parsed) => OrderSn::parse(&parsed.order_sn).map_err(|e| e.to_string()),
            None => Err("body is not {\"order_sn\": \"...\"}".to_owned()),
        };
        let order_sn = match order_sn {
            Ok(order_sn) => order_sn,
            Err(reason) => return Outcome::Dead(reason),
        };
        tracing::Span::current().record("order_sn", order_sn.to_string());
        let outcome = if faults::triggered("inventory.before_reback", &order_sn.to_string()) {
            Err(Error::Injected("before_reback"))
        } else {
            stock::reback(&self.pool, &order_sn).await
        };
        match outcome {
            Ok(outcome) => {
                let counter = match outcome {
                    stock::RebackOutcome::Returned => &self.counters.returned,
                    stock::RebackOutcome::AlreadyReturned => &self.counters.already_returned,
                    stock::RebackOutcome::Tombstoned => &self.counters.tombstoned,
                };
                counter.inc();
                tracing::info!(
                    ?outcome,
                    reconsume_times = delivery.reconsume_times,
                    "reback consumed"
                );
                Outcome::Done
            }
            Err(e) => {
                self.counters.retried.inc();
                Outcome::Retry(format!("reback failed: {e}"))
            }
        }
    }
}
