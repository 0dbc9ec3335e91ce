//! The store contract. Every backend must pass these; each test gets its own database.
//! Write a test as `async fn name(b: Backend)` using `b.store` (and `b.reopen()` for a
//! second process), then list it in `contract_suite!` at the bottom: it runs once on
//! SQLite and once on PostgreSQL (`PALISADE_TEST_POSTGRES_URL`).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use palisade_audit::{Receipt, ReceiptKind, format_created_at, verify_chain};
use palisade_store::*;
use std::sync::Arc;

mod common;
use common::Backend;

fn receipt(tenant: &str, decision: &str) -> Receipt {
    Receipt::new(
        uuid::Uuid::now_v7().hyphenated().to_string(),
        tenant,
        ReceiptKind::Message,
        format_created_at(now_ms() as u64),
        decision,
    )
}

fn new_tenant(id: &str) -> NewTenant {
    NewTenant {
        id: Some(id.into()),
        name: id.into(),
        plan: "pro".into(),
        attributes: Default::default(),
    }
}

fn new_key(id: &str, tenant: &str) -> NewApiKey {
    NewApiKey {
        id: id.into(),
        tenant_id: tenant.into(),
        name: None,
        role: "member".into(),
        user_id: Some("u1".into()),
        scopes: vec!["messages".into()],
        secret_hash: "h".repeat(64),
        expires_at: None,
        allowed_networks: vec![],
    }
}

async fn key_rotation_grace_and_networks(b: Backend) {
    let s = b.store.clone();
    s.create_tenant(new_tenant("a")).await.unwrap();
    s.create_tenant(new_tenant("b")).await.unwrap();
    let mut k = new_key("key_g", "a");
    k.allowed_networks = vec!["10.0.0.0/8".into(), "2001:db8::/32".into()];
    let created = s.create_key(k).await.unwrap();
    assert_eq!(created.allowed_networks.len(), 2);
    let got = s.get_key("key_g").await.unwrap().unwrap();
    assert_eq!(got.allowed_networks, created.allowed_networks);
    assert!(got.prev_secret_hash.is_none() && got.prev_valid_until.is_none());
    // Another tenant cannot rotate it, with or without grace.
    assert!(
        s.rotate_key_with_grace("b", "key_g", "x", Some(1))
            .await
            .unwrap()
            .is_none()
    );
    // With a grace period the old hash is kept until then.
    let r = s
        .rotate_key_with_grace("a", "key_g", &"n".repeat(64), Some(now_ms() + 60_000))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(r.secret_hash, "n".repeat(64));
    assert_eq!(r.prev_secret_hash.as_deref(), Some("h".repeat(64).as_str()));
    assert!(r.prev_valid_until.is_some());
    let listed = s.list_keys("a").await.unwrap();
    assert_eq!(listed[0].prev_secret_hash, r.prev_secret_hash);
    // Without, the previous hash is dropped at once.
    let r = s
        .rotate_key("a", "key_g", &"m".repeat(64))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(r.secret_hash, "m".repeat(64));
    assert!(r.prev_secret_hash.is_none() && r.prev_valid_until.is_none());
}

async fn tenants_crud(b: Backend) {
    let s = b.store.clone();
    assert!(s.migrations_applied().await.unwrap());
    s.ping().await.unwrap();
    let t = s.create_tenant(new_tenant("acme")).await.unwrap();
    assert_eq!(t.plan, "pro");
    assert!(matches!(
        s.create_tenant(new_tenant("acme")).await,
        Err(StoreError::Conflict(_))
    ));
    assert!(matches!(
        s.create_tenant(new_tenant("Not Valid")).await,
        Err(StoreError::Invalid(_))
    ));
    let generated = s
        .create_tenant(NewTenant {
            id: None,
            ..new_tenant("x")
        })
        .await
        .unwrap();
    assert!(generated.id.starts_with("ten_"));
    let mut attrs = serde_json::Map::new();
    attrs.insert("domain".into(), "acme.com".into());
    let u = s
        .update_tenant(
            "acme",
            TenantPatch {
                plan: Some("enterprise".into()),
                attributes: Some(attrs),
                name: None,
            },
        )
        .await
        .unwrap()
        .unwrap();
    assert_eq!(u.plan, "enterprise");
    assert_eq!(
        s.get_tenant("acme").await.unwrap().unwrap().attributes["domain"],
        "acme.com"
    );
    assert!(
        s.update_tenant("nope", TenantPatch::default())
            .await
            .unwrap()
            .is_none()
    );
    let all = s.list_tenants(None, 10).await.unwrap();
    assert_eq!(all.len(), 2);
    let page = s.list_tenants(Some(&all[0].id), 10).await.unwrap();
    assert_eq!(page.len(), 1);
    assert!(s.delete_tenant("acme").await.unwrap());
    assert!(!s.delete_tenant("acme").await.unwrap());
    assert!(s.get_tenant("acme").await.unwrap().is_none());
}

async fn key_lifecycle_is_tenant_scoped(b: Backend) {
    let s = b.store.clone();
    s.create_tenant(new_tenant("a")).await.unwrap();
    s.create_tenant(new_tenant("b")).await.unwrap();
    s.create_key(new_key("key_1", "a")).await.unwrap();
    assert!(matches!(
        s.create_key(new_key("key_2", "missing")).await,
        Err(StoreError::NotFound)
    ));
    let k = s.get_key("key_1").await.unwrap().unwrap();
    assert_eq!(k.scopes, vec!["messages"]);
    assert!(k.is_active(now_ms()));
    // Another tenant cannot rotate or revoke it.
    assert!(s.rotate_key("b", "key_1", "x").await.unwrap().is_none());
    assert!(s.revoke_key("b", "key_1").await.unwrap().is_none());
    assert!(
        s.get_key("key_1")
            .await
            .unwrap()
            .unwrap()
            .revoked_at
            .is_none()
    );
    let r = s
        .rotate_key("a", "key_1", &"z".repeat(64))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(r.secret_hash, "z".repeat(64));
    assert!(r.rotated_at.is_some());
    s.touch_key("key_1", 42).await.unwrap();
    assert_eq!(
        s.get_key("key_1").await.unwrap().unwrap().last_used_at,
        Some(42)
    );
    let r = s.revoke_key("a", "key_1").await.unwrap().unwrap();
    assert!(!r.is_active(now_ms()));
    assert!(
        s.rotate_key("a", "key_1", "y").await.unwrap().is_none(),
        "revoked keys cannot be rotated back to life"
    );
    assert_eq!(s.list_keys("a").await.unwrap().len(), 1);
    assert!(s.list_keys("b").await.unwrap().is_empty());
    s.delete_tenant("a").await.unwrap();
    assert!(s.get_key("key_1").await.unwrap().is_none());
}

async fn data_keys_first_writer_wins_and_deletion_shreds(b: Backend) {
    let s = b.store.clone();
    s.create_tenant(new_tenant("a")).await.unwrap();
    assert!(s.tenant_data_key("a").await.unwrap().is_none());
    assert_eq!(s.put_tenant_data_key("a", "first").await.unwrap(), "first");
    assert_eq!(s.put_tenant_data_key("a", "second").await.unwrap(), "first");
    s.delete_tenant("a").await.unwrap();
    assert!(s.tenant_data_key("a").await.unwrap().is_none());
}

async fn receipts_chain_per_tenant_and_are_isolated(b: Backend) {
    let s = b.store.clone();
    let batch: Vec<Receipt> = (0..10)
        .map(|i| {
            receipt(
                if i % 2 == 0 { "a" } else { "b" },
                if i < 5 { "allow" } else { "deny" },
            )
        })
        .collect();
    let sealed = s.append_receipts(batch).await.unwrap();
    assert_eq!(
        sealed
            .iter()
            .filter(|r| r.tenant_id == "a")
            .map(|r| r.seq)
            .collect::<Vec<_>>(),
        vec![1, 2, 3, 4, 5]
    );
    let more = s
        .append_receipts(vec![receipt("a", "allow")])
        .await
        .unwrap();
    assert_eq!(more[0].seq, 6);
    assert_eq!(
        more[0].prev_hash,
        sealed.iter().rfind(|r| r.tenant_id == "a").unwrap().hash
    );
    let chain = s.chain("a", 1, 100).await.unwrap();
    assert_eq!(chain.len(), 6);
    assert!(verify_chain("a", &chain, None).ok);
    let b_id = &sealed[1].id;
    assert!(s.get_receipt("a", b_id).await.unwrap().is_none());
    assert!(s.get_receipt("b", b_id).await.unwrap().is_some());
    let q = ReceiptQuery {
        limit: 100,
        decision: Some("deny".into()),
        ..Default::default()
    };
    let denies = s.list_receipts(Some("a"), &q).await.unwrap();
    assert!(
        denies
            .iter()
            .all(|r| r.tenant_id == "a" && r.decision == "deny")
    );
    assert_eq!(denies.len(), 2);
    let all = s
        .list_receipts(
            None,
            &ReceiptQuery {
                limit: 100,
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(all.len(), 11);
    assert_eq!(
        s.chain_tenants().await.unwrap(),
        vec!["a".to_string(), "b".to_string()]
    );
    // An unsealable receipt fails the batch and leaves nothing behind.
    let mut bad = receipt("a", "allow");
    bad.id = "not-a-uuid".into();
    assert!(
        s.append_receipts(vec![receipt("a", "allow"), bad])
            .await
            .is_err()
    );
    assert_eq!(s.chain("a", 1, 100).await.unwrap().len(), 6);
    // A batch the store itself refuses (a receipt id already stored) is rolled back whole,
    // and every pooled connection goes on appending to the same chain afterwards.
    let mut dup = receipt("a", "allow");
    dup.id = more[0].id.clone();
    assert!(
        s.append_receipts(vec![receipt("a", "allow"), dup])
            .await
            .is_err()
    );
    assert_eq!(s.chain("a", 1, 100).await.unwrap().len(), 6);
    for _ in 0..12 {
        s.append_receipts(vec![receipt("a", "allow")])
            .await
            .unwrap();
    }
    let chain = s.chain("a", 1, 100).await.unwrap();
    assert_eq!(chain.len(), 18);
    assert!(verify_chain("a", &chain, None).ok);
}

async fn two_store_handles_never_fork_a_chain(b: Backend) {
    // Two independent pools stand for two gateway processes sharing the store.
    let s1: Arc<dyn Store> = b.store.clone();
    let s2: Arc<dyn Store> = b.reopen().await;
    let mut tasks = Vec::new();
    for i in 0..40 {
        let s = if i % 2 == 0 { s1.clone() } else { s2.clone() };
        tasks.push(tokio::spawn(async move {
            s.append_receipts(vec![receipt("t", "allow"), receipt("t", "allow")])
                .await
                .unwrap()
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let chain = s1.chain("t", 1, 1000).await.unwrap();
    assert_eq!(chain.len(), 80);
    let report = verify_chain("t", &chain, None);
    assert!(report.ok, "{:?}", report.problems);
}

async fn appends_from_another_handle_in_between_are_chained_onto(b: Backend) {
    // The SQLite store remembers the heads it committed and appends in one round trip on
    // that knowledge; another process appending in between must be noticed, not forked.
    let s1: Arc<dyn Store> = b.store.clone();
    let s2: Arc<dyn Store> = b.reopen().await;
    for round in 0..3u64 {
        let a = s1
            .append_receipts(vec![receipt("t", "allow"), receipt("u", "allow")])
            .await
            .unwrap();
        let c = s2
            .append_receipts(vec![receipt("t", "allow")])
            .await
            .unwrap();
        assert_eq!(a[0].seq, 2 * round + 1);
        assert_eq!(c[0].seq, 2 * round + 2);
        assert_eq!(c[0].prev_hash, a[0].hash);
    }
    let last = s1
        .append_receipts(vec![receipt("t", "allow")])
        .await
        .unwrap();
    assert_eq!(last[0].seq, 7);
    let chain = s1.chain("t", 1, 100).await.unwrap();
    assert_eq!(chain.len(), 7);
    let report = verify_chain("t", &chain, None);
    assert!(report.ok, "{:?}", report.problems);
    assert_eq!(s2.chain_head("u").await.unwrap().unwrap().seq, 3);
}

async fn checkpoints_are_stored_listed_and_deduplicated(b: Backend) {
    use palisade_audit::CheckpointSigner;
    let s = b.store.clone();
    let signer = CheckpointSigner::from_seed(&[9; 32]).unwrap();
    let sealed = s
        .append_receipts((0..3).map(|_| receipt("acme", "allow")).collect())
        .await
        .unwrap();
    s.append_receipts(vec![receipt("beta", "allow")])
        .await
        .unwrap();
    let head = s.chain_head("acme").await.unwrap().unwrap();
    assert_eq!((head.seq, head.hash.as_str()), (3, sealed[2].hash.as_str()));
    assert!(s.chain_head("nobody").await.unwrap().is_none());
    // Nothing signed yet: both heads are due.
    let due = s.uncheckpointed_heads(100).await.unwrap();
    assert_eq!(
        due.iter()
            .map(|(t, h)| (t.as_str(), h.seq))
            .collect::<Vec<_>>(),
        [("acme", 3), ("beta", 1)]
    );
    let at = format_created_at(now_ms() as u64);
    let cp2 = signer.sign("acme", 2, &sealed[1].hash, &at).unwrap();
    let cp3 = signer.sign("acme", 3, &sealed[2].hash, &at).unwrap();
    assert!(s.put_checkpoint(&cp3).await.unwrap());
    assert!(s.put_checkpoint(&cp2).await.unwrap());
    assert!(!s.put_checkpoint(&cp3).await.unwrap(), "same head twice");
    assert_eq!(
        s.list_checkpoints("acme", 0, 10).await.unwrap(),
        [cp2.clone(), cp3.clone()]
    );
    assert_eq!(
        s.list_checkpoints("acme", 3, 10).await.unwrap(),
        std::slice::from_ref(&cp3)
    );
    assert!(s.list_checkpoints("beta", 0, 10).await.unwrap().is_empty());
    assert_eq!(s.latest_checkpoint("acme").await.unwrap(), Some(cp3));
    let due = s.uncheckpointed_heads(100).await.unwrap();
    assert_eq!(due.len(), 1);
    assert_eq!(due[0].0, "beta");
}

async fn purge_keeps_an_anchor_and_the_rest_verifies(b: Backend) {
    let s = b.store.clone();
    let sealed = s
        .append_receipts((0..5).map(|_| receipt("acme", "allow")).collect())
        .await
        .unwrap();
    assert_eq!(
        s.receipt_seq_range("acme", None, None).await.unwrap(),
        Some((1, 5))
    );
    assert_eq!(
        s.receipt_seq_range("acme", Some(i64::MAX - 1), None)
            .await
            .unwrap(),
        None
    );
    assert!(s.chain_anchor("acme").await.unwrap().is_none());
    let bad = palisade_audit::Anchor {
        tenant_id: "acme".into(),
        seq: 2,
        head_hash: "00".repeat(32),
    };
    assert!(matches!(
        s.purge_receipts(&bad).await,
        Err(StoreError::Invalid(_))
    ));
    let missing = palisade_audit::Anchor {
        seq: 99,
        ..bad.clone()
    };
    assert!(matches!(
        s.purge_receipts(&missing).await,
        Err(StoreError::Invalid(_))
    ));
    let anchor = palisade_audit::Anchor {
        tenant_id: "acme".into(),
        seq: 2,
        head_hash: sealed[1].hash.clone(),
    };
    assert_eq!(s.purge_receipts(&anchor).await.unwrap(), 2);
    assert_eq!(s.purge_receipts(&anchor).await.unwrap(), 0, "idempotent");
    assert_eq!(s.chain_anchor("acme").await.unwrap(), Some(anchor.clone()));
    let rest = s.chain("acme", 1, 100).await.unwrap();
    assert_eq!(rest.first().map(|r| r.seq), Some(3));
    assert!(verify_chain("acme", &rest, Some(anchor.clone())).ok);
    assert!(!verify_chain("acme", &rest, None).ok);
    // New receipts keep linking after the purge.
    s.append_receipts(vec![receipt("acme", "allow")])
        .await
        .unwrap();
    let rest = s.chain("acme", 1, 100).await.unwrap();
    assert!(verify_chain("acme", &rest, Some(anchor)).ok);
}

async fn policy_versions_and_activation(b: Backend) {
    let s = b.store.clone();
    let (h1, h2) = ("1".repeat(64), "2".repeat(64));
    assert!(
        s.put_policy("acme", &h1, "v1: source", "admin")
            .await
            .unwrap()
    );
    assert!(
        !s.put_policy("acme", &h1, "v1: source", "admin")
            .await
            .unwrap(),
        "same version twice"
    );
    tokio::time::sleep(std::time::Duration::from_millis(3)).await;
    assert!(
        s.put_policy("acme", &h2, "v2: source", "admin")
            .await
            .unwrap()
    );
    assert!(
        s.put_policy(PLATFORM_SCOPE, &h1, "platform", "ops")
            .await
            .unwrap()
    );
    let list = s.list_policies("acme").await.unwrap();
    assert_eq!(
        list.iter().map(|p| p.hash.as_str()).collect::<Vec<_>>(),
        [h2.as_str(), h1.as_str()],
        "newest first"
    );
    assert!(list.iter().all(|p| p.source.is_empty() && !p.active));
    assert!(s.active_policy("acme").await.unwrap().is_none());
    assert!(matches!(
        s.activate_policy("acme", &"9".repeat(64)).await,
        Err(StoreError::NotFound)
    ));
    assert!(matches!(
        s.activate_policy("other", &h1).await,
        Err(StoreError::NotFound)
    ));
    assert_eq!(s.activate_policy("acme", &h1).await.unwrap(), None);
    assert_eq!(
        s.activate_policy("acme", &h2).await.unwrap(),
        Some(h1.clone())
    );
    let active = s.active_policy("acme").await.unwrap().unwrap();
    assert_eq!(
        (active.hash.as_str(), active.source.as_str(), active.active),
        (h2.as_str(), "v2: source", true)
    );
    let got = s.get_policy("acme", &h1).await.unwrap().unwrap();
    assert_eq!((got.source.as_str(), got.active), ("v1: source", false));
    assert!(s.get_policy("other", &h1).await.unwrap().is_none());
    assert!(s.active_policy(PLATFORM_SCOPE).await.unwrap().is_none());
    assert_eq!(s.activate_policy(PLATFORM_SCOPE, &h1).await.unwrap(), None);
    assert_eq!(
        s.active_policy(PLATFORM_SCOPE)
            .await
            .unwrap()
            .unwrap()
            .source,
        "platform"
    );
    // Deleting the tenant deactivates its policy; the versions stay.
    s.create_tenant(new_tenant("acme")).await.unwrap();
    s.delete_tenant("acme").await.unwrap();
    assert!(s.active_policy("acme").await.unwrap().is_none());
    assert_eq!(s.list_policies("acme").await.unwrap().len(), 2);
}

async fn receipt_listing_pages_and_filters(b: Backend) {
    let s = b.store.clone();
    let mut batch = Vec::new();
    for i in 0..7u64 {
        let mut r = receipt("a", if i % 2 == 0 { "allow" } else { "deny" });
        r.created_at = format_created_at(1_700_000_000_000 + i * 1000);
        r.model = Some(if i < 3 { "m-small" } else { "m-large" }.into());
        batch.push(r);
    }
    batch.push(receipt("b", "allow"));
    s.append_receipts(batch).await.unwrap();
    let q = |limit| ReceiptQuery {
        limit,
        ..Default::default()
    };
    let page1 = s.list_receipts(Some("a"), &q(3)).await.unwrap();
    assert_eq!(page1.iter().map(|r| r.seq).collect::<Vec<_>>(), [7, 6, 5]);
    let last = page1.last().unwrap();
    let cursor = (1_700_000_000_000 + 4000, last.id.clone());
    let page2 = s
        .list_receipts(
            Some("a"),
            &ReceiptQuery {
                before: Some(cursor),
                ..q(3)
            },
        )
        .await
        .unwrap();
    assert_eq!(page2.iter().map(|r| r.seq).collect::<Vec<_>>(), [4, 3, 2]);
    let window = s
        .list_receipts(
            Some("a"),
            &ReceiptQuery {
                since_ms: Some(1_700_000_001_000),
                until_ms: Some(1_700_000_004_000),
                model: Some("m-large".into()),
                ..q(100)
            },
        )
        .await
        .unwrap();
    assert_eq!(window.iter().map(|r| r.seq).collect::<Vec<_>>(), [4]);
    assert_eq!(s.list_receipts(Some("b"), &q(100)).await.unwrap().len(), 1);
    assert_eq!(s.list_receipts(None, &q(100)).await.unwrap().len(), 8);
    assert!(
        s.list_receipts(Some("c"), &q(100))
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        s.receipt_seq_range("a", Some(1_700_000_002_000), Some(1_700_000_005_000))
            .await
            .unwrap(),
        Some((3, 5))
    );
}

fn alert(tenant: &str, id: &str, at: i64) -> AlertRecord {
    let mut details = serde_json::Map::new();
    details.insert("value".into(), "0.5".into());
    AlertRecord {
        id: id.into(),
        tenant_id: tenant.into(),
        created_at: at,
        dedup_key: format!("{tenant}|tenant|deny_rate|ewma"),
        signal: "deny_rate".into(),
        detector: "ewma".into(),
        severity: "warning".into(),
        subject: "tenant".into(),
        message: "deny rate high".into(),
        details,
        receipt_id: None,
        acked_at: None,
        acked_by: None,
    }
}

async fn alerts_are_tenant_scoped_paged_and_acked(b: Backend) {
    let s = b.store.clone();
    for t in ["acme", "globex"] {
        s.create_tenant(new_tenant(t)).await.unwrap();
    }
    for i in 0..5 {
        s.put_alert(&alert("acme", &format!("alr_a{i}"), 1000 + i))
            .await
            .unwrap();
    }
    s.put_alert(&alert("globex", "alr_g0", 1000)).await.unwrap();
    assert!(matches!(
        s.put_alert(&alert("acme", "alr_a0", 5)).await,
        Err(StoreError::Conflict(_))
    ));
    // Newest first, cursor pages, never another tenant's rows.
    let q = AlertQuery {
        limit: 2,
        ..Default::default()
    };
    let p1 = s.list_alerts("acme", &q).await.unwrap();
    assert_eq!(
        p1.iter().map(|a| a.id.as_str()).collect::<Vec<_>>(),
        ["alr_a4", "alr_a3"]
    );
    let last = p1.last().unwrap();
    let p2 = s
        .list_alerts(
            "acme",
            &AlertQuery {
                before: Some((last.created_at, last.id.clone())),
                ..q.clone()
            },
        )
        .await
        .unwrap();
    assert_eq!(
        p2.iter().map(|a| a.id.as_str()).collect::<Vec<_>>(),
        ["alr_a2", "alr_a1"]
    );
    let g = s
        .list_alerts(
            "globex",
            &AlertQuery {
                limit: 100,
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(g.len(), 1);
    assert!(s.get_alert("acme", "alr_g0").await.unwrap().is_none());
    assert!(
        s.ack_alert("acme", "alr_g0", "k", 5)
            .await
            .unwrap()
            .is_none()
    );
    // Acknowledge: first one wins; the unacked filter hides it.
    let a = s
        .ack_alert("acme", "alr_a1", "key1", 7)
        .await
        .unwrap()
        .unwrap();
    assert_eq!((a.acked_at, a.acked_by.as_deref()), (Some(7), Some("key1")));
    let a = s
        .ack_alert("acme", "alr_a1", "key2", 9)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(a.acked_by.as_deref(), Some("key1"));
    let open = s
        .list_alerts(
            "acme",
            &AlertQuery {
                limit: 100,
                unacked_only: true,
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(open.len(), 4);
    s.set_alert_receipt("acme", "alr_a2", "rcpt").await.unwrap();
    let a = s.get_alert("acme", "alr_a2").await.unwrap().unwrap();
    assert_eq!(a.receipt_id.as_deref(), Some("rcpt"));
    assert_eq!(a.details.get("value").and_then(|v| v.as_str()), Some("0.5"));
}

/// The change feed tells a gateway about writes made elsewhere (another replica, the CLI)
/// to what it caches, and stays quiet for the last-used stamp. SQLite has no feed.
async fn change_feed_reports_writes_by_other_processes(b: Backend) {
    let Some(mut rx) = b.store.watch_changes().await.unwrap() else {
        assert_eq!(b.name, "sqlite", "only SQLite may lack a change feed");
        return;
    };
    let other = b.reopen().await;
    async fn next(rx: &mut tokio::sync::mpsc::Receiver<Change>) -> Change {
        tokio::time::timeout(std::time::Duration::from_secs(5), rx.recv())
            .await
            .expect("a change within 5 s")
            .unwrap()
    }
    let change = |table: &str, tenant: &str| Change {
        table: table.into(),
        tenant: Some(tenant.into()),
    };
    other.create_tenant(new_tenant("a")).await.unwrap();
    assert_eq!(next(&mut rx).await, change("tenants", "a"));
    other.create_key(new_key("key_c", "a")).await.unwrap();
    assert_eq!(next(&mut rx).await, change("api_keys", "a"));
    // The throttled last-used stamp is not a change anyone caches.
    other.touch_key("key_c", now_ms()).await.unwrap();
    other.revoke_key("a", "key_c").await.unwrap();
    assert_eq!(next(&mut rx).await, change("api_keys", "a"));
    other.put_policy("a", "h1", "v1", "admin").await.unwrap();
    other.activate_policy("a", "h1").await.unwrap();
    assert_eq!(next(&mut rx).await, change("active_policies", "a"));
    other
        .put_policy("@platform", "p1", "p", "admin")
        .await
        .unwrap();
    other.activate_policy("@platform", "p1").await.unwrap();
    assert_eq!(next(&mut rx).await, change("active_policies", "@platform"));
    // Data keys and tenants' own upstream keys: a replica must not keep either cached.
    other.put_tenant_data_key("a", "wrapped").await.unwrap();
    assert_eq!(next(&mut rx).await, change("tenant_keys", "a"));
    let up = UpstreamKeyRecord {
        tenant_id: "a".into(),
        sealed: "{}".into(),
        last4: "abcd".into(),
        created_at: 1,
        updated_at: 1,
    };
    other.put_upstream_key(&up).await.unwrap();
    assert_eq!(next(&mut rx).await, change("tenant_upstream_keys", "a"));
    assert!(other.delete_upstream_key("a").await.unwrap());
    assert_eq!(next(&mut rx).await, change("tenant_upstream_keys", "a"));
    assert!(rx.try_recv().is_err(), "nothing else was reported");
}

async fn captures_are_stored_once_and_tenant_scoped(b: Backend) {
    let s = &b.store;
    for t in ["acme", "globex"] {
        s.create_tenant(new_tenant(t)).await.unwrap();
    }
    let c = CaptureRecord {
        tenant_id: "acme".into(),
        id: "cap_1".into(),
        receipt_id: "r1".into(),
        created_at: 1234,
        sealed: "{\"alg\":\"A256GCM\"}".into(),
    };
    s.put_capture(&c).await.unwrap();
    assert!(matches!(
        s.put_capture(&c).await,
        Err(StoreError::Conflict(_))
    ));
    assert_eq!(
        s.get_capture("acme", "cap_1").await.unwrap(),
        Some(c.clone())
    );
    assert!(s.get_capture("globex", "cap_1").await.unwrap().is_none());
    assert!(s.get_capture("acme", "cap_2").await.unwrap().is_none());
    // The same id in another tenant is a different row.
    let other = CaptureRecord {
        tenant_id: "globex".into(),
        ..c.clone()
    };
    s.put_capture(&other).await.unwrap();
    assert_eq!(s.get_capture("globex", "cap_1").await.unwrap(), Some(other));
    let again = b.reopen().await;
    assert_eq!(again.get_capture("acme", "cap_1").await.unwrap(), Some(c));
}

/// Generates one `#[tokio::test]` per backend for each contract test.
macro_rules! contract_suite {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name(super::Backend::sqlite().await).await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let Some(b) = super::Backend::postgres().await else {
                        return;
                    };
                    super::$name(b).await;
                }
            )*
        }
    };
}

fn approval(tenant: &str, id: &str) -> palisade_store::ApprovalRecord {
    palisade_store::ApprovalRecord {
        id: id.into(),
        tenant_id: tenant.into(),
        created_at: 1000,
        expires_at: 10_000,
        status: "pending".into(),
        tool: "email.send".into(),
        args_hash: "h1".into(),
        requester_key_id: "k1".into(),
        requester_user_id: Some("u1".into()),
        token_hash: None,
        version: 0,
        body: serde_json::Map::new(),
    }
}

async fn approvals_are_cas_single_use_and_tenant_scoped(b: Backend) {
    let s = b.store.clone();
    for t in ["acme", "globex"] {
        s.create_tenant(new_tenant(t)).await.unwrap();
    }
    let a = approval("acme", "apr_1");
    s.create_approval(&a).await.unwrap();
    assert!(matches!(
        s.create_approval(&a).await,
        Err(StoreError::Conflict(_))
    ));
    assert!(s.get_approval("globex", "apr_1").await.unwrap().is_none());
    assert_eq!(
        s.list_approvals("acme", Some("pending"), 10)
            .await
            .unwrap()
            .len(),
        1
    );
    assert!(
        s.list_approvals("globex", None, 10)
            .await
            .unwrap()
            .is_empty()
    );
    // Compare-and-set on version.
    let mut approved = a.clone();
    approved.status = "approved".into();
    approved.token_hash = Some("tok".into());
    assert!(s.update_approval(&approved, 0).await.unwrap());
    assert!(!s.update_approval(&approved, 0).await.unwrap());
    let got = s.get_approval("acme", "apr_1").await.unwrap().unwrap();
    assert_eq!((got.status.as_str(), got.version), ("approved", 1));
    // Redemption: wrong tenant, tool, args or expired → none; then exactly once.
    assert!(
        s.redeem_approval("globex", "tok", "email.send", "h1", 2000)
            .await
            .unwrap()
            .is_none()
    );
    assert!(
        s.redeem_approval("acme", "tok", "other", "h1", 2000)
            .await
            .unwrap()
            .is_none()
    );
    assert!(
        s.redeem_approval("acme", "tok", "email.send", "h2", 2000)
            .await
            .unwrap()
            .is_none()
    );
    assert!(
        s.redeem_approval("acme", "tok", "email.send", "h1", 20_000)
            .await
            .unwrap()
            .is_none()
    );
    let used = s
        .redeem_approval("acme", "tok", "email.send", "h1", 2000)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(used.status, "used");
    assert!(
        s.redeem_approval("acme", "tok", "email.send", "h1", 2000)
            .await
            .unwrap()
            .is_none()
    );
}

async fn upstream_keys_are_tenant_scoped_replaced_and_deleted(b: Backend) {
    let s = &b.store;
    for t in ["acme", "globex"] {
        s.create_tenant(new_tenant(t)).await.unwrap();
    }
    assert!(s.get_upstream_key("acme").await.unwrap().is_none());
    let k = UpstreamKeyRecord {
        tenant_id: "acme".into(),
        sealed: "{\"alg\":\"A256GCM\",\"n\":1}".into(),
        last4: "abcd".into(),
        created_at: 1000,
        updated_at: 1000,
    };
    s.put_upstream_key(&k).await.unwrap();
    assert_eq!(s.get_upstream_key("acme").await.unwrap(), Some(k.clone()));
    assert!(s.get_upstream_key("globex").await.unwrap().is_none());
    // Replacing keeps created_at, takes the new ciphertext.
    let k2 = UpstreamKeyRecord {
        sealed: "{\"alg\":\"A256GCM\",\"n\":2}".into(),
        last4: "wxyz".into(),
        created_at: 5000,
        updated_at: 5000,
        ..k.clone()
    };
    s.put_upstream_key(&k2).await.unwrap();
    let got = s.get_upstream_key("acme").await.unwrap().unwrap();
    assert_eq!(
        (
            got.sealed.as_str(),
            got.last4.as_str(),
            got.created_at,
            got.updated_at
        ),
        (k2.sealed.as_str(), "wxyz", 1000, 5000)
    );
    // The Debug form never shows the ciphertext.
    assert!(!format!("{got:?}").contains("A256GCM"));
    // Another tenant cannot delete it; the owner can, once.
    assert!(!s.delete_upstream_key("globex").await.unwrap());
    assert!(s.delete_upstream_key("acme").await.unwrap());
    assert!(!s.delete_upstream_key("acme").await.unwrap());
    assert!(s.get_upstream_key("acme").await.unwrap().is_none());
    // Deleting the tenant deletes its upstream key with its data key.
    s.put_upstream_key(&k).await.unwrap();
    assert!(s.delete_tenant("acme").await.unwrap());
    assert!(s.get_upstream_key("acme").await.unwrap().is_none());
}

contract_suite!(
    upstream_keys_are_tenant_scoped_replaced_and_deleted,
    change_feed_reports_writes_by_other_processes,
    tenants_crud,
    key_rotation_grace_and_networks,
    key_lifecycle_is_tenant_scoped,
    data_keys_first_writer_wins_and_deletion_shreds,
    receipts_chain_per_tenant_and_are_isolated,
    two_store_handles_never_fork_a_chain,
    appends_from_another_handle_in_between_are_chained_onto,
    checkpoints_are_stored_listed_and_deduplicated,
    purge_keeps_an_anchor_and_the_rest_verifies,
    policy_versions_and_activation,
    receipt_listing_pages_and_filters,
    alerts_are_tenant_scoped_paged_and_acked,
    approvals_are_cas_single_use_and_tenant_scoped,
    captures_are_stored_once_and_tenant_scoped,
);
