//! Tenant alert endpoints. The tenant comes from the credential; another tenant's alert
//! id answers exactly like a missing one (404).
//!
//! - `GET /v1/alerts?limit=&cursor=&unacked=true` (`receipts:read`), newest first;
//! - `GET /v1/alerts/{id}` (`receipts:read`);
//! - `POST /v1/alerts/{id}/ack` (`admin`: tenant admins);
//! - `GET /v1/alerts/webhook-secret` (`admin`): the key verifying webhook signatures.

use crate::auth::{Scope, authorize};
use crate::error::ApiError;
use crate::state::AppState;
use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use base64::Engine;
use palisade_store::AlertQuery;
use serde::Deserialize;
use serde_json::{Value, json};

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct ListParams {
    limit: Option<u32>,
    cursor: Option<String>,
    unacked: Option<bool>,
}

fn encode_cursor(ms: i64, id: &str) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(format!("{ms}:{id}"))
}

fn decode_cursor(c: &str) -> Result<(i64, String), ApiError> {
    let bad = || ApiError::invalid("invalid_cursor", "cursor is not one this API returned");
    let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(c)
        .map_err(|_| bad())?;
    let s = String::from_utf8(raw).map_err(|_| bad())?;
    let (ms, id) = s.split_once(':').ok_or_else(bad)?;
    Ok((ms.parse().map_err(|_| bad())?, id.to_string()))
}

pub async fn list(
    State(state): State<AppState>,
    headers: HeaderMap,
    q: Result<Query<ListParams>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let principal = authorize(&state, &headers, Scope::ReceiptsRead).await?;
    let p = q
        .map(|Query(p)| p)
        .map_err(|e| ApiError::invalid("invalid_query", e.body_text()))?;
    let limit = p.limit.unwrap_or(50);
    if limit == 0 || limit > 1000 {
        return Err(ApiError::invalid(
            "invalid_limit",
            "limit must be between 1 and 1000",
        ));
    }
    let query = AlertQuery {
        // One extra row tells whether another page exists.
        limit: limit + 1,
        before: p.cursor.as_deref().map(decode_cursor).transpose()?,
        unacked_only: p.unacked.unwrap_or(false),
    };
    let mut rows = state
        .store
        .list_alerts(principal.tenant_id(), &query)
        .await?;
    let has_more = rows.len() > limit as usize;
    rows.truncate(limit as usize);
    let next = if has_more {
        rows.last().map(|a| encode_cursor(a.created_at, &a.id))
    } else {
        None
    };
    Ok(Json(
        json!({"data": rows, "has_more": has_more, "next_cursor": next}),
    ))
}

pub async fn get(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let principal = authorize(&state, &headers, Scope::ReceiptsRead).await?;
    match state.store.get_alert(principal.tenant_id(), &id).await? {
        Some(a) => Ok(Json(serde_json::to_value(a).unwrap_or(Value::Null))),
        None => Err(ApiError::not_found(format!("alert {id} not found"))),
    }
}

pub async fn ack(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let principal = authorize(&state, &headers, Scope::Admin).await?;
    let by = principal.key.id.clone();
    match state
        .store
        .ack_alert(principal.tenant_id(), &id, &by, palisade_store::now_ms())
        .await?
    {
        Some(a) => Ok(Json(serde_json::to_value(a).unwrap_or(Value::Null))),
        None => Err(ApiError::not_found(format!("alert {id} not found"))),
    }
}

pub async fn webhook_secret(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Result<Json<Value>, ApiError> {
    let principal = authorize(&state, &headers, Scope::Admin).await?;
    let secret = crate::sentinel::webhook_secret(&state, principal.tenant_id()).await?;
    Ok(Json(json!({
        "secret": secret,
        "algorithm": "HMAC-SHA256 over \"<x-palisade-timestamp>.<body>\", hex, header x-palisade-signature: v1=<hex>",
    })))
}
