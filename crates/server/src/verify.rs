//! Verification of the chains in a store: every tenant's receipts from its anchor (or
//! genesis), its anchor, and its stored checkpoints, streamed page by page through the
//! audit core's [`ChainVerifier`]. Used by `palisade audit verify` and the tests.

use palisade_audit::{ChainVerifier, VerifyReport};
use palisade_store::{DynStore, StoreError};

const PAGE: u32 = 5_000;

/// Verifies `tenant`'s chain, or every chain in the store. Checkpoint signatures are
/// checked against `public_keys` (raw 32-byte Ed25519 keys); with none, checkpoints are
/// only matched against the chain and the reports say signatures were not checked.
pub async fn verify_store(
    store: &DynStore,
    tenant: Option<&str>,
    public_keys: &[Vec<u8>],
) -> Result<Vec<VerifyReport>, StoreError> {
    let tenants = match tenant {
        Some(t) => vec![t.to_string()],
        None => store.chain_tenants().await?,
    };
    let mut reports = Vec::with_capacity(tenants.len());
    for t in tenants {
        reports.push(verify_tenant(store, &t, public_keys).await?);
    }
    Ok(reports)
}

async fn verify_tenant(
    store: &DynStore,
    tenant: &str,
    public_keys: &[Vec<u8>],
) -> Result<VerifyReport, StoreError> {
    let mut v = ChainVerifier::new(tenant);
    for k in public_keys {
        v = v.with_public_key(k);
    }
    let anchor = store.chain_anchor(tenant).await?;
    let mut from = 1u64;
    if let Some(a) = anchor {
        // Receipts at or below the anchor must be gone; read from seq 1 anyway so a
        // leftover is reported rather than skipped.
        v.set_anchor(a, None);
    }
    loop {
        let page = store.chain(tenant, from, PAGE).await?;
        let n = page.len();
        for r in &page {
            v.push_receipt(r);
        }
        match page.last() {
            Some(last) if n == PAGE as usize => from = last.seq.saturating_add(1),
            _ => break,
        }
    }
    // Pages are ordered by (seq, key_id); several keys may sign one seq, so a page
    // restarts at the last seq and skips what it already had.
    let mut from = 0u64;
    let mut last: Option<(u64, String)> = None;
    loop {
        let page = store.list_checkpoints(tenant, from, PAGE).await?;
        let full = page.len() == PAGE as usize;
        let mut progressed = false;
        for c in page {
            let key = (c.checkpoint.seq, c.checkpoint.key_id.clone());
            if last.as_ref().is_some_and(|l| key <= *l) {
                continue;
            }
            last = Some(key);
            progressed = true;
            v.push_checkpoint(c, None);
        }
        match &last {
            Some((seq, _)) if full && progressed => from = *seq,
            _ => break,
        }
    }
    Ok(v.finish())
}
