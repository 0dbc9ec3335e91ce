//! Receipt reads. The tenant comes from the credential; a receipt id of another tenant
//! answers exactly like a missing one.

use crate::auth::{Scope, authorize, require_admin};
use crate::error::ApiError;
use crate::state::AppState;
use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use base64::Engine;
use palisade_store::{ReceiptQuery, rfc3339_ms};
use serde::Deserialize;
use serde_json::{Value, json};

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct ListParams {
    limit: Option<u32>,
    cursor: Option<String>,
    since: Option<String>,
    until: Option<String>,
    kind: Option<String>,
    decision: Option<String>,
    user_id: Option<String>,
    key_id: Option<String>,
    model: Option<String>,
    /// Platform admin only.
    tenant_id: Option<String>,
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

fn build_query(p: &ListParams) -> Result<ReceiptQuery, ApiError> {
    let time = |s: &Option<String>, name: &str| -> Result<Option<i64>, ApiError> {
        s.as_deref()
            .map(|v| {
                rfc3339_ms::parse(v).ok_or_else(|| {
                    ApiError::invalid(
                        "invalid_time",
                        format!("{name} must be an RFC 3339 timestamp"),
                    )
                })
            })
            .transpose()
    };
    let limit = p.limit.unwrap_or(50);
    if limit == 0 || limit > 1000 {
        return Err(ApiError::invalid(
            "invalid_limit",
            "limit must be between 1 and 1000",
        ));
    }
    if let Some(k) = &p.kind
        && !palisade_audit::ReceiptKind::ALL
            .iter()
            .any(|x| x.as_str() == k)
    {
        return Err(ApiError::invalid(
            "invalid_kind",
            format!("unknown receipt kind {k:?}"),
        ));
    }
    Ok(ReceiptQuery {
        // One extra row tells whether another page exists.
        limit: limit + 1,
        before: p.cursor.as_deref().map(decode_cursor).transpose()?,
        since_ms: time(&p.since, "since")?,
        until_ms: time(&p.until, "until")?,
        kind: p.kind.clone(),
        decision: p.decision.clone(),
        user_id: p.user_id.clone(),
        key_id: p.key_id.clone(),
        model: p.model.clone(),
    })
}

async fn page(state: &AppState, tenant: Option<&str>, p: &ListParams) -> Result<Value, ApiError> {
    let q = build_query(p)?;
    let want = (q.limit - 1) as usize;
    let mut rows = state.store.list_receipts(tenant, &q).await?;
    let has_more = rows.len() > want;
    rows.truncate(want);
    let next = if has_more {
        rows.last()
            .map(|r| encode_cursor(rfc3339_ms::parse(&r.created_at).unwrap_or(0), &r.id))
    } else {
        None
    };
    Ok(json!({"data": rows, "has_more": has_more, "next_cursor": next}))
}

fn params(
    q: Result<Query<ListParams>, axum::extract::rejection::QueryRejection>,
) -> Result<ListParams, ApiError> {
    q.map(|Query(p)| p)
        .map_err(|e| ApiError::invalid("invalid_query", e.body_text()))
}

pub async fn list(
    State(state): State<AppState>,
    headers: HeaderMap,
    q: Result<Query<ListParams>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let principal = authorize(&state, &headers, Scope::ReceiptsRead).await?;
    let p = params(q)?;
    if p.tenant_id
        .as_deref()
        .is_some_and(|t| t != principal.tenant_id())
    {
        // Naming another tenant is not an error that reveals anything: it simply
        // matches nothing, like a filter on a tenant that does not exist.
        return Ok(Json(
            json!({"data": [], "has_more": false, "next_cursor": null}),
        ));
    }
    Ok(Json(page(&state, Some(principal.tenant_id()), &p).await?))
}

pub async fn get(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let principal = authorize(&state, &headers, Scope::ReceiptsRead).await?;
    match state.store.get_receipt(principal.tenant_id(), &id).await? {
        Some(r) => Ok(Json(serde_json::to_value(r).unwrap_or(Value::Null))),
        None => Err(ApiError::not_found(format!("receipt {id} not found"))),
    }
}

/// Platform admin view across tenants (`tenant_id` filter optional).
pub async fn admin_list(
    State(state): State<AppState>,
    headers: HeaderMap,
    q: Result<Query<ListParams>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    require_admin(&state, &headers)?;
    let p = params(q)?;
    Ok(Json(page(&state, p.tenant_id.as_deref(), &p).await?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursor_round_trip_and_garbage() {
        let c = encode_cursor(123, "abc-def");
        assert_eq!(decode_cursor(&c).unwrap(), (123, "abc-def".to_string()));
        assert!(decode_cursor("!!!").is_err());
        assert!(
            decode_cursor(&base64::engine::general_purpose::URL_SAFE_NO_PAD.encode("x")).is_err()
        );
    }
}
