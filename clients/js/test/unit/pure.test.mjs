// Unit tests of the pure parts: backoff, JWT expiry, URL building, MessagePack.
import { test } from "node:test";
import assert from "node:assert/strict";
import { backoffDelay, shutdownDelay, jwtExpiry, refreshAt, buildUrl, DEFAULT_BACKOFF } from "../../dist/index.js";
import { encode, decode, msgpackCodec } from "../../dist/msgpack.js";
import { jsonCodec } from "../../dist/codec.js";

test("backoff grows exponentially, is capped, and jitter only shortens it", () => {
  const o = { initialMs: 100, maxMs: 1000, factor: 2, jitter: 0.5 };
  assert.equal(backoffDelay(0, o, 0), 100);
  assert.equal(backoffDelay(1, o, 0), 200);
  assert.equal(backoffDelay(3, o, 0), 800);
  assert.equal(backoffDelay(4, o, 0), 1000);
  assert.equal(backoffDelay(50, o, 0), 1000);
  assert.equal(backoffDelay(4, o, 0.99), 505);
  for (let i = 0; i < 1000; i++) {
    const d = backoffDelay(i % 12, o);
    assert.ok(d >= 50 && d <= 1000, `delay ${d}`);
  }
  assert.equal(backoffDelay(0, {}, 0), DEFAULT_BACKOFF.initialMs);
  assert.equal(backoffDelay(100, { jitter: 0 }, 0.9), DEFAULT_BACKOFF.maxMs);
});

test("after server_shutdown the delay is reconnect_ms plus up to jitter of it", () => {
  assert.equal(shutdownDelay(1000, { jitter: 0.5 }, 0), 1000);
  assert.equal(shutdownDelay(1000, { jitter: 0.5 }, 0.999), 1500);
  assert.equal(shutdownDelay(-5, {}, 0.5), 0);
});

const b64url = (o) => Buffer.from(JSON.stringify(o)).toString("base64url");
const jwt = (claims) => `${b64url({ alg: "HS256", typ: "JWT" })}.${b64url(claims)}.c2ln`;

test("jwtExpiry reads exp (seconds) as ms; non-JWTs and tokens without exp give undefined", () => {
  assert.equal(jwtExpiry(jwt({ sub: "42", exp: 1700000000 })), 1700000000000);
  assert.equal(jwtExpiry(jwt({ sub: "42", name: "Zoë ✓" })), undefined);
  assert.equal(jwtExpiry("opaque-token"), undefined);
  assert.equal(jwtExpiry("a.!!!.c"), undefined);
});

test("refreshAt is margin before expiry but never sooner than minMs", () => {
  assert.equal(refreshAt(100_000, 0, 30_000), 70_000);
  assert.equal(refreshAt(10_000, 0, 30_000), 1_000);
  assert.equal(refreshAt(10_000, 5_000, 30_000, 500), 5_500);
});

test("buildUrl sets format and token, and maps http to ws", () => {
  assert.equal(buildUrl("ws://h:1/ws", { format: undefined, token: undefined }), "ws://h:1/ws");
  assert.equal(buildUrl("http://h:1/ws?x=1", { format: "msgpack", token: "a b&c" }), "ws://h:1/ws?x=1&format=msgpack&token=a+b%26c");
  assert.equal(buildUrl("https://h/ws", {}), "wss://h/ws");
});

test("MessagePack round-trips every type the server uses", () => {
  const values = [
    null, true, false, 0, 1, 127, 128, 255, 256, 65535, 65536, 2 ** 32 - 1, 2 ** 32, 2 ** 53 - 1,
    -1, -32, -33, -128, -129, -32768, -32769, -(2 ** 31), -(2 ** 31) - 1, -(2 ** 53) + 1,
    0.5, -1.25, 1e300, "", "a", "é✓😀", "x".repeat(31), "x".repeat(32), "x".repeat(300), "x".repeat(70000),
    [], [1, [2, [3]]], new Array(20).fill(7), new Array(70000).fill(0),
    {}, { a: 1, b: { c: [1, "2", null] } }, Object.fromEntries(Array.from({ length: 20 }, (_, i) => [`k${i}`, i])),
    new Uint8Array([1, 2, 3]),
  ];
  for (const v of values) assert.deepEqual(decode(encode(v)), v);
});

test("MessagePack decodes 64-bit integers like JSON.parse does (as numbers)", () => {
  const ts = 1795459607045674800;
  const bytes = new Uint8Array(9);
  bytes[0] = 0xcf;
  new DataView(bytes.buffer).setBigUint64(1, BigInt("1795459607045674800"));
  assert.equal(decode(bytes), ts);
  assert.equal(decode(encode(ts)), ts);
  assert.equal(decode(new Uint8Array([0xca, 0x3f, 0xc0, 0, 0])), 1.5);
});

test("MessagePack rejects truncated input, trailing bytes and ext types; __proto__ stays data", () => {
  assert.throws(() => decode(new Uint8Array([0xa5, 0x61])), /truncated/);
  assert.throws(() => decode(new Uint8Array([0x01, 0x02])), /trailing/);
  assert.throws(() => decode(new Uint8Array([0xd4, 0, 0])), /unsupported/);
  const evil = decode(encode(JSON.parse('{"__proto__":{"polluted":1}}')));
  assert.equal({}.polluted, undefined);
  assert.deepEqual(Object.keys(evil), ["__proto__"]);
});

test("codecs: JSON text, MessagePack binary (ArrayBuffer or Uint8Array)", () => {
  const op = { op: "ping", id: 1 };
  assert.equal(jsonCodec.encode(op), '{"op":"ping","id":1}');
  assert.deepEqual(jsonCodec.decode(new TextEncoder().encode('{"a":1}').buffer), { a: 1 });
  const bin = msgpackCodec.encode(op);
  assert.ok(bin instanceof Uint8Array);
  assert.deepEqual(msgpackCodec.decode(bin.buffer.slice(bin.byteOffset, bin.byteOffset + bin.byteLength)), op);
  assert.deepEqual(msgpackCodec.decode(bin), op);
});
