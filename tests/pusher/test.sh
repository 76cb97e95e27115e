#!/usr/bin/env bash
# quotecast's Pusher compatibility with the real libraries (called from scripts/test.sh):
# pusher-js, laravel-echo and the official `pusher` server SDK from npm (pinned in
# package-lock.json), the official `pusher` SDK from PyPI (pinned in requirements.txt),
# headless Chromium for Laravel Echo in a browser. Needs the release server.
set -euo pipefail
cd "$(dirname "$0")"
ROOT="$(cd ../.. && pwd)"

echo "== pusher: npm ci"
npm ci --no-audit --no-fund

if ! command -v chromium >/dev/null 2>&1; then
  echo "== pusher: installing chromium"
  apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y chromium
fi

echo "== pusher: the release server (a no-op when up to date)"
(cd "$ROOT" && cargo build --release --locked -p quotecast)

echo "== pusher: PyPI SDK in a virtualenv"
VENV="$ROOT/target/pusher-venv"
if [ ! -x "$VENV/bin/python" ]; then
  python3 -m venv "$VENV" || {
    apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y python3-venv
    python3 -m venv "$VENV"
  }
fi
"$VENV/bin/pip" install --quiet --disable-pip-version-check -r requirements.txt
export PUSHER_PYTHON="$VENV/bin/python"

echo "== pusher: pusher-js, the pusher SDKs (npm, PyPI), laravel-echo in headless chromium"
timeout 600 node --test --test-force-exit --test-concurrency=1 .
