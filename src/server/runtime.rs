//! The thread-per-core runtime (server layer): one thread per shard, each a
//! `current_thread` tokio runtime with a `LocalSet`; shard 0 accepts and deals sockets out
//! round-robin; each shard's driver drains its inbox, pings, and runs graceful shutdown.

use std::cell::{Cell, RefCell};
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use hdrhistogram::Histogram;
use tokio::net::TcpListener;

use super::handshake;
use crate::config::Config;
use crate::demo::DemoConfig;
use crate::engine::shard::{EngineConfig, Shard, ShardMsg, ShardStats};
use crate::engine::signal::{LocalSignal, Mesh};
use crate::protocol::frame::{frame, OpCode};

/// Inbox messages handled before committing and yielding to connection tasks: bounds the
/// latency one busy inbox adds to everything else on the shard.
const DRAIN_BATCH: usize = 256;
/// Retry interval for hand-offs to a shard whose inbox was full.
const BACKLOG_RETRY: Duration = Duration::from_micros(200);

/// State shared by all shards (read-mostly; counters are relaxed atomics).
#[derive(Debug)]
pub struct Shared {
    /// The configuration.
    pub config: Config,
    /// Engine settings.
    pub engine: Arc<EngineConfig>,
    /// The shard inboxes.
    pub mesh: Arc<Mesh<ShardMsg>>,
    /// Open sockets.
    pub open_sockets: AtomicUsize,
    /// Set once shutdown begins.
    pub shutting_down: AtomicBool,
}

/// One shard's thread-local context.
#[derive(Debug)]
pub struct ShardCtx {
    /// The shard.
    pub shard: RefCell<Shard>,
    /// Shared state.
    pub shared: Arc<Shared>,
    next_conn: Cell<u64>,
    draining: Cell<bool>,
    /// Wakes the driver (a connection ended while draining).
    driver_signal: LocalSignal,
    /// Stops the acceptor.
    stop_accept: LocalSignal,
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

    /// Called when a WebSocket connection has ended.
    pub fn on_peer_gone(&self) {
        if self.draining.get() {
            self.driver_signal.notify();
        }
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
    pub fn start(config: Config) -> anyhow::Result<Server> {
        Server::start_with_demo(config, None)
    }

    /// Like [`Server::start`], with the built-in demo market publishing on shard 0.
    pub fn start_with_demo(config: Config, demo: Option<DemoConfig>) -> anyhow::Result<Server> {
        config.validate()?;
        let listener =
            bind(config.listen).with_context(|| format!("cannot listen on {}", config.listen))?;
        let addr = listener.local_addr()?;
        let epoch = format!("{:016x}", rand::random::<u64>());
        let engine = Arc::new(EngineConfig {
            rules: config.rules.clone(),
            queue: config.queue,
            epoch: epoch.into(),
        });
        let mesh = Arc::new(Mesh::new(config.shards, config.inbox_capacity));
        let shared = Arc::new(Shared {
            config,
            engine,
            mesh,
            open_sockets: AtomicUsize::new(0),
            shutting_down: AtomicBool::new(false),
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
                merged.stats.published += r.stats.published;
                merged.stats.delivered += r.stats.delivered;
                merged.stats.slow_closes += r.stats.slow_closes;
            }
        }
        merged
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
        let shard = Shard::new(id, shared.engine.clone(), shared.mesh.clone());
        let ctx = Rc::new(ShardCtx {
            shard: RefCell::new(shard),
            shared: shared.clone(),
            next_conn: Cell::new(0),
            draining: Cell::new(false),
            driver_signal: LocalSignal::default(),
            stop_accept: LocalSignal::default(),
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
            tokio::task::spawn_local(crate::demo::run(ctx.clone(), d));
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
    loop {
        let accepted = tokio::select! {
            biased;
            _ = ctx.stop_accept.wait() => return,
            r = listener.accept() => r,
        };
        let stream = match accepted {
            Ok((s, _)) => s,
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
            tracing::warn!(open, "connection limit reached; refusing");
            drop(stream);
            continue;
        }
        let _ = stream.set_nodelay(true);
        let sndbuf = ctx.shared.config.socket_send_buffer;
        if sndbuf > 0 {
            let _ = socket2::SockRef::from(&stream).set_send_buffer_size(sndbuf);
        }
        let target = next % shards;
        next = next.wrapping_add(1);
        if target == me {
            handshake::accept(ctx.clone(), stream);
            continue;
        }
        match stream.into_std() {
            Ok(std_stream) => {
                if let Err(ShardMsg::Accept(s)) =
                    ctx.shared.mesh.send(target, ShardMsg::Accept(std_stream))
                {
                    // That shard's inbox is full: serve it here rather than drop it.
                    if let Ok(s) = tokio::net::TcpStream::from_std(s) {
                        handshake::accept(ctx.clone(), s);
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

async fn driver(ctx: Rc<ShardCtx>) {
    let me = ctx.shard.borrow().id();
    let mesh = ctx.shared.mesh.clone();
    let hb = ctx.shared.config.heartbeat;
    let ping = frame(OpCode::Ping, b"");
    let mut heartbeat = tokio::time::interval_at(tokio::time::Instant::now() + hb, hb);
    heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut drain_deadline: Option<Instant> = None;
    loop {
        if let Some(d) = drain_deadline {
            if ctx.shard.borrow().peer_count() == 0 || Instant::now() >= d {
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
                            for item in items {
                                shard.handle(item);
                            }
                        }
                        ShardMsg::Accept(s) => match tokio::net::TcpStream::from_std(s) {
                            Ok(s) => handshake::accept(ctx.clone(), s),
                            Err(e) => {
                                ctx.shared.open_sockets.fetch_sub(1, Ordering::Relaxed);
                                tracing::warn!(error = %e, "cannot register a handed-off socket");
                            }
                        },
                        ShardMsg::Shutdown => {
                            ctx.draining.set(true);
                            ctx.stop_accept.notify();
                            let reconnect = ctx.shared.config.reconnect_hint.as_millis() as u64;
                            ctx.shard.borrow_mut().shutdown_all(reconnect);
                            drain_deadline = Some(Instant::now() + ctx.shared.config.drain);
                        }
                    }
                }
                ctx.shard.borrow_mut().commit();
                if handled == DRAIN_BATCH {
                    tokio::task::yield_now().await;
                }
            }
            _ = ctx.driver_signal.wait() => {}
            _ = heartbeat.tick() => {
                let mut shard = ctx.shard.borrow_mut();
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
