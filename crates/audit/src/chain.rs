//! Chain and export verification.
//!
//! The verifier streams receipts in stored order, keeps one small entry per receipt
//! (seq → hash, id, position; about 100 bytes) so late receipts, anchors and
//! checkpoints can be matched in any order, and reports every problem with its place
//! instead of stopping at the first.

use crate::canonical::CanonicalError;
use crate::checkpoint::{Checkpoint, SignedCheckpoint, checkpoint_key_id, verify_checkpoint};
use crate::receipt::{Receipt, SCHEMA_VERSION, ZERO_HASH, receipt_hash_of_value};
use crate::{AuditError, crypto::sha256_hex};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::borrow::Borrow;
use std::collections::BTreeMap;

/// Where a tenant's retained chain starts after a purge: the seq and hash of the last
/// purged receipt. The first retained receipt has `seq = anchor.seq + 1` and
/// `prev_hash = anchor.head_hash`. The purge job should keep a signed checkpoint at the
/// anchor's seq too, so the anchor itself is provable.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Anchor {
    /// Tenant.
    pub tenant_id: String,
    /// Seq of the last purged receipt.
    pub seq: u64,
    /// Its hash.
    pub head_hash: String,
}

impl From<&Checkpoint> for Anchor {
    fn from(c: &Checkpoint) -> Self {
        Self {
            tenant_id: c.tenant_id.clone(),
            seq: c.seq,
            head_hash: c.head_hash.clone(),
        }
    }
}

/// What went wrong. Names are stable (snake_case in JSON).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ProblemKind {
    /// A line or record that is not a readable receipt/checkpoint/anchor.
    Malformed,
    /// A receipt of another tenant in this tenant's chain.
    WrongTenant,
    /// `schema_version` is not 1.
    UnsupportedSchema,
    /// The receipt has no canonical form (float, out-of-range integer).
    NotCanonical,
    /// Recomputed hash differs from the stored one: the receipt was modified.
    HashMismatch,
    /// `prev_hash` is not the predecessor's hash (modified-and-rehashed predecessor,
    /// inserted receipt, or a start that does not match genesis/anchor).
    PrevHashMismatch,
    /// Seqs absent from the chain: receipts were deleted.
    Missing,
    /// The same seq twice: a receipt was inserted (or the chain forked).
    DuplicateSeq,
    /// A receipt appears after one with a higher seq: records were reordered.
    OutOfOrder,
    /// A receipt at or below the anchor's seq (should have been purged, or a forged anchor).
    BeforeAnchor,
    /// A checkpoint whose signature does not verify.
    CheckpointBadSignature,
    /// A checkpoint signed by a key not among the given public keys.
    CheckpointUnknownKey,
    /// A validly signed checkpoint whose head hash differs from the receipt at its seq.
    CheckpointMismatch,
    /// A validly signed checkpoint beyond the last receipt: the chain was truncated.
    CheckpointBeyondChain,
    /// A checkpoint or anchor of another tenant.
    CheckpointWrongTenant,
}

/// One problem and where it is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Problem {
    /// What.
    pub kind: ProblemKind,
    /// Seq of the receipt concerned (the first missing seq for [`ProblemKind::Missing`]).
    pub seq: Option<u64>,
    /// Id of the receipt concerned (for `missing`: the receipt after the gap).
    pub receipt_id: Option<String>,
    /// 1-based position in the input (the line number for exports).
    pub position: Option<u64>,
    /// Human-readable explanation.
    pub detail: String,
}

/// Result of verifying one tenant's chain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VerifyReport {
    /// Tenant verified.
    pub tenant_id: String,
    /// True when no problem was found.
    pub ok: bool,
    /// Receipts read for this tenant.
    pub receipts: u64,
    /// Lowest and highest seq seen.
    pub first_seq: Option<u64>,
    /// Highest seq seen.
    pub last_seq: Option<u64>,
    /// Stored hash of the receipt at `last_seq`.
    pub head_hash: Option<String>,
    /// Seq of the anchor the chain starts after, if any.
    pub anchor_seq: Option<u64>,
    /// Checkpoints whose signature verified and whose head matched the chain.
    pub checkpoints_verified: u64,
    /// False when checkpoints were present but no public key was given.
    pub checkpoint_signatures_checked: bool,
    /// Every problem, ordered by seq then position.
    pub problems: Vec<Problem>,
}

#[derive(Debug)]
struct Entry {
    hash: [u8; 32],
    /// Hashes of further receipts claiming the same seq (a fork or an insertion); a
    /// successor linking to any of them is not reported again.
    alt: Vec<[u8; 32]>,
    id: Option<String>,
    position: u64,
}

impl Entry {
    fn links_to(&self, prev: &[u8; 32]) -> bool {
        self.hash == *prev || self.alt.contains(prev)
    }
}

#[derive(Debug)]
struct PendingLink {
    prev: [u8; 32],
    id: Option<String>,
    position: u64,
}

/// Incremental verifier for one tenant's chain. [`verify_chain`] and [`verify_export`]
/// wrap it; the CLI can use it directly to stream from the store.
#[derive(Debug)]
pub struct ChainVerifier {
    tenant_id: String,
    anchor: Option<Anchor>,
    public_keys: Vec<Vec<u8>>,
    seen: BTreeMap<u64, Entry>,
    pending_links: BTreeMap<u64, PendingLink>,
    checkpoints: Vec<(SignedCheckpoint, Option<u64>)>,
    max_seq: Option<u64>,
    receipts: u64,
    pushed: u64,
    problems: Vec<Problem>,
}

/// Normalises a stored hash to 32 bytes for compact storage and comparison. Malformed
/// strings map to a digest of themselves, which cannot equal a real receipt hash.
fn hash_key(s: &str) -> [u8; 32] {
    let mut out = [0u8; 32];
    if crate::receipt::is_hex_hash(s) && hex::decode_to_slice(s, &mut out).is_ok() {
        return out;
    }
    let d = sha256_hex(format!("malformed:{s}").as_bytes());
    let _ = hex::decode_to_slice(d, &mut out);
    out
}

fn short(h: &str) -> &str {
    h.get(..12).unwrap_or(h)
}

fn short_key(h: &[u8; 32]) -> String {
    hex::encode(&h[..6])
}

impl ChainVerifier {
    /// A verifier for `tenant_id`'s chain, starting at genesis.
    pub fn new(tenant_id: impl Into<String>) -> Self {
        Self {
            tenant_id: tenant_id.into(),
            anchor: None,
            public_keys: Vec::new(),
            seen: BTreeMap::new(),
            pending_links: BTreeMap::new(),
            checkpoints: Vec::new(),
            max_seq: None,
            receipts: 0,
            pushed: 0,
            problems: Vec::new(),
        }
    }

    /// Accepts checkpoints signed by `public_key` (call once per trusted key).
    pub fn with_public_key(mut self, public_key: &[u8]) -> Self {
        self.public_keys.push(public_key.to_vec());
        self
    }

    /// Starts the chain after `anchor` instead of genesis.
    pub fn with_anchor(mut self, anchor: Anchor) -> Self {
        self.set_anchor(anchor, None);
        self
    }

    /// Sets the anchor; may come after receipts (as in an export file).
    pub fn set_anchor(&mut self, anchor: Anchor, position: Option<u64>) {
        if anchor.tenant_id != self.tenant_id {
            self.problem(
                ProblemKind::CheckpointWrongTenant,
                Some(anchor.seq),
                None,
                position,
                format!("anchor belongs to tenant {:?}", anchor.tenant_id),
            );
            return;
        }
        if let Some(prev) = &self.anchor
            && *prev != anchor
        {
            let detail = format!("second, different anchor (first at seq {})", prev.seq);
            self.problem(
                ProblemKind::Malformed,
                Some(anchor.seq),
                None,
                position,
                detail,
            );
            return;
        }
        self.anchor = Some(anchor);
    }

    fn problem(
        &mut self,
        kind: ProblemKind,
        seq: Option<u64>,
        id: Option<String>,
        position: Option<u64>,
        detail: String,
    ) {
        self.problems.push(Problem {
            kind,
            seq,
            receipt_id: id,
            position,
            detail,
        });
    }

    /// Adds the next receipt in stored order.
    pub fn push_receipt(&mut self, receipt: &Receipt) {
        let position = self.pushed + 1;
        match serde_json::to_value(receipt) {
            Ok(v) => self.push_value(&v, position),
            Err(e) => {
                self.pushed += 1;
                self.problem(
                    ProblemKind::Malformed,
                    Some(receipt.seq),
                    Some(receipt.id.clone()),
                    Some(position),
                    e.to_string(),
                );
            }
        }
    }

    /// Adds a receipt given as raw JSON (hashing the members as they are, known or not).
    pub fn push_value(&mut self, v: &Value, position: u64) {
        self.pushed += 1;
        let pos = Some(position);
        let id = v.get("id").and_then(Value::as_str).map(str::to_owned);
        let fields = (
            v.get("tenant_id").and_then(Value::as_str),
            v.get("seq").and_then(Value::as_u64),
            v.get("prev_hash").and_then(Value::as_str),
            v.get("hash").and_then(Value::as_str),
            v.get("schema_version").and_then(Value::as_u64),
        );
        let (Some(tenant), Some(seq), Some(prev_hash), Some(hash), Some(schema)) = fields else {
            let seq = v.get("seq").and_then(Value::as_u64);
            self.problem(
                ProblemKind::Malformed,
                seq,
                id,
                pos,
                "not a receipt: tenant_id, seq, prev_hash, hash or schema_version missing or mistyped".into(),
            );
            return;
        };
        if tenant != self.tenant_id {
            self.problem(
                ProblemKind::WrongTenant,
                Some(seq),
                id,
                pos,
                format!("receipt of tenant {tenant:?}"),
            );
            return;
        }
        self.receipts += 1;
        if schema != u64::from(SCHEMA_VERSION) {
            self.problem(
                ProblemKind::UnsupportedSchema,
                Some(seq),
                id,
                pos,
                format!("schema_version {schema}"),
            );
            return;
        }
        match receipt_hash_of_value(v) {
            Ok(computed) if computed == hash => {}
            Ok(computed) => self.problem(
                ProblemKind::HashMismatch,
                Some(seq),
                id.clone(),
                pos,
                format!(
                    "stored hash {} but content hashes to {}: receipt modified",
                    short(hash),
                    short(&computed)
                ),
            ),
            Err(e @ (CanonicalError::Float { .. } | CanonicalError::IntegerOutOfRange { .. })) => {
                self.problem(
                    ProblemKind::NotCanonical,
                    Some(seq),
                    id.clone(),
                    pos,
                    e.to_string(),
                );
            }
        }
        let hash = hash_key(hash);
        let prev = hash_key(prev_hash);

        if let Some(first) = self.seen.get_mut(&seq) {
            first.alt.push(hash);
            let detail = format!(
                "seq {seq} appears twice: id {} at position {} and id {} here",
                first.id.as_deref().unwrap_or("?"),
                first.position,
                id.as_deref().unwrap_or("?")
            );
            self.problem(ProblemKind::DuplicateSeq, Some(seq), id, pos, detail);
            return;
        }
        if let Some(max) = self.max_seq
            && seq < max
        {
            self.problem(
                ProblemKind::OutOfOrder,
                Some(seq),
                id.clone(),
                pos,
                format!("seq {seq} appears after seq {max}: receipts reordered"),
            );
        }
        // Backward link: now if the predecessor is known, else at finish (anchor/genesis)
        // or when the predecessor arrives late.
        match seq.checked_sub(1).and_then(|p| self.seen.get(&p)) {
            Some(pred) => {
                if !pred.links_to(&prev) {
                    let detail = format!(
                        "prev_hash {} is not the hash {} of seq {}",
                        short(prev_hash),
                        short_key(&pred.hash),
                        seq - 1
                    );
                    self.problem(
                        ProblemKind::PrevHashMismatch,
                        Some(seq),
                        id.clone(),
                        pos,
                        detail,
                    );
                }
            }
            None => {
                self.pending_links.insert(
                    seq,
                    PendingLink {
                        prev,
                        id: id.clone(),
                        position,
                    },
                );
            }
        }
        // Forward link: a successor that arrived earlier.
        if let Some(next) = seq
            .checked_add(1)
            .and_then(|n| self.pending_links.remove(&n))
            && next.prev != hash
        {
            let detail = format!(
                "prev_hash {} is not the hash {} of seq {seq}",
                short_key(&next.prev),
                short_key(&hash)
            );
            self.problem(
                ProblemKind::PrevHashMismatch,
                Some(seq + 1),
                next.id,
                Some(next.position),
                detail,
            );
        }
        self.seen.insert(
            seq,
            Entry {
                hash,
                alt: Vec::new(),
                id,
                position,
            },
        );
        self.max_seq = Some(self.max_seq.map_or(seq, |m| m.max(seq)));
    }

    /// Adds a signed checkpoint; checked against the chain at [`ChainVerifier::finish`].
    pub fn push_checkpoint(&mut self, checkpoint: SignedCheckpoint, position: Option<u64>) {
        self.checkpoints.push((checkpoint, position));
    }

    /// Resolves what could only be checked with the whole chain and returns the report.
    pub fn finish(mut self) -> VerifyReport {
        let (base, base_hash) = match &self.anchor {
            Some(a) => (a.seq, hash_key(&a.head_hash)),
            None => (0, hash_key(ZERO_HASH)),
        };
        let start = if self.anchor.is_some() {
            "the anchor"
        } else {
            "genesis (64 zeros)"
        };

        // Receipts the anchor says are gone (seq 0 is never valid).
        let stale: Vec<(u64, Option<String>, u64)> = self
            .seen
            .range(..=base)
            .map(|(s, e)| (*s, e.id.clone(), e.position))
            .collect();
        for (s, id, p) in stale {
            self.problem(
                ProblemKind::BeforeAnchor,
                Some(s),
                id,
                Some(p),
                format!("seq {s} is not after the chain start at seq {base}"),
            );
        }
        // The first retained receipt must link to the anchor or genesis.
        if let Some(first) = base
            .checked_add(1)
            .and_then(|s| self.pending_links.remove(&s))
            && first.prev != base_hash
        {
            let detail = format!(
                "prev_hash {} does not link to {start}",
                short_key(&first.prev)
            );
            self.problem(
                ProblemKind::PrevHashMismatch,
                Some(base + 1),
                first.id,
                Some(first.position),
                detail,
            );
        }
        // Gaps between the start and the highest seq.
        let mut gaps = Vec::new();
        let mut expected = base.saturating_add(1);
        for (s, e) in self.seen.range(expected..) {
            if *s > expected {
                gaps.push((expected, s - 1, e.id.clone(), e.position));
            }
            expected = s.saturating_add(1);
        }
        for (from, to, id, p) in gaps {
            let what = if from == to {
                format!("seq {from} is missing")
            } else {
                format!("seqs {from}..={to} are missing")
            };
            self.problem(
                ProblemKind::Missing,
                Some(from),
                id,
                Some(p),
                format!("{what}: receipts deleted"),
            );
        }

        let checkpoints = std::mem::take(&mut self.checkpoints);
        let signatures_checked = checkpoints.is_empty() || !self.public_keys.is_empty();
        let mut verified = 0;
        for (cp, pos) in checkpoints {
            let c = &cp.checkpoint;
            if c.tenant_id != self.tenant_id {
                self.problem(
                    ProblemKind::CheckpointWrongTenant,
                    Some(c.seq),
                    None,
                    pos,
                    format!("checkpoint of tenant {:?}", c.tenant_id),
                );
                continue;
            }
            if !self.public_keys.is_empty() {
                let key = self
                    .public_keys
                    .iter()
                    .find(|k| checkpoint_key_id(k) == c.key_id);
                let result = match key {
                    Some(k) => verify_checkpoint(k, &cp),
                    None => Err(AuditError::UnknownKey(c.key_id.clone())),
                };
                match result {
                    Ok(()) => {}
                    Err(AuditError::UnknownKey(k)) => {
                        self.problem(
                            ProblemKind::CheckpointUnknownKey,
                            Some(c.seq),
                            None,
                            pos,
                            format!("signed by unknown key {k}"),
                        );
                        continue;
                    }
                    Err(_) => {
                        self.problem(
                            ProblemKind::CheckpointBadSignature,
                            Some(c.seq),
                            None,
                            pos,
                            "signature does not verify: forged or altered checkpoint".into(),
                        );
                        continue;
                    }
                }
            }
            let claimed = hash_key(&c.head_hash);
            let at = if c.seq == base && self.anchor.is_some() {
                Some((base_hash == claimed, base_hash, None))
            } else {
                self.seen
                    .get(&c.seq)
                    .map(|e| (e.links_to(&claimed), e.hash, e.id.clone()))
            };
            match at {
                Some((matches, h, id)) => {
                    if matches {
                        verified += 1;
                    } else {
                        let detail = format!(
                            "checkpoint says head {} but the chain has {}",
                            short(&c.head_hash),
                            short_key(&h)
                        );
                        self.problem(
                            ProblemKind::CheckpointMismatch,
                            Some(c.seq),
                            id,
                            pos,
                            detail,
                        );
                    }
                }
                None if self.max_seq.is_none_or(|m| c.seq > m) => {
                    let detail = format!(
                        "checkpoint at seq {} but the chain ends at {}: receipts deleted from the end",
                        c.seq,
                        self.max_seq
                            .map_or_else(|| "nothing".to_owned(), |m| format!("seq {m}"))
                    );
                    self.problem(
                        ProblemKind::CheckpointBeyondChain,
                        Some(c.seq),
                        None,
                        pos,
                        detail,
                    );
                }
                // Before the anchor (purged) or inside a gap (already reported as missing).
                None => {}
            }
        }

        let mut problems = std::mem::take(&mut self.problems);
        problems.sort_by_key(|p| {
            (
                p.seq.unwrap_or(u64::MAX),
                p.position.unwrap_or(u64::MAX),
                p.kind,
            )
        });
        let last = self.seen.iter().next_back();
        VerifyReport {
            ok: problems.is_empty(),
            tenant_id: self.tenant_id,
            receipts: self.receipts,
            first_seq: self.seen.keys().next().copied(),
            last_seq: last.map(|(s, _)| *s),
            head_hash: last.map(|(_, e)| hex::encode(e.hash)),
            anchor_seq: self.anchor.as_ref().map(|a| a.seq),
            checkpoints_verified: verified,
            checkpoint_signatures_checked: signatures_checked,
            problems,
        }
    }
}

/// Verifies one tenant's receipts as read from the store (in seq order), starting at
/// genesis or at `anchor`.
pub fn verify_chain<I, R>(tenant_id: &str, receipts: I, anchor: Option<Anchor>) -> VerifyReport
where
    I: IntoIterator<Item = R>,
    R: Borrow<Receipt>,
{
    verify_chain_with_checkpoints(tenant_id, receipts, anchor, Vec::new(), &[])
}

/// As [`verify_chain`], also checking signed checkpoints against `public_keys` (raw
/// 32-byte Ed25519 keys) and against the receipts at their seqs.
pub fn verify_chain_with_checkpoints<I, R>(
    tenant_id: &str,
    receipts: I,
    anchor: Option<Anchor>,
    checkpoints: Vec<SignedCheckpoint>,
    public_keys: &[&[u8]],
) -> VerifyReport
where
    I: IntoIterator<Item = R>,
    R: Borrow<Receipt>,
{
    let mut v = ChainVerifier::new(tenant_id);
    for k in public_keys {
        v = v.with_public_key(k);
    }
    if let Some(a) = anchor {
        v.set_anchor(a, None);
    }
    for r in receipts {
        v.push_receipt(r.borrow());
    }
    for c in checkpoints {
        v.push_checkpoint(c, None);
    }
    v.finish()
}

/// Result of verifying an NDJSON export (possibly several tenants).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExportReport {
    /// True when every tenant verified and every line was readable.
    pub ok: bool,
    /// Lines read (blank lines excluded).
    pub lines: u64,
    /// One report per tenant, by tenant id.
    pub tenants: Vec<VerifyReport>,
    /// Lines that belong to no tenant (unparseable, unknown record type).
    pub problems: Vec<Problem>,
}

/// The NDJSON line for a receipt in an export.
pub fn export_receipt_line(receipt: &Receipt) -> Result<String, AuditError> {
    Ok(serde_json::to_string(receipt)?)
}

fn record_line<T: Serialize>(record: &str, body: &T) -> Result<String, AuditError> {
    let mut map = serde_json::Map::new();
    map.insert("record".into(), Value::String(record.into()));
    if let Value::Object(m) = serde_json::to_value(body)? {
        map.extend(m);
    }
    Ok(serde_json::to_string(&Value::Object(map))?)
}

/// The NDJSON line for a signed checkpoint: its members plus `"record":"checkpoint"`.
pub fn export_checkpoint_line(checkpoint: &SignedCheckpoint) -> Result<String, AuditError> {
    record_line("checkpoint", checkpoint)
}

/// The NDJSON line for an anchor: its members plus `"record":"anchor"`.
pub fn export_anchor_line(anchor: &Anchor) -> Result<String, AuditError> {
    record_line("anchor", anchor)
}

fn verifier_for<'a>(
    verifiers: &'a mut BTreeMap<String, ChainVerifier>,
    tenant: &str,
    public_keys: &[&[u8]],
) -> &'a mut ChainVerifier {
    verifiers.entry(tenant.to_owned()).or_insert_with(|| {
        let mut v = ChainVerifier::new(tenant);
        for k in public_keys {
            v = v.with_public_key(k);
        }
        v
    })
}

/// Verifies an NDJSON export. A line with a `record` member is a checkpoint or anchor;
/// any other line is a receipt, hashed exactly as it appears. Receipts are grouped by
/// tenant and each tenant's chain is verified; checkpoint signatures are checked when
/// `public_keys` is not empty.
pub fn verify_export<I, S>(lines: I, public_keys: &[&[u8]]) -> ExportReport
where
    I: IntoIterator<Item = S>,
    S: AsRef<str>,
{
    let mut verifiers: BTreeMap<String, ChainVerifier> = BTreeMap::new();
    let mut problems = Vec::new();
    let mut count = 0;
    for (i, line) in lines.into_iter().enumerate() {
        let line = line.as_ref().trim();
        if line.is_empty() {
            continue;
        }
        count += 1;
        let pos = u64::try_from(i).unwrap_or(u64::MAX).saturating_add(1);
        let malformed = |detail: String| Problem {
            kind: ProblemKind::Malformed,
            seq: None,
            receipt_id: None,
            position: Some(pos),
            detail,
        };
        let v: Value = match serde_json::from_str(line) {
            Ok(v) => v,
            Err(e) => {
                problems.push(malformed(format!("not JSON: {e}")));
                continue;
            }
        };
        match v.get("record").map(|r| r.as_str()) {
            None => match v.get("tenant_id").and_then(Value::as_str) {
                Some(t) => verifier_for(&mut verifiers, t, public_keys).push_value(&v, pos),
                None => problems.push(malformed("receipt without tenant_id".into())),
            },
            Some(Some("checkpoint")) => match serde_json::from_value::<SignedCheckpoint>(v) {
                Ok(c) => {
                    let t = c.checkpoint.tenant_id.clone();
                    verifier_for(&mut verifiers, &t, public_keys).push_checkpoint(c, Some(pos));
                }
                Err(e) => problems.push(malformed(format!("bad checkpoint: {e}"))),
            },
            Some(Some("anchor")) => match serde_json::from_value::<Anchor>(v) {
                Ok(a) => {
                    let t = a.tenant_id.clone();
                    verifier_for(&mut verifiers, &t, public_keys).set_anchor(a, Some(pos));
                }
                Err(e) => problems.push(malformed(format!("bad anchor: {e}"))),
            },
            Some(other) => problems.push(malformed(format!("unknown record type {other:?}"))),
        }
    }
    let tenants: Vec<VerifyReport> = verifiers.into_values().map(ChainVerifier::finish).collect();
    ExportReport {
        ok: problems.is_empty() && tenants.iter().all(|t| t.ok),
        lines: count,
        tenants,
        problems,
    }
}

#[cfg(test)]
#[path = "chain_tests.rs"]
mod tests;
