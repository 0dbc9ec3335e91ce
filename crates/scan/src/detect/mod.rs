//! Validators. Each one looks at a bounded neighbourhood of its trigger position (never
//! at earlier findings), so a finding is a pure function of nearby bytes. That locality is
//! what lets [`crate::StreamRedactor`] reproduce whole-text results exactly.

pub(crate) mod injection;
pub(crate) mod pii;
pub(crate) mod secrets;

/// Longest URL we report (longer ones are truncated here).
pub(crate) const URL_CAP: usize = 2048;
/// Longest JWT / opaque token we report.
pub(crate) const TOKEN_CAP: usize = 4096;
/// Longest PEM block we report.
pub(crate) const PEM_CAP: usize = 8192;
/// Upper bound for detectors whose matches may contain spaces (phone, card, IBAN,
/// assignments, PEM headers), including look-ahead slack.
pub(crate) const SPACED_CAP: usize = 320;

#[inline]
pub(crate) fn is_digit(b: u8) -> bool {
    b.is_ascii_digit()
}

#[inline]
pub(crate) fn is_alnum(b: u8) -> bool {
    b.is_ascii_alphanumeric()
}

#[inline]
pub(crate) fn is_word(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_'
}

/// End of the run of bytes satisfying `f` starting at `from`, scanning at most `cap + 1`
/// bytes (so callers can tell "longer than cap" apart).
#[inline]
pub(crate) fn run_end(b: &[u8], from: usize, cap: usize, f: impl Fn(u8) -> bool) -> usize {
    let lim = from.saturating_add(cap + 1).min(b.len());
    let mut i = from;
    while i < lim && f(b[i]) {
        i += 1;
    }
    i
}

/// Lowercased copy of the `n` bytes before `pos`, for context-word checks.
pub(crate) fn context_before(b: &[u8], pos: usize, n: usize) -> Vec<u8> {
    let s = pos.saturating_sub(n);
    b[s..pos].to_ascii_lowercase()
}

pub(crate) fn contains(hay: &[u8], needle: &[u8]) -> bool {
    memchr::memmem::find(hay, needle).is_some()
}

/// Shannon entropy in bits per byte.
pub(crate) fn entropy(v: &[u8]) -> f32 {
    if v.is_empty() {
        return 0.0;
    }
    let mut counts = [0u32; 256];
    for &c in v {
        counts[c as usize] += 1;
    }
    let n = v.len() as f32;
    counts
        .iter()
        .filter(|&&c| c > 0)
        .map(|&c| {
            let p = c as f32 / n;
            -p * p.log2()
        })
        .sum()
}
