//! Wiring: database pool and migrations, the bound gRPC listener, and graceful shutdown.

use std::{net::SocketAddr, time::Duration};

use anyhow::Context;
use proto::inventory::inventory_server::InventoryServer;
use sqlx::{
    Executor, MySql, MySqlPool,
    migrate::MigrateDatabase,
    mysql::{MySqlConnectOptions, MySqlPoolOptions},
};
use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;

use crate::{MIGRATOR, config::Config, grpc::InventoryService};

/// A service whose listener is already bound: `grpc_addr` is real even for port 0.
pub struct Application {
    listener: TcpListener,
    grpc_addr: SocketAddr,
    pool: MySqlPool,
}

impl Application {
    /// Creates the database when missing, migrates it and binds the gRPC port.
    pub async fn build(config: Config) -> anyhow::Result<Self> {
        if !MySql::database_exists(&config.database_url)
            .await
            .context("INVENTORY_DATABASE_URL: cannot reach MySQL")?
        {
            MySql::create_database(&config.database_url)
                .await
                .context("INVENTORY_DATABASE_URL: cannot create the database")?;
        }
        let options: MySqlConnectOptions = config
            .database_url
            .parse()
            .context("INVENTORY_DATABASE_URL is not a valid MySQL URL")?;
        let pool = connect_pool(options, config.db_max_connections).await?;
        Self::build_with_pool(&config, pool).await
    }

    /// Like [`Application::build`] on an existing pool (tests hand in their own database).
    pub async fn build_with_pool(config: &Config, pool: MySqlPool) -> anyhow::Result<Self> {
        MIGRATOR
            .run(&pool)
            .await
            .context("migrating the inventory database")?;
        let listener = TcpListener::bind(config.grpc_addr)
            .await
            .with_context(|| format!("INVENTORY_GRPC_ADDR: cannot bind {}", config.grpc_addr))?;
        let grpc_addr = listener.local_addr()?;
        Ok(Self {
            listener,
            grpc_addr,
            pool,
        })
    }

    pub fn grpc_addr(&self) -> SocketAddr {
        self.grpc_addr
    }

    pub fn pool(&self) -> &MySqlPool {
        &self.pool
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
        let reflection = tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(proto::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
            .build_v1()?;
        tonic::transport::Server::builder()
            .add_service(health_service)
            .add_service(reflection)
            .add_service(InventoryServer::new(InventoryService::new(
                self.pool.clone(),
            )))
            .serve_with_incoming_shutdown(TcpListenerStream::new(self.listener), shutdown)
            .await?;
        self.pool.close().await;
        Ok(())
    }
}

/// A pool whose connections run at READ COMMITTED (see [`crate::stock`] for why).
pub async fn connect_pool(
    options: MySqlConnectOptions,
    max_connections: u32,
) -> anyhow::Result<MySqlPool> {
    MySqlPoolOptions::new()
        .max_connections(max_connections)
        .acquire_timeout(Duration::from_secs(5))
        .after_connect(|conn, _meta| {
            Box::pin(async move {
                conn.execute("SET SESSION TRANSACTION ISOLATION LEVEL READ COMMITTED")
                    .await?;
                Ok(())
            })
        })
        .connect_with(options)
        .await
        .context("connecting to the inventory database")
}
