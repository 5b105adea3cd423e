#!/usr/bin/env bash
# Runs every test of the workspace: unit tests, end-to-end tests against real nodes on loopback,
# and the `mortar` binary's command-line tests. Installs and starts whatever the tests need.
# Usage: scripts/test.sh [extra cargo test args]
set -euo pipefail
cd "$(dirname "$0")/.."

command -v cargo >/dev/null || { echo "scripts/test.sh: cargo is required (https://rustup.rs)" >&2; exit 1; }

# Debian packages the tests need: redis-server (the cluster, cache and registry tests start their
# own Redis servers on free loopback ports), protobuf-compiler (Google's protoc, which must accept
# every .proto of the repo, as client authors run it, and generates the TypeScript client's code)
# and chromium (the TypeScript client's browser tests).
packages=()
command -v redis-server >/dev/null || packages+=(redis-server)
command -v protoc >/dev/null || packages+=(protobuf-compiler)
# chromium: the TypeScript client's browser tests (clients/ts) drive Debian's Chromium headless.
command -v chromium >/dev/null || packages+=(chromium)
if [ ${#packages[@]} -gt 0 ]; then
  echo "scripts/test.sh: installing ${packages[*]} (Debian packages)" >&2
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${packages[@]}" >/dev/null
fi
export MORTAR_TEST_PROTOC="$(command -v protoc)"

# The MongoDB store's tests start their own nx-27017 (a MongoDB wire-protocol server on SQLite, from
# PyPI; no mongod is installable here) on free loopback ports. It lives in a virtual environment
# under target/, installed once.
nx_venv=target/test-tools/nx-27017
if [ ! -x "$nx_venv/bin/nx-27017" ]; then
  command -v python3 >/dev/null || { echo "scripts/test.sh: python3 (>= 3.10) is required for the MongoDB tests" >&2; exit 1; }
  echo "scripts/test.sh: installing nx-27017 into $nx_venv" >&2
  if ! python3 -m venv "$nx_venv" 2>/dev/null; then
    # Debian's python3 keeps venv in a package of its own.
    rm -rf "$nx_venv"
    sudo=""
    [ "$(id -u)" -eq 0 ] || sudo="sudo"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends python3-venv >/dev/null
    python3 -m venv "$nx_venv"
  fi
  "$nx_venv/bin/pip" install --quiet --disable-pip-version-check "nx-27017==0.8.1"
fi
export MORTAR_TEST_NX_27017="$PWD/$nx_venv/bin/nx-27017"

# The idle-connection test holds 5,000 WebSocket connections (10,000 sockets on loopback).
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

cargo test --workspace --locked "$@"

# The module walkthrough of docs/writing-a-module.md, built as written outside the repository: the
# module's own test with mortar_testing, and a game server binary linking it (its own target dir).
# (Skipped when the command was given test names or cargo arguments.)
[ $# -gt 0 ] || python3 scripts/walkthrough.py

# The TypeScript client (clients/ts): its generated code is current, it builds as its README says,
# and its tests run in Node and in headless Chromium against a real `mortar dev` (the debug binary
# cargo test built, also for `mortar routes`). Needs Node.js >= 18 with npm.
if [ $# -eq 0 ]; then
  command -v npm >/dev/null || { echo "scripts/test.sh: Node.js (>= 18) with npm is required for clients/ts" >&2; exit 1; }
  (
    cd clients/ts
    export MORTAR_BIN="$PWD/../../target/debug/mortar" CHROMIUM="$(command -v chromium)"
    npm ci --no-audit --no-fund --loglevel=error
    npm run --silent check-gen
    npm run --silent build
    npm test
  )
fi
