//! The development stack: an embedded RocketMQ name server and broker for tests and local
//! runs, and (in the binary) the commands that run the whole system without Docker.

pub mod audit;
pub mod broker;

pub use broker::{BrokerSettings, EmbeddedBroker, SYSTEM_TOPICS};
pub mod testing;
