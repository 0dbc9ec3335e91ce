//! Policies in the running gateway: loading and caching the active compiled versions per
//! scope, building the evaluation context from the verified principal, and the
//! `/v1/guard/tool` endpoint. Versions are immutable and addressed by the SHA-256 of
//! their source; the cache's one-second TTL bounds how long another process's activation
//! takes to be seen, and this process's activations invalidate it at once.

use crate::auth::{Principal, Scope, authorize};
use crate::error::ApiError;
use crate::state::AppState;
use aws_lc_rs::digest;
use axum::Json;
use axum::extract::State;
use axum::http::HeaderMap;
use palisade_audit::{PolicyRef, Receipt, ReceiptKind, ToolDecision, ToolDirection};
use palisade_policy::{CompiledPolicy, Decision, Diagnostic, EvalContext, Verdict};
use palisade_store::{DynStore, PLATFORM_SCOPE};
use serde::Deserialize;
use serde_json::{Map, Value, json};
use std::sync::Arc;
use std::time::Duration;

/// A compiled active version.
pub struct ActivePolicy {
    pub hash: String,
    pub compiled: CompiledPolicy,
}

/// The two layers in force for one tenant at one moment.
#[derive(Clone, Default)]
pub struct Layers {
    pub platform: Option<Arc<ActivePolicy>>,
    pub tenant: Option<Arc<ActivePolicy>>,
}

impl Layers {
    pub fn platform(&self) -> Option<&CompiledPolicy> {
        self.platform.as_deref().map(|a| &a.compiled)
    }
    pub fn tenant(&self) -> Option<&CompiledPolicy> {
        self.tenant.as_deref().map(|a| &a.compiled)
    }
    pub fn evaluate(&self, ctx: &EvalContext) -> Decision {
        palisade_policy::evaluate(self.platform(), self.tenant(), ctx)
    }
    pub fn may_ever_run(&self, tool: &str, ctx: &EvalContext) -> bool {
        palisade_policy::may_ever_run(self.platform(), self.tenant(), tool, ctx)
    }
    /// The versions and deciding rule, for receipts.
    pub fn reference(&self, d: Option<&Decision>) -> PolicyRef {
        PolicyRef {
            platform_version: self.platform.as_ref().map(|a| a.hash.clone()),
            tenant_version: self.tenant.as_ref().map(|a| a.hash.clone()),
            rule_id: d.and_then(|d| d.rule_id.clone()),
            layer: d.and_then(|d| d.layer).map(|l| l.as_str().to_string()),
        }
    }
}

#[derive(Clone)]
pub struct Policies {
    store: DynStore,
    cache: moka::future::Cache<String, Option<Arc<ActivePolicy>>>,
}

/// Longest time an activation made by another process takes to apply here.
pub const POLICY_CACHE_TTL: Duration = Duration::from_secs(1);

pub fn source_hash(source: &str) -> String {
    hex::encode(digest::digest(&digest::SHA256, source.as_bytes()).as_ref())
}

/// Parses and compiles a policy for a scope, with tenant-only checks for tenant scopes.
pub fn compile_for(
    scope: &str,
    source: &str,
    file: &str,
) -> Result<CompiledPolicy, Vec<Diagnostic>> {
    let parsed = palisade_policy::parse(source, file)?;
    if scope != PLATFORM_SCOPE {
        let errs = parsed.tenant_errors();
        if !errs.is_empty() {
            return Err(errs);
        }
    }
    palisade_policy::compile(&parsed)
}

impl Policies {
    pub fn new(store: DynStore) -> Self {
        Self::with_ttl(store, POLICY_CACHE_TTL)
    }

    pub fn with_ttl(store: DynStore, ttl: Duration) -> Self {
        Self {
            store,
            cache: moka::future::Cache::builder()
                .max_capacity(10_000)
                .time_to_live(ttl)
                .build(),
        }
    }

    /// Drops every cached policy (after the change feed lost notifications).
    pub fn invalidate_all(&self) {
        self.cache.invalidate_all();
    }

    async fn active(&self, scope: &str) -> Result<Option<Arc<ActivePolicy>>, ApiError> {
        if let Some(hit) = self.cache.get(scope).await {
            return Ok(hit);
        }
        let loaded = match self.store.active_policy(scope).await? {
            Some(v) => {
                let compiled = compile_for(
                    scope,
                    &v.source,
                    &format!("{scope}@{}", &v.hash[..12.min(v.hash.len())]),
                )
                .map_err(|errs| {
                    tracing::error!(
                        scope,
                        errors = errs.len(),
                        "stored active policy no longer compiles"
                    );
                    ApiError::unavailable(
                        "policy_unavailable",
                        "the active policy could not be loaded; request refused",
                    )
                })?;
                Some(Arc::new(ActivePolicy {
                    hash: v.hash,
                    compiled,
                }))
            }
            None => None,
        };
        self.cache.insert(scope.to_string(), loaded.clone()).await;
        Ok(loaded)
    }

    pub async fn layers(&self, tenant_id: &str) -> Result<Layers, ApiError> {
        Ok(Layers {
            platform: self.active(PLATFORM_SCOPE).await?,
            tenant: self.active(tenant_id).await?,
        })
    }

    pub async fn invalidate(&self, scope: &str) {
        self.cache.invalidate(scope).await;
    }
}

/// The evaluation context of a principal: everything comes from the verified credential
/// and the tenant row, nothing from request headers.
pub fn base_context(p: &Principal, model: Option<&str>) -> EvalContext {
    let mut user = Map::new();
    if let Some(u) = &p.key.user_id {
        user.insert("id".into(), Value::from(u.clone()));
    }
    user.insert("role".into(), Value::from(p.key.role.clone()));
    user.insert("key_id".into(), Value::from(p.key.id.clone()));
    let mut tenant = Map::new();
    tenant.insert("id".into(), Value::from(p.tenant.id.clone()));
    tenant.insert("plan".into(), Value::from(p.tenant.plan.clone()));
    tenant.insert(
        "attributes".into(),
        Value::Object(p.tenant.attributes.clone()),
    );
    let mut request = Map::new();
    if let Some(m) = model {
        request.insert("model".into(), Value::from(m));
    }
    EvalContext {
        tool: String::new(),
        args: Value::Null,
        user,
        tenant,
        request,
    }
}

pub fn tool_decision(tool: &str, d: &Decision, direction: ToolDirection) -> ToolDecision {
    ToolDecision {
        tool: tool.to_string(),
        decision: d.verdict.as_str().to_string(),
        rule_id: d.rule_id.clone(),
        direction,
    }
}

/// The sentence a client sees when a tool call is withheld. A call waiting for approval
/// names the approval and how to wait for it, so an agent can resume on its own.
pub fn denial_text(tool: &str, d: &Decision, receipt_id: &str, approval: Option<&str>) -> String {
    let what = match d.verdict {
        Verdict::RequireApproval => "requires approval and was not executed",
        _ => "was denied by policy and was not executed",
    };
    let reason = d
        .reason
        .as_deref()
        .map(|r| format!(": {r}"))
        .unwrap_or_default();
    match approval {
        Some(id) => format!(
            "[Palisade] The tool call `{tool}` {what}{reason} (approval {id}, receipt {receipt_id}). \
             Wait for a decision with GET /v1/approvals/{id}?wait=30s; once approved, repeat the \
             request with the header x-palisade-approval-token."
        ),
        None => format!("[Palisade] The tool call `{tool}` {what}{reason} (receipt {receipt_id})."),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GuardToolRequest {
    tool: String,
    #[serde(default)]
    args: Value,
    /// Extra request attributes (`request.<attr>` in conditions). Cannot touch user or
    /// tenant attributes, which come from the credential.
    #[serde(default)]
    context: Option<GuardContext>,
    /// Single-use token of an approved call (see `approvals.rs`).
    #[serde(default)]
    approval_token: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GuardContext {
    #[serde(default)]
    request: Map<String, Value>,
}

/// `POST /v1/guard/tool`: decide one tool call for agents that run tools themselves.
pub async fn guard_tool(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Result<Json<Value>, ApiError> {
    let principal = authorize(&state, &headers, Scope::Guard).await?;
    crate::proxy::check_json_depth(&body, state.config.limits.max_json_depth)?;
    let req: GuardToolRequest = serde_json::from_slice(&body)
        .map_err(|e| ApiError::invalid("invalid_body", format!("invalid request body: {e}")))?;
    if req.tool.is_empty() || req.tool.len() > 256 {
        return Err(ApiError::invalid(
            "invalid_tool",
            "tool must be 1-256 characters",
        ));
    }
    let layers = state.policies.layers(principal.tenant_id()).await?;
    crate::limits::admit_tool(&state, &layers, &principal, &req.tool).await?;
    let mut ctx = base_context(&principal, None);
    if let Some(c) = req.context {
        ctx.request = c.request;
    }
    ctx.tool = req.tool.clone();
    ctx.args = req.args;
    let decision = layers.evaluate(&ctx);
    let (decision, approval) = crate::approvals::on_guard(
        &state,
        &principal,
        &ctx,
        decision,
        req.approval_token.as_deref(),
    )
    .await?;
    let mut r = Receipt::new(
        uuid::Uuid::now_v7().hyphenated().to_string(),
        principal.tenant_id(),
        ReceiptKind::ToolDecision,
        palisade_audit::format_created_at(palisade_store::now_ms().max(0) as u64),
        decision.verdict.as_str(),
    );
    r.key_id = Some(principal.key.id.clone());
    r.user_id = principal.key.user_id.clone();
    r.reason_code = decision.rule_id.clone();
    r.policy = Some(layers.reference(Some(&decision)));
    r.tools = vec![tool_decision(&req.tool, &decision, ToolDirection::Called)];
    r.prompt_hmac = Some(
        state
            .tenant_keys
            .digest(
                principal.tenant_id(),
                "tool_args",
                ctx.args.to_string().as_bytes(),
            )
            .await?,
    );
    let sealed = state.receipts.commit(r).await?;
    Ok(Json(json!({
        "decision": decision.verdict.as_str(),
        "rule": decision.rule_id,
        "layer": decision.layer.map(|l| l.as_str()),
        "reason": decision.reason,
        "receipt_id": sealed.id,
        "policy": {
            "platform_version": layers.platform.as_ref().map(|a| a.hash.clone()),
            "tenant_version": layers.tenant.as_ref().map(|a| a.hash.clone()),
        },
        "trace": decision.trace,
        "approval": approval,
    })))
}
