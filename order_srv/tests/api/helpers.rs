//! Starts both services in-process on port 0, each on its own database, against the
//! shared embedded broker, with topics and groups of their own so tests run in parallel.

use std::{sync::Arc, time::Duration};

use mq::{Mq, MqConfig};
use proto::{
    inventory::{self as inv, inventory_client::InventoryClient},
    order::{self as pb, order_client::OrderClient},
};
use sqlx::{MySqlPool, mysql::MySqlConnectOptions};
use testkit::{shared_broker, unique};
use tokio::{sync::oneshot, task::JoinHandle};
use tonic::transport::Channel;

/// A service task and the switch that stops it.
type Server = (oneshot::Sender<()>, JoinHandle<anyhow::Result<()>>);

/// A running pair of services and what a test needs to look inside them.
pub struct Stack {
    pub order: OrderClient<Channel>,
    pub inventory: InventoryClient<Channel>,
    pub order_addr: std::net::SocketAddr,
    pub inventory_addr: std::net::SocketAddr,
    pub order_metrics_addr: std::net::SocketAddr,
    pub inventory_metrics_addr: std::net::SocketAddr,
    pub order_pool: MySqlPool,
    /// The first order_srv's own pool.
    pub service_pool: MySqlPool,
    pub inventory_pool: MySqlPool,
    pub config: order_srv::config::Config,
    pub mq: Mq,
    pub reback_counters: Arc<inventory_srv::consumer::RebackCounters>,
    pub timeout_counters: Arc<order_srv::timeout::TimeoutCounters>,
    /// The pay-timeout consumer's handler, to deliver a pay timeout by hand.
    pub closer: Arc<order_srv::timeout::OrderCloser>,
    /// The first order_srv's metrics: what its transaction listener answered.
    pub order_metrics: order_srv::metrics::OrderMetrics,
    inventory_db: String,
    /// The order database (replicas open their own pools on it).
    order_db: MySqlConnectOptions,
    /// The inventory service's settings (replicas reuse them).
    inventory_config: inventory_srv::config::Config,
    admin: MySqlConnectOptions,
    /// inventory_srv, then order_srv; `None` once stopped.
    servers: Vec<Option<Server>>,
}

/// Order service settings for a test: its own topics and groups, a short pay timeout.
pub fn order_config() -> order_srv::config::Config {
    let mut config =
        order_srv::config::Config::try_parse_from(["order_srv"]).expect("defaults parse");
    config.grpc_addr = "127.0.0.1:0".parse().expect("literal address");
    config.metrics_addr = "127.0.0.1:0".parse().expect("literal address");
    config.namesrv_addr = shared_broker().to_owned();
    config.reback_topic = unique("order_reback");
    config.timeout_topic = unique("order_timeout");
    config.tx_producer_group = unique("order_reback_tx");
    config.plain_producer_group = unique("order_plain");
    config.timeout_consumer_group = unique("order_timeout");
    config.pay_timeout = Duration::from_secs(3600);
    // Tests hold calls up on purpose (pauses of up to 4 s) on a loaded machine: only the
    // budget's own test shortens it.
    config.create_order_budget = Duration::from_secs(30);
    config.db_max_connections = 64;
    config
}

use clap::Parser as _;

pub async fn spawn_stack(order_db: MySqlConnectOptions) -> Stack {
    spawn_stack_with(order_db, order_config()).await
}

pub async fn spawn_stack_with(
    order_db: MySqlConnectOptions,
    config: order_srv::config::Config,
) -> Stack {
    spawn_stack_configured(order_db, config, |_| {}).await
}

/// Like [`spawn_stack_with`], with inventory_srv's settings changed by `inventory`.
pub async fn spawn_stack_configured(
    order_db: MySqlConnectOptions,
    config: order_srv::config::Config,
    inventory: impl FnOnce(&mut inventory_srv::config::Config),
) -> Stack {
    let service_db = order_db.clone();
    spawn_stack_reaching(order_db, service_db, config, inventory).await
}

/// Like [`spawn_stack_configured`], with order_srv reaching its database through
/// `service_db` (a [`testkit::link::Link`] to cut); the test's own pool does not.
pub async fn spawn_stack_reaching(
    order_db: MySqlConnectOptions,
    service_db: MySqlConnectOptions,
    config: order_srv::config::Config,
    inventory: impl FnOnce(&mut inventory_srv::config::Config),
) -> Stack {
    // Every test of this binary runs under the span capture (see `traces`).
    testkit::spans::capture();
    let mq = Mq::new(&MqConfig::new(config.namesrv_addr.as_str()), "order-test")
        .expect("client runtime");
    mq.create_topics(&[&config.reback_topic, &config.timeout_topic], 2)
        .await
        .expect("the embedded broker creates the test topics");

    // The inventory database lives next to the order database sqlx::test made.
    let order_db_name = order_db
        .get_database()
        .expect("sqlx::test names the database")
        .to_owned();
    // MySQL names stop at 64 characters; sqlx's are long and random at the end.
    let inventory_db = format!(
        "inv_{}",
        &order_db_name[order_db_name.len().saturating_sub(40)..]
    );
    let admin = order_db.clone().database("");
    testkit::mysql::recreate_databases(&admin, &[&inventory_db], "DATABASE_URL")
        .await
        .expect("MariaDB must be running on DATABASE_URL (scripts/test starts it)");

    let mut servers = Vec::new();
    let mut inv_config = inventory_srv::config::Config {
        database_url: String::new(),
        grpc_addr: "127.0.0.1:0".parse().expect("literal address"),
        metrics_addr: "127.0.0.1:0".parse().expect("literal address"),
        db_max_connections: 64,
        namesrv_addr: config.namesrv_addr.clone(),
        reback_topic: config.reback_topic.clone(),
        reback_consumer_group: unique("inventory_reback"),
        ..inventory_srv::config::Config::try_parse_from(["inventory_srv"]).expect("defaults parse")
    };
    inventory(&mut inv_config);
    let inventory_pool = service_db::connect(
        order_db.clone().database(&inventory_db),
        inv_config.db_max_connections,
    )
    .await
    .expect("inventory pool");
    let inv_app =
        inventory_srv::startup::Application::build_with_pool(&inv_config, inventory_pool.clone())
            .await
            .expect("inventory_srv starts");
    let inv_addr = inv_app.grpc_addr();
    let reback_counters = inv_app.reback_counters();
    let inventory_metrics_addr = inv_app.metrics_addr();
    let (tx, rx) = oneshot::channel::<()>();
    servers.push(Some((
        tx,
        tokio::spawn(inv_app.run_until(async {
            let _ = rx.await;
        })),
    )));

    let mut config = config;
    config.inventory.inventory_endpoint = format!("http://{inv_addr}");
    let order_pool = service_db::connect(order_db.clone(), config.db_max_connections)
        .await
        .expect("order pool");
    // A pool of its own: the service closes it when it stops, and the tests read on.
    let service_pool = service_db::connect(service_db, config.db_max_connections)
        .await
        .expect("order_srv pool");
    let order_app = order_srv::startup::Application::build_with_pool(&config, service_pool.clone())
        .await
        .expect("order_srv starts");
    let order_addr = order_app.grpc_addr();
    let timeout_counters = order_app.timeout_counters();
    let closer = order_app.closer();
    let order_metrics_addr = order_app.metrics_addr();
    let order_metrics = order_app.metrics();
    let (tx, rx) = oneshot::channel::<()>();
    servers.push(Some((
        tx,
        tokio::spawn(order_app.run_until(async {
            let _ = rx.await;
        })),
    )));

    Stack {
        order: OrderClient::connect(format!("http://{order_addr}"))
            .await
            .expect("connect order_srv"),
        inventory: InventoryClient::connect(format!("http://{inv_addr}"))
            .await
            .expect("connect inventory_srv"),
        order_addr,
        inventory_addr: inv_addr,
        order_metrics_addr,
        inventory_metrics_addr,
        order_pool,
        service_pool,
        inventory_pool,
        config,
        mq,
        reback_counters,
        timeout_counters,
        closer,
        order_metrics,
        inventory_db,
        inventory_config: inv_config,
        order_db,
        admin,
        servers,
    }
}

/// One more replica of a service in a [`Stack`]: where it serves, and its index for
/// [`Stack::stop_replica`].
pub struct Replica {
    pub grpc_addr: std::net::SocketAddr,
    pub metrics_addr: std::net::SocketAddr,
    pub index: usize,
}

impl Stack {
    /// Stops order_srv only (its producers leave the group), as if the process died.
    pub async fn stop_order_service(&mut self) {
        self.stop_server(1).await;
    }

    /// Stops inventory_srv only (its gRPC server and its reback consumer).
    pub async fn stop_inventory_service(&mut self) {
        self.stop_server(0).await;
    }

    /// Another inventory_srv on the same database (with its own pool: a service closes
    /// its pool when it stops); with `consume`, a second member of the reback consumer
    /// group too (the client names every consumer instance apart, pid and start time).
    pub async fn add_inventory_replica(&mut self, consume: bool) -> Replica {
        let pool = service_db::connect(
            self.admin.clone().database(&self.inventory_db),
            self.inventory_config.db_max_connections,
        )
        .await
        .expect("inventory replica pool");
        let app = if consume {
            inventory_srv::startup::Application::build_with_pool(&self.inventory_config, pool).await
        } else {
            inventory_srv::startup::Application::build_without_consumer(
                &self.inventory_config,
                pool,
            )
            .await
        }
        .expect("inventory replica starts");
        let (grpc_addr, metrics_addr) = (app.grpc_addr(), app.metrics_addr());
        let index = self.serve(|stopped| app.run_until(stopped));
        Replica {
            grpc_addr,
            metrics_addr,
            index,
        }
    }

    /// Another order_srv on the same database, topics and groups (its own client
    /// instance name), calling inventory at `inventory_endpoint`.
    pub async fn add_order_replica(
        &mut self,
        inventory_endpoint: String,
    ) -> (Replica, OrderClient<Channel>) {
        let mut config = self.config.clone();
        config.inventory.inventory_endpoint = inventory_endpoint;
        config.mq_instance_name = Some(unique("order-replica"));
        let pool = service_db::connect(self.order_db.clone(), config.db_max_connections)
            .await
            .expect("order replica pool");
        let app = order_srv::startup::Application::build_with_pool(&config, pool)
            .await
            .expect("order replica starts");
        let (grpc_addr, metrics_addr) = (app.grpc_addr(), app.metrics_addr());
        let index = self.serve(|stopped| app.run_until(stopped));
        let client = OrderClient::connect(format!("http://{grpc_addr}"))
            .await
            .expect("connect the order replica");
        let replica = Replica {
            grpc_addr,
            metrics_addr,
            index,
        };
        (replica, client)
    }

    /// Runs a service task until [`Stack::stop_replica`] (or `stop`) signals it; its index.
    fn serve<F>(
        &mut self,
        run: impl FnOnce(std::pin::Pin<Box<dyn Future<Output = ()> + Send>>) -> F,
    ) -> usize
    where
        F: Future<Output = anyhow::Result<()>> + Send + 'static,
    {
        let (tx, rx) = oneshot::channel::<()>();
        self.servers.push(Some((
            tx,
            tokio::spawn(run(Box::pin(async {
                let _ = rx.await;
            }))),
        )));
        self.servers.len() - 1
    }

    /// Stops one service of the stack, as SIGTERM would (graceful: it drains).
    pub async fn stop_replica(&mut self, index: usize) {
        self.stop_server(index).await;
    }

    async fn stop_server(&mut self, index: usize) {
        if let Some((stop, server)) = self.servers.get_mut(index).and_then(Option::take) {
            let _ = stop.send(());
            let _ = tokio::time::timeout(Duration::from_secs(30), server).await;
        }
    }

    /// Stops both services and drops the inventory database.
    pub async fn stop(self) {
        for (stop, server) in self.servers.into_iter().rev().flatten() {
            let _ = stop.send(());
            let _ = tokio::time::timeout(Duration::from_secs(30), server).await;
        }
        self.mq.shutdown().await;
        let _ = testkit::mysql::drop_databases(&self.admin, &[&self.inventory_db], "DATABASE_URL")
            .await;
    }

    /// A goods with a price on the order side and stock on the inventory side.
    pub async fn goods(&self, id: i32, price_cents: i64, stock: i32) {
        self.order
            .clone()
            .upsert_goods(pb::Goods {
                id,
                name: format!("goods {id}"),
                price_cents,
            })
            .await
            .expect("upsert_goods");
        self.inventory
            .clone()
            .set_inv(inv::SetInvRequest {
                goods_id: id,
                stocks: stock,
            })
            .await
            .expect("set_inv");
    }

    pub async fn add_to_cart(&self, user_id: i64, goods_id: i32, nums: i32) {
        self.order
            .clone()
            .create_cart_item(pb::CreateCartItemRequest {
                user_id,
                goods_id,
                nums,
                checked: Some(true),
            })
            .await
            .expect("create_cart_item");
    }

    pub async fn create_order(&self, user_id: i64) -> Result<pb::OrderInfo, tonic::Status> {
        self.order
            .clone()
            .create_order(create_order_request(user_id))
            .await
            .map(|r| r.into_inner())
    }

    pub async fn stock(&self, goods_id: i32) -> i64 {
        self.inventory
            .clone()
            .inv_detail(inv::InvDetailRequest { goods_id })
            .await
            .expect("inv_detail")
            .into_inner()
            .stocks
    }

    pub async fn cart_len(&self, user_id: i64) -> usize {
        self.order
            .clone()
            .cart_item_list(pb::UserRequest { user_id })
            .await
            .expect("cart_item_list")
            .into_inner()
            .items
            .len()
    }

    pub async fn order_count(&self) -> i64 {
        sqlx::query_scalar("SELECT COUNT(*) FROM order_info")
            .fetch_one(&self.order_pool)
            .await
            .expect("count orders")
    }

    /// The status of an order's stock_sell_detail row, if any.
    pub async fn sell_status(&self, order_sn: &str) -> Option<String> {
        sqlx::query_scalar("SELECT status FROM stock_sell_detail WHERE order_sn = ?")
            .bind(order_sn)
            .fetch_optional(&self.inventory_pool)
            .await
            .expect("sell detail")
    }

    /// The order_sns inventory has seen (deducted or returned), oldest first.
    pub async fn sell_details(&self) -> Vec<(String, String)> {
        sqlx::query_as("SELECT order_sn, status FROM stock_sell_detail ORDER BY id")
            .fetch_all(&self.inventory_pool)
            .await
            .expect("sell details")
    }

    pub async fn barrier(&self, order_sn: &str) -> Option<String> {
        sqlx::query_scalar("SELECT outcome FROM tx_barrier WHERE order_sn = ?")
            .bind(order_sn)
            .fetch_optional(&self.order_pool)
            .await
            .expect("barrier")
    }
}

impl Stack {
    /// Sends a plain message with `body` to `topic` (as the timeout path or a stranger would).
    pub async fn send_raw(&self, topic: &str, body: &[u8]) {
        let mut producer = self.mq.producer(&unique("test_sender"));
        producer.start().await.expect("producer");
        let message = rocketmq_model::common::message::message_single::Message::builder()
            .topic(topic)
            .body(body.to_vec())
            .build()
            .expect("message");
        producer.send(message).await.expect("send");
        producer.shutdown().await;
    }

    pub async fn send_reback(&self, order_sn: &str) {
        let body = serde_json::to_vec(&mq::OrderSnBody::new(order_sn)).expect("json");
        self.send_raw(&self.config.reback_topic.clone(), &body)
            .await;
    }

    pub async fn pay(&self, order_sn: &str) -> Result<pb::OrderInfo, tonic::Status> {
        self.order
            .clone()
            .update_order_status(pb::UpdateOrderStatusRequest {
                order_sn: order_sn.to_owned(),
                status: pb::OrderStatus::TradeSuccess as i32,
                pay_type: "alipay".into(),
                trade_no: format!("T{order_sn}"),
            })
            .await
            .map(|r| r.into_inner())
    }

    pub async fn order_status(&self, order_sn: &str) -> Option<String> {
        sqlx::query_scalar("SELECT status FROM order_info WHERE order_sn = ?")
            .bind(order_sn)
            .fetch_optional(&self.order_pool)
            .await
            .expect("order status")
    }

    pub async fn dead_messages(&self, pool: &MySqlPool) -> Vec<(String, String)> {
        sqlx::query_as("SELECT topic, reason FROM dead_message ORDER BY id")
            .fetch_all(pool)
            .await
            .expect("dead messages")
    }

    /// I1-I6 across both databases (I6 with this stack's pay timeout).
    pub async fn audit(&self, initial: &[(i32, i64)], acknowledged: &[String]) {
        let input = testkit::audit::AuditInput {
            initial_stock: Some(initial.iter().copied().collect()),
            acknowledged: acknowledged.to_vec(),
            liveness: Some(testkit::audit::Liveness::new(self.config.pay_timeout)),
        };
        let verdicts = testkit::audit::audit(&self.order_pool, &self.inventory_pool, &input)
            .await
            .expect("audit runs");
        testkit::audit::assert_all_hold(&verdicts);
    }
}

pub fn create_order_request(user_id: i64) -> pb::CreateOrderRequest {
    pb::CreateOrderRequest {
        user_id,
        address: "1 Main St".into(),
        name: "Ada".into(),
        mobile: "13800000000".into(),
        post: "hi".into(),
        request_id: String::new(),
    }
}

/// A failpoint armed for as long as this lives (see [`arm`]).
pub struct Armed {
    name: &'static str,
    _turn: tokio::sync::OwnedMutexGuard<()>,
}

impl Drop for Armed {
    fn drop(&mut self) {
        fail::remove(self.name);
    }
}

/// Arms failpoint `name` with `actions` (the `fail` crate's syntax, e.g. `return(<user>)`).
/// Failpoints are global to the test binary and one configuration replaces another, so
/// tests that arm the same point take turns: this waits until no other test holds it.
pub async fn arm(name: &'static str, actions: &str) -> Armed {
    /// One lock per failpoint name.
    type Turns =
        std::sync::Mutex<std::collections::HashMap<&'static str, Arc<tokio::sync::Mutex<()>>>>;
    static TURNS: std::sync::OnceLock<Turns> = std::sync::OnceLock::new();
    let turn = TURNS
        .get_or_init(Default::default)
        .lock()
        .expect("failpoint turns")
        .entry(name)
        .or_default()
        .clone();
    let turn = turn.lock_owned().await;
    fail::cfg(name, actions).expect("failpoint");
    Armed { name, _turn: turn }
}

/// For the race tests: one order of 2 × goods 1 (price 100, stock 1,000) per user 1..=users.
pub async fn race_orders(stack: &Stack, users: i64) -> Vec<pb::OrderInfo> {
    stack.goods(1, 100, 1_000).await;
    for user in 1..=users {
        stack.add_to_cart(user, 1, 2).await;
    }
    futures::future::join_all((1..=users).map(|user| stack.create_order(user)))
        .await
        .into_iter()
        .map(|r| r.expect("order"))
        .collect()
}

/// After a race on [`race_orders`]: every order that was not paid was closed; waits until
/// each closed order's stock came back exactly once, then audits I1-I5.
pub async fn closed_orders_come_back_then_audit(
    stack: &Stack,
    orders: &[pb::OrderInfo],
    paid: usize,
) {
    let closed = orders.len() - paid;
    // Counters move right after each reback commits: wait for both.
    testkit::eventually(
        testkit::PATIENCE,
        "the closed orders' stock back",
        || async {
            (stack.stock(1).await == 1_000 - 2 * paid as i64
                && stack.reback_counters.returned.get() as usize == closed)
                .then_some(())
        },
    )
    .await;
    assert_eq!(
        stack.reback_counters.returned.get() as usize,
        closed,
        "each closed order returned once"
    );
    let acknowledged: Vec<String> = orders.iter().map(|o| o.order_sn.clone()).collect();
    stack.audit(&[(1, 1_000)], &acknowledged).await;
}

/// The value of one sample (`name{labels}` exactly as exposed) a service serves at
/// `addr`; 0 when it is absent.
pub async fn sample(addr: std::net::SocketAddr, series: &str) -> u64 {
    scrape(addr)
        .await
        .lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
        .map_or(0, |n| n.trim().parse().expect("a counter"))
}

/// The Prometheus text a service serves at `addr`.
pub async fn scrape(addr: std::net::SocketAddr) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    stream
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: test\r\n\r\n")
        .await
        .expect("request");
    let mut response = String::new();
    stream
        .read_to_string(&mut response)
        .await
        .expect("response");
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    response
}
