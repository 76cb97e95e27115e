// The official `pusher` SDK from PyPI (tests/pusher/requirements.txt) publishing to and
// querying quotecast, with pusher-js receiving: trigger, trigger_batch, channel_info,
// users_info, and a wrong secret refused (PusherBadAuth) with nothing delivered.
import { test } from "node:test";
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { fileURLToPath } from "node:url";
import PusherJs from "pusher-js";
import { APP, startServer, until } from "./helpers.mjs";

const PusherClient = PusherJs.default ?? PusherJs;
const PY = process.env.PUSHER_PYTHON || "python3";

test("the PyPI pusher SDK publishes to pusher-js through quotecast", { timeout: 60_000 }, async (t) => {
  const srv = await startServer();
  t.after(() => srv.stop());
  const c = new PusherClient(APP.key, {
    cluster: "mt1", wsHost: "127.0.0.1", wsPort: srv.port, forceTLS: false,
    enabledTransports: ["ws"], disableStats: true,
  });
  t.after(() => c.disconnect());
  const ch = c.subscribe("py-orders");
  await new Promise((r) => ch.bind("pusher:subscription_succeeded", r));
  const got = [];
  ch.bind("OrderUpdated", (d) => got.push(d));
  const script = fileURLToPath(new URL("./py_sdk.py", import.meta.url));
  const out = await new Promise((resolve, reject) =>
    execFile(PY, [script, String(srv.port), APP.appId, APP.key, APP.secret], (err, stdout, stderr) =>
      err ? reject(new Error(`${err.message}\n${stderr}`)) : resolve(JSON.parse(stdout)),
    ),
  );
  assert.equal(out.wrong_secret, "PusherBadAuth");
  assert.deepEqual(out.info, { occupied: true, subscription_count: 1 });
  assert.deepEqual(out.users, { users: [] });
  await until(() => got.length === 2 || undefined, "python events");
  assert.deepEqual(got, [{ from: "python", n: 1 }, { from: "python", n: 2 }], "the wrong-secret event was not delivered");
});
