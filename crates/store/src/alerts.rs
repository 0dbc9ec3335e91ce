//! Sentinel alerts: rows, queries, and both backends' SQL (kept here, beside each other,
//! so the two stay alike; the `Store` impls delegate to these).

use crate::model::rfc3339_ms;
use crate::{PostgresStore, Result, SqliteStore, StoreError};
use serde::Serialize;
use serde_json::{Map, Value};
use sqlx::Row;

/// One alert as stored. `details` carries the detector's numbers (as strings or
/// integers) and the subject.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct AlertRecord {
    pub id: String,
    pub tenant_id: String,
    #[serde(with = "rfc3339_ms")]
    pub created_at: i64,
    pub dedup_key: String,
    pub signal: String,
    pub detector: String,
    pub severity: String,
    /// `tenant`, `user:<id>`, `key:<id>` or `tool:<name>`.
    pub subject: String,
    pub message: String,
    pub details: Map<String, Value>,
    /// The `alert` receipt that records it, once committed.
    pub receipt_id: Option<String>,
    #[serde(with = "rfc3339_ms::option")]
    pub acked_at: Option<i64>,
    pub acked_by: Option<String>,
}

/// A page of a tenant's alerts, newest first.
#[derive(Debug, Clone, Default)]
pub struct AlertQuery {
    pub limit: u32,
    /// Cursor: (created_at ms, id) of the last row of the previous page.
    pub before: Option<(i64, String)>,
    /// Only alerts not yet acknowledged.
    pub unacked_only: bool,
}

const COLUMNS: &str = "tenant_id, id, created_at, dedup_key, signal, detector, severity, \
                       subject, message, details, receipt_id, acked_at, acked_by";

fn details_text(a: &AlertRecord) -> Result<String> {
    serde_json::to_string(&a.details)
        .map_err(|e| StoreError::Invalid(format!("alert details: {e}")))
}

fn parse_details(s: &str) -> Result<Map<String, Value>> {
    serde_json::from_str(s).map_err(|e| StoreError::Corrupt(format!("alert details: {e}")))
}

macro_rules! from_row {
    ($r:expr) => {{
        let r = $r;
        let details: String = r.try_get("details")?;
        Ok(AlertRecord {
            id: r.try_get("id")?,
            tenant_id: r.try_get("tenant_id")?,
            created_at: r.try_get("created_at")?,
            dedup_key: r.try_get("dedup_key")?,
            signal: r.try_get("signal")?,
            detector: r.try_get("detector")?,
            severity: r.try_get("severity")?,
            subject: r.try_get("subject")?,
            message: r.try_get("message")?,
            details: parse_details(&details)?,
            receipt_id: r.try_get("receipt_id")?,
            acked_at: r.try_get("acked_at")?,
            acked_by: r.try_get("acked_by")?,
        })
    }};
}

fn limit(q: &AlertQuery) -> i64 {
    i64::from(q.limit.clamp(1, 1000))
}

impl SqliteStore {
    pub(crate) async fn alerts_put(&self, a: &AlertRecord) -> Result<()> {
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "INSERT INTO alerts ({COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
        )))
        .bind(&a.tenant_id)
        .bind(&a.id)
        .bind(a.created_at)
        .bind(&a.dedup_key)
        .bind(&a.signal)
        .bind(&a.detector)
        .bind(&a.severity)
        .bind(&a.subject)
        .bind(&a.message)
        .bind(details_text(a)?)
        .bind(&a.receipt_id)
        .bind(a.acked_at)
        .bind(&a.acked_by)
        .execute(self.pool())
        .await?;
        Ok(())
    }

    pub(crate) async fn alerts_get(
        &self,
        tenant_id: &str,
        id: &str,
    ) -> Result<Option<AlertRecord>> {
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {COLUMNS} FROM alerts WHERE tenant_id = ? AND id = ?"
        )))
        .bind(tenant_id)
        .bind(id)
        .fetch_optional(self.pool())
        .await?;
        row.map(|r| from_row!(&r)).transpose()
    }

    pub(crate) async fn alerts_list(
        &self,
        tenant_id: &str,
        q: &AlertQuery,
    ) -> Result<Vec<AlertRecord>> {
        let (bt, bid) = q.before.clone().unwrap_or((i64::MAX, String::new()));
        let cursor = q.before.is_some();
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {COLUMNS} FROM alerts WHERE tenant_id = ? \
             AND (? = 0 OR created_at < ? OR (created_at = ? AND id < ?)) \
             AND (? = 0 OR acked_at IS NULL) \
             ORDER BY created_at DESC, id DESC LIMIT ?"
        )))
        .bind(tenant_id)
        .bind(i64::from(cursor))
        .bind(bt)
        .bind(bt)
        .bind(bid)
        .bind(i64::from(q.unacked_only))
        .bind(limit(q))
        .fetch_all(self.pool())
        .await?;
        rows.iter().map(|r| from_row!(r)).collect()
    }

    pub(crate) async fn alerts_ack(
        &self,
        tenant_id: &str,
        id: &str,
        by: &str,
        at_ms: i64,
    ) -> Result<Option<AlertRecord>> {
        sqlx::query(
            "UPDATE alerts SET acked_at = ?, acked_by = ? \
             WHERE tenant_id = ? AND id = ? AND acked_at IS NULL",
        )
        .bind(at_ms)
        .bind(by)
        .bind(tenant_id)
        .bind(id)
        .execute(self.pool())
        .await?;
        self.alerts_get(tenant_id, id).await
    }

    pub(crate) async fn alerts_set_receipt(
        &self,
        tenant_id: &str,
        id: &str,
        receipt_id: &str,
    ) -> Result<()> {
        sqlx::query("UPDATE alerts SET receipt_id = ? WHERE tenant_id = ? AND id = ?")
            .bind(receipt_id)
            .bind(tenant_id)
            .bind(id)
            .execute(self.pool())
            .await?;
        Ok(())
    }
}

impl PostgresStore {
    pub(crate) async fn alerts_put(&self, a: &AlertRecord) -> Result<()> {
        let mut tx = self.begin_tenant(&a.tenant_id).await?;
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "INSERT INTO alerts ({COLUMNS}) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)"
        )))
        .bind(&a.tenant_id)
        .bind(&a.id)
        .bind(a.created_at)
        .bind(&a.dedup_key)
        .bind(&a.signal)
        .bind(&a.detector)
        .bind(&a.severity)
        .bind(&a.subject)
        .bind(&a.message)
        .bind(details_text(a)?)
        .bind(&a.receipt_id)
        .bind(a.acked_at)
        .bind(&a.acked_by)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    pub(crate) async fn alerts_get(
        &self,
        tenant_id: &str,
        id: &str,
    ) -> Result<Option<AlertRecord>> {
        let mut tx = self.begin_tenant(tenant_id).await?;
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {COLUMNS} FROM alerts WHERE tenant_id = $1 AND id = $2"
        )))
        .bind(tenant_id)
        .bind(id)
        .fetch_optional(&mut *tx)
        .await?;
        tx.commit().await?;
        row.map(|r| from_row!(&r)).transpose()
    }

    pub(crate) async fn alerts_list(
        &self,
        tenant_id: &str,
        q: &AlertQuery,
    ) -> Result<Vec<AlertRecord>> {
        let (bt, bid) = q.before.clone().unwrap_or((i64::MAX, String::new()));
        let mut tx = self.begin_tenant(tenant_id).await?;
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {COLUMNS} FROM alerts WHERE tenant_id = $1 \
             AND (NOT $2 OR created_at < $3 OR (created_at = $3 AND id < $4)) \
             AND (NOT $5 OR acked_at IS NULL) \
             ORDER BY created_at DESC, id DESC LIMIT $6"
        )))
        .bind(tenant_id)
        .bind(q.before.is_some())
        .bind(bt)
        .bind(bid)
        .bind(q.unacked_only)
        .bind(limit(q))
        .fetch_all(&mut *tx)
        .await?;
        tx.commit().await?;
        rows.iter().map(|r| from_row!(r)).collect()
    }

    pub(crate) async fn alerts_ack(
        &self,
        tenant_id: &str,
        id: &str,
        by: &str,
        at_ms: i64,
    ) -> Result<Option<AlertRecord>> {
        let mut tx = self.begin_tenant(tenant_id).await?;
        sqlx::query(
            "UPDATE alerts SET acked_at = $1, acked_by = $2 \
             WHERE tenant_id = $3 AND id = $4 AND acked_at IS NULL",
        )
        .bind(at_ms)
        .bind(by)
        .bind(tenant_id)
        .bind(id)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        self.alerts_get(tenant_id, id).await
    }

    pub(crate) async fn alerts_set_receipt(
        &self,
        tenant_id: &str,
        id: &str,
        receipt_id: &str,
    ) -> Result<()> {
        let mut tx = self.begin_tenant(tenant_id).await?;
        sqlx::query("UPDATE alerts SET receipt_id = $1 WHERE tenant_id = $2 AND id = $3")
            .bind(receipt_id)
            .bind(tenant_id)
            .bind(id)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }
}
