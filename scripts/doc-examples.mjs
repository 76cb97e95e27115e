#!/usr/bin/env node
// Runs every code example of the documentation against real servers, so a doc example that
// breaks fails the build. Called by clients/js/test.sh (after `npm ci` and the build there);
// run it alone with `node scripts/doc-examples.mjs [FILE.md ...]`.
//
// Files: README.md, clients/js/README.md and every docs/*.md (new files are picked up).
// Every fenced block is checked according to its info string:
//
//   sh, bash, shell  run with bash (-e -o pipefail) in a scratch directory outside the
//                    repository ($REPO is the checkout); `quotecast` is the built binary; `curl` fails on an HTTP error (--fail-with-body); a block
//                    whose first line is `websocat URL` is a WebSocket session instead: the
//                    lines after it are sent as frames, every `subscribe` must be acked and
//                    no `error` may come back
//   js, mjs          run as an ES module by Node (with --experimental-websocket)
//   ts, tsx          type-checked with `tsc --strict` (jsx: react-jsx); `@quotecast/client`
//                    resolves to this repository's package
//   python, py       run with python3 (PyJWT installed, see scripts/doc-examples-requirements.txt)
//   json             must parse (the whole block, or each line/paragraph as one message;
//                    `→` marks a reply); client ops (`"op"`) are sent to the demo server
//                    ("<JWT>" = user 42's demo token) and an op with an `id` must get the
//                    documented reply type (or, with none documented, no error)
//   toml             `quotecast config --check` must accept it
//   html             served from another origin and opened in headless Chromium: no page
//                    error, and the page text must match `expect` (required)
//   (none), text     not code (output samples, grammar): not run
//
// `127.0.0.1:8080` and `localhost:8080` in sh and js blocks mean the runner's demo server
// (`quotecast serve --demo` on a free port), so examples can be written as a reader runs
// them. A js or sh block passes if it exits 0, or is still running after `run-for` seconds
// (default 4: examples that keep a socket open); either way it must not print an error
// message (`type: 'error'`, an uncaught exception) and must match `expect` if given.
//
// A directive in an HTML comment right before the fence (invisible on GitHub) adjusts a
// block. Keys start a line; a value continues on the following lines indented by 2 spaces:
//
//   <!-- doc-example: skip: REASON -->          not run; the reason is required and printed
//   <!-- doc-example:
//   before:
//     declare function render(bid: number): void;   code put before the block (declarations
//   after:                                           for ts, setup values, checks)
//     console.log(quotecastToken(42, "s"));          code put after it
//   expect: REGEX                                     stdout must match
//   expect-error: REGEX                               the block must fail (exit status or an
//                                                     error printed) with output matching this
//   check-token: user.42.orders                       the last stdout line is a JWT: a server
//                                                     with --jwt-secret doc-examples-secret must
//                                                     accept it and allow this channel
//   run-for: 8                                        seconds before a still-running block passes
//   as: sh|js|ts|tsx|python|json|toml|text            check the block as this language
//   env: NAME=value NAME2=value                       environment of a toml block's check
//                                                     (a config naming `secret_env`)
//   -->
//
// A block in another language without a directive fails: add `as:` or `skip:`. Keep skips
// rare (a production host name, a command that needs hardware the CI lacks); each prints.
import { spawn, spawnSync } from "node:child_process";
import { existsSync, mkdirSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { dirname, join, relative, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { createRequire } from "node:module";
import { createServer } from "node:http";
import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";

const ROOT = join(dirname(fileURLToPath(import.meta.url)), "..");
const CLIENT = join(ROOT, "clients", "js");
// Inside the client package: Node and tsc resolve `@quotecast/client` (the package's own
// name, through its exports) and the packages of clients/js/node_modules from here.
const WORK = join(CLIENT, ".doc-examples");
const BIN = resolve(process.env.QUOTECAST_BIN || join(ROOT, "target", "release", "quotecast"));
const PYTHON = process.env.DOC_EXAMPLES_PYTHON || join(ROOT, "target", "doc-examples-venv", "bin", "python");
export const JWT_SECRET = "doc-examples-secret";

// Node 20 has WebSocket behind a flag: run again with it.
if (typeof globalThis.WebSocket !== "function") {
  const r = spawnSync(process.execPath, ["--experimental-websocket", "--no-warnings", ...process.argv.slice(1)], { stdio: "inherit" });
  process.exit(r.status ?? 1);
}

// ---------- extraction ----------

function docFiles(args) {
  if (args.length) return args.map((f) => resolve(f));
  const docs = readdirSync(join(ROOT, "docs")).filter((f) => f.endsWith(".md")).sort().map((f) => join(ROOT, "docs", f));
  return [join(ROOT, "README.md"), join(CLIENT, "README.md"), ...docs];
}

function parseDirective(text) {
  const d = {};
  let key = null;
  for (const raw of text.split("\n")) {
    const m = /^([a-z-]+):\s?(.*)$/.exec(raw);
    if (m) {
      key = m[1];
      d[key] = m[2];
    } else if (key && (raw.startsWith("  ") || raw.trim() === "")) {
      d[key] += (d[key] ? "\n" : "") + raw.slice(2);
    } else if (raw.trim()) {
      throw new Error(`bad directive line ${JSON.stringify(raw)} (keys start a line, values continue indented by 2 spaces)`);
    }
  }
  for (const k of Object.keys(d)) d[k] = d[k].trim();
  return d;
}

export function extract(file) {
  const lines = readFileSync(file, "utf8").split("\n");
  const blocks = [];
  for (let i = 0; i < lines.length; i++) {
    const open = /^(\s*)(`{3,}|~{3,})\s*([\w+-]*)/.exec(lines[i]);
    if (!open) continue;
    const [, indent, fence, lang] = open;
    const start = i;
    const body = [];
    for (i++; i < lines.length && !lines[i].trimStart().startsWith(fence); i++) body.push(lines[i].slice(indent.length));
    // A directive: the comment ending on the line before the fence (one blank line allowed).
    let directive = {};
    let j = start - 1;
    if (j >= 0 && lines[j].trim() === "") j--;
    if (j >= 0 && lines[j].trim().endsWith("-->")) {
      let k = j;
      while (k >= 0 && !lines[k].includes("<!--")) k--;
      const comment = lines.slice(k, j + 1).join("\n");
      const m = /<!--\s*doc-example:\s*([\s\S]*?)-->/.exec(comment);
      if (m) {
        try {
          directive = parseDirective(m[1].replace(/^\n/, ""));
        } catch (e) {
          directive = { invalid: e.message };
        }
      }
    }
    blocks.push({ file, line: start + 1, lang: (directive.as || lang || "text").toLowerCase(), code: body.join("\n"), d: directive });
  }
  return blocks;
}

// ---------- servers ----------

async function startServer(args) {
  const child = spawn(BIN, ["serve", "--listen", "127.0.0.1:0", "--shards", "2", ...args], { stdio: ["ignore", "pipe", "pipe"] });
  let stderr = "";
  child.stderr.on("data", (d) => (stderr += d));
  const port = await new Promise((resolve, reject) => {
    let out = "";
    const timer = setTimeout(() => reject(new Error(`server did not start: ${stderr}`)), 15_000);
    child.stdout.on("data", (d) => {
      out += d;
      const m = /listening on 127\.0\.0\.1:(\d+)/.exec(out);
      if (m) {
        clearTimeout(timer);
        resolve(Number(m[1]));
      }
    });
    child.on("exit", (c) => reject(new Error(`server exited ${c}: ${stderr}`)));
  });
  child.stdout.resume();
  return { port, child, stderr: () => stderr, stop: () => child.kill("SIGTERM") };
}

// ---------- checks ----------

const rewrite = (code, addr) => code.replace(/(127\.0\.0\.1|localhost):8080\b/g, addr);
const ERROR_OUTPUT = /type: ['"]error['"]|"type":\s*"error"|Uncaught|Error: |Traceback/;

function runProcess(cmd, args, { cwd, env, input, runFor, until }) {
  return new Promise((resolve) => {
    const child = spawn(cmd, args, { cwd, env: { ...process.env, ...env }, stdio: ["pipe", "pipe", "pipe"], detached: true });
    let stdout = "";
    let stderr = "";
    let stillRunning = false;
    child.stdout.on("data", (d) => {
      stdout += d;
      // The expected output arrived: no need to wait for the rest of `run-for`.
      if (until && until.test(stdout) && !stillRunning) {
        stillRunning = true;
        setTimeout(() => {
          try {
            process.kill(-child.pid, "SIGTERM");
          } catch {}
        }, 200);
      }
    });
    child.stderr.on("data", (d) => (stderr += d));
    child.stdin.end(input ?? "");
    const timer = setTimeout(() => {
      stillRunning = true;
      try {
        process.kill(-child.pid, "SIGTERM"); // its process group: servers it started too
      } catch {}
    }, runFor * 1000);
    child.on("exit", (code, signal) => {
      clearTimeout(timer);
      // Whatever it started in the background goes too.
      try {
        process.kill(-child.pid, "SIGKILL");
      } catch {}
      setTimeout(() => resolve({ code, signal, stdout, stderr, stillRunning }), 50);
    });
  });
}

function judge(b, r) {
  const out = `${r.stdout}\n${r.stderr}`;
  if (b.d["expect-error"]) {
    // An example that shows a refusal: it must fail, with this message.
    if (r.code === 0 && !ERROR_OUTPUT.test(out)) return `expected a failure, but it succeeded:\n${out.slice(-3000)}`;
    if (!new RegExp(b.d["expect-error"]).test(out)) return `the error does not match /${b.d["expect-error"]}/:\n${out.slice(-3000)}`;
    return null;
  }
  if (!r.stillRunning && r.code !== 0) return `exited with ${r.code ?? r.signal}:\n${out.slice(-3000)}`;
  if (ERROR_OUTPUT.test(out)) return `printed an error:\n${out.slice(-3000)}`;
  if (b.d.expect && !new RegExp(b.d.expect).test(r.stdout)) return `output does not match /${b.d.expect}/:\n${out.slice(-3000)}`;
  return null;
}

async function checkToken(b, r, ctx) {
  const token = r.stdout.trim().split("\n").at(-1);
  const channel = b.d["check-token"];
  const res = await wsSession(`ws://127.0.0.1:${ctx.auth.port}/ws?token=${encodeURIComponent(token)}`, [
    JSON.stringify({ op: "subscribe", id: 1, channels: [channel] }),
  ]);
  return res;
}

/** Sends protocol ops of a json example and compares each answer's type with the documented one. */
async function opSession(ctx, ops) {
  if (!ctx.token) {
    const r = await fetch(`http://${ctx.addr}/demo/token?user=42`);
    ctx.token = (await r.json()).token;
  }
  const sub = (v) => JSON.parse(JSON.stringify(v).replaceAll('"<JWT>"', JSON.stringify(ctx.token)));
  return new Promise((resolve) => {
    const ws = new WebSocket(`ws://${ctx.addr}/ws`);
    const waiting = new Map();
    let done = false;
    const finish = (err) => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      ws.close();
      resolve(err);
    };
    const timer = setTimeout(() => finish(`no answer to ${[...waiting.keys()].map((id) => JSON.stringify(waiting.get(id).op)).join(", ")}`), 5_000);
    ws.onmessage = (m) => {
      const msg = JSON.parse(m.data);
      if (msg.type === "welcome") {
        for (const o of ops) {
          if (o.op.id !== undefined) waiting.set(o.op.id, o);
          ws.send(JSON.stringify(sub(o.op)));
        }
        if (!waiting.size) setTimeout(() => finish(null), 300);
        return;
      }
      if (msg.id === undefined || !waiting.has(msg.id)) {
        if (msg.type === "error") finish(`server error: ${m.data}`);
        return;
      }
      const o = waiting.get(msg.id);
      const want = o.want ?? (msg.type === "error" ? "not an error" : msg.type);
      if (msg.type !== want) return finish(`${JSON.stringify(o.op)} answered ${m.data}, the doc says ${want}`);
      // A subscribe answers once per channel; the first ack is enough.
      waiting.delete(msg.id);
      if (!waiting.size) finish(null);
    };
    ws.onclose = (e) => finish(`closed ${e.code} ${e.reason}`);
    ws.onerror = () => finish("connection error");
  });
}

/** Opens a WebSocket, sends `frames` after the welcome; every subscribe must be acked, no error. */
function wsSession(url, frames) {
  return new Promise((resolve) => {
    const got = [];
    let pending = 0;
    let done = false;
    const ws = new WebSocket(url);
    const finish = (err) => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      try {
        ws.close();
      } catch {}
      resolve(err);
    };
    const timer = setTimeout(() => finish(`no answer in time; got ${JSON.stringify(got).slice(0, 500)}`), 5_000);
    ws.onmessage = (m) => {
      const msg = JSON.parse(m.data);
      got.push(msg);
      if (msg.type === "error") return finish(`server error: ${m.data}`);
      if (msg.type === "welcome") {
        for (const f of frames) {
          const op = JSON.parse(f);
          if (op.op === "subscribe") pending++;
          ws.send(f);
        }
        if (!pending) setTimeout(() => finish(null), 300);
      }
      if (msg.type === "subscribed" && --pending === 0) finish(null);
    };
    ws.onclose = (e) => finish(`closed ${e.code} ${e.reason}`);
    ws.onerror = () => finish("connection error");
  });
}

async function runBlock(b, ctx, i) {
  const d = b.d;
  const runFor = Number(d["run-for"] || 4);
  const base = `${relative(ROOT, b.file).replace(/[^\w]+/g, "_")}_L${b.line}`;
  const join2 = (...parts) => parts.filter(Boolean).join("\n");
  switch (b.lang) {
    case "sh":
    case "bash":
    case "shell":
    case "console": {
      const code = rewrite(b.code, ctx.addr);
      const first = code.split("\n")[0].trim();
      if (first.startsWith("websocat ")) {
        const url = first.split(/\s+/)[1];
        const frames = code.split("\n").slice(1).map((l) => l.trim()).filter((l) => l && !l.startsWith("#"));
        return wsSession(url, frames);
      }
      // Outside the repository: a block may link or copy the checkout ($REPO).
      if (!ctx.scratch) {
        ctx.scratch = mkdtempSync(join(tmpdir(), "doc-examples-"));
        ctx.cleanup.push(() => rmSync(ctx.scratch, { recursive: true, force: true }));
      }
      const dir = join(ctx.scratch, `sh-${i}`);
      mkdirSync(dir, { recursive: true });
      const script = join2("set -eo pipefail", 'curl() { command curl -sS --fail-with-body "$@"; }', d.before, code, d.after);
      const r = await runProcess("bash", ["-c", script], {
        cwd: dir,
        env: { PATH: `${dirname(BIN)}:${process.env.PATH}`, QUOTECAST_API_KEY: "doc-examples-key", REPO: ROOT },
        runFor,
      });
      return judge(b, r);
    }
    case "js":
    case "mjs":
    case "javascript": {
      const f = join(WORK, `${base}.mjs`);
      writeFileSync(f, join2(d.before, rewrite(b.code, ctx.addr), d.after) + "\n");
      const until = d.expect ? new RegExp(d.expect) : undefined;
      const r = await runProcess(process.execPath, ["--experimental-websocket", "--no-warnings", f], { cwd: WORK, runFor, until });
      return judge(b, r) ?? (d["check-token"] ? checkToken(b, r, ctx) : null);
    }
    case "python":
    case "py": {
      const f = join(WORK, `${base}.py`);
      writeFileSync(f, join2(d.before, b.code, d.after) + "\n");
      const r = await runProcess(PYTHON, [f], { cwd: WORK, runFor });
      return judge(b, r) ?? (d["check-token"] ? checkToken(b, r, ctx) : null);
    }
    case "ts":
    case "tsx":
    case "typescript": {
      const f = join(WORK, "ts", `${base}.${b.lang === "tsx" ? "tsx" : "ts"}`);
      writeFileSync(f, join2(d.before, b.code, d.after, "export {};") + "\n");
      ctx.ts.push({ b, f, offset: d.before ? d.before.split("\n").length : 0 });
      return "deferred";
    }
    case "json": {
      // One message, or several: one per line or paragraph; `→` marks the answer to the op
      // before it.
      const msgs = [];
      let whole = null;
      try {
        whole = JSON.parse(b.code);
      } catch {}
      if (whole !== null) msgs.push({ v: whole });
      else {
        const parts = b.code.split(/\n\s*\n|\n(?=\s*[{[→])|\s(?=→\s)/).map((p) => p.trim()).filter(Boolean);
        for (const p of parts) {
          const reply = p.startsWith("→");
          const text = p.replace(/^→\s*/, "");
          try {
            msgs.push({ v: JSON.parse(text), reply });
          } catch (e) {
            return `not JSON: ${text.slice(0, 200)}: ${e.message}`;
          }
        }
      }
      // Client ops are sent to the demo server (anonymous, which may publish there; "<JWT>"
      // is user 42's demo token); an op with an id must get the documented answer's type,
      // or no error.
      const ops = [];
      for (let k = 0; k < msgs.length; k++) {
        const m = msgs[k];
        if (m.reply || !m.v || typeof m.v !== "object" || typeof m.v.op !== "string") continue;
        const next = msgs[k + 1];
        ops.push({ op: m.v, want: next?.reply ? next.v?.type : undefined });
      }
      return ops.length ? opSession(ctx, ops) : null;
    }
    case "toml": {
      const f = join(WORK, `${base}.toml`);
      writeFileSync(f, b.code + "\n");
      const env = { ...process.env };
      for (const kv of (d.env || "").split(/\s+/).filter(Boolean)) {
        const eq = kv.indexOf("=");
        if (eq < 1) return `bad env directive ${JSON.stringify(kv)}: NAME=value`;
        env[kv.slice(0, eq)] = kv.slice(eq + 1);
      }
      const r = spawnSync(BIN, ["config", "--check", f], { encoding: "utf8", env });
      return r.status === 0 ? null : `quotecast config --check: ${r.stderr}${r.stdout}`;
    }
    case "html":
      return checkHtml(b, rewrite(b.code, ctx.addr), ctx);
    case "text":
    case "":
      return "not code";
    default:
      return `no checker for \`${b.lang}\`: add <!-- doc-example: as: LANG --> or <!-- doc-example: skip: REASON -->`;
  }
}

/** Serves the page from its own origin and opens it in headless Chromium. */
async function checkHtml(b, html, ctx) {
  if (!b.d.expect) return "an html example needs `expect:` (a regex the page text must match)";
  if (!ctx.browser) {
    const { chromium } = createRequire(join(CLIENT, "package.json"))("playwright-core");
    const profile = mkdtempSync(join(tmpdir(), "doc-examples-chromium-"));
    ctx.browser = await chromium.launchPersistentContext(profile, {
      executablePath: process.env.CHROMIUM_PATH || "/usr/bin/chromium",
      headless: true,
      args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--no-first-run"],
    });
    ctx.cleanup.push(() => ctx.browser.close(), () => rmSync(profile, { recursive: true, force: true }));
  }
  const srv = createServer((req, res) => {
    res.writeHead(200, { "content-type": "text/html; charset=utf-8" });
    res.end(html);
  });
  await new Promise((r) => srv.listen(0, "127.0.0.1", r));
  const page = await ctx.browser.newPage();
  const errors = [];
  page.on("pageerror", (e) => errors.push(String(e)));
  page.on("console", (m) => {
    if (m.type() === "error" || m.type() === "warning") errors.push(m.text());
  });
  try {
    await page.goto(`http://127.0.0.1:${srv.address().port}/`);
    const re = new RegExp(b.d.expect);
    await page.waitForFunction((src) => new RegExp(src).test(document.body.innerText), re.source, { timeout: 10_000 }).catch(() => {});
    const text = await page.evaluate(() => document.body.innerText);
    if (errors.length) return `page errors: ${errors.join("; ")}`;
    if (!re.test(text)) return `page text does not match /${b.d.expect}/: ${text.slice(0, 300)}`;
    return null;
  } finally {
    await page.close();
    srv.close();
  }
}

function typecheck(items) {
  if (!items.length) return new Map();
  writeFileSync(join(WORK, "ts", "tsconfig.json"), JSON.stringify({
    compilerOptions: {
      strict: true, noEmit: true, target: "ES2022", module: "NodeNext", moduleResolution: "NodeNext",
      lib: ["ES2022", "DOM"], jsx: "react-jsx", types: ["node"], skipLibCheck: true,
    },
    include: ["*.ts", "*.tsx"],
  }));
  const tsc = join(CLIENT, "node_modules", "typescript", "bin", "tsc");
  const r = spawnSync(process.execPath, [tsc, "-p", join(WORK, "ts")], { encoding: "utf8", cwd: join(WORK, "ts") });
  const errors = new Map();
  for (const line of `${r.stdout}${r.stderr}`.split("\n")) {
    const m = /^(\S+?\.tsx?)\((\d+),\d+\): (.*)$/.exec(line);
    if (!m) continue;
    const item = items.find((it) => it.f.endsWith(m[1]));
    if (!item) continue;
    const at = Number(m[2]) - item.offset;
    const msg = `line ${item.b.line + at} (block line ${at}): ${m[3]}`;
    errors.set(item, (errors.get(item) ? `${errors.get(item)}\n` : "") + msg);
  }
  if (r.status !== 0 && errors.size === 0) errors.set(items[0], `tsc failed: ${r.stdout}${r.stderr}`);
  return errors;
}

// ---------- main ----------

async function main() {
  if (!existsSync(BIN)) throw new Error(`${BIN} not found: cargo build --release -p quotecast (or set QUOTECAST_BIN)`);
  rmSync(WORK, { recursive: true, force: true });
  mkdirSync(join(WORK, "ts"), { recursive: true });
  const demo = await startServer(["--demo", "--demo-symbols", "40"]);
  const auth = await startServer(["--jwt-secret", JWT_SECRET, "--api-key", "doc-examples-key"]);
  const addr = `127.0.0.1:${demo.port}`;
  const ctx = { addr, auth, ts: [], cleanup: [] };
  let failed = 0;
  let ran = 0;
  const skipped = [];
  try {
    // The start banner names the board's URL.
    const banner = new RegExp(`http://127\\.0\\.0\\.1:${demo.port}/`);
    for (let i = 0; i < 100 && !banner.test(demo.stderr()); i++) await new Promise((r) => setTimeout(r, 50));
    if (!banner.test(demo.stderr())) {
      failed++;
      console.error(`FAIL the demo server's start banner does not print the board URL http://${addr}/`);
    }
    const blocks = docFiles(process.argv.slice(2)).flatMap(extract);
    let i = 0;
    for (const b of blocks) {
      const where = `${relative(ROOT, b.file)}:${b.line}`;
      if (b.d.invalid) {
        failed++;
        console.error(`FAIL ${where}: ${b.d.invalid}`);
        continue;
      }
      if ("skip" in b.d) {
        if (!b.d.skip) {
          failed++;
          console.error(`FAIL ${where}: a skip needs a reason`);
        } else skipped.push(`${where}: ${b.d.skip}`);
        continue;
      }
      const t0 = Date.now();
      const err = await runBlock(b, ctx, i++);
      if (err === "not code" || err === "deferred") continue;
      ran++;
      if (err) {
        failed++;
        console.error(`FAIL ${where} (${b.lang}): ${err}`);
      } else console.log(`ok   ${where} (${b.lang}, ${Date.now() - t0} ms)`);
    }
    const tsErrors = typecheck(ctx.ts);
    for (const it of ctx.ts) {
      ran++;
      const where = `${relative(ROOT, it.b.file)}:${it.b.line}`;
      const err = tsErrors.get(it);
      if (err) {
        failed++;
        console.error(`FAIL ${where} (${it.b.lang}, tsc --strict):\n${err}`);
      } else console.log(`ok   ${where} (${it.b.lang}, tsc --strict)`);
    }
  } finally {
    demo.stop();
    auth.stop();
    for (const f of ctx.cleanup) await f();
  }
  for (const s of skipped) console.log(`skip ${s}`);
  console.log(`doc examples: ${ran} checked, ${failed} failed, ${skipped.length} skipped`);
  if (failed) process.exit(1);
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
