//! Closing an unpaid order and giving its stock back (DESIGN.md §7): the `order_timeout`
//! handler, and CancelOrder (the buyer's close, DESIGN.md §11), which take the same path.
//!
//! The close is one conditional UPDATE (`WHERE status = 'WAIT_BUYER_PAY'`), so it races a
//! payment safely: exactly one of them moves the order. The plain `order_reback` is sent
//! only after the close committed, and whenever the order is closed, also on a
//! redelivery: if the first send failed, the broker redelivers this message and the
//! send is repeated; inventory's reback is idempotent. A pay timeout that finds no order
//! claims the order's barrier first (`committed_meanwhile`), so an order still being
//! placed is either closed once it commits or never written.

use std::sync::Arc;

use observe::{Histogram, IntCounter, Registry};

use mq::{Delivery, Handler, OrderSnBody, Outcome};
use rocketmq_client_rust::DefaultMQProducer;
use sqlx::MySqlPool;

use crate::{
    db::{self, OrderRow},
    domain,
    domain::OrderStatus,
    error::{Error, Reason, Result},
    faults,
};

/// What the consumer has done since start: Prometheus counters (`/metrics`), also read
/// by tests.
#[derive(Debug, Clone)]
pub struct TimeoutCounters {
    pub closed: IntCounter,
    pub rebacks_sent: IntCounter,
    /// Paid orders acknowledged untouched, and pay timeouts of orders that never exist
    /// (acknowledged once their barrier says "aborted").
    pub left_alone: IntCounter,
    pub retried: IntCounter,
    pub dead: IntCounter,
    /// How long handling one delivery took (`order_pay_timeout_seconds`).
    pub handled_seconds: Histogram,
}

impl TimeoutCounters {
    pub fn register(registry: &Registry) -> Self {
        let timeouts = observe::counter_vec(
            registry,
            "order_pay_timeouts_total",
            "order_timeout messages handled, by outcome",
            &["outcome"],
        );
        let single = |name: &str, help: &str| {
            observe::counter_vec(registry, name, help, &[]).with_label_values(&[] as &[&str])
        };
        Self {
            closed: timeouts.with_label_values(&["closed"]),
            left_alone: timeouts.with_label_values(&["left_alone"]),
            rebacks_sent: single(
                "order_rebacks_sent_total",
                "plain order_reback messages sent for closed orders",
            ),
            retried: single(
                "order_timeout_retries_total",
                "order_timeout deliveries that asked for redelivery",
            ),
            dead: single(
                "order_dead_messages_total",
                "malformed messages recorded in dead_message",
            ),
            handled_seconds: observe::latency_vec(
                registry,
                "order_pay_timeout_seconds",
                "latency of handling one order_timeout delivery",
                &[],
            )
            .with_label_values(&[] as &[&str]),
        }
    }
}

impl Default for TimeoutCounters {
    fn default() -> Self {
        Self::register(&Registry::new())
    }
}

/// Closes unpaid orders: the `order_timeout` handler and CancelOrder.
pub struct OrderCloser {
    pub pool: MySqlPool,
    pub producer: DefaultMQProducer,
    pub reback_topic: String,
    pub counters: Arc<TimeoutCounters>,
}

impl Handler for OrderCloser {
    async fn handle(&self, delivery: &Delivery) -> Outcome {
        let started = std::time::Instant::now();
        let outcome = self.close_on_timeout(delivery).await;
        self.counters
            .handled_seconds
            .observe(started.elapsed().as_secs_f64());
        outcome
    }

    async fn bury(&self, delivery: &Delivery, reason: &str) -> std::result::Result<(), String> {
        service_db::bury(&self.pool, delivery, reason).await?;
        self.counters.dead.inc();
        Ok(())
    }
}

impl OrderCloser {
    #[tracing::instrument(skip_all, fields(order_sn))]
    async fn close_on_timeout(&self, delivery: &Delivery) -> Outcome {
        let order_sn = OrderSnBody::parse(Some(&delivery.body))
            .ok_or_else(|| "body is not {\"order_sn\": \"...\"}".to_owned())
            .and_then(|b| domain::order_sn(&b.order_sn).map_err(|e| e.to_string()));
        let order_sn = match order_sn {
            Ok(sn) => sn,
            Err(reason) => return Outcome::Dead(reason),
        };
        tracing::Span::current().record("order_sn", order_sn.as_str());
        match close_unpaid_order(self, &order_sn).await {
            Ok(()) => Outcome::Done,
            Err(e) => {
                self.counters.retried.inc();
                Outcome::Retry(format!("pay timeout failed: {e}"))
            }
        }
    }
}

impl OrderCloser {
    /// CancelOrder: the buyer closes their unpaid order; its stock comes back exactly
    /// once (the same conditional close and reback as the pay timeout, so cancel, payment
    /// and timeout racing on one order end with exactly one winner). Cancelling an order
    /// that is already closed repeats the reback (idempotent in inventory) and succeeds;
    /// a paid order is refused; someone else's order is not found.
    #[tracing::instrument(skip(self))]
    pub async fn cancel(&self, order_sn: &str, user_id: i64) -> Result<OrderRow> {
        let not_found =
            || Error::NotFound(Reason::OrderNotFound, format!("order {order_sn} not found"));
        let mut conn = self.pool.acquire().await?;
        let owner = db::order_by_sn(&mut conn, order_sn)
            .await?
            .ok_or_else(not_found)?;
        if owner.user_id != user_id {
            return Err(not_found());
        }
        drop(conn);
        close_unpaid_order(self, order_sn).await?;
        let mut conn = self.pool.acquire().await?;
        let order = db::order_by_sn(&mut conn, order_sn)
            .await?
            .ok_or_else(not_found)?;
        if order.status != OrderStatus::TradeClosed {
            return Err(Error::FailedPrecondition(
                Reason::OrderStatus,
                format!(
                    "order {order_sn} is {}; only an unpaid order can be cancelled",
                    order.status.as_str()
                ),
            ));
        }
        Ok(order)
    }
}

/// Closes the order if it is still unpaid; sends the reback whenever it is closed.
pub async fn close_unpaid_order(deps: &OrderCloser, order_sn: &str) -> Result<()> {
    let mut conn = deps.pool.acquire().await?;
    // Looked up before the close, not after: an order committed between a close that
    // found nothing and a read that finds it unpaid would never be closed.
    if db::order_by_sn(&mut conn, order_sn).await?.is_none()
        && !committed_meanwhile(&mut conn, order_sn).await?
    {
        // Its local transaction never committed and now never will: nothing to close or
        // return here (the half message's own answer or check-back returns its stock).
        tracing::info!("pay timeout of an order that does not exist; acknowledged");
        deps.counters.left_alone.inc();
        return Ok(());
    }
    let closed_now = db::transition_status(
        &mut conn,
        order_sn,
        &[OrderStatus::WaitBuyerPay],
        OrderStatus::TradeClosed,
        "",
        "",
    )
    .await?;
    let Some(OrderRow {
        status, user_id, ..
    }) = db::order_by_sn(&mut conn, order_sn).await?
    else {
        // Order rows are never deleted; this one committed before the close.
        return Err(Error::Internal(format!(
            "order {order_sn} vanished while its pay timeout closed it"
        )));
    };
    drop(conn);
    if closed_now {
        deps.counters.closed.inc();
        tracing::info!("unpaid order closed");
    }
    if status != OrderStatus::TradeClosed {
        tracing::info!(status = ?status, "order paid or moving on; left alone");
        deps.counters.left_alone.inc();
        return Ok(());
    }
    send_reback(deps, order_sn, user_id).await
}

/// A pay timeout found no order: its CreateOrder was refused or failed, or is still
/// running (the pay-timeout is sent with the half message, and may be delivered before
/// COMMIT when the call takes longer than `ORDER_PAY_TIMEOUT`). Claims the order's barrier
/// as the check-back does (`create_order::check_back`): a local transaction that holds its
/// barrier row is waited for, and `true` means it committed; otherwise the barrier now
/// says "aborted" and that order can never be written (its own barrier insert fails).
/// Without the claim, an order committed after its pay timeout came would never close.
async fn committed_meanwhile(conn: &mut sqlx::MySqlConnection, order_sn: &str) -> Result<bool> {
    let outcome = crate::create_order::check_back::claim_barrier(conn, order_sn).await?;
    Ok(outcome == Some(db::BarrierOutcome::Committed))
}

async fn send_reback(deps: &OrderCloser, order_sn: &str, user_id: i64) -> Result<()> {
    if faults::triggered("order.fail_reback_send", user_id) {
        return Err(Error::Unavailable(
            "injected fault at fail_reback_send".into(),
        ));
    }
    let message = OrderSnBody::new(order_sn).message(&deps.reback_topic)?;
    deps.producer
        .send(message)
        .await
        .map_err(|e| Error::Unavailable(format!("reback not sent: {}", mq::describe(&e))))?;
    deps.counters.rebacks_sent.inc();
    tracing::info!("reback sent for the closed order");
    Ok(())
}
