//! What an operator sees of the running processes (the broker, `devstack broker`, and
//! both services, as the container image runs them):
//! - a healthy system logs no WARN and no ERROR, with the default log filters (RUST_LOG
//!   unset), through start, one order, and stop; each line that should not be there is
//!   printed;
//! - with `OTEL_EXPORTER_OTLP_ENDPOINT` set, both services export one order's spans over
//!   OTLP/gRPC (to a collector in this test), as one trace with their service names.
//!
//! Needs MariaDB on 127.0.0.1:3306 (scripts/test starts it).

use std::{path::Path, time::Duration};

use devstack::procs::{Parts, Proc};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
    trace_service_server::{TraceService, TraceServiceServer},
};
use proto::{
    inventory::{self as inv, inventory_client::InventoryClient},
    order::{self as pb, order_client::OrderClient},
};
use testkit::{PATIENCE, eventually, unique};
use tokio::sync::Mutex;

const MYSQL: &str = "mysql://root@127.0.0.1:3306";

/// The WARN and ERROR lines of a log, colour codes removed.
fn loud_lines(log: &str) -> Vec<String> {
    log.lines()
        .map(devstack::procs::strip_ansi)
        .filter(|line| line.contains(" WARN ") || line.contains(" ERROR "))
        .collect()
}

/// Places one order (user 7, two of goods 1) inside the gateway span `traceparent`,
/// when given.
async fn place_one_order(parts: &Parts, traceparent: Option<&str>) {
    let mut order = OrderClient::connect(parts.order_addr())
        .await
        .expect("connect order_srv");
    let mut inventory = InventoryClient::connect(parts.inventory_addr())
        .await
        .expect("connect inventory_srv");
    order
        .upsert_goods(pb::Goods {
            id: 1,
            name: "keyboard".into(),
            price_cents: 4_590,
        })
        .await
        .expect("goods");
    inventory
        .set_inv(inv::SetInvRequest {
            goods_id: 1,
            stocks: 10,
        })
        .await
        .expect("stock");
    order
        .create_cart_item(pb::CreateCartItemRequest {
            user_id: 7,
            goods_id: 1,
            nums: 2,
            checked: None,
        })
        .await
        .expect("cart");
    let mut request = tonic::Request::new(pb::CreateOrderRequest {
        user_id: 7,
        address: "1 Main St".into(),
        name: "Ada".into(),
        mobile: "13800000000".into(),
        post: String::new(),
        request_id: String::new(),
    });
    if let Some(traceparent) = traceparent {
        request.metadata_mut().insert(
            "traceparent",
            traceparent.parse().expect("a traceparent is ASCII"),
        );
    }
    order.create_order(request).await.expect("an order");
}

fn log_of(dir: &Path, name: &str) -> String {
    std::fs::read_to_string(dir.join(format!("{name}.log"))).unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_healthy_system_logs_no_warn_and_no_error_from_start_to_stop() {
    let system = System::start("quiet", |parts| parts).await;
    place_one_order(&system.parts, None).await;
    // Long enough for the consumers' first rebalance and the clients' periodic tasks.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let dir = system.stop().await;

    let mut loud = Vec::new();
    for name in ["broker", "inventory_srv", "order_srv"] {
        for line in loud_lines(&log_of(dir.path(), name)) {
            loud.push(format!("{name}: {line}"));
        }
    }
    assert!(
        loud.is_empty(),
        "a healthy system logged:\n{}",
        loud.join("\n")
    );
}

/// The broker and both services as processes, with the container image's log filters,
/// on databases of their own.
struct System {
    parts: Parts,
    broker: Proc,
    inventory: Proc,
    order: Proc,
    dir: tempfile::TempDir,
    databases: [String; 2],
}

impl System {
    async fn start(name: &str, configure: impl FnOnce(Parts) -> Parts) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let databases = [
            unique(&format!("{name}_order")),
            unique(&format!("{name}_inventory")),
        ];
        let parts = configure(
            Parts::new(
                dir.path(),
                format!("{MYSQL}/{}", databases[0]),
                format!("{MYSQL}/{}", databases[1]),
                Duration::from_secs(3600),
            )
            .expect("ports")
            .default_service_logs(),
        );
        let broker = parts.broker().await.expect("broker");
        testkit::broker::create_topics(&parts.namesrv(), &testkit::SYSTEM_TOPICS, 4)
            .await
            .expect("topics");
        let inventory = parts.inventory(false).await.expect("inventory_srv");
        let order = parts.order_with(None).await.expect("order_srv");
        Self {
            parts,
            broker,
            inventory,
            order,
            dir,
            databases,
        }
    }

    /// Stops the services (SIGTERM) and the broker, drops the databases; the logs stay
    /// in the returned directory.
    async fn stop(mut self) -> tempfile::TempDir {
        for proc in [&mut self.order, &mut self.inventory] {
            proc.stop(Duration::from_secs(30)).await;
        }
        stop_broker(&mut self.broker).await;
        let server = MYSQL.parse().expect("literal URL");
        let [order_db, inventory_db] = &self.databases;
        testkit::mysql::drop_databases(&server, &[order_db, inventory_db], "127.0.0.1:3306")
            .await
            .expect("drop the test databases");
        self.dir
    }
}

/// `devstack broker` stops on Ctrl-C (SIGINT).
async fn stop_broker(broker: &mut Proc) {
    let _ = std::process::Command::new("kill")
        .args(["-INT", &broker.pid().to_string()])
        .status();
    broker.stop(Duration::from_secs(30)).await;
}

/// An OTLP/gRPC trace collector that keeps what it receives: (service.name, span name,
/// trace id as hex) per span.
#[derive(Clone, Default)]
struct Collector {
    spans: std::sync::Arc<Mutex<Vec<(String, String, String)>>>,
}

#[tonic::async_trait]
impl TraceService for Collector {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let mut kept = self.spans.lock().await;
        for resource_spans in request.into_inner().resource_spans {
            let service = resource_spans
                .resource
                .iter()
                .flat_map(|r| &r.attributes)
                .find(|kv| kv.key == "service.name")
                .and_then(|kv| kv.value.as_ref())
                .and_then(|v| match &v.value {
                    Some(
                        opentelemetry_proto::tonic::common::v1::any_value::Value::StringValue(s),
                    ) => Some(s.clone()),
                    _ => None,
                })
                .unwrap_or_default();
            for span in resource_spans
                .scope_spans
                .into_iter()
                .flat_map(|scope| scope.spans)
            {
                let trace: String = span.trace_id.iter().map(|b| format!("{b:02x}")).collect();
                kept.push((service.clone(), span.name, trace));
            }
        }
        Ok(tonic::Response::new(ExportTraceServiceResponse::default()))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_services_export_one_orders_trace_over_otlp() {
    let collector = Collector::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("collector port");
    let collector_addr = listener.local_addr().expect("bound");
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(TraceServiceServer::new(collector.clone()))
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );

    let system = System::start("otlp", |parts| {
        parts.exporting_traces_to(format!("http://{collector_addr}"))
    })
    .await;
    let trace = "4bf92f3577b34da6a3ce929d0e0e4736";
    place_one_order(
        &system.parts,
        Some(&format!("00-{trace}-00f067aa0ba902b7-01")),
    )
    .await;

    // The batch exporter sends every few seconds; a stop sends what is left.
    let expected = [
        ("order_srv", "/order.v1.Order/CreateOrder"),
        ("order_srv", "local_transaction"),
        ("inventory_srv", "/inventory.v1.Inventory/Sell"),
    ];
    eventually(PATIENCE, "both services' spans of the order", || {
        let spans = collector.spans.clone();
        async move {
            let spans = spans.lock().await;
            expected
                .iter()
                .all(|(service, name)| {
                    spans
                        .iter()
                        .any(|(s, n, t)| s == service && n == name && t == trace)
                })
                .then_some(())
        }
    })
    .await;
    let dir = system.stop().await;
    for name in ["inventory_srv", "order_srv"] {
        let loud = loud_lines(&log_of(dir.path(), name));
        assert!(loud.is_empty(), "{name} logged:\n{}", loud.join("\n"));
    }
}
