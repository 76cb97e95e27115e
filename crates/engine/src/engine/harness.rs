//! A deterministic multi-shard harness (engine), in the spirit of quinn-proto's test `Pair`:
//! N shards whose hand-off queues the test pumps, fake connections that read at a chosen
//! speed, and a clock the test sets. No sockets, no threads, no runtime: a run is a
//! function of its inputs, so the engine's sequencing, replay, resync, conflation,
//! priority, slow-consumer and heartbeat rules are tested exactly, and the fan-out is
//! benchmarked without the kernel (`benches/core.rs`, `fanout`).
//!
//! ```
//! use quotecast_engine::engine::harness::Harness;
//! let mut h = Harness::new(2);
//! let reader = h.connect(1);
//! h.subscribe(&reader, "trades.X", None);
//! h.publish(0, "trades.X", "trade", r#"{"px":1}"#);
//! let got = h.read_all(&reader);
//! assert_eq!(got[0]["type"], "subscribed");
//! assert_eq!(got[1]["seq"], 1);
//! ```

use std::cell::{Cell, RefCell};
use std::ops::Deref;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use serde_json::Value;

use super::channel::ChannelRules;
use super::outbound::QueueLimits;
use super::session::Session;
use super::shard::{EngineConfig, PubReply, Shard, ShardMsg};
use super::signal::Mesh;
use crate::protocol::op::{PubEvent, Since};
use crate::protocol::Format;

/// A connection with no socket: what the shard hands it to write is "received" up to the
/// connection's read allowance.
#[derive(Debug)]
pub struct FakeConn {
    /// The engine's session.
    pub session: Session<FakeConn>,
    /// Bytes the reader still accepts (`usize::MAX`: reads everything at once).
    pub allowance: Cell<usize>,
    /// Bytes received and not yet taken by [`FakeConn::take_frames`].
    pub received: RefCell<Vec<u8>>,
}

impl Deref for FakeConn {
    type Target = Session<FakeConn>;

    fn deref(&self) -> &Session<FakeConn> {
        &self.session
    }
}

impl FakeConn {
    /// A connection on shard `shard` with `limits`.
    pub fn new(id: u64, format: Format, limits: QueueLimits, now: Instant) -> Self {
        FakeConn {
            session: Session::new(id, format, limits, now),
            allowance: Cell::new(usize::MAX),
            received: RefCell::new(Vec::new()),
        }
    }

    /// "Writes" what the session holds, up to the allowance (as a socket that accepts that
    /// many bytes would); returns the bytes taken.
    pub fn flush(&self, now: Instant) -> usize {
        let mut taken = 0;
        let written = self.out.borrow_mut().write_with(now, usize::MAX, |iov| {
            let budget = self.allowance.get();
            let mut got = 0;
            let mut rx = self.received.borrow_mut();
            for s in iov {
                let k = s.len().min(budget - got);
                rx.extend_from_slice(&s[..k]);
                got += k;
                if got == budget {
                    break;
                }
            }
            if budget != usize::MAX {
                self.allowance.set(budget - got);
            }
            taken += got;
            Ok::<_, std::convert::Infallible>(got)
        });
        let Ok(()) = written;
        taken
    }

    /// Bytes the shard still holds for this connection.
    pub fn backlog(&self) -> usize {
        self.out.borrow().queued().1
    }

    /// Takes the complete frames received so far: `(opcode, payload)`.
    pub fn take_frames(&self) -> Vec<(u8, Vec<u8>)> {
        let mut rx = self.received.borrow_mut();
        let mut frames = Vec::new();
        let mut pos = 0;
        while let Some((op, payload, len)) = parse_frame(&rx[pos..]) {
            frames.push((op, payload));
            pos += len;
        }
        rx.drain(..pos);
        frames
    }

    /// Takes the complete messages received so far as JSON (MessagePack decoded); a close
    /// frame becomes `{"close": code, "reason": text}`, pings are skipped.
    pub fn take_messages(&self) -> Vec<Value> {
        self.take_frames()
            .into_iter()
            .filter_map(|(op, p)| match op {
                0x1 => serde_json::from_slice(&p).ok(),
                0x2 => rmp_serde::from_slice(&p).ok(),
                0x8 => {
                    let code = p
                        .get(..2)
                        .map_or(1005, |c| u16::from_be_bytes([c[0], c[1]]));
                    let reason = String::from_utf8_lossy(p.get(2..).unwrap_or(&[])).into_owned();
                    Some(serde_json::json!({"close": code, "reason": reason}))
                }
                _ => None,
            })
            .collect()
    }
}

/// Parses one unmasked server frame: `(opcode, payload, frame length)`.
fn parse_frame(b: &[u8]) -> Option<(u8, Vec<u8>, usize)> {
    let (&b0, &b1) = (b.first()?, b.get(1)?);
    let (len, hdr) = match b1 & 0x7F {
        126 => (u16::from_be_bytes([*b.get(2)?, *b.get(3)?]) as usize, 4),
        127 => {
            let mut l = [0u8; 8];
            l.copy_from_slice(b.get(2..10)?);
            (u64::from_be_bytes(l) as usize, 10)
        }
        n => (n as usize, 2),
    };
    let payload = b.get(hdr..hdr + len)?;
    Some((b0 & 0x0F, payload.to_vec(), hdr + len))
}

/// N shards, pumped by the test, with a clock the test sets.
#[derive(Debug)]
pub struct Harness {
    /// The shards.
    pub shards: Vec<Shard<FakeConn>>,
    mesh: Arc<Mesh<ShardMsg>>,
    /// The clock: every unit of work runs at this instant.
    pub now: Instant,
    origin: Instant,
    /// Connections, to re-flush those the reader left data for.
    conns: Vec<(usize, Rc<FakeConn>)>,
    limits: QueueLimits,
    rules: ChannelRules,
    next_id: u64,
}

impl Harness {
    /// `n` shards with the default channel rules and generous queue limits (lag 5 s).
    pub fn new(n: usize) -> Self {
        Harness::with_limits(
            n,
            QueueLimits {
                max_frames: 65_536,
                max_bytes: 64 << 20,
                max_lag: Duration::from_secs(5),
            },
        )
    }

    /// `n` shards with `limits` on every connection.
    pub fn with_limits(n: usize, limits: QueueLimits) -> Self {
        let mesh = Arc::new(Mesh::new(n, 1 << 16));
        let rules = ChannelRules::defaults();
        let cfg = Arc::new(EngineConfig {
            rules: rules.clone(),
            queue: limits,
            epoch: Arc::from("harness"),
            cluster: None,
            acks: None,
        });
        let now = Instant::now();
        let shards = (0..n)
            .map(|i| {
                let mut s = Shard::new(i, cfg.clone(), mesh.clone(), now);
                s.set_now(now, 0);
                s
            })
            .collect();
        Harness {
            shards,
            mesh,
            now,
            origin: now,
            conns: Vec::new(),
            limits,
            rules,
            next_id: 0,
        }
    }

    /// Moves the clock forward.
    pub fn advance(&mut self, d: Duration) {
        self.now += d;
    }

    fn unix_ns(&self) -> u64 {
        // A fixed origin plus the elapsed test time: deterministic `ts` values.
        1_700_000_000_000_000_000 + self.now.duration_since(self.origin).as_nanos() as u64
    }

    /// A JSON connection served by `shard`.
    pub fn connect(&mut self, shard: usize) -> Rc<FakeConn> {
        self.connect_with(shard, Format::Json)
    }

    /// A connection of `format` served by `shard`.
    pub fn connect_with(&mut self, shard: usize, format: Format) -> Rc<FakeConn> {
        self.next_id += 1;
        let id = ((shard as u64) << 48) | self.next_id;
        let c = Rc::new(FakeConn::new(id, format, self.limits, self.now));
        self.shards[shard].add_peer(c.clone());
        self.conns.push((shard, c.clone()));
        c
    }

    fn shard_of(&self, c: &Rc<FakeConn>) -> usize {
        (c.id >> 48) as usize
    }

    /// Subscribes `c` to `channel` (with `since` when given) and pumps until answered.
    pub fn subscribe(&mut self, c: &Rc<FakeConn>, channel: &str, since: Option<(u64, &str)>) {
        self.subscribe_no_pump(c, channel, since, None);
        self.pump();
    }

    /// Sends a subscribe without pumping: the answer races whatever the test does next.
    pub fn subscribe_no_pump(
        &mut self,
        c: &Rc<FakeConn>,
        channel: &str,
        since: Option<(u64, &str)>,
        max_hz: Option<f64>,
    ) {
        let s = self.shard_of(c);
        let policy = self
            .rules
            .resolve(channel)
            .map(|r| r.policy.clone())
            .expect("a channel the default rules cover");
        let (now, unix) = (self.now, self.unix_ns());
        let shard = &mut self.shards[s];
        shard.set_now(now, unix);
        shard.subscribe(
            c,
            Arc::from(channel),
            &policy,
            None,
            false,
            since.map(|(seq, epoch)| Since {
                seq,
                epoch: Some(epoch.to_string()),
            }),
            max_hz,
        );
        shard.commit_with(|p| {
            p.flush(now);
        });
    }

    /// Publishes one event from a publisher on `shard` and pumps until delivered.
    pub fn publish(&mut self, shard: usize, channel: &str, event: &str, data: &str) {
        self.publish_no_pump(shard, channel, event, data);
        self.pump();
    }

    /// Publishes one event from `shard` that connection `exclude` must not receive (a
    /// Pusher client event's sender, an API publish's `socket_id`), and pumps.
    pub fn publish_excluding(&mut self, shard: usize, channel: &str, data: &str, exclude: u64) {
        self.publish_with(shard, channel, "e", data, exclude);
        self.pump();
    }

    /// Publishes one event from `shard` without pumping the other shards.
    pub fn publish_no_pump(&mut self, shard: usize, channel: &str, event: &str, data: &str) {
        self.publish_with(shard, channel, event, data, 0);
    }

    fn publish_with(&mut self, shard: usize, channel: &str, event: &str, data: &str, exclude: u64) {
        let ev = PubEvent {
            channel: channel.to_string(),
            event: event.to_string(),
            data: Bytes::copy_from_slice(data.as_bytes()),
            key: None,
            exclude,
        };
        let (now, unix) = (self.now, self.unix_ns());
        let s = &mut self.shards[shard];
        s.set_now(now, unix);
        s.publish(vec![ev], |_| PubReply::None)
            .expect("the harness's inboxes do not fill");
        s.commit_with(|p| {
            p.flush(now);
        });
    }

    /// Delivers `msg` to `shard`'s inbox as another shard (or the cluster bridge) would.
    pub fn inject(&mut self, shard: usize, msg: ShardMsg) {
        if self.mesh.send(shard, msg).is_err() {
            panic!("inbox full");
        }
    }

    /// Runs every shard's inbox until all are empty, then lets every connection read what
    /// its allowance permits. Returns the work items handled.
    pub fn pump(&mut self) -> usize {
        let mut handled = 0;
        loop {
            let mut any = false;
            for i in 0..self.shards.len() {
                let (now, unix) = (self.now, self.unix_ns());
                let shard = &mut self.shards[i];
                shard.set_now(now, unix);
                while let Some(msg) = self.mesh.try_recv(i) {
                    any = true;
                    if let ShardMsg::Batch(items) = msg {
                        for item in items {
                            handled += 1;
                            shard.handle(item);
                        }
                    }
                }
                shard.commit_with(|p| {
                    p.flush(now);
                });
            }
            if !any {
                break;
            }
        }
        let now = self.now;
        for (_, c) in &self.conns {
            if c.has_output() {
                c.flush(now);
            }
        }
        handled
    }

    /// Lets `c` read everything and returns its messages.
    pub fn read_all(&mut self, c: &Rc<FakeConn>) -> Vec<Value> {
        c.allowance.set(usize::MAX);
        self.pump();
        c.take_messages()
    }

    /// Lets `c` read `bytes` more and pumps.
    pub fn read(&mut self, c: &Rc<FakeConn>, bytes: usize) {
        c.allowance.set(bytes);
        self.pump();
    }

    /// Runs shard `s`'s once-a-second lag check at the current time.
    pub fn check_lag(&mut self, s: usize) {
        let now = self.now;
        let shard = &mut self.shards[s];
        shard.set_now(now, 0);
        shard.check_lag(now);
        shard.commit_with(|p| {
            p.flush(now);
        });
    }

    /// Runs shard `s`'s heartbeat at the current time.
    pub fn heartbeat(&mut self, s: usize, interval: Duration) {
        let now = self.now;
        let ping = crate::protocol::frame::frame(crate::protocol::frame::OpCode::Ping, b"");
        let shard = &mut self.shards[s];
        shard.set_now(now, 0);
        shard.heartbeat(now, interval, &ping);
        shard.commit_with(|p| {
            p.flush(now);
        });
    }
}
