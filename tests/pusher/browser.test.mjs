// Laravel Echo + pusher-js in headless Chromium (the Debian `chromium` package, driven by
// playwright-core), as a Laravel app's bootstrap.js sets them up: `Echo.private(
// 'App.Models.User.1').listen('.OrderUpdated', ...)` authorised by an auth endpoint (signed
// with the official `pusher` SDK, like /broadcasting/auth), receiving an event that the
// official `pusher` Node SDK triggers on quotecast; and Echo.join() presence members.
import { test } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { chromium } from "playwright-core";
import { APP, sdk, startAuthServer, startServer } from "./helpers.mjs";

const CHROMIUM = process.env.CHROMIUM_PATH || "/usr/bin/chromium";

function page(port) {
  return `<!doctype html><html><head><meta charset="utf-8">
<script src="/static/pusher-js/dist/web/pusher.min.js"></script>
<script src="/static/laravel-echo/dist/echo.iife.js"></script></head><body><script>
window.received = [];
window.members = null;
window.Pusher = Pusher;
window.echo = new Echo({
  broadcaster: "pusher",
  key: ${JSON.stringify(APP.key)},
  cluster: "mt1",
  wsHost: "127.0.0.1",
  wsPort: ${port},
  forceTLS: false,
  enabledTransports: ["ws"],
  disableStats: true,
  authEndpoint: "/broadcasting/auth",
});
window.echo.private("App.Models.User.1")
  .subscribed(() => { window.subscribed = true; })
  .listen(".OrderUpdated", (e) => window.received.push(e));
window.echo.join("chat")
  .here((users) => { window.members = users; });
</script></body></html>`;
}

test("Laravel Echo in Chromium receives an event published by the pusher Node SDK", { timeout: 90_000 }, async (t) => {
  const srv = await startServer();
  t.after(() => srv.stop());
  const auth = await startAuthServer(srv.port, { page: page(srv.port) });
  t.after(() => auth.close());
  const profile = mkdtempSync(join(tmpdir(), "quotecast-echo-"));
  t.after(() => rmSync(profile, { recursive: true, force: true }));
  const ctx = await chromium.launchPersistentContext(profile, {
    executablePath: CHROMIUM,
    headless: true,
    timeout: 30_000,
    args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
      "--disable-component-update", "--disable-sync", "--no-first-run"],
  });
  t.after(() => ctx.close());
  const p = ctx.pages()[0] ?? (await ctx.newPage());
  p.setDefaultTimeout(20_000);
  const errors = [];
  p.on("pageerror", (e) => errors.push(String(e)));
  await p.goto(`http://127.0.0.1:${auth.port}/page`);
  await p.waitForFunction(() => window.subscribed === true);
  await sdk(srv.port).trigger("private-App.Models.User.1", "OrderUpdated", { order: { id: 42, status: "filled" } });
  await p.waitForFunction(() => window.received.length === 1);
  assert.deepEqual(await p.evaluate(() => window.received), [{ order: { id: 42, status: "filled" } }]);
  await p.waitForFunction(() => Array.isArray(window.members));
  assert.deepEqual(await p.evaluate(() => window.members), [{ name: "user 1" }]);
  assert.deepEqual(errors, []);
});
