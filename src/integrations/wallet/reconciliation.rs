//! `GET /reconciliation_data`: compares what the RGS was told (`GET` on its webhook URL) with
//! what the operator booked (`GET /v2/transactions`), one CSV row per transaction.

use std::collections::BTreeMap;

use anyhow::Context as _;
use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::{Deserialize, Serialize};

use super::config::RECONCILIATION_TOKEN;
use super::routes::WalletState;
use crate::ingress::{self, ApiError, Parent};
use crate::money::{Currency, parse_major};

pub fn router() -> Router<WalletState> {
    Router::new().route("/reconciliation_data", get(reconciliation))
}

/// What the RGS lists per webhook (fields we compare; the rest is ignored).
#[derive(Debug, Clone, Deserialize)]
pub struct RgsEntry {
    pub transaction_id: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub status: String,
    pub amount: i64,
    pub currency: String,
}

/// What the operator lists per transaction.
#[derive(Debug, Clone, Deserialize)]
pub struct OperatorEntry {
    pub transaction_id: String,
    pub external_transaction_id: String,
    #[serde(rename = "type")]
    pub operation: String,
    pub amount: String,
    pub currency: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Row {
    pub transaction_id: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub currency: String,
    /// `completed`, `rejected`, `failed`, or `missing`.
    pub rgs_status: String,
    pub rgs_amount_minor: Option<i64>,
    /// `booked` or `missing`.
    pub operator_status: String,
    pub operator_amount_minor: Option<i64>,
    pub operator_transaction_id: String,
    /// `match`, or what differs: `missing_at_operator`, `missing_at_rgs`, `amount_mismatch`,
    /// `type_mismatch`, `booked_but_not_completed`.
    pub result: String,
}

impl Row {
    pub fn is_mismatch(&self) -> bool {
        self.result != "match"
    }
}

/// One row per transaction id seen on either side, ordered by id (ids are time-ordered).
/// The RGS's latest webhook per transaction is its state.
pub fn reconcile(rgs: &[RgsEntry], operator: &[OperatorEntry]) -> Vec<Row> {
    let mut latest: BTreeMap<&str, &RgsEntry> = BTreeMap::new();
    for entry in rgs {
        latest.insert(entry.transaction_id.as_str(), entry);
    }
    let mut booked: BTreeMap<&str, &OperatorEntry> = BTreeMap::new();
    for entry in operator {
        booked
            .entry(entry.external_transaction_id.as_str())
            .or_insert(entry);
    }
    let mut ids: Vec<&str> = latest.keys().chain(booked.keys()).copied().collect();
    ids.sort_unstable();
    ids.dedup();

    ids.into_iter()
        .map(|id| {
            let r = latest.get(id).copied();
            let o = booked.get(id).copied();
            let operator_amount = o.and_then(|o| {
                let currency = Currency::parse(&o.currency).ok()?;
                parse_major(&o.amount, currency).ok()
            });
            let operator_kind = o.map(|o| match o.operation.as_str() {
                "withdraw" => "debit",
                "deposit" => "credit",
                other => other,
            });
            let result = match (r, o) {
                (Some(r), Some(_)) if r.status != "completed" => "booked_but_not_completed",
                (Some(r), Some(_)) if Some(r.kind.as_str()) != operator_kind => "type_mismatch",
                (Some(r), Some(_)) if Some(r.amount) != operator_amount => "amount_mismatch",
                (Some(_), Some(_)) => "match",
                (Some(r), None) if r.status == "completed" => "missing_at_operator",
                // Rejected or failed, and nothing booked: both sides agree nothing happened.
                (Some(_), None) => "match",
                (None, _) => "missing_at_rgs",
            };
            Row {
                transaction_id: id.to_string(),
                kind: r
                    .map(|r| r.kind.clone())
                    .or(operator_kind.map(str::to_string))
                    .unwrap_or_default(),
                currency: r
                    .map(|r| r.currency.clone())
                    .or(o.map(|o| o.currency.clone()))
                    .unwrap_or_default(),
                rgs_status: r.map_or("missing".into(), |r| r.status.clone()),
                rgs_amount_minor: r.map(|r| r.amount),
                operator_status: if o.is_some() { "booked" } else { "missing" }.into(),
                operator_amount_minor: operator_amount,
                operator_transaction_id: o.map(|o| o.transaction_id.clone()).unwrap_or_default(),
                result: result.into(),
            }
        })
        .collect()
}

pub fn to_csv(rows: &[Row]) -> anyhow::Result<Vec<u8>> {
    let mut writer = csv::Writer::from_writer(Vec::new());
    if rows.is_empty() {
        // Still a header line, so an empty report is a valid CSV with known columns.
        writer.write_record([
            "transaction_id",
            "type",
            "currency",
            "rgs_status",
            "rgs_amount_minor",
            "operator_status",
            "operator_amount_minor",
            "operator_transaction_id",
            "result",
        ])?;
    }
    for row in rows {
        writer.serialize(row)?;
    }
    Ok(writer.into_inner()?)
}

#[derive(Deserialize)]
struct RgsList {
    webhooks: Vec<RgsEntry>,
}

#[derive(Deserialize)]
struct OperatorList {
    transactions: Vec<OperatorEntry>,
}

async fn fetch<T: serde::de::DeserializeOwned>(
    http: &reqwest::Client,
    url: &str,
) -> anyhow::Result<T> {
    http.get(url)
        .send()
        .await
        .with_context(|| format!("{url} not reachable"))?
        .error_for_status()
        .with_context(|| format!("{url} refused"))?
        .json()
        .await
        .with_context(|| format!("{url} answered something that is not its list"))
}

async fn reconciliation(State(app): State<WalletState>, headers: HeaderMap) -> Response {
    let span = crate::server_span!("GET", "/reconciliation_data");
    ingress::respond(span, Parent::Caller(&headers), async {
        ingress::bearer(&headers, &app.reconciliation_token, RECONCILIATION_TOKEN.name)?;
        let operator_url = format!("{}/v2/transactions", app.cfg.operator_url);
        let (rgs, operator) = tokio::join!(
            fetch::<RgsList>(&app.hub.http, &app.cfg.rgs_webhook_url),
            fetch::<OperatorList>(&app.hub.http, &operator_url),
        );
        let (rgs, operator) = match (rgs, operator) {
            (Ok(rgs), Ok(operator)) => (rgs, operator),
            (Err(err), _) | (_, Err(err)) => {
                return Err(ApiError::bad_gateway(format!("{err:#}"), err));
            }
        };
        let rows = reconcile(&rgs.webhooks, &operator.transactions);
        let mismatches = rows.iter().filter(|r| r.is_mismatch()).count();
        let csv = to_csv(&rows).map_err(ApiError::internal)?;
        Ok((
            StatusCode::OK,
            [
                (header::CONTENT_TYPE, "text/csv; charset=utf-8".to_string()),
                (
                    header::CONTENT_DISPOSITION,
                    "attachment; filename=\"reconciliation.csv\"".to_string(),
                ),
                (
                    header::HeaderName::from_static("x-mismatch-count"),
                    mismatches.to_string(),
                ),
            ],
            csv,
        )
            .into_response())
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rgs(id: &str, kind: &str, status: &str, amount: i64) -> RgsEntry {
        RgsEntry {
            transaction_id: id.into(),
            kind: kind.into(),
            status: status.into(),
            amount,
            currency: "EUR".into(),
        }
    }

    fn op(id: &str, operation: &str, amount: &str) -> OperatorEntry {
        OperatorEntry {
            transaction_id: format!("op-{id}"),
            external_transaction_id: id.into(),
            operation: operation.into(),
            amount: amount.into(),
            currency: "EUR".into(),
        }
    }

    fn results(rows: &[Row]) -> Vec<(&str, &str)> {
        rows.iter()
            .map(|r| (r.transaction_id.as_str(), r.result.as_str()))
            .collect()
    }

    #[test]
    fn agreeing_sides_match() {
        let rows = reconcile(
            &[
                rgs("a", "debit", "completed", 1050),
                rgs("b", "credit", "rejected", 5),
            ],
            &[op("a", "withdraw", "10.50")],
        );
        assert_eq!(results(&rows), [("a", "match"), ("b", "match")]);
        assert_eq!(rows[0].operator_amount_minor, Some(1050));
        assert_eq!(rows[1].operator_status, "missing");
    }

    #[test]
    fn each_kind_of_difference_is_named() {
        let rows = reconcile(
            &[
                rgs("a", "debit", "completed", 1050),
                rgs("b", "debit", "completed", 100),
                rgs("c", "debit", "completed", 100),
                rgs("d", "debit", "rejected", 100),
            ],
            &[
                op("b", "withdraw", "2.00"),
                op("c", "deposit", "1.00"),
                op("d", "withdraw", "1.00"),
                op("e", "withdraw", "1.00"),
            ],
        );
        assert_eq!(
            results(&rows),
            [
                ("a", "missing_at_operator"),
                ("b", "amount_mismatch"),
                ("c", "type_mismatch"),
                ("d", "booked_but_not_completed"),
                ("e", "missing_at_rgs"),
            ]
        );
    }

    #[test]
    fn the_latest_webhook_is_the_rgs_state() {
        let rows = reconcile(
            &[
                rgs("a", "debit", "failed", 100),
                rgs("a", "debit", "completed", 100),
            ],
            &[op("a", "withdraw", "1.00")],
        );
        assert_eq!(results(&rows), [("a", "match")]);
    }

    #[test]
    fn csv_has_a_header_even_when_empty() {
        let csv = String::from_utf8(to_csv(&[]).unwrap()).unwrap();
        assert!(csv.starts_with("transaction_id,type,currency,rgs_status"));
        let rows = reconcile(&[rgs("a", "debit", "completed", 1)], &[]);
        let csv = String::from_utf8(to_csv(&rows).unwrap()).unwrap();
        assert_eq!(csv.lines().count(), 2);
        assert!(
            csv.lines()
                .nth(1)
                .unwrap()
                .ends_with(",missing_at_operator")
        );
    }
}
