//! An embedded RocketMQ name server and broker (the rocketmq-rust implementation), started
//! in-process from the libraries' own builders, for tests and local runs.

use std::{
    net::{SocketAddr, TcpListener},
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use anyhow::{Context, bail};
use rocketmq_broker::{
    BrokerBootstrap, Builder as BrokerBuilder, Running,
    config::{broker_config::BrokerConfig, validated::ValidatedBrokerConfig},
};
use rocketmq_namesrv::{NamesrvConfig, bootstrap::Builder as NamesrvBuilder};
use rocketmq_observability::{TelemetryHandle, TelemetryRuntimeGuard};
use rocketmq_runtime::RuntimeContext;
use rocketmq_store::MessageStoreConfig;
use rocketmq_transport::api::ServerConfig;
use tokio::{sync::oneshot, task::JoinHandle};

/// The topics the system uses, created when the broker starts.
pub const SYSTEM_TOPICS: [&str; 2] = ["order_reback", "order_timeout"];

/// The consumer groups the system runs (`order_timeout` in order_srv, `inventory_reback`
/// in inventory_srv).
pub const SYSTEM_CONSUMER_GROUPS: [&str; 2] = ["order_timeout", "inventory_reback"];

/// What to start and how the broker behaves. `Default` is production-like; `for_tests`
/// makes check-backs and delays fast.
#[derive(Clone, Debug)]
pub struct BrokerSettings {
    pub host: String,
    /// Name server port; 0 picks a free one. Unused with `join_namesrv`.
    pub namesrv_port: u16,
    /// `host:port` of a running name server to register with, instead of starting one
    /// (a broker of a cluster in a process of its own).
    pub join_namesrv: Option<String>,
    /// The master brokers to start, by name, all in cluster `DefaultCluster`: topics get
    /// queues on every one, and a producer or consumer uses them all.
    pub broker_names: Vec<String>,
    /// Port of the first broker; 0 picks a free one (a broker also listens on its port
    /// - 2). Further brokers take free ports.
    pub broker_port: u16,
    /// Port of the first broker's HA listener; 0 picks a free one. A process that starts
    /// other parts too picks it with theirs (`free_port` keeps one process's picks
    /// apart, not two processes').
    pub ha_port: u16,
    /// Where the broker keeps its store; `None` makes a throwaway directory.
    pub store_dir: Option<PathBuf>,
    /// A half message older than this is checked back.
    pub transaction_timeout: Duration,
    /// How often the broker scans for half messages to check back.
    pub transaction_check_interval: Duration,
    /// Check-backs per half message before the broker gives up (and discards it).
    pub transaction_check_max: u32,
    /// How long the broker buffers its records of resolved half messages before writing
    /// them. A half message whose record is still buffered looks unresolved: when this is
    /// longer than `transaction_timeout`, committed and rolled-back half messages get
    /// checked back too.
    pub transaction_op_batch_interval: Duration,
    /// The delay levels, e.g. "1s 5s 10s 30s 1m ...".
    pub message_delay_level: String,
    /// Size of one commit-log file (the store maps it whole).
    pub commit_log_file_size: usize,
    /// Topics to create once the broker is up.
    pub topics: Vec<String>,
    /// Consumer groups whose retry topics (`%RETRY%<group>`) are created up front. The
    /// broker would create one at the group's first heartbeat, but a starting consumer
    /// looks its route up before that and logs warnings until it exists.
    pub consumer_groups: Vec<String>,
    pub queues_per_topic: i32,
}

impl Default for BrokerSettings {
    fn default() -> Self {
        Self {
            host: "127.0.0.1".into(),
            namesrv_port: 9876,
            join_namesrv: None,
            broker_names: vec!["broker-a".into()],
            broker_port: 10911,
            ha_port: 0,
            store_dir: None,
            transaction_timeout: Duration::from_secs(6),
            transaction_check_interval: Duration::from_secs(30),
            transaction_check_max: 15,
            transaction_op_batch_interval: Duration::from_secs(3),
            message_delay_level: "1s 5s 10s 30s 1m 2m 3m 4m 5m 6m 7m 8m 9m 10m 20m 30m 1h 2h"
                .into(),
            commit_log_file_size: 1024 * 1024 * 1024,
            topics: SYSTEM_TOPICS.iter().map(|t| (*t).to_owned()).collect(),
            consumer_groups: SYSTEM_CONSUMER_GROUPS
                .iter()
                .map(|g| (*g).to_owned())
                .collect(),
            queues_per_topic: 4,
        }
    }
}

impl BrokerSettings {
    /// Free ports, a throwaway store, check-back after about a second, short delays.
    pub fn for_tests() -> Self {
        Self {
            namesrv_port: 0,
            broker_port: 0,
            ha_port: 0,
            transaction_timeout: Duration::from_secs(1),
            transaction_check_interval: Duration::from_secs(1),
            transaction_check_max: 30,
            // Well under the timeout: only unresolved half messages are checked back.
            transaction_op_batch_interval: Duration::from_millis(200),
            message_delay_level: "1s 2s 3s 5s 10s 30s 1m 2m 3m 4m 5m 6m 7m 8m 9m 10m 20m 30m"
                .into(),
            commit_log_file_size: 64 * 1024 * 1024,
            ..Self::default()
        }
    }

    /// One more master, `name`, with the tests' timings, registering with the name
    /// server at `namesrv` (as `devstack broker --join` runs it); it creates no topics.
    pub fn another_master(namesrv: &str, name: &str) -> Self {
        Self {
            join_namesrv: Some(namesrv.to_owned()),
            broker_names: vec![name.to_owned()],
            topics: Vec::new(),
            ..Self::for_tests()
        }
    }
}

/// A running name server (unless it joined one) and its brokers. Call
/// [`EmbeddedBroker::shutdown`] to stop them.
pub struct EmbeddedBroker {
    namesrv_addr: String,
    broker_addrs: Vec<SocketAddr>,
    store_dir: PathBuf,
    // Held only so a throwaway store outlives the broker.
    _temp_store: Option<tempfile::TempDir>,
    brokers: Vec<BrokerBootstrap<Running>>,
    namesrv_stop: Option<oneshot::Sender<()>>,
    namesrv_task: Option<JoinHandle<()>>,
}

impl EmbeddedBroker {
    /// Starts both on the current tokio runtime and waits until the broker has registered
    /// and the configured topics exist.
    pub async fn start(settings: BrokerSettings) -> anyhow::Result<Self> {
        let (store_dir, temp_store) = open_store(settings.store_dir.as_deref())?;
        let mut stack = Self {
            namesrv_addr: String::new(),
            broker_addrs: Vec::new(),
            store_dir,
            _temp_store: temp_store,
            brokers: Vec::new(),
            namesrv_stop: None,
            namesrv_task: None,
        };
        match &settings.join_namesrv {
            Some(addr) => stack.namesrv_addr = addr.clone(),
            None => stack.start_own_namesrv(&settings).await?,
        }
        for (i, name) in settings.broker_names.iter().enumerate() {
            let (port, ha_port) = broker_ports(&settings, i)?;
            // The first broker keeps the store layout of a single-broker stack.
            let store = match i {
                0 => stack.store_dir.join("broker"),
                _ => stack.store_dir.join(name),
            };
            match start_broker(&settings, &stack.namesrv_addr, name, &store, port, ha_port).await {
                Ok(running) => stack.brokers.push(running),
                Err(e) => {
                    stack.shutdown().await;
                    return Err(e.context(format!("broker {name}")));
                }
            }
            stack.broker_addrs.push(
                format!("{}:{port}", settings.host)
                    .parse()
                    .context("broker address")?,
            );
        }
        // Inline, not in a helper: one more nested future makes the compiler's `Send`
        // check of `start`'s future overflow where a caller spawns it.
        let brokers = settings.broker_names.len();
        for (topics, queues) in topics_to_create(&settings) {
            let topics: Vec<&str> = topics.iter().map(String::as_str).collect();
            if let Err(e) = create_topics_on(&stack.namesrv_addr, &topics, queues, brokers).await {
                stack.shutdown().await;
                return Err(e);
            }
        }
        Ok(stack)
    }

    /// Starts the stack's own name server and waits until it listens.
    async fn start_own_namesrv(&mut self, settings: &BrokerSettings) -> anyhow::Result<()> {
        let namesrv_port = match settings.namesrv_port {
            0 => free_port(&settings.host)?,
            port => port,
        };
        self.namesrv_addr = format!("{}:{namesrv_port}", settings.host);
        let (stop, task) = start_namesrv(namesrv_port, &self.store_dir.join("namesrv")).await?;
        self.namesrv_stop = Some(stop);
        self.namesrv_task = Some(task);
        wait_for_port(&self.namesrv_addr, Duration::from_secs(30))
            .await
            .context("the name server did not start listening")
    }

    /// `host:port` of the name server: what clients need.
    pub fn namesrv_addr(&self) -> &str {
        &self.namesrv_addr
    }

    /// The first broker's address.
    pub fn broker_addr(&self) -> SocketAddr {
        self.broker_addrs
            .first()
            .copied()
            .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 0)))
    }

    /// Every broker's address, in the order of `broker_names`.
    pub fn broker_addrs(&self) -> &[SocketAddr] {
        &self.broker_addrs
    }

    pub fn store_dir(&self) -> &Path {
        &self.store_dir
    }

    /// Stops the brokers (flushing their stores), then the name server.
    pub async fn shutdown(mut self) {
        for broker in self.brokers.drain(..) {
            broker.shutdown().await;
        }
        if let Some(stop) = self.namesrv_stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.namesrv_task.take() {
            let _ = tokio::time::timeout(Duration::from_secs(10), task).await;
        }
    }
}

/// The store directory: `dir`, created if missing, or a throwaway one (returned too, so
/// that it lives as long as the broker).
fn open_store(dir: Option<&Path>) -> anyhow::Result<(PathBuf, Option<tempfile::TempDir>)> {
    match dir {
        Some(dir) => {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("creating store directory {}", dir.display()))?;
            Ok((dir.to_path_buf(), None))
        }
        None => {
            let temp = tempfile::Builder::new()
                .prefix("devstack-broker-")
                .tempdir()
                .context("creating a throwaway store directory")?;
            Ok((temp.path().to_path_buf(), Some(temp)))
        }
    }
}

/// The port and HA port of broker `i`: for the first broker the configured ones unless
/// 0, free ones otherwise.
fn broker_ports(settings: &BrokerSettings, i: usize) -> anyhow::Result<(u16, u16)> {
    let port = match settings.broker_port {
        port if port != 0 && i == 0 => port,
        _ => free_broker_port(&settings.host)?,
    };
    let ha_port = match settings.ha_port {
        port if port != 0 && i == 0 => port,
        _ => free_port(&settings.host)?,
    };
    Ok((port, ha_port))
}

/// The topics to create, with their queues: the configured ones, and the consumer groups'
/// retry topics with one queue each; an empty list is left out.
fn topics_to_create(settings: &BrokerSettings) -> Vec<(Vec<String>, i32)> {
    let retry_topics: Vec<String> = settings
        .consumer_groups
        .iter()
        .map(|group| format!("%RETRY%{group}"))
        .collect();
    [
        (settings.topics.clone(), settings.queues_per_topic),
        (retry_topics, 1),
    ]
    .into_iter()
    .filter(|(topics, _)| !topics.is_empty())
    .collect()
}

async fn start_namesrv(
    port: u16,
    data_dir: &Path,
) -> anyhow::Result<(oneshot::Sender<()>, JoinHandle<()>)> {
    std::fs::create_dir_all(data_dir)
        .with_context(|| format!("creating {}", data_dir.display()))?;
    let namesrv_config = NamesrvConfig {
        kv_config_path: data_dir.join("kvConfig.json").display().to_string(),
        config_store_path: data_dir
            .join("rocketmq-namesrv.properties")
            .display()
            .to_string(),
        ..NamesrvConfig::default()
    };
    // The name server reaches itself through the machine's own (LAN) address, which it
    // finds by itself: bound to loopback only, that connection was refused at start and
    // every 30 s, logged as an ERROR without an address. So it listens on every
    // interface, as Apache RocketMQ's name server does; the broker stays on `host`.
    let server_config = ServerConfig {
        listen_port: u32::from(port),
        bind_address: "0.0.0.0".to_owned(),
        ..ServerConfig::default()
    };
    let context = RuntimeContext::from_current(format!("devstack-namesrv-{port}"));
    let bootstrap =
        NamesrvBuilder::new(context.service_context("namesrv"), TelemetryHandle::noop())
            .set_name_server_config(namesrv_config)
            .set_server_config(server_config)
            .build();
    let (stop_tx, stop_rx) = oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        let stopped = async move {
            let _ = stop_rx.await;
        };
        if let Err(e) = bootstrap.boot_with_shutdown(stopped).await {
            tracing::error!(error = %e, "name server stopped with an error");
        }
    });
    Ok((stop_tx, task))
}

async fn start_broker(
    settings: &BrokerSettings,
    namesrv_addr: &str,
    name: &str,
    store: &Path,
    port: u16,
    ha_port: u16,
) -> anyhow::Result<BrokerBootstrap<Running>> {
    let root = store.display().to_string();
    let mut broker = BrokerConfig {
        broker_ip1: settings.host.as_str().into(),
        listen_port: u32::from(port),
        store_path_root_dir: root.as_str().into(),
        namesrv_addr: Some(namesrv_addr.into()),
        transaction_timeout: millis(settings.transaction_timeout),
        transaction_check_interval: millis(settings.transaction_check_interval),
        transaction_check_max: settings.transaction_check_max,
        transaction_op_batch_interval: millis(settings.transaction_op_batch_interval),
        ..BrokerConfig::default()
    };
    broker.broker_identity.broker_name = name.into();
    broker.broker_server_config.bind_address = settings.host.clone();
    broker.broker_server_config.listen_port = u32::from(port);
    let store = MessageStoreConfig {
        store_path_root_dir: root.as_str().into(),
        message_delay_level: settings.message_delay_level.clone(),
        mapped_file_size_commit_log: settings.commit_log_file_size,
        ha_listen_port: usize::from(ha_port),
        // The commit-log append queue waits this long for more messages after the first
        // (default 50 µs), and tokio rounds the wait up to its 1 ms timer tick: every send
        // (half message, pay-timeout message, END_TRANSACTION) waited about 1 ms for
        // nothing at low load. Messages already queued are still batched; the reply still
        // follows the write to the commit log; flush and replication are unchanged.
        commit_log_micro_batch_max_wait_micros: 0,
        // The timer moves at most this many delayed messages per tick (1 s) in and out;
        // the default 64 capped pay timeouts at 64 a second (vendor/rocketmq-store/PATCHED.md).
        timer_source_batch_messages: TIMER_BATCH,
        timer_due_batch_messages: TIMER_BATCH,
        ..MessageStoreConfig::default()
    };
    let validated =
        ValidatedBrokerConfig::try_from_parts(broker, store).context("broker configuration")?;
    let context = RuntimeContext::from_current(format!("devstack-broker-{port}"));
    let initialized = BrokerBuilder::new(
        context.service_context("broker"),
        TelemetryRuntimeGuard::noop(),
    )
    .with_validated_config(validated)
    .build()
    .initialize()
    .await
    .map_err(|e| anyhow::anyhow!("initializing the broker: {e}"))?;
    initialized
        .start()
        .await
        .map_err(|e| anyhow::anyhow!("starting the broker: {e}"))
}

/// Creates `topics` with `queues` queues on every broker registered with the name
/// server (retried while the first broker has not registered yet).
pub async fn create_topics(namesrv_addr: &str, topics: &[&str], queues: i32) -> anyhow::Result<()> {
    create_topics_on(namesrv_addr, topics, queues, 1).await
}

/// Like [`create_topics`], retried until every topic has queues on `brokers` brokers (a
/// broker that registers late would miss the topic).
pub async fn create_topics_on(
    namesrv_addr: &str,
    topics: &[&str],
    queues: i32,
    brokers: usize,
) -> anyhow::Result<()> {
    let mq = mq::Mq::new(&mq::MqConfig::new(namesrv_addr), "devstack-admin")?;
    let deadline = Instant::now() + Duration::from_secs(60);
    let outcome = loop {
        let created = match mq.create_topics(topics, queues).await {
            Ok(()) => mq.brokers_serving(topics).await.map(|n| {
                if n >= brokers {
                    Ok(())
                } else {
                    Err(format!("topics on {n} of {brokers} brokers"))
                }
            }),
            Err(e) => Err(e),
        };
        match created {
            Ok(Ok(())) => break Ok(()),
            Ok(Err(short)) if Instant::now() < deadline => {
                tracing::debug!(short, "creating topics; retrying");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Ok(Err(short)) => break Err(anyhow::anyhow!("creating topics {topics:?}: {short}")),
            Err(e) if Instant::now() < deadline => {
                tracing::debug!(error = %e, "creating topics; retrying");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => break Err(anyhow::anyhow!("creating topics {topics:?}: {e}")),
        }
    };
    mq.shutdown().await;
    outcome
}

/// Delayed messages the broker's timer indexes, and delivers, per one-second tick: 32
/// times the 64 of rocketmq-store's defaults, far above the 250 pay timeouts a second the
/// services reach on two cores.
pub const TIMER_BATCH: usize = 2_048;

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

/// Where [`free_port`] looks: below Linux's ephemeral range (32768-60999 by default), so
/// a process binding port 0 (a metrics endpoint, an exporter) or opening a connection
/// cannot take a port between the moment it is handed out and the moment its owner
/// binds it. Before, two systems started side by side by one test binary could meet on
/// one port, and a test then talked gRPC to the other system's metrics endpoint.
const PORTS: std::ops::Range<u16> = 20_000..32_000;

/// A port that is free now, outside the ephemeral range, and never handed out twice by
/// this process.
pub fn free_port(host: &str) -> anyhow::Result<u16> {
    claim_ports(host, &[0])
}

/// The broker also binds `port - 2` (its "fast" listener): a port where both are free.
pub fn free_broker_port(host: &str) -> anyhow::Result<u16> {
    claim_ports(host, &[0, 2])
}

/// A port `p` such that `p - offset` is free for every offset, claimed for this process.
fn claim_ports(host: &str, offsets: &[u16]) -> anyhow::Result<u16> {
    static GIVEN: std::sync::Mutex<std::collections::BTreeSet<u16>> =
        std::sync::Mutex::new(std::collections::BTreeSet::new());
    let mut given = GIVEN
        .lock()
        .map_err(|_| anyhow::anyhow!("the port registry is poisoned"))?;
    for _ in 0..1_000 {
        let port = rand::random_range(PORTS);
        let ports: Option<Vec<u16>> = offsets.iter().map(|o| port.checked_sub(*o)).collect();
        let Some(ports) = ports else { continue };
        if ports
            .iter()
            .all(|p| !given.contains(p) && TcpListener::bind((host, *p)).is_ok())
        {
            given.extend(ports);
            return Ok(port);
        }
    }
    bail!("no free port on {host} in {PORTS:?}")
}

/// Waits until something accepts TCP connections on `addr`.
pub async fn wait_for_port(addr: &str, within: Duration) -> anyhow::Result<()> {
    let deadline = Instant::now() + within;
    loop {
        if tokio::net::TcpStream::connect(addr).await.is_ok() {
            return Ok(());
        }
        if Instant::now() >= deadline {
            bail!("nothing listens on {addr} after {within:?}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[cfg(test)]
mod port_tests {
    use std::collections::BTreeSet;

    use super::{PORTS, free_broker_port, free_port};

    #[test]
    fn ports_are_below_the_ephemeral_range_and_never_handed_out_twice() {
        let ports: Vec<u16> = (0..200)
            .map(|_| free_port("127.0.0.1").expect("a free port"))
            .collect();
        assert_eq!(ports.iter().collect::<BTreeSet<_>>().len(), ports.len());
        assert!(ports.iter().all(|p| PORTS.contains(p)), "{ports:?}");
        let broker = free_broker_port("127.0.0.1").expect("a free broker port");
        assert!(!ports.contains(&broker) && !ports.iter().any(|p| p + 2 == broker));
    }
}
