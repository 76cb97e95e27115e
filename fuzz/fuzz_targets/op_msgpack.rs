//! Fuzzes MessagePack op parsing (binary frames), including the JSON transcoding of `data`.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = quotecast::protocol::op::parse_msgpack(data);
});
