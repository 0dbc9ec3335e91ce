//! Evaluation: precision / recall / F1 per type and leak rate on the labelled corpus,
//! secret false positives per MB of prose and source code, and injection detection.
//! Prints markdown tables (copied into EVAL.md) and asserts the targets.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use common::Doc;
use palisade_scan::{Entity, Scanner, ScannerConfig};

const TYPES: &[&str] = &[
    "EMAIL",
    "PHONE",
    "US_SSN",
    "CREDIT_CARD",
    "IBAN",
    "IP_ADDRESS",
    "URL",
    "SECRET",
];

fn corpus_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/corpus")
}

fn load(name: &str) -> Vec<Doc> {
    let s = std::fs::read_to_string(corpus_dir().join(name)).unwrap();
    s.lines()
        .filter(|l| !l.trim().is_empty())
        .map(Doc::from_json)
        .collect()
}

#[derive(Default, Clone, Copy)]
struct Counts {
    tp: usize,
    fp: usize,
    fn_: usize,
    exact: usize,
}

fn scored(
    scanner: &Scanner,
    docs: &[Doc],
) -> (BTreeMap<&'static str, Counts>, usize, usize, Vec<String>) {
    let mut c: BTreeMap<&'static str, Counts> =
        TYPES.iter().map(|t| (*t, Counts::default())).collect();
    let mut leaks = 0;
    let mut gold_total = 0;
    let mut errors = Vec::new();
    for d in docs {
        let res = scanner.scan(&d.text);
        let preds: Vec<(std::ops::Range<usize>, &'static str)> = res
            .findings
            .iter()
            .filter(|f| {
                !matches!(
                    f.entity,
                    Entity::Keyword | Entity::Custom | Entity::Injection
                )
            })
            .map(|f| (f.span.clone(), f.entity.name()))
            .collect();
        let mut used = vec![false; preds.len()];
        for (gs, ge, gt) in &d.spans {
            gold_total += 1;
            let covered = (*gs..*ge).all(|i| preds.iter().any(|(r, _)| r.contains(&i)));
            if !covered {
                leaks += 1;
            }
            let hit = preds
                .iter()
                .enumerate()
                .find(|(k, (r, t))| !used[*k] && t == gt && r.start < *ge && *gs < r.end);
            let e = c.get_mut(gt.as_str()).unwrap();
            match hit {
                Some((k, (r, _))) => {
                    used[k] = true;
                    e.tp += 1;
                    if r.start == *gs && r.end == *ge {
                        e.exact += 1;
                    }
                }
                None => {
                    e.fn_ += 1;
                    errors.push(format!("FN {gt} {:?} in {}", &d.text[*gs..*ge], d.id));
                }
            }
        }
        for (k, (r, t)) in preds.iter().enumerate() {
            if used[k] {
                continue;
            }
            // Inside a labelled value of another type (an IP in a connection string):
            // redacting the outer value covers it; not a false positive.
            let nested = d
                .spans
                .iter()
                .any(|(gs, ge, gt)| gt != t && *gs <= r.start && r.end <= *ge);
            let dup = d
                .spans
                .iter()
                .any(|(gs, ge, gt)| gt == t && *gs < r.end && r.start < *ge);
            if nested || dup {
                continue;
            }
            c.get_mut(t).unwrap().fp += 1;
            errors.push(format!("FP {t} {:?} in {}", &d.text[r.clone()], d.id));
        }
    }
    (c, leaks, gold_total, errors)
}

fn prf(c: Counts) -> (f64, f64, f64) {
    let p = if c.tp + c.fp == 0 {
        1.0
    } else {
        c.tp as f64 / (c.tp + c.fp) as f64
    };
    let r = if c.tp + c.fn_ == 0 {
        1.0
    } else {
        c.tp as f64 / (c.tp + c.fn_) as f64
    };
    let f = if p + r == 0.0 {
        0.0
    } else {
        2.0 * p * r / (p + r)
    };
    (p, r, f)
}

/// Ordinary Rust source from the local cargo registry (MIT/Apache crates), used only at
/// test time and not committed. Returns (text, description); empty if unavailable.
fn registry_code(limit: usize) -> (String, String) {
    let Some(home) = std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| Path::new(&h).join(".cargo")))
    else {
        return (String::new(), "no CARGO_HOME".into());
    };
    let src = home.join("registry/src");
    let Ok(indexes) = std::fs::read_dir(&src) else {
        return (String::new(), "no registry".into());
    };
    let mut roots: Vec<PathBuf> = Vec::new();
    for idx in indexes.flatten() {
        if let Ok(crates) = std::fs::read_dir(idx.path()) {
            for c in crates.flatten() {
                let n = c.file_name().to_string_lossy().to_string();
                if [
                    "serde-1",
                    "regex-automata-",
                    "tokio-1",
                    "clap_builder-",
                    "hyper-1",
                    "axum-0",
                ]
                .iter()
                .any(|p| n.starts_with(p))
                {
                    roots.push(c.path());
                }
            }
        }
    }
    roots.sort();
    let mut files = Vec::new();
    fn walk(p: &Path, out: &mut Vec<PathBuf>) {
        if let Ok(rd) = std::fs::read_dir(p) {
            let mut es: Vec<_> = rd.flatten().map(|e| e.path()).collect();
            es.sort();
            for e in es {
                if e.is_dir() {
                    walk(&e, out);
                } else if e.extension().is_some_and(|x| x == "rs") {
                    out.push(e);
                }
            }
        }
    }
    for r in &roots {
        walk(r, &mut files);
    }
    let mut s = String::new();
    for f in files {
        if s.len() >= limit {
            break;
        }
        if let Ok(t) = std::fs::read_to_string(&f) {
            s.push_str(&t);
            s.push('\n');
        }
    }
    s.truncate(s.floor_char_boundary(limit.min(s.len())));
    let names: Vec<String> = roots
        .iter()
        .filter_map(|r| r.file_name().map(|n| n.to_string_lossy().to_string()))
        .collect();
    (s, names.join(", "))
}

#[test]
fn corpus_files_are_current() {
    let want = common::to_jsonl(&common::labelled(900));
    let have = std::fs::read_to_string(corpus_dir().join("labelled.jsonl")).unwrap_or_default();
    assert!(
        want == have,
        "tests/corpus/labelled.jsonl is stale: cargo run -p palisade-scan --example gen_corpus"
    );
    let want = common::to_jsonl(&common::negatives(300));
    let have = std::fs::read_to_string(corpus_dir().join("negatives.jsonl")).unwrap_or_default();
    assert!(
        want == have,
        "tests/corpus/negatives.jsonl is stale: cargo run -p palisade-scan --example gen_corpus"
    );
}

#[test]
fn quality() {
    let scanner = Scanner::new(&ScannerConfig::default()).unwrap();
    let mut docs = load("labelled.jsonl");
    let negs = load("negatives.jsonl");
    docs.extend(negs.iter().cloned());
    let (c, leaks, gold, errors) = scored(&scanner, &docs);
    for e in errors.iter().take(40) {
        eprintln!("{e}");
    }
    let bytes: usize = docs.iter().map(|d| d.text.len()).sum();
    println!(
        "\nLabelled corpus: {} documents, {} KB, {} labelled values (hard-negative documents: {}).\n",
        docs.len(),
        bytes / 1024,
        gold,
        negs.len()
    );
    println!("| type | gold | TP | FP | FN | exact span | precision | recall | F1 |");
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|");
    for t in TYPES {
        let x = c[t];
        let (p, r, f) = prf(x);
        println!(
            "| {t} | {} | {} | {} | {} | {} | {:.3} | {:.3} | {:.3} |",
            x.tp + x.fn_,
            x.tp,
            x.fp,
            x.fn_,
            x.exact,
            p,
            r,
            f
        );
    }
    let leak_rate = leaks as f64 / gold.max(1) as f64;
    println!(
        "\nLeak rate (labelled values not fully covered by any finding): {leaks}/{gold} = {:.4}\n",
        leak_rate
    );

    // Secrets false positives on ordinary prose and code.
    let prose = common::prose(1 << 20);
    let (code, crates) = registry_code(1 << 20);
    let mut rows = Vec::new();
    let mut worst: f64 = 0.0;
    for (label, text) in [
        ("generated prose", prose.as_str()),
        ("Rust source (registry)", code.as_str()),
    ] {
        if text.is_empty() {
            println!("(skipped {label}: not available)");
            continue;
        }
        let res = scanner.scan(text);
        let secrets: Vec<_> = res
            .findings
            .iter()
            .filter(|f| f.entity.is_secret())
            .collect();
        for f in secrets.iter().take(10) {
            eprintln!(
                "secret FP in {label}: {} {:?}",
                f.detector,
                &text[f.span.clone()]
            );
        }
        let mut by: BTreeMap<&str, usize> = BTreeMap::new();
        for f in res.findings.iter().filter(|f| !f.entity.is_secret()) {
            *by.entry(f.entity.name()).or_insert(0) += 1;
        }
        let mb = text.len() as f64 / (1 << 20) as f64;
        let per_mb = secrets.len() as f64 / mb;
        worst = worst.max(per_mb);
        rows.push(format!(
            "| {label} | {:.2} | {} | {:.2} | {} |",
            mb,
            secrets.len(),
            per_mb,
            format_by(&by)
        ));
    }
    println!("| negatives | MB | secret findings | per MB | other findings (not errors per se) |");
    println!("|---|---:|---:|---:|---|");
    for r in rows {
        println!("{r}");
    }
    if !crates.is_empty() {
        println!("\nSource code sample: first 1 MB of .rs files from {crates}.");
    }

    // Injection.
    let (pos, neg) = common::injection_cases();
    let tp = pos
        .iter()
        .filter(|t| scanner.scan(t).injection_detected)
        .count();
    let fp = neg
        .iter()
        .filter(|t| scanner.scan(t).injection_detected)
        .count();
    for t in pos.iter().filter(|t| !scanner.scan(t).injection_detected) {
        eprintln!("injection missed: {t:?}");
    }
    for t in neg.iter().filter(|t| scanner.scan(t).injection_detected) {
        eprintln!("injection FP: {t:?}");
    }
    let prose_inj = scanner
        .scan(&prose)
        .findings
        .iter()
        .filter(|f| f.entity == Entity::Injection)
        .count();
    println!(
        "\nInjection: detected {tp}/{} attacks, {fp}/{} benign look-alikes flagged, {prose_inj} INJECTION findings in 1 MB prose.\n",
        pos.len(),
        neg.len()
    );

    for t in [
        "EMAIL",
        "PHONE",
        "US_SSN",
        "CREDIT_CARD",
        "IBAN",
        "IP_ADDRESS",
        "URL",
    ] {
        let (_, _, f) = prf(c[t]);
        assert!(f >= 0.97, "{t} F1 {f:.3} < 0.97");
    }
    let (_, sr, _) = prf(c["SECRET"]);
    assert!(sr >= 0.95, "secret recall {sr:.3} < 0.95");
    assert!(worst <= 1.0, "secret false positives {worst:.2} per MB > 1");
}

fn format_by(by: &BTreeMap<&str, usize>) -> String {
    if by.is_empty() {
        return "none".into();
    }
    by.iter()
        .map(|(k, v)| format!("{k} {v}"))
        .collect::<Vec<_>>()
        .join(", ")
}
