//! Turning findings into rewritten text: block, redact, pseudonymize, flag; and restoring
//! pseudonyms in the model's reply.

use std::collections::{BTreeMap, HashMap};

use serde::{Deserialize, Serialize};

use crate::{Entity, Finding};

/// What a content rule does with a finding.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    /// Refuse the request (the value is also replaced in the text, in case the caller
    /// carries on).
    Block,
    /// Replace with a typed placeholder such as `[EMAIL]`.
    Redact,
    /// Replace with a consistent placeholder such as `<EMAIL_1>`, restorable later.
    Pseudonymize,
    /// Leave the text alone; record only.
    Flag,
}

impl Action {
    fn rewrites(self) -> bool {
        !matches!(self, Action::Flag)
    }
}

/// What happened to one input finding.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Outcome {
    /// The action the policy chose (after injection findings degrade to flag).
    pub action: Option<Action>,
    /// Whether the finding's text was replaced.
    pub rewritten: bool,
}

/// Counts for receipts: type, count and action, never values.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SummaryEntry {
    pub group: String,
    pub entity: Entity,
    pub action: Action,
    pub count: usize,
}

/// Result of [`apply`].
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Applied {
    pub text: String,
    /// One per input finding, same order.
    pub outcomes: Vec<Outcome>,
    /// Findings whose action is [`Action::Block`]; non-empty means refuse.
    pub blocked: Vec<Finding>,
    /// Sorted by group, entity, action.
    pub summary: Vec<SummaryEntry>,
}

impl Applied {
    pub fn is_blocked(&self) -> bool {
        !self.blocked.is_empty()
    }
}

/// Apply per-finding actions to `text`.
///
/// Overlapping findings that rewrite are merged into one replaced region (so no part of
/// any of them survives); the region's placeholder comes from its strongest member:
/// longest, then most confident, then earliest, then detector id. A region containing a
/// blocked finding gets the redaction placeholder. Injection findings are never
/// rewritten: an instruction is not a value, so `redact` / `pseudonymize` on them act as
/// `flag` (block still blocks).
pub fn apply(
    text: &str,
    findings: &[Finding],
    action_for: impl Fn(&Finding) -> Option<Action>,
    pseudo: &mut Pseudonymizer,
) -> Applied {
    let mut outcomes = Vec::with_capacity(findings.len());
    let mut blocked = Vec::new();
    let mut counts: BTreeMap<(String, Entity, Action), usize> = BTreeMap::new();
    let mut rewriting: Vec<usize> = Vec::new();
    for (i, f) in findings.iter().enumerate() {
        let mut a = action_for(f);
        if f.entity == Entity::Injection && matches!(a, Some(Action::Redact | Action::Pseudonymize))
        {
            a = Some(Action::Flag);
        }
        let valid = f.span.start < f.span.end && text.get(f.span.clone()).is_some();
        if let Some(a) = a {
            *counts
                .entry((f.group().to_string(), f.entity, a))
                .or_insert(0) += 1;
            if a == Action::Block {
                blocked.push(f.clone());
            }
            if a.rewrites() && f.entity != Entity::Injection && valid {
                rewriting.push(i);
            }
        }
        outcomes.push(Outcome {
            action: a,
            rewritten: false,
        });
    }
    rewriting.sort_by_key(|&i| (findings[i].span.start, findings[i].span.end, i));

    let mut out = String::with_capacity(text.len());
    let mut pos = 0;
    let mut k = 0;
    while k < rewriting.len() {
        let first = &findings[rewriting[k]];
        let start = first.span.start;
        let mut end = first.span.end;
        let mut members = vec![rewriting[k]];
        k += 1;
        while k < rewriting.len() && findings[rewriting[k]].span.start < end {
            end = end.max(findings[rewriting[k]].span.end);
            members.push(rewriting[k]);
            k += 1;
        }
        let rep = members
            .iter()
            .copied()
            .max_by(|&a, &b| {
                let (fa, fb) = (&findings[a], &findings[b]);
                fa.span
                    .len()
                    .cmp(&fb.span.len())
                    .then(fa.confidence.total_cmp(&fb.confidence))
                    .then(fb.span.start.cmp(&fa.span.start))
                    .then(fb.detector.cmp(&fa.detector))
                    .then(b.cmp(&a))
            })
            .unwrap_or(members[0]);
        let any_block = members
            .iter()
            .any(|&m| outcomes[m].action == Some(Action::Block));
        let action = if any_block {
            Action::Block
        } else {
            outcomes[rep].action.unwrap_or(Action::Redact)
        };
        let label = &findings[rep].label;
        out.push_str(&text[pos..start]);
        match action {
            Action::Pseudonymize => {
                let ph = pseudo.placeholder(label, &text[start..end]);
                out.push_str(&ph);
            }
            _ => {
                out.push('[');
                out.push_str(label);
                out.push(']');
            }
        }
        for &m in &members {
            outcomes[m].rewritten = true;
        }
        pos = end;
    }
    out.push_str(&text[pos..]);
    let summary = counts
        .into_iter()
        .map(|((group, entity, action), count)| SummaryEntry {
            group,
            entity,
            action,
            count,
        })
        .collect();
    Applied {
        text: out,
        outcomes,
        blocked,
        summary,
    }
}

/// Consistent placeholders (`<EMAIL_1>`, `<EMAIL_2>`, …) for one conversation, and their
/// reversal. Serialisable so the server can keep it with the request.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(from = "PseudoState", into = "PseudoState")]
pub struct Pseudonymizer {
    entries: Vec<PseudoEntry>,
    by_value: HashMap<(String, String), usize>,
    by_placeholder: HashMap<String, usize>,
    counters: HashMap<String, u32>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct PseudoEntry {
    placeholder: String,
    label: String,
    value: String,
}

#[derive(Serialize, Deserialize)]
struct PseudoState {
    entries: Vec<PseudoEntry>,
}

impl From<PseudoState> for Pseudonymizer {
    fn from(s: PseudoState) -> Self {
        let mut p = Pseudonymizer::default();
        for e in s.entries {
            p.insert(e);
        }
        p
    }
}

impl From<Pseudonymizer> for PseudoState {
    fn from(p: Pseudonymizer) -> Self {
        PseudoState { entries: p.entries }
    }
}

/// Longest placeholder `restore` recognises.
pub(crate) const MAX_PLACEHOLDER: usize = 64;

impl Pseudonymizer {
    pub fn new() -> Self {
        Self::default()
    }

    fn insert(&mut self, e: PseudoEntry) {
        if let Some(n) = e
            .placeholder
            .strip_prefix('<')
            .and_then(|s| s.strip_suffix('>'))
            .and_then(|s| s.rsplit_once('_'))
            .and_then(|(_, n)| n.parse::<u32>().ok())
        {
            let c = self.counters.entry(e.label.clone()).or_insert(0);
            *c = (*c).max(n);
        }
        let idx = self.entries.len();
        self.by_value
            .insert((e.label.clone(), e.value.clone()), idx);
        self.by_placeholder.insert(e.placeholder.clone(), idx);
        self.entries.push(e);
    }

    /// The placeholder for `value` of type `label`, allocating the next number if new.
    pub fn placeholder(&mut self, label: &str, value: &str) -> String {
        if let Some(&i) = self.by_value.get(&(label.to_string(), value.to_string())) {
            return self.entries[i].placeholder.clone();
        }
        let c = self.counters.entry(label.to_string()).or_insert(0);
        *c += 1;
        let placeholder = format!("<{label}_{c}>");
        self.insert(PseudoEntry {
            placeholder: placeholder.clone(),
            label: label.to_string(),
            value: value.to_string(),
        });
        placeholder
    }

    /// The original behind a placeholder.
    pub fn original(&self, placeholder: &str) -> Option<&str> {
        self.by_placeholder
            .get(placeholder)
            .map(|&i| self.entries[i].value.as_str())
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Replace every known placeholder in `text` with its original value.
    pub fn restore(&self, text: &str) -> String {
        if self.entries.is_empty() {
            return text.to_string();
        }
        let b = text.as_bytes();
        let mut out = String::with_capacity(text.len());
        let mut pos = 0;
        let mut i = 0;
        while let Some(off) = memchr::memchr(b'<', &b[i..]) {
            let lt = i + off;
            let len = placeholder_len(&b[lt..]);
            if len > 0
                && let Some(orig) = self.original(&text[lt..lt + len])
            {
                out.push_str(&text[pos..lt]);
                out.push_str(orig);
                pos = lt + len;
                i = pos;
                continue;
            }
            i = lt + 1;
        }
        out.push_str(&text[pos..]);
        out
    }
}

#[inline]
pub(crate) fn placeholder_char(c: u8) -> bool {
    c.is_ascii_uppercase() || c.is_ascii_digit() || c == b'_'
}

/// Length of a syntactic placeholder `<LABEL_N>` at the start of `b`, or 0.
fn placeholder_len(b: &[u8]) -> usize {
    let lim = b.len().min(MAX_PLACEHOLDER);
    let mut i = 1;
    while i < lim && placeholder_char(b[i]) {
        i += 1;
    }
    if i < lim && b[i] == b'>' && i > 1 {
        i + 1
    } else {
        0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Scanner, ScannerConfig};

    #[test]
    fn redact_pseudonymize_restore() {
        let s = Scanner::new(&ScannerConfig::default()).unwrap();
        let text = "Mail bob@example.com or alice@example.org, again bob@example.com. Card 4111 1111 1111 1111.";
        let r = s.scan(text);
        let mut p = Pseudonymizer::new();
        let a = apply(
            text,
            &r.findings,
            |f| {
                Some(if f.entity == Entity::Email {
                    Action::Pseudonymize
                } else {
                    Action::Redact
                })
            },
            &mut p,
        );
        assert_eq!(
            a.text,
            "Mail <EMAIL_1> or <EMAIL_2>, again <EMAIL_1>. Card [CREDIT_CARD]."
        );
        assert_eq!(
            p.restore("Hi <EMAIL_2> and <EMAIL_1>, not <EMAIL_9>"),
            "Hi alice@example.org and bob@example.com, not <EMAIL_9>"
        );
        let json = serde_json::to_string(&p).unwrap();
        let q: Pseudonymizer = serde_json::from_str(&json).unwrap();
        assert_eq!(q, p);
        assert_eq!(a.summary.len(), 2);
    }
}

#[cfg(test)]
mod config_tests {
    use crate::{CustomPattern, Entity, KeywordList, Scanner, ScannerConfig};

    #[test]
    fn keywords_custom_and_allow_list() {
        let cfg = ScannerConfig {
            keywords: vec![KeywordList {
                id: "codenames".into(),
                words: vec!["Falcon".into()],
                whole_word: true,
                case_insensitive: true,
            }],
            custom: vec![CustomPattern {
                id: "emp".into(),
                pattern: r"EMP-\d{6}".into(),
                entity: "employee id".into(),
            }],
            allow: vec!["@support.example.com".into()],
            ..Default::default()
        };
        let s = Scanner::new(&cfg).unwrap();
        for t in [
            "project FALCON",
            "project f a l c o n",
            "project ｆａｌｃｏｎ",
            "project fаlcоn",
            "project fal\u{200B}con",
        ] {
            let r = s.scan(t);
            let k: Vec<_> = r
                .findings
                .iter()
                .filter(|f| f.entity == Entity::Keyword)
                .collect();
            assert_eq!(k.len(), 1, "{t}");
            assert_eq!(k[0].group(), "keywords");
            assert_eq!(
                &t[k[0].span.clone()].len(),
                &(t.len() - "project ".len()),
                "{t}"
            );
        }
        assert!(s.scan("falconry").findings.is_empty());
        let r = s.scan("id EMP-123456, mail help@support.example.com or bob@example.com");
        let groups: Vec<_> = r
            .findings
            .iter()
            .map(|f| (f.group().to_string(), f.label.to_string()))
            .collect();
        assert_eq!(
            groups,
            vec![
                ("custom:emp".into(), "EMPLOYEE_ID".into()),
                ("email".into(), "EMAIL".into())
            ]
        );
        assert!(
            Scanner::new(&ScannerConfig {
                custom: vec![CustomPattern {
                    id: "bad".into(),
                    pattern: "(".into(),
                    entity: "X".into()
                }],
                ..Default::default()
            })
            .is_err()
        );
        assert!(
            Scanner::new(&ScannerConfig {
                detectors: vec!["nope".into()],
                ..Default::default()
            })
            .is_err()
        );
    }
}
