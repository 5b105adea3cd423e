#!/usr/bin/env bash
# The push rows of scripts/bench.sh (run it through bench.sh: STAGES=push scripts/bench.sh).
# One handler pushes to 1,000 logged-in players, again and again (`mortar bot --scenario push`,
# the test module library tests/dynamic for its login and push routes):
#   bare-echo     the yardstick: ../shared/bench/wsbench's tokio-tungstenite echo server and
#                 client at 1,000 connections (frames each way per second: the transport's ceiling);
#   dev           `mortar dev`, memory session store, one gateway;
#   cluster       two `mortar gateway`s + one `mortar worker`, Redis registry and session store,
#                 the players spread over both gateways (each push: one batch RPC per gateway);
# each with 1 push in flight (the time until the last player has it, nothing else running), 16 in
# flight from one sender (one player's handler, back to back: a session's requests run one after
# another) and 16 in flight from 16 senders (16 players pushing at once): pushes delivered per
# second; over the cluster also 64 in flight from 16 senders (16 are bound by a round's latency,
# 64 by the cores), and both again with the gateways holding pushes 20 ms (gateway.push_flush_ms).
# Every process runs one runtime thread, the bot too.
# With KIND=group (the group stage of bench.sh, STAGES=group) the push is the group module's:
# 1,000 players register, log in and join one group (`--prepare 'group.create …'` by the first),
# and `group.say` reaches them all as `group.message` (a read of the group's 1,000 members,
# friend.blocked_by and user.lookup of the sender, then the same fan-out).
# Usage: scripts/bench-push.sh MORTAR_BIN OUT_DIR SECONDS RUNS [KIND=dyntest|group]
set -euo pipefail
cd "$(dirname "$0")/.."
bin=$1 out=$2 seconds=$3 runs=$4 kind=${5:-dyntest}
source scripts/bench-lib.sh
cargo build --release --locked --quiet -p mortar-dynamic-test
library=$PWD/target/release/libmortar_dynamic_test.so
jsonl=$out/$kind-push.jsonl
common=(MORTAR_WORKER__DYNAMIC_MODULES="[\"$library\"]" MORTAR_GATEWAY__RATE_PER_SEC=0
  MORTAR_GATEWAY__MAX_CONNECTIONS_PER_IP=0 MORTAR_NODE__WORKER_THREADS=1 MORTAR_ADMIN__ENABLED=false NO_COLOR=1
  MORTAR_MODULES__USER__ARGON2_MEMORY_KIB=1024 MORTAR_MODULES__USER__ARGON2_ITERATIONS=1
  MORTAR_MODULES__USER__REGISTER_PER_IP=0 MORTAR_MODULES__USER__REGISTER_PER_SEC=0
  MORTAR_MODULES__USER__REGISTER_QUEUE=1000 MORTAR_MODULES__USER__LOGIN_QUEUE=1000)

# Runs the push bot: label urls window senders; appends {label, window, senders, report} lines.
push() {
  local label=$1 urls=$2 window=$3 senders=$4
  for run in $(seq "$runs"); do
    local how=(--login 'dyntest.login {"text":"{user}"}' --fanout 'dyntest.push {"text":"{users}"}')
    if [ "$kind" = group ]; then
      # Accounts of their own per run, as the node's store keeps the earlier ones.
      local tag=""
      [[ $label == *flush* ]] && tag=f
      local account="\"account\":\"b${tag}${window}_${senders}_${run}_{user}\",\"password\":\"bench-password\""
      how=(--login "user.register {$account} ; user.login {$account} ; group.join {\"groupId\":\"{prepared}\"}"
        --prepare 'group.create {"name":"bench"}' --fanout 'group.say {"groupId":"{prepared}","text":"hello raid"}')
    fi
    "$bin" bot --scenario push --url "$urls" --clients 1000 --threads 1 --quiet --duration "${seconds}s" \
      "${how[@]}" --window "$window" --senders "$senders" --json "$out/push-run.json" >/dev/null
    python3 - "$out/push-run.json" "$label" "$window" "$senders" "$run" >>"$jsonl" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
r.update(label=sys.argv[2], window=int(sys.argv[3]), senders=int(sys.argv[4]))
print(json.dumps(r))
pps, p50 = r["pushes_per_sec"], r["time_to_last_ms"]["p50"]
sys.stderr.write("  %s window %s senders %s run %s: %.0f pushes/s, last client after p50 %.1f ms, errors %s\n"
                 % (sys.argv[2], sys.argv[3], sys.argv[4], sys.argv[5], pps, p50, r["errors"]))
PY
  done
}

bare_echo 1000 9611 "$out/$kind-push-echo.jsonl"

echo "== mortar dev"
env "${common[@]}" "$bin" dev --listen 127.0.0.1:0 --data "$out/$kind-push-dev-data" >"$out/push-dev.out" 2>"$out/push-dev.err" &
dev_pid=$!
pids+=("$dev_pid")
url=$(ready "$out/push-dev.out")
push dev "$url" 1 1
push dev "$url" 16 1
push dev "$url" 16 16
kill "$dev_pid"

echo "== two gateways + one worker, Redis"
redis_port=6391
redis-server --port "$redis_port" --save "" --appendonly no >"$out/push-redis.log" 2>&1 &
pids+=("$!")
sleep 0.5
redis="redis://127.0.0.1:$redis_port"
cluster=("${common[@]}" MORTAR_CLUSTER__SECRET=bench-push-secret MORTAR_REGISTRY__URL=$redis MORTAR_SESSION__URL=$redis)
env "${cluster[@]}" MORTAR_NODE__ID=worker-1 "$bin" worker --rpc-listen 127.0.0.1:0 --data "$out/$kind-push-w1-data" >"$out/push-w1.out" 2>"$out/push-w1.err" &
pids+=("$!")
ready "$out/push-w1.out" >/dev/null
# Starts the two gateways (their pushes held FLUSH ms, 0 = written at once); sets urls and gw_pids.
start_gateways() {
  urls=() gw_pids=()
  for gw in 1 2; do
    env "${cluster[@]}" MORTAR_NODE__ID=gateway-$gw MORTAR_GATEWAY__RPC_LISTEN=127.0.0.1:0 MORTAR_GATEWAY__PUSH_FLUSH_MS="$1" \
      "$bin" gateway --listen 127.0.0.1:0 >"$out/push-gw$gw.out" 2>"$out/push-gw$gw.err" &
    pids+=("$!") gw_pids+=("$!")
    urls+=("$(ready "$out/push-gw$gw.out")")
  done
  sleep 1 # the gateways find the worker through the registry
}
start_gateways 0
push cluster "${urls[0]},${urls[1]}" 1 1
push cluster "${urls[0]},${urls[1]}" 16 1
push cluster "${urls[0]},${urls[1]}" 16 16
push cluster "${urls[0]},${urls[1]}" 64 16
kill "${gw_pids[@]}"
wait "${gw_pids[@]}" 2>/dev/null || true
echo "== the same, gateway.push_flush_ms = 20"
start_gateways 20
push "cluster, push_flush_ms = 20" "${urls[0]},${urls[1]}" 16 16
push "cluster, push_flush_ms = 20" "${urls[0]},${urls[1]}" 64 16

python3 - "$jsonl" "$out/$kind-push-echo.jsonl" "$out/$kind-push-summary.md" <<'PY'
import json, os, statistics, sys
rows = {}
for line in open(sys.argv[1]):
    r = json.loads(line)
    rows.setdefault((r["label"], r["window"], r["senders"]), []).append(r)
echo = statistics.median(json.loads(line)["rps"] for line in open(sys.argv[2]))
lines = ["| target | pushes in flight | senders | pushes/s delivered (median) | last client has it, p50 ms | p99 ms | errors | ÷ bare echo |",
         "|---|---:|---:|---:|---:|---:|---:|---:|",
         f"| bare tokio-tungstenite echo, 1,000 connections (round trips/s) | — | — | {echo:,.0f} | | | | 1.00× |"]
order = ["dev", "cluster", "cluster, push_flush_ms = 20"]
for (label, window, senders), rs in sorted(rows.items(), key=lambda kv: (order.index(kv[0][0]) if kv[0][0] in order else 9, kv[0][1], kv[0][2])):
    pps = statistics.median(r["pushes_per_sec"] for r in rs)
    p50 = statistics.median(r["time_to_last_ms"]["p50"] for r in rs)
    p99 = statistics.median(r["time_to_last_ms"]["p99"] for r in rs)
    errors = sum(sum(r["errors"].values()) for r in rs)
    lines.append(f"| {label} | {window} | {senders} | {pps:,.0f} | {p50:.1f} | {p99:.1f} | {errors} | {pps / echo:.2f}× |")
table = "\n".join(lines)
open(sys.argv[3], "w").write(table + "\n")
print(table)
PY
