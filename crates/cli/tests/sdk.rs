//! The official Anthropic SDKs (Python `anthropic`, Node `@anthropic-ai/sdk`, pinned in
//! tests/sdk/) run unchanged against the real gateway in front of the mock upstream.
//!
//! This test starts both in-process, creates a tenant with a good, a revoked and an expired
//! key (and a second tenant), then runs tests/sdk/python/test_sdk.py with the venv's pytest
//! and tests/sdk/node/test_sdk.mjs with `node --test`, passing everything through
//! `PALISADE_*` variables. Afterwards it checks from here that no Palisade key reached the
//! upstream and that the receipts the SDKs saw exist.
//!
//! The SDKs are installed by `bash tests/sdk/install.sh`. Without them the test fails in CI
//! (env `CI` set) and is skipped loudly elsewhere.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use palisade_mock::{MockConfig, MockServer};
use palisade_server::RunningServer;
use palisade_server::config::{
    AdminConfig, AnthropicConfig, Config, RetryConfig, StorageConfig, TimeoutConfig,
};
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::Duration;

const PLATFORM_KEY: &str = "sk-ant-sdk-test-platform-key-0000";
const ADMIN_TOKEN: &str = "sdk-test-admin-token-0123456789abcdef";
/// Bound on one SDK run, so a wedged runner cannot hang CI.
const RUN_LIMIT: Duration = Duration::from_secs(120);

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .expect("repository root")
}

struct Admin {
    http: reqwest::Client,
    base: String,
}

impl Admin {
    async fn post(&self, path: &str, body: Value) -> Value {
        let r = self
            .http
            .post(format!("{}{path}", self.base))
            .bearer_auth(ADMIN_TOKEN)
            .json(&body)
            .send()
            .await
            .expect("admin request");
        let status = r.status();
        let v: Value = r.json().await.expect("admin answer is JSON");
        assert!(status.is_success(), "admin {path} answered {status}: {v}");
        v
    }

    /// Creates a key and returns (public id, secret).
    async fn key(&self, tenant: &str, body: Value) -> (String, String) {
        let v = self
            .post(&format!("/admin/v1/tenants/{tenant}/keys"), body)
            .await;
        (
            v["id"].as_str().expect("key id").to_string(),
            v["secret"].as_str().expect("key secret").to_string(),
        )
    }
}

/// A command with the test's environment, minus anything that could steer an SDK elsewhere.
fn command(program: &Path, env: &[(&str, String)]) -> tokio::process::Command {
    let mut cmd = tokio::process::Command::new(program);
    for (name, _) in std::env::vars() {
        if name.starts_with("ANTHROPIC_") {
            cmd.env_remove(name);
        }
    }
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.env("PYTHONDONTWRITEBYTECODE", "1")
        .env("NO_COLOR", "1")
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true);
    cmd
}

async fn run(name: &str, mut cmd: tokio::process::Command) -> (String, Output) {
    let out = tokio::time::timeout(RUN_LIMIT, cmd.output())
        .await
        .unwrap_or_else(|_| panic!("{name}: did not finish within {RUN_LIMIT:?}"))
        .unwrap_or_else(|e| panic!("{name}: could not start: {e}"));
    (name.to_string(), out)
}

fn report(name: &str, out: &Output) -> bool {
    let ok = out.status.success();
    println!(
        "\n===== {name}: {} =====\n{}{}",
        if ok { "passed" } else { "FAILED" },
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    ok
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn official_sdks_work_through_palisade() {
    let root = repo_root();
    let python = root.join("target/sdk/venv/bin/python");
    let node_dir = root.join("tests/sdk/node");
    let node_sdk = node_dir.join("node_modules/@anthropic-ai/sdk/package.json");
    if !python.exists() || !node_sdk.exists() {
        let msg = "the official SDKs are not installed: run `bash tests/sdk/install.sh`";
        if std::env::var_os("CI").is_some() {
            panic!("{msg} (CI is set, so this fails instead of skipping)");
        }
        eprintln!(
            "\n{}\nSKIPPED: run bash tests/sdk/install.sh\n  ({msg})\n{}\n",
            "!".repeat(72),
            "!".repeat(72)
        );
        return;
    }

    // ---- the mock upstream and the gateway, in-process
    let dir = tempfile::tempdir().expect("temp dir");
    let mock = MockServer::start(MockConfig {
        required_api_key: Some(PLATFORM_KEY.into()),
        ..MockConfig::default()
    })
    .await
    .expect("mock upstream");
    let defaults = Config::default();
    let config = Config {
        listen: "127.0.0.1:0".into(),
        storage: StorageConfig {
            url: format!("sqlite://{}", dir.path().join("palisade.db").display()),
            ..defaults.storage.clone()
        },
        anthropic: AnthropicConfig {
            base_url: mock.base_url(),
            api_key: Some(PLATFORM_KEY.into()),
            ..defaults.anthropic.clone()
        },
        admin: AdminConfig {
            token: Some(ADMIN_TOKEN.into()),
        },
        // The SDKs see the upstream's 429/500/529 at once, and their own 1 s timeout fires
        // long before the gateway's first-byte timeout.
        retry: RetryConfig {
            max_retries: 0,
            ..defaults.retry.clone()
        },
        timeouts: TimeoutConfig {
            first_byte_ms: 30_000,
            shutdown_grace_ms: 2_000,
            ..defaults.timeouts.clone()
        },
        ..defaults
    };
    let server = RunningServer::start(config).await.expect("gateway");
    let base = server.base_url();
    let http = reqwest::Client::new();
    let admin = Admin {
        http: http.clone(),
        base: base.clone(),
    };

    // ---- tenants and keys
    admin
        .post(
            "/admin/v1/tenants",
            json!({"id": "sdk", "name": "SDK tests", "plan": "pro"}),
        )
        .await;
    admin
        .post(
            "/admin/v1/tenants",
            json!({"id": "other", "name": "Someone else", "plan": "free"}),
        )
        .await;
    // The SDK tenant's agents may run their tools (the default is deny).
    let r = http
        .post(format!("{base}/admin/v1/tenants/sdk/policy?activate=true"))
        .bearer_auth(ADMIN_TOKEN)
        .body("tools:\n  - id: sdk-tools\n    match: \"*\"\n    action: allow\n")
        .send()
        .await
        .expect("policy");
    assert!(r.status().is_success(), "policy put: {}", r.status());
    let (good_id, good) = admin
        .key("sdk", json!({"role": "member", "user_id": "sdk-user"}))
        .await;
    let (revoked_id, revoked) = admin.key("sdk", json!({"role": "member"})).await;
    admin
        .post(
            &format!("/admin/v1/tenants/sdk/keys/{revoked_id}/revoke"),
            json!({}),
        )
        .await;
    let (_, expired) = admin
        .key(
            "sdk",
            json!({"role": "member", "expires_at": "2020-01-01T00:00:00Z"}),
        )
        .await;
    let (_, other) = admin.key("other", json!({"role": "member"})).await;
    for k in [&good, &revoked, &expired, &other] {
        assert!(k.starts_with("pal_"), "Palisade keys start with pal_: {k}");
    }

    // A receipt of the other tenant, which the SDK tests must not be able to read.
    let r = http
        .post(format!("{base}/v1/messages"))
        .header("x-api-key", &other)
        .header("anthropic-version", "2023-06-01")
        .json(&json!({"model": "claude-sonnet-4-5", "max_tokens": 16,
                      "messages": [{"role": "user", "content": "hi"}]}))
        .send()
        .await
        .expect("other tenant's call");
    assert_eq!(r.status(), 200);
    let other_receipt = r
        .headers()
        .get("x-palisade-receipt-id")
        .and_then(|v| v.to_str().ok())
        .expect("receipt id header")
        .to_string();

    // ---- the SDK runs, side by side
    let py_receipts = dir.path().join("receipts-python.txt");
    let node_receipts = dir.path().join("receipts-node.txt");
    let env = |receipts: &Path| {
        vec![
            ("PALISADE_BASE_URL", base.clone()),
            ("PALISADE_KEY", good.clone()),
            ("PALISADE_REVOKED_KEY", revoked.clone()),
            ("PALISADE_EXPIRED_KEY", expired.clone()),
            ("PALISADE_OTHER_TENANT_KEY", other.clone()),
            ("PALISADE_OTHER_TENANT_RECEIPT", other_receipt.clone()),
            ("PALISADE_RECEIPTS_OUT", receipts.display().to_string()),
        ]
    };
    let mut py = command(&python, &env(&py_receipts));
    py.current_dir(root.join("tests/sdk/python")).args([
        "-m",
        "pytest",
        "-p",
        "no:cacheprovider",
        "-v",
        "--color=no",
        "test_sdk.py",
    ]);
    let mut node = command(Path::new("node"), &env(&node_receipts));
    node.current_dir(&node_dir)
        .args(["--test", "--test-reporter=spec", "test_sdk.mjs"]);
    let (py_out, node_out) = tokio::join!(
        run("python anthropic", py),
        run("node @anthropic-ai/sdk", node)
    );
    let py_ok = report(&py_out.0, &py_out.1);
    let node_ok = report(&node_out.0, &node_out.1);
    assert!(
        py_ok && node_ok,
        "an SDK run failed (python passed: {py_ok}, node passed: {node_ok}); output above"
    );

    // ---- what reached the upstream: never a Palisade key, always the platform key
    let seen = mock.requests();
    assert!(
        seen.len() >= 40,
        "the SDK runs reached the upstream only {} times",
        seen.len()
    );
    for req in &seen {
        for header in ["x-api-key", "authorization"] {
            if let Some(v) = req.header(header) {
                assert!(
                    !v.contains("pal_"),
                    "a Palisade key reached the upstream in {header} of {} {}",
                    req.method,
                    req.path
                );
            }
        }
        assert_eq!(
            req.api_key(),
            Some(PLATFORM_KEY),
            "{} {} reached the upstream without the platform key",
            req.method,
            req.path
        );
    }
    let versions: Vec<&str> = seen
        .iter()
        .filter_map(|r| r.header("anthropic-version"))
        .collect();
    assert_eq!(versions.len(), seen.len(), "anthropic-version is forwarded");

    // ---- the receipts the SDKs saw exist, and belong to the SDK tenant
    let mut ids = Vec::new();
    for file in [&py_receipts, &node_receipts] {
        if let Ok(text) = std::fs::read_to_string(file) {
            ids.extend(text.lines().map(str::to_string));
        }
    }
    assert!(
        ids.len() >= 10,
        "the SDK tests recorded {} receipt ids",
        ids.len()
    );
    for id in &ids {
        let r = http
            .get(format!("{base}/v1/receipts/{id}"))
            .bearer_auth(&good)
            .send()
            .await
            .expect("receipt read");
        assert_eq!(r.status(), 200, "receipt {id} is missing");
        let v: Value = r.json().await.expect("receipt JSON");
        assert_eq!(v["tenant_id"], "sdk", "receipt {id}: {v}");
        assert_eq!(v["key_id"], good_id.as_str(), "receipt {id}: {v}");
        assert_eq!(v["kind"], "message", "receipt {id}: {v}");
    }
    let listed: Value = http
        .get(format!("{base}/v1/receipts?kind=message&limit=1000"))
        .bearer_auth(&good)
        .send()
        .await
        .expect("receipt list")
        .json()
        .await
        .expect("receipt list JSON");
    let listed = listed["data"].as_array().expect("data").len();
    assert!(
        listed >= ids.len(),
        "{listed} message receipts listed, {} seen by the SDKs",
        ids.len()
    );

    // The hanging upstream calls of the timeout tests end when the mock goes away.
    mock.shutdown().await;
    server.shutdown().await;
}
