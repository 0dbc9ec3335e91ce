//! Human approvals of tool calls: rows and both backends' SQL, side by side (the `Store`
//! impls delegate here). Every change is a compare-and-set on `version`; redeeming a
//! token is one conditional UPDATE, so a token is used at most once across replicas.

use crate::model::rfc3339_ms;
use crate::{PostgresStore, Result, SqliteStore, StoreError};
use serde::Serialize;
use serde_json::{Map, Value};
use sqlx::Row;

/// One approval as stored. `body` holds the args, the requester's evaluation context,
/// the decisions so far and the quorum (the server owns its shape).
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ApprovalRecord {
    pub id: String,
    pub tenant_id: String,
    #[serde(with = "rfc3339_ms")]
    pub created_at: i64,
    /// Pending: when the request lapses. Approved: when the token lapses.
    #[serde(with = "rfc3339_ms")]
    pub expires_at: i64,
    /// `pending`, `approved`, `denied`, `expired` or `used`.
    pub status: String,
    pub tool: String,
    /// sha256 of the canonical JSON of the args.
    pub args_hash: String,
    pub requester_key_id: String,
    pub requester_user_id: Option<String>,
    /// sha256 of the single-use token, once approved.
    #[serde(skip)]
    pub token_hash: Option<String>,
    pub version: i64,
    pub body: Map<String, Value>,
}

const COLUMNS: &str = "tenant_id, id, created_at, expires_at, status, tool, args_hash, \
                       requester_key_id, requester_user_id, token_hash, version, body";

fn body_text(a: &ApprovalRecord) -> Result<String> {
    serde_json::to_string(&a.body).map_err(|e| StoreError::Invalid(format!("approval: {e}")))
}

fn parse_body(s: &str) -> Result<Map<String, Value>> {
    serde_json::from_str(s).map_err(|e| StoreError::Corrupt(format!("approval body: {e}")))
}

macro_rules! from_row {
    ($r:expr) => {{
        let r = $r;
        let body: String = r.try_get("body")?;
        Ok(ApprovalRecord {
            id: r.try_get("id")?,
            tenant_id: r.try_get("tenant_id")?,
            created_at: r.try_get("created_at")?,
            expires_at: r.try_get("expires_at")?,
            status: r.try_get("status")?,
            tool: r.try_get("tool")?,
            args_hash: r.try_get("args_hash")?,
            requester_key_id: r.try_get("requester_key_id")?,
            requester_user_id: r.try_get("requester_user_id")?,
            token_hash: r.try_get("token_hash")?,
            version: r.try_get("version")?,
            body: parse_body(&body)?,
        })
    }};
}

fn map_unique(e: sqlx::Error) -> StoreError {
    match &e {
        sqlx::Error::Database(d) if d.is_unique_violation() => {
            StoreError::Conflict("approval exists".into())
        }
        _ => e.into(),
    }
}

impl SqliteStore {
    pub(crate) async fn approvals_create(&self, a: &ApprovalRecord) -> Result<()> {
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "INSERT INTO approvals ({COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
        )))
        .bind(&a.tenant_id)
        .bind(&a.id)
        .bind(a.created_at)
        .bind(a.expires_at)
        .bind(&a.status)
        .bind(&a.tool)
        .bind(&a.args_hash)
        .bind(&a.requester_key_id)
        .bind(&a.requester_user_id)
        .bind(&a.token_hash)
        .bind(a.version)
        .bind(body_text(a)?)
        .execute(self.pool())
        .await
        .map_err(map_unique)?;
        Ok(())
    }

    pub(crate) async fn approvals_get(
        &self,
        tenant_id: &str,
        id: &str,
    ) -> Result<Option<ApprovalRecord>> {
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {COLUMNS} FROM approvals WHERE tenant_id = ? AND id = ?"
        )))
        .bind(tenant_id)
        .bind(id)
        .fetch_optional(self.pool())
        .await?;
        row.map(|r| from_row!(&r)).transpose()
    }

    pub(crate) async fn approvals_list(
        &self,
        tenant_id: &str,
        status: Option<&str>,
        limit: u32,
    ) -> Result<Vec<ApprovalRecord>> {
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {COLUMNS} FROM approvals WHERE tenant_id = ? AND (? IS NULL OR status = ?) \
             ORDER BY created_at DESC, id DESC LIMIT ?"
        )))
        .bind(tenant_id)
        .bind(status)
        .bind(status)
        .bind(i64::from(limit.clamp(1, 1000)))
        .fetch_all(self.pool())
        .await?;
        rows.iter().map(|r| from_row!(r)).collect()
    }

    pub(crate) async fn approvals_update(&self, a: &ApprovalRecord, expected: i64) -> Result<bool> {
        let n = sqlx::query(
            "UPDATE approvals SET expires_at = ?, status = ?, tool = ?, args_hash = ?, \
             token_hash = ?, version = ?, body = ? \
             WHERE tenant_id = ? AND id = ? AND version = ?",
        )
        .bind(a.expires_at)
        .bind(&a.status)
        .bind(&a.tool)
        .bind(&a.args_hash)
        .bind(&a.token_hash)
        .bind(expected + 1)
        .bind(body_text(a)?)
        .bind(&a.tenant_id)
        .bind(&a.id)
        .bind(expected)
        .execute(self.pool())
        .await
        .map_err(map_unique)?
        .rows_affected();
        Ok(n == 1)
    }

    pub(crate) async fn approvals_redeem(
        &self,
        tenant_id: &str,
        token_hash: &str,
        tool: &str,
        args_hash: &str,
        now_ms: i64,
    ) -> Result<Option<ApprovalRecord>> {
        let id: Option<String> = sqlx::query_scalar(
            "UPDATE approvals SET status = 'used', version = version + 1 \
             WHERE tenant_id = ? AND token_hash = ? AND status = 'approved' \
             AND tool = ? AND args_hash = ? AND expires_at > ? RETURNING id",
        )
        .bind(tenant_id)
        .bind(token_hash)
        .bind(tool)
        .bind(args_hash)
        .bind(now_ms)
        .fetch_optional(self.pool())
        .await?;
        match id {
            Some(id) => self.approvals_get(tenant_id, &id).await,
            None => Ok(None),
        }
    }
}

impl PostgresStore {
    pub(crate) async fn approvals_create(&self, a: &ApprovalRecord) -> Result<()> {
        let mut tx = self.begin_tenant(&a.tenant_id).await?;
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "INSERT INTO approvals ({COLUMNS}) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)"
        )))
        .bind(&a.tenant_id)
        .bind(&a.id)
        .bind(a.created_at)
        .bind(a.expires_at)
        .bind(&a.status)
        .bind(&a.tool)
        .bind(&a.args_hash)
        .bind(&a.requester_key_id)
        .bind(&a.requester_user_id)
        .bind(&a.token_hash)
        .bind(a.version)
        .bind(body_text(a)?)
        .execute(&mut *tx)
        .await
        .map_err(map_unique)?;
        tx.commit().await?;
        Ok(())
    }

    pub(crate) async fn approvals_get(
        &self,
        tenant_id: &str,
        id: &str,
    ) -> Result<Option<ApprovalRecord>> {
        let mut tx = self.begin_tenant(tenant_id).await?;
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {COLUMNS} FROM approvals WHERE tenant_id = $1 AND id = $2"
        )))
        .bind(tenant_id)
        .bind(id)
        .fetch_optional(&mut *tx)
        .await?;
        tx.commit().await?;
        row.map(|r| from_row!(&r)).transpose()
    }

    pub(crate) async fn approvals_list(
        &self,
        tenant_id: &str,
        status: Option<&str>,
        limit: u32,
    ) -> Result<Vec<ApprovalRecord>> {
        let mut tx = self.begin_tenant(tenant_id).await?;
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {COLUMNS} FROM approvals WHERE tenant_id = $1 \
             AND ($2::text IS NULL OR status = $2) \
             ORDER BY created_at DESC, id DESC LIMIT $3"
        )))
        .bind(tenant_id)
        .bind(status)
        .bind(i64::from(limit.clamp(1, 1000)))
        .fetch_all(&mut *tx)
        .await?;
        tx.commit().await?;
        rows.iter().map(|r| from_row!(r)).collect()
    }

    pub(crate) async fn approvals_update(&self, a: &ApprovalRecord, expected: i64) -> Result<bool> {
        let mut tx = self.begin_tenant(&a.tenant_id).await?;
        let n = sqlx::query(
            "UPDATE approvals SET expires_at = $1, status = $2, tool = $3, args_hash = $4, \
             token_hash = $5, version = $6, body = $7 \
             WHERE tenant_id = $8 AND id = $9 AND version = $10",
        )
        .bind(a.expires_at)
        .bind(&a.status)
        .bind(&a.tool)
        .bind(&a.args_hash)
        .bind(&a.token_hash)
        .bind(expected + 1)
        .bind(body_text(a)?)
        .bind(&a.tenant_id)
        .bind(&a.id)
        .bind(expected)
        .execute(&mut *tx)
        .await
        .map_err(map_unique)?
        .rows_affected();
        tx.commit().await?;
        Ok(n == 1)
    }

    pub(crate) async fn approvals_redeem(
        &self,
        tenant_id: &str,
        token_hash: &str,
        tool: &str,
        args_hash: &str,
        now_ms: i64,
    ) -> Result<Option<ApprovalRecord>> {
        let mut tx = self.begin_tenant(tenant_id).await?;
        let id: Option<String> = sqlx::query_scalar(
            "UPDATE approvals SET status = 'used', version = version + 1 \
             WHERE tenant_id = $1 AND token_hash = $2 AND status = 'approved' \
             AND tool = $3 AND args_hash = $4 AND expires_at > $5 RETURNING id",
        )
        .bind(tenant_id)
        .bind(token_hash)
        .bind(tool)
        .bind(args_hash)
        .bind(now_ms)
        .fetch_optional(&mut *tx)
        .await?;
        tx.commit().await?;
        match id {
            Some(id) => self.approvals_get(tenant_id, &id).await,
            None => Ok(None),
        }
    }
}
