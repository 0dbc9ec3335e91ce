//! Change propagation between replicas: the store's change feed (PostgreSQL LISTEN /
//! NOTIFY, fed by triggers on tenants, API keys, active policies, tenants' data keys and
//! their own upstream keys) drops the affected cache
//! entries the moment another replica, the CLI or an operator commits a change. The cache
//! TTL (`storage.cache_ttl_ms`) stays as the backstop for a feed that is down.

use crate::state::AppState;
use palisade_store::Change;
use tokio::sync::mpsc::Receiver;
use tokio::task::JoinHandle;

/// Starts applying the store's change feed, if it has one.
pub async fn start(state: &AppState) -> Option<JoinHandle<()>> {
    match state.store.watch_changes().await {
        Ok(Some(rx)) => Some(tokio::spawn(run(state.clone(), rx))),
        Ok(None) => None,
        Err(e) => {
            // Not fatal: caches still expire on their TTL.
            tracing::warn!(error = %e, "no change feed; caches rely on their TTL");
            None
        }
    }
}

async fn run(state: AppState, mut rx: Receiver<Change>) {
    while let Some(c) = rx.recv().await {
        apply(&state, &c).await;
    }
}

/// Drops what the change may have made stale. Key entries carry their tenant row, so a
/// tenant or key change forgets the key cache (admin changes are rare; a refill is one
/// query per active key). A deleted tenant takes its data key with it (crypto-shredding):
/// no replica may keep decrypting with a cached copy, nor use an upstream key sealed
/// under it.
pub async fn apply(state: &AppState, c: &Change) {
    match (c.table.as_str(), c.tenant.as_deref()) {
        ("active_policies", Some(scope)) => state.policies.invalidate(scope).await,
        ("api_keys", Some(_)) => state.forget_all_keys(),
        ("tenants", Some(t)) => {
            state.forget_all_keys();
            state.tenant_keys.forget(t).await;
            state.upstream_keys.forget(t).await;
        }
        ("tenant_keys", Some(t)) => {
            state.tenant_keys.forget(t).await;
            state.upstream_keys.forget(t).await;
        }
        ("tenant_upstream_keys", Some(t)) => state.upstream_keys.forget(t).await,
        _ => {
            state.forget_all_keys();
            state.policies.invalidate_all();
            state.tenant_keys.forget_all();
            state.upstream_keys.forget_all();
        }
    }
}
