//! Palisade's audit core: receipt schema v1, canonical JSON, hash chains, signed
//! checkpoints, keyed digests and envelope encryption.
//!
//! Pure: no I/O, clock or environment. Time comes in as strings or Unix milliseconds
//! and randomness as a `&dyn SecureRandom`, so the store and server decide both and
//! tests stay deterministic. The format is specified in `docs/receipts.md`.
#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used, clippy::panic))]

pub mod canonical;
pub mod chain;
pub mod checkpoint;
pub mod crypto;
pub mod receipt;

pub use aws_lc_rs::rand::{SecureRandom, SystemRandom};
pub use canonical::{CanonicalError, canonical_json};
pub use chain::{
    Anchor, ChainVerifier, ExportReport, Problem, ProblemKind, VerifyReport, export_anchor_line,
    export_checkpoint_line, export_receipt_line, verify_chain, verify_chain_with_checkpoints,
    verify_export,
};
pub use checkpoint::{
    Checkpoint, CheckpointSigner, SignedCheckpoint, checkpoint_key_id, verify_checkpoint,
};
pub use crypto::{
    DOMAIN_OUTPUT, DOMAIN_PROMPT, DOMAIN_USER, DataKey, KeyProvider, LocalKeyProvider, MasterKey,
    Sealed, WrappedKey, derive_tenant_key, hmac_hex, open, parse_key_32, seal, sha256_hex,
};
pub use receipt::{
    AdminChange, ChainHead, Finding, PolicyRef, Receipt, ReceiptKind, SCHEMA_VERSION, ToolDecision,
    ToolDirection, ZERO_HASH, format_created_at, new_receipt_id, receipt_hash_of_value,
    validate_created_at,
};

/// Errors of this crate. Crypto failures are deliberately coarse (no oracle).
#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    /// A value has no canonical JSON form.
    #[error(transparent)]
    Canonical(#[from] CanonicalError),
    /// JSON (de)serialization failed.
    #[error("json: {0}")]
    Json(#[from] serde_json::Error),
    /// A receipt field is invalid for sealing into the chain.
    #[error("invalid {field}: {reason}")]
    InvalidField {
        /// Field name.
        field: &'static str,
        /// Why.
        reason: String,
    },
    /// Key material of the wrong size or format.
    #[error("invalid key: {0}")]
    InvalidKey(&'static str),
    /// Decryption or unwrapping failed: wrong key, tenant, receipt id or tampering.
    #[error("decryption failed")]
    Decrypt,
    /// An algorithm or provider this build does not know.
    #[error("unsupported algorithm or provider {0:?}")]
    UnsupportedAlg(String),
    /// A key id that none of the given keys has.
    #[error("unknown key id {0:?}")]
    UnknownKey(String),
    /// A checkpoint signature that does not verify.
    #[error("bad signature")]
    BadSignature,
    /// A primitive failed (rng, key setup).
    #[error("crypto failure: {0}")]
    Crypto(&'static str),
}
