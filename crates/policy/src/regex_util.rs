//! Size-limited, linear-time regexes (regex-automata's meta engine never backtracks
//! exponentially; the limits bound compile time and memory for hostile patterns).

use regex_automata::meta::{self, Regex};
use regex_automata::util::syntax;

/// Longest accepted pattern.
pub const MAX_REGEX_LEN: usize = 1024;
const NFA_SIZE_LIMIT: usize = 1 << 20;

/// Compiles a user regex, returning an author-facing message on failure.
pub fn build(pattern: &str) -> Result<Regex, String> {
    if pattern.len() > MAX_REGEX_LEN {
        return Err(format!(
            "regex is {} bytes; the limit is {MAX_REGEX_LEN}",
            pattern.len()
        ));
    }
    Regex::builder()
        .syntax(syntax::Config::new().nest_limit(32))
        .configure(
            meta::Config::new()
                .nfa_size_limit(Some(NFA_SIZE_LIMIT))
                .onepass_size_limit(Some(NFA_SIZE_LIMIT))
                .dfa_size_limit(Some(NFA_SIZE_LIMIT))
                .hybrid_cache_capacity(2 * NFA_SIZE_LIMIT),
        )
        .build(pattern)
        .map_err(|e| describe(&e))
}

fn describe(e: &meta::BuildError) -> String {
    match e.syntax_error() {
        Some(regex_syntax::Error::Parse(ast)) => {
            format!(
                "invalid regex: {} (at offset {})",
                ast.kind(),
                ast.span().start.offset
            )
        }
        Some(regex_syntax::Error::Translate(hir)) => {
            format!(
                "invalid regex: {} (at offset {})",
                hir.kind(),
                hir.span().start.offset
            )
        }
        Some(other) => format!("invalid regex: {other}"),
        None => match e.size_limit() {
            Some(limit) => format!("regex is too large once compiled (limit {limit} bytes)"),
            None => format!("invalid regex: {e}"),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_are_readable() {
        let e = build("a(b").unwrap_err();
        assert!(e.contains("unclosed group"), "{e}");
        let e = build("a{5000}{5000}").unwrap_err();
        assert!(e.contains("too large") || e.contains("invalid"), "{e}");
        assert!(
            !build("(a+)+$")
                .unwrap()
                .is_match("aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa!")
        );
        assert!(build(&"a".repeat(2000)).is_err());
    }
}
