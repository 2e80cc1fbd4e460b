//! What every body must be before a handler looks at it, and the shape of every refusal.
//!
//! The edge is the one place input is checked for what the store and the bus can take: a body
//! accepted here can be written to a Postgres `text` or `jsonb` column and carried in a NATS
//! message. So a JSON body is refused (400) when it
//!
//! * is not JSON, or holds a key twice in one object (`{"amount":1,"amount":9}` would mean
//!   whatever the last parser to read it decides);
//! * holds text with U+0000 (Postgres cannot store it) or another control character where it
//!   means nothing: C0 controls but tab, line feed and carriage return, DEL, C1 controls, and
//!   in keys none at all.
//!
//! What each field may hold beyond that (ids with a defined character set, numbers in range)
//! is in the integration's JSON Schema. Answers the router makes itself (404, 405, 413 …) get
//! the same JSON error body as the handlers' refusals.

use std::fmt;

use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Value};

use super::ApiError;

/// The body as JSON, or 400: `invalid_json` (not JSON, or a key twice) or `invalid_text` (a
/// character the hub will not store), naming where.
pub fn json_body(body: &[u8]) -> Result<Value, ApiError> {
    let Strict(value) = serde_json::from_slice(body).map_err(|err| {
        ApiError::bad_request("invalid_json", format!("the body is not JSON: {err}"))
    })?;
    check_text(&value, &mut String::new())?;
    Ok(value)
}

/// A JSON value that refuses duplicate keys while it is read.
struct Strict(Value);

impl<'de> Deserialize<'de> for Strict {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(StrictVisitor).map(Strict)
    }
}

struct StrictVisitor;

impl<'de> Visitor<'de> for StrictVisitor {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Value, E> {
        serde_json::Number::from_f64(v)
            .map(Value::Number)
            .ok_or_else(|| E::custom("a number out of range"))
    }

    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_owned()))
    }

    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }

    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::new();
        while let Some(Strict(item)) = seq.next_element()? {
            items.push(item);
        }
        Ok(Value::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut object = Map::new();
        while let Some(key) = map.next_key::<String>()? {
            if object.contains_key(&key) {
                return Err(de::Error::custom(format!("the key {key:?} appears twice")));
            }
            let Strict(value) = map.next_value()?;
            object.insert(key, value);
        }
        Ok(Value::Object(object))
    }
}

/// Whether `c` is a control character that means nothing in text: every C0 control but tab,
/// line feed and carriage return, DEL, and the C1 controls. NUL is one of them.
pub fn meaningless_control(c: char) -> bool {
    c.is_control() && !matches!(c, '\t' | '\n' | '\r')
}

/// Refuses the first string or key under `value` holding a character the hub will not store,
/// naming it by JSON pointer (`pointer` is where `value` is).
fn check_text(value: &Value, pointer: &mut String) -> Result<(), ApiError> {
    match value {
        Value::String(text) => refuse_text(text, pointer, meaningless_control),
        Value::Array(items) => items.iter().enumerate().try_for_each(|(index, item)| {
            let len = pointer.len();
            pointer.push_str(&format!("/{index}"));
            check_text(item, pointer)?;
            pointer.truncate(len);
            Ok(())
        }),
        Value::Object(object) => object.iter().try_for_each(|(key, item)| {
            let len = pointer.len();
            pointer.push('/');
            pointer.push_str(&key.replace('~', "~0").replace('/', "~1"));
            refuse_text(key, &format!("{pointer} (the key)"), char::is_control)?;
            check_text(item, pointer)?;
            pointer.truncate(len);
            Ok(())
        }),
        _ => Ok(()),
    }
}

fn refuse_text(text: &str, pointer: &str, refused: fn(char) -> bool) -> Result<(), ApiError> {
    match text.chars().find(|c| refused(*c)) {
        None => Ok(()),
        Some(c) => Err(ApiError::bad_request(
            "invalid_text",
            format!(
                "{}: U+{:04X} is a control character the hub does not accept in text",
                if pointer.is_empty() { "/" } else { pointer },
                c as u32
            ),
        )),
    }
}

/// A control character percent-encoded in the path or query (`%00`, `%0A`, …) names nothing
/// the hub holds, and a NUL would reach Postgres, which refuses it: 400 `invalid_url` before
/// any route sees it.
pub async fn refuse_control_characters_in_url(
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let uri = request.uri();
    let text = uri.path_and_query().map_or(uri.path(), |pq| pq.as_str());
    if let Some(byte) = encoded_control(text) {
        return ApiError::bad_request(
            "invalid_url",
            format!("the URL holds %{byte:02X}, a control character the hub does not accept"),
        )
        .into_response();
    }
    next.run(request).await
}

/// The first control character (U+0000–U+001F, U+007F) percent-encoded in `text`.
fn encoded_control(text: &str) -> Option<u8> {
    let bytes = text.as_bytes();
    bytes.windows(3).find_map(|w| {
        if w[0] != b'%' {
            return None;
        }
        let byte = u8::from_str_radix(std::str::from_utf8(&w[1..]).ok()?, 16).ok()?;
        (byte < 0x20 || byte == 0x7f).then_some(byte)
    })
}

/// The answer for a path no route serves.
pub async fn not_found() -> Response {
    ApiError::not_found("no such route; the README lists the hub's routes").into_response()
}

/// Gives every error the router or an extractor made itself (404, 405, 413, 415, a query or
/// path it could not read) the JSON body handlers answer with; their text becomes the message.
pub async fn json_errors(response: Response) -> Response {
    let status = response.status();
    let is_json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if !(status.is_client_error() || status.is_server_error()) || is_json {
        return response;
    }
    let (parts, body) = response.into_parts();
    let text = axum::body::to_bytes(body, 4096).await.unwrap_or_default();
    let text = String::from_utf8_lossy(&text);
    let (code, message) = match status {
        StatusCode::NOT_FOUND => ("not_found", "no such route".to_string()),
        StatusCode::METHOD_NOT_ALLOWED => (
            "method_not_allowed",
            "this route does not take that method; the Allow header lists those it takes"
                .to_string(),
        ),
        StatusCode::PAYLOAD_TOO_LARGE => (
            "body_too_large",
            format!(
                "the body is larger than the ingress reads ({} bytes)",
                super::BODY_LIMIT
            ),
        ),
        StatusCode::UNSUPPORTED_MEDIA_TYPE => ("unsupported_media_type", text.into_owned()),
        _ if status.is_client_error() => ("bad_request", text.into_owned()),
        _ => (
            "internal",
            "internal error; the hub's logs have the details".into(),
        ),
    };
    let mut refused = ApiError::new(status, code, message).into_response();
    for (name, value) in parts.headers.iter() {
        if name != header::CONTENT_TYPE && name != header::CONTENT_LENGTH {
            refused.headers_mut().insert(name.clone(), value.clone());
        }
    }
    refused
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encoded_control_characters_are_found() {
        assert_eq!(encoded_control("/casino/ledger?userId=mr%00jl"), Some(0));
        assert_eq!(encoded_control("/orders/%0a"), Some(0x0a));
        assert_eq!(encoded_control("/x?y=%7F"), Some(0x7f));
        assert_eq!(encoded_control("/x?y=%20%C3%A9%25"), None);
        assert_eq!(encoded_control("/x?y=%2"), None);
    }
    use proptest::prelude::*;

    fn refusal(body: &str) -> (&'static str, String) {
        let err = json_body(body.as_bytes()).unwrap_err();
        assert_eq!(err.status, StatusCode::BAD_REQUEST);
        (err.code, err.message)
    }

    #[test]
    fn duplicate_keys_are_refused_at_any_depth() {
        let (code, message) = refusal(r#"{"amount":1,"amount":9}"#);
        assert_eq!(code, "invalid_json");
        assert!(message.contains(r#""amount" appears twice"#), "{message}");
        assert_eq!(
            refusal(r#"{"buyer":{"name":"a","name":"b"}}"#).0,
            "invalid_json"
        );
        assert_eq!(refusal(r#"[{"a":1},{"b":1,"b":1}]"#).0, "invalid_json");
        // The same key in sibling objects is fine.
        assert!(json_body(br#"[{"a":1},{"a":2}]"#).is_ok());
    }

    #[test]
    fn nul_and_meaningless_controls_are_refused_with_where() {
        let (code, message) = refusal(r#"{"items":[{"name":"A\u0000B"}]}"#);
        assert_eq!(code, "invalid_text");
        assert!(message.starts_with("/items/0/name: U+0000"), "{message}");
        assert_eq!(refusal(r#"{"a":"\u001b[31m"}"#).0, "invalid_text");
        assert_eq!(refusal(r#"{"a":"\u007f"}"#).0, "invalid_text");
        assert_eq!(refusal(r#"{"a":"\u0085"}"#).0, "invalid_text");
        let (_, message) = refusal(r#"{"a\nb":1}"#);
        assert!(message.contains("(the key)"), "{message}");
        assert!(
            refusal(r#"{"a/b":{"c":"\u0001"}}"#)
                .1
                .starts_with("/a~1b/c:")
        );
        assert_eq!(refusal("\"\\u0000\"").1.split(':').next(), Some("/"));
    }

    #[test]
    fn ordinary_text_passes() {
        let value =
            json_body(r#"{"note":"line 1\nline 2\ttab","name":"Zoë 東京 🎫"}"#.as_bytes()).unwrap();
        assert_eq!(value["name"], "Zoë 東京 🎫");
    }

    #[test]
    fn what_is_not_json_is_refused() {
        for body in ["", "{", "nope", "{\"a\":1}x", "\"\\ud800\"", "\u{0}"] {
            assert_eq!(refusal(body).0, "invalid_json", "{body:?}");
        }
        assert_eq!(
            json_body(&[0xff, 0xfe, b'{', b'}']).unwrap_err().code,
            "invalid_json"
        );
    }

    /// JSON values whose text may hold anything, control characters included.
    fn any_json() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(Value::from),
            ".*".prop_map(Value::String),
        ];
        leaf.prop_recursive(4, 32, 6, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
                prop::collection::btree_map(".*", inner, 0..6)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    fn has_refused_text(value: &Value) -> bool {
        match value {
            Value::String(s) => s.chars().any(meaningless_control),
            Value::Array(items) => items.iter().any(has_refused_text),
            Value::Object(o) => o
                .iter()
                .any(|(k, v)| k.chars().any(char::is_control) || has_refused_text(v)),
            _ => false,
        }
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic_and_refusals_are_400(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
            if let Err(err) = json_body(&bytes) {
                prop_assert_eq!(err.status, StatusCode::BAD_REQUEST);
                prop_assert!(err.code == "invalid_json" || err.code == "invalid_text");
            }
        }

        #[test]
        fn arbitrary_json_is_accepted_exactly_when_its_text_is_clean(value in any_json()) {
            let body = serde_json::to_vec(&value).unwrap();
            match json_body(&body) {
                Ok(parsed) => {
                    prop_assert!(!has_refused_text(&value));
                    prop_assert_eq!(parsed, value);
                }
                Err(err) => {
                    prop_assert_eq!(err.code, "invalid_text");
                    prop_assert!(has_refused_text(&value));
                }
            }
        }

        #[test]
        fn a_repeated_key_is_always_refused(key in "[a-z]{1,8}", a in any::<i64>(), b in any::<i64>()) {
            let body = format!(r#"{{"{key}":{a},"x{key}":0,"{key}":{b}}}"#);
            prop_assert_eq!(json_body(body.as_bytes()).unwrap_err().code, "invalid_json");
        }
    }
}
