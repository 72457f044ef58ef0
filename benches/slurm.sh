#!/usr/bin/env bash
# Issue 7's Slurm benchmarks on a real slurmctld with NODES emulated slurmd nodes (2 CPUs each):
#
# 1. Prolog and epilog latency with nothing to stage (target: under 50 ms each), as Slurm runs
#    them: SLURM_JOB_ID set, the batch script fetched with `scontrol write batch_script`. Also
#    without Slurm (`--script`), which is stage alone.
# 2. TASKS short tasks through the Slurm executor vs the same tasks as one hand-written
#    `sbatch --array=0-(TASKS-1)%THROTTLE --wait`, side by side (target: stage within 1.2x).
#
#   benches/slurm.sh            # N=50 hook runs each, TASKS=1000, NODES=4, THROTTLE=8
set -euo pipefail
source "$(dirname "$0")/lib.sh"
N=${N:-50}
TASKS=${TASKS:-1000}
NODES=${NODES:-4}
THROTTLE=${THROTTLE:-8}
needs "apt-get install slurm-wlm munge" slurmctld slurmd sbatch scontrol munged python3 bc
bench_start slurm
# Ask the daemon, not the socket file: images ship a stale socket with no munged behind it.
if ! munge -n >/dev/null 2>&1; then
  mkdir -p /run/munge && chown munge:munge /run/munge
  [ -f /etc/munge/munge.key ] || runuser -u munge -- mungekey -c
  runuser -u munge -- /usr/sbin/munged --force
fi
d=$work
mkdir -p "$d/state" "$d/spool"
cat > "$d/slurm.conf" <<CONF
ClusterName=stagebench
SlurmctldHost=localhost(127.0.0.1)
SlurmUser=root
SlurmctldPort=$(free_port)
SlurmdPort=$(free_port)
AuthType=auth/munge
StateSaveLocation=$d/state
SlurmdSpoolDir=$d/spool/%n
SlurmctldPidFile=$d/slurmctld.pid
SlurmdPidFile=$d/slurmd-%n.pid
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
MailProg=/bin/true
ReturnToService=2
SchedulerParameters=bf_interval=1,reduce_completing_frag,sched_min_interval=0,batch_sched_delay=0
KillWait=0
CompleteWait=0
SlurmdParameters=config_overrides
Prolog=$d/prolog.sh
Epilog=$d/epilog.sh
$(for i in $(seq "$NODES"); do echo "NodeName=n$i NodeHostname=localhost NodeAddr=127.0.0.1 Port=$(free_port) CPUs=2 State=UNKNOWN"; done)
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
CONF
# The node hooks a site installs (nothing declared here, so they return at once). They matter
# for speed too: Debian's Slurm 22.05 launches array tasks ~10x faster with a Prolog/Epilog
# configured than without (5 vs 50 tasks/s on 4 emulated nodes, measured with plain `true`).
for hook in prolog epilog; do
  printf '#!/bin/sh\nexec %s --state-dir %s slurm %s\n' "$STAGE" "$d/hooks" "$hook" > "$d/$hook.sh"
  chmod 755 "$d/$hook.sh"
done
export SLURM_CONF=$d/slurm.conf
slurmctld -D -i >/dev/null 2>&1 & pids+=($!)
sleep 0.5
for i in $(seq "$NODES"); do
  mkdir -p "$d/spool/n$i"
  slurmd -D -N "n$i" >/dev/null 2>&1 & pids+=($!)
done
for _ in $(seq 100); do [ "$(sinfo -h -o %T 2>/dev/null)" = idle ] && break; sleep 0.1; done
printf '#!/bin/sh\n#SBATCH -N1\nsleep 600\n' > "$d/job.sh"
job=$(sbatch --parsable --output=/dev/null "$d/job.sh")
mean_ms() { # command...
  local t0 t1
  t0=$(date +%s%N)
  for _ in $(seq "$N"); do "$@" >/dev/null; done
  t1=$(date +%s%N)
  echo "scale=1; ($t1 - $t0) / $N / 1000000" | bc -l
}
for hook in prolog epilog; do
  with=$(SLURM_JOB_ID=$job mean_ms "$STAGE" --state-dir "$d/stage" slurm "$hook")
  alone=$(mean_ms "$STAGE" --state-dir "$d/stage" slurm "$hook" --script "$d/job.sh")
  printf '%s with nothing to stage: %s ms as Slurm runs it (scontrol write batch_script included), %s ms with --script (target < 50 ms)\n' "$hook" "$with" "$alone"
done
scancel "$job" || true

# 2. Many short tasks: stage's executor vs one hand-written array, same Slurm, same work.
work() { # dir: TASKS inputs under dir/in
  rm -rf "$1"; mkdir -p "$1/in" "$1/out"
  for i in $(seq 0 $((TASKS - 1))); do printf '%s\n' "$i" > "$1/in/t$(printf %04d "$i").txt"; done
}
work "$d/hand"
cat > "$d/hand/array.sh" <<'SH'
#!/bin/sh
f=$(printf 't%04d' "$SLURM_ARRAY_TASK_ID")
cp "in/$f.txt" "out/$f.txt"
SH
# Timed by polling the queue every 100 ms, tighter than `sbatch --wait` polls: the baseline at
# its best.
t0=$(date +%s%N)
(cd "$d/hand" && sbatch --quiet --array="0-$((TASKS - 1))%$THROTTLE" --output=/dev/null array.sh)
while [ -n "$(squeue -h)" ]; do sleep 0.1; done
t1=$(date +%s%N)
hand=$(( (t1 - t0) / 1000000 ))
[ "$(ls "$d/hand/out" | wc -l)" = "$TASKS" ] || { echo "hand-written array lost tasks" >&2; exit 1; }
work "$d/stage-run"
cat > "$d/stage-run/p.yaml" <<YAML
name: slurmbench
filesystem: { name: fs, mount: $d/stage-run, hsm: { container: blob } }
pool: { slots: $THROTTLE, slurm: {} }
steps:
  - process:
      name: work
      foreach: in/*.txt
      outputs: ["out/{{stem}}.txt"]
      command: cp {{input}} {{output}}
YAML
t0=$(date +%s%N)
"$STAGE" --quiet --state-dir "$d/stage-state" run "$d/stage-run/p.yaml"
t1=$(date +%s%N)
staged=$(( (t1 - t0) / 1000000 ))
[ "$(ls "$d/stage-run/out" | wc -l)" = "$TASKS" ] || { echo "stage lost tasks" >&2; exit 1; }
printf '%s tasks, %s nodes x 2 CPUs, throttle %s: hand-written sbatch --array %.2f s, stage %.2f s, ratio %.2f (target <= 1.2)\n' \
  "$TASKS" "$NODES" "$THROTTLE" "$(echo "$hand/1000" | bc -l)" "$(echo "$staged/1000" | bc -l)" "$(echo "$staged/$hand" | bc -l)"
