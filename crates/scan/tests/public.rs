//! Scores on public data kept under `tests/public/` (see `tests/public/README.md`):
//! presidio-research's synthetic dataset (MIT) and the rule examples of Nosey Parker and
//! Kingfisher (Apache-2.0). Prints markdown tables (`-- --nocapture`; copied into EVAL.md)
//! and asserts floors a little under the measured values.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeMap;
use std::ops::Range;
use std::path::{Path, PathBuf};

use palisade_scan::{Entity, Scanner, ScannerConfig};
use serde_json::Value;

fn dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/public")
}

#[derive(Default, Clone, Copy, Debug)]
struct Counts {
    gold: usize,
    tp: usize,
    fp: usize,
    fn_: usize,
    leaks: usize,
}

impl Counts {
    fn add(&mut self, o: Counts) {
        self.gold += o.gold;
        self.tp += o.tp;
        self.fp += o.fp;
        self.fn_ += o.fn_;
        self.leaks += o.leaks;
    }
    fn prf(&self) -> (f64, f64, f64) {
        let p = if self.tp + self.fp == 0 {
            1.0
        } else {
            self.tp as f64 / (self.tp + self.fp) as f64
        };
        let r = if self.tp + self.fn_ == 0 {
            1.0
        } else {
            self.tp as f64 / (self.tp + self.fn_) as f64
        };
        let f = if p + r == 0.0 {
            0.0
        } else {
            2.0 * p * r / (p + r)
        };
        (p, r, f)
    }
}

fn table(title: &str, rows: &BTreeMap<String, Counts>) -> Counts {
    println!("\n{title}\n");
    println!("| type | gold | TP | FP | FN | precision | recall | F1 | leaked |");
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|");
    let mut all = Counts::default();
    for (t, c) in rows {
        let (p, r, f) = c.prf();
        println!(
            "| {t} | {} | {} | {} | {} | {p:.3} | {r:.3} | {f:.3} | {} |",
            c.gold, c.tp, c.fp, c.fn_, c.leaks
        );
        all.add(*c);
    }
    let (p, r, f) = all.prf();
    println!(
        "| **all** | {} | {} | {} | {} | {p:.3} | {r:.3} | {f:.3} | {} |",
        all.gold, all.tp, all.fp, all.fn_, all.leaks
    );
    println!(
        "\nLeak rate: {}/{} = {:.4}",
        all.leaks,
        all.gold,
        all.leaks as f64 / all.gold.max(1) as f64
    );
    all
}

fn char_to_byte(text: &str, c: usize) -> usize {
    text.char_indices().nth(c).map_or(text.len(), |(i, _)| i)
}

/// presidio-research entity type -> our entity name; `None`: not scored (NER types such as
/// PERSON or LOCATION, and identifiers we have no detector for).
fn presidio_map(t: &str) -> Option<&'static str> {
    Some(match t {
        "EMAIL_ADDRESS" => "EMAIL",
        "PHONE_NUMBER" => "PHONE",
        "US_SSN" => "US_SSN",
        "CREDIT_CARD" => "CREDIT_CARD",
        "IBAN_CODE" => "IBAN",
        "IP_ADDRESS" => "IP_ADDRESS",
        // In this dataset every DOMAIN_NAME value is a full URL (scheme and host).
        "DOMAIN_NAME" => "URL",
        _ => return None,
    })
}

const SCORED: &[&str] = &[
    "EMAIL",
    "PHONE",
    "US_SSN",
    "CREDIT_CARD",
    "IBAN",
    "IP_ADDRESS",
    "URL",
];

fn pii_findings(scanner: &Scanner, text: &str) -> Vec<(Range<usize>, &'static str)> {
    scanner
        .scan(text)
        .findings
        .iter()
        .filter(|f| SCORED.contains(&f.entity.name()))
        .map(|f| (f.span.clone(), f.entity.name()))
        .collect()
}

fn score_presidio(scanner: &Scanner) -> (BTreeMap<String, Counts>, Vec<String>) {
    let raw = std::fs::read_to_string(dir().join("presidio_research/synth_subset.json")).unwrap();
    let data: Vec<Value> = serde_json::from_str(&raw).unwrap();
    let mut rows: BTreeMap<String, Counts> = SCORED
        .iter()
        .map(|t| (t.to_string(), Counts::default()))
        .collect();
    let mut notes = Vec::new();
    for rec in &data {
        let text = rec["full_text"].as_str().unwrap();
        let mut gold: Vec<(Range<usize>, &'static str)> = Vec::new();
        // Spans of every labelled type (scored or not), in bytes.
        let mut all_spans: Vec<Range<usize>> = Vec::new();
        for s in rec["spans"].as_array().unwrap() {
            let a = char_to_byte(text, s["start_position"].as_u64().unwrap() as usize);
            let b = char_to_byte(text, s["end_position"].as_u64().unwrap() as usize);
            all_spans.push(a..b);
            if let Some(t) = presidio_map(s["entity_type"].as_str().unwrap()) {
                gold.push((a..b, t));
            }
        }
        let preds = pii_findings(scanner, text);
        let mut used = vec![false; preds.len()];
        for (g, t) in &gold {
            let c = rows.get_mut(*t).unwrap();
            c.gold += 1;
            if !g.clone().all(|i| preds.iter().any(|(r, _)| r.contains(&i))) {
                c.leaks += 1;
            }
            match preds
                .iter()
                .enumerate()
                .find(|(k, (r, pt))| !used[*k] && pt == t && r.start < g.end && g.start < r.end)
            {
                Some((k, _)) => {
                    used[k] = true;
                    c.tp += 1;
                }
                None => {
                    c.fn_ += 1;
                    notes.push(format!("FN {t} {:?}", &text[g.clone()]));
                }
            }
        }
        for (k, (r, t)) in preds.iter().enumerate() {
            if used[k] {
                continue;
            }
            // Same rule as the in-repo corpus: a finding inside a labelled value of another
            // type, or a second finding on a value already matched, is not a false positive.
            let nested = gold
                .iter()
                .any(|(g, gt)| gt != t && g.start <= r.start && r.end <= g.end);
            let dup = gold
                .iter()
                .any(|(g, gt)| gt == t && g.start < r.end && r.start < g.end);
            if nested || dup {
                continue;
            }
            rows.get_mut(*t).unwrap().fp += 1;
            let inside = all_spans
                .iter()
                .any(|g| g.start <= r.start && r.end <= g.end);
            notes.push(format!(
                "FP {t} {:?}{}",
                &text[r.clone()],
                if inside {
                    " (inside an unscored label)"
                } else {
                    ""
                }
            ));
        }
    }
    (rows, notes)
}

struct RuleRow {
    rule: String,
    name: String,
    file: String,
    positive: bool,
    text: String,
    span: Option<Range<usize>>,
    other_rules: bool,
}

fn load_rules(name: &str) -> Vec<RuleRow> {
    let raw = std::fs::read_to_string(dir().join(name)).unwrap();
    raw.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let v: Value = serde_json::from_str(l).unwrap();
            RuleRow {
                rule: v["rule"].as_str().unwrap().to_string(),
                name: v["name"].as_str().unwrap().to_string(),
                file: v["file"].as_str().unwrap().to_string(),
                positive: v["positive"].as_bool().unwrap(),
                text: v["text"].as_str().unwrap().to_string(),
                span: v["span"]
                    .as_array()
                    .map(|a| a[0].as_u64().unwrap() as usize..a[1].as_u64().unwrap() as usize),
                other_rules: !v["other_rules"].as_array().unwrap().is_empty(),
            }
        })
        .collect()
}

/// Rule names that find identifiers, not secrets (bucket names, ARNs, account and client
/// ids, public keys): out of scope even in a covered provider's file.
const NOT_SECRETS: &[&str] = &[
    "Bucket",
    "Resource Name",
    "Account ID",
    "Client ID",
    "PUBLIC Key",
    "Private Key ID",
];

/// Rule files (by provider) whose secrets our detectors claim to cover, with our type.
fn secret_scope(file: &str, name: &str) -> Option<&'static str> {
    if NOT_SECRETS.iter().any(|n| name.contains(n)) {
        return None;
    }
    Some(match file {
        "generic" => "generic",
        "aws" => "aws",
        "github" => "github",
        "gitlab" => "gitlab",
        "slack" => "slack",
        "stripe" => "stripe",
        "google" | "gcp" => "google",
        "openai" => "openai",
        "anthropic" => "anthropic",
        "jwt" => "jwt",
        "pem" => "private_key",
        "postgres" | "mongo" | "mongodb" | "mysql" | "redis" => "connection_string",
        _ => return None,
    })
}

/// Per provider group: a positive example is a TP when some SECRET finding overlaps the
/// rule's own match (or, when the rule's pattern could not be evaluated, anywhere in the
/// example); a clean negative example (one no other rule of the repository matches) with a
/// SECRET finding is a FP. Leaked: the rule's match is not fully covered by findings.
fn score_rules(
    scanner: &Scanner,
    rows: &[RuleRow],
) -> (BTreeMap<String, Counts>, Counts, Vec<String>) {
    let mut by: BTreeMap<String, Counts> = BTreeMap::new();
    let mut out_of_scope = Counts::default();
    let mut notes = Vec::new();
    for r in rows {
        let found: Vec<Range<usize>> = scanner
            .scan(&r.text)
            .findings
            .iter()
            .filter(|f| matches!(f.entity, Entity::Secret(_)))
            .map(|f| f.span.clone())
            .collect();
        let c = match secret_scope(&r.file, &r.name) {
            Some(t) => by.entry(t.to_string()).or_default(),
            None => &mut out_of_scope,
        };
        if r.positive {
            c.gold += 1;
            let hit = match &r.span {
                Some(g) => found.iter().any(|f| f.start < g.end && g.start < f.end),
                None => !found.is_empty(),
            };
            if hit {
                c.tp += 1;
            } else {
                c.fn_ += 1;
                if secret_scope(&r.file, &r.name).is_some() {
                    notes.push(format!("FN {} {:?}", r.rule, r.text));
                }
            }
            let leaked = match &r.span {
                Some(g) => !g.clone().all(|i| found.iter().any(|f| f.contains(&i))),
                None => found.is_empty(),
            };
            if leaked {
                c.leaks += 1;
            }
        } else if !r.other_rules && !found.is_empty() {
            c.fp += 1;
            notes.push(format!("FP {} {:?}", r.rule, r.text));
        }
    }
    (by, out_of_scope, notes)
}

#[test]
fn public_scores() {
    let scanner = Scanner::new(&ScannerConfig::default()).unwrap();

    let (rows, notes) = score_presidio(&scanner);
    let all = table(
        "presidio-research synth_dataset_v2 (subset; PII types we detect)",
        &rows,
    );
    for n in notes.iter().take(200) {
        println!("  {n}");
    }

    let np = load_rules("noseyparker/examples.jsonl");
    let (np_rows, np_out, np_notes) = score_rules(&scanner, &np);
    let np_all = table("Nosey Parker rule examples, providers we cover", &np_rows);
    let (_, np_out_r, _) = np_out.prf();
    println!(
        "Other Nosey Parker rules (providers we have no specific detector for): {}/{} examples found (generic detectors), recall {np_out_r:.3}",
        np_out.tp, np_out.gold
    );
    for n in np_notes.iter().take(200) {
        println!("  {n}");
    }

    let kf = load_rules("kingfisher/examples.jsonl");
    let (kf_rows, kf_out, kf_notes) = score_rules(&scanner, &kf);
    let kf_all = table("Kingfisher rule examples, providers we cover", &kf_rows);
    let (_, kf_out_r, _) = kf_out.prf();
    println!(
        "Other Kingfisher rules in the subset: {}/{} examples found, recall {kf_out_r:.3}",
        kf_out.tp, kf_out.gold
    );
    for n in kf_notes.iter().take(200) {
        println!("  {n}");
    }

    // Floors: measured values minus a small margin (see EVAL.md).
    let check = |name: &str, c: Counts, min_p: f64, min_r: f64, max_leak: f64| {
        let (p, r, _) = c.prf();
        let leak = c.leaks as f64 / c.gold.max(1) as f64;
        assert!(p >= min_p, "{name}: precision {p:.3} < {min_p}");
        assert!(r >= min_r, "{name}: recall {r:.3} < {min_r}");
        assert!(leak <= max_leak, "{name}: leak rate {leak:.3} > {max_leak}");
    };
    check(
        "presidio-research",
        all,
        FLOOR_PRESIDIO.0,
        FLOOR_PRESIDIO.1,
        FLOOR_PRESIDIO.2,
    );
    check("nosey parker", np_all, FLOOR_NP.0, FLOOR_NP.1, FLOOR_NP.2);
    check("kingfisher", kf_all, FLOOR_KF.0, FLOOR_KF.1, FLOOR_KF.2);
}

// (precision floor, recall floor, leak-rate ceiling), all types together.
// Measured 2026-11-23: presidio-research P 1.000 / R 0.795 / leak 0.205; Nosey Parker
// P 0.916 / R 0.669 / leak 0.331; Kingfisher P 1.000 / R 0.677 / leak 0.344.
const FLOOR_PRESIDIO: (f64, f64, f64) = (0.98, 0.77, 0.23);
const FLOOR_NP: (f64, f64, f64) = (0.89, 0.64, 0.36);
const FLOOR_KF: (f64, f64, f64) = (0.97, 0.64, 0.37);
