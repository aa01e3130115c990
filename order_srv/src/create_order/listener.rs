//! Step 4: the transaction listener of the `order_reback` producer group.
//!
//! The client calls it on one of its blocking threads, twice over: for the half message
//! a CreateOrder just stored (`execute_local_transaction`) and for the broker's
//! check-backs (`check_local_transaction`, DESIGN.md §5). The first tells the CreateOrder's
//! task that the half message is stored and parks the client's thread until that task's
//! local transaction (steps 4.1-4.5) sends the answer; the second hands the check-back to
//! the service's runtime and parks until it is done ([`mq::run_on`]).

use std::{any::Any, sync::Arc};

use mq::OrderSnBody;
use rocketmq_client_rust::{LocalTransactionState, TransactionListener};
use rocketmq_model::common::message::{MessageTrait, message_ext::MessageExt};
use tokio::runtime::Handle;
use tracing::Instrument;

use super::{PlaceCall, check_back, local_transaction::LocalTransaction};
use crate::metrics::Step;

pub struct RebackTxListener {
    local_transaction: Arc<LocalTransaction>,
    runtime: Handle,
}

impl RebackTxListener {
    /// `runtime` is the service's runtime, where the listener's work runs.
    pub fn new(local_transaction: Arc<LocalTransaction>, runtime: Handle) -> Self {
        Self {
            local_transaction,
            runtime,
        }
    }
}

impl TransactionListener for RebackTxListener {
    fn execute_local_transaction(
        &self,
        _msg: &dyn MessageTrait,
        arg: Option<&(dyn Any + Send + Sync)>,
    ) -> LocalTransactionState {
        let Some(call) = arg.and_then(|a| a.downcast_ref::<Arc<PlaceCall>>()) else {
            // Only `OrderPlacer::place` sends on this group, always with a call.
            tracing::error!("transaction listener called without a CreateOrder call");
            return LocalTransactionState::RollbackMessage;
        };
        let metrics = &self.local_transaction.metrics;
        metrics.step_took(Step::HalfMessage, call.sent_at.elapsed());
        let (answer, answered) = std::sync::mpsc::sync_channel(1);
        // The local transaction counts its answer (`OrderMetrics::answered`); the
        // answers made here, with nobody to decide, are counted here. The check-back
        // decides from the barrier then.
        let state = if !call.half_message_stored(answer) {
            tracing::error!(order_sn = %call.order_sn, "no CreateOrder waits for this half message");
            None
        } else {
            // Fails only when the task died before answering (a panic).
            answered.recv().ok()
        };
        tracing::debug!(order_sn = %call.order_sn, ?state, "local transaction answered");
        state.unwrap_or_else(|| {
            metrics.answered(LocalTransactionState::Unknown);
            LocalTransactionState::Unknown
        })
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
