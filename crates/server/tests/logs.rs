//! Log canaries: a key secret, a JWT, an admin token, a prompt string and an e-mail address
//! are sent through every path — successes, refusals, errors, the control plane — while
//! every tracing event at TRACE level is captured; none of them may appear in any log line.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::*;
use reqwest::Method;
use serde_json::json;
use std::io::Write;
use std::sync::{Arc, Mutex};

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

const PROMPT: &str = "canary-prompt-7f3a9c tell me about zebras";
const EMAIL: &str = "canary.person.7f3a9c@example.com";
const BYOK_KEY: &str = "sk-ant-byok-canary-7f3a9c-0123456789";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_secret_or_prompt_reaches_the_logs() {
    let capture = Capture::default();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_writer(capture.clone())
        .with_ansi(false)
        .finish();
    let _guard = tracing::subscriber::set_global_default(subscriber);

    let h = Harness::start().await;
    let key = h.tenant("canary").await;
    let (admin_key, admin_id) = h.key("canary", json!({"role": "tenant_admin"})).await;
    let fake_jwt = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJjYW5hcnktand0LTdmM2E5YyJ9.c2lnbmF0dXJlY2FuYXJ5";
    let forged = format!("{}{}", &key[..key.len() - 4], "AAAA");

    // Data plane: success, streaming, content hits, upstream errors, bad bodies.
    for body in [
        chat(PROMPT),
        chat(&format!("mail me at {EMAIL}")),
        stream_chat(PROMPT),
        chat(&format!("[[mock:error=500]] {PROMPT}")),
        json!({"model": "x", "messages": PROMPT}),
    ] {
        let _ = h.message(&key, &body).await;
    }
    for cred in [forged.as_str(), fake_jwt, "garbage-canary-7f3a9c", ADMIN] {
        let _ = h.message(cred, &chat(PROMPT)).await;
        let _ = h.get("/v1/receipts", cred).await;
    }
    let _ = h
        .post(
            "/v1/guard/scan",
            &key,
            &json!({"text": format!("{PROMPT} {EMAIL}")}),
        )
        .await;
    let _ = h
        .post(
            "/v1/guard/tool",
            &key,
            &json!({"tool": "send_email", "input": {"to": EMAIL, "body": PROMPT}}),
        )
        .await;
    let _ = h
        .http
        .post(h.url("/v1/messages"))
        .header("x-api-key", &key)
        .header("x-palisade-user", EMAIL)
        .json(&chat(PROMPT))
        .send()
        .await;
    // Control plane with a tenant admin key, a rotation and a revocation.
    let _ = h
        .http
        .get(h.url("/admin/v1/tenants/canary/keys"))
        .bearer_auth(&admin_key)
        .send()
        .await;
    let (_, v) = h
        .admin(
            Method::POST,
            &format!("/admin/v1/tenants/canary/keys/{admin_id}/rotate"),
            Some(json!({"grace_seconds": 60})),
        )
        .await;
    let rotated = v["secret"].as_str().unwrap_or_default().to_string();
    let _ = h
        .admin(
            Method::POST,
            "/admin/v1/tenants/canary/policy?activate=true",
            Some(json!({"bogus": PROMPT})),
        )
        .await;
    let _ = h
        .http
        .get(h.url("/admin/v1/tenants"))
        .bearer_auth("wrong-admin-canary-7f3a9c")
        .send()
        .await;

    // BYOK: the tenant's own upstream key is set, used (the mock refuses it: an upstream
    // error path), replaced with a malformed body, read back and deleted.
    for body in [
        json!({"api_key": BYOK_KEY}),
        json!({"api_key": BYOK_KEY, "extra": BYOK_KEY}),
        json!({"api_key": format!("{BYOK_KEY} with spaces")}),
    ] {
        let _ = h
            .admin(
                Method::PUT,
                "/admin/v1/tenants/canary/upstream-key",
                Some(body),
            )
            .await;
    }
    let _ = h.message(&key, &chat(PROMPT)).await;
    let _ = h
        .admin(Method::GET, "/admin/v1/tenants/canary/upstream-key", None)
        .await;
    let _ = h
        .admin(
            Method::DELETE,
            "/admin/v1/tenants/canary/upstream-key",
            None,
        )
        .await;

    let mut h = h;
    h.stop().await;
    let logs = String::from_utf8(capture.0.lock().unwrap().clone()).unwrap();
    assert!(
        !logs.is_empty(),
        "the capture saw nothing: is the subscriber installed?"
    );
    // `pal_<hex id>_<base64url secret>`: the secret itself may contain `_`, so split once
    // after the id rather than at the last `_` (which could leave a one-character segment).
    let secret_part = |k: &str| {
        k.strip_prefix("pal_")
            .and_then(|rest| rest.split_once('_'))
            .map(|(_, secret)| secret.to_string())
            .unwrap_or_else(|| k.to_string())
    };
    for canary in [
        key.clone(),
        secret_part(&key),
        admin_key.clone(),
        secret_part(&admin_key),
        rotated.clone(),
        fake_jwt.to_string(),
        "canary-jwt-7f3a9c".to_string(),
        ADMIN.to_string(),
        PLATFORM_KEY.to_string(),
        BYOK_KEY.to_string(),
        "garbage-canary-7f3a9c".into(),
        "wrong-admin-canary-7f3a9c".into(),
        "canary-prompt-7f3a9c".into(),
        "zebras".into(),
        EMAIL.to_string(),
    ] {
        if canary.is_empty() {
            continue;
        }
        assert!(
            !logs.contains(&canary),
            "canary {canary:?} found in logs:\n{}",
            logs.lines()
                .filter(|l| l.contains(&canary))
                .take(5)
                .collect::<Vec<_>>()
                .join("\n")
        );
    }
}
