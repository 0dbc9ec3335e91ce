//! Snapshot tests of decision traces (tests/snapshots).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use palisade_policy::{CompiledPolicy, EvalContext, evaluate, explain};
use serde_json::json;
use std::path::PathBuf;

fn load(rel: &str) -> CompiledPolicy {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../examples")
        .join(rel);
    CompiledPolicy::from_yaml(&std::fs::read_to_string(path).unwrap(), rel).unwrap()
}

fn ctx(tool: &str, args: serde_json::Value) -> EvalContext {
    let mut c = EvalContext::new(tool, args);
    c.tenant = json!({"id": "tenant-a", "attributes": {"domain": "tenant-a.com"}})
        .as_object()
        .unwrap()
        .clone();
    c.user = json!({"id": "u-42", "role": "agent"})
        .as_object()
        .unwrap()
        .clone();
    c
}

#[test]
fn trace_external_email_is_escalated() {
    let (p, t) = (
        load("multi-tenant/platform.yaml"),
        load("multi-tenant/tenant-a.yaml"),
    );
    let d = evaluate(
        Some(&p),
        Some(&t),
        &ctx("email.send", json!({"to": "eve@example.com"})),
    );
    insta::assert_yaml_snapshot!(d);
}

#[test]
fn trace_tenant_cannot_loosen_shell_block() {
    let (p, t) = (
        load("multi-tenant/platform.yaml"),
        load("multi-tenant/tenant-a.yaml"),
    );
    let d = evaluate(
        Some(&p),
        Some(&t),
        &ctx("shell.execute", json!({"cmd": "ls"})),
    );
    insta::assert_yaml_snapshot!(d);
}

#[test]
fn trace_unfiltered_query_full_explain() {
    let (p, t) = (
        load("multi-tenant/platform.yaml"),
        load("multi-tenant/tenant-a.yaml"),
    );
    let d = explain(
        Some(&p),
        Some(&t),
        &ctx("database.query", json!({"query": "SELECT * FROM orders"})),
    );
    insta::assert_yaml_snapshot!(d);
}

#[test]
fn trace_schema_violation() {
    let (p, t) = (
        load("multi-tenant/platform.yaml"),
        load("multi-tenant/tenant-a.yaml"),
    );
    let d = evaluate(Some(&p), Some(&t), &ctx("email.send", json!({"to": 42})));
    insta::assert_yaml_snapshot!(d);
}

#[test]
fn trace_default_deny_saas() {
    let p = load("saas/policy.yaml");
    let mut c = EvalContext::new("deleteRecord", json!({"collection": "notes", "id": "1"}));
    c.tenant.insert("plan".into(), json!("pro"));
    c.user.insert("role".into(), json!("editor"));
    let d = evaluate(Some(&p), None, &c);
    insta::assert_yaml_snapshot!(d);
}

#[test]
fn trace_any_explains_every_alternative() {
    let p = load("saas/policy.yaml");
    let mut c = EvalContext::new("adminPanel", json!({"action": "list_users"}));
    c.tenant.insert("plan".into(), json!("enterprise"));
    c.user.insert("role".into(), json!("admin"));
    let d = explain(Some(&p), None, &c);
    insta::assert_yaml_snapshot!(d);
}
