#!/usr/bin/env bash
# Runs every check and test of the project, in the order CI runs them. This is README's
# test command; .ci/run installs what it needs and then calls it.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"

echo "== format"
cargo fmt --all --check

echo "== clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings

echo "== layering: the sans-IO core builds alone, without tokio's networking or runtime"
cargo check -p quotecast-engine --locked
if cargo tree -p quotecast-engine --locked -e normal -f '{p} {f}' | grep -E 'tokio v[^ ]+ .*(net|rt)'; then
  echo "quotecast-engine must not depend on tokio's networking or runtime" >&2
  exit 1
fi
# (It cannot import the layers above it: they are another crate, which depends on it.)

echo "== unit and integration tests"
# The cluster tests start their own redis-server (Debian's package) on a free port.
if ! command -v redis-server >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ]; then
    apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y redis-server
  else
    sudo apt-get update && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y redis-server
  fi
fi
# (Any system-wide Redis the package starts is not used: each test runs its own.)
# The backend-hook tests start a small standard-library Python backend (tests/backend/).
if ! command -v python3 >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ]; then
    apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y python3
  else
    sudo apt-get update && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y python3
  fi
fi
cargo test --workspace --locked

echo "== fuzz every untrusted-input parser (FUZZ_SECONDS each)"
bash scripts/fuzz.sh

echo "== benches (each run once, as a test)"
cargo bench --locked --bench core -- --test

echo "== loadtest smoke: real server, real clients, every frame delivered in order"
cargo build --release --locked -p quotecast -p loadtest
./target/release/loadtest run --scenario smoke --spawn ./target/release/quotecast --spawn-arg=--anonymous-publish
echo "== loadtest smoke, Pusher dialect: /app/{key} subscribers, WebSocket publisher (~6 s)"
PUSHER_APP_SECRET=bench-secret-0123456789 ./target/release/loadtest run --scenario smoke --dialect pusher \
  --spawn ./target/release/quotecast --spawn-arg=--anonymous-publish --spawn-arg=--config --spawn-arg=perf/pusher.toml

echo "== TypeScript client and the live board (node tests against a real server, headless Chromium)"
bash clients/js/test.sh

echo "== Pusher protocol: pusher-js, laravel-echo (headless chromium), the pusher SDKs (npm, PyPI)"
bash tests/pusher/test.sh
