#!/usr/bin/env bash
# Before/after in one run: the same loadtest scenarios against two quotecast binaries,
# alternating A, B, A, B so that machine noise falls on both. Server pinned to core 0 (one
# shard), loadtest to core 1, as perf/run.sh does. Traffic to 127.0.0.1 only; every server
# is started here and stopped by PID; every run stops by itself.
#
#   bash perf/ab.sh OLD_BINARY NEW_BINARY [REPS] [all|broadcast2M|broadcast6M|market|idle|connect-storm]
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

ONLY="${4:-all}"
want() { [ "$ONLY" = all ] || [ "$ONLY" = "$1" ]; }
want broadcast2M && run broadcast-2M --scenario broadcast --rate 2000 --batch 100 --duration 5 --warmup 2 --read-buf 65536
want broadcast6M && run broadcast-6M --scenario broadcast --rate 6000 --batch 100 --duration 5 --warmup 2 --read-buf 65536
want market && run market-500k --scenario market --rate 5000 --batch 5 --duration 5 --warmup 2
want idle && run idle --scenario idle --duration 3
want connect-storm && run connect-storm --scenario connect-storm --duration 1
