//! Audit trail over HTTP: checkpoints and the public key, NDJSON export (tenant-isolated,
//! verifiable with the public key alone), retention anchors and crypto-shredding.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::*;
use palisade_audit::{
    CheckpointSigner, DataKey, ProblemKind, Receipt, ReceiptKind, SystemRandom, format_created_at,
    verify_export,
};
use palisade_server::verify::verify_store;
use serde_json::{Value, json};
use std::time::Duration;

const SEED: [u8; 32] = [5; 32];

fn public_key() -> Vec<u8> {
    CheckpointSigner::from_seed(&SEED).unwrap().public_key()
}

/// A gateway with a fixed checkpoint key and no background timers (tests drive them).
async fn start() -> Harness {
    Harness::start_with(|c| {
        c.audit.checkpoint_key = Some(hex::encode(SEED));
        c.audit.checkpoint_interval_ms = 0;
        c.audit.purge_interval_ms = 0;
    })
    .await
}

async fn raw_get(h: &Harness, path: &str, auth: Option<(&str, &str)>) -> (u16, String) {
    let mut req = h.http.get(h.url(path));
    if let Some((name, value)) = auth {
        req = req.header(name, value);
    }
    let r = req.send().await.unwrap();
    let status = r.status().as_u16();
    (status, r.text().await.unwrap())
}

async fn export_as_tenant(h: &Harness, key: &str, query: &str) -> (u16, String) {
    raw_get(
        h,
        &format!("/v1/receipts/export{query}"),
        Some(("x-api-key", key)),
    )
    .await
}

async fn export_as_admin(h: &Harness, query: &str) -> (u16, String) {
    let bearer = format!("Bearer {ADMIN}");
    raw_get(
        h,
        &format!("/admin/v1/receipts/export{query}"),
        Some(("authorization", &bearer)),
    )
    .await
}

fn lines(body: &str) -> Vec<Value> {
    body.lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

async fn checkpoint_now(h: &Harness) -> usize {
    let signer = h.state().checkpoint_signer.clone().unwrap();
    palisade_server::checkpoints::checkpoint_once(
        &h.state().store,
        &signer,
        palisade_store::now_ms(),
    )
    .await
    .unwrap()
}

async fn calls(h: &Harness, key: &str, n: usize) {
    for _ in 0..n {
        let (s, v, _) = h.message(key, &chat("hello")).await;
        assert_eq!(s, 200, "{v}");
    }
}

#[tokio::test]
async fn public_key_is_served_without_a_credential() {
    let h = start().await;
    let (s, body) = raw_get(&h, "/v1/audit/public-key", None).await;
    assert_eq!(s, 200, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    let pk = public_key();
    assert_eq!(v["alg"], "Ed25519");
    assert_eq!(v["public_key_hex"], hex::encode(&pk));
    assert_eq!(v["key_id"], palisade_audit::checkpoint_key_id(&pk));
    // The document itself is accepted wherever a public key is.
    assert_eq!(
        palisade_server::checkpoints::parse_public_key(body.as_bytes()).unwrap(),
        pk
    );
}

#[tokio::test]
async fn a_bad_checkpoint_key_stops_the_gateway_from_starting() {
    let mock = palisade_mock::MockServer::start(Default::default())
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = palisade_server::config::Config {
        listen: "127.0.0.1:0".into(),
        ..Default::default()
    };
    cfg.storage.url = format!("sqlite://{}", dir.path().join("p.db").display());
    cfg.anthropic.base_url = mock.base_url();
    cfg.secrets.master_key = Some("00".repeat(32));
    cfg.audit.checkpoint_key = Some("not-a-key".into());
    let e = palisade_server::RunningServer::start(cfg)
        .await
        .err()
        .unwrap();
    assert!(e.contains("audit.checkpoint_key"), "{e}");
}

#[tokio::test]
async fn checkpoints_sign_heads_that_advanced_and_verify() {
    let h = start().await;
    let a = h.tenant("a").await;
    let b = h.tenant("b").await;
    calls(&h, &a, 3).await;
    calls(&h, &b, 1).await;
    assert_eq!(checkpoint_now(&h).await, 2, "one per advanced chain");
    assert_eq!(checkpoint_now(&h).await, 0, "nothing advanced since");
    calls(&h, &a, 1).await;
    assert_eq!(checkpoint_now(&h).await, 1);
    let store = h.state().store.clone();
    let head = store.chain_head("a").await.unwrap().unwrap();
    let latest = store.latest_checkpoint("a").await.unwrap().unwrap();
    assert_eq!(
        (latest.checkpoint.seq, &latest.checkpoint.head_hash),
        (head.seq, &head.hash)
    );
    let reports = verify_store(&store, None, &[public_key()]).await.unwrap();
    assert_eq!(reports.len(), 2);
    for r in &reports {
        assert!(r.ok, "{r:?}");
        assert!(r.checkpoint_signatures_checked);
    }
    assert_eq!(reports[0].checkpoints_verified, 2);

    // A wrong key is reported, checkpoint by checkpoint.
    let other = CheckpointSigner::from_seed(&[6; 32]).unwrap().public_key();
    let r = verify_store(&store, Some("a"), &[other]).await.unwrap();
    assert!(!r[0].ok);
    assert!(
        r[0].problems
            .iter()
            .all(|p| p.kind == ProblemKind::CheckpointUnknownKey)
    );
}

#[tokio::test]
async fn a_clean_shutdown_signs_the_final_heads() {
    let mut h = Harness::start_with(|c| {
        c.audit.checkpoint_key = Some(hex::encode(SEED));
        c.audit.checkpoint_interval_ms = 3_600_000;
    })
    .await;
    let b = h.tenant("b").await;
    calls(&h, &b, 2).await;
    let store = h.state().store.clone();
    assert!(store.latest_checkpoint("b").await.unwrap().is_none());
    h.stop().await;
    let head = store.chain_head("b").await.unwrap().unwrap();
    let cp = store.latest_checkpoint("b").await.unwrap().unwrap();
    assert_eq!(cp.checkpoint.seq, head.seq);
}

#[tokio::test]
async fn the_background_task_checkpoints_on_its_interval() {
    let h = Harness::start_with(|c| {
        c.audit.checkpoint_key = Some(hex::encode(SEED));
        c.audit.checkpoint_interval_ms = 20;
    })
    .await;
    let a = h.tenant("a").await;
    calls(&h, &a, 2).await;
    let store = h.state().store.clone();
    let head = store.chain_head("a").await.unwrap().unwrap();
    let mut seen = None;
    for _ in 0..500 {
        seen = store.latest_checkpoint("a").await.unwrap();
        if seen.as_ref().is_some_and(|c| c.checkpoint.seq >= head.seq) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(seen.unwrap().checkpoint.seq, head.seq);
}

#[tokio::test]
async fn export_is_tenant_scoped_streamed_and_verifies_with_the_public_key() {
    let h = start().await;
    let a = h.tenant("a").await;
    let b = h.tenant("b").await;
    calls(&h, &a, 4).await;
    calls(&h, &b, 2).await;
    checkpoint_now(&h).await;
    let pk = public_key();

    let (s, body) = export_as_tenant(&h, &a, "").await;
    assert_eq!(s, 200, "{body}");
    let rows = lines(&body);
    assert!(rows.iter().all(|r| r["tenant_id"] == "a"), "{body}");
    assert_eq!(
        rows.iter().filter(|r| r.get("record").is_none()).count(),
        6,
        "tenant creation, key creation and 4 calls: {body}"
    );
    assert!(rows.iter().any(|r| r["record"] == "checkpoint"));
    let report = verify_export(body.lines(), &[&pk]);
    assert!(report.ok, "{report:?}");
    assert_eq!(report.tenants[0].checkpoints_verified, 1);

    // Another tenant's id selects nothing.
    let (s, body) = export_as_tenant(&h, &a, "?tenant_id=b").await;
    assert_eq!((s, body.as_str()), (200, ""));

    // The admin sees one tenant or all.
    let (s, all) = export_as_admin(&h, "").await;
    assert_eq!(s, 200);
    let report = verify_export(all.lines(), &[&pk]);
    assert!(report.ok, "{report:?}");
    assert_eq!(
        report
            .tenants
            .iter()
            .map(|t| t.tenant_id.as_str())
            .collect::<Vec<_>>(),
        ["a", "b"]
    );
    let (s, only_b) = export_as_admin(&h, "?tenant_id=b").await;
    assert_eq!(s, 200);
    assert!(lines(&only_b).iter().all(|r| r["tenant_id"] == "b"));
    let (s, body) = export_as_admin(&h, "?tenant_id=nobody").await;
    assert_eq!(s, 404, "{body}");

    // Tampering with a line of the export is caught at that line.
    let mut tampered: Vec<String> = all.lines().map(str::to_owned).collect();
    let i = tampered
        .iter()
        .position(|l| l.contains("\"tenant_id\":\"a\"") && !l.contains("\"record\""))
        .unwrap();
    tampered[i] = tampered[i].replacen("\"decision\":\"allow\"", "\"decision\":\"deny\"", 1);
    let report = verify_export(&tampered, &[&pk]);
    assert!(!report.ok);
    let p = &report.tenants[0].problems[0];
    assert_eq!(p.kind, ProblemKind::HashMismatch);
    assert_eq!(p.position, Some(i as u64 + 1));
}

#[tokio::test]
async fn export_windows_verify_on_their_own() {
    let h = start().await;
    let a = h.tenant("a").await;
    calls(&h, &a, 2).await;
    let mid = palisade_store::now_ms() + 1;
    tokio::time::sleep(Duration::from_millis(5)).await;
    calls(&h, &a, 2).await;
    checkpoint_now(&h).await;
    let since = palisade_store::rfc3339_ms::format(mid);
    let (s, body) = export_as_tenant(&h, &a, &format!("?since={since}")).await;
    assert_eq!(s, 200, "{body}");
    let rows = lines(&body);
    assert_eq!(rows[0]["record"], "anchor", "{body}");
    assert_eq!(rows.iter().filter(|r| r.get("record").is_none()).count(), 2);
    let report = verify_export(body.lines(), &[&public_key()]);
    assert!(report.ok, "{report:?}");
    assert_eq!(report.tenants[0].anchor_seq, Some(4));
    // Before the window's end: the checkpoint at the head is beyond it and left out.
    let (s, body) = export_as_tenant(&h, &a, &format!("?until={since}")).await;
    assert_eq!(s, 200);
    assert!(!body.contains("\"record\""), "{body}");
    assert!(verify_export(body.lines(), &[&public_key()]).ok);
}

#[tokio::test]
async fn bad_export_requests_get_clear_errors() {
    let h = start().await;
    let a = h.tenant("a").await;
    for (q, reason) in [
        ("?since=yesterday", "invalid_time"),
        ("?until=2025-13-45T00:00:00Z", "invalid_time"),
        (
            "?since=2025-02-01T00:00:00Z&until=2025-01-01T00:00:00Z",
            "invalid_time",
        ),
        ("?limit=5", "invalid_query"),
    ] {
        let (s, body) = export_as_tenant(&h, &a, q).await;
        assert_eq!(s, 400, "{q}: {body}");
        let v: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["error"]["palisade_reason"], reason, "{q}: {body}");
        let (s, _) = export_as_admin(&h, q).await;
        assert_eq!(s, 400, "{q}");
    }
    let (s, _) = raw_get(&h, "/v1/receipts/export", None).await;
    assert_eq!(s, 401);
    // A tenant key is not an admin credential.
    let (s, _) = raw_get(&h, "/admin/v1/receipts/export", Some(("x-api-key", &a))).await;
    assert!(s == 401 || s == 403, "{s}");
}

#[tokio::test]
async fn retention_purge_keeps_a_checkpointed_anchor() {
    let h = start().await;
    let key = h.tenant("acme").await;
    let (s, v) = h
        .admin(
            reqwest::Method::PATCH,
            "/admin/v1/tenants/acme",
            Some(json!({"attributes": {"retention_days": 30}})),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    let store = h.state().store.clone();
    // Three receipts stamped 40 days ago, then fresh ones.
    let now = palisade_store::now_ms();
    let old = (now - 40 * 86_400_000) as u64;
    let mut olds = Vec::new();
    for i in 0..3 {
        olds.push(Receipt::new(
            uuid::Uuid::now_v7().hyphenated().to_string(),
            "acme",
            ReceiptKind::Message,
            format_created_at(old + i),
            "allow",
        ));
    }
    let before = store.chain_head("acme").await.unwrap().unwrap().seq;
    store.append_receipts(olds).await.unwrap();
    calls(&h, &key, 2).await;
    // The tenant's own first receipts (creation, key, patch) are recent and sit before the
    // old ones in seq order: the purge deletes a prefix only, so none goes.
    let signer = h.state().checkpoint_signer.clone().unwrap();
    let out = palisade_server::retention::purge_once(&store, Some(&signer), 0, None, now)
        .await
        .unwrap();
    assert!(out.is_empty(), "{out:?}");
    // Forty days on, everything up to the fresh calls has expired... pretend 31 days
    // passed for the fresh ones too: all goes, the anchor is the head.
    let later = now + 31 * 86_400_000;
    let out = palisade_server::retention::purge_once(&store, Some(&signer), 0, None, later)
        .await
        .unwrap();
    assert_eq!(out.len(), 1, "{out:?}");
    let head = store.chain_head("acme").await.unwrap().unwrap();
    assert_eq!(out[0].deleted, head.seq);
    assert_eq!(out[0].anchor_seq, Some(head.seq));
    assert!(out[0].checkpointed);
    assert!(before < head.seq);
    let anchor = store.chain_anchor("acme").await.unwrap().unwrap();
    assert_eq!((anchor.seq, &anchor.head_hash), (head.seq, &head.hash));
    let r = verify_store(&store, Some("acme"), &[public_key()])
        .await
        .unwrap();
    assert!(r[0].ok, "{r:?}");
    assert_eq!(r[0].receipts, 0);
    assert_eq!(r[0].checkpoints_verified, 1, "the anchor is signed");
    // The chain goes on from the anchor, and exports verify alone.
    calls(&h, &key, 2).await;
    checkpoint_now(&h).await;
    let r = verify_store(&store, Some("acme"), &[public_key()])
        .await
        .unwrap();
    assert!(r[0].ok, "{r:?}");
    assert_eq!(r[0].anchor_seq, Some(head.seq));
    let (s, body) = export_as_tenant(&h, &key, "").await;
    assert_eq!(s, 200);
    assert_eq!(lines(&body)[0]["record"], "anchor");
    let report = verify_export(body.lines(), &[&public_key()]);
    assert!(report.ok, "{report:?}");
    assert_eq!(report.tenants[0].checkpoints_verified, 2);
    // Forging the anchor is caught.
    let forged = body.replacen(&head.hash, &"ab".repeat(32), 1);
    assert!(!verify_export(forged.lines(), &[&public_key()]).ok);
}

#[tokio::test]
async fn a_partial_purge_deletes_only_the_expired_prefix() {
    let h = start().await;
    let store = h.state().store.clone();
    let now = palisade_store::now_ms();
    let at = |days: i64| format_created_at((now - days * 86_400_000) as u64);
    let receipts: Vec<Receipt> = [50, 45, 10, 5]
        .iter()
        .map(|d| {
            Receipt::new(
                uuid::Uuid::now_v7().hyphenated().to_string(),
                "gone",
                ReceiptKind::Message,
                at(*d),
                "allow",
            )
        })
        .collect();
    store.append_receipts(receipts).await.unwrap();
    // "gone" has no tenant row: the platform default applies.
    let out = palisade_server::retention::purge_once(&store, None, 0, None, now)
        .await
        .unwrap();
    assert!(out.is_empty(), "default 0 keeps forever");
    let dry = palisade_server::retention::purge(&store, None, 30, None, now, true)
        .await
        .unwrap();
    assert_eq!((dry[0].deleted, dry[0].anchor_seq), (2, Some(2)));
    assert_eq!(store.chain("gone", 1, 10).await.unwrap().len(), 4);
    let out = palisade_server::retention::purge_once(&store, None, 30, None, now)
        .await
        .unwrap();
    assert_eq!((out[0].deleted, out[0].checkpointed), (2, false));
    let rest = store.chain("gone", 1, 10).await.unwrap();
    assert_eq!(rest.iter().map(|r| r.seq).collect::<Vec<_>>(), [3, 4]);
    let r = verify_store(&store, Some("gone"), &[]).await.unwrap();
    assert!(r[0].ok, "{r:?}");
}

#[tokio::test]
async fn deleting_a_tenant_shreds_its_payloads_while_its_chain_verifies() {
    let h = start().await;
    let key = h.tenant("acme").await;
    calls(&h, &key, 1).await;
    let state = h.state();
    // A receipt with a sealed payload under the tenant's data key.
    let data_key = state
        .tenant_keys
        .secrets("acme")
        .await
        .unwrap()
        .data_key
        .clone();
    let mut r = Receipt::new(
        uuid::Uuid::now_v7().hyphenated().to_string(),
        "acme",
        ReceiptKind::Message,
        format_created_at(palisade_store::now_ms() as u64),
        "allow",
    );
    r.seal_sensitive(
        &data_key,
        &json!({"prompt": "[REDACTED] hello"}),
        &SystemRandom::new(),
    )
    .unwrap();
    let sealed = state.receipts.commit(r).await.unwrap();
    assert!(state.store.tenant_data_key("acme").await.unwrap().is_some());
    let stored = state
        .store
        .get_receipt("acme", &sealed.id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        stored.open_sensitive(&data_key).unwrap().unwrap()["prompt"],
        "[REDACTED] hello"
    );

    let (s, _) = h
        .admin(reqwest::Method::DELETE, "/admin/v1/tenants/acme", None)
        .await;
    assert_eq!(s, 204);
    // The wrapped data key is gone: nothing can unwrap it any more, and no other key
    // opens the payload.
    assert!(state.store.tenant_data_key("acme").await.unwrap().is_none());
    let stored = state
        .store
        .get_receipt("acme", &sealed.id)
        .await
        .unwrap()
        .unwrap();
    assert!(stored.sealed.is_some());
    let other = DataKey::generate(&SystemRandom::new()).unwrap();
    assert!(stored.open_sensitive(&other).is_err());
    // The chain, its checkpoints and the export still verify.
    checkpoint_now(&h).await;
    let r = verify_store(&state.store, Some("acme"), &[public_key()])
        .await
        .unwrap();
    assert!(r[0].ok, "{r:?}");
    assert!(r[0].receipts >= 4);
    let (s, body) = export_as_admin(&h, "?tenant_id=acme").await;
    assert_eq!(s, 200);
    assert!(verify_export(body.lines(), &[&public_key()]).ok);
}
