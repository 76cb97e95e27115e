//! What the Pusher endpoint keeps across shards (server layer): the configured apps, each
//! app's open connections, the Pusher subscriptions per channel (for the HTTP API's channel
//! queries), presence members (one entry per user, counting that user's connections) and
//! signed-in users' connections (`terminate_connections`). One mutex, taken on connect,
//! subscribe, unsubscribe, close and API queries: never on the publish → socket path.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};

use bytes::Bytes;

use super::config::PusherApp;
use super::webhook::Webhooks;
use crate::engine::shard::AckHook;
use crate::protocol::pusher::{self as wire, client_channel};
use crate::protocol::Format;

/// One presence member: its `user_info` (JSON text) and how many of the user's connections
/// are subscribed.
#[derive(Debug)]
struct Member {
    info: Option<String>,
    conns: u32,
}

/// A channel with Pusher subscribers.
#[derive(Debug, Default)]
struct Chan {
    app: usize,
    subs: u32,
    members: BTreeMap<String, Member>,
}

#[derive(Debug, Default)]
struct State {
    /// Open connections per app.
    conns: Vec<usize>,
    /// By engine channel name.
    channels: HashMap<Arc<str>, Chan>,
    /// Signed-in connections per `(app, user id)`: `(shard, connection)`.
    users: HashMap<(usize, String), Vec<(usize, u64)>>,
}

/// Why a presence member was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MembersFull;

/// A channel as the HTTP API reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChannelInfo {
    /// Pusher name.
    pub name: String,
    /// Pusher subscriptions.
    pub subscription_count: u32,
    /// Presence members (distinct users).
    pub user_count: u32,
}

/// The Pusher endpoint's shared state.
#[derive(Debug)]
pub struct Registry {
    /// The configured apps, in file order.
    pub apps: Vec<PusherApp>,
    /// The webhook queue (occupied/vacated/member events are queued under the lock, so
    /// they leave in the order the node saw them, across shards).
    pub webhooks: Webhooks,
    state: Mutex<State>,
}

impl Registry {
    /// A registry for `apps`.
    pub fn new(apps: Vec<PusherApp>) -> Registry {
        let n = apps.len();
        Registry {
            webhooks: Webhooks::start(&apps),
            apps,
            state: Mutex::new(State {
                conns: vec![0; n],
                ..State::default()
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock leaves counts that are still usable.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The app whose public key is `key`.
    pub fn by_key(&self, key: &str) -> Option<(usize, &PusherApp)> {
        self.apps.iter().enumerate().find(|(_, a)| a.key == key)
    }

    /// The app whose id is `id`.
    pub fn by_id(&self, id: &str) -> Option<(usize, &PusherApp)> {
        self.apps.iter().enumerate().find(|(_, a)| a.id == id)
    }

    /// Whether `engine_channel` belongs to a Pusher app and is private, presence or
    /// server-to-user there: such a channel is never served to a `/ws` client.
    pub fn is_pusher_private(&self, engine_channel: &str) -> bool {
        let name = match engine_channel.split_once(':') {
            Some((ns, name)) if self.apps.iter().any(|a| a.namespace == ns) => name,
            Some(_) => return false,
            None if self.apps.iter().any(|a| a.namespace.is_empty()) => engine_channel,
            None => return false,
        };
        name.starts_with("private-") || name.starts_with("presence-") || name.starts_with('#')
    }

    /// Takes a connection slot of app `app`; false when over its quota.
    pub fn connect(&self, app: usize) -> bool {
        let max = self.apps[app].max_connections;
        let mut st = self.lock();
        if max > 0 && st.conns[app] >= max {
            return false;
        }
        st.conns[app] += 1;
        true
    }

    /// Gives a connection slot back.
    pub fn disconnect(&self, app: usize) {
        let mut st = self.lock();
        st.conns[app] = st.conns[app].saturating_sub(1);
    }

    /// Open connections of `app`.
    pub fn connections(&self, app: usize) -> usize {
        self.lock().conns[app]
    }

    /// Queues webhook `name` of `app` if one of its URLs wants it (`make` builds the event).
    fn hook(&self, app: usize, name: &'static str, make: impl FnOnce() -> serde_json::Value) {
        if self.apps[app].wants_webhook(name) {
            self.webhooks.emit(app, name, make());
        }
    }

    /// A new Pusher subscription to `channel`; `new_member` is the user whose first
    /// connection joined this presence channel with it ([`Registry::join`] returned true).
    /// Webhooks: `channel_occupied` when it is the node's first subscription to the channel
    /// (whatever the shard), then `member_added`.
    pub fn subscribed(&self, app: usize, channel: &Arc<str>, new_member: Option<&str>) {
        let mut st = self.lock();
        let c = st.channels.entry(channel.clone()).or_default();
        c.app = app;
        c.subs += 1;
        let name = client_channel(channel);
        if c.subs == 1 {
            self.hook(
                app,
                "channel_occupied",
                || serde_json::json!({"name": "channel_occupied", "channel": name}),
            );
        }
        if let Some(user) = new_member {
            self.hook(
                app,
                "member_added",
                || serde_json::json!({"name": "member_added", "channel": name, "user_id": user}),
            );
        }
    }

    /// A Pusher subscription to `channel` ended (webhook `channel_vacated` when it was the
    /// node's last).
    pub fn unsubscribed(&self, channel: &str) {
        let mut st = self.lock();
        if let Some(c) = st.channels.get_mut(channel) {
            if c.subs == 1 {
                let name = client_channel(channel);
                self.hook(
                    c.app,
                    "channel_vacated",
                    || serde_json::json!({"name": "channel_vacated", "channel": name}),
                );
            }
            c.subs = c.subs.saturating_sub(1);
            if c.subs == 0 && c.members.is_empty() {
                st.channels.remove(channel);
            }
        }
    }

    /// Webhook `client_event` for a client event relayed on `channel` (engine name).
    pub fn client_event(
        &self,
        app: usize,
        channel: &str,
        event: &str,
        data: &str,
        socket_id: &str,
        user_id: Option<&str>,
    ) {
        self.hook(app, "client_event", || {
            // Pusher gives `data` as a string: a JSON string's text, or the JSON itself.
            let data = match serde_json::from_str::<serde_json::Value>(data) {
                Ok(serde_json::Value::String(s)) => s,
                _ => data.to_string(),
            };
            let mut ev = serde_json::json!({
                "name": "client_event",
                "channel": client_channel(channel),
                "event": event,
                "data": data,
                "socket_id": socket_id,
            });
            if let Some(u) = user_id {
                ev["user_id"] = serde_json::Value::String(u.to_string());
            }
            ev
        });
    }

    /// Adds a connection of `user` to presence `channel`; true when it is the user's first
    /// (so `member_added` is due).
    pub fn join(
        &self,
        app: usize,
        channel: &Arc<str>,
        user: &str,
        info: Option<String>,
        max: usize,
    ) -> Result<bool, MembersFull> {
        let mut st = self.lock();
        let c = st.channels.entry(channel.clone()).or_default();
        c.app = app;
        if let Some(m) = c.members.get_mut(user) {
            m.conns += 1;
            return Ok(false);
        }
        if c.members.len() >= max {
            return Err(MembersFull);
        }
        c.members
            .insert(user.to_string(), Member { info, conns: 1 });
        Ok(true)
    }

    /// Removes a connection of `user` from presence `channel`; true when it was the user's
    /// last (so `member_removed` is due).
    pub fn leave(&self, channel: &str, user: &str) -> bool {
        let mut st = self.lock();
        let Some(c) = st.channels.get_mut(channel) else {
            return false;
        };
        let last = match c.members.get_mut(user) {
            Some(m) if m.conns > 1 => {
                m.conns -= 1;
                false
            }
            Some(_) => {
                c.members.remove(user);
                let name = client_channel(channel);
                self.hook(c.app, "member_removed", || {
                    serde_json::json!({"name": "member_removed", "channel": name, "user_id": user})
                });
                true
            }
            None => false,
        };
        if c.subs == 0 && c.members.is_empty() {
            st.channels.remove(channel);
        }
        last
    }

    /// The `presence` object of a subscription ack: `{"presence":{"ids","hash","count"}}`.
    pub fn presence_json(&self, channel: &str) -> String {
        let st = self.lock();
        let mut ids = Vec::new();
        let mut hash = serde_json::Map::new();
        if let Some(c) = st.channels.get(channel) {
            for (id, m) in &c.members {
                ids.push(serde_json::Value::String(id.clone()));
                let info = m
                    .info
                    .as_deref()
                    .and_then(|i| serde_json::from_str(i).ok())
                    .unwrap_or(serde_json::Value::Null);
                hash.insert(id.clone(), info);
            }
        }
        let count = ids.len();
        serde_json::json!({"presence": {"ids": ids, "hash": hash, "count": count}}).to_string()
    }

    /// Occupied channels of `app` whose Pusher name starts with `prefix`.
    pub fn channels(&self, app: usize, prefix: &str) -> Vec<ChannelInfo> {
        let st = self.lock();
        let mut v: Vec<ChannelInfo> = st
            .channels
            .iter()
            .filter(|(_, c)| c.app == app && c.subs > 0)
            .map(|(n, c)| ChannelInfo {
                name: client_channel(n).to_string(),
                subscription_count: c.subs,
                user_count: c.members.len() as u32,
            })
            .filter(|c| c.name.starts_with(prefix))
            .collect();
        v.sort_by(|a, b| a.name.cmp(&b.name));
        v
    }

    /// One channel of `app` (by engine name); zero counts when unoccupied.
    pub fn channel(&self, engine_channel: &str) -> ChannelInfo {
        let st = self.lock();
        let c = st.channels.get(engine_channel);
        ChannelInfo {
            name: client_channel(engine_channel).to_string(),
            subscription_count: c.map_or(0, |c| c.subs),
            user_count: c.map_or(0, |c| c.members.len() as u32),
        }
    }

    /// The user ids present on a presence channel.
    pub fn users(&self, engine_channel: &str) -> Vec<String> {
        let st = self.lock();
        st.channels
            .get(engine_channel)
            .map(|c| c.members.keys().cloned().collect())
            .unwrap_or_default()
    }

    /// A connection signed in as `user`.
    pub fn signed_in(&self, app: usize, user: &str, shard: usize, conn: u64) {
        let mut st = self.lock();
        st.users
            .entry((app, user.to_string()))
            .or_default()
            .push((shard, conn));
    }

    /// A signed-in connection closed.
    pub fn signed_out(&self, app: usize, user: &str, conn: u64) {
        let mut st = self.lock();
        let key = (app, user.to_string());
        if let Some(v) = st.users.get_mut(&key) {
            v.retain(|&(_, c)| c != conn);
            if v.is_empty() {
                st.users.remove(&key);
            }
        }
    }

    /// The connections signed in as `user`.
    pub fn user_conns(&self, app: usize, user: &str) -> Vec<(usize, u64)> {
        self.lock()
            .users
            .get(&(app, user.to_string()))
            .cloned()
            .unwrap_or_default()
    }
}

impl AckHook for Registry {
    /// A Pusher presence subscription is acknowledged with the members as they are when
    /// the home shard has answered (members who join later come as `member_added` events,
    /// which the engine orders after this ack).
    fn subscribed(&self, format: Format, _conn: u64, channel: &str) -> Option<Bytes> {
        if format != Format::Pusher {
            return None;
        }
        let name = client_channel(channel);
        if !name.starts_with("presence-") {
            return None;
        }
        let data = self.presence_json(channel);
        Some(wire::message_str(
            "pusher_internal:subscription_succeeded",
            Some(name),
            data.as_bytes(),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn members_are_counted_per_user_and_bounded() {
        let r = Registry::new(vec![PusherApp::new("1", "k", "secret12")]);
        let ch: Arc<str> = Arc::from("presence-room");
        assert_eq!(r.join(0, &ch, "u1", Some(r#"{"n":1}"#.into()), 2), Ok(true));
        assert_eq!(r.join(0, &ch, "u1", None, 2), Ok(false), "a second tab");
        assert_eq!(r.join(0, &ch, "u2", None, 2), Ok(true));
        assert_eq!(r.join(0, &ch, "u3", None, 2), Err(MembersFull));
        let v: serde_json::Value = serde_json::from_str(&r.presence_json(&ch)).unwrap();
        assert_eq!(v["presence"]["count"], 2);
        assert_eq!(v["presence"]["hash"]["u1"]["n"], 1);
        assert!(!r.leave(&ch, "u1"), "one tab left");
        assert!(r.leave(&ch, "u1"));
        assert_eq!(r.users(&ch), ["u2"]);
    }

    #[test]
    fn pusher_private_names_are_recognised_per_namespace() {
        let mut b = PusherApp::new("2", "k2", "secret12");
        b.namespace = "b".into();
        let r = Registry::new(vec![PusherApp::new("1", "k", "secret12"), b]);
        assert!(r.is_pusher_private("private-App.Models.User.1"));
        assert!(r.is_pusher_private("presence-room"));
        assert!(r.is_pusher_private("b:private-x"));
        assert!(!r.is_pusher_private("orders"));
        assert!(!r.is_pusher_private("other:private-x"));
        let none = Registry::new(vec![]);
        assert!(!none.is_pusher_private("private-x"));
    }
}
