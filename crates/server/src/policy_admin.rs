//! Control plane for policies: put a version (validated), list, get, activate, dry-run.
//! The same handlers serve `/admin/v1/tenants/{tenant}/policy` and
//! `/admin/v1/platform/policy`. Every put and activation is an `admin_change` receipt.

use crate::admin::change_receipt;
use crate::auth::{require_admin, require_admin_for};
use crate::error::ApiError;
use crate::policy::{Layers, compile_for, source_hash};
use crate::state::AppState;
use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use palisade_policy::{Diagnostic, EvalContext};
use palisade_store::PLATFORM_SCOPE;
use serde::Deserialize;
use serde_json::{Map, Value, json};
use std::sync::Arc;

fn diagnostics_response(diags: &[Diagnostic]) -> Response {
    let n = diags.len();
    let body = json!({
        "type": "error",
        "error": {
            "type": "invalid_request_error",
            "message": format!("the policy has {n} error{}", if n == 1 { "" } else { "s" }),
            "palisade_reason": "invalid_policy",
        },
        "diagnostics": diags,
    });
    (StatusCode::UNPROCESSABLE_ENTITY, Json(body)).into_response()
}

/// Receipts for platform changes go to the platform's own chain.
fn chain_for(scope: &str) -> &str {
    scope
}

async fn scope_of(state: &AppState, tenant: Option<&str>) -> Result<String, ApiError> {
    match tenant {
        None => Ok(PLATFORM_SCOPE.to_string()),
        Some(t) => {
            if state.store.get_tenant(t).await?.is_none() {
                return Err(ApiError::not_found(format!("tenant {t} not found")));
            }
            Ok(t.to_string())
        }
    }
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct PutParams {
    #[serde(default)]
    activate: bool,
}

async fn put(
    state: &AppState,
    headers: &HeaderMap,
    tenant: Option<&str>,
    params: PutParams,
    body: &[u8],
) -> Result<Response, ApiError> {
    require_admin_for(state, headers, tenant).await?;
    let scope = scope_of(state, tenant).await?;
    let source = std::str::from_utf8(body)
        .map_err(|_| ApiError::invalid("invalid_policy", "the policy must be UTF-8 YAML text"))?;
    let file = if scope == PLATFORM_SCOPE {
        "platform.yaml".to_string()
    } else {
        format!("{scope}.yaml")
    };
    let compiled = match compile_for(&scope, source, &file) {
        Ok(c) => c,
        Err(diags) => return Ok(diagnostics_response(&diags)),
    };
    let hash = source_hash(source);
    let created = state
        .store
        .put_policy(&scope, &hash, source, "platform_admin")
        .await?;
    if created {
        state
            .receipts
            .commit(change_receipt(
                chain_for(&scope),
                "platform_admin",
                format!("{scope}/policy/{hash}"),
                json!({"op": "put_policy", "hash": hash}),
            ))
            .await?;
    }
    let mut activated = None;
    if params.activate {
        activated = Some(activate_inner(state, &scope, &hash).await?);
    }
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((
        status,
        Json(json!({
            "scope": scope,
            "hash": hash,
            "created": created,
            "active": activated.is_some(),
            "previous_active": activated.flatten(),
            "warnings": compiled.warnings(),
        })),
    )
        .into_response())
}

async fn activate_inner(
    state: &AppState,
    scope: &str,
    hash: &str,
) -> Result<Option<String>, ApiError> {
    let old = state
        .store
        .activate_policy(scope, hash)
        .await
        .map_err(|e| match e {
            palisade_store::StoreError::NotFound => {
                ApiError::not_found(format!("policy version {hash} not found"))
            }
            other => other.into(),
        })?;
    state.policies.invalidate(scope).await;
    state
        .receipts
        .commit(change_receipt(
            chain_for(scope),
            "platform_admin",
            format!("{scope}/policy"),
            json!({"op": "activate_policy", "old": old, "new": hash}),
        ))
        .await?;
    Ok(old)
}

async fn list(
    state: &AppState,
    headers: &HeaderMap,
    tenant: Option<&str>,
) -> Result<Response, ApiError> {
    require_admin_for(state, headers, tenant).await?;
    let scope = scope_of(state, tenant).await?;
    let versions = state.store.list_policies(&scope).await?;
    let active = versions.iter().find(|v| v.active).map(|v| v.hash.clone());
    Ok(Json(json!({"scope": scope, "active": active, "data": versions})).into_response())
}

async fn get(
    state: &AppState,
    headers: &HeaderMap,
    tenant: Option<&str>,
    hash: &str,
) -> Result<Response, ApiError> {
    require_admin_for(state, headers, tenant).await?;
    let scope = scope_of(state, tenant).await?;
    match state.store.get_policy(&scope, hash).await? {
        Some(v) => Ok(Json(v).into_response()),
        None => Err(ApiError::not_found(format!(
            "policy version {hash} not found"
        ))),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DryRun {
    /// Candidate YAML, or `hash` of a stored version.
    source: Option<String>,
    hash: Option<String>,
    calls: Vec<SampleCall>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SampleCall {
    tool: String,
    #[serde(default)]
    args: Value,
    #[serde(default)]
    user: Map<String, Value>,
    #[serde(default)]
    request: Map<String, Value>,
}

/// What the candidate would decide differently from the active version on each sample.
async fn dry_run(
    state: &AppState,
    headers: &HeaderMap,
    tenant: Option<&str>,
    body: &[u8],
) -> Result<Response, ApiError> {
    require_admin_for(state, headers, tenant).await?;
    let scope = scope_of(state, tenant).await?;
    let req: DryRun = serde_json::from_slice(body)
        .map_err(|e| ApiError::invalid("invalid_body", format!("invalid request body: {e}")))?;
    if req.calls.len() > 10_000 {
        return Err(ApiError::invalid(
            "too_many_calls",
            "at most 10000 sample calls",
        ));
    }
    let source = match (req.source, req.hash) {
        (Some(s), None) => s,
        (None, Some(h)) => {
            state
                .store
                .get_policy(&scope, &h)
                .await?
                .ok_or_else(|| ApiError::not_found(format!("policy version {h} not found")))?
                .source
        }
        _ => {
            return Err(ApiError::invalid(
                "invalid_body",
                "give exactly one of source or hash",
            ));
        }
    };
    let candidate = match compile_for(&scope, &source, "candidate.yaml") {
        Ok(c) => c,
        Err(d) => return Ok(diagnostics_response(&d)),
    };
    let tenant_row = match tenant {
        Some(t) => state.store.get_tenant(t).await?,
        None => None,
    };
    let current = match tenant {
        Some(t) => state.policies.layers(t).await?,
        None => state.policies.layers("@none").await?,
    };
    let candidate = Arc::new(crate::policy::ActivePolicy {
        hash: source_hash(&source),
        compiled: candidate,
    });
    let proposed = if scope == PLATFORM_SCOPE {
        Layers {
            platform: Some(candidate),
            tenant: current.tenant.clone(),
        }
    } else {
        Layers {
            platform: current.platform.clone(),
            tenant: Some(candidate),
        }
    };
    let mut changed = Vec::new();
    for (i, call) in req.calls.into_iter().enumerate() {
        let mut ctx = EvalContext::new(call.tool.clone(), call.args);
        ctx.user = call.user;
        ctx.request = call.request;
        if let Some(t) = &tenant_row {
            ctx.tenant.insert("id".into(), Value::from(t.id.clone()));
            ctx.tenant
                .insert("plan".into(), Value::from(t.plan.clone()));
            ctx.tenant
                .insert("attributes".into(), Value::Object(t.attributes.clone()));
        }
        let before = current.evaluate(&ctx);
        let after = proposed.evaluate(&ctx);
        if before.verdict != after.verdict || before.rule_id != after.rule_id {
            changed.push(json!({
                "index": i,
                "tool": call.tool,
                "before": {"decision": before.verdict.as_str(), "rule": before.rule_id, "layer": before.layer.map(|l| l.as_str())},
                "after": {"decision": after.verdict.as_str(), "rule": after.rule_id, "layer": after.layer.map(|l| l.as_str())},
            }));
        }
    }
    Ok(Json(json!({"changed": changed, "candidate_hash": source_hash(&source)})).into_response())
}

// Route adapters: tenant-scoped and platform-scoped.

fn put_params(
    q: Result<Query<PutParams>, axum::extract::rejection::QueryRejection>,
) -> Result<PutParams, ApiError> {
    q.map(|Query(p)| p)
        .map_err(|e| ApiError::invalid("invalid_query", e.body_text()))
}

pub async fn tenant_put(
    State(s): State<AppState>,
    h: HeaderMap,
    Path(t): Path<String>,
    q: Result<Query<PutParams>, axum::extract::rejection::QueryRejection>,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    put(&s, &h, Some(&t), put_params(q)?, &body).await
}
pub async fn platform_put(
    State(s): State<AppState>,
    h: HeaderMap,
    q: Result<Query<PutParams>, axum::extract::rejection::QueryRejection>,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    put(&s, &h, None, put_params(q)?, &body).await
}
pub async fn tenant_list(
    State(s): State<AppState>,
    h: HeaderMap,
    Path(t): Path<String>,
) -> Result<Response, ApiError> {
    list(&s, &h, Some(&t)).await
}
pub async fn platform_list(State(s): State<AppState>, h: HeaderMap) -> Result<Response, ApiError> {
    list(&s, &h, None).await
}
pub async fn tenant_get(
    State(s): State<AppState>,
    h: HeaderMap,
    Path((t, hash)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    get(&s, &h, Some(&t), &hash).await
}
pub async fn platform_get(
    State(s): State<AppState>,
    h: HeaderMap,
    Path(hash): Path<String>,
) -> Result<Response, ApiError> {
    get(&s, &h, None, &hash).await
}
pub async fn tenant_activate(
    State(s): State<AppState>,
    h: HeaderMap,
    Path((t, hash)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    require_admin_for(&s, &h, Some(&t)).await?;
    let scope = scope_of(&s, Some(&t)).await?;
    let old = activate_inner(&s, &scope, &hash).await?;
    Ok(Json(json!({"scope": scope, "active": hash, "previous_active": old})).into_response())
}
pub async fn platform_activate(
    State(s): State<AppState>,
    h: HeaderMap,
    Path(hash): Path<String>,
) -> Result<Response, ApiError> {
    require_admin(&s, &h)?;
    let old = activate_inner(&s, PLATFORM_SCOPE, &hash).await?;
    Ok(
        Json(json!({"scope": PLATFORM_SCOPE, "active": hash, "previous_active": old}))
            .into_response(),
    )
}
pub async fn tenant_dry_run(
    State(s): State<AppState>,
    h: HeaderMap,
    Path(t): Path<String>,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    dry_run(&s, &h, Some(&t), &body).await
}
pub async fn platform_dry_run(
    State(s): State<AppState>,
    h: HeaderMap,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    dry_run(&s, &h, None, &body).await
}
