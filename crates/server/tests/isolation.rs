//! Tenant isolation, proven endpoint by endpoint: every data-plane and control-plane
//! endpoint is called with every kind of foreign or broken credential, and must give no
//! access and leak no existence (a foreign id answers exactly like a missing one).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::*;
use jsonwebtoken::jwk::{Jwk, JwkSet};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use reqwest::Method;
use serde_json::{Value, json};
use std::path::{Path, PathBuf};

const DATA: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/jwt");
const ISS_A: &str = "https://idp-a.example";
const ISS_B: &str = "https://idp-b.example";
const ISS_SHARED: &str = "https://idp-shared.example";
const AUD: &str = "palisade";

fn pem(name: &str) -> Vec<u8> {
    std::fs::read(format!("{DATA}/{name}")).unwrap()
}

fn enc(alg: Algorithm, file: &str) -> EncodingKey {
    let p = pem(file);
    match alg {
        Algorithm::RS256 => EncodingKey::from_rsa_pem(&p).unwrap(),
        Algorithm::ES256 => EncodingKey::from_ec_pem(&p).unwrap(),
        Algorithm::EdDSA => EncodingKey::from_ed_pem(&p).unwrap(),
        _ => unreachable!(),
    }
}

fn jwk(alg: Algorithm, file: &str, kid: &str) -> Jwk {
    let mut j = Jwk::from_encoding_key(&enc(alg, file), alg).unwrap();
    j.common.key_id = Some(kid.into());
    j
}

fn write_jwks(path: &Path, keys: Vec<Jwk>) {
    std::fs::write(path, serde_json::to_vec(&JwkSet { keys }).unwrap()).unwrap();
}

fn now() -> u64 {
    jsonwebtoken::get_current_timestamp()
}

fn sign(alg: Algorithm, file: &str, kid: &str, claims: &Value) -> String {
    let mut h = Header::new(alg);
    h.kid = Some(kid.into());
    jsonwebtoken::encode(&h, claims, &enc(alg, file)).unwrap()
}

fn claims(iss: &str, sub: &str) -> Value {
    json!({"iss": iss, "aud": AUD, "sub": sub, "exp": now() + 600, "iat": now(),
           "role": "member", "scope": "messages guard receipts:read"})
}

fn b64(v: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v)
}

/// An unsigned token (`alg: none`).
fn alg_none(c: &Value) -> String {
    format!(
        "{}.{}.",
        b64(br#"{"alg":"none","typ":"JWT","kid":"rsa-1"}"#),
        b64(c.to_string().as_bytes())
    )
}

/// HMAC "signed" with the RSA public key as the secret (the classic confusion attack).
fn hmac_confusion(c: &Value) -> String {
    let mut h = Header::new(Algorithm::HS256);
    h.kid = Some("rsa-1".into());
    jsonwebtoken::encode(&h, c, &EncodingKey::from_secret(&pem("rsa.pem")[..64])).unwrap()
}

struct World {
    h: Harness,
    jwks_dir: tempfile::TempDir,
    jwks_a: PathBuf,
    /// tenant a: member key, admin key, receipt id, key id, policy hash
    a_member: String,
    a_admin: String,
    a_receipt: String,
    a_key_id: String,
    a_hash: String,
    b_member: String,
    b_admin: String,
    b_receipt: String,
}

async fn world() -> World {
    world_with(|_| {}).await
}

async fn world_with(f: impl FnOnce(&mut palisade_server::config::Config)) -> World {
    let jwks_dir = tempfile::tempdir().unwrap();
    let jwks_a = jwks_dir.path().join("a.json");
    let jwks_b = jwks_dir.path().join("b.json");
    write_jwks(
        &jwks_a,
        vec![
            jwk(Algorithm::RS256, "rsa.pem", "rsa-1"),
            jwk(Algorithm::ES256, "ec.pem", "ec-1"),
            jwk(Algorithm::EdDSA, "ed25519.pem", "ed-1"),
        ],
    );
    write_jwks(&jwks_b, vec![jwk(Algorithm::ES256, "ec.pem", "ec-b")]);
    let trust = |iss: &str, jwks: &Path, tenant: &str, claim: Option<&str>| {
        json!({
            "issuer": iss, "audience": AUD, "jwks": jwks.display().to_string(),
            "tenant": tenant, "role_claim": "role", "scopes_claim": "scope",
            "tenant_claim": claim.map(|_| "org"), "tenant_claim_value": claim,
            "attribute_claims": {"dept": "ext.dept"}
        })
    };
    let jwt: palisade_server::jwt::JwtConfig = serde_json::from_value(json!({
        "leeway_seconds": 5,
        "jwks_min_refresh_seconds": 0,
        "trust": [
            trust(ISS_A, &jwks_a, "tenant-a", None),
            trust(ISS_B, &jwks_b, "tenant-b", None),
            trust(ISS_SHARED, &jwks_a, "tenant-a", Some("org-a")),
            trust(ISS_SHARED, &jwks_a, "tenant-b", Some("org-b")),
        ]
    }))
    .unwrap();
    let h = Harness::start_with(|c| {
        c.auth.jwt = jwt;
        f(c);
    })
    .await;
    let a_member = h.tenant("tenant-a").await;
    let b_member = h.tenant("tenant-b").await;
    let (a_admin, _) = h.key("tenant-a", json!({"role": "tenant_admin"})).await;
    let (b_admin, _) = h.key("tenant-b", json!({"role": "tenant_admin"})).await;
    let (_, a_key_id) = h.key("tenant-a", json!({"name": "spare"})).await;
    assert_eq!(h.message(&a_member, &chat("hello a")).await.0, 200);
    assert_eq!(h.message(&b_member, &chat("hello b")).await.0, 200);
    let a_receipt = h.receipts(&a_member).await[0]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let b_receipt = h.receipts(&b_member).await[0]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let a_hash = h.put_policy(Some("tenant-a"), ALLOW_ALL).await;
    World {
        h,
        jwks_dir,
        jwks_a,
        a_member,
        a_admin,
        a_receipt,
        a_key_id,
        a_hash,
        b_member,
        b_admin,
        b_receipt,
    }
}

/// Every endpoint, with `{T}` for a tenant, `{R}` a receipt id, `{K}` a key id, `{H}` a
/// policy hash.
const ENDPOINTS: &[(&str, &str)] = &[
    ("POST", "/v1/messages"),
    ("POST", "/v1/messages/count_tokens"),
    ("POST", "/v1/guard/tool"),
    ("POST", "/v1/guard/scan"),
    ("GET", "/v1/receipts"),
    ("GET", "/v1/receipts/{R}"),
    ("GET", "/v1/receipts/export"),
    ("GET", "/v1/alerts"),
    ("GET", "/v1/alerts/{R}"),
    ("POST", "/v1/alerts/{R}/ack"),
    ("GET", "/v1/alerts/webhook-secret"),
    ("POST", "/admin/v1/tenants"),
    ("GET", "/admin/v1/tenants"),
    ("GET", "/admin/v1/tenants/{T}"),
    ("PATCH", "/admin/v1/tenants/{T}"),
    ("DELETE", "/admin/v1/tenants/{T}"),
    ("POST", "/admin/v1/tenants/{T}/keys"),
    ("GET", "/admin/v1/tenants/{T}/keys"),
    ("POST", "/admin/v1/tenants/{T}/keys/{K}/rotate"),
    ("POST", "/admin/v1/tenants/{T}/keys/{K}/revoke"),
    ("POST", "/admin/v1/tenants/{T}/policy"),
    ("GET", "/admin/v1/tenants/{T}/policy"),
    ("POST", "/admin/v1/tenants/{T}/policy/dry-run"),
    ("GET", "/admin/v1/tenants/{T}/policy/{H}"),
    ("POST", "/admin/v1/tenants/{T}/policy/{H}/activate"),
    ("POST", "/admin/v1/platform/policy"),
    ("GET", "/admin/v1/platform/policy"),
    ("POST", "/admin/v1/platform/policy/dry-run"),
    ("GET", "/admin/v1/platform/policy/{H}"),
    ("POST", "/admin/v1/platform/policy/{H}/activate"),
    ("GET", "/admin/v1/receipts"),
    ("GET", "/admin/v1/receipts/export"),
];

fn body_for(path: &str) -> Value {
    if path.starts_with("/v1/messages") {
        chat("canary body")
    } else if path.ends_with("/guard/tool") {
        json!({"tool": "x", "input": {}})
    } else if path.ends_with("/guard/scan") {
        json!({"text": "hello"})
    } else if path.ends_with("/keys") {
        json!({"role": "tenant_admin", "scopes": ["admin", "act_as"]})
    } else if path.ends_with("/tenants") {
        json!({"id": "intruder", "name": "x"})
    } else {
        json!({})
    }
}

impl World {
    fn fill(&self, tpl: &str, tenant: &str) -> String {
        tpl.replace("{T}", tenant)
            .replace("{R}", &self.a_receipt)
            .replace("{K}", &self.a_key_id)
            .replace("{H}", &self.a_hash)
    }

    async fn call(
        &self,
        method: &str,
        path: &str,
        cred: Option<&str>,
        extra: &[(&str, &str)],
    ) -> (u16, Value) {
        let m = Method::from_bytes(method.as_bytes()).unwrap();
        let mut req = self
            .h
            .http
            .request(m.clone(), self.h.url(path))
            .header("anthropic-version", "2023-06-01");
        if let Some(c) = cred {
            req = req.bearer_auth(c);
        }
        for (k, v) in extra {
            req = req.header(*k, *v);
        }
        if m == Method::POST || m == Method::PATCH {
            if path.contains("/policy") && !path.ends_with("dry-run") && !path.ends_with("activate")
            {
                req = req
                    .header("content-type", "application/yaml")
                    .body(ALLOW_ALL.to_string());
            } else {
                req = req.json(&body_for(path));
            }
        }
        let r = req.send().await.unwrap();
        let s = r.status().as_u16();
        let text = r.text().await.unwrap();
        (
            s,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }
}

/// Broken credentials of every kind: no endpoint answers 2xx, and nothing reaches the
/// upstream.
#[tokio::test]
async fn broken_credentials_get_nothing_anywhere() {
    let w = world().await;
    let h = &w.h;
    let upstream_before = h.mock.requests().len();

    let (revoked, rid) = h.key("tenant-a", json!({})).await;
    h.admin(
        Method::POST,
        &format!("/admin/v1/tenants/tenant-a/keys/{rid}/revoke"),
        None,
    )
    .await;
    let (expired, _) = h
        .key("tenant-a", json!({"expires_at": "2020-01-01T00:00:00Z"}))
        .await;
    let (rotated_out, roid) = h.key("tenant-a", json!({})).await;
    h.admin(
        Method::POST,
        &format!("/admin/v1/tenants/tenant-a/keys/{roid}/rotate"),
        None,
    )
    .await;
    let mut forged_key = w.a_member.clone();
    forged_key.replace_range(forged_key.len() - 4.., "AAAA");

    let mut c = claims(ISS_A, "alice");
    c["exp"] = json!(now() - 3600);
    let jwt_expired = sign(Algorithm::RS256, "rsa.pem", "rsa-1", &c);
    let mut c = claims(ISS_A, "alice");
    c["aud"] = json!("someone-else");
    let jwt_wrong_aud = sign(Algorithm::RS256, "rsa.pem", "rsa-1", &c);
    let jwt_wrong_iss = sign(
        Algorithm::RS256,
        "rsa.pem",
        "rsa-1",
        &claims("https://evil.example", "alice"),
    );
    let jwt_forged = sign(
        Algorithm::RS256,
        "rsa-other.pem",
        "rsa-1",
        &claims(ISS_A, "alice"),
    );
    let jwt_unknown_kid = sign(
        Algorithm::RS256,
        "rsa-other.pem",
        "nope",
        &claims(ISS_A, "alice"),
    );
    let mut c = claims(ISS_A, "alice");
    c.as_object_mut().unwrap().remove("exp");
    let jwt_no_exp = sign(Algorithm::RS256, "rsa.pem", "rsa-1", &c);
    let jwt_none = alg_none(&claims(ISS_A, "alice"));
    let jwt_hmac = hmac_confusion(&claims(ISS_A, "alice"));
    // Shared issuer, but the org claim names no trusted tenant.
    let mut c = claims(ISS_SHARED, "alice");
    c["org"] = json!("org-z");
    let jwt_unmapped = sign(Algorithm::RS256, "rsa.pem", "rsa-1", &c);
    // Key-family confusion: ES256 header with the RSA key's kid.
    let jwt_family = sign(Algorithm::ES256, "ec.pem", "rsa-1", &claims(ISS_A, "alice"));

    let creds: Vec<(&str, Option<String>)> = vec![
        ("none", None),
        ("garbage", Some("garbage".into())),
        ("revoked", Some(revoked)),
        ("expired", Some(expired)),
        ("rotated-out", Some(rotated_out)),
        ("forged-key", Some(forged_key)),
        ("jwt-expired", Some(jwt_expired)),
        ("jwt-wrong-aud", Some(jwt_wrong_aud)),
        ("jwt-wrong-iss", Some(jwt_wrong_iss)),
        ("jwt-forged", Some(jwt_forged)),
        ("jwt-unknown-kid", Some(jwt_unknown_kid)),
        ("jwt-no-exp", Some(jwt_no_exp)),
        ("jwt-alg-none", Some(jwt_none)),
        ("jwt-hmac", Some(jwt_hmac)),
        ("jwt-unmapped", Some(jwt_unmapped)),
        ("jwt-family", Some(jwt_family)),
    ];
    for (name, cred) in &creds {
        for (m, tpl) in ENDPOINTS {
            let path = w.fill(tpl, "tenant-a");
            let (s, v) = w.call(m, &path, cred.as_deref(), &[]).await;
            assert!(s == 401 || s == 403, "{name} {m} {path}: {s} {v}");
            assert!(v["error"]["type"].is_string(), "{name} {m} {path}: {v}");
        }
    }
    assert_eq!(h.mock.requests().len(), upstream_before);
    // Nothing changed: tenant a still has its keys and policy.
    let (s, v) = h
        .admin(Method::GET, "/admin/v1/tenants/tenant-a/policy", None)
        .await;
    assert_eq!(s, 200);
    assert_eq!(v["active"], w.a_hash.as_str());
    drop(w.jwks_dir);
}

/// Another tenant's key, admin key and JWT: foreign paths answer like missing ones.
#[tokio::test]
async fn foreign_tenant_credentials_see_no_existence() {
    let w = world().await;
    let h = &w.h;
    let b_jwt = sign(
        Algorithm::ES256,
        "ec.pem",
        "ec-b",
        &json!({"iss": ISS_B, "aud": AUD, "sub": "bob", "exp": now() + 600,
                "role": "tenant_admin"}),
    );
    let mut shared_b = claims(ISS_SHARED, "bob");
    shared_b["org"] = json!("org-b");
    shared_b["role"] = json!("tenant_admin");
    shared_b["scope"] = json!("messages guard receipts:read admin");
    let b_shared_jwt = sign(Algorithm::EdDSA, "ed25519.pem", "ed-1", &shared_b);
    for cred in [&w.b_member, &w.b_admin, &b_jwt, &b_shared_jwt] {
        // Receipt by id: foreign == missing.
        let (s1, v1) = w
            .call(
                "GET",
                &format!("/v1/receipts/{}", w.a_receipt),
                Some(cred),
                &[],
            )
            .await;
        let missing = "01900000-0000-7000-8000-000000000000";
        let (s2, v2) = w
            .call("GET", &format!("/v1/receipts/{missing}"), Some(cred), &[])
            .await;
        assert_eq!(s1, s2, "{v1} {v2}");
        assert_eq!(
            v1.to_string().replace(&w.a_receipt, "ID"),
            v2.to_string().replace(missing, "ID")
        );
        // Listing: only its own tenant, whatever the query or headers say.
        for q in [
            "",
            "?tenant_id=tenant-a",
            "?user_id=tenant-a-user",
            "?tenant=tenant-a",
        ] {
            let (s, v) = w
                .call(
                    "GET",
                    &format!("/v1/receipts{q}"),
                    Some(cred),
                    &[
                        ("x-tenant-id", "tenant-a"),
                        ("x-palisade-tenant", "tenant-a"),
                        ("x-user-role", "admin"),
                        ("x-tenant-plan", "enterprise"),
                    ],
                )
                .await;
            if s == 200 {
                for r in v["data"].as_array().unwrap() {
                    assert_eq!(r["tenant_id"], "tenant-b", "{q}: {r}");
                }
            } else {
                assert!(s == 400 || s == 403, "{q}: {s} {v}");
            }
        }
        // Control plane paths naming tenant a answer exactly as a missing tenant.
        for (m, tpl) in ENDPOINTS.iter().filter(|(_, p)| p.contains("{T}")) {
            let (s1, v1) = w.call(m, &w.fill(tpl, "tenant-a"), Some(cred), &[]).await;
            let (s2, v2) = w.call(m, &w.fill(tpl, "tenant-zz"), Some(cred), &[]).await;
            assert_eq!(s1, s2, "{m} {tpl}: {v1} vs {v2}");
            assert!(s1 >= 400, "{m} {tpl}: {s1} {v1}");
            assert_eq!(
                v1.to_string().replace("tenant-a", "T"),
                v2.to_string().replace("tenant-zz", "T"),
                "{m} {tpl}"
            );
        }
        // Platform-wide endpoints are never reachable with a tenant credential.
        for (m, tpl) in ENDPOINTS
            .iter()
            .filter(|(_, p)| p.starts_with("/admin/") && !p.contains("{T}"))
        {
            let (s, v) = w.call(m, &w.fill(tpl, "tenant-a"), Some(cred), &[]).await;
            assert!(s == 401 || s == 403, "{m} {tpl}: {s} {v}");
        }
    }
    // Tenant b's admin on its own tenant, with tenant a's key id and policy hash: exactly
    // like missing ids.
    for (m, tpl) in [
        ("POST", "/admin/v1/tenants/tenant-b/keys/{K}/rotate"),
        ("POST", "/admin/v1/tenants/tenant-b/keys/{K}/revoke"),
        ("GET", "/admin/v1/tenants/tenant-b/policy/{H}"),
        ("POST", "/admin/v1/tenants/tenant-b/policy/{H}/activate"),
    ] {
        let real = w.fill(tpl, "");
        let fake = tpl
            .replace("{K}", "key_00000000000000000000")
            .replace("{H}", &"0".repeat(64));
        let (s1, v1) = w.call(m, &real, Some(&w.b_admin), &[]).await;
        let (s2, v2) = w.call(m, &fake, Some(&w.b_admin), &[]).await;
        assert_eq!(s1, 404, "{real}: {v1}");
        assert_eq!(s1, s2);
        assert_eq!(
            v1.to_string()
                .replace(&w.a_key_id, "ID")
                .replace(&w.a_hash, "ID"),
            v2.to_string()
                .replace("key_00000000000000000000", "ID")
                .replace(&"0".repeat(64), "ID")
        );
    }
    // Tenant a is untouched; b's receipt is still b's.
    assert_eq!(h.message(&w.a_member, &chat("still here")).await.0, 200);
    let (s, _) = h
        .get(&format!("/v1/receipts/{}", w.b_receipt), &w.b_member)
        .await;
    assert_eq!(s, 200);
    let (_, keys) = h
        .admin(Method::GET, "/admin/v1/tenants/tenant-a/keys", None)
        .await;
    assert!(
        keys["data"]
            .as_array()
            .unwrap()
            .iter()
            .all(|k| k["revoked_at"].is_null())
    );
}

#[tokio::test]
async fn scopes_are_enforced_per_endpoint() {
    let w = world().await;
    let h = &w.h;
    let (guard_only, _) = h.key("tenant-a", json!({"scopes": ["guard"]})).await;
    let (approver, _) = h.key("tenant-a", json!({"role": "approver"})).await;
    let (service, _) = h.key("tenant-a", json!({"role": "service"})).await;
    let r = h.message(&guard_only, &chat("hi")).await;
    assert_eq!(r.0, 403, "{}", r.1);
    assert_eq!(r.1["error"]["type"], "permission_error");
    assert_eq!(r.1["error"]["palisade_reason"], "missing_scope");
    assert_eq!(h.get("/v1/receipts", &guard_only).await.0, 403);
    let (s, _) = w
        .call("POST", "/v1/guard/scan", Some(&guard_only), &[])
        .await;
    assert_eq!(s, 200);
    assert_eq!(h.message(&approver, &chat("hi")).await.0, 403);
    assert_eq!(h.get("/v1/receipts", &approver).await.0, 200);
    assert_eq!(h.message(&service, &chat("hi")).await.0, 200);
    assert_eq!(h.get("/v1/receipts", &service).await.0, 403);
    // A member key (empty scope list, created before scopes) keeps working.
    assert_eq!(h.message(&w.a_member, &chat("hi")).await.0, 200);
    // A member is not a tenant admin.
    let (s, v) = w
        .call(
            "GET",
            "/admin/v1/tenants/tenant-a/keys",
            Some(&w.a_member),
            &[],
        )
        .await;
    assert_eq!(s, 403, "{v}");
    // Unknown scopes are refused at creation.
    let (s, _) = h
        .admin(
            Method::POST,
            "/admin/v1/tenants/tenant-a/keys",
            Some(json!({"scopes": ["everything"]})),
        )
        .await;
    assert_eq!(s, 400);
}

#[tokio::test]
async fn tenant_admins_manage_their_own_tenant_within_bounds() {
    let w = world().await;
    let (s, v) = w
        .call(
            "GET",
            "/admin/v1/tenants/tenant-a/keys",
            Some(&w.a_admin),
            &[],
        )
        .await;
    assert_eq!(s, 200, "{v}");
    let r =
        w.h.http
            .post(w.h.url("/admin/v1/tenants/tenant-a/keys"))
            .bearer_auth(&w.a_admin)
            .json(&json!({"name": "ci"}))
            .send()
            .await
            .unwrap();
    assert_eq!(r.status(), 201);
    let created: Value = r.json().await.unwrap();
    let new_key = created["secret"].as_str().unwrap().to_string();
    assert_eq!(w.h.message(&new_key, &chat("hi")).await.0, 200);
    // It cannot grant what it does not hold.
    let r =
        w.h.http
            .post(w.h.url("/admin/v1/tenants/tenant-a/keys"))
            .bearer_auth(&w.a_admin)
            .json(&json!({"scopes": ["act_as"]}))
            .send()
            .await
            .unwrap();
    assert_eq!(r.status(), 403);
    // Its own tenant's policy: yes. The platform's: no.
    let (s, v) = w
        .call(
            "POST",
            "/admin/v1/tenants/tenant-a/policy",
            Some(&w.a_admin),
            &[],
        )
        .await;
    assert!(s == 200 || s == 201, "{v}");
    let (s, _) = w
        .call("GET", "/admin/v1/platform/policy", Some(&w.a_admin), &[])
        .await;
    assert_eq!(s, 403);
    let (s, _) = w
        .call("GET", "/admin/v1/tenants", Some(&w.a_admin), &[])
        .await;
    assert_eq!(s, 401);
    // The change is recorded as the tenant admin's.
    let (_, v) =
        w.h.admin(Method::GET, "/admin/v1/receipts?kind=admin_change", None)
            .await;
    assert!(v["data"].as_array().unwrap().iter().any(|r| {
        r["admin"]["actor"]
            .as_str()
            .is_some_and(|a| a.starts_with("tenant_admin:"))
    }));
}

#[tokio::test]
async fn rotation_with_grace_keeps_both_secrets_until_it_ends() {
    let w = world().await;
    let h = &w.h;
    let (old, id) = h.key("tenant-a", json!({})).await;
    let (s, v) = h
        .admin(
            Method::POST,
            &format!("/admin/v1/tenants/tenant-a/keys/{id}/rotate"),
            Some(json!({"grace_seconds": 3600})),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    assert!(v["prev_valid_until"].is_string());
    let new = v["secret"].as_str().unwrap().to_string();
    assert_eq!(h.message(&old, &chat("hi")).await.0, 200);
    assert_eq!(h.message(&new, &chat("hi")).await.0, 200);
    // Rotating again without grace ends the old secrets at once.
    let (_, v) = h
        .admin(
            Method::POST,
            &format!("/admin/v1/tenants/tenant-a/keys/{id}/rotate"),
            None,
        )
        .await;
    let newest = v["secret"].as_str().unwrap().to_string();
    assert_eq!(h.message(&old, &chat("hi")).await.0, 401);
    assert_eq!(h.message(&new, &chat("hi")).await.0, 401);
    assert_eq!(h.message(&newest, &chat("hi")).await.0, 200);
    let (s, _) = h
        .admin(
            Method::POST,
            &format!("/admin/v1/tenants/tenant-a/keys/{id}/rotate"),
            Some(json!({"grace_seconds": 999_999_999})),
        )
        .await;
    assert_eq!(s, 400);
}

#[tokio::test]
async fn networks_origins_and_forwarded_for() {
    let w = world_with(|c| c.auth.trusted_proxies = vec!["127.0.0.0/8".into()]).await;
    let h = &w.h;
    let (far, _) = h
        .key("tenant-a", json!({"allowed_networks": ["10.0.0.0/8"]}))
        .await;
    let (near, _) = h
        .key(
            "tenant-a",
            json!({"allowed_networks": ["127.0.0.0/8", "::1/128"]}),
        )
        .await;
    let (s, v) = h
        .admin(
            Method::POST,
            "/admin/v1/tenants/tenant-a/keys",
            Some(json!({"allowed_networks": ["not-a-net"]})),
        )
        .await;
    assert_eq!(s, 400, "{v}");
    let (s, v, _) = h.message(&far, &chat("hi")).await;
    assert_eq!(s, 403, "{v}");
    assert_eq!(v["error"]["type"], "permission_error");
    assert_eq!(h.message(&near, &chat("hi")).await.0, 200);
    // Through a trusted proxy (the test client is on 127.0.0.1), X-Forwarded-For counts.
    let (s, _) = w
        .call(
            "POST",
            "/v1/guard/scan",
            Some(&far),
            &[("x-forwarded-for", "10.1.2.3")],
        )
        .await;
    assert_eq!(s, 200);
    let (s, _) = w
        .call(
            "POST",
            "/v1/guard/scan",
            Some(&near),
            &[("x-forwarded-for", "10.1.2.3")],
        )
        .await;
    assert_eq!(s, 403);
    // Tenant origins.
    let (s, _) = h
        .admin(
            Method::PATCH,
            "/admin/v1/tenants/tenant-a",
            Some(json!({"attributes": {"allowed_origins": ["https://app.example"]}})),
        )
        .await;
    assert_eq!(s, 200);
    let (s, _) = w
        .call(
            "POST",
            "/v1/guard/scan",
            Some(&w.a_member),
            &[("origin", "https://app.example")],
        )
        .await;
    assert_eq!(s, 200);
    let (s, v) = w
        .call(
            "POST",
            "/v1/guard/scan",
            Some(&w.a_member),
            &[("origin", "https://evil.example")],
        )
        .await;
    assert_eq!(s, 403, "{v}");
    assert_eq!(v["error"]["palisade_reason"], "origin_not_allowed");
}

#[tokio::test]
async fn act_as_needs_the_scope_and_never_changes_the_tenant() {
    let w = world().await;
    let h = &w.h;
    let (svc, _) = h
        .key(
            "tenant-a",
            json!({"role": "service", "scopes": ["messages", "receipts:read", "act_as"]}),
        )
        .await;
    let (s, v) = w
        .call(
            "POST",
            "/v1/messages",
            Some(&w.a_member),
            &[("x-palisade-user", "eve")],
        )
        .await;
    assert_eq!(s, 403, "{v}");
    assert_eq!(v["error"]["palisade_reason"], "act_as_not_allowed");
    let (s, v) = w
        .call(
            "POST",
            "/v1/messages",
            Some(&svc),
            &[
                ("x-palisade-user", "end-user-42"),
                ("x-palisade-tenant", "tenant-b"),
                ("x-user-role", "tenant_admin"),
            ],
        )
        .await;
    assert_eq!(s, 200, "{v}");
    let rs = h.receipts(&svc).await;
    assert_eq!(rs[0]["user_id"], "end-user-42");
    assert_eq!(rs[0]["tenant_id"], "tenant-a");
    // No header makes a service key an admin.
    let (s, _) = w
        .call(
            "GET",
            "/admin/v1/tenants/tenant-a/keys",
            Some(&svc),
            &[("x-palisade-user", "admin")],
        )
        .await;
    assert_eq!(s, 403);
}

#[tokio::test]
async fn jwts_from_trusted_issuers_work_and_keys_rotate() {
    let w = world().await;
    let h = &w.h;
    for (alg, file, kid) in [
        (Algorithm::RS256, "rsa.pem", "rsa-1"),
        (Algorithm::ES256, "ec.pem", "ec-1"),
        (Algorithm::EdDSA, "ed25519.pem", "ed-1"),
    ] {
        let t = sign(alg, file, kid, &claims(ISS_A, "alice"));
        let (s, v, _) = h.message(&t, &chat("hi")).await;
        assert_eq!(s, 200, "{alg:?}: {v}");
    }
    let t = sign(
        Algorithm::RS256,
        "rsa.pem",
        "rsa-1",
        &claims(ISS_A, "alice"),
    );
    let rs = h.receipts(&t).await;
    assert!(rs.iter().all(|r| r["tenant_id"] == "tenant-a"));
    assert!(rs.iter().any(|r| r["user_id"] == "alice"));
    // Shared issuer mapped by claim.
    let mut c = claims(ISS_SHARED, "bob");
    c["org"] = json!("org-b");
    let tb = sign(Algorithm::RS256, "rsa.pem", "rsa-1", &c);
    assert_eq!(h.message(&tb, &chat("hi")).await.0, 200);
    assert!(
        h.receipts(&tb)
            .await
            .iter()
            .all(|r| r["tenant_id"] == "tenant-b")
    );
    // Scopes from the claim.
    let mut c = claims(ISS_A, "alice");
    c["scope"] = json!("guard");
    let t = sign(Algorithm::RS256, "rsa.pem", "rsa-1", &c);
    assert_eq!(h.message(&t, &chat("hi")).await.0, 403);
    // Rotation at the IdP: a new kid appears in the JWKS and is picked up.
    let rotated = sign(
        Algorithm::RS256,
        "rsa-other.pem",
        "rsa-2",
        &claims(ISS_A, "alice"),
    );
    assert_eq!(h.message(&rotated, &chat("hi")).await.0, 401);
    write_jwks(
        &w.jwks_a,
        vec![
            jwk(Algorithm::RS256, "rsa.pem", "rsa-1"),
            jwk(Algorithm::RS256, "rsa-other.pem", "rsa-2"),
        ],
    );
    assert_eq!(h.message(&rotated, &chat("hi")).await.0, 200);
}
