//! Palisade's HTTP shell: the Anthropic-compatible data plane, the control plane and the
//! operational endpoints. This is the only crate that knows wire formats; it turns
//! requests into calls on the pure core crates and the store.
#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used, clippy::panic))]

pub mod access;
pub mod admin;
pub mod alerts_api;
pub mod approvals;
pub mod auth;
pub mod capture;
pub mod changes;
pub mod checkpoints;
pub mod config;
pub mod content;
pub mod error;
pub mod export;
pub mod jwt;
pub mod limits;
pub mod metrics;
pub mod moderation;
pub mod openapi;
pub mod policy;
pub mod policy_admin;
pub mod proxy;
pub mod receipt_build;
pub mod receipts;
pub mod receipts_api;
pub mod retention;
pub mod sentinel;
pub mod sinks;
pub mod sse;
pub mod state;
pub mod tenant_keys;
pub mod tls;
pub mod tools;
pub mod upstream_keys;
pub mod verify;
pub mod webhooks;

use crate::config::Config;
use crate::error::ApiError;
use crate::state::AppState;
use axum::Router;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use palisade_audit::{KeyProvider, LocalKeyProvider, MasterKey};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::oneshot;

pub fn router(state: AppState) -> Router {
    let body_limit = state.config.limits.max_body_bytes;
    Router::new()
        .route("/v1/messages", post(proxy::messages))
        .route("/v1/messages/count_tokens", post(proxy::count_tokens))
        .route("/v1/receipts", get(receipts_api::list))
        .route("/v1/receipts/export", get(export::tenant_export))
        .route("/v1/audit/public-key", get(checkpoints::public_key))
        .route("/v1/receipts/{id}", get(receipts_api::get))
        .route("/v1/receipts/{id}/content", get(capture::content))
        .route("/v1/approvals", get(approvals::list))
        .route("/v1/approvals/{id}", get(approvals::get))
        .route("/v1/approvals/{id}/approve", post(approvals::approve))
        .route("/v1/approvals/{id}/deny", post(approvals::deny))
        .route(
            "/admin/v1/tenants",
            post(admin::create_tenant).get(admin::list_tenants),
        )
        .route(
            "/admin/v1/tenants/{tenant}",
            get(admin::get_tenant)
                .patch(admin::update_tenant)
                .put(admin::update_tenant)
                .delete(admin::delete_tenant),
        )
        .route(
            "/admin/v1/tenants/{tenant}/keys",
            post(admin::create_key).get(admin::list_keys),
        )
        .route(
            "/admin/v1/tenants/{tenant}/keys/{id}/rotate",
            post(admin::rotate_key),
        )
        .route(
            "/admin/v1/tenants/{tenant}/keys/{id}/revoke",
            post(admin::revoke_key),
        )
        .route(
            "/admin/v1/tenants/{tenant}/upstream-key",
            get(upstream_keys::get)
                .put(upstream_keys::put)
                .delete(upstream_keys::delete),
        )
        .route("/v1/guard/tool", post(policy::guard_tool))
        .route("/v1/guard/scan", post(content::guard_scan))
        .route(
            "/admin/v1/tenants/{tenant}/policy",
            post(policy_admin::tenant_put)
                .put(policy_admin::tenant_put)
                .get(policy_admin::tenant_list),
        )
        .route(
            "/admin/v1/tenants/{tenant}/policy/dry-run",
            post(policy_admin::tenant_dry_run),
        )
        .route(
            "/admin/v1/tenants/{tenant}/policy/{hash}",
            get(policy_admin::tenant_get),
        )
        .route(
            "/admin/v1/tenants/{tenant}/policy/{hash}/activate",
            post(policy_admin::tenant_activate),
        )
        .route(
            "/admin/v1/platform/policy",
            post(policy_admin::platform_put)
                .put(policy_admin::platform_put)
                .get(policy_admin::platform_list),
        )
        .route(
            "/admin/v1/platform/policy/dry-run",
            post(policy_admin::platform_dry_run),
        )
        .route(
            "/admin/v1/platform/policy/{hash}",
            get(policy_admin::platform_get),
        )
        .route(
            "/admin/v1/platform/policy/{hash}/activate",
            post(policy_admin::platform_activate),
        )
        .route("/admin/v1/receipts", get(receipts_api::admin_list))
        .route("/admin/v1/receipts/export", get(export::admin_export))
        .route("/v1/alerts", get(alerts_api::list))
        .route("/v1/alerts/webhook-secret", get(alerts_api::webhook_secret))
        .route("/v1/alerts/{id}", get(alerts_api::get))
        .route("/v1/alerts/{id}/ack", post(alerts_api::ack))
        .route("/metrics", get(metrics::serve))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/openapi.json", get(openapi::serve))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(axum::middleware::map_response(shape_plain_errors))
        .layer(axum::middleware::from_fn(request_span))
        .layer(axum::middleware::map_request(access::stamp_peer))
        .layer(axum::middleware::map_request(tls::stamp_client_cert))
        .layer(DefaultBodyLimit::max(body_limit))
        .with_state(state)
}

async fn healthz() -> &'static str {
    "ok"
}

async fn readyz(State(state): State<AppState>) -> Response {
    if state.is_draining() {
        return (StatusCode::SERVICE_UNAVAILABLE, "draining").into_response();
    }
    match state.store.migrations_applied().await {
        Ok(true) => "ready".into_response(),
        Ok(false) => (StatusCode::SERVICE_UNAVAILABLE, "migrations pending").into_response(),
        Err(_) => (StatusCode::SERVICE_UNAVAILABLE, "store unreachable").into_response(),
    }
}

async fn not_found() -> ApiError {
    ApiError::not_found("no such endpoint")
}

async fn method_not_allowed() -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "method not allowed on this endpoint",
    )
    .with_kind("invalid_request_error")
}

/// Axum's own rejections (body too large, bad path, wrong content) are plain text; the
/// SDKs expect Anthropic's JSON error shape on every error.
/// One span per request (exported as an OTLP trace when configured): method, route
/// template (never the raw path, which can hold ids), status and receipt id. No headers,
/// no body.
async fn request_span(req: axum::extract::Request, next: axum::middleware::Next) -> Response {
    let route = req
        .extensions()
        .get::<axum::extract::MatchedPath>()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "unmatched".into());
    let span = tracing::info_span!(
        "palisade.request",
        otel.name = %format!("{} {route}", req.method()),
        http.request.method = %req.method(),
        http.route = %route,
        http.response.status_code = tracing::field::Empty,
        palisade.receipt_id = tracing::field::Empty,
    );
    let resp = tracing::Instrument::instrument(next.run(req), span.clone()).await;
    span.record("http.response.status_code", resp.status().as_u16());
    if let Some(id) = resp
        .headers()
        .get("x-palisade-receipt-id")
        .and_then(|v| v.to_str().ok())
    {
        span.record("palisade.receipt_id", id);
    }
    resp
}

async fn shape_plain_errors(resp: Response) -> Response {
    let status = resp.status();
    if !(status.is_client_error() || status.is_server_error()) {
        return resp;
    }
    let is_json = resp
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    let is_text_probe = resp
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("text/plain"));
    if is_json || (is_text_probe && status == StatusCode::SERVICE_UNAVAILABLE) {
        return resp;
    }
    let (reason, message) = match status.as_u16() {
        413 => (
            "body_too_large",
            "request body is larger than the configured limit",
        ),
        415 => (
            "unsupported_media_type",
            "send the body as application/json",
        ),
        400 | 422 => ("invalid_request", "the request could not be parsed"),
        _ => ("error", "request failed"),
    };
    // Anthropic answers unparseable requests with 400 `invalid_request_error`; axum's
    // extractors say 422. SDKs and clients expect the former.
    let status = if status == StatusCode::UNPROCESSABLE_ENTITY {
        StatusCode::BAD_REQUEST
    } else {
        status
    };
    ApiError::new(status, reason, message).into_response()
}

/// Builds the key provider from configuration. Without a configured master key the
/// embedded default keeps one in a file beside the database (mode 0600); other
/// deployments must configure one explicitly.
pub fn key_provider(config: &Config) -> Result<Arc<dyn KeyProvider>, String> {
    let master = if let Some(k) = config.secrets.master_key.as_deref() {
        MasterKey::parse(k.trim()).map_err(|e| format!("secrets.master_key: {e}"))?
    } else {
        let path = match &config.secrets.master_key_file {
            Some(p) => p.clone(),
            None => default_key_file(&config.storage.url)?,
        };
        load_or_create_key_file(&path)?
    };
    Ok(Arc::new(LocalKeyProvider::new(master)))
}

fn default_key_file(storage_url: &str) -> Result<String, String> {
    let path = storage_url
        .strip_prefix("sqlite://")
        .or_else(|| storage_url.strip_prefix("sqlite:"))
        .ok_or("set secrets.master_key or secrets.master_key_file for this storage backend")?;
    let path = path.split('?').next().unwrap_or(path);
    if path.contains(":memory:") {
        return Err("memory".into());
    }
    Ok(format!("{path}.master-key"))
}

fn load_or_create_key_file(path: &str) -> Result<MasterKey, String> {
    match std::fs::read_to_string(path) {
        Ok(text) => MasterKey::parse(text.trim()).map_err(|e| format!("{path}: {e}")),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let mut bytes = [0u8; 32];
            aws_lc_rs::rand::SecureRandom::fill(&aws_lc_rs::rand::SystemRandom::new(), &mut bytes)
                .map_err(|_| "random number generator failed".to_string())?;
            let text = hex::encode(bytes);
            write_private(path, &text).map_err(|e| format!("{path}: {e}"))?;
            tracing::warn!(
                path,
                "created a new master key file; back it up with the database"
            );
            MasterKey::parse(&text).map_err(|e| format!("{path}: {e}"))
        }
        Err(e) => Err(format!("{path}: {e}")),
    }
}

fn write_private(path: &str, text: &str) -> std::io::Result<()> {
    use std::io::Write;
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let mut f = opts.open(path)?;
    f.write_all(text.as_bytes())?;
    f.sync_all()
}

/// A running gateway: its address and a handle to stop it gracefully.
pub struct RunningServer {
    pub addr: SocketAddr,
    /// Serving HTTPS (`tls.cert_file` set).
    pub tls: bool,
    pub state: AppState,
    stop: Option<oneshot::Sender<()>>,
    done: tokio::task::JoinHandle<()>,
    audit: Option<checkpoints::AuditTask>,
    sentinel: Option<sentinel::SentinelTask>,
    /// Applies the store's change feed (PostgreSQL) to the caches.
    changes: Option<tokio::task::JoinHandle<()>>,
}

impl RunningServer {
    /// Opens the store (running migrations), binds `config.listen` and serves.
    pub async fn start(config: Config) -> Result<Self, String> {
        let store = palisade_store::open(&config.storage.url)
            .await
            .map_err(|e| format!("storage {}: {e}", redact_url(&config.storage.url)))?;
        let provider = match key_provider(&config) {
            Ok(p) => p,
            Err(e) if e == "memory" => {
                let mut bytes = [0u8; 32];
                aws_lc_rs::rand::SecureRandom::fill(
                    &aws_lc_rs::rand::SystemRandom::new(),
                    &mut bytes,
                )
                .map_err(|_| "random number generator failed".to_string())?;
                let k = MasterKey::from_bytes(&bytes).map_err(|e| e.to_string())?;
                Arc::new(LocalKeyProvider::new(k)) as Arc<dyn KeyProvider>
            }
            Err(e) => return Err(e),
        };
        let tenant_keys = tenant_keys::TenantKeys::new(provider, store.clone());
        if config.anthropic.api_key.is_none() {
            tracing::warn!(
                "no upstream key configured (ANTHROPIC_API_KEY); calls go upstream without one"
            );
        }
        let tls = if config.tls.enabled() {
            Some(tls::TlsState::load(&config.tls)?)
        } else {
            None
        };
        let listener = tokio::net::TcpListener::bind(&config.listen)
            .await
            .map_err(|e| format!("listen {}: {e}", config.listen))?;
        let addr = listener.local_addr().map_err(|e| e.to_string())?;
        let grace = Duration::from_millis(config.timeouts.shutdown_grace_ms);
        let checkpoint_signer = checkpoints::load_signer(&config, true)?;
        let audit_config = config.audit.clone();
        let mut state = AppState::new(config, store, tenant_keys).map_err(|e| e.message)?;
        state.checkpoint_signer = checkpoint_signer.clone();
        let audit =
            checkpoints::AuditTask::start(state.store.clone(), checkpoint_signer, &audit_config);
        let sentinel = state.monitor.start(state.clone());
        let changes = changes::start(&state).await;
        let app = router(state.clone());
        let (stop_tx, stop_rx) = oneshot::channel::<()>();
        let drain_state = state.clone();
        let done = tokio::spawn(async move {
            let (drained_tx, drained_rx) = oneshot::channel::<()>();
            let shutdown = async move {
                let _ = stop_rx.await;
                drain_state.set_draining();
                let _ = drained_tx.send(());
            };
            let serve: std::pin::Pin<Box<dyn Future<Output = std::io::Result<()>> + Send>> =
                match tls {
                    Some(tls) => Box::pin(async move {
                        tls::serve(listener, app, tls, shutdown).await;
                        Ok(())
                    }),
                    None => Box::pin(
                        axum::serve(
                            // Nagle's algorithm held back small writes (SSE events) until
                            // the client's delayed ACK: ~40 ms gaps inside streams.
                            axum::serve::ListenerExt::tap_io(listener, |tcp| {
                                let _ = tcp.set_nodelay(true);
                            }),
                            app.into_make_service_with_connect_info::<SocketAddr>(),
                        )
                        .with_graceful_shutdown(shutdown)
                        .into_future(),
                    ),
                };
            tokio::pin!(serve);
            tokio::select! {
                r = &mut serve => {
                    if let Err(e) = r {
                        tracing::error!(error = %e, "server error");
                    }
                }
                _ = async {
                    if drained_rx.await.is_ok() {
                        tokio::time::sleep(grace).await;
                    } else {
                        std::future::pending::<()>().await;
                    }
                } => {
                    tracing::warn!("shutdown grace period over; closing remaining connections");
                }
            }
        });
        Ok(Self {
            addr,
            tls: state.config.tls.enabled(),
            state,
            stop: Some(stop_tx),
            done,
            audit: Some(audit),
            sentinel,
            changes,
        })
    }

    pub fn base_url(&self) -> String {
        if self.tls {
            return tls::base_url(self.addr);
        }
        format!("http://{}", self.addr)
    }

    /// Graceful stop: refuse new work, finish in-flight requests and their receipts.
    pub async fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let _ = (&mut self.done).await;
        self.state.tracker.close();
        self.state.tracker.wait().await;
        if let Some(s) = self.sentinel.take() {
            s.shutdown().await;
        }
        self.state.webhooks.shutdown().await;
        if let Some(c) = self.changes.take() {
            c.abort();
        }
        self.state.receipts.shutdown().await;
        self.state.sinks.shutdown().await;
        if let Some(audit) = self.audit.take() {
            audit.shutdown().await;
        }
    }
}

fn redact_url(url: &str) -> String {
    match url.split_once('@') {
        Some((scheme_creds, host)) => {
            let scheme = scheme_creds.split("://").next().unwrap_or("");
            format!("{scheme}://***@{host}")
        }
        None => url.to_string(),
    }
}
