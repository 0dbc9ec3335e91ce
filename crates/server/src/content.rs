//! Content guardrails in the gateway: the effective content rules of a tenant (platform
//! floors applied) compiled into one scanner, applied to every text a request carries
//! (system prompt, text blocks, tool results, tool inputs, text documents) and to every
//! text the model returns, streams included. Values are never logged or stored; receipts
//! get counts per detector and action.

use crate::auth::Principal;
use crate::error::ApiError;
use crate::policy::Layers;
use crate::state::AppState;
use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use palisade_audit::{Receipt, ReceiptKind};
use palisade_policy::{ContentAction, ContentRules};
use palisade_scan::{
    Action, CustomPattern, Finding, KeywordList, Pseudonymizer, Scanner, ScannerConfig,
    StreamRedactor, StreamRestorer, SummaryEntry,
};
use serde::Deserialize;
use serde_json::{Value, json};
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

/// PII detectors the `pii` group stands for.
const PII: &[&str] = &[
    "email",
    "phone",
    "us_ssn",
    "credit_card",
    "iban",
    "ip_address",
];

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Direction {
    Input,
    Output,
}

impl Direction {
    fn as_str(self) -> &'static str {
        match self {
            Direction::Input => "input",
            Direction::Output => "output",
        }
    }
}

/// A tenant's compiled content guard for the policy versions in force.
pub struct ContentGuard {
    scanner: Arc<Scanner>,
    input: BTreeMap<String, Action>,
    output: BTreeMap<String, Action>,
}

fn action_name(a: Action) -> &'static str {
    match a {
        Action::Block => "block",
        Action::Redact => "redact",
        Action::Pseudonymize => "pseudonymize",
        Action::Flag => "flag",
    }
}

fn to_action(a: ContentAction) -> Option<Action> {
    match a {
        ContentAction::Off => None,
        ContentAction::Flag => Some(Action::Flag),
        ContentAction::Pseudonymize => Some(Action::Pseudonymize),
        ContentAction::Redact => Some(Action::Redact),
        ContentAction::Block => Some(Action::Block),
    }
}

/// The policy id a finding answers to: `keyword:<id>` and `custom:<id>` map to `<id>`.
fn policy_id(f: &Finding) -> &str {
    let d: &str = &f.detector;
    if let Some(id) = d
        .strip_prefix("keyword:")
        .or_else(|| d.strip_prefix("custom:"))
    {
        return id;
    }
    f.group()
}

fn action_in(map: &BTreeMap<String, Action>, f: &Finding) -> Option<Action> {
    let id = policy_id(f);
    if let Some(a) = map.get(id) {
        return Some(*a);
    }
    if PII.contains(&id) {
        return map.get("pii").copied();
    }
    None
}

impl ContentGuard {
    pub fn compile(rules: &ContentRules) -> Result<Option<Self>, String> {
        let convert = |m: &BTreeMap<String, ContentAction>| -> BTreeMap<String, Action> {
            m.iter()
                .filter_map(|(k, a)| to_action(*a).map(|a| (k.clone(), a)))
                .collect()
        };
        let input = convert(&rules.input);
        let output = convert(&rules.output);
        if input.is_empty() && output.is_empty() {
            return Ok(None);
        }
        let mut detectors: Vec<String> = Vec::new();
        for id in input.keys().chain(output.keys()) {
            let ids: Vec<&str> = if id == "pii" {
                PII.to_vec()
            } else {
                vec![id.as_str()]
            };
            for d in ids {
                if palisade_scan::DEFAULT_DETECTORS.contains(&d)
                    && !detectors.iter().any(|x| x == d)
                {
                    detectors.push(d.to_string());
                }
            }
        }
        let cfg = ScannerConfig {
            detectors,
            keywords: rules
                .keywords
                .iter()
                .map(|k| KeywordList {
                    id: k.id.clone(),
                    words: k.words.clone(),
                    whole_word: k.whole_word,
                    case_insensitive: !k.case_sensitive,
                })
                .collect(),
            custom: rules
                .custom
                .iter()
                .map(|c| CustomPattern {
                    id: c.id.clone(),
                    pattern: c.pattern.clone(),
                    entity: c.id.to_ascii_uppercase(),
                })
                .collect(),
            allow: rules.allow.values().flatten().cloned().collect(),
            ..ScannerConfig::default()
        };
        let scanner = Scanner::new(&cfg).map_err(|e| e.to_string())?;
        Ok(Some(Self {
            scanner: Arc::new(scanner),
            input,
            output,
        }))
    }

    fn actions(&self, dir: Direction) -> &BTreeMap<String, Action> {
        match dir {
            Direction::Input => &self.input,
            Direction::Output => &self.output,
        }
    }

    pub fn active(&self, dir: Direction) -> bool {
        !self.actions(dir).is_empty()
    }
}

/// (platform version, tenant version).
type VersionPair = (Option<String>, Option<String>);

/// Compiled guards per policy-version pair.
#[derive(Clone)]
pub struct Guards {
    cache: moka::future::Cache<VersionPair, Option<Arc<ContentGuard>>>,
}

impl Default for Guards {
    fn default() -> Self {
        Self {
            cache: moka::future::Cache::builder().max_capacity(10_000).build(),
        }
    }
}

impl Guards {
    pub async fn for_layers(&self, layers: &Layers) -> Result<Option<Arc<ContentGuard>>, ApiError> {
        let key = (
            layers.platform.as_ref().map(|a| a.hash.clone()),
            layers.tenant.as_ref().map(|a| a.hash.clone()),
        );
        if let Some(hit) = self.cache.get(&key).await {
            return Ok(hit);
        }
        let rules = palisade_policy::effective_content(layers.platform(), layers.tenant());
        let guard = ContentGuard::compile(&rules)
            .map_err(|e| {
                tracing::error!(error = %e, "content rules do not compile into a scanner");
                ApiError::unavailable(
                    "policy_unavailable",
                    "the content rules could not be loaded; request refused",
                )
            })?
            .map(Arc::new);
        self.cache.insert(key, guard.clone()).await;
        Ok(guard)
    }
}

/// Findings of one call, per direction, for the receipt.
#[derive(Default)]
pub struct FindingLog {
    counts: BTreeMap<(String, String), u64>,
    pub blocked: Vec<String>,
    pub injection_score: f32,
}

impl FindingLog {
    fn add(&mut self, dir: Direction, summary: &[SummaryEntry]) {
        for s in summary {
            *self
                .counts
                .entry((
                    format!("{}.{}", dir.as_str(), s.group),
                    action_name(s.action).to_string(),
                ))
                .or_default() += s.count as u64;
        }
    }

    pub fn into_findings(self) -> Vec<palisade_audit::Finding> {
        self.counts
            .into_iter()
            .map(|((entity, action), count)| palisade_audit::Finding {
                entity,
                count,
                action,
            })
            .collect()
    }

    pub fn is_empty(&self) -> bool {
        self.counts.is_empty()
    }
}

/// The per-call content state: the guard, the conversation's pseudonyms, the log.
pub struct CallContent {
    pub guard: Arc<ContentGuard>,
    pub pseudo: Pseudonymizer,
    pub log: FindingLog,
}

impl CallContent {
    pub fn new(guard: Arc<ContentGuard>) -> Self {
        Self {
            guard,
            pseudo: Pseudonymizer::new(),
            log: FindingLog::default(),
        }
    }

    /// Scans and rewrites one string in place. Returns whether it changed.
    fn text(&mut self, dir: Direction, s: &mut String) -> bool {
        let res = self.guard.scanner.scan(s);
        if res.injection_score > self.log.injection_score {
            self.log.injection_score = res.injection_score;
        }
        if res.findings.is_empty() {
            return false;
        }
        let map = self.guard.actions(dir);
        let applied =
            palisade_scan::apply(s, &res.findings, |f| action_in(map, f), &mut self.pseudo);
        self.log.add(dir, &applied.summary);
        for f in &applied.blocked {
            let id = format!("{}.{}", dir.as_str(), policy_id(f));
            if !self.log.blocked.contains(&id) {
                self.log.blocked.push(id);
            }
        }
        if applied.text != *s {
            *s = applied.text;
            true
        } else {
            false
        }
    }

    /// Every string inside a JSON value (tool inputs): redaction keeps the JSON valid.
    fn json(&mut self, dir: Direction, v: &mut Value) -> bool {
        match v {
            Value::String(s) => self.text(dir, s),
            Value::Array(a) => a.iter_mut().fold(false, |c, x| self.json(dir, x) | c),
            Value::Object(m) => m.values_mut().fold(false, |c, x| self.json(dir, x) | c),
            _ => false,
        }
    }

    /// Content blocks of a message (request or response).
    fn blocks(&mut self, dir: Direction, blocks: &mut [Value]) -> bool {
        let mut changed = false;
        for b in blocks {
            match b.get("type").and_then(Value::as_str) {
                Some("text") => {
                    if let Some(Value::String(t)) = b.get_mut("text") {
                        changed |= self.text(dir, t);
                    }
                }
                Some("tool_use") => {
                    if let Some(input) = b.get_mut("input") {
                        changed |= self.json(dir, input);
                    }
                }
                Some("tool_result") => match b.get_mut("content") {
                    Some(Value::String(t)) => changed |= self.text(dir, t),
                    Some(Value::Array(inner)) => changed |= self.blocks(dir, inner),
                    _ => {}
                },
                Some("document")
                    if b.pointer("/source/type").and_then(Value::as_str) == Some("text") =>
                {
                    if let Some(Value::String(t)) = b.pointer_mut("/source/data") {
                        changed |= self.text(dir, t);
                    }
                }
                _ => {}
            }
        }
        changed
    }

    /// The request: system prompt and every message. Returns whether it changed.
    pub fn request(&mut self, body: &mut serde_json::Map<String, Value>) -> bool {
        let mut changed = false;
        match body.get_mut("system") {
            Some(Value::String(s)) => changed |= self.text(Direction::Input, s),
            Some(Value::Array(blocks)) => changed |= self.blocks(Direction::Input, blocks),
            _ => {}
        }
        if let Some(Value::Array(messages)) = body.get_mut("messages") {
            for m in messages {
                match m.get_mut("content") {
                    Some(Value::String(s)) => changed |= self.text(Direction::Input, s),
                    Some(Value::Array(blocks)) => changed |= self.blocks(Direction::Input, blocks),
                    _ => {}
                }
            }
        }
        changed
    }

    /// A complete response message: output rules, then pseudonyms restored so the user
    /// sees their own values and never a placeholder.
    pub fn response(&mut self, msg: &mut Value) -> bool {
        let Some(Value::Array(blocks)) = msg.get_mut("content") else {
            return false;
        };
        let mut changed = self.blocks(Direction::Output, blocks);
        if !self.pseudo.is_empty() {
            for b in blocks.iter_mut() {
                changed |= restore_json(&self.pseudo, b);
            }
        }
        changed
    }

    /// Streaming state for the output side.
    pub fn stream(self) -> StreamContent {
        StreamContent {
            guard: self.guard,
            pseudo: Arc::new(self.pseudo),
            log: self.log,
            blocks: HashMap::new(),
        }
    }
}

fn restore_json(p: &Pseudonymizer, v: &mut Value) -> bool {
    match v {
        Value::String(s) => {
            let r = p.restore(s);
            if r != *s {
                *s = r;
                true
            } else {
                false
            }
        }
        Value::Array(a) => a.iter_mut().fold(false, |c, x| restore_json(p, x) | c),
        Value::Object(m) => m.values_mut().fold(false, |c, x| restore_json(p, x) | c),
        _ => false,
    }
}

type ActionFn = Box<dyn Fn(&Finding) -> Option<Action> + Send + Sync>;
type Redactor = StreamRedactor<ActionFn>;

struct TextBlock {
    redactor: Option<Redactor>,
    restorer: StreamRestorer<Arc<Pseudonymizer>>,
}

/// Output guard for a stream: one redactor per text block, releasing text only once no
/// finding can still straddle it, then restoring pseudonyms split across deltas.
pub struct StreamContent {
    guard: Arc<ContentGuard>,
    pseudo: Arc<Pseudonymizer>,
    pub log: FindingLog,
    blocks: HashMap<u64, TextBlock>,
}

impl StreamContent {
    pub fn start_text(&mut self, index: u64) {
        let redactor = if self.guard.active(Direction::Output) {
            let map = self.guard.output.clone();
            let f: ActionFn = Box::new(move |f| action_in(&map, f));
            // Output-side pseudonyms are fresh: the model's own values are never
            // restored to anything.
            Some(StreamRedactor::new(
                self.guard.scanner.clone(),
                f,
                Pseudonymizer::new(),
            ))
        } else {
            None
        };
        self.blocks.insert(
            index,
            TextBlock {
                redactor,
                restorer: StreamRestorer::new(self.pseudo.clone()),
            },
        );
    }

    pub fn is_text(&self, index: u64) -> bool {
        self.blocks.contains_key(&index)
    }

    /// A text delta: returns the text to release now.
    pub fn push(&mut self, index: u64, text: &str) -> Result<String, String> {
        let Some(b) = self.blocks.get_mut(&index) else {
            return Ok(text.to_string());
        };
        let released = match &mut b.redactor {
            Some(r) => {
                let out = r.push(text);
                if let Some(f) = r.blocked().first() {
                    return Err(format!("output.{}", policy_id(f)));
                }
                out
            }
            None => text.to_string(),
        };
        Ok(b.restorer.push(&released))
    }

    /// End of a text block: whatever was held back.
    pub fn finish(&mut self, index: u64) -> Result<String, String> {
        let Some(mut b) = self.blocks.remove(&index) else {
            return Ok(String::new());
        };
        let mut tail = String::new();
        if let Some(r) = &mut b.redactor {
            tail = r.finish();
            if let Some(f) = r.blocked().first() {
                return Err(format!("output.{}", policy_id(f)));
            }
            self.log.add(Direction::Output, &r.summary());
        }
        let mut out = b.restorer.push(&tail);
        out.push_str(&b.restorer.finish());
        Ok(out)
    }

    /// Scan a complete tool input (held by the tool gate) with the output rules.
    pub fn tool_input(&mut self, input: &mut Value) -> Result<bool, String> {
        let mut call = CallContent {
            guard: self.guard.clone(),
            pseudo: Pseudonymizer::new(),
            log: FindingLog::default(),
        };
        let mut changed = call.json(Direction::Output, input);
        if let Some(b) = call.log.blocked.first() {
            return Err(b.clone());
        }
        for (k, v) in call.log.counts {
            *self.log.counts.entry(k).or_default() += v;
        }
        changed |= restore_json(&self.pseudo, input);
        Ok(changed)
    }
}

/// The Anthropic-shaped refusal for blocked content.
pub fn blocked_error(what: &[String]) -> ApiError {
    ApiError::forbidden(
        "content_blocked",
        format!("content blocked by policy: {}", what.join(", ")),
    )
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScanRequest {
    text: String,
    #[serde(default)]
    direction: Option<String>,
}

/// `POST /v1/guard/scan`: scan and rewrite one text under the tenant's content rules.
pub async fn guard_scan(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Result<Json<Value>, ApiError> {
    let principal = crate::auth::authorize(&state, &headers, crate::auth::Scope::Guard).await?;
    let req: ScanRequest = serde_json::from_slice(&body)
        .map_err(|e| ApiError::invalid("invalid_body", format!("invalid request body: {e}")))?;
    let dir = match req.direction.as_deref() {
        None | Some("input") => Direction::Input,
        Some("output") => Direction::Output,
        Some(other) => {
            return Err(ApiError::invalid(
                "invalid_direction",
                format!("direction must be input or output, not {other:?}"),
            ));
        }
    };
    let layers = state.policies.layers(principal.tenant_id()).await?;
    let guard = state.guards.for_layers(&layers).await?;
    let mut text = req.text;
    let original_len = text.len();
    let mut findings = Vec::new();
    let mut log = FindingLog::default();
    let mut injection = 0.0f32;
    if let Some(guard) = &guard {
        let res = guard.scanner.scan(&text);
        injection = res.injection_score;
        let map = guard.actions(dir);
        for f in &res.findings {
            findings.push(json!({
                "entity": f.entity.to_string(),
                "detector": f.detector,
                "start": f.span.start,
                "end": f.span.end,
                "confidence": f.confidence,
                "action": action_in(map, f).map(action_name),
            }));
        }
        let mut call = CallContent::new(guard.clone());
        call.text(dir, &mut text);
        log = call.log;
    }
    let blocked = log.blocked.clone();
    let receipt = scan_receipt(&state, &principal, &layers, log, original_len).await?;
    Ok(Json(json!({
        "text": if blocked.is_empty() { Value::String(text) } else { Value::Null },
        "blocked": !blocked.is_empty(),
        "blocked_by": blocked,
        "findings": findings,
        "injection_score": injection,
        "receipt_id": receipt,
    })))
}

async fn scan_receipt(
    state: &AppState,
    p: &Principal,
    layers: &Layers,
    log: FindingLog,
    len: usize,
) -> Result<String, ApiError> {
    let decision = if !log.blocked.is_empty() {
        "block"
    } else if log.is_empty() {
        "allow"
    } else {
        "redact"
    };
    let mut r = Receipt::new(
        uuid::Uuid::now_v7().hyphenated().to_string(),
        p.tenant_id(),
        ReceiptKind::Scan,
        palisade_audit::format_created_at(palisade_store::now_ms().max(0) as u64),
        decision,
    );
    r.key_id = Some(p.key.id.clone());
    r.user_id = p.key.user_id.clone();
    r.policy = Some(layers.reference(None));
    r.findings = log.into_findings();
    r.details = json!({"bytes": len});
    let sealed = state.receipts.commit(r).await.map_err(ApiError::from)?;
    Ok(sealed.id)
}

/// Tenant size limits from tenant attributes (`max_input_tokens`, `max_body_bytes`).
/// Tokens are estimated at four bytes each over the request's text.
pub fn check_size(p: &Principal, body_len: usize, text_bytes: usize) -> Result<(), ApiError> {
    let attr = |k: &str| p.tenant.attributes.get(k).and_then(Value::as_u64);
    if let Some(max) = attr("max_body_bytes")
        && body_len as u64 > max
    {
        {
            return Err(ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "tenant_body_limit",
                format!(
                    "request body of {body_len} bytes exceeds this tenant's limit of {max} bytes"
                ),
            ));
        }
    }
    if let Some(max) = attr("max_input_tokens") {
        let estimate = (text_bytes as u64).div_ceil(4);
        if estimate > max {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "tenant_token_limit",
                format!(
                    "prompt is about {estimate} tokens, over this tenant's limit of {max} input tokens"
                ),
            ));
        }
    }
    Ok(())
}

/// Bytes of text in a request (system + messages), for the token estimate.
pub fn text_bytes(body: &serde_json::Map<String, Value>) -> usize {
    fn walk(v: &Value) -> usize {
        match v {
            Value::String(s) => s.len(),
            Value::Array(a) => a.iter().map(walk).sum(),
            Value::Object(m) => m
                .iter()
                .filter(|(k, _)| {
                    !matches!(k.as_str(), "type" | "id" | "tool_use_id" | "media_type")
                })
                .map(|(_, v)| walk(v))
                .sum(),
            _ => 0,
        }
    }
    body.get("system").map(walk).unwrap_or(0) + body.get("messages").map(walk).unwrap_or(0)
}
