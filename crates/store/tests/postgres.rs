//! PostgreSQL-only properties: row-level security holds against an unfiltered query, the
//! chain stays linear with several processes writing one tenant, `postgresql://` opens.
//! Each test creates its own database (see `common`); without
//! `PALISADE_TEST_POSTGRES_URL` they print SKIPPED (and fail under `CI`).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::PgDatabase;
use palisade_audit::{Receipt, ReceiptKind, format_created_at, verify_chain};
use palisade_store::*;
use sqlx::{Connection, Row};
use std::sync::Arc;
use std::time::Instant;

fn receipt(tenant: &str) -> Receipt {
    Receipt::new(
        uuid::Uuid::now_v7().hyphenated().to_string(),
        tenant,
        ReceiptKind::Message,
        format_created_at(now_ms() as u64),
        "allow",
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

#[tokio::test]
async fn row_level_security_hides_other_tenants_from_an_unfiltered_query() {
    let Some(db) = PgDatabase::create().await else {
        return;
    };
    let s = PostgresStore::open(&db.url).await.unwrap();
    for t in ["a", "b"] {
        s.create_tenant(new_tenant(t)).await.unwrap();
        s.put_tenant_data_key(t, "wrapped").await.unwrap();
    }
    s.append_receipts(
        (0..6)
            .map(|i| receipt(if i % 2 == 0 { "a" } else { "b" }))
            .collect(),
    )
    .await
    .unwrap();

    // The test connects as a superuser; the store must not (RLS would not apply).
    let mut tx = s.begin_tenant("a").await.unwrap();
    let who: (String, bool) = sqlx::query_as(
        "SELECT current_user::text, rolsuper OR rolbypassrls FROM pg_roles WHERE rolname = current_user",
    )
    .fetch_one(&mut *tx)
    .await
    .unwrap();
    assert_eq!(who, ("palisade_app".to_string(), false));

    // Deliberately unfiltered: no WHERE tenant_id.
    let rows = sqlx::query("SELECT * FROM receipts")
        .fetch_all(&mut *tx)
        .await
        .unwrap();
    assert_eq!(rows.len(), 3);
    for r in &rows {
        assert_eq!(r.get::<String, _>("tenant_id"), "a");
    }
    for table in ["tenants", "tenant_keys", "chain_heads"] {
        let n: i64 =
            sqlx::query_scalar(sqlx::AssertSqlSafe(format!("SELECT count(*) FROM {table}")))
                .fetch_one(&mut *tx)
                .await
                .unwrap();
        assert_eq!(n, 1, "{table} shows only tenant a");
    }
    // Writing another tenant's row is refused (WITH CHECK), as is widening the view by
    // touching rows it cannot see.
    let err = sqlx::query(
        "INSERT INTO tenant_keys (tenant_id, wrapped_key, created_at) VALUES ('c', 'x', 0)",
    )
    .execute(&mut *tx)
    .await
    .unwrap_err();
    assert!(err.to_string().contains("row-level security"), "{err}");
    tx.rollback().await.unwrap();

    let mut tx = s.begin_tenant("a").await.unwrap();
    let n = sqlx::query("DELETE FROM receipts")
        .execute(&mut *tx)
        .await
        .unwrap();
    assert_eq!(n.rows_affected(), 3, "only a's rows are reachable");
    tx.rollback().await.unwrap();

    // A caller-supplied "*" is not the platform view.
    let mut tx = s.begin_tenant("*").await.unwrap();
    let n: i64 = sqlx::query_scalar("SELECT count(*) FROM receipts")
        .fetch_one(&mut *tx)
        .await
        .unwrap();
    assert_eq!(n, 0);
    tx.rollback().await.unwrap();

    // No tenant set at all (a plain pooled query): nothing, fail closed.
    let n: i64 = sqlx::query_scalar("SELECT count(*) FROM receipts")
        .fetch_one(s.pool())
        .await
        .unwrap();
    assert_eq!(n, 0);

    // The platform view sees everything.
    let mut tx = s.begin_platform().await.unwrap();
    let n: i64 = sqlx::query_scalar("SELECT count(*) FROM receipts")
        .fetch_one(&mut *tx)
        .await
        .unwrap();
    assert_eq!(n, 6);
    tx.rollback().await.unwrap();

    // And the setting is transaction-local: it does not leak to the next user of the
    // pooled connection.
    let mut conn = s.pool().acquire().await.unwrap();
    let v: Option<String> =
        sqlx::query_scalar("SELECT nullif(current_setting('palisade.tenant', true), '')")
            .fetch_one(&mut *conn)
            .await
            .unwrap();
    assert_eq!(v, None);
}

#[tokio::test]
async fn every_tenant_table_has_forced_row_level_security() {
    let Some(db) = PgDatabase::create().await else {
        return;
    };
    let s = PostgresStore::open(&db.url).await.unwrap();
    let rows: Vec<(String, bool, bool, i64)> = sqlx::query_as(
        "SELECT c.relname::text, c.relrowsecurity, c.relforcerowsecurity, \
                (SELECT count(*) FROM pg_policy p WHERE p.polrelid = c.oid) \
         FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
         WHERE n.nspname = current_schema() AND c.relkind = 'r' \
           AND c.relname NOT LIKE '\\_sqlx%' ORDER BY 1",
    )
    .fetch_all(s.pool())
    .await
    .unwrap();
    assert!(rows.len() >= 7, "{rows:?}");
    for (table, enabled, forced, policies) in rows {
        assert!(
            enabled && forced && policies > 0,
            "{table}: RLS {enabled} forced {forced} policies {policies}"
        );
    }
}

#[tokio::test]
async fn a_non_superuser_owner_is_bound_by_forced_rls() {
    let Some(db) = PgDatabase::create().await else {
        return;
    };
    // An operator's usual setup: a login role that owns the database, no superuser.
    let owner = format!("palisade_owner_{}", uuid::Uuid::new_v4().simple());
    let admin = PostgresStore::open(&db.url).await.unwrap();
    let mut conn = admin.pool().acquire().await.unwrap();
    sqlx::query("RESET ROLE").execute(&mut *conn).await.unwrap();
    for sql in [
        format!("CREATE ROLE {owner} LOGIN"),
        // Its own schema (first on its search path), so it owns all the migrations create.
        format!("CREATE SCHEMA {owner} AUTHORIZATION {owner}"),
        format!("ALTER ROLE {owner} SET search_path = {owner}"),
    ] {
        sqlx::query(sqlx::AssertSqlSafe(sql))
            .execute(&mut *conn)
            .await
            .unwrap();
    }
    drop(conn);
    let rest = db.url.split_once('@').map(|(_, r)| r).unwrap();
    let owner_url = format!("postgres://{owner}@{rest}");
    let s = PostgresStore::open(&owner_url).await.unwrap();
    s.append_receipts(vec![receipt("a"), receipt("b")])
        .await
        .unwrap();
    let mut tx = s.begin_tenant("a").await.unwrap();
    let (user, schema, n): (String, String, i64) = sqlx::query_as(
        "SELECT current_user::text, current_schema()::text, (SELECT count(*) FROM receipts)",
    )
    .fetch_one(&mut *tx)
    .await
    .unwrap();
    assert_eq!(
        (user.as_str(), schema.as_str(), n),
        (owner.as_str(), owner.as_str(), 1)
    );
    tx.rollback().await.unwrap();
    assert_eq!(s.chain("b", 1, 10).await.unwrap().len(), 1);
    s.pool().close().await;
    admin.pool().close().await;
    // The role outlives the database: drop the database (and with it everything the role
    // owns there), then the role.
    let server_url = db.server_url.clone();
    drop(db);
    let mut c = sqlx::postgres::PgConnection::connect(&server_url)
        .await
        .unwrap();
    sqlx::query(sqlx::AssertSqlSafe(format!("DROP ROLE IF EXISTS {owner}")))
        .execute(&mut c)
        .await
        .unwrap();
}

#[tokio::test]
async fn open_accepts_both_url_schemes_and_migrate_is_idempotent() {
    let Some(db) = PgDatabase::create().await else {
        return;
    };
    let s = open(&db.url).await.unwrap();
    assert!(s.migrations_applied().await.unwrap());
    let alt = db.url.replacen("postgres://", "postgresql://", 1);
    let s2 = open(&alt).await.unwrap();
    assert!(s2.migrations_applied().await.unwrap());
    s2.ping().await.unwrap();
    assert!(matches!(
        open("postgres://127.0.0.1:1/x?connect_timeout=1").await,
        Err(StoreError::Unavailable(_))
    ));
    let _ = s;
}

/// Several "replicas" (independent pools) appending for the same tenants at once: every
/// chain is gap-free and verifies. Also prints committed receipts per second.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn replicas_writing_one_tenant_keep_the_chain_linear() {
    let Some(db) = PgDatabase::create().await else {
        return;
    };
    let replicas: Vec<Arc<dyn Store>> = vec![
        open(&db.url).await.unwrap(),
        open(&db.url).await.unwrap(),
        open(&db.url).await.unwrap(),
    ];
    let writers = 24;
    let batches = 20;
    let per_batch = 10;
    let started = Instant::now();
    let mut tasks = Vec::new();
    for w in 0..writers {
        let s = replicas[w % replicas.len()].clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..batches {
                // Mostly one hot tenant; some batches span two tenants in either order
                // (the sorted lock order must prevent deadlocks).
                let batch: Vec<Receipt> = (0..per_batch)
                    .map(|j| {
                        let t = match (w + i + j) % 5 {
                            0 => "cold",
                            1 if i % 2 == 1 => "cold",
                            _ => "hot",
                        };
                        receipt(t)
                    })
                    .rev()
                    .collect();
                s.append_receipts(batch).await.unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let elapsed = started.elapsed();
    let total = writers * batches * per_batch;
    eprintln!(
        "postgres: {total} receipts in {:.2}s = {:.0} receipts/s ({writers} writers, 3 pools, batches of {per_batch})",
        elapsed.as_secs_f64(),
        total as f64 / elapsed.as_secs_f64()
    );
    let mut seen = 0;
    for t in ["hot", "cold"] {
        let chain = replicas[0].chain(t, 1, 100_000).await.unwrap();
        assert!(
            chain.iter().enumerate().all(|(i, r)| r.seq == i as u64 + 1),
            "{t}: gap"
        );
        let report = verify_chain(t, &chain, None);
        assert!(report.ok, "{t}: {:?}", report.problems);
        let head = replicas[1].chain_head(t).await.unwrap().unwrap();
        assert_eq!(head.seq, chain.len() as u64);
        seen += chain.len();
    }
    assert_eq!(seen, total);
}
