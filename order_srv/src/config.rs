//! Typed configuration from environment variables; a bad value fails fast naming it.

use std::{net::SocketAddr, time::Duration};

use clap::Parser;
use observe::service::{InventoryEndpoint, TelemetryArgs};

/// Everything `order_srv` reads from its environment.
#[derive(Clone, Parser)]
#[command(
    name = "order_srv",
    about = "Order service (cart, CreateOrder, payment status)"
)]
pub struct Config {
    /// MySQL URL of the order database; it is created when missing.
    #[arg(
        long,
        env = "ORDER_DATABASE_URL",
        default_value = "mysql://root@127.0.0.1:3306/shop_order",
        hide_env_values = true
    )]
    pub database_url: String,

    /// Address the gRPC server binds (port 0 picks a free port).
    #[arg(long, env = "ORDER_GRPC_ADDR", default_value = "127.0.0.1:50051")]
    pub grpc_addr: SocketAddr,

    /// Largest number of pooled database connections.
    #[arg(long, env = "ORDER_DB_MAX_CONNECTIONS", default_value_t = 32)]
    pub db_max_connections: u32,

    /// Address of the Prometheus endpoint (`GET /metrics`; port 0 picks a free port).
    #[arg(long, env = "ORDER_METRICS_ADDR", default_value = "127.0.0.1:9101")]
    pub metrics_addr: SocketAddr,

    /// Where inventory_srv is (`INVENTORY_ENDPOINT`): Sells are balanced over its
    /// replicas whose health check says SERVING (see `order_srv::inventory`).
    #[command(flatten)]
    pub inventory: InventoryEndpoint,

    /// How often the inventory replicas are resolved and health-checked; a replica that
    /// stops serving receives no new Sell after at most this long.
    #[arg(long, env = "ORDER_INVENTORY_PROBE_INTERVAL", default_value = "1s", value_parser = humantime::parse_duration)]
    pub inventory_probe_interval: Duration,

    /// The longest a CreateOrder caller waits for its answer (a shorter `grpc-timeout`
    /// from the caller wins). Past it: UNAVAILABLE, outcome unknown; the order goes on and
    /// ends as it would have, and a retry with the same request_id finds it.
    #[arg(long, env = "ORDER_CREATE_ORDER_BUDGET", default_value = "5s", value_parser = humantime::parse_duration)]
    pub create_order_budget: Duration,

    /// Deadline of one inventory Sell call; past it the outcome counts as unknown.
    #[arg(long, env = "ORDER_SELL_TIMEOUT", default_value = "3s", value_parser = humantime::parse_duration)]
    pub sell_timeout: Duration,

    /// RocketMQ name server address(es), `host:port[;host:port]`.
    #[arg(long, env = "NAMESRV_ADDR", default_value = "127.0.0.1:9876")]
    pub namesrv_addr: String,

    #[command(flatten)]
    pub telemetry: TelemetryArgs,

    /// How long an order may wait for payment before it is closed and its stock returned.
    #[arg(long, env = "ORDER_PAY_TIMEOUT", default_value = "30m", value_parser = humantime::parse_duration)]
    pub pay_timeout: Duration,

    /// The overdue-order sweep closes an order still unpaid this long after its pay timeout
    /// (its pay-timeout message lost or stuck; DESIGN.md §13). Keep it well above the
    /// timer's normal lateness (seconds): every sweep close is counted
    /// (`order_overdue_closed_total`) as a message that did not come.
    #[arg(long, env = "ORDER_OVERDUE_SWEEP_GRACE", default_value = "10m", value_parser = humantime::parse_duration)]
    pub overdue_sweep_grace: Duration,

    /// How often the overdue-order sweep looks for unpaid orders past their pay timeout
    /// plus ORDER_OVERDUE_SWEEP_GRACE.
    #[arg(long, env = "ORDER_OVERDUE_SWEEP_INTERVAL", default_value = "1m", value_parser = humantime::parse_duration)]
    pub overdue_sweep_interval: Duration,

    /// Topic of the "give this order's stock back" message.
    #[arg(long, env = "ORDER_REBACK_TOPIC", default_value = "order_reback")]
    pub reback_topic: String,

    /// Topic of the delayed pay-timeout message.
    #[arg(long, env = "ORDER_TIMEOUT_TOPIC", default_value = "order_timeout")]
    pub timeout_topic: String,

    /// Transactional producer group; used by nothing else, so every check-back lands
    /// on a member that has the transaction listener.
    #[arg(
        long,
        env = "ORDER_TX_PRODUCER_GROUP",
        default_value = "order_reback_tx"
    )]
    pub tx_producer_group: String,

    /// Plain producer group (pay-timeout messages and rebacks of closed orders).
    #[arg(
        long,
        env = "ORDER_PLAIN_PRODUCER_GROUP",
        default_value = "order_plain"
    )]
    pub plain_producer_group: String,

    /// Consumer group of the pay-timeout consumer.
    #[arg(
        long,
        env = "ORDER_TIMEOUT_CONSUMER_GROUP",
        default_value = "order_timeout"
    )]
    pub timeout_consumer_group: String,

    /// Pay-timeout messages processed at once. They come due at the rate orders were
    /// placed (minus the paid ones): with 8, a release build fell 20 s behind at 250
    /// orders/s on two cores (docs/pay-timeouts.md); with 32 it kept up.
    #[arg(long, env = "ORDER_TIMEOUT_CONSUMER_THREADS", default_value_t = 32)]
    pub timeout_consumer_threads: u32,

    /// Most blocking threads of the service's runtime (3..=512); the RocketMQ client runs
    /// the check-backs and the pay-timeout consumer's callbacks there (CreateOrder's
    /// listener is a future on the send's task).
    #[arg(long, env = "ORDER_MQ_BLOCKING_THREADS", default_value_t = 256)]
    pub mq_blocking_threads: usize,

    /// Check-backs and consumer callbacks the RocketMQ client runs at once on its blocking
    /// lane (keep it at most ORDER_MQ_BLOCKING_THREADS); more queue up to eight times this
    /// depth.
    #[arg(long, env = "ORDER_MQ_IO_CONCURRENCY", default_value_t = 128)]
    pub mq_io_concurrency: usize,

    /// RocketMQ client instance name; set it only to run two members of one group in
    /// one process (tests).
    #[arg(long, env = "ORDER_MQ_INSTANCE_NAME")]
    pub mq_instance_name: Option<String>,

    /// How long `tx_barrier` rows are kept: longer than the broker keeps its commit log
    /// (`fileReservedTime`), since a half message is checked back as long as it is stored.
    #[arg(long, env = "ORDER_BARRIER_RETENTION", default_value = "7days", value_parser = humantime::parse_duration)]
    pub barrier_retention: Duration,

    /// How often expired `tx_barrier` rows are purged.
    #[arg(long, env = "ORDER_PURGE_INTERVAL", default_value = "1h", value_parser = humantime::parse_duration)]
    pub purge_interval: Duration,
}

impl std::fmt::Debug for Config {
    // The database URL may carry a password: never print it.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Config")
            .field("database_url", &"<redacted>")
            .field("grpc_addr", &self.grpc_addr)
            .field("inventory_endpoint", &self.inventory.inventory_endpoint)
            .field("inventory_probe_interval", &self.inventory_probe_interval)
            .field("namesrv_addr", &self.namesrv_addr)
            .field("telemetry", &self.telemetry)
            .field("pay_timeout", &self.pay_timeout)
            .field("overdue_sweep_grace", &self.overdue_sweep_grace)
            .field("reback_topic", &self.reback_topic)
            .field("timeout_topic", &self.timeout_topic)
            .finish_non_exhaustive()
    }
}
