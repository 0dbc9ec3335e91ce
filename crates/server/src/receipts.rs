//! Receipt writing with group commit. Request tasks hand their receipt to one writer task
//! and wait for the commit; the writer drains whatever is queued into a single store
//! transaction. Under load many receipts share one fsync, and a response still never
//! completes before its receipt is committed.

use palisade_audit::Receipt;
use palisade_store::{DynStore, StoreError};
use tokio::sync::{mpsc, oneshot};
use tokio_util::task::TaskTracker;

type Reply = oneshot::Sender<Result<Receipt, StoreError>>;

/// Called with every receipt after its batch committed (Sentinel and metrics). Must be
/// quick and must not block: it runs on the writer task.
pub type Observer = std::sync::Arc<dyn Fn(&Receipt) + Send + Sync>;

enum Msg {
    Append(Box<Receipt>, Reply),
    Stop(oneshot::Sender<()>),
}

#[derive(Clone)]
pub struct ReceiptWriter {
    tx: mpsc::Sender<Msg>,
    observer: std::sync::Arc<std::sync::OnceLock<Observer>>,
}

/// Bounded queue: when the store falls behind, request tasks wait here (backpressure)
/// rather than memory growing without bound.
const QUEUE: usize = 16_384;

impl ReceiptWriter {
    pub fn start(store: DynStore, max_batch: usize, _tracker: &TaskTracker) -> Self {
        let (tx, rx) = mpsc::channel(QUEUE);
        let observer = std::sync::Arc::new(std::sync::OnceLock::new());
        tokio::spawn(run(store, rx, max_batch.max(1), observer.clone()));
        Self { tx, observer }
    }

    /// Installs the commit observer (once; later calls are ignored).
    pub fn set_observer(&self, f: Observer) {
        let _ = self.observer.set(f);
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
    observer: std::sync::Arc<std::sync::OnceLock<Observer>>,
) {
    let mut batch: Vec<Receipt> = Vec::with_capacity(max_batch);
    let mut replies: Vec<Reply> = Vec::with_capacity(max_batch);
    while let Some(first) = rx.recv().await {
        let mut stop = None;
        match first {
            Msg::Append(r, reply) => {
                batch.push(*r);
                replies.push(reply);
            }
            Msg::Stop(done) => stop = Some(done),
        }
        while stop.is_none() && batch.len() < max_batch {
            match rx.try_recv() {
                Ok(Msg::Append(r, reply)) => {
                    batch.push(*r);
                    replies.push(reply);
                }
                Ok(Msg::Stop(done)) => stop = Some(done),
                Err(_) => break,
            }
        }
        if !batch.is_empty() {
            let receipts = std::mem::take(&mut batch);
            match store.append_receipts(receipts).await {
                Ok(sealed) => {
                    if let Some(f) = observer.get() {
                        for r in &sealed {
                            f(r);
                        }
                    }
                    for (reply, r) in replies.drain(..).zip(sealed) {
                        let _ = reply.send(Ok(r));
                    }
                }
                Err(e) => {
                    tracing::error!(error = %e, "receipt batch failed to commit");
                    for reply in replies.drain(..) {
                        let _ = reply.send(Err(StoreError::Unavailable(e.to_string())));
                    }
                }
            }
        }
        if let Some(done) = stop {
            rx.close();
            let _ = done.send(());
            return;
        }
    }
}
