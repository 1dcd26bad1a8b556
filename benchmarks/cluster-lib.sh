# Shared by the cluster benchmark scripts (sourced, not run): a scratch
# directory cleaned up on exit with every process started, and a
# JobManager and TaskManager on 127.0.0.1 in it.
#
# Before sourcing: `sluice` (the binary's path). After `start_jobmanager
# ARGS...`: `jm` (its pid), `rest`, `rpc`, `token` (the join token) and
# SLUICE_JOBMANAGER / SLUICE_TOKEN (the admin's) exported for the client.

wordcount=$(realpath examples/target/wasm32-wasip2/release/wordcount.wasm 2>/dev/null || true)
[ -x "$sluice" ] || { echo "no sluice binary at $sluice: run scripts/demo.sh first" >&2; exit 1; }
[ -f "$wordcount" ] || { echo "no wordcount guest: run scripts/demo.sh first" >&2; exit 1; }
repo=$(pwd)

work=$(mktemp -d)
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT

# Starts a JobManager with data directory `jm` under the scratch directory.
start_jobmanager() {
    (cd "$work" && exec "$sluice" jobmanager --rest-addr 127.0.0.1:0 --rpc-addr 127.0.0.1:0 \
        --data-dir jm "$@" >jm.log 2>&1) &
    jm=$!
    pids+=("$jm")
    for _ in $(seq 300); do
        [ -s "$work/jm/endpoints.json" ] && [ -s "$work/jm/credentials" ] && break
        sleep 0.1
    done
    local field
    field() { python3 -c "import json,sys; print(json.load(open(sys.argv[1]))[sys.argv[2]])" "$work/jm/endpoints.json" "$1"; }
    rest=$(field rest)
    rpc=$(field rpc)
    token=$(field token)
    export SLUICE_JOBMANAGER=http://$rest
    SLUICE_TOKEN=$(sed -n 's/^token = "\(.*\)"$/\1/p' "$work/jm/credentials")
    export SLUICE_TOKEN
}

# Starts a TaskManager (`tm`: its pid) and waits until it is registered:
# TM_SLOTS slots (2), metrics on TM_METRICS (off); further arguments go to
# `sluice taskmanager`. Its data directory is `tm`, so a restart keeps its
# certificate.
start_taskmanager() {
    (cd "$work" && exec "$sluice" taskmanager --jobmanager "$rpc" --token "$token" \
        --slots "${TM_SLOTS:-2}" --data-dir tm --metrics-addr "${TM_METRICS:-off}" "$@" \
        >>tm.log 2>&1) &
    tm=$!
    pids+=("$tm")
    for _ in $(seq 300); do
        "$sluice" taskmanagers --json 2>/dev/null | grep -q '"id"' && break
        sleep 0.1
    done
}

# Writes wordcount padded with a custom section of MB MiB (id 0: a name,
# then bytes, TAG first so that components differ) to DST; it stays valid.
pad_component() {
    python3 - "$wordcount" "$1" "$2" "${3:-0}" <<'PY'
import sys
src, dst, mb, tag = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
def leb(v):
    out = bytearray()
    while True:
        b = v & 0x7F
        v >>= 7
        out.append(b | (0x80 if v else 0))
        if not v:
            return bytes(out)
name = b"padding"
payload = leb(len(name)) + name + tag.to_bytes(4, "little") + bytes((mb << 20) - 4)
with open(src, "rb") as f, open(dst, "wb") as g:
    g.write(f.read())
    g.write(b"\x00" + leb(len(payload)) + payload)
PY
}
