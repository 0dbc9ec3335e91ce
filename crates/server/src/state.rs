//! Shared state of one gateway process. Everything here is either immutable config or a
//! handle that is safe to clone into request tasks.

use crate::config::Config;
use crate::error::ApiError;
use crate::receipts::ReceiptWriter;
use crate::tenant_keys::TenantKeys;
use aws_lc_rs::rand::SystemRandom;
use palisade_store::{ApiKey, DynStore, Tenant};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use tokio_util::task::TaskTracker;

/// A key row with its tenant, as cached for authentication.
#[derive(Clone)]
pub struct KeyEntry {
    pub key: Arc<ApiKey>,
    pub tenant: Arc<Tenant>,
}

#[derive(Clone)]
pub struct AppState {
    pub config: Arc<Config>,
    pub store: DynStore,
    pub http: reqwest::Client,
    pub receipts: ReceiptWriter,
    pub tenant_keys: TenantKeys,
    pub policies: crate::policy::Policies,
    pub guards: crate::content::Guards,
    /// Rate-limit and budget counters (see `limits.rs`).
    pub limits: crate::limits::Limits,
    pub rng: Arc<SystemRandom>,
    /// Background work that must finish before exit (late receipts of cut streams).
    pub tracker: TaskTracker,
    /// Checkpoint signing key (its public half is served at `/v1/audit/public-key`);
    /// set by `RunningServer::start`.
    pub checkpoint_signer: Option<Arc<palisade_audit::CheckpointSigner>>,
    /// Metrics and Sentinel's intake (fed by the receipt writer's commit observer).
    pub monitor: crate::sentinel::Monitor,
    /// Signed, retried webhook deliveries (alerts, approvals).
    pub webhooks: crate::webhooks::Webhooks,
    /// SIEM sinks (commit observers on `receipts`).
    pub sinks: crate::sinks::Sinks,
    /// Tenants' own upstream keys, decrypted, for a few seconds (`upstream_keys.rs`).
    pub upstream_keys: crate::upstream_keys::UpstreamKeys,
    /// Upstream URLs, parsed once: parsing the URL per call showed up at a few per cent
    /// of the gateway's CPU.
    pub upstream_urls: Arc<UpstreamUrls>,
    /// Auth cache. Admin changes invalidate entries at once; the short TTL bounds how long
    /// a change made by another process (CLI, another replica) can take to be seen.
    keys: moka::future::Cache<String, Option<KeyEntry>>,
    draining: Arc<AtomicBool>,
}

/// The upstream endpoints Palisade forwards to (`anthropic.base_url` + path).
pub struct UpstreamUrls {
    pub messages: reqwest::Url,
    pub count_tokens: reqwest::Url,
}

/// How long a cached key row may be served before it is read again (the default of
/// `storage.cache_ttl_ms`).
pub const KEY_CACHE_TTL: Duration = Duration::from_secs(1);

impl AppState {
    pub fn new(config: Config, store: DynStore, tenant_keys: TenantKeys) -> Result<Self, ApiError> {
        let http = reqwest::Client::builder()
            .connect_timeout(config.timeouts.connect())
            .pool_idle_timeout(Duration::from_secs(90))
            .pool_max_idle_per_host(256)
            .tcp_nodelay(true)
            // Palisade never follows redirects from the upstream: a redirect could carry
            // the platform key elsewhere.
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| ApiError::internal(format!("http client: {e}")))?;
        let tracker = TaskTracker::new();
        let monitor = crate::sentinel::Monitor::new(&config.sentinel);
        let audit_metrics = monitor.metrics.audit.clone();
        let receipts = ReceiptWriter::start_with(
            store.clone(),
            crate::receipts::WriterOptions {
                max_batch: config.receipts.max_batch,
                write_behind_max_pending: (config.receipts.mode == "write_behind")
                    .then_some(config.receipts.write_behind_max_pending),
                spill: Some(crate::receipts::Spill::new(
                    config.receipts.spill_path(&config.storage.url),
                )),
                metrics: audit_metrics.clone(),
                gather_yields: None,
            },
            &tracker,
        );
        let policies_store = store.clone();
        receipts.add_observer(monitor.observer());
        let sinks = crate::sinks::Sinks::start(&config.audit.sinks, http.clone(), audit_metrics)
            .map_err(|e| ApiError::internal(format!("audit sinks: {e}")))?;
        for o in sinks.observers() {
            receipts.add_observer(o.clone());
        }
        let limits = crate::limits::Limits::from_config(&config)?;
        let cache_ttl = Duration::from_millis(config.storage.cache_ttl_ms.clamp(1, 3_600_000));
        let webhooks = crate::webhooks::Webhooks::new(http.clone(), &config.sentinel);
        let base = config.anthropic.base_url.trim_end_matches('/');
        let parse = |path: &str| {
            reqwest::Url::parse(&format!("{base}{path}"))
                .map_err(|e| ApiError::internal(format!("anthropic.base_url: {e}")))
        };
        let upstream_urls = Arc::new(UpstreamUrls {
            messages: parse("/v1/messages")?,
            count_tokens: parse("/v1/messages/count_tokens")?,
        });
        Ok(Self {
            upstream_urls,
            config: Arc::new(config),
            store,
            http,
            webhooks,
            receipts,
            sinks,
            upstream_keys: crate::upstream_keys::UpstreamKeys::default(),
            tenant_keys,
            policies: crate::policy::Policies::with_ttl(policies_store, cache_ttl),
            guards: crate::content::Guards::default(),
            limits,
            rng: Arc::new(SystemRandom::new()),
            tracker,
            keys: moka::future::Cache::builder()
                .max_capacity(100_000)
                .time_to_live(cache_ttl)
                .build(),
            draining: Arc::new(AtomicBool::new(false)),
            checkpoint_signer: None,
            monitor,
        })
    }

    /// Key row and tenant for a public key id, through the cache. A miss also records
    /// `last_used_at`, so that column costs at most one write per key per TTL.
    pub async fn lookup_key(&self, id: &str) -> Result<Option<KeyEntry>, ApiError> {
        if let Some(hit) = self.keys.get(id).await {
            return Ok(hit);
        }
        let entry = match self.store.get_key(id).await? {
            Some(key) => self
                .store
                .get_tenant(&key.tenant_id)
                .await?
                .map(|tenant| KeyEntry {
                    key: Arc::new(key),
                    tenant: Arc::new(tenant),
                }),
            None => None,
        };
        if let Some(e) = &entry {
            let store = self.store.clone();
            let kid = e.key.id.clone();
            self.tracker.spawn(async move {
                if let Err(err) = store.touch_key(&kid, palisade_store::now_ms()).await {
                    tracing::warn!(error = %err, "could not record key last_used_at");
                }
            });
        }
        self.keys.insert(id.to_string(), entry.clone()).await;
        Ok(entry)
    }

    pub async fn forget_key(&self, id: &str) {
        self.keys.invalidate(id).await;
    }

    /// Tenant changes touch every key of the tenant; the cache is small, drop it all.
    pub fn forget_all_keys(&self) {
        self.keys.invalidate_all();
    }

    pub fn set_draining(&self) {
        self.draining.store(true, Ordering::SeqCst);
    }

    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::SeqCst)
    }
}
