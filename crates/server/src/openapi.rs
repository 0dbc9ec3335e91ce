//! The OpenAPI 3.0 document served at `/openapi.json`.
//!
//! Hand-maintained rather than derived with utoipa: utoipa wants an attribute on every
//! handler and `ToSchema` on every body type, spread over modules other work owns, and
//! several bodies here are deliberately untyped (Anthropic pass-through, YAML policies).
//! One table keeps every endpoint, its auth requirement and its scope in one reviewable
//! place; a test checks that every route of `router()` is in it, and a snapshot pins it.

use serde_json::{Map, Value, json};

/// Who may call an endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Auth {
    /// No credential.
    Public,
    /// A tenant credential (Palisade key or JWT) with this scope.
    Tenant(&'static str),
    /// The platform admin token, or a tenant-admin credential of the tenant in the path.
    TenantAdmin,
    /// The platform admin token only.
    Platform,
    /// The metrics token (`Authorization: Bearer`), when one is configured.
    MetricsToken,
}

/// One documented operation.
pub struct Op {
    pub method: &'static str,
    pub path: &'static str,
    pub summary: &'static str,
    pub auth: Auth,
    /// Request body media type, if the operation takes one.
    pub body: Option<&'static str>,
    pub ok: u16,
}

const fn op(
    method: &'static str,
    path: &'static str,
    summary: &'static str,
    auth: Auth,
    body: Option<&'static str>,
    ok: u16,
) -> Op {
    Op {
        method,
        path,
        summary,
        auth,
        body,
        ok,
    }
}

const JSON: Option<&str> = Some("application/json");
const YAML: Option<&str> = Some("application/yaml");

/// Every endpoint of the gateway.
pub const OPS: &[Op] = &[
    op(
        "post",
        "/v1/messages",
        "Create a message (Anthropic-compatible, streaming included)",
        Auth::Tenant("messages"),
        JSON,
        200,
    ),
    op(
        "post",
        "/v1/messages/count_tokens",
        "Count tokens (Anthropic-compatible)",
        Auth::Tenant("messages"),
        JSON,
        200,
    ),
    op(
        "post",
        "/v1/guard/tool",
        "Decide one tool call under the tenant's policy",
        Auth::Tenant("guard"),
        JSON,
        200,
    ),
    op(
        "post",
        "/v1/guard/scan",
        "Scan and redact a text under the tenant's content rules",
        Auth::Tenant("guard"),
        JSON,
        200,
    ),
    op(
        "get",
        "/v1/receipts",
        "List this tenant's receipts (newest first)",
        Auth::Tenant("receipts:read"),
        None,
        200,
    ),
    op(
        "get",
        "/v1/receipts/export",
        "Export this tenant's receipts as NDJSON",
        Auth::Tenant("receipts:read"),
        None,
        200,
    ),
    op(
        "get",
        "/v1/receipts/{id}",
        "Get one of this tenant's receipts",
        Auth::Tenant("receipts:read"),
        None,
        200,
    ),
    op(
        "get",
        "/v1/receipts/{id}/content",
        "Decrypted captured content of a call (tenant admin; capture_content tenants)",
        Auth::Tenant("admin"),
        None,
        200,
    ),
    op(
        "get",
        "/v1/audit/public-key",
        "Checkpoint signing public key",
        Auth::Public,
        None,
        200,
    ),
    op(
        "post",
        "/admin/v1/tenants",
        "Create a tenant",
        Auth::Platform,
        JSON,
        201,
    ),
    op(
        "get",
        "/admin/v1/tenants",
        "List tenants",
        Auth::Platform,
        None,
        200,
    ),
    op(
        "get",
        "/admin/v1/tenants/{tenant}",
        "Get a tenant",
        Auth::Platform,
        None,
        200,
    ),
    op(
        "patch",
        "/admin/v1/tenants/{tenant}",
        "Update a tenant",
        Auth::Platform,
        JSON,
        200,
    ),
    op(
        "put",
        "/admin/v1/tenants/{tenant}",
        "Update a tenant",
        Auth::Platform,
        JSON,
        200,
    ),
    op(
        "delete",
        "/admin/v1/tenants/{tenant}",
        "Delete a tenant (crypto-shreds its payloads)",
        Auth::Platform,
        None,
        204,
    ),
    op(
        "post",
        "/admin/v1/tenants/{tenant}/keys",
        "Create an API key (secret shown once)",
        Auth::TenantAdmin,
        JSON,
        201,
    ),
    op(
        "get",
        "/admin/v1/tenants/{tenant}/keys",
        "List API keys",
        Auth::TenantAdmin,
        None,
        200,
    ),
    op(
        "post",
        "/admin/v1/tenants/{tenant}/keys/{id}/rotate",
        "Rotate a key's secret, optionally with a grace period",
        Auth::TenantAdmin,
        JSON,
        200,
    ),
    op(
        "post",
        "/admin/v1/tenants/{tenant}/keys/{id}/revoke",
        "Revoke a key",
        Auth::TenantAdmin,
        None,
        200,
    ),
    op(
        "put",
        "/admin/v1/tenants/{tenant}/upstream-key",
        "Set or replace the tenant's own upstream key (BYOK; stored encrypted, never returned)",
        Auth::TenantAdmin,
        JSON,
        200,
    ),
    op(
        "get",
        "/admin/v1/tenants/{tenant}/upstream-key",
        "Upstream key metadata (set or not, dates, last 4 characters; never the key)",
        Auth::TenantAdmin,
        None,
        200,
    ),
    op(
        "delete",
        "/admin/v1/tenants/{tenant}/upstream-key",
        "Delete the tenant's own upstream key (calls use the platform key again)",
        Auth::TenantAdmin,
        None,
        204,
    ),
    op(
        "post",
        "/admin/v1/tenants/{tenant}/policy",
        "Put a tenant policy version",
        Auth::TenantAdmin,
        YAML,
        201,
    ),
    op(
        "put",
        "/admin/v1/tenants/{tenant}/policy",
        "Put a tenant policy version",
        Auth::TenantAdmin,
        YAML,
        201,
    ),
    op(
        "get",
        "/admin/v1/tenants/{tenant}/policy",
        "List tenant policy versions",
        Auth::TenantAdmin,
        None,
        200,
    ),
    op(
        "post",
        "/admin/v1/tenants/{tenant}/policy/dry-run",
        "Dry-run a candidate tenant policy",
        Auth::TenantAdmin,
        JSON,
        200,
    ),
    op(
        "get",
        "/admin/v1/tenants/{tenant}/policy/{hash}",
        "Get a tenant policy version",
        Auth::TenantAdmin,
        None,
        200,
    ),
    op(
        "post",
        "/admin/v1/tenants/{tenant}/policy/{hash}/activate",
        "Activate a tenant policy version",
        Auth::TenantAdmin,
        None,
        200,
    ),
    op(
        "post",
        "/admin/v1/platform/policy",
        "Put a platform policy version",
        Auth::Platform,
        YAML,
        201,
    ),
    op(
        "put",
        "/admin/v1/platform/policy",
        "Put a platform policy version",
        Auth::Platform,
        YAML,
        201,
    ),
    op(
        "get",
        "/admin/v1/platform/policy",
        "List platform policy versions",
        Auth::Platform,
        None,
        200,
    ),
    op(
        "post",
        "/admin/v1/platform/policy/dry-run",
        "Dry-run a candidate platform policy",
        Auth::Platform,
        JSON,
        200,
    ),
    op(
        "get",
        "/admin/v1/platform/policy/{hash}",
        "Get a platform policy version",
        Auth::Platform,
        None,
        200,
    ),
    op(
        "post",
        "/admin/v1/platform/policy/{hash}/activate",
        "Activate a platform policy version",
        Auth::Platform,
        None,
        200,
    ),
    op(
        "get",
        "/admin/v1/receipts",
        "List receipts of all tenants",
        Auth::Platform,
        None,
        200,
    ),
    op(
        "get",
        "/admin/v1/receipts/export",
        "Export receipts of all tenants as NDJSON",
        Auth::Platform,
        None,
        200,
    ),
    op(
        "get",
        "/v1/approvals",
        "List this tenant's approvals",
        Auth::Tenant("any"),
        None,
        200,
    ),
    op(
        "get",
        "/v1/approvals/{id}",
        "Get one of this tenant's approvals (optionally long-polled)",
        Auth::Tenant("any"),
        None,
        200,
    ),
    op(
        "post",
        "/v1/approvals/{id}/approve",
        "Approve a pending tool call",
        Auth::Tenant("approvals:decide"),
        JSON,
        200,
    ),
    op(
        "post",
        "/v1/approvals/{id}/deny",
        "Deny a pending tool call",
        Auth::Tenant("approvals:decide"),
        JSON,
        200,
    ),
    op(
        "get",
        "/v1/alerts",
        "List this tenant's alerts",
        Auth::Tenant("receipts:read"),
        None,
        200,
    ),
    op(
        "get",
        "/v1/alerts/webhook-secret",
        "This tenant's alert webhook signing secret",
        Auth::Tenant("admin"),
        None,
        200,
    ),
    op(
        "get",
        "/v1/alerts/{id}",
        "Get one of this tenant's alerts",
        Auth::Tenant("receipts:read"),
        None,
        200,
    ),
    op(
        "post",
        "/v1/alerts/{id}/ack",
        "Acknowledge an alert",
        Auth::Tenant("admin"),
        None,
        200,
    ),
    op(
        "get",
        "/metrics",
        "Prometheus / OpenMetrics exposition",
        Auth::MetricsToken,
        None,
        200,
    ),
    op("get", "/healthz", "Liveness", Auth::Public, None, 200),
    op(
        "get",
        "/readyz",
        "Readiness (store reachable, migrations applied, not draining)",
        Auth::Public,
        None,
        200,
    ),
    op(
        "get",
        "/openapi.json",
        "This document",
        Auth::Public,
        None,
        200,
    ),
];

fn error_ref() -> Value {
    json!({"$ref": "#/components/schemas/Error"})
}

fn operation(o: &Op) -> Value {
    let mut v = Map::new();
    v.insert("summary".into(), json!(o.summary));
    v.insert(
        "operationId".into(),
        json!(format!(
            "{}_{}",
            o.method,
            o.path
                .trim_start_matches('/')
                .replace(['/', '-', '.'], "_")
                .replace(['{', '}'], "")
        )),
    );
    let params: Vec<Value> = o
        .path
        .split('/')
        .filter_map(|seg| seg.strip_prefix('{').and_then(|s| s.strip_suffix('}')))
        .map(|name| json!({"name": name, "in": "path", "required": true, "schema": {"type": "string"}}))
        .collect();
    if !params.is_empty() {
        v.insert("parameters".into(), Value::Array(params));
    }
    if let Some(media) = o.body {
        let schema = if media == "application/json" {
            json!({"type": "object"})
        } else {
            json!({"type": "string"})
        };
        v.insert(
            "requestBody".into(),
            json!({"required": o.method != "post" || !o.path.ends_with("/rotate"),
                   "content": {media: {"schema": schema}}}),
        );
    }
    let mut responses = Map::new();
    let ok = if o.ok == 204 {
        json!({"description": "done"})
    } else {
        json!({"description": "success"})
    };
    responses.insert(o.ok.to_string(), ok);
    let err = |d: &str| json!({"description": d, "content": {"application/json": {"schema": error_ref()}}});
    match o.auth {
        Auth::Public => {}
        Auth::Tenant(scope) => {
            v.insert("security".into(), json!([{"apiKey": []}, {"bearer": []}]));
            v.insert("x-palisade-scope".into(), json!(scope));
            responses.insert("401".into(), err("missing or invalid credential"));
            responses.insert(
                "403".into(),
                err("missing scope, origin or network not allowed"),
            );
        }
        Auth::TenantAdmin => {
            v.insert(
                "security".into(),
                json!([{"adminToken": []}, {"bearer": []}]),
            );
            v.insert("x-palisade-scope".into(), json!("admin"));
            v.insert(
                "x-palisade-auth".into(),
                json!("platform admin token, or a tenant_admin / admin-scoped credential of this tenant"),
            );
            responses.insert("401".into(), err("missing or invalid credential"));
            responses.insert("403".into(), err("not an admin of this tenant"));
            responses.insert(
                "404".into(),
                err("no such tenant or object (also: another tenant's)"),
            );
        }
        Auth::Platform => {
            v.insert("security".into(), json!([{"adminToken": []}]));
            v.insert("x-palisade-auth".into(), json!("platform admin token"));
            responses.insert("401".into(), err("missing or invalid admin token"));
            responses.insert(
                "403".into(),
                err("control plane disabled or tenant credential"),
            );
        }
        Auth::MetricsToken => {
            v.insert("security".into(), json!([{"metricsToken": []}, {}]));
            v.insert(
                "x-palisade-auth".into(),
                json!("metrics token when configured"),
            );
            responses.insert(
                "401".into(),
                json!({"description": "invalid metrics token"}),
            );
        }
    }
    if !matches!(o.auth, Auth::Public | Auth::MetricsToken) {
        responses.insert("400".into(), err("invalid request"));
    }
    if o.path.contains('{') {
        responses
            .entry("404")
            .or_insert_with(|| err("no such object (another tenant's answers the same)"));
    }
    if o.body == YAML {
        // Policy uploads: an existing version is answered 200, a new one 201.
        responses.insert(
            "200".into(),
            json!({"description": "this version already exists"}),
        );
        responses.insert(
            "422".into(),
            err("the policy does not validate; `diagnostics` lists file, line, column and message"),
        );
    }
    v.insert("responses".into(), Value::Object(responses));
    Value::Object(v)
}

/// The whole document.
pub fn document() -> Value {
    let mut paths = Map::new();
    for o in OPS {
        let entry = paths
            .entry(o.path.to_string())
            .or_insert_with(|| Value::Object(Map::new()));
        if let Value::Object(m) = entry {
            m.insert(o.method.to_string(), operation(o));
        }
    }
    json!({
        "openapi": "3.0.3",
        "info": {
            "title": "Palisade",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "Multi-tenant guardrail gateway for the Anthropic Messages API. The tenant, user and role come only from a verified credential (a Palisade key `pal_…` or an identity provider's JWT); no header, path or query parameter selects or widens them."
        },
        "paths": paths,
        "components": {
            "securitySchemes": {
                "apiKey": {"type": "apiKey", "in": "header", "name": "x-api-key",
                           "description": "Palisade key (pal_<id>_<secret>)"},
                "bearer": {"type": "http", "scheme": "bearer",
                           "description": "Palisade key or a JWT from a trusted identity provider (RS256, ES256, EdDSA)"},
                "metricsToken": {"type": "http", "scheme": "bearer",
                                 "description": "Metrics scrape token (metrics.token)"},
                "adminToken": {"type": "http", "scheme": "bearer",
                               "description": "Platform admin token (PALISADE_ADMIN_TOKEN)"}
            },
            "schemas": {
                "Error": {
                    "type": "object",
                    "required": ["type", "error"],
                    "properties": {
                        "type": {"type": "string", "enum": ["error"]},
                        "error": {
                            "type": "object",
                            "required": ["type", "message"],
                            "properties": {
                                "type": {"type": "string"},
                                "message": {"type": "string"},
                                "palisade_reason": {"type": "string"}
                            }
                        }
                    }
                }
            }
        }
    })
}

/// `GET /openapi.json`.
pub async fn serve() -> axum::Json<Value> {
    axum::Json(document())
}
