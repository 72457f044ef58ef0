#!/usr/bin/env bash
# SSH fan-out: 1,000 short tasks over 4 local sshd nodes x 8 slots, stage vs GNU parallel
# --sshlogin over warm ControlMasters, with the test nodes' fast sshd config and with stock
# sshd defaults. Prints tasks/s and the ratio (target: stage >= 3x GNU parallel).
#
#   benches/ssh.sh [fanout|broadcast|scale]   TASKS=1000 NODES=4 SLOTS=8, BROADCAST_NODES=32,
#                                             SCALE_NODES=32 SCALE_SLOTS=120 SCALE_SLEEP=30
#                                             SCALE_PARALLEL=0 (skip GNU parallel)
set -euo pipefail
source "$(dirname "$0")/lib.sh"
TASKS=${TASKS:-1000}
NODES=${NODES:-4}
SLOTS=${SLOTS:-8}
PREFIX=${PREFIX:-127.0.77}
PORT=22022

needs "apt-get install parallel openssh-server bc" parallel /usr/sbin/sshd bc
bench_start ssh
# The ControlMasters GNU parallel and stage leave behind name $work in their sockets.
on_exit() { pkill -f "$work" 2>/dev/null || true; }
mkdir -p /run/sshd
ssh-keygen -q -t ed25519 -N '' -f "$work/client"
cat > "$work/ssh_config" <<CFG
Host $PREFIX.*
  User root
  Port $PORT
  IdentityFile $work/client
  IdentitiesOnly yes
  StrictHostKeyChecking accept-new
  UserKnownHostsFile $work/known_hosts
  BatchMode yes
CFG

start_nodes() { # fast|stock
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  pids=()
  sleep 0.2
  for i in $(seq 2 $((NODES + 1))); do
    [ -f "$work/host$i" ] || ssh-keygen -q -t ed25519 -N '' -f "$work/host$i"
    {
      echo "ListenAddress $PREFIX.$i:$PORT"
      echo "HostKey $work/host$i"
      echo "PidFile $work/sshd$i.pid"
      echo "AuthorizedKeysFile $work/client.pub"
      printf 'PermitRootLogin prohibit-password\nPasswordAuthentication no\nUsePAM no\nStrictModes no\nUseDNS no\nMaxSessions 200\nMaxStartups 200:30:400\n'
      if [ "$1" = fast ]; then
        echo "SetEnv SHLVL=1"
        echo "KexAlgorithms -sntrup761x25519-sha512@openssh.com,sntrup761x25519-sha512"
      fi
    } > "$work/sshd$i.conf"
    /usr/sbin/sshd -D -f "$work/sshd$i.conf" &
    pids+=($!)
  done
  for i in $(seq 2 $((NODES + 1))); do
    wait_port "$PORT" "$PREFIX.$i"
  done
}

mkdir -p "$work/lustre/in" "$work/blob"
for i in $(seq -f '%05g' 1 "$TASKS"); do : > "$work/lustre/in/t$i"; done
cat > "$work/p.yaml" <<YAML
name: sshbench
filesystem:
  name: benchfs
  mount: lustre
  hsm: { container: blob }
pool:
  hosts: "$PREFIX.[2-$((NODES + 1))]"
  slots: $SLOTS
  ssh_config: ssh_config
steps:
  - process:
      foreach: "in/*"
      command: true {{input}}
YAML

run_once() { # fast|stock
  start_nodes "$1"
  rm -rf "$work/state"
  local t0 t1 t2 logins=""
  t0=$(now)
  "$STAGE" --state-dir "$work/state" run -q "$work/p.yaml"
  t1=$(now)
  # GNU parallel over warm masters: open them first, outside the timing.
  for i in $(seq 2 $((NODES + 1))); do
    ssh -F "$work/ssh_config" -o ControlMaster=yes -o ControlPath="$work/cm-%h" -o ControlPersist=120 -N -f "$PREFIX.$i"
    logins="$logins${logins:+,}$SLOTS/$PREFIX.$i"
  done
  local t1b
  t1b=$(now)
  (cd "$work/lustre" && ls in | parallel --sshlogin "$logins" \
    --ssh "ssh -F $work/ssh_config -o ControlMaster=auto -o ControlPath=$work/cm-%h" true "$work/lustre/in/{}")
  t2=$(now)
  for i in $(seq 2 $((NODES + 1))); do
    ssh -F "$work/ssh_config" -o ControlPath="$work/cm-%h" -O exit "$PREFIX.$i" 2>/dev/null || true
  done
  local s p
  s=$(echo "$t1 - $t0" | bc -l); p=$(echo "$t2 - $t1b" | bc -l)
  printf 'ssh %-5s %d tasks, %d nodes x %d slots: stage %.2fs (%.0f tasks/s), GNU parallel --sshlogin %.2fs (%.0f tasks/s); stage/parallel throughput %.1fx (target >= 3x)\n' \
    "$1" "$TASKS" "$NODES" "$SLOTS" "$s" "$(echo "$TASKS / $s" | bc -l)" "$p" "$(echo "$TASKS / $p" | bc -l)" "$(echo "$p / $s" | bc -l)"
}

# Broadcast: one command on every one of BROADCAST_NODES nodes, stage exec vs pdsh vs clush.
broadcast() {
  local n=${BROADCAST_NODES:-32} rounds=${ROUNDS:-5}
  NODES=$n start_nodes fast
  sed -i "s/^  hosts: .*/  hosts: \"$PREFIX.[2-$((n + 1))]\"/" "$work/p.yaml"
  rm -rf "$work/state"
  # Learn host keys once, outside the timing, for all three tools.
  "$STAGE" --state-dir "$work/state" exec "$work/p.yaml" -- true >/dev/null
  cp "$work/state/known_hosts" "$work/known_hosts"
  local t0 t1 t2 t3
  t0=$(now)
  for _ in $(seq "$rounds"); do "$STAGE" --state-dir "$work/state" exec "$work/p.yaml" -- hostname >/dev/null; done
  t1=$(now)
  for _ in $(seq "$rounds"); do
    PDSH_SSH_ARGS_APPEND="-F $work/ssh_config" pdsh -R ssh -f "$n" -w "$PREFIX.[2-$((n + 1))]" hostname >/dev/null
  done
  t2=$(now)
  for _ in $(seq "$rounds"); do
    clush -f "$n" -w "$PREFIX.[2-$((n + 1))]" -o "-F $work/ssh_config" hostname >/dev/null
  done
  t3=$(now)
  local s p c
  s=$(echo "($t1 - $t0) / $rounds" | bc -l); p=$(echo "($t2 - $t1) / $rounds" | bc -l); c=$(echo "($t3 - $t2) / $rounds" | bc -l)
  printf 'broadcast `hostname` on %d nodes, mean of %d rounds: stage exec %.2fs, pdsh %.2fs, clush %.2fs; stage/pdsh time %.2f, stage/clush time %.2f (target <= 1)\n' \
    "$n" "$rounds" "$s" "$p" "$c" "$(echo "$s / $p" | bc -l)" "$(echo "$s / $c" | bc -l)"
}

# Scale (#16): SCALE_NODES x SCALE_SLOTS slots of `sleep SCALE_SLEEP`, all at once: time until
# every slot is busy, local processes, PSS and open files of the client's process tree, for
# stage, GNU parallel (-S SLOTS/node over warm ControlMasters) and pdsh's floor (one
# connection per host running SLOTS sleeps itself). Fast sshd nodes (MaxSessions 200), or GNU
# parallel could not open more than 10 sessions per host at all.
busy() { pgrep -fc "sleep $1" || true; }
tree_pids() { # pid: it and its descendants
  local p=$1 c
  echo "$p"
  for c in $(pgrep -P "$p" || true); do tree_pids "$c"; done
}
measure() { # label pid want secs start: waits for every slot busy, then samples the tree
  local label=$1 pid=$2 want=$3 secs=$4 t0=$5 t procs pss fds p n peak=0 first=""
  while n=$(busy "$secs") && [ "$n" -lt "$want" ]; do
    [ "$n" -gt "$peak" ] && peak=$n
    # Start-up (listing inputs, handshakes) apart from the fan-out itself.
    [ -z "$first" ] && [ "$n" -gt 0 ] && first=$(now)
    kill -0 "$pid" 2>/dev/null || {
      printf '%-34s never had every slot busy: at most %d of %d at once, done after %.1fs\n' \
        "$label" "$peak" "$want" "$(secs "$t0" "$(now)")"
      return
    }
    sleep 0.1
  done
  t=$(now)
  procs=0 pss=0 fds=0
  local v
  for p in $(tree_pids "$pid"); do
    procs=$((procs + 1))
    # A process that ended meanwhile has no numbers: it counts 0.
    v=$(awk '/^Pss:/ {print $2}' "/proc/$p/smaps_rollup" 2>/dev/null || true)
    pss=$((pss + ${v:-0}))
    v=$(ls "/proc/$p/fd" 2>/dev/null | wc -l || true)
    fds=$((fds + ${v:-0}))
  done
  printf '%-34s all %d slots busy after %5.1fs (first after %4.1fs); %5d local processes, %7.1f MB PSS, %6d open files\n' \
    "$label" "$want" "$(secs "$t0" "$t")" "$(secs "$t0" "${first:-$t}")" "$procs" "$(echo "$pss / 1024" | bc -l)" "$fds"
}
scale() {
  local n=${SCALE_NODES:-32} slots=${SCALE_SLOTS:-120} secs=${SCALE_SLEEP:-30}.7
  local want=$((n * slots)) hosts="$PREFIX.[2-$((n + 1))]" t0 pid logins=""
  NODES=$n start_nodes fast
  rm -rf "$work/state" "$work/lustre/in"
  mkdir -p "$work/lustre/in"
  for i in $(seq -f '%05g' 1 "$want"); do : > "$work/lustre/in/t$i"; done
  sed -e "s/^  hosts: .*/  hosts: \"$hosts\"/" -e "s/^  slots: .*/  slots: $slots/" \
    -e "s/command: true {{input}}/command: sleep $secs/" "$work/p.yaml" > "$work/scale.yaml"
  echo "scale: $n nodes x $slots slots = $want tasks of sleep $secs"
  t0=$(now)
  "$STAGE" --state-dir "$work/state" run -q "$work/scale.yaml" 2>"$work/stage.err" & pid=$!
  measure "stage" "$pid" "$want" "$secs" "$t0"
  wait "$pid" || { cat "$work/stage.err"; return 1; }
  # GNU parallel takes minutes here (it never fills the pool): SCALE_PARALLEL=0 skips it.
  if [ "${SCALE_PARALLEL:-1}" = 1 ]; then
    for i in $(seq 2 $((n + 1))); do
      ssh -F "$work/ssh_config" -o ControlMaster=yes -o ControlPath="$work/cm-%h" -o ControlPersist=300 -N -f "$PREFIX.$i"
      logins="$logins${logins:+,}$slots/$PREFIX.$i"
    done
    t0=$(now)
    (cd "$work/lustre" && ls in | parallel --sshlogin "$logins" \
      --ssh "ssh -F $work/ssh_config -o ControlMaster=auto -o ControlPath=$work/cm-%h" "sleep $secs; : {}" ) \
      2>"$work/parallel.err" & pid=$!
    measure "GNU parallel -S $slots/node (warm)" "$pid" "$want" "$secs" "$t0"
    wait "$pid" || grep -v "Permanently added" "$work/parallel.err" | sort | uniq -c | sort -rn | head -3
    for i in $(seq 2 $((n + 1))); do
      ssh -F "$work/ssh_config" -o ControlPath="$work/cm-%h" -O exit "$PREFIX.$i" 2>/dev/null || true
    done
  fi
  if command -v pdsh >/dev/null; then
    t0=$(now)
    PDSH_SSH_ARGS_APPEND="-F $work/ssh_config" pdsh -R ssh -f "$n" -w "$hosts" \
      "for i in \$(seq $slots); do sleep $secs & done; wait" & pid=$!
    measure "pdsh floor (1 connection/host)" "$pid" "$want" "$secs" "$t0"
    wait "$pid" || true
  fi
}

echo "machine: $(nproc) cores; $(ssh -V 2>&1); stage $(git rev-parse --short HEAD 2>/dev/null || echo '?')"
case "${1:-all}" in
  fanout) run_once fast; run_once stock ;;
  broadcast) broadcast ;;
  scale) scale ;;
  *) run_once fast; run_once stock; broadcast ;;
esac
