// A minimal typed event emitter (no dependency on Node's or the DOM's).

export type Listener<T> = (payload: T) => void;

export class Emitter<M extends { [K in keyof M]: unknown }> {
  private listeners: { [K in keyof M]?: Set<Listener<M[K]>> } = {};

  /** Adds a listener; returns a function that removes it. */
  on<K extends keyof M>(type: K, fn: Listener<M[K]>): () => void {
    (this.listeners[type] ??= new Set()).add(fn);
    return () => this.off(type, fn);
  }

  off<K extends keyof M>(type: K, fn: Listener<M[K]>): void {
    this.listeners[type]?.delete(fn);
  }

  protected emit<K extends keyof M>(type: K, payload: M[K]): void {
    const set = this.listeners[type];
    if (!set) return;
    for (const fn of [...set]) {
      try {
        fn(payload);
      } catch (e) {
        reportError(e);
      }
    }
  }
}

/**
 * A listener's exception must not break the connection loop: it goes to the host's
 * `reportError` (browsers: the console and `window.onerror`), else to `console.error`.
 */
export function reportError(e: unknown): void {
  const host = globalThis as { reportError?: (e: unknown) => void };
  if (typeof host.reportError === "function") host.reportError(e);
  else console.error(e);
}
