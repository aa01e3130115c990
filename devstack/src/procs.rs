//! The system's parts as separate OS processes (the bench measures each one's CPU; a
//! chaos run kills them): the binaries built next to this one.

use std::{
    path::{Path, PathBuf},
    process::Stdio,
    time::{Duration, Instant},
};

use anyhow::{Context, bail};
use testkit::broker::{free_broker_port, free_port};
use tokio::process::{Child, Command};
use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};

/// Linux reports CPU time in clock ticks of 1/100 s (USER_HZ) on every mainstream arch.
const TICKS_PER_SEC: u64 = 100;

/// A child process of this one, with its output in a log file.
pub struct Proc {
    pub name: String,
    child: Child,
    pid: u32,
    log: PathBuf,
}

/// The path of a binary built in the same target directory as this one (a test binary
/// lives one level down, in `deps/`).
pub fn sibling_binary(name: &str) -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe().context("locating this executable")?;
    let mut dir = exe.parent().context("executable without a directory")?;
    if dir.ends_with("deps") {
        dir = dir.parent().context("deps/ without a parent")?;
    }
    let path = dir.join(name);
    if !path.exists() {
        bail!(
            "{} not found: build every binary first (`cargo build --release --workspace --bins`)",
            path.display()
        );
    }
    Ok(path)
}

impl Proc {
    /// Starts `binary args..` with `env` added, stdout and stderr appended to `log`. A
    /// `RUST_LOG` of this process is not passed on: a child logs what `env` says, or its
    /// own default.
    pub fn spawn(
        name: &str,
        binary: &Path,
        args: &[String],
        env: &[(String, String)],
        log: &Path,
    ) -> anyhow::Result<Self> {
        Self::spawn_in(name, binary, args, env, log, None)
    }

    /// Like [`Proc::spawn`]; with `cgroup` (a `cgroup.procs` file) the process joins that
    /// cgroup before the binary starts, so every socket it opens belongs to it
    /// (`partition`). A shell writes its pid there and execs the binary in its place.
    pub fn spawn_in(
        name: &str,
        binary: &Path,
        args: &[String],
        env: &[(String, String)],
        log: &Path,
        cgroup: Option<&Path>,
    ) -> anyhow::Result<Self> {
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .with_context(|| format!("opening {}", log.display()))?;
        let err = out.try_clone()?;
        let mut command = match cgroup {
            None => Command::new(binary),
            Some(procs) => {
                let mut sh = Command::new("sh");
                sh.arg("-c")
                    .arg(r#"echo $$ > "$0" || exit 97; exec "$@""#)
                    .arg(procs)
                    .arg(binary);
                sh
            }
        };
        let child = command
            .args(args)
            .env_remove("RUST_LOG")
            .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("starting {}", binary.display()))?;
        let pid = child.id().context("child without a pid")?;
        Ok(Self {
            name: name.to_owned(),
            child,
            pid,
            log: log.to_path_buf(),
        })
    }

    /// Waits until something accepts connections on `addr`. Fails at once when the
    /// process exits first, and after `within` otherwise; either way the error carries
    /// the end of its log, so a part that did not start says why.
    pub async fn listening(&mut self, addr: &str, within: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + within;
        let failure = loop {
            if tokio::net::TcpStream::connect(addr).await.is_ok() {
                return Ok(());
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                break format!("{} exited ({status}) before listening on {addr}", self.name);
            }
            if Instant::now() >= deadline {
                break format!("{} does not listen on {addr} after {within:?}", self.name);
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        bail!(
            "{failure}; the end of {}:\n{}",
            self.log.display(),
            log_tail(&self.log, 40)
        )
    }

    /// Waits until the gRPC server on `addr` answers its health check with SERVING (a
    /// service is ready when it says so, not when something accepts connections on its
    /// port: that may be another process that took the port). Fails like [`listening`].
    ///
    /// [`listening`]: Self::listening
    pub async fn serving(&mut self, addr: &str, within: Duration) -> anyhow::Result<()> {
        let uri = format!("http://{addr}");
        self.ready_when(&format!("answer SERVING on {addr}"), within, || async {
            match health_of(&uri).await? {
                ServingStatus::Serving => Ok(()),
                status => Err(format!("health status {status:?}")),
            }
        })
        .await
    }

    /// Waits until the HTTP server at `url` answers `GET /readyz` with 200 (the gateway:
    /// ready when order_srv serves through it). Fails like [`listening`].
    ///
    /// [`listening`]: Self::listening
    pub async fn ready(&mut self, url: &str, within: Duration) -> anyhow::Result<()> {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(2))
            .build()?;
        let readyz = format!("{url}/readyz");
        self.ready_when(&format!("answer 200 on {readyz}"), within, || async {
            match client.get(&readyz).send().await {
                Ok(answer) if answer.status().is_success() => Ok(()),
                Ok(answer) => Err(format!("status {}", answer.status())),
                Err(e) => Err(e.to_string()),
            }
        })
        .await
    }

    /// Polls `probe` until it succeeds; fails at once when the process exits first, and
    /// after `within` otherwise, with the end of its log.
    async fn ready_when<F, Fut>(
        &mut self,
        what: &str,
        within: Duration,
        mut probe: F,
    ) -> anyhow::Result<()>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<(), String>>,
    {
        let deadline = Instant::now() + within;
        let failure = loop {
            let last = match probe().await {
                Ok(()) => return Ok(()),
                Err(e) => e,
            };
            if let Ok(Some(status)) = self.child.try_wait() {
                break format!("{} exited ({status}) before it could {what}", self.name);
            }
            if Instant::now() >= deadline {
                break format!("{} does not {what} after {within:?} ({last})", self.name);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        bail!(
            "{failure}; the end of {}:\n{}",
            self.log.display(),
            log_tail(&self.log, 40)
        )
    }

    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// User + system CPU time so far, `None` once it has exited.
    pub fn cpu_time(&self) -> Option<Duration> {
        cpu_time_of(&self.pid.to_string())
    }

    /// Whether it is still running.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// SIGTERM, then SIGKILL if it has not exited within `grace`.
    pub async fn stop(&mut self, grace: Duration) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.pid.to_string()])
            .status()
            .await;
        if tokio::time::timeout(grace, self.child.wait())
            .await
            .is_err()
        {
            self.kill().await;
        }
    }

    /// SIGKILL: no cleanup, no goodbye (what a crash looks like to everyone else).
    pub async fn kill(&mut self) {
        let _ = self.child.kill().await;
    }
}

/// The last `lines` lines of a log file (or why it can't be read).
fn log_tail(log: &Path, lines: usize) -> String {
    match std::fs::read(log) {
        Ok(bytes) => {
            let text = String::from_utf8_lossy(&bytes);
            let all: Vec<&str> = text.lines().collect();
            all[all.len().saturating_sub(lines)..].join("\n")
        }
        Err(e) => format!("(unreadable: {e})"),
    }
}

/// User + system CPU time of a process (`"self"` for this one), read from /proc.
pub fn cpu_time_of(pid: &str) -> Option<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the parenthesised command name; utime and stime are the 12th and 13th.
    let rest = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(Duration::from_millis(
        (utime + stime) * 1000 / TICKS_PER_SEC,
    ))
}

/// The pid of a running process whose command name is one of `names` (the first found).
pub fn pid_named(names: &[&str]) -> Option<String> {
    std::fs::read_dir("/proc")
        .ok()?
        .flatten()
        .find_map(|entry| {
            let pid = entry.file_name().into_string().ok()?;
            if !pid.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            let comm = std::fs::read_to_string(entry.path().join("comm")).ok()?;
            names.contains(&comm.trim_end()).then_some(pid)
        })
}

/// Fresh databases for a run's parts: drops and creates `names` on the MySQL server at
/// `server_url` (read from the environment variable `variable`, which errors name);
/// returns the server's options and each database's URL.
pub(crate) async fn fresh_databases<const N: usize>(
    server_url: &str,
    names: [&str; N],
    variable: &str,
) -> anyhow::Result<(sqlx::mysql::MySqlConnectOptions, [String; N])> {
    let server: sqlx::mysql::MySqlConnectOptions =
        server_url.parse().with_context(|| variable.to_owned())?;
    testkit::mysql::recreate_databases(&server, &names, variable).await?;
    let urls = names.map(|db| format!("{}/{db}", server_url.trim_end_matches('/')));
    Ok((server, urls))
}

/// The ports of every part; one entry per replica (broker `i` is `broker-a`, `broker-b`,
/// ...; the first one runs in the process with the name server).
pub struct Ports {
    namesrv: u16,
    brokers: Vec<u16>,
    /// Each broker's HA listener. Picked here with the others, not by the broker's own
    /// process: two processes picking free ports on their own can pick the same one (a
    /// bench run once had inventory_srv fail on the broker's HA port).
    broker_ha: Vec<u16>,
    inventory: Vec<u16>,
    inventory_metrics: Vec<u16>,
    order: Vec<u16>,
    order_metrics: Vec<u16>,
    gateway: u16,
}

/// Where each part of the system runs as a process, and how to (re)start it: the one
/// place that spawns the broker and the services (demo, chaos and bench use it).
pub struct Parts {
    logs: PathBuf,
    store: PathBuf,
    ports: Ports,
    order_db: String,
    inventory_db: String,
    pay_timeout: Duration,
    /// The broker with the tests' timings (check-back after about a second).
    fast_broker: bool,
    /// `RUST_LOG` of the services; `None` leaves it unset (their default filter).
    service_log: Option<&'static str>,
    /// `OTEL_EXPORTER_OTLP_ENDPOINT` of the services; `None`: no tracing export.
    otlp_endpoint: Option<String>,
    /// More settings for every order_srv (e.g. the overdue sweep's).
    order_env: Vec<(String, String)>,
    /// More settings for every inventory_srv (e.g. the reconciler's).
    inventory_env: Vec<(String, String)>,
    /// The `cgroup.procs` files order_srv and inventory_srv processes join (`partition`).
    cgroups: Option<(PathBuf, PathBuf)>,
}

impl Parts {
    /// Free ports, a store under `work`, logs there too; the fast broker, the services'
    /// own info lines (demo, chaos).
    pub fn new(
        work: &Path,
        order_db: String,
        inventory_db: String,
        pay_timeout: Duration,
    ) -> anyhow::Result<Self> {
        std::fs::create_dir_all(work.join("store"))?;
        Ok(Self {
            logs: work.to_path_buf(),
            store: work.join("store"),
            ports: Ports {
                namesrv: free_port("127.0.0.1")?,
                brokers: vec![free_broker_port("127.0.0.1")?],
                broker_ha: vec![free_port("127.0.0.1")?],
                inventory: vec![free_port("127.0.0.1")?],
                inventory_metrics: vec![free_port("127.0.0.1")?],
                order: vec![free_port("127.0.0.1")?],
                order_metrics: vec![free_port("127.0.0.1")?],
                gateway: free_port("127.0.0.1")?,
            },
            order_db,
            inventory_db,
            pay_timeout,
            fast_broker: true,
            service_log: Some("warn,order_srv=info,inventory_srv=info"),
            otlp_endpoint: None,
            order_env: Vec::new(),
            inventory_env: Vec::new(),
            cgroups: None,
        })
    }

    /// Ports for `order` order_srv and `inventory` inventory_srv replicas and `brokers`
    /// master brokers (each at least one).
    pub fn replicas(
        mut self,
        order: usize,
        inventory: usize,
        brokers: usize,
    ) -> anyhow::Result<Self> {
        let ports = &mut self.ports;
        while ports.order.len() < order {
            ports.order.push(free_port("127.0.0.1")?);
            ports.order_metrics.push(free_port("127.0.0.1")?);
        }
        while ports.inventory.len() < inventory {
            ports.inventory.push(free_port("127.0.0.1")?);
            ports.inventory_metrics.push(free_port("127.0.0.1")?);
        }
        while ports.brokers.len() < brokers {
            ports.brokers.push(free_broker_port("127.0.0.1")?);
            ports.broker_ha.push(free_port("127.0.0.1")?);
        }
        Ok(self)
    }

    pub fn order_replicas(&self) -> usize {
        self.ports.order.len()
    }

    pub fn inventory_replicas(&self) -> usize {
        self.ports.inventory.len()
    }

    pub fn brokers(&self) -> usize {
        self.ports.brokers.len()
    }

    /// The broker with production timings, services logging warnings only (bench).
    pub fn quiet_production_timing(mut self) -> Self {
        self.fast_broker = false;
        self.service_log = Some("warn");
        self
    }

    /// Services with their default log filter, as the container image runs them.
    pub fn default_service_logs(mut self) -> Self {
        self.service_log = None;
        self
    }

    /// Every order_srv also gets `name=value`.
    pub fn with_order_env(mut self, name: &str, value: String) -> Self {
        self.order_env.push((name.to_owned(), value));
        self
    }

    /// Every inventory_srv also gets `name=value`.
    pub fn with_inventory_env(mut self, name: &str, value: String) -> Self {
        self.inventory_env.push((name.to_owned(), value));
        self
    }

    /// Every order_srv joins the cgroup of `order` (its `cgroup.procs` file), every
    /// inventory_srv that of `inventory`.
    pub fn in_cgroups(mut self, order: PathBuf, inventory: PathBuf) -> Self {
        self.cgroups = Some((order, inventory));
        self
    }

    /// The broker ports the services use: the name server's, and each broker's two (it
    /// also listens on its port - 2).
    pub fn broker_ports(&self) -> Vec<u16> {
        let mut ports = vec![self.ports.namesrv];
        for port in &self.ports.brokers {
            ports.push(*port);
            ports.extend(port.checked_sub(2));
        }
        ports
    }

    /// Every service replica's name and log file.
    pub fn service_logs(&self) -> Vec<(String, PathBuf)> {
        let order = (0..self.order_replicas()).map(|i| replica_name("order_srv", i));
        let inventory = (0..self.inventory_replicas()).map(|i| replica_name("inventory_srv", i));
        order
            .chain(inventory)
            .map(|name| {
                let log = self.logs.join(format!("{name}.log"));
                (name, log)
            })
            .collect()
    }

    pub fn order_ports(&self) -> Vec<u16> {
        self.ports.order.clone()
    }

    pub fn inventory_ports(&self) -> Vec<u16> {
        self.ports.inventory.clone()
    }

    /// Services that export their spans over OTLP/gRPC to `endpoint`.
    pub fn exporting_traces_to(mut self, endpoint: String) -> Self {
        self.otlp_endpoint = Some(endpoint);
        self
    }

    /// What every service's environment has besides its own settings.
    fn common_env(&self) -> Vec<(String, String)> {
        let mut env = vec![("NAMESRV_ADDR".to_owned(), self.namesrv())];
        env.extend(self.service_log.map(|log| {
            let log = format!("{log},{}", observe::telemetry::CLIENT_FILTER);
            ("RUST_LOG".into(), log)
        }));
        env.extend(
            self.otlp_endpoint
                .clone()
                .map(|endpoint| ("OTEL_EXPORTER_OTLP_ENDPOINT".into(), endpoint)),
        );
        env
    }

    pub fn order_db_url(&self) -> String {
        self.order_db.clone()
    }

    pub fn inventory_db_url(&self) -> String {
        self.inventory_db.clone()
    }

    /// The first order_srv's URL.
    pub fn order_addr(&self) -> String {
        self.order_addr_of(0)
    }

    /// order_srv replica `i`'s URL.
    pub fn order_addr_of(&self, i: usize) -> String {
        format!("http://127.0.0.1:{}", port(&self.ports.order, i))
    }

    /// Every order_srv replica's URL.
    pub fn order_addrs(&self) -> Vec<String> {
        (0..self.order_replicas())
            .map(|i| self.order_addr_of(i))
            .collect()
    }

    /// `host:port` of the first order_srv's `/metrics`.
    pub fn order_metrics_addr(&self) -> String {
        format!("127.0.0.1:{}", port(&self.ports.order_metrics, 0))
    }

    /// The first inventory_srv's `/metrics` (`host:port`).
    pub fn inventory_metrics_addr(&self) -> String {
        format!("127.0.0.1:{}", port(&self.ports.inventory_metrics, 0))
    }

    /// The first inventory_srv's URL.
    pub fn inventory_addr(&self) -> String {
        format!("http://127.0.0.1:{}", port(&self.ports.inventory, 0))
    }

    /// The gateway's URL.
    pub fn gateway_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.ports.gateway)
    }

    /// The web gateway in front of the first order_srv and inventory_srv, signing
    /// nothing itself: `jwt_secret` is the key the caller signs its tokens with. No rate
    /// limit (one load generator plays every buyer).
    pub async fn gateway(&self, jwt_secret: &str) -> anyhow::Result<Proc> {
        let mut env = vec![
            (
                "GATEWAY_HTTP_ADDR".into(),
                format!("127.0.0.1:{}", self.ports.gateway),
            ),
            ("ORDER_ENDPOINT".into(), self.order_addr()),
            ("INVENTORY_ENDPOINT".into(), self.inventory_addr()),
            ("GATEWAY_JWT_SECRET".into(), jwt_secret.to_owned()),
            (
                "GATEWAY_PAYMENT_SECRET".into(),
                format!("{jwt_secret}-payments"),
            ),
            ("GATEWAY_RATE_PER_USER".into(), "0".into()),
        ];
        env.extend(self.common_env());
        let mut proc = Proc::spawn(
            "gateway",
            &sibling_binary("gateway")?,
            &[],
            &env,
            &self.logs.join("gateway.log"),
        )?;
        proc.ready(&self.gateway_url(), Duration::from_secs(120))
            .await?;
        Ok(proc)
    }

    pub fn namesrv(&self) -> String {
        format!("127.0.0.1:{}", self.ports.namesrv)
    }

    /// The name server and the first broker (`broker-a`), in one process.
    pub async fn broker(&self) -> anyhow::Result<Proc> {
        self.broker_at(0).await
    }

    /// Broker `i`: the first runs with the name server, the others (`broker-b`, ...)
    /// each in a process of its own that joins it, with its own store.
    pub async fn broker_at(&self, i: usize) -> anyhow::Result<Proc> {
        let broker_port = port(&self.ports.brokers, i);
        let name = broker_name(i);
        let mut args = vec![
            "broker".into(),
            format!("--broker-port={broker_port}"),
            format!("--ha-port={}", port(&self.ports.broker_ha, i)),
        ];
        let log = if i == 0 {
            args.push(format!("--namesrv-port={}", self.ports.namesrv));
            args.push(format!("--store-dir={}", self.store.display()));
            self.logs.join("broker.log")
        } else {
            args.push(format!("--join={}", self.namesrv()));
            args.push(format!("--broker-name={name}"));
            args.push(format!("--store-dir={}", self.store.join(&name).display()));
            self.logs.join(format!("{name}.log"))
        };
        if self.fast_broker {
            args.push("--fast".into());
        }
        let mut proc = Proc::spawn(&name, &sibling_binary("devstack")?, &args, &[], &log)?;
        proc.listening(
            &format!("127.0.0.1:{broker_port}"),
            Duration::from_secs(120),
        )
        .await?;
        Ok(proc)
    }

    /// The first inventory_srv, with its reback consumer armed to abort on the next
    /// reback when `crash_in_consumer`.
    pub async fn inventory(&self, crash_in_consumer: bool) -> anyhow::Result<Proc> {
        self.inventory_at(0, crash_in_consumer).await
    }

    /// inventory_srv replica `i`.
    pub async fn inventory_at(&self, i: usize, crash_in_consumer: bool) -> anyhow::Result<Proc> {
        let grpc = format!("127.0.0.1:{}", port(&self.ports.inventory, i));
        let mut env: Vec<(String, String)> = vec![
            ("INVENTORY_DATABASE_URL".into(), self.inventory_db.clone()),
            ("INVENTORY_GRPC_ADDR".into(), grpc.clone()),
            ("ORDER_ENDPOINT".into(), self.order_addr()),
            (
                "INVENTORY_METRICS_ADDR".into(),
                format!("127.0.0.1:{}", port(&self.ports.inventory_metrics, i)),
            ),
        ];
        env.extend(self.common_env());
        env.extend(self.inventory_env.iter().cloned());
        if crash_in_consumer {
            env.push((
                "FAILPOINTS".into(),
                "inventory.before_reback=1*return(*:crash)".into(),
            ));
        }
        let name = replica_name("inventory_srv", i);
        let mut proc = Proc::spawn_in(
            &name,
            &sibling_binary("inventory_srv")?,
            &[],
            &env,
            &self.logs.join(format!("{name}.log")),
            self.cgroups
                .as_ref()
                .map(|(_, inventory)| inventory.as_path()),
        )?;
        proc.serving(&grpc, Duration::from_secs(120)).await?;
        Ok(proc)
    }

    /// The first order_srv, with `point` armed to abort the process the first time it
    /// is hit.
    pub async fn order_crashing_at(&self, point: &str) -> anyhow::Result<Proc> {
        self.order_at(0, Some(format!("{point}=1*return(*:crash)")))
            .await
    }

    /// The first order_srv with `failpoints` (the `FAILPOINTS` syntax of the `fail` crate).
    pub async fn order_with(&self, failpoints: Option<String>) -> anyhow::Result<Proc> {
        self.order_at(0, failpoints).await
    }

    /// order_srv replica `i` with `failpoints`; it balances its Sells over every
    /// inventory_srv replica.
    pub async fn order_at(&self, i: usize, failpoints: Option<String>) -> anyhow::Result<Proc> {
        let grpc = format!("127.0.0.1:{}", port(&self.ports.order, i));
        let inventories: Vec<String> = self
            .ports
            .inventory
            .iter()
            .map(|p| format!("http://127.0.0.1:{p}"))
            .collect();
        let mut env = vec![
            ("ORDER_DATABASE_URL".into(), self.order_db.clone()),
            ("ORDER_GRPC_ADDR".into(), grpc.clone()),
            (
                "ORDER_METRICS_ADDR".into(),
                format!("127.0.0.1:{}", port(&self.ports.order_metrics, i)),
            ),
            ("INVENTORY_ENDPOINT".into(), inventories.join(",")),
            (
                "ORDER_PAY_TIMEOUT".into(),
                format!("{}s", self.pay_timeout.as_secs().max(1)),
            ),
        ];
        env.extend(self.common_env());
        env.extend(self.order_env.iter().cloned());
        if let Some(failpoints) = failpoints {
            env.push(("FAILPOINTS".into(), failpoints));
        }
        let name = replica_name("order_srv", i);
        let mut proc = Proc::spawn_in(
            &name,
            &sibling_binary("order_srv")?,
            &[],
            &env,
            &self.logs.join(format!("{name}.log")),
            self.cgroups.as_ref().map(|(order, _)| order.as_path()),
        )?;
        proc.serving(&grpc, Duration::from_secs(120)).await?;
        Ok(proc)
    }
}

/// `line` without its terminal color codes (`ESC [ ... m`).
pub fn strip_ansi(line: &str) -> String {
    let mut plain = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            plain.push(c);
        }
    }
    plain
}

/// The overall health status of the gRPC server at `uri`, each step bounded.
async fn health_of(uri: &str) -> Result<ServingStatus, String> {
    let ask = async {
        let channel = tonic::transport::Endpoint::from_shared(uri.to_owned())
            .map_err(|e| e.to_string())?
            .connect()
            .await
            .map_err(|e| e.to_string())?;
        let answer = HealthClient::new(channel)
            .check(HealthCheckRequest::default())
            .await
            .map_err(|status| format!("{:?}: {}", status.code(), status.message()))?;
        Ok(ServingStatus::try_from(answer.into_inner().status).unwrap_or(ServingStatus::Unknown))
    };
    tokio::time::timeout(Duration::from_secs(2), ask)
        .await
        .unwrap_or_else(|_| Err("no answer within 2 s".to_owned()))
}

/// Replica `i`'s port; an index past the replicas gets port 1 (nothing listens there),
/// so a wrong index fails loudly at start instead of panicking.
fn port(ports: &[u16], i: usize) -> u16 {
    ports.get(i).copied().unwrap_or(1)
}

/// `broker-a`, `broker-b`, ...
pub fn broker_name(i: usize) -> String {
    let letter = u8::try_from(i % 26).unwrap_or(0);
    format!("broker-{}", char::from(b'a' + letter))
}

/// The first replica keeps the plain name (and log file); others get `-2`, `-3`, ...
fn replica_name(service: &str, i: usize) -> String {
    match i {
        0 => service.to_owned(),
        _ => format!("{service}-{}", i + 1),
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::Proc;

    /// A part that exits before it serves fails its start at once (not at the deadline),
    /// and the error names its log.
    #[tokio::test]
    async fn a_part_that_exits_before_serving_fails_the_start_at_once_naming_its_log() {
        let dir = tempfile::tempdir().expect("a temp dir");
        let log = dir.path().join("quitter.log");
        let mut part = Proc::spawn(
            "quitter",
            std::path::Path::new("sh"),
            &[
                "-c".to_owned(),
                "echo 'cannot bind: Address already in use'; exit 3".to_owned(),
            ],
            &[],
            &log,
        )
        .expect("sh starts");
        let started = std::time::Instant::now();
        let failed = part
            .serving("127.0.0.1:9", Duration::from_secs(60))
            .await
            .expect_err("it never serves");
        let message = format!("{failed:#}");
        assert!(started.elapsed() < Duration::from_secs(10), "{message}");
        assert!(message.contains("exited"), "{message}");
        assert!(message.contains(&log.display().to_string()), "{message}");
        assert!(
            message.contains("Address already in use"),
            "the log's end: {message}"
        );
    }

    /// A part is ready when its own server answers SERVING, not when something accepts
    /// connections on its port: here another listener holds the port (as the broker's HA
    /// listener once held inventory_srv's), and the process never serves.
    #[tokio::test]
    async fn a_port_held_by_something_else_does_not_make_a_part_ready() {
        let other = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("a listener");
        let addr = other.local_addr().expect("its address").to_string();
        let accept = tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((socket, _)) = other.accept().await {
                held.push(socket);
            }
        });
        let dir = tempfile::tempdir().expect("a temp dir");
        let mut part = Proc::spawn(
            "sleeper",
            std::path::Path::new("sleep"),
            &["30".to_owned()],
            &[],
            &dir.path().join("sleeper.log"),
        )
        .expect("sleep starts");
        let within = Duration::from_secs(2);
        assert!(
            part.listening(&addr, within).await.is_ok(),
            "something listens there"
        );
        let refused = part
            .serving(&addr, within)
            .await
            .expect_err("it is not a gRPC server answering SERVING");
        assert!(
            refused.to_string().contains("does not answer SERVING"),
            "{refused:#}"
        );
        accept.abort();
    }
}
