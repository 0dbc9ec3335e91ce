//! What the policy step adds inside `/v1/messages`: stripping the request's tools and
//! deciding the response's `tool_use` blocks against the seed-002 SaaS policy, compared with
//! parsing the same request and response alone (the work done without a policy).
//!
//!     cargo bench -p palisade-server --bench policy_step
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use criterion::{Criterion, criterion_group, criterion_main};
use palisade_server::auth::Principal;
use palisade_server::policy::{ActivePolicy, Layers, base_context};
use palisade_server::tools::{GateLog, ToolGate};
use palisade_store::{ApiKey, Tenant};
use serde_json::{Value, json};
use std::hint::black_box;
use std::sync::Arc;

const SAAS: &str = include_str!("../../../examples/saas/policy.yaml");

fn principal() -> Principal {
    let mut attributes = serde_json::Map::new();
    attributes.insert("domain".into(), json!("acme.com"));
    Principal {
        tenant: Arc::new(Tenant {
            id: "acme".into(),
            name: "Acme".into(),
            plan: "pro".into(),
            attributes,
            created_at: 0,
            updated_at: 0,
        }),
        key: Arc::new(ApiKey {
            id: "key_0123456789abcdef0123".into(),
            tenant_id: "acme".into(),
            name: None,
            role: "editor".into(),
            user_id: Some("u1".into()),
            scopes: vec![],
            secret_hash: String::new(),
            created_at: 0,
            expires_at: None,
            revoked_at: None,
            rotated_at: None,
            last_used_at: None,
            prev_secret_hash: None,
            prev_valid_until: None,
            allowed_networks: vec![],
        }),
        scopes: vec![],
        acting_for: None,
        attributes: serde_json::Map::new(),
    }
}

fn request() -> Vec<u8> {
    let tools: Vec<Value> = [
        "listRecords",
        "getRecord",
        "createRecord",
        "updateRecord",
        "deleteRecord",
        "bulkOperation",
        "adminPanel",
    ]
    .iter()
    .map(|n| json!({"name": n, "description": "A CRM tool", "input_schema": {"type": "object"}}))
    .collect();
    serde_json::to_vec(&json!({
        "model": "claude-sonnet-4-5",
        "max_tokens": 1024,
        "tools": tools,
        "messages": [{"role": "user", "content": "x".repeat(4096)}]
    }))
    .unwrap()
}

fn response() -> Vec<u8> {
    serde_json::to_vec(&json!({
        "id": "msg_1", "type": "message", "role": "assistant", "model": "claude-sonnet-4-5",
        "content": [
            {"type": "text", "text": "Creating the record."},
            {"type": "tool_use", "id": "toolu_1", "name": "createRecord", "input": {"collection": "contacts", "data": {"name": "Ada"}}}
        ],
        "stop_reason": "tool_use", "stop_sequence": null,
        "usage": {"input_tokens": 1100, "output_tokens": 40}
    }))
    .unwrap()
}

fn bench(c: &mut Criterion) {
    let compiled = palisade_server::policy::compile_for("@platform", SAAS, "saas.yaml").unwrap();
    let layers = Layers {
        platform: Some(Arc::new(ActivePolicy {
            hash: "h".into(),
            compiled,
        })),
        tenant: None,
    };
    let p = principal();
    let req = request();
    let resp = response();
    let mut g = c.benchmark_group("messages_policy_step");
    g.bench_function("parse_only", |b| {
        b.iter(|| {
            let r: Value = serde_json::from_slice(black_box(&req)).unwrap();
            let s: Value = serde_json::from_slice(black_box(&resp)).unwrap();
            black_box((r, s));
        })
    });
    g.bench_function("parse_and_policy", |b| {
        b.iter(|| {
            let mut r: serde_json::Map<String, Value> =
                serde_json::from_slice(black_box(&req)).unwrap();
            let gate = ToolGate {
                ctx: base_context(&p, Some("claude-sonnet-4-5")),
                layers: layers.clone(),
                receipt_id: "r".into(),
                refuse: false,
                approvals: None,
            };
            let mut log = GateLog::default();
            let changed = gate.filter_request(&mut r, true, &mut log);
            let body = if changed {
                serde_json::to_vec(&r).unwrap()
            } else {
                Vec::new()
            };
            let mut s: Value = serde_json::from_slice(black_box(&resp)).unwrap();
            let mut log = GateLog::default();
            // No approval hook: the future never awaits I/O and completes on first poll.
            futures::executor::block_on(gate.filter_message(&mut s, &mut log));
            black_box((body, s, log.tools.len()));
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
