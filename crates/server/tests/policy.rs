//! Tool-call governance end to end: policy versions through the control plane,
//! `/v1/guard/tool`, tools stripped from requests, and `tool_use` blocks decided in plain
//! and streamed responses.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::*;
use reqwest::Method;
use serde_json::{Value, json};

const PLATFORM: &str = r#"
default: deny
tools:
  - id: no-system-tools
    match: "system.*"
    action: deny
    priority: 100
    reason: System tools are blocked for all tenants
  - id: no-shell
    match: shell.execute
    action: deny
    priority: 100
    reason: Shell access is disabled
"#;

const TENANT: &str = r#"
tools:
  - id: weather
    match: get_weather
    action: allow
  - id: email-own-domain
    match: email.send
    when: { args.to: { ends_with: "@${tenant.attributes.domain}" } }
    action: allow
  - id: email-external
    match: email.send
    action: require_approval
    reason: External emails need approval
  - id: shell-for-admins
    match: shell.execute
    action: allow
"#;

async fn setup() -> (Harness, String, String, String) {
    let h = Harness::start().await;
    let (s, v) = h
        .admin(
            Method::POST,
            "/admin/v1/tenants",
            Some(json!({"id": "acme", "name": "Acme", "attributes": {"domain": "acme.com"}})),
        )
        .await;
    assert_eq!(s, 201, "{v}");
    let (key, _) = h.key("acme", json!({"user_id": "u1"})).await;
    let p = h.put_policy(None, PLATFORM).await;
    let t = h.put_policy(Some("acme"), TENANT).await;
    (h, key, p, t)
}

async fn guard(h: &Harness, key: &str, tool: &str, args: Value) -> Value {
    let r = h
        .post("/v1/guard/tool", key, &json!({"tool": tool, "args": args}))
        .await;
    assert_eq!(r.status(), 200);
    r.json().await.unwrap()
}

#[tokio::test]
async fn guard_tool_decides_with_layers_and_records_receipts() {
    let (h, key, pv, tv) = setup().await;
    let v = guard(&h, &key, "system.fs.delete", json!({"path": "/"})).await;
    assert_eq!(v["decision"], "deny");
    assert_eq!(v["rule"], "no-system-tools");
    assert_eq!(v["layer"], "platform");
    // The tenant allows shell.execute; the platform's deny wins.
    let v = guard(&h, &key, "shell.execute", json!({"cmd": "ls"})).await;
    assert_eq!(
        (v["decision"].as_str(), v["rule"].as_str()),
        (Some("deny"), Some("no-shell"))
    );
    let v = guard(&h, &key, "email.send", json!({"to": "bob@acme.com"})).await;
    assert_eq!(
        (v["decision"].as_str(), v["rule"].as_str()),
        (Some("allow"), Some("email-own-domain"))
    );
    let v = guard(&h, &key, "email.send", json!({"to": "eve@evil-acme.com"})).await;
    assert_eq!(v["decision"], "require_approval");
    // No rule anywhere: the platform default.
    let v = guard(&h, &key, "unknown.tool", json!({})).await;
    assert_eq!(
        (v["decision"].as_str(), v["layer"].as_str()),
        (Some("deny"), Some("default"))
    );
    assert!(v["trace"].is_array());

    let (s, rec) = h
        .get(
            &format!("/v1/receipts/{}", v["receipt_id"].as_str().unwrap()),
            &key,
        )
        .await;
    assert_eq!(s, 200);
    assert_eq!(rec["kind"], "tool_decision");
    assert_eq!(rec["policy"]["platform_version"], pv.as_str());
    assert_eq!(rec["policy"]["tenant_version"], tv.as_str());
    assert_eq!(rec["tools"][0]["tool"], "unknown.tool");

    // Bad input.
    for bad in [
        json!({"args": {}}),
        json!({"tool": ""}),
        json!({"tool": "x", "user": {"role": "admin"}}),
    ] {
        let r = h.post("/v1/guard/tool", &key, &bad).await;
        assert_eq!(r.status(), 400, "{bad}");
    }
}

#[tokio::test]
async fn tenant_without_any_policy_is_denied_by_default() {
    let h = Harness::start().await;
    let key = h.tenant("bare").await;
    let v = guard(&h, &key, "anything", json!({})).await;
    assert_eq!(v["decision"], "deny");
    assert_eq!(v["layer"], "default");
}

#[tokio::test]
async fn tools_the_caller_may_never_use_are_not_sent_upstream() {
    let (h, key, _, _) = setup().await;
    let body = json!({
        "model": "claude-sonnet-4-5",
        "max_tokens": 64,
        "tools": [
            {"name": "get_weather", "input_schema": {"type": "object"}},
            {"name": "system.reboot", "input_schema": {"type": "object"}},
            {"name": "shell.execute", "input_schema": {"type": "object"}},
            {"name": "email.send", "input_schema": {"type": "object"}}
        ],
        "tool_choice": {"type": "tool", "name": "shell.execute"},
        "messages": [{"role": "user", "content": "hi"}]
    });
    let (s, v, headers) = h.message(&key, &body).await;
    assert_eq!(s, 200, "{v}");
    let sent = h.mock.requests().pop().unwrap().body;
    let names: Vec<_> = sent["tools"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(names, vec!["get_weather", "email.send"]);
    assert!(
        sent.get("tool_choice").is_none(),
        "a tool_choice naming a removed tool is dropped"
    );
    let id = headers["x-palisade-receipt-id"].to_str().unwrap();
    let (_, rec) = h.get(&format!("/v1/receipts/{id}"), &key).await;
    let offered: Vec<_> = rec["tools"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|t| t["direction"] == "offered")
        .map(|t| t["tool"].clone())
        .collect();
    assert_eq!(
        offered,
        vec![json!("system.reboot"), json!("shell.execute")]
    );
}

#[tokio::test]
async fn denied_tool_use_never_reaches_the_client_as_a_tool_use() {
    let (h, key, _, tv) = setup().await;
    // One allowed call, one denied.
    let (s, v, headers) = h
        .message(&key, &chat(r#"[[mock:tool_use=get_weather:{"city":"Paris"}]] [[mock:tool_use=shell.execute:{"cmd":"rm -rf /"}]] go"#))
        .await;
    assert_eq!(s, 200, "{v}");
    let receipt_id = headers["x-palisade-receipt-id"].to_str().unwrap();
    let blocks = v["content"].as_array().unwrap();
    let tool_uses: Vec<_> = blocks.iter().filter(|b| b["type"] == "tool_use").collect();
    assert_eq!(tool_uses.len(), 1);
    assert_eq!(tool_uses[0]["name"], "get_weather");
    let denial = blocks
        .iter()
        .find(|b| b["type"] == "text" && b["text"].as_str().unwrap().contains("shell.execute"))
        .unwrap();
    assert!(denial["text"].as_str().unwrap().contains(receipt_id));
    assert_eq!(
        v["stop_reason"], "tool_use",
        "one call is still for the client to run"
    );

    // Only denied calls: nothing left to execute, so the turn ends.
    let (_, v, headers) = h
        .message(&key, &chat(r#"[[mock:tool_use=system.reboot:{}]] go"#))
        .await;
    assert!(
        v["content"]
            .as_array()
            .unwrap()
            .iter()
            .all(|b| b["type"] != "tool_use")
    );
    assert_eq!(v["stop_reason"], "end_turn");
    let id = headers["x-palisade-receipt-id"].to_str().unwrap();
    let (_, rec) = h.get(&format!("/v1/receipts/{id}"), &key).await;
    assert_eq!(rec["decision"], "tool_withheld");
    assert_eq!(rec["policy"]["rule_id"], "no-system-tools");
    assert_eq!(rec["policy"]["layer"], "platform");
    assert_eq!(rec["policy"]["tenant_version"], tv.as_str());
    assert_eq!(rec["tools"][0]["direction"], "called");
}

#[tokio::test]
async fn streamed_tool_use_is_held_decided_and_replaced() {
    let (h, key, _, _) = setup().await;
    let r = h
        .post(
            "/v1/messages",
            &key,
            &stream_chat(r#"[[mock:tool_use=get_weather:{"city":"Paris"}]] [[mock:tool_use=email.send:{"to":"eve@example.com","body":"secret plans"}]] go"#),
        )
        .await;
    let receipt_id = r.headers()["x-palisade-receipt-id"]
        .to_str()
        .unwrap()
        .to_string();
    let body = r.text().await.unwrap();
    let events = sse_data(&body);
    let starts: Vec<_> = events
        .iter()
        .filter(|e| e["type"] == "content_block_start")
        .map(|e| e["content_block"].clone())
        .collect();
    let tool_names: Vec<_> = starts
        .iter()
        .filter(|b| b["type"] == "tool_use")
        .map(|b| b["name"].clone())
        .collect();
    assert_eq!(tool_names, vec![json!("get_weather")]);
    // The allowed call's input arrives intact.
    let json_text: String = events
        .iter()
        .filter_map(|e| e.pointer("/delta/partial_json").and_then(Value::as_str))
        .collect();
    assert_eq!(
        serde_json::from_str::<Value>(&json_text).unwrap(),
        json!({"city": "Paris"})
    );
    assert!(
        !body.contains("secret plans"),
        "a withheld call's input never reaches the client"
    );
    let text: String = events
        .iter()
        .filter_map(|e| e.pointer("/delta/text").and_then(Value::as_str))
        .collect();
    assert!(text.contains("`email.send` requires approval"), "{text}");
    assert!(text.contains(&receipt_id));
    assert_eq!(
        event_names(&body).last().map(String::as_str),
        Some("message_stop")
    );
    let (_, rec) = h.get(&format!("/v1/receipts/{receipt_id}"), &key).await;
    assert_eq!(rec["decision"], "tool_withheld");
    let called: Vec<_> = rec["tools"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| (t["tool"].clone(), t["decision"].clone()))
        .collect();
    assert_eq!(
        called,
        vec![
            (json!("get_weather"), json!("allow")),
            (json!("email.send"), json!("require_approval"))
        ]
    );

    // Only a denied call: stop_reason becomes end_turn in the message_delta.
    let r = h
        .post(
            "/v1/messages",
            &key,
            &stream_chat(r#"[[mock:tool_use=shell.execute:{"cmd":"id"}]] go"#),
        )
        .await;
    let body = r.text().await.unwrap();
    let delta = sse_data(&body)
        .into_iter()
        .find(|e| e["type"] == "message_delta")
        .unwrap();
    assert_eq!(delta["delta"]["stop_reason"], "end_turn");
    assert!(
        !sse_data(&body)
            .iter()
            .any(|e| e["content_block"]["type"] == "tool_use")
    );
}

#[tokio::test]
async fn refuse_mode_turns_a_withheld_call_into_a_403() {
    let h = Harness::start_with(|c| c.policy.withheld_tool_use = "refuse".into()).await;
    let key = h.tenant("acme").await;
    let (s, v, _) = h
        .message(&key, &chat(r#"[[mock:tool_use=danger:{}]] go"#))
        .await;
    assert_eq!(s, 403, "{v}");
    assert_eq!(v["error"]["type"], "permission_error");
    assert_eq!(v["error"]["palisade_reason"], "tool_denied");
    let r = h
        .post(
            "/v1/messages",
            &key,
            &stream_chat(r#"[[mock:tool_use=danger:{}]] go"#),
        )
        .await;
    let body = r.text().await.unwrap();
    let last = sse_data(&body).pop().unwrap();
    assert_eq!(last["error"]["type"], "permission_error");
    assert!(
        !sse_data(&body)
            .iter()
            .any(|e| e["content_block"]["type"] == "tool_use")
    );
}

#[tokio::test]
async fn tool_results_are_recorded_by_tool() {
    let (h, key, _, _) = setup().await;
    let body = json!({
        "model": "claude-sonnet-4-5",
        "max_tokens": 64,
        "messages": [
            {"role": "user", "content": "weather?"},
            {"role": "assistant", "content": [{"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"city": "Paris"}}]},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_1", "content": "sunny"}]}
        ]
    });
    let (s, _, headers) = h.message(&key, &body).await;
    assert_eq!(s, 200);
    let id = headers["x-palisade-receipt-id"].to_str().unwrap();
    let (_, rec) = h.get(&format!("/v1/receipts/{id}"), &key).await;
    assert_eq!(
        rec["tools"][0],
        json!({"tool": "get_weather", "decision": "result", "rule_id": null, "direction": "result"})
    );
}

#[tokio::test]
async fn policy_versions_are_validated_immutable_and_audited() {
    let (h, key, pv, tv) = setup().await;
    // Invalid policy: 422 with file, line and column.
    let r = h
        .http
        .post(h.url("/admin/v1/tenants/acme/policy"))
        .bearer_auth(ADMIN)
        .body("tools:\n  - id: x\n    match: a\n    action: allow\n    prority: 5\n")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 422);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error"]["type"], "invalid_request_error");
    let d = &v["diagnostics"][0];
    assert_eq!(d["line"], 5, "{v}");
    assert!(d["column"].as_u64().unwrap() >= 1);
    assert!(d["message"].as_str().unwrap().contains("prority"), "{v}");
    // A tenant cannot set the platform default.
    let r = h
        .http
        .post(h.url("/admin/v1/tenants/acme/policy"))
        .bearer_auth(ADMIN)
        .body("default: allow\n")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 422);

    // Same source, same version: idempotent.
    let r = h
        .http
        .post(h.url("/admin/v1/tenants/acme/policy"))
        .bearer_auth(ADMIN)
        .body(TENANT)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["hash"], tv.as_str());
    assert_eq!(v["created"], false);

    // A tightened version, put but not active, changes nothing until activated.
    let strict = TENANT.replace(
        "id: weather\n    match: get_weather\n    action: allow",
        "id: weather\n    match: get_weather\n    action: deny",
    );
    let r = h
        .http
        .post(h.url("/admin/v1/tenants/acme/policy"))
        .bearer_auth(ADMIN)
        .body(strict.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let new_hash = r.json::<Value>().await.unwrap()["hash"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(
        guard(&h, &key, "get_weather", json!({})).await["decision"],
        "allow"
    );

    // Dry run shows what would change.
    let (s, v) = h
        .admin(
            Method::POST,
            "/admin/v1/tenants/acme/policy/dry-run",
            Some(json!({"hash": new_hash, "calls": [{"tool": "get_weather", "args": {}}, {"tool": "system.x", "args": {}}]})),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["changed"].as_array().unwrap().len(), 1);
    assert_eq!(v["changed"][0]["before"]["decision"], "allow");
    assert_eq!(v["changed"][0]["after"]["decision"], "deny");

    let (s, v) = h
        .admin(
            Method::POST,
            &format!("/admin/v1/tenants/acme/policy/{new_hash}/activate"),
            None,
        )
        .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["previous_active"], tv.as_str());
    assert_eq!(
        guard(&h, &key, "get_weather", json!({})).await["decision"],
        "deny",
        "activation applies at once"
    );

    let (_, list) = h
        .admin(Method::GET, "/admin/v1/tenants/acme/policy", None)
        .await;
    assert_eq!(list["active"], new_hash.as_str());
    assert_eq!(list["data"].as_array().unwrap().len(), 2);
    let (s, got) = h
        .admin(
            Method::GET,
            &format!("/admin/v1/tenants/acme/policy/{tv}"),
            None,
        )
        .await;
    assert_eq!(s, 200);
    assert_eq!(got["source"], TENANT);
    let (s, _) = h
        .admin(
            Method::POST,
            "/admin/v1/tenants/acme/policy/0000/activate",
            None,
        )
        .await;
    assert_eq!(s, 404);
    let (s, _) = h
        .admin(Method::GET, "/admin/v1/tenants/nope/policy", None)
        .await;
    assert_eq!(s, 404);

    // Every change is a receipt naming old and new versions.
    let (_, v) = h
        .admin(
            Method::GET,
            "/admin/v1/receipts?tenant_id=acme&kind=admin_change&limit=100",
            None,
        )
        .await;
    let activation = v["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| {
            r["admin"]["change"]["op"] == "activate_policy"
                && r["admin"]["change"]["new"] == new_hash.as_str()
        })
        .unwrap()
        .clone();
    assert_eq!(activation["admin"]["change"]["old"], tv.as_str());
    let (_, v) = h
        .admin(
            Method::GET,
            "/admin/v1/receipts?tenant_id=@platform&limit=100",
            None,
        )
        .await;
    assert!(
        v["data"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["admin"]["change"]["new"] == pv.as_str())
    );
}
