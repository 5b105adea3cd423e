#!/usr/bin/env bash
# The login rows of scripts/bench.sh (run it through bench.sh: STAGES=login scripts/bench.sh).
# 100 bot clients, each its own player (registered once, kept across runs):
#   bare-echo       the yardstick: ../shared/bench/wsbench's echo server and client, 100 connections;
#   login           `mortar bot --scenario login`: user.login again and again (argon2id with the
#                   user module's default parameters: 19 MiB, 2 passes, 1 lane);
#   pack            `mortar bot --scenario pack`: pack.use of one item again and again (a
#                   compare-and-set write of the player's pack, durable, per request);
# each in `mortar dev` (embedded store) and through a gateway + a worker (embedded store, Redis
# session store). Every process runs one runtime thread, the bot too.
# Usage: scripts/bench-login.sh MORTAR_BIN OUT_DIR SECONDS RUNS
set -euo pipefail
cd "$(dirname "$0")/.."
bin=$1 out=$2 seconds=$3 runs=$4
source scripts/bench-lib.sh
jsonl=$out/login.jsonl

# Tables whose starter potions outlast the runs.
tables=$out/login-tables
mkdir -p "$tables"
cp conf/tables/items.json "$tables/items.json"
python3 - "$tables/items.json" <<'PY'
import json, sys
items = json.load(open(sys.argv[1]))
for item in items:
    if item["id"] == 100:
        item["max_stack"] = 4000000000
json.dump(items, open(sys.argv[1], "w"), indent=1)
PY
echo '[{"id": 1, "item_id": 100, "count": 4000000000}]' >"$tables/starter_items.json"
# The bot's 100 players register from one address at once: the user module's limits per address
# and in all off, and room for all of them in the hashing queues (the logins the login run left
# waiting when it stopped still run when the pack run's 100 log in).
common=(MORTAR_GATEWAY__RATE_PER_SEC=0 MORTAR_GATEWAY__MAX_CONNECTIONS_PER_IP=0 MORTAR_NODE__WORKER_THREADS=1
  MORTAR_MODULES__USER__REGISTER_PER_IP=0 MORTAR_MODULES__USER__REGISTER_PER_SEC=0 MORTAR_MODULES__USER__REGISTER_QUEUE=1000
  MORTAR_MODULES__USER__LOGIN_QUEUE=1000
  MORTAR_ADMIN__ENABLED=false MORTAR_TABLES__PATH=$tables NO_COLOR=1)

# Runs the bot: label url scenario; appends {label, scenario, report} lines to $jsonl.
bot() {
  local label=$1 url=$2 scenario=$3
  for run in $(seq "$runs"); do
    "$bin" bot --scenario "$scenario" --url "$url" --clients 100 --threads 1 --quiet --duration "${seconds}s" \
      --json "$out/login-run.json" >/dev/null
    python3 - "$out/login-run.json" "$label" "$scenario" "$run" >>"$jsonl" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
r.update(label=sys.argv[2], scenario=sys.argv[3])
print(json.dumps(r))
sys.stderr.write("  %s %s run %s: %.0f req/s, p50 %.2f ms, p99 %.2f ms, errors %s\n" % (sys.argv[2], sys.argv[3], sys.argv[4],
                 r["requests_per_sec"], r["latency_ms"]["p50"], r["latency_ms"]["p99"], r["errors"]))
PY
  done
}

bare_echo 100 9621 "$out/login-echo.jsonl"

echo "== mortar dev, embedded store"
env "${common[@]}" "$bin" dev --listen 127.0.0.1:0 --data "$out/login-dev-data" >"$out/login-dev.out" 2>"$out/login-dev.err" &
dev_pid=$!
pids+=("$dev_pid")
url=$(ready "$out/login-dev.out")
bot dev "$url" login
bot dev "$url" pack
kill "$dev_pid"

echo "== gateway + worker, embedded store, Redis session store"
redis_port=6393
redis-server --port "$redis_port" --save "" --appendonly no >"$out/login-redis.log" 2>&1 &
pids+=("$!")
sleep 0.5
redis="redis://127.0.0.1:$redis_port"
cluster=("${common[@]}" MORTAR_CLUSTER__SECRET=bench-login-secret MORTAR_REGISTRY__URL=$redis MORTAR_SESSION__URL=$redis)
env "${cluster[@]}" MORTAR_NODE__ID=worker-1 "$bin" worker --rpc-listen 127.0.0.1:0 --data "$out/login-worker-data" \
  >"$out/login-w1.out" 2>"$out/login-w1.err" &
pids+=("$!")
ready "$out/login-w1.out" >/dev/null
env "${cluster[@]}" MORTAR_NODE__ID=gateway-1 MORTAR_GATEWAY__RPC_LISTEN=127.0.0.1:0 \
  "$bin" gateway --listen 127.0.0.1:0 >"$out/login-gw.out" 2>"$out/login-gw.err" &
pids+=("$!")
url=$(ready "$out/login-gw.out")
sleep 1 # the gateway finds the worker through the registry
bot cluster "$url" login
bot cluster "$url" pack

python3 - "$jsonl" "$out/login-echo.jsonl" "$out" <<'PY'
import json, os, statistics, sys
rows = {}
for line in open(sys.argv[1]):
    r = json.loads(line)
    rows.setdefault((r["label"], r["scenario"]), []).append(r)
echo = statistics.median(json.loads(line)["rps"] for line in open(sys.argv[2]))
lines = ["| target | scenario | req/s (median) | p50 ms | p99 ms | errors | ÷ bare echo |", "|---|---|---:|---:|---:|---:|---:|",
         f"| bare tokio-tungstenite echo, 100 connections | echo | {echo:,.0f} | | | | 1.00× |"]
for (label, scenario), rs in sorted(rows.items(), key=lambda kv: (kv[0][0] != "dev", kv[0][1])):
    rps = statistics.median(r["requests_per_sec"] for r in rs)
    p50 = statistics.median(r["latency_ms"]["p50"] for r in rs)
    p99 = statistics.median(r["latency_ms"]["p99"] for r in rs)
    errors = sum(sum(r["errors"].values()) for r in rs)
    lines.append(f"| {label} | {scenario} | {rps:,.0f} | {p50:.2f} | {p99:.2f} | {errors} | {rps / echo:.3f}× |")
table = "\n".join(lines)
open(os.path.join(sys.argv[3], "login-summary.md"), "w").write(table + "\n")
print(table)
PY
