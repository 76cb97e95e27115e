//! One shard (engine): the channels it is home to (sequence numbers, rings), the
//! subscribers it serves (its own connections), and the hand-off to other shards.
//!
//! Every channel has one home shard, chosen by hashing its name. Publishing a channel means
//! sending the event to its home shard, which assigns the next sequence number, encodes the
//! frame once per format in use, appends it to the ring, fans it out to its own subscribers
//! and forwards the shared event to every other shard that has subscribers for it. All
//! hand-off goes through bounded lock-free inboxes (FIFO per sender), so the events of one
//! channel reach every shard in sequence order and a subscribe reply (snapshot, replay)
//! is ordered with the live events around it: nothing is lost or duplicated at the seam.
//!
//! State is `!Send` and touched by one thread only; nothing on the publish → socket path
//! takes a lock.

use std::cell::Cell;
use std::ops::Deref;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ahash::{AHashMap, AHashSet};
use bytes::Bytes;
use hdrhistogram::Histogram;
use tokio::sync::oneshot;

use super::channel::{ChannelKind, ChannelPolicy, ChannelRules};
use super::event::Event;
use super::outbound::{Frame, Micros, Overflow, QueueLimits};
use super::port::{ClusterPort, RawEvent};
use super::ring::{Recovery, Ring};
use super::session::Session;
use super::signal::Mesh;
use super::stats::{ShardSnapshot, ShardStats, LATENCY_BUCKETS_NS};
use crate::protocol::dialect::{FormatSet, Reply};
use crate::protocol::encode::{self, Subscribed};
use crate::protocol::frame::close_frame;
use crate::protocol::op::{Id, PubEvent, Since};
use crate::protocol::{CloseCode, Format};

/// Remote work items beyond which a shard refuses new publishes (`overloaded`) until its
/// peers' inboxes drain: bounds memory when another shard stalls.
pub const OUTGOING_LIMIT: usize = 1 << 16;

/// Engine settings shared by all shards.
#[derive(Debug)]
pub struct EngineConfig {
    /// Channel patterns.
    pub rules: ChannelRules,
    /// Per-connection queue bounds.
    pub queue: QueueLimits,
    /// This process's epoch (hex): a `since` from another epoch cannot be recovered.
    /// In cluster mode every channel has its own epoch, kept in Redis.
    pub epoch: Arc<str>,
    /// Cluster mode: the node's Redis bridge.
    pub cluster: Option<Arc<dyn ClusterPort>>,
    /// Builds subscribe acks the engine cannot (Pusher presence channels carry the member
    /// list), or `None` for the dialect's own ack.
    pub acks: Option<Arc<dyn AckHook>>,
}

/// A subscribe ack built outside the engine, when the home shard has answered: the Pusher
/// module answers a presence subscription with the channel's members as they are then, so
/// a member who joins later is announced by an event that comes after the ack.
pub trait AckHook: std::fmt::Debug + Send + Sync {
    /// The ack for connection `conn` (of `format`) on `channel`, or `None` for the
    /// dialect's usual one.
    fn subscribed(&self, format: Format, conn: u64, channel: &str) -> Option<Bytes>;
}

/// A message between shards.
#[derive(Debug)]
pub enum ShardMsg {
    /// Work items, in order.
    Batch(Vec<Remote>),
    /// A newly accepted connection for this shard's host to serve. The engine does not look
    /// inside: the server layer puts its socket type here and takes it out again.
    Accept(Box<dyn std::any::Any + Send>),
    /// Begin graceful shutdown.
    Shutdown,
    /// Answer with the subscriber count of a channel this shard is home to.
    Subscribers {
        /// Channel.
        channel: String,
        /// Where the count goes.
        reply: oneshot::Sender<u64>,
    },
    /// Answer with this shard's statistics (the status and metrics endpoints, readiness).
    /// Counters are plain fields of the shard, read by its own thread: nothing on the
    /// publish path is shared or atomic.
    Stats {
        /// Channels with the most subscribers to list (0 for none).
        top: usize,
        /// Where the snapshot goes.
        reply: oneshot::Sender<ShardSnapshot>,
    },
    /// A server-API command for this shard's connections (disconnect a user, unsubscribe a
    /// user from a channel). The engine does not look inside: the server layer defines and
    /// applies it, and answers how many connections it touched.
    Admin {
        /// The command.
        cmd: Box<dyn std::any::Any + Send>,
        /// Connections touched.
        reply: oneshot::Sender<u64>,
    },
    /// Answer with the retained events of a channel this shard is home to (HTTP history).
    History {
        /// Channel.
        channel: String,
        /// Only events with a larger sequence number.
        since: u64,
        /// At most this many (the oldest first).
        limit: usize,
        /// `None` when this shard holds no such channel.
        reply: oneshot::Sender<Option<History>>,
    },
}

/// A channel's retained events, for the HTTP history API.
#[derive(Debug)]
pub struct History {
    /// The channel's current sequence number.
    pub seq: u64,
    /// Events with `seq > since`, oldest first, at most `limit`.
    pub events: Vec<Arc<Event>>,
    /// Whether every event after `since` is retained (false: older ones were trimmed).
    pub complete: bool,
}

/// How a publish is answered.
#[derive(Debug)]
pub enum PubReply {
    /// Nobody waits (publish without `id`, the demo market).
    None,
    /// A WebSocket publisher on `shard`; `idx` are the events' positions in its batch.
    Peer {
        /// Shard serving the publisher.
        shard: usize,
        /// Its connection.
        conn: u64,
        /// The pending ack it waits on.
        token: u32,
        /// Positions in the original batch.
        idx: Vec<u16>,
    },
    /// An HTTP request; `idx` are the events' positions in its batch.
    Http {
        /// Where the `(position, seq)` pairs go.
        tx: oneshot::Sender<PublishResult>,
        /// Positions in the original batch.
        idx: Vec<u16>,
    },
}

/// Why a publish accepted for sequencing did not happen.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PublishError {
    /// Cluster mode: the publish was not sequenced (Redis unreachable, or it refused the
    /// command before running it); a retry cannot duplicate it.
    #[error("the cluster's Redis is unreachable; the publish was not sequenced, retry")]
    Unavailable,
    /// Cluster mode: the publish reached Redis but no answer came back (the connection
    /// broke or timed out): it may have been sequenced and delivered. Retry only with the
    /// same idempotency key, or a retry may publish it twice.
    #[error("Redis did not answer: the publish may have happened; retry only with the same idempotency key")]
    OutcomeUnknown,
}

impl PublishError {
    /// The protocol's error code.
    pub fn code(self) -> &'static str {
        match self {
            PublishError::Unavailable => "unavailable",
            PublishError::OutcomeUnknown => "outcome_unknown",
        }
    }
}

/// The `(position, seq)` pairs of a publish, or why it did not happen.
pub type PublishResult = Result<Vec<(u16, u64)>, PublishError>;

/// Cluster mode: a channel's state read from Redis, for its home shard.
#[derive(Debug)]
pub struct SyncMsg {
    /// Channel.
    pub channel: Arc<str>,
    /// Its epoch ("" while Redis was unreachable at join).
    pub epoch: Arc<str>,
    /// Its last sequence number.
    pub seq: u64,
    /// Its history, oldest first (up to the ring's size).
    pub events: Vec<RawEvent>,
    /// The channel was already joined and its history was lost: subscribers must be told.
    pub reset: bool,
    /// The join this answers (a channel left and joined again is a new join).
    pub join_id: u64,
}

/// A subscription request sent to the channel's home shard.
#[derive(Debug)]
pub struct SubReq {
    channel: Arc<str>,
    shard: usize,
    conn: u64,
    sub: u32,
    format: Format,
    new: bool,
    id: Option<Id>,
    snapshot: bool,
    since: Option<Since>,
}

/// The home shard's answer: the ack's facts and the events to replay.
#[derive(Debug)]
pub struct SubResp {
    channel: Arc<str>,
    conn: u64,
    sub: u32,
    id: Option<Id>,
    kind: ChannelKind,
    seq: u64,
    epoch: Arc<str>,
    recovered: Option<bool>,
    replay: Vec<Arc<Event>>,
}

/// One work item.
#[derive(Debug)]
pub enum Remote {
    /// A live event for this shard's subscribers.
    Event(Arc<Event>),
    /// Events to sequence (this shard is their home).
    Publish(Vec<(u16, PubEvent)>, PubReply),
    /// Subscribe (this shard is home).
    Subscribe(SubReq),
    /// Subscribe answer (this shard serves the subscriber).
    SubscribeResp(SubResp),
    /// A subscriber on `shard` left (this shard is home).
    Unsubscribe {
        /// Channel.
        channel: Arc<str>,
        /// Subscriber's shard.
        shard: usize,
        /// Subscriber's format.
        format: Format,
    },
    /// Sequence numbers for a WebSocket publisher on this shard.
    PublishAck {
        /// Publisher connection.
        conn: u64,
        /// Its pending ack.
        token: u32,
        /// `(position, seq)` pairs.
        seqs: Vec<(u16, u64)>,
    },
    /// A WebSocket publisher's publish did not happen (cluster mode).
    PublishFailed {
        /// Publisher connection.
        conn: u64,
        /// Its pending ack.
        token: u32,
        /// Why.
        error: PublishError,
    },
    /// Cluster mode: an event sequenced in Redis (this shard is its channel's home).
    Sequenced(Box<RawEvent>),
    /// Cluster mode: a channel's state read from Redis (this shard is home).
    Sync(Box<SyncMsg>),
    /// Cluster mode: a channel lost history; tell this shard's subscribers.
    Resync {
        /// Channel.
        channel: Arc<str>,
        /// Its new epoch.
        epoch: Arc<str>,
        /// Its sequence number now: events continue after it.
        seq: u64,
        /// Its kind.
        kind: ChannelKind,
    },
    /// Cluster mode: close a connection refused by the cluster-wide per-user limit.
    Refuse {
        /// Connection.
        conn: u64,
        /// Close reason.
        reason: String,
    },
}

/// A publish's answer, held until its events have been handed to the other shards.
#[derive(Debug)]
enum Ack {
    Http(oneshot::Sender<PublishResult>, Vec<(u16, u64)>),
    Peer(usize, Remote),
}

/// A publish could not be accepted now.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the server is overloaded; retry")]
pub struct Overloaded;

/// Cluster mode: where a home channel stands with Redis.
#[derive(Debug)]
enum Join {
    /// Single node: the shard sequences the channel itself.
    Local,
    /// Waiting for the channel's state from Redis; subscribe requests wait here.
    Joining(Vec<SubReq>),
    /// Events come from Redis.
    Joined,
}

/// A channel this shard is home to.
#[derive(Debug)]
struct Owned {
    seq: u64,
    /// The channel's epoch: the process's in single-node mode, Redis's in cluster mode.
    epoch: Arc<str>,
    join: Join,
    /// Cluster mode: which join of this channel the state belongs to.
    join_id: u64,
    ring: Ring,
    kind: ChannelKind,
    /// Subscriptions per shard.
    interest: Vec<u32>,
    /// Subscriptions across all shards, per dialect (`Format::index`): the home shard
    /// encodes an event's frame for each dialect that has any.
    dialects: [u32; Format::COUNT],
}

/// One subscription of one local connection. Kept to 48 bytes (64 with its `Rc`): an
/// idle connection is mostly its subscriptions.
#[derive(Debug)]
pub struct Sub<C> {
    /// The subscriber.
    pub peer: Rc<C>,
    /// The channel.
    pub channel: Arc<str>,
    /// Unique per shard (wrapping), so a late reply to an earlier subscription is not
    /// misapplied.
    pub id: u32,
    /// Waiting for the home shard's reply; live events are skipped (the reply covers them).
    pub pending: Cell<bool>,
    /// Highest seq delivered or covered.
    pub last_seq: Cell<u64>,
    /// Conflation slot, on conflated channels.
    pub slot: Option<u32>,
}

/// Subscribers of one channel on this shard.
#[derive(Debug)]
struct LocalChannel<C> {
    kind: ChannelKind,
    subs: Vec<Rc<Sub<C>>>,
}

/// The shard.
#[derive(Debug)]
pub struct Shard<C> {
    id: usize,
    cfg: Arc<EngineConfig>,
    mesh: Arc<Mesh<ShardMsg>>,
    owned: AHashMap<Arc<str>, Owned>,
    local: AHashMap<Arc<str>, LocalChannel<C>>,
    conns: AHashMap<u64, Rc<C>>,
    dirty: Vec<Rc<C>>,
    outgoing: Vec<Vec<Remote>>,
    outgoing_len: usize,
    next_sub: u32,
    next_join: u64,
    /// Ingest instants of events fanned out here since the last commit.
    batch_ingest: Vec<Instant>,
    /// Ingest → socket write latency, ns.
    pub latency: Histogram<u64>,
    /// Counters.
    pub stats: ShardStats,
    /// Publish answers waiting for the events' hand-off to other shards.
    acks: Vec<Ack>,
    /// Shutting down: connections told so whose publishes still wait for an answer (cluster
    /// mode: Redis); each is closed with 1012 once its last answer is queued.
    restart_after_acks: AHashSet<u64>,
    /// The current instant, set by the caller ([`Shard::set_now`]): the engine never reads
    /// a clock.
    now: Instant,
    /// `now` in µs since `origin` (queues date frames in integers).
    now_us: Micros,
    /// The instant the shard was created at: the origin of `now_us`.
    origin: Instant,
    /// The current wall-clock time, ns since the Unix epoch (events' `ts`).
    unix_ns: u64,
}

/// FNV-1a: a stable, fast hash so every shard agrees on a channel's home.
pub fn home_of(channel: &str, shards: usize) -> usize {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in channel.bytes() {
        h ^= b as u64;
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    (h % shards as u64) as usize
}

impl<C: Deref<Target = Session<C>>> Shard<C> {
    /// A shard with no channels and no connections, its clock set to `now` (and its events'
    /// wall-clock time to 0 until [`Shard::set_now`]).
    pub fn new(id: usize, cfg: Arc<EngineConfig>, mesh: Arc<Mesh<ShardMsg>>, now: Instant) -> Self {
        let n = mesh.len();
        Shard {
            id,
            cfg,
            mesh,
            owned: AHashMap::new(),
            local: AHashMap::new(),
            conns: AHashMap::new(),
            dirty: Vec::new(),
            outgoing: (0..n).map(|_| Vec::new()).collect(),
            outgoing_len: 0,
            next_sub: 1,
            next_join: 0,
            batch_ingest: Vec::new(),
            // 1 ns .. 60 s at 3 significant digits; the bounds are constants that are valid.
            latency: Histogram::new_with_bounds(1, 60_000_000_000, 3)
                .unwrap_or_else(|_| Histogram::new(3).unwrap_or_else(|_| unreachable!())),
            stats: ShardStats::default(),
            acks: Vec::new(),
            restart_after_acks: AHashSet::new(),
            now,
            now_us: 0,
            origin: now,
            unix_ns: 0,
        }
    }

    /// Sets the time for the work that follows: `now` dates queued frames (slow-consumer
    /// lag, `max_hz`) and events' ingest (latency), `unix_ns` is the `ts` of events
    /// sequenced here. Time is an input: a test may set any instant.
    pub fn set_now(&mut self, now: Instant, unix_ns: u64) {
        self.now = now;
        self.now_us = self.micros(now);
        self.unix_ns = unix_ns;
    }

    /// `t` on the queues' clock: µs since the shard was created.
    fn micros(&self, t: Instant) -> Micros {
        t.saturating_duration_since(self.origin).as_micros() as Micros
    }

    /// The time last set.
    pub fn now(&self) -> Instant {
        self.now
    }

    /// This shard's index.
    pub fn id(&self) -> usize {
        self.id
    }

    /// Engine settings.
    pub fn config(&self) -> &Arc<EngineConfig> {
        &self.cfg
    }

    /// The channel rules.
    pub fn rules(&self) -> &ChannelRules {
        &self.cfg.rules
    }

    /// Registers a connection served here.
    pub fn add_peer(&mut self, peer: Rc<C>) {
        self.conns.insert(peer.id, peer);
    }

    /// Connections served here.
    pub fn peers(&self) -> impl Iterator<Item = &Rc<C>> {
        self.conns.values()
    }

    /// Number of connections served here.
    pub fn peer_count(&self) -> usize {
        self.conns.len()
    }

    /// Marks a connection as having output to flush at the next commit.
    pub fn mark_dirty(&mut self, peer: &Rc<C>) {
        if !peer.dirty.replace(true) {
            self.dirty.push(peer.clone());
        }
    }

    fn route(&mut self, to: usize, item: Remote) {
        if to == self.id {
            self.handle(item);
        } else {
            self.outgoing[to].push(item);
            self.outgoing_len += 1;
        }
    }

    /// Whether work for other shards is waiting because their inboxes were full.
    pub fn has_backlog(&self) -> bool {
        self.outgoing_len > 0
    }

    /// Handles one item from the inbox (or routed locally).
    pub fn handle(&mut self, item: Remote) {
        match item {
            Remote::Event(ev) => self.fan_out(&ev),
            Remote::Publish(events, reply) => self.sequence(events, reply),
            Remote::Subscribe(req) => self.on_subscribe(req),
            Remote::SubscribeResp(resp) => self.on_subscribe_resp(resp),
            Remote::Unsubscribe {
                channel,
                shard,
                format,
            } => self.on_unsubscribe(&channel, shard, format),
            Remote::PublishAck { conn, token, seqs } => self.on_publish_ack(conn, token, seqs),
            Remote::PublishFailed { conn, token, error } => {
                self.on_publish_failed(conn, token, error)
            }
            Remote::Sequenced(ev) => self.on_sequenced(*ev),
            Remote::Sync(msg) => self.on_sync(*msg),
            Remote::Resync {
                channel,
                epoch,
                seq,
                kind,
            } => self.on_resync(&channel, &epoch, seq, kind),
            Remote::Refuse { conn, reason } => {
                if let Some(peer) = self.conns.get(&conn).cloned() {
                    self.close_peer(&peer, CloseCode::TooManyConnections, &reason, false);
                }
            }
        }
    }

    // ---- publish ----------------------------------------------------------------------

    /// Publishes events (validated names and data), routing each to its channel's home.
    /// `make_reply` builds the reply for the events bound to one home shard.
    pub fn publish(
        &mut self,
        events: Vec<PubEvent>,
        mut make_reply: impl FnMut(Vec<u16>) -> PubReply,
    ) -> Result<(), Overloaded> {
        if self.outgoing_len > OUTGOING_LIMIT {
            return Err(Overloaded);
        }
        if let Some(cluster) = &self.cfg.cluster {
            // Redis sequences; every node (this one too) delivers from Redis pub/sub.
            let idx = (0..events.len() as u16).collect();
            let events = events
                .into_iter()
                .enumerate()
                .map(|(i, e)| (i as u16, e))
                .collect();
            return match cluster.publish(events, make_reply(idx)) {
                Ok(()) => Ok(()),
                Err(_) => Err(Overloaded),
            };
        }
        let n = self.mesh.len();
        let mut parts: Vec<Vec<(u16, PubEvent)>> = (0..n).map(|_| Vec::new()).collect();
        for (i, ev) in events.into_iter().enumerate() {
            let h = home_of(&ev.channel, n);
            parts[h].push((i as u16, ev));
        }
        // Local part last, so remote work is queued before the local fan-out's flush.
        let me = self.id;
        let order = (0..n).filter(|&h| h != me).chain(std::iter::once(me));
        for h in order {
            let part = std::mem::take(&mut parts[h]);
            if part.is_empty() {
                continue;
            }
            let idx = part.iter().map(|(i, _)| *i).collect();
            let reply = make_reply(idx);
            self.route(h, Remote::Publish(part, reply));
        }
        Ok(())
    }

    fn sequence(&mut self, events: Vec<(u16, PubEvent)>, reply: PubReply) {
        let mut seqs = Vec::with_capacity(events.len());
        let ts = self.unix_ns;
        let ingest = self.now;
        for (i, pe) in events {
            let channel: Arc<str> = Arc::from(pe.channel);
            let ev = {
                let n = self.mesh.len();
                let rules = &self.cfg.rules;
                let epoch = &self.cfg.epoch;
                let st = self
                    .owned
                    .entry(channel.clone())
                    .or_insert_with(|| new_owned(rules, &channel, n, epoch, false));
                st.seq += 1;
                self.stats.messages_in.add(st.kind, 1);
                self.stats.bytes_in.add(st.kind, pe.data.len() as u64);
                let mut ev = Event::new(
                    channel,
                    pe.event.into_boxed_str(),
                    st.seq,
                    ts,
                    ingest,
                    pe.data,
                    eager(&st.dialects),
                );
                ev.exclude = pe.exclude;
                let ev = Arc::new(ev);
                st.ring.push(ev.clone());
                ev
            };
            self.stats.published += 1;
            seqs.push((i, ev.seq));
            self.forward(&ev);
        }
        // Answered once the events are in every subscribing shard's inbox (`commit_with`):
        // an acknowledged event is never behind a shutdown that reached another shard first.
        match reply {
            PubReply::None => {}
            PubReply::Http { tx, .. } => self.acks.push(Ack::Http(tx, seqs)),
            PubReply::Peer {
                shard, conn, token, ..
            } => self
                .acks
                .push(Ack::Peer(shard, Remote::PublishAck { conn, token, seqs })),
        }
    }

    fn forward(&mut self, ev: &Arc<Event>) {
        let Some(st) = self.owned.get(&ev.channel) else {
            return;
        };
        let mut local = false;
        for (s, &count) in st.interest.iter().enumerate() {
            if count == 0 {
                continue;
            }
            if s == self.id {
                local = true;
            } else {
                self.outgoing[s].push(Remote::Event(ev.clone()));
                self.outgoing_len += 1;
            }
        }
        if local {
            self.fan_out(ev);
        }
    }

    /// Hands an event to every local subscriber: a reference-count increment and a queue
    /// push each, no encode and no copy.
    fn fan_out(&mut self, ev: &Arc<Event>) {
        let Some(ch) = self.local.get(&ev.channel) else {
            return;
        };
        let (now, now_us) = (self.now, self.now_us);
        let mut delivered = 0u64;
        let mut bytes = 0u64;
        let mut conflated = 0u64;
        let mut overflowed: Vec<(Rc<C>, Overflow)> = Vec::new();
        // One atomic reference per event, dialect and shard; per subscriber a plain `Rc`
        // increment.
        let mut frames: [Option<Frame>; Format::COUNT] = Default::default();
        for sub in &ch.subs {
            if sub.pending.get() || ev.seq <= sub.last_seq.get() {
                continue;
            }
            sub.last_seq.set(ev.seq);
            let peer = &sub.peer;
            if peer.id == ev.exclude {
                continue;
            }
            let frame = frames[peer.format.index()]
                .get_or_insert_with(|| Rc::new(ev.frame(peer.format)))
                .clone();
            let len = frame.len() as u64;
            let pushed = {
                let mut out = peer.out.borrow_mut();
                match (ch.kind, sub.slot) {
                    (ChannelKind::Conflated, Some(slot)) => {
                        conflated += out.slot_is_full(slot) as u64;
                        if let Some(due) = out.offer(slot, frame, ev.seq, now) {
                            peer.schedule(due);
                        }
                        Ok(())
                    }
                    _ => out.push(frame, now_us),
                }
            };
            if let Err(why) = pushed {
                overflowed.push((peer.clone(), why));
                continue;
            }
            delivered += 1;
            bytes += len;
            if !peer.dirty.replace(true) {
                self.dirty.push(peer.clone());
            }
        }
        self.stats.delivered += delivered;
        self.stats.messages_out.add(ch.kind, delivered);
        self.stats.bytes_out.add(ch.kind, bytes);
        self.stats.conflated += conflated;
        if delivered > 0 {
            self.batch_ingest.push(ev.ingest);
        }
        for (p, why) in overflowed {
            self.close_slow(&p, why);
        }
    }

    fn on_publish_ack(&mut self, conn: u64, token: u32, seqs: Vec<(u16, u64)>) {
        let Some(peer) = self.conns.get(&conn).cloned() else {
            return;
        };
        if let Some(frame) = peer.complete_ack(token, &seqs) {
            if let Err(why) = peer.reply(frame) {
                self.close_slow(&peer, why);
                return;
            }
            self.mark_dirty(&peer);
            self.restart_if_answered(&peer);
        }
    }

    /// Shutting down: closes a connection that waited for its publishes' answers once the
    /// last is queued (before the close frame).
    fn restart_if_answered(&mut self, peer: &Rc<C>) {
        if peer.pending_acks() == 0 && self.restart_after_acks.remove(&peer.id) {
            self.close_peer(peer, CloseCode::ServerRestart, "server restart", false);
        }
    }

    // ---- subscribe --------------------------------------------------------------------

    /// Subscribes `peer` to `channel` (name and policy already checked by the caller).
    #[allow(clippy::too_many_arguments)]
    pub fn subscribe(
        &mut self,
        peer: &Rc<C>,
        channel: Arc<str>,
        policy: &ChannelPolicy,
        id: Option<Id>,
        snapshot: bool,
        since: Option<Since>,
        max_hz: Option<f64>,
    ) {
        let existing = peer.subs.borrow().get(&channel).cloned();
        let (sub_id, new) = match existing {
            Some(sub) => {
                // Subscribing again may change the rate cap; everything else stays.
                if let Some(slot) = sub.slot {
                    peer.out.borrow_mut().set_slot_rate(slot, max_hz);
                }
                (sub.id, false)
            }
            None => {
                let slot = (policy.kind == ChannelKind::Conflated)
                    .then(|| peer.out.borrow_mut().add_slot(channel.clone(), max_hz));
                let sub = Rc::new(Sub {
                    peer: peer.clone(),
                    channel: channel.clone(),
                    id: self.next_sub,
                    pending: Cell::new(true),
                    last_seq: Cell::new(0),
                    slot,
                });
                self.next_sub = self.next_sub.wrapping_add(1);
                peer.subs.borrow_mut().insert(sub.clone());
                self.local
                    .entry(channel.clone())
                    .or_insert_with(|| LocalChannel {
                        kind: policy.kind,
                        subs: Vec::new(),
                    })
                    .subs
                    .push(sub.clone());
                (sub.id, true)
            }
        };
        let home = home_of(&channel, self.mesh.len());
        peer.sub_sent();
        let req = SubReq {
            channel,
            shard: self.id,
            conn: peer.id,
            sub: sub_id,
            format: peer.format,
            new,
            id,
            snapshot,
            since,
        };
        self.route(home, Remote::Subscribe(req));
    }

    fn on_subscribe(&mut self, req: SubReq) {
        let n = self.mesh.len();
        let rules = &self.cfg.rules;
        let cluster = self.cfg.cluster.as_ref();
        let epoch = &self.cfg.epoch;
        let mut joining = false;
        let st = self.owned.entry(req.channel.clone()).or_insert_with(|| {
            joining = cluster.is_some();
            new_owned(rules, &req.channel, n, epoch, cluster.is_some())
        });
        if req.new {
            st.interest[req.shard] += 1;
            st.dialects[req.format.index()] += 1;
        }
        if let Some(cl) = cluster {
            if req.new {
                cl.subscribers(req.channel.clone(), st.interest.iter().sum());
            }
            if joining {
                self.next_join += 1;
                st.join_id = self.next_join;
                cl.join(
                    st.join_id,
                    req.channel.clone(),
                    self.id,
                    st.kind,
                    st.ring.capacity(),
                );
            }
            if let Join::Joining(parked) = &mut st.join {
                parked.push(req);
                return;
            }
        }
        self.answer_subscribe(req);
    }

    /// Answers a subscribe request for a channel whose state is known: the ack's seq and
    /// epoch, and the snapshot or the events after `since`.
    fn answer_subscribe(&mut self, req: SubReq) {
        let Some(st) = self.owned.get(&req.channel) else {
            return;
        };
        let epoch = st.epoch.clone();
        let (recovered, replay): (Option<bool>, Vec<Arc<Event>>) = match &req.since {
            Some(since) if since.epoch.as_deref().is_some_and(|e| *e != *epoch) => {
                (Some(false), Vec::new())
            }
            Some(since) if st.kind == ChannelKind::Conflated => {
                // Only the latest value matters on a conflated channel.
                let latest: Vec<_> = if since.seq < st.seq {
                    st.ring.snapshot().last().cloned().into_iter().collect()
                } else {
                    Vec::new()
                };
                (Some(since.seq <= st.seq), latest)
            }
            Some(since) => match st.ring.since(since.seq, st.seq) {
                Recovery::Complete(evs) => (Some(true), evs.into_iter().cloned().collect()),
                Recovery::Incomplete => (Some(false), Vec::new()),
            },
            None if req.snapshot => (None, st.ring.snapshot().cloned().collect()),
            None => (None, Vec::new()),
        };
        let resp = SubResp {
            channel: req.channel,
            conn: req.conn,
            sub: req.sub,
            id: req.id,
            kind: st.kind,
            seq: st.seq,
            epoch,
            recovered,
            replay,
        };
        self.route(req.shard, Remote::SubscribeResp(resp));
    }

    // ---- cluster mode -------------------------------------------------------------------

    /// An event sequenced in Redis, for a channel this shard is home to: encoded once,
    /// kept in the ring, fanned out.
    fn on_sequenced(&mut self, raw: RawEvent) {
        let Some(st) = self.owned.get_mut(&raw.channel) else {
            return;
        };
        // Before the join answer (or from an earlier join), or of another epoch than the
        // one announced: the bridge sends a `Sync` before anything of a new epoch.
        if !matches!(st.join, Join::Joined) || raw.epoch != st.epoch || raw.seq <= st.seq {
            return;
        }
        if raw.seq != st.seq + 1 {
            // A conflated channel may skip; its ring keeps only contiguous events.
            st.ring.clear();
        }
        st.seq = raw.seq;
        self.stats.messages_in.add(st.kind, 1);
        self.stats.bytes_in.add(st.kind, raw.data.len() as u64);
        let ev = encode_raw(raw, self.now, eager(&st.dialects));
        st.ring.push(ev.clone());
        self.stats.published += 1;
        self.forward(&ev);
    }

    /// A channel's state from Redis: the join answer (parked subscribes are answered now),
    /// or a reset after history was lost (every subscriber is told).
    fn on_sync(&mut self, msg: SyncMsg) {
        let Some(st) = self.owned.get_mut(&msg.channel) else {
            return;
        };
        if msg.join_id != st.join_id {
            return; // An answer to an earlier join of this channel.
        }
        let (parked, was_joined) = match std::mem::replace(&mut st.join, Join::Joined) {
            Join::Joining(p) => (p, false),
            Join::Joined if msg.reset => (Vec::new(), true),
            other => {
                st.join = other;
                return;
            }
        };
        st.epoch = msg.epoch.clone();
        st.seq = msg.seq;
        st.ring.clear();
        let with = eager(&st.dialects);
        for raw in msg.events {
            if raw.seq > msg.seq {
                break;
            }
            st.ring.push(encode_raw(raw, self.now, with));
        }
        let kind = st.kind;
        let interest: Vec<usize> = st
            .interest
            .iter()
            .enumerate()
            .filter(|(_, &c)| c > 0)
            .map(|(s, _)| s)
            .collect();
        for req in parked {
            self.answer_subscribe(req);
        }
        if was_joined {
            for s in interest {
                self.route(
                    s,
                    Remote::Resync {
                        channel: msg.channel.clone(),
                        epoch: msg.epoch.clone(),
                        seq: msg.seq,
                        kind,
                    },
                );
            }
        }
    }

    /// Tells this shard's subscribers of `channel` that events may have been lost: an
    /// unsolicited `subscribed` with `recovered: false` and `resync: true`.
    fn on_resync(&mut self, channel: &Arc<str>, epoch: &Arc<str>, seq: u64, kind: ChannelKind) {
        let Some(ch) = self.local.get(channel) else {
            return;
        };
        // Every subscriber restarts from the new position (the old epoch's higher seqs must
        // not hide the new epoch's events); a pending one learns it from its own answer,
        // which comes after this notice.
        for sub in &ch.subs {
            sub.last_seq.set(seq);
        }
        let subs: Vec<Rc<Sub<C>>> = ch
            .subs
            .iter()
            .filter(|s| !s.pending.get())
            .cloned()
            .collect();
        let mut frames: [Option<Bytes>; Format::COUNT] = Default::default();
        let mut overflowed = Vec::new();
        for sub in subs {
            let peer = &sub.peer;
            let i = peer.format.index();
            let frame = frames[i]
                .get_or_insert_with(|| {
                    peer.format.reply(&Reply::Subscribed(Subscribed {
                        kind: "subscribed",
                        id: None,
                        channel,
                        channel_kind: kind.as_str(),
                        seq,
                        epoch,
                        recovered: Some(false),
                        resync: true,
                    }))
                })
                .clone();
            if frame.is_empty() {
                continue; // a dialect without resync notices (Pusher)
            }
            if let Err(why) = peer.reply(frame) {
                overflowed.push((peer.clone(), why));
                continue;
            }
            self.mark_dirty(peer);
        }
        for (p, why) in overflowed {
            self.close_slow(&p, why);
        }
    }

    fn on_publish_failed(&mut self, conn: u64, token: u32, error: PublishError) {
        let Some(peer) = self.conns.get(&conn).cloned() else {
            return;
        };
        if let Some(id) = peer.take_ack(token) {
            let f = encode::error(
                peer.format,
                Some(&id),
                error.code(),
                None,
                &error.to_string(),
            );
            if let Err(why) = peer.reply(f) {
                self.close_slow(&peer, why);
                return;
            }
            self.mark_dirty(&peer);
            self.restart_if_answered(&peer);
        }
    }

    fn on_subscribe_resp(&mut self, resp: SubResp) {
        let Some(peer) = self.conns.get(&resp.conn).cloned() else {
            return;
        };
        let sub = peer
            .subs
            .borrow()
            .get(&resp.channel)
            .filter(|s| s.id == resp.sub)
            .cloned();
        let Some(sub) = sub else {
            // Unsubscribed (or subscribed anew) while the request was in flight: nothing to
            // deliver, but the request is answered, so replies held behind it go out now.
            if let Err(why) = peer.sub_answered() {
                self.close_slow(&peer, why);
            } else {
                self.mark_dirty(&peer);
            }
            return;
        };
        let hooked = self
            .cfg
            .acks
            .as_ref()
            .and_then(|h| h.subscribed(peer.format, peer.id, &resp.channel));
        let ack = hooked.unwrap_or_else(|| {
            peer.format.reply(&Reply::Subscribed(Subscribed {
                kind: "subscribed",
                id: resp.id.as_ref(),
                channel: &resp.channel,
                channel_kind: resp.kind.as_str(),
                seq: resp.seq,
                epoch: &resp.epoch,
                recovered: resp.recovered,
                resync: false,
            }))
        });
        let now_us = self.now_us;
        let queued = {
            let mut out = peer.out.borrow_mut();
            out.push_reply(ack).and_then(|()| {
                resp.replay
                    .iter()
                    .try_for_each(|ev| out.push(ev.frame(peer.format), now_us))
            })
        };
        sub.last_seq.set(sub.last_seq.get().max(resp.seq));
        sub.pending.set(false);
        if let Err(why) = queued.and_then(|()| peer.sub_answered()) {
            self.close_slow(&peer, why);
            return;
        }
        self.mark_dirty(&peer);
    }

    /// Removes `peer`'s subscription to `channel`; false if it had none.
    pub fn unsubscribe(&mut self, peer: &Rc<C>, channel: &str) -> bool {
        let Some(sub) = peer.subs.borrow_mut().remove(channel) else {
            return false;
        };
        self.drop_sub(&sub.channel, &sub);
        true
    }

    fn drop_sub(&mut self, channel: &Arc<str>, sub: &Rc<Sub<C>>) {
        if let Some(slot) = sub.slot {
            sub.peer.out.borrow_mut().remove_slot(slot);
        }
        if let Some(ch) = self.local.get_mut(channel) {
            if let Some(pos) = ch.subs.iter().position(|s| Rc::ptr_eq(s, sub)) {
                ch.subs.swap_remove(pos);
            }
            if ch.subs.is_empty() {
                self.local.remove(channel);
            }
        }
        let home = home_of(channel, self.mesh.len());
        let msg = Remote::Unsubscribe {
            channel: channel.clone(),
            shard: self.id,
            format: sub.peer.format,
        };
        self.route(home, msg);
    }

    fn on_unsubscribe(&mut self, channel: &Arc<str>, shard: usize, format: Format) {
        if let Some(st) = self.owned.get_mut(channel) {
            st.interest[shard] = st.interest[shard].saturating_sub(1);
            let n = &mut st.dialects[format.index()];
            *n = n.saturating_sub(1);
            let watched: u32 = st.interest.iter().sum();
            if let Some(cl) = &self.cfg.cluster {
                cl.subscribers(channel.clone(), watched);
                // Unwatched here: Redis keeps the channel; stop listening to it.
                if watched == 0 {
                    cl.leave(channel.clone());
                    if let Some(st) = self.owned.remove(channel) {
                        if let Join::Joining(parked) = st.join {
                            // Their subscriptions are gone; the answers only release the
                            // replies their connections hold behind them.
                            for req in parked {
                                let resp = SubResp {
                                    channel: req.channel,
                                    conn: req.conn,
                                    sub: req.sub,
                                    id: None,
                                    kind: st.kind,
                                    seq: 0,
                                    epoch: st.epoch.clone(),
                                    recovered: None,
                                    replay: Vec::new(),
                                };
                                self.route(req.shard, Remote::SubscribeResp(resp));
                            }
                        }
                    }
                }
                return;
            }
            // A channel never published and no longer watched holds nothing worth keeping.
            if st.seq == 0 && watched == 0 {
                self.owned.remove(channel);
            }
        }
    }

    /// Forgets a connection that has ended: its subscriptions, its registration.
    pub fn remove_peer(&mut self, peer: &Rc<C>) {
        let subs = peer.subs.borrow_mut().drain();
        for sub in subs {
            self.drop_sub(&sub.channel, &sub);
        }
        self.conns.remove(&peer.id);
        self.restart_after_acks.remove(&peer.id);
    }

    // ---- closing, heartbeat, shutdown ----------------------------------------------------

    /// Closes `peer` as a slow consumer (4008), dropping its backlog, and counts the
    /// trigger.
    pub fn close_slow(&mut self, peer: &Rc<C>, why: Overflow) {
        if peer.is_closing() {
            return;
        }
        match why {
            Overflow::Lagging => self.stats.slow_closes.lag += 1,
            Overflow::Full => self.stats.slow_closes.memory += 1,
        }
        self.close_peer(peer, CloseCode::SlowConsumer, "slow consumer", true);
    }

    /// Closes stream subscribers whose oldest unsent frame has waited past the lag while
    /// no new event came to refuse (a reader that stalled at the end of a burst). Readers of
    /// conflated channels only are left alone: their backlog is bounded by conflation.
    pub fn check_lag(&mut self, now: Instant) {
        let now = self.micros(now);
        let lagging: Vec<Rc<C>> = self
            .conns
            .values()
            .filter(|p| !p.is_closing() && p.out.borrow().is_lagging(now))
            .filter(|p| p.subs.borrow().has_stream())
            .cloned()
            .collect();
        for p in lagging {
            self.close_slow(&p, Overflow::Lagging);
        }
    }

    /// Queues a close frame for `peer` (dropping its backlog when `discard`).
    pub fn close_peer(&mut self, peer: &Rc<C>, code: CloseCode, reason: &str, discard: bool) {
        let wire = peer.format.close_code(code);
        peer.begin_close(close_frame(wire, reason), discard, code, reason);
        self.mark_dirty(peer);
    }

    /// Pings every connection and closes those silent for two intervals.
    pub fn heartbeat(&mut self, now: Instant, interval: Duration, ping: &Bytes) {
        let peers: Vec<_> = self.conns.values().cloned().collect();
        for p in peers {
            if p.is_closing() {
                continue;
            }
            if now.saturating_duration_since(p.last_rx.get()) > interval * 2 {
                self.close_peer(&p, CloseCode::HeartbeatTimeout, "heartbeat timeout", true);
            } else {
                p.out.borrow_mut().push_control(ping.clone());
                self.mark_dirty(&p);
            }
        }
    }

    /// Tells every connection the server is going away, then closes it with 1012: at once,
    /// or, for a connection whose publishes still wait for an answer (cluster mode: Redis),
    /// once the last answer is queued (the caller's drain deadline bounds the wait).
    pub fn shutdown_all(&mut self, reconnect_ms: u64) {
        let notice = |fmt: Format| {
            fmt.reply(&Reply::Shutdown(encode::Shutdown {
                kind: "server_shutdown",
                reconnect_ms,
                message: "server restarting",
            }))
        };
        let notices = Format::ALL.map(notice);
        let peers: Vec<_> = self.conns.values().cloned().collect();
        for p in peers {
            p.out
                .borrow_mut()
                .push_control(notices[p.format.index()].clone());
            if p.pending_acks() > 0 && !p.is_closing() {
                self.restart_after_acks.insert(p.id);
                self.mark_dirty(&p);
            } else {
                self.close_peer(&p, CloseCode::ServerRestart, "server restart", false);
            }
        }
    }

    // ---- commit -----------------------------------------------------------------------

    /// Ends a unit of work: hands queued items to other shards, then hands every session
    /// with new output to `flush` (the server layer writes it to the socket; a test reads
    /// it at the speed it chooses).
    pub fn commit_with(&mut self, mut flush: impl FnMut(&Rc<C>)) {
        self.hand_off();
        if !self.acks.is_empty() && self.outgoing_len == 0 {
            for ack in std::mem::take(&mut self.acks) {
                match ack {
                    Ack::Http(tx, seqs) => {
                        let _ = tx.send(Ok(seqs));
                    }
                    Ack::Peer(shard, item) => self.route(shard, item),
                }
            }
            self.hand_off();
        }
        let dirty = std::mem::take(&mut self.dirty);
        for peer in &dirty {
            peer.dirty.set(false);
            flush(peer);
        }
        self.dirty = dirty;
        self.dirty.clear();
    }

    /// Moves the work queued for other shards into their inboxes (what fits).
    fn hand_off(&mut self) {
        for to in 0..self.outgoing.len() {
            if self.outgoing[to].is_empty() {
                continue;
            }
            let batch = std::mem::take(&mut self.outgoing[to]);
            let len = batch.len();
            match self.mesh.send(to, ShardMsg::Batch(batch)) {
                Ok(()) => self.outgoing_len -= len,
                Err(ShardMsg::Batch(back)) => self.outgoing[to] = back,
                Err(_) => {}
            }
        }
    }

    /// Records the ingest → write latency of the events fanned out since the last call, as
    /// of `written` (the instant the writes of `commit_with` finished).
    pub fn record_latency(&mut self, written: Instant) {
        for t in self.batch_ingest.drain(..) {
            let ns = written.saturating_duration_since(t).as_nanos() as u64;
            let _ = self.latency.record(ns.max(1));
            self.stats.latency_sum_ns += ns;
        }
    }

    /// Whether the latency of fanned-out events waits to be recorded.
    pub fn has_latency(&self) -> bool {
        !self.batch_ingest.is_empty()
    }

    /// Subscriptions to `channel` on this node (this shard being its home).
    pub fn subscribers(&self, channel: &str) -> u64 {
        self.owned
            .get(channel)
            .map_or(0, |st| st.interest.iter().map(|&c| c as u64).sum())
    }

    /// The retained events of `channel` after `since` (at most `limit`, oldest first), or
    /// `None` when this shard is not home to it.
    pub fn history(&self, channel: &str, since: u64, limit: usize) -> Option<History> {
        let st = self.owned.get(channel)?;
        let complete = st
            .ring
            .snapshot()
            .next()
            .map_or(since >= st.seq, |first| first.seq <= since + 1);
        let events = st
            .ring
            .snapshot()
            .filter(|e| e.seq > since)
            .take(limit)
            .cloned()
            .collect();
        Some(History {
            seq: st.seq,
            events,
            complete,
        })
    }

    /// Channels this shard is home to, with their subscription counts (for status).
    pub fn channel_counts(&self) -> impl Iterator<Item = (&Arc<str>, u32, u64)> {
        self.owned
            .iter()
            .map(|(k, v)| (k, v.interest.iter().sum(), v.seq))
    }
}

/// The dialects to encode an event for on its home shard: those with subscribers.
fn eager(dialects: &[u32; Format::COUNT]) -> FormatSet {
    Format::ALL
        .into_iter()
        .filter(|f| dialects[f.index()] > 0)
        .fold(FormatSet::EMPTY, FormatSet::with)
}

impl<C: Deref<Target = Session<C>>> Shard<C> {
    /// This shard's statistics, for `ShardMsg::Stats`: counters, gauges, the latency
    /// histogram folded into [`LATENCY_BUCKETS_NS`], and the `top` home channels with the
    /// most subscribers. Runs on the shard's thread, off the publish path (O(channels)).
    pub fn snapshot(&self, top: usize) -> ShardSnapshot {
        let mut ring_events = 0u64;
        let mut subscriptions = 0u64;
        let mut ranked: Vec<(Arc<str>, u64)> = Vec::new();
        for (name, st) in &self.owned {
            ring_events += st.ring.len() as u64;
            let subs: u64 = st.interest.iter().map(|&c| c as u64).sum();
            subscriptions += subs;
            if top > 0 && subs > 0 {
                ranked.push((name.clone(), subs));
            }
        }
        ranked.sort_unstable_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        ranked.truncate(top);
        // One pass over the recorded values, then cumulative sums.
        let mut latency_buckets = vec![0u64; LATENCY_BUCKETS_NS.len()];
        for v in self.latency.iter_recorded() {
            // The top of the value's hdr bucket (0.1% wide): `le` errs upward, never down.
            let ns = v.value_iterated_to();
            let i = LATENCY_BUCKETS_NS.partition_point(|&le| le < ns);
            if let Some(b) = latency_buckets.get_mut(i) {
                *b += v.count_at_value();
            }
        }
        for i in 1..latency_buckets.len() {
            latency_buckets[i] += latency_buckets[i - 1];
        }
        ShardSnapshot {
            shard: self.id,
            stats: self.stats.clone(),
            connections: self.conns.len(),
            subscriptions,
            channels: self.owned.len(),
            ring_events,
            inbox_depth: self.mesh.depth(self.id),
            backlog: self.outgoing_len,
            latency_buckets,
            latency_count: self.latency.len(),
            top_channels: ranked,
        }
    }
}

/// Cluster mode: an event sequenced in Redis, encoded once on its home shard.
fn encode_raw(raw: RawEvent, ingest: Instant, eager: FormatSet) -> Arc<Event> {
    Arc::new(Event::new(
        raw.channel,
        raw.event,
        raw.seq,
        raw.ts,
        ingest,
        raw.data,
        eager,
    ))
}

fn new_owned(
    rules: &ChannelRules,
    channel: &str,
    shards: usize,
    epoch: &Arc<str>,
    cluster: bool,
) -> Owned {
    // Names reaching a home shard were resolved at ingress; a rule change cannot happen at
    // run time, so the fallback is only for robustness.
    let policy = rules
        .resolve(channel)
        .map(|r| r.policy.clone())
        .unwrap_or(ChannelPolicy::stream(0));
    Owned {
        seq: 0,
        epoch: epoch.clone(),
        join: if cluster {
            Join::Joining(Vec::new())
        } else {
            Join::Local
        },
        join_id: 0,
        ring: Ring::new(policy.history),
        kind: policy.kind,
        interest: vec![0; shards],
        dialects: [0; Format::COUNT],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snapshot_folds_latency_into_cumulative_buckets() {
        let cfg = Arc::new(EngineConfig {
            rules: ChannelRules::defaults(),
            queue: QueueLimits {
                max_frames: 16,
                max_bytes: 1 << 16,
                max_lag: Duration::from_secs(5),
            },
            epoch: Arc::from("e"),
            cluster: None,
            acks: None,
        });
        let mut shard: Shard<crate::engine::harness::FakeConn> =
            Shard::new(0, cfg, Arc::new(Mesh::new(1, 64)), Instant::now());
        for ns in [5_000, 30_000, 30_000, 2_000_000_000, 30_000_000_000] {
            shard.latency.record(ns).unwrap();
        }
        let snap = shard.snapshot(0);
        let at = |le: u64| {
            snap.latency_buckets[LATENCY_BUCKETS_NS.iter().position(|&b| b == le).unwrap()]
        };
        assert_eq!(at(10_000), 1);
        assert_eq!(at(25_000), 1);
        assert_eq!(at(50_000), 3);
        assert_eq!(at(2_500_000_000), 4);
        assert_eq!(at(5_000_000_000), 4, "30 s is only in +Inf");
        assert_eq!(snap.latency_count, 5);
    }

    #[test]
    fn home_is_stable_and_spread() {
        assert_eq!(home_of("quotes.AAPL", 4), home_of("quotes.AAPL", 4));
        let mut counts = [0usize; 4];
        for i in 0..4000 {
            counts[home_of(&format!("bench.{i}"), 4)] += 1;
        }
        assert!(counts.iter().all(|&c| c > 800), "{counts:?}");
    }
}
