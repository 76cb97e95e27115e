//! Just-enough decoding of server messages for the load generator's read path: finds the
//! message type, channel, `seq`, the publisher stamp `data.t`, an error `code` and a
//! conflation `to` by byte scanning (JSON) or by walking the map (MessagePack), without
//! allocating or building a document.

use memchr::memmem;
use std::sync::OnceLock;

/// Server message kinds the loadtest distinguishes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Event,
    Subscribed,
    Welcome,
    Error,
    Conflated,
    Pong,
    /// `pusher:ping` (answered with `pusher:pong`).
    Ping,
    Shutdown,
    Other,
}

/// The fields the loadtest needs from one server message.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Msg<'a> {
    pub(crate) kind: Kind,
    pub(crate) channel: Option<&'a [u8]>,
    pub(crate) seq: Option<u64>,
    /// Publisher stamp: `data.t`, ns since the Unix epoch.
    pub(crate) t: Option<u64>,
    pub(crate) code: Option<&'a [u8]>,
    pub(crate) to: Option<u64>,
}

impl<'a> Msg<'a> {
    fn new(kind: Kind) -> Self {
        Msg {
            kind,
            channel: None,
            seq: None,
            t: None,
            code: None,
            to: None,
        }
    }
}

fn kind_of(ty: &[u8]) -> Kind {
    match ty {
        b"event" => Kind::Event,
        b"subscribed" => Kind::Subscribed,
        b"welcome" => Kind::Welcome,
        b"error" => Kind::Error,
        b"conflated" => Kind::Conflated,
        b"pong" => Kind::Pong,
        b"server_shutdown" => Kind::Shutdown,
        _ => Kind::Other,
    }
}

/// Channel `bench.N` → `N`.
pub(crate) fn bench_index(channel: &[u8]) -> Option<u32> {
    let digits = channel.strip_prefix(b"bench.")?;
    if digits.is_empty() || digits.len() > 9 {
        return None;
    }
    let mut v: u32 = 0;
    for &d in digits {
        if !d.is_ascii_digit() {
            return None;
        }
        v = v * 10 + u32::from(d - b'0');
    }
    Some(v)
}

/// Prebuilt substring finders for the generic JSON path (building a `memmem` searcher is far
/// more expensive than running it on a ~200-byte message, so never build one per frame).
struct Finders {
    ty: memmem::Finder<'static>,
    channel: memmem::Finder<'static>,
    seq: memmem::Finder<'static>,
    data: memmem::Finder<'static>,
    t: memmem::Finder<'static>,
    code: memmem::Finder<'static>,
    to: memmem::Finder<'static>,
}

fn finders() -> &'static Finders {
    static F: OnceLock<Finders> = OnceLock::new();
    F.get_or_init(|| Finders {
        ty: memmem::Finder::new(b"\"type\":\""),
        channel: memmem::Finder::new(b"\"channel\":\""),
        seq: memmem::Finder::new(b"\"seq\":"),
        data: memmem::Finder::new(b"\"data\":"),
        t: memmem::Finder::new(b"\"t\":"),
        code: memmem::Finder::new(b"\"code\":\""),
        to: memmem::Finder::new(b"\"to\":"),
    })
}

fn json_str_after<'a>(b: &'a [u8], key: &memmem::Finder<'_>) -> Option<&'a [u8]> {
    let at = key.find(b)? + key.needle().len();
    let rest = &b[at..];
    let end = memchr::memchr(b'"', rest)?;
    Some(&rest[..end])
}

fn json_u64_after(b: &[u8], key: &memmem::Finder<'_>) -> Option<u64> {
    let at = key.find(b)? + key.needle().len();
    parse_u64(&b[at..])
}

fn parse_u64(b: &[u8]) -> Option<u64> {
    let b = b.strip_prefix(b" ").unwrap_or(b);
    let mut v: u64 = 0;
    let mut any = false;
    for &d in b {
        if !d.is_ascii_digit() {
            break;
        }
        v = v.checked_mul(10)?.checked_add(u64::from(d - b'0'))?;
        any = true;
    }
    any.then_some(v)
}

/// True when all eight bytes of `x` are ASCII digits.
#[inline]
fn all_digits8(x: u64) -> bool {
    const HI: u64 = 0xF0F0_F0F0_F0F0_F0F0;
    const ZEROS: u64 = 0x3030_3030_3030_3030;
    // Digits are 0x30..=0x39: high nibble 3, and still 3 after adding 6 (no byte carries).
    (x & HI) == ZEROS && (x.wrapping_add(0x0606_0606_0606_0606) & HI) == ZEROS
}

/// Value of eight ASCII digits loaded little-endian (first digit in the lowest byte).
#[inline]
fn swar8(x: u64) -> u64 {
    let x = x - 0x3030_3030_3030_3030;
    let x = (x.wrapping_mul(10) + (x >> 8)) & 0x00FF_00FF_00FF_00FF;
    let x = (x.wrapping_mul(100) + (x >> 16)) & 0x0000_FFFF_0000_FFFF;
    (x.wrapping_mul(10_000) + (x >> 32)) & 0xFFFF_FFFF
}

/// Leading decimal digits of `b` (1–19 of them, so the value cannot overflow) and the
/// rest; `None` for no digit or 20+ digits (the generic scanner handles those with checks).
#[inline]
fn digits(b: &[u8]) -> Option<(u64, &[u8])> {
    let mut v: u64 = 0;
    let mut i = 0;
    // Eight digits at a time (at most 16 this way), then byte by byte up to 19 in all.
    while i < 16 {
        let Some(chunk) = b.get(i..i + 8) else { break };
        let x = u64::from_le_bytes(chunk.try_into().unwrap_or([0; 8]));
        if !all_digits8(x) {
            break;
        }
        v = v * 100_000_000 + swar8(x);
        i += 8;
    }
    while i < 19 {
        let Some(&c) = b.get(i) else { break };
        let d = c.wrapping_sub(b'0');
        if d > 9 {
            break;
        }
        v = v * 10 + u64::from(d);
        i += 1;
    }
    if i == 0 || b.get(i).is_some_and(u8::is_ascii_digit) {
        return None;
    }
    Some((v, &b[i..]))
}

/// Position of the first `"` in a short string (channel / event names are a few bytes).
#[inline]
fn quote(b: &[u8]) -> Option<usize> {
    b.iter().position(|&c| c == b'"')
}

/// The server's event layout, byte for byte:
/// `{"type":"event","channel":"<c>","event":"<e>","seq":<n>,"ts":<n>,"data":<data>}`,
/// with the publisher's `data` usually starting `{"t":<n>`. Anything that does not match
/// exactly returns `None` and goes through the generic scanner. Names cannot contain `"`
/// or a backslash (see the protocol's name rules), so the first `"` ends them.
#[inline]
fn scan_event_fast(b: &[u8]) -> Option<Msg<'_>> {
    let rest = b.strip_prefix(b"{\"type\":\"event\",\"channel\":\"")?;
    let q = quote(rest)?;
    let channel = &rest[..q];
    let rest = rest[q..].strip_prefix(b"\",\"event\":\"")?;
    let q = quote(rest)?;
    let rest = rest[q..].strip_prefix(b"\",\"seq\":")?;
    let (seq, rest) = digits(rest)?;
    let rest = rest.strip_prefix(b",\"ts\":")?;
    let (_, rest) = digits(rest)?;
    let data = rest.strip_prefix(b",\"data\":")?;
    let t = match data.strip_prefix(b"{\"t\":").and_then(digits) {
        Some((t, _)) => Some(t),
        None => json_u64_after(data, &finders().t),
    };
    Some(Msg {
        kind: Kind::Event,
        channel: Some(channel),
        seq: Some(seq),
        t,
        code: None,
        to: None,
    })
}

/// Scans one JSON text message.
pub(crate) fn scan_json(b: &[u8]) -> Msg<'_> {
    if let Some(m) = scan_event_fast(b) {
        return m;
    }
    scan_json_generic(b)
}

/// Key-order-independent scan (other messages, or events laid out differently).
#[cold]
fn scan_json_generic(b: &[u8]) -> Msg<'_> {
    let f = finders();
    let kind = json_str_after(b, &f.ty).map_or(Kind::Other, kind_of);
    let mut m = Msg::new(kind);
    match kind {
        Kind::Event => {
            m.channel = json_str_after(b, &f.channel);
            m.seq = json_u64_after(b, &f.seq);
            if let Some(d) = f.data.find(b) {
                m.t = json_u64_after(&b[d..], &f.t);
            }
        }
        Kind::Subscribed => {
            m.channel = json_str_after(b, &f.channel);
            m.seq = json_u64_after(b, &f.seq);
        }
        Kind::Error => {
            m.code = json_str_after(b, &f.code);
            m.channel = json_str_after(b, &f.channel);
        }
        Kind::Conflated => {
            m.channel = json_str_after(b, &f.channel);
            m.to = json_u64_after(b, &f.to);
        }
        _ => {}
    }
    m
}

/// Finders of the Pusher scanner's generic path.
struct PusherFinders {
    event: memmem::Finder<'static>,
    channel: memmem::Finder<'static>,
    t: memmem::Finder<'static>,
}

fn pusher_finders() -> &'static PusherFinders {
    static F: OnceLock<PusherFinders> = OnceLock::new();
    F.get_or_init(|| PusherFinders {
        event: memmem::Finder::new(b"\"event\":\""),
        channel: memmem::Finder::new(b"\"channel\":\""),
        // The publisher's stamp inside `data`, a JSON string: `{\"t\":<n>`.
        t: memmem::Finder::new(br#"\"t\":"#),
    })
}

/// Kind of a Pusher message from its event name.
fn pusher_kind(event: &[u8]) -> Kind {
    match event {
        b"pusher:connection_established" => Kind::Welcome,
        b"pusher_internal:subscription_succeeded" => Kind::Subscribed,
        b"pusher:error" | b"pusher:subscription_error" => Kind::Error,
        b"pusher:ping" => Kind::Ping,
        b"pusher:pong" => Kind::Pong,
        e if e.starts_with(b"pusher") => Kind::Other,
        _ => Kind::Event,
    }
}

/// Scans one Pusher protocol message. Event frames laid out as quotecast sends them,
/// `{"event":"<e>","channel":"<c>","data":"{\"t\":<n>,...}"}`, take a prefix-matching fast
/// path; anything else (other servers' key order) is found by substring search. `seq` is
/// never set (Pusher has none); an error's `code` is its event name.
pub(crate) fn scan_pusher(b: &[u8]) -> Msg<'_> {
    if let Some(m) = scan_pusher_fast(b) {
        return m;
    }
    scan_pusher_generic(b)
}

#[inline]
fn scan_pusher_fast(b: &[u8]) -> Option<Msg<'_>> {
    let rest = b.strip_prefix(b"{\"event\":\"")?;
    let q = quote(rest)?;
    if rest.starts_with(b"pusher") {
        return None;
    }
    let rest = rest[q..].strip_prefix(b"\",\"channel\":\"")?;
    let q = quote(rest)?;
    let channel = &rest[..q];
    let data = rest[q..].strip_prefix(br#"","data":"{\"t\":"#)?;
    let (t, _) = digits(data)?;
    let mut m = Msg::new(Kind::Event);
    m.channel = Some(channel);
    m.t = Some(t);
    Some(m)
}

#[cold]
fn scan_pusher_generic(b: &[u8]) -> Msg<'_> {
    let f = pusher_finders();
    let Some(event) = json_str_after(b, &f.event) else {
        return Msg::new(Kind::Other);
    };
    let kind = pusher_kind(event);
    let mut m = Msg::new(kind);
    match kind {
        Kind::Event => {
            m.channel = json_str_after(b, &f.channel);
            m.t = json_u64_after(b, &f.t);
        }
        Kind::Subscribed => m.channel = json_str_after(b, &f.channel),
        Kind::Error => {
            m.code = Some(event);
            m.channel = json_str_after(b, &f.channel);
        }
        _ => {}
    }
    m
}

/// A cursor over MessagePack bytes; every method returns `None` on truncated or
/// unexpected input (the caller counts the message as unparseable).
struct Mp<'a> {
    b: &'a [u8],
    i: usize,
}

impl<'a> Mp<'a> {
    fn byte(&mut self) -> Option<u8> {
        let v = *self.b.get(self.i)?;
        self.i += 1;
        Some(v)
    }
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let s = self.b.get(self.i..self.i.checked_add(n)?)?;
        self.i += n;
        Some(s)
    }
    fn be(&mut self, n: usize) -> Option<u64> {
        Some(
            self.take(n)?
                .iter()
                .fold(0u64, |a, &x| (a << 8) | u64::from(x)),
        )
    }
    fn map_len(&mut self) -> Option<usize> {
        match self.byte()? {
            m @ 0x80..=0x8f => Some((m & 0x0f) as usize),
            0xde => Some(self.be(2)? as usize),
            0xdf => Some(self.be(4)? as usize),
            _ => None,
        }
    }
    fn str(&mut self) -> Option<&'a [u8]> {
        let n = match self.byte()? {
            m @ 0xa0..=0xbf => (m & 0x1f) as usize,
            0xd9 => self.be(1)? as usize,
            0xda => self.be(2)? as usize,
            0xdb => self.be(4)? as usize,
            _ => return None,
        };
        self.take(n)
    }
    /// Reads a non-negative integer (any width, signed encodings accepted when ≥ 0).
    fn uint(&mut self) -> Option<u64> {
        match self.byte()? {
            v @ 0x00..=0x7f => Some(u64::from(v)),
            0xcc => self.be(1),
            0xcd => self.be(2),
            0xce => self.be(4),
            0xcf => self.be(8),
            0xd0 => u64::try_from(self.be(1)? as u8 as i8).ok(),
            0xd1 => u64::try_from(self.be(2)? as u16 as i16).ok(),
            0xd2 => u64::try_from(self.be(4)? as u32 as i32).ok(),
            0xd3 => u64::try_from(self.be(8)? as i64).ok(),
            _ => None,
        }
    }
    fn skip(&mut self) -> Option<()> {
        let m = self.byte()?;
        let n = match m {
            0x00..=0x7f | 0xe0..=0xff | 0xc0 | 0xc2 | 0xc3 => 0,
            0x80..=0x8f => return self.skip_n(2 * (m & 0x0f) as usize),
            0x90..=0x9f => return self.skip_n((m & 0x0f) as usize),
            0xa0..=0xbf => (m & 0x1f) as usize,
            0xc4 | 0xd9 => self.be(1)? as usize,
            0xc5 | 0xda => self.be(2)? as usize,
            0xc6 | 0xdb => self.be(4)? as usize,
            0xc7 => self.be(1)? as usize + 1,
            0xc8 => self.be(2)? as usize + 1,
            0xc9 => self.be(4)? as usize + 1,
            0xca => 4,
            0xcb => 8,
            0xcc | 0xd0 => 1,
            0xcd | 0xd1 => 2,
            0xce | 0xd2 => 4,
            0xcf | 0xd3 => 8,
            0xd4 => 2,
            0xd5 => 3,
            0xd6 => 5,
            0xd7 => 9,
            0xd8 => 17,
            0xdc => return self.be(2).and_then(|n| self.skip_n(n as usize)),
            0xdd => return self.be(4).and_then(|n| self.skip_n(n as usize)),
            0xde => return self.be(2).and_then(|n| self.skip_n(2 * n as usize)),
            0xdf => return self.be(4).and_then(|n| self.skip_n(2 * n as usize)),
            0xc1 => return None,
        };
        self.take(n).map(|_| ())
    }
    fn skip_n(&mut self, n: usize) -> Option<()> {
        for _ in 0..n {
            self.skip()?;
        }
        Some(())
    }
}

/// Walks one MessagePack message (a map with the JSON keys). `None` if malformed.
pub(crate) fn scan_msgpack(b: &[u8]) -> Option<Msg<'_>> {
    let mut p = Mp { b, i: 0 };
    let n = p.map_len()?;
    let mut m = Msg::new(Kind::Other);
    for _ in 0..n {
        let key = p.str()?;
        match key {
            b"type" => m.kind = kind_of(p.str()?),
            b"channel" => m.channel = Some(p.str()?),
            b"code" => m.code = Some(p.str()?),
            b"seq" => m.seq = Some(p.uint()?),
            b"to" => m.to = Some(p.uint()?),
            b"data" => {
                // Look for `t` in a map; anything else is skipped.
                let save = p.i;
                match p.map_len() {
                    Some(dn) => {
                        for _ in 0..dn {
                            let k = p.str()?;
                            if k == b"t" {
                                m.t = Some(p.uint()?);
                            } else {
                                p.skip()?;
                            }
                        }
                    }
                    None => {
                        p.i = save;
                        p.skip()?;
                    }
                }
            }
            _ => p.skip()?,
        }
    }
    Some(m)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scans_json_event() {
        let f = br#"{"type":"event","channel":"bench.42","event":"tick","seq":1052,"ts":1732380000123456789,"data":{"t":1732380000000000001,"p":"xx"}}"#;
        let m = scan_json(f);
        assert_eq!(m.kind, Kind::Event);
        assert_eq!(m.channel.and_then(bench_index), Some(42));
        assert_eq!(m.seq, Some(1052));
        assert_eq!(m.t, Some(1732380000000000001));
    }

    #[test]
    fn scans_json_subscribed_and_error() {
        let m = scan_json(
            br#"{"type":"subscribed","id":1,"channel":"bench.0","kind":"stream","seq":7}"#,
        );
        assert_eq!((m.kind, m.seq), (Kind::Subscribed, Some(7)));
        let e = scan_json(br#"{"type":"error","id":7,"code":"bad_request","message":"x"}"#);
        assert_eq!((e.kind, e.code), (Kind::Error, Some(&b"bad_request"[..])));
    }

    #[test]
    fn scans_msgpack_event() {
        // {"type":"event","channel":"bench.3","seq":300,"ts":u64,"data":{"p":"x","t":2^40}}
        let mut b = vec![0x85];
        b.extend_from_slice(b"\xa4type\xa5event");
        b.extend_from_slice(b"\xa7channel\xa7bench.3");
        b.extend_from_slice(b"\xa3seq\xcd\x01\x2c");
        b.extend_from_slice(b"\xa2ts\xcf\x00\x00\x00\x00\x00\x00\x00\x01");
        b.extend_from_slice(b"\xa4data\x82\xa1p\xa1x\xa1t\xcf\x00\x00\x01\x00\x00\x00\x00\x00");
        let m = scan_msgpack(&b).unwrap();
        assert_eq!(m.kind, Kind::Event);
        assert_eq!(m.channel.and_then(bench_index), Some(3));
        assert_eq!(m.seq, Some(300));
        assert_eq!(m.t, Some(1 << 40));
        assert!(scan_msgpack(&b[..b.len() - 1]).is_none());
    }

    #[test]
    fn digits_swar_matches_naive() {
        for s in [
            "0",
            "7,",
            "12345678",
            "123456789",
            "1234567890123456",
            "12345678901234567,",
            "1732380000123456789}",
            "9999999999999999999",
        ] {
            let want: u64 = s.trim_end_matches([',', '}']).parse().unwrap();
            let (v, rest) = digits(s.as_bytes()).unwrap();
            assert_eq!(v, want, "{s}");
            assert_eq!(rest.len(), s.len() - want.to_string().len());
        }
        assert!(digits(b"").is_none());
        assert!(digits(b"x1").is_none());
        assert!(digits(b"12345678901234567890").is_none());
        assert!(digits(b"1234567:").is_some_and(|(v, r)| v == 1_234_567 && r == b":"));
    }

    #[test]
    fn event_fast_path_and_fallback_agree() {
        let fast = br#"{"type":"event","channel":"bench.7","event":"tick","seq":99,"ts":1732380000123456789,"data":{"t":1732380000000000042,"p":"xx"}}"#;
        let m = scan_event_fast(fast).unwrap();
        assert_eq!(m.channel.and_then(bench_index), Some(7));
        assert_eq!((m.seq, m.t), (Some(99), Some(1732380000000000042)));
        // Other key order or `t` not first: same answer through the generic path.
        let other = br#"{"channel":"bench.7","type":"event","seq":99,"event":"tick","data":{"p":"xx","t":1732380000000000042}}"#;
        assert!(scan_event_fast(other).is_none());
        let g = scan_json(other);
        assert_eq!(g.kind, Kind::Event);
        assert_eq!(g.channel.and_then(bench_index), Some(7));
        assert_eq!((g.seq, g.t), (Some(99), Some(1732380000000000042)));
        let t_later = br#"{"type":"event","channel":"bench.7","event":"tick","seq":5,"ts":1,"data":{"p":"x","t":3}}"#;
        let m = scan_json(t_later);
        assert_eq!((m.kind, m.seq, m.t), (Kind::Event, Some(5), Some(3)));
        // Truncated event: must not claim a seq it did not see.
        assert!(scan_event_fast(&fast[..60]).is_none());
    }

    #[test]
    fn scans_pusher_messages() {
        let fast = br#"{"event":"tick","channel":"bench.7","data":"{\"t\":1732380000000000042,\"p\":\"xx\"}"}"#;
        let m = scan_pusher_fast(fast).unwrap();
        assert_eq!(m.kind, Kind::Event);
        assert_eq!(m.channel.and_then(bench_index), Some(7));
        assert_eq!((m.seq, m.t), (None, Some(1732380000000000042)));
        // Another server's key order: the same answer through the generic path.
        let other = br#"{"channel":"bench.7","event":"tick","data":"{\"p\":\"xx\",\"t\":1732380000000000042}"}"#;
        assert!(scan_pusher_fast(other).is_none());
        let g = scan_pusher(other);
        assert_eq!(g.kind, Kind::Event);
        assert_eq!(g.channel.and_then(bench_index), Some(7));
        assert_eq!(g.t, Some(1732380000000000042));
        let est = br#"{"event":"pusher:connection_established","data":"{\"socket_id\":\"1.2\",\"activity_timeout\":120}"}"#;
        assert_eq!(scan_pusher(est).kind, Kind::Welcome);
        let ok = br#"{"event":"pusher_internal:subscription_succeeded","channel":"bench.3","data":"{}"}"#;
        let m = scan_pusher(ok);
        assert_eq!(
            (m.kind, m.channel.and_then(bench_index)),
            (Kind::Subscribed, Some(3))
        );
        let err = br#"{"event":"pusher:subscription_error","channel":"bench.3","data":{"type":"x","error":"y","status":400}}"#;
        let m = scan_pusher(err);
        assert_eq!(
            (m.kind, m.code),
            (Kind::Error, Some(&b"pusher:subscription_error"[..]))
        );
        assert_eq!(
            scan_pusher(br#"{"event":"pusher:ping","data":"{}"}"#).kind,
            Kind::Ping
        );
        assert_eq!(scan_pusher(b"not json").kind, Kind::Other);
        // Truncated event: no stamp claimed.
        assert!(scan_pusher_fast(&fast[..50]).is_none());
    }

    #[test]
    fn bench_index_rejects_others() {
        assert_eq!(bench_index(b"trades.X"), None);
        assert_eq!(bench_index(b"bench."), None);
        assert_eq!(bench_index(b"bench.1a"), None);
    }
}
