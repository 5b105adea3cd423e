#!/usr/bin/env bash
# The rooms rows of scripts/bench.sh (run it through bench.sh: STAGES=match scripts/bench.sh).
# Nakama's published authoritative-match workload on the arena module (`mortar bot --scenario
# match`): players log in, matchmake into rooms of 10 (mode `squad`) ticking at 10 Hz, and each,
# every 0.5 s, alternates `arena.echo` (44 bytes) and `arena.broadcast` (35 bytes):
#   bare-echo     the yardstick: ../shared/bench/wsbench's tokio-tungstenite echo server and
#                 client at 1,000 connections (a round trip is two frames);
#   dev           `mortar dev`, at each player count of MATCH_CLIENTS;
#   cluster       two `mortar gateway`s + two `mortar worker`s (the example cluster's files: both
#                 workers serve arena and matchmake, worker 1 the accounts), players on both; one
#                 runtime thread per node, as in the other cluster benchmarks (four nodes share two
#                 cores: with one thread per core each, their eight threads woke and preempted each
#                 other: broadcasts' p99 at 3,000 players was 235–292 ms against 46–73 ms, same CPU).
# The bot runs on one thread; `mortar dev` on its default (one runtime thread per core). It
# reports the servers' tick lateness (from their admin listeners), their CPU and memory
# (--server-pid), echo and broadcast delivery latency and the frames the clients received.
# Usage: scripts/bench-match.sh MORTAR_BIN OUT_DIR SECONDS RUNS
set -euo pipefail
cd "$(dirname "$0")/.."
bin=$1 out=$2 seconds=$3 runs=$4
source scripts/bench-lib.sh
clients=${MATCH_CLIENTS:-1000 2000 3000 4000 5000}
cluster_clients=${MATCH_CLUSTER_CLIENTS:-1000 2000 3000}
jsonl=$out/match.jsonl
common=(MORTAR_GATEWAY__RATE_PER_SEC=0 MORTAR_GATEWAY__MAX_CONNECTIONS_PER_IP=0 NO_COLOR=1 RUST_LOG=warn
  MORTAR_MODULES__USER__ARGON2_MEMORY_KIB=1024 MORTAR_MODULES__USER__ARGON2_ITERATIONS=1
  MORTAR_MODULES__USER__REGISTER_PER_IP=0 MORTAR_MODULES__USER__REGISTER_PER_SEC=0
  MORTAR_MODULES__USER__REGISTER_QUEUE=1000 MORTAR_MODULES__USER__LOGIN_QUEUE=1000)

# Runs the match bot: label urls metrics pids clients run; appends {label, report} lines.
play() {
  local label=$1 urls=$2 metrics=$3 pids_of=$4 n=$5 run=$6
  "$bin" bot --scenario match --url "$urls" --clients "$n" --threads 1 --quiet --duration "${seconds}s" \
    --metrics "$metrics" --server-pid "$pids_of" --json "$out/match-run.json" >/dev/null
  python3 - "$out/match-run.json" "$label" "$run" >>"$jsonl" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
r.update(label=sys.argv[2])
print(json.dumps(r))
t, s = r["ticks"], r["servers"]
sys.stderr.write("  %s %d players run %s: ticks p99 <= %s ms (%.2f%% within 10 ms), broadcast p99 %.1f ms, "
                 "echo p99 %.1f ms, %.0f frames/s, %.2f cores, %.0f KiB/room, errors %d\n"
                 % (sys.argv[2], r["playing"], sys.argv[3], t["p99_at_most_ms"], 100 * t["within_10ms"],
                    r["broadcast_ms"]["p99"], r["echo_ms"]["p99"], r["frames_per_sec"], s["cores"],
                    s["kib_per_room"], r["errors"]))
PY
}

bare_echo 1000 9612 "$out/match-echo.jsonl"

echo "== mortar dev"
for n in $clients; do
  for run in $(seq "$runs"); do
    # A node of its own per run: a fresh store, rooms and memory.
    env "${common[@]}" MORTAR_ADMIN__LISTEN=127.0.0.1:9612 "$bin" dev --listen 127.0.0.1:0 \
      --data "$out/match-dev-data-$n-$run" >"$out/match-dev.out" 2>"$out/match-dev.err" &
    dev_pid=$!
    pids+=("$dev_pid")
    url=$(ready "$out/match-dev.out")
    play dev "$url" 127.0.0.1:9612 "$dev_pid" "$n" "$run"
    kill "$dev_pid"
    wait "$dev_pid" 2>/dev/null || true
  done
done

echo "== two gateways + two workers (the example cluster's files)"
for n in $cluster_clients; do
  for run in $(seq "$runs"); do
    node_pids=()
    for w in 1 2; do
      env "${common[@]}" MORTAR_NODE__WORKER_THREADS=1 "$bin" worker --conf "conf/worker_$w.toml" --data "$out/match-w$w-data-$n-$run" \
        >"$out/match-w$w.out" 2>"$out/match-w$w.err" &
      node_pids+=("$!")
      ready "$out/match-w$w.out" >/dev/null
    done
    env "${common[@]}" MORTAR_NODE__WORKER_THREADS=1 "$bin" gateway --conf conf/gateway_1.toml >"$out/match-g1.out" 2>"$out/match-g1.err" &
    node_pids+=("$!")
    env "${common[@]}" MORTAR_NODE__WORKER_THREADS=1 MORTAR_NODE__ID=gateway-2 MORTAR_GATEWAY__LISTEN=127.0.0.1:4001 \
      MORTAR_GATEWAY__RPC_LISTEN=127.0.0.1:7001 MORTAR_ADMIN__LISTEN=127.0.0.1:9103 \
      "$bin" gateway --conf conf/gateway_1.toml >"$out/match-g2.out" 2>"$out/match-g2.err" &
    node_pids+=("$!")
    pids+=("${node_pids[@]}")
    urls="$(ready "$out/match-g1.out"),$(ready "$out/match-g2.out")"
    sleep 1 # the gateways connect to both workers
    play cluster "$urls" 127.0.0.1:9101,127.0.0.1:9102 "$(IFS=,; echo "${node_pids[*]}")" "$n" "$run"
    kill "${node_pids[@]}"
    wait "${node_pids[@]}" 2>/dev/null || true
  done
done
