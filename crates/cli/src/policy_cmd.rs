//! `palisade policy check|test|explain|matrix`. The logic lives in `palisade-policy`; this
//! module only reads files and prints.

use anyhow::Context as _;
use palisade_policy::{
    AttrAxis, CompiledPolicy, Diagnostic, EvalContext, TableFormat, apply_attr_spec,
    compute_matrix, explain, parse, parse_cases, run_cases,
};
use std::path::{Path, PathBuf};

#[derive(Debug, clap::Subcommand)]
pub enum PolicyCmd {
    /// Validate policy files: errors and warnings with file:line:col (exit 1 on errors).
    Check {
        /// Policy files to check.
        #[arg(required = true)]
        files: Vec<PathBuf>,
        /// Also reject settings only the platform policy may carry (`default`, floors).
        #[arg(long)]
        tenant: bool,
        /// Print diagnostics as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Run case files against a platform and/or tenant policy (exit 1 on any mismatch).
    Test {
        #[arg(long)]
        platform: Option<PathBuf>,
        #[arg(long)]
        tenant: Option<PathBuf>,
        /// Case files (YAML).
        #[arg(required = true)]
        cases: Vec<PathBuf>,
    },
    /// Decide one call and print the full trace.
    Explain {
        #[arg(long)]
        platform: Option<PathBuf>,
        #[arg(long)]
        tenant: Option<PathBuf>,
        /// Tool name.
        #[arg(long)]
        tool: String,
        /// Arguments as a JSON object.
        #[arg(long, default_value = "{}")]
        args: String,
        /// Context attribute, e.g. `plan=pro`, `role=admin`, `tenant.attributes.domain=acme.com`.
        #[arg(long = "attr", value_name = "KEY=VALUE")]
        attrs: Vec<String>,
        /// Print the decision as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Print the verdict for every tool under every attribute combination.
    Matrix {
        #[arg(long)]
        platform: Option<PathBuf>,
        #[arg(long)]
        tenant: Option<PathBuf>,
        /// Comma-separated tool names.
        #[arg(long, value_delimiter = ',', required = true)]
        tools: Vec<String>,
        /// An axis, e.g. `plan=free,pro,enterprise` (repeatable).
        #[arg(long = "attr", value_name = "KEY=V1,V2")]
        attrs: Vec<String>,
        #[arg(long, value_enum, default_value_t = MatrixFormat::Text)]
        format: MatrixFormat,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum MatrixFormat {
    Text,
    Markdown,
    Csv,
}

impl From<MatrixFormat> for TableFormat {
    fn from(f: MatrixFormat) -> Self {
        match f {
            MatrixFormat::Text => TableFormat::Text,
            MatrixFormat::Markdown => TableFormat::Markdown,
            MatrixFormat::Csv => TableFormat::Csv,
        }
    }
}

/// Runs a policy subcommand; returns the process exit code.
pub fn run(cmd: PolicyCmd) -> anyhow::Result<i32> {
    match cmd {
        PolicyCmd::Check {
            files,
            tenant,
            json,
        } => check(&files, tenant, json),
        PolicyCmd::Test {
            platform,
            tenant,
            cases,
        } => test(platform.as_deref(), tenant.as_deref(), &cases),
        PolicyCmd::Explain {
            platform,
            tenant,
            tool,
            args,
            attrs,
            json,
        } => explain_cmd(
            platform.as_deref(),
            tenant.as_deref(),
            tool,
            &args,
            &attrs,
            json,
        ),
        PolicyCmd::Matrix {
            platform,
            tenant,
            tools,
            attrs,
            format,
        } => matrix(
            platform.as_deref(),
            tenant.as_deref(),
            &tools,
            &attrs,
            format,
        ),
    }
}

fn read(path: &Path) -> anyhow::Result<String> {
    std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))
}

fn print_diags(diags: &[Diagnostic]) {
    for d in diags {
        eprintln!("{d}");
    }
}

/// Loads, validates and compiles a policy, printing warnings; `None` after printing errors.
fn load(path: &Path, as_tenant: bool) -> anyhow::Result<Option<CompiledPolicy>> {
    let src = read(path)?;
    let name = path.display().to_string();
    let parsed = match parse(&src, &name) {
        Ok(p) => p,
        Err(e) => {
            print_diags(&e);
            return Ok(None);
        }
    };
    print_diags(&parsed.warnings);
    if as_tenant {
        let errs = parsed.tenant_errors();
        if !errs.is_empty() {
            print_diags(&errs);
            return Ok(None);
        }
    }
    match palisade_policy::compile(&parsed) {
        Ok(p) => Ok(Some(p)),
        Err(e) => {
            print_diags(&e);
            Ok(None)
        }
    }
}

/// The platform and tenant policies, either optional.
type Layers = (Option<CompiledPolicy>, Option<CompiledPolicy>);

/// Loads the optional platform and tenant policies; `Err(code)` when one is invalid.
fn load_layers(
    platform: Option<&Path>,
    tenant: Option<&Path>,
) -> anyhow::Result<Result<Layers, i32>> {
    let p = match platform {
        Some(path) => match load(path, false)? {
            Some(p) => Some(p),
            None => return Ok(Err(1)),
        },
        None => None,
    };
    let t = match tenant {
        Some(path) => match load(path, true)? {
            Some(t) => Some(t),
            None => return Ok(Err(1)),
        },
        None => None,
    };
    Ok(Ok((p, t)))
}

fn check(files: &[PathBuf], as_tenant: bool, json: bool) -> anyhow::Result<i32> {
    let mut all = Vec::new();
    for path in files {
        let src = read(path)?;
        let name = path.display().to_string();
        match parse(&src, &name) {
            Ok(parsed) => {
                all.extend(parsed.warnings.iter().cloned());
                if as_tenant {
                    all.extend(parsed.tenant_errors());
                }
                if let Err(e) = palisade_policy::compile(&parsed) {
                    all.extend(e);
                }
            }
            Err(e) => all.extend(e),
        }
    }
    let errors = all.iter().filter(|d| d.is_error()).count();
    if json {
        println!("{}", serde_json::to_string_pretty(&all)?);
    } else {
        print_diags(&all);
        let warnings = all.len() - errors;
        if errors == 0 {
            println!("{} file(s) ok ({warnings} warning(s))", files.len());
        } else {
            eprintln!("{errors} error(s), {warnings} warning(s)");
        }
    }
    Ok(i32::from(errors > 0))
}

fn test(platform: Option<&Path>, tenant: Option<&Path>, cases: &[PathBuf]) -> anyhow::Result<i32> {
    let (p, t) = match load_layers(platform, tenant)? {
        Ok(layers) => layers,
        Err(code) => return Ok(code),
    };
    let mut failed = 0usize;
    let mut total = 0usize;
    for path in cases {
        let src = read(path)?;
        let file = match parse_cases(&src, &path.display().to_string()) {
            Ok(f) => f,
            Err(e) => {
                print_diags(&e);
                failed += 1;
                continue;
            }
        };
        let report = run_cases(p.as_ref(), t.as_ref(), &file);
        println!("{}", path.display());
        print!("{}", report.render(TableFormat::Text));
        println!();
        failed += report.failed();
        total += report.results.len();
    }
    println!(
        "{} case(s), {} passed, {failed} failed",
        total,
        total.saturating_sub(failed)
    );
    Ok(i32::from(failed > 0))
}

fn explain_cmd(
    platform: Option<&Path>,
    tenant: Option<&Path>,
    tool: String,
    args: &str,
    attrs: &[String],
    json: bool,
) -> anyhow::Result<i32> {
    let (p, t) = match load_layers(platform, tenant)? {
        Ok(layers) => layers,
        Err(code) => return Ok(code),
    };
    let args: serde_json::Value = serde_json::from_str(args).context("--args must be JSON")?;
    let mut ctx = EvalContext::new(tool, args);
    for a in attrs {
        apply_attr_spec(&mut ctx, a).map_err(anyhow::Error::msg)?;
    }
    let d = explain(p.as_ref(), t.as_ref(), &ctx);
    if json {
        println!("{}", serde_json::to_string_pretty(&d)?);
        return Ok(0);
    }
    println!(
        "verdict: {}\nlayer:   {}\nrule:    {}\nreason:  {}\n\ntrace:",
        d.verdict,
        d.layer.map_or("-", |l| l.as_str()),
        d.rule_id.as_deref().unwrap_or("-"),
        d.reason.as_deref().unwrap_or("-"),
    );
    for s in &d.trace {
        let rule = s.rule_id.as_deref().unwrap_or("-");
        let prio = s
            .priority
            .map(|p| format!(" (priority {p})"))
            .unwrap_or_default();
        let action = s.action.map(|a| format!(" [{a}]")).unwrap_or_default();
        let outcome = serde_json::to_value(s.outcome)?;
        println!(
            "  {:<8} {rule}{prio}{action}: {}{}",
            s.layer.as_str(),
            outcome.as_str().unwrap_or_default(),
            s.detail
                .as_deref()
                .map(|d| format!(" — {d}"))
                .unwrap_or_default()
        );
    }
    Ok(0)
}

fn matrix(
    platform: Option<&Path>,
    tenant: Option<&Path>,
    tools: &[String],
    attrs: &[String],
    format: MatrixFormat,
) -> anyhow::Result<i32> {
    let (p, t) = match load_layers(platform, tenant)? {
        Ok(layers) => layers,
        Err(code) => return Ok(code),
    };
    let axes = attrs
        .iter()
        .map(|a| AttrAxis::parse(a))
        .collect::<Result<Vec<_>, _>>()
        .map_err(anyhow::Error::msg)?;
    let m = compute_matrix(
        p.as_ref(),
        t.as_ref(),
        tools,
        &axes,
        &EvalContext::default(),
    )
    .map_err(anyhow::Error::msg)?;
    print!("{}", m.render(format.into()));
    Ok(0)
}
