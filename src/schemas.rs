//! JSON Schemas, from `schemas/<integration>/`. Each integration declares its schemas as
//! statics with [`schema!`](crate::schema) and maps the subjects it publishes on to them
//! ([`Event`]); every inbound payload is checked against its schema before anything is
//! published, and the tests check every published event against the schema of its subject.

use std::sync::OnceLock;

use serde_json::Value;

/// A schema file, compiled on first use.
pub struct Schema {
    /// Its path under `schemas/`, e.g. `wallet/wallet-request.json`.
    pub name: &'static str,
    text: &'static str,
    validator: OnceLock<jsonschema::Validator>,
}

impl Schema {
    pub const fn new(name: &'static str, text: &'static str) -> Self {
        Self {
            name,
            text,
            validator: OnceLock::new(),
        }
    }

    /// The schema file's text.
    pub fn text(&self) -> &'static str {
        self.text
    }

    /// Compiles the schema (once). A schema file that does not compile is a bug in ihub, and
    /// a test compiles them all.
    pub fn validator(&self) -> &jsonschema::Validator {
        self.validator.get_or_init(|| {
            let schema: Value = serde_json::from_str(self.text)
                .unwrap_or_else(|err| panic!("schemas/{} is not JSON: {err}", self.name));
            jsonschema::validator_for(&schema)
                .unwrap_or_else(|err| panic!("schemas/{} is not a valid schema: {err}", self.name))
        })
    }

    /// Every violation, as "`/path`: message" lines a caller can act on.
    pub fn check(&self, value: &Value) -> Result<(), Vec<String>> {
        let validator = self.validator();
        if validator.is_valid(value) {
            return Ok(());
        }
        Err(validator
            .iter_errors(value)
            .map(|err| {
                let path = err.instance_path().to_string();
                let path = if path.is_empty() { "/".into() } else { path };
                format!("{path}: {}", err.masked())
            })
            .collect())
    }
}

/// `static NAME: Schema` from `schemas/<path>`.
#[macro_export]
macro_rules! schema {
    ($(#[$doc:meta])* $static:ident, $path:literal) => {
        $(#[$doc])*
        pub static $static: $crate::schemas::Schema = $crate::schemas::Schema::new(
            $path,
            include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/schemas/", $path)),
        );
    };
}

/// The schema of the events an integration publishes on one subject (unprefixed).
pub struct Event {
    pub subject: &'static str,
    pub schema: &'static Schema,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    static SAMPLE: Schema = Schema::new(
        "sample.json",
        r#"{"type": "object", "required": ["n"], "additionalProperties": false,
            "properties": {"n": {"type": "integer", "minimum": 1}}}"#,
    );

    #[test]
    fn violations_name_the_path() {
        assert!(SAMPLE.check(&json!({"n": 1})).is_ok());
        let errors = SAMPLE.check(&json!({"n": 0, "x": true})).unwrap_err();
        assert!(errors.iter().any(|e| e.starts_with("/n: ")), "{errors:?}");
        assert!(errors.iter().any(|e| e.starts_with("/: ")), "{errors:?}");
    }
}
