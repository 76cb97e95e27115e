//! A published event (engine): assigned its sequence number and encoded once on its
//! channel's home shard, then shared by reference count with rings, other shards and every
//! subscriber's outbound queue.

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;

use std::sync::OnceLock;

use crate::protocol::dialect::FormatSet;
use crate::protocol::encode::EventParts;
use crate::protocol::Format;

/// One event with its ready-to-write frames, one per dialect, each encoded at most once.
#[derive(Debug)]
pub struct Event {
    /// Channel name.
    pub channel: Arc<str>,
    /// Event name.
    pub event: Box<str>,
    /// Per-channel sequence number.
    pub seq: u64,
    /// Ingest time, ns since the Unix epoch.
    pub ts: u64,
    /// Ingest instant, for the ingest → socket-write latency histogram.
    pub ingest: Instant,
    /// Canonical JSON payload.
    pub data: Bytes,
    /// A connection (session id) not to deliver to, or 0: the sender of a Pusher client
    /// event, or the `socket_id` of a Pusher API publish.
    pub exclude: u64,
    /// The complete frame per dialect (`Format::index`): encoded on the home shard for the
    /// dialects subscribed at publish time, otherwise by the first shard or replay that
    /// needs it, and shared from then on.
    frames: [OnceLock<Bytes>; Format::COUNT],
}

impl Event {
    /// Builds an event ingested at `ingest`, encoding its frame for JSON and for every
    /// dialect in `eager` (those with subscribers now).
    pub fn new(
        channel: Arc<str>,
        event: Box<str>,
        seq: u64,
        ts: u64,
        ingest: Instant,
        data: Bytes,
        eager: FormatSet,
    ) -> Self {
        let ev = Event {
            channel,
            event,
            seq,
            ts,
            ingest,
            data,
            exclude: 0,
            frames: Default::default(),
        };
        for f in Format::ALL {
            if f == Format::Json || eager.contains(f) {
                ev.frame(f);
            }
        }
        ev
    }

    fn parts(&self) -> EventParts<'_> {
        EventParts {
            channel: &self.channel,
            event: &self.event,
            seq: self.seq,
            ts: self.ts,
            data: &self.data,
        }
    }

    /// The frame for dialect `fmt`, encoded now if no one needed it before (a replay to a
    /// subscriber of a dialect nobody had at publish time): once per event and dialect.
    #[inline]
    pub fn frame(&self, fmt: Format) -> Bytes {
        self.frames[fmt.index()]
            .get_or_init(|| fmt.encode_event(self.parts()))
            .clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Data that skipped ingress checks still reaches a msgpack subscriber as MessagePack.
    #[test]
    fn msgpack_frame_is_never_json() {
        for eager in [FormatSet::EMPTY.with(Format::Msgpack), FormatSet::EMPTY] {
            let ev = Event::new(
                "c".into(),
                "e".into(),
                1,
                2,
                std::time::Instant::now(),
                Bytes::from_static(br#"{"x":1e400}"#),
                eager,
            );
            let f = ev.frame(Format::Msgpack);
            assert_eq!(f[0], 0x82, "a binary frame");
            let v: serde_json::Value = rmp_serde::from_slice(&f[2..]).unwrap();
            assert_eq!(v["data"], serde_json::Value::Null);
            assert_eq!(v["seq"], 1);
        }
    }

    /// A dialect's frame is encoded once and shared: the same bytes every time.
    #[test]
    fn each_dialect_is_encoded_once() {
        let ev = Event::new(
            "c".into(),
            "e".into(),
            1,
            2,
            std::time::Instant::now(),
            Bytes::from_static(br#"{"x":1}"#),
            FormatSet::EMPTY,
        );
        for f in Format::ALL {
            let (a, b) = (ev.frame(f), ev.frame(f));
            assert_eq!(a.as_ptr(), b.as_ptr(), "{f:?}");
        }
    }
}
