#!/usr/bin/env bash
# The benchmark of docs/benchmarks.md, on one machine, everything on loopback:
#   1. `mortar dev` echo with the bot at 1, 100 and 1,000 clients (closed loop), each process with
#      one runtime thread per core; then "split": node and bot one thread each, so that on a
#      small machine they do not fight over the cores (the OS's time slices become the tail);
#   2. the gateway's resident memory with 10,000 idle connections;
#   3. the same echo against Pinus (bench/peers/pinus): its connector answering itself, and its
#      connector forwarding to a backend server over Pinus RPC, at 100 and 1,000 clients (and
#      "split": the bot on one thread, as Pinus's connector is a single Node.js thread);
#   4. the cluster: `mortar gateway` + 1 and + 2 `mortar worker`s over TCP, beside the bare
#      tokio-tungstenite echo server (the transport's ceiling) and Pinus forwarding, all driven by
#      the same client (../shared/bench/wsbench) in this run; the CPU per request of gateway and
#      worker at a fixed open-loop load; and how long a killed or frozen worker keeps getting
#      requests;
#   5. push fan-out: one handler pushing to 1,000 players, in `mortar dev` and over two gateways
#      (scripts/bench-push.sh), beside the bare echo at 1,000 connections;
#   6. logins and pack writes at 100 players, in `mortar dev` and through a gateway + worker
#      (scripts/bench-login.sh), beside the bare echo at 100 connections;
#   7. group chat: `group.say` to a group of 1,000 online members, as 5. (STAGES=group; not in the
#      default set);
#   8. rooms: Nakama's authoritative-match workload on the arena module, in `mortar dev` at several
#      player counts and over two gateways and two workers (scripts/bench-match.sh; STAGES=match,
#      not in the default set).
# Each row is the median of RUNS runs of SECONDS seconds. Results (one JSON per run and a summary
# table) go to target/bench/<time>/.
# Usage: [STAGES="dev idle pinus cluster push login group match"] [MORTAR_BIN=…] scripts/bench.sh [SECONDS=20] [RUNS=3]
#   (needs cargo, node and npm; python3 for the tables). MORTAR_BIN measures that build instead of
#   this tree's (a build from before a change, for the before/after rows).
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-20}
runs=${2:-3}
stages=" ${STAGES:-dev idle pinus cluster push login} "
want() { [[ "$stages" == *" $1 "* ]]; }
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"

[ -n "${MORTAR_BIN:-}" ] || cargo build --release --locked -p mortar-cli
bin=${MORTAR_BIN:-target/release/mortar}
unset MORTAR_BIN # the nodes warn of a MORTAR_ variable that is not a setting
out=target/bench/$(date +%Y%m%d-%H%M%S)
mkdir -p "$out"
pids=()
cleanup() { for pid in "${pids[@]}"; do kill -- "-$pid" 2>/dev/null || kill "$pid" 2>/dev/null || true; done; }
trap cleanup EXIT

# Starts `mortar dev` with the per-session limits off (the bot is one IP sending as fast as it
# can) and DEV_THREADS runtime threads (0: one per core); sets DEV_PID, DEV_URL, DEV_ADMIN.
start_dev() {
  MORTAR_NODE__WORKER_THREADS=${DEV_THREADS:-0} MORTAR_GATEWAY__RATE_PER_SEC=0 MORTAR_GATEWAY__MAX_CONNECTIONS_PER_IP=0 \
  MORTAR_ADMIN__LISTEN=127.0.0.1:0 RUST_LOG=info NO_COLOR=1 \
    setsid "$bin" dev --listen 127.0.0.1:0 >"$out/dev.out" 2>"$out/dev.err" &
  DEV_PID=$!
  pids+=("$DEV_PID")
  for _ in $(seq 100); do grep -q "listening on" "$out/dev.out" 2>/dev/null && break; sleep 0.1; done
  DEV_URL=$(sed -n 's/^mortar: gateway listening on //p' "$out/dev.out")
  DEV_ADMIN=$(sed -n 's|.*admin listening on http://\([^/]*\)/metrics.*|\1|p' "$out/dev.err")
}
stop_dev() { kill "$DEV_PID"; wait "$DEV_PID" 2>/dev/null || true; }

bot() { # name clients [bot args...]
  local name=$1 clients=$2; shift 2
  for run in $(seq "$runs"); do
    "$bin" bot --clients "$clients" --duration "${seconds}s" --quiet --json "$out/$name-c$clients-r$run.json" "$@" \
      | sed -n 's/^  requests\/s/  '"$name"' c='"$clients"' run '"$run"': req\/s/p'
  done
}

if want dev; then
echo "== mortar dev, echo"
start_dev
for clients in 1 100 1000; do bot mortar-dev "$clients" --url "$DEV_URL"; done
stop_dev
echo "== mortar dev, echo, split: node and bot one runtime thread each"
DEV_THREADS=1 start_dev
for clients in 100 1000; do bot mortar-dev-split "$clients" --url "$DEV_URL" --threads 1; done
stop_dev

# A steadier yardstick than closed-loop throughput: the node's CPU time per request at a fixed
# open-loop load (100 clients x 400 req/s = 40k req/s).
echo "== mortar dev, CPU per request at 40k req/s"
start_dev
cpu_ticks() { awk '{print $14 + $15}' "/proc/$DEV_PID/stat"; }
ticks_before=$(cpu_ticks)
"$bin" bot --url "$DEV_URL" --clients 100 --rate 400 --duration "${seconds}s" --quiet --json "$out/mortar-cpu.json" >/dev/null
ticks_after=$(cpu_ticks)
python3 - "$out/mortar-cpu.json" "$ticks_before" "$ticks_after" "$(getconf CLK_TCK)" <<'PY'
import json, sys
report = json.load(open(sys.argv[1]))
ticks = int(sys.argv[3]) - int(sys.argv[2])
micros = ticks / int(sys.argv[4]) * 1e6 / max(report["ok"], 1)
report["cpu_us_per_request"] = round(micros, 2)
json.dump(report, open(sys.argv[1], "w"), indent=2)
print(f"  {report['requests_per_sec']:.0f} req/s, {micros:.1f} µs of node CPU per request")
PY
stop_dev
fi

if want idle; then
echo "== mortar dev, 10,000 idle connections"
start_dev
rss() { awk '/VmRSS/ {print $2}' "/proc/$DEV_PID/status"; }
before=$(rss)
"$bin" bot --url "$DEV_URL" --clients 10000 --scenario idle --duration 60s --quiet >/dev/null &
idle_bot=$!
for _ in $(seq 600); do
  open=$(curl -s "http://$DEV_ADMIN/metrics" | awk '/^mortar_gateway_connections / {print $2}')
  [ "${open:-0}" -ge 10000 ] && break
  sleep 0.1
done
sleep 2
after=$(rss)
echo "{\"connections\": 10000, \"rss_before_kib\": $before, \"rss_after_kib\": $after}" >"$out/mortar-idle.json"
echo "  RSS $before KiB -> $after KiB: $(( (after - before) * 1024 / 10000 )) bytes per idle connection"
kill "$idle_bot"; wait "$idle_bot" 2>/dev/null || true
stop_dev
fi

if want pinus; then
echo "== Pinus 1.7.4"
(cd bench/peers/pinus && { [ -d node_modules ] || npm ci --no-audit --no-fund >/dev/null; })
(cd bench/peers/pinus && exec setsid node app.js >"../../../$out/pinus.log" 2>&1) &
pinus_pid=$!
pids+=("$pinus_pid")
for _ in $(seq 200); do (exec 3<>/dev/tcp/127.0.0.1/3010) 2>/dev/null && break; sleep 0.1; done
sleep 2
for clients in 100 1000; do
  bot pinus-connector "$clients" --url ws://127.0.0.1:3010 --protocol pinus --route connector.entryHandler.echo
  bot pinus-forward "$clients" --url ws://127.0.0.1:3010 --protocol pinus --route echo.echoHandler.echo
  bot pinus-connector-split "$clients" --url ws://127.0.0.1:3010 --protocol pinus --route connector.entryHandler.echo --threads 1
done
kill -- "-$pinus_pid" 2>/dev/null || true
fi

if want cluster; then
  scripts/bench-cluster.sh "$bin" "$out" "$seconds" "$runs"
fi

if want push; then
  scripts/bench-push.sh "$bin" "$out" "$seconds" "$runs"
fi

if want group; then
  scripts/bench-push.sh "$bin" "$out" "$seconds" "$runs" group
fi

if want login; then
  scripts/bench-login.sh "$bin" "$out" "$seconds" "$runs"
fi

if want match; then
  scripts/bench-match.sh "$bin" "$out" "$seconds" "$runs"
fi

python3 - "$out" <<'PY'
import json, glob, os, statistics, sys
out = sys.argv[1]
rows = {}
for path in glob.glob(os.path.join(out, "*-c*-r*.json")):
    name, rest = os.path.basename(path).rsplit("-c", 1)
    clients = int(rest.split("-r")[0])
    report = json.load(open(path))
    rows.setdefault((name, clients), []).append(report)
def median(reports, key):
    return statistics.median(r[key] if key == "requests_per_sec" else r["latency_ms"][key] for r in reports)
lines = ["| target | clients | req/s (median) | p50 ms | p99 ms | errors |", "|---|---:|---:|---:|---:|---|"]
for (name, clients), reports in sorted(rows.items()):
    errors = sum(sum(r["errors"].values()) for r in reports)
    lines.append(f"| {name} | {clients} | {median(reports, 'requests_per_sec'):,.0f} | {median(reports, 'p50'):.2f} | {median(reports, 'p99'):.2f} | {errors} |")
def rps(name, clients):
    return median(rows[(name, clients)], "requests_per_sec") if (name, clients) in rows else None
lines.append("")
for clients in (100, 1000):
    for mortar, peer, label in [("mortar-dev", "pinus-connector", "Pinus connector"),
                                ("mortar-dev", "pinus-forward", "Pinus forwarding"),
                                ("mortar-dev-split", "pinus-connector-split", "Pinus connector, split")]:
        m, p = rps(mortar, clients), rps(peer, clients)
        if m and p:
            lines.append(f"{mortar} ÷ {label} at {clients} clients: {m / p:.2f}×")
table = "\n".join(lines)
open(os.path.join(out, "summary.md"), "w").write(table + "\n")
print(table)
PY
echo "results in $out"
