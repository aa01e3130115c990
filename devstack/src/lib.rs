//! The development stack: an embedded RocketMQ name server and broker for tests and local
//! runs, the whole system in one process ([`stack`]), and the invariant [`audit`].

pub mod audit;
pub mod bench;
pub mod broker;
pub mod chaos;
pub mod demo;
pub mod procs;
pub mod stack;

pub use broker::{BrokerSettings, EmbeddedBroker, SYSTEM_TOPICS};
pub mod testing;
