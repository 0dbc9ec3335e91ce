//! The built `palisade` binary as operators run it: two `palisade serve` processes on one
//! SQLite file under concurrent load, both killed with SIGKILL mid-load; then every
//! receipt id a client received must be in the store, every chain (and its checkpoints,
//! signed by both processes with the key file they share) must verify, from the store
//! and from an export with the public key alone. Also the `audit` commands' errors.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use palisade_mock::{MockConfig, MockServer};
use serde_json::{Value, json};
use std::collections::HashSet;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use tokio::io::AsyncBufReadExt;
use tokio::sync::Mutex;

const BIN: &str = env!("CARGO_BIN_EXE_palisade");
const ADMIN: &str = "process-test-admin-token-0123456789";
const PLATFORM_KEY: &str = "sk-ant-process-test";

struct Env {
    dir: tempfile::TempDir,
    upstream: String,
}

impl Env {
    fn db(&self) -> String {
        format!("sqlite://{}", self.dir.path().join("p.db").display())
    }

    fn vars(&self) -> Vec<(&'static str, String)> {
        vec![
            ("PALISADE_STORAGE_URL", self.db()),
            ("PALISADE_SECRETS_MASTER_KEY", "11".repeat(32)),
            ("PALISADE_ADMIN_TOKEN", ADMIN.into()),
            ("PALISADE_ANTHROPIC_BASE_URL", self.upstream.clone()),
            ("ANTHROPIC_API_KEY", PLATFORM_KEY.into()),
            ("PALISADE_LISTEN", "127.0.0.1:0".into()),
            ("PALISADE_AUDIT_CHECKPOINT_INTERVAL_MS", "50".into()),
            ("PALISADE_RETRY_MAX_RETRIES", "0".into()),
            ("PALISADE_LOG_FORMAT", "json".into()),
            ("PALISADE_LOG", "info".into()),
        ]
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new(BIN);
        c.env_clear().args(args).envs(self.vars());
        c
    }

    /// Runs a CLI command to completion.
    fn run(&self, args: &[&str]) -> Output {
        self.command(args).output().unwrap()
    }

    /// Starts `palisade serve`; returns the child and its base URL.
    async fn serve(&self) -> (tokio::process::Child, String) {
        let mut c = tokio::process::Command::from(self.command(&["serve"]));
        c.stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let mut child = c.spawn().unwrap();
        let stderr = child.stderr.take().unwrap();
        let mut lines = tokio::io::BufReader::new(stderr).lines();
        let addr = tokio::time::timeout(Duration::from_secs(30), async {
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
        .expect("gateway did not start");
        // Keep draining the log so the child never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        (child, format!("http://{addr}"))
    }
}

fn text(o: &Output) -> String {
    format!(
        "status {:?}\nstdout:\n{}\nstderr:\n{}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

async fn setup() -> (Env, MockServer) {
    let mock = MockServer::start(MockConfig {
        required_api_key: Some(PLATFORM_KEY.into()),
        record: false,
        ..MockConfig::default()
    })
    .await
    .unwrap();
    let env = Env {
        dir: tempfile::tempdir().unwrap(),
        upstream: mock.base_url(),
    };
    (env, mock)
}

fn tenant_with_key(env: &Env, id: &str) -> String {
    let o = env.run(&["tenant", "create", "--id", id, "--name", id]);
    assert!(o.status.success(), "{}", text(&o));
    let o = env.run(&["key", "create", "--tenant", id]);
    assert!(o.status.success(), "{}", text(&o));
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    v["secret"].as_str().unwrap().to_string()
}

fn export_ids(path: &Path) -> HashSet<String> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .filter(|v| v.get("record").is_none())
        .map(|v| v["id"].as_str().unwrap().to_string())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_gateways_on_one_store_survive_sigkill_under_load() {
    let (env, _mock) = setup().await;
    let keys = [tenant_with_key(&env, "acme"), tenant_with_key(&env, "beta")];
    // Both start at once: they race to create the checkpoint key file and must agree.
    let ((mut a, url_a), (mut b, url_b)) = tokio::join!(env.serve(), env.serve());
    let urls = [url_a, url_b];

    let received: Arc<Mutex<Vec<String>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let mut workers = Vec::new();
    for w in 0..16usize {
        let (http, received, stop) = (http.clone(), received.clone(), stop.clone());
        let key = keys[w % 2].clone();
        let urls = urls.clone();
        workers.push(tokio::spawn(async move {
            let mut i = w;
            while !stop.load(Ordering::Relaxed) {
                i += 1;
                let r = http
                    .post(format!("{}/v1/messages", urls[i % 2]))
                    .header("x-api-key", &key)
                    .header("anthropic-version", "2023-06-01")
                    .json(&json!({
                        "model": "claude-sonnet-4-5",
                        "max_tokens": 16,
                        "messages": [{"role": "user", "content": format!("req {w}/{i}")}]
                    }))
                    .send()
                    .await;
                match r {
                    Ok(r) if r.status() == 200 => {
                        if let Some(id) = r.headers().get("x-palisade-receipt-id") {
                            received.lock().await.push(id.to_str().unwrap().to_string());
                        }
                    }
                    // The killed gateway refuses or drops connections: expected.
                    _ => tokio::time::sleep(Duration::from_millis(2)).await,
                }
            }
        }));
    }
    let wait_for = |n: usize| {
        let received = received.clone();
        async move {
            for _ in 0..6000 {
                if received.lock().await.len() >= n {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            panic!("load made no progress");
        }
    };
    wait_for(300).await;
    a.start_kill().unwrap(); // SIGKILL
    a.wait().await.unwrap();
    let after_a = received.lock().await.len();
    wait_for(after_a + 200).await;
    b.start_kill().unwrap();
    b.wait().await.unwrap();
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        w.await.unwrap();
    }
    let received = received.lock().await.clone();

    // Every chain verifies in the store, with the checkpoints both processes signed.
    let o = env.run(&["audit", "verify"]);
    assert!(o.status.success(), "{}", text(&o));
    let out = stdout(&o);
    assert!(
        out.contains("acme: ok") && out.contains("beta: ok"),
        "{out}"
    );
    assert!(out.contains("checkpoint(s) verified"), "{out}");
    assert!(!out.contains("NOT checked"), "{out}");

    // Every receipt id a client saw is in the store.
    let export = env.dir.path().join("all.ndjson");
    let o = env.run(&["audit", "export", "--output", export.to_str().unwrap()]);
    assert!(o.status.success(), "{}", text(&o));
    let stored = export_ids(&export);
    let missing: Vec<_> = received.iter().filter(|id| !stored.contains(*id)).collect();
    assert!(
        missing.is_empty(),
        "{} of {} receipts lost: {missing:?}",
        missing.len(),
        received.len()
    );

    // The export verifies with the public key alone.
    let o = env.run(&["audit", "public-key"]);
    assert!(o.status.success(), "{}", text(&o));
    let pk_file = env.dir.path().join("pk.json");
    std::fs::write(&pk_file, &o.stdout).unwrap();
    let o = env.run(&[
        "audit",
        "verify",
        "--file",
        export.to_str().unwrap(),
        "--public-key",
        pk_file.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(
        stdout(&o).contains("checkpoint(s) verified"),
        "{}",
        text(&o)
    );

    // A restarted gateway continues the chains; a clean stop checkpoints the heads.
    let (mut c, url) = env.serve().await;
    let r = http
        .post(format!("{url}/v1/messages"))
        .header("x-api-key", &keys[0])
        .header("anthropic-version", "2023-06-01")
        .json(&json!({"model": "m", "max_tokens": 8, "messages": [{"role": "user", "content": "again"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let term = Command::new("kill")
        .args(["-TERM", &c.id().unwrap().to_string()])
        .status()
        .unwrap();
    assert!(term.success());
    assert!(c.wait().await.unwrap().success());
    let o = env.run(&["audit", "verify", "--tenant", "acme", "--json"]);
    assert!(o.status.success(), "{}", text(&o));
    let reports: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(reports[0]["ok"], true);
    assert_eq!(reports[0]["problems"], json!([]));
}

#[tokio::test]
async fn audit_commands_report_tampering_and_bad_input_clearly() {
    let (env, _mock) = setup().await;
    tenant_with_key(&env, "acme");
    tenant_with_key(&env, "beta");
    let o = env.run(&["audit", "checkpoint"]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(
        stdout(&o).contains("signed 2 checkpoint(s)"),
        "{}",
        text(&o)
    );
    let pk: Value = serde_json::from_slice(&env.run(&["audit", "public-key"]).stdout).unwrap();
    let pk_hex = pk["public_key_hex"].as_str().unwrap().to_string();

    let file = env.dir.path().join("acme.ndjson");
    let o = env.run(&[
        "audit",
        "export",
        "--tenant",
        "acme",
        "-o",
        file.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", text(&o));
    let f = file.to_str().unwrap();
    let o = env.run(&["audit", "verify", "--file", f, "--public-key", &pk_hex]);
    assert!(o.status.success(), "{}", text(&o));
    // Without a key the checkpoint signatures are not checked, and it says so.
    let o = env.run(&["audit", "verify", "--file", f]);
    assert!(o.status.success());
    assert!(stdout(&o).contains("NOT checked"), "{}", text(&o));
    // Another tenant is not in this file.
    let o = env.run(&["audit", "verify", "--file", f, "--tenant", "beta"]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));

    // Modify line 2: verify names the line, the seq and the receipt, exits 1.
    let original = std::fs::read_to_string(&file).unwrap();
    let mut lines: Vec<String> = original.lines().map(str::to_owned).collect();
    let id = serde_json::from_str::<Value>(&lines[1]).unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    lines[1] = lines[1].replace("\"decision\":\"allow\"", "\"decision\":\"deny\"");
    let bad = env.dir.path().join("bad.ndjson");
    std::fs::write(&bad, lines.join("\n")).unwrap();
    let o = env.run(&[
        "audit",
        "verify",
        "--file",
        bad.to_str().unwrap(),
        "--public-key",
        &pk_hex,
    ]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let out = stdout(&o);
    assert!(out.contains("acme: FAILED"), "{out}");
    assert!(
        out.contains(&format!("hash_mismatch at line 2, seq 2, receipt {id}")),
        "{out}"
    );
    // Delete a line: the gap is reported.
    let mut cut = original.lines().map(str::to_owned).collect::<Vec<_>>();
    cut.remove(0);
    std::fs::write(&bad, cut.join("\n")).unwrap();
    let o = env.run(&["audit", "verify", "--file", bad.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(stdout(&o).contains("missing"), "{}", text(&o));
    // A forged checkpoint: signed by another key.
    let other = "22".repeat(32);
    let o = env.run(&["audit", "verify", "--file", f, "--public-key", &other]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(
        stdout(&o).contains("checkpoint_unknown_key"),
        "{}",
        text(&o)
    );
    // Garbage lines.
    std::fs::write(&bad, "{not json\n").unwrap();
    let o = env.run(&["audit", "verify", "--file", bad.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(stdout(&o).contains("malformed at line 1"), "{}", text(&o));
    std::fs::write(&bad, "").unwrap();
    let o = env.run(&["audit", "verify", "--file", bad.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));

    // Bad input: exit 2 with a message naming the argument.
    for (args, needle) in [
        (
            vec!["audit", "verify", "--file", "/nonexistent/x.ndjson"],
            "--file",
        ),
        (
            vec!["audit", "verify", "--file", f, "--public-key", "nothex"],
            "--public-key",
        ),
        (
            vec!["audit", "verify", "--public-key", "abcd"],
            "--public-key",
        ),
        (
            vec!["audit", "export", "--since", "yesterday"],
            "--since must be an RFC 3339",
        ),
        (
            vec![
                "audit",
                "export",
                "--since",
                "2025-02-01T00:00:00Z",
                "--until",
                "2025-01-01T00:00:00Z",
            ],
            "earlier",
        ),
        (vec!["audit", "purge", "--now", "later"], "--now"),
    ] {
        let o = env.run(&args);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {}", text(&o));
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(err.contains(needle), "{args:?}: {err}");
    }
    let o = env.run(&["audit", "verify", "--tenant", "nobody"]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let o = env.run(&["audit", "export", "--tenant", "nobody"]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));

    // Tampering in the store itself is found by `audit verify` with its place.
    let db = env.dir.path().join("p.db");
    let pool = sqlx_like_update(&db, "acme", 1);
    assert!(pool, "could not tamper");
    let o = env.run(&["audit", "verify", "--tenant", "acme"]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(
        stdout(&o).contains("hash_mismatch at seq 1"),
        "{}",
        text(&o)
    );
}

/// Rewrites the decision inside one stored receipt body, as an attacker with file access
/// would (using the sqlite3 shell, which the test machine has; skipped otherwise).
fn sqlx_like_update(db: &Path, tenant: &str, seq: u64) -> bool {
    let sql = format!(
        "UPDATE receipts SET body = replace(body, '\"decision\":\"allow\"', '\"decision\":\"deny\"') WHERE tenant_id = '{tenant}' AND seq = {seq};"
    );
    match Command::new("sqlite3").arg(db).arg(sql).status() {
        Ok(s) => s.success(),
        Err(_) => {
            eprintln!("sqlite3 not installed: skipping the in-store tampering check");
            true
        }
    }
}

#[tokio::test]
async fn purge_from_the_cli_keeps_a_verifiable_anchor() {
    let (env, _mock) = setup().await;
    tenant_with_key(&env, "acme");
    let o = env.run(&["tenant", "update", "acme", "--attr", "retention_days=1"]);
    assert!(o.status.success(), "{}", text(&o));
    let o = env.run(&["audit", "purge"]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(stdout(&o).contains("nothing expired"), "{}", text(&o));
    let later = "2999-01-01T00:00:00Z";
    let o = env.run(&["audit", "purge", "--dry-run", "--now", later]);
    assert!(stdout(&o).contains("acme: would delete 3"), "{}", text(&o));
    let o = env.run(&["audit", "purge", "--now", later]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(stdout(&o).contains("acme: deleted 3"), "{}", text(&o));
    assert!(stdout(&o).contains("anchor checkpointed"), "{}", text(&o));
    let o = env.run(&["audit", "verify"]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(
        stdout(&o).contains("starts after anchor at seq 3"),
        "{}",
        text(&o)
    );
    // The chain continues from the anchor.
    let o = env.run(&["key", "create", "--tenant", "acme"]);
    assert!(o.status.success());
    let file = env.dir.path().join("e.ndjson");
    let o = env.run(&["audit", "export", "-o", file.to_str().unwrap()]);
    assert!(o.status.success());
    let pk: Value = serde_json::from_slice(&env.run(&["audit", "public-key"]).stdout).unwrap();
    let o = env.run(&[
        "audit",
        "verify",
        "--file",
        file.to_str().unwrap(),
        "--public-key",
        pk["public_key_b64"].as_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", text(&o));
}

/// A spilled receipt written as the gateway writes it (one canonical JSON line).
fn spill_line(tenant: &str, id: &str) -> String {
    let mut r = palisade_audit::Receipt::new(
        id.to_string(),
        tenant,
        palisade_audit::ReceiptKind::Message,
        palisade_audit::format_created_at(palisade_store::now_ms() as u64),
        "allow",
    );
    r.model = Some("claude-sonnet-4-5".into());
    let v = serde_json::to_value(&r).unwrap();
    palisade_audit::canonical_json(&v).unwrap()
}

#[tokio::test]
async fn replay_spill_appends_spilled_receipts_once_and_the_chain_verifies() {
    let (env, _mock) = setup().await;
    tenant_with_key(&env, "acme");
    let spill = env.dir.path().join("p.db.receipt-spill.ndjson");
    let aside = env.dir.path().join("p.db.receipt-spill.ndjson.replaying");
    let a = "019ab0c0-0000-7000-8000-00000000000a";
    let b = "019ab0c0-0000-7000-8000-00000000000b";
    let c = "019ab0c0-0000-7000-8000-00000000000c";
    std::fs::write(
        &spill,
        format!(
            "{}\n{}\n{}\n",
            spill_line("acme", a),
            spill_line("acme", b),
            spill_line("acme", a)
        ),
    )
    .unwrap();

    let o = env.run(&["audit", "replay-spill", "--dry-run"]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(
        stdout(&o).contains("3 receipt(s), would append 2, 1 already stored or repeated"),
        "{}",
        text(&o)
    );
    assert!(spill.exists(), "a dry run leaves the file where it was");

    let o = env.run(&["audit", "replay-spill"]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(stdout(&o).contains("appended 2 receipt(s)"), "{}", text(&o));
    assert!(!spill.exists() && !aside.exists(), "replayed file removed");

    let file = env.dir.path().join("after.ndjson");
    let o = env.run(&["audit", "export", "-o", file.to_str().unwrap()]);
    assert!(o.status.success(), "{}", text(&o));
    let ids = export_ids(&file);
    assert!(ids.contains(a) && ids.contains(b), "{ids:?}");
    let o = env.run(&["audit", "verify"]);
    assert!(o.status.success(), "{}", text(&o));

    // Again: nothing to do. Then a spill holding a stored receipt is skipped, not doubled.
    let o = env.run(&["audit", "replay-spill"]);
    assert!(stdout(&o).contains("nothing to replay"), "{}", text(&o));
    std::fs::write(&spill, format!("{}\n", spill_line("acme", a))).unwrap();
    let o = env.run(&["audit", "replay-spill"]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(
        stdout(&o).contains("appended 0 receipt(s) to their chains, 1 already stored"),
        "{}",
        text(&o)
    );

    // A damaged line stops the replay before anything is appended, naming line and
    // column; the file is kept aside for the next run.
    std::fs::write(&spill, format!("{}\n{{\"id\": 12\n", spill_line("acme", c))).unwrap();
    let o = env.run(&["audit", "replay-spill"]);
    assert!(!o.status.success(), "{}", text(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("receipt-spill.ndjson.replaying:2:") && err.contains("nothing was appended"),
        "{}",
        text(&o)
    );
    assert!(aside.exists(), "the damaged file is kept");
    let o = env.run(&["audit", "export", "-o", file.to_str().unwrap()]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(!export_ids(&file).contains(c));
    let o = env.run(&["audit", "verify"]);
    assert!(o.status.success(), "{}", text(&o));
}
