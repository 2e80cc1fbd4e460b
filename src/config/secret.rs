use std::fmt;

use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Deserializer};

/// A secret value: printable only on purpose ([`Secret::expose`]), never through `Debug`, and
/// wiped from memory when dropped.
#[derive(Clone)]
pub struct Secret(SecretString);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(SecretString::from(value.into()))
    }

    pub fn expose(&self) -> &str {
        self.0.expose_secret()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

impl<'de> Deserialize<'de> for Secret {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        String::deserialize(deserializer).map(Secret::new)
    }
}

/// A secret an integration reads from the environment: its variable, and the value `ihub dev`
/// uses when the environment sets none (documented in the README).
#[derive(Debug, PartialEq, Eq)]
pub struct SecretVar {
    pub name: &'static str,
    pub demo: &'static str,
}

/// The URL of a server ihub connects to (Postgres, NATS). It may carry a password, so it
/// prints with the password masked; [`ServiceUrl::expose`] gives it whole, for connecting.
#[derive(Clone, PartialEq, Eq)]
pub struct ServiceUrl(String);

impl ServiceUrl {
    pub fn new(url: impl Into<String>) -> Self {
        Self(url.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ServiceUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&mask_password(&self.0))
    }
}

impl fmt::Debug for ServiceUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", mask_password(&self.0))
    }
}

/// Replaces the password of a `scheme://user:password@host` URL with `***`; in a
/// comma-separated list of URLs (the servers of a NATS cluster), that of each.
pub fn mask_password(url: &str) -> String {
    if url.contains(',') {
        return url
            .split(',')
            .map(mask_password)
            .collect::<Vec<_>>()
            .join(",");
    }
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let Some((userinfo, host)) = rest.rsplit_once('@') else {
        return url.to_string();
    };
    match userinfo.split_once(':') {
        Some((user, _)) => format!("{scheme}://{user}:***@{host}"),
        None => url.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_do_not_print() {
        let secret = Secret::new("hunter2");
        assert_eq!(format!("{secret:?}"), "Secret(***)");
        assert_eq!(secret.expose(), "hunter2");
        let parsed: Secret = serde_json::from_str("\"tok\"").unwrap();
        assert_eq!(parsed.expose(), "tok");
    }

    #[test]
    fn passwords_are_masked() {
        assert_eq!(
            mask_password("postgres://u:pw@db:5432/x"),
            "postgres://u:***@db:5432/x"
        );
        assert_eq!(
            mask_password("postgres://u:p@ss@db/x"),
            "postgres://u:***@db/x",
            "a password with @ is masked whole"
        );
        assert_eq!(
            mask_password("postgres://postgres@127.0.0.1/ihub"),
            "postgres://postgres@127.0.0.1/ihub"
        );
        assert_eq!(
            mask_password("nats://a:p1@n1:4222,nats://n2:4222,nats://b:p@3@n3:4222"),
            "nats://a:***@n1:4222,nats://n2:4222,nats://b:***@n3:4222"
        );
        let url = ServiceUrl::new("nats://user:s3cret@127.0.0.1:4222");
        assert!(!format!("{url} {url:?}").contains("s3cret"));
        assert_eq!(url.expose(), "nats://user:s3cret@127.0.0.1:4222");
    }
}
