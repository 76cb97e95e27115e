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
        let msgpack = if with_msgpack {
            event_msgpack(parts).ok()
        } else {
            None
        };
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
                None => {
                    let parts = EventParts {
                        channel: &self.channel,
                        event: &self.event,
                        seq: self.seq,
                        ts: self.ts,
                        data: &self.data,
                    };
                    // `data` was validated JSON at ingress, so transcoding cannot fail; if it
                    // somehow did, the JSON frame is the least-bad answer.
                    event_msgpack(parts).unwrap_or_else(|_| self.json.clone())
                }
            },
        }
    }
}

/// Nanoseconds since the Unix epoch.
pub fn now_ns() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}
