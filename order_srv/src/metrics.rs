//! The order service's Prometheus metrics (served on `ORDER_METRICS_ADDR`/metrics).

use std::time::Duration;

use observe::{HistogramVec, IntCounter, IntCounterVec, Registry};
use rocketmq_client_rust::LocalTransactionState;

#[derive(Debug, Clone)]
pub struct OrderMetrics {
    pub orders_created: IntCounter,
    orders_failed: IntCounterVec,
    local_transactions: IntCounterVec,
    check_backs: IntCounterVec,
    create_order_seconds: HistogramVec,
    step_seconds: HistogramVec,
    check_back_seconds: HistogramVec,
}

/// The steps of one CreateOrder, timed from the service itself (`order_step_seconds`).
#[derive(Clone, Copy, Debug)]
pub enum Step {
    /// From the send to the listener's start: the half message stored (step 3).
    HalfMessage,
    /// Claiming and pricing the cart (4.1-4.2).
    ClaimCart,
    /// Sell as order_srv sees it, including the call (4.3).
    Sell,
    /// The pay-timeout message send, beside the half message (4.4).
    PayTimeoutSend,
    /// The local transaction's writes, barrier row to cart lines, beside Sell (4.4).
    OrderWrites,
    /// From Sell's answer and the writes both done to COMMIT done: what COMMIT still
    /// waits for (the pay-timeout) and COMMIT itself (4.4).
    Commit,
    /// From the listener's answer to the send's return: END_TRANSACTION and the client's
    /// hand-back (5).
    EndTransaction,
}

impl Step {
    const fn label(self) -> &'static str {
        match self {
            Self::HalfMessage => "half_message",
            Self::ClaimCart => "claim_cart",
            Self::Sell => "sell",
            Self::PayTimeoutSend => "pay_timeout_send",
            Self::OrderWrites => "order_writes",
            Self::Commit => "commit",
            Self::EndTransaction => "end_transaction",
        }
    }
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
            create_order_seconds: observe::latency_vec(
                registry,
                "order_create_order_seconds",
                "CreateOrder latency as the server sees it, by outcome (OK or the gRPC code)",
                &["outcome"],
            ),
            step_seconds: observe::latency_vec(
                registry,
                "order_step_seconds",
                "latency of each CreateOrder step, by step",
                &["step"],
            ),
            check_back_seconds: observe::latency_vec(
                registry,
                "order_check_back_seconds",
                "latency of answering a broker check-back, by answer",
                &["answer"],
            ),
        }
    }

    /// One CreateOrder finished with `outcome` ("OK" or the gRPC code) after `elapsed`.
    pub fn create_order_took(&self, outcome: &str, elapsed: Duration) {
        self.create_order_seconds
            .with_label_values(&[outcome])
            .observe(elapsed.as_secs_f64());
    }

    /// One step of a CreateOrder took `elapsed`.
    pub fn step_took(&self, step: Step, elapsed: Duration) {
        self.step_seconds
            .with_label_values(&[step.label()])
            .observe(elapsed.as_secs_f64());
    }

    /// Runs one step of a CreateOrder, recording how long it took.
    pub async fn timed<T>(&self, step: Step, work: impl Future<Output = T>) -> T {
        let started = std::time::Instant::now();
        let done = work.await;
        self.step_took(step, started.elapsed());
        done
    }

    /// A check-back was answered `answer` after `elapsed`.
    pub fn check_back_took(&self, answer: LocalTransactionState, elapsed: Duration) {
        self.check_back_seconds
            .with_label_values(&[label(answer)])
            .observe(elapsed.as_secs_f64());
    }

    pub fn order_failed(&self, code: tonic::Code) {
        self.orders_failed
            .with_label_values(&[&format!("{code:?}")])
            .inc();
    }

    /// The answer the broker gets for a CreateOrder's half message (counted before the
    /// caller hears back).
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
