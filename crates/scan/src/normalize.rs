//! Text normalisation for keyword and injection matching.
//!
//! Obfuscation (fullwidth letters, Cyrillic look-alikes, zero-width joiners, "i g n o r e")
//! must not hide a blocked term, so keywords and injection phrases are matched on a folded
//! copy: NFKD compatibility decomposition with combining marks dropped (so `ｉ`, `𝐢`, `í`
//! all become `i`), invisible format characters removed, a homoglyph table folded to
//! Latin, lowercase, and runs of single letters separated by one separator collapsed.
//! Every output byte remembers the original character it came from, so spans map back.
//!
//! Each output character depends only on a few neighbouring characters, which keeps
//! matching local (required for exact streaming).

use std::ops::Range;

use unicode_normalization::char::{decompose_compatible, is_combining_mark};

/// Normalised text plus the mapping back to the original.
#[derive(Debug, Clone)]
pub struct Normalized {
    /// Folded, lowercased text.
    pub text: String,
    /// Original byte offset of the character that produced each byte of `text`;
    /// `None` when the mapping is the identity (ASCII text without spaced letters).
    src: Option<Vec<u32>>,
}

/// Invisible-character evidence gathered while normalising (feeds injection scoring).
#[derive(Debug, Default, Clone)]
pub(crate) struct Signals {
    /// Runs of Unicode tag characters (U+E0000..U+E007F), original spans.
    pub tags: Vec<Range<usize>>,
    /// Runs of bidi controls.
    pub bidi: Vec<Range<usize>>,
    /// Runs of zero-width characters that sit between two letters (obfuscation).
    pub zero_width_in_word: Vec<Range<usize>>,
}

impl Normalized {
    /// Map a byte range of the normalised text back to the original text.
    pub fn map_span(&self, original: &str, r: Range<usize>) -> Range<usize> {
        match &self.src {
            None => r,
            Some(src) => {
                if r.start >= r.end || r.end > src.len() {
                    return 0..0;
                }
                let start = src[r.start] as usize;
                let last = src[r.end - 1] as usize;
                let end = last + original[last..].chars().next().map_or(0, char::len_utf8);
                start..end
            }
        }
    }

    /// Whether the normalised text is a plain lowercase copy of the original.
    pub fn is_identity(&self) -> bool {
        self.src.is_none()
    }
}

/// Normalise `text` (see module docs).
pub fn normalize(text: &str) -> Normalized {
    let mut sig = Signals::default();
    normalize_full(text, &mut sig)
}

/// Fast path used by the scanner: the ASCII-lowercase copy of `text`, or `None` when the
/// text needs the full treatment (the normalised text is then not that copy).
///
/// Same decision as `!text.is_ascii() || has_spaced_run(text)`, but the ASCII test and a
/// cheaper, looser spaced-letter test (isolated letters at stride 2, any non-alphanumeric
/// byte between them) come from one vectorised pass per block; only where that looser
/// test fires does the exact window test of [`has_spaced_run`] run (on that block). The
/// copy is made block by block right after (no zero-filled buffer, no UTF-8 check: the
/// scanner keeps it as bytes).
pub(crate) fn fast_identity(text: &str) -> Option<(Vec<u8>, BlockMasks)> {
    let b = text.as_bytes();
    let n = b.len();
    if n < 16 || !spaced_runs_loose(&b[..8]) || !spaced_runs_loose(&b[n - 8..]) {
        if !text.is_ascii() || has_spaced_run(b) {
            return None;
        }
        return Some((b.to_ascii_lowercase(), Vec::new()));
    }
    blocks(b)
}

#[cfg(not(all(target_arch = "x86_64", target_feature = "sse2")))]
use blocks_scalar as blocks;
/// The block pass of [`fast_identity`] (`b.len() >= 16`, edges already checked).
#[cfg(all(target_arch = "x86_64", target_feature = "sse2"))]
use simd::blocks;

/// Portable block pass of [`fast_identity`] (`b.len() >= 16`, edges already checked):
/// the fallback off x86_64, and the reference the SSE2 pass is tested against.
#[cfg_attr(
    all(target_arch = "x86_64", target_feature = "sse2", not(test)),
    allow(dead_code)
)]
fn blocks_scalar(b: &[u8]) -> Option<(Vec<u8>, BlockMasks)> {
    let n = b.len();
    const BLOCK: usize = 1024;
    let mut lower: Vec<u8> = Vec::with_capacity(n);
    let mut masks: BlockMasks = Vec::with_capacity(n.div_ceil(64));
    // `BLOCK + 32` so that a block with text after it runs whole vector iterations
    // (the 6 bytes a block needs past its end would otherwise take a scalar tail).
    let mut cls = [0u8; BLOCK + 32];
    let mut low = [0u8; BLOCK + 32];
    let mut flags = [0u8; BLOCK + 64];
    let mut iso = [0u8; BLOCK + 16];
    let m = n - 6;
    let mut i = 0;
    while i < m {
        let e = (i + BLOCK).min(m);
        // Classified bytes: the block and the 6 after it, or 32 after it when the text
        // has them (the extra ones are classified again with the next block).
        let w = if e - i == BLOCK && i + BLOCK + 32 <= n {
            BLOCK + 32
        } else {
            e - i + 6
        };
        // Bit 0: letter; bit 1: not alphanumeric (for ASCII bytes; any byte >= 0x80 ends
        // the fast path below, whatever its class). OR of all bytes for the ASCII test.
        // Alongside: the lowercase bytes (ASCII, so setting bit 5 of a letter lowercases
        // it) and the digit / `@` flags of the scanner's digit pass, kept once the block
        // passed.
        let mut high = 0u8;
        let mut any = 0u8;
        for (((c, o), f), &x) in cls[..w]
            .iter_mut()
            .zip(&mut low[..w])
            .zip(&mut flags[..w])
            .zip(&b[i..i + w])
        {
            let l = alpha_u8(x);
            let d = (x.wrapping_sub(b'0') < 10) as u8;
            *c = l | ((l | d) ^ 1) << 1;
            *o = x | l << 5;
            *f = d | ((x == b'@') as u8) << 1;
            any |= *f;
            high |= x;
        }
        if high >= 0x80 {
            return None;
        }
        {
            let c = &cls[..w];
            let k = e - i;
            // `¬alnum, L, ¬alnum, L, ¬alnum, L, ¬alnum`: a superset of the exact window
            // of `has_spaced_run` (separators are not alphanumeric).
            // In two steps: bit 0 of `iso[j]` = ¬alnum, L, ¬alnum at `j`, then three of
            // those at stride 2.
            // Whole vector iterations when the classified bytes allow it.
            let ki = if w >= k + 18 { k + 16 } else { k + 4 };
            for (((p, &c0), &c1), &c2) in iso[..ki]
                .iter_mut()
                .zip(&c[..ki])
                .zip(&c[1..ki + 1])
                .zip(&c[2..ki + 2])
            {
                *p = (c0 & c2) >> 1 & c1;
            }
            let hit = iso[..k]
                .iter()
                .zip(&iso[2..k + 2])
                .zip(&iso[4..k + 4])
                .fold(0u8, |acc, ((&p0, &p2), &p4)| acc | p0 & p2 & p4);
            // Only then the exact window, on this block (the edges were checked above).
            if hit & 1 != 0 && interior_hit(b, i, e) {
                return None;
            }
        }
        // The last block keeps its 6 extra bytes too (the text's end).
        let k = if e == m { w } else { e - i };
        lower.extend_from_slice(&low[..k]);
        let padded = k.div_ceil(64) * 64;
        flags[k..padded].fill(0);
        let (chunks, _) = flags[..padded].as_chunks::<64>();
        masks.extend(chunks.iter().map(|c| {
            if any != 0 {
                pack_block(c, any & 2 != 0)
            } else {
                (0, 0)
            }
        }));
        i = e;
    }
    Some((lower, masks))
}

/// SSE2 block pass of [`fast_identity`], same results as [`blocks_scalar`]: compare +
/// movemask turn 16 bytes at a time into bit masks (letters, digits, high bytes), so the
/// spaced-letter pre-filter and the scanner's digit masks are a few word operations per
/// 64 bytes instead of per-byte flag arrays. Through `safe_arch` because the workspace
/// forbids `unsafe` (a `#[target_feature]` function is `unsafe` to call even when the
/// feature is in the build's baseline); SSE2 is in the x86_64 baseline, so this is
/// chosen at build time.
#[cfg(all(target_arch = "x86_64", target_feature = "sse2"))]
mod simd {
    use safe_arch::{
        add_i8_m128i, bitand_m128i, bitor_m128i, cmp_gt_mask_i8_m128i, load_unaligned_m128i, m128i,
        move_mask_i8_m128i, set_splat_i8_m128i, store_unaligned_m128i,
    };

    use super::{BlockMasks, interior_hit};

    /// Bit masks of 64 bytes (bit `i`: byte `i`).
    struct Classes {
        letter: u64,
        digit: u64,
        /// Non-zero when some byte is >= 0x80.
        high: i32,
    }

    /// Movemask of a 16-byte compare result, placed at bit `16 * k`.
    #[inline(always)]
    fn bits(v: m128i, k: usize) -> u64 {
        u64::from(move_mask_i8_m128i(v) as u16) << (16 * k)
    }

    /// Classify 64 bytes and write their ASCII-lowercase copy to `out`. Bytes >= 0x80
    /// are negative as `i8`, so they are neither letters nor digits (and end the fast
    /// path through `high`).
    #[inline(always)]
    fn classify(inp: &[u8; 64], out: &mut [u8; 64]) -> Classes {
        let case = set_splat_i8_m128i(0x20);
        // Range tests as one signed compare: adding `0x7F - hi` moves `lo..=hi` to the
        // top of the `i8` range and every other byte below it.
        let shift_z = set_splat_i8_m128i((0x7F - b'z') as i8);
        let below_a = set_splat_i8_m128i((0x7F - (b'z' - b'a') - 1) as i8);
        let shift_9 = set_splat_i8_m128i((0x7F - b'9') as i8);
        let below_0 = set_splat_i8_m128i((0x7F - (b'9' - b'0') - 1) as i8);
        let (ins, _) = inp.as_chunks::<16>();
        let (outs, _) = out.as_chunks_mut::<16>();
        let mut c = Classes {
            letter: 0,
            digit: 0,
            high: 0,
        };
        let mut any = set_splat_i8_m128i(0);
        for (k, (i, o)) in ins.iter().zip(outs).enumerate() {
            let v = load_unaligned_m128i(i);
            let folded = bitor_m128i(v, case);
            let letter = cmp_gt_mask_i8_m128i(add_i8_m128i(folded, shift_z), below_a);
            let digit = cmp_gt_mask_i8_m128i(add_i8_m128i(v, shift_9), below_0);
            store_unaligned_m128i(o, bitor_m128i(v, bitand_m128i(letter, case)));
            c.letter |= bits(letter, k);
            c.digit |= bits(digit, k);
            any = bitor_m128i(any, v);
        }
        c.high = move_mask_i8_m128i(any);
        c
    }

    /// Loose spaced-letter test of a 64-byte chunk (letters `l0`, non-alphanumerics `n0`)
    /// given the next chunk's masks: `¬alnum, L, ¬alnum` three times at stride 2, a
    /// superset of the exact window of `has_spaced_run`.
    #[inline(always)]
    fn loose_hit(l0: u64, n0: u64, l1: u64, n1: u64) -> bool {
        let l = u128::from(l0) | u128::from(l1) << 64;
        let na = u128::from(n0) | u128::from(n1) << 64;
        let iso = na & l >> 1 & na >> 2;
        (iso & iso >> 2 & iso >> 4) as u64 != 0
    }

    /// Chunks per group: the lowercase bytes and masks of a group are gathered in local
    /// buffers and appended at once, and the group's exact spaced-letter tests run after
    /// it, so the per-chunk loop makes no calls (vectors stay in registers).
    const GROUP: usize = 16;

    pub(super) fn blocks(b: &[u8]) -> Option<(Vec<u8>, BlockMasks)> {
        let n = b.len();
        // Window starts of the exact test: `0..m`.
        let m = n.saturating_sub(6);
        // The exact test on chunk `c` (`interior_hit` is empty past `m`).
        let exact = |c: usize| interior_hit(b, 64 * c, (64 * c + 64).min(m));
        let mut lower: Vec<u8> = Vec::with_capacity(n);
        let mut masks: BlockMasks = Vec::with_capacity(n.div_ceil(64));
        let (ins, itail) = b.as_chunks::<64>();
        let mut low = [[0u8; 64]; GROUP];
        let mut gm = [(0u64, 0u64); GROUP];
        // Letters and non-alphanumerics of the previous chunk: its spaced-letter test
        // needs the first bytes of the current one. None before the first chunk.
        let mut prev = (0u64, 0u64);
        for (g, group) in ins.chunks(GROUP).enumerate() {
            let mut high = 0;
            // Bit `k`: the loose test fired on chunk `GROUP * g + k - 1`.
            let mut pending = 0u32;
            for (k, ((i, o), mm)) in group.iter().zip(&mut low).zip(&mut gm).enumerate() {
                let c = classify(i, o);
                high |= c.high;
                let na = !(c.letter | c.digit);
                pending |= u32::from(loose_hit(prev.0, prev.1, c.letter, na)) << k;
                *mm = (c.digit, 0);
                prev = (c.letter, na);
            }
            if high != 0 {
                return None;
            }
            while pending != 0 {
                let k = pending.trailing_zeros() as usize;
                pending &= pending - 1;
                // (Bit 0 of the first group never fires: nothing precedes it.)
                if let Some(c) = (GROUP * g + k).checked_sub(1)
                    && exact(c)
                {
                    return None;
                }
            }
            lower.extend_from_slice(low[..group.len()].as_flattened());
            masks.extend_from_slice(&gm[..group.len()]);
        }
        let mut last = ins.len();
        if !itail.is_empty() {
            // The last partial chunk, zero-padded (padding only reaches windows past `m`).
            let mut pad = [0u8; 64];
            pad[..itail.len()].copy_from_slice(itail);
            let mut opad = [0u8; 64];
            let c = classify(&pad, &mut opad);
            if c.high != 0 {
                return None;
            }
            let na = !(c.letter | c.digit);
            if loose_hit(prev.0, prev.1, c.letter, na) && last > 0 && exact(last - 1) {
                return None;
            }
            lower.extend_from_slice(&opad[..itail.len()]);
            masks.push((c.digit, 0));
            prev = (c.letter, na);
            last += 1;
        }
        // The last chunk: nothing after it.
        if loose_hit(prev.0, prev.1, 0, !0) && last > 0 && exact(last - 1) {
            return None;
        }
        // `@`s are rare in text: a memchr pass sets their bits for less than a compare
        // and a movemask per 16 bytes.
        for p in memchr::memchr_iter(b'@', b) {
            if let Some(m) = masks.get_mut(p / 64) {
                m.1 |= 1 << (p % 64);
            }
        }
        Some((lower, masks))
    }
}

/// Bit masks of 64 flag bytes (bit 0: digit, bit 1: `@`): (digits, `@`s, the latter only
/// when `at`, else 0).
#[inline]
pub(crate) fn pack_block(flags: &[u8; 64], at: bool) -> (u64, u64) {
    // Multiplying a word's bit-0 flags by MUL gathers them (byte i -> bit i) into the top
    // byte of the product; the masks are shifted down a byte per word, so every word
    // uses the same constants.
    const TOP: u64 = 0xFF00_0000_0000_0000;
    const MUL: u64 = 0x0102_0408_1020_4080;
    let mut dmask = 0u64;
    let mut amask = 0u64;
    let (words, _) = flags.as_chunks::<8>();
    for chunk in words {
        let w = u64::from_le_bytes(*chunk);
        dmask = dmask >> 8 | (w & 0x0101_0101_0101_0101).wrapping_mul(MUL) & TOP;
        if at {
            amask = amask >> 8 | ((w >> 1) & 0x0101_0101_0101_0101).wrapping_mul(MUL) & TOP;
        }
    }
    (dmask, amask)
}

/// Digit and `@` bit masks of each 64-byte block (bit `i`: byte `64 * block + i`).
pub(crate) type BlockMasks = Vec<(u64, u64)>;

/// The normalised text the scanner works on: the ASCII-lowercase copy of an ASCII text
/// without spaced letters (the identity mapping), or the full normalisation.
pub(crate) enum ScanNorm {
    /// The lowercase copy, and the digit / `@` masks of every 64-byte block (empty when
    /// not computed, for short texts).
    Ascii(Vec<u8>, BlockMasks),
    Full(Normalized),
}

impl ScanNorm {
    /// Normalised bytes.
    pub(crate) fn bytes(&self) -> &[u8] {
        match self {
            ScanNorm::Ascii(v, _) => v,
            ScanNorm::Full(n) => n.text.as_bytes(),
        }
    }

    /// Map a byte range of the normalised text back to the original text.
    pub(crate) fn map_span(&self, original: &str, r: Range<usize>) -> Range<usize> {
        match self {
            ScanNorm::Ascii(..) => r,
            ScanNorm::Full(n) => n.map_span(original, r),
        }
    }
}

pub(crate) fn is_invisible(c: char) -> bool {
    matches!(c,
        '\u{00AD}' | '\u{034F}' | '\u{061C}' | '\u{115F}' | '\u{1160}' | '\u{17B4}' | '\u{17B5}'
        | '\u{180B}'..='\u{180E}' | '\u{200B}'..='\u{200F}' | '\u{202A}'..='\u{202E}'
        | '\u{2060}'..='\u{206F}' | '\u{3164}' | '\u{FE00}'..='\u{FE0F}' | '\u{FEFF}'
        | '\u{FFA0}' | '\u{E0000}'..='\u{E007F}' | '\u{E0100}'..='\u{E01EF}')
}

fn is_tag(c: char) -> bool {
    ('\u{E0000}'..='\u{E007F}').contains(&c)
}

fn is_bidi(c: char) -> bool {
    matches!(c, '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}' | '\u{200E}' | '\u{200F}' | '\u{061C}')
}

/// Homoglyphs commonly used to dodge filters, folded to the Latin letter they imitate.
pub(crate) fn fold_confusable(c: char) -> char {
    match c {
        // Cyrillic
        'а' => 'a',
        'А' => 'A',
        'в' => 'b',
        'В' => 'B',
        'е' => 'e',
        'Е' => 'E',
        'ё' => 'e',
        'к' => 'k',
        'К' => 'K',
        'м' => 'm',
        'М' => 'M',
        'н' => 'h',
        'Н' => 'H',
        'о' => 'o',
        'О' => 'O',
        'р' => 'p',
        'Р' => 'P',
        'с' => 'c',
        'С' => 'C',
        'т' => 't',
        'Т' => 'T',
        'у' => 'y',
        'У' => 'Y',
        'х' => 'x',
        'Х' => 'X',
        'і' => 'i',
        'І' => 'I',
        'ї' => 'i',
        'ј' => 'j',
        'Ј' => 'J',
        'ѕ' => 's',
        'Ѕ' => 'S',
        'ԁ' => 'd',
        'ԛ' => 'q',
        'ԝ' => 'w',
        'ɡ' => 'g',
        'ӏ' => 'l',
        'Ӏ' => 'I',
        'һ' => 'h',
        'ո' => 'n',
        'ս' => 'u',
        'օ' => 'o',
        'ց' => 'g',
        'г' => 'r',
        'п' => 'n',
        'ь' => 'b',
        'Ь' => 'b',
        'ԍ' => 'G',
        'ԉ' => 'l',
        // Greek
        'α' => 'a',
        'Α' => 'A',
        'β' => 'b',
        'Β' => 'B',
        'ε' => 'e',
        'Ε' => 'E',
        'Ζ' => 'Z',
        'η' => 'n',
        'Η' => 'H',
        'ι' => 'i',
        'Ι' => 'I',
        'κ' => 'k',
        'Κ' => 'K',
        'Μ' => 'M',
        'ν' => 'v',
        'Ν' => 'N',
        'ο' => 'o',
        'Ο' => 'O',
        'ρ' => 'p',
        'Ρ' => 'P',
        'τ' => 't',
        'Τ' => 'T',
        'υ' => 'u',
        'Υ' => 'Y',
        'χ' => 'x',
        'Χ' => 'X',
        'γ' => 'y',
        'ϲ' => 'c',
        'Ϲ' => 'C',
        'ϳ' => 'j',
        'ω' => 'w',
        'ς' => 's',
        // Latin look-alikes and IPA
        'ı' => 'i',
        'ȷ' => 'j',
        'ſ' => 's',
        'ʟ' => 'l',
        'ɪ' => 'i',
        'ɑ' => 'a',
        'ɩ' => 'i',
        'ɴ' => 'n',
        'ʀ' => 'r',
        'ꮃ' => 'w',
        'ᴀ' => 'a',
        'ᴄ' => 'c',
        'ᴅ' => 'd',
        'ᴇ' => 'e',
        'ᴏ' => 'o',
        'ᴘ' => 'p',
        'ᴛ' => 't',
        'ᴜ' => 'u',
        'ᴠ' => 'v',
        'ᴡ' => 'w',
        'ᴢ' => 'z',
        'ℓ' => 'l',
        '∕' => '/',
        '⁄' => '/',
        '‐' => '-',
        '‑' => '-',
        '‒' => '-',
        '–' => '-',
        '—' => '-',
        '−' => '-',
        _ => c,
    }
}

fn normalize_full(text: &str, sig: &mut Signals) -> Normalized {
    let mut out = String::with_capacity(text.len() + 16);
    let mut src: Vec<u32> = Vec::with_capacity(text.len() + 16);
    // Track invisible runs.
    let mut run_start: Option<(usize, u8)> = None; // (start, kind: 0 tag, 1 bidi, 2 zw)
    let mut prev_letter = false;
    let mut pending_zw: Option<Range<usize>> = None;
    for (i, c) in text.char_indices() {
        if c.is_ascii() {
            if let Some((s, k)) = run_start.take() {
                close_run(sig, s..i, k, &mut pending_zw);
            }
            let b = c.to_ascii_lowercase();
            let is_letter = b.is_ascii_alphanumeric();
            if let Some(zw) = pending_zw.take()
                && prev_letter
                && is_letter
            {
                sig.zero_width_in_word.push(zw);
            }
            prev_letter = is_letter;
            out.push(b);
            src.push(i as u32);
            continue;
        }
        if is_invisible(c) {
            let kind = if is_tag(c) {
                0
            } else if is_bidi(c) {
                1
            } else {
                2
            };
            match run_start {
                Some((_, k)) if k == kind => {}
                Some((s, k)) => {
                    close_run(sig, s..i, k, &mut pending_zw);
                    run_start = Some((i, kind));
                }
                None => run_start = Some((i, kind)),
            }
            continue;
        }
        if let Some((s, k)) = run_start.take() {
            close_run(sig, s..i, k, &mut pending_zw);
        }
        let mut is_letter = false;
        let mut any = false;
        decompose_compatible(c, |d| {
            if is_combining_mark(d) {
                return;
            }
            let d = fold_confusable(d);
            for l in d.to_lowercase() {
                is_letter |= l.is_alphanumeric();
                any = true;
                let start = out.len();
                out.push(l);
                for _ in start..out.len() {
                    src.push(i as u32);
                }
            }
        });
        if any {
            if let Some(zw) = pending_zw.take()
                && prev_letter
                && is_letter
            {
                sig.zero_width_in_word.push(zw);
            }
            prev_letter = is_letter;
        }
    }
    if let Some((s, k)) = run_start.take() {
        close_run(sig, s..text.len(), k, &mut pending_zw);
    }
    let mut n = Normalized {
        text: out,
        src: Some(src),
    };
    collapse_spaced(&mut n);
    n
}

fn close_run(sig: &mut Signals, r: Range<usize>, kind: u8, pending_zw: &mut Option<Range<usize>>) {
    match kind {
        0 => sig.tags.push(r),
        1 => sig.bidi.push(r),
        _ => *pending_zw = Some(r),
    }
}

#[inline]
fn is_alnum(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b >= 0x80
}

#[inline]
fn is_spacing_sep(b: u8) -> bool {
    matches!(b, b' ' | b'.' | b'-' | b'_' | b'*')
}

#[inline]
fn isolated_letter(n: &[u8], i: usize) -> bool {
    n[i].is_ascii_alphabetic()
        && (i == 0 || !is_alnum(n[i - 1]))
        && (i + 1 == n.len() || !is_alnum(n[i + 1]))
}

/// Runs of at least three isolated letters separated by exactly one separator:
/// returns (first letter index, last letter index) pairs.
fn spaced_runs(n: &[u8]) -> Vec<(usize, usize)> {
    let mut runs = Vec::new();
    let mut i = 0;
    while i < n.len() {
        if isolated_letter(n, i) {
            let mut j = i;
            while j + 2 < n.len() && is_spacing_sep(n[j + 1]) && isolated_letter(n, j + 2) {
                j += 2;
            }
            if (j - i) / 2 + 1 >= 3 {
                runs.push((i, j));
                i = j + 1;
                continue;
            }
        }
        i += 1;
    }
    runs
}

#[inline]
fn alpha_u8(x: u8) -> u8 {
    ((x | 0x20).wrapping_sub(b'a') < 26) as u8
}

#[inline]
fn sep_u8(x: u8) -> u8 {
    (x == b' ') as u8
        | (x == b'.') as u8
        | (x == b'-') as u8
        | (x == b'_') as u8
        | (x == b'*') as u8
}

#[inline]
fn alnum_u8(x: u8) -> u8 {
    alpha_u8(x) | (x.wrapping_sub(b'0') < 10) as u8 | (x >= 0x80) as u8
}

/// Whether `b` may contain a spaced-letter run. Exact in the interior (a branch-free
/// 7-byte window the compiler vectorises: `¬alnum, L, sep, L, sep, L, ¬alnum`),
/// conservative at the edges; a false "yes" only costs the slow path, whose output is the
/// same for text without runs.
pub(crate) fn has_spaced_run(b: &[u8]) -> bool {
    let n = b.len();
    if n < 5 {
        return false;
    }
    if n < 16 {
        return !spaced_runs(b).is_empty();
    }
    if !spaced_runs_loose(&b[..8]) || !spaced_runs_loose(&b[n - 8..]) {
        return true;
    }
    interior_hit(b, 0, n - 6)
}

/// Whether the window `¬alnum, L, sep, L, sep, L, ¬alnum` starts at some `i` in
/// `from..to` (`to + 6 <= b.len()`). Per block: classify each byte once (bit 0 letter,
/// bit 1 separator, bit 2 not alphanumeric), then test the window on the class bytes;
/// both loops vectorise.
fn interior_hit(b: &[u8], from: usize, to: usize) -> bool {
    let mut cls = [0u8; 2048 + 6];
    let mut i = from;
    while i < to {
        let e = (i + 2048).min(to);
        let w = e - i + 6;
        for (c, &x) in cls[..w].iter_mut().zip(&b[i..i + w]) {
            *c = alpha_u8(x) | sep_u8(x) << 1 | (alnum_u8(x) ^ 1) << 2;
        }
        let c = &cls[..w];
        let k = e - i;
        let hit = c[..k]
            .iter()
            .zip(&c[1..k + 1])
            .zip(&c[2..k + 2])
            .zip(&c[3..k + 3])
            .zip(&c[4..k + 4])
            .zip(&c[5..k + 5])
            .zip(&c[6..k + 6])
            .fold(0u8, |acc, ((((((&c0, &c1), &c2), &c3), &c4), &c5), &c6)| {
                acc | ((c0 >> 2) & c1 & (c2 >> 1) & c3 & (c4 >> 1) & c5 & (c6 >> 2))
            });
        if hit & 1 != 0 {
            return true;
        }
        i = e;
    }
    false
}

/// `true` when `s` certainly has no spaced run touching it (used only for the edges).
fn spaced_runs_loose(s: &[u8]) -> bool {
    // Count separators between letters; fewer than two means no three-letter run.
    s.windows(3)
        .filter(|w| alpha_u8(w[0]) == 1 && sep_u8(w[1]) == 1 && alpha_u8(w[2]) == 1)
        .count()
        < 2
}

fn collapse_spaced(n: &mut Normalized) {
    let runs = spaced_runs(n.text.as_bytes());
    if runs.is_empty() {
        return;
    }
    let Some(src) = n.src.as_ref() else { return };
    let bytes = n.text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut nsrc = Vec::with_capacity(bytes.len());
    let mut r = 0;
    let mut i = 0;
    while i < bytes.len() {
        while r < runs.len() && i > runs[r].1 {
            r += 1;
        }
        if r < runs.len() && i > runs[r].0 && i < runs[r].1 && (i - runs[r].0) % 2 == 1 {
            i += 1;
            continue;
        }
        out.push(bytes[i]);
        nsrc.push(src[i]);
        i += 1;
    }
    // Only ASCII separators were removed, so `out` is still valid UTF-8.
    if let Ok(s) = String::from_utf8(out) {
        n.text = s;
        n.src = Some(nsrc);
    }
}

/// Normalise and also return invisible-character signals.
pub(crate) fn normalize_for_scan(text: &str) -> (ScanNorm, Signals) {
    if let Some((v, masks)) = fast_identity(text) {
        return (ScanNorm::Ascii(v, masks), Signals::default());
    }
    let mut sig = Signals::default();
    let n = normalize_full(text, &mut sig);
    (ScanNorm::Full(n), sig)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn norm(s: &str) -> String {
        normalize(s).text
    }

    #[test]
    fn folds_obfuscation() {
        assert_eq!(norm("ＩＧＮＯＲＥ"), "ignore");
        assert_eq!(norm("іgnоrе"), "ignore"); // Cyrillic i, o, e
        assert_eq!(norm("ig\u{200B}no\u{200D}re"), "ignore");
        assert_eq!(norm("i g n o r e  all"), "ignore  all");
        assert_eq!(norm("i.g.n.o.r.e"), "ignore");
        assert_eq!(norm("café"), "cafe");
        assert_eq!(norm("a b"), "a b");
    }

    #[test]
    fn maps_spans_back() {
        let s = "say ＩＧＮＯＲＥ now";
        let n = normalize(s);
        let at = n.text.find("ignore").unwrap();
        let r = n.map_span(s, at..at + 6);
        assert_eq!(&s[r], "ＩＧＮＯＲＥ");
        let s = "x i g n o r e y";
        let n = normalize(s);
        let at = n.text.find("ignore").unwrap();
        assert_eq!(&s[n.map_span(s, at..at + 6)], "i g n o r e");
    }

    #[test]
    fn spaced_precheck_is_sound_on_long_text() {
        // Whenever a spaced run exists, the vectorised pre-check must say so.
        let alphabet = b"ab .-_*1xQ\n";
        let mut seed = 0x1234_5678_u64;
        for len in [16usize, 17, 40, 100, 2100, 4200] {
            for _ in 0..300 {
                let mut v = Vec::with_capacity(len);
                for _ in 0..len {
                    seed = seed
                        .wrapping_mul(6364136223846793005)
                        .wrapping_add(1442695040888963407);
                    // Mostly letters and spaces, so runs appear now and then.
                    v.push(alphabet[(seed >> 33) as usize % alphabet.len()]);
                }
                if !spaced_runs(&v).is_empty() {
                    assert!(has_spaced_run(&v), "{:?}", String::from_utf8_lossy(&v));
                }
            }
        }
        let mut long = "word ".repeat(900);
        long.push_str("x i g n o r e y");
        long.push_str(&" word".repeat(900));
        assert!(has_spaced_run(long.as_bytes()));
        assert!(!has_spaced_run(
            "plain words only here. ".repeat(300).as_bytes()
        ));
    }

    #[test]
    fn fast_identity_decides_like_the_full_check() {
        // Same decision as `!is_ascii || has_spaced_run`, and the lowercase copy.
        let alphabet: &[&str] = &[
            "a", "b", "Q", " ", ".", "-", "_", "*", "1", "xy", "\n", ",", "é",
        ];
        let mut seed = 0x9876_5432_u64;
        for len in [0usize, 3, 15, 16, 17, 40, 700, 1030, 2100, 4200] {
            for _ in 0..200 {
                let mut t = String::new();
                while t.len() < len {
                    seed = seed
                        .wrapping_mul(6364136223846793005)
                        .wrapping_add(1442695040888963407);
                    let k = (seed >> 33) as usize % alphabet.len();
                    // Non-ASCII only now and then, so most texts take the fast path.
                    if k + 1 == alphabet.len() && !(seed >> 20).is_multiple_of(16) {
                        continue;
                    }
                    t.push_str(alphabet[k]);
                }
                let fast = fast_identity(&t);
                let slow = !t.is_ascii() || has_spaced_run(t.as_bytes());
                assert_eq!(fast.is_none(), slow, "{t:?}");
                if let Some((n, masks)) = fast {
                    assert_eq!(n, t.to_ascii_lowercase().into_bytes());
                    // The digit / `@` masks, when computed, are those of every block.
                    if !masks.is_empty() {
                        assert_eq!(masks.len(), t.len().div_ceil(64), "{t:?}");
                        for (j, &(d, a)) in masks.iter().enumerate() {
                            for (k, &x) in t.as_bytes().iter().skip(64 * j).take(64).enumerate() {
                                assert_eq!(d >> k & 1 == 1, x.is_ascii_digit(), "{t:?}");
                                assert_eq!(a >> k & 1 == 1, x == b'@', "{t:?}");
                            }
                            let valid = t.len() - 64 * j;
                            if valid < 64 {
                                assert_eq!((d | a) >> valid, 0, "{t:?}");
                            }
                        }
                    }
                }
            }
        }
    }

    #[cfg(all(target_arch = "x86_64", target_feature = "sse2"))]
    #[test]
    fn simd_blocks_match_scalar() {
        // Every ASCII class boundary, separators, and bytes >= 0x80; texts built from
        // them (mostly letters and spaces, so spaced runs appear) at lengths around the
        // 64-byte chunks and the scalar pass's 1024-byte blocks.
        let edges: &[u8] = &[
            0, b'\n', b' ', b'*', b'-', b'.', b'/', b'0', b'5', b'9', b':', b'?', b'@', b'A', b'M',
            b'Z', b'[', b'_', b'`', b'a', b'q', b'z', b'{', 0x7F, 0x80, 0xC3, 0xFF,
        ];
        let common: &[u8] = b"ab Q .-_*1@";
        let mut seed = 0x5eed_1234_u64;
        let mut kinds = [0usize; 2];
        let mut next = || {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (seed >> 33) as usize
        };
        for len in [
            16usize, 17, 63, 64, 65, 70, 127, 128, 129, 200, 1023, 1024, 1030, 1094, 2100,
        ] {
            for _ in 0..300 {
                let rare = next() % 4;
                let v: Vec<u8> = (0..len)
                    .map(|_| {
                        let r = next();
                        if rare == 0 && r % 50 == 0 || rare == 1 && r % 3 == 0 {
                            edges[r / 64 % edges.len()]
                        } else if rare == 2 {
                            // ASCII edges only, so the fast path is taken.
                            edges[r / 64 % (edges.len() - 3)]
                        } else {
                            common[r / 64 % common.len()]
                        }
                    })
                    .collect();
                let r = simd::blocks(&v);
                kinds[usize::from(r.is_some())] += 1;
                assert_eq!(r, blocks_scalar(&v), "{v:?}");
            }
        }
        // Both outcomes were exercised.
        assert!(kinds[0] > 100 && kinds[1] > 100, "{kinds:?}");
        // Every byte value at every position of a chunk.
        kinds = [0; 2];
        for x in 0..=255u8 {
            for at in 0..80 {
                let mut v =
                    b"Mail me@x.org at 0123456789, ab cd ef_gh-ij.kl*mn op. Q Rz\n".repeat(2);
                v[at] = x;
                let r = simd::blocks(&v);
                kinds[usize::from(r.is_some())] += 1;
                assert_eq!(r, blocks_scalar(&v), "{x} at {at}");
            }
        }
        assert!(kinds[0] > 8000 && kinds[1] > 8000, "{kinds:?}");
    }

    #[test]
    fn spaced_precheck_agrees() {
        for s in [
            "a b c",
            "U.S.A.",
            "e.g. this",
            "x y",
            "I a m here",
            "ab c d e",
            "a-b-c-d",
        ] {
            assert_eq!(
                has_spaced_run(s.as_bytes()),
                !spaced_runs(s.as_bytes()).is_empty(),
                "{s}"
            );
        }
    }
}
