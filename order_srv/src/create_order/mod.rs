//! CreateOrder over a transactional reback message (DESIGN.md §4), read top to bottom:
//!
//! | step | what | where |
//! |---|---|---|
//! | 1 | validate the request | `domain::NewOrder` (at the gRPC edge) |
//! | 2 | generate the order_sn | [`OrderPlacer::place`] (here) |
//! | 3 | store the half message "give this order's stock back" | [`OrderPlacer::place`] (here) |
//! | 4 | the transaction listener, called *inside* step 3's send, answers what step 4.1-4.5 decided | [`listener`] |
//! | 4.1-4.2 | claim the checked cart, price it on the server | [`local_transaction::claim_priced_cart`] |
//! | 4.3 | `Sell` on inventory | [`local_transaction`] |
//! | 4.4 | the local transaction: barrier row first, order, cart (beside Sell); COMMIT once Sell and the pay-timeout are done | [`local_transaction`] |
//! | 4.5 | COMMIT succeeded: roll the half message back (keep the stock) | `local_transaction::LocalTransaction::sell_and_commit` |
//! | 5 | answer the caller | [`OrderPlacer::place`] (here) |
//! | §5 | the broker asks "did order X commit?" | [`check_back`] |
//!
//! The half message on `order_reback` is stored *before* inventory is touched. The local
//! transaction decides its fate: Rollback when the order committed (the deduction stays),
//! Commit when it failed after stock may have been deducted (inventory returns it, or
//! tombstones the order_sn so a late Sell is refused). When this process dies in between,
//! the broker asks the check-back, which answers from the `tx_barrier` table.
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
//! before the half message is stored (a claim that fails still waits for the listener,
//! which answers Rollback). The order's writes follow the claim in that transaction: no
//! one sees them before COMMIT, and COMMIT waits for Sell, so they need not wait for the
//! half message or Sell (an order that stops before COMMIT rolls them back). The
//! pay-timeout message needs only to be stored before COMMIT, so it is sent with the half
//! message: it is stored while the half message is, instead of competing with Sell (a
//! call refused at its claim leaves one that finds no order). END_TRANSACTION is one-way
//! and comes after COMMIT: the caller gets the order as soon as it is committed, while
//! the send finishes.

pub mod check_back;
pub mod listener;
pub mod local_transaction;

use std::{
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use mq::OrderSnBody;
use rocketmq_client_rust::{LocalTransactionState, TransactionMQProducer};
use sqlx::MySqlPool;
use tokio::sync::oneshot;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

pub use listener::RebackTxListener;
pub use local_transaction::{LocalTransaction, claim_priced_cart, sell_items};

use crate::{
    db::{self, OrderRow},
    domain::NewOrder,
    error::{Error, Result},
    metrics::Step,
};

/// One CreateOrder call, travelling to the listener through the send's `arg`: the
/// hand-off between the listener (called by the send once the half message is stored)
/// and the local transaction (beside the send, in the call's task). Nothing about one
/// call is stored in fields that another call could see.
pub struct PlaceCall {
    pub order_sn: String,
    pub order: NewOrder,
    /// When the half message was sent (the listener times step 3 from here).
    pub sent_at: Instant,
    /// Where the listener hands over the channel for its answer; empty once it has.
    stored: Mutex<Option<oneshot::Sender<Answer>>>,
    /// When the local transaction answered the listener.
    answered_at: Mutex<Option<Instant>>,
}

impl PlaceCall {
    fn new(order_sn: String, order: NewOrder) -> (Self, oneshot::Receiver<Answer>) {
        let (stored, on_stored) = oneshot::channel();
        let call = Self {
            order_sn,
            order,
            sent_at: Instant::now(),
            stored: Mutex::new(Some(stored)),
            answered_at: Mutex::new(None),
        };
        (call, on_stored)
    }

    /// The listener's side: the half message is stored; `answer` is where the local
    /// transaction will send the broker's answer. `false` when nobody waits for it (the
    /// call's task is gone, or the listener already ran for this call).
    pub fn half_message_stored(&self, answer: Answer) -> bool {
        let waiting = self.stored.lock().ok().and_then(|mut slot| slot.take());
        waiting.is_some_and(|stored| stored.send(answer).is_ok())
    }

    /// Whether the listener has run for this call.
    fn listener_ran(&self) -> bool {
        self.stored.lock().map_or(true, |slot| slot.is_none())
    }

    fn answered(&self) {
        if let Ok(mut at) = self.answered_at.lock() {
            *at = Some(Instant::now());
        }
    }

    fn answered_at(&self) -> Option<Instant> {
        self.answered_at.lock().ok().and_then(|at| *at)
    }
}

/// Where the local transaction sends the listener its answer for the broker.
pub type Answer = oneshot::Sender<LocalTransactionState>;

/// The local transaction's view of step 3: the listener's answer channel once the half
/// message is stored, or the send's failure if it never is.
pub struct HalfMessage {
    on_stored: oneshot::Receiver<Answer>,
    /// The send returned: `Some(reason)` when it failed.
    on_sent: oneshot::Receiver<Option<String>>,
}

impl HalfMessage {
    /// Waits until the half message is stored (the listener runs). An error when the send
    /// returned without that: nothing may be deducted then.
    async fn stored(&mut self) -> Result<Answer> {
        tokio::select! {
            biased;
            Ok(answer) = &mut self.on_stored => Ok(answer),
            sent = &mut self.on_sent => Err(match sent {
                Ok(Some(reason)) => Error::Unavailable(format!(
                    "message broker unavailable: {reason}"
                )),
                // The client did not run the listener (the half message was stored with a
                // flush or replica timeout, which the client rolls back): the broker's
                // check-back will find no barrier row and return whatever may be deducted.
                _ => Error::Unavailable("order outcome unknown; it will be rolled back".into()),
            }),
        }
    }
}

/// How much longer than its budget a call's task may go on after the caller has its
/// answer (finishing a commit, its sends) before it is dropped where it is. Dropping it
/// is a crash at that step, which the protocol is built for: an uncommitted local
/// transaction rolls back and the check-back answers from the barrier. Without this a
/// silent database would hold the call, and its pool connections, for as long as the
/// silence lasts.
pub const WORK_GRACE: Duration = Duration::from_secs(10);

/// Places orders: owns the transactional producer of `order_reback`.
pub struct OrderPlacer {
    producer: TransactionMQProducer,
    reback_topic: String,
    local_transaction: Arc<LocalTransaction>,
    /// Every call runs as a task of its own (see [`OrderPlacer::place`]).
    calls: TaskTracker,
    /// The longest a caller waits for its answer (`ORDER_CREATE_ORDER_BUDGET`).
    budget: Duration,
}

impl OrderPlacer {
    pub fn new(
        producer: TransactionMQProducer,
        reback_topic: String,
        local_transaction: Arc<LocalTransaction>,
        budget: Duration,
    ) -> Self {
        Self {
            producer,
            reback_topic,
            local_transaction,
            calls: TaskTracker::new(),
            budget,
        }
    }

    fn pool(&self) -> &MySqlPool {
        &self.local_transaction.pool
    }

    /// A retry (AIP-155) whose first attempt placed its order gets that order, without a
    /// new half message. The local transaction checks again when it fails to claim the
    /// cart, for a first attempt that commits in between.
    async fn placed_before(&self, order: &NewOrder) -> Result<Option<OrderRow>> {
        let Some(request_id) = order.request_id.as_deref() else {
            return Ok(None);
        };
        let mut conn = self.pool().acquire().await?;
        Ok(db::order_by_request(&mut conn, order.user_id, request_id).await?)
    }

    /// Steps 2-5. The call runs as a task of its own: a caller that hangs up does not cut
    /// a local transaction in the middle, and the sends finish (END_TRANSACTION, and the
    /// pay-timeout of a refused call) after the caller has its answer.
    ///
    /// The caller waits at most the budget, or its own `deadline` when that is shorter
    /// (DESIGN.md §13): past it the answer is UNAVAILABLE, outcome unknown. The call goes
    /// on in its task (for at most [`WORK_GRACE`] more) and ends as it would have
    /// (committed, or rolled back and its stock returned, or left to the check-back); a retry with the same request_id finds its
    /// order, or places one if none was placed.
    #[tracing::instrument(skip_all, fields(user_id = order.user_id, order_sn))]
    pub async fn place(
        self: &Arc<Self>,
        order: NewOrder,
        deadline: Option<Duration>,
    ) -> Result<OrderRow> {
        let (reply, replied) = oneshot::channel();
        let placer = self.clone();
        // Boxed: the send's and the local transaction's futures are large, and a future
        // is moved on the stack until it is spawned.
        let work_within = self.budget.saturating_add(WORK_GRACE);
        self.calls.spawn(
            Box::pin(async move {
                if tokio::time::timeout(work_within, placer.place_in_task(order, reply))
                    .await
                    .is_err()
                {
                    tracing::info!(
                        within = ?work_within,
                        "CreateOrder's work did not finish in time; dropped where it was \
                         (the check-back decides its half message)"
                    );
                }
            })
            .in_current_span(),
        );
        let budget = deadline.map_or(self.budget, |deadline| deadline.min(self.budget));
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

    async fn place_in_task(&self, order: NewOrder, reply: oneshot::Sender<Result<OrderRow>>) {
        if let Some(earlier) = self.placed_before(&order).await.transpose() {
            let _ = reply.send(earlier);
            return;
        }
        // 2: the order_sn.
        let order_sn = new_order_sn(order.user_id);
        tracing::Span::current().record("order_sn", order_sn.as_str());
        let (call, on_stored) = PlaceCall::new(order_sn, order);
        let call = Arc::new(call);
        let (sent, on_sent) = oneshot::channel();
        let half_message = HalfMessage { on_stored, on_sent };
        let (pay_timeout_stored, pay_timeout) = oneshot::channel();

        // 3 and 4 side by side: the send stores the half message and runs the listener,
        // which waits for the local transaction's answer; the local transaction starts
        // with what does not need the half message (the cart claim). The pay-timeout
        // message goes out with the half message: COMMIT waits for it to be stored, and a
        // refused call answers its caller without waiting for it.
        let local_transaction = Box::pin(async {
            let result = self
                .local_transaction
                .run(&call, half_message, pay_timeout)
                .await;
            // 5: the caller's answer, before END_TRANSACTION is on its way.
            let _ = reply.send(result);
        });
        tokio::join!(
            Box::pin(self.send_half_message(&call, sent)),
            Box::pin(self.local_transaction.pay_timeout(
                &call.order_sn,
                call.order.user_id,
                pay_timeout_stored
            )),
            local_transaction
        );
    }

    /// Step 3: stores the half message; the client runs the transaction listener before
    /// this send returns, and sends END_TRANSACTION with the listener's answer afterwards
    /// (one-way: when it is lost, the broker's check-back asks again). `sent` learns how
    /// the send ended.
    ///
    /// A send that failed in the transport (a broker just stopped: the client does not
    /// try another broker then, but avoids that one from now on) is sent once more, if the
    /// listener has not run. That is safe even if the failed attempt was stored after all
    /// (its reply lost): the broker checks that half message back, and the check-back
    /// answers from this order_sn's barrier like for any other.
    async fn send_half_message(
        &self,
        call: &Arc<PlaceCall>,
        sent: oneshot::Sender<Option<String>>,
    ) {
        let mut retried = false;
        let outcome = loop {
            let message = match OrderSnBody::new(call.order_sn.as_str()).message(&self.reback_topic)
            {
                Ok(message) => message,
                Err(e) => break Err(mq::describe(&e)),
            };
            match self
                .producer
                .send_message_in_transaction(message, Some(call.clone()))
                .await
            {
                Err(e) if !retried && mq::is_transport_failure(&e) && !call.listener_ran() => {
                    tracing::info!(error = %mq::describe(&e), "half message not sent; sending it once more");
                    retried = true;
                }
                Err(e) => break Err(mq::describe(&e)),
                Ok(_) => {
                    mq::BROKER.answered();
                    break Ok(());
                }
            }
        };
        if let Some(answered_at) = call.answered_at() {
            self.local_transaction
                .metrics
                .step_took(Step::EndTransaction, answered_at.elapsed());
        } else if let Err(reason) = &outcome {
            // The half message was not stored: nothing was touched.
            mq::BROKER.failed(reason);
            tracing::info!(error = %reason, "half message not stored");
        }
        let _ = sent.send(outcome.err());
    }

    /// Takes the producer offline. Call it after the gRPC server drained: the calls still
    /// finishing their sends (END_TRANSACTION, a refused call's pay-timeout) get `within`
    /// to do so.
    pub async fn shutdown(self: Arc<Self>, within: Duration) {
        self.calls.close();
        if tokio::time::timeout(within, self.calls.wait())
            .await
            .is_err()
        {
            tracing::warn!(
                "CreateOrder calls still sending; their half messages are left to the check-back, their pay-timeouts may be lost"
            );
        }
        match Arc::try_unwrap(self) {
            Ok(mut placer) => placer.producer.shutdown().await,
            // A call the server let go of still holds it: its half message is answered by
            // the check-back of a live instance (or of this one after a restart).
            Err(_) => tracing::warn!("transactional producer still in use; not shut down"),
        }
    }
}

/// `<yyyymmddHHMMSS><user id><random>`: unique without coordination, sortable by time.
fn new_order_sn(user_id: i64) -> String {
    let now = chrono::Utc::now().format("%Y%m%d%H%M%S");
    let random: u32 = rand::random_range(0..1_000_000_000);
    format!("{now}{user_id}{random:09}")
}
