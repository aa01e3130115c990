//! Order service: the cart, CreateOrder over a transactional reback message with a
//! race-safe check-back, orders and their payment status.
//!
//! The protocol lives in [`place_order`] (CreateOrder) and [`check_back`]; [`grpc`] is the
//! edge that validates requests into [`domain`] types; [`startup`] wires the database, the
//! RocketMQ clients, the gRPC server and shutdown.

#![recursion_limit = "512"]

pub mod cart;
pub mod check_back;
pub mod config;
pub mod db;
pub mod domain;
pub mod error;
pub mod faults;
pub mod grpc;
pub mod metrics;
pub mod orders;
pub mod place_order;
pub mod startup;
pub mod timeout;

/// The migrations of the `shop_order` database, applied at start.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../migrations/order");
