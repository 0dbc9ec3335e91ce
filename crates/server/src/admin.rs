//! Control plane: tenants and their API keys, for the platform admin. Every change is
//! itself an `admin_change` receipt in the tenant's chain.

use crate::auth::{Actor, ROLES, mint_key, mint_secret_for, require_admin, require_admin_for};
use crate::error::ApiError;
use crate::state::AppState;
use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use palisade_audit::{AdminChange, Receipt, ReceiptKind};
use palisade_store::{ApiKey, NewApiKey, NewTenant, TenantPatch, rfc3339_ms};
use serde::Deserialize;
use serde_json::{Value, json};

/// Parses a JSON body with a clear error instead of axum's plain-text rejection.
fn parse_body<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    if body.is_empty() {
        return serde_json::from_slice(b"{}")
            .map_err(|e| ApiError::invalid("invalid_body", format!("request body required: {e}")));
    }
    serde_json::from_slice(body)
        .map_err(|e| ApiError::invalid("invalid_body", format!("invalid request body: {e}")))
}

/// The `admin_change` receipt for a control-plane change; shared by the HTTP API and the
/// CLI so both leave the same trail.
pub fn change_receipt(tenant_id: &str, actor: &str, object: String, change: Value) -> Receipt {
    let mut r = Receipt::new(
        uuid::Uuid::now_v7().hyphenated().to_string(),
        tenant_id,
        ReceiptKind::AdminChange,
        palisade_audit::format_created_at(palisade_store::now_ms().max(0) as u64),
        "allow",
    );
    r.admin = Some(AdminChange {
        actor: actor.into(),
        object,
        change,
    });
    r
}

async fn admin_receipt(
    state: &AppState,
    tenant_id: &str,
    object: String,
    change: Value,
) -> Result<String, ApiError> {
    admin_receipt_by(state, &Actor::Platform, tenant_id, object, change).await
}

async fn admin_receipt_by(
    state: &AppState,
    actor: &Actor,
    tenant_id: &str,
    object: String,
    change: Value,
) -> Result<String, ApiError> {
    let r = change_receipt(tenant_id, &actor.name(), object, change);
    let sealed = state.receipts.commit(r).await?;
    Ok(sealed.id)
}

#[derive(Deserialize)]
pub struct ListQuery {
    after: Option<String>,
    limit: Option<u32>,
}

pub async fn create_tenant(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    require_admin(&state, &headers)?;
    let new: NewTenant = parse_body(&body)?;
    let tenant = state.store.create_tenant(new).await?;
    admin_receipt(
        &state,
        &tenant.id,
        format!("tenant/{}", tenant.id),
        json!({"op": "create", "plan": tenant.plan}),
    )
    .await?;
    Ok((StatusCode::CREATED, Json(tenant)).into_response())
}

pub async fn list_tenants(
    State(state): State<AppState>,
    headers: HeaderMap,
    Query(q): Query<ListQuery>,
) -> Result<Response, ApiError> {
    require_admin(&state, &headers)?;
    let limit = q.limit.unwrap_or(100).clamp(1, 1000);
    let rows = state
        .store
        .list_tenants(q.after.as_deref(), limit + 1)
        .await?;
    let has_more = rows.len() > limit as usize;
    let data: Vec<_> = rows.into_iter().take(limit as usize).collect();
    let next = if has_more {
        data.last().map(|t| t.id.clone())
    } else {
        None
    };
    Ok(Json(json!({"data": data, "has_more": has_more, "next_after": next})).into_response())
}

pub async fn get_tenant(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    require_admin(&state, &headers)?;
    match state.store.get_tenant(&id).await? {
        Some(t) => Ok(Json(t).into_response()),
        None => Err(ApiError::not_found(format!("tenant {id} not found"))),
    }
}

pub async fn update_tenant(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    require_admin(&state, &headers)?;
    let patch: TenantPatch = parse_body(&body)?;
    let change = json!({"op": "update", "name": patch.name.is_some(), "plan": patch.plan, "attributes": patch.attributes.is_some()});
    match state.store.update_tenant(&id, patch).await? {
        Some(t) => {
            state.forget_all_keys();
            admin_receipt(&state, &id, format!("tenant/{id}"), change).await?;
            Ok(Json(t).into_response())
        }
        None => Err(ApiError::not_found(format!("tenant {id} not found"))),
    }
}

pub async fn delete_tenant(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    require_admin(&state, &headers)?;
    if state.store.get_tenant(&id).await?.is_none() {
        return Err(ApiError::not_found(format!("tenant {id} not found")));
    }
    // The receipt goes first, while the tenant's keys still exist; the deletion
    // (and crypto-shredding of its data key) follows.
    admin_receipt(&state, &id, format!("tenant/{id}"), json!({"op": "delete"})).await?;
    state.store.delete_tenant(&id).await?;
    state.forget_all_keys();
    state.tenant_keys.forget(&id).await;
    state.upstream_keys.forget(&id).await;
    Ok(StatusCode::NO_CONTENT.into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateKey {
    name: Option<String>,
    #[serde(default = "default_role")]
    role: String,
    user_id: Option<String>,
    #[serde(default)]
    scopes: Vec<String>,
    /// RFC 3339.
    expires_at: Option<String>,
    /// Client networks (CIDR) the key may be used from; empty means any.
    #[serde(default)]
    allowed_networks: Vec<String>,
    /// mTLS: the SHA-256 fingerprint (hex, colons allowed) of a client certificate. The
    /// key then has no secret: a connection presenting that verified certificate
    /// authenticates as it.
    client_cert_sha256: Option<String>,
}

/// Roles are slugs: policies may name their own (`viewer`, `editor`, …) beside the
/// built-in ones Palisade gives meaning to.
pub fn valid_role(role: &str) -> bool {
    !role.is_empty()
        && role.len() <= 64
        && role
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
}

fn default_role() -> String {
    "member".into()
}

/// Scopes a key may carry; enforcement per endpoint arrives with zero-trust access.
pub const SCOPES: &[&str] = &[
    "messages",
    "guard",
    "receipts:read",
    "approvals:decide",
    "admin",
    "act_as",
];

pub fn key_json(k: &ApiKey, secret: Option<&str>) -> Value {
    let mut v = serde_json::to_value(k).unwrap_or(Value::Null);
    if let (Some(s), Value::Object(m)) = (secret, &mut v) {
        m.insert("secret".into(), Value::from(s));
    }
    v
}

async fn tenant_must_exist(state: &AppState, tenant: &str) -> Result<(), ApiError> {
    if state.store.get_tenant(tenant).await?.is_none() {
        return Err(ApiError::not_found(format!("tenant {tenant} not found")));
    }
    Ok(())
}

pub async fn create_key(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(tenant): Path<String>,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    let actor = require_admin_for(&state, &headers, Some(&tenant)).await?;
    let req: CreateKey = parse_body(&body)?;
    tenant_must_exist(&state, &tenant).await?;
    if !valid_role(&req.role) {
        return Err(ApiError::invalid(
            "invalid_role",
            format!(
                "role must be 1-64 characters of a-z, 0-9, '_' or '-' (built-in roles: {})",
                ROLES.join(", ")
            ),
        ));
    }
    if let Some(bad) = req.scopes.iter().find(|s| !SCOPES.contains(&s.as_str())) {
        return Err(ApiError::invalid(
            "invalid_scope",
            format!("unknown scope {bad:?}; known: {}", SCOPES.join(", ")),
        ));
    }
    crate::access::valid_networks(&req.allowed_networks)
        .map_err(|m| ApiError::invalid("invalid_network", format!("allowed_networks: {m}")))?;
    let granted = if req.scopes.is_empty() {
        crate::auth::default_scopes(&req.role)
            .iter()
            .map(|s| s.to_string())
            .collect()
    } else {
        req.scopes.clone()
    };
    if !actor.may_grant(&granted) {
        return Err(ApiError::forbidden(
            "scope_not_grantable",
            "a tenant admin may only grant scopes it holds itself",
        ));
    }
    let expires_at = match &req.expires_at {
        None => None,
        Some(s) => Some(rfc3339_ms::parse(s).ok_or_else(|| {
            ApiError::invalid("invalid_expiry", "expires_at must be an RFC 3339 timestamp")
        })?),
    };
    if req.name.as_ref().is_some_and(|n| n.len() > 200) {
        return Err(ApiError::invalid(
            "invalid_name",
            "name must be at most 200 characters",
        ));
    }
    let minted = match req.client_cert_sha256.as_deref() {
        None => mint_key(&*state.rng)?,
        Some(fp) => {
            let fp = crate::tls::parse_fingerprint(fp).ok_or_else(|| {
                ApiError::invalid(
                    "invalid_fingerprint",
                    "client_cert_sha256 must be the certificate's SHA-256 as 64 hex digits",
                )
            })?;
            crate::auth::MintedKey {
                id: crate::auth::cert_key_id(&fp),
                secret: String::new(),
                secret_hash: crate::auth::hash_secret(&fp),
            }
        }
    };
    let key = state
        .store
        .create_key(NewApiKey {
            id: minted.id,
            tenant_id: tenant.clone(),
            name: req.name,
            role: req.role,
            user_id: req.user_id,
            scopes: req.scopes,
            secret_hash: minted.secret_hash,
            expires_at,
            allowed_networks: req.allowed_networks,
        })
        .await?;
    admin_receipt_by(
        &state,
        &actor,
        &tenant,
        format!("tenant/{tenant}/key/{}", key.id),
        json!({"op": "create", "role": key.role}),
    )
    .await?;
    // A certificate key has no secret to show.
    let secret = (!minted.secret.is_empty()).then_some(minted.secret.as_str());
    Ok((StatusCode::CREATED, Json(key_json(&key, secret))).into_response())
}

pub async fn list_keys(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(tenant): Path<String>,
) -> Result<Response, ApiError> {
    require_admin_for(&state, &headers, Some(&tenant)).await?;
    tenant_must_exist(&state, &tenant).await?;
    let keys = state.store.list_keys(&tenant).await?;
    let data: Vec<Value> = keys.iter().map(|k| key_json(k, None)).collect();
    Ok(Json(json!({"data": data})).into_response())
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RotateKey {
    /// Seconds during which the previous secret keeps working (0 = none, max 30 days).
    #[serde(default)]
    grace_seconds: u64,
}

/// Longest rotation grace period: 30 days.
pub const MAX_GRACE_SECONDS: u64 = 30 * 24 * 3600;

pub async fn rotate_key(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path((tenant, id)): Path<(String, String)>,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    let actor = require_admin_for(&state, &headers, Some(&tenant)).await?;
    let req: RotateKey = parse_body(&body)?;
    if id.starts_with(crate::auth::CERT_KEY_PREFIX) {
        return Err(ApiError::invalid(
            "not_rotatable",
            "a client-certificate key has no secret: register the new certificate as a key \
             and revoke this one",
        ));
    }
    if req.grace_seconds > MAX_GRACE_SECONDS {
        return Err(ApiError::invalid(
            "invalid_grace",
            format!("grace_seconds must be at most {MAX_GRACE_SECONDS}"),
        ));
    }
    let until = (req.grace_seconds > 0)
        .then(|| palisade_store::now_ms() + (req.grace_seconds as i64) * 1000);
    let (secret, hash) = mint_secret_for(&id, &*state.rng)?;
    let Some(key) = state
        .store
        .rotate_key_with_grace(&tenant, &id, &hash, until)
        .await?
    else {
        return Err(ApiError::not_found(format!("key {id} not found")));
    };
    state.forget_key(&id).await;
    admin_receipt_by(
        &state,
        &actor,
        &tenant,
        format!("tenant/{tenant}/key/{id}"),
        json!({"op": "rotate", "grace_seconds": req.grace_seconds}),
    )
    .await?;
    Ok(Json(key_json(&key, Some(&secret))).into_response())
}

pub async fn revoke_key(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path((tenant, id)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    let actor = require_admin_for(&state, &headers, Some(&tenant)).await?;
    let Some(key) = state.store.revoke_key(&tenant, &id).await? else {
        return Err(ApiError::not_found(format!("key {id} not found")));
    };
    state.forget_key(&id).await;
    admin_receipt_by(
        &state,
        &actor,
        &tenant,
        format!("tenant/{tenant}/key/{id}"),
        json!({"op": "revoke"}),
    )
    .await?;
    Ok(Json(key_json(&key, None)).into_response())
}
