//! Server configuration: a validated [`Config`] with the built-in defaults that make
//! `quotecast serve` work with no configuration at all.

use std::net::SocketAddr;
use std::time::Duration;

use crate::auth::JwtConfig;
use crate::engine::channel::ChannelRules;
use crate::engine::outbound::QueueLimits;

/// Everything the server needs to start.
#[derive(Debug, Clone)]
pub struct Config {
    /// Address for WebSocket and HTTP. Default `127.0.0.1:8080`.
    pub listen: SocketAddr,
    /// Shards (threads), one per core by default.
    pub shards: usize,
    /// Channel patterns, first match wins.
    pub rules: ChannelRules,
    /// Server ping interval; a peer silent for two intervals is dropped. Default 30 s
    /// (the seeds' heartbeat). Shorter finds dead peers sooner at the cost of traffic.
    pub heartbeat: Duration,
    /// Largest client message (op, publish batch, HTTP body). Default 256 KiB: a
    /// 1,024-event publish batch of typical quotes fits; a hostile client can make the
    /// server hold at most this much for its partial frame.
    pub max_message_bytes: usize,
    /// Per-connection bound on queued non-conflated frames. Default 4,096 frames / 1 MiB:
    /// several seconds of a busy private stream; past it the client is a slow consumer.
    pub queue: QueueLimits,
    /// How long shutdown waits for clients' queues to flush. Default 5 s.
    pub drain: Duration,
    /// Reconnect delay suggested to clients at shutdown. Default 1 s.
    pub reconnect_hint: Duration,
    /// Messages each shard's inbox holds. Default 16,384 (each may carry a batch).
    pub inbox_capacity: usize,
    /// Open sockets (HTTP and WebSocket) the server accepts at once. Default 100,000.
    pub max_connections: usize,
    /// Most subscriptions one connection may hold. Default 1,024: a trading UI watches tens
    /// to hundreds of channels; the cap bounds what one client can make the server hold.
    pub max_subscriptions: usize,
    /// Authentication, authorization and per-client limits.
    pub access: AccessConfig,
    /// Demo mode only: `(user, token)` pairs served at `GET /demo/token`.
    pub demo_tokens: Vec<(String, String)>,
    /// Kernel send buffer per socket (`SO_SNDBUF`), or 0 for the kernel's autotuning.
    /// Default 256 KiB. Autotuning lets a slow reader's kernel buffer grow to several MiB of
    /// stale quotes that conflation can no longer replace; a fixed buffer keeps the backlog
    /// in the server's conflation slots, where the newest quote wins. 256 KiB still carries
    /// 2.5 MB/s to a client 100 ms away, far above a trading UI's needs.
    pub socket_send_buffer: usize,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            shards: std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1),
            rules: ChannelRules::defaults(),
            heartbeat: Duration::from_secs(30),
            max_message_bytes: 256 * 1024,
            queue: QueueLimits {
                max_frames: 4096,
                max_bytes: 1 << 20,
            },
            drain: Duration::from_secs(5),
            reconnect_hint: Duration::from_secs(1),
            inbox_capacity: 16 * 1024,
            max_connections: 100_000,
            socket_send_buffer: 256 * 1024,
            max_subscriptions: 1024,
            access: AccessConfig::default(),
            demo_tokens: Vec::new(),
        }
    }
}

/// Who may connect and what they may do. Without configuration nothing is open: private
/// channels need a token, publishing needs the publisher role or an API key, and anonymous
/// connections are refused. `serve --demo` opens public channels and publishing to
/// anonymous clients, and says so.
#[derive(Debug, Clone)]
pub struct AccessConfig {
    /// Token verification keys and checks.
    pub jwt: JwtConfig,
    /// Anonymous connections may subscribe to public channels. Default false.
    pub allow_anonymous: bool,
    /// Anonymous clients may publish (WebSocket and HTTP). Only for demos. Default false.
    pub anonymous_publish: bool,
    /// Keys accepted by `POST /api/publish` (`Authorization: Bearer KEY` or `X-Api-Key`).
    pub api_keys: Vec<String>,
    /// A connection without a token must send an `auth` op within this. Default 10 s.
    pub auth_timeout: Duration,
    /// Open WebSocket connections per user (token `sub`). Default 5 (the seeds' limit).
    pub max_connections_per_user: usize,
    /// Client ops per second per connection (token bucket), and the burst. Publishers are
    /// exempt: a feed handler publishes thousands of events a second. Default 50/s, 100.
    pub ops_per_sec: f64,
    /// Burst for `ops_per_sec`.
    pub ops_burst: f64,
    /// Rate-limited ops tolerated before the connection is closed with 4029. Default 100.
    pub max_rate_violations: u32,
    /// New connections per second per client IP, and the burst. Default 20/s, 100.
    pub connects_per_ip_per_sec: f64,
    /// Burst for `connects_per_ip_per_sec`.
    pub connects_per_ip_burst: f64,
    /// Apply the per-IP connection limit to loopback clients too. Default false: a local
    /// reverse proxy or load tester connects from 127.0.0.1.
    pub limit_loopback: bool,
    /// Allowed browser `Origin`s; empty allows any. Requests without an `Origin` header
    /// (non-browser clients) are not affected.
    pub origins: Vec<String>,
    /// A connection with no subscription and no op for this long is closed with 4011.
    /// Default 5 minutes.
    pub idle_timeout: Duration,
}

impl Default for AccessConfig {
    fn default() -> Self {
        AccessConfig {
            jwt: JwtConfig {
                leeway_secs: 5,
                ..JwtConfig::default()
            },
            allow_anonymous: false,
            anonymous_publish: false,
            api_keys: Vec::new(),
            auth_timeout: Duration::from_secs(10),
            max_connections_per_user: 5,
            ops_per_sec: 50.0,
            ops_burst: 100.0,
            max_rate_violations: 100,
            connects_per_ip_per_sec: 20.0,
            connects_per_ip_burst: 100.0,
            limit_loopback: false,
            origins: Vec::new(),
            idle_timeout: Duration::from_secs(300),
        }
    }
}

impl AccessConfig {
    /// Everything open for anonymous clients: the demo and tests.
    pub fn open() -> Self {
        AccessConfig {
            allow_anonymous: true,
            anonymous_publish: true,
            ..AccessConfig::default()
        }
    }
}

/// A setting out of range.
#[derive(Debug, thiserror::Error)]
#[error("invalid configuration: {0}")]
pub struct ConfigError(pub String);

impl Config {
    /// Checks ranges that would make the server misbehave.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let err = |m: &str| Err(ConfigError(m.to_string()));
        if self.shards == 0 || self.shards > 1024 {
            return err("shards must be 1..=1024");
        }
        if self.heartbeat < Duration::from_millis(10) {
            return err("heartbeat must be at least 10 ms");
        }
        if self.max_message_bytes < 1024 {
            return err("max_message_bytes must be at least 1024");
        }
        if self.queue.max_frames < 16 || self.queue.max_bytes < 64 * 1024 {
            return err("queue limits must allow at least 16 frames and 64 KiB");
        }
        if self.inbox_capacity < 64 {
            return err("inbox_capacity must be at least 64");
        }
        Ok(())
    }
}
