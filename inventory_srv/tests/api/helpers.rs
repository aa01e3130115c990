//! Starts inventory_srv in-process on port 0 and hands out a gRPC client.

use proto::inventory::{self as pb, inventory_client::InventoryClient};
use sqlx::{MySqlPool, mysql::MySqlConnectOptions};
use tokio::{sync::oneshot, task::JoinHandle};
use tonic::transport::Channel;

use clap::Parser as _;
use inventory_srv::{config::Config, startup};
use observe::telemetry;

pub struct TestApp {
    pub client: InventoryClient<Channel>,
    pub pool: MySqlPool,
    shutdown: Option<oneshot::Sender<()>>,
    server: Option<JoinHandle<anyhow::Result<()>>>,
}

pub async fn spawn_app(connect: MySqlConnectOptions) -> TestApp {
    telemetry::init_for_tests();
    let config = Config {
        database_url: String::new(),
        grpc_addr: "127.0.0.1:0".parse().expect("literal address"),
        metrics_addr: "127.0.0.1:0".parse().expect("literal address"),
        db_max_connections: 64,
        ..inventory_srv::config::Config::try_parse_from(["inventory_srv"]).expect("defaults parse")
    };
    let pool = service_db::connect(connect, config.db_max_connections)
        .await
        .expect("MariaDB must be running on DATABASE_URL (scripts/test starts it)");
    let app = startup::Application::build_without_consumer(&config, pool.clone())
        .await
        .expect("inventory_srv starts");
    let addr = app.grpc_addr();
    let (tx, rx) = oneshot::channel::<()>();
    let server = tokio::spawn(app.run_until(async {
        let _ = rx.await;
    }));
    let client = InventoryClient::connect(format!("http://{addr}"))
        .await
        .expect("connect to inventory_srv");
    TestApp {
        client,
        pool,
        shutdown: Some(tx),
        server: Some(server),
    }
}

impl TestApp {
    pub async fn set_stock(&self, goods_id: i32, stocks: i32) {
        self.client
            .clone()
            .set_inv(pb::SetInvRequest { goods_id, stocks })
            .await
            .expect("set_inv");
    }

    pub async fn stock(&self, goods_id: i32) -> i64 {
        self.client
            .clone()
            .inv_detail(pb::InvDetailRequest { goods_id })
            .await
            .expect("inv_detail")
            .into_inner()
            .stocks
    }

    pub async fn sell(
        &self,
        order_sn: &str,
        items: &[(i32, i32)],
    ) -> Result<pb::SellResponse, tonic::Status> {
        self.client
            .clone()
            .sell(sell_request(order_sn, items))
            .await
            .map(|r| r.into_inner())
    }

    pub async fn reback(&self, order_sn: &str) -> Result<pb::RebackOutcome, tonic::Status> {
        self.client
            .clone()
            .reback(pb::RebackRequest {
                order_sn: order_sn.to_owned(),
            })
            .await
            .map(|r| r.into_inner().outcome())
    }

    pub async fn detail_rows(&self) -> i64 {
        sqlx::query_scalar("SELECT COUNT(*) FROM stock_sell_detail")
            .fetch_one(&self.pool)
            .await
            .expect("count details")
    }

    /// Stops the server and waits for it to drain.
    pub async fn stop(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(server) = self.server.take() {
            server
                .await
                .expect("server task")
                .expect("server ran cleanly");
        }
    }
}

pub fn sell_request(order_sn: &str, items: &[(i32, i32)]) -> pb::SellRequest {
    pb::SellRequest {
        order_sn: order_sn.to_owned(),
        items: items
            .iter()
            .map(|&(goods_id, num)| pb::GoodsNum { goods_id, num })
            .collect(),
    }
}
