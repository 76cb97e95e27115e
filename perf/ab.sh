#!/usr/bin/env bash
# Before/after in one run: the same loadtest scenarios against two quotecast binaries,
# alternating A, B, A, B so that machine noise falls on both. Server pinned to core 0 (one
# shard), loadtest to core 1, as perf/run.sh does. Traffic to 127.0.0.1 only; every server
# is started here and stopped by PID; every run stops by itself.
#
#   bash perf/ab.sh OLD_BINARY NEW_BINARY [REPS] [all|broadcast2M|broadcast6M|market|idle|connect-storm|cluster]
#
# `cluster` (not part of `all`): cluster of one node + its own fresh redis-server, both
# pinned to core 0, the publish-bound scenarios of `perf/run.sh cluster` (1,000 stream
# channels, one subscriber each); prints node and Redis CPU over the whole loadtest run.
#
# Writes perf/results/ab-<scenario>-<a|b>-<rep>.json and prints one line per run.
set -euo pipefail
cd "$(dirname "$0")/.."
A="$1"; B="$2"; REPS="${3:-2}"
OUT=perf/results
mkdir -p "$OUT"
cargo build --release --locked -p loadtest >/dev/null
LT=./target/release/loadtest

. perf/lib.sh

run() {
  local name="$1"; shift
  for rep in $(seq "$REPS"); do
    for side in a b; do
      local bin="$A"; [ "$side" = b ] && bin="$B"
      start_server ab "$bin" serve --listen 127.0.0.1:0 --anonymous-publish --shards 1
      echo "== $name $side $rep"
      taskset -c 1 "$LT" run --url "ws://127.0.0.1:$PORT/ws" --server-pid "$SPID" --threads 1 \
        --name "ab-$name-$side-$rep" --out "$OUT/ab-$name-$side-$rep.json" "$@" \
        | grep -E "delivered \(window\)|latency  |server rss|server cpu|all connected" || true
      stop_server
    done
  done
}

# cluster_ab NAME LOADTEST ARGS... : the c1 set-up of perf/run.sh (node + Redis on core 0)
cluster_ab() {
  local name="$1"; shift
  command -v redis-server >/dev/null || { echo "cluster: redis-server not found" >&2; exit 1; }
  ticks() { awk '{ sub(/^.*[)] /, ""); print $12 + $13 }' "/proc/$1/stat" 2>/dev/null || echo 0; }
  for rep in $(seq "$REPS"); do
    for side in a b; do
      local bin="$A"; [ "$side" = b ] && bin="$B"
      local rport
      rport=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
      taskset -c 0 redis-server --port "$rport" --bind 127.0.0.1 --save "" --appendonly no \
        >"$OUT/.server-redis.log" 2>&1 &
      local rpid=$!
      for _ in $(seq 50); do [ "$(redis-cli -p "$rport" ping 2>/dev/null)" = PONG ] && break; sleep 0.1; done
      start_server ab "$bin" serve --listen 127.0.0.1:0 --anonymous-publish --shards 1 \
        --max-queue-frames 65536 --max-queue-bytes 16777216 --redis "redis://127.0.0.1:$rport" --node-id a
      for _ in $(seq 100); do curl -s "http://127.0.0.1:$PORT/health" | grep -q '"up"' && break; sleep 0.1; done
      local n0 r0 n1 r1 t0 t1
      n0=$(ticks "$SPID"); r0=$(ticks "$rpid"); t0=$(date +%s.%N)
      echo "== $name $side $rep"
      taskset -c 1 "$LT" run --url "ws://127.0.0.1:$PORT/ws" --server-pid "$SPID" --threads 1 \
        --name "ab-$name-$side-$rep" --out "$OUT/ab-$name-$side-$rep.json" "$@" \
        | grep -E "delivered \(window\)|latency  |errors" || true
      n1=$(ticks "$SPID"); r1=$(ticks "$rpid"); t1=$(date +%s.%N)
      echo "   cpu over the run ($(echo "$t1 - $t0" | bc | cut -c1-5) s): node $(( n1 - n0 )) ticks, redis $(( r1 - r0 )) ticks (CLK_TCK $(getconf CLK_TCK))"
      stop_server
      kill -TERM "$rpid" 2>/dev/null || true; wait "$rpid" 2>/dev/null || true
    done
  done
  rm -f "$OUT/.server-redis.log"
}

ONLY="${4:-all}"
want() { [ "$ONLY" = all ] || [ "$ONLY" = "$1" ]; }
want broadcast2M && run broadcast-2M --scenario broadcast --rate 2000 --batch 100 --duration 5 --warmup 2 --read-buf 65536
want broadcast6M && run broadcast-6M --scenario broadcast --rate 6000 --batch 100 --duration 5 --warmup 2 --read-buf 65536
want market && run market-500k --scenario market --rate 5000 --batch 5 --duration 5 --warmup 2
want idle && run idle --scenario idle --duration 3
want connect-storm && run connect-storm --scenario connect-storm --duration 1
if [ "$ONLY" = cluster ]; then
  PUB=(--clients 1000 --channels 1000 --subs 1 --popularity spread --duration 5 --warmup 2)
  cluster_ab pub-35k-b1 "${PUB[@]}" --rate 35000 --batch 1
  cluster_ab pub-50k-b1 "${PUB[@]}" --rate 50000 --batch 1
  cluster_ab pub-50k-b50 "${PUB[@]}" --rate 50000 --batch 50
fi
