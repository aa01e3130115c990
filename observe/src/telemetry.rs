//! Tracing set-up and the production shutdown signal.

use tracing_subscriber::{EnvFilter, fmt};

/// The services' log filter when `RUST_LOG` is unset: their own lines from info up, the
/// RocketMQ client's only from warn up. A healthy service logs no WARN and no ERROR. The
/// client's route lookup warns while a retry topic (`%RETRY%<group>`) does not exist yet,
/// which is normal on a cluster where the broker creates it at the group's first
/// heartbeat; a route that stays missing fails the send or the subscription, and that is
/// logged by the service.
pub const DEFAULT_FILTER: &str = "info,rocketmq_client_rust=warn,\
     rocketmq_client_rust::implementation::mq_client_api_impl::route=error,\
     rocketmq_transport=warn,rocketmq_remoting=warn,rocketmq_runtime=warn,rocketmq_model=warn,\
     rocketmq_observability=warn";

/// Installs a `fmt` subscriber filtered by `RUST_LOG` (default `default_filter`). Lines
/// name their module, so a line leads to its source. Safe to call more than once: later
/// calls are no-ops.
pub fn init(default_filter: &str) {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_filter));
    let _ = fmt().with_env_filter(filter).try_init();
}

/// Tests are silent unless `TEST_LOG=1`.
pub fn init_for_tests() {
    if std::env::var_os("TEST_LOG").is_some() {
        init("info");
    }
}

/// Resolves on SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut sig) => {
                sig.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = terminate => {},
    }
    tracing::info!("shutdown signal received");
}
