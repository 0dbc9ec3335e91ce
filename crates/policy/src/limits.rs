//! The `limits:` and `budgets:` sections: rate limits and token budgets declared in policy.
//!
//! This module only parses and validates; counting happens in the gateway (the pure core
//! has no clock). Both sections produce [`LimitRule`]s; a budget is a token or cost limit
//! over a day or a month that also raises alerts at thresholds. Cost (`cost_usd`) is
//! counted in whole micro-dollars so counters stay exact integers in every backend.

use crate::diag::{Pos, hint};
use crate::glob::Glob;
use crate::yaml::{Sink, Y, YV};
use std::collections::HashSet;

/// What a limit counts per distinct value of.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum LimitScope {
    Tenant,
    Key,
    User,
    Tool,
    Model,
}

impl LimitScope {
    pub const NAMES: &'static [&'static str] = &["tenant", "key", "user", "tool", "model"];

    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "tenant" => Self::Tenant,
            "key" => Self::Key,
            "user" => Self::User,
            "tool" => Self::Tool,
            "model" => Self::Model,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Tenant => "tenant",
            Self::Key => "key",
            Self::User => "user",
            Self::Tool => "tool",
            Self::Model => "model",
        }
    }
}

/// What a limit counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LimitUnit {
    Requests,
    InputTokens,
    OutputTokens,
    TotalTokens,
    /// Spend in micro-dollars (USD × 1,000,000), priced by the gateway's price table.
    CostMicroUsd,
}

/// Micro-dollars per dollar.
pub const MICRO_USD: u64 = 1_000_000;
/// Largest `cost_usd` accepted (keeps micro-dollar counters far from overflow).
const MAX_COST_USD: f64 = 1e9;

impl LimitUnit {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Requests => "requests",
            Self::InputTokens => "input_tokens",
            Self::OutputTokens => "output_tokens",
            Self::TotalTokens => "tokens",
            Self::CostMicroUsd => "cost_micro_usd",
        }
    }
    pub fn is_tokens(self) -> bool {
        self != Self::Requests
    }
}

/// The counting window. Windows are fixed and aligned (to the Unix epoch, so `day` is a
/// UTC day; `month` is a UTC calendar month).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LimitWindow {
    /// A fixed window of this many milliseconds.
    Fixed(u64),
    /// A UTC calendar month.
    Month,
}

impl LimitWindow {
    /// Human label (`60s`, `1h`, `month`).
    pub fn label(self) -> String {
        match self {
            Self::Month => "month".into(),
            Self::Fixed(ms) if ms % 86_400_000 == 0 => format!("{}d", ms / 86_400_000),
            Self::Fixed(ms) if ms % 3_600_000 == 0 => format!("{}h", ms / 3_600_000),
            Self::Fixed(ms) if ms % 60_000 == 0 => format!("{}m", ms / 60_000),
            Self::Fixed(ms) if ms % 1000 == 0 => format!("{}s", ms / 1000),
            Self::Fixed(ms) => format!("{ms}ms"),
        }
    }
}

/// One limit or budget.
#[derive(Debug, Clone, PartialEq)]
pub struct LimitRule {
    pub id: String,
    /// Sorted, distinct. Empty only for a limit shared by all callers of the tenant (the
    /// gateway always counts per tenant, so `[]` and `[tenant]` are the same).
    pub scope: Vec<LimitScope>,
    pub unit: LimitUnit,
    pub amount: u64,
    pub window: LimitWindow,
    /// Applies only to these models (globs); `None` = every model.
    pub models: Option<Vec<Glob>>,
    /// Applies only to these tools (globs, `/v1/guard/tool` calls); `None` = not
    /// restricted. A limit with a tool filter or `tool` scope applies to tool calls only.
    pub tools: Option<Vec<Glob>>,
    /// Declared under `budgets:`.
    pub budget: bool,
    /// Percent thresholds that raise an alert (budgets; default 80, 90, 100).
    pub alerts: Vec<u8>,
    pub pos: Pos,
}

impl LimitRule {
    /// Whether this limit concerns tool calls (as opposed to model calls).
    pub fn is_tool_limit(&self) -> bool {
        self.tools.is_some() || self.scope.contains(&LimitScope::Tool)
    }

    /// Whether it applies to a model call on `model`.
    pub fn applies_to_model(&self, model: Option<&str>) -> bool {
        if self.is_tool_limit() {
            return false;
        }
        match (&self.models, model) {
            (None, _) => true,
            (Some(globs), Some(m)) => globs.iter().any(|g| g.matches(m)),
            (Some(_), None) => false,
        }
    }

    /// Whether it applies to a tool call on `tool` (requests only).
    pub fn applies_to_tool(&self, tool: &str) -> bool {
        if !self.is_tool_limit() || self.unit != LimitUnit::Requests {
            return false;
        }
        match &self.tools {
            None => true,
            Some(globs) => globs.iter().any(|g| g.matches(tool)),
        }
    }
}

const LIMIT_FIELDS: &[&str] = &[
    "id",
    "scope",
    "requests",
    "tokens",
    "input_tokens",
    "output_tokens",
    "per",
    "window",
    "model",
    "tool",
    "description",
];
const LIMIT_ALIASES: &[(&str, &str)] = &[
    ("scopes", "scope"),
    ("by", "scope"),
    ("per_", "per"),
    ("period", "per"),
    ("interval", "window"),
    ("models", "model"),
    ("tools", "tool"),
    ("match", "tool"),
    ("max_requests", "requests"),
    ("max_tokens", "tokens"),
    ("total_tokens", "tokens"),
    ("limit", "requests"),
];
const BUDGET_FIELDS: &[&str] = &[
    "id",
    "scope",
    "cost_usd",
    "tokens",
    "input_tokens",
    "output_tokens",
    "per",
    "model",
    "alerts",
    "description",
];
const BUDGET_ALIASES: &[(&str, &str)] = &[
    ("scopes", "scope"),
    ("by", "scope"),
    ("period", "per"),
    ("window", "per"),
    ("models", "model"),
    ("thresholds", "alerts"),
    ("max_tokens", "tokens"),
    ("total_tokens", "tokens"),
    ("limit", "tokens"),
    ("cost", "cost_usd"),
    ("usd", "cost_usd"),
    ("spend", "cost_usd"),
];
const PER_NAMES: &[&str] = &["second", "minute", "hour", "day"];
const BUDGET_PER_NAMES: &[&str] = &["day", "month"];
/// Most limits and budgets one policy may hold.
pub const MAX_LIMITS: usize = 256;
/// Longest window: 31 days.
const MAX_WINDOW_MS: u64 = 31 * 86_400_000;

/// Parses `limits:` (`budget == false`) or `budgets:` into `out`.
pub(crate) fn parse_limits(sink: &mut Sink<'_>, y: &Y, budget: bool, out: &mut Vec<LimitRule>) {
    let section = if budget { "`budgets`" } else { "`limits`" };
    if y.is_null() {
        return;
    }
    let Some(items) = sink.list(y, section) else {
        return;
    };
    if items.len() + out.len() > MAX_LIMITS {
        sink.error(
            y.pos,
            format!("too many limits and budgets (the limit is {MAX_LIMITS})"),
        );
        return;
    }
    for (i, item) in items.iter().enumerate() {
        if let Some(l) = limit(sink, item, i, budget) {
            out.push(l);
        }
    }
}

/// Duplicate ids across both sections are errors (ids name the counters).
pub(crate) fn check_limit_ids(sink: &mut Sink<'_>, limits: &[LimitRule]) {
    let mut seen = HashSet::new();
    for l in limits {
        if !seen.insert(l.id.as_str()) {
            sink.error(l.pos, format!("duplicate limit id `{}`", l.id));
        }
    }
}

fn limit(sink: &mut Sink<'_>, y: &Y, index: usize, budget: bool) -> Option<LimitRule> {
    let (what, allowed, aliases) = if budget {
        ("a budget", BUDGET_FIELDS, BUDGET_ALIASES)
    } else {
        ("a limit", LIMIT_FIELDS, LIMIT_ALIASES)
    };
    let fields = sink.fields(y, what, allowed, aliases)?;
    let mut ok = true;
    let mut id = None;
    let mut scope = Vec::new();
    let mut units: Vec<(LimitUnit, u64)> = Vec::new();
    let mut window = None;
    let mut models = None;
    let mut tools = None;
    let mut alerts = vec![80u8, 90, 100];
    for (k, v, _) in fields {
        match k {
            "id" => match sink.string(v, "`id`") {
                Some(s)
                    if !s.is_empty()
                        && s.len() <= 64
                        && s.chars()
                            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.')) =>
                {
                    id = Some(s)
                }
                Some(s) => {
                    sink.error(
                        v.pos,
                        format!(
                            "limit id `{s}` may contain only letters, digits and _ - . (at most 64)"
                        ),
                    );
                    ok = false;
                }
                None => ok = false,
            },
            "scope" => {
                for (s, pos) in sink.strings(v, "`scope`") {
                    match LimitScope::parse(&s) {
                        Some(sc)
                            if budget && !matches!(sc, LimitScope::Tenant | LimitScope::User) =>
                        {
                            sink.error(
                                pos,
                                format!("a budget's scope is `tenant` or `user`, not `{s}`"),
                            );
                            ok = false;
                        }
                        Some(sc) => scope.push(sc),
                        None => {
                            sink.error(
                                pos,
                                format!(
                                    "unknown scope `{s}`{} (expected one of: {})",
                                    hint(&s, LimitScope::NAMES),
                                    LimitScope::NAMES.join(", ")
                                ),
                            );
                            ok = false;
                        }
                    }
                }
            }
            "requests" | "tokens" | "input_tokens" | "output_tokens" => {
                let unit = match k {
                    "requests" => LimitUnit::Requests,
                    "tokens" => LimitUnit::TotalTokens,
                    "input_tokens" => LimitUnit::InputTokens,
                    _ => LimitUnit::OutputTokens,
                };
                match v.v {
                    YV::Int(n) if n >= 0 => units.push((unit, n as u64)),
                    _ => {
                        sink.error(
                            v.pos,
                            format!("`{k}` must be a non-negative integer, found {}", v.kind()),
                        );
                        ok = false;
                    }
                }
            }
            "cost_usd" if budget => {
                let usd = match v.v {
                    YV::Int(n) => Some(n as f64),
                    YV::Float(f) => Some(f),
                    _ => None,
                };
                match usd.filter(|u| u.is_finite() && *u > 0.0 && *u <= MAX_COST_USD) {
                    Some(u) => units.push((
                        LimitUnit::CostMicroUsd,
                        (u * MICRO_USD as f64).round() as u64,
                    )),
                    None => {
                        sink.error(
                            v.pos,
                            format!(
                                "`cost_usd` must be a positive number of dollars up to {MAX_COST_USD}, found {}",
                                v.kind()
                            ),
                        );
                        ok = false;
                    }
                }
            }
            "per" => {
                let names = if budget { BUDGET_PER_NAMES } else { PER_NAMES };
                if let Some(s) = sink.string(v, "`per`") {
                    let w = match s.as_str() {
                        "second" if !budget => Some(LimitWindow::Fixed(1000)),
                        "minute" if !budget => Some(LimitWindow::Fixed(60_000)),
                        "hour" if !budget => Some(LimitWindow::Fixed(3_600_000)),
                        "day" => Some(LimitWindow::Fixed(86_400_000)),
                        "month" if budget => Some(LimitWindow::Month),
                        _ => None,
                    };
                    match w {
                        Some(w) => window = Some((w, v.pos)),
                        None => {
                            sink.error(
                                v.pos,
                                format!(
                                    "unknown `per` value `{s}`{} (expected one of: {})",
                                    hint(&s, names),
                                    names.join(", ")
                                ),
                            );
                            ok = false;
                        }
                    }
                } else {
                    ok = false;
                }
            }
            "window" => match parse_duration(v) {
                Ok(ms) if (1000..=MAX_WINDOW_MS).contains(&ms) => {
                    if window.is_some() {
                        sink.error(v.pos, "give either `per` or `window`, not both");
                        ok = false;
                    }
                    window = Some((LimitWindow::Fixed(ms), v.pos));
                }
                Ok(_) => {
                    sink.error(v.pos, "`window` must be between 1s and 31d");
                    ok = false;
                }
                Err(e) => {
                    sink.error(v.pos, e);
                    ok = false;
                }
            },
            "model" | "tool" => {
                let mut gs = Vec::new();
                for (p, pos) in sink.strings(v, &format!("`{k}`")) {
                    match Glob::new(&p) {
                        Ok(g) => gs.push(g),
                        Err(e) => {
                            sink.error(pos, format!("bad glob `{p}`: {e}"));
                            ok = false;
                        }
                    }
                }
                if k == "model" {
                    models = Some(gs);
                } else {
                    tools = Some(gs);
                }
            }
            "alerts" => {
                alerts.clear();
                if let Some(items) = sink.list(v, "`alerts`") {
                    for it in items {
                        match it.v {
                            YV::Int(n) if (1..=100).contains(&n) => alerts.push(n as u8),
                            _ => {
                                sink.error(
                                    it.pos,
                                    "an alert threshold is a percentage from 1 to 100",
                                );
                                ok = false;
                            }
                        }
                    }
                }
                alerts.sort_unstable();
                alerts.dedup();
            }
            "description" => {
                sink.string(v, "`description`");
            }
            _ => {}
        }
    }
    let Some(id) = id else {
        sink.error(
            y.pos,
            format!("{what} needs an `id` (it names the counter)"),
        );
        return None;
    };
    let (unit, amount) = match units.as_slice() {
        [one] => *one,
        [] => {
            let expected = if budget {
                "`tokens`, `input_tokens`, `output_tokens` or `cost_usd`"
            } else {
                "`requests`, `tokens`, `input_tokens` or `output_tokens`"
            };
            sink.error(y.pos, format!("{what} `{id}` needs one of {expected}"));
            return None;
        }
        _ => {
            sink.error(
                y.pos,
                format!("{what} `{id}` counts one unit; split it into one entry per unit"),
            );
            return None;
        }
    };
    let Some((window, _)) = window else {
        let hint = if budget {
            "`per: day|month`"
        } else {
            "`per: second|minute|hour|day` or `window: 60s`"
        };
        sink.error(y.pos, format!("{what} `{id}` needs {hint}"));
        return None;
    };
    let _ = index;
    scope.sort_unstable();
    scope.dedup();
    let rule = LimitRule {
        id,
        scope,
        unit,
        amount,
        window,
        models,
        tools,
        budget,
        alerts: if budget { alerts } else { Vec::new() },
        pos: y.pos,
    };
    if rule.is_tool_limit() && unit != LimitUnit::Requests {
        sink.error(
            y.pos,
            format!("tool limit `{}` can only count `requests`", rule.id),
        );
        return None;
    }
    ok.then_some(rule)
}

/// `60s`, `5m`, `1h`, `1d`, `500ms`, or a bare integer of seconds.
fn parse_duration(y: &Y) -> Result<u64, String> {
    let s = match &y.v {
        YV::Int(n) if *n > 0 => return Ok((*n as u64).saturating_mul(1000)),
        YV::Str(s) => s.trim(),
        _ => {
            return Err(format!(
                "`window` must be a duration like `60s`, `5m`, `1h`, `1d`, found {}",
                y.kind()
            ));
        }
    };
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| format!("`window`: `{s}` is not a duration like `60s`"))?;
    let mult = match unit {
        "ms" => 1,
        "s" | "" => 1000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        other => {
            return Err(format!(
                "`window`: unknown unit `{other}`{} (expected ms, s, m, h, d)",
                hint(other, &["ms", "s", "m", "h", "d"])
            ));
        }
    };
    Ok(n.saturating_mul(mult))
}

#[cfg(test)]
mod tests {
    use crate::{LimitScope, LimitUnit, LimitWindow, parse};

    fn errs(src: &str) -> Vec<String> {
        parse(src, "p.yaml")
            .err()
            .unwrap_or_default()
            .into_iter()
            .map(|d| d.to_string())
            .collect()
    }

    #[test]
    fn parses_limits_and_budgets() {
        let p = parse(
            "limits:\n  - id: rpm\n    scope: [user, tenant]\n    requests: 60\n    per: minute\n  - id: tpm\n    tokens: 1000\n    window: 90s\n    model: claude-*\n  - id: tool\n    scope: tool\n    tool: email.*\n    requests: 5\n    per: hour\nbudgets:\n  - id: daily\n    scope: user\n    output_tokens: 100000\n    per: month\n    alerts: [50, 100]\n",
            "p.yaml",
        )
        .unwrap();
        assert_eq!(p.limits.len(), 4);
        assert_eq!(
            p.limits[0].scope,
            vec![LimitScope::Tenant, LimitScope::User]
        );
        assert_eq!(p.limits[0].window, LimitWindow::Fixed(60_000));
        assert_eq!(p.limits[1].unit, LimitUnit::TotalTokens);
        assert_eq!(p.limits[1].window, LimitWindow::Fixed(90_000));
        assert!(p.limits[1].applies_to_model(Some("claude-x")));
        assert!(!p.limits[1].applies_to_model(Some("gpt")));
        assert!(p.limits[2].applies_to_tool("email.send"));
        assert!(!p.limits[2].applies_to_model(Some("claude-x")));
        assert!(p.limits[3].budget);
        assert_eq!(p.limits[3].window, LimitWindow::Month);
        assert_eq!(p.limits[3].alerts, vec![50, 100]);
    }

    #[test]
    fn cost_budgets_count_micro_dollars() {
        let p = parse(
            "budgets:\n  - id: spend\n    cost_usd: 12.5\n    per: month\n",
            "p.yaml",
        )
        .unwrap();
        assert_eq!(p.limits[0].unit, LimitUnit::CostMicroUsd);
        assert_eq!(p.limits[0].amount, 12_500_000);
        let e = errs("budgets:\n  - id: spend\n    cost_usd: -1\n    per: month\n");
        assert!(
            e.iter()
                .any(|m| m.contains("3:15") && m.contains("positive")),
            "{e:?}"
        );
        let e = errs("budgets:\n  - id: spend\n    cost_usd: lots\n    per: day\n");
        assert!(e.iter().any(|m| m.contains("`cost_usd` must be")), "{e:?}");
        // Cost is a budget unit only: a rate limit rejects it as an unknown field.
        let e = errs("limits:\n  - id: spend\n    cost_usd: 1\n    per: day\n");
        assert!(!e.is_empty());
    }

    #[test]
    fn diagnostics_have_positions_and_hints() {
        let e = errs("limits:\n  - id: a\n    requests: 1\n    prer: minute\n");
        assert!(
            e.iter()
                .any(|m| m.starts_with("p.yaml:4:5: error: unknown field `prer`")
                    && m.contains("did you mean `per`")),
            "{e:?}"
        );
        let e = errs("limits:\n  - id: a\n    scope: usr\n    requests: 1\n    per: minute\n");
        assert!(
            e.iter()
                .any(|m| m.contains("3:12") && m.contains("did you mean `user`")),
            "{e:?}"
        );
        let e = errs("limits:\n  - id: a\n    requests: 1\n    per: minut\n");
        assert!(
            e.iter().any(|m| m.contains("did you mean `minute`")),
            "{e:?}"
        );
        let e = errs("limits:\n  - id: a\n    requests: 1\n    window: 10x\n");
        assert!(e.iter().any(|m| m.contains("unknown unit")), "{e:?}");
        let e = errs("limits:\n  - id: a\n    requests: 1\n");
        assert!(e.iter().any(|m| m.contains("needs `per")), "{e:?}");
        let e = errs("limits:\n  - id: a\n    requests: 1\n    tokens: 2\n    per: day\n");
        assert!(e.iter().any(|m| m.contains("one unit")), "{e:?}");
        let e = errs(
            "limits:\n  - id: a\n    requests: 1\n    per: day\nbudgets:\n  - id: a\n    tokens: 5\n    per: day\n",
        );
        assert!(e.iter().any(|m| m.contains("duplicate limit id")), "{e:?}");
        let e = errs("budgets:\n  - id: b\n    scope: key\n    tokens: 5\n    per: day\n");
        assert!(e.iter().any(|m| m.contains("`tenant` or `user`")), "{e:?}");
        let e = errs("limit:\n  - id: a\n");
        assert!(
            e.iter().any(|m| m.contains("did you mean `limits`")),
            "{e:?}"
        );
        let e = errs("limits:\n  - id: a\n    requests: -1\n    per: day\n");
        assert!(e.iter().any(|m| m.contains("non-negative")), "{e:?}");
    }
}
