#!/usr/bin/env bash
# The cluster rows of scripts/bench.sh (run it through bench.sh: STAGES=cluster scripts/bench.sh).
# One client for every row, ../shared/bench/wsbench's, so the rows compare within this run:
#   bare-echo        its tokio-tungstenite echo server (one thread per core): the transport's ceiling;
#   bare-relay       the same server with one hop added, each frame sent to a second process and back
#                    (bin/examples/bare_relay.rs, one thread each): the simplest two-process relay;
#   mortar-gw1w      mortar gateway + 1 mortar worker over TCP (static registry);
#   mortar-gw2w      mortar gateway + 2 workers;
#   pinus-forward    Pinus connector forwarding to a backend server (bench/peers/pinus);
# each at 100 and 1,000 connections, echo, median of RUNS runs of SECONDS seconds. Then:
#   cpu              gateway and worker CPU per request at a fixed open-loop load (mortar bot),
#                    beside the bare echo server's and the bare relay's at the same load;
#   failover         how long a SIGKILLed and a SIGSTOPped worker keep being sent requests.
# Usage: scripts/bench-cluster.sh MORTAR_BIN OUT_DIR SECONDS RUNS
set -euo pipefail
cd "$(dirname "$0")/.."
bin=$1 out=$2 seconds=$3 runs=$4
shared=../shared/bench/wsbench
[ -d "$shared" ] || { echo "bench-cluster: $shared is missing (the yardstick client and server)" >&2; exit 1; }
CARGO_TARGET_DIR=target/wsbench cargo build --release --quiet --manifest-path "$shared/Cargo.toml"
ws=target/wsbench/release
cargo build --release --locked --quiet --example bare_relay -p mortar-cli
relay=target/release/examples/bare_relay
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

# Starts the bare relay, its clients at ws://127.0.0.1:9702/; sets front_pid and back_pid.
start_bare_relay() {
  "$relay" back --addr 127.0.0.1:9701 2>/dev/null &
  back_pid=$!
  pids+=("$back_pid")
  sleep 0.3
  "$relay" front --addr 127.0.0.1:9702 --back 127.0.0.1:9701 2>/dev/null &
  front_pid=$!
  pids+=("$front_pid")
}
echo "== bare relay: the bare echo with a hop to a second process"
start_bare_relay
sleep 0.5
for conns in 100 1000; do client bare-relay "$conns" --proto raw --url ws://127.0.0.1:9702/ --threads 1 --pids "front=$front_pid,back=$back_pid"; done
stop "$front_pid"; stop "$back_pid"

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

# CPU per request at a fixed open-loop load, 100 clients x 200 req/s = 20k req/s (the bot's echo.say
# frames come back unchanged from the bare servers, which the bot takes for replies): the bare echo
# server, the bare relay and gateway + 1 worker, interleaved, RUNS rounds; medians. Every server on
# one runtime thread, as the gateway runs: with one per core the bare server's figure moved 8–15 µs
# between runs, from how often its two threads woke each other.
echo "== CPU per request at 20k req/s: the bare echo server, the bare relay, gateway + 1 worker"
"$ws/server" --addr 127.0.0.1:9602 --cfg small --threads 1 >/dev/null 2>&1 &
echo_pid=$!
pids+=("$echo_pid")
start_bare_relay
start_gateway "$one"
sleep 0.5
ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
# Runs the bot at 20k req/s: label url pid...; appends {label, ok, ticks: [per pid]} to cpu.jsonl.
open_loop() {
  local label=$1 url=$2; shift 2
  local before=() after=() pid
  for pid in "$@"; do before+=("$(ticks "$pid")"); done
  "$bin" bot --url "$url" --clients 100 --rate 200 --duration "${seconds}s" --threads 1 --quiet --json "$out/cpu-run.json" >/dev/null
  for pid in "$@"; do after+=("$(ticks "$pid")"); done
  python3 -c 'import json, sys
ok = json.load(open(sys.argv[1]))["ok"]; n = (len(sys.argv) - 3) // 2
print(json.dumps({"label": sys.argv[2], "ok": ok, "ticks": [int(b) - int(a) for a, b in zip(sys.argv[3:3 + n], sys.argv[3 + n:])]}))' \
    "$out/cpu-run.json" "$label" "${before[@]}" "${after[@]}" >>"$out/cpu.jsonl"
}
for _ in $(seq "$runs"); do
  open_loop bare ws://127.0.0.1:9602/ "$echo_pid"
  open_loop relay ws://127.0.0.1:9702/ "$front_pid" "$back_pid"
  open_loop gateway "$G_URL" "$G_PID" "$w1"
done
stop "$echo_pid"; stop "$front_pid"; stop "$back_pid"; stop "$G_PID"
python3 - "$out/cpu.jsonl" "$(getconf CLK_TCK)" "$out/cluster-cpu.json" <<'PY'
import json, statistics, sys
hz = int(sys.argv[2])
runs = [json.loads(line) for line in open(sys.argv[1])]
us = lambda r, i: r["ticks"][i] / hz * 1e6 / max(r["ok"], 1)
rounds = list(zip(*(iter(runs),) * 3))
ratio = lambda label, i: statistics.median(us(r[label], i) / us(r[0], 0) for r in rounds)
med = lambda label, i: statistics.median(us(r[label], i) for r in rounds)
report = {
    "bare_cpu_us_per_request": round(med(0, 0), 2),
    "bare_relay_front_cpu_us_per_request": round(med(1, 0), 2), "bare_relay_back_cpu_us_per_request": round(med(1, 1), 2),
    "gateway_cpu_us_per_request": round(med(2, 0), 2), "worker_cpu_us_per_request": round(med(2, 1), 2),
    "gateway_over_bare": round(ratio(2, 0), 2), "bare_relay_front_over_bare": round(ratio(1, 0), 2), "rounds": len(rounds),
}
json.dump(report, open(sys.argv[3], "w"), indent=2)
for i, (bare, relay, gateway) in enumerate(rounds, 1):
    print(f"  round {i}: bare {us(bare, 0):.1f} µs, bare relay {us(relay, 0):.1f} + {us(relay, 1):.1f} µs, "
          f"gateway {us(gateway, 0):.1f} + worker {us(gateway, 1):.1f} µs ({us(gateway, 0) / us(bare, 0):.2f}×)")
print(f"  medians of {len(rounds)}: gateway {report['gateway_cpu_us_per_request']} µs, {report['gateway_over_bare']}× the bare "
      f"server's {report['bare_cpu_us_per_request']} µs (the bare relay's front {report['bare_relay_front_over_bare']}×); "
      f"worker {report['worker_cpu_us_per_request']} µs, the bare relay's back {report['bare_relay_back_cpu_us_per_request']} µs")
PY

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
order = ["bare-echo", "bare-relay", "mortar-gw1w", "mortar-gw2w", "pinus-forward"]
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
        m, bare, relay, pinus = (rps(label, conns) for label in (mortar, "bare-echo", "bare-relay", "pinus-forward"))
        if m and bare:
            lines.append(f"{mortar} at {conns}: {m / bare:.2f}× the bare echo" + (f", {m / relay:.2f}× the bare relay" if relay else "")
                         + (f", {m / pinus:.2f}× Pinus forwarding" if pinus else ""))
table = "\n".join(lines)
open(os.path.join(sys.argv[2], "cluster-summary.md"), "w").write(table + "\n")
print(table)
PY
