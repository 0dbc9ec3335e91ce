//! Throughput of `Scanner::scan` with every default detector on, on ordinary prose
//! (the target: >= 1 GB/s on 4 KB and 64 KB, one core), plus prose with
//! typographic (non-ASCII) punctuation, PII-dense text, and streaming.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../tests/common/mod.rs"]
mod common;

use std::hint::black_box;
use std::sync::Arc;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use palisade_scan::{Action, Pseudonymizer, Scanner, ScannerConfig, StreamRedactor, apply};

fn bench(c: &mut Criterion) {
    let scanner = Arc::new(Scanner::new(&ScannerConfig::default()).unwrap());
    let prose = common::prose(1 << 20);
    let typographic = prose
        .replace("\"Why", "\u{201C}Why")
        .replace("?\"", "?\u{201D}")
        .replace(" - ", " \u{2014} ");
    let dense: String = common::labelled(400)
        .iter()
        .map(|d| d.text.as_str())
        .collect::<Vec<_>>()
        .join("\n");

    let mut g = c.benchmark_group("scan");
    for (name, text) in [
        ("prose", &prose),
        ("typographic_prose", &typographic),
        ("pii_dense", &dense),
    ] {
        for size in [4 << 10, 64 << 10] {
            let t = &text[..text.floor_char_boundary(size.min(text.len()))];
            g.throughput(Throughput::Bytes(t.len() as u64));
            g.bench_function(format!("{name}/{}KB", size >> 10), |b| {
                b.iter(|| black_box(scanner.scan(black_box(t))))
            });
        }
    }
    g.finish();

    let mut g = c.benchmark_group("apply");
    let t = &dense[..dense.floor_char_boundary(64 << 10)];
    let found = scanner.scan(t).findings;
    g.throughput(Throughput::Bytes(t.len() as u64));
    g.bench_function("pii_dense/64KB", |b| {
        b.iter(|| {
            let mut p = Pseudonymizer::new();
            black_box(apply(t, &found, |_| Some(Action::Pseudonymize), &mut p))
        })
    });
    g.finish();

    let mut g = c.benchmark_group("stream");
    let t = &prose[..64 << 10];
    g.throughput(Throughput::Bytes(t.len() as u64));
    g.bench_function("prose/64KB_in_16B_deltas", |b| {
        b.iter(|| {
            let mut s = StreamRedactor::new(
                scanner.clone(),
                |_: &palisade_scan::Finding| Some(Action::Redact),
                Pseudonymizer::new(),
            );
            let mut n = 0;
            for ch in t.as_bytes().chunks(16) {
                n += s.push(std::str::from_utf8(ch).unwrap()).len();
            }
            n += s.finish().len();
            black_box(n)
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
