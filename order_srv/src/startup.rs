//! Wiring: database pool and migrations, the RocketMQ clients, the inventory client, the
//! bound gRPC listener, and an orderly shutdown.

use std::{net::SocketAddr, sync::Arc, time::Duration};

use anyhow::Context;
use mq::{Mq, MqConfig};
use proto::{
    inventory::inventory_client::InventoryClient,
    order::{order_reconcile_server::OrderReconcileServer, order_server::OrderServer},
};
use rocketmq_client_rust::{DefaultMQProducer, DefaultMQPushConsumer};
use sqlx::MySqlPool;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use crate::{
    MIGRATOR,
    config::Config,
    create_order::{LocalTransaction, OrderPlacer, RebackTxListener},
    grpc::OrderService,
    inventory::Discovery,
    metrics::OrderMetrics,
    timeout::{OrderCloser, TimeoutCounters},
};

/// A service whose listener is bound and whose RocketMQ clients are started.
pub struct Application {
    listener: TcpListener,
    grpc_addr: SocketAddr,
    pool: MySqlPool,
    mq: Mq,
    plain_producer: DefaultMQProducer,
    placer: OrderPlacer,
    timeout_consumer: DefaultMQPushConsumer,
    timeout_counters: Arc<TimeoutCounters>,
    closer: Arc<OrderCloser>,
    barrier_retention: Duration,
    purge_interval: Duration,
    /// An unpaid order is swept this long after it was placed (pay timeout plus grace).
    overdue_after: Duration,
    sweep_interval: Duration,
    /// Answers inventory's reconciler.
    reconcile: crate::reconcile::ReconcileService,
    metrics: OrderMetrics,
    registry: observe::Registry,
    metrics_listener: TcpListener,
    metrics_addr: SocketAddr,
    /// Keeps the inventory channel to the serving replicas.
    inventory_discovery: JoinHandle<()>,
}

impl Application {
    /// Creates the database when missing, migrates it, starts the producers and binds
    /// the gRPC port.
    pub async fn build(config: Config) -> anyhow::Result<Self> {
        mq::check_rebalance_interval()?;
        let pool = service_db::open(
            &config.database_url,
            config.db_max_connections,
            "ORDER_DATABASE_URL",
        )
        .await?;
        Self::build_with_pool(&config, pool).await
    }

    /// Like [`Application::build`] on an existing pool (tests hand in their own database).
    pub async fn build_with_pool(config: &Config, pool: MySqlPool) -> anyhow::Result<Self> {
        service_db::migrate(&pool, &MIGRATOR)
            .await
            .context("migrating the order database")?;
        let registry = observe::Registry::new();
        let (inventory, inventory_discovery) = Discovery::parse(
            &config.inventory_endpoint,
            Duration::from_secs(2),
            config.inventory_probe_interval,
        )?
        .start(observe::gauge(
            &registry,
            "order_inventory_replicas",
            "inventory_srv replicas that Sells are balanced over (those whose health check says SERVING)",
        ))
        .await;

        let mq = Mq::new(
            &MqConfig {
                namesrv_addr: config.namesrv_addr.clone(),
                // Check-backs and consumer callbacks run on the runtime's blocking threads:
                // never more at once.
                listener_concurrency: config.mq_io_concurrency.min(config.mq_blocking_threads),
            },
            "order_srv",
        )
        .context("ORDER_MQ_*: RocketMQ client runtime")?;
        let mut plain_producer = mq.producer(&config.plain_producer_group);
        plain_producer.start().await.map_err(|e| {
            anyhow::anyhow!(
                "NAMESRV_ADDR: starting the plain producer: {}",
                mq::describe(&e)
            )
        })?;

        let metrics = OrderMetrics::register(&registry);
        let local_transaction = Arc::new(LocalTransaction {
            metrics: metrics.clone(),
            pool: pool.clone(),
            inventory: InventoryClient::new(observe::grpc::Traced(inventory)),
            sell_timeout: config.sell_timeout,
            timeout_producer: plain_producer.clone(),
            timeout_topic: config.timeout_topic.clone(),
            pay_timeout: config.pay_timeout,
        });
        let listener =
            RebackTxListener::new(local_transaction.clone(), tokio::runtime::Handle::current());
        let mut tx_producer = mq.transactional_producer(
            &config.tx_producer_group,
            &[config.reback_topic.as_str()],
            listener,
            config.mq_instance_name.as_deref(),
        );
        tx_producer.start().await.map_err(|e| {
            anyhow::anyhow!(
                "NAMESRV_ADDR: starting the transactional producer: {}",
                mq::describe(&e)
            )
        })?;
        let placer = OrderPlacer::new(
            tx_producer,
            config.reback_topic.clone(),
            local_transaction,
            config.create_order_budget,
        );

        let timeout_counters = Arc::new(TimeoutCounters::register(&registry));
        let closer = Arc::new(OrderCloser {
            pool: pool.clone(),
            producer: plain_producer.clone(),
            reback_topic: config.reback_topic.clone(),
            counters: timeout_counters.clone(),
            pay_timeout: config.pay_timeout,
        });
        let timeout_consumer = mq::consumer::start(
            &mq,
            &config.timeout_consumer_group,
            &config.timeout_topic,
            config.timeout_consumer_threads,
            None,
            closer.clone(),
            tokio::runtime::Handle::current(),
        )
        .await
        .context("NAMESRV_ADDR: starting the order_timeout consumer")?;

        let listener = TcpListener::bind(config.grpc_addr)
            .await
            .with_context(|| format!("ORDER_GRPC_ADDR: cannot bind {}", config.grpc_addr))?;
        let grpc_addr = listener.local_addr()?;
        let metrics_listener = observe::bind(config.metrics_addr, "ORDER_METRICS_ADDR")
            .await
            .map_err(anyhow::Error::msg)?;
        let metrics_addr = metrics_listener.local_addr()?;
        let reconcile_pool = pool.clone();
        Ok(Self {
            metrics,
            registry,
            metrics_listener,
            metrics_addr,
            listener,
            grpc_addr,
            pool,
            mq,
            plain_producer,
            placer,
            timeout_consumer,
            timeout_counters,
            closer,
            barrier_retention: config.barrier_retention,
            purge_interval: config.purge_interval,
            overdue_after: config
                .pay_timeout
                .saturating_add(config.overdue_sweep_grace),
            sweep_interval: config.overdue_sweep_interval,
            reconcile: crate::reconcile::ReconcileService::new(
                reconcile_pool,
                config.pay_timeout,
                config.overdue_sweep_grace,
                config.barrier_retention,
            ),
            inventory_discovery,
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

    /// What CreateOrder and the transaction listener have done so far.
    pub fn metrics(&self) -> OrderMetrics {
        self.metrics.clone()
    }

    /// What the pay-timeout consumer has done so far.
    pub fn timeout_counters(&self) -> Arc<TimeoutCounters> {
        self.timeout_counters.clone()
    }

    /// What the pay-timeout consumer runs for each delivery (and CancelOrder), for tests
    /// that deliver a pay timeout at an exact moment.
    pub fn closer(&self) -> Arc<OrderCloser> {
        self.closer.clone()
    }

    /// Serves until `shutdown` resolves. Then, in order: health turns NOT_SERVING and the
    /// gRPC server drains its calls; one signal stops the purge, the overdue sweep, the
    /// metrics endpoint and the pay-timeout consumer (which finishes its in-flight deliveries); the producers go
    /// offline (every transaction in flight already got its answer); the client runtime
    /// and the pool close.
    pub async fn run_until(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let Self {
            listener,
            pool,
            mq,
            mut plain_producer,
            placer,
            mut timeout_consumer,
            closer,
            barrier_retention,
            purge_interval,
            overdue_after,
            sweep_interval,
            reconcile,
            metrics,
            registry,
            metrics_listener,
            inventory_discovery,
            ..
        } = self;
        let (stop, stopped) = tokio::sync::watch::channel(false);
        let metrics_server = tokio::spawn(observe::serve(
            metrics_listener,
            registry,
            observe::stopped(stopped.clone()),
        ));
        let purger = service_db::spawn_purge(
            pool.clone(),
            crate::db::EXPIRED_BARRIERS,
            barrier_retention,
            purge_interval,
            stopped.clone(),
        );
        let sweeper =
            crate::timeout::spawn_sweep(closer.clone(), overdue_after, sweep_interval, stopped);
        let placer = Arc::new(placer);
        let service = OrderServer::new(OrderService::new(
            pool.clone(),
            placer.clone(),
            closer,
            metrics,
        ));
        let served = observe::grpc::serve_with_internal(
            listener,
            service,
            Some(OrderReconcileServer::new(reconcile)),
            proto::FILE_DESCRIPTOR_SET,
            shutdown,
        )
        .await;

        let _ = stop.send(true);
        let _ = purger.await;
        let _ = sweeper.await;
        let _ = metrics_server.await;
        timeout_consumer.shutdown().await;
        placer.shutdown(Duration::from_secs(10)).await;
        plain_producer.shutdown().await;
        inventory_discovery.abort();
        mq.shutdown().await;
        pool.close().await;
        served
    }
}
