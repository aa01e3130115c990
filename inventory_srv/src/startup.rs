//! Wiring: database pool and migrations, the bound gRPC listener, and graceful shutdown.

use std::{net::SocketAddr, time::Duration};

use anyhow::Context;
use proto::inventory::inventory_server::InventoryServer;
use sqlx::MySqlPool;
use tokio::net::TcpListener;
use tonic::transport::server::TcpIncoming;

use std::sync::Arc;

use mq::{Mq, MqConfig};
use rocketmq_client_rust::DefaultMQPushConsumer;

use crate::{
    MIGRATOR,
    config::Config,
    consumer::{self, RebackCounters},
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
    registry: observe::Registry,
    metrics_listener: TcpListener,
    metrics_addr: SocketAddr,
}

impl Application {
    /// Creates the database when missing, migrates it and binds the gRPC port.
    pub async fn build(config: Config) -> anyhow::Result<Self> {
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
        service_db::migrate(&pool, &MIGRATOR)
            .await
            .context("migrating the inventory database")?;
        let listener = TcpListener::bind(config.grpc_addr)
            .await
            .with_context(|| format!("INVENTORY_GRPC_ADDR: cannot bind {}", config.grpc_addr))?;
        let grpc_addr = listener.local_addr()?;
        let registry = observe::Registry::new();
        let counters = Arc::new(RebackCounters::register(&registry));
        let metrics_listener = observe::bind(config.metrics_addr, "INVENTORY_METRICS_ADDR")
            .await
            .map_err(anyhow::Error::msg)?;
        let metrics_addr = metrics_listener.local_addr()?;
        let consuming = if config.consume_rebacks {
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
            registry,
            metrics_listener,
            metrics_addr,
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

    /// Serves until `shutdown` resolves, then lets in-flight calls finish.
    pub async fn run_until(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let (health_reporter, health_service) = tonic_health::server::health_reporter();
        health_reporter
            .set_serving::<InventoryServer<InventoryService>>()
            .await;
        let (reflection, reflection_v1alpha) = proto::reflection("inventory.v1.Inventory")?;
        let (stop_purge, purge_stopped) = tokio::sync::watch::channel(false);
        let metrics_stopped = purge_stopped.clone();
        let metrics_server = tokio::spawn(observe::serve(
            self.metrics_listener,
            self.registry,
            async move {
                let mut stopped = metrics_stopped;
                let _ = stopped.wait_for(|stop| *stop).await;
            },
        ));
        let purger = service_db::spawn_purge(
            self.pool.clone(),
            crate::db::EXPIRED_RETURNED_DETAILS,
            self.tombstone_retention,
            self.purge_interval,
            purge_stopped,
        );
        let served = tonic::transport::Server::builder()
            .add_service(health_service)
            .add_service(reflection)
            .add_service(reflection_v1alpha)
            .add_service(InventoryServer::new(InventoryService::new(
                self.pool.clone(),
            )))
            .serve_with_incoming_shutdown(
                TcpIncoming::from(self.listener).with_nodelay(Some(true)),
                shutdown,
            )
            .await;
        let _ = stop_purge.send(true);
        let _ = purger.await;
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

async fn start_consuming(
    config: &Config,
    pool: &MySqlPool,
    counters: &Arc<RebackCounters>,
) -> anyhow::Result<Consuming> {
    let mq = Mq::new(
        &MqConfig {
            namesrv_addr: config.namesrv_addr.clone(),
            blocking_threads: config.mq_blocking_threads,
            listener_concurrency: config.consumer_threads as usize * 2,
            worker_threads: 1,
        },
        "inventory_srv",
    )
    .context("INVENTORY_MQ_BLOCKING_THREADS: RocketMQ client runtime")?;
    let consumer = consumer::start(
        &mq,
        &config.reback_consumer_group,
        &config.reback_topic,
        config.consumer_threads,
        pool.clone(),
        counters.clone(),
    )
    .await
    .context("NAMESRV_ADDR: starting the order_reback consumer")?;
    Ok(Consuming { mq, consumer })
}
