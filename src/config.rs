//! Server configuration: a validated [`Config`] with the built-in defaults that make
//! `quotecast serve` work with no configuration at all.

use std::net::SocketAddr;
use std::time::Duration;

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
