// Wire formats. A codec turns client ops into WebSocket messages and server messages back
// into objects; the connection URL carries `?format=<name>` so the server answers in kind.

/** A wire format for one connection. */
export interface Codec {
  /** The `?format=` value: `json` (text frames) or `msgpack` (binary frames). */
  readonly name: "json" | "msgpack";
  encode(value: unknown): string | Uint8Array;
  /** Decodes one message: a string (text frame) or an ArrayBuffer (binary frame). */
  decode(data: string | ArrayBuffer | Uint8Array): unknown;
}

const utf8 = /* @__PURE__ */ new TextDecoder();

/** JSON text frames (the server's default). */
export const jsonCodec: Codec = {
  name: "json",
  encode: (value) => JSON.stringify(value),
  decode: (data) =>
    JSON.parse(typeof data === "string" ? data : utf8.decode(data instanceof Uint8Array ? data : new Uint8Array(data))),
};
