#!/usr/bin/env bash
# The direct mover against rclone (Debian's package), both against the same Azurite in the same
# run, each scenario on a fresh Azurite (its in-memory store never shrinks). Prints one line per
# measurement and the ratios issue 4 sets targets for.
#
#   benches/blob.sh                  # small, large, diff
#   benches/blob.sh small large      # some of them
#   benches/blob.sh servercost       # what Azurite spends serving each client the small files
#
# Sizes: SMALL_FILES (2000 × 64 KiB), LARGE_FILES (4 × 256 MiB), DIFF_BLOBS (100000);
# REPS (3) runs of each tool, the best kept.
#
# The diff scenario keeps Azurite's metadata in MariaDB (AZURITE_DB), started here on 127.0.0.1:
# Azurite's default store (LokiJS) scans the whole blob collection on every insert, so a container
# of 100,000 blobs takes hours to fill; with SQL, inserts stay at a flat rate.
set -euo pipefail
source "$(dirname "$0")/lib.sh"

SMALL_FILES=${SMALL_FILES:-2000}
LARGE_FILES=${LARGE_FILES:-4}
DIFF_BLOBS=${DIFF_BLOBS:-100000}
RCLONE_TRANSFERS=${RCLONE_TRANSFERS:-"4 16 32"}
REPS=${REPS:-3}

needs "apt-get install rclone time bc curl mariadb-server; npm install -g azurite" \
  rclone azurite-blob curl /usr/bin/time bc python3 mariadbd
bench_start blob
azurite_pid=
mariadb_pid=
on_exit() {
  [ -n "$azurite_pid" ] && kill "$azurite_pid" 2>/dev/null || true
  [ -n "$mariadb_pid" ] && kill "$mariadb_pid" 2>/dev/null && wait "$mariadb_pid" 2>/dev/null || true
}

export AZURE_STORAGE_CONNECTION_STRING="UseDevelopmentStorage=true"
PORT=$(free_port)
MARIADB_PORT=
BASE=http://127.0.0.1:$PORT/devstoreaccount1

# A fresh Azurite: in memory, or with `sql` its metadata in a fresh MariaDB database and its
# blob contents on disk.
fresh_azurite() { # [sql]
  [ -n "$azurite_pid" ] && { kill "$azurite_pid" 2>/dev/null || true; wait "$azurite_pid" 2>/dev/null || true; }
  if [ "${1:-}" = sql ]; then
    mariadb_fresh
    rm -rf "$work/azurite" && mkdir -p "$work/azurite"
    AZURITE_DB="mysql://azurite:azurite@127.0.0.1:$MARIADB_PORT/azurite_blob" \
      azurite-blob --blobHost 127.0.0.1 --blobPort "$PORT" --location "$work/azurite" --loose \
      --skipApiVersionCheck --disableTelemetry >/dev/null 2>&1 &
  else
    azurite-blob --blobHost 127.0.0.1 --blobPort "$PORT" --inMemoryPersistence --loose \
      --skipApiVersionCheck --disableTelemetry >/dev/null 2>&1 &
  fi
  azurite_pid=$!
  wait_port "$PORT"
  # Azurite's SQL schema takes block ids of up to 64 characters; rclone's are 88 (64 bytes,
  # base64), which the service allows. Its Put Blocks then fail with 500.
  [ "${1:-}" != sql ] || mariadb --no-defaults -S "$work/mariadb.sock" -uroot azurite_blob \
    -e "ALTER TABLE Blocks MODIFY blockName VARCHAR(128) NOT NULL"
}

# MariaDB for Azurite's metadata, started once on 127.0.0.1 with its data in $work; each call
# leaves an empty azurite_blob database. Durability is traded away as Azurite's own store does.
mariadb_fresh() {
  local sql=(mariadb --no-defaults -S "$work/mariadb.sock" -uroot)
  if [ -z "$mariadb_pid" ]; then
    MARIADB_PORT=$(free_port)
    mariadb-install-db --no-defaults --datadir="$work/mariadb" --user=root >/dev/null 2>&1
    mariadbd --no-defaults --datadir="$work/mariadb" --user=root --bind-address=127.0.0.1 \
      --port="$MARIADB_PORT" --socket="$work/mariadb.sock" --skip-log-bin \
      --innodb-flush-log-at-trx-commit=0 --log-error="$work/mariadb.log" 2>/dev/null &
    mariadb_pid=$!
    wait_port "$MARIADB_PORT"
    "${sql[@]}" -e "CREATE USER 'azurite'@'127.0.0.1' IDENTIFIED BY 'azurite';
      GRANT ALL ON azurite_blob.* TO 'azurite'@'127.0.0.1';"
  fi
  "${sql[@]}" -e "DROP DATABASE IF EXISTS azurite_blob; CREATE DATABASE azurite_blob;"
}

# An account SAS for the dev account (for rclone and curl, which cannot sign Shared Key here).
account_sas() {
  python3 - <<'PY'
import base64, hashlib, hmac, time, urllib.parse
key = base64.b64decode("Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==")
fmt = lambda t: time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))
st, se = fmt(time.time() - 900), fmt(time.time() + 86400)
sts = "\n".join(["devstoreaccount1", "rwdlac", "b", "sco", st, se, "", "https,http", "2022-11-02", "", ""])
sig = base64.b64encode(hmac.new(key, sts.encode(), hashlib.sha256).digest()).decode()
q = dict(sv="2022-11-02", ss="b", srt="sco", sp="rwdlac", st=st, se=se, spr="https,http", sig=sig)
print(urllib.parse.urlencode(q))
PY
}

# rclone 1.60's use_emulator and endpoint options are broken: give it an account SAS URL.
rclone_config() {
  cat > "$work/rclone.conf" <<CONF
[az]
type = azureblob
sas_url = $BASE?$(account_sas)
CONF
}


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

best() { [ "$(echo "$1 > $2" | bc)" = 1 ] && echo "$1" || echo "$2"; }

# Up and down with stage and with rclone at each --transfers, each REPS times on a fresh
# Azurite (the best of each kept: the machine is noisy), then what Azurite itself sustains;
# prints rates and the ratios of stage to rclone's best and to that ceiling.
updown() { # name count unit(files|MB) amount
  local name=$1 src=$work/$1/src s_up=0 s_down=0 r_up=0 r_down=0 up down rss rss2 rep t
  for rep in $(seq "$REPS"); do
    fresh_azurite
    read -r up rss < <(measure "$STAGE" --state-dir "$work/$name/state-$rep" -q export "$src" "$BASE/stage-$name")
    rm -rf "$work/$name/stage-dst"
    read -r down rss2 < <(measure "$STAGE" --state-dir "$work/$name/state-$rep" -q import "$BASE/stage-$name" "$work/$name/stage-dst")
    same_tree "$src" "$work/$name/stage-dst"
    echo "$name stage   up $(rate "$4" "$up") $3/s (${up}s, ${rss} MB)  down $(rate "$4" "$down") $3/s (${down}s, ${rss2} MB)"
    s_up=$(best "$(rate "$4" "$up")" "$s_up")
    s_down=$(best "$(rate "$4" "$down")" "$s_down")
    for t in $RCLONE_TRANSFERS; do
      fresh_azurite
      rclone_config
      read -r up rss < <(measure rclone --config "$work/rclone.conf" copy --transfers "$t" "$src" "az:rclone-$name")
      rm -rf "$work/$name/rclone-dst"
      read -r down rss2 < <(measure rclone --config "$work/rclone.conf" copy --transfers "$t" "az:rclone-$name" "$work/$name/rclone-dst")
      same_tree "$src" "$work/$name/rclone-dst"
      echo "$name rclone --transfers $t  up $(rate "$4" "$up") $3/s (${up}s, ${rss} MB)  down $(rate "$4" "$down") $3/s (${down}s, ${rss2} MB)"
      r_up=$(best "$(rate "$4" "$up")" "$r_up")
      r_down=$(best "$(rate "$4" "$down")" "$r_down")
    done
  done
  ceiling "$name" "$4"
  local c_up=$CEIL_UP c_down=$CEIL_DOWN
  echo "$name ceiling (curl: no checksums, nothing written to disk)  up $c_up $3/s  down $c_down $3/s"
  echo "$name BEST of $REPS  stage up $s_up down $s_down; rclone up $r_up down $r_down"
  echo "$name RATIO stage/rclone-best  up $(ratio "$s_up" "$r_up")  down $(ratio "$s_down" "$r_down")"
  echo "$name RATIO stage/ceiling  up $(ratio "$s_up" "$c_up")  down $(ratio "$s_down" "$c_down")"
}

# The service's own limit on these cores: curl, 32 requests at once, PUTs the same bytes
# (small files as Put Blob, large ones as 8 MiB Put Blocks) and GETs them to /dev/null. Sets
# CEIL_UP and CEIL_DOWN, the best of REPS (not printed: it runs in this shell, which owns the
# Azurite it starts).
ceiling() { # name amount
  local name=$1 src=$work/$1/src sas t0 t1 up=0 down=0 rep f i
  for rep in $(seq "$REPS"); do
    fresh_azurite
    sas=$(account_sas)
    curl -sf -X PUT "$BASE/ceil?restype=container&$sas" -o /dev/null
    : > "$work/put.cfg"
    : > "$work/get.cfg"
    if [ "$name" = small ]; then
      while IFS= read -r f; do
        printf 'url = "%s/ceil/%s?%s"\nupload-file = "%s/%s"\noutput = "/dev/null"\n' "$BASE" "$f" "$sas" "$src" "$f" >> "$work/put.cfg"
        printf 'url = "%s/ceil/%s?%s"\noutput = "/dev/null"\n' "$BASE" "$f" "$sas" >> "$work/get.cfg"
      done < <(cd "$src" && find . -type f | sed 's#^\./##')
    else
      rm -rf "$work/parts" && mkdir -p "$work/parts"
      while IFS= read -r f; do
        split -b 8M -d -a 4 "$src/$f" "$work/parts/$(echo "$f" | tr / _)."
        printf 'url = "%s/ceil/%s?%s"\noutput = "/dev/null"\n' "$BASE" "$f" "$sas" >> "$work/get.cfg"
      done < <(cd "$src" && find . -type f | sed 's#^\./##')
      i=0
      for f in "$work"/parts/*; do
        i=$((i + 1))
        printf 'url = "%s/ceil/blocks?comp=block&blockid=%s&%s"\nupload-file = "%s"\noutput = "/dev/null"\n' \
          "$BASE" "$(printf '%012d' "$i" | base64 -w0 | sed 's/+/%2B/g; s#/#%2F#g; s/=/%3D/g')" "$sas" "$f" >> "$work/put.cfg"
      done
    fi
    sync
    t0=$(now)
    curl -sf --no-progress-meter --parallel --parallel-max 32 -H "x-ms-blob-type: BlockBlob" -H "Expect:" -K "$work/put.cfg"
    t1=$(now)
    up=$(best "$(rate "$2" "$(secs "$t0" "$t1")")" "$up")
    # The GETs read blobs stage wrote (Put Blocks alone leave nothing to read).
    [ "$name" = small ] || "$STAGE" --state-dir "$work/ceil-state-$rep" -q export "$src" "$BASE/ceil" >/dev/null
    t0=$(now)
    curl -sf --no-progress-meter --parallel --parallel-max 32 -K "$work/get.cfg"
    t1=$(now)
    down=$(best "$(rate "$2" "$(secs "$t0" "$t1")")" "$down")
  done
  CEIL_UP=$up
  CEIL_DOWN=$down
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

# An incremental export over a container already holding DIFF_BLOBS blobs, for stage and for
# rclone (each fills its own container first, which is measured too): one file changed, and
# nothing changed; stage also without its journal (length + checksum against the listing).
bench_diff() {
  local d=$work/diff t rss
  fresh_azurite sql
  make_files "$d/src" "$DIFF_BLOBS" 16
  read -r t rss < <(measure "$STAGE" --state-dir "$d/state" -q export "$d/src" "$BASE/diff")
  echo "diff stage initial export of $DIFF_BLOBS files: ${t}s ($(rate "$DIFF_BLOBS" "$t") files/s), ${rss} MB"
  rclone_config
  read -r t rss < <(measure rclone --config "$work/rclone.conf" copy --transfers 32 "$d/src" az:rclone-diff)
  echo "diff rclone initial copy --transfers 32 of $DIFF_BLOBS files: ${t}s ($(rate "$DIFF_BLOBS" "$t") files/s), ${rss} MB"
  echo changed > "$d/src/d000/f000000"
  read -r t rss < <(measure "$STAGE" --state-dir "$d/state" -q export "$d/src" "$BASE/diff")
  echo "diff stage incremental export, 1 changed (journal): ${t}s, ${rss} MB"
  read -r t rss < <(measure rclone --config "$work/rclone.conf" copy --transfers 32 "$d/src" az:rclone-diff)
  echo "diff rclone copy, 1 changed: ${t}s, ${rss} MB"
  read -r t rss < <(measure "$STAGE" --state-dir "$d/state" -q export "$d/src" "$BASE/diff")
  echo "diff stage incremental export, nothing changed (journal): ${t}s, ${rss} MB"
  read -r t rss < <(measure "$STAGE" --state-dir "$d/state2" -q export "$d/src" "$BASE/diff")
  echo "diff stage incremental export, nothing changed, no journal (checksum of every file): ${t}s, ${rss} MB"
  read -r t rss < <(measure rclone --config "$work/rclone.conf" copy --transfers 32 "$d/src" az:rclone-diff)
  echo "diff rclone copy, nothing changed: ${t}s, ${rss} MB"
}

# Where the small-download time goes: the same 2,000 blobs fetched from one Azurite, each client
# in turn and REPS rounds alternating, with the CPU seconds Azurite itself spent on each
# (utime + stime of its process). Clients: curl's plain GETs, curl with the headers the SDK
# sends (Range, x-ms-version), one listing of the container, stage's import (a listing, then
# GETs, files written, verified, journaled) and rclone's copy at --transfers 32.
bench_servercost() {
  local src=$work/small/src sas cfg rep hz t0 t1 c0 c1
  [ -d "$src" ] || make_files "$src" "$SMALL_FILES" 65536
  fresh_azurite
  "$STAGE" --state-dir "$work/cost-state" -q export "$src" "$BASE/cost" >/dev/null
  rclone_config
  sas=$(account_sas)
  cfg=$work/cost-get.cfg
  : > "$cfg"
  while IFS= read -r f; do
    printf 'url = "%s/cost/%s?%s"\noutput = "/dev/null"\n' "$BASE" "$f" "$sas" >> "$cfg"
  done < <(cd "$src" && find . -type f | sed 's#^\./##')
  hz=$(getconf CLK_TCK)
  served() { awk '{print $14 + $15}' "/proc/$azurite_pid/stat"; }
  cost() { # label command...
    local label=$1
    shift
    rm -rf "$work/cost-dst" "$work/cost-state2"
    sync
    c0=$(served)
    t0=$(now)
    "$@" >/dev/null
    t1=$(now)
    c1=$(served)
    echo "servercost $label: $(secs "$t0" "$t1" | cut -c1-5)s wall, Azurite $(echo "scale=2; ($c1 - $c0) / $hz" | bc)s CPU"
  }
  for rep in $(seq "$REPS"); do
    cost "curl GETs            " curl -sf --no-progress-meter --parallel --parallel-max 32 -K "$cfg"
    cost "curl GETs, SDK headers" curl -sf --no-progress-meter --parallel --parallel-max 32 \
      -H "Range: bytes=0-65535" -H "x-ms-version: 2026-04-06" -K "$cfg"
    cost "one listing           " curl -sf "$BASE/cost?restype=container&comp=list&maxresults=5000&$sas"
    cost "stage import          " "$STAGE" --state-dir "$work/cost-state2" -q import "$BASE/cost" "$work/cost-dst"
    cost "rclone copy (32)      " rclone --config "$work/rclone.conf" copy --transfers 32 az:cost "$work/cost-dst"
  done
}

echo "machine: $(nproc) cores, $(free -g | awk '/Mem/ {print $2}') GiB; $(rclone version | head -1); azurite $(azurite-blob --version 2>/dev/null)"
for b in "${@:-small large diff servercost}"; do
  for one in $b; do "bench_$one"; done
done
