//! Human approval of tool calls. A `require_approval` decision creates a pending approval
//! bound to tenant, requester (key id + user id), tool and the sha256 of the args'
//! canonical JSON. Approvers of the same tenant approve or deny it; once approved, the
//! requester gets a single-use token that lets exactly that call through
//! `/v1/guard/tool` once. Policy is evaluated again at approval and at redemption, so a
//! rule tightened in between wins. Every step is an `approval` receipt.
//!
//! Tenant attributes: `approval_quorum` (approvals needed, default 1),
//! `approval_allow_self` (true lets requesters approve their own calls),
//! `approval_ttl_seconds` (pending lifetime, default 3600), `approval_token_ttl_seconds`
//! (token lifetime after approval, default 600), `approval_webhook_url` (notified of each
//! new approval and each decision: `approval.requested`, `approval.decided`; signed like
//! alert webhooks with the tenant's webhook secret, see `webhooks.rs`).

use crate::auth::{Principal, Scope, authenticate, authorize};
use crate::error::ApiError;
use crate::policy::{Layers, base_context};
use crate::state::AppState;
use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use palisade_audit::{Receipt, ReceiptKind};
use palisade_policy::{Decision, EvalContext, Verdict};
use palisade_store::ApprovalRecord;
use serde::Deserialize;
use serde_json::{Map, Value, json};
use std::time::Duration;

/// Roles that may decide approvals (the zero-trust scope `approvals:decide` comes on top).
const DECIDER_ROLES: &[&str] = &["approver", "tenant_admin"];
/// Longest `?wait=` honoured.
const MAX_WAIT: Duration = Duration::from_secs(60);

fn now_ms() -> i64 {
    palisade_store::now_ms()
}

fn attr_u64(p: &Principal, name: &str, default: u64) -> u64 {
    p.tenant
        .attributes
        .get(name)
        .and_then(Value::as_u64)
        .unwrap_or(default)
}

/// sha256 of the canonical JSON of the args.
pub fn args_hash(args: &Value) -> Result<String, ApiError> {
    let c = palisade_audit::canonical_json(args)
        .map_err(|e| ApiError::invalid("invalid_args", format!("args: {e}")))?;
    Ok(palisade_audit::sha256_hex(c.as_bytes()))
}

async fn token_for(state: &AppState, a: &ApprovalRecord) -> Result<String, ApiError> {
    // Derived (HMAC under the tenant's key), never stored: only its hash is.
    let d = state
        .tenant_keys
        .digest(&a.tenant_id, "approval_token", a.id.as_bytes())
        .await?;
    Ok(format!("apt_{d}"))
}

async fn receipt(
    state: &AppState,
    p: &Principal,
    decision: &str,
    a: &ApprovalRecord,
    extra: Value,
) -> Result<String, ApiError> {
    let mut r = Receipt::new(
        uuid::Uuid::now_v7().hyphenated().to_string(),
        p.tenant_id(),
        ReceiptKind::Approval,
        palisade_audit::format_created_at(now_ms().max(0) as u64),
        decision,
    );
    r.key_id = Some(p.key.id.clone());
    r.user_id = p.key.user_id.clone();
    r.reason_code = Some(format!("approval:{}", a.id));
    r.approval_id = Some(a.id.clone());
    let mut details = json!({
        "approval_id": a.id,
        "tool": a.tool,
        "args_hash": a.args_hash,
        "status": a.status,
    });
    if let (Some(d), Value::Object(x)) = (details.as_object_mut(), extra) {
        d.extend(x);
    }
    r.details = details;
    Ok(state.receipts.commit(r).await?.id)
}

/// Tenant attribute naming the approvals webhook.
pub const WEBHOOK_ATTRIBUTE: &str = "approval_webhook_url";

/// Notifies the tenant's approvals webhook, if it has one. The payload names the call
/// (tool, args hash, requester) but never carries the args: approvers read them through
/// `GET /v1/approvals/{id}` with their own credential.
async fn notify(state: &AppState, p: &Principal, event: &'static str, a: &ApprovalRecord) {
    let Some(url) = p
        .tenant
        .attributes
        .get(WEBHOOK_ATTRIBUTE)
        .and_then(Value::as_str)
    else {
        return;
    };
    let secret = match crate::sentinel::webhook_secret(state, &a.tenant_id).await {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(error = %e.message, "no webhook secret for tenant");
            return;
        }
    };
    let body = json!({
        "type": event,
        "approval": {
            "id": a.id,
            "tenant_id": a.tenant_id,
            "status": a.status,
            "tool": a.tool,
            "args_hash": a.args_hash,
            "requester_key_id": a.requester_key_id,
            "requester_user_id": a.requester_user_id,
            "created_at": a.created_at,
            "expires_at": a.expires_at,
            "rule": a.body.get("rule"),
            "reason": a.body.get("reason"),
        },
    });
    state.webhooks.send(crate::webhooks::Delivery {
        url: url.to_string(),
        secret: Some(secret.into_bytes()),
        event,
        event_id: format!("{}:{}", a.id, a.version),
        body: body.to_string().into_bytes(),
    });
}

/// Creates a pending approval for a `require_approval` decision.
pub async fn create(
    state: &AppState,
    p: &Principal,
    ctx: &EvalContext,
    decision: &Decision,
) -> Result<ApprovalRecord, ApiError> {
    let now = now_ms();
    let ttl = attr_u64(p, "approval_ttl_seconds", 3600).clamp(10, 30 * 86_400) as i64;
    let mut body = Map::new();
    body.insert("args".into(), ctx.args.clone());
    body.insert("user".into(), Value::Object(ctx.user.clone()));
    body.insert("request".into(), Value::Object(ctx.request.clone()));
    body.insert("rule".into(), json!(decision.rule_id));
    body.insert("reason".into(), json!(decision.reason));
    body.insert(
        "quorum".into(),
        json!(attr_u64(p, "approval_quorum", 1).clamp(1, 10)),
    );
    body.insert("decisions".into(), json!([]));
    let a = ApprovalRecord {
        id: format!("apr_{}", uuid::Uuid::now_v7().simple()),
        tenant_id: p.tenant_id().to_string(),
        created_at: now,
        expires_at: now + ttl * 1000,
        status: "pending".into(),
        tool: ctx.tool.clone(),
        args_hash: args_hash(&ctx.args)?,
        requester_key_id: p.key.id.clone(),
        requester_user_id: p.key.user_id.clone(),
        token_hash: None,
        version: 0,
        body,
    };
    state.store.create_approval(&a).await?;
    receipt(state, p, "approval_requested", &a, json!({})).await?;
    notify(state, p, "approval.requested", &a).await;
    Ok(a)
}

/// Uses `token` on exactly this call (tenant, tool, canonical args; single use). On
/// success writes the redemption receipt, turns `decision` into the allow it grants and
/// returns the approval id; `None` when the token fits nothing (the decision is untouched).
async fn redeem(
    state: &AppState,
    p: &Principal,
    ctx: &EvalContext,
    decision: &mut Decision,
    token: &str,
) -> Result<Option<String>, ApiError> {
    let hash = palisade_audit::sha256_hex(token.as_bytes());
    let used = state
        .store
        .redeem_approval(
            p.tenant_id(),
            &hash,
            &ctx.tool,
            &args_hash(&ctx.args)?,
            now_ms(),
        )
        .await?;
    let Some(a) = used else { return Ok(None) };
    receipt(state, p, "approval_redeemed", &a, json!({})).await?;
    decision.verdict = Verdict::Allow;
    decision.rule_id = Some(format!("approval:{}", a.id));
    decision.reason = Some("approved by a human (single use)".into());
    Ok(Some(a.id))
}

/// `/v1/guard/tool` hook: for `require_approval`, redeems `token` (→ allow once) or
/// creates a pending approval. Returns the possibly changed decision and what to tell
/// the caller about the approval.
pub async fn on_guard(
    state: &AppState,
    p: &Principal,
    ctx: &EvalContext,
    mut decision: Decision,
    token: Option<&str>,
) -> Result<(Decision, Option<Value>), ApiError> {
    if decision.verdict != Verdict::RequireApproval {
        // Allowed calls need no token; denied ones cannot be unlocked by one.
        return Ok((decision, None));
    }
    if let Some(token) = token {
        return Ok(match redeem(state, p, ctx, &mut decision, token).await? {
            Some(id) => (decision, Some(json!({"id": id, "status": "used"}))),
            None => {
                decision.verdict = Verdict::Deny;
                decision.reason = Some(
                    "the approval token is not valid for this call (other tool or args, already used, expired or unknown)"
                        .into(),
                );
                (decision, Some(json!({"status": "invalid_token"})))
            }
        });
    }
    let a = create(state, p, ctx, &decision).await?;
    Ok((decision, Some(json!({"id": a.id, "status": "pending"}))))
}

/// What happened to a `require_approval` call the model made inside `/v1/messages`.
pub enum MessageCall {
    /// The caller's approval token covered exactly this call; it is now used up.
    Redeemed(Decision),
    /// A pending approval was opened; the call is withheld until a human decides.
    Pending(Decision, String),
}

/// `/v1/messages` hook for a `require_approval` tool_use: redeems `token` if it covers
/// this tool and these args (single use), otherwise opens a pending approval. Unlike
/// `/v1/guard/tool`, a token for some other call does not deny this one: the model may
/// emit several calls in one turn and the token fits at most one of them.
pub async fn on_message_call(
    state: &AppState,
    p: &Principal,
    ctx: &EvalContext,
    mut decision: Decision,
    token: Option<&str>,
) -> Result<MessageCall, ApiError> {
    if let Some(token) = token
        && redeem(state, p, ctx, &mut decision, token).await?.is_some()
    {
        return Ok(MessageCall::Redeemed(decision));
    }
    let a = create(state, p, ctx, &decision).await?;
    Ok(MessageCall::Pending(decision, a.id))
}

/// The view of an approval for a caller; the token only for its requester.
async fn view(state: &AppState, p: &Principal, a: &ApprovalRecord) -> Result<Value, ApiError> {
    let mut v = serde_json::to_value(a).map_err(|e| ApiError::internal(e.to_string()))?;
    if a.status == "approved" && a.requester_key_id == p.key.id {
        v["approval_token"] = json!(token_for(state, a).await?);
    }
    Ok(v)
}

/// Marks a lapsed pending approval as expired (lazily, on read).
async fn refresh(state: &AppState, a: ApprovalRecord) -> Result<ApprovalRecord, ApiError> {
    if (a.status == "pending" || a.status == "approved") && a.expires_at <= now_ms() {
        let mut e = a.clone();
        e.status = "expired".into();
        if state.store.update_approval(&e, a.version).await? {
            e.version += 1;
            return Ok(e);
        }
        return Ok(state
            .store
            .get_approval(&a.tenant_id, &a.id)
            .await?
            .unwrap_or(a));
    }
    Ok(a)
}

#[derive(Deserialize)]
pub struct ListParams {
    status: Option<String>,
    limit: Option<u32>,
}

/// `GET /v1/approvals`: the caller's tenant's approvals, newest first.
pub async fn list(
    State(state): State<AppState>,
    headers: HeaderMap,
    Query(q): Query<ListParams>,
) -> Result<Json<Value>, ApiError> {
    let p = authenticate(&state, &headers).await?;
    let rows = state
        .store
        .list_approvals(p.tenant_id(), q.status.as_deref(), q.limit.unwrap_or(100))
        .await?;
    let mut data = Vec::new();
    for a in rows {
        let a = refresh(&state, a).await?;
        data.push(view(&state, &p, &a).await?);
    }
    Ok(Json(json!({"data": data})))
}

#[derive(Deserialize)]
pub struct GetParams {
    wait: Option<String>,
}

fn parse_wait(s: &str) -> Duration {
    let s = s.trim();
    let (n, mult) = if let Some(x) = s.strip_suffix("ms") {
        (x, 1)
    } else if let Some(x) = s.strip_suffix('s') {
        (x, 1000)
    } else {
        (s, 1000)
    };
    Duration::from_millis(n.parse::<u64>().unwrap_or(0).saturating_mul(mult)).min(MAX_WAIT)
}

/// `GET /v1/approvals/{id}` (`?wait=30s`: long-poll until decided, at most 60 s).
pub async fn get(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Query(q): Query<GetParams>,
) -> Result<Json<Value>, ApiError> {
    let p = authenticate(&state, &headers).await?;
    let deadline =
        tokio::time::Instant::now() + q.wait.as_deref().map(parse_wait).unwrap_or_default();
    loop {
        let a = state
            .store
            .get_approval(p.tenant_id(), &id)
            .await?
            .ok_or_else(|| ApiError::not_found("no such approval"))?;
        let a = refresh(&state, a).await?;
        if a.status != "pending" || tokio::time::Instant::now() >= deadline || state.is_draining() {
            return Ok(Json(view(&state, &p, &a).await?));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct DecideBody {
    /// Edited args (approve only): evaluated by policy and scanners again.
    #[serde(default)]
    args: Option<Value>,
    #[serde(default)]
    reason: Option<String>,
}

fn requester_ctx(p: &Principal, a: &ApprovalRecord, args: Value) -> EvalContext {
    let mut ctx = base_context(p, None);
    if let Some(Value::Object(u)) = a.body.get("user") {
        ctx.user = u.clone();
    }
    if let Some(Value::Object(r)) = a.body.get("request") {
        ctx.request = r.clone();
    }
    ctx.tool = a.tool.clone();
    ctx.args = args;
    ctx
}

async fn decide(
    state: AppState,
    headers: HeaderMap,
    id: String,
    body: Option<Json<DecideBody>>,
    approve: bool,
) -> Result<Json<Value>, ApiError> {
    let p = authorize(&state, &headers, Scope::ApprovalsDecide).await?;
    if !DECIDER_ROLES.contains(&p.key.role.as_str()) {
        return Err(ApiError::forbidden(
            "approver_role_required",
            "deciding approvals needs a credential with role approver or tenant_admin",
        ));
    }
    let body = body.map(|Json(b)| b).unwrap_or_default();
    let layers: Layers = state.policies.layers(p.tenant_id()).await?;
    for _ in 0..8 {
        let a = state
            .store
            .get_approval(p.tenant_id(), &id)
            .await?
            .ok_or_else(|| ApiError::not_found("no such approval"))?;
        let a = refresh(&state, a).await?;
        if a.status != "pending" {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                "approval_not_pending",
                format!("approval {} is {}", a.id, a.status),
            )
            .with_kind("invalid_request_error"));
        }
        let is_self = a.requester_key_id == p.key.id
            || (a.requester_user_id.is_some() && a.requester_user_id == p.key.user_id);
        let allow_self = p
            .tenant
            .attributes
            .get("approval_allow_self")
            .and_then(Value::as_bool)
            .unwrap_or(false);
        if is_self && !allow_self {
            return Err(ApiError::forbidden(
                "self_approval",
                "requesters cannot decide their own approvals",
            ));
        }
        let approver = json!({
            "key_id": p.key.id,
            "user_id": p.key.user_id,
        });
        let decisions = a
            .body
            .get("decisions")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        if decisions
            .iter()
            .any(|d| d.get("approver") == Some(&approver))
        {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                "already_decided",
                "this approver already decided",
            )
            .with_kind("invalid_request_error"));
        }
        let mut next = a.clone();
        let mut args = a.body.get("args").cloned().unwrap_or(Value::Null);
        let mut policy_denied = None;
        if approve {
            if let Some(edited) = &body.args {
                args = edited.clone();
                next.args_hash = args_hash(&args)?;
                next.body.insert("args".into(), args.clone());
                // Edited args go through the input scanners: text that would be blocked
                // on the way in cannot be approved in.
                let guard = state.guards.for_layers(&layers).await?;
                if let Some(g) = guard {
                    let mut probe =
                        json!({"messages": [{"role": "user", "content": args.to_string()}]});
                    let mut cc = crate::content::CallContent::new(g);
                    if let Some(m) = probe.as_object_mut() {
                        cc.request(m);
                    }
                    if !cc.log.blocked.is_empty() {
                        policy_denied =
                            Some("the edited args are blocked by the content rules".to_string());
                    }
                }
            }
            // Policy again, on the (possibly edited) args: a deny added since wins.
            let d = layers.evaluate(&requester_ctx(&p, &a, args.clone()));
            if d.verdict == Verdict::Deny {
                policy_denied = Some(format!(
                    "policy now denies this call{}",
                    d.reason.map(|r| format!(": {r}")).unwrap_or_default()
                ));
            }
        }
        let mut decisions = decisions;
        decisions.push(json!({
            "approver": approver,
            "decision": if approve && policy_denied.is_none() { "approve" } else { "deny" },
            "reason": policy_denied.clone().or(body.reason.clone()),
            "at": now_ms(),
        }));
        next.body
            .insert("decisions".into(), Value::Array(decisions.clone()));
        let quorum = a.body.get("quorum").and_then(Value::as_u64).unwrap_or(1);
        let approvals = decisions
            .iter()
            .filter(|d| d["decision"] == "approve")
            .count() as u64;
        if !approve || policy_denied.is_some() {
            next.status = "denied".into();
        } else if approvals >= quorum {
            next.status = "approved".into();
            let ttl = attr_u64(&p, "approval_token_ttl_seconds", 600).clamp(1, 86_400) as i64;
            next.expires_at = now_ms() + ttl * 1000;
            let token = token_for(&state, &next).await?;
            next.token_hash = Some(palisade_audit::sha256_hex(token.as_bytes()));
        }
        if !state.store.update_approval(&next, a.version).await? {
            continue; // another approver got there first; read again
        }
        next.version += 1;
        let step = match next.status.as_str() {
            "approved" => "approval_granted",
            "denied" => "approval_denied",
            _ => "approval_vote",
        };
        receipt(
            &state,
            &p,
            step,
            &next,
            json!({"args_edited": body.args.is_some(), "policy_denied": policy_denied}),
        )
        .await?;
        if next.status != "pending" {
            notify(&state, &p, "approval.decided", &next).await;
        }
        if let Some(why) = policy_denied {
            return Err(ApiError::forbidden("approval_policy_denied", why));
        }
        return Ok(Json(view(&state, &p, &next).await?));
    }
    Err(ApiError::new(
        StatusCode::CONFLICT,
        "approval_contended",
        "the approval changed concurrently; retry",
    )
    .with_kind("invalid_request_error"))
}

/// `POST /v1/approvals/{id}/approve` (optional body `{"args": …, "reason": …}`).
pub async fn approve(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Option<Json<DecideBody>>,
) -> Result<Json<Value>, ApiError> {
    decide(state, headers, id, body, true).await
}

/// `POST /v1/approvals/{id}/deny`.
pub async fn deny(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Option<Json<DecideBody>>,
) -> Result<Json<Value>, ApiError> {
    decide(state, headers, id, body, false).await
}
