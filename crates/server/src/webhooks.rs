//! Signed, retried webhook deliveries (alerts, approvals). One place for the signature
//! scheme and the retry loop, so every event a tenant receives is verified the same way.
//!
//! Signature: `x-palisade-signature: v1=<hex HMAC-SHA256(secret, "<timestamp>.<body>")>`
//! with the timestamp (unix ms) in `x-palisade-timestamp`. Retries on network errors,
//! 408, 429 and 5xx with doubling backoff; deliveries run in the background and are
//! abandoned (not awaited to completion) at shutdown.

use crate::sentinel::SentinelSettings;
use aws_lc_rs::hmac;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// One event to deliver.
pub struct Delivery {
    pub url: String,
    /// HMAC key; unsigned when absent (platform sink without a secret).
    pub secret: Option<Vec<u8>>,
    /// `x-palisade-event`, e.g. `alert`, `approval.requested`.
    pub event: &'static str,
    /// `x-palisade-event-id`: lets receivers drop duplicates of a retried delivery.
    pub event_id: String,
    pub body: Vec<u8>,
}

/// Background webhook sender shared by the process.
#[derive(Clone)]
pub struct Webhooks {
    http: reqwest::Client,
    tracker: TaskTracker,
    cancel: CancellationToken,
    attempts: u32,
    base_backoff_ms: u64,
    timeout: Duration,
}

impl Webhooks {
    pub fn new(http: reqwest::Client, s: &SentinelSettings) -> Self {
        Self {
            http,
            tracker: TaskTracker::new(),
            cancel: CancellationToken::new(),
            attempts: s.webhook_max_attempts.max(1),
            base_backoff_ms: s.webhook_base_backoff_ms,
            timeout: Duration::from_millis(s.webhook_timeout_ms.max(1)),
        }
    }

    /// Queues a delivery; returns at once.
    pub fn send(&self, d: Delivery) {
        if !(d.url.starts_with("https://") || d.url.starts_with("http://")) {
            tracing::warn!(event = d.event, "webhook url is not http(s); skipped");
            return;
        }
        let this = self.clone();
        self.tracker.spawn(async move { this.deliver(d).await });
    }

    async fn deliver(&self, d: Delivery) {
        let mut headers = vec![
            ("x-palisade-event", d.event.to_string()),
            ("x-palisade-event-id", d.event_id.clone()),
        ];
        if d.event == "alert" {
            // Kept for receivers written against the first alert webhook.
            headers.push(("x-palisade-alert-id", d.event_id.clone()));
        }
        let delivered = post_with_retries(
            &Post {
                http: &self.http,
                url: &d.url,
                secret: d.secret.as_deref(),
                headers: &headers,
                body: &d.body,
                attempts: self.attempts,
                base_backoff_ms: self.base_backoff_ms,
                timeout: self.timeout,
                cancel: &self.cancel,
            },
            || {},
        )
        .await;
        if !delivered {
            tracing::warn!(event = d.event, id = %d.event_id, "webhook delivery failed");
        }
    }

    /// Abandons pending retries and waits for in-flight attempts.
    pub async fn shutdown(&self) {
        self.cancel.cancel();
        self.tracker.close();
        self.tracker.wait().await;
    }
}

/// One signed POST and its retry policy, shared by event webhooks and the SIEM sink.
pub struct Post<'a> {
    pub http: &'a reqwest::Client,
    pub url: &'a str,
    /// HMAC key; unsigned when absent.
    pub secret: Option<&'a [u8]>,
    /// Extra headers (event or batch ids), sent on every attempt.
    pub headers: &'a [(&'static str, String)],
    pub body: &'a [u8],
    /// Attempts in all (the first included; at least one).
    pub attempts: u32,
    pub base_backoff_ms: u64,
    pub timeout: Duration,
    /// Stops retrying (not an attempt in flight).
    pub cancel: &'a CancellationToken,
}

/// Sends `p` until a 2xx, retrying network errors, 408, 429 and 5xx with doubling backoff
/// (capped at a minute). Each attempt is signed afresh with its own timestamp. Calls
/// `on_failure` after every failed attempt. Returns whether the body was delivered.
pub async fn post_with_retries(p: &Post<'_>, mut on_failure: impl FnMut()) -> bool {
    let attempts = p.attempts.max(1);
    for attempt in 0..attempts {
        let ts = palisade_store::now_ms();
        let mut req = p
            .http
            .post(p.url)
            .timeout(p.timeout)
            .header("content-type", "application/json")
            .header("x-palisade-timestamp", ts.to_string())
            .header("x-palisade-attempt", (attempt + 1).to_string());
        for (name, value) in p.headers {
            req = req.header(*name, value);
        }
        if let Some(s) = p.secret {
            req = req.header("x-palisade-signature", sign(s, ts, p.body));
        }
        let retry = match req.body(p.body.to_vec()).send().await {
            Ok(resp) if resp.status().is_success() => return true,
            Ok(resp) => {
                let s = resp.status().as_u16();
                s == 408 || s == 429 || s >= 500
            }
            Err(_) => true,
        };
        on_failure();
        if !retry || attempt + 1 == attempts || p.cancel.is_cancelled() {
            return false;
        }
        let wait = p
            .base_backoff_ms
            .saturating_mul(1u64 << attempt.min(16))
            .min(60_000);
        tokio::select! {
            _ = p.cancel.cancelled() => return false,
            _ = tokio::time::sleep(Duration::from_millis(wait)) => {}
        }
    }
    false
}

/// `v1=<hex HMAC-SHA256(secret, "<timestamp>.<body>")>`, as sent in
/// `x-palisade-signature` (the timestamp in `x-palisade-timestamp`, unix ms).
pub fn sign(secret: &[u8], timestamp: i64, body: &[u8]) -> String {
    let key = hmac::Key::new(hmac::HMAC_SHA256, secret);
    let mut ctx = hmac::Context::with_key(&key);
    ctx.update(timestamp.to_string().as_bytes());
    ctx.update(b".");
    ctx.update(body);
    format!("v1={}", hex::encode(ctx.sign().as_ref()))
}
