//! HTTP handling: auth, validation, directives, and the JSON / SSE / failure responses.

use std::io;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use bytes::Bytes;
use futures::stream::{self, StreamExt};
use serde_json::{Value, json};

use crate::directives::Ending;
use crate::wire::{self, Endpoint, Reply};
use crate::{MockState, RecordedRequest};

/// The mock's routes. `GET`/`DELETE /_mock/requests` expose the record over HTTP for
/// clients that run the binary out of process (SDK tests); everything else is the API.
pub fn router(state: MockState) -> Router {
    Router::new()
        .route("/_mock/requests", get(list_requests).delete(clear_requests))
        .fallback(handle)
        .with_state(state)
}

async fn list_requests(State(state): State<MockState>) -> Response {
    json_response(StatusCode::OK, &json!(state.requests()), None)
}

async fn clear_requests(State(state): State<MockState>) -> StatusCode {
    state.clear();
    StatusCode::NO_CONTENT
}

async fn handle(State(state): State<MockState>, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    let rid = wire::new_id("req_");
    let limit = state.config().max_body_bytes;
    let declared = parts
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    let bytes = if declared.is_some_and(|n| n > limit) {
        None
    } else {
        axum::body::to_bytes(body, limit).await.ok()
    };
    let parsed: Option<Result<Value, String>> = bytes.as_ref().map(|b| {
        serde_json::from_slice::<Value>(b)
            .map_err(|e| format!("There was an error parsing the body of your request: {e}"))
    });
    if state.config().record {
        let body = match (&parsed, &bytes) {
            (Some(Ok(v)), _) => v.clone(),
            (_, Some(b)) if b.is_empty() => Value::Null,
            (_, Some(b)) => Value::String(String::from_utf8_lossy(b).into_owned()),
            (_, None) => Value::Null,
        };
        state.record(RecordedRequest {
            method: parts.method.to_string(),
            path: parts.uri.path().to_owned(),
            headers: parts
                .headers
                .iter()
                .map(|(n, v)| {
                    (
                        n.as_str().to_owned(),
                        String::from_utf8_lossy(v.as_bytes()).into_owned(),
                    )
                })
                .collect(),
            body,
        });
    }
    let Some(parsed) = parsed else {
        return error_response(413, wire::default_message(413), &rid, None);
    };
    let endpoint = match parts.uri.path() {
        "/v1/messages" => Endpoint::Messages,
        "/v1/messages/count_tokens" => Endpoint::CountTokens,
        _ => return error_response(404, "Not Found", &rid, None),
    };
    if parts.method != Method::POST {
        return error_response(405, "Method Not Allowed", &rid, None);
    }
    let mut watch = Unfinished {
        state: &state,
        done: false,
    };
    let resp = api(&state, &parts.headers, parsed, endpoint, &rid).await;
    watch.done = true;
    resp
}

/// Counts API requests whose handling was dropped before an answer existed (the client
/// went away, e.g. a gateway cancelling an upstream call).
struct Unfinished<'a> {
    state: &'a MockState,
    done: bool,
}

impl Drop for Unfinished<'_> {
    fn drop(&mut self) {
        if !self.done {
            self.state.note_cancelled();
        }
    }
}

async fn api(
    state: &MockState,
    headers: &HeaderMap,
    body: Result<Value, String>,
    endpoint: Endpoint,
    rid: &str,
) -> Response {
    let config = state.config();
    match credential(headers) {
        None => return error_response(401, "x-api-key header is required", rid, None),
        Some(key)
            if config
                .required_api_key
                .as_ref()
                .is_some_and(|k| k.as_bytes() != key) =>
        {
            return error_response(401, "invalid x-api-key", rid, None);
        }
        Some(_) => {}
    }
    if config.require_anthropic_version && !headers.contains_key("anthropic-version") {
        return error_response(400, "anthropic-version: header is required", rid, None);
    }
    let body = match body {
        Ok(b) => b,
        Err(msg) => return error_response(400, &msg, rid, None),
    };
    if let Err(msg) = wire::validate(&body, endpoint) {
        return error_response(400, &msg, rid, None);
    }
    if endpoint == Endpoint::Messages && wire::is_judge_request(&body) {
        return judge(&body, rid).await;
    }
    let d = match wire::directives_of(&body) {
        Ok(d) => d,
        Err(msg) => return error_response(400, &msg, rid, None),
    };
    let latency = d.latency_ms.map_or(config.latency, Duration::from_millis);
    if !latency.is_zero() {
        tokio::time::sleep(latency).await;
    }
    if d.hang {
        state.wait_shutdown().await;
        return aborted_response();
    }
    let retry_after = |status: u16| d.retry_after.or(matches!(status, 429 | 529).then_some(1));
    if let Some((status, key)) = &d.error_once
        && state.first_failure(key)
    {
        let msg = wire::default_message(*status);
        return error_response(*status, msg, rid, retry_after(*status));
    }
    if let Some(status) = d.error {
        return error_response(
            status,
            wire::default_message(status),
            rid,
            retry_after(status),
        );
    }
    if endpoint == Endpoint::CountTokens {
        let n = wire::estimate_input_tokens(&body);
        return json_response(StatusCode::OK, &json!({"input_tokens": n}), Some(rid));
    }
    let reply = Reply::plan(&body, &d);
    let streaming = body.get("stream").and_then(Value::as_bool).unwrap_or(false);
    if !streaming {
        let payload = Bytes::from(reply.message_json().to_string());
        return match d.ending {
            Ending::Complete => with_headers(
                StatusCode::OK,
                "application/json",
                Some(rid),
                Body::from(payload),
            ),
            Ending::Die(n) => {
                let cut = n.unwrap_or(payload.len() / 2).min(payload.len());
                let body = event_body(
                    vec![payload.slice(..cut)],
                    Duration::ZERO,
                    BodyEnd::Die(1),
                    state.clone(),
                );
                with_headers(StatusCode::OK, "application/json", Some(rid), body)
            }
            Ending::StallAfter(_) => {
                let body = event_body(Vec::new(), Duration::ZERO, BodyEnd::Stall(0), state.clone());
                with_headers(StatusCode::OK, "application/json", Some(rid), body)
            }
        };
    }
    let chunk = d.chunk.or(config.chunk_chars);
    let stream_error = d.stream_error.map(|s| (s, wire::default_message(s)));
    let (events, midpoint) = reply.sse_events(chunk, stream_error);
    let end = match d.ending {
        Ending::Complete => BodyEnd::Complete,
        Ending::Die(n) => BodyEnd::Die(n.unwrap_or(midpoint)),
        Ending::StallAfter(n) => BodyEnd::Stall(n),
    };
    let delay = d
        .stream_delay_ms
        .map_or(config.stream_delay, Duration::from_millis);
    let body = event_body(events, delay, end, state.clone());
    with_headers(
        StatusCode::OK,
        "text/event-stream; charset=utf-8",
        Some(rid),
        body,
    )
}

/// Judge mode: a strict JSON verdict derived from the `judge` directive of the judged text
/// (all zeros without one). Non-streaming only, as the gateway's judge asks.
async fn judge(body: &Value, rid: &str) -> Response {
    let spec = match wire::judge_spec_of(body) {
        Ok(s) => s,
        Err(msg) => return error_response(400, &msg, rid, None),
    };
    if let Some(ms) = spec.slow_ms {
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }
    let d = crate::directives::Directives {
        reply: Some(spec.verdict_text()),
        ..Default::default()
    };
    let reply = Reply::plan(body, &d);
    json_response(StatusCode::OK, &reply.message_json(), Some(rid))
}

/// The API key: `x-api-key`, else an `Authorization: Bearer` token — recent official SDKs
/// send API keys as bearer tokens, so the real API takes both.
fn credential(headers: &HeaderMap) -> Option<&[u8]> {
    if let Some(v) = headers.get("x-api-key") {
        return Some(v.as_bytes());
    }
    let auth = headers.get(header::AUTHORIZATION)?.as_bytes();
    let scheme = auth.get(..7)?;
    scheme.eq_ignore_ascii_case(b"bearer ").then(|| &auth[7..])
}

/// How a response body ends after its planned chunks.
#[derive(Debug, Clone, Copy)]
enum BodyEnd {
    Complete,
    /// Abort the connection after this many chunks.
    Die(usize),
    /// Stop sending after this many chunks until shutdown, then abort.
    Stall(usize),
}

struct BodyState {
    chunks: std::vec::IntoIter<Bytes>,
    sent: usize,
    delay: Duration,
    end: BodyEnd,
    state: MockState,
    done: bool,
}

/// A body that yields `chunks` with `delay` between them and ends as `end` says. An `Err`
/// item makes hyper drop the connection mid-body (no terminating chunk), which is the
/// abrupt upstream death the gateway must survive.
fn event_body(chunks: Vec<Bytes>, delay: Duration, end: BodyEnd, state: MockState) -> Body {
    if matches!(end, BodyEnd::Complete) && delay.is_zero() {
        return Body::from_stream(stream::iter(chunks.into_iter().map(Ok::<_, io::Error>)));
    }
    let st = BodyState {
        chunks: chunks.into_iter(),
        sent: 0,
        delay,
        end,
        state,
        done: false,
    };
    let s = stream::unfold(st, |mut st| async move {
        if st.done {
            return None;
        }
        match st.end {
            BodyEnd::Die(n) if st.sent >= n => {
                st.done = true;
                // Let hyper flush what was already written before the connection goes.
                tokio::time::sleep(Duration::from_millis(20)).await;
                return Some((
                    Err(io::Error::new(
                        io::ErrorKind::ConnectionAborted,
                        "mock: die_mid_stream",
                    )),
                    st,
                ));
            }
            BodyEnd::Stall(n) if st.sent >= n => {
                st.state.wait_shutdown().await;
                st.done = true;
                return Some((
                    Err(io::Error::new(
                        io::ErrorKind::ConnectionAborted,
                        "mock: shut down while stalled",
                    )),
                    st,
                ));
            }
            _ => {}
        }
        let next = st.chunks.next()?;
        if st.sent > 0 && !st.delay.is_zero() {
            tokio::time::sleep(st.delay).await;
        }
        st.sent += 1;
        Some((Ok(next), st))
    });
    Body::from_stream(s.boxed())
}

/// A hanging request released by shutdown: answer with a body that fails at once, so the
/// client sees a dropped connection rather than a response.
fn aborted_response() -> Response {
    let s = stream::once(async {
        Err::<Bytes, _>(io::Error::new(
            io::ErrorKind::ConnectionAborted,
            "mock: shut down",
        ))
    });
    Response::new(Body::from_stream(s))
}

fn with_headers(
    status: StatusCode,
    content_type: &'static str,
    rid: Option<&str>,
    body: Body,
) -> Response {
    let mut resp = Response::new(body);
    *resp.status_mut() = status;
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    if content_type.starts_with("text/event-stream") {
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    }
    if let Some(rid) = rid
        && let Ok(v) = HeaderValue::from_str(rid)
    {
        h.insert("request-id", v);
    }
    resp
}

fn json_response(status: StatusCode, value: &Value, rid: Option<&str>) -> Response {
    with_headers(
        status,
        "application/json",
        rid,
        Body::from(value.to_string()),
    )
}

/// An error in Anthropic's shape, with `request-id` and, for rate/overload errors, `retry-after`.
fn error_response(status: u16, message: &str, rid: &str, retry_after: Option<u64>) -> Response {
    let code = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut body = wire::error_json(status, message);
    body["request_id"] = Value::String(rid.to_owned());
    let mut resp = json_response(code, &body, Some(rid));
    if let Some(secs) = retry_after {
        resp.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(secs));
    }
    resp.into_response()
}
