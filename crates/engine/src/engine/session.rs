//! One connection as the engine sees it (engine): its outbound queue, subscriptions,
//! pending publish acks, replies held behind in-flight subscribes, and close state. No
//! socket: the server layer embeds a `Session` in its connection type `C` (which derefs to
//! it), writes what [`Outbound`] holds when the shard hands the connection back from
//! `Shard::commit_with`, and reports what the socket did. A test harness embeds it in a fake
//! connection that reads at a chosen speed.
//!
//! Generic over `C`, the embedding connection type, so that a subscription can point at its
//! connection (`Rc<C>`) without a trait object: a fan-out is a reference-count increment and
//! a queue push per subscriber, with no virtual call and no lookup.

use std::cell::{Cell, RefCell};
use std::sync::Arc;
use std::time::Instant;

use ahash::AHashMap;
use bytes::Bytes;

use super::outbound::{Outbound, Overflow, QueueLimits};
use super::signal::LocalSignal;
use super::sublist::SubList;
use crate::protocol::encode::published_frame;
use crate::protocol::op::Id;
use crate::protocol::{CloseCode, Format};

/// Where a connection is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionState {
    /// Serving.
    Open,
    /// A close frame is queued; finishing the writes.
    Closing,
    /// The transport failed or the peer went away; nothing more can be written.
    Dead,
}

/// A publish ack being assembled from the home shards' replies.
#[derive(Debug)]
struct PendingAck {
    id: Id,
    single: Option<Arc<str>>,
    seqs: Vec<u64>,
    remaining: usize,
}

/// Per-session state that most connections never need.
#[derive(Debug, Default)]
struct Rare {
    close_reason: Option<(CloseCode, String)>,
    acks: AHashMap<u32, PendingAck>,
    next_token: u32,
    /// Replies issued while subscribes were in flight, held so that replies keep the order
    /// of the ops that caused them (a `pong` never overtakes an earlier `subscribed`).
    deferred: Vec<Bytes>,
}

/// The engine's side of one connection. `C` is the connection type that embeds it.
#[derive(Debug)]
pub struct Session<C> {
    /// Unique per process: shard index in the top 16 bits, a counter below.
    pub id: u64,
    /// Wire format.
    pub format: Format,
    /// Frames waiting to be written.
    pub out: RefCell<Outbound>,
    /// Subscriptions by channel.
    pub subs: RefCell<SubList<C>>,
    /// Listed in the shard's dirty list.
    pub dirty: Cell<bool>,
    /// Wakes the connection's task (output to write, close, timer change).
    pub signal: LocalSignal,
    /// Last time anything was received (set by the server layer; read by the heartbeat).
    pub last_rx: Cell<Instant>,
    /// Next `max_hz` release.
    pub next_due: Cell<Option<Instant>>,
    state: Cell<SessionState>,
    /// Subscribe requests awaiting their home shard's reply.
    inflight_subs: Cell<u32>,
    /// What only some sessions need (a close reason, publish acks, held replies), allocated
    /// on first use: an idle subscriber does not pay for it.
    rare: RefCell<Option<Box<Rare>>>,
}

impl<C> Session<C> {
    /// A new open session, created at `now`.
    pub fn new(id: u64, format: Format, limits: QueueLimits, now: Instant) -> Self {
        Session {
            id,
            format,
            out: RefCell::new(Outbound::new(format, limits)),
            subs: RefCell::new(SubList::default()),
            dirty: Cell::new(false),
            signal: LocalSignal::default(),
            last_rx: Cell::new(now),
            next_due: Cell::new(None),
            state: Cell::new(SessionState::Open),
            inflight_subs: Cell::new(0),
            rare: RefCell::new(None),
        }
    }

    /// The printable connection id, `shard-counter`.
    pub fn conn_id(&self) -> String {
        format!("{}-{}", self.id >> 48, self.id & 0xFFFF_FFFF_FFFF)
    }

    /// Current state.
    pub fn state(&self) -> SessionState {
        self.state.get()
    }

    /// Whether a close has begun (or the transport is gone).
    pub fn is_closing(&self) -> bool {
        self.state.get() != SessionState::Open
    }

    /// Why the connection closed, once it has.
    pub fn close_reason(&self) -> Option<(CloseCode, String)> {
        self.rare
            .borrow()
            .as_ref()
            .and_then(|r| r.close_reason.clone())
    }

    /// Queues `close` (a complete close frame) and stops accepting frames; drops the
    /// unsent backlog when `discard`.
    pub fn begin_close(&self, close: Bytes, discard: bool, code: CloseCode, reason: &str) {
        if self.state.get() != SessionState::Open {
            return;
        }
        self.out.borrow_mut().close(close, discard);
        self.state.set(SessionState::Closing);
        self.rare_mut().close_reason = Some((code, reason.to_string()));
        self.signal.notify();
    }

    /// The transport is unusable.
    pub fn set_dead(&self, why: &str) {
        if self.state.get() != SessionState::Dead {
            if self.close_reason().is_none() {
                self.rare_mut().close_reason = Some((CloseCode::Abnormal, why.to_string()));
            }
            self.state.set(SessionState::Dead);
            self.signal.notify();
        }
    }

    /// Asks the connection's task to wake at `due` (for `max_hz`).
    pub fn schedule(&self, due: Instant) {
        let next = match self.next_due.get() {
            Some(t) if t <= due => t,
            _ => due,
        };
        self.next_due.set(Some(next));
        self.signal.notify();
    }

    fn rare_mut(&self) -> std::cell::RefMut<'_, Rare> {
        std::cell::RefMut::map(self.rare.borrow_mut(), |r| {
            &mut **r.get_or_insert_with(Box::default)
        })
    }

    /// Queues a reply to an op, behind any subscribe still in flight.
    pub fn reply(&self, frame: Bytes) -> Result<(), Overflow> {
        if frame.is_empty() {
            return Ok(()); // a message this connection's dialect does not have
        }
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

    /// Publishes of this connection still waiting for their answer.
    pub fn pending_acks(&self) -> usize {
        self.rare.borrow().as_ref().map_or(0, |r| r.acks.len())
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
