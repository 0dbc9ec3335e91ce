//! YAML → [`ParsedPolicy`], reporting every problem with its position.

use crate::content::parse_content;
use crate::diag::{Diagnostic, Pos, hint};
use crate::glob::Glob;
use crate::model::{
    Condition, FieldPath, Leaf, Op, ParsedPolicy, Root, Rule, TemplatePart, ToolSchema, ValueExpr,
    Verdict,
};
use crate::yaml::{Sink, Y, YV, load};
use serde_json::Value;
use std::collections::HashMap;

const TOP_FIELDS: &[&str] = &[
    "version",
    "default",
    "tools",
    "schemas",
    "content",
    "limits",
    "budgets",
    "moderation",
    "name",
    "description",
];
const TOP_ALIASES: &[(&str, &str)] = &[
    ("rules", "tools"),
    ("tool_rules", "tools"),
    ("floors", "content"),
    ("rate_limits", "limits"),
    ("budget", "budgets"),
];
const RULE_FIELDS: &[&str] = &[
    "id",
    "match",
    "when",
    "action",
    "priority",
    "reason",
    "description",
    "schema",
];
const RULE_ALIASES: &[(&str, &str)] = &[
    ("tool", "match"),
    ("tools", "match"),
    ("condition", "when"),
    ("conditions", "when"),
    ("if", "when"),
    ("effect", "action"),
    ("decision", "action"),
    ("verdict", "action"),
    ("message", "reason"),
    ("args_schema", "schema"),
];
/// Most rules one policy may hold.
pub const MAX_RULES: usize = 10_000;
/// Deepest accepted condition nesting.
const MAX_COND_DEPTH: usize = 16;

/// Parses and validates a policy. On success the result carries warnings; on failure every
/// error (and warning) found, each with file:line:col.
pub fn parse(source: &str, file_name: &str) -> Result<ParsedPolicy, Vec<Diagnostic>> {
    let root = load(source, file_name).map_err(|d| vec![d])?;
    let mut sink = Sink::new(file_name);
    let mut policy = ParsedPolicy {
        file: file_name.to_owned(),
        version: 1,
        default: None,
        default_pos: None,
        rules: Vec::new(),
        schemas: Vec::new(),
        content: Default::default(),
        floors_pos: None,
        limits: Vec::new(),
        moderation: None,
        warnings: Vec::new(),
    };
    if root.is_null() {
        sink.warning(Pos::new(1, 1), "the policy is empty");
    } else if let Some(fields) = sink.fields(&root, "the policy", TOP_FIELDS, TOP_ALIASES) {
        for (key, v, _) in fields {
            match key {
                "version" => match v.v {
                    YV::Int(1) => {}
                    _ => sink.error(
                        v.pos,
                        "unsupported `version`: this engine reads `version: 1`",
                    ),
                },
                "default" => {
                    policy.default = verdict(&mut sink, v, "`default`");
                    policy.default_pos = Some(v.pos);
                }
                "tools" => {
                    if !v.is_null()
                        && let Some(items) = sink.list(v, "`tools`")
                    {
                        if items.len() > MAX_RULES {
                            sink.error(
                                v.pos,
                                format!(
                                    "too many rules ({}; the limit is {MAX_RULES})",
                                    items.len()
                                ),
                            );
                        } else {
                            for (i, item) in items.iter().enumerate() {
                                if let Some(r) = rule(&mut sink, item, i) {
                                    policy.rules.push(r);
                                }
                            }
                        }
                    }
                }
                "schemas" if !v.is_null() => {
                    for (pattern, schema, pos) in sink.entries(v, "`schemas`") {
                        let glob = match Glob::new(pattern) {
                            Ok(g) => g,
                            Err(e) => {
                                sink.error(pos, format!("bad glob `{pattern}`: {e}"));
                                continue;
                            }
                        };
                        if let Some(schema) = json_schema(&mut sink, schema) {
                            policy.schemas.push(ToolSchema { glob, schema, pos });
                        }
                    }
                }
                "content" if !v.is_null() => {
                    let (content, floors_pos) = parse_content(&mut sink, v);
                    policy.content = content;
                    policy.floors_pos = floors_pos;
                }
                "moderation" => {
                    policy.moderation = Some(crate::moderation::parse_moderation(&mut sink, v));
                }
                "limits" | "budgets" => {
                    crate::limits::parse_limits(&mut sink, v, key == "budgets", &mut policy.limits);
                }
                "name" | "description" => {
                    sink.string(v, &format!("`{key}`"));
                }
                _ => {}
            }
        }
    }
    check_duplicate_ids(&mut sink, &policy.rules);
    crate::limits::check_limit_ids(&mut sink, &policy.limits);
    if !sink.has_errors() {
        shadow_warnings(&mut sink, &policy);
    }
    if sink.has_errors() {
        let mut d = sink.diags;
        d.sort_by_key(|d| (d.line, d.column));
        return Err(d);
    }
    policy.warnings = sink.diags;
    policy.warnings.sort_by_key(|d| (d.line, d.column));
    Ok(policy)
}

fn verdict(sink: &mut Sink<'_>, y: &Y, what: &str) -> Option<Verdict> {
    let s = sink.string(y, what)?;
    let v = Verdict::parse(&s);
    if v.is_none() {
        let extra = if s == "require-approval" || s == "requireApproval" {
            "; did you mean `require_approval`?".to_owned()
        } else {
            hint(&s, Verdict::ACTION_NAMES)
        };
        sink.error(
            y.pos,
            format!(
                "unknown action `{s}` in {what}{extra} (expected one of: {})",
                Verdict::ACTION_NAMES.join(", ")
            ),
        );
    }
    v
}

fn valid_rule_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 128
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | ':' | '/'))
}

fn rule(sink: &mut Sink<'_>, y: &Y, index: usize) -> Option<Rule> {
    let fields = sink.fields(y, "a rule", RULE_FIELDS, RULE_ALIASES)?;
    let mut id = None;
    let mut globs = None;
    let mut when = None;
    let mut action = None;
    let mut has_action = false;
    let mut priority = 0i64;
    let mut reason = None;
    let mut description = None;
    let mut schema = None;
    let mut ok = true;
    for (k, v, _) in fields {
        match k {
            "id" => {
                if let Some(s) = sink.string(v, "`id`") {
                    if valid_rule_id(&s) {
                        id = Some((s, v.pos));
                    } else {
                        sink.error(
                            v.pos,
                            format!("rule id `{s}` may contain only letters, digits and _ - . : /"),
                        );
                        ok = false;
                    }
                }
            }
            "match" => {
                let list = sink.strings(v, "`match`");
                if list.is_empty() {
                    sink.error(v.pos, "`match` needs at least one tool name or glob");
                    ok = false;
                }
                let mut gs = Vec::new();
                for (p, pos) in list {
                    match Glob::new(&p) {
                        Ok(g) => gs.push(g),
                        Err(e) => {
                            sink.error(pos, format!("bad glob `{p}`: {e}"));
                            ok = false;
                        }
                    }
                }
                globs = Some(gs);
            }
            "when" => {
                if v.is_null() {
                    continue;
                }
                match condition(sink, v, 0) {
                    Some(c) => when = Some(c),
                    None => ok = false,
                }
            }
            "action" => {
                has_action = true;
                action = verdict(sink, v, "`action`");
            }
            "priority" => match v.v {
                YV::Int(p) => priority = p,
                _ => {
                    sink.error(
                        v.pos,
                        format!("`priority` must be an integer, found {}", v.kind()),
                    );
                    ok = false;
                }
            },
            "reason" => reason = sink.string(v, "`reason`"),
            "description" => description = sink.string(v, "`description`"),
            "schema" => match json_schema(sink, v) {
                Some(s) => schema = Some(s),
                None => ok = false,
            },
            _ => {}
        }
    }
    if globs.is_none() {
        sink.error(
            y.pos,
            "a rule needs `match` (a tool name, a glob, or a list of them)",
        );
    }
    if !has_action {
        sink.error(
            y.pos,
            "a rule needs `action` (allow, deny or require_approval)",
        );
    }
    let (id, explicit_id) = match id {
        Some((s, _)) => (s, true),
        None => (format!("rule-{}", index + 1), false),
    };
    if !ok {
        return None;
    }
    Some(Rule {
        id,
        explicit_id,
        globs: globs?,
        when,
        action: action?,
        priority,
        reason,
        description,
        schema,
        pos: y.pos,
        index,
    })
}

fn json_schema(sink: &mut Sink<'_>, y: &Y) -> Option<Value> {
    let v = y.to_json();
    if !matches!(v, Value::Object(_) | Value::Bool(_)) {
        sink.error(
            y.pos,
            format!(
                "a JSON Schema must be a mapping (or true/false), found {}",
                y.kind()
            ),
        );
        return None;
    }
    match crate::compile::build_schema(&v) {
        Ok(_) => Some(v),
        Err(e) => {
            sink.error(y.pos, format!("invalid JSON Schema: {e}"));
            None
        }
    }
}

fn check_duplicate_ids(sink: &mut Sink<'_>, rules: &[Rule]) {
    let mut seen: HashMap<&str, Pos> = HashMap::new();
    for r in rules {
        if let Some(first) = seen.get(r.id.as_str()) {
            sink.error(
                r.pos,
                format!(
                    "duplicate rule id `{}` (first used at line {})",
                    r.id, first.line
                ),
            );
        } else {
            seen.insert(&r.id, r.pos);
        }
    }
}

/// Warns about rules that can never fire: an earlier rule (in evaluation order) with no
/// `when` matches every tool they match, and first match wins.
fn shadow_warnings(sink: &mut Sink<'_>, policy: &ParsedPolicy) {
    let mut exact: HashMap<&str, &Rule> = HashMap::new();
    let mut wild: Vec<(&Glob, &Rule)> = Vec::new();
    for i in policy.evaluation_order() {
        let Some(r) = policy.rules.get(i) else {
            continue;
        };
        let shadower = r
            .globs
            .iter()
            .map(|g| {
                if g.is_exact() {
                    exact.get(g.as_str()).copied().or_else(|| {
                        wild.iter()
                            .find(|(w, _)| w.matches(g.as_str()))
                            .map(|(_, r)| *r)
                    })
                } else {
                    wild.iter().find(|(w, _)| w.covers(g)).map(|(_, r)| *r)
                }
            })
            .collect::<Option<Vec<&Rule>>>();
        if let Some(by) = shadower.and_then(|v| v.first().copied()) {
            sink.warning(
                r.pos,
                format!(
                    "rule `{}` can never fire: rule `{}` (line {}, priority {}) has no `when` and matches every tool this rule matches, and is evaluated first",
                    r.id, by.id, by.pos.line, by.priority
                ),
            );
        }
        if r.when.is_none() {
            for g in &r.globs {
                if g.is_exact() {
                    exact.entry(g.as_str()).or_insert(r);
                } else {
                    wild.push((g, r));
                }
            }
        }
    }
}

fn condition(sink: &mut Sink<'_>, y: &Y, depth: usize) -> Option<Condition> {
    if depth > MAX_COND_DEPTH {
        sink.error(
            y.pos,
            format!("conditions are nested too deeply (limit {MAX_COND_DEPTH})"),
        );
        return None;
    }
    match &y.v {
        YV::Seq(items) => {
            let cs: Option<Vec<_>> = items
                .iter()
                .map(|i| condition(sink, i, depth + 1))
                .collect();
            let cs = cs?;
            if cs.is_empty() {
                sink.error(y.pos, "an empty condition list");
                return None;
            }
            Some(Condition::All(cs))
        }
        YV::Map(items) => {
            if items.is_empty() {
                sink.error(y.pos, "an empty condition");
                return None;
            }
            let mut out = Vec::new();
            let mut ok = true;
            for (k, v) in items {
                let Some(key) = k.as_str() else {
                    sink.error(k.pos, "condition keys must be strings");
                    ok = false;
                    continue;
                };
                let c = match key {
                    "all" | "any" => combinator(sink, key, v, depth, condition),
                    "not" => condition(sink, v, depth + 1).map(|c| Condition::Not(Box::new(c))),
                    _ => match FieldPath::parse(key) {
                        Ok(field) => field_test(sink, &field, v, depth + 1),
                        Err(e) => {
                            let e = if Op::parse(key).is_some() {
                                format!(
                                    "operator `{key}` needs a field: write `<field>: {{ {key}: … }}`, e.g. `args.to: {{ {key}: … }}`"
                                )
                            } else {
                                e
                            };
                            sink.error(k.pos, e);
                            None
                        }
                    },
                };
                match c {
                    Some(c) => out.push(c),
                    None => ok = false,
                }
            }
            if !ok {
                return None;
            }
            if out.len() == 1 {
                out.pop()
            } else {
                Some(Condition::All(out))
            }
        }
        _ => {
            sink.error(
                y.pos,
                format!("a condition must be a mapping such as `args.to: {{ ends_with: \"@example.com\" }}` or a list of them, found {}", y.kind()),
            );
            None
        }
    }
}

fn combinator(
    sink: &mut Sink<'_>,
    key: &str,
    v: &Y,
    depth: usize,
    f: impl Fn(&mut Sink<'_>, &Y, usize) -> Option<Condition>,
) -> Option<Condition> {
    let items = sink.list(v, &format!("`{key}`"))?;
    if items.is_empty() {
        sink.error(v.pos, format!("`{key}` needs at least one condition"));
        return None;
    }
    let cs: Vec<Option<Condition>> = items.iter().map(|i| f(sink, i, depth + 1)).collect();
    let cs: Option<Vec<Condition>> = cs.into_iter().collect();
    let cs = cs?;
    Some(if key == "all" {
        Condition::All(cs)
    } else {
        Condition::Any(cs)
    })
}

/// The test for one field: a mapping of operators, a bare scalar (`eq`) or a bare list (`in`).
fn field_test(sink: &mut Sink<'_>, field: &FieldPath, y: &Y, depth: usize) -> Option<Condition> {
    if depth > MAX_COND_DEPTH {
        sink.error(
            y.pos,
            format!("conditions are nested too deeply (limit {MAX_COND_DEPTH})"),
        );
        return None;
    }
    match &y.v {
        YV::Map(items) => {
            if items.is_empty() {
                sink.error(y.pos, format!("no operator given for `{field}`"));
                return None;
            }
            let mut out = Vec::new();
            let mut ok = true;
            for (k, v) in items {
                let Some(key) = k.as_str() else {
                    sink.error(k.pos, "operator names must be strings");
                    ok = false;
                    continue;
                };
                let c = match key {
                    "all" | "any" => {
                        let field = field.clone();
                        combinator(sink, key, v, depth, move |s, y, d| {
                            field_test(s, &field, y, d)
                        })
                    }
                    "not" => {
                        field_test(sink, field, v, depth + 1).map(|c| Condition::Not(Box::new(c)))
                    }
                    _ => match Op::parse(key) {
                        Some(op) => leaf(sink, field, op, v, k.pos),
                        None => {
                            let camel = camel_to_snake(key);
                            let extra = if Op::parse(&camel).is_some() {
                                format!("; did you mean `{camel}`?")
                            } else {
                                hint(key, Op::NAMES)
                            };
                            sink.error(
                                k.pos,
                                format!("unknown operator `{key}`{extra} (operators: {}; combinators: all, any, not)", Op::NAMES.join(", ")),
                            );
                            None
                        }
                    },
                };
                match c {
                    Some(c) => out.push(c),
                    None => ok = false,
                }
            }
            if !ok {
                return None;
            }
            if out.len() == 1 {
                out.pop()
            } else {
                Some(Condition::All(out))
            }
        }
        YV::Seq(_) => leaf(sink, field, Op::In, y, y.pos),
        _ => leaf(sink, field, Op::Eq, y, y.pos),
    }
}

fn camel_to_snake(s: &str) -> String {
    let mut out = String::new();
    for c in s.chars() {
        if c.is_ascii_uppercase() {
            out.push('_');
            out.push(c.to_ascii_lowercase());
        } else {
            out.push(c);
        }
    }
    out
}

fn leaf(sink: &mut Sink<'_>, field: &FieldPath, op: Op, y: &Y, pos: Pos) -> Option<Condition> {
    let name = op.as_str();
    let mut regex = None;
    let value = match op {
        Op::Exists => ValueExpr::Literal(Value::Bool(sink.boolean(y, "`exists`")?)),
        Op::Matches => {
            let p = sink.string(y, "the `matches` pattern")?;
            if p.contains("${") {
                sink.error(y.pos, "`matches` takes a literal regex; context references (`${…}`) are not supported in patterns");
                return None;
            }
            match crate::regex_util::build(&p) {
                Ok(r) => regex = Some(r),
                Err(e) => {
                    sink.error(y.pos, e);
                    return None;
                }
            }
            ValueExpr::Literal(Value::String(p))
        }
        Op::Gt | Op::Gte | Op::Lt | Op::Lte => match &y.v {
            YV::Int(_) | YV::Float(_) => ValueExpr::Literal(y.to_json()),
            YV::Str(s) => match value_expr_str(s) {
                Ok(ValueExpr::Ref(p)) => ValueExpr::Ref(p),
                Ok(_) => {
                    sink.error(
                        y.pos,
                        format!("`{name}` compares numbers, but its value is a string (\"{s}\"); write a number, or a single reference such as \"${{request.max_tokens}}\""),
                    );
                    return None;
                }
                Err(e) => {
                    sink.error(y.pos, e);
                    return None;
                }
            },
            _ => {
                sink.error(
                    y.pos,
                    format!("`{name}` compares numbers, but its value is {}", y.kind()),
                );
                return None;
            }
        },
        Op::In | Op::NotIn => match &y.v {
            YV::Seq(_) => value_expr(sink, y)?,
            YV::Str(s) if matches!(value_expr_str(s), Ok(ValueExpr::Ref(_))) => {
                value_expr(sink, y)?
            }
            _ => {
                sink.error(y.pos, format!("`{name}` needs a list of values (or a single reference to a list), found {}", y.kind()));
                return None;
            }
        },
        Op::StartsWith | Op::EndsWith => match &y.v {
            YV::Str(_) => value_expr(sink, y)?,
            _ => {
                sink.error(
                    y.pos,
                    format!("`{name}` needs a string, found {}", y.kind()),
                );
                return None;
            }
        },
        Op::Eq | Op::Ne | Op::Contains | Op::NotContains => value_expr(sink, y)?,
    };
    if field.root == Root::Tool && op.is_numeric() {
        sink.error(
            pos,
            format!("`tool` is a string; `{name}` compares numbers"),
        );
        return None;
    }
    Some(Condition::Leaf(Box::new(Leaf {
        field: field.clone(),
        op,
        value,
        regex,
        pos,
    })))
}

fn value_expr(sink: &mut Sink<'_>, y: &Y) -> Option<ValueExpr> {
    match &y.v {
        YV::Str(s) => match value_expr_str(s) {
            Ok(v) => Some(v),
            Err(e) => {
                sink.error(y.pos, e);
                None
            }
        },
        YV::Seq(items) => {
            let vs: Option<Vec<ValueExpr>> = items.iter().map(|i| value_expr(sink, i)).collect();
            let vs = vs?;
            if vs.iter().all(|v| matches!(v, ValueExpr::Literal(_))) {
                Some(ValueExpr::Literal(y.to_json()))
            } else {
                Some(ValueExpr::List(vs))
            }
        }
        _ => Some(ValueExpr::Literal(y.to_json())),
    }
}

/// Parses `${path}` references in a string. `$${` is a literal `${`.
pub(crate) fn value_expr_str(s: &str) -> Result<ValueExpr, String> {
    if !s.contains("${") {
        return Ok(ValueExpr::Literal(Value::String(s.to_owned())));
    }
    let mut parts = Vec::new();
    let mut text = String::new();
    let mut rest = s;
    while let Some(i) = rest.find("${") {
        if rest[..i].ends_with('$') {
            text.push_str(&rest[..i - 1]);
            text.push_str("${");
            rest = &rest[i + 2..];
            continue;
        }
        text.push_str(&rest[..i]);
        let after = &rest[i + 2..];
        let Some(end) = after.find('}') else {
            return Err(format!("unterminated reference `${{` in \"{s}\""));
        };
        let path = FieldPath::parse(after[..end].trim())
            .map_err(|e| format!("bad reference `${{{}}}`: {e}", &after[..end]))?;
        if !text.is_empty() {
            parts.push(TemplatePart::Text(std::mem::take(&mut text)));
        }
        parts.push(TemplatePart::Ref(path));
        rest = &after[end + 1..];
    }
    text.push_str(rest);
    if !text.is_empty() {
        parts.push(TemplatePart::Text(text));
    }
    match parts.as_slice() {
        [TemplatePart::Ref(p)] => Ok(ValueExpr::Ref(p.clone())),
        [TemplatePart::Text(t)] => Ok(ValueExpr::Literal(Value::String(t.clone()))),
        _ => Ok(ValueExpr::Template(parts)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn errs(src: &str) -> Vec<String> {
        parse(src, "p.yaml")
            .unwrap_err()
            .iter()
            .map(ToString::to_string)
            .collect()
    }

    #[test]
    fn templates() {
        assert_eq!(
            value_expr_str("plain").unwrap(),
            ValueExpr::Literal("plain".into())
        );
        assert!(matches!(
            value_expr_str("${tenant.id}").unwrap(),
            ValueExpr::Ref(_)
        ));
        match value_expr_str("@${tenant.attributes.domain}").unwrap() {
            ValueExpr::Template(p) => assert_eq!(p.len(), 2),
            other => panic!("{other:?}"),
        }
        assert_eq!(
            value_expr_str("$${x}").unwrap(),
            ValueExpr::Literal("${x}".into())
        );
        assert!(value_expr_str("${tenant.id").is_err());
        assert!(
            value_expr_str("${context.tenantId}")
                .unwrap_err()
                .contains("tenant.id")
        );
    }

    #[test]
    fn unknown_fields_with_hints() {
        let e = errs(
            "version: 1\ntools:\n  - id: a\n    match: x\n    action: allow\n    prority: 3\n",
        );
        assert_eq!(e.len(), 1);
        assert!(
            e[0].starts_with(
                "p.yaml:6:5: error: unknown field `prority` in a rule; did you mean `priority`?"
            ),
            "{e:?}"
        );
        let e = errs("tools:\n  - tool: x\n    action: allow\n");
        assert!(
            e.iter().any(|m| m.contains("did you mean `match`")),
            "{e:?}"
        );
        let e = errs("rules: []\n");
        assert!(e[0].contains("did you mean `tools`"), "{e:?}");
    }

    #[test]
    fn operator_errors() {
        let e =
            errs("tools:\n  - match: x\n    action: allow\n    when: { args.n: { gt: \"5\" } }\n");
        assert!(
            e[0].starts_with("p.yaml:4:27:") && e[0].contains("`gt` compares numbers"),
            "{e:?}"
        );
        let e = errs(
            "tools:\n  - match: x\n    action: allow\n    when: { args.to: { endsWith: \"@x\" } }\n",
        );
        assert!(
            e[0].contains("unknown operator `endsWith`; did you mean `ends_with`?"),
            "{e:?}"
        );
        let e = errs(
            "tools:\n  - match: x\n    action: allow\n    when: { args.to: { matches: \"a(\" } }\n",
        );
        assert!(e[0].contains("invalid regex"), "{e:?}");
        let e = errs("tools:\n  - match: \"\"\n    action: allow\n");
        assert!(e[0].contains("bad glob"), "{e:?}");
        let e = errs("tools:\n  - match: x\n    action: permit\n");
        assert!(e[0].contains("unknown action `permit`"), "{e:?}");
        let e = errs("tools:\n  - match: x\n    action: allow\n    when: { args.x: { in: 3 } }\n");
        assert!(e[0].contains("`in` needs a list"), "{e:?}");
        let e = errs("tools:\n  - match: x\n    action: allow\n    when: { arg.x: 1 }\n");
        assert!(e[0].contains("did you mean `args`"), "{e:?}");
        let e = errs("tools:\n  - match: x\n    action: allow\n    when: { eq: 1 }\n");
        assert!(e[0].contains("needs a field"), "{e:?}");
    }

    #[test]
    fn duplicate_ids() {
        let e = errs(
            "tools:\n  - {id: a, match: x, action: allow}\n  - {id: a, match: y, action: deny}\n",
        );
        assert!(
            e[0].starts_with("p.yaml:3:5: error: duplicate rule id `a` (first used at line 2)"),
            "{e:?}"
        );
    }

    #[test]
    fn shadowing_warning() {
        let p = parse(
            "tools:\n  - {id: all-sys, match: \"system.*\", action: deny, priority: 10}\n  - {id: fs, match: system.fs.read, action: allow}\n  - {id: cond, match: \"system.*\", action: allow, priority: 20, when: {user.role: admin}}\n",
            "p.yaml",
        )
        .unwrap();
        assert_eq!(p.warnings.len(), 1, "{:?}", p.warnings);
        assert!(
            p.warnings[0]
                .to_string()
                .starts_with("p.yaml:3:5: warning: rule `fs` can never fire: rule `all-sys`")
        );
    }

    #[test]
    fn synonyms_and_defaults() {
        let p = parse(
            "default: escalate\ntools:\n  - {match: a, action: block}\n",
            "p",
        )
        .unwrap();
        assert_eq!(p.default, Some(Verdict::RequireApproval));
        assert_eq!(p.rules[0].action, Verdict::Deny);
        assert_eq!(p.rules[0].id, "rule-1");
        assert_eq!(p.tenant_errors().len(), 1);
    }
}
