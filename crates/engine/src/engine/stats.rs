//! The engine's statistics: plain counters each shard keeps on its own thread (the publish
//! path pays an add, never an atomic or a lock), and the snapshot a shard answers with when
//! the status or metrics endpoints ask. Merging and exposition live in `metrics`.

use std::sync::Arc;

use super::channel::ChannelKind;
use crate::protocol::CloseCode;

/// Upper bounds (ns) of the ingest → socket-write latency histogram buckets: 10 µs to 5 s,
/// roughly 1-2.5-5 per decade. Loopback fan-out sits in the tens of microseconds (see
/// `perf/README.md`); the upper buckets catch stalls.
pub const LATENCY_BUCKETS_NS: [u64; 18] = [
    10_000,
    25_000,
    50_000,
    100_000,
    250_000,
    500_000,
    1_000_000,
    2_500_000,
    5_000_000,
    10_000_000,
    25_000_000,
    50_000_000,
    100_000_000,
    250_000_000,
    500_000_000,
    1_000_000_000,
    2_500_000_000,
    5_000_000_000,
];

/// One shard's statistics at one instant.
#[derive(Debug, Clone, Default)]
pub struct ShardSnapshot {
    /// The shard.
    pub shard: usize,
    /// Its counters.
    pub stats: ShardStats,
    /// WebSocket connections it serves.
    pub connections: usize,
    /// Subscriptions to the channels it is home to (from every shard).
    pub subscriptions: u64,
    /// Channels it is home to.
    pub channels: usize,
    /// Events held in those channels' rings.
    pub ring_events: u64,
    /// Messages waiting in its inbox.
    pub inbox_depth: usize,
    /// Work items waiting for other shards' full inboxes.
    pub backlog: usize,
    /// Latencies recorded at or below each of [`LATENCY_BUCKETS_NS`] (cumulative).
    pub latency_buckets: Vec<u64>,
    /// Latencies recorded in all.
    pub latency_count: u64,
    /// Its home channels with the most subscribers, most first.
    pub top_channels: Vec<(Arc<str>, u64)>,
}

/// Counters, read by the status and metrics endpoints (merged across shards when read).
/// Plain integers touched only by the shard's own thread: the publish path pays an add,
/// never an atomic or a lock.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ShardStats {
    /// Events sequenced here.
    pub published: u64,
    /// Frames handed to subscribers' queues.
    pub delivered: u64,
    /// Connections closed as slow consumers, by trigger.
    pub slow_closes: SlowCloses,
    /// Events sequenced here, by channel kind.
    pub messages_in: PerKind,
    /// Payload bytes of those events, by channel kind.
    pub bytes_in: PerKind,
    /// Frames handed to subscribers' queues (or conflation slots), by channel kind.
    pub messages_out: PerKind,
    /// Bytes of those frames, by channel kind.
    pub bytes_out: PerKind,
    /// Quotes replaced in a subscriber's conflation slot before being written: dropped
    /// for that subscriber because a newer one arrived.
    pub conflated: u64,
    /// WebSocket connections opened here.
    pub connects: u64,
    /// WebSocket connections closed here, by close code (0: a code sent by a client that
    /// is not one of the protocol's, kept apart so the label set stays bounded).
    pub disconnects: std::collections::BTreeMap<u16, u64>,
    /// Tokens or API keys refused.
    pub auth_failures: AuthFailures,
    /// Client ops refused by the per-connection rate limit.
    pub rate_limited_ops: u64,
    /// Connections refused by the per-IP connection rate limit (acceptor only).
    pub rate_limited_connects: u64,
    /// Connections refused at the `max_connections` cap (acceptor only).
    pub refused_connections: u64,
    /// Sum of the ingest → socket write latencies recorded in `Shard::latency`, ns.
    pub latency_sum_ns: u64,
}

/// Slow-consumer closes (4008), by what triggered them.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct SlowCloses {
    /// The oldest unsent frame waited past `slow_consumer_lag`.
    pub lag: u64,
    /// The queue reached its hard frame or byte cap.
    pub memory: u64,
}

impl SlowCloses {
    /// Both triggers.
    pub fn total(&self) -> u64 {
        self.lag + self.memory
    }
}

/// A counter split by channel kind.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct PerKind {
    /// Conflated channels.
    pub conflated: u64,
    /// Stream channels.
    pub stream: u64,
}

impl PerKind {
    /// Adds `n` to `kind`'s count.
    #[inline]
    pub fn add(&mut self, kind: ChannelKind, n: u64) {
        match kind {
            ChannelKind::Conflated => self.conflated += n,
            ChannelKind::Stream => self.stream += n,
        }
    }

    fn merge(&mut self, o: &PerKind) {
        self.conflated += o.conflated;
        self.stream += o.stream;
    }
}

/// Refused credentials, by where they were presented.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct AuthFailures {
    /// A token in the upgrade request (`?token=`, `Authorization`).
    pub connect: u64,
    /// A token in an `auth` op.
    pub auth_op: u64,
    /// An API key or token on `POST /api/publish`.
    pub http: u64,
}

impl ShardStats {
    /// Adds another shard's counters to these.
    pub fn merge(&mut self, o: &ShardStats) {
        self.published += o.published;
        self.delivered += o.delivered;
        self.slow_closes.lag += o.slow_closes.lag;
        self.slow_closes.memory += o.slow_closes.memory;
        self.messages_in.merge(&o.messages_in);
        self.bytes_in.merge(&o.bytes_in);
        self.messages_out.merge(&o.messages_out);
        self.bytes_out.merge(&o.bytes_out);
        self.conflated += o.conflated;
        self.connects += o.connects;
        for (code, n) in &o.disconnects {
            *self.disconnects.entry(*code).or_insert(0) += n;
        }
        self.auth_failures.connect += o.auth_failures.connect;
        self.auth_failures.auth_op += o.auth_failures.auth_op;
        self.auth_failures.http += o.auth_failures.http;
        self.rate_limited_ops += o.rate_limited_ops;
        self.rate_limited_connects += o.rate_limited_connects;
        self.refused_connections += o.refused_connections;
        self.latency_sum_ns += o.latency_sum_ns;
    }

    /// Counts a closed connection under its close code (see `disconnects`).
    pub fn count_disconnect(&mut self, code: CloseCode) {
        let code = match code {
            CloseCode::Other(_) => 0,
            named => named.code(),
        };
        *self.disconnects.entry(code).or_insert(0) += 1;
    }
}
