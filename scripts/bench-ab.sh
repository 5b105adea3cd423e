#!/usr/bin/env bash
# Two builds of mortar side by side, for a change that must not slow the request path: the bare
# tokio-tungstenite echo server of ../shared/bench/wsbench (the yardstick), then `mortar dev` and a
# gateway + 1 worker over TCP of build A and of build B, all driven by wsbench's client (echo,
# closed loop, 100 connections, --threads 1) and interleaved round by round (which build goes first
# alternates), so both builds see the same machine. Prints each row's median req/s and p99, and B ÷ A.
# Usage: scripts/bench-ab.sh A_BIN B_BIN [SECONDS=10] [RUNS=3] [CONNS=100]
#   e.g. git worktree add /tmp/before REV && (cd /tmp/before && cargo build --release -p mortar-cli)
#        scripts/bench-ab.sh /tmp/before/target/release/mortar target/release/mortar
set -euo pipefail
cd "$(dirname "$0")/.."
a=$1 b=$2 seconds=${3:-10} runs=${4:-3} conns=${5:-100}
out=target/bench/ab-$(date +%Y%m%d-%H%M%S)
mkdir -p "$out"
jsonl=$out/ab.jsonl
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"
source scripts/bench-lib.sh

# label url: one wsbench client run of mortar's echo, its result appended to $jsonl.
client() {
  "$ws/client" --conns "$conns" --warmup 2 --duration "$seconds" --json "$jsonl" --label "$1" \
    --proto mortar --url "$2" --threads 1 | sed -n 's/^RESULT /  '"$1"': /p' | cut -c1-140
}
stop() { kill "$1" 2>/dev/null || true; wait "$1" 2>/dev/null || true; }
limits=(MORTAR_GATEWAY__RATE_PER_SEC=0 MORTAR_GATEWAY__MAX_CONNECTIONS_PER_IP=0 MORTAR_ADMIN__ENABLED=false NO_COLOR=1)

for round in $(seq "$runs"); do
  echo "== round $round"
  runs=1 bare_echo "$conns" 9611 "$jsonl"
  order="A B"; [ $((round % 2)) = 0 ] && order="B A"   # neither build always runs first
  for side in $order; do
    bin=$a; [ "$side" = B ] && bin=$b
    env "${limits[@]}" "$bin" dev --listen 127.0.0.1:0 >"$out/dev-$side.out" 2>"$out/dev-$side.err" &
    pid=$!; pids+=("$pid")
    client "dev-$side" "$(ready "$out/dev-$side.out")"
    stop "$pid"

    secret=bench-ab-secret
    env "${limits[@]}" MORTAR_NODE__ID=worker-1 MORTAR_CLUSTER__SECRET=$secret MORTAR_NODE__WORKER_THREADS=1 \
      "$bin" worker --rpc-listen 127.0.0.1:7311 >"$out/worker-$side.out" 2>"$out/worker-$side.err" &
    worker=$!; pids+=("$worker")
    ready "$out/worker-$side.out" >/dev/null
    env "${limits[@]}" MORTAR_NODE__ID=gateway-1 MORTAR_CLUSTER__SECRET=$secret MORTAR_NODE__WORKER_THREADS=1 \
      MORTAR_REGISTRY__NODES='[{id="worker-1",addr="127.0.0.1:7311"}]' MORTAR_GATEWAY__RPC_LISTEN=127.0.0.1:0 \
      "$bin" gateway --listen 127.0.0.1:0 >"$out/gateway-$side.out" 2>"$out/gateway-$side.err" &
    gateway=$!; pids+=("$gateway")
    url=$(ready "$out/gateway-$side.out")
    sleep 1
    client "gw1w-$side" "$url"
    stop "$gateway"; stop "$worker"
  done
done

python3 - "$jsonl" "$a" "$b" <<'PY'
import json, statistics, sys
rows = {}
for line in open(sys.argv[1]):
    r = json.loads(line)
    rows.setdefault(r["label"], []).append(r)
def med(label, key):
    return statistics.median(r["rps"] if key == "rps" else r["latency_ms"]["p99"] for r in rows[label])
print(f"A = {sys.argv[2]}\nB = {sys.argv[3]}")
bare = med("bare-echo", "rps")
print(f"| row | req/s (median) | p99 ms | ÷ bare echo |\n|---|---:|---:|---:|")
for label in ["bare-echo", "dev-A", "dev-B", "gw1w-A", "gw1w-B"]:
    rps, p99 = med(label, "rps"), med(label, "p99_ms")
    print(f"| {label} | {rps:,.0f} | {p99:.2f} | {rps / bare:.2f}× |")
bad = sum(r["badReplies"] + r["errors"] for rs in rows.values() for r in rs)
print(f"bad replies and errors, all rows: {bad}")
for row in ["dev", "gw1w"]:
    # Each round's own B ÷ A (one of each label per round, in file order): the machine drifts
    # between rounds more than the builds differ, so the per-round ratio is the fairer figure.
    ratios = sorted(b["rps"] / a["rps"] for a, b in zip(rows[row + "-A"], rows[row + "-B"]))
    print(f"{row}: B ÷ A = {statistics.median(ratios):.3f} (median of {len(ratios)} rounds; {ratios[0]:.2f}–{ratios[-1]:.2f})")
PY
