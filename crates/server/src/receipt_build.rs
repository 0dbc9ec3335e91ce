//! Building receipts for data-plane calls. A `Draft` collects what a call learns as it
//! goes (auth, upstream status, usage from the body or the stream) and becomes one
//! `palisade_audit::Receipt` at commit.

use crate::auth::Principal;
use crate::error::ApiError;
use crate::state::AppState;
use palisade_audit::{Receipt, ReceiptKind};
use serde_json::Value;

pub struct Draft {
    pub id: String,
    pub created_ms: u64,
    pub kind: ReceiptKind,
    pub endpoint: &'static str,
    pub key_id: Option<String>,
    pub user_id: Option<String>,
    pub model: Option<String>,
    pub decision: String,
    pub reason_code: Option<String>,
    pub upstream_status: Option<u16>,
    pub upstream_request_id: Option<String>,
    pub input_tokens: Option<u64>,
    pub output_tokens: Option<u64>,
    pub stop_reason: Option<String>,
    pub latency_ms: u64,
    /// Whole call and time spent waiting on the upstream, in microseconds, so gateway
    /// overhead (the difference) is visible even when it is under a millisecond.
    pub latency_us: u64,
    pub upstream_us: u64,
    pub prompt_hmac: Option<String>,
    pub output_hmac: Option<String>,
    pub client_addr: Option<String>,
    pub retries: u32,
    pub tools: Vec<palisade_audit::ToolDecision>,
    pub policy: Option<palisade_audit::PolicyRef>,
    pub findings: Vec<palisade_audit::Finding>,
    /// Approvals opened for withheld tool calls.
    pub approvals: Vec<String>,
    /// What the call cost at the price table's rates (micro-dollars), set at commit.
    pub cost_micro_usd: Option<u64>,
    /// Rate-limit reservations, settled at commit (`limits::settle`).
    pub limits: crate::limits::Pending,
    /// Moderation outcomes (input and/or output), see `moderation.rs`.
    pub moderation: Vec<crate::moderation::Outcome>,
    /// Full-content capture, when the tenant opted in (`capture.rs`).
    pub capture: Option<crate::capture::Capture>,
    capture_id: Option<String>,
}

impl Draft {
    pub fn message(p: &Principal, endpoint: &'static str) -> Self {
        let created_ms = palisade_store::now_ms().max(0) as u64;
        Self {
            id: uuid::Uuid::now_v7().hyphenated().to_string(),
            created_ms,
            kind: ReceiptKind::Message,
            endpoint,
            key_id: Some(p.key.id.clone()),
            user_id: p.key.user_id.clone(),
            model: None,
            decision: "deny".into(),
            reason_code: None,
            upstream_status: None,
            upstream_request_id: None,
            input_tokens: None,
            output_tokens: None,
            stop_reason: None,
            latency_ms: 0,
            latency_us: 0,
            upstream_us: 0,
            prompt_hmac: None,
            output_hmac: None,
            client_addr: None,
            retries: 0,
            tools: Vec::new(),
            policy: None,
            findings: Vec::new(),
            approvals: Vec::new(),
            cost_micro_usd: None,
            limits: Default::default(),
            moderation: Vec::new(),
            capture: None,
            capture_id: None,
        }
    }

    /// Content capture (tenant opt-in): the request as forwarded upstream.
    pub fn capture_request(
        &mut self,
        state: &AppState,
        p: &Principal,
        forwarded: &serde_json::Map<String, Value>,
    ) {
        if self.capture.is_none() {
            self.capture = crate::capture::start(state, p);
        }
        if let Some(c) = self.capture.as_mut() {
            c.record_request(forwarded);
        }
    }

    /// Content capture: a released non-streaming response.
    pub fn capture_response(&mut self, body: &Value) {
        if let Some(c) = self.capture.as_mut() {
            c.record_response(body);
        }
    }

    /// Content capture: released stream events (their text deltas).
    pub fn capture_sse(&mut self, released: &[bytes::Bytes]) {
        let Some(c) = self.capture.as_mut() else {
            return;
        };
        for chunk in released {
            for line in String::from_utf8_lossy(chunk).lines() {
                if let Some(data) = line.strip_prefix("data:")
                    && let Ok(v) = serde_json::from_str::<Value>(data.trim_start())
                    && let Some(t) = v.pointer("/delta/text").and_then(Value::as_str)
                {
                    c.record_output(t);
                }
            }
        }
    }

    /// Records one direction's moderation outcome.
    pub fn record_moderation(&mut self, o: crate::moderation::Outcome) {
        self.moderation.push(o);
    }

    /// Tokens the moderation judge used in this call (input, output).
    pub fn judge_tokens(&self) -> (u64, u64) {
        self.moderation.iter().fold((0, 0), |(i, o), m| {
            (i + m.input_tokens, o + m.output_tokens)
        })
    }

    /// Usage and stop reason from a non-streaming response body.
    /// Tool decisions and the deciding rule, from the call's gate.
    pub fn record_gate(&mut self, layers: &crate::policy::Layers, log: crate::tools::GateLog) {
        self.policy = Some(layers.reference(log.deciding.as_ref()));
        self.tools.extend(log.tools);
        self.approvals.extend(log.approvals);
    }

    /// Stops the call's clock.
    pub fn finish(&mut self, started: std::time::Instant) {
        let e = started.elapsed();
        self.latency_ms = e.as_millis() as u64;
        self.latency_us = e.as_micros() as u64;
    }

    /// Adds time spent waiting on the upstream.
    pub fn upstream_wait(&mut self, since: std::time::Instant) {
        self.upstream_us += since.elapsed().as_micros() as u64;
    }

    /// Content findings (counts per detector and action, never values).
    pub fn record_findings(&mut self, log: crate::content::FindingLog) {
        let mut extra = log.into_findings();
        for f in extra.drain(..) {
            match self
                .findings
                .iter_mut()
                .find(|x| x.entity == f.entity && x.action == f.action)
            {
                Some(x) => x.count += f.count,
                None => self.findings.push(f),
            }
        }
    }

    pub fn record_usage(&mut self, body: &Value) {
        if let Some(u) = body.get("usage") {
            self.input_tokens = u
                .get("input_tokens")
                .and_then(Value::as_u64)
                .or(self.input_tokens);
            self.output_tokens = u
                .get("output_tokens")
                .and_then(Value::as_u64)
                .or(self.output_tokens);
        }
        // count_tokens answers {"input_tokens": N}.
        if let Some(n) = body.get("input_tokens").and_then(Value::as_u64) {
            self.input_tokens = Some(n);
        }
        if let Some(s) = body.get("stop_reason").and_then(Value::as_str) {
            self.stop_reason = Some(s.to_string());
        }
    }

    /// Usage from `message_start` (input) and `message_delta` (cumulative output).
    pub fn record_stream_event(&mut self, ev: &Value) {
        if let Some(msg) = ev.get("message") {
            self.record_usage(msg);
        }
        if let Some(u) = ev.get("usage") {
            if let Some(n) = u.get("output_tokens").and_then(Value::as_u64) {
                self.output_tokens = Some(n);
            }
            if let Some(n) = u.get("input_tokens").and_then(Value::as_u64) {
                self.input_tokens = Some(n);
            }
        }
        if let Some(s) = ev.pointer("/delta/stop_reason").and_then(Value::as_str) {
            self.stop_reason = Some(s.to_string());
        }
    }

    fn into_receipt(self, tenant_id: &str) -> Receipt {
        let mut r = Receipt::new(
            self.id,
            tenant_id,
            self.kind,
            palisade_audit::format_created_at(self.created_ms),
            self.decision,
        );
        r.key_id = self.key_id;
        r.user_id = self.user_id;
        r.request_id = Some(format!("req_pal_{}", r.id.replace('-', "")));
        r.model = self.model;
        r.reason_code = self.reason_code;
        r.upstream_status = self.upstream_status;
        r.upstream_request_id = self.upstream_request_id;
        r.input_tokens = self.input_tokens;
        r.output_tokens = self.output_tokens;
        r.stop_reason = self.stop_reason;
        r.latency_ms = Some(self.latency_ms);
        r.prompt_hmac = self.prompt_hmac;
        r.output_hmac = self.output_hmac;
        r.client_addr = self.client_addr;
        r.tools = self.tools;
        r.policy = self.policy;
        r.findings = self.findings;
        let mut details = serde_json::Map::new();
        details.insert("endpoint".into(), Value::from(self.endpoint));
        if let Some(c) = self.cost_micro_usd.filter(|c| *c > 0) {
            details.insert("cost_micro_usd".into(), Value::from(c));
        }
        if let Some(l) = self.limits.refused {
            details.insert("limit".into(), l);
        }
        if self.upstream_us > 0 {
            details.insert("upstream_us".into(), Value::from(self.upstream_us));
            details.insert(
                "gateway_us".into(),
                Value::from(self.latency_us.saturating_sub(self.upstream_us)),
            );
        }
        if self.retries > 0 {
            details.insert("retries".into(), Value::from(self.retries));
        }
        if !self.approvals.is_empty() {
            // The first opened approval in the schema's field; all of them in details.
            r.approval_id = self.approvals.first().cloned();
            details.insert("approvals".into(), Value::from(self.approvals));
        }
        if !self.moderation.is_empty() {
            let mut m = serde_json::Map::new();
            for o in &self.moderation {
                m.insert(o.direction.as_str().into(), o.to_json());
            }
            details.insert("moderation".into(), Value::Object(m));
        }
        if let Some(c) = self.capture_id {
            details.insert("capture_id".into(), Value::from(c));
        }
        r.details = Value::Object(details);
        r
    }
}

/// Commits the draft's receipt (group commit) and returns its id. A store failure fails
/// the call closed with 503: no receipt, no response — unless the tenant has
/// `audit_fail_open: true`, whose receipt then goes to the spill file and the call goes
/// on. In write-behind mode the receipt is queued and the call does not wait.
pub async fn commit_draft(
    state: &AppState,
    p: &Principal,
    mut draft: Draft,
) -> Result<String, ApiError> {
    let (mut i, mut o) = (draft.input_tokens, draft.output_tokens);
    if state.config.moderation.count_judge_tokens {
        let (ji, jo) = draft.judge_tokens();
        if ji > 0 || jo > 0 {
            i = Some(i.unwrap_or(0) + ji);
            o = Some(o.unwrap_or(0) + jo);
        }
    }
    crate::limits::settle(state, p, &mut draft.limits, i, o).await;
    // Spend in money, priced like cost budgets (judge tokens included when they count).
    if i.is_some() || o.is_some() {
        let rates = state.limits.prices.rates(draft.model.as_deref());
        draft.cost_micro_usd = Some(crate::limits::cost_micro_usd(
            rates,
            i.unwrap_or(0),
            o.unwrap_or(0),
        ));
    }
    let fail_open = p
        .tenant
        .attributes
        .get("audit_fail_open")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    if let Some(c) = draft.capture.take() {
        // Stored before the receipt that references it.
        match crate::capture::persist(state, &p.tenant.id, &draft.id, c).await {
            Ok(id) => draft.capture_id = Some(id),
            Err(e) if fail_open => {
                tracing::warn!(tenant = %p.tenant.id, receipt = %draft.id, reason = e.reason, "content capture failed; released fail-open without it");
            }
            Err(e) => return Err(e),
        }
    }
    let receipt = draft.into_receipt(&p.tenant.id);
    if state.receipts.is_write_behind() {
        let id = receipt.id.clone();
        state
            .receipts
            .enqueue(receipt)
            .await
            .map_err(ApiError::from)?;
        return Ok(id);
    }
    let backup = fail_open.then(|| receipt.clone());
    match state.receipts.commit(receipt).await {
        Ok(sealed) => Ok(sealed.id),
        Err(e) => {
            if let Some(r) = backup
                && state.receipts.spill(std::slice::from_ref(&r)).is_ok()
            {
                tracing::warn!(
                    tenant = %p.tenant.id,
                    receipt = %r.id,
                    "receipt commit failed; released fail-open, receipt spilled"
                );
                return Ok(r.id);
            }
            // Not even the spill file took it: fail closed after all.
            Err(ApiError::from(e))
        }
    }
}
