//! Rows as the rest of Palisade sees them. Timestamps are unix milliseconds in memory and
//! RFC 3339 on the wire, so comparisons are cheap and output is readable.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Tenant {
    pub id: String,
    pub name: String,
    pub plan: String,
    pub attributes: Map<String, Value>,
    #[serde(with = "rfc3339_ms")]
    pub created_at: i64,
    #[serde(with = "rfc3339_ms")]
    pub updated_at: i64,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewTenant {
    pub id: Option<String>,
    pub name: String,
    #[serde(default = "default_plan")]
    pub plan: String,
    #[serde(default)]
    pub attributes: Map<String, Value>,
}

fn default_plan() -> String {
    "free".into()
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TenantPatch {
    pub name: Option<String>,
    pub plan: Option<String>,
    pub attributes: Option<Map<String, Value>>,
}

/// An API key row. The secret is never here: only its hash, which is not serialised.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ApiKey {
    pub id: String,
    pub tenant_id: String,
    pub name: Option<String>,
    pub role: String,
    pub user_id: Option<String>,
    pub scopes: Vec<String>,
    #[serde(skip)]
    pub secret_hash: String,
    #[serde(with = "rfc3339_ms")]
    pub created_at: i64,
    #[serde(with = "rfc3339_ms::option")]
    pub expires_at: Option<i64>,
    #[serde(with = "rfc3339_ms::option")]
    pub revoked_at: Option<i64>,
    #[serde(with = "rfc3339_ms::option")]
    pub rotated_at: Option<i64>,
    #[serde(with = "rfc3339_ms::option")]
    pub last_used_at: Option<i64>,
    /// Hash of the secret replaced by the last rotation, valid until `prev_valid_until`.
    #[serde(skip)]
    pub prev_secret_hash: Option<String>,
    /// End of the rotation grace period in which the previous secret still works.
    #[serde(with = "rfc3339_ms::option")]
    pub prev_valid_until: Option<i64>,
    /// Client networks (CIDR) the key may be used from; empty means any.
    pub allowed_networks: Vec<String>,
}

impl ApiKey {
    /// Usable now: not revoked and not expired.
    pub fn is_active(&self, now_ms: i64) -> bool {
        self.revoked_at.is_none() && self.expires_at.is_none_or(|e| e > now_ms)
    }
}

#[derive(Debug, Clone)]
pub struct NewApiKey {
    pub id: String,
    pub tenant_id: String,
    pub name: Option<String>,
    pub role: String,
    pub user_id: Option<String>,
    pub scopes: Vec<String>,
    pub secret_hash: String,
    pub expires_at: Option<i64>,
    /// Client networks (CIDR) the key may be used from; empty means any.
    pub allowed_networks: Vec<String>,
}

/// The scope of the platform policy (tenant ids cannot start with '@').
pub const PLATFORM_SCOPE: &str = "@platform";

/// One immutable policy version.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct PolicyVersion {
    pub scope: String,
    /// Hex SHA-256 of the source: the version's address.
    pub hash: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub source: String,
    #[serde(with = "rfc3339_ms")]
    pub created_at: i64,
    pub created_by: String,
    pub active: bool,
}

/// Receipt listing filter; `before_seq`/`before_ms` form the cursor (newest first).
#[derive(Debug, Clone, Default)]
pub struct ReceiptQuery {
    pub limit: u32,
    /// Cursor: (created_at ms, receipt id) of the last row of the previous page.
    pub before: Option<(i64, String)>,
    pub since_ms: Option<i64>,
    pub until_ms: Option<i64>,
    pub kind: Option<String>,
    pub decision: Option<String>,
    pub user_id: Option<String>,
    pub key_id: Option<String>,
    pub model: Option<String>,
}

/// Serde helpers: unix milliseconds <-> RFC 3339 with millisecond precision.
pub mod rfc3339_ms {
    use serde::Serializer;

    pub fn format(ms: i64) -> String {
        let nanos = i128::from(ms) * 1_000_000;
        match time::OffsetDateTime::from_unix_timestamp_nanos(nanos) {
            Ok(t) => {
                let fmt = time::macros::format_description!(
                    "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z"
                );
                t.format(&fmt).unwrap_or_else(|_| ms.to_string())
            }
            Err(_) => ms.to_string(),
        }
    }

    /// Parses RFC 3339 into unix milliseconds.
    pub fn parse(s: &str) -> Option<i64> {
        let t =
            time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339).ok()?;
        Some((t.unix_timestamp_nanos() / 1_000_000) as i64)
    }

    pub fn serialize<S: Serializer>(ms: &i64, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format(*ms))
    }

    pub mod option {
        use serde::Serializer;
        pub fn serialize<S: Serializer>(ms: &Option<i64>, s: S) -> Result<S::Ok, S::Error> {
            match ms {
                Some(ms) => s.serialize_str(&super::format(*ms)),
                None => s.serialize_none(),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_round_trip() {
        let ms = 1_795_000_000_123;
        let s = rfc3339_ms::format(ms);
        assert!(s.ends_with(".123Z"), "{s}");
        assert_eq!(rfc3339_ms::parse(&s), Some(ms));
        assert_eq!(rfc3339_ms::parse("not a time"), None);
    }

    #[test]
    fn key_activity() {
        let mut k = ApiKey {
            id: "k".into(),
            tenant_id: "t".into(),
            name: None,
            role: "member".into(),
            user_id: None,
            scopes: vec![],
            secret_hash: String::new(),
            created_at: 0,
            expires_at: Some(100),
            revoked_at: None,
            rotated_at: None,
            last_used_at: None,
            prev_secret_hash: None,
            prev_valid_until: None,
            allowed_networks: vec![],
        };
        assert!(k.is_active(99));
        assert!(!k.is_active(100));
        k.expires_at = None;
        assert!(k.is_active(i64::MAX));
        k.revoked_at = Some(1);
        assert!(!k.is_active(0));
    }
}
