//! Tuning. Defaults are the values the simulation tests were measured with
//! (see `README.md`).

use serde::{Deserialize, Serialize};

/// Parameters of one EWMA + CUSUM detector.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct DetectorConfig {
    /// EWMA span in buckets (alpha = 2 / (span + 1)). 30 one-minute buckets follow a
    /// daily rhythm closely while still averaging out minute-to-minute noise.
    pub span_buckets: u32,
    /// Buckets a series must have seen before it may alert.
    pub warmup_buckets: u32,
    /// One-bucket z-score that alerts.
    pub z_threshold: f64,
    /// CUSUM slack per bucket, in sigmas.
    pub cusum_k: f64,
    /// CUSUM decision interval, in sigmas.
    pub cusum_h: f64,
    /// Per-bucket z is clamped to this before it enters the CUSUM.
    pub cusum_clamp: f64,
    /// Residuals are clamped to this many sigmas before updating the baseline.
    pub update_clamp: f64,
    /// Sigma is at least this fraction of the baseline.
    pub rel_floor: f64,
    /// Sigma is at least this absolute value.
    pub abs_floor: f64,
}

impl Default for DetectorConfig {
    fn default() -> Self {
        Self {
            span_buckets: 30,
            warmup_buckets: 30,
            z_threshold: 6.0,
            cusum_k: 1.0,
            cusum_h: 10.0,
            cusum_clamp: 4.0,
            update_clamp: 3.0,
            rel_floor: 0.05,
            abs_floor: 0.0,
        }
    }
}

/// Static rules: thresholds an operator states, not learnt.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct RuleConfig {
    /// Alert on any single request with more input tokens than this (0 = off).
    pub max_prompt_tokens: u64,
    /// Alert when denied/all over the window exceeds this fraction (0 = off).
    pub deny_rate: f64,
    /// Window of the deny-rate rule, in buckets.
    pub deny_rate_window_buckets: u32,
    /// Fewest requests in the window for the deny-rate rule to judge.
    pub deny_rate_min_requests: u64,
    /// Fractions of a tenant's daily token budget that alert once per day each.
    pub budget_thresholds: Vec<f64>,
}

impl Default for RuleConfig {
    fn default() -> Self {
        Self {
            max_prompt_tokens: 10_000,
            deny_rate: 0.30,
            deny_rate_window_buckets: 5,
            deny_rate_min_requests: 20,
            budget_thresholds: vec![0.5, 0.8, 1.0],
        }
    }
}

/// Everything Sentinel needs.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct SentinelConfig {
    /// Bucket width in milliseconds.
    pub bucket_ms: u64,
    /// Tenants tracked at once (least recently seen evicted beyond it).
    pub max_tenants: usize,
    /// User/key/tool series tracked per tenant (least recently seen evicted beyond it).
    pub max_series_per_tenant: usize,
    /// Empty buckets replayed at most when a series was idle (the rest is skipped).
    pub max_gap_buckets: u32,
    /// Same alert (tenant, subject, signal, detector) at most once per this many ms.
    pub cooldown_ms: u64,
    /// Fewest requests in a bucket for ratio and per-request signals to be judged.
    pub min_requests: u64,
    /// Run detectors on user/key/tool series, not only on the tenant total.
    pub per_subject: bool,
    pub detector: DetectorConfig,
    pub rules: RuleConfig,
}

impl Default for SentinelConfig {
    fn default() -> Self {
        Self {
            bucket_ms: 60_000,
            max_tenants: 10_000,
            max_series_per_tenant: 256,
            max_gap_buckets: 120,
            cooldown_ms: 15 * 60_000,
            min_requests: 20,
            per_subject: true,
            detector: DetectorConfig::default(),
            rules: RuleConfig::default(),
        }
    }
}
