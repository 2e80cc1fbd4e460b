//! Names built from what callers send: NATS KV keys (`[-/_=.A-Za-z0-9]`, no empty part) and
//! subject tokens (no `.`, `*`, `>` or space). [`token`] escapes every byte outside
//! `[A-Za-z0-9_-]` as `=XX` (hex), and the empty string as a lone `=`, so two different values
//! never share a token and the cache's invalidation computes the very key its read stored.

/// `value` as one key part or subject token.
pub fn token(value: &str) -> String {
    if value.is_empty() {
        return "=".into();
    }
    let mut out = String::with_capacity(value.len());
    for b in value.bytes() {
        if b.is_ascii_alphanumeric() || b == b'_' || b == b'-' {
            out.push(b as char);
        } else {
            out.push_str(&format!("={b:02X}"));
        }
    }
    out
}

/// Every byte but RFC 3986's unreserved ones (`A-Z a-z 0-9 - . _ ~`) percent-encoded: a form
/// value (`client_secret=…`), or an id that can never climb out of its path segment.
pub fn percent_encode(value: &str) -> String {
    value
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// The cache key of `operation` with `params` (name, value): the operation, then the values
/// in the order of their names (`get_transaction_history.CUST-1.10`).
pub fn cache_key(operation: &str, params: &[(&str, &str)]) -> String {
    let mut params = params.to_vec();
    params.sort_by_key(|(name, _)| *name);
    let mut key = operation.to_string();
    for (_, value) in params {
        key.push('.');
        key.push_str(&token(value));
    }
    key
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn legal_kv_key(key: &str) -> bool {
        !key.is_empty()
            && !key.starts_with('.')
            && !key.ends_with('.')
            && !key.contains("..")
            && key
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-/_=.".contains(&b))
    }

    #[test]
    fn values_are_percent_encoded() {
        assert_eq!(percent_encode("a b&c=d/é"), "a%20b%26c%3Dd%2F%C3%A9");
        assert_eq!(percent_encode("plain-_.~09"), "plain-_.~09");
    }

    #[test]
    fn params_are_ordered_by_name() {
        assert_eq!(
            cache_key("get_transaction_history", &[("limit", "10"), ("customer_id", "CUST-1")]),
            "get_transaction_history.CUST-1.10"
        );
        assert_eq!(token("a.b c"), "a=2Eb=20c");
        assert_eq!(token(""), "=");
        assert_eq!(token("alice@example.com"), "alice=40example=2Ecom");
    }

    proptest! {
        #[test]
        fn every_key_is_legal(op in "[a-z_]{1,20}", a in ".*", b in ".*") {
            let key = cache_key(&op, &[("a", &a), ("b", &b)]);
            prop_assert!(legal_kv_key(&key), "{key}");
            let t = token(&a);
            prop_assert!(!t.contains(['.', '*', '>', ' ']) && !t.is_empty());
        }

        #[test]
        fn different_values_never_share_a_token(a in ".*", b in ".*") {
            prop_assume!(a != b);
            prop_assert_ne!(token(&a), token(&b));
        }
    }
}
