//! The gateway against the real services, real MariaDB databases and the embedded broker:
//! both services in-process on port 0 (order_srv's own test stack), the gateway in front.

mod hangup;
mod helpers;
mod identity;
mod openapi;
mod orders;
mod payments;
mod statuses;
mod traces;
