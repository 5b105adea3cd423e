# Shared by the bench stages that start their own nodes (bench-push.sh, bench-login.sh); sourced,
# with $out, $seconds and $runs set. Builds the yardstick (../shared/bench/wsbench) and tracks
# the processes it starts in $pids, killed on exit.
shared=../shared/bench/wsbench
[ -d "$shared" ] || { echo "bench: $shared is missing (the yardstick client and server)" >&2; exit 1; }
command -v redis-server >/dev/null || { echo "bench: needs redis-server (apt-get install redis-server)" >&2; exit 1; }
CARGO_TARGET_DIR=target/wsbench cargo build --release --quiet --manifest-path "$shared/Cargo.toml"
ws=target/wsbench/release
pids=()
cleanup() { for pid in "${pids[@]}"; do kill -9 "$pid" 2>/dev/null || true; done; }
trap cleanup EXIT

# Waits for a node's readiness line in FILE; prints the address it names.
ready() {
  for _ in $(seq 100); do grep -q "listening on" "$1" 2>/dev/null && break; sleep 0.1; done
  sed -n 's/^mortar: .* listening on //p' "$1" | head -1
}

# The bare tokio-tungstenite echo at CONNS connections on PORT, RUNS runs; results to JSONL.
bare_echo() {
  local conns=$1 port=$2 jsonl=$3
  echo "== bare tokio-tungstenite echo at $conns connections (the yardstick)"
  "$ws/server" --addr "127.0.0.1:$port" --cfg small >/dev/null 2>&1 &
  local echo_pid=$!
  pids+=("$echo_pid")
  sleep 0.5
  for run in $(seq "$runs"); do
    "$ws/client" --conns "$conns" --warmup 2 --duration "$seconds" --json "$jsonl" --label bare-echo \
      --proto raw --url "ws://127.0.0.1:$port/" --threads 1 | sed -n 's/^RESULT /  bare-echo run '"$run"': /p' | cut -c1-120
  done
  kill "$echo_pid"
}
