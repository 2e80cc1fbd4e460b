//! NewStore's webhook signature: `X-NewStore-Signature: <hex HMAC-SHA256(secret, raw body)>`.

use crate::config::Secret;
use crate::signatures::{constant_time_eq, hmac_sha256};

pub const SIGNATURE_HEADER: &str = "x-newstore-signature";

/// The signature of `body` under `secret`, lowercase hex.
pub fn sign(secret: &Secret, body: &[u8]) -> String {
    hex::encode(hmac_sha256(secret.expose().as_bytes(), body))
}

/// Whether `signature` (hex, either case, surrounding whitespace ignored) signs `body`;
/// compared in constant time.
pub fn verify(secret: &Secret, signature: &str, body: &[u8]) -> bool {
    let given = signature.trim().to_ascii_lowercase();
    constant_time_eq(given.as_bytes(), sign(secret, body).as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn matches_an_independent_hmac() {
        // python3 -c 'import hmac,hashlib;print(hmac.new(b"dev-newstore-secret",b"{}",hashlib.sha256).hexdigest())'
        let secret = Secret::new("dev-newstore-secret");
        let signature = sign(&secret, b"{}");
        assert_eq!(
            signature,
            "027a31f4c4e574de26668bd1b428c7058e606db3e6fc3ab8e9d8190ca2e6f321"
        );
        assert!(verify(&secret, &signature, b"{}"));
        assert!(verify(&secret, &signature.to_uppercase(), b"{}"));
        assert!(!verify(&secret, &signature, b"{ }"));
        assert!(!verify(&Secret::new("other"), &signature, b"{}"));
    }

    proptest! {
        #[test]
        fn only_the_signature_of_the_body_passes(
            body in prop::collection::vec(any::<u8>(), 0..256),
            other in prop::collection::vec(any::<u8>(), 0..256),
            header in ".{0,80}",
        ) {
            let secret = Secret::new("s3cret");
            prop_assert!(verify(&secret, &sign(&secret, &body), &body));
            if other != body {
                prop_assert!(!verify(&secret, &sign(&secret, &body), &other));
            }
            if verify(&secret, &header, &body) {
                prop_assert_eq!(header.trim().to_ascii_lowercase(), sign(&secret, &body));
            }
        }
    }
}
