//! Sentinel: per-tenant anomaly detection over the gateway's receipts.
//!
//! Pure core: no clocks, no I/O. The caller feeds one [`Observation`] per committed call
//! and calls [`Sentinel::tick`] with the current time; both return the alerts raised.
//! Each tenant has its own series (its total, and per user, key and tool within it), so
//! a spike in one tenant can only ever alert that tenant. Memory is bounded: at most
//! `max_tenants` tenants and `max_series_per_tenant` subject series per tenant, least
//! recently seen evicted first. See `README.md` for the detectors and measured numbers.
#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used, clippy::panic))]

pub mod config;
pub mod detect;

pub use config::{DetectorConfig, RuleConfig, SentinelConfig};
pub use detect::{Detector, Trigger};

use serde::{Deserialize, Serialize};
use std::collections::{HashMap, VecDeque};

/// One committed call, reduced to what detection needs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Observation {
    pub tenant: String,
    pub user: Option<String>,
    pub key: Option<String>,
    /// Tools offered or called in the call.
    pub tools: Vec<String>,
    /// Milliseconds since the epoch (the receipt's time).
    pub at_ms: u64,
    pub input_tokens: u64,
    pub output_tokens: u64,
    /// Refused by policy (decision `deny`).
    pub denied: bool,
    /// Blocked by a content rule (decision `block`, or a finding with action `block`).
    pub blocked: bool,
    /// Matches of PII detectors.
    pub pii: u64,
    /// Matches of secret detectors.
    pub secrets: u64,
    /// Matches of the prompt-injection heuristics.
    pub injection: u64,
    /// The upstream answered 5xx/429 or could not be reached.
    pub upstream_error: bool,
}

/// What a series is about.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(tag = "type", content = "id", rename_all = "snake_case")]
pub enum Subject {
    Tenant,
    User(String),
    Key(String),
    Tool(String),
}

impl std::fmt::Display for Subject {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Tenant => f.write_str("tenant"),
            Self::User(u) => write!(f, "user:{u}"),
            Self::Key(k) => write!(f, "key:{k}"),
            Self::Tool(t) => write!(f, "tool:{t}"),
        }
    }
}

/// The measured signals, one value per series per bucket.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Signal {
    /// Requests per bucket.
    RequestRate,
    /// Mean input tokens per request.
    InputTokens,
    /// Mean output tokens per request.
    OutputTokens,
    /// Fraction of requests denied by policy.
    DenyRate,
    /// Fraction of requests blocked by content rules.
    BlockRate,
    /// Fraction of requests with PII findings.
    PiiRate,
    /// Fraction of requests with secret findings.
    SecretRate,
    /// Fraction of requests with injection findings.
    InjectionRate,
    /// Fraction of requests whose upstream call failed.
    UpstreamErrorRate,
    /// Tokens (input + output) per bucket.
    Spend,
}

impl Signal {
    pub const ALL: [Signal; 10] = [
        Self::RequestRate,
        Self::InputTokens,
        Self::OutputTokens,
        Self::DenyRate,
        Self::BlockRate,
        Self::PiiRate,
        Self::SecretRate,
        Self::InjectionRate,
        Self::UpstreamErrorRate,
        Self::Spend,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::RequestRate => "request_rate",
            Self::InputTokens => "input_tokens",
            Self::OutputTokens => "output_tokens",
            Self::DenyRate => "deny_rate",
            Self::BlockRate => "block_rate",
            Self::PiiRate => "pii_rate",
            Self::SecretRate => "secret_rate",
            Self::InjectionRate => "injection_rate",
            Self::UpstreamErrorRate => "upstream_error_rate",
            Self::Spend => "spend",
        }
    }

    /// Whether a fall is worth paging for. Fewer denials or errors is good news; a
    /// collapse of traffic is not.
    fn drops_matter(self) -> bool {
        matches!(self, Self::RequestRate)
    }
}

/// Which detector or rule raised an alert.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DetectorKind {
    Ewma,
    CusumUp,
    CusumDown,
    PromptTokens,
    DenyRateRule,
    Budget,
}

impl DetectorKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ewma => "ewma",
            Self::CusumUp => "cusum_up",
            Self::CusumDown => "cusum_down",
            Self::PromptTokens => "prompt_tokens",
            Self::DenyRateRule => "deny_rate_rule",
            Self::Budget => "budget",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    Warning,
    Critical,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Warning => "warning",
            Self::Critical => "critical",
        }
    }
}

/// One alert. `dedup_key` names what it is about; the same key does not fire again
/// within the cooldown.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Alert {
    pub tenant: String,
    pub subject: Subject,
    pub signal: Signal,
    pub detector: DetectorKind,
    pub severity: Severity,
    pub at_ms: u64,
    /// The observed value (bucket value, ratio, tokens).
    pub value: f64,
    /// The baseline or threshold it was compared with.
    pub baseline: f64,
    /// z-score, CUSUM sum, or value/threshold.
    pub score: f64,
    pub message: String,
    pub dedup_key: String,
}

#[derive(Debug, Clone, Copy, Default)]
struct Acc {
    n: u64,
    input: u64,
    output: u64,
    denied: u64,
    blocked: u64,
    pii: u64,
    secrets: u64,
    injection: u64,
    upstream_err: u64,
}

impl Acc {
    fn add(&mut self, o: &Observation) {
        self.n += 1;
        self.input += o.input_tokens;
        self.output += o.output_tokens;
        self.denied += u64::from(o.denied);
        self.blocked += u64::from(o.blocked);
        self.pii += u64::from(o.pii > 0);
        self.secrets += u64::from(o.secrets > 0);
        self.injection += u64::from(o.injection > 0);
        self.upstream_err += u64::from(o.upstream_error);
    }
}

#[derive(Debug, Clone)]
struct Series {
    bucket_start: u64,
    acc: Acc,
    detectors: [Detector; 10],
    /// (requests, denied) of recent closed buckets, for the deny-rate rule.
    window: VecDeque<(u64, u64)>,
    last_seen: u64,
}

impl Series {
    fn new(bucket_start: u64) -> Self {
        Self {
            bucket_start,
            acc: Acc::default(),
            detectors: Default::default(),
            window: VecDeque::new(),
            last_seen: bucket_start,
        }
    }
}

#[derive(Debug, Clone, Default)]
struct Budget {
    daily_tokens: Option<u64>,
    day: u64,
    spent: u64,
    fired: u32,
}

#[derive(Debug, Clone)]
struct TenantState {
    total: Series,
    subjects: HashMap<Subject, Series>,
    budget: Budget,
    last_fired: HashMap<String, u64>,
    last_seen: u64,
}

/// Per-tenant detection state for every tenant seen recently.
#[derive(Debug, Clone)]
pub struct Sentinel {
    cfg: SentinelConfig,
    tenants: HashMap<String, TenantState>,
    /// Budgets configured before the tenant's first observation.
    budgets: HashMap<String, u64>,
}

const DAY_MS: u64 = 86_400_000;

impl Sentinel {
    pub fn new(cfg: SentinelConfig) -> Self {
        Self {
            cfg,
            tenants: HashMap::new(),
            budgets: HashMap::new(),
        }
    }

    pub fn config(&self) -> &SentinelConfig {
        &self.cfg
    }

    /// Tenants tracked now.
    pub fn tenant_count(&self) -> usize {
        self.tenants.len()
    }

    /// Series tracked now (tenant totals plus subject series).
    pub fn series_count(&self) -> usize {
        self.tenants.values().map(|t| 1 + t.subjects.len()).sum()
    }

    /// Sets (or clears) a tenant's daily token budget for the budget rule.
    pub fn set_budget(&mut self, tenant: &str, daily_tokens: Option<u64>) {
        match daily_tokens {
            Some(b) => {
                if self.budgets.len() < self.cfg.max_tenants || self.budgets.contains_key(tenant) {
                    self.budgets.insert(tenant.to_string(), b);
                }
            }
            None => {
                self.budgets.remove(tenant);
            }
        }
        if let Some(t) = self.tenants.get_mut(tenant) {
            t.budget.daily_tokens = daily_tokens;
        }
    }

    /// Feeds one call. Closes any buckets of its series that ended before it, applies the
    /// per-request rules, and returns the alerts raised.
    pub fn observe(&mut self, o: &Observation) -> Vec<Alert> {
        let bucket = self.cfg.bucket_ms.max(1);
        let start = o.at_ms - o.at_ms % bucket;
        let mut raw: Vec<Alert> = Vec::new();
        if !self.tenants.contains_key(&o.tenant) {
            self.make_room_for_tenant();
            let budget = Budget {
                daily_tokens: self.budgets.get(&o.tenant).copied(),
                ..Budget::default()
            };
            self.tenants.insert(
                o.tenant.clone(),
                TenantState {
                    total: Series::new(start),
                    subjects: HashMap::new(),
                    budget,
                    last_fired: HashMap::new(),
                    last_seen: o.at_ms,
                },
            );
        }
        let cfg = &self.cfg;
        let Some(t) = self.tenants.get_mut(&o.tenant) else {
            return raw;
        };
        t.last_seen = t.last_seen.max(o.at_ms);
        let mut subjects: Vec<Subject> = Vec::new();
        if cfg.per_subject {
            if let Some(u) = &o.user {
                subjects.push(Subject::User(u.clone()));
            }
            if let Some(k) = &o.key {
                subjects.push(Subject::Key(k.clone()));
            }
            for tool in &o.tools {
                let s = Subject::Tool(tool.clone());
                if !subjects.contains(&s) {
                    subjects.push(s);
                }
            }
        }
        feed(
            cfg,
            &o.tenant,
            &Subject::Tenant,
            &mut t.total,
            o,
            start,
            &mut raw,
        );
        for s in subjects {
            if !t.subjects.contains_key(&s) {
                if t.subjects.len() >= cfg.max_series_per_tenant.max(1)
                    && let Some(oldest) = t
                        .subjects
                        .iter()
                        .min_by_key(|(_, v)| v.last_seen)
                        .map(|(k, _)| k.clone())
                {
                    t.subjects.remove(&oldest);
                }
                t.subjects.insert(s.clone(), Series::new(start));
            }
            if let Some(series) = t.subjects.get_mut(&s) {
                feed(cfg, &o.tenant, &s, series, o, start, &mut raw);
            }
        }
        // Per-request rule: one very large prompt.
        let max = cfg.rules.max_prompt_tokens;
        if max > 0 && o.input_tokens > max {
            let subject = match (&o.user, &o.key) {
                (Some(u), _) => Subject::User(u.clone()),
                (None, Some(k)) => Subject::Key(k.clone()),
                _ => Subject::Tenant,
            };
            raw.push(make_alert(
                &o.tenant,
                subject,
                Signal::InputTokens,
                DetectorKind::PromptTokens,
                Severity::Warning,
                o.at_ms,
                o.input_tokens as f64,
                max as f64,
                o.input_tokens as f64 / max as f64,
                format!(
                    "prompt of {} input tokens is over the limit of {max}",
                    o.input_tokens
                ),
            ));
        }
        // Budget thresholds: tokens spent today against the tenant's daily budget.
        if let Some(limit) = t.budget.daily_tokens.filter(|b| *b > 0) {
            let day = o.at_ms / DAY_MS;
            if day != t.budget.day {
                t.budget.day = day;
                t.budget.spent = 0;
                t.budget.fired = 0;
            }
            t.budget.spent += o.input_tokens + o.output_tokens;
            let used = t.budget.spent as f64 / limit as f64;
            for (i, th) in cfg.rules.budget_thresholds.iter().enumerate().take(32) {
                let bit = 1u32 << i;
                if used >= *th && t.budget.fired & bit == 0 {
                    t.budget.fired |= bit;
                    let pct = (th * 100.0).round();
                    raw.push(Alert {
                        dedup_key: format!("{}|tenant|spend|budget|{pct}|{day}", o.tenant),
                        ..make_alert(
                            &o.tenant,
                            Subject::Tenant,
                            Signal::Spend,
                            DetectorKind::Budget,
                            if *th >= 1.0 {
                                Severity::Critical
                            } else {
                                Severity::Warning
                            },
                            o.at_ms,
                            t.budget.spent as f64,
                            limit as f64,
                            used,
                            format!(
                                "{pct}% of the daily token budget used ({} of {limit})",
                                t.budget.spent
                            ),
                        )
                    });
                }
            }
        }
        dedup(cfg.cooldown_ms, &mut t.last_fired, raw)
    }

    /// Closes every bucket that ended at or before `now_ms` and returns the alerts its
    /// detectors raised. Call it about once a bucket.
    pub fn tick(&mut self, now_ms: u64) -> Vec<Alert> {
        let cfg = &self.cfg;
        let bucket = cfg.bucket_ms.max(1);
        let mut out = Vec::new();
        for (tenant, t) in self.tenants.iter_mut() {
            let mut raw = Vec::new();
            close_until(
                cfg,
                tenant,
                &Subject::Tenant,
                &mut t.total,
                now_ms,
                &mut raw,
            );
            for (s, series) in t.subjects.iter_mut() {
                close_until(cfg, tenant, s, series, now_ms, &mut raw);
            }
            // Forget series idle for a day: their baselines are stale anyway.
            t.subjects
                .retain(|_, v| v.last_seen.saturating_add(DAY_MS) > now_ms);
            out.extend(dedup(cfg.cooldown_ms, &mut t.last_fired, raw));
        }
        self.tenants
            .retain(|_, t| t.last_seen.saturating_add(DAY_MS.max(bucket)) > now_ms);
        out
    }

    fn make_room_for_tenant(&mut self) {
        while self.tenants.len() >= self.cfg.max_tenants.max(1) {
            let Some(oldest) = self
                .tenants
                .iter()
                .min_by_key(|(_, v)| v.last_seen)
                .map(|(k, _)| k.clone())
            else {
                return;
            };
            self.tenants.remove(&oldest);
        }
    }
}

/// Adds one observation to a series, closing earlier buckets first, then applies the
/// windowed deny-rate rule.
fn feed(
    cfg: &SentinelConfig,
    tenant: &str,
    subject: &Subject,
    s: &mut Series,
    o: &Observation,
    start: u64,
    out: &mut Vec<Alert>,
) {
    if start > s.bucket_start {
        close_until(cfg, tenant, subject, s, start, out);
    }
    s.acc.add(o);
    s.last_seen = s.last_seen.max(o.at_ms);
    let rule = &cfg.rules;
    if rule.deny_rate > 0.0 && o.denied {
        let keep = rule.deny_rate_window_buckets.max(1) as usize - 1;
        let (mut n, mut d) = (s.acc.n, s.acc.denied);
        for (wn, wd) in s.window.iter().rev().take(keep) {
            n += wn;
            d += wd;
        }
        let ratio = d as f64 / n.max(1) as f64;
        if n >= rule.deny_rate_min_requests && ratio > rule.deny_rate {
            out.push(make_alert(
                tenant,
                subject.clone(),
                Signal::DenyRate,
                DetectorKind::DenyRateRule,
                Severity::Warning,
                o.at_ms,
                ratio,
                rule.deny_rate,
                ratio / rule.deny_rate,
                format!(
                    "{d} of {n} requests of {subject} denied in the last {} min ({:.0}% > {:.0}%)",
                    (rule.deny_rate_window_buckets as u64 * cfg.bucket_ms) / 60_000,
                    ratio * 100.0,
                    rule.deny_rate * 100.0
                ),
            ));
        }
    }
}

/// Closes the open bucket and any empty buckets after it, up to (not including) the
/// bucket that contains `until`.
fn close_until(
    cfg: &SentinelConfig,
    tenant: &str,
    subject: &Subject,
    s: &mut Series,
    until: u64,
    out: &mut Vec<Alert>,
) {
    let bucket = cfg.bucket_ms.max(1);
    let mut replayed = 0u32;
    while s.bucket_start + bucket <= until {
        let acc = std::mem::take(&mut s.acc);
        let end = s.bucket_start + bucket;
        close_bucket(cfg, tenant, subject, s, acc, end, out);
        s.bucket_start = end;
        replayed += 1;
        if replayed > cfg.max_gap_buckets {
            // Long idle: skip ahead rather than replay hours of zeros.
            s.bucket_start = until - until % bucket;
            break;
        }
    }
}

fn close_bucket(
    cfg: &SentinelConfig,
    tenant: &str,
    subject: &Subject,
    s: &mut Series,
    acc: Acc,
    end_ms: u64,
    out: &mut Vec<Alert>,
) {
    let w = cfg.rules.deny_rate_window_buckets.max(1) as usize;
    s.window.push_back((acc.n, acc.denied));
    while s.window.len() > w {
        s.window.pop_front();
    }
    if subject != &Subject::Tenant && !cfg.per_subject {
        return;
    }
    let n = acc.n as f64;
    let enough = acc.n >= cfg.min_requests.max(1);
    // Typical tokens per request, from the baselines (this bucket's own value would let a
    // token spike inflate its own noise estimate).
    let per_req = {
        let (i, o) = (&s.detectors[1], &s.detectors[2]);
        if i.seen() > 0 {
            i.baseline() + o.baseline()
        } else if acc.n > 0 {
            (acc.input + acc.output) as f64 / n
        } else {
            1.0
        }
    }
    .max(1.0);
    // Count and ratio signals are judged after a variance-stabilising transform
    // (Anscombe for Poisson counts, arcsine for binomial ratios): their sampling variance
    // is then about constant, and their tails close to a normal's, so one z threshold
    // means the same false-alert rate for a tenant at 1,000 requests a minute and a user
    // at one request an hour. Alerts report raw values.
    for (i, sig) in Signal::ALL.into_iter().enumerate() {
        let d = &mut s.detectors[i];
        let (raw, x, noise) = match sig {
            Signal::RequestRate => (n, anscombe(n), 1.0),
            Signal::Spend => {
                let tokens = (acc.input + acc.output) as f64;
                (tokens, anscombe(tokens / per_req), 1.0)
            }
            Signal::InputTokens | Signal::OutputTokens => {
                if !enough {
                    continue;
                }
                let v = if sig == Signal::InputTokens {
                    acc.input
                } else {
                    acc.output
                };
                let v = v as f64 / n;
                (v, v, 0.0)
            }
            _ => {
                if !enough {
                    continue;
                }
                let k = match sig {
                    Signal::DenyRate => acc.denied,
                    Signal::BlockRate => acc.blocked,
                    Signal::PiiRate => acc.pii,
                    Signal::SecretRate => acc.secrets,
                    Signal::InjectionRate => acc.injection,
                    _ => acc.upstream_err,
                };
                let p = k as f64 / n;
                (p, arcsine(p), 1.0 / n)
            }
        };
        let x_raw = raw;
        let unbase = |b: f64| match sig {
            Signal::RequestRate => inv_anscombe(b),
            Signal::Spend => inv_anscombe(b) * per_req,
            Signal::InputTokens | Signal::OutputTokens => b,
            _ => inv_arcsine(b),
        };
        for trig in d.update(x, noise, &cfg.detector) {
            let (kind, score, baseline, sev) = match trig {
                Trigger::Ewma { z, baseline } => (DetectorKind::Ewma, z, baseline, {
                    if z >= 2.0 * cfg.detector.z_threshold {
                        Severity::Critical
                    } else {
                        Severity::Warning
                    }
                }),
                Trigger::CusumUp { score, baseline } => {
                    (DetectorKind::CusumUp, score, baseline, Severity::Warning)
                }
                Trigger::CusumDown { score, baseline } => {
                    if !sig.drops_matter() {
                        continue;
                    }
                    (DetectorKind::CusumDown, score, baseline, Severity::Warning)
                }
            };
            let what = match kind {
                DetectorKind::Ewma => format!("z = {score:.1}"),
                DetectorKind::CusumDown => "sustained fall".to_string(),
                _ => "sustained rise".to_string(),
            };
            let baseline = unbase(baseline);
            out.push(make_alert(
                tenant,
                subject.clone(),
                sig,
                kind,
                sev,
                end_ms,
                x_raw,
                baseline,
                score,
                format!(
                    "{} of {subject} is {} against a baseline of {} ({what})",
                    sig.as_str(),
                    fmt_num(x_raw),
                    fmt_num(baseline)
                ),
            ));
        }
    }
}

/// Anscombe transform: Poisson counts to variance about 1.
fn anscombe(x: f64) -> f64 {
    2.0 * (x.max(0.0) + 0.375).sqrt()
}

fn inv_anscombe(y: f64) -> f64 {
    ((y / 2.0).powi(2) - 0.375).max(0.0)
}

/// Arcsine transform: a binomial proportion of n to variance about 1/n.
fn arcsine(p: f64) -> f64 {
    2.0 * p.clamp(0.0, 1.0).sqrt().asin()
}

fn inv_arcsine(y: f64) -> f64 {
    (y / 2.0).sin().powi(2)
}

fn fmt_num(x: f64) -> String {
    if x.abs() >= 10.0 {
        format!("{x:.0}")
    } else {
        format!("{x:.3}")
    }
}

#[allow(clippy::too_many_arguments)]
fn make_alert(
    tenant: &str,
    subject: Subject,
    signal: Signal,
    detector: DetectorKind,
    severity: Severity,
    at_ms: u64,
    value: f64,
    baseline: f64,
    score: f64,
    message: String,
) -> Alert {
    let dedup_key = format!(
        "{tenant}|{subject}|{}|{}",
        signal.as_str(),
        detector.as_str()
    );
    Alert {
        tenant: tenant.to_string(),
        subject,
        signal,
        detector,
        severity,
        at_ms,
        value,
        baseline,
        score,
        message,
        dedup_key,
    }
}

/// Drops alerts whose key fired within the cooldown; records the rest.
fn dedup(cooldown: u64, last: &mut HashMap<String, u64>, raw: Vec<Alert>) -> Vec<Alert> {
    let mut out = Vec::new();
    for a in raw {
        match last.get(&a.dedup_key) {
            Some(t) if a.at_ms < t.saturating_add(cooldown) => continue,
            _ => {}
        }
        last.insert(a.dedup_key.clone(), a.at_ms);
        out.push(a);
    }
    // One cause usually trips the tenant series and its user/key/tool series together:
    // report it once, on the tenant alert, naming the subjects involved.
    let tenant_level: Vec<(Signal, DetectorKind)> = out
        .iter()
        .filter(|a| a.subject == Subject::Tenant)
        .map(|a| (a.signal, a.detector))
        .collect();
    let mut folded: Vec<(Signal, DetectorKind, String)> = Vec::new();
    out.retain(|a| {
        if a.subject != Subject::Tenant && tenant_level.contains(&(a.signal, a.detector)) {
            folded.push((a.signal, a.detector, a.subject.to_string()));
            return false;
        }
        true
    });
    for a in out.iter_mut().filter(|a| a.subject == Subject::Tenant) {
        let subjects: Vec<&str> = folded
            .iter()
            .filter(|(s, d, _)| *s == a.signal && *d == a.detector)
            .map(|(_, _, n)| n.as_str())
            .collect();
        if !subjects.is_empty() {
            a.message = format!("{} (also: {})", a.message, subjects.join(", "));
        }
    }
    if last.len() > 1024 {
        let newest = out.iter().map(|a| a.at_ms).max().unwrap_or(0);
        last.retain(|_, t| t.saturating_add(cooldown) > newest);
    }
    out
}
