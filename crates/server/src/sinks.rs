//! SIEM sinks: committed (sealed) receipts streamed to a JSON-lines file (for Vector or
//! Fluent Bit) or POSTed in signed batches to an HTTPS webhook.
//!
//! Each sink is a commit observer on the receipt writer. The observer never blocks the
//! writer: it hands the receipt to the sink's bounded queue, and when that queue is full
//! it appends the receipt to the sink's dead-letter directory instead (a short fsynced
//! file append), so a slow sink costs disk, never receipts and never commit latency.
//! A sink task drains the queue in batches (`batch_max` receipts or `batch_ms`); a
//! background task re-delivers dead-letter files and deletes each only after it was
//! delivered (webhook: a 2xx answer; file: written and synced).
//!
//! Only receipt fields go out, one canonical JSON object per receipt (the same bytes
//! whose hash the chain holds, plus `hash`). Receipts never hold prompt or output text,
//! only keyed HMACs of them.
//!
//! Delivery is at least once: a batch re-sent from the dead-letter directory may repeat
//! receipts a receiver already has (it dedupes by `id`), and receipts re-delivered from
//! the dead-letter directory arrive after newer ones (receivers order by `tenant_id`,
//! `seq`). Without dead-lettering, a sink sees every receipt once, in chain order per
//! tenant.

use crate::metrics::AuditMetrics;
use crate::receipts::Observer;
use palisade_audit::Receipt;
use serde::{Deserialize, Serialize};
use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// One entry of `audit.sinks` in `palisade.yaml`. Lists are set in the config file only
/// (there is no `PALISADE_*` variable for a list entry); the webhook secret can come
/// from any environment variable through `secret_env`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SinkConfig {
    /// Label in `/metrics` and logs (default `<kind>-<position>`).
    pub name: Option<String>,
    /// `file` or `webhook`.
    pub kind: String,
    /// File sink: the JSON-lines file.
    pub path: Option<String>,
    /// Webhook sink: `https://…` (`http://` only for loopback addresses).
    pub url: Option<String>,
    /// Webhook HMAC-SHA256 key.
    pub secret: Option<String>,
    /// Name of an environment variable holding the secret instead.
    pub secret_env: Option<String>,
    /// Most receipts in one batch.
    pub batch_max: usize,
    /// Longest wait for a batch to fill once it has a receipt.
    pub batch_ms: u64,
    /// Webhook: attempts per batch before it is dead-lettered.
    pub max_attempts: u32,
    /// Webhook: first retry delay; doubles per attempt (capped at 60 s).
    pub base_backoff_ms: u64,
    /// Webhook: timeout of one POST.
    pub timeout_ms: u64,
    /// Where undeliverable batches go, one NDJSON file each. Required for webhooks; the
    /// file sink defaults to `<path>.dead-letter/`.
    pub dead_letter_dir: Option<String>,
    /// How often dead-letter files are re-sent.
    pub retry_interval_ms: u64,
    /// Only these tenants' receipts (default: all).
    pub tenants: Option<Vec<String>>,
    /// Receipts waiting for the sink task before the observer spills to dead-letter.
    pub queue: usize,
    /// File sink: rotate when the file would grow past this many bytes.
    pub max_file_bytes: u64,
    /// File sink: rotated files kept (`path.1` newest … `path.N` oldest).
    pub max_files: u32,
    /// File sink: fsync after every batch (default). Off, a crash of the host (not of
    /// the process) can lose the last batches written.
    pub fsync: bool,
}

impl Default for SinkConfig {
    fn default() -> Self {
        Self {
            name: None,
            kind: String::new(),
            path: None,
            url: None,
            secret: None,
            secret_env: None,
            batch_max: 100,
            batch_ms: 1_000,
            max_attempts: 5,
            base_backoff_ms: 500,
            timeout_ms: 10_000,
            dead_letter_dir: None,
            retry_interval_ms: 30_000,
            tenants: None,
            queue: 10_000,
            max_file_bytes: 100 * 1024 * 1024,
            max_files: 5,
            fsync: true,
        }
    }
}

/// Largest dead-letter file re-sent (bigger files are left for an operator).
const MAX_DEAD_LETTER_BYTES: u64 = 256 * 1024 * 1024;

/// Checks `audit.sinks` (called from `Config::validate`).
pub fn validate(sinks: &[SinkConfig]) -> Result<(), String> {
    for (i, s) in sinks.iter().enumerate() {
        let at = format!("audit.sinks[{i}]");
        if s.batch_max == 0 || s.batch_max > 10_000 {
            return Err(format!("{at}.batch_max must be between 1 and 10000"));
        }
        if s.batch_ms == 0 || s.batch_ms > 600_000 {
            return Err(format!("{at}.batch_ms must be between 1 and 600000"));
        }
        if s.queue == 0 || s.queue > 1_000_000 {
            return Err(format!("{at}.queue must be between 1 and 1000000"));
        }
        if s.retry_interval_ms == 0 {
            return Err(format!("{at}.retry_interval_ms must be greater than 0"));
        }
        match s.kind.as_str() {
            "file" => {
                if s.path.as_deref().is_none_or(str::is_empty) {
                    return Err(format!("{at}: a file sink needs path"));
                }
                if s.max_file_bytes < 1024 {
                    return Err(format!("{at}.max_file_bytes must be at least 1024"));
                }
                if s.max_files == 0 || s.max_files > 1000 {
                    return Err(format!("{at}.max_files must be between 1 and 1000"));
                }
            }
            "webhook" => {
                let Some(url) = s.url.as_deref() else {
                    return Err(format!("{at}: a webhook sink needs url"));
                };
                let parsed =
                    reqwest::Url::parse(url).map_err(|_| format!("{at}.url is not a valid URL"))?;
                let loopback =
                    matches!(parsed.host_str(), Some("127.0.0.1" | "localhost" | "[::1]"));
                if !(parsed.scheme() == "https" || (parsed.scheme() == "http" && loopback)) {
                    return Err(format!(
                        "{at}.url must be https:// (http:// only for loopback)"
                    ));
                }
                if s.secret.is_none() && s.secret_env.is_none() {
                    return Err(format!("{at}: a webhook sink needs secret or secret_env"));
                }
                if s.dead_letter_dir.as_deref().is_none_or(str::is_empty) {
                    return Err(format!("{at}: a webhook sink needs dead_letter_dir"));
                }
                if s.max_attempts == 0 || s.max_attempts > 20 {
                    return Err(format!("{at}.max_attempts must be between 1 and 20"));
                }
                if s.timeout_ms == 0 {
                    return Err(format!("{at}.timeout_ms must be greater than 0"));
                }
            }
            "" => return Err(format!("{at}.kind is required (file or webhook)")),
            _ => return Err(format!("{at}.kind must be file or webhook")),
        }
    }
    Ok(())
}

/// Canonical JSON of a sealed receipt: one line of a file sink or dead-letter file.
pub fn receipt_line(r: &Receipt) -> Option<String> {
    let v = serde_json::to_value(r).ok()?;
    palisade_audit::canonical_json(&v).ok()
}

/// `{"receipts":[…]}` from receipt lines (already canonical JSON objects).
fn webhook_body(lines: &[String]) -> String {
    let mut body = String::with_capacity(lines.iter().map(|l| l.len() + 1).sum::<usize>() + 16);
    body.push_str("{\"receipts\":[");
    for (i, l) in lines.iter().enumerate() {
        if i > 0 {
            body.push(',');
        }
        body.push_str(l);
    }
    body.push_str("]}");
    body
}

enum Target {
    File {
        path: PathBuf,
        max_bytes: u64,
        max_files: u32,
        fsync: bool,
        /// Open file and its size; the mutex serialises the sink task and the re-sender.
        state: Mutex<Option<(std::fs::File, u64)>>,
    },
    Webhook {
        url: String,
        secret: Vec<u8>,
        http: reqwest::Client,
        max_attempts: u32,
        base_backoff_ms: u64,
        timeout: Duration,
    },
}

struct Sink {
    name: String,
    target: Target,
    dead_letter: PathBuf,
    /// Serialises appends to the overflow file with its rotation by the re-sender.
    overflow_lock: Mutex<()>,
    metrics: AuditMetrics,
}

/// The running sinks of a process.
#[derive(Clone, Default)]
pub struct Sinks {
    observers: Vec<Observer>,
    tracker: TaskTracker,
    cancel: CancellationToken,
}

impl Sinks {
    /// Builds the configured sinks and starts their tasks. Errors name the sink.
    pub fn start(
        configs: &[SinkConfig],
        http: reqwest::Client,
        metrics: AuditMetrics,
    ) -> Result<Self, String> {
        let tracker = TaskTracker::new();
        let cancel = CancellationToken::new();
        let mut observers = Vec::new();
        for (i, c) in configs.iter().enumerate() {
            let name = c.name.clone().unwrap_or_else(|| format!("{}-{i}", c.kind));
            let (target, dead_letter) = match c.kind.as_str() {
                "file" => {
                    let path = PathBuf::from(c.path.clone().unwrap_or_default());
                    let dl = c
                        .dead_letter_dir
                        .clone()
                        .map(PathBuf::from)
                        .unwrap_or_else(|| {
                            let mut p = path.clone().into_os_string();
                            p.push(".dead-letter");
                            PathBuf::from(p)
                        });
                    (
                        Target::File {
                            path,
                            max_bytes: c.max_file_bytes,
                            max_files: c.max_files,
                            fsync: c.fsync,
                            state: Mutex::new(None),
                        },
                        dl,
                    )
                }
                "webhook" => {
                    let secret = match (&c.secret, &c.secret_env) {
                        (Some(s), _) => s.clone(),
                        (None, Some(var)) => std::env::var(var).map_err(|_| {
                            format!("sink {name}: environment variable {var} is not set")
                        })?,
                        (None, None) => return Err(format!("sink {name}: no secret")),
                    };
                    if secret.is_empty() {
                        return Err(format!("sink {name}: the secret is empty"));
                    }
                    (
                        Target::Webhook {
                            url: c.url.clone().unwrap_or_default(),
                            secret: secret.into_bytes(),
                            http: http.clone(),
                            max_attempts: c.max_attempts.max(1),
                            base_backoff_ms: c.base_backoff_ms,
                            timeout: Duration::from_millis(c.timeout_ms.max(1)),
                        },
                        PathBuf::from(c.dead_letter_dir.clone().unwrap_or_default()),
                    )
                }
                other => return Err(format!("sink {name}: unknown kind {other:?}")),
            };
            create_private_dir(&dead_letter)
                .map_err(|e| format!("sink {name}: dead-letter directory: {e}"))?;
            let sink = Arc::new(Sink {
                name,
                target,
                dead_letter,
                overflow_lock: Mutex::new(()),
                metrics: metrics.clone(),
            });
            let (tx, rx) = mpsc::channel::<Arc<Receipt>>(c.queue.max(1));
            let filter: Option<Arc<std::collections::HashSet<String>>> = c
                .tenants
                .as_ref()
                .map(|t| Arc::new(t.iter().cloned().collect()));
            let obs_sink = sink.clone();
            observers.push(Arc::new(move |r: &Receipt| {
                if let Some(f) = &filter
                    && !f.contains(&r.tenant_id)
                {
                    return;
                }
                if let Err(e) = tx.try_send(Arc::new(r.clone())) {
                    let r = match e {
                        mpsc::error::TrySendError::Full(r)
                        | mpsc::error::TrySendError::Closed(r) => r,
                    };
                    obs_sink.overflow(&r);
                }
            }) as Observer);
            tracker.spawn(run_sink(
                sink.clone(),
                rx,
                c.batch_max.max(1),
                Duration::from_millis(c.batch_ms.max(1)),
                cancel.clone(),
            ));
            tracker.spawn(resend_loop(
                sink,
                Duration::from_millis(c.retry_interval_ms.max(1)),
                c.batch_max.max(1),
                cancel.clone(),
            ));
        }
        tracker.close();
        Ok(Self {
            observers,
            tracker,
            cancel,
        })
    }

    /// Commit observers to install on the receipt writer, one per sink.
    pub fn observers(&self) -> &[Observer] {
        &self.observers
    }

    /// Delivers what is queued (one attempt each; what fails goes to dead-letter) and
    /// stops. Call after the receipt writer has stopped.
    pub async fn shutdown(&self) {
        self.cancel.cancel();
        self.tracker.wait().await;
    }
}

fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    let mut b = std::fs::DirBuilder::new();
    b.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        b.mode(0o700);
    }
    b.create(dir)
}

fn private_open(path: &Path, append: bool) -> std::io::Result<std::fs::File> {
    let mut opts = std::fs::OpenOptions::new();
    if append {
        opts.append(true).create(true);
    } else {
        opts.write(true).create_new(true);
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    opts.open(path)
}

const OVERFLOW: &str = "overflow.ndjson.open";

impl Sink {
    /// The queue is full (or the task stopped): append to the open overflow file, which
    /// the re-sender turns into a dead-letter file. Runs on the writer task, so it is one
    /// small write.
    fn overflow(&self, r: &Receipt) {
        let Some(mut line) = receipt_line(r) else {
            return;
        };
        line.push('\n');
        let res = self
            .overflow_lock
            .lock()
            .map_err(|_| std::io::Error::other("lock poisoned"))
            .and_then(|_guard| {
                let mut f = private_open(&self.dead_letter.join(OVERFLOW), true)?;
                f.write_all(line.as_bytes())?;
                f.sync_data()
            });
        match res {
            Ok(()) => self.metrics.sink(&self.name, "spilled", 1),
            Err(e) => {
                self.metrics.sink_failure(&self.name);
                tracing::error!(sink = %self.name, error = %e, "sink overflow spill failed; receipt not delivered");
            }
        }
    }

    /// Writes one batch as a new dead-letter file (written aside, fsynced, renamed).
    fn dead_letter(&self, lines: &[String]) {
        let name = format!(
            "{:013}-{}.ndjson",
            palisade_store::now_ms().max(0),
            uuid::Uuid::now_v7().simple()
        );
        let tmp = self.dead_letter.join(format!("{name}.tmp"));
        let res = (|| {
            let mut f = private_open(&tmp, false)?;
            let mut text = String::new();
            for l in lines {
                text.push_str(l);
                text.push('\n');
            }
            f.write_all(text.as_bytes())?;
            f.sync_all()?;
            std::fs::rename(&tmp, self.dead_letter.join(&name))
        })();
        match res {
            Ok(()) => {
                self.metrics
                    .sink(&self.name, "dead_lettered", lines.len() as u64);
                tracing::warn!(sink = %self.name, count = lines.len(), file = %name, "sink batch dead-lettered");
            }
            Err(e) => {
                self.metrics.sink_failure(&self.name);
                tracing::error!(sink = %self.name, error = %e, count = lines.len(), "sink dead-letter write failed; batch not delivered");
            }
        }
    }

    /// Delivers a batch. `retry`: use the configured retries (webhook) — off for
    /// re-sends and at shutdown. Returns whether it was delivered.
    async fn deliver(
        self: &Arc<Self>,
        lines: Vec<String>,
        retry: bool,
        cancel: &CancellationToken,
    ) -> bool {
        if lines.is_empty() {
            return true;
        }
        let n = lines.len() as u64;
        let ok = match &self.target {
            Target::File { .. } => {
                // File I/O (and its fsync) off the async workers.
                let me = self.clone();
                let res = tokio::task::spawn_blocking(move || me.write_file(&lines))
                    .await
                    .unwrap_or_else(|e| Err(std::io::Error::other(e.to_string())));
                if let Err(e) = &res {
                    self.metrics.sink_failure(&self.name);
                    tracing::warn!(sink = %self.name, error = %e, "file sink write failed");
                }
                res.is_ok()
            }
            Target::Webhook {
                url,
                secret,
                http,
                max_attempts,
                base_backoff_ms,
                timeout,
            } => {
                let body = webhook_body(&lines);
                let batch_id = uuid::Uuid::now_v7().hyphenated().to_string();
                let attempts = if retry { *max_attempts } else { 1 };
                let headers = [("x-palisade-batch-id", batch_id)];
                crate::webhooks::post_with_retries(
                    &crate::webhooks::Post {
                        http,
                        url,
                        secret: Some(secret),
                        headers: &headers,
                        body: body.as_bytes(),
                        attempts,
                        base_backoff_ms: *base_backoff_ms,
                        timeout: *timeout,
                        cancel,
                    },
                    || self.metrics.sink_failure(&self.name),
                )
                .await
            }
        };
        if ok {
            self.metrics.sink(&self.name, "delivered", n);
        }
        ok
    }

    /// Appends lines to the file sink, rotating by size first.
    fn write_file(&self, lines: &[String]) -> std::io::Result<()> {
        let Target::File {
            path,
            max_bytes,
            max_files,
            fsync,
            state,
        } = &self.target
        else {
            return Ok(());
        };
        let mut text = String::new();
        for l in lines {
            text.push_str(l);
            text.push('\n');
        }
        let mut guard = state
            .lock()
            .map_err(|_| std::io::Error::other("lock poisoned"))?;
        if guard.is_none() {
            let f = private_open(path, true)?;
            let size = f.metadata()?.len();
            *guard = Some((f, size));
        }
        if let Some((_, size)) = guard.as_ref()
            && *size > 0
            && size.saturating_add(text.len() as u64) > *max_bytes
        {
            *guard = None;
            rotate(path, *max_files)?;
            let f = private_open(path, true)?;
            *guard = Some((f, 0));
        }
        let Some((f, size)) = guard.as_mut() else {
            return Err(std::io::Error::other("file sink not open"));
        };
        f.write_all(text.as_bytes())?;
        if *fsync {
            f.sync_data()?;
        }
        *size += text.len() as u64;
        Ok(())
    }
}

/// `path` → `path.1`, `path.1` → `path.2`, …; the oldest beyond `max_files` is removed.
fn rotate(path: &Path, max_files: u32) -> std::io::Result<()> {
    let numbered = |n: u32| {
        let mut p = path.as_os_str().to_owned();
        p.push(format!(".{n}"));
        PathBuf::from(p)
    };
    match std::fs::remove_file(numbered(max_files)) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    for n in (1..max_files).rev() {
        match std::fs::rename(numbered(n), numbered(n + 1)) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
    }
    std::fs::rename(path, numbered(1))
}

async fn run_sink(
    sink: Arc<Sink>,
    mut rx: mpsc::Receiver<Arc<Receipt>>,
    batch_max: usize,
    batch_wait: Duration,
    cancel: CancellationToken,
) {
    loop {
        let first = tokio::select! {
            r = rx.recv() => r,
            _ = cancel.cancelled() => None,
        };
        let Some(first) = first else { break };
        let mut batch = vec![first];
        let deadline = tokio::time::Instant::now() + batch_wait;
        while batch.len() < batch_max {
            tokio::select! {
                r = rx.recv() => match r {
                    Some(r) => batch.push(r),
                    None => break,
                },
                _ = tokio::time::sleep_until(deadline) => break,
                _ = cancel.cancelled() => break,
            }
        }
        send_or_dead_letter(&sink, &batch, !cancel.is_cancelled(), &cancel).await;
    }
    // Shutdown: deliver what is left, once each batch; the rest goes to dead-letter.
    rx.close();
    let mut rest = Vec::new();
    while let Ok(r) = rx.try_recv() {
        rest.push(r);
    }
    for chunk in rest.chunks(batch_max) {
        send_or_dead_letter(&sink, chunk, false, &cancel).await;
    }
}

async fn send_or_dead_letter(
    sink: &Arc<Sink>,
    batch: &[Arc<Receipt>],
    retry: bool,
    cancel: &CancellationToken,
) {
    let lines: Vec<String> = batch.iter().filter_map(|r| receipt_line(r)).collect();
    if !sink.deliver(lines.clone(), retry, cancel).await {
        sink.dead_letter(&lines);
    }
}

async fn resend_loop(
    sink: Arc<Sink>,
    interval: Duration,
    batch_max: usize,
    cancel: CancellationToken,
) {
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(interval) => {}
        }
        resend_once(&sink, batch_max, &cancel).await;
    }
}

/// Re-sends dead-letter files, oldest first; stops at the first failure (the receiver
/// is still down) and tries again next round.
async fn resend_once(sink: &Arc<Sink>, batch_max: usize, cancel: &CancellationToken) {
    seal_overflow(sink);
    let mut files: Vec<PathBuf> = match std::fs::read_dir(&sink.dead_letter) {
        Ok(rd) => rd
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|x| x == "ndjson"))
            .collect(),
        Err(e) => {
            tracing::warn!(sink = %sink.name, error = %e, "dead-letter directory unreadable");
            return;
        }
    };
    files.sort();
    for file in files {
        if cancel.is_cancelled() {
            return;
        }
        let lines = match read_lines(&file) {
            Ok(l) => l,
            Err(e) => {
                tracing::warn!(sink = %sink.name, file = %file.display(), error = %e, "dead-letter file skipped");
                continue;
            }
        };
        for chunk in lines.chunks(batch_max) {
            if !sink.deliver(chunk.to_vec(), false, cancel).await {
                return;
            }
        }
        if let Err(e) = std::fs::remove_file(&file) {
            tracing::warn!(sink = %sink.name, error = %e, "could not remove a re-sent dead-letter file");
        }
    }
}

/// Turns the open overflow file into a dead-letter file (under the overflow lock).
fn seal_overflow(sink: &Sink) {
    let Ok(_guard) = sink.overflow_lock.lock() else {
        return;
    };
    let open = sink.dead_letter.join(OVERFLOW);
    if open.exists() {
        let name = format!(
            "{:013}-overflow-{}.ndjson",
            palisade_store::now_ms().max(0),
            uuid::Uuid::now_v7().simple()
        );
        if let Err(e) = std::fs::rename(&open, sink.dead_letter.join(name)) {
            tracing::warn!(sink = %sink.name, error = %e, "could not seal the overflow file");
        }
    }
}

/// Lines of a dead-letter file that parse as JSON objects (bounded size).
fn read_lines(path: &Path) -> std::io::Result<Vec<String>> {
    let f = std::fs::File::open(path)?;
    if f.metadata()?.len() > MAX_DEAD_LETTER_BYTES {
        return Err(std::io::Error::other("file larger than 256 MiB"));
    }
    let mut out = Vec::new();
    for line in std::io::BufReader::new(f).lines() {
        let line = line?;
        if line.trim().is_empty() {
            continue;
        }
        match serde_json::from_str::<serde_json::Value>(&line) {
            Ok(serde_json::Value::Object(_)) => out.push(line),
            _ => {
                tracing::warn!(file = %path.display(), "dead-letter line is not a JSON object; skipped")
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn webhook_signature_covers_timestamp_and_body() {
        use aws_lc_rs::hmac;
        // HMAC-SHA256("Jefe", "1.what do ya want for nothing?"), computed independently.
        let s = crate::webhooks::sign(b"Jefe", 1, b"what do ya want for nothing?");
        let key = hmac::Key::new(hmac::HMAC_SHA256, b"Jefe");
        let want = hex::encode(hmac::sign(&key, b"1.what do ya want for nothing?").as_ref());
        assert_eq!(s, format!("v1={want}"));
        assert_ne!(
            s,
            crate::webhooks::sign(b"Jefe", 2, b"what do ya want for nothing?")
        );
    }

    #[test]
    fn body_wraps_lines() {
        let b = webhook_body(&["{\"a\":1}".into(), "{\"b\":2}".into()]);
        assert_eq!(b, "{\"receipts\":[{\"a\":1},{\"b\":2}]}");
        let v: serde_json::Value = serde_json::from_str(&b).unwrap();
        assert_eq!(v["receipts"].as_array().unwrap().len(), 2);
    }

    #[test]
    fn validation_names_the_problem() {
        let mut s = SinkConfig {
            kind: "webhook".into(),
            url: Some("http://example.com/x".into()),
            secret: Some("k".into()),
            dead_letter_dir: Some("/tmp/x".into()),
            ..SinkConfig::default()
        };
        assert!(
            validate(std::slice::from_ref(&s))
                .unwrap_err()
                .contains("https")
        );
        s.url = Some("https://example.com/x".into());
        assert!(validate(std::slice::from_ref(&s)).is_ok());
        s.secret = None;
        assert!(
            validate(std::slice::from_ref(&s))
                .unwrap_err()
                .contains("secret")
        );
        let f = SinkConfig {
            kind: "file".into(),
            ..SinkConfig::default()
        };
        assert!(validate(&[f]).unwrap_err().contains("path"));
    }

    #[test]
    fn rotation_shifts_and_caps() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("r.jsonl");
        for i in 0..4 {
            std::fs::write(&p, format!("{i}")).unwrap();
            rotate(&p, 2).unwrap();
        }
        let read = |n: u32| std::fs::read_to_string(dir.path().join(format!("r.jsonl.{n}")));
        assert_eq!(read(1).unwrap(), "3");
        assert_eq!(read(2).unwrap(), "2");
        assert!(read(3).is_err());
    }
}
