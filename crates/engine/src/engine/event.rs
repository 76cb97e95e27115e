//! A published event (engine): assigned its sequence number and encoded once on its
//! channel's home shard, then shared by reference count with rings, other shards and every
//! subscriber's outbound queue.

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;

use crate::protocol::encode::{event_json, event_msgpack, EventParts};
use crate::protocol::Format;

/// One event with its ready-to-write frames.
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
    /// Complete JSON text frame.
    pub json: Bytes,
    /// Complete MessagePack binary frame, when a msgpack subscriber existed at publish time.
    pub msgpack: Option<Bytes>,
}

impl Event {
    /// Builds an event ingested at `ingest`, encoding JSON always and MessagePack when
    /// `with_msgpack`.
    pub fn new(
        channel: Arc<str>,
        event: Box<str>,
        seq: u64,
        ts: u64,
        ingest: Instant,
        data: Bytes,
        with_msgpack: bool,
    ) -> Self {
        let parts = EventParts {
            channel: &channel,
            event: &event,
            seq,
            ts,
            data: &data,
        };
        let json = event_json(parts);
        let msgpack = with_msgpack.then(|| msgpack_frame(parts));
        Event {
            channel: channel.clone(),
            event,
            seq,
            ts,
            ingest,
            data,
            json,
            msgpack,
        }
    }

    /// The frame for `fmt`. A msgpack frame missing because no msgpack subscriber existed at
    /// publish time (replay to a newer one) is encoded now: a per-subscriber encode, but only
    /// on the replay path.
    pub fn frame(&self, fmt: Format) -> Bytes {
        match fmt {
            Format::Json => self.json.clone(),
            Format::Msgpack => match &self.msgpack {
                Some(b) => b.clone(),
                None => msgpack_frame(EventParts {
                    channel: &self.channel,
                    event: &self.event,
                    seq: self.seq,
                    ts: self.ts,
                    data: &self.data,
                }),
            },
        }
    }
}

/// The event's MessagePack frame. Ingress refuses `data` that MessagePack cannot carry
/// (`protocol::compat::check_json_data`), and cluster nodes only relay data that passed it,
/// so transcoding does not fail. Should it ever (a bug, or a foreign writer to Redis), a
/// msgpack subscriber still gets a MessagePack frame, with `data: nil`, never a JSON one.
fn msgpack_frame(parts: EventParts<'_>) -> Bytes {
    event_msgpack(parts).unwrap_or_else(|e| {
        tracing::error!(channel = parts.channel, seq = parts.seq, error = %e,
            "event data cannot be sent as MessagePack; sending nil");
        // Invariant: `null` always transcodes, and writes into a Vec cannot fail.
        event_msgpack(EventParts {
            data: b"null",
            ..parts
        })
        .expect("a null payload encodes")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Data that skipped ingress checks still reaches a msgpack subscriber as MessagePack.
    #[test]
    fn msgpack_frame_is_never_json() {
        for with_msgpack in [true, false] {
            let ev = Event::new(
                "c".into(),
                "e".into(),
                1,
                2,
                std::time::Instant::now(),
                Bytes::from_static(br#"{"x":1e400}"#),
                with_msgpack,
            );
            let f = ev.frame(Format::Msgpack);
            assert_eq!(f[0], 0x82, "a binary frame");
            let v: serde_json::Value = rmp_serde::from_slice(&f[2..]).unwrap();
            assert_eq!(v["data"], serde_json::Value::Null);
            assert_eq!(v["seq"], 1);
        }
    }
}
