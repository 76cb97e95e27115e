//! Channel and event name rules (protocol layer).
//!
//! Names are checked once, where they enter the server (subscribe, publish, HTTP API), so
//! that everything downstream can write them into JSON without escaping and compare them
//! byte for byte. The rules are deliberately narrow: ASCII only (no Unicode look-alikes),
//! case-sensitive, no empty dot-separated segment (no `..` tricks).

/// Longest accepted channel name in bytes.
pub const MAX_CHANNEL_LEN: usize = 128;
/// Longest accepted event name in bytes.
pub const MAX_EVENT_LEN: usize = 64;

/// Why a name was refused; the text goes into the error frame's `message`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    /// Zero-length name.
    #[error("name is empty")]
    Empty,
    /// Longer than the limit.
    #[error("name is longer than {0} bytes")]
    TooLong(usize),
    /// A byte outside the allowed set.
    #[error("name contains a character outside A-Z a-z 0-9 and {0}")]
    BadChar(&'static str),
    /// `a..b`, `.a` or `a.`.
    #[error("empty segment in channel name")]
    EmptySegment,
}

/// Whether a byte may appear in a channel name.
pub fn channel_byte_ok(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'-' | b'@' | b'=' | b'#')
}

fn event_byte_ok(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'-')
}

/// Checks a channel name against the protocol's rules.
pub fn check_channel(name: &str) -> Result<(), NameError> {
    let b = name.as_bytes();
    if b.is_empty() {
        return Err(NameError::Empty);
    }
    if b.len() > MAX_CHANNEL_LEN {
        return Err(NameError::TooLong(MAX_CHANNEL_LEN));
    }
    if !b.iter().all(|&c| channel_byte_ok(c)) {
        return Err(NameError::BadChar(". _ : - @ = #"));
    }
    if b[0] == b'.' || b[b.len() - 1] == b'.' || name.contains("..") {
        return Err(NameError::EmptySegment);
    }
    Ok(())
}

/// Checks an event name against the protocol's rules.
pub fn check_event(name: &str) -> Result<(), NameError> {
    let b = name.as_bytes();
    if b.is_empty() {
        return Err(NameError::Empty);
    }
    if b.len() > MAX_EVENT_LEN {
        return Err(NameError::TooLong(MAX_EVENT_LEN));
    }
    if !b.iter().all(|&c| event_byte_ok(c)) {
        return Err(NameError::BadChar(". _ : -"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_ordinary_names() {
        for n in [
            "quotes.AAPL",
            "user.42.orders",
            "market.status",
            "fx:EUR-USD",
            "a",
            "x@y=z#1",
        ] {
            assert_eq!(check_channel(n), Ok(()), "{n}");
        }
        assert_eq!(check_event("order_update"), Ok(()));
    }

    #[test]
    fn rejects_tricks() {
        assert_eq!(check_channel(""), Err(NameError::Empty));
        assert_eq!(check_channel("user..42"), Err(NameError::EmptySegment));
        assert_eq!(check_channel(".user"), Err(NameError::EmptySegment));
        assert_eq!(check_channel("user."), Err(NameError::EmptySegment));
        assert!(matches!(
            check_channel("user.42 "),
            Err(NameError::BadChar(_))
        ));
        assert!(matches!(
            check_channel("user.4２"),
            Err(NameError::BadChar(_))
        ));
        assert!(matches!(
            check_channel("user.*"),
            Err(NameError::BadChar(_))
        ));
        assert!(matches!(check_channel("a\"b"), Err(NameError::BadChar(_))));
        assert_eq!(
            check_channel(&"a".repeat(129)),
            Err(NameError::TooLong(128))
        );
        assert_eq!(check_channel(&"a".repeat(128)), Ok(()));
        assert!(matches!(check_event("a b"), Err(NameError::BadChar(_))));
        assert_eq!(check_event(&"e".repeat(65)), Err(NameError::TooLong(64)));
    }
}
