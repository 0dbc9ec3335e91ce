//! JWT bearer tokens from an identity provider. Signatures are checked against the
//! provider's JWKS (a file or an HTTPS URL, cached, re-read on an unknown `kid` at most
//! once per `jwks_min_refresh_seconds`, so rotation works without letting a flood of
//! forged kids hammer the provider). Only asymmetric algorithms listed in the trust entry
//! are accepted — never `none`, never HMAC, and the JWK's key type must match the token's
//! algorithm family. `iss`, `aud` and `exp` are required; clock skew is bounded.
//!
//! Trust is per tenant: an entry maps an issuer (and optionally one claim value) to one
//! tenant, and names the claims that carry the user id, the role and the scopes. The
//! tenant never comes from anything the entry does not pin.

use crate::error::ApiError;
use crate::state::AppState;
use jsonwebtoken::jwk::{AlgorithmParameters, Jwk, JwkSet};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::HashMap;
use std::sync::{LazyLock, Mutex};
use std::time::{Duration, Instant};

/// Largest clock skew that configuration may allow.
pub const MAX_LEEWAY_SECONDS: u64 = 300;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct JwtConfig {
    /// Allowed clock skew for `exp`/`nbf` (capped at 300 s).
    pub leeway_seconds: u64,
    /// How often an unknown `kid` may trigger a JWKS re-read.
    pub jwks_min_refresh_seconds: u64,
    /// How long a fetched JWKS is used before it is read again.
    pub jwks_ttl_seconds: u64,
    pub trust: Vec<JwtTrust>,
}

impl Default for JwtConfig {
    fn default() -> Self {
        Self {
            leeway_seconds: 60,
            jwks_min_refresh_seconds: 30,
            jwks_ttl_seconds: 3600,
            trust: Vec::new(),
        }
    }
}

/// One trusted issuer → tenant mapping.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JwtTrust {
    pub issuer: String,
    pub audience: String,
    /// JWKS location: a file path or an `https://` URL.
    pub jwks: String,
    /// The tenant these tokens act in.
    pub tenant: String,
    /// Optional claim (dot path) whose value must equal `tenant_claim_value`, for
    /// issuers that serve several tenants (e.g. `org_id`).
    #[serde(default)]
    pub tenant_claim: Option<String>,
    #[serde(default)]
    pub tenant_claim_value: Option<String>,
    /// Allowed algorithms: any of RS256/384/512, PS256/384/512, ES256/384, EdDSA.
    #[serde(default = "default_algorithms")]
    pub algorithms: Vec<String>,
    #[serde(default = "default_user_claim")]
    pub user_claim: String,
    #[serde(default)]
    pub role_claim: Option<String>,
    #[serde(default = "default_role")]
    pub default_role: String,
    /// Claim with the scopes: a space-separated string or an array.
    #[serde(default)]
    pub scopes_claim: Option<String>,
    /// Extra attributes: name → claim path.
    #[serde(default)]
    pub attribute_claims: HashMap<String, String>,
}

fn default_algorithms() -> Vec<String> {
    vec!["RS256".into(), "ES256".into(), "EdDSA".into()]
}
fn default_user_claim() -> String {
    "sub".into()
}
fn default_role() -> String {
    "member".into()
}

/// Parses an allowed algorithm name; HMAC and anything unknown are refused.
pub fn parse_alg(name: &str) -> Option<Algorithm> {
    Some(match name {
        "RS256" => Algorithm::RS256,
        "RS384" => Algorithm::RS384,
        "RS512" => Algorithm::RS512,
        "PS256" => Algorithm::PS256,
        "PS384" => Algorithm::PS384,
        "PS512" => Algorithm::PS512,
        "ES256" => Algorithm::ES256,
        "ES384" => Algorithm::ES384,
        "EdDSA" => Algorithm::EdDSA,
        _ => return None,
    })
}

impl JwtConfig {
    pub fn validate(&self) -> Result<(), String> {
        for t in &self.trust {
            if t.issuer.is_empty() || t.audience.is_empty() || t.jwks.is_empty() {
                return Err("auth.jwt.trust: issuer, audience and jwks are required".into());
            }
            if let Some(bad) = t.algorithms.iter().find(|a| parse_alg(a).is_none()) {
                return Err(format!(
                    "auth.jwt.trust: algorithm {bad:?} is not allowed (asymmetric only)"
                ));
            }
            if t.tenant_claim.is_some() != t.tenant_claim_value.is_some() {
                return Err(
                    "auth.jwt.trust: tenant_claim and tenant_claim_value go together".into(),
                );
            }
        }
        Ok(())
    }
}

/// What a verified token says.
#[derive(Debug, Clone)]
pub struct VerifiedToken {
    pub tenant: String,
    pub issuer: String,
    pub user_id: Option<String>,
    pub role: String,
    pub scopes: Vec<String>,
    pub attributes: serde_json::Map<String, Value>,
}

/// A JWT has three non-empty base64url parts.
pub fn looks_like_jwt(raw: &str) -> bool {
    let mut n = 0;
    for part in raw.split('.') {
        n += 1;
        if part.is_empty()
            || !part
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return false;
        }
    }
    n == 3
}

/// Reads a dot path (`a.b.c`) in a claims object.
pub fn claim<'a>(claims: &'a Value, path: &str) -> Option<&'a Value> {
    path.split('.').try_fold(claims, |v, k| v.get(k))
}

fn claim_string(claims: &Value, path: &str) -> Option<String> {
    match claim(claims, path)? {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

struct CachedSet {
    set: JwkSet,
    fetched: Instant,
    last_attempt: Instant,
}

/// JWKS cache shared by the process, keyed by source.
static JWKS: LazyLock<Mutex<HashMap<String, CachedSet>>> =
    LazyLock::new(|| Mutex::new(HashMap::new()));

fn invalid() -> ApiError {
    ApiError::unauthenticated("invalid_token", "invalid bearer token")
}

async fn fetch_jwks(state: &AppState, source: &str) -> Result<JwkSet, ApiError> {
    let bytes = if source.starts_with("https://") {
        let resp = state
            .http
            .get(source)
            .timeout(Duration::from_secs(10))
            .send()
            .await
            .map_err(|_| ApiError::unavailable("jwks_unavailable", "the JWKS is unreachable"))?;
        if !resp.status().is_success() {
            return Err(ApiError::unavailable(
                "jwks_unavailable",
                "the JWKS is unreachable",
            ));
        }
        resp.bytes()
            .await
            .map_err(|_| ApiError::unavailable("jwks_unavailable", "the JWKS is unreachable"))?
            .to_vec()
    } else if source.contains("://") {
        return Err(ApiError::internal("JWKS must be a file or an https:// URL"));
    } else {
        tokio::fs::read(source)
            .await
            .map_err(|_| ApiError::unavailable("jwks_unavailable", "the JWKS is unreadable"))?
    };
    serde_json::from_slice(&bytes)
        .map_err(|_| ApiError::unavailable("jwks_unavailable", "the JWKS is not valid JSON"))
}

/// The JWK for `kid` (or the only key when the token has no kid), re-reading the set when
/// it is stale or the kid is unknown (rate-limited).
async fn find_key(
    state: &AppState,
    cfg: &JwtConfig,
    source: &str,
    kid: Option<&str>,
) -> Result<Option<Jwk>, ApiError> {
    let pick = |set: &JwkSet| -> Option<Jwk> {
        match kid {
            Some(k) => set.find(k).cloned(),
            None if set.keys.len() == 1 => set.keys.first().cloned(),
            None => None,
        }
    };
    let ttl = Duration::from_secs(cfg.jwks_ttl_seconds);
    let min_refresh = Duration::from_secs(cfg.jwks_min_refresh_seconds);
    let may_refresh = {
        let cache = JWKS.lock().map_err(|_| ApiError::internal("jwks cache"))?;
        match cache.get(source) {
            Some(c) if c.fetched.elapsed() < ttl => {
                if let Some(k) = pick(&c.set) {
                    return Ok(Some(k));
                }
                c.last_attempt.elapsed() >= min_refresh
            }
            _ => true,
        }
    };
    if !may_refresh {
        return Ok(None);
    }
    let now = Instant::now();
    {
        let mut cache = JWKS.lock().map_err(|_| ApiError::internal("jwks cache"))?;
        if let Some(c) = cache.get_mut(source) {
            c.last_attempt = now;
        }
    }
    let set = fetch_jwks(state, source).await?;
    let found = pick(&set);
    let mut cache = JWKS.lock().map_err(|_| ApiError::internal("jwks cache"))?;
    cache.insert(
        source.to_string(),
        CachedSet {
            set,
            fetched: now,
            last_attempt: now,
        },
    );
    Ok(found)
}

fn family_matches(jwk: &Jwk, alg: Algorithm) -> bool {
    use Algorithm::*;
    match &jwk.algorithm {
        AlgorithmParameters::RSA(_) => matches!(alg, RS256 | RS384 | RS512 | PS256 | PS384 | PS512),
        AlgorithmParameters::EllipticCurve(_) => matches!(alg, ES256 | ES384),
        AlgorithmParameters::OctetKeyPair(_) => matches!(alg, EdDSA),
        _ => false,
    }
}

#[derive(Deserialize)]
struct IssOnly {
    iss: Option<String>,
}

/// Verifies a bearer JWT against the configured trust entries.
pub async fn verify(state: &AppState, token: &str) -> Result<VerifiedToken, ApiError> {
    let cfg = &state.config.auth.jwt;
    if cfg.trust.is_empty() {
        return Err(invalid());
    }
    let header = jsonwebtoken::decode_header(token).map_err(|_| invalid())?;
    // The issuer picks which trust entries (and so which keys) apply; it is verified below.
    let iss = jsonwebtoken::dangerous::insecure_decode_claims::<IssOnly>(token)
        .ok()
        .and_then(|c| c.iss)
        .ok_or_else(invalid)?;
    let leeway = cfg.leeway_seconds.min(MAX_LEEWAY_SECONDS);
    for trust in cfg.trust.iter().filter(|t| t.issuer == iss) {
        let allowed: Vec<Algorithm> = trust
            .algorithms
            .iter()
            .filter_map(|a| parse_alg(a))
            .collect();
        if !allowed.contains(&header.alg) {
            continue;
        }
        let Some(jwk) = find_key(state, cfg, &trust.jwks, header.kid.as_deref()).await? else {
            continue;
        };
        if !family_matches(&jwk, header.alg) {
            continue;
        }
        let Ok(key) = DecodingKey::from_jwk(&jwk) else {
            continue;
        };
        let mut v = Validation::new(header.alg);
        v.algorithms = vec![header.alg];
        v.leeway = leeway;
        v.set_issuer(&[&trust.issuer]);
        v.set_audience(&[&trust.audience]);
        v.set_required_spec_claims(&["exp", "iss", "aud"]);
        v.validate_nbf = true;
        let Ok(data) = jsonwebtoken::decode::<Value>(token, &key, &v) else {
            continue;
        };
        let claims = data.claims;
        if let (Some(path), Some(want)) = (&trust.tenant_claim, &trust.tenant_claim_value)
            && claim_string(&claims, path).as_deref() != Some(want.as_str())
        {
            continue;
        }
        let role = trust
            .role_claim
            .as_deref()
            .and_then(|p| claim_string(&claims, p))
            .unwrap_or_else(|| trust.default_role.clone());
        let scopes = match trust
            .scopes_claim
            .as_deref()
            .and_then(|p| claim(&claims, p))
        {
            Some(Value::String(s)) => s.split_whitespace().map(str::to_string).collect(),
            Some(Value::Array(a)) => a
                .iter()
                .filter_map(|x| x.as_str().map(str::to_string))
                .collect(),
            _ => Vec::new(),
        };
        let mut attributes = serde_json::Map::new();
        for (name, path) in &trust.attribute_claims {
            if let Some(v) = claim(&claims, path) {
                attributes.insert(name.clone(), v.clone());
            }
        }
        return Ok(VerifiedToken {
            tenant: trust.tenant.clone(),
            issuer: trust.issuer.clone(),
            user_id: claim_string(&claims, &trust.user_claim),
            role,
            scopes,
            attributes,
        });
    }
    Err(invalid())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shapes() {
        assert!(looks_like_jwt("eyJh.eyJi.c2ln"));
        assert!(!looks_like_jwt("eyJh.eyJi."));
        assert!(!looks_like_jwt("pal_abc_def"));
        assert!(!looks_like_jwt("a.b.c.d"));
        assert!(!looks_like_jwt("a.b"));
    }

    #[test]
    fn hmac_and_none_are_not_algorithms() {
        for bad in ["HS256", "HS384", "HS512", "none", "None", ""] {
            assert!(parse_alg(bad).is_none());
        }
        let mut c = JwtConfig::default();
        c.trust.push(JwtTrust {
            issuer: "i".into(),
            audience: "a".into(),
            jwks: "f".into(),
            tenant: "t".into(),
            tenant_claim: None,
            tenant_claim_value: None,
            algorithms: vec!["HS256".into()],
            user_claim: "sub".into(),
            role_claim: None,
            default_role: "member".into(),
            scopes_claim: None,
            attribute_claims: HashMap::new(),
        });
        assert!(c.validate().is_err());
    }

    #[test]
    fn claim_paths() {
        let v = serde_json::json!({"a": {"b": "x", "n": 3}});
        assert_eq!(claim_string(&v, "a.b").as_deref(), Some("x"));
        assert_eq!(claim_string(&v, "a.n").as_deref(), Some("3"));
        assert!(claim(&v, "a.c").is_none());
    }
}
