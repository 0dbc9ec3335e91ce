//! Cost of one limit check (a reservation on two counters, as a user + tenant limit pair
//! makes): in process, and through Redis when `PALISADE_TEST_REDIS_URL` is set. Prints
//! p50 / p99 latency per check from a single client.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use palisade_server::limits::{Check, Limiter, LocalLimiter, RedisLimiter};
use std::time::{Duration, Instant};

fn checks(prefix: &str, i: u64) -> Vec<Check> {
    vec![
        Check {
            key: format!("{prefix}{{t{}}}:p:rpm:user=u{}:w1", i % 64, i % 1000),
            amount: 1,
            limit: u64::MAX / 2,
            ttl_ms: 60_000,
        },
        Check {
            key: format!("{prefix}{{t{}}}:t:tpm:w1", i % 64),
            amount: 300,
            limit: u64::MAX / 2,
            ttl_ms: 60_000,
        },
    ]
}

async fn run(name: &str, l: &dyn Limiter, prefix: &str, n: u64) {
    for i in 0..n / 10 {
        l.reserve(&checks(prefix, i)).await.unwrap();
    }
    let mut lat: Vec<Duration> = Vec::with_capacity(n as usize);
    for i in 0..n {
        let c = checks(prefix, i);
        let t = Instant::now();
        l.reserve(&c).await.unwrap();
        lat.push(t.elapsed());
    }
    lat.sort_unstable();
    let p = |q: f64| lat[((lat.len() as f64 - 1.0) * q) as usize];
    println!(
        "limit check {name:<10} n={n:<7} p50={:>9.2?} p99={:>9.2?} max={:>9.2?}",
        p(0.50),
        p(0.99),
        lat[lat.len() - 1]
    );
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        run("in-process", &LocalLimiter::default(), "bench:", 200_000).await;
        match std::env::var("PALISADE_TEST_REDIS_URL") {
            Ok(url) if !url.is_empty() => {
                let prefix = format!("palbench:{}:", std::process::id());
                let r = RedisLimiter::new(&url).unwrap();
                run("redis", &r, &prefix, 20_000).await;
            }
            _ => println!("limit check redis: SKIPPED (PALISADE_TEST_REDIS_URL is not set)"),
        }
    });
}
