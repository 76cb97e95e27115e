// Test helpers: a real quotecast server as a child process, a TCP proxy that can cut and
// refuse connections (a network outage while the server keeps running), HTTP publish, and
// bounded waits. Every child is killed by its PID.
import { spawn } from "node:child_process";
import { createServer, connect } from "node:net";
import { existsSync } from "node:fs";
import { fileURLToPath } from "node:url";

export const ROOT = fileURLToPath(new URL("../../../", import.meta.url));
export const BIN = process.env.QUOTECAST_BIN || `${ROOT}target/release/quotecast`;

/**
 * Starts `quotecast serve` on `port` (0 = ephemeral) and resolves once it prints
 * `listening on 127.0.0.1:PORT`.
 */
export async function startServer({ demo = false, port = 0, args = [] } = {}) {
  if (!existsSync(BIN)) throw new Error(`${BIN} not found: cargo build --release -p quotecast`);
  const argv = ["serve", "--listen", `127.0.0.1:${port}`, "--shards", "2", "--drain-ms", "500", ...args];
  if (demo) argv.push("--demo", "--demo-symbols", "40");
  // Without --demo or a token key, open the server for anonymous clients and publishers.
  else if (!args.some((a) => a.startsWith("--jwt"))) argv.push("--allow-anonymous", "--anonymous-publish");
  const child = spawn(BIN, argv, { stdio: ["ignore", "pipe", "pipe"] });
  let stderr = "";
  child.stderr.on("data", (d) => (stderr = (stderr + d).slice(-4000)));
  const actualPort = await new Promise((resolve, reject) => {
    let out = "";
    const timer = setTimeout(() => reject(new Error(`server did not start in time: ${stderr}`)), 10_000);
    child.stdout.on("data", (d) => {
      out += d;
      const m = /listening on 127\.0\.0\.1:(\d+)/.exec(out);
      if (m) {
        clearTimeout(timer);
        resolve(Number(m[1]));
      }
    });
    child.on("exit", (code) => {
      clearTimeout(timer);
      reject(new Error(`server exited with ${code}: ${stderr}`));
    });
  });
  child.stdout.resume();
  return {
    port: actualPort,
    pid: child.pid,
    url: `ws://127.0.0.1:${actualPort}/ws`,
    /** Stops the server: SIGTERM (graceful: server_shutdown + close 1012) or SIGKILL. */
    async stop(signal = "SIGTERM") {
      if (child.exitCode !== null || child.signalCode !== null) return;
      const exited = new Promise((r) => child.once("exit", r));
      process.kill(child.pid, signal);
      const t = setTimeout(() => {
        if (child.exitCode === null && child.signalCode === null) process.kill(child.pid, "SIGKILL");
      }, 5_000);
      await exited;
      clearTimeout(t);
    },
  };
}

/** A TCP proxy to 127.0.0.1:`target`. `cut()` drops every connection; `block` refuses new ones. */
export async function startProxy(target) {
  const socks = new Set();
  const state = { blocked: false, accepted: 0 };
  const srv = createServer((client) => {
    if (state.blocked) return client.destroy();
    state.accepted++;
    const up = connect(target, "127.0.0.1");
    socks.add(client);
    socks.add(up);
    client.pipe(up);
    up.pipe(client);
    const done = () => {
      client.destroy();
      up.destroy();
      socks.delete(client);
      socks.delete(up);
    };
    client.on("error", done).on("close", done);
    up.on("error", done).on("close", done);
  });
  await new Promise((r) => srv.listen(0, "127.0.0.1", r));
  const port = srv.address().port;
  return {
    port,
    url: `ws://127.0.0.1:${port}/ws`,
    state,
    set blocked(v) {
      state.blocked = v;
    },
    cut() {
      for (const s of socks) s.destroy();
      socks.clear();
    },
    async close() {
      this.cut();
      await new Promise((r) => srv.close(r));
    },
  };
}

/** POST /api/publish with a batch (and an optional Authorization header); resolves with the seqs. */
export async function publishHttp(port, events, authorization) {
  const res = await fetch(`http://127.0.0.1:${port}/api/publish`, {
    method: "POST",
    headers: { "content-type": "application/json", ...(authorization ? { authorization } : {}) },
    body: JSON.stringify({ events }),
    signal: AbortSignal.timeout(5_000),
  });
  const body = await res.json();
  if (res.status !== 200) throw new Error(`publish: ${res.status} ${JSON.stringify(body)}`);
  return body.seqs;
}

/** Polls `pred` until it is truthy (resolves with its value) or `ms` passes (rejects). */
export async function waitFor(pred, ms = 5_000, what = "condition") {
  const end = Date.now() + ms;
  for (;;) {
    const v = await pred();
    if (v) return v;
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await sleep(20);
  }
}

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** A WebSocket constructor that records the URLs opened and the kinds of frames received. */
export function recordingWebSocket() {
  const log = { urls: [], frames: { text: 0, binary: 0 }, sent: [] };
  const Base = globalThis.WebSocket;
  if (!Base) throw new Error("no global WebSocket: run node with --experimental-websocket (Node 20)");
  class Recording extends Base {
    constructor(url) {
      super(url);
      log.urls.push(url);
      this.addEventListener("message", (e) => {
        if (typeof e.data === "string") log.frames.text++;
        else log.frames.binary++;
      });
    }
    send(d) {
      log.sent.push(d);
      super.send(d);
    }
  }
  return { WebSocket: Recording, log };
}
