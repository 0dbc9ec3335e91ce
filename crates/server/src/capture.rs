//! Full-content capture, per tenant and off by default (`capture_content: true` tenant
//! attribute). What Palisade forwarded upstream (after input redaction) and what it
//! released to the client (after output redaction) is kept, bounded
//! (`receipts.capture_max_bytes` per direction, truncated with a flag), sealed with
//! AES-256-GCM under the tenant's data key and stored apart from the receipt. The receipt
//! holds only `details.capture_id`: the chain hashes the reference, never the content, and
//! deleting the tenant's data key (crypto-shredding) makes the content unreadable while
//! the chain still verifies.

use crate::auth::{Principal, Scope, authenticate};
use crate::error::ApiError;
use crate::state::AppState;
use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use palisade_store::CaptureRecord;
use serde_json::{Value, json};

/// Content collected during one call.
#[derive(Debug, Default)]
pub struct Capture {
    max: usize,
    prompt: String,
    output: String,
    prompt_truncated: bool,
    output_truncated: bool,
}

/// Whether the tenant opted in.
pub fn enabled(p: &Principal) -> bool {
    p.tenant
        .attributes
        .get("capture_content")
        .and_then(Value::as_bool)
        .unwrap_or(false)
}

/// A capture for this call when the tenant opted in.
pub fn start(state: &AppState, p: &Principal) -> Option<Capture> {
    enabled(p).then(|| Capture {
        max: state.config.receipts.capture_max_bytes,
        ..Capture::default()
    })
}

fn push_bounded(buf: &mut String, truncated: &mut bool, max: usize, text: &str) {
    if *truncated {
        return;
    }
    let room = max.saturating_sub(buf.len());
    if text.len() <= room {
        buf.push_str(text);
        return;
    }
    let mut cut = room;
    while cut > 0 && !text.is_char_boundary(cut) {
        cut -= 1;
    }
    buf.push_str(&text[..cut]);
    *truncated = true;
}

impl Capture {
    /// The request as forwarded: its `system` and `messages`, as JSON.
    pub fn record_request(&mut self, forwarded: &serde_json::Map<String, Value>) {
        let v = json!({
            "system": forwarded.get("system").cloned().unwrap_or(Value::Null),
            "messages": forwarded.get("messages").cloned().unwrap_or(Value::Null),
        });
        let text = v.to_string();
        push_bounded(
            &mut self.prompt,
            &mut self.prompt_truncated,
            self.max,
            &text,
        );
    }

    /// Text the client received (a whole response's text blocks, or stream deltas).
    pub fn record_output(&mut self, text: &str) {
        push_bounded(&mut self.output, &mut self.output_truncated, self.max, text);
    }

    /// Text blocks of a released (non-streaming) response body.
    pub fn record_response(&mut self, body: &Value) {
        if let Some(blocks) = body.get("content").and_then(Value::as_array) {
            for b in blocks {
                if let Some(t) = b.get("text").and_then(Value::as_str) {
                    self.record_output(t);
                }
            }
        }
    }
}

/// Seals and stores the capture; returns its id for `details.capture_id`.
pub async fn persist(
    state: &AppState,
    tenant_id: &str,
    receipt_id: &str,
    c: Capture,
) -> Result<String, ApiError> {
    let id = format!("cap_{}", uuid::Uuid::now_v7().simple());
    let plaintext = json!({
        "prompt": c.prompt,
        "output": c.output,
        "prompt_truncated": c.prompt_truncated,
        "output_truncated": c.output_truncated,
    });
    let secrets = state.tenant_keys.secrets(tenant_id).await?;
    let sealed = palisade_audit::seal(&secrets.data_key, tenant_id, &id, &plaintext, &*state.rng)
        .map_err(|_| ApiError::internal("content capture could not be sealed"))?;
    let text = serde_json::to_string(&sealed)
        .map_err(|e| ApiError::internal(format!("capture encoding: {e}")))?;
    state
        .store
        .put_capture(&CaptureRecord {
            tenant_id: tenant_id.to_string(),
            id: id.clone(),
            receipt_id: receipt_id.to_string(),
            created_at: palisade_store::now_ms(),
            sealed: text,
        })
        .await?;
    Ok(id)
}

/// `GET /v1/receipts/{id}/content`: the decrypted capture of a call, for the tenant's
/// admins (role `tenant_admin` or the `admin` scope). 404 when the receipt or its capture
/// does not exist (or is another tenant's); 410 once the tenant's data key was deleted.
pub async fn content(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let p = authenticate(&state, &headers).await?;
    if p.acting_for.is_some() || !(p.key.role == "tenant_admin" || p.has(Scope::Admin)) {
        return Err(ApiError::forbidden(
            "missing_scope",
            "reading captured content needs a tenant_admin credential or the admin scope",
        ));
    }
    if id.len() > 128 {
        return Err(ApiError::not_found("no such receipt"));
    }
    let tenant = p.tenant.id.as_str();
    let receipt = state
        .store
        .get_receipt(tenant, &id)
        .await?
        .ok_or_else(|| ApiError::not_found("no such receipt"))?;
    let Some(capture_id) = receipt.details.get("capture_id").and_then(Value::as_str) else {
        return Err(ApiError::not_found("this receipt has no captured content"));
    };
    let rec = state
        .store
        .get_capture(tenant, capture_id)
        .await?
        .ok_or_else(|| ApiError::not_found("this receipt has no captured content"))?;
    let gone = || {
        ApiError::new(
            StatusCode::GONE,
            "content_unreadable",
            "the captured content can no longer be decrypted (the tenant's data key was deleted)",
        )
    };
    let sealed: palisade_audit::Sealed = serde_json::from_str(&rec.sealed).map_err(|_| gone())?;
    let secrets = state.tenant_keys.secrets(tenant).await?;
    let plain =
        palisade_audit::open(&secrets.data_key, tenant, &rec.id, &sealed).map_err(|_| gone())?;
    Ok(Json(json!({
        "receipt_id": receipt.id,
        "capture_id": rec.id,
        "prompt": plain.get("prompt").cloned().unwrap_or(Value::Null),
        "output": plain.get("output").cloned().unwrap_or(Value::Null),
        "prompt_truncated": plain.get("prompt_truncated").cloned().unwrap_or(Value::Bool(false)),
        "output_truncated": plain.get("output_truncated").cloned().unwrap_or(Value::Bool(false)),
    })))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounded_on_char_boundaries_with_flag() {
        let mut c = Capture {
            max: 5,
            ..Capture::default()
        };
        c.record_output("héllo world");
        assert_eq!(c.output, "héll");
        assert!(c.output_truncated);
        c.record_output("more");
        assert_eq!(c.output, "héll");
        let mut d = Capture {
            max: 10,
            ..Capture::default()
        };
        d.record_output("abc");
        d.record_output("def");
        assert_eq!(d.output, "abcdef");
        assert!(!d.output_truncated);
    }
}
