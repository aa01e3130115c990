//! A test consumer of a stack's reback topic: which order_sns did the broker deliver?

use std::sync::{Arc, Mutex};

use mq::OrderSnBody;
use rocketmq_client_rust::{
    ConsumeConcurrentlyContext, ConsumeConcurrentlyStatus, DefaultMQPushConsumer, MQPushConsumer,
};
use rocketmq_model::common::message::message_ext::MessageExt;
use testkit::unique;

use crate::helpers::Stack;

pub struct RebackProbe {
    consumer: DefaultMQPushConsumer,
    seen: Arc<Mutex<Vec<String>>>,
}

impl RebackProbe {
    pub async fn start(stack: &Stack) -> Self {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let sink = seen.clone();
        let mut consumer = stack.mq.push_consumer(&unique("reback_probe"), 2, None);
        consumer
            .subscribe(stack.config.reback_topic.as_str(), "*")
            .await
            .expect("subscribe");
        consumer.register_message_listener_concurrently(
            move |msgs: &[&MessageExt], _: &ConsumeConcurrentlyContext| {
                for msg in msgs {
                    let sn = OrderSnBody::parse(msg.body().as_deref())
                        .map(|b| b.order_sn)
                        .unwrap_or_else(|| "<malformed>".into());
                    if let Ok(mut seen) = sink.lock() {
                        seen.push(sn);
                    }
                }
                Ok(ConsumeConcurrentlyStatus::ConsumeSuccess)
            },
        );
        consumer.start().await.expect("probe start");
        Self { consumer, seen }
    }

    pub fn seen(&self) -> Vec<String> {
        self.seen.lock().map(|s| s.clone()).unwrap_or_default()
    }

    pub async fn stop(mut self) {
        self.consumer.shutdown().await;
    }
}
