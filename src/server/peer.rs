//! One WebSocket connection's state (server layer): its socket, outbound queue,
//! subscriptions and decoder. The shard hands frames to it; `flush` writes everything
//! pending with up to [`MAX_WRITES_PER_FLUSH`] `writev` calls of up to [`MAX_IOV`] frames
//! each.

use std::cell::{Cell, RefCell};
use std::io::{self, IoSlice};
use std::sync::Arc;
use std::time::Instant;

use ahash::AHashMap;
use bytes::Bytes;
use tokio::net::TcpStream;

use super::runtime::UserSlot;
use crate::auth::{Identity, Role, TokenBucket};
use crate::engine::outbound::{Outbound, Overflow, QueueLimits, MAX_IOV};
use crate::engine::shard::published_frame;
use crate::engine::signal::LocalSignal;
use crate::engine::sublist::SubList;
use crate::protocol::frame::Decoder;
use crate::protocol::op::Id;
use crate::protocol::{CloseCode, Format};

/// Most `writev` calls per flush before yielding to other connections (bounded work per
/// poll, quinn's `WorkLimiter` idea): 16 × [`MAX_IOV`] frames.
const MAX_WRITES_PER_FLUSH: usize = 16;

/// Where a connection is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PeerState {
    /// Serving.
    Open,
    /// A close frame is queued; finishing the writes.
    Closing,
    /// The socket failed or the peer went away; nothing more can be written.
    Dead,
}

/// A publish ack being assembled from the home shards' replies.
#[derive(Debug)]
pub struct PendingAck {
    id: Id,
    single: Option<Arc<str>>,
    seqs: Vec<u64>,
    remaining: usize,
}

/// Per-connection state that most connections never need.
#[derive(Debug, Default)]
struct Rare {
    close_reason: Option<(CloseCode, String)>,
    acks: AHashMap<u32, PendingAck>,
    next_token: u32,
    /// Replies issued while subscribes were in flight, held so that replies keep the order
    /// of the ops that caused them (a `pong` never overtakes an earlier `subscribed`).
    deferred: Vec<Bytes>,
    /// This connection's place in its user's connection count.
    user_slot: Option<UserSlot>,
    /// Deadline for the `auth` op of a connection that has not authenticated.
    auth_deadline: Option<Instant>,
}

/// The connection.
#[derive(Debug)]
pub struct Peer {
    /// Unique per process: shard index in the top 16 bits, a counter below.
    pub id: u64,
    /// Wire format.
    pub format: Format,
    /// The socket (reads by the connection task, writes by whoever flushes).
    pub stream: TcpStream,
    /// Frames waiting to be written.
    pub out: RefCell<Outbound>,
    /// Subscriptions by channel.
    pub subs: RefCell<SubList>,
    /// Listed in the shard's dirty list.
    pub dirty: Cell<bool>,
    /// Wakes the connection task (blocked write, close, timer change).
    pub signal: LocalSignal,
    /// The last write would have blocked: wait for writability.
    pub blocked: Cell<bool>,
    /// Last time anything was received.
    pub last_rx: Cell<Instant>,
    /// Next `max_hz` release.
    pub next_due: Cell<Option<Instant>>,
    state: Cell<PeerState>,
    /// What only some connections need (a close reason, publish acks, held replies, a user
    /// slot), allocated on first use: an idle subscriber does not pay for it.
    rare: RefCell<Option<Box<Rare>>>,
    /// Subscribe requests awaiting their home shard's reply.
    inflight_subs: Cell<u32>,
    /// Who is on this connection.
    pub identity: RefCell<Identity>,
    /// Whether the connection may use ops other than `auth` and `ping`: it presented a valid
    /// token, or anonymous access is allowed.
    pub authed: Cell<bool>,
    /// Client op rate limit (none for publishers).
    pub bucket: RefCell<Option<TokenBucket>>,
    /// Ops refused by the rate limit so far.
    pub violations: Cell<u32>,
    /// Last client op, for the idle timeout.
    pub last_op: Cell<Instant>,
    /// Client frame decoder.
    pub decoder: RefCell<Decoder>,
    /// Tail of a frame that has not fully arrived (usually empty, then unallocated).
    pub inbuf: RefCell<Vec<u8>>,
}

impl Peer {
    /// A new open connection.
    pub fn new(
        id: u64,
        format: Format,
        stream: TcpStream,
        limits: QueueLimits,
        max_message: usize,
    ) -> Self {
        let now = Instant::now();
        Peer {
            identity: RefCell::new(Identity::anonymous(Role::Subscriber)),
            authed: Cell::new(false),
            bucket: RefCell::new(None),
            violations: Cell::new(0),
            last_op: Cell::new(now),
            id,
            format,
            stream,
            out: RefCell::new(Outbound::new(format, limits)),
            subs: RefCell::new(SubList::default()),
            dirty: Cell::new(false),
            signal: LocalSignal::default(),
            blocked: Cell::new(false),
            last_rx: Cell::new(Instant::now()),
            next_due: Cell::new(None),
            state: Cell::new(PeerState::Open),
            rare: RefCell::new(None),
            inflight_subs: Cell::new(0),
            decoder: RefCell::new(Decoder::new(max_message)),
            inbuf: RefCell::new(Vec::new()),
        }
    }

    /// The printable connection id, `shard-counter`.
    pub fn conn_id(&self) -> String {
        format!("{}-{}", self.id >> 48, self.id & 0xFFFF_FFFF_FFFF)
    }

    /// Current state.
    pub fn state(&self) -> PeerState {
        self.state.get()
    }

    /// Whether a close has begun (or the socket is gone).
    pub fn is_closing(&self) -> bool {
        self.state.get() != PeerState::Open
    }

    /// Why the connection closed, once it has.
    pub fn close_reason(&self) -> Option<(CloseCode, String)> {
        self.rare
            .borrow()
            .as_ref()
            .and_then(|r| r.close_reason.clone())
    }

    /// Queues `close` and stops accepting frames.
    pub fn begin_close(&self, close: Bytes, discard: bool, code: CloseCode, reason: &str) {
        if self.state.get() != PeerState::Open {
            return;
        }
        self.out.borrow_mut().close(close, discard);
        self.state.set(PeerState::Closing);
        self.rare_mut().close_reason = Some((code, reason.to_string()));
        self.signal.notify();
    }

    /// The socket is unusable.
    pub fn set_dead(&self, why: &str) {
        if self.state.get() != PeerState::Dead {
            if self.close_reason().is_none() {
                self.rare_mut().close_reason = Some((CloseCode::Abnormal, why.to_string()));
            }
            self.state.set(PeerState::Dead);
            self.signal.notify();
        }
    }

    /// Asks the connection task to wake at `due` (for `max_hz`).
    pub fn schedule(&self, due: Instant) {
        let next = match self.next_due.get() {
            Some(t) if t <= due => t,
            _ => due,
        };
        self.next_due.set(Some(next));
        self.signal.notify();
    }

    /// Writes what is pending: commits ready quotes, then `writev`s until done, the socket
    /// is full, or the per-flush bound is reached.
    pub fn flush(&self, now: Instant) {
        if self.state.get() == PeerState::Dead || self.blocked.get() {
            return;
        }
        let mut out = self.out.borrow_mut();
        out.commit(now);
        for _ in 0..MAX_WRITES_PER_FLUSH {
            let mut iov = [IoSlice::new(&[]); MAX_IOV];
            let n = out.slices(&mut iov);
            if n == 0 {
                if out.has_ready() {
                    out.commit(now);
                    if out.has_wire() {
                        continue;
                    }
                }
                return;
            }
            match self.stream.try_write_vectored(&iov[..n]) {
                Ok(0) => {
                    drop(out);
                    self.set_dead("write returned 0");
                    return;
                }
                Ok(w) => out.advance(w),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    self.blocked.set(true);
                    self.signal.notify();
                    return;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => {
                    drop(out);
                    self.set_dead("write failed");
                    return;
                }
            }
        }
        // Bound reached with more to write: let the connection task continue later.
        if out.has_wire() || out.has_ready() {
            self.signal.notify();
        }
    }

    /// The rarely needed state, allocated on first use.
    fn rare_mut(&self) -> std::cell::RefMut<'_, Rare> {
        std::cell::RefMut::map(self.rare.borrow_mut(), |r| {
            &mut **r.get_or_insert_with(Box::default)
        })
    }

    /// Holds `slot` (this connection's place in its user's connection count).
    pub fn set_user_slot(&self, slot: UserSlot) {
        self.rare_mut().user_slot = Some(slot);
    }

    /// Deadline for the `auth` op, while the connection has no identity.
    pub fn auth_deadline(&self) -> Option<Instant> {
        self.rare.borrow().as_ref().and_then(|r| r.auth_deadline)
    }

    /// Sets or clears the `auth` deadline.
    pub fn set_auth_deadline(&self, d: Option<Instant>) {
        if d.is_some() || self.rare.borrow().is_some() {
            self.rare_mut().auth_deadline = d;
        }
    }

    /// Gives the user's connection slot back.
    pub fn release_user_slot(&self) {
        if let Some(r) = self.rare.borrow_mut().as_mut() {
            r.user_slot = None;
        }
    }

    /// Queues a reply to an op, behind any subscribe still in flight.
    pub fn reply(&self, frame: Bytes) -> Result<(), Overflow> {
        if self.inflight_subs.get() == 0 {
            return self.out.borrow_mut().push_reply(frame);
        }
        let max = self.out.borrow().limits().max_frames;
        let mut rare = self.rare_mut();
        if rare.deferred.len() >= max {
            return Err(Overflow::Full);
        }
        rare.deferred.push(frame);
        Ok(())
    }

    /// A subscribe request was sent to its home shard.
    pub fn sub_sent(&self) {
        self.inflight_subs.set(self.inflight_subs.get() + 1);
    }

    /// A subscribe reply arrived (its ack is already queued): release held replies once none
    /// is in flight.
    pub fn sub_answered(&self) -> Result<(), Overflow> {
        let n = self.inflight_subs.get().saturating_sub(1);
        self.inflight_subs.set(n);
        if n > 0 {
            return Ok(());
        }
        let held = match self.rare.borrow_mut().as_mut() {
            Some(r) => std::mem::take(&mut r.deferred),
            None => return Ok(()),
        };
        let mut out = self.out.borrow_mut();
        for f in held {
            out.push_reply(f)?;
        }
        Ok(())
    }

    /// Whether output is waiting.
    pub fn has_output(&self) -> bool {
        let out = self.out.borrow();
        out.has_wire() || out.has_ready()
    }

    /// Registers a publish ack to be completed by `complete_ack`; returns its token.
    pub fn new_ack(&self, id: Id, single: Option<Arc<str>>, events: usize) -> u32 {
        let mut rare = self.rare_mut();
        let token = rare.next_token;
        rare.next_token = token.wrapping_add(1);
        rare.acks.insert(
            token,
            PendingAck {
                id,
                single,
                seqs: vec![0; events],
                remaining: events,
            },
        );
        token
    }

    /// Drops a pending ack (the publish was refused).
    pub fn cancel_ack(&self, token: u32) {
        if let Some(r) = self.rare.borrow_mut().as_mut() {
            r.acks.remove(&token);
        }
    }

    /// Removes a pending ack that will not complete (the publish failed); its op's id.
    pub fn take_ack(&self, token: u32) -> Option<Id> {
        let mut rare = self.rare.borrow_mut();
        rare.as_mut()?.acks.remove(&token).map(|a| a.id)
    }

    /// Records seqs for a pending ack; returns the ack frame once all are known.
    pub fn complete_ack(&self, token: u32, seqs: &[(u16, u64)]) -> Option<Bytes> {
        let mut rare = self.rare.borrow_mut();
        let acks = &mut rare.as_mut()?.acks;
        let pending = acks.get_mut(&token)?;
        for &(i, s) in seqs {
            if let Some(slot) = pending.seqs.get_mut(i as usize) {
                *slot = s;
            }
        }
        pending.remaining = pending.remaining.saturating_sub(seqs.len());
        if pending.remaining > 0 {
            return None;
        }
        let done = acks.remove(&token)?;
        Some(published_frame(
            self.format,
            &done.id,
            done.single.as_deref(),
            &done.seqs,
        ))
    }
}

#[cfg(test)]
mod size_tests {
    #[test]
    fn a_connection_fits_the_640_byte_size_class_with_its_rc() {
        // `Rc<Peer>` adds 16 bytes; 624 keeps it in mimalloc's 640-byte class instead of
        // 768 (10,000 idle connections: 1.25 MB).
        let n = std::mem::size_of::<super::Peer>();
        assert!(n <= 624, "Peer is {n} bytes");
    }
}
