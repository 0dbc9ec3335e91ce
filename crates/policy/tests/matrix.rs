//! The example matrices: recomputed and compared with the checked-in files. Seed 002's
//! printed table must equal Palisade's matrix for the SaaS example cell for cell.
//! Regenerate the checked-in files with `UPDATE_EXPECT=1 cargo test -p palisade-policy --test matrix`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use palisade_policy::{
    AttrAxis, CompiledPolicy, EvalContext, Matrix, TableFormat, Verdict, compute_matrix,
};
use std::path::PathBuf;

fn examples() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../examples")
}

fn load(rel: &str) -> CompiledPolicy {
    let path = examples().join(rel);
    CompiledPolicy::from_yaml(&std::fs::read_to_string(&path).unwrap(), rel).unwrap()
}

fn check_file(rel: &str, actual: &str) {
    let path = examples().join(rel);
    if std::env::var_os("UPDATE_EXPECT").is_some() {
        std::fs::write(&path, actual).unwrap();
    }
    let expected = std::fs::read_to_string(&path).unwrap();
    assert_eq!(
        expected, actual,
        "{rel} is out of date (UPDATE_EXPECT=1 regenerates it)"
    );
}

const SAAS_TOOLS: &[&str] = &[
    "listRecords",
    "getRecord",
    "createRecord",
    "updateRecord",
    "deleteRecord",
    "bulkOperation",
    "adminPanel",
];

fn saas_matrix() -> Matrix {
    let p = load("saas/policy.yaml");
    let tools: Vec<String> = SAAS_TOOLS.iter().map(|s| (*s).to_owned()).collect();
    let axes = [
        AttrAxis::parse("plan=free,pro,enterprise").unwrap(),
        AttrAxis::parse("role=viewer,editor,admin").unwrap(),
    ];
    compute_matrix(Some(&p), None, &tools, &axes, &EvalContext::default()).unwrap()
}

#[test]
fn saas_matrix_is_checked_in() {
    check_file(
        "saas/matrix.md",
        &saas_matrix().render(TableFormat::Markdown),
    );
}

#[test]
fn saas_matrix_equals_seed_002_table_cell_for_cell() {
    let m = saas_matrix();
    let seed = std::fs::read_to_string(examples().join("saas/seed-002-table.md")).unwrap();
    let mut lines = seed.lines();
    let header: Vec<&str> = lines
        .next()
        .unwrap()
        .trim_matches('|')
        .split('|')
        .map(str::trim)
        .collect();
    assert_eq!(header.len(), 7);
    let mut cells = 0;
    for line in lines.skip(1) {
        let row: Vec<&str> = line.trim_matches('|').split('|').map(str::trim).collect();
        let tool = row[0];
        for (col, want) in header.iter().zip(&row).skip(1) {
            let want = Verdict::parse(&want.replace('-', "_")).unwrap();
            assert_eq!(m.get(tool, col), Some(want), "{tool} {col}");
            cells += 1;
        }
    }
    assert_eq!(cells, 7 * 6);
}

#[test]
fn multi_tenant_matrix_is_checked_in() {
    let p = load("multi-tenant/platform.yaml");
    let t = load("multi-tenant/tenant-a.yaml");
    let tools: Vec<String> = [
        "system.fs.delete",
        "shell.execute",
        "email.send",
        "database.query",
        "file.read",
        "payments.refund",
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .collect();
    let axes = [
        AttrAxis::parse("tenant.id=tenant-a").unwrap(),
        AttrAxis::parse("role=agent,admin").unwrap(),
    ];
    let m = compute_matrix(Some(&p), Some(&t), &tools, &axes, &EvalContext::default()).unwrap();
    check_file("multi-tenant/matrix.md", &m.render(TableFormat::Markdown));
}
