//! Tool governance inside `/v1/messages`: tools the caller may never use are removed from
//! the request, every `tool_use` the model emits is decided on its actual input, and a
//! withheld call reaches the client only as text it cannot execute. Streams hold a
//! `tool_use` block until its input is complete, then release or replace it.

use crate::approvals::MessageCall;
use crate::auth::Principal;
use crate::content::StreamContent;
use crate::policy::{Layers, denial_text, tool_decision};
use crate::sse::encode;
use crate::state::AppState;
use bytes::Bytes;
use palisade_audit::{ToolDecision, ToolDirection};
use palisade_policy::{Decision, EvalContext, Verdict};
use serde_json::{Map, Value, json};
use std::collections::HashMap;

/// Policy evaluation for one call: the layers in force and the principal's context.
pub struct ToolGate {
    pub layers: Layers,
    pub ctx: EvalContext,
    pub receipt_id: String,
    /// Refuse the whole response instead of replacing a withheld block.
    pub refuse: bool,
    /// Opens approvals for `require_approval` calls (absent: they are withheld like denials).
    pub approvals: Option<ApprovalHook>,
}

/// What the gate needs to open and redeem approvals from inside `/v1/messages`.
pub struct ApprovalHook {
    pub state: AppState,
    pub principal: Principal,
    /// `x-palisade-approval-token`: lets the one approved call through, once.
    pub token: std::sync::Mutex<Option<String>>,
}

/// What the gate did, for the receipt.
#[derive(Default)]
pub struct GateLog {
    pub tools: Vec<ToolDecision>,
    /// The first withheld call's decision (it names the deciding rule in the receipt).
    pub deciding: Option<Decision>,
    pub withheld: usize,
    /// Approvals opened for withheld calls, in order.
    pub approvals: Vec<String>,
}

impl GateLog {
    fn note(&mut self, tool: &str, d: Decision, dir: ToolDirection, approval: Option<String>) {
        self.tools.push(tool_decision(tool, &d, dir));
        self.approvals.extend(approval);
        if d.verdict != Verdict::Allow {
            self.withheld += usize::from(dir == ToolDirection::Called);
            if self.deciding.is_none() {
                self.deciding = Some(d);
            }
        } else if self.deciding.is_none() && dir == ToolDirection::Called {
            // Keep the latest allow as the reference until something is withheld.
            self.deciding = Some(d);
        }
    }
}

impl ToolGate {
    pub fn decide(&self, tool: &str, args: &Value) -> Decision {
        let mut ctx = self.ctx.clone();
        ctx.tool = tool.to_string();
        ctx.args = args.clone();
        self.layers.evaluate(&ctx)
    }

    /// Decides a call the model made. A `require_approval` verdict either redeems the
    /// caller's approval token (when it covers exactly this call) or opens a pending
    /// approval whose id is returned. Failing to record the approval withholds the call.
    async fn decide_call(&self, tool: &str, args: &Value) -> (Decision, Option<String>) {
        let mut ctx = self.ctx.clone();
        ctx.tool = tool.to_string();
        ctx.args = args.clone();
        let mut d = self.layers.evaluate(&ctx);
        let Some(hook) = self
            .approvals
            .as_ref()
            .filter(|_| d.verdict == Verdict::RequireApproval)
        else {
            return (d, None);
        };
        let token = hook.token.lock().ok().and_then(|mut t| t.take());
        match crate::approvals::on_message_call(
            &hook.state,
            &hook.principal,
            &ctx,
            d.clone(),
            token.as_deref(),
        )
        .await
        {
            Ok(MessageCall::Redeemed(d)) => (d, None),
            Ok(MessageCall::Pending(d, id)) => {
                // The token fitted no call yet: a later call in this turn may use it.
                if let (Some(t), Ok(mut slot)) = (token, hook.token.lock()) {
                    *slot = Some(t);
                }
                (d, Some(id))
            }
            Err(e) => {
                tracing::warn!(error = %e.message, "could not open an approval; the call stays withheld");
                d.reason = Some("an approval could not be recorded; try again".into());
                (d, None)
            }
        }
    }

    /// Removes from `body.tools` the tools this caller may never run; also drops a
    /// `tool_choice` naming a removed tool (the upstream would reject it). Records tool
    /// results the client sends back. Returns whether the body changed.
    pub fn filter_request(
        &self,
        body: &mut Map<String, Value>,
        strip: bool,
        log: &mut GateLog,
    ) -> bool {
        record_tool_results(body, log);
        if !strip {
            return false;
        }
        let Some(Value::Array(tools)) = body.get_mut("tools") else {
            return false;
        };
        let before = tools.len();
        let mut removed = Vec::new();
        tools.retain(|t| {
            // Server tools (web search, …) have a `type` other than custom and are governed
            // upstream; only named client tools are policy-checked here.
            let Some(name) = t.get("name").and_then(Value::as_str) else {
                return true;
            };
            let keep = self.layers.may_ever_run(name, &self.ctx);
            if !keep {
                removed.push(name.to_string());
            }
            keep
        });
        if tools.len() == before {
            return false;
        }
        let now_empty = tools.is_empty();
        for name in &removed {
            log.tools.push(ToolDecision {
                tool: name.clone(),
                decision: "deny".into(),
                rule_id: None,
                direction: ToolDirection::Offered,
            });
        }
        let choice_removed = body
            .get("tool_choice")
            .and_then(|c| c.get("name"))
            .and_then(Value::as_str)
            .is_some_and(|n| removed.iter().any(|r| r == n));
        if now_empty {
            body.remove("tools");
            body.remove("tool_choice");
        } else if choice_removed {
            body.remove("tool_choice");
        }
        true
    }

    /// Decides every `tool_use` block of a complete (non-streamed) message. Withheld
    /// blocks become text. Returns true if the message changed.
    pub async fn filter_message(&self, msg: &mut Value, log: &mut GateLog) -> bool {
        let Some(blocks) = msg.get_mut("content").and_then(Value::as_array_mut) else {
            return false;
        };
        let mut changed = false;
        let mut remaining_calls = 0;
        for block in blocks.iter_mut() {
            if block.get("type").and_then(Value::as_str) != Some("tool_use") {
                continue;
            }
            let name = block
                .get("name")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string();
            let input = block.get("input").cloned().unwrap_or(Value::Null);
            let (d, approval) = self.decide_call(&name, &input).await;
            if d.verdict == Verdict::Allow {
                remaining_calls += 1;
            } else {
                let text = denial_text(&name, &d, &self.receipt_id, approval.as_deref());
                *block = json!({"type": "text", "text": text});
                changed = true;
            }
            log.note(&name, d, ToolDirection::Called, approval);
        }
        if changed
            && remaining_calls == 0
            && msg.get("stop_reason").and_then(Value::as_str) == Some("tool_use")
        {
            // Nothing left for the client to execute: the turn is over.
            msg["stop_reason"] = Value::from("end_turn");
        }
        changed
    }
}

/// Tool results in the request, recorded by tool name (found through the `tool_use_id`
/// of the assistant turns in the same conversation).
fn record_tool_results(body: &Map<String, Value>, log: &mut GateLog) {
    let Some(Value::Array(messages)) = body.get("messages") else {
        return;
    };
    let mut names: HashMap<&str, &str> = HashMap::new();
    for m in messages {
        let Some(Value::Array(blocks)) = m.get("content") else {
            continue;
        };
        for b in blocks {
            match b.get("type").and_then(Value::as_str) {
                Some("tool_use") => {
                    if let (Some(id), Some(name)) = (
                        b.get("id").and_then(Value::as_str),
                        b.get("name").and_then(Value::as_str),
                    ) {
                        names.insert(id, name);
                    }
                }
                Some("tool_result") => {
                    let id = b.get("tool_use_id").and_then(Value::as_str).unwrap_or("");
                    log.tools.push(ToolDecision {
                        tool: names.get(id).copied().unwrap_or("unknown").to_string(),
                        decision: if b.get("is_error").and_then(Value::as_bool) == Some(true) {
                            "error".into()
                        } else {
                            "result".into()
                        },
                        rule_id: None,
                        direction: ToolDirection::Result,
                    });
                }
                _ => {}
            }
        }
    }
}

/// A tool_use block being held in a stream until its input is complete.
struct Held {
    index: u64,
    name: String,
    start: Value,
    json: String,
    raw: Vec<Bytes>,
}

/// The streaming side of the gate. Feed every upstream event; it returns the events to
/// release now (possibly rewritten).
pub struct StreamGate {
    gate: ToolGate,
    held: Option<Held>,
    allowed_calls: usize,
    log: GateLog,
    max_held_bytes: usize,
}

pub enum GateOutput {
    Release(Vec<Bytes>),
    /// The whole response must be refused (configured refusal of withheld calls).
    Refuse(Decision, String),
}

impl StreamGate {
    pub fn new(gate: ToolGate, max_held_bytes: usize) -> Self {
        Self {
            gate,
            held: None,
            allowed_calls: 0,
            log: GateLog::default(),
            max_held_bytes,
        }
    }

    pub fn withheld(&self) -> usize {
        self.log.withheld
    }

    pub fn into_parts(self) -> (Layers, GateLog) {
        (self.gate.layers, self.log)
    }

    pub async fn push(
        &mut self,
        name: &str,
        data: &str,
        raw: Bytes,
        content: Option<&mut StreamContent>,
    ) -> GateOutput {
        match name {
            "content_block_start" => {
                let v: Value = serde_json::from_str(data).unwrap_or(Value::Null);
                if v.pointer("/content_block/type").and_then(Value::as_str) == Some("tool_use") {
                    let index = v.get("index").and_then(Value::as_u64).unwrap_or(0);
                    let name = v
                        .pointer("/content_block/name")
                        .and_then(Value::as_str)
                        .unwrap_or("")
                        .to_string();
                    self.held = Some(Held {
                        index,
                        name,
                        start: v,
                        json: String::new(),
                        raw: vec![raw],
                    });
                    return GateOutput::Release(Vec::new());
                }
                GateOutput::Release(vec![raw])
            }
            "content_block_delta" | "content_block_stop" => {
                let Some(held) = self.held.as_mut() else {
                    return GateOutput::Release(vec![raw]);
                };
                let v: Value = serde_json::from_str(data).unwrap_or(Value::Null);
                if v.get("index").and_then(Value::as_u64) != Some(held.index) {
                    return GateOutput::Release(vec![raw]);
                }
                if name == "content_block_delta" {
                    if let Some(p) = v.pointer("/delta/partial_json").and_then(Value::as_str) {
                        held.json.push_str(p);
                    }
                    held.raw.push(raw);
                    if held.json.len() > self.max_held_bytes {
                        // An input too large to judge is not released.
                        let held = self.held.take();
                        return self.withhold(held, "tool input exceeds the configured size limit");
                    }
                    return GateOutput::Release(Vec::new());
                }
                held.raw.push(raw);
                let held = self.held.take();
                self.decide_held(held, content).await
            }
            "message_delta" => {
                if self.log.withheld > 0 && self.allowed_calls == 0 {
                    let mut v: Value = serde_json::from_str(data).unwrap_or(Value::Null);
                    if v.pointer("/delta/stop_reason").and_then(Value::as_str) == Some("tool_use") {
                        v["delta"]["stop_reason"] = Value::from("end_turn");
                        return GateOutput::Release(vec![encode("message_delta", &v.to_string())]);
                    }
                }
                GateOutput::Release(vec![raw])
            }
            _ => GateOutput::Release(vec![raw]),
        }
    }

    async fn decide_held(
        &mut self,
        held: Option<Held>,
        content: Option<&mut StreamContent>,
    ) -> GateOutput {
        let Some(held) = held else {
            return GateOutput::Release(Vec::new());
        };
        let mut input: Value = if held.json.trim().is_empty() {
            held.start
                .pointer("/content_block/input")
                .cloned()
                .unwrap_or_else(|| json!({}))
        } else {
            match serde_json::from_str(&held.json) {
                Ok(v) => v,
                Err(_) => return self.withhold(Some(held), "tool input is not valid JSON"),
            }
        };
        let (d, approval) = self.gate.decide_call(&held.name, &input).await;
        if d.verdict == Verdict::Allow {
            // The allowed call's input still passes the output content rules.
            let rewritten = match content {
                None => false,
                Some(c) => match c.tool_input(&mut input) {
                    Ok(changed) => changed,
                    Err(blocked) => {
                        return self.withhold(
                            Some(held),
                            &format!("tool input blocked by content policy ({blocked})"),
                        );
                    }
                },
            };
            self.allowed_calls += 1;
            self.log.note(&held.name, d, ToolDirection::Called, None);
            if !rewritten {
                return GateOutput::Release(held.raw);
            }
            return GateOutput::Release(reissue(&held, &input));
        }
        let name = held.name.clone();
        let text = denial_text(&name, &d, &self.gate.receipt_id, approval.as_deref());
        self.log
            .note(&name, d.clone(), ToolDirection::Called, approval);
        if self.gate.refuse {
            return GateOutput::Refuse(d, name);
        }
        GateOutput::Release(replacement(held.index, &text))
    }

    fn withhold(&mut self, held: Option<Held>, why: &str) -> GateOutput {
        let Some(held) = held else {
            return GateOutput::Release(Vec::new());
        };
        let d = Decision {
            verdict: Verdict::Deny,
            layer: None,
            rule_id: Some("palisade:malformed_tool_input".into()),
            reason: Some(why.to_string()),
            trace: Vec::new(),
        };
        self.log
            .note(&held.name, d.clone(), ToolDirection::Called, None);
        if self.gate.refuse {
            return GateOutput::Refuse(d, held.name);
        }
        GateOutput::Release(replacement(
            held.index,
            &denial_text(&held.name, &d, &self.gate.receipt_id, None),
        ))
    }

    /// A tool_use still held when the stream ends is never released.
    pub fn finish(&mut self) -> Vec<Bytes> {
        match self.held.take() {
            Some(h) => {
                let d = Decision {
                    verdict: Verdict::Deny,
                    layer: None,
                    rule_id: Some("palisade:incomplete_tool_input".into()),
                    reason: Some("the stream ended before the tool input was complete".into()),
                    trace: Vec::new(),
                };
                self.log.note(&h.name, d, ToolDirection::Called, None);
                Vec::new()
            }
            None => Vec::new(),
        }
    }
}

/// A released tool_use whose input was rewritten (redacted): the same block, with the
/// whole input in one delta.
fn reissue(held: &Held, input: &Value) -> Vec<Bytes> {
    let mut start = held.start.clone();
    start["content_block"]["input"] = json!({});
    vec![
        encode("content_block_start", &start.to_string()),
        encode(
            "content_block_delta",
            &json!({"type": "content_block_delta", "index": held.index, "delta": {"type": "input_json_delta", "partial_json": input.to_string()}}).to_string(),
        ),
        encode("content_block_stop", &json!({"type": "content_block_stop", "index": held.index}).to_string()),
    ]
}

/// A text block at `index` standing in for a withheld tool_use.
fn replacement(index: u64, text: &str) -> Vec<Bytes> {
    vec![
        encode("content_block_start", &json!({"type": "content_block_start", "index": index, "content_block": {"type": "text", "text": ""}}).to_string()),
        encode("content_block_delta", &json!({"type": "content_block_delta", "index": index, "delta": {"type": "text_delta", "text": text}}).to_string()),
        encode("content_block_stop", &json!({"type": "content_block_stop", "index": index}).to_string()),
    ]
}
