//! Gateway configuration: a YAML file (`palisade.yaml`) overlaid by `PALISADE_*`
//! environment variables. Every leaf setting has an env name derived from its path
//! (`anthropic.base_url` → `PALISADE_ANTHROPIC_BASE_URL`), so nothing needs a file.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::time::Duration;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Address the data and control planes listen on.
    pub listen: String,
    pub storage: StorageConfig,
    pub anthropic: AnthropicConfig,
    pub timeouts: TimeoutConfig,
    pub limits: LimitConfig,
    pub retry: RetryConfig,
    pub admin: AdminConfig,
    pub secrets: SecretsConfig,
    pub receipts: ReceiptConfig,
    pub policy: PolicyConfig,
    pub audit: AuditConfig,
    /// Zero-trust access: trusted proxies and IdP (JWT) trust.
    pub auth: crate::access::AuthConfig,
    /// TLS termination and client certificates (`tls.rs`; off unless `cert_file` is set).
    pub tls: crate::tls::TlsConfig,
    /// Redis, shared by replicas for rate-limit counters (`limits.backend: redis`).
    pub redis: RedisConfig,
    /// Sentinel anomaly detection, alert routing and `/metrics`.
    pub sentinel: crate::sentinel::SentinelSettings,
    /// Moderation providers (gateway-wide; thresholds live in policies).
    pub moderation: ModerationConfig,
}

/// Gateway-wide moderation settings (see docs/moderation.md). Per-tenant thresholds,
/// provider choice and failure policy are in the policy's `moderation:` section.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ModerationConfig {
    /// Model the LLM judge runs on (through `anthropic.base_url`).
    pub judge_model: String,
    /// `max_tokens` of a judge call; a verdict is small.
    pub judge_max_tokens: u64,
    /// Whole provider call (judge or HTTP classifier), body included.
    pub timeout_ms: u64,
    /// Most bytes of text sent for one verdict (the first bytes of the text are judged).
    pub max_text_bytes: usize,
    /// Largest provider response read.
    pub max_response_bytes: usize,
    /// Whether judge tokens count toward the tenant's token limits and budgets.
    pub count_judge_tokens: bool,
    /// Hosts (`host` or `host:port`, comma-separated) a tenant policy's `http_url` may
    /// name. Empty: tenants cannot choose an HTTP classifier (the platform policy can).
    pub http_allowed_hosts: String,
}

impl Default for ModerationConfig {
    fn default() -> Self {
        Self {
            judge_model: "claude-haiku-4-5".into(),
            judge_max_tokens: 200,
            timeout_ms: 3_000,
            max_text_bytes: 32 * 1024,
            max_response_bytes: 64 * 1024,
            count_judge_tokens: true,
            http_allowed_hosts: String::new(),
        }
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RedisConfig {
    /// `redis://host:port/db`; required when `limits.backend` is `redis`.
    pub url: Option<String>,
}

/// Signed checkpoints and retention (see docs/receipts.md).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuditConfig {
    /// Ed25519 signing key for checkpoints: a 32-byte seed (hex or base64) or a PKCS#8
    /// document (PEM or base64 DER).
    pub checkpoint_key: Option<String>,
    /// File holding the key in one of those forms (or raw DER). With neither setting, the
    /// SQLite default keeps a seed in `<db>.checkpoint-key` (mode 0600), created once.
    pub checkpoint_key_file: Option<String>,
    /// How often each tenant's chain head is signed when it advanced (0 = never).
    pub checkpoint_interval_ms: u64,
    /// How often the retention purge runs (0 = never; `palisade audit purge` runs it once).
    pub purge_interval_ms: u64,
    /// Retention for tenants without a `retention_days` attribute, and for deleted
    /// tenants' chains (0 = keep forever).
    pub default_retention_days: u64,
    /// SIEM sinks fed with every committed receipt (`sinks.rs`; config file only).
    pub sinks: Vec<crate::sinks::SinkConfig>,
}

impl Default for AuditConfig {
    fn default() -> Self {
        Self {
            checkpoint_key: None,
            checkpoint_key_file: None,
            checkpoint_interval_ms: 60_000,
            purge_interval_ms: 3_600_000,
            default_retention_days: 0,
            sinks: Vec::new(),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PolicyConfig {
    /// Remove from the request's `tools` those the caller may never use.
    pub strip_tools: bool,
    /// What a client gets for a withheld `tool_use`: `replace` (a text block naming the
    /// denial and receipt) or `refuse` (the whole response becomes a 403).
    pub withheld_tool_use: String,
    /// Largest streamed tool input held for a decision.
    pub max_tool_input_bytes: usize,
}

impl Default for PolicyConfig {
    fn default() -> Self {
        Self {
            strip_tools: true,
            withheld_tool_use: "replace".into(),
            max_tool_input_bytes: 1024 * 1024,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StorageConfig {
    /// `sqlite://PATH` (the embedded default) or `postgres://…`.
    pub url: String,
    /// How long a cached key, tenant or active policy may be served before it is read
    /// again. On PostgreSQL, changes are also pushed to every replica at once (LISTEN /
    /// NOTIFY), so this is only the backstop; on SQLite it bounds how long a change made
    /// by another process (the CLI) takes to be seen.
    pub cache_ttl_ms: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AnthropicConfig {
    pub base_url: String,
    /// The platform's upstream key. `ANTHROPIC_API_KEY` is also read when this is empty.
    pub api_key: Option<String>,
    /// `anthropic-version` sent when the client sent none.
    pub default_version: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TimeoutConfig {
    pub connect_ms: u64,
    /// Until the upstream's response headers arrive.
    pub first_byte_ms: u64,
    /// Longest silence between two stream events.
    pub idle_ms: u64,
    /// Whole non-streaming call, body included.
    pub total_ms: u64,
    /// How long SIGTERM waits for in-flight requests.
    pub shutdown_grace_ms: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitConfig {
    pub max_body_bytes: usize,
    pub max_json_depth: usize,
    pub max_sse_event_bytes: usize,
    /// Largest upstream non-streaming body accepted.
    pub max_upstream_body_bytes: usize,
    /// Where policy rate limits are counted: `local` (this process) or `redis` (shared).
    pub backend: String,
    /// When Redis is unreachable: `local` (count in process, warn) or `fail_closed` (503).
    pub on_redis_error: String,
    /// Prefix of every counter key (one per deployment or test).
    pub key_prefix: String,
    /// USD per million tokens by model (globs, first match wins), for `cost_usd` budgets.
    /// A model no entry matches is charged the highest listed prices, so a budget cannot be
    /// dodged by naming a new model. From the environment: `PALISADE_LIMITS_PRICES` as JSON.
    pub prices: Vec<ModelPrice>,
}

/// One row of the price table.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ModelPrice {
    /// Model name glob (`claude-sonnet-4*`).
    pub model: String,
    pub input_per_mtok: f64,
    pub output_per_mtok: f64,
}

/// Anthropic's list prices (USD per million tokens) as published when this was written;
/// set `limits.prices` to the prices of your own contract.
fn default_prices() -> Vec<ModelPrice> {
    [
        ("claude-opus-4-5*", 5.0, 25.0),
        ("claude-opus-4*", 15.0, 75.0),
        ("claude-3-opus*", 15.0, 75.0),
        ("claude-sonnet-4*", 3.0, 15.0),
        ("claude-3-7-sonnet*", 3.0, 15.0),
        ("claude-3-5-sonnet*", 3.0, 15.0),
        ("claude-haiku-4-5*", 1.0, 5.0),
        ("claude-3-5-haiku*", 0.8, 4.0),
        ("claude-3-haiku*", 0.25, 1.25),
    ]
    .into_iter()
    .map(|(m, i, o)| ModelPrice {
        model: m.into(),
        input_per_mtok: i,
        output_per_mtok: o,
    })
    .collect()
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RetryConfig {
    /// Extra attempts for non-streaming calls on 429/529/5xx (0 = none).
    pub max_retries: u32,
    pub base_backoff_ms: u64,
    /// A `retry-after` longer than this is not waited for; the error goes to the client.
    pub max_backoff_ms: u64,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AdminConfig {
    /// Platform admin bearer token. Without one the control plane refuses everything.
    pub token: Option<String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SecretsConfig {
    /// Master key (base64 of 32 bytes) wrapping per-tenant data keys.
    pub master_key: Option<String>,
    /// File holding the master key; created (mode 0600) when missing and no key is given.
    pub master_key_file: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ReceiptConfig {
    /// Most receipts committed in one transaction (group commit).
    pub max_batch: usize,
    /// Whether the client address is recorded.
    pub record_client_addr: bool,
    /// `sync` (default: a response waits for its receipt's commit) or `write_behind`
    /// (it does not; see docs/receipts.md for the loss window).
    pub mode: String,
    /// Write-behind: most receipts accepted but not yet committed; callers wait beyond.
    pub write_behind_max_pending: usize,
    /// NDJSON file for receipts that could not be committed (fail-open tenants, failed
    /// write-behind batches). Default: `<db>.receipt-spill.ndjson` for SQLite,
    /// `./palisade-receipt-spill.ndjson` otherwise.
    pub spill_file: Option<String>,
    /// Content capture (tenants with `capture_content: true`): most bytes kept per
    /// direction (prompt, output); longer content is truncated and flagged.
    pub capture_max_bytes: usize,
}

impl ReceiptConfig {
    /// The spill file path for a storage URL.
    pub fn spill_path(&self, storage_url: &str) -> String {
        if let Some(p) = &self.spill_file {
            return p.clone();
        }
        let db = storage_url
            .strip_prefix("sqlite://")
            .or_else(|| storage_url.strip_prefix("sqlite:"))
            .map(|p| p.split('?').next().unwrap_or(p))
            .filter(|p| !p.contains(":memory:") && !p.is_empty());
        match db {
            Some(p) => format!("{p}.receipt-spill.ndjson"),
            None => "./palisade-receipt-spill.ndjson".into(),
        }
    }
}

impl Default for Config {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:8080".into(),
            storage: StorageConfig::default(),
            anthropic: AnthropicConfig::default(),
            timeouts: TimeoutConfig::default(),
            limits: LimitConfig::default(),
            retry: RetryConfig::default(),
            admin: AdminConfig::default(),
            secrets: SecretsConfig::default(),
            receipts: ReceiptConfig::default(),
            policy: PolicyConfig::default(),
            audit: AuditConfig::default(),
            auth: crate::access::AuthConfig::default(),
            tls: crate::tls::TlsConfig::default(),
            redis: RedisConfig::default(),
            sentinel: crate::sentinel::SentinelSettings::default(),
            moderation: ModerationConfig::default(),
        }
    }
}

impl Default for StorageConfig {
    fn default() -> Self {
        Self {
            url: "sqlite://./palisade.db".into(),
            cache_ttl_ms: 1000,
        }
    }
}

impl Default for AnthropicConfig {
    fn default() -> Self {
        Self {
            base_url: "https://api.anthropic.com".into(),
            api_key: None,
            default_version: "2023-06-01".into(),
        }
    }
}

impl Default for TimeoutConfig {
    fn default() -> Self {
        Self {
            connect_ms: 5_000,
            first_byte_ms: 120_000,
            idle_ms: 60_000,
            total_ms: 600_000,
            shutdown_grace_ms: 30_000,
        }
    }
}

impl Default for LimitConfig {
    fn default() -> Self {
        Self {
            max_body_bytes: 32 * 1024 * 1024,
            max_json_depth: 64,
            max_sse_event_bytes: 1024 * 1024,
            max_upstream_body_bytes: 64 * 1024 * 1024,
            backend: "local".into(),
            on_redis_error: "local".into(),
            key_prefix: "palisade:rl:".into(),
            prices: default_prices(),
        }
    }
}

impl Default for RetryConfig {
    fn default() -> Self {
        Self {
            max_retries: 2,
            base_backoff_ms: 250,
            max_backoff_ms: 10_000,
        }
    }
}

impl Default for ReceiptConfig {
    fn default() -> Self {
        Self {
            max_batch: 512,
            record_client_addr: true,
            mode: "sync".into(),
            write_behind_max_pending: 10_000,
            spill_file: None,
            capture_max_bytes: 256 * 1024,
        }
    }
}

impl TimeoutConfig {
    pub fn connect(&self) -> Duration {
        Duration::from_millis(self.connect_ms)
    }
    pub fn first_byte(&self) -> Duration {
        Duration::from_millis(self.first_byte_ms)
    }
    pub fn idle(&self) -> Duration {
        Duration::from_millis(self.idle_ms)
    }
    pub fn total(&self) -> Duration {
        Duration::from_millis(self.total_ms)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{path}: {message}")]
    File { path: String, message: String },
    #[error("environment variable {name}: {message}")]
    Env { name: String, message: String },
    #[error("invalid configuration: {0}")]
    Invalid(String),
}

const MAX_CONFIG_BYTES: usize = 1024 * 1024;

impl Config {
    /// Loads `path` (if given) then applies `PALISADE_*` variables from `env`.
    pub fn load(
        path: Option<&str>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Self, ConfigError> {
        let base = match path {
            Some(p) => {
                let text = std::fs::read_to_string(p).map_err(|e| ConfigError::File {
                    path: p.into(),
                    message: e.to_string(),
                })?;
                Self::from_yaml(&text, p)?
            }
            None => Self::default(),
        };
        base.with_env(env)
    }

    /// Parses YAML; errors carry line and column.
    pub fn from_yaml(text: &str, path: &str) -> Result<Self, ConfigError> {
        if text.len() > MAX_CONFIG_BYTES {
            return Err(ConfigError::File {
                path: path.into(),
                message: "file larger than 1 MiB".into(),
            });
        }
        if text.trim().is_empty() {
            return Ok(Self::default());
        }
        serde_saphyr::from_str::<Config>(text).map_err(|e| ConfigError::File {
            path: path.into(),
            message: e.to_string(),
        })
    }

    /// Overlays `PALISADE_<PATH>` variables onto every leaf of the configuration.
    pub fn with_env(
        self,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Self, ConfigError> {
        let env: Vec<(String, String)> = env
            .into_iter()
            .filter(|(k, _)| k.starts_with("PALISADE_") || k == "ANTHROPIC_API_KEY")
            .collect();
        let mut tree = serde_json::to_value(&self)
            .map_err(|e| ConfigError::Invalid(format!("config encode: {e}")))?;
        // Leaves and their types come from the default config, so Option fields that are
        // None in the file are still settable.
        let template = serde_json::to_value(Config::default())
            .map_err(|e| ConfigError::Invalid(format!("config encode: {e}")))?;
        let mut leaves = Vec::new();
        collect_leaves(&template, &mut Vec::new(), &mut leaves);
        for (path, kind) in leaves {
            let name = format!("PALISADE_{}", path.join("_").to_ascii_uppercase());
            let Some((_, raw)) = env.iter().find(|(k, _)| *k == name) else {
                continue;
            };
            let value = match kind {
                Leaf::Bool => match raw.as_str() {
                    "1" | "true" | "yes" | "on" => Value::Bool(true),
                    "0" | "false" | "no" | "off" => Value::Bool(false),
                    _ => {
                        return Err(ConfigError::Env {
                            name,
                            message: "expected true or false".into(),
                        });
                    }
                },
                Leaf::Number => match raw.trim().parse::<u64>() {
                    Ok(n) => Value::from(n),
                    Err(_) => {
                        return Err(ConfigError::Env {
                            name,
                            message: "expected a non-negative whole number".into(),
                        });
                    }
                },
                Leaf::String => Value::String(raw.clone()),
                Leaf::Json => match serde_json::from_str::<Value>(raw) {
                    Ok(v @ Value::Array(_)) => v,
                    _ => {
                        return Err(ConfigError::Env {
                            name,
                            message: "expected a JSON array".into(),
                        });
                    }
                },
            };
            set_path(&mut tree, &path, value);
        }
        let mut cfg: Config = serde_json::from_value(tree)
            .map_err(|e| ConfigError::Invalid(format!("after environment overrides: {e}")))?;
        if cfg.anthropic.api_key.as_deref().is_none_or(str::is_empty)
            && let Some((_, k)) = env.iter().find(|(k, _)| k == "ANTHROPIC_API_KEY")
        {
            cfg.anthropic.api_key = Some(k.clone());
        }
        cfg.validate()?;
        Ok(cfg)
    }

    /// Rejects settings that would make the gateway unsafe or unusable.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let bad = |m: &str| Err(ConfigError::Invalid(m.into()));
        if self.listen.parse::<std::net::SocketAddr>().is_err() {
            return bad("listen must be an address such as 127.0.0.1:8080");
        }
        if !(self.anthropic.base_url.starts_with("http://")
            || self.anthropic.base_url.starts_with("https://"))
        {
            return bad("anthropic.base_url must start with http:// or https://");
        }
        if self.limits.max_body_bytes == 0 || self.limits.max_body_bytes > 512 * 1024 * 1024 {
            return bad("limits.max_body_bytes must be between 1 and 536870912");
        }
        if self.limits.max_json_depth == 0 || self.limits.max_json_depth > 512 {
            return bad("limits.max_json_depth must be between 1 and 512");
        }
        if self.limits.max_sse_event_bytes < 1024 {
            return bad("limits.max_sse_event_bytes must be at least 1024");
        }
        for (name, v) in [
            ("timeouts.connect_ms", self.timeouts.connect_ms),
            ("timeouts.first_byte_ms", self.timeouts.first_byte_ms),
            ("timeouts.idle_ms", self.timeouts.idle_ms),
            ("timeouts.total_ms", self.timeouts.total_ms),
        ] {
            if v == 0 {
                return Err(ConfigError::Invalid(format!(
                    "{name} must be greater than 0"
                )));
            }
        }
        if !matches!(self.policy.withheld_tool_use.as_str(), "replace" | "refuse") {
            return bad("policy.withheld_tool_use must be replace or refuse");
        }
        if self.moderation.timeout_ms == 0
            || self.moderation.max_text_bytes == 0
            || self.moderation.max_response_bytes == 0
            || self.moderation.judge_max_tokens == 0
            || self.moderation.judge_model.is_empty()
        {
            return bad(
                "moderation.timeout_ms, max_text_bytes, max_response_bytes and judge_max_tokens must be greater than 0, and judge_model set",
            );
        }
        if self.receipts.max_batch == 0 {
            return bad("receipts.max_batch must be greater than 0");
        }
        if !matches!(self.receipts.mode.as_str(), "sync" | "write_behind") {
            return bad("receipts.mode must be sync or write_behind");
        }
        if self.receipts.write_behind_max_pending == 0
            || self.receipts.write_behind_max_pending > 1_000_000
        {
            return bad("receipts.write_behind_max_pending must be between 1 and 1000000");
        }
        if self.receipts.capture_max_bytes == 0
            || self.receipts.capture_max_bytes > 16 * 1024 * 1024
        {
            return bad("receipts.capture_max_bytes must be between 1 and 16777216");
        }
        crate::sinks::validate(&self.audit.sinks).map_err(ConfigError::Invalid)?;
        if let Some(t) = &self.admin.token
            && t.len() < 16
        {
            return bad("admin.token must be at least 16 characters");
        }
        self.auth.validate().map_err(ConfigError::Invalid)?;
        self.tls.validate().map_err(ConfigError::Invalid)?;
        Ok(())
    }
}

#[derive(Clone, Copy)]
enum Leaf {
    Bool,
    Number,
    String,
    /// Lists: the variable holds the whole list as JSON.
    Json,
}

fn collect_leaves(v: &Value, path: &mut Vec<String>, out: &mut Vec<(Vec<String>, Leaf)>) {
    match v {
        Value::Object(m) => {
            for (k, v) in m {
                path.push(k.clone());
                collect_leaves(v, path, out);
                path.pop();
            }
        }
        Value::Bool(_) => out.push((path.clone(), Leaf::Bool)),
        Value::Number(_) => out.push((path.clone(), Leaf::Number)),
        Value::Array(_) => out.push((path.clone(), Leaf::Json)),
        _ => out.push((path.clone(), Leaf::String)),
    }
}

fn set_path(tree: &mut Value, path: &[String], value: Value) {
    let mut cur = tree;
    for (i, seg) in path.iter().enumerate() {
        let Value::Object(m) = cur else { return };
        if i + 1 == path.len() {
            m.insert(seg.clone(), value);
            return;
        }
        cur = m
            .entry(seg.clone())
            .or_insert_with(|| Value::Object(Default::default()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect()
    }

    #[test]
    fn list_settings_come_from_the_environment_as_json() {
        let cfg = Config::default()
            .with_env(env(&[(
                "PALISADE_LIMITS_PRICES",
                r#"[{"model":"claude-*","input_per_mtok":2.5,"output_per_mtok":10}]"#,
            )]))
            .unwrap();
        assert_eq!(cfg.limits.prices.len(), 1);
        assert_eq!(cfg.limits.prices[0].input_per_mtok, 2.5);
        for bad in ["nope", r#"{"model":"x"}"#, r#"[{"model":"x","input":1}]"#] {
            let e = Config::default()
                .with_env(env(&[("PALISADE_LIMITS_PRICES", bad)]))
                .unwrap_err()
                .to_string();
            assert!(
                e.contains("PALISADE_LIMITS_PRICES") || e.contains("unknown field `input`"),
                "{bad}: {e}"
            );
        }
    }

    #[test]
    fn env_overrides_every_leaf_kind() {
        let cfg = Config::default()
            .with_env(env(&[
                ("PALISADE_LISTEN", "0.0.0.0:9000"),
                ("PALISADE_ANTHROPIC_BASE_URL", "http://127.0.0.1:1"),
                ("PALISADE_TIMEOUTS_IDLE_MS", "1234"),
                ("PALISADE_RECEIPTS_RECORD_CLIENT_ADDR", "false"),
                ("PALISADE_ADMIN_TOKEN", "0123456789abcdef"),
                ("ANTHROPIC_API_KEY", "sk-ant-platform"),
                ("UNRELATED", "x"),
            ]))
            .unwrap();
        assert_eq!(cfg.listen, "0.0.0.0:9000");
        assert_eq!(cfg.anthropic.base_url, "http://127.0.0.1:1");
        assert_eq!(cfg.timeouts.idle_ms, 1234);
        assert!(!cfg.receipts.record_client_addr);
        assert_eq!(cfg.admin.token.as_deref(), Some("0123456789abcdef"));
        assert_eq!(cfg.anthropic.api_key.as_deref(), Some("sk-ant-platform"));
    }

    #[test]
    fn bad_env_values_are_named() {
        let e = Config::default()
            .with_env(env(&[("PALISADE_TIMEOUTS_IDLE_MS", "soon")]))
            .unwrap_err();
        assert!(e.to_string().contains("PALISADE_TIMEOUTS_IDLE_MS"), "{e}");
        let e = Config::default()
            .with_env(env(&[("PALISADE_TIMEOUTS_IDLE_MS", "0")]))
            .unwrap_err();
        assert!(e.to_string().contains("timeouts.idle_ms"), "{e}");
    }

    #[test]
    fn yaml_errors_have_location() {
        let e = Config::from_yaml("listen: 1.2.3.4:5\nstorage:\n  ur1: x\n", "p.yaml").unwrap_err();
        let s = e.to_string();
        assert!(s.starts_with("p.yaml:"), "{s}");
        assert!(s.contains("ur1"), "{s}");
        assert!(s.contains('3'), "line number expected: {s}");
    }

    #[test]
    fn yaml_file_then_env() {
        let cfg = Config::from_yaml(
            "listen: 127.0.0.1:7000\nanthropic:\n  base_url: http://localhost:1\n",
            "x",
        )
        .unwrap()
        .with_env(env(&[("PALISADE_LISTEN", "127.0.0.1:7001")]))
        .unwrap();
        assert_eq!(cfg.listen, "127.0.0.1:7001");
        assert_eq!(cfg.anthropic.base_url, "http://localhost:1");
    }
}
