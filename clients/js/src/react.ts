// React bindings, a separate entry point ("@quotecast/client/react") so that the core has no
// React dependency. No JSX, so no build configuration is needed by the app.
//
//   const client = new QuotecastClient({ url: "/ws", token: fetchToken });
//   <QuotecastProvider client={client}><App/></QuotecastProvider>
//   const state = useConnectionState();
//   const quote = useChannel<{ quote: Quote }>("quotes.AAPL")?.data;

import { createContext, createElement, useContext, useEffect, useRef, useState, useSyncExternalStore } from "react";
import type { ReactNode } from "react";
import type {
  ConnectionState,
  EventMap,
  LatencySample,
  QuotecastClient,
  RecoveryFailure,
  SubscribeOptions,
} from "./client.js";
import type { ChannelEvent } from "./types.js";

const Ctx = createContext<QuotecastClient | null>(null);

/** Makes `client` available to the hooks below. The app owns the client's lifetime. */
export function QuotecastProvider(props: { client: QuotecastClient; children?: ReactNode }) {
  return createElement(Ctx.Provider, { value: props.client }, props.children);
}

/** The client from the nearest `QuotecastProvider` (or the one passed). */
export function useQuotecast(client?: QuotecastClient): QuotecastClient {
  const ctx = useContext(Ctx);
  const c = client ?? ctx;
  if (!c) throw new Error("useQuotecast: no client (wrap the tree in <QuotecastProvider>)");
  return c;
}

/** The connection state, re-rendering on every change. */
export function useConnectionState(client?: QuotecastClient): ConnectionState {
  const c = useQuotecast(client);
  return useSyncExternalStore(
    (cb) => c.on("state", cb),
    () => c.state,
    () => c.state,
  );
}

/** The latest ping measurement (round trip and clock offset), or null. */
export function useLatency(client?: QuotecastClient): LatencySample | null {
  const c = useQuotecast(client);
  return useSyncExternalStore(
    (cb) => c.on("latency", cb),
    () => c.latency,
    () => c.latency,
  );
}

export interface UseChannelOptions<M extends object> extends SubscribeOptions {
  /** Called for every event (in order, no duplicates), in addition to re-rendering with the latest. */
  onEvent?: (ev: ChannelEvent<M[keyof M], keyof M & string>) => void;
  /** The server could not fill a gap after a reconnect: refetch this channel's state. */
  onRecoveryFailed?: (info: RecoveryFailure) => void;
  /** Pass `null`/`false` to skip subscribing (e.g. while a user id is unknown). */
  enabled?: boolean;
  client?: QuotecastClient;
}

/**
 * Subscribes while the component is mounted; returns the latest event (or null). Handlers
 * are read through a ref, so passing new closures on each render does not resubscribe.
 */
export function useChannel<M extends object = EventMap>(
  channel: string,
  options: UseChannelOptions<M> = {},
): ChannelEvent<M[keyof M], keyof M & string> | null {
  const c = useQuotecast(options.client);
  const [last, setLast] = useState<ChannelEvent<M[keyof M], keyof M & string> | null>(null);
  const ref = useRef(options);
  ref.current = options;
  const enabled = options.enabled ?? true;
  const { snapshot, maxHz } = options;
  useEffect(() => {
    if (!enabled) return;
    const sub = c.subscribe<M>(
      channel,
      {
        onEvent: (ev) => {
          ref.current.onEvent?.(ev as ChannelEvent<M[keyof M], keyof M & string>);
          setLast(ev as ChannelEvent<M[keyof M], keyof M & string>);
        },
        onRecoveryFailed: (info) => ref.current.onRecoveryFailed?.(info),
      },
      { snapshot, maxHz },
    );
    return () => sub.unsubscribe();
  }, [c, channel, enabled, snapshot, maxHz]);
  return last;
}
