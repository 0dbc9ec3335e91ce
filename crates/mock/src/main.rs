//! `palisade-mock`: the mock Anthropic upstream as a process, for the demo, SDK tests and
//! throughput benchmarks.

use std::io::Write;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use palisade_mock::{MockConfig, MockServer};

/// Mock Anthropic Messages API (see crates/mock/README.md for the [[mock:...]] directives).
#[derive(Debug, Parser)]
#[command(name = "palisade-mock", version)]
struct Args {
    /// Address to listen on (port 0 picks one; the chosen address is printed).
    #[arg(long, env = "PALISADE_MOCK_LISTEN", default_value = "127.0.0.1:9999")]
    listen: SocketAddr,
    /// Sleep before every response, in milliseconds.
    #[arg(long, env = "PALISADE_MOCK_LATENCY_MS", default_value_t = 0)]
    latency_ms: u64,
    /// Sleep between SSE events, in milliseconds.
    #[arg(long, env = "PALISADE_MOCK_STREAM_DELAY_MS", default_value_t = 0)]
    stream_delay_ms: u64,
    /// Only this x-api-key is accepted (others get 401); any key when unset.
    #[arg(long, env = "PALISADE_MOCK_API_KEY")]
    api_key: Option<String>,
    /// Do not record requests (for benchmarks; the record otherwise grows without bound).
    #[arg(long)]
    no_record: bool,
    /// Characters per text_delta (default: about three words).
    #[arg(long)]
    chunk_chars: Option<usize>,
    /// Accept requests without an anthropic-version header.
    #[arg(long)]
    no_require_version: bool,
    /// Worker threads (default: one per core).
    #[arg(long)]
    workers: Option<usize>,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    builder.enable_all();
    if let Some(n) = args.workers {
        builder.worker_threads(n.max(1));
    }
    let runtime = match builder.build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("palisade-mock: cannot start runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(run(args))
}

async fn run(args: Args) -> ExitCode {
    let config = MockConfig {
        latency: Duration::from_millis(args.latency_ms),
        stream_delay: Duration::from_millis(args.stream_delay_ms),
        required_api_key: args.api_key,
        record: !args.no_record,
        chunk_chars: args.chunk_chars.filter(|n| *n > 0),
        require_anthropic_version: !args.no_require_version,
        ..MockConfig::default()
    };
    let server = match MockServer::start_on(args.listen, config).await {
        Ok(s) => s,
        Err(e) => {
            eprintln!("palisade-mock: cannot listen on {}: {e}", args.listen);
            return ExitCode::FAILURE;
        }
    };
    // Scripts read this line to learn the port when --listen ends in :0.
    let mut out = std::io::stdout();
    let _ = writeln!(out, "palisade-mock listening on {}", server.base_url());
    let _ = out.flush();
    wait_for_signal().await;
    server.shutdown().await;
    ExitCode::SUCCESS
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        if let Ok(mut term) = signal(SignalKind::terminate()) {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
            return;
        }
    }
    let _ = tokio::signal::ctrl_c().await;
}
