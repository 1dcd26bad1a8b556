#!/usr/bin/env python3
"""Nexmark (and the synthetic pipeline) in Flink and in Sluice, side by side.

Started by run.sh, which builds both sides. For each parallelism it starts a
Flink standalone session cluster (one JobManager, one TaskManager with two
slots, or as many as the parallelism if more, Flink's default memory
settings) and a Sluice session cluster (one JobManager, one TaskManager with
as many slots), both on 127.0.0.1, with
exactly-once checkpoints every second to the local disk. For each query it:

1. checks that both engines write the same results (every field the query
   prints) on two small streams: --check-events at 200 events per second of
   event time (many windows) and --check-fast-events at the benchmark's
   rate; the numbers below mean nothing if the two jobs compute different
   things (the synthetic pipeline is not checked: its Flink job has no
   output);
2. runs one untimed warm-up job on each (JIT, caches);
3. runs the query --runs times on each, interleaved A/B/B/A..., and takes
   each job's duration from its engine's REST API (`/jobs/:id`, the same
   Flink-shaped view in both).

While a job runs it samples, every 0.2 s, the resident memory of that
engine's JobManager plus TaskManager (the peak is reported) and, from
/proc, the CPU time used by every process but that engine's two (the other,
idle cluster included). A run during which they used more than
--max-foreign of one core is run again (at most twice) and the load is
reported either way. --check-only stops after the checks.
"""

import argparse
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

NEXMARK_QUERIES = ["q0", "q1", "q2", "q3", "q4", "q5", "q7", "q8"]
CLK_TCK = os.sysconf("SC_CLK_TCK")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http_json(url, token=None, timeout=10, body=None, content_type="application/json"):
    """GETs `url`, or POSTs `body` (bytes, or an object sent as JSON)."""
    if body is not None and not isinstance(body, bytes):
        body = json.dumps(body).encode()
    req = urllib.request.Request(url, data=body)
    if body is not None:
        req.add_header("Content-Type", content_type)
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    with urllib.request.urlopen(req, timeout=timeout) as r:
        return json.load(r)


def run_body(args, parallelism, output):
    """`POST /jars/:id/run`'s body, the same for both engines."""
    return {"parallelism": parallelism,
            "programArgsList": args + ([f"output={output}"] if output else [])}


def wait_until(what, check, timeout=120):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if check():
                return
        except OSError:
            pass
        time.sleep(0.2)
    sys.exit(f"timed out waiting for {what}")


def proc_cpu_ticks(pid):
    """utime + stime of a process (and its reaped children), in ticks."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0
    return sum(int(v) for v in fields[11:15])


def busy_ticks():
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    return sum(v) - v[3] - v[4]  # all but idle and iowait


def rss_kib(pid):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


class Cluster:
    """Processes started here, stopped at exit."""

    def __init__(self, work, name):
        self.work = os.path.join(work, name)
        os.makedirs(self.work)
        self.procs = []

    def spawn(self, args, log, env=None):
        out = open(os.path.join(self.work, log), "ab")
        p = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, cwd=self.work,
                             env=env, start_new_session=True)
        self.procs.append(p)
        return p

    def pids(self):
        return [p.pid for p in self.procs]

    def stop(self):
        for p in self.procs:
            try:
                os.killpg(p.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        for p in self.procs:
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait()
        self.procs = []


class Flink(Cluster):
    name = "Flink"

    def __init__(self, work, home, jar, slots, tag):
        super().__init__(work, f"flink-{tag}")
        self.home = home
        conf = os.path.join(self.work, "conf")
        shutil.copytree(os.path.join(home, "conf"), conf)
        self.rest = free_port()
        settings = {
            "jobmanager.rpc.address": "127.0.0.1",
            "jobmanager.rpc.port": free_port(),
            "jobmanager.bind-host": "127.0.0.1",
            "jobmanager.memory.process.size": "1600m",
            "taskmanager.host": "127.0.0.1",
            "taskmanager.bind-host": "127.0.0.1",
            "taskmanager.numberOfTaskSlots": slots,
            "taskmanager.memory.process.size": "1728m",
            "rest.address": "127.0.0.1",
            "rest.bind-address": "127.0.0.1",
            "rest.port": self.rest,
            "blob.server.port": free_port(),
            "execution.checkpointing.dir": "file://" + os.path.join(self.work, "checkpoints"),
            "parallelism.default": 1,
        }
        with open(os.path.join(conf, "config.yaml")) as f:
            # Keep the shipped JVM options (module opens Flink needs).
            java_opts = re.search(r"^\s+all: (.*)$", f.read(), re.M).group(1)
        with open(os.path.join(conf, "config.yaml"), "w") as f:
            f.write(f"env.java.opts.all: {java_opts}\n")
            for k, v in settings.items():
                f.write(f"{k}: {v}\n")
        self.env = dict(os.environ, FLINK_CONF_DIR=conf, FLINK_LOG_DIR=os.path.join(self.work, "log"))
        self.spawn([os.path.join(home, "bin", "jobmanager.sh"), "start-foreground"], "jm.out", self.env)
        wait_until("Flink's REST API", lambda: http_json(self.url("/overview")) is not None)
        self.spawn([os.path.join(home, "bin", "taskmanager.sh"), "start-foreground"], "tm.out", self.env)
        wait_until("Flink's TaskManager",
                   lambda: http_json(self.url("/overview"))["slots-total"] >= slots)
        self.app = self.upload(jar)

    def url(self, path):
        return f"http://127.0.0.1:{self.rest}{path}"

    def job(self, job):
        return http_json(self.url(f"/jobs/{job}"))

    def checkpoints(self, job):
        return http_json(self.url(f"/jobs/{job}/checkpoints"))["counts"]["completed"]

    def output(self, name):
        """The output argument for a job writing to `name`, and where the
        files appear."""
        path = os.path.join(self.work, name)
        return path, path

    def upload(self, jar):
        """Uploads the jobs' jar through `POST /jars/upload`; its id."""
        boundary = "sluice-bench-boundary"
        with open(jar, "rb") as f:
            content = f.read()
        body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"jarfile\"; "
                f"filename=\"{os.path.basename(jar)}\"\r\nContent-Type: application/x-java-archive"
                f"\r\n\r\n").encode() + content + f"\r\n--{boundary}--\r\n".encode()
        answer = http_json(self.url("/jars/upload"), body=body,
                           content_type=f"multipart/form-data; boundary={boundary}")
        return os.path.basename(answer["filename"])

    def submit(self, args, parallelism, output=None):
        body = run_body(args, parallelism, output)
        body["entryClass"] = "sluice.bench.Queries"
        return http_json(self.url(f"/jars/{self.app}/run"), body=body, timeout=120)["jobid"]


class Sluice(Cluster):
    name = "Sluice"

    def __init__(self, work, sluice, wasm, slots, tag):
        super().__init__(work, f"sluice-{tag}")
        self.sluice = sluice
        self.spawn([sluice, "jobmanager", "--rest-addr", "127.0.0.1:0", "--rpc-addr", "127.0.0.1:0",
                    "--data-dir", "jm", "--checkpoint-dir",
                    "file://" + os.path.join(self.work, "checkpoints")], "jm.log")
        endpoints = os.path.join(self.work, "jm", "endpoints.json")
        credentials = os.path.join(self.work, "jm", "credentials")
        wait_until("Sluice's JobManager",
                   lambda: os.path.getsize(endpoints) > 0 and os.path.getsize(credentials) > 0)
        with open(endpoints) as f:
            ep = json.load(f)
        with open(credentials) as f:
            self.token = re.search(r'^token = "(.*)"$', f.read(), re.M).group(1)
        self.rest = ep["rest"]
        self.env = dict(os.environ, SLUICE_JOBMANAGER=f"http://{self.rest}", SLUICE_TOKEN=self.token)
        self.spawn([sluice, "taskmanager", "--jobmanager", ep["rpc"], "--token", ep["token"],
                    "--slots", str(slots), "--data-dir", "tm", "--metrics-addr", "off"], "tm.log")
        wait_until("Sluice's TaskManager",
                   lambda: http_json(self.url("/overview"), self.token)["slots-total"] >= slots)
        self.app = self.client(["upload", wasm]).strip()

    def client(self, args):
        out = subprocess.run([self.sluice, *args], env=self.env, capture_output=True, text=True)
        if out.returncode != 0:
            sys.exit(f"sluice {' '.join(args)} failed:\n{out.stdout}\n{out.stderr}")
        return out.stdout

    def url(self, path):
        return f"http://{self.rest}{path}"

    def job(self, job):
        return http_json(self.url(f"/jobs/{job}"), self.token)

    def checkpoints(self, job):
        return http_json(self.url(f"/jobs/{job}/checkpoints"), self.token)["counts"]["completed"]

    def output(self, name):
        # Relative paths resolve under the tenant's first file root.
        return name, os.path.join(self.work, "jm", "files", "default", name)

    def submit(self, args, parallelism, output=None):
        body = run_body(args, parallelism, output)
        body["checkpointInterval"] = 1000
        return http_json(self.url(f"/jars/{self.app}/run"), self.token, body=body, timeout=120)["jobid"]


def run_job(engine, args, parallelism, output=None):
    """Runs one job to its end; its duration (s), peak RSS (MiB), foreign
    CPU (share of one core: every other process's) and completed
    checkpoints."""
    ours = engine.pids()
    before_busy = busy_ticks()
    before_ours = sum(proc_cpu_ticks(p) for p in ours)
    start = time.monotonic()
    job = engine.submit(args, parallelism, output)
    peak = 0
    while True:
        peak = max(peak, sum(rss_kib(p) for p in ours))
        detail = engine.job(job)
        if detail["state"] in ("FINISHED", "FAILED", "CANCELED"):
            break
        time.sleep(0.2)
    wall = time.monotonic() - start
    foreign = (busy_ticks() - before_busy) - (sum(proc_cpu_ticks(p) for p in ours) - before_ours)
    if detail["state"] != "FINISHED":
        sys.exit(f"{engine.name} job {job} ({' '.join(args)}) ended {detail['state']}")
    return {
        "seconds": detail["duration"] / 1000.0,
        "rss_mib": peak / 1024.0,
        "foreign": max(foreign, 0) / CLK_TCK / wall,
        "checkpoints": engine.checkpoints(job),
    }


def read_lines(directory):
    lines = []
    for root, _, files in os.walk(directory):
        for name in files:
            if name.startswith("."):
                continue  # Flink's in-progress files
            with open(os.path.join(root, name), encoding="utf-8") as f:
                lines.extend(f.read().splitlines())
    return sorted(lines)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--flink-home", required=True)
    ap.add_argument("--flink-jar", required=True)
    ap.add_argument("--sluice", required=True)
    ap.add_argument("--wasm", required=True)
    ap.add_argument("--queries", default=" ".join(NEXMARK_QUERIES + ["synthetic"]))
    ap.add_argument("--parallelism", default="1 2")
    ap.add_argument("--events", type=int, default=10_000_000)
    ap.add_argument("--synthetic-events", type=int, default=40_000_000)
    ap.add_argument("--tps", type=int, default=100_000)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--check-events", type=int, default=60_000)
    ap.add_argument("--check-fast-events", type=int, default=200_000)
    ap.add_argument("--check-only", action="store_true")
    ap.add_argument("--max-foreign", type=float, default=0.15)
    ap.add_argument("--json", help="also write every run's figures to this file")
    a = ap.parse_args()
    known = NEXMARK_QUERIES + ["synthetic"]
    unknown = [q for q in a.queries.split() if q not in known]
    if unknown:
        ap.error(f"unknown queries {' '.join(unknown)}: choose from {' '.join(known)}")
    try:
        parallelisms = [int(x) for x in a.parallelism.split()]
    except ValueError:
        ap.error(f"--parallelism {a.parallelism!r}: expected numbers such as \"1 2\"")
    if not parallelisms or min(parallelisms) < 1 or a.runs < 1 or a.events < 1:
        ap.error("--parallelism, --runs and --events must be at least 1")

    work = tempfile.mkdtemp(prefix="sluice-vs-flink-")
    clusters = []

    def stop(*_):
        for c in clusters:
            c.stop()
        shutil.rmtree(work, ignore_errors=True)

    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))
    signal.signal(signal.SIGINT, lambda *_: sys.exit(1))
    results = []
    try:
        with open("/proc/cpuinfo") as f:
            model = re.search(r"model name\s*:\s*(.*)", f.read()).group(1)
        print(f"machine: {os.cpu_count()} CPUs ({model}), "
              f"{os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') >> 30} GiB; "
              f"{time.strftime('%Y-%m-%d %H:%M', time.gmtime())} UTC", flush=True)
        for p in parallelisms:
            # Two slots at least, so that both engines' TaskManagers look
            # alike whatever the job's parallelism.
            slots = max(2, p)
            flink = Flink(work, a.flink_home, a.flink_jar, slots, f"p{p}")
            clusters.append(flink)
            sluice = Sluice(work, a.sluice, a.wasm, slots, f"p{p}")
            clusters.append(sluice)
            engines = [flink, sluice]
            for q in a.queries.split():
                events = a.synthetic_events if q == "synthetic" else a.events
                events -= events % p
                if q != "synthetic":
                    for n, tps in ((a.check_events, 200), (a.check_fast_events, a.tps)):
                        n -= n % p
                        got = []
                        for e in engines:
                            arg, files = e.output(f"check-{q}-p{p}-{tps}")
                            run_job(e, [f"query={q}", f"events={n}", f"tps={tps}"], p, output=arg)
                            got.append(read_lines(files))
                        if got[0] != got[1] or not got[0]:
                            sys.exit(f"{q} at p={p}, tps={tps}: Flink wrote {len(got[0])} lines, "
                                     f"Sluice {len(got[1])}, and they differ: the engines disagree")
                        print(f"{q} p={p}: both engines wrote the same {len(got[0])} lines "
                              f"({n} events at {tps} per second)", flush=True)
                if a.check_only:
                    continue
                args = [f"query={q}", f"events={events}", f"tps={a.tps}"]
                for e in engines:
                    run_job(e, args, p)  # warm-up
                for r in range(a.runs):
                    order = engines if r % 2 == 0 else engines[::-1]
                    for e in order:
                        for _ in range(3):
                            m = run_job(e, args, p)
                            if m["foreign"] <= a.max_foreign:
                                break
                            print(f"  rerun: {m['foreign']:.0%} of a core went to other processes",
                                  flush=True)
                        m.update(engine=e.name, query=q, parallelism=p, run=r, events=events,
                                 rate=events / m["seconds"])
                        results.append(m)
                        print(f"  {q} p={p} {e.name:6} run {r}: {m['rate']:>12,.0f} events/s "
                              f"({m['seconds']:.2f} s, {m['checkpoints']} checkpoints, "
                              f"peak RSS {m['rss_mib']:.0f} MiB, foreign load {m['foreign']:.0%})",
                              flush=True)
            for c in engines:
                c.stop()
                clusters.remove(c)
    finally:
        stop()
    if a.json:
        with open(a.json, "w") as f:
            json.dump(results, f, indent=1)
    if not results:
        return
    print()
    print("| query | p | Flink events/s | Sluice events/s | Sluice ÷ Flink | Flink peak RSS | "
          "Sluice peak RSS | checkpoints (Flink / Sluice) | max foreign load |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    keys = []
    for m in results:
        if (m["query"], m["parallelism"]) not in keys:
            keys.append((m["query"], m["parallelism"]))
    for q, p in keys:
        rows = {e: [m for m in results if m["query"] == q and m["parallelism"] == p and m["engine"] == e]
                for e in ("Flink", "Sluice")}
        rate = {e: statistics.median(m["rate"] for m in rows[e]) for e in rows}
        rss = {e: max(m["rss_mib"] for m in rows[e]) for e in rows}
        cps = {e: statistics.median(m["checkpoints"] for m in rows[e]) for e in rows}
        foreign = max(m["foreign"] for e in rows for m in rows[e])
        print(f"| {q} | {p} | {rate['Flink']:,.0f} | {rate['Sluice']:,.0f} | "
              f"{rate['Sluice'] / rate['Flink']:.2f} | {rss['Flink']:.0f} MiB | {rss['Sluice']:.0f} MiB | "
              f"{cps['Flink']:g} / {cps['Sluice']:g} | {foreign:.0%} |")


if __name__ == "__main__":
    main()
