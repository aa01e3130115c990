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
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .with_context(|| format!("opening {}", log.display()))?;
        let err = out.try_clone()?;
        let child = Command::new(binary)
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

pub struct Ports {
    namesrv: u16,
    broker: u16,
    inventory: u16,
    order: u16,
    order_metrics: u16,
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
                broker: free_broker_port("127.0.0.1")?,
                inventory: free_port("127.0.0.1")?,
                order: free_port("127.0.0.1")?,
                order_metrics: free_port("127.0.0.1")?,
            },
            order_db,
            inventory_db,
            pay_timeout,
            fast_broker: true,
            service_log: Some("warn,order_srv=info,inventory_srv=info"),
            otlp_endpoint: None,
        })
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

    /// Services that export their spans over OTLP/gRPC to `endpoint`.
    pub fn exporting_traces_to(mut self, endpoint: String) -> Self {
        self.otlp_endpoint = Some(endpoint);
        self
    }

    /// What every service's environment has besides its own settings.
    fn common_env(&self) -> Vec<(String, String)> {
        let mut env = vec![("NAMESRV_ADDR".to_owned(), self.namesrv())];
        env.extend(self.service_log.map(|log| ("RUST_LOG".into(), log.into())));
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

    pub fn order_addr(&self) -> String {
        format!("http://127.0.0.1:{}", self.ports.order)
    }

    /// `host:port` of order_srv's `/metrics`.
    pub fn order_metrics_addr(&self) -> String {
        format!("127.0.0.1:{}", self.ports.order_metrics)
    }

    pub fn inventory_addr(&self) -> String {
        format!("http://127.0.0.1:{}", self.ports.inventory)
    }

    pub fn namesrv(&self) -> String {
        format!("127.0.0.1:{}", self.ports.namesrv)
    }

    pub async fn broker(&self) -> anyhow::Result<Proc> {
        let mut args = vec![
            "broker".into(),
            format!("--namesrv-port={}", self.ports.namesrv),
            format!("--broker-port={}", self.ports.broker),
            format!("--store-dir={}", self.store.display()),
        ];
        if self.fast_broker {
            args.push("--fast".into());
        }
        let mut proc = Proc::spawn(
            "broker",
            &sibling_binary("devstack")?,
            &args,
            &[],
            &self.logs.join("broker.log"),
        )?;
        proc.listening(
            &format!("127.0.0.1:{}", self.ports.broker),
            Duration::from_secs(120),
        )
        .await?;
        Ok(proc)
    }

    /// inventory_srv, with its reback consumer armed to abort on the next reback.
    pub async fn inventory(&self, crash_in_consumer: bool) -> anyhow::Result<Proc> {
        let mut env: Vec<(String, String)> = vec![
            ("INVENTORY_DATABASE_URL".into(), self.inventory_db.clone()),
            (
                "INVENTORY_GRPC_ADDR".into(),
                format!("127.0.0.1:{}", self.ports.inventory),
            ),
            ("INVENTORY_METRICS_ADDR".into(), "127.0.0.1:0".into()),
        ];
        env.extend(self.common_env());
        if crash_in_consumer {
            env.push((
                "FAILPOINTS".into(),
                "inventory.before_reback=1*return(*:crash)".into(),
            ));
        }
        let mut proc = Proc::spawn(
            "inventory_srv",
            &sibling_binary("inventory_srv")?,
            &[],
            &env,
            &self.logs.join("inventory_srv.log"),
        )?;
        proc.listening(
            &format!("127.0.0.1:{}", self.ports.inventory),
            Duration::from_secs(120),
        )
        .await?;
        Ok(proc)
    }

    /// order_srv, with `point` armed to abort the process the first time it is hit.
    pub async fn order_crashing_at(&self, point: &str) -> anyhow::Result<Proc> {
        self.order_with(Some(format!("{point}=1*return(*:crash)")))
            .await
    }

    /// order_srv with `failpoints` (the `FAILPOINTS` syntax of the `fail` crate).
    pub async fn order_with(&self, failpoints: Option<String>) -> anyhow::Result<Proc> {
        let mut env = vec![
            ("ORDER_DATABASE_URL".into(), self.order_db.clone()),
            (
                "ORDER_GRPC_ADDR".into(),
                format!("127.0.0.1:{}", self.ports.order),
            ),
            ("ORDER_METRICS_ADDR".into(), self.order_metrics_addr()),
            (
                "INVENTORY_ENDPOINT".into(),
                format!("http://127.0.0.1:{}", self.ports.inventory),
            ),
            (
                "ORDER_PAY_TIMEOUT".into(),
                format!("{}s", self.pay_timeout.as_secs().max(1)),
            ),
        ];
        env.extend(self.common_env());
        if let Some(failpoints) = failpoints {
            env.push(("FAILPOINTS".into(), failpoints));
        }
        let mut proc = Proc::spawn(
            "order_srv",
            &sibling_binary("order_srv")?,
            &[],
            &env,
            &self.logs.join("order_srv.log"),
        )?;
        proc.listening(
            &format!("127.0.0.1:{}", self.ports.order),
            Duration::from_secs(120),
        )
        .await?;
        Ok(proc)
    }
}
