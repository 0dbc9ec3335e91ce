//! Receipts under concurrency, client disconnects and graceful shutdown.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::*;
use serde_json::Value;
use std::time::Duration;

async fn verify_all(h: &Harness) {
    let store = h.state().store.clone();
    for t in store.chain_tenants().await.unwrap() {
        let chain = store.chain(&t, 1, 100_000).await.unwrap();
        let report = palisade_audit::verify_chain(&t, chain, None);
        assert!(report.ok, "{t}: {:?}", report.problems);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_calls_leave_linear_verified_chains() {
    let h = Harness::start().await;
    let a = h.tenant("a").await;
    let b = h.tenant("b").await;
    let mut tasks = Vec::new();
    for i in 0..64 {
        let key = if i % 2 == 0 { a.clone() } else { b.clone() };
        let http = h.http.clone();
        let url = h.url("/v1/messages");
        let body = if i % 3 == 0 {
            stream_chat("hi")
        } else {
            chat("hi")
        };
        tasks.push(tokio::spawn(async move {
            let r = http
                .post(url)
                .header("x-api-key", key)
                .json(&body)
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 200);
            r.text().await.unwrap();
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let ra = h.receipts(&a).await;
    let rb = h.receipts(&b).await;
    let count = |rs: &[Value]| rs.iter().filter(|r| r["kind"] == "message").count();
    assert_eq!(count(&ra) + count(&rb), 64);
    let mut seqs: Vec<u64> = ra.iter().map(|r| r["seq"].as_u64().unwrap()).collect();
    seqs.sort_unstable();
    assert_eq!(
        seqs,
        (1..=seqs.len() as u64).collect::<Vec<_>>(),
        "no gaps, no forks"
    );
    verify_all(&h).await;
}

#[tokio::test]
async fn client_going_away_still_leaves_a_receipt() {
    let h = Harness::start().await;
    let key = h.tenant("acme").await;
    // Non-streaming: the client gives up before the upstream answers.
    let client = reqwest::Client::builder()
        .timeout(Duration::from_millis(150))
        .build()
        .unwrap();
    let r = client
        .post(h.url("/v1/messages"))
        .header("x-api-key", &key)
        .json(&chat("[[mock:latency_ms=600]] slow"))
        .send()
        .await;
    assert!(r.is_err(), "client timed out");
    // Streaming: read the first chunk, then drop the response.
    let mut r = h
        .post(
            "/v1/messages",
            &key,
            &stream_chat("[[mock:stream_delay_ms=40]] [[mock:chunk=1]] a long streamed answer"),
        )
        .await;
    let first = r.chunk().await.unwrap();
    assert!(first.is_some());
    drop(r);
    let mut decisions = Vec::new();
    for _ in 0..50 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        decisions = h
            .receipts(&key)
            .await
            .iter()
            .filter(|r| r["kind"] == "message")
            .map(|r| r["decision"].as_str().unwrap().to_string())
            .collect();
        if decisions.len() == 2 {
            break;
        }
    }
    assert_eq!(decisions.len(), 2, "{decisions:?}");
    assert!(
        decisions.contains(&"client_closed".to_string()),
        "{decisions:?}"
    );
    // The abandoned non-streaming call completed upstream and was recorded as such.
    assert!(decisions.contains(&"allow".to_string()), "{decisions:?}");
    verify_all(&h).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_shutdown_finishes_in_flight_streams_and_their_receipts() {
    let mut h = Harness::start().await;
    let key = h.tenant("acme").await;
    let db = h.dir.path().join("p.db");
    let http = h.http.clone();
    let url = h.url("/v1/messages");
    let body =
        stream_chat("[[mock:stream_delay_ms=30]] [[mock:chunk=2]] finish this stream please");
    let client = tokio::spawn(async move {
        let r = http
            .post(url)
            .header("x-api-key", key)
            .json(&body)
            .send()
            .await
            .unwrap();
        r.text().await.unwrap()
    });
    tokio::time::sleep(Duration::from_millis(150)).await;
    h.stop().await;
    let text = client.await.unwrap();
    let names = event_names(&text);
    assert_eq!(
        names.last().map(String::as_str),
        Some("message_stop"),
        "{text}"
    );
    // Reopen the store as a new process would: the receipt is there and verifies.
    let store = palisade_store::open(&format!("sqlite://{}", db.display()))
        .await
        .unwrap();
    let chain = store.chain("acme", 1, 1000).await.unwrap();
    assert!(
        chain
            .iter()
            .any(|r| r.kind == palisade_audit::ReceiptKind::Message && r.decision == "allow")
    );
    assert!(palisade_audit::verify_chain("acme", chain, None).ok);
}
