//! Typed configuration from environment variables; a bad value fails fast naming it.

use std::net::SocketAddr;

use clap::Parser;

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

    /// Largest number of pooled database connections.
    #[arg(long, env = "INVENTORY_DB_MAX_CONNECTIONS", default_value_t = 32)]
    pub db_max_connections: u32,
}

impl std::fmt::Debug for Config {
    // The database URL may carry a password: never print it.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Config")
            .field("database_url", &"<redacted>")
            .field("grpc_addr", &self.grpc_addr)
            .field("db_max_connections", &self.db_max_connections)
            .finish()
    }
}
