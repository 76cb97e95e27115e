//! Pusher's signatures (pure): channel authorization (`key:HMAC(socket_id:channel[:data])`),
//! user authentication (`socket_id::user::user_data`) and the HTTP API's request signature
//! (`auth_signature` = HMAC-SHA256 over `METHOD\nPATH\nsorted query`, with `auth_key`,
//! `auth_timestamp` within 600 s, `auth_version=1.0` and `body_md5`). Every comparison of a
//! signature is constant-time (`ring::hmac::verify`).

use md5::{Digest, Md5};
use ring::hmac;

/// How far an API request's `auth_timestamp` may be from the server's clock (Pusher: 600 s).
pub const MAX_CLOCK_SKEW_SECS: u64 = 600;

/// Lower-case hex of `b`.
pub fn hex(b: &[u8]) -> String {
    const D: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(b.len() * 2);
    for &x in b {
        s.push(D[(x >> 4) as usize] as char);
        s.push(D[(x & 15) as usize] as char);
    }
    s
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    let b = s.as_bytes();
    if !b.len().is_multiple_of(2) {
        return None;
    }
    let v = |c: u8| match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    };
    b.chunks(2)
        .map(|p| Some(v(p[0])? << 4 | v(p[1])?))
        .collect()
}

/// HMAC-SHA256 of `msg` under `secret`, as lower-case hex.
pub fn sign(secret: &str, msg: &str) -> String {
    let key = hmac::Key::new(hmac::HMAC_SHA256, secret.as_bytes());
    hex(hmac::sign(&key, msg.as_bytes()).as_ref())
}

/// Whether `sig_hex` is the HMAC-SHA256 of `msg` under `secret` (constant-time).
pub fn verify(secret: &str, msg: &str, sig_hex: &str) -> bool {
    let Some(sig) = unhex(sig_hex) else {
        return false;
    };
    let key = hmac::Key::new(hmac::HMAC_SHA256, secret.as_bytes());
    hmac::verify(&key, msg.as_bytes(), &sig).is_ok()
}

/// Checks a `key:signature` auth string for `msg`.
fn check_auth(key: &str, secret: &str, msg: &str, auth: &str) -> bool {
    match auth.split_once(':') {
        Some((k, sig)) => {
            // The key is public; the signature is compared in constant time.
            k == key && verify(secret, msg, sig)
        }
        None => false,
    }
}

/// A private or presence subscription's `auth`: signed `socket_id:channel[:channel_data]`.
pub fn channel_auth_ok(
    key: &str,
    secret: &str,
    socket_id: &str,
    channel: &str,
    channel_data: Option<&str>,
    auth: &str,
) -> bool {
    let msg = match channel_data {
        Some(d) => format!("{socket_id}:{channel}:{d}"),
        None => format!("{socket_id}:{channel}"),
    };
    check_auth(key, secret, &msg, auth)
}

/// A `pusher:signin`'s `auth`: signed `socket_id::user::user_data`.
pub fn user_auth_ok(key: &str, secret: &str, socket_id: &str, user_data: &str, auth: &str) -> bool {
    check_auth(
        key,
        secret,
        &format!("{socket_id}::user::{user_data}"),
        auth,
    )
}

/// Why an API request's signature was refused (HTTP 401, the text as the body).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ApiAuthError {
    /// A required parameter is absent.
    #[error("Missing parameter: {0}")]
    Missing(&'static str),
    /// `auth_key` names another app.
    #[error("Unknown auth_key")]
    UnknownKey,
    /// `auth_version` is not 1.0.
    #[error("Unsupported auth_version (only 1.0 is supported)")]
    Version,
    /// `auth_timestamp` is too far from now.
    #[error("Timestamp expired: Given timestamp ({given}) not within 600s of server time ({now})")]
    Stale {
        /// The request's timestamp.
        given: String,
        /// The server's.
        now: u64,
    },
    /// `body_md5` does not match the body.
    #[error("Invalid body_md5: the MD5 of the request body does not match")]
    BodyMd5,
    /// The signature does not match.
    #[error("Invalid signature: you should have sent HmacSHA256Hex({0:?}, your_secret)")]
    Signature(String),
}

/// Verifies an API request. `query` is the decoded query string's pairs (keys as sent);
/// `body` is the request body (empty for GET).
pub fn verify_api(
    key: &str,
    secret: &str,
    method: &str,
    path: &str,
    query: &[(String, String)],
    body: &[u8],
    now_secs: u64,
) -> Result<(), ApiAuthError> {
    let get = |k: &str| query.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
    let auth_key = get("auth_key").ok_or(ApiAuthError::Missing("auth_key"))?;
    let ts = get("auth_timestamp").ok_or(ApiAuthError::Missing("auth_timestamp"))?;
    let version = get("auth_version").ok_or(ApiAuthError::Missing("auth_version"))?;
    let sig = get("auth_signature").ok_or(ApiAuthError::Missing("auth_signature"))?;
    if auth_key != key {
        return Err(ApiAuthError::UnknownKey);
    }
    if version != "1.0" {
        return Err(ApiAuthError::Version);
    }
    let fresh = ts
        .parse::<u64>()
        .is_ok_and(|t| t.abs_diff(now_secs) <= MAX_CLOCK_SKEW_SECS);
    if !fresh {
        return Err(ApiAuthError::Stale {
            given: ts.chars().take(20).collect(),
            now: now_secs,
        });
    }
    if !body.is_empty() || get("body_md5").is_some() {
        let md5 = hex(&Md5::digest(body));
        let sent = get("body_md5").ok_or(ApiAuthError::Missing("body_md5"))?;
        if sent != md5 {
            return Err(ApiAuthError::BodyMd5);
        }
    }
    let mut pairs: Vec<(String, &str)> = query
        .iter()
        .filter(|(k, _)| k != "auth_signature")
        .map(|(k, v)| (k.to_ascii_lowercase(), v.as_str()))
        .collect();
    pairs.sort();
    let q: Vec<String> = pairs.iter().map(|(k, v)| format!("{k}={v}")).collect();
    let to_sign = format!("{method}\n{path}\n{}", q.join("&"));
    if verify(secret, &to_sign, sig) {
        Ok(())
    } else {
        Err(ApiAuthError::Signature(to_sign))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The worked example of Pusher's channel authorization docs.
    #[test]
    fn pusher_docs_channel_auth_example() {
        let secret = "7ad3773142a6692b25b8";
        let sig = sign(secret, "1234.1234:private-foobar");
        assert_eq!(
            sig,
            "58df8b0c36d6982b82c3ecf6b4662e34fe8c25bba48f5369f135bf843651c3a4"
        );
        let auth = format!("278d425bdf160c739803:{sig}");
        assert!(channel_auth_ok(
            "278d425bdf160c739803",
            secret,
            "1234.1234",
            "private-foobar",
            None,
            &auth
        ));
        // Another socket's signature, another key, a broken hex: refused.
        assert!(!channel_auth_ok(
            "278d425bdf160c739803",
            secret,
            "1234.1235",
            "private-foobar",
            None,
            &auth
        ));
        assert!(!channel_auth_ok(
            "other",
            secret,
            "1234.1234",
            "private-foobar",
            None,
            &auth
        ));
        assert!(!channel_auth_ok(
            "278d425bdf160c739803",
            secret,
            "1234.1234",
            "private-foobar",
            None,
            "278d425bdf160c739803:zz"
        ));
    }

    fn signed(method: &str, path: &str, body: &[u8], ts: u64) -> Vec<(String, String)> {
        let mut q = vec![
            ("auth_key".to_string(), "key".to_string()),
            ("auth_timestamp".to_string(), ts.to_string()),
            ("auth_version".to_string(), "1.0".to_string()),
        ];
        if !body.is_empty() {
            q.push(("body_md5".into(), hex(&Md5::digest(body))));
        }
        let mut sorted = q.clone();
        sorted.sort();
        let qs: Vec<String> = sorted.iter().map(|(k, v)| format!("{k}={v}")).collect();
        let sig = sign("secret12", &format!("{method}\n{path}\n{}", qs.join("&")));
        q.push(("auth_signature".into(), sig));
        q
    }

    #[test]
    fn api_requests_are_checked_as_pusher_checks_them() {
        let body = br#"{"name":"e","channels":["c"],"data":"{}"}"#;
        let q = signed("POST", "/apps/1/events", body, 1000);
        let v = |q: &[(String, String)], b: &[u8], now| {
            verify_api("key", "secret12", "POST", "/apps/1/events", q, b, now)
        };
        assert_eq!(v(&q, body, 1000), Ok(()));
        assert_eq!(v(&q, body, 1600), Ok(()));
        assert!(matches!(v(&q, body, 1601), Err(ApiAuthError::Stale { .. })));
        assert_eq!(v(&q, b"{}", 1000), Err(ApiAuthError::BodyMd5));
        let mut bad = q.clone();
        bad.last_mut().unwrap().1 = sign("wrong-secret", "x");
        assert!(matches!(
            v(&bad, body, 1000),
            Err(ApiAuthError::Signature(_))
        ));
        let unsigned: Vec<_> = q
            .iter()
            .filter(|(k, _)| k != "auth_signature")
            .cloned()
            .collect();
        assert_eq!(
            v(&unsigned, body, 1000),
            Err(ApiAuthError::Missing("auth_signature"))
        );
    }
}
