//! Sentinel in the gateway: every committed receipt reaches [`Monitor::observer`] (called
//! by the receipt writer after the commit), which counts it for `/metrics` and queues it
//! for the detection task. The task runs `palisade_sentinel` (pure; time comes from
//! here), and for each alert: stores it, records it as an `alert` receipt, and delivers
//! it to the tenant's webhook (HMAC-signed, with retries) and to the platform sink.
//!
//! Alert receipts are not fed back into detection (no alert loops).

use crate::metrics::{Metrics, MetricsConfig};
use crate::state::AppState;
use crate::webhooks::Delivery;
use palisade_audit::{Receipt, ReceiptKind};
use palisade_sentinel::{Observation, Sentinel, SentinelConfig, Subject};
use palisade_store::AlertRecord;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use std::collections::HashMap;
use std::sync::{Arc, OnceLock};
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// `sentinel` section of `palisade.yaml`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SentinelSettings {
    /// Run anomaly detection (metrics are independent of this).
    pub enabled: bool,
    /// How often buckets are closed and detectors run, in ms.
    pub tick_ms: u64,
    /// Receipts queued for detection before new ones are dropped (and counted).
    pub queue: usize,
    /// Platform-wide sink receiving every tenant's alerts (optional).
    pub platform_webhook_url: Option<String>,
    /// HMAC key signing platform-sink deliveries (unsigned without one).
    pub platform_webhook_secret: Option<String>,
    /// Delivery attempts per webhook (first try included).
    pub webhook_max_attempts: u32,
    /// Backoff before the second attempt; doubles each time (capped at 60 s).
    pub webhook_base_backoff_ms: u64,
    /// Per-attempt timeout.
    pub webhook_timeout_ms: u64,
    /// Detector and rule tuning (see crates/sentinel/README.md).
    pub detection: SentinelConfig,
    /// `/metrics` labels and caps.
    pub metrics: MetricsConfig,
}

impl Default for SentinelSettings {
    fn default() -> Self {
        Self {
            enabled: true,
            tick_ms: 5_000,
            queue: 16_384,
            platform_webhook_url: None,
            platform_webhook_secret: None,
            webhook_max_attempts: 4,
            webhook_base_backoff_ms: 500,
            webhook_timeout_ms: 5_000,
            detection: SentinelConfig::default(),
            metrics: MetricsConfig::default(),
        }
    }
}

/// Tenant attribute naming the tenant's alert webhook.
pub const WEBHOOK_ATTRIBUTE: &str = "alert_webhook_url";
/// Tenant attribute with a daily token budget for the budget-threshold rule.
pub const BUDGET_ATTRIBUTE: &str = "token_budget_daily";
/// Domain of the per-tenant webhook signing secret (derived from the tenant data key).
const WEBHOOK_DOMAIN: &str = "palisade.alert-webhook.v1";

/// Metrics and the link to the detection task; lives in `AppState`.
#[derive(Clone)]
pub struct Monitor {
    pub metrics: Arc<Metrics>,
    tx: Arc<OnceLock<mpsc::Sender<Observation>>>,
}

impl Monitor {
    pub fn new(settings: &SentinelSettings) -> Self {
        Self {
            metrics: Arc::new(Metrics::new(settings.metrics.clone())),
            tx: Arc::new(OnceLock::new()),
        }
    }

    /// The receipt-writer hook: counts the receipt and queues it for detection.
    /// Never blocks the writer: a full queue drops the observation (and counts it).
    pub fn observer(&self) -> crate::receipts::Observer {
        let me = self.clone();
        Arc::new(move |r: &Receipt| me.on_receipt(r))
    }

    fn on_receipt(&self, r: &Receipt) {
        self.metrics.record(r);
        if !matches!(
            r.kind,
            ReceiptKind::Message | ReceiptKind::ToolDecision | ReceiptKind::Scan
        ) {
            return;
        }
        if let Some(tx) = self.tx.get()
            && tx.try_send(observation(r)).is_err()
        {
            self.metrics.dropped_observation();
        }
    }

    /// Starts the detection task (once per process).
    pub fn start(&self, state: AppState) -> Option<SentinelTask> {
        let settings = state.config.sentinel.clone();
        if !settings.enabled {
            return None;
        }
        let (tx, rx) = mpsc::channel(settings.queue.max(1));
        if self.tx.set(tx).is_err() {
            return None;
        }
        let cancel = CancellationToken::new();
        let handle = tokio::spawn(run(state, settings, rx, cancel.clone()));
        Some(SentinelTask { cancel, handle })
    }
}

/// The running detection task.
pub struct SentinelTask {
    cancel: CancellationToken,
    handle: tokio::task::JoinHandle<()>,
}

impl SentinelTask {
    /// Stops detection (pending webhook retries stop with `Webhooks::shutdown`).
    pub async fn shutdown(self) {
        self.cancel.cancel();
        let _ = self.handle.await;
    }
}

fn classify(entity: &str) -> (bool, bool, bool) {
    let e = entity.to_ascii_lowercase();
    let secret = e.contains("secret");
    let injection = e.contains("injection");
    let pii = !secret
        && !injection
        && ["email", "phone", "ssn", "credit_card", "iban", "ip_address"]
            .iter()
            .any(|k| e.contains(k));
    (pii, secret, injection)
}

/// A receipt reduced to what detection needs.
pub fn observation(r: &Receipt) -> Observation {
    let at =
        palisade_store::rfc3339_ms::parse(&r.created_at).unwrap_or_else(palisade_store::now_ms);
    let mut o = Observation {
        tenant: r.tenant_id.clone(),
        user: r.user_id.clone(),
        key: r.key_id.clone(),
        tools: Vec::new(),
        at_ms: u64::try_from(at).unwrap_or(0),
        input_tokens: r.input_tokens.unwrap_or(0),
        output_tokens: r.output_tokens.unwrap_or(0),
        denied: r.decision == "deny",
        blocked: r.decision == "block",
        upstream_error: r.decision == "upstream_error"
            || r.upstream_status.is_some_and(|s| s == 429 || s >= 500),
        ..Observation::default()
    };
    for f in &r.findings {
        let (pii, secret, inj) = classify(&f.entity);
        if pii {
            o.pii += f.count;
        }
        if secret {
            o.secrets += f.count;
        }
        if inj {
            o.injection += f.count;
        }
        if f.action == "block" {
            o.blocked = true;
        }
    }
    for t in &r.tools {
        if !o.tools.contains(&t.tool) {
            o.tools.push(t.tool.clone());
        }
    }
    o
}

async fn run(
    state: AppState,
    settings: SentinelSettings,
    mut rx: mpsc::Receiver<Observation>,
    cancel: CancellationToken,
) {
    let mut sentinel = Sentinel::new(settings.detection.clone());
    let mut tick = tokio::time::interval(Duration::from_millis(settings.tick_ms.max(100)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // When each tenant's budget attribute was last read.
    let mut budgets_read: HashMap<String, i64> = HashMap::new();
    loop {
        let alerts = tokio::select! {
            _ = cancel.cancelled() => break,
            o = rx.recv() => {
                let Some(o) = o else { break };
                refresh_budget(&state, &mut sentinel, &mut budgets_read, &o.tenant).await;
                sentinel.observe(&o)
            }
            _ = tick.tick() => {
                let now = u64::try_from(palisade_store::now_ms()).unwrap_or(0);
                sentinel.tick(now)
            }
        };
        for a in alerts {
            raise(&state, &settings, a).await;
        }
    }
}

async fn refresh_budget(
    state: &AppState,
    sentinel: &mut Sentinel,
    read: &mut HashMap<String, i64>,
    tenant: &str,
) {
    let now = palisade_store::now_ms();
    if read.get(tenant).is_some_and(|t| now - t < 300_000) {
        return;
    }
    if read.len() > 10_000 {
        read.clear();
    }
    read.insert(tenant.to_string(), now);
    if let Ok(Some(t)) = state.store.get_tenant(tenant).await {
        let b = t.attributes.get(BUDGET_ATTRIBUTE).and_then(Value::as_u64);
        sentinel.set_budget(tenant, b);
    }
}

fn num(x: f64) -> String {
    if x.is_finite() {
        format!("{x:.4}")
    } else {
        "0".into()
    }
}

/// Records the alert's receipt, stores it, counts it and queues its deliveries.
async fn raise(state: &AppState, settings: &SentinelSettings, a: palisade_sentinel::Alert) {
    let id = format!("alr_{}", uuid::Uuid::now_v7().simple());
    let now = palisade_store::now_ms();
    let subject = a.subject.to_string();
    // Strings only: receipts are canonical JSON, which refuses floats.
    let mut details = Map::new();
    details.insert("value".into(), num(a.value).into());
    details.insert("baseline".into(), num(a.baseline).into());
    details.insert("score".into(), num(a.score).into());
    details.insert("observed_at_ms".into(), a.at_ms.into());
    let mut rec = AlertRecord {
        id: id.clone(),
        tenant_id: a.tenant.clone(),
        created_at: now,
        dedup_key: a.dedup_key.clone(),
        signal: a.signal.as_str().into(),
        detector: a.detector.as_str().into(),
        severity: a.severity.as_str().into(),
        subject: subject.clone(),
        message: a.message.clone(),
        details: details.clone(),
        receipt_id: None,
        acked_at: None,
        acked_by: None,
    };
    let mut r = Receipt::new(
        uuid::Uuid::now_v7().hyphenated().to_string(),
        &a.tenant,
        ReceiptKind::Alert,
        palisade_audit::format_created_at(u64::try_from(now).unwrap_or(0)),
        "alert",
    );
    r.reason_code = Some(format!("{}.{}", rec.signal, rec.detector));
    match &a.subject {
        Subject::User(u) => r.user_id = Some(u.clone()),
        Subject::Key(k) => r.key_id = Some(k.clone()),
        _ => {}
    }
    let mut rd = details;
    rd.insert("alert_id".into(), id.clone().into());
    rd.insert("signal".into(), rec.signal.clone().into());
    rd.insert("detector".into(), rec.detector.clone().into());
    rd.insert("severity".into(), rec.severity.clone().into());
    rd.insert("subject".into(), subject.into());
    rd.insert("message".into(), rec.message.clone().into());
    r.details = Value::Object(rd);
    // Receipt first, so the stored alert is complete (linked) when it becomes visible.
    match state.receipts.commit(r).await {
        Ok(sealed) => rec.receipt_id = Some(sealed.id),
        Err(e) => tracing::error!(error = %e, "could not record alert receipt"),
    }
    if let Err(e) = state.store.put_alert(&rec).await {
        tracing::error!(error = %e, tenant = %a.tenant, "could not store alert");
    }
    state
        .monitor
        .metrics
        .alert(&a.tenant, &rec.signal, &rec.severity);
    tracing::warn!(tenant = %a.tenant, alert = %id, signal = %rec.signal, detector = %rec.detector, "{}", rec.message);

    let body = match serde_json::to_vec(&json!({"type": "alert", "alert": rec})) {
        Ok(b) => b,
        Err(_) => return,
    };
    // Tenant webhook: URL from the tenant's attributes, key derived from its data key.
    if let Ok(Some(t)) = state.store.get_tenant(&a.tenant).await
        && let Some(url) = t.attributes.get(WEBHOOK_ATTRIBUTE).and_then(Value::as_str)
    {
        match webhook_secret(state, &a.tenant).await {
            Ok(secret) => state.webhooks.send(Delivery {
                url: url.to_string(),
                secret: Some(secret.into_bytes()),
                event: "alert",
                event_id: id.clone(),
                body: body.clone(),
            }),
            Err(e) => tracing::warn!(error = %e.message, "no webhook secret for tenant"),
        }
    }
    if let Some(url) = settings.platform_webhook_url.clone() {
        state.webhooks.send(Delivery {
            url,
            secret: settings
                .platform_webhook_secret
                .clone()
                .map(String::into_bytes),
            event: "alert",
            event_id: id,
            body,
        });
    }
}

/// The tenant's webhook signing secret (hex), derived from its data key: nothing extra
/// to store, and deleting the tenant's key retires it.
pub async fn webhook_secret(
    state: &AppState,
    tenant: &str,
) -> Result<String, crate::error::ApiError> {
    state
        .tenant_keys
        .digest(tenant, WEBHOOK_DOMAIN, b"signing-secret")
        .await
}
