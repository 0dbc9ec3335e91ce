//! Bring your own key: a tenant's own upstream key replaces the platform key on its calls
//! only, rotates without restart, is never returned, logged or put in a receipt, and a
//! key that can no longer be decrypted (the tenant's data key was shredded) fails closed.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::*;
use palisade_mock::{MockConfig, MockServer};
use reqwest::Method;
use serde_json::{Value, json};
use std::io::Write;
use std::sync::{Arc, Mutex};

const KEY_1: &str = "sk-ant-alpha-own-key-one-5d1e0a";
const KEY_2: &str = "sk-ant-alpha-own-key-two-9b7c44";
const KEY_3: &str = "sk-ant-alpha-own-key-three-e2f813";

#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Vec<u8>>>);

impl Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Capture {
    type Writer = Capture;
    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

/// The `x-api-key` of the last request the mock saw on /v1/messages, and how many.
fn last_upstream_key(mock: &MockServer) -> (Option<String>, usize) {
    let reqs = mock.requests_to("/v1/messages");
    (
        reqs.last()
            .and_then(|r| r.header("x-api-key"))
            .map(str::to_string),
        reqs.len(),
    )
}

async fn call(h: &Harness, key: &str) -> (u16, Value) {
    let (s, v, _) = h.message(key, &chat("hello")).await;
    (s, v)
}

async fn tenant_admin_req(
    h: &Harness,
    method: Method,
    cred: &str,
    path: &str,
    body: Option<Value>,
) -> (u16, String) {
    let mut req = h.http.request(method, h.url(path)).bearer_auth(cred);
    if let Some(b) = body {
        req = req.json(&b);
    }
    let r = req.send().await.unwrap();
    (r.status().as_u16(), r.text().await.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tenant_keys_replace_the_platform_key_rotate_and_fail_closed() {
    let capture = Capture::default();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_writer(capture.clone())
        .with_ansi(false)
        .finish();
    let _guard = tracing::subscriber::set_global_default(subscriber);

    // An upstream that accepts any key and records what it was sent.
    let upstream = MockServer::start(MockConfig::default()).await.unwrap();
    let base = upstream.base_url();
    let mut h = Harness::start_with(move |c| c.anthropic.base_url = base).await;
    let alpha = h.tenant("alpha").await;
    let beta = h.tenant("beta").await;
    let (alpha_admin, _) = h.key("alpha", json!({"role": "tenant_admin"})).await;
    let (beta_admin, _) = h.key("beta", json!({"role": "tenant_admin"})).await;
    let path = "/admin/v1/tenants/alpha/upstream-key";

    // Nothing set: both tenants go upstream with the platform key.
    let (s, v) = h.admin(Method::GET, path, None).await;
    assert_eq!((s, &v["set"]), (200, &json!(false)), "{v}");
    assert_eq!(call(&h, &alpha).await.0, 200);
    assert_eq!(
        last_upstream_key(&upstream).0.as_deref(),
        Some(PLATFORM_KEY)
    );

    // Only alpha's own admin (or the platform admin) may set it; bad bodies are refused
    // without echoing them; a member key is not an admin.
    let (s, _) = tenant_admin_req(
        &h,
        Method::PUT,
        &beta_admin,
        path,
        Some(json!({"api_key": KEY_1})),
    )
    .await;
    assert_eq!(s, 404);
    let (s, _) = tenant_admin_req(
        &h,
        Method::PUT,
        &alpha,
        path,
        Some(json!({"api_key": KEY_1})),
    )
    .await;
    assert_eq!(s, 403);
    for bad in [
        json!({"api_key": KEY_1, "extra": KEY_1}),
        json!({"api_key": format!("{KEY_1} x")}),
        json!({"key": KEY_1}),
        json!({"api_key": 5}),
        json!([KEY_1]),
    ] {
        let (s, text) = tenant_admin_req(&h, Method::PUT, &alpha_admin, path, Some(bad)).await;
        assert_eq!(s, 400, "{text}");
        assert!(!text.contains(KEY_1), "{text}");
    }
    let (s, text) = tenant_admin_req(
        &h,
        Method::PUT,
        &alpha_admin,
        path,
        Some(json!({"api_key": KEY_1})),
    )
    .await;
    assert_eq!(s, 200, "{text}");
    assert!(!text.contains(KEY_1), "{text}");
    let v: Value = serde_json::from_str(&text).unwrap();
    assert_eq!((&v["set"], &v["last4"]), (&json!(true), &json!("1e0a")));

    // Alpha's calls carry its own key, beta's still the platform key.
    assert_eq!(call(&h, &alpha).await.0, 200);
    assert_eq!(last_upstream_key(&upstream).0.as_deref(), Some(KEY_1));
    assert_eq!(call(&h, &beta).await.0, 200);
    assert_eq!(
        last_upstream_key(&upstream).0.as_deref(),
        Some(PLATFORM_KEY)
    );
    // count_tokens goes the same way.
    let r = h
        .post(
            "/v1/messages/count_tokens",
            &alpha,
            &json!({"model": "claude-sonnet-4-5", "messages": [{"role": "user", "content": "hi"}]}),
        )
        .await;
    assert_eq!(r.status().as_u16(), 200);
    let last = upstream.requests().last().cloned().unwrap();
    assert_eq!(last.header("x-api-key"), Some(KEY_1));

    // GET shows metadata only, to both kinds of admin.
    for cred in [ADMIN, alpha_admin.as_str()] {
        let (s, text) = tenant_admin_req(&h, Method::GET, cred, path, None).await;
        assert_eq!(s, 200, "{text}");
        assert!(
            !text.contains(KEY_1) && text.contains("\"set\":true"),
            "{text}"
        );
    }
    let (s, _) = tenant_admin_req(&h, Method::GET, &beta_admin, path, None).await;
    assert_eq!(s, 404);

    // Rotation takes effect on the very next call, no restart.
    let (s, _) = h
        .admin(Method::PUT, path, Some(json!({"api_key": KEY_2})))
        .await;
    assert_eq!(s, 200);
    assert_eq!(call(&h, &alpha).await.0, 200);
    assert_eq!(last_upstream_key(&upstream).0.as_deref(), Some(KEY_2));

    // Delete: back to the platform key; a second delete is a 404.
    let (s, _) = tenant_admin_req(&h, Method::DELETE, &alpha_admin, path, None).await;
    assert_eq!(s, 204);
    let (s, _) = h.admin(Method::DELETE, path, None).await;
    assert_eq!(s, 404);
    assert_eq!(call(&h, &alpha).await.0, 200);
    assert_eq!(
        last_upstream_key(&upstream).0.as_deref(),
        Some(PLATFORM_KEY)
    );

    // Every change is an admin_change receipt, without the key.
    let receipts = h.receipts(&alpha_admin).await;
    let ops: Vec<&str> = receipts
        .iter()
        .filter(|r| r["admin"]["object"] == "tenant/alpha/upstream-key")
        .filter_map(|r| r["admin"]["change"]["op"].as_str())
        .collect();
    assert_eq!(ops, ["delete", "replace", "set"], "{receipts:?}");
    let all = serde_json::to_string(&receipts).unwrap();
    assert!(!all.contains(KEY_1) && !all.contains(KEY_2));

    // Crypto-shredding: the tenant's data key goes; its stored upstream key cannot be
    // decrypted any more, and calls fail closed instead of using the platform key.
    let (s, _) = h
        .admin(Method::PUT, path, Some(json!({"api_key": KEY_3})))
        .await;
    assert_eq!(s, 200);
    assert_eq!(call(&h, &alpha).await.0, 200);
    assert_eq!(last_upstream_key(&upstream).0.as_deref(), Some(KEY_3));
    let db = h.dir.path().join("p.db");
    let pool = sqlx::SqlitePool::connect(&format!("sqlite://{}", db.display()))
        .await
        .unwrap();
    sqlx::query("DELETE FROM tenant_keys WHERE tenant_id = 'alpha'")
        .execute(&pool)
        .await
        .unwrap();
    pool.close().await;
    h.state().tenant_keys.forget("alpha").await;
    h.state().upstream_keys.forget("alpha").await;
    let (_, before) = last_upstream_key(&upstream);
    let (s, v) = call(&h, &alpha).await;
    assert_eq!(s, 503, "{v}");
    assert_eq!(v["type"], "error", "{v}");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("upstream key cannot be decrypted"),
        "{v}"
    );
    assert_eq!(
        last_upstream_key(&upstream).1,
        before,
        "nothing went upstream"
    );
    // Beta is unaffected; alpha recovers by setting its key again.
    assert_eq!(call(&h, &beta).await.0, 200);
    let (s, _) = h
        .admin(Method::PUT, path, Some(json!({"api_key": KEY_1})))
        .await;
    assert_eq!(s, 200);
    assert_eq!(call(&h, &alpha).await.0, 200);
    assert_eq!(last_upstream_key(&upstream).0.as_deref(), Some(KEY_1));

    h.stop().await;
    let logs = String::from_utf8(capture.0.lock().unwrap().clone()).unwrap();
    assert!(!logs.is_empty());
    for k in [KEY_1, KEY_2, KEY_3] {
        assert!(!logs.contains(k), "{k} found in logs");
    }
}
