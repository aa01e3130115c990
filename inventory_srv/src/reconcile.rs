//! The reconciler (DESIGN.md §13): the safety net for when the broker stops asking.
//!
//! The broker checks a half message back at most `transactionCheckMax` times and then
//! discards it. An order whose order_srv (or its database) was away for longer, caught
//! between Sell and COMMIT, would keep its deduction forever: no check-back, no reback.
//! The same goes for a reback that went to the dead-letter queue, and for a half message a
//! broker lost. So every `INVENTORY_RECONCILE_INTERVAL` this takes DEDUCTED details older
//! than `INVENTORY_RECONCILE_HORIZON` (longer than the broker's check window) and asks
//! order_srv, in batches, what became of their orders (`OrderReconcile.OrderOutcomes`,
//! answered from the order row, else by claiming the barrier 'aborted' as a check-back
//! does):
//! - never placed, or closed unpaid: the stock comes back through the reback's own
//!   idempotent path ([`stock::reback`]), so any number of replicas may reconcile at once
//!   and a reback message arriving too changes nothing;
//! - paid: the deduction is confirmed and never asked about again;
//! - unpaid: asked again once its pay timeout (or the sweep) has decided it;
//! - no answer (order_srv unreachable): left for the next round.

use std::{sync::Arc, time::Duration};

use observe::{IntCounter, Registry};
use proto::order::{
    self as pb, order_outcome::Outcome, order_reconcile_client::OrderReconcileClient,
};
use sqlx::MySqlPool;
use tonic::transport::Channel;

use crate::{db, domain::OrderSn, error::Result, stock};

/// The longest one reconciler round may take (each call to order_srv has its own
/// deadline; the rest waits for the next round).
const ROUND_WITHIN: Duration = Duration::from_secs(120);

/// The longest an unpaid order's deduction is left before it is asked about again.
const ASK_AGAIN_AT_MOST_SECS: u64 = 30 * 86_400;

/// What the reconciler did since start (`inventory_reconciled_total{result}`).
#[derive(Debug, Clone)]
pub struct ReconcileCounters {
    /// Details asked about.
    pub found: IntCounter,
    /// Stock given back (order never placed, or closed with its reback lost).
    pub returned: IntCounter,
    /// Deductions of paid orders, confirmed for good.
    pub confirmed: IntCounter,
    /// Unpaid orders, asked again later.
    pub deferred: IntCounter,
    /// No answer this round (order_srv unreachable, an error): asked again next round.
    pub undecided: IntCounter,
}

impl ReconcileCounters {
    pub fn register(registry: &Registry) -> Self {
        let results = observe::counter_vec(
            registry,
            "inventory_reconciled_total",
            "DEDUCTED details past the reconciler's horizon, by what became of them",
            &["result"],
        );
        Self {
            found: results.with_label_values(&["found"]),
            returned: results.with_label_values(&["returned"]),
            confirmed: results.with_label_values(&["confirmed"]),
            deferred: results.with_label_values(&["deferred"]),
            undecided: results.with_label_values(&["undecided"]),
        }
    }
}

impl Default for ReconcileCounters {
    fn default() -> Self {
        Self::register(&Registry::new())
    }
}

/// One round's tally.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Round {
    pub found: u64,
    pub returned: u64,
    pub confirmed: u64,
    pub deferred: u64,
    pub undecided: u64,
}

pub struct Reconciler {
    pub pool: MySqlPool,
    pub orders: OrderReconcileClient<Channel>,
    pub horizon: Duration,
    pub batch: u32,
    /// Deadline of one OrderOutcomes call.
    pub call_timeout: Duration,
    pub counters: Arc<ReconcileCounters>,
}

impl Reconciler {
    /// Works through every detail due now, batch by batch. Stops early (the rest waits for
    /// the next round) when order_srv does not answer.
    pub async fn round(&self) -> Result<Round> {
        let mut round = Round::default();
        loop {
            let mut conn = self.pool.acquire().await?;
            let candidates = db::reconcile_candidates(&mut conn, self.horizon, self.batch).await?;
            drop(conn);
            if candidates.is_empty() {
                return Ok(round);
            }
            let asked = candidates.len() as u64;
            round.found = round.found.saturating_add(asked);
            self.counters.found.inc_by(asked);
            let mut request = tonic::Request::new(pb::OrderOutcomesRequest {
                order_sns: candidates.clone(),
                horizon_seconds: self.horizon.as_secs(),
            });
            request.set_timeout(self.call_timeout);
            let outcomes = match self.orders.clone().order_outcomes(request).await {
                Ok(answer) => {
                    ORDER_SRV.answered();
                    answer.into_inner().outcomes
                }
                Err(status) => {
                    ORDER_SRV.failed(&format_args!("{:?}: {}", status.code(), status.message()));
                    tracing::info!(
                        code = ?status.code(),
                        message = status.message(),
                        undecided = asked,
                        "reconciler: order_srv did not answer; asking again next round"
                    );
                    round.undecided = round.undecided.saturating_add(asked);
                    self.counters.undecided.inc_by(asked);
                    return Ok(round);
                }
            };
            let mut progressed = false;
            for order_sn in &candidates {
                let answer = outcomes.iter().find(|o| &o.order_sn == order_sn);
                let settled = match answer {
                    Some(answer) => self.settle(order_sn, answer).await?,
                    None => None,
                };
                match settled {
                    Some(Settled::Returned) => {
                        round.returned = round.returned.saturating_add(1);
                        progressed = true;
                    }
                    Some(Settled::AlreadyReturned) => progressed = true,
                    Some(Settled::Confirmed) => {
                        round.confirmed = round.confirmed.saturating_add(1);
                        progressed = true;
                    }
                    Some(Settled::Deferred) => {
                        round.deferred = round.deferred.saturating_add(1);
                        progressed = true;
                    }
                    None => {
                        round.undecided = round.undecided.saturating_add(1);
                        self.counters.undecided.inc();
                    }
                }
            }
            // A batch with nothing settled would come back unchanged: next round.
            if !progressed || candidates.len() < self.batch as usize {
                return Ok(round);
            }
        }
    }

    async fn settle(&self, order_sn: &str, answer: &pb::OrderOutcome) -> Result<Option<Settled>> {
        let outcome = Outcome::try_from(answer.outcome).unwrap_or(Outcome::Unspecified);
        match outcome {
            Outcome::NeverPlaced | Outcome::Closed => {
                let sn = OrderSn::parse(order_sn)?;
                let why = if outcome == Outcome::NeverPlaced {
                    "its order was never placed (the broker stopped asking)"
                } else {
                    "its order is closed and its reback never came"
                };
                match stock::reback(&self.pool, &sn).await? {
                    stock::RebackOutcome::Returned => {
                        self.counters.returned.inc();
                        // The round's WARN counts them; each one is here.
                        tracing::info!(order_sn, why, "reconciler: stock returned");
                        Ok(Some(Settled::Returned))
                    }
                    // A reback message or another replica was first: nothing to do.
                    stock::RebackOutcome::AlreadyReturned | stock::RebackOutcome::Tombstoned => {
                        Ok(Some(Settled::AlreadyReturned))
                    }
                }
            }
            Outcome::Paid => {
                db::confirm_deduction(&mut *self.pool.acquire().await?, order_sn).await?;
                self.counters.confirmed.inc();
                Ok(Some(Settled::Confirmed))
            }
            Outcome::Unpaid => {
                // From the network: kept between a minute and 30 days, so a wild answer can
                // neither spin nor overflow the database's date arithmetic.
                let after = Duration::from_secs(
                    answer
                        .ask_again_after_seconds
                        .clamp(60, ASK_AGAIN_AT_MOST_SECS),
                );
                db::defer_deduction(&mut *self.pool.acquire().await?, order_sn, after).await?;
                self.counters.deferred.inc();
                Ok(Some(Settled::Deferred))
            }
            Outcome::Unspecified => Ok(None),
        }
    }
}

enum Settled {
    Returned,
    AlreadyReturned,
    Confirmed,
    Deferred,
}

/// order_srv as the reconciler sees it: one WARN when its OrderOutcomes stops being
/// answered, one INFO when it is answered again.
static ORDER_SRV: observe::outage::Outage = observe::outage::Outage::new("order_srv");

/// Runs a round every `every` (the first one interval after start) until `stop`.
pub fn spawn(
    reconciler: Reconciler,
    every: Duration,
    stop: tokio::sync::watch::Receiver<bool>,
) -> tokio::task::JoinHandle<()> {
    let reconciler = Arc::new(reconciler);
    service_db::spawn_periodic("reconciler", every, ROUND_WITHIN, stop, move || {
        let reconciler = reconciler.clone();
        async move {
            match reconciler.round().await {
                Ok(round) if round.returned > 0 => {
                    tracing::warn!(
                        returned = round.returned,
                        ?round,
                        "reconciler returned the stock of orders nothing else would have \
                         (the broker had stopped asking, or their reback was dead-lettered)"
                    );
                }
                Ok(round) if round.undecided > 0 => {
                    tracing::info!(?round, "reconciler round");
                }
                Ok(_) => {}
                Err(crate::error::Error::Database(e)) if service_db::is_unreachable(&e) => {
                    service_db::MYSQL.failed(&e);
                }
                Err(e) => tracing::warn!(error = %e, "reconciler round failed; will retry"),
            }
        }
    })
}
