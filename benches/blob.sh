#!/usr/bin/env bash
# The direct mover against rclone (Debian's package), both against the same Azurite in the same
# run, each scenario on a fresh Azurite (its in-memory store never shrinks). Prints one line per
# measurement and the ratios issue 4 sets targets for.
#
#   benches/blob.sh                  # small, large, diff
#   benches/blob.sh small large      # some of them
#
# Sizes: SMALL_FILES (2000 × 64 KiB), LARGE_FILES (4 × 256 MiB), DIFF_BLOBS (100000).
set -euo pipefail
cd "$(dirname "$0")/.."

SMALL_FILES=${SMALL_FILES:-2000}
LARGE_FILES=${LARGE_FILES:-4}
DIFF_BLOBS=${DIFF_BLOBS:-100000}
RCLONE_TRANSFERS=${RCLONE_TRANSFERS:-"4 16 32"}

for tool in rclone azurite-blob /usr/bin/time bc python3; do
  command -v "$tool" >/dev/null || {
    echo "needs $tool: apt-get install rclone time bc; npm install -g azurite" >&2
    exit 2
  }
done
cargo build --release -q
STAGE=$PWD/target/release/stage
work=$(mktemp -d "${TMPDIR:-/tmp}/stage-blob-bench.XXXXXX")
azurite_pid=
cleanup() {
  [ -n "$azurite_pid" ] && kill "$azurite_pid" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

export AZURE_STORAGE_CONNECTION_STRING="UseDevelopmentStorage=true"
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
BASE=http://127.0.0.1:$PORT/devstoreaccount1

fresh_azurite() {
  [ -n "$azurite_pid" ] && { kill "$azurite_pid" 2>/dev/null || true; wait "$azurite_pid" 2>/dev/null || true; }
  azurite-blob --blobHost 127.0.0.1 --blobPort "$PORT" --inMemoryPersistence --loose \
    --skipApiVersionCheck --disableTelemetry >/dev/null 2>&1 &
  azurite_pid=$!
  for _ in $(seq 100); do
    (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null && return 0
    sleep 0.1
  done
  echo "azurite did not start" >&2
  exit 1
}

# rclone 1.60's use_emulator and endpoint options are broken: give it an account SAS URL.
rclone_config() {
  local sas
  sas=$(python3 - <<'PY'
import base64, hashlib, hmac, time, urllib.parse
key = base64.b64decode("Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==")
fmt = lambda t: time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))
st, se = fmt(time.time() - 900), fmt(time.time() + 86400)
sts = "\n".join(["devstoreaccount1", "rwdlac", "b", "sco", st, se, "", "https,http", "2022-11-02", "", ""])
sig = base64.b64encode(hmac.new(key, sts.encode(), hashlib.sha256).digest()).decode()
q = dict(sv="2022-11-02", ss="b", srt="sco", sp="rwdlac", st=st, se=se, spr="https,http", sig=sig)
print(urllib.parse.urlencode(q))
PY
)
  cat > "$work/rclone.conf" <<CONF
[az]
type = azureblob
sas_url = $BASE?$sas
CONF
}

now() { date +%s.%N; }
secs() { echo "$2 - $1" | bc -l; }
rate() { echo "scale=1; $1 / $2" | bc -l; }
ratio() { echo "scale=2; $1 / $2" | bc -l; }

# Runs a command under /usr/bin/time, prints "seconds peak_rss_mb".
# Dirty pages are written back first, so no tool pays for writeback of what came before it.
measure() {
  local t0 t1 rss
  sync
  t0=$(now)
  /usr/bin/time -f "%M" -o "$work/rss" "$@" >/dev/null 2>"$work/err" || {
    cat "$work/err" >&2
    exit 1
  }
  t1=$(now)
  rss=$(tail -1 "$work/rss")
  echo "$(secs "$t0" "$t1") $((rss / 1024))"
}

make_files() { # dir count bytes
  python3 - "$@" <<'PY'
import os, sys
root, n, size = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
os.makedirs(root, exist_ok=True)
chunk = os.urandom(min(size, 1 << 20))
for i in range(n):
    d = os.path.join(root, "d%03d" % (i // 1000))
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, "f%06d" % i), "wb") as f:
        left = size
        while left > 0:
            f.write(chunk[: min(left, len(chunk))])
            left -= len(chunk)
PY
}

same_tree() { diff -r "$1" "$2" >/dev/null || { echo "MISMATCH: $1 vs $2" >&2; exit 1; }; }

# Up and down with stage and with rclone at each --transfers; prints rates and the ratio of
# stage to rclone's best.
updown() { # name count unit(files|MB) amount
  local name=$1 src=$work/$1/src best_up=0 best_down=0 up down rss
  fresh_azurite
  rclone_config
  read -r up rss < <(measure "$STAGE" --state-dir "$work/$name/state" -q export "$src" "$BASE/stage-$name")
  read -r down rss2 < <(measure "$STAGE" --state-dir "$work/$name/state" -q import "$BASE/stage-$name" "$work/$name/stage-dst")
  same_tree "$src" "$work/$name/stage-dst"
  local s_up s_down
  s_up=$(rate "$4" "$up")
  s_down=$(rate "$4" "$down")
  echo "$name stage   up $s_up $3/s (${up}s, ${rss} MB)  down $s_down $3/s (${down}s, ${rss2} MB)"
  for t in $RCLONE_TRANSFERS; do
    fresh_azurite
    rclone_config
    read -r up rss < <(measure rclone --config "$work/rclone.conf" copy --transfers "$t" "$src" "az:rclone-$name")
    read -r down rss2 < <(measure rclone --config "$work/rclone.conf" copy --transfers "$t" "az:rclone-$name" "$work/$name/rclone-dst-$t")
    same_tree "$src" "$work/$name/rclone-dst-$t"
    local r_up r_down
    r_up=$(rate "$4" "$up")
    r_down=$(rate "$4" "$down")
    echo "$name rclone --transfers $t  up $r_up $3/s (${up}s, ${rss} MB)  down $r_down $3/s (${down}s, ${rss2} MB)"
    [ "$(echo "$r_up > $best_up" | bc)" = 1 ] && best_up=$r_up
    [ "$(echo "$r_down > $best_down" | bc)" = 1 ] && best_down=$r_down
  done
  echo "$name RATIO stage/rclone-best  up $(ratio "$s_up" "$best_up")  down $(ratio "$s_down" "$best_down")"
}

bench_small() {
  make_files "$work/small/src" "$SMALL_FILES" 65536
  updown small "$SMALL_FILES" files "$SMALL_FILES"
  echo "small target: >= 2.0 x rclone's best files/s"
}

bench_large() {
  make_files "$work/large/src" "$LARGE_FILES" $((256 << 20))
  updown large "$LARGE_FILES" MB $((LARGE_FILES * 256))
  echo "large target: >= 1.2 x rclone's best MB/s, stage peak RSS < 300 MB"
}

# An incremental export over a container already holding DIFF_BLOBS blobs: with the journal
# (the blobs are the versions stage wrote) and without it (length + MD5 against the listing).
bench_diff() {
  local d=$work/diff t rss
  fresh_azurite
  make_files "$d/src" "$DIFF_BLOBS" 16
  read -r t rss < <(measure "$STAGE" --state-dir "$d/state" -q export "$d/src" "$BASE/diff")
  echo "diff initial export of $DIFF_BLOBS files: ${t}s, ${rss} MB"
  echo changed > "$d/src/d000/f000000"
  read -r t rss < <(measure "$STAGE" --state-dir "$d/state" -q export "$d/src" "$BASE/diff")
  echo "diff incremental export, 1 changed of $DIFF_BLOBS (journal): ${t}s, ${rss} MB"
  read -r t rss < <(measure "$STAGE" --state-dir "$d/state2" -q export "$d/src" "$BASE/diff")
  echo "diff incremental export, nothing changed, no journal (MD5 of every file): ${t}s, ${rss} MB"
  fresh_azurite
  rclone_config
  rclone --config "$work/rclone.conf" copy --transfers 32 "$d/src" az:diff >/dev/null 2>&1
  read -r t rss < <(measure rclone --config "$work/rclone.conf" copy --transfers 32 "$d/src" az:diff)
  echo "diff rclone copy, nothing changed: ${t}s, ${rss} MB"
}

echo "machine: $(nproc) cores, $(free -g | awk '/Mem/ {print $2}') GiB; $(rclone version | head -1); azurite $(azurite-blob --version 2>/dev/null)"
for b in "${@:-small large diff}"; do
  for one in $b; do "bench_$one"; done
done
