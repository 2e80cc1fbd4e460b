//! What the partners list and how one transaction's two sides compare: the rules of the
//! report, pure. The mirror applies them row by row; [`reconcile`] applies them to two whole
//! lists (the reference the tests read).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::money::{Currency, parse_major};

/// The report's columns, in order.
pub const COLUMNS: [&str; 9] = [
    "transaction_id",
    "type",
    "currency",
    "rgs_status",
    "rgs_amount_minor",
    "operator_status",
    "operator_amount_minor",
    "operator_transaction_id",
    "result",
];

pub const MATCH: &str = "match";

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

/// The RGS's state of a transaction: its latest webhook.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RgsSide {
    pub kind: String,
    pub status: String,
    pub amount_minor: i64,
    pub currency: String,
}

/// The operator's booking of a transaction: the first it lists for the id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OperatorSide {
    pub transaction_id: String,
    pub operation: String,
    /// `None` when the operator's decimal does not parse in its currency.
    pub amount_minor: Option<i64>,
    pub currency: String,
}

impl From<&RgsEntry> for RgsSide {
    fn from(entry: &RgsEntry) -> Self {
        RgsSide {
            kind: entry.kind.clone(),
            status: entry.status.clone(),
            amount_minor: entry.amount,
            currency: entry.currency.clone(),
        }
    }
}

impl From<&OperatorEntry> for OperatorSide {
    fn from(entry: &OperatorEntry) -> Self {
        OperatorSide {
            transaction_id: entry.transaction_id.clone(),
            operation: entry.operation.clone(),
            amount_minor: Currency::parse(&entry.currency)
                .ok()
                .and_then(|currency| parse_major(&entry.amount, currency).ok()),
            currency: entry.currency.clone(),
        }
    }
}

/// The hub's word for an operator operation.
pub fn operator_kind(operation: &str) -> &str {
    match operation {
        "withdraw" => "debit",
        "deposit" => "credit",
        other => other,
    }
}

/// How the two sides of one transaction compare: `match`, or what differs.
pub fn classify(rgs: Option<&RgsSide>, operator: Option<&OperatorSide>) -> &'static str {
    match (rgs, operator) {
        (Some(r), Some(_)) if r.status != "completed" => "booked_but_not_completed",
        (Some(r), Some(o)) if r.kind != operator_kind(&o.operation) => "type_mismatch",
        (Some(r), Some(o)) if Some(r.amount_minor) != o.amount_minor => "amount_mismatch",
        (Some(_), Some(_)) => MATCH,
        (Some(r), None) if r.status == "completed" => "missing_at_operator",
        // Rejected or failed, and nothing booked: both sides agree nothing happened.
        (Some(_), None) => MATCH,
        (None, _) => "missing_at_rgs",
    }
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
    /// The report's row of a transaction from its two sides and their comparison.
    pub fn new(
        transaction_id: String,
        rgs: Option<RgsSide>,
        operator: Option<OperatorSide>,
        result: &str,
    ) -> Row {
        let operator_kind = operator.as_ref().map(|o| operator_kind(&o.operation));
        Row {
            transaction_id,
            kind: rgs
                .as_ref()
                .map(|r| r.kind.clone())
                .or(operator_kind.map(str::to_string))
                .unwrap_or_default(),
            currency: rgs
                .as_ref()
                .map(|r| r.currency.clone())
                .or(operator.as_ref().map(|o| o.currency.clone()))
                .unwrap_or_default(),
            rgs_status: rgs.as_ref().map_or("missing".into(), |r| r.status.clone()),
            rgs_amount_minor: rgs.as_ref().map(|r| r.amount_minor),
            operator_status: if operator.is_some() { "booked" } else { "missing" }.into(),
            operator_amount_minor: operator.as_ref().and_then(|o| o.amount_minor),
            operator_transaction_id: operator.map(|o| o.transaction_id).unwrap_or_default(),
            result: result.into(),
        }
    }

    pub fn is_mismatch(&self) -> bool {
        self.result != MATCH
    }
}

/// One row per transaction id seen on either side, ordered by id (bytewise; ids are
/// time-ordered). The RGS's latest webhook per transaction is its state; the operator's first
/// booking per id is its.
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
            let r = latest.get(id).map(|r| RgsSide::from(*r));
            let o = booked.get(id).map(|o| OperatorSide::from(*o));
            let result = classify(r.as_ref(), o.as_ref());
            Row::new(id.to_string(), r, o, result)
        })
        .collect()
}

/// The CSV header line.
pub fn csv_header() -> Vec<u8> {
    let mut writer = csv::Writer::from_writer(Vec::new());
    writer
        .write_record(COLUMNS)
        .expect("writing to memory cannot fail");
    writer.into_inner().expect("writing to memory cannot fail")
}

/// `rows` as CSV lines, without the header, appended to `out`.
pub fn write_rows(out: &mut Vec<u8>, rows: &[Row]) -> anyhow::Result<()> {
    let mut writer = csv::WriterBuilder::new()
        .has_headers(false)
        .from_writer(out);
    for row in rows {
        writer.serialize(row)?;
    }
    writer.flush()?;
    Ok(())
}

/// The whole report in memory: the header, then `rows` (the streamed report writes the same
/// bytes a page at a time).
pub fn to_csv(rows: &[Row]) -> anyhow::Result<Vec<u8>> {
    let mut out = csv_header();
    write_rows(&mut out, rows)?;
    Ok(out)
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
        assert_eq!(rows[4].kind, "debit");
        assert_eq!(rows[4].rgs_status, "missing");
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
    fn an_operator_amount_that_does_not_parse_is_a_mismatch() {
        let rows = reconcile(
            &[rgs("a", "debit", "completed", 100)],
            &[op("a", "withdraw", "1.0.0")],
        );
        assert_eq!(results(&rows), [("a", "amount_mismatch")]);
        assert_eq!(rows[0].operator_amount_minor, None);
    }

    #[test]
    fn csv_has_a_header_even_when_empty() {
        let csv = String::from_utf8(to_csv(&[]).unwrap()).unwrap();
        assert!(csv.starts_with("transaction_id,type,currency,rgs_status"));
        assert_eq!(csv.lines().count(), 1);
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

    #[test]
    fn the_header_names_the_serialized_fields() {
        let mut writer = csv::Writer::from_writer(Vec::new());
        writer
            .serialize(Row::new("a".into(), None, None, "missing_at_rgs"))
            .unwrap();
        let text = String::from_utf8(writer.into_inner().unwrap()).unwrap();
        assert_eq!(
            text.lines().next().unwrap().as_bytes(),
            csv_header().strip_suffix(b"\n").unwrap()
        );
    }
}
