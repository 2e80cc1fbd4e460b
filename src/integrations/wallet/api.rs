//! The wallet's contract (see [`crate::openapi`]).

use super::schemas;
use crate::openapi::{Api, At, Body, Content, Method, Param, Route, Scheme, SchemeKind, Success};

const TIMESTAMP: Param = Param {
    name: "X-Timestamp",
    at: At::Header,
    required: true,
    schema: r#"{"type": "string", "pattern": "^[0-9]{1,12}$"}"#,
    description: "unix seconds; signed with the body, within SIGNATURE_TOLERANCE_SECS",
};

const SIGNED: &[Param] = &[TIMESTAMP];

const MONEY: &[Param] = &[
    TIMESTAMP,
    Param {
        name: "Idempotency-Key",
        at: At::Header,
        required: true,
        schema: r#"{"type": "string", "minLength": 1, "maxLength": 255}"#,
        description: "the same key and body answer the same; another body 409",
    },
    Param {
        name: "Prefer",
        at: At::Header,
        required: false,
        schema: r#"{"type": "string", "pattern": "^wait=[0-9]{1,3}$"}"#,
        description: "wait=N: wait up to N seconds for the outcome (200) instead of 202",
    },
];

const ACCEPTED_OR_DONE: &[Success] = &[
    Success {
        status: 200,
        description: "the outcome (with Prefer: wait, or a replay of a finished request)",
        content: Content::Json,
    },
    Success {
        status: 202,
        description: "accepted, pending: {transaction_id, status}",
        content: Content::Json,
    },
];

pub const API: Api = Api {
    routes: &[
        Route {
            method: Method::Post,
            path: "/wallet/debit",
            summary: "The RGS debits a player's wallet at the operator",
            security: &["walletSignature"],
            body: Body::Json(&schemas::WALLET_REQUEST),
            params: MONEY,
            ok: ACCEPTED_OR_DONE,
        },
        Route {
            method: Method::Post,
            path: "/wallet/credit",
            summary: "The RGS credits a player's wallet at the operator",
            security: &["walletSignature"],
            body: Body::Json(&schemas::WALLET_REQUEST),
            params: MONEY,
            ok: ACCEPTED_OR_DONE,
        },
        Route {
            method: Method::Post,
            path: "/webhooks/incoming",
            summary: "The operator's asynchronous notification after a withdraw or deposit",
            security: &["operatorSignature"],
            body: Body::Json(&schemas::OPERATOR_CALLBACK),
            params: SIGNED,
            ok: &[Success {
                status: 202,
                description: "accepted",
                content: Content::Json,
            }],
        },
        Route {
            method: Method::Get,
            path: "/reconciliation_data",
            summary: "What the RGS was told against what the operator booked, as CSV (X-Mismatch-Count)",
            security: &["reconciliationToken"],
            body: Body::None,
            params: &[],
            ok: &[Success {
                status: 200,
                description: "CSV, streamed",
                content: Content::Csv,
            }],
        },
    ],
    security: &[
        Scheme {
            name: "walletSignature",
            kind: SchemeKind::Header("X-Signature"),
            description: "hex HMAC-SHA256(WALLET_HMAC_SECRET, X-Timestamp + \":\" + canonical JSON body)",
        },
        Scheme {
            name: "operatorSignature",
            kind: SchemeKind::Header("X-Signature"),
            description: "as walletSignature, with OPERATOR_WEBHOOK_SECRET (else WALLET_HMAC_SECRET)",
        },
        Scheme {
            name: "reconciliationToken",
            kind: SchemeKind::Bearer,
            description: "RECONCILIATION_TOKEN",
        },
    ],
    links: &[],
};
