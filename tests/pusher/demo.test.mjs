// `quotecast serve --demo` starts a demo Pusher app and prints its key and secret; the demo
// market's channels reach pusher-js, and the printed secret signs API calls (pusher SDK).
import { test } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import PusherJs from "pusher-js";
import Pusher from "pusher";
import { BIN, until } from "./helpers.mjs";

const PusherClient = PusherJs.default ?? PusherJs;

test("--demo serves a Pusher app on the demo market's channels", { timeout: 60_000 }, async (t) => {
  const child = spawn(BIN, ["serve", "--demo", "--listen", "127.0.0.1:0", "--shards", "1", "--demo-symbols", "10", "--drain-ms", "300"], {
    stdio: ["ignore", "pipe", "pipe"],
  });
  t.after(() => child.exitCode === null && child.kill("SIGTERM"));
  let out = "";
  let err = "";
  child.stdout.on("data", (d) => (out += d));
  child.stderr.on("data", (d) => (err += d));
  const port = Number(await until(() => /listening on 127\.0\.0\.1:(\d+)/.exec(out)?.[1], "listening"));
  const m = await until(() => /app_id=(\S+) key=(\S+) secret=(\S+)/.exec(err) ?? undefined, "the printed Pusher app");
  const [, appId, key, secret] = m;
  const c = new PusherClient(key, { cluster: "mt1", wsHost: "127.0.0.1", wsPort: port, forceTLS: false, enabledTransports: ["ws"], disableStats: true });
  t.after(() => c.disconnect());
  const ch = c.subscribe("quotes.AAPL");
  const quotes = [];
  ch.bind("quote", (q) => quotes.push(q));
  await until(() => quotes.length > 0 || undefined, "a demo quote");
  assert.equal(quotes[0].symbol, "AAPL");
  const api = new Pusher({ appId, key, secret, host: "127.0.0.1", port: String(port), useTLS: false });
  const info = await (await api.get({ path: "/channels/quotes.AAPL", params: { info: "subscription_count" } })).json();
  assert.deepEqual(info, { occupied: true, subscription_count: 1 });
});
