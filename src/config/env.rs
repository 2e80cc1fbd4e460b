use std::collections::HashMap;
use std::fmt;
use std::net::SocketAddr;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, bail};

use super::{Secret, SecretVar};

type Lookup = dyn Fn(&str) -> Option<String> + Send + Sync;

/// Where settings come from: the process environment, a test's map, or either with defaults
/// beneath it (`ihub dev`'s demo settings, the URLs of the mocks it runs). The core reads its
/// settings from it and so does each integration, each its own section; the parsing helpers
/// name the variable in every error.
///
/// It prints no value: it holds secrets.
#[derive(Clone)]
pub struct Env {
    lookup: Arc<Lookup>,
}

impl fmt::Debug for Env {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Env(..)")
    }
}

impl Env {
    /// The process environment.
    pub fn process() -> Self {
        Self::from_fn(|name| std::env::var(name).ok())
    }

    pub fn from_fn(lookup: impl Fn(&str) -> Option<String> + Send + Sync + 'static) -> Self {
        Self {
            lookup: Arc::new(lookup),
        }
    }

    pub fn from_pairs<K: Into<String>, V: Into<String>>(
        pairs: impl IntoIterator<Item = (K, V)>,
    ) -> Self {
        let map: HashMap<String, String> = pairs
            .into_iter()
            .map(|(k, v)| (k.into(), v.into()))
            .collect();
        Self::from_fn(move |name| map.get(name).cloned())
    }

    /// This environment, with `defaults` for what it leaves unset.
    pub fn with_defaults<K: Into<String>, V: Into<String>>(
        &self,
        defaults: impl IntoIterator<Item = (K, V)>,
    ) -> Self {
        let below = Self::from_pairs(defaults);
        let above = self.clone();
        Self::from_fn(move |name| above.get(name).or_else(|| below.get(name)))
    }

    /// The variable as set (possibly empty).
    pub fn get(&self, name: &str) -> Option<String> {
        (self.lookup)(name)
    }

    /// The variable, unless unset or blank.
    pub fn non_empty(&self, name: &str) -> Option<String> {
        self.get(name).filter(|v| !v.trim().is_empty())
    }

    pub fn text(&self, name: &str, default: &str) -> String {
        self.get(name).unwrap_or_else(|| default.to_string())
    }

    /// A whole number.
    pub fn whole(&self, name: &str, default: u64) -> anyhow::Result<u64> {
        match self.get(name) {
            None => Ok(default),
            Some(raw) => raw
                .trim()
                .parse()
                .with_context(|| format!("{name}={raw:?} is not a whole number")),
        }
    }

    /// A duration given in whole milliseconds.
    pub fn millis(&self, name: &str, default_ms: u64) -> anyhow::Result<Duration> {
        self.whole(name, default_ms).map(Duration::from_millis)
    }

    /// A duration in whole milliseconds, when set.
    pub fn optional_millis(&self, name: &str) -> anyhow::Result<Option<Duration>> {
        match self.get(name) {
            None => Ok(None),
            Some(_) => self.millis(name, 0).map(Some),
        }
    }

    /// A number above 0 (fractions allowed).
    pub fn positive(&self, name: &str, default: f64) -> anyhow::Result<f64> {
        let Some(raw) = self.get(name) else {
            return Ok(default);
        };
        raw.trim()
            .parse()
            .ok()
            .filter(|r: &f64| r.is_finite() && *r > 0.0)
            .with_context(|| format!("{name}={raw:?} must be a number above 0"))
    }

    /// `1`/`true`/`yes`/`on` or `0`/`false`/`no`/`off`.
    pub fn flag(&self, name: &str, default: bool) -> anyhow::Result<bool> {
        let Some(raw) = self.get(name) else {
            return Ok(default);
        };
        match raw.trim() {
            "1" | "true" | "yes" | "on" => Ok(true),
            "0" | "false" | "no" | "off" | "" => Ok(false),
            other => bail!("{name}={other:?} must be 1 or 0"),
        }
    }

    /// A comma-separated list, blanks dropped.
    pub fn list(&self, name: &str, default: &str) -> Vec<String> {
        self.text(name, default)
            .split(',')
            .map(str::trim)
            .filter(|v| !v.is_empty())
            .map(str::to_string)
            .collect()
    }

    /// A comma-separated list, each item parsed by `parse` (whose error names the item).
    pub fn list_of<T>(
        &self,
        name: &str,
        default: &str,
        parse: impl Fn(&str) -> anyhow::Result<T>,
    ) -> anyhow::Result<Vec<T>> {
        self.list(name, default)
            .iter()
            .map(|item| parse(item).with_context(|| format!("{name}: {item:?}")))
            .collect()
    }

    pub fn addr(&self, name: &str, default: &str) -> anyhow::Result<SocketAddr> {
        let raw = self.text(name, default);
        SocketAddr::from_str(raw.trim())
            .with_context(|| format!("{name}={raw:?} is not a socket address like 127.0.0.1:8000"))
    }

    /// A secret, unless unset or empty.
    pub fn optional_secret(&self, name: &str) -> Option<Secret> {
        self.secret_value(name).ok().flatten().map(Secret::new)
    }

    /// A secret's value: the variable `name`, else the contents of the file `<name>_FILE`
    /// names (the Docker and Kubernetes secrets convention), without its trailing newline.
    /// A named file that cannot be read, or is empty, is an error that says which.
    fn secret_value(&self, name: &str) -> anyhow::Result<Option<String>> {
        if let Some(value) = self.get(name).filter(|v| !v.is_empty()) {
            return Ok(Some(value));
        }
        let file_var = format!("{name}_FILE");
        let Some(path) = self.non_empty(&file_var) else {
            return Ok(None);
        };
        let text = std::fs::read_to_string(&path).map_err(|err| {
            anyhow::anyhow!("{file_var}={path}: cannot read the secret's file: {err}")
        })?;
        let value = text
            .strip_suffix('\n')
            .map_or(text.as_str(), |t| t.strip_suffix('\r').unwrap_or(t));
        if value.is_empty() {
            bail!("{file_var}={path}: the secret's file is empty");
        }
        Ok(Some(value.to_string()))
    }

    /// A secret the caller cannot do without.
    pub fn secret(&self, var: &SecretVar) -> anyhow::Result<Secret> {
        self.require(&[var])?;
        Ok(self.optional_secret(var.name).expect("checked by require"))
    }

    /// Stops start-up when any of `vars` is unset, naming every missing variable.
    pub fn require(&self, vars: &[&SecretVar]) -> anyhow::Result<()> {
        let mut missing: Vec<&str> = Vec::new();
        for var in vars {
            if self.secret_value(var.name)?.is_none() && !missing.contains(&var.name) {
                missing.push(var.name);
            }
        }
        if missing.is_empty() {
            return Ok(());
        }
        bail!(
            "{} not set: export {} (or <NAME>_FILE naming a file that holds it) before starting (only `ihub dev` fills in demo values)",
            missing.join(", "),
            if missing.len() == 1 { "it" } else { "them" }
        )
    }

    /// This environment with each unset secret of `vars` set to its demo value; also returns
    /// the variables it filled.
    pub fn with_demo_secrets(&self, vars: &[&SecretVar]) -> (Self, Vec<&'static str>) {
        let filled: Vec<&SecretVar> = vars
            .iter()
            .copied()
            .filter(|var| {
                self.optional_secret(var.name).is_none()
                    && self.non_empty(&format!("{}_FILE", var.name)).is_none()
            })
            .collect();
        let env = self.with_defaults(filled.iter().map(|var| (var.name, var.demo)));
        (env, filled.iter().map(|var| var.name).collect())
    }
}

/// A CIDR range, or a single address as its /32 or /128.
pub fn parse_net(raw: &str) -> anyhow::Result<ipnet::IpNet> {
    let raw = raw.trim();
    if let Ok(net) = raw.parse::<ipnet::IpNet>() {
        return Ok(net);
    }
    raw.parse::<std::net::IpAddr>()
        .map(ipnet::IpNet::from)
        .map_err(|_| anyhow::anyhow!("{raw:?} is neither a CIDR range nor an IP address"))
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: SecretVar = SecretVar {
        name: "A_SECRET",
        demo: "demo-a",
    };
    const B: SecretVar = SecretVar {
        name: "B_SECRET",
        demo: "demo-b",
    };

    #[test]
    fn a_secret_may_come_from_the_file_its_file_variable_names() {
        let dir = std::env::temp_dir().join(format!("ihub-secret-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("a");
        std::fs::write(&file, "from-the-file\n").unwrap();
        let path = file.to_str().unwrap();
        let env = Env::from_pairs([("A_SECRET_FILE", path)]);
        assert_eq!(env.secret(&A).unwrap().expose(), "from-the-file");
        // The variable itself wins over its file.
        let env = Env::from_pairs([("A_SECRET_FILE", path), ("A_SECRET", "direct")]);
        assert_eq!(env.secret(&A).unwrap().expose(), "direct");
        // A file that is not there, or empty, says which variable named it; no demo value
        // hides it.
        let missing = dir.join("missing");
        let env = Env::from_pairs([("A_SECRET_FILE", missing.to_str().unwrap())]);
        let err = format!("{:#}", env.require(&[&A]).unwrap_err());
        assert!(err.contains("A_SECRET_FILE="), "{err}");
        let (filled, names) = env.with_demo_secrets(&[&A]);
        assert!(names.is_empty());
        assert!(filled.require(&[&A]).is_err());
        std::fs::write(&file, "").unwrap();
        let env = Env::from_pairs([("A_SECRET_FILE", path)]);
        assert!(format!("{:#}", env.secret(&A).unwrap_err()).contains("empty"));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn parsing_errors_name_the_variable() {
        let env = Env::from_pairs([
            ("N", "soon"),
            ("F", "maybe"),
            ("P", "0"),
            ("ADDR", "here"),
            ("L", "1,x"),
        ]);
        for err in [
            env.whole("N", 1).unwrap_err(),
            env.flag("F", true).unwrap_err(),
            env.positive("P", 1.0).unwrap_err(),
            env.addr("ADDR", "127.0.0.1:1").unwrap_err(),
            env.list_of("L", "", |n| Ok(n.parse::<u8>()?)).unwrap_err(),
        ] {
            let err = format!("{err:#}");
            assert!(
                ["N=", "F=", "P=", "ADDR=", "L:"]
                    .iter()
                    .any(|name| err.contains(name)),
                "{err}"
            );
        }
        assert_eq!(env.whole("UNSET", 7).unwrap(), 7);
        assert_eq!(env.list("UNSET", " a, ,b "), ["a", "b"]);
    }

    #[test]
    fn defaults_sit_below_what_is_set() {
        let env = Env::from_pairs([("X", "set")]).with_defaults([("X", "default"), ("Y", "y")]);
        assert_eq!(env.get("X").as_deref(), Some("set"));
        assert_eq!(env.get("Y").as_deref(), Some("y"));
        assert_eq!(env.get("Z"), None);
    }

    #[test]
    fn every_missing_secret_is_named_at_once() {
        let env = Env::from_pairs([("A_SECRET", "")]);
        let err = env.require(&[&A, &B]).unwrap_err().to_string();
        assert!(err.starts_with("A_SECRET, B_SECRET not set"), "{err}");
        let env = Env::from_pairs([("A_SECRET", "a")]);
        assert!(env.require(&[&A]).is_ok());
        assert_eq!(env.secret(&A).unwrap().expose(), "a");
        let err = env.secret(&B).unwrap_err().to_string();
        assert!(err.contains("B_SECRET not set: export it"), "{err}");
    }

    #[test]
    fn demo_secrets_fill_only_what_is_unset() {
        let (env, filled) = Env::from_pairs([("A_SECRET", "mine")]).with_demo_secrets(&[&A, &B]);
        assert_eq!(filled, ["B_SECRET"]);
        assert_eq!(env.secret(&A).unwrap().expose(), "mine");
        assert_eq!(env.secret(&B).unwrap().expose(), "demo-b");
    }

    #[test]
    fn it_prints_no_value() {
        let env = Env::from_pairs([("A_SECRET", "hunter2")]);
        assert!(!format!("{env:?}").contains("hunter2"));
    }
}
