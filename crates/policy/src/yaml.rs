//! A small spanned YAML tree built on serde-saphyr, with resource limits.
//!
//! Policies are validated by hand over this tree (rather than with derived structs) so that
//! every error names the exact node, unknown keys get "did you mean" hints, and condition
//! keys such as `args.to` need no special serde handling.

use crate::diag::{Diagnostic, Pos, hint};
use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Number, Value};
use serde_saphyr::Spanned;
use std::fmt;

/// Largest accepted policy or case file. Policies are small; a bigger input is an attack or
/// a mistake.
pub const MAX_SOURCE_BYTES: usize = 1024 * 1024;
/// Deepest accepted nesting of YAML collections.
pub const MAX_DEPTH: usize = 40;
/// Most aliases (`*x`) a document may use; policies rarely need any.
pub const MAX_ALIASES: usize = 256;

/// A YAML node with the position where it is used.
#[derive(Debug, Clone)]
pub struct Y {
    pub pos: Pos,
    pub v: YV,
}

#[derive(Debug, Clone)]
pub enum YV {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
    Seq(Vec<Y>),
    Map(Vec<(Y, Y)>),
}

#[derive(Debug)]
enum Node {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
    Seq(Vec<Spanned<Node>>),
    Map(Vec<(Spanned<Node>, Spanned<Node>)>),
}

impl<'de> Deserialize<'de> for Node {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(NodeVisitor)
    }
}

struct NodeVisitor;

impl<'de> Visitor<'de> for NodeVisitor {
    type Value = Node;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any YAML value")
    }
    fn visit_unit<E>(self) -> Result<Node, E> {
        Ok(Node::Null)
    }
    fn visit_none<E>(self) -> Result<Node, E> {
        Ok(Node::Null)
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Node, D::Error> {
        Node::deserialize(d)
    }
    fn visit_bool<E>(self, v: bool) -> Result<Node, E> {
        Ok(Node::Bool(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Node, E> {
        Ok(Node::Int(v))
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Node, E> {
        i64::try_from(v)
            .map(Node::Int)
            .map_err(|_| E::custom("integer is too large"))
    }
    fn visit_i128<E: de::Error>(self, v: i128) -> Result<Node, E> {
        i64::try_from(v)
            .map(Node::Int)
            .map_err(|_| E::custom("integer is too large"))
    }
    fn visit_u128<E: de::Error>(self, v: u128) -> Result<Node, E> {
        i64::try_from(v)
            .map(Node::Int)
            .map_err(|_| E::custom("integer is too large"))
    }
    fn visit_f64<E>(self, v: f64) -> Result<Node, E> {
        Ok(Node::Float(v))
    }
    fn visit_str<E>(self, v: &str) -> Result<Node, E> {
        Ok(Node::Str(v.to_owned()))
    }
    fn visit_string<E>(self, v: String) -> Result<Node, E> {
        Ok(Node::Str(v))
    }
    fn visit_bytes<E: de::Error>(self, v: &[u8]) -> Result<Node, E> {
        String::from_utf8(v.to_vec())
            .map(Node::Str)
            .map_err(|_| E::custom("binary values are not supported"))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut a: A) -> Result<Node, A::Error> {
        let mut v = Vec::new();
        while let Some(x) = a.next_element::<Spanned<Node>>()? {
            v.push(x);
        }
        Ok(Node::Seq(v))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut a: A) -> Result<Node, A::Error> {
        let mut v = Vec::new();
        while let Some(k) = a.next_key::<Spanned<Node>>()? {
            let val = a.next_value::<Spanned<Node>>()?;
            v.push((k, val));
        }
        Ok(Node::Map(v))
    }
}

fn pos_of<T>(s: &Spanned<T>) -> Pos {
    let line = usize::try_from(s.referenced.line()).unwrap_or(0);
    let column = usize::try_from(s.referenced.column()).unwrap_or(0);
    Pos::new(line, column)
}

fn convert(s: Spanned<Node>) -> Y {
    let pos = pos_of(&s);
    let v = match s.value {
        Node::Null => YV::Null,
        Node::Bool(b) => YV::Bool(b),
        Node::Int(i) => YV::Int(i),
        Node::Float(f) => YV::Float(f),
        Node::Str(s) => YV::Str(s),
        Node::Seq(items) => YV::Seq(items.into_iter().map(convert).collect()),
        Node::Map(items) => YV::Map(
            items
                .into_iter()
                .map(|(k, v)| (convert(k), convert(v)))
                .collect(),
        ),
    };
    Y { pos, v }
}

fn options() -> serde_saphyr::Options {
    let mut budget = serde_saphyr::Budget::default();
    budget.max_depth = MAX_DEPTH;
    budget.max_aliases = MAX_ALIASES;
    budget.max_anchors = MAX_ALIASES;
    budget.max_nodes = 200_000;
    budget.max_events = 500_000;
    budget.max_documents = 1;
    budget.max_total_scalar_bytes = MAX_SOURCE_BYTES;
    budget.max_recorded_anchor_events = 50_000;
    budget.max_recorded_anchor_bytes = MAX_SOURCE_BYTES;
    budget.max_merge_keys = 64;
    budget.max_inclusion_depth = 0;
    let mut opts = serde_saphyr::Options::default();
    opts.budget = Some(budget);
    opts.duplicate_keys = serde_saphyr::DuplicateKeyPolicy::Error;
    opts.with_snippet = false;
    opts.strict_booleans = true;
    opts.alias_limits.max_total_replayed_events = 50_000;
    opts.alias_limits.max_replay_stack_depth = 16;
    opts.alias_limits.max_alias_expansions_per_anchor = 64;
    opts
}

/// Parses one YAML document with size, depth and alias budgets.
pub fn load(source: &str, file: &str) -> Result<Y, Diagnostic> {
    if source.len() > MAX_SOURCE_BYTES {
        return Err(Diagnostic::error(
            file,
            Pos::new(1, 1),
            format!(
                "file is {} bytes; the limit is {MAX_SOURCE_BYTES} bytes",
                source.len()
            ),
        ));
    }
    match serde_saphyr::from_str_with_options::<Spanned<Node>>(source, options()) {
        Ok(n) => Ok(convert(n)),
        Err(e) => {
            let pos = e
                .location()
                .map(|l| {
                    Pos::new(
                        usize::try_from(l.line()).unwrap_or(0),
                        usize::try_from(l.column()).unwrap_or(0),
                    )
                })
                .filter(|p| p.line > 0)
                .unwrap_or(Pos::new(1, 1));
            let mut msg = e.without_snippet().to_string();
            if let Some(i) = msg.rfind(" at line ") {
                msg.truncate(i);
            }
            if let Some(i) = msg.find(", set DuplicateKeyPolicy") {
                msg.truncate(i);
            }
            let msg = msg.trim_start_matches("error: ").trim().to_owned();
            Err(Diagnostic::error(file, pos, format!("invalid YAML: {msg}")))
        }
    }
}

impl Y {
    pub fn kind(&self) -> &'static str {
        match &self.v {
            YV::Null => "null",
            YV::Bool(_) => "a boolean",
            YV::Int(_) | YV::Float(_) => "a number",
            YV::Str(_) => "a string",
            YV::Seq(_) => "a list",
            YV::Map(_) => "a mapping",
        }
    }

    pub fn as_str(&self) -> Option<&str> {
        match &self.v {
            YV::Str(s) => Some(s),
            _ => None,
        }
    }

    pub fn is_null(&self) -> bool {
        matches!(self.v, YV::Null)
    }

    /// Converts to JSON (keys rendered as strings).
    pub fn to_json(&self) -> Value {
        match &self.v {
            YV::Null => Value::Null,
            YV::Bool(b) => Value::Bool(*b),
            YV::Int(i) => Value::Number((*i).into()),
            YV::Float(f) => Number::from_f64(*f).map_or(Value::Null, Value::Number),
            YV::Str(s) => Value::String(s.clone()),
            YV::Seq(items) => Value::Array(items.iter().map(Y::to_json).collect()),
            YV::Map(items) => {
                let mut m = Map::new();
                for (k, v) in items {
                    m.insert(k.key_text(), v.to_json());
                }
                Value::Object(m)
            }
        }
    }

    fn key_text(&self) -> String {
        match &self.v {
            YV::Str(s) => s.clone(),
            YV::Int(i) => i.to_string(),
            YV::Float(f) => f.to_string(),
            YV::Bool(b) => b.to_string(),
            YV::Null => "null".to_owned(),
            YV::Seq(_) | YV::Map(_) => "?".to_owned(),
        }
    }
}

/// Collects diagnostics for one file.
pub struct Sink<'f> {
    pub file: &'f str,
    pub diags: Vec<Diagnostic>,
}

impl<'f> Sink<'f> {
    pub fn new(file: &'f str) -> Self {
        Self {
            file,
            diags: Vec::new(),
        }
    }

    pub fn error(&mut self, pos: Pos, msg: impl Into<String>) {
        self.diags.push(Diagnostic::error(self.file, pos, msg));
    }

    pub fn warning(&mut self, pos: Pos, msg: impl Into<String>) {
        self.diags.push(Diagnostic::warning(self.file, pos, msg));
    }

    pub fn has_errors(&self) -> bool {
        self.diags.iter().any(Diagnostic::is_error)
    }

    /// The entries of a mapping whose keys are all strings from `allowed`; reports the rest.
    pub fn fields<'y>(
        &mut self,
        y: &'y Y,
        what: &str,
        allowed: &[&str],
        aliases: &[(&str, &str)],
    ) -> Option<Vec<(&'y str, &'y Y, Pos)>> {
        let YV::Map(items) = &y.v else {
            self.error(
                y.pos,
                format!("{what} must be a mapping, found {}", y.kind()),
            );
            return None;
        };
        let mut out = Vec::with_capacity(items.len());
        for (k, v) in items {
            let Some(key) = k.as_str() else {
                self.error(k.pos, format!("keys of {what} must be strings"));
                continue;
            };
            if allowed.contains(&key) {
                out.push((key, v, k.pos));
            } else {
                let extra = aliases
                    .iter()
                    .find(|(a, _)| *a == key)
                    .map(|(_, to)| format!("; did you mean `{to}`?"))
                    .unwrap_or_else(|| hint(key, allowed));
                self.error(
                    k.pos,
                    format!(
                        "unknown field `{key}` in {what}{extra} (expected one of: {})",
                        allowed.join(", ")
                    ),
                );
            }
        }
        Some(out)
    }

    /// String entries of a mapping with arbitrary string keys.
    pub fn entries<'y>(&mut self, y: &'y Y, what: &str) -> Vec<(&'y str, &'y Y, Pos)> {
        let YV::Map(items) = &y.v else {
            self.error(
                y.pos,
                format!("{what} must be a mapping, found {}", y.kind()),
            );
            return Vec::new();
        };
        let mut out = Vec::with_capacity(items.len());
        for (k, v) in items {
            match k.as_str() {
                Some(key) => out.push((key, v, k.pos)),
                None => self.error(k.pos, format!("keys of {what} must be strings")),
            }
        }
        out
    }

    pub fn string(&mut self, y: &Y, what: &str) -> Option<String> {
        match &y.v {
            YV::Str(s) => Some(s.clone()),
            _ => {
                self.error(
                    y.pos,
                    format!("{what} must be a string, found {}", y.kind()),
                );
                None
            }
        }
    }

    pub fn list<'y>(&mut self, y: &'y Y, what: &str) -> Option<&'y [Y]> {
        match &y.v {
            YV::Seq(items) => Some(items),
            _ => {
                self.error(y.pos, format!("{what} must be a list, found {}", y.kind()));
                None
            }
        }
    }

    /// A string or a list of strings.
    pub fn strings(&mut self, y: &Y, what: &str) -> Vec<(String, Pos)> {
        match &y.v {
            YV::Str(s) => vec![(s.clone(), y.pos)],
            YV::Seq(items) => items
                .iter()
                .filter_map(|i| self.string(i, what).map(|s| (s, i.pos)))
                .collect(),
            _ => {
                self.error(
                    y.pos,
                    format!(
                        "{what} must be a string or a list of strings, found {}",
                        y.kind()
                    ),
                );
                Vec::new()
            }
        }
    }

    pub fn boolean(&mut self, y: &Y, what: &str) -> Option<bool> {
        match &y.v {
            YV::Bool(b) => Some(*b),
            _ => {
                self.error(
                    y.pos,
                    format!("{what} must be true or false, found {}", y.kind()),
                );
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions() {
        let y = load("a: 1\nb:\n  - x\n  - 'y'\n", "f.yaml").unwrap();
        let YV::Map(m) = &y.v else { panic!() };
        assert_eq!(m[1].0.pos, Pos::new(2, 1));
        let YV::Seq(s) = &m[1].1.v else { panic!() };
        assert_eq!(s[1].pos, Pos::new(4, 5));
    }

    #[test]
    fn duplicate_keys_rejected() {
        let e = load("a: 1\na: 2\n", "f.yaml").unwrap_err();
        assert_eq!((e.line, e.column), (2, 1));
        assert!(e.message.contains("duplicate"), "{}", e.message);
    }

    #[test]
    fn syntax_error_position() {
        let e = load("a: [1\n", "f.yaml").unwrap_err();
        assert_eq!(e.line, 1);
        assert!(e.message.starts_with("invalid YAML"));
    }

    #[test]
    fn limits() {
        let deep = format!("{}1{}", "[".repeat(200), "]".repeat(200));
        assert!(load(&deep, "f").is_err());
        let big = "a".repeat(MAX_SOURCE_BYTES + 1);
        assert!(load(&big, "f").is_err());
        // billion laughs
        let mut s = String::from("a: &a [x,x,x,x,x,x,x,x,x,x]\n");
        for i in 0..12 {
            let prev = if i == 0 {
                "a".to_owned()
            } else {
                format!("a{}", i - 1)
            };
            s.push_str(&format!(
                "a{i}: &a{i} [*{prev},*{prev},*{prev},*{prev},*{prev},*{prev},*{prev},*{prev},*{prev},*{prev}]\n"
            ));
        }
        assert!(load(&s, "f").is_err());
    }
}
