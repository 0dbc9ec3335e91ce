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
}

impl Principal {
    pub fn tenant_id(&self) -> &str {
        &self.tenant.id
    }
    pub fn user_id(&self) -> Option<&str> {
        self.key.user_id.as_deref()
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

/// Resolves and verifies a tenant credential. Every failure is a 401 whose message says
/// what to fix without revealing whether a key id exists.
pub async fn authenticate(state: &AppState, headers: &HeaderMap) -> Result<Principal, ApiError> {
    let Some(raw) = credential(headers) else {
        return Err(ApiError::unauthenticated(
            "missing_credential",
            "missing API key: send a Palisade key in x-api-key or Authorization: Bearer",
        ));
    };
    let Some((id, secret)) = parse_key(raw) else {
        return Err(ApiError::unauthenticated(
            "invalid_credential",
            "invalid API key",
        ));
    };
    let Some(entry) = state.lookup_key(&id).await? else {
        return Err(ApiError::unauthenticated(
            "invalid_credential",
            "invalid API key",
        ));
    };
    let presented = hash_secret(secret);
    if !bool::from(presented.as_bytes().ct_eq(entry.key.secret_hash.as_bytes())) {
        return Err(ApiError::unauthenticated(
            "invalid_credential",
            "invalid API key",
        ));
    }
    let now = palisade_store::now_ms();
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
    Ok(Principal {
        tenant: entry.tenant.clone(),
        key: entry.key.clone(),
    })
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
