//! One consumer skeleton for every topic a service consumes: subscribe, run the handler on
//! the service's runtime (the bridge the transaction listener uses, [`crate::run_on`]),
//! and turn its [`Outcome`] into what the broker understands. A handler is one testable
//! step: it sees one delivery and says whether it is done, should come again, or can
//! never succeed; only this module speaks the broker's statuses.

use std::{sync::Arc, time::Duration};

use observe::trace::Carrier;
use rocketmq_client_rust::{
    ConsumeConcurrentlyContext, ConsumeConcurrentlyStatus, DefaultMQPushConsumer, MQPushConsumer,
};
use rocketmq_model::common::message::message_ext::MessageExt;
use tokio::runtime::Handle;
use tracing::Instrument;

use crate::{Mq, Result};

/// One delivered message, owned, so that its handling can run as a task.
#[derive(Clone, Debug)]
pub struct Delivery {
    pub msg_id: String,
    pub topic: String,
    pub body: Vec<u8>,
    /// How many times it was delivered before (0 on the first delivery).
    pub reconsume_times: i32,
    /// The trace context of the span that sent it (empty when the sender did not trace).
    pub trace: Carrier,
    /// When the producer sent it (milliseconds since the Unix epoch, the producer's
    /// clock): a delayed message was due this plus its delay.
    pub born_at_ms: i64,
}

impl Delivery {
    fn of(msg: &MessageExt) -> Self {
        Self {
            msg_id: msg.msg_id().to_string(),
            topic: msg.topic().to_string(),
            body: msg.body().map(|b| b.to_vec()).unwrap_or_default(),
            reconsume_times: msg.reconsume_times(),
            trace: crate::trace_context(msg),
            born_at_ms: msg.born_timestamp(),
        }
    }
}

/// What became of one delivery.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Its effect happened (now or by an earlier delivery): acknowledge it.
    Done,
    /// A transient failure: deliver it again later (the broker's retry schedule; after
    /// its maximum the message lands in `%DLQ%<group>`).
    Retry(String),
    /// It can never succeed (malformed): keep it for an operator, acknowledge it.
    Dead(String),
}

/// A service's handling of one topic.
pub trait Handler: Send + Sync + 'static {
    /// Handles one delivery. Deliveries may repeat and arrive in any order: the effect
    /// must happen once.
    fn handle(&self, delivery: &Delivery) -> impl Future<Output = Outcome> + Send;

    /// Keeps a message that can never be processed ([`Outcome::Dead`]) where an operator
    /// sees it. An error asks for redelivery, so the message is not lost.
    fn bury(
        &self,
        delivery: &Delivery,
        reason: &str,
    ) -> impl Future<Output = std::result::Result<(), String>> + Send;
}

/// The longest one delivery's handling may take (its bury included) before it is
/// dropped and delivered again later.
pub const HANDLE_WITHIN: Duration = Duration::from_secs(10);

/// Subscribes `group` to `topic` with `threads` concurrent callbacks and starts consuming;
/// each delivery runs as a task on `runtime`. A message asked for again more than
/// `max_reconsume_times` times (`None`: the client's 16) goes to `%DLQ%<group>`.
pub async fn start<H: Handler>(
    mq: &Mq,
    group: &str,
    topic: &str,
    threads: u32,
    max_reconsume_times: Option<i32>,
    handler: Arc<H>,
    runtime: Handle,
) -> Result<DefaultMQPushConsumer> {
    let mut consumer = mq.push_consumer(group, threads, None);
    if let Some(times) = max_reconsume_times {
        consumer.set_max_reconsume_times(times);
    }
    consumer.subscribe(topic, "*").await?;
    consumer.register_message_listener_concurrently(
        move |msgs: &[&MessageExt], _: &ConsumeConcurrentlyContext| {
            for msg in msgs {
                let (handler, delivery) = (handler.clone(), Delivery::of(msg));
                let span = tracing::info_span!(
                    "consume",
                    otel.name = format!("{} process", delivery.topic),
                    otel.kind = "consumer",
                    msg_id = %delivery.msg_id,
                    trace_id = tracing::field::Empty,
                );
                delivery.trace.continue_in(&span);
                let status = crate::run_on(
                    &runtime,
                    async move { settle(handler.as_ref(), &delivery).await }.instrument(span),
                )
                // The task panicked: nothing is known, so deliver it again.
                .unwrap_or(ConsumeConcurrentlyStatus::ReconsumeLater);
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

/// Runs the handler and maps its outcome to the broker's status, in the span of the
/// delivery (a child of the sender's span: the message's trace continues here).
/// The handling has [`HANDLE_WITHIN`]: when the database (or a peer) goes silent the
/// work is dropped (an open transaction rolls back) and the broker delivers the message
/// again later.
async fn settle<H: Handler>(handler: &H, delivery: &Delivery) -> ConsumeConcurrentlyStatus {
    tokio::time::timeout(HANDLE_WITHIN, settle_now(handler, delivery))
        .await
        .inspect(|_| HANDLING.answered())
        .unwrap_or_else(|_| {
            HANDLING.failed(&format_args!(
                "a delivery was not handled within {HANDLE_WITHIN:?}"
            ));
            tracing::info!(
                reconsume_times = delivery.reconsume_times,
                "delivery not handled in time; redelivery requested"
            );
            ConsumeConcurrentlyStatus::ReconsumeLater
        })
}

/// Deliveries that time out (their database or a peer silent): one WARN per stretch of
/// them, one INFO once deliveries are handled in time again.
static HANDLING: observe::outage::Outage =
    observe::outage::Outage::new("handling deliveries in time");

async fn settle_now<H: Handler>(handler: &H, delivery: &Delivery) -> ConsumeConcurrentlyStatus {
    match handler.handle(delivery).await {
        Outcome::Done => ConsumeConcurrentlyStatus::ConsumeSuccess,
        Outcome::Retry(reason) => {
            // Expected (a dependency away, an order still being placed): the message
            // comes back. What is away is logged once by its own outage.
            tracing::info!(
                reason,
                reconsume_times = delivery.reconsume_times,
                "redelivery requested"
            );
            ConsumeConcurrentlyStatus::ReconsumeLater
        }
        Outcome::Dead(reason) => match handler.bury(delivery, &reason).await {
            Ok(()) => {
                tracing::error!(
                    reason,
                    "message can never be processed; kept as a dead message"
                );
                ConsumeConcurrentlyStatus::ConsumeSuccess
            }
            Err(e) => {
                tracing::warn!(reason, error = %e, "could not keep the dead message; redelivery requested");
                ConsumeConcurrentlyStatus::ReconsumeLater
            }
        },
    }
}
