# What every bench script needs, sourced right after `set -euo pipefail`: run from the
# repository root, the release binary in $STAGE, a scratch directory $work removed on exit,
# background services in $pids stopped on exit (and `on_exit`, if the script defines it, run
# first), free ports on 127.0.0.1, and wall-clock arithmetic.

cd "$(dirname "${BASH_SOURCE[1]}")/.."

# needs HINT TOOL...: exits 2 with HINT (how to install) if a tool is missing.
needs() {
  local hint=$1 tool
  shift
  for tool in "$@"; do
    command -v "$tool" >/dev/null || { echo "needs $tool: $hint" >&2; exit 2; }
  done
}

# bench_start NAME: builds stage, makes $work, arranges the cleanup.
bench_start() {
  cargo build --release -q
  STAGE=$PWD/target/release/stage
  work=$(mktemp -d "${TMPDIR:-/tmp}/stage-$1-bench.XXXXXX")
  pids=()
  trap bench_cleanup EXIT
}

bench_cleanup() {
  [ "$(type -t on_exit)" = function ] && on_exit
  local p
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  rm -rf "$work"
}

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# wait_port PORT [HOST]: up to 10 s for something to listen there.
wait_port() {
  local _
  for _ in $(seq 200); do
    (exec 3<>"/dev/tcp/${2:-127.0.0.1}/$1") 2>/dev/null && return 0
    sleep 0.05
  done
  echo "nothing listens on ${2:-127.0.0.1}:$1" >&2
  exit 1
}

now() { date +%s.%N; }
secs() { echo "$2 - $1" | bc -l; }
rate() { echo "scale=1; $1 / $2" | bc -l; }
ratio() { echo "scale=2; $1 / $2" | bc -l; }

# azure_prerequisites EMULATOR_PORT BLOB_ENDPOINT SUBNET_ID: what the seed's Terraform makes
# before stage runs, made in the emulator and Azurite: the subnet (a /24) and the logging
# container `logs` (an export of nothing creates it).
azure_prerequisites() {
  curl -sf -X PUT -H 'Authorization: Bearer bench' -H 'Content-Type: application/json' \
    -d '{"properties":{"addressPrefix":"10.0.0.0/24"}}' \
    "http://127.0.0.1:$1$3?api-version=2024-05-01" >/dev/null
  mkdir -p "$work/nothing"
  "$STAGE" --state-dir "$work/nothing-state" -q export "$work/nothing" "$2/logs"
}
