//! NewStore's webhook signature: `X-NewStore-Signature: <hex HMAC-SHA256(secret, raw body)>`.

pub use crate::signatures::{body_signature as sign, verify_body_signature as verify};

pub const SIGNATURE_HEADER: &str = "x-newstore-signature";

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Secret;
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
