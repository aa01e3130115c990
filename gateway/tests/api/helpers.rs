//! A shop for a test: the services' stack (order_srv's test helpers, shared by path so
//! the two crates start services the same way) with the gateway in front of it.

use std::time::Duration;

use gateway::{config::Config, startup::Application};
use reqwest::{Method, RequestBuilder, StatusCode};
use serde_json::{Value, json};
use sqlx::mysql::MySqlConnectOptions;
use tokio::{sync::oneshot, task::JoinHandle};

#[path = "../../../order_srv/tests/api/helpers.rs"]
#[allow(dead_code)]
pub mod stack;

pub use stack::Stack;

pub const JWT_SECRET: &str = "test-jwt-secret-0123456789abcdef0123";
pub const PAYMENT_SECRET: &str = "test-payment-secret-0123456789abcdef";

/// The gateway's settings for a test: port 0, dev tokens on, the limit high enough for
/// the tests that do not test it.
pub fn gateway_config() -> Config {
    use clap::Parser as _;
    let mut config = Config::try_parse_from([
        "gateway",
        "--jwt-secret",
        JWT_SECRET,
        "--payment-secret",
        PAYMENT_SECRET,
    ])
    .expect("the test settings parse");
    config.http_addr = "127.0.0.1:0".parse().expect("literal address");
    config.dev_tokens = true;
    config.rate_per_user = 1_000;
    config.rate_burst = 1_000;
    // The services' test stack allows calls of up to 30 s on a loaded machine.
    config.order_timeout = Duration::from_secs(30);
    config.call_timeout = Duration::from_secs(10);
    config
}

pub struct Shop {
    pub stack: Stack,
    pub url: String,
    pub http: reqwest::Client,
    gateway: Option<(oneshot::Sender<()>, JoinHandle<anyhow::Result<()>>)>,
}

pub async fn spawn_shop(db: MySqlConnectOptions) -> Shop {
    spawn_shop_with(db, gateway_config()).await
}

/// A shop selling goods 1 (at `price_cents`, `stock` in stock) with `nums` of it in
/// `user`'s cart.
pub async fn shop_with_cart(
    db: MySqlConnectOptions,
    user: i64,
    price_cents: i64,
    stock: i32,
    nums: i32,
) -> Shop {
    let shop = spawn_shop(db).await;
    shop.stack.goods(1, price_cents, stock).await;
    shop.add_to_cart(user, 1, nums).await;
    shop
}

pub async fn spawn_shop_with(db: MySqlConnectOptions, mut config: Config) -> Shop {
    let stack = stack::spawn_stack(db).await;
    config.order.order_endpoint = format!("http://{}", stack.order_addr);
    config.inventory.inventory_endpoint = format!("http://{}", stack.inventory_addr);
    let app = Application::build(&config)
        .await
        .expect("the gateway starts");
    let url = format!("http://{}", app.http_addr());
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(app.run_until(async {
        let _ = stopped.await;
    }));
    Shop {
        stack,
        url,
        http: reqwest::Client::builder()
            .timeout(Duration::from_secs(60))
            .build()
            .expect("an HTTP client"),
        gateway: Some((stop, task)),
    }
}

/// An answer: its status, headers and JSON body (`Value::Null` when empty).
#[derive(Debug)]
pub struct Answer {
    pub status: StatusCode,
    pub headers: reqwest::header::HeaderMap,
    pub body: Value,
}

impl Answer {
    /// The problem's reason, for an error answer.
    pub fn reason(&self) -> &str {
        self.body["reason"].as_str().unwrap_or("")
    }

    pub fn content_type(&self) -> &str {
        self.headers
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }
}

impl Shop {
    pub fn request(&self, method: Method, path: &str) -> RequestBuilder {
        self.http.request(method, format!("{}{path}", self.url))
    }

    /// A request as `user` (a dev token from the gateway).
    pub async fn as_user(&self, user: i64, method: Method, path: &str) -> RequestBuilder {
        let token = self.token(user).await;
        self.request(method, path).bearer_auth(token)
    }

    pub async fn token(&self, user: i64) -> String {
        let answer = send(
            self.request(Method::POST, "/v1/dev/token")
                .json(&json!({ "user_id": user })),
        )
        .await;
        assert_eq!(answer.status, StatusCode::OK, "{answer:?}");
        answer.body["token"].as_str().expect("a token").to_owned()
    }

    /// Puts `nums` of goods `goods_id` in `user`'s cart through the gateway.
    pub async fn add_to_cart(&self, user: i64, goods_id: i32, nums: i32) {
        let answer = send(
            self.as_user(user, Method::POST, "/v1/cart/items")
                .await
                .json(&json!({ "goods_id": goods_id, "nums": nums })),
        )
        .await;
        assert_eq!(answer.status, StatusCode::CREATED, "{answer:?}");
    }

    /// `POST /v1/orders` as `user`, with an Idempotency-Key when given.
    pub async fn place(&self, user: i64, key: Option<&str>) -> Answer {
        let mut request = self
            .as_user(user, Method::POST, "/v1/orders")
            .await
            .json(&json!({ "address": "1 Main St", "name": "Ada", "mobile": "555-0100" }));
        if let Some(key) = key {
            request = request.header("Idempotency-Key", key);
        }
        send(request).await
    }

    pub async fn stop(mut self) {
        if let Some((stop, task)) = self.gateway.take() {
            let _ = stop.send(());
            let _ = task.await;
        }
        self.stack.stop().await;
    }
}

pub async fn send(request: RequestBuilder) -> Answer {
    let response = request.send().await.expect("the gateway answers");
    let status = response.status();
    let headers = response.headers().clone();
    let bytes = response.bytes().await.expect("a body");
    let body = if bytes.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&bytes)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()))
    };
    Answer {
        status,
        headers,
        body,
    }
}
