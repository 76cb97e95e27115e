// Helpers for the Pusher compatibility tests: a real quotecast server (child process) with
// a Pusher app from a TOML file, an auth endpoint that signs with the official `pusher`
// server SDK (as a Laravel app's /broadcasting/auth does), and bounded waits.
import { spawn } from "node:child_process";
import { createServer } from "node:http";
import { existsSync, mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import Pusher from "pusher";

export const ROOT = fileURLToPath(new URL("../../", import.meta.url));
export const BIN = process.env.QUOTECAST_BIN || `${ROOT}target/release/quotecast`;
export const APP = { appId: "1001", key: "app-key", secret: "app-secret-0123456789" };
/** The app's end-to-end encryption master key (known to the app and its SDK, never to quotecast). */
export const MASTER_KEY = Buffer.alloc(32, 7).toString("base64");

/**
 * A config file with two Pusher apps: the test app (client events on) and a disabled one;
 * `webhooks` (TOML text of `[[pusher.apps.webhooks]]` entries) goes to the test app.
 */
function configFile(webhooks = "") {
  const dir = mkdtempSync(join(tmpdir(), "quotecast-pusher-"));
  const file = join(dir, "quotecast.toml");
  writeFileSync(
    file,
    `[[pusher.apps]]
id = "${APP.appId}"
key = "${APP.key}"
secret_env = "QC_PUSHER_TEST_SECRET"
client_events = true
max_presence_members = 3
${webhooks}
[[pusher.apps]]
id = "2002"
key = "disabled-key"
secret_env = "QC_PUSHER_TEST_SECRET"
namespace = "off"
enabled = false
`,
  );
  return file;
}

/** Starts `quotecast serve` with the Pusher apps; resolves once it listens. */
export async function startServer({ port = 0, webhooks = "" } = {}) {
  if (!existsSync(BIN)) throw new Error(`${BIN} not found: cargo build --release -p quotecast`);
  const argv = [
    "serve", "--config", configFile(webhooks), "--listen", `127.0.0.1:${port}`, "--shards", "2",
    "--drain-ms", "300", "--allow-anonymous", "--anonymous-publish",
  ];
  const child = spawn(BIN, argv, {
    stdio: ["ignore", "pipe", "pipe"],
    env: { ...process.env, QC_PUSHER_TEST_SECRET: APP.secret },
  });
  let stderr = "";
  child.stderr.on("data", (d) => (stderr = (stderr + d).slice(-4000)));
  const actual = await new Promise((resolve, reject) => {
    let out = "";
    const timer = setTimeout(() => reject(new Error(`server did not start: ${stderr}`)), 10_000);
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
    port: actual,
    async stop(signal = "SIGTERM") {
      if (child.exitCode !== null || child.signalCode !== null) return;
      const exited = new Promise((r) => child.once("exit", r));
      process.kill(child.pid, signal);
      await exited;
    },
  };
}

/** The official server SDK pointed at the test server. */
export function sdk(port, secret = APP.secret) {
  return new Pusher({
    ...APP, secret, host: "127.0.0.1", port: String(port), useTLS: false, encryptionMasterKeyBase64: MASTER_KEY,
  });
}

/**
 * An auth endpoint like Laravel's /broadcasting/auth: POST socket_id + channel_name (+ the
 * `user` param the client adds) signed by the SDK; presence members get {user_id, user_info}.
 * GET /static/... serves files from node_modules (for the browser test), `/page` the HTML.
 */
export async function startAuthServer(port, { page = "" } = {}) {
  const signer = sdk(port);
  const srv = createServer((req, res) => {
    if (req.method === "GET") {
      const url = new URL(req.url, "http://x");
      if (url.pathname === "/page") {
        res.writeHead(200, { "content-type": "text/html" });
        return res.end(page);
      }
      const m = /^\/static\/(.+)$/.exec(url.pathname);
      if (m && !m[1].includes("..")) {
        const file = fileURLToPath(new URL(`./node_modules/${m[1]}`, import.meta.url));
        if (existsSync(file)) {
          res.writeHead(200, { "content-type": "text/javascript" });
          return import("node:fs").then((fs) => res.end(fs.readFileSync(file)));
        }
      }
      res.writeHead(404);
      return res.end();
    }
    let body = "";
    req.on("data", (d) => (body += d));
    req.on("end", () => {
      const p = new URLSearchParams(body);
      const socketId = p.get("socket_id");
      const channel = p.get("channel_name");
      const user = p.get("user") || "1";
      res.setHeader("access-control-allow-origin", "*");
      res.setHeader("content-type", "application/json");
      if (req.url.startsWith("/user-auth")) {
        return res.end(JSON.stringify(signer.authenticateUser(socketId, { id: user, name: `user ${user}` })));
      }
      const presence = channel.startsWith("presence-")
        ? { user_id: user, user_info: { name: `user ${user}` } }
        : undefined;
      res.end(JSON.stringify(signer.authorizeChannel(socketId, channel, presence)));
    });
  });
  await new Promise((r) => srv.listen(0, "127.0.0.1", r));
  return { port: srv.address().port, close: () => new Promise((r) => srv.close(r)) };
}

/** Resolves with the first value `poll()` returns that is not undefined, or rejects. */
export async function until(poll, what, ms = 10_000) {
  const end = Date.now() + ms;
  for (;;) {
    const v = await poll();
    if (v !== undefined && v !== false) return v;
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

/** A promise and its resolver. */
export function deferred() {
  let resolve;
  const p = new Promise((r) => (resolve = r));
  return { promise: p, resolve };
}
