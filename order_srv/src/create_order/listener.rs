//! Step 4: the transaction listener of the `order_reback` producer group.
//!
//! The client calls it twice over: for the half message a CreateOrder just stored
//! (`execute_local_transaction_async`) and for the broker's check-backs
//! (`check_local_transaction`, DESIGN.md §5). The first tells the CreateOrder's task that
//! the half message is stored and returns the wait for that task's answer (steps
//! 4.1-4.5), which the client awaits on the send's own task, the CreateOrder's: no thread
//! hand-off between "stored" and Sell (the patched client, `vendor/rocketmq-client-rust`).
//! The second runs on one of the client's blocking threads: it hands the check-back to the
//! service's runtime and parks until it is done ([`mq::run_on`]).

use std::{any::Any, sync::Arc};

use mq::OrderSnBody;
use rocketmq_client_rust::{LocalTransactionFuture, LocalTransactionState, TransactionListener};
use rocketmq_model::common::message::{MessageTrait, message_ext::MessageExt};
use tokio::{runtime::Handle, sync::oneshot};
use tracing::Instrument;

use super::{PlaceCall, check_back, local_transaction::LocalTransaction};
use crate::metrics::Step;

pub struct RebackTxListener {
    local_transaction: Arc<LocalTransaction>,
    runtime: Handle,
}

impl RebackTxListener {
    /// `runtime` is the service's runtime, where the check-backs run.
    pub fn new(local_transaction: Arc<LocalTransaction>, runtime: Handle) -> Self {
        Self {
            local_transaction,
            runtime,
        }
    }

    /// The half message of the CreateOrder in `arg` is stored: hands its task the channel
    /// for the answer and returns the wait for it.
    fn wait_for_answer(&self, arg: Option<&(dyn Any + Send + Sync)>) -> LocalTransactionFuture {
        let Some(call) = arg.and_then(|a| a.downcast_ref::<Arc<PlaceCall>>()) else {
            // Only `OrderPlacer::place` sends on this group, always with a call.
            tracing::error!("transaction listener called without a CreateOrder call");
            return Box::pin(std::future::ready(LocalTransactionState::RollbackMessage));
        };
        let metrics = self.local_transaction.metrics.clone();
        metrics.step_took(Step::HalfMessage, call.sent_at.elapsed());
        let (answer, answered) = oneshot::channel();
        if !call.half_message_stored(answer) {
            tracing::error!(order_sn = %call.order_sn, "no CreateOrder waits for this half message");
        }
        let order_sn = call.order_sn.clone();
        Box::pin(async move {
            // Fails when nobody waited for the half message (the channel was dropped
            // unused). The check-back decides from the barrier then. The local
            // transaction counts its answers (`OrderMetrics::answered`); this one is
            // counted here. A CreateOrder task that panics takes this future with it
            // (they share the task): nothing is answered or counted, no END_TRANSACTION
            // is sent, and the check-back decides, as it did before.
            let state = answered.await.unwrap_or_else(|_| {
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
        let pool = self.local_transaction.pool.clone();
        let started = std::time::Instant::now();
        let state = mq::run_on(
            &self.runtime,
            async move { check_back::answer(&pool, &body.order_sn).await }.instrument(span),
        )
        .unwrap_or(LocalTransactionState::Unknown);
        let metrics = &self.local_transaction.metrics;
        metrics.checked_back(state);
        metrics.check_back_took(state, started.elapsed());
        state
    }
}
