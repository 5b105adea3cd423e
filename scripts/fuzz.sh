#!/usr/bin/env bash
# Fuzzes the gateway's frame check and the worker's dispatch for a bounded time each.
# Usage: scripts/fuzz.sh [seconds per target, default 60]
#
# cargo-fuzz needs unstable compiler flags (sanitizers); this machine has only a stable toolchain,
# so RUSTC_BOOTSTRAP=1 lets stable rustc accept them. A crash stops the run with a non-zero exit
# and leaves the input in fuzz/artifacts/<target>/: copy it into fuzz/regressions/<target>/ so
# tests/tests/fuzz_regressions.rs replays it in every test run, then fix the bug.
set -euo pipefail
cd "$(dirname "$0")/../fuzz"
seconds=${1:-60}
command -v cargo-fuzz >/dev/null || cargo install --locked cargo-fuzz
export RUSTC_BOOTSTRAP=1
for target in envelope dispatch; do
  mkdir -p "corpus/$target"
  echo "fuzz: $target for ${seconds}s"
  # Seed with the regression inputs, so the fuzzer starts from known edge cases.
  log="target/fuzz-$target.log"
  mkdir -p target
  if ! cargo fuzz run -O "$target" "corpus/$target" "regressions/$target" -- \
      -max_total_time="$seconds" -max_len=4096 >"$log" 2>&1; then
    tail -n 40 "$log"
    echo "fuzz: $target crashed; the input is in fuzz/artifacts/$target/ (full log: fuzz/$log)" >&2
    exit 1
  fi
  grep -E "^Done " "$log"
done
echo "fuzz: no crashes"
