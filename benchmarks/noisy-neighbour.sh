#!/usr/bin/env bash
# Noisy neighbours on one TaskManager: how much of its throughput a victim
# tenant keeps while an aggressor tenant runs 8 busy subtasks beside it,
# with the TaskManager's fair CPU gate on (default) and off (`--cores 0`).
#
# The victim (tenant `victim`, cpu_shares 100) runs one CPU-bound subtask:
# the adversarial guest's `busy` operator (about half a million instructions
# per record) on VICTIM_COUNT records, datagen -> busy -> blackhole chained
# in one thread, so it wants one core: on 2 cores, its fair share at equal
# weights. Its throughput is VICTIM_COUNT / the job's duration. The
# aggressor runs the same operator at parallelism 8 without end: tenant
# `noisy` (cpu_shares 100, equal weight) or `heavy` (cpu_shares 300).
#
# Each round, on a TaskManager with the gate: victim alone; beside `noisy`;
# beside `heavy`; beside each hostile job of the adversarial guest (spin,
# memory bomb, deep recursion, panic, log and metric floods, one huge
# output batch), submitted by `noisy` as the victim starts, failing while
# it runs. Then the TaskManager restarts without the gate: victim alone;
# beside `noisy`. ROUNDS rounds (3); medians at the end. The victim's
# CPU share comes from the TaskManager's per-tenant CPU counters (gate on
# only): its CPU ÷ both tenants' CPU during the victim's run.
#
#   bash benchmarks/noisy-neighbour.sh [SLUICE_BINARY]
#
# Needs the binary (target/debug/sluice after scripts/demo.sh) and the
# example guests (examples/target/wasm32-wasip2/release).
set -euo pipefail
cd "$(dirname "$0")/.."
sluice=$(realpath "${1:-target/debug/sluice}")
rounds=${ROUNDS:-3}
victim_count=${VICTIM_COUNT:-20000}
adversarial=$(realpath examples/target/wasm32-wasip2/release/adversarial.wasm)
source benchmarks/cluster-lib.sh
start_jobmanager
cd "$work"
cat >jm/policies/heavy.toml <<'TOML'
name = "heavy"
[limits]
memory_mib = 256
fuel_per_call = 2_000_000_000
stack_kib = 1024
log_bytes_per_call = 65536
cpu_shares = 300
[quotas]
max_parallelism = 64
connectors = ["datagen", "blackhole"]
TOML
"$sluice" tenant reload >/dev/null
"$sluice" tenant create victim --policy standard >/dev/null
"$sluice" tenant create noisy --policy standard >/dev/null
"$sluice" tenant create heavy --policy heavy >/dev/null
declare -A tok jar
for t in victim noisy heavy; do
    tok[$t]=$("$sluice" token create "$t" 2>/dev/null)
    jar[$t]=$(SLUICE_TOKEN=${tok[$t]} "$sluice" upload "$adversarial")
done
metrics_port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')

tm_up() { # ARGS...: a TaskManager with 12 slots and metrics, warmed up
    TM_SLOTS=12 TM_METRICS=127.0.0.1:$metrics_port start_taskmanager "$@"
    # One victim run first, not measured: the TaskManager compiles (or
    # loads) the component and starts its threads.
    SLUICE_TOKEN=${tok[victim]} "$sluice" submit "${jar[victim]}" --arg mode=busy \
        --arg count=2000 --wait >/dev/null 2>&1
}
tm_down() { # stops the TaskManager and waits until the JobManager forgets it
    kill "$tm"; wait "$tm" 2>/dev/null || true
    for _ in $(seq 300); do
        "$sluice" taskmanagers --json | grep -q '"id"' || return 0
        sleep 0.1
    done
}
cpu_ms() { # TENANT: its CPU on the TaskManager so far, ms (0 without a gate)
    curl -s "http://127.0.0.1:$metrics_port/metrics" |
        awk -v t="tenant=\"$1\"" '/^sluice_tenant_cpu_milliseconds_total/ && index($0, t) {v=$2} END {print v+0}'
}
job_field() { # TENANT JOB FIELD
    curl -s -H "Authorization: Bearer ${tok[$1]}" "$SLUICE_JOBMANAGER/v1/jobs/$2" |
        python3 -c "import json,sys; print(json.load(sys.stdin)['$3'])"
}
start_aggressor() { # TENANT: starts 8 endless busy subtasks, waits until they run
    aggressor=$(SLUICE_TOKEN=${tok[$1]} "$sluice" submit "${jar[$1]}" --arg mode=busy \
        --arg parallelism=8 --arg count=1000000000000 --json |
        python3 -c 'import json,sys; print(json.load(sys.stdin)["jobid"])')
    aggressor_tenant=$1
    for _ in $(seq 300); do
        [ "$(job_field "$1" "$aggressor" state)" = RUNNING ] && break
        sleep 0.1
    done
}
stop_aggressor() {
    SLUICE_TOKEN=${tok[$aggressor_tenant]} "$sluice" cancel "$aggressor" >/dev/null
    for _ in $(seq 600); do
        [ "$(job_field "$aggressor_tenant" "$aggressor" state)" = CANCELED ] && return 0
        sleep 0.1
    done
    echo "the aggressor did not stop" >&2; exit 1
}
hostile() { # MODE [ARGS...]: the victim's run while a hostile job of `noisy` fails beside it
    local mode=$1 job
    shift
    job=$(SLUICE_TOKEN=${tok[noisy]} "$sluice" submit "${jar[noisy]}" --arg mode="$mode" "$@" --json |
        python3 -c 'import json,sys; print(json.load(sys.stdin)["jobid"])')
    aggressor_tenant=noisy
    victim "hostile-$mode"
    for _ in $(seq 600); do
        case "$(job_field noisy "$job" state)" in
        FAILED | FINISHED | CANCELED)
            echo "  hostile $mode ran $(job_field noisy "$job" duration) ms" >&2
            return 0
            ;;
        esac
        sleep 0.1
    done
    echo "the hostile job $mode did not end" >&2; exit 1
}
victim() { # LABEL: runs the victim job; prints LABEL, records/s and its CPU share
    local other=${aggressor_tenant:-none} v0 o0 v1 o1 job ms
    v0=$(cpu_ms victim); o0=$(cpu_ms "$other")
    job=$(SLUICE_TOKEN=${tok[victim]} "$sluice" submit "${jar[victim]}" --arg mode=busy \
        --arg count="$victim_count" --wait --json |
        python3 -c 'import json,sys; print(json.load(sys.stdin)["jid"])')
    v1=$(cpu_ms victim); o1=$(cpu_ms "$other")
    ms=$(job_field victim "$job" duration)
    python3 - "$1" "$victim_count" "$ms" "$v0" "$v1" "$o0" "$o1" <<'PY' | tee -a results.tsv
import sys
label, n, ms, v0, v1, o0, o1 = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), *map(float, sys.argv[4:])
v, o = v1 - v0, o1 - o0
share = f"{v / (v + o):.3f}" if v + o > 0 and o > 0 else "-"
print(f"{label}\t{n * 1000 / ms:.0f}\t{share}")
print(f"  {label}: {ms} ms, victim CPU {v:.0f} ms, other tenant's {o:.0f} ms", file=sys.stderr)
PY
}

: >results.tsv
echo "scenario	victim records/s	victim CPU share"
for r in $(seq "$rounds"); do
    tm_up
    unset aggressor_tenant
    victim gate-alone
    start_aggressor noisy; victim gate-noisy; stop_aggressor
    start_aggressor heavy; victim gate-heavy; stop_aggressor
    for mode in spin bomb deep panic log-flood metric-flood fresh-metrics; do
        hostile "$mode"
    done
    hostile flood-output --arg count=1
    unset aggressor_tenant
    tm_down
    tm_up --cores 0
    unset aggressor_tenant
    victim nogate-alone
    start_aggressor noisy; victim nogate-noisy; stop_aggressor
    tm_down
done
python3 - results.tsv "$(nproc)" <<'PY'
import statistics, sys
rows = [l.rstrip("\n").split("\t") for l in open(sys.argv[1])]
by = {}
for label, rate, share in rows:
    by.setdefault(label, []).append((float(rate), share))
med = {k: statistics.median(r for r, _ in v) for k, v in by.items()}
shares = {k: [float(s) for _, s in v if s != "-"] for k, v in by.items()}
print(f"\nmedians of {len(by['gate-alone'])} runs, {sys.argv[2]} cores")
for k in ["gate-alone", "gate-noisy", "gate-heavy", "nogate-alone", "nogate-noisy"]:
    s = f", CPU share {statistics.median(shares[k]):.3f}" if shares[k] else ""
    print(f"  {k:13} {med[k]:8.0f} records/s{s}")
print(f"victim beside an equal-weight aggressor, gate on:  {med['gate-noisy'] / med['gate-alone']:.3f} of alone (target >= 0.90)")
print(f"victim beside an equal-weight aggressor, gate off: {med['nogate-noisy'] / med['nogate-alone']:.3f} of alone")
print(f"victim's CPU share beside a 3x aggressor: {statistics.median(shares['gate-heavy']):.3f} (weight's proportion 0.250)")
print(f"the gate's cost for a tenant alone: {med['gate-alone'] / med['nogate-alone']:.3f} of its throughput without it (target >= 0.95)")
print("victim beside a hostile job that fails (target >= 0.90 of alone):")
for k in sorted(k for k in med if k.startswith("hostile-")):
    print(f"  {k[8:]:14} {med[k] / med['gate-alone']:.3f}")
PY
