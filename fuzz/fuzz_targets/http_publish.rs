//! Fuzzes the `POST /api/publish` body parser.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = quotecast::protocol::op::parse_http_publish(data);
});
