#!/usr/bin/env bash
# The AMLFS control plane at Azure's proportions (#15): a pipeline importing 1,000 files and
# exporting 10,000 results in 100 directories, against `stage emulator --time-scale SCALE`
# (every duration Azure's, multiplied by SCALE) and Azurite. Prints the HSM jobs started
# per kind, the ARM requests, the wall time, and the Azure time the emulated control-plane
# work stands for (create, jobs, cancels: the emulator's modelled durations before scaling;
# jobs run one at a time, so this is their wall time on Azure), for a first run and for an
# unchanged rerun.
#
#   benches/hsm.sh                 # 1,000 in, 10,000 out, SCALE=1/60
#   INPUTS=100 OUTPUTS=1000 SCALE=1/600 benches/hsm.sh
set -euo pipefail
source "$(dirname "$0")/lib.sh"
INPUTS=${INPUTS:-1000}
OUTPUTS=${OUTPUTS:-10000}
SCALE=${SCALE:-1/60}
DIRS=100
needs "apt-get install curl; npm install -g azurite" azurite-blob python3 curl
bench_start hsm

AZ=$(free_port)
azurite-blob --blobHost 127.0.0.1 --blobPort "$AZ" --inMemoryPersistence --loose \
  --skipApiVersionCheck --disableTelemetry >/dev/null 2>&1 &
pids+=($!)
wait_port "$AZ"
BLOB=http://127.0.0.1:$AZ/devstoreaccount1
export AZURE_STORAGE_CONNECTION_STRING=UseDevelopmentStorage=true
"$STAGE" -q emulator --listen 127.0.0.1:0 --data-dir "$work/emu" --blob-endpoint "$BLOB" \
  --time-scale "$SCALE" 2>"$work/emu.log" &
pids+=($!)
for _ in $(seq 200); do grep -q 'ARM endpoint' "$work/emu.log" 2>/dev/null && break; sleep 0.05; done
EM=$(sed -n 's/.*ARM endpoint http:\/\/127.0.0.1:\([0-9]*\).*/\1/p' "$work/emu.log")
SUB=00000000-0000-0000-0000-000000000000
SUBNET=/subscriptions/$SUB/resourceGroups/rg/providers/Microsoft.Network/virtualNetworks/v/subnets/a
azure_prerequisites "$EM" "$BLOB" "$SUBNET"

# Inputs: INPUTS files of 1 KiB in DIRS directories.
per_in=$((INPUTS / DIRS))
per_out=$((OUTPUTS / DIRS))
python3 - "$work/in" "$DIRS" "$per_in" <<'PY'
import os, sys
root, dirs, per = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
for d in range(dirs):
    os.makedirs(f"{root}/g{d:03}", exist_ok=True)
    for f in range(per):
        open(f"{root}/g{d:03}/f{f}.dat", "wb").write(os.urandom(1024))
PY
"$STAGE" --state-dir "$work/upload" -q export "$work/in" "$BLOB/bench/in"

cat > "$work/bench.yaml" <<EOF
name: hsmbench
target: azure
azure:
  subscription: $SUB
  resource_group: rg
  location: eastus
  endpoint: http://127.0.0.1:$EM
filesystem:
  name: bench-scratch
  sku: AMLFS-Durable-Premium-250
  capacity_tib: 8
  zone: "1"
  subnet: $SUBNET
  mount: $work/emu/filesystems/bench-scratch
  maintenance_window: { day: Saturday, time: "22:00" }
  hsm:
    container: $BLOB/bench
    logging_container: $BLOB/logs
    storage_account: /subscriptions/$SUB/resourceGroups/rg/providers/Microsoft.Storage/storageAccounts/devstoreaccount1
    import_prefixes: [in/]
pool:
  hosts: localhost
  slots: 2
steps:
  - ensure: {}
  - import: { prefixes: [in/] }
  - process:
      name: fan
      foreach: in/*/f0.dat
      outputs: ["out/{{dir}}/r$((per_out - 1)).txt"]
      command: |
        mkdir -p out/{{dir}}
        for i in \$(seq 0 $((per_out - 1))); do echo "{{dir}} \$i" > out/{{dir}}/r\$i.txt; done
  - export: { paths: [out/] }
EOF

stats() { curl -s "http://127.0.0.1:$EM/_emulator/stats"; }
report() { # label, start, end, stats before, stats after
  python3 - "$@" "$SCALE" <<'PY'
import json, sys
label, t0, t1, a, b, scale = sys.argv[1:]
a, b = json.loads(a), json.loads(b)
num, _, den = scale.partition("/")
scale = float(num) / float(den or 1)
wall = float(t1) - float(t0)
jobs = {k: v - a["jobs"].get(k, 0) for k, v in b["jobs"].items() if v - a["jobs"].get(k, 0)}
modelled = b["modelled_s"] - a["modelled_s"]
print(f"{label}: HSM jobs {jobs or 'none'}, {b['requests'] - a['requests']} ARM requests, "
      f"wall {wall:.1f}s; Azure time of the control plane's work {modelled / 60:.1f} min")
PY
}

echo "machine: $(nproc) cores; $INPUTS inputs, $OUTPUTS outputs in $DIRS directories; time scale $SCALE"
s0=$(stats); t0=$(now)
"$STAGE" --state-dir "$work/state" -q run "$work/bench.yaml"
t1=$(now); s1=$(stats)
report "first run (create, import, $DIRS tasks, export)" "$t0" "$t1" "$s0" "$s1"
t2=$(now)
"$STAGE" --state-dir "$work/state" -q run --new "$work/bench.yaml"
t3=$(now); s2=$(stats)
report "unchanged rerun" "$t2" "$t3" "$s1" "$s2"
echo "exported: $(find "$work/emu/filesystems/bench-scratch/out" -type f | wc -l) files in the file system"

# Before (session 7): the client sent one archive per output, one HSM job at a time. That
# request pattern, replayed with curl against the same file system and emulator for the first
# BEFORE outputs (all of them would take OUTPUTS x 58 s / scale here), then extrapolated.
BEFORE=${BEFORE:-100}
FS=/subscriptions/$SUB/resourceGroups/rg/providers/Microsoft.StorageCache/amlFilesystems/bench-scratch
arm() { curl -sf -X "$1" -H 'Authorization: Bearer bench' -H 'Content-Type: application/json' \
  ${3:+-d "$3"} "http://127.0.0.1:$EM$FS$2?api-version=2026-01-01"; }
archived() { # path: whether the file system's last archive is of it and completed
  arm GET "" | python3 -c 'import json,sys; a=json.load(sys.stdin)["properties"]["hsm"]["archiveStatus"][0]; sys.exit(not (a["filesystemPath"] == sys.argv[1] and a["status"]["state"] == "Completed"))' "$1"
}
s3=$(stats); t4=$(now)
for f in $(cd "$work/emu/filesystems/bench-scratch" && find out -type f | sort | head -n "$BEFORE"); do
  arm POST /archive "{\"filesystemPath\": \"/$f\"}" >/dev/null
  until archived "/$f"; do sleep 0.05; done
done
t5=$(now); s4=$(stats)
report "before, one archive per output, first $BEFORE outputs" "$t4" "$t5" "$s3" "$s4"
python3 - "$s1" "$s0" "$s3" "$s4" "$BEFORE" "$OUTPUTS" <<'PY'
import json, sys
after = json.loads(sys.argv[1])["modelled_s"] - json.loads(sys.argv[2])["modelled_s"]
per = (json.loads(sys.argv[4])["modelled_s"] - json.loads(sys.argv[3])["modelled_s"]) / int(sys.argv[5])
outputs = int(sys.argv[6])
# The same run with its one archive replaced by one per output (each taken to cost what the
# replayed ones did; the real one-for-all archive moved more data, so this errs low).
before = after + (outputs - 1) * per
print(f"before, extrapolated to {outputs} outputs: {per:.1f} s of Azure time per archive, "
      f"{before / 86400:.2f} days for the run; after: {after / 60:.1f} min ({before / after:.0f}x less)")
PY
