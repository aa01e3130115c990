//! docker-compose.yml can't run on the development machine (no Docker engine), so this
//! checks it against the services' real configuration: every variable it sets is one
//! the binary reads and parses, ports and health checks agree, dependencies wait for
//! health, and the Dockerfile builds every binary the file runs.

use std::collections::{BTreeMap, BTreeSet};

use serde_yaml::Value;
use support::{assert_points_at, parse_with, repo_file};

mod support;

fn compose() -> Value {
    serde_yaml::from_str(&repo_file("docker-compose.yml")).expect("docker-compose.yml is YAML")
}

fn service<'a>(compose: &'a Value, name: &str) -> &'a Value {
    compose
        .get("services")
        .and_then(|s| s.get(name))
        .unwrap_or_else(|| panic!("service {name} is missing"))
}

fn strings(value: Option<&Value>) -> Vec<String> {
    value
        .and_then(Value::as_sequence)
        .map(|seq| {
            seq.iter()
                .filter_map(|v| v.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

fn environment(service: &Value) -> BTreeMap<String, String> {
    service
        .get("environment")
        .and_then(Value::as_mapping)
        .map(|env| {
            env.iter()
                .filter_map(|(k, v)| {
                    let value = match v {
                        Value::String(s) => s.clone(),
                        Value::Number(n) => n.to_string(),
                        Value::Bool(b) => b.to_string(),
                        _ => return None,
                    };
                    Some((k.as_str()?.to_owned(), value))
                })
                .collect()
        })
        .unwrap_or_default()
}

fn port_of(addr: &str) -> u16 {
    addr.rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("no port in {addr}"))
}

fn assert_published_and_probed(service: &Value, name: &str, port: u16) {
    let ports = strings(service.get("ports"));
    assert!(
        ports.contains(&format!("{port}:{port}")),
        "{name} must publish {port}: {ports:?}"
    );
    let probe = strings(service.get("healthcheck").and_then(|h| h.get("test")));
    assert_eq!(
        probe,
        ["CMD", "grpc_health", &format!("127.0.0.1:{port}")],
        "{name} health check"
    );
}

fn waits_for(service: &Value, name: &str, dependency: &str, condition: &str) {
    let actual = service
        .get("depends_on")
        .and_then(|d| d.get(dependency))
        .and_then(|d| d.get("condition"))
        .and_then(Value::as_str);
    assert_eq!(
        actual,
        Some(condition),
        "{name} must wait for {dependency} ({condition})"
    );
}

#[test]
fn the_services_environment_is_exactly_what_the_binaries_read() {
    let compose = compose();
    let inventory = service(&compose, "inventory_srv");
    let order = service(&compose, "order_srv");
    assert_eq!(strings(inventory.get("command")), ["inventory_srv"]);
    assert_eq!(strings(order.get("command")), ["order_srv"]);

    let inventory_config: inventory_srv::config::Config = parse_with(&environment(inventory));
    let order_config: order_srv::config::Config = parse_with(&environment(order));
    for (name, service) in [("inventory_srv", inventory), ("order_srv", order)] {
        // Consumers take over a dead replica's queues within this, not the client's 20 s.
        assert!(
            environment(service).contains_key(mq::REBALANCE_INTERVAL_ENV),
            "{name} sets {}",
            mq::REBALANCE_INTERVAL_ENV
        );
    }

    assert!(
        inventory_config
            .database_url
            .starts_with("mysql://root@mysql:3306/")
    );
    assert!(
        order_config
            .database_url
            .starts_with("mysql://root@mysql:3306/")
    );
    assert_ne!(
        inventory_config.database_url, order_config.database_url,
        "one database per service"
    );
    assert_eq!(inventory_config.namesrv_addr, "namesrv:9876");
    assert_eq!(order_config.namesrv_addr, "namesrv:9876");
    assert_eq!(inventory_config.reback_topic, order_config.reback_topic);
    assert_points_at(
        &order_config.inventory.inventory_endpoint,
        "inventory_srv",
        inventory_config.grpc_addr.port(),
    );
    assert!(
        inventory_config.grpc_addr.ip().is_unspecified(),
        "reachable from other containers"
    );
    assert!(
        order_config.grpc_addr.ip().is_unspecified(),
        "reachable from other containers"
    );
    assert_published_and_probed(
        inventory,
        "inventory_srv",
        inventory_config.grpc_addr.port(),
    );
    assert_published_and_probed(order, "order_srv", order_config.grpc_addr.port());

    let namesrv = service(&compose, "namesrv");
    let namesrv_port = port_of(&order_config.namesrv_addr);
    assert!(strings(namesrv.get("ports")).contains(&format!("{namesrv_port}:{namesrv_port}")));
}

#[test]
fn both_services_export_their_traces_to_jaeger() {
    let compose = compose();
    let jaeger = service(&compose, "jaeger");
    let image = jaeger
        .get("image")
        .and_then(Value::as_str)
        .expect("jaeger has an image");
    assert!(image.starts_with("jaegertracing/"), "{image}");
    let ports = strings(jaeger.get("ports"));
    assert!(
        ports.contains(&"16686:16686".to_owned()),
        "the UI is published"
    );
    assert!(
        ports.contains(&"4317:4317".to_owned()),
        "OTLP/gRPC is published"
    );

    let inventory = service(&compose, "inventory_srv");
    let order = service(&compose, "order_srv");
    let inventory_config: inventory_srv::config::Config = parse_with(&environment(inventory));
    let order_config: order_srv::config::Config = parse_with(&environment(order));
    for (name, endpoint, definition) in [
        (
            "inventory_srv",
            inventory_config.telemetry.otel_exporter_otlp_endpoint,
            inventory,
        ),
        (
            "order_srv",
            order_config.telemetry.otel_exporter_otlp_endpoint,
            order,
        ),
    ] {
        assert_eq!(
            endpoint.as_deref(),
            Some("http://jaeger:4317"),
            "{name} exports to Jaeger's OTLP/gRPC port"
        );
        assert!(
            definition
                .get("depends_on")
                .and_then(|d| d.get("jaeger"))
                .is_some(),
            "{name} starts after jaeger"
        );
    }
}

#[test]
fn every_service_waits_for_what_it_needs_to_be_healthy() {
    let compose = compose();
    for name in ["mysql", "namesrv", "broker", "inventory_srv", "order_srv"] {
        assert!(
            service(&compose, name)
                .get("healthcheck")
                .and_then(|h| h.get("test"))
                .is_some(),
            "{name} has a health check"
        );
    }
    let inventory = service(&compose, "inventory_srv");
    let order = service(&compose, "order_srv");
    waits_for(inventory, "inventory_srv", "mysql", "service_healthy");
    waits_for(
        inventory,
        "inventory_srv",
        "mq-init",
        "service_completed_successfully",
    );
    waits_for(order, "order_srv", "mysql", "service_healthy");
    waits_for(
        order,
        "order_srv",
        "mq-init",
        "service_completed_successfully",
    );
    waits_for(order, "order_srv", "inventory_srv", "service_healthy");
    waits_for(
        service(&compose, "broker"),
        "broker",
        "namesrv",
        "service_healthy",
    );
    waits_for(
        service(&compose, "mq-init"),
        "mq-init",
        "broker",
        "service_healthy",
    );

    let init = strings(service(&compose, "mq-init").get("command")).join(" ");
    for topic in testkit::SYSTEM_TOPICS {
        assert!(
            init.contains(&format!("-t {topic} ")),
            "mq-init creates {topic}"
        );
    }
}

#[test]
fn the_dockerfile_builds_every_binary_the_compose_file_runs_and_the_broker_config_exists() {
    let compose = compose();
    let dockerfile = repo_file("Dockerfile");
    let mut binaries = BTreeSet::new();
    for name in ["inventory_srv", "order_srv"] {
        let svc = service(&compose, name);
        assert_eq!(
            svc.get("build").and_then(Value::as_str),
            Some("."),
            "{name} is built from the workspace"
        );
        binaries.extend(strings(svc.get("command")).into_iter().take(1));
        binaries.extend(
            strings(svc.get("healthcheck").and_then(|h| h.get("test")))
                .into_iter()
                .nth(1),
        );
    }
    for binary in &binaries {
        assert!(
            dockerfile.contains(&format!("-p {binary}")),
            "Dockerfile builds {binary}"
        );
        assert!(
            dockerfile.contains(&format!("target/release/{binary}")),
            "Dockerfile ships {binary}"
        );
    }
    let volumes = strings(service(&compose, "broker").get("volumes"));
    let conf = volumes
        .first()
        .and_then(|v| v.split(':').next())
        .expect("broker.conf mount");
    let conf = repo_file(conf.trim_start_matches("./"));
    for key in [
        "brokerIP1 = broker",
        "timerWheelEnable = true",
        "transactionCheckInterval",
    ] {
        assert!(conf.contains(key), "broker.conf sets {key}");
    }
}

#[test]
fn the_gateway_reaches_both_services_and_is_probed_on_its_own_port() {
    let compose = compose();
    let gateway = service(&compose, "gateway");
    assert_eq!(strings(gateway.get("command")), ["gateway"]);
    assert_eq!(gateway.get("build").and_then(Value::as_str), Some("."));
    let config: gateway::config::Config = parse_with(&environment(gateway));
    let order: order_srv::config::Config = parse_with(&environment(service(&compose, "order_srv")));
    let inventory: inventory_srv::config::Config =
        parse_with(&environment(service(&compose, "inventory_srv")));
    assert_points_at(
        &config.order.order_endpoint,
        "order_srv",
        order.grpc_addr.port(),
    );
    assert_points_at(
        &config.inventory.inventory_endpoint,
        "inventory_srv",
        inventory.grpc_addr.port(),
    );
    assert!(
        config.http_addr.ip().is_unspecified(),
        "reachable from the host"
    );
    let port = config.http_addr.port();
    assert!(
        strings(gateway.get("ports")).contains(&format!("{port}:{port}")),
        "the gateway publishes {port}"
    );
    let probe = strings(gateway.get("healthcheck").and_then(|h| h.get("test"))).join(" ");
    assert!(
        probe.contains(&format!("/dev/tcp/127.0.0.1/{port}")) && probe.contains("GET /readyz"),
        "the health check asks /readyz on {port}: {probe}"
    );
    waits_for(gateway, "gateway", "order_srv", "service_healthy");
    waits_for(gateway, "gateway", "inventory_srv", "service_healthy");
    assert_eq!(
        config.telemetry.otel_exporter_otlp_endpoint.as_deref(),
        Some("http://jaeger:4317")
    );
    let dockerfile = repo_file("Dockerfile");
    assert!(dockerfile.contains("-p gateway") && dockerfile.contains("target/release/gateway"));
}
