#!/usr/bin/env bash
# SSH fan-out: 1,000 short tasks over 4 local sshd nodes x 8 slots, stage vs GNU parallel
# --sshlogin over warm ControlMasters, with the test nodes' fast sshd config and with stock
# sshd defaults. Prints tasks/s and the ratio (target: stage >= 3x GNU parallel).
#
#   benches/ssh.sh [fanout|broadcast]   TASKS=1000 NODES=4 SLOTS=8, BROADCAST_NODES=32 by default
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

echo "machine: $(nproc) cores; $(ssh -V 2>&1); stage $(git rev-parse --short HEAD 2>/dev/null || echo '?')"
case "${1:-all}" in
  fanout) run_once fast; run_once stock ;;
  broadcast) broadcast ;;
  *) run_once fast; run_once stock; broadcast ;;
esac
