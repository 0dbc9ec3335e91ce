//! `palisade-load`: a closed-loop HTTP/1.1 load generator for the overhead benchmarks.
//!
//! N workers, each with its own keep-alive connection, send the same POST back to back for a
//! duration or a request count, after a warm-up whose requests are discarded. Every latency
//! is kept (exact percentiles). Non-2xx answers, transport errors and streams that do not end
//! in `message_stop` are errors: counted, sampled and printed, never dropped. The result is
//! one JSON object on stdout.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use clap::Parser;
use http::header::{HeaderName, HeaderValue};
use http::{Method, Request, Uri};
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use palisade_loadgen::{EventClock, Summary, builtin_body, summarize, with_stream};
use serde::Serialize;
use tokio::net::TcpStream;

/// Closed-loop HTTP/1.1 load generator (one keep-alive connection per worker).
#[derive(Debug, Parser)]
#[command(name = "palisade-load", version)]
struct Args {
    /// Target, plain http only, e.g. http://127.0.0.1:8080/v1/messages.
    #[arg(long)]
    url: String,
    /// Concurrent workers (= connections).
    #[arg(short = 'c', long, default_value_t = 1)]
    concurrency: usize,
    /// Measured duration in seconds (ignored when --requests is given).
    #[arg(short = 'd', long, default_value_t = 10.0)]
    duration: f64,
    /// Measured request count across all workers, instead of a duration.
    #[arg(short = 'n', long)]
    requests: Option<u64>,
    /// Warm-up seconds before measuring, on the same connections; results discarded.
    #[arg(long, default_value_t = 1.0)]
    warmup: f64,
    /// Request body from this file (default: the built-in Messages request).
    #[arg(long)]
    body_file: Option<std::path::PathBuf>,
    /// Prompt size of the built-in body, in bytes.
    #[arg(long, default_value_t = 4096)]
    prompt_bytes: usize,
    /// Streaming mode: sets "stream": true in the body and also measures the time to the first
    /// body byte, to the first complete SSE event, to the first token (the chunk carrying the
    /// first `content_block_delta`), and the largest gap between events.
    #[arg(long)]
    stream: bool,
    /// Sent as x-api-key.
    #[arg(long, env = "PALISADE_LOAD_API_KEY")]
    api_key: Option<String>,
    /// Sent as anthropic-version (empty string: not sent).
    #[arg(long, default_value = "2023-06-01")]
    anthropic_version: String,
    /// Extra header "name: value"; repeatable.
    #[arg(short = 'H', long = "header")]
    headers: Vec<String>,
    /// Client runtime threads (1 = a single-threaded runtime, the lightest on a small machine).
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// Free-form label copied into the JSON (lane name, round).
    #[arg(long)]
    label: Option<String>,
    /// Exit with status 3 when any request failed (the JSON is printed either way).
    #[arg(long)]
    fail_on_errors: bool,
    /// More targets (`host:port`, same path) sharing the load: worker i uses target
    /// i mod n, as a round-robin load balancer in front of replicas would. Repeatable.
    #[arg(long = "also")]
    also: Vec<String>,
}

#[derive(Debug, thiserror::Error)]
enum SetupError {
    #[error("--url: {0}")]
    Url(String),
    #[error("--header {0:?}: expected \"name: value\"")]
    Header(String),
    #[error("reading body file {path}: {source}")]
    BodyFile {
        path: String,
        source: std::io::Error,
    },
    #[error(transparent)]
    Body(#[from] palisade_loadgen::LoadError),
    #[error("{0}")]
    Args(String),
    #[error("cannot start the runtime: {0}")]
    Runtime(std::io::Error),
}

/// Everything a worker needs, shared read-only.
struct Plan {
    /// Targets; worker i connects to `addrs[i % len]`.
    addrs: Vec<SocketAddr>,
    uri: Uri,
    headers: Vec<(HeaderName, HeaderValue)>,
    body: Bytes,
    stream: bool,
    measure_from: Instant,
    /// End of the measured phase in duration mode.
    deadline: Option<Instant>,
    /// Measured requests still to hand out in count mode.
    tickets: Option<AtomicU64>,
}

/// What one worker saw during the measured phase.
#[derive(Default)]
struct WorkerResult {
    latencies_ns: Vec<u64>,
    ttfb_ns: Vec<u64>,
    first_event_ns: Vec<u64>,
    first_token_ns: Vec<u64>,
    max_gap_ns: Vec<u64>,
    statuses: BTreeMap<u16, u64>,
    non_2xx: u64,
    transport_errors: u64,
    incomplete_streams: u64,
    connects: u64,
    warmup_requests: u64,
    bytes_received: u64,
    error_samples: Vec<String>,
    last_done: Option<Instant>,
}

impl WorkerResult {
    fn sample(&mut self, msg: String) {
        if self.error_samples.len() < 5 && !self.error_samples.contains(&msg) {
            self.error_samples.push(msg);
        }
    }
}

#[derive(Serialize)]
struct StreamReport {
    ttfb: Summary,
    first_event: Summary,
    /// To the chunk carrying the first `content_block_delta`.
    first_token: Summary,
    max_event_gap: Summary,
}

#[derive(Serialize)]
struct Report {
    label: Option<String>,
    url: String,
    concurrency: usize,
    stream: bool,
    body_bytes: usize,
    duration_s: f64,
    /// Successful (2xx, complete) requests in the measured phase.
    count: u64,
    /// All failed requests: non_2xx + transport_errors + incomplete_streams.
    errors: u64,
    non_2xx: u64,
    transport_errors: u64,
    incomplete_streams: u64,
    /// Successful requests per second over the measured phase.
    rps: f64,
    mean_us: f64,
    min_us: f64,
    p50_us: f64,
    p90_us: f64,
    p99_us: f64,
    p999_us: f64,
    max_us: f64,
    statuses: BTreeMap<u16, u64>,
    /// TCP connections opened (warm-up included): equal to concurrency when keep-alive held.
    connects: u64,
    /// Requests sent during warm-up (any outcome), so per-request costs measured from
    /// outside (CPU time of the server) can include them.
    warmup_requests: u64,
    bytes_received: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    streaming: Option<StreamReport>,
    error_samples: Vec<String>,
}

fn main() -> ExitCode {
    let args = Args::parse();
    match run(args) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("palisade-load: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: Args) -> Result<ExitCode, SetupError> {
    if args.concurrency == 0 {
        return Err(SetupError::Args("--concurrency must be at least 1".into()));
    }
    if !(args.duration.is_finite() && args.duration > 0.0) && args.requests.is_none() {
        return Err(SetupError::Args("--duration must be positive".into()));
    }
    if !(args.warmup.is_finite() && args.warmup >= 0.0) {
        return Err(SetupError::Args("--warmup must be zero or more".into()));
    }
    let uri: Uri = args
        .url
        .parse()
        .map_err(|e: http::uri::InvalidUri| SetupError::Url(e.to_string()))?;
    if uri.scheme_str() != Some("http") {
        return Err(SetupError::Url("only http:// is supported".into()));
    }
    let authority = uri
        .authority()
        .ok_or_else(|| SetupError::Url("no host".into()))?
        .clone();
    let port = authority.port_u16().unwrap_or(80);
    let addr: SocketAddr = std::net::ToSocketAddrs::to_socket_addrs(&(authority.host(), port))
        .map_err(|e| SetupError::Url(format!("{}: {e}", authority.host())))?
        .next()
        .ok_or_else(|| SetupError::Url(format!("{}: no address", authority.host())))?;
    let mut addrs = vec![addr];
    for a in &args.also {
        addrs.push(
            std::net::ToSocketAddrs::to_socket_addrs(a.as_str())
                .map_err(|e| SetupError::Url(format!("--also {a}: {e}")))?
                .next()
                .ok_or_else(|| SetupError::Url(format!("--also {a}: no address")))?,
        );
    }
    let path = uri
        .path_and_query()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "/".into());
    let origin_form: Uri = path
        .parse()
        .map_err(|e: http::uri::InvalidUri| SetupError::Url(e.to_string()))?;

    let body = match &args.body_file {
        Some(p) => {
            let raw = std::fs::read(p).map_err(|source| SetupError::BodyFile {
                path: p.display().to_string(),
                source,
            })?;
            if args.stream { with_stream(&raw)? } else { raw }
        }
        None => builtin_body(args.prompt_bytes, args.stream),
    };

    let mut headers = vec![
        (
            http::header::HOST,
            HeaderValue::from_str(authority.as_str())
                .map_err(|e| SetupError::Url(e.to_string()))?,
        ),
        (
            http::header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        ),
    ];
    if let Some(k) = &args.api_key {
        headers.push((
            HeaderName::from_static("x-api-key"),
            HeaderValue::from_str(k).map_err(|_| SetupError::Header("x-api-key".into()))?,
        ));
    }
    if !args.anthropic_version.is_empty() {
        headers.push((
            HeaderName::from_static("anthropic-version"),
            HeaderValue::from_str(&args.anthropic_version)
                .map_err(|_| SetupError::Header("anthropic-version".into()))?,
        ));
    }
    for h in &args.headers {
        let (name, value) = h
            .split_once(':')
            .ok_or_else(|| SetupError::Header(h.clone()))?;
        let name = HeaderName::from_bytes(name.trim().as_bytes())
            .map_err(|_| SetupError::Header(h.clone()))?;
        let value =
            HeaderValue::from_str(value.trim()).map_err(|_| SetupError::Header(h.clone()))?;
        headers.push((name, value));
    }

    let runtime = if args.threads <= 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(args.threads)
            .enable_all()
            .build()
    }
    .map_err(SetupError::Runtime)?;

    let body_len = body.len();
    let report = runtime.block_on(async {
        let start = Instant::now();
        let measure_from = start + Duration::from_secs_f64(args.warmup);
        let plan = Arc::new(Plan {
            addrs,
            uri: origin_form,
            headers,
            body: Bytes::from(body),
            stream: args.stream,
            measure_from,
            deadline: match args.requests {
                Some(_) => None,
                None => Some(measure_from + Duration::from_secs_f64(args.duration)),
            },
            tickets: args.requests.map(AtomicU64::new),
        });
        let mut tasks = Vec::with_capacity(args.concurrency);
        for i in 0..args.concurrency {
            tasks.push(tokio::spawn(worker(plan.clone(), i)));
        }
        let mut results = Vec::with_capacity(tasks.len());
        for t in tasks {
            match t.await {
                Ok(r) => results.push(r),
                Err(e) => {
                    // A worker that died is an error to report, not a silent gap.
                    let mut r = WorkerResult {
                        transport_errors: 1,
                        ..WorkerResult::default()
                    };
                    r.sample(format!("worker task failed: {e}"));
                    results.push(r);
                }
            }
        }
        merge(results, measure_from, &args, body_len)
    });

    println!(
        "{}",
        serde_json::to_string(&report).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"))
    );
    if report.errors > 0 {
        eprintln!(
            "palisade-load: {} of {} requests failed ({} non-2xx, {} transport, {} incomplete streams); samples: {:?}",
            report.errors,
            report.errors + report.count,
            report.non_2xx,
            report.transport_errors,
            report.incomplete_streams,
            report.error_samples
        );
        if args.fail_on_errors {
            return Ok(ExitCode::from(3));
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn merge(
    results: Vec<WorkerResult>,
    measure_from: Instant,
    args: &Args,
    body_len: usize,
) -> Report {
    let mut all = WorkerResult::default();
    let mut last_done: Option<Instant> = None;
    for r in results {
        all.latencies_ns.extend(r.latencies_ns);
        all.ttfb_ns.extend(r.ttfb_ns);
        all.first_event_ns.extend(r.first_event_ns);
        all.first_token_ns.extend(r.first_token_ns);
        all.max_gap_ns.extend(r.max_gap_ns);
        for (k, v) in r.statuses {
            *all.statuses.entry(k).or_default() += v;
        }
        all.non_2xx += r.non_2xx;
        all.transport_errors += r.transport_errors;
        all.incomplete_streams += r.incomplete_streams;
        all.connects += r.connects;
        all.warmup_requests += r.warmup_requests;
        all.bytes_received += r.bytes_received;
        for s in r.error_samples {
            all.sample(s);
        }
        last_done = match (last_done, r.last_done) {
            (Some(a), Some(b)) => Some(a.max(b)),
            (a, b) => a.or(b),
        };
    }
    let elapsed = last_done
        .map(|t| t.saturating_duration_since(measure_from))
        .unwrap_or_default()
        .as_secs_f64();
    let s = summarize(&mut all.latencies_ns);
    let rps = if elapsed > 0.0 {
        s.count as f64 / elapsed
    } else {
        0.0
    };
    let streaming = args.stream.then(|| StreamReport {
        ttfb: summarize(&mut all.ttfb_ns),
        first_event: summarize(&mut all.first_event_ns),
        first_token: summarize(&mut all.first_token_ns),
        max_event_gap: summarize(&mut all.max_gap_ns),
    });
    Report {
        label: args.label.clone(),
        url: args.url.clone(),
        concurrency: args.concurrency,
        stream: args.stream,
        body_bytes: body_len,
        duration_s: (elapsed * 1000.0).round() / 1000.0,
        count: s.count,
        errors: all.non_2xx + all.transport_errors + all.incomplete_streams,
        non_2xx: all.non_2xx,
        transport_errors: all.transport_errors,
        incomplete_streams: all.incomplete_streams,
        rps: (rps * 10.0).round() / 10.0,
        mean_us: s.mean_us,
        min_us: s.min_us,
        p50_us: s.p50_us,
        p90_us: s.p90_us,
        p99_us: s.p99_us,
        p999_us: s.p999_us,
        max_us: s.max_us,
        statuses: all.statuses,
        connects: all.connects,
        warmup_requests: all.warmup_requests,
        bytes_received: all.bytes_received,
        streaming,
        error_samples: all.error_samples,
    }
}

async fn connect(addr: SocketAddr) -> Result<SendRequest<Full<Bytes>>, String> {
    let tcp = TcpStream::connect(addr)
        .await
        .map_err(|e| format!("connect {addr}: {e}"))?;
    tcp.set_nodelay(true)
        .map_err(|e| format!("set_nodelay: {e}"))?;
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
        .await
        .map_err(|e| format!("handshake: {e}"))?;
    tokio::spawn(async move {
        // The connection's own error surfaces on the next send_request; nothing to do here.
        let _ = conn.await;
    });
    Ok(sender)
}

/// The outcome of one request, before deciding whether it counts.
enum Outcome {
    Ok {
        status: u16,
        total_ns: u64,
        ttfb_ns: Option<u64>,
        first_event_ns: Option<u64>,
        first_token_ns: Option<u64>,
        max_gap_ns: u64,
        bytes: u64,
    },
    Status(u16, String),
    /// A 2xx stream that did not end in `message_stop` (or carried an error event).
    Incomplete(String),
    Transport(String),
}

async fn worker(plan: Arc<Plan>, index: usize) -> WorkerResult {
    let addr = plan.addrs[index % plan.addrs.len()];
    let mut r = WorkerResult::default();
    let mut conn: Option<SendRequest<Full<Bytes>>> = None;
    loop {
        let now = Instant::now();
        let measured = now >= plan.measure_from;
        if measured {
            if let Some(d) = plan.deadline
                && now >= d
            {
                break;
            }
            if let Some(t) = &plan.tickets {
                // Claim one measured request; stop when none are left.
                if t.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1))
                    .is_err()
                {
                    break;
                }
            }
        }
        let sender = match conn.as_mut() {
            Some(s) if !s.is_closed() => s,
            _ => match connect(addr).await {
                Ok(s) => {
                    r.connects += 1;
                    conn.insert(s)
                }
                Err(e) => {
                    if measured {
                        r.transport_errors += 1;
                        r.sample(e);
                        r.last_done = Some(Instant::now());
                    }
                    conn = None;
                    // Do not spin on a refused port.
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            },
        };
        let outcome = one_request(sender, &plan).await;
        let done = Instant::now();
        if matches!(outcome, Outcome::Transport(_) | Outcome::Incomplete(_)) {
            conn = None;
        }
        if !measured {
            r.warmup_requests += 1;
            continue;
        }
        r.last_done = Some(done);
        match outcome {
            Outcome::Ok {
                status,
                total_ns,
                ttfb_ns,
                first_event_ns,
                first_token_ns,
                max_gap_ns,
                bytes,
            } => {
                *r.statuses.entry(status).or_default() += 1;
                r.latencies_ns.push(total_ns);
                r.bytes_received += bytes;
                if plan.stream {
                    r.ttfb_ns.extend(ttfb_ns);
                    r.first_event_ns.extend(first_event_ns);
                    r.first_token_ns.extend(first_token_ns);
                    r.max_gap_ns.push(max_gap_ns);
                }
            }
            Outcome::Status(code, body) => {
                *r.statuses.entry(code).or_default() += 1;
                r.non_2xx += 1;
                r.sample(format!("HTTP {code}: {body}"));
            }
            Outcome::Incomplete(msg) => {
                r.incomplete_streams += 1;
                r.sample(msg);
            }
            Outcome::Transport(msg) => {
                r.transport_errors += 1;
                r.sample(msg);
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    }
    r
}

async fn one_request(sender: &mut SendRequest<Full<Bytes>>, plan: &Plan) -> Outcome {
    let mut req = Request::new(Full::new(plan.body.clone()));
    *req.method_mut() = Method::POST;
    *req.uri_mut() = plan.uri.clone();
    let h = req.headers_mut();
    for (k, v) in &plan.headers {
        h.append(k.clone(), v.clone());
    }
    if let Err(e) = sender.ready().await {
        return Outcome::Transport(format!("connection not ready: {e}"));
    }
    let t0 = Instant::now();
    let resp = match sender.send_request(req).await {
        Ok(r) => r,
        Err(e) => return Outcome::Transport(format!("send: {e}")),
    };
    let status = resp.status();
    let mut body = resp.into_body();
    let mut ttfb = None;
    let mut clock = EventClock::default();
    let mut error_body = Vec::new();
    let mut bytes = 0u64;
    loop {
        match body.frame().await {
            None => break,
            Some(Err(e)) => return Outcome::Transport(format!("body: {e}")),
            Some(Ok(frame)) => {
                if let Ok(data) = frame.into_data() {
                    let at = t0.elapsed().as_nanos() as u64;
                    ttfb.get_or_insert(at);
                    bytes += data.len() as u64;
                    if plan.stream {
                        clock.feed(&data, at);
                    }
                    if !status.is_success() && error_body.len() < 200 {
                        error_body.extend_from_slice(&data);
                    }
                }
            }
        }
    }
    let total_ns = t0.elapsed().as_nanos() as u64;
    if !status.is_success() {
        let text: String = String::from_utf8_lossy(&error_body)
            .chars()
            .take(160)
            .collect();
        return Outcome::Status(status.as_u16(), text);
    }
    if plan.stream && !clock.complete() {
        return Outcome::Incomplete(if clock.saw_error() {
            "stream carried an error event".into()
        } else {
            format!(
                "stream ended after {} events without message_stop",
                clock.events()
            )
        });
    }
    Outcome::Ok {
        status: status.as_u16(),
        total_ns,
        ttfb_ns: ttfb,
        first_event_ns: clock.first_event_ns(),
        first_token_ns: clock.first_delta_ns(),
        max_gap_ns: clock.max_gap_ns(),
        bytes,
    }
}
