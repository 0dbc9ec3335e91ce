//! Moderation thresholds: the `moderation:` policy section, platform/tenant layering (the
//! platform is a floor), strict parsing of a moderation verdict, and the pure decision of a
//! verdict against thresholds. No I/O: the server's providers produce the scores.
//!
//! Cut-offs (also in `docs/moderation.md`): a score in [0, 1] is LOW from 0.25, MEDIUM from
//! 0.5, HIGH from 0.75. `BLOCK_LOW_AND_ABOVE` blocks a score ≥ 0.25,
//! `BLOCK_MEDIUM_AND_ABOVE` ≥ 0.5, `BLOCK_ONLY_HIGH` ≥ 0.75, `BLOCK_NONE` never.

use crate::diag::hint;
use crate::yaml::{Sink, Y, YV};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::fmt;

/// Lowest score that counts as LOW harm.
pub const CUTOFF_LOW: f64 = 0.25;
/// Lowest score that counts as MEDIUM harm.
pub const CUTOFF_MEDIUM: f64 = 0.5;
/// Lowest score that counts as HIGH harm.
pub const CUTOFF_HIGH: f64 = 0.75;
/// Longest `policy_text` a layer may carry (it goes into every judge prompt).
pub const MAX_POLICY_TEXT: usize = 4096;
/// Longest `http_url`.
const MAX_URL: usize = 2048;

/// A per-category blocking threshold. Ordered by strictness: `BlockNone` is the most
/// permissive, `BlockLowAndAbove` the strictest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Threshold {
    #[serde(rename = "BLOCK_NONE")]
    BlockNone,
    #[serde(rename = "BLOCK_ONLY_HIGH")]
    BlockOnlyHigh,
    #[serde(rename = "BLOCK_MEDIUM_AND_ABOVE")]
    BlockMediumAndAbove,
    #[serde(rename = "BLOCK_LOW_AND_ABOVE")]
    BlockLowAndAbove,
}

impl Threshold {
    pub const NAMES: &'static [&'static str] = &[
        "BLOCK_NONE",
        "BLOCK_ONLY_HIGH",
        "BLOCK_MEDIUM_AND_ABOVE",
        "BLOCK_LOW_AND_ABOVE",
    ];

    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "BLOCK_NONE" => Self::BlockNone,
            "BLOCK_ONLY_HIGH" => Self::BlockOnlyHigh,
            "BLOCK_MEDIUM_AND_ABOVE" => Self::BlockMediumAndAbove,
            "BLOCK_LOW_AND_ABOVE" => Self::BlockLowAndAbove,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::BlockNone => "BLOCK_NONE",
            Self::BlockOnlyHigh => "BLOCK_ONLY_HIGH",
            Self::BlockMediumAndAbove => "BLOCK_MEDIUM_AND_ABOVE",
            Self::BlockLowAndAbove => "BLOCK_LOW_AND_ABOVE",
        }
    }

    /// The lowest score this threshold blocks (`None`: it blocks nothing).
    pub fn cutoff(self) -> Option<f64> {
        match self {
            Self::BlockNone => None,
            Self::BlockOnlyHigh => Some(CUTOFF_HIGH),
            Self::BlockMediumAndAbove => Some(CUTOFF_MEDIUM),
            Self::BlockLowAndAbove => Some(CUTOFF_LOW),
        }
    }

    /// Whether a score is blocked (score ≥ cut-off).
    pub fn blocks(self, score: f64) -> bool {
        self.cutoff().is_some_and(|c| score >= c)
    }

    /// The stricter of two thresholds.
    pub fn stricter(self, other: Self) -> Self {
        self.max(other)
    }
}

impl fmt::Display for Threshold {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A harm category, plus `policy` (the tenant's own policy text).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Category {
    Harassment,
    Hate,
    Sexual,
    Violence,
    SelfHarm,
    Dangerous,
    Policy,
}

impl Category {
    pub const ALL: [Category; 7] = [
        Self::Harassment,
        Self::Hate,
        Self::Sexual,
        Self::Violence,
        Self::SelfHarm,
        Self::Dangerous,
        Self::Policy,
    ];
    /// The six harm categories a verdict's `scores` object must hold (not `policy`).
    pub const HARMS: [Category; 6] = [
        Self::Harassment,
        Self::Hate,
        Self::Sexual,
        Self::Violence,
        Self::SelfHarm,
        Self::Dangerous,
    ];
    pub const NAMES: &'static [&'static str] = &[
        "harassment",
        "hate",
        "sexual",
        "violence",
        "self_harm",
        "dangerous",
        "policy",
    ];

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|c| c.as_str() == s)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Harassment => "harassment",
            Self::Hate => "hate",
            Self::Sexual => "sexual",
            Self::Violence => "violence",
            Self::SelfHarm => "self_harm",
            Self::Dangerous => "dangerous",
            Self::Policy => "policy",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

impl fmt::Display for Category {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where scores come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Provider {
    /// An LLM judge through the configured upstream.
    Judge,
    /// An external HTTP classifier at `http_url`.
    Http,
    /// The built-in scanners' findings, mapped to scores.
    Scanners,
}

impl Provider {
    pub const NAMES: &'static [&'static str] = &["judge", "http", "scanners"];
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "judge" => Self::Judge,
            "http" => Self::Http,
            "scanners" => Self::Scanners,
            _ => return None,
        })
    }
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Judge => "judge",
            Self::Http => "http",
            Self::Scanners => "scanners",
        }
    }
}

/// What happens when the provider times out or returns a malformed verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FailurePolicy {
    /// Let the call through (recorded).
    Open,
    /// Refuse the call.
    Closed,
}

impl FailurePolicy {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Open => "open",
            Self::Closed => "closed",
        }
    }
}

/// How a streamed response meets output moderation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StreamMode {
    /// Text streams as it comes; the verdict at the end can only cut the stream short.
    Release,
    /// Everything is held until the verdict; a block releases nothing.
    Buffer,
}

impl StreamMode {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Release => "release",
            Self::Buffer => "buffer",
        }
    }
}

/// Thresholds of one direction as one layer sets them (`None`: not set in that layer).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LayerThresholds(pub [Option<Threshold>; 7]);

impl LayerThresholds {
    pub fn get(&self, c: Category) -> Option<Threshold> {
        self.0.get(c.index()).copied().flatten()
    }
    pub fn set(&mut self, c: Category, t: Threshold) {
        if let Some(slot) = self.0.get_mut(c.index()) {
            *slot = Some(t);
        }
    }
}

/// The `moderation:` section of one policy layer, as written.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ModerationRules {
    pub provider: Option<Provider>,
    pub http_url: Option<String>,
    pub policy_text: Option<String>,
    pub input: LayerThresholds,
    pub output: LayerThresholds,
    pub on_failure: Option<FailurePolicy>,
    pub streaming: Option<StreamMode>,
    pub parallel_input: Option<bool>,
}

/// Effective thresholds of one direction: every category has one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Thresholds(pub [Threshold; 7]);

impl Default for Thresholds {
    fn default() -> Self {
        Self([Threshold::BlockNone; 7])
    }
}

impl Thresholds {
    pub fn get(&self, c: Category) -> Threshold {
        self.0
            .get(c.index())
            .copied()
            .unwrap_or(Threshold::BlockNone)
    }
    /// Whether any category can block (otherwise the direction needs no verdict).
    pub fn any(&self) -> bool {
        self.0.iter().any(|t| *t != Threshold::BlockNone)
    }
    fn layer(p: Option<&LayerThresholds>, t: Option<&LayerThresholds>) -> Self {
        let mut out = Self::default();
        for c in Category::ALL {
            let a = p.and_then(|l| l.get(c)).unwrap_or(Threshold::BlockNone);
            let b = t.and_then(|l| l.get(c)).unwrap_or(Threshold::BlockNone);
            if let Some(slot) = out.0.get_mut(c.index()) {
                *slot = a.stricter(b);
            }
        }
        out
    }
}

/// Input (request) or output (response).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ModerationDirection {
    Input,
    Output,
}

impl ModerationDirection {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Input => "input",
            Self::Output => "output",
        }
    }
}

/// The moderation in force for a tenant: platform and tenant layers combined.
#[derive(Debug, Clone, PartialEq)]
pub struct EffectiveModeration {
    pub provider: Provider,
    pub http_url: Option<String>,
    /// Whether `http_url` came from the tenant layer (the gateway then checks its host
    /// against an allow-list: a tenant must not point the gateway at internal services).
    pub http_url_tenant: bool,
    /// Platform text, then tenant text (blank line between), if any.
    pub policy_text: Option<String>,
    pub input: Thresholds,
    pub output: Thresholds,
    pub on_failure: FailurePolicy,
    pub streaming: StreamMode,
    pub parallel_input: bool,
}

impl EffectiveModeration {
    pub fn thresholds(&self, d: ModerationDirection) -> &Thresholds {
        match d {
            ModerationDirection::Input => &self.input,
            ModerationDirection::Output => &self.output,
        }
    }
}

/// Combines the layers. `None` when neither layer has a `moderation:` section.
///
/// - thresholds: per category and direction the stricter of the two (the platform is a
///   floor a tenant cannot lower);
/// - `on_failure`: closed if either layer says closed (default closed);
/// - `streaming`: buffer if either layer says buffer (default buffer);
/// - `parallel_input`: only if one layer asks for it and neither refuses it (default off,
///   so a blocked prompt never reaches the upstream);
/// - `provider` / `http_url`: the platform's when it sets a provider (a tenant cannot swap
///   the platform's classifier for a lenient one), else the tenant's; default `judge`;
/// - `policy_text`: both layers' texts.
pub fn effective_moderation(
    platform: Option<&ModerationRules>,
    tenant: Option<&ModerationRules>,
) -> Option<EffectiveModeration> {
    if platform.is_none() && tenant.is_none() {
        return None;
    }
    let (provider, http_url, http_url_tenant) = match (
        platform.and_then(|p| p.provider),
        tenant.and_then(|t| t.provider),
    ) {
        (Some(p), _) => (p, platform.and_then(|p| p.http_url.clone()), false),
        (None, Some(t)) => (t, tenant.and_then(|t| t.http_url.clone()), true),
        (None, None) => (Provider::Judge, None, false),
    };
    let texts: Vec<&str> = [platform, tenant]
        .into_iter()
        .flatten()
        .filter_map(|l| l.policy_text.as_deref())
        .filter(|t| !t.trim().is_empty())
        .collect();
    let policy_text = (!texts.is_empty()).then(|| texts.join("\n\n"));
    let on_failure = [platform, tenant]
        .into_iter()
        .flatten()
        .filter_map(|l| l.on_failure)
        .max()
        .unwrap_or(FailurePolicy::Closed);
    let streaming = [platform, tenant]
        .into_iter()
        .flatten()
        .filter_map(|l| l.streaming)
        .max()
        .unwrap_or(StreamMode::Buffer);
    let votes: Vec<bool> = [platform, tenant]
        .into_iter()
        .flatten()
        .filter_map(|l| l.parallel_input)
        .collect();
    let parallel_input = votes.contains(&true) && !votes.contains(&false);
    Some(EffectiveModeration {
        provider,
        http_url,
        http_url_tenant,
        policy_text,
        input: Thresholds::layer(platform.map(|p| &p.input), tenant.map(|t| &t.input)),
        output: Thresholds::layer(platform.map(|p| &p.output), tenant.map(|t| &t.output)),
        on_failure,
        streaming,
        parallel_input,
    })
}

/// Scores of one verdict, one per category (policy included), each in [0, 1].
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Scores(pub [f64; 7]);

impl Scores {
    pub fn get(&self, c: Category) -> f64 {
        self.0.get(c.index()).copied().unwrap_or(0.0)
    }
    pub fn set(&mut self, c: Category, v: f64) {
        if let Some(s) = self.0.get_mut(c.index()) {
            *s = v;
        }
    }
    /// As the verdict JSON (`{"scores":{…},"policy_violation":…}`).
    pub fn to_json(&self) -> Value {
        let mut scores = serde_json::Map::new();
        for c in Category::HARMS {
            scores.insert(c.as_str().into(), Value::from(self.get(c)));
        }
        serde_json::json!({"scores": scores, "policy_violation": self.get(Category::Policy)})
    }
}

/// Why a verdict was refused.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum VerdictError {
    #[error("the verdict is not JSON: {0}")]
    NotJson(String),
    #[error("the verdict must be a JSON object with `scores` and `policy_violation`")]
    NotObject,
    /// The field's name is kept for debugging but not displayed: the text of a verdict is
    /// model output and may echo the judged text, which must not reach logs or receipts.
    #[error("an unknown field in the verdict")]
    UnknownField(String),
    #[error("the verdict lacks `{0}`")]
    Missing(String),
    #[error("`{0}` must be a number between 0 and 1")]
    BadScore(String),
}

/// Parses a verdict strictly: exactly `{"scores":{harassment,hate,sexual,violence,self_harm,
/// dangerous},"policy_violation":x}`, every field present, every number finite and within
/// [0, 1], no other field anywhere.
pub fn parse_verdict(text: &str) -> Result<Scores, VerdictError> {
    let v: Value =
        serde_json::from_str(text.trim()).map_err(|e| VerdictError::NotJson(e.to_string()))?;
    verdict_from_value(&v)
}

/// [`parse_verdict`] on an already-parsed value.
pub fn verdict_from_value(v: &Value) -> Result<Scores, VerdictError> {
    let Value::Object(top) = v else {
        return Err(VerdictError::NotObject);
    };
    for k in top.keys() {
        if k != "scores" && k != "policy_violation" {
            return Err(VerdictError::UnknownField(bounded(k)));
        }
    }
    let Some(Value::Object(scores)) = top.get("scores") else {
        return Err(VerdictError::Missing("scores".into()));
    };
    for k in scores.keys() {
        if !Category::HARMS.iter().any(|c| c.as_str() == k) {
            return Err(VerdictError::UnknownField(format!("scores.{}", bounded(k))));
        }
    }
    let mut out = Scores::default();
    for c in Category::HARMS {
        let v = scores
            .get(c.as_str())
            .ok_or_else(|| VerdictError::Missing(format!("scores.{c}")))?;
        out.set(c, score(v, &format!("scores.{c}"))?);
    }
    let p = top
        .get("policy_violation")
        .ok_or_else(|| VerdictError::Missing("policy_violation".into()))?;
    out.set(Category::Policy, score(p, "policy_violation")?);
    Ok(out)
}

fn bounded(s: &str) -> String {
    s.chars().take(64).collect()
}

fn score(v: &Value, name: &str) -> Result<f64, VerdictError> {
    match v.as_f64() {
        Some(x) if x.is_finite() && (0.0..=1.0).contains(&x) => Ok(x),
        _ => Err(VerdictError::BadScore(name.to_owned())),
    }
}

/// The category that decided an evaluation.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Deciding {
    pub category: Category,
    pub score: f64,
    pub threshold: Threshold,
}

/// A verdict measured against thresholds.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Evaluation {
    pub blocked: bool,
    /// When blocked: the blocking category with the highest score (ties: the first in
    /// [`Category::ALL`]). When allowed: the highest-scoring category, for the record.
    pub deciding: Option<Deciding>,
}

/// Decides a verdict: blocked when any category's score reaches its threshold's cut-off.
pub fn evaluate(scores: &Scores, thresholds: &Thresholds) -> Evaluation {
    let mut best_block: Option<Deciding> = None;
    let mut best_any: Option<Deciding> = None;
    for c in Category::ALL {
        let d = Deciding {
            category: c,
            score: scores.get(c),
            threshold: thresholds.get(c),
        };
        if d.threshold.blocks(d.score) && best_block.is_none_or(|b| d.score > b.score) {
            best_block = Some(d);
        }
        if best_any.is_none_or(|b| d.score > b.score) {
            best_any = Some(d);
        }
    }
    match best_block {
        Some(d) => Evaluation {
            blocked: true,
            deciding: Some(d),
        },
        None => Evaluation {
            blocked: false,
            deciding: best_any,
        },
    }
}

const FIELDS: &[&str] = &[
    "provider",
    "http_url",
    "policy_text",
    "input",
    "output",
    "on_failure",
    "streaming",
    "parallel_input",
];
const ALIASES: &[(&str, &str)] = &[
    ("url", "http_url"),
    ("policy", "policy_text"),
    ("failure", "on_failure"),
    ("stream", "streaming"),
];

/// Parses the `moderation:` section.
pub(crate) fn parse_moderation(sink: &mut Sink<'_>, y: &Y) -> ModerationRules {
    let mut out = ModerationRules::default();
    if y.is_null() {
        return out;
    }
    let Some(fields) = sink.fields(y, "`moderation`", FIELDS, ALIASES) else {
        return out;
    };
    let mut url_pos = None;
    for (key, v, _) in fields {
        match key {
            "provider" => {
                if let Some(s) = sink.string(v, "`moderation.provider`") {
                    match Provider::parse(&s) {
                        Some(p) => out.provider = Some(p),
                        None => sink.error(
                            v.pos,
                            format!(
                                "unknown moderation provider `{s}`{} (expected one of: {})",
                                hint(&s, Provider::NAMES),
                                Provider::NAMES.join(", ")
                            ),
                        ),
                    }
                }
            }
            "http_url" => {
                if let Some(s) = sink.string(v, "`moderation.http_url`") {
                    if !(s.starts_with("http://") || s.starts_with("https://"))
                        || s.len() > MAX_URL
                        || s.contains(char::is_whitespace)
                    {
                        sink.error(
                            v.pos,
                            "`moderation.http_url` must be an http:// or https:// URL without spaces",
                        );
                    } else {
                        out.http_url = Some(s);
                        url_pos = Some(v.pos);
                    }
                }
            }
            "policy_text" => {
                if let Some(s) = sink.string(v, "`moderation.policy_text`") {
                    if s.len() > MAX_POLICY_TEXT {
                        sink.error(
                            v.pos,
                            format!(
                                "`moderation.policy_text` is longer than {MAX_POLICY_TEXT} bytes"
                            ),
                        );
                    } else {
                        out.policy_text = Some(s);
                    }
                }
            }
            "input" => out.input = thresholds(sink, v, "moderation.input"),
            "output" => out.output = thresholds(sink, v, "moderation.output"),
            "on_failure" => {
                if let Some(s) = sink.string(v, "`moderation.on_failure`") {
                    match s.as_str() {
                        "closed" => out.on_failure = Some(FailurePolicy::Closed),
                        "open" => out.on_failure = Some(FailurePolicy::Open),
                        _ => sink.error(
                            v.pos,
                            format!(
                                "unknown `on_failure` `{s}`{} (expected closed or open)",
                                hint(&s, &["closed", "open"])
                            ),
                        ),
                    }
                }
            }
            "streaming" => {
                if let Some(s) = sink.string(v, "`moderation.streaming`") {
                    match s.as_str() {
                        "buffer" => out.streaming = Some(StreamMode::Buffer),
                        "release" => out.streaming = Some(StreamMode::Release),
                        _ => sink.error(
                            v.pos,
                            format!(
                                "unknown `streaming` `{s}`{} (expected buffer or release)",
                                hint(&s, &["buffer", "release"])
                            ),
                        ),
                    }
                }
            }
            "parallel_input" => {
                out.parallel_input = sink.boolean(v, "`moderation.parallel_input`");
            }
            _ => {}
        }
    }
    if out.provider == Some(Provider::Http) && out.http_url.is_none() {
        sink.error(y.pos, "`moderation.provider: http` needs `http_url`");
    }
    if let Some(pos) = url_pos
        && out.provider != Some(Provider::Http)
    {
        sink.warning(
            pos,
            "`moderation.http_url` is only used with `provider: http`",
        );
    }
    out
}

fn thresholds(sink: &mut Sink<'_>, y: &Y, what: &str) -> LayerThresholds {
    let mut out = LayerThresholds::default();
    if y.is_null() {
        return out;
    }
    let Some(fields) = sink.fields(y, &format!("`{what}`"), Category::NAMES, &[]) else {
        return out;
    };
    for (key, v, _) in fields {
        let Some(c) = Category::parse(key) else {
            continue;
        };
        let t = match &v.v {
            YV::Str(s) => match Threshold::parse(s) {
                Some(t) => Some(t),
                None => {
                    let upper = s.to_ascii_uppercase();
                    let extra = if Threshold::parse(&upper).is_some() {
                        format!("; did you mean `{upper}`?")
                    } else {
                        hint(s, Threshold::NAMES)
                    };
                    sink.error(
                        v.pos,
                        format!(
                            "unknown threshold `{s}` for `{what}.{key}`{extra} (expected one of: {})",
                            Threshold::NAMES.join(", ")
                        ),
                    );
                    None
                }
            },
            _ => {
                sink.error(
                    v.pos,
                    format!(
                        "the threshold for `{what}.{key}` must be a string such as BLOCK_MEDIUM_AND_ABOVE, found {}",
                        v.kind()
                    ),
                );
                None
            }
        };
        if let Some(t) = t {
            out.set(c, t);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn rules(src: &str) -> ModerationRules {
        crate::parse(src, "p.yaml").unwrap().moderation.unwrap()
    }

    fn errs(src: &str) -> Vec<String> {
        crate::parse(src, "p.yaml")
            .unwrap_err()
            .iter()
            .map(ToString::to_string)
            .collect()
    }

    #[test]
    fn cutoffs_at_and_below() {
        use Threshold::*;
        for (t, c) in [
            (BlockLowAndAbove, CUTOFF_LOW),
            (BlockMediumAndAbove, CUTOFF_MEDIUM),
            (BlockOnlyHigh, CUTOFF_HIGH),
        ] {
            assert!(t.blocks(c), "{t} at {c}");
            assert!(!t.blocks(c - 0.01), "{t} below {c}");
            assert!(t.blocks(1.0));
        }
        assert!(!BlockNone.blocks(1.0));
        assert_eq!(BlockNone.stricter(BlockOnlyHigh), BlockOnlyHigh);
        assert_eq!(
            BlockLowAndAbove.stricter(BlockMediumAndAbove),
            BlockLowAndAbove
        );
    }

    #[test]
    fn parses_section() {
        let r = rules(
            "moderation:\n  provider: judge\n  policy_text: \"No investment advice.\"\n  input: { hate: BLOCK_LOW_AND_ABOVE }\n  output: { policy: BLOCK_ONLY_HIGH, violence: BLOCK_NONE }\n  on_failure: open\n  streaming: release\n  parallel_input: true\n",
        );
        assert_eq!(r.provider, Some(Provider::Judge));
        assert_eq!(
            r.input.get(Category::Hate),
            Some(Threshold::BlockLowAndAbove)
        );
        assert_eq!(r.input.get(Category::Violence), None);
        assert_eq!(
            r.output.get(Category::Policy),
            Some(Threshold::BlockOnlyHigh)
        );
        assert_eq!(r.on_failure, Some(FailurePolicy::Open));
        assert_eq!(r.streaming, Some(StreamMode::Release));
        assert_eq!(r.parallel_input, Some(true));
    }

    #[test]
    fn errors_carry_positions() {
        let e = errs("moderation:\n  input: { hate: BLOCK_HIGH }\n");
        assert!(
            e[0].starts_with("p.yaml:2:18: error: unknown threshold `BLOCK_HIGH`"),
            "{e:?}"
        );
        let e = errs("moderation:\n  input: { hat: BLOCK_NONE }\n");
        assert!(
            e[0].starts_with("p.yaml:2:12: error: unknown field `hat`")
                && e[0].contains("did you mean `hate`"),
            "{e:?}"
        );
        let e = errs("moderation:\n  input: { hate: block_none }\n");
        assert!(e[0].contains("did you mean `BLOCK_NONE`"), "{e:?}");
        let e = errs("moderation:\n  provder: judge\n");
        assert!(
            e[0].starts_with("p.yaml:2:3:") && e[0].contains("provider"),
            "{e:?}"
        );
        let e = errs("moderation:\n  provider: http\n");
        assert!(e[0].contains("needs `http_url`"), "{e:?}");
        let e = errs("moderation:\n  on_failure: maybe\n");
        assert!(e[0].contains("closed or open"), "{e:?}");
        let e = errs("moderation:\n  input: { hate: 0.5 }\n");
        assert!(e[0].contains("must be a string"), "{e:?}");
        let e = errs("moderation:\n  parallel_input: yes please\n");
        assert!(e[0].contains("true or false"), "{e:?}");
        let e = errs("moderation:\n  provider: http\n  http_url: ftp://x\n");
        assert!(e.iter().any(|m| m.contains("http:// or https://")), "{e:?}");
    }

    #[test]
    fn layering_platform_is_a_floor() {
        let p = rules(
            "moderation:\n  input: { hate: BLOCK_MEDIUM_AND_ABOVE }\n  on_failure: closed\n  provider: judge\n",
        );
        let t = rules(
            "moderation:\n  input: { hate: BLOCK_NONE, violence: BLOCK_ONLY_HIGH }\n  on_failure: open\n  provider: http\n  http_url: http://x\n  parallel_input: true\n",
        );
        let e = effective_moderation(Some(&p), Some(&t)).unwrap();
        assert_eq!(e.input.get(Category::Hate), Threshold::BlockMediumAndAbove);
        assert_eq!(e.input.get(Category::Violence), Threshold::BlockOnlyHigh);
        assert_eq!(e.on_failure, FailurePolicy::Closed);
        assert_eq!(e.provider, Provider::Judge);
        assert!(e.parallel_input);
        assert_eq!(e.streaming, StreamMode::Buffer);
        assert!(!e.output.any());
        assert!(effective_moderation(None, None).is_none());
        // The tenant picks the provider when the platform does not.
        let e = effective_moderation(None, Some(&t)).unwrap();
        assert_eq!(e.provider, Provider::Http);
        assert_eq!(e.http_url.as_deref(), Some("http://x"));
        assert_eq!(e.on_failure, FailurePolicy::Open);
    }

    #[test]
    fn strict_verdicts() {
        let ok = r#"{"scores":{"harassment":0,"hate":0.1,"sexual":0,"violence":0.5,"self_harm":0,"dangerous":1},"policy_violation":0.75}"#;
        let s = parse_verdict(ok).unwrap();
        assert_eq!(s.get(Category::Violence), 0.5);
        assert_eq!(s.get(Category::Policy), 0.75);
        assert_eq!(parse_verdict(&s.to_json().to_string()).unwrap(), s);
        assert!(matches!(
            parse_verdict("not json"),
            Err(VerdictError::NotJson(_))
        ));
        assert!(matches!(parse_verdict("[1]"), Err(VerdictError::NotObject)));
        let missing = ok.replace(r#""hate":0.1,"#, "");
        assert!(matches!(
            parse_verdict(&missing),
            Err(VerdictError::Missing(m)) if m == "scores.hate"
        ));
        let extra = ok.replace(r#""policy_violation""#, r#""x":1,"policy_violation""#);
        assert!(matches!(
            parse_verdict(&extra),
            Err(VerdictError::UnknownField(_))
        ));
        let extra = ok.replace(r#""hate":0.1"#, r#""hate":0.1,"spam":0"#);
        assert!(matches!(
            parse_verdict(&extra),
            Err(VerdictError::UnknownField(_))
        ));
        for bad in ["1.5", "-0.1", "\"0.5\"", "null", "true"] {
            let b = ok.replace("0.75", bad);
            assert!(
                matches!(parse_verdict(&b), Err(VerdictError::BadScore(_))),
                "{bad}"
            );
        }
    }

    #[test]
    fn evaluation_names_the_deciding_category() {
        let mut th = Thresholds::default();
        th.0[Category::Violence as usize] = Threshold::BlockMediumAndAbove;
        th.0[Category::Policy as usize] = Threshold::BlockLowAndAbove;
        let mut s = Scores::default();
        s.set(Category::Violence, 0.49);
        s.set(Category::Hate, 0.9);
        let e = evaluate(&s, &th);
        assert!(!e.blocked);
        assert_eq!(e.deciding.unwrap().category, Category::Hate);
        s.set(Category::Policy, 0.25);
        let e = evaluate(&s, &th);
        assert!(e.blocked);
        let d = e.deciding.unwrap();
        assert_eq!(
            (d.category, d.score, d.threshold),
            (Category::Policy, 0.25, Threshold::BlockLowAndAbove)
        );
    }

    fn threshold() -> impl Strategy<Value = Threshold> {
        prop_oneof![
            Just(Threshold::BlockNone),
            Just(Threshold::BlockOnlyHigh),
            Just(Threshold::BlockMediumAndAbove),
            Just(Threshold::BlockLowAndAbove),
        ]
    }

    fn layer() -> impl Strategy<Value = LayerThresholds> {
        proptest::array::uniform7(proptest::option::of(threshold())).prop_map(LayerThresholds)
    }

    proptest! {
        /// A tenant can never make a platform threshold more permissive.
        #[test]
        fn tenant_never_lowers_platform(p in layer(), t in layer(), scores in proptest::array::uniform7(0.0f64..=1.0)) {
            let pr = ModerationRules { input: p, ..Default::default() };
            let tr = ModerationRules { input: t, ..Default::default() };
            let e = effective_moderation(Some(&pr), Some(&tr)).unwrap();
            let platform_only = effective_moderation(Some(&pr), None).unwrap();
            for c in Category::ALL {
                prop_assert!(e.input.get(c) >= platform_only.input.get(c));
                prop_assert!(e.input.get(c) >= tr.input.get(c).unwrap_or(Threshold::BlockNone));
            }
            let s = Scores(scores);
            // Whatever the platform alone blocks, the combination blocks.
            if evaluate(&s, &platform_only.input).blocked {
                prop_assert!(evaluate(&s, &e.input).blocked);
            }
        }

        /// Blocking is monotone in the score and in the threshold's strictness.
        #[test]
        fn blocking_is_monotone(a in 0.0f64..=1.0, b in 0.0f64..=1.0, t in threshold(), u in threshold()) {
            let (lo, hi) = if a <= b { (a, b) } else { (b, a) };
            if t.blocks(lo) { prop_assert!(t.blocks(hi)); }
            if t.blocks(a) { prop_assert!(t.stricter(u).blocks(a)); }
        }

        /// Any well-formed verdict round-trips; any score outside [0, 1] is refused.
        #[test]
        fn verdict_roundtrip(scores in proptest::array::uniform7(0.0f64..=1.0), bad in 1.0001f64..1e6) {
            let s = Scores(scores);
            prop_assert_eq!(parse_verdict(&s.to_json().to_string()).unwrap(), s);
            let mut v = s.to_json();
            v["scores"]["hate"] = serde_json::json!(bad);
            prop_assert!(parse_verdict(&v.to_string()).is_err());
        }

        /// The parser never panics on arbitrary text.
        #[test]
        fn verdict_parser_total(text in ".{0,200}") {
            let _ = parse_verdict(&text);
        }
    }
}
