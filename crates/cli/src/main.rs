//! `palisade`: the gateway binary. `serve` runs it, `demo` shows it offline, and the
//! `tenant`/`key`/`audit` commands work on the configured store directly.
#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used, clippy::panic))]

mod audit_cmd;
mod demo;
mod policy_cmd;
mod telemetry;

/// mimalloc instead of glibc malloc: a call allocates and frees on different worker
/// threads, and glibc's arenas spent ~15 % of a call's CPU on it (BENCHMARKS.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};
use palisade_server::config::Config;
use palisade_store::{DynStore, NewApiKey, NewTenant, TenantPatch, rfc3339_ms};
use serde_json::{Map, Value};

#[derive(Parser)]
#[command(
    name = "palisade",
    version,
    about = "Multi-tenant guardrail gateway for LLM APIs"
)]
struct Cli {
    /// Configuration file (YAML). Every setting can also come from PALISADE_* variables.
    #[arg(long, global = true, env = "PALISADE_CONFIG")]
    config: Option<String>,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run the gateway.
    Serve,
    /// Run an offline demonstration: gateway + mock upstream + example tenants.
    Demo,
    /// Apply pending store migrations and exit.
    Migrate,
    /// Manage tenants on the configured store.
    #[command(subcommand)]
    Tenant(TenantCmd),
    /// Manage API keys on the configured store.
    #[command(subcommand)]
    Key(KeyCmd),
    /// Audit trail operations.
    #[command(subcommand)]
    Audit(AuditCmd),
    /// Check, test, explain and tabulate policies (offline, on files).
    #[command(subcommand)]
    Policy(policy_cmd::PolicyCmd),
}

#[derive(Subcommand)]
enum TenantCmd {
    Create {
        #[arg(long)]
        name: String,
        #[arg(long)]
        id: Option<String>,
        #[arg(long, default_value = "free")]
        plan: String,
        /// Attribute as key=value (repeatable).
        #[arg(long = "attr")]
        attrs: Vec<String>,
    },
    List,
    Get {
        id: String,
    },
    Update {
        id: String,
        #[arg(long)]
        name: Option<String>,
        #[arg(long)]
        plan: Option<String>,
        /// Replaces all attributes (key=value, repeatable).
        #[arg(long = "attr")]
        attrs: Vec<String>,
    },
    Delete {
        id: String,
    },
}

#[derive(Subcommand)]
enum KeyCmd {
    Create {
        #[arg(long)]
        tenant: String,
        #[arg(long, default_value = "member")]
        role: String,
        #[arg(long)]
        user: Option<String>,
        #[arg(long)]
        name: Option<String>,
        /// RFC 3339 expiry.
        #[arg(long)]
        expires_at: Option<String>,
        #[arg(long = "scope")]
        scopes: Vec<String>,
    },
    List {
        #[arg(long)]
        tenant: String,
    },
    Rotate {
        #[arg(long)]
        tenant: String,
        id: String,
    },
    Revoke {
        #[arg(long)]
        tenant: String,
        id: String,
    },
}

use audit_cmd::AuditCmd;

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let telemetry = telemetry::init();
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return std::process::ExitCode::from(2);
        }
    };
    let code = match rt.block_on(run(cli)) {
        Ok(code) => std::process::ExitCode::from(code),
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::from(2)
        }
    };
    telemetry.shutdown();
    code
}

fn load_config(path: Option<&str>) -> Result<Config> {
    Ok(Config::load(path, std::env::vars())?)
}

async fn open_store(cfg: &Config) -> Result<DynStore> {
    palisade_store::open(&cfg.storage.url)
        .await
        .with_context(|| "opening the store".to_string())
}

fn parse_attrs(attrs: &[String]) -> Result<Map<String, Value>> {
    let mut m = Map::new();
    for a in attrs {
        let Some((k, v)) = a.split_once('=') else {
            bail!("--attr {a:?}: expected key=value");
        };
        m.insert(k.to_string(), Value::from(v));
    }
    Ok(m)
}

fn print_json(v: &impl serde::Serialize) -> Result<()> {
    println!("{}", serde_json::to_string_pretty(v)?);
    Ok(())
}

async fn record(store: &DynStore, tenant: &str, object: String, change: Value) -> Result<()> {
    let r = palisade_server::admin::change_receipt(tenant, "cli", object, change);
    store.append_receipts(vec![r]).await?;
    Ok(())
}

async fn run(cli: Cli) -> Result<u8> {
    let config_path = cli.config.as_deref();
    match cli.cmd {
        Cmd::Serve => {
            let cfg = load_config(config_path)?;
            serve(cfg).await?;
            Ok(0)
        }
        Cmd::Demo => demo::run().await,
        Cmd::Policy(cmd) => Ok(u8::try_from(policy_cmd::run(cmd)?).unwrap_or(2)),
        Cmd::Migrate => {
            let cfg = load_config(config_path)?;
            let store = open_store(&cfg).await?;
            if store.migrations_applied().await? {
                println!("store is up to date");
            }
            Ok(0)
        }
        Cmd::Tenant(cmd) => {
            let cfg = load_config(config_path)?;
            let store = open_store(&cfg).await?;
            tenant_cmd(&store, cmd).await
        }
        Cmd::Key(cmd) => {
            let cfg = load_config(config_path)?;
            let store = open_store(&cfg).await?;
            key_cmd(&store, cmd).await
        }
        Cmd::Audit(cmd) => {
            let cfg = load_config(config_path)?;
            audit_cmd::run(&cfg, cmd).await
        }
    }
}

async fn serve(cfg: Config) -> Result<()> {
    let server = palisade_server::RunningServer::start(cfg)
        .await
        .map_err(anyhow::Error::msg)?;
    tracing::info!(addr = %server.addr, "palisade listening");
    shutdown_signal().await;
    tracing::info!("shutting down: draining in-flight requests");
    server.shutdown().await;
    tracing::info!("stopped");
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {}
        _ = term => {}
    }
}

async fn tenant_cmd(store: &DynStore, cmd: TenantCmd) -> Result<u8> {
    match cmd {
        TenantCmd::Create {
            name,
            id,
            plan,
            attrs,
        } => {
            let t = store
                .create_tenant(NewTenant {
                    id,
                    name,
                    plan,
                    attributes: parse_attrs(&attrs)?,
                })
                .await?;
            record(
                store,
                &t.id,
                format!("tenant/{}", t.id),
                serde_json::json!({"op": "create", "plan": t.plan}),
            )
            .await?;
            print_json(&t)?;
        }
        TenantCmd::List => {
            let mut after: Option<String> = None;
            loop {
                let page = store.list_tenants(after.as_deref(), 500).await?;
                for t in &page {
                    println!("{}\t{}\t{}", t.id, t.plan, t.name);
                }
                match page.last() {
                    Some(t) if page.len() == 500 => after = Some(t.id.clone()),
                    _ => break,
                }
            }
        }
        TenantCmd::Get { id } => match store.get_tenant(&id).await? {
            Some(t) => print_json(&t)?,
            None => {
                eprintln!("tenant {id} not found");
                return Ok(1);
            }
        },
        TenantCmd::Update {
            id,
            name,
            plan,
            attrs,
        } => {
            let patch = TenantPatch {
                name,
                plan: plan.clone(),
                attributes: if attrs.is_empty() {
                    None
                } else {
                    Some(parse_attrs(&attrs)?)
                },
            };
            match store.update_tenant(&id, patch).await? {
                Some(t) => {
                    record(
                        store,
                        &id,
                        format!("tenant/{id}"),
                        serde_json::json!({"op": "update", "plan": plan}),
                    )
                    .await?;
                    print_json(&t)?
                }
                None => {
                    eprintln!("tenant {id} not found");
                    return Ok(1);
                }
            }
        }
        TenantCmd::Delete { id } => {
            if store.get_tenant(&id).await?.is_none() {
                eprintln!("tenant {id} not found");
                return Ok(1);
            }
            record(
                store,
                &id,
                format!("tenant/{id}"),
                serde_json::json!({"op": "delete"}),
            )
            .await?;
            store.delete_tenant(&id).await?;
            println!("deleted tenant {id}");
        }
    }
    Ok(0)
}

async fn key_cmd(store: &DynStore, cmd: KeyCmd) -> Result<u8> {
    let rng = aws_lc_rs::rand::SystemRandom::new();
    match cmd {
        KeyCmd::Create {
            tenant,
            role,
            user,
            name,
            expires_at,
            scopes,
        } => {
            if store.get_tenant(&tenant).await?.is_none() {
                eprintln!("tenant {tenant} not found");
                return Ok(1);
            }
            if !palisade_server::admin::valid_role(&role) {
                bail!("--role must be 1-64 characters of a-z, 0-9, '_' or '-'");
            }
            if let Some(bad) = scopes
                .iter()
                .find(|s| !palisade_server::admin::SCOPES.contains(&s.as_str()))
            {
                bail!("unknown scope {bad:?}");
            }
            let expires_at = match expires_at {
                None => None,
                Some(s) => Some(rfc3339_ms::parse(&s).context("--expires-at must be RFC 3339")?),
            };
            let minted =
                palisade_server::auth::mint_key(&rng).map_err(|e| anyhow::anyhow!(e.message))?;
            let key = store
                .create_key(NewApiKey {
                    id: minted.id,
                    tenant_id: tenant.clone(),
                    name,
                    role,
                    user_id: user,
                    scopes,
                    secret_hash: minted.secret_hash,
                    expires_at,
                    allowed_networks: Vec::new(),
                })
                .await?;
            record(
                store,
                &tenant,
                format!("tenant/{tenant}/key/{}", key.id),
                serde_json::json!({"op": "create", "role": key.role}),
            )
            .await?;
            print_json(&palisade_server::admin::key_json(
                &key,
                Some(&minted.secret),
            ))?;
            eprintln!("the secret is shown once; store it now");
        }
        KeyCmd::List { tenant } => {
            for k in store.list_keys(&tenant).await? {
                let state = if k.revoked_at.is_some() {
                    "revoked"
                } else if !k.is_active(palisade_store::now_ms()) {
                    "expired"
                } else {
                    "active"
                };
                println!(
                    "{}\t{}\t{}\t{}",
                    k.id,
                    k.role,
                    state,
                    k.user_id.as_deref().unwrap_or("-")
                );
            }
        }
        KeyCmd::Rotate { tenant, id } => {
            let (secret, hash) = palisade_server::auth::mint_secret_for(&id, &rng)
                .map_err(|e| anyhow::anyhow!(e.message))?;
            match store.rotate_key(&tenant, &id, &hash).await? {
                Some(k) => {
                    record(
                        store,
                        &tenant,
                        format!("tenant/{tenant}/key/{id}"),
                        serde_json::json!({"op": "rotate"}),
                    )
                    .await?;
                    print_json(&palisade_server::admin::key_json(&k, Some(&secret)))?;
                }
                None => {
                    eprintln!("key {id} not found in tenant {tenant}");
                    return Ok(1);
                }
            }
        }
        KeyCmd::Revoke { tenant, id } => match store.revoke_key(&tenant, &id).await? {
            Some(k) => {
                record(
                    store,
                    &tenant,
                    format!("tenant/{tenant}/key/{id}"),
                    serde_json::json!({"op": "revoke"}),
                )
                .await?;
                print_json(&palisade_server::admin::key_json(&k, None))?;
            }
            None => {
                eprintln!("key {id} not found in tenant {tenant}");
                return Ok(1);
            }
        },
    }
    Ok(0)
}

pub use audit_cmd::audit_verify;
