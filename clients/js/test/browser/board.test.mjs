// End to end in a real browser: headless Chromium (the Debian `chromium` package, driven by
// playwright-core) opens the built-in board of a demo server, sees quotes move and the
// connection indicator green, survives a server kill and restart on the same port, and
// saves a screenshot in test-output/.
import { test } from "node:test";
import assert from "node:assert/strict";
import { mkdirSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { chromium } from "playwright-core";
import { startServer, publishHttp, ROOT } from "../helpers.mjs";

const CHROMIUM = process.env.CHROMIUM_PATH || "/usr/bin/chromium";
const OUT = join(ROOT, "test-output");

test("the live board shows a moving market and recovers from a server restart", { timeout: 90_000 }, async (t) => {
  let srv = await startServer({ demo: true });
  const port = srv.port;
  t.after(() => srv.stop());
  const profile = mkdtempSync(join(tmpdir(), "quotecast-chromium-"));
  t.after(() => rmSync(profile, { recursive: true, force: true }));
  const ctx = await chromium.launchPersistentContext(profile, {
    executablePath: CHROMIUM,
    headless: true,
    viewport: { width: 1400, height: 900 },
    timeout: 30_000,
    args: [
      "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
      "--disable-component-update", "--disable-sync", "--no-first-run",
    ],
  });
  t.after(() => ctx.close());
  const page = ctx.pages()[0] ?? (await ctx.newPage());
  page.setDefaultTimeout(20_000);
  const pageErrors = [];
  page.on("pageerror", (e) => pageErrors.push(String(e)));
  page.on("console", (m) => {
    // While the server is down the browser logs failed WebSocket connections: expected.
    if (m.type() === "error" && !/WebSocket connection|ERR_CONNECTION_REFUSED/.test(m.text())) pageErrors.push(m.text());
  });

  await page.goto(`http://127.0.0.1:${port}/`);
  const conn = page.locator("#conn");
  await page.waitForFunction(() => document.querySelector("#conn").dataset.state === "open");
  const dot = await page.locator("#conn .dot").evaluate((e) => getComputedStyle(e).backgroundColor);
  assert.equal(dot, "rgb(63, 185, 80)", "the connection indicator is green");

  // Quotes move: AAPL's seq cell changes, and several rows have flashed.
  const seqOf = () => page.locator("#q-AAPL td[data-k=seq]").textContent();
  await page.waitForFunction(() => /\d/.test(document.querySelector("#q-AAPL td[data-k=seq]").textContent));
  const s1 = Number(await seqOf());
  await page.waitForFunction((s) => Number(document.querySelector("#q-AAPL td[data-k=seq]").textContent) > s, s1);
  await page.waitForFunction(() => document.querySelectorAll("#quotes td.up, #quotes td.down").length > 0);
  await page.waitForFunction(() => document.querySelectorAll("#tape div").length > 0, null, { timeout: 30_000 });
  await page.waitForFunction(() => document.querySelectorAll("#orders tbody tr").length > 0, null, { timeout: 30_000 });
  await page.waitForFunction(() => /\d/.test(document.querySelector("#rtt").textContent) && Number(document.querySelector("#rate").textContent) > 0);
  await page.waitForFunction(() => /ms/.test(document.querySelector("#e2e50").textContent));
  const e2e = await page.locator("#e2e50").textContent();
  assert.ok(parseFloat(e2e) < 1000, `end-to-end p50 ${e2e}`);

  // A position that closes leaves the table.
  await publishHttp(port, [{ channel: "user.42.positions", event: "position_update", data: { position_id: "POS_T", symbol: "AAPL", side: "buy", quantity: 5, status: "open" } }]);
  const posRow = () => page.evaluate(() => [...document.querySelectorAll("#positions tbody tr")].some((tr) => /AAPL\s*buy\s*5\b/.test(tr.textContent)));
  await page.waitForFunction(() => [...document.querySelectorAll("#positions tbody tr")].some((tr) => /AAPL\s*buy\s*5\b/.test(tr.textContent)));
  await publishHttp(port, [{ channel: "user.42.positions", event: "position_update", data: { position_id: "POS_T", symbol: "AAPL", side: "buy", quantity: 5, status: "closed" } }]);
  await page.waitForFunction(() => ![...document.querySelectorAll("#positions tbody tr")].some((tr) => /AAPL\s*buy\s*5\b/.test(tr.textContent)));
  assert.equal(await posRow(), false);

  // Kill (graceful: server_shutdown then close 1012) and restart on the same port.
  await srv.stop("SIGTERM");
  await page.waitForFunction(() => document.querySelector("#conn").dataset.state !== "open");
  // Disconnected: the data is marked stale (dimmed) and the latency figures are blanked.
  await page.waitForFunction(() => document.body.classList.contains("stale"));
  assert.equal(await page.locator("#rtt").textContent(), "–");
  assert.equal(await page.locator("#e2e50").textContent(), "–");
  await page.waitForFunction(() => getComputedStyle(document.querySelector("#quotes tbody")).opacity === "0.45");
  srv = await startServer({ demo: true, port });
  await page.waitForFunction(() => document.querySelector("#conn").dataset.state === "open", null, { timeout: 30_000 });
  const epochAfter = await page.evaluate(() => window.__board.stats.reconnects);
  assert.equal(epochAfter, 1);
  // The new server's quotes arrive (its seqs start over: a new epoch, not deduplicated away).
  const q0 = await page.evaluate(() => window.__board.stats.quotes);
  await page.waitForFunction((q) => window.__board.stats.quotes > q + 20, q0);
  await page.waitForFunction(() => document.querySelectorAll("#orders tbody tr").length > 0, null, { timeout: 30_000 });
  assert.equal(await conn.getAttribute("data-state"), "open");
  assert.ok((await page.evaluate(() => window.__board.stats.recoveryFailed)) > 0, "the new epoch was reported");
  assert.equal(await page.evaluate(() => document.body.classList.contains("stale")), false);
  // One notice for the restart's refetch (the private channels), none per public channel.
  await page.waitForFunction(() => [...document.querySelectorAll("#notices div")].some((d) => /refetched/.test(d.textContent)));
  const notices = await page.evaluate(() => [...document.querySelectorAll("#notices div")].map((d) => d.textContent));
  assert.equal(notices.filter((n) => /refetched/.test(n)).length, 1, notices.join("\n"));
  assert.ok(!notices.some((n) => /quotes\.|trades\./.test(n)), notices.join("\n"));
  assert.ok(notices.every((n) => /^\d\d:\d\d:\d\d  /.test(n)), "24-hour UTC times");

  // And an abrupt death (SIGKILL, no goodbye): back again with plain backoff.
  await srv.stop("SIGKILL");
  await page.waitForFunction(() => document.querySelector("#conn").dataset.state !== "open");
  srv = await startServer({ demo: true, port });
  await page.waitForFunction(() => document.querySelector("#conn").dataset.state === "open", null, { timeout: 30_000 });
  const q1 = await page.evaluate(() => window.__board.stats.quotes);
  await page.waitForFunction((q) => window.__board.stats.quotes > q + 20, q1);
  await page.waitForTimeout(1500); // let a rate/latency tick render for the screenshot

  mkdirSync(OUT, { recursive: true });
  await page.screenshot({ path: join(OUT, "board.png"), fullPage: true });
  assert.deepEqual(pageErrors, []);
});
