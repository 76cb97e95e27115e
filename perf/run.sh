#!/usr/bin/env bash
# Reproduces every figure in perf/README.md: builds release binaries, then for each scenario
# runs quotecast (pinned to core 0, one shard) and the Node `ws` peer (pinned to core 0)
# under the same loadtest (pinned to core 1), writing perf/results/*.json and *-latency.svg.
# Finally prints the summary table (perf/summarize.py). Bounded: every run stops by itself;
# only servers started here are stopped, by PID. Traffic goes to 127.0.0.1 only.
#
#   bash perf/run.sh            # everything (~22 minutes)
#   bash perf/run.sh broadcast  # one scenario group
#   bash perf/run.sh cluster    # cluster mode (Redis) vs single node (~7 minutes)
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=perf/results
mkdir -p "$OUT"
cargo build --release -p quotecast -p loadtest >/dev/null
(cd perf/peers/ws-node && [ -d node_modules ] || npm ci --silent)
LT=./target/release/loadtest
QC=./target/release/quotecast
ONLY="${1:-all}"

. perf/lib.sh

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
if run slow-uniform; then
  # The same question without Zipf's hot channel and with the core not saturated, so the
  # others' latency reflects the server rather than queueing: 2,000 clients, 200 channels,
  # 10 subscriptions each (uniform), 1 KB events, 500 events/s = 50k deliveries/s. Five
  # alternating pairs, because run-to-run noise here is larger than the effect; then one
  # overloaded pair (2,000 events/s) in which the stopped clients' backlog outgrows the
  # kernel buffers and they are closed (4008), to show server memory bounded.
  su=(--scenario slow-consumers --clients 2000 --channels 200 --subs 10 --popularity uniform
      --batch 1 --payload-bytes 1000 --warmup 2)
  for i in 1 2 3 4 5; do
    qc_args "slowu-baseline-$i" "--max-queue-frames 128 --max-queue-bytes 65536" "${su[@]}" --slow-share 0 --rate 500 --duration 6
    qc_args "slowu-slow-$i" "--max-queue-frames 128 --max-queue-bytes 65536" "${su[@]}" --slow-share 0.1 --rate 500 --duration 6
  done
  # Overloaded (2,000 events/s = 200k deliveries/s, core ~90 % busy): three alternating
  # pairs with the default TCP_NOTSENT_LOWAT (16 KiB), then one pair without it
  # (--socket-notsent-lowat 0), where each stopped client fills a whole send buffer in the
  # kernel and the others' latency suffers while it does (perf/README.md, slow consumers).
  for i in 1 2 3; do
    qc_args "slowu-overload-baseline-$i" "--max-queue-frames 128 --max-queue-bytes 65536" "${su[@]}" --slow-share 0 --rate 2000 --duration 8
    qc_args "slowu-overload-slow-$i" "--max-queue-frames 128 --max-queue-bytes 65536" "${su[@]}" --slow-share 0.1 --rate 2000 --duration 8
  done
  nolw="--max-queue-frames 128 --max-queue-bytes 65536 --socket-notsent-lowat 0"
  qc_args slowu-overload-nolowat-baseline "$nolw" "${su[@]}" --slow-share 0 --rate 2000 --duration 8
  qc_args slowu-overload-nolowat-slow "$nolw" "${su[@]}" --slow-share 0.1 --rate 2000 --duration 8
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
if run cluster; then
  # The same loadtest against (a) a single node, (b) a cluster of one node + Redis, (c) a
  # cluster of two nodes with the subscribers on node A and the publisher on node B
  # (every event crosses Redis pub/sub to another node). Every server process, Redis
  # included, is pinned to core 0: a per-core comparison in which the cluster pays for
  # Redis on the same core. Each run gets a fresh Redis (started here, stopped by PID).
  # CPU of every server process (nodes, Redis) is read from /proc/PID/stat around the
  # loadtest and written into the JSON ("cluster" key) with Redis's commandstats.
  command -v redis-server >/dev/null || { echo "cluster: redis-server not found" >&2; exit 1; }
  # If anything fails midway, stop whatever this script still has running (its own
  # background jobs, by PID: Redis, nodes, the CPU sampler).
  trap 'for p in $(jobs -p); do kill "$p" 2>/dev/null || true; done' EXIT
  QC_ARGS=(--anonymous-publish --shards 1 --max-queue-frames 65536 --max-queue-bytes 16777216)
  free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
  ticks() { awk '{ sub(/^.*[)] /, ""); print $12 + $13 }' "/proc/$1/stat" 2>/dev/null || echo 0; }
  start_redis() {
    RPORT=$(free_port)
    taskset -c 0 redis-server --port "$RPORT" --bind 127.0.0.1 --save "" --appendonly no \
      >"$OUT/.server-redis.log" 2>&1 &
    RPID=$!
    for _ in $(seq 50); do
      [ "$(redis-cli -p "$RPORT" ping 2>/dev/null)" = PONG ] && return 0
      sleep 0.1
    done
    echo "redis-server did not start" >&2; kill "$RPID"; exit 1
  }
  stop_redis() { kill -TERM "$RPID" 2>/dev/null || true; wait "$RPID" 2>/dev/null || true; }
  # cluster_run MODE NAME LOADTEST ARGS... ; MODE: single | c1 | c2
  cluster_run() {
    local mode="$1" name="$2"; shift 2
    local pids=() roles=() url pub
    if [ "$mode" = single ]; then
      start_server qc "$QC" serve --listen 127.0.0.1:0 "${QC_ARGS[@]}"
      APID=$SPID; APORT=$PORT; url="ws://127.0.0.1:$PORT/ws"; pub="$url"
      pids=("$APID"); roles=(node_a)
    else
      start_redis
      start_server qca "$QC" serve --listen 127.0.0.1:0 "${QC_ARGS[@]}" \
        --redis "redis://127.0.0.1:$RPORT" --node-id a
      APID=$SPID; APORT=$PORT; url="ws://127.0.0.1:$PORT/ws"; pub="$url"
      pids=("$APID" "$RPID"); roles=(node_a redis)
      if [ "$mode" = c2 ]; then
        start_server qcb "$QC" serve --listen 127.0.0.1:0 "${QC_ARGS[@]}" \
          --redis "redis://127.0.0.1:$RPORT" --node-id b
        BPID=$SPID; BPORT=$PORT; pub="ws://127.0.0.1:$PORT/ws"
        pids+=("$BPID"); roles+=(node_b)
      fi
    fi
    local t0=() i
    for i in "${!pids[@]}"; do t0[i]=$(ticks "${pids[i]}"); done
    # CPU ticks of every server process 4 times a second (sampler on the loadtest's core),
    # so the JSON gets each one's CPU over exactly the measured window.
    local samples="$OUT/.server-cpu.samples"
    echo "# ${roles[*]}" >"$samples"
    ( while :; do
        line=$(date +%s.%N)
        for i in "${!pids[@]}"; do line+=" $(ticks "${pids[i]}")"; done
        echo "$line"; sleep 0.25
      done >>"$samples" ) &
    local sampler=$!
    taskset -p -c 1 "$sampler" >/dev/null
    local w0; w0=$(date +%s.%N)
    echo "== $name ($mode)" >&2
    taskset -c 1 "$LT" run --url "$url" --publish-url "$pub" --server-pid "$APID" --threads 1 \
      --name "$name" --out "$OUT/$name.json" "$@" \
      | grep -E "delivered \(window\)|latency  |server cpu|loadtest cpu|errors" >&2 || true
    local w1; w1=$(date +%s.%N)
    kill "$sampler" 2>/dev/null || true; wait "$sampler" 2>/dev/null || true
    local last; last=$(date +%s.%N)
    for i in "${!pids[@]}"; do last+=" $(ticks "${pids[i]}")"; done
    echo "$last" >>"$samples"
    local cpu=()
    for i in "${!pids[@]}"; do cpu+=("${roles[i]}=$(( $(ticks "${pids[i]}") - t0[i] ))"); done
    local info="" extra=()
    if [ "$mode" != single ]; then
      info="$OUT/.server-redis.info"
      redis-cli -p "$RPORT" info all >"$info" 2>/dev/null || true
      curl -s "http://127.0.0.1:$APORT/metrics" >"$OUT/.server-a.metrics" 2>/dev/null || true
      extra+=(--metrics "node_a=$OUT/.server-a.metrics")
      if [ "$mode" = c2 ]; then
        curl -s "http://127.0.0.1:$BPORT/metrics" >"$OUT/.server-b.metrics" 2>/dev/null || true
        extra+=(--metrics "node_b=$OUT/.server-b.metrics")
      fi
    fi
    if [ "$mode" = c2 ]; then SPID=$BPID; stop_server; fi
    SPID=$APID; stop_server
    if [ "$mode" != single ]; then stop_redis; fi
    if [ -f "$OUT/$name.json" ]; then
      python3 perf/summarize.py --annotate "$OUT/$name.json" --mode "$mode" \
        --wall "$(echo "$w1 - $w0" | bc)" --clk "$(getconf CLK_TCK)" --samples "$samples" \
        ${info:+--redis-info "$info"} ${extra[@]+"${extra[@]}"} "${cpu[@]}"
    fi
  }
  cluster_all() {
    local name="$1"; shift
    for mode in single c1 c2; do cluster_run "$mode" "cluster-$name-$mode" "$@"; done
  }
  # (i) Publish-bound: 1,000 clients each on its own channel (1,000 stream channels
  # bench.*, matched by the catch-all "*": stream, history 100; `--popularity spread` gives
  # client i channel i), so every event is one Redis sequencing step + one PUBLISH + one
  # delivery. Unbatched and 50-event publish batches.
  PUB=(--clients 1000 --channels 1000 --subs 1 --popularity spread --duration 5 --warmup 2)
  for b in 1 50; do
    for r in 10000 20000 35000 50000 100000 150000; do
      cluster_all "pub-$((r / 1000))k-b$b" "${PUB[@]}" --rate "$r" --batch "$b"
    done
  done
  # (ii) Fan-out: 1,000 clients on one channel; deliveries/s = 1000 x rate.
  for r in 1000 5000; do
    cluster_all "fanout-$((r / 1000))M" --scenario broadcast --rate "$r" --batch 50 \
      --duration 5 --warmup 2 --read-buf 65536
  done
  # Latency curves of the three set-ups overlaid, where all three still keep up.
  for g in pub-35k-b1 pub-35k-b50 fanout-1M fanout-5M; do
    "$LT" plot "$OUT/cluster-$g-single.json" "$OUT/cluster-$g-c1.json" "$OUT/cluster-$g-c2.json" \
      --out "$OUT/cluster-$g-compare.svg" >/dev/null 2>&1 || true
  done
fi
rm -f "$OUT"/.server-*
"$LT" plot "$OUT"/broadcast-50k-quotecast.json "$OUT"/broadcast-50k-ws-node.json --out "$OUT/broadcast-50k-compare.svg" 2>/dev/null || true
"$LT" plot "$OUT"/market-100k-quotecast.json "$OUT"/market-100k-ws-node.json --out "$OUT/market-100k-compare.svg" 2>/dev/null || true
python3 perf/summarize.py "$OUT"
