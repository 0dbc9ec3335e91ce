//! Tenants' own upstream keys ("bring your own key"), sealed by the server with the
//! tenant's data key before they get here. The store keeps ciphertext and the last four
//! characters (the only hint the API shows); it never sees the key itself.

use crate::{PostgresStore, Result, SqliteStore, StoreError};
use sqlx::Row;

/// One stored upstream key. `sealed` is the JSON of a `palisade_audit::Sealed`.
#[derive(Clone, PartialEq)]
pub struct UpstreamKeyRecord {
    pub tenant_id: String,
    pub sealed: String,
    pub last4: String,
    pub created_at: i64,
    pub updated_at: i64,
}

impl std::fmt::Debug for UpstreamKeyRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UpstreamKeyRecord")
            .field("tenant_id", &self.tenant_id)
            .field("sealed", &"<redacted>")
            .field("created_at", &self.created_at)
            .field("updated_at", &self.updated_at)
            .finish_non_exhaustive()
    }
}

macro_rules! from_row {
    ($r:expr) => {{
        let r = $r;
        Ok::<_, StoreError>(UpstreamKeyRecord {
            tenant_id: r.try_get("tenant_id")?,
            sealed: r.try_get("sealed")?,
            last4: r.try_get("last4")?,
            created_at: r.try_get("created_at")?,
            updated_at: r.try_get("updated_at")?,
        })
    }};
}

const SELECT: &str = "SELECT tenant_id, sealed, last4, created_at, updated_at \
                      FROM tenant_upstream_keys WHERE tenant_id = ";

impl SqliteStore {
    pub(crate) async fn upstream_key_get(
        &self,
        tenant_id: &str,
    ) -> Result<Option<UpstreamKeyRecord>> {
        let row = sqlx::query(sqlx::AssertSqlSafe(format!("{SELECT}?")))
            .bind(tenant_id)
            .fetch_optional(self.pool())
            .await?;
        row.map(|r| from_row!(&r)).transpose()
    }

    /// Inserts or replaces; `created_at` of an existing row is kept.
    pub(crate) async fn upstream_key_put(&self, k: &UpstreamKeyRecord) -> Result<()> {
        crate::sqlite::check_tenant_id(&k.tenant_id)?;
        sqlx::query(
            "INSERT INTO tenant_upstream_keys (tenant_id, sealed, last4, created_at, updated_at) \
             VALUES (?, ?, ?, ?, ?) ON CONFLICT(tenant_id) DO UPDATE SET \
             sealed = excluded.sealed, last4 = excluded.last4, updated_at = excluded.updated_at",
        )
        .bind(&k.tenant_id)
        .bind(&k.sealed)
        .bind(&k.last4)
        .bind(k.created_at)
        .bind(k.updated_at)
        .execute(self.pool())
        .await?;
        Ok(())
    }

    pub(crate) async fn upstream_key_delete(&self, tenant_id: &str) -> Result<bool> {
        let n = sqlx::query("DELETE FROM tenant_upstream_keys WHERE tenant_id = ?")
            .bind(tenant_id)
            .execute(self.pool())
            .await?
            .rows_affected();
        Ok(n > 0)
    }
}

impl PostgresStore {
    pub(crate) async fn upstream_key_get(
        &self,
        tenant_id: &str,
    ) -> Result<Option<UpstreamKeyRecord>> {
        let mut tx = self.begin_tenant(tenant_id).await?;
        let row = sqlx::query(sqlx::AssertSqlSafe(format!("{SELECT}$1")))
            .bind(tenant_id)
            .fetch_optional(&mut *tx)
            .await?;
        tx.commit().await?;
        row.map(|r| from_row!(&r)).transpose()
    }

    pub(crate) async fn upstream_key_put(&self, k: &UpstreamKeyRecord) -> Result<()> {
        let mut tx = self.begin_tenant(&k.tenant_id).await?;
        sqlx::query(
            "INSERT INTO tenant_upstream_keys (tenant_id, sealed, last4, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5) ON CONFLICT (tenant_id) DO UPDATE SET \
             sealed = EXCLUDED.sealed, last4 = EXCLUDED.last4, updated_at = EXCLUDED.updated_at",
        )
        .bind(&k.tenant_id)
        .bind(&k.sealed)
        .bind(&k.last4)
        .bind(k.created_at)
        .bind(k.updated_at)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    pub(crate) async fn upstream_key_delete(&self, tenant_id: &str) -> Result<bool> {
        let mut tx = self.begin_tenant(tenant_id).await?;
        let n = sqlx::query("DELETE FROM tenant_upstream_keys WHERE tenant_id = $1")
            .bind(tenant_id)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        tx.commit().await?;
        Ok(n > 0)
    }
}
