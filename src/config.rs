//! Server configuration: the validated [`Config`] with the built-in defaults that make
//! `quotecast serve` work with no configuration at all, and the TOML file it can be read
//! from.
//!
//! "Parse, don't validate": a file is deserialized into [`RawConfig`] (every field
//! optional through `#[serde(default)]`, unknown keys refused), command-line flags and
//! `QUOTECAST_*` environment variables are laid over it by `main.rs`, and
//! [`RawConfig::into_config`] turns the result into a [`Config`] or says which option is
//! wrong. [`DEFAULT_TOML`] (printed by `quotecast config --print-default`) documents every
//! option with its default and its trade-off; a unit test keeps it equal to
//! [`RawConfig::default`], and another keeps that equal to [`Config::default`].

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;

use crate::auth::{ChannelAccess, JwtConfig};
use crate::cluster::config::{ClusterConfig, RawCluster};
use crate::demo::DemoConfig;
use crate::engine::channel::{ChannelKind, ChannelPolicy, ChannelRule, ChannelRules};
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
    /// When a stream subscriber is a slow consumer: its oldest unsent frame has waited
    /// longer than `max_lag` (default 5 s), or its queue passes a hard cap (default 65,536
    /// frames / 16 MiB, for memory safety only: far above any burst).
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
    /// Most bytes a socket may hold in the kernel not yet sent (`TCP_NOTSENT_LOWAT`), or 0
    /// to leave the kernel's default (no limit). Default 16 KiB. Past it a write returns
    /// "would block" and the backlog stays in the server's queue, where it costs no kernel
    /// memory, conflation still replaces stale quotes and the queue limits apply. Without
    /// it a reader that stopped takes a full send buffer of kernel memory, and since a
    /// shard's writes share the kernel's page fragments, those bytes pin whole pages that
    /// other sockets' data also used (measured: 110 MB held by 200 stopped clients pinned
    /// ~800 MB; `perf/README.md`, slow consumers). Data in flight is not counted, so a
    /// healthy client's throughput does not depend on it.
    pub socket_notsent_lowat: usize,
    /// The built-in simulated market, when `Some` (`serve --demo`). Default off.
    pub demo: Option<DemoConfig>,
    /// Log output.
    pub log: LogConfig,
    /// Cluster mode on Redis, when `Some` (`--redis`). Default off: a single node.
    pub cluster: Option<ClusterConfig>,
    /// Backend hooks (`[hooks]` and the namespaces' `subscribe_hook`). Default: none.
    pub hooks: HooksConfig,
    /// Per-namespace op rate limits (`[[rate_limits]]`), in file order. Default: none.
    pub rate_limits: Vec<OpLimit>,
    /// Pusher-compatible applications (`[[pusher.apps]]`; `docs/pusher.md`). Default none:
    /// `/app/{key}` and `/apps/{id}/...` answer "app does not exist".
    pub pusher_apps: Vec<crate::pusher::config::PusherApp>,
}

/// Which op a [`OpLimit`] counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LimitedOp {
    /// Each channel of a `subscribe` op.
    Subscribe,
    /// Each channel of an `unsubscribe` op.
    Unsubscribe,
    /// Each event of a WebSocket `publish` op.
    Publish,
}

impl LimitedOp {
    /// The op's name.
    pub fn as_str(self) -> &'static str {
        match self {
            LimitedOp::Subscribe => "subscribe",
            LimitedOp::Unsubscribe => "unsubscribe",
            LimitedOp::Publish => "publish",
        }
    }
}

/// One `[[rate_limits]]` rule: at most `count` of `op` per `per` on each connection, for
/// channels of the namespace `namespace` (every namespace when `None`).
#[derive(Debug, Clone, PartialEq)]
pub struct OpLimit {
    /// The op counted.
    pub op: LimitedOp,
    /// The `[[channels]]` pattern whose channels count, or all.
    pub namespace: Option<String>,
    /// How many.
    pub count: u32,
    /// Per this long.
    pub per: Duration,
}

/// `[[rate_limits]]` as written.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawOpLimit {
    /// `op`.
    pub op: LimitedOp,
    /// `namespace`: a `[[channels]]` pattern, as written there.
    #[serde(default)]
    pub namespace: Option<String>,
    /// `count`.
    pub count: u32,
    /// `per_secs`.
    pub per_secs: u64,
}

/// Backend hook settings (`[hooks]`), shared by every hook, and the namespaces' hook URLs.
#[derive(Debug, Clone, PartialEq)]
pub struct HooksConfig {
    /// Deadline of one call, connect included. Default 2 s.
    pub timeout: Duration,
    /// Calls in flight per shard; more get `backend_unavailable` at once. Default 64.
    pub max_in_flight: usize,
    /// How long a subscribe answer (allow or deny) is reused for the same user and channel.
    /// Default 30 s; 0 turns the cache off.
    pub cache_ttl: Duration,
    /// Failures in a row that open a URL's circuit breaker. Default 5.
    pub breaker_failures: u32,
    /// How long an open breaker refuses calls before trying again. Default 5 s.
    pub breaker_cooldown: Duration,
    /// `subscribe_hook` URL per namespace pattern (namespaces with `access = "hook"`).
    pub subscribe: Vec<(String, Arc<str>)>,
    /// `connect_url`: the backend that checks `{"op":"auth","data":{...}}` credentials.
    pub connect: Option<Arc<str>>,
    /// `rpc_url`: the backend that answers client ops the server does not know.
    pub rpc: Option<Arc<str>>,
}

impl Default for HooksConfig {
    fn default() -> Self {
        HooksConfig {
            timeout: Duration::from_secs(2),
            max_in_flight: 64,
            cache_ttl: Duration::from_secs(30),
            breaker_failures: 5,
            breaker_cooldown: Duration::from_secs(5),
            subscribe: Vec::new(),
            connect: None,
            rpc: None,
        }
    }
}

impl HooksConfig {
    /// The subscribe hook of the namespace `pattern`.
    pub fn subscribe_url(&self, pattern: &str) -> Option<&Arc<str>> {
        self.subscribe
            .iter()
            .find(|(p, _)| p == pattern)
            .map(|(_, u)| u)
    }
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
                max_frames: 65_536,
                max_bytes: 16 << 20,
                max_lag: Duration::from_secs(5),
            },
            drain: Duration::from_secs(5),
            reconnect_hint: Duration::from_secs(1),
            inbox_capacity: 16 * 1024,
            max_connections: 100_000,
            socket_send_buffer: 256 * 1024,
            socket_notsent_lowat: 16 * 1024,
            max_subscriptions: 1024,
            access: AccessConfig::default(),
            demo_tokens: Vec::new(),
            demo: None,
            log: LogConfig::default(),
            cluster: None,
            hooks: HooksConfig::default(),
            rate_limits: Vec::new(),
            pusher_apps: Vec::new(),
        }
    }
}

/// Log output settings (the subscriber itself is installed by `main.rs`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogConfig {
    /// Line format on stderr. Default text.
    pub format: LogFormat,
    /// `tracing` filter used when `RUST_LOG` is not set. Default `info`: one line per
    /// connection opened and closed; `warn` for very high connection churn.
    pub filter: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            format: LogFormat::Text,
            filter: "info".into(),
        }
    }
}

/// Log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line, for log shippers.
    Json,
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

/// A configuration that cannot be used. Each variant says where to look.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// An option has a value the server cannot run with (from flags, environment or
    /// code): fix the named option.
    #[error("invalid configuration: {key}: {reason}")]
    Invalid {
        /// The option, as spelled in the file (`queue.max_frames`, `channels[2]`).
        key: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The file is malformed or holds a bad value: fix that line.
    #[error("{file}:{line}:{col}: {reason}")]
    File {
        /// The file as given.
        file: String,
        /// 1-based line.
        line: usize,
        /// 1-based column.
        col: usize,
        /// What is wrong.
        reason: String,
    },
    /// The file (or a key file it names) cannot be read: check the path and permissions.
    #[error("cannot read {file}: {source}")]
    Read {
        /// The path.
        file: String,
        /// The I/O error.
        source: std::io::Error,
    },
}

fn invalid(key: &str, reason: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key: key.to_string(),
        reason: reason.into(),
    }
}

impl Config {
    /// Checks ranges that would make the server misbehave.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.shards == 0 || self.shards > 1024 {
            return Err(invalid("shards", "must be 1..=1024"));
        }
        if self.heartbeat < Duration::from_millis(10) {
            return Err(invalid("heartbeat_ms", "must be at least 10"));
        }
        if self.max_message_bytes < 1024 {
            return Err(invalid("max_message_bytes", "must be at least 1024"));
        }
        if self.queue.max_frames < 16 {
            return Err(invalid("queue.max_frames", "must be at least 16"));
        }
        if self.queue.max_bytes < 64 * 1024 {
            return Err(invalid(
                "queue.max_bytes",
                "must be at least 65536 (64 KiB)",
            ));
        }
        if self.queue.max_lag < Duration::from_millis(100) {
            return Err(invalid(
                "queue.slow_consumer_lag_ms",
                "must be at least 100",
            ));
        }
        if self.inbox_capacity < 64 {
            return Err(invalid("inbox_capacity", "must be at least 64"));
        }
        if self.max_connections == 0 {
            return Err(invalid("max_connections", "must be at least 1"));
        }
        if self.max_subscriptions == 0 {
            return Err(invalid("max_subscriptions", "must be at least 1"));
        }
        let a = &self.access;
        if a.max_connections_per_user == 0 {
            return Err(invalid(
                "limits.max_connections_per_user",
                "must be at least 1",
            ));
        }
        let positive = |v: f64| v.is_finite() && v > 0.0;
        if !positive(a.ops_per_sec) {
            return Err(invalid("limits.ops_per_sec", "must be a positive number"));
        }
        if !positive(a.ops_burst) || a.ops_burst < 1.0 {
            return Err(invalid("limits.ops_burst", "must be at least 1"));
        }
        if !positive(a.connects_per_ip_per_sec) {
            return Err(invalid(
                "limits.connects_per_ip_per_sec",
                "must be a positive number",
            ));
        }
        if !positive(a.connects_per_ip_burst) || a.connects_per_ip_burst < 1.0 {
            return Err(invalid(
                "limits.connects_per_ip_burst",
                "must be at least 1",
            ));
        }
        Ok(())
    }
}

// ---- the file -------------------------------------------------------------------------

/// The configuration file as written: every key optional (a missing key takes its
/// default), unknown keys refused so that a typo is an error rather than a silently
/// ignored setting. Turned into a [`Config`] by [`RawConfig::into_config`].
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RawConfig {
    /// `listen`.
    pub listen: SocketAddr,
    /// `shards`; 0 means one per core.
    pub shards: usize,
    /// `heartbeat_ms`.
    pub heartbeat_ms: u64,
    /// `max_message_bytes`.
    pub max_message_bytes: usize,
    /// `max_subscriptions`.
    pub max_subscriptions: usize,
    /// `max_connections`.
    pub max_connections: usize,
    /// `inbox_capacity`.
    pub inbox_capacity: usize,
    /// `socket_send_buffer`.
    pub socket_send_buffer: usize,
    /// `socket_notsent_lowat`.
    pub socket_notsent_lowat: usize,
    /// `[queue]`.
    pub queue: RawQueue,
    /// `[shutdown]`.
    pub shutdown: RawShutdown,
    /// `[auth]`.
    pub auth: RawAuth,
    /// `[limits]`.
    pub limits: RawLimits,
    /// `[log]`.
    pub log: RawLog,
    /// `[demo]`.
    pub demo: RawDemo,
    /// `[cluster]`.
    pub cluster: RawCluster,
    /// `[hooks]`.
    pub hooks: RawHooks,
    /// `[[rate_limits]]`: per-namespace op limits.
    pub rate_limits: Vec<RawOpLimit>,
    /// `[[channels]]`, first match wins; when present, replaces the whole default list.
    pub channels: Vec<RawChannel>,
    /// `[pusher]` with its `[[pusher.apps]]`.
    pub pusher: crate::pusher::config::RawPusher,
}

/// `[queue]`: when a stream subscriber is a slow consumer.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RawQueue {
    /// `slow_consumer_lag_ms`.
    pub slow_consumer_lag_ms: u64,
    /// `max_frames`.
    pub max_frames: usize,
    /// `max_bytes`.
    pub max_bytes: usize,
}

/// `[shutdown]`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RawShutdown {
    /// `drain_ms`.
    pub drain_ms: u64,
    /// `reconnect_hint_ms`.
    pub reconnect_hint_ms: u64,
}

/// `[auth]`: token keys and anonymous access.
#[derive(Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RawAuth {
    /// `allow_anonymous`.
    pub allow_anonymous: bool,
    /// `anonymous_publish`.
    pub anonymous_publish: bool,
    /// `api_keys` (prefer `QUOTECAST_API_KEYS`).
    pub api_keys: Vec<String>,
    /// `jwt_secret` (prefer `QUOTECAST_JWT_SECRET`).
    pub jwt_secret: Option<String>,
    /// `jwt_rs256_public_key`: a PEM file.
    pub jwt_rs256_public_key: Option<PathBuf>,
    /// `jwt_es256_public_key`: a PEM file.
    pub jwt_es256_public_key: Option<PathBuf>,
    /// `jwt_issuer`.
    pub jwt_issuer: Option<String>,
    /// `jwt_audience`.
    pub jwt_audience: Option<String>,
    /// `leeway_secs`.
    pub leeway_secs: u64,
    /// `jwt_user_claim`: the claim naming the user (`sub`).
    pub jwt_user_claim: String,
    /// `jwt_grants_claim`: the claim listing channel grants (`channels`).
    pub jwt_grants_claim: String,
    /// `auth_timeout_ms`.
    pub auth_timeout_ms: u64,
}

impl std::fmt::Debug for RawAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the secret or the API keys.
        f.debug_struct("RawAuth")
            .field("allow_anonymous", &self.allow_anonymous)
            .field("anonymous_publish", &self.anonymous_publish)
            .field("api_keys", &self.api_keys.len())
            .field("jwt_secret", &self.jwt_secret.as_ref().map(|_| "<set>"))
            .field("jwt_rs256_public_key", &self.jwt_rs256_public_key)
            .field("jwt_es256_public_key", &self.jwt_es256_public_key)
            .field("jwt_issuer", &self.jwt_issuer)
            .field("jwt_audience", &self.jwt_audience)
            .field("leeway_secs", &self.leeway_secs)
            .field("jwt_user_claim", &self.jwt_user_claim)
            .field("jwt_grants_claim", &self.jwt_grants_claim)
            .field("auth_timeout_ms", &self.auth_timeout_ms)
            .finish()
    }
}

/// `[limits]`: per-client limits.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RawLimits {
    /// `max_connections_per_user`.
    pub max_connections_per_user: usize,
    /// `ops_per_sec`.
    pub ops_per_sec: f64,
    /// `ops_burst`; unset means twice `ops_per_sec`.
    pub ops_burst: Option<f64>,
    /// `max_rate_violations`.
    pub max_rate_violations: u32,
    /// `connects_per_ip_per_sec`.
    pub connects_per_ip_per_sec: f64,
    /// `connects_per_ip_burst`.
    pub connects_per_ip_burst: f64,
    /// `limit_loopback`.
    pub limit_loopback: bool,
    /// `idle_timeout_secs`.
    pub idle_timeout_secs: u64,
    /// `origins`.
    pub origins: Vec<String>,
}

/// `[log]`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RawLog {
    /// `format`.
    pub format: LogFormat,
    /// `filter`.
    pub filter: String,
}

/// `[demo]`: the built-in simulated market.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RawDemo {
    /// `enabled`.
    pub enabled: bool,
    /// `symbols`.
    pub symbols: usize,
    /// `quotes_per_sec`.
    pub quotes_per_sec: u32,
}

/// One `[[channels]]` entry.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawChannel {
    /// `pattern`: literal bytes, `*` (one or more bytes) and `{user}` (one segment).
    pub pattern: String,
    /// `kind`, default `stream`.
    #[serde(default)]
    pub kind: RawKind,
    /// `history`, default 100.
    #[serde(default = "default_history")]
    pub history: usize,
    /// `access`, default `public`.
    #[serde(default)]
    pub access: RawAccess,
    /// `subscribe_hook`: the backend URL asked whether a user may join (`access = "hook"`).
    #[serde(default)]
    pub subscribe_hook: Option<String>,
}

/// `[hooks]`: backend hook calls.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RawHooks {
    /// `timeout_ms`.
    pub timeout_ms: u64,
    /// `max_in_flight` (per shard).
    pub max_in_flight: usize,
    /// `cache_ttl_ms`.
    pub cache_ttl_ms: u64,
    /// `breaker_failures`.
    pub breaker_failures: u32,
    /// `breaker_cooldown_ms`.
    pub breaker_cooldown_ms: u64,
    /// `connect_url`; empty for none.
    pub connect_url: String,
    /// `rpc_url`; empty for none.
    pub rpc_url: String,
}

fn default_history() -> usize {
    100
}

/// `kind` of a channel pattern.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RawKind {
    /// Latest value wins for a subscriber that is behind.
    Conflated,
    /// Every event in order.
    #[default]
    Stream,
}

/// `access` of a channel pattern.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RawAccess {
    /// Anyone admitted.
    #[default]
    Public,
    /// The `{user}` of the pattern, or a token granting it.
    Owner,
    /// Tokens whose `channels` claim grants it.
    Grant,
    /// Authenticated users the namespace's `subscribe_hook` accepts.
    Hook,
}

impl Default for RawConfig {
    fn default() -> Self {
        let c = Config::default();
        let a = AccessConfig::default();
        let d = DemoConfig::default();
        let ch = |pattern: &str, kind, history, access| RawChannel {
            pattern: pattern.into(),
            kind,
            history,
            access,
            subscribe_hook: None,
        };
        use RawAccess::*;
        use RawKind::*;
        RawConfig {
            listen: c.listen,
            shards: 0,
            heartbeat_ms: c.heartbeat.as_millis() as u64,
            max_message_bytes: c.max_message_bytes,
            max_subscriptions: c.max_subscriptions,
            max_connections: c.max_connections,
            inbox_capacity: c.inbox_capacity,
            socket_send_buffer: c.socket_send_buffer,
            socket_notsent_lowat: c.socket_notsent_lowat,
            queue: RawQueue {
                slow_consumer_lag_ms: c.queue.max_lag.as_millis() as u64,
                max_frames: c.queue.max_frames,
                max_bytes: c.queue.max_bytes,
            },
            shutdown: RawShutdown {
                drain_ms: c.drain.as_millis() as u64,
                reconnect_hint_ms: c.reconnect_hint.as_millis() as u64,
            },
            auth: RawAuth {
                allow_anonymous: a.allow_anonymous,
                anonymous_publish: a.anonymous_publish,
                api_keys: Vec::new(),
                jwt_secret: None,
                jwt_rs256_public_key: None,
                jwt_es256_public_key: None,
                jwt_issuer: None,
                jwt_audience: None,
                leeway_secs: a.jwt.leeway_secs,
                jwt_user_claim: a.jwt.user_claim.clone(),
                jwt_grants_claim: a.jwt.grants_claim.clone(),
                auth_timeout_ms: a.auth_timeout.as_millis() as u64,
            },
            limits: RawLimits {
                max_connections_per_user: a.max_connections_per_user,
                ops_per_sec: a.ops_per_sec,
                ops_burst: None,
                max_rate_violations: a.max_rate_violations,
                connects_per_ip_per_sec: a.connects_per_ip_per_sec,
                connects_per_ip_burst: a.connects_per_ip_burst,
                limit_loopback: a.limit_loopback,
                idle_timeout_secs: a.idle_timeout.as_secs(),
                origins: Vec::new(),
            },
            log: RawLog {
                format: c.log.format,
                filter: c.log.filter,
            },
            demo: RawDemo {
                enabled: false,
                symbols: d.symbols,
                quotes_per_sec: d.quotes_per_sec,
            },
            cluster: RawCluster::from_config(c.cluster.as_ref()),
            hooks: RawHooks {
                timeout_ms: c.hooks.timeout.as_millis() as u64,
                max_in_flight: c.hooks.max_in_flight,
                cache_ttl_ms: c.hooks.cache_ttl.as_millis() as u64,
                breaker_failures: c.hooks.breaker_failures,
                breaker_cooldown_ms: c.hooks.breaker_cooldown.as_millis() as u64,
                connect_url: String::new(),
                rpc_url: String::new(),
            },
            rate_limits: Vec::new(),
            pusher: Default::default(),
            // The same list as `ChannelRules::defaults` (a unit test compares them).
            channels: vec![
                ch("quotes.**", Conflated, 1, Public),
                ch("trades.**", Stream, 1000, Public),
                ch("signals.**", Stream, 100, Public),
                ch("market.status", Stream, 10, Public),
                ch("user.{user}.**", Stream, 1000, Owner),
                ch("challenge.**", Stream, 1000, Grant),
                ch("strategy.**", Stream, 1000, Grant),
                ch("private.**", Stream, 1000, Grant),
                ch("bench.*", Stream, 100, Public),
            ],
        }
    }
}

macro_rules! impl_default_from_raw {
    ($($t:ident . $f:ident),*) => {$(
        impl Default for $t {
            fn default() -> Self {
                RawConfig::default().$f
            }
        }
    )*};
}
impl_default_from_raw!(
    RawQueue.queue,
    RawShutdown.shutdown,
    RawAuth.auth,
    RawLimits.limits,
    RawLog.log,
    RawDemo.demo,
    RawHooks.hooks
);

impl RawConfig {
    /// Parses a TOML document; `file` names it in errors (`FILE:LINE:COL: reason`).
    pub fn parse(text: &str, file: &str) -> Result<RawConfig, ConfigError> {
        toml::from_str(text).map_err(|e| {
            let (line, col) = e.span().map(|s| line_col(text, s.start)).unwrap_or((1, 1));
            ConfigError::File {
                file: file.to_string(),
                line,
                col,
                reason: e.message().trim().to_string(),
            }
        })
    }

    /// Reads, parses and checks a configuration file on its own (before flags and
    /// environment are laid over it), so a bad value is reported at its line.
    pub fn load(path: &Path) -> Result<RawConfig, ConfigError> {
        let file = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            file: file.clone(),
            source,
        })?;
        let raw = RawConfig::parse(&text, &file)?;
        match raw.clone().into_config() {
            Ok(_) => Ok(raw),
            Err(ConfigError::Invalid { key, reason }) => {
                let (line, col) = locate(&text, &key).unwrap_or((1, 1));
                Err(ConfigError::File {
                    file,
                    line,
                    col,
                    reason: format!("{key}: {reason}"),
                })
            }
            Err(e) => Err(e),
        }
    }

    /// Turns the raw settings into a validated [`Config`], reading the key files named.
    pub fn into_config(self) -> Result<Config, ConfigError> {
        let mut rules = Vec::with_capacity(self.channels.len());
        let mut subscribe_hooks = Vec::new();
        for (i, c) in self.channels.iter().enumerate() {
            let policy = ChannelPolicy {
                kind: match c.kind {
                    RawKind::Conflated => ChannelKind::Conflated,
                    RawKind::Stream => ChannelKind::Stream,
                },
                history: c.history,
                access: match c.access {
                    RawAccess::Public => ChannelAccess::Public,
                    RawAccess::Owner => ChannelAccess::Owner,
                    RawAccess::Grant => ChannelAccess::Grant,
                    RawAccess::Hook => ChannelAccess::Hook,
                },
            };
            match (&c.subscribe_hook, c.access) {
                (Some(url), RawAccess::Hook) => {
                    if crate::server::hooks::split_url(url).is_none() {
                        return Err(invalid(
                            &format!("channels[{i}].subscribe_hook"),
                            "an http://host:port/path URL",
                        ));
                    }
                    subscribe_hooks.push((c.pattern.clone(), Arc::from(url.as_str())));
                }
                (None, RawAccess::Hook) => {
                    return Err(invalid(
                        &format!("channels[{i}]"),
                        "access = \"hook\" needs a subscribe_hook URL",
                    ))
                }
                (Some(_), _) => {
                    return Err(invalid(
                        &format!("channels[{i}].subscribe_hook"),
                        "a subscribe_hook needs access = \"hook\"",
                    ))
                }
                (None, _) => {}
            }
            let rule = ChannelRule::new(&c.pattern, policy)
                .map_err(|e| invalid(&format!("channels[{i}]"), e.to_string()))?;
            rules.push(rule);
        }
        if self.demo.enabled && self.auth.jwt_secret.as_ref().is_some_and(|s| !s.is_empty()) {
            return Err(invalid(
                "demo.enabled",
                "the demo serves signed user tokens to anyone at /demo/token, so it cannot run \
                 with a real jwt_secret (QUOTECAST_JWT_SECRET / --jwt-secret): unset the secret \
                 (the demo then signs with a throwaway one) or turn the demo off",
            ));
        }
        if self.demo.enabled {
            // The demo market publishes under its own names and lets anyone try any name:
            // only the demo gets a public catch-all, after the configured rules.
            rules.push(ChannelRules::public_catch_all());
        }
        if rules.is_empty() {
            return Err(invalid(
                "channels",
                "no channel pattern: every channel would be refused",
            ));
        }
        if self.hooks.timeout_ms == 0 {
            return Err(invalid("hooks.timeout_ms", "must be at least 1"));
        }
        for (key, url) in [
            ("hooks.connect_url", &self.hooks.connect_url),
            ("hooks.rpc_url", &self.hooks.rpc_url),
        ] {
            if !url.is_empty() && crate::server::hooks::split_url(url).is_none() {
                return Err(invalid(key, "an http://host:port/path URL"));
            }
        }
        for (i, r) in self.rate_limits.iter().enumerate() {
            if r.count == 0 || r.per_secs == 0 {
                return Err(invalid(
                    &format!("rate_limits[{i}]"),
                    "count and per_secs must be at least 1",
                ));
            }
            if let Some(ns) = &r.namespace {
                if !self.channels.iter().any(|c| &c.pattern == ns) {
                    return Err(invalid(
                        &format!("rate_limits[{i}].namespace"),
                        format!("no [[channels]] pattern is `{ns}`"),
                    ));
                }
            }
        }
        if self.hooks.max_in_flight == 0 {
            return Err(invalid("hooks.max_in_flight", "must be at least 1"));
        }
        if self.hooks.breaker_failures == 0 {
            return Err(invalid("hooks.breaker_failures", "must be at least 1"));
        }
        for (key, v) in [
            ("auth.jwt_user_claim", &self.auth.jwt_user_claim),
            ("auth.jwt_grants_claim", &self.auth.jwt_grants_claim),
        ] {
            if v.is_empty() || v.len() > 64 {
                return Err(invalid(key, "a claim name of 1-64 characters"));
            }
        }
        if tracing_subscriber::EnvFilter::try_new(&self.log.filter).is_err() {
            return Err(invalid("log.filter", "not a valid tracing filter"));
        }
        let read_pem = |key: &str, p: &Option<PathBuf>| -> Result<Option<Vec<u8>>, ConfigError> {
            match p {
                None => Ok(None),
                Some(p) => std::fs::read(p)
                    .map(Some)
                    .map_err(|e| invalid(key, format!("cannot read {}: {e}", p.display()))),
            }
        };
        let au = &self.auth;
        let li = &self.limits;
        let demo = self.demo.enabled;
        let access = AccessConfig {
            jwt: JwtConfig {
                hs256_secret: au
                    .jwt_secret
                    .as_ref()
                    .filter(|s| !s.is_empty())
                    .map(|s| s.as_bytes().to_vec()),
                rs256_public_pem: read_pem("auth.jwt_rs256_public_key", &au.jwt_rs256_public_key)?,
                es256_public_pem: read_pem("auth.jwt_es256_public_key", &au.jwt_es256_public_key)?,
                issuer: au.jwt_issuer.clone(),
                audience: au.jwt_audience.clone(),
                leeway_secs: au.leeway_secs,
                user_claim: au.jwt_user_claim.clone(),
                grants_claim: au.jwt_grants_claim.clone(),
            },
            // The demo and anonymous publishing imply anonymous subscribing.
            allow_anonymous: au.allow_anonymous || au.anonymous_publish || demo,
            anonymous_publish: au.anonymous_publish || demo,
            api_keys: au
                .api_keys
                .iter()
                .filter(|k| !k.is_empty())
                .cloned()
                .collect(),
            auth_timeout: Duration::from_millis(au.auth_timeout_ms),
            max_connections_per_user: li.max_connections_per_user,
            ops_per_sec: li.ops_per_sec,
            ops_burst: li.ops_burst.unwrap_or((li.ops_per_sec * 2.0).max(1.0)),
            max_rate_violations: li.max_rate_violations,
            connects_per_ip_per_sec: li.connects_per_ip_per_sec,
            connects_per_ip_burst: li.connects_per_ip_burst,
            limit_loopback: li.limit_loopback,
            origins: li.origins.clone(),
            idle_timeout: Duration::from_secs(li.idle_timeout_secs),
        };
        let defaults = Config::default();
        let cfg = Config {
            listen: self.listen,
            shards: if self.shards == 0 {
                defaults.shards
            } else {
                self.shards
            },
            rules: ChannelRules::new(rules),
            heartbeat: Duration::from_millis(self.heartbeat_ms),
            max_message_bytes: self.max_message_bytes,
            queue: QueueLimits {
                max_frames: self.queue.max_frames,
                max_bytes: self.queue.max_bytes,
                max_lag: Duration::from_millis(self.queue.slow_consumer_lag_ms),
            },
            drain: Duration::from_millis(self.shutdown.drain_ms),
            reconnect_hint: Duration::from_millis(self.shutdown.reconnect_hint_ms),
            inbox_capacity: self.inbox_capacity,
            max_connections: self.max_connections,
            max_subscriptions: self.max_subscriptions,
            access,
            demo_tokens: Vec::new(),
            socket_send_buffer: self.socket_send_buffer,
            socket_notsent_lowat: self.socket_notsent_lowat,
            demo: demo.then(|| DemoConfig {
                symbols: self.demo.symbols,
                quotes_per_sec: self.demo.quotes_per_sec,
                ..DemoConfig::default()
            }),
            log: LogConfig {
                format: self.log.format,
                filter: self.log.filter.clone(),
            },
            cluster: self
                .cluster
                .clone()
                .into_config()
                .map_err(|(key, reason)| invalid(key, reason))?,
            hooks: HooksConfig {
                timeout: Duration::from_millis(self.hooks.timeout_ms),
                max_in_flight: self.hooks.max_in_flight,
                cache_ttl: Duration::from_millis(self.hooks.cache_ttl_ms),
                breaker_failures: self.hooks.breaker_failures,
                breaker_cooldown: Duration::from_millis(self.hooks.breaker_cooldown_ms),
                subscribe: subscribe_hooks,
                connect: (!self.hooks.connect_url.is_empty())
                    .then(|| Arc::from(self.hooks.connect_url.as_str())),
                rpc: (!self.hooks.rpc_url.is_empty())
                    .then(|| Arc::from(self.hooks.rpc_url.as_str())),
            },
            rate_limits: self
                .rate_limits
                .iter()
                .map(|r| OpLimit {
                    op: r.op,
                    namespace: r.namespace.clone(),
                    count: r.count,
                    per: Duration::from_secs(r.per_secs),
                })
                .collect(),
            pusher_apps: self
                .pusher
                .clone()
                .into_apps()
                .map_err(|(key, reason)| invalid(&key, reason))?,
        };
        cfg.validate()?;
        Ok(cfg)
    }
}

/// 1-based line and column of byte `offset` in `text`.
fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let col = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, col)
}

/// Where `key` (`shards`, `queue.max_frames`, `channels[2]`, `channels[2].pattern`) is
/// set in a TOML document written in the usual one-table-per-header style.
fn locate(text: &str, key: &str) -> Option<(usize, usize)> {
    let (table, index, leaf) = match key.split_once('.') {
        Some((t, l)) => (Some(t), None, Some(l)),
        None => (None, None, Some(key)),
    };
    let (table, index, leaf) = match key.split_once('[') {
        Some((t, rest)) => {
            let (n, after) = rest.split_once(']')?;
            let leaf = after.strip_prefix('.');
            (Some(t), Some(n.parse::<usize>().ok()?), leaf)
        }
        None => (table, index, leaf),
    };
    let header = |l: &str| l.starts_with('[');
    let is_key = |l: &str, k: &str| {
        l.strip_prefix(k)
            .is_some_and(|r| r.trim_start().starts_with('='))
    };
    let lines: Vec<&str> = text.lines().collect();
    // The first line of the section the key lives in.
    let mut start = 0;
    let mut header_line = None;
    if let Some(t) = table {
        let mut seen = 0usize;
        let found = lines.iter().position(|l| {
            let l = l.trim();
            match index {
                Some(n) => {
                    let hit = l.starts_with(&format!("[[{t}]]"));
                    if hit {
                        seen += 1;
                    }
                    hit && seen == n + 1
                }
                None => l.starts_with(&format!("[{t}]")),
            }
        });
        match found {
            Some(i) => {
                start = i + 1;
                header_line = Some(i);
            }
            None => {
                // Maybe a dotted key at the top level: `queue.max_frames = 5`.
                return lines
                    .iter()
                    .take_while(|l| !header(l.trim()))
                    .position(|l| is_key(l.trim(), key))
                    .map(|i| (i + 1, lines[i].find(key).unwrap_or(0) + 1));
            }
        }
    }
    if let Some(leaf) = leaf {
        for (i, l) in lines.iter().enumerate().skip(start) {
            let t = l.trim();
            if header(t) {
                break;
            }
            if is_key(t, leaf) {
                return Some((i + 1, l.find(leaf).unwrap_or(0) + 1));
            }
        }
    }
    header_line.map(|i| (i + 1, 1))
}

/// The default configuration file, every option with its default and its trade-off
/// (`quotecast config --print-default`). Parsing it gives [`RawConfig::default`].
pub const DEFAULT_TOML: &str = include_str!("config/default.toml");

pub mod explain;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_file_is_the_default() {
        let raw = RawConfig::parse(DEFAULT_TOML, "default").unwrap();
        assert_eq!(raw, RawConfig::default());
        assert_eq!(RawConfig::parse("", "empty").unwrap(), RawConfig::default());
    }

    #[test]
    fn raw_defaults_make_the_default_config() {
        let from_raw = RawConfig::default().into_config().unwrap();
        assert_eq!(format!("{from_raw:?}"), format!("{:?}", Config::default()));
    }

    #[test]
    fn errors_carry_file_line_and_column() {
        let e = RawConfig::parse("listen = \"127.0.0.1:1\"\nshards = \"two\"\n", "q.toml")
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("q.toml:2:10: "), "{e}");
        let e = RawConfig::parse("[queue]\nmax_frame = 5\n", "q.toml")
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("q.toml:2:1: "), "{e}");
        assert!(e.contains("max_frame"), "{e}");
    }

    #[test]
    fn semantic_errors_are_located() {
        let text = "shards = 4\n\n[queue]\nmax_bytes = 10\n\n[[channels]]\npattern = \"a.*\"\n\n[[channels]]\npattern = \"b.***\"\n";
        assert_eq!(locate(text, "shards"), Some((1, 1)));
        assert_eq!(locate(text, "queue.max_bytes"), Some((4, 1)));
        assert_eq!(locate(text, "queue.max_frames"), Some((3, 1)));
        assert_eq!(locate(text, "channels[1]"), Some((9, 1)));
        assert_eq!(locate(text, "channels[1].pattern"), Some((10, 1)));
        assert_eq!(
            locate("queue.max_bytes = 1\n", "queue.max_bytes"),
            Some((1, 1))
        );
        let dir = std::env::temp_dir().join(format!("qc-cfg-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("bad.toml");
        std::fs::write(&p, text).unwrap();
        let e = RawConfig::load(&p).unwrap_err().to_string();
        assert!(
            e.contains("bad.toml:9:1: channels[1]: bad channel pattern"),
            "{e}"
        );
        std::fs::write(&p, text.replace("b.***", "b.*")).unwrap();
        let e = RawConfig::load(&p).unwrap_err().to_string();
        assert!(
            e.contains("bad.toml:4:1: queue.max_bytes: must be at least"),
            "{e}"
        );
        std::fs::write(
            &p,
            "[queue]\nmax_bytes = 1048576\n[[channels]]\npattern = \"b.***\"\n",
        )
        .unwrap();
        let e = RawConfig::load(&p).unwrap_err().to_string();
        assert!(
            e.contains("bad.toml:3:1: channels[0]: bad channel pattern"),
            "{e}"
        );
        std::fs::write(&p, "[limits]\nops_per_sec = 0.0\n").unwrap();
        let e = RawConfig::load(&p).unwrap_err().to_string();
        assert!(
            e.contains("bad.toml:2:1: limits.ops_per_sec: must be"),
            "{e}"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn default_config_has_no_public_catch_all_and_the_demo_adds_one() {
        let c = RawConfig::default().into_config().unwrap();
        for n in [
            "user:42:orders",
            "private-App.Models.User.1",
            "challenge_7",
            "misc.1",
        ] {
            assert!(c.rules.resolve(n).is_none(), "{n}");
        }
        let mut raw = RawConfig::default();
        raw.demo.enabled = true;
        let c = raw.into_config().unwrap();
        let r = c.rules.resolve("misc.1").unwrap();
        assert_eq!((r.pattern, r.policy.access), ("**", ChannelAccess::Public));
        assert_eq!(c.rules.resolve("user.42.orders").unwrap().owner, Some("42"));
    }

    #[test]
    fn hook_namespaces_need_an_http_url_and_hook_access() {
        let parse = |t: &str| RawConfig::parse(t, "t").unwrap().into_config();
        let c = parse("[[channels]]\npattern = \"challenge_{id}\"\naccess = \"hook\"\nsubscribe_hook = \"http://127.0.0.1:9000/qc\"\n").unwrap();
        assert_eq!(
            c.hooks.subscribe_url("challenge_{id}").map(|u| &**u),
            Some("http://127.0.0.1:9000/qc")
        );
        for bad in [
            "[[channels]]\npattern = \"a.*\"\naccess = \"hook\"\n",
            "[[channels]]\npattern = \"a.*\"\nsubscribe_hook = \"http://x:1/\"\n",
            "[[channels]]\npattern = \"a.*\"\naccess = \"hook\"\nsubscribe_hook = \"https://x/\"\n",
            "[hooks]\nmax_in_flight = 0\n",
        ] {
            assert!(parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn demo_refuses_a_real_jwt_secret() {
        let mut raw = RawConfig::default();
        raw.demo.enabled = true;
        raw.auth.jwt_secret = Some("production-secret".into());
        let e = raw.into_config().unwrap_err().to_string();
        assert!(
            e.contains("demo.enabled") && e.contains("jwt_secret"),
            "{e}"
        );
    }

    #[test]
    fn claim_names_are_read_and_checked() {
        let raw = RawConfig::parse("[auth]\njwt_user_claim = \"user_id\"\n", "t").unwrap();
        assert_eq!(raw.into_config().unwrap().access.jwt.user_claim, "user_id");
        let raw = RawConfig::parse("[auth]\njwt_grants_claim = \"\"\n", "t").unwrap();
        assert!(raw.into_config().is_err());
    }

    #[test]
    fn demo_and_anonymous_publish_open_the_server() {
        let mut raw = RawConfig::default();
        raw.demo.enabled = true;
        let c = raw.into_config().unwrap();
        assert!(c.access.allow_anonymous && c.access.anonymous_publish);
        assert_eq!(c.demo.map(|d| d.symbols), Some(300));
        let mut raw = RawConfig::default();
        raw.auth.anonymous_publish = true;
        assert!(raw.into_config().unwrap().access.allow_anonymous);
    }
}
