//! NewStore's contract (see [`crate::openapi`]).

use super::domain::schemas;
use crate::openapi::{Api, At, Body, Content, Method, OK_JSON, Param, Route, Scheme, SchemeKind, Success};

const ACCEPTED: &[Success] = &[Success {
    status: 202,
    description: "{event_id, status}: accepted, duplicate or ignored",
    content: Content::Json,
}];

const TENANT: &[Param] = &[Param {
    name: "tenant",
    at: At::Query,
    required: false,
    schema: r#"{"type": "string"}"#,
    description: "the tenant (default: the default tenant)",
}];

pub const API: Api = Api {
    routes: &[
        Route {
            method: Method::Post,
            path: "/webhooks/newstore",
            summary: "A NewStore webhook event of the default tenant",
            security: &["newstoreSignature"],
            body: Body::Json(&schemas::ENVELOPE),
            params: &[],
            ok: ACCEPTED,
        },
        Route {
            method: Method::Post,
            path: "/webhooks/newstore/{tenant}",
            summary: "A NewStore webhook event of a tenant (NEWSTORE_TENANTS_JSON)",
            security: &["newstoreSignature"],
            body: Body::Json(&schemas::ENVELOPE),
            params: &[],
            ok: ACCEPTED,
        },
        Route {
            method: Method::Post,
            path: "/webhooks/newstore/simulate",
            summary: "A realistic signed event sent through the same path (NEWSTORE_SIMULATE=1; 404 otherwise)",
            security: &[],
            body: Body::Object("{name?: order.opened | order.completed | order.cancelled | return.processed, order_id?}"),
            params: &[],
            ok: ACCEPTED,
        },
        Route {
            method: Method::Get,
            path: "/newstore/events/{id}",
            summary: "What became of an event",
            security: &["adminToken"],
            body: Body::None,
            params: TENANT,
            ok: OK_JSON,
        },
        Route {
            method: Method::Get,
            path: "/newstore/orders/{order_id}",
            summary: "An order's events and what was sent to Hail",
            security: &["adminToken"],
            body: Body::None,
            params: TENANT,
            ok: OK_JSON,
        },
    ],
    security: &[
        Scheme {
            name: "newstoreSignature",
            kind: SchemeKind::Header("X-NewStore-Signature"),
            description: "hex HMAC-SHA256(the tenant's webhook secret, raw body)",
        },
        Scheme {
            name: "adminToken",
            kind: SchemeKind::Bearer,
            description: "ADMIN_TOKEN",
        },
    ],
    links: &[],
};
