//! Per-tenant key material: each tenant has a random data key, stored only wrapped by
//! the master key (through a `KeyProvider`). Receipt HMAC keys derive from it, so
//! deleting the tenant's data key makes its digests unlinkable and its sealed payloads
//! unreadable (crypto-shredding).

use crate::error::ApiError;
use aws_lc_rs::digest;
use aws_lc_rs::rand::SystemRandom;
use palisade_audit::{DataKey, KeyProvider, WrappedKey, hmac_hex};
use palisade_store::DynStore;
use std::sync::Arc;

const PURPOSE: &str = "receipts";

pub struct TenantSecrets {
    pub data_key: DataKey,
    hmac_key: [u8; 32],
}

#[derive(Clone)]
pub struct TenantKeys {
    provider: Arc<dyn KeyProvider>,
    store: DynStore,
    rng: Arc<SystemRandom>,
    cache: moka::future::Cache<String, Arc<TenantSecrets>>,
}

impl TenantKeys {
    pub fn new(provider: Arc<dyn KeyProvider>, store: DynStore) -> Self {
        Self {
            provider,
            store,
            rng: Arc::new(SystemRandom::new()),
            cache: moka::future::Cache::builder()
                .max_capacity(50_000)
                .time_to_live(std::time::Duration::from_secs(300))
                .build(),
        }
    }

    /// The tenant's secrets, creating its data key on first use.
    pub async fn secrets(&self, tenant_id: &str) -> Result<Arc<TenantSecrets>, ApiError> {
        if let Some(s) = self.cache.get(tenant_id).await {
            return Ok(s);
        }
        let wrapped = match self.store.tenant_data_key(tenant_id).await? {
            Some(w) => w,
            None => {
                let key = DataKey::generate(&*self.rng).map_err(key_error)?;
                let wrapped = self
                    .provider
                    .wrap(tenant_id, PURPOSE, &key, &*self.rng)
                    .map_err(key_error)?;
                let text = serde_json::to_string(&wrapped)
                    .map_err(|e| ApiError::internal(format!("key encoding: {e}")))?;
                // Another writer may have won the race: use whichever is stored.
                self.store.put_tenant_data_key(tenant_id, &text).await?
            }
        };
        let wrapped: WrappedKey = serde_json::from_str(&wrapped)
            .map_err(|_| ApiError::internal("stored tenant data key is malformed"))?;
        let data_key = self
            .provider
            .unwrap(tenant_id, PURPOSE, &wrapped)
            .map_err(key_error)?;
        let hmac_key = data_key.derive("hmac").map_err(key_error)?;
        let secrets = Arc::new(TenantSecrets { data_key, hmac_key });
        self.cache
            .insert(tenant_id.to_string(), secrets.clone())
            .await;
        Ok(secrets)
    }

    /// Keyed digest of `data` under the tenant's HMAC key (domain-separated).
    pub async fn digest(
        &self,
        tenant_id: &str,
        domain: &str,
        data: &[u8],
    ) -> Result<String, ApiError> {
        let s = self.secrets(tenant_id).await?;
        Ok(hmac_hex(&s.hmac_key, domain, data))
    }

    /// An incremental digest for streamed output: HMAC over SHA-256 of the bytes, so the
    /// stream need not be buffered. Non-streamed output uses the same construction.
    pub async fn hasher(
        &self,
        tenant_id: &str,
        domain: &'static str,
    ) -> Result<OutputHasher, ApiError> {
        let s = self.secrets(tenant_id).await?;
        Ok(OutputHasher {
            key: s.hmac_key,
            domain,
            ctx: digest::Context::new(&digest::SHA256),
        })
    }

    /// Drops cached secrets (after a tenant is deleted, its key is gone for good).
    pub async fn forget(&self, tenant_id: &str) {
        self.cache.invalidate(tenant_id).await;
    }

    /// Drops every cached tenant secret (a change feed message that names no tenant).
    pub fn forget_all(&self) {
        self.cache.invalidate_all();
    }
}

pub struct OutputHasher {
    key: [u8; 32],
    domain: &'static str,
    ctx: digest::Context,
}

impl OutputHasher {
    pub fn update(&mut self, data: &[u8]) {
        self.ctx.update(data);
    }
    pub fn finish(self) -> String {
        let d = self.ctx.finish();
        hmac_hex(&self.key, self.domain, d.as_ref())
    }
}

fn key_error(e: palisade_audit::AuditError) -> ApiError {
    tracing::error!(error = %e, "tenant key operation failed");
    ApiError::unavailable(
        "key_unavailable",
        "tenant key material is unavailable; request refused",
    )
}
