//! WaveGate's messages (seed 3): what an OTA partner sends, what travels on NATS, what the
//! ticketing system gets, what the partner is called back with, and the pure steps between.

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use uuid::Uuid;

use crate::config::Secret;
use crate::money::Currency;

/// A partner id as `X-Partner-Id` carries it: 1 to 64 of `[A-Za-z0-9_-]` (it names KV keys).
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct PartnerId(String);

impl PartnerId {
    pub fn parse(raw: &str) -> Result<Self, String> {
        let ok = !raw.is_empty()
            && raw.len() <= 64
            && raw
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if ok {
            Ok(Self(raw.to_string()))
        } else {
            Err("a partner id has 1 to 64 letters, digits, '-' or '_'".into())
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for PartnerId {
    type Error = String;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::parse(&value)
    }
}

impl From<PartnerId> for String {
    fn from(value: PartnerId) -> Self {
        value.0
    }
}

impl std::fmt::Display for PartnerId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// How a partner token is stored: hex HMAC-SHA256(APP_HMAC_SECRET, token).
pub fn token_hash(key: &Secret, token: &str) -> String {
    hex::encode(crate::signatures::hmac_sha256(
        key.expose().as_bytes(),
        token.as_bytes(),
    ))
}

/// One partner of `PARTNERS_JSON`, as the seed writes it.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PartnerSeed {
    pub id: PartnerId,
    pub name: String,
    pub token: Secret,
    /// CIDR ranges (or single addresses) the partner may call from; empty allows none.
    #[serde(default)]
    pub allowlist_cidrs: Vec<String>,
}

/// A line of an order; money in minor units.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Item {
    pub sku: String,
    pub qty: u32,
    pub unit_price_minor: i64,
    pub currency: Currency,
}

/// `POST /orders` body (schemas/wavegate/order-request.json).
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OrderRequest {
    pub external_order_id: String,
    pub callback_url: String,
    pub items: Vec<Item>,
    #[serde(default)]
    pub buyer: Option<Value>,
}

impl OrderRequest {
    /// The order's one currency and its total, or why the items do not make an order.
    pub fn totals(&self) -> Result<(Currency, i64), String> {
        let currency = self.items.first().ok_or("an order needs items")?.currency;
        if let Some(other) = self.items.iter().find(|i| i.currency != currency) {
            return Err(format!(
                "every item must have the order's one currency: {} and {} differ",
                currency, other.currency
            ));
        }
        self.items
            .iter()
            .try_fold(0i64, |total, item| {
                item.unit_price_minor
                    .checked_mul(i64::from(item.qty))
                    .and_then(|line| total.checked_add(line))
            })
            .map(|total| (currency, total))
            .ok_or_else(|| "the order total is too large".into())
    }
}

/// An order as the pipeline carries it from stage to stage.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Order {
    pub id: Uuid,
    pub partner_id: PartnerId,
    pub external_order_id: String,
    /// A server UUID: the order's OpenTelemetry trace id, `X-Trace-Id` and the
    /// `Idempotency-Key` of every outbound call.
    pub trace_id: Uuid,
    pub callback_url: String,
    pub currency: Currency,
    pub total_minor: i64,
    pub items: Vec<Item>,
    pub buyer: Option<Value>,
    pub created_at: chrono::DateTime<chrono::Utc>,
}

impl Order {
    /// The body POSTed to the ticketing system.
    pub fn ticketing_request(&self) -> Value {
        json!({
            "order_id": self.id,
            "partner_id": self.partner_id,
            "external_order_id": self.external_order_id,
            "currency": self.currency,
            "total_minor": self.total_minor,
            "items": self.items,
            "buyer": self.buyer,
        })
    }
}

/// `in.wavegate.order_accepted` (schemas/wavegate/events/order-accepted.json).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct OrderAccepted {
    pub order: Order,
    /// The partner's `Idempotency-Key`, when it sent one.
    pub idempotency_key: Option<String>,
    /// The body as the partner sent it.
    pub raw_payload: Value,
}

/// `out.ticketing.order` (schemas/wavegate/events/ticketing-command.json).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TicketingCommand {
    pub order: Order,
}

/// What the ticketing system answers with.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ticket {
    pub sku: String,
    pub code: String,
}

/// The callback body POSTed to the partner's `callback_url`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Callback {
    /// Always `order.ticketed`.
    pub event: String,
    pub order: Order,
    /// Always `ticketed`.
    pub status: String,
    pub tickets: Vec<Ticket>,
    pub ticketed_at: chrono::DateTime<chrono::Utc>,
}

impl Callback {
    /// What the partner is told once ticketing issued `tickets` for `order`.
    pub fn ticketed(
        order: Order,
        tickets: Vec<Ticket>,
        ticketed_at: chrono::DateTime<chrono::Utc>,
    ) -> Self {
        Callback {
            event: "order.ticketed".into(),
            order,
            status: "ticketed".into(),
            tickets,
            ticketed_at,
        }
    }
}

/// `out.ota.callback` (schemas/wavegate/events/ota-callback-command.json).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CallbackCommand {
    pub callback: Callback,
}

/// `in.wavegate.auth_refused` (schemas/wavegate/events/auth-refused.json): a refused call, for the
/// `auth_events` table.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AuthRefused {
    pub id: Uuid,
    pub partner_id: Option<String>,
    /// `unknown_partner`, `invalid_token`, `ip_not_allowed` or `rate_limited`.
    pub reason: String,
    pub ip: String,
    pub user_agent: Option<String>,
    pub method: String,
    pub path: String,
    pub occurred_at: chrono::DateTime<chrono::Utc>,
}

/// Where an order is in the pipeline.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PipelineStatus {
    Accepted,
    TicketingProcessing,
    Ticketed,
    OtaCallbackPending,
    OtaCallbackDelivered,
    TicketingBlocked,
    OtaCallbackBlocked,
}

impl PipelineStatus {
    pub const ALL: [PipelineStatus; 7] = [
        PipelineStatus::Accepted,
        PipelineStatus::TicketingProcessing,
        PipelineStatus::Ticketed,
        PipelineStatus::OtaCallbackPending,
        PipelineStatus::OtaCallbackDelivered,
        PipelineStatus::TicketingBlocked,
        PipelineStatus::OtaCallbackBlocked,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            PipelineStatus::Accepted => "accepted",
            PipelineStatus::TicketingProcessing => "ticketing_processing",
            PipelineStatus::Ticketed => "ticketed",
            PipelineStatus::OtaCallbackPending => "ota_callback_pending",
            PipelineStatus::OtaCallbackDelivered => "ota_callback_delivered",
            PipelineStatus::TicketingBlocked => "ticketing_blocked",
            PipelineStatus::OtaCallbackBlocked => "ota_callback_blocked",
        }
    }

    pub fn parse(raw: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.as_str() == raw)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(qty: u32, price: i64, currency: &str) -> Item {
        Item {
            sku: "ADULT-DAY".into(),
            qty,
            unit_price_minor: price,
            currency: Currency::parse(currency).unwrap(),
        }
    }

    fn order(items: Vec<Item>) -> OrderRequest {
        OrderRequest {
            external_order_id: "EXT-42".into(),
            callback_url: "https://partner.example/cb".into(),
            items,
            buyer: None,
        }
    }

    #[test]
    fn totals_need_one_currency() {
        let (currency, total) = order(vec![item(2, 129_900, "THB"), item(1, 50, "THB")])
            .totals()
            .unwrap();
        assert_eq!((currency.code(), total), ("THB", 259_850));
        let err = order(vec![item(1, 1, "THB"), item(1, 1, "EUR")])
            .totals()
            .unwrap_err();
        assert!(err.contains("THB and EUR"), "{err}");
        assert!(order(vec![item(2, i64::MAX, "EUR")]).totals().is_err());
    }

    fn accepted() -> Order {
        let request = order(vec![item(2, 129_900, "THB"), item(1, 69_900, "THB")]);
        let (currency, total_minor) = request.totals().unwrap();
        Order {
            id: Uuid::from_u128(1),
            partner_id: PartnerId::parse("acme").unwrap(),
            external_order_id: request.external_order_id,
            trace_id: Uuid::from_u128(2),
            callback_url: request.callback_url,
            currency,
            total_minor,
            items: request.items,
            buyer: Some(json!({"name": "Alex"})),
            created_at: chrono::Utc::now(),
        }
    }

    #[test]
    fn ticketing_gets_the_order_in_minor_units() {
        let order = accepted();
        let body = order.ticketing_request();
        assert_eq!(body["order_id"], json!(order.id));
        assert_eq!(body["partner_id"], "acme");
        assert_eq!(body["external_order_id"], "EXT-42");
        assert_eq!(body["currency"], "THB");
        assert_eq!(body["total_minor"], 2 * 129_900 + 69_900);
        assert_eq!(body["items"][0]["qty"], 2);
        assert_eq!(body["items"][1]["unit_price_minor"], 69_900);
        assert_eq!(body["buyer"]["name"], "Alex");
        assert_eq!(body.as_object().unwrap().len(), 7, "{body}");
    }

    #[test]
    fn the_callback_says_ticketed_with_every_ticket() {
        let tickets = vec![Ticket {
            sku: "ADULT-DAY".into(),
            code: "TKT-ABCDEFGHIJ".into(),
        }];
        let at = chrono::Utc::now();
        let callback = Callback::ticketed(accepted(), tickets.clone(), at);
        assert_eq!((callback.event.as_str(), callback.status.as_str()), ("order.ticketed", "ticketed"));
        assert_eq!(callback.tickets, tickets);
        assert_eq!(callback.ticketed_at, at);
        let schema_ready = serde_json::to_value(CallbackCommand { callback }).unwrap();
        assert_eq!(schema_ready["callback"]["order"]["partner_id"], "acme");
    }

    #[test]
    fn tokens_are_stored_as_keyed_hashes() {
        let key = Secret::new("k");
        let hash = token_hash(&key, "demotoken");
        assert_eq!(hash.len(), 64);
        assert_ne!(hash, token_hash(&Secret::new("other"), "demotoken"));
        assert!(!hash.contains("demotoken"));
        let seed: PartnerSeed =
            serde_json::from_str(r#"{"id":"demo","name":"Demo","token":"demotoken"}"#).unwrap();
        assert!(!format!("{seed:?}").contains("demotoken"));
    }

    #[test]
    fn partner_ids_are_kv_safe() {
        assert!(PartnerId::parse("demo_partner-1").is_ok());
        for bad in ["", "a.b", "a b", "a*", &"x".repeat(65)] {
            assert!(PartnerId::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn statuses_round_trip() {
        for status in PipelineStatus::ALL {
            assert_eq!(PipelineStatus::parse(status.as_str()), Some(status));
            assert_eq!(
                serde_json::to_value(status).unwrap(),
                serde_json::json!(status.as_str())
            );
        }
    }
}
