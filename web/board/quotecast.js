// GENERATED from clients/js by `npm run build:board`; do not edit. @quotecast/client for the built-in board.

// dist/backoff.js
var DEFAULT_BACKOFF = {
  initialMs: 250,
  maxMs: 15e3,
  factor: 2,
  jitter: 0.5,
  maxAttempts: Infinity,
  resetAfterMs: 5e3
};
function backoffDelay(attempt, opts = {}, random = Math.random()) {
  const o = { ...DEFAULT_BACKOFF, ...opts };
  const jitter = Math.min(1, Math.max(0, o.jitter));
  const base = Math.min(o.maxMs, o.initialMs * Math.pow(o.factor, Math.max(0, attempt)));
  return Math.round(base * (1 - jitter * random));
}
function shutdownDelay(reconnectMs, opts = {}, random = Math.random()) {
  const jitter = Math.min(1, Math.max(0, opts.jitter ?? DEFAULT_BACKOFF.jitter));
  const ms = Math.max(0, reconnectMs);
  return Math.round(ms + ms * jitter * random);
}

// dist/codec.js
var utf8 = /* @__PURE__ */ new TextDecoder();
var jsonCodec = {
  name: "json",
  encode: (value) => JSON.stringify(value),
  decode: (data) => JSON.parse(typeof data === "string" ? data : utf8.decode(data instanceof Uint8Array ? data : new Uint8Array(data)))
};

// dist/emitter.js
var Emitter = class {
  constructor() {
    this.listeners = {};
  }
  /** Adds a listener; returns a function that removes it. */
  on(type, fn) {
    var _a;
    ((_a = this.listeners)[type] ?? (_a[type] = /* @__PURE__ */ new Set())).add(fn);
    return () => this.off(type, fn);
  }
  off(type, fn) {
    this.listeners[type]?.delete(fn);
  }
  emit(type, payload) {
    const set = this.listeners[type];
    if (!set)
      return;
    for (const fn of [...set]) {
      try {
        fn(payload);
      } catch (e) {
        reportError(e);
      }
    }
  }
};
function reportError(e) {
  const host = globalThis;
  if (typeof host.reportError === "function")
    host.reportError(e);
  else
    console.error(e);
}

// dist/token.js
function base64UrlDecode(s) {
  let b = s.replace(/-/g, "+").replace(/_/g, "/");
  while (b.length % 4)
    b += "=";
  const bin = atob(b);
  const bytes = new Uint8Array(bin.length);
  for (let i = 0; i < bin.length; i++)
    bytes[i] = bin.charCodeAt(i);
  return new TextDecoder().decode(bytes);
}
function jwtExpiry(token) {
  const parts = token.split(".");
  if (parts.length !== 3)
    return void 0;
  try {
    const claims = JSON.parse(base64UrlDecode(parts[1]));
    return typeof claims?.exp === "number" ? claims.exp * 1e3 : void 0;
  } catch {
    return void 0;
  }
}
function refreshAt(expMs, now, marginMs, minMs = 1e3) {
  return Math.max(now + minMs, expMs - marginMs);
}

// dist/client.js
var QuotecastError = class extends Error {
  constructor(code, message) {
    super(message);
    this.code = code;
    this.name = "QuotecastError";
  }
};
var AUTH_CLOSE_CODES = /* @__PURE__ */ new Set([1008, 4001, 4002, 4003]);
var OFFSET_SAMPLES = 16;
var MAX_CHANNELS_PER_OP = 256;
function wallNow() {
  const p = globalThis.performance;
  return p && typeof p.timeOrigin === "number" ? p.timeOrigin + p.now() : Date.now();
}
function buildUrl(url, params) {
  const base = globalThis.location?.href;
  const u = base ? new URL(url, base) : new URL(url);
  if (u.protocol === "http:")
    u.protocol = "ws:";
  else if (u.protocol === "https:")
    u.protocol = "wss:";
  for (const [k, v] of Object.entries(params))
    if (v !== void 0)
      u.searchParams.set(k, v);
  return u.toString();
}
var QuotecastClient = class extends Emitter {
  constructor(opts) {
    super();
    this.channels = /* @__PURE__ */ new Map();
    this.pending = /* @__PURE__ */ new Map();
    this.ws = null;
    this.gen = 0;
    this._state = "idle";
    this.closedByUser = false;
    this.attempt = 0;
    this.openedAt = 0;
    this.shutdownMs = null;
    this.nextOpId = 1;
    this.reconnectTimer = null;
    this.connectTimer = null;
    this.pingTimer = null;
    this.refreshTimer = null;
    this.pingOut = null;
    this.offsets = [];
    this.cachedToken = null;
    this._welcome = null;
    this._latency = null;
    this.onOnline = () => {
      if (this._state === "reconnecting" && this.reconnectTimer)
        this.fireReconnectNow();
    };
    this.opts = opts;
    this.codec = opts.codec ?? jsonCodec;
    const g = globalThis;
    if (typeof g.addEventListener === "function" && typeof window !== "undefined") {
      g.addEventListener("online", this.onOnline);
    }
    if (opts.autoConnect !== false)
      this.connect();
  }
  /** The connection state. */
  get state() {
    return this._state;
  }
  /** The last welcome (conn_id, heartbeat, format), or null before the first. */
  get welcome() {
    return this._welcome;
  }
  /** The last ping measurement, or null before the first pong. */
  get latency() {
    return this._latency;
  }
  /** Channels with at least one handler. */
  get subscribedChannels() {
    return [...this.channels.keys()];
  }
  /** Per channel: last delivered seq and epoch (what the next resubscribe sends as `since`). */
  position(channel) {
    const st = this.channels.get(channel);
    return st && { seq: st.lastSeq, epoch: st.epoch };
  }
  /**
   * Server-ingest → now latency of an event, ms, corrected by the clock offset measured with
   * `ping` (exact on one machine; ±half a round trip across machines).
   */
  eventLatencyMs(ev) {
    return wallNow() + (this._latency?.clockOffsetMs ?? 0) - ev.ts / 1e6;
  }
  /** Opens the connection (no-op when already open or connecting). */
  connect() {
    if (this._state === "open" || this._state === "connecting" || this._state === "reconnecting")
      return;
    this.closedByUser = false;
    this.attempt = 0;
    this.setState("connecting", {});
    void this.openSocket();
  }
  /** Closes the connection for good (until `connect()`); pending ops are rejected. */
  close() {
    this.closedByUser = true;
    this.gen++;
    this.clearTimers();
    if (this.reconnectTimer)
      clearTimeout(this.reconnectTimer);
    this.reconnectTimer = null;
    const ws = this.ws;
    this.ws = null;
    if (ws) {
      try {
        ws.close(1e3, "bye");
      } catch {
      }
    }
    this.connectionLost();
    if (this._state !== "closed")
      this.setState("closed", {});
    const g = globalThis;
    if (typeof g.removeEventListener === "function")
      g.removeEventListener("online", this.onOnline);
  }
  /** Drops the current connection and reconnects now (e.g. after a network change). */
  reconnect() {
    if (this.closedByUser)
      return;
    if (this.ws)
      this.lose(4999, "client reconnect", 0);
    else if (this.reconnectTimer)
      this.fireReconnectNow();
  }
  /**
   * Subscribes to a channel. Handlers get events in seq order without duplicates across
   * reconnects. Several subscriptions to one channel share one server subscription; the
   * first one's options apply (a later one asking for a snapshot gets the latest event).
   */
  subscribe(channel, handlers, options = {}) {
    const h = typeof handlers === "function" ? { onEvent: handlers } : handlers;
    let st = this.channels.get(channel);
    if (!st) {
      st = {
        name: channel,
        handlers: /* @__PURE__ */ new Set(),
        snapshot: options.snapshot ?? true,
        maxHz: options.maxHz,
        epoch: null,
        lastSeq: null,
        sent: false
      };
      this.channels.set(channel, st);
      st.handlers.add(h);
      if (this._state === "open")
        this.sendSubscribes([st]);
    } else {
      st.handlers.add(h);
      if ((options.snapshot ?? true) && st.lastEvent)
        this.deliverTo(h, st.lastEvent);
    }
    let active = true;
    return {
      channel,
      unsubscribe: () => {
        if (!active)
          return;
        active = false;
        this.removeHandler(channel, h);
      }
    };
  }
  /** Publishes one event; resolves with its seq. Requires an open connection. */
  publish(channel, event, data) {
    return this.request({ op: "publish", channel, event, data }).then((r) => r.seq);
  }
  /** One `ping` round trip, ms. */
  ping() {
    const t0 = wallNow();
    return this.request({ op: "ping" }).then(() => wallNow() - t0);
  }
  // ---- connection ----
  setState(state, info) {
    const prev = this._state;
    this._state = state;
    this.emit("state", { state, prev, ...info });
  }
  async getToken() {
    const src = this.opts.token;
    if (src === void 0 || src === null)
      return void 0;
    if (typeof src === "string")
      return src;
    const margin = this.opts.tokenRefreshMarginMs ?? 3e4;
    if (this.cachedToken) {
      const exp = jwtExpiry(this.cachedToken);
      if (exp === void 0 || exp - Date.now() > margin)
        return this.cachedToken;
    }
    this.cachedToken = await src() || null;
    return this.cachedToken ?? void 0;
  }
  async openSocket() {
    const gen = ++this.gen;
    let token;
    try {
      token = await this.getToken();
    } catch (e) {
      if (gen !== this.gen || this.closedByUser)
        return;
      this.emit("error", { type: "error", code: "token_failed", message: `the token function failed: ${e instanceof Error ? e.message : e}` });
      this.scheduleReconnect(this.nextBackoff(), "token fetch failed");
      return;
    }
    if (gen !== this.gen || this.closedByUser)
      return;
    const Ctor = this.opts.WebSocket ?? globalThis.WebSocket;
    if (!Ctor) {
      this.fail("no_websocket", "no WebSocket implementation: pass `WebSocket` in the options (Node 20: run with --experimental-websocket)");
      return;
    }
    let url;
    try {
      url = buildUrl(this.opts.url, {
        format: this.codec.name === "json" ? void 0 : this.codec.name,
        token
      });
    } catch (e) {
      this.fail("bad_url", `cannot connect to ${JSON.stringify(this.opts.url)}: ${e instanceof Error ? e.message : e} (outside a browser the url must be absolute, e.g. ws://127.0.0.1:8080/ws)`);
      return;
    }
    let ws;
    try {
      ws = new Ctor(url);
    } catch (e) {
      this.emit("error", { type: "error", code: "connect_failed", message: `cannot open ${url}: ${e instanceof Error ? e.message : e}` });
      this.scheduleReconnect(this.nextBackoff(), String(e));
      return;
    }
    this.ws = ws;
    ws.binaryType = "arraybuffer";
    ws.onmessage = (e) => {
      if (gen === this.gen)
        this.onMessage(e.data);
    };
    ws.onclose = (e) => {
      if (gen === this.gen)
        this.lose(e.code, e.reason);
    };
    ws.onerror = () => {
      if (gen === this.gen)
        this.lose(1006, "connection error");
    };
    const timeout = this.opts.connectTimeoutMs ?? 1e4;
    this.connectTimer = setTimeout(() => {
      if (gen === this.gen)
        this.lose(4998, "connect timeout");
    }, timeout);
  }
  /** The connection is gone (close event, dead link, timeout): clean up and maybe reconnect. */
  lose(code, reason, delayOverride) {
    this.gen++;
    const ws = this.ws;
    this.ws = null;
    if (ws) {
      ws.onmessage = ws.onclose = ws.onerror = null;
      try {
        ws.close(code >= 4e3 && code < 5e3 ? code : 1e3);
      } catch {
      }
    }
    this.clearTimers();
    this.connectionLost();
    if (this.closedByUser)
      return;
    if (AUTH_CLOSE_CODES.has(code)) {
      this.cachedToken = null;
      this.emit("error", { type: "error", code: "unauthorized", message: `the server refused the token (close ${code}${reason ? `: ${reason}` : ""})` });
      if (typeof this.opts.token === "string") {
        this.setState("closed", { code, reason });
        return;
      }
    }
    const lived = this.openedAt ? Date.now() - this.openedAt : 0;
    this.openedAt = 0;
    const policy = this.opts.reconnect;
    if (policy === false) {
      this.setState("closed", { code, reason });
      return;
    }
    if (lived >= (policy?.resetAfterMs ?? DEFAULT_BACKOFF.resetAfterMs))
      this.attempt = 0;
    let delay;
    if (delayOverride !== void 0) {
      delay = delayOverride;
    } else if (this.shutdownMs !== null) {
      delay = shutdownDelay(this.shutdownMs, policy || {});
      this.attempt = 0;
    } else {
      if (this.attempt >= (policy?.maxAttempts ?? Infinity)) {
        this.setState("closed", { code, reason, attempt: this.attempt });
        return;
      }
      delay = backoffDelay(this.attempt, policy || {});
      this.attempt++;
    }
    this.shutdownMs = null;
    this.scheduleReconnect(delay, reason, code);
  }
  /** A configuration error no retry can fix: an `error` event, then the `closed` state. */
  fail(code, message) {
    this.emit("error", { type: "error", code, message });
    this.clearTimers();
    this.setState("closed", { reason: message });
  }
  nextBackoff() {
    return backoffDelay(this.attempt++, this.opts.reconnect || {});
  }
  scheduleReconnect(delay, reason, code) {
    if (this.reconnectTimer)
      clearTimeout(this.reconnectTimer);
    this.setState("reconnecting", { attempt: this.attempt, delayMs: delay, code, reason });
    this.reconnectTimer = setTimeout(() => {
      this.reconnectTimer = null;
      void this.openSocket();
    }, delay);
  }
  fireReconnectNow() {
    if (this.reconnectTimer)
      clearTimeout(this.reconnectTimer);
    this.reconnectTimer = null;
    void this.openSocket();
  }
  clearTimers() {
    for (const t of [this.connectTimer, this.refreshTimer])
      if (t)
        clearTimeout(t);
    if (this.pingTimer)
      clearInterval(this.pingTimer);
    this.connectTimer = this.refreshTimer = this.pingTimer = null;
    this.pingOut = null;
  }
  connectionLost() {
    for (const st of this.channels.values())
      st.sent = false;
    for (const [id, p] of this.pending) {
      clearTimeout(p.timer);
      p.reject(new QuotecastError("disconnected", "the connection was lost before the reply"));
      this.pending.delete(id);
    }
  }
  send(op) {
    const ws = this.ws;
    if (!ws || ws.readyState !== 1)
      return false;
    ws.send(this.codec.encode(op));
    return true;
  }
  request(op) {
    return new Promise((resolve, reject) => {
      if (this._state !== "open") {
        reject(new QuotecastError("disconnected", "not connected"));
        return;
      }
      const id = `c${this.nextOpId++}`;
      const timer = setTimeout(() => {
        this.pending.delete(id);
        reject(new QuotecastError("timeout", `no reply to ${op.op} in time`));
      }, this.opts.opTimeoutMs ?? 1e4);
      this.pending.set(id, { resolve, reject, timer });
      if (!this.send({ ...op, id })) {
        clearTimeout(timer);
        this.pending.delete(id);
        reject(new QuotecastError("disconnected", "not connected"));
      }
    });
  }
  // ---- inbound ----
  onMessage(raw) {
    let msg;
    try {
      msg = this.codec.decode(raw);
    } catch (e) {
      this.emit("error", { type: "error", code: "bad_frame", message: `undecodable server message: ${e}` });
      return;
    }
    if (!msg || typeof msg.type !== "string")
      return;
    this.emit("message", msg);
    switch (msg.type) {
      case "event":
        return this.onEvent(msg);
      case "conflated":
        return this.onConflated(msg);
      case "subscribed":
        return this.onSubscribed(msg);
      case "welcome":
        return this.onWelcome(msg);
      case "pong":
        return this.onPong(msg);
      case "error":
        return this.onError(msg);
      case "server_shutdown": {
        const m = msg;
        this.shutdownMs = typeof m.reconnect_ms === "number" ? m.reconnect_ms : 1e3;
        this.emit("shutdown", m);
        return;
      }
      default:
        if (msg.id !== void 0)
          this.settle(msg.id, msg);
    }
  }
  onWelcome(w) {
    if (this.connectTimer)
      clearTimeout(this.connectTimer);
    this.connectTimer = null;
    this._welcome = w;
    this.openedAt = Date.now();
    this.setState("open", {});
    this.emit("welcome", w);
    this.sendSubscribes([...this.channels.values()]);
    this.startPing();
    this.scheduleTokenRefresh();
  }
  /** Subscribes channels: fresh ones grouped by options, known ones with `since`. */
  sendSubscribes(list) {
    const groups = /* @__PURE__ */ new Map();
    for (const st of list) {
      if (st.sent)
        continue;
      st.sent = true;
      const resume = st.lastSeq !== null && st.epoch !== null;
      const key = `${resume ? "since" : st.snapshot ? "snap" : "live"}|${st.maxHz ?? ""}`;
      let ops = groups.get(key);
      if (!ops)
        groups.set(key, ops = []);
      let cur = ops[ops.length - 1];
      if (!cur || cur.n >= MAX_CHANNELS_PER_OP) {
        cur = { op: { op: "subscribe", channels: [] }, n: 0 };
        if (resume)
          cur.op.since = {};
        else if (st.snapshot)
          cur.op.snapshot = true;
        if (st.maxHz !== void 0)
          cur.op.max_hz = st.maxHz;
        ops.push(cur);
      }
      cur.op.channels.push(st.name);
      cur.n++;
      if (resume)
        cur.op.since[st.name] = { seq: st.lastSeq, epoch: st.epoch };
    }
    for (const ops of groups.values())
      for (const { op } of ops)
        this.send(op);
  }
  onSubscribed(ack) {
    const st = this.channels.get(ack.channel);
    if (!st)
      return;
    st.kind = ack.kind;
    const conflated = ack.kind === "conflated";
    if (ack.recovered === false) {
      const info = {
        channel: st.name,
        lastSeq: st.lastSeq,
        epoch: st.epoch,
        seq: ack.seq,
        newEpoch: ack.epoch,
        reason: st.epoch !== null && st.epoch !== ack.epoch ? "epoch" : "expired"
      };
      st.epoch = ack.epoch;
      if (conflated && st.snapshot) {
        st.lastSeq = null;
        this.send({ op: "subscribe", channels: [st.name], snapshot: true, ...st.maxHz ? { max_hz: st.maxHz } : {} });
      } else {
        st.lastSeq = ack.seq;
        this.forHandlers(st, (h) => h.onSubscribed?.(ack));
        this.forHandlers(st, (h) => h.onRecoveryFailed?.(info));
        this.emit("recoveryFailed", info);
        return;
      }
    } else if (ack.recovered === void 0) {
      st.epoch = ack.epoch;
      st.lastSeq = st.snapshot ? null : ack.seq;
    } else {
      st.epoch = ack.epoch;
    }
    this.forHandlers(st, (h) => h.onSubscribed?.(ack));
  }
  onEvent(ev) {
    const st = this.channels.get(ev.channel);
    if (!st)
      return;
    if (st.lastSeq !== null) {
      if (ev.seq <= st.lastSeq)
        return;
      if (ev.seq > st.lastSeq + 1 && st.kind !== "conflated") {
        const info = {
          channel: st.name,
          lastSeq: st.lastSeq,
          epoch: st.epoch,
          seq: ev.seq - 1,
          newEpoch: st.epoch ?? "",
          reason: "sequence"
        };
        this.forHandlers(st, (h) => h.onRecoveryFailed?.(info));
        this.emit("recoveryFailed", info);
      }
    }
    st.lastSeq = ev.seq;
    st.lastEvent = ev;
    for (const h of [...st.handlers])
      this.deliverTo(h, ev);
  }
  deliverTo(h, ev) {
    try {
      h.onEvent?.(ev);
      h.on?.[ev.event]?.(ev.data, ev);
    } catch (e) {
      reportError(e);
    }
  }
  onConflated(m) {
    const st = this.channels.get(m.channel);
    if (st)
      this.forHandlers(st, (h) => h.onConflated?.(m));
  }
  onError(err) {
    if (err.id !== void 0 && this.pending.has(String(err.id))) {
      const p = this.pending.get(String(err.id));
      this.pending.delete(String(err.id));
      clearTimeout(p.timer);
      p.reject(new QuotecastError(err.code, err.message));
      return;
    }
    const st = err.channel ? this.channels.get(err.channel) : void 0;
    if (st) {
      this.forHandlers(st, (h) => h.onError?.(err));
      if (st.lastSeq === null && st.epoch === null)
        this.channels.delete(st.name);
    }
    this.emit("error", err);
  }
  settle(id, msg) {
    const p = this.pending.get(String(id));
    if (!p)
      return;
    this.pending.delete(String(id));
    clearTimeout(p.timer);
    p.resolve(msg);
  }
  forHandlers(st, f) {
    for (const h of [...st.handlers]) {
      try {
        f(h);
      } catch (e) {
        reportError(e);
      }
    }
  }
  removeHandler(channel, h) {
    const st = this.channels.get(channel);
    if (!st)
      return;
    st.handlers.delete(h);
    if (st.handlers.size > 0)
      return;
    this.channels.delete(channel);
    if (st.sent)
      this.send({ op: "unsubscribe", channels: [channel] });
  }
  // ---- ping and latency ----
  startPing() {
    const every = this.opts.pingIntervalMs ?? 5e3;
    if (every <= 0)
      return;
    const timeout = this.opts.pingTimeoutMs ?? 1e4;
    const tick = () => {
      if (this.pingOut) {
        if (performanceNow() - this.pingOut.sentMono > timeout)
          this.lose(4997, "ping timeout");
        return;
      }
      const id = `p${this.nextOpId++}`;
      this.pingOut = { id, sentMono: performanceNow(), sentWall: wallNow() };
      this.send({ op: "ping", id });
    };
    tick();
    this.pingTimer = setInterval(tick, Math.min(every, timeout / 2));
  }
  onPong(p) {
    const out = this.pingOut;
    if (out && p.id === out.id) {
      this.pingOut = null;
      const rttMs = performanceNow() - out.sentMono;
      this.offsets.push({ rttMs, offsetMs: p.ts / 1e6 - (out.sentWall + rttMs / 2) });
      if (this.offsets.length > OFFSET_SAMPLES)
        this.offsets.shift();
      const best = this.offsets.reduce((a, b) => b.rttMs < a.rttMs ? b : a);
      const clockOffsetMs = Math.abs(best.offsetMs) <= best.rttMs / 2 ? 0 : best.offsetMs;
      this._latency = { rttMs, clockOffsetMs };
      this.emit("latency", this._latency);
      return;
    }
    if (p.id !== void 0)
      this.settle(p.id, p);
  }
  // ---- token refresh ----
  scheduleTokenRefresh() {
    const src = this.opts.token;
    if (typeof src !== "function" || !this.cachedToken)
      return;
    const exp = jwtExpiry(this.cachedToken);
    if (exp === void 0)
      return;
    const at = refreshAt(exp, Date.now(), this.opts.tokenRefreshMarginMs ?? 3e4);
    const gen = this.gen;
    this.refreshTimer = setTimeout(() => void this.refreshToken(gen), at - Date.now());
  }
  async refreshToken(gen) {
    const src = this.opts.token;
    if (typeof src !== "function")
      return;
    let token;
    try {
      token = await src();
    } catch (e) {
      reportError(e);
      if (gen === this.gen)
        this.scheduleTokenRefresh();
      return;
    }
    if (gen !== this.gen || !token)
      return;
    this.cachedToken = token;
    let result;
    try {
      await this.request({ op: "auth", token });
      result = { ok: true };
    } catch (e) {
      const err = e;
      result = { ok: false, code: err.code ?? "error", message: err.message };
    }
    if (gen !== this.gen)
      return;
    this.emit("auth", result);
    this.scheduleTokenRefresh();
  }
};
function performanceNow() {
  const p = globalThis.performance;
  return p ? p.now() : Date.now();
}

// dist/msgpack.js
var enc = /* @__PURE__ */ new TextEncoder();
var dec = /* @__PURE__ */ new TextDecoder();
var Writer = class {
  constructor() {
    this.buf = new Uint8Array(256);
    this.view = new DataView(this.buf.buffer);
    this.len = 0;
  }
  ensure(n) {
    if (this.len + n <= this.buf.length)
      return;
    let cap = this.buf.length * 2;
    while (cap < this.len + n)
      cap *= 2;
    const next = new Uint8Array(cap);
    next.set(this.buf.subarray(0, this.len));
    this.buf = next;
    this.view = new DataView(next.buffer);
  }
  u8(v) {
    this.ensure(1);
    this.buf[this.len++] = v;
  }
  u16(v) {
    this.ensure(2);
    this.view.setUint16(this.len, v);
    this.len += 2;
  }
  u32(v) {
    this.ensure(4);
    this.view.setUint32(this.len, v);
    this.len += 4;
  }
  bytes(b) {
    this.ensure(b.length);
    this.buf.set(b, this.len);
    this.len += b.length;
  }
};
function writeValue(w, v, depth) {
  if (depth > 64)
    throw new Error("msgpack: nesting deeper than 64");
  if (v === null || v === void 0)
    return w.u8(192);
  switch (typeof v) {
    case "boolean":
      return w.u8(v ? 195 : 194);
    case "number":
      return writeNumber(w, v);
    case "bigint":
      w.u8(v < 0n ? 211 : 207);
      w.ensure(8);
      if (v < 0n)
        w.view.setBigInt64(w.len, v);
      else
        w.view.setBigUint64(w.len, v);
      w.len += 8;
      return;
    case "string": {
      const b = enc.encode(v);
      const n = b.length;
      if (n < 32)
        w.u8(160 | n);
      else if (n < 256)
        w.u8(217), w.u8(n);
      else if (n < 65536)
        w.u8(218), w.u16(n);
      else
        w.u8(219), w.u32(n);
      return w.bytes(b);
    }
    case "object": {
      if (v instanceof Uint8Array) {
        const n2 = v.length;
        if (n2 < 256)
          w.u8(196), w.u8(n2);
        else if (n2 < 65536)
          w.u8(197), w.u16(n2);
        else
          w.u8(198), w.u32(n2);
        return w.bytes(v);
      }
      if (Array.isArray(v)) {
        const n2 = v.length;
        if (n2 < 16)
          w.u8(144 | n2);
        else if (n2 < 65536)
          w.u8(220), w.u16(n2);
        else
          w.u8(221), w.u32(n2);
        for (const x of v)
          writeValue(w, x, depth + 1);
        return;
      }
      const entries = Object.entries(v).filter(([, x]) => x !== void 0);
      const n = entries.length;
      if (n < 16)
        w.u8(128 | n);
      else if (n < 65536)
        w.u8(222), w.u16(n);
      else
        w.u8(223), w.u32(n);
      for (const [k, x] of entries) {
        writeValue(w, k, depth + 1);
        writeValue(w, x, depth + 1);
      }
      return;
    }
    default:
      throw new Error(`msgpack: cannot encode a ${typeof v}`);
  }
}
function writeNumber(w, v) {
  if (Number.isInteger(v) && Number.isSafeInteger(v)) {
    if (v >= 0) {
      if (v < 128)
        return w.u8(v);
      if (v < 256)
        return w.u8(204), w.u8(v);
      if (v < 65536)
        return w.u8(205), w.u16(v);
      if (v < 4294967296)
        return w.u8(206), w.u32(v);
      w.u8(207);
      w.ensure(8);
      w.view.setBigUint64(w.len, BigInt(v));
      w.len += 8;
      return;
    }
    if (v >= -32)
      return w.u8(v & 255);
    if (v >= -128)
      return w.u8(208), w.u8(v & 255);
    if (v >= -32768)
      return w.u8(209), w.u16(v & 65535);
    if (v >= -2147483648)
      return w.u8(210), w.u32(v >>> 0);
    w.u8(211);
    w.ensure(8);
    w.view.setBigInt64(w.len, BigInt(v));
    w.len += 8;
    return;
  }
  w.u8(203);
  w.ensure(8);
  w.view.setFloat64(w.len, v);
  w.len += 8;
}
function encode(value) {
  const w = new Writer();
  writeValue(w, value, 0);
  return w.buf.slice(0, w.len);
}
var Reader = class {
  constructor(buf) {
    this.buf = buf;
    this.pos = 0;
    this.view = new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
  }
  need(n) {
    const p = this.pos;
    if (p + n > this.buf.length)
      throw new Error("msgpack: truncated input");
    this.pos = p + n;
    return p;
  }
};
function readValue(r, depth) {
  if (depth > 128)
    throw new Error("msgpack: nesting too deep");
  const b = r.buf[r.need(1)];
  if (b < 128)
    return b;
  if (b >= 224)
    return b - 256;
  if ((b & 240) === 128)
    return readMap(r, b & 15, depth);
  if ((b & 240) === 144)
    return readArray(r, b & 15, depth);
  if ((b & 224) === 160)
    return readStr(r, b & 31);
  const v = r.view;
  switch (b) {
    case 192:
      return null;
    case 194:
      return false;
    case 195:
      return true;
    case 196:
      return readBin(r, v.getUint8(r.need(1)));
    case 197:
      return readBin(r, v.getUint16(r.need(2)));
    case 198:
      return readBin(r, v.getUint32(r.need(4)));
    case 202:
      return v.getFloat32(r.need(4));
    case 203:
      return v.getFloat64(r.need(8));
    case 204:
      return v.getUint8(r.need(1));
    case 205:
      return v.getUint16(r.need(2));
    case 206:
      return v.getUint32(r.need(4));
    case 207: {
      const p = r.need(8);
      return v.getUint32(p) * 4294967296 + v.getUint32(p + 4);
    }
    case 208:
      return v.getInt8(r.need(1));
    case 209:
      return v.getInt16(r.need(2));
    case 210:
      return v.getInt32(r.need(4));
    case 211: {
      const p = r.need(8);
      return v.getInt32(p) * 4294967296 + v.getUint32(p + 4);
    }
    case 217:
      return readStr(r, v.getUint8(r.need(1)));
    case 218:
      return readStr(r, v.getUint16(r.need(2)));
    case 219:
      return readStr(r, v.getUint32(r.need(4)));
    case 220:
      return readArray(r, v.getUint16(r.need(2)), depth);
    case 221:
      return readArray(r, v.getUint32(r.need(4)), depth);
    case 222:
      return readMap(r, v.getUint16(r.need(2)), depth);
    case 223:
      return readMap(r, v.getUint32(r.need(4)), depth);
    default:
      throw new Error(`msgpack: unsupported type byte 0x${b.toString(16)}`);
  }
}
function readStr(r, n) {
  const p = r.need(n);
  return dec.decode(r.buf.subarray(p, p + n));
}
function readBin(r, n) {
  const p = r.need(n);
  return r.buf.slice(p, p + n);
}
function readArray(r, n, depth) {
  const out = new Array(n);
  for (let i = 0; i < n; i++)
    out[i] = readValue(r, depth + 1);
  return out;
}
function readMap(r, n, depth) {
  const out = {};
  for (let i = 0; i < n; i++) {
    const k = readValue(r, depth + 1);
    const key = typeof k === "string" ? k : String(k);
    const val = readValue(r, depth + 1);
    Object.defineProperty(out, key, { value: val, enumerable: true, writable: true, configurable: true });
  }
  return out;
}
function decode(data) {
  const r = new Reader(data instanceof Uint8Array ? data : new Uint8Array(data));
  const v = readValue(r, 0);
  if (r.pos !== r.buf.length)
    throw new Error("msgpack: trailing bytes");
  return v;
}
var msgpackCodec = {
  name: "msgpack",
  encode,
  decode: (data) => {
    if (typeof data === "string")
      return JSON.parse(data);
    return decode(data);
  }
};
export {
  DEFAULT_BACKOFF,
  QuotecastClient,
  QuotecastError,
  backoffDelay,
  buildUrl,
  jsonCodec,
  jwtExpiry,
  msgpackCodec,
  decode as msgpackDecode,
  encode as msgpackEncode,
  refreshAt,
  shutdownDelay
};
