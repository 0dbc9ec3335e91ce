//! Secret validators, each triggered by a literal anchor found by the prefilter.

use std::ops::Range;

use super::{PEM_CAP, TOKEN_CAP, contains, entropy, is_alnum, is_word, run_end};
use crate::SecretKind;

#[inline]
fn b64url(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'-' || b == b'_'
}

#[inline]
fn free_before(b: &[u8], p: usize) -> bool {
    p == 0 || !(is_word(b[p - 1]) || b[p - 1] == b'-')
}

/// A token made of `prefix` followed by `min..=max` bytes of class `f`, ending at a
/// non-`f` byte.
fn prefixed(
    b: &[u8],
    p: usize,
    prefix: &[u8],
    min: usize,
    max: usize,
    f: impl Fn(u8) -> bool + Copy,
) -> Option<Range<usize>> {
    if !b[p..].starts_with(prefix) || !free_before(b, p) {
        return None;
    }
    let s = p + prefix.len();
    let e = run_end(b, s, max, f);
    let len = e - s;
    (len >= min && len <= max).then_some(p..e)
}

fn mixed(v: &[u8]) -> bool {
    v.iter().any(u8::is_ascii_digit)
        && v.iter().any(u8::is_ascii_uppercase)
        && v.iter().any(u8::is_ascii_lowercase)
}

/// Anchors handled here (index into [`crate::scanner`]'s anchor table).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SecretAnchor {
    Aws,
    GithubClassic,
    GithubPat,
    Gitlab,
    Slack,
    Stripe,
    Google,
    SkDash,
    Jwt,
    Pem,
    Assign,
}

pub(crate) fn validate(
    b: &[u8],
    p: usize,
    anchor_len: usize,
    a: SecretAnchor,
) -> Option<(Range<usize>, SecretKind, f32)> {
    match a {
        SecretAnchor::Aws => {
            if !(b[p..].starts_with(b"AKIA") || b[p..].starts_with(b"ASIA")) {
                return None;
            }
            let r = prefixed(b, p, &b[p..p + 4], 16, 16, |c| {
                c.is_ascii_uppercase() || c.is_ascii_digit()
            })?;
            if r.end < b.len() && is_alnum(b[r.end]) {
                return None;
            }
            Some((r, SecretKind::AwsAccessKey, 0.95))
        }
        SecretAnchor::GithubClassic => {
            let r = prefixed(b, p, &b[p..p + 4], 36, 251, |c| c.is_ascii_alphanumeric())?;
            (b[p..p + 2] == *b"gh"
                && matches!(b[p + 2], b'p' | b'o' | b'u' | b's' | b'r')
                && mixed(&b[p + 4..r.end]))
            .then_some((r, SecretKind::Github, 0.97))
        }
        SecretAnchor::GithubPat => {
            let r = prefixed(b, p, b"github_pat_", 22, 255, is_word)?;
            Some((r, SecretKind::Github, 0.97))
        }
        SecretAnchor::Gitlab => {
            let r = prefixed(b, p, b"glpat-", 20, 100, b64url)?;
            Some((r, SecretKind::Gitlab, 0.95))
        }
        SecretAnchor::Slack => {
            let xox = b[p..].starts_with(b"xox")
                && matches!(b.get(p + 3), Some(b'a' | b'b' | b'p' | b'r' | b's'));
            if !(xox || b[p..].starts_with(b"xapp")) {
                return None;
            }
            let r = prefixed(b, p, &b[p..p + anchor_len], 10, 255, |c| {
                c.is_ascii_alphanumeric() || c == b'-'
            })?;
            let tail = &b[p + anchor_len..r.end];
            (tail.iter().any(u8::is_ascii_digit) && contains(tail, b"-")).then_some((
                r,
                SecretKind::Slack,
                0.95,
            ))
        }
        SecretAnchor::Stripe => {
            if b[p..p + anchor_len].iter().any(u8::is_ascii_uppercase) {
                return None;
            }
            let r = prefixed(b, p, &b[p..p + anchor_len], 16, 247, |c| {
                c.is_ascii_alphanumeric()
            })?;
            Some((r, SecretKind::Stripe, 0.95))
        }
        SecretAnchor::Google => {
            let r = prefixed(b, p, b"AIza", 35, 35, b64url)?;
            Some((r, SecretKind::GoogleApiKey, 0.95))
        }
        SecretAnchor::SkDash => {
            if b[p..].starts_with(b"sk-ant-") {
                let r = prefixed(b, p, b"sk-ant-", 32, 400, b64url)?;
                return Some((r, SecretKind::Anthropic, 0.97));
            }
            let r = prefixed(b, p, b"sk-", 20, 400, b64url)?;
            let v = &b[p + 3..r.end];
            (mixed(v) && entropy(v) >= 3.5).then_some((r, SecretKind::Openai, 0.9))
        }
        SecretAnchor::Jwt => jwt(b, p).map(|r| (r, SecretKind::Jwt, 0.95)),
        SecretAnchor::Pem => pem(b, p).map(|r| (r, SecretKind::PrivateKey, 0.99)),
        SecretAnchor::Assign => assignment(b, p, anchor_len),
    }
}

fn jwt(b: &[u8], p: usize) -> Option<Range<usize>> {
    if !b[p..].starts_with(b"eyJ") || (p > 0 && (b64url(b[p - 1]) || b[p - 1] == b'.')) {
        return None;
    }
    let mut i = p;
    for seg in 0..3 {
        let e = run_end(b, i, TOKEN_CAP, b64url);
        if e - p > TOKEN_CAP {
            return None;
        }
        let min = if seg == 2 { 16 } else { 10 };
        if e - i < min {
            return None;
        }
        if seg == 1 && !b[i..].starts_with(b"eyJ") {
            return None;
        }
        i = e;
        if seg < 2 {
            if i < b.len() && b[i] == b'.' {
                i += 1;
            } else {
                return None;
            }
        }
    }
    if i < b.len() && b[i] == b'.' && i + 1 < b.len() && b64url(b[i + 1]) {
        return None;
    }
    Some(p..i)
}

fn pem(b: &[u8], p: usize) -> Option<Range<usize>> {
    if !b[p..].starts_with(b"-----BEGIN ") {
        return None;
    }
    let hs = p + 11;
    let he = run_end(b, hs, 60, |c| {
        c.is_ascii_uppercase() || c == b' ' || c.is_ascii_digit()
    });
    let name = &b[hs..he];
    if !b[he..].starts_with(b"-----") || !contains(name, b"PRIVATE KEY") {
        return None;
    }
    let body = he + 5;
    let lim = (p + PEM_CAP).min(b.len());
    // Header, then contiguous base64 / `Key: value` lines, then the END line. Lines may be
    // separated by newlines, JSON-escaped `\n`, or single spaces (pasted keys). Only
    // contiguous lines count, so the block's extent is decided locally.
    let name_char = |c: u8| c.is_ascii_uppercase() || c == b' ' || c.is_ascii_digit();
    let mut i = body;
    let mut end = body;
    let mut empties = 0;
    while i < lim {
        if b[i..lim].starts_with(b"-----END ") {
            let fe = run_end(b, i + 9, 60, name_char);
            if b[fe..lim].starts_with(b"-----") {
                return Some(p..fe + 5);
            }
            break;
        }
        let le = i + b[i..lim]
            .iter()
            .position(|&c| matches!(c, b'\n' | b'\r' | b'\\' | b' '))
            .unwrap_or(lim - i);
        let line = &b[i..le];
        let ok = line.iter().all(|&c| {
            c.is_ascii_alphanumeric() || matches!(c, b'+' | b'/' | b'=' | b'-' | b':' | b',')
        });
        if !ok {
            break;
        }
        if line.is_empty() {
            empties += 1;
            if empties > 3 {
                break;
            }
        } else {
            empties = 0;
            end = le;
        }
        // Separator.
        let rest = &b[le..lim];
        let sep = if rest.starts_with(b"\r\n") || rest.starts_with(b"\\r\\n") {
            if rest[0] == b'\r' { 2 } else { 4 }
        } else if rest.starts_with(b"\n") || rest.starts_with(b" ") {
            1
        } else if rest.starts_with(b"\\n") {
            2
        } else {
            break;
        };
        i = le + sep;
    }
    Some(p..end)
}

const PLACEHOLDERS: [&[u8]; 13] = [
    b"xxxx",
    b"****",
    b"....",
    b"changeme",
    b"your",
    b"example",
    b"placeholder",
    b"redacted",
    b"dummy",
    b"password",
    b"<",
    b"${",
    b"{{",
];

/// `password = "…"`, `api_key: …`, `secret=…`: the anchor is a word inside the key
/// name; the value is reported if it looks like a credential (length, character classes,
/// entropy) rather than code, a type or a placeholder.
fn assignment(b: &[u8], p: usize, alen: usize) -> Option<(Range<usize>, SecretKind, f32)> {
    let ident = |c: u8| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'-' | b'.');
    let ir = run_end(b, p + alen, 40, ident);
    if ir - (p + alen) > 40 {
        return None;
    }
    let n = b.len();
    let mut i = ir;
    if i < n && matches!(b[i], b'"' | b'\'') {
        i += 1;
    }
    while i < n && i - ir < 4 && matches!(b[i], b' ' | b'\t') {
        i += 1;
    }
    if i >= n {
        return None;
    }
    match b[i] {
        b'=' => {
            if i + 1 < n && b[i + 1] == b'=' {
                return None;
            }
            i += 1;
            if i < n && b[i] == b'>' {
                i += 1;
            }
        }
        b':' => {
            i += 1;
            if i < n && b[i] == b'=' {
                i += 1;
            }
            if i < n && b[i] == b':' {
                return None;
            }
        }
        _ => return None,
    }
    let op_end = i;
    // Start of the key name (only the AWS check below reads it).
    let mut il = p;
    while il > 0 && p - il < 40 && ident(b[il - 1]) {
        il -= 1;
    }
    while i < n && i - op_end < 4 && matches!(b[i], b' ' | b'\t') {
        i += 1;
    }
    let quote = if i < n && matches!(b[i], b'"' | b'\'' | b'`') {
        i += 1;
        Some(b[i - 1])
    } else {
        None
    };
    let vs = i;
    let ve = match quote {
        Some(q) => run_end(b, vs, 128, |c| {
            c != q && c != b'\n' && (c == b' ' || c.is_ascii_graphic())
        }),
        None => run_end(b, vs, 128, |c| {
            c.is_ascii_graphic()
                && !matches!(
                    c,
                    b'"' | b'\''
                        | b'`'
                        | b','
                        | b';'
                        | b'('
                        | b')'
                        | b'['
                        | b']'
                        | b'{'
                        | b'}'
                        | b'<'
                        | b'>'
                        | b':'
                        | b'\\'
                )
        }),
    };
    let v = &b[vs..ve];
    if v.len() < 8 || v.len() > 128 {
        return None;
    }
    if let Some(q) = quote {
        if ve >= n || b[ve] != q {
            return None;
        }
    } else if ve < n && matches!(b[ve], b'(' | b'[' | b'.') {
        return None;
    }
    let lower = v.to_ascii_lowercase();
    if PLACEHOLDERS.iter().any(|p| contains(&lower, p))
        || matches!(v[0], b'$' | b'@' | b'&' | b'*')
        || (v[0] == b'%' && v[v.len() - 1] == b'%')
        || contains(v, b"://")
    {
        return None;
    }
    let has_digit = v.iter().any(u8::is_ascii_digit);
    let has_lower = v.iter().any(u8::is_ascii_lowercase);
    let has_upper = v.iter().any(u8::is_ascii_uppercase);
    let has_sym = v.iter().any(|c| !c.is_ascii_alphanumeric());
    let classes = has_digit as u8 + has_lower as u8 + has_upper as u8 + has_sym as u8;
    // AWS secret access key: 40 base64 characters under an AWS-ish name.
    let name = || b[il..ir].to_ascii_lowercase();
    if v.len() == 40
        && v.iter()
            .all(|&c| c.is_ascii_alphanumeric() || c == b'/' || c == b'+')
        && {
            let name = name();
            contains(&name, b"aws")
                || contains(&name, b"secret_access")
                || contains(&name, b"secretaccess")
        }
        && classes >= 2
    {
        return Some((vs..ve, SecretKind::AwsSecretKey, 0.9));
    }
    if v.contains(&b' ') || !(has_digit || has_sym) || classes < 2 {
        return None;
    }
    // Code identifiers (`sha256`, `hmac_sha256`, `self.token2`) are not secrets.
    if quote.is_none() {
        let letters_then_digits = {
            let k = v.iter().position(u8::is_ascii_digit).unwrap_or(v.len());
            v[..k]
                .iter()
                .all(|&c| c.is_ascii_alphabetic() || c == b'_' || c == b'.')
                && v[k..].iter().all(u8::is_ascii_digit)
                && v.len() - k <= 4
        };
        if letters_then_digits {
            return None;
        }
    }
    let h = entropy(v);
    let need = if v.len() >= 16 { 3.0 } else { 2.5 };
    if h < need {
        return None;
    }
    Some((
        vs..ve,
        SecretKind::Generic,
        if classes >= 3 { 0.8 } else { 0.7 },
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn first(s: &str, a: SecretAnchor, anchor: &str) -> Option<String> {
        let p = s.find(anchor)?;
        validate(s.as_bytes(), p, anchor.len(), a).map(|(r, _, _)| s[r].to_string())
    }

    #[test]
    fn assignments() {
        assert_eq!(
            first("password=Tr0ub4dor&3x", SecretAnchor::Assign, "password").as_deref(),
            Some("Tr0ub4dor&3x")
        );
        assert_eq!(
            first(
                "db_password: \"s3cr3t-P4ss!\"",
                SecretAnchor::Assign,
                "password"
            )
            .as_deref(),
            Some("s3cr3t-P4ss!")
        );
        assert_eq!(
            first("password: String::new()", SecretAnchor::Assign, "password"),
            None
        );
        assert_eq!(
            first(
                "let token = self.next_token();",
                SecretAnchor::Assign,
                "token"
            ),
            None
        );
        assert_eq!(
            first("secret = hmac_sha256", SecretAnchor::Assign, "secret"),
            None
        );
        assert_eq!(
            first("password: ********", SecretAnchor::Assign, "password"),
            None
        );
        assert_eq!(
            first(
                "if password == other_password1 {",
                SecretAnchor::Assign,
                "password"
            ),
            None
        );
        assert_eq!(
            first(
                "aws_secret_access_key = wJalrXUtnFEMI/K7MDENG/bPxRfiCY9QWERTYKEY",
                SecretAnchor::Assign,
                "secret"
            )
            .as_deref(),
            Some("wJalrXUtnFEMI/K7MDENG/bPxRfiCY9QWERTYKEY")
        );
    }

    #[test]
    fn tokens() {
        assert!(first("key AKIAIOSFODNN7EXAMPLE x", SecretAnchor::Aws, "AKIA").is_some());
        assert!(first("xAKIAIOSFODNN7EXAMPLE", SecretAnchor::Aws, "AKIA").is_none());
        let jwt = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U";
        assert_eq!(
            first(&format!("Bearer {jwt}."), SecretAnchor::Jwt, "eyJ").as_deref(),
            Some(jwt)
        );
        let pem = "-----BEGIN RSA PRIVATE KEY-----\nMIIBOgIBAAJBAKj34GkxFhD90vcNLYLInFEX6Ppy1tPf9Cnzj4p4WGeKLs1Pt8Qu\n-----END RSA PRIVATE KEY-----";
        assert_eq!(
            first(&format!("x\n{pem}\ny"), SecretAnchor::Pem, "-----BEGIN").as_deref(),
            Some(pem)
        );
        assert!(
            first(
                "the task-management-system-for-everyone",
                SecretAnchor::SkDash,
                "sk-"
            )
            .is_none()
        );
    }
}
