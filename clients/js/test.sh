#!/usr/bin/env bash
# The TypeScript client's checks, for CI (called from scripts/test.sh): install the locked
# dev dependencies, make sure Chromium and the release server exist, type-check and build,
# check that the committed board bundle (web/board/quotecast.js) matches the source, then
# run the unit + integration tests against a real server and the browser test of the board.
set -euo pipefail
cd "$(dirname "$0")"
ROOT="$(cd ../.. && pwd)"

echo "== client: npm ci"
npm ci --no-audit --no-fund

if ! command -v chromium >/dev/null 2>&1; then
  echo "== client: installing chromium"
  apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y chromium
fi

if [ ! -x "$ROOT/target/release/quotecast" ]; then
  echo "== client: building the release server"
  (cd "$ROOT" && cargo build --release --locked -p quotecast)
fi

echo "== client: type-check and build"
npm run --silent build

echo "== client: committed board bundle is up to date"
npm run --silent check:board

echo "== client: unit and integration tests (real server)"
timeout 300 node --experimental-websocket --test --test-concurrency=1 test/unit/ test/integration/

echo "== client: browser test of the live board (headless chromium)"
timeout 300 node --test test/browser/
