//! Anthropic Messages API wire shapes: request reading, validation, responses, SSE events.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use serde_json::{Map, Value, json};

use crate::directives::{self, Directives};

/// Top-level fields the real `POST /v1/messages` accepts; anything else is a 400, which is
/// how the mock catches a gateway that forwards fields it should have stripped.
const MESSAGES_FIELDS: &[&str] = &[
    "model",
    "messages",
    "max_tokens",
    "system",
    "metadata",
    "stop_sequences",
    "stream",
    "temperature",
    "top_k",
    "top_p",
    "tools",
    "tool_choice",
    "thinking",
    "service_tier",
    "container",
    "context_management",
    "mcp_servers",
    "output_config",
    "output_format",
    "inference_geo",
];

/// Top-level fields of `POST /v1/messages/count_tokens` (no `max_tokens`, no `stream`).
const COUNT_FIELDS: &[&str] = &[
    "model",
    "messages",
    "system",
    "tools",
    "tool_choice",
    "thinking",
    "context_management",
    "mcp_servers",
    "output_config",
    "output_format",
];

/// Which endpoint a body is validated for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    Messages,
    CountTokens,
}

/// Validates a request body the way the real API does for the basic cases, returning the
/// `invalid_request_error` message on failure.
pub fn validate(body: &Value, endpoint: Endpoint) -> Result<(), String> {
    let Value::Object(obj) = body else {
        return Err("Input should be a valid dictionary or object".to_owned());
    };
    let allowed = match endpoint {
        Endpoint::Messages => MESSAGES_FIELDS,
        Endpoint::CountTokens => COUNT_FIELDS,
    };
    if let Some(extra) = obj.keys().find(|k| !allowed.contains(&k.as_str())) {
        return Err(format!("{extra}: Extra inputs are not permitted"));
    }
    match obj.get("model") {
        None => return Err("model: Field required".to_owned()),
        Some(Value::String(_)) => {}
        Some(_) => return Err("model: Input should be a valid string".to_owned()),
    }
    if endpoint == Endpoint::Messages {
        match obj.get("max_tokens") {
            None => return Err("max_tokens: Field required".to_owned()),
            Some(v) => match v.as_i64() {
                Some(n) if n >= 1 => {}
                Some(_) => {
                    return Err("max_tokens: Input should be greater than or equal to 1".to_owned());
                }
                None => return Err("max_tokens: Input should be a valid integer".to_owned()),
            },
        }
        if let Some(s) = obj.get("stream")
            && !s.is_boolean()
        {
            return Err("stream: Input should be a valid boolean".to_owned());
        }
    }
    let messages = match obj.get("messages") {
        None => return Err("messages: Field required".to_owned()),
        Some(Value::Array(m)) => m,
        Some(_) => return Err("messages: Input should be a valid list".to_owned()),
    };
    if messages.is_empty() {
        return Err("messages: at least one message is required".to_owned());
    }
    for (i, m) in messages.iter().enumerate() {
        let Value::Object(m) = m else {
            return Err(format!(
                "messages.{i}: Input should be a valid dictionary or object"
            ));
        };
        match m.get("role").and_then(Value::as_str) {
            Some("user" | "assistant") => {}
            Some(_) => {
                return Err(format!(
                    "messages.{i}.role: Input should be 'user' or 'assistant'"
                ));
            }
            None => return Err(format!("messages.{i}.role: Field required")),
        }
        match m.get("content") {
            Some(Value::String(_) | Value::Array(_)) => {}
            Some(_) => {
                return Err(format!(
                    "messages.{i}.content: Input should be a valid string or list"
                ));
            }
            None => return Err(format!("messages.{i}.content: Field required")),
        }
    }
    match obj.get("system") {
        None | Some(Value::String(_) | Value::Array(_)) => {}
        Some(_) => return Err("system: Input should be a valid string or list".to_owned()),
    }
    if let Some(t) = obj.get("tools")
        && !t.is_array()
    {
        return Err("tools: Input should be a valid list".to_owned());
    }
    Ok(())
}

/// Texts of the system prompt (string or text blocks).
fn system_texts(body: &Value) -> Vec<&str> {
    match body.get("system") {
        Some(Value::String(s)) => vec![s.as_str()],
        Some(Value::Array(blocks)) => blocks.iter().filter_map(block_text).collect(),
        _ => Vec::new(),
    }
}

fn block_text(block: &Value) -> Option<&str> {
    if block.get("type").and_then(Value::as_str) == Some("text") {
        block.get("text").and_then(Value::as_str)
    } else {
        None
    }
}

fn last_user_message(body: &Value) -> Option<&Value> {
    body.get("messages")?
        .as_array()?
        .iter()
        .rev()
        .find(|m| m.get("role").and_then(Value::as_str) == Some("user"))
}

/// Text of the last user message: its string content or its text blocks. Directives are
/// read only from these (and the system prompt), as documented.
fn last_user_texts(body: &Value) -> Vec<&str> {
    match last_user_message(body).and_then(|m| m.get("content")) {
        Some(Value::String(s)) => vec![s.as_str()],
        Some(Value::Array(blocks)) => blocks.iter().filter_map(block_text).collect(),
        _ => Vec::new(),
    }
}

/// What the echo reply repeats: the last user message's text blocks and, so that a tool
/// round trip shows what the tool result looked like after the gateway, its tool results.
fn last_user_echo(body: &Value) -> String {
    let mut parts: Vec<&str> = Vec::new();
    match last_user_message(body).and_then(|m| m.get("content")) {
        Some(Value::String(s)) => parts.push(s),
        Some(Value::Array(blocks)) => {
            for b in blocks {
                match b.get("type").and_then(Value::as_str) {
                    Some("text") => parts.extend(b.get("text").and_then(Value::as_str)),
                    Some("tool_result") => match b.get("content") {
                        Some(Value::String(s)) => parts.push(s),
                        Some(Value::Array(inner)) => {
                            parts.extend(inner.iter().filter_map(block_text))
                        }
                        _ => {}
                    },
                    _ => {}
                }
            }
        }
        _ => {}
    }
    directives::strip(&parts.join("\n"))
}

/// Whether this is a moderation judge request (its system prompt carries the marker).
pub fn is_judge_request(body: &Value) -> bool {
    system_texts(body)
        .iter()
        .any(|s| s.contains(directives::JUDGE_MARKER))
}

/// The judge directive of a judge request: the last `[[mock:judge=…]]` in the last user
/// message (the text being judged). Every other directive there is ignored: it was meant
/// for the main call, not for the judge.
pub fn judge_spec_of(body: &Value) -> Result<directives::JudgeSpec, String> {
    let mut spec = None;
    for t in last_user_texts(body) {
        for (name, value) in directives::tokens(t) {
            if name == "judge"
                && let Some(v) = value
            {
                spec = Some(v);
            }
        }
    }
    spec.map_or_else(|| Ok(Default::default()), directives::JudgeSpec::parse)
}

/// Directives from the system prompt, then the last user message (so the user's win).
pub fn directives_of(body: &Value) -> Result<Directives, String> {
    let system = system_texts(body);
    let user = last_user_texts(body);
    directives::parse(system.into_iter().chain(user).flat_map(directives::tokens))
}

/// Deterministic token estimate: a quarter of the characters of everything the model
/// would read (system, messages, tools), at least 1.
pub fn estimate_input_tokens(body: &Value) -> u64 {
    let mut chars = 0usize;
    for s in system_texts(body) {
        chars += s.chars().count();
    }
    if let Some(messages) = body.get("messages").and_then(Value::as_array) {
        for m in messages {
            match m.get("content") {
                Some(Value::String(s)) => chars += s.chars().count(),
                Some(Value::Array(blocks)) => {
                    for b in blocks {
                        chars += match b.get("type").and_then(Value::as_str) {
                            Some("text") => b
                                .get("text")
                                .and_then(Value::as_str)
                                .map_or(0, |s| s.chars().count()),
                            Some("tool_result") => match b.get("content") {
                                Some(Value::String(s)) => s.chars().count(),
                                Some(Value::Array(inner)) => inner
                                    .iter()
                                    .filter_map(block_text)
                                    .map(|s| s.chars().count())
                                    .sum(),
                                _ => 0,
                            },
                            Some("image" | "document") => 4000,
                            _ => b.to_string().chars().count(),
                        };
                    }
                }
                _ => {}
            }
        }
    }
    if let Some(tools) = body.get("tools").and_then(Value::as_array) {
        for t in tools {
            chars += t.to_string().chars().count();
        }
    }
    tokens_of_chars(chars)
}

fn tokens_of_chars(chars: usize) -> u64 {
    u64::try_from(chars.div_ceil(4)).unwrap_or(u64::MAX).max(1)
}

/// One planned reply, shared by the JSON and the SSE renderings so they always agree.
#[derive(Debug, Clone)]
pub struct Reply {
    pub id: String,
    pub model: String,
    pub text: String,
    pub tool_uses: Vec<(String, String, Map<String, Value>)>,
    pub stop_reason: &'static str,
    pub stop_sequence: Option<String>,
    pub input_tokens: u64,
    pub output_tokens: u64,
}

impl Reply {
    pub fn plan(body: &Value, d: &Directives) -> Self {
        let mut text = match &d.reply {
            Some(r) => r.clone(),
            None => format!("You said: {}", last_user_echo(body)),
        };
        if let Some(spec) = &d.judge_reply {
            text.push_str(&format!(" [[mock:judge={spec}]]"));
        }
        let tool_uses: Vec<_> = if d.max_tokens {
            Vec::new()
        } else {
            d.tool_uses
                .iter()
                .map(|(name, input)| (new_id("toolu_"), name.clone(), input.clone()))
                .collect()
        };
        let (stop_reason, stop_sequence) = if d.max_tokens {
            ("max_tokens", None)
        } else if !tool_uses.is_empty() {
            ("tool_use", None)
        } else if let Some(s) = &d.stop_sequence {
            ("stop_sequence", Some(s.clone()))
        } else {
            ("end_turn", None)
        };
        let out_chars = text.chars().count()
            + tool_uses
                .iter()
                .map(|(_, name, input)| name.len() + Value::Object(input.clone()).to_string().len())
                .sum::<usize>();
        Self {
            id: new_id("msg_"),
            model: body
                .get("model")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned(),
            text,
            tool_uses,
            stop_reason,
            stop_sequence,
            input_tokens: estimate_input_tokens(body),
            output_tokens: tokens_of_chars(out_chars),
        }
    }

    /// Whether the text block is emitted: always, unless it is empty and tool calls follow.
    fn has_text_block(&self) -> bool {
        !self.text.is_empty() || self.tool_uses.is_empty()
    }

    /// The non-streaming response body.
    pub fn message_json(&self) -> Value {
        let mut content = Vec::new();
        if self.has_text_block() {
            content.push(json!({"type": "text", "text": self.text}));
        }
        for (id, name, input) in &self.tool_uses {
            content.push(json!({"type": "tool_use", "id": id, "name": name, "input": input}));
        }
        json!({
            "id": self.id,
            "type": "message",
            "role": "assistant",
            "model": self.model,
            "content": content,
            "stop_reason": self.stop_reason,
            "stop_sequence": self.stop_sequence,
            "usage": {
                "input_tokens": self.input_tokens,
                "cache_creation_input_tokens": 0,
                "cache_read_input_tokens": 0,
                "output_tokens": self.output_tokens,
            },
        })
    }

    /// The SSE events of the streamed response, in the real API's order, each already framed.
    /// Also returns the index just after the first half of the first block's deltas, the
    /// default point where `die_mid_stream` / `stream_error` strike.
    pub fn sse_events(
        &self,
        chunk: Option<usize>,
        stream_error: Option<(u16, &str)>,
    ) -> (Vec<Bytes>, usize) {
        let mut ev = Vec::new();
        ev.push(sse(
            "message_start",
            &json!({
                "type": "message_start",
                "message": {
                    "id": self.id,
                    "type": "message",
                    "role": "assistant",
                    "model": self.model,
                    "content": [],
                    "stop_reason": null,
                    "stop_sequence": null,
                    "usage": {
                        "input_tokens": self.input_tokens,
                        "cache_creation_input_tokens": 0,
                        "cache_read_input_tokens": 0,
                        "output_tokens": 1,
                    },
                },
            }),
        ));
        let mut index = 0usize;
        let mut midpoint = 0usize;
        let mut pinged = false;
        let mut ping = |ev: &mut Vec<Bytes>| {
            if !pinged {
                pinged = true;
                ev.push(sse("ping", &json!({"type": "ping"})));
            }
        };
        if self.has_text_block() {
            ev.push(sse(
                "content_block_start",
                &json!({"type": "content_block_start", "index": index, "content_block": {"type": "text", "text": ""}}),
            ));
            ping(&mut ev);
            let pieces = split_text(&self.text, chunk);
            let half = pieces.len().div_ceil(2);
            for (i, piece) in pieces.iter().enumerate() {
                if i == half {
                    midpoint = ev.len();
                }
                ev.push(sse(
                    "content_block_delta",
                    &json!({"type": "content_block_delta", "index": index, "delta": {"type": "text_delta", "text": piece}}),
                ));
            }
            if midpoint == 0 {
                midpoint = ev.len();
            }
            if let Some((status, message)) = stream_error {
                ev.truncate(midpoint);
                ev.push(sse("error", &error_json(status, message)));
                return (ev, midpoint);
            }
            ev.push(sse(
                "content_block_stop",
                &json!({"type": "content_block_stop", "index": index}),
            ));
            index += 1;
        }
        for (id, name, input) in &self.tool_uses {
            ev.push(sse(
                "content_block_start",
                &json!({
                    "type": "content_block_start",
                    "index": index,
                    "content_block": {"type": "tool_use", "id": id, "name": name, "input": {}},
                }),
            ));
            ping(&mut ev);
            if midpoint == 0 {
                // After the opening empty fragment and one real piece.
                midpoint = ev.len() + 2;
            }
            let input = Value::Object(input.clone()).to_string();
            let step = chunk.unwrap_or_else(|| input.chars().count().div_ceil(3).max(1));
            // The real API opens every tool input with an empty fragment.
            let mut pieces = vec![""];
            pieces.extend(split_chars(&input, step));
            for piece in pieces {
                ev.push(sse(
                    "content_block_delta",
                    &json!({"type": "content_block_delta", "index": index, "delta": {"type": "input_json_delta", "partial_json": piece}}),
                ));
            }
            ev.push(sse(
                "content_block_stop",
                &json!({"type": "content_block_stop", "index": index}),
            ));
            index += 1;
        }
        if let Some((status, message)) = stream_error {
            ev.truncate(midpoint.min(ev.len()));
            ev.push(sse("error", &error_json(status, message)));
            return (ev, midpoint);
        }
        ev.push(sse(
            "message_delta",
            &json!({
                "type": "message_delta",
                "delta": {"stop_reason": self.stop_reason, "stop_sequence": self.stop_sequence},
                "usage": {"output_tokens": self.output_tokens},
            }),
        ));
        ev.push(sse("message_stop", &json!({"type": "message_stop"})));
        (ev, midpoint.max(1))
    }
}

/// Frames one SSE event exactly as the real API does: `event:` line, `data:` line, blank line.
fn sse(event: &str, data: &Value) -> Bytes {
    Bytes::from(format!("event: {event}\ndata: {data}\n\n"))
}

/// Text deltas: `chunk` characters each when asked, else about three words each.
fn split_text(text: &str, chunk: Option<usize>) -> Vec<&str> {
    if let Some(n) = chunk {
        return split_chars(text, n);
    }
    let mut out = Vec::new();
    let mut start = 0;
    let mut words = 0;
    let mut prev_ws = false;
    for (i, c) in text.char_indices() {
        let ws = c.is_whitespace();
        if !ws && prev_ws {
            words += 1;
            if words == 3 {
                out.push(&text[start..i]);
                start = i;
                words = 0;
            }
        }
        prev_ws = ws;
    }
    if start < text.len() {
        out.push(&text[start..]);
    }
    out
}

/// Pieces of `n` characters (never splitting a UTF-8 character).
fn split_chars(text: &str, n: usize) -> Vec<&str> {
    let n = n.max(1);
    let mut out = Vec::new();
    let mut start = 0;
    for (count, (i, _)) in text.char_indices().enumerate() {
        if count > 0 && count % n == 0 {
            out.push(&text[start..i]);
            start = i;
        }
    }
    if start < text.len() {
        out.push(&text[start..]);
    }
    out
}

/// The Anthropic error `type` for an HTTP status.
pub fn error_type(status: u16) -> &'static str {
    match status {
        400 => "invalid_request_error",
        401 => "authentication_error",
        402 => "billing_error",
        403 => "permission_error",
        404 => "not_found_error",
        413 => "request_too_large",
        429 => "rate_limit_error",
        500 => "api_error",
        504 => "timeout_error",
        529 => "overloaded_error",
        s if s >= 500 => "api_error",
        _ => "invalid_request_error",
    }
}

/// The message the real API uses for a status, for errors a directive forces.
pub fn default_message(status: u16) -> &'static str {
    match status {
        401 => "invalid x-api-key",
        403 => "Your API key does not have permission to use the specified resource.",
        404 => "Not found",
        413 => "Request exceeds the maximum allowed number of bytes.",
        429 => "Number of request tokens has exceeded your per-minute rate limit",
        500 => "Internal server error",
        529 => "Overloaded",
        s if s >= 500 => "Internal server error",
        _ => "Invalid request",
    }
}

/// `{"type":"error","error":{...}}` as used in SSE `error` events.
pub fn error_json(status: u16, message: &str) -> Value {
    json!({"type": "error", "error": {"type": error_type(status), "message": message}})
}

/// Ids shaped like the real ones (`msg_`, `toolu_`, `req_` + 24 base62 characters), unique per
/// process without a random-number dependency.
pub fn new_id(prefix: &str) -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    static SEED: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    let seed = *SEED.get_or_init(|| {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        (nanos as u64) ^ (u64::from(std::process::id()) << 32)
    });
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let a = splitmix(seed ^ n.wrapping_mul(0x9E37_79B9_7F4A_7C15));
    let mut words = [a, splitmix(a ^ n), splitmix(a.rotate_left(17) ^ n)];
    const ALPHABET: &[u8] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
    let mut id = String::with_capacity(prefix.len() + 24);
    id.push_str(prefix);
    // 8 characters per 64-bit word keeps every character uniformly random.
    for i in 0..24 {
        let x = &mut words[i / 8];
        id.push(char::from(ALPHABET[(*x % 62) as usize]));
        *x /= 62;
    }
    id
}

fn splitmix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_words_and_chars() {
        assert_eq!(
            split_text("a b c d e f g", None),
            vec!["a b c ", "d e f ", "g"]
        );
        assert_eq!(split_text("héllo", Some(2)), vec!["hé", "ll", "o"]);
        assert!(split_text("", None).is_empty());
    }

    #[test]
    fn validates_like_the_api() {
        let ok =
            json!({"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]});
        assert!(validate(&ok, Endpoint::Messages).is_ok());
        let mut extra = ok.clone();
        extra["safety_settings"] = json!([]);
        assert_eq!(
            validate(&extra, Endpoint::Messages).unwrap_err(),
            "safety_settings: Extra inputs are not permitted"
        );
        assert_eq!(
            validate(&ok, Endpoint::CountTokens).unwrap_err(),
            "max_tokens: Extra inputs are not permitted"
        );
    }

    #[test]
    fn ids_are_distinct_and_shaped() {
        let a = new_id("msg_");
        let b = new_id("msg_");
        assert_ne!(a, b);
        assert_eq!(a.len(), 28);
    }
}
