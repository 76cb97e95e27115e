// The quotecast client: one WebSocket, any number of channel subscriptions, and the
// bookkeeping that makes a dropped connection invisible to the app. Per channel it keeps
// the last `seq` delivered and the server's `epoch`; after a reconnect it resubscribes with
// `since` so the server replays exactly what was missed, drops duplicates, and calls
// `onRecoveryFailed` when the server can no longer fill the gap.

import { backoffDelay, shutdownDelay, DEFAULT_BACKOFF, type BackoffOptions } from "./backoff.js";
import { jsonCodec, type Codec } from "./codec.js";
import { Emitter, reportError } from "./emitter.js";
import { jwtExpiry, refreshAt, type TokenSource } from "./token.js";
import type {
  ChannelEvent,
  ClientOp,
  ConflatedMsg,
  ErrorMsg,
  OpId,
  PongMsg,
  ServerShutdownMsg,
  SubscribedMsg,
  WelcomeMsg,
} from "./types.js";

/**
 * `idle`: not started. `connecting`: first connection in progress. `open`: welcome received,
 * subscriptions (re)sent. `reconnecting`: the connection was lost; waiting for the backoff
 * timer or re-opening. `closed`: `close()` was called or reconnecting gave up.
 */
export type ConnectionState = "idle" | "connecting" | "open" | "reconnecting" | "closed";

export interface StateChange {
  state: ConnectionState;
  prev: ConnectionState;
  /** Consecutive failed attempts so far (reconnecting). */
  attempt?: number;
  /** How long until the next attempt, ms (reconnecting). */
  delayMs?: number;
  /** Close code and reason of the connection that was lost. */
  code?: number;
  reason?: string;
}

/** The minimal WebSocket surface the client uses (browsers, Node ≥ 22, `ws`, undici). */
export interface WebSocketLike {
  binaryType: string;
  readonly readyState: number;
  send(data: string | ArrayBufferLike | ArrayBufferView): void;
  close(code?: number, reason?: string): void;
  onopen: ((ev: any) => any) | null;
  onmessage: ((ev: { data: any }) => any) | null;
  onclose: ((ev: { code: number; reason: string }) => any) | null;
  onerror: ((ev: any) => any) | null;
}
export type WebSocketCtor = new (url: string) => WebSocketLike;

export interface ClientOptions {
  /** `ws://host:port/ws`; a relative URL (`/ws`) is resolved against the page's location. */
  url: string;
  /** A token (sent as `?token=`), or a function fetching one; see `tokenRefreshMarginMs`. */
  token?: TokenSource;
  /**
   * With a token function and a JWT carrying `exp`: fetch a new token this long before
   * expiry and send it with the `auth` op on the live connection (default 30,000 ms); the
   * server answers `authenticated`. A server without token authentication answers
   * `unsupported`, which is tolerated.
   */
  tokenRefreshMarginMs?: number;
  /** Wire format (default JSON). `msgpackCodec` from "@quotecast/client/msgpack" for binary. */
  codec?: Codec;
  /** Reconnect policy, or `false` to stay closed after a loss. */
  reconnect?: BackoffOptions | false;
  /** Send a `ping` op this often to measure latency and detect dead links (default 5,000; 0 = off). */
  pingIntervalMs?: number;
  /** A ping without a pong for this long closes the connection and reconnects (default 10,000). */
  pingTimeoutMs?: number;
  /** No welcome this long after opening the socket counts as a failed attempt (default 10,000). */
  connectTimeoutMs?: number;
  /** Replies to `publish`/`ping`/`auth` promises time out after this long (default 10,000). */
  opTimeoutMs?: number;
  /** WebSocket implementation (default: `globalThis.WebSocket`). */
  WebSocket?: WebSocketCtor;
  /** Connect in the constructor (default true). */
  autoConnect?: boolean;
}

export interface SubscribeOptions {
  /**
   * Deliver the channel's retained history (latest value for quotes) when first subscribing
   * (default true). On a reconnect `since` is used instead.
   */
  snapshot?: boolean;
  /** Conflated channels only: at most this many updates per second. */
  maxHz?: number;
}

/** What a subscriber learns when the server could not replay what it missed. */
export interface RecoveryFailure {
  channel: string;
  /** The last seq delivered before the gap, and its epoch. */
  lastSeq: number | null;
  epoch: string | null;
  /** The channel's current seq and epoch: live events continue after `seq`. */
  seq: number;
  newEpoch: string;
  /**
   * `epoch`: the server restarted (or another node answered), history is gone. `expired`:
   * the missed events are no longer retained. `sequence`: a gap observed on a live stream
   * (the protocol says this does not happen; reported rather than hidden).
   */
  reason: "epoch" | "expired" | "sequence";
}

/**
 * Event name → payload type, e.g. `{ quote: Quote }` or the demo's `DemoEvents`. The
 * default when no type parameter is given; `subscribe<M>` accepts any object type for `M`,
 * including an `interface` (which has no index signature).
 */
export type EventMap = { [event: string]: unknown };

type AnyEvent<M extends object> = {
  [K in keyof M & string]: ChannelEvent<M[K], K>;
}[keyof M & string];

export interface SubscriptionHandlers<M extends object = EventMap> {
  /** Every event, in seq order, without duplicates. */
  onEvent?: (ev: AnyEvent<M>) => void;
  /** Per event name. */
  on?: { [K in keyof M & string]?: (data: M[K], ev: ChannelEvent<M[K], K>) => void };
  /** Each `subscribed` ack (first subscribe and every resubscribe). */
  onSubscribed?: (ack: SubscribedMsg) => void;
  /** The server could not fill a gap (`recovered: false`): refetch this channel's state. */
  onRecoveryFailed?: (info: RecoveryFailure) => void;
  /** Earlier values of a conflated channel were replaced by the next event (not a loss). */
  onConflated?: (msg: ConflatedMsg) => void;
  /** The server rejected the channel (the subscription is dropped) or reported an error on it. */
  onError?: (err: ErrorMsg) => void;
}

export interface Subscription {
  readonly channel: string;
  unsubscribe(): void;
}

export interface LatencySample {
  /** Round trip of a `ping` op, ms. */
  rttMs: number;
  /**
   * Estimated server clock minus local clock, ms: midpoint of the recent ping with the
   * smallest rtt, or 0 when that is within its error bound (±rtt/2).
   */
  clockOffsetMs: number;
}

export interface AuthResult {
  ok: boolean;
  /**
   * Error code when not ok: `unsupported` (server has no token auth), `auth_failed` (refresh
   * refused; the current token works until it expires), `timeout`, or the server's code.
   */
  code?: string;
  message?: string;
}

export interface ClientEvents {
  state: StateChange;
  welcome: WelcomeMsg;
  latency: LatencySample;
  /** Every decoded server message (a tap for statistics and debugging). */
  message: { type: string; [k: string]: unknown };
  /**
   * Server errors not answered to a pending op, undecodable frames, and the client's own
   * failures (`bad_url`, `no_websocket`, `token_failed`, `connect_failed`, `unauthorized`):
   * the client never throws from its connection loop.
   */
  error: ErrorMsg;
  recoveryFailed: RecoveryFailure;
  shutdown: ServerShutdownMsg;
  auth: AuthResult;
}

/** An error reply to an op (`publish`, `ping`, `auth`). */
export class QuotecastError extends Error {
  constructor(
    readonly code: string,
    message: string,
  ) {
    super(message);
    this.name = "QuotecastError";
  }
}

interface ChannelState {
  name: string;
  handlers: Set<SubscriptionHandlers<any>>;
  snapshot: boolean;
  maxHz?: number;
  kind?: string;
  epoch: string | null;
  /** Last seq delivered; `null` = none yet (subscribe fresh, accept anything). */
  lastSeq: number | null;
  /** The latest event, handed to a handler that joins a live channel asking for a snapshot. */
  lastEvent?: ChannelEvent;
  /** A subscribe op for this channel was sent on the current connection. */
  sent: boolean;
}

interface PendingOp {
  resolve: (v: any) => void;
  reject: (e: Error) => void;
  timer: ReturnType<typeof setTimeout>;
}

/**
 * Close codes after which a cached token is not reused: 4001 bad token, 4002 token expired,
 * 4003 no `auth` in time (docs/protocol.md), 1008 policy violation.
 */
const AUTH_CLOSE_CODES = new Set([1008, 4001, 4002, 4003]);

/** Ping samples kept for the clock-offset estimate (the one with the smallest rtt wins). */
const OFFSET_SAMPLES = 16;

/** Most channels in one subscribe op (the server's limit). */
const MAX_CHANNELS_PER_OP = 256;

function wallNow(): number {
  const p = (globalThis as { performance?: { timeOrigin?: number; now(): number } }).performance;
  return p && typeof p.timeOrigin === "number" ? p.timeOrigin + p.now() : Date.now();
}

/** Resolves a relative or http(s) URL to a ws(s) URL and sets the query parameters. */
export function buildUrl(url: string, params: Record<string, string | undefined>): string {
  const base = (globalThis as { location?: { href: string } }).location?.href;
  const u = base ? new URL(url, base) : new URL(url);
  if (u.protocol === "http:") u.protocol = "ws:";
  else if (u.protocol === "https:") u.protocol = "wss:";
  for (const [k, v] of Object.entries(params)) if (v !== undefined) u.searchParams.set(k, v);
  return u.toString();
}

export class QuotecastClient extends Emitter<ClientEvents> {
  private readonly opts: ClientOptions;
  private readonly codec: Codec;
  private readonly channels = new Map<string, ChannelState>();
  private readonly pending = new Map<string, PendingOp>();
  private ws: WebSocketLike | null = null;
  /** Bumped on every new socket: callbacks of an older socket are ignored. */
  private gen = 0;
  private _state: ConnectionState = "idle";
  private closedByUser = false;
  private attempt = 0;
  private openedAt = 0;
  private shutdownMs: number | null = null;
  private nextOpId = 1;
  private reconnectTimer: ReturnType<typeof setTimeout> | null = null;
  private connectTimer: ReturnType<typeof setTimeout> | null = null;
  private pingTimer: ReturnType<typeof setInterval> | null = null;
  private refreshTimer: ReturnType<typeof setTimeout> | null = null;
  private pingOut: { id: string; sentMono: number; sentWall: number } | null = null;
  private offsets: { rttMs: number; offsetMs: number }[] = [];
  private cachedToken: string | null = null;
  private _welcome: WelcomeMsg | null = null;
  private _latency: LatencySample | null = null;
  private readonly onOnline = () => {
    if (this._state === "reconnecting" && this.reconnectTimer) this.fireReconnectNow();
  };

  constructor(opts: ClientOptions) {
    super();
    this.opts = opts;
    this.codec = opts.codec ?? jsonCodec;
    const g = globalThis as { addEventListener?: (t: string, f: () => void) => void };
    if (typeof g.addEventListener === "function" && typeof window !== "undefined") {
      g.addEventListener("online", this.onOnline);
    }
    if (opts.autoConnect !== false) this.connect();
  }

  /** The connection state. */
  get state(): ConnectionState {
    return this._state;
  }
  /** The last welcome (conn_id, heartbeat, format), or null before the first. */
  get welcome(): WelcomeMsg | null {
    return this._welcome;
  }
  /** The last ping measurement, or null before the first pong. */
  get latency(): LatencySample | null {
    return this._latency;
  }
  /** Channels with at least one handler. */
  get subscribedChannels(): string[] {
    return [...this.channels.keys()];
  }
  /** Per channel: last delivered seq and epoch (what the next resubscribe sends as `since`). */
  position(channel: string): { seq: number | null; epoch: string | null } | undefined {
    const st = this.channels.get(channel);
    return st && { seq: st.lastSeq, epoch: st.epoch };
  }

  /**
   * Server-ingest → now latency of an event, ms, corrected by the clock offset measured with
   * `ping` (exact on one machine; ±half a round trip across machines).
   */
  eventLatencyMs(ev: { ts: number }): number {
    return wallNow() + (this._latency?.clockOffsetMs ?? 0) - ev.ts / 1e6;
  }

  /** Opens the connection (no-op when already open or connecting). */
  connect(): void {
    if (this._state === "open" || this._state === "connecting" || this._state === "reconnecting") return;
    this.closedByUser = false;
    this.attempt = 0;
    this.setState("connecting", {});
    void this.openSocket();
  }

  /** Closes the connection for good (until `connect()`); pending ops are rejected. */
  close(): void {
    this.closedByUser = true;
    this.gen++;
    this.clearTimers();
    if (this.reconnectTimer) clearTimeout(this.reconnectTimer);
    this.reconnectTimer = null;
    const ws = this.ws;
    this.ws = null;
    if (ws) {
      try {
        ws.close(1000, "bye");
      } catch {
        /* already closing */
      }
    }
    this.connectionLost();
    if (this._state !== "closed") this.setState("closed", {});
    const g = globalThis as { removeEventListener?: (t: string, f: () => void) => void };
    if (typeof g.removeEventListener === "function") g.removeEventListener("online", this.onOnline);
  }

  /** Drops the current connection and reconnects now (e.g. after a network change). */
  reconnect(): void {
    if (this.closedByUser) return;
    if (this.ws) this.lose(4999, "client reconnect", 0);
    else if (this.reconnectTimer) this.fireReconnectNow();
  }

  /**
   * Subscribes to a channel. Handlers get events in seq order without duplicates across
   * reconnects. Several subscriptions to one channel share one server subscription; the
   * first one's options apply (a later one asking for a snapshot gets the latest event).
   */
  subscribe<M extends object = EventMap>(
    channel: string,
    handlers: SubscriptionHandlers<M> | ((ev: AnyEvent<M>) => void),
    options: SubscribeOptions = {},
  ): Subscription {
    const h: SubscriptionHandlers<M> = typeof handlers === "function" ? { onEvent: handlers } : handlers;
    let st = this.channels.get(channel);
    if (!st) {
      st = {
        name: channel,
        handlers: new Set(),
        snapshot: options.snapshot ?? true,
        maxHz: options.maxHz,
        epoch: null,
        lastSeq: null,
        sent: false,
      };
      this.channels.set(channel, st);
      st.handlers.add(h);
      if (this._state === "open") this.sendSubscribes([st]);
    } else {
      st.handlers.add(h);
      if ((options.snapshot ?? true) && st.lastEvent) this.deliverTo(h, st.lastEvent);
    }
    let active = true;
    return {
      channel,
      unsubscribe: () => {
        if (!active) return;
        active = false;
        this.removeHandler(channel, h);
      },
    };
  }

  /** Publishes one event; resolves with its seq. Requires an open connection. */
  publish(channel: string, event: string, data: unknown): Promise<number> {
    return this.request<{ seq: number }>({ op: "publish", channel, event, data }).then((r) => r.seq);
  }

  /** One `ping` round trip, ms. */
  ping(): Promise<number> {
    const t0 = wallNow();
    return this.request<PongMsg>({ op: "ping" }).then(() => wallNow() - t0);
  }

  // ---- connection ----

  private setState(state: ConnectionState, info: Omit<StateChange, "state" | "prev">): void {
    const prev = this._state;
    this._state = state;
    this.emit("state", { state, prev, ...info });
  }

  private async getToken(): Promise<string | undefined> {
    const src = this.opts.token;
    if (src === undefined || src === null) return undefined;
    if (typeof src === "string") return src;
    const margin = this.opts.tokenRefreshMarginMs ?? 30_000;
    if (this.cachedToken) {
      const exp = jwtExpiry(this.cachedToken);
      if (exp === undefined || exp - Date.now() > margin) return this.cachedToken;
    }
    this.cachedToken = (await src()) || null;
    return this.cachedToken ?? undefined;
  }

  private async openSocket(): Promise<void> {
    const gen = ++this.gen;
    let token: string | undefined;
    try {
      token = await this.getToken();
    } catch (e) {
      if (gen !== this.gen || this.closedByUser) return;
      this.emit("error", { type: "error", code: "token_failed", message: `the token function failed: ${e instanceof Error ? e.message : e}` });
      this.scheduleReconnect(this.nextBackoff(), "token fetch failed");
      return;
    }
    if (gen !== this.gen || this.closedByUser) return;
    const Ctor = this.opts.WebSocket ?? (globalThis as { WebSocket?: WebSocketCtor }).WebSocket;
    if (!Ctor) {
      this.fail("no_websocket", "no WebSocket implementation: pass `WebSocket` in the options (Node 20: run with --experimental-websocket)");
      return;
    }
    let url: string;
    try {
      url = buildUrl(this.opts.url, {
        format: this.codec.name === "json" ? undefined : this.codec.name,
        token,
      });
    } catch (e) {
      // A relative URL outside a page (Node), a typo: retrying cannot help.
      this.fail("bad_url", `cannot connect to ${JSON.stringify(this.opts.url)}: ${e instanceof Error ? e.message : e} (outside a browser the url must be absolute, e.g. ws://127.0.0.1:8080/ws)`);
      return;
    }
    let ws: WebSocketLike;
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
      if (gen === this.gen) this.onMessage(e.data);
    };
    ws.onclose = (e) => {
      if (gen === this.gen) this.lose(e.code, e.reason);
    };
    ws.onerror = () => {
      // An error always fails the connection; some implementations (undici in Node 20)
      // never follow a failed handshake with a close event, so do not wait for one.
      if (gen === this.gen) this.lose(1006, "connection error");
    };
    const timeout = this.opts.connectTimeoutMs ?? 10_000;
    this.connectTimer = setTimeout(() => {
      if (gen === this.gen) this.lose(4998, "connect timeout");
    }, timeout);
  }

  /** The connection is gone (close event, dead link, timeout): clean up and maybe reconnect. */
  private lose(code: number, reason: string, delayOverride?: number): void {
    this.gen++;
    const ws = this.ws;
    this.ws = null;
    if (ws) {
      ws.onmessage = ws.onclose = ws.onerror = null;
      try {
        ws.close(code >= 4000 && code < 5000 ? code : 1000);
      } catch {
        /* already closed */
      }
    }
    this.clearTimers();
    this.connectionLost();
    if (this.closedByUser) return;
    if (AUTH_CLOSE_CODES.has(code)) {
      this.cachedToken = null;
      this.emit("error", { type: "error", code: "unauthorized", message: `the server refused the token (close ${code}${reason ? `: ${reason}` : ""})` });
      // A fixed token string the server refused will be refused again: stop here.
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
    if (lived >= (policy?.resetAfterMs ?? DEFAULT_BACKOFF.resetAfterMs)) this.attempt = 0;
    let delay: number;
    if (delayOverride !== undefined) {
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
  private fail(code: string, message: string): void {
    this.emit("error", { type: "error", code, message });
    this.clearTimers();
    this.setState("closed", { reason: message });
  }

  private nextBackoff(): number {
    return backoffDelay(this.attempt++, this.opts.reconnect || {});
  }

  private scheduleReconnect(delay: number, reason: string, code?: number): void {
    if (this.reconnectTimer) clearTimeout(this.reconnectTimer);
    this.setState("reconnecting", { attempt: this.attempt, delayMs: delay, code, reason });
    this.reconnectTimer = setTimeout(() => {
      this.reconnectTimer = null;
      void this.openSocket();
    }, delay);
  }

  private fireReconnectNow(): void {
    if (this.reconnectTimer) clearTimeout(this.reconnectTimer);
    this.reconnectTimer = null;
    void this.openSocket();
  }

  private clearTimers(): void {
    for (const t of [this.connectTimer, this.refreshTimer]) if (t) clearTimeout(t);
    if (this.pingTimer) clearInterval(this.pingTimer);
    this.connectTimer = this.refreshTimer = this.pingTimer = null;
    this.pingOut = null;
  }

  private connectionLost(): void {
    for (const st of this.channels.values()) st.sent = false;
    for (const [id, p] of this.pending) {
      clearTimeout(p.timer);
      p.reject(new QuotecastError("disconnected", "the connection was lost before the reply"));
      this.pending.delete(id);
    }
  }

  private send(op: ClientOp): boolean {
    const ws = this.ws;
    if (!ws || ws.readyState !== 1) return false;
    ws.send(this.codec.encode(op) as string);
    return true;
  }

  private request<T>(op: ClientOp): Promise<T> {
    return new Promise<T>((resolve, reject) => {
      if (this._state !== "open") {
        reject(new QuotecastError("disconnected", "not connected"));
        return;
      }
      const id = `c${this.nextOpId++}`;
      const timer = setTimeout(() => {
        this.pending.delete(id);
        reject(new QuotecastError("timeout", `no reply to ${op.op} in time`));
      }, this.opts.opTimeoutMs ?? 10_000);
      this.pending.set(id, { resolve, reject, timer });
      if (!this.send({ ...op, id } as ClientOp)) {
        clearTimeout(timer);
        this.pending.delete(id);
        reject(new QuotecastError("disconnected", "not connected"));
      }
    });
  }

  // ---- inbound ----

  private onMessage(raw: unknown): void {
    let msg: { type: string; [k: string]: unknown };
    try {
      msg = this.codec.decode(raw as string | ArrayBuffer) as typeof msg;
    } catch (e) {
      this.emit("error", { type: "error", code: "bad_frame", message: `undecodable server message: ${e}` });
      return;
    }
    if (!msg || typeof msg.type !== "string") return;
    this.emit("message", msg);
    switch (msg.type) {
      case "event":
        return this.onEvent(msg as unknown as ChannelEvent);
      case "conflated":
        return this.onConflated(msg as unknown as ConflatedMsg);
      case "subscribed":
        return this.onSubscribed(msg as unknown as SubscribedMsg);
      case "welcome":
        return this.onWelcome(msg as unknown as WelcomeMsg);
      case "pong":
        return this.onPong(msg as unknown as PongMsg);
      case "error":
        return this.onError(msg as unknown as ErrorMsg);
      case "server_shutdown": {
        const m = msg as unknown as ServerShutdownMsg;
        this.shutdownMs = typeof m.reconnect_ms === "number" ? m.reconnect_ms : 1000;
        this.emit("shutdown", m);
        return;
      }
      default:
        if (msg.id !== undefined) this.settle(msg.id as OpId, msg);
    }
  }

  private onWelcome(w: WelcomeMsg): void {
    if (this.connectTimer) clearTimeout(this.connectTimer);
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
  private sendSubscribes(list: ChannelState[]): void {
    const groups = new Map<string, { op: Extract<ClientOp, { op: "subscribe" }>; n: number }[]>();
    for (const st of list) {
      if (st.sent) continue;
      st.sent = true;
      const resume = st.lastSeq !== null && st.epoch !== null;
      const key = `${resume ? "since" : st.snapshot ? "snap" : "live"}|${st.maxHz ?? ""}`;
      let ops = groups.get(key);
      if (!ops) groups.set(key, (ops = []));
      let cur = ops[ops.length - 1];
      if (!cur || cur.n >= MAX_CHANNELS_PER_OP) {
        cur = { op: { op: "subscribe", channels: [] }, n: 0 };
        if (resume) cur.op.since = {};
        else if (st.snapshot) cur.op.snapshot = true;
        if (st.maxHz !== undefined) cur.op.max_hz = st.maxHz;
        ops.push(cur);
      }
      cur.op.channels.push(st.name);
      cur.n++;
      if (resume) cur.op.since![st.name] = { seq: st.lastSeq!, epoch: st.epoch! };
    }
    for (const ops of groups.values()) for (const { op } of ops) this.send(op);
  }

  private onSubscribed(ack: SubscribedMsg): void {
    const st = this.channels.get(ack.channel);
    if (!st) return;
    st.kind = ack.kind;
    const conflated = ack.kind === "conflated";
    if (ack.recovered === false) {
      const info: RecoveryFailure = {
        channel: st.name,
        lastSeq: st.lastSeq,
        epoch: st.epoch,
        seq: ack.seq,
        newEpoch: ack.epoch,
        reason: st.epoch !== null && st.epoch !== ack.epoch ? "epoch" : "expired",
      };
      st.epoch = ack.epoch;
      if (conflated && st.snapshot) {
        // Only the latest value matters: ask for it again instead of bothering the app.
        st.lastSeq = null;
        this.send({ op: "subscribe", channels: [st.name], snapshot: true, ...(st.maxHz ? { max_hz: st.maxHz } : {}) });
      } else {
        st.lastSeq = ack.seq;
        this.forHandlers(st, (h) => h.onSubscribed?.(ack));
        this.forHandlers(st, (h) => h.onRecoveryFailed?.(info));
        this.emit("recoveryFailed", info);
        return;
      }
    } else if (ack.recovered === undefined) {
      // A fresh subscription (or a re-snapshot): start from the ack.
      st.epoch = ack.epoch;
      st.lastSeq = st.snapshot ? null : ack.seq;
    } else {
      st.epoch = ack.epoch;
    }
    this.forHandlers(st, (h) => h.onSubscribed?.(ack));
  }

  private onEvent(ev: ChannelEvent): void {
    const st = this.channels.get(ev.channel);
    if (!st) return;
    if (st.lastSeq !== null) {
      if (ev.seq <= st.lastSeq) return; // already delivered (replay overlap)
      if (ev.seq > st.lastSeq + 1 && st.kind !== "conflated") {
        const info: RecoveryFailure = {
          channel: st.name,
          lastSeq: st.lastSeq,
          epoch: st.epoch,
          seq: ev.seq - 1,
          newEpoch: st.epoch ?? "",
          reason: "sequence",
        };
        this.forHandlers(st, (h) => h.onRecoveryFailed?.(info));
        this.emit("recoveryFailed", info);
      }
    }
    st.lastSeq = ev.seq;
    st.lastEvent = ev;
    for (const h of [...st.handlers]) this.deliverTo(h, ev);
  }

  private deliverTo(h: SubscriptionHandlers<any>, ev: ChannelEvent): void {
    try {
      h.onEvent?.(ev);
      h.on?.[ev.event]?.(ev.data, ev);
    } catch (e) {
      reportError(e);
    }
  }

  private onConflated(m: ConflatedMsg): void {
    const st = this.channels.get(m.channel);
    if (st) this.forHandlers(st, (h) => h.onConflated?.(m));
  }

  private onError(err: ErrorMsg): void {
    if (err.id !== undefined && this.pending.has(String(err.id))) {
      const p = this.pending.get(String(err.id))!;
      this.pending.delete(String(err.id));
      clearTimeout(p.timer);
      p.reject(new QuotecastError(err.code, err.message));
      return;
    }
    const st = err.channel ? this.channels.get(err.channel) : undefined;
    if (st) {
      this.forHandlers(st, (h) => h.onError?.(err));
      // A rejected channel is dropped so that it is not resubscribed on every reconnect.
      if (st.lastSeq === null && st.epoch === null) this.channels.delete(st.name);
    }
    this.emit("error", err);
  }

  private settle(id: OpId, msg: unknown): void {
    const p = this.pending.get(String(id));
    if (!p) return;
    this.pending.delete(String(id));
    clearTimeout(p.timer);
    p.resolve(msg);
  }

  private forHandlers(st: ChannelState, f: (h: SubscriptionHandlers<any>) => void): void {
    for (const h of [...st.handlers]) {
      try {
        f(h);
      } catch (e) {
        reportError(e);
      }
    }
  }

  private removeHandler(channel: string, h: SubscriptionHandlers<any>): void {
    const st = this.channels.get(channel);
    if (!st) return;
    st.handlers.delete(h);
    if (st.handlers.size > 0) return;
    this.channels.delete(channel);
    if (st.sent) this.send({ op: "unsubscribe", channels: [channel] });
  }

  // ---- ping and latency ----

  private startPing(): void {
    const every = this.opts.pingIntervalMs ?? 5_000;
    if (every <= 0) return;
    const timeout = this.opts.pingTimeoutMs ?? 10_000;
    const tick = () => {
      if (this.pingOut) {
        if (performanceNow() - this.pingOut.sentMono > timeout) this.lose(4997, "ping timeout");
        return;
      }
      const id = `p${this.nextOpId++}`;
      this.pingOut = { id, sentMono: performanceNow(), sentWall: wallNow() };
      this.send({ op: "ping", id });
    };
    tick();
    this.pingTimer = setInterval(tick, Math.min(every, timeout / 2));
  }

  private onPong(p: PongMsg): void {
    const out = this.pingOut;
    if (out && p.id === out.id) {
      this.pingOut = null;
      const rttMs = performanceNow() - out.sentMono;
      // NTP-style: the offset of the recent sample with the smallest round trip has the
      // tightest error bound (±rtt/2); a pong queued behind a burst of events would skew it.
      this.offsets.push({ rttMs, offsetMs: p.ts / 1e6 - (out.sentWall + rttMs / 2) });
      if (this.offsets.length > OFFSET_SAMPLES) this.offsets.shift();
      const best = this.offsets.reduce((a, b) => (b.rttMs < a.rttMs ? b : a));
      // An estimate within its own error bound (a busy main thread delays the pong, which
      // inflates rtt and biases the midpoint by up to rtt/2) cannot be told from zero:
      // synchronised clocks then give exact latencies instead of slightly negative ones.
      const clockOffsetMs = Math.abs(best.offsetMs) <= best.rttMs / 2 ? 0 : best.offsetMs;
      this._latency = { rttMs, clockOffsetMs };
      this.emit("latency", this._latency);
      return;
    }
    if (p.id !== undefined) this.settle(p.id, p);
  }

  // ---- token refresh ----

  private scheduleTokenRefresh(): void {
    const src = this.opts.token;
    if (typeof src !== "function" || !this.cachedToken) return;
    const exp = jwtExpiry(this.cachedToken);
    if (exp === undefined) return;
    const at = refreshAt(exp, Date.now(), this.opts.tokenRefreshMarginMs ?? 30_000);
    const gen = this.gen;
    this.refreshTimer = setTimeout(() => void this.refreshToken(gen), at - Date.now());
  }

  private async refreshToken(gen: number): Promise<void> {
    const src = this.opts.token;
    if (typeof src !== "function") return;
    let token: string | null | undefined;
    try {
      token = await src();
    } catch (e) {
      reportError(e);
      if (gen === this.gen) this.scheduleTokenRefresh();
      return;
    }
    if (gen !== this.gen || !token) return;
    this.cachedToken = token;
    let result: AuthResult;
    try {
      await this.request({ op: "auth", token });
      result = { ok: true };
    } catch (e) {
      const err = e as QuotecastError;
      result = { ok: false, code: err.code ?? "error", message: err.message };
    }
    if (gen !== this.gen) return;
    this.emit("auth", result);
    // On `unsupported` the server does not check tokens, and on `auth_failed` the current
    // token keeps working until it expires (then the server closes with 4002 and the
    // reconnect fetches a new one); either way the fresh token is used for the next
    // connection. Schedule the next refresh from the new token's expiry.
    this.scheduleTokenRefresh();
  }
}

function performanceNow(): number {
  const p = (globalThis as { performance?: { now(): number } }).performance;
  return p ? p.now() : Date.now();
}
