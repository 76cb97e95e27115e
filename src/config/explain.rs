//! What a channel namespace means, in words (config layer, no I/O): the server's start-up log
//! line per namespace and `quotecast channels explain NAME [--user ID]`.

use std::fmt::Write as _;

use crate::engine::channel::{ChannelAccess, ChannelRule, ChannelRules};
use crate::protocol::names::check_channel;

/// Who may publish on any channel (publishing is not per namespace).
pub const WHO_PUBLISHES: &str =
    "a token with role publisher or admin, or an API key (POST /api/publish)";

/// Who may subscribe to channels of `rule`.
pub fn who_subscribes(rule: &ChannelRule) -> &'static str {
    match rule.policy.access {
        ChannelAccess::Public => "anyone admitted (anonymous clients too, when allowed)",
        ChannelAccess::Owner => {
            "only the user whose id fills {user}, or a token whose `channels` grant the name"
        }
        ChannelAccess::Grant => "only a token whose `channels` claim grants the name",
        ChannelAccess::Hook => {
            "an authenticated user the namespace's subscribe_hook accepts (or a token granting the name)"
        }
    }
}

/// One line per namespace: `pattern (kind, history N): subscribe: ...; publish: ...`.
pub fn describe(rule: &ChannelRule) -> String {
    format!(
        "{} ({}, history {}): subscribe: {}",
        rule.pattern,
        rule.policy.kind.as_str(),
        rule.policy.history,
        who_subscribes(rule)
    )
}

/// The explanation of `name` under `rules`, and whether a client could use it at all
/// (false for a bad name or one no namespace accepts).
pub fn explain(rules: &ChannelRules, name: &str, user: Option<&str>) -> (String, bool) {
    let mut out = String::new();
    let _ = writeln!(out, "channel:   {name}");
    if let Err(e) = check_channel(name) {
        let _ = writeln!(out, "refused:   bad_channel ({e})");
        return (out, false);
    }
    let Some(index) = rules.rules().iter().position(|r| r.matches(name).is_some()) else {
        let _ = writeln!(
            out,
            "refused:   unknown_channel: no namespace matches (there is no catch-all; add a \
             [[channels]] entry for it)"
        );
        return (out, false);
    };
    let rule = &rules.rules()[index];
    let owner = rule.matches(name).flatten();
    let _ = writeln!(
        out,
        "namespace: [[channels]] #{} pattern \"{}\"",
        index + 1,
        rule.pattern
    );
    let _ = writeln!(
        out,
        "kind:      {} (history {})",
        rule.policy.kind.as_str(),
        rule.policy.history
    );
    if let Some(o) = owner {
        let _ = writeln!(out, "owner:     {o}");
    }
    let _ = writeln!(out, "subscribe: {}", who_subscribes(rule));
    let _ = writeln!(out, "publish:   {WHO_PUBLISHES}");
    if let Some(u) = user {
        let verdict = match rule.policy.access {
            ChannelAccess::Public => "yes".to_string(),
            ChannelAccess::Owner if owner == Some(u) => "yes (owner)".to_string(),
            ChannelAccess::Owner => format!(
                "no (forbidden): the owner is {}; only a grant in the token would open it",
                owner.unwrap_or("?")
            ),
            ChannelAccess::Grant => "only if the token's `channels` grant it".to_string(),
            ChannelAccess::Hook => "if the backend's subscribe_hook accepts".to_string(),
        };
        let _ = writeln!(out, "user {u}:   {verdict}");
    }
    (out, true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn explains_owner_grant_unknown_and_bad_names() {
        let rules = ChannelRules::defaults();
        let (t, ok) = explain(&rules, "user.42.orders", Some("42"));
        assert!(ok);
        assert!(t.contains("pattern \"user.{user}.**\""), "{t}");
        assert!(
            t.contains("owner:     42") && t.contains("user 42:   yes (owner)"),
            "{t}"
        );
        let (t, _) = explain(&rules, "user.42.orders", Some("43"));
        assert!(t.contains("no (forbidden)"), "{t}");
        let (t, ok) = explain(&rules, "user:42:orders", None);
        assert!(!ok && t.contains("unknown_channel"), "{t}");
        let (t, ok) = explain(&rules, "user..42", None);
        assert!(!ok && t.contains("bad_channel"), "{t}");
        let (t, _) = explain(&rules, "challenge.7", Some("42"));
        assert!(t.contains("grant"), "{t}");
        assert!(describe(&rules.rules()[0]).starts_with("quotes.** (conflated, history 1)"));
    }
}
