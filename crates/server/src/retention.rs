//! Retention: deletes each tenant's expired receipts and keeps an anchor (seq and hash of
//! the last deleted receipt), signed by a checkpoint at the same seq, so what remains
//! still verifies and its start is provable.
//!
//! A tenant's retention is its `retention_days` attribute (a whole number, or a string of
//! one, as `palisade tenant create --attr retention_days=30` stores it); tenants without
//! one, and deleted tenants, use `audit.default_retention_days` (0 = keep forever).

use palisade_audit::{Anchor, CheckpointSigner, format_created_at};
use palisade_store::{DynStore, StoreError};
use serde::Serialize;
use serde_json::Value;

/// Name of the tenant attribute holding its retention in days.
pub const RETENTION_ATTRIBUTE: &str = "retention_days";

const DAY_MS: i64 = 86_400_000;

/// What the purge did for one tenant.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct PurgeOutcome {
    pub tenant_id: String,
    pub retention_days: u64,
    /// Receipts deleted (0: nothing expired, or a dry run).
    pub deleted: u64,
    /// Where the chain now starts (or would, for a dry run).
    pub anchor_seq: Option<u64>,
    /// Whether the anchor is covered by a signed checkpoint.
    pub checkpointed: bool,
}

/// Reads `retention_days` from tenant attributes. `Err` names the bad value.
pub fn retention_days(attributes: &serde_json::Map<String, Value>) -> Result<Option<u64>, String> {
    match attributes.get(RETENTION_ATTRIBUTE) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => n.as_u64().map(Some).ok_or_else(|| {
            format!("{RETENTION_ATTRIBUTE} must be a whole number of days, got {n}")
        }),
        Some(Value::String(s)) => s.trim().parse::<u64>().map(Some).map_err(|_| {
            format!("{RETENTION_ATTRIBUTE} must be a whole number of days, got {s:?}")
        }),
        Some(other) => Err(format!(
            "{RETENTION_ATTRIBUTE} must be a whole number of days, got {other}"
        )),
    }
}

/// Runs the purge once over every tenant with receipts (or only `only_tenant`).
/// Receipts are deleted as a prefix of the chain: up to the receipt before the first one
/// still inside the retention window, so a receipt stamped by a slow clock never leaves a
/// hole. With a signer, the anchor is checkpointed before anything is deleted.
pub async fn purge_once(
    store: &DynStore,
    signer: Option<&CheckpointSigner>,
    default_days: u64,
    only_tenant: Option<&str>,
    now_ms: i64,
) -> Result<Vec<PurgeOutcome>, StoreError> {
    purge(store, signer, default_days, only_tenant, now_ms, false).await
}

/// As [`purge_once`], optionally only reporting what would be deleted.
pub async fn purge(
    store: &DynStore,
    signer: Option<&CheckpointSigner>,
    default_days: u64,
    only_tenant: Option<&str>,
    now_ms: i64,
    dry_run: bool,
) -> Result<Vec<PurgeOutcome>, StoreError> {
    let tenants = match only_tenant {
        Some(t) => vec![t.to_string()],
        None => store.chain_tenants().await?,
    };
    let mut out = Vec::new();
    for tenant in tenants {
        let days = match store.get_tenant(&tenant).await? {
            Some(t) => match retention_days(&t.attributes) {
                Ok(Some(d)) => d,
                Ok(None) => default_days,
                Err(e) => {
                    tracing::warn!(tenant = %tenant, error = %e, "retention not applied");
                    continue;
                }
            },
            None => default_days,
        };
        if days == 0 {
            continue;
        }
        let span = i64::try_from(days)
            .unwrap_or(i64::MAX)
            .saturating_mul(DAY_MS);
        let cutoff = now_ms.saturating_sub(span);
        let Some(head) = store.chain_head(&tenant).await? else {
            continue;
        };
        let through = match store.receipt_seq_range(&tenant, Some(cutoff), None).await? {
            Some((first_kept, _)) => first_kept.saturating_sub(1),
            None => head.seq,
        };
        let current = store.chain_anchor(&tenant).await?.map_or(0, |a| a.seq);
        if through <= current {
            continue;
        }
        let Some(last) = store
            .chain(&tenant, through, 1)
            .await?
            .into_iter()
            .find(|r| r.seq == through)
        else {
            return Err(StoreError::Corrupt(format!(
                "tenant {tenant}: receipt at seq {through} missing before purge"
            )));
        };
        let anchor = Anchor {
            tenant_id: tenant.clone(),
            seq: through,
            head_hash: last.hash.clone(),
        };
        let mut outcome = PurgeOutcome {
            tenant_id: tenant.clone(),
            retention_days: days,
            deleted: 0,
            anchor_seq: Some(through),
            checkpointed: false,
        };
        if dry_run {
            outcome.deleted = through - current;
            out.push(outcome);
            continue;
        }
        if let Some(s) = signer {
            let at = format_created_at(u64::try_from(now_ms).unwrap_or(0));
            let cp = s
                .sign(&tenant, through, &last.hash, &at)
                .map_err(|e| StoreError::Invalid(format!("checkpoint for {tenant}: {e}")))?;
            store.put_checkpoint(&cp).await?;
            outcome.checkpointed = true;
        }
        outcome.deleted = store.purge_receipts(&anchor).await?;
        out.push(outcome);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn retention_attribute_forms() {
        let m = |v: Value| {
            let mut m = serde_json::Map::new();
            m.insert(RETENTION_ATTRIBUTE.into(), v);
            m
        };
        assert_eq!(retention_days(&serde_json::Map::new()), Ok(None));
        assert_eq!(retention_days(&m(json!(30))), Ok(Some(30)));
        assert_eq!(retention_days(&m(json!("7"))), Ok(Some(7)));
        assert_eq!(retention_days(&m(Value::Null)), Ok(None));
        for bad in [json!(-1), json!(1.5), json!("soon"), json!([1])] {
            let e = retention_days(&m(bad.clone())).unwrap_err();
            assert!(e.contains("retention_days"), "{bad}: {e}");
        }
    }
}
