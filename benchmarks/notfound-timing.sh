#!/usr/bin/env bash
# Whether a tenant can tell another tenant's ids from ids that do not exist
# by how long the JobManager takes to answer: starts a JobManager and a
# TaskManager on 127.0.0.1, tenant `acme` uploads wordcount and runs a job
# (it stays in the JobManager's memory, or with CAPACITY=0 leaves it for the
# job-result store as soon as it ends), and tenant `beta` asks for acme's
# job and jar and for random ids of the same shape, interleaved, ROUNDS
# times each over one keep-alive connection. Prints the status and body
# shape each gets (they must be equal) and the median and 90th percentile
# of the answer times.
#
#   bash benchmarks/notfound-timing.sh [SLUICE_BINARY]
#
# Environment: ROUNDS (2000), CAPACITY (the JobManager's
# --jobstore-max-capacity when set).
# Needs the binary (target/debug/sluice after scripts/demo.sh) and the
# example guests (examples/target/wasm32-wasip2/release).
set -euo pipefail
cd "$(dirname "$0")/.."
sluice=$(realpath "${1:-target/debug/sluice}")
rounds=${ROUNDS:-2000}
capacity=${CAPACITY:-}
source benchmarks/cluster-lib.sh
start_jobmanager ${capacity:+--jobstore-max-capacity "$capacity"}
start_taskmanager
cd "$work"
mkdir -p files
"$sluice" tenant create acme --policy standard --file-root "$work/files" >/dev/null
"$sluice" tenant create beta --policy standard >/dev/null
acme=$("$sluice" token create acme 2>/dev/null)
beta=$("$sluice" token create beta 2>/dev/null)
printf 'a b c\n' >files/input.txt
jar=$(SLUICE_TOKEN=$acme "$sluice" upload "$wordcount")
job=$(SLUICE_TOKEN=$acme "$sluice" submit "$jar" --arg input="$work/files/input.txt" \
    --arg output="$work/files/out" --wait --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["jid"])')
held=$(SLUICE_TOKEN=$acme "$sluice" list --json | python3 -c \
    'import json,sys; print(len(json.load(sys.stdin)["jobs"]))')
echo "acme's jobs in the JobManager's memory: $held"

python3 - "$rest" "$beta" "$job" "$jar" "$rounds" <<'EOF'
import http.client, json, os, statistics, sys, time
rest, token, job, jar, rounds = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5])
host, port = rest.rsplit(":", 1)
conn = http.client.HTTPConnection(host, int(port))
headers = {"Authorization": f"Bearer {token}"}

def ask(method, path):
    start = time.perf_counter_ns()
    conn.request(method, "/v1" + path, headers=headers)
    resp = conn.getresponse()
    body = resp.read()
    took = time.perf_counter_ns() - start
    shape = sorted(json.loads(body).keys())
    return resp.status, shape, took

def random_job():
    return os.urandom(16).hex()

def random_jar():
    return os.urandom(32).hex() + ".wasm"

cases = [
    ("GET /jobs/:id", "GET", lambda: f"/jobs/{job}", lambda: f"/jobs/{random_job()}"),
    ("GET /jobs/:id/checkpoints", "GET", lambda: f"/jobs/{job}/checkpoints",
     lambda: f"/jobs/{random_job()}/checkpoints"),
    ("DELETE /jars/:id", "DELETE", lambda: f"/jars/{jar}", lambda: f"/jars/{random_jar()}"),
]
print(f"{rounds} requests of each kind, interleaved, as tenant beta")
print(f"{'endpoint':28} {'id':14} {'status':>6} {'median µs':>10} {'p90 µs':>8}")
for name, method, other, missing in cases:
    times = {"acme's": [], "random": []}
    answers = {}
    for _ in range(50):  # warm-up
        ask(method, other())
        ask(method, missing())
    for _ in range(rounds):
        for kind, path in (("acme's", other), ("random", missing)):
            status, shape, took = ask(method, path())
            answers.setdefault(kind, set()).add((status, tuple(shape)))
            times[kind].append(took / 1000)
    for kind in ("acme's", "random"):
        t = sorted(times[kind])
        statuses = ",".join(str(s) for s, _ in sorted(answers[kind]))
        print(f"{name:28} {kind:14} {statuses:>6} {statistics.median(t):10.1f} "
              f"{t[int(len(t) * 0.9)]:8.1f}")
    same = answers["acme's"] == answers["random"]
    print(f"{name:28} same status and body shape: {'yes' if same else 'NO'}")
EOF
