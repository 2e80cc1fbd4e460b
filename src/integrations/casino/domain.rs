//! What the wallet's callers send, parsed: ids are opaque (a JSON string or integer, kept as a
//! string), amounts decimal strings in the currency's exponent, kept as integer minor units.

use serde::{Deserialize, Deserializer};

use crate::money::{Currency, parse_major};

/// An id the casino or the provider owns: `1` and `"1"` are the same id.
fn opaque_id<'de, D: Deserializer<'de>>(deserializer: D) -> Result<String, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Id {
        Text(String),
        Number(u64),
    }
    Ok(match Id::deserialize(deserializer)? {
        Id::Text(text) => text,
        Id::Number(n) => n.to_string(),
    })
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BalanceRequest {
    #[serde(deserialize_with = "opaque_id")]
    pub user_id: String,
    pub currency: Currency,
}

/// A debit (bet) or a credit (win).
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MoneyRequest {
    #[serde(deserialize_with = "opaque_id")]
    pub user_id: String,
    pub session_id: String,
    pub round_id: String,
    #[serde(deserialize_with = "opaque_id")]
    pub game_id: String,
    pub external_transaction_id: String,
    pub amount: String,
    pub currency: Currency,
}

impl MoneyRequest {
    /// The amount in minor units; more decimals than the currency has is an error.
    pub fn minor(&self) -> Result<i64, String> {
        parse_major(&self.amount, self.currency).map_err(|err| err.to_string())
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RollbackRequest {
    #[serde(deserialize_with = "opaque_id")]
    pub user_id: String,
    pub external_transaction_id: String,
    pub original_transaction_id: String,
    pub round_id: String,
}

/// `launchGame` and `simulateRound`.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LaunchRequest {
    #[serde(deserialize_with = "opaque_id")]
    pub user_id: String,
    #[serde(deserialize_with = "opaque_id")]
    pub game_id: String,
    pub currency: Currency,
}

/// `CASINO_PLAYERS_JSON`: `[{"userId", "balances": {"USD": "100.00"}}]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Player {
    #[serde(deserialize_with = "opaque_id")]
    pub user_id: String,
    pub balances: std::collections::BTreeMap<String, String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_opaque_strings_or_integers() {
        let a: BalanceRequest = serde_json::from_str(r#"{"userId":1,"currency":"USD"}"#).unwrap();
        let b: BalanceRequest =
            serde_json::from_str(r#"{"userId":"1","currency":"USD"}"#).unwrap();
        assert_eq!(a.user_id, b.user_id);
        assert!(serde_json::from_str::<BalanceRequest>(r#"{"userId":1.5,"currency":"USD"}"#).is_err());
        assert!(serde_json::from_str::<BalanceRequest>(r#"{"userId":1,"currency":"XYZ"}"#).is_err());
    }

    #[test]
    fn amounts_take_the_currency_exponent() {
        let request = |amount: &str, currency: &str| -> MoneyRequest {
            serde_json::from_value(serde_json::json!({
                "userId": 1, "sessionId": "s", "roundId": "r", "gameId": 7,
                "externalTransactionId": "t", "amount": amount, "currency": currency,
            }))
            .unwrap()
        };
        assert_eq!(request("10.50", "USD").minor(), Ok(1050));
        assert_eq!(request("10", "JPY").minor(), Ok(10));
        assert_eq!(request("1.250", "KWD").minor(), Ok(1250));
        assert!(request("10.505", "USD").minor().is_err());
        assert!(request("1.5", "JPY").minor().is_err());
    }

    use proptest::prelude::*;

    proptest! {
        #[test]
        fn an_integer_id_and_its_digits_are_one_id(n in any::<u64>()) {
            let number: BalanceRequest =
                serde_json::from_value(serde_json::json!({"userId": n, "currency": "EUR"})).unwrap();
            let text: BalanceRequest = serde_json::from_value(
                serde_json::json!({"userId": n.to_string(), "currency": "EUR"}),
            )
            .unwrap();
            prop_assert_eq!(number.user_id, text.user_id);
        }

        #[test]
        fn amounts_round_trip_through_their_decimal_string(
            minor in 0i64..1_000_000_000_000,
            code in prop::sample::select(vec!["USD", "JPY", "KWD"]),
        ) {
            let currency = Currency::parse(code).unwrap();
            let request: MoneyRequest = serde_json::from_value(serde_json::json!({
                "userId": 1, "sessionId": "s", "roundId": "r", "gameId": 7,
                "externalTransactionId": "t",
                "amount": crate::money::format_major(minor, currency),
                "currency": code,
            }))
            .unwrap();
            prop_assert_eq!(request.minor(), Ok(minor));
        }
    }
}
