// Tokens: a fixed string or a callback that fetches one. The JWT `exp` claim is decoded on
// the client (no signature check: the server verifies) to refresh before expiry.

/**
 * A token, or a function returning one (called on connect and before expiry); a function
 * may return null/undefined/"" to connect anonymously.
 */
export type TokenSource = string | (() => string | null | undefined | Promise<string | null | undefined>);

function base64UrlDecode(s: string): string {
  let b = s.replace(/-/g, "+").replace(/_/g, "/");
  while (b.length % 4) b += "=";
  const bin = atob(b);
  const bytes = new Uint8Array(bin.length);
  for (let i = 0; i < bin.length; i++) bytes[i] = bin.charCodeAt(i);
  return new TextDecoder().decode(bytes);
}

/** The `exp` claim of a JWT in ms since the epoch, or `undefined` if it has none or is not a JWT. */
export function jwtExpiry(token: string): number | undefined {
  const parts = token.split(".");
  if (parts.length !== 3) return undefined;
  try {
    const claims = JSON.parse(base64UrlDecode(parts[1]));
    return typeof claims?.exp === "number" ? claims.exp * 1000 : undefined;
  } catch {
    return undefined;
  }
}

/**
 * When to refresh a token that expires at `expMs`: `marginMs` before, but never in the past
 * and never sooner than `minMs` from `now` (a token that is already nearly expired is
 * refreshed soon, not in a tight loop).
 */
export function refreshAt(expMs: number, now: number, marginMs: number, minMs = 1_000): number {
  return Math.max(now + minMs, expMs - marginMs);
}
