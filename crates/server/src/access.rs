//! Where a request may come from: the client address (with `X-Forwarded-For` believed only
//! from configured proxies), the tenant's and the key's allowed networks, and the tenant's
//! allowed browser origins. These are checked on the request itself, never on its text.

use crate::error::ApiError;
use axum::http::HeaderMap;
use ipnet::IpNet;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::net::IpAddr;

/// Internal header carrying the TCP peer address from the router's middleware to the
/// handlers. Any client-sent value is removed before it is set, so it cannot be spoofed.
pub const PEER_HEADER: &str = "x-palisade-internal-peer";

/// Router middleware: replaces any client-sent [`PEER_HEADER`] with the TCP peer address
/// (absent when the server runs without connect info, e.g. in router-level tests).
pub async fn stamp_peer(mut req: axum::extract::Request) -> axum::extract::Request {
    req.headers_mut().remove(PEER_HEADER);
    let peer = req
        .extensions()
        .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
        .map(|c| c.0.ip().to_string());
    if let Some(v) = peer.and_then(|p| axum::http::HeaderValue::from_str(&p).ok()) {
        req.headers_mut().insert(PEER_HEADER, v);
    }
    req
}

/// `auth` section of the configuration.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    /// Proxies (CIDR) whose `X-Forwarded-For` is believed. Empty: the header is ignored.
    pub trusted_proxies: Vec<String>,
    /// Identity providers whose signed JWTs are accepted as tenant credentials.
    pub jwt: crate::jwt::JwtConfig,
}

impl AuthConfig {
    pub fn validate(&self) -> Result<(), String> {
        valid_networks(&self.trusted_proxies).map_err(|m| format!("auth.trusted_proxies: {m}"))?;
        self.jwt.validate()
    }
}

/// Parses a CIDR or a bare address (as a /32 or /128).
pub fn parse_net(s: &str) -> Option<IpNet> {
    let s = s.trim();
    s.parse::<IpNet>()
        .ok()
        .or_else(|| s.parse::<IpAddr>().ok().map(IpNet::from))
}

pub fn valid_networks(list: &[String]) -> Result<(), String> {
    match list.iter().find(|n| parse_net(n).is_none()) {
        Some(bad) => Err(format!("{bad:?} is not a CIDR network")),
        None => Ok(()),
    }
}

fn in_any(ip: IpAddr, nets: &[IpNet]) -> bool {
    let ip = canonical(ip);
    nets.iter().any(|n| n.contains(&ip))
}

/// IPv4-mapped IPv6 addresses compare as IPv4.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// The client address: the TCP peer, or — when the peer is a trusted proxy — the
/// right-most `X-Forwarded-For` entry that is not itself a trusted proxy.
pub fn client_addr(headers: &HeaderMap, trusted: &[String]) -> Option<IpAddr> {
    let peer: IpAddr = headers
        .get(PEER_HEADER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .map(canonical)?;
    let trusted: Vec<IpNet> = trusted.iter().filter_map(|t| parse_net(t)).collect();
    if trusted.is_empty() || !in_any(peer, &trusted) {
        return Some(peer);
    }
    let mut addr = peer;
    let hops: Vec<&str> = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .collect();
    for hop in hops.iter().rev() {
        let Ok(ip) = hop.parse::<IpAddr>() else {
            // A malformed entry ends what we can believe.
            break;
        };
        addr = canonical(ip);
        if !in_any(addr, &trusted) {
            break;
        }
    }
    Some(addr)
}

fn string_list(v: Option<&Value>) -> Vec<String> {
    match v {
        Some(Value::Array(a)) => a
            .iter()
            .filter_map(|x| x.as_str().map(str::to_string))
            .collect(),
        Some(Value::String(s)) => vec![s.clone()],
        _ => Vec::new(),
    }
}

fn network_refused() -> ApiError {
    ApiError::forbidden(
        "network_not_allowed",
        "requests from this network are not allowed for this credential",
    )
}

/// Checks the client address against a list of networks (empty = any). An address that
/// cannot be determined fails closed when networks are configured.
pub fn check_networks(
    headers: &HeaderMap,
    trusted: &[String],
    networks: &[String],
) -> Result<(), ApiError> {
    if networks.is_empty() {
        return Ok(());
    }
    let nets: Vec<IpNet> = networks.iter().filter_map(|n| parse_net(n)).collect();
    match client_addr(headers, trusted) {
        Some(ip) if in_any(ip, &nets) => Ok(()),
        _ => Err(network_refused()),
    }
}

/// The tenant's `allowed_origins` (attribute) against the `Origin` header, when present,
/// and the tenant's `allowed_networks` (attribute) against the client address.
pub fn check_tenant(
    headers: &HeaderMap,
    trusted: &[String],
    attributes: &serde_json::Map<String, Value>,
) -> Result<(), ApiError> {
    let origins = string_list(attributes.get("allowed_origins"));
    if let Some(origin) = headers.get("origin")
        && !origins.is_empty()
    {
        let origin = origin.to_str().unwrap_or("").trim_end_matches('/');
        let ok = origins
            .iter()
            .any(|o| o == "*" || o.trim_end_matches('/').eq_ignore_ascii_case(origin));
        if !ok {
            return Err(ApiError::forbidden(
                "origin_not_allowed",
                "this origin is not allowed for this tenant",
            ));
        }
    }
    check_networks(
        headers,
        trusted,
        &string_list(attributes.get("allowed_networks")),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut m = HeaderMap::new();
        for (k, v) in pairs {
            m.append(
                axum::http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        m
    }

    #[test]
    fn forwarded_for_is_believed_only_from_trusted_proxies() {
        let trusted = vec!["10.0.0.0/8".to_string()];
        let direct = h(&[(PEER_HEADER, "203.0.113.9"), ("x-forwarded-for", "1.2.3.4")]);
        assert_eq!(client_addr(&direct, &trusted), "203.0.113.9".parse().ok());
        let via = h(&[
            (PEER_HEADER, "10.0.0.1"),
            ("x-forwarded-for", "6.6.6.6, 1.2.3.4, 10.0.0.2"),
        ]);
        assert_eq!(client_addr(&via, &trusted), "1.2.3.4".parse().ok());
        assert_eq!(client_addr(&via, &[]), "10.0.0.1".parse().ok());
        let mapped = h(&[(PEER_HEADER, "::ffff:192.0.2.1")]);
        assert_eq!(client_addr(&mapped, &[]), "192.0.2.1".parse().ok());
        assert_eq!(client_addr(&HeaderMap::new(), &trusted), None);
    }

    #[test]
    fn networks_and_origins() {
        let req = h(&[
            (PEER_HEADER, "192.0.2.7"),
            ("origin", "https://app.example"),
        ]);
        assert!(check_networks(&req, &[], &["192.0.2.0/24".into()]).is_ok());
        assert!(check_networks(&req, &[], &["198.51.100.0/24".into()]).is_err());
        assert!(check_networks(&HeaderMap::new(), &[], &["0.0.0.0/0".into()]).is_err());
        let mut attrs = serde_json::Map::new();
        attrs.insert(
            "allowed_origins".into(),
            serde_json::json!(["https://app.example/"]),
        );
        assert!(check_tenant(&req, &[], &attrs).is_ok());
        attrs.insert(
            "allowed_origins".into(),
            serde_json::json!(["https://other.example"]),
        );
        assert!(check_tenant(&req, &[], &attrs).is_err());
        assert!(valid_networks(&["10.0.0.0/8".into(), "::1".into()]).is_ok());
        assert!(valid_networks(&["10.0.0.0/33".into()]).is_err());
    }
}
