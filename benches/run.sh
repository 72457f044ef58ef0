#!/usr/bin/env bash
# Benchmarks for the pipeline engine, each measured side by side with its baseline in the same
# run. Prints one line per benchmark with the ratio and the target from issue 3.
#
#   benches/run.sh                 # all three
#   benches/run.sh fanout noop     # some of them
#
# Sizes can be lowered for a quick look: FANOUT_TASKS, NOOP_TASKS, PLAN_FILES.
set -euo pipefail
source "$(dirname "$0")/lib.sh"

FANOUT_TASKS=${FANOUT_TASKS:-10000}
NOOP_TASKS=${NOOP_TASKS:-100000}
PLAN_FILES=${PLAN_FILES:-1000000}

needs "apt-get install parallel time bc" parallel /usr/bin/time bc
bench_start engine

# A pipeline with one process step over `in/<glob>` running `true {{input}}`.
pipeline() { # dir glob slots
  mkdir -p "$1/blob" "$1/lustre"
  cat > "$1/p.yaml" <<YAML
name: bench
filesystem:
  name: benchfs
  mount: lustre
  hsm: { container: blob }
pool: { slots: $3 }
steps:
  - process:
      name: work
      foreach: "in/$2"
      command: true {{input}}
YAML
}

# N empty files, 1000 per directory: in/d0000/f000000 ...
make_files() { # dir n
  python3 - "$1/lustre/in" "$2" <<'PY'
import os, sys
root, n = sys.argv[1], int(sys.argv[2])
for i in range(n):
    d = os.path.join(root, "d%04d" % (i // 1000))
    if i % 1000 == 0:
        os.makedirs(d, exist_ok=True)
    open(os.path.join(d, "f%06d" % i), "w").close()
PY
}

bench_fanout() {
  local d=$work/fanout
  pipeline "$d" '*/*' 2
  make_files "$d" "$FANOUT_TASKS"
  local t0 t1 t2
  t0=$(now)
  "$STAGE" --state-dir "$d/state" run -q "$d/p.yaml"
  t1=$(now)
  (cd "$d/lustre" && find in -type f | sort | parallel -j2 true "$d/lustre/{}")
  t2=$(now)
  local s p
  s=$(secs "$t0" "$t1"); p=$(secs "$t1" "$t2")
  local journaled
  journaled=$("$STAGE" --state-dir "$d/state" status --output json "$d/p.yaml" |
    python3 -c 'import json,sys; print(json.load(sys.stdin)["steps"][0]["task_counts"].get("succeeded",0))')
  printf 'fanout  %d tasks on 2 slots: stage %.2fs (%.0f tasks/s, %d journaled), GNU parallel -j2 %.2fs (%.0f tasks/s); ratio %s (target <= 0.5)\n' \
    "$FANOUT_TASKS" "$s" "$(ratio "$FANOUT_TASKS" "$s")" "$journaled" "$p" "$(ratio "$FANOUT_TASKS" "$p")" "$(ratio "$s" "$p")"
}

bench_noop() {
  local d=$work/noop
  pipeline "$d" '*/*' 8
  make_files "$d" "$NOOP_TASKS"
  "$STAGE" --state-dir "$d/state" run -q "$d/p.yaml"
  local out
  out=$( { /usr/bin/time -f '%e %M' "$STAGE" --state-dir "$d/state" run -q "$d/p.yaml"; } 2>&1 | tail -1)
  read -r t rss <<<"$out"
  printf 'noop    rerun of a finished %d-task pipeline: %.2fs (target < 2s), peak RSS %d MB (target < 200 MB)\n' \
    "$NOOP_TASKS" "$t" "$((rss / 1024))"
}

bench_plan() {
  local d=$work/plan
  pipeline "$d" '*/*' 2
  make_files "$d" "$PLAN_FILES"
  sync
  local t0 t1 out
  t0=$(now)
  find "$d/lustre/in" -type f >/dev/null
  t1=$(now)
  out=$( { /usr/bin/time -f '%e %M' "$STAGE" --state-dir "$d/state" plan "$d/p.yaml" >/dev/null; } 2>&1 | tail -1)
  read -r t rss <<<"$out"
  local f
  f=$(secs "$t0" "$t1")
  printf 'plan    over %d input files: stage plan %.2fs, find %.2fs; ratio %s (target <= 2), peak RSS %d MB (target < 300 MB)\n' \
    "$PLAN_FILES" "$t" "$f" "$(ratio "$t" "$f")" "$((rss / 1024))"
}

echo "machine: $(nproc) cores, $(free -g | awk '/Mem:/ {print $2}') GiB, $(uname -r); stage $(git rev-parse --short HEAD 2>/dev/null || echo '?')"
for b in "${@:-fanout noop plan}"; do
  for x in $b; do "bench_$x"; done
done
