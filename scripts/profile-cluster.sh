#!/usr/bin/env bash
# Where a relayed request's CPU goes: `perf record` of a gateway and its one worker (separate
# processes over TCP, one runtime thread each, as scripts/bench-cluster.sh runs them) under the
# yardstick client's closed-loop echo, built with frame pointers so the call graphs unwind.
# Prints the top entries by self time and the kernel share of each process; the perf data and
# the full reports (self and inclusive) stay in OUT_DIR. docs/benchmarks.md ("The relay stream",
# "Profiling") has the results.
# Usage: [MORTAR_BIN=…] scripts/profile-cluster.sh [CONNS=100] [SECONDS=10] [TARGET=gw1w|dev]
#   (needs perf; MORTAR_BIN profiles that binary instead of building this tree's)
set -euo pipefail
cd "$(dirname "$0")/.."
conns=${1:-100} seconds=${2:-10} target=${3:-gw1w}
command -v perf >/dev/null || { echo "profile-cluster: perf is missing (apt-get install linux-perf)" >&2; exit 1; }
if [ -z "${MORTAR_BIN:-}" ]; then
  RUSTFLAGS="-C force-frame-pointers=yes" cargo build --profile profiling --locked --quiet -p mortar-cli
fi
shared=../shared/bench/wsbench
CARGO_TARGET_DIR=target/wsbench cargo build --release --quiet --manifest-path "$shared/Cargo.toml"
bin=${MORTAR_BIN:-target/profiling/mortar} ws=target/wsbench/release
out=target/profile/$(date +%Y%m%d-%H%M%S)-$target
mkdir -p "$out"
pids=()
cleanup() { for pid in "${pids[@]}"; do kill -9 "$pid" 2>/dev/null || true; done; }
trap cleanup EXIT
secret=profile-secret
wait_line() { for _ in $(seq 100); do grep -q "$2" "$1" 2>/dev/null && return; sleep 0.1; done; }

if [ "$target" = dev ]; then
  MORTAR_NODE__WORKER_THREADS=1 MORTAR_GATEWAY__RATE_PER_SEC=0 MORTAR_GATEWAY__MAX_CONNECTIONS_PER_IP=0 \
  MORTAR_ADMIN__ENABLED=false NO_COLOR=1 "$bin" dev --listen 127.0.0.1:0 >"$out/dev.out" 2>"$out/dev.err" &
  pids+=($!); procs=("dev=$!")
  wait_line "$out/dev.out" "listening on"
  url=$(sed -n 's/^mortar: gateway listening on //p' "$out/dev.out")
else
  MORTAR_NODE__ID=worker-1 MORTAR_CLUSTER__SECRET=$secret MORTAR_ADMIN__ENABLED=false MORTAR_NODE__WORKER_THREADS=1 NO_COLOR=1 \
    "$bin" worker --rpc-listen 127.0.0.1:7311 >"$out/worker.out" 2>"$out/worker.err" &
  pids+=($!); worker=$!
  wait_line "$out/worker.out" "listening on"
  MORTAR_NODE__ID=gateway-1 MORTAR_CLUSTER__SECRET=$secret MORTAR_REGISTRY__NODES='[{id="worker-1",addr="127.0.0.1:7311"}]' \
  MORTAR_GATEWAY__RATE_PER_SEC=0 MORTAR_GATEWAY__MAX_CONNECTIONS_PER_IP=0 MORTAR_GATEWAY__RPC_LISTEN=127.0.0.1:0 \
  MORTAR_ADMIN__ENABLED=false MORTAR_NODE__WORKER_THREADS=1 NO_COLOR=1 \
    "$bin" gateway --listen 127.0.0.1:0 >"$out/gateway.out" 2>"$out/gateway.err" &
  pids+=($!); gateway=$!
  wait_line "$out/gateway.out" "listening on"
  wait_line "$out/gateway.err" "worker up"
  url=$(sed -n 's/^mortar: gateway listening on //p' "$out/gateway.out")
  procs=("gateway=$gateway" "worker=$worker")
fi
"$ws/client" --conns "$conns" --warmup 2 --duration $((seconds + 3)) --proto mortar --url "$url" --threads 1 \
  | sed -n 's/^RESULT /  /p' | cut -c1-150 &
client=$!
sleep 3
recorders=()
for proc in "${procs[@]}"; do
  perf record -F 999 -g -p "${proc#*=}" -o "$out/${proc%%=*}.perf" -- sleep "$seconds" >/dev/null 2>&1 &
  recorders+=($!)
done
wait "${recorders[@]}" "$client"
for proc in "${procs[@]}"; do
  name=${proc%%=*}
  perf report -i "$out/$name.perf" --no-children --percent-limit 0.5 --stdio 2>/dev/null >"$out/$name.self.txt"
  perf report -i "$out/$name.perf" --children --percent-limit 2 --stdio -g none 2>/dev/null >"$out/$name.children.txt"
  echo "== $name: self time (top 25)"
  grep -E '^ +[0-9.]+%' "$out/$name.self.txt" | head -25
  echo "== $name: kernel share"
  perf report -i "$out/$name.perf" --no-children --sort dso --stdio 2>/dev/null | grep -E '^ +[0-9.]+%' | head -5
done
echo "perf data and reports: $out"
