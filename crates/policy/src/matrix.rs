//! `palisade policy matrix`: the verdict for each tool × attribute combination.

use crate::attrs::{attr_path, attr_value, set_attr};
use crate::compile::CompiledPolicy;
use crate::eval::{EvalContext, Mode, decide};
use crate::model::Verdict;
use crate::table::{TableFormat, render_table};
use serde::Serialize;
use serde_json::Value;

/// One `--attr key=v1,v2,…` axis.
#[derive(Debug, Clone, PartialEq)]
pub struct AttrAxis {
    pub key: String,
    pub values: Vec<String>,
}

impl AttrAxis {
    /// Parses `plan=free,pro,enterprise`.
    pub fn parse(spec: &str) -> Result<Self, String> {
        let (k, vs) = spec
            .split_once('=')
            .ok_or_else(|| format!("`{spec}` must look like key=value1,value2"))?;
        let key = k.trim().to_owned();
        attr_path(&key)?;
        let values: Vec<String> = vs.split(',').map(|v| v.trim().to_owned()).collect();
        if values.iter().any(String::is_empty) {
            return Err(format!("`{spec}` has an empty value"));
        }
        Ok(Self { key, values })
    }
}

/// The computed matrix: one row per tool, one column per attribute combination (the first
/// axis varies slowest).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Matrix {
    pub tools: Vec<String>,
    pub columns: Vec<String>,
    /// `cells[row][column]`
    pub cells: Vec<Vec<Verdict>>,
}

/// Most columns a matrix may have (the product of the axes' sizes).
pub const MAX_MATRIX_COLUMNS: usize = 4096;

/// Evaluates every tool under every attribute combination, with the base context's
/// arguments (usually none: `{}`, so conditions on `args` see them absent). Argument schemas
/// are not checked: the matrix describes calls, not particular arguments.
pub fn compute_matrix(
    platform: Option<&CompiledPolicy>,
    tenant: Option<&CompiledPolicy>,
    tools: &[String],
    axes: &[AttrAxis],
    base: &EvalContext,
) -> Result<Matrix, String> {
    let mut combos: Vec<Vec<&str>> = vec![Vec::new()];
    for axis in axes {
        let mut next = Vec::new();
        for c in &combos {
            for v in &axis.values {
                let mut c = c.clone();
                c.push(v.as_str());
                next.push(c);
            }
        }
        if next.len() > MAX_MATRIX_COLUMNS {
            return Err(format!(
                "too many combinations (more than {MAX_MATRIX_COLUMNS})"
            ));
        }
        combos = next;
    }
    let mut contexts = Vec::with_capacity(combos.len());
    for combo in &combos {
        let mut ctx = base.clone();
        for (axis, v) in axes.iter().zip(combo) {
            set_attr(&mut ctx, &axis.key, attr_value(v))?;
        }
        contexts.push(ctx);
    }
    let columns = if axes.is_empty() {
        vec!["verdict".to_owned()]
    } else {
        combos.iter().map(|c| c.join("/")).collect()
    };
    let mut cells = Vec::with_capacity(tools.len());
    for tool in tools {
        let row = contexts
            .iter_mut()
            .map(|ctx| {
                ctx.tool.clone_from(tool);
                if ctx.args.is_null() {
                    ctx.args = Value::Object(serde_json::Map::new());
                }
                decide(
                    platform,
                    tenant,
                    ctx,
                    Mode {
                        full: false,
                        schemas: false,
                    },
                )
                .verdict
            })
            .collect();
        cells.push(row);
    }
    Ok(Matrix {
        tools: tools.to_vec(),
        columns,
        cells,
    })
}

impl Matrix {
    pub fn render(&self, format: TableFormat) -> String {
        let mut headers = vec!["tool".to_owned()];
        headers.extend(self.columns.iter().cloned());
        let rows: Vec<Vec<String>> = self
            .tools
            .iter()
            .zip(&self.cells)
            .map(|(t, row)| {
                let mut r = vec![t.clone()];
                r.extend(row.iter().map(|v| v.as_str().to_owned()));
                r
            })
            .collect();
        render_table(&headers, &rows, format)
    }

    /// The verdict for a tool and a column label, if both exist.
    pub fn get(&self, tool: &str, column: &str) -> Option<Verdict> {
        let r = self.tools.iter().position(|t| t == tool)?;
        let c = self.columns.iter().position(|x| x == column)?;
        self.cells.get(r)?.get(c).copied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn axes_and_columns() {
        let p = CompiledPolicy::from_yaml(
            "tools:\n  - {match: x, action: allow, when: {tenant.plan: pro, user.role: admin}}\n",
            "p",
        )
        .unwrap();
        let axes = vec![
            AttrAxis::parse("plan=free,pro").unwrap(),
            AttrAxis::parse("role=viewer,admin").unwrap(),
        ];
        let m = compute_matrix(
            Some(&p),
            None,
            &["x".into(), "y".into()],
            &axes,
            &EvalContext::default(),
        )
        .unwrap();
        assert_eq!(
            m.columns,
            vec!["free/viewer", "free/admin", "pro/viewer", "pro/admin"]
        );
        assert_eq!(m.get("x", "pro/admin"), Some(Verdict::Allow));
        assert_eq!(m.get("x", "pro/viewer"), Some(Verdict::Deny));
        assert_eq!(m.get("y", "pro/admin"), Some(Verdict::Deny));
        assert!(AttrAxis::parse("plan").is_err());
        assert!(AttrAxis::parse("plan=a,,b").is_err());
    }
}
