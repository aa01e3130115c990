//! The `order_reback` consumer: "give this order's stock back", exactly once in effect.
//!
//! It runs the same code as the `Reback` RPC ([`stock::reback`]): a redelivered or
//! concurrently delivered message finds the detail RETURNED and does nothing; a reback
//! that overtakes its Sell leaves a tombstone that refuses the late Sell. A database
//! error asks for redelivery. A body that is not `{"order_sn": ...}` with a valid
//! order_sn can never succeed: it is recorded in `dead_message` and acknowledged.

use std::sync::Arc;

use observe::{IntCounter, Registry};

use mq::{Mq, OrderSnBody};
use rocketmq_client_rust::{
    ConsumeConcurrentlyContext, ConsumeConcurrentlyStatus, DefaultMQPushConsumer, MQPushConsumer,
};
use rocketmq_model::common::message::message_ext::MessageExt;
use sqlx::MySqlPool;
use tokio::runtime::Handle;

use crate::{domain::OrderSn, faults, stock};

/// What the consumer has done since start: Prometheus counters (`/metrics`), also read
/// by tests.
#[derive(Debug, Clone)]
pub struct RebackCounters {
    pub returned: IntCounter,
    pub already_returned: IntCounter,
    pub tombstoned: IntCounter,
    /// Deliveries that asked for redelivery (a transient failure).
    pub retried: IntCounter,
    /// Messages recorded in `dead_message` (the service's dead letters).
    pub dead: IntCounter,
}

impl RebackCounters {
    pub fn register(registry: &Registry) -> Self {
        let rebacks = observe::counter_vec(
            registry,
            "inventory_rebacks_total",
            "order_reback messages applied, by outcome",
            &["outcome"],
        );
        Self {
            returned: rebacks.with_label_values(&["returned"]),
            already_returned: rebacks.with_label_values(&["already_returned"]),
            tombstoned: rebacks.with_label_values(&["tombstoned"]),
            retried: observe::counter_vec(
                registry,
                "inventory_reback_retries_total",
                "order_reback deliveries that asked for redelivery",
                &[],
            )
            .with_label_values(&[] as &[&str]),
            dead: observe::counter_vec(
                registry,
                "inventory_dead_messages_total",
                "malformed messages recorded in dead_message",
                &[],
            )
            .with_label_values(&[] as &[&str]),
        }
    }
}

impl Default for RebackCounters {
    /// Counters in a registry of their own (a consumer nobody scrapes).
    fn default() -> Self {
        Self::register(&Registry::new())
    }
}

/// Subscribes `group` to `topic` and starts consuming.
pub async fn start(
    mq: &Mq,
    group: &str,
    topic: &str,
    threads: u32,
    pool: MySqlPool,
    counters: Arc<RebackCounters>,
) -> mq::Result<DefaultMQPushConsumer> {
    let mut consumer = mq.push_consumer(group, threads, None);
    consumer.subscribe(topic, "*").await?;
    let handle = Handle::current();
    consumer.register_message_listener_concurrently(
        move |msgs: &[&MessageExt], _: &ConsumeConcurrentlyContext| {
            for msg in msgs {
                let status = handle.block_on(consume(&pool, &counters, msg));
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
async fn consume(
    pool: &MySqlPool,
    counters: &RebackCounters,
    msg: &MessageExt,
) -> ConsumeConcurrentlyStatus {
    let body = msg.body();
    let order_sn = match OrderSnBody::parse(body.as_deref()) {
        Some(parsed) => OrderSn::parse(&parsed.order_sn).map_err(|e| e.to_string()),
        None => Err("body is not {\"order_sn\": \"...\"}".to_owned()),
    };
    let order_sn = match order_sn {
        Ok(order_sn) => order_sn,
        Err(reason) => return bury(pool, counters, msg, &reason).await,
    };
    tracing::Span::current().record("order_sn", order_sn.to_string());
    let outcome = if faults::triggered("inventory.before_reback", &order_sn.to_string()) {
        Err(crate::error::Error::Database(sqlx::Error::Protocol(
            "injected fault before reback".into(),
        )))
    } else {
        stock::reback(pool, &order_sn).await
    };
    match outcome {
        Ok(outcome) => {
            let counter = match outcome {
                stock::RebackOutcome::Returned => &counters.returned,
                stock::RebackOutcome::AlreadyReturned => &counters.already_returned,
                stock::RebackOutcome::Tombstoned => &counters.tombstoned,
            };
            counter.inc();
            tracing::info!(
                ?outcome,
                reconsume_times = msg.reconsume_times(),
                "reback consumed"
            );
            ConsumeConcurrentlyStatus::ConsumeSuccess
        }
        Err(e) => {
            counters.retried.inc();
            tracing::warn!(error = %e, reconsume_times = msg.reconsume_times(), "reback failed; redelivery requested");
            ConsumeConcurrentlyStatus::ReconsumeLater
        }
    }
}

/// Records a message that can never be processed, then acknowledges it.
async fn bury(
    pool: &MySqlPool,
    counters: &RebackCounters,
    msg: &MessageExt,
    reason: &str,
) -> ConsumeConcurrentlyStatus {
    let body = msg.body().map(|b| b.to_vec()).unwrap_or_default();
    tracing::error!(reason, "malformed reback message; recorded in dead_message");
    let recorded = service_db::record_dead_message(
        pool,
        msg.topic().as_str(),
        msg.msg_id().as_str(),
        &body,
        reason,
    )
    .await;
    match recorded {
        Ok(()) => {
            counters.dead.inc();
            ConsumeConcurrentlyStatus::ConsumeSuccess
        }
        // Not recorded yet: try again (bounded by the broker's max reconsume times, after
        // which it lands in the group's dead-letter topic, still visible).
        Err(e) => {
            tracing::warn!(error = %e, "could not record the dead message; redelivery requested");
            ConsumeConcurrentlyStatus::ReconsumeLater
        }
    }
}
