//! Rate limits and token budgets declared in policy (`limits:` / `budgets:`), counted by a
//! [`Limiter`] backend: in-process, or Redis so every replica shares one count.
//!
//! Counting model: fixed, aligned windows. One check reserves on every applicable counter
//! at once, all or nothing (a mutex in process; one Lua script in Redis), so N concurrent
//! callers against a limit of L get exactly L through per window. Token limits reserve an
//! estimate (input bytes / 4, plus `max_tokens` for output) and settle the real usage when
//! the call's receipt is committed (`settle`, from `commit_draft`), streams included.
//! Cost budgets (`cost_usd`) count micro-dollars: the token estimate priced by the price
//! table (`limits.prices`) at admission, the real usage priced the same way at settlement.

use crate::auth::Principal;
use crate::error::ApiError;
use crate::policy::Layers;
use crate::state::AppState;
use async_trait::async_trait;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::Response;
use palisade_audit::{Receipt, ReceiptKind};
use palisade_policy::{CompiledPolicy, LimitRule, LimitScope, LimitUnit, LimitWindow};
use serde_json::{Value, json};
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// One counter to reserve on.
#[derive(Debug, Clone)]
pub struct Check {
    pub key: String,
    pub amount: u64,
    pub limit: u64,
    /// Time to live of a new counter (the window's remaining length plus slack).
    pub ttl_ms: u64,
}

/// The answer of a reservation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reserve {
    /// Reserved; the counters' new values, in check order.
    Granted(Vec<u64>),
    /// Nothing reserved: check `index` would exceed its limit; `current` is its value.
    Refused { index: usize, current: u64 },
}

#[derive(Debug, thiserror::Error)]
pub enum LimitError {
    #[error("redis: {0}")]
    Redis(String),
}

/// A counter store. `reserve` is atomic over all its checks.
#[async_trait]
pub trait Limiter: Send + Sync {
    async fn reserve(&self, checks: &[Check]) -> Result<Reserve, LimitError>;
    /// Adds `delta` to counters that still exist (a settle after the window ended is
    /// dropped); returns the new values (0 for a dropped one).
    async fn adjust(&self, deltas: &[(String, i64)]) -> Result<Vec<u64>, LimitError>;
}

/// In-process counters under one mutex: exact under any concurrency within a process.
#[derive(Default)]
pub struct LocalLimiter {
    inner: std::sync::Mutex<LocalInner>,
}

#[derive(Default)]
struct LocalInner {
    /// key → (count, expiry in ms since the epoch)
    counters: HashMap<String, (u64, u64)>,
    next_sweep_ms: u64,
}

impl LocalLimiter {
    fn lock(&self) -> std::sync::MutexGuard<'_, LocalInner> {
        // A panic while holding the lock cannot leave counters half-updated (no partial
        // writes happen under it), so a poisoned lock is still usable.
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

#[async_trait]
impl Limiter for LocalLimiter {
    async fn reserve(&self, checks: &[Check]) -> Result<Reserve, LimitError> {
        let now = now_ms();
        let mut g = self.lock();
        if now >= g.next_sweep_ms {
            g.counters.retain(|_, (_, exp)| *exp > now);
            g.next_sweep_ms = now + 10_000;
        }
        for (index, c) in checks.iter().enumerate() {
            let current = match g.counters.get(&c.key) {
                Some((n, exp)) if *exp > now => *n,
                _ => 0,
            };
            if current.saturating_add(c.amount) > c.limit {
                return Ok(Reserve::Refused { index, current });
            }
        }
        let mut out = Vec::with_capacity(checks.len());
        for c in checks {
            let e = g.counters.entry(c.key.clone()).or_insert((0, 0));
            if e.1 <= now {
                *e = (0, now + c.ttl_ms);
            }
            e.0 = e.0.saturating_add(c.amount);
            out.push(e.0);
        }
        Ok(Reserve::Granted(out))
    }

    async fn adjust(&self, deltas: &[(String, i64)]) -> Result<Vec<u64>, LimitError> {
        let now = now_ms();
        let mut g = self.lock();
        Ok(deltas
            .iter()
            .map(|(k, d)| match g.counters.get_mut(k) {
                Some(e) if e.1 > now => {
                    e.0 = e.0.saturating_add_signed(*d);
                    e.0
                }
                _ => 0,
            })
            .collect())
    }
}

/// Checks every counter, then increments all of them, in one atomic script.
/// KEYS = counters; ARGV = amount, limit, ttl_ms per key.
const RESERVE_LUA: &str = r"
local vals = {}
for i = 1, #KEYS do
  local cur = tonumber(redis.call('GET', KEYS[i]) or '0')
  if cur + tonumber(ARGV[3*i-2]) > tonumber(ARGV[3*i-1]) then
    return {0, i, cur}
  end
end
local out = {1}
for i = 1, #KEYS do
  local v = redis.call('INCRBY', KEYS[i], ARGV[3*i-2])
  if redis.call('PTTL', KEYS[i]) < 0 then redis.call('PEXPIRE', KEYS[i], ARGV[3*i]) end
  out[#out+1] = v
end
return out
";

/// Adds a (possibly negative) delta to counters that still exist. ARGV = delta per key.
const ADJUST_LUA: &str = r"
local out = {}
for i = 1, #KEYS do
  if redis.call('EXISTS', KEYS[i]) == 1 then
    local v = redis.call('INCRBY', KEYS[i], ARGV[i])
    if v < 0 then redis.call('SET', KEYS[i], 0, 'KEEPTTL'); v = 0 end
    out[i] = v
  else
    out[i] = 0
  end
end
return out
";

/// Redis counters shared by all replicas: one `EVALSHA` per check.
pub struct RedisLimiter {
    client: redis::Client,
    conn: tokio::sync::OnceCell<redis::aio::ConnectionManager>,
    reserve: redis::Script,
    adjust: redis::Script,
}

impl RedisLimiter {
    pub fn new(url: &str) -> Result<Self, LimitError> {
        Ok(Self {
            client: redis::Client::open(url).map_err(|e| LimitError::Redis(e.to_string()))?,
            conn: tokio::sync::OnceCell::new(),
            reserve: redis::Script::new(RESERVE_LUA),
            adjust: redis::Script::new(ADJUST_LUA),
        })
    }

    async fn conn(&self) -> Result<redis::aio::ConnectionManager, LimitError> {
        let cfg = redis::aio::ConnectionManagerConfig::new()
            .set_connection_timeout(Some(Duration::from_millis(500)))
            .set_response_timeout(Some(Duration::from_millis(500)))
            .set_number_of_retries(1);
        self.conn
            .get_or_try_init(|| {
                redis::aio::ConnectionManager::new_with_config(self.client.clone(), cfg)
            })
            .await
            .cloned()
            .map_err(|e| LimitError::Redis(e.to_string()))
    }
}

#[async_trait]
impl Limiter for RedisLimiter {
    async fn reserve(&self, checks: &[Check]) -> Result<Reserve, LimitError> {
        if checks.is_empty() {
            return Ok(Reserve::Granted(Vec::new()));
        }
        let mut conn = self.conn().await?;
        let mut inv = self.reserve.prepare_invoke();
        for c in checks {
            inv.key(&c.key).arg(c.amount).arg(c.limit).arg(c.ttl_ms);
        }
        let v: Vec<i64> = inv
            .invoke_async(&mut conn)
            .await
            .map_err(|e| LimitError::Redis(e.to_string()))?;
        match v.as_slice() {
            [1, rest @ ..] => Ok(Reserve::Granted(
                rest.iter().map(|n| (*n).max(0) as u64).collect(),
            )),
            [0, i, cur] => Ok(Reserve::Refused {
                index: (*i as usize).saturating_sub(1),
                current: (*cur).max(0) as u64,
            }),
            _ => Err(LimitError::Redis("unexpected script reply".into())),
        }
    }

    async fn adjust(&self, deltas: &[(String, i64)]) -> Result<Vec<u64>, LimitError> {
        if deltas.is_empty() {
            return Ok(Vec::new());
        }
        let mut conn = self.conn().await?;
        let mut inv = self.adjust.prepare_invoke();
        for (k, d) in deltas {
            inv.key(k).arg(*d);
        }
        let v: Vec<i64> = inv
            .invoke_async(&mut conn)
            .await
            .map_err(|e| LimitError::Redis(e.to_string()))?;
        Ok(v.into_iter().map(|n| n.max(0) as u64).collect())
    }
}

/// Which backend a reservation was made on (a settle goes to the same one).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Backend {
    Local,
    Remote,
}

/// The process's limiters and their configuration.
/// The price table, compiled: model globs in order, first match wins.
#[derive(Debug, Clone)]
pub struct Prices {
    rows: Vec<(palisade_policy::Glob, f64, f64)>,
    /// The highest input and output prices listed: what an unlisted model is charged.
    fallback: (f64, f64),
}

impl Prices {
    pub fn new(rows: &[crate::config::ModelPrice]) -> Result<Self, String> {
        let mut out = Vec::new();
        let mut fallback = (0.0f64, 0.0f64);
        for r in rows {
            let ok = |x: f64| x.is_finite() && (0.0..=1e6).contains(&x);
            if !ok(r.input_per_mtok) || !ok(r.output_per_mtok) {
                return Err(format!(
                    "limits.prices: prices for `{}` must be between 0 and 1000000 USD per million tokens",
                    r.model
                ));
            }
            let g = palisade_policy::Glob::new(&r.model)
                .map_err(|e| format!("limits.prices: model `{}`: {e}", r.model))?;
            fallback.0 = fallback.0.max(r.input_per_mtok);
            fallback.1 = fallback.1.max(r.output_per_mtok);
            out.push((g, r.input_per_mtok, r.output_per_mtok));
        }
        Ok(Self {
            rows: out,
            fallback,
        })
    }

    /// USD per million input and output tokens for `model`.
    pub fn rates(&self, model: Option<&str>) -> (f64, f64) {
        model
            .and_then(|m| self.rows.iter().find(|(g, _, _)| g.matches(m)))
            .map(|(_, i, o)| (*i, *o))
            .unwrap_or(self.fallback)
    }
}

/// Micro-dollars for a usage at `rates` (USD per million tokens = micro-dollars per
/// token), rounded up so a budget is never undercounted.
pub fn cost_micro_usd(rates: (f64, f64), input: u64, output: u64) -> u64 {
    let c = input as f64 * rates.0 + output as f64 * rates.1;
    if c.is_finite() && c > 0.0 {
        c.ceil().min(u64::MAX as f64) as u64
    } else {
        0
    }
}

#[derive(Clone)]
pub struct Limits {
    /// Prices for cost budgets.
    pub prices: Arc<Prices>,
    local: Arc<LocalLimiter>,
    remote: Option<Arc<dyn Limiter>>,
    fail_closed: bool,
    prefix: Arc<str>,
    last_warn_ms: Arc<AtomicU64>,
}

impl Limits {
    pub fn from_config(cfg: &crate::config::Config) -> Result<Self, ApiError> {
        let remote: Option<Arc<dyn Limiter>> = match cfg.limits.backend.as_str() {
            "local" => None,
            "redis" => {
                let url = cfg
                    .redis
                    .url
                    .as_deref()
                    .filter(|u| !u.is_empty())
                    .ok_or_else(|| {
                        ApiError::internal("limits.backend is redis but redis.url is not set")
                    })?;
                Some(Arc::new(
                    RedisLimiter::new(url)
                        .map_err(|e| ApiError::internal(format!("limits: {e}")))?,
                ))
            }
            other => {
                return Err(ApiError::internal(format!(
                    "limits.backend must be local or redis, not `{other}`"
                )));
            }
        };
        let fail_closed = match cfg.limits.on_redis_error.as_str() {
            "local" => false,
            "fail_closed" => true,
            other => {
                return Err(ApiError::internal(format!(
                    "limits.on_redis_error must be local or fail_closed, not `{other}`"
                )));
            }
        };
        Ok(Self {
            prices: Arc::new(Prices::new(&cfg.limits.prices).map_err(ApiError::internal)?),
            local: Arc::new(LocalLimiter::default()),
            remote,
            fail_closed,
            prefix: cfg.limits.key_prefix.as_str().into(),
            last_warn_ms: Arc::new(AtomicU64::new(0)),
        })
    }

    /// Replaces the shared backend (tests, benches).
    pub fn with_backend(mut self, backend: Arc<dyn Limiter>, fail_closed: bool) -> Self {
        self.remote = Some(backend);
        self.fail_closed = fail_closed;
        self
    }

    fn warn(&self, e: &LimitError) {
        let now = now_ms();
        let last = self.last_warn_ms.load(Ordering::Relaxed);
        if now.saturating_sub(last) >= 10_000 {
            self.last_warn_ms.store(now, Ordering::Relaxed);
            tracing::warn!(error = %e, "rate-limit backend unreachable; using the in-process limiter");
        }
    }

    async fn reserve(&self, checks: &[Check]) -> Result<(Backend, Reserve), ApiError> {
        if let Some(r) = &self.remote {
            match r.reserve(checks).await {
                Ok(x) => return Ok((Backend::Remote, x)),
                Err(e) if self.fail_closed => {
                    tracing::error!(error = %e, "rate-limit backend unreachable; failing closed");
                    return Err(ApiError::unavailable(
                        "limiter_unavailable",
                        "the rate limiter is unavailable; request refused",
                    )
                    .with_kind("overloaded_error"));
                }
                Err(e) => self.warn(&e),
            }
        }
        let x = self
            .local
            .reserve(checks)
            .await
            .map_err(|e| ApiError::internal(format!("local limiter: {e}")))?;
        Ok((Backend::Local, x))
    }

    async fn adjust(&self, backend: Backend, deltas: &[(String, i64)]) -> Option<Vec<u64>> {
        let res = match (backend, &self.remote) {
            (Backend::Remote, Some(r)) => r.adjust(deltas).await,
            _ => self.local.adjust(deltas).await,
        };
        match res {
            Ok(v) => Some(v),
            Err(e) => {
                tracing::warn!(error = %e, "could not settle token usage");
                None
            }
        }
    }

    /// A raw check against the configured backend (benches, tests).
    pub async fn check_raw(&self, checks: &[Check]) -> Result<bool, ApiError> {
        Ok(matches!(self.reserve(checks).await?.1, Reserve::Granted(_)))
    }
}

/// A counter a call holds, with what it reserved.
#[derive(Debug, Clone)]
struct Held {
    key: String,
    unit: LimitUnit,
    estimate: u64,
    limit: u64,
    /// Prices of the call's model, for cost budgets.
    rates: (f64, f64),
    /// Budget alert thresholds (empty for plain limits) and the budget's label.
    alerts: Vec<u8>,
    label: String,
    ttl_ms: u64,
}

/// What a call reserved, settled at receipt commit. Lives in the receipt `Draft`.
#[derive(Debug, Default)]
pub struct Pending {
    backend: Option<Backend>,
    held: Vec<Held>,
    /// Set when the call was refused: the limit that refused it (receipt details).
    pub refused: Option<Value>,
}

/// Anthropic-style rate-limit headers for a response.
#[derive(Debug, Default, Clone)]
pub struct RateHeaders(Vec<(&'static str, String)>);

impl RateHeaders {
    /// Adds the headers to a response.
    pub fn apply(&self, mut resp: Response) -> Response {
        let h: &mut HeaderMap = resp.headers_mut();
        for (name, v) in &self.0 {
            if let Ok(v) = HeaderValue::from_str(v) {
                h.insert(*name, v);
            }
        }
        resp
    }
}

struct Planned {
    rule: LimitRule,
    layer: &'static str,
    check: Check,
    reset_ms: u64,
}

fn unit_header(u: LimitUnit) -> &'static str {
    match u {
        LimitUnit::Requests => "requests",
        LimitUnit::TotalTokens => "tokens",
        LimitUnit::InputTokens => "input-tokens",
        LimitUnit::OutputTokens => "output-tokens",
        LimitUnit::CostMicroUsd => "cost-micro-usd",
    }
}

fn header_names(u: LimitUnit) -> [&'static str; 3] {
    match u {
        LimitUnit::Requests => [
            "anthropic-ratelimit-requests-limit",
            "anthropic-ratelimit-requests-remaining",
            "anthropic-ratelimit-requests-reset",
        ],
        LimitUnit::TotalTokens => [
            "anthropic-ratelimit-tokens-limit",
            "anthropic-ratelimit-tokens-remaining",
            "anthropic-ratelimit-tokens-reset",
        ],
        LimitUnit::InputTokens => [
            "anthropic-ratelimit-input-tokens-limit",
            "anthropic-ratelimit-input-tokens-remaining",
            "anthropic-ratelimit-input-tokens-reset",
        ],
        LimitUnit::OutputTokens => [
            "anthropic-ratelimit-output-tokens-limit",
            "anthropic-ratelimit-output-tokens-remaining",
            "anthropic-ratelimit-output-tokens-reset",
        ],
        // No Anthropic counterpart: Palisade's own names.
        LimitUnit::CostMicroUsd => [
            "x-palisade-budget-cost-micro-usd-limit",
            "x-palisade-budget-cost-micro-usd-remaining",
            "x-palisade-budget-cost-micro-usd-reset",
        ],
    }
}

/// Headers for the most restrictive limit of each unit (lowest remaining).
fn headers_for(plans: &[Planned], values: &[u64]) -> RateHeaders {
    let mut best: HashMap<&'static str, (u64, &Planned)> = HashMap::new();
    for (p, v) in plans.iter().zip(values) {
        if p.rule.budget {
            continue;
        }
        let remaining = p.rule.amount.saturating_sub(*v);
        let e = best
            .entry(unit_header(p.rule.unit))
            .or_insert((remaining, p));
        if remaining < e.0 {
            *e = (remaining, p);
        }
    }
    let mut out = Vec::new();
    for (remaining, p) in best.values() {
        let [l, r, t] = header_names(p.rule.unit);
        out.push((l, p.rule.amount.to_string()));
        out.push((r, remaining.to_string()));
        out.push((t, rfc3339(p.reset_ms)));
    }
    out.sort();
    RateHeaders(out)
}

fn rfc3339(ms: u64) -> String {
    palisade_audit::format_created_at(ms)
}

fn now_ms() -> u64 {
    palisade_store::now_ms().max(0) as u64
}

/// Window index and end (ms) of the window containing `now`.
fn window_at(w: LimitWindow, now: u64) -> (u64, u64) {
    match w {
        LimitWindow::Fixed(len) => {
            let len = len.max(1);
            let idx = now / len;
            (idx, (idx + 1) * len)
        }
        LimitWindow::Month => {
            let secs = (now / 1000) as i64;
            let Ok(t) = time::OffsetDateTime::from_unix_timestamp(secs) else {
                return (0, now + 86_400_000);
            };
            let (y, m) = (t.year(), t.month());
            let idx = (y as u64) * 12 + (m as u64 - 1);
            let (ny, nm) = if m == time::Month::December {
                (y + 1, time::Month::January)
            } else {
                (y, m.next())
            };
            let end = time::Date::from_calendar_date(ny, nm, 1)
                .map(|d| d.midnight().assume_utc().unix_timestamp().max(0) as u64 * 1000)
                .unwrap_or(now + 31 * 86_400_000);
            (idx, end)
        }
    }
}

/// Escapes `%` and `:` so a value cannot forge another counter's key.
fn esc(s: &str) -> String {
    s.replace('%', "%25").replace(':', "%3A")
}

/// What identifies the caller and the call for scoping.
pub struct Subject<'a> {
    pub principal: &'a Principal,
    pub model: Option<&'a str>,
    pub tool: Option<&'a str>,
}

fn plan(
    prefix: &str,
    layers: &Layers,
    subject: &Subject<'_>,
    est_in: u64,
    est_out: u64,
    est_cost: u64,
    now: u64,
) -> Vec<Planned> {
    let tenant = subject.principal.tenant_id();
    let mut out = Vec::new();
    let sources: [(&'static str, Option<&CompiledPolicy>); 2] =
        [("p", layers.platform()), ("t", layers.tenant())];
    for (layer, pol) in sources {
        let Some(pol) = pol else { continue };
        for rule in pol.limits() {
            let applies = match subject.tool {
                Some(t) => rule.applies_to_tool(t),
                None => rule.applies_to_model(subject.model),
            };
            if !applies {
                continue;
            }
            let amount = match rule.unit {
                LimitUnit::Requests => 1,
                LimitUnit::InputTokens => est_in,
                LimitUnit::OutputTokens => est_out,
                LimitUnit::TotalTokens => est_in.saturating_add(est_out),
                LimitUnit::CostMicroUsd => est_cost,
            };
            let (idx, reset_ms) = window_at(rule.window, now);
            // `{tenant}` is a Redis Cluster hash tag: one check's keys share a slot.
            let mut key = format!("{prefix}{{{}}}:{layer}:{}", esc(tenant), rule.id);
            for s in &rule.scope {
                let v = match s {
                    LimitScope::Tenant => continue,
                    LimitScope::Key => subject.principal.key.id.clone(),
                    // A key without a user counts as its own user.
                    LimitScope::User => subject
                        .principal
                        .user_id()
                        .map(str::to_string)
                        .unwrap_or_else(|| format!("key/{}", subject.principal.key.id)),
                    LimitScope::Tool => subject.tool.unwrap_or_default().to_string(),
                    LimitScope::Model => subject.model.unwrap_or_default().to_string(),
                };
                key.push_str(&format!(":{}={}", s.as_str(), esc(&v)));
            }
            key.push_str(&format!(":w{idx}"));
            out.push(Planned {
                check: Check {
                    key,
                    amount,
                    limit: rule.amount,
                    ttl_ms: reset_ms.saturating_sub(now) + 60_000,
                },
                rule: rule.clone(),
                layer,
                reset_ms,
            });
        }
    }
    out
}

/// `400 tokens`, or `$12.50` for cost.
fn amount_label(unit: LimitUnit, amount: u64) -> String {
    match unit {
        LimitUnit::CostMicroUsd => format!(
            "${}.{:02}",
            amount / palisade_policy::MICRO_USD,
            (amount % palisade_policy::MICRO_USD) / 10_000
        ),
        u => format!("{amount} {}", u.as_str()),
    }
}

fn refusal(p: &Planned, current: u64, now: u64) -> (ApiError, Value) {
    let retry = p.reset_ms.saturating_sub(now).div_ceil(1000).max(1);
    let layer = if p.layer == "p" { "platform" } else { "tenant" };
    let scope: Vec<&str> = p.rule.scope.iter().map(|s| s.as_str()).collect();
    let (reason, message) = if p.rule.budget {
        (
            "budget_exhausted",
            format!(
                "the {layer} {} budget `{}` ({} per {}, scope {}) is exhausted; it resets at {}",
                if p.rule.unit == LimitUnit::CostMicroUsd {
                    "cost"
                } else {
                    "token"
                },
                p.rule.id,
                amount_label(p.rule.unit, p.rule.amount),
                p.rule.window.label(),
                if scope.is_empty() {
                    "tenant".to_string()
                } else {
                    scope.join("+")
                },
                rfc3339(p.reset_ms)
            ),
        )
    } else {
        (
            "rate_limited",
            format!(
                "rate limit `{}` exceeded ({layer} policy: {} {} per {}); retry after {retry}s",
                p.rule.id,
                p.rule.amount,
                p.rule.unit.as_str(),
                p.rule.window.label()
            ),
        )
    };
    let mut err = ApiError::new(StatusCode::TOO_MANY_REQUESTS, reason, message);
    err.retry_after = Some(retry);
    let detail = json!({
        "limit": p.rule.id,
        "layer": layer,
        "budget": p.rule.budget,
        "unit": p.rule.unit.as_str(),
        "amount": p.rule.amount,
        "window": p.rule.window.label(),
        "current": current,
        "requested": p.check.amount,
    });
    (err, detail)
}

/// Counts a call against the applicable limits and budgets. On success the reservation is
/// kept in `pending` (settled at receipt commit) and the headers go on the response. On
/// refusal `pending.refused` describes the limit and the error carries the headers too.
pub async fn admit(
    state: &AppState,
    layers: &Layers,
    subject: Subject<'_>,
    body: &serde_json::Map<String, Value>,
    body_len: usize,
    pending: &mut Pending,
) -> Result<RateHeaders, (ApiError, RateHeaders)> {
    let est_in = (body_len as u64).div_ceil(4);
    let est_out = body.get("max_tokens").and_then(Value::as_u64).unwrap_or(0);
    let now = now_ms();
    let rates = state.limits.prices.rates(subject.model);
    let est_cost = cost_micro_usd(rates, est_in, est_out);
    let plans = plan(
        &state.limits.prefix,
        layers,
        &subject,
        est_in,
        est_out,
        est_cost,
        now,
    );
    if plans.is_empty() {
        return Ok(RateHeaders::default());
    }
    let checks: Vec<Check> = plans.iter().map(|p| p.check.clone()).collect();
    let (backend, res) = state
        .limits
        .reserve(&checks)
        .await
        .map_err(|e| (e, RateHeaders::default()))?;
    match res {
        Reserve::Granted(values) => {
            pending.backend = Some(backend);
            for p in plans.iter().filter(|p| p.rule.unit.is_tokens()) {
                pending.held.push(Held {
                    key: p.check.key.clone(),
                    unit: p.rule.unit,
                    estimate: p.check.amount,
                    limit: p.rule.amount,
                    rates,
                    alerts: p.rule.alerts.clone(),
                    label: p.rule.id.clone(),
                    ttl_ms: p.check.ttl_ms,
                });
            }
            Ok(headers_for(&plans, &values))
        }
        Reserve::Refused { index, current } => {
            let Some(p) = plans.get(index) else {
                return Err((ApiError::internal("limiter index"), RateHeaders::default()));
            };
            let (err, detail) = refusal(p, current, now);
            pending.refused = Some(detail);
            // Current values (nothing was reserved) for the headers.
            let mut values: Vec<u64> = vec![0; plans.len()];
            if let Some(v) = values.get_mut(index) {
                *v = current.max(p.rule.amount);
            }
            Err((err, headers_for(&plans, &values)))
        }
    }
}

/// The `/v1/messages` hook: counts the call, and on refusal turns the draft into a
/// `rate_limit` receipt. `count_tokens` calls are not counted.
pub async fn admit_message(
    state: &AppState,
    layers: &Layers,
    principal: &Principal,
    draft: &mut crate::receipt_build::Draft,
    body: &serde_json::Map<String, Value>,
    body_len: usize,
    count_only: bool,
) -> Result<RateHeaders, (ApiError, RateHeaders)> {
    if count_only {
        return Ok(RateHeaders::default());
    }
    let model = draft.model.clone();
    let subject = Subject {
        principal,
        model: model.as_deref(),
        tool: None,
    };
    let res = admit(state, layers, subject, body, body_len, &mut draft.limits).await;
    if res.is_err() && draft.limits.refused.is_some() {
        draft.kind = ReceiptKind::RateLimit;
        draft.decision = "rate_limited".into();
    }
    res
}

/// Settles a call's token reservations with its real usage (0 when it never reached the
/// upstream) and raises budget alerts. Called from `commit_draft`.
pub async fn settle(
    state: &AppState,
    principal: &Principal,
    pending: &mut Pending,
    input: Option<u64>,
    output: Option<u64>,
) {
    let Some(backend) = pending.backend.take() else {
        return;
    };
    let held = std::mem::take(&mut pending.held);
    if held.is_empty() {
        return;
    }
    let (i, o) = (input.unwrap_or(0), output.unwrap_or(0));
    let deltas: Vec<(String, i64)> = held
        .iter()
        .map(|h| {
            let actual = match h.unit {
                LimitUnit::InputTokens => i,
                LimitUnit::OutputTokens => o,
                LimitUnit::CostMicroUsd => cost_micro_usd(h.rates, i, o),
                _ => i.saturating_add(o),
            };
            (h.key.clone(), actual as i64 - h.estimate as i64)
        })
        .collect();
    let Some(values) = state.limits.adjust(backend, &deltas).await else {
        return;
    };
    for (h, used) in held.iter().zip(values) {
        for t in &h.alerts {
            let threshold = h.limit.saturating_mul(u64::from(*t)).div_ceil(100);
            if used < threshold.max(1) {
                continue;
            }
            // Exactly one alert per threshold and window: a marker counter of limit 1.
            let marker = Check {
                key: format!("{}:alert{t}", h.key),
                amount: 1,
                limit: 1,
                ttl_ms: h.ttl_ms,
            };
            let first = match backend {
                Backend::Remote => state.limits.reserve(std::slice::from_ref(&marker)).await,
                Backend::Local => state
                    .limits
                    .local
                    .reserve(std::slice::from_ref(&marker))
                    .await
                    .map(|r| (Backend::Local, r))
                    .map_err(|e| ApiError::internal(e.to_string())),
            };
            if matches!(first, Ok((_, Reserve::Granted(_)))) {
                alert(state, principal, h, *t, used);
            }
        }
    }
}

fn alert(state: &AppState, principal: &Principal, h: &Held, threshold: u8, used: u64) {
    let mut r = Receipt::new(
        uuid::Uuid::now_v7().hyphenated().to_string(),
        principal.tenant_id(),
        ReceiptKind::Alert,
        palisade_audit::format_created_at(now_ms()),
        "alert",
    );
    r.key_id = Some(principal.key.id.clone());
    r.user_id = principal.key.user_id.clone();
    r.reason_code = Some("budget_threshold".into());
    r.details = json!({
        "budget": h.label,
        "threshold": threshold,
        "used": used,
        "limit": h.limit,
    });
    let writer = state.receipts.clone();
    state.tracker.spawn(async move {
        if let Err(e) = writer.commit(r).await {
            tracing::warn!(error = %e, "could not write a budget alert receipt");
        }
    });
}

/// Request limits on one `/v1/guard/tool` call (limits with a `tool` filter or scope).
/// A refusal writes a `rate_limit` receipt and becomes a 429 carrying it.
pub async fn admit_tool(
    state: &AppState,
    layers: &Layers,
    principal: &Principal,
    tool: &str,
) -> Result<(), ApiError> {
    let subject = Subject {
        principal,
        model: None,
        tool: Some(tool),
    };
    let mut pending = Pending::default();
    let Err((err, _)) = admit(
        state,
        layers,
        subject,
        &serde_json::Map::new(),
        0,
        &mut pending,
    )
    .await
    else {
        return Ok(());
    };
    let Some(detail) = pending.refused else {
        return Err(err);
    };
    let mut r = Receipt::new(
        uuid::Uuid::now_v7().hyphenated().to_string(),
        principal.tenant_id(),
        ReceiptKind::RateLimit,
        palisade_audit::format_created_at(now_ms()),
        "rate_limited",
    );
    r.key_id = Some(principal.key.id.clone());
    r.user_id = principal.key.user_id.clone();
    r.reason_code = Some(err.reason.to_string());
    r.details = json!({"endpoint": "guard_tool", "tool": tool, "limit": detail});
    let sealed = state.receipts.commit(r).await.map_err(ApiError::from)?;
    Err(err.with_receipt(Some(sealed.id)))
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    #[test]
    fn prices_first_match_and_dearest_fallback() {
        let p = Prices::new(&crate::config::LimitConfig::default().prices).unwrap();
        assert_eq!(p.rates(Some("claude-opus-4-5-20251101")), (5.0, 25.0));
        assert_eq!(p.rates(Some("claude-opus-4-1")), (15.0, 75.0));
        assert_eq!(p.rates(Some("claude-haiku-4-5")), (1.0, 5.0));
        // Unlisted or absent model: the highest prices listed.
        assert_eq!(p.rates(Some("brand-new-model")), (15.0, 75.0));
        assert_eq!(p.rates(None), (15.0, 75.0));
        // 1,000 input + 100 output tokens of Sonnet: $0.003 + $0.0015.
        assert_eq!(cost_micro_usd((3.0, 15.0), 1000, 100), 4500);
        // Rounded up, never down.
        assert_eq!(cost_micro_usd((0.25, 1.25), 1, 0), 1);
        assert_eq!(cost_micro_usd((0.0, 0.0), 10, 10), 0);
        assert_eq!(amount_label(LimitUnit::CostMicroUsd, 12_500_000), "$12.50");
        let bad = crate::config::ModelPrice {
            model: "m".into(),
            input_per_mtok: f64::NAN,
            output_per_mtok: 1.0,
        };
        assert!(Prices::new(&[bad]).is_err());
    }

    #[tokio::test]
    async fn local_is_all_or_nothing() {
        let l = LocalLimiter::default();
        let c = |k: &str, a, lim| Check {
            key: k.into(),
            amount: a,
            limit: lim,
            ttl_ms: 60_000,
        };
        assert_eq!(
            l.reserve(&[c("a", 1, 2), c("b", 5, 5)]).await.unwrap(),
            Reserve::Granted(vec![1, 5])
        );
        assert_eq!(
            l.reserve(&[c("a", 1, 2), c("b", 1, 5)]).await.unwrap(),
            Reserve::Refused {
                index: 1,
                current: 5
            }
        );
        // `a` was not incremented by the refused check.
        assert_eq!(
            l.reserve(&[c("a", 1, 2)]).await.unwrap(),
            Reserve::Granted(vec![2])
        );
        assert_eq!(l.adjust(&[("b".into(), -3)]).await.unwrap(), vec![2]);
        assert_eq!(l.adjust(&[("zz".into(), 4)]).await.unwrap(), vec![0]);
    }

    #[test]
    fn month_window() {
        // 2026-02-15T00:00:00Z
        let (idx, end) = window_at(LimitWindow::Month, 1_771_113_600_000);
        assert_eq!(idx, 2026 * 12 + 1);
        assert_eq!(end, 1_772_323_200_000); // 2026-03-01
        let (idx, end) = window_at(LimitWindow::Fixed(60_000), 125_000);
        assert_eq!((idx, end), (2, 180_000));
    }
}
