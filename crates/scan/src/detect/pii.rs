//! Structured PII validators: email, URL, phone, US SSN, payment card, IBAN, IP address.

use std::net::Ipv6Addr;
use std::ops::Range;

use super::{URL_CAP, contains, context_before, is_alnum, is_digit, is_word, run_end};
use crate::SecretKind;

// ---------------------------------------------------------------- email

#[inline]
fn is_local(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'%' | b'+' | b'-')
}

#[inline]
fn is_dom(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-')
}

/// Email around the `@` at `at`.
pub(crate) fn email_at(b: &[u8], at: usize) -> Option<Range<usize>> {
    let mut s = at;
    while s > 0 && at - s <= 64 && is_local(b[s - 1]) {
        s -= 1;
    }
    if at - s > 64 {
        return None;
    }
    while s < at && !b[s].is_ascii_alphanumeric() {
        s += 1;
    }
    if s == at || b[at - 1] == b'.' || contains(&b[s..at], b"..") {
        return None;
    }
    let mut e = run_end(b, at + 1, 253, is_dom);
    if e - (at + 1) > 253 {
        return None;
    }
    while e > at + 1 && matches!(b[e - 1], b'.' | b'-') {
        e -= 1;
    }
    if !valid_domain(&b[at + 1..e]) {
        return None;
    }
    // `git@github.com:org/repo.git` is an SSH remote, not a mailbox.
    if e + 1 < b.len() && b[e] == b':' && is_word(b[e + 1]) {
        return None;
    }
    Some(s..e)
}

fn valid_domain(d: &[u8]) -> bool {
    if d.is_empty() || d.len() > 253 {
        return false;
    }
    let mut labels = 0;
    let mut last: &[u8] = &[];
    for label in d.split(|&c| c == b'.') {
        if label.is_empty()
            || label.len() > 63
            || !label[0].is_ascii_alphanumeric()
            || !label[label.len() - 1].is_ascii_alphanumeric()
        {
            return false;
        }
        labels += 1;
        last = label;
    }
    labels >= 2
        && ((last.len() >= 2 && last.iter().all(u8::is_ascii_alphabetic))
            || last.starts_with(b"xn--"))
}

// ---------------------------------------------------------------- URL

#[inline]
fn is_url_char(b: u8) -> bool {
    (0x21..0x7f).contains(&b) && !matches!(b, b'"' | b'\'' | b'<' | b'>' | b'`' | b'\\')
}

fn url_tail(b: &[u8], from: usize) -> usize {
    let mut e = run_end(b, from, URL_CAP, is_url_char);
    if e - from > URL_CAP {
        e = from + URL_CAP;
    }
    // Trailing punctuation belongs to the sentence, unbalanced closers to the context.
    while e > from {
        let c = b[e - 1];
        let drop = match c {
            b'.' | b',' | b';' | b':' | b'!' | b'?' | b'*' => true,
            b')' => count(&b[from..e], b'(') < count(&b[from..e], b')'),
            b']' => count(&b[from..e], b'[') < count(&b[from..e], b']'),
            _ => false,
        };
        if !drop {
            break;
        }
        e -= 1;
    }
    e
}

fn count(s: &[u8], c: u8) -> usize {
    s.iter().filter(|&&x| x == c).count()
}

#[inline]
fn is_scheme(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'+' | b'.' | b'-')
}

/// What a `scheme://…` turned out to be.
pub(crate) enum UrlKind {
    Url,
    Secret(SecretKind),
}

/// URL (or credential-bearing connection string) around the `://` at `p`.
pub(crate) fn url_at_sep(b: &[u8], p: usize) -> Option<(Range<usize>, UrlKind)> {
    let mut s = p;
    while s > 0 && p - s <= 32 && is_scheme(b[s - 1]) {
        s -= 1;
    }
    if p - s > 32 {
        return None;
    }
    while s < p && !b[s].is_ascii_alphabetic() {
        s += 1;
    }
    if s == p {
        return None;
    }
    let body = p + 3;
    let e = url_tail(b, body);
    if e <= body {
        return None;
    }
    let rest = &b[body..e];
    let auth_end = rest
        .iter()
        .position(|&c| matches!(c, b'/' | b'?' | b'#'))
        .unwrap_or(rest.len());
    let authority = &rest[..auth_end];
    let (userinfo, hostport) = match authority.iter().rposition(|&c| c == b'@') {
        Some(at) => (Some(&authority[..at]), &authority[at + 1..]),
        None => (None, authority),
    };
    let host = if hostport.first() == Some(&b'[') {
        let close = hostport.iter().position(|&c| c == b']')?;
        &hostport[..=close]
    } else {
        let colon = hostport
            .iter()
            .position(|&c| c == b':')
            .unwrap_or(hostport.len());
        &hostport[..colon]
    };
    if host.is_empty() && userinfo.is_none() {
        return None;
    }
    if let Some(ui) = userinfo
        && let Some(c) = ui.iter().position(|&x| x == b':')
        && c + 1 < ui.len()
    {
        return Some((s..e, UrlKind::Secret(SecretKind::ConnectionString)));
    }
    let scheme = b[s..p].to_ascii_lowercase();
    let web = matches!(
        scheme.as_slice(),
        b"http" | b"https" | b"ftp" | b"ws" | b"wss"
    );
    if web {
        let lower = host.to_ascii_lowercase();
        if !(contains(host, b".") || lower == b"localhost" || host.first() == Some(&b'[')) {
            return None;
        }
        if !host.iter().all(|&c| {
            c.is_ascii_alphanumeric() || matches!(c, b'.' | b'-' | b'[' | b']' | b':' | b'_')
        }) {
            return None;
        }
        if lower == b"hooks.slack.com" && rest[auth_end..].starts_with(b"/services/T") {
            return Some((s..e, UrlKind::Secret(SecretKind::SlackWebhook)));
        }
    }
    Some((s..e, UrlKind::Url))
}

/// URL without a scheme, starting at `www.` at `w`.
pub(crate) fn url_at_www(b: &[u8], w: usize) -> Option<Range<usize>> {
    if w > 0 && (is_scheme(b[w - 1]) || matches!(b[w - 1], b'/' | b'@' | b':')) {
        return None;
    }
    let e = url_tail(b, w);
    let rest = &b[w..e];
    let host_end = rest
        .iter()
        .position(|&c| matches!(c, b'/' | b'?' | b'#' | b':'))
        .unwrap_or(rest.len());
    if host_end <= 4 || !valid_domain(&rest[..host_end]) {
        return None;
    }
    Some(w..e)
}

// ---------------------------------------------------------------- digit-run helpers

/// A candidate may not start right after an alphanumeric, nor continue a number
/// (`12-34` seen from `34`).
fn boundary_before(b: &[u8], s: usize, allow_space_after_digit: bool) -> bool {
    if s == 0 {
        return true;
    }
    let c = b[s - 1];
    if is_word(c) || c == b'+' {
        return false;
    }
    if s >= 2 && matches!(c, b'-' | b'.' | b'/' | b',') && is_alnum(b[s - 2]) {
        return false;
    }
    if !allow_space_after_digit && s >= 2 && c == b' ' && is_digit(b[s - 2]) {
        return false;
    }
    true
}

/// The character after a candidate may not continue it.
fn boundary_after(b: &[u8], e: usize) -> bool {
    if e >= b.len() {
        return true;
    }
    let c = b[e];
    if is_word(c) || c == b'@' {
        return false;
    }
    if matches!(c, b'-' | b'.' | b'/' | b',') && e + 1 < b.len() && is_alnum(b[e + 1]) {
        return false;
    }
    true
}

fn digits_val(b: &[u8]) -> u32 {
    b.iter().fold(0u32, |a, &c| {
        a.saturating_mul(10).saturating_add((c - b'0') as u32)
    })
}

/// The word just before `pos` (skipping spaces and `:=#`), lowercased.
fn last_word(b: &[u8], pos: usize) -> Vec<u8> {
    let mut e = pos;
    while e > 0 && pos - e < 4 && matches!(b[e - 1], b' ' | b':' | b'=' | b'#') {
        e -= 1;
    }
    let mut s = e;
    while s > 0 && e - s < 12 && b[s - 1].is_ascii_alphabetic() {
        s -= 1;
    }
    b[s..e].to_ascii_lowercase()
}

/// Whether `s` follows space-separated 4-character blocks that start with an IBAN-like
/// `CC00` block (digits of a malformed IBAN are not a card or phone number).
fn after_iban_blocks(b: &[u8], s: usize) -> bool {
    let mut i = s;
    for _ in 0..9 {
        if i < 6 || b[i - 1] != b' ' {
            return false;
        }
        let e = i - 1;
        let t = e - 4;
        let tok = &b[t..e];
        if !tok
            .iter()
            .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit())
            || (t > 0 && is_word(b[t - 1]) && b[t - 1] != b' ')
        {
            return false;
        }
        if tok[0].is_ascii_uppercase()
            && tok[1].is_ascii_uppercase()
            && tok[2].is_ascii_digit()
            && tok[3].is_ascii_digit()
        {
            return true;
        }
        i = t;
    }
    false
}

// ---------------------------------------------------------------- US SSN

fn ssn_rules(area: &[u8], group: &[u8], serial: &[u8]) -> bool {
    let a = digits_val(area);
    a != 0 && a != 666 && a < 900 && digits_val(group) != 0 && digits_val(serial) != 0
}

const SSN_CONTEXT: [&[u8]; 5] = [b"ssn", b"social security", b"ss#", b"social sec", b"ss no"];

/// US SSN at digit-run start `r`.
pub(crate) fn ssn_at(b: &[u8], r: usize, run: usize) -> Option<(Range<usize>, f32)> {
    if !boundary_before(b, r, false) {
        return None;
    }
    let ctx = || {
        let c = context_before(b, r, 40);
        SSN_CONTEXT.iter().any(|w| contains(&c, w))
    };
    if run == 3 && r + 11 <= b.len() {
        let sep = b[r + 3];
        if matches!(sep, b'-' | b' ')
            && b[r + 4..r + 6].iter().all(|&c| is_digit(c))
            && b[r + 6] == sep
            && b[r + 7..r + 11].iter().all(|&c| is_digit(c))
            && boundary_after(b, r + 11)
            && ssn_rules(&b[r..r + 3], &b[r + 4..r + 6], &b[r + 7..r + 11])
        {
            if sep == b' ' && !ctx() {
                return None;
            }
            return Some((r..r + 11, if ctx() { 0.95 } else { 0.85 }));
        }
        return None;
    }
    if run == 9
        && boundary_after(b, r + 9)
        && ssn_rules(&b[r..r + 3], &b[r + 3..r + 5], &b[r + 5..r + 9])
        && ctx()
    {
        return Some((r..r + 9, 0.7));
    }
    None
}

// ---------------------------------------------------------------- payment cards

fn luhn(d: &[u8]) -> bool {
    let mut sum = 0u32;
    for (i, &c) in d.iter().rev().enumerate() {
        let mut v = (c - b'0') as u32;
        if i % 2 == 1 {
            v *= 2;
            if v > 9 {
                v -= 9;
            }
        }
        sum += v;
    }
    sum.is_multiple_of(10)
}

fn issuer_ok(d: &[u8]) -> bool {
    let n = d.len();
    let p = |k: usize| digits_val(&d[..k.min(n)]);
    match d[0] {
        b'4' => matches!(n, 13 | 16 | 19),
        b'5' => (51..=55).contains(&p(2)) && n == 16 || p(2) == 50 && (12..=19).contains(&n),
        b'2' => (2221..=2720).contains(&p(4)) && n == 16,
        b'3' => {
            (matches!(p(2), 34 | 37) && n == 15)
                || ((3528..=3589).contains(&p(4)) && (16..=19).contains(&n))
                || (((300..=305).contains(&p(3)) || matches!(p(2), 36 | 38 | 39))
                    && (14..=19).contains(&n))
        }
        b'6' => (16..=19).contains(&n) || ((56..=69).contains(&p(2)) && (12..=19).contains(&n)),
        _ => false,
    }
}

/// Payment card number at digit-run start `r`.
pub(crate) fn card_at(b: &[u8], r: usize) -> Option<Range<usize>> {
    if !boundary_before(b, r, true) || after_iban_blocks(b, r) {
        return None;
    }
    let mut groups: [(usize, usize); 6] = [(0, 0); 6];
    let mut ng = 0;
    let mut sep = 0u8;
    let mut i = r;
    let mut total = 0;
    loop {
        let e = run_end(b, i, 19, is_digit);
        let len = e - i;
        total += len;
        if total > 19 || ng == 6 {
            return None;
        }
        groups[ng] = (i, len);
        ng += 1;
        i = e;
        if i + 1 < b.len()
            && matches!(b[i], b' ' | b'-')
            && (sep == 0 || sep == b[i])
            && is_digit(b[i + 1])
        {
            sep = b[i];
            i += 1;
        } else {
            break;
        }
    }
    if !(12..=19).contains(&total) || !boundary_after(b, i) {
        return None;
    }
    let sizes: Vec<usize> = groups[..ng].iter().map(|g| g.1).collect();
    let shape_ok = ng == 1
        || (ng >= 3 && sizes[..ng - 1].iter().all(|&g| g == 4) && (1..=4).contains(&sizes[ng - 1]))
        || sizes == [4, 6, 5]
        || sizes == [4, 6, 4];
    if !shape_ok {
        return None;
    }
    let mut d = Vec::with_capacity(total);
    for &(s, l) in &groups[..ng] {
        d.extend_from_slice(&b[s..s + l]);
    }
    (issuer_ok(&d) && luhn(&d)).then_some(r..i)
}

// ---------------------------------------------------------------- IBAN

fn iban_len(cc: &[u8]) -> Option<usize> {
    Some(match cc {
        b"AD" => 24,
        b"AE" => 23,
        b"AL" => 28,
        b"AT" => 20,
        b"AZ" => 28,
        b"BA" => 20,
        b"BE" => 16,
        b"BG" => 22,
        b"BH" => 22,
        b"BR" => 29,
        b"BY" => 28,
        b"CH" => 21,
        b"CR" => 22,
        b"CY" => 28,
        b"CZ" => 24,
        b"DE" => 22,
        b"DK" => 18,
        b"DO" => 28,
        b"EE" => 20,
        b"EG" => 29,
        b"ES" => 24,
        b"FI" => 18,
        b"FO" => 18,
        b"FR" => 27,
        b"GB" => 22,
        b"GE" => 22,
        b"GI" => 23,
        b"GL" => 18,
        b"GR" => 27,
        b"GT" => 28,
        b"HR" => 21,
        b"HU" => 28,
        b"IE" => 22,
        b"IL" => 23,
        b"IQ" => 23,
        b"IS" => 26,
        b"IT" => 27,
        b"JO" => 30,
        b"KW" => 30,
        b"KZ" => 20,
        b"LB" => 28,
        b"LC" => 32,
        b"LI" => 21,
        b"LT" => 20,
        b"LU" => 20,
        b"LV" => 21,
        b"MC" => 27,
        b"MD" => 24,
        b"ME" => 22,
        b"MK" => 19,
        b"MR" => 27,
        b"MT" => 31,
        b"MU" => 30,
        b"NL" => 18,
        b"NO" => 15,
        b"PK" => 24,
        b"PL" => 28,
        b"PS" => 29,
        b"PT" => 25,
        b"QA" => 29,
        b"RO" => 24,
        b"RS" => 22,
        b"SA" => 24,
        b"SC" => 31,
        b"SE" => 24,
        b"SI" => 19,
        b"SK" => 24,
        b"SM" => 27,
        b"ST" => 25,
        b"SV" => 28,
        b"TL" => 23,
        b"TN" => 24,
        b"TR" => 26,
        b"UA" => 29,
        b"VA" => 22,
        b"VG" => 24,
        b"XK" => 20,
        _ => return None,
    })
}

pub(crate) fn iban_mod97(chars: &[u8]) -> u32 {
    let mut rem = 0u32;
    for &c in chars[4..].iter().chain(&chars[..4]) {
        if c.is_ascii_digit() {
            rem = (rem * 10 + (c - b'0') as u32) % 97;
        } else {
            rem = (rem * 100 + (c.to_ascii_uppercase() - b'A' + 10) as u32) % 97;
        }
    }
    rem
}

/// IBAN whose two check digits start at digit run `r` (country code at `r - 2`).
pub(crate) fn iban_at(b: &[u8], r: usize) -> Option<Range<usize>> {
    if r < 2 || r + 2 > b.len() {
        return None;
    }
    let s = r - 2;
    if !b[s].is_ascii_uppercase() || !b[s + 1].is_ascii_uppercase() || (s > 0 && is_word(b[s - 1]))
    {
        return None;
    }
    if !is_digit(b[r]) || !is_digit(b[r + 1]) {
        return None;
    }
    let want = iban_len(&b[s..r])?;
    let mut chars = Vec::with_capacity(want);
    let mut i = s;
    while chars.len() < want && i < b.len() {
        let c = b[i];
        if c.is_ascii_uppercase() || c.is_ascii_digit() {
            chars.push(c);
            i += 1;
        } else if c == b' '
            && chars.len() % 4 == 0
            && i + 1 < b.len()
            && b[i + 1].is_ascii_alphanumeric()
        {
            i += 1;
        } else {
            break;
        }
    }
    if chars.len() != want || (i < b.len() && is_word(b[i])) {
        return None;
    }
    (iban_mod97(&chars) == 1).then_some(s..i)
}

// ---------------------------------------------------------------- IP addresses

/// Strict dotted-quad IPv4 at digit-run start `r`.
pub(crate) fn ipv4_at(b: &[u8], r: usize) -> Option<Range<usize>> {
    if r > 0 && (is_word(b[r - 1]) || b[r - 1] == b'.' || b[r - 1] == b'-') {
        return None;
    }
    let mut i = r;
    for k in 0..4 {
        let e = run_end(b, i, 3, is_digit);
        let len = e - i;
        if len == 0 || len > 3 || (len > 1 && b[i] == b'0') || digits_val(&b[i..e]) > 255 {
            return None;
        }
        i = e;
        if k < 3 {
            if i + 1 < b.len() && b[i] == b'.' && is_digit(b[i + 1]) {
                i += 1;
            } else {
                return None;
            }
        }
    }
    if i < b.len()
        && (is_word(b[i]) || (matches!(b[i], b'.' | b'-') && i + 1 < b.len() && is_alnum(b[i + 1])))
    {
        return None;
    }
    if matches!(
        last_word(b, r).as_slice(),
        b"version" | b"ver" | b"v" | b"build" | b"release" | b"firmware"
    ) {
        return None;
    }
    Some(r..i)
}

/// Bytes of an IPv6 token: hex digits, `:`, `.`.
static V6: [bool; 256] = {
    let mut t = [false; 256];
    let mut c = 0;
    while c < 256 {
        let x = c as u8;
        t[c] = x.is_ascii_hexdigit() || x == b':' || x == b'.';
        c += 1;
    }
    t
};

#[inline]
fn is_v6(b: u8) -> bool {
    V6[b as usize]
}

/// IPv6 address containing the digit at `r`.
#[cfg(test)]
pub(crate) fn ipv6_around(b: &[u8], r: usize) -> Option<Range<usize>> {
    ipv6_token(b, r).0
}

/// `ipv6_around`, plus the end of the token of IPv6 characters it looked at when the
/// result is the same for every digit of that token (token shorter than the scan limits,
/// so every start in it finds the same token), else 0.
pub(crate) fn ipv6_token(b: &[u8], r: usize) -> (Option<Range<usize>>, usize) {
    let (l, e, colons) = v6_token(b, r);
    (ipv6_in(b, l, e, colons), if e - l <= 44 { e } else { 0 })
}

/// The token of IPv6 characters around `r` (at most 46 bytes either way) and its colons.
fn v6_token(b: &[u8], r: usize) -> (usize, usize, usize) {
    // Colons are counted while scanning: fewer than two in the token means no IPv6 (a
    // cheap reject for clock times such as "17:30"; trimming dots below keeps the count).
    let mut l = r;
    let mut colons = 0;
    while l > 0 && r - l <= 45 && is_v6(b[l - 1]) {
        l -= 1;
        colons += (b[l] == b':') as usize;
    }
    let lim = r.saturating_add(46).min(b.len());
    let mut e = r;
    while e < lim && is_v6(b[e]) {
        colons += (b[e] == b':') as usize;
        e += 1;
    }
    (l, e, colons)
}

/// The IPv6 address in the token `b[l..e]` with `colons` colons.
fn ipv6_in(b: &[u8], l: usize, e: usize, colons: usize) -> Option<Range<usize>> {
    let mut e = e;
    if e - l > 45 || colons < 2 {
        return None;
    }
    if (l > 0 && (is_word(b[l - 1]) || b[l - 1] == b':')) || (e < b.len() && is_word(b[e])) {
        return None;
    }
    // Sentence punctuation.
    while e > l && b[e - 1] == b'.' {
        e -= 1;
    }
    let tok = std::str::from_utf8(&b[l..e]).ok()?;
    if tok.parse::<Ipv6Addr>().is_ok() {
        return Some(l..e);
    }
    // `fe80::1:` at the end of a clause.
    if tok.ends_with(':')
        && !tok.ends_with("::")
        && tok[..tok.len() - 1].parse::<Ipv6Addr>().is_ok()
    {
        return Some(l..e - 1);
    }
    None
}

// ---------------------------------------------------------------- phone numbers

/// Number of ASCII digits in `s` (SWAR, 8 bytes per step).
fn count_digits(s: &[u8]) -> usize {
    const H: u64 = 0x8080_8080_8080_8080;
    let mut n = 0;
    let mut chunks = s.chunks_exact(8);
    for c in &mut chunks {
        let mut w = [0u8; 8];
        w.copy_from_slice(c);
        let w = u64::from_le_bytes(w);
        let y = w & !H;
        let digit = (y + 0x5050_5050_5050_5050) & !(y + 0x4646_4646_4646_4646) & !w & H;
        // Sum of the per-byte 0/1 flags (no POPCNT in the baseline x86-64 target).
        n += ((digit >> 7).wrapping_mul(0x0101_0101_0101_0101) >> 56) as usize;
    }
    for &c in chunks.remainder() {
        n += c.is_ascii_digit() as usize;
    }
    n
}

fn cc_len(d: &[u8]) -> Option<usize> {
    let two = |x: u32| {
        matches!(x,
            20 | 27 | 30..=34 | 36 | 39 | 40 | 41 | 43..=49 | 51..=58 | 60..=66 | 81 | 82 | 84 | 86
            | 90..=95 | 98)
    };
    let three_family = |x: u32| matches!(x, 21..=26 | 29 | 35 | 37 | 38 | 42 | 50 | 59 | 67..=69 | 85 | 87 | 88 | 96 | 97 | 99);
    match d.first()? {
        b'1' | b'7' => Some(1),
        b'0' => None,
        _ => {
            if d.len() < 2 {
                return None;
            }
            let x = digits_val(&d[..2]);
            if two(x) {
                Some(2)
            } else if three_family(x) && d.len() >= 3 {
                Some(3)
            } else {
                None
            }
        }
    }
}

fn national_len_ok(cc: &[u8], n: usize) -> bool {
    let (lo, hi) = match cc {
        b"1" => (10, 10),
        b"7" => (10, 10),
        b"44" => (9, 10),
        b"49" => (6, 12),
        b"33" | b"34" | b"31" | b"41" | b"48" | b"61" | b"27" => (9, 9),
        b"39" => (6, 11),
        b"32" => (8, 9),
        b"43" => (7, 13),
        b"45" | b"47" | b"65" => (8, 8),
        b"46" => (7, 9),
        b"64" => (8, 10),
        b"81" | b"82" => (9, 10),
        b"86" => (10, 11),
        b"91" | b"52" => (10, 10),
        b"55" => (10, 11),
        _ => (6, 12),
    };
    (lo..=hi).contains(&n)
}

fn nanp_ok(d: &[u8]) -> bool {
    d.len() == 10 && (b'2'..=b'9').contains(&d[0]) && (b'2'..=b'9').contains(&d[3])
}

const PHONE_CONTEXT: [&[u8]; 9] = [
    b"phone",
    b"tel",
    b"call",
    b"mobile",
    b"cell",
    b"fax",
    b"whatsapp",
    b"sms",
    b"contact",
];

/// Phone number whose first digit run starts at `r`.
pub(crate) fn phone_at(b: &[u8], r: usize) -> Option<(Range<usize>, f32)> {
    let n = b.len();
    let mut s = r;
    let mut plus = false;
    let mut open = false;
    if r > 0 && b[r - 1] == b'+' {
        plus = true;
        s = r - 1;
    } else if r > 0 && b[r - 1] == b'(' {
        open = true;
        s = r - 1;
    }
    if !boundary_before(b, s, false)
        || (s > 0 && matches!(b[s - 1], b'(' | b'+'))
        || after_iban_blocks(b, s)
    {
        return None;
    }
    let limit = (s + 28).min(n);
    // Every accepted form has at least 8 digits, all in `r..limit`: a cheap exact reject
    // for the many short numbers of ordinary prose ("$59.95 for 2").
    if count_digits(&b[r..limit.max(r)]) < 8 {
        return None;
    }
    let mut groups: [(usize, usize); 8] = [(0, 0); 8];
    let mut ng = 0;
    let mut seps = [0u8; 8];
    let mut had_paren = open;
    let mut i = r;
    let mut last;
    loop {
        let gs = i;
        while i < limit && is_digit(b[i]) {
            i += 1;
        }
        if i == gs || ng == 8 {
            return None;
        }
        groups[ng] = (gs, i - gs);
        ng += 1;
        last = i;
        let gap = i;
        let mut sep = 0u8;
        if open {
            if i < n && b[i] == b')' {
                i += 1;
                open = false;
                sep = b')';
            } else {
                return None;
            }
        }
        let mut k = 0;
        while i < limit && k < 1 && matches!(b[i], b' ' | b'-' | b'.') {
            if sep == 0 {
                sep = b[i];
            }
            i += 1;
            k += 1;
        }
        if i < limit && b[i] == b'(' && !had_paren {
            had_paren = true;
            open = true;
            i += 1;
            if sep == 0 {
                sep = b'(';
            }
        }
        if !(i < limit && is_digit(b[i])) || i == gap {
            break;
        }
        if ng <= 8 {
            seps[ng - 1] = sep;
        }
    }
    if open {
        return None;
    }
    let e = last;
    if !boundary_after(b, e) || (e < n && b[e] == b')') {
        return None;
    }
    // Every accepted form below has at least 8 digits.
    let total: usize = groups[..ng].iter().map(|g| g.1).sum();
    if total < 8 {
        return None;
    }
    let mut size_buf = [0usize; 8];
    for (k, g) in groups[..ng].iter().enumerate() {
        size_buf[k] = g.1;
    }
    let sizes = &size_buf[..ng];
    // At most 28 bytes were looked at, so at most 28 digits.
    let mut d_buf = [0u8; 32];
    let mut dl = 0;
    for &(gs, l) in &groups[..ng] {
        d_buf[dl..dl + l].copy_from_slice(&b[gs..gs + l]);
        dl += l;
    }
    let d = &d_buf[..dl];
    let seps = &seps[..ng.saturating_sub(1)];
    let intl = plus || (d.starts_with(b"00") && ng >= 2);
    if intl {
        let digits: &[u8] = if plus { d } else { &d[2..] };
        let ccl = if ng >= 2 && !plus && sizes[0] > 2 {
            // 00 44 …: the first group was "00".
            cc_len(digits)?
        } else if ng >= 2 && plus && sizes[0] <= 3 {
            if cc_len(digits) != Some(sizes[0]) && !(sizes[0] == 3 && cc_len(digits).is_some()) {
                return None;
            }
            cc_len(digits)?
        } else {
            cc_len(digits)?
        };
        let cc = &digits[..ccl];
        let mut nat = &digits[ccl..];
        if nat.first() == Some(&b'0') && cc != b"39" {
            nat = &nat[1..];
        }
        if !(8..=15).contains(&digits.len()) || !national_len_ok(cc, nat.len()) {
            return None;
        }
        if cc == b"1" && !nanp_ok(nat) {
            return None;
        }
        if ng == 1 && !plus {
            return None;
        }
        return Some((s..e, 0.9));
    }
    if had_paren && s == r {
        // "(" not at the start: only "1 (415) 555-0132".
        if !(sizes == [1, 3, 3, 4] && d[0] == b'1') {
            return None;
        }
    }
    // NANP: 415-555-0132, (415) 555-0132, 415.555.0132, 1-415-555-0132.
    let consistent = |xs: &[u8]| {
        xs.windows(2)
            .all(|w| w[0] == w[1] || w[0] == b')' || w[0] == b'(')
    };
    if sizes == [3, 3, 4] && nanp_ok(d) && consistent(seps) {
        return Some((s..e, 0.85));
    }
    if sizes == [1, 3, 3, 4] && d[0] == b'1' && nanp_ok(&d[1..]) {
        return Some((s..e, 0.85));
    }
    // Trunk-prefix national numbers: 020 7946 0958, 030 12345678, (01632) 960 001.
    if d[0] == b'0'
        && d[1..].first() != Some(&b'0')
        && (10..=11).contains(&total)
        && ng >= 2
        && sizes.iter().all(|&g| g >= 2)
        && (2..=5).contains(&sizes[0])
        && seps.iter().all(|&c| c != b'.')
    {
        return Some((s..e, 0.7));
    }
    // Bare digits only with a phone word nearby.
    if ng == 1 && (total == 10 && nanp_ok(d) || total == 11 && d[0] == b'1' && nanp_ok(&d[1..])) {
        let c = context_before(b, s, 24);
        if PHONE_CONTEXT.iter().any(|w| contains(&c, w)) {
            return Some((s..e, 0.6));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn phone(s: &str) -> Option<String> {
        let b = s.as_bytes();
        let r = b.iter().position(|c| c.is_ascii_digit())?;
        phone_at(b, r).map(|(x, _)| s[x].to_string())
    }

    #[test]
    fn phones() {
        assert_eq!(
            phone("call +1 415 555 0132 now").as_deref(),
            Some("+1 415 555 0132")
        );
        assert_eq!(
            phone("call (415) 555-0132.").as_deref(),
            Some("(415) 555-0132")
        );
        assert_eq!(phone("415-555-0132").as_deref(), Some("415-555-0132"));
        assert_eq!(
            phone("+44 20 7946 0958").as_deref(),
            Some("+44 20 7946 0958")
        );
        assert_eq!(phone("+49 30 12345678").as_deref(), Some("+49 30 12345678"));
        assert_eq!(phone("020 7946 0958").as_deref(), Some("020 7946 0958"));
        assert_eq!(
            phone("+33 1 23 45 67 89").as_deref(),
            Some("+33 1 23 45 67 89")
        );
        assert_eq!(phone("+14155550132").as_deref(), Some("+14155550132"));
        assert_eq!(phone("2024-03-15"), None);
        assert_eq!(phone("978-3-16-148410-0"), None);
        assert_eq!(phone("123-45-6789"), None);
        assert_eq!(phone("4111 1111 1111 1111"), None);
        assert_eq!(phone("192.168.1.20"), None);
        assert_eq!(phone("ORD-415-555-0132"), None);
    }

    #[test]
    fn cards_and_ibans() {
        let c = |s: &str| card_at(s.as_bytes(), 0).map(|r| s[r].to_string());
        assert!(c("4111 1111 1111 1111").is_some());
        assert!(c("4111-1111-1111-1111").is_some());
        assert!(c("4111111111111111").is_some());
        assert!(c("378282246310005").is_some());
        assert!(c("3782 822463 10005").is_some());
        assert!(c("4111 1111 1111 1112").is_none());
        let i = |s: &str| iban_at(s.as_bytes(), 2).map(|r| s[r].to_string());
        assert_eq!(
            i("DE89 3704 0044 0532 0130 00").as_deref(),
            Some("DE89 3704 0044 0532 0130 00")
        );
        assert_eq!(
            i("GB82WEST12345698765432").as_deref(),
            Some("GB82WEST12345698765432")
        );
        assert!(i("DE88 3704 0044 0532 0130 00").is_none());
    }

    #[test]
    fn ssn_and_ip() {
        let s = |x: &str| ssn_at(x.as_bytes(), 0, 3).is_some();
        assert!(s("123-45-6789"));
        assert!(!s("000-45-6789"));
        assert!(!s("666-45-6789"));
        assert!(!s("923-45-6789"));
        assert!(!s("123-00-6789"));
        assert!(!s("123-45-0000"));
        assert!(ipv4_at(b"10.0.0.1", 0).is_some());
        assert!(ipv4_at(b"256.0.0.1", 0).is_none());
        assert!(ipv4_at(b"1.2.3.4.5", 0).is_none());
        assert!(ipv6_around(b"2001:db8::ff00:42:8329", 0).is_some());
        assert!(ipv6_around(b"12:30:45", 0).is_none());
    }
}
