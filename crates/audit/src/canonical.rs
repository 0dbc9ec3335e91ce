//! Canonical JSON (RFC 8785 / JCS, restricted to integers and strings).
//!
//! Hashes and signatures must not depend on map order, whitespace or serde features
//! (the workspace enables `preserve_order`), so everything hashed goes through
//! [`canonical_json`], which sorts keys itself.

use serde_json::Value;
use std::fmt::Write as _;

/// Largest integer magnitude a JCS verifier (an IEEE-754 double) represents exactly.
/// Larger integers would be rounded by a JavaScript or Python-float verifier, so they
/// are refused rather than silently hashed differently.
pub const MAX_SAFE_INTEGER: u64 = (1 << 53) - 1;

/// Why a value has no canonical form.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CanonicalError {
    /// Floats are forbidden in hashed data: their textual form differs between
    /// implementations in ways that are easy to get wrong. Encode them as strings.
    #[error("floating-point number at {path}: hashed fields may contain only integers and strings")]
    Float { path: String },
    /// Integers beyond ±(2^53-1) are not exactly representable in JCS.
    #[error("integer at {path} is outside ±(2^53-1)")]
    IntegerOutOfRange { path: String },
}

/// Encodes `value` as RFC 8785 canonical JSON.
///
/// Rules: object members sorted by the UTF-16 code units of their names; no whitespace;
/// strings escaped as ECMAScript `JSON.stringify` does (`\"`, `\\`, `\b`, `\f`, `\n`,
/// `\r`, `\t`, other controls below U+0020 as `\u00xx` lowercase, everything else
/// literal UTF-8); integers in plain decimal; floats rejected.
pub fn canonical_json(value: &Value) -> Result<String, CanonicalError> {
    let mut out = String::new();
    let mut path = String::new();
    write_value(&mut out, value, &mut path)?;
    Ok(out)
}

fn write_value(out: &mut String, value: &Value, path: &mut String) -> Result<(), CanonicalError> {
    match value {
        Value::Null => out.push_str("null"),
        Value::Bool(true) => out.push_str("true"),
        Value::Bool(false) => out.push_str("false"),
        Value::Number(n) => {
            if let Some(u) = n.as_u64() {
                if u > MAX_SAFE_INTEGER {
                    return Err(CanonicalError::IntegerOutOfRange {
                        path: display_path(path),
                    });
                }
                let _ = write!(out, "{u}");
            } else if let Some(i) = n.as_i64() {
                if i.unsigned_abs() > MAX_SAFE_INTEGER {
                    return Err(CanonicalError::IntegerOutOfRange {
                        path: display_path(path),
                    });
                }
                let _ = write!(out, "{i}");
            } else {
                return Err(CanonicalError::Float {
                    path: display_path(path),
                });
            }
        }
        Value::String(s) => write_string(out, s),
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                let len = path.len();
                let _ = write!(path, "/{i}");
                write_value(out, item, path)?;
                path.truncate(len);
            }
            out.push(']');
        }
        Value::Object(map) => {
            let mut entries: Vec<(&String, &Value)> = map.iter().collect();
            entries.sort_by(|(a, _), (b, _)| a.encode_utf16().cmp(b.encode_utf16()));
            out.push('{');
            for (i, (k, v)) in entries.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_string(out, k);
                out.push(':');
                let len = path.len();
                path.push('/');
                // JSON Pointer escaping, only for error messages.
                path.push_str(&k.replace('~', "~0").replace('/', "~1"));
                write_value(out, v, path)?;
                path.truncate(len);
            }
            out.push('}');
        }
    }
    Ok(())
}

fn display_path(path: &str) -> String {
    if path.is_empty() {
        "/".to_owned()
    } else {
        path.to_owned()
    }
}

fn write_string(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\u{08}' => out.push_str("\\b"),
            '\u{0c}' => out.push_str("\\f"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn c(v: &Value) -> String {
        canonical_json(v).unwrap()
    }

    #[test]
    fn rfc8785_key_order_is_utf16() {
        // RFC 8785 §3.2.3: U+1F600 (surrogates D83D DE00) sorts before U+FB33 in UTF-16,
        // although it comes after it in code-point order.
        let v: Value = serde_json::from_str(
            r#"{"\u20ac":"Euro Sign","\r":"Carriage Return","\ufb33":"Hebrew Letter Dalet With Dagesh","1":"One","\ud83d\ude00":"Emoji: Grinning Face","\u0080":"Control","\u00f6":"Latin Small Letter O With Diaeresis"}"#,
        )
        .unwrap();
        assert_eq!(
            c(&v),
            "{\"\\r\":\"Carriage Return\",\"1\":\"One\",\"\u{80}\":\"Control\",\"\u{f6}\":\"Latin Small Letter O With Diaeresis\",\"\u{20ac}\":\"Euro Sign\",\"\u{1f600}\":\"Emoji: Grinning Face\",\"\u{fb33}\":\"Hebrew Letter Dalet With Dagesh\"}"
        );
    }

    #[test]
    fn escapes_follow_json_stringify() {
        let v = json!({"s": "q\"b\\s/\u{08}\u{0c}\n\r\t\u{01}\u{1f}\u{7f}\u{2028}é"});
        assert_eq!(
            c(&v),
            "{\"s\":\"q\\\"b\\\\s/\\b\\f\\n\\r\\t\\u0001\\u001f\u{7f}\u{2028}é\"}"
        );
    }

    #[test]
    fn no_whitespace_nested_and_literals() {
        let v = json!({"b": [1, -2, true, false, null, {"z": 0, "a": []}], "a": {}});
        assert_eq!(
            c(&v),
            r#"{"a":{},"b":[1,-2,true,false,null,{"a":[],"z":0}]}"#
        );
    }

    #[test]
    fn independent_of_insertion_order() {
        let a: Value = serde_json::from_str(r#"{"x":1,"y":{"q":2,"p":3}}"#).unwrap();
        let b: Value = serde_json::from_str(r#"{"y":{"p":3,"q":2},"x":1}"#).unwrap();
        assert_eq!(c(&a), c(&b));
        assert_eq!(c(&a), r#"{"x":1,"y":{"p":3,"q":2}}"#);
    }

    #[test]
    fn integers_at_the_safe_limit() {
        assert_eq!(c(&json!(9_007_199_254_740_991u64)), "9007199254740991");
        assert_eq!(c(&json!(-9_007_199_254_740_991i64)), "-9007199254740991");
        assert_eq!(
            canonical_json(&json!({"a": [9_007_199_254_740_992u64]})),
            Err(CanonicalError::IntegerOutOfRange {
                path: "/a/0".into()
            })
        );
    }

    #[test]
    fn floats_are_rejected_with_their_path() {
        assert_eq!(
            canonical_json(&json!({"d": {"a/b": 1.5}})),
            Err(CanonicalError::Float {
                path: "/d/a~1b".into()
            })
        );
        assert_eq!(
            canonical_json(&json!(1.0)),
            Err(CanonicalError::Float { path: "/".into() })
        );
    }
}
