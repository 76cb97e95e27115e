// The board against anything a publisher can send. In demo mode anyone may publish on every
// channel the board shows, so this test does exactly that over HTTP: wrong types, missing
// and unknown fields, null/array/scalar payloads, huge strings, deep nesting, markup, unknown
// event names, and the README's minimal order (`{"order_id":"ORD_1","status":"filled"}`).
// Asserts no page error, nothing routed to the board's safety net, a market that keeps
// moving, the minimal order shown, the same after a reload (the hostile events are in the
// retained history and replayed), and a layout that fits 1400, 800 and 390 px wide
// viewports (screenshots in test-output/board-{1400,800,390}.png, and board-hostile-390.png).
import { test } from "node:test";
import assert from "node:assert/strict";
import { mkdirSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { chromium } from "playwright-core";
import { startServer, publishHttp, ROOT } from "../helpers.mjs";

const CHROMIUM = process.env.CHROMIUM_PATH || "/usr/bin/chromium";
const OUT = join(ROOT, "test-output");

const BOARD_CHANNELS = [
  ["quotes.AAPL", "quote"],
  ["trades.AAPL", "trade_executed"],
  ["market.status", "market_status"],
  ["user.42.orders", "order_update"],
  ["user.42.positions", "position_update"],
  ["user.42.equity", "equity_updated"],
  ["user.42.risk", "risk_alert"],
];
const FIELDS = [
  "symbol", "bid", "ask", "last", "change", "change_percent", "volume", "timestamp", "side", "price", "quantity",
  "is_open", "session", "order_id", "order_type", "filled_qty", "status", "position_id", "entry_price",
  "current_price", "unrealized_pnl", "current_equity", "total_pnl", "total_trades", "severity", "title", "message",
  "alert_timestamp",
];
const HUGE = "W".repeat(60_000);
let deep = { leaf: 1 };
for (let i = 0; i < 60; i++) deep = { d: deep };
const LONG = "L".repeat(6_000);
const WRONG = [null, true, [], [1, "x"], { a: 1 }, "NaN", "", LONG, -1e308, 1e308, "<img src=x onerror=window.__pwned=1>"];

function hostilePayloads() {
  // (A null payload is refused by the server: `data` is required.)
  const out = [0, -1, "a string", HUGE, [], [1, 2, 3], {}, { unknown: "field", extra: [1, { x: null }] }, deep];
  // Every known field with every wrong type, one field at a time and all at once.
  for (const w of WRONG) {
    out.push(Object.fromEntries(FIELDS.map((f) => [f, w])));
  }
  for (const f of FIELDS) out.push({ [f]: { nested: HUGE.slice(0, 100) } });
  return out;
}

async function launch(t) {
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
  const errors = [];
  page.on("pageerror", (e) => errors.push(String(e)));
  page.on("console", (m) => {
    if (m.type() === "error") errors.push(m.text());
  });
  return { page, errors };
}

/** Waits until AAPL's quote seq moves past its current value (the market is live). */
async function marketMoves(page) {
  const seq = () => page.evaluate(() => Number(document.querySelector("#q-AAPL td[data-k=seq]").textContent) || 0);
  const s0 = await seq();
  const q0 = await page.evaluate(() => window.__board.stats.quotes);
  await page.waitForFunction((s) => Number(document.querySelector("#q-AAPL td[data-k=seq]").textContent) > s, s0);
  await page.waitForFunction((q) => window.__board.stats.quotes > q + 10, q0);
}

/**
 * Strict (real data): every visible cell and figure lies inside its panel and shows its whole
 * text. Not strict (after hostile data, which may scroll inside a table's panel): the page
 * itself never scrolls sideways and no panel leaves the viewport.
 */
function layoutProblems(strict) {
  const problems = [];
  const vw = document.documentElement.clientWidth;
  if (document.documentElement.scrollWidth > vw + 1) problems.push(`page scrolls sideways: ${document.documentElement.scrollWidth} > ${vw}`);
  for (const sec of document.querySelectorAll("section, header")) {
    const r = sec.getBoundingClientRect();
    if (r.right > vw + 1) problems.push(`${sec.id || sec.tagName} leaves the viewport (${r.right} > ${vw})`);
  }
  if (!strict) return problems;
  const cells = document.querySelectorAll("#quotes th, #quotes td, #orders th, #orders td, #positions th, #positions td, #eq-value, #eq-pnl, header .stat, #conn");
  for (const c of cells) {
    const r = c.getBoundingClientRect();
    if (r.width === 0 && r.height === 0) continue; // hidden on this width
    const panel = c.closest("section, header").getBoundingClientRect();
    const what = `${c.closest("table, section, header")?.id || c.id || c.tagName} "${c.textContent.slice(0, 20)}"`;
    if (r.right > panel.right + 1 || r.left < panel.left - 1) problems.push(`${what} sticks out of its panel`);
    if (c.scrollWidth > c.clientWidth + 1 && c.clientWidth > 0) problems.push(`${what} is clipped (${c.scrollWidth} > ${c.clientWidth})`);
  }
  return problems;
}

test("the board survives hostile payloads on every channel and fits 1400/800/390 px", { timeout: 120_000 }, async (t) => {
  const srv = await startServer({ demo: true });
  t.after(() => srv.stop());
  const { page, errors } = await launch(t);
  await page.goto(`http://127.0.0.1:${srv.port}/`);
  await page.waitForFunction(() => document.querySelector("#conn").dataset.state === "open");
  await marketMoves(page);

  // The demo's own data first: readable at every width, nothing clipped.
  await page.waitForFunction(() => document.querySelectorAll("#orders tbody tr").length > 3, null, { timeout: 30_000 });
  await page.waitForFunction(() => document.querySelectorAll("#positions tbody tr").length > 0, null, { timeout: 30_000 });
  await page.waitForFunction(() => /\d/.test(document.querySelector("#eq-value").textContent), null, { timeout: 30_000 });
  await page.waitForFunction(() => /ms/.test(document.querySelector("#e2e50").textContent), null, { timeout: 30_000 });
  mkdirSync(OUT, { recursive: true });
  for (const width of [1400, 800, 390]) {
    await page.setViewportSize({ width, height: width > 500 ? 900 : 844 });
    await page.evaluate(() => new Promise((r) => requestAnimationFrame(() => requestAnimationFrame(r))));
    const problems = await page.evaluate(layoutProblems, true);
    await page.screenshot({ path: join(OUT, `board-${width}.png`), fullPage: true });
    assert.deepEqual(problems, [], `layout at ${width} px`);
  }
  await page.setViewportSize({ width: 1400, height: 900 });

  // Everything hostile, on every board channel, under its own event name and unknown ones.
  const events = [];
  for (const [channel, event] of BOARD_CHANNELS) {
    for (const data of hostilePayloads()) {
      events.push({ channel, event, data });
      events.push({ channel, event: "not_a_board_event", data });
    }
  }
  events.push({ channel: "user.42.orders", event: "order_update", data: { order_id: "ORD_1", status: "filled" } });
  // In batches under the server's 256 KiB body limit.
  let batch = [];
  let bytes = 0;
  for (const ev of events) {
    const n = JSON.stringify(ev).length;
    if (bytes + n > 200_000) {
      await publishHttp(srv.port, batch);
      batch = [];
      bytes = 0;
    }
    batch.push(ev);
    bytes += n;
  }
  await publishHttp(srv.port, batch);
  const published = events.length;

  // The README's order (published last) is on the board: every hostile event was processed.
  const ord1 = () => page.waitForFunction(() =>
    [...document.querySelectorAll("#orders tbody tr")].some((tr) => tr.firstChild.textContent === "ORD_1" && /filled/.test(tr.textContent)));
  await ord1();
  await marketMoves(page);
  assert.deepEqual(errors, [], "no page error");
  assert.equal(await page.evaluate(() => window.__board.stats.badPayloads), 0, "every payload read without the safety net");
  assert.equal(await page.evaluate(() => window.__pwned), undefined, "markup in payloads is text, never HTML");
  assert.equal(await page.evaluate(() => document.querySelectorAll("main img").length), 0);

  // A reload replays the retained history (hostile events included) into a fresh page.
  await page.reload();
  await page.waitForFunction(() => document.querySelector("#conn").dataset.state === "open");
  await ord1();
  await marketMoves(page);
  assert.deepEqual(errors, [], "no page error after the reload");
  assert.equal(await page.evaluate(() => window.__board.stats.badPayloads), 0);
  for (const width of [1400, 390]) {
    await page.setViewportSize({ width, height: 900 });
    await page.evaluate(() => new Promise((r) => requestAnimationFrame(() => requestAnimationFrame(r))));
    assert.deepEqual(await page.evaluate(layoutProblems, false), [], `hostile data contained at ${width} px`);
  }
  await page.screenshot({ path: join(OUT, "board-hostile-390.png"), fullPage: true });
  await marketMoves(page);
  assert.deepEqual(errors, []);
  t.diagnostic(`published ${published} hostile events on ${BOARD_CHANNELS.length} channels`);
});
