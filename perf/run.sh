#!/usr/bin/env bash
# Reproduces every figure in perf/README.md: builds release binaries, then for each scenario
# runs quotecast (pinned to core 0, one shard) and the Node `ws` peer (pinned to core 0)
# under the same loadtest (pinned to core 1), writing perf/results/*.json and *-latency.svg.
# Finally prints the summary table (perf/summarize.py). Bounded: every run stops by itself;
# only servers started here are stopped, by PID. Traffic goes to 127.0.0.1 only.
#
#   bash perf/run.sh            # everything (~15 minutes)
#   bash perf/run.sh broadcast  # one scenario group
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=perf/results
mkdir -p "$OUT"
cargo build --release -p quotecast -p loadtest >/dev/null
(cd perf/peers/ws-node && [ -d node_modules ] || npm ci --silent)
LT=./target/release/loadtest
QC=./target/release/quotecast
ONLY="${1:-all}"

# start_server NAME CMD... : starts CMD pinned to core 0, waits for "listening on", sets PORT/SPID
start_server() {
  local log="$OUT/.server-$1.log"; shift
  # warn: per-connection info lines would cost the server time in connect storms.
  RUST_LOG=warn taskset -c 0 "$@" >"$log.out" 2>"$log" &
  SPID=$!
  for _ in $(seq 100); do
    PORT=$(sed -n 's/^listening on 127.0.0.1://p' "$log.out" 2>/dev/null | head -1)
    [ -n "$PORT" ] && return 0
    sleep 0.1
  done
  echo "server $1 did not start" >&2; kill "$SPID"; exit 1
}
stop_server() { kill -TERM "$SPID" 2>/dev/null || true; wait "$SPID" 2>/dev/null || true; }

# lt NAME ARGS... : one loadtest run against the running server
lt() {
  local name="$1"; shift
  echo "== $name" >&2
  taskset -c 1 "$LT" run --url "ws://127.0.0.1:$PORT/ws" --server-pid "$SPID" --threads 1 \
    --name "$name" --out "$OUT/$name.json" "$@" | grep -E "delivered \(window\)|latency  |server rss|server cpu|loadtest cpu|all connected" >&2 || true
}

# both NAME ARGS... : the same run against quotecast (1 shard) and the ws peer
both() {
  local name="$1"; shift
  start_server qc "$QC" serve --listen 127.0.0.1:0 --anonymous-publish --shards 1 --max-queue-frames 65536 --max-queue-bytes 16777216
  lt "$name-quotecast" "$@"; stop_server
  start_server ws node perf/peers/ws-node/server.js serve --listen 127.0.0.1:0
  lt "$name-ws-node" "$@"; stop_server
}
qc_only() {
  local name="$1"; shift
  start_server qc "$QC" serve --listen 127.0.0.1:0 --anonymous-publish --shards 1 --max-queue-frames 65536 --max-queue-bytes 16777216
  lt "$name-quotecast" "$@"; stop_server
}

run() { [ "$ONLY" = all ] || [ "$ONLY" = "$1" ]; }

# qc_args NAME "SERVER ARGS" LOADTEST ARGS... : quotecast with extra server flags
qc_args() {
  local name="$1" sargs="$2"; shift 2
  # shellcheck disable=SC2086
  start_server qc "$QC" serve --listen 127.0.0.1:0 --anonymous-publish --shards 1 $sargs
  lt "$name-quotecast" "$@"; stop_server
}

if run broadcast; then
  # 1,000 clients on one stream channel; deliveries/s = 1000 x rate. The Node peer saturates
  # near 60k/s, so the side-by-side point is 50k/s; quotecast is then pushed to 10M/s.
  both broadcast-50k --scenario broadcast --rate 50 --batch 1 --duration 5 --warmup 2
  for r in 2000 6000 8000 10000; do
    qc_only "broadcast-$((r / 1000))M" --scenario broadcast --rate "$r" --batch 100 --duration 5 --warmup 2 --read-buf 65536
  done
fi
if run market; then
  # 10,000 clients, 1,000 channels, 10 subscriptions each, Zipf popularity (the hottest
  # channel has ~7,600 subscribers): deliveries/s ~= 100 x rate.
  both market-100k --scenario market --rate 1000 --batch 1 --duration 5 --warmup 2
  qc_only market-500k --scenario market --rate 5000 --batch 5 --duration 5 --warmup 2
  qc_only market-1500k --scenario market --rate 15000 --batch 50 --duration 5 --warmup 2
  qc_only market-uniform-100k --scenario market --popularity uniform --rate 1000 --batch 1 --duration 5 --warmup 2
fi
if run msgpack; then
  qc_only msgpack-500k --scenario msgpack --rate 5000 --batch 5 --duration 5 --warmup 2
fi
if run idle; then
  both idle --scenario idle --duration 3
fi
if run connect-storm; then
  both connect-storm --scenario connect-storm --duration 1
fi
if run slow-consumers; then
  # Market at 200k deliveries/s, without and with 10% of clients that stop reading. The
  # server's per-connection queue is set small (128 frames / 64 KiB) so that within the
  # run the stopped clients hit it and are closed with 4008, bounding server memory.
  qc_args slow-baseline "--max-queue-frames 128 --max-queue-bytes 65536" \
    --scenario slow-consumers --slow-share 0 --rate 2000 --batch 2 --duration 10 --warmup 2
  qc_args slow-consumers "--max-queue-frames 128 --max-queue-bytes 65536" \
    --scenario slow-consumers --rate 2000 --batch 2 --duration 10 --warmup 2
fi
if run shards; then
  # Thread-per-core scaling: the same broadcast with 1 and 2 shards (server unpinned; on a
  # 2-core machine the loadtest shares the cores, so this shows the trend, not a ceiling).
  for s in 1 2; do
    "$QC" serve --listen 127.0.0.1:0 --anonymous-publish --shards "$s" >"$OUT/.server-shards.log.out" 2>/dev/null &
    SPID=$!; sleep 0.5
    PORT=$(sed -n 's/^listening on 127.0.0.1://p' "$OUT/.server-shards.log.out" | head -1)
    "$LT" run --url "ws://127.0.0.1:$PORT/ws" --server-pid "$SPID" --threads 2 --name "shards-$s" \
      --out "$OUT/shards-$s.json" --scenario broadcast --rate 3000 --batch 100 --duration 5 --warmup 2 \
      | grep -E "delivered \(window\)|latency  |server cpu" >&2 || true
    stop_server
  done
fi
rm -f "$OUT"/.server-*
"$LT" plot "$OUT"/broadcast-50k-quotecast.json "$OUT"/broadcast-50k-ws-node.json --out "$OUT/broadcast-50k-compare.svg" 2>/dev/null || true
"$LT" plot "$OUT"/market-100k-quotecast.json "$OUT"/market-100k-ws-node.json --out "$OUT/market-100k-compare.svg" 2>/dev/null || true
python3 perf/summarize.py "$OUT"
