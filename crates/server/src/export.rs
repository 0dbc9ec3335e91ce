//! NDJSON export of receipt chains (format in docs/receipts.md): per tenant an anchor
//! line when the exported stretch does not start at genesis, its receipts in seq order,
//! then the checkpoints that fall inside the stretch. Streamed page by page, never
//! buffered whole: a producer task feeds a small bounded channel, so a slow reader slows
//! the reads and a reader that goes away stops them.
//!
//! `GET /v1/receipts/export` gives a tenant credential its own chain only;
//! `GET /admin/v1/receipts/export` gives the platform admin one tenant or all.

use crate::auth::{Scope, authorize, require_admin};
use crate::error::ApiError;
use crate::state::AppState;
use axum::body::Body;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use palisade_audit::{Anchor, export_anchor_line, export_checkpoint_line, export_receipt_line};
use palisade_store::{DynStore, StoreError, rfc3339_ms};
use serde::Deserialize;
use tokio::sync::mpsc;

const PAGE: u32 = 1_000;
/// Chunks (one page each) buffered between the store and the client.
const CHANNEL: usize = 4;

/// Which receipts to export: `created_at` in `[since, until)`, widened to the contiguous
/// seq range between the first and last receipt inside it, so the result verifies.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Window {
    pub since_ms: Option<i64>,
    pub until_ms: Option<i64>,
}

impl Window {
    /// Parses RFC 3339 bounds; errors name the parameter.
    pub fn parse(since: Option<&str>, until: Option<&str>) -> Result<Self, String> {
        let time = |v: Option<&str>, name: &str| -> Result<Option<i64>, String> {
            v.map(|s| {
                rfc3339_ms::parse(s).ok_or_else(|| {
                    format!("{name} must be an RFC 3339 timestamp such as 2025-01-31T00:00:00Z, got {s:?}")
                })
            })
            .transpose()
        };
        let w = Self {
            since_ms: time(since, "since")?,
            until_ms: time(until, "until")?,
        };
        if let (Some(s), Some(u)) = (w.since_ms, w.until_ms)
            && s >= u
        {
            return Err("since must be earlier than until".into());
        }
        Ok(w)
    }

    fn is_open(&self) -> bool {
        self.since_ms.is_none() && self.until_ms.is_none()
    }
}

/// Produces the export of `tenants` (all chains when `None`) into `tx`, one chunk of
/// lines per page. Stops early when the receiver is gone.
pub async fn produce(
    store: DynStore,
    tenants: Option<Vec<String>>,
    window: Window,
    tx: mpsc::Sender<Result<Bytes, StoreError>>,
) {
    if let Err(e) = produce_inner(&store, tenants, window, &tx).await {
        tracing::error!(error = %e, "receipt export failed");
        let _ = tx.send(Err(e)).await;
    }
}

/// Why an export stopped early.
enum Stop {
    /// The reader went away; nothing to report.
    Gone,
    Failed(StoreError),
}

impl From<StoreError> for Stop {
    fn from(e: StoreError) -> Self {
        Stop::Failed(e)
    }
}

impl From<palisade_audit::AuditError> for Stop {
    fn from(e: palisade_audit::AuditError) -> Self {
        Stop::Failed(StoreError::Corrupt(format!("export encoding: {e}")))
    }
}

async fn send(tx: &mpsc::Sender<Result<Bytes, StoreError>>, chunk: String) -> Result<(), Stop> {
    if chunk.is_empty() {
        return Ok(());
    }
    tx.send(Ok(Bytes::from(chunk)))
        .await
        .map_err(|_| Stop::Gone)
}

async fn produce_inner(
    store: &DynStore,
    tenants: Option<Vec<String>>,
    window: Window,
    tx: &mpsc::Sender<Result<Bytes, StoreError>>,
) -> Result<(), StoreError> {
    let tenants = match tenants {
        Some(t) => t,
        None => store.chain_tenants().await?,
    };
    for tenant in tenants {
        match export_tenant(store, &tenant, window, tx).await {
            Ok(()) => {}
            Err(Stop::Failed(e)) => return Err(e),
            Err(Stop::Gone) => return Ok(()),
        }
    }
    Ok(())
}

async fn export_tenant(
    store: &DynStore,
    tenant: &str,
    window: Window,
    tx: &mpsc::Sender<Result<Bytes, StoreError>>,
) -> Result<(), Stop> {
    let Some(head) = store.chain_head(tenant).await? else {
        return Ok(());
    };
    let purge_anchor = store.chain_anchor(tenant).await?;
    let start = purge_anchor.as_ref().map_or(1, |a| a.seq.saturating_add(1));
    let (lo, hi) = if window.is_open() {
        (start, head.seq)
    } else {
        match store
            .receipt_seq_range(tenant, window.since_ms, window.until_ms)
            .await?
        {
            Some((lo, hi)) => (lo.max(start), hi),
            None => return Ok(()),
        }
    };
    if lo > hi {
        // Everything retained was purged: the anchor (and its checkpoint) is the chain.
        if let Some(a) = purge_anchor.as_ref().filter(|_| window.is_open()) {
            let mut chunk = line(export_anchor_line(a)?);
            for c in store.list_checkpoints(tenant, a.seq, PAGE).await? {
                if c.checkpoint.seq == a.seq {
                    chunk.push_str(&line(export_checkpoint_line(&c)?));
                }
            }
            send(tx, chunk).await?;
        }
        return Ok(());
    }
    let mut from = lo;
    let mut last_seq = None;
    while from <= hi {
        let page = store.chain(tenant, from, PAGE).await?;
        let n = page.len();
        let mut chunk = String::new();
        for r in page.iter().filter(|r| r.seq <= hi) {
            if last_seq.is_none() && lo > 1 {
                // The stretch starts after genesis: say where, so it verifies alone. A
                // purge anchor is stored; a window start is the first receipt's link.
                let anchor = match &purge_anchor {
                    Some(a) if a.seq + 1 == r.seq => a.clone(),
                    _ => Anchor {
                        tenant_id: tenant.to_string(),
                        seq: r.seq.saturating_sub(1),
                        head_hash: r.prev_hash.clone(),
                    },
                };
                if anchor.seq > 0 {
                    chunk.push_str(&line(export_anchor_line(&anchor)?));
                }
            }
            chunk.push_str(&line(export_receipt_line(r)?));
            last_seq = Some(r.seq);
        }
        send(tx, chunk).await?;
        match page.last() {
            Some(l) if n == PAGE as usize && l.seq < hi => from = l.seq.saturating_add(1),
            _ => break,
        }
    }
    let Some(last_seq) = last_seq else {
        return Ok(());
    };
    // Checkpoints from the start anchor to the last exported receipt: one beyond it
    // would (rightly) read as a truncated chain.
    let mut from = lo.saturating_sub(1);
    let mut seen: Option<(u64, String)> = None;
    loop {
        let page = store.list_checkpoints(tenant, from, PAGE).await?;
        let full = page.len() == PAGE as usize;
        let mut chunk = String::new();
        let mut progressed = false;
        for c in page {
            let key = (c.checkpoint.seq, c.checkpoint.key_id.clone());
            if seen.as_ref().is_some_and(|s| key <= *s) {
                continue;
            }
            seen = Some(key);
            progressed = true;
            if c.checkpoint.seq <= last_seq {
                chunk.push_str(&line(export_checkpoint_line(&c)?));
            }
        }
        send(tx, chunk).await?;
        match &seen {
            Some((seq, _)) if full && progressed && *seq <= last_seq => from = *seq,
            _ => break,
        }
    }
    Ok(())
}

fn line(mut s: String) -> String {
    s.push('\n');
    s
}

/// Starts a producer task and returns the receiving end.
pub fn spawn(
    store: DynStore,
    tenants: Option<Vec<String>>,
    window: Window,
) -> mpsc::Receiver<Result<Bytes, StoreError>> {
    let (tx, rx) = mpsc::channel(CHANNEL);
    tokio::spawn(produce(store, tenants, window, tx));
    rx
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct ExportParams {
    since: Option<String>,
    until: Option<String>,
    tenant_id: Option<String>,
}

fn params(
    q: Result<Query<ExportParams>, axum::extract::rejection::QueryRejection>,
) -> Result<(ExportParams, Window), ApiError> {
    let p = q
        .map(|Query(p)| p)
        .map_err(|e| ApiError::invalid("invalid_query", e.body_text()))?;
    let w = Window::parse(p.since.as_deref(), p.until.as_deref())
        .map_err(|m| ApiError::invalid("invalid_time", m))?;
    Ok((p, w))
}

fn ndjson(rx: Option<mpsc::Receiver<Result<Bytes, StoreError>>>) -> Response {
    let body = match rx {
        Some(mut rx) => Body::from_stream(futures::stream::poll_fn(move |cx| {
            rx.poll_recv(cx)
                .map(|o| o.map(|r| r.map_err(|e| std::io::Error::other(e.to_string()))))
        })),
        None => Body::empty(),
    };
    let mut resp = body.into_response();
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/x-ndjson"),
    );
    h.insert(
        header::CONTENT_DISPOSITION,
        HeaderValue::from_static("attachment; filename=\"palisade-receipts.ndjson\""),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}

/// `GET /v1/receipts/export?since=&until=`: the credential's own tenant only. Naming
/// another tenant matches nothing, exactly like the listing.
pub async fn tenant_export(
    State(state): State<AppState>,
    headers: HeaderMap,
    q: Result<Query<ExportParams>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let principal = authorize(&state, &headers, Scope::ReceiptsRead).await?;
    let (p, window) = params(q)?;
    let own = principal.tenant_id().to_string();
    if p.tenant_id.as_deref().is_some_and(|t| t != own) {
        return Ok(ndjson(None));
    }
    Ok(ndjson(Some(spawn(
        state.store.clone(),
        Some(vec![own]),
        window,
    ))))
}

/// `GET /admin/v1/receipts/export?tenant_id=&since=&until=`: platform admin, one tenant
/// (404 when it has no chain) or every chain.
pub async fn admin_export(
    State(state): State<AppState>,
    headers: HeaderMap,
    q: Result<Query<ExportParams>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    require_admin(&state, &headers)?;
    let (p, window) = params(q)?;
    let tenants = match p.tenant_id {
        Some(t) => {
            if state.store.chain_head(&t).await?.is_none() {
                return Err(ApiError::not_found(format!("tenant {t} has no receipts")));
            }
            Some(vec![t])
        }
        None => None,
    };
    Ok(ndjson(Some(spawn(state.store.clone(), tenants, window))))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_parse_and_reject_nonsense() {
        assert_eq!(Window::parse(None, None).unwrap(), Window::default());
        let w = Window::parse(Some("2025-01-01T00:00:00Z"), Some("2025-01-02T00:00:00Z")).unwrap();
        assert!(w.since_ms.unwrap() < w.until_ms.unwrap());
        let e = Window::parse(Some("yesterday"), None).unwrap_err();
        assert!(e.starts_with("since must be an RFC 3339"), "{e}");
        let e = Window::parse(None, Some("2025-13-01")).unwrap_err();
        assert!(e.starts_with("until"), "{e}");
        let e =
            Window::parse(Some("2025-01-02T00:00:00Z"), Some("2025-01-01T00:00:00Z")).unwrap_err();
        assert!(e.contains("earlier"), "{e}");
    }
}
