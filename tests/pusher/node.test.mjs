// quotecast's Pusher protocol and HTTP API, driven by the real libraries (pinned in
// package-lock.json): pusher-js as the client, the official `pusher` server SDK as the
// publisher, API client and auth signer. Bad input is sent raw (a WebSocket from `ws`, an
// HTTP request signed by hand) and must be answered as Pusher answers, delivering nothing.
import { test } from "node:test";
import assert from "node:assert/strict";
import { createHash, createHmac } from "node:crypto";
import PusherJs from "pusher-js";
import WebSocket from "ws";
import { APP, sdk, startAuthServer, startServer, until, deferred } from "./helpers.mjs";

const PusherClient = PusherJs.default ?? PusherJs;

function client(port, authPort, user = "1") {
  return new PusherClient(APP.key, {
    cluster: "mt1",
    wsHost: "127.0.0.1",
    wsPort: port,
    forceTLS: false,
    enabledTransports: ["ws"],
    disableStats: true,
    channelAuthorization: { endpoint: `http://127.0.0.1:${authPort}/auth`, transport: "ajax", params: { user } },
    userAuthentication: { endpoint: `http://127.0.0.1:${authPort}/user-auth`, transport: "ajax", params: { user } },
  });
}

async function connected(c) {
  if (c.connection.state === "connected") return;
  await new Promise((resolve, reject) => {
    c.connection.bind("connected", resolve);
    c.connection.bind("failed", () => reject(new Error("connection failed")));
  });
}

function subscribed(c, name) {
  const ch = c.subscribe(name);
  return new Promise((resolve, reject) => {
    ch.bind("pusher:subscription_succeeded", () => resolve(ch));
    ch.bind("pusher:subscription_error", (e) => reject(new Error(`subscription_error ${JSON.stringify(e)}`)));
  });
}

/** Events of `name` on channel `ch`, in order. */
function collect(ch, name) {
  const got = [];
  ch.bind(name, (d) => got.push(d));
  return got;
}

/** A raw Pusher-protocol socket (for bad input): messages parsed, `data` strings too. */
async function raw(port, path = `/app/${APP.key}?protocol=7&client=js&version=8.4.0`) {
  const ws = new WebSocket(`ws://127.0.0.1:${port}${path}`);
  const msgs = [];
  const closed = deferred();
  ws.on("message", (m) => {
    const v = JSON.parse(m.toString());
    if (typeof v.data === "string") {
      try { v.data = JSON.parse(v.data); } catch { /* a plain string */ }
    }
    msgs.push(v);
  });
  ws.on("close", (code, reason) => closed.resolve({ code, reason: reason.toString() }));
  await until(() => msgs.length > 0 || ws.readyState === WebSocket.CLOSED || undefined, "first message");
  return { ws, msgs, closed: closed.promise, send: (v) => ws.send(JSON.stringify(v)) };
}

function signApi(method, path, params, body, secret = APP.secret) {
  const q = { auth_key: APP.key, auth_timestamp: String(Math.floor(Date.now() / 1000)), auth_version: "1.0", ...params };
  if (body) q.body_md5 = q.body_md5 ?? createHash("md5").update(body).digest("hex");
  const qs = Object.keys(q).sort().map((k) => `${k}=${q[k]}`).join("&");
  const sig = createHmac("sha256", secret).update(`${method}\n${path}\n${qs}`).digest("hex");
  return `${path}?${qs}&auth_signature=${sig}`;
}

test("pusher-js and the pusher SDK against quotecast", { timeout: 120_000 }, async (t) => {
  let srv = await startServer();
  const port = srv.port;
  t.after(() => srv.stop());
  const auth = await startAuthServer(port);
  t.after(() => auth.close());
  const api = sdk(port);

  const a = client(port, auth.port, "1");
  const b = client(port, auth.port, "2");
  t.after(() => { a.disconnect(); b.disconnect(); });
  await connected(a);
  await connected(b);
  assert.match(a.connection.socket_id, /^\d+\.\d+$/);

  await t.test("public channel: SDK trigger reaches pusher-js; /api/publish and /ws share it", async () => {
    const ch = await subscribed(a, "trades.orders");
    const got = collect(ch, "OrderUpdated");
    await api.trigger("trades.orders", "OrderUpdated", { id: 1, status: "filled" });
    await until(() => got.length === 1 || undefined, "SDK event");
    assert.deepEqual(got[0], { id: 1, status: "filled" });
    // A v1 client on /ws sees the SDK's event as an object; a v1 publish reaches pusher-js.
    const v1 = new WebSocket(`ws://127.0.0.1:${port}/ws`);
    const v1msgs = [];
    v1.on("message", (m) => v1msgs.push(JSON.parse(m.toString())));
    await new Promise((r) => v1.on("open", r));
    v1.send(JSON.stringify({ op: "subscribe", id: 1, channels: ["trades.orders"] }));
    await until(() => v1msgs.some((m) => m.type === "subscribed") || undefined, "v1 subscribed");
    await api.trigger("trades.orders", "OrderUpdated", { id: 2 });
    await until(() => v1msgs.find((m) => m.type === "event"), "v1 event");
    assert.deepEqual(v1msgs.find((m) => m.type === "event").data, { id: 2 });
    const r = await fetch(`http://127.0.0.1:${port}/api/publish`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ channel: "trades.orders", event: "OrderUpdated", data: { id: 3 } }),
    });
    assert.equal(r.status, 200);
    await until(() => got.length === 3 || undefined, "v1 publish at pusher-js");
    assert.deepEqual(got[2], { id: 3 });
    // A v1 client may not read a Pusher private channel.
    v1.send(JSON.stringify({ op: "subscribe", id: 2, channels: ["private-App.Models.User.1"] }));
    const err = await until(() => v1msgs.find((m) => m.type === "error" && m.id === 2), "v1 refused");
    assert.equal(err.code, "forbidden");
    v1.close();
    a.unsubscribe("trades.orders");
  });

  await t.test("private channel with the SDK's authorizeChannel; triggerBatch; socket_id exclusion", async () => {
    const ch = await subscribed(a, "private-App.Models.User.1");
    const got = collect(ch, "OrderUpdated");
    await api.triggerBatch([
      { channel: "private-App.Models.User.1", name: "OrderUpdated", data: { n: 1 } },
      { channel: "private-App.Models.User.1", name: "OrderUpdated", data: { n: 2 } },
    ]);
    await until(() => got.length === 2 || undefined, "batch");
    assert.deepEqual(got, [{ n: 1 }, { n: 2 }]);
    // Excluding a's socket: b (also subscribed) gets it, a does not.
    const chB = await subscribed(b, "private-App.Models.User.1");
    const gotB = collect(chB, "OrderUpdated");
    await api.trigger("private-App.Models.User.1", "OrderUpdated", { n: 3 }, { socket_id: a.connection.socket_id });
    await api.trigger("private-App.Models.User.1", "OrderUpdated", { n: 4 });
    await until(() => gotB.length === 2 || undefined, "b got both");
    await until(() => got.length === 3 || undefined, "a got the second");
    assert.deepEqual(got[2], { n: 4 }, "the excluded socket did not get n:3");
  });

  await t.test("private-encrypted: the SDK encrypts, pusher-js decrypts, quotecast relays ciphertext", async () => {
    const ch = await subscribed(a, "private-encrypted-orders");
    const got = collect(ch, "Secret");
    const r = await raw(port);
    const sid = r.msgs[0].data.socket_id;
    r.send({ event: "pusher:subscribe", data: { channel: "private-encrypted-orders", auth: api.authorizeChannel(sid, "private-encrypted-orders").auth } });
    await until(() => r.msgs.find((m) => m.event === "pusher_internal:subscription_succeeded"), "raw subscribed");
    await api.trigger("private-encrypted-orders", "Secret", { card: "4111" });
    await until(() => got.length === 1 || undefined, "decrypted event");
    assert.deepEqual(got[0], { card: "4111" });
    const seen = await until(() => r.msgs.find((m) => m.event === "Secret"), "ciphertext at the raw socket");
    assert.ok(seen.data.ciphertext && seen.data.nonce, "ciphertext and nonce relayed");
    assert.ok(!JSON.stringify(seen).includes("4111"), "no plaintext on the wire");
    r.ws.close();
  });

  await t.test("client events: relayed to others, never echoed, only on private channels", async () => {
    const chA = a.channel("private-App.Models.User.1");
    const chB = b.channel("private-App.Models.User.1");
    const gotA = collect(chA, "client-typing");
    const gotB = collect(chB, "client-typing");
    assert.equal(chA.trigger("client-typing", { who: "a" }), true);
    await until(() => gotB.length === 1 || undefined, "client event at b");
    assert.deepEqual(gotB[0], { who: "a" });
    // b answers; a receives b's event only (its own was not echoed).
    chB.trigger("client-typing", { who: "b" });
    await until(() => gotA.length === 1 || undefined, "client event at a");
    assert.deepEqual(gotA, [{ who: "b" }]);
  });

  await t.test("presence: members, member_added/removed once per user, channel and users API", async () => {
    const pa = await subscribed(a, "presence-room");
    assert.equal(pa.members.count, 1);
    assert.equal(pa.members.me.id, "1");
    const added = [];
    const removed = [];
    pa.bind("pusher:member_added", (m) => added.push(m));
    pa.bind("pusher:member_removed", (m) => removed.push(m));
    const pb = await subscribed(b, "presence-room");
    assert.equal(pb.members.count, 2);
    assert.deepEqual(pb.members.get("1").info, { name: "user 1" });
    await until(() => added.length === 1 || undefined, "member_added");
    assert.equal(added[0].id, "2");
    // A second connection of user 2: no second member_added; its leaving: no member_removed.
    const b2 = client(port, auth.port, "2");
    t.after(() => b2.disconnect());
    await connected(b2);
    const pb2 = await subscribed(b2, "presence-room");
    assert.equal(pb2.members.count, 2);
    const users = await (await api.get({ path: "/channels/presence-room/users" })).json();
    assert.deepEqual(users.users.map((u) => u.id).sort(), ["1", "2"]);
    const info = await (await api.get({ path: "/channels/presence-room", params: { info: "user_count,subscription_count" } })).json();
    assert.deepEqual(info, { occupied: true, user_count: 2, subscription_count: 3 });
    const list = await (await api.get({ path: "/channels", params: { filter_by_prefix: "presence-", info: "user_count" } })).json();
    assert.deepEqual(list, { channels: { "presence-room": { user_count: 2 } } });
    b2.disconnect();
    await until(async () => {
      const i = await (await api.get({ path: "/channels/presence-room", params: { info: "subscription_count" } })).json();
      return i.subscription_count === 2 || undefined;
    }, "b2 gone");
    b.unsubscribe("presence-room");
    await until(() => removed.length === 1 || undefined, "member_removed");
    assert.equal(removed[0].id, "2");
    assert.equal(added.length, 1, "one member_added per user");
  });

  await t.test("presence member limit (max_presence_members = 3): the fourth user is refused", async () => {
    const cs = ["31", "32", "33", "34"].map((u) => client(port, auth.port, u));
    t.after(() => cs.forEach((c) => c.disconnect()));
    for (const c of cs.slice(0, 3)) {
      await connected(c);
      await subscribed(c, "presence-limited");
    }
    await connected(cs[3]);
    const ch = cs[3].subscribe("presence-limited");
    const err = await new Promise((resolve) => ch.bind("pusher:subscription_error", resolve));
    assert.equal(err.type, "LimitReached");
    assert.equal(err.status, 4100);
    assert.equal(ch.subscribed, false);
  });

  await t.test("user authentication (signin) and server-to-user messages, terminate_connections", async () => {
    const u = client(port, auth.port, "7");
    t.after(() => u.disconnect());
    const got = deferred();
    u.user.bind("Notice", (d) => got.resolve(d));
    u.signin();
    await connected(u);
    await until(() => u.user.user_data?.id === "7" || undefined, "signed in");
    await until(() => u.user.serverToUserChannel?.subscribed || undefined, "server-to-user channel");
    await api.sendToUser("7", "Notice", { hello: "user 7" });
    assert.deepEqual(await got.promise, { hello: "user 7" });
    const closed = deferred();
    u.connection.bind("state_change", (s) => s.current !== "connected" && closed.resolve(s.current));
    await api.terminateUserConnections("7");
    await closed.promise;
  });

  await t.test("bad input is answered as Pusher answers it and delivers nothing", async () => {
    const ch = await subscribed(a, "private-guarded");
    const got = collect(ch, "E");
    // A wrong secret, a stale timestamp, a wrong body_md5, an unsigned call: 401.
    await assert.rejects(sdk(port, "wrong-secret-000000").trigger("private-guarded", "E", { bad: 1 }), (e) => e.status === 401);
    const body = JSON.stringify({ name: "E", channels: ["private-guarded"], data: JSON.stringify({ bad: 2 }) });
    const post = (url, b = body) => fetch(`http://127.0.0.1:${port}${url}`, { method: "POST", headers: { "content-type": "application/json" }, body: b });
    const stale = signApi("POST", `/apps/${APP.appId}/events`, { auth_timestamp: String(Math.floor(Date.now() / 1000) - 601) }, body);
    assert.equal((await post(stale)).status, 401);
    assert.match(await (await post(stale)).text(), /Timestamp expired/);
    const md5 = signApi("POST", `/apps/${APP.appId}/events`, { body_md5: "0".repeat(32) }, body);
    assert.equal((await post(md5)).status, 401);
    assert.equal((await post(`/apps/${APP.appId}/events`)).status, 401);
    // Oversized data (10 KB) and 101 channels.
    await assert.rejects(api.trigger("private-guarded", "E", "x".repeat(10 * 1024 + 1)), (e) => e.status === 413);
    const many = Array.from({ length: 101 }, (_, i) => `c${i}`);
    const b101 = JSON.stringify({ name: "E", channels: many.concat(["private-guarded"]).slice(0, 101), data: "{}" });
    assert.equal((await post(signApi("POST", `/apps/${APP.appId}/events`, {}, b101), b101)).status, 400);
    // Unknown and disabled apps.
    assert.equal((await post(signApi("POST", "/apps/9999/events", {}, body))).status, 404);

    // Forged channel auth (signed for another socket_id), a presence channel_data whose user
    // differs from the signed one: pusher:subscription_error, no subscription.
    const r = await raw(port);
    const sid = r.msgs[0].data.socket_id;
    assert.equal(r.msgs[0].event, "pusher:connection_established");
    assert.equal(r.msgs[0].data.activity_timeout, 120);
    const other = api.authorizeChannel("123.456", "private-guarded");
    r.send({ event: "pusher:subscribe", data: { channel: "private-guarded", auth: other.auth } });
    const e1 = await until(() => r.msgs.find((m) => m.event === "pusher:subscription_error"), "forged auth refused");
    assert.equal(e1.channel, "private-guarded");
    assert.equal(e1.data.status, 401);
    const signed = api.authorizeChannel(sid, "presence-room", { user_id: "1" });
    r.send({ event: "pusher:subscribe", data: { channel: "presence-room", auth: signed.auth, channel_data: JSON.stringify({ user_id: "2" }) } });
    await until(() => r.msgs.filter((m) => m.event === "pusher:subscription_error").length === 2 || undefined, "presence mismatch refused");
    // quotecast's own owner-only channels (user.{user}.*) are not public to Pusher clients.
    r.send({ event: "pusher:subscribe", data: { channel: "user.42.orders" } });
    const e3 = await until(() => r.msgs.filter((m) => m.event === "pusher:subscription_error")[2], "owner channel refused");
    assert.equal(e3.channel, "user.42.orders");
    assert.equal(e3.data.status, 403);
    r.send({ event: "pusher:ping", data: {} });
    await until(() => r.msgs.find((m) => m.event === "pusher:pong"), "pong");

    // A good event after all that: the only one delivered, to pusher-js only (not the raw socket).
    await api.trigger("private-guarded", "E", { good: true });
    await until(() => got.length > 0 || undefined, "the good event");
    assert.deepEqual(got, [{ good: true }]);
    assert.equal(r.msgs.filter((m) => m.event === "E").length, 0);
    r.ws.close();

    // Connect refusals: unknown app 4001, disabled app 4003, unsupported protocol 4007.
    for (const [path, code] of [
      ["/app/nope?protocol=7", 4001],
      ["/app/disabled-key?protocol=7", 4003],
      [`/app/${APP.key}?protocol=4`, 4007],
    ]) {
      const x = await raw(port, path);
      assert.equal(x.msgs[0].event, "pusher:error");
      assert.equal(x.msgs[0].data.code, code);
      assert.equal((await x.closed).code, code);
    }
  });

  await t.test("pusher-js reconnects after a server restart and resubscribes", async () => {
    const ch = a.channel("orders") ?? (await subscribed(a, "orders"));
    if (!ch.subscribed) await subscribed(a, "orders");
    const got = collect(a.channel("orders"), "After");
    const down = deferred();
    a.connection.bind("state_change", (s) => s.previous === "connected" && down.resolve());
    await srv.stop("SIGTERM");
    await down.promise;
    srv = await startServer({ port });
    await until(() => a.connection.state === "connected" || undefined, "reconnected", 30_000);
    await until(() => a.channel("orders").subscribed || undefined, "resubscribed");
    // The new server learns the subscription when the client's subscribe arrives; retry the
    // trigger until the channel is occupied (positive barrier on the server's own count).
    await until(async () => {
      const i = await (await api.get({ path: "/channels/orders", params: { info: "subscription_count" } })).json();
      return i.subscription_count >= 1 || undefined;
    }, "occupied again");
    await api.trigger("orders", "After", { restarted: true });
    await until(() => got.length === 1 || undefined, "event after restart");
    assert.deepEqual(got[0], { restarted: true });
  });
});
