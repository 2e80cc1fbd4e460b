//! SSRF-safe callback URLs: partners name where ihub calls them back, so a callback URL must
//! not let a partner make ihub reach its own network (loopback, RFC 1918, cloud metadata…).
//!
//! Two layers:
//! 1. [`CallbackPolicy::check`] validates a URL when the partner hands it over (scheme, port,
//!    host allowlist, every resolved address public) and explains a refusal in [`Violation`].
//! 2. [`guarded_client`] repeats the address rule at connect time: its resolver refuses names
//!    that resolve to a non-public address and hands the connector exactly the addresses it
//!    checked, so a DNS answer that changes between check and connect (rebinding) cannot steer
//!    the call inward. It never follows redirects and never uses a proxy.
//!
//! IP-literal hosts never reach a resolver (the connector dials them directly), so a URL must
//! pass [`CallbackPolicy::check`] before it is sent; a literal's address cannot change in
//! between.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use ipnet::{Ipv4Net, Ipv6Net};

/// How long a callback host may take to resolve.
pub const RESOLVE_TIMEOUT: Duration = Duration::from_secs(3);

/// Rules a callback URL must pass.
#[derive(Clone, Debug)]
pub struct CallbackPolicy {
    /// Only https (REQUIRE_HTTPS_CALLBACKS=1, the default).
    pub require_https: bool,
    /// Ports allowed; None = any port. Default Some(vec![443]).
    pub allowed_ports: Option<Vec<u16>>,
    /// When Some, the host must be one of these (case-insensitive, exact match)
    /// (ALLOWED_CALLBACK_HOSTS).
    pub allowed_hosts: Option<Vec<String>>,
    /// Which non-public targets are allowed (ALLOW_PRIVATE_CALLBACKS; local mocks need
    /// loopback). Link-local and cloud metadata addresses never are.
    pub allow_private: PrivateTargets,
}

/// Non-public callback targets a policy allows. Whatever it says, link-local addresses
/// (169.254.0.0/16, fe80::/10) and the clouds' metadata services are refused: a callback
/// there would hand a partner the machine's credentials.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PrivateTargets {
    /// Public addresses only (`ALLOW_PRIVATE_CALLBACKS=0`, the default).
    None,
    /// Loopback too (`loopback`; what `ihub dev` sets, its mocks listen there).
    Loopback,
    /// Loopback and private networks (`1`; a compose network, a partner on the LAN).
    Private,
}

impl PrivateTargets {
    /// `0`/`false`/`no`, `loopback`, or `1`/`true`/`yes`/`private`.
    pub fn parse(raw: &str) -> Result<Self, String> {
        match raw.trim().to_ascii_lowercase().as_str() {
            "" | "0" | "false" | "no" => Ok(Self::None),
            "loopback" => Ok(Self::Loopback),
            "1" | "true" | "yes" | "private" => Ok(Self::Private),
            other => Err(format!(
                "ALLOW_PRIVATE_CALLBACKS={other:?}: use 0, loopback or 1 (loopback and private \
                 networks; link-local and metadata addresses are never allowed)"
            )),
        }
    }
}

impl Default for CallbackPolicy {
    /// The production defaults: https on port 443 to any public host.
    fn default() -> Self {
        Self {
            require_https: true,
            allowed_ports: Some(vec![443]),
            allowed_hosts: None,
            allow_private: PrivateTargets::None,
        }
    }
}

/// Why a callback URL is refused; Display is a message safe to show the partner, naming the
/// rule and the value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Violation {
    #[error("callback URL is not a valid absolute URL: {reason}")]
    NotAUrl { reason: String },
    #[error("callback URL must not carry credentials (user:password@)")]
    UserInfo,
    #[error("callback URL has no host")]
    MissingHost,
    #[error("callback URL scheme must be http or https, not {scheme}")]
    Scheme { scheme: String },
    #[error("callback URL must use https, not {scheme}")]
    HttpsRequired { scheme: String },
    #[error("callback URL port {port} is not allowed (allowed: {})", list_ports(.allowed))]
    Port { port: u16, allowed: Vec<u16> },
    #[error("callback host {host} is not one of the allowed callback hosts")]
    HostNotAllowed { host: String },
    #[error("callback host {host} could not be resolved: {reason}")]
    Unresolvable { host: String, reason: String },
    #[error("callback host {host} has address {addr}, which is {range_name}, not a public address")]
    PrivateAddress {
        host: String,
        addr: IpAddr,
        range_name: &'static str,
    },
}

fn list_ports(ports: &[u16]) -> String {
    let list: Vec<String> = ports.iter().map(u16::to_string).collect();
    list.join(", ")
}

impl Violation {
    /// A short stable code for the rule that was broken (for problem bodies and metrics).
    pub fn rule(&self) -> &'static str {
        match self {
            Violation::NotAUrl { .. }
            | Violation::UserInfo
            | Violation::MissingHost
            | Violation::Scheme { .. } => "invalid_url",
            Violation::HttpsRequired { .. } => "https_required",
            Violation::Port { .. } => "port_not_allowed",
            Violation::HostNotAllowed { .. } => "host_not_allowed",
            Violation::Unresolvable { .. } => "unresolvable_host",
            Violation::PrivateAddress { .. } => "private_address",
        }
    }
}

/// The URL and the addresses it was checked against.
#[derive(Clone, Debug)]
pub struct Checked {
    pub url: reqwest::Url,
    pub addrs: Vec<SocketAddr>,
}

impl CallbackPolicy {
    /// Checks scheme (http/https only; https only when `require_https`), port (explicit or the
    /// scheme's default), host allowlist, and that every address the host resolves to is public
    /// (unless `allow_private`). IP-literal hosts are checked directly, without DNS.
    pub async fn check(&self, url: &str) -> Result<Checked, Violation> {
        let url = reqwest::Url::parse(url.trim()).map_err(|err| Violation::NotAUrl {
            reason: err.to_string(),
        })?;
        match url.scheme() {
            "https" => {}
            "http" if !self.require_https => {}
            "http" => {
                return Err(Violation::HttpsRequired {
                    scheme: "http".into(),
                });
            }
            other => {
                return Err(Violation::Scheme {
                    scheme: other.into(),
                });
            }
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err(Violation::UserInfo);
        }
        let host = match url.host_str() {
            Some(host) if !host.is_empty() => host.to_string(),
            _ => return Err(Violation::MissingHost),
        };
        let port = url.port_or_known_default().ok_or(Violation::MissingHost)?;
        if let Some(allowed) = &self.allowed_ports
            && !allowed.contains(&port)
        {
            return Err(Violation::Port {
                port,
                allowed: allowed.clone(),
            });
        }
        self.host_allowed(&host)?;

        let addrs = match literal_ip(&host) {
            Some(ip) => {
                self.address_allowed(ip)
                    .map_err(|range_name| Violation::PrivateAddress {
                        host: host.clone(),
                        addr: ip,
                        range_name,
                    })?;
                vec![SocketAddr::new(ip, port)]
            }
            None => self.resolve(&host, port).await?,
        };
        Ok(Checked { url, addrs })
    }

    /// The address rule alone: `Err(name of the range)` for a non-public address that
    /// `allow_private` does not allow; link-local and metadata addresses always.
    pub fn address_allowed(&self, ip: IpAddr) -> Result<(), &'static str> {
        let Some(range_name) = non_public_range(ip) else {
            return Ok(());
        };
        if let Some(never) = never_allowed(ip, range_name) {
            return Err(never);
        }
        match self.allow_private {
            PrivateTargets::Private => Ok(()),
            PrivateTargets::Loopback if range_name == LOOPBACK => Ok(()),
            _ => Err(range_name),
        }
    }

    /// The host allowlist alone (case-insensitive, a trailing dot ignored).
    pub fn host_allowed(&self, host: &str) -> Result<(), Violation> {
        let Some(allowed) = &self.allowed_hosts else {
            return Ok(());
        };
        let wanted = normalize_host(host);
        if allowed.iter().any(|h| normalize_host(h) == wanted) {
            Ok(())
        } else {
            Err(Violation::HostNotAllowed {
                host: host.to_string(),
            })
        }
    }

    /// Resolves `host` (with `port` on every address) and applies the address rule to every
    /// answer: one non-public address refuses the host.
    async fn resolve(&self, host: &str, port: u16) -> Result<Vec<SocketAddr>, Violation> {
        let unresolvable = |reason: String| Violation::Unresolvable {
            host: host.to_string(),
            reason,
        };
        let addrs: Vec<SocketAddr> = match tokio::time::timeout(
            RESOLVE_TIMEOUT,
            tokio::net::lookup_host((host, port)),
        )
        .await
        {
            Ok(Ok(addrs)) => addrs.collect(),
            Ok(Err(err)) => return Err(unresolvable(err.to_string())),
            Err(_) => {
                return Err(unresolvable(format!(
                    "no answer within {} s",
                    RESOLVE_TIMEOUT.as_secs()
                )));
            }
        };
        if addrs.is_empty() {
            return Err(unresolvable("no addresses".into()));
        }
        for addr in &addrs {
            self.address_allowed(addr.ip())
                .map_err(|range_name| Violation::PrivateAddress {
                    host: host.to_string(),
                    addr: addr.ip(),
                    range_name,
                })?;
        }
        Ok(addrs)
    }
}

fn normalize_host(host: &str) -> String {
    host.strip_suffix('.').unwrap_or(host).to_ascii_lowercase()
}

/// The address of an IP-literal host as `Url::host_str` writes it (`[::1]`, `127.0.0.1`).
fn literal_ip(host: &str) -> Option<IpAddr> {
    if let Some(v6) = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        return v6.parse::<Ipv6Addr>().ok().map(IpAddr::V6);
    }
    host.parse::<IpAddr>().ok()
}

const fn v4(a: u8, b: u8, c: u8, d: u8, len: u8) -> Ipv4Net {
    Ipv4Net::new_assert(Ipv4Addr::new(a, b, c, d), len)
}

#[allow(clippy::too_many_arguments)]
const fn v6(a: u16, b: u16, c: u16, d: u16, e: u16, f: u16, g: u16, h: u16, len: u8) -> Ipv6Net {
    Ipv6Net::new_assert(Ipv6Addr::new(a, b, c, d, e, f, g, h), len)
}

const RFC1918: &str = "private (RFC 1918)";
const LOOPBACK: &str = "loopback";
const LINK_LOCAL_V4: &str = "link-local / cloud metadata";
const LINK_LOCAL_V6: &str = "link-local";
const METADATA: &str = "cloud metadata";

/// Metadata services outside link-local: Alibaba's (in carrier-grade NAT space) and AWS's
/// IPv6 one (in unique local space).
const METADATA_ADDRESSES: [IpAddr; 2] = [
    IpAddr::V4(Ipv4Addr::new(100, 100, 100, 200)),
    IpAddr::V6(Ipv6Addr::new(0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x254)),
];

/// The range no setting opens, if `ip` (in `range_name`) is in one.
fn never_allowed(ip: IpAddr, range_name: &'static str) -> Option<&'static str> {
    if range_name == LINK_LOCAL_V4 || range_name == LINK_LOCAL_V6 {
        return Some(range_name);
    }
    METADATA_ADDRESSES
        .contains(&ip.to_canonical())
        .then_some(METADATA)
}
const DOCUMENTATION: &str = "documentation";

/// IPv4 ranges that are not public, with the name a refusal gives.
static V4_RANGES: [(Ipv4Net, &str); 16] = [
    (v4(0, 0, 0, 0, 8), "this network"),
    (v4(10, 0, 0, 0, 8), RFC1918),
    (v4(172, 16, 0, 0, 12), RFC1918),
    (v4(192, 168, 0, 0, 16), RFC1918),
    (v4(100, 64, 0, 0, 10), "carrier-grade NAT"),
    (v4(127, 0, 0, 0, 8), LOOPBACK),
    (v4(169, 254, 0, 0, 16), LINK_LOCAL_V4),
    (v4(192, 0, 0, 0, 24), "IETF protocol assignments"),
    (v4(192, 0, 2, 0, 24), DOCUMENTATION),
    (v4(198, 51, 100, 0, 24), DOCUMENTATION),
    (v4(203, 0, 113, 0, 24), DOCUMENTATION),
    (v4(198, 18, 0, 0, 15), "benchmarking"),
    (v4(224, 0, 0, 0, 4), "multicast"),
    (v4(255, 255, 255, 255, 32), "broadcast"),
    // After broadcast, which it contains.
    (v4(240, 0, 0, 0, 4), "reserved"),
    (v4(192, 88, 99, 0, 24), "6to4 relay anycast (deprecated)"),
];

/// IPv6 ranges that are not public, checked before the forms that embed an IPv4 address.
static V6_RANGES: [(Ipv6Net, &str); 8] = [
    (v6(0, 0, 0, 0, 0, 0, 0, 0, 128), "unspecified"),
    (v6(0, 0, 0, 0, 0, 0, 0, 1, 128), LOOPBACK),
    (v6(0xfc00, 0, 0, 0, 0, 0, 0, 0, 7), "unique local"),
    (v6(0xfe80, 0, 0, 0, 0, 0, 0, 0, 10), LINK_LOCAL_V6),
    (
        v6(0xfec0, 0, 0, 0, 0, 0, 0, 0, 10),
        "site-local (deprecated)",
    ),
    (v6(0xff00, 0, 0, 0, 0, 0, 0, 0, 8), "multicast"),
    (v6(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0, 32), DOCUMENTATION),
    (v6(0x100, 0, 0, 0, 0, 0, 0, 0, 64), "discard"),
];

/// IPv6 forms that carry an IPv4 address in their last 32 bits: IPv4-mapped, IPv4-compatible
/// and NAT64.
static V6_EMBEDDING_V4: [Ipv6Net; 3] = [
    v6(0, 0, 0, 0, 0, 0xffff, 0, 0, 96),
    v6(0, 0, 0, 0, 0, 0, 0, 0, 96),
    v6(0x64, 0xff9b, 0, 0, 0, 0, 0, 0, 96),
];

/// 6to4 (2002::/16) carries an IPv4 address in bits 16..48.
static SIX_TO_FOUR: Ipv6Net = v6(0x2002, 0, 0, 0, 0, 0, 0, 0, 16);

/// Why an address is not public: Some(name of the range) for non-public addresses, None for
/// public ones. IPv6 addresses that embed an IPv4 address (mapped, compatible, NAT64, 6to4)
/// are judged by the embedded address, so `::ffff:127.0.0.1` is loopback.
pub fn non_public_range(ip: IpAddr) -> Option<&'static str> {
    match ip {
        IpAddr::V4(ip) => v4_range(ip),
        IpAddr::V6(ip) => {
            if let Some((_, name)) = V6_RANGES.iter().find(|(net, _)| net.contains(&ip)) {
                return Some(name);
            }
            let bits = u128::from(ip);
            if V6_EMBEDDING_V4.iter().any(|net| net.contains(&ip)) {
                return v4_range(Ipv4Addr::from(bits as u32));
            }
            if SIX_TO_FOUR.contains(&ip) {
                return v4_range(Ipv4Addr::from((bits >> 80) as u32));
            }
            None
        }
    }
}

fn v4_range(ip: Ipv4Addr) -> Option<&'static str> {
    V4_RANGES
        .iter()
        .find(|(net, _)| net.contains(&ip))
        .map(|(_, name)| *name)
}

/// The [`Violation`] behind a failed request of a [`guarded_client`], if the guard refused it.
pub fn violation_of(err: &reqwest::Error) -> Option<Violation> {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(current) = source {
        if let Some(violation) = current.downcast_ref::<Violation>() {
            return Some(violation.clone());
        }
        source = current.source();
    }
    None
}

/// Resolves names for [`guarded_client`]: allowlist, then every answer must pass the address
/// rule; the connector receives exactly the addresses that were checked.
struct GuardedResolver {
    policy: Arc<CallbackPolicy>,
}

impl reqwest::dns::Resolve for GuardedResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let policy = Arc::clone(&self.policy);
        let host = name.as_str().to_string();
        Box::pin(async move {
            policy.host_allowed(&host)?;
            // Port 0: reqwest puts the URL's (or the scheme's) port on every address.
            let addrs = policy.resolve(&host, 0).await?;
            let addrs: reqwest::dns::Addrs = Box::new(addrs.into_iter());
            Ok::<_, Box<dyn std::error::Error + Send + Sync>>(addrs)
        })
    }
}

/// An HTTP client for callbacks: never follows redirects, never uses a proxy, bounded by
/// `timeout`, https only when the policy says so, and connecting only to addresses its
/// resolver checked against `policy` (see the module docs for IP-literal hosts).
pub fn guarded_client(policy: Arc<CallbackPolicy>, timeout: Duration) -> reqwest::Client {
    crate::tls::install_crypto();
    reqwest::Client::builder()
        .timeout(timeout)
        .connect_timeout(timeout.min(Duration::from_secs(5)))
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .https_only(policy.require_https)
        .user_agent(concat!("ihub/", env!("CARGO_PKG_VERSION")))
        .dns_resolver(GuardedResolver { policy })
        .build()
        .expect("the HTTP client configuration is valid")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strict() -> CallbackPolicy {
        CallbackPolicy::default()
    }

    fn open() -> CallbackPolicy {
        CallbackPolicy {
            require_https: false,
            allowed_ports: None,
            allowed_hosts: None,
            allow_private: PrivateTargets::None,
        }
    }

    async fn rule(policy: &CallbackPolicy, url: &str) -> &'static str {
        match policy.check(url).await {
            Ok(_) => "ok",
            Err(violation) => violation.rule(),
        }
    }

    fn range(ip: &str) -> Option<&'static str> {
        non_public_range(ip.parse().unwrap())
    }

    #[tokio::test]
    async fn public_literals_pass_and_report_their_address() {
        let checked = strict()
            .check("https://93.184.216.34/cb?x=1")
            .await
            .unwrap();
        assert_eq!(checked.addrs, vec!["93.184.216.34:443".parse().unwrap()]);
        assert_eq!(checked.url.path(), "/cb");
        let checked = strict()
            .check("https://[2606:4700::1111]/cb")
            .await
            .unwrap();
        assert_eq!(
            checked.addrs,
            vec!["[2606:4700::1111]:443".parse().unwrap()]
        );
    }

    #[tokio::test]
    async fn refuses_what_is_not_an_http_url() {
        assert_eq!(rule(&open(), "not a url").await, "invalid_url");
        assert_eq!(rule(&open(), "/relative/path").await, "invalid_url");
        assert_eq!(rule(&open(), "ftp://93.184.216.34/").await, "invalid_url");
        assert_eq!(rule(&open(), "file:///etc/passwd").await, "invalid_url");
        assert_eq!(
            rule(&open(), "https://user:pw@93.184.216.34/").await,
            "invalid_url"
        );
        assert_eq!(
            rule(&open(), "https://user@93.184.216.34/").await,
            "invalid_url"
        );
        assert_eq!(
            open()
                .check("https://u:p@93.184.216.34/")
                .await
                .unwrap_err(),
            Violation::UserInfo
        );
    }

    #[tokio::test]
    async fn https_is_required_unless_relaxed() {
        let err = strict().check("http://93.184.216.34/").await.unwrap_err();
        assert_eq!(err.rule(), "https_required");
        assert!(err.to_string().contains("https"), "{err}");
        assert_eq!(rule(&open(), "http://93.184.216.34/").await, "ok");
    }

    #[tokio::test]
    async fn ports_default_to_the_scheme_and_must_be_allowed() {
        assert_eq!(rule(&strict(), "https://93.184.216.34/").await, "ok");
        assert_eq!(rule(&strict(), "https://93.184.216.34:443/").await, "ok");
        let err = strict()
            .check("https://93.184.216.34:8443/")
            .await
            .unwrap_err();
        assert_eq!(
            err,
            Violation::Port {
                port: 8443,
                allowed: vec![443]
            }
        );
        assert!(err.to_string().contains("8443"), "{err}");
        let http80 = CallbackPolicy {
            require_https: false,
            ..strict()
        };
        // http's default port is 80, which is not in [443].
        assert_eq!(
            rule(&http80, "http://93.184.216.34/").await,
            "port_not_allowed"
        );
        assert_eq!(rule(&open(), "https://93.184.216.34:8443/").await, "ok");
    }

    #[tokio::test]
    async fn the_host_allowlist_is_exact_and_case_insensitive() {
        let policy = CallbackPolicy {
            allowed_hosts: Some(vec!["Partner.Example".into(), "93.184.216.34".into()]),
            ..strict()
        };
        assert_eq!(rule(&policy, "https://93.184.216.34/").await, "ok");
        assert!(policy.host_allowed("PARTNER.example").is_ok());
        assert!(policy.host_allowed("partner.example.").is_ok());
        let err = policy
            .check("https://evil.partner.example/")
            .await
            .unwrap_err();
        assert_eq!(err.rule(), "host_not_allowed");
        assert!(err.to_string().contains("evil.partner.example"), "{err}");
        assert_eq!(
            rule(&policy, "https://93.184.216.35/").await,
            "host_not_allowed"
        );
    }

    #[tokio::test]
    async fn private_literals_are_refused_with_their_range() {
        for (url, name) in [
            ("https://127.0.0.1/", "loopback"),
            ("https://10.1.2.3/", "private (RFC 1918)"),
            ("https://172.16.0.1/", "private (RFC 1918)"),
            ("https://192.168.1.1/", "private (RFC 1918)"),
            (
                "https://169.254.169.254/latest",
                "link-local / cloud metadata",
            ),
            ("https://100.64.0.1/", "carrier-grade NAT"),
            ("https://0.0.0.0/", "this network"),
            ("https://[::1]/", "loopback"),
            ("https://[fd00::1]/", "unique local"),
            ("https://[fe80::1]/", "link-local"),
            ("https://[::ffff:127.0.0.1]/", "loopback"),
            ("https://[::ffff:a9fe:a9fe]/", "link-local / cloud metadata"),
            // Numeric shorthands the URL parser normalizes to 127.0.0.1.
            ("https://2130706433/", "loopback"),
            ("https://0x7f.1/", "loopback"),
        ] {
            let err = strict().check(url).await.unwrap_err();
            assert_eq!(err.rule(), "private_address", "{url}");
            match err {
                Violation::PrivateAddress { range_name, .. } => {
                    assert_eq!(range_name, name, "{url}")
                }
                other => panic!("{url}: {other:?}"),
            }
        }
    }

    #[tokio::test]
    async fn localhost_resolves_to_loopback_and_is_refused() {
        let err = open().check("http://localhost:8080/cb").await.unwrap_err();
        assert_eq!(err.rule(), "private_address");
        assert!(err.to_string().contains("localhost"), "{err}");
    }

    #[tokio::test]
    async fn unresolvable_hosts_are_refused() {
        let err = open()
            .check("https://no-such-host.invalid/")
            .await
            .unwrap_err();
        assert_eq!(err.rule(), "unresolvable_host");
    }

    #[tokio::test]
    async fn allow_private_relaxes_only_the_address_rule() {
        let policy = CallbackPolicy {
            allow_private: PrivateTargets::Private,
            ..strict()
        };
        let checked = policy.check("https://127.0.0.1/").await.unwrap();
        assert_eq!(checked.addrs, vec!["127.0.0.1:443".parse().unwrap()]);
        assert!(policy.check("https://localhost/").await.is_ok());
        assert!(policy.check("https://10.1.2.3/").await.is_ok());
        assert_eq!(rule(&policy, "http://127.0.0.1/").await, "https_required");
        assert_eq!(
            rule(&policy, "https://127.0.0.1:8080/").await,
            "port_not_allowed"
        );
    }

    /// Checked at the validation step only: nothing is sent to these addresses.
    #[tokio::test]
    async fn link_local_and_metadata_are_refused_whatever_the_setting() {
        for allow_private in [
            PrivateTargets::None,
            PrivateTargets::Loopback,
            PrivateTargets::Private,
        ] {
            let policy = CallbackPolicy {
                allow_private,
                ..open()
            };
            for url in [
                "http://169.254.169.254/latest/meta-data/",
                "http://169.254.170.2/v2/credentials",
                "http://[::ffff:169.254.169.254]/",
                "http://[fe80::1]/",
                "http://100.100.100.200/latest/meta-data/",
                "http://[fd00:ec2::254]/",
            ] {
                assert_eq!(
                    rule(&policy, url).await,
                    "private_address",
                    "{url} {allow_private:?}"
                );
            }
        }
    }

    #[tokio::test]
    async fn loopback_allows_loopback_and_nothing_else_private() {
        let policy = CallbackPolicy {
            allow_private: PrivateTargets::Loopback,
            ..open()
        };
        assert!(policy.check("http://127.0.0.1:8004/cb").await.is_ok());
        assert!(policy.check("http://[::1]:8004/cb").await.is_ok());
        for url in ["http://10.0.0.1/", "http://192.168.1.1/", "http://0.0.0.0/"] {
            assert_eq!(rule(&policy, url).await, "private_address", "{url}");
        }
    }

    #[test]
    fn the_setting_reads_its_three_values() {
        assert_eq!(PrivateTargets::parse("0"), Ok(PrivateTargets::None));
        assert_eq!(
            PrivateTargets::parse("loopback"),
            Ok(PrivateTargets::Loopback)
        );
        assert_eq!(PrivateTargets::parse("1"), Ok(PrivateTargets::Private));
        assert!(
            PrivateTargets::parse("sometimes")
                .unwrap_err()
                .contains("loopback")
        );
    }

    #[test]
    fn classifies_addresses() {
        assert_eq!(range("127.0.0.1"), Some("loopback"));
        assert_eq!(range("10.255.0.1"), Some("private (RFC 1918)"));
        assert_eq!(range("172.31.255.255"), Some("private (RFC 1918)"));
        assert_eq!(range("172.32.0.1"), None);
        assert_eq!(
            range("169.254.169.254"),
            Some("link-local / cloud metadata")
        );
        assert_eq!(range("100.64.0.1"), Some("carrier-grade NAT"));
        assert_eq!(range("100.128.0.1"), None);
        assert_eq!(range("192.0.0.8"), Some("IETF protocol assignments"));
        assert_eq!(range("192.0.2.1"), Some("documentation"));
        assert_eq!(range("198.51.100.1"), Some("documentation"));
        assert_eq!(range("203.0.113.1"), Some("documentation"));
        assert_eq!(range("198.19.0.1"), Some("benchmarking"));
        assert_eq!(range("224.0.0.1"), Some("multicast"));
        assert_eq!(range("240.0.0.1"), Some("reserved"));
        assert_eq!(range("255.255.255.255"), Some("broadcast"));
        assert_eq!(range("93.184.216.34"), None);
        assert_eq!(range("8.8.8.8"), None);

        assert_eq!(range("::"), Some("unspecified"));
        assert_eq!(range("::1"), Some("loopback"));
        assert_eq!(range("fd00::1"), Some("unique local"));
        assert_eq!(range("fe80::1"), Some("link-local"));
        assert_eq!(range("ff02::1"), Some("multicast"));
        assert_eq!(range("2001:db8::1"), Some("documentation"));
        assert_eq!(range("100::1"), Some("discard"));
        assert_eq!(range("::ffff:127.0.0.1"), Some("loopback"));
        assert_eq!(
            range("::ffff:a9fe:a9fe"),
            Some("link-local / cloud metadata")
        );
        assert_eq!(range("::ffff:10.0.0.1"), Some("private (RFC 1918)"));
        assert_eq!(range("::127.0.0.1"), Some("loopback"));
        assert_eq!(
            range("64:ff9b::a9fe:a9fe"),
            Some("link-local / cloud metadata")
        );
        assert_eq!(range("2002:7f00:1::"), Some("loopback"));
        assert_eq!(range("::ffff:93.184.216.34"), None);
        assert_eq!(range("2606:4700::1111"), None);
        assert_eq!(range("2a00:1450:4001:80b::200e"), None);
    }

    #[test]
    fn rules_have_stable_codes_and_messages_name_the_value() {
        let err = Violation::PrivateAddress {
            host: "cb.example".into(),
            addr: "10.0.0.7".parse().unwrap(),
            range_name: "private (RFC 1918)",
        };
        assert_eq!(err.rule(), "private_address");
        let message = err.to_string();
        assert!(message.contains("cb.example") && message.contains("10.0.0.7"));
        assert!(message.contains("private (RFC 1918)"));
        assert_eq!(
            Violation::Port {
                port: 22,
                allowed: vec![443, 8443]
            }
            .to_string(),
            "callback URL port 22 is not allowed (allowed: 443, 8443)"
        );
    }

    mod guarded_client {
        use super::*;
        use axum::Router;
        use axum::http::{StatusCode, header::LOCATION};
        use axum::response::IntoResponse;
        use axum::routing::get;

        async fn serve() -> u16 {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let port = listener.local_addr().unwrap().port();
            let app = Router::new().route("/", get(|| async { "hello" })).route(
                "/redirect",
                get(move || async move {
                    (
                        StatusCode::FOUND,
                        [(LOCATION, format!("http://127.0.0.1:{port}/"))],
                    )
                        .into_response()
                }),
            );
            tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
            port
        }

        fn client(allow_private: PrivateTargets) -> reqwest::Client {
            let policy = CallbackPolicy {
                allow_private,
                ..open()
            };
            guarded_client(Arc::new(policy), Duration::from_secs(5))
        }

        #[tokio::test]
        async fn refuses_names_that_resolve_to_private_addresses() {
            let port = serve().await;
            let err = client(PrivateTargets::None)
                .get(format!("http://localhost:{port}/"))
                .send()
                .await
                .unwrap_err();
            let violation = violation_of(&err).unwrap_or_else(|| panic!("{err:?}"));
            assert_eq!(violation.rule(), "private_address");
        }

        #[tokio::test]
        async fn reaches_private_addresses_when_allowed() {
            let port = serve().await;
            let response = client(PrivateTargets::Loopback)
                .get(format!("http://localhost:{port}/"))
                .send()
                .await
                .unwrap();
            assert_eq!(response.status(), 200);
            assert_eq!(response.text().await.unwrap(), "hello");
        }

        #[tokio::test]
        async fn applies_the_host_allowlist_when_resolving() {
            let port = serve().await;
            let policy = CallbackPolicy {
                allow_private: PrivateTargets::Private,
                allowed_hosts: Some(vec!["partner.example".into()]),
                ..open()
            };
            let err = guarded_client(Arc::new(policy), Duration::from_secs(5))
                .get(format!("http://localhost:{port}/"))
                .send()
                .await
                .unwrap_err();
            assert_eq!(violation_of(&err).unwrap().rule(), "host_not_allowed");
        }

        #[tokio::test]
        async fn does_not_follow_redirects() {
            let port = serve().await;
            let response = client(PrivateTargets::Loopback)
                .get(format!("http://localhost:{port}/redirect"))
                .send()
                .await
                .unwrap();
            assert_eq!(response.status(), 302);
        }

        #[tokio::test]
        async fn refuses_plain_http_when_https_is_required() {
            let port = serve().await;
            let policy = CallbackPolicy {
                allow_private: PrivateTargets::Private,
                allowed_ports: None,
                ..strict()
            };
            let result = guarded_client(Arc::new(policy), Duration::from_secs(5))
                .get(format!("http://localhost:{port}/"))
                .send()
                .await;
            assert!(result.is_err());
        }
    }
}
