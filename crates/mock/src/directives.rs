//! `[[mock:NAME]]` / `[[mock:NAME=VALUE]]` directives.
//!
//! The gateway forwards only the body (and two headers) upstream, so the body's text is the
//! only channel through which a test can tell the mock how to behave.

use serde_json::{Map, Value};

const OPEN: &str = "[[mock:";
const CLOSE: &str = "]]";

/// How the stream (or body) of a successful response should end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ending {
    /// All events, then a clean end of the body.
    Complete,
    /// Drop the connection after `Some(n)` events (`None`: a default point mid-text).
    Die(Option<usize>),
    /// Send `n` events, then send nothing more until the server shuts down.
    StallAfter(usize),
}

/// What the directives of one request ask for; `None` / empty means "default behaviour".
#[derive(Debug, Clone, PartialEq)]
pub struct Directives {
    pub reply: Option<String>,
    pub error: Option<u16>,
    pub error_once: Option<(u16, String)>,
    pub retry_after: Option<u64>,
    pub latency_ms: Option<u64>,
    pub stream_delay_ms: Option<u64>,
    pub chunk: Option<usize>,
    pub tool_uses: Vec<(String, Map<String, Value>)>,
    pub ending: Ending,
    pub hang: bool,
    pub max_tokens: bool,
    pub stop_sequence: Option<String>,
    pub stream_error: Option<u16>,
    /// `judge_reply=SPEC`: the reply ends with `[[mock:judge=SPEC]]`, so an output judge
    /// that reads the reply finds its verdict there.
    pub judge_reply: Option<String>,
}

impl Default for Directives {
    fn default() -> Self {
        Self {
            reply: None,
            error: None,
            error_once: None,
            retry_after: None,
            latency_ms: None,
            stream_delay_ms: None,
            chunk: None,
            tool_uses: Vec::new(),
            ending: Ending::Complete,
            hang: false,
            max_tokens: false,
            stop_sequence: None,
            stream_error: None,
            judge_reply: None,
        }
    }
}

/// Every `(name, value)` directive token in `text`, in order.
///
/// A value runs to the first `]]`, so a value cannot itself contain `]]`.
pub fn tokens(text: &str) -> Vec<(&str, Option<&str>)> {
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(start) = rest.find(OPEN) {
        let after = &rest[start + OPEN.len()..];
        let Some(end) = after.find(CLOSE) else { break };
        let inner = &after[..end];
        match inner.split_once('=') {
            Some((name, value)) => out.push((name.trim(), Some(value))),
            None => out.push((inner.trim(), None)),
        }
        rest = &after[end + CLOSE.len()..];
    }
    out
}

/// `text` with every directive removed (and the doubled space it would leave collapsed),
/// trimmed: what the "model" is taken to have seen.
pub fn strip(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find(OPEN) {
        let after = &rest[start + OPEN.len()..];
        let Some(end) = after.find(CLOSE) else { break };
        out.push_str(&rest[..start]);
        rest = &after[end + CLOSE.len()..];
        if (out.is_empty() || out.ends_with(char::is_whitespace)) && rest.starts_with([' ', '\t']) {
            rest = &rest[1..];
        }
    }
    out.push_str(rest);
    out.trim().to_owned()
}

/// Parses the directive tokens into [`Directives`]; later tokens override earlier ones,
/// except `tool_use`, which accumulates.
pub fn parse<'a>(
    tokens: impl IntoIterator<Item = (&'a str, Option<&'a str>)>,
) -> Result<Directives, String> {
    let mut d = Directives::default();
    for (name, value) in tokens {
        match (name, value) {
            ("reply", Some(v)) => d.reply = Some(v.to_owned()),
            ("error", Some(v)) => d.error = Some(status(name, v)?),
            ("error_once", Some(v)) => {
                let (s, key) = v.split_once(':').ok_or_else(|| {
                    format!("mock directive error_once: expected STATUS:KEY, got `{v}`")
                })?;
                d.error_once = Some((status(name, s)?, key.to_owned()));
            }
            ("retry_after", Some(v)) => d.retry_after = Some(number(name, v)?),
            ("latency_ms", Some(v)) => d.latency_ms = Some(number(name, v)?),
            ("stream_delay_ms", Some(v)) => d.stream_delay_ms = Some(number(name, v)?),
            ("chunk", Some(v)) => {
                let n = number(name, v)?;
                if n == 0 {
                    return Err("mock directive chunk: must be at least 1".to_owned());
                }
                d.chunk = Some(usize::try_from(n).unwrap_or(usize::MAX));
            }
            ("tool_use", Some(v)) => d.tool_uses.push(tool_use(v)?),
            ("die_mid_stream", None) => d.ending = Ending::Die(None),
            ("die_mid_stream", Some(v)) => {
                d.ending = Ending::Die(Some(
                    usize::try_from(number(name, v)?).unwrap_or(usize::MAX),
                ));
            }
            ("stall_after", Some(v)) => {
                d.ending =
                    Ending::StallAfter(usize::try_from(number(name, v)?).unwrap_or(usize::MAX));
            }
            ("hang", None) => d.hang = true,
            ("max_tokens", None) => d.max_tokens = true,
            ("stop_sequence", Some(v)) => d.stop_sequence = Some(v.to_owned()),
            ("stream_error", Some(v)) => d.stream_error = Some(status(name, v)?),
            // Read by the judge mode (see `JudgeSpec`); validated here so a typo fails loudly.
            ("judge", Some(v)) => {
                JudgeSpec::parse(v)?;
            }
            ("judge_reply", Some(v)) => {
                JudgeSpec::parse(v)?;
                d.judge_reply = Some(v.to_owned());
            }
            (
                "reply" | "error" | "error_once" | "retry_after" | "latency_ms" | "stream_delay_ms"
                | "chunk" | "tool_use" | "stall_after" | "stop_sequence" | "stream_error" | "judge"
                | "judge_reply",
                None,
            ) => {
                return Err(format!(
                    "mock directive {name}: a value is required ([[mock:{name}=...]])"
                ));
            }
            ("hang" | "max_tokens", Some(_)) => {
                return Err(format!(
                    "mock directive {name}: takes no value ([[mock:{name}]])"
                ));
            }
            _ => return Err(format!("unknown mock directive `{name}`")),
        }
    }
    Ok(d)
}

/// The marker in a judge request's system prompt that switches the mock to judge mode.
pub const JUDGE_MARKER: &str = "[[palisade:judge]]";

/// Harm categories of a verdict's `scores`, then `policy` (→ `policy_violation`).
pub const JUDGE_CATEGORIES: [&str; 7] = [
    "harassment",
    "hate",
    "sexual",
    "violence",
    "self_harm",
    "dangerous",
    "policy",
];

/// What a judge-mode answer looks like: `judge=violence:0.6,hate:0.1`, `judge=malformed`,
/// `judge=extra_field`, `judge=slow:5000` (items combine with commas).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct JudgeSpec {
    /// Score per category (index into [`JUDGE_CATEGORIES`]); unset ones are 0.
    pub scores: [f64; 7],
    /// Answer prose instead of JSON.
    pub malformed: bool,
    /// Answer JSON with an extra, unknown field.
    pub extra_field: bool,
    /// Sleep this long first.
    pub slow_ms: Option<u64>,
}

impl JudgeSpec {
    pub fn parse(v: &str) -> Result<JudgeSpec, String> {
        let mut out = JudgeSpec::default();
        for item in v.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            match item.split_once(':') {
                None if item == "malformed" => out.malformed = true,
                None if item == "extra_field" => out.extra_field = true,
                Some(("slow", ms)) => out.slow_ms = Some(number("judge slow", ms)?),
                Some((cat, score)) => {
                    let i = JUDGE_CATEGORIES
                        .iter()
                        .position(|c| *c == cat.trim())
                        .ok_or_else(|| {
                            format!(
                                "mock directive judge: unknown category `{cat}` (expected one of {})",
                                JUDGE_CATEGORIES.join(", ")
                            )
                        })?;
                    let s: f64 = score
                        .trim()
                        .parse()
                        .map_err(|_| format!("mock directive judge: `{score}` is not a number"))?;
                    if let Some(slot) = out.scores.get_mut(i) {
                        *slot = s;
                    }
                }
                None => {
                    return Err(format!(
                        "mock directive judge: unknown item `{item}` (CATEGORY:SCORE, slow:MS, malformed, extra_field)"
                    ));
                }
            }
        }
        Ok(out)
    }

    /// The verdict text the judge answers with.
    pub fn verdict_text(&self) -> String {
        if self.malformed {
            return "I am sorry, I cannot rate this text.".to_owned();
        }
        let mut scores = Map::new();
        for (name, s) in JUDGE_CATEGORIES.iter().zip(self.scores).take(6) {
            scores.insert((*name).to_owned(), Value::from(s));
        }
        let mut v = Map::new();
        v.insert("scores".into(), Value::Object(scores));
        v.insert(
            "policy_violation".into(),
            Value::from(self.scores.get(6).copied().unwrap_or(0.0)),
        );
        if self.extra_field {
            v.insert("explanation".into(), Value::from("extra"));
        }
        Value::Object(v).to_string()
    }
}

fn number(name: &str, v: &str) -> Result<u64, String> {
    v.trim()
        .parse()
        .map_err(|_| format!("mock directive {name}: expected a non-negative integer, got `{v}`"))
}

fn status(name: &str, v: &str) -> Result<u16, String> {
    match v.trim().parse::<u16>() {
        Ok(s) if (400..=599).contains(&s) => Ok(s),
        _ => Err(format!(
            "mock directive {name}: expected an HTTP error status 400..=599, got `{v}`"
        )),
    }
}

fn tool_use(v: &str) -> Result<(String, Map<String, Value>), String> {
    let (name, json) = v.split_once(':').unwrap_or((v, ""));
    let name = name.trim();
    if name.is_empty() {
        return Err("mock directive tool_use: expected NAME:JSON".to_owned());
    }
    let json = json.trim();
    if json.is_empty() {
        return Ok((name.to_owned(), Map::new()));
    }
    match serde_json::from_str::<Value>(json) {
        Ok(Value::Object(map)) => Ok((name.to_owned(), map)),
        Ok(_) => Err(format!(
            "mock directive tool_use: input of `{name}` must be a JSON object"
        )),
        Err(e) => Err(format!(
            "mock directive tool_use: input of `{name}` is not JSON: {e}"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_tokens_with_and_without_values() {
        let t = tokens(
            "hi [[mock:reply=a=b c]] x [[mock:hang]] [[mock:tool_use=f:{\"a\":[1,2]}]] [[mock:open",
        );
        assert_eq!(
            t,
            vec![
                ("reply", Some("a=b c")),
                ("hang", None),
                ("tool_use", Some("f:{\"a\":[1,2]}"))
            ]
        );
    }

    #[test]
    fn strips_directives_and_collapses_space() {
        assert_eq!(
            strip("Hello [[mock:chunk=3]] world [[mock:hang]]"),
            "Hello world"
        );
        assert_eq!(strip("[[mock:hang]] only"), "only");
        assert_eq!(strip("no directives"), "no directives");
    }

    #[test]
    fn parses_and_rejects() {
        let d = parse(tokens(
            "[[mock:tool_use=a:{\"x\":1}]][[mock:tool_use=b]][[mock:error_once=529:k1]][[mock:die_mid_stream]]",
        ))
        .unwrap();
        assert_eq!(d.tool_uses.len(), 2);
        assert_eq!(d.tool_uses[1].0, "b");
        assert_eq!(d.error_once, Some((529, "k1".to_owned())));
        assert_eq!(d.ending, Ending::Die(None));
        assert!(parse(tokens("[[mock:nope]]")).is_err());
        assert!(parse(tokens("[[mock:error=200]]")).is_err());
        assert!(parse(tokens("[[mock:tool_use=a:[1]]]")).is_err());
        assert!(parse(tokens("[[mock:chunk=0]]")).is_err());
    }

    #[test]
    fn judge_specs() {
        let s = JudgeSpec::parse("violence:0.6, hate:0.1,slow:20").unwrap();
        assert_eq!(s.scores[3], 0.6);
        assert_eq!(s.scores[1], 0.1);
        assert_eq!(s.slow_ms, Some(20));
        let v: Value = serde_json::from_str(&s.verdict_text()).unwrap();
        assert_eq!(v["scores"]["violence"], 0.6);
        assert_eq!(v["policy_violation"], 0.0);
        assert!(JudgeSpec::parse("malformed").unwrap().malformed);
        assert!(JudgeSpec::parse("nope:1").is_err());
        assert!(JudgeSpec::parse("hate:x").is_err());
        assert!(parse(tokens("[[mock:judge=bogus]]")).is_err());
        let d = parse(tokens("[[mock:judge_reply=policy:0.9]]")).unwrap();
        assert_eq!(d.judge_reply.as_deref(), Some("policy:0.9"));
    }
}
