//! `/openapi.json`: pinned by a snapshot, and complete — every route of `router()` is in it
//! with its auth requirement.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::*;
use std::collections::BTreeSet;

/// (method, path) of every `.route(...)` in `lib.rs`.
fn routes_in_router() -> BTreeSet<(String, String)> {
    let src = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/src/lib.rs")).unwrap();
    let start = src.find("pub fn router(").unwrap();
    let body = &src[start..];
    let end = body.find("\n}\n").unwrap();
    let body = &body[..end];
    let mut out = BTreeSet::new();
    for chunk in body.split(".route(").skip(1) {
        let chunk = chunk.split(".fallback(").next().unwrap();
        let path = chunk.split('"').nth(1).unwrap().to_string();
        for m in ["get", "post", "put", "patch", "delete"] {
            let needle = format!("{m}(");
            let mut rest = chunk;
            while let Some(i) = rest.find(&needle) {
                let before = rest[..i].chars().last();
                if !before.is_some_and(|c| c.is_alphanumeric() || c == '_' || c == ':') {
                    out.insert((m.to_string(), path.clone()));
                }
                rest = &rest[i + needle.len()..];
            }
        }
    }
    out
}

#[test]
fn document_snapshot() {
    let mut doc = palisade_server::openapi::document();
    doc["info"]["version"] = serde_json::json!("<version>");
    insta::assert_json_snapshot!("openapi", doc);
}

#[test]
fn every_route_is_documented_with_its_auth() {
    let doc = palisade_server::openapi::document();
    let routes = routes_in_router();
    assert!(routes.len() > 20, "{routes:?}");
    for (m, p) in &routes {
        let op = &doc["paths"][p][m];
        assert!(op.is_object(), "{m} {p} is missing from /openapi.json");
        let public = [
            "/healthz",
            "/readyz",
            "/openapi.json",
            "/v1/audit/public-key",
        ];
        if !public.contains(&p.as_str()) {
            assert!(op["security"].is_array(), "{m} {p} has no auth requirement");
        }
    }
    // And nothing is documented that is not routed.
    for o in palisade_server::openapi::OPS {
        assert!(
            routes.contains(&(o.method.to_string(), o.path.to_string())),
            "{} {} is documented but not routed",
            o.method,
            o.path
        );
    }
}

#[tokio::test]
async fn served_and_every_route_answers() {
    let h = Harness::start().await;
    let r = h.http.get(h.url("/openapi.json")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let served: serde_json::Value = r.json().await.unwrap();
    assert_eq!(served, palisade_server::openapi::document());
    // The parsed routes are real: none is an unknown path or method.
    for (m, p) in routes_in_router() {
        let path = p
            .replace("{tenant}", "nobody")
            .replace("{id}", "x")
            .replace("{hash}", "x");
        let method = reqwest::Method::from_bytes(m.to_uppercase().as_bytes()).unwrap();
        let r = h.http.request(method, h.url(&path)).send().await.unwrap();
        assert_ne!(r.status(), 405, "{m} {p}");
        if r.status() == 404 && p != "/metrics" {
            let v: serde_json::Value = r.json().await.unwrap();
            assert_ne!(v["error"]["message"], "no such endpoint", "{m} {p}");
        }
    }
}
