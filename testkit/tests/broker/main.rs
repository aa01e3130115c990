//! The broker behaviours the system relies on, checked against the embedded broker.

mod cluster;
mod delivery;
mod helpers;
mod restart;
mod transactions;
