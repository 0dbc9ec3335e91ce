//! Streaming: redact a response that arrives in deltas exactly as if it had arrived whole,
//! and restore pseudonyms split across deltas.

use std::borrow::Borrow;
use std::collections::BTreeMap;
use std::sync::Arc;

use crate::apply::{MAX_PLACEHOLDER, placeholder_char};
use crate::{Action, Entity, Finding, Pseudonymizer, Scanner, SummaryEntry, apply};

/// Bytes of new text to collect before rescanning the window once text has been
/// released: every byte of it is latency a reader sees, every rescan costs a scan of the
/// look-behind and held text (a few hundred bytes).
const STREAM_BATCH: usize = 32;

/// Until the first text is released, the rescan step is a quarter of what is pending, at
/// most a batch: a short first answer is rescanned at every delta, so the first text goes
/// out as soon as the hold-back allows (time to first token), while a long held start (a
/// key block, a run of numbers) is not rescanned per delta.
const FIRST_STEP_DIV: usize = 4;

/// Boxed action chooser, the default for [`StreamRedactor`].
pub type ActionFn = Box<dyn Fn(&Finding) -> Option<Action> + Send + Sync>;

/// Hold-back redactor for streamed text.
///
/// Text is released only when no finding can still straddle it: the scanner's
/// [`Scanner::safe_prefix`] keeps back whatever could still become part of a match: from
/// the first possible start of a space-containing match among the last few hundred bytes
/// (a digit, a key assignment, a key block's BEGIN line; all of it with keyword lists or custom
/// patterns), any unfinished token (URL, key, JWT — bounded), and any finding that
/// reaches into the held part. Detectors only look at a bounded neighbourhood, and the
/// already-released tail is kept as look-behind context, so for any chunking the
/// concatenated output equals [`apply`] on the whole text (injection findings aside,
/// which never rewrite text; custom regexes with unbounded matches are best effort).
pub struct StreamRedactor<F = ActionFn> {
    scanner: Arc<Scanner>,
    action_for: F,
    pseudo: Pseudonymizer,
    /// Look-behind context followed by unreleased text.
    buf: String,
    /// Start of the unreleased part in `buf`.
    base: usize,
    /// Stream offset of `buf[0]`.
    offset: usize,
    blocked: Vec<Finding>,
    counts: BTreeMap<(String, Entity, Action), usize>,
    max_injection: f32,
    /// Rescan once more than this many bytes are pending (see `push`).
    next_scan: usize,
}

impl<F: Fn(&Finding) -> Option<Action>> StreamRedactor<F> {
    pub fn new(scanner: Arc<Scanner>, action_for: F, pseudo: Pseudonymizer) -> Self {
        StreamRedactor {
            action_for,
            pseudo,
            buf: String::new(),
            base: 0,
            offset: 0,
            blocked: Vec::new(),
            counts: BTreeMap::new(),
            max_injection: 0.0,
            next_scan: 0,
            scanner,
        }
    }

    /// Feed a delta; returns the text that is now safe to release (possibly empty).
    pub fn push(&mut self, chunk: &str) -> String {
        self.buf.push_str(chunk);
        // Rescan only after a batch of new text, so tiny deltas do not rescan the window
        // each time (adds at most STREAM_BATCH bytes of latency); before the first text
        // is out, in smaller steps. When a rescan happens never changes what is released.
        if self.pending() <= self.next_scan {
            return String::new();
        }
        let out = self.process(false);
        // `offset + base` is how much of the stream has been released so far.
        let step = if self.offset + self.base > 0 {
            STREAM_BATCH
        } else {
            (self.pending() / FIRST_STEP_DIV).min(STREAM_BATCH)
        };
        self.next_scan = self.pending() + step;
        out
    }

    /// End of stream: release everything.
    pub fn finish(&mut self) -> String {
        let out = self.process(true);
        self.buf.clear();
        self.base = 0;
        out
    }

    /// Bytes received but not yet released.
    pub fn pending(&self) -> usize {
        self.buf.len() - self.base
    }

    /// Findings with a block action so far (spans are stream offsets).
    pub fn blocked(&self) -> &[Finding] {
        &self.blocked
    }

    /// Type / count / action so far, for the receipt.
    pub fn summary(&self) -> Vec<SummaryEntry> {
        self.counts
            .iter()
            .map(|((group, entity, action), count)| SummaryEntry {
                group: group.clone(),
                entity: *entity,
                action: *action,
                count: *count,
            })
            .collect()
    }

    /// Highest injection score seen in any scanned window.
    pub fn max_injection_score(&self) -> f32 {
        self.max_injection
    }

    pub fn pseudonymizer(&self) -> &Pseudonymizer {
        &self.pseudo
    }

    pub fn into_pseudonymizer(self) -> Pseudonymizer {
        self.pseudo
    }

    fn process(&mut self, last: bool) -> String {
        if self.base >= self.buf.len() {
            return String::new();
        }
        let res = self.scanner.scan(&self.buf);
        self.max_injection = self.max_injection.max(res.injection_score);
        let cut = if last {
            self.buf.len()
        } else {
            self.scanner
                .safe_prefix(&self.buf, &res.findings, self.base)
        };
        if cut <= self.base {
            return String::new();
        }
        let base = self.base;
        let sel: Vec<Finding> = res
            .findings
            .into_iter()
            .filter(|f| f.span.start >= base && f.span.end <= cut)
            .map(|mut f| {
                f.span = f.span.start - base..f.span.end - base;
                f
            })
            .collect();
        let segment = &self.buf[base..cut];
        let applied = apply(segment, &sel, &self.action_for, &mut self.pseudo);
        let abs = self.offset + base;
        for mut f in applied.blocked {
            f.span = f.span.start + abs..f.span.end + abs;
            self.blocked.push(f);
        }
        for e in applied.summary {
            *self
                .counts
                .entry((e.group, e.entity, e.action))
                .or_insert(0) += e.count;
        }
        // Keep look-behind context before the cut.
        let mut keep = cut.saturating_sub(self.scanner.lookbehind());
        while keep > 0 && !self.buf.is_char_boundary(keep) {
            keep -= 1;
        }
        self.buf.drain(..keep);
        self.offset += keep;
        self.base = cut - keep;
        applied.text
    }
}

/// Restores `<LABEL_N>` placeholders in a streamed reply, holding back a possible
/// placeholder prefix (at most [`MAX_PLACEHOLDER`] bytes) at the end of each delta.
pub struct StreamRestorer<P: Borrow<Pseudonymizer> = Pseudonymizer> {
    pseudo: P,
    pending: String,
}

impl<P: Borrow<Pseudonymizer>> StreamRestorer<P> {
    pub fn new(pseudo: P) -> Self {
        StreamRestorer {
            pseudo,
            pending: String::new(),
        }
    }

    pub fn push(&mut self, chunk: &str) -> String {
        self.pending.push_str(chunk);
        let b = self.pending.as_bytes();
        let hold = match memchr::memrchr(b'<', b) {
            Some(lt)
                if b.len() - lt < MAX_PLACEHOLDER
                    && b[lt + 1..].iter().all(|&c| placeholder_char(c)) =>
            {
                lt
            }
            _ => b.len(),
        };
        let out = self.pseudo.borrow().restore(&self.pending[..hold]);
        self.pending.drain(..hold);
        out
    }

    pub fn finish(&mut self) -> String {
        let out = self.pseudo.borrow().restore(&self.pending);
        self.pending.clear();
        out
    }
}
