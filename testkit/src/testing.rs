//! Helpers for tests in every crate: one embedded broker per test binary, unique names so
//! tests can share it in parallel, and polling with a deadline.

use std::{
    future::Future,
    sync::{
        OnceLock,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use crate::{BrokerSettings, EmbeddedBroker};

/// A deadline generous enough for CI, which shares two cores with MariaDB and the broker.
pub const PATIENCE: Duration = Duration::from_secs(60);

struct SharedBroker {
    namesrv_addr: String,
}

static SHARED: OnceLock<Result<SharedBroker, String>> = OnceLock::new();

/// The name server address of a broker started once for this test binary with
/// [`BrokerSettings::for_tests`]. It runs on its own thread and runtime, so it outlives
/// each test's runtime; it dies with the process.
///
/// # Panics
/// When the broker cannot start: every message-level test needs it, so the first one
/// fails with the reason instead of skipping.
pub fn shared_broker() -> &'static str {
    let shared = SHARED.get_or_init(|| start_on_own_thread(shared_settings()));
    match shared {
        Ok(broker) => &broker.namesrv_addr,
        Err(reason) => panic!("the embedded RocketMQ broker did not start: {reason}"),
    }
}

fn shared_settings() -> BrokerSettings {
    let dir = std::env::temp_dir().join(format!("devstack-test-{}", std::process::id()));
    sweep_dead_stores();
    BrokerSettings {
        store_dir: Some(dir),
        ..BrokerSettings::for_tests()
    }
}

/// Removes stores left by earlier test processes (the shared broker is never dropped).
fn sweep_dead_stores() {
    let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name
            .to_str()
            .and_then(|n| n.strip_prefix("devstack-test-"))
            .and_then(|p| p.parse::<u32>().ok())
        else {
            continue;
        };
        if !std::path::Path::new(&format!("/proc/{pid}")).exists() {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

fn start_on_own_thread(settings: BrokerSettings) -> Result<SharedBroker, String> {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::Builder::new()
        .name("devstack-broker".into())
        .spawn(move || {
            let runtime = match tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .thread_name("devstack-broker")
                .enable_all()
                .build()
            {
                Ok(runtime) => runtime,
                Err(e) => {
                    let _ = tx.send(Err(e.to_string()));
                    return;
                }
            };
            runtime.block_on(async move {
                match EmbeddedBroker::start(settings).await {
                    Ok(broker) => {
                        let _ = tx.send(Ok(broker.namesrv_addr().to_owned()));
                        // Serve until the process exits.
                        std::future::pending::<()>().await;
                        drop(broker);
                    }
                    Err(e) => {
                        let _ = tx.send(Err(format!("{e:#}")));
                    }
                }
            });
        })
        .map_err(|e| e.to_string())?;
    let namesrv_addr = rx
        .recv()
        .map_err(|_| "the broker thread died while starting".to_owned())??;
    Ok(SharedBroker { namesrv_addr })
}

/// A name nobody else in this process uses: for topics and groups of one test.
pub fn unique(prefix: &str) -> String {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or_default();
    format!("{prefix}_{}_{n}_{nanos}", std::process::id())
}

/// Polls `check` every 50 ms until it yields `Some` or `within` passes.
pub async fn eventually<T, F, Fut>(within: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + within;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {within:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
