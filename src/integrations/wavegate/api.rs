//! WaveGate's contract (see [`crate::openapi`]).

use super::schemas;
use crate::openapi::{Api, At, Body, Content, Link, Method, OK_JSON, Param, Route, Scheme, SchemeKind, Success};

const PARTNER: &[&str] = &["partnerId", "partnerToken"];

const LIMIT: Param = Param {
    name: "limit",
    at: At::Query,
    required: false,
    schema: r#"{"type": "integer", "minimum": 1, "maximum": 100}"#,
    description: "a page of at most this many (default 20)",
};

pub const API: Api = Api {
    routes: &[
        Route {
            method: Method::Post,
            path: "/orders",
            summary: "An OTA partner posts an order; the hub tickets it and calls the partner back",
            security: PARTNER,
            body: Body::Json(&schemas::ORDER_REQUEST),
            params: &[Param {
                name: "Idempotency-Key",
                at: At::Header,
                required: false,
                schema: r#"{"type": "string", "minLength": 1, "maxLength": 255}"#,
                description: "optional: (partner, external_order_id) is always claimed; with a key, (partner, key) too",
            }],
            ok: &[Success {
                status: 201,
                description: "the order (also for a repeat of the same order)",
                content: Content::Json,
            }],
        },
        Route {
            method: Method::Get,
            path: "/orders",
            summary: "The calling partner's orders, newest first",
            security: PARTNER,
            body: Body::None,
            params: &[
                LIMIT,
                Param {
                    name: "before",
                    at: At::Query,
                    required: false,
                    schema: r#"{"type": "string", "format": "uuid"}"#,
                    description: "the next_before of the previous page",
                },
            ],
            ok: OK_JSON,
        },
        Route {
            method: Method::Get,
            path: "/orders/{id}",
            summary: "One of the partner's orders in full: items, tickets, jobs and their attempts",
            security: PARTNER,
            body: Body::None,
            params: &[],
            ok: OK_JSON,
        },
        Route {
            method: Method::Get,
            path: "/admin/orders",
            summary: "Orders of every partner by status, age or stuck time",
            security: &["adminToken"],
            body: Body::None,
            params: &[
                Param {
                    name: "status",
                    at: At::Query,
                    required: false,
                    schema: r#"{"type": "string"}"#,
                    description: "comma-separated pipeline statuses",
                },
                Param {
                    name: "partner_id",
                    at: At::Query,
                    required: false,
                    schema: r#"{"type": "string"}"#,
                    description: "one partner",
                },
                Param {
                    name: "since",
                    at: At::Query,
                    required: false,
                    schema: r#"{"type": "string", "format": "date-time"}"#,
                    description: "created at or after (RFC 3339)",
                },
                Param {
                    name: "stuck_secs",
                    at: At::Query,
                    required: false,
                    schema: r#"{"type": "integer", "minimum": 0}"#,
                    description: "orders in flight that have not moved for this many seconds",
                },
                LIMIT,
            ],
            ok: OK_JSON,
        },
    ],
    security: &[
        Scheme {
            name: "partnerId",
            kind: SchemeKind::Header("X-Partner-Id"),
            description: "the partner's id",
        },
        Scheme {
            name: "partnerToken",
            kind: SchemeKind::Header("X-Partner-Token"),
            description: "the partner's token (stored hashed)",
        },
        Scheme {
            name: "adminToken",
            kind: SchemeKind::Bearer,
            description: "ADMIN_TOKEN",
        },
    ],
    links: &[Link {
        from: (Method::Post, "/orders"),
        status: 201,
        to: (Method::Get, "/orders/{id}"),
        parameters: &[("id", "$response.body#/id")],
    }],
};
