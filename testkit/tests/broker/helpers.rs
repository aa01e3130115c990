//! A collecting test consumer and a scripted transaction listener.

use std::{
    any::Any,
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
    },
    time::Instant,
};

use mq::{Mq, MqConfig};
use rocketmq_client_rust::{
    ConsumeConcurrentlyContext, ConsumeConcurrentlyStatus, DefaultMQPushConsumer,
    LocalTransactionFuture, LocalTransactionState, MQPushConsumer, TransactionListener,
};
use rocketmq_model::common::message::{MessageTrait, message_ext::MessageExt};
use tokio::sync::oneshot;

/// One delivery as a consumer saw it.
#[derive(Clone, Debug)]
pub struct Delivery {
    pub body: String,
    pub reconsume_times: i32,
    pub at: Instant,
}

/// Everything a consumer received, in order.
#[derive(Clone, Default)]
pub struct Received(Arc<Mutex<Vec<Delivery>>>);

impl Received {
    pub fn all(&self) -> Vec<Delivery> {
        self.0.lock().map(|v| v.clone()).unwrap_or_default()
    }

    pub fn of(&self, body: &str) -> Vec<Delivery> {
        self.all().into_iter().filter(|d| d.body == body).collect()
    }
}

pub fn mq(name: &'static str) -> Mq {
    Mq::new(&MqConfig::new(testkit::shared_broker()), name).expect("client runtime")
}

/// Starts a consumer of `topic` in `group` that records each delivery and answers with
/// `answer(delivery)`.
pub async fn collecting_consumer(
    mq: &Mq,
    group: &str,
    topic: &str,
    max_reconsume_times: Option<i32>,
    answer: impl Fn(&Delivery) -> ConsumeConcurrentlyStatus + Send + Sync + 'static,
) -> (DefaultMQPushConsumer, Received) {
    let received = Received::default();
    let sink = received.clone();
    let mut consumer = mq.push_consumer(group, 4, None);
    if let Some(times) = max_reconsume_times {
        consumer.set_max_reconsume_times(times);
    }
    consumer.subscribe(topic, "*").await.expect("subscribe");
    consumer.register_message_listener_concurrently(
        move |msgs: &[&MessageExt], _context: &ConsumeConcurrentlyContext| {
            let mut status = ConsumeConcurrentlyStatus::ConsumeSuccess;
            for msg in msgs {
                let delivery = Delivery {
                    body: msg
                        .body()
                        .map(|b| String::from_utf8_lossy(&b).into_owned())
                        .unwrap_or_default(),
                    reconsume_times: msg.reconsume_times(),
                    at: Instant::now(),
                };
                status = answer(&delivery);
                if let Ok(mut all) = sink.0.lock() {
                    all.push(delivery);
                }
            }
            Ok(status)
        },
    );
    consumer.start().await.expect("consumer start");
    (consumer, received)
}

/// Executes with the state passed as the send's `arg`; answers check-backs with `check`.
pub struct ScriptedListener {
    pub check: LocalTransactionState,
    pub checks: Arc<AtomicUsize>,
}

impl TransactionListener for ScriptedListener {
    fn execute_local_transaction(
        &self,
        _msg: &dyn MessageTrait,
        arg: Option<&(dyn Any + Send + Sync)>,
    ) -> LocalTransactionState {
        arg.and_then(|a| a.downcast_ref::<LocalTransactionState>())
            .copied()
            .unwrap_or(LocalTransactionState::Unknown)
    }

    fn check_local_transaction(&self, _msg: &MessageExt) -> LocalTransactionState {
        self.checks.fetch_add(1, Ordering::SeqCst);
        self.check
    }
}

pub fn message(
    topic: &str,
    body: &str,
) -> rocketmq_model::common::message::message_single::Message {
    rocketmq_model::common::message::message_single::Message::builder()
        .topic(topic)
        .key(body)
        .body(body.as_bytes().to_vec())
        .build()
        .expect("message")
}

/// Creates a topic for one test on the shared broker.
pub async fn topic(mq: &Mq, prefix: &str) -> String {
    let topic = testkit::unique(prefix);
    mq.create_topics(&[&topic], 2).await.expect("create topic");
    topic
}

tokio::task_local! {
    /// Set by a test around a send: seen only by code that runs on the send's own task.
    pub static SENDING: &'static str;
}

/// What [`FutureListener`]'s local transaction does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Script {
    Answer(LocalTransactionState),
    Panic,
    /// Tells [`FutureListener::beside`] the half message is stored and answers what comes
    /// back from there: a future beside the send, in the same task, as in order_srv.
    FromBeside,
}

/// The other end of [`Script::FromBeside`]: learns that the half message is stored, then
/// sends the answer.
pub type Beside = (
    oneshot::Sender<()>,
    oneshot::Receiver<LocalTransactionState>,
);

/// Runs its local transaction as a future (`execute_local_transaction_async`, the patched
/// client of vendor/rocketmq-client-rust): the future answers the send's `arg` script and
/// records the [`SENDING`] mark it sees. Counts calls of the blocking
/// `execute_local_transaction`, which the client should not make; answers check-backs
/// with `check`.
pub struct FutureListener {
    pub check: LocalTransactionState,
    pub checks: Arc<AtomicUsize>,
    pub blocking_calls: Arc<AtomicUsize>,
    /// The [`SENDING`] mark each local transaction ran under (`None`: off the send's task).
    pub seen: Arc<Mutex<Vec<Option<&'static str>>>>,
    /// Taken by the next [`Script::FromBeside`] local transaction.
    pub beside: Arc<Mutex<Option<Beside>>>,
}

impl TransactionListener for FutureListener {
    fn execute_local_transaction_async(
        &self,
        _msg: &dyn MessageTrait,
        arg: Option<&(dyn Any + Send + Sync)>,
    ) -> Option<LocalTransactionFuture> {
        let script = arg.and_then(|a| a.downcast_ref::<Script>()).copied();
        let seen = self.seen.clone();
        let beside = match script {
            Some(Script::FromBeside) => self.beside.lock().ok().and_then(|mut b| b.take()),
            _ => None,
        };
        Some(Box::pin(async move {
            // Yield once: the answer comes from a later poll, as a real local transaction's.
            tokio::task::yield_now().await;
            if let Ok(mut seen) = seen.lock() {
                seen.push(SENDING.try_with(|mark| *mark).ok());
            }
            match script {
                Some(Script::Answer(state)) => state,
                Some(Script::Panic) => panic!("the local transaction panicked"),
                Some(Script::FromBeside) => match beside {
                    Some((stored, answer)) => {
                        let _ = stored.send(());
                        answer.await.unwrap_or(LocalTransactionState::Unknown)
                    }
                    None => LocalTransactionState::Unknown,
                },
                None => LocalTransactionState::Unknown,
            }
        }))
    }

    fn execute_local_transaction(
        &self,
        _msg: &dyn MessageTrait,
        _arg: Option<&(dyn Any + Send + Sync)>,
    ) -> LocalTransactionState {
        self.blocking_calls.fetch_add(1, Ordering::SeqCst);
        LocalTransactionState::RollbackMessage
    }

    fn check_local_transaction(&self, _msg: &MessageExt) -> LocalTransactionState {
        self.checks.fetch_add(1, Ordering::SeqCst);
        self.check
    }
}
