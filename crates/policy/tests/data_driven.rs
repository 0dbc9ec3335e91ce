//! Data-driven decision tables (tests/data/*.cases.yaml), the examples/ case files, and
//! invalid policies with their expected diagnostics (tests/data/invalid/*.yaml).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use palisade_policy::{
    CompiledPolicy, Diagnostic, TableFormat, evaluate, explain, parse_cases, run_cases,
};
use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn load(path: &Path) -> CompiledPolicy {
    let src = std::fs::read_to_string(path).unwrap();
    CompiledPolicy::from_yaml(&src, &path.display().to_string()).unwrap_or_else(|e| {
        panic!(
            "{}",
            e.iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("\n")
        )
    })
}

fn run(platform: Option<&Path>, tenant: Option<&Path>, cases: &Path) -> usize {
    let p = platform.map(load);
    let t = tenant.map(load);
    if let Some(t) = &t {
        let parsed =
            palisade_policy::parse(&std::fs::read_to_string(tenant.unwrap()).unwrap(), "t")
                .unwrap();
        assert!(
            parsed.tenant_errors().is_empty(),
            "tenant policy sets platform-only fields"
        );
        assert!(t.warnings().is_empty(), "{:?}", t.warnings());
    }
    let src = std::fs::read_to_string(cases).unwrap();
    let file = parse_cases(&src, &cases.display().to_string()).unwrap_or_else(|e| panic!("{e:?}"));
    let report = run_cases(p.as_ref(), t.as_ref(), &file);
    assert!(
        report.failed() == 0,
        "{} mismatches in {}:\n{}",
        report.failed(),
        cases.display(),
        report.render(TableFormat::Text)
    );
    // the full-trace evaluator decides exactly like the indexed one
    for c in &file.cases {
        let a = evaluate(p.as_ref(), t.as_ref(), &c.ctx);
        let b = explain(p.as_ref(), t.as_ref(), &c.ctx);
        assert_eq!(
            (a.verdict, &a.rule_id, a.layer),
            (b.verdict, &b.rule_id, b.layer),
            "{}",
            c.name
        );
    }
    file.cases.len()
}

#[test]
fn decision_tables() {
    let dir = root().join("tests/data");
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_str().unwrap().to_owned();
        let Some(stem) = name.strip_suffix(".cases.yaml") else {
            continue;
        };
        let platform = dir.join(format!("{stem}.policy.yaml"));
        let tenant = dir.join(format!("{stem}.tenant.yaml"));
        let tenant = tenant.exists().then_some(tenant);
        n += run(Some(&platform), tenant.as_deref(), &path);
    }
    assert!(n > 100, "only {n} cases ran");
}

#[test]
fn example_saas_cases() {
    let ex = root().join("../../examples/saas");
    run(Some(&ex.join("policy.yaml")), None, &ex.join("cases.yaml"));
}

#[test]
fn example_multi_tenant_cases() {
    let ex = root().join("../../examples/multi-tenant");
    run(
        Some(&ex.join("platform.yaml")),
        Some(&ex.join("tenant-a.yaml")),
        &ex.join("cases.yaml"),
    );
}

fn diagnostics(src: &str, file: &str) -> Vec<Diagnostic> {
    match palisade_policy::parse(src, file) {
        Ok(p) => match palisade_policy::compile(&p) {
            Ok(_) => p.warnings,
            Err(e) => e,
        },
        Err(e) => e,
    }
}

#[test]
fn invalid_policies_report_line_and_column() {
    let dir = root().join("tests/data/invalid");
    let mut files = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let src = std::fs::read_to_string(&path).unwrap();
        let name = path.file_name().unwrap().to_str().unwrap().to_owned();
        let diags: Vec<Diagnostic> = diagnostics(&src, &name)
            .into_iter()
            .filter(Diagnostic::is_error)
            .collect();
        let rendered: Vec<String> = diags.iter().map(ToString::to_string).collect();
        let expects: Vec<&str> = src
            .lines()
            .filter_map(|l| l.strip_prefix("# expect: "))
            .collect();
        assert!(!expects.is_empty(), "{name} has no expectations");
        for e in &expects {
            let (pos, text) = e.split_at(e.find(": ").unwrap());
            let want = format!("{name}:{pos}: error: ");
            assert!(
                rendered
                    .iter()
                    .any(|r| r.starts_with(&want) && r.contains(text.trim_start_matches(": "))),
                "{name}: expected `{e}` among:\n{}",
                rendered.join("\n")
            );
        }
        assert_eq!(
            diags.len(),
            expects.len(),
            "{name}: unexpected extra errors:\n{}",
            rendered.join("\n")
        );
        files += 1;
    }
    assert!(files >= 6);
}
