#!/usr/bin/env bash
# Validation must be linear in the size of the pipeline file: times `stage validate` on files
# with N and 2N `vars`, and N and 2N steps, and prints the ratio of each pair (2.0 is linear;
# a quadratic validator shows 4.0). Release build.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --locked -q
stage=target/release/stage
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
gen() { # kind n file
  python3 - "$1" "$2" "$3" <<'PY'
import sys
kind, n, path = sys.argv[1], int(sys.argv[2]), sys.argv[3]
head = ["name: big", "filesystem:", "  name: bigfs", "  hsm: { container: blob }"]
if kind == "vars":
    body = ["vars:"] + [f'  v{i}: "x{i}"' for i in range(n)] + ["steps:", "  - ensure: {}"]
else:
    body = ["steps:"] + [f"  - process: {{ name: s{i}, command: 'true' }}" for i in range(n)]
open(path, "w").write("\n".join(head + body) + "\n")
PY
}
secs() { # file
  local t0 t1
  t0=$(date +%s.%N); "$stage" validate -q "$1" >/dev/null; t1=$(date +%s.%N)
  echo "$t1 - $t0" | bc -l
}
for spec in "vars 100000" "steps 30000"; do
  set -- $spec
  gen "$1" "$2" "$dir/a.yaml"
  gen "$1" $(( $2 * 2 )) "$dir/b.yaml"
  a=$(secs "$dir/a.yaml"); b=$(secs "$dir/b.yaml")
  printf '%-6s %7d: %.2fs  %7d: %.2fs  ratio %.2f (linear 2.0, quadratic 4.0)\n' \
    "$1" "$2" "$a" $(( $2 * 2 )) "$b" "$(echo "$b / $a" | bc -l)"
done
