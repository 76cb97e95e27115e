//! Fuzzes what the Pusher endpoint reads from the network before it trusts it: the HTTP
//! API's query string and its signature check (with the body), channel names, socket ids,
//! and the Pusher event frame of any event name and data, which must stay valid JSON.
#![no_main]
use libfuzzer_sys::fuzz_target;
use quotecast::protocol::encode::EventParts;

fuzz_target!(|data: &[u8]| {
    let s = String::from_utf8_lossy(data);
    let (q, body) = s.split_once('\n').unwrap_or((&s, ""));
    let pairs = quotecast::pusher::api::query_pairs(q);
    let _ = quotecast::pusher::sign::verify_api(
        "key",
        "secret12",
        "POST",
        "/apps/1/events",
        &pairs,
        body.as_bytes(),
        1_000,
    );
    let _ = quotecast::pusher::ws::channel_ok(q);
    let _ = quotecast::pusher::ws::socket_conn(q);
    // Engine data is JSON: here a JSON string holding the body.
    let json = {
        let mut v = Vec::new();
        quotecast::protocol::pusher::push_json_str(&mut v, body.as_bytes());
        v
    };
    let f = quotecast::protocol::pusher::event_frame(EventParts {
        channel: "c",
        event: q,
        seq: 1,
        ts: 1,
        data: &json,
    });
    let off = match f[1] & 0x7f {
        126 => 4,
        127 => 10,
        _ => 2,
    };
    assert!(
        std::str::from_utf8(&f[off..]).is_ok_and(json_ok),
        "a Pusher frame is not JSON"
    );
});

/// A minimal JSON check without a JSON crate: balanced quotes outside escapes and
/// balanced braces (the frame is one object of strings).
fn json_ok(s: &str) -> bool {
    let b = s.as_bytes();
    if b.first() != Some(&b'{') || b.last() != Some(&b'}') {
        return false;
    }
    let (mut in_str, mut esc, mut depth) = (false, false, 0i32);
    for &c in b {
        if in_str {
            match (esc, c) {
                (true, _) => esc = false,
                (false, b'\\') => esc = true,
                (false, b'"') => in_str = false,
                (false, c) if c < 0x20 => return false,
                _ => {}
            }
        } else {
            match c {
                b'"' => in_str = true,
                b'{' => depth += 1,
                b'}' => depth -= 1,
                _ => {}
            }
        }
    }
    !in_str && depth == 0
}
