//! Client op parsing (protocol layer): one WebSocket message → one [`Op`], for JSON text
//! and MessagePack binary messages alike.
//!
//! JSON ops are parsed with `serde_json` borrowing from the frame, and `data` is captured as
//! a `RawValue`: the publisher's bytes pass through to the encoded event unchanged, with no
//! tree built and no re-serialisation. (simd-json's serde layer cannot hand out a raw slice
//! of a sub-document; parsing to its value tree and re-serialising `data` measured 3.9x
//! slower per event on a 100-event batch: the `parse` group in `benches/core.rs`.) MessagePack ops
//! are decoded with `rmp-serde`, and their `data` is transcoded once into JSON, the
//! server's canonical form for event payloads. What either format may carry is checked in
//! [`super::compat`]: a MessagePack op as a whole before it is decoded, JSON `data` before
//! it is accepted.

use std::borrow::Cow;
use std::sync::Arc;

use bytes::Bytes;
use serde::de::{Deserializer, Error as _, IgnoredAny, MapAccess, Visitor};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use super::compat::{check_json_data, check_msgpack, DataError};
use super::names::{check_channel, check_event};

pub use super::compat::{MAX_DATA_DEPTH, MAX_MSGPACK_DEPTH};

/// Most channels in one subscribe or unsubscribe.
pub const MAX_CHANNELS_PER_OP: usize = 256;
/// Most events in one publish batch.
pub const MAX_EVENTS_PER_PUBLISH: usize = 1024;
/// Longest accepted string `id`.
pub const MAX_ID_LEN: usize = 64;

/// A request id, echoed in replies exactly as the client sent it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Id {
    /// A non-negative integer id.
    U(u64),
    /// A negative integer id.
    I(i64),
    /// A string id (at most 64 bytes).
    S(String),
}

/// A `since` position: a bare sequence number, or `{"seq":N,"epoch":"..."}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Since {
    /// Last sequence number the client saw.
    pub seq: u64,
    /// The channel epoch the client saw it in, if it knows it.
    pub epoch: Option<String>,
}

/// One event to publish, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PubEvent {
    /// Target channel (name checked).
    pub channel: String,
    /// Event name (checked).
    pub event: String,
    /// The payload as compact-or-verbatim JSON bytes.
    pub data: Bytes,
    /// The publish's idempotency key (every event of one publish shares it): in cluster mode
    /// Redis remembers it with the publish's seqs for `cluster.idempotency_window_secs`, and
    /// a publish with a key it remembers is not performed again but answered with the
    /// original seqs.
    pub key: Option<Arc<str>>,
    /// A connection (session id) the event must not reach, or 0 for none (Pusher's
    /// `socket_id` exclusion and client events). Single node only: cluster mode does not
    /// carry it through Redis.
    pub exclude: u64,
}

/// Longest accepted idempotency key.
pub const MAX_KEY_LEN: usize = 128;

/// Checks an idempotency key: 1 to [`MAX_KEY_LEN`] printable ASCII characters, no spaces.
pub fn check_key(key: &str) -> Result<Arc<str>, OpError> {
    if key.is_empty() || key.len() > MAX_KEY_LEN || !key.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(OpError::BadRequest(format!(
            "`idempotency_key` must be 1 to {MAX_KEY_LEN} printable ASCII characters without spaces"
        )));
    }
    Ok(Arc::from(key))
}

/// Gives every event of a publish its idempotency key.
pub fn set_key(events: &mut [PubEvent], key: &Arc<str>) {
    for e in events {
        e.key = Some(key.clone());
    }
}

/// A parsed client op.
#[derive(Debug, Clone, PartialEq)]
pub enum Op {
    /// Subscribe to channels.
    Subscribe {
        /// Echoed id.
        id: Option<Id>,
        /// Channel names as sent (each is checked individually by the server, so that one
        /// bad name does not sink the others).
        channels: Vec<String>,
        /// Deliver history after the ack.
        snapshot: bool,
        /// Resume positions per channel.
        since: Vec<(String, Since)>,
        /// Update rate cap for conflated channels.
        max_hz: Option<f64>,
    },
    /// Unsubscribe from channels.
    Unsubscribe {
        /// Echoed id.
        id: Option<Id>,
        /// Channel names.
        channels: Vec<String>,
    },
    /// Publish one event (`single`) or a batch.
    Publish {
        /// Echoed id; without one no ack is sent.
        id: Option<Id>,
        /// The events, in order.
        events: Vec<PubEvent>,
        /// Sent as a single event (ack carries `seq`) rather than a batch (`seqs`).
        single: bool,
    },
    /// Round-trip check.
    Ping {
        /// Echoed id.
        id: Option<Id>,
    },
    /// Present or refresh a token.
    Auth {
        /// Echoed id.
        id: Option<Id>,
        /// The token.
        token: String,
    },
    /// Authenticate with credentials the application's backend checks (the connect hook):
    /// `{"op":"auth","data":{...}}`, e.g. seeds/002's `{"sessionID","userId"}`.
    AuthData {
        /// Echoed id.
        id: Option<Id>,
        /// The credentials, as JSON bytes (forwarded to the backend as they are).
        data: Bytes,
    },
}

/// Why a message is not a valid op. `code()` is the stable error code for the client.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OpError {
    /// Not JSON / MessagePack at all, or not an object, or MessagePack outside the subset
    /// JSON can carry (`bin`, ext types, non-string map keys, ...).
    #[error("{0}")]
    BadFrame(String),
    /// Well-formed but a field is missing, mistyped or out of range.
    #[error("{0}")]
    BadRequest(String),
    /// The `op` is not known.
    #[error("unknown op `{0}`")]
    UnknownOp(String),
    /// A publish named a bad channel.
    #[error("{0}")]
    BadChannel(String),
    /// A publish named a bad event.
    #[error("{0}")]
    BadEvent(String),
    /// A publish's `data` is valid JSON that MessagePack cannot carry (a number beyond the
    /// `f64` range, an unpaired surrogate escape); the publisher must change the payload.
    #[error("{0}")]
    BadData(String),
}

impl OpError {
    /// The stable wire code.
    pub fn code(&self) -> &'static str {
        match self {
            OpError::BadFrame(_) => "bad_frame",
            OpError::BadRequest(_) => "bad_request",
            OpError::UnknownOp(_) => "unknown_op",
            OpError::BadChannel(_) => "bad_channel",
            OpError::BadEvent(_) => "bad_event",
            OpError::BadData(_) => "bad_data",
        }
    }
}

/// The op's `id`, when it could be recovered from a message that failed to parse.
pub type ParseFailure = (Option<Id>, OpError);

/// `data` in a MessagePack op, transcoded into JSON bytes while it is decoded.
struct JsonData(Vec<u8>);

impl<'de> Deserialize<'de> for JsonData {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let mut out = Vec::with_capacity(64);
        let mut ser = serde_json::Serializer::new(&mut out);
        serde_transcode::transcode(d, &mut ser).map_err(D::Error::custom)?;
        Ok(JsonData(out))
    }
}

trait DataBytes {
    fn into_bytes(self) -> Result<Bytes, OpError>;
}
impl DataBytes for &RawValue {
    fn into_bytes(self) -> Result<Bytes, OpError> {
        let raw = self.get().as_bytes();
        check_json_data(raw).map_err(data_error)?;
        Ok(Bytes::copy_from_slice(raw))
    }
}
impl DataBytes for JsonData {
    fn into_bytes(self) -> Result<Bytes, OpError> {
        // Written by serde_json from checked MessagePack: finite floats, valid strings. The
        // same check keeps the guarantee in one place.
        check_json_data(&self.0).map_err(data_error)?;
        Ok(Bytes::from(self.0))
    }
}

fn data_error(e: DataError) -> OpError {
    match e {
        DataError::TooDeep => OpError::BadRequest(e.to_string()),
        DataError::NotConvertible(_) => OpError::BadData(e.to_string()),
    }
}

#[derive(Deserialize)]
struct RawPub<'a, D> {
    #[serde(borrow)]
    channel: Option<Cow<'a, str>>,
    #[serde(borrow)]
    event: Option<Cow<'a, str>>,
    data: Option<D>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum RawSince {
    Seq(u64),
    Full { seq: u64, epoch: Option<String> },
}

#[derive(Deserialize)]
struct RawOp<'a, D> {
    #[serde(borrow)]
    op: Option<Cow<'a, str>>,
    id: Option<Id>,
    channels: Option<Vec<String>>,
    snapshot: Option<bool>,
    since: Option<std::collections::BTreeMap<String, RawSince>>,
    max_hz: Option<f64>,
    #[serde(borrow)]
    channel: Option<Cow<'a, str>>,
    #[serde(borrow)]
    event: Option<Cow<'a, str>>,
    data: Option<D>,
    events: Option<Vec<RawPub<'a, D>>>,
    token: Option<String>,
    #[serde(borrow)]
    idempotency_key: Option<Cow<'a, str>>,
}

/// Pulls just `id` out of a message that failed to parse, so the error can echo it.
struct IdOnly(Option<Id>);
impl<'de> Deserialize<'de> for IdOnly {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = IdOnly;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("an object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut m: A) -> Result<IdOnly, A::Error> {
                let mut id = None;
                while let Some(k) = m.next_key::<Cow<'de, str>>()? {
                    if k == "id" {
                        id = m.next_value::<Id>().ok();
                    } else {
                        m.next_value::<IgnoredAny>()?;
                    }
                }
                Ok(IdOnly(id))
            }
        }
        d.deserialize_map(V)
    }
}

/// Parses a JSON text message.
pub fn parse_json(msg: &[u8]) -> Result<Op, ParseFailure> {
    let first = msg.iter().find(|b| !b.is_ascii_whitespace());
    if first != Some(&b'{') {
        return Err((None, OpError::BadFrame("expected a JSON object".into())));
    }
    match serde_json::from_slice::<RawOp<'_, &RawValue>>(msg) {
        Ok(raw) => build(raw),
        Err(e) => {
            let id = serde_json::from_slice::<IdOnly>(msg).ok().and_then(|i| i.0);
            let err = if e.is_data() {
                OpError::BadRequest(e.to_string())
            } else {
                OpError::BadFrame(format!("invalid JSON: {e}"))
            };
            Err((id, err))
        }
    }
}

/// Parses a MessagePack binary message.
pub fn parse_msgpack(msg: &[u8]) -> Result<Op, ParseFailure> {
    let is_map = matches!(msg.first(), Some(0x80..=0x8f | 0xde | 0xdf));
    if !is_map {
        return Err((None, OpError::BadFrame("expected a MessagePack map".into())));
    }
    if let Err(why) = check_msgpack(msg) {
        return Err((msgpack_id(msg), OpError::BadFrame(why.into())));
    }
    let mut de = rmp_serde::Deserializer::from_read_ref(msg);
    de.set_max_depth(MAX_MSGPACK_DEPTH);
    match RawOp::<'_, JsonData>::deserialize(&mut de) {
        Ok(raw) => build(raw),
        Err(e) => {
            let id = msgpack_id(msg);
            let err = match e {
                rmp_serde::decode::Error::InvalidMarkerRead(_)
                | rmp_serde::decode::Error::InvalidDataRead(_)
                | rmp_serde::decode::Error::LengthMismatch(_)
                | rmp_serde::decode::Error::DepthLimitExceeded => {
                    OpError::BadFrame(format!("invalid MessagePack: {e}"))
                }
                other => OpError::BadRequest(other.to_string()),
            };
            Err((id, err))
        }
    }
}

/// The `id` of a MessagePack op that failed to parse, if it can be read.
fn msgpack_id(msg: &[u8]) -> Option<Id> {
    let mut de = rmp_serde::Deserializer::from_read_ref(msg);
    de.set_max_depth(MAX_MSGPACK_DEPTH);
    IdOnly::deserialize(&mut de).ok().and_then(|i| i.0)
}

fn build<D: DataBytes>(raw: RawOp<'_, D>) -> Result<Op, ParseFailure> {
    let id = raw.id;
    if let Some(Id::S(s)) = &id {
        if s.len() > MAX_ID_LEN {
            return Err((
                None,
                OpError::BadRequest(format!("id longer than {MAX_ID_LEN} bytes")),
            ));
        }
    }
    let bad = |m: String| Err((id.clone(), OpError::BadRequest(m)));
    let Some(op) = raw.op else {
        return bad("missing field `op`".into());
    };
    match &*op {
        "subscribe" | "unsubscribe" => {
            let Some(channels) = raw.channels else {
                return bad("missing field `channels`".into());
            };
            if channels.is_empty() || channels.len() > MAX_CHANNELS_PER_OP {
                return bad(format!(
                    "`channels` must hold 1 to {MAX_CHANNELS_PER_OP} names"
                ));
            }
            if op == "unsubscribe" {
                return Ok(Op::Unsubscribe { id, channels });
            }
            if let Some(hz) = raw.max_hz {
                if !(hz.is_finite() && hz > 0.0 && hz <= 1000.0) {
                    return bad("`max_hz` must be a number in (0, 1000]".into());
                }
            }
            let since = raw
                .since
                .unwrap_or_default()
                .into_iter()
                .map(|(c, s)| {
                    let s = match s {
                        RawSince::Seq(seq) => Since { seq, epoch: None },
                        RawSince::Full { seq, epoch } => Since { seq, epoch },
                    };
                    (c, s)
                })
                .collect();
            Ok(Op::Subscribe {
                id,
                channels,
                snapshot: raw.snapshot.unwrap_or(false),
                since,
                max_hz: raw.max_hz,
            })
        }
        "publish" => {
            let (events, single) = match (raw.events, raw.channel) {
                (Some(_), Some(_)) => {
                    return bad("give either `channel` or `events`, not both".into())
                }
                (Some(list), None) => {
                    if list.is_empty() || list.len() > MAX_EVENTS_PER_PUBLISH {
                        return bad(format!(
                            "`events` must hold 1 to {MAX_EVENTS_PER_PUBLISH} events"
                        ));
                    }
                    let mut out = Vec::with_capacity(list.len());
                    for (i, p) in list.into_iter().enumerate() {
                        out.push(
                            pub_event(p.channel, p.event, p.data)
                                .map_err(|e| (id.clone(), at(i, e)))?,
                        );
                    }
                    (out, false)
                }
                (None, channel) => {
                    let ev =
                        pub_event(channel, raw.event, raw.data).map_err(|e| (id.clone(), e))?;
                    (vec![ev], true)
                }
            };
            let mut events = events;
            if let Some(k) = raw.idempotency_key {
                let key = check_key(&k).map_err(|e| (id.clone(), e))?;
                set_key(&mut events, &key);
            }
            Ok(Op::Publish { id, events, single })
        }
        "ping" => Ok(Op::Ping { id }),
        "auth" => match (raw.token, raw.data) {
            (Some(token), None) => Ok(Op::Auth { id, token }),
            (None, Some(data)) => match data.into_bytes() {
                Ok(data) => Ok(Op::AuthData { id, data }),
                Err(e) => Err((id, e)),
            },
            (Some(_), Some(_)) => bad("give either `token` or `data`, not both".into()),
            (None, None) => bad("missing field `token`".into()),
        },
        other => {
            let mut name: String = other.chars().take(32).collect();
            if name.len() < other.len() {
                name.push('…');
            }
            Err((id, OpError::UnknownOp(name)))
        }
    }
}

fn at(i: usize, e: OpError) -> OpError {
    match e {
        OpError::BadRequest(m) => OpError::BadRequest(format!("events[{i}]: {m}")),
        OpError::BadChannel(m) => OpError::BadChannel(format!("events[{i}]: {m}")),
        OpError::BadEvent(m) => OpError::BadEvent(format!("events[{i}]: {m}")),
        OpError::BadData(m) => OpError::BadData(format!("events[{i}]: {m}")),
        other => other,
    }
}

fn pub_event<D: DataBytes>(
    channel: Option<Cow<'_, str>>,
    event: Option<Cow<'_, str>>,
    data: Option<D>,
) -> Result<PubEvent, OpError> {
    let channel = channel.ok_or_else(|| OpError::BadRequest("missing field `channel`".into()))?;
    let event = event.ok_or_else(|| OpError::BadRequest("missing field `event`".into()))?;
    let data = data.ok_or_else(|| OpError::BadRequest("missing field `data`".into()))?;
    check_channel(&channel).map_err(|e| OpError::BadChannel(format!("channel: {e}")))?;
    check_event(&event).map_err(|e| OpError::BadEvent(format!("event: {e}")))?;
    Ok(PubEvent {
        channel: channel.into_owned(),
        event: event.into_owned(),
        data: data.into_bytes()?,
        key: None,
        exclude: 0,
    })
}

/// Parses the body of `POST /api/publish`: one event object or `{"events":[...]}`.
pub fn parse_http_publish(body: &[u8]) -> Result<(Vec<PubEvent>, bool), OpError> {
    let first = body.iter().find(|b| !b.is_ascii_whitespace());
    if first != Some(&b'{') {
        return Err(OpError::BadFrame("expected a JSON object".into()));
    }
    #[derive(Deserialize)]
    struct Body<'a> {
        #[serde(borrow)]
        channel: Option<Cow<'a, str>>,
        #[serde(borrow)]
        event: Option<Cow<'a, str>>,
        #[serde(borrow)]
        data: Option<&'a RawValue>,
        #[serde(borrow)]
        events: Option<Vec<RawPub<'a, &'a RawValue>>>,
        #[serde(borrow)]
        idempotency_key: Option<Cow<'a, str>>,
    }
    let b: Body<'_> = serde_json::from_slice(body).map_err(|e| {
        if e.is_data() {
            OpError::BadRequest(e.to_string())
        } else {
            OpError::BadFrame(format!("invalid JSON: {e}"))
        }
    })?;
    let (mut events, single) = match (b.events, b.channel) {
        (Some(_), Some(_)) => {
            return Err(OpError::BadRequest(
                "give either `channel` or `events`, not both".into(),
            ))
        }
        (Some(list), None) => {
            if list.is_empty() || list.len() > MAX_EVENTS_PER_PUBLISH {
                return Err(OpError::BadRequest(format!(
                    "`events` must hold 1 to {MAX_EVENTS_PER_PUBLISH} events"
                )));
            }
            let mut out = Vec::with_capacity(list.len());
            for (i, p) in list.into_iter().enumerate() {
                out.push(pub_event(p.channel, p.event, p.data).map_err(|e| at(i, e))?);
            }
            (out, false)
        }
        (None, channel) => (vec![pub_event(channel, b.event, b.data)?], true),
    };
    if let Some(k) = b.idempotency_key {
        set_key(&mut events, &check_key(&k)?);
    }
    Ok((events, single))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mp<T: Serialize>(v: &T) -> Vec<u8> {
        rmp_serde::to_vec_named(v).unwrap()
    }

    #[test]
    fn idempotency_key_on_every_event_of_a_publish() {
        let op = parse_json(
            br#"{"op":"publish","id":1,"events":[{"channel":"a","event":"e","data":1},
                {"channel":"b","event":"e","data":2}],"idempotency_key":"k-1"}"#,
        )
        .unwrap();
        let Op::Publish { events, .. } = op else {
            panic!("{op:?}")
        };
        assert!(events.iter().all(|e| e.key.as_deref() == Some("k-1")));
        let (evs, _) =
            parse_http_publish(br#"{"channel":"a","event":"e","data":1,"idempotency_key":"x"}"#)
                .unwrap();
        assert_eq!(evs[0].key.as_deref(), Some("x"));
        let (evs, _) = parse_http_publish(br#"{"channel":"a","event":"e","data":1}"#).unwrap();
        assert_eq!(evs[0].key, None);
        let long = "k".repeat(MAX_KEY_LEN + 1);
        for bad in ["", "a b", "é", long.as_str()] {
            let msg = serde_json::json!({"op":"publish","id":2,"channel":"a","event":"e","data":1,
                "idempotency_key": bad});
            let err = parse_json(msg.to_string().as_bytes()).unwrap_err();
            assert_eq!(err.1.code(), "bad_request", "{bad:?}");
        }
        assert!(check_key(&"k".repeat(MAX_KEY_LEN)).is_ok());
    }

    #[test]
    fn auth_takes_a_token_or_backend_data() {
        assert!(matches!(
            parse_json(br#"{"op":"auth","id":1,"data":{"sessionID":"s","userId":"u-1"}}"#),
            Ok(Op::AuthData { data, .. }) if &data[..] == br#"{"sessionID":"s","userId":"u-1"}"#
        ));
        assert!(matches!(
            parse_json(br#"{"op":"auth","token":"t"}"#),
            Ok(Op::Auth { .. })
        ));
        let both = parse_json(br#"{"op":"auth","token":"t","data":{}}"#).unwrap_err();
        assert_eq!(both.1.code(), "bad_request");
    }

    #[test]
    fn parses_subscribe_with_since_forms() {
        let op = parse_json(
            br#"{"op":"subscribe","id":1,"channels":["quotes.AAPL","trades.AAPL"],"snapshot":true,
                "since":{"trades.AAPL":41,"x":{"seq":3,"epoch":"ab"}},"max_hz":5}"#,
        )
        .unwrap();
        let Op::Subscribe {
            id,
            channels,
            snapshot,
            since,
            max_hz,
        } = op
        else {
            panic!()
        };
        assert_eq!(id, Some(Id::U(1)));
        assert_eq!(channels.len(), 2);
        assert!(snapshot);
        assert_eq!(max_hz, Some(5.0));
        assert_eq!(
            since[0],
            (
                "trades.AAPL".into(),
                Since {
                    seq: 41,
                    epoch: None
                }
            )
        );
        assert_eq!(
            since[1],
            (
                "x".into(),
                Since {
                    seq: 3,
                    epoch: Some("ab".into())
                }
            )
        );
    }

    #[test]
    fn publish_keeps_raw_data_bytes() {
        let op = parse_json(
            br#"{"op":"publish","channel":"t.A","event":"trade","data":{"px": 1.5, "q":[1,2]}}"#,
        )
        .unwrap();
        let Op::Publish { events, single, .. } = op else {
            panic!()
        };
        assert!(single);
        assert_eq!(&events[0].data[..], br#"{"px": 1.5, "q":[1,2]}"#);
    }

    #[test]
    fn msgpack_publish_batch_transcodes_data() {
        #[derive(Serialize)]
        struct E<'a> {
            channel: &'a str,
            event: &'a str,
            data: serde_json::Value,
        }
        #[derive(Serialize)]
        struct P<'a> {
            op: &'a str,
            id: &'a str,
            events: Vec<E<'a>>,
        }
        let msg = mp(&P {
            op: "publish",
            id: "x1",
            events: vec![E {
                channel: "q.A",
                event: "quote",
                data: serde_json::json!({"bid": 1.25, "n": -3}),
            }],
        });
        let Op::Publish { id, events, single } = parse_msgpack(&msg).unwrap() else {
            panic!()
        };
        assert_eq!(id, Some(Id::S("x1".into())));
        assert!(!single);
        assert_eq!(&events[0].data[..], br#"{"bid":1.25,"n":-3}"#);
    }

    #[test]
    fn errors_have_stable_codes_and_keep_id() {
        let cases: Vec<(&[u8], &str, Option<Id>)> = vec![
            (b"not json", "bad_frame", None),
            (b"[1,2]", "bad_frame", None),
            (br#"{"op":"subscribe""#, "bad_frame", None),
            (br#"{"id":7}"#, "bad_request", Some(Id::U(7))),
            (
                br#"{"op":"subscribe","id":"a"}"#,
                "bad_request",
                Some(Id::S("a".into())),
            ),
            (
                br#"{"op":"subscribe","id":2,"channels":"x"}"#,
                "bad_request",
                Some(Id::U(2)),
            ),
            (br#"{"op":"subscribe","channels":[]}"#, "bad_request", None),
            (
                br#"{"op":"subscribe","channels":["a"],"max_hz":-1}"#,
                "bad_request",
                None,
            ),
            (br#"{"op":"fly","id":3}"#, "unknown_op", Some(Id::U(3))),
            (
                br#"{"op":"publish","channel":"a..b","event":"e","data":1}"#,
                "bad_channel",
                None,
            ),
            (
                br#"{"op":"publish","channel":"a","event":"e e","data":1}"#,
                "bad_event",
                None,
            ),
            (
                br#"{"op":"publish","channel":"a","event":"e"}"#,
                "bad_request",
                None,
            ),
            (br#"{"op":"publish","events":[]}"#, "bad_request", None),
            (br#"{"op":"ping","id":1.5}"#, "bad_request", None),
        ];
        for (msg, code, id) in cases {
            let (got_id, e) = parse_json(msg).unwrap_err();
            assert_eq!(e.code(), code, "{}", String::from_utf8_lossy(msg));
            assert_eq!(got_id, id, "{}", String::from_utf8_lossy(msg));
        }
    }

    #[test]
    fn deep_nesting_is_an_error_not_a_crash() {
        let deep = format!(
            r#"{{"op":"publish","channel":"a","event":"e","data":{}1{}}}"#,
            "[".repeat(100_000),
            "]".repeat(100_000)
        );
        assert!(parse_json(deep.as_bytes()).is_err());
        let mut m = vec![0x81, 0xa4, b'd', b'a', b't', b'a'];
        m.extend(std::iter::repeat_n(0x91, 100_000));
        m.push(0x01);
        assert!(parse_msgpack(&m).is_err());
    }

    #[test]
    fn data_depth_is_bounded_even_inside_raw_values() {
        let ok = format!(
            r#"{{"op":"publish","channel":"a","event":"e","data":{}1{}}}"#,
            "[".repeat(64),
            "]".repeat(64)
        );
        assert!(parse_json(ok.as_bytes()).is_ok());
        let deep = format!(
            r#"{{"op":"publish","channel":"a","event":"e","data":{}1{}}}"#,
            "[".repeat(65),
            "]".repeat(65)
        );
        assert_eq!(
            parse_json(deep.as_bytes()).unwrap_err().1.code(),
            "bad_request"
        );
    }

    #[test]
    fn msgpack_garbage_is_bad_frame() {
        assert_eq!(parse_msgpack(&[0xc1]).unwrap_err().1.code(), "bad_frame");
        assert_eq!(
            parse_msgpack(&[0x81, 0xa2]).unwrap_err().1.code(),
            "bad_frame"
        );
    }

    /// The bug: `bin`, ext and integer keys were transcoded into JSON (`{1:"a","1":"b"}`
    /// became an object with a duplicate key) although the protocol rejects them.
    #[test]
    fn msgpack_outside_the_json_subset_is_bad_frame_anywhere_in_the_op() {
        let head = |n: u8| {
            let mut m = vec![0x80 | n];
            m.extend_from_slice(&mp(&"op")[..]);
            m.extend_from_slice(&mp(&"publish")[..]);
            m.extend_from_slice(&mp(&"id")[..]);
            m.push(0x07);
            for k in ["channel", "t.A", "event", "e"] {
                m.extend_from_slice(&mp(&k)[..]);
            }
            m.extend_from_slice(&mp(&"data")[..]);
            m
        };
        let cases: Vec<(&str, Vec<u8>)> = vec![
            ("bin data", [head(5), vec![0xc4, 0x01, 0xaa]].concat()),
            ("ext data", [head(5), vec![0xd4, 0x05, 0x00]].concat()),
            (
                "integer key in data",
                [
                    head(5),
                    vec![0x82, 0x01, 0xa1, b'a', 0xa1, b'1', 0xa1, b'b'],
                ]
                .concat(),
            ),
            (
                "bin deep in data",
                [head(5), vec![0x91, 0x81, 0xa1, b'k', 0x91, 0xc4, 0x00]].concat(),
            ),
            (
                "integer key at top level",
                [head(6), vec![0x01, 0x00, 0x01]].concat(),
            ),
        ];
        for (what, msg) in cases {
            let (id, e) = parse_msgpack(&msg).unwrap_err();
            assert_eq!(e.code(), "bad_frame", "{what}: {e}");
            assert_eq!(
                id,
                if what.contains("top") {
                    None
                } else {
                    Some(Id::U(7))
                }
            );
        }
        // The same op with a string in `data` is fine.
        let good = [head(5), mp(&"x")].concat();
        let Op::Publish { events, .. } = parse_msgpack(&good).unwrap() else {
            panic!()
        };
        assert_eq!(&events[0].data[..], br#""x""#);
        // `op` itself as bin.
        let mut m = vec![0x81];
        m.extend_from_slice(&mp(&"op")[..]);
        m.extend_from_slice(&[0xc4, 0x04, b'p', b'i', b'n', b'g']);
        assert_eq!(parse_msgpack(&m).unwrap_err().1.code(), "bad_frame");
    }

    /// The bug: data MessagePack cannot carry was accepted, and msgpack subscribers got a
    /// JSON text frame instead.
    #[test]
    fn data_msgpack_cannot_carry_is_bad_data_in_ops_and_http() {
        for data in [r#"1e400"#, r#"{"s":"\ud800"}"#, r#"[1,-2e999]"#] {
            let op =
                format!(r#"{{"op":"publish","id":9,"channel":"a","event":"e","data":{data}}}"#);
            let (id, e) = parse_json(op.as_bytes()).unwrap_err();
            assert_eq!((id, e.code()), (Some(Id::U(9)), "bad_data"), "{data}: {e}");
            let body = format!(
                r#"{{"events":[{{"channel":"a","event":"e","data":1}},{{"channel":"a","event":"e","data":{data}}}]}}"#
            );
            let e = parse_http_publish(body.as_bytes()).unwrap_err();
            assert_eq!(e.code(), "bad_data", "{data}: {e}");
            assert!(e.to_string().starts_with("events[1]: "), "{e}");
        }
        let ok = r#"{"op":"publish","channel":"a","event":"e","data":["\ud83d\ude00",1e308]}"#;
        assert!(parse_json(ok.as_bytes()).is_ok());
    }

    #[test]
    fn http_body_single_and_batch() {
        let (ev, single) = parse_http_publish(
            br#"{"channel":"user.42.orders","event":"order_update","data":{"id":1}}"#,
        )
        .unwrap();
        assert!(single);
        assert_eq!(ev[0].channel, "user.42.orders");
        let (ev, single) = parse_http_publish(br#"{"events":[{"channel":"a","event":"e","data":1},{"channel":"b","event":"e","data":"s"}]}"#).unwrap();
        assert!(!single);
        assert_eq!(ev.len(), 2);
        assert_eq!(parse_http_publish(b"{}").unwrap_err().code(), "bad_request");
    }
}
