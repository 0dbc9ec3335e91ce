//! `palisade demo`: the whole gateway, offline. Starts the mock Anthropic upstream and
//! the real gateway (embedded SQLite in a temporary directory), creates the three SaaS
//! tenants of the free/pro/enterprise example through the admin API, and sends requests
//! through the real HTTP path the way an SDK does, narrating what happened.

use anyhow::{Context, Result, bail};
use palisade_mock::{MockConfig, MockServer};
use palisade_server::RunningServer;
use palisade_server::config::Config;
use serde_json::{Value, json};

const PLATFORM_KEY: &str = "sk-ant-demo-platform-key-0000";
/// Seed 002's SaaS policy, as the platform policy of the demo.
const SAAS_POLICY: &str = include_str!("../../../examples/saas/policy.yaml");

struct Demo {
    http: reqwest::Client,
    gateway: String,
    admin: String,
    mock: MockServer,
}

fn section(title: &str) {
    println!(
        "\n== {title} {}",
        "=".repeat(70usize.saturating_sub(title.len()))
    );
}

fn mask(s: &str) -> String {
    if s.len() <= 12 {
        return "****".into();
    }
    format!("{}…{}", &s[..8], &s[s.len() - 4..])
}

impl Demo {
    async fn admin_post(&self, path: &str, body: Value) -> Result<Value> {
        let r = self
            .http
            .post(format!("{}{path}", self.gateway))
            .bearer_auth(&self.admin)
            .json(&body)
            .send()
            .await?;
        let status = r.status();
        let v: Value = r.json().await?;
        if !status.is_success() {
            bail!("admin {path} answered {status}: {v}");
        }
        Ok(v)
    }

    async fn admin_put_policy(&self, path: &str, yaml: &str) -> Result<String> {
        let r = self
            .http
            .post(format!("{}{path}", self.gateway))
            .bearer_auth(&self.admin)
            .header("content-type", "application/yaml")
            .body(yaml.to_string())
            .send()
            .await?;
        let status = r.status();
        let v: Value = r.json().await?;
        if !status.is_success() {
            bail!("admin {path} answered {status}: {v}");
        }
        Ok(v["hash"].as_str().unwrap_or_default().to_string())
    }

    async fn message(&self, key: &str, body: &Value) -> Result<(u16, Value, Option<String>)> {
        let r = self
            .http
            .post(format!("{}/v1/messages", self.gateway))
            .header("x-api-key", key)
            .header("anthropic-version", "2023-06-01")
            .json(body)
            .send()
            .await?;
        let status = r.status().as_u16();
        let receipt = r
            .headers()
            .get("x-palisade-receipt-id")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let v: Value = r.json().await?;
        Ok((status, v, receipt))
    }

    fn last_upstream(&self) -> Option<palisade_mock::RecordedRequest> {
        self.mock.requests().pop()
    }

    fn show_upstream(&self) {
        match self.last_upstream() {
            Some(req) => {
                println!(
                    "  reached upstream: POST {} with x-api-key {} (the platform key; the client's Palisade key stayed in the gateway)",
                    req.path,
                    req.api_key().map(mask).unwrap_or_else(|| "(none)".into())
                );
            }
            None => println!("  reached upstream: nothing"),
        }
    }
}

fn text_of(v: &Value) -> String {
    v.get("content")
        .and_then(Value::as_array)
        .map(|blocks| {
            blocks
                .iter()
                .filter_map(|b| match b.get("type").and_then(Value::as_str) {
                    Some("text") => b.get("text").and_then(Value::as_str).map(str::to_string),
                    Some("tool_use") => Some(format!(
                        "[tool_use {} {}]",
                        b.get("name").and_then(Value::as_str).unwrap_or("?"),
                        b.get("input").cloned().unwrap_or(Value::Null)
                    )),
                    _ => None,
                })
                .collect::<Vec<_>>()
                .join(" ")
        })
        .unwrap_or_default()
}

pub async fn run() -> Result<u8> {
    let dir = tempfile::tempdir().context("creating a temporary directory")?;
    let mock = MockServer::start(MockConfig {
        required_api_key: Some(PLATFORM_KEY.into()),
        ..MockConfig::default()
    })
    .await
    .context("starting the mock upstream")?;
    let admin = "demo-admin-token-0123456789abcdef".to_string();
    let mut config = Config {
        listen: "127.0.0.1:0".into(),
        ..Config::default()
    };
    config.storage.url = format!("sqlite://{}", dir.path().join("palisade.db").display());
    config.anthropic.base_url = mock.base_url();
    config.anthropic.api_key = Some(PLATFORM_KEY.into());
    config.admin.token = Some(admin.clone());
    config.retry.max_retries = 0;
    // A throwaway master key: the demo's database lives only as long as the demo.
    let mut master = [0u8; 32];
    aws_lc_rs::rand::SecureRandom::fill(&aws_lc_rs::rand::SystemRandom::new(), &mut master)
        .map_err(|_| anyhow::anyhow!("random number generator failed"))?;
    config.secrets.master_key = Some(hex_encode(&master));
    let server = RunningServer::start(config)
        .await
        .map_err(anyhow::Error::msg)?;
    let demo = Demo {
        http: reqwest::Client::new(),
        gateway: server.base_url(),
        admin,
        mock,
    };
    println!(
        "Palisade demo — gateway at {}, mock Anthropic upstream at {}",
        demo.gateway,
        demo.mock.base_url()
    );
    println!(
        "Storage: embedded SQLite in a temporary directory. Everything below goes over real HTTP."
    );

    section("1. Platform policy, tenants and keys (admin API)");
    let policy = demo
        .admin_put_policy("/admin/v1/platform/policy?activate=true", SAAS_POLICY)
        .await?;
    println!(
        "  platform policy examples/saas/policy.yaml (seed 002: plans x roles, default deny) active as version {}…",
        &policy[..16.min(policy.len())]
    );
    let mut keys = Vec::new();
    for (id, name, plan, role) in [
        ("acme", "Acme Notes", "free", "editor"),
        ("globex", "Globex CRM", "pro", "editor"),
        ("initech", "Initech Ops", "enterprise", "admin"),
    ] {
        demo.admin_post(
            "/admin/v1/tenants",
            json!({"id": id, "name": name, "plan": plan}),
        )
        .await?;
        let key = demo
            .admin_post(
                &format!("/admin/v1/tenants/{id}/keys"),
                json!({"name": format!("{id} backend"), "role": role, "user_id": format!("{id}-user-1")}),
            )
            .await?;
        let secret = key["secret"].as_str().unwrap_or_default().to_string();
        let kid = key["id"].as_str().unwrap_or_default().to_string();
        println!(
            "  tenant {id:<8} plan {plan:<10} key {kid} (secret {} shown once, stored only as a hash)",
            mask(&secret)
        );
        keys.push((id, secret, kid));
    }
    let (acme, globex, initech) = (&keys[0], &keys[1], &keys[2]);

    section("2. A plain call, as the Anthropic SDK makes it (tenant acme)");
    let body = json!({
        "model": "claude-sonnet-4-5",
        "max_tokens": 256,
        "system": "You are a helpful notes assistant.",
        "messages": [{"role": "user", "content": "Summarise my meeting notes, please."}]
    });
    println!("  client sent: POST /v1/messages model=claude-sonnet-4-5 with its Palisade key");
    let (status, v, receipt) = demo.message(&acme.1, &body).await?;
    demo.show_upstream();
    println!("  came back: {status} {:?}", text_of(&v));
    println!("  receipt: {}", receipt.unwrap_or_default());

    section("3. A streamed call (tenant globex)");
    let r = demo
        .http
        .post(format!("{}/v1/messages", demo.gateway))
        .header("x-api-key", &globex.1)
        .json(&json!({
            "model": "claude-haiku-4-5",
            "max_tokens": 256,
            "stream": true,
            "messages": [{"role": "user", "content": "[[mock:reply=Streaming through Palisade, event by event.]] hi"}]
        }))
        .send()
        .await?;
    let receipt = r
        .headers()
        .get("x-palisade-receipt-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let text = r.text().await?;
    let events: Vec<&str> = text
        .lines()
        .filter_map(|l| l.strip_prefix("event: "))
        .collect();
    let mut assembled = String::new();
    for line in text.lines().filter_map(|l| l.strip_prefix("data: ")) {
        if let Ok(v) = serde_json::from_str::<Value>(line)
            && let Some(t) = v.pointer("/delta/text").and_then(Value::as_str)
        {
            assembled.push_str(t);
        }
    }
    demo.show_upstream();
    println!("  events relayed: {}", events.join(", "));
    println!("  assembled text: {assembled:?}");
    println!(
        "  receipt: {} (committed before message_stop was released)",
        receipt.unwrap_or_default()
    );

    section("4. Tool calls under policy");
    let tools = json!([
        {"name": "createRecord", "description": "Create a CRM record", "input_schema": {"type": "object"}},
        {"name": "adminPanel", "description": "Open the admin panel", "input_schema": {"type": "object"}},
        {"name": "listRecords", "description": "List records", "input_schema": {"type": "object"}}
    ]);
    let (status, v, _) = demo
        .message(
            &globex.1,
            &json!({
                "model": "claude-sonnet-4-5",
                "max_tokens": 256,
                "tools": tools,
                "messages": [{"role": "user", "content": "[[mock:tool_use=createRecord:{\"collection\":\"contacts\",\"data\":{\"name\":\"Ada\"}}]] add Ada"}]
            }),
        )
        .await?;
    let sent = demo.last_upstream().map(|r| r.body).unwrap_or(Value::Null);
    let offered: Vec<&str> = sent["tools"]
        .as_array()
        .map(|a| a.iter().filter_map(|t| t["name"].as_str()).collect())
        .unwrap_or_default();
    println!(
        "  globex (pro, editor) offered createRecord, adminPanel, listRecords; upstream saw only {offered:?}"
    );
    println!(
        "  model called createRecord: {status} stop_reason={} {}",
        v["stop_reason"],
        text_of(&v)
    );
    let (status, v, _) = demo
        .message(
            &globex.1,
            &json!({
                "model": "claude-sonnet-4-5",
                "max_tokens": 256,
                "messages": [{"role": "user", "content": "[[mock:tool_use=adminPanel:{}]] open the admin panel"}]
            }),
        )
        .await?;
    println!(
        "  model called adminPanel anyway: {status} stop_reason={} {}",
        v["stop_reason"],
        text_of(&v)
    );
    for (who, key, tool, args) in [
        (
            "initech (enterprise, admin)",
            &initech.1,
            "deleteRecord",
            json!({"collection": "contacts", "id": 7}),
        ),
        (
            "initech (enterprise, admin)",
            &initech.1,
            "adminPanel",
            json!({}),
        ),
        (
            "acme (free, editor)",
            &acme.1,
            "createRecord",
            json!({"collection": "notes", "data": {}}),
        ),
    ] {
        let v: Value = demo
            .http
            .post(format!("{}/v1/guard/tool", demo.gateway))
            .header("x-api-key", key.as_str())
            .json(&json!({"tool": tool, "args": args}))
            .send()
            .await?
            .json()
            .await?;
        println!(
            "  POST /v1/guard/tool {who} {tool}: {} (rule {}, {})",
            v["decision"].as_str().unwrap_or("?"),
            v["rule"].as_str().unwrap_or("-"),
            v["reason"].as_str().unwrap_or("")
        );
    }

    section("5. Content guardrails (tenant globex's own rules, under the platform's)");
    demo.admin_put_policy(
        "/admin/v1/tenants/globex/policy?activate=true",
        "content:\n  input: { email: pseudonymize, us_ssn: redact, secrets: block, injection: block }\n  output: { email: redact }\n",
    )
    .await?;
    let prompt = "Draft a reply to ada@example.org about her SSN 123-45-6789.";
    let (status, v, _) = demo.message(&globex.1, &json!({"model": "claude-sonnet-4-5", "max_tokens": 256, "messages": [{"role": "user", "content": prompt}]})).await?;
    let seen = demo
        .last_upstream()
        .and_then(|r| {
            r.body["messages"][0]["content"]
                .as_str()
                .map(str::to_string)
        })
        .unwrap_or_default();
    println!("  client sent:        {prompt:?}");
    println!("  upstream saw:       {seen:?}");
    println!(
        "  client got back:    {status} {:?} (placeholders restored)",
        text_of(&v)
    );
    let before = demo.mock.requests().len();
    let (status, v, _) = demo
        .message(&globex.1, &json!({"model": "claude-sonnet-4-5", "max_tokens": 64, "messages": [{"role": "user", "content": "use key AKIAIOSFODNN7EXAMPLE to deploy"}]}))
        .await?;
    println!(
        "  a prompt with an AWS key: {status} {} — upstream calls made: {}",
        v["error"]["message"].as_str().unwrap_or(""),
        demo.mock.requests().len() - before
    );
    let r = demo
        .http
        .post(format!("{}/v1/messages", demo.gateway))
        .header("x-api-key", &initech.1)
        .json(&json!({"model": "claude-sonnet-4-5", "max_tokens": 64, "stream": true, "messages": [{"role": "user", "content": "[[mock:chunk=3]] [[mock:reply=Write to carol@example.com for details.]] hi"}]}))
        .send()
        .await?;
    let sse = r.text().await?;
    let mut streamed = String::new();
    for line in sse.lines().filter_map(|l| l.strip_prefix("data: ")) {
        if let Ok(v) = serde_json::from_str::<Value>(line)
            && let Some(t) = v.pointer("/delta/text").and_then(Value::as_str)
        {
            streamed.push_str(t);
        }
    }
    println!(
        "  initech (platform rules only: output email redact): the model streamed an email in 3-character deltas; client got {streamed:?}"
    );

    section("6. count_tokens, and an upstream that is overloaded");
    let r = demo
        .http
        .post(format!("{}/v1/messages/count_tokens", demo.gateway))
        .header("x-api-key", &acme.1)
        .json(&json!({"model": "claude-sonnet-4-5", "messages": [{"role": "user", "content": "How many tokens is this?"}]}))
        .send()
        .await?;
    println!(
        "  count_tokens: {} {}",
        r.status().as_u16(),
        r.text().await?
    );
    let (status, v, _) = demo
        .message(
            &acme.1,
            &json!({"model": "claude-sonnet-4-5", "max_tokens": 16, "messages": [{"role": "user", "content": "[[mock:error=529]] hi"}]}),
        )
        .await?;
    println!("  overloaded upstream: {status} {}", v["error"]);

    section("7. Refusals: unknown fields, revoked keys, other tenants' receipts");
    let (status, v, _) = demo
        .message(
            &acme.1,
            &json!({"model": "claude-sonnet-4-5", "max_tokens": 16, "safety_settings": [{"category": "HARM_CATEGORY_HATE_SPEECH", "threshold": "BLOCK_LOW_AND_ABOVE"}], "messages": [{"role": "user", "content": "hi"}]}),
        )
        .await?;
    println!(
        "  seed-style safety_settings: {status} {}",
        v["error"]["message"].as_str().unwrap_or("")
    );
    let globex_receipts: Value = demo
        .http
        .get(format!("{}/v1/receipts?limit=1", demo.gateway))
        .header("x-api-key", &globex.1)
        .send()
        .await?
        .json()
        .await?;
    let foreign = globex_receipts["data"][0]["id"]
        .as_str()
        .unwrap_or("none")
        .to_string();
    let r = demo
        .http
        .get(format!("{}/v1/receipts/{foreign}", demo.gateway))
        .header("x-api-key", &acme.1)
        .send()
        .await?;
    println!(
        "  acme asks for globex's receipt {foreign}: {} (same answer as a missing id)",
        r.status().as_u16()
    );
    demo.http
        .post(format!(
            "{}/admin/v1/tenants/acme/keys/{}/revoke",
            demo.gateway, acme.2
        ))
        .bearer_auth(&demo.admin)
        .send()
        .await?
        .error_for_status()?;
    let before = demo.mock.requests().len();
    let (status, v, _) = demo.message(&acme.1, &body).await?;
    println!(
        "  acme's key after revocation: {status} {} — upstream calls made: {}",
        v["error"]["message"].as_str().unwrap_or(""),
        demo.mock.requests().len() - before
    );

    section("8. Receipts (each tenant sees only its own)");
    for (id, secret, _) in [globex, initech] {
        let v: Value = demo
            .http
            .get(format!("{}/v1/receipts?limit=20", demo.gateway))
            .header("x-api-key", secret)
            .send()
            .await?
            .json()
            .await?;
        println!("  {id}:");
        for r in v["data"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .iter()
            .rev()
        {
            println!(
                "    #{:<2} {:<13} {:<14} model={:<18} upstream={:<4} tokens in/out={}/{} prompt_hmac={}…",
                r["seq"],
                r["kind"].as_str().unwrap_or(""),
                r["decision"].as_str().unwrap_or(""),
                r["model"].as_str().unwrap_or("-"),
                r["upstream_status"],
                r["input_tokens"],
                r["output_tokens"],
                r["prompt_hmac"]
                    .as_str()
                    .map(|s| &s[..12.min(s.len())])
                    .unwrap_or("-"),
            );
        }
    }

    sentinel_demo(&demo, globex).await?;
    limits_and_approvals_demo(&demo, initech).await?;
    moderation_demo(&demo).await?;

    section("12. Verifying every tenant's receipt chain");
    let store = server.state.store.clone();
    let code = crate::audit_verify(&store, None).await?;
    server.shutdown().await;
    demo.mock.shutdown().await;
    if code != 0 {
        bail!("chain verification failed");
    }
    println!("\nDone. Run `palisade serve` with ANTHROPIC_API_KEY to put this in front of Claude.");
    Ok(0)
}

/// Moderation (issue 9): the same model answer is blocked for a finance tenant whose policy
/// forbids investment advice at BLOCK_LOW_AND_ABOVE and released for a games tenant. The
/// mock judge scores the answer from a `[[mock:judge=…]]` marker the mock model appends.
async fn moderation_demo(demo: &Demo) -> Result<()> {
    section("11. Moderation: per-tenant harm thresholds (finance vs games)");
    let finance = r#"moderation:
  provider: judge
  policy_text: "No investment advice: never recommend buying or selling securities."
  output: { policy: BLOCK_LOW_AND_ABOVE, violence: BLOCK_MEDIUM_AND_ABOVE }
  on_failure: closed
"#;
    let games = r#"moderation:
  provider: judge
  output: { policy: BLOCK_NONE, violence: BLOCK_ONLY_HIGH }
  on_failure: open
"#;
    let mut keys = Vec::new();
    for (id, name, policy) in [
        ("finwise", "FinWise", finance),
        ("pixelplay", "PixelPlay", games),
    ] {
        demo.admin_post(
            "/admin/v1/tenants",
            json!({"id": id, "name": name, "plan": "pro"}),
        )
        .await?;
        let key = demo
            .admin_post(
                &format!("/admin/v1/tenants/{id}/keys"),
                json!({"name": format!("{id} backend"), "role": "editor", "user_id": format!("{id}-user-1")}),
            )
            .await?;
        demo.admin_put_policy(
            &format!("/admin/v1/tenants/{id}/policy?activate=true"),
            policy,
        )
        .await?;
        keys.push((id, key["secret"].as_str().unwrap_or_default().to_string()));
    }
    println!(
        "  finwise output thresholds: policy BLOCK_LOW_AND_ABOVE (\"No investment advice\"), violence BLOCK_MEDIUM_AND_ABOVE"
    );
    println!("  pixelplay output thresholds: policy BLOCK_NONE, violence BLOCK_ONLY_HIGH");
    println!("  the judge is claude-haiku-4-5 through the upstream (here: the mock in judge mode)");
    let body = json!({
        "model": "claude-sonnet-4-5",
        "max_tokens": 256,
        "messages": [{"role": "user", "content": "Should I put my savings into ACME stock? [[mock:reply=Yes, buy ACME now, it will double.]] [[mock:judge_reply=policy:0.4]]"}]
    });
    for (id, key) in &keys {
        let (status, v, receipt) = demo.message(key, &body).await?;
        let shown = if status == 200 {
            // The mock model's answer carries the judge marker; the client would not see one.
            format!(
                "{:?}",
                text_of(&v).split(" [[mock:").next().unwrap_or_default()
            )
        } else {
            format!(
                "{} ({})",
                v["error"]["message"].as_str().unwrap_or_default(),
                v["error"]["palisade_reason"].as_str().unwrap_or_default()
            )
        };
        println!("  {id:<9} same answer, judge scored policy 0.40 -> {status} {shown}");
        let rid = receipt.or_else(|| v["error"]["receipt_id"].as_str().map(str::to_string));
        if let Some(rid) = rid {
            let r = demo
                .http
                .get(format!("{}/v1/receipts/{rid}", demo.gateway))
                .header("x-api-key", key)
                .send()
                .await?
                .json::<Value>()
                .await?;
            let m = &r["details"]["moderation"]["output"];
            println!(
                "            receipt …{}: verdict {} category {} score {} threshold {} judge {} µs, {}+{} judge tokens",
                &rid[rid.len().saturating_sub(12)..],
                m["verdict"].as_str().unwrap_or("-"),
                m["category"].as_str().unwrap_or("-"),
                m["score"].as_str().unwrap_or("-"),
                m["threshold"].as_str().unwrap_or("-"),
                m["latency_us"],
                m["judge_input_tokens"],
                m["judge_output_tokens"],
            );
        }
    }
    Ok(())
}

/// Sentinel: a burst of refused tool calls for one tenant raises a deny-rate alert, which
/// that tenant (and only it) sees on `GET /v1/alerts`.
async fn sentinel_demo(demo: &Demo, tenant: &(&str, String, String)) -> Result<()> {
    section("9. Sentinel: a burst of refused calls raises an alert");
    let (id, secret, _) = tenant;
    for i in 0..25 {
        demo.http
            .post(format!("{}/v1/guard/tool", demo.gateway))
            .header("x-api-key", secret)
            .json(&json!({"tool": format!("drop_database_{i}"), "args": {}}))
            .send()
            .await?;
    }
    println!("  {id} asked /v1/guard/tool for 25 tools no policy allows (default deny)");
    let mut alerts = Vec::new();
    for _ in 0..100 {
        let v: Value = demo
            .http
            .get(format!("{}/v1/alerts?limit=10", demo.gateway))
            .header("x-api-key", secret)
            .send()
            .await?
            .json()
            .await?;
        alerts = v["data"].as_array().cloned().unwrap_or_default();
        if !alerts.is_empty() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    if alerts.is_empty() {
        println!("  no alert yet (Sentinel runs in the background)");
    }
    for a in &alerts {
        println!(
            "  GET /v1/alerts → {} [{}] {} ({}) receipt {}",
            a["id"].as_str().unwrap_or(""),
            a["severity"].as_str().unwrap_or(""),
            a["message"].as_str().unwrap_or(""),
            a["detector"].as_str().unwrap_or(""),
            a["receipt_id"].as_str().unwrap_or("-"),
        );
    }
    println!("  the alert is also an `alert` receipt in {id}'s chain; other tenants see no alerts");
    Ok(())
}

/// A tool call that needs a human: withheld with an approval id, approved by another
/// person of the same tenant, then released exactly once. Then a rate limit biting.
async fn limits_and_approvals_demo(demo: &Demo, tenant: &(&str, String, String)) -> Result<()> {
    section("10. Human approval of a tool call, and a rate limit");
    let (id, secret, _) = tenant;
    let approver = demo
        .admin_post(
            &format!("/admin/v1/tenants/{id}/keys"),
            json!({"name": "ops on call", "role": "approver", "user_id": format!("{id}-ops")}),
        )
        .await?;
    let approver = approver["secret"].as_str().unwrap_or_default().to_string();
    let ask = json!({
        "model": "claude-sonnet-4-5",
        "max_tokens": 256,
        "messages": [{"role": "user", "content": "[[mock:tool_use=deleteRecord:{\"collection\":\"contacts\",\"id\":7}]] delete contact 7"}]
    });
    let (status, v, _) = demo.message(secret, &ask).await?;
    let said = text_of(&v);
    println!("  {id} (enterprise admin): the model calls deleteRecord → {status}, withheld:");
    println!("    {said:?}");
    let Some(at) = said.find("apr_") else {
        println!("  (no approval id in the answer)");
        return Ok(());
    };
    let approval: String = said[at..]
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
        .collect();
    // The agent waits on the approval while a person decides.
    let waiter = {
        let (http, url, key) = (
            demo.http.clone(),
            format!("{}/v1/approvals/{approval}?wait=10s", demo.gateway),
            secret.clone(),
        );
        tokio::spawn(async move {
            let r = http.get(url).header("x-api-key", key).send().await?;
            r.json::<Value>().await
        })
    };
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    let r = demo
        .http
        .post(format!("{}/v1/approvals/{approval}/approve", demo.gateway))
        .header("x-api-key", &approver)
        .json(&json!({"reason": "customer asked for it, ticket 4711"}))
        .send()
        .await?;
    println!(
        "  {id}-ops (role approver) approves {approval}: {}",
        r.status().as_u16()
    );
    let seen = waiter.await.context("approval waiter")??;
    let token = seen["approval_token"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    println!(
        "  the agent's GET /v1/approvals/{approval}?wait=10s returns: status {} with a single-use token",
        seen["status"]
    );
    for attempt in ["with the token", "the same token again"] {
        let r = demo
            .http
            .post(format!("{}/v1/messages", demo.gateway))
            .header("x-api-key", secret.as_str())
            .header("x-palisade-approval-token", &token)
            .json(&ask)
            .send()
            .await?;
        let status = r.status().as_u16();
        let v: Value = r.json().await?;
        println!("  repeated {attempt}: {status} {:?}", text_of(&v));
    }

    demo.admin_put_policy(
        &format!("/admin/v1/tenants/{id}/policy?activate=true"),
        "limits:\n  - id: user-hourly\n    scope: user\n    requests: 3\n    per: hour\n",
    )
    .await?;
    println!("  {id} adds a limit of its own: 3 requests per user per hour");
    for i in 1..=4 {
        let r = demo
            .http
            .post(format!("{}/v1/messages", demo.gateway))
            .header("x-api-key", secret.as_str())
            .json(&json!({"model": "claude-haiku-4-5", "max_tokens": 32, "messages": [{"role": "user", "content": "ping"}]}))
            .send()
            .await?;
        let status = r.status().as_u16();
        let h = |n: &str| {
            r.headers()
                .get(n)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("-")
                .to_string()
        };
        let (remaining, retry) = (
            h("anthropic-ratelimit-requests-remaining"),
            h("retry-after"),
        );
        let v: Value = r.json().await?;
        match status {
            200 => println!("  call {i}: 200, requests remaining {remaining}"),
            _ => println!(
                "  call {i}: {status} {} (retry-after {retry}s): {}",
                v["error"]["type"].as_str().unwrap_or(""),
                v["error"]["message"].as_str().unwrap_or("")
            ),
        }
    }
    Ok(())
}

fn hex_encode(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
