//! The ingress's contract: an OpenAPI 3.1 document built from the code, served at
//! `GET /openapi.json`. Each integration declares its routes in an [`Api`] beside them (method,
//! path, security, the JSON Schema its handler checks the body against, parameters, what a
//! success answers); the request bodies are the very schema files the handlers validate with,
//! and every error answers the one [`ERROR`] shape. A test checks that the routes the code
//! serves and the routes declared are the same, and `.ci/run` fuzzes the document against
//! `ihub dev` with schemathesis.

use serde_json::{Map, Value, json};

use crate::schemas::Schema;

/// What an integration's ingress promises.
pub struct Api {
    pub routes: &'static [Route],
    pub security: &'static [Scheme],
    /// What a success answers that another route takes (schemathesis follows them).
    pub links: &'static [Link],
}

/// A success of `from` gives `to` its parameters: `(name, runtime expression)`, e.g.
/// `("id", "$response.body#/id")`.
pub struct Link {
    pub from: (Method, &'static str),
    pub status: u16,
    pub to: (Method, &'static str),
    pub parameters: &'static [(&'static str, &'static str)],
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Method {
    Get,
    Post,
    Put,
}

impl Method {
    pub fn as_str(self) -> &'static str {
        match self {
            Method::Get => "get",
            Method::Post => "post",
            Method::Put => "put",
        }
    }
}

pub struct Route {
    pub method: Method,
    /// As the router has it: `/orders/{id}`.
    pub path: &'static str,
    pub summary: &'static str,
    /// Security schemes, all of which a call needs.
    pub security: &'static [&'static str],
    /// The JSON body and the schema the handler checks it against.
    pub body: Body,
    pub params: &'static [Param],
    pub ok: &'static [Success],
}

pub enum Body {
    None,
    /// A JSON body the handler checks against this schema.
    Json(&'static Schema),
    /// A JSON object the handler reads itself (described by `description`).
    Object(&'static str),
}

pub struct Param {
    pub name: &'static str,
    pub at: At,
    pub required: bool,
    /// Its JSON Schema, as JSON text.
    pub schema: &'static str,
    pub description: &'static str,
}

#[derive(Clone, Copy)]
pub enum At {
    Query,
    Header,
}

pub struct Success {
    pub status: u16,
    pub description: &'static str,
    pub content: Content,
}

#[derive(Clone, Copy)]
pub enum Content {
    /// A JSON object.
    Json,
    Csv,
    Text,
    /// A WebSocket upgrade.
    Upgrade,
}

/// A security scheme an integration's routes name.
pub struct Scheme {
    pub name: &'static str,
    pub kind: SchemeKind,
    pub description: &'static str,
}

pub enum SchemeKind {
    /// `Authorization: Bearer <token>`.
    Bearer,
    /// A header carrying a key or a signature.
    Header(&'static str),
}

/// One JSON object, 200: for the common case.
pub const OK_JSON: &[Success] = &[Success {
    status: 200,
    description: "the answer",
    content: Content::Json,
}];

/// The body of every refusal and failure.
pub const ERROR: &str = "Error";

/// The hub's own routes.
pub const CORE: Api = Api {
    routes: &[
        Route {
            method: Method::Get,
            path: "/health",
            summary: "Liveness: the process answers",
            security: &[],
            body: Body::None,
            params: &[],
            ok: OK_JSON,
        },
        Route {
            method: Method::Get,
            path: "/ready",
            summary: "Readiness: NATS and Postgres reachable (503 otherwise)",
            security: &[],
            body: Body::None,
            params: &[],
            ok: OK_JSON,
        },
        Route {
            method: Method::Get,
            path: "/metrics",
            summary: "Prometheus metrics of this process",
            security: &[],
            body: Body::None,
            params: &[],
            ok: &[Success {
                status: 200,
                description: "Prometheus text",
                content: Content::Text,
            }],
        },
        Route {
            method: Method::Get,
            path: "/openapi.json",
            summary: "This document",
            security: &[],
            body: Body::None,
            params: &[],
            ok: OK_JSON,
        },
    ],
    security: &[],
    links: &[],
};

fn operation_id(method: Method, path: &str) -> String {
    format!("{}{}", method.as_str(), path.replace(['/', '{', '}'], "_"))
}

/// The path parameters of `path` (`{id}`).
fn path_params(path: &str) -> Vec<&str> {
    path.split('/')
        .filter_map(|part| part.strip_prefix('{')?.strip_suffix('}'))
        .collect()
}

/// A schema for a component: the file's schema without `$schema` and `$id` (the document's
/// dialect is JSON Schema 2020-12 already; the ids are names, not places to fetch).
fn component(schema: &Schema) -> Value {
    let mut value: Value = serde_json::from_str(schema.text()).expect("schemas are JSON");
    if let Value::Object(map) = &mut value {
        map.remove("$schema");
        map.remove("$id");
    }
    value
}

/// The component name of a schema file: `wallet/wallet-request.json` → `wallet.wallet-request`.
fn component_name(schema: &Schema) -> String {
    schema.name.trim_end_matches(".json").replace('/', ".")
}

fn operation(route: &Route, tag: &str) -> Value {
    let mut parameters: Vec<Value> = path_params(route.path)
        .into_iter()
        .map(|name| json!({"name": name, "in": "path", "required": true, "schema": {"type": "string", "minLength": 1}}))
        .collect();
    for param in route.params {
        let schema: Value = serde_json::from_str(param.schema).expect("parameter schemas are JSON");
        parameters.push(json!({
            "name": param.name,
            "in": match param.at { At::Query => "query", At::Header => "header" },
            "required": param.required,
            "schema": schema,
            "description": param.description,
        }));
    }
    let mut responses = Map::new();
    for ok in route.ok {
        let content = match ok.content {
            Content::Json => json!({"application/json": {"schema": {"type": "object"}}}),
            Content::Csv => json!({"text/csv": {"schema": {"type": "string"}}}),
            Content::Text => json!({"text/plain": {"schema": {"type": "string"}}}),
            Content::Upgrade => Value::Null,
        };
        let mut response = json!({"description": ok.description});
        if !content.is_null() {
            response["content"] = content;
        }
        responses.insert(ok.status.to_string(), response);
    }
    responses.insert(
        "default".into(),
        json!({
            "description": "a refusal (4xx) or a failure (5xx), as JSON",
            "content": {"application/json": {"schema": {"$ref": format!("#/components/schemas/{ERROR}")}}},
        }),
    );
    let mut op = json!({
        "summary": route.summary,
        "operationId": operation_id(route.method, route.path),
        "tags": [tag],
        "parameters": parameters,
        "responses": responses,
        "security": if route.security.is_empty() {
            json!([])
        } else {
            let all: Map<String, Value> = route.security.iter().map(|s| (s.to_string(), json!([]))).collect();
            json!([all])
        },
    });
    match &route.body {
        Body::None => {}
        Body::Json(schema) => {
            op["requestBody"] = json!({
                "required": true,
                "content": {"application/json": {"schema": {"$ref": format!("#/components/schemas/{}", component_name(schema))}}},
            });
        }
        Body::Object(description) => {
            op["requestBody"] = json!({
                "required": false,
                "description": description,
                "content": {"application/json": {"schema": {"type": "object"}}},
            });
        }
    }
    op
}

/// The document for `apis` (each with its tag), the core's routes first.
pub fn document(apis: &[(&str, &Api)]) -> Value {
    let mut paths = Map::new();
    let mut schemas = Map::new();
    let mut schemes = Map::new();
    schemas.insert(
        ERROR.into(),
        json!({
            "type": "object",
            "required": ["error"],
            "properties": {
                "error": {"type": "string", "description": "a code to act on, e.g. invalid_body"},
                "message": {"type": "string", "description": "what is wrong, and what to do"},
                "details": {"type": "array", "items": {"type": "string"}},
            },
        }),
    );
    for (tag, api) in std::iter::once(&("hub", &CORE)).chain(apis.iter()) {
        for route in api.routes {
            let item = paths
                .entry(route.path.to_string())
                .or_insert_with(|| json!({}));
            item[route.method.as_str()] = operation(route, tag);
            if let Body::Json(schema) = route.body {
                schemas.insert(component_name(schema), component(schema));
            }
        }
        for scheme in api.security {
            let value = match scheme.kind {
                SchemeKind::Bearer => {
                    json!({"type": "http", "scheme": "bearer", "description": scheme.description})
                }
                SchemeKind::Header(header) => {
                    json!({"type": "apiKey", "in": "header", "name": header, "description": scheme.description})
                }
            };
            schemes.insert(scheme.name.to_string(), value);
        }
    }
    for (_, api) in apis {
        for link in api.links {
            let (method, path) = link.from;
            let response = &mut paths[path][method.as_str()]["responses"][link.status.to_string()];
            assert!(
                response.is_object(),
                "a link from an undocumented answer: {path} {}",
                link.status
            );
            let parameters: Map<String, Value> = link
                .parameters
                .iter()
                .map(|(name, expression)| (name.to_string(), json!(expression)))
                .collect();
            let (to_method, to_path) = link.to;
            let name = operation_id(to_method, to_path);
            response["links"][&name] = json!({"operationId": name, "parameters": parameters});
        }
    }
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "ihub",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "The integration hub's HTTP ingress. Every refusal is JSON ({error, message, details}); bodies are at most 256 KiB (413).",
        },
        "paths": paths,
        "components": {"schemas": schemas, "securitySchemes": schemes},
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_parameters_come_from_the_template() {
        assert_eq!(path_params("/max/tickets/{id}/comments"), ["id"]);
        assert!(path_params("/orders").is_empty());
    }
}
