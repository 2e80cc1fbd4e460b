//! The OpenAPI document and the code agree: every route the code serves is in the document
//! with each of its methods, and nothing else is; request bodies are the schema files the
//! handlers check; every security requirement names a scheme; the ingress serves it.

use std::collections::BTreeSet;
use std::path::Path;

use serde_json::Value;

use crate::support::Hub;

/// Every `.route("path", get(…).post(…))` in `dir`, as (method, path).
fn served_in(dir: &Path, found: &mut BTreeSet<(String, String)>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let name = path.to_string_lossy().to_string();
        // The partner mocks and the chaos rig serve other things; ssrf.rs routes only its tests.
        if name.contains("/mocks") || name.contains("/chaos") || name.ends_with("ssrf.rs") {
            continue;
        }
        if path.is_dir() {
            served_in(&path, found);
            continue;
        }
        if path.extension().is_none_or(|e| e != "rs") {
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap();
        let mut rest = text.as_str();
        while let Some(at) = rest.find(".route(") {
            rest = &rest[at + ".route(".len()..];
            let call: String = {
                let mut depth = 1;
                let mut end = 0;
                for (i, c) in rest.char_indices() {
                    match c {
                        '(' => depth += 1,
                        ')' => depth -= 1,
                        _ => {}
                    }
                    if depth == 0 {
                        end = i;
                        break;
                    }
                }
                rest[..end].to_string()
            };
            let Some(route) = call
                .trim_start()
                .strip_prefix('"')
                .and_then(|r| r.split('"').next())
            else {
                continue;
            };
            for method in ["get", "post", "put", "delete", "patch"] {
                let calls = call.match_indices(&format!("{method}(")).any(|(i, _)| {
                    i == 0
                        || !call.as_bytes()[i - 1].is_ascii_alphanumeric()
                            && call.as_bytes()[i - 1] != b'_'
                });
                if calls {
                    found.insert((method.to_string(), route.to_string()));
                }
            }
        }
    }
}

fn documented(document: &Value) -> BTreeSet<(String, String)> {
    let mut found = BTreeSet::new();
    for (path, item) in document["paths"].as_object().unwrap() {
        for method in item.as_object().unwrap().keys() {
            found.insert((method.clone(), path.clone()));
        }
    }
    found
}

#[test]
fn every_route_served_is_documented_and_nothing_else() {
    let mut served = BTreeSet::new();
    served_in(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("src"),
        &mut served,
    );
    // Served by the ingress's own router, outside a `.route(` literal.
    served.insert(("get".into(), "/openapi.json".into()));
    let document = ihub::startup::contract(ihub::integrations::ALL);
    let documented = documented(&document);
    let undocumented: Vec<_> = served.difference(&documented).collect();
    let unserved: Vec<_> = documented.difference(&served).collect();
    assert!(
        undocumented.is_empty(),
        "served, not in the document: {undocumented:?}"
    );
    assert!(
        unserved.is_empty(),
        "in the document, not served: {unserved:?}"
    );
    assert!(
        served.len() >= 38,
        "{} routes found: is the scan right?",
        served.len()
    );
}

#[test]
fn bodies_are_the_schema_files_and_security_names_schemes() {
    let document = ihub::startup::contract(ihub::integrations::ALL);
    assert_eq!(document["openapi"], "3.1.0");
    let components = &document["components"]["schemas"];
    let schemes = document["components"]["securitySchemes"]
        .as_object()
        .unwrap();
    for (path, item) in document["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            let what = format!("{method} {path}");
            for requirement in op["security"].as_array().unwrap() {
                for scheme in requirement.as_object().unwrap().keys() {
                    assert!(schemes.contains_key(scheme), "{what}: no scheme {scheme}");
                }
            }
            assert!(
                op["responses"]["default"].is_object(),
                "{what}: errors documented"
            );
            if let Some(reference) =
                op["requestBody"]["content"]["application/json"]["schema"]["$ref"].as_str()
            {
                let name = reference.trim_start_matches("#/components/schemas/");
                let file = format!("{}.json", name.replace('.', "/"));
                let mut expected: Value = serde_json::from_str(
                    &std::fs::read_to_string(
                        Path::new(env!("CARGO_MANIFEST_DIR"))
                            .join("schemas")
                            .join(&file),
                    )
                    .unwrap(),
                )
                .unwrap();
                expected.as_object_mut().unwrap().remove("$schema");
                expected.as_object_mut().unwrap().remove("$id");
                assert_eq!(
                    components[name], expected,
                    "{what}: the body is schemas/{file}"
                );
            }
            // Path parameters are declared.
            for part in path.split('/').filter(|p| p.starts_with('{')) {
                let name = part.trim_matches(['{', '}']);
                assert!(
                    op["parameters"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .any(|p| p["name"] == name && p["in"] == "path"),
                    "{what}: {name}"
                );
            }
        }
    }
}

#[tokio::test]
async fn the_ingress_serves_the_document_of_what_it_runs() {
    let hub = Hub::start(crate::max::options()).await;
    let served: Value = hub
        .http
        .get(format!("{}/openapi.json", hub.url))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let max = ihub::integrations::select(&["max".to_string()]).unwrap();
    assert_eq!(served, ihub::startup::contract(&max));
    assert!(served["paths"]["/max/tickets"]["post"].is_object());
    assert!(
        served["paths"].get("/orders").is_none(),
        "only what this ingress serves"
    );
    hub.stop().await;
}
