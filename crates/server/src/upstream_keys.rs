//! Upstream key custody, "bring your own key" (docs/access.md). A tenant may give Palisade
//! its own Anthropic key; its calls then go upstream with that key instead of the
//! platform's. The key is sealed (AES-256-GCM) with the tenant's data key — the same key
//! hierarchy as the audit trail — with AAD binding the tenant id and the purpose, so a
//! ciphertext copied to another tenant or field does not open, and deleting the tenant's
//! data key (crypto-shredding) makes it unreadable. It is never logged (the wrapper's
//! `Debug` redacts) and never returned by any API: `GET` shows metadata and the last four
//! characters only.
//!
//! Decrypted keys are cached per process for [`CACHE_TTL`]; `PUT`/`DELETE` invalidate the
//! local entry at once, other replicas see a change within the TTL. When a tenant has a
//! key that cannot be decrypted the call fails closed (503 `upstream_key_unreadable`):
//! it never silently falls back to the platform key.

use crate::admin::change_receipt;
use crate::auth::{Actor, require_admin_for};
use crate::error::ApiError;
use crate::state::AppState;
use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use palisade_store::{UpstreamKeyRecord, rfc3339_ms};
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::Duration;

/// How long a decrypted key (or its absence) is served from memory before the store is
/// read again: the bound on how long another replica may keep using a replaced key.
pub const CACHE_TTL: Duration = Duration::from_secs(5);

/// The purpose bound into the AAD of the sealed key (with the tenant id).
const PURPOSE: &str = "upstream-key/v1";

/// Longest key accepted (Anthropic keys are ~108 characters).
const MAX_KEY_LEN: usize = 512;
/// Largest request body accepted by `PUT`.
const MAX_BODY: usize = 4096;

/// A decrypted upstream key. Its `Debug` never shows it.
pub struct UpstreamSecret(String);

impl UpstreamSecret {
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for UpstreamSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("UpstreamSecret(<redacted>)")
    }
}

/// Per-process cache of decrypted tenant keys (`None`: the tenant has none).
#[derive(Clone)]
pub struct UpstreamKeys {
    cache: moka::future::Cache<String, Option<Arc<UpstreamSecret>>>,
}

impl Default for UpstreamKeys {
    fn default() -> Self {
        Self::with_ttl(CACHE_TTL)
    }
}

impl UpstreamKeys {
    pub fn with_ttl(ttl: Duration) -> Self {
        Self {
            cache: moka::future::Cache::builder()
                .max_capacity(50_000)
                .time_to_live(ttl)
                .build(),
        }
    }

    /// Drops the cached key of a tenant (after a change, or after its data key went).
    pub async fn forget(&self, tenant_id: &str) {
        self.cache.invalidate(tenant_id).await;
    }

    /// Drops every cached key (a change feed message that names no tenant).
    pub fn forget_all(&self) {
        self.cache.invalidate_all();
    }
}

fn unreadable() -> ApiError {
    ApiError::unavailable(
        "upstream_key_unreadable",
        "this tenant's own upstream key cannot be decrypted (its data key was deleted or \
         replaced); the request was refused rather than sent with another key. Set the key \
         again with PUT /admin/v1/tenants/{tenant}/upstream-key, or delete it to use the \
         platform key",
    )
}

/// The tenant's own upstream key, if it has one. Errors fail the call closed.
pub async fn for_tenant(
    state: &AppState,
    tenant_id: &str,
) -> Result<Option<Arc<UpstreamSecret>>, ApiError> {
    let cache = &state.upstream_keys.cache;
    if let Some(hit) = cache.get(tenant_id).await {
        return Ok(hit);
    }
    let value = match state.store.get_upstream_key(tenant_id).await? {
        None => None,
        Some(rec) => Some(Arc::new(open_record(state, &rec).await?)),
    };
    cache.insert(tenant_id.to_string(), value.clone()).await;
    Ok(value)
}

async fn open_record(
    state: &AppState,
    rec: &UpstreamKeyRecord,
) -> Result<UpstreamSecret, ApiError> {
    let sealed: palisade_audit::Sealed =
        serde_json::from_str(&rec.sealed).map_err(|_| unreadable())?;
    let secrets = state.tenant_keys.secrets(&rec.tenant_id).await?;
    match palisade_audit::open(&secrets.data_key, &rec.tenant_id, PURPOSE, &sealed) {
        Ok(Value::String(k)) if valid_key(&k) => Ok(UpstreamSecret(k)),
        _ => {
            tracing::warn!(
                tenant = %rec.tenant_id,
                "tenant upstream key cannot be decrypted; refusing its calls"
            );
            Err(unreadable())
        }
    }
}

/// Sets `x-api-key` of an upstream request to the tenant's own key, when it has one.
pub fn apply(
    mut headers: reqwest::header::HeaderMap,
    own: Option<&UpstreamSecret>,
) -> reqwest::header::HeaderMap {
    if let Some(k) = own
        && let Ok(mut v) = HeaderValue::from_str(k.expose())
    {
        v.set_sensitive(true);
        headers.insert("x-api-key", v);
    }
    headers
}

fn valid_key(k: &str) -> bool {
    (8..=MAX_KEY_LEN).contains(&k.len()) && k.bytes().all(|b| b.is_ascii_graphic())
}

fn last4(k: &str) -> String {
    let n = k.len();
    k.get(n.saturating_sub(4)..).unwrap_or("").to_string()
}

/// Parses `{"api_key": "…"}`. Errors never echo the body (it holds a secret).
fn parse_put(body: &[u8]) -> Result<String, ApiError> {
    let bad = || {
        ApiError::invalid(
            "invalid_body",
            "body must be a JSON object {\"api_key\": \"…\"} with no other fields",
        )
    };
    if body.len() > MAX_BODY {
        return Err(bad());
    }
    let Ok(Value::Object(mut m)) = serde_json::from_slice::<Value>(body) else {
        return Err(bad());
    };
    if m.len() != 1 {
        return Err(bad());
    }
    let Some(Value::String(k)) = m.remove("api_key") else {
        return Err(bad());
    };
    let k = k.trim().to_string();
    if !valid_key(&k) {
        return Err(ApiError::invalid(
            "invalid_api_key",
            format!("api_key must be 8-{MAX_KEY_LEN} printable ASCII characters without spaces"),
        ));
    }
    Ok(k)
}

async fn tenant_must_exist(state: &AppState, tenant: &str) -> Result<(), ApiError> {
    if state.store.get_tenant(tenant).await?.is_none() {
        return Err(ApiError::not_found(format!("tenant {tenant} not found")));
    }
    Ok(())
}

async fn receipt(
    state: &AppState,
    actor: &Actor,
    tenant: &str,
    change: Value,
) -> Result<(), ApiError> {
    state
        .receipts
        .commit(change_receipt(
            tenant,
            &actor.name(),
            format!("tenant/{tenant}/upstream-key"),
            change,
        ))
        .await?;
    Ok(())
}

fn metadata(tenant: &str, rec: Option<&UpstreamKeyRecord>) -> Value {
    match rec {
        None => json!({"tenant_id": tenant, "set": false}),
        Some(r) => json!({
            "tenant_id": tenant,
            "set": true,
            "last4": r.last4,
            "created_at": rfc3339_ms::format(r.created_at),
            "updated_at": rfc3339_ms::format(r.updated_at),
        }),
    }
}

/// `PUT /admin/v1/tenants/{tenant}/upstream-key`: sets or replaces the tenant's own key.
pub async fn put(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(tenant): Path<String>,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    let actor = require_admin_for(&state, &headers, Some(&tenant)).await?;
    let key = parse_put(&body)?;
    tenant_must_exist(&state, &tenant).await?;
    let secrets = state.tenant_keys.secrets(&tenant).await?;
    let sealed = palisade_audit::seal(
        &secrets.data_key,
        &tenant,
        PURPOSE,
        &Value::String(key.clone()),
        &*state.rng,
    )
    .map_err(|_| ApiError::internal("the upstream key could not be sealed"))?;
    let sealed = serde_json::to_string(&sealed)
        .map_err(|_| ApiError::internal("the upstream key could not be encoded"))?;
    let existing = state.store.get_upstream_key(&tenant).await?;
    let now = palisade_store::now_ms();
    let rec = UpstreamKeyRecord {
        tenant_id: tenant.clone(),
        sealed,
        last4: last4(&key),
        created_at: existing.as_ref().map_or(now, |e| e.created_at),
        updated_at: now,
    };
    state.store.put_upstream_key(&rec).await?;
    state.upstream_keys.forget(&tenant).await;
    let op = if existing.is_some() { "replace" } else { "set" };
    receipt(&state, &actor, &tenant, json!({"op": op})).await?;
    Ok(Json(metadata(&tenant, Some(&rec))).into_response())
}

/// `GET /admin/v1/tenants/{tenant}/upstream-key`: metadata only, never the key.
pub async fn get(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(tenant): Path<String>,
) -> Result<Response, ApiError> {
    require_admin_for(&state, &headers, Some(&tenant)).await?;
    tenant_must_exist(&state, &tenant).await?;
    let rec = state.store.get_upstream_key(&tenant).await?;
    Ok(Json(metadata(&tenant, rec.as_ref())).into_response())
}

/// `DELETE /admin/v1/tenants/{tenant}/upstream-key`: back to the platform key.
pub async fn delete(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(tenant): Path<String>,
) -> Result<Response, ApiError> {
    let actor = require_admin_for(&state, &headers, Some(&tenant)).await?;
    tenant_must_exist(&state, &tenant).await?;
    if !state.store.delete_upstream_key(&tenant).await? {
        return Err(ApiError::not_found(format!(
            "tenant {tenant} has no upstream key"
        )));
    }
    state.upstream_keys.forget(&tenant).await;
    receipt(&state, &actor, &tenant, json!({"op": "delete"})).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_redacts_and_parse_never_echoes() {
        let s = UpstreamSecret("sk-ant-canary-1234".into());
        assert!(!format!("{s:?}").contains("canary"));
        let e = parse_put(br#"{"api_key": "sk-ant-x y z", "extra": 1}"#).unwrap_err();
        assert!(!format!("{:?}", e.body()).contains("sk-ant"));
        let e = parse_put(br#"{"api_key": "sk ant zebra7f3"}"#).unwrap_err();
        assert!(!format!("{:?}", e.body()).contains("zebra7f3"));
        assert_eq!(
            parse_put(br#"{"api_key": " sk-ant-abcdef "}"#).unwrap(),
            "sk-ant-abcdef"
        );
        assert!(parse_put(b"[]").is_err());
        assert_eq!(last4("sk-ant-abcdef"), "cdef");
    }
}
