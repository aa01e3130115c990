//! The order service's Prometheus metrics (served on `ORDER_METRICS_ADDR`/metrics).

use observe::{IntCounter, IntCounterVec, Registry};
use rocketmq_client_rust::LocalTransactionState;

#[derive(Debug, Clone)]
pub struct OrderMetrics {
    pub orders_created: IntCounter,
    orders_failed: IntCounterVec,
    check_backs: IntCounterVec,
}

impl OrderMetrics {
    pub fn register(registry: &Registry) -> Self {
        Self {
            orders_created: observe::counter_vec(
                registry,
                "order_orders_created_total",
                "CreateOrder calls that returned an order",
                &[],
            )
            .with_label_values(&[] as &[&str]),
            orders_failed: observe::counter_vec(
                registry,
                "order_orders_failed_total",
                "CreateOrder calls that failed, by gRPC code",
                &["reason"],
            ),
            check_backs: observe::counter_vec(
                registry,
                "order_check_backs_total",
                "broker check-backs answered, by answer",
                &["answer"],
            ),
        }
    }

    pub fn order_failed(&self, code: tonic::Code) {
        self.orders_failed
            .with_label_values(&[&format!("{code:?}")])
            .inc();
    }

    pub fn checked_back(&self, answer: LocalTransactionState) {
        let answer = match answer {
            LocalTransactionState::CommitMessage => "commit_reback",
            LocalTransactionState::RollbackMessage => "rollback_reback",
            LocalTransactionState::Unknown => "unknown",
        };
        self.check_backs.with_label_values(&[answer]).inc();
    }
}

impl Default for OrderMetrics {
    fn default() -> Self {
        Self::register(&Registry::new())
    }
}
