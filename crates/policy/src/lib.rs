//! Palisade's policy engine: the YAML policy format, validation with file:line:col,
//! compilation into an indexed form, layered (platform + tenant) evaluation with traces,
//! content-rule merging with platform floors, and the pure logic behind
//! `palisade policy check|test|explain|matrix`.
//!
//! Pure: no I/O, clocks, environment or randomness. See `POLICY.md` for the format.
#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used, clippy::panic))]

mod compile;
mod content;
mod diag;
mod eval;
mod glob;
mod limits;
mod model;
mod moderation;
mod parse;
mod regex_util;
mod yaml;

pub use compile::{CompiledPolicy, Policy, build_schema, compile};
pub use content::{
    ContentAction, ContentRules, CustomDetector, Direction, Floors, KNOWN_DETECTORS, KeywordList,
    valid_detector_id,
};
pub use diag::{Diagnostic, Pos, Severity};
pub use eval::{Decision, EvalContext, Outcome, TraceStep, evaluate, explain, may_ever_run};
pub use glob::{Glob, GlobError};
pub use limits::{LimitRule, LimitScope, LimitUnit, LimitWindow, MAX_LIMITS, MICRO_USD};
pub use model::{
    Condition, FieldPath, Layer, Leaf, Op, ParsedPolicy, Root, Rule, TemplatePart, ToolSchema,
    ValueExpr, Verdict,
};
pub use moderation::{
    CUTOFF_HIGH, CUTOFF_LOW, CUTOFF_MEDIUM, Category as ModerationCategory, Deciding,
    EffectiveModeration, Evaluation, FailurePolicy, LayerThresholds, MAX_POLICY_TEXT,
    ModerationDirection, ModerationRules, Provider as ModerationProvider, Scores, StreamMode,
    Threshold, Thresholds, VerdictError, effective_moderation, evaluate as evaluate_moderation,
    parse_verdict, verdict_from_value,
};
pub use parse::{MAX_RULES, parse};
pub use yaml::{MAX_ALIASES, MAX_DEPTH, MAX_SOURCE_BYTES};

/// The content rules in force for a tenant: the tenant's settings over the platform's, with
/// the platform's floors applied (see [`ContentRules::merge`]). A tenant policy's own
/// `floors` are ignored.
pub fn effective_content(
    platform: Option<&CompiledPolicy>,
    tenant: Option<&CompiledPolicy>,
) -> ContentRules {
    let tenant_rules = tenant.map(|t| {
        let mut c = t.content().clone();
        c.floors = Floors::default();
        c
    });
    ContentRules::merge(platform.map(CompiledPolicy::content), tenant_rules.as_ref())
}

mod attrs;
mod cases;
mod matrix;
mod table;

pub use attrs::{apply_attr_spec, attr_path, attr_value, set_attr};
pub use cases::{Case, CaseFile, CaseReport, CaseResult, ExpectedRule, parse_cases, run_cases};
pub use matrix::{AttrAxis, MAX_MATRIX_COLUMNS, Matrix, compute_matrix};
pub use table::{TableFormat, render_table};
