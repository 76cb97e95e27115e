//! What the engine needs from cluster mode (engine): a port that `cluster/` implements. The
//! engine names the operations; how they reach Redis (queues, scripts, reconnects) is the
//! implementation's business. Answers come back through the shards' inboxes as
//! [`super::shard::Remote`] items (`Sequenced`, `Sync`, `Resync`, publish acks).

use std::sync::Arc;

use bytes::Bytes;

use super::channel::ChannelKind;
use super::shard::PubReply;
use crate::protocol::op::PubEvent;

/// An event as sequenced by the cluster, before it is encoded for clients.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawEvent {
    /// Channel.
    pub channel: Arc<str>,
    /// The channel's epoch when it was sequenced.
    pub epoch: Arc<str>,
    /// Cluster-wide sequence number.
    pub seq: u64,
    /// Publish time, ns since the Unix epoch.
    pub ts: u64,
    /// Event name.
    pub event: Box<str>,
    /// JSON data.
    pub data: Bytes,
}

/// Cluster mode as the engine sees it: sequencing elsewhere, and the channels this node
/// must listen to.
pub trait ClusterPort: std::fmt::Debug + Send + Sync {
    /// Hands events to be sequenced cluster-wide; their `reply` is answered once they are.
    /// Gives the reply back when the events cannot be queued (overloaded).
    fn publish(&self, events: Vec<(u16, PubEvent)>, reply: PubReply) -> Result<(), PubReply>;

    /// `home` has a first subscriber for `channel` on this node: start delivering it and
    /// answer with its state (`Remote::Sync` carrying `join_id`, with up to `history`
    /// events).
    fn join(&self, join_id: u64, channel: Arc<str>, home: usize, kind: ChannelKind, history: usize);

    /// No subscriber is left for `channel` on this node.
    fn leave(&self, channel: Arc<str>);

    /// `channel` has `count` subscriptions on this node (presence).
    fn subscribers(&self, channel: Arc<str>, count: u32);
}
