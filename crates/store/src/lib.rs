//! Palisade's storage shell: one [`Store`] trait, implemented on SQLite (the embedded
//! default) and PostgreSQL. Everything above this crate talks to the trait only, so the
//! backend is a deployment choice, not a code path.
#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used, clippy::panic))]

mod alerts;
mod approvals;
mod capture;
mod model;
mod postgres;
mod sqlite;
mod upstream_keys;

pub use alerts::{AlertQuery, AlertRecord};
pub use approvals::ApprovalRecord;
pub use capture::CaptureRecord;
pub use model::*;
pub use postgres::PostgresStore;
pub use sqlite::SqliteStore;
pub use upstream_keys::UpstreamKeyRecord;

use async_trait::async_trait;
use palisade_audit::{Anchor, ChainHead, Receipt, SignedCheckpoint};
use std::sync::Arc;

/// Errors a store can return. Callers map `Unavailable` to a fail-closed 503 and the rest
/// to client errors; none of them carries row contents.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("not found")]
    NotFound,
    #[error("conflict: {0}")]
    Conflict(String),
    #[error("invalid: {0}")]
    Invalid(String),
    #[error("store unavailable: {0}")]
    Unavailable(String),
    #[error("store data corrupt: {0}")]
    Corrupt(String),
}

impl From<sqlx::Error> for StoreError {
    fn from(e: sqlx::Error) -> Self {
        match &e {
            sqlx::Error::RowNotFound => StoreError::NotFound,
            sqlx::Error::Database(db) if db.is_unique_violation() => {
                StoreError::Conflict("already exists".into())
            }
            sqlx::Error::Database(db) if db.is_foreign_key_violation() => StoreError::NotFound,
            sqlx::Error::ColumnDecode { .. } | sqlx::Error::Decode(_) => {
                StoreError::Corrupt(e.to_string())
            }
            _ => StoreError::Unavailable(e.to_string()),
        }
    }
}

impl From<sqlx::migrate::MigrateError> for StoreError {
    fn from(e: sqlx::migrate::MigrateError) -> Self {
        StoreError::Unavailable(format!("migration failed: {e}"))
    }
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// A change another writer made. `tenant: None` means "anything may have changed" (sent
/// after the change feed reconnects, since notifications in the gap are lost).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    /// `tenants`, `api_keys` or `active_policies`.
    pub table: String,
    /// Tenant id, or `@platform` for the platform policy.
    pub tenant: Option<String>,
}

/// The storage contract. Every tenant-scoped read takes the tenant id explicitly, so a
/// caller cannot ask for another tenant's rows by id alone.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Store reachable (a trivial query succeeds).
    async fn ping(&self) -> Result<()>;
    /// All migrations known to this binary are applied.
    async fn migrations_applied(&self) -> Result<bool>;
    /// Changes made by any writer (another replica, the CLI) to what gateways cache:
    /// tenants, keys, active policies. `None` when the backend cannot push them (SQLite:
    /// caches then rely on their TTL alone).
    async fn watch_changes(&self) -> Result<Option<tokio::sync::mpsc::Receiver<Change>>> {
        Ok(None)
    }

    async fn create_tenant(&self, t: NewTenant) -> Result<Tenant>;
    async fn get_tenant(&self, id: &str) -> Result<Option<Tenant>>;
    async fn list_tenants(&self, after: Option<&str>, limit: u32) -> Result<Vec<Tenant>>;
    async fn update_tenant(&self, id: &str, patch: TenantPatch) -> Result<Option<Tenant>>;
    /// Deletes the tenant, its keys and its data key (crypto-shredding its sealed
    /// payloads). Receipts stay: the chain must still verify.
    async fn delete_tenant(&self, id: &str) -> Result<bool>;

    /// The tenant's wrapped data key, if one was stored.
    async fn tenant_data_key(&self, tenant_id: &str) -> Result<Option<String>>;
    /// Stores the wrapped data key unless one exists; returns the one in force.
    async fn put_tenant_data_key(&self, tenant_id: &str, wrapped: &str) -> Result<String>;

    async fn create_key(&self, k: NewApiKey) -> Result<ApiKey>;
    /// Key lookup by public id, for authentication (any tenant).
    async fn get_key(&self, id: &str) -> Result<Option<ApiKey>>;
    async fn list_keys(&self, tenant_id: &str) -> Result<Vec<ApiKey>>;
    /// Replaces the secret at once (no grace period).
    async fn rotate_key(
        &self,
        tenant_id: &str,
        id: &str,
        new_hash: &str,
    ) -> Result<Option<ApiKey>> {
        self.rotate_key_with_grace(tenant_id, id, new_hash, None)
            .await
    }
    /// Replaces the secret; with `prev_valid_until` the previous secret keeps working
    /// until then (both secrets are valid during the grace period).
    async fn rotate_key_with_grace(
        &self,
        tenant_id: &str,
        id: &str,
        new_hash: &str,
        prev_valid_until: Option<i64>,
    ) -> Result<Option<ApiKey>>;
    async fn revoke_key(&self, tenant_id: &str, id: &str) -> Result<Option<ApiKey>>;
    async fn touch_key(&self, id: &str, at_ms: i64) -> Result<()>;

    /// Stores a policy version (idempotent: the same source is the same version).
    /// Returns whether it was new.
    async fn put_policy(&self, scope: &str, hash: &str, source: &str, by: &str) -> Result<bool>;
    /// Versions of a scope, newest first, without their sources.
    async fn list_policies(&self, scope: &str) -> Result<Vec<PolicyVersion>>;
    async fn get_policy(&self, scope: &str, hash: &str) -> Result<Option<PolicyVersion>>;
    /// Makes `hash` the active version of `scope`; returns the previously active hash.
    /// `NotFound` if the version does not exist in that scope.
    async fn activate_policy(&self, scope: &str, hash: &str) -> Result<Option<String>>;
    /// The active version of a scope, with its source.
    async fn active_policy(&self, scope: &str) -> Result<Option<PolicyVersion>>;

    /// Appends receipts atomically: each gets the next sequence number of its tenant's
    /// chain and its predecessor's hash inside one transaction, so concurrent writers
    /// never fork a chain. Returns the sealed receipts in input order.
    async fn append_receipts(&self, receipts: Vec<Receipt>) -> Result<Vec<Receipt>>;
    async fn get_receipt(&self, tenant_id: &str, id: &str) -> Result<Option<Receipt>>;
    /// Newest first. `tenant_id: None` is the platform-admin view across tenants.
    async fn list_receipts(
        &self,
        tenant_id: Option<&str>,
        q: &ReceiptQuery,
    ) -> Result<Vec<Receipt>>;
    /// A tenant's chain in sequence order, from `from_seq` (inclusive).
    async fn chain(&self, tenant_id: &str, from_seq: u64, limit: u32) -> Result<Vec<Receipt>>;
    /// Tenants that have receipts (including deleted tenants).
    async fn chain_tenants(&self) -> Result<Vec<String>>;

    /// The tenant's chain head (seq and hash of its newest receipt, also after a purge).
    async fn chain_head(&self, tenant_id: &str) -> Result<Option<ChainHead>>;
    /// Chain heads that advanced past their tenant's latest checkpoint (any key), at
    /// most `limit`, by tenant id: what the checkpoint job must sign next.
    async fn uncheckpointed_heads(&self, limit: u32) -> Result<Vec<(String, ChainHead)>>;
    /// Stores a signed checkpoint; returns false when the same (tenant, seq, key) exists.
    async fn put_checkpoint(&self, checkpoint: &SignedCheckpoint) -> Result<bool>;
    /// A tenant's checkpoints with `seq >= from_seq`, in seq order.
    async fn list_checkpoints(
        &self,
        tenant_id: &str,
        from_seq: u64,
        limit: u32,
    ) -> Result<Vec<SignedCheckpoint>>;
    /// The tenant's checkpoint with the highest seq.
    async fn latest_checkpoint(&self, tenant_id: &str) -> Result<Option<SignedCheckpoint>>;
    /// Where the tenant's retained chain starts, if receipts were purged.
    async fn chain_anchor(&self, tenant_id: &str) -> Result<Option<Anchor>>;
    /// Lowest and highest seq of the tenant's receipts with `since_ms <= created_at <
    /// until_ms` (either bound optional). Exports and purges work on seq ranges, so the
    /// result stays a verifiable stretch of chain even when clocks disagreed.
    async fn receipt_seq_range(
        &self,
        tenant_id: &str,
        since_ms: Option<i64>,
        until_ms: Option<i64>,
    ) -> Result<Option<(u64, u64)>>;
    /// Deletes the tenant's receipts up to `anchor.seq` and records `anchor` as where the
    /// chain now starts, in one transaction. `Invalid` unless the receipt at `anchor.seq`
    /// exists and has `anchor.head_hash`; a no-op (0) when an anchor at or beyond it
    /// exists. Checkpoints below the anchor go too. Returns the receipts deleted.
    async fn purge_receipts(&self, anchor: &Anchor) -> Result<u64>;

    /// Stores a Sentinel alert (`Conflict` if the id exists).
    async fn put_alert(&self, alert: &AlertRecord) -> Result<()>;
    /// A tenant's alerts, newest first.
    async fn list_alerts(&self, tenant_id: &str, q: &AlertQuery) -> Result<Vec<AlertRecord>>;
    /// One alert of the tenant (another tenant's id is simply not found).
    async fn get_alert(&self, tenant_id: &str, id: &str) -> Result<Option<AlertRecord>>;
    /// Acknowledges an alert (the first acknowledgement wins); returns it, or None.
    async fn ack_alert(
        &self,
        tenant_id: &str,
        id: &str,
        by: &str,
        at_ms: i64,
    ) -> Result<Option<AlertRecord>>;
    /// Links an alert to the `alert` receipt that records it.
    async fn set_alert_receipt(&self, tenant_id: &str, id: &str, receipt_id: &str) -> Result<()>;

    /// Stores a new approval (`Conflict` if the id exists).
    async fn create_approval(&self, a: &ApprovalRecord) -> Result<()>;
    /// One approval of the tenant (another tenant's id is simply not found).
    async fn get_approval(&self, tenant_id: &str, id: &str) -> Result<Option<ApprovalRecord>>;
    /// A tenant's approvals, newest first, optionally of one status.
    async fn list_approvals(
        &self,
        tenant_id: &str,
        status: Option<&str>,
        limit: u32,
    ) -> Result<Vec<ApprovalRecord>>;
    /// Writes `a` if the stored version is still `expected` (the row gets `expected + 1`);
    /// false when another writer got there first.
    async fn update_approval(&self, a: &ApprovalRecord, expected: i64) -> Result<bool>;
    /// Atomically marks the approved, unexpired approval with this token hash, tool and
    /// args hash as `used` and returns it; None when there is none (wrong args, tool or
    /// tenant, already used, expired).
    async fn redeem_approval(
        &self,
        tenant_id: &str,
        token_hash: &str,
        tool: &str,
        args_hash: &str,
        now_ms: i64,
    ) -> Result<Option<ApprovalRecord>>;

    /// The tenant's own upstream key (sealed by the server), if one is set.
    async fn get_upstream_key(&self, tenant_id: &str) -> Result<Option<UpstreamKeyRecord>>;
    /// Sets or replaces the tenant's upstream key (an existing row keeps `created_at`).
    async fn put_upstream_key(&self, k: &UpstreamKeyRecord) -> Result<()>;
    /// Removes the tenant's upstream key; false when none was set.
    async fn delete_upstream_key(&self, tenant_id: &str) -> Result<bool>;

    /// Stores a sealed full-content capture (`Conflict` if the id exists).
    async fn put_capture(&self, c: &CaptureRecord) -> Result<()>;
    /// One capture of the tenant (another tenant's id is simply not found).
    async fn get_capture(&self, tenant_id: &str, id: &str) -> Result<Option<CaptureRecord>>;
}

pub type DynStore = Arc<dyn Store>;

/// Opens the store named by a URL: `sqlite://PATH` (or `sqlite::memory:`), or
/// `postgres://…` / `postgresql://…` (see `crates/store/POSTGRES.md`). Pending migrations
/// are applied before it returns.
pub async fn open(url: &str) -> Result<DynStore> {
    if url.starts_with("sqlite:") {
        Ok(Arc::new(SqliteStore::open(url).await?))
    } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        Ok(Arc::new(PostgresStore::open(url).await?))
    } else {
        Err(StoreError::Invalid(format!(
            "unsupported storage url scheme (expected sqlite://PATH or postgres://…): {}",
            url.split(':').next().unwrap_or("")
        )))
    }
}

/// Current time in unix milliseconds. Kept here so every backend stamps rows alike.
pub fn now_ms() -> i64 {
    let now = time::OffsetDateTime::now_utc();
    (now.unix_timestamp_nanos() / 1_000_000) as i64
}
