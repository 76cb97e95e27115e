//! Channel model (engine): which policy a channel name gets, decided by the first matching
//! pattern, Centrifugo-namespace style.
//!
//! Pattern syntax (see `docs/protocol.md`, "Channel patterns"):
//!
//! * literal bytes match themselves (case-sensitive);
//! * `*` matches one or more bytes inside one segment: anything but the separators `.` and
//!   `:` (`quotes.*` matches `quotes.AAPL`, not `quotes.BRK.B`);
//! * `**` matches one or more bytes of any kind, separators included (`quotes.**` matches
//!   `quotes.BRK.B`);
//! * `{user}` matches one or more *id bytes* (`A-Z a-z 0-9 - @`), never `.` `:` or `_`, so it
//!   can sit inside a segment (`user:{user}:*`, `user_{user}`,
//!   `private-App.Models.User.{user}`); the captured id makes the channel private to that
//!   user under `access = "owner"`;
//! * any other `{name}` (`challenge_{id}`) matches the same id bytes without meaning anything
//!   for access.
//!
//! Matching is a bit-parallel NFA simulation over the name: O(name length × pattern length)
//! with both bounded ([`MAX_PATTERN_LEN`], the protocol's channel limit), never backtracking,
//! whatever the pattern (configured or granted by a token). The `{user}` capture is made
//! unambiguous by construction: `{user}` may only follow literal text and must be followed by
//! the end or by a byte that is not an id byte, so it is the longest run of id bytes after
//! the literal prefix.

/// Longest accepted pattern in bytes (a name is at most 128; a pattern with placeholders can
/// be a little longer).
pub const MAX_PATTERN_LEN: usize = 255;

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
    /// An authenticated user the application's backend accepts (the namespace's subscribe
    /// hook), or a token granting it.
    Hook,
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

/// A byte class a repeated atom matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Class {
    /// `*`: anything but a segment separator.
    Segment,
    /// `**`: anything.
    Any,
    /// `{user}` / `{name}`: id bytes.
    Id,
}

impl Class {
    fn accepts(self, b: u8) -> bool {
        match self {
            // Only channel-name bytes: the matcher refuses what `check_channel` would, even
            // when a caller forgets to check first.
            Class::Segment => literal_ok(b) && !is_separator(b),
            Class::Any => literal_ok(b),
            Class::Id => is_id_byte(b),
        }
    }
}

/// One NFA position: a literal byte, or one-or-more bytes of a class.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Atom {
    Byte(u8),
    Plus(Class),
}

/// Segment separators for `*`.
pub fn is_separator(b: u8) -> bool {
    b == b'.' || b == b':'
}

/// Bytes a `{user}` or `{name}` placeholder matches: `A-Z a-z 0-9 - @`.
pub fn is_id_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'-' || b == b'@'
}

/// The bit set of NFA positions (at most [`MAX_PATTERN_LEN`] atoms, plus the accept state).
#[derive(Clone, Copy, Default, PartialEq, Eq)]
struct States([u64; 4]);

impl States {
    fn set(&mut self, i: usize) {
        self.0[i / 64] |= 1 << (i % 64);
    }
    fn has(&self, i: usize) -> bool {
        self.0[i / 64] & (1 << (i % 64)) != 0
    }
    fn is_empty(&self) -> bool {
        self.0 == [0; 4]
    }
}

/// Runs the NFA of `atoms` over `name`: O(name × atoms), no backtracking.
fn nfa_match(atoms: &[Atom], name: &[u8]) -> bool {
    debug_assert!(atoms.len() < 256);
    let mut cur = States::default();
    cur.set(0);
    for &b in name {
        let mut next = States::default();
        #[cfg(test)]
        tests::STEPS.with(|s| s.set(s.get() + atoms.len()));
        for (i, atom) in atoms.iter().enumerate() {
            if !cur.has(i) {
                continue;
            }
            match *atom {
                Atom::Byte(x) if x == b => next.set(i + 1),
                Atom::Plus(c) if c.accepts(b) => {
                    // One more byte of the class: either the run goes on or the next atom
                    // starts.
                    next.set(i);
                    next.set(i + 1);
                }
                _ => {}
            }
        }
        if next.is_empty() {
            return false;
        }
        cur = next;
    }
    cur.has(atoms.len())
}

/// One configured rule (or one token grant).
#[derive(Debug, Clone)]
pub struct ChannelRule {
    /// The pattern text, for display.
    pub pattern: String,
    atoms: Vec<Atom>,
    /// With a `{user}`: the length of the literal prefix before it.
    user_at: Option<usize>,
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

/// Whether a byte may appear literally in a pattern (the channel-name bytes).
fn literal_ok(b: u8) -> bool {
    crate::protocol::names::channel_byte_ok(b)
}

impl ChannelRule {
    /// Parses a configured pattern.
    pub fn new(pattern: &str, policy: ChannelPolicy) -> Result<Self, PatternError> {
        Self::parse(pattern, policy, None)
    }

    /// Parses a token's grant for `user`: `{user}` stands for the token's own user (never a
    /// wildcard), and any other placeholder is refused.
    pub fn grant(pattern: &str, user: &str) -> Result<Self, PatternError> {
        Self::parse(pattern, ChannelPolicy::stream(0), Some(user))
    }

    fn parse(
        pattern: &str,
        policy: ChannelPolicy,
        bind_user: Option<&str>,
    ) -> Result<Self, PatternError> {
        let err = |why| PatternError {
            pattern: pattern.to_string(),
            why,
        };
        if pattern.is_empty() {
            return Err(err("empty"));
        }
        if pattern.len() > MAX_PATTERN_LEN {
            return Err(err("longer than 255 bytes"));
        }
        if policy.kind == ChannelKind::Conflated && policy.history == 0 {
            return Err(err(
                "a conflated channel needs history >= 1 for its snapshot",
            ));
        }
        let b = pattern.as_bytes();
        let mut atoms = Vec::with_capacity(b.len());
        let mut user_at = None;
        // Whether everything so far is literal (for `{user}`'s position rule).
        let mut all_literal = true;
        // After a placeholder: the next byte must be a non-id literal (or the end).
        let mut after_placeholder = false;
        let mut i = 0;
        while i < b.len() {
            let c = b[i];
            if after_placeholder && (c == b'*' || c == b'{' || is_id_byte(c)) {
                return Err(err(
                    "a `{placeholder}` must be followed by the end or a separator such as . : _",
                ));
            }
            after_placeholder = false;
            match c {
                b'*' => {
                    let double = b.get(i + 1) == Some(&b'*');
                    if double && b.get(i + 2) == Some(&b'*') {
                        return Err(err("`***`: use `*` (one segment) or `**` (the rest)"));
                    }
                    atoms.push(Atom::Plus(if double { Class::Any } else { Class::Segment }));
                    all_literal = false;
                    i += if double { 2 } else { 1 };
                }
                b'{' => {
                    let Some(len) = b[i + 1..].iter().position(|&x| x == b'}') else {
                        return Err(err("`{` without `}`"));
                    };
                    let name = &pattern[i + 1..i + 1 + len];
                    if name.is_empty()
                        || !name
                            .bytes()
                            .all(|x| x.is_ascii_lowercase() || x.is_ascii_digit() || x == b'_')
                    {
                        return Err(err("a placeholder is `{user}` or `{name}` (a-z 0-9 _)"));
                    }
                    if name == "user" {
                        if user_at.is_some() || (bind_user.is_none() && !all_literal) {
                            return Err(err(
                                "`{user}` must come once, after literal text only (no `*` or placeholder before it)",
                            ));
                        }
                        match bind_user {
                            Some(u) => atoms.extend(u.bytes().map(Atom::Byte)),
                            None => {
                                user_at = Some(i);
                                atoms.push(Atom::Plus(Class::Id));
                            }
                        }
                    } else {
                        if bind_user.is_some() {
                            return Err(err(
                                "a grant may only use the `{user}` placeholder (the token's own user)",
                            ));
                        }
                        atoms.push(Atom::Plus(Class::Id));
                        all_literal = false;
                    }
                    after_placeholder = bind_user.is_none() || name != "user";
                    i += len + 2;
                }
                b'}' => return Err(err("stray `}`")),
                c if literal_ok(c) => {
                    atoms.push(Atom::Byte(c));
                    i += 1;
                }
                _ => return Err(err("a byte outside the channel-name characters")),
            }
        }
        if atoms.len() >= 256 {
            return Err(err("longer than 255 bytes"));
        }
        if policy.access == ChannelAccess::Owner && user_at.is_none() {
            return Err(err("owner access needs a `{user}` placeholder"));
        }
        Ok(ChannelRule {
            pattern: pattern.to_string(),
            atoms,
            user_at,
            policy,
        })
    }

    /// Whether `name` matches; on a match, the `{user}` capture if the pattern has one.
    /// Linear in `name` (see the module header).
    pub fn matches<'n>(&self, name: &'n str) -> Option<Option<&'n str>> {
        if !nfa_match(&self.atoms, name.as_bytes()) {
            return None;
        }
        Some(self.user_at.map(|at| {
            // The prefix before `{user}` is literal and matched, so the capture is the
            // longest run of id bytes after it (the byte after `{user}` is not an id byte).
            let rest = &name[at..];
            let len = rest.bytes().take_while(|&b| is_id_byte(b)).count();
            &rest[..len]
        }))
    }

    /// Whether the pattern has a `{user}` capture.
    pub fn has_user(&self) -> bool {
        self.user_at.is_some()
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
    /// The matching rule's pattern.
    pub pattern: &'r str,
}

impl ChannelRules {
    /// Rules in priority order.
    pub fn new(rules: Vec<ChannelRule>) -> Self {
        ChannelRules { rules }
    }

    /// The built-in defaults (see `docs/protocol.md`). There is no catch-all: a name no rule
    /// covers is refused (`unknown_channel`).
    pub fn defaults() -> Self {
        let stream = ChannelPolicy::stream;
        let rules = [
            ("quotes.**", ChannelPolicy::conflated()),
            ("trades.**", stream(1000)),
            ("signals.**", stream(100)),
            ("market.status", stream(10)),
            (
                "user.{user}.**",
                stream(1000).with_access(ChannelAccess::Owner),
            ),
            (
                "challenge.**",
                stream(1000).with_access(ChannelAccess::Grant),
            ),
            (
                "strategy.**",
                stream(1000).with_access(ChannelAccess::Grant),
            ),
            ("private.**", stream(1000).with_access(ChannelAccess::Grant)),
            // The load tester's channels (`loadtest/`): public, one segment.
            ("bench.*", stream(100)),
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

    /// The demo's catch-all: every other name is a public stream (only `--demo` adds it).
    pub fn public_catch_all() -> ChannelRule {
        // `**` parses; see the unit test `catch_all_matches_everything`.
        ChannelRule {
            pattern: "**".into(),
            atoms: vec![Atom::Plus(Class::Any)],
            user_at: None,
            policy: ChannelPolicy::stream(100),
        }
    }

    /// Appends a rule (lowest priority).
    pub fn push(&mut self, rule: ChannelRule) {
        self.rules.push(rule);
    }

    /// The policy for `name`, or `None` when no rule accepts it (`unknown_channel`).
    pub fn resolve<'r, 'n>(&'r self, name: &'n str) -> Option<Resolved<'r, 'n>> {
        self.rules.iter().find_map(|r| {
            r.matches(name).map(|owner| Resolved {
                policy: &r.policy,
                owner,
                pattern: &r.pattern,
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

    thread_local! {
        /// Atom visits made by `nfa_match` on this thread (a work count, not a timing).
        pub(super) static STEPS: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
    }

    fn rule(p: &str) -> ChannelRule {
        ChannelRule::new(p, ChannelPolicy::stream(1)).unwrap()
    }

    fn owner(p: &str) -> ChannelRule {
        ChannelRule::new(
            p,
            ChannelPolicy::stream(1).with_access(ChannelAccess::Owner),
        )
        .unwrap()
    }

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
        assert_eq!(r.resolve("quotes.BRK.B").unwrap().pattern, "quotes.**");
        assert_eq!(r.resolve("trades.AAPL").unwrap().policy.history, 1000);
        assert_eq!(r.resolve("market.status").unwrap().policy.history, 10);
        let u = r.resolve("user.42.orders").unwrap();
        assert_eq!(u.owner, Some("42"));
        assert_eq!(u.pattern, "user.{user}.**");
        assert!(r.resolve("user.42").is_none(), "no catch-all any more");
        assert!(r.resolve("quotes.").is_none());
        assert_eq!(r.resolve("bench.7").unwrap().policy.history, 100);
        assert!(r.resolve("bench.7.x").is_none());
        assert!(r.resolve("misc.7").is_none());
    }

    #[test]
    fn no_default_rule_covers_the_seeds_private_names() {
        let r = ChannelRules::defaults();
        for n in [
            "user:42:orders",
            "user:42:positions",
            "user:42",
            "user_42",
            "challenge_7",
            "private-App.Models.User.1",
            "strategy:9:orders",
            "App.Models.User.1",
        ] {
            assert!(r.resolve(n).is_none(), "{n}");
        }
    }

    #[test]
    fn user_capture_is_one_id_run() {
        let r = owner("user.{user}.**");
        assert_eq!(r.matches("user.42.orders.open"), Some(Some("42")));
        assert_eq!(r.matches("user.42"), None);
        assert_eq!(r.matches("users.42.x"), None);
        let r = owner("user:{user}:*");
        assert_eq!(r.matches("user:42:orders"), Some(Some("42")));
        assert_eq!(r.matches("user:42:orders:x"), None, "`*` is one segment");
        assert_eq!(r.matches("user:42:"), None, "trailing separator");
        assert_eq!(r.matches("user:42"), None);
        assert_eq!(r.matches("user::orders"), None);
        assert_eq!(r.matches("user:4.2:orders"), None);
        let r = owner("user_{user}");
        assert_eq!(r.matches("user_42"), Some(Some("42")));
        assert_eq!(r.matches("user_42_x"), None);
        assert_eq!(r.matches("user_"), None);
        let r = owner("private-App.Models.User.{user}");
        assert_eq!(r.matches("private-App.Models.User.1"), Some(Some("1")));
        assert_eq!(r.matches("private-app.models.user.1"), None, "case");
        assert_eq!(
            r.matches("private-App.Models.User.550e8400-e29b-41d4"),
            Some(Some("550e8400-e29b-41d4"))
        );
        let r = owner("user:{user}");
        assert_eq!(
            r.matches("user:042"),
            Some(Some("042")),
            "leading zeros kept"
        );
    }

    #[test]
    fn adversarial_names() {
        let r = owner("user:{user}:*");
        for n in [
            "user:4\u{0}2:orders",
            "user:4\u{663}:orders",
            "USER:42:orders",
            "user:42 :orders",
            "user:42:orders\u{0}",
            "user:٤٢:orders",
            "",
            ":",
            "user:",
        ] {
            assert_eq!(r.matches(n), None, "{n:?}");
        }
        let named = rule("challenge_{id}");
        assert_eq!(named.matches("challenge_7"), Some(None));
        assert_eq!(named.matches("challenge_7_x"), None);
        assert_eq!(named.matches("challenge_"), None);
        assert_eq!(named.matches("challenge_7."), None);
    }

    #[test]
    fn star_is_one_segment_and_double_star_the_rest() {
        let one = rule("trades.*");
        assert!(one.matches("trades.AAPL").is_some());
        assert!(one.matches("trades.BRK_B").is_some());
        assert!(one.matches("trades.BRK.B").is_none());
        assert!(one.matches("trades.").is_none());
        let rest = rule("trades.**");
        assert!(rest.matches("trades.BRK.B").is_some());
        assert!(rest.matches("trades.a:b.c").is_some());
        assert!(rest.matches("trades.").is_none());
        let mid = rule("a.**.z");
        assert!(mid.matches("a.b.c.z").is_some());
        assert!(mid.matches("a.z").is_none());
        assert!(ChannelRules::public_catch_all().matches("x").is_some());
    }

    #[test]
    fn catch_all_matches_everything() {
        let parsed = rule("**");
        let built = ChannelRules::public_catch_all();
        assert_eq!(parsed.atoms, built.atoms);
        assert_eq!(parsed.user_at, built.user_at);
    }

    #[test]
    fn grant_placeholders_bind_the_tokens_user() {
        let g = ChannelRule::grant("user.{user}.orders", "42").unwrap();
        assert!(g.matches("user.42.orders").is_some());
        assert!(g.matches("user.43.orders").is_none());
        assert!(g.matches("user.4.orders").is_none());
        assert!(ChannelRule::grant("challenge_{id}", "42").is_err());
        let g = ChannelRule::grant("challenge.{user}*", "42").unwrap();
        assert!(g.matches("challenge.42abc").is_some());
        assert!(g.matches("challenge.4abc").is_none());
    }

    /// Regression: `*a*a*a…b` against a long name took ~9 s with the old backtracking
    /// matcher. The NFA does at most name × atoms steps; count them instead of timing.
    #[test]
    fn many_stars_do_not_backtrack() {
        let pat = format!("challenge.{}b", "*a".repeat(60));
        let g = ChannelRule::grant(&pat, "42").unwrap();
        let name = format!("challenge.{}", "a".repeat(118));
        assert_eq!(name.len(), 128);
        STEPS.with(|s| s.set(0));
        assert!(g.matches(&name).is_none());
        let steps = STEPS.with(|s| s.get());
        assert!(steps <= name.len() * g.atoms.len(), "{steps} steps");
        let pat2 = format!("{}b", "**a".repeat(40));
        let r = rule(&pat2);
        STEPS.with(|s| s.set(0));
        assert!(r.matches(&"a".repeat(128)).is_none());
        assert!(STEPS.with(|s| s.get()) <= 128 * r.atoms.len());
        assert!(r.atoms.len() < 256);
    }

    #[test]
    fn without_catch_all_unknown_is_none() {
        let r = ChannelRules::new(vec![rule("a.*")]);
        assert!(r.resolve("b.x").is_none());
        assert!(r.resolve("a.").is_none());
    }

    #[test]
    fn bad_patterns() {
        let p = ChannelPolicy::stream(1);
        for bad in [
            "",
            "a.***",
            "a.{usr",
            "a.{User}",
            "a.{}",
            "{user}.{user}",
            "*.{user}",
            "{id}.{user}",
            "user.{user}*",
            "user.{user}x",
            "user.{user}{id}",
            "a}b",
            "a b",
            "a\u{0}",
        ] {
            assert!(ChannelRule::new(bad, p.clone()).is_err(), "{bad:?}");
        }
        assert!(ChannelRule::new(&"a".repeat(256), p.clone()).is_err());
        assert!(ChannelRule::new("quotes.*", p.clone().with_access(ChannelAccess::Owner)).is_err());
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
