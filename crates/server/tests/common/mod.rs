//! Test harness: the real gateway on port 0 with a temporary SQLite store, in front of
//! the in-repo mock upstream.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use palisade_mock::{MockConfig, MockServer};
use palisade_server::RunningServer;
use palisade_server::config::Config;
use serde_json::{Value, json};

pub const PLATFORM_KEY: &str = "sk-ant-platform-test-key";
pub const ADMIN: &str = "test-admin-token-0123456789";

pub struct Harness {
    pub mock: MockServer,
    pub server: Option<RunningServer>,
    pub http: reqwest::Client,
    pub dir: tempfile::TempDir,
    pub base: String,
}

impl Harness {
    pub async fn start() -> Self {
        Self::start_with(|_| {}).await
    }

    pub async fn start_with(f: impl FnOnce(&mut Config)) -> Self {
        let mock = MockServer::start(MockConfig {
            required_api_key: Some(PLATFORM_KEY.into()),
            ..MockConfig::default()
        })
        .await
        .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let mut cfg = Config {
            listen: "127.0.0.1:0".into(),
            ..Config::default()
        };
        cfg.storage.url = format!("sqlite://{}", dir.path().join("p.db").display());
        cfg.anthropic.base_url = mock.base_url();
        cfg.anthropic.api_key = Some(PLATFORM_KEY.into());
        cfg.admin.token = Some(ADMIN.into());
        cfg.secrets.master_key = Some("00".repeat(32));
        cfg.retry.max_retries = 0;
        cfg.retry.base_backoff_ms = 10;
        f(&mut cfg);
        let server = RunningServer::start(cfg).await.unwrap();
        let base = server.base_url();
        Self {
            mock,
            server: Some(server),
            http: reqwest::Client::new(),
            dir,
            base,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub fn state(&self) -> &palisade_server::state::AppState {
        &self.server.as_ref().unwrap().state
    }

    pub async fn admin(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> (u16, Value) {
        let mut req = self.http.request(method, self.url(path)).bearer_auth(ADMIN);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let r = req.send().await.unwrap();
        let status = r.status().as_u16();
        let text = r.text().await.unwrap();
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    /// Creates a tenant and a member key; returns the key secret.
    pub async fn tenant(&self, id: &str) -> String {
        let (s, v) = self
            .admin(
                reqwest::Method::POST,
                "/admin/v1/tenants",
                Some(json!({"id": id, "name": id})),
            )
            .await;
        assert_eq!(s, 201, "{v}");
        self.key(id, json!({"user_id": format!("{id}-user")}))
            .await
            .0
    }

    /// Creates a key; returns (secret, key id).
    pub async fn key(&self, tenant: &str, body: Value) -> (String, String) {
        let (s, v) = self
            .admin(
                reqwest::Method::POST,
                &format!("/admin/v1/tenants/{tenant}/keys"),
                Some(body),
            )
            .await;
        assert_eq!(s, 201, "{v}");
        (
            v["secret"].as_str().unwrap().to_string(),
            v["id"].as_str().unwrap().to_string(),
        )
    }

    pub async fn post(&self, path: &str, key: &str, body: &Value) -> reqwest::Response {
        self.http
            .post(self.url(path))
            .header("x-api-key", key)
            .header("anthropic-version", "2023-06-01")
            .json(body)
            .send()
            .await
            .unwrap()
    }

    pub async fn message(
        &self,
        key: &str,
        body: &Value,
    ) -> (u16, Value, reqwest::header::HeaderMap) {
        let r = self.post("/v1/messages", key, body).await;
        let status = r.status().as_u16();
        let headers = r.headers().clone();
        let text = r.text().await.unwrap();
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
            headers,
        )
    }

    pub async fn get(&self, path: &str, key: &str) -> (u16, Value) {
        let r = self
            .http
            .get(self.url(path))
            .header("x-api-key", key)
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    pub async fn receipts(&self, key: &str) -> Vec<Value> {
        let (s, v) = self.get("/v1/receipts?limit=1000", key).await;
        assert_eq!(s, 200, "{v}");
        v["data"].as_array().unwrap().clone()
    }

    pub async fn stop(&mut self) {
        if let Some(s) = self.server.take() {
            s.shutdown().await;
        }
    }
}

pub fn chat(text: &str) -> Value {
    json!({
        "model": "claude-sonnet-4-5",
        "max_tokens": 64,
        "messages": [{"role": "user", "content": text}]
    })
}

pub fn stream_chat(text: &str) -> Value {
    let mut v = chat(text);
    v["stream"] = json!(true);
    v
}

/// Event names of an SSE body, in order.
pub fn event_names(sse: &str) -> Vec<String> {
    sse.lines()
        .filter_map(|l| l.strip_prefix("event: "))
        .map(str::to_string)
        .collect()
}

pub fn sse_data(sse: &str) -> Vec<Value> {
    sse.lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .filter_map(|d| serde_json::from_str(d).ok())
        .collect()
}

impl Harness {
    /// Puts and activates a policy (tenant id, or None for the platform); returns its hash.
    pub async fn put_policy(&self, tenant: Option<&str>, yaml: &str) -> String {
        let path = match tenant {
            Some(t) => format!("/admin/v1/tenants/{t}/policy?activate=true"),
            None => "/admin/v1/platform/policy?activate=true".to_string(),
        };
        let r = self
            .http
            .post(self.url(&path))
            .bearer_auth(ADMIN)
            .header("content-type", "application/yaml")
            .body(yaml.to_string())
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        let v: Value = r.json().await.unwrap();
        assert!(status == 201 || status == 200, "{v}");
        v["hash"].as_str().unwrap().to_string()
    }
}

/// A tenant policy that lets every tool run.
pub const ALLOW_ALL: &str = "tools:\n  - id: allow-all\n    match: \"*\"\n    action: allow\n";

/// Webhook deliveries seen by `webhook_receiver`: (headers, body).
pub type Seen = std::sync::Arc<std::sync::Mutex<Vec<(axum::http::HeaderMap, Vec<u8>)>>>;

/// A webhook receiver on loopback: records (headers, body) and fails the first request
/// with 503 (so retries are exercised). Returns its URL.
pub async fn webhook_receiver() -> (String, Seen) {
    let seen: Seen = Default::default();
    let s2 = seen.clone();
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(
            move |headers: axum::http::HeaderMap, body: axum::body::Bytes| {
                let seen = s2.clone();
                async move {
                    let mut v = seen.lock().unwrap();
                    v.push((headers, body.to_vec()));
                    if v.len() == 1 {
                        axum::http::StatusCode::SERVICE_UNAVAILABLE
                    } else {
                        axum::http::StatusCode::OK
                    }
                }
            },
        ),
    );
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(l, app).await.unwrap() });
    (format!("http://{addr}/hook"), seen)
}
