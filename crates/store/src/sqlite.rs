//! The embedded default: one SQLite file in WAL mode. Writes of receipts are batched by
//! the caller (group commit) into one transaction on the store's own append connection;
//! the chain heads are checked (or read) and advanced inside that transaction, and
//! SQLite's single writer makes the chain linear.

use crate::model::*;
use crate::{Result, Store, StoreError};
use async_trait::async_trait;
use palisade_audit::{Anchor, ChainHead, Receipt, SignedCheckpoint};
use serde_json::{Map, Value};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteRow,
    SqliteSynchronous,
};
use sqlx::{ConnectOptions, Row, Sqlite, SqliteConnection};
use std::collections::HashMap;
use std::str::FromStr;
use std::time::Duration;

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");

pub struct SqliteStore {
    pool: SqlitePool,
    /// Receipts are appended on one connection of their own (file databases): SQLite has
    /// one writer anyway, and a pooled connection costs two more hand-offs per batch (the
    /// pool's liveness ping on acquire, a spawned task to return it). `None` inside: not
    /// connected yet, or dropped after an error (reconnected on the next append).
    appender: Option<(tokio::sync::Mutex<Appender>, SqliteConnectOptions)>,
    /// Background WAL checkpoints (file databases only); stopped when the store drops.
    _checkpointer: Option<tokio_util::task::AbortOnDropHandle<()>>,
}

/// How often the background task checkpoints the WAL into the database file.
const CHECKPOINT_EVERY: Duration = Duration::from_millis(200);

/// WAL size (pages of 4 KiB) at which a committing writer checkpoints by itself: only
/// reached when the background task falls behind, so the WAL stays bounded regardless.
const WAL_AUTOCHECKPOINT_PAGES: &str = "16384";

/// Checkpoints the WAL off the commit path. With SQLite's default the transaction that
/// pushes the WAL past 1,000 pages runs the checkpoint itself (two fsyncs, ~1 ms here)
/// while every receipt queued behind it waits; that was the p99 of a call. A PASSIVE
/// checkpoint on its own connection runs alongside writers without blocking them.
async fn checkpoint_loop(pool: SqlitePool) {
    let mut tick = tokio::time::interval(CHECKPOINT_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        if let Err(e) = sqlx::query("PRAGMA wal_checkpoint(PASSIVE)")
            .execute(&pool)
            .await
        {
            tracing::warn!(error = %e, "background WAL checkpoint failed");
        }
    }
}

impl SqliteStore {
    /// Opens (creating if missing) and migrates the database at `url`
    /// (`sqlite://PATH`, `sqlite:PATH` or `sqlite::memory:`).
    pub async fn open(url: &str) -> Result<Self> {
        let memory = url.contains(":memory:");
        let opts = SqliteConnectOptions::from_str(url)
            .map_err(|e| StoreError::Invalid(format!("bad sqlite url: {e}")))?
            .create_if_missing(true)
            .foreign_keys(true)
            .busy_timeout(Duration::from_secs(10))
            .journal_mode(if memory {
                SqliteJournalMode::Memory
            } else {
                SqliteJournalMode::Wal
            })
            // WAL + NORMAL: a committed transaction survives a process crash (SIGKILL);
            // only an OS crash or power loss can drop the last commits.
            .synchronous(SqliteSynchronous::Normal)
            .pragma("wal_autocheckpoint", WAL_AUTOCHECKPOINT_PAGES);
        let pool = SqlitePoolOptions::new()
            // An in-memory database exists per connection: keep exactly one.
            .max_connections(if memory { 1 } else { 8 })
            .acquire_timeout(Duration::from_secs(10))
            // The liveness ping is a round trip to the connection's thread on every
            // acquire; a local file has no peer that can hang up, and a failed statement
            // reports its own error.
            .test_before_acquire(false)
            .connect_with(opts.clone())
            .await?;
        MIGRATOR.run(&pool).await?;
        let checkpointer = (!memory).then(|| {
            tokio_util::task::AbortOnDropHandle::new(tokio::spawn(checkpoint_loop(pool.clone())))
        });
        Ok(Self {
            pool,
            // An in-memory database is per connection: appends share the pool's one.
            appender: (!memory).then(|| (tokio::sync::Mutex::new(Appender::default()), opts)),
            _checkpointer: checkpointer,
        })
    }

    pub fn pool(&self) -> &SqlitePool {
        &self.pool
    }
}

fn json_map(s: &str) -> Result<Map<String, Value>> {
    serde_json::from_str(s).map_err(|e| StoreError::Corrupt(format!("attributes: {e}")))
}

fn tenant_from_row(r: &SqliteRow) -> Result<Tenant> {
    Ok(Tenant {
        id: r.try_get("id")?,
        name: r.try_get("name")?,
        plan: r.try_get("plan")?,
        attributes: json_map(&r.try_get::<String, _>("attributes")?)?,
        created_at: r.try_get("created_at")?,
        updated_at: r.try_get("updated_at")?,
    })
}

fn key_from_row(r: &SqliteRow) -> Result<ApiKey> {
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

fn policy_from_row(r: &SqliteRow) -> Result<PolicyVersion> {
    Ok(PolicyVersion {
        scope: r.try_get("scope")?,
        hash: r.try_get("hash")?,
        source: r.try_get("source")?,
        created_at: r.try_get("created_at")?,
        created_by: r.try_get("created_by")?,
        active: r.try_get::<i64, _>("active")? != 0,
    })
}

fn receipt_from_row(r: &SqliteRow) -> Result<Receipt> {
    let body: String = r.try_get("body")?;
    serde_json::from_str(&body).map_err(|e| StoreError::Corrupt(format!("receipt body: {e}")))
}

const KEY_COLS: &str = "id, tenant_id, name, role, user_id, scopes, secret_hash, created_at, \
                        expires_at, revoked_at, rotated_at, last_used_at, prev_secret_hash, \
                        prev_valid_until, allowed_networks";

/// Validates a tenant id: a slug, so it is safe in URLs, logs and key prefixes.
pub(crate) fn check_tenant_id(id: &str) -> Result<()> {
    let ok = !id.is_empty()
        && id.len() <= 64
        && id
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
        && id.as_bytes()[0].is_ascii_alphanumeric();
    if ok {
        Ok(())
    } else {
        Err(StoreError::Invalid(
            "tenant id must be 1-64 characters of a-z, 0-9, '-' or '_', starting with a letter or digit"
                .into(),
        ))
    }
}

/// Opens the write transaction and reads the chain heads of the batch's tenants (a JSON
/// array of tenant ids) in one round trip to sqlx's SQLite thread. `BEGIN IMMEDIATE` takes
/// the write lock up front, so two processes on one file serialise here instead of
/// failing at commit with SQLITE_BUSY.
const APPEND_BEGIN: &str = "BEGIN IMMEDIATE; \
     SELECT tenant_id, seq, hash FROM chain_heads \
     WHERE tenant_id IN (SELECT value FROM json_each(?))";

/// Inserts the sealed receipts (a JSON array of rows), advances the heads (a JSON array
/// of `[tenant, seq, hash]`) and commits, in a second and last round trip. Rows travel
/// as one JSON parameter so the statement text is the same for every batch size (one
/// prepared statement per connection, whatever the batch).
const APPEND_WRITE: &str = "INSERT INTO receipts \
     (tenant_id, seq, id, created_at, kind, decision, key_id, user_id, model, hash, body) \
     SELECT value->>0, value->>1, value->>2, value->>3, value->>4, value->>5, value->>6, \
            value->>7, value->>8, value->>9, value->>10 \
     FROM json_each(?); \
     INSERT INTO chain_heads (tenant_id, seq, hash) \
     SELECT value->>0, value->>1, value->>2 FROM json_each(?) WHERE true \
     ON CONFLICT(tenant_id) DO UPDATE SET seq = excluded.seq, hash = excluded.hash; \
     COMMIT";

/// The guard of the one-round-trip append: true when every head of the batch's tenants
/// (a JSON array of `[tenant, seq, hash]`) is still what this store last committed.
const HEADS_UNCHANGED: &str = "NOT EXISTS (SELECT 1 FROM json_each(?) e \
     LEFT JOIN chain_heads h ON h.tenant_id = e.value->>0 \
     WHERE h.seq IS NOT e.value->>1 OR h.hash IS NOT e.value->>2)";

/// The whole append in one round trip, for a batch whose tenants' heads this store
/// committed last: the receipts were sealed against those heads, and both inserts are
/// guarded by [`HEADS_UNCHANGED`] inside the write transaction. If another process
/// appended in between, nothing is inserted (no head row returned; SQLite's change count
/// cannot tell, as it carries over across statements) and the caller reads the heads and
/// seals again. Parameters: rows, expected heads, new heads, expected heads.
fn append_fast_sql() -> String {
    format!(
        "BEGIN IMMEDIATE; \
         INSERT INTO receipts \
         (tenant_id, seq, id, created_at, kind, decision, key_id, user_id, model, hash, body) \
         SELECT value->>0, value->>1, value->>2, value->>3, value->>4, value->>5, value->>6, \
                value->>7, value->>8, value->>9, value->>10 \
         FROM json_each(?) WHERE {HEADS_UNCHANGED}; \
         INSERT INTO chain_heads (tenant_id, seq, hash) \
         SELECT value->>0, value->>1, value->>2 FROM json_each(?) WHERE {HEADS_UNCHANGED} \
         ON CONFLICT(tenant_id) DO UPDATE SET seq = excluded.seq, hash = excluded.hash \
         RETURNING seq; \
         COMMIT"
    )
}

static APPEND_FAST: std::sync::LazyLock<String> = std::sync::LazyLock::new(append_fast_sql);

/// Chain heads as this store's append connection last committed them: a hint for the
/// one-round-trip append, always checked inside the transaction, never trusted.
/// Bounded: cleared when it grows past this many tenants.
const HEAD_CACHE_MAX: usize = 100_000;

/// The store's own append connection and what it knows of the heads.
#[derive(Default)]
struct Appender {
    conn: Option<SqliteConnection>,
    heads: HashMap<String, ChainHead>,
}

/// A connection inside a transaction that sqlx does not know about (opened by
/// `APPEND_BEGIN` or the one-round-trip append). If it is dropped before the transaction
/// ended (an error whose rollback failed, or the future cancelled mid-append), the
/// connection is closed instead of reused, and SQLite rolls back.
struct AppendConn<'a> {
    slot: AppendSlot<'a>,
    open: bool,
}

enum AppendSlot<'a> {
    Pooled(sqlx::pool::PoolConnection<Sqlite>),
    /// The store's own append connection; `conn` always `Some` while held here.
    Own(tokio::sync::MutexGuard<'a, Appender>),
}

impl AppendConn<'_> {
    fn conn(&mut self) -> Result<&mut SqliteConnection> {
        match &mut self.slot {
            AppendSlot::Pooled(c) => Ok(&mut **c),
            AppendSlot::Own(g) => g
                .conn
                .as_mut()
                .ok_or_else(|| StoreError::Invalid("append connection missing".into())),
        }
    }

    /// The heads of every tenant of the batch as this store last committed them, if it
    /// knows them all (its own connection only).
    fn known_heads(&self, receipts: &[Receipt]) -> Option<HashMap<String, ChainHead>> {
        let AppendSlot::Own(g) = &self.slot else {
            return None;
        };
        let mut out = HashMap::new();
        for r in receipts {
            if !out.contains_key(&r.tenant_id) {
                out.insert(r.tenant_id.clone(), g.heads.get(&r.tenant_id)?.clone());
            }
        }
        Some(out)
    }

    fn remember(&mut self, heads: HashMap<String, ChainHead>) {
        if let AppendSlot::Own(g) = &mut self.slot {
            if g.heads.len() + heads.len() > HEAD_CACHE_MAX {
                g.heads.clear();
            }
            g.heads.extend(heads);
        }
    }

    fn forget_heads(&mut self) {
        if let AppendSlot::Own(g) = &mut self.slot {
            g.heads.clear();
        }
    }

    /// Closes the connection instead of reusing it.
    fn discard(&mut self) {
        match &mut self.slot {
            AppendSlot::Pooled(c) => c.close_on_drop(),
            AppendSlot::Own(g) => {
                g.conn = None;
                g.heads.clear();
            }
        }
    }
}

impl Drop for AppendConn<'_> {
    fn drop(&mut self) {
        if self.open {
            self.discard();
        }
    }
}

fn encode_err(e: serde_json::Error) -> StoreError {
    StoreError::Invalid(format!("receipt encoding: {e}"))
}

/// Seals and appends one batch: in one round trip when this store committed the last
/// receipt of each of the batch's tenants (the usual case: one gateway process per file),
/// else in two (read the heads, then write). Each statement is a hand-off to sqlx's SQLite
/// thread and back, which dominated group commit.
async fn append_batch(c: &mut AppendConn<'_>, receipts: Vec<Receipt>) -> Result<Vec<Receipt>> {
    let mut receipts = receipts;
    if let Some(known) = c.known_heads(&receipts) {
        let mut heads = known.clone();
        let sealed = seal_batch(&mut receipts, &mut heads)?;
        let expected = heads_json(&known)?;
        c.open = true;
        let done = sqlx::query(sqlx::AssertSqlSafe(APPEND_FAST.as_str()))
            .bind(sealed)
            .bind(expected.as_str())
            .bind(heads_json(&heads)?)
            .bind(expected.as_str())
            .fetch_all(c.conn()?)
            .await?;
        c.open = false;
        if done.len() == heads.len() {
            c.remember(heads);
            return Ok(receipts);
        }
        // Another process appended since: read the heads and seal again.
        c.forget_heads();
    }
    let mut tenants: Vec<&str> = Vec::new();
    for r in &receipts {
        if !tenants.contains(&r.tenant_id.as_str()) {
            tenants.push(&r.tenant_id);
        }
    }
    let tenants = serde_json::to_string(&tenants).map_err(encode_err)?;
    c.open = true;
    let rows = sqlx::query(APPEND_BEGIN)
        .bind(tenants)
        .fetch_all(c.conn()?)
        .await?;
    let mut heads: HashMap<String, ChainHead> = HashMap::with_capacity(rows.len());
    for row in rows {
        heads.insert(
            row.try_get("tenant_id")?,
            ChainHead {
                seq: seq_from_db(row.try_get("seq")?)?,
                hash: row.try_get("hash")?,
            },
        );
    }
    let sealed = seal_batch(&mut receipts, &mut heads)?;
    let heads_param = heads_json(&heads)?;
    sqlx::query(APPEND_WRITE)
        .bind(sealed)
        .bind(heads_param)
        .execute(c.conn()?)
        .await?;
    c.open = false;
    c.remember(heads);
    Ok(receipts)
}

/// Seals the receipts in order onto `heads` (advanced in place; a tenant without a head
/// starts at genesis) and encodes their rows as one JSON parameter.
fn seal_batch(receipts: &mut [Receipt], heads: &mut HashMap<String, ChainHead>) -> Result<String> {
    let mut bodies = Vec::with_capacity(receipts.len());
    for receipt in receipts.iter_mut() {
        let head = heads
            .entry(receipt.tenant_id.clone())
            .or_insert_with(ChainHead::genesis);
        *head = receipt
            .seal_into_chain(head)
            .map_err(|e| StoreError::Invalid(format!("receipt cannot be sealed: {e}")))?;
        bodies.push(serde_json::to_string(&*receipt).map_err(encode_err)?);
    }
    // Serialised straight from borrowed fields (tuples encode as JSON arrays).
    let rows: Vec<_> = receipts
        .iter()
        .zip(&bodies)
        .map(|(r, body)| {
            (
                r.tenant_id.as_str(),
                r.seq as i64,
                r.id.as_str(),
                crate::model::rfc3339_ms::parse(&r.created_at).unwrap_or(0),
                r.kind.as_str(),
                r.decision.as_str(),
                r.key_id.as_deref(),
                r.user_id.as_deref(),
                r.model.as_deref(),
                r.hash.as_str(),
                body.as_str(),
            )
        })
        .collect();
    serde_json::to_string(&rows).map_err(encode_err)
}

/// Heads as a JSON array of `[tenant, seq, hash]`.
fn heads_json(heads: &HashMap<String, ChainHead>) -> Result<String> {
    let heads: Vec<(&str, i64, &str)> = heads
        .iter()
        .map(|(t, h)| (t.as_str(), h.seq as i64, h.hash.as_str()))
        .collect();
    serde_json::to_string(&heads).map_err(encode_err)
}

#[async_trait]
impl Store for SqliteStore {
    async fn ping(&self) -> Result<()> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    async fn migrations_applied(&self) -> Result<bool> {
        let applied: Vec<i64> =
            sqlx::query_scalar("SELECT version FROM _sqlx_migrations WHERE success = 1")
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
        if t.name.trim().is_empty() || t.name.len() > 200 {
            return Err(StoreError::Invalid("name must be 1-200 characters".into()));
        }
        let now = crate::now_ms();
        let attrs = Value::Object(t.attributes.clone()).to_string();
        sqlx::query(
            "INSERT INTO tenants (id, name, plan, attributes, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?)",
        )
        .bind(&id)
        .bind(&t.name)
        .bind(&t.plan)
        .bind(attrs)
        .bind(now)
        .bind(now)
        .execute(&self.pool)
        .await
        .map_err(|e| match StoreError::from(e) {
            StoreError::Conflict(_) => StoreError::Conflict(format!("tenant {id} already exists")),
            other => other,
        })?;
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
        let row = sqlx::query("SELECT * FROM tenants WHERE id = ?")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(tenant_from_row).transpose()
    }

    async fn list_tenants(&self, after: Option<&str>, limit: u32) -> Result<Vec<Tenant>> {
        let rows = sqlx::query("SELECT * FROM tenants WHERE id > ? ORDER BY id LIMIT ?")
            .bind(after.unwrap_or(""))
            .bind(i64::from(limit))
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(tenant_from_row).collect()
    }

    async fn update_tenant(&self, id: &str, patch: TenantPatch) -> Result<Option<Tenant>> {
        let mut tx = self.pool.begin().await?;
        let Some(row) = sqlx::query("SELECT * FROM tenants WHERE id = ?")
            .bind(id)
            .fetch_optional(&mut *tx)
            .await?
        else {
            return Ok(None);
        };
        let mut t = tenant_from_row(&row)?;
        if let Some(name) = patch.name {
            if name.trim().is_empty() || name.len() > 200 {
                return Err(StoreError::Invalid("name must be 1-200 characters".into()));
            }
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
            "UPDATE tenants SET name = ?, plan = ?, attributes = ?, updated_at = ? WHERE id = ?",
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
        let mut tx = self.pool.begin().await?;
        sqlx::query("DELETE FROM api_keys WHERE tenant_id = ?")
            .bind(id)
            .execute(&mut *tx)
            .await?;
        sqlx::query("DELETE FROM active_policies WHERE scope = ?")
            .bind(id)
            .execute(&mut *tx)
            .await?;
        sqlx::query("DELETE FROM tenant_keys WHERE tenant_id = ?")
            .bind(id)
            .execute(&mut *tx)
            .await?;
        sqlx::query("DELETE FROM tenant_upstream_keys WHERE tenant_id = ?")
            .bind(id)
            .execute(&mut *tx)
            .await?;
        let n = sqlx::query("DELETE FROM tenants WHERE id = ?")
            .bind(id)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        tx.commit().await?;
        Ok(n > 0)
    }

    async fn tenant_data_key(&self, tenant_id: &str) -> Result<Option<String>> {
        Ok(
            sqlx::query_scalar("SELECT wrapped_key FROM tenant_keys WHERE tenant_id = ?")
                .bind(tenant_id)
                .fetch_optional(&self.pool)
                .await?,
        )
    }

    async fn put_tenant_data_key(&self, tenant_id: &str, wrapped: &str) -> Result<String> {
        sqlx::query(
            "INSERT INTO tenant_keys (tenant_id, wrapped_key, created_at) VALUES (?, ?, ?) \
             ON CONFLICT(tenant_id) DO NOTHING",
        )
        .bind(tenant_id)
        .bind(wrapped)
        .bind(crate::now_ms())
        .execute(&self.pool)
        .await?;
        self.tenant_data_key(tenant_id)
            .await?
            .ok_or_else(|| StoreError::Corrupt("tenant data key missing after insert".into()))
    }

    async fn create_key(&self, k: NewApiKey) -> Result<ApiKey> {
        let now = crate::now_ms();
        let scopes = serde_json::to_string(&k.scopes)
            .map_err(|e| StoreError::Invalid(format!("scopes: {e}")))?;
        let networks = serde_json::to_string(&k.allowed_networks)
            .map_err(|e| StoreError::Invalid(format!("allowed_networks: {e}")))?;
        sqlx::query(
            "INSERT INTO api_keys (id, tenant_id, name, role, user_id, scopes, secret_hash, created_at, expires_at, allowed_networks) \
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
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
        .execute(&self.pool)
        .await?;
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
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {KEY_COLS} FROM api_keys WHERE id = ?"
        )))
        .bind(id)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(key_from_row).transpose()
    }

    async fn list_keys(&self, tenant_id: &str) -> Result<Vec<ApiKey>> {
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {KEY_COLS} FROM api_keys WHERE tenant_id = ? ORDER BY created_at, id"
        )))
        .bind(tenant_id)
        .fetch_all(&self.pool)
        .await?;
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
        let n = sqlx::query(
            "UPDATE api_keys SET \
               prev_secret_hash = CASE WHEN ? IS NULL THEN NULL ELSE secret_hash END, \
               prev_valid_until = ?, secret_hash = ?, rotated_at = ? \
             WHERE tenant_id = ? AND id = ? AND revoked_at IS NULL",
        )
        .bind(prev_valid_until)
        .bind(prev_valid_until)
        .bind(new_hash)
        .bind(crate::now_ms())
        .bind(tenant_id)
        .bind(id)
        .execute(&self.pool)
        .await?
        .rows_affected();
        if n == 0 {
            return Ok(None);
        }
        self.get_key(id).await
    }

    async fn revoke_key(&self, tenant_id: &str, id: &str) -> Result<Option<ApiKey>> {
        sqlx::query(
            "UPDATE api_keys SET revoked_at = ? WHERE tenant_id = ? AND id = ? AND revoked_at IS NULL",
        )
        .bind(crate::now_ms())
        .bind(tenant_id)
        .bind(id)
        .execute(&self.pool)
        .await?;
        let key = self.get_key(id).await?;
        Ok(key.filter(|k| k.tenant_id == tenant_id))
    }

    async fn touch_key(&self, id: &str, at_ms: i64) -> Result<()> {
        sqlx::query("UPDATE api_keys SET last_used_at = ? WHERE id = ?")
            .bind(at_ms)
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn put_policy(&self, scope: &str, hash: &str, source: &str, by: &str) -> Result<bool> {
        let n = sqlx::query(
            "INSERT INTO policy_versions (scope, hash, source, created_at, created_by) VALUES (?, ?, ?, ?, ?) \
             ON CONFLICT(scope, hash) DO NOTHING",
        )
        .bind(scope)
        .bind(hash)
        .bind(source)
        .bind(crate::now_ms())
        .bind(by)
        .execute(&self.pool)
        .await?
        .rows_affected();
        Ok(n > 0)
    }

    async fn list_policies(&self, scope: &str) -> Result<Vec<PolicyVersion>> {
        let rows = sqlx::query(
            "SELECT v.scope, v.hash, '' AS source, v.created_at, v.created_by, \
                    (a.hash IS NOT NULL) AS active \
             FROM policy_versions v LEFT JOIN active_policies a ON a.scope = v.scope AND a.hash = v.hash \
             WHERE v.scope = ? ORDER BY v.created_at DESC, v.hash",
        )
        .bind(scope)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(policy_from_row).collect()
    }

    async fn get_policy(&self, scope: &str, hash: &str) -> Result<Option<PolicyVersion>> {
        let row = sqlx::query(
            "SELECT v.scope, v.hash, v.source, v.created_at, v.created_by, \
                    (a.hash IS NOT NULL) AS active \
             FROM policy_versions v LEFT JOIN active_policies a ON a.scope = v.scope AND a.hash = v.hash \
             WHERE v.scope = ? AND v.hash = ?",
        )
        .bind(scope)
        .bind(hash)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(policy_from_row).transpose()
    }

    async fn activate_policy(&self, scope: &str, hash: &str) -> Result<Option<String>> {
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        let exists: Option<String> =
            sqlx::query_scalar("SELECT hash FROM policy_versions WHERE scope = ? AND hash = ?")
                .bind(scope)
                .bind(hash)
                .fetch_optional(&mut *tx)
                .await?;
        if exists.is_none() {
            return Err(StoreError::NotFound);
        }
        let old: Option<String> =
            sqlx::query_scalar("SELECT hash FROM active_policies WHERE scope = ?")
                .bind(scope)
                .fetch_optional(&mut *tx)
                .await?;
        sqlx::query(
            "INSERT INTO active_policies (scope, hash, activated_at) VALUES (?, ?, ?) \
             ON CONFLICT(scope) DO UPDATE SET hash = excluded.hash, activated_at = excluded.activated_at",
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
        let row = sqlx::query(
            "SELECT v.scope, v.hash, v.source, v.created_at, v.created_by, 1 AS active \
             FROM active_policies a JOIN policy_versions v ON a.scope = v.scope AND a.hash = v.hash \
             WHERE a.scope = ?",
        )
        .bind(scope)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(policy_from_row).transpose()
    }

    async fn append_receipts(&self, receipts: Vec<Receipt>) -> Result<Vec<Receipt>> {
        if receipts.is_empty() {
            return Ok(receipts);
        }
        let slot = match &self.appender {
            Some((own, opts)) => {
                let mut g = own.lock().await;
                if g.conn.is_none() {
                    g.heads.clear();
                    g.conn = Some(opts.connect().await?);
                }
                AppendSlot::Own(g)
            }
            None => AppendSlot::Pooled(self.pool.acquire().await?),
        };
        let mut c = AppendConn { slot, open: false };
        match append_batch(&mut c, receipts).await {
            Ok(out) => Ok(out),
            Err(e) => {
                if matches!(c.slot, AppendSlot::Own(_)) {
                    // A fresh connection for the next batch, whatever went wrong with this
                    // one; closing it rolls back an open transaction.
                    c.discard();
                } else if c.open
                    && let Ok(conn) = c.conn()
                    && sqlx::query("ROLLBACK").execute(conn).await.is_ok()
                {
                    c.open = false;
                }
                Err(e)
            }
        }
    }

    async fn get_receipt(&self, tenant_id: &str, id: &str) -> Result<Option<Receipt>> {
        let row = sqlx::query("SELECT body FROM receipts WHERE tenant_id = ? AND id = ?")
            .bind(tenant_id)
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(receipt_from_row).transpose()
    }

    async fn list_receipts(
        &self,
        tenant_id: Option<&str>,
        q: &ReceiptQuery,
    ) -> Result<Vec<Receipt>> {
        let mut sql = String::from("SELECT body FROM receipts WHERE 1=1");
        let mut qb: Vec<Bind> = Vec::new();
        if let Some(t) = tenant_id {
            sql.push_str(" AND tenant_id = ?");
            qb.push(Bind::S(t.to_string()));
        }
        if let Some((ms, id)) = &q.before {
            sql.push_str(" AND (created_at < ? OR (created_at = ? AND id < ?))");
            qb.push(Bind::I(*ms));
            qb.push(Bind::I(*ms));
            qb.push(Bind::S(id.clone()));
        }
        if let Some(v) = q.since_ms {
            sql.push_str(" AND created_at >= ?");
            qb.push(Bind::I(v));
        }
        if let Some(v) = q.until_ms {
            sql.push_str(" AND created_at < ?");
            qb.push(Bind::I(v));
        }
        for (col, val) in [
            ("kind", &q.kind),
            ("decision", &q.decision),
            ("user_id", &q.user_id),
            ("key_id", &q.key_id),
            ("model", &q.model),
        ] {
            if let Some(v) = val {
                sql.push_str(&format!(" AND {col} = ?"));
                qb.push(Bind::S(v.clone()));
            }
        }
        sql.push_str(" ORDER BY created_at DESC, id DESC LIMIT ?");
        qb.push(Bind::I(i64::from(q.limit.clamp(1, 1000))));
        let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
        for b in qb {
            query = match b {
                Bind::S(s) => query.bind(s),
                Bind::I(i) => query.bind(i),
            };
        }
        let rows = query.fetch_all(&self.pool).await?;
        rows.iter().map(receipt_from_row).collect()
    }

    async fn chain(&self, tenant_id: &str, from_seq: u64, limit: u32) -> Result<Vec<Receipt>> {
        let rows = sqlx::query(
            "SELECT body FROM receipts WHERE tenant_id = ? AND seq >= ? ORDER BY seq LIMIT ?",
        )
        .bind(tenant_id)
        .bind(from_seq as i64)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(receipt_from_row).collect()
    }

    async fn chain_tenants(&self) -> Result<Vec<String>> {
        Ok(
            sqlx::query_scalar("SELECT tenant_id FROM chain_heads ORDER BY tenant_id")
                .fetch_all(&self.pool)
                .await?,
        )
    }

    async fn chain_head(&self, tenant_id: &str) -> Result<Option<ChainHead>> {
        let row = sqlx::query("SELECT seq, hash FROM chain_heads WHERE tenant_id = ?")
            .bind(tenant_id)
            .fetch_optional(&self.pool)
            .await?;
        row.map(|r| {
            Ok(ChainHead {
                seq: seq_from_db(r.try_get("seq")?)?,
                hash: r.try_get("hash")?,
            })
        })
        .transpose()
    }

    async fn uncheckpointed_heads(&self, limit: u32) -> Result<Vec<(String, ChainHead)>> {
        let rows = sqlx::query(
            "SELECT h.tenant_id, h.seq, h.hash FROM chain_heads h \
             WHERE h.seq > COALESCE((SELECT MAX(c.seq) FROM checkpoints c WHERE c.tenant_id = h.tenant_id), 0) \
             ORDER BY h.tenant_id LIMIT ?",
        )
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok((
                    r.try_get("tenant_id")?,
                    ChainHead {
                        seq: seq_from_db(r.try_get("seq")?)?,
                        hash: r.try_get("hash")?,
                    },
                ))
            })
            .collect()
    }

    async fn put_checkpoint(&self, checkpoint: &SignedCheckpoint) -> Result<bool> {
        let c = &checkpoint.checkpoint;
        let body = serde_json::to_string(checkpoint)
            .map_err(|e| StoreError::Invalid(format!("checkpoint encoding: {e}")))?;
        let created = crate::model::rfc3339_ms::parse(&c.created_at).unwrap_or(0);
        let n = sqlx::query(
            "INSERT INTO checkpoints (tenant_id, seq, key_id, head_hash, created_at, body) \
             VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT(tenant_id, seq, key_id) DO NOTHING",
        )
        .bind(&c.tenant_id)
        .bind(seq_to_db(c.seq)?)
        .bind(&c.key_id)
        .bind(&c.head_hash)
        .bind(created)
        .bind(body)
        .execute(&self.pool)
        .await?
        .rows_affected();
        Ok(n > 0)
    }

    async fn list_checkpoints(
        &self,
        tenant_id: &str,
        from_seq: u64,
        limit: u32,
    ) -> Result<Vec<SignedCheckpoint>> {
        let rows = sqlx::query(
            "SELECT body FROM checkpoints WHERE tenant_id = ? AND seq >= ? \
             ORDER BY seq, key_id LIMIT ?",
        )
        .bind(tenant_id)
        .bind(seq_to_db(from_seq)?)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(checkpoint_from_row).collect()
    }

    async fn latest_checkpoint(&self, tenant_id: &str) -> Result<Option<SignedCheckpoint>> {
        let row = sqlx::query(
            "SELECT body FROM checkpoints WHERE tenant_id = ? \
             ORDER BY seq DESC, created_at DESC LIMIT 1",
        )
        .bind(tenant_id)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(checkpoint_from_row).transpose()
    }

    async fn chain_anchor(&self, tenant_id: &str) -> Result<Option<Anchor>> {
        let row = sqlx::query("SELECT seq, head_hash FROM chain_anchors WHERE tenant_id = ?")
            .bind(tenant_id)
            .fetch_optional(&self.pool)
            .await?;
        row.map(|r| {
            Ok(Anchor {
                tenant_id: tenant_id.to_string(),
                seq: seq_from_db(r.try_get("seq")?)?,
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
        let row = sqlx::query(
            "SELECT MIN(seq) AS lo, MAX(seq) AS hi FROM receipts \
             WHERE tenant_id = ? AND created_at >= ? AND created_at < ?",
        )
        .bind(tenant_id)
        .bind(since_ms.unwrap_or(i64::MIN))
        .bind(until_ms.unwrap_or(i64::MAX))
        .fetch_one(&self.pool)
        .await?;
        let lo: Option<i64> = row.try_get("lo")?;
        let hi: Option<i64> = row.try_get("hi")?;
        match (lo, hi) {
            (Some(lo), Some(hi)) => Ok(Some((seq_from_db(lo)?, seq_from_db(hi)?))),
            _ => Ok(None),
        }
    }

    async fn purge_receipts(&self, anchor: &Anchor) -> Result<u64> {
        let seq = seq_to_db(anchor.seq)?;
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        let current: Option<i64> =
            sqlx::query_scalar("SELECT seq FROM chain_anchors WHERE tenant_id = ?")
                .bind(&anchor.tenant_id)
                .fetch_optional(&mut *tx)
                .await?;
        if current.is_some_and(|c| c >= seq) {
            return Ok(0);
        }
        let hash: Option<String> =
            sqlx::query_scalar("SELECT hash FROM receipts WHERE tenant_id = ? AND seq = ?")
                .bind(&anchor.tenant_id)
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
        let deleted = sqlx::query("DELETE FROM receipts WHERE tenant_id = ? AND seq <= ?")
            .bind(&anchor.tenant_id)
            .bind(seq)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        sqlx::query("DELETE FROM checkpoints WHERE tenant_id = ? AND seq < ?")
            .bind(&anchor.tenant_id)
            .bind(seq)
            .execute(&mut *tx)
            .await?;
        sqlx::query(
            "INSERT INTO chain_anchors (tenant_id, seq, head_hash, created_at) VALUES (?, ?, ?, ?) \
             ON CONFLICT(tenant_id) DO UPDATE SET seq = excluded.seq, head_hash = excluded.head_hash, \
             created_at = excluded.created_at",
        )
        .bind(&anchor.tenant_id)
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

fn seq_to_db(seq: u64) -> Result<i64> {
    i64::try_from(seq).map_err(|_| StoreError::Invalid(format!("seq {seq} out of range")))
}

fn seq_from_db(seq: i64) -> Result<u64> {
    u64::try_from(seq).map_err(|_| StoreError::Corrupt(format!("negative seq {seq}")))
}

fn checkpoint_from_row(r: &SqliteRow) -> Result<SignedCheckpoint> {
    let body: String = r.try_get("body")?;
    serde_json::from_str(&body).map_err(|e| StoreError::Corrupt(format!("checkpoint body: {e}")))
}

enum Bind {
    S(String),
    I(i64),
}
