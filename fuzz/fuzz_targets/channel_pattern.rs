//! Fuzzes channel patterns (configured, and token grants, which come from signed but
//! possibly careless backends) and matching: arbitrary pattern and name bytes must never
//! panic, a parsed pattern must match within its work bound, and a `{user}` capture must be
//! a piece of the name made of id bytes.
#![no_main]
use libfuzzer_sys::fuzz_target;
use quotecast::engine::channel::{
    is_id_byte, ChannelAccess, ChannelPolicy, ChannelRule, ChannelRules,
};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let (pattern, name) = text.split_once('\n').unwrap_or((text, "x"));
    let owner = ChannelPolicy::stream(1).with_access(ChannelAccess::Owner);
    for rule in [
        ChannelRule::new(pattern, ChannelPolicy::stream(1)).ok(),
        ChannelRule::new(pattern, owner).ok(),
        ChannelRule::grant(pattern, "42").ok(),
    ]
    .into_iter()
    .flatten()
    {
        if let Some(Some(user)) = rule.matches(name) {
            assert!(!user.is_empty() && user.bytes().all(is_id_byte));
            assert!(name.contains(user));
        }
        let rules = ChannelRules::new(vec![rule]);
        let _ = rules.resolve(name);
    }
});
