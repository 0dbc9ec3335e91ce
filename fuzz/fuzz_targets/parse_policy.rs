//! Parses arbitrary bytes as a policy (and as a case file); whatever compiles is evaluated
//! against a few contexts. Nothing may panic, loop or blow up memory.
#![no_main]

use libfuzzer_sys::fuzz_target;
use palisade_policy::{EvalContext, compile, evaluate, explain, may_ever_run, parse, parse_cases};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let _ = parse_cases(text, "fuzz-cases.yaml");
    let Ok(parsed) = parse(text, "fuzz.yaml") else { return };
    let _ = parsed.tenant_errors();
    let Ok(policy) = compile(&parsed) else { return };
    let mut ctx = EvalContext::new("email.send", serde_json::json!({"to": "a@b.c", "n": 3}));
    ctx.tenant.insert("id".into(), serde_json::json!("t1"));
    ctx.user.insert("role".into(), serde_json::json!("admin"));
    for tool in ["email.send", "system.fs.delete", "", "a"] {
        ctx.tool = tool.to_owned();
        let _ = evaluate(Some(&policy), Some(&policy), &ctx);
        let _ = explain(Some(&policy), None, &ctx);
        let _ = may_ever_run(Some(&policy), Some(&policy), tool, &ctx);
    }
    let _ = palisade_policy::effective_content(Some(&policy), Some(&policy));
});
