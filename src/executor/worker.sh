# stage remote worker: one per host, over one SSH session, running any number of tasks at
# once (stage sends no more than the host's slots).
# Arguments: $1 = directory for this state's process-group files, $2 = this host's name as
# stage knows it (plain characters only): its files go in a directory of that name, kept
# apart from other hosts sharing $1 (an NFS $TMPDIR, several nodes on one machine).
# Requests on stdin:
#   "T <id> <timeout-seconds> <end-marker>", the script's lines, the marker: run a task;
#   "K <id>": kill that task's process group (TERM, then KILL if it still runs a second later).
# Replies on stdout, each task's written whole under a lock, as tasks end in any order:
#   "O <id> <bytes>" + stdout and "E <id> <bytes>" + stderr (each only if non-empty), then
#   "X <id> <exit status>".
# A task's output waits in a file on the node until it ends, so a chatty task never holds
# the channel while others run, and nothing is held in memory.
# At end of input (stage closed the session, or its connection died) every task still
# running is killed: nothing is left behind on the node.
#
# Process-group ids are reused once a group is gone, and a signal to a reused one hits
# someone else's processes (this may run as root). So a group is signalled only while it is
# the task's: its leader is the process recorded (same start time), or the leader is gone
# while the group still has members, which the kernel keeps from being reused. The local
# executor follows the same rule; the leftovers of a crashed run are also checked for the
# same boot.
umask 077
base=$1
host=$2
command -v flock >/dev/null 2>&1 || { echo "NEEDS flock (util-linux)"; exit 71; }
mkdir -p "$base/$host" || exit 70
d=$(mktemp -d "${TMPDIR:-/tmp}/stage-host.XXXXXX") || exit 70
: >"$d/lock"

started() { # pid: its start time (clock ticks since boot), from /proc/PID/stat field 22
  s=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
  set -- ${s##*) }
  echo "${20}"
}

boot=$(cat /proc/sys/kernel/random/boot_id 2>/dev/null)

ours() { # pgid start-time: the group is still the one whose leader started then
  [ "${1:-0}" -gt 1 ] || return 1 # never 0 or 1: `kill -KILL -1` is every process there is
  if now=$(started "$1"); then
    [ "$now" = "$2" ]
  else
    kill -0 -"$1" 2>/dev/null
  fi
}

# What a crashed earlier run of this state left running on this host, if this boot runs it.
for f in "$base/$host"/*.pgid; do
  [ -f "$f" ] || continue
  read -r pid since was <"$f"
  rm -f "$f"
  case $pid in '' | *[!0-9]*) continue ;; esac
  [ "$was" = "$boot" ] && ours "$pid" "$since" && kill -KILL -"$pid" 2>/dev/null
done

task() { # id limit: runs $d/$id.sh, reports it
  if [ "$2" -gt 0 ]; then
    setsid timeout -k 2 "$2" sh "$d/$1.sh" </dev/null >"$d/$1.o" 2>"$d/$1.e" &
  else
    setsid sh "$d/$1.sh" </dev/null >"$d/$1.o" 2>"$d/$1.e" &
  fi
  pid=$!
  group="$pid $(started "$pid")"
  echo "$group $boot" >"$base/$host/$1.pgid"
  echo "$group" >"$d/$1.pid"
  # Started as the input ended: the sweep below may have missed it.
  if [ -e "$d/stop" ]; then stop "$1" >/dev/null 2>&1 & fi
  wait "$pid"
  rc=$?
  {
    flock 9
    if [ -s "$d/$1.o" ]; then echo "O $1 $(wc -c <"$d/$1.o")"; cat "$d/$1.o"; fi
    if [ -s "$d/$1.e" ]; then echo "E $1 $(wc -c <"$d/$1.e")"; cat "$d/$1.e"; fi
    echo "X $1 $rc"
  } 9>>"$d/lock"
  rm -f "$base/$host/$1.pgid" "$d/$1.pid" "$d/$1.sh" "$d/$1.o" "$d/$1.e"
}

stop() { # id: TERM, then KILL for whatever is left of the group a second later
  read -r pid since <"$d/$1.pid" 2>/dev/null || return 0
  ours "$pid" "$since" || return 0
  kill -TERM -"$pid" 2>/dev/null # no `--`: dash refuses it
  n=0
  while [ $n -lt 10 ] && kill -0 -"$pid" 2>/dev/null; do
    sleep 0.1
    n=$((n + 1))
  done
  ours "$pid" "$since" && kill -KILL -"$pid" 2>/dev/null
}

echo "READY"
while IFS= read -r hdr; do
  set -- $hdr
  case $1 in
  T)
    id=$2 limit=$3 end=$4
    case $id$limit in *[!0-9]* | '') exit 72 ;; esac
    exec 3>"$d/$id.sh"
    while IFS= read -r l; do
      [ "$l" = "$end" ] && break
      printf '%s\n' "$l" >&3
    done
    exec 3>&-
    task "$id" "$limit" &
    ;;
  K)
    case $2 in *[!0-9]* | '') continue ;; esac
    stop "$2" >/dev/null 2>&1 &
    ;;
  esac
done
: >"$d/stop"
for f in "$d"/*.pid; do
  [ -f "$f" ] || continue
  id=${f##*/}
  stop "${id%.pid}" >/dev/null 2>&1 &
done
wait
rm -rf "$d"
