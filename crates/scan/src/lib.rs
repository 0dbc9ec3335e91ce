//! Palisade content scanning: PII, secret, keyword, custom-pattern and prompt-injection
//! detection in one pass, plus the pure rewriting steps (redact, pseudonymize, restore)
//! and a streaming hold-back redactor.
//!
//! The crate does no I/O: the server feeds it text and gets findings and rewritten text.
//!
//! Design in short:
//! - one pass over the text collects candidate positions: an Aho-Corasick automaton over
//!   literal anchors (`AKIA`, `ghp_`, `://`, `password`, injection trigger words, …), a
//!   block-wise digit/`@` finder, and — only when the text needs it — a normalised copy
//!   (NFKD compatibility folding, zero-width removal, homoglyph folding, spaced-letter
//!   collapse) for keywords and injection phrases;
//! - every candidate goes to a validator (Luhn, mod-97, SSN rules, country tables, entropy,
//!   …) that looks at a bounded neighbourhood only, which is what makes streaming exact;
//! - [`apply`] turns findings plus per-detector actions into rewritten text.
#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used, clippy::panic))]

mod apply;
mod detect;
mod normalize;
mod scanner;
mod stream;

use std::borrow::Cow;
use std::fmt;
use std::ops::Range;

use serde::{Deserialize, Serialize};

pub use apply::{Action, Applied, Outcome, Pseudonymizer, SummaryEntry, apply};
pub use normalize::{Normalized, normalize};
pub use scanner::{
    CustomPattern, DEFAULT_DETECTORS, KeywordList, ScanError, Scanner, ScannerConfig,
};
pub use stream::{StreamRedactor, StreamRestorer};

/// Kind of secret behind an [`Entity::Secret`] finding.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SecretKind {
    AwsAccessKey,
    AwsSecretKey,
    Github,
    Gitlab,
    Slack,
    SlackWebhook,
    Stripe,
    GoogleApiKey,
    Openai,
    Anthropic,
    Jwt,
    PrivateKey,
    ConnectionString,
    Generic,
}

impl SecretKind {
    /// Detector id suffix (`secret.<id>`).
    pub fn id(self) -> &'static str {
        match self {
            SecretKind::AwsAccessKey => "aws_access_key",
            SecretKind::AwsSecretKey => "aws_secret_key",
            SecretKind::Github => "github",
            SecretKind::Gitlab => "gitlab",
            SecretKind::Slack => "slack",
            SecretKind::SlackWebhook => "slack_webhook",
            SecretKind::Stripe => "stripe",
            SecretKind::GoogleApiKey => "google_api_key",
            SecretKind::Openai => "openai",
            SecretKind::Anthropic => "anthropic",
            SecretKind::Jwt => "jwt",
            SecretKind::PrivateKey => "private_key",
            SecretKind::ConnectionString => "connection_string",
            SecretKind::Generic => "generic",
        }
    }

    /// Full detector id, e.g. `secret.aws_access_key`.
    pub fn detector(self) -> &'static str {
        match self {
            SecretKind::AwsAccessKey => "secret.aws_access_key",
            SecretKind::AwsSecretKey => "secret.aws_secret_key",
            SecretKind::Github => "secret.github",
            SecretKind::Gitlab => "secret.gitlab",
            SecretKind::Slack => "secret.slack",
            SecretKind::SlackWebhook => "secret.slack_webhook",
            SecretKind::Stripe => "secret.stripe",
            SecretKind::GoogleApiKey => "secret.google_api_key",
            SecretKind::Openai => "secret.openai",
            SecretKind::Anthropic => "secret.anthropic",
            SecretKind::Jwt => "secret.jwt",
            SecretKind::PrivateKey => "secret.private_key",
            SecretKind::ConnectionString => "secret.connection_string",
            SecretKind::Generic => "secret.generic",
        }
    }
}

/// What a finding is. Displays and serialises as UPPER_SNAKE (`EMAIL`, `SECRET`, …); the
/// secret kind is carried by the finding's detector id, not by the serialised name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Entity {
    Email,
    Phone,
    UsSsn,
    CreditCard,
    Iban,
    IpAddress,
    Url,
    Secret(SecretKind),
    Keyword,
    Custom,
    Injection,
}

impl Entity {
    /// UPPER_SNAKE name used in receipts, placeholders and serde.
    pub fn name(self) -> &'static str {
        match self {
            Entity::Email => "EMAIL",
            Entity::Phone => "PHONE",
            Entity::UsSsn => "US_SSN",
            Entity::CreditCard => "CREDIT_CARD",
            Entity::Iban => "IBAN",
            Entity::IpAddress => "IP_ADDRESS",
            Entity::Url => "URL",
            Entity::Secret(_) => "SECRET",
            Entity::Keyword => "KEYWORD",
            Entity::Custom => "CUSTOM",
            Entity::Injection => "INJECTION",
        }
    }

    /// Parse an UPPER_SNAKE name (secrets come back as [`SecretKind::Generic`]).
    pub fn from_name(s: &str) -> Option<Entity> {
        Some(match s {
            "EMAIL" => Entity::Email,
            "PHONE" => Entity::Phone,
            "US_SSN" => Entity::UsSsn,
            "CREDIT_CARD" => Entity::CreditCard,
            "IBAN" => Entity::Iban,
            "IP_ADDRESS" => Entity::IpAddress,
            "URL" => Entity::Url,
            "SECRET" => Entity::Secret(SecretKind::Generic),
            "KEYWORD" => Entity::Keyword,
            "CUSTOM" => Entity::Custom,
            "INJECTION" => Entity::Injection,
            _ => return None,
        })
    }

    /// Whether this is a secret of any kind.
    pub fn is_secret(self) -> bool {
        matches!(self, Entity::Secret(_))
    }
}

impl fmt::Display for Entity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl Serialize for Entity {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.name())
    }
}

impl<'de> Deserialize<'de> for Entity {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = Cow::<'de, str>::deserialize(d)?;
        Entity::from_name(&s)
            .ok_or_else(|| serde::de::Error::custom(format!("unknown entity {s:?}")))
    }
}

/// One detection. Spans are byte offsets into the original (not normalised) text and
/// always fall on UTF-8 character boundaries.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Finding {
    pub entity: Entity,
    /// Detector id, e.g. `email`, `secret.aws_access_key`, `keyword:<list>`, `custom:<id>`.
    pub detector: Cow<'static, str>,
    pub span: Range<usize>,
    pub confidence: f32,
    /// Placeholder label: the entity name, or the tenant's entity name for custom patterns.
    pub label: Cow<'static, str>,
}

impl Finding {
    /// The detector id a policy's content rule names: `email`, `phone`, `us_ssn`,
    /// `credit_card`, `iban`, `ip_address`, `url`, `secrets`, `keywords`, `custom:<id>`,
    /// `injection`.
    pub fn group(&self) -> &str {
        match self.entity {
            Entity::Email => "email",
            Entity::Phone => "phone",
            Entity::UsSsn => "us_ssn",
            Entity::CreditCard => "credit_card",
            Entity::Iban => "iban",
            Entity::IpAddress => "ip_address",
            Entity::Url => "url",
            Entity::Secret(_) => "secrets",
            Entity::Keyword => "keywords",
            Entity::Custom => &self.detector,
            Entity::Injection => "injection",
        }
    }

    /// The matched text (convenience; never store it in receipts).
    pub fn value<'t>(&self, text: &'t str) -> &'t str {
        text.get(self.span.clone()).unwrap_or("")
    }

    pub(crate) fn builtin(
        entity: Entity,
        detector: &'static str,
        span: Range<usize>,
        confidence: f32,
    ) -> Finding {
        Finding {
            entity,
            detector: Cow::Borrowed(detector),
            span,
            confidence,
            label: Cow::Borrowed(entity.name()),
        }
    }
}

/// Result of [`Scanner::scan`].
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ScanResult {
    /// Sorted by span start, then longest first. Findings of different detectors may
    /// overlap (e.g. an email inside a URL); [`apply`] resolves that.
    pub findings: Vec<Finding>,
    /// Combined prompt-injection score, 0..1.
    pub injection_score: f32,
    /// Whether `injection_score` reached the configured threshold (an INJECTION finding
    /// is then present).
    pub injection_detected: bool,
}
