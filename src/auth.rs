//! Access control (pure, no I/O): who a connection is ([`Identity`]), checking JWTs
//! ([`Verifier`]), which channels an identity may subscribe to and whether it may publish
//! ([`Access`]), and the token bucket used for rate limits.
//!
//! Tokens are checked with `jsonwebtoken`. Each configured key fixes its algorithm (HS256 for
//! the shared secret, RS256 or ES256 for a PEM public key), and a token is verified only
//! with the key of the algorithm its header names, so `alg: none` and algorithm confusion
//! (an HS256 token signed with the public key as HMAC secret) are refused. `exp` and `sub`
//! are required; `nbf`, `iss` and `aud` are checked when present or configured.

use std::sync::Arc;
use std::time::{Duration, Instant};

use jsonwebtoken::{decode, decode_header, errors::ErrorKind, Algorithm, DecodingKey, Validation};
use serde::Deserialize;

use crate::engine::channel::{ChannelRule, Resolved};

/// What a connection may do beyond public channels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Subscribes only.
    Subscriber,
    /// May also publish.
    Publisher,
}

/// Who is on a connection.
#[derive(Debug, Clone)]
pub struct Identity {
    /// The token's `sub`, or `None` for an anonymous connection.
    pub user: Option<Arc<str>>,
    /// Publishing rights.
    pub role: Role,
    /// Extra private channels the token grants (`channels` claim patterns).
    pub grants: Vec<ChannelRule>,
    /// Token expiry (seconds since the Unix epoch), if authenticated.
    pub exp: Option<u64>,
    /// A token with `"role":"admin"`: publishes, and may use the server API (presence,
    /// private channel names in `/ws/status`, ...) like an API key.
    pub admin: bool,
}

impl Identity {
    /// An unauthenticated connection.
    pub fn anonymous(role: Role) -> Self {
        Identity {
            user: None,
            role,
            grants: Vec::new(),
            exp: None,
            admin: false,
        }
    }
}

pub use crate::engine::channel::ChannelAccess;

/// Claims quotecast reads from a token; the user and grant claims are looked up by the
/// configured names ([`JwtConfig::user_claim`], [`JwtConfig::grants_claim`]).
#[derive(Debug, Deserialize)]
struct Claims {
    exp: u64,
    #[serde(default)]
    role: Option<String>,
    #[serde(flatten)]
    rest: serde_json::Map<String, serde_json::Value>,
}

/// Why a token was refused: the text is safe to log and to send (it never contains the
/// token).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// Authentication is not configured on this server.
    #[error("token authentication is not configured")]
    NotConfigured,
    /// Past `exp`.
    #[error("token expired")]
    Expired,
    /// Before `nbf`.
    #[error("token not yet valid")]
    NotYetValid,
    /// The header names an algorithm no configured key uses (`none` included).
    #[error("token algorithm not accepted")]
    Algorithm,
    /// The signature does not verify with the configured key.
    #[error("invalid token signature")]
    Signature,
    /// `iss` or `aud` mismatch.
    #[error("token issuer or audience not accepted")]
    IssuerAudience,
    /// A required claim is absent or malformed.
    #[error("token claims invalid: {0}")]
    Claims(String),
    /// Not a JWT at all.
    #[error("malformed token")]
    Malformed,
    /// A different user than the connection's.
    #[error("token is for another user")]
    UserChanged,
}

/// One verification key with its algorithm.
struct Key {
    alg: Algorithm,
    key: DecodingKey,
}

impl std::fmt::Debug for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print key material.
        f.debug_struct("Key")
            .field("alg", &self.alg)
            .finish_non_exhaustive()
    }
}

/// Token verification settings. `Debug` redacts the secret.
#[derive(Clone)]
pub struct JwtConfig {
    /// HS256 shared secret.
    pub hs256_secret: Option<Vec<u8>>,
    /// RS256 public key (PEM).
    pub rs256_public_pem: Option<Vec<u8>>,
    /// ES256 public key (PEM).
    pub es256_public_pem: Option<Vec<u8>>,
    /// Required `iss`, if set.
    pub issuer: Option<String>,
    /// Required `aud`, if set.
    pub audience: Option<String>,
    /// Clock skew allowed on `exp`/`nbf`, seconds. Default 5. A token expired by less than
    /// this is accepted; the connection is then closed (4001) at the next expiry sweep.
    pub leeway_secs: u64,
    /// The claim naming the user: `sub` (default), or e.g. `user_id` for tokens minted like
    /// seeds/001's. A string, or a non-negative integer (taken as its decimal text).
    pub user_claim: String,
    /// The claim holding channel grants (a list of patterns): `channels` by default.
    pub grants_claim: String,
}

/// The default user claim.
pub const DEFAULT_USER_CLAIM: &str = "sub";
/// The default grants claim.
pub const DEFAULT_GRANTS_CLAIM: &str = "channels";

impl Default for JwtConfig {
    fn default() -> Self {
        JwtConfig {
            hs256_secret: None,
            rs256_public_pem: None,
            es256_public_pem: None,
            issuer: None,
            audience: None,
            leeway_secs: 0,
            user_claim: DEFAULT_USER_CLAIM.into(),
            grants_claim: DEFAULT_GRANTS_CLAIM.into(),
        }
    }
}

impl std::fmt::Debug for JwtConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JwtConfig")
            .field(
                "hs256_secret",
                &self.hs256_secret.as_ref().map(|_| "<redacted>"),
            )
            .field("rs256_public_pem", &self.rs256_public_pem.is_some())
            .field("es256_public_pem", &self.es256_public_pem.is_some())
            .field("issuer", &self.issuer)
            .field("audience", &self.audience)
            .field("leeway_secs", &self.leeway_secs)
            .field("user_claim", &self.user_claim)
            .field("grants_claim", &self.grants_claim)
            .finish()
    }
}

/// A bad key in the configuration.
#[derive(Debug, thiserror::Error)]
#[error("invalid {what} key: {why}")]
pub struct KeyError {
    what: &'static str,
    why: String,
}

/// Checks tokens against the configured keys.
#[derive(Debug)]
pub struct Verifier {
    keys: Vec<Key>,
    issuer: Option<String>,
    audience: Option<String>,
    leeway: u64,
    user_claim: String,
    grants_claim: String,
}

impl Verifier {
    /// Builds the key set; fails on an unreadable PEM.
    pub fn new(cfg: &JwtConfig) -> Result<Verifier, KeyError> {
        let mut keys = Vec::new();
        if let Some(s) = &cfg.hs256_secret {
            keys.push(Key {
                alg: Algorithm::HS256,
                key: DecodingKey::from_secret(s),
            });
        }
        if let Some(p) = &cfg.rs256_public_pem {
            let key = DecodingKey::from_rsa_pem(p).map_err(|e| KeyError {
                what: "RS256",
                why: e.to_string(),
            })?;
            keys.push(Key {
                alg: Algorithm::RS256,
                key,
            });
        }
        if let Some(p) = &cfg.es256_public_pem {
            let key = DecodingKey::from_ec_pem(p).map_err(|e| KeyError {
                what: "ES256",
                why: e.to_string(),
            })?;
            keys.push(Key {
                alg: Algorithm::ES256,
                key,
            });
        }
        Ok(Verifier {
            keys,
            issuer: cfg.issuer.clone(),
            audience: cfg.audience.clone(),
            leeway: cfg.leeway_secs,
            user_claim: cfg.user_claim.clone(),
            grants_claim: cfg.grants_claim.clone(),
        })
    }

    /// Whether any key is configured.
    pub fn enabled(&self) -> bool {
        !self.keys.is_empty()
    }

    /// Verifies `token` and returns the identity it proves.
    pub fn verify(&self, token: &str) -> Result<Identity, AuthError> {
        if self.keys.is_empty() {
            return Err(AuthError::NotConfigured);
        }
        // `decode_header` fails on `alg: none` and unknown algorithms.
        let header = decode_header(token).map_err(|e| match e.kind() {
            ErrorKind::InvalidAlgorithm | ErrorKind::InvalidAlgorithmName => AuthError::Algorithm,
            // `alg: none` (or any name jsonwebtoken does not know) fails header parsing; tell
            // that apart from a token that is not a JWT at all.
            _ if header_names_an_alg(token) => AuthError::Algorithm,
            _ => AuthError::Malformed,
        })?;
        let key = self
            .keys
            .iter()
            .find(|k| k.alg == header.alg)
            .ok_or(AuthError::Algorithm)?;
        let mut v = Validation::new(key.alg);
        v.leeway = self.leeway;
        v.validate_nbf = true;
        if self.user_claim == "sub" {
            v.set_required_spec_claims(&["exp", "sub"]);
        } else {
            v.set_required_spec_claims(&["exp"]);
        }
        match &self.audience {
            Some(a) => v.set_audience(&[a]),
            None => v.validate_aud = false,
        }
        if let Some(i) = &self.issuer {
            v.set_issuer(&[i]);
        }
        let data = decode::<Claims>(token, &key.key, &v).map_err(|e| match e.kind() {
            ErrorKind::ExpiredSignature => AuthError::Expired,
            ErrorKind::ImmatureSignature => AuthError::NotYetValid,
            ErrorKind::InvalidSignature => AuthError::Signature,
            ErrorKind::InvalidAlgorithm => AuthError::Algorithm,
            ErrorKind::InvalidIssuer | ErrorKind::InvalidAudience => AuthError::IssuerAudience,
            ErrorKind::MissingRequiredClaim(c) => AuthError::Claims(format!("missing `{c}`")),
            ErrorKind::Json(e) => AuthError::Claims(e.to_string()),
            _ => AuthError::Malformed,
        })?;
        let mut c = data.claims;
        let claim = &self.user_claim;
        let sub = match c.rest.remove(claim) {
            Some(serde_json::Value::String(s)) => s,
            Some(serde_json::Value::Number(n)) if n.is_u64() => n.to_string(),
            Some(_) => {
                return Err(AuthError::Claims(format!(
                    "`{claim}` must be a string or a non-negative integer"
                )))
            }
            None => return Err(AuthError::Claims(format!("missing `{claim}`"))),
        };
        if sub.is_empty()
            || sub.len() > 64
            || !sub
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"_-:@".contains(&b))
        {
            return Err(AuthError::Claims(format!(
                "`{claim}` must be 1-64 characters of A-Z a-z 0-9 _ - : @"
            )));
        }
        let (role, admin) = match c.role.as_deref() {
            None | Some("subscriber") => (Role::Subscriber, false),
            Some("publisher") => (Role::Publisher, false),
            Some("admin") => (Role::Publisher, true),
            Some(_) => {
                return Err(AuthError::Claims(
                    "`role` must be subscriber, publisher or admin".into(),
                ))
            }
        };
        let gclaim = &self.grants_claim;
        let channels: Vec<String> = match c.rest.remove(gclaim) {
            None | Some(serde_json::Value::Null) => Vec::new(),
            Some(v) => serde_json::from_value(v).map_err(|_| {
                AuthError::Claims(format!("`{gclaim}` must be a list of channel patterns"))
            })?,
        };
        if channels.len() > 64 {
            return Err(AuthError::Claims(format!("at most 64 `{gclaim}` grants")));
        }
        let mut grants = Vec::with_capacity(channels.len());
        for g in &channels {
            // `{user}` in a grant is the token's own user, never a wildcard.
            let rule = ChannelRule::grant(g, &sub)
                .map_err(|e| AuthError::Claims(format!("`{gclaim}`: {e}")))?;
            grants.push(rule);
        }
        Ok(Identity {
            user: Some(Arc::from(sub)),
            role,
            grants,
            exp: Some(c.exp),
            admin,
        })
    }
}

/// Whether the token's header is JSON with an `alg` string (known to us or not).
fn header_names_an_alg(token: &str) -> bool {
    use base64::Engine as _;
    let Some(head) = token.split('.').next() else {
        return false;
    };
    let Ok(bytes) =
        base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(head.trim_end_matches('='))
    else {
        return false;
    };
    serde_json::from_slice::<serde_json::Value>(&bytes)
        .is_ok_and(|v| v.get("alg").is_some_and(|a| a.is_string()))
}

/// Why a subscription is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Denied {
    /// Authentication would be needed.
    Unauthenticated,
    /// Authenticated, but not allowed.
    Forbidden,
    /// Authenticated; the namespace's subscribe hook decides (the backend is asked).
    AskBackend,
}

/// Whether `who` may subscribe to `channel` resolved to `r`.
pub fn can_subscribe(who: &Identity, r: &Resolved<'_, '_>, channel: &str) -> Result<(), Denied> {
    let granted = || who.grants.iter().any(|g| g.matches(channel).is_some());
    match r.policy.access {
        ChannelAccess::Public => Ok(()),
        ChannelAccess::Owner => match (&who.user, r.owner) {
            (Some(u), Some(owner)) if **u == *owner => Ok(()),
            (Some(_), _) if granted() => Ok(()),
            (Some(_), _) => Err(Denied::Forbidden),
            (None, _) => Err(Denied::Unauthenticated),
        },
        ChannelAccess::Grant => match &who.user {
            Some(_) if granted() => Ok(()),
            Some(_) => Err(Denied::Forbidden),
            None => Err(Denied::Unauthenticated),
        },
        ChannelAccess::Hook => match &who.user {
            Some(_) if granted() => Ok(()),
            Some(_) => Err(Denied::AskBackend),
            None => Err(Denied::Unauthenticated),
        },
    }
}

/// A token bucket: `rate` tokens per second, at most `burst` saved up.
#[derive(Debug, Clone)]
pub struct TokenBucket {
    rate: f64,
    burst: f64,
    tokens: f64,
    last: Instant,
}

impl TokenBucket {
    /// A full bucket.
    pub fn new(rate: f64, burst: f64, now: Instant) -> Self {
        TokenBucket {
            rate,
            burst,
            tokens: burst,
            last: now,
        }
    }

    /// Takes one token if available.
    pub fn take(&mut self, now: Instant) -> bool {
        let dt = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = now;
        self.tokens = (self.tokens + dt * self.rate).min(self.burst);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    /// When the bucket was last used.
    pub fn last(&self) -> Instant {
        self.last
    }

    /// How long until a token is available.
    pub fn wait(&self) -> Duration {
        if self.tokens >= 1.0 || self.rate <= 0.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64((1.0 - self.tokens) / self.rate)
        }
    }
}

/// Seconds since the Unix epoch.
pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::channel::ChannelRules;
    use jsonwebtoken::{encode, EncodingKey, Header};
    use serde_json::json;

    const SECRET: &[u8] = b"unit-test-secret";

    fn verifier() -> Verifier {
        Verifier::new(&JwtConfig {
            hs256_secret: Some(SECRET.to_vec()),
            leeway_secs: 0,
            ..Default::default()
        })
        .unwrap()
    }

    fn hs(claims: serde_json::Value) -> String {
        encode(
            &Header::new(Algorithm::HS256),
            &claims,
            &EncodingKey::from_secret(SECRET),
        )
        .unwrap()
    }

    #[test]
    fn accepts_a_good_token_and_reads_role_and_grants() {
        let t = hs(
            json!({"sub":"42","exp":unix_now()+60,"role":"publisher","channels":["challenge.7f3a*"]}),
        );
        let id = verifier().verify(&t).unwrap();
        assert_eq!(id.user.as_deref(), Some("42"));
        assert_eq!(id.role, Role::Publisher);
        assert_eq!(id.grants.len(), 1);
    }

    #[test]
    fn refuses_bad_tokens_with_reasons() {
        let v = verifier();
        assert_eq!(
            v.verify(&hs(json!({"sub":"42","exp":unix_now()-10})))
                .unwrap_err(),
            AuthError::Expired
        );
        assert_eq!(
            v.verify(&hs(
                json!({"sub":"42","exp":unix_now()+60,"nbf":unix_now()+30})
            ))
            .unwrap_err(),
            AuthError::NotYetValid
        );
        assert!(matches!(
            v.verify(&hs(json!({"sub":"42"}))).unwrap_err(),
            AuthError::Claims(_)
        ));
        assert!(matches!(
            v.verify(&hs(json!({"exp":unix_now()+60}))).unwrap_err(),
            AuthError::Claims(_)
        ));
        let other = encode(
            &Header::new(Algorithm::HS256),
            &json!({"sub":"42","exp":unix_now()+60}),
            &EncodingKey::from_secret(b"wrong"),
        )
        .unwrap();
        assert_eq!(v.verify(&other).unwrap_err(), AuthError::Signature);
        assert_eq!(v.verify("not.a.jwt").unwrap_err(), AuthError::Malformed);
        // alg: none, hand-made.
        use base64::Engine as _;
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let none = format!(
            "{}.{}.",
            b64.encode(br#"{"alg":"none","typ":"JWT"}"#),
            b64.encode(format!(r#"{{"sub":"42","exp":{}}}"#, unix_now() + 60))
        );
        assert_eq!(v.verify(&none).unwrap_err(), AuthError::Algorithm);
        // HS384 is not a configured algorithm.
        let t = encode(
            &Header::new(Algorithm::HS384),
            &json!({"sub":"42","exp":unix_now()+60}),
            &EncodingKey::from_secret(SECRET),
        )
        .unwrap();
        assert_eq!(v.verify(&t).unwrap_err(), AuthError::Algorithm);
        assert!(matches!(
            v.verify(&hs(json!({"sub":"4 2","exp":unix_now()+60})))
                .unwrap_err(),
            AuthError::Claims(_)
        ));
        assert!(matches!(
            v.verify(&hs(json!({"sub":"42","exp":unix_now()+60,"role":"root"})))
                .unwrap_err(),
            AuthError::Claims(_)
        ));
    }

    #[test]
    fn channel_rules_for_owners_grants_and_anonymous() {
        let rules = ChannelRules::defaults();
        let v = verifier();
        let u42 = v
            .verify(&hs(
                json!({"sub":"42","exp":unix_now()+60,"channels":["challenge.7f3a*"]}),
            ))
            .unwrap();
        let anon = Identity::anonymous(Role::Subscriber);
        let check = |who: &Identity, ch: &str| can_subscribe(who, &rules.resolve(ch).unwrap(), ch);
        assert_eq!(check(&u42, "user.42.orders"), Ok(()));
        assert_eq!(check(&u42, "user.43.orders"), Err(Denied::Forbidden));
        assert_eq!(check(&u42, "user.420.orders"), Err(Denied::Forbidden));
        assert_eq!(check(&u42, "user.4.orders"), Err(Denied::Forbidden));
        assert_eq!(check(&anon, "user.42.orders"), Err(Denied::Unauthenticated));
        assert_eq!(check(&u42, "quotes.AAPL"), Ok(()));
        assert_eq!(check(&anon, "quotes.AAPL"), Ok(()));
        assert_eq!(check(&u42, "challenge.7f3a01"), Ok(()));
        assert_eq!(check(&u42, "challenge.8000"), Err(Denied::Forbidden));
        assert_eq!(
            check(&anon, "challenge.7f3a01"),
            Err(Denied::Unauthenticated)
        );
    }

    #[test]
    fn a_grant_placeholder_is_the_tokens_own_user_never_a_wildcard() {
        let rules = ChannelRules::defaults();
        let v = verifier();
        let u42 = v
            .verify(&hs(
                json!({"sub":"42","exp":unix_now()+60,"channels":["user.{user}.orders","private.{user}"]}),
            ))
            .unwrap();
        let check = |ch: &str| can_subscribe(&u42, &rules.resolve(ch).unwrap(), ch);
        assert_eq!(check("private.42"), Ok(()));
        assert_eq!(check("private.43"), Err(Denied::Forbidden));
        assert_eq!(check("user.43.orders"), Err(Denied::Forbidden));
        // Any other placeholder in a grant is refused with the token.
        assert!(matches!(
            v.verify(&hs(
                json!({"sub":"42","exp":unix_now()+60,"channels":["challenge_{id}"]})
            ))
            .unwrap_err(),
            AuthError::Claims(_)
        ));
    }

    /// Regression: a grant of many `*` made a 128-byte subscribe take ~9 s.
    #[test]
    fn a_grant_with_many_stars_is_checked_in_linear_time() {
        let rules = ChannelRules::defaults();
        let grant = format!("challenge.{}b", "*a".repeat(50));
        let id = verifier()
            .verify(&hs(
                json!({"sub":"42","exp":unix_now()+60,"channels":[grant]}),
            ))
            .unwrap();
        let name = format!("challenge.{}", "a".repeat(118));
        let r = rules.resolve(&name).unwrap();
        assert_eq!(can_subscribe(&id, &r, &name), Err(Denied::Forbidden));
    }

    #[test]
    fn the_user_claim_is_configurable() {
        let v = Verifier::new(&JwtConfig {
            hs256_secret: Some(SECRET.to_vec()),
            user_claim: "user_id".into(),
            grants_claim: "rooms".into(),
            ..Default::default()
        })
        .unwrap();
        let id = v
            .verify(&hs(
                json!({"user_id":42,"exp":unix_now()+60,"rooms":["challenge.7"]}),
            ))
            .unwrap();
        assert_eq!(id.user.as_deref(), Some("42"));
        assert_eq!(id.grants.len(), 1);
        let id = v
            .verify(&hs(
                json!({"user_id":"abc","sub":"other","exp":unix_now()+60}),
            ))
            .unwrap();
        assert_eq!(id.user.as_deref(), Some("abc"));
        assert!(matches!(
            v.verify(&hs(json!({"sub":"42","exp":unix_now()+60}))).unwrap_err(),
            AuthError::Claims(m) if m.contains("user_id")
        ));
        assert!(matches!(
            v.verify(&hs(json!({"user_id":-1,"exp":unix_now()+60})))
                .unwrap_err(),
            AuthError::Claims(_)
        ));
    }

    #[test]
    fn debug_output_never_shows_the_secret() {
        let c = JwtConfig {
            hs256_secret: Some(b"top-secret-value".to_vec()),
            ..Default::default()
        };
        let shown = format!(
            "{c:?} {:?}",
            crate::config::Config {
                access: crate::config::AccessConfig {
                    jwt: c.clone(),
                    ..Default::default()
                },
                ..Default::default()
            }
        );
        assert!(!shown.contains("top-secret-value"), "{shown}");
        assert!(shown.contains("redacted"));
    }

    #[test]
    fn token_bucket_limits_and_refills() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(10.0, 3.0, t0);
        assert!(b.take(t0) && b.take(t0) && b.take(t0));
        assert!(!b.take(t0));
        assert!(b.wait() > Duration::ZERO);
        assert!(b.take(t0 + Duration::from_millis(110)));
        assert!(!b.take(t0 + Duration::from_millis(110)));
    }
}
