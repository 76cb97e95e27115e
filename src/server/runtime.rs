//! The thread-per-core runtime (server layer): one thread per shard, each a
//! `current_thread` tokio runtime with a `LocalSet`; shard 0 accepts and deals sockets out
//! round-robin; each shard's driver drains its inbox, pings, and runs graceful shutdown.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::net::IpAddr;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use hdrhistogram::Histogram;
use tokio::net::TcpListener;

use super::handshake;
use super::peer::Peer;
use crate::auth::{TokenBucket, Verifier};
use crate::clock::now_ns;
use crate::cluster::{Cluster, Control};
use crate::config::Config;
use crate::demo::DemoConfig;
use crate::engine::shard::{EngineConfig, Shard, ShardMsg};
use crate::engine::signal::{LocalSignal, Mesh};
use crate::engine::stats::ShardStats;
use crate::protocol::frame::{frame, OpCode};
use crate::protocol::CloseCode;

/// Inbox messages handled before committing and yielding to connection tasks: bounds the
/// latency one busy inbox adds to everything else on the shard.
const DRAIN_BATCH: usize = 256;
/// How often token expiry, auth deadlines and idle connections are checked.
const SWEEP_INTERVAL: Duration = Duration::from_secs(1);
/// Retry interval for hand-offs to a shard whose inbox was full.
const BACKLOG_RETRY: Duration = Duration::from_micros(200);

/// State shared by all shards (read-mostly; counters are relaxed atomics).
#[derive(Debug)]
pub struct Shared {
    /// The configuration.
    pub config: Config,
    /// Engine settings.
    pub engine: Arc<EngineConfig>,
    /// Cluster mode: the node's Redis bridge (the engine holds it as its `ClusterPort`).
    pub cluster: Option<Arc<Cluster>>,
    /// The shard inboxes.
    pub mesh: Arc<Mesh<ShardMsg>>,
    /// Open sockets.
    pub open_sockets: AtomicUsize,
    /// Set once shutdown begins.
    pub shutting_down: AtomicBool,
    /// Token verification.
    pub verifier: Verifier,
    /// Open WebSocket connections per user, across shards. Touched on connect, auth and
    /// close only, never on the publish path.
    pub users: Mutex<HashMap<Arc<str>, usize>>,
    /// When the server started, for uptime.
    pub started: Instant,
    /// Backend hook counters, for `/metrics`.
    pub hook_stats: super::hooks::HookStats,
    /// The Pusher apps and their shared state (`/app/{key}`, `/apps/{id}/...`).
    pub pusher: Arc<crate::pusher::Registry>,
}

impl Shared {
    /// Takes a connection slot for `user`, or `None` when the user is at the limit.
    pub fn reserve_user(self: &Arc<Self>, user: &Arc<str>) -> Option<UserSlot> {
        let max = self.config.access.max_connections_per_user;
        let mut users = self.users.lock().unwrap_or_else(|p| p.into_inner());
        let n = users.entry(user.clone()).or_insert(0);
        if *n >= max {
            return None;
        }
        *n += 1;
        Some(UserSlot {
            shared: self.clone(),
            user: user.clone(),
        })
    }

    /// Cluster mode: asks for the cluster-wide check of `slot`'s user (the connection is
    /// closed with 4010 if the user is over the limit across all nodes).
    pub fn admit_cluster(&self, slot: &UserSlot, shard: usize, conn: u64) {
        if let Some(cl) = &self.cluster {
            cl.control(Control::Admit {
                user: slot.user.clone(),
                shard,
                conn,
            });
        }
    }
}

/// One of a user's connection slots; released on drop.
#[derive(Debug)]
pub struct UserSlot {
    shared: Arc<Shared>,
    user: Arc<str>,
}

impl Drop for UserSlot {
    fn drop(&mut self) {
        if let Some(cl) = &self.shared.cluster {
            cl.control(Control::UserLeft {
                user: self.user.clone(),
            });
        }
        let mut users = self.shared.users.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = users.get_mut(&self.user) {
            *n -= 1;
            if *n == 0 {
                users.remove(&self.user);
            }
        }
    }
}

/// The engine's shard serving this thread's connections, with the I/O it leaves to the
/// server: the clock ([`ServerShard::tick`]) and the socket writes ([`ServerShard::commit`]).
#[derive(Debug)]
pub struct ServerShard(Shard<Peer>);

impl std::ops::Deref for ServerShard {
    type Target = Shard<Peer>;

    fn deref(&self) -> &Shard<Peer> {
        &self.0
    }
}

impl std::ops::DerefMut for ServerShard {
    fn deref_mut(&mut self) -> &mut Shard<Peer> {
        &mut self.0
    }
}

impl ServerShard {
    /// Sets the engine's clock to now, before a unit of work.
    pub fn tick(&mut self) -> &mut Self {
        self.0.set_now(Instant::now(), now_ns());
        self
    }

    /// Ends a unit of work: hands queued items to other shards and writes every connection
    /// with new output (one `writev` per connection, more if it has more), then records the
    /// delivery latency of the events written.
    pub fn commit(&mut self) {
        let now = Instant::now();
        self.0.commit_with(|peer| peer.flush(now));
        if self.0.has_latency() {
            self.0.record_latency(Instant::now());
        }
    }
}

/// One shard's thread-local context.
#[derive(Debug)]
pub struct ShardCtx {
    /// The shard.
    pub shard: RefCell<ServerShard>,
    /// Shared state.
    pub shared: Arc<Shared>,
    next_conn: Cell<u64>,
    draining: Cell<bool>,
    /// HTTP connections served by hyper on this shard (the drain waits for them).
    http_conns: Cell<usize>,
    /// Tells every HTTP connection that the drain began: finish the request in flight,
    /// answer it, then close.
    http_drain: tokio::sync::Notify,
    /// Wakes the driver (a connection ended while draining).
    driver_signal: LocalSignal,
    /// Stops the acceptor.
    stop_accept: LocalSignal,
    /// This shard's backend hook state (calls in flight, breakers, answer cache).
    pub hooks: super::hooks::ShardHooks,
}

/// Decrements the open-socket count when an HTTP or WebSocket connection ends.
#[derive(Debug)]
pub struct ConnectionGuard(Arc<Shared>);
impl Drop for ConnectionGuard {
    fn drop(&mut self) {
        self.0.open_sockets.fetch_sub(1, Ordering::Relaxed);
    }
}

impl ShardCtx {
    /// A fresh connection id: shard in the top 16 bits.
    pub fn next_conn_id(&self) -> u64 {
        let n = self.next_conn.get() + 1;
        self.next_conn.set(n);
        ((self.shard.borrow().id() as u64) << 48) | n
    }

    /// Counts a socket as open until the guard drops (the accept path already counted it).
    pub fn connection_guard(&self) -> ConnectionGuard {
        ConnectionGuard(self.shared.clone())
    }

    /// Counts an HTTP connection until the guard drops; [`HttpConn::drained`] resolves
    /// when the drain begins.
    pub fn http_conn(self: &Rc<Self>) -> HttpConn {
        self.http_conns.set(self.http_conns.get() + 1);
        HttpConn(self.clone())
    }

    /// Called when a WebSocket connection has ended.
    pub fn on_peer_gone(&self) {
        if self.draining.get() {
            self.driver_signal.notify();
        }
    }
}

/// An HTTP connection being served: the shard's drain waits until every one has answered
/// its request in flight and closed (bounded by `shutdown.drain_ms`).
#[derive(Debug)]
pub struct HttpConn(Rc<ShardCtx>);

impl HttpConn {
    /// Resolves once the shard drains (at once if it already does).
    pub async fn drained(&self) {
        let notified = self.0.http_drain.notified();
        if self.0.draining.get() {
            return;
        }
        notified.await;
    }
}

impl Drop for HttpConn {
    fn drop(&mut self) {
        self.0.http_conns.set(self.0.http_conns.get() - 1);
        self.0.on_peer_gone();
    }
}

/// What a shard reports when it stops.
#[derive(Debug)]
pub struct ShardReport {
    /// Ingest → socket write latency, ns.
    pub latency: Histogram<u64>,
    /// Counters.
    pub stats: ShardStats,
}

/// A running server.
#[derive(Debug)]
pub struct Server {
    addr: SocketAddr,
    shared: Arc<Shared>,
    threads: Vec<JoinHandle<Option<ShardReport>>>,
}

impl Server {
    /// Binds and starts all shards; returns once the socket is listening.
    /// Runs the demo market when `config.demo` is set.
    pub fn start(config: Config) -> anyhow::Result<Server> {
        let demo = config.demo.clone();
        Server::start_with_demo(config, demo)
    }

    /// Like [`Server::start`], with the built-in demo market publishing on shard 0 (this
    /// `demo` replaces `config.demo`).
    pub fn start_with_demo(mut config: Config, demo: Option<DemoConfig>) -> anyhow::Result<Server> {
        config.demo = demo.clone();
        config.validate()?;
        let verifier = Verifier::new(&config.access.jwt)?;
        let listener =
            bind(config.listen).with_context(|| format!("cannot listen on {}", config.listen))?;
        let addr = listener.local_addr()?;
        let epoch = format!("{:016x}", rand::random::<u64>());
        let mesh = Arc::new(Mesh::new(config.shards, config.inbox_capacity));
        let cluster = match &config.cluster {
            Some(c) => Some(Cluster::start(
                c.clone(),
                config.rules.clone(),
                mesh.clone(),
                config.access.max_connections_per_user,
            )?),
            None => None,
        };
        let pusher = Arc::new(crate::pusher::Registry::new(config.pusher_apps.clone()));
        let engine = Arc::new(EngineConfig {
            rules: config.rules.clone(),
            queue: config.queue,
            epoch: epoch.into(),
            cluster: cluster
                .clone()
                .map(|c| c as Arc<dyn crate::engine::port::ClusterPort>),
            acks: (!pusher.apps.is_empty())
                .then(|| pusher.clone() as Arc<dyn crate::engine::shard::AckHook>),
        });
        let shared = Arc::new(Shared {
            config,
            engine,
            cluster,
            mesh,
            open_sockets: AtomicUsize::new(0),
            shutting_down: AtomicBool::new(false),
            verifier,
            users: Mutex::new(HashMap::new()),
            started: Instant::now(),
            hook_stats: super::hooks::HookStats::default(),
            pusher,
        });
        let mut listener = Some(listener);
        let mut demo = demo;
        let mut threads = Vec::new();
        for id in 0..shared.config.shards {
            let sh = shared.clone();
            let l = if id == 0 { listener.take() } else { None };
            let d = if id == 0 { demo.take() } else { None };
            let t = std::thread::Builder::new()
                .name(format!("quotecast-shard-{id}"))
                .stack_size(8 << 20)
                .spawn(move || shard_main(id, sh, l, d))?;
            threads.push(t);
        }
        Ok(Server {
            addr,
            shared,
            threads,
        })
    }

    /// The bound address (useful with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Starts graceful shutdown: stop accepting, notify clients, close with 1012, drain.
    pub fn begin_shutdown(&self) {
        if self.shared.shutting_down.swap(true, Ordering::SeqCst) {
            return;
        }
        for s in 0..self.shared.mesh.len() {
            let mut msg = ShardMsg::Shutdown;
            // The inbox may be momentarily full; shutdown must get through.
            loop {
                match self.shared.mesh.send(s, msg) {
                    Ok(()) => break,
                    Err(back) => {
                        msg = back;
                        std::thread::sleep(Duration::from_millis(1));
                    }
                }
            }
        }
    }

    /// Shuts down gracefully and waits for every shard; returns the merged report.
    pub fn shutdown(self) -> ShardReport {
        self.begin_shutdown();
        self.wait()
    }

    /// Waits for every shard to stop (after [`Server::begin_shutdown`]).
    pub fn wait(self) -> ShardReport {
        let mut merged = ShardReport {
            latency: Histogram::new_with_bounds(1, 60_000_000_000, 3)
                .unwrap_or_else(|_| Histogram::new(3).unwrap_or_else(|_| unreachable!())),
            stats: ShardStats::default(),
        };
        for t in self.threads {
            if let Ok(Some(r)) = t.join() {
                let _ = merged.latency.add(&r.latency);
                merged.stats.merge(&r.stats);
            }
        }
        merged
    }
}

/// Per-socket kernel settings for an accepted connection: no Nagle delay, the fixed send
/// buffer and the unsent-bytes limit (see [`Config::socket_notsent_lowat`]). Failures are
/// ignored: each is an optimisation, and the connection works without it.
fn tune_socket(stream: &tokio::net::TcpStream, config: &Config) {
    let _ = stream.set_nodelay(true);
    let sock = socket2::SockRef::from(stream);
    if config.socket_send_buffer > 0 {
        let _ = sock.set_send_buffer_size(config.socket_send_buffer);
    }
    #[cfg(any(target_os = "linux", target_os = "android"))]
    if config.socket_notsent_lowat > 0 {
        let lowat = u32::try_from(config.socket_notsent_lowat).unwrap_or(u32::MAX);
        let _ = sock.set_tcp_notsent_lowat(lowat);
    }
}

fn bind(addr: SocketAddr) -> std::io::Result<std::net::TcpListener> {
    let domain = socket2::Domain::for_address(addr);
    let s = socket2::Socket::new(domain, socket2::Type::STREAM, Some(socket2::Protocol::TCP))?;
    s.set_reuse_address(true)?;
    s.bind(&addr.into())?;
    // A deep backlog absorbs connect storms (10k clients in a second).
    s.listen(8192)?;
    s.set_nonblocking(true)?;
    Ok(s.into())
}

fn shard_main(
    id: usize,
    shared: Arc<Shared>,
    listener: Option<std::net::TcpListener>,
    demo: Option<DemoConfig>,
) -> Option<ShardReport> {
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            tracing::error!(shard = id, error = %e, "cannot build the shard runtime");
            return None;
        }
    };
    let local = tokio::task::LocalSet::new();
    local.block_on(&rt, async move {
        let shard = ServerShard(Shard::new(
            id,
            shared.engine.clone(),
            shared.mesh.clone(),
            Instant::now(),
        ));
        let ctx = Rc::new(ShardCtx {
            shard: RefCell::new(shard),
            shared: shared.clone(),
            next_conn: Cell::new(0),
            draining: Cell::new(false),
            http_conns: Cell::new(0),
            http_drain: tokio::sync::Notify::new(),
            driver_signal: LocalSignal::default(),
            stop_accept: LocalSignal::default(),
            hooks: super::hooks::ShardHooks::default(),
        });
        if let Some(l) = listener {
            match TcpListener::from_std(l) {
                Ok(l) => {
                    tokio::task::spawn_local(accept_loop(ctx.clone(), l));
                }
                Err(e) => tracing::error!(error = %e, "cannot register the listener"),
            }
        }
        if let Some(d) = demo {
            tokio::task::spawn_local(super::demo::run(ctx.clone(), d));
        }
        driver(ctx.clone()).await;
        let shard = ctx.shard.borrow();
        Some(ShardReport {
            latency: shard.latency.clone(),
            stats: shard.stats.clone(),
        })
    })
}

async fn accept_loop(ctx: Rc<ShardCtx>, listener: TcpListener) {
    let shards = ctx.shared.mesh.len();
    let me = ctx.shard.borrow().id();
    let mut next = 0usize;
    let mut per_ip = PerIpLimit::new(&ctx.shared.config);
    loop {
        let accepted = tokio::select! {
            biased;
            _ = ctx.stop_accept.wait() => return,
            r = listener.accept() => r,
        };
        let stream = match accepted {
            Ok((s, addr)) => {
                if !per_ip.admit(addr.ip(), Instant::now()) {
                    ctx.shard.borrow_mut().stats.rate_limited_connects += 1;
                    // Best effort: a clear answer if the socket takes it at once, then close.
                    let _ = s.try_write(b"HTTP/1.1 429 Too Many Requests\r\nRetry-After: 1\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
                    continue;
                }
                s
            }
            Err(e) => {
                // EMFILE/ENFILE and friends: back off instead of spinning.
                tracing::warn!(error = %e, "accept failed; backing off");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let open = ctx.shared.open_sockets.fetch_add(1, Ordering::Relaxed) + 1;
        if open > ctx.shared.config.max_connections {
            ctx.shared.open_sockets.fetch_sub(1, Ordering::Relaxed);
            ctx.shard.borrow_mut().stats.refused_connections += 1;
            tracing::warn!(open, "connection limit reached; refusing");
            drop(stream);
            continue;
        }
        let _ = stream.set_nodelay(true);
        tune_socket(&stream, &ctx.shared.config);
        let target = next % shards;
        next = next.wrapping_add(1);
        if target == me {
            handshake::accept(ctx.clone(), stream);
            continue;
        }
        match stream.into_std() {
            Ok(std_stream) => {
                if let Err(ShardMsg::Accept(s)) = ctx
                    .shared
                    .mesh
                    .send(target, ShardMsg::Accept(Box::new(std_stream)))
                {
                    // That shard's inbox is full: serve it here rather than drop it.
                    if let Ok(s) = s.downcast::<std::net::TcpStream>() {
                        if let Ok(s) = tokio::net::TcpStream::from_std(*s) {
                            handshake::accept(ctx.clone(), s);
                        }
                    }
                }
            }
            Err(e) => {
                ctx.shared.open_sockets.fetch_sub(1, Ordering::Relaxed);
                tracing::warn!(error = %e, "cannot hand a socket to another shard");
            }
        }
    }
}

/// New-connection rate limit per client IP (token buckets), kept by the acceptor alone.
struct PerIpLimit {
    rate: f64,
    burst: f64,
    loopback: bool,
    buckets: HashMap<IpAddr, TokenBucket>,
}

impl PerIpLimit {
    fn new(cfg: &Config) -> Self {
        let a = &cfg.access;
        PerIpLimit {
            rate: a.connects_per_ip_per_sec,
            burst: a.connects_per_ip_burst,
            loopback: a.limit_loopback,
            buckets: HashMap::new(),
        }
    }

    fn admit(&mut self, ip: IpAddr, now: Instant) -> bool {
        if ip.is_loopback() && !self.loopback {
            return true;
        }
        if self.buckets.len() > 100_000 {
            // Forget clients idle long enough that their bucket would be full anyway.
            let full = Duration::from_secs_f64(self.burst / self.rate.max(1e-9));
            self.buckets.retain(|_, b| {
                b.wait() > Duration::ZERO || now.saturating_duration_since(b.last()) < full
            });
        }
        let (rate, burst) = (self.rate, self.burst);
        self.buckets
            .entry(ip)
            .or_insert_with(|| TokenBucket::new(rate, burst, now))
            .take(now)
    }
}

async fn driver(ctx: Rc<ShardCtx>) {
    let me = ctx.shard.borrow().id();
    let mesh = ctx.shared.mesh.clone();
    let hb = ctx.shared.config.heartbeat;
    let ping = frame(OpCode::Ping, b"");
    let mut heartbeat = tokio::time::interval_at(tokio::time::Instant::now() + hb, hb);
    heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut drain_deadline: Option<Instant> = None;
    let mut sweep = tokio::time::interval(SWEEP_INTERVAL);
    sweep.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        if let Some(d) = drain_deadline {
            let idle = ctx.shard.borrow().peer_count() == 0 && ctx.http_conns.get() == 0;
            if idle || Instant::now() >= d {
                break;
            }
        }
        let backlog = ctx.shard.borrow().has_backlog();
        let deadline = drain_deadline.unwrap_or_else(|| Instant::now() + Duration::from_secs(3600));
        tokio::select! {
            biased;
            _ = mesh.ready(me) => {
                let mut handled = 0;
                while handled < DRAIN_BATCH {
                    let Some(msg) = mesh.try_recv(me) else { break };
                    handled += 1;
                    match msg {
                        ShardMsg::Batch(items) => {
                            let mut shard = ctx.shard.borrow_mut();
                            shard.tick();
                            for item in items {
                                shard.handle(item);
                            }
                        }
                        ShardMsg::Accept(s) => match s
                            .downcast::<std::net::TcpStream>()
                            .map_err(|_| std::io::Error::other("not a TCP stream"))
                            .and_then(|s| tokio::net::TcpStream::from_std(*s))
                        {
                            Ok(s) => handshake::accept(ctx.clone(), s),
                            Err(e) => {
                                ctx.shared.open_sockets.fetch_sub(1, Ordering::Relaxed);
                                tracing::warn!(error = %e, "cannot register a handed-off socket");
                            }
                        },
                        ShardMsg::Shutdown => {
                            ctx.draining.set(true);
                            ctx.stop_accept.notify();
                            ctx.http_drain.notify_waiters();
                            let reconnect = ctx.shared.config.reconnect_hint.as_millis() as u64;
                            ctx.shard.borrow_mut().shutdown_all(reconnect);
                            drain_deadline = Some(Instant::now() + ctx.shared.config.drain);
                        }
                        ShardMsg::Stats { top, reply } => {
                            // The asker may have given up (timeout): nothing to do then.
                            let _ = reply.send(ctx.shard.borrow().snapshot(top));
                        }
                        ShardMsg::Subscribers { channel, reply } => {
                            let _ = reply.send(ctx.shard.borrow().subscribers(&channel));
                        }
                        ShardMsg::Admin { cmd, reply } => {
                            let _ = reply.send(super::api::apply(&ctx, cmd));
                        }
                        ShardMsg::History {
                            channel,
                            since,
                            limit,
                            reply,
                        } => {
                            let _ = reply.send(ctx.shard.borrow().history(&channel, since, limit));
                        }
                    }
                }
                ctx.shard.borrow_mut().commit();
                if handled == DRAIN_BATCH {
                    tokio::task::yield_now().await;
                }
            }
            _ = ctx.driver_signal.wait() => {}
            _ = sweep.tick() => {
                sweep_peers(&ctx, Instant::now());
            }
            _ = heartbeat.tick() => {
                let mut shard = ctx.shard.borrow_mut();
                shard.tick();
                shard.heartbeat(Instant::now(), hb, &ping);
                shard.commit();
            }
            _ = tokio::time::sleep(BACKLOG_RETRY), if backlog => {
                ctx.shard.borrow_mut().commit();
            }
            _ = tokio::time::sleep_until(deadline.into()), if drain_deadline.is_some() => {}
        }
    }
}

/// Closes connections whose token expired, that did not authenticate in time, that sat
/// idle with no subscription, or whose stream backlog waited past the slow-consumer lag.
fn sweep_peers(ctx: &ShardCtx, now: Instant) {
    let unix = crate::auth::unix_now();
    let idle = ctx.shared.config.access.idle_timeout;
    let mut closes = Vec::new();
    {
        let shard = ctx.shard.borrow();
        for p in shard.peers() {
            if p.is_closing() {
                continue;
            }
            if p.identity.borrow().exp.is_some_and(|exp| exp <= unix) {
                closes.push((p.clone(), CloseCode::TokenExpired, "token expired"));
            } else if p.auth_deadline().is_some_and(|d| d <= now) {
                closes.push((p.clone(), CloseCode::AuthTimeout, "authentication timeout"));
            } else if p.subs.borrow().is_empty()
                && now.saturating_duration_since(p.last_op.get()) > idle
            {
                closes.push((p.clone(), CloseCode::IdleTimeout, "idle timeout"));
            }
        }
    }
    let mut shard = ctx.shard.borrow_mut();
    shard.tick();
    shard.check_lag(now);
    if closes.is_empty() {
        shard.commit();
        return;
    }
    for (p, code, reason) in closes {
        tracing::info!(conn = %p.conn_id(), code = code.code(), reason, "closing connection");
        shard.close_peer(&p, code, reason, false);
    }
    shard.commit();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(target_os = "linux")]
    #[tokio::test]
    async fn accepted_sockets_get_the_configured_kernel_limits() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let _client = tokio::net::TcpStream::connect(addr).await.unwrap();
        let (server, _) = listener.accept().await.unwrap();
        let before = socket2::SockRef::from(&server).tcp_notsent_lowat().unwrap();
        let config = Config {
            socket_send_buffer: 128 * 1024,
            socket_notsent_lowat: 16 * 1024,
            ..Config::default()
        };
        tune_socket(&server, &config);
        assert_ne!(
            before,
            16 * 1024,
            "the kernel default must differ for this test to mean anything"
        );
        let sock = socket2::SockRef::from(&server);
        assert_eq!(sock.tcp_notsent_lowat().unwrap(), 16 * 1024);
        // Linux doubles SO_SNDBUF for its bookkeeping.
        assert_eq!(sock.send_buffer_size().unwrap(), 256 * 1024);
        assert!(sock.tcp_nodelay().unwrap());

        // 0 leaves the kernel's defaults alone.
        let _client2 = tokio::net::TcpStream::connect(addr).await.unwrap();
        let (server2, _) = listener.accept().await.unwrap();
        let lowat = socket2::SockRef::from(&server2)
            .tcp_notsent_lowat()
            .unwrap();
        let off = Config {
            socket_send_buffer: 0,
            socket_notsent_lowat: 0,
            ..Config::default()
        };
        tune_socket(&server2, &off);
        assert_eq!(
            socket2::SockRef::from(&server2)
                .tcp_notsent_lowat()
                .unwrap(),
            lowat
        );
    }
}
