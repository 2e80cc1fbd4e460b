//! NewStore orders and returns as eyos Hail transactions: pure functions, amounts in integer
//! minor units of the order's currency.
//!
//! The arithmetic, for every transaction:
//!
//! * a line's `total` = `unit_price` × `quantity` − `discount` + `tax` (`discount` and `tax`
//!   are the whole line's, as NewStore sends them);
//! * `totals.net` = Σ (`unit_price` × `quantity` − `discount`), `totals.tax` = Σ `tax`,
//!   `totals.gross` = `net` + `tax`, which is also Σ `total`;
//! * a sale and its void carry the order as it is: every line, and the order's payments;
//! * a return carries the returned units of each line it names (at most one line per order
//!   item, in the order's item order), with positive amounts. The line's discount and tax are
//!   prorated by cumulative floor: after `n` of a line's `q` units have been returned, the
//!   returns have carried ⌊`discount` × `n` / `q`⌋ of its discount (and likewise of its tax),
//!   so a return of units `e+1..=e+r` carries ⌊d(e+r)/q⌋ − ⌊de/q⌋. Whatever the returns' sizes
//!   and number, once every unit is back they have carried exactly the sale's discount and
//!   tax: no minor unit is lost or invented, and the rounding remainder goes with the last
//!   unit. This needs the units returned before ([`refund_after`]); [`refund`] is the first
//!   return of an order;
//! * a return refunds its gross to the order's own payments (the original tenders), filling
//!   them in the order the order lists them, each up to what it paid: the returns of an order
//!   so far have refunded R (their cumulative gross), of which the first payment takes up to
//!   its amount, the next the rest up to its amount, and so on; a return's payments are what
//!   its R added to each (those it added nothing to are left out). Whatever the order's
//!   payments do not cover goes to its first payment method. So no method is refunded more
//!   than it paid, and once everything is back each has been refunded exactly its payment
//!   (when the payments add up to the gross). An order without payments gets returns without
//!   payments.
//!
//! The times: a sale occurred when the order completed (`completed_at`, else the event's
//! `published_at`), a void when the cancellation was published, a return when it was
//! processed (`processed_at`).
//!
//! The arithmetic is exact (in `i128`) and each amount is then narrowed to `i64`, saturating,
//! so nothing panics. [`parse_order`](super::domain::parse_order) bounds every amount and total
//! of an order to [`MAX_MINOR`], so for a parsed order nothing saturates; [`validate`] refuses
//! any amount beyond [`MAX_MINOR`] (a saturated one included) before a transaction is sent.
//!
//! [`MAX_MINOR`]: super::domain::MAX_MINOR

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::domain::{Order, ReturnEvent, schemas};
use crate::money::Currency;

/// `source.system`.
pub const SYSTEM: &str = "newstore";

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TransactionKind {
    Sale,
    Return,
    Void,
}

impl TransactionKind {
    pub fn as_str(self) -> &'static str {
        match self {
            TransactionKind::Sale => "sale",
            TransactionKind::Return => "return",
            TransactionKind::Void => "void",
        }
    }
}

/// One Hail transaction (`schemas/newstore/hail-transaction.json`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HailTransaction {
    /// `<order id>-sale`, `<order id>-void`, `<order id>-return-<return id>`; also the
    /// `Idempotency-Key` of the call.
    pub transaction_id: String,
    #[serde(rename = "type")]
    pub kind: TransactionKind,
    pub store_id: String,
    pub occurred_at: String,
    pub currency: Currency,
    pub customer: HailCustomer,
    pub lines: Vec<HailLine>,
    pub payments: Vec<HailPayment>,
    pub totals: Totals,
    pub source: Source,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HailCustomer {
    pub id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HailLine {
    /// The NewStore `product_id`.
    pub sku: String,
    /// The NewStore item `name`.
    pub description: String,
    pub quantity: u32,
    pub unit_price: i64,
    pub discount: i64,
    pub tax: i64,
    pub total: i64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HailPayment {
    pub method: String,
    pub amount: i64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Totals {
    pub net: i64,
    pub tax: i64,
    pub gross: i64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Source {
    /// Always [`SYSTEM`].
    pub system: String,
    pub order_id: String,
    pub event_id: String,
}

/// Units of an order's items returned so far: item id → units.
pub type Returned = BTreeMap<String, u32>;

/// The sale of a completed order: `<order id>-sale`.
pub fn sale(order: &Order, event_id: &str, store_id: &str, occurred_at: &str) -> HailTransaction {
    whole_order(
        order,
        TransactionKind::Sale,
        event_id,
        store_id,
        occurred_at,
    )
}

/// The void of a sale that was sent, when the order is cancelled: the sale's lines, payments
/// and totals under `<order id>-void`.
pub fn void(order: &Order, event_id: &str, store_id: &str, occurred_at: &str) -> HailTransaction {
    whole_order(
        order,
        TransactionKind::Void,
        event_id,
        store_id,
        occurred_at,
    )
}

/// The first return of `order` (nothing returned before): see [`refund_after`].
pub fn refund(
    order: &Order,
    ret: &ReturnEvent,
    event_id: &str,
    store_id: &str,
) -> Result<HailTransaction, String> {
    refund_after(order, ret, &Returned::new(), event_id, store_id)
}

/// The return `ret` of `order` after the units `before` were returned by earlier returns
/// (see the module's arithmetic): `<order id>-return-<return id>`. Refused when the return is
/// of another order, names an item the order lacks, or takes back more units than are left.
pub fn refund_after(
    order: &Order,
    ret: &ReturnEvent,
    before: &Returned,
    event_id: &str,
    store_id: &str,
) -> Result<HailTransaction, String> {
    if ret.order_id != order.id {
        return Err(format!(
            "return {} is of order {}, not {}",
            ret.return_id, ret.order_id, order.id
        ));
    }
    let mut now = Returned::new();
    add_returned(&mut now, ret);
    for (item_id, units) in &now {
        let Some(item) = order.items.iter().find(|item| &item.id == item_id) else {
            return Err(format!(
                "return {} names item {item_id:?}, which order {} does not have",
                ret.return_id, order.id
            ));
        };
        let earlier = before.get(item_id).copied().unwrap_or(0);
        if *units == 0 || u64::from(earlier) + u64::from(*units) > u64::from(item.quantity) {
            return Err(format!(
                "return {} takes back {units} of item {item_id:?}, but order {} has {} of it \
                 ({earlier} returned before)",
                ret.return_id, order.id, item.quantity
            ));
        }
    }
    let lines = order
        .items
        .iter()
        .filter_map(|item| {
            let units = *now.get(&item.id)?;
            let earlier = i128::from(before.get(&item.id).copied().unwrap_or(0));
            let after = earlier + i128::from(units);
            let quantity = i128::from(item.quantity);
            let share = |whole: i64| {
                let whole = i128::from(whole);
                narrow(whole * after / quantity - whole * earlier / quantity)
            };
            Some(line(
                &item.product_id,
                &item.name,
                units,
                item.price,
                share(item.discount),
                share(item.tax),
            ))
        })
        .collect::<Vec<_>>();
    let totals = totals(&lines);
    let refunded_before = returned_gross(order, before);
    let payments = refund_payments(
        order,
        refunded_before,
        refunded_before.saturating_add(i128::from(totals.gross)),
    );
    Ok(HailTransaction {
        transaction_id: format!("{}-return-{}", order.id, ret.return_id),
        kind: TransactionKind::Return,
        store_id: store_id.to_string(),
        occurred_at: ret.processed_at.clone(),
        currency: order.currency,
        customer: customer(order),
        lines,
        payments,
        totals,
        source: source(order, event_id),
    })
}

/// The gross the returns of `returned` units have refunded in all (the module's proration).
fn returned_gross(order: &Order, returned: &Returned) -> i128 {
    order
        .items
        .iter()
        .map(|item| {
            let quantity = i128::from(item.quantity.max(1));
            let units = i128::from(returned.get(&item.id).copied().unwrap_or(0)).min(quantity);
            i128::from(item.price) * units - i128::from(item.discount) * units / quantity
                + i128::from(item.tax) * units / quantity
        })
        .fold(0i128, i128::saturating_add)
}

/// What a return that brings the order's refunds from `before` to `after` (cumulative gross)
/// pays back to each of the order's payments (the module's rule).
fn refund_payments(order: &Order, before: i128, after: i128) -> Vec<HailPayment> {
    let mut amounts: Vec<i128> = Vec::with_capacity(order.payments.len());
    let mut start = 0i128;
    for payment in &order.payments {
        let cap = i128::from(payment.amount.max(0));
        let filled = |refunded: i128| (refunded - start).clamp(0, cap);
        amounts.push(filled(after) - filled(before));
        start = start.saturating_add(cap);
    }
    if let Some(first) = amounts.first_mut() {
        *first += (after - start).max(0) - (before - start).max(0);
    }
    order
        .payments
        .iter()
        .zip(amounts)
        .filter(|(_, amount)| *amount != 0)
        .map(|(payment, amount)| HailPayment {
            method: payment.method.clone(),
            amount: narrow(amount),
        })
        .collect()
}

/// Adds the units `ret` takes back to `returned` (the same item named twice adds up).
pub fn add_returned(returned: &mut Returned, ret: &ReturnEvent) {
    for item in &ret.items {
        let units = returned.entry(item.item_id.clone()).or_insert(0);
        *units = units.saturating_add(item.quantity);
    }
}

/// Checks `tx` against `schemas/newstore/hail-transaction.json` (which bounds every amount to
/// [`MAX_MINOR`]) and its arithmetic: each line's total, the totals, and Σ line totals = gross.
///
/// [`MAX_MINOR`]: super::domain::MAX_MINOR
pub fn validate(tx: &HailTransaction) -> Result<(), Vec<String>> {
    let value = serde_json::to_value(tx).map_err(|err| vec![format!("/: {err}")])?;
    schemas::HAIL_TRANSACTION.check(&value)?;
    let mut errors = Vec::new();
    let (mut net, mut tax, mut gross) = (0i128, 0i128, 0i128);
    for (i, line) in tx.lines.iter().enumerate() {
        let line_net =
            i128::from(line.unit_price) * i128::from(line.quantity) - i128::from(line.discount);
        if i128::from(line.total) != line_net + i128::from(line.tax) {
            errors.push(format!(
                "/lines/{i}/total: {} is not unit_price × quantity − discount + tax",
                line.total
            ));
        }
        if line_net < 0 {
            errors.push(format!("/lines/{i}/discount: more than the line"));
        }
        net += line_net;
        tax += i128::from(line.tax);
        gross += i128::from(line.total);
    }
    let totals = &tx.totals;
    if i128::from(totals.net) != net {
        errors.push(format!(
            "/totals/net: {} is not the lines' {net}",
            totals.net
        ));
    }
    if i128::from(totals.tax) != tax {
        errors.push(format!(
            "/totals/tax: {} is not the lines' {tax}",
            totals.tax
        ));
    }
    if i128::from(totals.gross) != gross
        || i128::from(totals.gross) != i128::from(totals.net) + i128::from(totals.tax)
    {
        errors.push(format!(
            "/totals/gross: {} is not net + tax, nor the lines' {gross}",
            totals.gross
        ));
    }
    if tx.source.system != SYSTEM {
        errors.push(format!("/source/system: not {SYSTEM:?}"));
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(errors)
    }
}

fn whole_order(
    order: &Order,
    kind: TransactionKind,
    event_id: &str,
    store_id: &str,
    occurred_at: &str,
) -> HailTransaction {
    let lines: Vec<HailLine> = order
        .items
        .iter()
        .map(|item| {
            line(
                &item.product_id,
                &item.name,
                item.quantity,
                item.price,
                item.discount,
                item.tax,
            )
        })
        .collect();
    HailTransaction {
        transaction_id: format!("{}-{}", order.id, kind.as_str()),
        kind,
        store_id: store_id.to_string(),
        occurred_at: occurred_at.to_string(),
        currency: order.currency,
        customer: customer(order),
        totals: totals(&lines),
        lines,
        payments: order
            .payments
            .iter()
            .map(|p| HailPayment {
                method: p.method.clone(),
                amount: p.amount,
            })
            .collect(),
        source: source(order, event_id),
    }
}

fn line(
    sku: &str,
    description: &str,
    quantity: u32,
    unit_price: i64,
    discount: i64,
    tax: i64,
) -> HailLine {
    let total =
        i128::from(unit_price) * i128::from(quantity) - i128::from(discount) + i128::from(tax);
    HailLine {
        sku: sku.to_string(),
        description: description.to_string(),
        quantity,
        unit_price,
        discount,
        tax,
        total: narrow(total),
    }
}

fn totals(lines: &[HailLine]) -> Totals {
    let (mut net, mut tax) = (0i128, 0i128);
    for line in lines {
        net = net.saturating_add(
            i128::from(line.unit_price) * i128::from(line.quantity) - i128::from(line.discount),
        );
        tax = tax.saturating_add(i128::from(line.tax));
    }
    Totals {
        net: narrow(net),
        tax: narrow(tax),
        gross: narrow(net.saturating_add(tax)),
    }
}

fn customer(order: &Order) -> HailCustomer {
    HailCustomer {
        id: order.customer.id.clone(),
        email: order.customer.email.clone(),
    }
}

fn source(order: &Order, event_id: &str) -> Source {
    Source {
        system: SYSTEM.to_string(),
        order_id: order.id.clone(),
        event_id: event_id.to_string(),
    }
}

/// An exact amount as `i64`, saturating (and so beyond [`MAX_MINOR`], which [`validate`]
/// refuses) when it does not fit.
///
/// [`MAX_MINOR`]: super::domain::MAX_MINOR
fn narrow(value: i128) -> i64 {
    i64::try_from(value).unwrap_or(if value < 0 { i64::MIN } else { i64::MAX })
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use serde_json::{Value, json};

    use super::super::domain::{
        Customer, Item, Payment, ReturnItem, order_payload, parse_envelope, parse_order,
        parse_return,
    };
    use super::*;

    // ---- golden files: tests/golden/newstore/<case>.json ----

    fn golden_dir() -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/golden/newstore")
    }

    /// The transaction a golden case's inputs produce (see the files' `inputs`).
    fn produce(case: &Value) -> HailTransaction {
        let inputs = &case["inputs"];
        let store_id = inputs["store_id"].as_str().expect("inputs.store_id");
        let order_event = parse_envelope(&inputs["order_event"]).expect("inputs.order_event");
        let order = parse_order(&order_event.payload).expect("the order parses");
        match inputs["transaction"].as_str().expect("inputs.transaction") {
            "sale" => {
                let occurred_at = order
                    .completed_at
                    .clone()
                    .unwrap_or(order_event.published_at.clone());
                sale(&order, &order_event.id, store_id, &occurred_at)
            }
            "void" => {
                let cancelled =
                    parse_envelope(&inputs["cancel_event"]).expect("inputs.cancel_event");
                let order = parse_order(&cancelled.payload).expect("the cancelled order");
                void(&order, &cancelled.id, store_id, &cancelled.published_at)
            }
            "return" => {
                let event = parse_envelope(&inputs["return_event"]).expect("inputs.return_event");
                let ret = parse_return(&event.payload).expect("the return parses");
                let before: Returned = serde_json::from_value(
                    inputs.get("returned_before").cloned().unwrap_or(json!({})),
                )
                .expect("inputs.returned_before");
                refund_after(&order, &ret, &before, &event.id, store_id).expect("the return")
            }
            other => panic!("unknown transaction {other}"),
        }
    }

    /// Each case's `expected` is what its inputs produce; `UPDATE_GOLDEN=1` rewrites them.
    #[test]
    fn golden_files() {
        let update = std::env::var("UPDATE_GOLDEN").is_ok_and(|v| v == "1");
        let mut paths: Vec<PathBuf> = std::fs::read_dir(golden_dir())
            .expect("tests/golden/newstore")
            .map(|entry| entry.expect("entry").path())
            .filter(|path| path.extension().is_some_and(|e| e == "json"))
            .collect();
        paths.sort();
        assert!(paths.len() >= 8, "{paths:?}");
        let mut failures = Vec::new();
        for path in &paths {
            let text = std::fs::read_to_string(path).expect("read");
            let mut case: Value = serde_json::from_str(&text).expect("a golden file is JSON");
            let tx = produce(&case);
            validate(&tx).unwrap_or_else(|e| panic!("{}: {e:?}", path.display()));
            let produced = serde_json::to_value(&tx).expect("json");
            if update {
                case["expected"] = produced;
                std::fs::write(path, golden_text(&case)).expect("write");
            } else if case["expected"] != produced {
                failures.push(format!(
                    "{}:\nexpected {}\nproduced {}",
                    path.display(),
                    serde_json::to_string_pretty(&case["expected"]).unwrap(),
                    serde_json::to_string_pretty(&produced).unwrap()
                ));
            }
        }
        assert!(
            failures.is_empty(),
            "golden files differ (UPDATE_GOLDEN=1 rewrites them):\n{}",
            failures.join("\n")
        );
    }

    /// A golden case as its file holds it: `case`, `inputs`, then `expected`.
    fn golden_text(case: &Value) -> String {
        let field = |name: &str| {
            serde_json::to_string_pretty(&case[name])
                .expect("json")
                .replace('\n', "\n  ")
        };
        format!(
            "{{\n  \"case\": {},\n  \"inputs\": {},\n  \"expected\": {}\n}}\n",
            field("case"),
            field("inputs"),
            field("expected")
        )
    }

    // ---- examples ----

    fn eur() -> Currency {
        Currency::parse("EUR").unwrap()
    }

    fn item(id: &str, quantity: u32, price: i64, discount: i64, tax: i64) -> Item {
        Item {
            id: id.into(),
            product_id: format!("SKU-{id}"),
            name: format!("Product {id}"),
            quantity,
            price,
            discount,
            tax,
        }
    }

    fn order(items: Vec<Item>, payments: Vec<Payment>) -> Order {
        Order {
            id: "ord-1".into(),
            store_id: "ns-store".into(),
            currency: eur(),
            customer: Customer {
                id: "cus-1".into(),
                email: None,
            },
            items,
            payments,
            completed_at: Some("2026-11-23T10:00:00Z".into()),
        }
    }

    fn ret(id: &str, items: &[(&str, u32)]) -> ReturnEvent {
        ReturnEvent {
            order_id: "ord-1".into(),
            return_id: id.into(),
            items: items
                .iter()
                .map(|(item_id, quantity)| ReturnItem {
                    item_id: item_id.to_string(),
                    quantity: *quantity,
                })
                .collect(),
            processed_at: "2026-11-24T10:00:00Z".into(),
        }
    }

    #[test]
    fn a_sale_carries_the_order_and_its_arithmetic() {
        let order = order(
            vec![item("a", 3, 1000, 100, 570), item("b", 1, 2500, 0, 475)],
            vec![
                Payment {
                    method: "gift_card".into(),
                    amount: 1000,
                },
                Payment {
                    method: "credit_card".into(),
                    amount: 4445,
                },
            ],
        );
        let tx = sale(&order, "evt-1", "hail-1", "2026-11-23T10:00:00Z");
        assert_eq!(tx.transaction_id, "ord-1-sale");
        assert_eq!(tx.lines[0].total, 3000 - 100 + 570);
        assert_eq!(tx.lines[1].total, 2500 + 475);
        assert_eq!(
            tx.totals,
            Totals {
                net: 2900 + 2500,
                tax: 1045,
                gross: 6445
            }
        );
        assert_eq!(tx.payments.len(), 2);
        validate(&tx).unwrap();
        let json = serde_json::to_value(&tx).unwrap();
        assert_eq!(json["type"], "sale");
        assert_eq!(json["currency"], "EUR");
        assert!(json["customer"].get("email").is_none());

        let voided = void(&order, "evt-2", "hail-1", "2026-11-23T11:00:00Z");
        assert_eq!(voided.transaction_id, "ord-1-void");
        assert_eq!(voided.kind, TransactionKind::Void);
        assert_eq!((voided.lines, voided.totals), (tx.lines, tx.totals));
    }

    #[test]
    fn returns_prorate_with_the_remainder_on_the_last_unit() {
        // 3 units, discount 100 and tax 200: the units carry 33/33/34 and 66/67/67.
        let order = order(
            vec![item("a", 3, 1000, 100, 200)],
            vec![Payment {
                method: "credit_card".into(),
                amount: 3100,
            }],
        );
        let mut before = Returned::new();
        let mut carried = Vec::new();
        for id in ["r1", "r2", "r3"] {
            let ret = ret(id, &[("a", 1)]);
            let tx = refund_after(&order, &ret, &before, "evt", "hail-1").unwrap();
            validate(&tx).unwrap();
            assert_eq!(tx.transaction_id, format!("ord-1-return-{id}"));
            assert_eq!(tx.payments[0].amount, tx.totals.gross);
            assert_eq!(tx.payments[0].method, "credit_card");
            carried.push((tx.lines[0].discount, tx.lines[0].tax));
            add_returned(&mut before, &ret);
        }
        assert_eq!(carried, [(33, 66), (33, 67), (34, 67)]);

        // Two at once, then the last.
        let two = refund(&order, &ret("r1", &[("a", 2)]), "evt", "hail-1").unwrap();
        assert_eq!((two.lines[0].discount, two.lines[0].tax), (66, 133));
        // The same item named twice adds up.
        let twice = refund(&order, &ret("r1", &[("a", 1), ("a", 1)]), "evt", "hail-1").unwrap();
        assert_eq!(twice.lines, two.lines);
    }

    #[test]
    fn returns_refund_the_payments_in_their_order_each_up_to_what_it_paid() {
        let pay = |method: &str, amount| Payment {
            method: method.into(),
            amount,
        };
        let paid = order(
            vec![item("a", 2, 5000, 0, 0)],
            vec![pay("gift_card", 3000), pay("credit_card", 7000)],
        );
        let first = ret("r1", &[("a", 1)]);
        let tx = refund(&paid, &first, "evt", "h").unwrap();
        let split: Vec<(&str, i64)> = tx
            .payments
            .iter()
            .map(|p| (p.method.as_str(), p.amount))
            .collect();
        assert_eq!(split, [("gift_card", 3000), ("credit_card", 2000)]);
        let before = Returned::from([("a".to_string(), 1)]);
        let tx = refund_after(&paid, &ret("r2", &[("a", 1)]), &before, "evt", "h").unwrap();
        assert_eq!(tx.payments, [pay_hail("credit_card", 5000)]);

        // Paid less than the gross: the first method takes what no payment covers.
        let short = order(vec![item("a", 2, 5000, 0, 0)], vec![pay("cash", 4000)]);
        let tx = refund(&short, &ret("r1", &[("a", 2)]), "evt", "h").unwrap();
        assert_eq!(tx.payments, [pay_hail("cash", 10000)]);
    }

    fn pay_hail(method: &str, amount: i64) -> HailPayment {
        HailPayment {
            method: method.into(),
            amount,
        }
    }

    #[test]
    fn returns_of_what_the_order_lacks_are_refused() {
        let order = order(vec![item("a", 2, 1000, 0, 0)], vec![]);
        let unknown = refund(&order, &ret("r1", &[("zz", 1)]), "evt", "h").unwrap_err();
        assert!(unknown.contains("does not have"), "{unknown}");
        let too_many = refund(&order, &ret("r1", &[("a", 3)]), "evt", "h").unwrap_err();
        assert!(too_many.contains("takes back 3"), "{too_many}");
        let before = Returned::from([("a".to_string(), 2)]);
        let after_all = refund_after(&order, &ret("r2", &[("a", 1)]), &before, "e", "h");
        assert!(after_all.unwrap_err().contains("2 returned before"));
        let mut other = ret("r1", &[("a", 1)]);
        other.order_id = "ord-2".into();
        assert!(refund(&order, &other, "evt", "h").is_err());
        // No payments on the order: none on the return.
        let free = refund(&order, &ret("r1", &[("a", 1)]), "evt", "h").unwrap();
        assert!(free.payments.is_empty());
    }

    #[test]
    fn validate_refuses_what_does_not_add_up_or_fit() {
        let order = order(vec![item("a", 1, 1000, 0, 190)], vec![]);
        let good = sale(&order, "evt", "hail-1", "2026-11-23T10:00:00Z");
        validate(&good).unwrap();

        let mut total = good.clone();
        total.lines[0].total += 1;
        assert!(validate(&total).unwrap_err()[0].starts_with("/lines/0/total: "));
        let mut gross = good.clone();
        gross.totals.gross += 1;
        assert!(validate(&gross).unwrap_err()[0].starts_with("/totals/gross: "));
        let mut when = good.clone();
        when.occurred_at = "yesterday".into();
        assert!(validate(&when).unwrap_err()[0].starts_with("/occurred_at: "));

        // Too large for a hand-built order: saturates, and is refused.
        let huge = order_with_max();
        let tx = sale(&huge, "evt", "hail-1", "2026-11-23T10:00:00Z");
        assert_eq!(tx.lines[0].total, i64::MAX);
        assert!(validate(&tx).is_err());
    }

    fn order_with_max() -> Order {
        order(vec![item("a", u32::MAX, i64::MAX, 0, i64::MAX)], vec![])
    }

    // ---- properties ----

    mod properties {
        use super::*;
        use proptest::prelude::*;

        fn any_order() -> impl Strategy<Value = Order> {
            let currency = prop::sample::select(vec!["JPY", "EUR", "KWD"])
                .prop_map(|code| Currency::parse(code).unwrap());
            let line = (1u32..=50, 0i64..=5_000_000, any::<u16>(), 0i64..=2_000_000);
            (
                currency,
                prop::collection::vec(line, 1..6),
                prop::collection::vec(1u64..=100, 0..4),
                any::<bool>(),
            )
                .prop_map(|(currency, lines, weights, short)| {
                    let items: Vec<Item> = lines
                        .into_iter()
                        .enumerate()
                        .map(|(i, (quantity, price, share, tax))| {
                            // A discount from nothing up to the whole line.
                            let discount = price * i64::from(quantity) * i64::from(share)
                                / i64::from(u16::MAX);
                            Item {
                                id: format!("item-{i}"),
                                product_id: format!("sku-{i}"),
                                name: format!("Product {i}"),
                                quantity,
                                price,
                                discount,
                                tax,
                            }
                        })
                        .collect();
                    // Payments of the gross (or, `short`, of half of it) in parts by weight.
                    let gross: i64 = items
                        .iter()
                        .map(|it| it.price * i64::from(it.quantity) - it.discount + it.tax)
                        .sum();
                    let paid = if short { gross / 2 } else { gross };
                    let all: u64 = weights.iter().sum();
                    let mut so_far = 0u64;
                    let payments = weights
                        .iter()
                        .enumerate()
                        .map(|(k, weight)| {
                            let start = paid as u64 * so_far / all;
                            so_far += weight;
                            Payment {
                                method: format!("method-{k}"),
                                amount: (paid as u64 * so_far / all - start) as i64,
                            }
                        })
                        .collect();
                    Order {
                        id: "ord-p".into(),
                        store_id: "ns".into(),
                        currency,
                        customer: Customer {
                            id: "cus".into(),
                            email: Some("a@b.example".into()),
                        },
                        items,
                        payments,
                        completed_at: Some("2026-11-23T10:00:00Z".into()),
                    }
                })
        }

        /// An order and its units returned in random pieces, in random order, grouped into
        /// returns of a few pieces each.
        fn order_and_returns() -> impl Strategy<Value = (Order, Vec<ReturnEvent>)> {
            (
                any_order(),
                prop::collection::vec(1u32..=7, 1..8),
                1usize..=3,
            )
                .prop_flat_map(|(order, sizes, group)| {
                    let mut pieces = Vec::new();
                    for item in &order.items {
                        let (mut left, mut k) = (item.quantity, 0);
                        while left > 0 {
                            let take = sizes[k % sizes.len()].min(left);
                            pieces.push((item.id.clone(), take));
                            left -= take;
                            k += 1;
                        }
                    }
                    (Just(order), Just(pieces).prop_shuffle(), Just(group))
                })
                .prop_map(|(order, pieces, group)| {
                    let returns = pieces
                        .chunks(group)
                        .enumerate()
                        .map(|(n, chunk)| ReturnEvent {
                            order_id: order.id.clone(),
                            return_id: format!("r{n}"),
                            items: chunk
                                .iter()
                                .map(|(item_id, quantity)| ReturnItem {
                                    item_id: item_id.clone(),
                                    quantity: *quantity,
                                })
                                .collect(),
                            processed_at: "2026-11-24T10:00:00Z".into(),
                        })
                        .collect();
                    (order, returns)
                })
        }

        fn assert_consistent(tx: &HailTransaction) -> Result<(), TestCaseError> {
            prop_assert_eq!(tx.totals.gross, tx.totals.net + tx.totals.tax);
            prop_assert_eq!(
                tx.lines.iter().map(|l| l.total).sum::<i64>(),
                tx.totals.gross
            );
            prop_assert_eq!(tx.lines.iter().map(|l| l.tax).sum::<i64>(), tx.totals.tax);
            for line in &tx.lines {
                prop_assert_eq!(
                    line.total,
                    line.unit_price * i64::from(line.quantity) - line.discount + line.tax
                );
            }
            prop_assert!(validate(tx).is_ok(), "{:?}", validate(tx));
            Ok(())
        }

        proptest! {
            #[test]
            fn totals_are_consistent(order in any_order()) {
                assert_consistent(&sale(&order, "evt", "hail", "2026-11-23T10:00:00Z"))?;
                assert_consistent(&void(&order, "evt", "hail", "2026-11-23T10:00:00Z"))?;
            }

            /// However a line's units come back, the returns add up to the sale's line.
            #[test]
            fn all_returns_of_every_unit_sum_to_the_sale((order, returns) in order_and_returns()) {
                let sold = sale(&order, "evt", "hail", "2026-11-23T10:00:00Z");
                let mut before = Returned::new();
                let mut summed: BTreeMap<String, (u32, i64, i64, i64)> = BTreeMap::new();
                let mut gross = 0;
                let mut refunded: BTreeMap<String, i64> = BTreeMap::new();
                for ret in &returns {
                    let tx = refund_after(&order, ret, &before, "evt", "hail")
                        .map_err(TestCaseError::fail)?;
                    assert_consistent(&tx)?;
                    gross += tx.totals.gross;
                    let tendered: i64 = tx.payments.iter().map(|p| p.amount).sum();
                    if order.payments.is_empty() {
                        prop_assert!(tx.payments.is_empty());
                    } else {
                        prop_assert_eq!(tendered, tx.totals.gross);
                    }
                    for payment in &tx.payments {
                        prop_assert!(payment.amount > 0);
                        *refunded.entry(payment.method.clone()).or_default() += payment.amount;
                    }
                    for line in &tx.lines {
                        let sum = summed.entry(line.sku.clone()).or_default();
                        sum.0 += line.quantity;
                        sum.1 += line.discount;
                        sum.2 += line.tax;
                        sum.3 += line.total;
                    }
                    add_returned(&mut before, ret);
                }
                for line in &sold.lines {
                    prop_assert_eq!(
                        summed.get(&line.sku).copied(),
                        Some((line.quantity, line.discount, line.tax, line.total))
                    );
                }
                prop_assert_eq!(gross, sold.totals.gross);
                // Each payment refunded exactly what it paid (the first also what none paid).
                let paid: i64 = sold.payments.iter().map(|p| p.amount).sum();
                for (k, payment) in sold.payments.iter().enumerate() {
                    let extra = if k == 0 { sold.totals.gross - paid } else { 0 };
                    prop_assert_eq!(refunded.get(&payment.method).copied().unwrap_or(0), payment.amount + extra);
                }
                // And nothing is left to return.
                let first = order.items[0].id.clone();
                let late = ReturnEvent {
                    order_id: order.id.clone(),
                    return_id: "late".into(),
                    items: vec![ReturnItem { item_id: first, quantity: 1 }],
                    processed_at: "2026-11-25T10:00:00Z".into(),
                };
                prop_assert!(refund_after(&order, &late, &before, "evt", "hail").is_err());
            }

            /// An order in NewStore's form parses back to itself.
            #[test]
            fn an_order_round_trips_through_its_newstore_form(order in any_order()) {
                let payload = order_payload(&order);
                prop_assert!(payload["items"][0]["price"].is_string());
                prop_assert_eq!(parse_order(&payload), Ok(order));
            }
        }
    }
}
