//! The store contract. Every backend must pass these; each test gets its own database.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use palisade_audit::{Receipt, ReceiptKind, format_created_at, verify_chain};
use palisade_store::*;
use std::sync::Arc;

async fn sqlite() -> (DynStore, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("s.db").display());
    (open(&url).await.unwrap(), dir)
}

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
    }
}

#[tokio::test]
async fn tenants_crud() {
    let (s, _d) = sqlite().await;
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

#[tokio::test]
async fn key_lifecycle_is_tenant_scoped() {
    let (s, _d) = sqlite().await;
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

#[tokio::test]
async fn data_keys_first_writer_wins_and_deletion_shreds() {
    let (s, _d) = sqlite().await;
    s.create_tenant(new_tenant("a")).await.unwrap();
    assert!(s.tenant_data_key("a").await.unwrap().is_none());
    assert_eq!(s.put_tenant_data_key("a", "first").await.unwrap(), "first");
    assert_eq!(s.put_tenant_data_key("a", "second").await.unwrap(), "first");
    s.delete_tenant("a").await.unwrap();
    assert!(s.tenant_data_key("a").await.unwrap().is_none());
}

#[tokio::test]
async fn receipts_chain_per_tenant_and_are_isolated() {
    let (s, _d) = sqlite().await;
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
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_store_handles_on_one_file_never_fork_a_chain() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("s.db").display());
    // Two independent pools stand for two gateway processes sharing the file.
    let s1: Arc<dyn Store> = open(&url).await.unwrap();
    let s2: Arc<dyn Store> = open(&url).await.unwrap();
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
