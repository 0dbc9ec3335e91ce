//! Credentials. A Palisade key is `pal_<public id>_<secret>`; the store keeps only
//! SHA-256 of the secret (it has 256 bits of entropy, so a fast hash is enough) and the
//! public id is the lookup index. The tenant, user and role come only from the key row —
//! never from a header.

use crate::error::ApiError;
use crate::state::AppState;
use aws_lc_rs::digest;
use aws_lc_rs::rand::SecureRandom;
use axum::http::HeaderMap;
use base64::Engine;
use palisade_store::{ApiKey, Tenant};
use std::sync::Arc;
use subtle::ConstantTimeEq;

pub const KEY_PREFIX: &str = "pal_";
const ID_HEX_LEN: usize = 20;
const SECRET_B64_LEN: usize = 43;

/// Roles a key can act as. Privileges are checked against these, never against headers.
pub const ROLES: &[&str] = &["tenant_admin", "approver", "member", "service"];

/// Who is calling: resolved from a verified credential only.
#[derive(Debug, Clone)]
pub struct Principal {
    pub tenant: Arc<Tenant>,
    pub key: Arc<ApiKey>,
    /// Effective scopes (the credential's own, or its role's defaults).
    pub scopes: Vec<String>,
    /// The end user a service credential acts for (`x-palisade-user`, `act_as` scope).
    pub acting_for: Option<String>,
    /// Extra verified attributes (JWT claims named in the trust entry).
    pub attributes: serde_json::Map<String, serde_json::Value>,
}

impl Principal {
    pub fn tenant_id(&self) -> &str {
        &self.tenant.id
    }
    pub fn user_id(&self) -> Option<&str> {
        self.key.user_id.as_deref()
    }
    pub fn has(&self, scope: Scope) -> bool {
        self.scopes.iter().any(|s| s == scope.as_str())
    }
}

/// A freshly minted key: the full secret string is returned to the caller once.
pub struct MintedKey {
    pub id: String,
    pub secret: String,
    pub secret_hash: String,
}

pub fn mint_key(rng: &dyn SecureRandom) -> Result<MintedKey, ApiError> {
    let mut id = [0u8; ID_HEX_LEN / 2];
    let mut secret = [0u8; 32];
    rng.fill(&mut id)
        .and_then(|_| rng.fill(&mut secret))
        .map_err(|_| ApiError::internal("random number generator failed"))?;
    let id = format!("key_{}", hex::encode(id));
    let secret_b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(secret);
    let full = format!("{KEY_PREFIX}{}_{secret_b64}", &id[4..]);
    Ok(MintedKey {
        secret_hash: hash_secret(&secret_b64),
        id,
        secret: full,
    })
}

/// Mints a new secret for an existing key id (rotation).
pub fn mint_secret_for(id: &str, rng: &dyn SecureRandom) -> Result<(String, String), ApiError> {
    let mut secret = [0u8; 32];
    rng.fill(&mut secret)
        .map_err(|_| ApiError::internal("random number generator failed"))?;
    let secret_b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(secret);
    let hex_id = id.strip_prefix("key_").unwrap_or(id);
    Ok((
        format!("{KEY_PREFIX}{hex_id}_{secret_b64}"),
        hash_secret(&secret_b64),
    ))
}

pub fn hash_secret(secret: &str) -> String {
    let mut ctx = digest::Context::new(&digest::SHA256);
    ctx.update(b"palisade.key.v1\n");
    ctx.update(secret.as_bytes());
    hex::encode(ctx.finish().as_ref())
}

/// Splits `pal_<id>_<secret>` into (public id, secret) without allocating on failure paths
/// that an attacker controls.
pub fn parse_key(raw: &str) -> Option<(String, &str)> {
    let rest = raw.strip_prefix(KEY_PREFIX)?;
    if rest.len() != ID_HEX_LEN + 1 + SECRET_B64_LEN {
        return None;
    }
    let (id, secret) = rest.split_at(ID_HEX_LEN);
    let secret = secret.strip_prefix('_')?;
    if !id
        .bytes()
        .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
    {
        return None;
    }
    if !secret
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        return None;
    }
    Some((format!("key_{id}"), secret))
}

/// The credential from `x-api-key` or `Authorization: Bearer`.
pub fn credential(headers: &HeaderMap) -> Option<&str> {
    if let Some(v) = headers.get("x-api-key").and_then(|v| v.to_str().ok()) {
        return Some(v.trim());
    }
    let auth = headers.get("authorization")?.to_str().ok()?;
    let (scheme, token) = auth.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then_some(token.trim())
}

/// Constant-time equality of two secrets of any length (compares their digests).
pub fn secrets_equal(a: &str, b: &str) -> bool {
    let da = digest::digest(&digest::SHA256, a.as_bytes());
    let db = digest::digest(&digest::SHA256, b.as_bytes());
    bool::from(da.as_ref().ct_eq(db.as_ref()))
}

/// What an endpoint needs from its caller. Each data-plane handler names one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    Messages,
    Guard,
    ReceiptsRead,
    ApprovalsDecide,
    Admin,
    ActAs,
}

impl Scope {
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Messages => "messages",
            Scope::Guard => "guard",
            Scope::ReceiptsRead => "receipts:read",
            Scope::ApprovalsDecide => "approvals:decide",
            Scope::Admin => "admin",
            Scope::ActAs => "act_as",
        }
    }
}

/// Scopes of a credential that names none, by role. Keys created before scopes were
/// enforced carry an empty list, so they keep working with their role's defaults.
///
/// | role | default scopes |
/// |---|---|
/// | `tenant_admin` | messages, guard, receipts:read, approvals:decide, admin |
/// | `approver` | approvals:decide, receipts:read |
/// | `service` | messages, guard |
/// | `member` and custom roles | messages, guard, receipts:read |
///
/// `member` keeps `receipts:read` because before enforcement every key could read its
/// tenant's receipts; a key that must not is created with explicit scopes.
/// `act_as` is never a default: it must be granted explicitly.
pub fn default_scopes(role: &str) -> &'static [&'static str] {
    match role {
        "tenant_admin" => &[
            "messages",
            "guard",
            "receipts:read",
            "approvals:decide",
            "admin",
        ],
        "approver" => &["approvals:decide", "receipts:read"],
        "service" => &["messages", "guard"],
        _ => &["messages", "guard", "receipts:read"],
    }
}

/// The scopes a key really has: its own list, or its role's defaults when empty.
pub fn effective_scopes(key: &ApiKey) -> Vec<String> {
    if key.scopes.is_empty() {
        default_scopes(&key.role)
            .iter()
            .map(|s| s.to_string())
            .collect()
    } else {
        key.scopes.clone()
    }
}

/// Header a key with the `act_as` scope sets to act for one end user of its own tenant.
pub const ACT_AS_HEADER: &str = "x-palisade-user";

fn invalid_key() -> ApiError {
    ApiError::unauthenticated("invalid_credential", "invalid API key")
}

/// Resolves and verifies a tenant credential — a Palisade key or an IdP's JWT, told
/// apart by shape. Every failure is a 401 whose message says what to fix without
/// revealing whether a key id exists. Then the request's origin and network are checked,
/// and `x-palisade-user` is applied (only with the `act_as` scope).
pub async fn authenticate(state: &AppState, headers: &HeaderMap) -> Result<Principal, ApiError> {
    // A verified client certificate (mTLS) registered as a key authenticates on its own;
    // with a credential as well, both must name the same tenant.
    let cert = crate::tls::client_cert(headers);
    let mut principal = match (credential(headers), cert) {
        (None, Some(fp)) => match authenticate_cert(state, headers, fp).await? {
            Some(p) => p,
            None => {
                return Err(ApiError::unauthenticated(
                    "unknown_client_certificate",
                    "this client certificate is not registered to any key; send an API key",
                ));
            }
        },
        (None, None) => {
            return Err(ApiError::unauthenticated(
                "missing_credential",
                "missing API key: send a Palisade key in x-api-key or Authorization: Bearer",
            ));
        }
        (Some(raw), cert) => {
            let p = if raw.starts_with(KEY_PREFIX) {
                authenticate_key(state, headers, raw).await?
            } else if crate::jwt::looks_like_jwt(raw) {
                authenticate_jwt(state, raw).await?
            } else {
                return Err(invalid_key());
            };
            if let Some(fp) = cert
                && let Some(c) = authenticate_cert(state, headers, fp).await?
                && c.tenant_id() != p.tenant_id()
            {
                return Err(ApiError::unauthenticated(
                    "identity_mismatch",
                    "the client certificate and the credential belong to different tenants",
                ));
            }
            p
        }
    };
    let trusted = &state.config.auth.trusted_proxies;
    crate::access::check_tenant(headers, trusted, &principal.tenant.attributes)?;
    if let Some(user) = headers.get(ACT_AS_HEADER) {
        if !principal.has(Scope::ActAs) {
            return Err(ApiError::forbidden(
                "act_as_not_allowed",
                "this credential may not act for a user: x-palisade-user needs the act_as scope",
            ));
        }
        let user = user.to_str().unwrap_or("").trim();
        if user.is_empty() || user.len() > 256 || !user.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(ApiError::invalid(
                "invalid_user",
                "x-palisade-user must be 1-256 printable ASCII characters",
            ));
        }
        // Only the user changes: the tenant, role and plan stay the credential's.
        let mut key = (*principal.key).clone();
        key.user_id = Some(user.to_string());
        principal.key = Arc::new(key);
        principal.acting_for = Some(user.to_string());
    }
    Ok(principal)
}

async fn authenticate_key(
    state: &AppState,
    headers: &HeaderMap,
    raw: &str,
) -> Result<Principal, ApiError> {
    let Some((id, secret)) = parse_key(raw) else {
        return Err(invalid_key());
    };
    let Some(entry) = state.lookup_key(&id).await? else {
        return Err(invalid_key());
    };
    let now = palisade_store::now_ms();
    let presented = hash_secret(secret);
    let current = bool::from(presented.as_bytes().ct_eq(entry.key.secret_hash.as_bytes()));
    // During a rotation's grace period the previous secret still works.
    let previous = match (&entry.key.prev_secret_hash, entry.key.prev_valid_until) {
        (Some(h), Some(until)) => {
            bool::from(presented.as_bytes().ct_eq(h.as_bytes())) && until > now
        }
        _ => false,
    };
    if !(current || previous) {
        return Err(invalid_key());
    }
    if entry.key.revoked_at.is_some() {
        return Err(ApiError::unauthenticated(
            "key_revoked",
            "this API key has been revoked",
        ));
    }
    if entry.key.expires_at.is_some_and(|e| e <= now) {
        return Err(ApiError::unauthenticated(
            "key_expired",
            "this API key has expired",
        ));
    }
    crate::access::check_networks(
        headers,
        &state.config.auth.trusted_proxies,
        &entry.key.allowed_networks,
    )?;
    Ok(Principal {
        scopes: effective_scopes(&entry.key),
        tenant: entry.tenant.clone(),
        key: entry.key.clone(),
        acting_for: None,
        attributes: serde_json::Map::new(),
    })
}

/// Key id of a client certificate registered as a credential (`client_cert_sha256`).
pub fn cert_key_id(fingerprint: &str) -> String {
    format!("{CERT_KEY_PREFIX}{fingerprint}")
}

/// Key ids of client-certificate keys start with this (Palisade keys with `key_`).
pub const CERT_KEY_PREFIX: &str = "crt_";

/// The key a verified client certificate is registered as; `None` when it is not
/// registered. A registered but revoked, expired or out-of-network key is a 401.
async fn authenticate_cert(
    state: &AppState,
    headers: &HeaderMap,
    fingerprint: &str,
) -> Result<Option<Principal>, ApiError> {
    let Some(entry) = state.lookup_key(&cert_key_id(fingerprint)).await? else {
        return Ok(None);
    };
    // The id is the lookup; the stored hash must still agree (defence in depth).
    let presented = hash_secret(fingerprint);
    if !bool::from(presented.as_bytes().ct_eq(entry.key.secret_hash.as_bytes())) {
        return Ok(None);
    }
    let now = palisade_store::now_ms();
    if entry.key.revoked_at.is_some() {
        return Err(ApiError::unauthenticated(
            "key_revoked",
            "the key of this client certificate has been revoked",
        ));
    }
    if entry.key.expires_at.is_some_and(|e| e <= now) {
        return Err(ApiError::unauthenticated(
            "key_expired",
            "the key of this client certificate has expired",
        ));
    }
    crate::access::check_networks(
        headers,
        &state.config.auth.trusted_proxies,
        &entry.key.allowed_networks,
    )?;
    Ok(Some(Principal {
        scopes: effective_scopes(&entry.key),
        tenant: entry.tenant.clone(),
        key: entry.key.clone(),
        acting_for: None,
        attributes: serde_json::Map::new(),
    }))
}

async fn authenticate_jwt(state: &AppState, raw: &str) -> Result<Principal, ApiError> {
    let token = crate::jwt::verify(state, raw).await?;
    let Some(tenant) = state.store.get_tenant(&token.tenant).await? else {
        return Err(ApiError::unauthenticated(
            "invalid_token",
            "invalid bearer token",
        ));
    };
    let key = ApiKey {
        id: "jwt".into(),
        tenant_id: tenant.id.clone(),
        name: Some(token.issuer.clone()),
        role: token.role,
        user_id: token.user_id,
        scopes: token.scopes,
        secret_hash: String::new(),
        created_at: 0,
        expires_at: None,
        revoked_at: None,
        rotated_at: None,
        last_used_at: None,
        prev_secret_hash: None,
        prev_valid_until: None,
        allowed_networks: Vec::new(),
    };
    Ok(Principal {
        scopes: effective_scopes(&key),
        tenant: Arc::new(tenant),
        key: Arc::new(key),
        acting_for: None,
        attributes: token.attributes,
    })
}

/// Authenticates and checks that the credential carries `scope`; a missing scope is a
/// 403 `permission_error`.
pub async fn authorize(
    state: &AppState,
    headers: &HeaderMap,
    scope: Scope,
) -> Result<Principal, ApiError> {
    let p = authenticate(state, headers).await?;
    if !p.has(scope) {
        return Err(ApiError::forbidden(
            "missing_scope",
            format!("this credential lacks the {} scope", scope.as_str()),
        ));
    }
    Ok(p)
}

/// Who is making a control-plane change.
#[derive(Debug, Clone)]
pub enum Actor {
    Platform,
    TenantAdmin(Principal),
}

impl Actor {
    /// The actor as recorded in `admin_change` receipts.
    pub fn name(&self) -> String {
        match self {
            Actor::Platform => "platform_admin".into(),
            Actor::TenantAdmin(p) => format!("tenant_admin:{}", p.key.id),
        }
    }
    /// Scopes the actor may grant to keys it creates.
    pub fn may_grant(&self, scopes: &[String]) -> bool {
        match self {
            Actor::Platform => true,
            Actor::TenantAdmin(p) => scopes.iter().all(|s| p.scopes.contains(s)),
        }
    }
}

/// Control-plane check for a path naming `tenant`: the platform admin token, or a key /
/// JWT of that same tenant with role `tenant_admin` or the `admin` scope. Another
/// tenant's name answers exactly as a missing tenant does (no existence leak); `None`
/// (platform-wide resources) is for the platform admin only.
pub async fn require_admin_for(
    state: &AppState,
    headers: &HeaderMap,
    tenant: Option<&str>,
) -> Result<Actor, ApiError> {
    let raw = credential(headers);
    // A client certificate alone (mTLS) is a tenant credential too.
    let tenant_credential = raw
        .is_some_and(|r| r.starts_with(KEY_PREFIX) || crate::jwt::looks_like_jwt(r))
        || (raw.is_none() && crate::tls::client_cert(headers).is_some());
    let is_platform = match (raw, state.config.admin.token.as_deref()) {
        (Some(r), Some(expected)) => secrets_equal(r, expected),
        _ => false,
    };
    if is_platform || !tenant_credential {
        require_admin(state, headers)?;
        return Ok(Actor::Platform);
    }
    let Some(tenant) = tenant else {
        return Err(ApiError::forbidden(
            "platform_admin_only",
            "this endpoint is for the platform admin only",
        ));
    };
    let p = authenticate(state, headers).await?;
    if p.tenant_id() != tenant {
        return Err(ApiError::not_found(format!("tenant {tenant} not found")));
    }
    if p.acting_for.is_some() || !(p.key.role == "tenant_admin" || p.has(Scope::Admin)) {
        return Err(ApiError::forbidden(
            "missing_scope",
            "this credential lacks the admin scope",
        ));
    }
    Ok(Actor::TenantAdmin(p))
}

/// Platform admin check for the control plane.
pub fn require_admin(state: &AppState, headers: &HeaderMap) -> Result<(), ApiError> {
    let Some(expected) = state.config.admin.token.as_deref() else {
        return Err(ApiError::forbidden(
            "admin_disabled",
            "the control plane is disabled: set PALISADE_ADMIN_TOKEN",
        ));
    };
    match credential(headers) {
        Some(t) if secrets_equal(t, expected) => Ok(()),
        Some(_) => Err(ApiError::unauthenticated(
            "invalid_admin_token",
            "invalid admin token",
        )),
        None => Err(ApiError::unauthenticated(
            "missing_credential",
            "missing admin token: send it as Authorization: Bearer",
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_lc_rs::rand::SystemRandom;

    #[test]
    fn minted_keys_parse_back() {
        let rng = SystemRandom::new();
        for _ in 0..200 {
            let k = mint_key(&rng).unwrap();
            let (id, secret) = parse_key(&k.secret).unwrap();
            assert_eq!(id, k.id);
            assert_eq!(hash_secret(secret), k.secret_hash);
            let (s2, h2) = mint_secret_for(&k.id, &rng).unwrap();
            let (id2, sec2) = parse_key(&s2).unwrap();
            assert_eq!(id2, k.id);
            assert_eq!(hash_secret(sec2), h2);
        }
    }

    #[test]
    fn malformed_keys_are_rejected() {
        for bad in [
            "",
            "pal_",
            "sk-ant-api03-xyz",
            "pal_0123456789abcdef0123_short",
            "pal_0123456789ABCDEF0123_aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
            "pal_0123456789abcdef0123-aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
            "pal_0123456789abcdef0123_aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa=",
            "pal_0123456789abcdef0123_aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaé",
        ] {
            assert!(parse_key(bad).is_none(), "{bad}");
        }
    }

    #[test]
    fn credential_sources() {
        let mut h = HeaderMap::new();
        assert!(credential(&h).is_none());
        h.insert("authorization", "Bearer abc".parse().unwrap());
        assert_eq!(credential(&h), Some("abc"));
        h.insert("x-api-key", "xyz".parse().unwrap());
        assert_eq!(credential(&h), Some("xyz"));
        let mut h = HeaderMap::new();
        h.insert("authorization", "Basic abc".parse().unwrap());
        assert!(credential(&h).is_none());
    }

    #[test]
    fn secret_comparison() {
        assert!(secrets_equal("a-long-admin-token", "a-long-admin-token"));
        assert!(!secrets_equal("a-long-admin-token", "a-long-admin-tokem"));
        assert!(!secrets_equal("short", "a-long-admin-token"));
    }
}
