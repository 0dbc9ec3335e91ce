//! What the moderation step adds to a `/v1/messages` call beyond the judge's own time,
//! measured over real HTTP in-process (gateway + mock upstream + mock judge on loopback).
//!
//! For each call the receipt gives the gateway's own time (`gateway_us` = whole call minus
//! the upstream wait) and the judge's own time (`moderation.input.latency_us`, the provider
//! call as the gateway timed it). The step's added latency is
//! `gateway_us(with moderation) − judge latency_us − gateway_us(without)`, compared on
//! medians. A second part compares client-observed latency of sequential and parallel
//! input moderation when the judge and the upstream each take 30 ms.
//!
//!     cargo bench -p palisade-server --bench moderation
//!     MODERATION_BENCH_CALLS=1000 cargo bench -p palisade-server --bench moderation
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, dead_code)]

#[path = "../tests/common/mod.rs"]
mod common;

use common::*;
use std::time::{Duration, Instant};

fn pct(v: &mut [u64], p: f64) -> u64 {
    v.sort_unstable();
    let i = ((v.len() as f64 - 1.0) * p).round() as usize;
    v[i.min(v.len() - 1)]
}

async fn run(h: &Harness, key: &str, text: &str, n: usize) -> (Vec<u64>, Vec<u64>, Vec<u64>) {
    // Warm-up (connections, caches).
    for _ in 0..20 {
        let (s, v, _) = h.message(key, &chat(text)).await;
        assert_eq!(s, 200, "{v}");
    }
    let mut client = Vec::with_capacity(n);
    for _ in 0..n {
        let t0 = Instant::now();
        let (s, v, _) = h.message(key, &chat(text)).await;
        client.push(t0.elapsed().as_micros() as u64);
        assert_eq!(s, 200, "{v}");
    }
    let mut gw = Vec::new();
    let mut judge = Vec::new();
    let mut before: Option<String> = None;
    // Receipts newest first, 1000 a page.
    'pages: loop {
        let path = match &before {
            Some(c) => format!("/v1/receipts?limit=1000&cursor={c}"),
            None => "/v1/receipts?limit=1000".to_string(),
        };
        let (s, v) = h.get(&path, key).await;
        assert_eq!(s, 200, "{v}");
        for r in v["data"].as_array().unwrap() {
            if gw.len() == n {
                break 'pages;
            }
            gw.push(r["details"]["gateway_us"].as_u64().unwrap_or(0));
            judge.push(
                r["details"]["moderation"]["input"]["latency_us"]
                    .as_u64()
                    .unwrap_or(0),
            );
        }
        match v["next_cursor"].as_str() {
            Some(c) => before = Some(c.to_string()),
            None => break,
        }
    }
    (client, gw, judge)
}

fn main() {
    let n: usize = std::env::var("MODERATION_BENCH_CALLS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(300);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        let h = Harness::start().await;
        h.put_policy(None, "default: allow\n").await;
        let plain = h.tenant("plain").await;
        let moderated = h.tenant("moderated").await;
        h.put_policy(
            Some("moderated"),
            "moderation:\n  input: { harassment: BLOCK_MEDIUM_AND_ABOVE, hate: BLOCK_MEDIUM_AND_ABOVE, violence: BLOCK_MEDIUM_AND_ABOVE }\n",
        )
        .await;
        let text = "Summarise the quarterly report in three bullet points, please.";
        let (c0, mut g0, _) = run(&h, &plain, text, n).await;
        let (c1, mut g1, mut j1) = run(&h, &moderated, text, n).await;
        let mut extra: Vec<u64> = g1.iter().zip(&j1).map(|(g, j)| g.saturating_sub(*j)).collect();
        let (mut c0, mut c1) = (c0, c1);
        println!("calls per configuration: {n}");
        println!(
            "no moderation:   client p50 {} us  p95 {} us  gateway_us p50 {}  p95 {}",
            pct(&mut c0, 0.5),
            pct(&mut c0, 0.95),
            pct(&mut g0, 0.5),
            pct(&mut g0, 0.95)
        );
        println!(
            "input judge:     client p50 {} us  p95 {} us  gateway_us p50 {}  p95 {}  judge latency_us p50 {}  p95 {}",
            pct(&mut c1, 0.5),
            pct(&mut c1, 0.95),
            pct(&mut g1, 0.5),
            pct(&mut g1, 0.95),
            pct(&mut j1, 0.5),
            pct(&mut j1, 0.95)
        );
        let base = pct(&mut g0, 0.5);
        println!(
            "gateway_us minus judge time: p50 {} p95 {}  => added by the moderation step beyond the judge (p50): {} us",
            pct(&mut extra, 0.5),
            pct(&mut extra, 0.95),
            pct(&mut extra, 0.5) as i64 - base as i64
        );

        // Sequential vs parallel input moderation, judge and upstream 30 ms each.
        let seq = h.tenant("seq").await;
        let par = h.tenant("par").await;
        let m = "moderation:\n  input: { violence: BLOCK_MEDIUM_AND_ABOVE }\n";
        h.put_policy(Some("seq"), m).await;
        h.put_policy(Some("par"), &format!("{m}  parallel_input: true\n")).await;
        let slow = "Hello [[mock:latency_ms=30]] [[mock:judge=slow:30]]";
        let k = (n / 3).max(30);
        let (mut cs, _, _) = run(&h, &seq, slow, k).await;
        let (mut cp, _, _) = run(&h, &par, slow, k).await;
        println!(
            "judge 30 ms + upstream 30 ms ({k} calls): sequential client p50 {} us p95 {} us; parallel p50 {} us p95 {} us",
            pct(&mut cs, 0.5),
            pct(&mut cs, 0.95),
            pct(&mut cp, 0.5),
            pct(&mut cp, 0.95)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    });
}
