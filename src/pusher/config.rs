//! Pusher applications as configured (`[[pusher.apps]]` in the TOML file): the raw serde
//! form and the validated [`PusherApp`] the server uses. Secrets come from the environment
//! or a file, never from the TOML text itself.

use std::path::PathBuf;
use std::sync::Arc;

use serde::Deserialize;

/// `[pusher]`: the Pusher-compatible endpoint (`/app/{key}`, `/apps/{id}/...`).
#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RawPusher {
    /// `[[pusher.apps]]`.
    pub apps: Vec<RawApp>,
}

/// One `[[pusher.apps]]` entry.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawApp {
    /// `id`: the app id of the HTTP API path (`/apps/{id}/events`).
    pub id: String,
    /// `key`: the public key clients connect with (`/app/{key}`).
    pub key: String,
    /// `secret_env`: the environment variable holding the secret.
    #[serde(default)]
    pub secret_env: Option<String>,
    /// `secret_file`: a file holding the secret (trailing whitespace ignored).
    #[serde(default)]
    pub secret_file: Option<PathBuf>,
    /// `enabled`, default true. A disabled app refuses connections (4003) and API calls.
    #[serde(default = "yes")]
    pub enabled: bool,
    /// `client_events`, default false: whether `client-*` events are relayed.
    #[serde(default)]
    pub client_events: bool,
    /// `namespace`, default empty: the app's channels are `namespace:name` in the engine
    /// (what `/ws` clients and `POST /api/publish` use). At most one app may have none.
    #[serde(default)]
    pub namespace: String,
    /// `max_connections`, default 0 (no limit beyond the server's).
    #[serde(default)]
    pub max_connections: usize,
    /// `max_event_bytes`, default 10240 (Pusher's 10 KB): largest `data` of one event.
    #[serde(default = "default_event_bytes")]
    pub max_event_bytes: usize,
    /// `max_channels_per_event`, default 100.
    #[serde(default = "default_channels")]
    pub max_channels_per_event: usize,
    /// `max_batch_events`, default 10.
    #[serde(default = "default_batch")]
    pub max_batch_events: usize,
    /// `max_presence_members`, default 100.
    #[serde(default = "default_members")]
    pub max_presence_members: usize,
    /// `client_events_per_sec`, default 10 (Pusher's limit per connection).
    #[serde(default = "default_client_rate")]
    pub client_events_per_sec: f64,
    /// `[[pusher.apps.webhooks]]`: where the app's webhooks go (default none).
    #[serde(default)]
    pub webhooks: Vec<RawWebhook>,
}

/// One `[[pusher.apps.webhooks]]` entry.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawWebhook {
    /// `url`: `http://host:port/path` (plain HTTP: put the receiver on the private network).
    pub url: String,
    /// `event_types`: the events sent to this URL; default all of [`WEBHOOK_EVENTS`].
    #[serde(default)]
    pub event_types: Option<Vec<String>>,
}

/// The webhook events quotecast sends, by Pusher's names.
pub const WEBHOOK_EVENTS: [&str; 5] = [
    "channel_occupied",
    "channel_vacated",
    "member_added",
    "member_removed",
    "client_event",
];

/// A validated webhook target.
#[derive(Debug, Clone, PartialEq)]
pub struct Webhook {
    /// `http://...` URL the batches are POSTed to.
    pub url: String,
    /// The events this URL receives (Pusher names, a subset of [`WEBHOOK_EVENTS`]).
    pub events: Vec<&'static str>,
}

impl Webhook {
    /// Whether this target receives events named `name`.
    pub fn wants(&self, name: &str) -> bool {
        self.events.contains(&name)
    }
}

fn yes() -> bool {
    true
}
fn default_event_bytes() -> usize {
    10 * 1024
}
fn default_channels() -> usize {
    100
}
fn default_batch() -> usize {
    10
}
fn default_members() -> usize {
    100
}
fn default_client_rate() -> f64 {
    10.0
}

/// A validated Pusher application.
#[derive(Clone, PartialEq)]
pub struct PusherApp {
    /// App id (HTTP API path).
    pub id: String,
    /// Public key (WebSocket path, `auth_key`, channel auth signatures' prefix).
    pub key: String,
    /// Secret: signs channel auth, user auth and API requests.
    pub secret: Arc<str>,
    /// Refuses everything when false.
    pub enabled: bool,
    /// Relays `client-*` events on private and presence channels.
    pub client_events: bool,
    /// Engine channel prefix (`namespace:`), or empty.
    pub namespace: String,
    /// Connections allowed at once (0: no app limit).
    pub max_connections: usize,
    /// Largest event `data`, bytes.
    pub max_event_bytes: usize,
    /// Channels one API event may name.
    pub max_channels_per_event: usize,
    /// Events one batch may carry.
    pub max_batch_events: usize,
    /// Members one presence channel may hold.
    pub max_presence_members: usize,
    /// Client events per second per connection (burst: one second's worth).
    pub client_events_per_sec: f64,
    /// Webhook targets (empty: no webhooks).
    pub webhooks: Vec<Webhook>,
}

impl std::fmt::Debug for PusherApp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the secret.
        f.debug_struct("PusherApp")
            .field("id", &self.id)
            .field("key", &self.key)
            .field("enabled", &self.enabled)
            .field("namespace", &self.namespace)
            .finish_non_exhaustive()
    }
}

impl PusherApp {
    /// The engine channel of a Pusher channel name of this app.
    pub fn engine_channel(&self, name: &str) -> String {
        if self.namespace.is_empty() {
            name.to_string()
        } else {
            format!("{}:{name}", self.namespace)
        }
    }

    /// An app for tests and the demo, with Pusher's default limits.
    pub fn new(id: &str, key: &str, secret: &str) -> PusherApp {
        PusherApp {
            id: id.into(),
            key: key.into(),
            secret: Arc::from(secret),
            enabled: true,
            client_events: true,
            namespace: String::new(),
            max_connections: 0,
            max_event_bytes: default_event_bytes(),
            max_channels_per_event: default_channels(),
            max_batch_events: default_batch(),
            max_presence_members: default_members(),
            client_events_per_sec: default_client_rate(),
            webhooks: Vec::new(),
        }
    }

    /// Whether some webhook target of this app receives events named `name`.
    pub fn wants_webhook(&self, name: &str) -> bool {
        self.webhooks.iter().any(|w| w.wants(name))
    }
}

fn token_ok(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

impl RawPusher {
    /// Validates the apps and reads their secrets; `Err((key, reason))`.
    pub fn into_apps(self) -> Result<Vec<PusherApp>, (String, String)> {
        let mut apps: Vec<PusherApp> = Vec::with_capacity(self.apps.len());
        for (i, a) in self.apps.into_iter().enumerate() {
            let at = |f: &str| format!("pusher.apps[{i}].{f}");
            if !token_ok(&a.id) {
                return Err((at("id"), "1-64 characters of A-Z a-z 0-9 - _".into()));
            }
            if !token_ok(&a.key) {
                return Err((at("key"), "1-64 characters of A-Z a-z 0-9 - _".into()));
            }
            if !a.namespace.is_empty() && !token_ok(&a.namespace) {
                return Err((at("namespace"), "1-64 characters of A-Z a-z 0-9 - _".into()));
            }
            let secret = match (&a.secret_env, &a.secret_file) {
                (Some(var), None) => std::env::var(var).map_err(|_| {
                    (
                        at("secret_env"),
                        format!("environment variable {var} is not set"),
                    )
                })?,
                (None, Some(p)) => std::fs::read_to_string(p)
                    .map_err(|e| {
                        (
                            at("secret_file"),
                            format!("cannot read {}: {e}", p.display()),
                        )
                    })?
                    .trim_end()
                    .to_string(),
                _ => {
                    return Err((
                        at("secret_env"),
                        "set exactly one of secret_env and secret_file".into(),
                    ))
                }
            };
            if secret.len() < 8 {
                return Err((
                    at("secret_env"),
                    "the secret must have at least 8 bytes".into(),
                ));
            }
            if a.max_event_bytes == 0 || a.max_channels_per_event == 0 || a.max_batch_events == 0 {
                return Err((at("max_event_bytes"), "limits must be at least 1".into()));
            }
            if a.client_events_per_sec.is_nan() || a.client_events_per_sec <= 0.0 {
                return Err((at("client_events_per_sec"), "must be above 0".into()));
            }
            let mut webhooks = Vec::with_capacity(a.webhooks.len());
            for (j, w) in a.webhooks.iter().enumerate() {
                let at = |f: &str| format!("pusher.apps[{i}].webhooks[{j}].{f}");
                let ok = w
                    .url
                    .strip_prefix("http://")
                    .is_some_and(|r| !r.is_empty() && !r.starts_with('/'));
                if !ok {
                    return Err((
                        at("url"),
                        "an http://host:port/path URL (https is not supported: use a local proxy)"
                            .into(),
                    ));
                }
                let events = match &w.event_types {
                    None => WEBHOOK_EVENTS.to_vec(),
                    Some(names) => {
                        let mut v = Vec::with_capacity(names.len());
                        for n in names {
                            match WEBHOOK_EVENTS.iter().find(|e| **e == n.as_str()) {
                                Some(e) => v.push(*e),
                                None => {
                                    return Err((
                                        at("event_types"),
                                        format!(
                                            "unknown event {n:?}; known: {}",
                                            WEBHOOK_EVENTS.join(", ")
                                        ),
                                    ))
                                }
                            }
                        }
                        v
                    }
                };
                webhooks.push(Webhook {
                    url: w.url.clone(),
                    events,
                });
            }
            for b in &apps {
                if b.id == a.id || b.key == a.key {
                    return Err((at("id"), "app ids and keys must be unique".into()));
                }
                if b.namespace == a.namespace {
                    return Err((at("namespace"), "app namespaces must be unique".into()));
                }
            }
            apps.push(PusherApp {
                id: a.id,
                key: a.key,
                secret: Arc::from(secret),
                enabled: a.enabled,
                client_events: a.client_events,
                namespace: a.namespace,
                max_connections: a.max_connections,
                max_event_bytes: a.max_event_bytes,
                max_channels_per_event: a.max_channels_per_event,
                max_batch_events: a.max_batch_events,
                max_presence_members: a.max_presence_members.max(1),
                client_events_per_sec: a.client_events_per_sec,
                webhooks,
            });
        }
        Ok(apps)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn apps_read_secrets_and_refuse_duplicates() {
        std::env::set_var("QC_TEST_PUSHER_SECRET", "s3cret-value");
        let raw: RawPusher = toml::from_str(
            r#"
            [[apps]]
            id = "1"
            key = "k1"
            secret_env = "QC_TEST_PUSHER_SECRET"
            client_events = true
            [[apps]]
            id = "2"
            key = "k2"
            secret_env = "QC_TEST_PUSHER_SECRET"
            namespace = "two"
            "#,
        )
        .unwrap();
        let apps = raw.clone().into_apps().unwrap();
        assert_eq!(&*apps[0].secret, "s3cret-value");
        assert_eq!(apps[1].engine_channel("orders"), "two:orders");
        assert_eq!(apps[0].engine_channel("orders"), "orders");
        assert_eq!(apps[0].max_event_bytes, 10240);
        assert!(!format!("{:?}", apps[0]).contains("s3cret"));
        let mut dup = raw.clone();
        dup.apps[1].namespace = String::new();
        assert!(dup.into_apps().unwrap_err().0.ends_with("namespace"));
        let mut nosecret = raw.clone();
        nosecret.apps[0].secret_env = Some("QC_TEST_PUSHER_UNSET".into());
        assert!(nosecret.into_apps().is_err());
        let mut hooked = raw;
        hooked.apps[0].webhooks = vec![
            RawWebhook {
                url: "http://127.0.0.1:9/hooks".into(),
                event_types: None,
            },
            RawWebhook {
                url: "http://backend/presence".into(),
                event_types: Some(vec!["member_added".into()]),
            },
        ];
        let apps = hooked.clone().into_apps().unwrap();
        assert_eq!(apps[0].webhooks[0].events.len(), 5);
        assert!(apps[0].wants_webhook("client_event"));
        assert!(!apps[0].webhooks[1].wants("member_removed"));
        assert!(!apps[1].wants_webhook("channel_occupied"));
        let mut bad = hooked.clone();
        bad.apps[0].webhooks[1].event_types = Some(vec!["channel_exploded".into()]);
        assert!(bad.into_apps().unwrap_err().0.ends_with("event_types"));
        let mut tls = hooked;
        tls.apps[0].webhooks[0].url = "https://example.com/".into();
        assert!(tls.into_apps().unwrap_err().0.ends_with("url"));
    }
}
