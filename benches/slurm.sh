#!/usr/bin/env bash
# Prolog and epilog latency with nothing to stage (issue 7's target: under 50 ms each), as
# Slurm runs them: SLURM_JOB_ID set, the batch script fetched with `scontrol write
# batch_script` from a real slurmctld. Also without Slurm (`--script`), which is stage alone.
#
#   benches/slurm.sh            # N=50 runs each
set -euo pipefail
cd "$(dirname "$0")/.."
N=${N:-50}
for tool in slurmctld slurmd sbatch scontrol munged python3; do
  command -v "$tool" >/dev/null || { echo "needs $tool: apt-get install slurm-wlm munge" >&2; exit 2; }
done
cargo build --release -q
STAGE=$PWD/target/release/stage
work=$(mktemp -d "${TMPDIR:-/tmp}/stage-slurm-bench.XXXXXX")
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$work"; }
trap cleanup EXIT
# Ask the daemon, not the socket file: images ship a stale socket with no munged behind it.
if ! munge -n >/dev/null 2>&1; then
  mkdir -p /run/munge && chown munge:munge /run/munge
  [ -f /etc/munge/munge.key ] || runuser -u munge -- mungekey -c
  runuser -u munge -- /usr/sbin/munged --force
fi
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
d=$work
mkdir -p "$d/state" "$d/spool"
cat > "$d/slurm.conf" <<CONF
ClusterName=stagebench
SlurmctldHost=localhost(127.0.0.1)
SlurmUser=root
SlurmctldPort=$(port)
SlurmdPort=$(port)
AuthType=auth/munge
StateSaveLocation=$d/state
SlurmdSpoolDir=$d/spool
SlurmctldPidFile=$d/slurmctld.pid
SlurmdPidFile=$d/slurmd.pid
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
MailProg=/bin/true
ReturnToService=2
SlurmdParameters=config_overrides
NodeName=stagenode NodeHostname=localhost NodeAddr=127.0.0.1 CPUs=2 State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
CONF
export SLURM_CONF=$d/slurm.conf
slurmctld -D -i >/dev/null 2>&1 & pids+=($!)
sleep 0.5
slurmd -D -N stagenode >/dev/null 2>&1 & pids+=($!)
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
