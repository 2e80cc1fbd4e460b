//! The JSON Schemas in `schemas/`, compiled once: every inbound payload is checked against its
//! schema before anything is published, and every event on a subject has one (tests check the
//! events the pipeline publishes against them).

use std::sync::LazyLock;

use serde_json::Value;

pub struct Schema {
    pub name: &'static str,
    validator: jsonschema::Validator,
}

impl Schema {
    fn compile(name: &'static str, text: &str) -> Self {
        let schema: Value = serde_json::from_str(text)
            .unwrap_or_else(|err| panic!("schemas/{name} is not JSON: {err}"));
        let validator = jsonschema::validator_for(&schema)
            .unwrap_or_else(|err| panic!("schemas/{name} is not a valid schema: {err}"));
        Self { name, validator }
    }

    /// Every violation, as "`/path`: message" lines a caller can act on.
    pub fn check(&self, value: &Value) -> Result<(), Vec<String>> {
        if self.validator.is_valid(value) {
            return Ok(());
        }
        Err(self
            .validator
            .iter_errors(value)
            .map(|err| {
                let path = err.instance_path().to_string();
                let path = if path.is_empty() {
                    "/".to_string()
                } else {
                    path
                };
                format!("{path}: {}", err.masked())
            })
            .collect())
    }
}

macro_rules! schema {
    ($static:ident, $file:literal) => {
        pub static $static: LazyLock<Schema> =
            LazyLock::new(|| Schema::compile($file, include_str!(concat!("../schemas/", $file))));
    };
}

schema!(WALLET_REQUEST, "wallet-request.json");
schema!(OPERATOR_CALLBACK, "operator-callback.json");
schema!(WALLET_REQUESTED, "events/wallet-requested.json");
schema!(OPERATOR_COMMAND, "events/operator-command.json");
schema!(RGS_WEBHOOK, "events/rgs-webhook.json");
schema!(ORDER_REQUEST, "order-request.json");
schema!(ORDER_ACCEPTED, "events/order-accepted.json");
schema!(AUTH_REFUSED, "events/auth-refused.json");
schema!(TICKETING_COMMAND, "events/ticketing-command.json");
schema!(OTA_CALLBACK_COMMAND, "events/ota-callback-command.json");

/// The schema of the events on `subject` (unprefixed), if ihub publishes there.
pub fn for_subject(subject: &str) -> Option<&'static Schema> {
    Some(match subject {
        "in.wallet.debit" | "in.wallet.credit" => &WALLET_REQUESTED,
        "in.wallet.operator_callback" => &OPERATOR_CALLBACK,
        "out.operator.withdraw" | "out.operator.deposit" => &OPERATOR_COMMAND,
        "out.rgs.webhook" => &RGS_WEBHOOK,
        "in.wavegate.order_accepted" => &ORDER_ACCEPTED,
        "in.wavegate.auth_refused" => &AUTH_REFUSED,
        "out.ticketing.order" => &TICKETING_COMMAND,
        "out.ota.callback" => &OTA_CALLBACK_COMMAND,
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn every_schema_compiles() {
        for s in [
            &WALLET_REQUEST,
            &OPERATOR_CALLBACK,
            &WALLET_REQUESTED,
            &OPERATOR_COMMAND,
            &RGS_WEBHOOK,
            &ORDER_REQUEST,
            &ORDER_ACCEPTED,
            &AUTH_REFUSED,
            &TICKETING_COMMAND,
            &OTA_CALLBACK_COMMAND,
        ] {
            assert!(!s.name.is_empty());
        }
    }

    #[test]
    fn wallet_requests_are_strict() {
        let ok = json!({"player_id": "p1", "amount": 1050, "currency": "EUR"});
        assert!(WALLET_REQUEST.check(&ok).is_ok());
        let errors = WALLET_REQUEST
            .check(&json!({"player_id": "p1", "amount": "10", "currency": "EUR", "x": 1}))
            .unwrap_err();
        assert!(
            errors.iter().any(|e| e.starts_with("/amount")),
            "{errors:?}"
        );
        assert!(errors.iter().any(|e| e.contains("x")), "{errors:?}");
        assert!(
            WALLET_REQUEST
                .check(&json!({"player_id": "p1", "amount": 0, "currency": "EUR"}))
                .is_err()
        );
        assert!(
            WALLET_REQUEST
                .check(&json!({"player_id": "p1", "amount": 10.5, "currency": "EUR"}))
                .is_err()
        );
    }
}
