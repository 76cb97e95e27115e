// A small MessagePack codec (encode + decode) with no dependencies, for `?format=msgpack`
// connections. It covers what the server sends and accepts: nil, booleans, integers up to
// 64 bits (decoded to `number`; values above 2^53 lose precision exactly as JSON.parse
// does), float32/64, str, bin (as Uint8Array), arrays and maps with string keys. Ext types
// are rejected. Import it from "@quotecast/client/msgpack" only when you need it, or pass
// any other implementation with the same `Codec` shape.

import type { Codec } from "./codec.js";

const enc = /* @__PURE__ */ new TextEncoder();
const dec = /* @__PURE__ */ new TextDecoder();

class Writer {
  buf = new Uint8Array(256);
  view = new DataView(this.buf.buffer);
  len = 0;

  ensure(n: number): void {
    if (this.len + n <= this.buf.length) return;
    let cap = this.buf.length * 2;
    while (cap < this.len + n) cap *= 2;
    const next = new Uint8Array(cap);
    next.set(this.buf.subarray(0, this.len));
    this.buf = next;
    this.view = new DataView(next.buffer);
  }
  u8(v: number): void {
    this.ensure(1);
    this.buf[this.len++] = v;
  }
  u16(v: number): void {
    this.ensure(2);
    this.view.setUint16(this.len, v);
    this.len += 2;
  }
  u32(v: number): void {
    this.ensure(4);
    this.view.setUint32(this.len, v);
    this.len += 4;
  }
  bytes(b: Uint8Array): void {
    this.ensure(b.length);
    this.buf.set(b, this.len);
    this.len += b.length;
  }
}

function writeValue(w: Writer, v: unknown, depth: number): void {
  if (depth > 64) throw new Error("msgpack: nesting deeper than 64");
  if (v === null || v === undefined) return w.u8(0xc0);
  switch (typeof v) {
    case "boolean":
      return w.u8(v ? 0xc3 : 0xc2);
    case "number":
      return writeNumber(w, v);
    case "bigint":
      w.u8(v < 0n ? 0xd3 : 0xcf);
      w.ensure(8);
      if (v < 0n) w.view.setBigInt64(w.len, v);
      else w.view.setBigUint64(w.len, v);
      w.len += 8;
      return;
    case "string": {
      const b = enc.encode(v);
      const n = b.length;
      if (n < 32) w.u8(0xa0 | n);
      else if (n < 0x100) (w.u8(0xd9), w.u8(n));
      else if (n < 0x10000) (w.u8(0xda), w.u16(n));
      else (w.u8(0xdb), w.u32(n));
      return w.bytes(b);
    }
    case "object": {
      if (v instanceof Uint8Array) {
        const n = v.length;
        if (n < 0x100) (w.u8(0xc4), w.u8(n));
        else if (n < 0x10000) (w.u8(0xc5), w.u16(n));
        else (w.u8(0xc6), w.u32(n));
        return w.bytes(v);
      }
      if (Array.isArray(v)) {
        const n = v.length;
        if (n < 16) w.u8(0x90 | n);
        else if (n < 0x10000) (w.u8(0xdc), w.u16(n));
        else (w.u8(0xdd), w.u32(n));
        for (const x of v) writeValue(w, x, depth + 1);
        return;
      }
      const entries = Object.entries(v as Record<string, unknown>).filter(([, x]) => x !== undefined);
      const n = entries.length;
      if (n < 16) w.u8(0x80 | n);
      else if (n < 0x10000) (w.u8(0xde), w.u16(n));
      else (w.u8(0xdf), w.u32(n));
      for (const [k, x] of entries) {
        writeValue(w, k, depth + 1);
        writeValue(w, x, depth + 1);
      }
      return;
    }
    default:
      throw new Error(`msgpack: cannot encode a ${typeof v}`);
  }
}

function writeNumber(w: Writer, v: number): void {
  if (Number.isInteger(v) && Number.isSafeInteger(v)) {
    if (v >= 0) {
      if (v < 0x80) return w.u8(v);
      if (v < 0x100) return (w.u8(0xcc), w.u8(v));
      if (v < 0x10000) return (w.u8(0xcd), w.u16(v));
      if (v < 0x100000000) return (w.u8(0xce), w.u32(v));
      w.u8(0xcf);
      w.ensure(8);
      w.view.setBigUint64(w.len, BigInt(v));
      w.len += 8;
      return;
    }
    if (v >= -32) return w.u8(v & 0xff);
    if (v >= -0x80) return (w.u8(0xd0), w.u8(v & 0xff));
    if (v >= -0x8000) return (w.u8(0xd1), w.u16(v & 0xffff));
    if (v >= -0x80000000) return (w.u8(0xd2), w.u32(v >>> 0));
    w.u8(0xd3);
    w.ensure(8);
    w.view.setBigInt64(w.len, BigInt(v));
    w.len += 8;
    return;
  }
  w.u8(0xcb);
  w.ensure(8);
  w.view.setFloat64(w.len, v);
  w.len += 8;
}

/** Encodes a value as MessagePack. */
export function encode(value: unknown): Uint8Array {
  const w = new Writer();
  writeValue(w, value, 0);
  return w.buf.slice(0, w.len);
}

class Reader {
  pos = 0;
  readonly view: DataView;
  constructor(readonly buf: Uint8Array) {
    this.view = new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
  }
  need(n: number): number {
    const p = this.pos;
    if (p + n > this.buf.length) throw new Error("msgpack: truncated input");
    this.pos = p + n;
    return p;
  }
}

function readValue(r: Reader, depth: number): unknown {
  if (depth > 128) throw new Error("msgpack: nesting too deep");
  const b = r.buf[r.need(1)];
  if (b < 0x80) return b;
  if (b >= 0xe0) return b - 0x100;
  if ((b & 0xf0) === 0x80) return readMap(r, b & 0x0f, depth);
  if ((b & 0xf0) === 0x90) return readArray(r, b & 0x0f, depth);
  if ((b & 0xe0) === 0xa0) return readStr(r, b & 0x1f);
  const v = r.view;
  switch (b) {
    case 0xc0:
      return null;
    case 0xc2:
      return false;
    case 0xc3:
      return true;
    case 0xc4:
      return readBin(r, v.getUint8(r.need(1)));
    case 0xc5:
      return readBin(r, v.getUint16(r.need(2)));
    case 0xc6:
      return readBin(r, v.getUint32(r.need(4)));
    case 0xca:
      return v.getFloat32(r.need(4));
    case 0xcb:
      return v.getFloat64(r.need(8));
    case 0xcc:
      return v.getUint8(r.need(1));
    case 0xcd:
      return v.getUint16(r.need(2));
    case 0xce:
      return v.getUint32(r.need(4));
    case 0xcf: {
      const p = r.need(8);
      return v.getUint32(p) * 0x100000000 + v.getUint32(p + 4);
    }
    case 0xd0:
      return v.getInt8(r.need(1));
    case 0xd1:
      return v.getInt16(r.need(2));
    case 0xd2:
      return v.getInt32(r.need(4));
    case 0xd3: {
      const p = r.need(8);
      return v.getInt32(p) * 0x100000000 + v.getUint32(p + 4);
    }
    case 0xd9:
      return readStr(r, v.getUint8(r.need(1)));
    case 0xda:
      return readStr(r, v.getUint16(r.need(2)));
    case 0xdb:
      return readStr(r, v.getUint32(r.need(4)));
    case 0xdc:
      return readArray(r, v.getUint16(r.need(2)), depth);
    case 0xdd:
      return readArray(r, v.getUint32(r.need(4)), depth);
    case 0xde:
      return readMap(r, v.getUint16(r.need(2)), depth);
    case 0xdf:
      return readMap(r, v.getUint32(r.need(4)), depth);
    default:
      throw new Error(`msgpack: unsupported type byte 0x${b.toString(16)}`);
  }
}

function readStr(r: Reader, n: number): string {
  const p = r.need(n);
  return dec.decode(r.buf.subarray(p, p + n));
}

function readBin(r: Reader, n: number): Uint8Array {
  const p = r.need(n);
  return r.buf.slice(p, p + n);
}

function readArray(r: Reader, n: number, depth: number): unknown[] {
  const out = new Array(n);
  for (let i = 0; i < n; i++) out[i] = readValue(r, depth + 1);
  return out;
}

function readMap(r: Reader, n: number, depth: number): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (let i = 0; i < n; i++) {
    const k = readValue(r, depth + 1);
    const key = typeof k === "string" ? k : String(k);
    const val = readValue(r, depth + 1);
    // Defined as an own property so that a "__proto__" key cannot reach the prototype.
    Object.defineProperty(out, key, { value: val, enumerable: true, writable: true, configurable: true });
  }
  return out;
}

/** Decodes one MessagePack value; throws on truncated input or trailing bytes. */
export function decode(data: ArrayBuffer | Uint8Array): unknown {
  const r = new Reader(data instanceof Uint8Array ? data : new Uint8Array(data));
  const v = readValue(r, 0);
  if (r.pos !== r.buf.length) throw new Error("msgpack: trailing bytes");
  return v;
}

/** MessagePack binary frames: pass as `codec` to `QuotecastClient`. */
export const msgpackCodec: Codec = {
  name: "msgpack",
  encode,
  decode: (data) => {
    if (typeof data === "string") return JSON.parse(data);
    return decode(data);
  },
};
