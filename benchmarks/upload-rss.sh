#!/usr/bin/env bash
# The JobManager's memory under many concurrent uploads: starts a JobManager
# on 127.0.0.1 whose standard policy lets one tenant upload UPLOADS at once,
# sends UPLOADS concurrent uploads of wordcount padded with a custom section
# to UPLOAD_MB each, and prints how many were stored and refused (the
# JobManager takes 16 at once over all tenants; the rest get 429) and the
# JobManager's resident memory before and at its peak.
#
#   bash benchmarks/upload-rss.sh [SLUICE_BINARY]
#
# Environment: UPLOADS (50), UPLOAD_MB (40).
# Needs the binary (target/debug/sluice after scripts/demo.sh), the example
# guests (examples/target/wasm32-wasip2/release) and curl.
set -euo pipefail
cd "$(dirname "$0")/.."
sluice=$(realpath "${1:-target/debug/sluice}")
uploads=${UPLOADS:-50}
mb=${UPLOAD_MB:-40}
wordcount=examples/target/wasm32-wasip2/release/wordcount.wasm
[ -x "$sluice" ] || { echo "no sluice binary at $sluice: run scripts/demo.sh first" >&2; exit 1; }
[ -f "$wordcount" ] || { echo "no $wordcount: run scripts/demo.sh first" >&2; exit 1; }
command -v curl >/dev/null || { echo "curl is needed" >&2; exit 1; }

work=$(mktemp -d)
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT

# Distinct valid components: wordcount with a custom section (id 0: a
# name, then bytes) that differs per upload, so none is deduplicated.
python3 - "$wordcount" "$work" "$mb" "$uploads" <<'EOF'
import sys
src, work, mb, n = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
def leb(v):
    out = bytearray()
    while True:
        b = v & 0x7F
        v >>= 7
        out.append(b | (0x80 if v else 0))
        if not v:
            return bytes(out)
base = open(src, "rb").read()
for i in range(n):
    name = b"padding"
    payload = leb(len(name)) + name + i.to_bytes(4, "little") + bytes((mb << 20) - 4)
    with open(f"{work}/app{i}.wasm", "wb") as g:
        g.write(base)
        g.write(b"\x00" + leb(len(payload)) + payload)
EOF

cd "$work"
mkdir policies
sed -e "s/^max_concurrent_uploads = .*/max_concurrent_uploads = $uploads/" \
    -e "s/^max_jars = .*/max_jars = $((uploads + 10))/" \
    -e "s/^max_jar_bytes = .*/max_jar_bytes = $(((uploads + 10) * (mb + 1) << 20))/" \
    "$OLDPWD/policies/standard.toml" >policies/standard.toml
"$sluice" jobmanager --rest-addr 127.0.0.1:0 --rpc-addr 127.0.0.1:0 --data-dir jm \
    --policies-dir policies >jm.log 2>&1 &
jm=$!
pids+=("$jm")
for _ in $(seq 300); do [ -s jm/endpoints.json ] && [ -s jm/credentials ] && break; sleep 0.1; done
rest=$(python3 -c 'import json; print(json.load(open("jm/endpoints.json"))["rest"])')
admin=$(sed -n 's/^token = "\(.*\)"$/\1/p' jm/credentials)

kib() { awk -v k="$1" '$1 == k":" { printf "%d", $2 / 1024 }' "/proc/$jm/status"; }
echo "$uploads concurrent uploads of $(du -m app0.wasm | cut -f1) MiB each"
echo "JobManager RSS after start: $(kib VmRSS) MiB"
for i in $(seq 0 $((uploads - 1))); do
    curl -s -o "answer$i" -w '%{http_code}\n' -H "Authorization: Bearer $admin" \
        -F "jarfile=@app$i.wasm" "http://$rest/v1/jars/upload" >"status$i" &
done
wait $(jobs -p | grep -v "^$jm$") 2>/dev/null || true
stored=$(cat status* | grep -c '^200$' || true)
busy=$(cat status* | grep -c '^429$' || true)
other=$((uploads - stored - busy))
echo "stored: $stored, refused busy (429): $busy, other: $other"
echo "JobManager RSS now: $(kib VmRSS) MiB, peak: $(kib VmHWM) MiB"
