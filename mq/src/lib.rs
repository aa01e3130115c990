//! RocketMQ client plumbing shared by the services, the dev stack and the tests: the client
//! on the process's own tokio runtime, and the producers and consumers built on it.
//!
//! The client runs check-backs and push-consumer callbacks on a bounded blocking lane (a
//! transaction listener's local transaction runs on the send's own task instead: the
//! patched client's `execute_local_transaction_async`). A slot it cannot get turns into `Unknown` or
//! `ReconsumeLater`, so the lane is sized from configuration here instead of left at the
//! library's small default.

use std::{collections::HashMap, sync::Arc};

use cheetah_string::CheetahString;
use observe::trace::Carrier;
use rocketmq_client_rust::{
    ClientConfig, ClientError, ClientRuntime, ClientRuntimeConfig, DefaultMQProducer,
    DefaultMQPushConsumer, TelemetryHandle, TransactionListener, TransactionMQProducer,
};
use rocketmq_model::common::{
    consumer::consume_from_where::ConsumeFromWhere, message::MessageTrait,
};
use rocketmq_runtime::{BlockingPoolPolicy, RuntimeContext};

pub mod body;
pub mod consumer;

pub use body::OrderSnBody;

/// The brokers as this process sees them: one WARN when sends stop reaching them, one
/// INFO when one is stored again ([`observe::outage`]).
pub static BROKER: observe::outage::Outage = observe::outage::Outage::new("the message broker");

/// Every [`WATCH_EVERY`], whether a TCP connection to one of the name servers opens
/// within [`WATCH_WITHIN`]: a process that only consumes (inventory_srv) sends nothing
/// whose failure would tell it the broker side went away. The client logs nothing per
/// failed pull or heartbeat (`observe::telemetry::DEFAULT_FILTER`); this logs the outage
/// once ([`BROKER`]), sends report their own failures too.
async fn watch_name_servers(namesrv_addr: String) {
    let addrs: Vec<String> = namesrv_addr
        .split(';')
        .map(str::trim)
        .filter(|a| !a.is_empty())
        .map(str::to_owned)
        .collect();
    loop {
        tokio::time::sleep(WATCH_EVERY).await;
        let mut reached = false;
        for addr in &addrs {
            let connect = tokio::net::TcpStream::connect(addr.as_str());
            if matches!(tokio::time::timeout(WATCH_WITHIN, connect).await, Ok(Ok(_))) {
                reached = true;
                break;
            }
        }
        if reached {
            BROKER.answered();
        } else {
            BROKER.failed(&format_args!(
                "no name server of {namesrv_addr} accepts a connection"
            ));
        }
    }
}

const WATCH_EVERY: std::time::Duration = std::time::Duration::from_secs(5);
const WATCH_WITHIN: std::time::Duration = std::time::Duration::from_secs(2);

/// How far a broker's timer (delayed messages: the pay timeouts) is behind, as the broker
/// reports it in its runtime info.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct TimerBacklog {
    /// How far the wheel's read position is behind the clock (`timerReadBehind`, whole
    /// seconds): due messages not delivered yet.
    pub read_behind_secs: f64,
    /// Delayed messages stored but not yet indexed into the wheel (`timerOffsetBehind`).
    pub messages_not_indexed: f64,
    /// Messages waiting in the wheel (`timerCongestNum`).
    pub waiting: f64,
    pub enqueue_per_sec: f64,
    pub dequeue_per_sec: f64,
}

impl std::fmt::Display for TimerBacklog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "read behind {:.0}s, not indexed {:.0}, waiting {:.0}, in {:.1}/s, out {:.1}/s",
            self.read_behind_secs,
            self.messages_not_indexed,
            self.waiting,
            self.enqueue_per_sec,
            self.dequeue_per_sec
        )
    }
}
pub use consumer::{Delivery, Handler, Outcome};

/// Errors of the client plumbing. The client's error is kept as the source, so the whole
/// chain is there for [`describe`] and for logs.
#[derive(Debug, thiserror::Error)]
pub enum MqError {
    #[error("invalid RocketMQ client configuration: {0}")]
    Config(String),
    #[error("RocketMQ client error")]
    Client(#[from] ClientError),
    #[error("building a message")]
    Message(#[source] Box<dyn std::error::Error + Send + Sync>),
}

/// Runs `work` as a task of `runtime` and parks this thread until it is done; `None` when
/// the task panicked.
///
/// The RocketMQ client calls check-backs and consumer callbacks on its own blocking
/// threads. Their work is async (MySQL, gRPC), and it runs
/// on the service's runtime, where its connections live. Running it on the blocking
/// thread with `block_on` works too, but then every I/O wake-up crosses from the runtime's
/// driver to that thread; measured under load, those context switches were the largest
/// cost of a CreateOrder.
pub fn run_on<T: Send + 'static>(
    runtime: &tokio::runtime::Handle,
    work: impl Future<Output = T> + Send + 'static,
) -> Option<T> {
    let (done, outcome) = std::sync::mpsc::sync_channel(1);
    runtime.spawn(async move {
        let _ = done.send(work.await);
    });
    outcome.recv().ok()
}

/// The trace context a message carries in its user properties (see [`body`]).
pub fn trace_context(msg: &impl MessageTrait) -> Carrier {
    Carrier::read(|field| {
        msg.property(&CheetahString::from(field))
            .map(|value| value.to_string())
    })
}

/// Whether a request failed in the transport (connecting, writing, waiting for the
/// reply) rather than being answered by the broker. rocketmq-client-rust 1.0 does not
/// retry such a send on another broker (it stops its retry loop when the error has no
/// request stage) but isolates the broker it failed on, so one more send by the caller
/// goes to another master.
pub fn is_transport_failure(error: &ClientError) -> bool {
    error.descriptor().code().as_str().starts_with("transport.")
}

/// The client's `Display` often shows only the outermost layer; walk the sources.
pub fn describe(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

pub type Result<T, E = MqError> = std::result::Result<T, E>;

/// The process environment variable the RocketMQ client reads its consumers' rebalance
/// interval from, in milliseconds (20,000 when unset). It bounds how long the queues of a
/// replica that died wait for the other replicas of its group: the broker's "consumer ids
/// changed" notice did not trigger an earlier rebalance in the measurements (docs/operations.md,
/// "Running more than one"). The name has dots, so it is set through the process
/// environment (`env 'rocketmq.client.rebalance.waitInterval=5000' ...`, or a compose
/// `environment:` entry), not a shell `export`.
pub const REBALANCE_INTERVAL_ENV: &str = "rocketmq.client.rebalance.waitInterval";

/// Checks, and logs, the rebalance interval the client will use; a service calls it at
/// start, before anything opens. The client reads the variable itself and falls back to
/// its default on a value it cannot use; here such a value stops the service instead.
pub fn check_rebalance_interval() -> Result<std::time::Duration> {
    let every = match std::env::var_os(REBALANCE_INTERVAL_ENV) {
        None => std::time::Duration::from_millis(20_000),
        Some(value) => parse_rebalance_interval(&value.to_string_lossy())?,
    };
    tracing::info!(
        ?every,
        "consumers rebalance their queues (a dead replica's queues wait at most this long)"
    );
    Ok(every)
}

/// A value of [`REBALANCE_INTERVAL_ENV`]: milliseconds, at least the client's minimum
/// interval (1 s), or the client would fall back to its default.
pub fn parse_rebalance_interval(value: &str) -> Result<std::time::Duration> {
    const FLOOR_MS: u64 = 1_000;
    value
        .trim()
        .parse::<u64>()
        .ok()
        .filter(|ms| *ms >= FLOOR_MS)
        .map(std::time::Duration::from_millis)
        .ok_or_else(|| {
            MqError::Config(format!(
                "{REBALANCE_INTERVAL_ENV}={value:?}: must be milliseconds, at least {FLOOR_MS}"
            ))
        })
}

/// The service's tokio runtime, which its RocketMQ client shares ([`Mq::new`]): one
/// worker per core, and up to `blocking_threads` (3..=512) blocking threads, where the
/// client runs its listeners.
pub fn service_runtime(blocking_threads: usize) -> Result<tokio::runtime::Runtime> {
    if !(3..=512).contains(&blocking_threads) {
        return Err(MqError::Config(format!(
            "blocking threads {blocking_threads}: must be 3..=512"
        )));
    }
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .max_blocking_threads(blocking_threads)
        .build()
        .map_err(|e| MqError::Config(format!("building the runtime: {e}")))
}

/// How long [`Mq::shutdown`] waits for the client's cancelled tasks to end (what its own
/// runtime owner would wait).
const SHUTDOWN_WITHIN: std::time::Duration = std::time::Duration::from_secs(30);

/// How to reach the name server and how much blocking work the client may run at once.
#[derive(Clone, Debug)]
pub struct MqConfig {
    /// `host:port` of the name server (`;`-separated for several).
    pub namesrv_addr: String,
    /// Concurrent listener calls the client admits (transaction listener, check-backs,
    /// consumer callbacks); further calls queue up to eight times this depth. They run on
    /// the runtime's blocking threads: build it with at least this many.
    pub listener_concurrency: usize,
}

impl MqConfig {
    pub fn new(namesrv_addr: impl Into<String>) -> Self {
        Self {
            namesrv_addr: namesrv_addr.into(),
            listener_concurrency: 128,
        }
    }
}

/// The RocketMQ client on the runtime it was built on, and the name server address: the
/// factory for producers and consumers.
pub struct Mq {
    runtime: Arc<ClientRuntime>,
    /// The client's tasks on that runtime (cancelled by [`Mq::shutdown`]).
    tasks: RuntimeContext,
    namesrv_addr: String,
    /// Checks that a name server answers ([`BROKER`]); aborted by [`Mq::shutdown`].
    watch: tokio::task::JoinHandle<()>,
}

impl Mq {
    /// The client on the tokio runtime this is called from, the service's own. `name`
    /// scopes its tasks. Call it inside that runtime.
    ///
    /// rocketmq-client-rust would otherwise run on a runtime of its own (`RuntimeOwner`):
    /// every reply from the broker would then wake a task of the other runtime, a
    /// cross-thread wake-up per request. On one runtime order_srv spent about 10% less CPU
    /// per CreateOrder (docs/benchmark.md). `RuntimeContext` is rocketmq-runtime's
    /// borrowed-runtime context (marked for harnesses and migrations; the only way to put
    /// the client on a runtime it did not build); the blocking lane policy is the one the
    /// owner would apply, sized from `config`.
    pub fn new(config: &MqConfig, name: &'static str) -> Result<Self> {
        let listener_concurrency = config.listener_concurrency.max(1);
        let lane = BlockingPoolPolicy {
            name: format!("{name}-mq-blocking"),
            max_concurrency: listener_concurrency,
            max_queue_depth: listener_concurrency.saturating_mul(8),
            ..BlockingPoolPolicy::default()
        };
        let tasks = RuntimeContext::try_from_current_with_blocking_policy(name, lane)
            .map_err(|e| MqError::Config(format!("the client needs a tokio runtime: {e}")))?;
        let runtime = ClientRuntime::try_new(
            tasks.service_context(name),
            ClientRuntimeConfig::default(),
            TelemetryHandle::noop(),
        )?;
        Ok(Self {
            runtime,
            tasks,
            namesrv_addr: config.namesrv_addr.clone(),
            watch: tokio::spawn(watch_name_servers(config.namesrv_addr.clone())),
        })
    }

    pub fn namesrv_addr(&self) -> &str {
        &self.namesrv_addr
    }

    /// A transactional producer (not started). `instance` distinguishes two members of
    /// the same group in one process (tests); `None` is right for a service.
    pub fn transactional_producer(
        &self,
        group: &str,
        topics: &[&str],
        listener: impl TransactionListener,
        instance: Option<&str>,
    ) -> TransactionMQProducer {
        TransactionMQProducer::builder(self.runtime.clone())
            .client_config(self.producer_config(instance))
            .producer_group(group)
            .name_server_addr(self.namesrv_addr.as_str())
            .topics(topics.to_vec())
            .send_msg_timeout(3_000)
            .transaction_listener(listener)
            // Check-backs are answered from the database; a few in parallel drain a
            // backlog after a crash without starving the request path.
            .check_thread_pool_min_size(4)
            .check_thread_pool_max_size(16)
            .build()
    }

    /// A plain producer (not started).
    pub fn producer(&self, group: &str) -> DefaultMQProducer {
        DefaultMQProducer::builder(self.runtime.clone())
            .client_config(self.producer_config(None))
            .producer_group(group)
            .name_server_addr(self.namesrv_addr.as_str())
            .send_msg_timeout(3_000)
            .build()
    }

    /// A clustering push consumer (not started, not subscribed) that starts at the first
    /// offset of a new group, so nothing sent before its first rebalance is skipped.
    pub fn push_consumer(
        &self,
        group: &str,
        concurrency: u32,
        instance: Option<&str>,
    ) -> DefaultMQPushConsumer {
        let mut builder = DefaultMQPushConsumer::builder(self.runtime.clone());
        if let Some(instance) = instance {
            builder = builder.client_config(self.client_config(instance));
        }
        builder
            .consumer_group(group)
            .name_server_addr(self.namesrv_addr.as_str())
            .consume_from_where(ConsumeFromWhere::ConsumeFromFirstOffset)
            .consume_thread_min(concurrency.max(1))
            .consume_thread_max(concurrency.max(1))
            .consume_message_batch_max_size(1)
            // On shutdown, give in-flight callbacks time to finish (the client's default
            // is 0 ms: it then aborts its own housekeeping task and warns about it).
            .await_termination_millis_when_shutdown(5_000)
            .build()
    }

    /// Creates topics on every broker of the default cluster (idempotent). A consumer that
    /// subscribes to a topic that does not exist yet waits ~20 s for its first rebalance.
    pub async fn create_topics(&self, topics: &[&str], queues: i32) -> Result<()> {
        let mut admin = self.producer("devstack_topic_admin");
        admin.start().await?;
        let mut outcome = Ok(());
        for topic in topics {
            if let Err(e) = admin
                .create_topic("TBW102", topic, queues, HashMap::new())
                .await
            {
                outcome = Err(MqError::from(e));
                break;
            }
        }
        admin.shutdown().await;
        outcome
    }

    /// On how many brokers every one of `topics` has queues (the fewest over the topics):
    /// what a producer of them can send to.
    pub async fn brokers_serving(&self, topics: &[&str]) -> Result<usize> {
        let mut probe = self.producer("devstack_topic_admin");
        probe.start().await?;
        let mut fewest = usize::MAX;
        let mut outcome = Ok(());
        for topic in topics {
            match probe.fetch_publish_message_queues(topic).await {
                Ok(queues) => {
                    let brokers: std::collections::BTreeSet<String> =
                        queues.iter().map(|q| q.broker_name().to_string()).collect();
                    fewest = fewest.min(brokers.len());
                }
                Err(e) => {
                    outcome = Err(MqError::from(e));
                    break;
                }
            }
        }
        probe.shutdown().await;
        outcome.map(|()| if topics.is_empty() { 0 } else { fewest })
    }

    /// The timer (delayed messages) of every master broker in the name server's clusters,
    /// from the broker's runtime info (`GET_BROKER_RUNTIME_INFO`, which Apache RocketMQ 5
    /// answers with the same keys), by broker name.
    pub async fn timer_backlogs(&self) -> Result<Vec<(String, TimerBacklog)>> {
        use rocketmq_client_rust::{DefaultMQAdminExt, MQAdminReadExt};
        // An admin group name may be used once per process at a time.
        static PROBES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let probe = PROBES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let mut admin = DefaultMQAdminExt::with_admin_ext_group(
            self.runtime.clone(),
            format!("timer_probe_{}_{probe}", std::process::id()),
        );
        admin.set_namesrv_addr(self.namesrv_addr.as_str());
        admin.start().await?;
        let mut backlogs = Vec::new();
        let outcome = async {
            let clusters = admin.examine_broker_cluster_info().await?;
            for (name, brokers) in clusters.broker_addr_table.unwrap_or_default() {
                // The master has broker id 0.
                let Some(addr) = brokers.broker_addrs().get(&0).cloned() else {
                    continue;
                };
                let stats = admin.fetch_broker_runtime_stats(addr).await?;
                let read = |key: &'static str| {
                    stats
                        .table
                        .get(&CheetahString::from_static_str(key))
                        .and_then(|v| v.as_str().parse::<f64>().ok())
                        .unwrap_or(0.0)
                };
                backlogs.push((
                    name.to_string(),
                    TimerBacklog {
                        read_behind_secs: read("timerReadBehind"),
                        messages_not_indexed: read("timerOffsetBehind"),
                        waiting: read("timerCongestNum"),
                        enqueue_per_sec: read("timerEnqueueTps"),
                        dequeue_per_sec: read("timerDequeueTps"),
                    },
                ));
            }
            Ok::<_, ClientError>(())
        }
        .await;
        admin.shutdown().await;
        outcome?;
        backlogs.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(backlogs)
    }

    /// Stops the client and cancels what is left of its tasks. Shut the producers and
    /// consumers down first.
    ///
    /// The report of tasks that had to be cancelled is routine at shutdown (the client's
    /// periodic tasks never end by themselves), so it goes to debug.
    pub async fn shutdown(self) {
        self.watch.abort();
        self.runtime.shutdown().await;
        let report = self.tasks.shutdown_tasks(SHUTDOWN_WITHIN).await;
        if !report.is_healthy() {
            tracing::debug!(report = %report.to_json(), "RocketMQ client tasks cancelled at shutdown");
        }
    }

    /// A producer's client settings. Latency fault tolerance is on: a broker a send
    /// failed on is avoided for a while, so with several masters the next send (the
    /// caller's retry after a transport failure, see [`is_transport_failure`]) goes to
    /// another one; with one broker it is still used, as the only one there is.
    fn producer_config(&self, instance: Option<&str>) -> ClientConfig {
        let mut config = match instance {
            Some(instance) => self.client_config(instance),
            None => {
                let mut config = ClientConfig::default();
                config.set_namesrv_addr(self.namesrv_addr.as_str().into());
                config
            }
        };
        config.set_send_latency_enable(true);
        config
    }

    fn client_config(&self, instance: &str) -> ClientConfig {
        let mut config = ClientConfig::default();
        config.set_instance_name(instance.into());
        config.set_namesrv_addr(self.namesrv_addr.as_str().into());
        config
    }
}

#[cfg(test)]
mod tests {
    use super::service_runtime;

    #[test]
    fn the_service_runtime_takes_3_to_512_blocking_threads() {
        for refused in [0, 2, 513] {
            assert!(
                service_runtime(refused).is_err(),
                "{refused} blocking threads"
            );
        }
        for taken in [3, 512] {
            let runtime = service_runtime(taken).expect("a runtime");
            assert_eq!(runtime.block_on(async { 1 + 1 }), 2);
        }
    }
}
