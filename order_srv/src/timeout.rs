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
//!
//! The overdue-order sweep ([`sweep_overdue`], DESIGN.md §13) is the safety net for a
//! pay-timeout message that is lost or stuck: an unpaid order well past its pay timeout is
//! closed through the same conditional close, counted apart
//! (`order_overdue_closed_total`) and marked `closed_by = 'sweep'`, so a timer that stops
//! shows in the metrics and the audit instead of being hidden by the sweep.

use std::{sync::Arc, time::Duration};

use observe::{Histogram, IntCounter, Registry};

use mq::{Delivery, Handler, OrderSnBody, Outcome};
use rocketmq_client_rust::DefaultMQProducer;
use sqlx::MySqlPool;

use crate::{
    db::{self, CloseCause, OrderRow},
    domain,
    domain::OrderStatus,
    error::{Error, Reason, Result},
    faults,
};

/// Sends a new order's delayed `order_timeout` message (step 4.4 of CreateOrder: stored
/// before COMMIT, so no committed order lacks one; an order that then fails to commit
/// leaves a pay timeout that finds no order and is acknowledged).
pub struct PayTimeoutSender {
    pub producer: DefaultMQProducer,
    pub topic: String,
    /// How long an order may wait for payment (`ORDER_PAY_TIMEOUT`).
    pub pay_within: Duration,
}

impl PayTimeoutSender {
    #[tracing::instrument(name = "send_pay_timeout", skip_all, fields(otel.kind = "producer"))]
    pub async fn send(&self, order_sn: &str) -> Result<()> {
        let send = || async {
            let message =
                OrderSnBody::new(order_sn).delayed_message(&self.topic, self.pay_within)?;
            Ok::<_, mq::MqError>(self.producer.send(message).await)
        };
        let mut sent = send().await?;
        // Once more after a transport failure (a broker just stopped; see
        // `OrderPlacer::send_half_message`): a second pay timeout of the same order is
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
    /// How long after it was due a pay-timeout message was first handled (its send time
    /// plus the pay timeout, by the sender's clock): the timer's and the consumer's lag.
    pub lateness_seconds: Histogram,
    /// Orders the overdue sweep closed: each one a pay-timeout message lost or late.
    pub swept: IntCounter,
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
            lateness_seconds: observe::histogram(
                registry,
                "order_pay_timeout_lateness_seconds",
                "how long after it was due a pay-timeout message was first handled",
                &[0.5, 1.0, 2.0, 3.0, 5.0, 10.0, 30.0, 60.0, 300.0, 1800.0],
            ),
            swept: single(
                "order_overdue_closed_total",
                "unpaid orders closed by the overdue sweep (their pay-timeout message lost or late)",
            ),
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
    /// The delay of the pay-timeout messages (for their lateness).
    pub pay_timeout: Duration,
}

impl Handler for OrderCloser {
    async fn handle(&self, delivery: &Delivery) -> Outcome {
        let started = std::time::Instant::now();
        if delivery.reconsume_times == 0 {
            self.observe_lateness(delivery.born_at_ms);
        }
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
    fn observe_lateness(&self, born_at_ms: i64) {
        let now_ms = chrono::Utc::now().timestamp_millis();
        let pay_timeout_ms = i64::try_from(self.pay_timeout.as_millis()).unwrap_or(i64::MAX);
        let late_ms = now_ms
            .saturating_sub(born_at_ms)
            .saturating_sub(pay_timeout_ms);
        // A message delivered early (or a clock ahead of this one) counts as on time.
        self.counters
            .lateness_seconds
            .observe(late_ms.max(0) as f64 / 1000.0);
    }

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
        match close_unpaid_order(self, &order_sn, CloseCause::PayTimeout).await {
            Ok(_) => Outcome::Done,
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
        close_unpaid_order(self, order_sn, CloseCause::Cancel).await?;
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
/// `true` when this call closed it.
pub async fn close_unpaid_order(
    deps: &OrderCloser,
    order_sn: &str,
    cause: CloseCause,
) -> Result<bool> {
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
        return Ok(false);
    }
    let closed_now = db::close_if_unpaid(&mut conn, order_sn, cause).await?;
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
        match cause {
            CloseCause::Sweep => {
                deps.counters.swept.inc();
                tracing::warn!(
                    order_sn,
                    "overdue unpaid order closed by the sweep: its pay-timeout message is lost or late"
                );
            }
            _ => {
                deps.counters.closed.inc();
                tracing::info!(cause = cause.as_str(), "unpaid order closed");
            }
        }
    }
    if status != OrderStatus::TradeClosed {
        tracing::info!(status = ?status, "order paid or moving on; left alone");
        deps.counters.left_alone.inc();
        return Ok(false);
    }
    send_reback(deps, order_sn, user_id).await?;
    Ok(closed_now)
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

/// Orders one sweep pass takes at most per statement.
const SWEEP_BATCH: u32 = 500;

/// The longest one sweep round may take (the rest waits for the next round).
const SWEEP_WITHIN: Duration = Duration::from_secs(120);

/// The overdue-order sweep, once: closes every order still unpaid `overdue_after` after it
/// was placed, through the pay timeout's own conditional close and reback (so it races a
/// payment, a cancel or the late message itself safely, on any number of replicas at
/// once); returns how many it closed. An order it cannot close now (the database or the
/// broker away) is left for the next pass.
pub async fn sweep_overdue(deps: &OrderCloser, overdue_after: Duration) -> Result<u64> {
    let mut closed = 0u64;
    loop {
        let mut conn = deps.pool.acquire().await?;
        let overdue = db::overdue_unpaid(&mut conn, overdue_after, SWEEP_BATCH).await?;
        drop(conn);
        for order_sn in &overdue {
            if close_unpaid_order(deps, order_sn, CloseCause::Sweep).await? {
                closed = closed.saturating_add(1);
            }
        }
        if overdue.len() < SWEEP_BATCH as usize {
            return Ok(closed);
        }
    }
}

/// Runs [`sweep_overdue`] every `every` until `stop` turns true.
pub fn spawn_sweep(
    deps: Arc<OrderCloser>,
    overdue_after: Duration,
    every: Duration,
    stop: tokio::sync::watch::Receiver<bool>,
) -> tokio::task::JoinHandle<()> {
    service_db::spawn_periodic("overdue sweep", every, SWEEP_WITHIN, stop, move || {
        let deps = deps.clone();
        async move {
            match sweep_overdue(&deps, overdue_after).await {
                Ok(0) => {}
                Ok(n) => tracing::warn!(
                    closed = n,
                    "the overdue sweep closed unpaid orders whose pay-timeout message never came"
                ),
                // MySQL away: its outage is logged once (service_db::MYSQL).
                Err(crate::error::Error::Database(e)) if service_db::is_unreachable(&e) => {
                    service_db::MYSQL.failed(&e);
                }
                Err(e) => tracing::warn!(error = %e, "overdue sweep failed; will retry"),
            }
        }
    })
}
