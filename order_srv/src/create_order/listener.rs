//! Step 4: the transaction listener of the `order_reback` producer group, and its
//! hand-off with the CreateOrder whose half message it is told about.
//!
//! The client calls the listener twice over: for the half message a CreateOrder just
//! stored (`execute_local_transaction_async`) and for the broker's check-backs
//! (`check_local_transaction`, DESIGN.md §5). The first tells the CreateOrder that the
//! half message is stored and returns the wait for that call's answer (steps 4.1-4.5),
//! which the client awaits on the send's own task, the CreateOrder's: no thread hand-off
//! between "stored" and Sell (the patched client, `vendor/rocketmq-client-rust`). The
//! second runs on one of the client's blocking threads: it hands the check-back to the
//! service's runtime and parks until it is done ([`mq::run_on`]).

use std::{
    any::Any,
    sync::{Arc, Mutex},
    time::Instant,
};

use mq::OrderSnBody;
use rocketmq_client_rust::{LocalTransactionFuture, LocalTransactionState, TransactionListener};
use rocketmq_model::common::message::{MessageTrait, message_ext::MessageExt};
use sqlx::MySqlPool;
use tokio::{runtime::Handle, sync::oneshot};
use tracing::Instrument;

use super::check_back;
use crate::{
    domain::NewOrder,
    error::Result,
    metrics::{OrderMetrics, Step},
};

/// One CreateOrder, as the listener sees it: it travels to the listener through the
/// send's `arg`. Nothing about one call is stored where another call could see it.
pub struct PlaceCall {
    pub order_sn: String,
    pub order: NewOrder,
    /// When the half message was sent (the listener times step 3 from here).
    sent_at: Instant,
    /// The listener's side of the hand-off; taken once, by the listener or by the send
    /// that returned without it.
    listener_side: Mutex<Option<ListenerSide>>,
    /// When the call answered (the send times END_TRANSACTION from here).
    answered_at: Mutex<Option<Instant>>,
}

/// What the listener takes: where it says "stored", and where the answer will come.
struct ListenerSide {
    stored: oneshot::Sender<Result<()>>,
    answer: oneshot::Receiver<LocalTransactionState>,
}

/// The CreateOrder's side of the hand-off.
pub struct Handoff {
    /// `Ok` once the half message is stored; the error when the send returned without
    /// storing it (nothing may be deducted then).
    pub stored: oneshot::Receiver<Result<()>>,
    /// Where the call puts the broker's answer for its half message.
    pub answer: oneshot::Sender<LocalTransactionState>,
}

impl PlaceCall {
    pub fn new(order_sn: String, order: NewOrder) -> (Arc<Self>, Handoff) {
        let (stored_tx, stored) = oneshot::channel();
        let (answer, answer_rx) = oneshot::channel();
        let call = Self {
            order_sn,
            order,
            sent_at: Instant::now(),
            listener_side: Mutex::new(Some(ListenerSide {
                stored: stored_tx,
                answer: answer_rx,
            })),
            answered_at: Mutex::new(None),
        };
        (Arc::new(call), Handoff { stored, answer })
    }

    /// Whether the listener has run for this call.
    pub fn listener_ran(&self) -> bool {
        self.listener_side
            .lock()
            .map_or(true, |side| side.is_none())
    }

    /// The send returned and the listener never ran: the half message is not stored
    /// (or was stored and is rolled back by the client), and `why` says so to the call.
    pub fn not_stored(&self, why: crate::error::Error) {
        if let Some(side) = self.take_listener_side() {
            let _ = side.stored.send(Err(why));
        }
    }

    fn take_listener_side(&self) -> Option<ListenerSide> {
        self.listener_side
            .lock()
            .ok()
            .and_then(|mut side| side.take())
    }

    pub fn answered(&self) {
        if let Ok(mut at) = self.answered_at.lock() {
            *at = Some(Instant::now());
        }
    }

    pub fn answered_at(&self) -> Option<Instant> {
        self.answered_at.lock().ok().and_then(|at| *at)
    }
}

pub struct RebackTxListener {
    pool: MySqlPool,
    metrics: OrderMetrics,
    runtime: Handle,
}

impl RebackTxListener {
    /// `runtime` is the service's runtime, where the check-backs run.
    pub fn new(pool: MySqlPool, metrics: OrderMetrics, runtime: Handle) -> Self {
        Self {
            pool,
            metrics,
            runtime,
        }
    }

    /// The half message of the CreateOrder in `arg` is stored: tells the call and returns
    /// the wait for its answer.
    fn wait_for_answer(&self, arg: Option<&(dyn Any + Send + Sync)>) -> LocalTransactionFuture {
        let Some(call) = arg.and_then(|a| a.downcast_ref::<Arc<PlaceCall>>()) else {
            // Only `OrderPlacer::place` sends on this group, always with a call.
            tracing::error!("transaction listener called without a CreateOrder call");
            return Box::pin(std::future::ready(LocalTransactionState::RollbackMessage));
        };
        self.metrics
            .step_took(Step::HalfMessage, call.sent_at.elapsed());
        let answer = call.take_listener_side().and_then(|side| {
            // A call that is gone (its work dropped at its deadline) hears nothing.
            side.stored.send(Ok(())).ok().map(|()| side.answer)
        });
        if answer.is_none() {
            tracing::error!(order_sn = %call.order_sn, "no CreateOrder waits for this half message");
        }
        let metrics = self.metrics.clone();
        let order_sn = call.order_sn.clone();
        Box::pin(async move {
            // Fails when nobody waits for the half message, or the call ended without
            // answering. The check-back decides from the barrier then. The call counts
            // its answers (`OrderMetrics::answered`); this one is counted here. A
            // CreateOrder task that panics takes this future with it (they share the
            // task): nothing is answered or counted, no END_TRANSACTION is sent, and the
            // check-back decides, as it did before.
            let answered = match answer {
                Some(answer) => answer.await.ok(),
                None => None,
            };
            let state = answered.unwrap_or_else(|| {
                metrics.answered(LocalTransactionState::Unknown);
                LocalTransactionState::Unknown
            });
            tracing::debug!(%order_sn, ?state, "local transaction answered");
            state
        })
    }
}

impl TransactionListener for RebackTxListener {
    fn execute_local_transaction_async(
        &self,
        _msg: &dyn MessageTrait,
        arg: Option<&(dyn Any + Send + Sync)>,
    ) -> Option<LocalTransactionFuture> {
        Some(self.wait_for_answer(arg))
    }

    /// Not called by the patched client, which awaits `execute_local_transaction_async`;
    /// the trait requires it, so it waits for the same answer on the client's blocking
    /// thread. Never call it on the send's own task: the answer comes from that task.
    fn execute_local_transaction(
        &self,
        _msg: &dyn MessageTrait,
        arg: Option<&(dyn Any + Send + Sync)>,
    ) -> LocalTransactionState {
        futures::executor::block_on(self.wait_for_answer(arg))
    }

    fn check_local_transaction(&self, msg: &MessageExt) -> LocalTransactionState {
        let Some(body) = OrderSnBody::parse(msg.body().as_deref()) else {
            // Nothing here sends such a message: it cannot stand for an order.
            tracing::error!(msg_id = %msg.msg_id(), "check-back of a malformed reback; rolling it back");
            return LocalTransactionState::RollbackMessage;
        };
        // The check-back continues the trace of the CreateOrder that sent the half message.
        let span = tracing::info_span!(
            "check_back",
            otel.kind = "server",
            order_sn = %body.order_sn,
            trace_id = tracing::field::Empty,
        );
        mq::trace_context(msg).continue_in(&span);
        let pool = self.pool.clone();
        let started = Instant::now();
        let state = mq::run_on(
            &self.runtime,
            async move { check_back::answer(&pool, &body.order_sn).await }.instrument(span),
        )
        .unwrap_or(LocalTransactionState::Unknown);
        self.metrics.checked_back(state);
        self.metrics.check_back_took(state, started.elapsed());
        state
    }
}
