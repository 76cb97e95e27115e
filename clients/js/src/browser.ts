// The single-file ESM bundle the built-in board serves as /quotecast.js: the client plus
// the MessagePack codec.

export * from "./index.js";
export { msgpackCodec, encode as msgpackEncode, decode as msgpackDecode } from "./msgpack.js";
