//! Keyed digests, key derivation and envelope encryption (aws-lc-rs only).
//!
//! Plain hashes of low-entropy data (user ids, short prompts) are reversible by
//! guessing, so receipts carry HMACs under per-tenant keys. Sensitive payloads are
//! encrypted under a per-tenant [`DataKey`], itself stored only wrapped by a
//! [`KeyProvider`]; deleting the wrapped data key shreds the tenant's payloads.

use crate::AuditError;
use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use aws_lc_rs::rand::SecureRandom;
use aws_lc_rs::{digest, hkdf, hmac};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use serde::{Deserialize, Serialize};

/// HMAC domain for prompt digests (`prompt_hmac`).
pub const DOMAIN_PROMPT: &str = "prompt";
/// HMAC domain for output digests (`output_hmac`).
pub const DOMAIN_OUTPUT: &str = "output";
/// HMAC domain for pseudonymised user ids.
pub const DOMAIN_USER: &str = "user";

/// `alg` value of a [`Sealed`] payload.
pub const SEALED_ALG: &str = "A256GCM";

const HMAC_LABEL: &[u8] = b"palisade.hmac.v1";
const KDF_SALT: &[u8] = b"palisade.kdf.v1";
const SEAL_AAD_LABEL: &[u8] = b"palisade.sealed.v1";
const WRAP_AAD_LABEL: &[u8] = b"palisade.wrap.v1";
const LOCAL_PROVIDER: &str = "local";

/// Lowercase hex SHA-256.
pub fn sha256_hex(data: &[u8]) -> String {
    hex::encode(digest::digest(&digest::SHA256, data))
}

/// SHA-256 of the concatenated parts, without building the concatenation.
pub fn sha256_hex_parts(parts: &[&[u8]]) -> String {
    let mut ctx = digest::Context::new(&digest::SHA256);
    for p in parts {
        ctx.update(p);
    }
    hex::encode(ctx.finish())
}

/// Builds an unambiguous byte string: `label`, then each part as a 4-byte big-endian
/// length followed by its bytes. Length prefixes stop `("ab","c")` colliding with `("a","bc")`.
fn framed(label: &[u8], parts: &[&[u8]]) -> Vec<u8> {
    let mut out =
        Vec::with_capacity(label.len() + parts.iter().map(|p| p.len() + 4).sum::<usize>());
    out.extend_from_slice(label);
    for p in parts {
        // Parts are identifiers and payloads far below 4 GiB; saturate rather than wrap.
        let len = u32::try_from(p.len()).unwrap_or(u32::MAX);
        out.extend_from_slice(&len.to_be_bytes());
        out.extend_from_slice(p);
    }
    out
}

/// HMAC-SHA256 over `"palisade.hmac.v1" || len(domain) || domain || len(data) || data`,
/// lowercase hex. The domain label keeps a prompt digest from ever equalling a user-id
/// pseudonym of the same bytes.
pub fn hmac_hex(key: &[u8], domain: &str, data: &[u8]) -> String {
    let key = hmac::Key::new(hmac::HMAC_SHA256, key);
    let msg = framed(HMAC_LABEL, &[domain.as_bytes(), data]);
    hex::encode(hmac::sign(&key, &msg))
}

/// Derives a 32-byte per-tenant key from a master secret with HKDF-SHA256
/// (salt `"palisade.kdf.v1"`, info = framed(tenant_id, purpose)). Use this for keys that
/// must survive without storage (e.g. HMAC keys when no data key exists); keys derived
/// from a [`DataKey`] are preferable because shredding destroys them too.
pub fn derive_tenant_key(
    master_secret: &[u8],
    tenant_id: &str,
    purpose: &str,
) -> Result<[u8; 32], AuditError> {
    hkdf_32(
        master_secret,
        &framed(b"tenant", &[tenant_id.as_bytes(), purpose.as_bytes()]),
    )
}

fn hkdf_32(secret: &[u8], info: &[u8]) -> Result<[u8; 32], AuditError> {
    let prk = hkdf::Salt::new(hkdf::HKDF_SHA256, KDF_SALT).extract(secret);
    let info = [info];
    let okm = prk
        .expand(&info, hkdf::HKDF_SHA256)
        .map_err(|_| AuditError::Crypto("hkdf expand"))?;
    let mut out = [0u8; 32];
    okm.fill(&mut out)
        .map_err(|_| AuditError::Crypto("hkdf fill"))?;
    Ok(out)
}

fn key_32(bytes: &[u8], what: &'static str) -> Result<[u8; 32], AuditError> {
    <[u8; 32]>::try_from(bytes).map_err(|_| AuditError::InvalidKey(what))
}

/// Parses a 32-byte key given as 64 hex characters or standard base64 (as read from a
/// file or an environment variable by the shell).
pub fn parse_key_32(text: &str) -> Result<[u8; 32], AuditError> {
    let t = text.trim();
    if t.len() == 64
        && let Ok(b) = hex::decode(t)
    {
        return key_32(&b, "key must be 32 bytes");
    }
    let b = B64
        .decode(t)
        .map_err(|_| AuditError::InvalidKey("expected 64 hex chars or base64"))?;
    key_32(&b, "key must be 32 bytes")
}

/// A tenant's 256-bit data key. Never stored in clear; see [`KeyProvider`].
#[derive(Clone, PartialEq, Eq)]
pub struct DataKey([u8; 32]);

impl std::fmt::Debug for DataKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DataKey(..)")
    }
}

impl DataKey {
    /// Draws a fresh key from `rng`.
    pub fn generate(rng: &dyn SecureRandom) -> Result<Self, AuditError> {
        let mut k = [0u8; 32];
        rng.fill(&mut k).map_err(|_| AuditError::Crypto("rng"))?;
        Ok(Self(k))
    }

    /// Wraps raw key bytes (e.g. just unwrapped by a KMS).
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, AuditError> {
        Ok(Self(key_32(bytes, "data key must be 32 bytes")?))
    }

    /// Raw bytes, for a [`KeyProvider`] to wrap. Do not log or persist them.
    pub fn expose_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// A subkey for `purpose` (e.g. the HMAC key for [`DOMAIN_PROMPT`] digests). Deriving
    /// HMAC keys from the data key means shredding it also makes pseudonyms unlinkable.
    pub fn derive(&self, purpose: &str) -> Result<[u8; 32], AuditError> {
        hkdf_32(&self.0, &framed(b"subkey", &[purpose.as_bytes()]))
    }

    fn aead(&self) -> Result<LessSafeKey, AuditError> {
        aead_key(&self.0)
    }
}

fn aead_key(k: &[u8; 32]) -> Result<LessSafeKey, AuditError> {
    let unbound = UnboundKey::new(&AES_256_GCM, k).map_err(|_| AuditError::Crypto("aes key"))?;
    Ok(LessSafeKey::new(unbound))
}

/// AES-256-GCM with a random 96-bit nonce; returns `nonce || ciphertext || tag`.
fn gcm_seal(
    key: &LessSafeKey,
    aad: &[u8],
    plaintext: &[u8],
    rng: &dyn SecureRandom,
) -> Result<(Vec<u8>, Vec<u8>), AuditError> {
    let mut nonce = [0u8; NONCE_LEN];
    rng.fill(&mut nonce)
        .map_err(|_| AuditError::Crypto("rng"))?;
    let mut buf = plaintext.to_vec();
    key.seal_in_place_append_tag(
        Nonce::assume_unique_for_key(nonce),
        Aad::from(aad),
        &mut buf,
    )
    .map_err(|_| AuditError::Crypto("seal"))?;
    Ok((nonce.to_vec(), buf))
}

fn gcm_open(
    key: &LessSafeKey,
    aad: &[u8],
    nonce: &[u8],
    ciphertext: &[u8],
) -> Result<Vec<u8>, AuditError> {
    let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| AuditError::Decrypt)?;
    let mut buf = ciphertext.to_vec();
    let plain = key
        .open_in_place(nonce, Aad::from(aad), &mut buf)
        .map_err(|_| AuditError::Decrypt)?;
    Ok(plain.to_vec())
}

/// An encrypted receipt payload. Part of the hashed receipt, so the chain still
/// verifies after the data key is destroyed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sealed {
    /// Always [`SEALED_ALG`] in schema v1.
    pub alg: String,
    /// 12-byte nonce, standard base64.
    pub nonce_b64: String,
    /// Ciphertext followed by the 16-byte GCM tag, standard base64.
    pub ciphertext_b64: String,
}

fn seal_aad(tenant_id: &str, receipt_id: &str) -> Vec<u8> {
    framed(
        SEAL_AAD_LABEL,
        &[tenant_id.as_bytes(), receipt_id.as_bytes()],
    )
}

/// Encrypts `plaintext` (sensitive receipt fields as JSON) under the tenant's data key.
/// The AAD binds tenant and receipt id, so a payload copied into another receipt or
/// tenant does not decrypt.
pub fn seal(
    key: &DataKey,
    tenant_id: &str,
    receipt_id: &str,
    plaintext: &serde_json::Value,
    rng: &dyn SecureRandom,
) -> Result<Sealed, AuditError> {
    let bytes = serde_json::to_vec(plaintext)?;
    let (nonce, ct) = gcm_seal(&key.aead()?, &seal_aad(tenant_id, receipt_id), &bytes, rng)?;
    Ok(Sealed {
        alg: SEALED_ALG.to_owned(),
        nonce_b64: B64.encode(nonce),
        ciphertext_b64: B64.encode(ct),
    })
}

/// Decrypts a [`Sealed`] payload; fails with [`AuditError::Decrypt`] on a wrong key,
/// tenant or receipt id, or any modification.
pub fn open(
    key: &DataKey,
    tenant_id: &str,
    receipt_id: &str,
    sealed: &Sealed,
) -> Result<serde_json::Value, AuditError> {
    if sealed.alg != SEALED_ALG {
        return Err(AuditError::UnsupportedAlg(sealed.alg.clone()));
    }
    let nonce = B64
        .decode(&sealed.nonce_b64)
        .map_err(|_| AuditError::Decrypt)?;
    let ct = B64
        .decode(&sealed.ciphertext_b64)
        .map_err(|_| AuditError::Decrypt)?;
    let plain = gcm_open(&key.aead()?, &seal_aad(tenant_id, receipt_id), &nonce, &ct)?;
    Ok(serde_json::from_slice(&plain)?)
}

/// A data key as stored: wrapped by a [`KeyProvider`]. Deleting this row shreds the
/// tenant's sealed payloads.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WrappedKey {
    /// Which provider wrapped it (`"local"`, later e.g. `"aws-kms"`).
    pub provider: String,
    /// Which master key of that provider (local: fingerprint; KMS: key ARN).
    pub master_key_id: String,
    /// Provider-specific blob, standard base64 (local: `nonce || ciphertext || tag`).
    pub blob_b64: String,
}

/// Wraps and unwraps data keys. Implemented locally by [`LocalKeyProvider`]; a cloud
/// KMS implementation lives in the I/O shell (it does network calls), behind this trait.
pub trait KeyProvider: Send + Sync {
    /// Wraps `key` for `tenant_id`; `purpose` (e.g. `"receipts"`) is bound as AAD.
    fn wrap(
        &self,
        tenant_id: &str,
        purpose: &str,
        key: &DataKey,
        rng: &dyn SecureRandom,
    ) -> Result<WrappedKey, AuditError>;
    /// Unwraps a key produced by [`KeyProvider::wrap`] with the same tenant and purpose.
    fn unwrap(
        &self,
        tenant_id: &str,
        purpose: &str,
        wrapped: &WrappedKey,
    ) -> Result<DataKey, AuditError>;
}

/// The 32-byte master key of [`LocalKeyProvider`] (from a file or env, read by the shell).
#[derive(Clone)]
pub struct MasterKey([u8; 32]);

impl std::fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "MasterKey({})", self.key_id())
    }
}

impl MasterKey {
    /// From raw bytes (exactly 32).
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, AuditError> {
        Ok(Self(key_32(bytes, "master key must be 32 bytes")?))
    }

    /// From 64 hex characters or base64 text.
    pub fn parse(text: &str) -> Result<Self, AuditError> {
        Ok(Self(parse_key_32(text)?))
    }

    /// A public fingerprint (16 hex chars) naming this key in [`WrappedKey::master_key_id`],
    /// so unwrapping picks the right key after a master-key rotation.
    pub fn key_id(&self) -> String {
        let d = digest::digest(
            &digest::SHA256,
            &framed(b"palisade.master_key_id.v1", &[&self.0]),
        );
        hex::encode(&d.as_ref()[..8])
    }
}

/// [`KeyProvider`] holding the master key in memory: AES-256-GCM, random nonce,
/// AAD = framed("palisade.wrap.v1", tenant_id, purpose).
#[derive(Debug, Clone)]
pub struct LocalKeyProvider {
    current: MasterKey,
    previous: Vec<MasterKey>,
}

impl LocalKeyProvider {
    /// Wraps new keys with `master`.
    pub fn new(master: MasterKey) -> Self {
        Self {
            current: master,
            previous: Vec::new(),
        }
    }

    /// Also accepts keys wrapped by an older master key (rotation: re-wrap, then drop it).
    pub fn with_previous(mut self, old: MasterKey) -> Self {
        self.previous.push(old);
        self
    }
}

impl KeyProvider for LocalKeyProvider {
    fn wrap(
        &self,
        tenant_id: &str,
        purpose: &str,
        key: &DataKey,
        rng: &dyn SecureRandom,
    ) -> Result<WrappedKey, AuditError> {
        let aad = framed(WRAP_AAD_LABEL, &[tenant_id.as_bytes(), purpose.as_bytes()]);
        let (mut nonce, ct) = gcm_seal(&aead_key(&self.current.0)?, &aad, key.expose_bytes(), rng)?;
        nonce.extend_from_slice(&ct);
        Ok(WrappedKey {
            provider: LOCAL_PROVIDER.to_owned(),
            master_key_id: self.current.key_id(),
            blob_b64: B64.encode(nonce),
        })
    }

    fn unwrap(
        &self,
        tenant_id: &str,
        purpose: &str,
        wrapped: &WrappedKey,
    ) -> Result<DataKey, AuditError> {
        if wrapped.provider != LOCAL_PROVIDER {
            return Err(AuditError::UnsupportedAlg(wrapped.provider.clone()));
        }
        let master = std::iter::once(&self.current)
            .chain(&self.previous)
            .find(|m| m.key_id() == wrapped.master_key_id)
            .ok_or_else(|| AuditError::UnknownKey(wrapped.master_key_id.clone()))?;
        let blob = B64
            .decode(&wrapped.blob_b64)
            .map_err(|_| AuditError::Decrypt)?;
        if blob.len() < NONCE_LEN {
            return Err(AuditError::Decrypt);
        }
        let (nonce, ct) = blob.split_at(NONCE_LEN);
        let aad = framed(WRAP_AAD_LABEL, &[tenant_id.as_bytes(), purpose.as_bytes()]);
        let plain = gcm_open(&aead_key(&master.0)?, &aad, nonce, ct)?;
        DataKey::from_bytes(&plain)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_lc_rs::rand::SystemRandom;
    use aws_lc_rs::test::rand::FixedByteRandom;
    use serde_json::json;

    #[test]
    fn hmac_is_keyed_and_domain_separated() {
        let a = hmac_hex(b"k1", DOMAIN_PROMPT, b"hello");
        assert_eq!(a.len(), 64);
        assert_eq!(a, hmac_hex(b"k1", DOMAIN_PROMPT, b"hello"));
        assert_ne!(a, hmac_hex(b"k2", DOMAIN_PROMPT, b"hello"));
        assert_ne!(a, hmac_hex(b"k1", DOMAIN_USER, b"hello"));
        // Framing: moving bytes between domain and data changes the digest.
        assert_ne!(hmac_hex(b"k", "ab", b"c"), hmac_hex(b"k", "a", b"bc"));
    }

    #[test]
    fn hmac_known_answer() {
        // Pins the construction (label, framing) so stored digests stay comparable.
        let mut msg = b"palisade.hmac.v1".to_vec();
        msg.extend_from_slice(&[0, 0, 0, 6]);
        msg.extend_from_slice(b"prompt");
        msg.extend_from_slice(&[0, 0, 0, 2]);
        msg.extend_from_slice(b"hi");
        let k = hmac::Key::new(hmac::HMAC_SHA256, b"key");
        assert_eq!(
            hmac_hex(b"key", "prompt", b"hi"),
            hex::encode(hmac::sign(&k, &msg))
        );
    }

    #[test]
    fn tenant_key_derivation_separates_tenants_and_purposes() {
        let a = derive_tenant_key(b"master", "t1", "prompt").unwrap();
        assert_eq!(a, derive_tenant_key(b"master", "t1", "prompt").unwrap());
        assert_ne!(a, derive_tenant_key(b"master", "t2", "prompt").unwrap());
        assert_ne!(a, derive_tenant_key(b"master", "t1", "user").unwrap());
        assert_ne!(a, derive_tenant_key(b"other", "t1", "prompt").unwrap());
        let dk = DataKey::from_bytes(&[7; 32]).unwrap();
        assert_ne!(dk.derive("prompt").unwrap(), dk.derive("user").unwrap());
    }

    #[test]
    fn seal_open_round_trip() {
        let rng = SystemRandom::new();
        let dk = DataKey::generate(&rng).unwrap();
        let payload = json!({"prompt_redacted": "my card is [CARD]", "client_addr": "10.0.0.1"});
        let s = seal(&dk, "t1", "r1", &payload, &rng).unwrap();
        assert_eq!(s.alg, SEALED_ALG);
        assert_eq!(open(&dk, "t1", "r1", &s).unwrap(), payload);
    }

    #[test]
    fn open_fails_for_wrong_tenant_receipt_key_or_tampering() {
        let rng = SystemRandom::new();
        let dk = DataKey::generate(&rng).unwrap();
        let s = seal(&dk, "t1", "r1", &json!({"x": "secret"}), &rng).unwrap();
        assert!(matches!(
            open(&dk, "t2", "r1", &s),
            Err(AuditError::Decrypt)
        ));
        assert!(matches!(
            open(&dk, "t1", "r2", &s),
            Err(AuditError::Decrypt)
        ));
        let other = DataKey::generate(&rng).unwrap();
        assert!(matches!(
            open(&other, "t1", "r1", &s),
            Err(AuditError::Decrypt)
        ));
        let mut ct = B64.decode(&s.ciphertext_b64).unwrap();
        ct[0] ^= 1;
        let t = Sealed {
            ciphertext_b64: B64.encode(ct),
            ..s.clone()
        };
        assert!(matches!(
            open(&dk, "t1", "r1", &t),
            Err(AuditError::Decrypt)
        ));
        let bad_alg = Sealed {
            alg: "none".into(),
            ..s
        };
        assert!(matches!(
            open(&dk, "t1", "r1", &bad_alg),
            Err(AuditError::UnsupportedAlg(_))
        ));
    }

    #[test]
    fn seal_is_deterministic_with_a_fixed_rng() {
        let rng = FixedByteRandom { byte: 9 };
        let dk = DataKey::from_bytes(&[1; 32]).unwrap();
        let a = seal(&dk, "t", "r", &json!("x"), &rng).unwrap();
        let b = seal(&dk, "t", "r", &json!("x"), &rng).unwrap();
        assert_eq!(a, b);
        assert_eq!(a.nonce_b64, B64.encode([9u8; 12]));
    }

    #[test]
    fn wrap_unwrap_with_local_provider_and_rotation() {
        let rng = SystemRandom::new();
        let old = MasterKey::from_bytes(&[1; 32]).unwrap();
        let new = MasterKey::parse(&hex::encode([2u8; 32])).unwrap();
        let dk = DataKey::generate(&rng).unwrap();
        let w = LocalKeyProvider::new(old.clone())
            .wrap("t1", "receipts", &dk, &rng)
            .unwrap();
        assert_eq!(w.master_key_id, old.key_id());
        let rotated = LocalKeyProvider::new(new.clone()).with_previous(old);
        assert_eq!(rotated.unwrap("t1", "receipts", &w).unwrap(), dk);
        // Wrong tenant or purpose: AAD mismatch.
        assert!(matches!(
            rotated.unwrap("t2", "receipts", &w),
            Err(AuditError::Decrypt)
        ));
        assert!(matches!(
            rotated.unwrap("t1", "upstream", &w),
            Err(AuditError::Decrypt)
        ));
        // Master key no longer available.
        assert!(matches!(
            LocalKeyProvider::new(new).unwrap("t1", "receipts", &w),
            Err(AuditError::UnknownKey(_))
        ));
    }

    #[test]
    fn key_parsing_and_debug_redaction() {
        let b64 = B64.encode([3u8; 32]);
        assert_eq!(MasterKey::parse(&b64).unwrap().0, [3u8; 32]);
        assert!(MasterKey::parse("abc").is_err());
        assert!(MasterKey::from_bytes(&[0; 31]).is_err());
        let dk = DataKey::from_bytes(&[5; 32]).unwrap();
        assert_eq!(format!("{dk:?}"), "DataKey(..)");
        assert!(
            !format!("{:?}", MasterKey::from_bytes(&[5; 32]).unwrap())
                .contains(&hex::encode([5u8; 32]))
        );
    }
}
