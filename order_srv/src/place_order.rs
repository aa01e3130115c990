//! CreateOrder over a transactional reback message (DESIGN.md §4).
//!
//! The half message on `order_reback` ("give this order's stock back") is stored *before*
//! inventory is touched. The local transaction decides its fate: Rollback when the order
//! committed (the deduction stays), Commit when it failed after stock may have been
//! deducted (inventory returns it, or tombstones the order_sn so a late Sell is refused).
//! When this process dies in between, the broker asks `check_back`, which answers from the
//! `tx_barrier` table.

use std::{
    any::Any,
    collections::HashMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use mq::OrderSnBody;
use proto::inventory::{self as inv, inventory_client::InventoryClient};
use rocketmq_client_rust::{
    DefaultMQProducer, LocalTransactionState, TransactionListener, TransactionMQProducer,
};
use rocketmq_model::common::message::{MessageTrait, message_ext::MessageExt};
use sqlx::{MySql, MySqlConnection, MySqlPool, Transaction};
use tokio::runtime::Handle;
use tonic::transport::Channel;

use crate::{
    check_back,
    db::{self, OrderGoodsRow, OrderRow, PriceRow},
    domain::{MAX_CART_LINES, NewOrder, order_total},
    error::{Error, Result, is_definitive_refusal},
    faults,
};

/// What the transaction listener needs; shared by every call, never mutated by one.
pub struct PlaceDeps {
    pub metrics: crate::metrics::OrderMetrics,
    pub pool: MySqlPool,
    pub inventory: InventoryClient<Channel>,
    pub sell_timeout: Duration,
    pub timeout_producer: DefaultMQProducer,
    pub timeout_topic: String,
    pub pay_timeout: Duration,
}

/// One CreateOrder call, travelling to the listener through the send's `arg`. The
/// listener leaves the call's result here: nothing about one call is stored in fields
/// that another call could see.
struct PlaceCall {
    order_sn: String,
    order: NewOrder,
    result: Mutex<Option<Result<OrderRow>>>,
}

impl PlaceCall {
    fn finish(&self, result: Result<OrderRow>) {
        if let Ok(mut slot) = self.result.lock() {
            *slot = Some(result);
        }
    }

    fn take(&self) -> Option<Result<OrderRow>> {
        self.result.lock().ok().and_then(|mut slot| slot.take())
    }
}

/// Places orders: owns the transactional producer of `order_reback`.
pub struct OrderPlacer {
    producer: TransactionMQProducer,
    reback_topic: String,
}

impl OrderPlacer {
    pub fn new(producer: TransactionMQProducer, reback_topic: String) -> Self {
        Self {
            producer,
            reback_topic,
        }
    }

    /// Runs the whole CreateOrder protocol for one request.
    #[tracing::instrument(skip_all, fields(user_id = order.user_id, order_sn))]
    pub async fn place(&self, order: NewOrder) -> Result<OrderRow> {
        let order_sn = new_order_sn(order.user_id);
        tracing::Span::current().record("order_sn", order_sn.as_str());
        let message = OrderSnBody::new(order_sn.as_str())
            .message(&self.reback_topic)
            .map_err(|e| Error::Internal(e.to_string()))?;
        let call = Arc::new(PlaceCall {
            order_sn,
            order,
            result: Mutex::new(None),
        });
        let sent = self
            .producer
            .send_message_in_transaction(message, Some(call.clone()))
            .await;
        if let Err(e) = sent {
            // The half message was not stored: nothing was touched.
            let reason = mq::describe(&e);
            tracing::warn!(error = %reason, "half message not stored");
            return Err(Error::Unavailable(format!(
                "message broker unavailable: {reason}"
            )));
        }
        call.take().unwrap_or_else(|| {
            // The client did not run the listener (e.g. no worker slot): the broker's
            // check-back will find no barrier row and return whatever may be deducted.
            Err(Error::Unavailable(
                "order outcome unknown; it will be rolled back".into(),
            ))
        })
    }

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

/// The transaction listener of the `order_reback` producer group.
pub struct RebackTxListener {
    deps: Arc<PlaceDeps>,
    handle: Handle,
}

impl RebackTxListener {
    /// `handle` is the service's runtime: the client calls the listener on its own
    /// blocking threads, which hand the async work to that runtime and wait for it.
    pub fn new(deps: Arc<PlaceDeps>, handle: Handle) -> Self {
        Self { deps, handle }
    }
}

impl TransactionListener for RebackTxListener {
    fn execute_local_transaction(
        &self,
        _msg: &dyn MessageTrait,
        arg: Option<&(dyn Any + Send + Sync)>,
    ) -> LocalTransactionState {
        let Some(call) = arg.and_then(|a| a.downcast_ref::<Arc<PlaceCall>>()) else {
            // Only `place` sends on this group, always with a call.
            tracing::error!("transaction listener called without a CreateOrder call");
            return LocalTransactionState::RollbackMessage;
        };
        let (deps, task_call) = (self.deps.clone(), call.clone());
        let (state, result) = self
            .run_on_service_runtime(async move { execute(&deps, &task_call).await })
            .unwrap_or_else(|| {
                // The task died (a panic): nothing is known, the check-back decides.
                (
                    LocalTransactionState::Unknown,
                    Err(Error::Internal("local transaction task failed".into())),
                )
            });
        tracing::debug!(order_sn = %call.order_sn, ?state, ok = result.is_ok(), "local transaction done");
        self.deps.metrics.answered(state);
        call.finish(result);
        state
    }

    fn check_local_transaction(&self, msg: &MessageExt) -> LocalTransactionState {
        let Some(body) = OrderSnBody::parse(msg.body().as_deref()) else {
            // Nothing here sends such a message: it cannot stand for an order.
            tracing::error!(msg_id = %msg.msg_id(), "check-back of a malformed reback; rolling it back");
            return LocalTransactionState::RollbackMessage;
        };
        let pool = self.deps.pool.clone();
        let state = self
            .run_on_service_runtime(async move { check_back::answer(&pool, &body.order_sn).await })
            .unwrap_or(LocalTransactionState::Unknown);
        self.deps.metrics.checked_back(state);
        state
    }
}

impl RebackTxListener {
    /// Runs `work` as a task of the service's runtime and parks this (blocking) thread
    /// until it is done. Running it here with `block_on` would work too, but then every
    /// I/O wake-up crosses from the runtime's driver to this thread; measured under load,
    /// those context switches were the largest cost of a CreateOrder.
    fn run_on_service_runtime<T: Send + 'static>(
        &self,
        work: impl Future<Output = T> + Send + 'static,
    ) -> Option<T> {
        let (done, outcome) = std::sync::mpsc::sync_channel(1);
        self.handle.spawn(async move {
            let _ = done.send(work.await);
        });
        outcome.recv().ok()
    }
}

/// Steps 4.1-4.5 of DESIGN.md §4. Returns the broker answer and the caller's result.
#[tracing::instrument(skip_all, fields(order_sn = %call.order_sn))]
async fn execute(deps: &PlaceDeps, call: &PlaceCall) -> (LocalTransactionState, Result<OrderRow>) {
    use LocalTransactionState::{CommitMessage as ReturnStock, RollbackMessage as KeepStock};
    let user_id = call.order.user_id;
    if faults::triggered("order.after_half_message", user_id) {
        return (
            LocalTransactionState::Unknown,
            Err(injected("after_half_message")),
        );
    }

    // One transaction for the whole call: it claims the cart now and writes the order
    // later, so the cart's row locks last from the read to the COMMIT.
    let mut tx = match deps.pool.begin().await {
        Ok(tx) => tx,
        Err(e) => return (KeepStock, Err(e.into())),
    };

    // 1-2: claim the checked cart and price it on the server. Nothing is deducted yet, so
    // a concurrent CreateOrder of the same cart fails here, before its Sell.
    let lines = match claim_priced_cart(&mut tx, user_id).await {
        Ok(lines) => lines,
        Err(e) => return (KeepStock, Err(e)),
    };
    let Some(total_cents) = order_total(lines.iter().map(|l| (l.price_cents, l.nums))) else {
        return (
            KeepStock,
            Err(Error::FailedPrecondition(
                "the order total does not fit in 64-bit cents".into(),
            )),
        );
    };

    // 3: Sell. A definitive refusal deducted nothing; anything else may have deducted.
    if let Err(status) = sell(deps, &call.order_sn, &lines).await {
        return if is_definitive_refusal(&status) {
            (KeepStock, Err(Error::InventoryRefused(status)))
        } else {
            tracing::warn!(code = ?status.code(), message = status.message(), "Sell outcome unknown");
            (
                ReturnStock,
                Err(Error::Unavailable(format!(
                    "inventory unavailable: {}",
                    status.message()
                ))),
            )
        };
    }
    if faults::triggered("order.after_sell", user_id) {
        return (LocalTransactionState::Unknown, Err(injected("after_sell")));
    }

    // 4: the local transaction, barrier row first.
    match write_order(deps, tx, call, &lines, total_cents).await {
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

fn injected(point: &str) -> Error {
    Error::Unavailable(format!("injected fault at {point}"))
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
        Err(e) if db::is_lock_not_granted(&e) => {
            return Err(Error::Aborted(
                "the cart is being ordered by a concurrent request; retry to see its outcome"
                    .into(),
            ));
        }
        Err(e) => return Err(e.into()),
    };
    if cart.is_empty() {
        return Err(Error::FailedPrecondition(
            "no checked items in the cart".into(),
        ));
    }
    if i64::try_from(cart.len()).map_or(true, |n| n > MAX_CART_LINES) {
        return Err(Error::FailedPrecondition(format!(
            "an order may hold at most {MAX_CART_LINES} different goods"
        )));
    }
    let goods_ids: Vec<i32> = cart.iter().map(|(goods_id, _)| *goods_id).collect();
    let mut prices: HashMap<i32, PriceRow> = db::prices_of(tx, &goods_ids)
        .await?
        .into_iter()
        .map(|p| (p.id, p))
        .collect();
    cart.into_iter()
        .map(|(goods_id, nums)| {
            let price = prices
                .remove(&goods_id)
                .ok_or_else(|| Error::NotFound(format!("goods {goods_id} not found")))?;
            Ok(OrderGoodsRow {
                goods_id,
                goods_name: price.name,
                price_cents: price.price_cents,
                nums,
            })
        })
        .collect()
}

async fn sell(
    deps: &PlaceDeps,
    order_sn: &str,
    lines: &[OrderGoodsRow],
) -> Result<(), tonic::Status> {
    let mut request = tonic::Request::new(inv::SellRequest {
        order_sn: order_sn.to_owned(),
        items: lines
            .iter()
            .map(|l| inv::GoodsNum {
                goods_id: l.goods_id,
                num: l.nums,
            })
            .collect(),
    });
    request.set_timeout(deps.sell_timeout);
    let mut client = deps.inventory.clone();
    match tokio::time::timeout(deps.sell_timeout, client.sell(request)).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(status)) => Err(status),
        Err(_) => Err(tonic::Status::deadline_exceeded("Sell deadline passed")),
    }
}

enum LocalTxError {
    /// COMMIT was never issued: nothing of the order exists.
    NotCommitted(Error),
    /// COMMIT was issued and failed: it may or may not have happened. Only the
    /// barrier knows; the check-back will read it.
    CommitUnknown(Error),
}

/// Steps 4.3-4.4, in the transaction that claimed the cart: the barrier row first (the
/// first write), then the order, its goods, the cart lines, the pay-timeout message, COMMIT.
async fn write_order(
    deps: &PlaceDeps,
    mut tx: Transaction<'static, MySql>,
    call: &PlaceCall,
    lines: &[OrderGoodsRow],
    total_cents: i64,
) -> Result<OrderRow, LocalTxError> {
    let not_committed = |e: Error| LocalTxError::NotCommitted(e);
    if let Some(pause) = faults::pause("order.pause_before_barrier", call.order.user_id) {
        tokio::time::sleep(pause).await;
    }
    let claimed = db::insert_committed_barrier(&mut tx, &call.order_sn)
        .await
        .map_err(|e| not_committed(e.into()))?;
    if !claimed {
        // A check-back already answered "aborted": the reback is committed and the
        // stock goes back, so this order must not exist.
        return Err(not_committed(Error::Unavailable(
            "order took too long and was rolled back; please retry".into(),
        )));
    }
    let order = db::insert_order(&mut tx, &call.order_sn, &call.order, total_cents)
        .await
        .map_err(|e| not_committed(e.into()))?;
    db::insert_order_goods(&mut tx, order.id, lines)
        .await
        .map_err(|e| not_committed(e.into()))?;
    let goods_ids: Vec<i32> = lines.iter().map(|l| l.goods_id).collect();
    let deleted = db::delete_ordered_cart_lines(&mut tx, call.order.user_id, &goods_ids)
        .await
        .map_err(|e| not_committed(e.into()))?;
    if u64::try_from(lines.len()).ok() != Some(deleted) {
        // The claim's locks make this unreachable; if the cart changed anyway, this
        // order must not take lines another order took.
        return Err(not_committed(Error::Aborted(
            "the cart changed while it was being ordered; retry".into(),
        )));
    }
    if faults::triggered("order.fail_local_tx", call.order.user_id) {
        return Err(not_committed(injected("fail_local_tx")));
    }
    send_pay_timeout(deps, &call.order_sn)
        .await
        .map_err(not_committed)?;
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
async fn send_pay_timeout(deps: &PlaceDeps, order_sn: &str) -> Result<()> {
    let message = OrderSnBody::new(order_sn)
        .delayed_message(&deps.timeout_topic, deps.pay_timeout)
        .map_err(|e| Error::Internal(e.to_string()))?;
    deps.timeout_producer.send(message).await.map_err(|e| {
        Error::Unavailable(format!(
            "pay-timeout message not sent: {}",
            mq::describe(&e)
        ))
    })?;
    Ok(())
}
