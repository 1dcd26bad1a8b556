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
# example guests (examples/target/wasm32-wasip2/release).
set -euo pipefail
cd "$(dirname "$0")/.."
sluice=$(realpath "${1:-target/debug/sluice}")
jobs=${JOBS:-200}
step=${STEP:-20}
mb=${COMPONENT_MB:-100}
capacity=${CAPACITY:-}
wordcount=examples/target/wasm32-wasip2/release/wordcount.wasm
[ -x "$sluice" ] || { echo "no sluice binary at $sluice: run scripts/demo.sh first" >&2; exit 1; }
[ -f "$wordcount" ] || { echo "no $wordcount: run scripts/demo.sh first" >&2; exit 1; }

work=$(mktemp -d)
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT

# A component stays valid with a custom section appended (id 0: a name, then
# bytes); it only makes the file, the upload and the stored copies larger.
python3 - "$wordcount" "$work/big.wasm" "$mb" <<'EOF'
import sys
src, dst, mb = sys.argv[1], sys.argv[2], int(sys.argv[3])
def leb(n):
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)
name = b"padding"
payload = leb(len(name)) + name + bytes(mb << 20)
with open(src, "rb") as f, open(dst, "wb") as g:
    g.write(f.read())
    g.write(b"\x00" + leb(len(payload)) + payload)
EOF

cd "$work"
"$sluice" jobmanager --rest-addr 127.0.0.1:0 --rpc-addr 127.0.0.1:0 --data-dir jm \
    ${capacity:+--jobstore-max-capacity "$capacity"} >jm.log 2>&1 &
jm=$!
pids+=("$jm")
for _ in $(seq 300); do [ -s jm/endpoints.json ] && break; sleep 0.1; done
rest=$(python3 -c 'import json; print(json.load(open("jm/endpoints.json"))["rest"])')
rpc=$(python3 -c 'import json; print(json.load(open("jm/endpoints.json"))["rpc"])')
token=$(python3 -c 'import json; print(json.load(open("jm/endpoints.json"))["token"])')
"$sluice" taskmanager --jobmanager "$rpc" --token "$token" --slots 2 --data-dir tm \
    --metrics-addr off >tm.log 2>&1 &
pids+=("$!")
export SLUICE_JOBMANAGER=http://$rest
for _ in $(seq 300); do
    "$sluice" taskmanagers --json 2>/dev/null | grep -q '"id"' && break
    sleep 0.1
done

rss() { awk '/^VmRSS/ { printf "%d", $2 / 1024 }' "/proc/$jm/status"; }
held() { "$sluice" list --json | python3 -c 'import json,sys; print(len(json.load(sys.stdin)["jobs"]))'; }

printf 'a b c\n' >input.txt
echo "component: $(du -m big.wasm | cut -f1) MiB; jobstore capacity ${capacity:-default}"
echo "JobManager RSS after start: $(rss) MiB"
app=$("$sluice" upload big.wasm)
echo "after the upload: $(rss) MiB"
printf '%6s  %8s  %10s\n' jobs "RSS MiB" "in memory"
for i in $(seq "$jobs"); do
    "$sluice" submit "$app" --arg input="$work/input.txt" --arg output="$work/out/$i" \
        --wait --json >/dev/null
    rm -rf "$work/out/$i"
    if (( i % step == 0 )); then
        printf '%6d  %8d  %10d\n' "$i" "$(rss)" "$(held)"
    fi
done
