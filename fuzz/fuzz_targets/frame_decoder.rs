//! Fuzzes the client frame decoder: arbitrary bytes, fed in two reads split at a
//! fuzzer-chosen point, must never panic, and consumption must stay within the input.
#![no_main]
use libfuzzer_sys::fuzz_target;
use quotecast::protocol::frame::Decoder;

fuzz_target!(|data: &[u8]| {
    if data.is_empty() {
        return;
    }
    let split = data[0] as usize % data.len();
    let mut d = Decoder::new(1024);
    let mut first = data[1.min(data.len())..split.max(1)].to_vec();
    let Ok(used) = d.decode(&mut first, |_| true) else { return };
    assert!(used <= first.len());
    let mut rest = first[used..].to_vec();
    rest.extend_from_slice(&data[split.max(1)..]);
    if let Ok(used) = d.decode(&mut rest, |_| true) {
        assert!(used <= rest.len());
    }
});
