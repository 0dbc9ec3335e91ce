#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! The mock over real HTTP: wire shapes, SSE sequence, directives, errors, record.

use std::time::Duration;

use futures::StreamExt;
use palisade_mock::{MockConfig, MockServer};
use serde_json::{Value, json};

fn client() -> reqwest::Client {
    reqwest::Client::new()
}

async fn post(server: &MockServer, path: &str, body: &Value) -> reqwest::Response {
    client()
        .post(format!("{}{path}", server.base_url()))
        .header("x-api-key", "sk-test")
        .header("anthropic-version", "2023-06-01")
        .json(body)
        .send()
        .await
        .unwrap()
}

fn ask(text: &str) -> Value {
    json!({"model": "claude-test-1", "max_tokens": 256, "messages": [{"role": "user", "content": text}]})
}

fn ask_stream(text: &str) -> Value {
    let mut b = ask(text);
    b["stream"] = json!(true);
    b
}

/// Splits an SSE body into (event, data) pairs, checking each frame's exact layout.
fn parse_sse(raw: &str) -> Vec<(String, Value)> {
    assert!(
        raw.ends_with("\n\n"),
        "body must end with a blank line: {raw:?}"
    );
    raw.trim_end_matches("\n\n")
        .split("\n\n")
        .map(|frame| {
            let mut lines = frame.split('\n');
            let event = lines
                .next()
                .unwrap()
                .strip_prefix("event: ")
                .expect("event line");
            let data = lines
                .next()
                .unwrap()
                .strip_prefix("data: ")
                .expect("data line");
            assert!(lines.next().is_none(), "one data line per event");
            let data: Value = serde_json::from_str(data).unwrap();
            assert_eq!(data["type"], event, "data.type matches the event name");
            (event.to_owned(), data)
        })
        .collect()
}

fn names(events: &[(String, Value)]) -> Vec<&str> {
    events.iter().map(|(n, _)| n.as_str()).collect()
}

fn text_of(events: &[(String, Value)]) -> String {
    events
        .iter()
        .filter(|(n, d)| n == "content_block_delta" && d["delta"]["type"] == "text_delta")
        .map(|(_, d)| d["delta"]["text"].as_str().unwrap())
        .collect()
}

#[tokio::test]
async fn non_streaming_echoes_without_directives() {
    let server = MockServer::start(MockConfig::default()).await.unwrap();
    let resp = post(
        &server,
        "/v1/messages",
        &ask("My email is a@b.io [[mock:latency_ms=1]] thanks"),
    )
    .await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "application/json");
    let rid = resp.headers()["request-id"].to_str().unwrap().to_owned();
    assert!(rid.starts_with("req_"));
    let v: Value = resp.json().await.unwrap();
    assert!(v["id"].as_str().unwrap().starts_with("msg_"));
    assert_eq!(v["type"], "message");
    assert_eq!(v["role"], "assistant");
    assert_eq!(v["model"], "claude-test-1");
    assert_eq!(
        v["content"],
        json!([{"type": "text", "text": "You said: My email is a@b.io thanks"}])
    );
    assert_eq!(v["stop_reason"], "end_turn");
    assert_eq!(v["stop_sequence"], Value::Null);
    let u = &v["usage"];
    assert!(u["input_tokens"].as_u64().unwrap() >= 1);
    assert!(u["output_tokens"].as_u64().unwrap() >= 1);
    assert_eq!(u["cache_creation_input_tokens"], 0);
    assert_eq!(u["cache_read_input_tokens"], 0);
    let keys: Vec<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
    assert_eq!(
        keys,
        [
            "id",
            "type",
            "role",
            "model",
            "content",
            "stop_reason",
            "stop_sequence",
            "usage"
        ]
    );
    server.shutdown().await;
}

#[tokio::test]
async fn reply_directive_from_system_blocks_and_user_overrides() {
    let server = MockServer::start(MockConfig::default()).await.unwrap();
    let mut body = ask("hello");
    body["system"] = json!([{"type": "text", "text": "Be brief. [[mock:reply=from system]]"}]);
    let v: Value = post(&server, "/v1/messages", &body)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(v["content"][0]["text"], "from system");

    body["messages"] = json!([
        {"role": "user", "content": "[[mock:reply=old turn]]"},
        {"role": "assistant", "content": "ok"},
        {"role": "user", "content": [{"type": "text", "text": "now [[mock:reply=user wins]]"}]},
    ]);
    let v: Value = post(&server, "/v1/messages", &body)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(v["content"][0]["text"], "user wins");
}

#[tokio::test]
async fn stream_has_the_exact_event_sequence() {
    let server = MockServer::start(MockConfig::default()).await.unwrap();
    let resp = post(
        &server,
        "/v1/messages",
        &ask_stream("one two three four five [[mock:chunk=7]]"),
    )
    .await;
    assert_eq!(resp.status(), 200);
    assert_eq!(
        resp.headers()["content-type"],
        "text/event-stream; charset=utf-8"
    );
    assert!(resp.headers().contains_key("request-id"));
    let raw = resp.text().await.unwrap();
    let ev = parse_sse(&raw);
    let n = names(&ev);
    let deltas = n.iter().filter(|e| **e == "content_block_delta").count();
    let expected = "You said: one two three four five";
    assert_eq!(deltas, expected.len().div_ceil(7));
    let mut want = vec!["message_start", "content_block_start", "ping"];
    want.extend(std::iter::repeat_n("content_block_delta", deltas));
    want.extend(["content_block_stop", "message_delta", "message_stop"]);
    assert_eq!(n, want);
    assert_eq!(text_of(&ev), expected);

    let start = &ev[0].1["message"];
    assert_eq!(start["content"], json!([]));
    assert_eq!(start["model"], "claude-test-1");
    assert_eq!(start["stop_reason"], Value::Null);
    assert_eq!(start["usage"]["output_tokens"], 1);
    assert!(start["usage"]["input_tokens"].as_u64().unwrap() >= 1);
    assert_eq!(
        ev[1].1,
        json!({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}})
    );
    let md = &ev[ev.len() - 2].1;
    assert_eq!(
        md["delta"],
        json!({"stop_reason": "end_turn", "stop_sequence": null})
    );
    assert!(md["usage"]["output_tokens"].as_u64().unwrap() >= 1);
    assert_eq!(ev[ev.len() - 1].1, json!({"type": "message_stop"}));
}

#[tokio::test]
async fn default_chunking_gives_several_deltas_with_delay() {
    let server = MockServer::start(MockConfig::default()).await.unwrap();
    let resp = post(
        &server,
        "/v1/messages",
        &ask_stream("[[mock:stream_delay_ms=1]] [[mock:reply=alpha beta gamma delta epsilon zeta eta theta]]"),
    )
    .await;
    let ev = parse_sse(&resp.text().await.unwrap());
    let pieces: Vec<&str> = ev
        .iter()
        .filter(|(n, _)| n == "content_block_delta")
        .map(|(_, d)| d["delta"]["text"].as_str().unwrap())
        .collect();
    assert_eq!(
        pieces,
        ["alpha beta gamma ", "delta epsilon zeta ", "eta theta"]
    );
}

#[tokio::test]
async fn tool_use_streams_input_json_delta_that_reassembles() {
    let server = MockServer::start(MockConfig::default()).await.unwrap();
    let input = json!({"city": "Paris", "days": [1, 2, 3], "unit": "celsius"});
    let prompt = format!(
        "weather? [[mock:reply=Let me check.]] [[mock:tool_use=get_weather:{input}]] [[mock:tool_use=noop:{{}}]] [[mock:chunk=5]]"
    );
    let raw = post(&server, "/v1/messages", &ask_stream(&prompt))
        .await
        .text()
        .await
        .unwrap();
    let ev = parse_sse(&raw);
    let n = names(&ev);
    assert_eq!(&n[..3], ["message_start", "content_block_start", "ping"]);
    assert_eq!(n[n.len() - 1], "message_stop");
    assert_eq!(text_of(&ev), "Let me check.");

    let mut blocks: Vec<(Value, String)> = Vec::new();
    let mut stops = 0;
    for (name, d) in &ev {
        match name.as_str() {
            "content_block_start" => {
                assert_eq!(d["index"], blocks.len());
                blocks.push((d["content_block"].clone(), String::new()));
            }
            "content_block_delta" if d["delta"]["type"] == "input_json_delta" => {
                assert_eq!(d["index"], blocks.len() - 1);
                blocks
                    .last_mut()
                    .unwrap()
                    .1
                    .push_str(d["delta"]["partial_json"].as_str().unwrap());
            }
            "content_block_stop" => stops += 1,
            _ => {}
        }
    }
    assert_eq!(blocks.len(), 3);
    assert_eq!(stops, 3);
    let (start, json_text) = &blocks[1];
    assert_eq!(start["type"], "tool_use");
    assert_eq!(start["name"], "get_weather");
    assert_eq!(start["input"], json!({}));
    assert!(start["id"].as_str().unwrap().starts_with("toolu_"));
    assert_eq!(serde_json::from_str::<Value>(json_text).unwrap(), input);
    let pieces = ev
        .iter()
        .filter(|(_, d)| d["index"] == 1 && d["delta"]["type"] == "input_json_delta")
        .count();
    assert!(pieces > 3, "input JSON arrives in several deltas");
    assert_eq!(
        serde_json::from_str::<Value>(&blocks[2].1).unwrap(),
        json!({})
    );
    let md = &ev[ev.len() - 2].1;
    assert_eq!(md["delta"]["stop_reason"], "tool_use");

    // Same plan, non-streaming.
    let v: Value = post(&server, "/v1/messages", &ask(&prompt))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(v["stop_reason"], "tool_use");
    assert_eq!(
        v["content"][0],
        json!({"type": "text", "text": "Let me check."})
    );
    assert_eq!(v["content"][1]["type"], "tool_use");
    assert_eq!(v["content"][1]["input"], input);
    assert_eq!(v["content"][2]["name"], "noop");
}

#[tokio::test]
async fn tool_result_round_trip_echoes_the_result() {
    let server = MockServer::start(MockConfig::default()).await.unwrap();
    let body = json!({
        "model": "m", "max_tokens": 100,
        "tools": [{"name": "get_weather", "input_schema": {"type": "object"}}],
        "messages": [
            {"role": "user", "content": "weather [[mock:tool_use=get_weather:{\"city\":\"Paris\"}]]"},
            {"role": "assistant", "content": [{"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"city": "Paris"}}]},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_1", "content": "18C and sunny"}]},
        ],
    });
    let v: Value = post(&server, "/v1/messages", &body)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(v["stop_reason"], "end_turn");
    assert_eq!(
        v["content"],
        json!([{"type": "text", "text": "You said: 18C and sunny"}])
    );
}

#[tokio::test]
async fn error_directives_use_anthropic_shape_and_status() {
    let server = MockServer::start(MockConfig::default()).await.unwrap();
    let cases = [
        (400, "invalid_request_error"),
        (401, "authentication_error"),
        (403, "permission_error"),
        (404, "not_found_error"),
        (413, "request_too_large"),
        (429, "rate_limit_error"),
        (500, "api_error"),
        (529, "overloaded_error"),
    ];
    for (status, kind) in cases {
        for stream in [false, true] {
            let body = if stream { ask_stream } else { ask }(&format!("x [[mock:error={status}]]"));
            let resp = post(&server, "/v1/messages", &body).await;
            assert_eq!(resp.status().as_u16(), status);
            assert_eq!(resp.headers()["content-type"], "application/json");
            let retry = resp
                .headers()
                .get("retry-after")
                .map(|v| v.to_str().unwrap().to_owned());
            assert_eq!(
                retry.as_deref(),
                matches!(status, 429 | 529).then_some("1"),
                "{status}"
            );
            let rid = resp.headers()["request-id"].to_str().unwrap().to_owned();
            let v: Value = resp.json().await.unwrap();
            assert_eq!(v["type"], "error");
            assert_eq!(v["error"]["type"], kind);
            assert!(v["error"]["message"].is_string());
            assert_eq!(v["request_id"], rid);
        }
    }
    let resp = post(
        &server,
        "/v1/messages",
        &ask("[[mock:error=429]] [[mock:retry_after=7]]"),
    )
    .await;
    assert_eq!(resp.headers()["retry-after"], "7");
}

#[tokio::test]
async fn error_once_fails_first_request_per_key() {
    let server = MockServer::start(MockConfig::default()).await.unwrap();
    let statuses = |k: &'static str| {
        let server = &server;
        async move {
            let mut out = Vec::new();
            for _ in 0..3 {
                let r = post(
                    server,
                    "/v1/messages",
                    &ask(&format!("[[mock:error_once=529:{k}]]")),
                )
                .await;
                out.push(r.status().as_u16());
            }
            out
        }
    };
    assert_eq!(statuses("a").await, [529, 200, 200]);
    assert_eq!(statuses("b").await, [529, 200, 200]);
    server.clear();
    assert_eq!(statuses("a").await, [529, 200, 200]);
}

#[tokio::test]
async fn validation_matches_the_real_api() {
    let server = MockServer::start(MockConfig {
        required_api_key: Some("sk-upstream".into()),
        ..MockConfig::default()
    })
    .await
    .unwrap();
    let url = format!("{}/v1/messages", server.base_url());
    let send = |key: Option<&str>, version: bool, body: Value| {
        let mut rb = client().post(&url).json(&body);
        if let Some(k) = key {
            rb = rb.header("x-api-key", k);
        }
        if version {
            rb = rb.header("anthropic-version", "2023-06-01");
        }
        async move {
            let r = rb.send().await.unwrap();
            let status = r.status().as_u16();
            let v: Value = r.json().await.unwrap();
            (
                status,
                v["error"]["type"].as_str().unwrap_or("").to_owned(),
                v["error"]["message"].as_str().unwrap_or("").to_owned(),
            )
        }
    };
    let good = ask("hi");
    assert_eq!(send(None, true, good.clone()).await.0, 401);
    let (s, t, m) = send(Some("pk_palisade"), true, good.clone()).await;
    assert_eq!(
        (s, t.as_str(), m.as_str()),
        (401, "authentication_error", "invalid x-api-key")
    );
    assert_eq!(send(Some("sk-upstream"), false, good.clone()).await.0, 400);
    // Recent official SDKs send the API key as a bearer token.
    let bearer = |token: &str| {
        client()
            .post(&url)
            .header("authorization", format!("Bearer {token}"))
            .header("anthropic-version", "2023-06-01")
            .json(&ask("hi"))
            .send()
    };
    assert_eq!(bearer("sk-upstream").await.unwrap().status(), 200);
    assert_eq!(bearer("pk_palisade").await.unwrap().status(), 401);

    let key = Some("sk-upstream");
    for (field, msg) in [
        ("model", "model: Field required"),
        ("max_tokens", "max_tokens: Field required"),
        ("messages", "messages: Field required"),
    ] {
        let mut b = good.clone();
        b.as_object_mut().unwrap().remove(field);
        let (s, t, m) = send(key, true, b).await;
        assert_eq!(
            (s, t.as_str(), m.as_str()),
            (400, "invalid_request_error", msg)
        );
    }
    let mut b = good.clone();
    b["safety_settings"] = json!([{"category": "HARM_CATEGORY_HATE_SPEECH"}]);
    let (s, t, m) = send(key, true, b).await;
    assert_eq!(
        (s, t.as_str(), m.as_str()),
        (
            400,
            "invalid_request_error",
            "safety_settings: Extra inputs are not permitted"
        )
    );
    let (s, _, m) = send(key, true, ask("[[mock:bogus]]")).await;
    assert_eq!(s, 400);
    assert!(m.contains("bogus"));

    let r = client()
        .post(&url)
        .header("x-api-key", "sk-upstream")
        .header("anthropic-version", "2023-06-01")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let r = client()
        .get(format!("{}/v1/nothing", server.base_url()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error"]["type"], "not_found_error");
    let (s, _, _) = send(key, true, good).await;
    assert_eq!(s, 200);
}

#[tokio::test]
async fn oversized_body_is_413() {
    let server = MockServer::start(MockConfig {
        max_body_bytes: 1000,
        ..MockConfig::default()
    })
    .await
    .unwrap();
    let resp = post(&server, "/v1/messages", &ask(&"x".repeat(2000))).await;
    assert_eq!(resp.status(), 413);
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["error"]["type"], "request_too_large");
}

#[tokio::test]
async fn count_tokens_is_deterministic_and_counts_everything() {
    let server = MockServer::start(MockConfig::default()).await.unwrap();
    let base = json!({"model": "m", "messages": [{"role": "user", "content": "x".repeat(40)}]});
    let v: Value = post(&server, "/v1/messages/count_tokens", &base)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(v, json!({"input_tokens": 10}));

    let mut more = base.clone();
    more["system"] = json!("y".repeat(40));
    more["tools"] = json!([{"name": "t", "input_schema": {"type": "object"}}]);
    let v2: Value = post(&server, "/v1/messages/count_tokens", &more)
        .await
        .json()
        .await
        .unwrap();
    assert!(v2["input_tokens"].as_u64().unwrap() > 20);
    let again: Value = post(&server, "/v1/messages/count_tokens", &more)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(v2, again);

    // Same estimate as the message's usage.
    let mut msg = more.clone();
    msg["max_tokens"] = json!(10);
    let m: Value = post(&server, "/v1/messages", &msg)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(m["usage"]["input_tokens"], v2["input_tokens"]);

    let mut bad = base.clone();
    bad["max_tokens"] = json!(10);
    let r = post(&server, "/v1/messages/count_tokens", &bad).await;
    assert_eq!(r.status(), 400);
}

#[tokio::test]
async fn records_every_request_and_clears() {
    let server = MockServer::start(MockConfig::default()).await.unwrap();
    let body = ask("recorded");
    let r = client()
        .post(format!("{}/v1/messages", server.base_url()))
        .header("x-api-key", "sk-upstream-key")
        .header("anthropic-version", "2023-06-01")
        .header("anthropic-beta", "tools-2024-04-04")
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let _ = client()
        .get(format!("{}/elsewhere", server.base_url()))
        .send()
        .await
        .unwrap();
    let reqs = server.requests();
    assert_eq!(reqs.len(), 2);
    let first = &reqs[0];
    assert_eq!(first.method, "POST");
    assert_eq!(first.path, "/v1/messages");
    assert_eq!(first.header("x-api-key"), Some("sk-upstream-key"));
    assert_eq!(first.api_key(), Some("sk-upstream-key"));
    assert_eq!(first.header("Anthropic-Version"), Some("2023-06-01"));
    assert_eq!(first.header("anthropic-beta"), Some("tools-2024-04-04"));
    assert_eq!(first.body, body);
    assert_eq!(reqs[1].path, "/elsewhere");
    assert_eq!(server.requests_to("/v1/messages").len(), 1);

    // The same record over HTTP, for out-of-process clients; not itself recorded.
    let over_http: Value = client()
        .get(format!("{}/_mock/requests", server.base_url()))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(over_http.as_array().unwrap().len(), 2);
    assert_eq!(over_http[0]["body"], body);
    server.clear();
    assert!(server.requests().is_empty());

    let quiet = MockServer::start(MockConfig {
        record: false,
        ..MockConfig::default()
    })
    .await
    .unwrap();
    assert_eq!(post(&quiet, "/v1/messages", &body).await.status(), 200);
    assert!(quiet.requests().is_empty());
}

#[tokio::test]
async fn stop_reasons_max_tokens_and_stop_sequence() {
    let server = MockServer::start(MockConfig::default()).await.unwrap();
    let v: Value = post(
        &server,
        "/v1/messages",
        &ask("[[mock:max_tokens]] [[mock:tool_use=t:{}]]"),
    )
    .await
    .json()
    .await
    .unwrap();
    assert_eq!(v["stop_reason"], "max_tokens");
    assert_eq!(v["content"].as_array().unwrap().len(), 1);
    let raw = post(
        &server,
        "/v1/messages",
        &ask_stream("[[mock:stop_sequence=END]]"),
    )
    .await
    .text()
    .await
    .unwrap();
    let ev = parse_sse(&raw);
    assert_eq!(
        ev[ev.len() - 2].1["delta"],
        json!({"stop_reason": "stop_sequence", "stop_sequence": "END"})
    );
}

#[tokio::test]
async fn stream_error_event_mid_stream() {
    let server = MockServer::start(MockConfig::default()).await.unwrap();
    let raw = post(
        &server,
        "/v1/messages",
        &ask_stream("a b c d e f g h i j [[mock:stream_error=529]]"),
    )
    .await
    .text()
    .await
    .unwrap();
    let ev = parse_sse(&raw);
    let n = names(&ev);
    assert_eq!(
        &n[..4],
        [
            "message_start",
            "content_block_start",
            "ping",
            "content_block_delta"
        ]
    );
    assert_eq!(n[n.len() - 1], "error");
    assert!(!n.contains(&"message_stop"));
    assert_eq!(
        ev[ev.len() - 1].1,
        json!({"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}})
    );
}

/// Reads an SSE body chunk by chunk until it ends or fails; returns the text and whether it failed.
async fn read_until_end(resp: reqwest::Response) -> (String, bool) {
    let mut text = String::new();
    let mut s = resp.bytes_stream();
    while let Some(item) = s.next().await {
        match item {
            Ok(b) => text.push_str(std::str::from_utf8(&b).unwrap()),
            Err(_) => return (text, true),
        }
    }
    (text, false)
}

#[tokio::test]
async fn die_mid_stream_drops_the_connection() {
    let server = MockServer::start(MockConfig::default()).await.unwrap();
    let resp = post(
        &server,
        "/v1/messages",
        &ask_stream("one two three four five six seven eight nine [[mock:die_mid_stream]]"),
    )
    .await;
    assert_eq!(resp.status(), 200);
    let (text, failed) = read_until_end(resp).await;
    assert!(failed, "body must end in an error, got {text:?}");
    assert!(text.contains("event: message_start"));
    assert!(text.contains("event: content_block_delta"));
    assert!(!text.contains("message_stop"));
    assert!(!text.contains("content_block_stop"));

    // With an explicit event count.
    let resp = post(
        &server,
        "/v1/messages",
        &ask_stream("x [[mock:die_mid_stream=2]]"),
    )
    .await;
    let (text, failed) = read_until_end(resp).await;
    assert!(failed);
    assert_eq!(text.matches("event: ").count(), 2);

    // Non-streaming: a truncated JSON body.
    let resp = post(&server, "/v1/messages", &ask("x [[mock:die_mid_stream]]")).await;
    assert_eq!(resp.status(), 200);
    assert!(resp.bytes().await.is_err());
}

#[tokio::test]
async fn hang_never_answers_until_shutdown() {
    let server = MockServer::start(MockConfig::default()).await.unwrap();
    let resp = client()
        .post(format!("{}/v1/messages", server.base_url()))
        .header("x-api-key", "k")
        .header("anthropic-version", "2023-06-01")
        .timeout(Duration::from_millis(300))
        .json(&ask("[[mock:hang]]"))
        .send()
        .await;
    let err = resp.expect_err("a hanging upstream must time out");
    assert!(err.is_timeout());
    assert_eq!(server.requests().len(), 1, "the request was received");

    // A request in flight when the server shuts down is released (dropped), not leaked.
    let url = format!("{}/v1/messages", server.base_url());
    let pending = tokio::spawn(async move {
        client()
            .post(url)
            .header("x-api-key", "k")
            .header("anthropic-version", "2023-06-01")
            .json(&ask("[[mock:hang]]"))
            .send()
            .await
    });
    while server.requests().len() < 2 {
        tokio::task::yield_now().await;
    }
    server.shutdown().await;
    let outcome = pending.await.unwrap();
    assert!(outcome.is_err() || outcome.unwrap().bytes().await.is_err());
}

#[tokio::test]
async fn stall_after_sends_n_events_then_nothing() {
    let server = MockServer::start(MockConfig::default()).await.unwrap();
    let resp = post(
        &server,
        "/v1/messages",
        &ask_stream("a b c d e f [[mock:stall_after=3]]"),
    )
    .await;
    assert_eq!(resp.status(), 200);
    let mut s = resp.bytes_stream();
    let mut text = String::new();
    while text.matches("\n\n").count() < 3 {
        let chunk = s.next().await.unwrap().unwrap();
        text.push_str(std::str::from_utf8(&chunk).unwrap());
    }
    let ev = parse_sse(&text);
    assert_eq!(names(&ev), ["message_start", "content_block_start", "ping"]);
    let next = tokio::time::timeout(Duration::from_millis(300), s.next()).await;
    assert!(next.is_err(), "nothing more arrives while stalled");
    server.shutdown().await;
}
