//! CreateOrder over a transactional reback message (DESIGN.md §4), read top to bottom:
//!
//! | step | what | where |
//! |---|---|---|
//! | 1 | validate the request | `domain::NewOrder` (at the gRPC edge) |
//! | 2 | generate the order_sn | [`OrderPlacer::place`] (here) |
//! | 3 | store the half message "give this order's stock back" | [`OrderPlacer::place`] (here) |
//! | 4 | the transaction listener, called *inside* step 3's send | [`listener`] |
//! | 4.1-4.2 | claim the checked cart, price it on the server | [`local_transaction::claim_priced_cart`] |
//! | 4.3 | `Sell` on inventory | [`local_transaction`] |
//! | 4.4 | the local transaction: barrier row first, order, cart, pay-timeout, COMMIT | [`local_transaction`] |
//! | 4.5 | COMMIT succeeded: roll the half message back (keep the stock) | [`local_transaction::LocalTransaction::run`] |
//! | 5 | answer the caller | [`OrderPlacer::place`] (here) |
//! | §5 | the broker asks "did order X commit?" | [`check_back`] |
//!
//! The half message on `order_reback` is stored *before* inventory is touched. The local
//! transaction decides its fate: Rollback when the order committed (the deduction stays),
//! Commit when it failed after stock may have been deducted (inventory returns it, or
//! tombstones the order_sn so a late Sell is refused). When this process dies in between,
//! the broker asks the check-back, which answers from the `tx_barrier` table.

pub mod check_back;
pub mod listener;
pub mod local_transaction;

use std::{
    sync::{Arc, Mutex},
    time::Instant,
};

use mq::OrderSnBody;
use rocketmq_client_rust::TransactionMQProducer;
use sqlx::MySqlPool;

pub use listener::RebackTxListener;
pub use local_transaction::{LocalTransaction, claim_priced_cart};

use crate::{
    db::{self, OrderRow},
    domain::NewOrder,
    error::{Error, Result},
    metrics::{OrderMetrics, Step},
};

/// One CreateOrder call, travelling to the listener through the send's `arg`. The
/// listener leaves the call's result here: nothing about one call is stored in fields
/// that another call could see.
pub struct PlaceCall {
    pub order_sn: String,
    pub order: NewOrder,
    /// When the half message was sent (the listener times step 3 from here).
    pub sent_at: Instant,
    /// The CreateOrder's span: the listener's work, on another task, continues it.
    pub span: tracing::Span,
    result: Mutex<Option<(Result<OrderRow>, Instant)>>,
}

impl PlaceCall {
    fn new(order_sn: String, order: NewOrder) -> Self {
        Self {
            order_sn,
            order,
            sent_at: Instant::now(),
            span: tracing::Span::current(),
            result: Mutex::new(None),
        }
    }

    /// Where the listener leaves the outcome of steps 4.1-4.5 (and when it answered).
    pub fn finish(&self, result: Result<OrderRow>) {
        if let Ok(mut slot) = self.result.lock() {
            *slot = Some((result, Instant::now()));
        }
    }

    /// Whether the listener has left its outcome (it ran for this call).
    fn answered(&self) -> bool {
        self.result.lock().map_or(true, |slot| slot.is_some())
    }

    fn take(&self) -> Option<(Result<OrderRow>, Instant)> {
        self.result.lock().ok().and_then(|mut slot| slot.take())
    }
}

/// Places orders: owns the transactional producer of `order_reback`.
pub struct OrderPlacer {
    producer: TransactionMQProducer,
    reback_topic: String,
    pool: MySqlPool,
    metrics: OrderMetrics,
}

impl OrderPlacer {
    pub fn new(
        producer: TransactionMQProducer,
        reback_topic: String,
        pool: MySqlPool,
        metrics: OrderMetrics,
    ) -> Self {
        Self {
            producer,
            reback_topic,
            pool,
            metrics,
        }
    }

    /// A retry (AIP-155) whose first attempt placed its order gets that order, without a
    /// new half message. The listener checks again once it holds (or fails to claim) the
    /// cart, for a first attempt that commits in between.
    async fn placed_before(&self, order: &NewOrder) -> Result<Option<OrderRow>> {
        let Some(request_id) = order.request_id.as_deref() else {
            return Ok(None);
        };
        let mut conn = self.pool.acquire().await?;
        Ok(db::order_by_request(&mut conn, order.user_id, request_id).await?)
    }

    /// Steps 2, 3 and 5; step 4 runs inside step 3's send.
    #[tracing::instrument(skip_all, fields(user_id = order.user_id, order_sn))]
    pub async fn place(&self, order: NewOrder) -> Result<OrderRow> {
        if let Some(placed) = self.placed_before(&order).await? {
            return Ok(placed);
        }
        // 2: the order_sn.
        let order_sn = new_order_sn(order.user_id);
        tracing::Span::current().record("order_sn", order_sn.as_str());
        let call = Arc::new(PlaceCall::new(order_sn, order));

        // 3: store the half message. The client runs the transaction listener (step 4:
        // claim the cart, Sell, the local transaction) before this send returns, and
        // sends END_TRANSACTION with the listener's answer afterwards (one-way: when it
        // is lost, the broker's check-back asks again).
        //
        // A send that failed in the transport (a broker just stopped: the client does not
        // try another broker then, but avoids that one from now on) is sent once more,
        // if the listener has not run. That is safe even if the failed attempt was stored
        // after all (its reply lost): the broker checks that half message back, and the
        // check-back answers from this order_sn's barrier like for any other.
        let mut retried = false;
        let sent = loop {
            let message = OrderSnBody::new(call.order_sn.as_str()).message(&self.reback_topic)?;
            match self
                .producer
                .send_message_in_transaction(message, Some(call.clone()))
                .await
            {
                Err(e) if !retried && mq::is_transport_failure(&e) && !call.answered() => {
                    tracing::info!(error = %mq::describe(&e), "half message not sent; sending it once more");
                    retried = true;
                }
                sent => break sent,
            }
        };
        if let Err(e) = sent {
            // The half message was not stored: nothing was touched.
            let reason = mq::describe(&e);
            tracing::warn!(error = %reason, "half message not stored");
            return Err(Error::Unavailable(format!(
                "message broker unavailable: {reason}"
            )));
        }

        // 5: what step 4 left for the caller.
        match call.take() {
            Some((result, answered_at)) => {
                self.metrics
                    .step_took(Step::EndTransaction, answered_at.elapsed());
                result
            }
            // The client did not run the listener (e.g. no worker slot): the broker's
            // check-back will find no barrier row and return whatever may be deducted.
            None => Err(Error::Unavailable(
                "order outcome unknown; it will be rolled back".into(),
            )),
        }
    }

    /// Takes the producer offline. Call it after the gRPC server drained, so every
    /// transaction in flight got its answer.
    pub async fn shutdown(mut self) {
        self.producer.shutdown().await;
    }
}

/// `<yyyymmddHHMMSS><user id><random>`: unique without coordination, sortable by time.
fn new_order_sn(user_id: i64) -> String {
    let now = chrono::Utc::now().format("%Y%m%d%H%M%S");
    let random: u32 = rand::random_range(0..1_000_000_000);
    format!("{now}{user_id}{random:09}")
}
