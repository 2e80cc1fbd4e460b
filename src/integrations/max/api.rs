//! MAX's contract (see [`crate::openapi`]).

use super::schemas;
use crate::openapi::{Api, At, Body, Content, Link, Method, OK_JSON, Param, Route, Scheme, SchemeKind, Success};

const MAX: &[&str] = &["maxToken"];

const CONVERSATION: Param = Param {
    name: "X-Conversation-Id",
    at: At::Header,
    required: false,
    schema: r#"{"type": "string", "pattern": "^[A-Za-z0-9][A-Za-z0-9._:@+~-]{0,127}$"}"#,
    description: "carried into the audit log and the logs",
};

const READ: &[Param] = &[
    CONVERSATION,
    Param {
        name: "Cache-Control",
        at: At::Header,
        required: false,
        schema: r#"{"type": "string"}"#,
        description: "no-cache: skip the cache (the answer is cached all the same)",
    },
];

/// A write: the partner's answer in time, else 202 with the operation to poll.
const WRITTEN: &[Success] = &[
    Success {
        status: 200,
        description: "the partner's answer",
        content: Content::Json,
    },
    Success {
        status: 201,
        description: "the partner's answer: created",
        content: Content::Json,
    },
    Success {
        status: 202,
        description: "not answered within MAX_SYNC_WAIT_MS: {operation_id, state, href}",
        content: Content::Json,
    },
];

const fn write(path: &'static str, summary: &'static str, body: Body, params: &'static [Param]) -> Route {
    Route {
        method: Method::Post,
        path,
        summary,
        security: MAX,
        body,
        params,
        ok: WRITTEN,
    }
}

const fn read(path: &'static str, summary: &'static str, params: &'static [Param]) -> Route {
    Route {
        method: Method::Get,
        path,
        summary,
        security: MAX,
        body: Body::None,
        params,
        ok: OK_JSON,
    }
}

pub const API: Api = Api {
    routes: &[
        write("/max/tickets", "create_ticket (ticketing)", Body::Json(&schemas::TICKET), &[CONVERSATION]),
        read("/max/tickets/{id}", "get_ticket_status (ticketing), cached 300 s", READ),
        write(
            "/max/tickets/{id}/comments",
            "add_comment (ticketing)",
            Body::Json(&schemas::COMMENT),
            &[CONVERSATION],
        ),
        read("/max/transactions/{id}", "get_transaction_status (transaction_status), cached 120 s", READ),
        read(
            "/max/customers/{id}/transactions",
            "get_transaction_history (transaction_status), cached 300 s",
            &[
                CONVERSATION,
                Param {
                    name: "limit",
                    at: At::Query,
                    required: false,
                    schema: r#"{"type": "integer", "minimum": 1, "maximum": 100}"#,
                    description: "default 10",
                },
            ],
        ),
        write(
            "/max/transactions/drafts",
            "create_draft_transaction (transaction_create)",
            Body::Json(&schemas::DRAFT),
            &[CONVERSATION],
        ),
        write(
            "/max/transactions/drafts/{id}/commit",
            "commit_transaction (transaction_create): once per Idempotency-Key",
            Body::None,
            &[
                CONVERSATION,
                Param {
                    name: "Idempotency-Key",
                    at: At::Header,
                    required: true,
                    schema: r#"{"type": "string", "minLength": 1, "maxLength": 255}"#,
                    description: "sent to the sales system too; another draft under it is 409",
                },
            ],
        ),
        write(
            "/max/transactions/drafts/{id}/cancel",
            "cancel_draft (transaction_create)",
            Body::None,
            &[CONVERSATION],
        ),
        read("/max/operations/{id}", "A write's state and, once it ended, its answer", &[]),
        Route {
            method: Method::Put,
            path: "/max/conversations/{id}",
            summary: "Registers a conversation: its agent, and the transaction it is about",
            security: MAX,
            body: Body::Json(&schemas::CONVERSATION),
            params: &[],
            ok: OK_JSON,
        },
        read("/max/health", "Each adapter's breaker: closed, open or half_open", &[]),
        Route {
            method: Method::Get,
            path: "/max/ws",
            summary: "WebSocket: transaction.updated events for the agent's conversations",
            security: MAX,
            body: Body::None,
            params: &[Param {
                name: "agent",
                at: At::Query,
                required: true,
                schema: r#"{"type": "string", "minLength": 1, "maxLength": 254}"#,
                description: "the agent (assigned_to of their conversations)",
            }],
            ok: &[Success {
                status: 101,
                description: "switching to WebSocket; the first frame is {\"event\": \"subscribed\"}",
                content: Content::Upgrade,
            }],
        },
        Route {
            method: Method::Post,
            path: "/webhooks/transaction_updated",
            summary: "A transaction changed: invalidates the cache, pushes to the agents",
            security: &["maxSignature"],
            body: Body::Json(&schemas::TRANSACTION_UPDATED),
            params: &[],
            ok: &[Success {
                status: 202,
                description: "accepted",
                content: Content::Json,
            }],
        },
    ],
    security: &[
        Scheme {
            name: "maxToken",
            kind: SchemeKind::Bearer,
            description: "MAX_API_TOKEN",
        },
        Scheme {
            name: "maxSignature",
            kind: SchemeKind::Header("X-MAX-Signature"),
            description: "hex HMAC-SHA256(MAX_WEBHOOK_SECRET, raw body)",
        },
    ],
    links: &[
        Link {
            from: (Method::Post, "/max/tickets"),
            status: 201,
            to: (Method::Get, "/max/tickets/{id}"),
            parameters: &[("id", "$response.body#/ticket_id")],
        },
        Link {
            from: (Method::Post, "/max/tickets"),
            status: 201,
            to: (Method::Post, "/max/tickets/{id}/comments"),
            parameters: &[("id", "$response.body#/ticket_id")],
        },
        Link {
            from: (Method::Post, "/max/tickets"),
            status: 201,
            to: (Method::Get, "/max/operations/{id}"),
            parameters: &[("id", "$response.body#/operation_id")],
        },
        Link {
            from: (Method::Post, "/max/transactions/drafts"),
            status: 201,
            to: (Method::Post, "/max/transactions/drafts/{id}/commit"),
            parameters: &[("id", "$response.body#/draft_id")],
        },
        Link {
            from: (Method::Post, "/max/transactions/drafts"),
            status: 201,
            to: (Method::Post, "/max/transactions/drafts/{id}/cancel"),
            parameters: &[("id", "$response.body#/draft_id")],
        },
    ],
};
