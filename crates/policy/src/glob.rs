//! Tool-name globs: `*` matches any run of characters (dots included, as in IAM actions),
//! `?` exactly one character, and every other character — regex metacharacters and
//! backslashes included — matches itself. There is no escape syntax.

use std::fmt;

/// Longest accepted glob; keeps the containment check used for warnings cheap.
pub const MAX_GLOB_LEN: usize = 256;

#[derive(Debug, Clone, PartialEq, Eq)]
enum Tok {
    /// A run of literal characters.
    Lit(String),
    /// `?`
    One,
    /// `*` (consecutive stars collapse into one).
    Star,
}

/// A compiled tool-name glob.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Glob {
    pattern: String,
    toks: Vec<Tok>,
}

/// Why a glob was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GlobError {
    #[error("empty glob matches no tool name")]
    Empty,
    #[error("glob is longer than {MAX_GLOB_LEN} characters")]
    TooLong,
    #[error("glob contains a control or whitespace character at offset {0}")]
    BadChar(usize),
}

impl Glob {
    pub fn new(pattern: &str) -> Result<Self, GlobError> {
        if pattern.is_empty() {
            return Err(GlobError::Empty);
        }
        if pattern.chars().count() > MAX_GLOB_LEN {
            return Err(GlobError::TooLong);
        }
        if let Some((i, _)) = pattern
            .char_indices()
            .find(|(_, c)| c.is_control() || c.is_whitespace())
        {
            return Err(GlobError::BadChar(i));
        }
        let mut toks = Vec::new();
        for c in pattern.chars() {
            match c {
                '*' => {
                    if toks.last() != Some(&Tok::Star) {
                        toks.push(Tok::Star);
                    }
                }
                '?' => toks.push(Tok::One),
                c => match toks.last_mut() {
                    Some(Tok::Lit(s)) => s.push(c),
                    _ => toks.push(Tok::Lit(c.to_string())),
                },
            }
        }
        Ok(Self {
            pattern: pattern.to_owned(),
            toks,
        })
    }

    pub fn as_str(&self) -> &str {
        &self.pattern
    }

    /// True when the glob has no wildcard, i.e. names exactly one tool.
    pub fn is_exact(&self) -> bool {
        matches!(self.toks.as_slice(), [Tok::Lit(_)])
    }

    /// The literal text every matching name starts with (empty if the glob starts with a
    /// wildcard); the compiled index groups globs by it.
    pub fn literal_prefix(&self) -> &str {
        match self.toks.first() {
            Some(Tok::Lit(s)) => s,
            _ => "",
        }
    }

    /// The literal text every matching name ends with (empty if the glob ends with a
    /// wildcard).
    pub fn literal_suffix(&self) -> &str {
        match self.toks.last() {
            Some(Tok::Lit(s)) => s,
            _ => "",
        }
    }

    /// Whether `name` matches. Greedy with backtracking to the last star: O(len(name) ×
    /// len(glob)) in the worst case, and glob length is bounded.
    pub fn matches(&self, name: &str) -> bool {
        let toks = &self.toks;
        // fast paths for the common shapes: `name`, `prefix*`, `*suffix`
        match toks.as_slice() {
            [Tok::Lit(l)] => return name == l,
            [Tok::Lit(l), Tok::Star] => return name.starts_with(l.as_str()),
            [Tok::Star, Tok::Lit(l)] => return name.ends_with(l.as_str()),
            [Tok::Star] => return true,
            _ => {}
        }
        let (mut p, mut i) = (0usize, 0usize);
        let mut star: Option<(usize, usize)> = None;
        loop {
            if let Some(tok) = toks.get(p) {
                match tok {
                    Tok::Star => {
                        star = Some((p + 1, i));
                        p += 1;
                        continue;
                    }
                    Tok::One => {
                        if let Some(c) = name.get(i..).and_then(|r| r.chars().next()) {
                            p += 1;
                            i += c.len_utf8();
                            continue;
                        }
                    }
                    Tok::Lit(l) => {
                        if name.get(i..).is_some_and(|r| r.starts_with(l.as_str())) {
                            p += 1;
                            i += l.len();
                            continue;
                        }
                    }
                }
            } else if i == name.len() {
                return true;
            }
            match star {
                Some((sp, si)) => {
                    let Some(c) = name.get(si..).and_then(|r| r.chars().next()) else {
                        return false;
                    };
                    let ni = si + c.len_utf8();
                    star = Some((sp, ni));
                    p = sp;
                    i = ni;
                }
                None => return false,
            }
        }
    }

    /// Sound (never claims coverage that does not hold) but incomplete check that every
    /// name matched by `other` is matched by `self`. Used only for "can never fire" warnings.
    pub fn covers(&self, other: &Glob) -> bool {
        let a = expand(&self.toks);
        let b = expand(&other.toks);
        let mut memo = vec![None; (a.len() + 1) * (b.len() + 1)];
        covers_at(&a, &b, 0, 0, &mut memo)
    }
}

impl fmt::Display for Glob {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.pattern)
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Sym {
    C(char),
    One,
    Star,
}

fn expand(toks: &[Tok]) -> Vec<Sym> {
    let mut out = Vec::new();
    for t in toks {
        match t {
            Tok::Lit(s) => out.extend(s.chars().map(Sym::C)),
            Tok::One => out.push(Sym::One),
            Tok::Star => out.push(Sym::Star),
        }
    }
    out
}

fn covers_at(a: &[Sym], b: &[Sym], i: usize, j: usize, memo: &mut [Option<bool>]) -> bool {
    let key = i * (b.len() + 1) + j;
    if let Some(Some(r)) = memo.get(key) {
        return *r;
    }
    let r = match (a.get(i), b.get(j)) {
        (None, None) => true,
        (None, Some(_)) | (Some(Sym::C(_) | Sym::One), None) => false,
        (Some(Sym::Star), _) => {
            covers_at(a, b, i + 1, j, memo) || (j < b.len() && covers_at(a, b, i, j + 1, memo))
        }
        (Some(Sym::One), Some(Sym::C(_) | Sym::One)) => covers_at(a, b, i + 1, j + 1, memo),
        (Some(Sym::C(x)), Some(Sym::C(y))) => x == y && covers_at(a, b, i + 1, j + 1, memo),
        (Some(Sym::C(_) | Sym::One), Some(_)) => false,
    };
    if let Some(slot) = memo.get_mut(key) {
        *slot = Some(r);
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    fn g(p: &str) -> Glob {
        Glob::new(p).unwrap()
    }

    #[test]
    fn star_crosses_dots() {
        assert!(g("system.*").matches("system.fs.delete"));
        assert!(g("system.*").matches("system."));
        assert!(!g("system.*").matches("system"));
        assert!(!g("system.*").matches("systemx"));
        assert!(g("*").matches(""));
        assert!(g("*.delete").matches("a.b.c.delete"));
        assert!(g("a*b*c").matches("abc"));
        assert!(g("a*b*c").matches("aXbYbZc"));
        assert!(!g("a*b*c").matches("aXbYbZ"));
    }

    #[test]
    fn question_mark_is_one_char() {
        assert!(g("file.rea?").matches("file.read"));
        assert!(!g("file.rea?").matches("file.rea"));
        assert!(!g("file.rea?").matches("file.reads"));
        assert!(g("?").matches("é"));
        assert!(!g("?").matches(""));
    }

    #[test]
    fn metacharacters_are_literal() {
        assert!(g("a.b").matches("a.b"));
        assert!(!g("a.b").matches("axb"));
        assert!(g("x+(y)|[z]^$").matches("x+(y)|[z]^$"));
        assert!(!g("x+").matches("xx"));
        assert!(g(r"a\*").matches(r"a\anything"));
        assert!(!g(r"a\*").matches("a*"));
        assert!(g("{a,b}").matches("{a,b}"));
        assert!(!g("{a,b}").matches("a"));
    }

    #[test]
    fn bad_globs() {
        assert_eq!(Glob::new(""), Err(GlobError::Empty));
        assert!(matches!(Glob::new("a b"), Err(GlobError::BadChar(1))));
        assert_eq!(Glob::new(&"a".repeat(300)), Err(GlobError::TooLong));
    }

    #[test]
    fn exactness_and_prefix() {
        assert!(g("email.send").is_exact());
        assert!(!g("email.*").is_exact());
        assert_eq!(g("email.*").literal_prefix(), "email.");
        assert_eq!(g("*.send").literal_prefix(), "");
        assert_eq!(g("*.send").literal_suffix(), ".send");
        assert_eq!(g("a*").literal_suffix(), "");
        assert_eq!(g("a**b").as_str(), "a**b");
        assert!(g("a**b").matches("ab"));
    }

    #[test]
    fn coverage() {
        assert!(g("*").covers(&g("anything.*")));
        assert!(g("system.*").covers(&g("system.fs.*")));
        assert!(g("system.*").covers(&g("system.exec")));
        assert!(!g("system.*").covers(&g("sys*")));
        assert!(g("a?c").covers(&g("abc")));
        assert!(!g("abc").covers(&g("a?c")));
        assert!(g("*a*").covers(&g("*a*a*")));
        assert!(!g("*.read").covers(&g("*")));
        assert!(g("x").covers(&g("x")));
    }
}
