//! The order side of the reconciler (DESIGN.md §13): `OrderReconcile.OrderOutcomes`, asked
//! by inventory_srv about deductions it has held longer than its horizon, when the
//! broker may have stopped checking back (`transactionCheckMax`) or a reback may have gone
//! to the dead-letter queue.
//!
//! The answer comes from the order row first, so a committed order whose barrier row was
//! purged never reads as absent (order rows are never deleted). Without an order row the
//! barrier is claimed as the check-back claims it: a local transaction still holding its
//! barrier insert is waited for; otherwise the barrier now says 'aborted', that order can
//! never be written, and its stock may come back.

use std::time::Duration;

use chrono::Utc;
use proto::order::{self as pb, order_outcome::Outcome, order_reconcile_server::OrderReconcile};
use sqlx::MySqlPool;
use tonic::{Request, Response, Status};

use crate::{
    create_order::check_back::claim_barrier,
    db::{self, BarrierOutcome, OrderRow},
    domain::{self, OrderStatus},
    error::{Error, Reason, Result},
};

/// Most order numbers one call may ask about.
pub const MAX_BATCH: usize = 500;

/// Bounds of the "ask again after" of an unpaid order.
const ASK_AGAIN_AT_LEAST: Duration = Duration::from_secs(60);
const ASK_AGAIN_AT_MOST: Duration = Duration::from_secs(30 * 86_400);

/// What became of one order, as the reconciler needs it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fate {
    /// Never placed, and (its barrier claimed 'aborted') never will be.
    NeverPlaced,
    /// Placed, not paid yet: ask again after this long.
    Unpaid(Duration),
    Paid,
    Closed,
}

/// Answers `OrderOutcomes`.
pub struct ReconcileService {
    pool: MySqlPool,
    pay_timeout: Duration,
    /// How long after its pay timeout an unpaid order is closed by the sweep.
    overdue_grace: Duration,
    barrier_retention: Duration,
}

impl ReconcileService {
    pub fn new(
        pool: MySqlPool,
        pay_timeout: Duration,
        overdue_grace: Duration,
        barrier_retention: Duration,
    ) -> Self {
        Self {
            pool,
            pay_timeout,
            overdue_grace,
            barrier_retention,
        }
    }

    /// The fate of one order (see the module's doc for the order of the reads).
    pub async fn fate(&self, order_sn: &str) -> Result<Fate> {
        let mut conn = self.pool.acquire().await?;
        if let Some(order) = db::order_by_sn(&mut conn, order_sn).await? {
            return Ok(self.fate_of(&order));
        }
        match claim_barrier(&mut conn, order_sn).await? {
            Some(BarrierOutcome::Committed) => {
                // It committed while we looked: its row is there now.
                let order = db::order_by_sn(&mut conn, order_sn).await?.ok_or_else(|| {
                    Error::Internal(format!("order {order_sn} committed without its order row"))
                })?;
                Ok(self.fate_of(&order))
            }
            Some(BarrierOutcome::Aborted) => Ok(Fate::NeverPlaced),
            None => Err(Error::Internal(format!(
                "no barrier for {order_sn} right after claiming it"
            ))),
        }
    }

    fn fate_of(&self, order: &OrderRow) -> Fate {
        match order.status {
            OrderStatus::TradeClosed => Fate::Closed,
            OrderStatus::TradeSuccess | OrderStatus::TradeFinished => Fate::Paid,
            OrderStatus::WaitBuyerPay | OrderStatus::Paying => {
                // When the pay timeout or, at the latest, the sweep will have decided it.
                // Checked: a row's created_at far in the future (or settings of centuries)
                // must not panic; such an order is asked about again after the cap.
                let decided_at =
                    chrono::Duration::from_std(self.pay_timeout.saturating_add(self.overdue_grace))
                        .ok()
                        .and_then(|wait| order.created_at.checked_add_signed(wait));
                let left = decided_at
                    .and_then(|at| (at - Utc::now()).to_std().ok())
                    .unwrap_or(ASK_AGAIN_AT_MOST);
                Fate::Unpaid(left.clamp(ASK_AGAIN_AT_LEAST, ASK_AGAIN_AT_MOST))
            }
        }
    }
}

#[tonic::async_trait]
impl OrderReconcile for ReconcileService {
    #[tracing::instrument(skip_all, fields(orders))]
    async fn order_outcomes(
        &self,
        request: Request<pb::OrderOutcomesRequest>,
    ) -> std::result::Result<Response<pb::OrderOutcomesResponse>, Status> {
        let req = request.into_inner();
        tracing::Span::current().record("orders", req.order_sns.len());
        if req.order_sns.is_empty() || req.order_sns.len() > MAX_BATCH {
            return Err(Error::InvalidArgument(
                "order_sns",
                format!("ask about 1 to {MAX_BATCH} orders at once"),
            )
            .into());
        }
        let horizon = Duration::from_secs(req.horizon_seconds);
        if horizon.is_zero() || horizon.saturating_mul(2) > self.barrier_retention {
            return Err(Error::FailedPrecondition(
                Reason::ReconcileHorizon,
                format!(
                    "a horizon of {horizon:?} is not well inside ORDER_BARRIER_RETENTION \
                     ({:?}): at most half of it",
                    self.barrier_retention
                ),
            )
            .into());
        }
        for order_sn in &req.order_sns {
            domain::order_sn(order_sn)?;
        }
        let mut outcomes = Vec::with_capacity(req.order_sns.len());
        for order_sn in req.order_sns {
            let fate = self.fate(&order_sn).await?;
            let (outcome, ask_again) = match fate {
                Fate::NeverPlaced => (Outcome::NeverPlaced, Duration::ZERO),
                Fate::Unpaid(after) => (Outcome::Unpaid, after),
                Fate::Paid => (Outcome::Paid, Duration::ZERO),
                Fate::Closed => (Outcome::Closed, Duration::ZERO),
            };
            outcomes.push(pb::OrderOutcome {
                order_sn,
                outcome: outcome as i32,
                ask_again_after_seconds: ask_again.as_secs(),
            });
        }
        Ok(Response::new(pb::OrderOutcomesResponse { outcomes }))
    }
}
