//! The Redis bridge: one thread per node, between the shards and Redis (see the module
//! docs of [`crate::cluster`]). It owns the Redis connections and the node's view of every
//! channel it watches, a `Tracker` each, which decides what becomes of every pub/sub
//! message and every read; the bridge does the I/O: Redis calls, reconnects with backoff,
//! and sending the tracker's answers to the home shards. Shards talk to it through two
//! queues: a bounded one for publishes (full → `overloaded`) and one for control messages
//! (join, leave, presence), which the bridge drains without ever waiting on Redis. It talks
//! to shards through their inboxes, in one FIFO per shard, so a channel's join answer, fills
//! and live events reach its home shard in order.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ahash::{AHashMap, AHashSet};
use bytes::Bytes;
use futures_util::{FutureExt, StreamExt};
use redis::aio::{MultiplexedConnection, PubSubSink, PubSubStream};
use redis::{AsyncConnectionConfig, Value};
use tokio::sync::{mpsc, oneshot};

use super::config::{redacted_url, ClusterConfig};
use super::tracker::{Live, Read, ReadAction, Snapshot, Tracker};
use super::wire::{self, Keys};
use crate::engine::channel::{ChannelKind, ChannelRules};
use crate::engine::shard::{PubReply, Remote, ShardMsg, SyncMsg};
use crate::engine::signal::Mesh;
use crate::protocol::op::PubEvent;

/// Events passed to a shard's outbox beyond which further live events of a channel are
/// dropped and the channel re-read from Redis once the shard catches up: bounds the
/// bridge's memory when a shard stalls.
const OUTBOX_LIMIT: usize = 64 * 1024;
/// Events per publish script call.
pub(super) const SCRIPT_BATCH: usize = 256;
/// Redis connect and response timeout.
const REDIS_TIMEOUT: Duration = Duration::from_secs(2);
/// Reconnect backoff bounds.
const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(3);
/// Presence writes are coalesced over this interval.
const PRESENCE_FLUSH: Duration = Duration::from_millis(50);
/// A link must hold this long before a failure starts the reconnect backoff over.
const STABLE_LINK: Duration = Duration::from_secs(10);
/// Delay before reading a channel again after a read failed (connection intact).
const SYNC_RETRY: Duration = Duration::from_secs(1);
/// How long a join waits for an unreachable Redis before it is answered without history.
const JOIN_GRACE: Duration = Duration::from_secs(1);
/// Pub/sub messages handled before the shards' inboxes are written.
const MESSAGE_BATCH: usize = 256;
/// Timer granularity while idle, and while waiting for room in a shard's inbox.
const IDLE_TICK: Duration = Duration::from_millis(10);
const RETRY_TICK: Duration = Duration::from_micros(200);
/// Channels per SUBSCRIBE command when resubscribing after a reconnect.
const SUBSCRIBE_CHUNK: usize = 1000;

/// A publish waiting for Redis.
#[derive(Debug)]
pub(super) struct PublishJob {
    pub(super) events: Vec<(u16, PubEvent)>,
    pub(super) reply: PubReply,
}

/// A message from a shard to the bridge.
#[derive(Debug)]
pub enum Control {
    /// The home shard has a first subscriber for `channel` on this node.
    Join {
        /// Identifies this join in the answer.
        join_id: u64,
        /// Channel.
        channel: Arc<str>,
        /// Its home shard.
        home: usize,
        /// Its kind (a conflated channel may skip sequence numbers; a stream may not).
        kind: ChannelKind,
        /// Events of history to read.
        history: usize,
    },
    /// The home shard has no subscriber left for `channel`.
    Leave {
        /// Channel.
        channel: Arc<str>,
    },
    /// The channel's subscriber count on this node.
    Subs {
        /// Channel.
        channel: Arc<str>,
        /// Subscriptions on this node.
        count: u32,
    },
    /// A connection of `user` was admitted locally; check the cluster-wide limit.
    Admit {
        /// User.
        user: Arc<str>,
        /// Shard serving the connection.
        shard: usize,
        /// Connection id.
        conn: u64,
    },
    /// A connection of `user` ended.
    UserLeft {
        /// User.
        user: Arc<str>,
    },
    /// A cluster-wide count for the presence endpoint.
    Presence {
        /// What to count.
        query: PresenceQuery,
        /// The total, or `None` while Redis is unreachable.
        reply: oneshot::Sender<Option<u64>>,
    },
}

/// What `/api/presence` counts.
#[derive(Debug, Clone)]
pub enum PresenceQuery {
    /// Open connections of a user.
    User(Arc<str>),
    /// Subscribers of a channel.
    Channel(Arc<str>),
}

/// The bridge's state as the status and metrics endpoints see it.
#[derive(Debug, Default)]
pub struct ClusterStatus {
    /// Connected to Redis.
    pub up: AtomicBool,
    /// Has been connected since start (`/ready` waits for it).
    pub ever_up: AtomicBool,
    /// Connections to Redis lost.
    pub disconnects: AtomicU64,
    /// Channels reset (history lost): subscribers were told `recovered: false`.
    pub resets: AtomicU64,
    /// Sequence gaps filled in from Redis history.
    pub fills: AtomicU64,
    /// Publishes refused because Redis was unreachable.
    pub publish_failures: AtomicU64,
    /// Events received from Redis pub/sub.
    pub events_in: AtomicU64,
    /// Events waiting for the publish pipeline.
    pub queued_events: std::sync::atomic::AtomicUsize,
    /// Events sent to Redis whose answer has not come back yet.
    pub in_flight: AtomicU64,
    /// Live nodes at the last heartbeat.
    pub live_nodes: AtomicU64,
    /// The last Redis error, for the status page.
    pub last_error: Mutex<String>,
}

/// A node's handle on its Redis bridge.
#[derive(Debug)]
pub struct Cluster {
    /// Settings.
    pub cfg: ClusterConfig,
    /// Bridge state.
    pub status: Arc<ClusterStatus>,
    publish_tx: mpsc::Sender<PublishJob>,
    control_tx: mpsc::UnboundedSender<Control>,
}

impl crate::engine::port::ClusterPort for Cluster {
    fn publish(&self, events: Vec<(u16, PubEvent)>, reply: PubReply) -> Result<(), PubReply> {
        Cluster::publish(self, events, reply)
    }

    fn join(
        &self,
        join_id: u64,
        channel: Arc<str>,
        home: usize,
        kind: ChannelKind,
        history: usize,
    ) {
        self.control(Control::Join {
            join_id,
            channel,
            home,
            kind,
            history,
        });
    }

    fn leave(&self, channel: Arc<str>) {
        self.control(Control::Leave { channel });
    }

    fn subscribers(&self, channel: Arc<str>, count: u32) {
        self.control(Control::Subs { channel, count });
    }
}

impl Cluster {
    /// Starts the bridge thread; it connects (and keeps reconnecting) in the background.
    pub fn start(
        cfg: ClusterConfig,
        rules: ChannelRules,
        mesh: Arc<Mesh<ShardMsg>>,
        max_connections_per_user: usize,
    ) -> anyhow::Result<Arc<Cluster>> {
        let client = redis::Client::open(cfg.redis_url.as_str())?;
        let (publish_tx, publish_rx) = mpsc::channel(cfg.publish_queue);
        let (control_tx, control_rx) = mpsc::unbounded_channel();
        let status = Arc::new(ClusterStatus::default());
        let bridge = Bridge {
            keys: Keys::new(&cfg.prefix),
            cfg: cfg.clone(),
            rules,
            mesh: mesh.clone(),
            status: status.clone(),
            client,
            max_per_user: max_connections_per_user,
            link: None,
            gen: 0,
            connecting: false,
            backoff: BACKOFF_MIN,
            next_attempt: Instant::now(),
            next_heartbeat: Instant::now(),
            channels: AHashMap::new(),
            next_token: 1,
            users: AHashMap::new(),
            subs: AHashMap::new(),
            dirty_users: AHashSet::new(),
            dirty_subs: AHashSet::new(),
            outbox: (0..mesh.len()).map(|_| VecDeque::new()).collect(),
            starved: Vec::new(),
            pending_joins: VecDeque::new(),
            retry_syncs: VecDeque::new(),
            connected_at: Instant::now(),
        };
        std::thread::Builder::new()
            .name("quotecast-redis".into())
            .spawn(move || {
                let rt = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(rt) => rt,
                    Err(e) => {
                        tracing::error!(error = %e, "cannot start the Redis bridge runtime");
                        return;
                    }
                };
                let local = tokio::task::LocalSet::new();
                local.block_on(&rt, bridge.run(publish_rx, control_rx));
            })?;
        Ok(Arc::new(Cluster {
            cfg,
            status,
            publish_tx,
            control_tx,
        }))
    }

    /// Queues a publish; gives the reply back when the queue is full.
    /// Refused when `publish_queue` events already wait (a batch larger than that still
    /// passes an empty queue), so the wait for Redis is bounded in events, not in ops.
    pub fn publish(&self, events: Vec<(u16, PubEvent)>, reply: PubReply) -> Result<(), PubReply> {
        let n = events.len();
        let queued = &self.status.queued_events;
        let before = queued.fetch_add(n, Ordering::Relaxed);
        if before > 0 && before + n > self.cfg.publish_queue {
            queued.fetch_sub(n, Ordering::Relaxed);
            return Err(reply);
        }
        self.publish_tx
            .try_send(PublishJob { events, reply })
            .map_err(|e| {
                queued.fetch_sub(n, Ordering::Relaxed);
                match e {
                    mpsc::error::TrySendError::Full(j) | mpsc::error::TrySendError::Closed(j) => {
                        j.reply
                    }
                }
            })
    }

    /// Sends a control message (never blocks; the bridge drains these without waiting on
    /// Redis, so the queue stays short).
    pub fn control(&self, msg: Control) {
        let _ = self.control_tx.send(msg);
    }

    /// Whether Redis is reachable now.
    pub fn is_up(&self) -> bool {
        self.status.up.load(Ordering::Relaxed)
    }

    /// The Redis URL without its password.
    pub fn redis_url(&self) -> String {
        redacted_url(&self.cfg.redis_url)
    }
}

/// The script hashes, loaded on every (re)connect.
#[derive(Debug, Clone)]
pub(super) struct Shas {
    /// The `run_id` of the Redis process this connection reaches (a restarted or promoted
    /// Redis has another): written into every channel it sequences, so that a Redis that
    /// comes back with older data is noticed by the first script to touch the channel.
    pub(super) run_id: String,
    pub(super) publish: String,
    pub(super) sync: String,
    pub(super) heartbeat: String,
    pub(super) count: String,
}

/// A live connection to Redis.
pub(super) struct Link {
    pub(super) conn: MultiplexedConnection,
    pub(super) sink: PubSubSink,
    pub(super) shas: Shas,
}

/// A channel read, or the error and whether it broke the link.
type SyncResult = Result<Snapshot, (String, bool)>;

/// What a spawned Redis call reports back to the bridge loop.
pub(super) enum Done {
    Connected(Box<(MultiplexedConnection, PubSubSink, PubSubStream, Shas)>),
    ConnectFailed(String),
    /// The connection `gen` failed (I/O, timeout, scripts gone): reconnect.
    Broken(u64, String),
    /// A Redis call failed without harm to the connection (e.g. Redis out of memory).
    Failed(String),
    Resubscribed(u64, Vec<Arc<str>>),
    Synced {
        channel: Arc<str>,
        token: u64,
        result: SyncResult,
    },
    Admitted {
        user: Arc<str>,
        shard: usize,
        conn: u64,
        total: u64,
    },
    LiveNodes(u64),
}

/// The bridge's view of one watched channel: where it goes, and its [`Tracker`], which
/// makes every decision about its events.
#[derive(Debug)]
struct Chan {
    /// The channel's name (kept here so a pub/sub message costs one map lookup).
    name: Arc<str>,
    join_id: u64,
    home: usize,
    /// Events of history to read.
    history: usize,
    /// Epoch and last sequence number passed on, and the state of the reads.
    tracker: Tracker,
}

pub(super) struct Bridge {
    pub(super) cfg: ClusterConfig,
    pub(super) keys: Keys,
    pub(super) rules: ChannelRules,
    pub(super) mesh: Arc<Mesh<ShardMsg>>,
    pub(super) status: Arc<ClusterStatus>,
    pub(super) client: redis::Client,
    pub(super) max_per_user: usize,
    pub(super) link: Option<Link>,
    /// Connection generation: results of calls on an older connection are ignored.
    pub(super) gen: u64,
    pub(super) connecting: bool,
    pub(super) backoff: Duration,
    pub(super) next_attempt: Instant,
    pub(super) next_heartbeat: Instant,
    channels: AHashMap<Arc<str>, Chan>,
    pub(super) next_token: u64,
    pub(super) users: AHashMap<Arc<str>, u32>,
    pub(super) subs: AHashMap<Arc<str>, u32>,
    pub(super) dirty_users: AHashSet<Arc<str>>,
    pub(super) dirty_subs: AHashSet<Arc<str>>,
    /// Messages for each shard, in order, waiting for room in its inbox.
    pub(super) outbox: Vec<VecDeque<Remote>>,
    /// Channels whose events were dropped for a full outbox, to re-read once it drains.
    pub(super) starved: Vec<Arc<str>>,
    /// Joins waiting for Redis: answered without history at the instant given.
    pub(super) pending_joins: VecDeque<(Instant, Arc<str>, u64)>,
    /// Channels to read again after a failed read, at the instant given.
    pub(super) retry_syncs: VecDeque<(Instant, Arc<str>)>,
    /// When the current link was established.
    pub(super) connected_at: Instant,
}

/// The shared view of the current connection for the publisher task.
pub(super) type SharedLink = std::rc::Rc<std::cell::RefCell<Option<PubLink>>>;

/// What the publisher needs of the current connection.
#[derive(Clone)]
pub(super) struct PubLink {
    /// Connection generation (a failure is reported with it).
    pub(super) gen: u64,
    pub(super) conn: MultiplexedConnection,
    /// The PUBLISH script's hash.
    pub(super) sha: String,
    /// The Redis process's `run_id` (see [`Shas::run_id`]).
    pub(super) run_id: String,
}

impl Bridge {
    async fn run(
        mut self,
        publish_rx: mpsc::Receiver<PublishJob>,
        mut control_rx: mpsc::UnboundedReceiver<Control>,
    ) {
        let (done_tx, mut done_rx) = mpsc::unbounded_channel::<Done>();
        let shared: SharedLink = Default::default();
        tokio::task::spawn_local(super::publish::publisher(
            publish_rx,
            shared.clone(),
            self.mesh.clone(),
            self.status.clone(),
            self.keys.clone(),
            self.rules.clone(),
            self.cfg.history_ttl.as_secs(),
            self.cfg.idempotency_window.as_secs(),
            done_tx.clone(),
        ));
        let mut stream: Option<PubSubStream> = None;
        let mut last_presence = Instant::now();
        loop {
            tokio::select! {
                biased;
                msg = control_rx.recv() => match msg {
                    Some(m) => self.on_control(m, &done_tx),
                    None => return,
                },
                done = done_rx.recv() => {
                    let Some(done) = done else { return };
                    if let Some(s) = self.on_done(done, &done_tx, &shared) {
                        stream = Some(s);
                    }
                    if self.link.is_none() {
                        stream = None;
                    }
                }
                msg = next_message(&mut stream) => match msg {
                    Some(m) => {
                        self.on_message(m, &done_tx);
                        // Whatever else has arrived goes to the shards in the same batch.
                        for _ in 1..MESSAGE_BATCH {
                            match stream.as_mut().and_then(|s| s.next().now_or_never()) {
                                Some(Some(m)) => self.on_message(m, &done_tx),
                                _ => break,
                            }
                        }
                    }
                    None => {
                        stream = None;
                        let gen = self.gen;
                        // The command connection may be fine: publishes keep going on it
                        // (they land in Redis history) while both are re-established.
                        self.on_broken(gen, "pub/sub connection closed".into(), None);
                    }
                },
                // Wakes for quick retries while a shard's inbox is full, otherwise for the
                // timed work below.
                _ = tokio::time::sleep(if self.outbox.iter().any(|q| !q.is_empty()) || !self.starved.is_empty() {
                    RETRY_TICK
                } else {
                    IDLE_TICK
                }) => {}
            }
            // Timed work, checked after every event so a busy stream cannot starve it.
            let now = Instant::now();
            if self.link.is_none() && !self.connecting && now >= self.next_attempt {
                self.connect(&done_tx);
            }
            if self.link.is_some() && now >= self.next_heartbeat {
                self.next_heartbeat = now + self.cfg.presence_ttl / 3;
                self.heartbeat(&done_tx);
            }
            while let Some((at, _, _)) = self.pending_joins.front() {
                if *at > now {
                    break;
                }
                if let Some((_, ch, id)) = self.pending_joins.pop_front() {
                    if self
                        .channels
                        .get(&ch)
                        .is_some_and(|c| c.join_id == id && !c.tracker.announced())
                    {
                        self.announce_unknown(&ch);
                    }
                }
            }
            while self.retry_syncs.front().is_some_and(|(at, _)| *at <= now) {
                if let Some((_, ch)) = self.retry_syncs.pop_front() {
                    let due = self.channels.get(&ch).is_some_and(|c| c.tracker.read_due());
                    if due {
                        self.start_sync(&ch, &done_tx);
                    }
                }
            }
            if now.duration_since(last_presence) >= PRESENCE_FLUSH {
                last_presence = now;
                self.flush_presence(&done_tx);
            }
            self.flush_outbox();
            self.restart_starved(&done_tx);
        }
    }

    // ---- shards -----------------------------------------------------------------------

    fn send(&mut self, shard: usize, item: Remote) {
        self.outbox[shard].push_back(item);
    }

    fn flush_outbox(&mut self) {
        for (to, q) in self.outbox.iter_mut().enumerate() {
            while !q.is_empty() {
                let n = q.len().min(1024);
                let batch: Vec<Remote> = q.drain(..n).collect();
                if let Err(ShardMsg::Batch(back)) = self.mesh.send(to, ShardMsg::Batch(batch)) {
                    for item in back.into_iter().rev() {
                        q.push_front(item);
                    }
                    break;
                }
            }
        }
    }

    fn restart_starved(&mut self, done_tx: &mpsc::UnboundedSender<Done>) {
        if self.starved.is_empty() || self.link.is_none() {
            return;
        }
        let starved = std::mem::take(&mut self.starved);
        for ch in starved {
            let Some(c) = self.channels.get(&ch) else {
                continue;
            };
            if self.outbox[c.home].len() > OUTBOX_LIMIT / 2 {
                self.starved.push(ch);
                continue;
            }
            self.start_sync(&ch, done_tx);
        }
    }

    // ---- control ----------------------------------------------------------------------

    fn on_control(&mut self, m: Control, done_tx: &mpsc::UnboundedSender<Done>) {
        match m {
            Control::Join {
                join_id,
                channel,
                home,
                kind,
                history,
            } => {
                self.channels.insert(
                    channel.clone(),
                    Chan {
                        name: channel.clone(),
                        join_id,
                        home,
                        history,
                        tracker: Tracker::new(kind),
                    },
                );
                if self.link.is_some() {
                    self.subscribe_and_sync(channel, done_tx);
                } else {
                    // Give Redis a moment (a node just started, a blip); then serve the
                    // subscriber without history: it learns the real epoch (a `resync`)
                    // once Redis is back.
                    self.pending_joins
                        .push_back((Instant::now() + JOIN_GRACE, channel, join_id));
                }
            }
            Control::Leave { channel } => {
                self.channels.remove(&channel);
                if let Some(link) = &self.link {
                    let mut sink = link.sink.clone();
                    let name = self.keys.pubsub(&channel);
                    let gen = self.gen;
                    let tx = done_tx.clone();
                    tokio::task::spawn_local(async move {
                        if let Err(e) = sink.unsubscribe(name).await {
                            report(&tx, gen, e);
                        }
                    });
                }
            }
            Control::Subs { channel, count } => {
                if count == 0 {
                    self.subs.remove(&channel);
                } else {
                    self.subs.insert(channel.clone(), count);
                }
                self.dirty_subs.insert(channel);
            }
            Control::Admit { user, shard, conn } => self.admit(user, shard, conn, done_tx),
            Control::UserLeft { user } => {
                if let Some(n) = self.users.get_mut(&user) {
                    *n = n.saturating_sub(1);
                    if *n == 0 {
                        self.users.remove(&user);
                    }
                }
                self.dirty_users.insert(user);
            }
            Control::Presence { query, reply } => self.presence(query, reply, done_tx),
        }
    }

    /// Tells the home shard a channel's state is unknown (Redis unreachable at join).
    fn announce_unknown(&mut self, channel: &Arc<str>) {
        let Some(c) = self.channels.get_mut(channel) else {
            return;
        };
        c.tracker.announce_unknown();
        let (home, join_id) = (c.home, c.join_id);
        self.send(
            home,
            Remote::Sync(Box::new(SyncMsg {
                channel: channel.clone(),
                epoch: Arc::from(""),
                seq: 0,
                events: Vec::new(),
                reset: false,
                join_id,
            })),
        );
    }

    // ---- reading channels ---------------------------------------------------------------

    /// SUBSCRIBE, then read the channel: the order matters, so that every event after the
    /// read arrives by pub/sub.
    fn subscribe_and_sync(&mut self, channel: Arc<str>, done_tx: &mpsc::UnboundedSender<Done>) {
        let Some(link) = &self.link else { return };
        let Some(c) = self.channels.get_mut(&channel) else {
            return;
        };
        let token = self.next_token;
        self.next_token += 1;
        c.tracker.begin_read(token);
        let mut sink = link.sink.clone();
        let name = self.keys.pubsub(&channel);
        let read = self.sync_call(&channel, token);
        let tx = done_tx.clone();
        let gen = self.gen;
        tokio::task::spawn_local(async move {
            if let Err(e) = sink.subscribe(name).await {
                report(&tx, gen, e);
                return;
            }
            if let Some(read) = read {
                let _ = tx.send(read.await);
            }
        });
    }

    /// Reads the channel again (already subscribed): a gap fill or a reset.
    fn start_sync(&mut self, channel: &Arc<str>, done_tx: &mpsc::UnboundedSender<Done>) {
        let token = self.next_token;
        self.next_token += 1;
        let Some(c) = self.channels.get_mut(channel) else {
            return;
        };
        if self.link.is_none() {
            c.tracker.want_read();
            return;
        }
        c.tracker.begin_read(token);
        if let Some(read) = self.sync_call(channel, token) {
            let tx = done_tx.clone();
            tokio::task::spawn_local(async move {
                let _ = tx.send(read.await);
            });
        }
    }

    /// The SYNC script call for `channel` as a future reporting [`Done::Synced`].
    fn sync_call(
        &self,
        channel: &Arc<str>,
        token: u64,
    ) -> Option<impl std::future::Future<Output = Done> + 'static> {
        let link = self.link.as_ref()?;
        let c = self.channels.get(channel)?;
        let mut conn = link.conn.clone();
        let mut cmd = redis::cmd("EVALSHA");
        cmd.arg(&link.shas.sync)
            .arg(2)
            .arg(self.keys.meta(channel))
            .arg(self.keys.stream(channel))
            .arg(new_epoch())
            .arg(self.cfg.history_ttl.as_secs())
            .arg(c.history)
            .arg(&**c.tracker.epoch())
            .arg(c.tracker.last())
            .arg(&link.shas.run_id);
        let channel = channel.clone();
        Some(async move {
            let r: redis::RedisResult<Value> = cmd.query_async(&mut conn).await;
            let result = match r {
                Ok(v) => wire::parse_sync(&channel, v)
                    .map(|(epoch, seq, events)| Snapshot { epoch, seq, events })
                    .ok_or_else(|| ("bad SYNC reply".into(), false)),
                Err(e) => Err((e.to_string(), breaks_link(&e))),
            };
            Done::Synced {
                channel,
                token,
                result,
            }
        })
    }

    fn on_synced(
        &mut self,
        channel: Arc<str>,
        token: u64,
        result: SyncResult,
        done_tx: &mpsc::UnboundedSender<Done>,
        shared: &SharedLink,
    ) {
        let Some(c) = self.channels.get_mut(&channel) else {
            return;
        };
        let snap = match result {
            Ok(snap) => snap,
            Err((e, breaks)) => {
                if !c.tracker.read_failed(token) {
                    return;
                }
                if breaks {
                    let gen = self.gen;
                    self.on_broken(gen, e, Some(shared));
                } else {
                    // The connection is fine; read the channel again a little later.
                    tracing::warn!(channel = %channel, error = %e, "cannot read a channel from Redis; retrying");
                    self.note_error(&e);
                    self.retry_syncs
                        .push_back((Instant::now() + SYNC_RETRY, channel));
                }
                return;
            }
        };
        let Some(Read { action, again }) = c.tracker.on_read(token, snap) else {
            return;
        };
        let (home, join_id) = (c.home, c.join_id);
        match action {
            ReadAction::Answer(snap) => self.send(home, sync_msg(&channel, join_id, snap, false)),
            ReadAction::Fill(events) => {
                self.status.fills.fetch_add(1, Ordering::Relaxed);
                for e in events {
                    self.send(home, Remote::Sequenced(Box::new(e)));
                }
            }
            ReadAction::Latest(e) => {
                if let Some(e) = e {
                    self.send(home, Remote::Sequenced(Box::new(e)));
                }
            }
            ReadAction::UpToDate => {}
            ReadAction::Reset(snap, why) => {
                tracing::info!(channel = %channel, epoch = %snap.epoch, seq = snap.seq, why = ?why, "channel history lost; its subscribers resync");
                self.status.resets.fetch_add(1, Ordering::Relaxed);
                self.send(home, sync_msg(&channel, join_id, snap, true));
            }
        }
        if again {
            self.start_sync(&channel, done_tx);
        }
    }

    fn on_message(&mut self, msg: redis::Msg, done_tx: &mpsc::UnboundedSender<Done>) {
        self.status.events_in.fetch_add(1, Ordering::Relaxed);
        let Ok(name) = std::str::from_utf8(msg.get_channel_name().as_bytes()) else {
            return;
        };
        let Some(ch) = self.keys.channel_of(name) else {
            return;
        };
        let Some(c) = self.channels.get_mut(ch) else {
            return;
        };
        let channel = c.name.clone();
        let Some(ev) = wire::parse_message(&channel, Bytes::from(msg.get_payload_bytes().to_vec()))
        else {
            tracing::warn!(channel = %channel, "malformed message on a cluster channel");
            return;
        };
        let room = self.outbox[c.home].len() < OUTBOX_LIMIT;
        match c.tracker.on_live(&ev.epoch, ev.seq, room) {
            Live::Deliver => {
                let home = c.home;
                self.send(home, Remote::Sequenced(Box::new(ev)));
            }
            Live::Duplicate | Live::Held => {}
            Live::Gap | Live::NewEpoch => self.start_sync(&channel, done_tx),
            Live::Starved => self.starved.push(channel),
        }
    }

    // ---- connection -------------------------------------------------------------------

    fn connect(&mut self, done_tx: &mpsc::UnboundedSender<Done>) {
        self.connecting = true;
        let client = self.client.clone();
        let tx = done_tx.clone();
        let sentinel = (!self.cfg.sentinel_master.is_empty())
            .then(|| (self.cfg.sentinel_master.clone(), self.cfg.sentinels.clone()));
        tokio::task::spawn_local(async move {
            let opened = match sentinel {
                None => open(client, false).await,
                Some((master, sentinels)) => {
                    match super::sentinel::master_client(
                        &client,
                        &master,
                        &sentinels,
                        REDIS_TIMEOUT,
                    )
                    .await
                    {
                        Ok(c) => open(c, true).await,
                        Err(e) => Err(e),
                    }
                }
            };
            let _ = tx.send(match opened {
                Ok(parts) => Done::Connected(Box::new(parts)),
                Err(e) => Done::ConnectFailed(e.to_string()),
            });
        });
    }

    fn on_done(
        &mut self,
        done: Done,
        done_tx: &mpsc::UnboundedSender<Done>,
        shared: &SharedLink,
    ) -> Option<PubSubStream> {
        match done {
            Done::Connected(parts) => {
                let (conn, sink, stream, shas) = *parts;
                self.connecting = false;
                self.gen += 1;
                self.connected_at = Instant::now();
                *shared.borrow_mut() = Some(PubLink {
                    gen: self.gen,
                    conn: conn.clone(),
                    sha: shas.publish.clone(),
                    run_id: shas.run_id.clone(),
                });
                self.link = Some(Link { conn, sink, shas });
                self.status.up.store(true, Ordering::Relaxed);
                self.status.ever_up.store(true, Ordering::Relaxed);
                if let Ok(mut last) = self.status.last_error.lock() {
                    last.clear();
                }
                tracing::info!(redis = %redacted_url(&self.cfg.redis_url), node = %self.cfg.node_id, "connected to Redis");
                self.rewrite_presence(done_tx);
                self.next_heartbeat = Instant::now();
                // Every watched channel: subscribe again, then re-read.
                let names: Vec<Arc<str>> = self.channels.keys().cloned().collect();
                for c in self.channels.values_mut() {
                    c.tracker.abandon_read();
                }
                let mut sink = self.link.as_ref().map(|l| l.sink.clone())?;
                let keys = self.keys.clone();
                let gen = self.gen;
                let tx = done_tx.clone();
                tokio::task::spawn_local(async move {
                    for chunk in names.chunks(SUBSCRIBE_CHUNK) {
                        let ps: Vec<String> = chunk.iter().map(|c| keys.pubsub(c)).collect();
                        if let Err(e) = sink.subscribe(ps).await {
                            report(&tx, gen, e);
                            return;
                        }
                    }
                    let _ = tx.send(Done::Resubscribed(gen, names));
                });
                return Some(stream);
            }
            Done::ConnectFailed(e) => {
                self.connecting = false;
                self.note_error(&e);
                self.next_attempt = Instant::now() + jitter(self.backoff);
                self.backoff = (self.backoff * 2).min(BACKOFF_MAX);
            }
            Done::Broken(gen, e) => self.on_broken(gen, e, Some(shared)),
            Done::Failed(e) => {
                tracing::warn!(error = %e, "a Redis command failed");
                self.note_error(&e);
            }
            Done::Resubscribed(gen, names) => {
                if gen == self.gen {
                    for ch in names {
                        let pending = self.channels.get(&ch).is_some_and(|c| c.tracker.read_due());
                        if pending {
                            self.start_sync(&ch, done_tx);
                        }
                    }
                }
            }
            Done::Synced {
                channel,
                token,
                result,
            } => self.on_synced(channel, token, result, done_tx, shared),
            Done::Admitted {
                user,
                shard,
                conn,
                total,
            } => {
                if total > self.max_per_user as u64 {
                    let reason = format!(
                        "too many connections for this user across the cluster (limit {})",
                        self.max_per_user
                    );
                    tracing::info!(user = %user, total, "connection refused by the cluster-wide limit");
                    self.send(shard, Remote::Refuse { conn, reason });
                }
            }
            Done::LiveNodes(n) => self.status.live_nodes.store(n, Ordering::Relaxed),
        }
        None
    }

    /// The link failed: reconnect. With `shared`, the publisher stops using the command
    /// connection at once (it failed); without, it keeps it until the new link replaces it.
    fn on_broken(&mut self, gen: u64, error: String, shared: Option<&SharedLink>) {
        if gen != self.gen {
            return;
        }
        // The command connection failed (perhaps after the pub/sub one, which left it to
        // the publisher): later publishes are refused unsent (`unavailable`) until the new
        // link, instead of going out on a dead connection (`outcome_unknown`).
        if let Some(shared) = shared {
            let mut s = shared.borrow_mut();
            if s.as_ref().is_some_and(|l| l.gen == gen) {
                *s = None;
            }
        }
        if self.link.is_none() {
            return;
        }
        self.link = None;
        self.status.up.store(false, Ordering::Relaxed);
        self.status.disconnects.fetch_add(1, Ordering::Relaxed);
        tracing::warn!(error = %error, "lost the connection to Redis; serving local connections, reconnecting");
        self.note_error(&error);
        for c in self.channels.values_mut() {
            c.tracker.abandon_read();
        }
        // A link that held for a while starts the backoff over; one that keeps failing
        // soon after connecting (a persistent error) keeps backing off.
        if self.connected_at.elapsed() > STABLE_LINK {
            self.backoff = BACKOFF_MIN;
        }
        self.next_attempt = Instant::now() + jitter(self.backoff);
        self.backoff = (self.backoff * 2).min(BACKOFF_MAX);
    }

    fn note_error(&self, e: &str) {
        if let Ok(mut last) = self.status.last_error.lock() {
            *last = e.to_string();
        }
    }
}

/// Whether a Redis error means the connection (or its scripts) is gone, or the server is no
/// longer the master (`READONLY`: demoted by a failover), so the bridge must reconnect (and,
/// with Sentinel, find the new master); other errors (out of memory, a wrong key type) fail only the command.
pub(super) fn breaks_link(e: &redis::RedisError) -> bool {
    e.is_io_error()
        || e.is_connection_dropped()
        || e.is_timeout()
        || e.is_unrecoverable_error()
        || matches!(
            e.kind(),
            redis::ErrorKind::Server(
                redis::ServerErrorKind::NoScript | redis::ServerErrorKind::ReadOnly
            )
        )
}

/// Reports a failed Redis call to the bridge loop.
pub(super) fn report(tx: &mpsc::UnboundedSender<Done>, gen: u64, e: redis::RedisError) {
    let _ = if breaks_link(&e) {
        tx.send(Done::Broken(gen, e.to_string()))
    } else {
        tx.send(Done::Failed(e.to_string()))
    };
}

/// Waits for the next pub/sub message, forever when not connected.
async fn next_message(stream: &mut Option<PubSubStream>) -> Option<redis::Msg> {
    match stream {
        Some(s) => s.next().await,
        None => std::future::pending().await,
    }
}

/// Opens both connections and loads the scripts.
/// With `must_be_master` (Sentinel), first checks that the server is a master.
async fn open(
    client: redis::Client,
    must_be_master: bool,
) -> redis::RedisResult<(MultiplexedConnection, PubSubSink, PubSubStream, Shas)> {
    let cfg = AsyncConnectionConfig::new()
        .set_connection_timeout(Some(REDIS_TIMEOUT))
        .set_response_timeout(Some(REDIS_TIMEOUT));
    let mut conn = client
        .get_multiplexed_async_connection_with_config(&cfg)
        .await?;
    if must_be_master {
        super::sentinel::check_master(&mut conn).await?;
    }
    let pubsub = tokio::time::timeout(REDIS_TIMEOUT, client.get_async_pubsub())
        .await
        .map_err(|_| {
            redis::RedisError::from(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "pub/sub connect timed out",
            ))
        })??;
    let (sink, stream) = pubsub.split();
    let load = |src: &'static str| {
        let mut c = redis::cmd("SCRIPT");
        c.arg("LOAD").arg(src);
        c
    };
    let mut p = redis::pipe();
    for c in [
        load(wire::PUBLISH),
        load(wire::SYNC),
        load(wire::HEARTBEAT),
        load(wire::COUNT),
    ] {
        p.add_command(c);
    }
    p.cmd("INFO").arg("server");
    let mut replies: Vec<String> = p.query_async(&mut conn).await?;
    let info = replies.pop().unwrap_or_default();
    let run_id = wire::run_id(&info).ok_or_else(|| {
        redis::RedisError::from((
            redis::ErrorKind::UnexpectedReturnType,
            "INFO server without run_id",
        ))
    })?;
    let [publish, sync, heartbeat, count]: [String; 4] = replies.try_into().map_err(|_| {
        redis::RedisError::from((redis::ErrorKind::UnexpectedReturnType, "SCRIPT LOAD"))
    })?;
    Ok((
        conn,
        sink,
        stream,
        Shas {
            run_id,
            publish,
            sync,
            heartbeat,
            count,
        },
    ))
}

/// A channel's state for its home shard: the join answer, or with `reset` a resync.
fn sync_msg(channel: &Arc<str>, join_id: u64, snap: Snapshot, reset: bool) -> Remote {
    Remote::Sync(Box::new(SyncMsg {
        channel: channel.clone(),
        epoch: snap.epoch,
        seq: snap.seq,
        events: snap.events,
        reset,
        join_id,
    }))
}

/// A fresh random epoch (hex), offered to Redis for a channel that has none.
pub(super) fn new_epoch() -> String {
    format!("{:016x}", rand::random::<u64>())
}

fn jitter(d: Duration) -> Duration {
    d.mul_f64(0.5 + rand::random::<f64>() * 0.5)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jitter_stays_within_half_to_full() {
        for _ in 0..100 {
            let j = jitter(Duration::from_millis(100));
            assert!(j >= Duration::from_millis(50) && j <= Duration::from_millis(100));
        }
    }
}
