//! Sentinel in the gateway: alerts from real traffic, stored, recorded as receipts,
//! tenant-scoped on `/v1/alerts`, delivered to a signed webhook; `/metrics` bounded.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::Harness;
use palisade_audit::{Finding, Receipt, ReceiptKind, format_created_at};
use palisade_server::metrics::{Metrics, MetricsConfig};
use serde_json::{Value, json};

async fn start() -> Harness {
    Harness::start_with(|c| {
        c.sentinel.tick_ms = 100;
        c.sentinel.webhook_base_backoff_ms = 10;
        c.sentinel.detection.rules.deny_rate_min_requests = 10;
    })
    .await
}

use common::webhook_receiver as receiver;

async fn alerts(h: &Harness, key: &str) -> Vec<Value> {
    let (s, v) = h.get("/v1/alerts?limit=100", key).await;
    assert_eq!(s, 200, "{v}");
    v["data"].as_array().unwrap().clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deny_burst_alerts_only_its_tenant_with_receipt_webhook_and_ack() {
    let mut h = start().await;
    let a = h.tenant("acme").await;
    let b = h.tenant("globex").await;
    let (a_admin, _) = h
        .key("acme", json!({"role": "tenant_admin", "user_id": "boss"}))
        .await;
    let (b_admin, _) = h.key("globex", json!({"role": "tenant_admin"})).await;
    let (url, seen) = receiver().await;
    let (s, v) = h
        .admin(
            reqwest::Method::PATCH,
            "/admin/v1/tenants/acme",
            Some(json!({"attributes": {"alert_webhook_url": url}})),
        )
        .await;
    assert_eq!(s, 200, "{v}");

    // Normal traffic for globex, a burst of denied tool calls for acme (default deny).
    for _ in 0..3 {
        let r = h
            .post("/v1/guard/scan", &b, &json!({"text": "hello"}))
            .await;
        assert_eq!(r.status(), 200);
    }
    for i in 0..15 {
        let r = h
            .post(
                "/v1/guard/tool",
                &a,
                &json!({"tool": format!("shell{i}"), "args": {}}),
            )
            .await;
        assert!(r.status().is_success(), "{}", r.status());
    }

    let mut found = Vec::new();
    for _ in 0..200 {
        found = alerts(&h, &a).await;
        let retried = seen
            .lock()
            .unwrap()
            .iter()
            .any(|(h, _)| h["x-palisade-attempt"] == "2");
        if !found.is_empty() && retried {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let alert = found
        .iter()
        .find(|x| x["detector"] == "deny_rate_rule")
        .unwrap_or_else(|| panic!("no deny-rate alert: {found:?}"))
        .clone();
    assert_eq!(alert["tenant_id"], "acme");
    assert_eq!(alert["signal"], "deny_rate");
    let id = alert["id"].as_str().unwrap().to_string();

    // Other tenant: sees none, and acme's id is a 404 exactly like a missing one.
    assert!(alerts(&h, &b).await.is_empty());
    let (s, v_other) = h.get(&format!("/v1/alerts/{id}"), &b).await;
    let (s2, v_missing) = h.get("/v1/alerts/alr_missing", &b).await;
    assert_eq!((s, s2), (404, 404));
    assert_eq!(v_other["error"]["type"], v_missing["error"]["type"]);
    let r = h
        .http
        .post(h.url(&format!("/v1/alerts/{id}/ack")))
        .header("x-api-key", &b_admin)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);

    // Recorded as an alert receipt in acme's chain.
    let receipts = h.receipts(&a).await;
    let rec = receipts
        .iter()
        .find(|r| r["kind"] == "alert" && r["details"]["alert_id"] == id.as_str())
        .unwrap_or_else(|| panic!("no alert receipt"));
    assert_eq!(rec["decision"], "alert");
    assert!(h.receipts(&b).await.iter().all(|r| r["kind"] != "alert"));

    // Webhook: retried after the 503, signed with the tenant's secret.
    let (s, sec) = h.get("/v1/alerts/webhook-secret", &a_admin).await;
    assert_eq!(s, 200, "{sec}");
    let secret = sec["secret"].as_str().unwrap().to_string();
    {
        let seen = seen.lock().unwrap();
        assert!(seen.len() >= 2, "webhook not retried: {}", seen.len());
        let (headers, body) = seen
            .iter()
            .find(|(h, _)| h["x-palisade-attempt"] == "2")
            .expect("the failed delivery was retried");
        let ts: i64 = headers["x-palisade-timestamp"]
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        let sig = headers["x-palisade-signature"].to_str().unwrap();
        assert_eq!(
            sig,
            palisade_server::webhooks::sign(secret.as_bytes(), ts, body)
        );
        let v: Value = serde_json::from_slice(body).unwrap();
        assert_eq!(v["alert"]["tenant_id"], "acme");
    }

    // Acknowledge (tenant admin); a member key may read but not acknowledge.
    let r = h
        .http
        .post(h.url(&format!("/v1/alerts/{id}/ack")))
        .header("x-api-key", &a)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    let r = h
        .http
        .post(h.url(&format!("/v1/alerts/{id}/ack")))
        .header("x-api-key", &a_admin)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    assert!(v["acked_at"].is_string());
    let (s, v) = h.get("/v1/alerts?unacked=true&limit=100", &a).await;
    assert_eq!(s, 200);
    assert!(
        v["data"]
            .as_array()
            .unwrap()
            .iter()
            .all(|x| x["id"] != id.as_str())
    );

    // Metrics saw the traffic and the alert.
    let m = h.http.get(h.url("/metrics")).send().await.unwrap();
    assert_eq!(m.status(), 200);
    let text = m.text().await.unwrap();
    assert!(
        text.contains("palisade_alerts_total{tenant=\"acme\""),
        "{text}"
    );
    assert!(!text.contains("palisade_alerts_total{tenant=\"globex\""));
    assert!(text.contains(
        "palisade_decisions_total{tenant=\"acme\",kind=\"tool_decision\",decision=\"deny\"}"
    ));
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alert_pagination_uses_cursors() {
    let mut h = start().await;
    let a = h.tenant("acme").await;
    let store = h.state().store.clone();
    for i in 0..5 {
        store
            .put_alert(&palisade_store::AlertRecord {
                id: format!("alr_{i}"),
                tenant_id: "acme".into(),
                created_at: 1000 + i,
                dedup_key: "k".into(),
                signal: "spend".into(),
                detector: "ewma".into(),
                severity: "warning".into(),
                subject: "tenant".into(),
                message: "m".into(),
                details: Default::default(),
                receipt_id: None,
                acked_at: None,
                acked_by: None,
            })
            .await
            .unwrap();
    }
    let mut ids = Vec::new();
    let mut path = "/v1/alerts?limit=2".to_string();
    loop {
        let (s, v) = h.get(&path, &a).await;
        assert_eq!(s, 200, "{v}");
        for x in v["data"].as_array().unwrap() {
            ids.push(x["id"].as_str().unwrap().to_string());
        }
        match v["next_cursor"].as_str() {
            Some(c) => path = format!("/v1/alerts?limit=2&cursor={c}"),
            None => break,
        }
    }
    assert_eq!(ids, ["alr_4", "alr_3", "alr_2", "alr_1", "alr_0"]);
    let (s, _) = h.get("/v1/alerts?cursor=garbage", &a).await;
    assert_eq!(s, 400);
    h.stop().await;
}

fn receipt(tenant: &str, user: &str, tool: &str) -> Receipt {
    let mut r = Receipt::new(
        uuid::Uuid::now_v7().hyphenated().to_string(),
        tenant,
        ReceiptKind::Message,
        format_created_at(1_750_000_000_000),
        "allow",
    );
    r.user_id = Some(user.into());
    r.input_tokens = Some(10);
    r.output_tokens = Some(5);
    r.latency_ms = Some(120);
    r.upstream_status = Some(200);
    r.findings.push(Finding {
        entity: "input.email".into(),
        count: 1,
        action: "redact".into(),
    });
    r.tools.push(palisade_audit::ToolDecision {
        tool: tool.into(),
        decision: "allow".into(),
        rule_id: None,
        direction: palisade_audit::ToolDirection::Called,
    });
    r
}

fn series(text: &str) -> usize {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .count()
}

#[test]
fn metrics_cardinality_stays_bounded_with_10000_tenants() {
    let cfg = MetricsConfig {
        max_tenants: 100,
        ..MetricsConfig::default()
    };
    let m = Metrics::new(cfg.clone());
    for i in 0..100 {
        m.record(&receipt(&format!("t{i}"), "u", "tool"));
    }
    let at_cap = series(&m.render());
    for i in 0..10_000 {
        m.record(&receipt(
            &format!("t{i}"),
            &format!("u{i}"),
            &format!("tool{i}"),
        ));
        m.alert(&format!("t{i}"), "deny_rate", "warning");
    }
    let text = m.render();
    let after = series(&text);
    println!("sample lines: {at_cap} with 100 tenants, {after} after 10,000 tenants");
    // 100 own tenants + "other", each with a fixed set of series (one more for alerts).
    assert!(after <= (at_cap / 100 + 2) * 101, "{after} series");
    for i in 10_000..20_000 {
        m.record(&receipt(&format!("t{i}"), "u", "tool"));
        m.alert(&format!("t{i}"), "deny_rate", "warning");
    }
    assert_eq!(series(&m.render()), after, "series grew past the cap");
    assert!(text.contains("tenant=\"other\""));
    assert!(text.contains("user=\"all\""));
    assert!(!text.contains("u9999"));

    // User and tool labels on: capped too.
    let m = Metrics::new(MetricsConfig {
        max_tenants: 100,
        user_labels: true,
        tool_labels: true,
        max_users: 50,
        max_tools: 20,
        ..MetricsConfig::default()
    });
    for i in 0..10_000 {
        m.record(&receipt(
            &format!("t{i}"),
            &format!("u{i}"),
            &format!("tool{i}"),
        ));
    }
    let n = series(&m.render());
    for i in 10_000..20_000 {
        m.record(&receipt(
            &format!("t{i}"),
            &format!("u{i}"),
            &format!("tool{i}"),
        ));
    }
    let n2 = series(&m.render());
    println!("sample lines with user and tool labels: {n} after 10,000 tenants, {n2} after 20,000");
    assert_eq!(n, n2, "series grew past the caps");
}

/// Every metric the Grafana dashboard queries is one `/metrics` exposes.
#[test]
fn dashboard_queries_only_exposed_metrics() {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../dashboards/palisade.json"
    );
    let dash: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let m = Metrics::new(MetricsConfig::default());
    let mut priced = receipt("t", "u", "tool");
    priced.details = json!({"cost_micro_usd": 1234});
    m.record(&priced);
    for kind in [ReceiptKind::RateLimit, ReceiptKind::Approval] {
        let mut r = receipt("t", "u", "tool");
        r.kind = kind;
        m.record(&r);
    }
    m.alert("t", "deny_rate", "warning");
    m.dropped_observation();
    let text = m.render();
    let exposed: Vec<&str> = text
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split(' ').next())
        .collect();
    let mut checked = 0;
    for p in dash["panels"].as_array().unwrap() {
        for t in p["targets"].as_array().unwrap() {
            let expr = t["expr"].as_str().unwrap();
            for word in expr.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')) {
                if let Some(rest) = word.strip_prefix("palisade_") {
                    let base = ["_total", "_bucket", "_sum", "_count"]
                        .iter()
                        .find_map(|s| rest.strip_suffix(s))
                        .unwrap_or(rest);
                    let name = format!("palisade_{base}");
                    assert!(exposed.contains(&name.as_str()), "{name} not exposed");
                    checked += 1;
                }
            }
        }
    }
    assert!(checked > 10);
}

/// Receipts split a call's time into upstream wait and gateway overhead (microseconds),
/// and `/metrics` exposes both phases, so overhead is visible apart from model latency.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn latency_is_split_into_gateway_and_upstream() {
    let mut h = start().await;
    let key = h.tenant("acme").await;
    for body in [
        common::chat("[[mock:latency_ms=50]] hi"),
        common::stream_chat("[[mock:stream_delay_ms=10]] hi there"),
    ] {
        let (s, _, _) = h.message(&key, &body).await;
        assert_eq!(s, 200);
    }
    let receipts = h.receipts(&key).await;
    let calls: Vec<&Value> = receipts.iter().filter(|r| r["kind"] == "message").collect();
    assert_eq!(calls.len(), 2);
    for r in calls {
        let up = r["details"]["upstream_us"].as_u64().unwrap();
        let gw = r["details"]["gateway_us"].as_u64().unwrap();
        let total_ms = r["latency_ms"].as_u64().unwrap();
        // The mock waited at least 50 ms (plain) or 10 ms per event (stream).
        assert!(up >= 10_000, "{r}");
        assert!((up + gw) / 1000 <= total_ms + 1, "{r}");
    }
    let text = h
        .http
        .get(h.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    // Each call's cost at the price table's rates (claude-sonnet-4-5: $3 / $15 per MTok)
    // is in its receipt, and the spend metric is their sum.
    let mut spent = 0;
    for r in receipts.iter().filter(|r| r["kind"] == "message") {
        let want =
            r["input_tokens"].as_u64().unwrap() * 3 + r["output_tokens"].as_u64().unwrap() * 15;
        assert_eq!(r["details"]["cost_micro_usd"].as_u64(), Some(want), "{r}");
        spent += want;
    }
    assert!(
        text.contains(&format!(
            "palisade_spend_micro_usd_total{{tenant=\"acme\",user=\"all\"}} {spent}"
        )),
        "{text}"
    );
    for phase in ["gateway", "upstream"] {
        assert!(
            text.contains(&format!(
                "palisade_request_duration_seconds_count{{tenant=\"acme\",phase=\"{phase}\"}} 2"
            )),
            "{text}"
        );
    }
    h.stop().await;
}
