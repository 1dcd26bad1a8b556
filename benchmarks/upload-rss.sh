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
command -v curl >/dev/null || { echo "curl is needed" >&2; exit 1; }
source benchmarks/cluster-lib.sh

# Distinct valid components (the padding differs), so none is deduplicated.
for i in $(seq 0 $((uploads - 1))); do
    pad_component "$work/app$i.wasm" "$mb" "$i"
done
mkdir "$work/policies"
sed -e "s/^max_concurrent_uploads = .*/max_concurrent_uploads = $uploads/" \
    -e "s/^max_jars = .*/max_jars = $((uploads + 10))/" \
    -e "s/^max_jar_bytes = .*/max_jar_bytes = $(((uploads + 10) * (mb + 1) << 20))/" \
    policies/standard.toml >"$work/policies/standard.toml"
start_jobmanager --policies-dir policies
admin=$SLUICE_TOKEN
cd "$work"

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
