//! The Anthropic-compatible data plane: `/v1/messages` (plain and streamed) and
//! `/v1/messages/count_tokens`. The client's Palisade key stops here; the upstream sees
//! the platform's key. Every call ends in exactly one committed receipt.

use crate::auth::{Principal, Scope, authorize};
use crate::content::{CallContent, Direction, StreamContent};
use crate::error::ApiError;
use crate::moderation::{ModerationCall, Outcome};
use crate::receipt_build::{Draft, commit_draft};
use crate::sse::{SseParser, encode};
use crate::state::AppState;
use crate::tools::{GateLog, GateOutput, StreamGate, ToolGate};
use axum::body::{Body, Bytes};
use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use palisade_policy::{ModerationDirection as ModDirection, StreamMode};
use serde_json::Value;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

/// A call's moderation: the settings in force and, in parallel mode, the pending input
/// verdict.
#[derive(Default)]
struct CallModeration {
    call: Option<Arc<ModerationCall>>,
    pending_input: Option<tokio::task::JoinHandle<Outcome>>,
}

/// Writes the receipt of a call refused by moderation (a block or a closed failure).
async fn refuse_moderation(
    state: &AppState,
    principal: &Principal,
    mut draft: Draft,
    o: Outcome,
    started: Instant,
) -> Response {
    let err = o.error();
    if o.verdict == "block" {
        draft.decision = "block".into();
    }
    draft.record_moderation(o);
    refuse(state, principal, draft, err, started).await
}

/// Top-level fields of the Messages API that Palisade forwards. Anything else is refused
/// before the upstream: an unknown field would make the upstream reject the call anyway,
/// and silently dropping it would hide a client bug.
const MESSAGE_FIELDS: &[&str] = &[
    "model",
    "messages",
    "max_tokens",
    "system",
    "metadata",
    "stop_sequences",
    "stream",
    "temperature",
    "top_p",
    "top_k",
    "tools",
    "tool_choice",
    "thinking",
    "service_tier",
    "container",
    "mcp_servers",
    "context_management",
    "output_format",
];

const COUNT_FIELDS: &[&str] = &[
    "model",
    "messages",
    "system",
    "tools",
    "tool_choice",
    "thinking",
    "mcp_servers",
    "context_management",
    "output_format",
];

#[derive(Clone, Copy, PartialEq)]
enum Endpoint {
    Messages,
    CountTokens,
}

impl Endpoint {
    fn url(self, state: &AppState) -> reqwest::Url {
        match self {
            Endpoint::Messages => state.upstream_urls.messages.clone(),
            Endpoint::CountTokens => state.upstream_urls.count_tokens.clone(),
        }
    }
    fn name(self) -> &'static str {
        match self {
            Endpoint::Messages => "messages",
            Endpoint::CountTokens => "count_tokens",
        }
    }
}

pub async fn messages(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    detached(state, peer, headers, body, Endpoint::Messages).await
}

pub async fn count_tokens(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    detached(state, peer, headers, body, Endpoint::CountTokens).await
}

/// Runs the call on the connection's own task (no hand-off to another task per call);
/// if the client goes away mid-call, hyper drops this future, and [`FinishOnDrop`] hands
/// the rest of the call to a tracked task, so it still finishes and commits its receipt
/// and a graceful shutdown waits for it.
async fn detached(
    state: AppState,
    peer: SocketAddr,
    headers: HeaderMap,
    body: Bytes,
    endpoint: Endpoint,
) -> Response {
    let tracker = state.tracker.clone();
    FinishOnDrop {
        call: Some(Box::pin(tracing::Instrument::instrument(
            handle(state, peer, headers, body, endpoint),
            // The call stays inside the request's span (OTLP traces), here or detached.
            tracing::Span::current(),
        ))),
        tracker,
    }
    .await
}

type CallFuture = std::pin::Pin<Box<dyn std::future::Future<Output = Response> + Send>>;

/// A call polled in place that is never cancelled half-way: dropped before it is done,
/// it is spawned to run to its end (the response then goes nowhere; the receipt does).
struct FinishOnDrop {
    call: Option<CallFuture>,
    tracker: tokio_util::task::TaskTracker,
}

impl std::future::Future for FinishOnDrop {
    type Output = Response;
    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Response> {
        let Some(call) = self.call.as_mut() else {
            return std::task::Poll::Ready(
                ApiError::internal("request polled after completion").into_response(),
            );
        };
        let out = call.as_mut().poll(cx);
        if out.is_ready() {
            self.call = None;
        }
        out
    }
}

impl Drop for FinishOnDrop {
    fn drop(&mut self) {
        if let Some(call) = self.call.take()
            && let Ok(rt) = tokio::runtime::Handle::try_current()
        {
            self.tracker.spawn_on(call, &rt);
        }
    }
}

async fn handle(
    state: AppState,
    peer: SocketAddr,
    headers: HeaderMap,
    body: Bytes,
    endpoint: Endpoint,
) -> Response {
    let started = Instant::now();
    if state.is_draining() {
        return ApiError::unavailable("draining", "the gateway is shutting down; retry")
            .with_kind("overloaded_error")
            .into_response();
    }
    let principal = match authorize(&state, &headers, Scope::Messages).await {
        Ok(p) => p,
        Err(e) => return e.into_response(),
    };
    let mut draft = Draft::message(&principal, endpoint.name());
    if state.config.receipts.record_client_addr {
        draft.client_addr = Some(peer.ip().to_string());
    }
    // Everything below ends in a receipt, refusals included.
    let request = match parse_request(&state, &body, endpoint) {
        Ok(r) => r,
        Err(e) => return refuse(&state, &principal, draft, e, started).await,
    };
    draft.model = request.model.clone();
    let mut request = request;
    let mut body = body;
    // Tool policy on the request: the caller's layers and context, from the credential.
    let layers = match state.policies.layers(principal.tenant_id()).await {
        Ok(l) => l,
        Err(e) => return refuse(&state, &principal, draft, e, started).await,
    };
    let count_only = endpoint == Endpoint::CountTokens;
    let rate = match crate::limits::admit_message(
        &state,
        &layers,
        &principal,
        &mut draft,
        &request.body,
        body.len(),
        count_only,
    )
    .await
    {
        Ok(h) => h,
        Err((e, h)) => return h.apply(refuse(&state, &principal, draft, e, started).await),
    };
    let gate = ToolGate {
        ctx: crate::policy::base_context(&principal, request.model.as_deref()),
        layers,
        receipt_id: draft.id.clone(),
        refuse: state.config.policy.withheld_tool_use == "refuse",
        approvals: Some(crate::tools::ApprovalHook {
            state: state.clone(),
            principal: principal.clone(),
            token: std::sync::Mutex::new(approval_token(&headers)),
        }),
    };
    // The digest covers the prompt as the client sent it.
    match state
        .tenant_keys
        .digest(&principal.tenant.id, "prompt", &body)
        .await
    {
        Ok(d) => draft.prompt_hmac = Some(d),
        Err(e) => return e.into_response(),
    }
    let mut log = GateLog::default();
    let mut changed = endpoint == Endpoint::Messages
        && gate.filter_request(&mut request.body, state.config.policy.strip_tools, &mut log);
    draft.record_gate(&gate.layers, log);
    // Size limits and content rules on the input.
    if let Err(e) = crate::content::check_size(
        &principal,
        body.len(),
        crate::content::text_bytes(&request.body),
    ) {
        return refuse(&state, &principal, draft, e, started).await;
    }
    let guard = match state.guards.for_layers(&gate.layers).await {
        Ok(g) => g,
        Err(e) => return refuse(&state, &principal, draft, e, started).await,
    };
    let mut content = guard.map(CallContent::new);
    if let Some(c) = content
        .as_mut()
        .filter(|c| c.guard.active(Direction::Input))
    {
        changed |= c.request(&mut request.body);
        if !c.log.blocked.is_empty() {
            let err = crate::content::blocked_error(&c.log.blocked);
            let log = std::mem::take(&mut c.log);
            draft.record_findings(log);
            return refuse(&state, &principal, draft, err, started).await;
        }
    }
    if changed {
        match serde_json::to_vec(&request.body) {
            Ok(b) => body = Bytes::from(b),
            Err(e) => {
                return refuse(
                    &state,
                    &principal,
                    draft,
                    ApiError::internal(format!("re-encoding the request: {e}")),
                    started,
                )
                .await;
            }
        }
    }
    // Moderation (docs/moderation.md): the input verdict comes before the upstream call, or
    // alongside it with `parallel_input`; the output verdict before anything is released.
    let mut modr = CallModeration::default();
    if endpoint == Endpoint::Messages
        && let Some(m) = ModerationCall::for_layers(&gate.layers, principal.tenant_id())
    {
        if m.active(ModDirection::Input) {
            let text = crate::moderation::input_text(&request.body);
            if m.eff.parallel_input {
                modr.pending_input = Some(m.spawn_input(&state, text));
            } else {
                let o = m.run(&state, ModDirection::Input, &text).await;
                if o.refuses() {
                    return refuse_moderation(&state, &principal, draft, o, started).await;
                }
                draft.record_moderation(o);
            }
        }
        modr.call = Some(m);
    }
    if endpoint == Endpoint::Messages {
        draft.capture_request(&state, &principal, &request.body);
    }
    // The tenant's own upstream key (BYOK) replaces the platform key; one that cannot be
    // decrypted refuses the call (never a silent fallback).
    let own_key = match crate::upstream_keys::for_tenant(&state, principal.tenant_id()).await {
        Ok(k) => k,
        Err(e) => return refuse(&state, &principal, draft, e, started).await,
    };
    let upstream = UpstreamRequest {
        url: endpoint.url(&state),
        headers: crate::upstream_keys::apply(
            upstream_headers(&state, &headers),
            own_key.as_deref(),
        ),
        body,
    };
    let gate = (endpoint == Endpoint::Messages).then_some(gate);
    if endpoint == Endpoint::CountTokens {
        // count_tokens has no output to guard; its input findings are recorded now.
        if let Some(c) = content.take() {
            draft.record_findings(c.log);
        }
    }
    rate.apply(if request.stream && endpoint == Endpoint::Messages {
        stream_call(
            state,
            principal,
            draft,
            upstream,
            gate,
            (content, modr),
            started,
        )
        .await
    } else {
        unary_call(
            state,
            principal,
            draft,
            upstream,
            gate,
            (content, modr),
            started,
        )
        .await
    })
}

struct ParsedRequest {
    model: Option<String>,
    stream: bool,
    body: serde_json::Map<String, Value>,
}

fn parse_request(
    state: &AppState,
    body: &[u8],
    endpoint: Endpoint,
) -> Result<ParsedRequest, ApiError> {
    check_json_depth(body, state.config.limits.max_json_depth)?;
    let value: Value = serde_json::from_slice(body).map_err(|e| {
        ApiError::invalid(
            "invalid_json",
            format!("request body is not valid JSON: {e}"),
        )
    })?;
    let Value::Object(obj) = value else {
        return Err(ApiError::invalid(
            "invalid_json",
            "request body must be a JSON object",
        ));
    };
    let allowed = match endpoint {
        Endpoint::Messages => MESSAGE_FIELDS,
        Endpoint::CountTokens => COUNT_FIELDS,
    };
    for key in obj.keys() {
        if !allowed.contains(&key.as_str()) {
            let hint = if key == "safety_settings" {
                " (the Anthropic API has no safety_settings; Palisade applies per-tenant harm thresholds from its own policy)"
            } else {
                ""
            };
            return Err(ApiError::invalid(
                "unknown_field",
                format!("{key}: Extra inputs are not permitted{hint}"),
            ));
        }
    }
    let model = match obj.get("model") {
        Some(Value::String(m)) if !m.is_empty() => Some(m.clone()),
        _ => {
            return Err(ApiError::invalid(
                "invalid_request",
                "model: Field required (a non-empty string)",
            ));
        }
    };
    match obj.get("messages") {
        Some(Value::Array(_)) => {}
        _ => {
            return Err(ApiError::invalid(
                "invalid_request",
                "messages: Field required (an array)",
            ));
        }
    }
    if endpoint == Endpoint::Messages && !obj.get("max_tokens").is_some_and(Value::is_u64) {
        return Err(ApiError::invalid(
            "invalid_request",
            "max_tokens: Field required (a positive integer)",
        ));
    }
    let stream = match obj.get("stream") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(_) => {
            return Err(ApiError::invalid(
                "invalid_request",
                "stream: must be a boolean",
            ));
        }
    };
    Ok(ParsedRequest {
        model,
        stream,
        body: obj,
    })
}

/// Refuses deeply nested JSON before parsing it, so a hostile body cannot exhaust the
/// parser's stack or our time. Linear, allocation-free.
pub fn check_json_depth(body: &[u8], max: usize) -> Result<(), ApiError> {
    let mut depth = 0usize;
    let mut in_str = false;
    let mut escaped = false;
    for &b in body {
        if in_str {
            if escaped {
                escaped = false;
            } else if b == b'\\' {
                escaped = true;
            } else if b == b'"' {
                in_str = false;
            }
            continue;
        }
        match b {
            b'"' => in_str = true,
            b'{' | b'[' => {
                depth += 1;
                if depth > max {
                    return Err(ApiError::invalid(
                        "json_too_deep",
                        format!("request JSON nests deeper than {max} levels"),
                    ));
                }
            }
            b'}' | b']' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    Ok(())
}

/// Header carrying the single-use token of an approved tool call (see `approvals.rs`).
pub const APPROVAL_TOKEN_HEADER: &str = "x-palisade-approval-token";

fn approval_token(headers: &HeaderMap) -> Option<String> {
    headers
        .get(APPROVAL_TOKEN_HEADER)
        .and_then(|v| v.to_str().ok())
        .filter(|t| !t.is_empty() && t.len() <= 256)
        .map(str::to_string)
}

fn upstream_headers(state: &AppState, client: &HeaderMap) -> reqwest::header::HeaderMap {
    let mut h = reqwest::header::HeaderMap::new();
    h.insert("content-type", HeaderValue::from_static("application/json"));
    if let Some(k) = state.config.anthropic.api_key.as_deref()
        && let Ok(v) = HeaderValue::from_str(k)
    {
        h.insert("x-api-key", v);
    }
    let version = client
        .get("anthropic-version")
        .cloned()
        .or_else(|| HeaderValue::from_str(&state.config.anthropic.default_version).ok());
    if let Some(v) = version {
        h.insert("anthropic-version", v);
    }
    for beta in client.get_all("anthropic-beta") {
        h.append("anthropic-beta", beta.clone());
    }
    h
}

struct UpstreamRequest {
    url: reqwest::Url,
    headers: reqwest::header::HeaderMap,
    body: Bytes,
}

impl UpstreamRequest {
    fn send(&self, state: &AppState) -> reqwest::RequestBuilder {
        state
            .http
            .post(self.url.clone())
            .headers(self.headers.clone())
            .body(self.body.clone())
    }
}

/// Failure talking to the upstream, mapped to the status the client sees.
fn transport_error(e: &reqwest::Error, what: &str) -> ApiError {
    if e.is_timeout() {
        ApiError::new(
            StatusCode::GATEWAY_TIMEOUT,
            "upstream_timeout",
            format!("the upstream did not answer in time ({what})"),
        )
    } else {
        ApiError::new(
            StatusCode::BAD_GATEWAY,
            "upstream_unreachable",
            "the upstream could not be reached",
        )
    }
}

fn timeout_error(what: &str) -> ApiError {
    ApiError::new(
        StatusCode::GATEWAY_TIMEOUT,
        "upstream_timeout",
        format!("the upstream did not answer in time ({what})"),
    )
}

fn retryable(status: u16) -> bool {
    matches!(status, 429 | 500 | 502 | 503 | 504 | 529)
}

/// Delay before the next attempt: the upstream's `retry-after` when it gives one (and it
/// is within bounds), otherwise exponential backoff with jitter.
fn backoff(
    state: &AppState,
    attempt: u32,
    headers: &reqwest::header::HeaderMap,
) -> Option<Duration> {
    let cfg = &state.config.retry;
    if let Some(ra) = headers
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(|s| s.trim().parse::<f64>().ok())
    {
        let ms = (ra.max(0.0) * 1000.0) as u64;
        return (ms <= cfg.max_backoff_ms).then(|| Duration::from_millis(ms));
    }
    let base = cfg.base_backoff_ms.saturating_mul(1u64 << attempt.min(16));
    let mut jitter = [0u8; 2];
    let _ = aws_lc_rs::rand::SecureRandom::fill(&*state.rng, &mut jitter);
    let jitter = u64::from(u16::from_le_bytes(jitter)) % (base / 4 + 1);
    Some(Duration::from_millis(
        (base + jitter).min(cfg.max_backoff_ms),
    ))
}

async fn unary_call(
    state: AppState,
    principal: Principal,
    mut draft: Draft,
    upstream: UpstreamRequest,
    gate: Option<ToolGate>,
    (content, mut modr): (Option<CallContent>, CallModeration),
    started: Instant,
) -> Response {
    let deadline = tokio::time::Instant::now() + state.config.timeouts.total();
    let max_retries = state.config.retry.max_retries;
    let waiting = Instant::now();
    // The upstream exchange, as a future: with parallel input moderation it races the
    // verdict and is dropped (the request cancelled) when the verdict refuses.
    let fetch = async {
        let mut attempt = 0u32;
        loop {
            let send = tokio::time::timeout_at(
                deadline,
                tokio::time::timeout(
                    state.config.timeouts.first_byte(),
                    tracing::Instrument::instrument(
                        upstream.send(&state).send(),
                        tracing::info_span!("palisade.upstream"),
                    ),
                ),
            );
            let resp = match send.await {
                Err(_) | Ok(Err(_)) => {
                    return Err(timeout_error("first byte"));
                }
                Ok(Ok(Err(e))) => {
                    if e.is_connect() && attempt < max_retries {
                        attempt += 1;
                        let d = backoff(&state, attempt, &Default::default()).unwrap_or_default();
                        tokio::time::sleep(d).await;
                        continue;
                    }
                    return Err(transport_error(&e, "connect"));
                }
                Ok(Ok(Ok(r))) => r,
            };
            let status = resp.status().as_u16();
            if retryable(status)
                && attempt < max_retries
                && let Some(d) = backoff(&state, attempt, resp.headers())
                && tokio::time::Instant::now() + d < deadline
            {
                attempt += 1;
                drop(resp);
                tokio::time::sleep(d).await;
                continue;
            }
            let headers = resp.headers().clone();
            let body = tokio::time::timeout_at(
                deadline,
                read_limited(resp, state.config.limits.max_upstream_body_bytes),
            )
            .await;
            match body {
                Ok(Ok(b)) => break Ok((status, headers, b, attempt)),
                Ok(Err(e)) => return Err(e),
                Err(_) => return Err(timeout_error("body")),
            }
        }
    };
    let fetched = match modr.pending_input.take() {
        None => fetch.await,
        Some(pending) => match crate::moderation::race(pending, fetch).await {
            crate::moderation::Raced::Refused(o) => {
                draft.upstream_wait(waiting);
                return refuse_moderation(&state, &principal, draft, o, started).await;
            }
            crate::moderation::Raced::Done(o, r) => {
                if o.refuses() {
                    draft.upstream_wait(waiting);
                    if let Ok((_, _, b, _)) = &r
                        && let Ok(v) = serde_json::from_slice::<Value>(b)
                    {
                        draft.record_usage(&v);
                    }
                    return refuse_moderation(&state, &principal, draft, o, started).await;
                }
                draft.record_moderation(o);
                r
            }
        },
    };
    draft.upstream_wait(waiting);
    let (status, resp_headers, bytes, attempt) = match fetched {
        Ok(f) => f,
        Err(e) => return refuse(&state, &principal, draft, e, started).await,
    };
    draft.retries = attempt;
    draft.upstream_status = Some(status);
    draft.upstream_request_id = header_str(&resp_headers, "request-id");
    draft.finish(started);
    let parsed: Option<Value> = serde_json::from_slice(&bytes).ok();
    if (200..300).contains(&status) {
        let Some(v) = parsed else {
            let e = ApiError::new(
                StatusCode::BAD_GATEWAY,
                "upstream_invalid",
                "the upstream returned a body that is not JSON",
            );
            return refuse(&state, &principal, draft, e, started).await;
        };
        draft.decision = "allow".into();
        draft.record_usage(&v);
        // Output moderation judges the model's text as it produced it.
        let moderate_output = modr
            .call
            .take()
            .filter(|m| gate.is_some() && m.active(ModDirection::Output))
            .map(|m| (crate::moderation::output_text(&v), m));
        let mut v = v;
        let mut bytes = bytes;
        if let Some(gate) = &gate {
            let mut log = GateLog::default();
            let changed = gate.filter_message(&mut v, &mut log).await;
            let withheld = log.withheld;
            let deciding = log.deciding.clone();
            draft.policy = None;
            draft.record_gate(&gate.layers, log);
            if withheld > 0 {
                draft.decision = "tool_withheld".into();
                if gate.refuse {
                    let d = deciding.unwrap_or_else(|| gate.decide("", &Value::Null));
                    let pending = draft
                        .approvals
                        .first()
                        .map(|id| format!(" (approval {id} opened)"))
                        .unwrap_or_default();
                    let err = ApiError::forbidden(
                        "tool_denied",
                        format!(
                            "the response contained a tool call that policy does not allow: {}{pending}",
                            d.reason.unwrap_or_else(|| "denied".into())
                        ),
                    );
                    return refuse(&state, &principal, draft, err, started).await;
                }
            }
            let mut changed = changed;
            if let Some(mut c) = content {
                if c.guard.active(Direction::Output) || !c.pseudo.is_empty() {
                    changed |= c.response(&mut v);
                }
                let blocked = std::mem::take(&mut c.log.blocked);
                draft.record_findings(c.log);
                if !blocked.is_empty() {
                    draft.decision = "block".into();
                    return refuse(
                        &state,
                        &principal,
                        draft,
                        crate::content::blocked_error(&blocked),
                        started,
                    )
                    .await;
                }
            }
            if changed {
                match serde_json::to_vec(&v) {
                    Ok(b) => bytes = Bytes::from(b),
                    Err(e) => {
                        return refuse(
                            &state,
                            &principal,
                            draft,
                            ApiError::internal(format!("re-encoding the response: {e}")),
                            started,
                        )
                        .await;
                    }
                }
            }
        }
        if let Some((text, m)) = moderate_output {
            let o = m.run(&state, ModDirection::Output, &text).await;
            if o.refuses() {
                return refuse_moderation(&state, &principal, draft, o, started).await;
            }
            draft.record_moderation(o);
        }
        draft.capture_response(&v);
        match state
            .tenant_keys
            .hasher(&principal.tenant.id, "output")
            .await
        {
            Ok(mut h) => {
                h.update(&bytes);
                draft.output_hmac = Some(h.finish());
            }
            Err(e) => return e.into_response(),
        }
        // The clock stops after the output guard, which is gateway time too.
        draft.finish(started);
        let receipt_id = match commit_draft(&state, &principal, draft).await {
            Ok(id) => id,
            Err(e) => return e.into_response(),
        };
        let mut resp = Response::new(Body::from(bytes));
        *resp.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::OK);
        finish_headers(
            resp.headers_mut(),
            &resp_headers,
            &receipt_id,
            "application/json",
        );
        resp
    } else {
        upstream_refusal(&state, &principal, draft, status, parsed, &resp_headers).await
    }
}

/// An upstream refusal, plain or before a stream starts: its status and Anthropic error
/// body are kept, with Palisade's reason and the receipt id added so the client can
/// correlate.
async fn upstream_refusal(
    state: &AppState,
    principal: &Principal,
    mut draft: Draft,
    status: u16,
    parsed: Option<Value>,
    resp_headers: &reqwest::header::HeaderMap,
) -> Response {
    draft.decision = "upstream_error".into();
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_GATEWAY);
    let mut body = match parsed {
        Some(v) if v.get("type").and_then(Value::as_str) == Some("error") => v,
        _ => ApiError::new(
            status,
            "upstream_error",
            format!("the upstream answered {}", status.as_u16()),
        )
        .body(),
    };
    draft.reason_code = body
        .pointer("/error/type")
        .and_then(Value::as_str)
        .map(str::to_string);
    let receipt_id = match commit_draft(state, principal, draft).await {
        Ok(id) => id,
        Err(e) => return e.into_response(),
    };
    if let Some(err) = body.get_mut("error").and_then(Value::as_object_mut) {
        err.insert("palisade_reason".into(), Value::from("upstream_error"));
        err.insert("receipt_id".into(), Value::from(receipt_id.clone()));
    }
    let mut resp = Response::new(Body::from(body.to_string()));
    *resp.status_mut() = status;
    finish_headers(
        resp.headers_mut(),
        resp_headers,
        &receipt_id,
        "application/json",
    );
    if let Some(ra) = resp_headers.get("retry-after") {
        resp.headers_mut().insert("retry-after", ra.clone());
    }
    resp
}

fn header_str(h: &reqwest::header::HeaderMap, name: &str) -> Option<String> {
    h.get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}

fn finish_headers(
    out: &mut axum::http::HeaderMap,
    upstream: &reqwest::header::HeaderMap,
    receipt_id: &str,
    content_type: &'static str,
) {
    out.insert("content-type", HeaderValue::from_static(content_type));
    if let Some(v) = upstream.get("request-id") {
        out.insert("request-id", v.clone());
    }
    if let Ok(v) = HeaderValue::from_str(receipt_id) {
        out.insert("x-palisade-receipt-id", v);
    }
}

async fn read_limited(resp: reqwest::Response, max: usize) -> Result<Bytes, ApiError> {
    let mut out = Vec::new();
    let mut stream = resp.bytes_stream();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| transport_error(&e, "body"))?;
        if out.len() + chunk.len() > max {
            return Err(ApiError::new(
                StatusCode::BAD_GATEWAY,
                "upstream_too_large",
                format!("the upstream response exceeds {max} bytes"),
            ));
        }
        out.extend_from_slice(&chunk);
    }
    Ok(Bytes::from(out))
}

/// Writes the receipt for a refused or failed call and returns the error carrying it.
async fn refuse(
    state: &AppState,
    principal: &Principal,
    mut draft: Draft,
    err: ApiError,
    started: Instant,
) -> Response {
    // A decision already made specific (block, tool_withheld) stands; otherwise the
    // status says what happened.
    if matches!(draft.decision.as_str(), "allow" | "deny") {
        draft.decision = match err.status.as_u16() {
            502 | 504 => "upstream_error".into(),
            s if s >= 500 => "error".into(),
            _ => "deny".into(),
        };
    }
    draft.reason_code = Some(err.reason.to_string());
    draft.finish(started);
    match commit_draft(state, principal, draft).await {
        Ok(id) => err.with_receipt(Some(id)).into_response(),
        Err(e) => e.into_response(),
    }
}

async fn stream_call(
    state: AppState,
    principal: Principal,
    mut draft: Draft,
    upstream: UpstreamRequest,
    gate: Option<ToolGate>,
    (content, mut modr): (Option<CallContent>, CallModeration),
    started: Instant,
) -> Response {
    let send = tokio::time::timeout(
        state.config.timeouts.first_byte(),
        tracing::Instrument::instrument(
            upstream.send(&state).send(),
            tracing::info_span!("palisade.upstream"),
        ),
    );
    let waiting = Instant::now();
    // With parallel input moderation the response is held (nothing released) until the
    // input verdict is in; a refusal drops it, which cancels the upstream request.
    let sent = match modr.pending_input.take() {
        None => send.await,
        Some(pending) => match crate::moderation::race(pending, send).await {
            crate::moderation::Raced::Refused(o) => {
                draft.upstream_wait(waiting);
                return refuse_moderation(&state, &principal, draft, o, started).await;
            }
            crate::moderation::Raced::Done(o, r) => {
                if o.refuses() {
                    draft.upstream_wait(waiting);
                    drop(r);
                    return refuse_moderation(&state, &principal, draft, o, started).await;
                }
                draft.record_moderation(o);
                r
            }
        },
    };
    draft.upstream_wait(waiting);
    let resp = match sent {
        Err(_) => {
            return refuse(
                &state,
                &principal,
                draft,
                timeout_error("first byte"),
                started,
            )
            .await;
        }
        Ok(Err(e)) => {
            return refuse(
                &state,
                &principal,
                draft,
                transport_error(&e, "connect"),
                started,
            )
            .await;
        }
        Ok(Ok(r)) => r,
    };
    let status = resp.status().as_u16();
    draft.upstream_status = Some(status);
    draft.upstream_request_id = header_str(resp.headers(), "request-id");
    if status != 200 {
        // An error before the stream starts is a plain JSON error, as Anthropic sends it.
        let resp_headers = resp.headers().clone();
        let bytes = match tokio::time::timeout(
            state.config.timeouts.total(),
            read_limited(resp, state.config.limits.max_upstream_body_bytes),
        )
        .await
        {
            Ok(Ok(b)) => b,
            Ok(Err(e)) => return refuse(&state, &principal, draft, e, started).await,
            Err(_) => {
                return refuse(&state, &principal, draft, timeout_error("body"), started).await;
            }
        };
        draft.finish(started);
        let parsed = serde_json::from_slice::<Value>(&bytes).ok();
        return upstream_refusal(&state, &principal, draft, status, parsed, &resp_headers).await;
    }
    let output = match state
        .tenant_keys
        .hasher(&principal.tenant.id, "output")
        .await
    {
        Ok(h) => h,
        Err(e) => return e.into_response(),
    };
    let resp_headers = resp.headers().clone();
    // The receipt id is fixed now so the client gets it in the headers; the receipt
    // itself is committed when the stream ends.
    let receipt_id = draft.id.clone();
    let (tx, rx) = mpsc::channel::<Result<Bytes, std::io::Error>>(32);
    let pump_state = state.clone();
    state.tracker.spawn(pump(
        StreamCall {
            state: pump_state,
            principal,
            draft,
            output,
            gate,
            content: content.map(CallContent::stream),
            started,
            moderation: modr
                .call
                .filter(|m| m.active(ModDirection::Output))
                .map(|call| StreamModeration {
                    mode: call.eff.streaming,
                    call,
                    text: String::new(),
                    held: Vec::new(),
                    held_bytes: 0,
                }),
        },
        resp,
        tx,
    ));
    let body = Body::from_stream(tokio_stream_from(rx));
    let mut out = Response::new(body);
    finish_headers(
        out.headers_mut(),
        &resp_headers,
        &receipt_id,
        "text/event-stream; charset=utf-8",
    );
    out.headers_mut()
        .insert("cache-control", HeaderValue::from_static("no-cache"));
    out
}

fn tokio_stream_from(
    mut rx: mpsc::Receiver<Result<Bytes, std::io::Error>>,
) -> impl futures::Stream<Item = Result<Bytes, std::io::Error>> {
    futures::stream::poll_fn(move |cx| rx.poll_recv(cx))
}

/// Relays one upstream stream to the client event by event. Owns the receipt: it is
/// committed before `message_stop` is released, or when the stream fails, or when the
/// client goes away (the send fails).
/// Everything a stream relay owns besides its two ends.
struct StreamCall {
    state: AppState,
    principal: Principal,
    draft: Draft,
    output: crate::tenant_keys::OutputHasher,
    gate: Option<ToolGate>,
    content: Option<StreamContent>,
    started: Instant,
    moderation: Option<StreamModeration>,
}

/// Output moderation of a stream: the model's text collected for the verdict at the end
/// and, in `buffer` mode, every event held until then.
struct StreamModeration {
    call: Arc<ModerationCall>,
    mode: StreamMode,
    text: String,
    held: Vec<Bytes>,
    held_bytes: usize,
}

impl StreamModeration {
    /// Collects the text of a `text_delta` (bounded by what one verdict judges).
    fn observe(&mut self, event: &str, data: &str, max: usize) {
        if event != "content_block_delta" || self.text.len() >= max {
            return;
        }
        if let Ok(v) = serde_json::from_str::<Value>(data)
            && let Some(t) = v.pointer("/delta/text").and_then(Value::as_str)
        {
            self.text.push_str(t);
        }
    }
}

/// The client side of a stream relay. Events released while one upstream chunk is
/// processed go out as one write: sent one by one they cost a channel hand-off and a
/// socket write each, and a 1,000-token answer is 1,000 events. Anything sent with
/// `send` (a final or error event) goes after what is pending, so order is kept.
struct Relay {
    tx: mpsc::Sender<Result<Bytes, std::io::Error>>,
    pending: bytes::BytesMut,
}

impl Relay {
    fn push(&mut self, b: &[u8]) {
        self.pending.extend_from_slice(b);
    }

    /// Sends what is pending; `Err` when the client has gone.
    async fn flush(&mut self) -> Result<(), ()> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let b = self.pending.split().freeze();
        self.tx.send(Ok(b)).await.map_err(|_| ())
    }

    async fn send(&mut self, b: Bytes) -> Result<(), ()> {
        self.flush().await?;
        self.tx.send(Ok(b)).await.map_err(|_| ())
    }
}

async fn pump(
    call: StreamCall,
    resp: reqwest::Response,
    tx: mpsc::Sender<Result<Bytes, std::io::Error>>,
) {
    let mut tx = Relay {
        tx,
        pending: bytes::BytesMut::new(),
    };
    let StreamCall {
        state,
        principal,
        mut draft,
        mut output,
        gate,
        mut content,
        started,
        mut moderation,
    } = call;
    let max_text = state.config.moderation.max_text_bytes;
    let max_held = state.config.limits.max_upstream_body_bytes;
    let mut gate = gate.map(|g| StreamGate::new(g, state.config.policy.max_tool_input_bytes));
    let mut parser = SseParser::new(state.config.limits.max_sse_event_bytes);
    let mut upstream = resp.bytes_stream();
    let idle = state.config.timeouts.idle();
    draft.decision = "allow".into();
    let failure: Option<ApiError> = 'relay: loop {
        let waiting = Instant::now();
        let next = tokio::time::timeout(idle, upstream.next()).await;
        draft.upstream_wait(waiting);
        let chunk = match next {
            Err(_) => break 'relay Some(timeout_error("idle between stream events")),
            Ok(None) => {
                break 'relay Some(ApiError::new(
                    StatusCode::BAD_GATEWAY,
                    "upstream_stream_truncated",
                    "the upstream closed the stream before message_stop",
                ));
            }
            Ok(Some(Err(e))) => {
                let _ = e;
                break 'relay Some(ApiError::new(
                    StatusCode::BAD_GATEWAY,
                    "upstream_stream_broken",
                    "the upstream connection failed mid-stream",
                ));
            }
            Ok(Some(Ok(c))) => c,
        };
        let events = match parser.push(&chunk) {
            Ok(ev) => ev,
            Err(e) => {
                break 'relay Some(ApiError::new(
                    StatusCode::BAD_GATEWAY,
                    "upstream_stream_invalid",
                    e.to_string(),
                ));
            }
        };
        for ev in events {
            output.update(&ev.raw);
            if let Some(m) = moderation.as_mut() {
                m.observe(&ev.event, &ev.data, max_text);
            }
            match ev.event.as_str() {
                "message_start" | "message_delta" => {
                    if let Ok(v) = serde_json::from_str::<Value>(&ev.data) {
                        draft.record_stream_event(&v);
                    }
                }
                "error" => {
                    // The upstream's own mid-stream error: relay it as is and record it.
                    settle_gate(&mut gate, &mut draft);
                    settle_content(&mut content, &mut draft);
                    draft.decision = "upstream_error".into();
                    draft.reason_code =
                        serde_json::from_str::<Value>(&ev.data).ok().and_then(|v| {
                            v.pointer("/error/type")
                                .and_then(Value::as_str)
                                .map(str::to_string)
                        });
                    draft.finish(started);
                    draft.output_hmac = Some(output.finish());
                    let _ = commit_draft(&state, &principal, draft).await;
                    let _ = tx.send(ev.raw).await;
                    return;
                }
                "message_stop" => {
                    settle_gate(&mut gate, &mut draft);
                    settle_content(&mut content, &mut draft);
                    if let Some(m) = moderation.take() {
                        let o = m.call.run(&state, ModDirection::Output, &m.text).await;
                        if o.refuses() {
                            // Buffered: nothing was released. Released: the text went out,
                            // the stream ends with an error instead of message_stop.
                            let err = o.error();
                            if o.verdict == "block" {
                                draft.decision = "block".into();
                            } else {
                                draft.decision = "error".into();
                            }
                            draft.reason_code = Some(err.reason.to_string());
                            draft.record_moderation(o);
                            draft.finish(started);
                            draft.output_hmac = Some(output.finish());
                            let id = commit_draft(&state, &principal, draft).await.ok();
                            let err = err.with_receipt(id);
                            let _ = tx.send(encode("error", &err.body().to_string())).await;
                            return;
                        }
                        draft.record_moderation(o);
                        draft.capture_sse(&m.held);
                        for bytes in m.held {
                            if tx.send(bytes).await.is_err() {
                                break;
                            }
                        }
                    }
                    draft.finish(started);
                    draft.output_hmac = Some(output.finish());
                    match commit_draft(&state, &principal, draft).await {
                        Ok(_) => {
                            let _ = tx.send(ev.raw).await;
                        }
                        Err(e) => {
                            // Fail closed: without its receipt the stream does not complete.
                            let _ = tx.send(encode("error", &e.body().to_string())).await;
                        }
                    }
                    return;
                }
                _ => {}
            }
            // Output content rules on text blocks: text is released only once no finding
            // can still straddle it.
            let mut pre: Vec<Bytes> = Vec::new();
            let mut raw = ev.raw;
            if let Some(sc) = content.as_mut() {
                match content_step(sc, &ev.event, &ev.data) {
                    ContentStep::Pass => {}
                    ContentStep::Replace(r) => raw = r,
                    ContentStep::Hold => continue,
                    ContentStep::Before(b) => pre.push(b),
                    ContentStep::Blocked(what) => {
                        settle_gate(&mut gate, &mut draft);
                        settle_content(&mut content, &mut draft);
                        draft.decision = "block".into();
                        draft.reason_code = Some("content_blocked".into());
                        draft.finish(started);
                        draft.output_hmac = Some(output.finish());
                        let id = commit_draft(&state, &principal, draft).await.ok();
                        let err = crate::content::blocked_error(&[what]).with_receipt(id);
                        let _ = tx.send(encode("error", &err.body().to_string())).await;
                        return;
                    }
                }
            }
            let out = match gate.as_mut() {
                None => {
                    pre.push(raw);
                    pre
                }
                Some(g) => match g.push(&ev.event, &ev.data, raw, content.as_mut()).await {
                    GateOutput::Release(out) => {
                        pre.extend(out);
                        pre
                    }
                    GateOutput::Refuse(d, tool) => {
                        settle_gate(&mut gate, &mut draft);
                        draft.decision = "tool_withheld".into();
                        draft.reason_code = Some("tool_denied".into());
                        draft.finish(started);
                        draft.output_hmac = Some(output.finish());
                        let id = commit_draft(&state, &principal, draft).await.ok();
                        let err = ApiError::forbidden(
                            "tool_denied",
                            format!(
                                "the response contained a call to `{tool}` that policy does not allow: {}",
                                d.reason.unwrap_or_else(|| "denied".into())
                            ),
                        )
                        .with_receipt(id);
                        let _ = tx.send(encode("error", &err.body().to_string())).await;
                        return;
                    }
                },
            };
            if let Some(m) = moderation.as_mut()
                && m.mode == StreamMode::Buffer
            {
                m.held_bytes += out.iter().map(Bytes::len).sum::<usize>();
                m.held.extend(out);
                if m.held_bytes > max_held {
                    break 'relay Some(ApiError::new(
                        StatusCode::BAD_GATEWAY,
                        "upstream_too_large",
                        format!(
                            "the streamed response exceeds {max_held} bytes held for moderation"
                        ),
                    ));
                }
                continue;
            }
            draft.capture_sse(&out);
            for bytes in out {
                tx.push(&bytes);
            }
        }
        if tx.flush().await.is_err() {
            settle_gate(&mut gate, &mut draft);
            settle_content(&mut content, &mut draft);
            draft.decision = "client_closed".into();
            draft.reason_code = Some("client_disconnected".into());
            draft.finish(started);
            draft.output_hmac = Some(output.finish());
            let _ = commit_draft(&state, &principal, draft).await;
            return;
        }
    };
    if let Some(err) = failure {
        settle_gate(&mut gate, &mut draft);
        settle_content(&mut content, &mut draft);
        draft.decision = "upstream_error".into();
        draft.reason_code = Some(err.reason.to_string());
        draft.finish(started);
        draft.output_hmac = Some(output.finish());
        let id = commit_draft(&state, &principal, draft).await.ok();
        let err = err.with_receipt(id);
        let _ = tx.send(encode("error", &err.body().to_string())).await;
    }
}

/// What the output content guard does with one stream event.
enum ContentStep {
    Pass,
    /// Release this instead of the event.
    Replace(Bytes),
    /// Nothing to release yet (held back).
    Hold,
    /// Release this first, then the event.
    Before(Bytes),
    Blocked(String),
}

fn text_delta(index: u64, text: &str) -> Bytes {
    encode(
        "content_block_delta",
        &serde_json::json!({"type": "content_block_delta", "index": index, "delta": {"type": "text_delta", "text": text}}).to_string(),
    )
}

fn content_step(sc: &mut StreamContent, event: &str, data: &str) -> ContentStep {
    let parse = || serde_json::from_str::<Value>(data).unwrap_or(Value::Null);
    match event {
        "content_block_start" => {
            let v = parse();
            if v.pointer("/content_block/type").and_then(Value::as_str) == Some("text") {
                sc.start_text(v.get("index").and_then(Value::as_u64).unwrap_or(0));
            }
            ContentStep::Pass
        }
        "content_block_delta" => {
            let v = parse();
            let index = v.get("index").and_then(Value::as_u64).unwrap_or(0);
            if !sc.is_text(index) {
                return ContentStep::Pass;
            }
            let Some(text) = v.pointer("/delta/text").and_then(Value::as_str) else {
                return ContentStep::Pass;
            };
            match sc.push(index, text) {
                Ok(t) if t.is_empty() => ContentStep::Hold,
                Ok(t) => ContentStep::Replace(text_delta(index, &t)),
                Err(what) => ContentStep::Blocked(what),
            }
        }
        "content_block_stop" => {
            let v = parse();
            let index = v.get("index").and_then(Value::as_u64).unwrap_or(0);
            if !sc.is_text(index) {
                return ContentStep::Pass;
            }
            match sc.finish(index) {
                Ok(t) if t.is_empty() => ContentStep::Pass,
                Ok(t) => ContentStep::Before(text_delta(index, &t)),
                Err(what) => ContentStep::Blocked(what),
            }
        }
        _ => ContentStep::Pass,
    }
}

fn settle_content(content: &mut Option<StreamContent>, draft: &mut Draft) {
    if let Some(c) = content.take() {
        draft.record_findings(c.log);
    }
}

/// Moves the stream gate's decisions into the receipt draft (once, at the end).
fn settle_gate(gate: &mut Option<StreamGate>, draft: &mut Draft) {
    if let Some(mut g) = gate.take() {
        let _ = g.finish();
        let withheld = g.withheld();
        let (layers, log) = g.into_parts();
        draft.policy = None;
        draft.record_gate(&layers, log);
        if withheld > 0 && draft.decision == "allow" {
            draft.decision = "tool_withheld".into();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn depth_check_counts_only_structure() {
        assert!(check_json_depth(br#"{"a":[{"b":1}]}"#, 3).is_ok());
        assert!(check_json_depth(br#"{"a":[{"b":1}]}"#, 2).is_err());
        // Brackets inside strings, escaped quotes included, do not count.
        assert!(check_json_depth(br#"{"a":"[[[[\"[[[["}"#, 1).is_ok());
        let deep = "[".repeat(100_000);
        assert!(check_json_depth(deep.as_bytes(), 64).is_err());
    }
}
