//! Receipt writing with group commit. Request tasks hand their receipt to one writer task
//! and wait for the commit; the writer drains whatever is queued into a single store
//! transaction. Under load many receipts share one fsync, and a response still never
//! completes before its receipt is committed.
//!
//! Write-behind mode (`receipts.mode: write_behind`) is the documented exception: the
//! call does not wait for the commit, at most `write_behind_max_pending` receipts are
//! in flight (callers wait for room: backpressure, never dropping), and receipts of a
//! batch that fails to commit go to the spill file. Shutdown drains the queue.

use crate::metrics::AuditMetrics;
use palisade_audit::Receipt;
use palisade_store::{DynStore, StoreError};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, oneshot};
use tokio_util::task::TaskTracker;

type Reply = oneshot::Sender<Result<Receipt, StoreError>>;

/// Called with every receipt after its batch committed, in chain order (Sentinel,
/// metrics, SIEM sinks). Must be quick and must not block: it runs on the writer task.
pub type Observer = Arc<dyn Fn(&Receipt) + Send + Sync>;

enum Msg {
    Append(Box<Receipt>, Reply),
    /// Write-behind: nobody waits; the permit bounds how many are in flight.
    Behind(Box<Receipt>, OwnedSemaphorePermit),
    Stop(oneshot::Sender<()>),
}

/// Receipts that could not be committed, kept on disk so they are not lost: one unsealed
/// receipt per line (NDJSON, canonical JSON), appended and fsynced. Used for fail-open
/// tenants (`audit_fail_open`) and for write-behind batches whose commit failed. An
/// operator re-appends them once the store is back (they carry no sequence number yet).
#[derive(Clone)]
pub struct Spill {
    path: Arc<PathBuf>,
    lock: Arc<Mutex<()>>,
}

impl Spill {
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self {
            path: Arc::new(path.into()),
            lock: Arc::new(Mutex::new(())),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends the receipts and fsyncs before returning.
    pub fn append(&self, receipts: &[Receipt]) -> std::io::Result<()> {
        let mut text = String::new();
        for r in receipts {
            let v = serde_json::to_value(r).map_err(std::io::Error::other)?;
            text.push_str(&palisade_audit::canonical_json(&v).map_err(std::io::Error::other)?);
            text.push('\n');
        }
        let _guard = self
            .lock
            .lock()
            .map_err(|_| std::io::Error::other("spill lock poisoned"))?;
        let mut opts = std::fs::OpenOptions::new();
        opts.append(true).create(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            opts.mode(0o600);
        }
        let mut f = opts.open(&*self.path)?;
        f.write_all(text.as_bytes())?;
        f.sync_data()
    }
}

/// How a writer runs. `ReceiptWriter::start` uses the defaults (sync, no spill file).
#[derive(Clone, Default)]
pub struct WriterOptions {
    /// Most receipts committed in one transaction.
    pub max_batch: usize,
    /// `Some(n)`: write-behind mode with at most `n` receipts accepted but uncommitted.
    pub write_behind_max_pending: Option<usize>,
    pub spill: Option<Spill>,
    pub metrics: AuditMetrics,
    /// Group-commit window in scheduler yields (`None`: the default, 3; `Some(0)`:
    /// commit whatever is queued at once, the behaviour before the window existed).
    pub gather_yields: Option<u32>,
}

#[derive(Clone)]
pub struct ReceiptWriter {
    tx: mpsc::Sender<Msg>,
    observers: Arc<RwLock<Vec<Observer>>>,
    behind: Option<Arc<Semaphore>>,
    spill: Option<Spill>,
    metrics: AuditMetrics,
}

/// Bounded queue: when the store falls behind, request tasks wait here (backpressure)
/// rather than memory growing without bound.
const QUEUE: usize = 16_384;

/// Default number of consecutive empty yields after which the writer stops gathering
/// and commits.
const GATHER_YIELDS: u32 = 3;

impl ReceiptWriter {
    pub fn start(store: DynStore, max_batch: usize, tracker: &TaskTracker) -> Self {
        Self::start_with(
            store,
            WriterOptions {
                max_batch,
                ..WriterOptions::default()
            },
            tracker,
        )
    }

    pub fn start_with(store: DynStore, opts: WriterOptions, _tracker: &TaskTracker) -> Self {
        let (tx, rx) = mpsc::channel(QUEUE);
        let observers = Arc::new(RwLock::new(Vec::new()));
        let behind = opts
            .write_behind_max_pending
            .map(|n| Arc::new(Semaphore::new(n.clamp(1, Semaphore::MAX_PERMITS))));
        tokio::spawn(run(
            store,
            rx,
            opts.max_batch.max(1),
            observers.clone(),
            opts.spill.clone(),
            opts.metrics.clone(),
            opts.gather_yields.unwrap_or(GATHER_YIELDS),
        ));
        Self {
            tx,
            observers,
            behind,
            spill: opts.spill,
            metrics: opts.metrics,
        }
    }

    /// Adds a commit observer. Observers run in the order they were added, each with
    /// every committed receipt.
    pub fn add_observer(&self, f: Observer) {
        if let Ok(mut list) = self.observers.write() {
            list.push(f);
        }
    }

    /// Whether data-plane calls hand receipts over without waiting for the commit.
    pub fn is_write_behind(&self) -> bool {
        self.behind.is_some()
    }

    /// Write-behind hand-over: returns once the receipt is queued. Waits (backpressure)
    /// while `write_behind_max_pending` receipts are uncommitted. In sync mode it
    /// commits and waits like `commit`.
    pub async fn enqueue(&self, receipt: Receipt) -> Result<(), StoreError> {
        let Some(sem) = &self.behind else {
            return self.commit(receipt).await.map(|_| ());
        };
        let permit = sem
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| StoreError::Unavailable("receipt writer stopped".into()))?;
        self.metrics.write_behind_pending.inc();
        if self
            .tx
            .send(Msg::Behind(Box::new(receipt), permit))
            .await
            .is_err()
        {
            self.metrics.write_behind_pending.dec();
            return Err(StoreError::Unavailable("receipt writer stopped".into()));
        }
        Ok(())
    }

    /// Writes receipts that could not be committed to the spill file.
    pub fn spill(&self, receipts: &[Receipt]) -> Result<(), StoreError> {
        let Some(s) = &self.spill else {
            return Err(StoreError::Unavailable(
                "no receipt spill file configured".into(),
            ));
        };
        s.append(receipts)
            .map_err(|e| StoreError::Unavailable(format!("receipt spill file: {e}")))?;
        self.metrics.receipts_spilled.inc_by(receipts.len() as u64);
        Ok(())
    }

    pub fn metrics(&self) -> &AuditMetrics {
        &self.metrics
    }

    /// Commits one receipt and returns it sealed (sequence number and hashes set).
    pub async fn commit(&self, receipt: Receipt) -> Result<Receipt, StoreError> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Msg::Append(Box::new(receipt), reply))
            .await
            .map_err(|_| StoreError::Unavailable("receipt writer stopped".into()))?;
        rx.await
            .map_err(|_| StoreError::Unavailable("receipt writer stopped".into()))?
    }

    /// Processes everything queued so far, then stops the writer.
    pub async fn shutdown(&self) {
        let (done, rx) = oneshot::channel();
        if self.tx.send(Msg::Stop(done)).await.is_ok() {
            let _ = rx.await;
        }
    }
}

async fn run(
    store: DynStore,
    mut rx: mpsc::Receiver<Msg>,
    max_batch: usize,
    observers: Arc<RwLock<Vec<Observer>>>,
    spill: Option<Spill>,
    metrics: AuditMetrics,
    gather_yields: u32,
) {
    let mut batch: Vec<Receipt> = Vec::with_capacity(max_batch);
    // `None` for write-behind receipts: nobody waits for them.
    let mut replies: Vec<Option<Reply>> = Vec::with_capacity(max_batch);
    let mut permits: Vec<OwnedSemaphorePermit> = Vec::new();
    // Copies of write-behind receipts, spilled if their batch fails.
    let mut behind: Vec<Receipt> = Vec::new();
    // Size of the previous batch: under steady load about that many callers were woken
    // by its commit and are about to queue their next receipt.
    let mut last_batch = 0usize;
    while let Some(first) = rx.recv().await {
        let mut stop = None;
        let mut next = Some(first);
        let mut idle = 0;
        loop {
            while let Some(msg) = next.take() {
                match msg {
                    Msg::Append(r, reply) => {
                        batch.push(*r);
                        replies.push(Some(reply));
                    }
                    Msg::Behind(r, permit) => {
                        behind.push((*r).clone());
                        batch.push(*r);
                        replies.push(None);
                        permits.push(permit);
                    }
                    Msg::Stop(done) => stop = Some(done),
                }
                if stop.is_none() && batch.len() < max_batch {
                    next = rx.try_recv().ok();
                }
            }
            // Group-commit window: when the last batch was larger than what has arrived,
            // let the woken callers run (a few scheduler yields, no timer) so one
            // transaction takes them all instead of several small ones. At low
            // concurrency (last batch of one) this never waits.
            if stop.is_some()
                || batch.len() >= max_batch
                || batch.len() >= last_batch
                || idle >= gather_yields
            {
                break;
            }
            tokio::task::yield_now().await;
            match rx.try_recv() {
                Ok(msg) => {
                    next = Some(msg);
                    idle = 0;
                }
                Err(mpsc::error::TryRecvError::Empty) => idle += 1,
                Err(mpsc::error::TryRecvError::Disconnected) => break,
            }
        }
        last_batch = batch.len();
        if !batch.is_empty() {
            let receipts = std::mem::take(&mut batch);
            match store.append_receipts(receipts).await {
                Ok(sealed) => {
                    metrics.receipt_batches.inc();
                    metrics.receipts_committed.inc_by(sealed.len() as u64);
                    let list = observers.read().map(|l| l.clone()).unwrap_or_default();
                    for f in &list {
                        for r in &sealed {
                            f(r);
                        }
                    }
                    for (reply, r) in replies.drain(..).zip(sealed) {
                        if let Some(reply) = reply {
                            let _ = reply.send(Ok(r));
                        }
                    }
                }
                Err(e) => {
                    tracing::error!(error = %e, "receipt batch failed to commit");
                    for reply in replies.drain(..).flatten() {
                        let _ = reply.send(Err(StoreError::Unavailable(e.to_string())));
                    }
                    if !behind.is_empty() {
                        let spilled = spill.as_ref().map(|s| s.append(&behind));
                        match spilled {
                            Some(Ok(())) => {
                                metrics.receipts_spilled.inc_by(behind.len() as u64);
                                tracing::warn!(
                                    count = behind.len(),
                                    "write-behind receipts spilled after a failed commit"
                                );
                            }
                            _ => {
                                metrics.receipts_lost.inc_by(behind.len() as u64);
                                tracing::error!(
                                    count = behind.len(),
                                    "write-behind receipts lost: commit and spill failed"
                                );
                            }
                        }
                    }
                }
            }
            behind.clear();
            if !permits.is_empty() {
                metrics.write_behind_pending.dec_by(permits.len() as i64);
                permits.clear();
            }
        }
        if let Some(done) = stop {
            rx.close();
            let _ = done.send(());
            return;
        }
    }
}
