//! SIEM sinks, write-behind receipts and per-tenant fail-open.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use common::*;
use palisade_audit::Receipt;
use palisade_server::sinks::SinkConfig;
use serde_json::{Value, json};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

const SECRET: &str = "sink-test-secret-0123456789";

fn file_sink(path: &Path) -> SinkConfig {
    SinkConfig {
        name: Some("file".into()),
        kind: "file".into(),
        path: Some(path.display().to_string()),
        batch_max: 7,
        batch_ms: 20,
        max_file_bytes: 8 * 1024,
        max_files: 1000,
        ..SinkConfig::default()
    }
}

fn webhook_sink(url: &str, dead_letter: &Path) -> SinkConfig {
    SinkConfig {
        name: Some("siem".into()),
        kind: "webhook".into(),
        url: Some(url.into()),
        secret: Some(SECRET.into()),
        batch_max: 50,
        batch_ms: 30,
        max_attempts: 3,
        base_backoff_ms: 10,
        timeout_ms: 2_000,
        dead_letter_dir: Some(dead_letter.display().to_string()),
        retry_interval_ms: 200,
        ..SinkConfig::default()
    }
}

/// Receipts of every tenant in the store, per tenant in chain order.
async fn chains(store: &palisade_store::DynStore) -> HashMap<String, Vec<Receipt>> {
    let mut out = HashMap::new();
    for t in store.chain_tenants().await.unwrap() {
        let c = store.chain(&t, 1, 100_000).await.unwrap();
        out.insert(t, c);
    }
    out
}

async fn calls(h: &Harness, key: &str, n: usize) {
    let mut tasks = Vec::new();
    for i in 0..n {
        let http = h.http.clone();
        let url = h.url("/v1/messages");
        let key = key.to_string();
        let body = if i % 3 == 0 {
            stream_chat("hello sink")
        } else {
            chat("hello sink")
        };
        tasks.push(tokio::spawn(async move {
            let r = http
                .post(url)
                .header("x-api-key", key)
                .json(&body)
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 200);
            r.text().await.unwrap();
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn file_sink_gets_every_receipt_once_in_chain_order_and_rotates() {
    let out = tempfile::tempdir().unwrap();
    let path = out.path().join("receipts.jsonl");
    let sink = file_sink(&path);
    let mut h = Harness::start_with(|c| c.audit.sinks = vec![sink]).await;
    let a = h.tenant("alpha").await;
    let b = h.tenant("beta").await;
    let (ra, rb) = tokio::join!(calls(&h, &a, 24), calls(&h, &b, 24));
    let _ = (ra, rb);
    let store = h.state().store.clone();
    h.stop().await;

    // Oldest rotated file first: path.N … path.1, then path.
    let mut files: Vec<(u32, PathBuf)> = std::fs::read_dir(out.path())
        .unwrap()
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter_map(|p| {
            let name = p.file_name()?.to_str()?.to_string();
            if name == "receipts.jsonl" {
                Some((0, p))
            } else {
                let n = name.strip_prefix("receipts.jsonl.")?.parse().ok()?;
                Some((n, p))
            }
        })
        .collect();
    assert!(files.len() >= 3, "rotation happened: {files:?}");
    files.sort_by_key(|f| std::cmp::Reverse(f.0));
    let mut seen: HashMap<String, Vec<Receipt>> = HashMap::new();
    for (_, f) in &files {
        let text = std::fs::read_to_string(f).unwrap();
        assert!(
            std::fs::metadata(f).unwrap().len() <= 8 * 1024 || text.lines().count() == 1,
            "rotation bounds file size"
        );
        for line in text.lines() {
            let r: Receipt = serde_json::from_str(line).unwrap();
            assert!(r.hash_is_valid(), "sealed receipt, hash intact");
            // Canonical JSON: re-encoding gives the same bytes.
            let v: Value = serde_json::from_str(line).unwrap();
            assert_eq!(palisade_audit::canonical_json(&v).unwrap(), line);
            assert!(!line.contains("hello sink"), "no prompt text goes out");
            seen.entry(r.tenant_id.clone()).or_default().push(r);
        }
    }
    let stored = chains(&store).await;
    assert_eq!(seen.len(), stored.len());
    for (t, chain) in stored {
        let got: Vec<(u64, String)> = seen[&t].iter().map(|r| (r.seq, r.id.clone())).collect();
        let want: Vec<(u64, String)> = chain.iter().map(|r| (r.seq, r.id.clone())).collect();
        assert_eq!(got, want, "tenant {t}: every receipt once, in chain order");
        assert!(want.len() >= 25);
    }
}

#[derive(Default)]
struct Receiver {
    /// Receipts received in accepted (2xx) batches.
    receipts: Mutex<Vec<Value>>,
    /// Requests seen, and how many of the next ones answer 500.
    requests: AtomicU32,
    fail_next: AtomicU32,
    bad_signatures: AtomicU32,
    /// The first request is answered only after this many ms (a slow receiver).
    delay_first_ms: AtomicU32,
}

async fn receive(
    State(rx): State<Arc<Receiver>>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> StatusCode {
    if rx.requests.fetch_add(1, Ordering::SeqCst) == 0 {
        let ms = rx.delay_first_ms.load(Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(u64::from(ms))).await;
    }
    // Verify as a receiver would: HMAC-SHA256 over "<timestamp>.<raw body>" with the
    // shared secret (the scheme of every Palisade webhook).
    let key = aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, SECRET.as_bytes());
    let ts = headers
        .get("x-palisade-timestamp")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    let given = headers
        .get("x-palisade-signature")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("v1="))
        .and_then(|v| hex::decode(v).ok())
        .unwrap_or_default();
    let mut signed = format!("{ts}.").into_bytes();
    signed.extend_from_slice(&body);
    if ts.is_empty() || aws_lc_rs::hmac::verify(&key, &signed, &given).is_err() {
        rx.bad_signatures.fetch_add(1, Ordering::SeqCst);
        return StatusCode::UNAUTHORIZED;
    }
    if rx
        .fail_next
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
        .is_ok()
    {
        return StatusCode::INTERNAL_SERVER_ERROR;
    }
    let v: Value = serde_json::from_slice(&body).unwrap();
    let list = v["receipts"].as_array().unwrap().clone();
    rx.receipts.lock().unwrap().extend(list);
    StatusCode::NO_CONTENT
}

async fn start_receiver(listener: tokio::net::TcpListener) -> Arc<Receiver> {
    let rx = Arc::new(Receiver::default());
    let app = axum::Router::new()
        .route("/siem", axum::routing::post(receive))
        .with_state(rx.clone());
    tokio::spawn(async move {
        axum::serve(listener, app).await.unwrap();
    });
    rx
}

async fn wait_for(mut f: impl FnMut() -> bool, what: &str) {
    for _ in 0..200 {
        if f() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("timed out waiting for {what}");
}

fn ids(rs: &[Value]) -> Vec<String> {
    let mut v: Vec<String> = rs
        .iter()
        .map(|r| r["id"].as_str().unwrap().to_string())
        .collect();
    v.sort();
    v
}

async fn all_ids(store: &palisade_store::DynStore) -> Vec<String> {
    let mut v: Vec<String> = chains(store)
        .await
        .into_values()
        .flatten()
        .map(|r| r.id)
        .collect();
    v.sort();
    v
}

async fn metrics(h: &Harness) -> String {
    h.http
        .get(h.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn webhook_sink_sends_signed_batches_and_retries_on_500() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/siem", listener.local_addr().unwrap());
    let receiver = start_receiver(listener).await;
    receiver.fail_next.store(2, Ordering::SeqCst);
    let dl = tempfile::tempdir().unwrap();
    let sink = webhook_sink(&url, dl.path());
    let h = Harness::start_with(|c| c.audit.sinks = vec![sink]).await;
    let key = h.tenant("acme").await;
    calls(&h, &key, 12).await;
    let store = h.state().store.clone();
    let want = all_ids(&store).await;
    wait_for(
        || receiver.receipts.lock().unwrap().len() >= want.len(),
        "all receipts at the receiver",
    )
    .await;
    let got = ids(&receiver.receipts.lock().unwrap());
    assert_eq!(got, want, "every committed receipt, once");
    assert_eq!(receiver.bad_signatures.load(Ordering::SeqCst), 0);
    assert_eq!(
        receiver.fail_next.load(Ordering::SeqCst),
        0,
        "500s were answered"
    );
    assert!(receiver.requests.load(Ordering::SeqCst) >= 3, "retried");
    let dead: Vec<_> = std::fs::read_dir(dl.path()).unwrap().collect();
    assert!(dead.is_empty(), "nothing dead-lettered");
    let m = metrics(&h).await;
    assert!(
        m.lines()
            .any(|l| l.starts_with("palisade_sink_failures_total{sink=\"siem\"} 2")),
        "{m}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn webhook_sink_dead_letters_when_down_and_redelivers_when_back() {
    // Reserve a port, then leave it closed: the receiver is down.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("http://127.0.0.1:{port}/siem");
    let dl = tempfile::tempdir().unwrap();
    let mut sink = webhook_sink(&url, dl.path());
    sink.max_attempts = 2;
    let dl_path = dl.path().to_path_buf();
    let h = Harness::start_with(|c| c.audit.sinks = vec![sink]).await;
    let key = h.tenant("acme").await;
    calls(&h, &key, 6).await;
    let store = h.state().store.clone();
    let want = all_ids(&store).await;
    let ndjson = |p: &Path| -> Vec<String> {
        std::fs::read_dir(p)
            .unwrap()
            .filter_map(Result::ok)
            .filter(|e| e.path().extension().is_some_and(|x| x == "ndjson"))
            .flat_map(|e| {
                std::fs::read_to_string(e.path())
                    .unwrap()
                    .lines()
                    .map(str::to_string)
                    .collect::<Vec<_>>()
            })
            .collect()
    };
    wait_for(
        || ndjson(&dl_path).len() >= want.len(),
        "dead-letter files for every receipt",
    )
    .await;
    let mut dead: Vec<String> = ndjson(&dl_path)
        .iter()
        .map(|l| {
            serde_json::from_str::<Value>(l).unwrap()["id"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    dead.sort();
    assert_eq!(dead, want);
    let m = metrics(&h).await;
    assert!(
        m.contains("palisade_sink_receipts_total{sink=\"siem\",outcome=\"dead_lettered\"}"),
        "{m}"
    );

    // The receiver comes back on the same address: the dead-letter files are re-sent
    // and removed.
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
        .await
        .unwrap();
    let receiver = start_receiver(listener).await;
    wait_for(
        || receiver.receipts.lock().unwrap().len() >= want.len(),
        "re-delivery",
    )
    .await;
    wait_for(|| ndjson(&dl_path).is_empty(), "dead-letter files removed").await;
    assert_eq!(ids(&receiver.receipts.lock().unwrap()), want);
    assert_eq!(receiver.bad_signatures.load(Ordering::SeqCst), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn write_behind_answers_and_commits_everything_by_shutdown() {
    let mut h = Harness::start_with(|c| {
        c.receipts.mode = "write_behind".into();
        c.receipts.write_behind_max_pending = 4;
    })
    .await;
    let key = h.tenant("acme").await;
    calls(&h, &key, 40).await;
    let m = metrics(&h).await;
    assert!(m.contains("palisade_receipts_write_behind_pending "), "{m}");
    let db = h.dir.path().join("p.db");
    h.stop().await;
    let store = palisade_store::open(&format!("sqlite://{}", db.display()))
        .await
        .unwrap();
    let chain = store.chain("acme", 1, 10_000).await.unwrap();
    let messages = chain
        .iter()
        .filter(|r| r.kind == palisade_audit::ReceiptKind::Message)
        .count();
    assert_eq!(messages, 40, "every accepted receipt committed by shutdown");
    assert!(palisade_audit::verify_chain("acme", chain, None).ok);
}

/// Makes every receipt insert fail, as a broken store would.
async fn break_receipts(h: &Harness) {
    use sqlx::Connection;
    let db = h.dir.path().join("p.db");
    let mut conn = sqlx::SqliteConnection::connect(&format!("sqlite://{}", db.display()))
        .await
        .unwrap();
    sqlx::query(
        "CREATE TRIGGER receipts_broken BEFORE INSERT ON receipts \
         BEGIN SELECT RAISE(ABORT, 'store is broken'); END",
    )
    .execute(&mut conn)
    .await
    .unwrap();
    conn.close().await.unwrap();
}

async fn tenant_with(h: &Harness, id: &str, attributes: Value) -> String {
    let (s, v) = h
        .admin(
            reqwest::Method::POST,
            "/admin/v1/tenants",
            Some(json!({"id": id, "name": id, "attributes": attributes})),
        )
        .await;
    assert_eq!(s, 201, "{v}");
    h.key(id, json!({"user_id": "u"})).await.0
}

fn spilled(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[tokio::test]
async fn fail_open_tenant_is_served_and_spilled_fail_closed_tenant_gets_503() {
    let h = Harness::start().await;
    let closed = h.tenant("closed").await;
    let open = tenant_with(&h, "open", json!({"audit_fail_open": true})).await;
    // Warm the auth cache path, then break the store's receipt table.
    let (s, _, _) = h.message(&closed, &chat("before")).await;
    assert_eq!(s, 200);
    break_receipts(&h).await;
    let spill = PathBuf::from(format!(
        "{}.receipt-spill.ndjson",
        h.dir.path().join("p.db").display()
    ));

    let (s, v, _) = h.message(&closed, &chat("secret prompt")).await;
    assert_eq!(s, 503, "fail closed: {v}");
    assert_eq!(v["type"], "error");
    assert!(
        spilled(&spill).is_empty(),
        "fail-closed receipts are not spilled"
    );

    let (s, v, _) = h.message(&open, &chat("secret prompt")).await;
    assert_eq!(s, 200, "fail open: {v}");
    assert_eq!(v["type"], "message");
    let (s, _, _) = h.message(&open, &stream_chat("secret prompt")).await;
    assert_eq!(s, 200);
    let lines = spilled(&spill);
    assert_eq!(lines.len(), 2, "{lines:?}");
    for l in &lines {
        assert_eq!(l["tenant_id"], "open");
        assert_eq!(l["kind"], "message");
        assert!(!l.to_string().contains("secret prompt"));
    }
    let m = metrics(&h).await;
    assert!(
        m.lines().any(|l| l == "palisade_receipts_spilled_total 2"),
        "{m}"
    );
}

#[tokio::test]
async fn write_behind_spills_a_batch_that_fails_to_commit() {
    let mut h = Harness::start_with(|c| c.receipts.mode = "write_behind".into()).await;
    let key = h.tenant("acme").await;
    break_receipts(&h).await;
    let (s, _, _) = h.message(&key, &chat("hi")).await;
    assert_eq!(s, 200, "write-behind answers before the commit");
    let spill = PathBuf::from(format!(
        "{}.receipt-spill.ndjson",
        h.dir.path().join("p.db").display()
    ));
    h.stop().await;
    let lines = spilled(&spill);
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert_eq!(lines[0]["tenant_id"], "acme");
}

const CAPTURE_POLICY: &str = "content:\n  input: { phone: redact }\n  output: { email: redact }\n";

#[tokio::test]
async fn content_capture_is_opt_in_redacted_encrypted_and_shredded_with_the_key() {
    let h = Harness::start().await;
    h.put_policy(None, "default: allow\n").await;
    // Capture off (the default): no reference, nothing to read.
    let plain = h.tenant("plain").await;
    let (plain_admin, _) = h
        .key("plain", json!({"role": "tenant_admin", "user_id": "adm"}))
        .await;
    let (s, _, headers) = h.message(&plain, &chat("nothing kept")).await;
    assert_eq!(s, 200);
    let rid = headers["x-palisade-receipt-id"]
        .to_str()
        .unwrap()
        .to_string();
    let (s, r) = h.get(&format!("/v1/receipts/{rid}"), &plain_admin).await;
    assert_eq!(s, 200, "{r}");
    assert!(r["details"].get("capture_id").is_none(), "{r}");
    let (s, _) = h
        .get(&format!("/v1/receipts/{rid}/content"), &plain_admin)
        .await;
    assert_eq!(s, 404);

    // Capture on.
    let member = tenant_with(&h, "cap", json!({"capture_content": true})).await;
    let (admin, _) = h
        .key("cap", json!({"role": "tenant_admin", "user_id": "adm"}))
        .await;
    h.put_policy(Some("cap"), CAPTURE_POLICY).await;
    let prompt = "[[mock:reply=Write to bob@example.net now.]] call me at +1 415 555 0100";
    let (s, v, headers) = h.message(&member, &chat(prompt)).await;
    assert_eq!(s, 200, "{v}");
    let rid = headers["x-palisade-receipt-id"]
        .to_str()
        .unwrap()
        .to_string();
    let (s, r) = h.get(&format!("/v1/receipts/{rid}"), &admin).await;
    assert_eq!(s, 200);
    let capture_id = r["details"]["capture_id"].as_str().unwrap().to_string();
    assert!(
        !r.to_string().contains("call me at"),
        "the receipt holds no content"
    );

    // Only a tenant admin reads it; another tenant's admin gets a 404 like a missing one.
    let (s, _) = h.get(&format!("/v1/receipts/{rid}/content"), &member).await;
    assert_eq!(s, 403);
    let (s, _) = h
        .get(&format!("/v1/receipts/{rid}/content"), &plain_admin)
        .await;
    assert_eq!(s, 404);
    let (s, c) = h.get(&format!("/v1/receipts/{rid}/content"), &admin).await;
    assert_eq!(s, 200, "{c}");
    assert_eq!(c["capture_id"], capture_id.as_str());
    let p = c["prompt"].as_str().unwrap();
    assert!(p.contains("call me at"), "{p}");
    assert!(
        !p.contains("555 0100"),
        "captured after input redaction: {p}"
    );
    assert_eq!(c["output"], "Write to [EMAIL] now.");
    assert_eq!(c["prompt_truncated"], false);

    // Streamed: the released text deltas.
    let r = h
        .post(
            "/v1/messages",
            &member,
            &stream_chat(&format!("[[mock:chunk=3]] {prompt}")),
        )
        .await;
    let body = r.text().await.unwrap();
    assert!(!body.contains("bob@example.net"));
    // The stream's receipt: the newest message receipt other than the first call's.
    let streamed = h
        .receipts(&admin)
        .await
        .into_iter()
        .find(|r| r["kind"] == "message" && r["id"] != rid.as_str())
        .unwrap();
    let (s, c) = h
        .get(
            &format!("/v1/receipts/{}/content", streamed["id"].as_str().unwrap()),
            &admin,
        )
        .await;
    assert_eq!(s, 200, "{c}");
    assert_eq!(c["output"], "Write to [EMAIL] now.");

    // Only ciphertext is stored.
    let rec = h
        .state()
        .store
        .get_capture("cap", &capture_id)
        .await
        .unwrap()
        .unwrap();
    assert!(!rec.sealed.contains("call me at") && !rec.sealed.contains("EMAIL"));

    // Crypto-shredding: delete the tenant's data key; the content is gone, the chain
    // still verifies.
    {
        use sqlx::Connection;
        let db = h.dir.path().join("p.db");
        let mut conn = sqlx::SqliteConnection::connect(&format!("sqlite://{}", db.display()))
            .await
            .unwrap();
        sqlx::query("DELETE FROM tenant_keys WHERE tenant_id = 'cap'")
            .execute(&mut conn)
            .await
            .unwrap();
        conn.close().await.unwrap();
    }
    h.state().tenant_keys.forget("cap").await;
    let (s, c) = h.get(&format!("/v1/receipts/{rid}/content"), &admin).await;
    assert_eq!(s, 410, "{c}");
    let chain = h.state().store.chain("cap", 1, 1000).await.unwrap();
    assert!(palisade_audit::verify_chain("cap", chain, None).ok);
}

#[tokio::test]
async fn content_capture_is_bounded_and_flagged() {
    let h = Harness::start_with(|c| c.receipts.capture_max_bytes = 64).await;
    h.put_policy(None, "default: allow\n").await;
    let member = tenant_with(&h, "cap", json!({"capture_content": true})).await;
    let (admin, _) = h
        .key("cap", json!({"role": "tenant_admin", "user_id": "adm"}))
        .await;
    let long = "x".repeat(500);
    let (s, _, headers) = h.message(&member, &chat(&long)).await;
    assert_eq!(s, 200);
    let rid = headers["x-palisade-receipt-id"]
        .to_str()
        .unwrap()
        .to_string();
    let (s, c) = h.get(&format!("/v1/receipts/{rid}/content"), &admin).await;
    assert_eq!(s, 200, "{c}");
    assert_eq!(c["prompt_truncated"], true);
    assert!(c["prompt"].as_str().unwrap().len() <= 64);
}

#[test]
fn config_sinks_from_yaml_and_receipt_modes_from_env() {
    use palisade_server::config::Config;
    let yaml = "audit:\n  sinks:\n    - kind: file\n      path: /tmp/r.jsonl\n    - kind: webhook\n      url: https://siem.example.com/x\n      secret_env: SIEM_SECRET\n      dead_letter_dir: /tmp/dl\n      tenants: [acme]\n";
    let env = |pairs: &[(&str, &str)]| -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect()
    };
    let cfg = Config::from_yaml(yaml, "p.yaml")
        .unwrap()
        .with_env(env(&[
            ("PALISADE_RECEIPTS_MODE", "write_behind"),
            ("PALISADE_RECEIPTS_WRITE_BEHIND_MAX_PENDING", "5"),
            ("PALISADE_RECEIPTS_SPILL_FILE", "/tmp/spill.ndjson"),
            ("PALISADE_RECEIPTS_CAPTURE_MAX_BYTES", "1024"),
        ]))
        .unwrap();
    assert_eq!(cfg.audit.sinks.len(), 2);
    assert_eq!(
        cfg.audit.sinks[1].tenants.as_deref(),
        Some(&["acme".to_string()][..])
    );
    assert_eq!(cfg.receipts.mode, "write_behind");
    assert_eq!(cfg.receipts.write_behind_max_pending, 5);
    assert_eq!(cfg.receipts.capture_max_bytes, 1024);
    assert_eq!(
        cfg.receipts.spill_path("sqlite://x.db"),
        "/tmp/spill.ndjson"
    );
    assert_eq!(
        Config::default()
            .receipts
            .spill_path("sqlite:///var/p.db?mode=rwc"),
        "/var/p.db.receipt-spill.ndjson"
    );
    // Bad values are named, never a panic.
    let e = Config::default()
        .with_env(env(&[("PALISADE_RECEIPTS_MODE", "later")]))
        .unwrap_err();
    assert!(e.to_string().contains("receipts.mode"), "{e}");
    let e = Config::from_yaml(
        "audit:\n  sinks:\n    - kind: webhook\n      url: http://example.com/x\n      secret: k\n      dead_letter_dir: /tmp/dl\n",
        "p.yaml",
    )
    .unwrap()
    .with_env(Vec::new())
    .unwrap_err();
    assert!(e.to_string().contains("audit.sinks[0].url"), "{e}");
    let e = Config::from_yaml("audit:\n  sinks:\n    - kind: s3\n", "p.yaml")
        .unwrap()
        .with_env(Vec::new())
        .unwrap_err();
    assert!(e.to_string().contains("kind"), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_full_sink_queue_spills_to_dead_letter_instead_of_dropping() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/siem", listener.local_addr().unwrap());
    let receiver = start_receiver(listener).await;
    receiver.delay_first_ms.store(800, Ordering::SeqCst);
    let dl = tempfile::tempdir().unwrap();
    let mut sink = webhook_sink(&url, dl.path());
    sink.queue = 1;
    let h = Harness::start_with(|c| c.audit.sinks = vec![sink]).await;
    let key = h.tenant("acme").await;
    // The sink task is stuck on the slow first POST: its one-slot queue fills and the
    // writer's observer spills the rest to disk.
    for _ in 0..10 {
        let (s, _, _) = h.message(&key, &chat("hi")).await;
        assert_eq!(s, 200);
    }
    let m = metrics(&h).await;
    assert!(
        m.contains("palisade_sink_receipts_total{sink=\"siem\",outcome=\"spilled\"}"),
        "{m}"
    );
    let store = h.state().store.clone();
    let want = all_ids(&store).await;
    // Everything arrives (at least once), the spilled ones through the re-sender.
    wait_for(
        || {
            let mut got = ids(&receiver.receipts.lock().unwrap());
            got.dedup();
            got == want
        },
        "every receipt at the receiver",
    )
    .await;
    assert_eq!(receiver.bad_signatures.load(Ordering::SeqCst), 0);
}
