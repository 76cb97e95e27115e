//! Server message encoding (protocol layer): events are encoded once per wire format into a
//! complete WebSocket frame (`Bytes`) that every subscriber shares; replies and errors, which
//! belong to one connection, are small frames built from `serde` structs.

use std::borrow::Cow;

use bytes::Bytes;
use serde::Serialize;

use super::dialect::Reply;
use super::frame::{FrameBuf, OpCode};
use super::op::Id;

/// The wire format of a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Format {
    /// JSON text frames.
    Json,
    /// MessagePack binary frames.
    Msgpack,
    /// The Pusher Channels protocol 7 (JSON text; `data` carried as a string), for
    /// pusher-js and Laravel Echo on `/app/{key}` (see `protocol::pusher`).
    Pusher,
}

impl Format {
    /// The name used in the query string and the welcome frame.
    pub fn as_str(self) -> &'static str {
        match self {
            Format::Json => "json",
            Format::Msgpack => "msgpack",
            Format::Pusher => "pusher",
        }
    }

    /// Parses `json` / `msgpack` (the `?format=` of `/ws`; Pusher has its own endpoint).
    pub fn parse(s: &str) -> Option<Format> {
        match s {
            "json" => Some(Format::Json),
            "msgpack" => Some(Format::Msgpack),
            _ => None,
        }
    }
}

/// The fields of one event; `data` is canonical JSON.
#[derive(Debug, Clone, Copy)]
pub struct EventParts<'a> {
    /// Channel name (validated, needs no escaping).
    pub channel: &'a str,
    /// Event name (validated, needs no escaping).
    pub event: &'a str,
    /// Per-channel sequence number.
    pub seq: u64,
    /// Ingest time, ns since the Unix epoch.
    pub ts: u64,
    /// JSON payload.
    pub data: &'a [u8],
}

/// Encodes an event as a JSON text frame. Names are validated at ingress to need no
/// escaping, so this is a few `memcpy`s and two integer formats.
pub fn event_json(e: EventParts<'_>) -> Bytes {
    let mut fb = FrameBuf::with_capacity(80 + e.channel.len() + e.event.len() + e.data.len());
    let v = fb.payload_mut();
    let mut num = itoa::Buffer::new();
    v.extend_from_slice(br#"{"type":"event","channel":""#);
    v.extend_from_slice(e.channel.as_bytes());
    v.extend_from_slice(br#"","event":"#);
    // v1 names need no escaping; a Pusher publish may name an event `App\Events\X`.
    if e.event
        .bytes()
        .all(|b| b >= 0x20 && b != b'"' && b != b'\\')
    {
        v.push(b'"');
        v.extend_from_slice(e.event.as_bytes());
        v.push(b'"');
    } else {
        super::pusher::push_json_str(v, e.event.as_bytes());
    }
    v.extend_from_slice(br#","seq":"#);
    v.extend_from_slice(num.format(e.seq).as_bytes());
    v.extend_from_slice(br#","ts":"#);
    v.extend_from_slice(num.format(e.ts).as_bytes());
    v.extend_from_slice(br#","data":"#);
    v.extend_from_slice(e.data);
    v.push(b'}');
    fb.finish(OpCode::Text)
}

/// Encodes an event as a MessagePack binary frame, transcoding `data` from JSON.
/// Fails only if `data` is not valid JSON, which ingress already rules out.
pub fn event_msgpack(e: EventParts<'_>) -> Result<Bytes, EncodeError> {
    let mut fb = FrameBuf::with_capacity(64 + e.channel.len() + e.event.len() + e.data.len());
    let v = fb.payload_mut();
    rmp::encode::write_map_len(v, 6)?;
    for (k, s) in [
        ("type", "event"),
        ("channel", e.channel),
        ("event", e.event),
    ] {
        rmp::encode::write_str(v, k)?;
        rmp::encode::write_str(v, s)?;
    }
    rmp::encode::write_str(v, "seq")?;
    rmp::encode::write_uint(v, e.seq)?;
    rmp::encode::write_str(v, "ts")?;
    rmp::encode::write_uint(v, e.ts)?;
    rmp::encode::write_str(v, "data")?;
    let mut de = serde_json::Deserializer::from_slice(e.data);
    let mut ser = rmp_serde::Serializer::new(&mut *v).with_struct_map();
    serde_transcode::transcode(&mut de, &mut ser).map_err(|e| EncodeError(e.to_string()))?;
    Ok(fb.finish(OpCode::Binary))
}

/// Encoding failed (a bug or a payload that slipped past validation).
#[derive(Debug, thiserror::Error)]
#[error("encode failed: {0}")]
pub struct EncodeError(String);

impl From<rmp::encode::ValueWriteError> for EncodeError {
    fn from(e: rmp::encode::ValueWriteError) -> Self {
        EncodeError(e.to_string())
    }
}

/// Encodes a protocol v1 reply (welcome, ack, error, pong, ...) in `fmt`: the v1 arm of
/// [`Format::reply`](super::dialect), which is what callers use.
pub(crate) fn v1_reply<T: Serialize>(fmt: Format, msg: &T) -> Bytes {
    let mut fb = FrameBuf::with_capacity(128);
    match fmt {
        Format::Json | Format::Pusher => {
            // Serialising our own reply types into a Vec cannot fail: no maps with non-string
            // keys, no I/O errors.
            let _ = serde_json::to_writer(fb.payload_mut(), msg);
            fb.finish(OpCode::Text)
        }
        Format::Msgpack => {
            let _ =
                msg.serialize(&mut rmp_serde::Serializer::new(fb.payload_mut()).with_struct_map());
            fb.finish(OpCode::Binary)
        }
    }
}

/// `{"type":"welcome",...}`
#[derive(Debug, Serialize)]
pub struct Welcome<'a> {
    /// Always "welcome".
    #[serde(rename = "type")]
    pub kind: &'static str,
    /// Protocol version.
    pub protocol: u32,
    /// Connection id, unique per process.
    pub conn_id: &'a str,
    /// Authenticated user, if any.
    pub user: Option<&'a str>,
    /// Server ping interval.
    pub heartbeat_ms: u64,
    /// The connection's format.
    pub format: &'static str,
    /// Server name and version.
    pub server: &'static str,
}

/// `{"type":"subscribed",...}`
#[derive(Debug, Serialize)]
pub struct Subscribed<'a> {
    /// Always "subscribed".
    #[serde(rename = "type")]
    pub kind: &'static str,
    /// Echoed id.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<&'a Id>,
    /// The channel.
    pub channel: &'a str,
    /// "conflated" or "stream".
    #[serde(rename = "kind")]
    pub channel_kind: &'static str,
    /// Current sequence number.
    pub seq: u64,
    /// The channel's epoch: changes when its sequence restarts.
    pub epoch: &'a str,
    /// Whether `since` could be honoured (only when `since` was given).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub recovered: Option<bool>,
    /// Cluster mode: sent unasked because the channel lost events (`recovered: false`).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub resync: bool,
}

/// `{"type":"unsubscribed",...}`
#[derive(Debug, Serialize)]
pub struct Unsubscribed<'a> {
    /// Always "unsubscribed".
    #[serde(rename = "type")]
    pub kind: &'static str,
    /// Echoed id.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<&'a Id>,
    /// Channels that were removed.
    pub channels: Vec<&'a str>,
}

/// `{"type":"published",...}`
#[derive(Debug, Serialize)]
pub struct Published<'a> {
    /// Always "published".
    #[serde(rename = "type")]
    pub kind: &'static str,
    /// Echoed id.
    pub id: &'a Id,
    /// Single publish: its channel.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub channel: Option<&'a str>,
    /// Single publish: its seq.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub seq: Option<u64>,
    /// Batch publish: seqs in order.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub seqs: Option<&'a [u64]>,
}

/// `{"type":"pong",...}`
#[derive(Debug, Serialize)]
pub struct Pong<'a> {
    /// Always "pong".
    #[serde(rename = "type")]
    pub kind: &'static str,
    /// Echoed id.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<&'a Id>,
    /// Server time, ns since the Unix epoch.
    pub ts: u64,
}

/// `{"type":"error",...}`
#[derive(Debug, Serialize)]
pub struct ErrorMsg<'a> {
    /// Always "error".
    #[serde(rename = "type")]
    pub kind: &'static str,
    /// Echoed id.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<&'a Id>,
    /// Stable error code.
    pub code: &'a str,
    /// The channel the error is about, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub channel: Option<&'a str>,
    /// Human-readable detail.
    pub message: &'a str,
}

/// `{"type":"rpc","id":7,"op":"join_challenge","result":{...}}`: the application backend's
/// answer to a client op the server forwarded (the rpc hook).
#[derive(Debug, Serialize)]
pub struct RpcResult<'a> {
    /// Always "rpc".
    #[serde(rename = "type")]
    pub kind: &'static str,
    /// Echoed id.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<&'a Id>,
    /// The op the client sent.
    pub op: &'a str,
    /// The backend's `result` (null when it gave none).
    pub result: &'a serde_json::Value,
}

/// `{"type":"authenticated",...}`
#[derive(Debug, Serialize)]
pub struct Authenticated<'a> {
    /// Always "authenticated".
    #[serde(rename = "type")]
    pub kind: &'static str,
    /// Echoed id.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<&'a Id>,
    /// The token's user.
    pub user: Option<&'a str>,
    /// The token's expiry, seconds since the Unix epoch.
    pub exp: Option<u64>,
}

/// `{"type":"conflated",...}`
#[derive(Debug, Serialize)]
pub struct Conflated<'a> {
    /// Always "conflated".
    #[serde(rename = "type")]
    pub kind: &'static str,
    /// The channel.
    pub channel: &'a str,
    /// First replaced seq.
    pub from: u64,
    /// Last replaced seq.
    pub to: u64,
}

/// `{"type":"server_shutdown",...}`
#[derive(Debug, Serialize)]
pub struct Shutdown<'a> {
    /// Always "server_shutdown".
    #[serde(rename = "type")]
    pub kind: &'static str,
    /// Suggested reconnect delay.
    pub reconnect_ms: u64,
    /// Human-readable detail.
    pub message: &'a str,
}

/// Most bytes of client-supplied text an error repeats (in `channel` or `message`). Valid
/// channel names (128 bytes) are echoed whole; a 1 MB name is not, because the error frame
/// would overflow the sender's own outbound queue and get it closed as a slow consumer.
pub const MAX_ECHO_BYTES: usize = 200;

/// `s` cut to at most [`MAX_ECHO_BYTES`] on a character boundary, marked with `…` when cut.
pub fn echo(s: &str) -> Cow<'_, str> {
    if s.len() <= MAX_ECHO_BYTES {
        return Cow::Borrowed(s);
    }
    let mut end = MAX_ECHO_BYTES;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    Cow::Owned(format!("{}…", &s[..end]))
}

/// An error frame. `channel` and `message` may repeat client input, so both are cut with
/// [`echo`].
pub fn error(
    fmt: Format,
    id: Option<&Id>,
    code: &str,
    channel: Option<&str>,
    message: &str,
) -> Bytes {
    fmt.reply(&Reply::Error(ErrorMsg {
        kind: "error",
        id,
        code,
        channel: channel.map(echo).as_deref(),
        message: &echo(message),
    }))
}

/// Encodes the `published` ack for a finished publish.
pub fn published_frame(fmt: Format, id: &Id, single: Option<&str>, seqs: &[u64]) -> Bytes {
    let msg = match single {
        Some(ch) => Published {
            kind: "published",
            id,
            channel: Some(ch),
            seq: seqs.first().copied(),
            seqs: None,
        },
        None => Published {
            kind: "published",
            id,
            channel: None,
            seq: None,
            seqs: Some(seqs),
        },
    };
    fmt.reply(&Reply::Published(msg))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts() -> EventParts<'static> {
        EventParts {
            channel: "quotes.AAPL",
            event: "quote",
            seq: 1052,
            ts: 7,
            data: br#"{"bid":1.5,"a":[1,"x"]}"#,
        }
    }

    #[test]
    fn json_event_is_valid_json_in_one_frame() {
        let f = event_json(parts());
        assert_eq!(f[0], 0x81);
        let payload = &f[2..];
        assert_eq!(f[1] as usize, payload.len());
        let v: serde_json::Value = serde_json::from_slice(payload).unwrap();
        assert_eq!(v["type"], "event");
        assert_eq!(v["seq"], 1052);
        assert_eq!(v["data"]["a"][1], "x");
    }

    #[test]
    fn msgpack_event_round_trips() {
        let f = event_msgpack(parts()).unwrap();
        assert_eq!(f[0], 0x82);
        let payload = &f[2..];
        let v: serde_json::Value = rmp_serde::from_slice(payload).unwrap();
        assert_eq!(v["channel"], "quotes.AAPL");
        assert_eq!(v["ts"], 7);
        assert_eq!(v["data"]["bid"], 1.5);
    }

    /// The bug: an error repeating a 1 MB channel name overflowed the sender's queue.
    #[test]
    fn errors_echo_at_most_max_echo_bytes_of_client_input() {
        assert_eq!(echo("quotes.AAPL"), "quotes.AAPL");
        let exact = "a".repeat(MAX_ECHO_BYTES);
        assert_eq!(echo(&exact), exact.as_str());
        // Byte MAX_ECHO_BYTES falls inside a two-byte character: the cut moves back one.
        let odd = format!("a{}", "é".repeat(MAX_ECHO_BYTES));
        let cut = echo(&odd);
        assert!(cut.ends_with("é…"), "{cut}");
        assert_eq!(cut.len(), MAX_ECHO_BYTES - 1 + '…'.len_utf8());
        let huge = "x".repeat(1 << 20);
        for fmt in [Format::Json, Format::Msgpack] {
            let f = error(
                fmt,
                None,
                "bad_channel",
                Some(&huge),
                &format!("bad `{huge}`"),
            );
            assert!(f.len() < 3 * MAX_ECHO_BYTES, "{}", f.len());
        }
        let j = error(Format::Json, None, "bad_channel", Some(&huge), "m");
        let v: serde_json::Value = serde_json::from_slice(&j[4..]).unwrap();
        let ch = v["channel"].as_str().unwrap();
        assert_eq!(ch, format!("{}…", &huge[..MAX_ECHO_BYTES]));
    }

    #[test]
    fn replies_in_both_formats() {
        let id = Id::S("q".into());
        let j = error(Format::Json, Some(&id), "bad_request", None, "nope");
        let v: serde_json::Value = serde_json::from_slice(&j[2..]).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"type":"error","id":"q","code":"bad_request","message":"nope"})
        );
        let m = error(Format::Msgpack, Some(&id), "bad_request", Some("c"), "nope");
        let v: serde_json::Value = rmp_serde::from_slice(&m[2..]).unwrap();
        assert_eq!(v["channel"], "c");
        assert_eq!(v["id"], "q");
    }
}
