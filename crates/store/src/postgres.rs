//! The scale-out backend: PostgreSQL, shared by any number of gateway replicas.
//!
//! Every method runs in a transaction that first sets `palisade.tenant` (transaction-local)
//! to the tenant it works on, or to `'*'` for platform-wide operations; row-level security
//! (migration 0003) then hides every other tenant's rows, so a query that forgot its
//! `WHERE tenant_id` still cannot leak. Receipts are appended under a `FOR UPDATE` lock on
//! each tenant's chain-head row, taken in sorted tenant order, so writers in several
//! processes serialise per tenant (never across tenants) and cannot deadlock.
//!
//! See `crates/store/POSTGRES.md` for the role design and operations.

use crate::model::*;
use crate::sqlite::check_tenant_id;
use crate::{Result, Store, StoreError};
use async_trait::async_trait;
use palisade_audit::{Anchor, ChainHead, Receipt, SignedCheckpoint};
use serde_json::{Map, Value};
use sqlx::postgres::{PgConnectOptions, PgConnection, PgPool, PgPoolOptions, PgRow};
use sqlx::{Connection, Postgres, Row, Transaction};
use std::collections::BTreeMap;
use std::str::FromStr;
use std::time::Duration;

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");

/// The unprivileged role (created by migration 0003) that pooled connections switch to
/// when the configured user would bypass row-level security (superuser or BYPASSRLS).
pub const APP_ROLE: &str = "palisade_app";

/// NOTIFY channel of migration 0050's triggers.
const CHANGES_CHANNEL: &str = "palisade_changes";

/// A trigger payload `{"table": …, "tenant": …}`; anything unreadable means "resync all".
fn parse_change(payload: &str) -> crate::Change {
    let v: serde_json::Value = serde_json::from_str(payload).unwrap_or_default();
    crate::Change {
        table: v["table"].as_str().unwrap_or("*").to_string(),
        tenant: v["tenant"].as_str().map(str::to_string),
    }
}

/// The `palisade.tenant` value for platform-wide operations.
const ALL_TENANTS: &str = "*";

pub struct PostgresStore {
    pool: PgPool,
}

impl PostgresStore {
    /// Connects to `url` (`postgres://…` or `postgresql://…`), applies pending migrations
    /// on a dedicated connection (as the configured user, under sqlx's advisory lock, so
    /// replicas starting together migrate once), then opens the pool.
    pub async fn open(url: &str) -> Result<Self> {
        Self::open_with(url, 16).await
    }

    /// As [`PostgresStore::open`], with an explicit pool size.
    pub async fn open_with(url: &str, max_connections: u32) -> Result<Self> {
        let opts = PgConnectOptions::from_str(url)
            .map_err(|e| StoreError::Invalid(format!("bad postgres url: {e}")))?
            .application_name("palisade");
        {
            // Quiet the migrator's "already exists, skipping" notices on every start.
            let migrate_opts = opts.clone().options([("client_min_messages", "warning")]);
            let mut conn = PgConnection::connect_with(&migrate_opts).await?;
            MIGRATOR.run(&mut conn).await?;
            conn.close().await?;
        }
        let pool = PgPoolOptions::new()
            .max_connections(max_connections.max(1))
            .acquire_timeout(Duration::from_secs(10))
            .after_connect(|conn, _meta| Box::pin(async move { drop_privileges(conn).await }))
            .connect_with(opts)
            .await?;
        Ok(Self { pool })
    }

    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// A transaction in which row-level security shows only `tenant`'s rows (`"*"` is
    /// not accepted here: it would widen the view; use [`PostgresStore::begin_platform`]).
    /// Everything tenant-scoped in this store runs in one of these.
    pub async fn begin_tenant(&self, tenant: &str) -> Result<Transaction<'static, Postgres>> {
        // A caller-supplied "*" must not turn into the platform-wide view: map it to a
        // value no row carries.
        let value = if tenant == ALL_TENANTS { "" } else { tenant };
        self.begin_as(value).await
    }

    /// A transaction for platform-wide operations (admin listings, authentication lookups).
    pub async fn begin_platform(&self) -> Result<Transaction<'static, Postgres>> {
        self.begin_as(ALL_TENANTS).await
    }

    async fn begin_as(&self, value: &str) -> Result<Transaction<'static, Postgres>> {
        let mut tx = self.pool.begin().await?;
        sqlx::query("SELECT set_config('palisade.tenant', $1, true)")
            .bind(value)
            .execute(&mut *tx)
            .await?;
        Ok(tx)
    }
}

/// Runs on every new pooled connection: a superuser or BYPASSRLS login would skip
/// row-level security, so switch the session to the unprivileged role. Refuse to hand
/// out such a connection if that role is missing, rather than run without isolation.
async fn drop_privileges(conn: &mut PgConnection) -> std::result::Result<(), sqlx::Error> {
    let (bypass, role_exists): (bool, bool) = sqlx::query_as(
        "SELECT r.rolsuper OR r.rolbypassrls, \
                EXISTS (SELECT 1 FROM pg_roles WHERE rolname = $1) \
         FROM pg_roles r WHERE r.rolname = current_user",
    )
    .bind(APP_ROLE)
    .fetch_one(&mut *conn)
    .await?;
    if !bypass {
        return Ok(());
    }
    if !role_exists {
        return Err(sqlx::Error::Configuration(
            format!(
                "connected as a role that bypasses row-level security and role {APP_ROLE} \
                 does not exist; run the migrations as a superuser or connect as a \
                 non-superuser owner"
            )
            .into(),
        ));
    }
    sqlx::query(sqlx::AssertSqlSafe(format!("SET ROLE {APP_ROLE}")))
        .execute(&mut *conn)
        .await?;
    Ok(())
}

fn json_map(s: &str) -> Result<Map<String, Value>> {
    serde_json::from_str(s).map_err(|e| StoreError::Corrupt(format!("attributes: {e}")))
}

fn tenant_from_row(r: &PgRow) -> Result<Tenant> {
    Ok(Tenant {
        id: r.try_get("id")?,
        name: r.try_get("name")?,
        plan: r.try_get("plan")?,
        attributes: json_map(&r.try_get::<String, _>("attributes")?)?,
        created_at: r.try_get("created_at")?,
        updated_at: r.try_get("updated_at")?,
    })
}

fn key_from_row(r: &PgRow) -> Result<ApiKey> {
    let scopes: String = r.try_get("scopes")?;
    Ok(ApiKey {
        id: r.try_get("id")?,
        tenant_id: r.try_get("tenant_id")?,
        name: r.try_get("name")?,
        role: r.try_get("role")?,
        user_id: r.try_get("user_id")?,
        scopes: serde_json::from_str(&scopes)
            .map_err(|e| StoreError::Corrupt(format!("scopes: {e}")))?,
        secret_hash: r.try_get("secret_hash")?,
        created_at: r.try_get("created_at")?,
        expires_at: r.try_get("expires_at")?,
        revoked_at: r.try_get("revoked_at")?,
        rotated_at: r.try_get("rotated_at")?,
        last_used_at: r.try_get("last_used_at")?,
        prev_secret_hash: r.try_get("prev_secret_hash")?,
        prev_valid_until: r.try_get("prev_valid_until")?,
        allowed_networks: serde_json::from_str(&r.try_get::<String, _>("allowed_networks")?)
            .map_err(|e| StoreError::Corrupt(format!("allowed_networks: {e}")))?,
    })
}

fn policy_from_row(r: &PgRow) -> Result<PolicyVersion> {
    Ok(PolicyVersion {
        scope: r.try_get("scope")?,
        hash: r.try_get("hash")?,
        source: r.try_get("source")?,
        created_at: r.try_get("created_at")?,
        created_by: r.try_get("created_by")?,
        active: r.try_get("active")?,
    })
}

fn receipt_from_row(r: &PgRow) -> Result<Receipt> {
    let body: String = r.try_get("body")?;
    serde_json::from_str(&body).map_err(|e| StoreError::Corrupt(format!("receipt body: {e}")))
}

const TENANT_COLS: &str = "id, name, plan, attributes::text AS attributes, created_at, updated_at";

const KEY_COLS: &str = "id, tenant_id, name, role, user_id, scopes::text AS scopes, secret_hash, \
                        created_at, expires_at, revoked_at, rotated_at, last_used_at, \
                        prev_secret_hash, prev_valid_until, \
                        allowed_networks::text AS allowed_networks";

fn check_name(name: &str) -> Result<()> {
    if name.trim().is_empty() || name.len() > 200 {
        return Err(StoreError::Invalid("name must be 1-200 characters".into()));
    }
    Ok(())
}

/// Column arrays for one multi-row `INSERT … SELECT FROM UNNEST(…)`.
#[derive(Default)]
struct ReceiptColumns {
    seq: Vec<i64>,
    id: Vec<String>,
    created_at: Vec<i64>,
    kind: Vec<String>,
    decision: Vec<String>,
    key_id: Vec<Option<String>>,
    user_id: Vec<Option<String>>,
    model: Vec<Option<String>>,
    hash: Vec<String>,
    body: Vec<String>,
}

impl ReceiptColumns {
    fn push(&mut self, r: &Receipt) -> Result<()> {
        let body = serde_json::to_string(r)
            .map_err(|e| StoreError::Invalid(format!("receipt encoding: {e}")))?;
        self.seq.push(seq_i64(r.seq)?);
        self.id.push(r.id.clone());
        self.created_at
            .push(crate::model::rfc3339_ms::parse(&r.created_at).unwrap_or(0));
        self.kind.push(r.kind.as_str().to_owned());
        self.decision.push(r.decision.clone());
        self.key_id.push(r.key_id.clone());
        self.user_id.push(r.user_id.clone());
        self.model.push(r.model.clone());
        self.hash.push(r.hash.clone());
        self.body.push(body);
        Ok(())
    }
}

fn seq_i64(seq: u64) -> Result<i64> {
    i64::try_from(seq).map_err(|_| StoreError::Invalid(format!("seq {seq} out of range")))
}

fn seq_u64(seq: i64) -> Result<u64> {
    u64::try_from(seq).map_err(|_| StoreError::Corrupt(format!("negative seq {seq}")))
}

fn head_from_row(r: &PgRow) -> Result<ChainHead> {
    Ok(ChainHead {
        seq: seq_u64(r.try_get("seq")?)?,
        hash: r.try_get("hash")?,
    })
}

fn checkpoint_from_row(r: &PgRow) -> Result<SignedCheckpoint> {
    let body: String = r.try_get("body")?;
    serde_json::from_str(&body).map_err(|e| StoreError::Corrupt(format!("checkpoint body: {e}")))
}

/// Seals and inserts one tenant's receipts (already in input order) onto its chain.
/// The caller's transaction has `palisade.tenant` set to `tenant`.
async fn append_tenant(
    tx: &mut Transaction<'static, Postgres>,
    tenant: &str,
    receipts: &mut [&mut Receipt],
) -> Result<()> {
    // Make sure the head row exists, then lock it: every writer of this tenant, in any
    // process, queues here until the holder commits, and then reads the advanced head.
    sqlx::query(
        "INSERT INTO chain_heads (tenant_id, seq, hash) VALUES ($1, 0, $2) \
         ON CONFLICT (tenant_id) DO NOTHING",
    )
    .bind(tenant)
    .bind(ChainHead::genesis().hash)
    .execute(&mut **tx)
    .await?;
    let row = sqlx::query("SELECT seq, hash FROM chain_heads WHERE tenant_id = $1 FOR UPDATE")
        .bind(tenant)
        .fetch_one(&mut **tx)
        .await?;
    let mut head = head_from_row(&row)?;
    let mut cols = ReceiptColumns::default();
    for receipt in receipts.iter_mut() {
        head = receipt
            .seal_into_chain(&head)
            .map_err(|e| StoreError::Invalid(format!("receipt cannot be sealed: {e}")))?;
        cols.push(receipt)?;
    }
    // Insert the rows and advance the head in one statement: one round trip less while
    // the head lock is held (a data-modifying CTE always runs to completion).
    let updated = sqlx::query(
        "WITH ins AS ( \
             INSERT INTO receipts (tenant_id, seq, id, created_at, kind, decision, key_id, \
                                   user_id, model, hash, body) \
             SELECT $1, * FROM UNNEST($2::bigint[], $3::text[], $4::bigint[], $5::text[], \
                                      $6::text[], $7::text[], $8::text[], $9::text[], \
                                      $10::text[], $11::text[])) \
         UPDATE chain_heads SET seq = $12, hash = $13 WHERE tenant_id = $1",
    )
    .bind(tenant)
    .bind(cols.seq)
    .bind(cols.id)
    .bind(cols.created_at)
    .bind(cols.kind)
    .bind(cols.decision)
    .bind(cols.key_id)
    .bind(cols.user_id)
    .bind(cols.model)
    .bind(cols.hash)
    .bind(cols.body)
    .bind(seq_i64(head.seq)?)
    .bind(&head.hash)
    .execute(&mut **tx)
    .await?
    .rows_affected();
    if updated != 1 {
        return Err(StoreError::Corrupt(format!(
            "chain head of {tenant} not updated"
        )));
    }
    Ok(())
}

#[async_trait]
impl Store for PostgresStore {
    async fn ping(&self) -> Result<()> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    async fn watch_changes(&self) -> Result<Option<tokio::sync::mpsc::Receiver<crate::Change>>> {
        let mut listener = sqlx::postgres::PgListener::connect_with(&self.pool).await?;
        listener.listen(CHANGES_CHANNEL).await?;
        let (tx, rx) = tokio::sync::mpsc::channel(1024);
        tokio::spawn(async move {
            loop {
                let change = match listener.try_recv().await {
                    Ok(Some(n)) => parse_change(n.payload()),
                    // The connection dropped; the next call reconnects and listens again.
                    // Whatever was notified in between is lost, so everything is suspect.
                    Ok(None) => crate::Change {
                        table: "*".into(),
                        tenant: None,
                    },
                    Err(sqlx::Error::PoolClosed) => return, // the store is shutting down
                    Err(e) => {
                        tracing::warn!(error = %e, "change feed: reconnecting");
                        tokio::time::sleep(Duration::from_millis(500)).await;
                        crate::Change {
                            table: "*".into(),
                            tenant: None,
                        }
                    }
                };
                if tx.send(change).await.is_err() {
                    return; // the gateway stopped listening
                }
            }
        });
        Ok(Some(rx))
    }

    async fn migrations_applied(&self) -> Result<bool> {
        let applied: Vec<i64> =
            sqlx::query_scalar("SELECT version FROM _sqlx_migrations WHERE success")
                .fetch_all(&self.pool)
                .await?;
        Ok(MIGRATOR.iter().all(|m| applied.contains(&m.version)))
    }

    async fn create_tenant(&self, t: NewTenant) -> Result<Tenant> {
        let id = match t.id {
            Some(id) => id,
            None => format!("ten_{}", uuid::Uuid::now_v7().simple()),
        };
        check_tenant_id(&id)?;
        check_name(&t.name)?;
        let now = crate::now_ms();
        let attrs = Value::Object(t.attributes.clone()).to_string();
        let mut tx = self.begin_tenant(&id).await?;
        sqlx::query(
            "INSERT INTO tenants (id, name, plan, attributes, created_at, updated_at) \
             VALUES ($1, $2, $3, $4::json, $5, $6)",
        )
        .bind(&id)
        .bind(&t.name)
        .bind(&t.plan)
        .bind(attrs)
        .bind(now)
        .bind(now)
        .execute(&mut *tx)
        .await
        .map_err(|e| match StoreError::from(e) {
            StoreError::Conflict(_) => StoreError::Conflict(format!("tenant {id} already exists")),
            other => other,
        })?;
        tx.commit().await?;
        Ok(Tenant {
            id,
            name: t.name,
            plan: t.plan,
            attributes: t.attributes,
            created_at: now,
            updated_at: now,
        })
    }

    async fn get_tenant(&self, id: &str) -> Result<Option<Tenant>> {
        let mut tx = self.begin_tenant(id).await?;
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {TENANT_COLS} FROM tenants WHERE id = $1"
        )))
        .bind(id)
        .fetch_optional(&mut *tx)
        .await?;
        tx.commit().await?;
        row.as_ref().map(tenant_from_row).transpose()
    }

    async fn list_tenants(&self, after: Option<&str>, limit: u32) -> Result<Vec<Tenant>> {
        let mut tx = self.begin_platform().await?;
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {TENANT_COLS} FROM tenants WHERE id > $1 ORDER BY id LIMIT $2"
        )))
        .bind(after.unwrap_or(""))
        .bind(i64::from(limit))
        .fetch_all(&mut *tx)
        .await?;
        tx.commit().await?;
        rows.iter().map(tenant_from_row).collect()
    }

    async fn update_tenant(&self, id: &str, patch: TenantPatch) -> Result<Option<Tenant>> {
        let mut tx = self.begin_tenant(id).await?;
        let Some(row) = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {TENANT_COLS} FROM tenants WHERE id = $1 FOR UPDATE"
        )))
        .bind(id)
        .fetch_optional(&mut *tx)
        .await?
        else {
            return Ok(None);
        };
        let mut t = tenant_from_row(&row)?;
        if let Some(name) = patch.name {
            check_name(&name)?;
            t.name = name;
        }
        if let Some(plan) = patch.plan {
            t.plan = plan;
        }
        if let Some(attrs) = patch.attributes {
            t.attributes = attrs;
        }
        t.updated_at = crate::now_ms();
        sqlx::query(
            "UPDATE tenants SET name = $1, plan = $2, attributes = $3::json, updated_at = $4 \
             WHERE id = $5",
        )
        .bind(&t.name)
        .bind(&t.plan)
        .bind(Value::Object(t.attributes.clone()).to_string())
        .bind(t.updated_at)
        .bind(id)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(Some(t))
    }

    async fn delete_tenant(&self, id: &str) -> Result<bool> {
        let mut tx = self.begin_tenant(id).await?;
        sqlx::query("DELETE FROM api_keys WHERE tenant_id = $1")
            .bind(id)
            .execute(&mut *tx)
            .await?;
        sqlx::query("DELETE FROM active_policies WHERE scope = $1")
            .bind(id)
            .execute(&mut *tx)
            .await?;
        sqlx::query("DELETE FROM tenant_keys WHERE tenant_id = $1")
            .bind(id)
            .execute(&mut *tx)
            .await?;
        sqlx::query("DELETE FROM tenant_upstream_keys WHERE tenant_id = $1")
            .bind(id)
            .execute(&mut *tx)
            .await?;
        let n = sqlx::query("DELETE FROM tenants WHERE id = $1")
            .bind(id)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        tx.commit().await?;
        Ok(n > 0)
    }

    async fn tenant_data_key(&self, tenant_id: &str) -> Result<Option<String>> {
        let mut tx = self.begin_tenant(tenant_id).await?;
        let key = sqlx::query_scalar("SELECT wrapped_key FROM tenant_keys WHERE tenant_id = $1")
            .bind(tenant_id)
            .fetch_optional(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(key)
    }

    async fn put_tenant_data_key(&self, tenant_id: &str, wrapped: &str) -> Result<String> {
        let mut tx = self.begin_tenant(tenant_id).await?;
        sqlx::query(
            "INSERT INTO tenant_keys (tenant_id, wrapped_key, created_at) VALUES ($1, $2, $3) \
             ON CONFLICT (tenant_id) DO NOTHING",
        )
        .bind(tenant_id)
        .bind(wrapped)
        .bind(crate::now_ms())
        .execute(&mut *tx)
        .await?;
        // Read in a fresh statement: under READ COMMITTED it sees a concurrent first
        // writer's committed row (the insert above waited for it).
        let key: Option<String> =
            sqlx::query_scalar("SELECT wrapped_key FROM tenant_keys WHERE tenant_id = $1")
                .bind(tenant_id)
                .fetch_optional(&mut *tx)
                .await?;
        tx.commit().await?;
        key.ok_or_else(|| StoreError::Corrupt("tenant data key missing after insert".into()))
    }

    async fn create_key(&self, k: NewApiKey) -> Result<ApiKey> {
        let now = crate::now_ms();
        let scopes = serde_json::to_string(&k.scopes)
            .map_err(|e| StoreError::Invalid(format!("scopes: {e}")))?;
        let networks = serde_json::to_string(&k.allowed_networks)
            .map_err(|e| StoreError::Invalid(format!("allowed_networks: {e}")))?;
        let mut tx = self.begin_tenant(&k.tenant_id).await?;
        sqlx::query(
            "INSERT INTO api_keys (id, tenant_id, name, role, user_id, scopes, secret_hash, \
                                   created_at, expires_at, allowed_networks) \
             VALUES ($1, $2, $3, $4, $5, $6::json, $7, $8, $9, $10::json)",
        )
        .bind(&k.id)
        .bind(&k.tenant_id)
        .bind(&k.name)
        .bind(&k.role)
        .bind(&k.user_id)
        .bind(scopes)
        .bind(&k.secret_hash)
        .bind(now)
        .bind(k.expires_at)
        .bind(networks)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(ApiKey {
            id: k.id,
            tenant_id: k.tenant_id,
            name: k.name,
            role: k.role,
            user_id: k.user_id,
            scopes: k.scopes,
            secret_hash: k.secret_hash,
            created_at: now,
            expires_at: k.expires_at,
            revoked_at: None,
            rotated_at: None,
            last_used_at: None,
            prev_secret_hash: None,
            prev_valid_until: None,
            allowed_networks: k.allowed_networks,
        })
    }

    async fn get_key(&self, id: &str) -> Result<Option<ApiKey>> {
        // Authentication: the tenant is what we are about to learn.
        let mut tx = self.begin_platform().await?;
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {KEY_COLS} FROM api_keys WHERE id = $1"
        )))
        .bind(id)
        .fetch_optional(&mut *tx)
        .await?;
        tx.commit().await?;
        row.as_ref().map(key_from_row).transpose()
    }

    async fn list_keys(&self, tenant_id: &str) -> Result<Vec<ApiKey>> {
        let mut tx = self.begin_tenant(tenant_id).await?;
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {KEY_COLS} FROM api_keys WHERE tenant_id = $1 ORDER BY created_at, id"
        )))
        .bind(tenant_id)
        .fetch_all(&mut *tx)
        .await?;
        tx.commit().await?;
        rows.iter().map(key_from_row).collect()
    }

    async fn rotate_key_with_grace(
        &self,
        tenant_id: &str,
        id: &str,
        new_hash: &str,
        prev_valid_until: Option<i64>,
    ) -> Result<Option<ApiKey>> {
        // With a grace period the current hash becomes the previous one; without, any
        // previous hash is dropped so that a rotated-out secret stops working at once.
        let mut tx = self.begin_tenant(tenant_id).await?;
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "UPDATE api_keys SET \
               prev_secret_hash = CASE WHEN $5::BIGINT IS NULL THEN NULL ELSE secret_hash END, \
               prev_valid_until = $5, secret_hash = $1, rotated_at = $2 \
             WHERE tenant_id = $3 AND id = $4 AND revoked_at IS NULL \
             RETURNING {KEY_COLS}"
        )))
        .bind(new_hash)
        .bind(crate::now_ms())
        .bind(tenant_id)
        .bind(id)
        .bind(prev_valid_until)
        .fetch_optional(&mut *tx)
        .await?;
        tx.commit().await?;
        row.as_ref().map(key_from_row).transpose()
    }

    async fn revoke_key(&self, tenant_id: &str, id: &str) -> Result<Option<ApiKey>> {
        let mut tx = self.begin_tenant(tenant_id).await?;
        sqlx::query(
            "UPDATE api_keys SET revoked_at = $1 \
             WHERE tenant_id = $2 AND id = $3 AND revoked_at IS NULL",
        )
        .bind(crate::now_ms())
        .bind(tenant_id)
        .bind(id)
        .execute(&mut *tx)
        .await?;
        // Revoking an already revoked key returns it unchanged (as on SQLite).
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {KEY_COLS} FROM api_keys WHERE tenant_id = $1 AND id = $2"
        )))
        .bind(tenant_id)
        .bind(id)
        .fetch_optional(&mut *tx)
        .await?;
        tx.commit().await?;
        row.as_ref().map(key_from_row).transpose()
    }

    async fn touch_key(&self, id: &str, at_ms: i64) -> Result<()> {
        // Called by authentication with the key id only.
        let mut tx = self.begin_platform().await?;
        sqlx::query("UPDATE api_keys SET last_used_at = $1 WHERE id = $2")
            .bind(at_ms)
            .bind(id)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn put_policy(&self, scope: &str, hash: &str, source: &str, by: &str) -> Result<bool> {
        let mut tx = self.begin_tenant(scope).await?;
        let n = sqlx::query(
            "INSERT INTO policy_versions (scope, hash, source, created_at, created_by) \
             VALUES ($1, $2, $3, $4, $5) ON CONFLICT (scope, hash) DO NOTHING",
        )
        .bind(scope)
        .bind(hash)
        .bind(source)
        .bind(crate::now_ms())
        .bind(by)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        tx.commit().await?;
        Ok(n > 0)
    }

    async fn list_policies(&self, scope: &str) -> Result<Vec<PolicyVersion>> {
        let mut tx = self.begin_tenant(scope).await?;
        let rows = sqlx::query(
            "SELECT v.scope, v.hash, '' AS source, v.created_at, v.created_by, \
                    (a.hash IS NOT NULL) AS active \
             FROM policy_versions v \
             LEFT JOIN active_policies a ON a.scope = v.scope AND a.hash = v.hash \
             WHERE v.scope = $1 ORDER BY v.created_at DESC, v.hash",
        )
        .bind(scope)
        .fetch_all(&mut *tx)
        .await?;
        tx.commit().await?;
        rows.iter().map(policy_from_row).collect()
    }

    async fn get_policy(&self, scope: &str, hash: &str) -> Result<Option<PolicyVersion>> {
        let mut tx = self.begin_tenant(scope).await?;
        let row = sqlx::query(
            "SELECT v.scope, v.hash, v.source, v.created_at, v.created_by, \
                    (a.hash IS NOT NULL) AS active \
             FROM policy_versions v \
             LEFT JOIN active_policies a ON a.scope = v.scope AND a.hash = v.hash \
             WHERE v.scope = $1 AND v.hash = $2",
        )
        .bind(scope)
        .bind(hash)
        .fetch_optional(&mut *tx)
        .await?;
        tx.commit().await?;
        row.as_ref().map(policy_from_row).transpose()
    }

    async fn activate_policy(&self, scope: &str, hash: &str) -> Result<Option<String>> {
        let mut tx = self.begin_tenant(scope).await?;
        let exists: Option<String> =
            sqlx::query_scalar("SELECT hash FROM policy_versions WHERE scope = $1 AND hash = $2")
                .bind(scope)
                .bind(hash)
                .fetch_optional(&mut *tx)
                .await?;
        if exists.is_none() {
            return Err(StoreError::NotFound);
        }
        // Serialise activations of one scope so "previously active" is exact: lock the
        // current row, or (first activation) take a transaction-scoped advisory lock on
        // the scope so two first activations cannot both report `None`.
        sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended('palisade.policy:' || $1, 0))")
            .bind(scope)
            .execute(&mut *tx)
            .await?;
        let old: Option<String> =
            sqlx::query_scalar("SELECT hash FROM active_policies WHERE scope = $1 FOR UPDATE")
                .bind(scope)
                .fetch_optional(&mut *tx)
                .await?;
        sqlx::query(
            "INSERT INTO active_policies (scope, hash, activated_at) VALUES ($1, $2, $3) \
             ON CONFLICT (scope) DO UPDATE SET hash = excluded.hash, \
                                               activated_at = excluded.activated_at",
        )
        .bind(scope)
        .bind(hash)
        .bind(crate::now_ms())
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(old)
    }

    async fn active_policy(&self, scope: &str) -> Result<Option<PolicyVersion>> {
        let mut tx = self.begin_tenant(scope).await?;
        let row = sqlx::query(
            "SELECT v.scope, v.hash, v.source, v.created_at, v.created_by, true AS active \
             FROM active_policies a \
             JOIN policy_versions v ON a.scope = v.scope AND a.hash = v.hash \
             WHERE a.scope = $1",
        )
        .bind(scope)
        .fetch_optional(&mut *tx)
        .await?;
        tx.commit().await?;
        row.as_ref().map(policy_from_row).transpose()
    }

    async fn append_receipts(&self, mut receipts: Vec<Receipt>) -> Result<Vec<Receipt>> {
        if receipts.is_empty() {
            return Ok(receipts);
        }
        // Group by tenant in sorted order (a fixed lock order: two batches touching the
        // same tenants cannot deadlock), keeping input order within each tenant.
        let mut by_tenant: BTreeMap<String, Vec<&mut Receipt>> = BTreeMap::new();
        for r in receipts.iter_mut() {
            by_tenant.entry(r.tenant_id.clone()).or_default().push(r);
        }
        if by_tenant.contains_key("") {
            return Err(StoreError::Invalid(
                "receipt cannot be sealed: tenant_id is empty".into(),
            ));
        }
        let mut tx = self.pool.begin().await?;
        for (tenant, mut group) in by_tenant {
            // Row-level security scoped to this tenant while its rows are written: a bug
            // that put another tenant's id on a row would fail the WITH CHECK.
            sqlx::query("SELECT set_config('palisade.tenant', $1, true)")
                .bind(&tenant)
                .execute(&mut *tx)
                .await?;
            append_tenant(&mut tx, &tenant, &mut group).await?;
        }
        tx.commit().await?;
        Ok(receipts)
    }

    async fn get_receipt(&self, tenant_id: &str, id: &str) -> Result<Option<Receipt>> {
        let mut tx = self.begin_tenant(tenant_id).await?;
        let row = sqlx::query("SELECT body FROM receipts WHERE tenant_id = $1 AND id = $2")
            .bind(tenant_id)
            .bind(id)
            .fetch_optional(&mut *tx)
            .await?;
        tx.commit().await?;
        row.as_ref().map(receipt_from_row).transpose()
    }

    async fn list_receipts(
        &self,
        tenant_id: Option<&str>,
        q: &ReceiptQuery,
    ) -> Result<Vec<Receipt>> {
        let mut sql = String::from("SELECT body FROM receipts WHERE true");
        let mut binds: Vec<Bind> = Vec::new();
        fn param(b: Bind, binds: &mut Vec<Bind>) -> String {
            binds.push(b);
            format!("${}", binds.len())
        }
        if let Some(t) = tenant_id {
            let p = param(Bind::S(t.to_string()), &mut binds);
            sql.push_str(&format!(" AND tenant_id = {p}"));
        }
        if let Some((ms, id)) = &q.before {
            let pm = param(Bind::I(*ms), &mut binds);
            let pi = param(Bind::S(id.clone()), &mut binds);
            sql.push_str(&format!(
                " AND (created_at < {pm} OR (created_at = {pm} AND id < {pi}))"
            ));
        }
        if let Some(v) = q.since_ms {
            let p = param(Bind::I(v), &mut binds);
            sql.push_str(&format!(" AND created_at >= {p}"));
        }
        if let Some(v) = q.until_ms {
            let p = param(Bind::I(v), &mut binds);
            sql.push_str(&format!(" AND created_at < {p}"));
        }
        for (col, val) in [
            ("kind", &q.kind),
            ("decision", &q.decision),
            ("user_id", &q.user_id),
            ("key_id", &q.key_id),
            ("model", &q.model),
        ] {
            if let Some(v) = val {
                let p = param(Bind::S(v.clone()), &mut binds);
                sql.push_str(&format!(" AND {col} = {p}"));
            }
        }
        let p = param(Bind::I(i64::from(q.limit.clamp(1, 1000))), &mut binds);
        sql.push_str(&format!(" ORDER BY created_at DESC, id DESC LIMIT {p}"));
        let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
        for b in binds {
            query = match b {
                Bind::S(s) => query.bind(s),
                Bind::I(i) => query.bind(i),
            };
        }
        let mut tx = match tenant_id {
            Some(t) => self.begin_tenant(t).await?,
            None => self.begin_platform().await?,
        };
        let rows = query.fetch_all(&mut *tx).await?;
        tx.commit().await?;
        rows.iter().map(receipt_from_row).collect()
    }

    async fn chain(&self, tenant_id: &str, from_seq: u64, limit: u32) -> Result<Vec<Receipt>> {
        // Beyond i64 there is nothing to return.
        let Ok(from) = i64::try_from(from_seq) else {
            return Ok(Vec::new());
        };
        let mut tx = self.begin_tenant(tenant_id).await?;
        let rows = sqlx::query(
            "SELECT body FROM receipts WHERE tenant_id = $1 AND seq >= $2 ORDER BY seq LIMIT $3",
        )
        .bind(tenant_id)
        .bind(from)
        .bind(i64::from(limit))
        .fetch_all(&mut *tx)
        .await?;
        tx.commit().await?;
        rows.iter().map(receipt_from_row).collect()
    }

    async fn chain_tenants(&self) -> Result<Vec<String>> {
        let mut tx = self.begin_platform().await?;
        let tenants = sqlx::query_scalar("SELECT tenant_id FROM chain_heads ORDER BY tenant_id")
            .fetch_all(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(tenants)
    }

    async fn chain_head(&self, tenant_id: &str) -> Result<Option<ChainHead>> {
        let mut tx = self.begin_tenant(tenant_id).await?;
        let row = sqlx::query("SELECT seq, hash FROM chain_heads WHERE tenant_id = $1")
            .bind(tenant_id)
            .fetch_optional(&mut *tx)
            .await?;
        tx.commit().await?;
        row.as_ref().map(head_from_row).transpose()
    }

    async fn uncheckpointed_heads(&self, limit: u32) -> Result<Vec<(String, ChainHead)>> {
        // The checkpoint job signs every tenant's head: platform-wide.
        let mut tx = self.begin_platform().await?;
        let rows = sqlx::query(
            "SELECT h.tenant_id, h.seq, h.hash FROM chain_heads h \
             WHERE h.seq > COALESCE((SELECT MAX(c.seq) FROM checkpoints c \
                                     WHERE c.tenant_id = h.tenant_id), 0) \
             ORDER BY h.tenant_id LIMIT $1",
        )
        .bind(i64::from(limit))
        .fetch_all(&mut *tx)
        .await?;
        tx.commit().await?;
        rows.iter()
            .map(|r| Ok((r.try_get("tenant_id")?, head_from_row(r)?)))
            .collect()
    }

    async fn put_checkpoint(&self, checkpoint: &SignedCheckpoint) -> Result<bool> {
        let c = &checkpoint.checkpoint;
        let body = serde_json::to_string(checkpoint)
            .map_err(|e| StoreError::Invalid(format!("checkpoint encoding: {e}")))?;
        let created = crate::model::rfc3339_ms::parse(&c.created_at).unwrap_or(0);
        let mut tx = self.begin_tenant(&c.tenant_id).await?;
        let n = sqlx::query(
            "INSERT INTO checkpoints (tenant_id, seq, key_id, head_hash, created_at, body) \
             VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (tenant_id, seq, key_id) DO NOTHING",
        )
        .bind(&c.tenant_id)
        .bind(seq_i64(c.seq)?)
        .bind(&c.key_id)
        .bind(&c.head_hash)
        .bind(created)
        .bind(body)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        tx.commit().await?;
        Ok(n > 0)
    }

    async fn list_checkpoints(
        &self,
        tenant_id: &str,
        from_seq: u64,
        limit: u32,
    ) -> Result<Vec<SignedCheckpoint>> {
        let Ok(from) = i64::try_from(from_seq) else {
            return Ok(Vec::new());
        };
        let mut tx = self.begin_tenant(tenant_id).await?;
        let rows = sqlx::query(
            "SELECT body FROM checkpoints WHERE tenant_id = $1 AND seq >= $2 \
             ORDER BY seq, key_id LIMIT $3",
        )
        .bind(tenant_id)
        .bind(from)
        .bind(i64::from(limit))
        .fetch_all(&mut *tx)
        .await?;
        tx.commit().await?;
        rows.iter().map(checkpoint_from_row).collect()
    }

    async fn latest_checkpoint(&self, tenant_id: &str) -> Result<Option<SignedCheckpoint>> {
        let mut tx = self.begin_tenant(tenant_id).await?;
        let row = sqlx::query(
            "SELECT body FROM checkpoints WHERE tenant_id = $1 \
             ORDER BY seq DESC, created_at DESC LIMIT 1",
        )
        .bind(tenant_id)
        .fetch_optional(&mut *tx)
        .await?;
        tx.commit().await?;
        row.as_ref().map(checkpoint_from_row).transpose()
    }

    async fn chain_anchor(&self, tenant_id: &str) -> Result<Option<Anchor>> {
        let mut tx = self.begin_tenant(tenant_id).await?;
        let row = sqlx::query("SELECT seq, head_hash FROM chain_anchors WHERE tenant_id = $1")
            .bind(tenant_id)
            .fetch_optional(&mut *tx)
            .await?;
        tx.commit().await?;
        row.map(|r| {
            Ok(Anchor {
                tenant_id: tenant_id.to_string(),
                seq: seq_u64(r.try_get("seq")?)?,
                head_hash: r.try_get("head_hash")?,
            })
        })
        .transpose()
    }

    async fn receipt_seq_range(
        &self,
        tenant_id: &str,
        since_ms: Option<i64>,
        until_ms: Option<i64>,
    ) -> Result<Option<(u64, u64)>> {
        let mut tx = self.begin_tenant(tenant_id).await?;
        let row = sqlx::query(
            "SELECT MIN(seq) AS lo, MAX(seq) AS hi FROM receipts \
             WHERE tenant_id = $1 AND created_at >= $2 AND created_at < $3",
        )
        .bind(tenant_id)
        .bind(since_ms.unwrap_or(i64::MIN))
        .bind(until_ms.unwrap_or(i64::MAX))
        .fetch_one(&mut *tx)
        .await?;
        tx.commit().await?;
        let lo: Option<i64> = row.try_get("lo")?;
        let hi: Option<i64> = row.try_get("hi")?;
        match (lo, hi) {
            (Some(lo), Some(hi)) => Ok(Some((seq_u64(lo)?, seq_u64(hi)?))),
            _ => Ok(None),
        }
    }

    async fn purge_receipts(&self, anchor: &Anchor) -> Result<u64> {
        let seq = seq_i64(anchor.seq)?;
        let tenant = anchor.tenant_id.as_str();
        let mut tx = self.begin_tenant(tenant).await?;
        // Serialise with appends and other purges of this tenant (any process) on the
        // chain-head row, as SQLite's BEGIN IMMEDIATE does for the whole file.
        sqlx::query("SELECT 1 FROM chain_heads WHERE tenant_id = $1 FOR UPDATE")
            .bind(tenant)
            .fetch_optional(&mut *tx)
            .await?;
        let current: Option<i64> =
            sqlx::query_scalar("SELECT seq FROM chain_anchors WHERE tenant_id = $1")
                .bind(tenant)
                .fetch_optional(&mut *tx)
                .await?;
        if current.is_some_and(|c| c >= seq) {
            return Ok(0);
        }
        let hash: Option<String> =
            sqlx::query_scalar("SELECT hash FROM receipts WHERE tenant_id = $1 AND seq = $2")
                .bind(tenant)
                .bind(seq)
                .fetch_optional(&mut *tx)
                .await?;
        match hash {
            Some(h) if h == anchor.head_hash => {}
            Some(_) => {
                return Err(StoreError::Invalid(format!(
                    "anchor hash does not match the receipt at seq {}",
                    anchor.seq
                )));
            }
            None => {
                return Err(StoreError::Invalid(format!(
                    "no receipt at seq {} to anchor on",
                    anchor.seq
                )));
            }
        }
        let deleted = sqlx::query("DELETE FROM receipts WHERE tenant_id = $1 AND seq <= $2")
            .bind(tenant)
            .bind(seq)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        sqlx::query("DELETE FROM checkpoints WHERE tenant_id = $1 AND seq < $2")
            .bind(tenant)
            .bind(seq)
            .execute(&mut *tx)
            .await?;
        sqlx::query(
            "INSERT INTO chain_anchors (tenant_id, seq, head_hash, created_at) \
             VALUES ($1, $2, $3, $4) \
             ON CONFLICT (tenant_id) DO UPDATE SET seq = excluded.seq, \
                 head_hash = excluded.head_hash, created_at = excluded.created_at",
        )
        .bind(tenant)
        .bind(seq)
        .bind(&anchor.head_hash)
        .bind(crate::now_ms())
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(deleted)
    }

    async fn put_alert(&self, alert: &crate::AlertRecord) -> Result<()> {
        self.alerts_put(alert).await
    }

    async fn list_alerts(
        &self,
        tenant_id: &str,
        q: &crate::AlertQuery,
    ) -> Result<Vec<crate::AlertRecord>> {
        self.alerts_list(tenant_id, q).await
    }

    async fn get_alert(&self, tenant_id: &str, id: &str) -> Result<Option<crate::AlertRecord>> {
        self.alerts_get(tenant_id, id).await
    }

    async fn ack_alert(
        &self,
        tenant_id: &str,
        id: &str,
        by: &str,
        at_ms: i64,
    ) -> Result<Option<crate::AlertRecord>> {
        self.alerts_ack(tenant_id, id, by, at_ms).await
    }

    async fn set_alert_receipt(&self, tenant_id: &str, id: &str, receipt_id: &str) -> Result<()> {
        self.alerts_set_receipt(tenant_id, id, receipt_id).await
    }

    async fn create_approval(&self, a: &crate::ApprovalRecord) -> Result<()> {
        self.approvals_create(a).await
    }

    async fn get_approval(
        &self,
        tenant_id: &str,
        id: &str,
    ) -> Result<Option<crate::ApprovalRecord>> {
        self.approvals_get(tenant_id, id).await
    }

    async fn list_approvals(
        &self,
        tenant_id: &str,
        status: Option<&str>,
        limit: u32,
    ) -> Result<Vec<crate::ApprovalRecord>> {
        self.approvals_list(tenant_id, status, limit).await
    }

    async fn update_approval(&self, a: &crate::ApprovalRecord, expected: i64) -> Result<bool> {
        self.approvals_update(a, expected).await
    }

    async fn redeem_approval(
        &self,
        tenant_id: &str,
        token_hash: &str,
        tool: &str,
        args_hash: &str,
        now_ms: i64,
    ) -> Result<Option<crate::ApprovalRecord>> {
        self.approvals_redeem(tenant_id, token_hash, tool, args_hash, now_ms)
            .await
    }

    async fn put_capture(&self, c: &crate::CaptureRecord) -> Result<()> {
        self.captures_put(c).await
    }

    async fn get_capture(&self, tenant_id: &str, id: &str) -> Result<Option<crate::CaptureRecord>> {
        self.captures_get(tenant_id, id).await
    }

    async fn get_upstream_key(&self, tenant_id: &str) -> Result<Option<crate::UpstreamKeyRecord>> {
        self.upstream_key_get(tenant_id).await
    }

    async fn put_upstream_key(&self, k: &crate::UpstreamKeyRecord) -> Result<()> {
        self.upstream_key_put(k).await
    }

    async fn delete_upstream_key(&self, tenant_id: &str) -> Result<bool> {
        self.upstream_key_delete(tenant_id).await
    }
}

enum Bind {
    S(String),
    I(i64),
}
