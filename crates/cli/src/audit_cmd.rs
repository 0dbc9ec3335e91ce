//! `palisade audit …`: verify chains (in the store or in an export file), export them as
//! NDJSON, sign checkpoints now, run the retention purge once, print the public key.
//!
//! Exit codes: 0 verified / done, 1 a problem was found (or nothing to work on), 2 the
//! command could not run (bad arguments, unreadable file, store unavailable).

use anyhow::{Context, Result, bail};
use clap::Subcommand;
use palisade_audit::{Problem, VerifyReport};
use palisade_server::checkpoints::{load_signer, parse_public_key, public_key_json};
use palisade_server::config::Config;
use palisade_server::export::Window;
use palisade_store::DynStore;
use std::io::{BufRead, Write};

#[derive(Subcommand)]
pub enum AuditCmd {
    /// Verify receipt chains, checkpoints and anchors: in the store, or in an export file.
    Verify {
        /// Only this tenant.
        #[arg(long)]
        tenant: Option<String>,
        /// Verify this NDJSON export instead of the store.
        #[arg(long)]
        file: Option<String>,
        /// Ed25519 public key checking checkpoint signatures: 64 hex characters, base64,
        /// or a file (hex, base64, PEM, raw 32 bytes, or the /v1/audit/public-key JSON).
        /// Repeatable (key rotation). On the store, the configured key is the default.
        #[arg(long = "public-key")]
        public_keys: Vec<String>,
        /// Print the full reports as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Export receipts, checkpoints and anchors as NDJSON (stdout or --output).
    Export {
        #[arg(long)]
        tenant: Option<String>,
        /// RFC 3339; receipts created at or after it.
        #[arg(long)]
        since: Option<String>,
        /// RFC 3339; receipts created before it.
        #[arg(long)]
        until: Option<String>,
        #[arg(long, short)]
        output: Option<String>,
    },
    /// Sign every chain head that advanced since its last checkpoint, now.
    Checkpoint,
    /// Run the retention purge once (tenant attribute `retention_days`).
    Purge {
        #[arg(long)]
        tenant: Option<String>,
        /// Only report what would be deleted.
        #[arg(long)]
        dry_run: bool,
        /// Pretend it is this time (RFC 3339); for tests and rehearsals.
        #[arg(long, hide = true)]
        now: Option<String>,
    },
    /// Print the checkpoint public key and its key id (JSON).
    PublicKey,
    /// Append the receipts of the spill file (receipts whose commit failed while the
    /// store was down) to their tenants' chains. Safe to repeat and to run while the
    /// gateway serves: the file is first renamed aside, and receipts already in the
    /// store are skipped.
    ReplaySpill {
        /// Spill file (default: `receipts.spill_file`, or the one beside the database).
        #[arg(long)]
        file: Option<String>,
        /// Only report what would be appended.
        #[arg(long)]
        dry_run: bool,
    },
}

pub async fn run(cfg: &Config, cmd: AuditCmd) -> Result<u8> {
    match cmd {
        AuditCmd::Verify {
            tenant,
            file: Some(file),
            public_keys,
            json,
        } => {
            let keys = parse_keys(&public_keys)?;
            verify_file(&file, tenant.as_deref(), &keys, json)
        }
        AuditCmd::Verify {
            tenant,
            file: None,
            public_keys,
            json,
        } => {
            let mut keys = parse_keys(&public_keys)?;
            if keys.is_empty() {
                keys.extend(configured_public_key(cfg)?);
            }
            let store = crate::open_store(cfg).await?;
            audit_verify_with(&store, tenant.as_deref(), &keys, json).await
        }
        AuditCmd::Export {
            tenant,
            since,
            until,
            output,
        } => {
            let window = Window::parse(since.as_deref(), until.as_deref())
                .map_err(|e| anyhow::anyhow!("--{e}"))?;
            let store = crate::open_store(cfg).await?;
            export(&store, tenant, window, output.as_deref()).await
        }
        AuditCmd::Checkpoint => {
            let Some(signer) = load_signer(cfg, true).map_err(anyhow::Error::msg)? else {
                bail!("no checkpoint key is configured (audit.checkpoint_key)");
            };
            let store = crate::open_store(cfg).await?;
            let n = palisade_server::checkpoints::checkpoint_once(
                &store,
                &signer,
                palisade_store::now_ms(),
            )
            .await?;
            println!("signed {n} checkpoint(s) with key {}", signer.key_id());
            Ok(0)
        }
        AuditCmd::Purge {
            tenant,
            dry_run,
            now,
        } => {
            let now = match now {
                Some(s) => palisade_store::rfc3339_ms::parse(&s)
                    .with_context(|| format!("--now {s:?} must be an RFC 3339 timestamp"))?,
                None => palisade_store::now_ms(),
            };
            let signer = load_signer(cfg, true).map_err(anyhow::Error::msg)?;
            let store = crate::open_store(cfg).await?;
            let outcomes = palisade_server::retention::purge(
                &store,
                signer.as_deref(),
                cfg.audit.default_retention_days,
                tenant.as_deref(),
                now,
                dry_run,
            )
            .await?;
            if outcomes.is_empty() {
                println!("nothing expired");
            }
            for o in &outcomes {
                println!(
                    "{}: {} {} receipt(s) older than {} day(s); chain now starts after seq {}{}",
                    o.tenant_id,
                    if dry_run { "would delete" } else { "deleted" },
                    o.deleted,
                    o.retention_days,
                    o.anchor_seq.unwrap_or(0),
                    if o.checkpointed {
                        " (anchor checkpointed)"
                    } else {
                        ""
                    },
                );
            }
            Ok(0)
        }
        AuditCmd::ReplaySpill { file, dry_run } => {
            let path = file.unwrap_or_else(|| cfg.receipts.spill_path(&cfg.storage.url));
            let store = crate::open_store(cfg).await?;
            replay_spill(&store, std::path::Path::new(&path), dry_run).await
        }
        AuditCmd::PublicKey => {
            let Some(signer) = load_signer(cfg, false).map_err(anyhow::Error::msg)? else {
                bail!(
                    "no checkpoint key yet: set audit.checkpoint_key, or start the gateway once to create one beside the database"
                );
            };
            println!(
                "{}",
                serde_json::to_string_pretty(&public_key_json(&signer.public_key()))?
            );
            Ok(0)
        }
    }
}

/// Receipts appended per store transaction when replaying a spill file.
const REPLAY_BATCH: usize = 256;

/// Replays a spill file into the store. The file is renamed to `<file>.replaying` first
/// (a running gateway then spills into a fresh file), every line is parsed before
/// anything is written (a bad line stops the replay with its line number and nothing is
/// appended), receipts whose id is already stored are skipped, and the renamed file is
/// removed only once every receipt is in the store. A replay that fails part-way leaves
/// `<file>.replaying`, which the next run picks up first.
async fn replay_spill(store: &DynStore, path: &std::path::Path, dry_run: bool) -> Result<u8> {
    let mut aside = path.as_os_str().to_owned();
    aside.push(".replaying");
    let aside = std::path::PathBuf::from(aside);
    if !aside.exists() {
        if !path.exists() {
            println!("no spill file at {}: nothing to replay", path.display());
            return Ok(0);
        }
        if dry_run {
            return replay_file(store, path, true).await;
        }
        std::fs::rename(path, &aside)
            .with_context(|| format!("moving {} aside for replay", path.display()))?;
    } else if path.exists() {
        println!(
            "{} is left from an interrupted replay; replaying it first (run again for {})",
            aside.display(),
            path.display()
        );
    }
    let code = replay_file(store, &aside, dry_run).await?;
    if !dry_run && code == 0 {
        std::fs::remove_file(&aside)
            .with_context(|| format!("removing replayed {}", aside.display()))?;
    }
    Ok(code)
}

async fn replay_file(store: &DynStore, path: &std::path::Path, dry_run: bool) -> Result<u8> {
    let f = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mut receipts = Vec::new();
    for (n, line) in std::io::BufReader::new(f).lines().enumerate() {
        let line = line.with_context(|| format!("{}:{}", path.display(), n + 1))?;
        if line.trim().is_empty() {
            continue;
        }
        let r: palisade_audit::Receipt = serde_json::from_str(&line).map_err(|e| {
            anyhow::anyhow!(
                "{}:{}:{}: not a receipt: {e}; nothing was appended",
                path.display(),
                n + 1,
                e.column()
            )
        })?;
        receipts.push(r);
    }
    let total = receipts.len();
    let mut fresh = Vec::with_capacity(total);
    let mut seen = std::collections::HashSet::new();
    for r in receipts {
        if seen.insert((r.tenant_id.clone(), r.id.clone()))
            && store.get_receipt(&r.tenant_id, &r.id).await?.is_none()
        {
            fresh.push(r);
        }
    }
    let skipped = total - fresh.len();
    if dry_run {
        println!(
            "{}: {} receipt(s), would append {}, {} already stored or repeated",
            path.display(),
            total,
            fresh.len(),
            skipped
        );
        return Ok(0);
    }
    let mut appended = 0;
    while !fresh.is_empty() {
        let rest = fresh.split_off(fresh.len().min(REPLAY_BATCH));
        let batch = std::mem::replace(&mut fresh, rest);
        let n = batch.len();
        store.append_receipts(batch).await.with_context(|| {
            format!("appending after {appended} receipt(s); run again to resume")
        })?;
        appended += n;
    }
    println!(
        "{}: appended {appended} receipt(s) to their chains, {skipped} already stored or repeated",
        path.display()
    );
    Ok(0)
}

/// `--public-key` values: the key itself, or a file holding it.
fn parse_keys(args: &[String]) -> Result<Vec<Vec<u8>>> {
    args.iter()
        .map(|a| {
            let path = std::path::Path::new(a);
            if path.is_file() {
                let bytes =
                    std::fs::read(path).with_context(|| format!("--public-key file {a}"))?;
                parse_public_key(&bytes).map_err(|e| anyhow::anyhow!("--public-key file {a}: {e}"))
            } else {
                parse_public_key(a.as_bytes()).map_err(|e| {
                    anyhow::anyhow!("--public-key {a:?} is neither a key nor a readable file: {e}")
                })
            }
        })
        .collect()
}

/// The configured checkpoint key's public half, if one exists (never creates one).
fn configured_public_key(cfg: &Config) -> Result<Option<Vec<u8>>> {
    match load_signer(cfg, false) {
        Ok(s) => Ok(s.map(|s| s.public_key())),
        Err(e) if cfg.audit.checkpoint_key.is_some() || cfg.audit.checkpoint_key_file.is_some() => {
            bail!(e)
        }
        Err(_) => Ok(None),
    }
}

fn describe(p: &Problem) -> String {
    let kind = serde_json::to_value(p.kind)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_else(|| format!("{:?}", p.kind));
    let mut at = Vec::new();
    if let Some(l) = p.position {
        at.push(format!("line {l}"));
    }
    if let Some(s) = p.seq {
        at.push(format!("seq {s}"));
    }
    if let Some(id) = &p.receipt_id {
        at.push(format!("receipt {id}"));
    }
    let at = if at.is_empty() {
        String::new()
    } else {
        format!(" at {}", at.join(", "))
    };
    format!("{kind}{at}: {}", p.detail)
}

/// Prints one tenant's report; `lines` says whether positions are file lines.
fn print_report(r: &VerifyReport, lines: bool) {
    let range = match (r.first_seq, r.last_seq) {
        (Some(a), Some(b)) => format!(", seq {a}..={b}"),
        _ => String::new(),
    };
    let anchor = r
        .anchor_seq
        .map(|a| format!(", starts after anchor at seq {a}"))
        .unwrap_or_default();
    let cps = if r.checkpoints_verified > 0 {
        format!(", {} checkpoint(s) verified", r.checkpoints_verified)
    } else {
        String::new()
    };
    let unsigned = if r.checkpoint_signatures_checked {
        ""
    } else {
        " (checkpoint signatures NOT checked: no public key)"
    };
    if r.ok {
        println!(
            "{}: ok ({} receipts{range}{anchor}{cps}){unsigned}",
            r.tenant_id, r.receipts
        );
    } else {
        println!(
            "{}: FAILED, {} problem(s) ({} receipts{range}{anchor}){unsigned}",
            r.tenant_id,
            r.problems.len(),
            r.receipts
        );
        for p in &r.problems {
            let mut p = p.clone();
            if !lines {
                // A store has no lines: the position is only the read order.
                p.position = None;
            }
            println!("  {}", describe(&p));
        }
    }
}

/// Verifies each tenant's chain in the store (without checkpoint signatures); the demo
/// uses this.
pub async fn audit_verify(store: &DynStore, tenant: Option<&str>) -> Result<u8> {
    audit_verify_with(store, tenant, &[], false).await
}

/// Verifies chains, anchors and checkpoints in the store.
pub async fn audit_verify_with(
    store: &DynStore,
    tenant: Option<&str>,
    public_keys: &[Vec<u8>],
    json: bool,
) -> Result<u8> {
    if let Some(t) = tenant
        && store.chain_head(t).await?.is_none()
    {
        eprintln!("tenant {t} has no receipts in the store");
        return Ok(1);
    }
    let reports = palisade_server::verify::verify_store(store, tenant, public_keys).await?;
    let ok = reports.iter().all(|r| r.ok);
    if json {
        println!("{}", serde_json::to_string_pretty(&reports)?);
    } else {
        for r in &reports {
            print_report(r, false);
        }
    }
    Ok(if ok { 0 } else { 1 })
}

fn verify_file(path: &str, tenant: Option<&str>, keys: &[Vec<u8>], json: bool) -> Result<u8> {
    let file = std::fs::File::open(path).with_context(|| format!("--file {path}"))?;
    let reader = std::io::BufReader::new(file);
    let mut read_error = None;
    let lines = reader.lines().map_while(|l| match l {
        Ok(l) => Some(l),
        Err(e) => {
            read_error = Some(e);
            None
        }
    });
    let key_refs: Vec<&[u8]> = keys.iter().map(Vec::as_slice).collect();
    let mut report = palisade_audit::verify_export(lines, &key_refs);
    if let Some(e) = read_error {
        bail!(
            "--file {path}: read failed after {} line(s): {e}",
            report.lines
        );
    }
    if let Some(t) = tenant {
        report.tenants.retain(|r| r.tenant_id == t);
        if report.tenants.is_empty() {
            eprintln!("{path}: no receipts of tenant {t}");
            return Ok(1);
        }
        report.ok = report.problems.is_empty() && report.tenants.iter().all(|r| r.ok);
    }
    if report.lines == 0 {
        eprintln!("{path}: empty export (no lines)");
        return Ok(1);
    }
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        for p in &report.problems {
            println!("{path}: {}", describe(p));
        }
        for r in &report.tenants {
            print_report(r, true);
        }
        if report.ok {
            println!(
                "{path}: ok ({} lines, {} tenant(s))",
                report.lines,
                report.tenants.len()
            );
        }
    }
    Ok(if report.ok { 0 } else { 1 })
}

async fn export(
    store: &DynStore,
    tenant: Option<String>,
    window: Window,
    output: Option<&str>,
) -> Result<u8> {
    if let Some(t) = &tenant
        && store.chain_head(t).await?.is_none()
    {
        eprintln!("tenant {t} has no receipts in the store");
        return Ok(1);
    }
    let mut out: Box<dyn Write> = match output {
        Some(p) => Box::new(std::io::BufWriter::new(
            std::fs::File::create(p).with_context(|| format!("--output {p}"))?,
        )),
        None => Box::new(std::io::BufWriter::new(std::io::stdout().lock())),
    };
    let mut rx = palisade_server::export::spawn(store.clone(), tenant.map(|t| vec![t]), window);
    while let Some(chunk) = rx.recv().await {
        let chunk = chunk.context("export failed")?;
        out.write_all(&chunk).context("writing the export")?;
    }
    out.flush().context("writing the export")?;
    Ok(0)
}
