//! Minimal client-side WebSocket (RFC 6455) for the load generator: the HTTP upgrade written
//! by hand, a zero-copy frame header parser over the connection's read buffer, and masked
//! client frame encoding. Deliberately small: no extensions, no TLS, no allocation per frame.

use anyhow::{bail, Context, Result};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Opcodes we act on.
pub(crate) const OP_CONT: u8 = 0x0;
pub(crate) const OP_TEXT: u8 = 0x1;
pub(crate) const OP_BINARY: u8 = 0x2;
pub(crate) const OP_CLOSE: u8 = 0x8;
pub(crate) const OP_PING: u8 = 0x9;
pub(crate) const OP_PONG: u8 = 0xA;

/// A parsed frame header; the payload is `buf[header_len..header_len + payload_len]`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Header {
    pub(crate) fin: bool,
    pub(crate) opcode: u8,
    pub(crate) header_len: usize,
    pub(crate) payload_len: usize,
    /// Servers must not mask, but if one does we unmask rather than fail.
    pub(crate) mask: Option<[u8; 4]>,
}

/// Outcome of looking at the start of the unread bytes.
#[derive(Debug)]
pub(crate) enum Parsed {
    /// Not even the header is complete.
    NeedHeader,
    /// Header known; the whole frame needs this many bytes.
    Frame(Header),
}

/// Parses a frame header at the start of `b` (server → client direction).
pub(crate) fn parse_header(b: &[u8]) -> Result<Parsed> {
    if b.len() < 2 {
        return Ok(Parsed::NeedHeader);
    }
    let fin = b[0] & 0x80 != 0;
    if b[0] & 0x70 != 0 {
        bail!("reserved bits set in server frame");
    }
    let opcode = b[0] & 0x0f;
    let masked = b[1] & 0x80 != 0;
    let len7 = (b[1] & 0x7f) as usize;
    let (payload_len, mut off) = match len7 {
        126 => {
            if b.len() < 4 {
                return Ok(Parsed::NeedHeader);
            }
            (u16::from_be_bytes([b[2], b[3]]) as usize, 4)
        }
        127 => {
            if b.len() < 10 {
                return Ok(Parsed::NeedHeader);
            }
            let mut l = [0u8; 8];
            l.copy_from_slice(&b[2..10]);
            let len = u64::from_be_bytes(l);
            if len > (1 << 30) {
                bail!("server frame of {len} bytes is beyond the loadtest's 1 GiB limit");
            }
            (len as usize, 10)
        }
        n => (n, 2),
    };
    let mask = if masked {
        if b.len() < off + 4 {
            return Ok(Parsed::NeedHeader);
        }
        let m = [b[off], b[off + 1], b[off + 2], b[off + 3]];
        off += 4;
        Some(m)
    } else {
        None
    };
    Ok(Parsed::Frame(Header {
        fin,
        opcode,
        header_len: off,
        payload_len,
        mask,
    }))
}

/// XORs `data` with the 4-byte mask (used both to mask and unmask).
pub(crate) fn apply_mask(data: &mut [u8], mask: [u8; 4]) {
    let m = u32::from_ne_bytes(mask);
    let mut chunks = data.chunks_exact_mut(4);
    for c in &mut chunks {
        let v = u32::from_ne_bytes([c[0], c[1], c[2], c[3]]) ^ m;
        c.copy_from_slice(&v.to_ne_bytes());
    }
    for (i, b) in chunks.into_remainder().iter_mut().enumerate() {
        *b ^= mask[i];
    }
}

/// Appends one masked, final client frame to `out`.
pub(crate) fn encode_frame(out: &mut Vec<u8>, opcode: u8, payload: &[u8]) {
    let mask: [u8; 4] = rand::random();
    out.push(0x80 | opcode);
    let n = payload.len();
    if n < 126 {
        out.push(0x80 | n as u8);
    } else if n <= u16::MAX as usize {
        out.push(0x80 | 126);
        out.extend_from_slice(&(n as u16).to_be_bytes());
    } else {
        out.push(0x80 | 127);
        out.extend_from_slice(&(n as u64).to_be_bytes());
    }
    out.extend_from_slice(&mask);
    let start = out.len();
    out.extend_from_slice(payload);
    apply_mask(&mut out[start..], mask);
}

/// Appends a masked close frame with `code`.
pub(crate) fn encode_close(out: &mut Vec<u8>, code: u16) {
    encode_frame(out, OP_CLOSE, &code.to_be_bytes());
}

/// Performs the HTTP/1.1 upgrade on `stream`. Bytes the server sent after the response
/// head (frames already on the wire) are copied into `buf[..n]`; returns `n`.
pub(crate) async fn handshake(
    stream: &mut TcpStream,
    host: &str,
    path: &str,
    buf: &mut [u8],
) -> Result<usize> {
    let key: [u8; 16] = rand::random();
    let req = format!(
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: {}\r\nSec-WebSocket-Version: 13\r\n\r\n",
        base64(&key)
    );
    stream
        .write_all(req.as_bytes())
        .await
        .context("sending upgrade request")?;
    let mut n = 0;
    loop {
        if n == buf.len() {
            bail!("upgrade response head larger than {} bytes", buf.len());
        }
        let r = stream
            .read(&mut buf[n..])
            .await
            .context("reading upgrade response")?;
        if r == 0 {
            bail!("connection closed during upgrade");
        }
        n += r;
        if let Some(end) = memchr::memmem::find(&buf[..n], b"\r\n\r\n") {
            let head = &buf[..end];
            let status_ok = head.starts_with(b"HTTP/1.1 101") || head.starts_with(b"HTTP/1.0 101");
            if !status_ok {
                let line = head.split(|&c| c == b'\r').next().unwrap_or_default();
                bail!("upgrade refused: {}", String::from_utf8_lossy(line));
            }
            let rest = n - (end + 4);
            buf.copy_within(end + 4..n, 0);
            return Ok(rest);
        }
    }
}

fn base64(data: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut s = String::with_capacity(data.len().div_ceil(3) * 4);
    for c in data.chunks(3) {
        let b = [c[0], *c.get(1).unwrap_or(&0), *c.get(2).unwrap_or(&0)];
        let v = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        s.push(A[(v >> 18) as usize & 63] as char);
        s.push(A[(v >> 12) as usize & 63] as char);
        s.push(if c.len() > 1 {
            A[(v >> 6) as usize & 63] as char
        } else {
            '='
        });
        s.push(if c.len() > 2 {
            A[v as usize & 63] as char
        } else {
            '='
        });
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_rfc_sample() {
        assert_eq!(base64(b"the sample nonce"), "dGhlIHNhbXBsZSBub25jZQ==");
        assert_eq!(base64(b"ab"), "YWI=");
    }

    #[test]
    fn masked_frame_round_trips() {
        let mut out = Vec::new();
        let payload = vec![7u8; 300];
        encode_frame(&mut out, OP_TEXT, &payload);
        let Parsed::Frame(h) = parse_header(&out).unwrap() else {
            panic!("incomplete")
        };
        assert_eq!(
            (h.fin, h.opcode, h.header_len, h.payload_len),
            (true, OP_TEXT, 8, 300)
        );
        let mut p = out[h.header_len..].to_vec();
        apply_mask(&mut p, h.mask.unwrap());
        assert_eq!(p, payload);
    }

    #[test]
    fn short_header_is_incomplete() {
        assert!(matches!(parse_header(&[0x81]).unwrap(), Parsed::NeedHeader));
        assert!(matches!(
            parse_header(&[0x81, 126, 1]).unwrap(),
            Parsed::NeedHeader
        ));
    }
}
