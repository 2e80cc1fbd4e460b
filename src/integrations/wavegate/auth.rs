//! Who is calling WaveGate: the partner's credentials (401), its source IP against its
//! allowlist (403); every refusal is published as `in.wavegate.auth_refused` for the
//! `auth_events` table.

use std::net::{IpAddr, SocketAddr};

use axum::http::{HeaderMap, Method};
use ipnet::IpNet;
use uuid::Uuid;

use super::domain::{AuthRefused, PartnerId, token_hash};
use super::state::WaveGate;
use super::{store, subjects};
use crate::ingress::{ApiError, header};
use crate::signatures::constant_time_eq;

/// Who is calling, as far as the checks go.
pub struct Caller {
    pub ip: IpAddr,
    user_agent: Option<String>,
    method: Method,
    path: &'static str,
}

impl Caller {
    pub fn new(app: &WaveGate, peer: SocketAddr, headers: &HeaderMap, method: Method) -> Self {
        Caller {
            ip: client_ip(peer.ip(), headers, &app.cfg.trusted_proxies),
            user_agent: header(headers, "user-agent").map(|ua| ua.chars().take(512).collect()),
            path: if method == Method::POST {
                "/orders"
            } else {
                "/orders/*"
            },
            method,
        }
    }

    /// Records the refusal (best effort: a refusal must not wait on it) and returns it.
    pub async fn refuse(
        &self,
        app: &WaveGate,
        partner: Option<&str>,
        reason: &str,
        error: ApiError,
    ) -> ApiError {
        let event = AuthRefused {
            id: Uuid::now_v7(),
            partner_id: partner.map(|p| p.chars().take(64).collect()),
            reason: reason.to_string(),
            ip: self.ip.to_string(),
            user_agent: self.user_agent.clone(),
            method: self.method.to_string(),
            path: self.path.to_string(),
            occurred_at: chrono::Utc::now(),
        };
        tracing::info!(
            reason,
            partner = partner.unwrap_or("-"),
            ip = %self.ip,
            "call refused"
        );
        let id = event.id.to_string();
        if let Err(err) = app
            .hub
            .bus
            .publish_json(
                subjects::AUTH_REFUSED,
                Some(&id),
                async_nats::HeaderMap::new(),
                &event,
            )
            .await
        {
            tracing::warn!(error = format!("{err:#}"), "auth event not recorded");
        }
        error
    }
}

/// The client's address: the socket's peer, or — only when that peer is a trusted proxy — the
/// nearest address in `X-Forwarded-For` that is not itself a trusted proxy.
pub fn client_ip(peer: IpAddr, headers: &HeaderMap, trusted: &[IpNet]) -> IpAddr {
    let is_trusted = |ip: &IpAddr| trusted.iter().any(|net| net.contains(ip));
    if !is_trusted(&peer) {
        return peer;
    }
    let hops: Vec<IpAddr> = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|hop| hop.trim().parse().ok())
        .collect();
    hops.iter()
        .rev()
        .find(|ip| !is_trusted(ip))
        .or(hops.first())
        .copied()
        .unwrap_or(peer)
}

/// Checks `X-Partner-Id` / `X-Partner-Token` (401) and the source IP (403); records the
/// partner on the request's span.
pub async fn authenticate(
    app: &WaveGate,
    caller: &Caller,
    headers: &HeaderMap,
) -> Result<PartnerId, ApiError> {
    let claimed = header(headers, "x-partner-id");
    let invalid = || ApiError::unauthorized("invalid partner or token");
    let (Some(raw_id), Some(token)) = (claimed, header(headers, "x-partner-token")) else {
        let error = ApiError::unauthorized("send X-Partner-Id and X-Partner-Token");
        return Err(caller
            .refuse(app, claimed, "missing_credentials", error)
            .await);
    };
    let Ok(partner) = PartnerId::parse(raw_id) else {
        return Err(caller
            .refuse(app, Some(raw_id), "unknown_partner", invalid())
            .await);
    };
    let row = store::partner(&app.hub.db, &partner)
        .await
        .map_err(ApiError::database)?;
    let Some(row) = row else {
        return Err(caller
            .refuse(app, Some(raw_id), "unknown_partner", invalid())
            .await);
    };
    let presented = token_hash(&app.token_key, token);
    if !constant_time_eq(presented.as_bytes(), row.token_hash.as_bytes()) {
        return Err(caller
            .refuse(app, Some(raw_id), "invalid_token", invalid())
            .await);
    }
    let allowed = row
        .allowlist_cidrs
        .iter()
        .any(|cidr| crate::config::parse_net(cidr).is_ok_and(|net| net.contains(&caller.ip)));
    if !allowed {
        let error = ApiError::forbidden(
            "ip_not_allowed",
            format!(
                "source IP {} is not allowlisted for partner {partner}",
                caller.ip
            ),
        );
        return Err(caller
            .refuse(app, Some(raw_id), "ip_not_allowed", error)
            .await);
    }
    tracing::Span::current().record("partner_id", partner.as_str());
    Ok(partner)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn xff(value: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert("x-forwarded-for", value.parse().unwrap());
        headers
    }

    #[test]
    fn forwarded_for_is_believed_only_from_trusted_proxies() {
        let trusted: Vec<IpNet> = vec!["10.0.0.0/8".parse().unwrap()];
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        let headers = xff("203.0.113.9, 10.0.0.7");
        assert_eq!(
            client_ip(ip("10.0.0.1"), &headers, &trusted),
            ip("203.0.113.9")
        );
        // From an untrusted peer the header is ignored.
        assert_eq!(
            client_ip(ip("198.51.100.1"), &headers, &trusted),
            ip("198.51.100.1")
        );
        // A spoofed first hop does not win over the address the proxy saw.
        let headers = xff("1.1.1.1, 203.0.113.9");
        assert_eq!(
            client_ip(ip("10.0.0.1"), &headers, &trusted),
            ip("203.0.113.9")
        );
        assert_eq!(
            client_ip(ip("10.0.0.1"), &HeaderMap::new(), &trusted),
            ip("10.0.0.1")
        );
    }

    mod properties {
        use super::*;
        use proptest::prelude::*;

        proptest! {
            /// Any `X-Forwarded-For` from any peer: no panic, and the answer is the peer or
            /// an address the header named.
            #[test]
            fn any_forwarded_for_gives_the_peer_or_a_named_hop(value in "[ -~]{0,80}", trusted_peer in any::<bool>()) {
                let peer: IpAddr = if trusted_peer { "10.0.0.1" } else { "198.51.100.1" }.parse().unwrap();
                let trusted: Vec<IpNet> = vec!["10.0.0.0/8".parse().unwrap()];
                let mut headers = HeaderMap::new();
                if let Ok(v) = value.parse() {
                    headers.insert("x-forwarded-for", v);
                }
                let ip = client_ip(peer, &headers, &trusted);
                prop_assert!(ip == peer || value.split(',').any(|hop| hop.trim().parse::<IpAddr>().ok() == Some(ip)));
            }

            #[test]
            fn any_partner_id_is_judged_without_panic(raw in ".{0,80}") {
                if let Ok(id) = PartnerId::parse(&raw) {
                    prop_assert_eq!(id.as_str(), raw.as_str());
                }
            }
        }
    }
}
