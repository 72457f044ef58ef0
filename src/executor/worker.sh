# stage remote worker: runs tasks one at a time for one slot, over one SSH session.
# Arguments: $1 = directory for this state's process-group files, $2 = slot number.
# Requests on stdin:  "T <id> <timeout-seconds> <end-marker>", the script's lines, the marker.
# Replies on stdout:  "S <id> <pgid>", then "O <id> <bytes>" + stdout, "E <id> <bytes>" +
#                     stderr (each only if non-empty), then "X <id> <exit status>".
umask 077
base=$1
slot=$2
mkdir -p "$base" || exit 70
d=$(mktemp -d "${TMPDIR:-/tmp}/stage-slot.XXXXXX") || exit 70
trap 'rm -rf "$d"' EXIT
nl='
'
echo "READY"
while IFS= read -r hdr; do
  set -- $hdr
  [ "$1" = T ] || continue
  id=$2 limit=$3 end=$4 cmd= first=1
  while IFS= read -r l; do
    [ "$l" = "$end" ] && break
    if [ "$first" = 1 ]; then cmd=$l; first=0; else cmd=$cmd$nl$l; fi
  done
  if [ "$limit" -gt 0 ]; then
    setsid timeout -k 2 "$limit" sh -c "$cmd" </dev/null >"$d/o" 2>"$d/e" &
  else
    setsid sh -c "$cmd" </dev/null >"$d/o" 2>"$d/e" &
  fi
  pid=$!
  echo "$pid" > "$base/slot-$slot.pgid"
  echo "S $id $pid"
  wait "$pid"
  rc=$?
  rm -f "$base/slot-$slot.pgid"
  if [ -s "$d/o" ]; then echo "O $id $(wc -c < "$d/o")"; cat "$d/o"; fi
  if [ -s "$d/e" ]; then echo "E $id $(wc -c < "$d/e")"; cat "$d/e"; fi
  echo "X $id $rc"
done
