# Shared by perf/run.sh and perf/ab.sh (sourced; expects $OUT).

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
