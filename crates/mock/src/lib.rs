#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used, clippy::panic))]
//! A mock Anthropic Messages API upstream.
//!
//! Palisade's tests, demo and benchmarks need an upstream that speaks the exact wire format
//! of `POST /v1/messages` (JSON and SSE) and `POST /v1/messages/count_tokens`, fails on
//! demand, and remembers what reached it. Behaviour is steered by `[[mock:...]]` directives
//! inside the prompt (see `README.md`), because the prompt is what a gateway forwards.

mod directives;
mod server;
mod wire;

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use serde::Serialize;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

pub use directives::{Directives, Ending};
pub use server::router;
pub use wire::{error_type, estimate_input_tokens};

/// Settings for the whole mock server; directives override them per request.
#[derive(Debug, Clone)]
pub struct MockConfig {
    /// Sleep before every response (directive `latency_ms` overrides).
    pub latency: Duration,
    /// Sleep between SSE events (directive `stream_delay_ms` overrides).
    pub stream_delay: Duration,
    /// When set, any other key (`x-api-key` or `Authorization: Bearer`) gets 401 — lets tests
    /// prove which key reached the upstream.
    pub required_api_key: Option<String>,
    /// Keep a [`RecordedRequest`] per request; off for benchmarks.
    pub record: bool,
    /// Characters per `text_delta` (directive `chunk` overrides); `None`: about three words.
    pub chunk_chars: Option<usize>,
    /// Refuse requests without `anthropic-version`, as the real API does.
    pub require_anthropic_version: bool,
    /// Bodies larger than this get 413 `request_too_large` (the real API allows 32 MB).
    pub max_body_bytes: usize,
}

impl Default for MockConfig {
    fn default() -> Self {
        Self {
            latency: Duration::ZERO,
            stream_delay: Duration::ZERO,
            required_api_key: None,
            record: true,
            chunk_chars: None,
            require_anthropic_version: true,
            max_body_bytes: 32 * 1024 * 1024,
        }
    }
}

/// One request as the mock received it, so tests can check what the gateway forwarded.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RecordedRequest {
    pub method: String,
    /// Path without the query string.
    pub path: String,
    /// Header names lower-case, in arrival order.
    pub headers: Vec<(String, String)>,
    /// The parsed JSON body; a non-JSON body as a JSON string, an empty one as `null`.
    pub body: serde_json::Value,
}

impl RecordedRequest {
    /// First value of a header (name case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The API key the request carried: `x-api-key`, else the `Authorization: Bearer` token
    /// (which recent SDKs use). Tests asserting which key reached the upstream should use this.
    pub fn api_key(&self) -> Option<&str> {
        self.header("x-api-key").or_else(|| {
            let auth = self.header("authorization")?;
            let scheme = auth.get(..7)?;
            scheme.eq_ignore_ascii_case("bearer ").then(|| &auth[7..])
        })
    }
}

/// Shared state behind [`router`]: config, request record, `error_once` memory, shutdown.
#[derive(Clone)]
pub struct MockState(Arc<Inner>);

struct Inner {
    config: MockConfig,
    records: Mutex<Vec<RecordedRequest>>,
    failed_once: Mutex<HashSet<String>>,
    cancelled: std::sync::atomic::AtomicUsize,
    shutdown: watch::Sender<bool>,
}

impl MockState {
    pub fn new(config: MockConfig) -> Self {
        let (shutdown, _) = watch::channel(false);
        Self(Arc::new(Inner {
            config,
            records: Mutex::new(Vec::new()),
            failed_once: Mutex::new(HashSet::new()),
            cancelled: std::sync::atomic::AtomicUsize::new(0),
            shutdown,
        }))
    }

    pub fn config(&self) -> &MockConfig {
        &self.0.config
    }

    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.0
            .records
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// API requests the client abandoned before the mock answered (their handling was
    /// dropped mid-way, e.g. during a `latency_ms` sleep). Reset by `clear()`.
    pub fn cancelled(&self) -> usize {
        self.0.cancelled.load(std::sync::atomic::Ordering::SeqCst)
    }

    pub(crate) fn note_cancelled(&self) {
        self.0
            .cancelled
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    }

    /// Forgets recorded requests and which `error_once` keys have already failed.
    pub fn clear(&self) {
        self.0
            .cancelled
            .store(0, std::sync::atomic::Ordering::SeqCst);
        self.0
            .records
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clear();
        self.0
            .failed_once
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clear();
    }

    /// Releases hanging and stalled responses (they drop their connections) and stops the
    /// server started on this state.
    pub fn trigger_shutdown(&self) {
        self.0.shutdown.send_replace(true);
    }

    fn record(&self, r: RecordedRequest) {
        self.0
            .records
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(r);
    }

    /// True the first time `key` is seen (that request fails), false afterwards.
    fn first_failure(&self, key: &str) -> bool {
        self.0
            .failed_once
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(key.to_owned())
    }

    async fn wait_shutdown(&self) {
        let mut rx = self.0.shutdown.subscribe();
        // An error means the sender is gone, which is a shutdown too.
        let _ = rx.wait_for(|stop| *stop).await;
    }
}

/// A running mock server on its own tokio task.
pub struct MockServer {
    addr: SocketAddr,
    state: MockState,
    task: Option<JoinHandle<()>>,
}

impl MockServer {
    /// Starts on an ephemeral port of 127.0.0.1.
    pub async fn start(config: MockConfig) -> std::io::Result<MockServer> {
        Self::start_on(SocketAddr::from(([127, 0, 0, 1], 0)), config).await
    }

    pub async fn start_on(addr: SocketAddr, config: MockConfig) -> std::io::Result<MockServer> {
        let listener = TcpListener::bind(addr).await?;
        Self::from_listener(listener, config)
    }

    /// Serves on an already bound listener (lets a caller pick or share the socket).
    pub fn from_listener(listener: TcpListener, config: MockConfig) -> std::io::Result<MockServer> {
        use axum::serve::ListenerExt;
        let addr = listener.local_addr()?;
        let state = MockState::new(config);
        let app = router(state.clone());
        // Nagle would add ~40 ms to small SSE writes and skew latency figures.
        let listener = listener.tap_io(|tcp| {
            let _ = tcp.set_nodelay(true);
        });
        let stop = state.clone();
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(async move { stop.wait_shutdown().await })
                .await;
        });
        Ok(MockServer {
            addr,
            state,
            task: Some(task),
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://IP:PORT`, without a trailing slash — what a client's `base_url` takes.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.state.requests()
    }

    /// The recorded requests to one path (e.g. `/v1/messages`).
    pub fn requests_to(&self, path: &str) -> Vec<RecordedRequest> {
        self.state
            .requests()
            .into_iter()
            .filter(|r| r.path == path)
            .collect()
    }

    pub fn clear(&self) {
        self.state.clear();
    }

    /// See [`MockState::cancelled`].
    pub fn cancelled(&self) -> usize {
        self.state.cancelled()
    }

    pub fn state(&self) -> &MockState {
        &self.state
    }

    /// Stops accepting, drops hanging/stalled responses, and waits (at most 5 s) for
    /// in-flight responses to finish.
    pub async fn shutdown(mut self) {
        self.state.trigger_shutdown();
        if let Some(task) = self.task.take() {
            let abort = task.abort_handle();
            if tokio::time::timeout(Duration::from_secs(5), task)
                .await
                .is_err()
            {
                abort.abort();
            }
        }
    }
}

impl Drop for MockServer {
    fn drop(&mut self) {
        self.state.trigger_shutdown();
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}
