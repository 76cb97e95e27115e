// ws-node peer: a minimal Node `ws` fan-out server speaking the subset of the quotecast
// wire protocol (docs/protocol.md) that the loadtest uses, so quotecast can be compared
// side by side with a plain single-threaded Node server.
//
// Supported: welcome on connect; subscribe (one `subscribed` ack per channel with the
// channel's current seq); unsubscribe; publish (single or `events` batch, ack only with
// an `id`), each event encoded ONCE to a string and sent to every subscriber; ping -> pong;
// WebSocket pings every heartbeat; slow consumers closed with 4008 when their send buffer
// exceeds --max-buffered bytes. JSON only (no msgpack, no snapshots/replay).
//
// Usage: node server.js serve --listen 127.0.0.1:0 [--heartbeat-ms 30000] [--max-buffered 8388608]
'use strict';

const { WebSocketServer } = require('ws');

function parseArgs(argv) {
  const opts = { listen: '127.0.0.1:8080', heartbeatMs: 30000, maxBuffered: 8 * 1024 * 1024 };
  const args = argv.slice(2);
  if (args[0] === 'serve') args.shift();
  for (let i = 0; i < args.length; i++) {
    const a = args[i];
    const v = args[i + 1];
    if (a === '--listen') { opts.listen = v; i++; }
    else if (a === '--heartbeat-ms') { opts.heartbeatMs = Number(v); i++; }
    else if (a === '--max-buffered') { opts.maxBuffered = Number(v); i++; }
    else { console.error(`unknown argument ${a}`); process.exit(2); }
  }
  const idx = opts.listen.lastIndexOf(':');
  opts.host = opts.listen.slice(0, idx);
  opts.port = Number(opts.listen.slice(idx + 1));
  return opts;
}

const opts = parseArgs(process.argv);
const CHANNEL_RE = /^[A-Za-z0-9._:\-@=#]{1,128}$/;
const EVENT_RE = /^[A-Za-z0-9._:\-]{1,64}$/;

// Epoch nanoseconds from a monotonic clock anchored once at start.
const epochBase = BigInt(Date.now()) * 1000000n - process.hrtime.bigint();
const nowNs = () => (epochBase + process.hrtime.bigint()).toString();

/** channel name -> { seq: number, subs: Set<WebSocket> } */
const channels = new Map();
function channel(name) {
  let ch = channels.get(name);
  if (!ch) { ch = { seq: 0, subs: new Set() }; channels.set(name, ch); }
  return ch;
}

function validChannel(name) {
  return typeof name === 'string' && CHANNEL_RE.test(name) && !name.split('.').includes('');
}

function idPart(msg) {
  return msg.id === undefined ? '' : `,"id":${JSON.stringify(msg.id)}`;
}

function sendError(ws, msg, code, message, extra) {
  ws.send(`{"type":"error"${idPart(msg || {})},"code":"${code}"${extra || ''},"message":${JSON.stringify(message)}}`);
}

function send(ws, str) {
  if (ws.readyState !== 1) return;
  if (ws.bufferedAmount > opts.maxBuffered) {
    ws.close(4008, 'slow consumer');
    return;
  }
  ws.send(str);
}

function publishOne(ev, ws, msg) {
  if (!ev || !validChannel(ev.channel)) { sendError(ws, msg, 'bad_channel', 'invalid channel'); return null; }
  if (typeof ev.event !== 'string' || !EVENT_RE.test(ev.event)) { sendError(ws, msg, 'bad_event', 'invalid event'); return null; }
  const ch = channel(ev.channel);
  const seq = ++ch.seq;
  // Encode once, send the same string to every subscriber.
  const frame = `{"type":"event","channel":${JSON.stringify(ev.channel)},"event":${JSON.stringify(ev.event)},"seq":${seq},"ts":${nowNs()},"data":${JSON.stringify(ev.data === undefined ? null : ev.data)}}`;
  for (const sub of ch.subs) send(sub, frame);
  return seq;
}

let nextConn = 0;
const wss = new WebSocketServer({ host: opts.host, port: opts.port, path: '/ws', perMessageDeflate: false, maxPayload: 16 * 1024 * 1024 });

wss.on('connection', (ws) => {
  const connId = `0-${nextConn++}`;
  ws.subs = new Set();
  ws.isAlive = true;
  ws.on('pong', () => { ws.isAlive = true; });
  ws.send(`{"type":"welcome","protocol":1,"conn_id":"${connId}","user":null,"heartbeat_ms":${opts.heartbeatMs},"format":"json","server":"ws-node/0.1.0"}`);

  ws.on('message', (data, isBinary) => {
    ws.isAlive = true;
    let msg;
    try { msg = JSON.parse(isBinary ? data.toString('utf8') : data); } catch (e) { sendError(ws, null, 'bad_frame', 'invalid JSON'); return; }
    if (msg === null || typeof msg !== 'object' || Array.isArray(msg)) { sendError(ws, null, 'bad_frame', 'not an object'); return; }
    switch (msg.op) {
      case 'subscribe': {
        if (!Array.isArray(msg.channels) || msg.channels.length < 1 || msg.channels.length > 256) {
          sendError(ws, msg, 'bad_request', 'channels must hold 1-256 names'); return;
        }
        for (const name of msg.channels) {
          if (!validChannel(name)) { sendError(ws, msg, 'bad_channel', 'invalid channel name', `,"channel":${JSON.stringify(String(name))}`); continue; }
          const ch = channel(name);
          ch.subs.add(ws);
          ws.subs.add(name);
          ws.send(`{"type":"subscribed"${idPart(msg)},"channel":${JSON.stringify(name)},"kind":"stream","seq":${ch.seq}}`);
        }
        return;
      }
      case 'unsubscribe': {
        const done = [];
        for (const name of Array.isArray(msg.channels) ? msg.channels : []) {
          if (ws.subs.delete(name)) { channel(name).subs.delete(ws); done.push(name); }
        }
        ws.send(`{"type":"unsubscribed"${idPart(msg)},"channels":${JSON.stringify(done)}}`);
        return;
      }
      case 'publish': {
        if (Array.isArray(msg.events)) {
          if (msg.events.length > 1024) { sendError(ws, msg, 'bad_request', 'batch too large'); return; }
          const seqs = msg.events.map((ev) => publishOne(ev, ws, msg));
          if (msg.id !== undefined) ws.send(`{"type":"published"${idPart(msg)},"seqs":${JSON.stringify(seqs)}}`);
        } else {
          const seq = publishOne(msg, ws, msg);
          if (msg.id !== undefined && seq !== null) ws.send(`{"type":"published"${idPart(msg)},"channel":${JSON.stringify(msg.channel)},"seq":${seq}}`);
        }
        return;
      }
      case 'ping':
        ws.send(`{"type":"pong"${idPart(msg)},"ts":${nowNs()}}`);
        return;
      default:
        sendError(ws, msg, 'unknown_op', `unknown op ${JSON.stringify(msg.op)}`);
    }
  });

  ws.on('close', () => {
    for (const name of ws.subs) channel(name).subs.delete(ws);
    ws.subs.clear();
  });
  ws.on('error', () => {});
});

const heartbeat = setInterval(() => {
  for (const ws of wss.clients) {
    if (!ws.isAlive) { ws.close(4000, 'heartbeat timeout'); continue; }
    ws.isAlive = false;
    ws.ping();
  }
}, opts.heartbeatMs);

wss.on('listening', () => {
  const addr = wss.address();
  process.stdout.write(`listening on ${addr.address}:${addr.port}\n`);
});

function shutdown() {
  clearInterval(heartbeat);
  for (const ws of wss.clients) {
    ws.send('{"type":"server_shutdown","reconnect_ms":1000,"message":"server restarting"}');
    ws.close(1012, 'server restart');
  }
  wss.close();
  setTimeout(() => process.exit(0), 200).unref();
}
process.on('SIGTERM', shutdown);
process.on('SIGINT', shutdown);
