//! Channel model (engine): which policy a channel name gets, decided by the first matching
//! pattern, Centrifugo-namespace style.
//!
//! Pattern syntax: literal bytes, `*` (one or more of any allowed byte, dots included) and
//! `{user}` (one non-empty dot-free segment, captured: the channel is private to that user).

/// How a channel delivers to a subscriber that falls behind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChannelKind {
    /// Latest value wins per subscriber (quotes).
    Conflated,
    /// Every event, in order; a subscriber too slow for the queue limit is disconnected.
    Stream,
}

impl ChannelKind {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            ChannelKind::Conflated => "conflated",
            ChannelKind::Stream => "stream",
        }
    }
}

/// How a channel may be subscribed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChannelAccess {
    /// Anyone the server admits (including anonymous connections, when allowed).
    Public,
    /// Only the user named by the pattern's `{user}`, or a token granting it.
    Owner,
    /// Only a token whose `channels` claim grants it.
    Grant,
}

/// What a pattern grants.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChannelPolicy {
    /// Delivery kind.
    pub kind: ChannelKind,
    /// Events retained for snapshot and recovery (≥ 1 for conflated channels).
    pub history: usize,
    /// Who may subscribe.
    pub access: ChannelAccess,
}

impl ChannelPolicy {
    /// A public stream channel retaining `history` events.
    pub fn stream(history: usize) -> Self {
        ChannelPolicy {
            kind: ChannelKind::Stream,
            history,
            access: ChannelAccess::Public,
        }
    }

    /// A public conflated channel (latest value kept for snapshots).
    pub fn conflated() -> Self {
        ChannelPolicy {
            kind: ChannelKind::Conflated,
            history: 1,
            access: ChannelAccess::Public,
        }
    }

    /// The same policy with other access.
    pub fn with_access(mut self, access: ChannelAccess) -> Self {
        self.access = access;
        self
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Tok {
    Lit(String),
    Star,
    User,
}

/// One configured rule.
#[derive(Debug, Clone)]
pub struct ChannelRule {
    /// The pattern text, for display.
    pub pattern: String,
    toks: Vec<Tok>,
    /// The policy it grants.
    pub policy: ChannelPolicy,
}

/// A pattern that does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("bad channel pattern `{pattern}`: {why}")]
pub struct PatternError {
    /// The pattern.
    pub pattern: String,
    /// What is wrong.
    pub why: &'static str,
}

impl ChannelRule {
    /// Parses a pattern.
    pub fn new(pattern: &str, policy: ChannelPolicy) -> Result<Self, PatternError> {
        let err = |why| PatternError {
            pattern: pattern.to_string(),
            why,
        };
        if pattern.is_empty() {
            return Err(err("empty"));
        }
        if policy.kind == ChannelKind::Conflated && policy.history == 0 {
            return Err(err(
                "a conflated channel needs history >= 1 for its snapshot",
            ));
        }
        let mut toks = Vec::new();
        let mut rest = pattern;
        while !rest.is_empty() {
            if let Some(r) = rest.strip_prefix("{user}") {
                toks.push(Tok::User);
                rest = r;
            } else if let Some(r) = rest.strip_prefix('*') {
                if toks.last() == Some(&Tok::Star) {
                    return Err(err("two `*` in a row"));
                }
                toks.push(Tok::Star);
                rest = r;
            } else {
                let end = rest.find(['*', '{']).unwrap_or(rest.len());
                if end == 0 {
                    return Err(err("`{` must start `{user}`"));
                }
                let lit = &rest[..end];
                if lit.contains('}') {
                    return Err(err("stray `}`"));
                }
                toks.push(Tok::Lit(lit.to_string()));
                rest = &rest[end..];
            }
        }
        let users = toks.iter().filter(|t| **t == Tok::User).count();
        if users > 1 {
            return Err(err("at most one `{user}`"));
        }
        if policy.access == ChannelAccess::Owner && users == 0 {
            return Err(err("owner access needs a `{user}` segment"));
        }
        Ok(ChannelRule {
            pattern: pattern.to_string(),
            toks,
            policy,
        })
    }

    /// Whether `name` matches; on a match, the `{user}` capture if the pattern has one.
    pub fn matches<'n>(&self, name: &'n str) -> Option<Option<&'n str>> {
        let mut user = None;
        if match_toks(&self.toks, name, &mut user) {
            Some(user)
        } else {
            None
        }
    }
}

fn match_toks<'n>(toks: &[Tok], s: &'n str, user: &mut Option<&'n str>) -> bool {
    match toks.split_first() {
        None => s.is_empty(),
        Some((Tok::Lit(l), rest)) => s
            .strip_prefix(l.as_str())
            .is_some_and(|r| match_toks(rest, r, user)),
        Some((Tok::Star, rest)) => {
            // One or more bytes; names are ASCII, so every index is a char boundary.
            (1..=s.len()).any(|i| match_toks(rest, &s[i..], user))
        }
        Some((Tok::User, rest)) => {
            let seg_end = s.find('.').unwrap_or(s.len());
            if seg_end == 0 {
                return false;
            }
            // `{user}` takes exactly one segment (ids never contain dots).
            let ok = match_toks(rest, &s[seg_end..], user);
            if ok {
                *user = Some(&s[..seg_end]);
            }
            ok
        }
    }
}

/// The ordered rule list; first match wins.
#[derive(Debug, Clone)]
pub struct ChannelRules {
    rules: Vec<ChannelRule>,
}

/// The outcome of resolving a channel name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolved<'r, 'n> {
    /// Policy of the first matching rule.
    pub policy: &'r ChannelPolicy,
    /// The private owner, for `{user}` patterns.
    pub owner: Option<&'n str>,
}

impl ChannelRules {
    /// Rules in priority order.
    pub fn new(rules: Vec<ChannelRule>) -> Self {
        ChannelRules { rules }
    }

    /// The built-in defaults (see `docs/protocol.md`).
    pub fn defaults() -> Self {
        let stream = ChannelPolicy::stream;
        let rules = [
            ("quotes.*", ChannelPolicy::conflated()),
            ("trades.*", stream(1000)),
            ("signals.*", stream(100)),
            ("market.status", stream(10)),
            (
                "user.{user}.*",
                stream(1000).with_access(ChannelAccess::Owner),
            ),
            (
                "challenge.*",
                stream(1000).with_access(ChannelAccess::Grant),
            ),
            ("strategy.*", stream(1000).with_access(ChannelAccess::Grant)),
            ("private.*", stream(1000).with_access(ChannelAccess::Grant)),
            ("*", stream(100)),
        ];
        ChannelRules::new(
            rules
                .into_iter()
                // The built-in patterns are constants that parse; a failure is a bug caught
                // by the unit test below.
                .filter_map(|(p, pol)| ChannelRule::new(p, pol).ok())
                .collect(),
        )
    }

    /// The policy for `name`, or `None` when no rule accepts it (`unknown_channel`).
    pub fn resolve<'r, 'n>(&'r self, name: &'n str) -> Option<Resolved<'r, 'n>> {
        self.rules.iter().find_map(|r| {
            r.matches(name).map(|owner| Resolved {
                policy: &r.policy,
                owner,
            })
        })
    }

    /// The rules, for display.
    pub fn rules(&self) -> &[ChannelRule] {
        &self.rules
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_parse_and_resolve() {
        let r = ChannelRules::defaults();
        assert_eq!(r.rules().len(), 9);
        assert_eq!(
            r.resolve("challenge.7f3a").unwrap().policy.access,
            ChannelAccess::Grant
        );
        assert_eq!(
            r.resolve("quotes.AAPL").unwrap().policy.kind,
            ChannelKind::Conflated
        );
        assert_eq!(r.resolve("trades.AAPL").unwrap().policy.history, 1000);
        assert_eq!(r.resolve("market.status").unwrap().policy.history, 10);
        let u = r.resolve("user.42.orders").unwrap();
        assert_eq!(u.owner, Some("42"));
        assert_eq!(
            r.resolve("user.42").unwrap().owner,
            None,
            "no segment after the user: catch-all"
        );
        assert_eq!(r.resolve("quotes.").unwrap().owner, None);
        assert_eq!(
            r.resolve("bench.7").unwrap().policy.kind,
            ChannelKind::Stream
        );
    }

    #[test]
    fn user_capture_is_one_segment() {
        let rule = ChannelRule::new("user.{user}.*", ChannelPolicy::stream(1)).unwrap();
        assert_eq!(rule.matches("user.42.orders.open"), Some(Some("42")));
        assert_eq!(rule.matches("user.42"), None);
        assert_eq!(rule.matches("users.42.x"), None);
    }

    #[test]
    fn without_catch_all_unknown_is_none() {
        let r = ChannelRules::new(vec![
            ChannelRule::new("a.*", ChannelPolicy::stream(1)).unwrap()
        ]);
        assert!(r.resolve("b.x").is_none());
        assert!(r.resolve("a.").is_none());
    }

    #[test]
    fn bad_patterns() {
        let p = ChannelPolicy::stream(1);
        assert!(ChannelRule::new("", p.clone()).is_err());
        assert!(ChannelRule::new("a.**", p.clone()).is_err());
        assert!(ChannelRule::new("a.{usr}", p.clone()).is_err());
        assert!(ChannelRule::new("{user}.{user}", p).is_err());
        assert!(ChannelRule::new(
            "q.*",
            ChannelPolicy {
                history: 0,
                ..ChannelPolicy::conflated()
            }
        )
        .is_err());
    }
}
