//! Fuzzes token verification with all three key types configured: any string must be
//! refused (or, astronomically unlikely, accepted) without a panic.
#![no_main]
use libfuzzer_sys::fuzz_target;
use quotecast::auth::{JwtConfig, Verifier};
use std::sync::OnceLock;

static VERIFIER: OnceLock<Verifier> = OnceLock::new();

fuzz_target!(|data: &[u8]| {
    let v = VERIFIER.get_or_init(|| {
        Verifier::new(&JwtConfig {
            hs256_secret: Some(b"fuzz-secret".to_vec()),
            rs256_public_pem: Some(include_bytes!("../../tests/keys/rsa-public.pem").to_vec()),
            es256_public_pem: Some(include_bytes!("../../tests/keys/ec-public.pem").to_vec()),
            ..JwtConfig::default()
        })
        .expect("test keys parse")
    });
    if let Ok(s) = std::str::from_utf8(data) {
        let _ = v.verify(s);
    }
});
