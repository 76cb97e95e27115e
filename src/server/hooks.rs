//! Backend hooks (server layer): HTTP calls from a shard to the application's backend, so
//! that the backend decides what a token cannot (seeds/001's `user_owns_challenge` at join
//! time). A call runs as a task on the shard's own runtime and its answer is applied on the
//! shard when it arrives: the shard never blocks on the backend.
//!
//! Every call has a deadline ([`HooksConfig::timeout`]), a bound on calls in flight per
//! shard (past it the client gets `backend_unavailable` at once instead of a queue), and a
//! circuit breaker per URL and shard: after `breaker_failures` failures in a row the URL is
//! not called for `breaker_cooldown`, and clients get `backend_unavailable` immediately.
//! Subscribe answers are cached per (user, channel) for `cache_ttl`.
//!
//! The wire contract (docs/hooks.md): `POST URL` with a JSON body, `Content-Type:
//! application/json`; the backend answers `200` with a JSON object. Plain `http://` only:
//! the backend is expected on the private network next to quotecast.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::Value;

pub use crate::config::HooksConfig;

/// Largest backend answer read (bytes); a larger one is a failure.
pub const MAX_ANSWER_BYTES: usize = 64 * 1024;
/// Most cached subscribe answers per shard; the cache is emptied when it is full (simple,
/// and bounded: an entry is ~100 bytes).
pub const MAX_CACHE_ENTRIES: usize = 65_536;

/// Why a hook call gave no answer; the text goes to the client after
/// `backend_unavailable`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HookError {
    /// The URL's breaker is open after repeated failures.
    #[error("the backend is failing; not asked for a few seconds")]
    BreakerOpen,
    /// Too many calls in flight on this shard.
    #[error("too many backend calls in flight")]
    Busy,
    /// No answer within the deadline.
    #[error("the backend did not answer in time")]
    Timeout,
    /// Connection refused, reset, bad URL.
    #[error("the backend could not be reached")]
    Unreachable,
    /// A status other than 200, or a body that is not a JSON object.
    #[error("the backend gave a bad answer")]
    BadAnswer,
}

/// Process-wide hook counters (relaxed atomics; read by `/metrics`).
#[derive(Debug, Default)]
pub struct HookStats {
    /// Calls answered by the backend.
    pub ok: AtomicU64,
    /// Calls that failed (timeout, unreachable, bad answer).
    pub failed: AtomicU64,
    /// Calls not made: breaker open or too many in flight.
    pub rejected: AtomicU64,
    /// Subscribe answers served from the cache.
    pub cache_hits: AtomicU64,
}

impl HookStats {
    /// Appends the Prometheus lines.
    pub fn render(&self, out: &mut String) {
        use std::fmt::Write as _;
        let _ = writeln!(
            out,
            "# HELP quotecast_hook_calls_total Backend hook calls by outcome.\n# TYPE quotecast_hook_calls_total counter"
        );
        for (outcome, v) in [
            ("ok", &self.ok),
            ("failed", &self.failed),
            ("rejected", &self.rejected),
        ] {
            let _ = writeln!(
                out,
                "quotecast_hook_calls_total{{outcome=\"{outcome}\"}} {}",
                v.load(Ordering::Relaxed)
            );
        }
        let _ = writeln!(
            out,
            "# HELP quotecast_hook_cache_hits_total Subscribe hook answers served from the cache.\n# TYPE quotecast_hook_cache_hits_total counter\nquotecast_hook_cache_hits_total {}",
            self.cache_hits.load(Ordering::Relaxed)
        );
    }
}

#[derive(Debug, Default)]
struct Breaker {
    failures: u32,
    open_until: Option<Instant>,
}

/// (user, channel) of a cached subscribe answer.
type CacheKey = (Arc<str>, Arc<str>);

/// One shard's hook state (not `Send`: lives in the shard's context).
#[derive(Debug, Default)]
pub struct ShardHooks {
    in_flight: Cell<usize>,
    breakers: RefCell<HashMap<Arc<str>, Breaker>>,
    cache: RefCell<HashMap<CacheKey, (Value, Instant)>>,
}

/// Decrements the in-flight count when a call ends, however it ends.
struct InFlight<'a>(&'a Cell<usize>);
impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.set(self.0.get().saturating_sub(1));
    }
}

impl ShardHooks {
    /// A cached answer for `(user, channel)`, if fresh.
    pub fn cached(&self, user: &Arc<str>, channel: &Arc<str>, now: Instant) -> Option<Value> {
        let cache = self.cache.borrow();
        let (v, until) = cache.get(&(user.clone(), channel.clone()))?;
        (*until > now).then(|| v.clone())
    }

    /// Remembers an answer until `until`.
    pub fn remember(&self, user: Arc<str>, channel: Arc<str>, v: Value, until: Instant) {
        let mut cache = self.cache.borrow_mut();
        if cache.len() >= MAX_CACHE_ENTRIES {
            cache.clear();
        }
        cache.insert((user, channel), (v, until));
    }

    /// Calls `url` with `body` under the deadline, the in-flight bound and the breaker.
    pub async fn call(
        &self,
        cfg: &HooksConfig,
        stats: &HookStats,
        url: &Arc<str>,
        body: &Value,
    ) -> Result<Value, HookError> {
        let now = Instant::now();
        if let Some(b) = self.breakers.borrow().get(url) {
            if b.open_until.is_some_and(|t| t > now) {
                stats.rejected.fetch_add(1, Ordering::Relaxed);
                return Err(HookError::BreakerOpen);
            }
        }
        if self.in_flight.get() >= cfg.max_in_flight {
            stats.rejected.fetch_add(1, Ordering::Relaxed);
            return Err(HookError::Busy);
        }
        self.in_flight.set(self.in_flight.get() + 1);
        let guard = InFlight(&self.in_flight);
        let result = match tokio::time::timeout(cfg.timeout, post_json(url, body)).await {
            Ok(r) => r,
            Err(_) => Err(HookError::Timeout),
        };
        drop(guard);
        let mut breakers = self.breakers.borrow_mut();
        let b = breakers.entry(url.clone()).or_default();
        match &result {
            Ok(_) => {
                stats.ok.fetch_add(1, Ordering::Relaxed);
                *b = Breaker::default();
            }
            Err(e) => {
                stats.failed.fetch_add(1, Ordering::Relaxed);
                b.failures += 1;
                if b.failures >= cfg.breaker_failures {
                    tracing::warn!(url = %url, error = %e, "backend hook failing: breaker open");
                    b.open_until = Some(Instant::now() + cfg.breaker_cooldown);
                    b.failures = 0;
                } else {
                    tracing::info!(url = %url, error = %e, "backend hook call failed");
                }
            }
        }
        result
    }
}

/// `http://host:port/path` → (`host:port`, `/path`).
pub fn split_url(url: &str) -> Option<(&str, &str)> {
    let rest = url.strip_prefix("http://")?;
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    (!authority.is_empty()).then_some((authority, path))
}

async fn post_json(url: &str, body: &Value) -> Result<Value, HookError> {
    let (authority, path) = split_url(url).ok_or(HookError::Unreachable)?;
    let stream = tokio::net::TcpStream::connect(authority)
        .await
        .map_err(|_| HookError::Unreachable)?;
    let _ = stream.set_nodelay(true);
    let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|_| HookError::Unreachable)?;
    tokio::task::spawn_local(async move {
        let _ = conn.await;
    });
    let bytes = serde_json::to_vec(body).unwrap_or_default();
    let req = Request::builder()
        .method(Method::POST)
        .uri(path)
        .header(hyper::header::HOST, authority)
        .header(hyper::header::CONTENT_TYPE, "application/json")
        .body(Full::new(Bytes::from(bytes)))
        .map_err(|_| HookError::Unreachable)?;
    let resp = send
        .send_request(req)
        .await
        .map_err(|_| HookError::Unreachable)?;
    if resp.status() != StatusCode::OK {
        return Err(HookError::BadAnswer);
    }
    let body = Limited::new(resp.into_body(), MAX_ANSWER_BYTES)
        .collect()
        .await
        .map_err(|_| HookError::BadAnswer)?
        .to_bytes();
    match serde_json::from_slice::<Value>(&body) {
        Ok(v) if v.is_object() => Ok(v),
        _ => Err(HookError::BadAnswer),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn urls() {
        assert_eq!(
            split_url("http://127.0.0.1:9000/qc/subscribe"),
            Some(("127.0.0.1:9000", "/qc/subscribe"))
        );
        assert_eq!(split_url("http://backend:80"), Some(("backend:80", "/")));
        assert_eq!(split_url("https://x/"), None);
        assert_eq!(split_url("http:///x"), None);
    }

    #[tokio::test(flavor = "current_thread")]
    async fn breaker_opens_after_failures_and_rejects_fast() {
        let local = tokio::task::LocalSet::new();
        local
            .run_until(async {
                let cfg = HooksConfig {
                    breaker_failures: 2,
                    timeout: Duration::from_millis(500),
                    ..HooksConfig::default()
                };
                let stats = HookStats::default();
                let hooks = ShardHooks::default();
                // A port nothing listens on: bind, note it, close.
                let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
                let url: Arc<str> = format!("http://{}/x", l.local_addr().unwrap()).into();
                drop(l);
                let body = serde_json::json!({});
                for _ in 0..2 {
                    assert_eq!(
                        hooks.call(&cfg, &stats, &url, &body).await,
                        Err(HookError::Unreachable)
                    );
                }
                assert_eq!(
                    hooks.call(&cfg, &stats, &url, &body).await,
                    Err(HookError::BreakerOpen)
                );
                assert_eq!(stats.failed.load(Ordering::Relaxed), 2);
                assert_eq!(stats.rejected.load(Ordering::Relaxed), 1);
            })
            .await;
    }

    #[test]
    fn cache_expires() {
        let h = ShardHooks::default();
        let (u, c): (Arc<str>, Arc<str>) = ("42".into(), "challenge_7".into());
        let now = Instant::now();
        h.remember(
            u.clone(),
            c.clone(),
            Value::Bool(true),
            now + Duration::from_secs(1),
        );
        assert_eq!(h.cached(&u, &c, now), Some(Value::Bool(true)));
        assert_eq!(h.cached(&u, &c, now + Duration::from_secs(2)), None);
    }
}
