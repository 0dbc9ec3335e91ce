//! OTLP trace export: `palisade serve` with `PALISADE_OTLP_ENDPOINT` sends its request and
//! upstream spans to a collector over OTLP/HTTP, flushes them on SIGTERM, and the exported
//! spans carry no prompt text and no key.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use palisade_mock::{MockConfig, MockServer};
use serde_json::{Value, json};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::AsyncBufReadExt;

const BIN: &str = env!("CARGO_BIN_EXE_palisade");
const ADMIN: &str = "otlp-test-admin-token-0123456789";

type Seen = Arc<Mutex<Vec<(String, String, Vec<u8>)>>>;

/// A stand-in OTLP collector: records (path, content-type, body) of every POST.
async fn collector() -> (String, Seen) {
    let seen: Seen = Arc::default();
    let s2 = seen.clone();
    let app = axum::Router::new().fallback(
        move |uri: axum::http::Uri, headers: axum::http::HeaderMap, body: axum::body::Bytes| {
            let seen = s2.clone();
            async move {
                let ct = headers
                    .get("content-type")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("")
                    .to_string();
                seen.lock()
                    .unwrap()
                    .push((uri.path().to_string(), ct, body.to_vec()));
                axum::http::StatusCode::OK
            }
        },
    );
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(l, app).await.unwrap() });
    (format!("http://{addr}"), seen)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_exports_request_spans_without_content() {
    let dir = tempfile::tempdir().unwrap();
    let mock = MockServer::start(MockConfig::default()).await.unwrap();
    let (otlp, seen) = collector().await;
    let mut child = tokio::process::Command::new(BIN)
        .env_clear()
        .arg("serve")
        .envs([
            (
                "PALISADE_STORAGE_URL",
                format!("sqlite://{}", dir.path().join("p.db").display()),
            ),
            ("PALISADE_SECRETS_MASTER_KEY", "66".repeat(32)),
            ("PALISADE_ADMIN_TOKEN", ADMIN.to_string()),
            ("PALISADE_ANTHROPIC_BASE_URL", mock.base_url()),
            ("ANTHROPIC_API_KEY", "sk-ant-otlp-platform".to_string()),
            ("PALISADE_LISTEN", "127.0.0.1:0".to_string()),
            ("PALISADE_LOG_FORMAT", "json".to_string()),
            ("PALISADE_OTLP_ENDPOINT", otlp.clone()),
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = tokio::io::BufReader::new(child.stderr.take().unwrap()).lines();
    let addr = tokio::time::timeout(Duration::from_secs(60), async {
        while let Some(line) = lines.next_line().await.unwrap() {
            if let Ok(v) = serde_json::from_str::<Value>(&line)
                && v["fields"]["message"] == "palisade listening"
            {
                return v["fields"]["addr"].as_str().unwrap().to_string();
            }
        }
        panic!("palisade serve exited before listening");
    })
    .await
    .unwrap();
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    let base = format!("http://{addr}");
    let http = reqwest::Client::new();
    let r = http
        .post(format!("{base}/admin/v1/tenants"))
        .bearer_auth(ADMIN)
        .json(&json!({"id": "acme", "name": "Acme"}))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success());
    let key: Value = http
        .post(format!("{base}/admin/v1/tenants/acme/keys"))
        .bearer_auth(ADMIN)
        .json(&json!({}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let secret = key["secret"].as_str().unwrap().to_string();
    let canary = "CANARY-prompt-text-7f3a9";
    let r = http
        .post(format!("{base}/v1/messages"))
        .header("x-api-key", &secret)
        .json(&json!({"model": "claude-sonnet-4-5", "max_tokens": 16,
                      "messages": [{"role": "user", "content": canary}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let receipt = r.headers()["x-palisade-receipt-id"]
        .to_str()
        .unwrap()
        .to_string();

    // SIGTERM: the gateway drains and flushes its batched spans before exiting.
    let pid = child.id().unwrap().to_string();
    assert!(
        std::process::Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    let status = tokio::time::timeout(Duration::from_secs(30), child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success(), "{status:?}");

    let seen = seen.lock().unwrap();
    assert!(!seen.is_empty(), "no OTLP export reached the collector");
    let mut all = Vec::new();
    for (path, ct, body) in seen.iter() {
        assert_eq!(path, "/v1/traces");
        assert_eq!(ct, "application/x-protobuf");
        all.extend_from_slice(body);
    }
    let text = String::from_utf8_lossy(&all);
    for expected in [
        "POST /v1/messages",
        "POST /admin/v1/tenants",
        "http.route",
        "palisade.upstream",
        "palisade.receipt_id",
        &receipt,
    ] {
        assert!(
            text.contains(expected),
            "{expected} missing from the exported spans"
        );
    }
    assert!(!text.contains(canary), "prompt text in a span");
    assert!(!text.contains(&secret), "the API key in a span");
    let key_secret_part = secret.rsplit('_').next().unwrap();
    assert!(
        !text.contains(key_secret_part),
        "the key's secret in a span"
    );
}
