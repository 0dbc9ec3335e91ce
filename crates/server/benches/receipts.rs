//! Committed receipts per second through the group-commit writer, and the latency a commit
//! adds to one call. Plain timing harness (criterion's per-iteration model does not fit a
//! concurrent throughput measurement):
//!
//!     cargo bench -p palisade-server --bench receipts
//!
//! Set PALISADE_TEST_POSTGRES_URL to also measure PostgreSQL (a fresh database is created
//! and dropped).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use palisade_audit::{Receipt, ReceiptKind, format_created_at};
use palisade_server::receipts::{ReceiptWriter, WriterOptions};
use palisade_store::DynStore;
use std::time::{Duration, Instant};
use tokio_util::task::TaskTracker;

fn receipt(tenant: &str) -> Receipt {
    let mut r = Receipt::new(
        uuid::Uuid::now_v7().hyphenated().to_string(),
        tenant,
        ReceiptKind::Message,
        format_created_at(palisade_store::now_ms() as u64),
        "allow",
    );
    r.key_id = Some("key_0123456789abcdef0123".into());
    r.user_id = Some("user-42".into());
    r.model = Some("claude-sonnet-4-5".into());
    r.upstream_status = Some(200);
    r.input_tokens = Some(1024);
    r.output_tokens = Some(256);
    r.stop_reason = Some("end_turn".into());
    r.latency_ms = Some(3);
    r.prompt_hmac = Some("ab".repeat(32));
    r.output_hmac = Some("cd".repeat(32));
    r.client_addr = Some("127.0.0.1".into());
    r
}

async fn throughput(
    store: DynStore,
    concurrency: usize,
    per_task: usize,
    gather_yields: u32,
) -> (f64, f64) {
    let writer = ReceiptWriter::start_with(
        store,
        WriterOptions {
            max_batch: 512,
            gather_yields: Some(gather_yields),
            ..WriterOptions::default()
        },
        &TaskTracker::new(),
    );
    // Warm-up.
    for _ in 0..200 {
        writer.commit(receipt("warm")).await.unwrap();
    }
    let (r0, b0) = (
        writer.metrics().receipts_committed.get(),
        writer.metrics().receipt_batches.get(),
    );
    let start = Instant::now();
    let mut tasks = Vec::new();
    for t in 0..concurrency {
        let w = writer.clone();
        tasks.push(tokio::spawn(async move {
            let tenant = format!("tenant-{}", t % 8);
            for _ in 0..per_task {
                w.commit(receipt(&tenant)).await.unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let secs = start.elapsed().as_secs_f64();
    let receipts = writer.metrics().receipts_committed.get() - r0;
    let batches = writer.metrics().receipt_batches.get() - b0;
    writer.shutdown().await;
    (
        (concurrency * per_task) as f64 / secs,
        receipts as f64 / batches.max(1) as f64,
    )
}

async fn latency(store: DynStore, n: usize) -> (Duration, Duration) {
    let writer = ReceiptWriter::start(store, 512, &TaskTracker::new());
    for _ in 0..200 {
        writer.commit(receipt("warm")).await.unwrap();
    }
    let mut samples = Vec::with_capacity(n);
    for _ in 0..n {
        let r = receipt("solo");
        let t = Instant::now();
        writer.commit(r).await.unwrap();
        samples.push(t.elapsed());
    }
    writer.shutdown().await;
    samples.sort_unstable();
    (samples[n / 2], samples[n * 99 / 100])
}

/// The store alone: `append_receipts` with fixed batches, no writer task and no waiting
/// callers, to separate the store's capacity from the hand-offs around it.
async fn store_only(store: DynStore, batch: usize, batches: usize) -> f64 {
    let start = Instant::now();
    for i in 0..batches {
        let tenant = format!("tenant-{}", i % 8);
        let rs = (0..batch).map(|_| receipt(&tenant)).collect();
        store.append_receipts(rs).await.unwrap();
    }
    (batch * batches) as f64 / start.elapsed().as_secs_f64()
}

async fn run(
    label: &str,
    open: impl Fn() -> std::pin::Pin<Box<dyn std::future::Future<Output = DynStore>>>,
) {
    // Each concurrency runs with the default group-commit window and without it
    // (`gather_yields` 0), back to back, so the two can be compared within one run.
    for c in [1usize, 16, 64] {
        let per = if c == 1 { 3000 } else { 40_000 / c };
        for (window, yields) in [("window", 3), ("no window", 0)] {
            let (rate, mean_batch) = throughput(open().await, c, per, yields).await;
            println!(
                "{label:<10} concurrency {c:>3}, {window:<9}: {rate:>9.0} committed receipts/s (mean batch {mean_batch:.1})"
            );
        }
    }
    for batch in [1usize, 64] {
        let rate = store_only(open().await, batch, 20_000 / batch).await;
        println!("{label:<10} store only, batches of {batch:>3}: {rate:>9.0} receipts/s");
    }
    let (p50, p99) = latency(open().await, 3000).await;
    println!("{label:<10} one call's commit at concurrency 1: p50 {p50:?}, p99 {p99:?}");
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().to_path_buf();
        let counter = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        run("sqlite", || {
            let n = counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let url = format!("sqlite://{}", path.join(format!("bench{n}.db")).display());
            Box::pin(async move { palisade_store::open(&url).await.unwrap() })
        })
        .await;
        if let Ok(base) = std::env::var("PALISADE_TEST_POSTGRES_URL") {
            let name = format!("palisade_bench_{}", uuid::Uuid::new_v4().simple());
            let mut conn = <sqlx::PgConnection as sqlx::Connection>::connect(&base)
                .await
                .unwrap();
            sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
                .execute(&mut conn)
                .await
                .unwrap();
            let (prefix, _) = base.rsplit_once('/').unwrap();
            let url = format!("{prefix}/{name}");
            run("postgres", || {
                let url = url.clone();
                Box::pin(async move { palisade_store::open(&url).await.unwrap() })
            })
            .await;
            let _ = sqlx::query(sqlx::AssertSqlSafe(format!(
                "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
            )))
            .execute(&mut conn)
            .await;
        }
    });
}
