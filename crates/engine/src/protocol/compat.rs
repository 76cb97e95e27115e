//! The common ground of the two wire formats (protocol layer): what a client op may contain
//! so that every value it carries can be delivered as JSON *and* as MessagePack.
//!
//! Event `data` is kept as canonical JSON and transcoded to MessagePack for msgpack
//! subscribers, and MessagePack ops are transcoded to JSON, so each format's values that the
//! other cannot carry are refused where they enter the server:
//! - [`check_msgpack`] walks a MessagePack op before it is decoded and refuses `bin`, ext
//!   types, non-string map keys, strings that are not UTF-8 and non-finite floats, wherever
//!   they sit (rmp-serde would otherwise hand them to serde as bytes, tuples or numbers, and
//!   the transcoder would turn them into JSON arrays, numbers, `null` or duplicate keys).
//! - [`check_json_data`] bounds the nesting of JSON `data` and refuses numbers beyond the
//!   range of a 64-bit float and strings with an unpaired UTF-16 surrogate escape, the JSON
//!   that cannot be transcoded to MessagePack.

use serde::de::{Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};

/// Deepest MessagePack nesting accepted: room for `data` at [`MAX_DATA_DEPTH`] inside a
/// batch; keeps the recursive transcoder's stack use small on hostile input.
pub const MAX_MSGPACK_DEPTH: usize = 70;

/// Deepest nesting accepted inside `data`. A `RawValue` is only skimmed by serde_json (no
/// recursion limit applies), so depth is checked here; the bound keeps every later
/// transcoding (JSON → MessagePack for msgpack subscribers) within its own limits.
pub const MAX_DATA_DEPTH: usize = 64;

/// Longest run of number characters (`0-9 . - +`) that cannot overflow a 64-bit float
/// without an exponent: the largest finite `f64` has 309 integer digits.
const MAX_PLAIN_NUMBER: usize = 300;

/// Checks that `msg` holds one MessagePack value in the subset JSON can carry (see the
/// module header), nested at most [`MAX_MSGPACK_DEPTH`] deep. Bytes after the first value
/// are not looked at (the op decoder does not read them either). Iterative, so hostile
/// nesting costs no stack; every step consumes at least one byte, so the work is linear.
pub fn check_msgpack(msg: &[u8]) -> Result<(), &'static str> {
    const TRUNCATED: &str = "invalid MessagePack: truncated";
    // Open arrays and maps, innermost last: (items still to read, is a map). A map of n
    // pairs holds 2n items; while an even number is left, a key comes next.
    let mut open: Vec<(u64, bool)> = Vec::new();
    let mut pos = 0usize;
    let take = |pos: &mut usize, n: usize| -> Result<&[u8], &'static str> {
        let end = pos
            .checked_add(n)
            .filter(|&e| e <= msg.len())
            .ok_or(TRUNCATED)?;
        let s = &msg[*pos..end];
        *pos = end;
        Ok(s)
    };
    let uint = |b: &[u8]| b.iter().fold(0u64, |acc, &x| acc << 8 | u64::from(x));
    loop {
        let key = matches!(open.last(), Some(&(left, true)) if left % 2 == 0);
        let m = take(&mut pos, 1)?[0];
        let is_str = matches!(m, 0xa0..=0xbf | 0xd9..=0xdb);
        if key && !is_str {
            return Err("MessagePack map keys must be strings");
        }
        let mut container = None;
        match m {
            // fixint, negative fixint, nil, false, true
            0x00..=0x7f | 0xe0..=0xff | 0xc0 | 0xc2 | 0xc3 => {}
            0x80..=0x8f => container = Some((u64::from(m & 0x0f) * 2, true)),
            0x90..=0x9f => container = Some((u64::from(m & 0x0f), false)),
            0xa0..=0xbf | 0xd9..=0xdb => {
                let len = match m {
                    0xd9 => uint(take(&mut pos, 1)?),
                    0xda => uint(take(&mut pos, 2)?),
                    0xdb => uint(take(&mut pos, 4)?),
                    _ => u64::from(m & 0x1f),
                };
                let len = usize::try_from(len).map_err(|_| TRUNCATED)?;
                if std::str::from_utf8(take(&mut pos, len)?).is_err() {
                    return Err("MessagePack strings must be UTF-8");
                }
            }
            0xc1 => return Err("invalid MessagePack: reserved marker 0xc1"),
            0xc4..=0xc6 => return Err("MessagePack bin values are not accepted"),
            0xc7..=0xc9 | 0xd4..=0xd8 => return Err("MessagePack ext types are not accepted"),
            0xca => {
                let b = take(&mut pos, 4)?;
                if !f32::from_be_bytes([b[0], b[1], b[2], b[3]]).is_finite() {
                    return Err("MessagePack floats must be finite");
                }
            }
            0xcb => {
                let mut b = [0u8; 8];
                b.copy_from_slice(take(&mut pos, 8)?);
                if !f64::from_be_bytes(b).is_finite() {
                    return Err("MessagePack floats must be finite");
                }
            }
            0xcc | 0xd0 => pos = take(&mut pos, 1).map(|_| pos)?,
            0xcd | 0xd1 => pos = take(&mut pos, 2).map(|_| pos)?,
            0xce | 0xd2 => pos = take(&mut pos, 4).map(|_| pos)?,
            0xcf | 0xd3 => pos = take(&mut pos, 8).map(|_| pos)?,
            0xdc => container = Some((uint(take(&mut pos, 2)?), false)),
            0xdd => container = Some((uint(take(&mut pos, 4)?), false)),
            0xde => container = Some((uint(take(&mut pos, 2)?) * 2, true)),
            0xdf => container = Some((uint(take(&mut pos, 4)?) * 2, true)),
        }
        if let Some((items, is_map)) = container {
            if open.len() >= MAX_MSGPACK_DEPTH {
                return Err("invalid MessagePack: nested too deeply");
            }
            if items > 0 {
                open.push((items, is_map));
                continue;
            }
        }
        // One value is complete: count it in its container, and every container it
        // completes in turn.
        loop {
            let Some((left, _)) = open.last_mut() else {
                return Ok(());
            };
            *left -= 1;
            if *left > 0 {
                break;
            }
            open.pop();
        }
    }
}

/// Why JSON `data` was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DataError {
    /// Nested deeper than [`MAX_DATA_DEPTH`].
    #[error("`data` nests deeper than {MAX_DATA_DEPTH} levels")]
    TooDeep,
    /// Valid JSON that MessagePack cannot carry.
    #[error("`data` cannot be sent as MessagePack: {0}")]
    NotConvertible(String),
}

/// Checks already-validated JSON `data`: nesting at most [`MAX_DATA_DEPTH`], and
/// transcodable to MessagePack. The transcoder parses with serde_json, which fails on a
/// number that overflows an `f64` (`1e400`) and on an unpaired surrogate escape
/// (`"\ud800"`). One byte scan finds the depth and whether the data holds anything that
/// could fail (an exponent, a very long number, a `\u` escape); only then is it parsed the
/// way the transcoder parses it, so plain payloads pay for the scan alone.
pub fn check_json_data(raw: &[u8]) -> Result<(), DataError> {
    let scan = scan_json(raw);
    if scan.depth > MAX_DATA_DEPTH {
        return Err(DataError::TooDeep);
    }
    if scan.risky {
        let mut de = serde_json::Deserializer::from_slice(raw);
        Parsed::deserialize(&mut de).map_err(|e| DataError::NotConvertible(e.to_string()))?;
    }
    Ok(())
}

/// What one pass over JSON text found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct JsonScan {
    /// Deepest bracket nesting outside strings.
    depth: usize,
    /// Holds an exponent, a number longer than [`MAX_PLAIN_NUMBER`] or a `\u` escape.
    risky: bool,
}

/// Scans already-validated JSON text (see [`JsonScan`]).
fn scan_json(raw: &[u8]) -> JsonScan {
    let (mut depth, mut max, mut in_str, mut esc) = (0usize, 0usize, false, false);
    let (mut risky, mut num_len) = (false, 0usize);
    for &b in raw {
        if in_str {
            if esc {
                esc = false;
                risky |= b == b'u';
            } else if b == b'\\' {
                esc = true;
            } else if b == b'"' {
                in_str = false;
            }
            continue;
        }
        match b {
            b'0'..=b'9' | b'.' | b'-' | b'+' => {
                num_len += 1;
                risky |= num_len > MAX_PLAIN_NUMBER;
                continue;
            }
            // In validated JSON an `e` right after number characters is an exponent
            // (`true` and `false` have letters before theirs).
            b'e' | b'E' if num_len > 0 => {
                risky = true;
                continue;
            }
            _ => num_len = 0,
        }
        match b {
            b'"' => in_str = true,
            b'[' | b'{' => {
                depth += 1;
                max = max.max(depth);
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    JsonScan { depth: max, risky }
}

/// Any JSON value, parsed through `deserialize_any` exactly as `serde_transcode` drives it
/// (numbers and strings decoded, escapes resolved) and then dropped; allocates nothing.
struct Parsed;

impl<'de> Deserialize<'de> for Parsed {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(ParsedVisitor)
    }
}

struct ParsedVisitor;

impl<'de> Visitor<'de> for ParsedVisitor {
    type Value = Parsed;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_bool<E>(self, _: bool) -> Result<Parsed, E> {
        Ok(Parsed)
    }
    fn visit_i64<E>(self, _: i64) -> Result<Parsed, E> {
        Ok(Parsed)
    }
    fn visit_u64<E>(self, _: u64) -> Result<Parsed, E> {
        Ok(Parsed)
    }
    fn visit_f64<E>(self, _: f64) -> Result<Parsed, E> {
        Ok(Parsed)
    }
    fn visit_str<E>(self, _: &str) -> Result<Parsed, E> {
        Ok(Parsed)
    }
    fn visit_unit<E>(self) -> Result<Parsed, E> {
        Ok(Parsed)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Parsed, A::Error> {
        while seq.next_element::<Parsed>()?.is_some() {}
        Ok(Parsed)
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Parsed, A::Error> {
        while map.next_key::<Parsed>()?.is_some() {
            map.next_value::<Parsed>()?;
        }
        Ok(Parsed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::encode::{event_msgpack, EventParts};

    fn to_msgpack(data: &[u8]) -> bool {
        event_msgpack(EventParts {
            channel: "c",
            event: "e",
            seq: 1,
            ts: 1,
            data,
        })
        .is_ok()
    }

    #[test]
    fn depth_counts_brackets_outside_strings() {
        assert_eq!(scan_json(br#"{"a":[1,{"b":"[[[[\"]]"}]}"#).depth, 3);
        let at = |n: usize| format!("{}1{}", "[".repeat(n), "]".repeat(n));
        assert!(check_json_data(at(MAX_DATA_DEPTH).as_bytes()).is_ok());
        assert_eq!(
            check_json_data(at(MAX_DATA_DEPTH + 1).as_bytes()),
            Err(DataError::TooDeep)
        );
    }

    #[test]
    fn only_exponents_long_numbers_and_u_escapes_are_risky() {
        for plain in [
            &br#"{"px":187.21,"q":-3,"ok":true,"no":false,"n":null,"s":"e\"E\\n"}"#[..],
            br#"[0.5, -0, 12345678901234567890123]"#,
        ] {
            assert!(
                !scan_json(plain).risky,
                "{}",
                String::from_utf8_lossy(plain)
            );
        }
        for risky in [
            &b"1e5"[..],
            b"[1.5E-3]",
            br#""\u00e9""#,
            br#"{"k\u0041":1}"#,
        ] {
            assert!(scan_json(risky).risky, "{}", String::from_utf8_lossy(risky));
        }
        assert!(scan_json("9".repeat(MAX_PLAIN_NUMBER + 1).as_bytes()).risky);
    }

    /// The bug: a MessagePack subscriber got a JSON text frame for data like these.
    #[test]
    fn data_msgpack_cannot_carry_is_refused_and_accepted_data_always_converts() {
        let refused: Vec<Vec<u8>> = vec![
            b"1e400".to_vec(),
            b"-1e400".to_vec(),
            br#"{"px":[1,2,1.8e308]}"#.to_vec(),
            br#""\ud800""#.to_vec(),
            br#""\udc00x""#.to_vec(),
            br#"{"\ud83d":1}"#.to_vec(),
            br#"["\ud800\u0041"]"#.to_vec(),
            "9".repeat(400).into_bytes(),
        ];
        for d in &refused {
            assert!(
                !to_msgpack(d),
                "precondition: {}",
                String::from_utf8_lossy(d)
            );
            assert!(
                matches!(check_json_data(d), Err(DataError::NotConvertible(_))),
                "{}",
                String::from_utf8_lossy(d)
            );
        }
        let accepted: Vec<Vec<u8>> = vec![
            b"1e308".to_vec(),
            b"1e-400".to_vec(),
            b"0e99999".to_vec(),
            br#""\ud83d\ude00""#.to_vec(),
            br#""\u00e9\n""#.to_vec(),
            br#"{"px":187.21,"a":[true,false,null,"x"]}"#.to_vec(),
            "9".repeat(300).into_bytes(),
            format!("0.{}1", "0".repeat(400)).into_bytes(),
        ];
        for d in &accepted {
            assert_eq!(check_json_data(d), Ok(()), "{}", String::from_utf8_lossy(d));
            assert!(to_msgpack(d), "{}", String::from_utf8_lossy(d));
        }
    }

    /// A MessagePack value for tests, written with `rmp`.
    #[derive(Debug, Clone)]
    enum V {
        Nil,
        Bool(bool),
        Int(i64),
        Uint(u64),
        F32(f32),
        F64(f64),
        Str(&'static str),
        Bin(&'static [u8]),
        Ext(i8, &'static [u8]),
        Array(Vec<V>),
        Map(Vec<(V, V)>),
    }

    fn write(out: &mut Vec<u8>, v: &V) {
        use rmp::encode::*;
        match v {
            V::Nil => write_nil(out).unwrap(),
            V::Bool(b) => write_bool(out, *b).unwrap(),
            V::Int(i) => drop(write_sint(out, *i).unwrap()),
            V::Uint(u) => drop(write_uint(out, *u).unwrap()),
            V::F32(f) => write_f32(out, *f).unwrap(),
            V::F64(f) => write_f64(out, *f).unwrap(),
            V::Str(s) => write_str(out, s).unwrap(),
            V::Bin(b) => write_bin(out, b).unwrap(),
            V::Ext(t, d) => {
                write_ext_meta(out, d.len() as u32, *t).unwrap();
                out.extend_from_slice(d);
            }
            V::Array(a) => {
                write_array_len(out, a.len() as u32).unwrap();
                a.iter().for_each(|x| write(out, x));
            }
            V::Map(m) => {
                write_map_len(out, m.len() as u32).unwrap();
                for (k, x) in m {
                    write(out, k);
                    write(out, x);
                }
            }
        }
    }

    fn mp(v: &V) -> Vec<u8> {
        let mut out = Vec::new();
        write(&mut out, v);
        out
    }

    #[test]
    fn msgpack_subset() {
        let s = V::Str;
        let map = V::Map;
        let ok = map(vec![
            (s("op"), s("publish")),
            (s("n"), V::Int(-5)),
            (s("u"), V::Uint(u64::MAX)),
            (s("f"), V::F64(1.5)),
            (s("g"), V::F32(0.25)),
            (
                s("a"),
                V::Array(vec![V::Nil, V::Bool(true), map(vec![]), s("x")]),
            ),
            (s("long"), s("a string longer than thirty-one bytes: str8")),
            (s("e"), V::Array(vec![])),
        ]);
        assert_eq!(check_msgpack(&mp(&ok)), Ok(()));
        let bad = [
            (map(vec![(s("data"), V::Bin(&[1, 2]))]), "bin"),
            (map(vec![(s("op"), V::Bin(b"ping"))]), "bin"),
            (map(vec![(s("data"), V::Ext(1, &[0; 4]))]), "ext"),
            (map(vec![(s("data"), V::Ext(-1, &[0; 3]))]), "ext"),
            (
                map(vec![(
                    s("data"),
                    map(vec![(V::Int(1), s("a")), (s("1"), s("b"))]),
                )]),
                "keys",
            ),
            (map(vec![(V::Uint(0), s("ping"))]), "keys"),
            (map(vec![(V::Nil, s("x"))]), "keys"),
            (map(vec![(V::Bin(b"op"), s("ping"))]), "keys"),
            (
                map(vec![(s("data"), V::Array(vec![V::F64(f64::NAN)]))]),
                "finite",
            ),
            (map(vec![(s("x"), V::F32(f32::INFINITY))]), "finite"),
        ];
        for (v, want) in bad {
            let e = check_msgpack(&mp(&v)).unwrap_err();
            assert!(e.contains(want), "{v:?}: {e}");
        }
        // A string that is not UTF-8, nested inside `data`.
        let mut m = mp(&V::Map(vec![(
            V::Str("data"),
            V::Array(vec![V::Str("ab")]),
        )]));
        let n = m.len();
        m[n - 1] = 0xff;
        assert!(check_msgpack(&m).unwrap_err().contains("UTF-8"));
        // Truncation anywhere, and hostile lengths, are errors, not panics or hangs.
        let whole = mp(&ok);
        for cut in 0..whole.len() {
            assert!(check_msgpack(&whole[..cut]).is_err(), "cut at {cut}");
        }
        assert!(check_msgpack(&[0xdd, 0xff, 0xff, 0xff, 0xff, 0x01]).is_err());
        assert!(check_msgpack(&[0xdb, 0xff, 0xff, 0xff, 0xff]).is_err());
        let mut deep = vec![0x91; MAX_MSGPACK_DEPTH + 1];
        deep.push(0x01);
        assert!(check_msgpack(&deep).unwrap_err().contains("deep"));
        assert_eq!(check_msgpack(&deep[1..]), Ok(()));
    }
}
