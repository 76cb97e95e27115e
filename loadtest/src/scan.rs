//! Just-enough decoding of server messages for the load generator's read path: finds the
//! message type, channel, `seq`, the publisher stamp `data.t`, an error `code` and a
//! conflation `to` by byte scanning (JSON) or by walking the map (MessagePack), without
//! allocating or building a document.

use memchr::memmem;

/// Server message kinds the loadtest distinguishes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Event,
    Subscribed,
    Welcome,
    Error,
    Conflated,
    Pong,
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

fn json_str_after<'a>(b: &'a [u8], key: &[u8]) -> Option<&'a [u8]> {
    let at = memmem::find(b, key)? + key.len();
    let rest = &b[at..];
    let end = memchr::memchr(b'"', rest)?;
    Some(&rest[..end])
}

fn json_u64_after(b: &[u8], key: &[u8]) -> Option<u64> {
    let at = memmem::find(b, key)? + key.len();
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

/// Scans one JSON text message.
pub(crate) fn scan_json(b: &[u8]) -> Msg<'_> {
    let kind = json_str_after(b, b"\"type\":\"").map_or(Kind::Other, kind_of);
    let mut m = Msg::new(kind);
    match kind {
        Kind::Event => {
            m.channel = json_str_after(b, b"\"channel\":\"");
            m.seq = json_u64_after(b, b"\"seq\":");
            if let Some(d) = memmem::find(b, b"\"data\":") {
                m.t = json_u64_after(&b[d..], b"\"t\":");
            }
        }
        Kind::Subscribed => {
            m.channel = json_str_after(b, b"\"channel\":\"");
            m.seq = json_u64_after(b, b"\"seq\":");
        }
        Kind::Error => {
            m.code = json_str_after(b, b"\"code\":\"");
            m.channel = json_str_after(b, b"\"channel\":\"");
        }
        Kind::Conflated => {
            m.channel = json_str_after(b, b"\"channel\":\"");
            m.to = json_u64_after(b, b"\"to\":");
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
    fn bench_index_rejects_others() {
        assert_eq!(bench_index(b"trades.X"), None);
        assert_eq!(bench_index(b"bench."), None);
        assert_eq!(bench_index(b"bench.1a"), None);
    }
}
