//! Decision latency against a 1,000-rule policy (the tool-name index keeps it to the few
//! rules that can match), plus parse+compile cost.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use criterion::{Criterion, criterion_group, criterion_main};
use palisade_policy::{CompiledPolicy, EvalContext, evaluate, may_ever_run};
use serde_json::json;
use std::hint::black_box;

/// 1,000 rules: 800 exact tool names with conditions, 150 prefix globs, 50 suffix /
/// catch-all globs with conditions.
fn policy_text() -> String {
    let mut s = String::from("version: 1\ndefault: deny\ntools:\n");
    for i in 0..800 {
        s.push_str(&format!(
            "  - id: exact-{i}\n    match: svc{}.op{}\n    when: {{ user.role: {{ in: [admin, editor] }}, args.n: {{ lte: {i} }} }}\n    action: allow\n    priority: {}\n",
            i % 40,
            i / 40,
            i % 7
        ));
    }
    for i in 0..150 {
        s.push_str(&format!(
            "  - id: prefix-{i}\n    match: \"svc{}.*\"\n    when: {{ tenant.plan: {{ eq: plan{i} }} }}\n    action: require_approval\n    priority: {}\n",
            i % 40,
            i % 5
        ));
    }
    for i in 0..50 {
        s.push_str(&format!(
            "  - id: suffix-{i}\n    match: \"*.danger{i}\"\n    when: {{ args.path: {{ starts_with: \"/etc/{i}\" }} }}\n    action: deny\n    priority: 10\n"
        ));
    }
    s
}

fn bench(c: &mut Criterion) {
    let text = policy_text();
    let policy = CompiledPolicy::from_yaml(&text, "bench.yaml").unwrap();
    assert_eq!(policy.rules().count(), 1000);
    let tenant = CompiledPolicy::from_yaml(
        "version: 1\ntools:\n  - { id: t1, match: \"svc1*\", action: deny, when: { args.n: { gt: 100000 } } }\n",
        "tenant.yaml",
    )
    .unwrap();
    let mut ctx = EvalContext::new("svc17.op9", json!({"n": 3, "path": "/tmp/x"}));
    ctx.user.insert("role".into(), json!("editor"));
    ctx.tenant.insert("plan".into(), json!("pro"));
    ctx.tenant.insert("id".into(), json!("t-1"));
    let d = evaluate(Some(&policy), Some(&tenant), &ctx);
    assert_eq!(d.rule_id.as_deref(), Some("exact-377"), "{d:?}");

    c.bench_function("evaluate/1000-rules/platform-only", |b| {
        b.iter(|| evaluate(Some(black_box(&policy)), None, black_box(&ctx)))
    });
    c.bench_function("evaluate/1000-rules/platform+tenant", |b| {
        b.iter(|| {
            evaluate(
                Some(black_box(&policy)),
                Some(black_box(&tenant)),
                black_box(&ctx),
            )
        })
    });
    let miss = EvalContext::new("unknown.tool", json!({}));
    c.bench_function("evaluate/1000-rules/no-match-default", |b| {
        b.iter(|| evaluate(Some(black_box(&policy)), None, black_box(&miss)))
    });
    c.bench_function("may_ever_run/1000-rules", |b| {
        b.iter(|| {
            may_ever_run(
                Some(black_box(&policy)),
                Some(&tenant),
                black_box("svc17.op9"),
                black_box(&ctx),
            )
        })
    });
    let mut g = c.benchmark_group("compile");
    g.sample_size(10);
    g.bench_function("parse+compile/1000-rules", |b| {
        b.iter(|| CompiledPolicy::from_yaml(black_box(&text), "bench.yaml").unwrap())
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
