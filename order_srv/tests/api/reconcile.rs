//! The reconciler (DESIGN.md §13, the last rows of §9): stock that nothing else would
//! return comes back. Inventory asks order_srv (`OrderReconcile.OrderOutcomes`) about
//! deductions older than its horizon.

use std::{
    any::Any,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use inventory_srv::reconcile::{ReconcileCounters, Reconciler, Round};
use mq::{Mq, MqConfig};
use proto::order::{self as pb, order_reconcile_client::OrderReconcileClient};
use rocketmq_client_rust::{LocalTransactionState, TransactionListener};
use rocketmq_model::common::message::{MessageTrait, message_ext::MessageExt};
use sqlx::mysql::{MySqlConnectOptions, MySqlPoolOptions};
use testkit::{PATIENCE, eventually, unique};
use tonic::Code;

use crate::helpers::{Stack, arm, order_config, spawn_stack_configured, spawn_stack_with};

/// order_srv's database unreachable, as the broker sees it: every check-back answered
/// Unknown (and counted).
struct Unreachable {
    checks: Arc<AtomicUsize>,
}

impl TransactionListener for Unreachable {
    fn execute_local_transaction(
        &self,
        _msg: &dyn MessageTrait,
        _arg: Option<&(dyn Any + Send + Sync)>,
    ) -> LocalTransactionState {
        LocalTransactionState::Unknown
    }

    fn check_local_transaction(&self, _msg: &MessageExt) -> LocalTransactionState {
        self.checks.fetch_add(1, Ordering::SeqCst);
        LocalTransactionState::Unknown
    }
}

async fn reconciler(stack: &Stack, order_addr: std::net::SocketAddr) -> Reconciler {
    Reconciler {
        pool: stack.inventory_pool.clone(),
        orders: OrderReconcileClient::connect(format!("http://{order_addr}"))
            .await
            .expect("connect order_srv"),
        horizon: Duration::from_secs(1),
        batch: 10,
        call_timeout: Duration::from_secs(10),
        counters: Arc::new(ReconcileCounters::default()),
    }
}

/// DESIGN.md §9: order_srv dies after Sell and stays away longer than the broker keeps
/// checking back. The broker gives up on the half message (nothing would ever return the
/// stock: the deduction stays after order_srv is back); the reconciler returns it, once
/// even with two replicas reconciling at the same moment. Before the reconciler existed
/// the stock stayed deducted for good (I2 and I6 fail).
#[sqlx::test(migrations = false)]
async fn stock_caught_when_the_broker_stops_asking_comes_back_through_the_reconciler(
    _: MySqlPoolOptions,
    db: MySqlConnectOptions,
) {
    const CHECK_MAX: usize = 2;
    let user = 5_000_001;
    // A broker of its own that gives up after two check-backs, the first one 5 s after
    // the half message (time for order_srv to be gone before it comes).
    let broker = testkit::EmbeddedBroker::start(testkit::BrokerSettings {
        transaction_timeout: Duration::from_secs(5),
        transaction_check_interval: Duration::from_secs(1),
        transaction_check_max: CHECK_MAX as u32,
        ..testkit::BrokerSettings::for_tests()
    })
    .await
    .expect("dedicated broker");
    let mut config = order_config();
    config.namesrv_addr = broker.namesrv_addr().to_owned();
    let mut stack = spawn_stack_with(db, config).await;
    stack.goods(1, 100, 10).await;
    stack.add_to_cart(user, 1, 4).await;

    let armed_order_after_sell = arm("order.after_sell", &format!("return({user})")).await;
    let result = stack.create_order(user).await;
    drop(armed_order_after_sell);
    assert_eq!(
        result.expect_err("died after Sell").code(),
        Code::Unavailable
    );
    assert_eq!(stack.stock(1).await, 6, "Sell ran");
    // order_srv gone; its database unreachable for the check-backs that follow.
    stack.stop_order_service().await;
    let mq = Mq::new(
        &MqConfig::new(broker.namesrv_addr()),
        "unreachable-order-db",
    )
    .expect("client runtime");
    let checks = Arc::new(AtomicUsize::new(0));
    let mut unreachable = mq.transactional_producer(
        &stack.config.tx_producer_group,
        &[stack.config.reback_topic.as_str()],
        Unreachable {
            checks: checks.clone(),
        },
        Some(&unique("unreachable")),
    );
    unreachable.start().await.expect("start");
    // After its last check-back the broker discards the half message at its next look.
    eventually(PATIENCE, "the broker's last check-back", || async {
        (checks.load(Ordering::SeqCst) >= CHECK_MAX).then_some(())
    })
    .await;
    unreachable.shutdown().await;
    mq.shutdown().await;

    // order_srv is back, and nothing returns the stock by itself.
    let inventory = format!("http://{}", stack.inventory_addr);
    let (replica, _client) = stack.add_order_replica(inventory).await;
    let details = stack.sell_details().await;
    assert_eq!(details.len(), 1);
    let order_sn = details[0].0.clone();
    assert_eq!(
        stack.sell_status(&order_sn).await.as_deref(),
        Some("DEDUCTED")
    );
    assert_eq!(
        stack.barrier(&order_sn).await,
        None,
        "nobody answered the broker"
    );
    // What the audit says of it: I6 (and I2) fail once it is older than the horizon.
    let input = testkit::audit::AuditInput {
        initial_stock: Some([(1, 10)].into_iter().collect()),
        acknowledged: Vec::new(),
        liveness: Some(testkit::audit::Liveness {
            pay_timeout: stack.config.pay_timeout,
            slack: Duration::from_secs(1),
            reconcile_horizon: Some(Duration::from_secs(1)),
        }),
    };
    let verdicts = testkit::audit::audit(&stack.order_pool, &stack.inventory_pool, &input)
        .await
        .expect("audit");
    let failed = testkit::audit::failed(&verdicts);
    assert_eq!(
        failed,
        ["I2 agreement", "I6 liveness"],
        "{}",
        testkit::audit::report(&verdicts)
    );

    // Two replicas' reconcilers at the same moment: the stock comes back once.
    let (first, second) = (
        reconciler(&stack, replica.grpc_addr).await,
        reconciler(&stack, replica.grpc_addr).await,
    );
    let (a, b) = tokio::join!(first.round(), second.round());
    let (a, b) = (a.expect("round"), b.expect("round"));
    assert_eq!(a.returned + b.returned, 1, "{a:?} {b:?}");
    assert_eq!(stack.stock(1).await, 10);
    assert_eq!(
        stack.sell_status(&order_sn).await.as_deref(),
        Some("RETURNED")
    );
    assert_eq!(stack.barrier(&order_sn).await.as_deref(), Some("aborted"));
    assert_eq!(stack.order_count().await, 0);
    // Nothing left to ask about, and the audit (with I6's second half) passes.
    assert_eq!(first.round().await.expect("round"), Round::default());
    let verdicts = testkit::audit::audit(&stack.order_pool, &stack.inventory_pool, &input)
        .await
        .expect("audit");
    testkit::audit::assert_all_hold(&verdicts);
    stack.audit(&[(1, 10)], &[]).await;
    stack.stop().await;
    broker.shutdown().await;
}

/// DESIGN.md §9, "a reback lands in the dead-letter queue": the order is closed, its
/// reback fails until the broker dead-letters it; the reconciler returns the stock (the
/// dead letter stays visible). Paid orders are confirmed once and never asked about again;
/// unpaid ones are asked again later.
#[sqlx::test(migrations = false)]
async fn a_dead_lettered_reback_is_reconciled_and_paid_orders_are_confirmed(
    _: MySqlPoolOptions,
    db: MySqlConnectOptions,
) {
    let (closed_user, paid_user, unpaid_user) = (5_000_011, 5_000_012, 5_000_013);
    let stack = spawn_stack_configured(db, order_config(), |inventory| {
        inventory.reback_max_reconsume = 1;
    })
    .await;
    stack.goods(1, 100, 30).await;
    for user in [closed_user, paid_user, unpaid_user] {
        stack.add_to_cart(user, 1, 2).await;
    }
    let closed = stack.create_order(closed_user).await.expect("order");
    let paid = stack.create_order(paid_user).await.expect("order");
    let unpaid = stack.create_order(unpaid_user).await.expect("order");
    stack.pay(&paid.order_sn).await.expect("paid");
    assert_eq!(stack.stock(1).await, 24);

    let armed_inventory_before_reback = arm(
        "inventory.before_reback",
        &format!("return({})", closed.order_sn),
    )
    .await;
    stack
        .closer
        .cancel(&closed.order_sn, closed_user)
        .await
        .expect("cancelled");
    // One delivery and one retry, then the dead-letter queue.
    eventually(PATIENCE, "the reback retried and dead-lettered", || async {
        (stack.reback_counters.retried.get() >= 2).then_some(())
    })
    .await;
    drop(armed_inventory_before_reback);
    assert_eq!(
        stack.sell_status(&closed.order_sn).await.as_deref(),
        Some("DEDUCTED")
    );

    let reconciler = reconciler(&stack, stack.order_addr).await;
    let round = reconciler.round().await.expect("round");
    assert_eq!(
        (round.found, round.returned, round.confirmed, round.deferred),
        (3, 1, 1, 1),
        "{round:?}"
    );
    assert_eq!(stack.stock(1).await, 26);
    assert_eq!(
        stack.sell_status(&closed.order_sn).await.as_deref(),
        Some("RETURNED")
    );
    // The paid order is confirmed, the unpaid one deferred: the next round asks nothing.
    assert_eq!(reconciler.round().await.expect("round"), Round::default());
    assert_eq!(reconciler.counters.returned.get(), 1);
    stack
        .audit(
            &[(1, 30)],
            &[closed.order_sn, paid.order_sn, unpaid.order_sn],
        )
        .await;
    stack.stop().await;
}

/// Bad input to the internal RPC gets a clear status and changes nothing; a horizon
/// that is not well inside the barrier retention is refused.
#[sqlx::test(migrations = false)]
async fn order_outcomes_refuses_bad_batches_and_too_long_horizons(
    _: MySqlPoolOptions,
    db: MySqlConnectOptions,
) {
    let stack = spawn_stack_with(db, order_config()).await;
    let mut client = OrderReconcileClient::connect(format!("http://{}", stack.order_addr))
        .await
        .expect("connect");
    let ask = |order_sns: Vec<String>, horizon_seconds: u64| pb::OrderOutcomesRequest {
        order_sns,
        horizon_seconds,
    };
    let empty = client.order_outcomes(ask(vec![], 60)).await;
    assert_eq!(empty.expect_err("empty").code(), Code::InvalidArgument);
    let too_many = client.order_outcomes(ask(vec!["A1".into(); 501], 60)).await;
    assert_eq!(too_many.expect_err("501").code(), Code::InvalidArgument);
    let bad_sn = client
        .order_outcomes(ask(vec!["no spaces".into()], 60))
        .await;
    assert_eq!(bad_sn.expect_err("bad sn").code(), Code::InvalidArgument);
    // Barrier rows are kept 7 days by default: a 4-day horizon is too long.
    let too_long = client
        .order_outcomes(ask(vec!["A1".into()], 4 * 86_400))
        .await;
    assert_eq!(
        too_long.expect_err("horizon").code(),
        Code::FailedPrecondition
    );
    assert_eq!(stack.barrier("A1").await, None, "nothing claimed");
    // A valid question about an order never placed settles it.
    let answer = client
        .order_outcomes(ask(vec!["A1".into()], 60))
        .await
        .expect("answer")
        .into_inner();
    assert_eq!(
        answer.outcomes[0].outcome,
        pb::order_outcome::Outcome::NeverPlaced as i32
    );
    assert_eq!(stack.barrier("A1").await.as_deref(), Some("aborted"));
    stack.stop().await;
}
