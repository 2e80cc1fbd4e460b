//! Signatures on the callbacks and webhooks ihub sends to partners.

use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;

use super::{constant_time_eq, hmac_sha256, unix_now};
use crate::config::Secret;

pub const CALLBACK_SIGNATURE_HEADER: &str = "x-callback-signature";
pub const WEBHOOK_ID_HEADER: &str = "webhook-id";
pub const WEBHOOK_TIMESTAMP_HEADER: &str = "webhook-timestamp";
pub const WEBHOOK_SIGNATURE_HEADER: &str = "webhook-signature";

const WHSEC_PREFIX: &str = "whsec_";

/// X-Callback-Signature: lowercase hex HMAC-SHA256(secret bytes, body) over the exact body sent
/// (the caller passes canonical JSON bytes).
pub fn callback_signature(secret: &Secret, body: &[u8]) -> String {
    hex::encode(hmac_sha256(secret.expose().as_bytes(), body))
}

/// Standard Webhooks (<https://www.standardwebhooks.com/>): key = the secret's bytes, except a
/// secret written `whsec_<base64>` is base64-decoded first (standard alphabet; when that fails
/// the whole secret, prefix included, is used as written). Signature = "v1," +
/// base64(HMAC-SHA256(key, "{id}.{timestamp}.{body}")).
#[derive(Clone)]
pub struct StandardWebhook {
    key: Vec<u8>,
}

impl std::fmt::Debug for StandardWebhook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("StandardWebhook(***)")
    }
}

impl StandardWebhook {
    pub fn new(secret: &Secret) -> Self {
        let written = secret.expose();
        let key = written
            .strip_prefix(WHSEC_PREFIX)
            .and_then(|encoded| STANDARD.decode(encoded).ok())
            .unwrap_or_else(|| written.as_bytes().to_vec());
        Self { key }
    }

    /// The three headers: ("webhook-id", id), ("webhook-timestamp", unix secs),
    /// ("webhook-signature", "v1,<base64>").
    pub fn headers(&self, id: &str, timestamp: i64, body: &[u8]) -> [(&'static str, String); 3] {
        [
            (WEBHOOK_ID_HEADER, id.to_string()),
            (WEBHOOK_TIMESTAMP_HEADER, timestamp.to_string()),
            (WEBHOOK_SIGNATURE_HEADER, self.sign(id, timestamp, body)),
        ]
    }

    /// "v1,<base64 HMAC-SHA256 of {id}.{timestamp}.{body}>".
    pub fn sign(&self, id: &str, timestamp: i64, body: &[u8]) -> String {
        format!("v1,{}", STANDARD.encode(self.mac(id, timestamp, body)))
    }

    fn mac(&self, id: &str, timestamp: i64, body: &[u8]) -> [u8; 32] {
        let mut message = Vec::with_capacity(id.len() + body.len() + 24);
        message.extend_from_slice(id.as_bytes());
        message.push(b'.');
        message.extend_from_slice(timestamp.to_string().as_bytes());
        message.push(b'.');
        message.extend_from_slice(body);
        hmac_sha256(&self.key, &message)
    }

    /// Verifies headers as a receiver would: any of the space-separated `v1,` signatures
    /// matches (compared in constant time), and the timestamp is within `tolerance` of now.
    /// Used by the OTA partner mock.
    pub fn verify(
        &self,
        id: &str,
        timestamp: &str,
        signature_header: &str,
        body: &[u8],
        tolerance: Duration,
    ) -> Result<(), &'static str> {
        self.verify_at(id, timestamp, signature_header, body, tolerance, unix_now())
    }

    /// [`verify`](Self::verify) against a given clock (`now` in unix seconds).
    pub fn verify_at(
        &self,
        id: &str,
        timestamp: &str,
        signature_header: &str,
        body: &[u8],
        tolerance: Duration,
        now: i64,
    ) -> Result<(), &'static str> {
        let ts: i64 = timestamp
            .trim()
            .parse()
            .map_err(|_| "webhook-timestamp must be unix seconds")?;
        if now.saturating_sub(ts).unsigned_abs() > tolerance.as_secs() {
            return Err("webhook-timestamp is outside the tolerance");
        }
        let expected = STANDARD.encode(self.mac(id, ts, body));
        let matched = signature_header
            .split_ascii_whitespace()
            .filter_map(|candidate| candidate.split_once(','))
            .filter(|(version, _)| *version == "v1")
            // No short-circuit: every candidate is compared.
            .fold(false, |found, (_, signature)| {
                constant_time_eq(signature.as_bytes(), expected.as_bytes()) | found
            });
        if matched {
            Ok(())
        } else {
            Err("webhook-signature does not match")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SPEC_SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    const SPEC_ID: &str = "msg_p5jXN8AQM9LWM0D4loKWxJek";
    const SPEC_TS: i64 = 1614265330;
    const SPEC_BODY: &[u8] = br#"{"test": 2432232314}"#;
    const SPEC_SIGNATURE: &str = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=";
    const TOLERANCE: Duration = Duration::from_secs(300);

    fn spec() -> StandardWebhook {
        StandardWebhook::new(&Secret::new(SPEC_SECRET))
    }

    #[test]
    fn matches_the_standard_webhooks_test_vector() {
        assert_eq!(spec().sign(SPEC_ID, SPEC_TS, SPEC_BODY), SPEC_SIGNATURE);
        let headers = spec().headers(SPEC_ID, SPEC_TS, SPEC_BODY);
        assert_eq!(
            headers,
            [
                ("webhook-id", SPEC_ID.to_string()),
                ("webhook-timestamp", "1614265330".to_string()),
                ("webhook-signature", SPEC_SIGNATURE.to_string()),
            ]
        );
    }

    #[test]
    fn raw_secrets_are_used_as_written() {
        // python3 -c 'import hmac,hashlib,base64;print(base64.b64encode(hmac.new(
        //   b"raw-secret", b"msg_1.1700000000.{\"a\":1}", hashlib.sha256).digest()))'
        let raw = StandardWebhook::new(&Secret::new("raw-secret"));
        assert_eq!(
            raw.sign("msg_1", 1_700_000_000, br#"{"a":1}"#),
            "v1,E4hmSSmINfw3y9/B49LzDnoBTYt3XoUD96zu+AMR4bk="
        );
        // Not base64 after the prefix: the whole secret as written.
        let odd = StandardWebhook::new(&Secret::new("whsec_not*base64!"));
        assert_eq!(
            odd.sign("msg_1", 1_700_000_000, br#"{"a":1}"#),
            "v1,yjRvbq8lTUTkQ5HRVUCJP+pi4trzxHwObe+/4m3kcw8="
        );
    }

    #[test]
    fn verifies_like_a_receiver() {
        let s = spec();
        let ts = "1614265330";
        let at = |header: &str, body: &[u8], now: i64| {
            s.verify_at(SPEC_ID, ts, header, body, TOLERANCE, now)
        };
        assert_eq!(at(SPEC_SIGNATURE, SPEC_BODY, SPEC_TS), Ok(()));
        assert_eq!(at(SPEC_SIGNATURE, SPEC_BODY, SPEC_TS + 300), Ok(()));
        // Several signatures (key rotation): any one may match.
        let rotated = format!("v1,bm90IHRoaXM= {SPEC_SIGNATURE} v2,whatever");
        assert_eq!(at(&rotated, SPEC_BODY, SPEC_TS), Ok(()));

        assert!(at(SPEC_SIGNATURE, br#"{"test": 2432232315}"#, SPEC_TS).is_err());
        assert!(at(SPEC_SIGNATURE, SPEC_BODY, SPEC_TS + 301).is_err());
        assert!(at(SPEC_SIGNATURE, SPEC_BODY, SPEC_TS - 301).is_err());
        assert!(
            at(
                "v2,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=",
                SPEC_BODY,
                SPEC_TS
            )
            .is_err()
        );
        assert!(at("", SPEC_BODY, SPEC_TS).is_err());
        assert!(
            s.verify_at(
                "msg_other",
                ts,
                SPEC_SIGNATURE,
                SPEC_BODY,
                TOLERANCE,
                SPEC_TS
            )
            .is_err()
        );
        assert!(
            s.verify_at(
                SPEC_ID,
                "soon",
                SPEC_SIGNATURE,
                SPEC_BODY,
                TOLERANCE,
                SPEC_TS
            )
            .is_err()
        );
    }

    #[test]
    fn verifies_a_fresh_signature_against_the_clock() {
        let s = StandardWebhook::new(&Secret::new("whsec_c2VjcmV0"));
        let now = unix_now();
        let signature = s.sign("msg_2", now, b"{}");
        assert_eq!(
            s.verify("msg_2", &now.to_string(), &signature, b"{}", TOLERANCE),
            Ok(())
        );
    }

    #[test]
    fn callback_signature_is_hex_hmac_of_the_body() {
        // python3 -c 'import hmac,hashlib;print(hmac.new(b"cb-secret",
        //   b"{\"order_id\":\"o-1\",\"status\":\"confirmed\"}", hashlib.sha256).hexdigest())'
        assert_eq!(
            callback_signature(
                &Secret::new("cb-secret"),
                br#"{"order_id":"o-1","status":"confirmed"}"#
            ),
            "42fd67f27cf6e822a8ca8efebe3fa1bfa7f825152f122a7820028e506927ae7c"
        );
    }

    mod properties {
        use super::*;
        use proptest::prelude::*;

        proptest! {
            /// Arbitrary headers and bodies never panic the check, and it accepts only a
            /// signature this secret made over this id, timestamp and body.
            #[test]
            fn arbitrary_headers_are_refused_unless_genuine(
                id in ".{0,32}",
                timestamp in ".{0,24}",
                header in ".{0,120}",
                body in prop::collection::vec(any::<u8>(), 0..128),
                now in any::<i64>(),
            ) {
                let hook = spec();
                if hook.verify_at(&id, &timestamp, &header, &body, Duration::from_secs(300), now).is_ok() {
                    let ts: i64 = timestamp.trim().parse().unwrap();
                    let genuine = hook.sign(&id, ts, &body);
                    prop_assert!(header.split_ascii_whitespace().any(|c| c == genuine));
                }
            }
        }
    }
}
