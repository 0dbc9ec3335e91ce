//! Case files for `palisade policy test`: calls with context and the expected decision.
//!
//! ```yaml
//! context:                      # optional, shared by every case
//!   tenant: { id: tenant-a, attributes: { domain: tenant-a.com } }
//! cases:
//!   - name: own domain is allowed
//!     tool: email.send
//!     args: { to: bob@tenant-a.com }
//!     user: { role: agent }     # merged over context.user (also tenant, request)
//!     attrs: { plan: pro }      # shorthand, same names as `--attr`
//!     expect: allow             # allow | deny | require_approval (block/escalate ok)
//!     rule: email-own-domain    # optional; `~` means "no rule: the default decided"
//!     layer: tenant             # optional: platform | tenant | default
//! ```

use crate::attrs::set_attr;
use crate::compile::CompiledPolicy;
use crate::diag::Diagnostic;
use crate::eval::{Decision, EvalContext, evaluate};
use crate::model::{Layer, Verdict};
use crate::table::{TableFormat, render_table};
use crate::yaml::{Sink, Y, YV, load};
use serde::Serialize;
use serde_json::{Map, Value};

/// The expected deciding rule.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ExpectedRule {
    Id(String),
    /// No rule: the default applied.
    None,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Case {
    pub name: String,
    pub line: usize,
    pub ctx: EvalContext,
    pub expect: Verdict,
    pub rule: Option<ExpectedRule>,
    pub layer: Option<Layer>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct CaseFile {
    pub file: String,
    pub cases: Vec<Case>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CaseResult {
    pub name: String,
    pub line: usize,
    pub tool: String,
    pub expected: String,
    pub actual: String,
    pub ok: bool,
    pub decision: Decision,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CaseReport {
    pub file: String,
    pub results: Vec<CaseResult>,
}

impl CaseReport {
    pub fn passed(&self) -> usize {
        self.results.iter().filter(|r| r.ok).count()
    }

    pub fn failed(&self) -> usize {
        self.results.len() - self.passed()
    }

    /// A table of all cases (`ok` / `MISMATCH`).
    pub fn render(&self, format: TableFormat) -> String {
        let headers: Vec<String> = ["line", "case", "tool", "expected", "actual", "result"]
            .iter()
            .map(|s| (*s).to_owned())
            .collect();
        let rows: Vec<Vec<String>> = self
            .results
            .iter()
            .map(|r| {
                vec![
                    r.line.to_string(),
                    r.name.clone(),
                    r.tool.clone(),
                    r.expected.clone(),
                    r.actual.clone(),
                    if r.ok { "ok" } else { "MISMATCH" }.to_owned(),
                ]
            })
            .collect();
        render_table(&headers, &rows, format)
    }
}

const CASE_FIELDS: &[&str] = &[
    "name", "tool", "args", "user", "tenant", "request", "attrs", "expect", "rule", "layer",
];

fn object(sink: &mut Sink<'_>, y: &Y, what: &str) -> Map<String, Value> {
    match y.to_json() {
        Value::Object(m) => m,
        Value::Null => Map::new(),
        _ => {
            sink.error(
                y.pos,
                format!("{what} must be a mapping, found {}", y.kind()),
            );
            Map::new()
        }
    }
}

fn merge(base: &mut Map<String, Value>, over: Map<String, Value>) {
    for (k, v) in over {
        base.insert(k, v);
    }
}

/// Parses a case file.
pub fn parse_cases(source: &str, file_name: &str) -> Result<CaseFile, Vec<Diagnostic>> {
    let root = load(source, file_name).map_err(|d| vec![d])?;
    let mut sink = Sink::new(file_name);
    let mut base = EvalContext::default();
    let mut cases = Vec::new();
    let Some(fields) = sink.fields(
        &root,
        "the case file",
        &["context", "cases"],
        &[("tests", "cases")],
    ) else {
        return Err(sink.diags);
    };
    // context first, whatever the key order
    for (k, v, _) in &fields {
        if *k == "context"
            && let Some(cf) = sink.fields(
                v,
                "`context`",
                &["user", "tenant", "request", "args", "attrs"],
                &[],
            )
        {
            for (ck, cv, _) in cf {
                match ck {
                    "user" => base.user = object(&mut sink, cv, "`user`"),
                    "tenant" => base.tenant = object(&mut sink, cv, "`tenant`"),
                    "request" => base.request = object(&mut sink, cv, "`request`"),
                    "args" => base.args = cv.to_json(),
                    _ => attrs(&mut sink, cv, &mut base),
                }
            }
        }
    }
    for (k, v, _) in &fields {
        if *k != "cases" {
            continue;
        }
        for (i, item) in sink
            .list(v, "`cases`")
            .unwrap_or_default()
            .iter()
            .enumerate()
        {
            if let Some(c) = case(&mut sink, item, i, &base) {
                cases.push(c);
            }
        }
    }
    if sink.has_errors() {
        return Err(sink.diags);
    }
    Ok(CaseFile {
        file: file_name.to_owned(),
        cases,
    })
}

fn attrs(sink: &mut Sink<'_>, y: &Y, ctx: &mut EvalContext) {
    for (k, v, pos) in sink.entries(y, "`attrs`") {
        if let Err(e) = set_attr(ctx, k, v.to_json()) {
            sink.error(pos, e);
        }
    }
}

fn case(sink: &mut Sink<'_>, y: &Y, i: usize, base: &EvalContext) -> Option<Case> {
    let fields = sink.fields(
        y,
        "a case",
        CASE_FIELDS,
        &[
            ("expected", "expect"),
            ("verdict", "expect"),
            ("attributes", "attrs"),
        ],
    )?;
    let mut ctx = base.clone();
    if ctx.args.is_null() {
        ctx.args = Value::Object(Map::new());
    }
    let mut name = None;
    let mut tool = None;
    let mut expect = None;
    let mut rule = None;
    let mut layer = None;
    let mut attr_y = None;
    for (k, v, _) in fields {
        match k {
            "name" => name = sink.string(v, "`name`"),
            "tool" => tool = sink.string(v, "`tool`"),
            "args" => ctx.args = v.to_json(),
            "user" => merge(&mut ctx.user, object(sink, v, "`user`")),
            "tenant" => merge(&mut ctx.tenant, object(sink, v, "`tenant`")),
            "request" => merge(&mut ctx.request, object(sink, v, "`request`")),
            "attrs" => attr_y = Some(v),
            "expect" => {
                if let Some(s) = sink.string(v, "`expect`") {
                    match Verdict::parse(&s) {
                        Some(x) => expect = Some(x),
                        None => sink.error(
                            v.pos,
                            format!(
                                "unknown verdict `{s}` (expected allow, deny or require_approval)"
                            ),
                        ),
                    }
                }
            }
            "rule" => {
                rule = match &v.v {
                    YV::Null => Some(ExpectedRule::None),
                    _ => sink.string(v, "`rule`").map(ExpectedRule::Id),
                }
            }
            "layer" => {
                if let Some(s) = sink.string(v, "`layer`") {
                    layer = match s.as_str() {
                        "platform" => Some(Layer::Platform),
                        "tenant" => Some(Layer::Tenant),
                        "default" => Some(Layer::Default),
                        _ => {
                            sink.error(
                                v.pos,
                                format!(
                                    "unknown layer `{s}` (expected platform, tenant or default)"
                                ),
                            );
                            None
                        }
                    }
                }
            }
            _ => {}
        }
    }
    if let Some(a) = attr_y {
        attrs(sink, a, &mut ctx);
    }
    if tool.is_none() {
        sink.error(y.pos, "a case needs `tool`");
    }
    if expect.is_none() {
        sink.error(
            y.pos,
            "a case needs `expect` (allow, deny or require_approval)",
        );
    }
    ctx.tool = tool?;
    Some(Case {
        name: name.unwrap_or_else(|| format!("case {}", i + 1)),
        line: y.pos.line,
        ctx,
        expect: expect?,
        rule,
        layer,
    })
}

fn describe(verdict: Verdict, rule: Option<&str>, layer: Option<Layer>) -> String {
    match (rule, layer) {
        (Some(r), Some(l)) => format!("{verdict} ({l}: {r})"),
        (Some(r), None) => format!("{verdict} ({r})"),
        (None, Some(l)) => format!("{verdict} ({l})"),
        (None, None) => verdict.to_string(),
    }
}

/// Runs every case against the layers.
pub fn run_cases(
    platform: Option<&CompiledPolicy>,
    tenant: Option<&CompiledPolicy>,
    file: &CaseFile,
) -> CaseReport {
    let results = file
        .cases
        .iter()
        .map(|c| {
            let d = evaluate(platform, tenant, &c.ctx);
            let rule_ok = match &c.rule {
                None => true,
                Some(ExpectedRule::None) => d.rule_id.is_none(),
                Some(ExpectedRule::Id(id)) => d.rule_id.as_deref() == Some(id.as_str()),
            };
            let layer_ok = c.layer.is_none() || c.layer == d.layer;
            let ok = d.verdict == c.expect && rule_ok && layer_ok;
            let exp_rule = match &c.rule {
                Some(ExpectedRule::Id(id)) => Some(id.as_str()),
                Some(ExpectedRule::None) => Some("no rule"),
                None => None,
            };
            CaseResult {
                name: c.name.clone(),
                line: c.line,
                tool: c.ctx.tool.clone(),
                expected: describe(c.expect, exp_rule, c.layer),
                actual: describe(
                    d.verdict,
                    Some(d.rule_id.as_deref().unwrap_or("no rule")),
                    d.layer,
                ),
                ok,
                decision: d,
            }
        })
        .collect();
    CaseReport {
        file: file.file.clone(),
        results,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_and_run() {
        let p = CompiledPolicy::from_yaml(
            "default: deny\ntools:\n  - {id: a, match: x, action: allow, when: {tenant.plan: pro}}\n",
            "p",
        )
        .unwrap();
        let f = parse_cases(
            "context:\n  tenant: {id: t1}\ncases:\n  - {name: pro, tool: x, attrs: {plan: pro}, expect: allow, rule: a, layer: platform}\n  - {tool: x, expect: deny, rule: ~}\n  - {tool: x, expect: allow}\n",
            "c.yaml",
        )
        .unwrap();
        assert_eq!(f.cases[0].ctx.tenant["id"], "t1");
        let r = run_cases(Some(&p), None, &f);
        assert_eq!((r.passed(), r.failed()), (2, 1));
        let t = r.render(TableFormat::Text);
        assert!(t.contains("MISMATCH"), "{t}");
        let e = parse_cases("cases:\n  - {tool: x, expct: allow}\n", "c.yaml").unwrap_err();
        assert!(e[0].to_string().contains("did you mean `expect`"), "{e:?}");
    }
}
