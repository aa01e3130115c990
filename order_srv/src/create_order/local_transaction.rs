//! Steps 4.1-4.5: what the transaction listener does for the half message a CreateOrder
//! just stored, and the answer it gives the broker.
//!
//! | outcome | broker answer | stock |
//! |---|---|---|
//! | refused before Sell (cart claimed elsewhere, empty, unpriced, total too large) | Rollback | never deducted |
//! | Sell definitively refused | Rollback | never deducted |
//! | Sell outcome unknown | Commit | inventory returns it, or tombstones the order_sn |
//! | Sell deducted, then the writes or the pay-timeout send failed | Commit | returned |
//! | COMMIT itself fails | Unknown | the check-back reads the barrier and decides |
//! | COMMIT succeeded | Rollback | stays deducted: the order exists |

use std::{
    collections::HashMap,
    time::{Duration, Instant},
};

use mq::OrderSnBody;
use observe::grpc::Traced;
use proto::inventory::{self as inv, inventory_client::InventoryClient};
use rocketmq_client_rust::{DefaultMQProducer, LocalTransactionState};
use service_db::ResultExt;
use sqlx::{MySql, MySqlConnection, MySqlPool, Transaction};
use tokio::sync::oneshot;
use tonic::transport::Channel;

use super::{HalfMessage, PlaceCall};
use crate::{
    db::{self, OrderGoodsRow, OrderRow, PriceRow},
    domain::{MAX_CART_LINES, order_total},
    error::{Error, Reason, Result, is_definitive_refusal},
    faults,
    metrics::{OrderMetrics, Step},
};

use LocalTransactionState::{CommitMessage as ReturnStock, RollbackMessage as KeepStock};

/// Everything the local transaction of a CreateOrder uses; shared by every call, never
/// mutated by one.
pub struct LocalTransaction {
    pub pool: MySqlPool,
    /// Every Sell carries the order's trace context (see `observe::grpc::Traced`).
    pub inventory: InventoryClient<Traced<Channel>>,
    pub sell_timeout: Duration,
    pub timeout_producer: DefaultMQProducer,
    pub timeout_topic: String,
    pub pay_timeout: Duration,
    pub metrics: OrderMetrics,
}

/// Why the order was not written.
enum LocalTxError {
    /// COMMIT was never issued: nothing of the order exists.
    NotCommitted(Error),
    /// COMMIT was issued and failed: it may or may not have happened. Only the barrier
    /// knows; the check-back will read it.
    CommitUnknown(Error),
}

/// How the pay-timeout send (started with the half message) ended.
pub type PayTimeout = oneshot::Receiver<Result<()>>;

/// The order's writes in its open transaction (barrier row first), done beside the half
/// message and Sell; nothing of them is visible before COMMIT.
struct Written {
    tx: Transaction<'static, MySql>,
    order: std::result::Result<OrderRow, Error>,
}

/// What a claimed order's COMMIT waits for besides Sell: its writes, started at the claim,
/// and its pay-timeout message, sent with the half message.
struct Pending {
    /// What Sell deducts: the claimed lines' goods and quantities.
    items: Vec<inv::GoodsNum>,
    written: oneshot::Receiver<Written>,
    pay_timeout: PayTimeout,
}

impl Pending {
    /// The order will not be committed: waits for its writes to stop using the
    /// transaction, then rolls it back.
    async fn abandon(self) {
        if let Ok(written) = self.written.await {
            abandon(written.tx).await;
        }
    }
}

/// A claimed, priced cart in the order's open transaction.
struct Claim {
    tx: Transaction<'static, MySql>,
    lines: Vec<OrderGoodsRow>,
    total_cents: i64,
}

impl LocalTransaction {
    /// Steps 4.1-4.5 for one call: claims the cart while the half message and the
    /// pay-timeout message are on their way; from the claim on, the order's writes go
    /// beside them and beside Sell (sent once the half message is stored); COMMIT once Sell
    /// deducted, the writes are done and `pay_timeout` says the message is stored. Sends
    /// the listener its answer for the broker and returns the caller's result.
    #[tracing::instrument(name = "local_transaction", skip_all, fields(order_sn = %call.order_sn))]
    pub async fn run(
        &self,
        call: &PlaceCall,
        half_message: HalfMessage,
        pay_timeout: PayTimeout,
    ) -> Result<OrderRow> {
        // 4.1-4.2, beside step 3.
        let claim = match self.claim(call).await {
            Ok(claim) => claim,
            Err(refused) => {
                return self
                    .answer_once_stored(call, half_message, Err(refused))
                    .await;
            }
        };
        // What Sell will deduct, taken before the writes take the claim.
        let items = sell_items(&claim.lines);
        // The writes need only the claimed cart: they are uncommitted until COMMIT, which
        // waits for Sell. If the order stops before, they are rolled back unseen.
        let (wrote, written) = oneshot::channel();
        let write = async {
            let writing = Instant::now();
            let Claim {
                mut tx,
                lines,
                total_cents,
            } = claim;
            let order = write_order_rows(&mut tx, call, &lines, total_cents).await;
            self.metrics.step_took(Step::OrderWrites, writing.elapsed());
            let _ = wrote.send(Written { tx, order });
        };
        let pending = Pending {
            items,
            written,
            pay_timeout,
        };
        let (_, result) = tokio::join!(
            write,
            self.answer_once_stored(call, half_message, Ok(pending))
        );
        result
    }

    /// Step 4.4's pay-timeout message, sent beside the half message from the start of the
    /// call: it needs only to be stored before COMMIT, which waits for `stored`. Sent this
    /// early it is stored while the half message is, not while Sell runs (one broker
    /// request less competing with Sell for the cores). A call refused at its claim, or
    /// later, leaves a pay-timeout that finds no order: it claims the order's barrier, as a
    /// check-back would, and is acknowledged (`timeout::close_unpaid_order`).
    pub async fn pay_timeout(
        &self,
        order_sn: &str,
        user_id: i64,
        stored: oneshot::Sender<Result<()>>,
    ) {
        let sending = Instant::now();
        let outcome = if faults::triggered("order.drop_pay_timeout", user_id) {
            // A pay-timeout message the broker lost: "stored", never delivered. Only the
            // overdue sweep closes this order.
            Ok(())
        } else {
            self.send_pay_timeout(order_sn).await
        };
        self.metrics
            .step_took(Step::PayTimeoutSend, sending.elapsed());
        let _ = stored.send(outcome);
    }

    /// Waits for the half message to be stored, then decides (a refused claim: Rollback;
    /// a claimed cart: Sell and the local transaction) and sends the listener its answer.
    async fn answer_once_stored(
        &self,
        call: &PlaceCall,
        mut half_message: HalfMessage,
        claim: std::result::Result<Pending, Result<OrderRow>>,
    ) -> Result<OrderRow> {
        let answer = match half_message.stored().await {
            Ok(answer) => answer,
            // Not stored: nothing was deducted. A refused claim says more than the send.
            Err(not_stored) => {
                return match claim {
                    Err(refused) => refused,
                    Ok(pending) => {
                        pending.abandon().await;
                        Err(not_stored)
                    }
                };
            }
        };
        let (state, result) = match claim {
            // Refused before Sell: nothing deducted, the half message is rolled back.
            Err(refused) => (KeepStock, refused),
            Ok(pending) => self.sell_and_commit(call, pending).await,
        };
        // Counted before the caller hears back, so a caller that reads the metrics sees it.
        self.metrics.answered(state);
        call.answered();
        // The listener's future waits for this; it is gone only if the client gave up on
        // it, and then the check-back answers instead.
        let _ = answer.send(state);
        result
    }

    /// 4.1-4.2 in a new transaction: the claimed, priced cart, or the caller's answer
    /// when there is nothing to order.
    async fn claim(&self, call: &PlaceCall) -> std::result::Result<Claim, Result<OrderRow>> {
        // One transaction for the whole call: it claims the cart now and writes the order
        // later, so the cart's row locks last from the read to the COMMIT.
        let mut tx = self.pool.begin().await.map_err(|e| Err(e.into()))?;
        // Nothing is deducted yet, so a concurrent CreateOrder of the same cart fails
        // here, before its Sell.
        let claiming = Instant::now();
        let claimed = claim_priced_cart(&mut tx, call.order.user_id).await;
        self.metrics.step_took(Step::ClaimCart, claiming.elapsed());
        let lines = match claimed {
            Ok(lines) => lines,
            Err(e) => {
                let answer = self.earlier_attempt(&mut tx, call, e).await;
                abandon(tx).await;
                return Err(answer);
            }
        };
        let Some(total_cents) = order_total(lines.iter().map(|l| (l.price_cents, l.nums))) else {
            abandon(tx).await;
            return Err(Err(Error::FailedPrecondition(
                Reason::OrderTotalTooLarge,
                "the order total does not fit in 64-bit cents".into(),
            )));
        };
        Ok(Claim {
            tx,
            lines,
            total_cents,
        })
    }

    /// 4.3-4.5, once the half message is stored: Sell, then COMMIT. Returns the broker
    /// answer and the caller's result.
    async fn sell_and_commit(
        &self,
        call: &PlaceCall,
        pending: Pending,
    ) -> (LocalTransactionState, Result<OrderRow>) {
        let user_id = call.order.user_id;
        if let Some(stopped) = self.sell_step(call, &pending.items).await {
            pending.abandon().await;
            return stopped;
        }

        // 4.4: COMMIT, once the writes are done and the pay-timeout is stored.
        let committing = Instant::now();
        let committed = self.commit_order(call, pending).await;
        self.metrics.step_took(Step::Commit, committing.elapsed());
        match committed {
            // 4.5: committed. Roll the half message back: the deduction stays.
            Ok(order) => {
                if faults::triggered("order.after_local_commit", user_id) {
                    // As if END_TRANSACTION were lost: the check-back must find "committed".
                    return (LocalTransactionState::Unknown, Ok(order));
                }
                (KeepStock, Ok(order))
            }
            Err(LocalTxError::NotCommitted(e)) => (ReturnStock, Err(e)),
            Err(LocalTxError::CommitUnknown(e)) => (LocalTransactionState::Unknown, Err(e)),
        }
    }

    /// 4.3: Sell, between the fault points around it; the broker answer and the caller's
    /// result when the order stops here.
    async fn sell_step(
        &self,
        call: &PlaceCall,
        items: &[inv::GoodsNum],
    ) -> Option<(LocalTransactionState, Result<OrderRow>)> {
        let user_id = call.order.user_id;
        if faults::triggered("order.after_half_message", user_id) {
            return Some((
                LocalTransactionState::Unknown,
                Err(injected("after_half_message")),
            ));
        }
        // A definitive refusal deducted nothing; anything else may have.
        let selling = Instant::now();
        let sold = self.sell(&call.order_sn, items).await;
        self.metrics.step_took(Step::Sell, selling.elapsed());
        if let Err(status) = sold {
            return Some(if is_definitive_refusal(&status) {
                (KeepStock, Err(Error::InventoryRefused(status)))
            } else {
                crate::inventory::INVENTORY.failed(&status.message());
                tracing::info!(code = ?status.code(), message = status.message(), "Sell outcome unknown");
                (
                    ReturnStock,
                    Err(Error::Unavailable(format!(
                        "inventory unavailable: {}",
                        status.message()
                    ))),
                )
            });
        }
        if faults::triggered("order.after_sell", user_id) {
            return Some((LocalTransactionState::Unknown, Err(injected("after_sell"))));
        }
        None
    }

    /// The cart could not be claimed. With a request_id this may be a retry: an earlier
    /// attempt with the same key placed the order (its COMMIT emptied the cart), or is
    /// placing it right now (it holds the cart). Without one, `claim_failed` stands.
    async fn earlier_attempt(
        &self,
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

    /// Step 4.3: `Sell(order_sn, items)` with a deadline.
    #[tracing::instrument(skip_all, fields(otel.name = "Sell", otel.kind = "client"))]
    async fn sell(&self, order_sn: &str, items: &[inv::GoodsNum]) -> Result<(), tonic::Status> {
        let mut request = tonic::Request::new(inv::SellRequest {
            order_sn: order_sn.to_owned(),
            items: items.to_vec(),
        });
        request.set_timeout(self.sell_timeout);
        let mut client = self.inventory.clone();
        match tokio::time::timeout(self.sell_timeout, client.sell(request)).await {
            Ok(Ok(_)) => {
                crate::inventory::INVENTORY.answered();
                Ok(())
            }
            Ok(Err(status)) => {
                if is_definitive_refusal(&status) {
                    crate::inventory::INVENTORY.answered();
                }
                Err(status)
            }
            Err(_) => Err(tonic::Status::deadline_exceeded("Sell deadline passed")),
        }
    }

    /// Step 4.4's COMMIT, once Sell deducted the stock: when the order's writes are done
    /// and the pay-timeout message (sent with the half message) is stored.
    async fn commit_order(
        &self,
        call: &PlaceCall,
        pending: Pending,
    ) -> Result<OrderRow, LocalTxError> {
        let not_committed = LocalTxError::NotCommitted;
        let pay_timeout = async {
            pending
                .pay_timeout
                .await
                .unwrap_or_else(|_| Err(Error::Internal("the pay-timeout send was dropped".into())))
        };
        let (written, sent) = tokio::join!(pending.written, pay_timeout);
        let Ok(Written { tx, order }) = written else {
            return Err(not_committed(Error::Internal(
                "the order's writes were dropped".into(),
            )));
        };
        let order = match order.and_then(|order| sent.map(|()| order)) {
            Ok(order) => order,
            Err(e) => {
                abandon(tx).await;
                return Err(not_committed(e));
            }
        };
        if let Some(pause) = faults::pause("order.pause_before_commit", call.order.user_id) {
            tokio::time::sleep(pause).await;
        }
        tx.commit()
            .await
            .map_err(|e| LocalTxError::CommitUnknown(e.into()))?;
        Ok(order)
    }

    /// The delayed `order_timeout` message. Sent before COMMIT: if the commit then fails,
    /// the timeout finds no order and is acknowledged; the other order would be an order
    /// that never times out.
    #[tracing::instrument(skip_all, fields(otel.kind = "producer"))]
    async fn send_pay_timeout(&self, order_sn: &str) -> Result<()> {
        let send = || async {
            let message = OrderSnBody::new(order_sn)
                .delayed_message(&self.timeout_topic, self.pay_timeout)?;
            Ok::<_, mq::MqError>(self.timeout_producer.send(message).await)
        };
        let mut sent = send().await?;
        // Once more after a transport failure (a broker just stopped; see
        // `OrderPlacer::send_half_message`): a second pay-timeout of the same order is
        // harmless, the consumer closes an order only while it waits for payment.
        if let Err(e) = &sent
            && mq::is_transport_failure(e)
        {
            tracing::info!(error = %mq::describe(e), "pay-timeout not sent; sending it once more");
            sent = send().await?;
        }
        sent.map_err(|e| {
            Error::Unavailable(format!(
                "pay-timeout message not sent: {}",
                mq::describe(&e)
            ))
        })?;
        Ok(())
    }
}

/// Step 4.4's writes, in the transaction that claimed the cart: the barrier row
/// 'committed' first (the transaction's first write), then the order, its goods (name and
/// price snapshot) and the deletion of the ordered cart lines. Nothing is committed:
/// [`LocalTransaction::commit_order`] decides.
async fn write_order_rows(
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

/// What Sell deducts for these claimed lines: each goods and its quantity.
pub fn sell_items(lines: &[OrderGoodsRow]) -> Vec<inv::GoodsNum> {
    lines
        .iter()
        .map(|l| inv::GoodsNum {
            goods_id: l.goods_id,
            num: l.nums,
        })
        .collect()
}

/// Steps 4.1-4.2: the user's checked cart lines, claimed for this order, priced from the
/// server's price list.
///
/// The claim is a row lock on the cart lines (`FOR UPDATE NOWAIT`) taken in the order's
/// own transaction: it lasts until that transaction commits (the lines are deleted) or
/// ends otherwise (the lines are free again), and it dies with the connection when the
/// process does, so there is never a claim to clean up. A second CreateOrder of the same
/// cart meets the lock and fails at once with ABORTED, before it has deducted anything.
pub async fn claim_priced_cart(
    tx: &mut MySqlConnection,
    user_id: i64,
) -> Result<Vec<OrderGoodsRow>> {
    let cart = match db::lock_checked_cart(tx, user_id).await {
        Ok(cart) => cart,
        Err(e) if service_db::errors::is_lock_not_granted(&e) => {
            return Err(Error::Aborted(
                Reason::CartInUse,
                "the cart is being ordered by a concurrent request; retry to see its outcome"
                    .into(),
            ));
        }
        Err(e) => return Err(e.into()),
    };
    if cart.is_empty() {
        return Err(Error::FailedPrecondition(
            Reason::CartEmpty,
            "no checked items in the cart".into(),
        ));
    }
    if i64::try_from(cart.len()).map_or(true, |n| n > MAX_CART_LINES) {
        return Err(Error::FailedPrecondition(
            Reason::CartFull,
            format!("an order may hold at most {MAX_CART_LINES} different goods"),
        ));
    }
    let goods_ids: Vec<i32> = cart.iter().map(|(goods_id, _)| *goods_id).collect();
    let mut prices: HashMap<i32, PriceRow> = db::prices_of(tx, &goods_ids)
        .await?
        .into_iter()
        .map(|p| (p.id, p))
        .collect();
    cart.into_iter()
        .map(|(goods_id, nums)| {
            let price = prices.remove(&goods_id).ok_or_else(|| {
                Error::NotFound(Reason::GoodsNotFound, format!("goods {goods_id} not found"))
            })?;
            Ok(OrderGoodsRow {
                goods_id,
                goods_name: price.name,
                price_cents: price.price_cents,
                nums,
            })
        })
        .collect()
}

/// Ends a transaction that will not commit, before the caller hears of it: its row locks
/// (the claimed cart) are free when the caller retries. Dropping it would roll back too,
/// but only once its connection is back in the pool, after the caller may have retried.
async fn abandon(tx: Transaction<'static, MySql>) {
    if let Err(e) = tx.rollback().await {
        // The connection is dropped then, and the server rolls back when it notices.
        tracing::warn!(error = %e, "rolling back the order's transaction failed");
    }
}

fn injected(point: &str) -> Error {
    Error::Unavailable(format!("injected fault at {point}"))
}
