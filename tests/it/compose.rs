//! `docker-compose.yml` and `observability/` hold together (there is no docker engine here
//! to run `docker compose config`): the YAML parses, services, dependencies, ports, mounts and
//! the hub's settings agree, and the dashboard asks only for metrics the hub records.

use std::collections::{BTreeSet, HashSet};
use std::path::Path;

use serde_yaml::Value;

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn compose() -> Value {
    let text = std::fs::read_to_string(root().join("docker-compose.yml")).unwrap();
    let mut value: Value = serde_yaml::from_str(&text).expect("docker-compose.yml parses");
    value.apply_merge().expect("merge keys resolve");
    value
}

fn services(compose: &Value) -> &serde_yaml::Mapping {
    compose["services"].as_mapping().expect("services")
}

fn text(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        other => serde_yaml::to_string(other).unwrap().trim().to_string(),
    }
}

#[test]
fn services_dependencies_ports_and_mounts_agree() {
    let compose = compose();
    let services = services(&compose);
    let names: HashSet<String> = services.keys().map(text).collect();
    let volumes: HashSet<String> = compose["volumes"]
        .as_mapping()
        .unwrap()
        .keys()
        .map(text)
        .collect();
    let mut published = HashSet::new();
    for (name, service) in services {
        let name = text(name);
        assert!(service.get("image").is_some(), "{name} has an image");
        if let Some(depends) = service.get("depends_on") {
            let listed: Vec<String> = match depends {
                Value::Sequence(list) => list.iter().map(text).collect(),
                Value::Mapping(map) => map.keys().map(text).collect(),
                other => panic!("{name}: depends_on {other:?}"),
            };
            for dependency in listed {
                assert!(
                    names.contains(&dependency),
                    "{name} depends on unknown {dependency}"
                );
            }
        }
        for port in service["ports"].as_sequence().into_iter().flatten() {
            let host = text(port).split(':').next().unwrap().to_string();
            assert!(
                published.insert(host.clone()),
                "host port {host} published twice"
            );
        }
        for mount in service["volumes"].as_sequence().into_iter().flatten() {
            let source = text(mount).split(':').next().unwrap().to_string();
            if source.starts_with("./") {
                assert!(
                    root().join(&source).exists(),
                    "{name} mounts {source}, which is missing"
                );
            } else {
                assert!(
                    volumes.contains(&source),
                    "{name} mounts undeclared volume {source}"
                );
            }
        }
    }
    // The NATS and Postgres of "Run it" listen on 4222 and 5432 on this machine.
    for taken in ["4222", "5432"] {
        assert!(
            !published.contains(taken),
            "compose publishes {taken}, which clashes"
        );
    }
    for service in ["prometheus", "grafana"] {
        assert_eq!(
            services[service]["profiles"],
            serde_yaml::from_str::<Value>("[observability]").unwrap(),
            "{service}"
        );
    }
}

#[test]
fn the_hub_gets_every_setting_it_needs_and_reaches_services_by_name() {
    let compose = compose();
    let services = services(&compose);
    let env = services["ingress"]["environment"]
        .as_mapping()
        .expect("the hub's environment");
    let set: HashSet<String> = env.keys().map(text).collect();
    let mut needed = BTreeSet::new();
    for integration in ihub::integrations::ALL {
        needed.extend(integration.secrets().iter().map(|s| s.name));
        for mock in integration.mocks {
            // Mocks listen on every interface, and the hub finds them by service name.
            let addr = text(&env[mock.addr_var]);
            assert!(addr.starts_with("0.0.0.0:"), "{} = {addr}", mock.addr_var);
            for wire in mock.wires {
                if let Some(url) = env.get(wire.var) {
                    let url = text(url);
                    let host = url
                        .split("//")
                        .nth(1)
                        .unwrap()
                        .split([':', '/'])
                        .next()
                        .unwrap();
                    assert!(
                        services.contains_key(host),
                        "{} = {url}: no service {host}",
                        wire.var
                    );
                }
            }
        }
    }
    let missing: Vec<&&str> = needed.iter().filter(|n| !set.contains(**n)).collect();
    assert!(missing.is_empty(), "compose sets none of {missing:?}");
    for (name, value) in env {
        let value = text(value);
        assert!(
            !value.contains("127.0.0.1") && !value.contains("localhost"),
            "{} = {value}: inside compose that is the container itself",
            text(name)
        );
    }
    // Prometheus scrapes where the hub serves metrics.
    let metrics_port = text(&env["METRICS_ADDR"])
        .rsplit(':')
        .next()
        .unwrap()
        .to_string();
    let prometheus: Value = serde_yaml::from_str(
        &std::fs::read_to_string(root().join("observability/prometheus.yml")).unwrap(),
    )
    .unwrap();
    let jobs = prometheus["scrape_configs"].as_sequence().unwrap();
    let ingress_target = text(&jobs[0]["static_configs"][0]["targets"][0]);
    assert_eq!(
        ingress_target,
        format!(
            "ingress:{}",
            text(&env["HTTP_ADDR"]).rsplit(':').next().unwrap()
        )
    );
    assert_eq!(text(&jobs[1]["dns_sd_configs"][0]["port"]), metrics_port);
    assert!(services.contains_key(text(&jobs[1]["dns_sd_configs"][0]["names"][0]).as_str()));
}

#[test]
fn the_dashboard_asks_only_for_metrics_the_hub_records() {
    let dashboard: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(root().join("observability/grafana/dashboards/ihub.json"))
            .unwrap(),
    )
    .expect("the dashboard is JSON");
    let recorded = std::fs::read_to_string(root().join("src/metrics.rs")).unwrap();
    let mut asked = 0;
    for panel in dashboard["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().unwrap() {
            let expr = target["expr"].as_str().unwrap();
            for word in expr.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')) {
                if word.starts_with("ihub_") || word.starts_with("integration_") {
                    let base = word
                        .trim_end_matches("_bucket")
                        .trim_end_matches("_count")
                        .trim_end_matches("_sum");
                    assert!(
                        recorded.contains(&format!("\"{base}\"")),
                        "{base} in {expr} is recorded nowhere"
                    );
                    asked += 1;
                }
            }
        }
    }
    assert!(asked >= 16, "{asked} metrics asked for");
}
