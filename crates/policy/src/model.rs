//! The parsed (validated) form of a policy: what the YAML says, with positions.

use crate::content::ContentRules;
use crate::diag::{Diagnostic, Pos};
use crate::glob::Glob;
use regex_automata::meta::Regex;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::fmt;

/// A tool-call verdict. Ordered by restrictiveness: `Allow < RequireApproval < Deny`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    Allow,
    RequireApproval,
    Deny,
}

impl Verdict {
    /// Parses an action, accepting the synonyms `block` (deny) and `escalate`
    /// (require_approval).
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "allow" => Some(Self::Allow),
            "deny" | "block" => Some(Self::Deny),
            "require_approval" | "escalate" => Some(Self::RequireApproval),
            _ => None,
        }
    }

    pub const ACTION_NAMES: &'static [&'static str] =
        &["allow", "deny", "require_approval", "block", "escalate"];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Allow => "allow",
            Self::Deny => "deny",
            Self::RequireApproval => "require_approval",
        }
    }

    /// The more restrictive of two verdicts (deny > require_approval > allow).
    pub fn most_restrictive(self, other: Self) -> Self {
        self.max(other)
    }
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Which layer decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Layer {
    Platform,
    Tenant,
    /// Neither layer matched; the platform default (or the default default, deny) applied.
    Default,
}

impl Layer {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Platform => "platform",
            Self::Tenant => "tenant",
            Self::Default => "default",
        }
    }
}

impl fmt::Display for Layer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The context object a path starts from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Root {
    Tool,
    Args,
    User,
    Tenant,
    Request,
}

impl Root {
    pub const NAMES: &'static [&'static str] = &["tool", "args", "user", "tenant", "request"];

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "tool" => Some(Self::Tool),
            "args" => Some(Self::Args),
            "user" => Some(Self::User),
            "tenant" => Some(Self::Tenant),
            "request" => Some(Self::Request),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Tool => "tool",
            Self::Args => "args",
            Self::User => "user",
            Self::Tenant => "tenant",
            Self::Request => "request",
        }
    }
}

/// `args.to`, `tenant.attributes.domain`, `tool`: a root and object keys / array indexes.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct FieldPath {
    pub root: Root,
    pub segments: Vec<String>,
}

impl FieldPath {
    /// Parses a dotted path. Segments are object keys; an all-digit segment also indexes
    /// arrays.
    pub fn parse(s: &str) -> Result<Self, String> {
        let mut parts = s.split('.');
        let head = parts.next().unwrap_or_default();
        let Some(root) = Root::parse(head) else {
            let extra = if head == "context" {
                "; the context is split into `tenant.…`, `user.…` and `request.…` (e.g. `tenant.id`)"
                    .to_owned()
            } else {
                crate::diag::hint(head, Root::NAMES)
            };
            return Err(format!(
                "unknown field `{s}`: a path starts with one of tool, args, user, tenant, request{extra}"
            ));
        };
        let segments: Vec<String> = parts.map(str::to_owned).collect();
        if root == Root::Tool && !segments.is_empty() {
            return Err(format!("`tool` is the tool name and has no fields (`{s}`)"));
        }
        if segments.iter().any(String::is_empty) {
            return Err(format!("empty segment in path `{s}`"));
        }
        Ok(Self { root, segments })
    }
}

impl fmt::Display for FieldPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.root.as_str())?;
        for s in &self.segments {
            write!(f, ".{s}")?;
        }
        Ok(())
    }
}

/// Comparison operators.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Op {
    Eq,
    Ne,
    In,
    NotIn,
    Contains,
    NotContains,
    StartsWith,
    EndsWith,
    Matches,
    Gt,
    Gte,
    Lt,
    Lte,
    Exists,
}

impl Op {
    pub const NAMES: &'static [&'static str] = &[
        "eq",
        "ne",
        "in",
        "not_in",
        "contains",
        "not_contains",
        "starts_with",
        "ends_with",
        "matches",
        "gt",
        "gte",
        "lt",
        "lte",
        "exists",
    ];

    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "eq" => Self::Eq,
            "ne" => Self::Ne,
            "in" => Self::In,
            "not_in" => Self::NotIn,
            "contains" => Self::Contains,
            "not_contains" => Self::NotContains,
            "starts_with" => Self::StartsWith,
            "ends_with" => Self::EndsWith,
            "matches" => Self::Matches,
            "gt" => Self::Gt,
            "gte" => Self::Gte,
            "lt" => Self::Lt,
            "lte" => Self::Lte,
            "exists" => Self::Exists,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Eq => "eq",
            Self::Ne => "ne",
            Self::In => "in",
            Self::NotIn => "not_in",
            Self::Contains => "contains",
            Self::NotContains => "not_contains",
            Self::StartsWith => "starts_with",
            Self::EndsWith => "ends_with",
            Self::Matches => "matches",
            Self::Gt => "gt",
            Self::Gte => "gte",
            Self::Lt => "lt",
            Self::Lte => "lte",
            Self::Exists => "exists",
        }
    }

    pub fn is_numeric(self) -> bool {
        matches!(self, Self::Gt | Self::Gte | Self::Lt | Self::Lte)
    }
}

/// A value in a condition: literal JSON, a context reference (`${tenant.id}`), a string
/// with embedded references, or a list of those.
#[derive(Debug, Clone, PartialEq)]
pub enum ValueExpr {
    Literal(Value),
    Ref(FieldPath),
    Template(Vec<TemplatePart>),
    List(Vec<ValueExpr>),
}

#[derive(Debug, Clone, PartialEq)]
pub enum TemplatePart {
    Text(String),
    Ref(FieldPath),
}

impl ValueExpr {
    /// Whether any reference points into `args` (unknown when stripping tool lists).
    pub fn refers_to(&self, root: Root) -> bool {
        match self {
            Self::Literal(_) => false,
            Self::Ref(p) => p.root == root,
            Self::Template(parts) => parts
                .iter()
                .any(|p| matches!(p, TemplatePart::Ref(r) if r.root == root)),
            Self::List(items) => items.iter().any(|i| i.refers_to(root)),
        }
    }
}

impl fmt::Display for ValueExpr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Literal(v) => write!(f, "{v}"),
            Self::Ref(p) => write!(f, "\"${{{p}}}\""),
            Self::Template(parts) => {
                f.write_str("\"")?;
                for p in parts {
                    match p {
                        TemplatePart::Text(t) => {
                            let lit = Value::String(t.clone()).to_string();
                            f.write_str(lit.trim_matches('"'))?;
                        }
                        TemplatePart::Ref(r) => write!(f, "${{{r}}}")?,
                    }
                }
                f.write_str("\"")
            }
            Self::List(items) => {
                f.write_str("[")?;
                for (i, v) in items.iter().enumerate() {
                    if i > 0 {
                        f.write_str(", ")?;
                    }
                    write!(f, "{v}")?;
                }
                f.write_str("]")
            }
        }
    }
}

/// One test of one field.
#[derive(Debug, Clone)]
pub struct Leaf {
    pub field: FieldPath,
    pub op: Op,
    pub value: ValueExpr,
    /// Compiled pattern for `matches` (linear-time, size-limited).
    pub regex: Option<Regex>,
    pub pos: Pos,
}

impl fmt::Display for Leaf {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {} {}", self.field, self.op.as_str(), self.value)
    }
}

/// A `when` condition tree.
#[derive(Debug, Clone)]
pub enum Condition {
    All(Vec<Condition>),
    Any(Vec<Condition>),
    Not(Box<Condition>),
    Leaf(Box<Leaf>),
}

impl Condition {
    /// Visits every leaf.
    pub fn leaves(&self) -> Vec<&Leaf> {
        let mut out = Vec::new();
        fn walk<'a>(c: &'a Condition, out: &mut Vec<&'a Leaf>) {
            match c {
                Condition::All(cs) | Condition::Any(cs) => cs.iter().for_each(|c| walk(c, out)),
                Condition::Not(c) => walk(c, out),
                Condition::Leaf(l) => out.push(l),
            }
        }
        walk(self, &mut out);
        out
    }
}

impl fmt::Display for Condition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Leaf(l) => write!(f, "{l}"),
            Self::Not(c) => write!(f, "not ({c})"),
            Self::All(cs) | Self::Any(cs) => {
                let sep = if matches!(self, Self::All(_)) {
                    " and "
                } else {
                    " or "
                };
                f.write_str("(")?;
                for (i, c) in cs.iter().enumerate() {
                    if i > 0 {
                        f.write_str(sep)?;
                    }
                    write!(f, "{c}")?;
                }
                f.write_str(")")
            }
        }
    }
}

/// A tool rule.
#[derive(Debug, Clone)]
pub struct Rule {
    /// The rule's `id`, or `rule-N` (N = 1-based position in `tools`) when absent.
    pub id: String,
    pub explicit_id: bool,
    pub globs: Vec<Glob>,
    pub when: Option<Condition>,
    pub action: Verdict,
    pub priority: i64,
    pub reason: Option<String>,
    pub description: Option<String>,
    /// JSON Schema the arguments must satisfy when this rule matches; a violation turns the
    /// rule's verdict into deny.
    pub schema: Option<Value>,
    /// Position of the rule in the file.
    pub pos: Pos,
    /// 0-based position in the `tools` list (the tie-breaker for equal priorities).
    pub index: usize,
}

impl Rule {
    pub fn matches_tool(&self, tool: &str) -> bool {
        self.globs.iter().any(|g| g.matches(tool))
    }
}

/// A declared argument schema for the tools matching `glob`, checked before the rules.
#[derive(Debug, Clone)]
pub struct ToolSchema {
    pub glob: Glob,
    pub schema: Value,
    pub pos: Pos,
}

/// A validated policy file, before indexing.
#[derive(Debug, Clone)]
pub struct ParsedPolicy {
    pub file: String,
    pub version: u32,
    /// `default:` — honoured only in the platform layer.
    pub default: Option<Verdict>,
    pub default_pos: Option<Pos>,
    /// Rules in file order.
    pub rules: Vec<Rule>,
    pub schemas: Vec<ToolSchema>,
    pub content: ContentRules,
    /// Where `content.floors` was set (platform only).
    pub floors_pos: Option<Pos>,
    /// `limits:` then `budgets:` entries, in file order.
    pub limits: Vec<crate::limits::LimitRule>,
    /// The `moderation:` section, if present.
    pub moderation: Option<crate::moderation::ModerationRules>,
    pub warnings: Vec<Diagnostic>,
}

impl ParsedPolicy {
    /// Errors for settings only the platform policy may carry (`default`, `content.floors`).
    /// The evaluator ignores them in a tenant policy anyway; this lets the control plane and
    /// the CLI refuse such a tenant policy instead of silently ignoring parts of it.
    pub fn tenant_errors(&self) -> Vec<Diagnostic> {
        let mut out = Vec::new();
        if let Some(pos) = self.default_pos {
            out.push(Diagnostic::error(
                &self.file,
                pos,
                "`default` may only be set in the platform policy",
            ));
        }
        if let Some(pos) = self.floors_pos {
            out.push(Diagnostic::error(
                &self.file,
                pos,
                "`content.floors` may only be set in the platform policy",
            ));
        }
        out
    }

    /// Rule indexes in evaluation order: priority descending, ties by file order.
    pub fn evaluation_order(&self) -> Vec<usize> {
        let mut order: Vec<usize> = (0..self.rules.len()).collect();
        order.sort_by_key(|&i| {
            (
                std::cmp::Reverse(self.rules.get(i).map_or(0, |r| r.priority)),
                i,
            )
        });
        order
    }
}
