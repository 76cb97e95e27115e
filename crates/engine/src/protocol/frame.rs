//! RFC 6455 framing (protocol layer): server frames built once into shared `Bytes`, and a
//! strict decoder for client frames that works in place on the bytes read from the socket.
//!
//! Why our own codec rather than tungstenite's: the server writes each event's complete
//! frame once and hands the same `Bytes` to every socket, which tungstenite cannot do (its
//! `write` copies every payload into the connection's own write buffer). On the read side
//! tungstenite keeps a per-connection read buffer (128 KiB by default, allocated per
//! connection) and owns the socket, so our vectored writer could not share it. This decoder
//! keeps no buffer of its own: the shard reads into one scratch buffer, frames are unmasked
//! in place, and a connection only keeps the tail of a frame that has not fully arrived.
//! tungstenite is still used for the handshake's accept key.

use super::close::CloseCode;
use bytes::Bytes;

/// WebSocket opcodes the server sends or accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpCode {
    /// Continuation of a fragmented message.
    Continue = 0x0,
    /// UTF-8 text message.
    Text = 0x1,
    /// Binary message.
    Binary = 0x2,
    /// Close.
    Close = 0x8,
    /// Ping.
    Ping = 0x9,
    /// Pong.
    Pong = 0xA,
}

/// Largest server frame header: 2 bytes + 8-byte extended length.
pub const MAX_HEADER: usize = 10;

/// A growable buffer that reserves room for the frame header in front of the payload, so a
/// frame is built with one allocation and no copy: write the payload, then `finish`.
#[derive(Debug)]
pub struct FrameBuf {
    buf: Vec<u8>,
}

impl FrameBuf {
    /// A buffer expecting about `payload` bytes.
    pub fn with_capacity(payload: usize) -> Self {
        let mut buf = Vec::with_capacity(MAX_HEADER + payload);
        buf.extend_from_slice(&[0u8; MAX_HEADER]);
        FrameBuf { buf }
    }

    /// The payload written so far is everything after the reserved header room.
    pub fn payload_mut(&mut self) -> &mut Vec<u8> {
        &mut self.buf
    }

    /// Writes the header in front of the payload and returns the complete frame.
    pub fn finish(mut self, op: OpCode) -> Bytes {
        let len = self.buf.len() - MAX_HEADER;
        let mut hdr = [0u8; MAX_HEADER];
        let n = write_header(&mut hdr, op, len);
        let start = MAX_HEADER - n;
        self.buf[start..MAX_HEADER].copy_from_slice(&hdr[..n]);
        Bytes::from(self.buf).slice(start..)
    }
}

/// Writes an unmasked server frame header with FIN set; returns its length.
pub fn write_header(out: &mut [u8; MAX_HEADER], op: OpCode, len: usize) -> usize {
    out[0] = 0x80 | op as u8;
    if len < 126 {
        out[1] = len as u8;
        2
    } else if len <= u16::MAX as usize {
        out[1] = 126;
        out[2..4].copy_from_slice(&(len as u16).to_be_bytes());
        4
    } else {
        out[1] = 127;
        out[2..10].copy_from_slice(&(len as u64).to_be_bytes());
        10
    }
}

/// A complete unmasked frame with `payload`.
pub fn frame(op: OpCode, payload: &[u8]) -> Bytes {
    let mut fb = FrameBuf::with_capacity(payload.len());
    fb.payload_mut().extend_from_slice(payload);
    fb.finish(op)
}

/// A close frame with a status code and a reason (truncated to fit a control frame).
pub fn close_frame(code: u16, reason: &str) -> Bytes {
    let mut p = Vec::with_capacity(2 + reason.len());
    p.extend_from_slice(&code.to_be_bytes());
    let mut r = reason.len().min(123);
    while !reason.is_char_boundary(r) {
        r -= 1;
    }
    p.extend_from_slice(&reason.as_bytes()[..r]);
    frame(OpCode::Close, &p)
}

/// A violation of RFC 6455 by the client: the connection is closed with `code`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{reason}")]
pub struct ProtocolError {
    /// Close code to send (1002, 1007 or 1009).
    pub code: CloseCode,
    /// Close reason to send.
    pub reason: &'static str,
}

fn perr(reason: &'static str) -> ProtocolError {
    ProtocolError {
        code: CloseCode::ProtocolError,
        reason,
    }
}

/// One complete client message, borrowed from the input (or the fragment buffer).
#[derive(Debug, PartialEq, Eq)]
pub enum Message<'a> {
    /// A text message; already checked to be UTF-8.
    Text(&'a [u8]),
    /// A binary message.
    Binary(&'a [u8]),
    /// A ping with its payload (to be echoed in a pong).
    Ping(&'a [u8]),
    /// A pong.
    Pong,
    /// A close frame with its code (1005 when none was sent).
    Close(u16),
    /// A message longer than the limit arrived and is being skipped unread.
    TooLarge,
}

/// Per-connection decoder state. Small on purpose: an idle connection holds only this.
#[derive(Debug)]
pub struct Decoder {
    max_message: usize,
    /// Assembly of a fragmented data message: its opcode and the bytes so far.
    frag: Option<(OpCode, Vec<u8>)>,
    /// Payload bytes of the current oversized frame still to be discarded.
    skip: u64,
    /// The rest of the current fragmented message is being discarded (it grew too large).
    discard_message: bool,
}

/// Hard cap on one frame's declared length, as a multiple of `max_message`: frames up to
/// this are skipped (the connection lives on), longer ones close the connection with 1009.
pub const SKIP_FACTOR: u64 = 16;

impl Decoder {
    /// A decoder accepting messages up to `max_message` bytes.
    pub fn new(max_message: usize) -> Self {
        Decoder {
            max_message,
            frag: None,
            skip: 0,
            discard_message: false,
        }
    }

    /// Changes the largest accepted message (the server lowers it until a connection has
    /// authenticated). A message already being assembled keeps the limit it started with
    /// only if it still fits the new one; otherwise it is dropped as too large.
    pub fn set_max_message(&mut self, max_message: usize) {
        self.max_message = max_message;
        if self
            .frag
            .as_ref()
            .is_some_and(|(_, b)| b.len() > max_message)
        {
            self.frag = None;
            self.discard_message = true;
        }
    }

    /// The largest accepted message.
    pub fn max_message(&self) -> usize {
        self.max_message
    }

    /// Decodes as many complete frames from `input` as possible, unmasking them in place and
    /// calling `on` for each complete message. Returns how many bytes were consumed; the
    /// caller keeps the rest for the next read. Stops early when `on` returns `false`.
    pub fn decode(
        &mut self,
        input: &mut [u8],
        mut on: impl FnMut(Message<'_>) -> bool,
    ) -> Result<usize, ProtocolError> {
        let mut pos = 0usize;
        loop {
            if self.skip > 0 {
                let n = (self.skip).min((input.len() - pos) as u64) as usize;
                pos += n;
                self.skip -= n as u64;
                if self.skip > 0 {
                    return Ok(pos);
                }
            }
            let buf = &mut input[pos..];
            let Some(h) = parse_header(buf)? else {
                return Ok(pos);
            };
            let is_control = (h.opcode as u8) & 0x8 != 0;
            if is_control {
                if !h.fin {
                    return Err(perr("fragmented control frame"));
                }
                if h.len > 125 {
                    return Err(perr("control frame longer than 125 bytes"));
                }
            }
            // Oversized data frames are skipped without buffering.
            if !is_control {
                let so_far = self.frag.as_ref().map_or(0, |(_, b)| b.len()) as u64;
                let limit = self.max_message as u64;
                if h.len > limit.saturating_mul(SKIP_FACTOR) {
                    return Err(ProtocolError {
                        code: CloseCode::TooLarge,
                        reason: "frame too large",
                    });
                }
                match h.opcode {
                    OpCode::Continue if self.frag.is_none() && !self.discard_message => {
                        return Err(perr("continuation frame without a message to continue"))
                    }
                    OpCode::Text | OpCode::Binary
                        if self.frag.is_some() || self.discard_message =>
                    {
                        return Err(perr("new message before the fragmented one ended"))
                    }
                    _ => {}
                }
                if self.discard_message || so_far + h.len > limit {
                    let announce = !self.discard_message;
                    self.frag = None;
                    self.discard_message = !h.fin;
                    let avail = (buf.len() - h.header_len) as u64;
                    let take = h.len.min(avail);
                    pos += h.header_len + take as usize;
                    self.skip = h.len - take;
                    if announce && !on(Message::TooLarge) {
                        return Ok(pos);
                    }
                    continue;
                }
            }
            let total = h.header_len + h.len as usize;
            if buf.len() < total {
                return Ok(pos);
            }
            let payload = &mut buf[h.header_len..total];
            unmask(payload, h.mask);
            pos += total;
            let keep_going = match h.opcode {
                OpCode::Ping => on(Message::Ping(payload)),
                OpCode::Pong => on(Message::Pong),
                OpCode::Close => {
                    let code = match payload.len() {
                        0 => 1005,
                        1 => return Err(perr("close frame with a 1-byte payload")),
                        _ => {
                            if std::str::from_utf8(&payload[2..]).is_err() {
                                return Err(ProtocolError {
                                    code: CloseCode::InvalidUtf8,
                                    reason: "invalid utf-8",
                                });
                            }
                            let code = u16::from_be_bytes([payload[0], payload[1]]);
                            if !CloseCode::valid_from_peer(code) {
                                return Err(perr("invalid close code"));
                            }
                            code
                        }
                    };
                    on(Message::Close(code))
                }
                OpCode::Text | OpCode::Binary if h.fin => deliver(h.opcode, payload, &mut on)?,
                OpCode::Text | OpCode::Binary => {
                    self.frag = Some((h.opcode, payload.to_vec()));
                    true
                }
                OpCode::Continue => {
                    let Some((op, mut acc)) = self.frag.take() else {
                        return Err(perr("continuation frame without a message to continue"));
                    };
                    acc.extend_from_slice(payload);
                    if h.fin {
                        deliver(op, &mut acc, &mut on)?
                    } else {
                        self.frag = Some((op, acc));
                        true
                    }
                }
            };
            if !keep_going {
                return Ok(pos);
            }
        }
    }
}

fn deliver(
    op: OpCode,
    payload: &mut [u8],
    on: &mut impl FnMut(Message<'_>) -> bool,
) -> Result<bool, ProtocolError> {
    if op == OpCode::Text {
        if std::str::from_utf8(payload).is_err() {
            return Err(ProtocolError {
                code: CloseCode::InvalidUtf8,
                reason: "invalid utf-8",
            });
        }
        Ok(on(Message::Text(payload)))
    } else {
        Ok(on(Message::Binary(payload)))
    }
}

struct Header {
    fin: bool,
    opcode: OpCode,
    mask: [u8; 4],
    len: u64,
    header_len: usize,
}

/// Parses a client frame header; `None` when more bytes are needed (checked before any
/// parsing, as mini-redis's `Frame::check` does).
fn parse_header(buf: &[u8]) -> Result<Option<Header>, ProtocolError> {
    if buf.len() < 2 {
        return Ok(None);
    }
    let b0 = buf[0];
    let b1 = buf[1];
    if b0 & 0x70 != 0 {
        return Err(perr("reserved bits set"));
    }
    let opcode = match b0 & 0x0F {
        0x0 => OpCode::Continue,
        0x1 => OpCode::Text,
        0x2 => OpCode::Binary,
        0x8 => OpCode::Close,
        0x9 => OpCode::Ping,
        0xA => OpCode::Pong,
        _ => return Err(perr("unknown opcode")),
    };
    if b1 & 0x80 == 0 {
        return Err(perr("client frame is not masked"));
    }
    let (len, ext) = match b1 & 0x7F {
        126 => {
            if buf.len() < 4 {
                return Ok(None);
            }
            (u16::from_be_bytes([buf[2], buf[3]]) as u64, 2)
        }
        127 => {
            if buf.len() < 10 {
                return Ok(None);
            }
            let mut b = [0u8; 8];
            b.copy_from_slice(&buf[2..10]);
            let l = u64::from_be_bytes(b);
            if l >> 63 != 0 {
                return Err(perr("64-bit length with the top bit set"));
            }
            (l, 8)
        }
        n => (n as u64, 0),
    };
    let header_len = 2 + ext + 4;
    if buf.len() < header_len {
        return Ok(None);
    }
    let mut mask = [0u8; 4];
    mask.copy_from_slice(&buf[2 + ext..header_len]);
    Ok(Some(Header {
        fin: b0 & 0x80 != 0,
        opcode,
        mask,
        len,
        header_len,
    }))
}

/// XORs `data` with the 4-byte mask, eight bytes at a time.
pub fn unmask(data: &mut [u8], mask: [u8; 4]) {
    let m8 = u64::from_ne_bytes([
        mask[0], mask[1], mask[2], mask[3], mask[0], mask[1], mask[2], mask[3],
    ]);
    let mut chunks = data.chunks_exact_mut(8);
    for c in &mut chunks {
        let mut w = [0u8; 8];
        w.copy_from_slice(c);
        c.copy_from_slice(&(u64::from_ne_bytes(w) ^ m8).to_ne_bytes());
    }
    let rest = chunks.into_remainder();
    for (i, b) in rest.iter_mut().enumerate() {
        *b ^= mask[i & 3];
    }
}

/// Builds a masked client frame (used by tests and the fuzz corpus).
pub fn client_frame(fin: bool, opcode: u8, payload: &[u8], mask: [u8; 4]) -> Vec<u8> {
    let mut v = vec![(if fin { 0x80 } else { 0 }) | opcode];
    let len = payload.len();
    if len < 126 {
        v.push(0x80 | len as u8);
    } else if len <= 0xFFFF {
        v.push(0x80 | 126);
        v.extend_from_slice(&(len as u16).to_be_bytes());
    } else {
        v.push(0x80 | 127);
        v.extend_from_slice(&(len as u64).to_be_bytes());
    }
    v.extend_from_slice(&mask);
    let start = v.len();
    v.extend_from_slice(payload);
    unmask(&mut v[start..], mask);
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    fn collect(dec: &mut Decoder, input: &mut [u8]) -> (Result<usize, ProtocolError>, Vec<String>) {
        let mut out = Vec::new();
        let r = dec.decode(input, |m| {
            out.push(match m {
                Message::Text(t) => format!("text:{}", String::from_utf8_lossy(t)),
                Message::Binary(b) => format!("bin:{}", b.len()),
                Message::Ping(p) => format!("ping:{}", p.len()),
                Message::Pong => "pong".into(),
                Message::Close(c) => format!("close:{c}"),
                Message::TooLarge => "too_large".into(),
            });
            true
        });
        (r, out)
    }

    #[test]
    fn server_frame_headers() {
        for len in [0usize, 125, 126, 65535, 65536, 100_000] {
            let f = frame(OpCode::Text, &vec![b'x'; len]);
            let hl = if len < 126 {
                2
            } else if len <= 65535 {
                4
            } else {
                10
            };
            assert_eq!(f.len(), hl + len);
            assert_eq!(f[0], 0x81);
        }
        let c = close_frame(1012, "server restart");
        assert_eq!(&c[..4], &[0x88, 16, 0x03, 0xF4]);
    }

    #[test]
    fn decodes_masked_frames_and_keeps_partial_tail() {
        let mut wire = client_frame(true, 1, b"hello", [1, 2, 3, 4]);
        wire.extend(client_frame(true, 2, &[7u8; 300], [9, 8, 7, 6]));
        let partial = client_frame(true, 1, b"later", [5, 5, 5, 5]);
        wire.extend_from_slice(&partial[..4]);
        let mut d = Decoder::new(1024);
        let (r, out) = collect(&mut d, &mut wire);
        assert_eq!(out, vec!["text:hello", "bin:300"]);
        assert_eq!(r.unwrap(), wire.len() - 4);
    }

    #[test]
    fn reassembles_fragments_with_interleaved_ping() {
        let mut wire = client_frame(false, 1, b"hel", [1, 1, 1, 1]);
        wire.extend(client_frame(true, 9, b"p", [2, 2, 2, 2]));
        wire.extend(client_frame(true, 0, b"lo", [3, 3, 3, 3]));
        let mut d = Decoder::new(1024);
        let (r, out) = collect(&mut d, &mut wire);
        assert_eq!(out, vec!["ping:1", "text:hello"]);
        assert_eq!(r.unwrap(), wire.len());
    }

    #[test]
    fn skips_oversized_message_across_reads() {
        let mut d = Decoder::new(100);
        let mut big = client_frame(true, 1, &[b'a'; 1000], [1, 2, 3, 4]);
        let mut tail = big.split_off(500);
        let (r, out) = collect(&mut d, &mut big);
        assert_eq!(out, vec!["too_large"]);
        assert_eq!(r.unwrap(), 500);
        tail.extend(client_frame(true, 1, b"ok", [1, 2, 3, 4]));
        let (r, out) = collect(&mut d, &mut tail);
        assert_eq!(out, vec!["text:ok"]);
        assert_eq!(r.unwrap(), tail.len());
    }

    #[test]
    fn oversized_fragmented_message_is_discarded_whole() {
        let mut d = Decoder::new(10);
        let mut wire = client_frame(false, 1, b"12345678", [1, 2, 3, 4]);
        wire.extend(client_frame(false, 0, b"12345678", [1, 2, 3, 4]));
        wire.extend(client_frame(true, 0, b"12345678", [1, 2, 3, 4]));
        wire.extend(client_frame(true, 1, b"next", [1, 2, 3, 4]));
        let (r, out) = collect(&mut d, &mut wire);
        assert_eq!(out, vec!["too_large", "text:next"]);
        assert_eq!(r.unwrap(), wire.len());
    }

    #[test]
    fn protocol_violations() {
        let cases: Vec<(Vec<u8>, u16)> = vec![
            (vec![0x81, 0x02, b'h', b'i'], 1002),                 // unmasked
            (client_frame(true, 3, b"", [0; 4]), 1002),           // bad opcode
            (client_frame(false, 9, b"", [0; 4]), 1002),          // fragmented control
            (client_frame(true, 9, &[0u8; 126], [0; 4]), 1002),   // long control
            (client_frame(true, 0, b"x", [0; 4]), 1002),          // orphan continuation
            (client_frame(true, 1, &[0xff, 0xfe], [0; 4]), 1007), // bad utf-8
            (client_frame(true, 8, &[3], [0; 4]), 1002),          // 1-byte close
            (vec![0xC1, 0x80, 0, 0, 0, 0], 1002),                 // RSV1
            (
                vec![0x82, 0xFF, 0x80, 0, 0, 0, 0, 0, 0, 0, 1, 2, 3, 4],
                1002,
            ), // top bit
            (vec![0x82, 0xFF, 0, 0, 0, 1, 0, 0, 0, 0, 1, 2, 3, 4], 1009), // 4 GiB
        ];
        for (mut wire, code) in cases {
            let mut d = Decoder::new(1024);
            let (r, _) = collect(&mut d, &mut wire);
            assert_eq!(r.unwrap_err().code.code(), code, "{wire:?}");
        }
        let mut d = Decoder::new(1024);
        let mut wire = client_frame(false, 1, b"a", [0; 4]);
        wire.extend(client_frame(true, 1, b"b", [0; 4]));
        assert_eq!(collect(&mut d, &mut wire).0.unwrap_err().code.code(), 1002);
    }

    #[test]
    fn close_codes() {
        let mut d = Decoder::new(1024);
        let mut wire = client_frame(true, 8, &[0x03, 0xE8, b'o', b'k'], [4, 3, 2, 1]);
        assert_eq!(collect(&mut d, &mut wire).1, vec!["close:1000"]);
        let mut wire = client_frame(true, 8, b"", [4, 3, 2, 1]);
        assert_eq!(collect(&mut d, &mut wire).1, vec!["close:1005"]);
        for code in [1001u16, 1003, 1007, 1011, 1012, 1014, 3000, 4000, 4999] {
            let mut wire = client_frame(true, 8, &code.to_be_bytes(), [4, 3, 2, 1]);
            assert_eq!(collect(&mut d, &mut wire).1, vec![format!("close:{code}")]);
        }
    }

    /// The bug: invalid close codes were accepted (and echoed back to the client).
    #[test]
    fn invalid_close_codes_are_protocol_errors() {
        for code in [
            0u16,
            999,
            1004,
            1005,
            1006,
            1015,
            1016,
            2999,
            5000,
            u16::MAX,
        ] {
            let mut d = Decoder::new(1024);
            let mut wire = client_frame(true, 8, &code.to_be_bytes(), [4, 3, 2, 1]);
            let (r, out) = collect(&mut d, &mut wire);
            assert_eq!(r.unwrap_err().code.code(), 1002, "{code}");
            assert!(out.is_empty(), "{code}: {out:?}");
        }
        let mut d = Decoder::new(1024);
        let mut wire = client_frame(true, 8, &[0x03, 0xE8, 0xff], [4, 3, 2, 1]);
        assert_eq!(collect(&mut d, &mut wire).0.unwrap_err().code.code(), 1007);
    }

    #[test]
    fn unmask_matches_bytewise() {
        let mask = [0xde, 0xad, 0xbe, 0xef];
        for len in 0..40 {
            let orig: Vec<u8> = (0..len as u8).collect();
            let mut fast = orig.clone();
            unmask(&mut fast, mask);
            let slow: Vec<u8> = orig
                .iter()
                .enumerate()
                .map(|(i, b)| b ^ mask[i % 4])
                .collect();
            assert_eq!(fast, slow);
        }
    }
}
