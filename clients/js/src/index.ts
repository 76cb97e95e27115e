// @quotecast/client: the entry point. See docs/client.md in the quotecast repository.

export {
  QuotecastClient,
  QuotecastError,
  buildUrl,
  type AuthResult,
  type ClientEvents,
  type ClientOptions,
  type ConnectionState,
  type EventMap,
  type LatencySample,
  type RecoveryFailure,
  type StateChange,
  type SubscribeOptions,
  type Subscription,
  type SubscriptionHandlers,
  type WebSocketCtor,
  type WebSocketLike,
} from "./client.js";
export { backoffDelay, shutdownDelay, DEFAULT_BACKOFF, type BackoffOptions } from "./backoff.js";
export { jsonCodec, type Codec } from "./codec.js";
export { jwtExpiry, refreshAt, type TokenSource } from "./token.js";
export type * from "./types.js";
