//! What tests and the dev tools share, with no dependency on the services: the embedded
//! RocketMQ name server and broker ([`broker`]), one shared test broker per test binary
//! with unique names and polling helpers ([`testing`]), the process's spans kept in memory
//! ([`spans`]), the I1-I6 [`audit`] across both databases, and a TCP [`link`] that can go
//! silent.

pub mod audit;
pub mod broker;
pub mod link;
pub mod mysql;
pub mod spans;
pub mod testing;

pub use broker::{
    BrokerSettings, EmbeddedBroker, SYSTEM_CONSUMER_GROUPS, SYSTEM_TOPICS, wait_for_port,
};
pub use testing::{PATIENCE, eventually, shared_broker, unique};
