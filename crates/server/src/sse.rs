//! Incremental Server-Sent Events framing for upstream streams. Events are cut at the
//! blank line that ends them; an event larger than the configured bound is an error
//! rather than unbounded buffering.

use bytes::{Buf, Bytes, BytesMut};

#[derive(Debug, Clone, PartialEq)]
pub struct SseEvent {
    /// The `event:` field (empty when absent).
    pub event: String,
    /// The `data:` lines joined by `\n`.
    pub data: String,
    /// The exact bytes of the event, terminator included, for relaying unchanged.
    pub raw: Bytes,
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum SseError {
    #[error("upstream stream event larger than {0} bytes")]
    TooLarge(usize),
    #[error("upstream stream is not valid UTF-8")]
    NotUtf8,
}

pub struct SseParser {
    buf: BytesMut,
    max_event: usize,
    /// Bytes already searched for a terminator, so a slow stream is not rescanned.
    scanned: usize,
}

impl SseParser {
    pub fn new(max_event: usize) -> Self {
        Self {
            buf: BytesMut::new(),
            max_event,
            scanned: 0,
        }
    }

    /// Adds bytes and returns every event completed by them.
    pub fn push(&mut self, chunk: &[u8]) -> Result<Vec<SseEvent>, SseError> {
        self.buf.extend_from_slice(chunk);
        let mut out = Vec::new();
        loop {
            let Some((end, term)) = find_terminator(&self.buf, self.scanned.saturating_sub(3))
            else {
                self.scanned = self.buf.len();
                if self.buf.len() > self.max_event {
                    return Err(SseError::TooLarge(self.max_event));
                }
                return Ok(out);
            };
            if end > self.max_event {
                return Err(SseError::TooLarge(self.max_event));
            }
            let raw = self.buf.split_to(end + term).freeze();
            self.scanned = 0;
            if let Some(ev) = parse_event(raw)? {
                out.push(ev);
            }
        }
    }

    /// Whatever is left when the upstream closes; a complete stream leaves nothing.
    pub fn remainder(&self) -> usize {
        self.buf.remaining()
    }
}

/// Position of the first blank line at or after `from`: (index, terminator length).
fn find_terminator(buf: &[u8], from: usize) -> Option<(usize, usize)> {
    let mut i = from;
    while i < buf.len() {
        let b = buf[i];
        if b == b'\n' {
            if buf.get(i + 1) == Some(&b'\n') {
                return Some((i, 2));
            }
            if buf.get(i + 1) == Some(&b'\r') && buf.get(i + 2) == Some(&b'\n') {
                return Some((i, 3));
            }
        }
        i += 1;
    }
    None
}

fn parse_event(raw: Bytes) -> Result<Option<SseEvent>, SseError> {
    let text = std::str::from_utf8(&raw).map_err(|_| SseError::NotUtf8)?;
    let mut event = String::new();
    let mut data: Option<String> = None;
    for line in text.lines() {
        let line = line.strip_suffix('\r').unwrap_or(line);
        if line.is_empty() || line.starts_with(':') {
            continue;
        }
        let (field, value) = match line.split_once(':') {
            Some((f, v)) => (f, v.strip_prefix(' ').unwrap_or(v)),
            None => (line, ""),
        };
        match field {
            "event" => event = value.to_string(),
            "data" => match &mut data {
                Some(d) => {
                    d.push('\n');
                    d.push_str(value);
                }
                None => data = Some(value.to_string()),
            },
            _ => {}
        }
    }
    if event.is_empty() && data.is_none() {
        return Ok(None);
    }
    Ok(Some(SseEvent {
        event,
        data: data.unwrap_or_default(),
        raw,
    }))
}

/// Encodes one event the way Anthropic's API does.
pub fn encode(event: &str, data: &str) -> Bytes {
    Bytes::from(format!("event: {event}\ndata: {data}\n\n"))
}

#[cfg(test)]
mod tests {
    use super::*;

    const STREAM: &str = "event: message_start\ndata: {\"a\":1}\n\nevent: ping\ndata: {}\n\n: comment\n\nevent: message_stop\r\ndata: {\"b\":2}\r\n\r\n";

    #[test]
    fn any_chunking_gives_the_same_events() {
        let whole = SseParser::new(1 << 20).push(STREAM.as_bytes()).unwrap();
        assert_eq!(whole.len(), 3);
        assert_eq!(whole[0].event, "message_start");
        assert_eq!(whole[2].data, "{\"b\":2}");
        for size in 1..STREAM.len() {
            let mut p = SseParser::new(1 << 20);
            let mut got = Vec::new();
            for c in STREAM.as_bytes().chunks(size) {
                got.extend(p.push(c).unwrap());
            }
            assert_eq!(got, whole, "chunk size {size}");
            assert_eq!(p.remainder(), 0);
        }
    }

    #[test]
    fn oversized_event_is_an_error() {
        let mut p = SseParser::new(1024);
        let big = format!("event: x\ndata: {}", "a".repeat(2000));
        assert_eq!(p.push(big.as_bytes()), Err(SseError::TooLarge(1024)));
        let mut p = SseParser::new(1024);
        let big = format!("event: x\ndata: {}\n\n", "a".repeat(2000));
        assert_eq!(p.push(big.as_bytes()), Err(SseError::TooLarge(1024)));
    }

    #[test]
    fn multi_line_data_is_joined() {
        let mut p = SseParser::new(1024);
        let ev = p.push(b"data: a\ndata: b\n\n").unwrap();
        assert_eq!(ev[0].data, "a\nb");
        assert_eq!(ev[0].event, "");
    }
}
