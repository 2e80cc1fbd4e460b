//! NewStore's messages: the webhook envelope, the order and return it carries, and the parsing
//! that turns their decimal strings into integer minor units of the order's currency.
//!
//! Shape is checked by the schemas in `schemas/newstore/` (ids, decimal strings, quantities);
//! [`parse_order`] and [`parse_return`] then check what a schema cannot: decimals per currency,
//! amounts and totals within [`MAX_MINOR`], a discount within its line, real timestamps. Every
//! error names the JSON pointer of what it refuses.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::money::{Currency, format_major, parse_major};

pub mod schemas {
    //! `schemas/newstore/`.
    crate::schema!(
        /// The webhook envelope (`POST /webhooks/newstore`).
        ENVELOPE,
        "newstore/envelope.json"
    );
    crate::schema!(
        /// The payload of `order.opened`, `order.completed`, `order.cancelled`.
        ORDER,
        "newstore/order.json"
    );
    crate::schema!(
        /// The payload of `return.processed`.
        RETURN,
        "newstore/return.json"
    );
    crate::schema!(
        /// What is sent to Hail.
        HAIL_TRANSACTION,
        "newstore/hail-transaction.json"
    );
}

/// The largest amount, and the largest total, in minor units: 2^53 − 1, so any JSON reader
/// (JavaScript's included) reads every amount the hub sends exactly.
pub const MAX_MINOR: i64 = 9_007_199_254_740_991;

/// The events the integration acts on (others are accepted and ignored).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum EventKind {
    #[serde(rename = "order.opened")]
    OrderOpened,
    #[serde(rename = "order.completed")]
    OrderCompleted,
    #[serde(rename = "order.cancelled")]
    OrderCancelled,
    #[serde(rename = "return.processed")]
    ReturnProcessed,
}

impl EventKind {
    pub const ALL: [EventKind; 4] = [
        EventKind::OrderOpened,
        EventKind::OrderCompleted,
        EventKind::OrderCancelled,
        EventKind::ReturnProcessed,
    ];

    /// `order.opened` → [`EventKind::OrderOpened`]; `None` for a name the hub does not act on.
    pub fn parse(name: &str) -> Option<EventKind> {
        Self::ALL.into_iter().find(|kind| kind.as_str() == name)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::OrderOpened => "order.opened",
            EventKind::OrderCompleted => "order.completed",
            EventKind::OrderCancelled => "order.cancelled",
            EventKind::ReturnProcessed => "return.processed",
        }
    }

    /// Whether its payload is an order ([`parse_order`]); else a return ([`parse_return`]).
    pub fn carries_order(self) -> bool {
        self != EventKind::ReturnProcessed
    }
}

impl std::fmt::Display for EventKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A NewStore webhook event (`schemas/newstore/envelope.json`; extra fields are ignored).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Envelope {
    pub id: String,
    pub name: String,
    pub published_at: String,
    pub payload: Value,
}

impl Envelope {
    /// The event this hub acts on, if its name is one.
    pub fn kind(&self) -> Option<EventKind> {
        EventKind::parse(&self.name)
    }
}

/// An order with its amounts in integer minor units of `currency` (NewStore sends decimal
/// strings; [`parse_order`] converts them). Serialized, amounts are integers.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Order {
    pub id: String,
    pub store_id: String,
    pub currency: Currency,
    pub customer: Customer,
    pub items: Vec<Item>,
    pub payments: Vec<Payment>,
    pub completed_at: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Customer {
    pub id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
}

/// One order line: `price` per unit, `discount` and `tax` for the whole line.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Item {
    pub id: String,
    pub product_id: String,
    pub name: String,
    pub quantity: u32,
    pub price: i64,
    pub discount: i64,
    pub tax: i64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Payment {
    pub method: String,
    pub amount: i64,
}

/// The payload of `return.processed`: units of an order's items taken back.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReturnEvent {
    pub order_id: String,
    pub return_id: String,
    pub items: Vec<ReturnItem>,
    pub processed_at: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReturnItem {
    pub item_id: String,
    pub quantity: u32,
}

/// The envelope of a webhook body: its shape (`envelope.json`) and a real `published_at`.
pub fn parse_envelope(body: &Value) -> Result<Envelope, Vec<String>> {
    schemas::ENVELOPE.check(body)?;
    let envelope = Envelope::deserialize(body).map_err(|err| vec![format!("/: {err}")])?;
    let mut errors = Vec::new();
    check_time("/published_at", &envelope.published_at, &mut errors);
    if errors.is_empty() {
        Ok(envelope)
    } else {
        Err(errors)
    }
}

/// An order from its NewStore form: the schema's checks, then a known currency, amounts with
/// no more decimals than the currency has, each amount, line and total within [`MAX_MINOR`],
/// a discount no larger than its line's price × quantity, item ids unique within the order,
/// and a real `completed_at`. Negative amounts are refused (by the schema): a refund is a
/// `return.processed`, not a negative line.
pub fn parse_order(payload: &Value) -> Result<Order, Vec<String>> {
    schemas::ORDER.check(payload)?;
    let raw = RawOrder::deserialize(payload).map_err(|err| vec![format!("/: {err}")])?;
    let currency =
        Currency::parse(&raw.currency).map_err(|err| vec![format!("/currency: {err}")])?;

    let mut errors = Vec::new();
    let mut first_of: HashMap<&str, usize> = HashMap::new();
    let (mut net, mut tax, mut gross) = (0i128, 0i128, 0i128);
    let mut items = Vec::with_capacity(raw.items.len());
    for (i, item) in raw.items.iter().enumerate() {
        if let Some(first) = first_of.insert(item.id.as_str(), i) {
            first_of.insert(item.id.as_str(), first);
            errors.push(format!(
                "/items/{i}/id: {:?} is also /items/{first}/id",
                item.id
            ));
        }
        let mut amount = |field: &str, text: &str| {
            parse_amount(text, currency)
                .map_err(|err| errors.push(format!("/items/{i}/{field}: {err}")))
                .ok()
        };
        let (Some(price), Some(discount), Some(line_tax)) = (
            amount("price", &item.price),
            amount("discount", &item.discount),
            amount("tax", &item.tax),
        ) else {
            continue;
        };
        let line_gross = i128::from(price) * i128::from(item.quantity);
        let line_net = line_gross - i128::from(discount);
        let total = line_net + i128::from(line_tax);
        if line_gross > i128::from(MAX_MINOR) || total > i128::from(MAX_MINOR) {
            errors.push(format!(
                "/items/{i}: the line's total is more than the largest amount ({})",
                largest(currency)
            ));
        } else if line_net < 0 {
            errors.push(format!(
                "/items/{i}/discount: {} is more than the line's {} × {}",
                format_major(discount, currency),
                item.quantity,
                format_major(price, currency)
            ));
        }
        net += line_net;
        tax += i128::from(line_tax);
        gross += total;
        items.push(Item {
            id: item.id.clone(),
            product_id: item.product_id.clone(),
            name: item.name.clone(),
            quantity: item.quantity,
            price,
            discount,
            tax: line_tax,
        });
    }
    if errors.is_empty() && [net, tax, gross].iter().any(|t| *t > i128::from(MAX_MINOR)) {
        errors.push(format!(
            "/items: the order's total is more than the largest amount ({})",
            largest(currency)
        ));
    }

    let mut paid = 0i128;
    let mut payments = Vec::with_capacity(raw.payments.len());
    for (i, payment) in raw.payments.iter().enumerate() {
        match parse_amount(&payment.amount, currency) {
            Ok(amount) => {
                paid += i128::from(amount);
                payments.push(Payment {
                    method: payment.method.clone(),
                    amount,
                });
            }
            Err(err) => errors.push(format!("/payments/{i}/amount: {err}")),
        }
    }
    if paid > i128::from(MAX_MINOR) {
        errors.push(format!(
            "/payments: their sum is more than the largest amount ({})",
            largest(currency)
        ));
    }
    if let Some(completed_at) = &raw.completed_at {
        check_time("/completed_at", completed_at, &mut errors);
    }
    if !errors.is_empty() {
        return Err(errors);
    }
    Ok(Order {
        id: raw.id,
        store_id: raw.store_id,
        currency,
        customer: raw.customer,
        items,
        payments,
        completed_at: raw.completed_at,
    })
}

/// A return from its NewStore form: the schema's checks and a real `processed_at`. The same
/// item may be named more than once (its quantities add up).
pub fn parse_return(payload: &Value) -> Result<ReturnEvent, Vec<String>> {
    schemas::RETURN.check(payload)?;
    let ret = ReturnEvent::deserialize(payload).map_err(|err| vec![format!("/: {err}")])?;
    let mut errors = Vec::new();
    check_time("/processed_at", &ret.processed_at, &mut errors);
    if errors.is_empty() {
        Ok(ret)
    } else {
        Err(errors)
    }
}

/// A non-negative decimal string in major units as minor units of `currency`: "29.90" EUR →
/// 2990, "1500" JPY → 1500, "1.250" KWD → 1250. More decimals than the currency has (even
/// zeros: "1500.0" JPY), signs, exponents, or more than [`MAX_MINOR`] are refused, each with a
/// message saying which.
pub fn parse_amount(text: &str, currency: Currency) -> Result<i64, String> {
    let (whole, fraction) = text.split_once('.').unwrap_or((text, ""));
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    if whole.strip_prefix('-').is_some_and(digits) {
        return Err(format!("{text:?} is negative"));
    }
    if !digits(whole) || (text.contains('.') && !digits(fraction)) {
        return Err(format!("{text:?} is not a decimal amount"));
    }
    let exponent = currency.exponent();
    if fraction.len() > exponent as usize {
        return Err(format!(
            "{text:?} has more decimals than {} allows ({exponent})",
            currency.code()
        ));
    }
    match parse_major(text, currency) {
        Ok(minor) if minor <= MAX_MINOR => Ok(minor),
        _ => Err(format!(
            "{text:?} is more than the largest amount ({})",
            largest(currency)
        )),
    }
}

/// An order in NewStore's form (decimal strings in major units): what [`parse_order`] reads.
pub fn order_payload(order: &Order) -> Value {
    let money = |minor: i64| Value::String(format_major(minor, order.currency));
    let items: Vec<Value> = order
        .items
        .iter()
        .map(|item| {
            serde_json::json!({
                "id": item.id,
                "product_id": item.product_id,
                "name": item.name,
                "quantity": item.quantity,
                "price": money(item.price),
                "discount": money(item.discount),
                "tax": money(item.tax),
            })
        })
        .collect();
    let payments: Vec<Value> = order
        .payments
        .iter()
        .map(|p| serde_json::json!({"method": p.method, "amount": money(p.amount)}))
        .collect();
    serde_json::json!({
        "id": order.id,
        "store_id": order.store_id,
        "currency": order.currency.code(),
        "customer": order.customer,
        "items": items,
        "payments": payments,
        "completed_at": order.completed_at,
    })
}

fn largest(currency: Currency) -> String {
    format!("{} {}", format_major(MAX_MINOR, currency), currency.code())
}

fn check_time(pointer: &str, text: &str, errors: &mut Vec<String>) {
    if chrono::DateTime::parse_from_rfc3339(text).is_err() {
        errors.push(format!("{pointer}: {text:?} is not an RFC 3339 time"));
    }
}

/// An order as NewStore sends it (after its schema check).
#[derive(Deserialize)]
struct RawOrder {
    id: String,
    store_id: String,
    currency: String,
    customer: Customer,
    items: Vec<RawItem>,
    payments: Vec<RawPayment>,
    #[serde(default)]
    completed_at: Option<String>,
}

#[derive(Deserialize)]
struct RawItem {
    id: String,
    product_id: String,
    name: String,
    quantity: u32,
    price: String,
    discount: String,
    tax: String,
}

#[derive(Deserialize)]
struct RawPayment {
    method: String,
    amount: String,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn order(currency: &str, price: &str) -> Value {
        json!({
            "id": "ord-1",
            "store_id": "store-berlin",
            "currency": currency,
            "customer": {"id": "cus-1", "email": "ada@example.com"},
            "items": [
                {"id": "i1", "product_id": "SKU-1", "name": "Shirt", "quantity": 2,
                 "price": price, "discount": "0", "tax": "0"}
            ],
            "payments": [{"method": "credit_card", "amount": price}],
            "completed_at": "2026-11-23T10:00:00Z",
            "channel": "store"
        })
    }

    fn eur() -> Currency {
        Currency::parse("EUR").unwrap()
    }

    #[test]
    fn event_names_round_trip() {
        for kind in EventKind::ALL {
            assert_eq!(EventKind::parse(kind.as_str()), Some(kind));
            let json = serde_json::to_value(kind).unwrap();
            assert_eq!(json, kind.as_str());
            assert_eq!(serde_json::from_value::<EventKind>(json).unwrap(), kind);
        }
        assert_eq!(EventKind::parse("order.updated"), None);
        assert_eq!(EventKind::parse("ORDER.OPENED"), None);
        assert!(EventKind::OrderCancelled.carries_order());
        assert!(!EventKind::ReturnProcessed.carries_order());
    }

    #[test]
    fn amounts_follow_their_currency() {
        let cur = |c| Currency::parse(c).unwrap();
        assert_eq!(parse_amount("29.90", eur()), Ok(2990));
        assert_eq!(parse_amount("29.9", eur()), Ok(2990));
        assert_eq!(parse_amount("0", eur()), Ok(0));
        assert_eq!(parse_amount("1500", cur("JPY")), Ok(1500));
        assert_eq!(parse_amount("1.250", cur("KWD")), Ok(1250));
        assert_eq!(
            parse_amount("29.905", eur()).unwrap_err(),
            "\"29.905\" has more decimals than EUR allows (2)"
        );
        assert_eq!(
            parse_amount("1500.0", cur("JPY")).unwrap_err(),
            "\"1500.0\" has more decimals than JPY allows (0)"
        );
        assert_eq!(
            parse_amount("-1.00", eur()).unwrap_err(),
            "\"-1.00\" is negative"
        );
        assert_eq!(
            parse_amount("90071992547409.91", eur()),
            Ok(MAX_MINOR),
            "the largest amount"
        );
        assert!(
            parse_amount("90071992547409.92", eur())
                .unwrap_err()
                .contains("more than the largest amount (90071992547409.91 EUR)")
        );
        assert!(parse_amount("99999999999999999999999", eur()).is_err());
        for bad in ["", ".5", "5.", "1e3", "1,00", "+1", " 1", "--1", "-"] {
            assert!(parse_amount(bad, eur()).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn parses_an_order_into_minor_units() {
        let order = parse_order(&order("EUR", "29.90")).unwrap();
        assert_eq!(order.currency, eur());
        assert_eq!(order.items[0].price, 2990);
        assert_eq!(order.items[0].quantity, 2);
        assert_eq!(order.payments[0].amount, 2990);
        assert_eq!(order.customer.email.as_deref(), Some("ada@example.com"));
        assert_eq!(order.completed_at.as_deref(), Some("2026-11-23T10:00:00Z"));

        let mut opened = super::tests::order("KWD", "1.250");
        opened["completed_at"] = Value::Null;
        opened["customer"] = json!({"id": "cus-2"});
        let opened = parse_order(&opened).unwrap();
        assert_eq!((opened.items[0].price, opened.completed_at), (1250, None));
        assert_eq!(opened.customer.email, None);
    }

    #[test]
    fn errors_name_the_pointer() {
        let errors = parse_order(&order("EUR", "29.905")).unwrap_err();
        assert_eq!(
            errors,
            [
                "/items/0/price: \"29.905\" has more decimals than EUR allows (2)",
                "/payments/0/amount: \"29.905\" has more decimals than EUR allows (2)",
            ]
        );
        assert_eq!(
            parse_order(&order("XYZ", "1.00")).unwrap_err(),
            ["/currency: \"XYZ\" is not an ISO 4217 currency code"]
        );

        // Shape: the schema's pointers.
        let mut shape = order("EUR", "-1.00");
        shape["items"][0]["quantity"] = json!(0);
        shape["items"][0]["id"] = json!("no spaces");
        shape["payments"][0]["amount"] = json!(29.9);
        let errors = parse_order(&shape).unwrap_err();
        for pointer in [
            "/items/0/price: ",
            "/items/0/quantity: ",
            "/items/0/id: ",
            "/payments/0/amount: ",
        ] {
            assert!(
                errors.iter().any(|e| e.starts_with(pointer)),
                "{pointer} {errors:?}"
            );
        }

        let mut discount = order("EUR", "10.00");
        discount["items"][0]["discount"] = json!("20.01");
        assert_eq!(
            parse_order(&discount).unwrap_err(),
            ["/items/0/discount: 20.01 is more than the line's 2 × 10.00"]
        );

        let mut twice = order("EUR", "10.00");
        let item = twice["items"][0].clone();
        twice["items"].as_array_mut().unwrap().push(item);
        assert_eq!(
            parse_order(&twice).unwrap_err(),
            ["/items/1/id: \"i1\" is also /items/0/id"]
        );

        let mut when = order("EUR", "10.00");
        when["completed_at"] = json!("2026-13-40T10:00:00Z");
        assert_eq!(
            parse_order(&when).unwrap_err(),
            ["/completed_at: \"2026-13-40T10:00:00Z\" is not an RFC 3339 time"]
        );
    }

    #[test]
    fn totals_beyond_the_largest_amount_are_refused() {
        // One unit fits; two of it do not.
        let errors = parse_order(&order("EUR", "90071992547409.91")).unwrap_err();
        assert!(
            errors
                .iter()
                .any(|e| e.starts_with("/items/0: the line's total")),
            "{errors:?}"
        );
        // Each line fits; the order does not.
        let mut many = order("EUR", "40000000000000.00");
        let mut second = many["items"][0].clone();
        second["id"] = json!("i2");
        many["items"].as_array_mut().unwrap().push(second);
        many["payments"] = json!([]);
        let errors = parse_order(&many).unwrap_err();
        assert_eq!(
            errors,
            ["/items: the order's total is more than the largest amount (90071992547409.91 EUR)"]
        );
        let mut paid = order("EUR", "1.00");
        paid["payments"] = json!([
            {"method": "a", "amount": "90071992547409.91"},
            {"method": "b", "amount": "0.01"}
        ]);
        assert!(parse_order(&paid).unwrap_err()[0].starts_with("/payments: "));
    }

    #[test]
    fn returns_and_envelopes() {
        let ret = parse_return(&json!({
            "order_id": "ord-1", "return_id": "ret-1",
            "items": [{"item_id": "i1", "quantity": 1}],
            "processed_at": "2026-11-24T09:00:00+01:00", "reason": "too small"
        }))
        .unwrap();
        assert_eq!(
            ret.items,
            [ReturnItem {
                item_id: "i1".into(),
                quantity: 1
            }]
        );
        let errors = parse_return(&json!({
            "order_id": "ord-1", "return_id": "ret-1", "items": [], "processed_at": "yesterday"
        }))
        .unwrap_err();
        assert!(
            errors.iter().any(|e| e.starts_with("/items: ")),
            "{errors:?}"
        );
        assert!(
            errors.iter().any(|e| e.starts_with("/processed_at: ")),
            "{errors:?}"
        );

        let envelope = parse_envelope(&json!({
            "id": "evt_1", "name": "order.completed", "published_at": "2026-11-23T10:00:00Z",
            "payload": order("EUR", "1.00"), "tenant": "ignored"
        }))
        .unwrap();
        assert_eq!(envelope.kind(), Some(EventKind::OrderCompleted));
        let unknown = parse_envelope(&json!({
            "id": "evt_2", "name": "fulfillment.shipped", "published_at": "2026-11-23T10:00:00Z",
            "payload": {}
        }))
        .unwrap();
        assert_eq!(unknown.kind(), None);
        let errors = parse_envelope(&json!({"id": "", "name": "x", "payload": []})).unwrap_err();
        for pointer in ["/id: ", "/name: ", "/payload: ", "/: "] {
            assert!(
                errors.iter().any(|e| e.starts_with(pointer)),
                "{pointer} {errors:?}"
            );
        }
    }

    mod properties {
        use super::*;
        use proptest::prelude::*;

        fn json_value() -> impl Strategy<Value = Value> {
            let leaf = prop_oneof![
                Just(Value::Null),
                any::<bool>().prop_map(Value::Bool),
                any::<i64>().prop_map(Value::from),
                any::<f64>().prop_map(Value::from),
                ".{0,12}".prop_map(Value::String),
                "[0-9]{1,25}(\\.[0-9]{0,5})?".prop_map(Value::String),
            ];
            leaf.prop_recursive(4, 48, 6, |inner| {
                prop_oneof![
                    prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
                    prop::collection::btree_map(
                        prop::sample::select(vec![
                            "id",
                            "store_id",
                            "currency",
                            "customer",
                            "items",
                            "payments",
                            "completed_at",
                            "price",
                            "discount",
                            "tax",
                            "quantity",
                            "amount",
                            "method",
                            "name",
                            "product_id",
                            "email",
                            "x",
                        ])
                        .prop_map(str::to_string),
                        inner,
                        0..8
                    )
                    .prop_map(|map| Value::Object(map.into_iter().collect())),
                ]
            })
        }

        /// A valid order with any field of one item or payment replaced by anything.
        fn near_order() -> impl Strategy<Value = Value> {
            (
                prop::sample::select(vec!["EUR", "JPY", "KWD", "BHD", "XAU", "eur", "ZZZ"]),
                prop::sample::select(vec![
                    "/items/0/price",
                    "/items/0/discount",
                    "/items/0/tax",
                    "/items/0/quantity",
                    "/payments/0/amount",
                    "/completed_at",
                ]),
                json_value(),
            )
                .prop_map(|(currency, pointer, value)| {
                    let mut order = order(currency, "12.5");
                    if let Some(slot) = order.pointer_mut(pointer) {
                        *slot = value;
                    }
                    order
                })
        }

        proptest! {
            #[test]
            fn parse_order_never_panics_on_arbitrary_json(value in json_value()) {
                let _ = parse_order(&value);
                let _ = parse_return(&value);
                let _ = parse_envelope(&value);
            }

            #[test]
            fn parse_order_never_panics_near_a_valid_order(value in near_order()) {
                if let Ok(order) = parse_order(&value) {
                    for item in &order.items {
                        prop_assert!(item.price * i64::from(item.quantity) - item.discount + item.tax <= MAX_MINOR);
                    }
                }
            }

            /// Minor units formatted in major units parse back to themselves, in currencies
            /// with 0, 2 and 3 decimals.
            #[test]
            fn a_decimal_string_round_trips(minor in 0..=MAX_MINOR, code in prop::sample::select(vec!["JPY", "EUR", "KWD"])) {
                let currency = Currency::parse(code).unwrap();
                let text = format_major(minor, currency);
                prop_assert_eq!(parse_amount(&text, currency), Ok(minor));
                prop_assert!(schemas::ORDER.check(&order(code, &text)).is_ok() || text.len() > 40);
            }

            #[test]
            fn any_text_is_an_amount_or_a_reason(text in ".{0,30}", code in prop::sample::select(vec!["JPY", "EUR", "KWD"])) {
                let currency = Currency::parse(code).unwrap();
                match parse_amount(&text, currency) {
                    Ok(minor) => prop_assert!((0..=MAX_MINOR).contains(&minor)),
                    Err(reason) => prop_assert!(!reason.is_empty()),
                }
            }
        }
    }
}
