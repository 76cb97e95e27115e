//! Property tests over the untrusted-input decoders: whatever bytes arrive, decoding never
//! panics, and well-formed ops round-trip.

use proptest::prelude::*;
use quotecast::protocol::encode::{event_msgpack, EventParts};
use quotecast::protocol::frame::{client_frame, Decoder, Message};
use quotecast::protocol::op::{parse_http_publish, parse_json, parse_msgpack, Op, PubEvent};

/// Every event a publish op was accepted with can be encoded for a MessagePack subscriber.
fn all_convert(events: &[PubEvent]) -> bool {
    events.iter().all(|e| {
        event_msgpack(EventParts {
            channel: &e.channel,
            event: &e.event,
            seq: 1,
            ts: 1,
            data: &e.data,
        })
        .is_ok()
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, .. ProptestConfig::default() })]

    #[test]
    fn op_parsers_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let _ = parse_json(&bytes);
        let _ = parse_msgpack(&bytes);
        let _ = parse_http_publish(&bytes);
    }

    #[test]
    fn json_like_input_never_panics(s in r#"\{("(op|id|channels|channel|event|data|events|since|snapshot|max_hz|token)":(1|-1|"[a-z.]{0,8}"|\[\]|\{\}|null|true|\[("[a-z.]{1,6}",?){0,3}\]),?){0,6}\}"#) {
        let _ = parse_json(s.as_bytes());
    }

    #[test]
    fn subscribe_round_trips(chans in proptest::collection::vec("[a-z]{1,8}(\\.[A-Z0-9]{1,6}){0,2}", 1..20), id in any::<u32>(), snapshot in any::<bool>()) {
        let msg = serde_json::json!({"op":"subscribe","id":id,"channels":chans,"snapshot":snapshot}).to_string();
        match parse_json(msg.as_bytes()) {
            Ok(Op::Subscribe { channels, snapshot: s, .. }) => {
                prop_assert_eq!(channels, chans.clone());
                prop_assert_eq!(s, snapshot);
            }
            other => prop_assert!(false, "{:?}", other),
        }
        let mp = rmp_serde::to_vec_named(&serde_json::json!({"op":"subscribe","id":id,"channels":chans})).unwrap();
        let is_sub = matches!(parse_msgpack(&mp), Ok(Op::Subscribe { .. }));
        prop_assert!(is_sub, "msgpack subscribe did not parse");
    }

    /// Publish-time checks guarantee that data reaches MessagePack subscribers as
    /// MessagePack: whatever `data` is accepted, in JSON or MessagePack ops, transcodes.
    #[test]
    fn accepted_data_always_converts_to_msgpack(data in r#"(-?[0-9]{1,3}(\.[0-9]{1,3})?([eE][-+]?[0-9]{1,4})?|"(\\u[dD][89abAB][0-9a-f]{2}|\\u[dD][c-fC-F][0-9a-f]{2}|\\u00[0-9a-f]{2}|[a-z]|\\n){0,4}"|true|null|\[|\]|,){1,8}"#, bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
        let op = format!(r#"{{"op":"publish","channel":"a","event":"e","data":{data}}}"#);
        if let Ok(Op::Publish { events, .. }) = parse_json(op.as_bytes()) {
            prop_assert!(all_convert(&events), "{}", data);
        }
        let body = format!(r#"{{"channel":"a","event":"e","data":{data}}}"#);
        if let Ok((events, _)) = parse_http_publish(body.as_bytes()) {
            prop_assert!(all_convert(&events), "{}", data);
        }
        let mut mp = vec![0x84];
        for (k, v) in [("op", "publish"), ("channel", "a"), ("event", "e")] {
            mp.extend(rmp_serde::to_vec(k).unwrap());
            mp.extend(rmp_serde::to_vec(v).unwrap());
        }
        mp.extend(rmp_serde::to_vec("data").unwrap());
        mp.extend_from_slice(&bytes);
        if let Ok(Op::Publish { events, .. }) = parse_msgpack(&mp) {
            prop_assert!(all_convert(&events), "{:?}", bytes);
        }
    }

    #[test]
    fn frame_decoder_never_panics_and_stays_bounded(bytes in proptest::collection::vec(any::<u8>(), 0..2048), split in 0usize..2048) {
        let mut d = Decoder::new(256);
        let mut buf = bytes.clone();
        let cut = split.min(buf.len());
        let mut count = 0usize;
        let first = d.decode(&mut buf[..cut], |_| { count += 1; true });
        if let Ok(used) = first {
            prop_assert!(used <= cut);
            let mut rest = bytes[used..].to_vec();
            let _ = d.decode(&mut rest, |_| { count += 1; true });
        }
        prop_assert!(count <= bytes.len());
    }

    #[test]
    fn masked_frames_decode_to_their_payload(payload in proptest::collection::vec(any::<u8>(), 0..300), mask in any::<[u8; 4]>(), chunk in 1usize..64) {
        let wire = client_frame(true, 2, &payload, mask);
        let mut d = Decoder::new(1024);
        let mut got: Option<Vec<u8>> = None;
        let mut pending: Vec<u8> = Vec::new();
        for part in wire.chunks(chunk) {
            pending.extend_from_slice(part);
            let used = d.decode(&mut pending, |m| { if let Message::Binary(b) = m { got = Some(b.to_vec()); } true }).unwrap();
            pending.drain(..used);
        }
        prop_assert_eq!(got, Some(payload));
    }
}
