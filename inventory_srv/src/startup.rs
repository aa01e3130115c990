//! Wiring: database pool and migrations, the bound gRPC listener, and graceful shutdown.

use std::{net::SocketAddr, time::Duration};

use anyhow::Context;
use proto::inventory::inventory_server::InventoryServer;
use sqlx::MySqlPool;
use tokio::net::TcpListener;

use std::sync::Arc;

use mq::{Mq, MqConfig};
use rocketmq_client_rust::DefaultMQPushConsumer;

use crate::{
    MIGRATOR,
    config::Config,
    consumer::{RebackCounters, RebackHandler},
    grpc::InventoryService,
};

/// The running reback consumer and its client runtime.
struct Consuming {
    mq: Mq,
    consumer: DefaultMQPushConsumer,
}

/// A service whose listener is already bound: `grpc_addr` is real even for port 0.
pub struct Application {
    listener: TcpListener,
    grpc_addr: SocketAddr,
    pool: MySqlPool,
    counters: Arc<RebackCounters>,
    consuming: Option<Consuming>,
    tombstone_retention: Duration,
    purge_interval: Duration,
    reconciler: crate::reconcile::Reconciler,
    reconcile_interval: Duration,
    registry: observe::Registry,
    metrics_listener: TcpListener,
    metrics_addr: SocketAddr,
    service: InventoryService,
}

impl Application {
    /// Creates the database when missing, migrates it and binds the gRPC port.
    pub async fn build(config: Config) -> anyhow::Result<Self> {
        mq::check_rebalance_interval()?;
        let pool = service_db::open(
            &config.database_url,
            config.db_max_connections,
            "INVENTORY_DATABASE_URL",
        )
        .await?;
        Self::build_with_pool(&config, pool).await
    }

    /// Like [`Application::build`] on an existing pool (tests hand in their own database).
    pub async fn build_with_pool(config: &Config, pool: MySqlPool) -> anyhow::Result<Self> {
        Self::assemble(config, pool, true).await
    }

    /// The gRPC service without the `order_reback` consumer, for tests of the inventory
    /// API alone (they need no broker).
    pub async fn build_without_consumer(config: &Config, pool: MySqlPool) -> anyhow::Result<Self> {
        Self::assemble(config, pool, false).await
    }

    async fn assemble(config: &Config, pool: MySqlPool, consume: bool) -> anyhow::Result<Self> {
        check_reconcile_horizon(config)?;
        service_db::migrate(&pool, &MIGRATOR)
            .await
            .context("migrating the inventory database")?;
        let listener = TcpListener::bind(config.grpc_addr)
            .await
            .with_context(|| format!("INVENTORY_GRPC_ADDR: cannot bind {}", config.grpc_addr))?;
        let grpc_addr = listener.local_addr()?;
        let registry = observe::Registry::new();
        let counters = Arc::new(RebackCounters::register(&registry));
        let service = InventoryService::new(pool.clone(), &registry);
        let metrics_listener = observe::bind(config.metrics_addr, "INVENTORY_METRICS_ADDR")
            .await
            .map_err(anyhow::Error::msg)?;
        let metrics_addr = metrics_listener.local_addr()?;
        let orders = observe::grpc::endpoint(&config.order_endpoint, Duration::from_secs(2))
            .with_context(|| format!("INVENTORY_ORDER_ENDPOINT: {:?}", config.order_endpoint))?
            .connect_lazy();
        let reconciler = crate::reconcile::Reconciler {
            pool: pool.clone(),
            orders: proto::order::order_reconcile_client::OrderReconcileClient::new(orders),
            horizon: config.reconcile_horizon,
            batch: config.reconcile_batch,
            call_timeout: Duration::from_secs(10),
            counters: Arc::new(crate::reconcile::ReconcileCounters::register(&registry)),
        };
        let consuming = if consume {
            Some(start_consuming(config, &pool, &counters).await?)
        } else {
            None
        };
        Ok(Self {
            listener,
            grpc_addr,
            pool,
            counters,
            consuming,
            tombstone_retention: config.tombstone_retention,
            purge_interval: config.purge_interval,
            reconciler,
            reconcile_interval: config.reconcile_interval,
            registry,
            metrics_listener,
            metrics_addr,
            service,
        })
    }

    pub fn grpc_addr(&self) -> SocketAddr {
        self.grpc_addr
    }

    pub fn pool(&self) -> &MySqlPool {
        &self.pool
    }

    /// Where `GET /metrics` is served.
    pub fn metrics_addr(&self) -> SocketAddr {
        self.metrics_addr
    }

    /// What the reback consumer has done so far.
    pub fn reback_counters(&self) -> Arc<RebackCounters> {
        self.counters.clone()
    }

    /// Serves until `shutdown` resolves. Then, in order: health turns NOT_SERVING and the
    /// gRPC server drains its calls; one signal stops the purge, the reconciler and the
    /// metrics endpoint;
    /// the reback consumer stops pulling and finishes its in-flight deliveries; the pool
    /// closes.
    pub async fn run_until(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let (stop, stopped) = tokio::sync::watch::channel(false);
        let metrics_server = tokio::spawn(observe::serve(
            self.metrics_listener,
            self.registry,
            observe::stopped(stopped.clone()),
        ));
        let purger = service_db::spawn_purge(
            self.pool.clone(),
            crate::db::EXPIRED_RETURNED_DETAILS,
            self.tombstone_retention,
            self.purge_interval,
            stopped.clone(),
        );
        let reconciling =
            crate::reconcile::spawn(self.reconciler, self.reconcile_interval, stopped);
        let service = InventoryServer::new(self.service);
        let served =
            observe::grpc::serve(self.listener, service, proto::FILE_DESCRIPTOR_SET, shutdown)
                .await;
        let _ = stop.send(true);
        let _ = purger.await;
        let _ = reconciling.await;
        let _ = metrics_server.await;
        if let Some(Consuming { mq, mut consumer }) = self.consuming {
            // Stops pulling and waits for in-flight callbacks before the pool closes.
            consumer.shutdown().await;
            mq.shutdown().await;
        }
        self.pool.close().await;
        served?;
        Ok(())
    }
}

/// The reconciler's horizon must leave the tombstones (and order_srv's barrier rows, which
/// order_srv checks on every call) long enough to outlive it.
fn check_reconcile_horizon(config: &Config) -> anyhow::Result<()> {
    let horizon = config.reconcile_horizon;
    if horizon.is_zero() || horizon.saturating_mul(2) > config.tombstone_retention {
        anyhow::bail!(
            "INVENTORY_RECONCILE_HORIZON ({horizon:?}) must be above zero and at most half of \
             INVENTORY_TOMBSTONE_RETENTION ({:?})",
            config.tombstone_retention
        );
    }
    Ok(())
}

async fn start_consuming(
    config: &Config,
    pool: &MySqlPool,
    counters: &Arc<RebackCounters>,
) -> anyhow::Result<Consuming> {
    let mq = Mq::new(
        &MqConfig {
            namesrv_addr: config.namesrv_addr.clone(),
            // Callbacks run on the runtime's blocking threads: never more at once.
            listener_concurrency: (config.consumer_threads as usize)
                .saturating_mul(2)
                .min(config.mq_blocking_threads),
        },
        "inventory_srv",
    )
    .context("INVENTORY_MQ_BLOCKING_THREADS: RocketMQ client runtime")?;
    let handler = Arc::new(RebackHandler {
        pool: pool.clone(),
        counters: counters.clone(),
    });
    let consumer = mq::consumer::start(
        &mq,
        &config.reback_consumer_group,
        &config.reback_topic,
        config.consumer_threads,
        Some(config.reback_max_reconsume),
        handler,
        tokio::runtime::Handle::current(),
    )
    .await
    .context("NAMESRV_ADDR: starting the order_reback consumer")?;
    Ok(Consuming { mq, consumer })
}
