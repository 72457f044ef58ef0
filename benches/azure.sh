#!/usr/bin/env bash
# Control-plane overhead of a full azure-target run: the genomics pipeline against `stage
# emulator` with zero provisioning delay and Azurite, side by side with the same pipeline on
# the local target in the same invocation. Overhead = azure wall time - local wall time (the
# tasks are the same); polling rate = ARM requests the emulator served / run time.
#
#   benches/azure.sh            # RUNS=3 by default
set -euo pipefail
source "$(dirname "$0")/lib.sh"
RUNS=${RUNS:-3}
needs "apt-get install bc curl; npm install -g azurite" azurite-blob python3 bc curl
bench_start azure
export AZURE_STORAGE_CONNECTION_STRING="UseDevelopmentStorage=true"
SUB=00000000-0000-0000-0000-000000000000

for i in $(seq "$RUNS"); do
  d=$work/run$i
  mkdir -p "$d"
  AZ=$(free_port); EM=$(free_port)
  azurite-blob --blobHost 127.0.0.1 --blobPort "$AZ" --inMemoryPersistence --loose \
    --skipApiVersionCheck --disableTelemetry >/dev/null 2>&1 &
  pids+=($!)
  wait_port "$AZ"
  BLOB=http://127.0.0.1:$AZ/devstoreaccount1
  "$STAGE" -q emulator --listen "127.0.0.1:$EM" --data-dir "$d/emu" --blob-endpoint "$BLOB" \
    --time-scale 0 &
  pids+=($!)
  wait_port "$EM"
  azure_prerequisites "$EM" "$BLOB" "/subscriptions/$SUB/resourceGroups/rg/providers/Microsoft.Network/virtualNetworks/v/subnets/a"
  cp -r pipelines "$d/"
  for part in reference samples; do
    "$STAGE" --state-dir "$d/upload" -q export "$d/pipelines/data/genomics/$part" "$BLOB/genomics/$part"
  done
  python3 - "$d" "$EM" "$BLOB" "$SUB" <<'PY'
import sys
d, em, blob, sub = sys.argv[1:]
s = open(f"{d}/pipelines/genomics.yaml").read()
s = s.replace("target: local", f"target: azure\nazure:\n  subscription: {sub}\n  resource_group: rg\n  location: eastus\n  endpoint: http://127.0.0.1:{em}")
s = s.replace("container: data/genomics ", f"container: {blob}/genomics ")
s = s.replace("logging_container: data/genomics-logs", f"logging_container: {blob}/logs\n    storage_account: /subscriptions/{sub}/resourceGroups/rg/providers/Microsoft.Storage/storageAccounts/devstoreaccount1")
s = s.replace('  zone: "1"\n', f'  zone: "1"\n  subnet: /subscriptions/{sub}/resourceGroups/rg/providers/Microsoft.Network/virtualNetworks/v/subnets/a\n  mount: {d}/emu/filesystems/genomics-scratch\n')
open(f"{d}/pipelines/genomics-azure.yaml", "w").write(s)
PY
  t0=$(now); "$STAGE" --state-dir "$d/local" -q run "$d/pipelines/genomics.yaml"; t1=$(now)
  t2=$(now); "$STAGE" --state-dir "$d/azure" -q run "$d/pipelines/genomics-azure.yaml"; t3=$(now)
  requests=$(curl -s "http://127.0.0.1:$EM/_emulator/stats" | python3 -c 'import json,sys; print(json.load(sys.stdin)["requests"])')
  local_s=$(secs "$t0" "$t1"); azure_s=$(secs "$t2" "$t3")
  over=$(echo "$azure_s - $local_s" | bc -l)
  rpm=$(echo "scale=1; $requests * 60 / $azure_s" | bc -l)
  printf 'run %d: local %.2fs, azure %.2fs, control-plane overhead %.2fs; %d ARM requests (%.0f per minute; 2 jobs + 1 archive + create)\n' \
    "$i" "$local_s" "$azure_s" "$over" "$requests" "$rpm"
  kill "${pids[@]}" 2>/dev/null || true
  pids=()
done
