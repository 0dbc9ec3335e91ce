//! Full-content captures (tenant opt-in): the redacted prompt and output of a call,
//! sealed (AES-256-GCM under the tenant's data key) by the server before they get here.
//! The store only keeps the ciphertext; a receipt names its capture by id
//! (`details.capture_id`), so the chain hashes the reference, not the content, and
//! deleting the tenant's data key makes every capture unreadable.

use crate::{PostgresStore, Result, SqliteStore, StoreError};
use sqlx::Row;

/// One stored capture. `sealed` is the JSON of a `palisade_audit::Sealed`.
#[derive(Debug, Clone, PartialEq)]
pub struct CaptureRecord {
    pub tenant_id: String,
    pub id: String,
    pub receipt_id: String,
    pub created_at: i64,
    pub sealed: String,
}

fn map_unique(e: sqlx::Error) -> StoreError {
    match &e {
        sqlx::Error::Database(d) if d.is_unique_violation() => {
            StoreError::Conflict("capture exists".into())
        }
        _ => e.into(),
    }
}

macro_rules! from_row {
    ($r:expr) => {{
        let r = $r;
        Ok::<_, StoreError>(CaptureRecord {
            tenant_id: r.try_get("tenant_id")?,
            id: r.try_get("id")?,
            receipt_id: r.try_get("receipt_id")?,
            created_at: r.try_get("created_at")?,
            sealed: r.try_get("sealed")?,
        })
    }};
}

impl SqliteStore {
    pub(crate) async fn captures_put(&self, c: &CaptureRecord) -> Result<()> {
        sqlx::query(
            "INSERT INTO captures (tenant_id, id, receipt_id, created_at, sealed) \
             VALUES (?, ?, ?, ?, ?)",
        )
        .bind(&c.tenant_id)
        .bind(&c.id)
        .bind(&c.receipt_id)
        .bind(c.created_at)
        .bind(&c.sealed)
        .execute(self.pool())
        .await
        .map_err(map_unique)?;
        Ok(())
    }

    pub(crate) async fn captures_get(
        &self,
        tenant_id: &str,
        id: &str,
    ) -> Result<Option<CaptureRecord>> {
        let row = sqlx::query(
            "SELECT tenant_id, id, receipt_id, created_at, sealed FROM captures \
             WHERE tenant_id = ? AND id = ?",
        )
        .bind(tenant_id)
        .bind(id)
        .fetch_optional(self.pool())
        .await?;
        row.map(|r| from_row!(&r)).transpose()
    }
}

impl PostgresStore {
    pub(crate) async fn captures_put(&self, c: &CaptureRecord) -> Result<()> {
        let mut tx = self.begin_tenant(&c.tenant_id).await?;
        sqlx::query(
            "INSERT INTO captures (tenant_id, id, receipt_id, created_at, sealed) \
             VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(&c.tenant_id)
        .bind(&c.id)
        .bind(&c.receipt_id)
        .bind(c.created_at)
        .bind(&c.sealed)
        .execute(&mut *tx)
        .await
        .map_err(map_unique)?;
        tx.commit().await?;
        Ok(())
    }

    pub(crate) async fn captures_get(
        &self,
        tenant_id: &str,
        id: &str,
    ) -> Result<Option<CaptureRecord>> {
        let mut tx = self.begin_tenant(tenant_id).await?;
        let row = sqlx::query(
            "SELECT tenant_id, id, receipt_id, created_at, sealed FROM captures \
             WHERE tenant_id = $1 AND id = $2",
        )
        .bind(tenant_id)
        .bind(id)
        .fetch_optional(&mut *tx)
        .await?;
        tx.commit().await?;
        row.map(|r| from_row!(&r)).transpose()
    }
}
