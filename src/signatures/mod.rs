//! HMAC signing schemes and the canonical JSON they sign.

mod canonical;
pub mod webhooks;

pub use canonical::canonical_json;

use hmac::{KeyInit, Mac};
use sha2::Sha256;

use crate::config::Secret;

type HmacSha256 = hmac::Hmac<Sha256>;

pub const TIMESTAMP_HEADER: &str = "x-timestamp";
pub const SIGNATURE_HEADER: &str = "x-signature";

/// HMAC-SHA256 of `message` under `key`.
pub fn hmac_sha256(key: &[u8], message: &[u8]) -> [u8; 32] {
    let mut mac = HmacSha256::new_from_slice(key).expect("HMAC takes keys of any length");
    mac.update(message);
    mac.finalize().into_bytes().into()
}

/// Compares two secrets in time independent of where they differ (and of their lengths
/// beyond the MAC): both are reduced to an HMAC under a fixed key, then verified.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    let tag = hmac_sha256(b"ihub-compare", a);
    let mut mac = HmacSha256::new_from_slice(b"ihub-compare").expect("any key length");
    mac.update(b);
    mac.verify_slice(&tag).is_ok()
}

/// A body signature as NewStore and the casino use it: lowercase hex HMAC-SHA256 of the raw
/// body under `secret`.
pub fn body_signature(secret: &Secret, body: &[u8]) -> String {
    hex::encode(hmac_sha256(secret.expose().as_bytes(), body))
}

/// Whether `signature` (hex, either case, surrounding whitespace ignored) is
/// [`body_signature`] of `body`; compared in constant time.
pub fn verify_body_signature(secret: &Secret, signature: &str, body: &[u8]) -> bool {
    let given = signature.trim().to_ascii_lowercase();
    constant_time_eq(given.as_bytes(), body_signature(secret, body).as_bytes())
}

/// Why a signed request was refused. The messages are safe to show the caller.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SignatureError {
    #[error("missing X-Timestamp header")]
    MissingTimestamp,
    #[error("missing X-Signature header")]
    MissingSignature,
    #[error("X-Timestamp must be unix seconds")]
    BadTimestamp,
    #[error(
        "X-Timestamp is {skew_secs} s away from the server clock (tolerance {tolerance_secs} s)"
    )]
    Stale { skew_secs: i64, tolerance_secs: u64 },
    #[error("X-Signature does not match the body")]
    Mismatch,
}

/// The wallet scheme: `X-Signature` = lowercase hex of
/// HMAC-SHA256(secret, "{timestamp}:{canonical_json(body)}"), `X-Timestamp` in unix seconds.
#[derive(Clone, Debug)]
pub struct TimestampedHmac {
    secret: Secret,
    tolerance_secs: u64,
}

impl TimestampedHmac {
    pub fn new(secret: Secret, tolerance: std::time::Duration) -> Self {
        Self {
            secret,
            tolerance_secs: tolerance.as_secs(),
        }
    }

    pub fn sign(&self, timestamp: i64, canonical_body: &str) -> String {
        hex::encode(hmac_sha256(
            self.secret.expose().as_bytes(),
            format!("{timestamp}:{canonical_body}").as_bytes(),
        ))
    }

    /// The two headers for `body`, signed now.
    pub fn headers_for(&self, body: &serde_json::Value) -> [(&'static str, String); 2] {
        let now = unix_now();
        [
            (TIMESTAMP_HEADER, now.to_string()),
            (SIGNATURE_HEADER, self.sign(now, &canonical_json(body))),
        ]
    }

    pub fn verify(
        &self,
        timestamp: Option<&str>,
        signature: Option<&str>,
        canonical_body: &str,
        now: i64,
    ) -> Result<(), SignatureError> {
        let timestamp = timestamp.ok_or(SignatureError::MissingTimestamp)?;
        let signature = signature.ok_or(SignatureError::MissingSignature)?;
        let ts: i64 = timestamp
            .trim()
            .parse()
            .map_err(|_| SignatureError::BadTimestamp)?;
        let skew = now.saturating_sub(ts);
        if skew.unsigned_abs() > self.tolerance_secs {
            return Err(SignatureError::Stale {
                skew_secs: skew,
                tolerance_secs: self.tolerance_secs,
            });
        }
        let expected = hex::decode(signature.trim()).map_err(|_| SignatureError::Mismatch)?;
        let mut mac = HmacSha256::new_from_slice(self.secret.expose().as_bytes())
            .expect("HMAC takes keys of any length");
        mac.update(format!("{ts}:{canonical_body}").as_bytes());
        mac.verify_slice(&expected)
            .map_err(|_| SignatureError::Mismatch)
    }
}

pub fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn scheme() -> TimestampedHmac {
        TimestampedHmac::new(Secret::new("s3cret"), Duration::from_secs(300))
    }

    #[test]
    fn matches_a_known_vector() {
        // python3 -c 'import hmac,hashlib;print(hmac.new(b"s3cret",
        //   b"1700000000:{\"amount\":1050,\"currency\":\"EUR\",\"player_id\":\"p1\"}",
        //   hashlib.sha256).hexdigest())'
        let body = r#"{"amount":1050,"currency":"EUR","player_id":"p1"}"#;
        assert_eq!(
            scheme().sign(1_700_000_000, body),
            "f00d4dc1b797923c34b1600c997d29a9ffdf337df7ebd2cc7e1f8103f09607bc"
        );
    }

    #[test]
    fn compares_secrets() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"abcd"));
    }

    #[test]
    fn verifies_its_own_signature_and_refuses_tampering() {
        let s = scheme();
        let sig = s.sign(1000, "{\"a\":1}");
        assert_eq!(
            s.verify(Some("1000"), Some(&sig), "{\"a\":1}", 1100),
            Ok(())
        );
        assert_eq!(
            s.verify(Some("1000"), Some(&sig), "{\"a\":2}", 1100),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            s.verify(Some("1001"), Some(&sig), "{\"a\":1}", 1100),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            s.verify(Some("1000"), Some("zz"), "{\"a\":1}", 1100),
            Err(SignatureError::Mismatch)
        );
    }

    #[test]
    fn refuses_stale_and_missing_parts() {
        let s = scheme();
        let sig = s.sign(1000, "{}");
        assert!(matches!(
            s.verify(Some("1000"), Some(&sig), "{}", 1301),
            Err(SignatureError::Stale { skew_secs: 301, .. })
        ));
        assert!(matches!(
            s.verify(Some("1000"), Some(&sig), "{}", 699),
            Err(SignatureError::Stale { .. })
        ));
        assert_eq!(
            s.verify(None, Some(&sig), "{}", 1000),
            Err(SignatureError::MissingTimestamp)
        );
        assert_eq!(
            s.verify(Some("1000"), None, "{}", 1000),
            Err(SignatureError::MissingSignature)
        );
        assert_eq!(
            s.verify(Some("soon"), Some(&sig), "{}", 1000),
            Err(SignatureError::BadTimestamp)
        );
    }

    mod properties {
        use super::*;
        use proptest::prelude::*;

        proptest! {
            /// Whatever arrives in the two headers, the check answers (never panics), and
            /// accepts only the signature of this body at this timestamp.
            #[test]
            fn arbitrary_headers_are_refused_unless_they_sign_the_body(
                timestamp in proptest::option::of(".{0,24}"),
                signature in proptest::option::of(".{0,80}"),
                body in ".{0,64}",
                now in any::<i64>(),
            ) {
                let s = scheme();
                if s.verify(timestamp.as_deref(), signature.as_deref(), &body, now).is_ok() {
                    let ts: i64 = timestamp.unwrap().trim().parse().unwrap();
                    let signature = signature.unwrap();
                    prop_assert_eq!(signature.trim(), s.sign(ts, &body));
                }
            }

            /// A genuine signature verifies, and any change to the body breaks it.
            #[test]
            fn a_signature_covers_exactly_its_body(
                body in ".{0,64}", other in ".{0,64}", ts in -1_000_000_000i64..4_000_000_000,
            ) {
                let s = scheme();
                let signature = s.sign(ts, &body);
                prop_assert_eq!(s.verify(Some(&ts.to_string()), Some(&signature), &body, ts), Ok(()));
                if other != body {
                    prop_assert_eq!(
                        s.verify(Some(&ts.to_string()), Some(&signature), &other, ts),
                        Err(SignatureError::Mismatch)
                    );
                }
            }

            #[test]
            fn constant_time_eq_is_equality(a in prop::collection::vec(any::<u8>(), 0..40), b in prop::collection::vec(any::<u8>(), 0..40)) {
                prop_assert_eq!(constant_time_eq(&a, &b), a == b);
            }
        }
    }
}
