// The newcomer's path, end to end: the client installs from a fresh clone's folder
// (`npm install --install-links`, prepare builds dist/), and a React app (test/app)
// installs it the way docs/client.md says (the packed tarball, into a copy of the app
// outside this repository, after the app's own `npm ci` with its pinned lock), type-checks under
// `tsc --strict`, bundles with esbuild, and renders live quotes and user 42's orders in
// headless Chromium against a real `quotecast serve --demo`. One copy of React (no
// "Invalid hook call"), no page error. The app's backend (a small Node server here) serves
// the page and hands out the WebSocket token at /api/ws-token, as docs/client.md's example does.
import { test } from "node:test";
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { cpSync, existsSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync } from "node:fs";
import { createServer } from "node:http";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { chromium } from "playwright-core";
import { startServer, publishHttp, ROOT } from "../helpers.mjs";

const CHROMIUM = process.env.CHROMIUM_PATH || "/usr/bin/chromium";
const CLIENT = fileURLToPath(new URL("../../", import.meta.url));
const FIXTURE = fileURLToPath(new URL("../app/", import.meta.url));
const OUT = join(ROOT, "test-output");

const run = (cmd, args, cwd) => execFileSync(cmd, args, { cwd, encoding: "utf8", stdio: ["ignore", "pipe", "pipe"] });

test("a React app installs the packed client, type-checks under --strict and shows live quotes and user 42's orders", { timeout: 300_000 }, async (t) => {
  const dir = mkdtempSync(join(tmpdir(), "quotecast-app-"));
  t.after(() => rmSync(dir, { recursive: true, force: true }));

  // 1. Pack the client (as `npm pack` would for a release: prepare builds dist/).
  const packed = JSON.parse(run("npm", ["pack", "--json", "--pack-destination", dir], CLIENT))[0].filename;
  const tarball = join(dir, packed);
  assert.ok(existsSync(tarball), tarball);

  // 1b. The other documented way, from a fresh clone (no node_modules, no dist/): the folder
  // installed as a copy builds itself with `prepare`.
  const clone = join(dir, "clone", "clients", "js");
  mkdirSync(clone, { recursive: true });
  for (const f of ["package.json", "package-lock.json", "tsconfig.json", "README.md", "LICENSE", "src", "scripts"]) cpSync(join(CLIENT, f), join(clone, f), { recursive: true });
  const plain = join(dir, "plain-app");
  mkdirSync(plain);
  run("npm", ["init", "-y"], plain);
  run("npm", ["install", "--install-links", "--no-audit", "--no-fund", "../clone/clients/js"], plain);
  const kind = run("node", ["--input-type=module", "-e", 'import("@quotecast/client").then((m) => console.log(typeof m.QuotecastClient))'], plain);
  assert.equal(kind.trim(), "function", "the folder install builds dist/ and imports");

  // 2. The app, outside the repository: its pinned dependencies, then the client tarball.
  const app = join(dir, "app");
  mkdirSync(app);
  for (const f of ["package.json", "package-lock.json", "tsconfig.json", "index.html", "src"]) cpSync(join(FIXTURE, f), join(app, f), { recursive: true });
  run("npm", ["ci", "--no-audit", "--no-fund"], app);
  run("npm", ["install", "--no-save", "--no-audit", "--no-fund", tarball], app);
  const installed = join(app, "node_modules", "@quotecast", "client");
  assert.ok(existsSync(join(installed, "dist", "index.js")), "dist/ is in the package");
  assert.ok(existsSync(join(installed, "LICENSE")) && existsSync(join(installed, "README.md")));
  assert.ok(!existsSync(join(installed, "node_modules")), "the client brings no React of its own");
  assert.deepEqual(readdirSync(join(app, "node_modules")).filter((n) => n === "react").length, 1);

  // 3. tsc --strict (the app's tsconfig), then the bundle.
  run("npx", ["--no-install", "tsc", "-p", "tsconfig.json"], app);
  run("npm", ["run", "--silent", "build"], app);
  assert.ok(existsSync(join(app, "dist", "app.js")));

  // 4. A real demo server, and the app's backend: the page, the bundle, and a token endpoint.
  const srv = await startServer({ demo: true });
  t.after(() => srv.stop());
  const web = createServer(async (req, res) => {
    if (req.url === "/api/ws-token") {
      const r = await fetch(`http://127.0.0.1:${srv.port}/demo/token?user=42`);
      res.writeHead(200, { "content-type": "text/plain" });
      return res.end((await r.json()).token);
    }
    const path = req.url.startsWith("/dist/app.js") ? join(app, "dist", "app.js") : join(app, "index.html");
    res.writeHead(200, { "content-type": path.endsWith(".js") ? "text/javascript" : "text/html" });
    res.end(readFileSync(path));
  });
  await new Promise((r) => web.listen(0, "127.0.0.1", r));
  t.after(() => web.close());

  // 5. Headless Chromium renders it.
  const profile = mkdtempSync(join(tmpdir(), "quotecast-chromium-"));
  t.after(() => rmSync(profile, { recursive: true, force: true }));
  const ctx = await chromium.launchPersistentContext(profile, {
    executablePath: CHROMIUM,
    headless: true,
    viewport: { width: 900, height: 700 },
    args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--no-first-run"],
  });
  t.after(() => ctx.close());
  const page = ctx.pages()[0] ?? (await ctx.newPage());
  page.setDefaultTimeout(20_000);
  const errors = [];
  page.on("pageerror", (e) => errors.push(String(e)));
  page.on("console", (m) => {
    if (m.type() === "error") errors.push(m.text());
  });
  await page.goto(`http://127.0.0.1:${web.address().port}/?server=127.0.0.1:${srv.port}`);
  await page.waitForFunction(() => document.querySelector("#status")?.dataset.state === "open");
  // Live quotes: a price, then a newer seq.
  await page.waitForFunction(() => /^\d+(\.\d+)?$/.test(document.querySelector("#quote-AAPL .bid")?.textContent ?? ""));
  const seq = await page.evaluate(() => Number(document.querySelector("#quote-AAPL").dataset.seq));
  await page.waitForFunction((s) => Number(document.querySelector("#quote-AAPL").dataset.seq) > s, seq);
  await page.waitForFunction(() => /^\d+(\.\d+)?$/.test(document.querySelector("#quote-MSFT .bid")?.textContent ?? ""));
  // User 42's orders: the demo's own (retained history and live), and one published as the README does.
  await page.waitForFunction(() => [...document.querySelectorAll("#orders tr")].some((tr) => /^ORD_\d+_\d+/.test(tr.textContent)), null, { timeout: 30_000 });
  await publishHttp(srv.port, [{ channel: "user.42.orders", event: "order_update", data: { order_id: "ORD_1", symbol: "AAPL", status: "filled" } }]);
  await page.waitForFunction(() => [...document.querySelectorAll("#orders tr")].some((tr) => /ORD_1\s*AAPL\s*filled/.test(tr.textContent)));
  mkdirSync(OUT, { recursive: true });
  await page.screenshot({ path: join(OUT, "app-fixture.png"), fullPage: true });
  assert.deepEqual(errors, []);
});
