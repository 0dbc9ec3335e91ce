//! Property tests: layering can only tighten, evaluation is deterministic and agrees with
//! the unindexed evaluator, and nothing panics on random input.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use palisade_policy::{
    CompiledPolicy, EvalContext, Layer, Verdict, evaluate, explain, may_ever_run, parse,
};
use proptest::prelude::*;
use serde_json::json;

fn glob() -> impl Strategy<Value = String> {
    proptest::collection::vec(
        prop_oneof![Just("a"), Just("b"), Just("."), Just("*"), Just("?")],
        1..5,
    )
    .prop_map(|v| v.concat())
}

fn tool() -> impl Strategy<Value = String> {
    proptest::collection::vec(prop_oneof![Just("a"), Just("b"), Just(".")], 0..5)
        .prop_map(|v| v.concat())
}

fn action() -> impl Strategy<Value = &'static str> {
    prop_oneof![
        Just("allow"),
        Just("deny"),
        Just("require_approval"),
        Just("block"),
        Just("escalate")
    ]
}

fn condition() -> impl Strategy<Value = Option<String>> {
    let op = prop_oneof![
        Just("eq"),
        Just("ne"),
        Just("in"),
        Just("not_in"),
        Just("contains"),
        Just("not_contains"),
        Just("starts_with"),
        Just("ends_with"),
        Just("matches"),
        Just("gt"),
        Just("gte"),
        Just("lt"),
        Just("lte"),
        Just("exists")
    ];
    let field = prop_oneof![
        Just("args.x"),
        Just("args.y.z"),
        Just("user.role"),
        Just("tenant.plan"),
        Just("tool")
    ];
    proptest::option::of(
        (op, field, 0..3i64, any::<bool>()).prop_map(|(op, field, n, neg)| {
            let value = match op {
                "in" | "not_in" => format!("[{n}, \"a\"]"),
                "gt" | "gte" | "lt" | "lte" => n.to_string(),
                "exists" => (n > 0).to_string(),
                "matches" => "\"^a\"".to_owned(),
                "starts_with" | "ends_with" => "\"a\"".to_owned(),
                _ if n == 2 => "\"${user.role}\"".to_owned(),
                _ => format!("\"{n}\""),
            };
            let field = if field == "tool" && matches!(op, "gt" | "gte" | "lt" | "lte") {
                "args.x"
            } else {
                field
            };
            let leaf = format!("{{ {field}: {{ {op}: {value} }} }}");
            if neg {
                format!("{{ not: {leaf} }}")
            } else {
                leaf
            }
        }),
    )
}

#[derive(Debug, Clone)]
struct RuleSpec {
    globs: Vec<String>,
    action: &'static str,
    priority: i64,
    when: Option<String>,
}

fn rule() -> impl Strategy<Value = RuleSpec> {
    (
        proptest::collection::vec(glob(), 1..3),
        action(),
        -2..3i64,
        condition(),
    )
        .prop_map(|(globs, action, priority, when)| RuleSpec {
            globs,
            action,
            priority,
            when,
        })
}

fn policy_text(rules: &[RuleSpec], default: Option<&str>) -> String {
    let mut s = String::from("version: 1\n");
    if let Some(d) = default {
        s.push_str(&format!("default: {d}\n"));
    }
    s.push_str("tools:\n");
    for (i, r) in rules.iter().enumerate() {
        let globs: Vec<String> = r.globs.iter().map(|g| format!("\"{g}\"")).collect();
        s.push_str(&format!(
            "  - id: r{i}\n    match: [{}]\n    action: {}\n    priority: {}\n",
            globs.join(", "),
            r.action,
            r.priority
        ));
        if let Some(w) = &r.when {
            s.push_str(&format!("    when: {w}\n"));
        }
    }
    s
}

fn compile(rules: &[RuleSpec], default: Option<&str>) -> CompiledPolicy {
    let text = policy_text(rules, default);
    CompiledPolicy::from_yaml(&text, "gen.yaml").unwrap_or_else(|e| panic!("{text}\n{e:?}"))
}

fn context() -> impl Strategy<Value = EvalContext> {
    let val = prop_oneof![
        Just(json!(0)),
        Just(json!(1)),
        Just(json!(2)),
        Just(json!("a")),
        Just(json!("ab")),
        Just(json!(null)),
        Just(json!([1, "a"]))
    ];
    (
        tool(),
        proptest::option::of(val.clone()),
        proptest::option::of(val),
        proptest::option::of(prop_oneof![Just("a"), Just("2"), Just("admin")]),
    )
        .prop_map(|(tool, x, z, role)| {
            let mut args = serde_json::Map::new();
            if let Some(x) = x {
                args.insert("x".into(), x);
            }
            if let Some(z) = z {
                args.insert("y".into(), json!({ "z": z }));
            }
            let mut c = EvalContext::new(tool, serde_json::Value::Object(args));
            if let Some(r) = role {
                c.user.insert("role".into(), json!(r));
            }
            c.tenant.insert("plan".into(), json!("a"));
            c
        })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, .. ProptestConfig::default() })]

    /// A tenant layer can tighten the platform, never loosen it.
    #[test]
    fn tenant_never_loosens_platform(
        prules in proptest::collection::vec(rule(), 0..6),
        trules in proptest::collection::vec(rule(), 0..6),
        default in proptest::option::of(action()),
        ctx in context(),
    ) {
        let p = compile(&prules, default);
        let t = compile(&trules, None);
        let alone = evaluate(Some(&p), None, &ctx);
        let both = evaluate(Some(&p), Some(&t), &ctx);
        if alone.layer == Some(Layer::Platform) {
            prop_assert!(both.verdict >= alone.verdict);
            if alone.verdict == Verdict::Deny {
                prop_assert_eq!(both.verdict, Verdict::Deny);
            }
        }
        // deterministic
        prop_assert_eq!(&both, &evaluate(Some(&p), Some(&t), &ctx));
        // the index agrees with a scan of every rule
        let full = explain(Some(&p), Some(&t), &ctx);
        prop_assert_eq!((both.verdict, &both.rule_id, both.layer), (full.verdict, &full.rule_id, full.layer));
        // stripping a tool is safe: if it could be allowed now, may_ever_run says so
        if both.verdict != Verdict::Deny {
            let mut no_args = ctx.clone();
            no_args.args = json!({});
            prop_assert!(may_ever_run(Some(&p), Some(&t), &ctx.tool, &no_args));
        }
    }

    /// Among equal priorities the first rule in file order decides.
    #[test]
    fn equal_priorities_resolve_by_file_order(actions in proptest::collection::vec(action(), 1..8), prio in -3..3i64) {
        let rules: Vec<RuleSpec> = actions
            .iter()
            .map(|a| RuleSpec { globs: vec!["t*".into()], action: a, priority: prio, when: None })
            .collect();
        let p = compile(&rules, None);
        let d = evaluate(Some(&p), None, &EvalContext::new("tool", json!({})));
        prop_assert_eq!(d.rule_id.as_deref(), Some("r0"));
        prop_assert_eq!(d.verdict, Verdict::parse(actions[0]).unwrap());
    }

    /// Arbitrary text never panics the parser.
    #[test]
    fn random_text_never_panics(s in "\\PC{0,200}") {
        let _ = parse(&s, "fuzz.yaml");
    }

    /// YAML-shaped random text never panics the parser, and what parses evaluates.
    #[test]
    fn random_yaml_never_panics(
        parts in proptest::collection::vec(prop_oneof![
            Just("tools:\n"), Just("  - "), Just("match: "), Just("action: "), Just("when: "),
            Just("{ args.x: { gt: 1 } }"), Just("deny\n"), Just("allow\n"), Just("\"*\"\n"),
            Just("priority: 9\n"), Just("    "), Just("content:\n"), Just("  input: { email: redact }\n"),
            Just("default: deny\n"), Just("[a, b]\n"), Just("&a x\n"), Just("*a\n"), Just("schema: { type: object }\n"),
            Just("not: "), Just("any: ["), Just("]"), Just("${tenant.id}"), Just(": "), Just("\n"), Just("id: x\n")
        ], 0..40),
        ctx in context(),
    ) {
        let text = parts.concat();
        if let Ok(parsed) = parse(&text, "gen.yaml")
            && let Ok(p) = palisade_policy::compile(&parsed)
        {
            let _ = evaluate(Some(&p), Some(&p), &ctx);
            let _ = explain(Some(&p), None, &ctx);
            let _ = may_ever_run(Some(&p), None, &ctx.tool, &ctx);
        }
    }

    /// Random JSON arguments never panic evaluation.
    #[test]
    fn random_args_never_panic(args in any::<Vec<(String, i64)>>(), t in "\\PC{0,20}") {
        let p = CompiledPolicy::from_yaml(include_str!("../../../examples/multi-tenant/platform.yaml"), "p").unwrap();
        let mut m = serde_json::Map::new();
        for (k, v) in args {
            m.insert(k, json!(v));
        }
        let _ = evaluate(Some(&p), None, &EvalContext::new(t, serde_json::Value::Object(m)));
    }
}
