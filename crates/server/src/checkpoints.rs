//! Signed checkpoints: the Ed25519 key from configuration, the background job that signs
//! each tenant's chain head when it advanced, and the endpoint publishing the public key.
//!
//! The chain alone uses no secret, so whoever can write the store could rewrite it; a
//! signature over the head pins everything up to it for anyone holding the public key.

use crate::config::Config;
use crate::error::ApiError;
use crate::state::AppState;
use axum::Json;
use axum::extract::State;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use palisade_audit::{CheckpointSigner, checkpoint_key_id, format_created_at};
use palisade_store::{DynStore, StoreError};
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::oneshot;

/// Heads signed per store round trip.
const PAGE: u32 = 500;

/// Loads the checkpoint signing key from `audit.checkpoint_key`, `audit.checkpoint_key_file`
/// or, for SQLite, the key file beside the database. With `create`, a missing default key
/// file is created (a gateway); without, `Ok(None)` (a verifier must not invent a key).
/// An in-memory database gets a fresh key per process when `create` is set.
pub fn load_signer(config: &Config, create: bool) -> Result<Option<Arc<CheckpointSigner>>, String> {
    let audit = &config.audit;
    if let Some(k) = audit.checkpoint_key.as_deref() {
        let s = parse_signing_key(k.trim().as_bytes())
            .map_err(|e| format!("audit.checkpoint_key: {e}"))?;
        return Ok(Some(Arc::new(s)));
    }
    if let Some(path) = audit.checkpoint_key_file.as_deref() {
        let bytes =
            std::fs::read(path).map_err(|e| format!("audit.checkpoint_key_file {path}: {e}"))?;
        let s = parse_signing_key(&bytes).map_err(|e| format!("{path}: {e}"))?;
        return Ok(Some(Arc::new(s)));
    }
    let url = &config.storage.url;
    let Some(db) = url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))
    else {
        return Err(
            "set audit.checkpoint_key or audit.checkpoint_key_file for this storage backend".into(),
        );
    };
    let db = db.split('?').next().unwrap_or(db);
    if db.contains(":memory:") {
        if !create {
            return Ok(None);
        }
        let seed = random_seed()?;
        let s = CheckpointSigner::from_seed(&seed).map_err(|e| e.to_string())?;
        return Ok(Some(Arc::new(s)));
    }
    let path = format!("{db}.checkpoint-key");
    match std::fs::read(&path) {
        Ok(bytes) => Ok(Some(Arc::new(
            parse_signing_key(&bytes).map_err(|e| format!("{path}: {e}"))?,
        ))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && create => {
            let seed = random_seed()?;
            publish_key_file(&path, &hex::encode(seed))?;
            tracing::warn!(
                path,
                "created a new checkpoint signing key; back it up and publish its public key"
            );
            // Another process may have published first: whatever is on disk wins.
            let bytes = std::fs::read(&path).map_err(|e| format!("{path}: {e}"))?;
            Ok(Some(Arc::new(
                parse_signing_key(&bytes).map_err(|e| format!("{path}: {e}"))?,
            )))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(format!("{path}: {e}")),
    }
}

fn random_seed() -> Result<[u8; 32], String> {
    let mut seed = [0u8; 32];
    aws_lc_rs::rand::SecureRandom::fill(&aws_lc_rs::rand::SystemRandom::new(), &mut seed)
        .map_err(|_| "random number generator failed".to_string())?;
    Ok(seed)
}

/// Writes a private file atomically: a temporary file is completed first and then
/// hard-linked into place, which fails if the name exists. Two gateways starting at once
/// on one database therefore never see a half-written key, and both end up with the same.
fn publish_key_file(path: &str, text: &str) -> Result<(), String> {
    use std::io::Write;
    let tmp = format!(
        "{path}.tmp-{}-{}",
        std::process::id(),
        hex::encode(random_seed()?)
    );
    let result = (|| -> std::io::Result<()> {
        let mut opts = std::fs::OpenOptions::new();
        opts.write(true).create_new(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            opts.mode(0o600);
        }
        let mut f = opts.open(&tmp)?;
        f.write_all(text.as_bytes())?;
        f.sync_all()?;
        match std::fs::hard_link(&tmp, path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
            Err(e) => Err(e),
        }
    })();
    let _ = std::fs::remove_file(&tmp);
    result.map_err(|e| format!("{path}: {e}"))
}

/// A signing key in any of the accepted forms: 32-byte seed as hex or base64, PKCS#8 as
/// PEM or base64 DER, or raw PKCS#8 DER bytes.
pub fn parse_signing_key(bytes: &[u8]) -> Result<CheckpointSigner, String> {
    const HINT: &str = "expected an Ed25519 key: a 32-byte seed (64 hex characters or base64) or PKCS#8 (PEM, base64 or DER)";
    let Ok(text) = std::str::from_utf8(bytes) else {
        return CheckpointSigner::from_pkcs8(bytes).map_err(|_| HINT.to_string());
    };
    let text = text.trim();
    if text.is_empty() {
        return Err(format!("empty; {HINT}"));
    }
    if text.starts_with("-----BEGIN") {
        let der = pem_body(text, "PRIVATE KEY")
            .ok_or_else(|| format!("PEM must be a \"PRIVATE KEY\" (PKCS#8) block; {HINT}"))?;
        return CheckpointSigner::from_pkcs8(&der).map_err(|e| format!("{e}; {HINT}"));
    }
    if let Ok(seed) = palisade_audit::parse_key_32(text) {
        return CheckpointSigner::from_seed(&seed).map_err(|e| e.to_string());
    }
    match B64.decode(text) {
        Ok(der) => CheckpointSigner::from_pkcs8(&der).map_err(|e| format!("{e}; {HINT}")),
        Err(_) => Err(HINT.to_string()),
    }
}

fn pem_body(text: &str, label: &str) -> Option<Vec<u8>> {
    let begin = format!("-----BEGIN {label}-----");
    let end = format!("-----END {label}-----");
    let start = text.find(&begin)? + begin.len();
    let stop = text[start..].find(&end)? + start;
    let b64: String = text[start..stop].split_whitespace().collect();
    B64.decode(b64).ok()
}

/// DER prefix of an Ed25519 SubjectPublicKeyInfo (RFC 8410); the raw key follows.
const SPKI_PREFIX: [u8; 12] = [
    0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00,
];

/// A public key for verification: 32 bytes as hex or base64, a PEM `PUBLIC KEY`
/// (SubjectPublicKeyInfo), the JSON the public-key endpoint returns, or the raw 32 bytes.
/// The CLI passes file contents here too.
pub fn parse_public_key(bytes: &[u8]) -> Result<Vec<u8>, String> {
    const HINT: &str = "expected an Ed25519 public key: 64 hex characters, base64 of 32 bytes, a PEM PUBLIC KEY, or the JSON from /v1/audit/public-key";
    let Ok(text) = std::str::from_utf8(bytes) else {
        return match bytes.len() {
            32 => Ok(bytes.to_vec()),
            44 if bytes.starts_with(&SPKI_PREFIX) => Ok(bytes[12..].to_vec()),
            n => Err(format!("{n} bytes of binary; {HINT}")),
        };
    };
    let text = text.trim();
    if text.starts_with('{') {
        let v: Value =
            serde_json::from_str(text).map_err(|e| format!("not valid JSON ({e}); {HINT}"))?;
        let hex_key = v
            .get("public_key_hex")
            .and_then(Value::as_str)
            .ok_or_else(|| format!("JSON without \"public_key_hex\"; {HINT}"))?;
        return parse_public_key(hex_key.as_bytes());
    }
    if text.starts_with("-----BEGIN") {
        let der = pem_body(text, "PUBLIC KEY")
            .ok_or_else(|| format!("PEM must be a \"PUBLIC KEY\" block; {HINT}"))?;
        if der.len() == 44 && der.starts_with(&SPKI_PREFIX) {
            return Ok(der[12..].to_vec());
        }
        return Err(format!("PEM PUBLIC KEY is not an Ed25519 key; {HINT}"));
    }
    palisade_audit::parse_key_32(text)
        .map(|k| k.to_vec())
        .map_err(|_| HINT.to_string())
}

/// Signs every chain head that advanced since its tenant's last checkpoint; returns how
/// many checkpoints were written. Safe with several gateways on one store: the same head
/// signed twice is kept once.
pub async fn checkpoint_once(
    store: &DynStore,
    signer: &CheckpointSigner,
    now_ms: i64,
) -> Result<usize, StoreError> {
    let created_at = format_created_at(u64::try_from(now_ms).unwrap_or(0));
    let mut written = 0;
    loop {
        let heads = store.uncheckpointed_heads(PAGE).await?;
        let n = heads.len();
        for (tenant, head) in heads {
            let cp = signer
                .sign(&tenant, head.seq, &head.hash, &created_at)
                .map_err(|e| StoreError::Invalid(format!("checkpoint for {tenant}: {e}")))?;
            if store.put_checkpoint(&cp).await? {
                written += 1;
            }
        }
        if n < PAGE as usize {
            return Ok(written);
        }
    }
}

/// The background audit job: checkpoints every `checkpoint_interval_ms`, the retention
/// purge every `purge_interval_ms`. Stopped by [`AuditTask::shutdown`], which signs the
/// final heads once more so a clean stop leaves everything checkpointed.
pub struct AuditTask {
    stop: Option<oneshot::Sender<()>>,
    done: tokio::task::JoinHandle<()>,
}

impl AuditTask {
    pub fn start(
        store: DynStore,
        signer: Option<Arc<CheckpointSigner>>,
        config: &crate::config::AuditConfig,
    ) -> Self {
        let (stop_tx, mut stop_rx) = oneshot::channel::<()>();
        let cp_every = (config.checkpoint_interval_ms > 0)
            .then(|| Duration::from_millis(config.checkpoint_interval_ms));
        let purge_every =
            (config.purge_interval_ms > 0).then(|| Duration::from_millis(config.purge_interval_ms));
        let default_days = config.default_retention_days;
        let done = tokio::spawn(async move {
            let mut cp_tick = cp_every.map(interval);
            let mut purge_tick = purge_every.map(interval);
            loop {
                tokio::select! {
                    _ = &mut stop_rx => break,
                    _ = tick(&mut cp_tick) => {
                        if let Some(s) = &signer {
                            run_checkpoints(&store, s).await;
                        }
                    }
                    _ = tick(&mut purge_tick) => {
                        let now = palisade_store::now_ms();
                        match crate::retention::purge_once(&store, signer.as_deref(), default_days, None, now).await {
                            Ok(outcomes) => {
                                for o in outcomes.iter().filter(|o| o.deleted > 0) {
                                    tracing::info!(tenant = %o.tenant_id, deleted = o.deleted, anchor_seq = o.anchor_seq, "retention purge");
                                }
                            }
                            Err(e) => tracing::error!(error = %e, "retention purge failed"),
                        }
                    }
                }
            }
            if let Some(s) = &signer
                && cp_every.is_some()
            {
                run_checkpoints(&store, s).await;
            }
        });
        Self {
            stop: Some(stop_tx),
            done,
        }
    }

    /// Stops the job after a final checkpoint pass (call after receipts are flushed).
    pub async fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let _ = (&mut self.done).await;
    }
}

fn interval(every: Duration) -> tokio::time::Interval {
    let mut i = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
    i.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    i
}

async fn tick(i: &mut Option<tokio::time::Interval>) {
    match i {
        Some(i) => {
            i.tick().await;
        }
        None => std::future::pending::<()>().await,
    }
}

async fn run_checkpoints(store: &DynStore, signer: &CheckpointSigner) {
    match checkpoint_once(store, signer, palisade_store::now_ms()).await {
        Ok(0) => {}
        Ok(n) => tracing::debug!(checkpoints = n, "signed chain heads"),
        Err(e) => tracing::error!(error = %e, "checkpointing failed"),
    }
}

/// `GET /v1/audit/public-key`: the key that verifies checkpoints. Public, no credential.
pub async fn public_key(State(state): State<AppState>) -> Result<Json<Value>, ApiError> {
    let Some(signer) = state.checkpoint_signer.as_deref() else {
        return Err(ApiError::not_found(
            "checkpoint signing is not configured on this gateway",
        ));
    };
    let key = signer.public_key();
    Ok(Json(public_key_json(&key)))
}

/// The public-key document (also printed by `palisade audit public-key`).
pub fn public_key_json(key: &[u8]) -> Value {
    json!({
        "alg": "Ed25519",
        "key_id": checkpoint_key_id(key),
        "public_key_hex": hex::encode(key),
        "public_key_b64": B64.encode(key),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signing_keys_in_every_form() {
        let seed = [7u8; 32];
        let want = CheckpointSigner::from_seed(&seed).unwrap().public_key();
        for text in [
            hex::encode(seed),
            B64.encode(seed),
            format!("  {}\n", hex::encode(seed)),
        ] {
            assert_eq!(
                parse_signing_key(text.as_bytes()).unwrap().public_key(),
                want
            );
        }
        let doc = aws_lc_rs::signature::Ed25519KeyPair::generate()
            .unwrap()
            .to_pkcs8()
            .unwrap();
        let der = doc.as_ref();
        let pk = parse_signing_key(der).unwrap().public_key();
        let pem = format!(
            "-----BEGIN PRIVATE KEY-----\n{}\n-----END PRIVATE KEY-----\n",
            B64.encode(der)
        );
        assert_eq!(parse_signing_key(pem.as_bytes()).unwrap().public_key(), pk);
        assert_eq!(
            parse_signing_key(B64.encode(der).as_bytes())
                .unwrap()
                .public_key(),
            pk
        );
        for bad in [
            "",
            "zz",
            "abcd",
            "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----",
        ] {
            let e = parse_signing_key(bad.as_bytes()).err().unwrap();
            assert!(e.contains("Ed25519"), "{bad:?}: {e}");
        }
        assert!(parse_signing_key(&[0xff, 0xfe, 0x00]).is_err());
    }

    #[test]
    fn public_keys_in_every_form() {
        let key = CheckpointSigner::from_seed(&[3; 32]).unwrap().public_key();
        let mut spki = SPKI_PREFIX.to_vec();
        spki.extend_from_slice(&key);
        let pem = format!(
            "-----BEGIN PUBLIC KEY-----\n{}\n-----END PUBLIC KEY-----\n",
            B64.encode(&spki)
        );
        let doc = public_key_json(&key).to_string();
        for input in [
            hex::encode(&key).into_bytes(),
            B64.encode(&key).into_bytes(),
            pem.into_bytes(),
            doc.into_bytes(),
            key.clone(),
            spki.clone(),
        ] {
            assert_eq!(parse_public_key(&input).unwrap(), key);
        }
        for bad in [
            &b"nothex"[..],
            b"{\"x\":1}",
            b"{not json",
            &[0xff; 7],
            b"-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----",
        ] {
            let e = parse_public_key(bad).unwrap_err();
            assert!(e.contains("Ed25519"), "{e}");
        }
    }

    #[test]
    fn default_key_file_is_created_once_and_reused() {
        let dir = tempfile::tempdir().unwrap();
        let mut cfg = Config::default();
        cfg.storage.url = format!("sqlite://{}", dir.path().join("x.db").display());
        assert!(
            load_signer(&cfg, false).unwrap().is_none(),
            "verifiers do not invent keys"
        );
        let a = load_signer(&cfg, true).unwrap().unwrap();
        let b = load_signer(&cfg, true).unwrap().unwrap();
        assert_eq!(a.public_key(), b.public_key());
        assert_eq!(
            load_signer(&cfg, false).unwrap().unwrap().key_id(),
            a.key_id()
        );
        cfg.audit.checkpoint_key = Some("not a key".into());
        let e = load_signer(&cfg, true).err().unwrap();
        assert!(e.starts_with("audit.checkpoint_key:"), "{e}");
        cfg.audit.checkpoint_key = None;
        cfg.audit.checkpoint_key_file = Some(dir.path().join("missing").display().to_string());
        let e = load_signer(&cfg, true).err().unwrap();
        assert!(e.starts_with("audit.checkpoint_key_file"), "{e}");
        cfg.audit.checkpoint_key_file = None;
        cfg.storage.url = "postgres://x/y".into();
        assert!(load_signer(&cfg, true).is_err());
    }
}
