//! The `order_timeout` consumer: close an unpaid order and give its stock back (DESIGN.md §7).
//!
//! The close is one conditional UPDATE (`WHERE status = 'WAIT_BUYER_PAY'`), so it races a
//! payment safely: exactly one of them moves the order. The plain `order_reback` is sent
//! only after the close committed, and whenever the order is closed, also on a
//! redelivery: if the first send failed, the broker redelivers this message and the
//! send is repeated; inventory's reback is idempotent.

use std::sync::Arc;

use observe::{IntCounter, Registry};

use mq::{Mq, OrderSnBody};
use rocketmq_client_rust::{
    ConsumeConcurrentlyContext, ConsumeConcurrentlyStatus, DefaultMQProducer,
    DefaultMQPushConsumer, MQPushConsumer,
};
use rocketmq_model::common::message::message_ext::MessageExt;
use sqlx::MySqlPool;
use tokio::runtime::Handle;

use crate::{
    db, domain,
    domain::OrderStatus,
    error::{Error, Result},
    faults,
};

/// What the consumer has done since start: Prometheus counters (`/metrics`), also read
/// by tests.
#[derive(Debug, Clone)]
pub struct TimeoutCounters {
    pub closed: IntCounter,
    pub rebacks_sent: IntCounter,
    /// Paid or unknown orders acknowledged untouched.
    pub left_alone: IntCounter,
    pub retried: IntCounter,
    pub dead: IntCounter,
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
        }
    }
}

impl Default for TimeoutCounters {
    fn default() -> Self {
        Self::register(&Registry::new())
    }
}

/// Everything one delivery needs.
pub struct TimeoutDeps {
    pub pool: MySqlPool,
    pub producer: DefaultMQProducer,
    pub reback_topic: String,
    pub counters: Arc<TimeoutCounters>,
}

pub async fn start(
    mq: &Mq,
    group: &str,
    topic: &str,
    threads: u32,
    deps: Arc<TimeoutDeps>,
) -> mq::Result<DefaultMQPushConsumer> {
    let mut consumer = mq.push_consumer(group, threads, None);
    consumer.subscribe(topic, "*").await?;
    let handle = Handle::current();
    consumer.register_message_listener_concurrently(
        move |msgs: &[&MessageExt], _: &ConsumeConcurrentlyContext| {
            for msg in msgs {
                let status = handle.block_on(consume(&deps, msg));
                if status == ConsumeConcurrentlyStatus::ReconsumeLater {
                    return Ok(status);
                }
            }
            Ok(ConsumeConcurrentlyStatus::ConsumeSuccess)
        },
    );
    consumer.start().await?;
    Ok(consumer)
}

#[tracing::instrument(skip_all, fields(msg_id = %msg.msg_id(), order_sn))]
async fn consume(deps: &TimeoutDeps, msg: &MessageExt) -> ConsumeConcurrentlyStatus {
    let body = msg.body();
    let order_sn = OrderSnBody::parse(body.as_deref())
        .ok_or_else(|| "body is not {\"order_sn\": \"...\"}".to_owned())
        .and_then(|b| domain::order_sn(&b.order_sn).map_err(|e| e.to_string()));
    let order_sn = match order_sn {
        Ok(sn) => sn,
        Err(reason) => return bury(deps, msg, &reason).await,
    };
    tracing::Span::current().record("order_sn", order_sn.as_str());
    match close_unpaid_order(deps, &order_sn).await {
        Ok(()) => ConsumeConcurrentlyStatus::ConsumeSuccess,
        Err(e) => {
            deps.counters.retried.inc();
            tracing::warn!(error = %e, reconsume_times = msg.reconsume_times(), "pay timeout failed; redelivery requested");
            ConsumeConcurrentlyStatus::ReconsumeLater
        }
    }
}

/// Closes the order if it is still unpaid; sends the reback whenever it is closed.
pub async fn close_unpaid_order(deps: &TimeoutDeps, order_sn: &str) -> Result<()> {
    let mut conn = deps.pool.acquire().await?;
    let closed_now = db::transition_status(
        &mut conn,
        order_sn,
        &[OrderStatus::WaitBuyerPay],
        OrderStatus::TradeClosed,
        "",
        "",
    )
    .await?;
    let (status, user_id) = match db::order_by_sn(&mut conn, order_sn).await? {
        Some(order) => (OrderStatus::parse(&order.status), order.user_id),
        None => {
            // Its local transaction never committed: nothing to close or return here
            // (the half message's own check-back returned its stock).
            tracing::info!("pay timeout of an unknown order; acknowledged");
            deps.counters.left_alone.inc();
            return Ok(());
        }
    };
    drop(conn);
    if closed_now {
        deps.counters.closed.inc();
        tracing::info!("unpaid order closed");
    }
    if status != Some(OrderStatus::TradeClosed) {
        tracing::info!(status = ?status, "order paid or moving on; left alone");
        deps.counters.left_alone.inc();
        return Ok(());
    }
    send_reback(deps, order_sn, user_id).await
}

async fn send_reback(deps: &TimeoutDeps, order_sn: &str, user_id: i64) -> Result<()> {
    if faults::triggered("order.fail_reback_send", user_id) {
        return Err(Error::Unavailable(
            "injected fault at fail_reback_send".into(),
        ));
    }
    let message = OrderSnBody::new(order_sn)
        .message(&deps.reback_topic)
        .map_err(|e| Error::Internal(e.to_string()))?;
    deps.producer
        .send(message)
        .await
        .map_err(|e| Error::Unavailable(format!("reback not sent: {}", mq::describe(&e))))?;
    deps.counters.rebacks_sent.inc();
    tracing::info!("reback sent for the closed order");
    Ok(())
}

async fn bury(deps: &TimeoutDeps, msg: &MessageExt, reason: &str) -> ConsumeConcurrentlyStatus {
    let body = msg.body().map(|b| b.to_vec()).unwrap_or_default();
    tracing::error!(
        reason,
        "malformed pay-timeout message; recorded in dead_message"
    );
    let recorded = service_db::record_dead_message(
        &deps.pool,
        msg.topic().as_str(),
        msg.msg_id().as_str(),
        &body,
        reason,
    )
    .await;
    match recorded {
        Ok(()) => {
            deps.counters.dead.inc();
            ConsumeConcurrentlyStatus::ConsumeSuccess
        }
        Err(e) => {
            tracing::warn!(error = %e, "could not record the dead message; redelivery requested");
            ConsumeConcurrentlyStatus::ReconsumeLater
        }
    }
}
