//! The body of both topics: `{"order_sn": "..."}`, with the order_sn also as message key
//! and the sender's trace context as user properties.

use std::time::Duration;

use observe::trace::Carrier;
use rocketmq_model::common::message::{message_builder::MessageBuilder, message_single::Message};
use serde::{Deserialize, Serialize};

use crate::{MqError, Result};

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderSnBody {
    pub order_sn: String,
}

impl OrderSnBody {
    pub fn new(order_sn: impl Into<String>) -> Self {
        Self {
            order_sn: order_sn.into(),
        }
    }

    /// Parses a delivered body; `None` for anything that is not this shape.
    pub fn parse(body: Option<&[u8]>) -> Option<Self> {
        serde_json::from_slice(body?).ok()
    }

    /// A message on `topic` carrying this body, keyed by the order_sn.
    pub fn message(&self, topic: &str) -> Result<Message> {
        self.builder(topic)?
            .build()
            .map_err(|e| MqError::Message(e.into()))
    }

    /// The same message, delivered no earlier than `delay` (whole seconds, at least one).
    /// Uses the broker's timer (RocketMQ 5 arbitrary delay), not the fixed delay levels.
    pub fn delayed_message(&self, topic: &str, delay: Duration) -> Result<Message> {
        self.builder(topic)?
            .delay_secs(delay.as_secs().max(1))
            .build()
            .map_err(|e| MqError::Message(e.into()))
    }

    /// The message, with the trace context of the current span as user properties
    /// (`traceparent`, `tracestate`): its consumer continues the sender's trace.
    fn builder(&self, topic: &str) -> Result<MessageBuilder> {
        let body = serde_json::to_vec(self).map_err(|e| MqError::Message(e.into()))?;
        let mut builder = Message::builder()
            .topic(topic)
            .key(self.order_sn.as_str())
            .body(body);
        for (name, value) in Carrier::of(&tracing::Span::current()).0 {
            builder = builder
                .raw_property(name, value)
                .map_err(|e| MqError::Message(e.into()))?;
        }
        Ok(builder)
    }
}
