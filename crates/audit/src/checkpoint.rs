//! Signed checkpoints over a tenant's chain head.
//!
//! A hash chain alone only shows that records are consistent with each other; whoever
//! can write the store can rewrite the whole chain. An Ed25519 signature over the head,
//! checkable with nothing but the public key, pins everything up to that seq.

use crate::AuditError;
use crate::canonical::canonical_json;
use crate::crypto::sha256_hex;
use aws_lc_rs::signature::{ED25519, Ed25519KeyPair, KeyPair as _, UnparsedPublicKey};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use serde::{Deserialize, Serialize};

/// Prefix of the signed bytes, so a checkpoint signature cannot be replayed as anything else.
pub const CHECKPOINT_SIGN_DOMAIN: &[u8] = b"palisade.checkpoint.v1\n";

/// The statement "tenant T's chain had head `head_hash` at `seq`".
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Checkpoint {
    /// Tenant whose chain this covers.
    pub tenant_id: String,
    /// Seq of the head receipt.
    pub seq: u64,
    /// `hash` of the receipt at `seq`.
    pub head_hash: String,
    /// When it was made (same format as receipts).
    pub created_at: String,
    /// Signing key: first 16 hex chars of SHA-256(public key). Lets verifiers pick the
    /// right key after a rotation.
    pub key_id: String,
}

impl Checkpoint {
    /// The exact bytes signed: `CHECKPOINT_SIGN_DOMAIN || canonical_json(checkpoint)`.
    pub fn signing_bytes(&self) -> Result<Vec<u8>, AuditError> {
        let canonical = canonical_json(&serde_json::to_value(self)?)?;
        let mut out = CHECKPOINT_SIGN_DOMAIN.to_vec();
        out.extend_from_slice(canonical.as_bytes());
        Ok(out)
    }
}

/// A checkpoint with its signature (flattened: the checkpoint members plus `signature`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignedCheckpoint {
    /// The signed statement.
    #[serde(flatten)]
    pub checkpoint: Checkpoint,
    /// Ed25519 signature over [`Checkpoint::signing_bytes`], standard base64.
    pub signature: String,
}

/// Key id of an Ed25519 public key (see [`Checkpoint::key_id`]).
pub fn checkpoint_key_id(public_key: &[u8]) -> String {
    sha256_hex(public_key)[..16].to_owned()
}

/// Signs checkpoints. Holds the private key; build it once at start from config.
#[derive(Debug)]
pub struct CheckpointSigner {
    pair: Ed25519KeyPair,
    key_id: String,
}

impl CheckpointSigner {
    /// From a 32-byte Ed25519 seed (e.g. `PALISADE_CHECKPOINT_KEY`, see [`crate::parse_key_32`]).
    pub fn from_seed(seed: &[u8; 32]) -> Result<Self, AuditError> {
        let pair = Ed25519KeyPair::from_seed_unchecked(seed)
            .map_err(|_| AuditError::InvalidKey("ed25519 seed rejected"))?;
        Ok(Self::with_pair(pair))
    }

    /// From an unencrypted PKCS#8 (v1 or v2) DER document, e.g. from `openssl genpkey`.
    pub fn from_pkcs8(der: &[u8]) -> Result<Self, AuditError> {
        let pair = Ed25519KeyPair::from_pkcs8(der)
            .map_err(|_| AuditError::InvalidKey("ed25519 pkcs8 rejected"))?;
        Ok(Self::with_pair(pair))
    }

    fn with_pair(pair: Ed25519KeyPair) -> Self {
        let key_id = checkpoint_key_id(pair.public_key().as_ref());
        Self { pair, key_id }
    }

    /// The 32-byte public key to publish (the endpoint serves it, verifiers need only it).
    pub fn public_key(&self) -> Vec<u8> {
        self.pair.public_key().as_ref().to_vec()
    }

    /// This key's id.
    pub fn key_id(&self) -> &str {
        &self.key_id
    }

    /// Signs the head `(seq, head_hash)` of `tenant_id`'s chain.
    pub fn sign(
        &self,
        tenant_id: &str,
        seq: u64,
        head_hash: &str,
        created_at: &str,
    ) -> Result<SignedCheckpoint, AuditError> {
        let checkpoint = Checkpoint {
            tenant_id: tenant_id.to_owned(),
            seq,
            head_hash: head_hash.to_owned(),
            created_at: created_at.to_owned(),
            key_id: self.key_id.clone(),
        };
        let sig = self
            .pair
            .try_sign(&checkpoint.signing_bytes()?)
            .map_err(|_| AuditError::Crypto("ed25519 sign"))?;
        Ok(SignedCheckpoint {
            checkpoint,
            signature: B64.encode(sig.as_ref()),
        })
    }
}

/// Checks the signature with the public key alone. Fails with [`AuditError::UnknownKey`]
/// when the checkpoint names another key, [`AuditError::BadSignature`] otherwise.
pub fn verify_checkpoint(public_key: &[u8], signed: &SignedCheckpoint) -> Result<(), AuditError> {
    if signed.checkpoint.key_id != checkpoint_key_id(public_key) {
        return Err(AuditError::UnknownKey(signed.checkpoint.key_id.clone()));
    }
    let sig = B64
        .decode(&signed.signature)
        .map_err(|_| AuditError::BadSignature)?;
    UnparsedPublicKey::new(&ED25519, public_key)
        .verify(&signed.checkpoint.signing_bytes()?, &sig)
        .map_err(|_| AuditError::BadSignature)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn signer() -> CheckpointSigner {
        CheckpointSigner::from_seed(&[42; 32]).unwrap()
    }

    #[test]
    fn sign_and_verify() {
        let s = signer();
        let head = "ab".repeat(32);
        let cp = s
            .sign("acme", 7, &head, "2025-01-31T12:00:00.000Z")
            .unwrap();
        assert_eq!(cp.checkpoint.key_id, s.key_id());
        verify_checkpoint(&s.public_key(), &cp).unwrap();
        // Deterministic (Ed25519): same input, same signature.
        assert_eq!(
            cp,
            s.sign("acme", 7, &head, "2025-01-31T12:00:00.000Z")
                .unwrap()
        );
    }

    #[test]
    fn forged_or_altered_checkpoints_fail() {
        let s = signer();
        let cp = s
            .sign("acme", 7, &"ab".repeat(32), "2025-01-31T12:00:00.000Z")
            .unwrap();
        for alter in [
            |c: &mut Checkpoint| c.seq = 8,
            |c: &mut Checkpoint| c.tenant_id = "other".into(),
            |c: &mut Checkpoint| c.head_hash = "cd".repeat(32),
            |c: &mut Checkpoint| c.created_at = "2025-01-31T12:00:00.001Z".into(),
        ] {
            let mut bad = cp.clone();
            alter(&mut bad.checkpoint);
            assert!(matches!(
                verify_checkpoint(&s.public_key(), &bad),
                Err(AuditError::BadSignature)
            ));
        }
        // Signed by another key that claims our key id.
        let mallory = CheckpointSigner::from_seed(&[7; 32]).unwrap();
        let mut forged = mallory
            .sign("acme", 7, &"ab".repeat(32), "2025-01-31T12:00:00.000Z")
            .unwrap();
        assert!(matches!(
            verify_checkpoint(&s.public_key(), &forged),
            Err(AuditError::UnknownKey(_))
        ));
        forged.checkpoint.key_id = s.key_id().to_owned();
        assert!(matches!(
            verify_checkpoint(&s.public_key(), &forged),
            Err(AuditError::BadSignature)
        ));
    }

    #[test]
    fn pkcs8_keys_load() {
        let doc = Ed25519KeyPair::generate().unwrap().to_pkcs8().unwrap();
        let s = CheckpointSigner::from_pkcs8(doc.as_ref()).unwrap();
        let cp = s
            .sign("t", 1, &"00".repeat(32), "2025-01-31T12:00:00.000Z")
            .unwrap();
        verify_checkpoint(&s.public_key(), &cp).unwrap();
        assert!(CheckpointSigner::from_pkcs8(b"junk").is_err());
    }

    #[test]
    fn wire_form_is_flat() {
        let cp = signer()
            .sign("acme", 1, &"00".repeat(32), "2025-01-31T12:00:00.000Z")
            .unwrap();
        let v = serde_json::to_value(&cp).unwrap();
        assert_eq!(v["seq"], 1);
        assert!(v["signature"].is_string());
        assert_eq!(serde_json::from_value::<SignedCheckpoint>(v).unwrap(), cp);
    }
}
