//! Fuzzes JSON op parsing (text frames): never panics on any input.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = quotecast::protocol::op::parse_json(data);
});
