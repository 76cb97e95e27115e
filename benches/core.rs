//! criterion benches of the publish → socket path, one group per pipeline stage, plus the
//! two measurements behind design choices.
//!
//! - `encode`: one event encoded once into a complete JSON / MessagePack frame, and
//!   `Event::new` as the home shard builds it (with and without the msgpack frame).
//! - `parse`: client publish ops. `serde_json_raw` is what the server does (`parse_json`,
//!   `data` captured as a `RawValue` and passed through verbatim); `simd_json_owned` is the
//!   alternative we measured against: `simd_json::to_owned_value` on a mutable copy of the
//!   message, then `data` re-serialised with `simd_json::to_vec`, because simd-json's serde
//!   layer cannot hand out the raw bytes of a sub-document. Both sit in one group so the
//!   ratio is read off directly; the copy is made outside the timed section (in the server
//!   the frame is already unmasked in a scratch buffer simd-json could parse in place).
//!   `msgpack` is `parse_msgpack` on the same batch.
//! - `ring`: steady-state push into a full 1000-event ring, and a 100-event `since` read.
//! - `conflation`: the per-connection queue: offers into one conflation slot (latest wins)
//!   then a commit, and 64 shared frames pushed, gathered into `IoSlice`s and advanced.
//! - `dispatch`: the inter-shard `Mesh` inbox, same thread and across two threads.
//! - `shards`: the home shard's publish work (sequence, encode once, append to the ring)
//!   on 1 and 2 shard threads at once, each shard publishing to channels it is home to, as
//!   thread-per-core runs it. Elements are events across all shards, so time per element
//!   halving from 1 to 2 shards is throughput doubling: the engine shares nothing on this
//!   path.
//! - `fanout`: one event published to 1,000 subscribers of one shard, with no sockets (the
//!   engine harness's fake connections take whatever is queued): sequence, encode once,
//!   ring, one reference and one queue push per subscriber, commit. Elements are
//!   deliveries, so the median is the engine's cost per delivery without the kernel.
//! - `fanout_loopback`: one shared ~150-byte frame written to 100 loopback TCP sockets, one
//!   `write` per frame vs `write_vectored` with 16 frames per call. This is why the server
//!   owns its outbound path (shared `Bytes`, vectored writes) instead of tungstenite's
//!   per-frame copy + write.
//!
//! Every group reports per-element throughput, so medians read as "time per event / frame /
//! message". Timing is kept short (2 s measurement, 20 samples) because the machine has two
//! noisy cores and CI runs `cargo bench --bench core -- --test`, which runs each bench once.

use std::hint::black_box;
use std::io::{self, IoSlice, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, BatchSize, BenchmarkId, Criterion, Throughput};
use crossbeam_utils::Backoff;
use simd_json::prelude::*;

use quotecast::engine::channel::ChannelRules;
use quotecast::engine::event::Event;
use quotecast::engine::harness::{FakeConn, Harness};
use quotecast::engine::outbound::{Outbound, QueueLimits, MAX_IOV};
use quotecast::engine::ring::{Recovery, Ring};
use quotecast::engine::shard::{home_of, EngineConfig, PubReply, Shard};
use quotecast::engine::signal::Mesh;
use quotecast::protocol::dialect::FormatSet;
use quotecast::protocol::encode::{event_json, event_msgpack, EventParts};
use quotecast::protocol::frame::{frame, OpCode};
use quotecast::protocol::names::{check_channel, check_event};
use quotecast::protocol::op::{parse_json, parse_msgpack, Op, PubEvent};
use quotecast::protocol::Format;

/// A typical quote payload: 119 bytes of JSON.
const QUOTE: &[u8] = br#"{"bid":187.21,"ask":187.23,"bid_size":300,"ask_size":500,"last":187.22,"volume":48213377,"venue":"XNAS","halted":false}"#;
const CHANNEL: &str = "quotes.AAPL";
const EVENT: &str = "quote";
const TS: u64 = 1_718_000_000_123_456_789;

/// Events in the batch publish op (a feed handler's typical burst).
const BATCH: usize = 100;
/// Capacity of the ring in the `ring` group, and events read back by `since`.
const RING_CAP: usize = 1000;
const RING_READ: usize = 100;
/// Offers into one slot between commits in `conflation/offer16_commit`.
const OFFERS: usize = 16;
/// Messages per iteration of the cross-thread dispatch bench.
const XTHREAD_MSGS: u64 = 100_000;
/// Loopback fan-out: sockets, frames per socket per iteration, frames per `writev`.
const SOCKETS: usize = 100;
const FANOUT_FRAMES: usize = 64;
const WRITEV_FRAMES: usize = 16;
/// A fan-out iteration or drain that makes no progress for this long is a bug, not noise.
const STALL: Duration = Duration::from_secs(10);

fn parts(seq: u64) -> EventParts<'static> {
    EventParts {
        channel: CHANNEL,
        event: EVENT,
        seq,
        ts: TS,
        data: QUOTE,
    }
}

fn event(seq: u64, channel: &Arc<str>) -> Arc<Event> {
    Arc::new(Event::new(
        channel.clone(),
        EVENT.into(),
        seq,
        TS,
        std::time::Instant::now(),
        Bytes::from_static(QUOTE),
        FormatSet::EMPTY,
    ))
}

fn bench_encode(c: &mut Criterion) {
    let mut g = c.benchmark_group("encode");
    g.throughput(Throughput::Elements(1));
    g.bench_function("event_json", |b| {
        b.iter(|| event_json(black_box(parts(42))))
    });
    g.bench_function("event_msgpack", |b| {
        b.iter(|| event_msgpack(black_box(parts(42))).expect("QUOTE is valid JSON"))
    });
    let channel: Arc<str> = CHANNEL.into();
    let data = Bytes::from_static(QUOTE);
    let now = std::time::Instant::now();
    for (name, eager) in [
        ("event_new_json", FormatSet::EMPTY),
        (
            "event_new_json_msgpack",
            FormatSet::EMPTY.with(Format::Msgpack),
        ),
    ] {
        g.bench_function(name, |b| {
            b.iter(|| {
                Event::new(
                    channel.clone(),
                    EVENT.into(),
                    black_box(42),
                    TS,
                    now,
                    data.clone(),
                    eager,
                )
            })
        });
    }
    g.finish();
}

fn quote_json(i: usize) -> String {
    format!(
        r#"{{"bid":{}.21,"ask":{}.23,"bid_size":{},"ask_size":500,"last":{}.22,"volume":48213377,"venue":"XNAS","halted":false}}"#,
        100 + i,
        100 + i,
        100 * (i + 1),
        100 + i
    )
}

fn single_op() -> Vec<u8> {
    format!(
        r#"{{"op":"publish","id":7,"channel":"{CHANNEL}","event":"{EVENT}","data":{}}}"#,
        quote_json(0)
    )
    .into_bytes()
}

fn batch_op() -> Vec<u8> {
    let events: Vec<String> = (0..BATCH)
        .map(|i| {
            format!(
                r#"{{"channel":"quotes.SYM{i:03}","event":"{EVENT}","data":{}}}"#,
                quote_json(i)
            )
        })
        .collect();
    format!(
        r#"{{"op":"publish","id":7,"events":[{}]}}"#,
        events.join(",")
    )
    .into_bytes()
}

/// One publish event out of a simd-json tree: the same checks and output as `parse_json`,
/// with `data` re-serialised because its original bytes are gone.
fn simd_pub_event(p: &simd_json::OwnedValue) -> Option<PubEvent> {
    let channel = p.get_str("channel")?;
    let event = p.get_str("event")?;
    check_channel(channel).ok()?;
    check_event(event).ok()?;
    let data = simd_json::to_vec(p.get("data")?).ok()?;
    Some(PubEvent {
        channel: channel.to_owned(),
        event: event.to_owned(),
        data: Bytes::from(data),
        key: None,
        exclude: 0,
    })
}

/// The simd-json alternative to `parse_json` for publish ops.
fn simd_parse_publish(msg: &mut [u8]) -> Option<Vec<PubEvent>> {
    let v = simd_json::to_owned_value(msg).ok()?;
    if v.get_str("op")? != "publish" {
        return None;
    }
    match v.get_array("events") {
        Some(list) => list.iter().map(simd_pub_event).collect(),
        None => Some(vec![simd_pub_event(&v)?]),
    }
}

fn published(op: Result<Op, quotecast::protocol::op::ParseFailure>) -> Vec<PubEvent> {
    match op {
        Ok(Op::Publish { events, .. }) => events,
        other => panic!("expected a publish op, got {other:?}"),
    }
}

fn bench_parse(c: &mut Criterion) {
    let single = single_op();
    let batch = batch_op();
    let batch_value: serde_json::Value =
        serde_json::from_slice(&batch).expect("batch_op builds valid JSON");
    let batch_msgpack = rmp_serde::to_vec_named(&batch_value).expect("a JSON value encodes");

    // Both parsers must agree before their times are compared.
    for msg in [&single, &batch] {
        let ours = published(parse_json(msg));
        let simd = simd_parse_publish(&mut msg.clone()).expect("simd-json parses the op");
        assert_eq!(ours.len(), simd.len());
        for (a, b) in ours.iter().zip(&simd) {
            assert_eq!((&a.channel, &a.event), (&b.channel, &b.event));
            let (da, db): (serde_json::Value, serde_json::Value) = (
                serde_json::from_slice(&a.data).expect("valid JSON"),
                serde_json::from_slice(&b.data).expect("valid JSON"),
            );
            assert_eq!(da, db);
        }
    }
    assert_eq!(published(parse_msgpack(&batch_msgpack)).len(), BATCH);

    let mut g = c.benchmark_group("parse");
    for (size, msg, n) in [("single", &single, 1), ("batch100", &batch, BATCH)] {
        g.throughput(Throughput::Elements(n as u64));
        g.bench_function(BenchmarkId::new("serde_json_raw", size), |b| {
            b.iter(|| parse_json(black_box(msg)))
        });
        g.bench_function(BenchmarkId::new("simd_json_owned", size), |b| {
            b.iter_batched_ref(
                || msg.clone(),
                |m| simd_parse_publish(black_box(m)),
                BatchSize::SmallInput,
            )
        });
    }
    g.throughput(Throughput::Elements(BATCH as u64));
    g.bench_function(BenchmarkId::new("msgpack", "batch100"), |b| {
        b.iter(|| parse_msgpack(black_box(&batch_msgpack)))
    });
    g.finish();
}

fn bench_ring(c: &mut Criterion) {
    let channel: Arc<str> = CHANNEL.into();
    // Events are built once: a push must not pay for encoding. Sequence numbers stay
    // contiguous, as `Ring::push` requires.
    let pool: Vec<Arc<Event>> = (1..=8 * RING_CAP as u64)
        .map(|s| event(s, &channel))
        .collect();

    let mut g = c.benchmark_group("ring");
    g.throughput(Throughput::Elements(1));
    g.bench_function("push_cap1000", |b| {
        b.iter_custom(|iters| {
            let mut took = Duration::ZERO;
            let mut left = iters;
            while left > 0 {
                let mut ring = Ring::new(RING_CAP);
                for ev in &pool[..RING_CAP] {
                    ring.push(ev.clone());
                }
                let n = left.min((pool.len() - RING_CAP) as u64) as usize;
                let start = Instant::now();
                for ev in &pool[RING_CAP..RING_CAP + n] {
                    ring.push(black_box(ev.clone()));
                }
                took += start.elapsed();
                black_box(&ring);
                left -= n as u64;
            }
            took
        })
    });

    let mut ring = Ring::new(RING_CAP);
    for ev in &pool[..RING_CAP] {
        ring.push(ev.clone());
    }
    let (current, since) = (RING_CAP as u64, (RING_CAP - RING_READ) as u64);
    assert!(matches!(ring.since(since, current), Recovery::Complete(v) if v.len() == RING_READ));
    g.throughput(Throughput::Elements(RING_READ as u64));
    g.bench_function("since_100", |b| {
        b.iter(|| match ring.since(black_box(since), current) {
            Recovery::Complete(v) => v.len(),
            Recovery::Incomplete => unreachable!("the ring holds the last 1000 events"),
        })
    });
    g.finish();
}

fn bench_conflation(c: &mut Criterion) {
    let channel: Arc<str> = CHANNEL.into();
    let frame = event_json(parts(1));
    let limits = QueueLimits {
        max_frames: 4 * MAX_IOV,
        max_bytes: 1 << 20,
        max_lag: std::time::Duration::from_secs(5),
    };

    let mut g = c.benchmark_group("conflation");
    g.throughput(Throughput::Elements(OFFERS as u64));
    g.bench_function("offer16_commit", |b| {
        let mut ob = Outbound::new(Format::Json, limits);
        let slot = ob.add_slot(channel.clone(), None);
        let now = Instant::now();
        let mut seq = 0;
        b.iter(|| {
            for _ in 0..OFFERS {
                seq += 1;
                black_box(ob.offer(slot, frame.clone(), seq, now));
            }
            // Commits the newest quote plus its `conflated` notice; then "writes" them.
            ob.commit(now);
            let (_, bytes) = ob.queued();
            ob.advance(bytes);
        })
    });

    g.throughput(Throughput::Elements(MAX_IOV as u64));
    g.bench_function("push64_slices_advance", |b| {
        let mut ob = Outbound::new(Format::Json, limits);
        b.iter(|| {
            for i in 0..MAX_IOV {
                ob.push(frame.clone(), i as u64)
                    .expect("limits hold 4 * MAX_IOV frames");
            }
            let written = {
                let mut iov = [IoSlice::new(&[]); MAX_IOV];
                let n = ob.slices(&mut iov);
                black_box(&iov);
                iov[..n].iter().map(|s| s.len()).sum()
            };
            ob.advance(written);
        })
    });
    g.finish();
}

/// A small inter-shard message: the bench measures the inbox, not the payload.
#[derive(Debug, Clone, Copy)]
struct Msg {
    seq: u64,
    conn: u64,
}

fn bench_dispatch(c: &mut Criterion) {
    // The server's default `inbox_capacity`.
    const INBOX: usize = 16 * 1024;
    let mut g = c.benchmark_group("dispatch");
    g.throughput(Throughput::Elements(1));
    g.bench_function("mesh_same_thread", |b| {
        let mesh = Mesh::new(2, INBOX);
        let msg = Msg { seq: 1, conn: 2 };
        b.iter(|| {
            mesh.send(1, black_box(msg))
                .expect("the inbox is drained every iteration");
            mesh.try_recv(1)
        })
    });

    g.throughput(Throughput::Elements(XTHREAD_MSGS));
    g.bench_function("mesh_spsc_2threads_100k", |b| {
        b.iter_custom(|iters| {
            let total = iters * XTHREAD_MSGS;
            let mesh: Mesh<Msg> = Mesh::new(2, INBOX);
            let start = Instant::now();
            thread::scope(|s| {
                s.spawn(|| {
                    let backoff = Backoff::new();
                    let (mut got, mut sum) = (0u64, 0u64);
                    while got < total {
                        match mesh.try_recv(1) {
                            Some(m) => {
                                sum = sum.wrapping_add(m.seq ^ m.conn);
                                got += 1;
                                backoff.reset();
                            }
                            None => backoff.snooze(),
                        }
                    }
                    black_box(sum);
                });
                let backoff = Backoff::new();
                for seq in 0..total {
                    let mut msg = Msg { seq, conn: 7 };
                    // Bounded: the consumer always drains, so a full inbox empties.
                    while let Err(back) = mesh.send(1, msg) {
                        msg = back;
                        backoff.snooze();
                    }
                    backoff.reset();
                }
            });
            start.elapsed()
        })
    });
    g.finish();
}

/// 100 loopback TCP connections: the server ends are written by the bench thread, the
/// client ends are drained by one reader thread that never stops reading until dropped.
struct Loopback {
    servers: Vec<TcpStream>,
    /// Bytes written per server socket in the current iteration.
    sent: Vec<usize>,
    /// Bytes the reader has drained, over all sockets, since setup.
    received: Arc<AtomicU64>,
    /// Bytes written over all sockets since setup.
    expected: u64,
    stop: Arc<AtomicBool>,
    reader: Option<JoinHandle<()>>,
}

impl Loopback {
    fn new(n: usize) -> io::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let addr = listener.local_addr()?;
        let (mut servers, mut clients) = (Vec::with_capacity(n), Vec::with_capacity(n));
        for _ in 0..n {
            let client = TcpStream::connect(addr)?;
            let (server, _) = listener.accept()?;
            // As the server does: frames go out as soon as they are written.
            server.set_nodelay(true)?;
            server.set_nonblocking(true)?;
            client.set_nonblocking(true)?;
            socket2::SockRef::from(&client).set_recv_buffer_size(1 << 20)?;
            servers.push(server);
            clients.push(client);
        }
        let received = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let reader = {
            let (received, stop) = (received.clone(), stop.clone());
            thread::spawn(move || drain(clients, &received, &stop))
        };
        Ok(Loopback {
            sent: vec![0; n],
            servers,
            received,
            expected: 0,
            stop,
            reader: Some(reader),
        })
    }

    /// Writes `frames` copies of `frame` to every socket, `per_call` frames per write call
    /// (1: plain `write`; more: `write_vectored` of the same bytes repeated). A socket that
    /// would block is left for the next pass, as an event loop would.
    fn write_all(&mut self, frame: &[u8], frames: usize, per_call: usize) -> io::Result<()> {
        let len = frame.len();
        let total = frames * len;
        self.sent.fill(0);
        let mut pending = self.servers.len();
        let mut stalled: Option<Instant> = None;
        while pending > 0 {
            let mut progress = false;
            for (sock, done) in self.servers.iter_mut().zip(self.sent.iter_mut()) {
                while *done < total {
                    let off = *done % len;
                    let res = if per_call == 1 {
                        sock.write(&frame[off..])
                    } else {
                        // The rest of the current frame, then whole frames up to `per_call`.
                        let whole = (total - *done - (len - off)) / len;
                        let n = 1 + whole.min(per_call - 1);
                        let mut iov = [IoSlice::new(frame); WRITEV_FRAMES];
                        iov[0] = IoSlice::new(&frame[off..]);
                        sock.write_vectored(&iov[..n])
                    };
                    match res {
                        Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                        Ok(k) => {
                            *done += k;
                            progress = true;
                            if *done == total {
                                pending -= 1;
                            }
                        }
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                        Err(e) => return Err(e),
                    }
                }
            }
            if progress {
                stalled = None;
            } else {
                let since = *stalled.get_or_insert_with(Instant::now);
                if since.elapsed() > STALL {
                    return Err(io::Error::new(io::ErrorKind::TimedOut, "fan-out stalled"));
                }
                thread::yield_now();
            }
        }
        self.expected += (total * self.servers.len()) as u64;
        Ok(())
    }

    /// Waits until the reader has drained everything written so far.
    fn wait_drained(&self) -> io::Result<()> {
        let start = Instant::now();
        while self.received.load(Ordering::Acquire) < self.expected {
            if start.elapsed() > STALL {
                return Err(io::Error::new(io::ErrorKind::TimedOut, "drain stalled"));
            }
            thread::yield_now();
        }
        Ok(())
    }
}

impl Drop for Loopback {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(r) = self.reader.take() {
            let _ = r.join();
        }
    }
}

/// The reader thread: non-blocking reads over every client socket until told to stop.
fn drain(mut clients: Vec<TcpStream>, received: &AtomicU64, stop: &AtomicBool) {
    let mut buf = vec![0u8; 64 * 1024];
    while !stop.load(Ordering::Relaxed) {
        let mut got = 0;
        for c in &mut clients {
            loop {
                match c.read(&mut buf) {
                    Ok(0) => break,
                    Ok(k) => got += k,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => panic!("loopback read failed: {e}"),
                }
            }
        }
        if got > 0 {
            received.fetch_add(got as u64, Ordering::Release);
        } else {
            thread::yield_now();
        }
    }
}

fn bench_fanout(c: &mut Criterion) {
    // A ~150-byte quote event frame, built once and shared like the server's.
    let payload = format!(
        r#"{{"type":"event","channel":"{CHANNEL}","event":"{EVENT}","seq":1,"ts":{TS},"data":{{"bid":187.21,"ask":187.23,"bid_size":300}}}}"#
    );
    let shared: Bytes = frame(OpCode::Text, payload.as_bytes());
    assert!((140..=160).contains(&shared.len()), "{}", shared.len());

    let mut lb = Loopback::new(SOCKETS).expect("loopback sockets");
    // Sanity: both modes deliver every byte.
    for per_call in [1, WRITEV_FRAMES] {
        lb.write_all(&shared, FANOUT_FRAMES, per_call)
            .expect("fan-out");
        lb.wait_drained().expect("drain");
    }

    let mut g = c.benchmark_group("fanout_loopback");
    g.throughput(Throughput::Elements((FANOUT_FRAMES * SOCKETS) as u64));
    for (name, per_call) in [("write_per_frame", 1), ("writev_16", WRITEV_FRAMES)] {
        g.bench_function(name, |b| {
            b.iter_custom(|iters| {
                let mut took = Duration::ZERO;
                for _ in 0..iters {
                    let start = Instant::now();
                    lb.write_all(&shared, FANOUT_FRAMES, per_call)
                        .expect("fan-out");
                    took += start.elapsed();
                    // Untimed: every iteration starts with empty socket buffers.
                    lb.wait_drained().expect("drain");
                }
                took
            })
        });
    }
    g.finish();
}

fn config() -> Criterion {
    Criterion::default()
        .measurement_time(Duration::from_secs(2))
        .warm_up_time(Duration::from_millis(500))
        .sample_size(20)
}

/// Events each shard publishes per iteration of the `shards` group, in ops of [`BATCH`].
const SHARD_EVENTS: usize = 20_000;

/// 100 channel names whose home is `shard` of `shards`.
fn home_channels(shard: usize, shards: usize) -> Vec<String> {
    (0..)
        .map(|i| format!("quotes.S{i}"))
        .filter(|c| home_of(c, shards) == shard)
        .take(100)
        .collect()
}

/// One event to 1,000 sessions on one shard, no sockets: sequence, encode once, ring,
/// a reference and a queue push per subscriber, and the "write" of every queue (the fake
/// connections copy nothing: they only advance their queues).
fn bench_fanout_engine(c: &mut Criterion) {
    const SUBSCRIBERS: usize = 1_000;
    let mut g = c.benchmark_group("fanout");
    g.throughput(Throughput::Elements(SUBSCRIBERS as u64));
    for (name, channel) in [("stream_1000", "trades.F"), ("conflated_1000", "quotes.F")] {
        g.bench_function(name, |b| {
            let mut h = Harness::new(1);
            let conns: Vec<_> = (0..SUBSCRIBERS).map(|_| h.connect(0)).collect();
            for c in &conns {
                h.subscribe(c, channel, None);
                c.received.borrow_mut().clear();
            }
            let data = Bytes::from_static(QUOTE);
            let shard = &mut h.shards[0];
            b.iter(|| {
                shard
                    .publish(
                        vec![PubEvent {
                            channel: channel.to_string(),
                            event: EVENT.to_string(),
                            data: data.clone(),
                            key: None,
                            exclude: 0,
                        }],
                        |_| PubReply::None,
                    )
                    .expect("one shard, never overloaded");
                let now = shard.now();
                shard.commit_with(|p| {
                    let mut out = p.out.borrow_mut();
                    out.commit(now);
                    let (_, bytes) = out.queued();
                    out.advance(bytes);
                });
            })
        });
    }
    g.finish();
}

fn bench_shards(c: &mut Criterion) {
    let mut g = c.benchmark_group("shards");
    for n in [1usize, 2] {
        g.throughput(Throughput::Elements((n * SHARD_EVENTS) as u64));
        g.bench_function(BenchmarkId::new("publish_encode_ring", n), |b| {
            b.iter_custom(|iters| {
                let mesh = Arc::new(Mesh::new(n, 16 * 1024));
                let cfg = Arc::new(EngineConfig {
                    rules: ChannelRules::defaults(),
                    queue: QueueLimits {
                        max_frames: 4096,
                        max_bytes: 1 << 20,
                        max_lag: std::time::Duration::from_secs(5),
                    },
                    epoch: Arc::from("bench"),
                    cluster: None,
                    acks: None,
                });
                let start = std::sync::Barrier::new(n + 1);
                let mut elapsed = Duration::ZERO;
                thread::scope(|s| {
                    let handles: Vec<_> = (0..n)
                        .map(|id| {
                            let (mesh, cfg, start) = (mesh.clone(), cfg.clone(), &start);
                            s.spawn(move || {
                                let mut shard: Shard<FakeConn> =
                                    Shard::new(id, cfg, mesh, Instant::now());
                                let names = home_channels(id, n);
                                let data = Bytes::from_static(QUOTE);
                                start.wait();
                                let t = Instant::now();
                                for i in 0..iters as usize * SHARD_EVENTS / BATCH {
                                    let events: Vec<PubEvent> = (0..BATCH)
                                        .map(|k| PubEvent {
                                            channel: names[(i + k) % names.len()].clone(),
                                            event: EVENT.to_string(),
                                            data: data.clone(),
                                            key: None,
                                            exclude: 0,
                                        })
                                        .collect();
                                    shard
                                        .publish(events, |_| PubReply::None)
                                        .expect("no remote work, never overloaded");
                                    shard.commit_with(|_| {});
                                }
                                t.elapsed()
                            })
                        })
                        .collect();
                    start.wait();
                    // The slowest shard ends the iteration.
                    for h in handles {
                        elapsed = elapsed.max(h.join().expect("shard thread"));
                    }
                });
                elapsed
            })
        });
    }
    g.finish();
}

criterion_group! {
    name = benches;
    config = config();
    targets = bench_encode, bench_parse, bench_ring, bench_conflation, bench_dispatch,
        bench_fanout_engine, bench_shards, bench_fanout
}
criterion_main!(benches);
