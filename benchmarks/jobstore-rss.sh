#!/usr/bin/env bash
# The JobManager's memory over many jobs of one large component: starts a
# JobManager and a TaskManager on 127.0.0.1, uploads wordcount padded with a
# custom section to COMPONENT_MB, runs JOBS short jobs of it one after the
# other, and prints the JobManager's resident memory every STEP jobs with
# the number of jobs it still holds in memory.
#
#   bash benchmarks/jobstore-rss.sh [SLUICE_BINARY]
#
# Environment: JOBS (200), STEP (20), COMPONENT_MB (100), CAPACITY (passed
# as the JobManager's --jobstore-max-capacity when set; Sluice's default is
# 1000).
# Needs the binary (target/debug/sluice after scripts/demo.sh) and the
# example guests (examples/target/wasm32-wasip2/release); see cluster-lib.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
sluice=$(realpath "${1:-target/debug/sluice}")
jobs=${JOBS:-200}
step=${STEP:-20}
mb=${COMPONENT_MB:-100}
capacity=${CAPACITY:-}
source benchmarks/cluster-lib.sh

# A component stays valid with a custom section appended; it only makes
# the file, the upload and the stored copies larger.
pad_component "$work/big.wasm" "$mb"
start_jobmanager ${capacity:+--jobstore-max-capacity "$capacity"}
start_taskmanager
cd "$work"
# The admin's tenant (`default`) reads and writes under its own directory.
files=$work/jm/files/default
mkdir -p "$files"

rss() { awk '/^VmRSS/ { printf "%d", $2 / 1024 }' "/proc/$jm/status"; }
held() { "$sluice" list --json | python3 -c 'import json,sys; print(len(json.load(sys.stdin)["jobs"]))'; }

printf 'a b c\n' >"$files/input.txt"
echo "component: $(du -m big.wasm | cut -f1) MiB; jobstore capacity ${capacity:-default}"
echo "JobManager RSS after start: $(rss) MiB"
app=$("$sluice" upload big.wasm)
echo "after the upload: $(rss) MiB"
printf '%6s  %8s  %10s\n' jobs "RSS MiB" "in memory"
for i in $(seq "$jobs"); do
    "$sluice" submit "$app" --arg input="$files/input.txt" --arg output="$files/out/$i" \
        --wait --json >/dev/null
    rm -rf "$files/out/$i"
    if (( i % step == 0 )); then
        printf '%6d  %8d  %10d\n' "$i" "$(rss)" "$(held)"
    fi
done
