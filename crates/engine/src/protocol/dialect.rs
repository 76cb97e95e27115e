//! The dialect seam (protocol layer): everything that differs between wire protocols goes
//! through [`Format`], the connection's dialect and encoding, and nowhere else.
//!
//! - how an event is framed: [`Format::encode_event`], called at most once per event per
//!   dialect actually subscribed (the engine caches the frame in the event and every
//!   subscriber of that dialect, on every shard, shares it);
//! - how the server's messages look: [`Format::reply`] maps a [`Reply`] (what the engine or
//!   the server means: subscribed, conflated, published, error, ...) to a frame, or to
//!   nothing where a dialect has no such message;
//! - how a client's data message becomes an op: [`Format::parse_op`].
//!
//! Protocol v1 has two encodings of one dialect (JSON text, MessagePack binary). A new wire
//! protocol (Pusher: `data` carried as a JSON *string*; Socket.IO: `42["event",{...}]`
//! inside Engine.IO) is a new `Format` variant with an arm in each of these three
//! functions; sessions, channels, rings, conflation and the encode-once fan-out stay as
//! they are.

use bytes::Bytes;

use super::encode::{
    event_json, event_msgpack, v1_reply, Authenticated, Conflated, ErrorMsg, EventParts, Format,
    Pong, Published, RpcResult, Shutdown, Subscribed, Unsubscribed, Welcome,
};
use super::op::{parse_json, parse_msgpack, Op, ParseFailure};
use super::pusher;
use super::CloseCode;

/// The Pusher arm of [`Format::reply`].
fn pusher_reply(r: &Reply<'_>) -> Bytes {
    match r {
        Reply::Welcome(m) => pusher::connection_established(m.conn_id, m.heartbeat_ms / 1000),
        Reply::Subscribed(m) if !m.resync => {
            pusher::subscription_succeeded(pusher::client_channel(m.channel))
        }
        Reply::Pong(_) => pusher::pong(),
        Reply::Error(m) => pusher::error(None, m.message),
        Reply::Shutdown(m) => pusher::error(Some(4200), m.message),
        Reply::Subscribed(_)
        | Reply::Unsubscribed(_)
        | Reply::Published(_)
        | Reply::Authenticated(_)
        | Reply::Conflated(_)
        | Reply::Rpc(_) => Bytes::new(),
    }
}

/// A message from the server to one connection, as the engine and the server mean it; the
/// dialect decides its shape on the wire.
#[derive(Debug)]
pub enum Reply<'a> {
    /// The connection is open.
    Welcome(Welcome<'a>),
    /// A subscribe was answered (or an unasked resync).
    Subscribed(Subscribed<'a>),
    /// An unsubscribe was answered.
    Unsubscribed(Unsubscribed<'a>),
    /// A publish was sequenced.
    Published(Published<'a>),
    /// A ping was answered.
    Pong(Pong<'a>),
    /// An op was refused.
    Error(ErrorMsg<'a>),
    /// An `auth` op was accepted.
    Authenticated(Authenticated<'a>),
    /// Quotes were replaced before reaching this subscriber.
    Conflated(Conflated<'a>),
    /// The server is going away.
    Shutdown(Shutdown<'a>),
    /// The backend answered a forwarded op (rpc hook).
    Rpc(RpcResult<'a>),
}

/// A set of dialects (which frames an event should carry from the start).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct FormatSet(u8);

impl FormatSet {
    /// No dialect.
    pub const EMPTY: FormatSet = FormatSet(0);

    /// This set with `f`.
    pub fn with(self, f: Format) -> FormatSet {
        FormatSet(self.0 | 1 << f.index())
    }

    /// Whether `f` is in the set.
    pub fn contains(self, f: Format) -> bool {
        self.0 & (1 << f.index()) != 0
    }
}

impl Format {
    /// How many dialects there are (the size of per-dialect tables).
    pub const COUNT: usize = 3;

    /// Every dialect, in index order.
    pub const ALL: [Format; Format::COUNT] = [Format::Json, Format::Msgpack, Format::Pusher];

    /// This dialect's index in per-dialect tables.
    #[inline]
    pub fn index(self) -> usize {
        match self {
            Format::Json => 0,
            Format::Msgpack => 1,
            Format::Pusher => 2,
        }
    }

    /// The complete frame of an event in this dialect. Never fails: data that slipped past
    /// ingress checks reaches a MessagePack subscriber with `data: nil`, never as JSON.
    pub fn encode_event(self, parts: EventParts<'_>) -> Bytes {
        match self {
            Format::Json => event_json(parts),
            Format::Pusher => pusher::event_frame(parts),
            Format::Msgpack => event_msgpack(parts).unwrap_or_else(|e| {
                tracing::error!(channel = parts.channel, seq = parts.seq, error = %e,
                    "event data cannot be sent as MessagePack; sending nil");
                // Invariant: `null` always transcodes, and writes into a Vec cannot fail.
                event_msgpack(EventParts {
                    data: b"null",
                    ..parts
                })
                .expect("a null payload encodes")
            }),
        }
    }

    /// The frame of `r` in this dialect (every message of v1 exists in both encodings).
    /// Empty where the dialect has no such message (Pusher acknowledges no unsubscribe or
    /// publish): callers skip empty frames.
    pub fn reply(self, r: &Reply<'_>) -> Bytes {
        if self == Format::Pusher {
            return pusher_reply(r);
        }
        match r {
            Reply::Welcome(m) => v1_reply(self, m),
            Reply::Subscribed(m) => v1_reply(self, m),
            Reply::Unsubscribed(m) => v1_reply(self, m),
            Reply::Published(m) => v1_reply(self, m),
            Reply::Pong(m) => v1_reply(self, m),
            Reply::Error(m) => v1_reply(self, m),
            Reply::Authenticated(m) => v1_reply(self, m),
            Reply::Conflated(m) => v1_reply(self, m),
            Reply::Shutdown(m) => v1_reply(self, m),
            Reply::Rpc(m) => v1_reply(self, m),
        }
    }

    /// The close code this dialect's clients should see for `code`. Pusher clients act on
    /// the range (pusher-js: 4000-4099 do not reconnect, 4100-4199 reconnect after a
    /// back-off, 4200-4299 reconnect now), so the server's reasons map to Pusher's codes.
    pub fn close_code(self, code: CloseCode) -> u16 {
        if self != Format::Pusher {
            return code.code();
        }
        match code {
            CloseCode::SlowConsumer | CloseCode::RateLimited => 4100,
            CloseCode::ServerRestart | CloseCode::GoingAway => 4200,
            CloseCode::HeartbeatTimeout => 4201,
            CloseCode::IdleTimeout => 4202,
            CloseCode::TooManyConnections => 4004,
            CloseCode::AuthFailed | CloseCode::TokenExpired | CloseCode::AuthTimeout => 4009,
            other => other.code(),
        }
    }

    /// Parses a client's data message (`binary`: a binary frame, else text). In v1 a
    /// connection of either encoding may send ops in either: JSON text or MessagePack
    /// binary.
    pub fn parse_op(self, binary: bool, payload: &[u8]) -> Result<Op, ParseFailure> {
        match (self, binary) {
            (Format::Json | Format::Msgpack, false) => parse_json(payload),
            (Format::Json | Format::Msgpack, true) => parse_msgpack(payload),
            // Pusher messages are not ops: the server's Pusher module reads them.
            (Format::Pusher, _) => parse_json(payload),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn indexes_match_the_table() {
        for (i, f) in Format::ALL.into_iter().enumerate() {
            assert_eq!(f.index(), i);
        }
        let s = FormatSet::EMPTY.with(Format::Msgpack);
        assert!(s.contains(Format::Msgpack) && !s.contains(Format::Json));
    }
}
