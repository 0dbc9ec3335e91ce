//! Credentials, revocation, tenant isolation of receipts, and the admin API.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::*;
use reqwest::Method;
use serde_json::{Value, json};

#[tokio::test]
async fn missing_bad_revoked_and_expired_keys_are_refused_at_once() {
    let h = Harness::start().await;
    let key = h.tenant("acme").await;

    let r = h
        .http
        .post(h.url("/v1/messages"))
        .json(&chat("hi"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error"]["type"], "authentication_error");

    for bad in [
        "nonsense",
        "pal_0000000000000000000a_aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
    ] {
        let (s, v, _) = h.message(bad, &chat("hi")).await;
        assert_eq!(s, 401, "{v}");
        assert_eq!(v["error"]["palisade_reason"], "invalid_credential");
    }
    // Right id, wrong secret.
    let forged = format!("{}{}", &key[..key.len() - 4], "AAAA");
    let (s, _, _) = h.message(&forged, &chat("hi")).await;
    assert_eq!(s, 401);

    // Works, then revoked: refused on the very next request (the auth cache is invalidated).
    let (s, _, _) = h.message(&key, &chat("hi")).await;
    assert_eq!(s, 200);
    let keys = h
        .admin(Method::GET, "/admin/v1/tenants/acme/keys", None)
        .await
        .1;
    let id = keys["data"][0]["id"].as_str().unwrap().to_string();
    let (s, v) = h
        .admin(
            Method::POST,
            &format!("/admin/v1/tenants/acme/keys/{id}/revoke"),
            None,
        )
        .await;
    assert_eq!(s, 200, "{v}");
    assert!(v["revoked_at"].is_string());
    let (s, v, _) = h.message(&key, &chat("hi")).await;
    assert_eq!(s, 401);
    assert_eq!(v["error"]["palisade_reason"], "key_revoked");

    // Expired.
    let (expired, _) = h
        .key("acme", json!({"expires_at": "2020-01-01T00:00:00Z"}))
        .await;
    let (s, v, _) = h.message(&expired, &chat("hi")).await;
    assert_eq!(s, 401);
    assert_eq!(v["error"]["palisade_reason"], "key_expired");
    assert_eq!(
        h.mock.requests().len(),
        1,
        "refused calls never reach the upstream"
    );
}

#[tokio::test]
async fn rotation_replaces_the_secret() {
    let h = Harness::start().await;
    h.tenant("acme").await;
    let (old, id) = h.key("acme", json!({})).await;
    let (s, v) = h
        .admin(
            Method::POST,
            &format!("/admin/v1/tenants/acme/keys/{id}/rotate"),
            None,
        )
        .await;
    assert_eq!(s, 200, "{v}");
    let new = v["secret"].as_str().unwrap();
    assert_ne!(new, old);
    assert_eq!(h.message(&old, &chat("hi")).await.0, 401);
    assert_eq!(h.message(new, &chat("hi")).await.0, 200);
}

#[tokio::test]
async fn a_tenant_never_reads_another_tenants_receipts() {
    let h = Harness::start().await;
    let a = h.tenant("tenant-a").await;
    let b = h.tenant("tenant-b").await;
    for _ in 0..3 {
        assert_eq!(h.message(&a, &chat("from a")).await.0, 200);
        assert_eq!(h.message(&b, &chat("from b")).await.0, 200);
    }
    let ra = h.receipts(&a).await;
    let rb = h.receipts(&b).await;
    assert!(ra.iter().all(|r| r["tenant_id"] == "tenant-a"));
    assert!(rb.iter().all(|r| r["tenant_id"] == "tenant-b"));
    assert!(!ra.is_empty() && !rb.is_empty());

    // By id: another tenant's receipt answers exactly as a missing one.
    let foreign = rb[0]["id"].as_str().unwrap();
    let (s1, v1) = h.get(&format!("/v1/receipts/{foreign}"), &a).await;
    let (s2, v2) = h
        .get("/v1/receipts/01900000-0000-7000-8000-000000000000", &a)
        .await;
    assert_eq!((s1, s2), (404, 404));
    assert_eq!(v1["error"]["type"], v2["error"]["type"]);

    // By filter: naming the other tenant, its user or key yields nothing.
    let (s, v) = h.get("/v1/receipts?tenant_id=tenant-b", &a).await;
    assert_eq!(s, 200);
    assert_eq!(v["data"].as_array().unwrap().len(), 0);
    let (_, v) = h.get("/v1/receipts?user_id=tenant-b-user", &a).await;
    assert_eq!(v["data"].as_array().unwrap().len(), 0);
    let bkey = rb.iter().find_map(|r| r["key_id"].as_str()).unwrap();
    let (_, v) = h.get(&format!("/v1/receipts?key_id={bkey}"), &a).await;
    assert_eq!(v["data"].as_array().unwrap().len(), 0);

    // The admin sees both.
    let (s, v) = h
        .admin(Method::GET, "/admin/v1/receipts?limit=1000", None)
        .await;
    assert_eq!(s, 200);
    let tenants: std::collections::BTreeSet<_> = v["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["tenant_id"].as_str().unwrap().to_string())
        .collect();
    assert!(tenants.contains("tenant-a") && tenants.contains("tenant-b"));
    // A tenant key is not an admin token.
    let r = h
        .http
        .get(h.url("/admin/v1/receipts"))
        .bearer_auth(&a)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
}

#[tokio::test]
async fn receipts_paginate_with_cursor_and_filters() {
    let h = Harness::start().await;
    let key = h.tenant("acme").await;
    for i in 0..7 {
        let text = if i % 2 == 0 {
            "ok".to_string()
        } else {
            "[[mock:error=500]] x".to_string()
        };
        h.message(&key, &chat(&text)).await;
    }
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let path = match &cursor {
            Some(c) => format!("/v1/receipts?kind=message&limit=3&cursor={c}"),
            None => "/v1/receipts?kind=message&limit=3".to_string(),
        };
        let (s, v) = h.get(&path, &key).await;
        assert_eq!(s, 200, "{v}");
        for r in v["data"].as_array().unwrap() {
            seen.push(r["seq"].as_u64().unwrap());
        }
        if v["has_more"] == true {
            cursor = Some(v["next_cursor"].as_str().unwrap().to_string());
        } else {
            break;
        }
    }
    assert_eq!(seen.len(), 7);
    let mut sorted = seen.clone();
    sorted.sort_unstable_by(|a, b| b.cmp(a));
    assert_eq!(seen, sorted, "newest first, no duplicates");
    let (_, v) = h.get("/v1/receipts?decision=upstream_error", &key).await;
    assert_eq!(v["data"].as_array().unwrap().len(), 3);
    for bad in [
        "limit=0",
        "limit=5000",
        "cursor=%%%",
        "kind=nope",
        "since=yesterday",
        "bogus=1",
    ] {
        let (s, v) = h.get(&format!("/v1/receipts?{bad}"), &key).await;
        assert_eq!(s, 400, "{bad}: {v}");
        assert_eq!(v["error"]["type"], "invalid_request_error");
    }
}

#[tokio::test]
async fn admin_api_requires_the_admin_token_and_validates_input() {
    let h = Harness::start().await;
    let r = h.http.get(h.url("/admin/v1/tenants")).send().await.unwrap();
    assert_eq!(r.status(), 401);
    let r = h
        .http
        .get(h.url("/admin/v1/tenants"))
        .bearer_auth("wrong-token-0123456789")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);

    let (s, t) = h
        .admin(Method::POST, "/admin/v1/tenants", Some(json!({"id": "globex", "name": "Globex", "plan": "pro", "attributes": {"domain": "globex.com"}})))
        .await;
    assert_eq!(s, 201, "{t}");
    assert_eq!(t["attributes"]["domain"], "globex.com");
    let (s, _) = h
        .admin(
            Method::POST,
            "/admin/v1/tenants",
            Some(json!({"id": "globex", "name": "again"})),
        )
        .await;
    assert_eq!(s, 409);
    for bad in [
        json!({"id": "Bad Id", "name": "x"}),
        json!({"name": ""}),
        json!({"name": "x", "colour": "red"}),
        json!("not an object"),
    ] {
        let (s, v) = h
            .admin(Method::POST, "/admin/v1/tenants", Some(bad.clone()))
            .await;
        assert_eq!(s, 400, "{bad}: {v}");
        assert_eq!(v["type"], "error");
    }
    let (s, v) = h
        .admin(
            Method::PATCH,
            "/admin/v1/tenants/globex",
            Some(json!({"plan": "enterprise"})),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["plan"], "enterprise");
    let (s, _) = h.admin(Method::GET, "/admin/v1/tenants/nope", None).await;
    assert_eq!(s, 404);
    for bad in [
        json!({"role": "God Mode"}),
        json!({"scopes": ["everything"]}),
        json!({"expires_at": "tomorrow"}),
    ] {
        let (s, v) = h
            .admin(
                Method::POST,
                "/admin/v1/tenants/globex/keys",
                Some(bad.clone()),
            )
            .await;
        assert_eq!(s, 400, "{bad}: {v}");
    }
    let (s, _) = h
        .admin(Method::POST, "/admin/v1/tenants/nope/keys", Some(json!({})))
        .await;
    assert_eq!(s, 404);
    let (secret, id) = h
        .key("globex", json!({"role": "tenant_admin", "name": "ops"}))
        .await;
    let (_, list) = h
        .admin(Method::GET, "/admin/v1/tenants/globex/keys", None)
        .await;
    let listed = list.to_string();
    assert!(listed.contains(&id));
    assert!(!listed.contains(&secret), "secrets are shown once only");
    assert!(!listed.contains("secret_hash"));
    // A key of another tenant cannot be revoked through this tenant's path.
    h.tenant("acme").await;
    let (s, _) = h
        .admin(
            Method::POST,
            &format!("/admin/v1/tenants/acme/keys/{id}/revoke"),
            None,
        )
        .await;
    assert_eq!(s, 404);
    assert_eq!(h.message(&secret, &chat("hi")).await.0, 200);

    // Deleting the tenant kills its keys; its chain (with the deletion receipt) remains.
    let (s, _) = h
        .admin(Method::DELETE, "/admin/v1/tenants/globex", None)
        .await;
    assert_eq!(s, 204);
    assert_eq!(h.message(&secret, &chat("hi")).await.0, 401);
    let (s, v) = h
        .admin(
            Method::GET,
            "/admin/v1/receipts?tenant_id=globex&kind=admin_change",
            None,
        )
        .await;
    assert_eq!(s, 200);
    let ops: Vec<_> = v["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["admin"]["change"]["op"].clone())
        .collect();
    assert!(
        ops.contains(&json!("delete")) && ops.contains(&json!("create")),
        "{ops:?}"
    );
}

#[tokio::test]
async fn control_plane_is_off_without_an_admin_token() {
    let h = Harness::start_with(|c| c.admin.token = None).await;
    let r = h
        .http
        .get(h.url("/admin/v1/tenants"))
        .bearer_auth("anything-at-all-0123")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
}

#[tokio::test]
async fn health_and_readiness() {
    let mut h = Harness::start().await;
    let r = h.http.get(h.url("/healthz")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let r = h.http.get(h.url("/readyz")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    h.stop().await;
}
