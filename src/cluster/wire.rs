//! What cluster nodes write to and read from Redis: key names, the pub/sub message of one
//! sequenced event, and the Lua scripts that sequence, sync and count. Pure, no I/O.
//!
//! Keys (with the configured prefix `P`):
//! - `P:{C}:m` hash `e` (the channel's epoch), `s` (its last sequence number) and `r` (the
//!   `run_id` of the Redis process that last wrote them, see [`PUBLISH`]);
//! - `P:{C}:x` stream of the channel's last `history` events, entry id `<seq>-0`, fields
//!   `e` (event name), `t` (publish time, ns) and `d` (the JSON data);
//! - `P:ev:C` the pub/sub channel carrying each sequenced event to the nodes;
//! - `P:idem:K` the seqs (comma-separated) of the publish with idempotency key K, expiring
//!   after `idempotency_window_secs`;
//! - `P:nodes` sorted set of live nodes scored by when their presence expires (ms);
//! - `P:node:N:users` / `P:node:N:subs` hashes: node N's connections per user and
//!   subscribers per channel, expiring with the node.
//!
//! The channel name sits in braces so a channel's two keys share a Redis Cluster hash slot.

use std::sync::Arc;

use bytes::Bytes;
use redis::Value;

pub use crate::engine::port::RawEvent;

/// Key and pub/sub names under one prefix.
#[derive(Debug, Clone)]
pub struct Keys {
    prefix: String,
}

impl Keys {
    /// Names under `prefix`.
    pub fn new(prefix: &str) -> Keys {
        Keys {
            prefix: prefix.to_string(),
        }
    }

    /// The prefix.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The channel's epoch/sequence hash.
    pub fn meta(&self, channel: &str) -> String {
        format!("{}:{{{channel}}}:m", self.prefix)
    }

    /// The channel's history stream.
    pub fn stream(&self, channel: &str) -> String {
        format!("{}:{{{channel}}}:x", self.prefix)
    }

    /// The channel's pub/sub name.
    pub fn pubsub(&self, channel: &str) -> String {
        format!("{}:ev:{channel}", self.prefix)
    }

    /// The channel a pub/sub name belongs to, if it is one of ours.
    pub fn channel_of<'a>(&self, pubsub: &'a str) -> Option<&'a str> {
        pubsub
            .strip_prefix(self.prefix.as_str())?
            .strip_prefix(":ev:")
    }

    /// What Redis remembers of a publish with idempotency key `key`: its seqs.
    pub fn idempotency(&self, key: &str) -> String {
        format!("{}:idem:{key}", self.prefix)
    }

    /// The live-node set.
    pub fn nodes(&self) -> String {
        format!("{}:nodes", self.prefix)
    }

    /// A node's connections-per-user hash.
    pub fn users(&self, node: &str) -> String {
        format!("{}:node:{node}:users", self.prefix)
    }

    /// A node's subscribers-per-channel hash.
    pub fn subs(&self, node: &str) -> String {
        format!("{}:node:{node}:subs", self.prefix)
    }
}

/// Parses a pub/sub message written by [`PUBLISH`]: `EPOCH SEQ TS EVENT\nDATA`.
pub fn parse_message(channel: &Arc<str>, payload: Bytes) -> Option<RawEvent> {
    let nl = payload.iter().position(|&b| b == b'\n')?;
    let head = std::str::from_utf8(&payload[..nl]).ok()?;
    let mut it = head.split(' ');
    let epoch = it.next().filter(|e| !e.is_empty())?;
    let seq = it.next()?.parse().ok()?;
    let ts = it.next()?.parse().ok()?;
    let event = it.next().filter(|e| !e.is_empty())?;
    if it.next().is_some() {
        return None;
    }
    Some(RawEvent {
        channel: channel.clone(),
        epoch: Arc::from(epoch),
        seq,
        ts,
        event: event.into(),
        data: payload.slice(nl + 1..),
    })
}

/// Sequences a batch of events atomically: for each, takes the channel's next sequence
/// number (creating its epoch if the channel has none), appends the event to the history
/// stream (trimmed to about the channel's history) and publishes it to the nodes. Returns
/// the sequence numbers in order.
///
/// Per-channel work is done once per call, not per event: the epoch and sequence are read
/// once (`HMGET`) and written back once, and the keys' expiry is refreshed once. Trimming is
/// approximate (`MAXLEN ~`: whole stream nodes are dropped, so a stream holds up to ~100
/// events beyond `history`), which measured 3 us per event cheaper than exact trimming.
///
/// **Rewinds.** The meta hash also holds `r`, the `run_id` of the Redis process that last
/// sequenced the channel. A different `run_id` means Redis was restarted or another
/// replica promoted since, and it may have come back with older data (an RDB snapshot, AOF
/// `everysec` after a crash, a lagging replica): the sequence numbers after its position
/// may already have been given to events that are now lost. So the channel gets a new
/// epoch at once (its sequence numbers and history carry on under it), and no sequence
/// number is ever given twice within an epoch. A clean restart that lost nothing costs a
/// `resync` per channel; a silent loss is never possible.
///
/// **Idempotency keys.** A publish (job) may carry a key: its first event's last argument
/// is then the job's event count, and the key's Redis name follows the events' keys. When
/// Redis still holds that key, the job's events are skipped and the seqs stored under it are
/// returned (padded with 0 should the job now have more events than then); otherwise the
/// job is sequenced and its seqs are stored under the key, expiring after the window.
///
/// KEYS: meta, stream per event, then one idempotency key per keyed job. ARGV[1]: TTL (s),
/// ARGV[2]: the Redis `run_id` the node connected to, ARGV[3]: idempotency window (s),
/// ARGV[4]: number of events; per event: pub/sub name, candidate epoch, history length,
/// event name, publish time, data, and "" or (first event of a keyed job) the job's size.
pub const PUBLISH: &str = r#"
local ttl, rid, win, nev = ARGV[1], ARGV[2], ARGV[3], tonumber(ARGV[4])
local out = {}
local chans = {}
local order = {}
local kn = 2 * nev
local jkey, jleft, jseqs = nil, 0, nil
local skip = 0
local a = 5
for i = 1, nev do
  local g = ARGV[a + 6]
  if g ~= '' then
    kn = kn + 1
    local n = tonumber(g)
    local prev = redis.call('GET', KEYS[kn])
    if prev then
      local got = {}
      for x in string.gmatch(prev, '%d+') do got[#got + 1] = tonumber(x) end
      for j = 1, n do out[#out + 1] = got[j] or 0 end
      skip = n
    else
      jkey, jleft, jseqs = KEYS[kn], n, {}
    end
  end
  if skip > 0 then
    skip = skip - 1
  else
  local meta, stream = KEYS[2 * i - 1], KEYS[2 * i]
  local ps, maxlen, ev, ts, data = ARGV[a], ARGV[a + 2], ARGV[a + 3], ARGV[a + 4], ARGV[a + 5]
  local c = chans[meta]
  if not c then
    local m = redis.call('HMGET', meta, 'e', 's', 'r')
    if not m[1] then
      m[1] = ARGV[a + 1]
      m[2] = 0
      redis.call('DEL', stream)
    elseif m[3] ~= rid then
      m[1] = ARGV[a + 1]
    end
    c = {epoch = m[1], seq = tonumber(m[2]), stream = stream, hist = tonumber(maxlen) > 0}
    chans[meta] = c
    order[#order + 1] = meta
  end
  c.seq = c.seq + 1
  local seq = string.format('%d', c.seq)
  if c.hist then
    redis.call('XADD', stream, 'MAXLEN', '~', maxlen, seq .. '-0', 'e', ev, 't', ts, 'd', data)
  end
  redis.call('PUBLISH', ps, c.epoch .. ' ' .. seq .. ' ' .. ts .. ' ' .. ev .. '\n' .. data)
  out[#out + 1] = c.seq
  if jkey then
    jseqs[#jseqs + 1] = seq
    jleft = jleft - 1
    if jleft == 0 then
      redis.call('SET', jkey, table.concat(jseqs, ','), 'EX', win)
      jkey = nil
    end
  end
  end
  a = a + 7
end
for _, meta in ipairs(order) do
  local c = chans[meta]
  redis.call('HSET', meta, 'e', c.epoch, 's', string.format('%d', c.seq), 'r', rid)
  redis.call('EXPIRE', meta, ttl)
  if c.hist then
    redis.call('EXPIRE', c.stream, ttl)
  end
end
return out
"#;

/// A node's view of a channel, read atomically: the epoch (created if absent), the last
/// sequence number, and the history a node needs. With the node's known epoch and last
/// sequence number the history starts after it (a gap fill); otherwise it is the last
/// `count` events (a join or a reset).
///
/// A new epoch is minted (sequence numbers and history carry on under it) when Redis has
/// gone backwards: the channel was last sequenced by another Redis process (see
/// [`PUBLISH`]), or Redis holds the node's epoch at a lower sequence number than the node
/// has already passed on (older data loaded into a running Redis).
///
/// KEYS: meta, stream. ARGV: candidate epoch, TTL (s), count, known epoch, known seq,
/// Redis `run_id`. Returns `{epoch, seq, {{id, {field, value, ...}}, ...}}`.
pub const SYNC: &str = r#"
local m = redis.call('HMGET', KEYS[1], 'e', 's', 'r')
local e, s = m[1], tonumber(m[2]) or 0
if not e then
  e = ARGV[1]
  s = 0
  redis.call('DEL', KEYS[2])
  redis.call('HSET', KEYS[1], 'e', e, 's', 0, 'r', ARGV[6])
elseif m[3] ~= ARGV[6] or (e == ARGV[4] and s < tonumber(ARGV[5])) then
  e = ARGV[1]
  redis.call('HSET', KEYS[1], 'e', e, 's', string.format('%d', s), 'r', ARGV[6])
end
redis.call('EXPIRE', KEYS[1], ARGV[2])
local count = tonumber(ARGV[3])
local from = s - count + 1
if e == ARGV[4] then
  local k = tonumber(ARGV[5]) + 1
  if k > from then from = k end
end
if from < 1 then from = 1 end
local evs = {}
if count > 0 and from <= s then
  evs = redis.call('XRANGE', KEYS[2], from .. '-0', s .. '-0')
end
return {e, s, evs}
"#;

/// The `run_id` field of an `INFO server` reply.
pub fn run_id(info: &str) -> Option<String> {
    info.lines()
        .find_map(|l| l.strip_prefix("run_id:"))
        .map(|v| v.trim().to_string())
        .filter(|v| !v.is_empty())
}

/// Renews this node's presence and forgets expired nodes.
/// KEYS: nodes, own users hash, own subs hash. ARGV: node, TTL (ms).
/// Returns the number of live nodes.
pub const HEARTBEAT: &str = r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
redis.call('PEXPIRE', KEYS[2], ARGV[2])
redis.call('PEXPIRE', KEYS[3], ARGV[2])
return redis.call('ZCARD', KEYS[1])
"#;

/// Sums one field over the hashes of the live nodes; with ARGV[4] set, first writes this
/// node's own count (ARGV[5]) so that two nodes admitting at once cannot both pass.
/// KEYS: nodes. ARGV: prefix, hash kind (`users`/`subs`), field, own node or "", own count.
/// Returns the cluster-wide total.
pub const COUNT: &str = r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local function key(n) return ARGV[1] .. ':node:' .. n .. ':' .. ARGV[2] end
local total = 0
if ARGV[4] ~= '' then
  local own = tonumber(ARGV[5])
  if own > 0 then
    redis.call('HSET', key(ARGV[4]), ARGV[3], own)
  else
    redis.call('HDEL', key(ARGV[4]), ARGV[3])
  end
  total = own
end
for _, n in ipairs(redis.call('ZRANGEBYSCORE', KEYS[1], now, '+inf')) do
  if n ~= ARGV[4] then
    local c = redis.call('HGET', key(n), ARGV[3])
    if c then total = total + tonumber(c) end
  end
end
return total
"#;

/// Parses the SYNC reply `{epoch, seq, {{id, {field, value, ...}}, ...}}`.
pub fn parse_sync(channel: &Arc<str>, v: Value) -> Option<(Arc<str>, u64, Vec<RawEvent>)> {
    let Value::Array(mut top) = v else {
        return None;
    };
    if top.len() != 3 {
        return None;
    }
    let evs = top.pop()?;
    let seq = as_u64(&top.pop()?)?;
    let epoch: Arc<str> = Arc::from(as_str(&top.pop()?)?);
    let Value::Array(entries) = evs else {
        return None;
    };
    let mut out = Vec::with_capacity(entries.len());
    for e in entries {
        let Value::Array(mut pair) = e else {
            return None;
        };
        if pair.len() != 2 {
            return None;
        }
        let fields = pair.pop()?;
        let id = pair.pop()?;
        let seq: u64 = as_str(&id)?.split('-').next()?.parse().ok()?;
        let Value::Array(fields) = fields else {
            return None;
        };
        let (mut event, mut ts, mut data) = (None, None, None);
        for kv in fields.chunks(2) {
            let [k, v] = kv else { return None };
            match as_str(k)? {
                "e" => event = Some(as_str(v)?.to_string()),
                "t" => ts = as_u64(v),
                "d" => {
                    data = match v {
                        Value::BulkString(b) => Some(Bytes::from(b.clone())),
                        _ => None,
                    }
                }
                _ => {}
            }
        }
        out.push(RawEvent {
            channel: channel.clone(),
            epoch: epoch.clone(),
            seq,
            ts: ts?,
            event: event?.into_boxed_str(),
            data: data?,
        });
    }
    Some((epoch, seq, out))
}

fn as_str(v: &Value) -> Option<&str> {
    match v {
        Value::BulkString(b) => std::str::from_utf8(b).ok(),
        Value::SimpleString(s) => Some(s),
        _ => None,
    }
}

fn as_u64(v: &Value) -> Option<u64> {
    match v {
        Value::Int(i) => u64::try_from(*i).ok(),
        other => as_str(other)?.parse().ok(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sync_reply_parses() {
        let ch: Arc<str> = Arc::from("t.A");
        let b = |s: &str| Value::BulkString(s.as_bytes().to_vec());
        let v = Value::Array(vec![
            b("ep"),
            Value::Int(8),
            Value::Array(vec![
                Value::Array(vec![
                    b("7-0"),
                    Value::Array(vec![b("e"), b("trade"), b("t"), b("5"), b("d"), b("{}")]),
                ]),
                Value::Array(vec![
                    b("8-0"),
                    Value::Array(vec![b("e"), b("trade"), b("t"), b("6"), b("d"), b("[1]")]),
                ]),
            ]),
        ]);
        let (e, s, evs) = parse_sync(&ch, v).unwrap();
        assert_eq!((&*e, s), ("ep", 8));
        assert_eq!(evs.len(), 2);
        assert_eq!(
            (evs[0].seq, evs[0].ts, &evs[1].data[..]),
            (7, 5, &b"[1]"[..])
        );
        assert!(parse_sync(&ch, Value::Int(1)).is_none());
        assert!(parse_sync(&ch, Value::Array(vec![b("e"), Value::Int(1)])).is_none());
    }

    #[test]
    fn message_round_trip() {
        let ch: Arc<str> = Arc::from("trades.AAPL");
        let m = parse_message(
            &ch,
            Bytes::from_static(b"9f2c 17 1700000000000000000 trade\n{\"p\":1,\n\"q\":2}"),
        )
        .unwrap();
        assert_eq!(&*m.epoch, "9f2c");
        assert_eq!(m.seq, 17);
        assert_eq!(m.ts, 1_700_000_000_000_000_000);
        assert_eq!(&*m.event, "trade");
        assert_eq!(&m.data[..], b"{\"p\":1,\n\"q\":2}");
    }

    #[test]
    fn malformed_messages_are_refused() {
        let ch: Arc<str> = Arc::from("c");
        for bad in [
            &b"no newline"[..],
            b"e 1 2\n{}",
            b"e x 2 ev\n{}",
            b"e 1 2 ev extra\n{}",
            b" 1 2 ev\n{}",
            b"e 1 2 \n{}",
        ] {
            assert!(parse_message(&ch, Bytes::from(bad)).is_none(), "{bad:?}");
        }
    }

    #[test]
    fn run_id_from_info() {
        let info = "# Server\r\nredis_version:7.0.15\r\nrun_id:4f1c9a\r\ntcp_port:6379\r\n";
        assert_eq!(run_id(info).as_deref(), Some("4f1c9a"));
        assert_eq!(run_id("# Server\r\nrun_id:\r\n"), None);
        assert_eq!(run_id(""), None);
    }

    #[test]
    fn names() {
        let k = Keys::new("qc");
        assert_eq!(k.meta("trades.A"), "qc:{trades.A}:m");
        assert_eq!(k.stream("trades.A"), "qc:{trades.A}:x");
        assert_eq!(k.channel_of(&k.pubsub("trades.A")), Some("trades.A"));
        assert_eq!(k.channel_of("other:ev:x"), None);
        assert_eq!(k.users("n1"), "qc:node:n1:users");
    }
}
