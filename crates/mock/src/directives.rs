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
            // Reserved for the moderation judge of a later issue; accepted so tests can start using it.
            ("judge", _) => {}
            (
                "reply" | "error" | "error_once" | "retry_after" | "latency_ms" | "stream_delay_ms"
                | "chunk" | "tool_use" | "stall_after" | "stop_sequence" | "stream_error",
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
}
