//! TLS termination and mTLS identities, end to end: certificates are generated at test
//! time (rcgen), the real gateway serves HTTPS on port 0, and reqwest calls it trusting
//! the test CA, with and without client certificates.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::*;
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair, KeyUsagePurpose,
};
use reqwest::Method;
use serde_json::{Value, json};
use std::path::Path;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

struct Ca {
    issuer: CertifiedIssuer<'static, KeyPair>,
}

impl Ca {
    fn new(name: &str) -> Self {
        let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        p.distinguished_name.push(DnType::CommonName, name);
        p.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        Self {
            issuer: CertifiedIssuer::self_signed(p, KeyPair::generate().unwrap()).unwrap(),
        }
    }

    fn pem(&self) -> String {
        self.issuer.pem()
    }

    /// (certificate PEM, key PEM, SHA-256 of the DER as hex).
    fn issue(&self, sans: &[&str], cn: &str) -> (String, String, String) {
        let mut p =
            CertificateParams::new(sans.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap();
        p.distinguished_name.push(DnType::CommonName, cn);
        let key = KeyPair::generate().unwrap();
        let cert = p.signed_by(&key, &self.issuer).unwrap();
        let fp = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, cert.der());
        (cert.pem(), key.serialize_pem(), hex::encode(fp.as_ref()))
    }
}

fn write(dir: &Path, name: &str, text: &str) -> String {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p.display().to_string()
}

/// A client trusting only `ca_pem`, optionally presenting a certificate.
fn client(ca_pem: &str, identity: Option<(&str, &str)>) -> reqwest::Client {
    let mut b = reqwest::Client::builder()
        .tls_certs_only([reqwest::Certificate::from_pem(ca_pem.as_bytes()).unwrap()])
        .timeout(Duration::from_secs(10));
    if let Some((cert, key)) = identity {
        b = b.identity(reqwest::Identity::from_pem(format!("{cert}{key}").as_bytes()).unwrap());
    }
    b.build().unwrap()
}

struct Setup {
    h: Harness,
    ca: Ca,
    server_files: (String, String),
}

async fn start(client_auth: &str, with_ca: bool) -> Setup {
    let ca = Ca::new("Palisade Test CA");
    let dir = tempfile::tempdir().unwrap();
    let (cert, key, _) = ca.issue(&["localhost", "127.0.0.1"], "palisade");
    let cert_file = write(dir.path(), "server.pem", &cert);
    let key_file = write(dir.path(), "server.key", &key);
    let ca_file = write(dir.path(), "ca.pem", &ca.pem());
    let auth = client_auth.to_string();
    let (c2, k2) = (cert_file.clone(), key_file.clone());
    let mut h = Harness::start_with(move |c| {
        c.tls.cert_file = Some(c2);
        c.tls.key_file = Some(k2);
        if with_ca {
            c.tls.client_ca_file = Some(ca_file);
        }
        c.tls.client_auth = auth;
        c.tls.handshake_timeout_ms = 500;
        c.tls.reload_interval_ms = 1000;
    })
    .await;
    assert!(h.base.starts_with("https://"), "{}", h.base);
    h.http = client(&ca.pem(), None);
    // The temp dir must outlive the server (reload reads the files again).
    std::mem::forget(dir);
    Setup {
        h,
        ca,
        server_files: (cert_file, key_file),
    }
}

async fn get(c: &reqwest::Client, url: String, api_key: Option<&str>) -> (u16, Value) {
    let mut r = c.get(url);
    if let Some(k) = api_key {
        r = r.header("x-api-key", k);
    }
    let r = r.send().await.unwrap();
    let s = r.status().as_u16();
    (s, r.json().await.unwrap_or(Value::Null))
}

async fn register_cert(h: &Harness, tenant: &str, fp: &str, role: &str) -> String {
    let (s, v) = h
        .admin(
            Method::POST,
            &format!("/admin/v1/tenants/{tenant}/keys"),
            Some(json!({"client_cert_sha256": fp, "role": role})),
        )
        .await;
    assert_eq!(s, 201, "{v}");
    assert!(
        v.get("secret").is_none(),
        "a certificate key has no secret: {v}"
    );
    v["id"].as_str().unwrap().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mtls_optional_maps_certificates_to_tenants() {
    let Setup { mut h, ca, .. } = start("optional", true).await;
    let addr = h.server.as_ref().unwrap().addr;
    let ca_pem = ca.pem();

    // HTTPS works, with HTTP/2 negotiated by ALPN.
    let r = h.http.get(h.url("/healthz")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.version(), reqwest::Version::HTTP_2);

    // Plain HTTP to the TLS port fails cleanly, and so do garbage and a silent client;
    // none of it disturbs the accept loop.
    let plain = reqwest::Client::new()
        .get(format!("http://{addr}/healthz"))
        .timeout(Duration::from_secs(5))
        .send()
        .await;
    assert!(plain.is_err() || !plain.unwrap().status().is_success());
    let mut garbage = tokio::net::TcpStream::connect(addr).await.unwrap();
    garbage
        .write_all(&[0x16, 0x03, 0x01, 0xff, 0xff, 1, 2, 3])
        .await
        .unwrap();
    let mut buf = [0u8; 64];
    let _ = tokio::time::timeout(Duration::from_secs(3), garbage.read(&mut buf)).await;
    let mut silent = tokio::net::TcpStream::connect(addr).await.unwrap();
    let started = std::time::Instant::now();
    let n = tokio::time::timeout(Duration::from_secs(5), silent.read(&mut buf))
        .await
        .expect("a stalled handshake is dropped after handshake_timeout_ms");
    assert!(matches!(n, Ok(0) | Err(_)), "{n:?}");
    assert!(started.elapsed() < Duration::from_secs(4));
    assert_eq!(
        h.http.get(h.url("/healthz")).send().await.unwrap().status(),
        200
    );

    // Two tenants with receipts of their own.
    let acme = h.tenant("acme").await;
    let globex = h.tenant("globex").await;
    for k in [&acme, &globex] {
        let (s, v, _) = h.message(k, &chat("hello")).await;
        assert_eq!(s, 200, "{v}");
    }

    // A certificate registered as an acme key authenticates as acme, with no API key.
    let (cert_a, key_a, fp_a) = ca.issue(&["client-a"], "client-a");
    let id_a = register_cert(&h, "acme", &fp_a.to_uppercase(), "member").await;
    assert_eq!(id_a, format!("crt_{fp_a}"));
    let mtls = client(&ca_pem, Some((&cert_a, &key_a)));
    let (s, v) = get(&mtls, h.url("/v1/receipts"), None).await;
    assert_eq!(s, 200, "{v}");
    let data = v["data"].as_array().unwrap();
    assert!(!data.is_empty());
    assert!(data.iter().all(|r| r["tenant_id"] == "acme"), "{v}");
    let r = mtls
        .post(h.url("/v1/messages"))
        .header("anthropic-version", "2023-06-01")
        .json(&chat("over mtls"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let (_, v) = get(&mtls, h.url("/v1/receipts?limit=1"), None).await;
    assert_eq!(v["data"][0]["key_id"], json!(id_a), "{v}");

    // With a credential as well, both must name the same tenant.
    let (s, _) = get(&mtls, h.url("/v1/receipts"), Some(&acme)).await;
    assert_eq!(s, 200);
    let (s, v) = get(&mtls, h.url("/v1/receipts"), Some(&globex)).await;
    assert_eq!(
        (s, &v["error"]["palisade_reason"]),
        (401, &json!("identity_mismatch")),
        "{v}"
    );

    // The internal header cannot be forged by a client without the certificate.
    let r = h
        .http
        .get(h.url("/v1/receipts"))
        .header("x-palisade-internal-client-cert-sha256", &fp_a)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);

    // A revoked certificate key is refused.
    let (cert_r, key_r, fp_r) = ca.issue(&["client-r"], "client-r");
    let id_r = register_cert(&h, "acme", &fp_r, "member").await;
    let (s, _) = h
        .admin(
            Method::POST,
            &format!("/admin/v1/tenants/acme/keys/{id_r}/revoke"),
            None,
        )
        .await;
    assert_eq!(s, 200);
    let revoked = client(&ca_pem, Some((&cert_r, &key_r)));
    let (s, v) = get(&revoked, h.url("/v1/receipts"), None).await;
    assert_eq!(
        (s, &v["error"]["palisade_reason"]),
        (401, &json!("key_revoked")),
        "{v}"
    );
    // ... also next to a valid key of the same tenant (the identities must agree).
    let (s, _) = get(&revoked, h.url("/v1/receipts"), Some(&acme)).await;
    assert_eq!(s, 401);
    // Certificate keys have no secret to rotate; registering a cert twice conflicts.
    let (s, _) = h
        .admin(
            Method::POST,
            &format!("/admin/v1/tenants/acme/keys/{id_a}/rotate"),
            None,
        )
        .await;
    assert_eq!(s, 400);
    let (s, _) = h
        .admin(
            Method::POST,
            "/admin/v1/tenants/globex/keys",
            Some(json!({"client_cert_sha256": fp_a})),
        )
        .await;
    assert_eq!(s, 409);
    let (s, _) = h
        .admin(
            Method::POST,
            "/admin/v1/tenants/acme/keys",
            Some(json!({"client_cert_sha256": "abc"})),
        )
        .await;
    assert_eq!(s, 400);

    // A valid but unregistered certificate is no identity: it needs an API key.
    let (cert_u, key_u, _) = ca.issue(&["client-u"], "client-u");
    let unknown = client(&ca_pem, Some((&cert_u, &key_u)));
    let (s, v) = get(&unknown, h.url("/v1/receipts"), None).await;
    assert_eq!(
        (s, &v["error"]["palisade_reason"]),
        (401, &json!("unknown_client_certificate")),
        "{v}"
    );
    let (s, _) = get(&unknown, h.url("/v1/receipts"), Some(&globex)).await;
    assert_eq!(s, 200);

    // client_auth: optional — a plain x-api-key call without a certificate works.
    let (s, v) = get(&h.http, h.url("/v1/receipts"), Some(&globex)).await;
    assert_eq!(s, 200);
    assert!(
        v["data"]
            .as_array()
            .unwrap()
            .iter()
            .all(|r| r["tenant_id"] == "globex")
    );

    // A tenant_admin certificate reaches its tenant's control plane, not another's.
    let (cert_t, key_t, fp_t) = ca.issue(&["client-t"], "client-t");
    register_cert(&h, "acme", &fp_t, "tenant_admin").await;
    let admin_cert = client(&ca_pem, Some((&cert_t, &key_t)));
    let (s, v) = get(&admin_cert, h.url("/admin/v1/tenants/acme/keys"), None).await;
    assert_eq!(s, 200, "{v}");
    let (s, _) = get(&admin_cert, h.url("/admin/v1/tenants/globex/keys"), None).await;
    assert_eq!(s, 404);

    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mtls_required_refuses_missing_and_foreign_certificates() {
    let Setup { mut h, ca, .. } = start("required", true).await;
    let ca_pem = ca.pem();
    // No certificate: the handshake is refused.
    assert!(h.http.get(h.url("/healthz")).send().await.is_err());
    // A certificate from another CA: refused at the handshake as well.
    let other = Ca::new("Someone Else's CA");
    let (cert_o, key_o, _) = other.issue(&["client-o"], "client-o");
    let foreign = client(&ca_pem, Some((&cert_o, &key_o)));
    assert!(foreign.get(h.url("/healthz")).send().await.is_err());
    // A certificate of our CA gets through; with an API key the call is authenticated.
    let (cert_a, key_a, _) = ca.issue(&["client-a"], "client-a");
    let ok = client(&ca_pem, Some((&cert_a, &key_a)));
    assert_eq!(
        ok.get(h.url("/healthz")).send().await.unwrap().status(),
        200
    );
    h.http = ok;
    let acme = h.tenant("acme").await;
    let (s, v, _) = h.message(&acme, &chat("hello")).await;
    assert_eq!(s, 200, "{v}");
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificates_reload_without_restart_and_drain_finishes_streams() {
    let Setup {
        mut h,
        server_files: (cert_file, key_file),
        ..
    } = start("optional", false).await;
    let acme = h.tenant("acme").await;

    // New certificate from a new CA on disk: served within the reload interval.
    let ca2 = Ca::new("Rotated CA");
    let trusting_new = client(&ca2.pem(), None);
    assert!(trusting_new.get(h.url("/healthz")).send().await.is_err());
    let (cert, key, _) = ca2.issue(&["localhost", "127.0.0.1"], "palisade-2");
    tokio::time::sleep(Duration::from_millis(20)).await;
    std::fs::write(&key_file, key).unwrap();
    std::fs::write(&cert_file, cert).unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(8);
    loop {
        if let Ok(r) = trusting_new.get(h.url("/healthz")).send().await {
            assert_eq!(r.status(), 200);
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "certificate not reloaded"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // A broken file keeps the working certificate.
    std::fs::write(&cert_file, "not a certificate").unwrap();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(
        trusting_new
            .get(h.url("/healthz"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );

    // Graceful shutdown over TLS: an in-flight stream finishes.
    h.http = trusting_new.clone();
    let url = h.url("/v1/messages");
    let body =
        stream_chat("[[mock:stream_delay_ms=30]] [[mock:chunk=2]] finish this stream please");
    let c = trusting_new.clone();
    let in_flight = tokio::spawn(async move {
        let r = c
            .post(url)
            .header("x-api-key", acme)
            .header("anthropic-version", "2023-06-01")
            .json(&body)
            .send()
            .await
            .unwrap();
        r.text().await.unwrap()
    });
    tokio::time::sleep(Duration::from_millis(150)).await;
    h.stop().await;
    let text = in_flight.await.unwrap();
    assert_eq!(
        event_names(&text).last().map(String::as_str),
        Some("message_stop"),
        "{text}"
    );
}
