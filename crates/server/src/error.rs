//! Errors in Anthropic's shape, so the official SDKs raise their own exception classes
//! (`AuthenticationError`, `RateLimitError`, …) for Palisade's refusals too. Palisade adds
//! a machine-readable reason code and, where one was written, the receipt id.

use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::json;

#[derive(Debug, Clone)]
pub struct ApiError {
    pub status: StatusCode,
    /// Anthropic error type (`invalid_request_error`, `authentication_error`, …).
    pub kind: &'static str,
    pub message: String,
    /// Palisade reason code, stable for programs (`key_revoked`, `upstream_timeout`, …).
    pub reason: &'static str,
    pub receipt_id: Option<String>,
    pub retry_after: Option<u64>,
}

impl ApiError {
    pub fn new(status: StatusCode, reason: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            kind: kind_for(status),
            message: message.into(),
            reason,
            receipt_id: None,
            retry_after: None,
        }
    }
    pub fn invalid(reason: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, reason, message)
    }
    pub fn unauthenticated(reason: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, reason, message)
    }
    pub fn forbidden(reason: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, reason, message)
    }
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", message)
    }
    pub fn unavailable(reason: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::SERVICE_UNAVAILABLE, reason, message)
    }
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", message)
    }
    pub fn with_receipt(mut self, id: Option<String>) -> Self {
        self.receipt_id = id;
        self
    }
    pub fn with_kind(mut self, kind: &'static str) -> Self {
        self.kind = kind;
        self
    }

    /// The JSON body; also used for `error` events inside a stream.
    pub fn body(&self) -> serde_json::Value {
        let mut err = json!({
            "type": self.kind,
            "message": self.message,
            "palisade_reason": self.reason,
        });
        if let Some(r) = &self.receipt_id {
            err["receipt_id"] = json!(r);
        }
        json!({"type": "error", "error": err})
    }
}

/// Anthropic's error type for a status, as its API documents them.
pub fn kind_for(status: StatusCode) -> &'static str {
    match status.as_u16() {
        400 | 422 => "invalid_request_error",
        401 => "authentication_error",
        402 => "billing_error",
        403 => "permission_error",
        404 => "not_found_error",
        408 | 504 => "timeout_error",
        413 => "request_too_large",
        429 => "rate_limit_error",
        529 => "overloaded_error",
        _ => "api_error",
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut resp = (self.status, axum::Json(self.body())).into_response();
        let h = resp.headers_mut();
        if let Some(r) = &self.receipt_id
            && let Ok(v) = HeaderValue::from_str(r)
        {
            h.insert("x-palisade-receipt-id", v);
        }
        if let Some(s) = self.retry_after {
            h.insert("retry-after", HeaderValue::from(s));
        }
        // Keep the SDKs from retrying refusals that will not change.
        if matches!(self.status.as_u16(), 401 | 403 | 404 | 422) {
            h.insert("x-should-retry", HeaderValue::from_static("false"));
        }
        resp
    }
}

impl From<palisade_store::StoreError> for ApiError {
    fn from(e: palisade_store::StoreError) -> Self {
        use palisade_store::StoreError as E;
        match e {
            E::NotFound => ApiError::not_found("not found"),
            E::Conflict(m) => ApiError::new(StatusCode::CONFLICT, "conflict", m)
                .with_kind("invalid_request_error"),
            E::Invalid(m) => ApiError::invalid("invalid", m),
            E::Unavailable(m) => {
                tracing::error!(error = %m, "store unavailable");
                ApiError::unavailable(
                    "store_unavailable",
                    "the audit store is unavailable; request refused",
                )
            }
            E::Corrupt(m) => {
                tracing::error!(error = %m, "store data corrupt");
                ApiError::internal("stored data could not be read")
            }
        }
    }
}
