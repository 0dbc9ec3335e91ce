//! Pieces of `palisade-load` that are worth testing on their own: the built-in request body,
//! the latency summary and the SSE event clock. The binary (`src/main.rs`) does the I/O.

#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used, clippy::panic))]

use serde::Serialize;
use serde_json::{Map, Value};

/// Errors while preparing a run (never during one: those are counted, not raised).
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("body is not a JSON object, so `stream` cannot be set in it: {0}")]
    BodyNotObject(String),
    #[error("body is not valid JSON: {0}")]
    BodyJson(#[from] serde_json::Error),
}

/// Model name of the built-in body; the mock accepts any.
pub const DEFAULT_MODEL: &str = "claude-sonnet-4-5";

/// Text of exactly `bytes` ASCII bytes that reads like a chat prompt. Deterministic, so every
/// lane and every run sends the same bytes; no `[[mock:` directives, so the mock echoes it.
pub fn prompt_text(bytes: usize) -> String {
    const SENTENCES: [&str; 6] = [
        "Please review the following quarterly report and summarise the main risks. ",
        "The revenue grew in every region except the north, where two large contracts ended. ",
        "Operating costs rose because of new hires in support and a data centre move. ",
        "List the three actions you would take first and explain the reasoning briefly. ",
        "Keep the answer short, use plain language, and avoid repeating the figures. ",
        "Mention anything that looks inconsistent between the tables and the text. ",
    ];
    let mut out = String::with_capacity(bytes + 128);
    let mut i = 0usize;
    while out.len() < bytes {
        out.push_str(SENTENCES[i % SENTENCES.len()]);
        i += 1;
    }
    out.truncate(bytes);
    out
}

/// The built-in Messages request: one user turn carrying a `prompt_bytes` prompt.
pub fn builtin_body(prompt_bytes: usize, stream: bool) -> Vec<u8> {
    let mut body = Map::new();
    body.insert("model".into(), Value::from(DEFAULT_MODEL));
    body.insert("max_tokens".into(), Value::from(1024));
    body.insert(
        "messages".into(),
        serde_json::json!([{ "role": "user", "content": prompt_text(prompt_bytes) }]),
    );
    if stream {
        body.insert("stream".into(), Value::Bool(true));
    }
    Value::Object(body).to_string().into_bytes()
}

/// Sets `"stream": true` in a body read from a file (used with `--stream`).
pub fn with_stream(body: &[u8]) -> Result<Vec<u8>, LoadError> {
    let mut v: Value = serde_json::from_slice(body)?;
    let Some(obj) = v.as_object_mut() else {
        return Err(LoadError::BodyNotObject(
            String::from_utf8_lossy(body).chars().take(60).collect(),
        ));
    };
    obj.insert("stream".into(), Value::Bool(true));
    Ok(v.to_string().into_bytes())
}

/// Percentiles of a set of durations, in microseconds.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Summary {
    pub count: u64,
    pub mean_us: f64,
    pub min_us: f64,
    pub p50_us: f64,
    pub p90_us: f64,
    pub p99_us: f64,
    pub p999_us: f64,
    pub max_us: f64,
}

/// Nearest-rank percentile of an ascending slice (`p` in 0..=100); 0 for an empty slice.
pub fn percentile(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let n = sorted.len();
    let rank = ((p / 100.0) * n as f64).ceil() as usize;
    sorted[rank.clamp(1, n) - 1]
}

fn us(ns: u64) -> f64 {
    // One decimal: sub-microsecond digits are noise on this machine.
    (ns as f64 / 100.0).round() / 10.0
}

/// Sorts `ns` (nanoseconds) in place and summarises it. Every sample is kept (no bucketing),
/// so the percentiles are exact.
pub fn summarize(ns: &mut [u64]) -> Summary {
    ns.sort_unstable();
    let n = ns.len();
    if n == 0 {
        return Summary::default();
    }
    let sum: u128 = ns.iter().map(|&x| u128::from(x)).sum();
    Summary {
        count: n as u64,
        mean_us: us((sum / n as u128) as u64),
        min_us: us(ns[0]),
        p50_us: us(percentile(ns, 50.0)),
        p90_us: us(percentile(ns, 90.0)),
        p99_us: us(percentile(ns, 99.0)),
        p999_us: us(percentile(ns, 99.9)),
        max_us: us(ns[n - 1]),
    }
}

/// Follows an SSE body chunk by chunk: when the first complete event arrived, when the first
/// token did (the chunk carrying the first `content_block_delta`), the longest gap between
/// two events, and whether the stream ended properly (`message_stop`) or carried an `error`
/// event. Chunk boundaries may fall anywhere, including inside `\r\n\r\n`.
#[derive(Debug, Default)]
pub struct EventClock {
    events: u64,
    newline_run: bool,
    first_event_ns: Option<u64>,
    first_delta_ns: Option<u64>,
    last_event_ns: u64,
    max_gap_ns: u64,
    tail: Vec<u8>,
    saw_stop: bool,
    saw_error: bool,
}

const STOP_MARK: &[u8] = b"event: message_stop";
const ERROR_MARK: &[u8] = b"event: error";
/// In the `event:` line and in the data's `"type"`, so either framing is recognised.
const DELTA_MARK: &[u8] = b"content_block_delta";

impl EventClock {
    /// Feeds one chunk that arrived `at_ns` after the request was sent.
    pub fn feed(&mut self, chunk: &[u8], at_ns: u64) {
        for &b in chunk {
            match b {
                b'\n' if self.newline_run => {
                    self.newline_run = false;
                    self.event_done(at_ns);
                }
                b'\n' => self.newline_run = true,
                b'\r' => {}
                _ => self.newline_run = false,
            }
        }
        // Markers may straddle chunks: search the previous chunk's tail joined to this one.
        let keep = STOP_MARK.len().max(ERROR_MARK.len()).max(DELTA_MARK.len());
        self.tail.extend_from_slice(chunk);
        if self.first_delta_ns.is_none() && contains(&self.tail, DELTA_MARK) {
            self.first_delta_ns = Some(at_ns);
        }
        if contains(&self.tail, STOP_MARK) {
            self.saw_stop = true;
        }
        if contains(&self.tail, ERROR_MARK) {
            self.saw_error = true;
        }
        if self.tail.len() > keep {
            let cut = self.tail.len() - keep;
            self.tail.drain(..cut);
        }
    }

    fn event_done(&mut self, at_ns: u64) {
        self.events += 1;
        match self.first_event_ns {
            None => self.first_event_ns = Some(at_ns),
            Some(_) => {
                self.max_gap_ns = self
                    .max_gap_ns
                    .max(at_ns.saturating_sub(self.last_event_ns));
            }
        }
        self.last_event_ns = at_ns;
    }

    pub fn events(&self) -> u64 {
        self.events
    }
    pub fn first_event_ns(&self) -> Option<u64> {
        self.first_event_ns
    }
    /// When the chunk carrying the first `content_block_delta` (the first token) arrived.
    pub fn first_delta_ns(&self) -> Option<u64> {
        self.first_delta_ns
    }
    pub fn max_gap_ns(&self) -> u64 {
        self.max_gap_ns
    }
    /// A stream is complete when it reached `message_stop` without an `error` event.
    pub fn complete(&self) -> bool {
        self.saw_stop && !self.saw_error
    }
    pub fn saw_error(&self) -> bool {
        self.saw_error
    }
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prompt_has_exact_size_and_body_parses() {
        assert_eq!(prompt_text(4096).len(), 4096);
        let v: Value = serde_json::from_slice(&builtin_body(4096, false)).unwrap();
        assert_eq!(
            v["messages"][0]["content"].as_str().unwrap().len(),
            4096,
            "prompt is 4 KB"
        );
        assert!(v.get("stream").is_none());
        let v: Value = serde_json::from_slice(&builtin_body(10, true)).unwrap();
        assert_eq!(v["stream"], Value::Bool(true));
        assert!(!prompt_text(4096).contains("[[mock:"));
    }

    #[test]
    fn stream_flag_is_set_in_file_bodies() {
        let b = with_stream(br#"{"model":"m","max_tokens":1,"messages":[]}"#).unwrap();
        let v: Value = serde_json::from_slice(&b).unwrap();
        assert_eq!(v["stream"], Value::Bool(true));
        assert_eq!(v["model"], "m");
        assert!(with_stream(b"[1]").is_err());
        assert!(with_stream(b"nope").is_err());
    }

    #[test]
    fn nearest_rank_percentiles() {
        let mut v: Vec<u64> = (1..=100).rev().map(|x| x * 1000).collect();
        let s = summarize(&mut v);
        assert_eq!(s.count, 100);
        assert_eq!(s.p50_us, 50.0);
        assert_eq!(s.p90_us, 90.0);
        assert_eq!(s.p99_us, 99.0);
        assert_eq!(s.max_us, 100.0);
        assert_eq!(s.min_us, 1.0);
        assert_eq!(s.mean_us, 50.5);
        assert_eq!(summarize(&mut []), Summary::default());
        assert_eq!(percentile(&[7], 99.9), 7);
    }

    #[test]
    fn first_token_is_the_chunk_with_the_first_delta() {
        let stream = b"event: message_start\ndata: {}\n\nevent: content_block_delta\ndata: {}\n\n";
        for split in 1..stream.len() {
            let mut c = EventClock::default();
            c.feed(&stream[..split], 10);
            c.feed(&stream[split..], 50);
            let expect = if split >= 57 { 10 } else { 50 };
            assert_eq!(c.first_delta_ns(), Some(expect), "split at {split}");
        }
        let mut c = EventClock::default();
        c.feed(b"event: message_start\ndata: {}\n\n", 10);
        assert_eq!(c.first_delta_ns(), None);
    }

    #[test]
    fn event_clock_across_chunk_splits() {
        let stream = b"event: message_start\ndata: {}\n\nevent: ping\r\ndata: {}\r\n\r\nevent: message_stop\ndata: {}\n\n";
        for split in 1..stream.len() {
            let mut c = EventClock::default();
            c.feed(&stream[..split], 10);
            c.feed(&stream[split..], 50);
            assert_eq!(c.events(), 3, "split at {split}");
            assert!(c.complete(), "split at {split}");
            assert!(c.first_event_ns().is_some());
        }
        let mut c = EventClock::default();
        c.feed(b"event: a\ndata: 1\n\n", 100);
        c.feed(b"event: b\ndata: 1\n\n", 400);
        c.feed(b"event: error\ndata: {}\n\n", 450);
        assert_eq!(c.first_event_ns(), Some(100));
        assert_eq!(c.max_gap_ns(), 300);
        assert!(c.saw_error());
        assert!(!c.complete());
    }
}
