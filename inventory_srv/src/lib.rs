//! Inventory service: the stock of every goods, deducted and returned per order.
//!
//! The rules live in [`stock`]; [`grpc`] is the edge that validates requests into
//! [`domain`] types, and [`startup`] wires the database, the gRPC server and shutdown.

pub mod config;
pub mod consumer;
pub mod db;
pub mod domain;
pub mod error;
pub mod faults;
pub mod grpc;
pub mod reconcile;
pub mod startup;
pub mod stock;

/// The migrations of the `shop_inventory` database, applied at start.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../migrations/inventory");
