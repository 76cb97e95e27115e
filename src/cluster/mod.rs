//! Cluster mode (`--redis`): several nodes share one Redis, which assigns every channel's
//! sequence numbers and keeps its history, so every node delivers the same events in the
//! same order and `since` recovery works on any node.
//!
//! Design (compare Centrifugo's Redis engine, which this follows in spirit):
//! - **Publish.** The shard that received a publish hands the batch to this node's Redis
//!   bridge (a thread of its own). The bridge runs one Lua script per batch
//!   ([`wire::PUBLISH`]) that, per event, increments the channel's sequence number, appends
//!   the event to the channel's history stream (`XADD … MAXLEN history`) and `PUBLISH`es it,
//!   atomically. Batches queue behind each other on one pipelined connection, so one
//!   publisher's events keep their order; the acks carry the cluster-wide sequence numbers.
//! - **Deliver.** A node subscribes (Redis pub/sub) to the channels its clients watch. The
//!   bridge checks each message's epoch and sequence number against the last it passed on:
//!   a duplicate is dropped, the next one goes to the channel's home shard, which encodes it
//!   once and fans it out exactly as in single-node mode. Even the publishing node delivers
//!   from pub/sub, so there is one order everywhere.
//! - **Decisions apart from I/O.** Every such decision (deliver, drop, read the channel
//!   again, fill, reset) is made by a per-channel `tracker::Tracker`, a pure state machine
//!   fed the live messages and the results of reads and unit tested as tables; the bridge
//!   only does the Redis calls, reconnects with backoff, and sends what the tracker decided
//!   to the home shard.
//! - **Join and recovery.** When a channel gets its first subscriber on a node, the bridge
//!   subscribes and then reads the channel's epoch, sequence number and history in one
//!   script ([`wire::SYNC`]); the home shard's ring is filled from it. A node that started
//!   after the events were published therefore recovers `since` from Redis history.
//! - **Gaps and faults.** A sequence gap (lost pub/sub messages, a full shard inbox) or a
//!   Redis reconnect makes the bridge re-read the channel: the missing events are filled in
//!   from history when it still holds them; otherwise (history trimmed, Redis lost its data
//!   and the channel got a new epoch, or Redis came back with older data) the channel is
//!   reset and its subscribers get a `subscribed` frame with `recovered: false` and
//!   `resync: true`. Never silently.
//!   While a read is in flight, live messages are not passed on (the read covers them); if
//!   one went by beyond what the read returned, the channel is read again.
//!   While Redis is unreachable, connections stay up, publishes are refused with
//!   `unavailable` (not sequenced), and the bridge reconnects with backoff. A publish sent
//!   to Redis without an answer (I/O error, timeout) fails with `outcome_unknown`: it may
//!   have happened. A publish may carry an idempotency key, which the PUBLISH script keeps
//!   with its seqs for a window, so a retry returns the original seqs instead of a second
//!   event.
//! - **Rewinds.** A Redis that comes back with older data (restarted from an RDB snapshot,
//!   AOF `everysec` after a crash, a lagging replica promoted) would give sequence numbers
//!   already delivered to new events. The scripts prevent it: each channel's hash records
//!   the `run_id` of the Redis process that sequenced it, and the first script to touch the
//!   channel in another process mints a new epoch (numbers and history carry on under it);
//!   a read that finds the node's own epoch at a lower seq does the same. So a seq is never
//!   given twice within an epoch, and a client resuming from a lost event learns
//!   `recovered: false`.
//! - **Presence.** Each node keeps its connections per user and subscribers per channel in
//!   hashes of its own that expire unless refreshed ([`wire::HEARTBEAT`]), so a crashed
//!   node's entries vanish. The per-user connection limit is checked cluster-wide by a
//!   script that writes this node's count and sums the live nodes' in one step.

pub mod bridge;
pub mod config;
mod presence;
mod publish;
mod sentinel;
mod tracker;
pub mod wire;

pub use bridge::{Cluster, ClusterStatus, Control, PresenceQuery};
pub use wire::RawEvent;

use std::fmt::Write as _;
use std::sync::atomic::Ordering;

/// Appends the cluster's Prometheus metrics to `/metrics`.
pub fn render_metrics(out: &mut String, s: &ClusterStatus) {
    let load = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
    let rows: [(&str, &str, &str, u64); 8] = [
        (
            "quotecast_redis_up",
            "gauge",
            "1 when this node is connected to the cluster's Redis.",
            s.up.load(Ordering::Relaxed) as u64,
        ),
        (
            "quotecast_redis_disconnects_total",
            "counter",
            "Connections to Redis lost (each followed by reconnects with backoff).",
            load(&s.disconnects),
        ),
        (
            "quotecast_cluster_live_nodes",
            "gauge",
            "Nodes whose presence had not expired at this node's last heartbeat.",
            load(&s.live_nodes),
        ),
        (
            "quotecast_cluster_events_in_total",
            "counter",
            "Events received from Redis pub/sub.",
            load(&s.events_in),
        ),
        (
            "quotecast_cluster_gap_fills_total",
            "counter",
            "Sequence gaps filled in from Redis history (nothing lost).",
            load(&s.fills),
        ),
        (
            "quotecast_cluster_resets_total",
            "counter",
            "Channels whose history was lost; subscribers were sent recovered=false.",
            load(&s.resets),
        ),
        (
            "quotecast_cluster_publish_failures_total",
            "counter",
            "Publishes answered `unavailable` (not sequenced) or `outcome_unknown` (Redis did not answer).",
            load(&s.publish_failures),
        ),
        (
            "quotecast_cluster_publishes_in_flight",
            "gauge",
            "Events sent to Redis whose answer has not come back yet.",
            load(&s.in_flight),
        ),
    ];
    for (name, kind, help, v) in rows {
        let _ = writeln!(
            out,
            "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {v}"
        );
    }
}
