//! One WebSocket connection (server layer): the engine's [`Session`] (queue, subscriptions,
//! acks, close state) plus what only the server knows: the socket, the frame decoder, the
//! client's identity and limits. `flush` writes what the session holds with up to
//! `MAX_WRITES_PER_FLUSH` `writev` calls of up to [`MAX_IOV`] frames each.

use std::cell::{Cell, RefCell};
use std::io;
use std::ops::Deref;
use std::time::Instant;

use tokio::net::TcpStream;

use super::runtime::UserSlot;
use crate::auth::{Identity, Role, TokenBucket};
use crate::engine::outbound::QueueLimits;
use crate::engine::session::{Session, SessionState};
use crate::protocol::frame::Decoder;
use crate::protocol::Format;
use crate::pusher::ws::PusherConn;

/// Most `writev` calls per flush before yielding to other connections (bounded work per
/// poll, quinn's `WorkLimiter` idea): 16 × [`MAX_IOV`] frames.
const MAX_WRITES_PER_FLUSH: usize = 16;

/// Server-side state that most connections never need.
#[derive(Debug, Default)]
struct Rare {
    /// This connection's place in its user's connection count.
    user_slot: Option<UserSlot>,
    /// Deadline for the `auth` op of a connection that has not authenticated.
    auth_deadline: Option<Instant>,
    /// Per-namespace op limits (`[[rate_limits]]`), one bucket per rule, made on first use.
    op_limits: Vec<Option<TokenBucket>>,
    /// A Pusher connection's app, socket id, presence memberships (`None` on `/ws`).
    pusher: Option<Box<PusherConn>>,
}

/// The connection.
#[derive(Debug)]
pub struct Peer {
    /// The engine's side: queue, subscriptions, acks, close state.
    pub session: Session<Peer>,
    /// The socket (reads by the connection task, writes by whoever flushes).
    pub stream: TcpStream,
    /// The last write would have blocked: wait for writability.
    pub blocked: Cell<bool>,
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
    /// A user slot, an auth deadline, a Pusher connection's state, allocated on first use.
    rare: RefCell<Option<Box<Rare>>>,
}

impl Deref for Peer {
    type Target = Session<Peer>;

    fn deref(&self) -> &Session<Peer> {
        &self.session
    }
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
            session: Session::new(id, format, limits, now),
            stream,
            blocked: Cell::new(false),
            identity: RefCell::new(Identity::anonymous(Role::Subscriber)),
            authed: Cell::new(false),
            bucket: RefCell::new(None),
            violations: Cell::new(0),
            last_op: Cell::new(now),
            decoder: RefCell::new(Decoder::new(max_message)),
            inbuf: RefCell::new(Vec::new()),
            rare: RefCell::new(None),
        }
    }

    /// Writes what is pending: commits ready quotes, then `writev`s until done, the socket
    /// is full, or the per-flush bound is reached.
    pub fn flush(&self, now: Instant) {
        if self.state() == SessionState::Dead || self.blocked.get() {
            return;
        }
        let mut out = self.out.borrow_mut();
        let written = out.write_with(now, MAX_WRITES_PER_FLUSH, |iov| loop {
            match self.stream.try_write_vectored(iov) {
                Ok(0) => return Err("write returned 0"),
                Ok(w) => return Ok(w),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    self.blocked.set(true);
                    return Ok(0);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return Err("write failed"),
            }
        });
        let pending = out.has_wire() || out.has_ready();
        drop(out);
        match written {
            Err(why) => self.set_dead(why),
            // Blocked: wait for writability; bound reached: continue later. Either way the
            // connection task takes over.
            Ok(()) if pending => self.signal.notify(),
            Ok(()) => {}
        }
    }

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

    /// Takes one token of rate-limit rule `rule` (`rate` per second, `burst`); `Err` is how
    /// long until one is available.
    pub fn take_op_limit(
        &self,
        rule: usize,
        rate: f64,
        burst: f64,
        now: Instant,
    ) -> Result<(), std::time::Duration> {
        let mut rare = self.rare_mut();
        if rare.op_limits.len() <= rule {
            rare.op_limits.resize_with(rule + 1, || None);
        }
        let b = rare.op_limits[rule].get_or_insert_with(|| TokenBucket::new(rate, burst, now));
        if b.take(now) {
            Ok(())
        } else {
            Err(b.wait())
        }
    }

    /// A Pusher connection's state.
    pub fn pusher(&self) -> Option<std::cell::Ref<'_, PusherConn>> {
        std::cell::Ref::filter_map(self.rare.borrow(), |r| {
            r.as_ref().and_then(|r| r.pusher.as_deref())
        })
        .ok()
    }

    /// A Pusher connection's state, to change.
    pub fn pusher_mut(&self) -> Option<std::cell::RefMut<'_, PusherConn>> {
        std::cell::RefMut::filter_map(self.rare.borrow_mut(), |r| {
            r.as_mut().and_then(|r| r.pusher.as_deref_mut())
        })
        .ok()
    }

    /// Makes this a Pusher connection of the app in `p`.
    pub fn set_pusher(&self, p: PusherConn) {
        self.rare_mut().pusher = Some(Box::new(p));
    }

    /// Takes a Pusher connection's state (when it ends).
    pub fn take_pusher(&self) -> Option<Box<PusherConn>> {
        self.rare
            .borrow_mut()
            .as_mut()
            .and_then(|r| r.pusher.take())
    }

    /// Gives the user's connection slot back.
    pub fn release_user_slot(&self) {
        if let Some(r) = self.rare.borrow_mut().as_mut() {
            r.user_slot = None;
        }
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
