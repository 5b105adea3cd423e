#!/usr/bin/env bash
# Instructions per request, counted by valgrind's callgrind: a measure of the CPU a request costs in
# user space that does not move with the machine's load, for changes too small for the timed
# benchmarks to see (this machine's runs vary by 10-15%). Each server runs under callgrind on one
# runtime thread while `mortar bot` sends REQUESTS echo requests, open loop (100 clients, 20 per
# second each), after a warm-up whose instructions are not counted:
#   bare      the yardstick: ../shared/bench/wsbench's tokio-tungstenite echo server;
#   gateway   a gateway relaying to one worker over TCP (the gateway and the worker counted apart);
#   dev       `mortar dev` (the handler runs on the session's task).
# The kernel's share (system calls, loopback TCP) is not counted: see the timed rows for it.
# Usage: [MORTAR_BIN=…] scripts/bench-instructions.sh [TARGETS="bare gateway dev"] [SECONDS=10]
#   (needs valgrind: apt-get install valgrind)
set -euo pipefail
cd "$(dirname "$0")/.."
targets=${1:-bare gateway dev} seconds=${2:-10}
command -v valgrind >/dev/null || { echo "bench-instructions: valgrind is missing (apt-get install valgrind)" >&2; exit 1; }
shared=../shared/bench/wsbench
[ -d "$shared" ] || { echo "bench-instructions: $shared is missing (the yardstick server)" >&2; exit 1; }
CARGO_TARGET_DIR=target/wsbench cargo build --release --quiet --manifest-path "$shared/Cargo.toml"
if [ -z "${MORTAR_BIN:-}" ]; then
  cargo build --release --locked --quiet -p mortar-cli
fi
bin=${MORTAR_BIN:-target/release/mortar} bot=target/release/mortar ws=target/wsbench/release
[ -x "$bot" ] || cargo build --release --locked --quiet -p mortar-cli
out=target/bench/instructions-$(date +%Y%m%d-%H%M%S)
mkdir -p "$out"
pids=()
cleanup() { for pid in "${pids[@]}"; do kill -9 "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; done; }
trap cleanup EXIT
node=(MORTAR_GATEWAY__RATE_PER_SEC=0 MORTAR_GATEWAY__MAX_CONNECTIONS_PER_IP=0 MORTAR_ADMIN__ENABLED=false
  MORTAR_NODE__WORKER_THREADS=1 NO_COLOR=1)
secret=bench-instructions-secret
wait_line() { for _ in $(seq 600); do grep -q "$2" "$1" 2>/dev/null && return; sleep 0.1; done; }

# Counts what the processes named NAME=PID spend while the bot sends its requests to URL.
count() {
  local url=$1; shift
  "$bot" bot --url "$url" --clients 100 --rate 5 --duration 3s --threads 1 --quiet >/dev/null
  for proc in "$@"; do callgrind_control -z "${proc#*=}" >/dev/null 2>&1; done
  "$bot" bot --url "$url" --clients 100 --rate 20 --duration "${seconds}s" --threads 1 --quiet --json "$out/bot.json" >/dev/null
  for proc in "$@"; do callgrind_control -d "${proc#*=}" >/dev/null 2>&1; done
  sleep 1
  local ok
  ok=$(python3 -c "import json,sys; print(json.load(open(sys.argv[1]))['ok'])" "$out/bot.json")
  for proc in "$@"; do
    local name=${proc%%=*} total
    total=$(callgrind_annotate "$out/$name.callgrind".* 2>/dev/null | sed -n 's/^ *\([0-9,]*\) .*PROGRAM TOTALS.*/\1/p' | tr -d ,)
    printf '  %-8s %8d instructions per request (%d requests)\n' "$name" $((total / ok)) "$ok"
  done
}

for target in $targets; do
  echo "== $target"
  case $target in
    bare)
      valgrind --tool=callgrind --callgrind-out-file="$out/bare.callgrind" "$ws/server" --addr 127.0.0.1:9671 --cfg small --threads 1 >"$out/bare.log" 2>&1 &
      pids+=($!); bare=$!
      for _ in $(seq 100); do (exec 3<>/dev/tcp/127.0.0.1/9671) 2>/dev/null && break; sleep 0.1; done
      count ws://127.0.0.1:9671/ "bare=$bare"
      ;;
    gateway)
      env "${node[@]}" MORTAR_NODE__ID=worker-1 MORTAR_CLUSTER__SECRET=$secret \
        valgrind --tool=callgrind --callgrind-out-file="$out/worker.callgrind" \
        "$bin" worker --rpc-listen 127.0.0.1:7371 --data "$out/worker-data" >"$out/worker.out" 2>"$out/worker.err" &
      pids+=($!); worker=$!
      wait_line "$out/worker.out" "listening on"
      env "${node[@]}" MORTAR_NODE__ID=gateway-1 MORTAR_CLUSTER__SECRET=$secret \
        MORTAR_REGISTRY__NODES='[{id="worker-1",addr="127.0.0.1:7371"}]' MORTAR_GATEWAY__RPC_LISTEN=127.0.0.1:0 \
        valgrind --tool=callgrind --callgrind-out-file="$out/gateway.callgrind" \
        "$bin" gateway --listen 127.0.0.1:0 >"$out/gateway.out" 2>"$out/gateway.err" &
      pids+=($!); gateway=$!
      wait_line "$out/gateway.out" "listening on"
      wait_line "$out/gateway.err" "worker up"
      count "$(sed -n 's/^mortar: gateway listening on //p' "$out/gateway.out")" "gateway=$gateway" "worker=$worker"
      ;;
    dev)
      env "${node[@]}" valgrind --tool=callgrind --callgrind-out-file="$out/dev.callgrind" \
        "$bin" dev --listen 127.0.0.1:0 --data "$out/dev-data" >"$out/dev.out" 2>"$out/dev.err" &
      pids+=($!); dev=$!
      wait_line "$out/dev.out" "listening on"
      count "$(sed -n 's/^mortar: gateway listening on //p' "$out/dev.out")" "dev=$dev"
      ;;
    *) echo "bench-instructions: unknown target $target (bare, gateway, dev)" >&2; exit 1 ;;
  esac
  cleanup; pids=()
done
echo "callgrind profiles (callgrind_annotate FILE): $out"
