//! Wiring: database pool and migrations, the RocketMQ clients, the inventory client, the
//! bound listeners, and an orderly shutdown.

use std::{net::SocketAddr, sync::Arc, time::Duration};

use anyhow::Context;
use mq::{Mq, MqConfig};
use observe::service::{Background, Listeners};
use proto::{
    inventory::inventory_client::InventoryClient,
    order::{order_reconcile_server::OrderReconcileServer, order_server::OrderServer},
};
use rocketmq_client_rust::{DefaultMQProducer, DefaultMQPushConsumer};
use sqlx::MySqlPool;
use tokio::task::JoinHandle;

use crate::{
    MIGRATOR,
    config::Config,
    create_order::{OrderPlacer, Placing, RebackTxListener},
    grpc::OrderService,
    inventory::{Discovery, Inventory},
    metrics::OrderMetrics,
    timeout::{OrderCloser, PayTimeoutSender, TimeoutCounters},
};

/// A service whose listeners are bound and whose RocketMQ clients are started.
pub struct Application {
    listeners: Listeners,
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
        let listeners = Listeners::bind(
            (config.grpc_addr, "ORDER_GRPC_ADDR"),
            (config.metrics_addr, "ORDER_METRICS_ADDR"),
        )
        .await?;
        let registry = &listeners.registry;
        let (inventory, inventory_discovery) = Discovery::parse(
            &config.inventory.inventory_endpoint,
            Duration::from_secs(2),
            config.inventory_probe_interval,
        )?
        .start(observe::gauge(
            registry,
            "order_inventory_replicas",
            "inventory_srv replicas that Sells are balanced over (those whose health check says SERVING)",
        ))
        .await;
        let mq = mq_client(config)?;
        let mut plain_producer = mq.producer(&config.plain_producer_group);
        plain_producer
            .start()
            .await
            .map_err(|e| not_started("plain", &e))?;
        let metrics = OrderMetrics::register(registry);
        let placing = Placing {
            pool: pool.clone(),
            inventory: Inventory {
                client: InventoryClient::new(observe::grpc::Traced(inventory)),
                sell_timeout: config.sell_timeout,
            },
            pay_timeouts: Arc::new(PayTimeoutSender {
                producer: plain_producer.clone(),
                topic: config.timeout_topic.clone(),
                pay_within: config.pay_timeout,
            }),
            metrics: metrics.clone(),
            budget: config.create_order_budget,
        };
        let placer = start_placer(config, &mq, placing).await?;
        let timeout_counters = Arc::new(TimeoutCounters::register(registry));
        let closer = Arc::new(OrderCloser {
            pool: pool.clone(),
            producer: plain_producer.clone(),
            reback_topic: config.reback_topic.clone(),
            counters: timeout_counters.clone(),
            pay_timeout: config.pay_timeout,
        });
        let timeout_consumer = start_timeout_consumer(config, &mq, &closer).await?;
        Ok(Self {
            reconcile: crate::reconcile::ReconcileService::new(
                pool.clone(),
                config.pay_timeout,
                config.overdue_sweep_grace,
                config.barrier_retention,
            ),
            metrics,
            listeners,
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
            inventory_discovery,
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
    /// gRPC server drains its calls; one signal stops the purge, the overdue sweep and the
    /// metrics endpoint; the pay-timeout consumer stops (finishing its in-flight
    /// deliveries); the producers go offline (every transaction in flight already got its
    /// answer); the client runtime and the pool close.
    pub async fn run_until(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let Self {
            listeners,
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
            inventory_discovery,
            ..
        } = self;
        tracing::info!(grpc = %listeners.grpc_addr, metrics = %listeners.metrics_addr, "order_srv listening");
        let purged = observe::counter_vec(
            &listeners.registry,
            "order_purged_rows_total",
            "Rows deleted by the purge, by table",
            &["table"],
        );
        let mut background = Background::new();
        background.serve_metrics(listeners.metrics, listeners.registry);
        background.add(service_db::spawn_purge(
            pool.clone(),
            crate::db::EXPIRED_BARRIERS,
            barrier_retention,
            purge_interval,
            purged.with_label_values(&["tx_barrier"]),
            background.stopped(),
        ));
        background.add(crate::timeout::spawn_sweep(
            closer.clone(),
            overdue_after,
            sweep_interval,
            background.stopped(),
        ));
        let placer = Arc::new(placer);
        let service = OrderServer::new(OrderService::new(
            pool.clone(),
            placer.clone(),
            closer,
            metrics,
        ));
        let served = observe::grpc::serve_with_internal(
            listeners.grpc,
            service,
            Some(OrderReconcileServer::new(reconcile)),
            proto::FILE_DESCRIPTOR_SET,
            shutdown,
        )
        .await;

        background.stop().await;
        timeout_consumer.shutdown().await;
        placer.shutdown(Duration::from_secs(10)).await;
        plain_producer.shutdown().await;
        inventory_discovery.abort();
        mq.shutdown().await;
        pool.close().await;
        served
    }
}

/// The RocketMQ client runtime of the producers and the pay-timeout consumer.
fn mq_client(config: &Config) -> anyhow::Result<Mq> {
    let mq_config = MqConfig {
        namesrv_addr: config.namesrv_addr.clone(),
        // Check-backs and consumer callbacks run on the runtime's blocking threads: never
        // more at once.
        listener_concurrency: config.mq_io_concurrency.min(config.mq_blocking_threads),
    };
    Mq::new(&mq_config, "order_srv").context("ORDER_MQ_*: RocketMQ client runtime")
}

/// The `order_timeout` consumer: closes unpaid orders (DESIGN.md §7).
async fn start_timeout_consumer(
    config: &Config,
    mq: &Mq,
    closer: &Arc<OrderCloser>,
) -> anyhow::Result<DefaultMQPushConsumer> {
    mq::consumer::start(
        mq,
        &config.timeout_consumer_group,
        &config.timeout_topic,
        config.timeout_consumer_threads,
        None,
        closer.clone(),
        tokio::runtime::Handle::current(),
    )
    .await
    .context("NAMESRV_ADDR: starting the order_timeout consumer")
}

/// Why a producer did not start, naming the variable that says where the broker is.
fn not_started(what: &str, error: &(dyn std::error::Error + 'static)) -> anyhow::Error {
    anyhow::anyhow!(
        "NAMESRV_ADDR: starting the {what} producer: {}",
        mq::describe(error)
    )
}

/// The transactional producer of `order_reback`, with CreateOrder's transaction listener,
/// and the placer that sends on it.
async fn start_placer(config: &Config, mq: &Mq, placing: Placing) -> anyhow::Result<OrderPlacer> {
    let listener = RebackTxListener::new(
        placing.pool.clone(),
        placing.metrics.clone(),
        tokio::runtime::Handle::current(),
    );
    let mut tx_producer = mq.transactional_producer(
        &config.tx_producer_group,
        &[config.reback_topic.as_str()],
        listener,
        config.mq_instance_name.as_deref(),
    );
    tx_producer
        .start()
        .await
        .map_err(|e| not_started("transactional", &e))?;
    Ok(OrderPlacer::new(
        tx_producer,
        config.reback_topic.clone(),
        placing,
    ))
}
