//! Prometheus metrics at `/metrics`, fed from committed receipts (the same hook Sentinel
//! uses), so every number here agrees with the audit trail.
//!
//! Cardinality is bounded by construction: the first `max_tenants` tenants seen get their
//! own `tenant` label value and the rest share `tenant="other"`; user and tool labels are
//! off by default (value `all`) and capped the same way when on; free-form values
//! (decisions, finding entities) are capped too. So the series count has a fixed upper
//! bound whatever the traffic (`tests/sentinel.rs` drives 10,000 tenants through it).
//!
//! Latency: receipts carry the whole call's `latency_ms`, and calls that reached the
//! upstream carry `details.upstream_us` (time spent waiting on it) and `details.gateway_us`
//! (the rest: Palisade's own overhead). Those are observed as `phase="upstream"` and
//! `phase="gateway"`; calls that never reached the upstream as `phase="total"`.

use palisade_audit::{Receipt, ReceiptKind};
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use serde::{Deserialize, Serialize};
use std::collections::HashSet;
use std::sync::{Arc, Mutex};

/// `metrics` section of `palisade.yaml`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsConfig {
    /// Serve `/metrics`.
    pub enabled: bool,
    /// Distinct tenant label values before the rest become `other`.
    pub max_tenants: usize,
    /// Label series by user (off: `user="all"`).
    pub user_labels: bool,
    /// Label tool decisions by tool (off: `tool="all"`).
    pub tool_labels: bool,
    /// Distinct user label values (over all tenants) before `other`.
    pub max_users: usize,
    /// Distinct tool label values before `other`.
    pub max_tools: usize,
    /// Bearer token `/metrics` requires (none: open, for a scraper on a private network).
    pub token: Option<String>,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            max_tenants: 500,
            user_labels: false,
            tool_labels: false,
            max_users: 1000,
            max_tools: 200,
            token: None,
        }
    }
}

/// First-come label values up to a cap; everything after is `other`.
struct Cap {
    max: usize,
    seen: Mutex<HashSet<String>>,
}

impl Cap {
    fn new(max: usize) -> Self {
        Self {
            max,
            seen: Mutex::new(HashSet::new()),
        }
    }

    fn label(&self, v: &str) -> String {
        let Ok(mut seen) = self.seen.lock() else {
            return "other".into();
        };
        if seen.contains(v) {
            return v.to_string();
        }
        if seen.len() < self.max {
            seen.insert(v.to_string());
            return v.to_string();
        }
        "other".into()
    }
}

type Labels = Vec<(String, String)>;
type HistFamily = Family<Labels, Histogram, fn() -> Histogram>;

fn latency_histogram() -> Histogram {
    // 5 ms .. ~82 s.
    // 100 µs to about 52 s: gateway overhead lives in the lowest buckets.
    Histogram::new(exponential_buckets(0.0001, 2.0, 20))
}

pub struct Metrics {
    cfg: MetricsConfig,
    registry: Registry,
    tenants: Cap,
    users: Cap,
    tools: Cap,
    decisions_cap: Cap,
    entities: Cap,
    requests: Family<Labels, Counter>,
    decisions: Family<Labels, Counter>,
    findings: Family<Labels, Counter>,
    tokens: Family<Labels, Counter>,
    user_tokens: Family<Labels, Counter>,
    spend: Family<Labels, Counter>,
    tool_decisions: Family<Labels, Counter>,
    upstream: Family<Labels, Counter>,
    rate_limited: Family<Labels, Counter>,
    approvals: Family<Labels, Counter>,
    alerts: Family<Labels, Counter>,
    latency: HistFamily,
    dropped: Counter,
    /// Audit-trail counters (sinks, write-behind, fail-open), shared with their writers.
    pub audit: AuditMetrics,
}

/// Counters and gauges of the audit trail's delivery paths. Cheap to clone: every
/// handle shares its atomic with the registered metric.
#[derive(Clone, Default)]
pub struct AuditMetrics {
    /// `palisade_sink_receipts{sink, outcome}`: outcome is `delivered`, `dead_lettered`
    /// (written to the sink's dead-letter directory) or `spilled` (queue full, spilled).
    pub sink_receipts: Family<Labels, Counter>,
    /// `palisade_sink_failures{sink}`: failed delivery attempts.
    pub sink_failures: Family<Labels, Counter>,
    /// Receipts accepted in write-behind mode but not yet committed (the loss window).
    pub write_behind_pending: prometheus_client::metrics::gauge::Gauge,
    /// Receipts that failed to commit and were written to the spill file instead
    /// (fail-open tenants, write-behind batches).
    pub receipts_spilled: Counter,
    /// Receipts that failed to commit and could not be spilled either (lost).
    pub receipts_lost: Counter,
    /// Receipts committed by the group-commit writer, and the transactions that took
    /// them: their ratio is the mean batch size, i.e. how well commits are grouped.
    pub receipts_committed: Counter,
    pub receipt_batches: Counter,
}

impl AuditMetrics {
    pub fn sink(&self, sink: &str, outcome: &str, n: u64) {
        if n > 0 {
            self.sink_receipts
                .get_or_create(&l(&[("sink", sink), ("outcome", outcome)]))
                .inc_by(n);
        }
    }

    pub fn sink_failure(&self, sink: &str) {
        self.sink_failures
            .get_or_create(&l(&[("sink", sink)]))
            .inc();
    }

    fn register(&self, registry: &mut Registry) {
        registry.register(
            "palisade_sink_receipts",
            "Receipts handled by SIEM sinks (outcome: delivered, dead_lettered, spilled)",
            self.sink_receipts.clone(),
        );
        registry.register(
            "palisade_sink_failures",
            "Failed SIEM sink delivery attempts",
            self.sink_failures.clone(),
        );
        registry.register(
            "palisade_receipts_write_behind_pending",
            "Receipts accepted in write-behind mode and not yet committed (the loss window)",
            self.write_behind_pending.clone(),
        );
        registry.register(
            "palisade_receipts_spilled",
            "Receipts that failed to commit and were written to the spill file",
            self.receipts_spilled.clone(),
        );
        registry.register(
            "palisade_receipts_lost",
            "Receipts that failed to commit and could not be spilled",
            self.receipts_lost.clone(),
        );
        registry.register(
            "palisade_receipts_committed",
            "Receipts committed by the group-commit writer",
            self.receipts_committed.clone(),
        );
        registry.register(
            "palisade_receipt_batches",
            "Store transactions of the group-commit writer (receipts_committed / receipt_batches is the mean batch size)",
            self.receipt_batches.clone(),
        );
    }
}

fn l(pairs: &[(&str, &str)]) -> Labels {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_string(), (*v).to_string()))
        .collect()
}

impl Metrics {
    pub fn new(cfg: MetricsConfig) -> Self {
        let mut registry = Registry::default();
        let requests = Family::<Labels, Counter>::default();
        let decisions = Family::<Labels, Counter>::default();
        let findings = Family::<Labels, Counter>::default();
        let tokens = Family::<Labels, Counter>::default();
        let user_tokens = Family::<Labels, Counter>::default();
        let spend = Family::<Labels, Counter>::default();
        let tool_decisions = Family::<Labels, Counter>::default();
        let upstream = Family::<Labels, Counter>::default();
        let rate_limited = Family::<Labels, Counter>::default();
        let approvals = Family::<Labels, Counter>::default();
        let alerts = Family::<Labels, Counter>::default();
        let latency: HistFamily = Family::new_with_constructor(latency_histogram);
        let dropped = Counter::default();
        registry.register(
            "palisade_requests",
            "Committed receipts by tenant and kind",
            requests.clone(),
        );
        registry.register(
            "palisade_decisions",
            "Call outcomes (allow, deny, block, redact, upstream_error, ...)",
            decisions.clone(),
        );
        registry.register(
            "palisade_findings",
            "Content findings by entity (e.g. input.email) and action",
            findings.clone(),
        );
        registry.register(
            "palisade_tokens",
            "Tokens by direction (input, output)",
            tokens.clone(),
        );
        registry.register(
            "palisade_user_tokens",
            "Tokens by user (user=\"all\" unless metrics.user_labels)",
            user_tokens.clone(),
        );
        registry.register(
            "palisade_spend_micro_usd",
            "Spend in micro-dollars at the price table's rates, by user (user=\"all\" unless metrics.user_labels)",
            spend.clone(),
        );
        registry.register(
            "palisade_tool_decisions",
            "Tool decisions (tool=\"all\" unless metrics.tool_labels)",
            tool_decisions.clone(),
        );
        registry.register(
            "palisade_upstream_responses",
            "Upstream HTTP status classes",
            upstream.clone(),
        );
        registry.register(
            "palisade_rate_limited",
            "Requests refused by a rate or budget limit",
            rate_limited.clone(),
        );
        registry.register(
            "palisade_approvals",
            "Approvals granted or denied",
            approvals.clone(),
        );
        registry.register("palisade_alerts", "Sentinel alerts raised", alerts.clone());
        registry.register(
            "palisade_request_duration_seconds",
            "Call latency; phase=total, or gateway and upstream when upstream time is known",
            latency.clone(),
        );
        registry.register(
            "palisade_sentinel_dropped_observations",
            "Receipts Sentinel could not keep up with (queue full)",
            dropped.clone(),
        );
        let audit = AuditMetrics::default();
        audit.register(&mut registry);
        Self {
            tenants: Cap::new(cfg.max_tenants),
            users: Cap::new(cfg.max_users),
            tools: Cap::new(cfg.max_tools),
            decisions_cap: Cap::new(64),
            entities: Cap::new(256),
            cfg,
            registry,
            requests,
            decisions,
            findings,
            tokens,
            user_tokens,
            spend,
            tool_decisions,
            upstream,
            rate_limited,
            approvals,
            alerts,
            latency,
            dropped,
            audit,
        }
    }

    pub fn config(&self) -> &MetricsConfig {
        &self.cfg
    }

    /// Counts one committed receipt.
    pub fn record(&self, r: &Receipt) {
        let tenant = self.tenants.label(&r.tenant_id);
        let t = tenant.as_str();
        let kind = r.kind.as_str();
        self.requests
            .get_or_create(&l(&[("tenant", t), ("kind", kind)]))
            .inc();
        match r.kind {
            ReceiptKind::RateLimit => {
                self.rate_limited.get_or_create(&l(&[("tenant", t)])).inc();
                return;
            }
            ReceiptKind::Approval => {
                let d = self.decisions_cap.label(&r.decision);
                self.approvals
                    .get_or_create(&l(&[("tenant", t), ("decision", &d)]))
                    .inc();
                return;
            }
            // Alerts are counted where they are raised; admin changes are not traffic.
            ReceiptKind::Alert | ReceiptKind::AdminChange => return,
            _ => {}
        }
        let d = self.decisions_cap.label(&r.decision);
        self.decisions
            .get_or_create(&l(&[("tenant", t), ("kind", kind), ("decision", &d)]))
            .inc();
        for f in &r.findings {
            let e = self.entities.label(&f.entity);
            let a = self.decisions_cap.label(&f.action);
            self.findings
                .get_or_create(&l(&[("tenant", t), ("entity", &e), ("action", &a)]))
                .inc_by(f.count);
        }
        let (input, output) = (r.input_tokens.unwrap_or(0), r.output_tokens.unwrap_or(0));
        if input > 0 {
            self.tokens
                .get_or_create(&l(&[("tenant", t), ("direction", "input")]))
                .inc_by(input);
        }
        if output > 0 {
            self.tokens
                .get_or_create(&l(&[("tenant", t), ("direction", "output")]))
                .inc_by(output);
        }
        if input + output > 0 {
            let user = match (&r.user_id, self.cfg.user_labels) {
                (Some(u), true) => self.users.label(&format!("{t}/{u}")),
                (None, true) => "none".to_string(),
                _ => "all".to_string(),
            };
            self.user_tokens
                .get_or_create(&l(&[("tenant", t), ("user", &user)]))
                .inc_by(input + output);
            if let Some(c) = r.details.get("cost_micro_usd").and_then(|v| v.as_u64()) {
                self.spend
                    .get_or_create(&l(&[("tenant", t), ("user", &user)]))
                    .inc_by(c);
            }
        }
        for td in &r.tools {
            let tool = if self.cfg.tool_labels {
                self.tools.label(&td.tool)
            } else {
                "all".to_string()
            };
            let d = self.decisions_cap.label(&td.decision);
            self.tool_decisions
                .get_or_create(&l(&[("tenant", t), ("tool", &tool), ("decision", &d)]))
                .inc();
        }
        if let Some(s) = r.upstream_status {
            let class = match s {
                200..=299 => "2xx",
                400..=499 => "4xx",
                500..=599 => "5xx",
                _ => "other",
            };
            self.upstream
                .get_or_create(&l(&[("tenant", t), ("class", class)]))
                .inc();
        }
        if let Some(ms) = r.latency_ms {
            let total = ms as f64 / 1000.0;
            let us = |k: &str| r.details.get(k).and_then(|v| v.as_u64());
            match (us("upstream_us"), us("gateway_us")) {
                (Some(up), Some(gw)) => {
                    self.latency
                        .get_or_create(&l(&[("tenant", t), ("phase", "upstream")]))
                        .observe(up as f64 / 1e6);
                    self.latency
                        .get_or_create(&l(&[("tenant", t), ("phase", "gateway")]))
                        .observe(gw as f64 / 1e6);
                }
                _ => {
                    self.latency
                        .get_or_create(&l(&[("tenant", t), ("phase", "total")]))
                        .observe(total);
                }
            }
        }
    }

    /// Counts one alert raised.
    pub fn alert(&self, tenant: &str, signal: &str, severity: &str) {
        let t = self.tenants.label(tenant);
        self.alerts
            .get_or_create(&l(&[
                ("tenant", &t),
                ("signal", signal),
                ("severity", severity),
            ]))
            .inc();
    }

    pub fn dropped_observation(&self) {
        self.dropped.inc();
    }

    /// OpenMetrics text exposition.
    pub fn render(&self) -> String {
        let mut out = String::new();
        if encode(&mut out, &self.registry).is_err() {
            tracing::warn!("metrics encoding failed");
        }
        out
    }
}

/// `GET /metrics`.
pub async fn serve(
    axum::extract::State(state): axum::extract::State<crate::state::AppState>,
    headers: axum::http::HeaderMap,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    let m = &state.monitor.metrics;
    if !m.cfg.enabled {
        return crate::error::ApiError::not_found("no such endpoint").into_response();
    }
    if let Some(token) = m.cfg.token.as_deref() {
        let given = headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .unwrap_or("");
        let ok: bool = subtle::ConstantTimeEq::ct_eq(given.as_bytes(), token.as_bytes()).into();
        if !ok {
            return (axum::http::StatusCode::UNAUTHORIZED, "unauthorized").into_response();
        }
    }
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        m.render(),
    )
        .into_response()
}

/// Shared handle (metrics live as long as the process).
pub type SharedMetrics = Arc<Metrics>;
