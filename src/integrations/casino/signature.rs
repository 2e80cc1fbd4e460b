//! The casino's signatures: `x-casino-signature` (the provider's calls to the wallet, under
//! `CASINO_SECRET`) and `x-provider-signature` (the hub's calls to the provider, under
//! `PROVIDER_SECRET`), each `<hex HMAC-SHA256(secret, raw body)>`.

pub use crate::signatures::{body_signature as sign, verify_body_signature as verify};

pub const CASINO_HEADER: &str = "x-casino-signature";
pub const PROVIDER_HEADER: &str = "x-provider-signature";

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Secret;

    #[test]
    fn matches_an_independent_hmac() {
        // python3 -c 'import hmac,hashlib;print(hmac.new(b"dev-casino-secret",b"{}",hashlib.sha256).hexdigest())'
        let secret = Secret::new("dev-casino-secret");
        let signature = sign(&secret, b"{}");
        assert_eq!(signature, EXPECTED);
        assert!(verify(&secret, &signature, b"{}"));
        assert!(verify(&secret, &format!(" {} ", signature.to_uppercase()), b"{}"));
        assert!(!verify(&secret, &signature, b"{ }"));
        assert!(!verify(&Secret::new("dev-provider-secret"), &signature, b"{}"));
    }

    const EXPECTED: &str = "1164fb32be42bb169f78b245ec2e2bdec5a1a39e83f5d6129414b7ff094e2fc2";
}
