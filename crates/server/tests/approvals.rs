//! Human approvals: a single-use token bound to tenant, tool and args; self-approval
//! refused; policy re-evaluated at redemption; expiry; long-poll.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::Harness;
use serde_json::{Value, json};

const POLICY: &str = "tools:\n  - id: mail-needs-approval\n    match: email.*\n    action: require_approval\n  - id: rest\n    match: \"*\"\n    action: allow\n";

async fn tenant(h: &Harness, id: &str, attrs: Value) -> (String, String) {
    let (s, v) = h
        .admin(
            reqwest::Method::POST,
            "/admin/v1/tenants",
            Some(json!({"id": id, "name": id, "attributes": attrs})),
        )
        .await;
    assert_eq!(s, 201, "{v}");
    h.put_policy(Some(id), POLICY).await;
    let requester = h.key(id, json!({"user_id": "alice"})).await.0;
    let approver = h
        .key(id, json!({"user_id": "bob", "role": "approver"}))
        .await
        .0;
    (requester, approver)
}

async fn guard(h: &Harness, key: &str, tool: &str, args: Value, token: Option<&str>) -> Value {
    let mut body = json!({"tool": tool, "args": args});
    if let Some(t) = token {
        body["approval_token"] = json!(t);
    }
    let r = h.post("/v1/guard/tool", key, &body).await;
    assert_eq!(r.status().as_u16(), 200);
    r.json().await.unwrap()
}

async fn post(h: &Harness, path: &str, key: &str, body: Value) -> (u16, Value) {
    let r = h.post(path, key, &body).await;
    let s = r.status().as_u16();
    (s, r.json().await.unwrap_or(Value::Null))
}

/// Requests approval for `args` and has the approver approve; returns (id, token).
async fn approved(h: &Harness, req: &str, appr: &str, args: Value) -> (String, String) {
    let v = guard(h, req, "email.send", args, None).await;
    assert_eq!(v["decision"], "require_approval");
    let id = v["approval"]["id"].as_str().unwrap().to_string();
    assert_eq!(v["approval"]["status"], "pending");
    let (s, v) = post(h, &format!("/v1/approvals/{id}/approve"), appr, json!({})).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["status"], "approved");
    assert!(
        v.get("approval_token").is_none(),
        "only the requester sees the token"
    );
    let (s, v) = h.get(&format!("/v1/approvals/{id}"), req).await;
    assert_eq!(s, 200);
    (id, v["approval_token"].as_str().unwrap().to_string())
}

#[tokio::test]
async fn token_is_single_use_and_bound_to_tool_args_and_tenant() {
    let h = Harness::start().await;
    let (req, appr) = tenant(&h, "acme", json!({})).await;
    let (other_req, _) = tenant(&h, "globex", json!({})).await;
    let args = json!({"to": "x@acme.com", "body": "hi"});
    let (_, token) = approved(&h, &req, &appr, args.clone()).await;
    // Other args, another tool, another tenant: denied, and the token survives them.
    let v = guard(
        &h,
        &req,
        "email.send",
        json!({"to": "evil@x.com"}),
        Some(&token),
    )
    .await;
    assert_eq!(v["decision"], "deny");
    let v = guard(&h, &req, "email.forward", args.clone(), Some(&token)).await;
    assert_eq!(v["decision"], "deny");
    let v = guard(&h, &other_req, "email.send", args.clone(), Some(&token)).await;
    assert_eq!(v["decision"], "deny");
    // Key order does not matter (canonical JSON).
    let reordered = json!({"body": "hi", "to": "x@acme.com"});
    let v = guard(&h, &req, "email.send", reordered, Some(&token)).await;
    assert_eq!(v["decision"], "allow", "{v}");
    // Second use.
    let v = guard(&h, &req, "email.send", args, Some(&token)).await;
    assert_eq!(v["decision"], "deny");
    // Every step left an approval receipt.
    let receipts = h.receipts(&appr).await;
    let steps: Vec<&str> = receipts
        .iter()
        .filter(|r| r["kind"] == "approval")
        .map(|r| r["decision"].as_str().unwrap())
        .collect();
    for s in [
        "approval_requested",
        "approval_granted",
        "approval_redeemed",
    ] {
        assert!(steps.contains(&s), "{steps:?}");
    }
}

#[tokio::test]
async fn self_approval_is_refused_unless_allowed() {
    let h = Harness::start().await;
    let (req, _) = tenant(&h, "acme", json!({})).await;
    // The requester's user holding an approver key is still the requester.
    let self_approver = h
        .key("acme", json!({"user_id": "alice", "role": "approver"}))
        .await
        .0;
    let v = guard(&h, &req, "email.send", json!({}), None).await;
    let id = v["approval"]["id"].as_str().unwrap().to_string();
    let (s, v) = post(
        &h,
        &format!("/v1/approvals/{id}/approve"),
        &self_approver,
        json!({}),
    )
    .await;
    assert_eq!(s, 403, "{v}");
    assert_eq!(v["error"]["palisade_reason"], "self_approval");
    // A plain member cannot decide at all.
    let (s, v) = post(&h, &format!("/v1/approvals/{id}/approve"), &req, json!({})).await;
    assert_eq!(s, 403, "{v}");
    // With the tenant's permission, self-approval works.
    let (loose_req, _) = tenant(&h, "loose", json!({"approval_allow_self": true})).await;
    let me = h
        .key("loose", json!({"user_id": "alice", "role": "approver"}))
        .await
        .0;
    let v = guard(&h, &loose_req, "email.send", json!({}), None).await;
    let id = v["approval"]["id"].as_str().unwrap().to_string();
    let (s, v) = post(&h, &format!("/v1/approvals/{id}/approve"), &me, json!({})).await;
    assert_eq!(s, 200, "{v}");
}

#[tokio::test]
async fn policy_tightened_after_approval_wins_and_deny_is_final() {
    let h = Harness::start().await;
    let (req, appr) = tenant(&h, "acme", json!({})).await;
    let args = json!({"to": "a@b.c"});
    let (_, token) = approved(&h, &req, &appr, args.clone()).await;
    h.put_policy(
        Some("acme"),
        "tools:\n  - id: no-mail\n    match: email.*\n    action: deny\n",
    )
    .await;
    let v = guard(&h, &req, "email.send", args, Some(&token)).await;
    assert_eq!(v["decision"], "deny");
    assert_eq!(v["rule"], "no-mail");
    // Denied approvals yield no token.
    h.put_policy(Some("acme"), POLICY).await;
    let v = guard(&h, &req, "email.send", json!({"x": 1}), None).await;
    let id = v["approval"]["id"].as_str().unwrap().to_string();
    let (s, v) = post(
        &h,
        &format!("/v1/approvals/{id}/deny"),
        &appr,
        json!({"reason": "no"}),
    )
    .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["status"], "denied");
    let (_, v) = h.get(&format!("/v1/approvals/{id}"), &req).await;
    assert!(v.get("approval_token").is_none());
    let (s, _) = post(&h, &format!("/v1/approvals/{id}/approve"), &appr, json!({})).await;
    assert_eq!(s, 409);
}

#[tokio::test]
async fn edited_args_are_what_is_approved() {
    let h = Harness::start().await;
    let (req, appr) = tenant(&h, "acme", json!({})).await;
    let v = guard(&h, &req, "email.send", json!({"to": "all@corp.com"}), None).await;
    let id = v["approval"]["id"].as_str().unwrap().to_string();
    let edited = json!({"to": "team@corp.com"});
    let (s, v) = post(
        &h,
        &format!("/v1/approvals/{id}/approve"),
        &appr,
        json!({"args": edited}),
    )
    .await;
    assert_eq!(s, 200, "{v}");
    let (_, v) = h.get(&format!("/v1/approvals/{id}"), &req).await;
    let token = v["approval_token"].as_str().unwrap().to_string();
    let v = guard(
        &h,
        &req,
        "email.send",
        json!({"to": "all@corp.com"}),
        Some(&token),
    )
    .await;
    assert_eq!(v["decision"], "deny");
    let v = guard(&h, &req, "email.send", edited, Some(&token)).await;
    assert_eq!(v["decision"], "allow");
}

#[tokio::test]
async fn expired_token_is_refused() {
    let h = Harness::start().await;
    let (req, appr) = tenant(&h, "acme", json!({"approval_token_ttl_seconds": 1})).await;
    let args = json!({"to": "a@b.c"});
    let (_, token) = approved(&h, &req, &appr, args.clone()).await;
    tokio::time::sleep(std::time::Duration::from_millis(1200)).await;
    let v = guard(&h, &req, "email.send", args, Some(&token)).await;
    assert_eq!(v["decision"], "deny");
}

#[tokio::test]
async fn long_poll_returns_when_decided_and_list_is_tenant_scoped() {
    let h = Harness::start().await;
    let (req, appr) = tenant(&h, "acme", json!({})).await;
    let (other, _) = tenant(&h, "globex", json!({})).await;
    let v = guard(&h, &req, "email.send", json!({}), None).await;
    let id = v["approval"]["id"].as_str().unwrap().to_string();
    let poll = {
        let http = h.http.clone();
        let url = h.url(&format!("/v1/approvals/{id}?wait=30s"));
        let req = req.clone();
        tokio::spawn(async move {
            let r = http.get(url).header("x-api-key", req).send().await.unwrap();
            r.json::<Value>().await.unwrap()
        })
    };
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let (s, _) = post(&h, &format!("/v1/approvals/{id}/approve"), &appr, json!({})).await;
    assert_eq!(s, 200);
    let v = poll.await.unwrap();
    assert_eq!(v["status"], "approved");
    assert!(v["approval_token"].is_string());
    let (s, v) = h.get("/v1/approvals", &req).await;
    assert_eq!(s, 200);
    assert_eq!(v["data"].as_array().unwrap().len(), 1);
    let (_, v) = h.get("/v1/approvals", &other).await;
    assert!(v["data"].as_array().unwrap().is_empty());
    let (s, _) = h.get(&format!("/v1/approvals/{id}"), &other).await;
    assert_eq!(s, 404);
}

/// Sends `body` to /v1/messages with an optional approval token; returns the response text.
async fn message_with_token(h: &Harness, key: &str, body: &Value, token: Option<&str>) -> String {
    let mut r = h
        .http
        .post(h.url("/v1/messages"))
        .header("x-api-key", key)
        .header("anthropic-version", "2023-06-01")
        .json(body);
    if let Some(t) = token {
        r = r.header("x-palisade-approval-token", t);
    }
    let r = r.send().await.unwrap();
    assert_eq!(r.status().as_u16(), 200);
    r.text().await.unwrap()
}

/// The approval id named in a withheld call's text.
fn approval_id(text: &str) -> String {
    let at = text.find("apr_").expect("an approval id in the text");
    text[at..]
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
        .collect()
}

/// The whole `/v1/messages` round trip, plain and streamed: a tool_use that needs approval
/// is withheld with an approval id; the requester waits, the approver approves, the same
/// request with the token releases exactly that call once; a replay is withheld again.
#[tokio::test]
async fn messages_tool_use_needing_approval_is_withheld_then_released_once() {
    let h = Harness::start().await;
    let (req, appr) = tenant(&h, "acme", json!({})).await;
    for stream in [false, true] {
        let prompt = r#"[[mock:tool_use=email.send:{"to":"x@acme.com","body":"hi"}]] go"#;
        let body = if stream {
            common::stream_chat(prompt)
        } else {
            common::chat(prompt)
        };
        let text = message_with_token(&h, &req, &body, None).await;
        assert!(!text.contains(r#""type":"tool_use""#), "{text}");
        assert!(text.contains("requires approval"), "{text}");
        let id = approval_id(&text);
        let (s, v) = h.get(&format!("/v1/approvals/{id}"), &req).await;
        assert_eq!(s, 200, "{v}");
        assert_eq!(v["status"], "pending");
        assert_eq!(v["tool"], "email.send");
        // The requester long-polls while the approver decides.
        let waiter = {
            let http = h.http.clone();
            let url = h.url(&format!("/v1/approvals/{id}?wait=10s"));
            let req = req.clone();
            tokio::spawn(async move {
                let r = http.get(url).header("x-api-key", req).send().await.unwrap();
                r.json::<Value>().await.unwrap()
            })
        };
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        let (s, v) = post(&h, &format!("/v1/approvals/{id}/approve"), &appr, json!({})).await;
        assert_eq!(s, 200, "{v}");
        let v = waiter.await.unwrap();
        assert_eq!(v["status"], "approved", "{v}");
        let token = v["approval_token"].as_str().unwrap().to_string();
        // With the token, the same call is released as a real tool_use.
        let text = message_with_token(&h, &req, &body, Some(&token)).await;
        assert!(
            text.contains(r#""type":"tool_use""#),
            "stream={stream}: {text}"
        );
        assert!(text.contains(r#""name":"email.send""#), "{text}");
        // Used up: a replay opens a new approval instead.
        let text = message_with_token(&h, &req, &body, Some(&token)).await;
        assert!(!text.contains(r#""type":"tool_use""#), "{text}");
        assert_ne!(approval_id(&text), id);
        // A token for other args does not release this call.
        let other = if stream {
            common::stream_chat(
                r#"[[mock:tool_use=email.send:{"to":"evil@x.com","body":"hi"}]] go"#,
            )
        } else {
            common::chat(r#"[[mock:tool_use=email.send:{"to":"evil@x.com","body":"hi"}]] go"#)
        };
        let (_, token2) =
            approved(&h, &req, &appr, json!({"to": "x@acme.com", "body": "hi"})).await;
        let text = message_with_token(&h, &req, &other, Some(&token2)).await;
        assert!(!text.contains(r#""type":"tool_use""#), "{text}");
    }
    // The message receipts name the approvals they opened and the redemption.
    let receipts = h.receipts(&appr).await;
    assert!(
        receipts.iter().any(|r| r["kind"] == "message"
            && r["details"]["approvals"].is_array()
            && r["approval_id"] == r["details"]["approvals"][0]),
        "a message receipt lists its approvals and names the first in approval_id"
    );
    assert!(
        receipts
            .iter()
            .filter(|r| r["kind"] == "approval")
            .all(|r| r["approval_id"]
                .as_str()
                .is_some_and(|a| a.starts_with("apr_"))),
        "approval receipts name their approval"
    );
    assert!(receipts.iter().any(|r| r["kind"] == "message"
        && r["tools"].as_array().is_some_and(|t| t.iter().any(|t| {
            t["rule_id"]
                .as_str()
                .is_some_and(|r| r.starts_with("approval:"))
        }))));
}

/// The tenant's approvals webhook hears of each new approval and each decision, signed
/// with the tenant's webhook secret, retried after a failure, and never carrying the args.
#[tokio::test]
async fn approvals_webhook_is_signed_retried_and_carries_no_args() {
    let h = Harness::start_with(|c| c.sentinel.webhook_base_backoff_ms = 10).await;
    let (url, seen) = common::webhook_receiver().await;
    let (req, appr) = tenant(&h, "acme", json!({"approval_webhook_url": url})).await;
    let (admin, _) = h.key("acme", json!({"role": "tenant_admin"})).await;
    let args = json!({"to": "x@acme.com", "body": "the secret plan"});
    let (id, _) = approved(&h, &req, &appr, args).await;
    let (s, sec) = h.get("/v1/alerts/webhook-secret", &admin).await;
    assert_eq!(s, 200, "{sec}");
    let secret = sec["secret"].as_str().unwrap().to_string();
    // Wait for both events (the first delivery fails once and is retried).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let events: Vec<String> = seen
            .lock()
            .unwrap()
            .iter()
            .map(|(h, _)| h["x-palisade-event"].to_str().unwrap().to_string())
            .collect();
        if events.iter().any(|e| e == "approval.decided") && events.len() >= 3 {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{events:?}");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let seen = seen.lock().unwrap();
    let mut kinds = Vec::new();
    for (headers, body) in seen.iter() {
        let ts: i64 = headers["x-palisade-timestamp"]
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        assert_eq!(
            headers["x-palisade-signature"].to_str().unwrap(),
            palisade_server::webhooks::sign(secret.as_bytes(), ts, body)
        );
        let v: Value = serde_json::from_slice(body).unwrap();
        assert_eq!(v["approval"]["id"], id.as_str());
        assert!(!String::from_utf8_lossy(body).contains("secret plan"));
        kinds.push((
            v["type"].as_str().unwrap().to_string(),
            v["approval"]["status"].clone(),
        ));
    }
    assert_eq!(
        kinds[0],
        ("approval.requested".to_string(), json!("pending"))
    );
    // The first delivery (the request) got a 503 and was retried; deliveries run in the
    // background, so the decision may arrive before the retry.
    let requested: Vec<_> = seen
        .iter()
        .filter(|(h, _)| h["x-palisade-event"] == "approval.requested")
        .map(|(h, _)| {
            (
                h["x-palisade-event-id"].to_str().unwrap().to_string(),
                h["x-palisade-attempt"].to_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(requested.len(), 2, "{requested:?}");
    assert_eq!(
        requested[0].0, requested[1].0,
        "the retry is the same event"
    );
    assert_eq!((&*requested[0].1, &*requested[1].1), ("1", "2"));
    assert!(kinds.contains(&("approval.decided".to_string(), json!("approved"))));
}
