#!/usr/bin/env bash
# The cluster rows of scripts/bench.sh (run it through bench.sh: STAGES=cluster scripts/bench.sh).
# One client for every row, ../shared/bench/wsbench's, so the rows compare within this run:
#   bare-echo        its tokio-tungstenite echo server (one thread per core): the transport's ceiling;
#   mortar-gw1w      mortar gateway + 1 mortar worker over TCP (static registry);
#   mortar-gw2w      mortar gateway + 2 workers;
#   pinus-forward    Pinus connector forwarding to a backend server (bench/peers/pinus);
# each at 100 and 1,000 connections, echo, median of RUNS runs of SECONDS seconds. Then:
#   cpu              gateway and worker CPU per request at a fixed open-loop load (mortar bot);
#   failover         how long a SIGKILLed and a SIGSTOPped worker keep being sent requests.
# Usage: scripts/bench-cluster.sh MORTAR_BIN OUT_DIR SECONDS RUNS
set -euo pipefail
cd "$(dirname "$0")/.."
bin=$1 out=$2 seconds=$3 runs=$4
shared=../shared/bench/wsbench
[ -d "$shared" ] || { echo "bench-cluster: $shared is missing (the yardstick client and server)" >&2; exit 1; }
CARGO_TARGET_DIR=target/wsbench cargo build --release --quiet --manifest-path "$shared/Cargo.toml"
ws=target/wsbench/release
jsonl=$out/cluster.jsonl
pids=()
cleanup() { for pid in "${pids[@]}"; do kill -9 "$pid" 2>/dev/null || true; done; }
trap cleanup EXIT

# Runs the wsbench client: label conns [client args...]; the result lines go to $jsonl.
client() {
  local label=$1 conns=$2; shift 2
  for run in $(seq "$runs"); do
    "$ws/client" --conns "$conns" --warmup 2 --duration "$seconds" --json "$jsonl" --label "$label" "$@" \
      | sed -n 's/^RESULT /  '"$label"' c='"$conns"' run '"$run"': /p' | cut -c1-150
  done
}

secret=bench-cluster-secret
# Starts a worker: id port; sets W_PID. Node and client share the machine: one runtime thread each.
# Each worker its own data directory (two cannot share one embedded store), serving `echo` only:
# modules that keep documents must not live on two embedded stores (the second worker refuses).
start_worker() {
  MORTAR_NODE__ID=$1 MORTAR_CLUSTER__SECRET=$secret MORTAR_ADMIN__ENABLED=false MORTAR_NODE__WORKER_THREADS=1 NO_COLOR=1 \
  MORTAR_STORAGE__PATH="$out/$1-data" MORTAR_WORKER__MODULES='["echo"]' \
    "$bin" worker --rpc-listen "127.0.0.1:$2" >"$out/$1.out" 2>"$out/$1.err" &
  W_PID=$!
  pids+=("$W_PID")
  for _ in $(seq 100); do grep -q "listening on" "$out/$1.out" 2>/dev/null && break; sleep 0.1; done
  kill -0 "$W_PID" 2>/dev/null || { echo "bench-cluster: worker $1 did not start:" >&2; tail -3 "$out/$1.err" >&2; exit 1; }
}
# Starts the gateway with the static worker list $1 (TOML array); sets G_PID, G_URL, G_ADMIN.
start_gateway() {
  MORTAR_NODE__ID=gateway-1 MORTAR_CLUSTER__SECRET=$secret MORTAR_REGISTRY__NODES="$1" \
  MORTAR_GATEWAY__RATE_PER_SEC=0 MORTAR_GATEWAY__MAX_CONNECTIONS_PER_IP=0 MORTAR_GATEWAY__RPC_LISTEN=127.0.0.1:0 \
  MORTAR_ADMIN__LISTEN=127.0.0.1:0 MORTAR_NODE__WORKER_THREADS=${G_THREADS:-1} RUST_LOG=info NO_COLOR=1 \
    "$bin" gateway --listen 127.0.0.1:0 >"$out/gateway.out" 2>"$out/gateway.err" &
  G_PID=$!
  pids+=("$G_PID")
  for _ in $(seq 100); do grep -q "listening on" "$out/gateway.out" 2>/dev/null && break; sleep 0.1; done
  G_URL=$(sed -n 's/^mortar: gateway listening on //p' "$out/gateway.out")
  G_ADMIN=$(sed -n 's|.*admin listening on http://\([^/]*\)/metrics.*|\1|p' "$out/gateway.err")
  local want=$(( $(grep -o 'id=' <<<"$1" | wc -l) ))
  for _ in $(seq 100); do
    live=$(curl -s "http://$G_ADMIN/metrics" | awk '/^mortar_gateway_workers_live / {print $2}')
    [ "${live:-0}" -ge "$want" ] && break
    sleep 0.1
  done
}
stop() { kill "$1" 2>/dev/null || true; wait "$1" 2>/dev/null || true; }

echo "== bare tokio-tungstenite echo (the transport's ceiling)"
"$ws/server" --addr 127.0.0.1:9601 --cfg small >/dev/null 2>&1 &
echo_pid=$!
pids+=("$echo_pid")
sleep 0.5
for conns in 100 1000; do client bare-echo "$conns" --proto raw --url ws://127.0.0.1:9601/ --threads 1 --pids "server=$echo_pid"; done
stop "$echo_pid"
# Its CPU per request at the open-loop load the gateway gets below (the bot's echo.say frames
# come back unchanged, which the bot takes for a reply): the yardstick of the gateway's figure.
# On one runtime thread, as the gateway runs: with one per core its figure moved 8–15 µs between
# runs, from how often its two threads woke each other.
"$ws/server" --addr 127.0.0.1:9602 --cfg small --threads 1 >/dev/null 2>&1 &
echo_pid=$!
pids+=("$echo_pid")
sleep 0.5
ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
b0=$(ticks "$echo_pid")
"$bin" bot --url ws://127.0.0.1:9602/ --clients 100 --rate 200 --duration "${seconds}s" --threads 1 --quiet --json "$out/bare-cpu.json" >/dev/null
b1=$(ticks "$echo_pid")
stop "$echo_pid"

one='[{id="worker-1",addr="127.0.0.1:7301"}]'
two='[{id="worker-1",addr="127.0.0.1:7301"},{id="worker-2",addr="127.0.0.1:7302"}]'
echo "== mortar gateway + 1 worker"
start_worker worker-1 7301; w1=$W_PID
start_gateway "$one"
for conns in 100 1000; do client mortar-gw1w "$conns" --proto mortar --url "$G_URL" --threads 1 --pids "gateway=$G_PID,worker-1=$w1"; done
stop "$G_PID"
echo "== mortar gateway + 2 workers"
start_worker worker-2 7302; w2=$W_PID
start_gateway "$two"
for conns in 100 1000; do client mortar-gw2w "$conns" --proto mortar --url "$G_URL" --threads 1 --pids "gateway=$G_PID,worker-1=$w1,worker-2=$w2"; done
stop "$G_PID"

# CPU per request at a fixed open-loop load: 100 clients x 200 req/s = 20k req/s, gateway + 1 worker.
echo "== CPU per request at 20k req/s, gateway + 1 worker (and the bare echo server at the same load)"
start_gateway "$one"
g0=$(ticks "$G_PID") w0=$(ticks "$w1")
"$bin" bot --url "$G_URL" --clients 100 --rate 200 --duration "${seconds}s" --threads 1 --quiet --json "$out/cluster-cpu.json" >/dev/null
g1=$(ticks "$G_PID") w1t=$(ticks "$w1")
python3 - "$out/cluster-cpu.json" "$((g1 - g0))" "$((w1t - w0))" "$(getconf CLK_TCK)" "$out/bare-cpu.json" "$((b1 - b0))" <<'PY'
import json, sys
report, bare = json.load(open(sys.argv[1])), json.load(open(sys.argv[5]))
hz = int(sys.argv[4])
per_request = lambda ticks, ok: int(ticks) / hz * 1e6 / max(ok, 1)
gateway, worker = (per_request(t, report["ok"]) for t in sys.argv[2:4])
bare_us = per_request(sys.argv[6], bare["ok"])
report["gateway_cpu_us_per_request"], report["worker_cpu_us_per_request"] = round(gateway, 2), round(worker, 2)
report["bare_cpu_us_per_request"] = round(bare_us, 2)
json.dump(report, open(sys.argv[1], "w"), indent=2)
print(f"  {report['requests_per_sec']:.0f} req/s: gateway {gateway:.1f} µs ({gateway / bare_us:.2f}× the bare server's "
      f"{bare_us:.1f} µs at {bare['requests_per_sec']:.0f} req/s), worker {worker:.1f} µs of CPU per request")
PY
stop "$G_PID"

# Failover: under load over two workers, kill -9 one, then SIGSTOP the other's replacement...
# measured from the signal to the gateway's "worker down" line (after which no request is sent to
# it), read from the log's timestamps.
echo "== failover: how long a dead or frozen worker keeps getting requests"
start_gateway "$two"
"$bin" bot --url "$G_URL" --clients 50 --rate 100 --duration 20s --threads 1 --quiet >/dev/null &
load=$!
sleep 2
down_after() { # pid signal worker-id: seconds from the signal to the gateway's "worker down" line
  local before
  before=$(grep -c "worker down peer=$3" "$out/gateway.err" || true)
  local sent
  sent=$(date +%s.%N)
  kill "-$2" "$1"
  for _ in $(seq 100); do
    [ "$(grep -c "worker down peer=$3" "$out/gateway.err" || true)" -gt "$before" ] && break
    sleep 0.05
  done
  local line
  line=$(grep "worker down peer=$3" "$out/gateway.err" | tail -1)
  python3 -c 'import sys, datetime
sent = float(sys.argv[1]); stamp = sys.argv[2].split()[0].rstrip("Z")
seen = datetime.datetime.fromisoformat(stamp[:26]).replace(tzinfo=datetime.timezone.utc).timestamp()
print(f"{seen - sent:.3f}")' "$sent" "$line"
}
disown "$w1"   # out of the job table: bash would print a "Killed" notice for it
killed=$(down_after "$w1" KILL worker-1)
echo "  SIGKILL: worker marked down after ${killed} s"
frozen=$(down_after "$w2" STOP worker-2)
echo "  SIGSTOP: worker marked down after ${frozen} s"
kill -CONT "$w2" 2>/dev/null || true
wait "$load" 2>/dev/null || true
echo "{\"killed_down_after_s\": $killed, \"frozen_down_after_s\": $frozen}" >"$out/cluster-failover.json"
stop "$G_PID"; stop "$w2"

echo "== Pinus forwarding, same client"
(cd bench/peers/pinus && { [ -d node_modules ] || npm ci --no-audit --no-fund >/dev/null; })
(cd bench/peers/pinus && exec setsid node app.js >"../../../$out/pinus-cluster.log" 2>&1) &
pinus_pid=$!
for _ in $(seq 200); do (exec 3<>/dev/tcp/127.0.0.1/3010) 2>/dev/null && break; sleep 0.1; done
sleep 2
for conns in 100 1000; do client pinus-forward "$conns" --proto pomelo --url ws://127.0.0.1:3010/ --route echo.echoHandler.echo --threads 1; done
kill -- "-$pinus_pid" 2>/dev/null || true

python3 - "$jsonl" "$out" <<'PY'
import json, os, statistics, sys
rows = {}
for line in open(sys.argv[1]):
    r = json.loads(line)
    rows.setdefault((r["label"], r["conns"]), []).append(r)
order = ["bare-echo", "mortar-gw1w", "mortar-gw2w", "pinus-forward"]
lines = ["| target | conns | req/s (median) | p50 ms | p99 ms | bad | CPU % of a core (median) |", "|---|---:|---:|---:|---:|---:|---|"]
def med(rs, f): return statistics.median(f(r) for r in rs)
for (label, conns), rs in sorted(rows.items(), key=lambda kv: (order.index(kv[0][0]) if kv[0][0] in order else 9, kv[0][1])):
    cpu = ", ".join(f"{k} {med(rs, lambda r: r['cpu_pct_of_one_core'].get(k, 0)):.0f}" for k in rs[0]["cpu_pct_of_one_core"])
    lines.append(f"| {label} | {conns} | {med(rs, lambda r: r['rps']):,.0f} | {med(rs, lambda r: r['latency_ms']['p50']):.2f} | "
                 f"{med(rs, lambda r: r['latency_ms']['p99']):.2f} | {sum(r['badReplies'] + r['errors'] for r in rs)} | {cpu} |")
def rps(label, conns):
    rs = rows.get((label, conns))
    return med(rs, lambda r: r["rps"]) if rs else None
lines.append("")
for conns in (100, 1000):
    for mortar in ("mortar-gw1w", "mortar-gw2w"):
        m, bare, pinus = rps(mortar, conns), rps("bare-echo", conns), rps("pinus-forward", conns)
        if m and bare:
            lines.append(f"{mortar} at {conns}: {m / bare:.2f}× the bare echo" + (f", {m / pinus:.2f}× Pinus forwarding" if pinus else ""))
table = "\n".join(lines)
open(os.path.join(sys.argv[2], "cluster-summary.md"), "w").write(table + "\n")
print(table)
PY
