//! The order service's Prometheus metrics (served on `ORDER_METRICS_ADDR`/metrics).

use observe::{IntCounter, IntCounterVec, Registry};
use rocketmq_client_rust::LocalTransactionState;

#[derive(Debug, Clone)]
pub struct OrderMetrics {
    pub orders_created: IntCounter,
    orders_failed: IntCounterVec,
    local_transactions: IntCounterVec,
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
            local_transactions: observe::counter_vec(
                registry,
                "order_local_transactions_total",
                "CreateOrder local transactions, by the listener's answer to the broker",
                &["answer"],
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

    /// The transaction listener answered the broker for a CreateOrder it ran.
    pub fn answered(&self, answer: LocalTransactionState) {
        self.local_transactions
            .with_label_values(&[label(answer)])
            .inc();
    }

    /// The transaction listener answered a broker check-back.
    pub fn checked_back(&self, answer: LocalTransactionState) {
        self.check_backs.with_label_values(&[label(answer)]).inc();
    }

    /// How many local transactions ended with `answer` so far.
    pub fn answers(&self, answer: LocalTransactionState) -> u64 {
        self.local_transactions
            .with_label_values(&[label(answer)])
            .get()
    }

    /// How many check-backs were answered with `answer` so far.
    pub fn check_back_answers(&self, answer: LocalTransactionState) -> u64 {
        self.check_backs.with_label_values(&[label(answer)]).get()
    }
}

/// The answer as the reback message sees it: committing it returns the stock.
fn label(answer: LocalTransactionState) -> &'static str {
    match answer {
        LocalTransactionState::CommitMessage => "commit_reback",
        LocalTransactionState::RollbackMessage => "rollback_reback",
        LocalTransactionState::Unknown => "unknown",
    }
}

impl Default for OrderMetrics {
    fn default() -> Self {
        Self::register(&Registry::new())
    }
}
