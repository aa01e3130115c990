//! The system's parts as separate OS processes (the bench measures each one's CPU; a
//! chaos run kills them): the binaries built next to this one.

use std::{
    path::{Path, PathBuf},
    process::Stdio,
    time::{Duration, Instant},
};

use anyhow::{Context, bail};
use tokio::process::{Child, Command};

/// Linux reports CPU time in clock ticks of 1/100 s (USER_HZ) on every mainstream arch.
const TICKS_PER_SEC: u64 = 100;

/// A child process of this one, with its output in a log file.
pub struct Proc {
    pub name: String,
    child: Child,
    pid: u32,
}

/// The path of a binary built in the same target directory as this one.
pub fn sibling_binary(name: &str) -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe().context("locating this executable")?;
    let dir = exe.parent().context("executable without a directory")?;
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
    /// Starts `binary args..` with `env` added, stdout and stderr appended to `log`.
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
        })
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
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
