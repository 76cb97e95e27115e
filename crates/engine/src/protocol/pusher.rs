//! The Pusher Channels protocol 7 wire (protocol layer): how events and the server's
//! messages look to `pusher-js`, Laravel Echo and every other Pusher client. Pure encoding,
//! no state: the Pusher arms of [`Format`](super::Format)'s dialect seam call these, and
//! the server's Pusher module (`src/pusher`) builds its own messages with them.
//!
//! Every Pusher message is a JSON object `{"event":..,"channel":..,"data":..}` whose `data`
//! is a JSON *string* (the client parses it again). An event published through either API
//! carries canonical JSON in the engine; its Pusher frame puts that JSON in a string, or,
//! when the JSON already is a string (a Pusher publish of non-JSON text), that string as it
//! is. The frame is built once per event and shared by every Pusher subscriber.

use bytes::Bytes;

use super::encode::EventParts;
use super::frame::{FrameBuf, OpCode};

/// The Pusher protocol versions accepted (`?protocol=`); pusher-js 7/8 sends 7.
pub const PROTOCOLS: std::ops::RangeInclusive<u32> = 5..=7;

/// Appends `s` as a JSON string literal (quotes included).
pub fn push_json_str(out: &mut Vec<u8>, s: &[u8]) {
    out.push(b'"');
    let mut start = 0;
    for (i, &b) in s.iter().enumerate() {
        let esc: &[u8] = match b {
            b'"' => b"\\\"",
            b'\\' => b"\\\\",
            b'\n' => b"\\n",
            b'\r' => b"\\r",
            b'\t' => b"\\t",
            0..=0x1f => b"",
            _ => continue,
        };
        out.extend_from_slice(&s[start..i]);
        if esc.is_empty() {
            out.extend_from_slice(format!("\\u{b:04x}").as_bytes());
        } else {
            out.extend_from_slice(esc);
        }
        start = i + 1;
    }
    out.extend_from_slice(&s[start..]);
    out.push(b'"');
}

/// Appends `data` (canonical JSON) as the value of a Pusher `data` field: a JSON string
/// stays as it is, anything else becomes the string of its JSON text.
fn push_data(out: &mut Vec<u8>, data: &[u8]) {
    if data.first() == Some(&b'"') {
        out.extend_from_slice(data);
    } else {
        push_json_str(out, data);
    }
}

/// A complete Pusher message frame: `{"event":E[,"channel":C],"data":D}` where `data` is
/// written by `data` (a string literal, or an object for `pusher:error`).
pub fn message(event: &str, channel: Option<&str>, data: impl FnOnce(&mut Vec<u8>)) -> Bytes {
    let mut fb = FrameBuf::with_capacity(64 + event.len() + channel.map_or(0, str::len));
    let v = fb.payload_mut();
    v.extend_from_slice(br#"{"event":"#);
    push_json_str(v, event.as_bytes());
    if let Some(c) = channel {
        v.extend_from_slice(br#","channel":"#);
        push_json_str(v, c.as_bytes());
    }
    v.extend_from_slice(br#","data":"#);
    data(v);
    v.push(b'}');
    fb.finish(OpCode::Text)
}

/// A message whose `data` is the string of the JSON text `json` (e.g. `{}`).
pub fn message_str(event: &str, channel: Option<&str>, json: &[u8]) -> Bytes {
    message(event, channel, |v| push_json_str(v, json))
}

/// The Pusher name of an engine channel: an application with a namespace keeps its
/// channels as `namespace:name` in the engine, and a Pusher name never contains `:`.
pub fn client_channel(engine_channel: &str) -> &str {
    match engine_channel.find(':') {
        Some(i) => &engine_channel[i + 1..],
        None => engine_channel,
    }
}

/// An event as Pusher clients receive it (the channel without its application namespace).
pub fn event_frame(e: EventParts<'_>) -> Bytes {
    message(e.event, Some(client_channel(e.channel)), |v| {
        push_data(v, e.data)
    })
}

/// `pusher:error` with a code and a message (`data` is an object, as Pusher sends it).
pub fn error(code: Option<u16>, message_text: &str) -> Bytes {
    message("pusher:error", None, |v| {
        v.extend_from_slice(br#"{"code":"#);
        match code {
            Some(c) => v.extend_from_slice(c.to_string().as_bytes()),
            None => v.extend_from_slice(b"null"),
        }
        v.extend_from_slice(br#","message":"#);
        push_json_str(v, message_text.as_bytes());
        v.push(b'}');
    })
}

/// `pusher:subscription_error` for `channel` (`data` an object: type, error, status).
pub fn subscription_error(channel: &str, kind: &str, text: &str, status: u16) -> Bytes {
    message("pusher:subscription_error", Some(channel), |v| {
        v.extend_from_slice(br#"{"type":"#);
        push_json_str(v, kind.as_bytes());
        v.extend_from_slice(br#","error":"#);
        push_json_str(v, text.as_bytes());
        v.extend_from_slice(br#","status":"#);
        v.extend_from_slice(status.to_string().as_bytes());
        v.push(b'}');
    })
}

/// `pusher_internal:subscription_succeeded` for a channel without presence data.
pub fn subscription_succeeded(channel: &str) -> Bytes {
    message_str(
        "pusher_internal:subscription_succeeded",
        Some(channel),
        b"{}",
    )
}

/// `pusher:pong`.
pub fn pong() -> Bytes {
    message_str("pusher:pong", None, b"{}")
}

/// `pusher:ping` (the server asking for a `pusher:pong`).
pub fn ping() -> Bytes {
    message_str("pusher:ping", None, b"{}")
}

/// `pusher:connection_established` with the socket id and the activity timeout (s).
pub fn connection_established(socket_id: &str, activity_timeout: u64) -> Bytes {
    let json = format!(r#"{{"socket_id":"{socket_id}","activity_timeout":{activity_timeout}}}"#);
    message_str("pusher:connection_established", None, json.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(f: &Bytes) -> serde_json::Value {
        // Short frames: a 2-byte header; longer ones: 4 bytes.
        let off = if f[1] & 0x7f == 126 { 4 } else { 2 };
        serde_json::from_slice(&f[off..]).unwrap()
    }

    #[test]
    fn object_data_is_sent_as_its_json_string() {
        let f = event_frame(EventParts {
            channel: "app1:orders",
            event: r"App\Events\OrderUpdated",
            seq: 1,
            ts: 2,
            data: br#"{"id":1,"s":"a\"b"}"#,
        });
        let v = parse(&f);
        assert_eq!(v["event"], r"App\Events\OrderUpdated");
        assert_eq!(v["channel"], "orders");
        let inner: serde_json::Value = serde_json::from_str(v["data"].as_str().unwrap()).unwrap();
        assert_eq!(inner["s"], "a\"b");
    }

    #[test]
    fn string_data_stays_a_string() {
        let f = event_frame(EventParts {
            channel: "c",
            event: "e",
            seq: 1,
            ts: 2,
            data: br#""plain text\n""#,
        });
        assert_eq!(parse(&f)["data"], "plain text\n");
    }

    #[test]
    fn control_bytes_are_escaped() {
        let mut v = Vec::new();
        push_json_str(&mut v, b"a\x01b\\");
        assert_eq!(v, br#""a\u0001b\\""#);
        let e = error(Some(4001), "no \"app\"");
        let j = parse(&e);
        assert_eq!(j["data"]["code"], 4001);
        assert_eq!(j["data"]["message"], "no \"app\"");
        let c = connection_established("1.2", 120);
        let j = parse(&c);
        let d: serde_json::Value = serde_json::from_str(j["data"].as_str().unwrap()).unwrap();
        assert_eq!(d["socket_id"], "1.2");
        assert_eq!(d["activity_timeout"], 120);
    }
}
