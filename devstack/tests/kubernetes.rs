//! deploy/k8s can't be applied here (no cluster), so this renders it and checks it: every
//! object against the Kubernetes schemas of a current release (`kubernetes-validate`,
//! which scripts/test installs from PyPI), every variable the Deployments set against the
//! binaries' own configuration, the probes against the ports and health service names
//! the binaries serve, and what it shares with docker-compose.yml against that file.
//!
//! The renderer below does what kustomize does for the fields this kustomization uses
//! (resources, namespace, labels, replicas, images) and refuses any other field, so a
//! kustomization it can't render fails here instead of being checked half. Its output
//! was compared with `kubectl kustomize` (v5.5.0) when written: the same objects.

use std::{
    collections::{BTreeMap, BTreeSet},
    path::{Path, PathBuf},
};

use serde_yaml::{Mapping, Value};
use support::{assert_points_at, parse_with, repo_file};

mod support;

const OVERLAY: &str = "deploy/k8s/overlays/small";
/// The release the objects are validated against.
const KUBERNETES_VERSION: &str = "1.34.0";

fn repo_path(relative: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join(relative)
}

/// The objects `kubectl kustomize <dir>` would print.
fn render(dir: &Path) -> Vec<Value> {
    let file = dir.join("kustomization.yaml");
    let text = std::fs::read_to_string(&file)
        .unwrap_or_else(|e| panic!("reading {}: {e}", file.display()));
    let kustomization: Mapping = serde_yaml::from_str(&text)
        .unwrap_or_else(|e| panic!("{} is not a YAML mapping: {e}", file.display()));
    for key in kustomization.keys() {
        let key = key.as_str().unwrap_or_default();
        assert!(
            matches!(
                key,
                "apiVersion"
                    | "kind"
                    | "namespace"
                    | "labels"
                    | "resources"
                    | "replicas"
                    | "images"
            ),
            "{}: this test's renderer does not handle `{key}`; extend it",
            file.display()
        );
    }
    let mut objects = Vec::new();
    for resource in sequence(kustomization.get("resources")) {
        let path = dir.join(resource.as_str().expect("a resource is a path"));
        if path.is_dir() {
            objects.extend(render(&path));
        } else {
            let text = std::fs::read_to_string(&path)
                .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
            for document in documents(&text) {
                let object: Value = serde_yaml::from_str(&document)
                    .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
                if !object.is_null() {
                    objects.push(object);
                }
            }
        }
    }
    for label in sequence(kustomization.get("labels")) {
        for key in mapping(Some(label)).keys() {
            let key = key.as_str().unwrap_or_default();
            assert!(
                key == "pairs",
                "{}: labels.{key} is not handled by this test's renderer",
                file.display()
            );
        }
        for (name, value) in mapping(label.get("pairs")) {
            for object in &mut objects {
                labels_of(object).insert(name.clone(), value.clone());
            }
        }
    }
    if let Some(namespace) = kustomization.get("namespace") {
        for object in &mut objects {
            if kind(object) != "Namespace" {
                metadata(object).insert("namespace".into(), namespace.clone());
            }
        }
    }
    for replicas in sequence(kustomization.get("replicas")) {
        let name = replicas.get("name").and_then(Value::as_str);
        let object = objects
            .iter_mut()
            .find(|o| kind(o) == "Deployment" && name_of(o) == name.unwrap_or_default())
            .unwrap_or_else(|| panic!("replicas for {name:?}: no such Deployment"));
        let count = replicas.get("count").cloned().expect("replicas.count");
        spec(object).insert("replicas".into(), count);
    }
    for image in sequence(kustomization.get("images")) {
        let name = image
            .get("name")
            .and_then(Value::as_str)
            .expect("images.name");
        let mut replaced = 0;
        for object in &mut objects {
            for container in containers_mut(object) {
                let current = container
                    .get("image")
                    .and_then(Value::as_str)
                    .unwrap_or_default();
                let (current_name, current_tag) = current.split_once(':').unwrap_or((current, ""));
                if current_name != name {
                    continue;
                }
                let new_name = image.get("newName").and_then(Value::as_str).unwrap_or(name);
                let new_tag = image
                    .get("newTag")
                    .and_then(Value::as_str)
                    .unwrap_or(current_tag);
                let image = if new_tag.is_empty() {
                    new_name.to_owned()
                } else {
                    format!("{new_name}:{new_tag}")
                };
                container.insert("image".into(), image.into());
                replaced += 1;
            }
        }
        assert!(replaced > 0, "images: no container runs {name}");
    }
    objects
}

/// The documents of a YAML stream (separated by `---` lines).
fn documents(text: &str) -> Vec<String> {
    let mut documents = vec![String::new()];
    for line in text.lines() {
        if line.trim_end() == "---" {
            documents.push(String::new());
        } else if let Some(current) = documents.last_mut() {
            current.push_str(line);
            current.push('\n');
        }
    }
    documents
}

fn sequence(value: Option<&Value>) -> Vec<&Value> {
    value
        .and_then(Value::as_sequence)
        .map(|s| s.iter().collect())
        .unwrap_or_default()
}

fn mapping(value: Option<&Value>) -> Mapping {
    value
        .and_then(Value::as_mapping)
        .cloned()
        .unwrap_or_default()
}

fn kind(object: &Value) -> &str {
    object
        .get("kind")
        .and_then(Value::as_str)
        .unwrap_or_default()
}

fn name_of(object: &Value) -> &str {
    object
        .get("metadata")
        .and_then(|m| m.get("name"))
        .and_then(Value::as_str)
        .unwrap_or_default()
}

fn child<'a>(value: &'a mut Value, key: &str) -> &'a mut Mapping {
    let map = value.as_mapping_mut().expect("an object is a mapping");
    map.entry(key.into())
        .or_insert_with(|| Value::Mapping(Mapping::new()))
        .as_mapping_mut()
        .unwrap_or_else(|| panic!("{key} is a mapping"))
}

fn metadata(object: &mut Value) -> &mut Mapping {
    child(object, "metadata")
}

fn spec(object: &mut Value) -> &mut Mapping {
    child(object, "spec")
}

fn labels_of(object: &mut Value) -> &mut Mapping {
    metadata(object)
        .entry("labels".into())
        .or_insert_with(|| Value::Mapping(Mapping::new()))
        .as_mapping_mut()
        .expect("labels is a mapping")
}

/// The pod spec of a Deployment or a Job.
fn pod_spec(object: &Value) -> Option<&Value> {
    object.get("spec")?.get("template")?.get("spec")
}

fn containers_mut(object: &mut Value) -> Vec<&mut Mapping> {
    object
        .get_mut("spec")
        .and_then(|s| s.get_mut("template"))
        .and_then(|t| t.get_mut("spec"))
        .and_then(|s| s.get_mut("containers"))
        .and_then(Value::as_sequence_mut)
        .map(|c| c.iter_mut().filter_map(Value::as_mapping_mut).collect())
        .unwrap_or_default()
}

fn container(object: &Value) -> &Value {
    let containers = sequence(pod_spec(object).and_then(|s| s.get("containers")));
    assert_eq!(
        containers.len(),
        1,
        "{} runs one container",
        name_of(object)
    );
    containers[0]
}

fn find<'a>(objects: &'a [Value], kind_: &str, name: &str) -> &'a Value {
    objects
        .iter()
        .find(|o| kind(o) == kind_ && name_of(o) == name)
        .unwrap_or_else(|| panic!("no {kind_} {name}"))
}

fn str_at<'a>(value: &'a Value, path: &[&str]) -> Option<&'a str> {
    path.iter()
        .try_fold(value, |v, key| v.get(*key))
        .and_then(Value::as_str)
}

fn int_at(value: &Value, path: &[&str]) -> Option<i64> {
    path.iter()
        .try_fold(value, |v, key| v.get(*key))
        .and_then(Value::as_i64)
}

/// What the container's process sees: every key of the ConfigMaps it takes whole, then
/// its own entries (a Secret's value resolved from the rendered Secret).
fn environment(objects: &[Value], deployment: &Value) -> BTreeMap<String, String> {
    let container = container(deployment);
    let mut env = BTreeMap::new();
    for from in sequence(container.get("envFrom")) {
        let name = str_at(from, &["configMapRef", "name"])
            .unwrap_or_else(|| panic!("{}: only ConfigMaps are taken whole", name_of(deployment)));
        for (key, value) in mapping(find(objects, "ConfigMap", name).get("data")) {
            let value = value.as_str().expect("ConfigMap values are strings");
            env.insert(key.as_str().expect("a key").to_owned(), value.to_owned());
        }
    }
    for entry in sequence(container.get("env")) {
        let name = str_at(entry, &["name"]).expect("env name").to_owned();
        let value = if let Some(value) = str_at(entry, &["value"]) {
            value.to_owned()
        } else {
            let secret = str_at(entry, &["valueFrom", "secretKeyRef", "name"])
                .unwrap_or_else(|| panic!("{name}: a value or a Secret key"));
            let key = str_at(entry, &["valueFrom", "secretKeyRef", "key"]).expect("key");
            str_at(find(objects, "Secret", secret), &["stringData", key])
                .unwrap_or_else(|| panic!("Secret {secret} has no key {key}"))
                .to_owned()
        };
        assert!(
            env.insert(name.clone(), value).is_none(),
            "{name} set twice"
        );
    }
    env
}

/// order_srv's and inventory_srv's configuration, as their Deployments set it.
fn service_configs(
    objects: &[Value],
) -> (order_srv::config::Config, inventory_srv::config::Config) {
    (
        parse_with(&environment(
            objects,
            find(objects, "Deployment", "order-srv"),
        )),
        parse_with(&environment(
            objects,
            find(objects, "Deployment", "inventory-srv"),
        )),
    )
}

fn rendered() -> Vec<Value> {
    render(&repo_path(OVERLAY))
}

#[test]
fn every_object_is_valid_for_a_current_kubernetes_release() {
    let objects = rendered();
    let stream = objects
        .iter()
        .map(|o| serde_yaml::to_string(o).expect("serialisable"))
        .collect::<Vec<_>>()
        .join("---\n");
    let out = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("k8s-small.yaml");
    std::fs::write(&out, &stream).expect("writing the rendered manifests");
    let validator = std::env::var("KUBERNETES_VALIDATE").unwrap_or("kubernetes-validate".into());
    let run = std::process::Command::new(&validator)
        .args(["--strict", "--no-warn", "-k", KUBERNETES_VERSION])
        .arg(&out)
        .output()
        .unwrap_or_else(|e| {
            panic!(
                "running {validator}: {e}; scripts/test installs it \
                 (`pip install kubernetes-validate`, or set KUBERNETES_VALIDATE)"
            )
        });
    let report = String::from_utf8_lossy(&run.stdout);
    assert!(
        run.status.success(),
        "{} against Kubernetes {KUBERNETES_VERSION}:\n{report}{}",
        out.display(),
        String::from_utf8_lossy(&run.stderr)
    );
    let passed = report
        .lines()
        .filter(|l| l.contains(" passed for "))
        .count();
    assert_eq!(passed, objects.len(), "every object was checked:\n{report}");
}

/// A field the schema does not have is refused: the validator above is strict.
#[test]
fn the_validator_refuses_a_misspelt_field() {
    let bad = "apiVersion: v1\nkind: Service\nmetadata:\n  name: x\nspec:\n  clusterIp: None\n  ports: [{port: 1}]\n";
    let out = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("k8s-misspelt.yaml");
    std::fs::write(&out, bad).expect("writing");
    let validator = std::env::var("KUBERNETES_VALIDATE").unwrap_or("kubernetes-validate".into());
    let run = std::process::Command::new(&validator)
        .args(["--strict", "--no-warn", "-k", KUBERNETES_VERSION])
        .arg(&out)
        .output()
        .unwrap_or_else(|e| panic!("running {validator}: {e}; scripts/test installs it"));
    assert!(!run.status.success(), "clusterIp (for clusterIP) passed");
}

#[test]
fn the_services_environment_is_exactly_what_the_binaries_read_and_all_they_need() {
    let objects = rendered();
    let order = find(&objects, "Deployment", "order-srv");
    let inventory = find(&objects, "Deployment", "inventory-srv");
    assert_eq!(
        sequence(container(order).get("command")),
        [&Value::from("order_srv")]
    );
    assert_eq!(
        sequence(container(inventory).get("command")),
        [&Value::from("inventory_srv")]
    );
    let order_env = environment(&objects, order);
    let inventory_env = environment(&objects, inventory);
    let order_config: order_srv::config::Config = parse_with(&order_env);
    let inventory_config: inventory_srv::config::Config = parse_with(&inventory_env);

    // What has a default only good on one machine is set.
    for (name, env, needed) in [
        (
            "order_srv",
            &order_env,
            &[
                "ORDER_DATABASE_URL",
                "ORDER_GRPC_ADDR",
                "ORDER_METRICS_ADDR",
                "INVENTORY_ENDPOINT",
                "NAMESRV_ADDR",
                mq::REBALANCE_INTERVAL_ENV,
            ][..],
        ),
        (
            "inventory_srv",
            &inventory_env,
            &[
                "INVENTORY_DATABASE_URL",
                "INVENTORY_GRPC_ADDR",
                "INVENTORY_METRICS_ADDR",
                "ORDER_ENDPOINT",
                "NAMESRV_ADDR",
                mq::REBALANCE_INTERVAL_ENV,
            ][..],
        ),
    ] {
        for key in needed {
            assert!(env.contains_key(*key), "{name} needs {key} set");
        }
    }
    assert!(order_config.grpc_addr.ip().is_unspecified());
    assert!(order_config.metrics_addr.ip().is_unspecified());
    assert!(inventory_config.grpc_addr.ip().is_unspecified());
    assert!(inventory_config.metrics_addr.ip().is_unspecified());
    assert_ne!(
        order_config.database_url, inventory_config.database_url,
        "one database per service"
    );
    assert_eq!(order_config.namesrv_addr, inventory_config.namesrv_addr);
    assert_eq!(order_config.reback_topic, inventory_config.reback_topic);

    // order_srv finds every inventory pod through the headless Service; the reconciler
    // reaches order_srv through its Service.
    let inventory_service = find(&objects, "Service", "inventory-srv");
    assert_eq!(
        str_at(inventory_service, &["spec", "clusterIP"]),
        Some("None"),
        "inventory-srv is headless, so its name resolves to every ready pod"
    );
    assert_points_at(
        &order_config.inventory.inventory_endpoint,
        "inventory-srv",
        inventory_config.grpc_addr.port(),
    );
    assert_points_at(
        &inventory_config.order.order_endpoint,
        "order-srv",
        order_config.grpc_addr.port(),
    );
}

#[test]
fn probes_ports_and_services_match_what_the_binaries_serve() {
    let objects = rendered();
    let (order_config, inventory_config) = service_configs(&objects);
    for (name, grpc, metrics, service) in [
        (
            "order-srv",
            order_config.grpc_addr.port(),
            order_config.metrics_addr.port(),
            proto::order::order_server::SERVICE_NAME,
        ),
        (
            "inventory-srv",
            inventory_config.grpc_addr.port(),
            inventory_config.metrics_addr.port(),
            proto::inventory::inventory_server::SERVICE_NAME,
        ),
    ] {
        let deployment = find(&objects, "Deployment", name);
        let container = container(deployment);
        let ports: BTreeMap<&str, i64> = sequence(container.get("ports"))
            .into_iter()
            .map(|p| {
                (
                    str_at(p, &["name"]).expect("named port"),
                    int_at(p, &["containerPort"]).expect("containerPort"),
                )
            })
            .collect();
        assert_eq!(
            ports.get("grpc"),
            Some(&i64::from(grpc)),
            "{name} grpc port"
        );
        assert_eq!(
            ports.get("metrics"),
            Some(&i64::from(metrics)),
            "{name} metrics port"
        );

        // Ready while the service itself is SERVING (NOT_SERVING from the first moment of
        // a shutdown); alive while the server answers (the overall status stays SERVING
        // during the drain, so a draining pod is not restarted).
        let probe = |which: &str| {
            let probe = container
                .get(which)
                .unwrap_or_else(|| panic!("{name} has a {which}"));
            (
                int_at(probe, &["grpc", "port"]),
                str_at(probe, &["grpc", "service"])
                    .unwrap_or_default()
                    .to_owned(),
            )
        };
        assert_eq!(
            probe("readinessProbe"),
            (Some(i64::from(grpc)), service.to_owned())
        );
        assert_eq!(
            probe("livenessProbe"),
            (Some(i64::from(grpc)), String::new())
        );
        assert_eq!(
            probe("startupProbe"),
            (Some(i64::from(grpc)), String::new())
        );

        let template = deployment
            .get("spec")
            .and_then(|s| s.get("template"))
            .expect("template");
        assert_eq!(
            str_at(template, &["metadata", "annotations", "prometheus.io/port"]),
            Some(metrics.to_string().as_str()),
            "{name} is scraped on its metrics port"
        );
        let service_object = find(&objects, "Service", name);
        let service_ports: BTreeSet<(i64, String)> =
            sequence(service_object.get("spec").and_then(|s| s.get("ports")))
                .into_iter()
                .map(|p| {
                    (
                        int_at(p, &["port"]).expect("port"),
                        str_at(p, &["targetPort"])
                            .expect("a named targetPort")
                            .to_owned(),
                    )
                })
                .collect();
        assert!(
            service_ports.contains(&(i64::from(grpc), "grpc".to_owned())),
            "{name}"
        );
        let selector = mapping(service_object.get("spec").and_then(|s| s.get("selector")));
        let pod_labels = mapping(template.get("metadata").and_then(|m| m.get("labels")));
        assert!(
            !selector.is_empty() && selector.iter().all(|(k, v)| pod_labels.get(k) == Some(v)),
            "Service {name} selects the Deployment's pods"
        );
    }
}

#[test]
fn one_replica_of_each_keeps_serving_through_rollouts_and_drains() {
    let objects = rendered();
    let order_config: order_srv::config::Config = parse_with(&environment(
        &objects,
        find(&objects, "Deployment", "order-srv"),
    ));
    for name in ["order-srv", "inventory-srv"] {
        let deployment = find(&objects, "Deployment", name);
        let replicas = int_at(deployment, &["spec", "replicas"]).expect("replicas");
        assert!(replicas >= 2, "{name}: {replicas} replicas");
        assert_eq!(
            int_at(
                deployment,
                &["spec", "strategy", "rollingUpdate", "maxUnavailable"]
            ),
            Some(0),
            "{name}: a rollout starts a new pod before it stops an old one"
        );
        let pdb = find(&objects, "PodDisruptionBudget", name);
        let min_available = int_at(pdb, &["spec", "minAvailable"]).expect("minAvailable");
        assert!(
            (1..replicas).contains(&min_available),
            "{name}: minAvailable {min_available}"
        );
        let pod_labels = mapping(
            deployment
                .get("spec")
                .and_then(|s| s.get("template"))
                .and_then(|t| t.get("metadata"))
                .and_then(|m| m.get("labels")),
        );
        let selects = mapping(
            pdb.get("spec")
                .and_then(|s| s.get("selector"))
                .and_then(|s| s.get("matchLabels")),
        );
        assert!(
            !selects.is_empty() && selects.iter().all(|(k, v)| pod_labels.get(k) == Some(v)),
            "the budget of {name} covers its pods"
        );
        let spread =
            sequence(pod_spec(deployment).and_then(|s| s.get("topologySpreadConstraints")));
        assert!(
            spread
                .iter()
                .any(|c| str_at(c, &["topologyKey"]) == Some("kubernetes.io/hostname")),
            "{name} spreads over nodes"
        );

        // The kubelet waits preStop, then SIGTERM; the process must be able to finish
        // its drain before the grace period ends.
        let pre_stop = int_at(
            container(deployment),
            &["lifecycle", "preStop", "sleep", "seconds"],
        )
        .expect("preStop sleep");
        let grace = int_at(
            pod_spec(deployment).expect("pod"),
            &["terminationGracePeriodSeconds"],
        )
        .expect("terminationGracePeriodSeconds");
        let handlers = i64::try_from(observe::grpc::HANDLER_WITHIN.as_secs()).expect("secs");
        let drain = if name == "order-srv" {
            // A CreateOrder's work may run to its budget plus 10 s, then the producers
            // get 10 s to go offline.
            let budget = i64::try_from(order_config.create_order_budget.as_secs()).expect("secs");
            (budget + 10).max(handlers) + 10
        } else {
            handlers + 10
        };
        assert!(
            grace >= pre_stop + drain,
            "{name}: grace {grace} s < preStop {pre_stop} s + drain {drain} s"
        );
    }
}

#[test]
fn nothing_assumes_one_host() {
    for object in rendered() {
        let Some(pod) = pod_spec(&object) else {
            continue;
        };
        let name = name_of(&object);
        for key in ["hostNetwork", "hostPID", "nodeName"] {
            assert!(pod.get(key).is_none(), "{name} sets {key}");
        }
        for volume in sequence(pod.get("volumes")) {
            assert!(
                volume.get("hostPath").is_none(),
                "{name} mounts a host path"
            );
        }
        for container in sequence(pod.get("containers")) {
            for port in sequence(container.get("ports")) {
                assert!(port.get("hostPort").is_none(), "{name} takes a host port");
            }
        }
    }
}

/// What the manifests and docker-compose.yml both say is said the same way.
#[test]
fn what_compose_and_the_manifests_share_agrees() {
    let objects = rendered();
    let compose: Value = serde_yaml::from_str(&repo_file("docker-compose.yml")).expect("YAML");
    let compose_service = |name: &str| {
        compose
            .get("services")
            .and_then(|s| s.get(name))
            .unwrap_or_else(|| panic!("compose has no {name}"))
            .clone()
    };
    let compose_env = |name: &str| -> BTreeMap<String, String> {
        mapping(compose_service(name).get("environment"))
            .into_iter()
            .filter_map(|(k, v)| Some((k.as_str()?.to_owned(), v.as_str()?.to_owned())))
            .collect()
    };

    // Topic creation: the same command, the same image.
    let job = find(&objects, "Job", "mq-init");
    let job_command = |command: Vec<&Value>| {
        command
            .iter()
            .filter_map(|v| v.as_str())
            .collect::<Vec<_>>()
            .join(" ")
    };
    let k8s_init = job_command(sequence(container(job).get("command")));
    let compose_init = job_command(sequence(compose_service("mq-init").get("command")))
        .replace("namesrv:9876", "\"$NAMESRV_ADDR\"");
    assert_eq!(
        k8s_init, compose_init,
        "the Job creates the topics compose's mq-init creates"
    );
    for topic in testkit::SYSTEM_TOPICS {
        assert!(
            k8s_init.contains(&format!("-t {topic} ")),
            "mq-init creates {topic}"
        );
    }
    assert_eq!(
        str_at(container(job), &["image"]),
        str_at(&compose_service("mq-init"), &["image"]),
        "one RocketMQ release for both"
    );

    // Settings both set to something else than the binary's default.
    for (compose_name, deployment) in [
        ("order_srv", "order-srv"),
        ("inventory_srv", "inventory-srv"),
    ] {
        let k8s = environment(&objects, find(&objects, "Deployment", deployment));
        let compose = compose_env(compose_name);
        for (key, value) in &compose {
            let differs_by_nature =
                key.ends_with("DATABASE_URL") || key.ends_with("ENDPOINT") || key == "NAMESRV_ADDR";
            if differs_by_nature {
                // Host names differ (compose's service names vs the cluster's); ports don't.
                let port = |url: &str| url.rsplit(':').next().map(str::to_owned);
                if let Some(k8s_value) = k8s.get(key) {
                    assert_eq!(port(k8s_value), port(value), "{compose_name} {key}: port");
                }
                continue;
            }
            assert_eq!(
                k8s.get(key),
                Some(value),
                "{compose_name} {key}: compose and k8s differ"
            );
        }
    }
}

#[test]
fn the_gateway_reaches_both_services_and_is_probed_over_http() {
    let objects = rendered();
    let gateway = find(&objects, "Deployment", "gateway");
    assert_eq!(
        sequence(container(gateway).get("command")),
        [&Value::from("gateway")]
    );
    let env = environment(&objects, gateway);
    for key in [
        "GATEWAY_HTTP_ADDR",
        "ORDER_ENDPOINT",
        "INVENTORY_ENDPOINT",
        "GATEWAY_JWT_SECRET",
        "GATEWAY_PAYMENT_SECRET",
    ] {
        assert!(env.contains_key(key), "the gateway needs {key} set");
    }
    assert!(
        !env.contains_key("GATEWAY_DEV_TOKENS"),
        "dev tokens stay off outside a demo"
    );
    let config: gateway::config::Config = parse_with(&env);
    let (order, inventory) = service_configs(&objects);
    assert_points_at(
        &config.order.order_endpoint,
        "order-srv",
        order.grpc_addr.port(),
    );
    assert_points_at(
        &config.inventory.inventory_endpoint,
        "inventory-srv",
        inventory.grpc_addr.port(),
    );
    assert!(config.http_addr.ip().is_unspecified());

    let container = container(gateway);
    let http_port = sequence(container.get("ports"))
        .into_iter()
        .find(|p| str_at(p, &["name"]) == Some("http"))
        .and_then(|p| int_at(p, &["containerPort"]));
    assert_eq!(http_port, Some(i64::from(config.http_addr.port())));
    for (probe, path) in [("readinessProbe", "/readyz"), ("livenessProbe", "/healthz")] {
        let probe = container.get(probe).expect("probed");
        assert_eq!(str_at(probe, &["httpGet", "path"]), Some(path));
        assert_eq!(str_at(probe, &["httpGet", "port"]), Some("http"));
    }
    let service = find(&objects, "Service", "gateway");
    let target = sequence(service.get("spec").and_then(|s| s.get("ports")))
        .into_iter()
        .find_map(|p| str_at(p, &["targetPort"]));
    assert_eq!(target, Some("http"));

    // Rollouts and drains, as for the services: the drain fits in the grace period.
    assert!(int_at(gateway, &["spec", "replicas"]).is_some_and(|r| r >= 2));
    assert_eq!(
        int_at(
            gateway,
            &["spec", "strategy", "rollingUpdate", "maxUnavailable"]
        ),
        Some(0)
    );
    let pre_stop =
        int_at(container, &["lifecycle", "preStop", "sleep", "seconds"]).expect("preStop");
    let grace = int_at(
        pod_spec(gateway).expect("pod"),
        &["terminationGracePeriodSeconds"],
    )
    .expect("grace");
    let drain = i64::try_from(gateway::startup::DRAIN_WITHIN.as_secs()).expect("secs");
    assert!(
        grace >= pre_stop + drain,
        "grace {grace} < {pre_stop} + {drain}"
    );
    let pdb = find(&objects, "PodDisruptionBudget", "gateway");
    assert_eq!(int_at(pdb, &["spec", "minAvailable"]), Some(1));
}
