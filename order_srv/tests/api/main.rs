//! order_srv against a real inventory_srv, real MariaDB databases and the embedded broker.

mod audit;
mod broker_blip;
mod cart;
mod create_order;
mod failure_table;
mod gateway;
mod helpers;
mod inputs;
mod metrics;
mod orders;
mod purge;
mod reback_probe;
mod rebalance_setting;
mod reconcile;
mod reflection;
mod replicas;
mod silent_database;
mod traces;
mod two_brokers;
