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
  log="$(mktemp)"
  # libFuzzer exits non-zero on a crash, leak, timeout or out-of-memory, and cargo fuzz on a
  # failed build: any of them fails the run.
  if ! cargo fuzz run -O "$t" "corpus/$t" -- -max_total_time="$SECS" -rss_limit_mb=2048 >"$log" 2>&1; then
    grep -vE "^#[0-9]" "$log" | tail -40 >&2
    echo "fuzz target $t failed (see above; inputs in fuzz/artifacts/$t)" >&2
    rm -f "$log"
    exit 1
  fi
  grep -E "^Done" "$log" || { echo "fuzz target $t did not run" >&2; rm -f "$log"; exit 1; }
  rm -f "$log"
done
