//! Pusher webhooks (`docs/pusher.md`, "Webhooks"): `channel_occupied`, `channel_vacated`,
//! `member_added`, `member_removed` and `client_event`, POSTed to each app's webhook URLs as
//! Pusher sends them: batched as `{"time_ms": …, "events": […]}`, signed with
//! `X-Pusher-Key` and `X-Pusher-Signature` (hex HMAC-SHA256 of the body with the app's
//! secret), retried with back-off.
//!
//! Shards only [`Webhooks::emit`]: a `try_send` on a bounded queue ([`QUEUE_EVENTS`]), never
//! a wait; when the queue is full the event is dropped, counted
//! (`quotecast_pusher_webhook_events_total{outcome="dropped"}`) and logged. One thread of
//! its own (`qc-pusher-webhooks`, started only when some app has a webhook) batches and
//! sends, at most [`MAX_IN_FLIGHT`] deliveries at once; while they are all busy (a slow or
//! failing receiver) the queue fills and further events are dropped, so memory stays
//! bounded.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http_body_util::Full;
use hyper::{Method, Request};
use hyper_util::rt::TokioIo;
use serde_json::Value;
use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};

use super::config::{PusherApp, Webhook};
use super::sign;

/// Events the queue holds at most (all apps together); past it events are dropped.
pub const QUEUE_EVENTS: usize = 10_000;
/// Events one batch carries at most.
pub const BATCH_MAX: usize = 100;
/// How long the sender collects events after the first one before sending the batch.
pub const BATCH_WINDOW: Duration = Duration::from_millis(100);
/// Attempts per batch and URL (the first and the retries).
pub const ATTEMPTS: u32 = 5;
/// Wait before the first retry; doubled before each next one (0.5, 1, 2, 4 s).
pub const FIRST_BACKOFF: Duration = Duration::from_millis(500);
/// Deadline of one attempt (connect, send, answer status).
pub const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(5);
/// Deliveries (batch × URL, with their retries) in progress at once.
pub const MAX_IN_FLIGHT: usize = 32;

/// Webhook counters (relaxed atomics; read by `/metrics`).
#[derive(Debug, Default)]
pub struct WebhookStats {
    /// Events accepted into the queue.
    pub queued: AtomicU64,
    /// Events dropped: the queue was full (or the sender is gone).
    pub dropped: AtomicU64,
    /// Batches a receiver answered with a 2xx status.
    pub sent: AtomicU64,
    /// Attempts that failed and were retried.
    pub retried: AtomicU64,
    /// Batches given up after [`ATTEMPTS`] failed attempts.
    pub failed: AtomicU64,
}

impl WebhookStats {
    /// Appends the Prometheus lines.
    pub fn render(&self, out: &mut String) {
        use std::fmt::Write as _;
        let _ = writeln!(
            out,
            "# HELP quotecast_pusher_webhook_events_total Pusher webhook events by outcome (queued, or dropped because the queue was full).\n# TYPE quotecast_pusher_webhook_events_total counter"
        );
        for (outcome, v) in [("queued", &self.queued), ("dropped", &self.dropped)] {
            let _ = writeln!(
                out,
                "quotecast_pusher_webhook_events_total{{outcome=\"{outcome}\"}} {}",
                v.load(Ordering::Relaxed)
            );
        }
        let _ = writeln!(
            out,
            "# HELP quotecast_pusher_webhook_batches_total Pusher webhook deliveries (batch x URL) by outcome; retried counts failed attempts that were retried.\n# TYPE quotecast_pusher_webhook_batches_total counter"
        );
        for (outcome, v) in [
            ("sent", &self.sent),
            ("retried", &self.retried),
            ("failed", &self.failed),
        ] {
            let _ = writeln!(
                out,
                "quotecast_pusher_webhook_batches_total{{outcome=\"{outcome}\"}} {}",
                v.load(Ordering::Relaxed)
            );
        }
    }
}

/// One queued event.
#[derive(Debug)]
struct Item {
    app: usize,
    name: &'static str,
    event: Value,
}

/// What the sender needs of an app.
struct Target {
    key: String,
    secret: Arc<str>,
    hooks: Vec<Webhook>,
}

/// The shards' side of the webhook queue.
#[derive(Debug)]
pub struct Webhooks {
    tx: Option<mpsc::Sender<Item>>,
    /// Counters.
    pub stats: Arc<WebhookStats>,
}

impl Webhooks {
    /// Starts the sender thread when some app has a webhook; otherwise a no-op queue.
    pub fn start(apps: &[PusherApp]) -> Webhooks {
        let stats = Arc::new(WebhookStats::default());
        if apps.iter().all(|a| a.webhooks.is_empty()) {
            return Webhooks { tx: None, stats };
        }
        let targets: Vec<Target> = apps
            .iter()
            .map(|a| Target {
                key: a.key.clone(),
                secret: a.secret.clone(),
                hooks: a.webhooks.clone(),
            })
            .collect();
        let (tx, rx) = mpsc::channel(QUEUE_EVENTS);
        let st = stats.clone();
        let spawned = std::thread::Builder::new()
            .name("qc-pusher-webhooks".into())
            .spawn(move || {
                let rt = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(rt) => rt,
                    Err(e) => {
                        tracing::error!(error = %e, "cannot build the webhook runtime");
                        return;
                    }
                };
                let local = tokio::task::LocalSet::new();
                local.block_on(&rt, run(rx, targets, st));
            });
        match spawned {
            Ok(_) => Webhooks {
                tx: Some(tx),
                stats,
            },
            Err(e) => {
                tracing::error!(error = %e, "cannot start the webhook thread: webhooks are off");
                Webhooks { tx: None, stats }
            }
        }
    }

    /// Queues an event of app `app` (never waits: a full queue drops it).
    pub fn emit(&self, app: usize, name: &'static str, event: Value) {
        let Some(tx) = &self.tx else {
            return;
        };
        match tx.try_send(Item { app, name, event }) {
            Ok(()) => {
                self.stats.queued.fetch_add(1, Ordering::Relaxed);
            }
            Err(_) => {
                let n = self.stats.dropped.fetch_add(1, Ordering::Relaxed) + 1;
                if n == 1 || n.is_multiple_of(1000) {
                    tracing::warn!(
                        dropped_total = n,
                        event = name,
                        "Pusher webhook queue full: event dropped"
                    );
                }
            }
        }
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// The body of one batch: `{"time_ms": …, "events": […]}`.
fn batch_body<'a>(time_ms: u64, events: impl Iterator<Item = &'a Value>) -> Vec<u8> {
    let events: Vec<&Value> = events.collect();
    serde_json::to_vec(&serde_json::json!({ "time_ms": time_ms, "events": events }))
        .unwrap_or_default()
}

async fn run(mut rx: mpsc::Receiver<Item>, targets: Vec<Target>, stats: Arc<WebhookStats>) {
    let slots = Arc::new(Semaphore::new(MAX_IN_FLIGHT));
    while let Some(first) = rx.recv().await {
        let mut items = vec![first];
        let until = tokio::time::Instant::now() + BATCH_WINDOW;
        while items.len() < BATCH_MAX {
            match tokio::time::timeout_at(until, rx.recv()).await {
                Ok(Some(i)) => items.push(i),
                Ok(None) | Err(_) => break,
            }
        }
        let time_ms = now_ms();
        for (ai, t) in targets.iter().enumerate() {
            for hook in &t.hooks {
                let mut wanted = items
                    .iter()
                    .filter(|i| i.app == ai && hook.wants(i.name))
                    .map(|i| &i.event)
                    .peekable();
                if wanted.peek().is_none() {
                    continue;
                }
                let body = Bytes::from(batch_body(time_ms, wanted));
                let signature = sign::sign(&t.secret, &String::from_utf8_lossy(&body));
                let Ok(permit) = slots.clone().acquire_owned().await else {
                    return;
                };
                tokio::task::spawn_local(deliver(
                    hook.url.clone(),
                    t.key.clone(),
                    signature,
                    body,
                    stats.clone(),
                    permit,
                ));
            }
        }
    }
    // The queue is closed (the server is going): let the deliveries under way finish.
    let _ = slots.acquire_many(MAX_IN_FLIGHT as u32).await;
}

async fn deliver(
    url: String,
    key: String,
    signature: String,
    body: Bytes,
    stats: Arc<WebhookStats>,
    _permit: OwnedSemaphorePermit,
) {
    let mut backoff = FIRST_BACKOFF;
    for attempt in 1..=ATTEMPTS {
        let res = tokio::time::timeout(ATTEMPT_TIMEOUT, post(&url, &key, &signature, &body)).await;
        let why = match res {
            Ok(Ok(status)) if (200..300).contains(&status) => {
                stats.sent.fetch_add(1, Ordering::Relaxed);
                return;
            }
            Ok(Ok(status)) => format!("status {status}"),
            Ok(Err(e)) => e,
            Err(_) => "timed out".to_string(),
        };
        if attempt == ATTEMPTS {
            stats.failed.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(
                url,
                attempts = ATTEMPTS,
                error = why,
                "Pusher webhook batch given up"
            );
            return;
        }
        stats.retried.fetch_add(1, Ordering::Relaxed);
        tracing::debug!(url, attempt, error = why, "Pusher webhook failed; retrying");
        tokio::time::sleep(backoff).await;
        backoff *= 2;
    }
}

/// `http://authority/path` → `(authority, path)`.
fn split_url(url: &str) -> Option<(&str, &str)> {
    let rest = url.strip_prefix("http://")?;
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    (!authority.is_empty()).then_some((authority, path))
}

/// One attempt: the answer's status.
async fn post(url: &str, key: &str, signature: &str, body: &Bytes) -> Result<u16, String> {
    let (authority, path) = split_url(url).ok_or("bad URL")?;
    let stream = tokio::net::TcpStream::connect(authority)
        .await
        .map_err(|e| e.to_string())?;
    let _ = stream.set_nodelay(true);
    let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| e.to_string())?;
    tokio::task::spawn_local(async move {
        let _ = conn.await;
    });
    let req = Request::builder()
        .method(Method::POST)
        .uri(path)
        .header(hyper::header::HOST, authority)
        .header(hyper::header::CONTENT_TYPE, "application/json")
        .header("X-Pusher-Key", key)
        .header("X-Pusher-Signature", signature)
        .body(Full::new(body.clone()))
        .map_err(|e| e.to_string())?;
    let resp = send.send_request(req).await.map_err(|e| e.to_string())?;
    Ok(resp.status().as_u16())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_are_pusher_batches() {
        let evs = [
            serde_json::json!({"name": "channel_occupied", "channel": "a"}),
            serde_json::json!({"name": "member_added", "channel": "presence-b", "user_id": "1"}),
        ];
        let body = batch_body(1234, evs.iter());
        let v: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["time_ms"], 1234);
        assert_eq!(v["events"][1]["user_id"], "1");
        assert_eq!(split_url("http://h:1/x/y"), Some(("h:1", "/x/y")));
        assert_eq!(split_url("http://h:1"), Some(("h:1", "/")));
        assert_eq!(split_url("https://h/"), None);
    }

    #[test]
    fn a_full_queue_drops_and_counts() {
        let (tx, _rx) = mpsc::channel(2);
        let w = Webhooks {
            tx: Some(tx),
            stats: Arc::default(),
        };
        for _ in 0..5 {
            w.emit(0, "channel_occupied", Value::Null);
        }
        assert_eq!(w.stats.queued.load(Ordering::Relaxed), 2);
        assert_eq!(w.stats.dropped.load(Ordering::Relaxed), 3);
        let mut text = String::new();
        w.stats.render(&mut text);
        assert!(text.contains("quotecast_pusher_webhook_events_total{outcome=\"dropped\"} 3"));
    }
}
