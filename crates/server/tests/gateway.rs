//! End-to-end tests of the data plane against the mock upstream.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::*;
use serde_json::{Value, json};

#[tokio::test]
async fn plain_call_reaches_upstream_with_platform_key_only() {
    let h = Harness::start().await;
    let key = h.tenant("acme").await;
    let (s, v, headers) = h.message(&key, &chat("hello there")).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["type"], "message");
    assert_eq!(v["content"][0]["text"], "You said: hello there");
    let receipt_id = headers["x-palisade-receipt-id"]
        .to_str()
        .unwrap()
        .to_string();
    assert!(
        headers.contains_key("request-id"),
        "upstream request-id is relayed"
    );

    let reqs = h.mock.requests();
    assert_eq!(reqs.len(), 1);
    let r = &reqs[0];
    assert_eq!(r.header("x-api-key"), Some(PLATFORM_KEY));
    assert_eq!(r.header("anthropic-version"), Some("2023-06-01"));
    for (name, value) in &r.headers {
        assert!(
            !value.contains(&key),
            "Palisade key leaked upstream in {name}"
        );
        assert!(
            !value.contains("pal_"),
            "Palisade key leaked upstream in {name}"
        );
    }
    assert_eq!(r.body["messages"][0]["content"], "hello there");

    let (s, rec) = h.get(&format!("/v1/receipts/{receipt_id}"), &key).await;
    assert_eq!(s, 200);
    assert_eq!(rec["tenant_id"], "acme");
    assert_eq!(rec["kind"], "message");
    assert_eq!(rec["decision"], "allow");
    assert_eq!(rec["upstream_status"], 200);
    assert_eq!(rec["model"], "claude-sonnet-4-5");
    assert_eq!(rec["user_id"], "acme-user");
    assert_eq!(rec["stop_reason"], "end_turn");
    assert!(rec["input_tokens"].as_u64().unwrap() > 0);
    assert!(rec["output_tokens"].as_u64().unwrap() > 0);
    let hmac = rec["prompt_hmac"].as_str().unwrap();
    assert_eq!(hmac.len(), 64);
    // The receipt never carries the prompt.
    assert!(!rec.to_string().contains("hello there"));
}

#[tokio::test]
async fn bearer_credentials_and_beta_headers_are_handled() {
    let h = Harness::start().await;
    let key = h.tenant("acme").await;
    let r = h
        .http
        .post(h.url("/v1/messages"))
        .bearer_auth(&key)
        .header("anthropic-version", "2023-06-01")
        .header("anthropic-beta", "tools-2024-05-16")
        .json(&chat("hi"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let req = h.mock.requests().pop().unwrap();
    assert_eq!(req.header("anthropic-beta"), Some("tools-2024-05-16"));
    assert_eq!(
        req.header("authorization"),
        None,
        "client Authorization is not forwarded"
    );
    assert_eq!(req.header("x-api-key"), Some(PLATFORM_KEY));
}

#[tokio::test]
async fn stream_is_relayed_event_by_event_with_receipt() {
    let h = Harness::start().await;
    let key = h.tenant("acme").await;
    let r = h
        .post(
            "/v1/messages",
            &key,
            &stream_chat("[[mock:chunk=3]] stream me please"),
        )
        .await;
    assert_eq!(r.status(), 200);
    assert!(
        r.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/event-stream")
    );
    let receipt_id = r.headers()["x-palisade-receipt-id"]
        .to_str()
        .unwrap()
        .to_string();
    let body = r.text().await.unwrap();
    let names = event_names(&body);
    assert_eq!(names.first().map(String::as_str), Some("message_start"));
    assert_eq!(names.last().map(String::as_str), Some("message_stop"));
    assert!(names.iter().filter(|n| *n == "content_block_delta").count() > 3);
    for expected in [
        "content_block_start",
        "ping",
        "content_block_stop",
        "message_delta",
    ] {
        assert!(
            names.iter().any(|n| n == expected),
            "{expected} missing in {names:?}"
        );
    }
    let text: String = sse_data(&body)
        .iter()
        .filter_map(|v| {
            v.pointer("/delta/text")
                .and_then(Value::as_str)
                .map(str::to_string)
        })
        .collect();
    assert_eq!(text, "You said: stream me please");
    // The receipt was committed before message_stop was released.
    let (s, rec) = h.get(&format!("/v1/receipts/{receipt_id}"), &key).await;
    assert_eq!(s, 200, "{rec}");
    assert_eq!(rec["decision"], "allow");
    assert!(rec["input_tokens"].as_u64().unwrap() > 0);
    assert!(rec["output_tokens"].as_u64().unwrap() > 0);
    assert_eq!(rec["stop_reason"], "end_turn");
    assert!(rec["output_hmac"].is_string());
}

#[tokio::test]
async fn upstream_dying_mid_stream_gives_error_event_and_receipt() {
    let h = Harness::start().await;
    let key = h.tenant("acme").await;
    let r = h
        .post(
            "/v1/messages",
            &key,
            &stream_chat("[[mock:die_mid_stream]] long answer please"),
        )
        .await;
    assert_eq!(r.status(), 200);
    let receipt_id = r.headers()["x-palisade-receipt-id"]
        .to_str()
        .unwrap()
        .to_string();
    let body = r.text().await.unwrap();
    let names = event_names(&body);
    assert_eq!(names.last().map(String::as_str), Some("error"), "{body}");
    assert!(!names.iter().any(|n| n == "message_stop"));
    let err = sse_data(&body).pop().unwrap();
    assert_eq!(err["type"], "error");
    assert_eq!(err["error"]["type"], "api_error");
    assert_eq!(err["error"]["receipt_id"], receipt_id.as_str());
    let (s, rec) = h.get(&format!("/v1/receipts/{receipt_id}"), &key).await;
    assert_eq!(s, 200);
    assert_eq!(rec["decision"], "upstream_error");
    assert!(
        rec["reason_code"]
            .as_str()
            .unwrap()
            .starts_with("upstream_stream")
    );
}

#[tokio::test]
async fn upstream_errors_keep_status_and_anthropic_shape() {
    let h = Harness::start().await;
    let key = h.tenant("acme").await;
    for (status, kind) in [
        (400, "invalid_request_error"),
        (404, "not_found_error"),
        (429, "rate_limit_error"),
        (500, "api_error"),
        (529, "overloaded_error"),
    ] {
        let (s, v, headers) = h
            .message(&key, &chat(&format!("[[mock:error={status}]] x")))
            .await;
        assert_eq!(s, status, "{v}");
        assert_eq!(v["type"], "error");
        assert_eq!(v["error"]["type"], kind);
        assert_eq!(v["error"]["palisade_reason"], "upstream_error");
        assert!(headers.contains_key("x-palisade-receipt-id"));
        if status == 429 {
            assert!(headers.contains_key("retry-after"));
        }
        // Streams refused before they start answer with the same JSON error.
        let r = h
            .post(
                "/v1/messages",
                &key,
                &stream_chat(&format!("[[mock:error={status}]] x")),
            )
            .await;
        assert_eq!(r.status().as_u16(), status);
        let v: Value = r.json().await.unwrap();
        assert_eq!(v["error"]["type"], kind);
    }
    let receipts = h.receipts(&key).await;
    assert!(
        receipts
            .iter()
            .filter(|r| r["decision"] == "upstream_error")
            .count()
            >= 10
    );
}

#[tokio::test]
async fn retries_transient_upstream_errors() {
    let h = Harness::start_with(|c| c.retry.max_retries = 2).await;
    let key = h.tenant("acme").await;
    let (s, v, headers) = h
        .message(&key, &chat("[[mock:error_once=529:k1]] hi"))
        .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(h.mock.requests().len(), 2);
    let id = headers["x-palisade-receipt-id"].to_str().unwrap();
    let (_, rec) = h.get(&format!("/v1/receipts/{id}"), &key).await;
    assert_eq!(rec["details"]["retries"], 1);
}

#[tokio::test]
async fn upstream_timeout_and_unreachable_are_504_and_502() {
    let h = Harness::start_with(|c| c.timeouts.first_byte_ms = 300).await;
    let key = h.tenant("acme").await;
    let (s, v, _) = h.message(&key, &chat("[[mock:hang]] hi")).await;
    assert_eq!(s, 504, "{v}");
    assert_eq!(v["error"]["palisade_reason"], "upstream_timeout");
    assert!(v["error"]["receipt_id"].is_string());

    let h2 = Harness::start_with(|c| {
        c.anthropic.base_url = "http://127.0.0.1:9".into();
        c.timeouts.connect_ms = 500;
    })
    .await;
    let key = h2.tenant("acme").await;
    let (s, v, _) = h2.message(&key, &chat("hi")).await;
    assert_eq!(s, 502, "{v}");
    assert_eq!(v["error"]["palisade_reason"], "upstream_unreachable");
    let (s, v, _) = h2.message(&key, &stream_chat("hi")).await;
    assert_eq!(s, 502, "{v}");
}

#[tokio::test]
async fn idle_stream_times_out_with_error_event() {
    let h = Harness::start_with(|c| c.timeouts.idle_ms = 300).await;
    let key = h.tenant("acme").await;
    let r = h
        .post(
            "/v1/messages",
            &key,
            &stream_chat("[[mock:stall_after=3]] hi"),
        )
        .await;
    let body = r.text().await.unwrap();
    let last = sse_data(&body).pop().unwrap();
    assert_eq!(
        last["error"]["palisade_reason"], "upstream_timeout",
        "{body}"
    );
}

#[tokio::test]
async fn bad_requests_get_clear_anthropic_errors_and_never_reach_upstream() {
    let h = Harness::start_with(|c| c.limits.max_body_bytes = 64 * 1024).await;
    let key = h.tenant("acme").await;
    let cases: Vec<(Value, &str)> = vec![
        (
            json!({"model": "m", "max_tokens": 5, "messages": [], "safety_settings": []}),
            "safety_settings",
        ),
        (
            json!({"model": "m", "max_tokens": 5, "messages": [], "bogus": 1}),
            "bogus",
        ),
        (json!({"max_tokens": 5, "messages": []}), "model"),
        (json!({"model": "m", "messages": []}), "max_tokens"),
        (json!({"model": "m", "max_tokens": 5}), "messages"),
        (
            json!({"model": "m", "max_tokens": 5, "messages": [], "stream": "yes"}),
            "stream",
        ),
        (json!([1, 2]), "object"),
    ];
    for (body, needle) in cases {
        let (s, v, headers) = h.message(&key, &body).await;
        assert_eq!(s, 400, "{body} -> {v}");
        assert_eq!(v["type"], "error");
        assert_eq!(v["error"]["type"], "invalid_request_error");
        assert!(
            v["error"]["message"].as_str().unwrap().contains(needle),
            "{v}"
        );
        assert!(
            headers.contains_key("x-palisade-receipt-id"),
            "refusals have receipts"
        );
    }
    // Not JSON, too deep, too large.
    let r = h
        .http
        .post(h.url("/v1/messages"))
        .header("x-api-key", &key)
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error"]["palisade_reason"], "invalid_json");
    let deep = format!("{}{}", "[".repeat(200), "]".repeat(200));
    let r = h
        .http
        .post(h.url("/v1/messages"))
        .header("x-api-key", &key)
        .body(deep)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error"]["palisade_reason"], "json_too_deep");
    let big = chat(&"a".repeat(100 * 1024));
    let (s, v, _) = h.message(&key, &big).await;
    assert_eq!(s, 413, "{v}");
    assert_eq!(v["error"]["type"], "request_too_large");
    assert!(
        h.mock.requests().is_empty(),
        "no bad request reached the upstream"
    );
}

#[tokio::test]
async fn unknown_routes_and_methods_are_anthropic_shaped() {
    let h = Harness::start().await;
    let r = h.http.get(h.url("/v1/nothing")).send().await.unwrap();
    assert_eq!(r.status(), 404);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error"]["type"], "not_found_error");
    let r = h.http.get(h.url("/v1/messages")).send().await.unwrap();
    assert_eq!(r.status(), 405);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["type"], "error");
}

#[tokio::test]
async fn count_tokens_is_forwarded_with_receipt() {
    let h = Harness::start().await;
    let key = h.tenant("acme").await;
    let r = h
        .post(
            "/v1/messages/count_tokens",
            &key,
            &json!({"model": "claude-sonnet-4-5", "system": "be brief", "messages": [{"role": "user", "content": "count these words"}]}),
        )
        .await;
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    assert!(v["input_tokens"].as_u64().unwrap() > 0);
    assert_eq!(h.mock.requests()[0].path, "/v1/messages/count_tokens");
    let receipts = h.receipts(&key).await;
    let rec = receipts.iter().find(|r| r["kind"] == "message").unwrap();
    assert_eq!(rec["details"]["endpoint"], "count_tokens");
    assert_eq!(rec["input_tokens"], v["input_tokens"]);
}

#[tokio::test]
async fn tool_use_response_is_relayed() {
    let h = Harness::start().await;
    let key = h.tenant("acme").await;
    h.put_policy(Some("acme"), ALLOW_ALL).await;
    let (s, v, _) = h
        .message(
            &key,
            &chat(r#"[[mock:tool_use=get_weather:{"city":"Paris"}]] weather?"#),
        )
        .await;
    assert_eq!(s, 200);
    assert_eq!(v["stop_reason"], "tool_use");
    let tool = v["content"]
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["type"] == "tool_use")
        .unwrap();
    assert_eq!(tool["name"], "get_weather");
    assert_eq!(tool["input"]["city"], "Paris");
    // Streamed, the input_json_delta pieces reassemble to the same input.
    let r = h
        .post(
            "/v1/messages",
            &key,
            &stream_chat(r#"[[mock:tool_use=get_weather:{"city":"Paris"}]] weather?"#),
        )
        .await;
    let body = r.text().await.unwrap();
    let json: String = sse_data(&body)
        .iter()
        .filter_map(|v| {
            v.pointer("/delta/partial_json")
                .and_then(Value::as_str)
                .map(str::to_string)
        })
        .collect();
    assert_eq!(
        serde_json::from_str::<Value>(&json).unwrap(),
        json!({"city": "Paris"})
    );
}
