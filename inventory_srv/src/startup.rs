//! Wiring: database pool and migrations, the bound listeners, and graceful shutdown.

use std::{net::SocketAddr, sync::Arc, time::Duration};

use anyhow::Context;
use mq::{Mq, MqConfig};
use observe::service::{Background, Listeners};
use proto::inventory::inventory_server::InventoryServer;
use rocketmq_client_rust::DefaultMQPushConsumer;
use sqlx::MySqlPool;

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

/// A service whose listeners are already bound: their addresses are real even for port 0.
pub struct Application {
    listeners: Listeners,
    pool: MySqlPool,
    counters: Arc<RebackCounters>,
    consuming: Option<Consuming>,
    tombstone_retention: Duration,
    settle_after: Duration,
    purge_interval: Duration,
    reconciler: crate::reconcile::Reconciler,
    reconcile_interval: Duration,
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
        let listeners = Listeners::bind(
            (config.grpc_addr, "INVENTORY_GRPC_ADDR"),
            (config.metrics_addr, "INVENTORY_METRICS_ADDR"),
        )
        .await?;
        let registry = &listeners.registry;
        let counters = Arc::new(RebackCounters::register(registry));
        let service = InventoryService::new(pool.clone(), registry);
        let orders = observe::grpc::endpoint(&config.order.order_endpoint, Duration::from_secs(2))
            .with_context(|| format!("ORDER_ENDPOINT: {:?}", config.order.order_endpoint))?
            .connect_lazy();
        let reconciler = crate::reconcile::Reconciler {
            pool: pool.clone(),
            orders: proto::order::order_reconcile_client::OrderReconcileClient::new(orders),
            horizon: config.reconcile_horizon,
            batch: config.reconcile_batch,
            call_timeout: Duration::from_secs(10),
            counters: Arc::new(crate::reconcile::ReconcileCounters::register(registry)),
        };
        let consuming = if consume {
            Some(start_consuming(config, &pool, &counters).await?)
        } else {
            None
        };
        Ok(Self {
            listeners,
            pool,
            counters,
            consuming,
            tombstone_retention: config.tombstone_retention,
            settle_after: config.settle_after,
            purge_interval: config.purge_interval,
            reconciler,
            reconcile_interval: config.reconcile_interval,
            service,
        })
    }

    pub fn grpc_addr(&self) -> SocketAddr {
        self.listeners.grpc_addr
    }

    pub fn pool(&self) -> &MySqlPool {
        &self.pool
    }

    /// Where `GET /metrics` is served.
    pub fn metrics_addr(&self) -> SocketAddr {
        self.listeners.metrics_addr
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
        let listeners = self.listeners;
        tracing::info!(grpc = %listeners.grpc_addr, metrics = %listeners.metrics_addr, "inventory_srv listening");
        let purged = observe::counter_vec(
            &listeners.registry,
            "inventory_purged_rows_total",
            "stock_sell_detail rows deleted: RETURNED ones past their retention (purged), \
             paid orders' deductions added to stock_settled (settled)",
            &["rows"],
        );
        let mut background = Background::new();
        background.serve_metrics(listeners.metrics, listeners.registry);
        background.add(service_db::spawn_purge(
            self.pool.clone(),
            crate::db::EXPIRED_RETURNED_DETAILS,
            self.tombstone_retention,
            self.purge_interval,
            purged.with_label_values(&["returned"]),
            background.stopped(),
        ));
        background.add(spawn_settle(
            self.pool.clone(),
            self.settle_after,
            self.purge_interval,
            purged.with_label_values(&["settled"]),
            background.stopped(),
        ));
        background.add(crate::reconcile::spawn(
            self.reconciler,
            self.reconcile_interval,
            background.stopped(),
        ));
        let service = InventoryServer::new(self.service);
        let served = observe::grpc::serve(
            listeners.grpc,
            service,
            proto::FILE_DESCRIPTOR_SET,
            shutdown,
        )
        .await;
        background.stop().await;
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

/// Settles confirmed deductions every `every` ([`crate::stock::settle`]).
fn spawn_settle(
    pool: MySqlPool,
    after: Duration,
    every: Duration,
    settled: observe::IntCounter,
    stop: tokio::sync::watch::Receiver<bool>,
) -> tokio::task::JoinHandle<()> {
    const BATCH: u32 = 500;
    const WITHIN: Duration = Duration::from_secs(600);
    service_db::spawn_periodic("settle", every, WITHIN, stop, move || {
        let (pool, settled) = (pool.clone(), settled.clone());
        async move {
            match crate::stock::settle(&pool, after, BATCH, |n| settled.inc_by(n)).await {
                Ok(0) => {}
                Ok(n) => tracing::info!(settled = n, "settled paid orders' deductions"),
                Err(crate::error::Error::Database(e)) if service_db::is_unreachable(&e) => {
                    service_db::MYSQL.failed(&e);
                }
                Err(e) => tracing::warn!(error = %e, "settling deductions failed; will retry"),
            }
        }
    })
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
