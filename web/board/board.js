// The built-in live board (served at / by `quotecast serve`): quotes, trades, and the demo
// user's orders, positions, equity and risk alerts, over one connection made with the
// TypeScript client (/quotecast.js, built from clients/js). Hand-written, no build step.
//
// Query parameters: ?symbols=AAPL,MSFT  ?user=42  ?format=msgpack
//
// Anyone who may publish can put anything on these channels (in demo mode: anyone). So
// every payload is read defensively: a field of the wrong type or missing shows as "–", a
// long string is shortened, an unknown event is ignored, and a handler that still fails
// is counted (stats.badPayloads), never thrown.
import { QuotecastClient, jsonCodec, msgpackCodec } from "/quotecast.js";

const params = new URLSearchParams(location.search);
const SYMBOLS = (params.get("symbols") || "AAPL,MSFT,GOOGL,AMZN,TSLA,NVDA,META,JPM,EURUSD,GBPUSD,USDJPY")
  .split(",").map((s) => s.trim()).filter(Boolean).slice(0, 100);
const USER = (params.get("user") || "42").slice(0, 64);
const TAPE_ROWS = 40;
const MAX_TEXT = 32;

const $ = (id) => document.getElementById(id);
const el = (tag, cls, text) => {
  const e = document.createElement(tag);
  if (cls) e.className = cls;
  if (text !== undefined) e.textContent = text;
  return e;
};

// ---- defensive readers: any JSON value in, something displayable out ----
/** The payload as an object ({} for null, arrays, strings, numbers). */
const obj = (v) => (v && typeof v === "object" && !Array.isArray(v) ? v : {});
/** A finite number (numbers and numeric strings), else null. */
const num = (v) => {
  const n = typeof v === "number" ? v : typeof v === "string" && v.trim() !== "" ? Number(v) : NaN;
  return Number.isFinite(n) ? n : null;
};
/** A short display string for a string/number/boolean, else null. */
const str = (v, max = MAX_TEXT) => {
  if (typeof v === "number") return Number.isFinite(v) ? String(v) : null;
  if (typeof v === "boolean") return String(v);
  if (typeof v !== "string" || v === "") return null;
  return v.length > max ? `${v.slice(0, max - 1)}…` : v;
};
/** A price or amount with `d` decimals (absurd magnitudes in exponent form, never 300 digits). */
const fmt = (v, d = 2) => {
  const n = num(v);
  return n === null ? "–" : Math.abs(n) >= 1e12 ? n.toExponential(3) : n.toFixed(d);
};
/** A quantity: up to 2 decimals, thousands separated. */
const qty = (v) => {
  const n = num(v);
  return n === null ? "–" : Math.abs(n) >= 1e12 ? n.toExponential(3) : n.toLocaleString("en-US", { maximumFractionDigits: 2 });
};
const decimals = (sym) =>
  typeof sym !== "string" ? 2 : sym.endsWith("JPY") ? 3 : /^(USD|EUR|GBP|AUD|NZD)[A-Z]{3}$/.test(sym) ? 5 : 2;
/** `partially_filled` → `partially filled`; anything else shortened. */
const label = (v) => {
  const s = str(v, 16);
  return s === null ? "–" : s.replace(/_/g, " ").toLowerCase();
};
const side = (v) => (v === "buy" || v === "sell" ? v : "–");
const sideCls = (v) => (v === "buy" ? "pos" : v === "sell" ? "neg" : "");
/** HH:MM:SS of an ISO-8601 UTC timestamp (the server's), else "". */
const utcTime = (v) => (typeof v === "string" && /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d/.test(v) ? v.slice(11, 19) : "");
const nowUtc = () => new Date().toISOString().slice(11, 19);

const stats = {
  messages: 0, quotes: 0, trades: 0, reconnects: 0, recoveryFailed: 0, conflated: 0, lastRate: 0, badPayloads: 0,
};
/** Runs a handler; a payload it cannot show is counted, never thrown. */
const safe = (fn) => (...args) => {
  try {
    fn(...args);
  } catch (e) {
    stats.badPayloads++;
    $("bad").textContent = String(stats.badPayloads);
    console.warn("board: payload not shown", e);
  }
};

document.querySelectorAll(".uid").forEach((e) => (e.textContent = USER));

// In demo mode the server hands out the demo users' tokens at /demo/token (user.<id>.*
// channels need the owner's token); elsewhere the board connects anonymously.
const demoToken = () =>
  fetch(`/demo/token?user=${encodeURIComponent(USER)}`)
    .then((r) => (r.ok ? r.json() : null))
    .then((j) => (typeof j?.token === "string" ? j.token : undefined))
    .catch(() => undefined);

const client = new QuotecastClient({
  url: "/ws",
  token: demoToken,
  codec: params.get("format") === "msgpack" ? msgpackCodec : jsonCodec,
  pingIntervalMs: 1000,
  pingTimeoutMs: 4000,
  reconnect: { initialMs: 200, maxMs: 5000 },
});

// ---- statistics: message rate, end-to-end latency, reconnects ----
const e2e = [];
client.on("message", () => stats.messages++);
let lastCount = 0;
const ms = (v) => (v < 0 ? "≈0 ms" : `${v.toFixed(1)} ms`);
setInterval(() => {
  stats.lastRate = stats.messages - lastCount;
  lastCount = stats.messages;
  $("rate").textContent = String(stats.lastRate);
  if (e2e.length) {
    const s = [...e2e].sort((a, b) => a - b);
    const q = (p) => s[Math.min(s.length - 1, Math.floor(p * s.length))];
    $("e2e50").textContent = ms(q(0.5));
    $("e2e99").textContent = ms(q(0.99));
  }
}, 1000);
// Sampled on stream events (trades): quotes at max_hz wait in their conflation slot on
// purpose, which would measure the rate limit rather than the pipeline. A negative value
// means the clocks disagree by more than the estimate's error: shown as ≈0, not as < 0.
const sampleLatency = (ev) => {
  const v = client.eventLatencyMs(ev);
  if (!Number.isFinite(v)) return;
  e2e.push(v);
  if (e2e.length > 500) e2e.shift();
};

// ---- connection state: while not open, everything shown is stale and says so ----
let countdown = null;
client.on("state", ({ state, prev, delayMs, code }) => {
  $("conn").dataset.state = state;
  document.body.classList.toggle("stale", state !== "open");
  if (countdown) clearInterval(countdown);
  countdown = null;
  const text = $("conn-text");
  if (state === "reconnecting" && typeof delayMs === "number") {
    const at = Date.now() + delayMs;
    const tick = () => {
      const left = Math.max(0, at - Date.now());
      text.textContent = left > 0 ? `reconnecting in ${(left / 1000).toFixed(1)}s` : "reconnecting…";
      if (!left && countdown) clearInterval(countdown);
    };
    tick();
    countdown = setInterval(tick, 100);
  } else {
    text.textContent = state;
  }
  if (state !== "open") {
    // Frozen figures would look live: blank them until the next measurement.
    for (const id of ["rtt", "e2e50", "e2e99"]) $(id).textContent = "–";
    e2e.length = 0;
  }
  if (state === "reconnecting" && prev === "open") {
    stats.reconnects++;
    $("reconnects").textContent = String(stats.reconnects);
    notice(`connection lost (code ${code ?? "?"}); resuming from the last seq of every channel`, true);
  }
});
client.on("welcome", safe((w) => ($("connid").textContent = `conn ${str(w.conn_id) ?? "?"} · ${str(w.format) ?? "?"}`)));
client.on("latency", ({ rttMs }) => ($("rtt").textContent = `${rttMs.toFixed(1)} ms`));
client.on("shutdown", (m) => notice(`server shutting down: reconnecting in ${num(m.reconnect_ms) ?? "?"} ms`, true));
// One notice per reconnect, not one per channel: the private channels that had to be
// refetched. Public channels (quotes, trades) need no refetch and are only counted.
let failed = null;
client.on("recoveryFailed", (f) => {
  stats.recoveryFailed++;
  if (!f.channel.startsWith("user.")) return;
  if (!failed) {
    failed = { reason: f.reason, channels: [] };
    setTimeout(() => {
      const { reason, channels } = failed;
      failed = null;
      const why = reason === "epoch" ? "the server restarted (new epoch)" : "missed events are no longer retained";
      notice(`${why}: refetched ${channels.map((c) => c.split(".").pop()).join(", ")}`, true);
    }, 300);
  }
  failed.channels.push(f.channel);
});
client.on("error", (e) => notice(`error ${str(e.code) ?? "?"}: ${str(e.message, 160) ?? ""}`, true));

function notice(text, warn) {
  const box = $("notices");
  box.prepend(el("div", warn ? "warn" : "", `${nowUtc()}  ${text}`));
  while (box.children.length > 30) box.lastChild.remove();
}

// ---- quotes ----
const rows = new Map();
const qbody = document.querySelector("#quotes tbody");
const QCOLS = ["symbol", "bid", "ask", "last", "change", "change_percent", "volume", "seq"];
for (const sym of SYMBOLS) {
  const tr = el("tr");
  const cells = {};
  for (const k of QCOLS) {
    const td = el("td", k === "symbol" ? "sym" : `c-${k}`, k === "symbol" ? str(sym) ?? "?" : "–");
    td.dataset.k = k;
    cells[k] = td;
    tr.append(td);
  }
  tr.id = `q-${sym}`;
  qbody.append(tr);
  rows.set(sym, { cells, prev: {} });
}

function flash(node, dir) {
  node.classList.remove("up", "down");
  void node.offsetWidth; // restart the animation
  node.classList.add(dir);
}

function onQuote(sym, data, ev) {
  const r = rows.get(sym);
  if (!r) return;
  const q = obj(data);
  stats.quotes++;
  const d = decimals(sym);
  const now = {};
  for (const k of ["bid", "ask", "last"]) {
    const td = r.cells[k];
    const v = num(q[k]);
    now[k] = v;
    const before = r.prev[k];
    if (v !== null && before !== null && before !== undefined && v !== before) flash(td, v > before ? "up" : "down");
    td.textContent = fmt(v, d);
  }
  const change = num(q.change);
  const cls = change === null ? "" : change > 0 ? "pos" : change < 0 ? "neg" : "";
  r.cells.change.textContent = fmt(change, d);
  r.cells.change.className = `c-change ${cls}`;
  const pct = num(q.change_percent);
  r.cells.change_percent.textContent = pct === null ? "–" : `${fmt(pct, 2)}%`;
  r.cells.change_percent.className = `c-change_percent ${cls}`;
  const vol = num(q.volume);
  r.cells.volume.textContent = vol === null ? "–" : Math.abs(vol) >= 1e12 ? vol.toExponential(3) : vol.toLocaleString("en-US", { maximumFractionDigits: 0 });
  r.cells.seq.textContent = String(ev.seq);
  r.prev = now;
  $("quote-count").textContent = `${stats.quotes.toLocaleString("en-US")} quotes`;
}

for (const sym of SYMBOLS) {
  client.subscribe(`quotes.${sym}`, {
    on: { quote: safe((q, ev) => onQuote(sym, q, ev)) },
    onConflated: () => stats.conflated++,
  }, { snapshot: true, maxHz: 10 });
}

// ---- trades tape ----
const tape = $("tape");
function onTrade(data, ev) {
  const t = obj(data);
  stats.trades++;
  sampleLatency(ev);
  const row = el("div", sideCls(t.side));
  row.append(el("span", "muted", utcTime(t.timestamp)), el("span", "", str(t.symbol, 10) ?? "–"), el("span", "", side(t.side)),
    el("span", "", fmt(t.price, decimals(t.symbol))), el("span", "", qty(t.quantity)));
  tape.prepend(row);
  while (tape.children.length > TAPE_ROWS) tape.lastChild.remove();
  $("trade-count").textContent = `${stats.trades.toLocaleString("en-US")} trades`;
}
for (const sym of SYMBOLS) {
  client.subscribe(`trades.${sym}`, { on: { trade_executed: safe(onTrade) } }, { snapshot: false });
}

// ---- market status ----
client.subscribe("market.status", {
  on: {
    market_status: safe((data) => {
      const m = obj(data);
      const open = m.is_open === true ? "open" : m.is_open === false ? "closed" : "–";
      const session = label(m.session);
      $("market").textContent = session === open || session === "–" ? open : `${open} · ${session}`;
    }),
  },
});

// ---- the user's private channels: state tables rebuilt from a snapshot on a gap ----
function keyedTable(tbodySel, key, cols, render, { keep = 50, gone = () => false } = {}) {
  const body = document.querySelector(tbodySel);
  const byKey = new Map();
  const drop = (k) => {
    byKey.get(k)?.remove();
    byKey.delete(k);
  };
  return {
    clear() { byKey.clear(); body.replaceChildren(); },
    upsert(data, ev) {
      const d = obj(data);
      // A row needs a key; an event without one is still shown, under its seq.
      const k = str(d[key], 200) ?? `seq ${ev.seq}`;
      if (gone(d)) return drop(k);
      let tr = byKey.get(k);
      const fresh = !tr;
      if (fresh) { tr = el("tr"); byKey.set(k, tr); }
      tr.replaceChildren(...render(d, k).map(([v, cls, title], i) => {
        const td = el("td", `c-${cols[i]} ${cls || ""}`, v);
        if (title) td.title = title;
        return td;
      }));
      body.prepend(tr);
      if (!fresh) flash(tr, "up");
      while (body.children.length > keep) {
        const last = body.lastChild;
        for (const [kk, v] of byKey) if (v === last) byKey.delete(kk);
        last.remove();
      }
    },
  };
}
const shortId = (k) => {
  const s = String(k).replace(/^ORD_\d+_/, "#");
  return s.length > 14 ? `${s.slice(0, 13)}…` : s;
};
const orders = keyedTable("#orders tbody", "order_id", ["id", "symbol", "side", "type", "qty", "price", "filled", "status"], (o, k) => [
  [shortId(k), "", String(k)], [str(o.symbol, 10) ?? "–"], [side(o.side), sideCls(o.side)], [label(o.order_type)],
  [qty(o.volume)], [fmt(o.price, decimals(o.symbol))], [qty(o.filled_qty)],
  [label(o.status), `st-${label(o.status).replace(/\W/g, "")}`],
]);
// A closed position leaves the table (its last update carries status "closed").
const positions = keyedTable("#positions tbody", "position_id", ["symbol", "side", "qty", "entry", "current", "pnl"], (p) => {
  const pnl = num(p.unrealized_pnl);
  return [
    [str(p.symbol, 10) ?? "–"], [side(p.side), sideCls(p.side)], [qty(p.quantity)],
    [fmt(p.entry_price, decimals(p.symbol))], [fmt(p.current_price, decimals(p.symbol))],
    [fmt(pnl), pnl === null ? "" : pnl >= 0 ? "pos" : "neg"],
  ];
}, { gone: (p) => p.status === "closed" });

// A private channel whose gap cannot be replayed is re-read from the server's retained
// history: drop the local state, unsubscribe, subscribe again with a snapshot.
function privateChannel(name, handlers, reset) {
  let sub;
  const open = () => {
    sub = client.subscribe(name, {
      ...handlers,
      onRecoveryFailed: () => {
        reset();
        sub.unsubscribe();
        open();
      },
    }, { snapshot: true });
  };
  open();
}
privateChannel(`user.${USER}.orders`, { on: { order_update: safe((o, ev) => orders.upsert(o, ev)) } }, () => orders.clear());
privateChannel(`user.${USER}.positions`, { on: { position_update: safe((p, ev) => positions.upsert(p, ev)) } }, () => positions.clear());
privateChannel(`user.${USER}.equity`, {
  on: {
    equity_updated: safe((data) => {
      const e = obj(data);
      const eq = num(e.current_equity);
      $("eq-value").textContent = eq === null ? "–" : Math.abs(eq) >= 1e12 ? eq.toExponential(3) : eq.toLocaleString("en-US", { minimumFractionDigits: 2, maximumFractionDigits: 2 });
      const pnl = num(e.total_pnl);
      $("eq-pnl").textContent = fmt(pnl);
      $("eq-pnl").className = pnl === null ? "" : pnl >= 0 ? "pos" : "neg";
      $("eq-trades").textContent = qty(e.total_trades);
    }),
  },
}, () => ($("eq-value").textContent = "–"));
const risk = $("risk");
const SEVERITIES = new Set(["LOW", "MEDIUM", "HIGH"]);
privateChannel(`user.${USER}.risk`, {
  on: {
    risk_alert: safe((data) => {
      const a = obj(data);
      if (risk.firstChild?.classList?.contains("muted")) risk.replaceChildren();
      const sev = SEVERITIES.has(a.severity) ? a.severity : "INFO";
      const row = el("div", `sev-${sev}`);
      // The severity is the badge; the message carries the figures; the title is a tooltip.
      row.append(el("span", "muted", utcTime(a.alert_timestamp)), el("span", "badge", sev.toLowerCase()),
        el("span", "", str(a.message, 120) ?? str(a.title, 120) ?? "(no message)"));
      if (typeof a.title === "string") row.title = a.title.slice(0, 200);
      risk.prepend(row);
      while (risk.children.length > 20) risk.lastChild.remove();
    }),
  },
}, () => risk.replaceChildren(el("div", "muted", "none yet")));

// For tests and the curious: the client and counters.
window.__board = { client, stats };
