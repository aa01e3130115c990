//! Order service (in progress).
