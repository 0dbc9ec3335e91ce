//! Scale-out: three `palisade serve` processes sharing one PostgreSQL database behave as
//! one gateway. Load is spread across them; a key revoked and a policy activated through
//! one replica take effect on every replica within a second (pushed, with a 30 s cache TTL); one replica is killed with SIGKILL mid-load and no
//! receipt whose response reached a client is lost; every tenant's chain verifies. Three
//! processes sharing Redis enforce one rate limit and one token limit exactly.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use palisade_mock::{MockConfig, MockServer};
use serde_json::{Value, json};
use std::collections::HashSet;
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::AsyncBufReadExt;
use tokio::sync::Mutex;

const BIN: &str = env!("CARGO_BIN_EXE_palisade");
const ADMIN: &str = "replica-test-admin-token-0123456789";
const PLATFORM_KEY: &str = "sk-ant-replica-test";

/// A fresh database on the test server, dropped at the end.
struct Db {
    admin_url: String,
    name: String,
    url: String,
}

impl Db {
    async fn create() -> Option<Db> {
        let Ok(base) = std::env::var("PALISADE_TEST_POSTGRES_URL") else {
            if std::env::var("CI").is_ok() {
                panic!("PALISADE_TEST_POSTGRES_URL must be set in CI");
            }
            eprintln!("SKIPPED: set PALISADE_TEST_POSTGRES_URL to run the multi-replica test");
            return None;
        };
        let name = format!("palisade_rep_{}", uuid::Uuid::new_v4().simple());
        let mut conn = <sqlx::PgConnection as sqlx::Connection>::connect(&base)
            .await
            .unwrap();
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .execute(&mut conn)
            .await
            .unwrap();
        let (prefix, _) = base.rsplit_once('/').unwrap();
        Some(Db {
            admin_url: base.clone(),
            url: format!("{prefix}/{name}"),
            name,
        })
    }

    async fn drop_db(&self) {
        if let Ok(mut conn) =
            <sqlx::PgConnection as sqlx::Connection>::connect(&self.admin_url).await
        {
            let _ = sqlx::query(sqlx::AssertSqlSafe(format!(
                "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                self.name
            )))
            .execute(&mut conn)
            .await;
        }
    }
}

fn vars(db: &str, upstream: &str) -> Vec<(&'static str, String)> {
    vec![
        ("PALISADE_STORAGE_URL", db.to_string()),
        ("PALISADE_SECRETS_MASTER_KEY", "22".repeat(32)),
        ("PALISADE_AUDIT_CHECKPOINT_KEY", "33".repeat(32)),
        ("PALISADE_ADMIN_TOKEN", ADMIN.into()),
        ("PALISADE_ANTHROPIC_BASE_URL", upstream.to_string()),
        ("ANTHROPIC_API_KEY", PLATFORM_KEY.into()),
        ("PALISADE_LISTEN", "127.0.0.1:0".into()),
        ("PALISADE_RETRY_MAX_RETRIES", "0".into()),
        ("PALISADE_LOG_FORMAT", "json".into()),
        ("PALISADE_LOG", "info".into()),
        // A long cache TTL: changes must reach the other replicas through the pushed
        // change feed (LISTEN/NOTIFY), not by expiry.
        ("PALISADE_STORAGE_CACHE_TTL_MS", "30000".into()),
    ]
}

async fn serve(db: &str, upstream: &str) -> (tokio::process::Child, String) {
    serve_with(db, upstream, Vec::new()).await
}

async fn serve_with(
    db: &str,
    upstream: &str,
    extra: Vec<(&'static str, String)>,
) -> (tokio::process::Child, String) {
    let mut c = tokio::process::Command::new(BIN);
    c.env_clear()
        .arg("serve")
        .envs(vars(db, upstream))
        .envs(extra)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let mut child = c.spawn().unwrap();
    let stderr = child.stderr.take().unwrap();
    let mut lines = tokio::io::BufReader::new(stderr).lines();
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
    .expect("gateway did not start");
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    (child, format!("http://{addr}"))
}

async fn admin(http: &reqwest::Client, base: &str, path: &str, body: Value) -> Value {
    let r = http
        .post(format!("{base}{path}"))
        .bearer_auth(ADMIN)
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = r.status();
    let v: Value = r.json().await.unwrap();
    assert!(status.is_success(), "{path}: {status} {v}");
    v
}

async fn call(http: &reqwest::Client, base: &str, key: &str) -> (u16, Option<String>) {
    call_with(http, base, key, "hi").await
}

async fn call_with(
    http: &reqwest::Client,
    base: &str,
    key: &str,
    text: &str,
) -> (u16, Option<String>) {
    let r = http
        .post(format!("{base}/v1/messages"))
        .header("x-api-key", key)
        .json(&json!({"model": "m", "max_tokens": 8, "messages": [{"role": "user", "content": text}]}))
        .send()
        .await;
    match r {
        Ok(r) => {
            let status = r.status().as_u16();
            let id = r
                .headers()
                .get("x-palisade-receipt-id")
                .and_then(|v| v.to_str().ok())
                .map(str::to_string);
            // The response must reach the client whole for its receipt id to count.
            match r.bytes().await {
                Ok(_) => (status, id),
                Err(_) => (0, None),
            }
        }
        Err(_) => (0, None),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_replicas_on_one_postgres_behave_as_one_gateway() {
    let Some(db) = Db::create().await else { return };
    let mock = MockServer::start(MockConfig {
        required_api_key: Some(PLATFORM_KEY.into()),
        record: false,
        ..MockConfig::default()
    })
    .await
    .unwrap();
    let upstream = mock.base_url();
    let mut replicas = Vec::new();
    for _ in 0..3 {
        replicas.push(serve(&db.url, &upstream).await);
    }
    let bases: Vec<String> = replicas.iter().map(|(_, b)| b.clone()).collect();
    let http = reqwest::Client::new();

    // Tenants and keys through different replicas.
    let mut keys = Vec::new();
    for (i, t) in ["t-a", "t-b", "t-c"].iter().enumerate() {
        admin(
            &http,
            &bases[i],
            "/admin/v1/tenants",
            json!({"id": t, "name": t}),
        )
        .await;
        let k = admin(
            &http,
            &bases[(i + 1) % 3],
            &format!("/admin/v1/tenants/{t}/keys"),
            json!({}),
        )
        .await;
        keys.push((
            t.to_string(),
            k["secret"].as_str().unwrap().to_string(),
            k["id"].as_str().unwrap().to_string(),
        ));
    }

    // Load spread across the replicas.
    let mut tasks = Vec::new();
    for i in 0..60 {
        let http = http.clone();
        let base = bases[i % 3].clone();
        let key = keys[i % 3].1.clone();
        tasks.push(tokio::spawn(async move { call(&http, &base, &key).await }));
    }
    for t in tasks {
        let (status, _) = t.await.unwrap();
        assert_eq!(status, 200);
    }

    // A key revoked through replica 0 is refused by every replica within a second.
    let (tenant, key, key_id) = keys[0].clone();
    for b in &bases {
        assert_eq!(call(&http, b, &key).await.0, 200);
    }
    let revoked_at = Instant::now();
    admin(
        &http,
        &bases[0],
        &format!("/admin/v1/tenants/{tenant}/keys/{key_id}/revoke"),
        json!({}),
    )
    .await;
    let mut refused_after = Vec::new();
    for b in &bases {
        loop {
            if call(&http, b, &key).await.0 == 401 {
                refused_after.push(revoked_at.elapsed());
                break;
            }
            assert!(
                revoked_at.elapsed() < Duration::from_secs(5),
                "replica {b} still accepts a revoked key"
            );
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }
    reached_every_replica("revocation", &refused_after);

    // A policy activated through replica 1 decides on every replica within a second.
    let guard = |base: String, key: String| {
        let http = http.clone();
        async move {
            let r = http
                .post(format!("{base}/v1/guard/tool"))
                .header("x-api-key", key)
                .json(&json!({"tool": "ping", "args": {}}))
                .send()
                .await
                .unwrap();
            let v: Value = r.json().await.unwrap();
            v["decision"].as_str().unwrap_or("").to_string()
        }
    };
    let allow = "tools:\n  - id: ping\n    match: ping\n    action: allow\n";
    put_policy(&http, &bases[1], "t-b", allow).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    for b in &bases {
        assert_eq!(guard(b.clone(), keys[1].1.clone()).await, "allow");
    }
    let activated_at = Instant::now();
    put_policy(&http, &bases[1], "t-b", &allow.replace("allow\n", "deny\n")).await;
    let mut seen_after = Vec::new();
    for b in &bases {
        while guard(b.clone(), keys[1].1.clone()).await != "deny" {
            assert!(
                activated_at.elapsed() < Duration::from_secs(5),
                "replica {b} still decides with the old policy"
            );
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        seen_after.push(activated_at.elapsed());
    }
    reached_every_replica("policy activation", &seen_after);

    // A tenant's own upstream key set through replica 0 is used by every replica (the mock
    // takes only the platform key, so calls fail), and removed through replica 1 it is
    // dropped by every replica: within a second, not when the key cache expires (5 s).
    let (byok_tenant, byok_key) = (keys[2].0.clone(), keys[2].1.clone());
    for b in &bases {
        assert_eq!(call(&http, b, &byok_key).await.0, 200);
    }
    let path = format!("/admin/v1/tenants/{byok_tenant}/upstream-key");
    let upstream_key = |method: reqwest::Method, base: &str| {
        http.request(method, format!("{base}{path}"))
            .bearer_auth(ADMIN)
            .json(&json!({"api_key": "sk-ant-the-tenants-own-key"}))
            .send()
    };
    for (method, base, want_ok) in [
        (reqwest::Method::PUT, &bases[0], false),
        (reqwest::Method::DELETE, &bases[1], true),
    ] {
        let changed_at = Instant::now();
        let r = upstream_key(method.clone(), base).await.unwrap();
        assert!(
            r.status().is_success(),
            "{method} upstream key: {}",
            r.status()
        );
        let mut seen_after = Vec::new();
        for b in &bases {
            while (call(&http, b, &byok_key).await.0 == 200) != want_ok {
                assert!(
                    changed_at.elapsed() < Duration::from_secs(5),
                    "replica {b} did not see the upstream key {method}"
                );
                tokio::time::sleep(Duration::from_millis(25)).await;
            }
            seen_after.push(changed_at.elapsed());
        }
        reached_every_replica(&format!("upstream key {method}"), &seen_after);
    }

    // SIGKILL one replica mid-load; every receipt id a client received must be stored.
    let received = Arc::new(Mutex::new(HashSet::new()));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut workers = Vec::new();
    for w in 0..12 {
        let http = http.clone();
        let bases = bases.clone();
        let key = keys[1 + w % 2].1.clone();
        let received = received.clone();
        let stop = stop.clone();
        workers.push(tokio::spawn(async move {
            let mut n = w;
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                let (status, id) = call(&http, &bases[n % 3], &key).await;
                if status == 200 {
                    received.lock().await.insert(id.unwrap());
                }
                n += 1;
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(700)).await;
    replicas[2].0.start_kill().unwrap();
    let _ = replicas[2].0.wait().await;
    tokio::time::sleep(Duration::from_millis(700)).await;
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    for w in workers {
        w.await.unwrap();
    }
    let received = received.lock().await.clone();
    assert!(received.len() > 20, "load ran: {}", received.len());

    // Every received receipt is in the store, and every chain verifies.
    let store = palisade_store::open(&db.url).await.unwrap();
    for (t, _, _) in &keys {
        let chain = store.chain(t, 1, 1_000_000).await.unwrap();
        let ids: HashSet<String> = chain.iter().map(|r| r.id.clone()).collect();
        let report = palisade_audit::verify_chain(t, &chain, None);
        assert!(report.ok, "{t}: {:?}", report.problems);
        for id in received.iter() {
            if let Some(r) = store.get_receipt(t, id).await.unwrap() {
                assert!(ids.contains(&r.id));
            }
        }
    }
    let mut missing = 0;
    for id in received.iter() {
        let mut found = false;
        for (t, _, _) in &keys {
            if store.get_receipt(t, id).await.unwrap().is_some() {
                found = true;
                break;
            }
        }
        if !found {
            missing += 1;
        }
    }
    assert_eq!(
        missing, 0,
        "{missing} receipts of delivered responses are missing"
    );

    for (mut child, _) in replicas {
        let _ = child.start_kill();
        let _ = child.wait().await;
    }
    drop(store);
    db.drop_db().await;
}

/// A change made through one replica took effect on every replica within a second and a
/// quarter (pushed by the change feed; the caches' TTLs are longer).
fn reached_every_replica(what: &str, seen_after: &[Duration]) {
    eprintln!("{what} seen by the replicas after {seen_after:?}");
    let slowest = seen_after.iter().max().unwrap();
    assert!(
        *slowest <= Duration::from_millis(1250),
        "{what} took {slowest:?} to reach every replica"
    );
}

async fn put_policy(http: &reqwest::Client, base: &str, tenant: &str, yaml: &str) {
    let r = http
        .post(format!(
            "{base}/admin/v1/tenants/{tenant}/policy?activate=true"
        ))
        .bearer_auth(ADMIN)
        .header("content-type", "application/yaml")
        .body(yaml.to_string())
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "{}", r.text().await.unwrap());
}

/// Three `palisade serve` processes sharing Redis (and PostgreSQL) count one limit: of 80
/// concurrent calls spread over them against a limit of 25 requests, exactly 25 pass;
/// under a shared token limit the tokens really used by the calls let through stay within it.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn replicas_sharing_redis_enforce_one_limit_exactly() {
    let Ok(redis) = std::env::var("PALISADE_TEST_REDIS_URL") else {
        assert!(
            std::env::var("CI").is_err(),
            "PALISADE_TEST_REDIS_URL must be set in CI"
        );
        eprintln!("SKIPPED: set PALISADE_TEST_REDIS_URL to run the shared-limit test");
        return;
    };
    let Some(db) = Db::create().await else { return };
    let mock = MockServer::start(MockConfig {
        required_api_key: Some(PLATFORM_KEY.into()),
        record: false,
        ..MockConfig::default()
    })
    .await
    .unwrap();
    let upstream = mock.base_url();
    let prefix = format!("paltest:procs:{}:", uuid::Uuid::new_v4().simple());
    let extra = || {
        vec![
            ("PALISADE_LIMITS_BACKEND", "redis".to_string()),
            ("PALISADE_REDIS_URL", redis.clone()),
            ("PALISADE_LIMITS_KEY_PREFIX", prefix.clone()),
            ("PALISADE_LIMITS_ON_REDIS_ERROR", "fail_closed".to_string()),
        ]
    };
    let mut replicas = Vec::new();
    for _ in 0..3 {
        replicas.push(serve_with(&db.url, &upstream, extra()).await);
    }
    let bases: Vec<String> = replicas.iter().map(|r| r.1.clone()).collect();
    let http = reqwest::Client::new();
    let allow = "tools:\n  - id: all\n    match: \"*\"\n    action: allow\n";
    let mut keys = Vec::new();
    for (t, limit) in [
        (
            "req",
            "limits:\n  - id: rpd\n    requests: 25\n    per: day\n",
        ),
        (
            "tok",
            "limits:\n  - id: tpd\n    tokens: 600\n    per: day\n",
        ),
    ] {
        admin(
            &http,
            &bases[0],
            "/admin/v1/tenants",
            json!({"id": t, "name": t}),
        )
        .await;
        put_policy(&http, &bases[1], t, &format!("{allow}{limit}")).await;
        let k = admin(
            &http,
            &bases[0],
            &format!("/admin/v1/tenants/{t}/keys"),
            json!({}),
        )
        .await;
        keys.push(k["secret"].as_str().unwrap().to_string());
    }
    // Policies are cached for up to a second per process.
    tokio::time::sleep(Duration::from_millis(1100)).await;

    let burst = |key: String, n: usize| {
        let http = http.clone();
        let bases = bases.clone();
        async move {
            let mut tasks = Vec::new();
            for i in 0..n {
                let (http, base, key) = (http.clone(), bases[i % 3].clone(), key.clone());
                tasks.push(tokio::spawn(async move {
                    call_with(&http, &base, &key, &format!("call number {i}")).await
                }));
            }
            let mut out = Vec::new();
            for t in tasks {
                out.push(t.await.unwrap());
            }
            out
        }
    };
    let results = burst(keys[0].clone(), 80).await;
    let ok = results.iter().filter(|r| r.0 == 200).count();
    let limited = results.iter().filter(|r| r.0 == 429).count();
    assert_eq!((ok, limited), (25, 55), "{results:?}");

    let results = burst(keys[1].clone(), 60).await;
    assert!(
        results.iter().any(|r| r.0 == 429),
        "the token limit never bit"
    );
    assert!(results.iter().all(|r| r.0 == 200 || r.0 == 429));
    let store = palisade_store::open(&db.url).await.unwrap();
    let chain = store.chain("tok", 1, 1_000_000).await.unwrap();
    let used: u64 = chain
        .iter()
        .filter(|r| r.decision == "allow")
        .map(|r| r.input_tokens.unwrap_or(0) + r.output_tokens.unwrap_or(0))
        .sum();
    let passed = results.iter().filter(|r| r.0 == 200).count();
    eprintln!("token limit 600: {passed} calls passed using {used} tokens");
    assert!(used <= 600, "{used} tokens went through a 600-token limit");
    assert!(used > 0);

    for (mut child, _) in replicas {
        let _ = child.start_kill();
        let _ = child.wait().await;
    }
    drop(store);
    db.drop_db().await;
}
