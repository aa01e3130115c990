//! Order service: the cart, CreateOrder over a transactional reback message with a
//! race-safe check-back, orders and their payment status.
//!
//! The protocol lives in [`create_order`] (CreateOrder, its transaction listener, the
//! local transaction and the check-back, one file per step of DESIGN.md §4) and
//! [`timeout`] (the pay timeout); [`grpc`] is the edge that validates requests into
//! [`domain`] types; [`startup`] wires the database, the RocketMQ clients, the gRPC server
//! and shutdown.

// Proving that CreateOrder's future is `Send` (tonic requires it) walks the RocketMQ
// client's transactional send future, whose types nest deeper than the default limit of
// 128 allows (E0275 on every gRPC handler without this).
#![recursion_limit = "512"]

pub mod cart;
pub mod config;
pub mod create_order;
pub mod db;
pub mod domain;
pub mod error;
pub mod faults;
pub mod grpc;
pub mod inventory;
pub mod metrics;
pub mod orders;
pub mod reconcile;
pub mod startup;
pub mod timeout;

/// The migrations of the `shop_order` database, applied at start.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../migrations/order");
