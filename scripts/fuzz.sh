#!/usr/bin/env bash
# Runs every fuzz target (fuzz/fuzz_targets) for FUZZ_SECONDS each (default 20) and fails
# if any finds a crash. cargo-fuzz needs nightly-only compiler flags; the stable toolchain
# accepts them with RUSTC_BOOTSTRAP=1, which is the only toolchain this project's machines
# have. Installs cargo-fuzz when missing.
set -euo pipefail
cd "$(dirname "$0")/.."
SECS="${FUZZ_SECONDS:-20}"
command -v cargo-fuzz >/dev/null 2>&1 || cargo install cargo-fuzz --locked
export RUSTC_BOOTSTRAP=1
cd fuzz
cargo fuzz build -O
for t in $(cargo fuzz list); do
  echo "== fuzz $t for ${SECS}s"
  mkdir -p "corpus/$t"
  cargo fuzz run -O "$t" "corpus/$t" -- -max_total_time="$SECS" -rss_limit_mb=2048 2>&1 | grep -E "^Done|ERROR|panicked|SUMMARY" || true
  if ls "artifacts/$t"/crash-* >/dev/null 2>&1; then
    echo "fuzz target $t found a crash: fuzz/artifacts/$t" >&2
    exit 1
  fi
done
