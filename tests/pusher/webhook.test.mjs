// quotecast's Pusher webhooks, checked by the official `pusher` Node SDK's webhook
// validation (`pusher.webhook({headers, rawBody})`, `isValid()`, `getEvents()`) in a
// receiver started here, driven by real pusher-js clients on both shards of the server.
import { test } from "node:test";
import assert from "node:assert/strict";
import { createServer } from "node:http";
import PusherJs from "pusher-js";
import { APP, sdk, startAuthServer, startServer, until } from "./helpers.mjs";

const PusherClient = PusherJs.default ?? PusherJs;

function client(port, authPort, user) {
  return new PusherClient(APP.key, {
    cluster: "mt1",
    wsHost: "127.0.0.1",
    wsPort: port,
    forceTLS: false,
    enabledTransports: ["ws"],
    disableStats: true,
    channelAuthorization: { endpoint: `http://127.0.0.1:${authPort}/auth`, transport: "ajax", params: { user } },
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

/** The shard of a connection: its socket_id is `{connection}.{random}`, shard in the top 16 bits. */
function shardOf(c) {
  return Number(BigInt(c.connection.socket_id.split(".")[0]) >> 48n);
}

/**
 * A webhook receiver: answers 500 to its first `failFirst` requests (so the server must
 * retry), then validates each batch with the SDK and keeps its events.
 */
async function startReceiver(port, { failFirst = 1, path = "/hooks" } = {}) {
  const validator = sdk(port);
  const wrong = sdk(port, "not-the-app-secret-000");
  const got = { requests: 0, refused: 0, invalid: 0, batches: [], events: [] };
  const srv = createServer((req, res) => {
    let body = "";
    req.on("data", (d) => (body += d));
    req.on("end", () => {
      got.requests += 1;
      if (req.url !== path || req.method !== "POST") {
        got.invalid += 1;
        res.writeHead(404);
        return res.end();
      }
      if (got.refused < failFirst) {
        got.refused += 1;
        res.writeHead(500);
        return res.end();
      }
      const hook = validator.webhook({ headers: req.headers, rawBody: body });
      // A signature made with another secret must not pass: the check can fail.
      assert.equal(wrong.webhook({ headers: req.headers, rawBody: body }).isValid(), false);
      if (!hook.isValid()) {
        got.invalid += 1;
        res.writeHead(401);
        return res.end();
      }
      got.batches.push({ time: hook.getTime(), events: hook.getEvents() });
      got.events.push(...hook.getEvents());
      res.writeHead(200);
      res.end("{}");
    });
  });
  await new Promise((r) => srv.listen(0, "127.0.0.1", r));
  return { port: srv.address().port, got, close: () => new Promise((r) => srv.close(r)) };
}

const has = (events, want) =>
  events.some((e) => Object.entries(want).every(([k, v]) => e[k] === v));

test("Pusher webhooks: occupied/vacated per node, members, client events; signed, batched, retried", { timeout: 60_000 }, async (t) => {
  // The receiver's port must be in the config before the server starts, and its validator
  // needs the server's port only for the SDK's constructor (webhook checks are local).
  const rx = await startReceiver(1);
  const filtered = await startReceiver(1, { failFirst: 0, path: "/presence" });
  const srv = await startServer({
    webhooks: `
[[pusher.apps.webhooks]]
url = "http://127.0.0.1:${rx.port}/hooks"

[[pusher.apps.webhooks]]
url = "http://127.0.0.1:${filtered.port}/presence"
event_types = ["member_added", "member_removed"]
`,
  });
  t.after(() => srv.stop());
  t.after(() => rx.close());
  t.after(() => filtered.close());
  const auth = await startAuthServer(srv.port);
  t.after(() => auth.close());

  // Clients until both shards have one (the server deals connections out across shards).
  const clients = [];
  t.after(() => clients.forEach((c) => c.disconnect()));
  const byShard = new Map();
  for (let i = 0; i < 8 && byShard.size < 2; i++) {
    const c = client(srv.port, auth.port, String(i + 1));
    clients.push(c);
    await connected(c);
    if (!byShard.has(shardOf(c))) byShard.set(shardOf(c), [c, String(i + 1)]);
  }
  assert.equal(byShard.size, 2, "clients on both shards");
  const [[a, userA], [b, userB]] = [...byShard.values()];

  // One public channel occupied from both shards: one channel_occupied.
  await subscribed(a, "trades.webhooks");
  await subscribed(b, "trades.webhooks");
  const roomA = await subscribed(a, "presence-hooks");
  await subscribed(b, "presence-hooks");
  assert.ok(roomA.trigger("client-typing", { text: "hi" }));

  await until(
    () =>
      has(rx.got.events, { name: "member_added", user_id: userB }) &&
      has(rx.got.events, { name: "client_event", event: "client-typing" }),
    "member_added and client_event webhooks",
  );
  const ce = rx.got.events.find((e) => e.name === "client_event");
  assert.deepEqual(
    { channel: ce.channel, socket_id: ce.socket_id, user_id: ce.user_id, data: JSON.parse(ce.data) },
    { channel: "presence-hooks", socket_id: a.connection.socket_id, user_id: userA, data: { text: "hi" } },
  );

  // Leaving: b first (still occupied through a), then a (vacated).
  b.unsubscribe("trades.webhooks");
  b.unsubscribe("presence-hooks");
  await until(() => has(rx.got.events, { name: "member_removed", user_id: userB }), "member_removed of b");
  a.disconnect();
  await until(
    () =>
      has(rx.got.events, { name: "channel_vacated", channel: "trades.webhooks" }) &&
      has(rx.got.events, { name: "channel_vacated", channel: "presence-hooks" }) &&
      has(rx.got.events, { name: "member_removed", user_id: userA }),
    "vacated webhooks",
  );

  const count = (name, channel) => rx.got.events.filter((e) => e.name === name && e.channel === channel).length;
  for (const ch of ["trades.webhooks", "presence-hooks"]) {
    assert.equal(count("channel_occupied", ch), 1, `one channel_occupied for ${ch} across the shards`);
    assert.equal(count("channel_vacated", ch), 1, `one channel_vacated for ${ch}`);
  }
  assert.equal(count("member_added", "presence-hooks"), 2);
  assert.equal(count("member_removed", "presence-hooks"), 2);
  // The first request was answered 500 and its batch came again (retried).
  assert.equal(rx.got.refused, 1);
  assert.equal(rx.got.invalid, 0);
  assert.ok(rx.got.batches.every((b) => b.events.length >= 1 && b.time instanceof Date && !Number.isNaN(+b.time)));
  // A batch carries several events when they come together (member_added of b and the
  // client event of a are some milliseconds apart, well within the batch window).
  assert.ok(rx.got.batches.some((b) => b.events.length > 1), "some batch holds several events");

  // The filtered URL got the member events only.
  await until(() => filtered.got.events.length >= 4, "member events at the filtered URL");
  assert.deepEqual(
    [...new Set(filtered.got.events.map((e) => e.name))].sort(),
    ["member_added", "member_removed"],
  );
  assert.equal(filtered.got.invalid, 0);
});
