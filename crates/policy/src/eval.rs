//! Layered evaluation with traces, and the args-unknown check used to strip tool lists.
//!
//! Absence: a test on an absent (or `null`) field, or whose value references an absent
//! context value, is false — for every operator, including `ne`, `not_in` and
//! `not_contains`. `exists: false` is the test for absence. `not` is plain boolean
//! negation of its inner condition, so `not: { args.x: { eq: 1 } }` is true when `x` is
//! absent. Type mismatches (e.g. `gt` against a string argument) are false, never errors.

use crate::compile::{CRule, CompiledPolicy};
use crate::model::{Condition, FieldPath, Layer, Leaf, Op, Root, TemplatePart, ValueExpr, Verdict};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Number, Value};
use std::borrow::Cow;
use std::cell::OnceCell;
use std::cmp::Ordering;

/// What a decision is about: the call and the verified context around it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct EvalContext {
    pub tool: String,
    #[serde(default)]
    pub args: Value,
    /// `id`, `role` and any verified claim.
    #[serde(default)]
    pub user: Map<String, Value>,
    /// `id`, `plan`, `attributes` (an object).
    #[serde(default)]
    pub tenant: Map<String, Value>,
    /// `model`, … of the current request.
    #[serde(default)]
    pub request: Map<String, Value>,
}

impl EvalContext {
    pub fn new(tool: impl Into<String>, args: Value) -> Self {
        Self {
            tool: tool.into(),
            args,
            ..Self::default()
        }
    }
}

/// What happened to one rule (or step) during evaluation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// The rule matched and decided its layer.
    Matched,
    /// The rule's tool glob matched but its `when` was false.
    NotMatched,
    /// The rule's tool glob did not match (listed only by [`explain`]).
    ToolNotMatched,
    /// An earlier rule already decided the layer (listed only by [`explain`]).
    NotReached,
    /// A declared `schemas:` entry matched the tool and the arguments satisfied it.
    SchemaOk,
    /// The arguments violated a declared schema: the layer denies.
    SchemaViolation,
    /// No rule in this layer matched: the layer is neutral.
    Neutral,
    /// There is no policy for this layer.
    NoPolicy,
    /// Neither layer matched; the platform default applied.
    Default,
    /// Both layers matched; the more restrictive verdict won.
    Combined,
}

/// One line of a decision trace.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TraceStep {
    pub layer: Layer,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub rule_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub priority: Option<i64>,
    /// The rule's action (or the step's verdict).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub action: Option<Verdict>,
    pub outcome: Outcome,
    /// Why: the failing condition, the schema error, the reason.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub detail: Option<String>,
}

/// The result of deciding one tool call.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Decision {
    pub verdict: Verdict,
    pub layer: Option<Layer>,
    pub rule_id: Option<String>,
    pub reason: Option<String>,
    pub trace: Vec<TraceStep>,
}

struct Hit {
    verdict: Verdict,
    rule_id: String,
    reason: String,
}

struct Scope<'a> {
    tool: &'a str,
    ctx: &'a EvalContext,
    tool_value: OnceCell<Value>,
}

impl<'a> Scope<'a> {
    fn new(tool: &'a str, ctx: &'a EvalContext) -> Self {
        Self {
            tool,
            ctx,
            tool_value: OnceCell::new(),
        }
    }

    /// The value at `path`; `null` counts as absent.
    fn lookup(&self, path: &FieldPath) -> Option<&Value> {
        let (mut cur, rest): (&Value, &[String]) = match path.root {
            Root::Tool => (
                self.tool_value
                    .get_or_init(|| Value::String(self.tool.to_owned())),
                &[],
            ),
            Root::Args => (&self.ctx.args, &path.segments[..]),
            Root::User | Root::Tenant | Root::Request => {
                let map = match path.root {
                    Root::User => &self.ctx.user,
                    Root::Tenant => &self.ctx.tenant,
                    _ => &self.ctx.request,
                };
                let (first, rest) = path.segments.split_first()?;
                (map.get(first)?, rest)
            }
        };
        for seg in rest {
            cur = match cur {
                Value::Object(m) => m.get(seg)?,
                Value::Array(a) => a.get(seg.parse::<usize>().ok()?)?,
                _ => return None,
            };
        }
        if cur.is_null() { None } else { Some(cur) }
    }

    /// The value an expression denotes; `None` if it references something absent (or a
    /// non-scalar inside a string template).
    fn resolve<'x>(&'x self, v: &'x ValueExpr) -> Option<Cow<'x, Value>> {
        match v {
            ValueExpr::Literal(l) => Some(Cow::Borrowed(l)),
            ValueExpr::Ref(p) => self.lookup(p).map(Cow::Borrowed),
            ValueExpr::Template(parts) => {
                let mut s = String::new();
                for p in parts {
                    match p {
                        TemplatePart::Text(t) => s.push_str(t),
                        TemplatePart::Ref(r) => match self.lookup(r)? {
                            Value::String(x) => s.push_str(x),
                            Value::Number(n) => s.push_str(&n.to_string()),
                            Value::Bool(b) => s.push_str(if *b { "true" } else { "false" }),
                            _ => return None,
                        },
                    }
                }
                Some(Cow::Owned(Value::String(s)))
            }
            ValueExpr::List(items) => {
                let vs: Option<Vec<Value>> = items
                    .iter()
                    .map(|i| self.resolve(i).map(Cow::into_owned))
                    .collect();
                vs.map(|v| Cow::Owned(Value::Array(v)))
            }
        }
    }
}

fn num_cmp(a: &Number, b: &Number) -> Option<Ordering> {
    if let (Some(x), Some(y)) = (a.as_i64(), b.as_i64()) {
        return Some(x.cmp(&y));
    }
    if let (Some(x), Some(y)) = (a.as_u64(), b.as_u64()) {
        return Some(x.cmp(&y));
    }
    a.as_f64()?.partial_cmp(&b.as_f64()?)
}

/// JSON equality with numbers compared by value (`1 == 1.0`).
fn json_eq(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => num_cmp(x, y) == Some(Ordering::Equal),
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(a, b)| json_eq(a, b))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len()
                && x.iter()
                    .all(|(k, v)| y.get(k).is_some_and(|w| json_eq(v, w)))
        }
        _ => a == b,
    }
}

/// `contains`: substring of a string, element of an array, key of an object.
fn contains(actual: &Value, expected: &Value) -> Option<bool> {
    match (actual, expected) {
        (Value::String(a), Value::String(e)) => Some(a.contains(e.as_str())),
        (Value::Array(a), e) => Some(a.iter().any(|x| json_eq(x, e))),
        (Value::Object(m), Value::String(k)) => Some(m.contains_key(k)),
        _ => None,
    }
}

fn leaf_true(leaf: &Leaf, scope: &Scope<'_>) -> bool {
    let actual = scope.lookup(&leaf.field);
    if leaf.op == Op::Exists {
        return actual.is_some() == matches!(leaf.value, ValueExpr::Literal(Value::Bool(true)));
    }
    let Some(actual) = actual else { return false };
    if leaf.op == Op::Matches {
        return match (actual, &leaf.regex) {
            (Value::String(s), Some(re)) => re.is_match(s.as_str()),
            _ => false,
        };
    }
    let Some(expected) = scope.resolve(&leaf.value) else {
        return false;
    };
    let expected = expected.as_ref();
    match leaf.op {
        Op::Eq => json_eq(actual, expected),
        Op::Ne => !json_eq(actual, expected),
        Op::In => expected
            .as_array()
            .is_some_and(|l| l.iter().any(|e| json_eq(actual, e))),
        Op::NotIn => expected
            .as_array()
            .is_some_and(|l| !l.iter().any(|e| json_eq(actual, e))),
        Op::Contains => contains(actual, expected) == Some(true),
        Op::NotContains => contains(actual, expected) == Some(false),
        Op::StartsWith => match (actual, expected) {
            (Value::String(a), Value::String(e)) => a.starts_with(e.as_str()),
            _ => false,
        },
        Op::EndsWith => match (actual, expected) {
            (Value::String(a), Value::String(e)) => a.ends_with(e.as_str()),
            _ => false,
        },
        Op::Gt | Op::Gte | Op::Lt | Op::Lte => match (actual, expected) {
            (Value::Number(a), Value::Number(e)) => match num_cmp(a, e) {
                Some(o) => match leaf.op {
                    Op::Gt => o == Ordering::Greater,
                    Op::Gte => o != Ordering::Less,
                    Op::Lt => o == Ordering::Less,
                    _ => o != Ordering::Greater,
                },
                None => false,
            },
            _ => false,
        },
        Op::Exists | Op::Matches => false,
    }
}

fn cond_true(c: &Condition, scope: &Scope<'_>) -> bool {
    match c {
        Condition::Leaf(l) => leaf_true(l, scope),
        Condition::All(cs) => cs.iter().all(|c| cond_true(c, scope)),
        Condition::Any(cs) => cs.iter().any(|c| cond_true(c, scope)),
        Condition::Not(c) => !cond_true(c, scope),
    }
}

fn short(v: &Value) -> String {
    let s = v.to_string();
    if s.chars().count() > 80 {
        let t: String = s.chars().take(77).collect();
        format!("{t}...")
    } else {
        s
    }
}

fn first_absent_ref(v: &ValueExpr, scope: &Scope<'_>) -> Option<String> {
    match v {
        ValueExpr::Literal(_) => None,
        ValueExpr::Ref(p) => scope.lookup(p).is_none().then(|| p.to_string()),
        ValueExpr::Template(parts) => parts.iter().find_map(|p| match p {
            TemplatePart::Ref(r) => match scope.lookup(r) {
                None => Some(r.to_string()),
                Some(Value::Array(_) | Value::Object(_)) => Some(format!("{r} (not a scalar)")),
                Some(_) => None,
            },
            TemplatePart::Text(_) => None,
        }),
        ValueExpr::List(items) => items.iter().find_map(|i| first_absent_ref(i, scope)),
    }
}

/// Why a condition that evaluated false is false, for traces.
fn why_false(c: &Condition, scope: &Scope<'_>) -> String {
    match c {
        Condition::Leaf(l) => {
            let at = format!("line {}:{}", l.pos.line, l.pos.column);
            match scope.lookup(&l.field) {
                None if l.op == Op::Exists => format!("`{}` is absent ({at})", l.field),
                Some(_) if l.op == Op::Exists => format!("`{}` is present ({at})", l.field),
                None => format!("`{l}` is false: `{}` is absent ({at})", l.field),
                Some(actual) => match first_absent_ref(&l.value, scope) {
                    Some(r) => format!("`{l}` is false: the reference `${{{r}}}` is absent ({at})"),
                    None => format!("`{l}` is false: `{}` is {} ({at})", l.field, short(actual)),
                },
            }
        }
        Condition::All(cs) => cs
            .iter()
            .find(|c| !cond_true(c, scope))
            .map(|c| why_false(c, scope))
            .unwrap_or_default(),
        Condition::Any(cs) => {
            let parts: Vec<String> = cs.iter().map(|c| why_false(c, scope)).collect();
            format!("none of the `any` alternatives held: {}", parts.join("; "))
        }
        Condition::Not(inner) => {
            format!("`not ({inner})` is false because the inner condition holds")
        }
    }
}

fn schema_error(v: &jsonschema::Validator, args: &Value) -> Option<String> {
    v.iter_errors(args).next().map(|e| {
        let path = e.instance_path().to_string();
        if path.is_empty() {
            e.to_string()
        } else {
            format!("{path}: {e}")
        }
    })
}

fn rule_step(layer: Layer, r: &CRule, outcome: Outcome, detail: Option<String>) -> TraceStep {
    TraceStep {
        layer,
        rule_id: Some(r.rule.id.clone()),
        priority: Some(r.rule.priority),
        action: Some(r.rule.action),
        outcome,
        detail,
    }
}

fn default_reason(layer: Layer, r: &CRule, tool: &str) -> String {
    match &r.rule.reason {
        Some(reason) => reason.clone(),
        None => {
            let verb = match r.rule.action {
                Verdict::Allow => "allows",
                Verdict::Deny => "denies",
                Verdict::RequireApproval => "requires approval for",
            };
            format!("{layer} rule `{}` {verb} `{tool}`", r.rule.id)
        }
    }
}

/// Decides one rule that matched the tool. `Some` if it matched.
fn try_rule(
    layer: Layer,
    r: &CRule,
    scope: &Scope<'_>,
    trace: &mut Vec<TraceStep>,
    mode: Mode,
) -> Option<Hit> {
    if let Some(when) = &r.rule.when
        && !cond_true(when, scope)
    {
        trace.push(rule_step(
            layer,
            r,
            Outcome::NotMatched,
            Some(why_false(when, scope)),
        ));
        return None;
    }
    let mut reason = default_reason(layer, r, scope.tool);
    let mut verdict = r.rule.action;
    if let Some(v) = r.schema.as_ref().filter(|_| mode.schemas)
        && let Some(err) = schema_error(v, &scope.ctx.args)
    {
        verdict = Verdict::Deny;
        reason = format!(
            "arguments violate the schema of {layer} rule `{}`: {err}",
            r.rule.id
        );
    }
    let mut step = rule_step(layer, r, Outcome::Matched, Some(reason.clone()));
    step.action = Some(verdict);
    trace.push(step);
    Some(Hit {
        verdict,
        rule_id: r.rule.id.clone(),
        reason,
    })
}

fn eval_layer(
    policy: &CompiledPolicy,
    layer: Layer,
    scope: &Scope<'_>,
    trace: &mut Vec<TraceStep>,
    mode: Mode,
) -> Option<Hit> {
    let inner = &*policy.inner;
    let full = mode.full;
    for s in inner.schemas.iter().filter(|_| mode.schemas) {
        if !s.glob.matches(scope.tool) {
            continue;
        }
        let rule_id = format!("schema:{}", s.glob);
        if let Some(err) = schema_error(&s.validator, &scope.ctx.args) {
            let reason = format!(
                "arguments of `{}` violate the {layer} schema for `{}`: {err}",
                scope.tool, s.glob
            );
            trace.push(TraceStep {
                layer,
                rule_id: Some(rule_id.clone()),
                priority: None,
                action: Some(Verdict::Deny),
                outcome: Outcome::SchemaViolation,
                detail: Some(reason.clone()),
            });
            return Some(Hit {
                verdict: Verdict::Deny,
                rule_id,
                reason,
            });
        }
        trace.push(TraceStep {
            layer,
            rule_id: Some(rule_id),
            priority: None,
            action: None,
            outcome: Outcome::SchemaOk,
            detail: None,
        });
    }
    let mut hit = None;
    if full {
        for r in &inner.rules {
            let tool_ok = r.rule.matches_tool(scope.tool);
            if hit.is_some() {
                if tool_ok {
                    trace.push(rule_step(layer, r, Outcome::NotReached, None));
                }
                continue;
            }
            if !tool_ok {
                let globs: Vec<&str> = r.rule.globs.iter().map(|g| g.as_str()).collect();
                trace.push(rule_step(
                    layer,
                    r,
                    Outcome::ToolNotMatched,
                    Some(format!(
                        "`{}` does not match {}",
                        scope.tool,
                        globs.join(", ")
                    )),
                ));
                continue;
            }
            hit = try_rule(layer, r, scope, trace, mode);
        }
    } else {
        for i in policy.candidates(scope.tool) {
            let Some(r) = inner.rules.get(i as usize) else {
                continue;
            };
            if !r.rule.matches_tool(scope.tool) {
                continue;
            }
            hit = try_rule(layer, r, scope, trace, mode);
            if hit.is_some() {
                break;
            }
        }
    }
    if hit.is_none() {
        trace.push(TraceStep {
            layer,
            rule_id: None,
            priority: None,
            action: None,
            outcome: Outcome::Neutral,
            detail: None,
        });
    }
    hit
}

/// Evaluation switches.
#[derive(Clone, Copy)]
pub(crate) struct Mode {
    /// List every rule in the trace (explain).
    pub full: bool,
    /// Check argument schemas (off only for the matrix, which has no arguments).
    pub schemas: bool,
}

pub(crate) fn decide(
    platform: Option<&CompiledPolicy>,
    tenant: Option<&CompiledPolicy>,
    ctx: &EvalContext,
    mode: Mode,
) -> Decision {
    let scope = Scope::new(&ctx.tool, ctx);
    let mut trace = Vec::with_capacity(4);
    let run = |p: Option<&CompiledPolicy>, layer: Layer, trace: &mut Vec<TraceStep>| match p {
        Some(p) => eval_layer(p, layer, &scope, trace, mode),
        None => {
            trace.push(TraceStep {
                layer,
                rule_id: None,
                priority: None,
                action: None,
                outcome: Outcome::NoPolicy,
                detail: None,
            });
            None
        }
    };
    let p = run(platform, Layer::Platform, &mut trace);
    let t = run(tenant, Layer::Tenant, &mut trace);
    let (verdict, layer, rule_id, reason) = match (p, t) {
        (None, None) => {
            let (verdict, why) = match platform.and_then(CompiledPolicy::default_verdict) {
                Some(v) => (v, format!("the platform default is {v}")),
                None => (
                    Verdict::Deny,
                    "no platform default is set, so the default is deny".to_owned(),
                ),
            };
            let reason = format!("no rule matched `{}`; {why}", ctx.tool);
            trace.push(TraceStep {
                layer: Layer::Default,
                rule_id: None,
                priority: None,
                action: Some(verdict),
                outcome: Outcome::Default,
                detail: Some(reason.clone()),
            });
            (verdict, Layer::Default, None, reason)
        }
        (Some(h), None) => (h.verdict, Layer::Platform, Some(h.rule_id), h.reason),
        (None, Some(h)) => (h.verdict, Layer::Tenant, Some(h.rule_id), h.reason),
        (Some(p), Some(t)) => {
            let (winner, layer) = if t.verdict > p.verdict {
                (t, Layer::Tenant)
            } else {
                (p, Layer::Platform)
            };
            trace.push(TraceStep {
                layer,
                rule_id: Some(winner.rule_id.clone()),
                priority: None,
                action: Some(winner.verdict),
                outcome: Outcome::Combined,
                detail: Some(format!(
                    "both layers matched; the more restrictive ({layer}: {}) wins",
                    winner.verdict
                )),
            });
            (winner.verdict, layer, Some(winner.rule_id), winner.reason)
        }
    };
    Decision {
        verdict,
        layer: Some(layer),
        rule_id,
        reason: Some(reason),
        trace,
    }
}

/// Decides one tool call: each layer's first matching rule (priority, then file order),
/// the more restrictive of the two layers, the platform default when neither matches.
/// The trace lists every rule whose tool glob matched, up to the deciding one.
pub fn evaluate(
    platform: Option<&CompiledPolicy>,
    tenant: Option<&CompiledPolicy>,
    ctx: &EvalContext,
) -> Decision {
    decide(
        platform,
        tenant,
        ctx,
        Mode {
            full: false,
            schemas: true,
        },
    )
}

/// Same decision as [`evaluate`], with a trace of every rule in both layers (including
/// those whose glob did not match and those after the deciding rule). For `policy explain`.
pub fn explain(
    platform: Option<&CompiledPolicy>,
    tenant: Option<&CompiledPolicy>,
    ctx: &EvalContext,
) -> Decision {
    decide(
        platform,
        tenant,
        ctx,
        Mode {
            full: true,
            schemas: true,
        },
    )
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Tri {
    True,
    False,
    Unknown,
}

fn tri(c: &Condition, scope: &Scope<'_>) -> Tri {
    match c {
        Condition::Leaf(l) => {
            if l.field.root == Root::Args || l.value.refers_to(Root::Args) {
                Tri::Unknown
            } else if leaf_true(l, scope) {
                Tri::True
            } else {
                Tri::False
            }
        }
        Condition::All(cs) => {
            let mut r = Tri::True;
            for c in cs {
                match tri(c, scope) {
                    Tri::False => return Tri::False,
                    Tri::Unknown => r = Tri::Unknown,
                    Tri::True => {}
                }
            }
            r
        }
        Condition::Any(cs) => {
            let mut r = Tri::False;
            for c in cs {
                match tri(c, scope) {
                    Tri::True => return Tri::True,
                    Tri::Unknown => r = Tri::Unknown,
                    Tri::False => {}
                }
            }
            r
        }
        Condition::Not(c) => match tri(c, scope) {
            Tri::True => Tri::False,
            Tri::False => Tri::True,
            Tri::Unknown => Tri::Unknown,
        },
    }
}

const NEUTRAL: u8 = 1;

fn bit(v: Verdict) -> u8 {
    match v {
        Verdict::Allow => 2,
        Verdict::RequireApproval => 4,
        Verdict::Deny => 8,
    }
}

/// The set of outcomes a layer could produce for any arguments.
fn possible(policy: Option<&CompiledPolicy>, scope: &Scope<'_>) -> u8 {
    let Some(policy) = policy else { return NEUTRAL };
    let inner = &*policy.inner;
    let mut set = 0u8;
    if inner.schemas.iter().any(|s| s.glob.matches(scope.tool)) {
        set |= bit(Verdict::Deny);
    }
    for i in policy.candidates(scope.tool) {
        let Some(r) = inner.rules.get(i as usize) else {
            continue;
        };
        if !r.rule.matches_tool(scope.tool) {
            continue;
        }
        let t = r.rule.when.as_ref().map_or(Tri::True, |c| tri(c, scope));
        if t == Tri::False {
            continue;
        }
        set |= bit(r.rule.action);
        if r.schema.is_some() {
            set |= bit(Verdict::Deny);
        }
        if t == Tri::True {
            return set;
        }
    }
    set | NEUTRAL
}

/// Whether `tool` could be allowed (or sent for approval) for some arguments, given the
/// context without arguments. False only when every possible outcome is deny, so the tool
/// can be removed from the `tools` sent upstream. When unsure, true (keep the tool).
pub fn may_ever_run(
    platform: Option<&CompiledPolicy>,
    tenant: Option<&CompiledPolicy>,
    tool: &str,
    ctx_without_args: &EvalContext,
) -> bool {
    let scope = Scope::new(tool, ctx_without_args);
    let ps = possible(platform, &scope);
    let ts = possible(tenant, &scope);
    let default = platform
        .and_then(CompiledPolicy::default_verdict)
        .unwrap_or(Verdict::Deny);
    let outcomes = |set: u8| -> Vec<Option<Verdict>> {
        let mut v = Vec::new();
        if set & NEUTRAL != 0 {
            v.push(None);
        }
        for x in [Verdict::Allow, Verdict::RequireApproval, Verdict::Deny] {
            if set & bit(x) != 0 {
                v.push(Some(x));
            }
        }
        v
    };
    for p in outcomes(ps) {
        for t in outcomes(ts) {
            let combined = match (p, t) {
                (None, None) => default,
                (Some(v), None) | (None, Some(v)) => v,
                (Some(a), Some(b)) => a.most_restrictive(b),
            };
            if combined != Verdict::Deny {
                return true;
            }
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pol(src: &str) -> CompiledPolicy {
        CompiledPolicy::from_yaml(src, "p.yaml").unwrap()
    }

    fn ctx(tool: &str, args: Value) -> EvalContext {
        EvalContext::new(tool, args)
    }

    #[test]
    fn json_eq_numbers() {
        assert!(json_eq(&json!(1), &json!(1.0)));
        assert!(!json_eq(&json!(1), &json!("1")));
        assert!(json_eq(&json!([1, {"a": 2}]), &json!([1.0, {"a": 2.0}])));
    }

    #[test]
    fn default_default_is_deny() {
        let d = evaluate(None, None, &ctx("x", json!({})));
        assert_eq!(d.verdict, Verdict::Deny);
        assert_eq!(d.layer, Some(Layer::Default));
        let p = pol("default: allow\n");
        assert_eq!(
            evaluate(Some(&p), None, &ctx("x", json!({}))).verdict,
            Verdict::Allow
        );
        // a tenant's default is ignored
        assert_eq!(
            evaluate(None, Some(&p), &ctx("x", json!({}))).verdict,
            Verdict::Deny
        );
    }

    #[test]
    fn may_ever_run_three_valued() {
        let p = pol(
            "default: deny\ntools:\n  - {match: a, action: deny, when: {args.x: 1}}\n  - {match: a, action: allow}\n  - {match: b, action: deny}\n  - {match: c, action: allow, when: {user.role: admin}}\n",
        );
        let c = EvalContext::default();
        assert!(may_ever_run(Some(&p), None, "a", &c));
        assert!(!may_ever_run(Some(&p), None, "b", &c));
        assert!(!may_ever_run(Some(&p), None, "c", &c));
        assert!(!may_ever_run(Some(&p), None, "zzz", &c));
        let mut admin = EvalContext::default();
        admin.user.insert("role".into(), json!("admin"));
        assert!(may_ever_run(Some(&p), None, "c", &admin));
    }
}
