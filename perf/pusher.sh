#!/usr/bin/env bash
# Pusher side-by-side in one run (perf/README.md, "Pusher dialect vs v1 vs Sockudo"): the same
# loadtest scenarios against
#   qc-v1          quotecast, /ws subscribers, WebSocket publisher
#   qc-pusher      quotecast, /app/app-key?protocol=7 subscribers, WebSocket publisher
#   qc-pusher-http quotecast, Pusher subscribers, signed HTTP API publisher (batch_events)
#   sockudo        Sockudo, Pusher subscribers, signed HTTP API publisher (if $SOCKUDO or
#                  `sockudo` on PATH exists; `cargo install sockudo --locked` needs
#                  protobuf-compiler)
# Every server pinned to core 0 (quotecast with one shard), the loadtest to core 1, as
# perf/run.sh does. Traffic to 127.0.0.1 only; every server started here is stopped by PID.
#
#   bash perf/pusher.sh            # ~4 minutes; results in perf/results/pusher-*.json
#   SOCKUDO=/path/to/sockudo NO_BUILD=1 bash perf/pusher.sh
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=perf/results
mkdir -p "$OUT"
# NO_BUILD=1 uses the release binaries already in target/release.
[ -n "${NO_BUILD:-}" ] || cargo build --release --locked -p quotecast -p loadtest >/dev/null
LT=./target/release/loadtest
QC=./target/release/quotecast
SOCKUDO="${SOCKUDO:-$(command -v sockudo || true)}"
# A bench-only secret shared by the servers and the HTTP publisher.
export PUSHER_APP_SECRET=bench-secret-0123456789
. perf/lib.sh

QC_ARGS=(serve --listen 127.0.0.1:0 --anonymous-publish --shards 1 --config perf/pusher.toml
  --max-queue-frames 65536 --max-queue-bytes 16777216)

start_sockudo() {
  local port
  port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
  HOST=127.0.0.1 PORT="$port" SOCKUDO_DEFAULT_APP_ID=1001 SOCKUDO_DEFAULT_APP_KEY=app-key \
    SOCKUDO_DEFAULT_APP_SECRET="$PUSHER_APP_SECRET" RATE_LIMITER_ENABLED=false \
    METRICS_ENABLED=false taskset -c 0 "$SOCKUDO" >"$OUT/.server-sockudo.log" 2>&1 &
  SPID=$!
  for _ in $(seq 100); do
    if curl -s -o /dev/null "http://127.0.0.1:$port/up/1001" 2>/dev/null; then PORT=$port; return 0; fi
    sleep 0.1
  done
  echo "sockudo did not start:" >&2; tail -20 "$OUT/.server-sockudo.log" >&2; kill "$SPID"; exit 1
}

# one SERVER NAME LOADTEST ARGS... ; SERVER: qc-v1 | qc-pusher | qc-pusher-http | sockudo
one() {
  local server="$1" name="$2"; shift 2
  local url pub=() api=()
  if [ "$server" = sockudo ]; then
    start_sockudo
  else
    start_server qc "$QC" "${QC_ARGS[@]}"
  fi
  case "$server" in
    qc-v1) url="ws://127.0.0.1:$PORT/ws" ;;
    qc-pusher) url="ws://127.0.0.1:$PORT/app/app-key?protocol=7"; pub=(--publish-url "ws://127.0.0.1:$PORT/ws") ;;
    *) url="ws://127.0.0.1:$PORT/app/app-key?protocol=7"; api=(--publish-api pusher-http) ;;
  esac
  local dialect=pusher; [ "$server" = qc-v1 ] && dialect=v1
  echo "== $name-$server" >&2
  taskset -c 1 "$LT" run --url "$url" ${pub[@]+"${pub[@]}"} ${api[@]+"${api[@]}"} --dialect "$dialect" \
    --server-pid "$SPID" --threads 1 --name "pusher-$name-$server" --out "$OUT/pusher-$name-$server.json" "$@" \
    | grep -E "delivered \(window\)|latency  |server rss|server cpu|loadtest cpu|errors|closes" >&2 || true
  stop_server
}

SERVERS=(qc-v1 qc-pusher qc-pusher-http)
[ -n "$SOCKUDO" ] && [ -x "$SOCKUDO" ] && SERVERS+=(sockudo)

# Equal offered load for every server (Sockudo included): deliveries per CPU-second compare
# as "deliveries/s per core". HTTP batches are at most 10 events (Pusher's limit).
for s in "${SERVERS[@]}"; do
  one "$s" broadcast-50k --scenario broadcast --rate 50 --batch 1 --duration 5 --warmup 2
done
for s in "${SERVERS[@]}"; do
  one "$s" market-100k --scenario market --rate 1000 --batch 10 --duration 5 --warmup 2
done
for s in "${SERVERS[@]}"; do
  one "$s" idle --scenario idle --duration 3
done
# quotecast v1 vs its Pusher dialect near saturation of the core.
for s in qc-v1 qc-pusher qc-pusher-http; do
  b=100; [ "$s" = qc-pusher-http ] && b=10
  one "$s" broadcast-2M --scenario broadcast --rate 2000 --batch "$b" --duration 5 --warmup 2 --read-buf 65536
done
for s in qc-v1 qc-pusher qc-pusher-http; do
  b=5; [ "$s" = qc-pusher-http ] && b=10
  one "$s" market-500k --scenario market --rate 5000 --batch "$b" --duration 5 --warmup 2
done
for s in qc-v1 qc-pusher; do
  one "$s" broadcast-6M --scenario broadcast --rate 6000 --batch 100 --duration 5 --warmup 2 --read-buf 65536
done
rm -f "$OUT"/.server-*
python3 perf/summarize.py "$OUT" | grep -E "^\| (run|---|pusher-)"
