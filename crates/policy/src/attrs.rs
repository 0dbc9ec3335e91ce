//! `--attr key=value` handling shared by `explain`, `matrix` and case files.

use crate::eval::EvalContext;
use crate::model::{FieldPath, Root};
use serde_json::{Map, Value};

/// Where a bare attribute name goes: `plan` → `tenant.plan`, `role` → `user.role`,
/// `tenant_id` → `tenant.id`, `user_id` → `user.id`, `model` → `request.model`; any other
/// bare name → `user.<name>`. Dotted names (`tenant.attributes.domain`) go where they say.
pub fn attr_path(key: &str) -> Result<FieldPath, String> {
    let path = match key {
        "plan" => "tenant.plan".to_owned(),
        "role" => "user.role".to_owned(),
        "tenant_id" => "tenant.id".to_owned(),
        "user_id" => "user.id".to_owned(),
        "model" => "request.model".to_owned(),
        "tool" | "args" => k_as_is(key),
        k if !k.contains('.') => format!("user.{k}"),
        k => k.to_owned(),
    };
    let p = FieldPath::parse(&path)?;
    if p.root == Root::Tool {
        return Err("the tool is set with --tool / `tool:`, not as an attribute".to_owned());
    }
    if p.segments.is_empty() && p.root != Root::Args {
        return Err(format!(
            "attribute `{key}` needs a name after `{}.`",
            p.root.as_str()
        ));
    }
    Ok(p)
}

/// `123`, `1.5`, `true`, `false` become JSON numbers/booleans; anything else a string.
pub fn attr_value(s: &str) -> Value {
    if s == "true" {
        return Value::Bool(true);
    }
    if s == "false" {
        return Value::Bool(false);
    }
    if let Ok(i) = s.parse::<i64>() {
        return Value::Number(i.into());
    }
    if let Ok(f) = s.parse::<f64>()
        && let Some(n) = serde_json::Number::from_f64(f)
        && s.chars()
            .all(|c| c.is_ascii_digit() || matches!(c, '.' | '-' | '+' | 'e' | 'E'))
    {
        return Value::Number(n);
    }
    Value::String(s.to_owned())
}

fn set_in(map: &mut Map<String, Value>, segments: &[String], value: Value) {
    let Some((first, rest)) = segments.split_first() else {
        return;
    };
    if rest.is_empty() {
        map.insert(first.clone(), value);
        return;
    }
    let entry = map
        .entry(first.clone())
        .or_insert_with(|| Value::Object(Map::new()));
    if !entry.is_object() {
        *entry = Value::Object(Map::new());
    }
    if let Value::Object(m) = entry {
        set_in(m, rest, value);
    }
}

fn k_as_is(k: &str) -> String {
    k.to_owned()
}

/// Sets one attribute in a context.
pub fn set_attr(ctx: &mut EvalContext, key: &str, value: Value) -> Result<(), String> {
    let p = attr_path(key)?;
    match p.root {
        Root::User => set_in(&mut ctx.user, &p.segments, value),
        Root::Tenant => set_in(&mut ctx.tenant, &p.segments, value),
        Root::Request => set_in(&mut ctx.request, &p.segments, value),
        Root::Args => {
            if p.segments.is_empty() {
                ctx.args = value;
            } else {
                if !ctx.args.is_object() {
                    ctx.args = Value::Object(Map::new());
                }
                if let Value::Object(m) = &mut ctx.args {
                    set_in(m, &p.segments, value);
                }
            }
        }
        Root::Tool => {}
    }
    Ok(())
}

/// Parses `key=value` and sets it.
pub fn apply_attr_spec(ctx: &mut EvalContext, spec: &str) -> Result<(), String> {
    let (k, v) = spec
        .split_once('=')
        .ok_or_else(|| format!("attribute `{spec}` must look like key=value"))?;
    set_attr(ctx, k.trim(), attr_value(v.trim()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn mapping() {
        let mut c = EvalContext::default();
        apply_attr_spec(&mut c, "plan=pro").unwrap();
        apply_attr_spec(&mut c, "role=admin").unwrap();
        apply_attr_spec(&mut c, "tenant.attributes.domain=acme.com").unwrap();
        apply_attr_spec(&mut c, "level=3").unwrap();
        apply_attr_spec(&mut c, "request.model=claude").unwrap();
        assert_eq!(c.tenant["plan"], json!("pro"));
        assert_eq!(c.tenant["attributes"]["domain"], json!("acme.com"));
        assert_eq!(c.user["role"], json!("admin"));
        assert_eq!(c.user["level"], json!(3));
        assert_eq!(c.request["model"], json!("claude"));
        assert!(apply_attr_spec(&mut c, "nope").is_err());
        assert!(apply_attr_spec(&mut c, "tool=x").is_err());
        assert_eq!(attr_value("1e3x"), json!("1e3x"));
        assert_eq!(attr_value("2.5"), json!(2.5));
    }
}
