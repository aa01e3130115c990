//! Typed configuration from environment variables; a bad value fails fast naming it.

use std::net::SocketAddr;

use clap::Parser;
use observe::service::{OrderEndpoint, TelemetryArgs};

/// Everything `inventory_srv` reads from its environment.
#[derive(Clone, Parser)]
#[command(
    name = "inventory_srv",
    about = "Inventory service (stock, Sell, Reback)"
)]
pub struct Config {
    /// MySQL URL of the inventory database; it is created when missing.
    #[arg(
        long,
        env = "INVENTORY_DATABASE_URL",
        default_value = "mysql://root@127.0.0.1:3306/shop_inventory",
        hide_env_values = true
    )]
    pub database_url: String,

    /// Address the gRPC server binds (port 0 picks a free port).
    #[arg(long, env = "INVENTORY_GRPC_ADDR", default_value = "127.0.0.1:50052")]
    pub grpc_addr: SocketAddr,

    /// Address of the Prometheus endpoint (`GET /metrics`; port 0 picks a free port).
    #[arg(long, env = "INVENTORY_METRICS_ADDR", default_value = "127.0.0.1:9102")]
    pub metrics_addr: SocketAddr,

    /// Largest number of pooled database connections.
    #[arg(long, env = "INVENTORY_DB_MAX_CONNECTIONS", default_value_t = 32)]
    pub db_max_connections: u32,

    /// RocketMQ name server address(es), `host:port[;host:port]`.
    #[arg(long, env = "NAMESRV_ADDR", default_value = "127.0.0.1:9876")]
    pub namesrv_addr: String,

    #[command(flatten)]
    pub telemetry: TelemetryArgs,

    /// Topic of the "give this order's stock back" messages.
    #[arg(long, env = "INVENTORY_REBACK_TOPIC", default_value = "order_reback")]
    pub reback_topic: String,

    /// Consumer group of the reback consumer.
    #[arg(
        long,
        env = "INVENTORY_REBACK_CONSUMER_GROUP",
        default_value = "inventory_reback"
    )]
    pub reback_consumer_group: String,

    /// Rebacks processed at once (each holds a database connection).
    #[arg(long, env = "INVENTORY_CONSUMER_THREADS", default_value_t = 16)]
    pub consumer_threads: u32,

    /// Most blocking threads of the service's runtime (3..=512); the RocketMQ client runs
    /// its consumer callbacks there.
    #[arg(long, env = "INVENTORY_MQ_BLOCKING_THREADS", default_value_t = 64)]
    pub mq_blocking_threads: usize,

    /// How many times a failing reback is retried (on the broker's retry schedule) before
    /// it goes to the dead-letter queue `%DLQ%<group>`; the reconciler then returns its
    /// stock once the detail is past INVENTORY_RECONCILE_HORIZON.
    #[arg(long, env = "INVENTORY_REBACK_MAX_RECONSUME", default_value_t = 16, value_parser = clap::value_parser!(i32).range(0..=32))]
    pub reback_max_reconsume: i32,

    /// How long RETURNED details (tombstones included) are kept.
    #[arg(long, env = "INVENTORY_TOMBSTONE_RETENTION", default_value = "7days", value_parser = humantime::parse_duration)]
    pub tombstone_retention: std::time::Duration,

    /// How long a paid order's deduction stays a detail row after the reconciler
    /// confirmed it; then it is settled (added to `stock_settled`, the row deleted), so
    /// stock_sell_detail stays bounded. Keep it far beyond any Sell still in flight.
    #[arg(long, env = "INVENTORY_SETTLE_AFTER", default_value = "7days", value_parser = humantime::parse_duration)]
    pub settle_after: std::time::Duration,

    /// How often expired RETURNED details are purged and confirmed deductions settled.
    #[arg(long, env = "INVENTORY_PURGE_INTERVAL", default_value = "1h", value_parser = humantime::parse_duration)]
    pub purge_interval: std::time::Duration,

    /// Where order_srv is (`ORDER_ENDPOINT`): the reconciler asks it what became of
    /// orders.
    #[command(flatten)]
    pub order: OrderEndpoint,

    /// The reconciler asks about DEDUCTED details older than this. Keep it longer than the
    /// broker's check window (transactionCheckMax x transactionCheckInterval plus the
    /// transaction timeout: 15 x 30 s + 6 s in deploy/broker.conf) and at most half of
    /// INVENTORY_TOMBSTONE_RETENTION and of order_srv's ORDER_BARRIER_RETENTION.
    #[arg(long, env = "INVENTORY_RECONCILE_HORIZON", default_value = "15m", value_parser = humantime::parse_duration)]
    pub reconcile_horizon: std::time::Duration,

    /// How often the reconciler runs.
    #[arg(long, env = "INVENTORY_RECONCILE_INTERVAL", default_value = "1m", value_parser = humantime::parse_duration)]
    pub reconcile_interval: std::time::Duration,

    /// Details asked about per OrderOutcomes call (1..=500).
    #[arg(long, env = "INVENTORY_RECONCILE_BATCH", default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..=500))]
    pub reconcile_batch: u32,
}

impl std::fmt::Debug for Config {
    // The database URL may carry a password: never print it.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Config")
            .field("database_url", &"<redacted>")
            .field("grpc_addr", &self.grpc_addr)
            .field("db_max_connections", &self.db_max_connections)
            .field("namesrv_addr", &self.namesrv_addr)
            .field("telemetry", &self.telemetry)
            .field("order_endpoint", &self.order.order_endpoint)
            .field("reback_topic", &self.reback_topic)
            .field("reback_consumer_group", &self.reback_consumer_group)
            .finish_non_exhaustive()
    }
}
