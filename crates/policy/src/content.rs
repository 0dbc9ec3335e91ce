//! Content rules: which detectors act on input and output text, and how.
//!
//! Detector ids are opaque lowercase identifiers here; the scanning crate defines what they
//! detect. Keyword lists and custom regex detectors declared in the policy become detector
//! ids too.

use crate::diag::{Pos, hint};
use crate::yaml::{Sink, Y, YV};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

/// What to do when a detector fires. Ordered by strength, so floors are a `max`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ContentAction {
    /// Explicitly disabled (lets a tenant switch off a platform setting that has no floor).
    Off,
    /// Record the finding, change nothing.
    Flag,
    /// Replace with a stable per-tenant pseudonym.
    Pseudonymize,
    /// Replace with a placeholder.
    Redact,
    /// Refuse the request (input) or the response (output).
    Block,
}

impl ContentAction {
    pub const NAMES: &'static [&'static str] = &["off", "flag", "pseudonymize", "redact", "block"];

    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "off" => Self::Off,
            "flag" => Self::Flag,
            "pseudonymize" | "pseudonymise" => Self::Pseudonymize,
            "redact" => Self::Redact,
            "block" => Self::Block,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Off => "off",
            Self::Flag => "flag",
            Self::Pseudonymize => "pseudonymize",
            Self::Redact => "redact",
            Self::Block => "block",
        }
    }
}

impl fmt::Display for ContentAction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A keyword list detector.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeywordList {
    pub id: String,
    pub words: Vec<String>,
    /// Match only whole words (default true).
    pub whole_word: bool,
    /// Case-sensitive matching (default false).
    pub case_sensitive: bool,
}

/// A custom regex detector (validated here: linear-time engine, size-limited).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CustomDetector {
    pub id: String,
    pub pattern: String,
    pub description: Option<String>,
}

/// Minimum actions set by the platform, per direction.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Floors {
    pub input: BTreeMap<String, ContentAction>,
    pub output: BTreeMap<String, ContentAction>,
}

impl Floors {
    pub fn is_empty(&self) -> bool {
        self.input.is_empty() && self.output.is_empty()
    }
}

/// The `content:` section.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContentRules {
    /// Detector id → action for request text.
    pub input: BTreeMap<String, ContentAction>,
    /// Detector id → action for response text.
    pub output: BTreeMap<String, ContentAction>,
    pub keywords: Vec<KeywordList>,
    pub custom: Vec<CustomDetector>,
    /// Detector id (or `*` for all) → values that are never reported.
    pub allow: BTreeMap<String, Vec<String>>,
    /// Platform only.
    pub floors: Floors,
}

/// Built-in detector ids and groups known at the time of writing; an unknown id is allowed
/// (the scanner decides) but a near miss of one of these gets a warning.
pub const KNOWN_DETECTORS: &[&str] = &[
    "email",
    "phone",
    "us_ssn",
    "credit_card",
    "iban",
    "ip_address",
    "url",
    "secrets",
    "injection",
    "pii",
];

impl ContentRules {
    /// Combines the platform's and a tenant's content rules: the tenant overrides the
    /// platform per detector, then the platform's floors raise any action below them.
    /// Keyword lists and custom detectors are merged (a tenant cannot replace a platform
    /// one with the same id); a tenant's allow-list entries are dropped for floored detectors
    /// so an allow-list cannot undercut a floor.
    pub fn merge(platform: Option<&ContentRules>, tenant: Option<&ContentRules>) -> ContentRules {
        let mut out = platform.cloned().unwrap_or_default();
        let floors = out.floors.clone();
        if let Some(t) = tenant {
            for (k, a) in &t.input {
                out.input.insert(k.clone(), *a);
            }
            for (k, a) in &t.output {
                out.output.insert(k.clone(), *a);
            }
            for kw in &t.keywords {
                if !out.detector_declared(&kw.id) {
                    out.keywords.push(kw.clone());
                }
            }
            for c in &t.custom {
                if !out.detector_declared(&c.id) {
                    out.custom.push(c.clone());
                }
            }
            for (k, values) in &t.allow {
                let floored = if k == "*" {
                    !floors.is_empty()
                } else {
                    floors.input.contains_key(k) || floors.output.contains_key(k)
                };
                if floored {
                    continue;
                }
                let entry = out.allow.entry(k.clone()).or_default();
                for v in values {
                    if !entry.contains(v) {
                        entry.push(v.clone());
                    }
                }
            }
        }
        for (k, f) in &floors.input {
            let e = out.input.entry(k.clone()).or_insert(*f);
            *e = (*e).max(*f);
        }
        for (k, f) in &floors.output {
            let e = out.output.entry(k.clone()).or_insert(*f);
            *e = (*e).max(*f);
        }
        out
    }

    fn detector_declared(&self, id: &str) -> bool {
        self.keywords.iter().any(|k| k.id == id) || self.custom.iter().any(|c| c.id == id)
    }

    /// The action for a detector in one direction, if configured.
    pub fn action(&self, direction: Direction, detector: &str) -> Option<ContentAction> {
        match direction {
            Direction::Input => self.input.get(detector).copied(),
            Direction::Output => self.output.get(detector).copied(),
        }
    }
}

/// Input (request) or output (response) text.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    Input,
    Output,
}

/// Lowercase identifier: `[a-z][a-z0-9_]{0,63}`.
pub fn valid_detector_id(id: &str) -> bool {
    let mut chars = id.chars();
    matches!(chars.next(), Some('a'..='z'))
        && id.len() <= 64
        && chars.all(|c| matches!(c, 'a'..='z' | '0'..='9' | '_'))
}

fn detector_map(
    sink: &mut Sink<'_>,
    y: &Y,
    what: &str,
    seen: &mut Vec<(String, Pos)>,
) -> BTreeMap<String, ContentAction> {
    let mut out = BTreeMap::new();
    if y.is_null() {
        return out;
    }
    for (id, v, pos) in sink.entries(y, what) {
        if !valid_detector_id(id) {
            sink.error(
                pos,
                format!(
                    "detector id `{id}` must be a lowercase identifier such as `email` or `us_ssn`"
                ),
            );
            continue;
        }
        seen.push((id.to_owned(), pos));
        let Some(s) = sink.string(v, &format!("the action for `{id}`")) else {
            continue;
        };
        match ContentAction::parse(&s) {
            Some(a) => {
                out.insert(id.to_owned(), a);
            }
            None => sink.error(
                v.pos,
                format!(
                    "unknown content action `{s}`{} (expected one of: {})",
                    hint(&s, ContentAction::NAMES),
                    ContentAction::NAMES.join(", ")
                ),
            ),
        }
    }
    out
}

/// Parses the `content:` section. Returns the rules and where `floors` was set.
pub(crate) fn parse_content(sink: &mut Sink<'_>, y: &Y) -> (ContentRules, Option<Pos>) {
    let mut out = ContentRules::default();
    let mut floors_pos = None;
    let Some(fields) = sink.fields(
        y,
        "`content`",
        &["input", "output", "keywords", "custom", "allow", "floors"],
        &[
            ("detectors", "input"),
            ("allowlist", "allow"),
            ("regex", "custom"),
        ],
    ) else {
        return (out, None);
    };
    let mut used: Vec<(String, Pos)> = Vec::new();
    let mut declared: BTreeSet<String> = BTreeSet::new();
    for (key, v, kpos) in fields {
        match key {
            "input" => out.input = detector_map(sink, v, "`content.input`", &mut used),
            "output" => out.output = detector_map(sink, v, "`content.output`", &mut used),
            "floors" => {
                floors_pos = Some(kpos);
                if let Some(ff) = sink.fields(v, "`content.floors`", &["input", "output"], &[]) {
                    for (fk, fv, _) in ff {
                        let mut ignore = Vec::new();
                        let m =
                            detector_map(sink, fv, &format!("`content.floors.{fk}`"), &mut ignore);
                        if fk == "input" {
                            out.floors.input = m;
                        } else {
                            out.floors.output = m;
                        }
                    }
                }
            }
            "keywords" => {
                for item in sink.list(v, "`content.keywords`").unwrap_or_default() {
                    if let Some(kw) = parse_keywords(sink, item, &mut declared) {
                        out.keywords.push(kw);
                    }
                }
            }
            "custom" => {
                for item in sink.list(v, "`content.custom`").unwrap_or_default() {
                    if let Some(c) = parse_custom(sink, item, &mut declared) {
                        out.custom.push(c);
                    }
                }
            }
            "allow" => {
                for (id, list, pos) in sink.entries(v, "`content.allow`") {
                    if id != "*" && !valid_detector_id(id) {
                        sink.error(
                            pos,
                            format!("detector id `{id}` must be a lowercase identifier or `*`"),
                        );
                        continue;
                    }
                    let values = sink
                        .strings(list, "an allow-list entry")
                        .into_iter()
                        .map(|(s, _)| s)
                        .collect();
                    out.allow.insert(id.to_owned(), values);
                }
            }
            _ => {}
        }
    }
    for (id, pos) in &used {
        if declared.contains(id) || KNOWN_DETECTORS.contains(&id.as_str()) {
            continue;
        }
        if let Some(near) = crate::diag::did_you_mean(id, KNOWN_DETECTORS) {
            sink.warning(
                *pos,
                format!("detector `{id}` is not a built-in detector nor declared here; did you mean `{near}`?"),
            );
        }
    }
    for kw in &out.keywords {
        if !out.input.contains_key(&kw.id) && !out.output.contains_key(&kw.id) {
            sink.warning(
                y.pos,
                format!("keyword list `{}` is declared but not used in `content.input` or `content.output`", kw.id),
            );
        }
    }
    for c in &out.custom {
        if !out.input.contains_key(&c.id) && !out.output.contains_key(&c.id) {
            sink.warning(
                y.pos,
                format!("custom detector `{}` is declared but not used in `content.input` or `content.output`", c.id),
            );
        }
    }
    (out, floors_pos)
}

fn declared_id(sink: &mut Sink<'_>, y: &Y, declared: &mut BTreeSet<String>) -> Option<String> {
    let id = sink.string(y, "`id`")?;
    if !valid_detector_id(&id) {
        sink.error(
            y.pos,
            format!("detector id `{id}` must be a lowercase identifier such as `competitors`"),
        );
        return None;
    }
    if KNOWN_DETECTORS.contains(&id.as_str()) {
        sink.error(
            y.pos,
            format!("`{id}` is a built-in detector id; pick another id"),
        );
        return None;
    }
    if !declared.insert(id.clone()) {
        sink.error(y.pos, format!("duplicate detector id `{id}`"));
        return None;
    }
    Some(id)
}

fn parse_keywords(
    sink: &mut Sink<'_>,
    y: &Y,
    declared: &mut BTreeSet<String>,
) -> Option<KeywordList> {
    let fields = sink.fields(
        y,
        "a keyword list",
        &["id", "words", "whole_word", "case_sensitive"],
        &[("keywords", "words")],
    )?;
    let mut id = None;
    let mut words = None;
    let mut whole_word = true;
    let mut case_sensitive = false;
    for (k, v, _) in fields {
        match k {
            "id" => id = declared_id(sink, v, declared),
            "words" => {
                let ws: Vec<String> = sink
                    .strings(v, "`words`")
                    .into_iter()
                    .map(|(s, _)| s)
                    .collect();
                if ws.iter().any(|w| w.trim().is_empty()) {
                    sink.error(v.pos, "keywords must not be empty");
                }
                words = Some(ws);
            }
            "whole_word" => whole_word = sink.boolean(v, "`whole_word`").unwrap_or(true),
            "case_sensitive" => {
                case_sensitive = sink.boolean(v, "`case_sensitive`").unwrap_or(false)
            }
            _ => {}
        }
    }
    if words.is_none() {
        sink.error(y.pos, "a keyword list needs `words`");
    }
    if id.is_none() && !sink.has_errors() {
        sink.error(y.pos, "a keyword list needs an `id`");
    }
    Some(KeywordList {
        id: id?,
        words: words?,
        whole_word,
        case_sensitive,
    })
}

fn parse_custom(
    sink: &mut Sink<'_>,
    y: &Y,
    declared: &mut BTreeSet<String>,
) -> Option<CustomDetector> {
    let fields = sink.fields(
        y,
        "a custom detector",
        &["id", "pattern", "description"],
        &[("regex", "pattern")],
    )?;
    let mut id = None;
    let mut pattern = None;
    let mut description = None;
    for (k, v, _) in fields {
        match k {
            "id" => id = declared_id(sink, v, declared),
            "pattern" => {
                if let Some(p) = sink.string(v, "`pattern`") {
                    match crate::regex_util::build(&p) {
                        Ok(_) => pattern = Some(p),
                        Err(e) => sink.error(v.pos, e),
                    }
                }
            }
            "description" => description = sink.string(v, "`description`"),
            _ => {}
        }
    }
    if !matches!(y.v, YV::Map(ref m) if m.iter().any(|(k, _)| k.as_str() == Some("pattern"))) {
        sink.error(y.pos, "a custom detector needs a `pattern`");
    }
    Some(CustomDetector {
        id: id?,
        pattern: pattern?,
        description,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules(input: &[(&str, ContentAction)]) -> ContentRules {
        ContentRules {
            input: input.iter().map(|(k, a)| ((*k).to_owned(), *a)).collect(),
            ..ContentRules::default()
        }
    }

    #[test]
    fn floors_cannot_be_lowered() {
        let mut p = rules(&[
            ("email", ContentAction::Redact),
            ("url", ContentAction::Flag),
        ]);
        p.floors
            .input
            .insert("secrets".into(), ContentAction::Block);
        p.floors
            .input
            .insert("email".into(), ContentAction::Pseudonymize);
        let t = rules(&[
            ("email", ContentAction::Off),
            ("url", ContentAction::Off),
            ("secrets", ContentAction::Flag),
            ("phone", ContentAction::Redact),
        ]);
        let e = ContentRules::merge(Some(&p), Some(&t));
        assert_eq!(e.input["email"], ContentAction::Pseudonymize);
        assert_eq!(e.input["url"], ContentAction::Off);
        assert_eq!(e.input["secrets"], ContentAction::Block);
        assert_eq!(e.input["phone"], ContentAction::Redact);
        // a floor applies even if nobody configured the detector
        let e = ContentRules::merge(Some(&p), None);
        assert_eq!(e.input["secrets"], ContentAction::Block);
    }

    #[test]
    fn tenant_allow_list_cannot_undercut_floor() {
        let mut p = ContentRules::default();
        p.floors
            .output
            .insert("email".into(), ContentAction::Redact);
        let mut t = ContentRules::default();
        t.allow.insert("email".into(), vec!["a@b.c".into()]);
        t.allow.insert("url".into(), vec!["https://x".into()]);
        let e = ContentRules::merge(Some(&p), Some(&t));
        assert!(!e.allow.contains_key("email"));
        assert_eq!(e.allow["url"], vec!["https://x".to_owned()]);
    }

    #[test]
    fn ids() {
        assert!(valid_detector_id("us_ssn"));
        assert!(!valid_detector_id("US_SSN"));
        assert!(!valid_detector_id("1abc"));
        assert!(!valid_detector_id(""));
        assert!(ContentAction::Block > ContentAction::Redact);
        assert!(ContentAction::Redact > ContentAction::Pseudonymize);
        assert!(ContentAction::Pseudonymize > ContentAction::Flag);
    }
}
