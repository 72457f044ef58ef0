# stage remote worker: one per host, over one SSH session, running any number of tasks at
# once (stage sends no more than the host's slots).
# Arguments: $1 = directory for this state's process-group files, $2 = this host's name as
# stage knows it (plain characters only), which keeps apart the files of hosts that share
# that directory (an NFS $TMPDIR, several nodes on one machine).
# Requests on stdin:
#   "T <id> <timeout-seconds> <end-marker>", the script's lines, the marker: run a task;
#   "K <id>": kill that task's process group (TERM, then KILL a second later).
# Replies on stdout, each task's written whole under a lock, as tasks end in any order:
#   "O <id> <bytes>" + stdout and "E <id> <bytes>" + stderr (each only if non-empty), then
#   "X <id> <exit status>".
# A task's output waits in a file on the node until it ends, so a chatty task never holds
# the channel while others run, and nothing is held in memory.
# At end of input (stage closed the session, or its connection died) every task still
# running is killed: nothing is left behind on the node.
umask 077
base=$1
host=$2
command -v flock >/dev/null 2>&1 || { echo "NEEDS flock (util-linux)"; exit 71; }
mkdir -p "$base" || exit 70
d=$(mktemp -d "${TMPDIR:-/tmp}/stage-host.XXXXXX") || exit 70
: >"$d/lock"
# What a crashed earlier run of this state left running on this host.
for f in "$base/$host".*.pgid; do
  [ -f "$f" ] && kill -KILL -"$(cat "$f")" 2>/dev/null
  rm -f "$f"
done

task() { # id limit: runs $d/$id.sh, reports it
  if [ "$2" -gt 0 ]; then
    setsid timeout -k 2 "$2" sh "$d/$1.sh" </dev/null >"$d/$1.o" 2>"$d/$1.e" &
  else
    setsid sh "$d/$1.sh" </dev/null >"$d/$1.o" 2>"$d/$1.e" &
  fi
  pid=$!
  echo "$pid" >"$base/$host.$1.pgid"
  echo "$pid" >"$d/$1.pid"
  # Started as the input ended: the sweep below may have missed it.
  if [ -e "$d/stop" ]; then stop "$pid" >/dev/null 2>&1 & fi
  wait "$pid"
  rc=$?
  {
    flock 9
    if [ -s "$d/$1.o" ]; then echo "O $1 $(wc -c <"$d/$1.o")"; cat "$d/$1.o"; fi
    if [ -s "$d/$1.e" ]; then echo "E $1 $(wc -c <"$d/$1.e")"; cat "$d/$1.e"; fi
    echo "X $1 $rc"
  } 9>>"$d/lock"
  rm -f "$base/$host.$1.pgid" "$d/$1.pid" "$d/$1.sh" "$d/$1.o" "$d/$1.e"
}

stop() { # pgid: TERM, then KILL for whatever ignored it (no `--`: dash refuses it)
  kill -TERM -"$1" 2>/dev/null && sleep 1
  kill -KILL -"$1" 2>/dev/null
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
    [ -f "$d/$2.pid" ] && stop "$(cat "$d/$2.pid")" >/dev/null 2>&1 &
    ;;
  esac
done
: >"$d/stop"
for f in "$d"/*.pid; do
  [ -f "$f" ] && stop "$(cat "$f")" >/dev/null 2>&1 &
done
wait
rm -rf "$d"
