// The built-in live board (served at / by `quotecast serve`): quotes, trades, and the demo
// user's orders, positions, equity and risk alerts, over one connection made with the
// TypeScript client (/quotecast.js, built from clients/js). Hand-written, no build step.
//
// Query parameters: ?symbols=AAPL,MSFT  ?user=42  ?format=msgpack
import { QuotecastClient, jsonCodec, msgpackCodec } from "/quotecast.js";

const params = new URLSearchParams(location.search);
const SYMBOLS = (params.get("symbols") || "AAPL,MSFT,GOOGL,AMZN,TSLA,NVDA,META,JPM,EURUSD,GBPUSD,USDJPY")
  .split(",").map((s) => s.trim()).filter(Boolean);
const USER = params.get("user") || "42";
const TAPE_ROWS = 40;

const $ = (id) => document.getElementById(id);
const el = (tag, cls, text) => {
  const e = document.createElement(tag);
  if (cls) e.className = cls;
  if (text !== undefined) e.textContent = text;
  return e;
};
const fmt = (v, d = 2) => (typeof v === "number" ? v.toFixed(d) : v ?? "–");
const decimals = (sym) => (sym.endsWith("JPY") ? 3 : /^(USD|EUR|GBP|AUD|NZD)[A-Z]{3}$/.test(sym) ? 5 : 2);
document.querySelectorAll(".uid").forEach((e) => (e.textContent = USER));

// In demo mode the server hands out the demo users' tokens at /demo/token (user.<id>.*
// channels need the owner's token); elsewhere the board connects anonymously.
const demoToken = () =>
  fetch(`/demo/token?user=${encodeURIComponent(USER)}`)
    .then((r) => (r.ok ? r.json() : null))
    .then((j) => j?.token)
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
const stats = { messages: 0, quotes: 0, trades: 0, reconnects: 0, recoveryFailed: 0, conflated: 0, lastRate: 0 };
const e2e = [];
client.on("message", () => stats.messages++);
let lastCount = 0;
setInterval(() => {
  stats.lastRate = stats.messages - lastCount;
  lastCount = stats.messages;
  $("rate").textContent = String(stats.lastRate);
  if (e2e.length) {
    const s = [...e2e].sort((a, b) => a - b);
    const q = (p) => s[Math.min(s.length - 1, Math.floor(p * s.length))];
    $("e2e50").textContent = `${q(0.5).toFixed(1)} ms`;
    $("e2e99").textContent = `${q(0.99).toFixed(1)} ms`;
  }
}, 1000);
// Sampled on stream events (trades): quotes at max_hz wait in their conflation slot on
// purpose, which would measure the rate limit rather than the pipeline.
const sampleLatency = (ev) => {
  e2e.push(client.eventLatencyMs(ev));
  if (e2e.length > 500) e2e.shift();
};

// ---- connection state ----
client.on("state", ({ state, prev, delayMs, code }) => {
  const c = $("conn");
  c.dataset.state = state;
  let text = state;
  if (state === "reconnecting" && delayMs !== undefined) text = `reconnecting in ${(delayMs / 1000).toFixed(1)}s`;
  $("conn-text").textContent = text;
  if (state === "reconnecting" && prev === "open") {
    stats.reconnects++;
    $("reconnects").textContent = String(stats.reconnects);
    notice(`connection lost (code ${code ?? "?"}); resuming from the last seq of every channel`, true);
  }
});
client.on("welcome", (w) => ($("connid").textContent = `conn ${w.conn_id} · ${w.format} · ${w.server}`));
client.on("latency", ({ rttMs }) => ($("rtt").textContent = `${rttMs.toFixed(1)} ms`));
client.on("shutdown", (m) => notice(`server shutting down: reconnect in ${m.reconnect_ms} ms`, true));
client.on("recoveryFailed", (f) => {
  stats.recoveryFailed++;
  notice(`${f.channel}: missed events could not be replayed (${f.reason}); refetching its state`, true);
});
client.on("error", (e) => notice(`server error ${e.code}: ${e.message}`, true));

function notice(text, warn) {
  const n = el("div", warn ? "warn" : "", `${new Date().toLocaleTimeString()}  ${text}`);
  const box = $("notices");
  box.prepend(n);
  while (box.children.length > 30) box.lastChild.remove();
}

// ---- quotes ----
const rows = new Map();
const qbody = document.querySelector("#quotes tbody");
for (const sym of SYMBOLS) {
  const tr = el("tr");
  const cells = {};
  for (const k of ["symbol", "bid", "ask", "last", "change", "change_percent", "volume", "seq"]) {
    const td = el("td", k === "symbol" ? "sym" : "", k === "symbol" ? sym : "–");
    td.dataset.k = k;
    cells[k] = td;
    tr.append(td);
  }
  tr.id = `q-${sym}`;
  qbody.append(tr);
  rows.set(sym, { cells, prev: null });
}

function flash(td, dir) {
  td.classList.remove("up", "down");
  void td.offsetWidth; // restart the animation
  td.classList.add(dir);
}

function onQuote(sym, q, ev) {
  const r = rows.get(sym);
  if (!r) return;
  stats.quotes++;
  const d = decimals(sym);
  for (const k of ["bid", "ask", "last"]) {
    const td = r.cells[k];
    const v = q[k];
    if (r.prev && typeof v === "number" && v !== r.prev[k]) flash(td, v > r.prev[k] ? "up" : "down");
    td.textContent = fmt(v, d);
  }
  const cls = q.change > 0 ? "pos" : q.change < 0 ? "neg" : "";
  r.cells.change.textContent = fmt(q.change, d);
  r.cells.change.className = cls;
  r.cells.change_percent.textContent = `${fmt(q.change_percent, 2)}%`;
  r.cells.change_percent.className = cls;
  r.cells.volume.textContent = (q.volume ?? 0).toLocaleString("en-US");
  r.cells.seq.textContent = String(ev.seq);
  r.prev = q;
  $("quote-count").textContent = `${stats.quotes.toLocaleString("en-US")} quotes`;
}

for (const sym of SYMBOLS) {
  client.subscribe(`quotes.${sym}`, {
    on: { quote: (q, ev) => onQuote(sym, q, ev) },
    onConflated: () => stats.conflated++,
  }, { snapshot: true, maxHz: 10 });
}

// ---- trades tape ----
const tape = $("tape");
function onTrade(t, ev) {
  stats.trades++;
  sampleLatency(ev);
  const row = el("div", t.side === "buy" ? "pos" : "neg");
  const time = (t.timestamp || "").slice(11, 19);
  row.append(el("span", "muted", time), el("span", "", t.symbol), el("span", "", t.side),
    el("span", "", fmt(t.price, decimals(t.symbol))), el("span", "", String(t.quantity)));
  tape.prepend(row);
  while (tape.children.length > TAPE_ROWS) tape.lastChild.remove();
  $("trade-count").textContent = `${stats.trades.toLocaleString("en-US")} trades`;
}
for (const sym of SYMBOLS) {
  client.subscribe(`trades.${sym}`, { on: { trade_executed: onTrade } }, { snapshot: false });
}

// ---- market status ----
client.subscribe("market.status", {
  on: { market_status: (m) => ($("market").textContent = `${m.is_open ? "open" : "closed"} · ${m.session}`) },
});

// ---- the user's private channels: state tables rebuilt from a snapshot on a gap ----
function keyedTable(tbodySel, key, render, keep = 50) {
  const body = document.querySelector(tbodySel);
  const byKey = new Map();
  return {
    clear() { byKey.clear(); body.replaceChildren(); },
    upsert(d) {
      let tr = byKey.get(d[key]);
      const fresh = !tr;
      if (fresh) { tr = el("tr"); byKey.set(d[key], tr); }
      tr.replaceChildren(...render(d).map(([v, cls]) => el("td", cls || "", String(v))));
      body.prepend(tr);
      if (!fresh) flash(tr, "up");
      while (body.children.length > keep) {
        const last = body.lastChild;
        for (const [k, v] of byKey) if (v === last) byKey.delete(k);
        last.remove();
      }
    },
  };
}
const orders = keyedTable("#orders tbody", "order_id", (o) => [
  [o.order_id.replace(/^ORD_\d+_/, "#")], [o.symbol], [o.side, o.side === "buy" ? "pos" : "neg"], [o.order_type],
  [o.volume], [fmt(o.price, decimals(o.symbol))], [o.filled_qty], [o.status],
]);
const positions = keyedTable("#positions tbody", "position_id", (p) => [
  [p.symbol], [p.side, p.side === "buy" ? "pos" : "neg"], [p.quantity], [fmt(p.entry_price, decimals(p.symbol))],
  [fmt(p.current_price, decimals(p.symbol))], [fmt(p.unrealized_pnl), p.unrealized_pnl >= 0 ? "pos" : "neg"], [p.status],
]);

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
privateChannel(`user.${USER}.orders`, { on: { order_update: (o) => orders.upsert(o) } }, () => orders.clear());
privateChannel(`user.${USER}.positions`, { on: { position_update: (p) => positions.upsert(p) } }, () => positions.clear());
privateChannel(`user.${USER}.equity`, {
  on: {
    equity_updated: (e) => {
      $("eq-value").textContent = Number(e.current_equity).toLocaleString("en-US", { minimumFractionDigits: 2 });
      const pnl = Number(e.total_pnl);
      $("eq-pnl").textContent = pnl.toFixed(2);
      $("eq-pnl").className = pnl >= 0 ? "pos" : "neg";
      $("eq-trades").textContent = String(e.total_trades ?? "–");
    },
  },
}, () => ($("eq-value").textContent = "–"));
const risk = $("risk");
privateChannel(`user.${USER}.risk`, {
  on: {
    risk_alert: (a) => {
      if (risk.firstChild?.classList?.contains("muted")) risk.replaceChildren();
      const row = el("div", `sev-${a.severity}`, `${(a.alert_timestamp || "").slice(11, 19)} ${a.severity} ${a.title}: ${a.message}`);
      risk.prepend(row);
      while (risk.children.length > 20) risk.lastChild.remove();
    },
  },
}, () => risk.replaceChildren(el("div", "muted", "none yet")));

// For tests and the curious: the client and counters.
window.__board = { client, stats };
