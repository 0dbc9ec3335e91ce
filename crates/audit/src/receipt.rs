//! Receipt schema v1 and its hash.

use crate::AuditError;
use crate::canonical::{CanonicalError, canonical_json};
use crate::crypto::{DataKey, Sealed, open, seal, sha256_hex_parts};
use aws_lc_rs::rand::SecureRandom;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The receipt schema this crate writes and verifies.
pub const SCHEMA_VERSION: u32 = 1;

/// Prefix of the hashed bytes, so a receipt hash can never be confused with a hash
/// of anything else (checkpoints, HMACs) that happens to share the canonical form.
pub const RECEIPT_HASH_DOMAIN: &[u8] = b"palisade.receipt.v1\n";

/// `prev_hash` of the first receipt of a chain (64 zeros).
pub const ZERO_HASH: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// What a receipt records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReceiptKind {
    /// A `/v1/messages` (or count_tokens) call.
    Message,
    /// A tool-call decision (`/v1/guard/tool` or a tool_use in a response).
    ToolDecision,
    /// A `/v1/guard/scan` call.
    Scan,
    /// An approval granted or denied.
    Approval,
    /// A control-plane change (tenant, key, policy).
    AdminChange,
    /// An alert raised.
    Alert,
    /// A request refused by a rate or budget limit.
    RateLimit,
}

impl ReceiptKind {
    /// Every kind, in schema order.
    pub const ALL: [ReceiptKind; 7] = [
        Self::Message,
        Self::ToolDecision,
        Self::Scan,
        Self::Approval,
        Self::AdminChange,
        Self::Alert,
        Self::RateLimit,
    ];

    /// The wire name (as serialized and stored).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Message => "message",
            Self::ToolDecision => "tool_decision",
            Self::Scan => "scan",
            Self::Approval => "approval",
            Self::AdminChange => "admin_change",
            Self::Alert => "alert",
            Self::RateLimit => "rate_limit",
        }
    }
}

impl std::fmt::Display for ReceiptKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for ReceiptKind {
    type Err = AuditError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|k| k.as_str() == s)
            .ok_or_else(|| AuditError::InvalidField {
                field: "kind",
                reason: format!("unknown kind {s:?}"),
            })
    }
}

/// Which policy versions were active and which rule decided.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PolicyRef {
    /// Version (content hash or number) of the platform policy.
    #[serde(default)]
    pub platform_version: Option<String>,
    /// Version of the tenant policy.
    #[serde(default)]
    pub tenant_version: Option<String>,
    /// Id of the deciding rule, if a rule matched.
    #[serde(default)]
    pub rule_id: Option<String>,
    /// Layer that decided: `"platform"`, `"tenant"` or `"default"`.
    #[serde(default)]
    pub layer: Option<String>,
}

/// A content-detector summary: counts only, never the matched text.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Finding {
    /// Detector / entity type, e.g. `"email"`, `"aws_secret"`.
    pub entity: String,
    /// Number of matches.
    pub count: u64,
    /// Action taken: `block`, `redact`, `pseudonymize`, `flag`.
    pub action: String,
}

/// Where in the exchange a tool appeared.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ToolDirection {
    /// Listed in the request's `tools`.
    Offered,
    /// A `tool_use` the model emitted.
    Called,
    /// A `tool_result` the client sent back.
    Result,
}

/// One tool decision.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ToolDecision {
    /// Tool name.
    pub tool: String,
    /// `allow`, `deny`, `require_approval`.
    pub decision: String,
    /// Deciding rule id.
    #[serde(default)]
    pub rule_id: Option<String>,
    /// Offered, called or result.
    pub direction: ToolDirection,
}

/// Who changed what, for `admin_change` receipts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AdminChange {
    /// `"platform_admin"` or a key id.
    pub actor: String,
    /// What was changed, e.g. `"tenant/acme/policy"`.
    pub object: String,
    /// The change (no secrets; integers and strings only).
    #[serde(default)]
    pub change: Value,
}

/// One audit record. Every field except `hash` is covered by `hash`; Option fields
/// serialize as `null` and lists as `[]`, so the hashed form always has every member.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Receipt {
    /// UUIDv7 (time-ordered, lowercase hyphenated).
    pub id: String,
    /// Owning tenant; each tenant has its own chain.
    pub tenant_id: String,
    /// Position in the tenant's chain, 1-based, assigned by the store.
    pub seq: u64,
    /// `hash` of receipt `seq - 1` ([`ZERO_HASH`] for seq 1; the anchor's hash after a purge).
    pub prev_hash: String,
    /// Hex SHA-256 of `RECEIPT_HASH_DOMAIN || canonical(receipt without hash)`.
    pub hash: String,
    /// Always [`SCHEMA_VERSION`].
    pub schema_version: u32,
    /// RFC 3339 UTC with milliseconds, e.g. `2025-01-31T12:00:00.000Z`.
    pub created_at: String,
    /// What this receipt records.
    pub kind: ReceiptKind,
    /// Public id of the API key used (None for the platform admin token).
    #[serde(default)]
    pub key_id: Option<String>,
    /// User id from the credential, or its HMAC pseudonym (per tenant configuration).
    #[serde(default)]
    pub user_id: Option<String>,
    /// Palisade's request id.
    #[serde(default)]
    pub request_id: Option<String>,
    /// Requested model.
    #[serde(default)]
    pub model: Option<String>,
    /// `allow`, `deny`, `redact`, `require_approval`, `error`, ...
    pub decision: String,
    /// Palisade reason code when not a plain allow.
    #[serde(default)]
    pub reason_code: Option<String>,
    /// HTTP status from the upstream, if it was called.
    #[serde(default)]
    pub upstream_status: Option<u16>,
    /// Upstream's request id (`request-id` header).
    #[serde(default)]
    pub upstream_request_id: Option<String>,
    /// From upstream usage.
    #[serde(default)]
    pub input_tokens: Option<u64>,
    /// From upstream usage.
    #[serde(default)]
    pub output_tokens: Option<u64>,
    /// Upstream stop_reason.
    #[serde(default)]
    pub stop_reason: Option<String>,
    /// Wall time in Palisade, milliseconds.
    #[serde(default)]
    pub latency_ms: Option<u64>,
    /// Keyed HMAC (domain `prompt`) of the prompt; never the prompt.
    #[serde(default)]
    pub prompt_hmac: Option<String>,
    /// Keyed HMAC (domain `output`) of the output.
    #[serde(default)]
    pub output_hmac: Option<String>,
    /// Client address, if the tenant's configuration records it.
    #[serde(default)]
    pub client_addr: Option<String>,
    /// Active policy versions and deciding rule.
    #[serde(default)]
    pub policy: Option<PolicyRef>,
    /// Content findings summary.
    #[serde(default)]
    pub findings: Vec<Finding>,
    /// Tool decisions.
    #[serde(default)]
    pub tools: Vec<ToolDecision>,
    /// Approval this receipt refers to.
    #[serde(default)]
    pub approval_id: Option<String>,
    /// Control-plane change, for `admin_change`.
    #[serde(default)]
    pub admin: Option<AdminChange>,
    /// Kind-specific extras (integers and strings only: floats cannot be hashed).
    #[serde(default)]
    pub details: Value,
    /// Encrypted sensitive fields (see [`crate::seal`]).
    #[serde(default)]
    pub sealed: Option<Sealed>,
}

/// The last link of a tenant's chain, which the next receipt extends.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChainHead {
    /// Seq of the last receipt (0 for an empty chain, the anchor's seq after a purge).
    pub seq: u64,
    /// Its hash ([`ZERO_HASH`] for an empty chain).
    pub hash: String,
}

impl ChainHead {
    /// The head of an empty chain.
    pub fn genesis() -> Self {
        Self {
            seq: 0,
            hash: ZERO_HASH.to_owned(),
        }
    }
}

impl Receipt {
    /// A receipt with every optional field empty. The store fills `seq`, `prev_hash`
    /// and `hash` via [`Receipt::seal_into_chain`] inside its transaction.
    pub fn new(
        id: impl Into<String>,
        tenant_id: impl Into<String>,
        kind: ReceiptKind,
        created_at: impl Into<String>,
        decision: impl Into<String>,
    ) -> Self {
        Self {
            id: id.into(),
            tenant_id: tenant_id.into(),
            seq: 0,
            prev_hash: String::new(),
            hash: String::new(),
            schema_version: SCHEMA_VERSION,
            created_at: created_at.into(),
            kind,
            key_id: None,
            user_id: None,
            request_id: None,
            model: None,
            decision: decision.into(),
            reason_code: None,
            upstream_status: None,
            upstream_request_id: None,
            input_tokens: None,
            output_tokens: None,
            stop_reason: None,
            latency_ms: None,
            prompt_hmac: None,
            output_hmac: None,
            client_addr: None,
            policy: None,
            findings: Vec::new(),
            tools: Vec::new(),
            approval_id: None,
            admin: None,
            details: Value::Null,
            sealed: None,
        }
    }

    /// The hash this receipt should carry, computed from its current fields.
    pub fn compute_hash(&self) -> Result<String, AuditError> {
        // The same bytes as `receipt_hash_of_value`, without cloning the map (this runs
        // for every receipt, in the writer's sequential path).
        let mut v = serde_json::to_value(self)?;
        if let Value::Object(m) = &mut v {
            m.remove("hash");
        }
        Ok(hash_canonical(&canonical_json(&v)?))
    }

    /// The canonical JSON that is hashed (every field except `hash`).
    pub fn canonical_json(&self) -> Result<String, AuditError> {
        let mut v = serde_json::to_value(self)?;
        if let Value::Object(m) = &mut v {
            m.remove("hash");
        }
        Ok(canonical_json(&v)?)
    }

    /// Whether the stored `hash` matches the fields.
    pub fn hash_is_valid(&self) -> bool {
        self.compute_hash().is_ok_and(|h| h == self.hash)
    }

    /// Links this receipt after `prev`: sets `seq = prev.seq + 1`, `prev_hash`,
    /// `schema_version` and `hash`, and returns the new head. Call it inside the
    /// transaction that reads `prev` and inserts this receipt, so the chain cannot fork.
    /// Validates id (UUIDv7), tenant, `created_at` shape and hashability first.
    pub fn seal_into_chain(&mut self, prev: &ChainHead) -> Result<ChainHead, AuditError> {
        validate_id(&self.id)?;
        if self.tenant_id.is_empty() {
            return Err(AuditError::InvalidField {
                field: "tenant_id",
                reason: "empty".into(),
            });
        }
        validate_created_at(&self.created_at)?;
        if !is_hex_hash(&prev.hash) {
            return Err(AuditError::InvalidField {
                field: "prev_hash",
                reason: "not 64 lowercase hex".into(),
            });
        }
        let seq = prev
            .seq
            .checked_add(1)
            .ok_or_else(|| AuditError::InvalidField {
                field: "seq",
                reason: "overflow".into(),
            })?;
        self.seq = seq;
        self.prev_hash = prev.hash.clone();
        self.schema_version = SCHEMA_VERSION;
        self.hash = self.compute_hash()?;
        Ok(ChainHead {
            seq,
            hash: self.hash.clone(),
        })
    }

    /// The head this receipt forms (after it was sealed into the chain).
    pub fn head(&self) -> ChainHead {
        ChainHead {
            seq: self.seq,
            hash: self.hash.clone(),
        }
    }

    /// Encrypts `payload` into `sealed`, bound to this receipt's tenant and id. Call before
    /// [`Receipt::seal_into_chain`] so the hash covers the ciphertext.
    pub fn seal_sensitive(
        &mut self,
        key: &DataKey,
        payload: &Value,
        rng: &dyn SecureRandom,
    ) -> Result<(), AuditError> {
        self.sealed = Some(seal(key, &self.tenant_id, &self.id, payload, rng)?);
        Ok(())
    }

    /// Decrypts `sealed`; `Ok(None)` if there is none.
    pub fn open_sensitive(&self, key: &DataKey) -> Result<Option<Value>, AuditError> {
        self.sealed
            .as_ref()
            .map(|s| open(key, &self.tenant_id, &self.id, s))
            .transpose()
    }
}

/// Hash of a receipt given as raw JSON (e.g. an export line): the `hash` member is
/// removed, the rest canonicalised and hashed. Works on any receipt schema-v1 object,
/// including members this crate does not know, which is what a third party does.
pub fn receipt_hash_of_value(receipt: &Value) -> Result<String, CanonicalError> {
    let canonical = match receipt {
        Value::Object(m) if m.contains_key("hash") => {
            let mut m = m.clone();
            m.remove("hash");
            canonical_json(&Value::Object(m))?
        }
        other => canonical_json(other)?,
    };
    Ok(hash_canonical(&canonical))
}

fn hash_canonical(canonical: &str) -> String {
    sha256_hex_parts(&[RECEIPT_HASH_DOMAIN, canonical.as_bytes()])
}

/// 64 lowercase hex characters.
pub fn is_hex_hash(s: &str) -> bool {
    s.len() == 64
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// A fresh UUIDv7 string from the caller's clock and randomness (this crate has neither).
pub fn new_receipt_id(unix_ms: u64, rng: &dyn SecureRandom) -> Result<String, AuditError> {
    let mut rand = [0u8; 10];
    rng.fill(&mut rand).map_err(|_| AuditError::Crypto("rng"))?;
    Ok(uuid::Builder::from_unix_timestamp_millis(unix_ms, &rand)
        .into_uuid()
        .hyphenated()
        .to_string())
}

fn validate_id(id: &str) -> Result<(), AuditError> {
    let bad = |reason: &str| AuditError::InvalidField {
        field: "id",
        reason: reason.to_owned(),
    };
    let u = uuid::Uuid::try_parse(id).map_err(|_| bad("not a UUID"))?;
    if u.hyphenated().to_string() != id {
        return Err(bad("not lowercase hyphenated"));
    }
    if u.get_version_num() != 7 {
        return Err(bad("not a UUIDv7"));
    }
    Ok(())
}

/// Formats Unix milliseconds as `created_at` (`YYYY-MM-DDTHH:MM:SS.mmmZ`).
pub fn format_created_at(unix_ms: u64) -> String {
    let secs = unix_ms / 1000;
    let ms = unix_ms % 1000;
    let days = secs / 86_400;
    let sod = secs % 86_400;
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{ms:03}Z",
        sod / 3600,
        sod % 3600 / 60,
        sod % 60
    )
}

/// Days since 1970-01-01 to (year, month, day), proleptic Gregorian (H. Hinnant's algorithm).
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z % 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + u64::from(m <= 2);
    (y, m, d)
}

/// Checks the exact `YYYY-MM-DDTHH:MM:SS.mmmZ` shape, so every receipt's timestamp sorts
/// and compares as text.
pub fn validate_created_at(s: &str) -> Result<(), AuditError> {
    let b = s.as_bytes();
    let shape_ok = b.len() == 24
        && b.iter().enumerate().all(|(i, c)| match i {
            4 | 7 => *c == b'-',
            10 => *c == b'T',
            13 | 16 => *c == b':',
            19 => *c == b'.',
            23 => *c == b'Z',
            _ => c.is_ascii_digit(),
        });
    let num =
        |r: std::ops::Range<usize>| s.get(r).and_then(|t| t.parse::<u32>().ok()).unwrap_or(99);
    if shape_ok
        && (1..=12).contains(&num(5..7))
        && (1..=31).contains(&num(8..10))
        && num(11..13) < 24
        && num(14..16) < 60
        && num(17..19) < 61
    {
        Ok(())
    } else {
        Err(AuditError::InvalidField {
            field: "created_at",
            reason: format!("{s:?} is not YYYY-MM-DDTHH:MM:SS.mmmZ"),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::sha256_hex;
    use aws_lc_rs::test::rand::FixedByteRandom;
    use serde_json::json;

    const ID: &str = "01890a5d-ac96-774b-bcce-b302099a8057";

    fn sample() -> Receipt {
        let mut r = Receipt::new(
            ID,
            "acme",
            ReceiptKind::Message,
            "2025-01-31T12:00:00.000Z",
            "allow",
        );
        r.model = Some("claude-sonnet-4-5".into());
        r.input_tokens = Some(12);
        r.findings.push(Finding {
            entity: "email".into(),
            count: 2,
            action: "redact".into(),
        });
        r
    }

    #[test]
    fn seal_into_chain_links_and_hashes() {
        let mut r = sample();
        let head = r.seal_into_chain(&ChainHead::genesis()).unwrap();
        assert_eq!(r.seq, 1);
        assert_eq!(r.prev_hash, ZERO_HASH);
        assert_eq!(head, r.head());
        assert!(is_hex_hash(&r.hash));
        assert!(r.hash_is_valid());
        let mut bytes = RECEIPT_HASH_DOMAIN.to_vec();
        bytes.extend_from_slice(r.canonical_json().unwrap().as_bytes());
        assert_eq!(r.hash, sha256_hex(&bytes));
        r.model = Some("other".into());
        assert!(!r.hash_is_valid());
    }

    #[test]
    fn hashed_form_has_every_member_and_no_hash() {
        let c = sample().canonical_json().unwrap();
        for k in [
            "\"sealed\":null",
            "\"tools\":[]",
            "\"details\":null",
            "\"user_id\":null",
            "\"kind\":\"message\"",
        ] {
            assert!(c.contains(k), "{k} missing in {c}");
        }
        assert!(!c.contains("\"hash\""));
        assert!(c.starts_with(
            "{\"admin\":null,\"approval_id\":null,\"client_addr\":null,\"created_at\""
        ));
    }

    #[test]
    fn hash_is_independent_of_json_member_order() {
        let mut r = sample();
        r.seal_into_chain(&ChainHead::genesis()).unwrap();
        let v = serde_json::to_value(&r).unwrap();
        let mut rev = serde_json::Map::new();
        for (k, val) in v.as_object().unwrap().iter().rev() {
            rev.insert(k.clone(), val.clone());
        }
        assert_eq!(receipt_hash_of_value(&Value::Object(rev)).unwrap(), r.hash);
    }

    #[test]
    fn floats_in_details_cannot_be_hashed() {
        let mut r = sample();
        r.details = json!({"score": 0.5});
        assert!(matches!(
            r.seal_into_chain(&ChainHead::genesis()),
            Err(AuditError::Canonical(CanonicalError::Float { .. }))
        ));
    }

    #[test]
    fn validation_rejects_bad_ids_and_timestamps() {
        let mut r = sample();
        r.id = "not-a-uuid".into();
        assert!(r.seal_into_chain(&ChainHead::genesis()).is_err());
        r.id = "01890A5D-AC96-774B-BCCE-B302099A8057".into();
        assert!(r.seal_into_chain(&ChainHead::genesis()).is_err());
        r.id = "67e55044-10b1-426f-9247-bb680e5fe0c8".into(); // v4
        assert!(r.seal_into_chain(&ChainHead::genesis()).is_err());
        let mut r = sample();
        for bad in [
            "2025-01-31T12:00:00Z",
            "2025-13-31T12:00:00.000Z",
            "2025-01-31 12:00:00.000Z",
        ] {
            r.created_at = bad.into();
            assert!(r.seal_into_chain(&ChainHead::genesis()).is_err(), "{bad}");
        }
        let bad_head = ChainHead {
            seq: 1,
            hash: "xyz".into(),
        };
        assert!(sample().seal_into_chain(&bad_head).is_err());
    }

    #[test]
    fn created_at_formatting() {
        assert_eq!(format_created_at(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(
            format_created_at(1_738_324_800_123),
            "2025-01-31T12:00:00.123Z"
        );
        assert_eq!(
            format_created_at(951_782_400_000),
            "2000-02-29T00:00:00.000Z"
        );
        assert!(validate_created_at(&format_created_at(4_102_444_799_999)).is_ok());
    }

    #[test]
    fn receipt_ids_are_uuid_v7() {
        let id = new_receipt_id(1_738_324_800_123, &FixedByteRandom { byte: 0xab }).unwrap();
        validate_id(&id).unwrap();
        assert!(id.starts_with("0194bc3b-727b-7"), "{id}");
    }

    #[test]
    fn kinds_round_trip() {
        for k in ReceiptKind::ALL {
            assert_eq!(k.as_str().parse::<ReceiptKind>().unwrap(), k);
            assert_eq!(serde_json::to_value(k).unwrap(), json!(k.as_str()));
        }
        assert!("nope".parse::<ReceiptKind>().is_err());
    }

    #[test]
    fn sensitive_payload_round_trip_and_shredding() {
        let rng = aws_lc_rs::rand::SystemRandom::new();
        let dk = DataKey::generate(&rng).unwrap();
        let mut r = sample();
        r.seal_sensitive(&dk, &json!({"prompt": "[REDACTED] hello"}), &rng)
            .unwrap();
        r.seal_into_chain(&ChainHead::genesis()).unwrap();
        assert_eq!(
            r.open_sensitive(&dk).unwrap(),
            Some(json!({"prompt": "[REDACTED] hello"}))
        );
        // Shredded: the key is gone, another one cannot read, the hash still verifies.
        let other = DataKey::generate(&rng).unwrap();
        assert!(r.open_sensitive(&other).is_err());
        assert!(r.hash_is_valid());
    }
}
