//! Plain-text, Markdown and CSV tables for the CLI's `test` and `matrix` output.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TableFormat {
    #[default]
    Text,
    Markdown,
    Csv,
}

impl TableFormat {
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "text" => Some(Self::Text),
            "markdown" | "md" => Some(Self::Markdown),
            "csv" => Some(Self::Csv),
            _ => None,
        }
    }
}

fn csv_cell(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_owned()
    }
}

/// Renders rows under headers. Every line ends with `\n`.
pub fn render_table(headers: &[String], rows: &[Vec<String>], format: TableFormat) -> String {
    let mut out = String::new();
    match format {
        TableFormat::Csv => {
            for row in std::iter::once(headers).chain(rows.iter().map(Vec::as_slice)) {
                let cells: Vec<String> = row.iter().map(|c| csv_cell(c)).collect();
                out.push_str(&cells.join(","));
                out.push('\n');
            }
        }
        TableFormat::Markdown => {
            let esc = |s: &str| s.replace('|', "\\|");
            let line = |cells: &[String]| {
                let cs: Vec<String> = cells.iter().map(|c| esc(c)).collect();
                format!("| {} |\n", cs.join(" | "))
            };
            out.push_str(&line(headers));
            let sep: Vec<String> = headers.iter().map(|_| "---".to_owned()).collect();
            out.push_str(&format!("|{}|\n", sep.join("|")));
            for r in rows {
                out.push_str(&line(r));
            }
        }
        TableFormat::Text => {
            let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
            for r in rows {
                for (i, c) in r.iter().enumerate() {
                    let w = c.chars().count();
                    match widths.get_mut(i) {
                        Some(x) => *x = (*x).max(w),
                        None => widths.push(w),
                    }
                }
            }
            let line = |cells: &[String]| {
                let mut s = String::new();
                for (i, c) in cells.iter().enumerate() {
                    if i > 0 {
                        s.push_str("  ");
                    }
                    s.push_str(c);
                    if i + 1 < cells.len() {
                        let pad = widths
                            .get(i)
                            .copied()
                            .unwrap_or(0)
                            .saturating_sub(c.chars().count());
                        s.push_str(&" ".repeat(pad));
                    }
                }
                s.push('\n');
                s
            };
            out.push_str(&line(headers));
            let sep: Vec<String> = widths.iter().map(|w| "-".repeat(*w)).collect();
            out.push_str(&line(&sep));
            for r in rows {
                out.push_str(&line(r));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats() {
        let h = vec!["tool".to_owned(), "a".to_owned()];
        let rows = vec![vec!["x,y".to_owned(), "allow".to_owned()]];
        assert_eq!(
            render_table(&h, &rows, TableFormat::Csv),
            "tool,a\n\"x,y\",allow\n"
        );
        assert_eq!(
            render_table(&h, &rows, TableFormat::Markdown),
            "| tool | a |\n|---|---|\n| x,y | allow |\n"
        );
        assert_eq!(
            render_table(&h, &rows, TableFormat::Text),
            "tool  a\n----  -----\nx,y   allow\n"
        );
    }
}
