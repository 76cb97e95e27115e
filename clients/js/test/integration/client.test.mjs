// The client against a real quotecast server (target/release/quotecast) started per test:
// delivery, reconnect after a network cut and after a server restart on the same port,
// gap-free resume, the recovered:false path, MessagePack, tokens (real JWT auth), conflation.
import { test } from "node:test";
import assert from "node:assert/strict";
import { QuotecastClient } from "../../dist/index.js";
import { msgpackCodec } from "../../dist/msgpack.js";
import { createHmac } from "node:crypto";
import { startServer, startProxy, publishHttp, waitFor, sleep, recordingWebSocket } from "../helpers.mjs";

const FAST = { initialMs: 50, maxMs: 400, jitter: 0.5 };
const orders = (n, from = 0) =>
  Array.from({ length: n }, (_, i) => ({ channel: "trades.TEST", event: "order_update", data: { n: from + i } }));

function collect(client, channel, opts = { snapshot: false }) {
  const got = { events: [], acks: [], failures: [], conflated: [] };
  got.sub = client.subscribe(channel, {
    onEvent: (ev) => got.events.push(ev),
    onSubscribed: (a) => got.acks.push(a),
    onRecoveryFailed: (f) => got.failures.push(f),
    onConflated: (c) => got.conflated.push(c),
  }, opts);
  return got;
}
const seqs = (got) => got.events.map((e) => e.seq);
const range = (a, b) => Array.from({ length: b - a + 1 }, (_, i) => a + i);

test("delivers events in order, measures latency, publishes, unsubscribes", { timeout: 20_000 }, async (t) => {
  const srv = await startServer();
  t.after(() => srv.stop());
  const client = new QuotecastClient({ url: srv.url, pingIntervalMs: 100, reconnect: FAST, autoConnect: false });
  t.after(() => client.close());
  const states = [];
  client.on("state", (s) => states.push(s.state));
  client.connect();
  const got = collect(client, "trades.TEST");
  await waitFor(() => got.acks.length === 1, 5_000, "ack");
  assert.equal(client.state, "open");
  assert.deepEqual(states.slice(), ["connecting", "open"]);
  assert.match(client.welcome.conn_id, /^\d+-\d+$/);
  await publishHttp(srv.port, orders(5));
  assert.equal(await client.publish("trades.TEST", "order_update", { n: 5 }), 6);
  await waitFor(() => got.events.length === 6, 5_000, "6 events");
  assert.deepEqual(seqs(got), range(1, 6));
  assert.deepEqual(got.events.map((e) => e.data.n), range(0, 5));
  await waitFor(() => client.latency, 5_000, "a latency sample");
  assert.ok(client.latency.rttMs >= 0 && client.latency.rttMs < 1000);
  assert.ok(Math.abs(client.eventLatencyMs(got.events[0])) < 60_000);
  assert.ok((await client.ping()) >= 0);

  got.sub.unsubscribe();
  await client.ping(); // barrier: the unsubscribe was processed
  await publishHttp(srv.port, orders(2));
  await client.ping();
  await sleep(50);
  assert.equal(got.events.length, 6, "no events after unsubscribe");
  await assert.rejects(client.publish("bad..channel", "e", 1), (e) => e.code === "bad_channel");
});

test("a network cut: reconnects with backoff and resumes with no missing or duplicate seq", { timeout: 20_000 }, async (t) => {
  const srv = await startServer();
  const proxy = await startProxy(srv.port);
  t.after(async () => { await proxy.close(); await srv.stop(); });
  const client = new QuotecastClient({ url: proxy.url, pingIntervalMs: 0, reconnect: FAST });
  t.after(() => client.close());
  const got = collect(client, "trades.TEST");
  const failed = [];
  client.on("recoveryFailed", (f) => failed.push(f));
  const states = [];
  client.on("state", (s) => states.push(s));
  await waitFor(() => got.acks.length === 1, 5_000, "ack");
  await publishHttp(srv.port, orders(10));
  await waitFor(() => got.events.length === 10, 5_000, "10 events");

  // Outage: connections cut and refused while the server keeps publishing.
  proxy.blocked = true;
  proxy.cut();
  await waitFor(() => client.state === "reconnecting", 5_000, "reconnecting");
  await publishHttp(srv.port, orders(20, 10));
  await waitFor(() => states.filter((s) => s.state === "reconnecting").length >= 3, 5_000, "several failed attempts");
  const delays = states.filter((s) => s.state === "reconnecting").map((s) => s.delayMs);
  assert.ok(delays.every((d) => d <= FAST.maxMs), `delays capped: ${delays}`);
  proxy.blocked = false;

  await waitFor(() => got.events.length >= 30, 10_000, "resumed events");
  await publishHttp(srv.port, orders(5, 30));
  await waitFor(() => got.events.length === 35, 5_000, "live after resume");
  assert.deepEqual(seqs(got), range(1, 35), "every seq exactly once, in order");
  assert.deepEqual(got.events.map((e) => e.data.n), range(0, 34));
  const resumeAck = got.acks.at(-1);
  assert.equal(resumeAck.recovered, true);
  assert.equal(resumeAck.epoch, got.acks[0].epoch);
  assert.deepEqual(failed, []);
  assert.deepEqual(client.position("trades.TEST"), { seq: 35, epoch: got.acks[0].epoch });
});

test("recovered:false when the missed events are no longer retained; live events continue", { timeout: 20_000 }, async (t) => {
  const srv = await startServer();
  const proxy = await startProxy(srv.port);
  t.after(async () => { await proxy.close(); await srv.stop(); });
  const client = new QuotecastClient({ url: proxy.url, pingIntervalMs: 0, reconnect: FAST });
  t.after(() => client.close());
  // `signals.**` keeps a history of 100 (trades.** keeps 1000).
  const got = collect(client, "signals.gap");
  const global = [];
  client.on("recoveryFailed", (f) => global.push(f));
  await waitFor(() => got.acks.length === 1, 5_000, "ack");
  const ev = (n) => Array.from({ length: n }, (_, i) => ({ channel: "signals.gap", event: "tick", data: i }));
  await publishHttp(srv.port, ev(3));
  await waitFor(() => got.events.length === 3, 5_000, "3 events");
  proxy.blocked = true;
  proxy.cut();
  await waitFor(() => client.state === "reconnecting", 5_000, "reconnecting");
  await publishHttp(srv.port, ev(150));
  proxy.blocked = false;
  await waitFor(() => got.failures.length === 1, 10_000, "recovery failure");
  const f = got.failures[0];
  assert.equal(f.reason, "expired");
  assert.equal(f.lastSeq, 3);
  assert.equal(f.seq, 153);
  assert.equal(f.epoch, f.newEpoch);
  assert.deepEqual(global, [f], "also emitted on the client");
  assert.equal(got.acks.at(-1).recovered, false);
  assert.equal(got.events.length, 3, "no partial replay");
  await publishHttp(srv.port, ev(2));
  await waitFor(() => got.events.length === 5, 5_000, "live events after the gap");
  assert.deepEqual(seqs(got), [1, 2, 3, 154, 155]);
});

test("server restart on the same port: server_shutdown, reconnect after reconnect_ms, new epoch reported", { timeout: 30_000 }, async (t) => {
  let srv = await startServer();
  const port = srv.port;
  t.after(() => srv.stop());
  const client = new QuotecastClient({ url: srv.url, pingIntervalMs: 0, reconnect: FAST });
  t.after(() => client.close());
  const got = collect(client, "trades.TEST");
  const shutdowns = [];
  client.on("shutdown", (m) => shutdowns.push(m));
  const states = [];
  client.on("state", (s) => states.push(s));
  await waitFor(() => got.acks.length === 1, 5_000, "ack");
  await publishHttp(port, orders(4));
  await waitFor(() => got.events.length === 4, 5_000, "4 events");
  const epoch1 = got.acks[0].epoch;

  await srv.stop("SIGTERM");
  assert.equal(shutdowns.length, 1, "server_shutdown received");
  const lost = states.find((s) => s.state === "reconnecting");
  assert.equal(lost.code, 1012);
  const ms = shutdowns[0].reconnect_ms;
  assert.ok(lost.delayMs >= ms && lost.delayMs <= ms * 1.5, `delay ${lost.delayMs} for reconnect_ms ${ms}`);

  srv = await startServer({ port });
  await waitFor(() => got.failures.length === 1, 15_000, "resubscribed on the new server");
  assert.equal(got.failures[0].reason, "epoch");
  assert.equal(got.failures[0].lastSeq, 4);
  assert.notEqual(got.acks.at(-1).epoch, epoch1);
  await publishHttp(port, orders(3));
  await waitFor(() => got.events.length === 7, 5_000, "events from the new server");
  assert.deepEqual(seqs(got), [1, 2, 3, 4, 1, 2, 3], "the new epoch starts over and is not deduplicated away");

  // An abrupt death (no server_shutdown): plain backoff, then recovery again.
  await srv.stop("SIGKILL");
  await waitFor(() => client.state === "reconnecting", 5_000, "reconnecting after SIGKILL");
  srv = await startServer({ port });
  await waitFor(() => got.failures.length === 2 && client.state === "open", 15_000, "back after SIGKILL");
  assert.equal(shutdowns.length, 1);
});

test("MessagePack: binary frames both ways, same data as JSON", { timeout: 20_000 }, async (t) => {
  const srv = await startServer();
  t.after(() => srv.stop());
  const rec = recordingWebSocket();
  const client = new QuotecastClient({ url: srv.url, codec: msgpackCodec, WebSocket: rec.WebSocket, pingIntervalMs: 100, reconnect: FAST });
  t.after(() => client.close());
  const got = collect(client, "trades.TEST");
  await waitFor(() => got.acks.length === 1, 5_000, "ack");
  assert.equal(client.welcome.format, "msgpack");
  assert.match(rec.log.urls[0], /[?&]format=msgpack/);
  const data = { id: "ORD_1", px: 187.25, qty: 100, neg: -70000, big: 2 ** 40, s: "Zoë ✓", nested: { a: [1, null, true] } };
  await publishHttp(srv.port, [{ channel: "trades.TEST", event: "order_update", data }]);
  assert.equal(await client.publish("trades.TEST", "order_update", { via: "ws", list: [1.5, "x"] }), 2);
  await waitFor(() => got.events.length === 2, 5_000, "2 events");
  assert.deepEqual(got.events[0].data, data);
  assert.deepEqual(got.events[1].data, { via: "ws", list: [1.5, "x"] });
  assert.ok(got.events[0].ts > 1.6e18, "ns timestamp decoded from uint64");
  await waitFor(() => client.latency, 5_000, "pong over msgpack");
  assert.equal(rec.log.frames.text, 0, "no text frames on a msgpack connection");
  assert.ok(rec.log.frames.binary >= 4);
  assert.ok(rec.log.sent.every((d) => d instanceof Uint8Array), "ops sent as MessagePack");
});

const SECRET = "client-test-secret";
const hs256 = (claims) => {
  const b64 = (o) => Buffer.from(JSON.stringify(o)).toString("base64url");
  const body = `${b64({ alg: "HS256", typ: "JWT" })}.${b64(claims)}`;
  return `${body}.${createHmac("sha256", SECRET).update(body).digest("base64url")}`;
};

test("token: sent as ?token=, refreshed with the auth op before exp, the connection outlives the first token", { timeout: 20_000 }, async (t) => {
  const srv = await startServer({ args: ["--jwt-secret", SECRET, "--api-key", "test-api-key"] });
  t.after(() => srv.stop());
  let fetches = 0;
  const fetchToken = async () => {
    fetches++;
    // The first token is signed with the wrong key: the server closes with 4001 and the
    // client must fetch a new one rather than retry the cached one.
    if (fetches === 1) return hs256({ sub: "7", exp: Math.floor(Date.now() / 1000) + 60 }).replace(/\.[^.]+$/, ".AAAA");
    return hs256({ sub: "7", exp: Math.floor(Date.now() / 1000) + 3, n: fetches });
  };
  const rec = recordingWebSocket();
  const client = new QuotecastClient({ url: srv.url, token: fetchToken, tokenRefreshMarginMs: 2_000, WebSocket: rec.WebSocket, pingIntervalMs: 0, reconnect: FAST, autoConnect: false });
  t.after(() => client.close());
  const auths = [];
  client.on("auth", (a) => auths.push(a));
  const states = [];
  client.on("state", (s) => states.push(s));
  const got = collect(client, "user.7.orders");
  client.connect();
  await waitFor(() => got.acks.length === 1, 5_000, "subscribed to the private channel");
  assert.equal(states.find((s) => s.state === "reconnecting")?.code, 4001, "the bad token was refused");
  assert.equal(fetches, 2, "a new token was fetched after 4001");
  assert.match(rec.log.urls[1], /[?&]token=[\w-]+\.[\w-]+\.[\w-]+/);
  assert.equal(client.welcome.user, "7");
  const openedAt = Date.now();
  const before = states.length;

  await waitFor(() => auths.length >= 2, 8_000, "two refreshes");
  assert.deepEqual(auths[0], { ok: true });
  const authOps = rec.log.sent.map((s) => JSON.parse(s)).filter((o) => o.op === "auth");
  assert.ok(authOps.length >= 2);
  assert.ok(Date.now() - openedAt > 3_000 - 2_000, "refreshed before the first token expired");
  await sleep(Math.max(0, openedAt + 3_500 - Date.now())); // past the first token's exp
  assert.equal(client.state, "open");
  assert.equal(states.length, before, "the connection survived: no reconnect");
  await publishHttp(srv.port, [{ channel: "user.7.orders", event: "order_update", data: { ok: 1 } }], "Bearer test-api-key");
  await waitFor(() => got.events.length === 1, 5_000, "a private event");
  assert.deepEqual(got.events[0].data, { ok: 1 });
});

test("demo quotes at max_hz: conflated updates are not reported as gaps", { timeout: 20_000 }, async (t) => {
  const srv = await startServer({ demo: true });
  t.after(() => srv.stop());
  const client = new QuotecastClient({ url: srv.url, pingIntervalMs: 0 });
  t.after(() => client.close());
  const failed = [];
  client.on("recoveryFailed", (f) => failed.push(f));
  const got = collect(client, "quotes.AAPL", { snapshot: true, maxHz: 5 });
  const late = [];
  await waitFor(() => got.events.length >= 6, 10_000, "quotes");
  // A second subscriber to a live channel gets the latest value at once.
  client.subscribe("quotes.AAPL", (ev) => late.push(ev), { snapshot: true });
  assert.equal(late.length, 1);
  assert.equal(got.acks[0].kind, "conflated");
  const s = seqs(got);
  assert.ok(s.every((x, i) => i === 0 || x > s[i - 1]), "increasing");
  assert.ok(s.some((x, i) => i > 0 && x > s[i - 1] + 1), "skips seqs (conflation)");
  assert.ok(got.conflated.length > 0, "announced with `conflated`");
  assert.deepEqual(failed, []);
  assert.equal(got.events[0].data.symbol, "AAPL");
});

test("mistakes surface as error and state events, never as exceptions: relative url in Node, no WebSocket, refused token", { timeout: 20_000 }, async (t) => {
  const uncaught = [];
  const onUncaught = (e) => uncaught.push(String(e));
  process.on("unhandledRejection", onUncaught);
  process.on("uncaughtException", onUncaught);
  t.after(() => {
    process.off("unhandledRejection", onUncaught);
    process.off("uncaughtException", onUncaught);
  });
  const watch = (client) => {
    const seen = { errors: [], states: [] };
    client.on("error", (e) => seen.errors.push(e));
    client.on("state", (s) => seen.states.push(s.state));
    return seen;
  };

  // A relative URL has no page to resolve against in Node.
  const rel = new QuotecastClient({ url: "/ws", pingIntervalMs: 0 });
  const a = watch(rel);
  await waitFor(() => rel.state === "closed", 5_000, "closed after a bad url");
  assert.equal(a.errors[0]?.code, "bad_url");
  assert.match(a.errors[0].message, /absolute/);

  // No WebSocket implementation at all.
  const none = new QuotecastClient({ url: "ws://127.0.0.1:9/ws", pingIntervalMs: 0, autoConnect: false });
  const saved = globalThis.WebSocket;
  globalThis.WebSocket = undefined;
  try {
    const b = watch(none);
    none.connect();
    await waitFor(() => none.state === "closed", 5_000, "closed without a WebSocket");
    assert.equal(b.errors[0]?.code, "no_websocket");
  } finally {
    globalThis.WebSocket = saved;
  }

  // A fixed token the server refuses (4001): reported, and not retried forever.
  const srv = await startServer({ args: ["--jwt-secret", SECRET] });
  t.after(() => srv.stop());
  const bad = new QuotecastClient({ url: srv.url, token: "not.a.jwt", pingIntervalMs: 0, reconnect: FAST });
  t.after(() => bad.close());
  const c = watch(bad);
  await waitFor(() => bad.state === "closed", 5_000, "closed after the token was refused");
  assert.equal(c.errors.at(-1)?.code, "unauthorized");
  assert.match(c.errors.at(-1).message, /4001/);

  // A token function that throws: reported, then retried with backoff.
  let calls = 0;
  const flaky = new QuotecastClient({
    url: srv.url, pingIntervalMs: 0, reconnect: FAST,
    token: () => {
      calls++;
      if (calls === 1) throw new Error("token service down");
      return hs256({ sub: "9", exp: Math.floor(Date.now() / 1000) + 60 });
    },
  });
  t.after(() => flaky.close());
  const d = watch(flaky);
  await waitFor(() => flaky.state === "open", 5_000, "open after the token function recovered");
  assert.equal(d.errors[0]?.code, "token_failed");
  assert.deepEqual(uncaught, []);
});
