//! Realistic NewStore events for `POST /webhooks/newstore/simulate`, `ihub simulate newstore`
//! and the benchmark: deterministic, so the same arguments give the same event.
//!
//! An order's content depends on its id only (two or three lines from a small catalogue, in
//! EUR, a 10 % discount on the first line, 19 % tax on every line, paid with a gift card and a
//! credit card), so the `order.opened`, `order.completed`, `order.cancelled` and
//! `return.processed` events of one order agree; `n` numbers the event (its id and time).

use chrono::{DateTime, SecondsFormat, TimeZone, Utc};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use super::domain::{
    Customer, EventKind, Item, Order, Payment, ReturnEvent, ReturnItem, order_payload,
};
use crate::money::Currency;

/// The NewStore store the simulated orders are placed in.
pub const STORE_ID: &str = "store-berlin-01";

/// (product id, name, unit price in euro cents)
const CATALOGUE: [(&str, &str, i64); 6] = [
    ("SKU-TEE-WHT-M", "Organic cotton T-shirt, white, M", 2990),
    ("SKU-JEANS-IND-32", "Slim jeans, indigo, 32/32", 8900),
    ("SKU-SNKR-LTH-42", "Leather sneakers, 42", 11995),
    ("SKU-CAP-BLK", "Baseball cap, black", 2450),
    ("SKU-SOCK-3PK", "Socks, 3-pack", 1299),
    ("SKU-HOOD-GRY-L", "Hooded sweatshirt, grey, L", 5995),
];

/// The gift card part of every simulated payment, in cents (the credit card pays the rest).
const GIFT_CARD: i64 = 1000;

/// The `n`-th simulated event of `kind` for `order_id`, published at 2026-11-23T10:00:00Z plus
/// `n` seconds.
pub fn event(kind: EventKind, order_id: &str, n: u64) -> Value {
    let base = Utc
        .with_ymd_and_hms(2026, 11, 23, 10, 0, 0)
        .single()
        .expect("a valid time");
    let offset = chrono::Duration::seconds(i64::try_from(n % 1_000_000_000).unwrap_or(0));
    event_at(kind, order_id, n, base + offset)
}

/// The `n`-th simulated event of `kind` for `order_id`, published `at`: the envelope, with the
/// order (or, for `return.processed`, a return of one unit of its first line) as payload.
pub fn event_at(kind: EventKind, order_id: &str, n: u64, at: DateTime<Utc>) -> Value {
    let time = at.to_rfc3339_opts(SecondsFormat::Secs, true);
    let mut order = order(order_id);
    let payload = match kind {
        EventKind::OrderOpened | EventKind::OrderCancelled => order_payload(&order),
        EventKind::OrderCompleted => {
            order.completed_at = Some(time.clone());
            order_payload(&order)
        }
        EventKind::ReturnProcessed => {
            let ret = return_of(&order, n, &time);
            serde_json::to_value(&ret).expect("a return is JSON")
        }
    };
    json!({
        "id": format!("evt_{}", digest(&[kind.as_str(), order_id, &n.to_string()], 12)),
        "name": kind.as_str(),
        "published_at": time,
        "payload": payload,
    })
}

/// The simulated order `order_id` (not completed: `completed_at` is `None`).
pub fn order(order_id: &str) -> Order {
    let seed = digest(&["order", order_id], 8);
    let pick = u64::from_str_radix(&seed, 16).unwrap_or(0);
    let lines = 2 + (pick % 2) as usize;
    let items: Vec<Item> = (0..lines)
        .map(|i| {
            let (product_id, name, price) =
                CATALOGUE[((pick >> (4 * i)) as usize + i) % CATALOGUE.len()];
            let quantity = 1 + ((pick >> (8 + 4 * i)) % 3) as u32;
            let gross = price * i64::from(quantity);
            let discount = if i == 0 { gross / 10 } else { 0 };
            Item {
                id: format!("itm_{seed}_{}", i + 1),
                product_id: product_id.to_string(),
                name: name.to_string(),
                quantity,
                price,
                discount,
                // 19 % of the discounted line, rounded half up.
                tax: ((gross - discount) * 19 + 50) / 100,
            }
        })
        .collect();
    let gross: i64 = items
        .iter()
        .map(|item| item.price * i64::from(item.quantity) - item.discount + item.tax)
        .sum();
    Order {
        id: order_id.to_string(),
        store_id: STORE_ID.to_string(),
        currency: Currency::parse("EUR").expect("EUR"),
        customer: Customer {
            id: format!("cus_{seed}"),
            email: Some(format!("customer.{seed}@example.com")),
        },
        items,
        payments: vec![
            Payment {
                method: "gift_card".into(),
                amount: GIFT_CARD,
            },
            Payment {
                method: "credit_card".into(),
                amount: gross - GIFT_CARD,
            },
        ],
        completed_at: None,
    }
}

/// The `n`-th simulated return of `order`: one unit of its first line.
fn return_of(order: &Order, n: u64, processed_at: &str) -> ReturnEvent {
    ReturnEvent {
        order_id: order.id.clone(),
        return_id: format!("ret_{}", digest(&[&order.id, &n.to_string()], 8)),
        items: vec![ReturnItem {
            item_id: order.items[0].id.clone(),
            quantity: 1,
        }],
        processed_at: processed_at.to_string(),
    }
}

/// The first `bytes` bytes of SHA-256 over `parts` (each length-prefixed), in hex.
fn digest(parts: &[&str], bytes: usize) -> String {
    let mut hash = Sha256::new();
    for part in parts {
        hash.update((part.len() as u64).to_be_bytes());
        hash.update(part.as_bytes());
    }
    hex::encode(&hash.finalize()[..bytes])
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::super::domain::{parse_envelope, parse_order, parse_return};
    use super::super::transform;
    use super::*;

    #[test]
    fn events_are_valid_deterministic_and_unique() {
        let mut ids = HashSet::new();
        for kind in EventKind::ALL {
            for order_id in ["ord-1", "ord-2", "A1b2.C3:d4"] {
                for n in 0..20 {
                    let value = event(kind, order_id, n);
                    assert_eq!(value, event(kind, order_id, n), "deterministic");
                    let envelope = parse_envelope(&value).expect("a valid envelope");
                    assert!(envelope.id.starts_with("evt_"), "{}", envelope.id);
                    assert!(ids.insert(envelope.id.clone()), "unique: {}", envelope.id);
                    assert_eq!(envelope.kind(), Some(kind));
                    if kind.carries_order() {
                        let order = parse_order(&envelope.payload).expect("a valid order");
                        assert_eq!(order.id, order_id);
                        assert_eq!(
                            order.completed_at.is_some(),
                            kind == EventKind::OrderCompleted
                        );
                    } else {
                        let ret = parse_return(&envelope.payload).expect("a valid return");
                        assert_eq!(ret.order_id, order_id);
                    }
                }
            }
        }
    }

    #[test]
    fn orders_are_realistic_and_their_transactions_valid() {
        for k in 0..50 {
            let order_id = format!("ord-{k}");
            let completed = event(EventKind::OrderCompleted, &order_id, k);
            let envelope = parse_envelope(&completed).unwrap();
            let order = parse_order(&envelope.payload).unwrap();
            assert_eq!(order.currency.code(), "EUR");
            assert!((2..=3).contains(&order.items.len()));
            assert!(order.items[0].discount > 0);
            assert!(order.items.iter().all(|item| item.tax > 0));
            assert_eq!(order.payments.len(), 2);

            let sale = transform::sale(
                &order,
                &envelope.id,
                "hail-1",
                order.completed_at.as_deref().unwrap(),
            );
            transform::validate(&sale).unwrap();
            let paid: i64 = sale.payments.iter().map(|p| p.amount).sum();
            assert_eq!(paid, sale.totals.gross, "the payments pay the order");

            let returned =
                parse_envelope(&event(EventKind::ReturnProcessed, &order_id, 7)).unwrap();
            let ret = parse_return(&returned.payload).unwrap();
            let refund = transform::refund(&order, &ret, &returned.id, "hail-1").unwrap();
            transform::validate(&refund).unwrap();
        }
    }

    #[test]
    fn event_at_uses_the_given_time() {
        let at = Utc.with_ymd_and_hms(2030, 1, 2, 3, 4, 5).unwrap();
        let value = event_at(EventKind::OrderCompleted, "ord-1", 1, at);
        assert_eq!(value["published_at"], "2030-01-02T03:04:05Z");
        assert_eq!(value["payload"]["completed_at"], "2030-01-02T03:04:05Z");
        assert_eq!(
            value["id"],
            event(EventKind::OrderCompleted, "ord-1", 1)["id"]
        );
    }
}
