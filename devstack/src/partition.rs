//! Network partitions for `devstack chaos --partitions`: one link at a time goes silent,
//! both ways, with nothing closed or reset (packets dropped, as when a switch or a zone
//! fails), then heals.
//!
//! Every service process runs in a cgroup (v2) of its own kind, `shop-chaos-<pid>-order`
//! and `...-inventory`: it joins it before it starts (`sh` writes its pid to
//! `cgroup.procs`, then execs the service), so every socket it opens carries it. An
//! nftables table of this run holds the cut: on the output hook (loopback traffic passes
//! it in both directions), a packet of a socket in the cut side's cgroup to the far side's
//! port marks its connection (conntrack mark), and every packet of a marked connection is
//! dropped, the far side's replies included. A heal empties the chain. Needs root and
//! `nft` (`scripts/test` installs nftables); the table and the cgroups go away at the end.

use std::{
    fmt,
    path::{Path, PathBuf},
    time::Duration,
};

use anyhow::{Context, bail};
use tokio::{io::AsyncWriteExt, process::Command};

/// The links a partition cuts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Link {
    OrderMysql,
    InventoryMysql,
    OrderInventory,
    /// Both services from the name server and every broker.
    ServicesBroker,
}

impl Link {
    pub const ALL: [Link; 4] = [
        Link::OrderMysql,
        Link::InventoryMysql,
        Link::OrderInventory,
        Link::ServicesBroker,
    ];

    /// The conntrack mark of this link's connections while it is cut.
    fn mark(self) -> u32 {
        match self {
            Link::OrderMysql => 0x5301,
            Link::InventoryMysql => 0x5302,
            Link::OrderInventory => 0x5303,
            Link::ServicesBroker => 0x5304,
        }
    }
}

impl fmt::Display for Link {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Link::OrderMysql => "order_srv <-> MySQL",
            Link::InventoryMysql => "inventory_srv <-> MySQL",
            Link::OrderInventory => "order_srv <-> inventory_srv",
            Link::ServicesBroker => "services <-> broker",
        })
    }
}

/// The service kinds that get a cgroup.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    Order,
    Inventory,
}

/// Where the far sides listen.
#[derive(Debug, Clone)]
pub struct Ports {
    pub mysql: u16,
    pub order: Vec<u16>,
    pub inventory: Vec<u16>,
    /// The name server's and every broker's (all the ports they listen on).
    pub broker: Vec<u16>,
}

/// This run's cgroups and nftables table.
#[derive(Debug)]
pub struct Partitions {
    table: String,
    order: Cgroup,
    inventory: Cgroup,
    ports: Ports,
}

#[derive(Debug)]
struct Cgroup {
    /// The directory under the cgroup2 mount.
    dir: PathBuf,
    /// The same, as nftables names it: relative to /sys/fs/cgroup.
    nft_path: String,
}

impl Partitions {
    /// Makes the cgroups and an empty table; fails with what is missing (root, nft,
    /// cgroup2).
    pub async fn set_up(ports: Ports) -> anyhow::Result<Self> {
        let version = Command::new("nft").arg("--version").output().await;
        if !version.is_ok_and(|out| out.status.success()) {
            bail!(
                "--partitions needs nftables (`nft`; `apt-get install nftables`, as scripts/test does)"
            );
        }
        let root = cgroup2_mount()?;
        remove_leftovers(&root).await;
        let run = format!("shop-chaos-{}", std::process::id());
        let order = Cgroup::create(&root, &format!("{run}-order"))?;
        let inventory = Cgroup::create(&root, &format!("{run}-inventory"))?;
        let table = run.replace('-', "_");
        nft(&format!(
            "table inet {table} {{\n  chain out {{ type filter hook output priority 0; policy accept; }}\n}}\n"
        ))
        .await
        .context("--partitions needs root to add an nftables table")?;
        Ok(Self {
            table,
            order,
            inventory,
            ports,
        })
    }

    /// The file a process of `side` writes its pid to, to join its cgroup.
    pub fn procs_file(&self, side: Side) -> PathBuf {
        match side {
            Side::Order => &self.order,
            Side::Inventory => &self.inventory,
        }
        .dir
        .join("cgroup.procs")
    }

    /// Drops every packet on `link`, both ways, from now until [`Partitions::heal`].
    pub async fn cut(&self, link: Link) -> anyhow::Result<()> {
        let mark = link.mark();
        let rule = |group: &Cgroup, ports: &[u16]| {
            let ports: Vec<String> = ports.iter().map(u16::to_string).collect();
            format!(
                "add rule inet {} out socket cgroupv2 level 1 \"{}\" tcp dport {{ {} }} ct mark set {mark:#x}\n",
                self.table,
                group.nft_path,
                ports.join(", ")
            )
        };
        let p = &self.ports;
        let mut script = match link {
            Link::OrderMysql => rule(&self.order, &[p.mysql]),
            Link::InventoryMysql => rule(&self.inventory, &[p.mysql]),
            Link::OrderInventory => {
                rule(&self.order, &p.inventory) + &rule(&self.inventory, &p.order)
            }
            Link::ServicesBroker => {
                rule(&self.order, &p.broker) + &rule(&self.inventory, &p.broker)
            }
        };
        script += &format!("add rule inet {} out ct mark {mark:#x} drop\n", self.table);
        nft(&script).await
    }

    /// Lets every packet through again.
    pub async fn heal(&self) -> anyhow::Result<()> {
        nft(&format!("flush chain inet {} out\n", self.table)).await
    }

    /// Removes the table and the cgroups (call after every service stopped: a cgroup with
    /// a process in it cannot be removed).
    pub async fn tear_down(self) {
        let _ = nft(&format!("delete table inet {}\n", self.table)).await;
        for group in [&self.order, &self.inventory] {
            let _ = std::fs::remove_dir(&group.dir);
        }
    }
}

impl Cgroup {
    fn create(root: &Path, name: &str) -> anyhow::Result<Self> {
        let dir = root.join(name);
        std::fs::create_dir_all(&dir)
            .with_context(|| format!("--partitions: creating the cgroup {}", dir.display()))?;
        let nft_path = dir
            .strip_prefix("/sys/fs/cgroup")
            .with_context(|| format!("{} is not under /sys/fs/cgroup", dir.display()))?
            .to_string_lossy()
            .into_owned();
        Ok(Self { dir, nft_path })
    }
}

/// The tables and cgroups of earlier runs that did not end normally (killed), so none of
/// their cuts outlives them. A run's pid names them; those of a live run stay.
async fn remove_leftovers(root: &Path) {
    let alive = |pid: &str| Path::new("/proc").join(pid).exists();
    if let Ok(out) = Command::new("nft").args(["list", "tables"]).output().await {
        for line in String::from_utf8_lossy(&out.stdout).lines() {
            if let Some(pid) = line.trim().strip_prefix("table inet shop_chaos_")
                && !alive(pid)
            {
                let _ = nft(&format!("delete table inet shop_chaos_{pid}\n")).await;
            }
        }
    }
    let Ok(entries) = std::fs::read_dir(root) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let pid = name
            .strip_prefix("shop-chaos-")
            .and_then(|rest| rest.split('-').next());
        if pid.is_some_and(|pid| !alive(pid)) {
            let _ = std::fs::remove_dir(entry.path());
        }
    }
}

/// Where cgroup v2 is mounted: /sys/fs/cgroup itself, or /sys/fs/cgroup/unified on a
/// hybrid (v1 + v2) machine.
fn cgroup2_mount() -> anyhow::Result<PathBuf> {
    let mounts = std::fs::read_to_string("/proc/mounts").context("reading /proc/mounts")?;
    mounts
        .lines()
        .filter_map(|line| {
            let mut fields = line.split_whitespace();
            let (_, at, kind) = (fields.next()?, fields.next()?, fields.next()?);
            (kind == "cgroup2").then(|| PathBuf::from(at))
        })
        .find(|at| at.starts_with("/sys/fs/cgroup"))
        .context("--partitions needs cgroup v2 mounted under /sys/fs/cgroup")
}

async fn nft(script: &str) -> anyhow::Result<()> {
    let mut child = Command::new("nft")
        .args(["-f", "-"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .context("running nft")?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin.write_all(script.as_bytes()).await?;
    }
    let out = tokio::time::timeout(Duration::from_secs(30), child.wait_with_output())
        .await
        .context("nft did not finish within 30 s")??;
    if !out.status.success() {
        bail!(
            "nft failed ({}): {}\n{script}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// WARN and ERROR lines a service logged from `from` to `to` (its log lines start with a
/// UTC timestamp and the level, colored or not).
pub fn warnings_between(
    log: &Path,
    from: chrono::DateTime<chrono::Utc>,
    to: chrono::DateTime<chrono::Utc>,
) -> usize {
    let Ok(text) = std::fs::read(log) else {
        return 0;
    };
    String::from_utf8_lossy(&text)
        .lines()
        .filter(|line| {
            let plain = crate::procs::strip_ansi(line);
            let mut words = plain.split_whitespace();
            let (Some(at), Some(level)) = (words.next(), words.next()) else {
                return false;
            };
            let Ok(at) = chrono::DateTime::parse_from_rfc3339(at) else {
                return false;
            };
            (from..=to).contains(&at.with_timezone(&chrono::Utc))
                && matches!(level, "WARN" | "ERROR")
        })
        .count()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_the_warnings_and_errors_of_a_window_in_a_colored_log() {
        let dir = tempfile::tempdir().expect("tempdir");
        let log = dir.path().join("order_srv.log");
        std::fs::write(
            &log,
            "\u{1b}[2m2026-12-07T06:00:00.000001Z\u{1b}[0m \u{1b}[33m WARN\u{1b}[0m before\n\
             2026-12-07T06:00:01.5Z ERROR inside\n\
             \u{1b}[2m2026-12-07T06:00:02Z\u{1b}[0m \u{1b}[32m INFO\u{1b}[0m inside, but info\n\
             \u{1b}[2m2026-12-07T06:00:03Z\u{1b}[0m \u{1b}[33m WARN\u{1b}[0m inside\n\
             a continuation line\n\
             2026-12-07T06:00:09Z  WARN after\n",
        )
        .expect("log");
        let at = |s: &str| {
            chrono::DateTime::parse_from_rfc3339(s)
                .expect("time")
                .with_timezone(&chrono::Utc)
        };
        assert_eq!(
            warnings_between(&log, at("2026-12-07T06:00:01Z"), at("2026-12-07T06:00:05Z")),
            2
        );
    }
}
