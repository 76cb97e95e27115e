// Wire types of quotecast protocol v1 (docs/protocol.md), as the client sees them.

/** Channel kinds the server reports in `subscribed` acks. */
export type ChannelKind = "conflated" | "stream" | (string & {});

/** An op id: echoed by the server in the reply and in any error the op causes. */
export type OpId = number | string;

export interface WelcomeMsg {
  type: "welcome";
  protocol: number;
  conn_id: string;
  user: string | number | null;
  heartbeat_ms: number;
  format: "json" | "msgpack";
  server: string;
}

export interface SubscribedMsg {
  type: "subscribed";
  id?: OpId;
  channel: string;
  kind: ChannelKind;
  /** The channel's current sequence number; live events follow with `seq > this`. */
  seq: number;
  /** Identifies the channel's sequence history; changes when the server restarts. */
  epoch: string;
  /** Only when `since` was sent: `false` means events were lost and state must be refetched. */
  recovered?: boolean;
  /**
   * Cluster mode: sent unasked (no `id`, `recovered: false`) when the node lost track of the
   * channel (Redis lost its history); handled like a failed recovery.
   */
  resync?: boolean;
}

export interface UnsubscribedMsg {
  type: "unsubscribed";
  id?: OpId;
  channels: string[];
}

/** One event on a channel. `data` is typed by the subscriber. */
export interface ChannelEvent<D = unknown, E extends string = string> {
  type: "event";
  channel: string;
  event: E;
  /** Per channel, from 1, gap-free at the publisher side. */
  seq: number;
  /** Server ingest time, nanoseconds since the Unix epoch. */
  ts: number;
  data: D;
}

export interface ConflatedMsg {
  type: "conflated";
  channel: string;
  from: number;
  to: number;
}

export interface PongMsg {
  type: "pong";
  id?: OpId;
  /** Server time, nanoseconds since the Unix epoch. */
  ts: number;
}

export interface PublishedMsg {
  type: "published";
  id?: OpId;
  channel?: string;
  seq?: number;
  seqs?: number[];
}

export type ErrorCode =
  | "bad_frame"
  | "bad_request"
  | "unknown_op"
  | "bad_channel"
  | "bad_event"
  | "bad_data"
  | "unknown_channel"
  | "too_large"
  | "overloaded"
  | "forbidden"
  | "too_many_subscriptions"
  | "unsupported"
  // Raised by the client itself (emitted as `error`, never thrown):
  | "bad_url"
  | "no_websocket"
  | "token_failed"
  | "connect_failed"
  | "unauthorized"
  | (string & {});

export interface ErrorMsg {
  type: "error";
  id?: OpId;
  code: ErrorCode;
  channel?: string;
  message: string;
}

export interface ServerShutdownMsg {
  type: "server_shutdown";
  reconnect_ms: number;
  message?: string;
}

/** Any message the server sends. Unknown types are passed through as `{type: string}`. */
export type ServerMsg =
  | WelcomeMsg
  | SubscribedMsg
  | UnsubscribedMsg
  | ChannelEvent
  | ConflatedMsg
  | PongMsg
  | PublishedMsg
  | ErrorMsg
  | ServerShutdownMsg;

/** A client op. */
export type ClientOp =
  | {
      op: "subscribe";
      id?: OpId;
      channels: string[];
      snapshot?: boolean;
      since?: Record<string, number | { seq: number; epoch: string }>;
      max_hz?: number;
    }
  | { op: "unsubscribe"; id?: OpId; channels: string[] }
  | { op: "publish"; id?: OpId; channel: string; event: string; data: unknown }
  | { op: "publish"; id?: OpId; events: { channel: string; event: string; data: unknown }[] }
  | { op: "ping"; id?: OpId }
  | { op: "auth"; id?: OpId; token: string };

// ---- Payloads of the built-in demo market (`quotecast serve --demo`) ----

export interface Quote {
  symbol: string;
  bid: number;
  ask: number;
  spread: number;
  last: number;
  change: number;
  change_percent: number;
  volume: number;
  timestamp: string;
}

export interface Trade {
  id: string;
  symbol: string;
  side: "buy" | "sell";
  price: number;
  quantity: number;
  status: string;
  timestamp: string;
}

export interface OrderUpdate {
  order_id: string;
  symbol: string;
  side: "buy" | "sell";
  status: string;
  order_type: string;
  volume: number;
  price: number;
  filled_qty: number;
  timestamp: string;
  [k: string]: unknown;
}

export interface PositionUpdate {
  position_id: string;
  symbol: string;
  side: "buy" | "sell";
  quantity: number;
  entry_price: number;
  current_price: number;
  unrealized_pnl: number;
  realized_pnl: number;
  status: string;
  opened_at: string;
  timestamp: string;
  [k: string]: unknown;
}

export interface EquityUpdate {
  challenge_id: string;
  user_id: number;
  current_equity: string;
  total_pnl: string;
  [k: string]: unknown;
}

export interface MarketStatus {
  is_open: boolean;
  session: string;
  next_open: string | null;
  next_close: string | null;
  timestamp: string;
}

export interface RiskAlert {
  challenge_id: string;
  user_id: number;
  alert_type: string;
  severity: "LOW" | "MEDIUM" | "HIGH" | (string & {});
  title: string;
  message: string;
  current_equity: string;
  drawdown_percentage: string;
  threshold_percentage: string;
  alert_timestamp: string;
  [k: string]: unknown;
}

/** Event name → payload for the demo market's channels, for `subscribe<DemoEvents>(..)`. */
export interface DemoEvents {
  quote: Quote;
  trade_executed: Trade;
  market_status: MarketStatus;
  order_update: OrderUpdate;
  position_update: PositionUpdate;
  equity_updated: EquityUpdate;
  risk_alert: RiskAlert;
  signal: Record<string, unknown>;
  challenge_status_changed: Record<string, unknown>;
}
