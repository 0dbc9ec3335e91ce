//! [`ParsedPolicy`] → [`CompiledPolicy`]: rules in evaluation order, a tool-name index, and
//! prebuilt JSON Schema validators.

use crate::content::ContentRules;
use crate::diag::Diagnostic;
use crate::glob::Glob;
use crate::model::{ParsedPolicy, Rule, Verdict};
use jsonschema::Validator;
use serde_json::Value;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::Arc;

/// FxHash-style hasher: tool names are short and not attacker-chosen keys of the map (they
/// are only looked up), so a fast non-DoS-resistant hash is fine here.
#[derive(Default, Clone, Copy)]
pub(crate) struct FxHasher(u64);

impl Hasher for FxHasher {
    fn write(&mut self, bytes: &[u8]) {
        const K: u64 = 0x517c_c1b7_2722_0a95;
        let mut chunks = bytes.chunks_exact(8);
        for c in &mut chunks {
            let mut w = [0u8; 8];
            w.copy_from_slice(c);
            self.0 = (self.0.rotate_left(5) ^ u64::from_le_bytes(w)).wrapping_mul(K);
        }
        for &b in chunks.remainder() {
            self.0 = (self.0.rotate_left(5) ^ u64::from(b)).wrapping_mul(K);
        }
    }
    fn write_u8(&mut self, i: u8) {
        self.write(&[i]);
    }
    fn finish(&self) -> u64 {
        self.0
    }
}

type HashMap<K, V> = std::collections::HashMap<K, V, BuildHasherDefault<FxHasher>>;

/// Builds a JSON Schema validator that never fetches anything: remote and file `$ref`s are
/// refused (offline retriever), and `pattern` uses the linear-time regex engine.
pub fn build_schema(schema: &Value) -> Result<Validator, String> {
    jsonschema::options()
        .offline()
        .with_pattern_options(jsonschema::PatternOptions::regex())
        .build(schema)
        .map_err(|e| e.to_string())
}

pub(crate) struct CRule {
    pub rule: Rule,
    pub schema: Option<Validator>,
}

pub(crate) struct CSchema {
    pub glob: Glob,
    pub validator: Validator,
}

pub(crate) struct Inner {
    pub file: String,
    pub default: Option<Verdict>,
    /// Rules in evaluation order (priority descending, then file order).
    pub rules: Vec<CRule>,
    /// Exact tool name → rule positions (ascending) in `rules`.
    pub exact: HashMap<String, Vec<u32>>,
    /// Literal prefix of a wildcard glob → rule positions (ascending).
    pub by_prefix: HashMap<String, Vec<u32>>,
    /// Distinct prefix lengths present in `by_prefix`, ascending.
    pub prefix_lens: Vec<usize>,
    /// Literal suffix of a wildcard glob that starts with a wildcard → rule positions.
    pub by_suffix: HashMap<String, Vec<u32>>,
    /// Distinct suffix lengths present in `by_suffix`, ascending.
    pub suffix_lens: Vec<usize>,
    /// Rules with a glob that has neither a literal prefix nor suffix (`*`, `*a*`, `?x?`).
    pub always: Vec<u32>,
    pub schemas: Vec<CSchema>,
    pub content: ContentRules,
    pub limits: Vec<crate::limits::LimitRule>,
    pub moderation: Option<crate::moderation::ModerationRules>,
    pub warnings: Vec<Diagnostic>,
}

/// A policy ready for evaluation. Cheap to clone (shared), `Send + Sync`.
#[derive(Clone)]
pub struct CompiledPolicy {
    pub(crate) inner: Arc<Inner>,
}

/// Alias so callers can write `Policy::from_yaml`.
pub type Policy = CompiledPolicy;

impl std::fmt::Debug for CompiledPolicy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CompiledPolicy")
            .field("file", &self.inner.file)
            .field("rules", &self.inner.rules.len())
            .finish_non_exhaustive()
    }
}

/// Compiles a parsed policy. Parsing already validated everything, so errors here are
/// limited to schema builds that should not fail.
pub fn compile(parsed: &ParsedPolicy) -> Result<CompiledPolicy, Vec<Diagnostic>> {
    let mut errors = Vec::new();
    let mut rules = Vec::with_capacity(parsed.rules.len());
    for i in parsed.evaluation_order() {
        let Some(rule) = parsed.rules.get(i) else {
            continue;
        };
        let schema = match &rule.schema {
            Some(s) => match build_schema(s) {
                Ok(v) => Some(v),
                Err(e) => {
                    errors.push(Diagnostic::error(
                        &parsed.file,
                        rule.pos,
                        format!("invalid JSON Schema: {e}"),
                    ));
                    None
                }
            },
            None => None,
        };
        rules.push(CRule {
            rule: rule.clone(),
            schema,
        });
    }
    let mut schemas = Vec::new();
    for s in &parsed.schemas {
        match build_schema(&s.schema) {
            Ok(validator) => schemas.push(CSchema {
                glob: s.glob.clone(),
                validator,
            }),
            Err(e) => errors.push(Diagnostic::error(
                &parsed.file,
                s.pos,
                format!("invalid JSON Schema: {e}"),
            )),
        }
    }
    if !errors.is_empty() {
        return Err(errors);
    }
    let mut exact: HashMap<String, Vec<u32>> = HashMap::default();
    let mut by_prefix: HashMap<String, Vec<u32>> = HashMap::default();
    let mut by_suffix: HashMap<String, Vec<u32>> = HashMap::default();
    let mut always: Vec<u32> = Vec::new();
    for (pos, r) in rules.iter().enumerate() {
        let pos = u32::try_from(pos).unwrap_or(u32::MAX);
        for g in &r.rule.globs {
            let list = if g.is_exact() {
                exact.entry(g.as_str().to_owned()).or_default()
            } else if !g.literal_prefix().is_empty() {
                by_prefix.entry(g.literal_prefix().to_owned()).or_default()
            } else if !g.literal_suffix().is_empty() {
                by_suffix.entry(g.literal_suffix().to_owned()).or_default()
            } else {
                &mut always
            };
            if list.last() != Some(&pos) {
                list.push(pos);
            }
        }
    }
    let lens = |m: &HashMap<String, Vec<u32>>| {
        let mut v: Vec<usize> = m.keys().map(String::len).collect();
        v.sort_unstable();
        v.dedup();
        v
    };
    let prefix_lens = lens(&by_prefix);
    let suffix_lens = lens(&by_suffix);
    Ok(CompiledPolicy {
        inner: Arc::new(Inner {
            file: parsed.file.clone(),
            default: parsed.default,
            rules,
            exact,
            by_prefix,
            prefix_lens,
            by_suffix,
            suffix_lens,
            always,
            schemas,
            content: parsed.content.clone(),
            limits: parsed.limits.clone(),
            moderation: parsed.moderation.clone(),
            warnings: parsed.warnings.clone(),
        }),
    })
}

impl CompiledPolicy {
    /// Parses, validates and compiles in one step.
    pub fn from_yaml(source: &str, file_name: &str) -> Result<CompiledPolicy, Vec<Diagnostic>> {
        compile(&crate::parse(source, file_name)?)
    }

    /// The `limits:` and `budgets:` entries.
    pub fn limits(&self) -> &[crate::limits::LimitRule] {
        &self.inner.limits
    }

    /// The `moderation:` section, if the policy has one.
    pub fn moderation(&self) -> Option<&crate::moderation::ModerationRules> {
        self.inner.moderation.as_ref()
    }

    pub fn content(&self) -> &ContentRules {
        &self.inner.content
    }

    /// The `default:` this policy sets (only honoured for the platform layer).
    pub fn default_verdict(&self) -> Option<Verdict> {
        self.inner.default
    }

    pub fn file(&self) -> &str {
        &self.inner.file
    }

    pub fn warnings(&self) -> &[Diagnostic] {
        &self.inner.warnings
    }

    /// Rules in evaluation order.
    pub fn rules(&self) -> impl Iterator<Item = &Rule> {
        self.inner.rules.iter().map(|r| &r.rule)
    }

    /// Positions (in evaluation order) of rules that may match `tool`: rules with an exact
    /// glob equal to it, wildcard rules whose literal prefix (or, for globs starting with a
    /// wildcard, literal suffix) it has, and the few globs with neither. Callers still check
    /// the glob.
    pub(crate) fn candidates(&self, tool: &str) -> Candidates<'_> {
        let inner = &*self.inner;
        let mut acc = Acc::default();
        if let Some(l) = inner.exact.get(tool) {
            acc.add(l);
        }
        for &len in &inner.prefix_lens {
            if len > tool.len() {
                break;
            }
            if let Some(l) = tool.get(..len).and_then(|p| inner.by_prefix.get(p)) {
                acc.add(l);
            }
        }
        for &len in &inner.suffix_lens {
            if len > tool.len() {
                break;
            }
            if let Some(l) = tool
                .get(tool.len() - len..)
                .and_then(|s| inner.by_suffix.get(s))
            {
                acc.add(l);
            }
        }
        acc.add(&inner.always);
        if acc.rest.is_empty() {
            return Candidates::One(acc.first.iter());
        }
        let mut all: Vec<u32> = acc.first.to_vec();
        for l in acc.rest {
            all.extend_from_slice(l);
        }
        all.sort_unstable();
        all.dedup();
        Candidates::Many(all.into_iter())
    }
}

/// Candidate lists without allocating in the common one-list case.
#[derive(Default)]
struct Acc<'a> {
    first: &'a [u32],
    rest: Vec<&'a [u32]>,
}

impl<'a> Acc<'a> {
    fn add(&mut self, l: &'a [u32]) {
        if l.is_empty() {
        } else if self.first.is_empty() {
            self.first = l;
        } else {
            self.rest.push(l);
        }
    }
}

pub(crate) enum Candidates<'a> {
    One(std::slice::Iter<'a, u32>),
    Many(std::vec::IntoIter<u32>),
}

impl Iterator for Candidates<'_> {
    type Item = u32;
    fn next(&mut self) -> Option<u32> {
        match self {
            Candidates::One(it) => it.next().copied(),
            Candidates::Many(it) => it.next(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compiled_policy_is_send_sync() {
        fn check<T: Send + Sync + Clone>() {}
        check::<CompiledPolicy>();
    }

    #[test]
    fn index_finds_exact_and_prefixed() {
        let p = CompiledPolicy::from_yaml(
            "tools:\n  - {id: a, match: email.send, action: allow}\n  - {id: b, match: \"email.*\", action: deny}\n  - {id: c, match: \"*\", action: deny, priority: -1}\n  - {id: d, match: \"e?ail.*\", action: deny}\n  - {id: e, match: [\"file.*\", \"files.*\"], action: deny}\n",
            "p",
        )
        .unwrap();
        let ids = |tool: &str| -> Vec<String> {
            p.candidates(tool)
                .map(|i| p.inner.rules[i as usize].rule.id.clone())
                .collect()
        };
        assert_eq!(ids("email.send"), vec!["a", "b", "d", "c"]);
        assert_eq!(ids("files.x"), vec!["e", "c"]);
        assert_eq!(ids("x"), vec!["c"]);
        let q = CompiledPolicy::from_yaml(
            "tools:\n  - {id: s, match: \"*.delete\", action: deny}\n  - {id: m, match: \"*a*\", action: deny}\n",
            "q",
        )
        .unwrap();
        let ids = |tool: &str| -> Vec<String> {
            q.candidates(tool)
                .map(|i| q.inner.rules[i as usize].rule.id.clone())
                .collect()
        };
        assert_eq!(ids("x.delete"), vec!["s", "m"]);
        assert_eq!(ids("x.read"), vec!["m"]);
    }

    #[test]
    fn remote_and_file_refs_refused() {
        assert!(build_schema(&serde_json::json!({"$ref": "https://example.com/s.json"})).is_err());
        assert!(build_schema(&serde_json::json!({"$ref": "file:///etc/passwd"})).is_err());
        assert!(build_schema(&serde_json::json!({"$defs": {"a": {"type": "string"}}, "properties": {"x": {"$ref": "#/$defs/a"}}})).is_ok());
    }
}
