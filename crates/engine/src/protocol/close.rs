//! WebSocket close codes: the RFC 6455 codes the server uses or meets, and the protocol's
//! own 4xxx codes (`docs/protocol.md`, close codes). One type for the close frame, the log
//! line and the metrics label, so a code and its meaning cannot drift apart.

/// A close code, sent by the server or received from a client.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum CloseCode {
    /// 1000: normal closure.
    Normal,
    /// 1001: the endpoint is going away.
    GoingAway,
    /// 1002: the peer broke RFC 6455.
    ProtocolError,
    /// 1005: a close frame without a code (never sent).
    NoStatus,
    /// 1006: the connection ended without a close frame (never sent).
    Abnormal,
    /// 1007: a text message that is not UTF-8.
    InvalidUtf8,
    /// 1009: a message over the size limit.
    TooLarge,
    /// 1011: the server failed.
    InternalError,
    /// 1012: the server is restarting.
    ServerRestart,
    /// 4000: no traffic from the client for two heartbeat intervals.
    HeartbeatTimeout,
    /// 4001: the token was refused.
    AuthFailed,
    /// 4002: the token expired.
    TokenExpired,
    /// 4003: no `auth` op in time.
    AuthTimeout,
    /// 4008: a slow consumer (lag or queue cap).
    SlowConsumer,
    /// 4010: over the per-user connection limit.
    TooManyConnections,
    /// 4011: idle with no subscription.
    IdleTimeout,
    /// 4012: disconnected by an operator through the server API (the reason says why).
    Disconnected,
    /// 4029: op rate limit exceeded repeatedly.
    RateLimited,
    /// Any other code a client sent.
    Other(u16),
}

impl CloseCode {
    /// Every named code, for tables and tests.
    pub const ALL: [CloseCode; 18] = [
        CloseCode::Normal,
        CloseCode::GoingAway,
        CloseCode::ProtocolError,
        CloseCode::NoStatus,
        CloseCode::Abnormal,
        CloseCode::InvalidUtf8,
        CloseCode::TooLarge,
        CloseCode::InternalError,
        CloseCode::ServerRestart,
        CloseCode::HeartbeatTimeout,
        CloseCode::AuthFailed,
        CloseCode::TokenExpired,
        CloseCode::AuthTimeout,
        CloseCode::SlowConsumer,
        CloseCode::TooManyConnections,
        CloseCode::IdleTimeout,
        CloseCode::Disconnected,
        CloseCode::RateLimited,
    ];

    /// The number on the wire.
    pub fn code(self) -> u16 {
        match self {
            CloseCode::Normal => 1000,
            CloseCode::GoingAway => 1001,
            CloseCode::ProtocolError => 1002,
            CloseCode::NoStatus => 1005,
            CloseCode::Abnormal => 1006,
            CloseCode::InvalidUtf8 => 1007,
            CloseCode::TooLarge => 1009,
            CloseCode::InternalError => 1011,
            CloseCode::ServerRestart => 1012,
            CloseCode::HeartbeatTimeout => 4000,
            CloseCode::AuthFailed => 4001,
            CloseCode::TokenExpired => 4002,
            CloseCode::AuthTimeout => 4003,
            CloseCode::SlowConsumer => 4008,
            CloseCode::TooManyConnections => 4010,
            CloseCode::IdleTimeout => 4011,
            CloseCode::Disconnected => 4012,
            CloseCode::RateLimited => 4029,
            CloseCode::Other(c) => c,
        }
    }

    /// The code for a number (a named one where there is one).
    pub fn from_code(code: u16) -> CloseCode {
        CloseCode::ALL
            .into_iter()
            .find(|c| c.code() == code)
            .unwrap_or(CloseCode::Other(code))
    }

    /// The metrics label (`quotecast_disconnects_total{reason}`); `other` for codes that are
    /// not the protocol's, so the label set stays bounded.
    pub fn label(self) -> &'static str {
        match self {
            CloseCode::Normal => "normal",
            CloseCode::GoingAway => "going_away",
            CloseCode::ProtocolError => "protocol_error",
            CloseCode::NoStatus => "no_status",
            CloseCode::Abnormal => "abnormal",
            CloseCode::InvalidUtf8 => "invalid_utf8",
            CloseCode::TooLarge => "too_large",
            CloseCode::InternalError => "internal_error",
            CloseCode::ServerRestart => "server_restart",
            CloseCode::HeartbeatTimeout => "heartbeat_timeout",
            CloseCode::AuthFailed => "auth_failed",
            CloseCode::TokenExpired => "token_expired",
            CloseCode::AuthTimeout => "auth_timeout",
            CloseCode::SlowConsumer => "slow_consumer",
            CloseCode::TooManyConnections => "too_many_connections",
            CloseCode::IdleTimeout => "idle_timeout",
            CloseCode::Disconnected => "disconnected",
            CloseCode::RateLimited => "rate_limited",
            CloseCode::Other(_) => "other",
        }
    }

    /// Whether a client may send this code in its close frame (RFC 6455 section 7.4: the
    /// defined codes an endpoint may send, and 3000-4999). 1005, 1006 and 1015 are for
    /// reporting only; 0-999, the unassigned 1016-2999 and 5000 and above are invalid.
    pub fn valid_from_peer(code: u16) -> bool {
        matches!(code, 1000..=1003 | 1007..=1014 | 3000..=4999)
    }
}

impl std::fmt::Display for CloseCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.code())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_named_code_round_trips_and_has_its_own_label() {
        let mut labels = std::collections::BTreeSet::new();
        for c in CloseCode::ALL {
            assert_eq!(CloseCode::from_code(c.code()), c);
            assert!(labels.insert(c.label()), "{} twice", c.label());
        }
        assert_eq!(CloseCode::from_code(4999), CloseCode::Other(4999));
        assert_eq!(CloseCode::Other(4999).label(), "other");
    }

    #[test]
    fn peer_codes_follow_rfc_6455() {
        for ok in [1000, 1001, 1002, 1003, 1007, 1011, 1012, 3000, 4000, 4999] {
            assert!(CloseCode::valid_from_peer(ok), "{ok}");
        }
        for bad in [0, 999, 1004, 1005, 1006, 1015, 1016, 2999, 5000, 65535] {
            assert!(!CloseCode::valid_from_peer(bad), "{bad}");
        }
    }
}
