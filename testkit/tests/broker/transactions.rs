//! Half messages: commit, rollback and check-back.

use std::{
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use rocketmq_client_rust::{ConsumeConcurrentlyStatus, LocalTransactionState};
use testkit::{PATIENCE, eventually, unique};
use tokio::sync::oneshot;

use crate::helpers::{
    FutureListener, SENDING, Script, ScriptedListener, collecting_consumer, message, mq, topic,
};

struct Setup {
    mq: mq::Mq,
    topic: String,
    producer: rocketmq_client_rust::TransactionMQProducer,
    consumer: rocketmq_client_rust::DefaultMQPushConsumer,
    received: crate::helpers::Received,
    checks: Arc<AtomicUsize>,
}

async fn setup(check: LocalTransactionState) -> Setup {
    let mq = mq("tx-test");
    let topic = topic(&mq, "tx").await;
    let checks = Arc::new(AtomicUsize::new(0));
    let listener = ScriptedListener {
        check,
        checks: checks.clone(),
    };
    let mut producer = mq.transactional_producer(&unique("tx_producer"), &[&topic], listener, None);
    producer.start().await.expect("producer start");
    let (consumer, received) =
        collecting_consumer(&mq, &unique("tx_consumer"), &topic, None, |_| {
            ConsumeConcurrentlyStatus::ConsumeSuccess
        })
        .await;
    Setup {
        mq,
        topic,
        producer,
        consumer,
        received,
        checks,
    }
}

impl Setup {
    async fn send(&self, body: &str, state: LocalTransactionState) {
        let result = self
            .producer
            .send_message_in_transaction(message(&self.topic, body), Some(state))
            .await
            .expect("half message stored");
        assert_eq!(result.local_transaction_state, Some(state));
    }

    async fn teardown(mut self) {
        self.consumer.shutdown().await;
        self.producer.shutdown().await;
        self.mq.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_committed_half_message_is_delivered_once_and_a_rolled_back_one_never() {
    // A check-back would commit: if the broker asked about a resolved half message, the
    // rolled-back one would be delivered.
    let setup = setup(LocalTransactionState::CommitMessage).await;
    setup
        .send("rolled-back", LocalTransactionState::RollbackMessage)
        .await;
    setup
        .send("committed", LocalTransactionState::CommitMessage)
        .await;

    eventually(PATIENCE, "the committed message", || async {
        (!setup.received.of("committed").is_empty()).then_some(())
    })
    .await;
    // Give the broker several check intervals to (wrongly) deliver more.
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_eq!(setup.received.of("committed").len(), 1);
    assert!(setup.received.of("rolled-back").is_empty());
    assert_eq!(
        setup.checks.load(Ordering::SeqCst),
        0,
        "resolved half messages were checked back"
    );
    setup.teardown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_half_message_is_resolved_by_check_back_and_then_delivered() {
    let setup = setup(LocalTransactionState::CommitMessage).await;
    setup.send("unknown", LocalTransactionState::Unknown).await;

    eventually(PATIENCE, "the checked-back message", || async {
        (!setup.received.of("unknown").is_empty()).then_some(())
    })
    .await;
    assert!(
        setup.checks.load(Ordering::SeqCst) >= 1,
        "delivered without a check-back"
    );
    setup.teardown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_half_message_checked_back_as_rollback_is_never_delivered() {
    let setup = setup(LocalTransactionState::RollbackMessage).await;
    setup
        .send("unknown-then-rollback", LocalTransactionState::Unknown)
        .await;
    setup
        .send("marker", LocalTransactionState::CommitMessage)
        .await;

    eventually(PATIENCE, "a check-back", || async {
        (setup.checks.load(Ordering::SeqCst) >= 1).then_some(())
    })
    .await;
    eventually(PATIENCE, "the marker", || async {
        (!setup.received.of("marker").is_empty()).then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(setup.received.of("unknown-then-rollback").is_empty());
    setup.teardown().await;
}

/// A listener whose local transaction is a future (the patched client,
/// vendor/rocketmq-client-rust): the client awaits it on the send's own task, ends the
/// transaction with its answer and never calls the blocking listener. A future that
/// panics counts as Unknown, so the check-back decides.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_local_transaction_future_runs_on_the_sends_task_and_decides_the_half_message() {
    let mq = mq("tx-future-test");
    let topic = topic(&mq, "txf").await;
    let listener = FutureListener {
        check: LocalTransactionState::CommitMessage,
        checks: Arc::new(AtomicUsize::new(0)),
        blocking_calls: Arc::new(AtomicUsize::new(0)),
        seen: Default::default(),
        beside: Default::default(),
    };
    let (checks, blocking_calls, seen, beside) = (
        listener.checks.clone(),
        listener.blocking_calls.clone(),
        listener.seen.clone(),
        listener.beside.clone(),
    );
    let mut producer =
        mq.transactional_producer(&unique("txf_producer"), &[&topic], listener, None);
    producer.start().await.expect("producer start");
    let (mut consumer, received) =
        collecting_consumer(&mq, &unique("txf_consumer"), &topic, None, |_| {
            ConsumeConcurrentlyStatus::ConsumeSuccess
        })
        .await;

    let cases = [
        (
            "committed",
            Script::Answer(LocalTransactionState::CommitMessage),
            LocalTransactionState::CommitMessage,
        ),
        (
            "rolled-back",
            Script::Answer(LocalTransactionState::RollbackMessage),
            LocalTransactionState::RollbackMessage,
        ),
        ("panicked", Script::Panic, LocalTransactionState::Unknown),
    ];
    for (body, script, state) in cases {
        let result = SENDING
            .scope(
                body,
                producer.send_message_in_transaction(message(&topic, body), Some(script)),
            )
            .await
            .expect("half message stored");
        assert_eq!(result.local_transaction_state, Some(state), "{body}");
    }
    assert_eq!(
        seen.lock().map(|s| s.clone()).unwrap_or_default(),
        [Some("committed"), Some("rolled-back"), Some("panicked")],
        "each local transaction ran on its send's task"
    );

    // As in order_srv: the answer comes from a future beside the send, in the same task,
    // once the listener says the half message is stored. A client that blocked the send's
    // task while it waited for the answer would never get it.
    let (stored, on_stored) = oneshot::channel();
    let (answer, answered) = oneshot::channel();
    if let Ok(mut slot) = beside.lock() {
        *slot = Some((stored, answered));
    }
    // On a task of its own, so that a send which blocked its task fails here by the
    // timeout instead of hanging the test.
    let beside_message = message(&topic, "beside");
    let beside_the_send = tokio::spawn(async move {
        let send = producer.send_message_in_transaction(beside_message, Some(Script::FromBeside));
        let local_transaction = async {
            if on_stored.await.is_ok() {
                let _ = answer.send(LocalTransactionState::RollbackMessage);
            }
        };
        let (result, ()) = tokio::join!(send, local_transaction);
        (producer, result)
    });
    let (mut producer, result) = tokio::time::timeout(PATIENCE, beside_the_send)
        .await
        .expect("the send got the answer from beside it")
        .expect("the send's task");
    assert_eq!(
        result.expect("half message stored").local_transaction_state,
        Some(LocalTransactionState::RollbackMessage)
    );
    assert_eq!(
        blocking_calls.load(Ordering::SeqCst),
        0,
        "the blocking listener was called"
    );

    // The committed one is delivered at once, the panicked one after its check-back
    // (which commits), the rolled-back one never.
    eventually(
        PATIENCE,
        "the committed and the checked-back message",
        || async {
            (!received.of("committed").is_empty() && !received.of("panicked").is_empty())
                .then_some(())
        },
    )
    .await;
    assert!(
        checks.load(Ordering::SeqCst) >= 1,
        "the panicked one was delivered without a check-back"
    );
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(received.of("committed").len(), 1);
    assert!(received.of("rolled-back").is_empty());
    assert!(received.of("beside").is_empty());

    consumer.shutdown().await;
    producer.shutdown().await;
    mq.shutdown().await;
}
