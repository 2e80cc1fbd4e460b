//! The casino's contract (see [`crate::openapi`]).

use super::schemas;
use crate::openapi::{Api, At, Body, Method, OK_JSON, Param, Route, Scheme, SchemeKind};

const PROVIDER: &[&str] = &["casinoSignature"];
const FRONT_END: &[&str] = &["casinoToken"];
const ADMIN: &[&str] = &["adminToken"];

const LIMIT: Param = Param {
    name: "limit",
    at: At::Query,
    required: false,
    schema: r#"{"type": "integer", "minimum": 1, "maximum": 1000}"#,
    description: "at most this many rows",
};

macro_rules! call {
    ($path:literal, $summary:literal, $security:expr, $schema:expr) => {
        Route {
            method: Method::Post,
            path: $path,
            summary: $summary,
            security: $security,
            body: Body::Json($schema),
            params: &[],
            ok: OK_JSON,
        }
    };
}

pub const API: Api = Api {
    routes: &[
        call!("/casino/getBalance", "The provider asks a player's balance", PROVIDER, &schemas::BALANCE),
        call!("/casino/debit", "The provider debits a bet", PROVIDER, &schemas::TRANSACTION),
        call!("/casino/credit", "The provider credits a win", PROVIDER, &schemas::TRANSACTION),
        call!("/casino/rollback", "The provider rolls a debit back", PROVIDER, &schemas::ROLLBACK),
        call!("/casino/launchGame", "The front end opens a session with the provider", FRONT_END, &schemas::LAUNCH),
        call!("/casino/simulateRound", "The front end plays the seed's scripted round", FRONT_END, &schemas::LAUNCH),
        Route {
            method: Method::Get,
            path: "/casino/ledger",
            summary: "A player's ledger entries, newest first",
            security: ADMIN,
            body: Body::None,
            params: &[
                Param {
                    name: "userId",
                    at: At::Query,
                    required: true,
                    schema: r#"{"type": "string", "minLength": 1}"#,
                    description: "the player",
                },
                LIMIT,
            ],
            ok: OK_JSON,
        },
        Route {
            method: Method::Get,
            path: "/casino/reconciliation",
            summary: "Balance against the sum of the ledger for every wallet",
            security: ADMIN,
            body: Body::None,
            params: &[LIMIT],
            ok: OK_JSON,
        },
    ],
    security: &[
        Scheme {
            name: "casinoSignature",
            kind: SchemeKind::Header("x-casino-signature"),
            description: "hex HMAC-SHA256(CASINO_SECRET, raw body)",
        },
        Scheme {
            name: "casinoToken",
            kind: SchemeKind::Bearer,
            description: "CASINO_API_TOKEN",
        },
        Scheme {
            name: "adminToken",
            kind: SchemeKind::Bearer,
            description: "ADMIN_TOKEN",
        },
    ],
    links: &[],
};
