//! CreateOrder over a transactional reback message (DESIGN.md §4), read top to bottom in
//! [`OrderPlacer::create`]: the half message "give this order's stock back" is stored
//! *before* inventory is touched, and the local transaction decides its fate: Rollback
//! when the order committed (the deduction stays), Commit when it failed after stock may
//! have been deducted (inventory returns it, or tombstones the order_sn so a late Sell is
//! refused). When this process dies in between, the broker asks the [`check_back`],
//! which answers from the `tx_barrier` table. The [`listener`] is where the broker's
//! client tells a call that its half message is stored and takes the call's answer.
//!
//! | outcome | broker answer | stock |
//! |---|---|---|
//! | refused before Sell (cart claimed elsewhere, empty, unpriced, total too large) | Rollback | never deducted |
//! | Sell definitively refused | Rollback | never deducted |
//! | Sell outcome unknown | Commit | inventory returns it, or tombstones the order_sn |
//! | Sell deducted, then the writes or the pay-timeout send failed | Commit | returned |
//! | COMMIT itself fails | Unknown | the check-back reads the barrier and decides |
//! | COMMIT succeeded | Rollback | stays deducted: the order exists |
//!
//! What does not depend on the step before it runs beside it, so one order waits for as
//! few round trips as the protocol allows:
//!
//! ```text
//! half message stored ─┐
//! cart claimed ────────┴──────── Sell ─────────┬─ COMMIT ─ reply
//!          └─ barrier, order, cart lines ───────┤     └─ END_TRANSACTION
//! pay-timeout stored ───────────────────────────┘
//! ```
//!
//! The cart claim is a locking read in the order's own transaction, so it may start
//! before the half message is stored; the order's writes follow it there, unseen until
//! COMMIT, which waits for Sell (an order that stops before rolls them back). The
//! pay-timeout message needs only to be stored before COMMIT: sent first, it is stored
//! while the half message is, not while Sell runs. END_TRANSACTION is one-way and comes
//! after COMMIT: the caller gets the order as soon as it is committed.

pub mod check_back;
pub mod listener;
mod steps;

use std::{sync::Arc, time::Duration};

use rocketmq_client_rust::{LocalTransactionState, TransactionMQProducer};
use sqlx::MySqlPool;
use tokio::{sync::oneshot, task::JoinHandle};
use tokio_util::task::TaskTracker;
use tracing::Instrument;

pub use crate::{cart::claim_priced_cart, inventory::sell_items};
pub use listener::RebackTxListener;
use listener::{Handoff, PlaceCall};
use steps::{ClaimOutcome, SellOutcome, abandon, lost, new_order_sn};

use crate::{
    db::OrderRow,
    domain::NewOrder,
    error::{Error, Result},
    faults,
    inventory::Inventory,
    metrics::{OrderMetrics, Step},
    timeout::PayTimeoutSender,
};

use LocalTransactionState::{CommitMessage as ReturnStock, RollbackMessage as KeepStock};

/// How much longer than its budget a call's task may go on after the caller has its
/// answer before it is dropped where it is: a crash at that step, which the protocol is
/// built for (an uncommitted transaction rolls back, the check-back answers from the
/// barrier). Without it a silent database would hold the call, and its connections.
pub const WORK_GRACE: Duration = Duration::from_secs(10);

/// What every CreateOrder uses; shared by all calls, changed by none.
pub struct Placing {
    pub pool: MySqlPool,
    pub inventory: Inventory,
    pub pay_timeouts: Arc<PayTimeoutSender>,
    pub metrics: OrderMetrics,
    /// The longest a caller waits for its answer (`ORDER_CREATE_ORDER_BUDGET`).
    pub budget: Duration,
}

/// Places orders: owns the transactional producer of `order_reback`.
pub struct OrderPlacer {
    producer: TransactionMQProducer,
    reback_topic: String,
    placing: Placing,
    /// Every call runs as a task of its own (see [`OrderPlacer::place`]), and so does its
    /// pay-timeout send.
    calls: TaskTracker,
}

impl OrderPlacer {
    pub fn new(producer: TransactionMQProducer, reback_topic: String, placing: Placing) -> Self {
        Self {
            producer,
            reback_topic,
            placing,
            calls: TaskTracker::new(),
        }
    }

    /// Steps 2-5 in a task of their own: a caller that hangs up does not cut a local
    /// transaction in the middle, and the sends finish (END_TRANSACTION, the pay-timeout
    /// of a refused call) after the caller has its answer.
    ///
    /// The caller waits at most the budget, or its own `deadline` when that is shorter
    /// (DESIGN.md §13): past it the answer is UNAVAILABLE, outcome unknown. The call goes
    /// on in its task (for at most [`WORK_GRACE`] more) and ends as it would have
    /// (committed, or rolled back and its stock returned, or left to the check-back); a
    /// retry with the same request_id finds its order, or places one if none was placed.
    #[tracing::instrument(skip_all, fields(user_id = order.user_id, order_sn))]
    pub async fn place(
        self: &Arc<Self>,
        order: NewOrder,
        deadline: Option<Duration>,
    ) -> Result<OrderRow> {
        let (reply, replied) = oneshot::channel();
        let placer = self.clone();
        let work_within = self.placing.budget.saturating_add(WORK_GRACE);
        // Boxed: the call's future is large, and a future is moved on the stack until it
        // is spawned.
        self.calls.spawn(
            Box::pin(async move {
                let work = placer.create(order, reply);
                if tokio::time::timeout(work_within, work).await.is_err() {
                    tracing::info!(
                        within = ?work_within,
                        "CreateOrder's work did not finish in time; dropped where it was \
                         (the check-back decides its half message)"
                    );
                }
            })
            .in_current_span(),
        );
        let budget = deadline.map_or(self.placing.budget, |d| d.min(self.placing.budget));
        match tokio::time::timeout(budget, replied).await {
            Ok(answer) => answer
                .unwrap_or_else(|_| Err(Error::Internal("the CreateOrder task failed".into()))),
            Err(_) => {
                // Counted by the caller's status; what was away is logged once per outage.
                tracing::info!(?budget, "CreateOrder answered unknown: its budget ran out");
                Err(Error::Unavailable(format!(
                    "CreateOrder did not finish within {budget:?}; its outcome is unknown: \
                     retry with the same request_id to see it"
                )))
            }
        }
    }

    /// One CreateOrder, DESIGN.md §4. `reply` gets the caller's answer (step 5) as soon
    /// as it is known; the half message's send goes on after it (END_TRANSACTION).
    async fn create(&self, order: NewOrder, reply: oneshot::Sender<Result<OrderRow>>) {
        // A retry (AIP-155) whose first attempt placed its order gets that order, without
        // a new half message.
        if let Some(earlier) = self.placed_before(&order).await.transpose() {
            let _ = reply.send(earlier);
            return;
        }
        // 2: the order_sn.
        let order_sn = new_order_sn(order.user_id);
        tracing::Span::current().record("order_sn", order_sn.as_str());
        let (call, handoff) = PlaceCall::new(order_sn, order);
        // 4.4's pay-timeout message goes out first: stored before COMMIT, which awaits it.
        let pay_timeout = self.send_pay_timeout(&call);
        // 3 beside 4.1-4.5: the send stores the half message and runs the listener inside
        // it, which waits for the answer this call decides meanwhile.
        tokio::join!(self.send_half_message(&call), async {
            let result = self.decide(&call, handoff, pay_timeout).await;
            // 5: the caller's answer, before END_TRANSACTION is on its way.
            let _ = reply.send(result);
        });
    }

    /// Steps 4.1-4.5: the order's local transaction, beside its half message. Answers the
    /// listener (Rollback keeps the stock deducted, Commit returns it) and returns the
    /// caller's result.
    #[tracing::instrument(name = "local_transaction", skip_all, fields(order_sn = %call.order_sn))]
    async fn decide(
        &self,
        call: &PlaceCall,
        handoff: Handoff,
        pay_timeout: JoinHandle<Result<()>>,
    ) -> Result<OrderRow> {
        let Handoff { stored, answer } = handoff;
        let stored = async {
            stored
                .await
                .unwrap_or_else(|_| Err(lost("the half message's send")))
        };
        // 4.1-4.2, beside step 3.
        let mut claim = match self.claim(call).await {
            ClaimOutcome::Claimed(claim) => claim,
            ClaimOutcome::Answered(result) => {
                // Nothing deducted: the half message is rolled back once it is stored.
                // When it is not, the refusal says more than the send.
                if stored.await.is_ok() {
                    self.answer(call, answer, KeepStock);
                }
                return result;
            }
        };
        // 4.4's writes start at the claim, beside 3 and Sell (4.3): nobody sees them
        // before COMMIT, and COMMIT waits for Sell.
        let items = sell_items(&claim.lines);
        let writes = self.placing.metrics.timed(
            Step::OrderWrites,
            steps::write_order_rows(&mut claim.tx, call, &claim.lines, claim.total_cents),
        );
        let sell = async {
            stored.await?;
            Ok(self.sell(call, items).await)
        };
        let (written, sold) = tokio::join!(writes, sell);
        let (state, result) = match sold {
            // Not stored: nothing was deducted and nobody waits for an answer.
            Err(not_stored) => {
                abandon(claim.tx).await;
                return Err(not_stored);
            }
            Ok(SellOutcome::Stop(state, stopped)) => {
                abandon(claim.tx).await;
                (state, Err(stopped))
            }
            // 4.4: COMMIT, once Sell deducted, the writes are done and the pay-timeout
            // stored.
            Ok(SellOutcome::Deducted) => {
                let commit = self.commit(call, claim.tx, written, pay_timeout);
                self.placing.metrics.timed(Step::Commit, commit).await
            }
        };
        // 4.5: the broker's answer.
        self.answer(call, answer, state);
        result
    }

    /// Step 4.4's COMMIT, once Sell deducted: the answer for the broker and the caller's
    /// result. A COMMIT that fails may or may not have happened: Unknown, and the
    /// check-back reads the barrier.
    async fn commit(
        &self,
        call: &PlaceCall,
        tx: sqlx::Transaction<'static, sqlx::MySql>,
        written: Result<OrderRow>,
        pay_timeout: JoinHandle<Result<()>>,
    ) -> (LocalTransactionState, Result<OrderRow>) {
        let pay_timeout = pay_timeout
            .await
            .unwrap_or_else(|_| Err(lost("the pay-timeout send")));
        let order = match written.and_then(|order| pay_timeout.map(|()| order)) {
            Ok(order) => order,
            Err(e) => {
                abandon(tx).await;
                return (ReturnStock, Err(e));
            }
        };
        if let Some(pause) = faults::pause("order.pause_before_commit", call.order.user_id) {
            tokio::time::sleep(pause).await;
        }
        if let Err(e) = tx.commit().await {
            return (LocalTransactionState::Unknown, Err(e.into()));
        }
        if faults::triggered("order.after_local_commit", call.order.user_id) {
            // As if END_TRANSACTION were lost: the check-back must find "committed".
            return (LocalTransactionState::Unknown, Ok(order));
        }
        (KeepStock, Ok(order))
    }

    /// The broker's answer for the call's half message, to the listener that waits for
    /// it; counted before the caller hears back, so a caller that reads the metrics sees
    /// it. The listener's wait is gone only if the client gave up on it, and then the
    /// check-back answers instead.
    fn answer(
        &self,
        call: &PlaceCall,
        answer: oneshot::Sender<LocalTransactionState>,
        state: LocalTransactionState,
    ) {
        self.placing.metrics.answered(state);
        call.answered();
        let _ = answer.send(state);
    }
}
