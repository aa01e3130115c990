//! The steps [`OrderPlacer::create`](super::OrderPlacer) is made of, each with its own
//! outcome: the two sends (the half message, step 3, and the pay-timeout message of
//! 4.4), the claim (4.1-4.2), Sell (4.3) and the order's writes (4.4); and the placer's
//! shutdown.

use std::{sync::Arc, time::Duration};

use mq::OrderSnBody;
use rocketmq_client_rust::LocalTransactionState;
use service_db::ResultExt;
use sqlx::{MySql, MySqlConnection, Transaction};
use tokio::task::JoinHandle;
use tracing::Instrument;

use super::{KeepStock, OrderPlacer, ReturnStock, listener::PlaceCall};
use crate::{
    db::{self, OrderGoodsRow, OrderRow},
    domain::{NewOrder, order_total},
    error::{Error, Reason, Result, is_definitive_refusal},
    faults,
    inventory::INVENTORY,
    metrics::Step,
};

/// How the claim (4.1-4.2) ended.
pub(super) enum ClaimOutcome {
    /// The checked cart, claimed and priced in the order's open transaction.
    Claimed(Claim),
    /// Nothing to order (or a retry's earlier order found): the caller's answer.
    Answered(Result<OrderRow>),
}

/// A claimed, priced cart in the order's open transaction.
pub(super) struct Claim {
    pub tx: Transaction<'static, MySql>,
    pub lines: Vec<OrderGoodsRow>,
    pub total_cents: i64,
}

/// How Sell (4.3) ended.
pub(super) enum SellOutcome {
    /// The stock is deducted: on to COMMIT.
    Deducted,
    /// The order stops here, with this answer for the broker.
    Stop(LocalTransactionState, Error),
}

impl OrderPlacer {
    /// A retry (AIP-155) whose first attempt placed its order: that order.
    pub(super) async fn placed_before(&self, order: &NewOrder) -> Result<Option<OrderRow>> {
        let Some(request_id) = order.request_id.as_deref() else {
            return Ok(None);
        };
        let mut conn = self.placing.pool.acquire().await?;
        Ok(db::order_by_request(&mut conn, order.user_id, request_id).await?)
    }

    /// Step 3: stores the half message; the client runs the transaction listener before
    /// this send returns, and sends END_TRANSACTION with the call's answer afterwards
    /// (one-way: when it is lost, the broker's check-back asks again). A send that
    /// returns without the listener having run tells the call it is not stored.
    ///
    /// A send that failed in the transport (a broker just stopped: the client does not
    /// try another broker then, but avoids that one from now on) is sent once more, if the
    /// listener has not run. That is safe even if the failed attempt was stored after all
    /// (its reply lost): the broker checks that half message back, and the check-back
    /// answers from this order_sn's barrier like for any other.
    pub(super) async fn send_half_message(&self, call: &Arc<PlaceCall>) {
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
            let metrics = &self.placing.metrics;
            metrics.step_took(Step::EndTransaction, answered_at.elapsed());
        }
        call.not_stored(match outcome {
            Err(reason) => {
                // The half message was not stored: nothing was touched.
                mq::BROKER.failed(&reason);
                tracing::info!(error = %reason, "half message not stored");
                Error::Unavailable(format!("message broker unavailable: {reason}"))
            }
            // The client did not run the listener (the half message was stored with a
            // flush or replica timeout, which the client rolls back): the broker's
            // check-back will find no barrier row and return whatever may be deducted.
            Ok(()) => Error::Unavailable("order outcome unknown; it will be rolled back".into()),
        });
    }

    /// Step 4.4's pay-timeout message, sent in a task of its own from the start of the
    /// call: it needs only to be stored before COMMIT, which awaits the task. Sent this
    /// early it is stored while the half message is, not while Sell runs (one broker
    /// request less competing with Sell for the cores). A call refused at its claim, or
    /// later, leaves a pay timeout that finds no order: it claims the order's barrier, as a
    /// check-back would, and is acknowledged (`timeout::close_unpaid_order`).
    pub(super) fn send_pay_timeout(&self, call: &PlaceCall) -> JoinHandle<Result<()>> {
        let sender = self.placing.pay_timeouts.clone();
        let metrics = self.placing.metrics.clone();
        let order_sn = call.order_sn.clone();
        // A pay-timeout message the broker lost: "stored", never delivered. Only the
        // overdue sweep closes this order.
        let dropped = faults::triggered("order.drop_pay_timeout", call.order.user_id);
        let send = async move {
            if dropped {
                return Ok(());
            }
            metrics
                .timed(Step::PayTimeoutSend, sender.send(&order_sn))
                .await
        };
        self.calls.spawn(send.in_current_span())
    }

    /// 4.1-4.2 in a new transaction: the claimed, priced cart, or the caller's answer
    /// when there is nothing to order. One transaction for the whole call: it claims the
    /// cart now and writes the order later, so the cart's row locks last from the read to
    /// the COMMIT; nothing is deducted yet, so a concurrent CreateOrder of the same cart
    /// fails here, before its Sell.
    pub(super) async fn claim(&self, call: &PlaceCall) -> ClaimOutcome {
        let mut tx = match self.placing.pool.begin().await {
            Ok(tx) => tx,
            Err(e) => return ClaimOutcome::Answered(Err(e.into())),
        };
        let claimed = crate::cart::claim_priced_cart(&mut tx, call.order.user_id);
        let lines = match self.placing.metrics.timed(Step::ClaimCart, claimed).await {
            Ok(lines) => lines,
            Err(e) => {
                let answer = earlier_attempt(&mut tx, call, e).await;
                abandon(tx).await;
                return ClaimOutcome::Answered(answer);
            }
        };
        let Some(total_cents) = order_total(lines.iter().map(|l| (l.price_cents, l.nums))) else {
            abandon(tx).await;
            return ClaimOutcome::Answered(Err(Error::FailedPrecondition(
                Reason::OrderTotalTooLarge,
                "the order total does not fit in 64-bit cents".into(),
            )));
        };
        ClaimOutcome::Claimed(Claim {
            tx,
            lines,
            total_cents,
        })
    }

    /// 4.3: Sell, between the fault points around it. A definitive refusal deducted
    /// nothing; anything else may have.
    pub(super) async fn sell(
        &self,
        call: &PlaceCall,
        items: Vec<proto::inventory::GoodsNum>,
    ) -> SellOutcome {
        let user_id = call.order.user_id;
        if faults::triggered("order.after_half_message", user_id) {
            let stop = injected("after_half_message");
            return SellOutcome::Stop(LocalTransactionState::Unknown, stop);
        }
        let sell = self.placing.inventory.sell(&call.order_sn, items);
        if let Err(status) = self.placing.metrics.timed(Step::Sell, sell).await {
            if is_definitive_refusal(&status) {
                return SellOutcome::Stop(KeepStock, Error::InventoryRefused(status));
            }
            INVENTORY.failed(&status.message());
            tracing::info!(code = ?status.code(), message = status.message(), "Sell outcome unknown");
            let unknown =
                Error::Unavailable(format!("inventory unavailable: {}", status.message()));
            return SellOutcome::Stop(ReturnStock, unknown);
        }
        if faults::triggered("order.after_sell", user_id) {
            let stop = injected("after_sell");
            return SellOutcome::Stop(LocalTransactionState::Unknown, stop);
        }
        SellOutcome::Deducted
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

/// The cart could not be claimed. With a request_id this may be a retry: an earlier
/// attempt with the same key placed the order (its COMMIT emptied the cart), or is
/// placing it right now (it holds the cart). Without one, `claim_failed` stands.
async fn earlier_attempt(
    tx: &mut MySqlConnection,
    call: &PlaceCall,
    claim_failed: Error,
) -> Result<OrderRow> {
    let Some(request_id) = call.order.request_id.as_deref() else {
        return Err(claim_failed);
    };
    match db::order_by_request(tx, call.order.user_id, request_id).await? {
        Some(order) => Ok(order),
        None if matches!(claim_failed, Error::Aborted(..)) => Err(Error::Aborted(
            Reason::RequestInProgress,
            "a request with this request_id may be in progress; retry with the same request_id"
                .into(),
        )),
        None => Err(claim_failed),
    }
}

/// Step 4.4's writes, in the transaction that claimed the cart: the barrier row
/// 'committed' first (the transaction's first write), then the order, its goods (name and
/// price snapshot) and the deletion of the ordered cart lines. Nothing is committed: the
/// call's COMMIT decides.
pub(super) async fn write_order_rows(
    tx: &mut MySqlConnection,
    call: &PlaceCall,
    lines: &[OrderGoodsRow],
    total_cents: i64,
) -> Result<OrderRow> {
    let user_id = call.order.user_id;
    if let Some(pause) = faults::pause("order.pause_before_barrier", user_id) {
        tokio::time::sleep(pause).await;
    }
    if !db::insert_committed_barrier(tx, &call.order_sn).await? {
        // A check-back (or a pay timeout that came before the order) already decided
        // "aborted": the reback is committed and the stock goes back, so this order must
        // not exist.
        return Err(Error::Unavailable(
            "the order was given up meanwhile (its stock goes back); please retry".into(),
        ));
    }
    // The only unique key a new order_sn can hit is (user_id, request_id): an earlier
    // attempt with the same key committed meanwhile. This one must not exist too.
    let order = db::insert_order(tx, &call.order_sn, &call.order, total_cents)
        .await
        .on_duplicate_key()?
        .ok_or_else(|| {
            Error::Aborted(
                Reason::RequestInProgress,
                "an order with this request_id was placed by another attempt; retry to get it"
                    .into(),
            )
        })?;
    db::insert_order_goods(tx, order.id, lines).await?;
    let goods_ids: Vec<i32> = lines.iter().map(|l| l.goods_id).collect();
    let deleted = db::delete_ordered_cart_lines(tx, user_id, &goods_ids).await?;
    if u64::try_from(lines.len()).ok() != Some(deleted) {
        // The claim's locks make this unreachable; if the cart changed anyway, this order
        // must not take lines another order took.
        return Err(Error::Aborted(
            Reason::ConcurrentChange,
            "the cart changed while it was being ordered; retry".into(),
        ));
    }
    if faults::triggered("order.fail_local_tx", user_id) {
        return Err(injected("fail_local_tx"));
    }
    Ok(order)
}

/// Ends a transaction that will not commit, before the caller hears of it: its row locks
/// (the claimed cart) are free when the caller retries. Dropping it would roll back too,
/// but only once its connection is back in the pool, after the caller may have retried.
pub(super) async fn abandon(tx: Transaction<'static, MySql>) {
    if let Err(e) = tx.rollback().await {
        // The connection is dropped then, and the server rolls back when it notices.
        tracing::warn!(error = %e, "rolling back the order's transaction failed");
    }
}

fn injected(point: &str) -> Error {
    Error::Unavailable(format!("injected fault at {point}"))
}

/// A part of the call that ended without saying how.
pub(super) fn lost(what: &str) -> Error {
    Error::Internal(format!("{what} was dropped"))
}

/// `<yyyymmddHHMMSS><user id><random>`: unique without coordination, sortable by time.
pub(super) fn new_order_sn(user_id: i64) -> String {
    let now = chrono::Utc::now().format("%Y%m%d%H%M%S");
    let random: u32 = rand::random_range(0..1_000_000_000);
    format!("{now}{user_id}{random:09}")
}
