#!/usr/bin/env bash
# The TypeScript client's checks, for CI (called from scripts/test.sh): install the locked
# dev dependencies, make sure Chromium and the release server exist, type-check and build,
# check that the committed board bundle (web/board/quotecast.js) matches the source and what
# `npm pack` ships, run every documentation example (scripts/doc-examples.mjs), then the unit
# + integration tests against a real server, the app fixture (a React app that installs the
# packed client as docs/client.md says) and the browser tests of the board.
set -euo pipefail
cd "$(dirname "$0")"
ROOT="$(cd ../.. && pwd)"

echo "== client: npm ci"
npm ci --no-audit --no-fund

if ! command -v chromium >/dev/null 2>&1; then
  echo "== client: installing chromium"
  apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y chromium
fi

# QUOTECAST_BIN (e.g. a debug build while iterating) replaces the release server everywhere.
if [ -z "${QUOTECAST_BIN:-}" ] && [ ! -x "$ROOT/target/release/quotecast" ]; then
  echo "== client: building the release server"
  (cd "$ROOT" && cargo build --release --locked -p quotecast)
fi

echo "== client: type-check and build"
npm run --silent build

echo "== client: committed board bundle is up to date"
npm run --silent check:board

echo "== client: npm pack content (exports targets, README, LICENSE)"
npm run --silent check:pack

echo "== docs: every code example of README.md, clients/js/README.md and docs/*.md (real servers)"
# Python examples run in a venv with the pinned PyJWT.
VENV="$ROOT/target/doc-examples-venv"
if [ ! -x "$VENV/bin/python" ]; then
  if ! python3 -m venv "$VENV" >/dev/null 2>&1; then
    rm -rf "$VENV"
    apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y python3 python3-venv
    python3 -m venv "$VENV"
  fi
fi
"$VENV/bin/pip" install --quiet --disable-pip-version-check -r "$ROOT/scripts/doc-examples-requirements.txt"
timeout 600 node --experimental-websocket "$ROOT/scripts/doc-examples.mjs"

echo "== client: unit and integration tests (real server)"
timeout 300 node --experimental-websocket --test --test-concurrency=1 test/unit/ test/integration/

echo "== client: browser tests (headless chromium): the board, hostile payloads and viewports, the React app fixture"
timeout 900 node --test --test-concurrency=1 test/browser/
