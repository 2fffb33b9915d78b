#!/usr/bin/env python3
"""Benchmarks that print figures, each measured in this run on this machine: medians of N
with min/max, ratios against a baseline run alternately in the same run where there is
one, and the target. Run through `bash scripts/bench.sh` (it builds and sets up first).

Sections (all by default, or those named on the command line):
  store    a synthetic week at 1 s and 30 s: bytes a sample, report and gate time and memory
  monitor  `monitor --interval 1s` for MONITOR_SECONDS (1800): RSS at minute 2 and at the
           end, CPU share of one core
  rollout  deploy and rollback against the raw Docker CLI doing the runbook's procedure,
           for a service that exits on SIGTERM and one that ignores it; `status`
  load     `dhi-stage load` against oha and wrk on the same route, connections, duration
  switch   deploy, deploy, rollback under a constant 200 requests/s (open model, 1 s timeout)
           with `[rollout] strategy = "switch"` (HAProxy front) and with `recreate`: failed
           requests per step, the longest gap, a warm rollback's start to the first baseline answer

Each section writes target/bench/<section>.json; BENCHMARKS.md is written from all of them
(BENCH_OUT=path writes elsewhere: the CI smoke writes to target/). BENCH_QUICK=1 shortens
everything (N=1, seconds instead of minutes) and asserts no timing.
Traffic goes to 127.0.0.1 only."""

import datetime
import json
import os
import platform
import re
import shlex
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
QUICK = os.environ.get("BENCH_QUICK") == "1"
N = int(os.environ.get("BENCH_N", "1" if QUICK else "5"))
BIN = os.environ["BIN"]
CTX = os.environ["CTX"]
OUT_DIR = os.path.join(ROOT, "target", "bench", "quick" if QUICK else "")
MONITOR_SECONDS = int(os.environ.get("MONITOR_SECONDS", "30" if QUICK else "1800"))
PORT = int(os.environ.get("BENCH_PORT", "3299"))
NAME = os.environ.get("BENCH_NAME", "dhi-bench")
WORK = tempfile.mkdtemp(prefix="dhi-bench-")
ENV_FILE = os.path.join(WORK, "env")
with open(ENV_FILE, "w") as f:
    f.write("PORT=3000\nNODE_ENV=staging\n")
BASE_ENV = dict(
    os.environ,
    DHI_STAGE_ENV_FILE=ENV_FILE,
    DHI_STAGE_CONTAINER=NAME,
    DHI_STAGE_PORT=str(PORT),
    DHI_STAGE_STATE_DIR=os.path.join(WORK, "state"),
)


def log(msg):
    print(msg, flush=True)


def run(args, env=None, check=True, timeout=600):
    r = subprocess.run(args, env=env or BASE_ENV, capture_output=True, text=True, timeout=timeout)
    if check and r.returncode != 0:
        raise SystemExit(f"bench: {' '.join(args)} exited {r.returncode}\n{r.stdout}\n{r.stderr}")
    return r


def timed(args, env=None, ok=(0,)):
    """Wall seconds and peak RSS (MiB) of one run, as /usr/bin/time measures them."""
    out = os.path.join(WORK, "time")
    r = run(["/usr/bin/time", "-f", "%e %M", "-o", out] + args, env=env, check=False)
    if r.returncode not in ok:
        raise SystemExit(f"bench: {' '.join(args)} exited {r.returncode}\n{r.stderr}")
    wall, kb = open(out).read().split()[-2:]
    return float(wall), int(kb) / 1024, r


def stats(xs):
    return {"median": statistics.median(xs), "min": min(xs), "max": max(xs), "n": len(xs)}


def row(section, what, command, values, unit, target=None, target_op="<=", baseline=None, bounded_by=""):
    """One line of the table: values measured (median of them), the baseline's values
    when there is one (ratio = ours / baseline), the target and whether it is met."""
    s = stats(values)
    r = {"section": section, "what": what, "command": command, "unit": unit, **s, "bounded_by": bounded_by}
    if baseline is not None:
        b = stats(baseline[1])
        r["baseline"] = {"what": baseline[0], **b}
        r["ratio"] = s["median"] / b["median"] if b["median"] else None
    if target is not None:
        measured = r["ratio"] if target_op.startswith("ratio") else s["median"]
        op = target_op.split()[-1]
        r["target"] = f"{target_op} {target}"
        r["met"] = measured <= target if op == "<=" else measured >= target
    log(
        f"  {what}: median {s['median']:.3f} {unit} (min {s['min']:.3f}, max {s['max']:.3f}, n={s['n']})"
        + (f"; baseline {r['baseline']['what']} {r['baseline']['median']:.3f}, ratio {r['ratio']:.2f}" if baseline else "")
        + (f"; target {r['target']}: {'met' if r['met'] else 'NOT met'}" if target is not None else "")
    )
    return r


def save(section, rows, extra=None):
    os.makedirs(OUT_DIR, exist_ok=True)
    with open(os.path.join(OUT_DIR, f"{section}.json"), "w") as f:
        json.dump({"section": section, "quick": QUICK, "at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"), "rows": rows, **(extra or {})}, f, indent=1)


# ---------------------------------------------------------------- store, report, gate


def week(interval):
    d = os.path.join(WORK, f"week-{interval}")
    days = "2" if QUICK and interval == "1s" else "7"
    t0 = time.monotonic()
    run([BIN, "synth-week", "--state-dir", d, "--interval", interval, "--days", days, "-q"])
    synth_s = time.monotonic() - t0
    db = sqlite3.connect(os.path.join(d, "state.db"))
    db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    n = db.execute("SELECT COUNT(*) FROM sample_rows").fetchone()[0]
    db.close()
    size = os.path.getsize(os.path.join(d, "state.db"))
    return d, int(days), n, size, synth_s


def clear_digests(d, day=None):
    db = sqlite3.connect(os.path.join(d, "state.db"))
    if day is None:
        db.execute("DELETE FROM day_digests")
    else:
        db.execute("DELETE FROM day_digests WHERE day=?", (day,))
    db.commit()
    db.close()


def bench_store():
    rows = []
    for interval, limit_s in (("1s", 1.0), ("30s", 0.1)):
        log(f"== store: a synthetic week at {interval}")
        d, days, n, size, synth_s = week(interval)
        env = dict(BASE_ENV, DHI_STAGE_STATE_DIR=d)
        out = os.path.join(WORK, f"reports-{interval}")
        last = days
        log(f"  {n} samples over {days} days written in {synth_s:.1f} s")
        if interval == "1s":
            rows.append(row("store", f"bytes a sample on disk, indexes included ({n} samples at 1 s)", "scripts/synth-week.sh DIR --interval 1s", [size / n], "B", target=200))

        def series(args, prep, ok=(0, 3)):
            walls, mems = [], []
            for _ in range(N):
                prep()
                w, m, _ = timed([BIN, "-q"] + args, env=env, ok=ok)
                walls.append(w)
                mems.append(m)
            return walls, mems

        report = ["report", "--day", str(last), "--out", out]
        w, m = series(report, lambda: clear_digests(d))
        rows.append(row("store", f"report --day {last}, {interval} week, cold (no day digested yet: reads every day for the week page)", " ".join(report), w, "s", target=limit_s, bounded_by="one pass over every sample of the week: SQLite row reads and blob decoding"))
        rows.append(row("store", f"  peak memory of the same", " ".join(report), m, "MiB", target=100))
        # The daily cron: earlier days were digested by earlier runs; today's is new.
        for day in (1, last):
            rep = ["report", "--day", str(day), "--out", out]
            w, m = series(rep, lambda day=day: clear_digests(d, day))
            rows.append(row("store", f"report --day {day}, {interval} week, as the daily cron runs it (day {day} not digested yet)", " ".join(rep), w, "s", target=limit_s))
            if day == last:
                rows.append(row("store", "  peak memory of the same", " ".join(rep), m, "MiB", target=100))
        w7 = rows[-2]["median"]
        w1 = rows[-3]["median"]
        rows.append(row("store", f"  cost of day {last} over day 1 (must not grow with the days before)", "", [w7 / w1], "x", target=1.5))
        w, m = series(report, lambda: None)
        rows.append(row("store", f"report --day {last}, {interval} week, every day digested", " ".join(report), w, "s", target=limit_s))
        gate = ["gate"]
        w, m = series(gate, lambda: clear_digests(d))
        rows.append(row("store", f"gate, {interval} week, cold", "gate", w, "s", target=limit_s))
        rows.append(row("store", "  peak memory of the same", "gate", m, "MiB", target=100))
        w, m = series(gate, lambda: None)
        rows.append(row("store", f"gate, {interval} week, every day digested", "gate", w, "s", target=limit_s))
        shutil.rmtree(d, ignore_errors=True)
    save("store", rows)


# ---------------------------------------------------------------- the service under test


def build_images():
    tags = {}
    for sid, ignore in (("a", ""), ("b", ""), ("a", "1"), ("b", "1")):
        tag = f"dhi-bench/{sid}{'-ignores-sigterm' if ignore else ''}:1"
        args = [BIN, "-q", "build", "--context", CTX, "--tag", tag, "--build-arg", f"SERVICE_ID={sid}"]
        if ignore:
            args += ["--build-arg", "FAULT_IGNORE_SIGTERM=1"]
        run(args)
        tags[(sid, bool(ignore))] = tag
    return tags


def health_id():
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{PORT}/health", timeout=0.2) as r:
            if r.status == 200:
                return json.loads(r.read()).get("service_id")
    except Exception:
        return None


def poll_until(sid, start, limit=60.0):
    """Seconds from `start` to the first healthy answer of service `sid`, polled every 10 ms."""
    while time.monotonic() - start < limit:
        if health_id() == sid:
            return time.monotonic() - start
        time.sleep(0.01)
    raise SystemExit(f"bench: service {sid} not healthy within {limit}s")


def docker_run_flags():
    """The runbook's `docker run` as `deploy --dry-run` prints it (the same hardened flags)."""
    r = run([BIN, "deploy", "--image", "dhi-bench/image:1", "--dry-run"])
    lines = r.stdout.split("docker run -d \\\n", 1)[1].split("\n\n", 1)[0]
    flags = []
    for line in lines.splitlines():
        line = line.strip().rstrip("\\").strip()
        if not line or line == "dhi-bench/image:1" or line.startswith("-e "):
            continue
        flags += shlex.split(line)
    return ["--env-file", ENV_FILE] + flags


def cli_replace(image, sid, flags):
    """The runbook's procedure by hand: stop, rm, run with the same flags, curl every 10 ms."""
    start = time.monotonic()
    run(["docker", "stop", NAME], check=False)
    run(["docker", "rm", NAME], check=False)
    run(["docker", "run", "-d"] + flags + [image])
    return poll_until(sid, start)


def dhi(args, sid):
    """A dhi-stage command: seconds to the first healthy answer of `sid`, and to its exit."""
    start = time.monotonic()
    p = subprocess.Popen([BIN, "-q"] + args, env=BASE_ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    first = {}
    t = threading.Thread(target=lambda: first.setdefault("s", poll_until(sid, start)))
    t.start()
    err = p.communicate(timeout=120)[1]
    done = time.monotonic() - start
    t.join()
    if p.returncode != 0:
        raise SystemExit(f"bench: dhi-stage {' '.join(args)} exited {p.returncode}: {err}")
    return first["s"], done


def fresh(image, sid):
    run(["docker", "rm", "-f", NAME], check=False)
    shutil.rmtree(BASE_ENV["DHI_STAGE_STATE_DIR"], ignore_errors=True)
    run([BIN, "-q", "deploy", "--image", image])
    poll_until(sid, time.monotonic())


# What bounds the rows that can miss, from strace -tt of the commands on this machine.
ROLLBACK_BOUND = ("the engine, on both paths: the old container's stop (SIGTERM to exited and torn down, about 250 ms "
                  "for a service that exits at once) then the new one's start (about 430 ms: network and port setup); only the "
                  "create (about 20 ms) overlaps the stop. dhi-stage adds the lock, reconcile and its records (60-100 ms). Where the "
                  "stop is long (a service that ignores SIGTERM: 500 ms grace against docker stop's 2 s) the overlap wins")
DEPLOY_BOUND = ("after the service answers: Step 4's verification (inspect and two execs at once, about 70 ms) and removing "
                "the old container (about 50 ms), which the CLI procedure does not do")
P50_BOUND = ("closed loop, 10 connections on 2 cores shared with the service: latency is measured around the whole "
             "request (send and body drain), about 0.1 ms above oha's and wrk's at the median at the same req/s")
P99_BOUND = ("the tail on 2 cores is the load generator being descheduled, not the service: oha and wrk disagree with "
             "each other several-fold here; dhi-stage's lies between them")


def bench_rollout():
    tags = build_images()
    flags = docker_run_flags()
    rows = []
    for ignores in (False, True):
        kind = "a service that ignores SIGTERM" if ignores else "a service that exits on SIGTERM"
        log(f"== rollout: {kind}")
        a, b = tags[("a", ignores)], tags[("b", ignores)]
        deploy_done, deploy_first, rb_first, cli_deploy, cli_rb = [], [], [], [], []
        for _ in range(N):
            fresh(a, "a")
            first, done = dhi(["deploy", "--image", b], "b")
            deploy_first.append(first)
            deploy_done.append(done)
            first, _ = dhi(["rollback", "--to", a, "--reason", "bench"], "a")
            rb_first.append(first)
            run(["docker", "rm", "-f", NAME], check=False)
            run(["docker", "run", "-d"] + flags + [a])
            poll_until("a", time.monotonic())
            cli_deploy.append(cli_replace(b, "b", flags))
            cli_rb.append(cli_replace(a, "a", flags))
        cli = "docker stop/rm/run + curl every 10 ms"
        rows.append(row("rollout", f"rollback to the first healthy curl, {kind}", "dhi-stage rollback --to A", rb_first, "s", target=0.8, target_op="ratio <=", baseline=(cli, cli_rb), bounded_by=ROLLBACK_BOUND))
        rows.append(row("rollout", f"deploy to its exit, verification included, {kind}", "dhi-stage deploy --image B", deploy_done, "s", target=1.1, target_op="ratio <=", baseline=(cli, cli_deploy), bounded_by=DEPLOY_BOUND))
        rows.append(row("rollout", f"  deploy to the first healthy curl, {kind}", "dhi-stage deploy --image B", deploy_first, "s", baseline=(cli, cli_deploy)))
    log("== status")
    fresh(tags[("a", False)], "a")
    ours = []
    theirs = []
    for _ in range(N * 2):
        w, _, _ = timed([BIN, "-q", "status"], ok=(0,))
        ours.append(w)
        start = time.monotonic()
        # The runbook's quick health check by hand.
        urllib.request.urlopen(f"http://127.0.0.1:{PORT}/health", timeout=5).read()
        run(["docker", "stats", NAME, "--no-stream"])
        run(["sh", "-c", f"docker logs --since 1h {NAME} 2>&1 | grep -i error | tail -10"], check=False)
        theirs.append(time.monotonic() - start)
    rows.append(row("rollout", "status (the runbook's quick health check)", "dhi-stage status", ours, "s", target=0.3, baseline=("curl /health + docker stats --no-stream + docker logs | grep", theirs), bounded_by="a local engine: the container's cgroup files read 100 ms apart for CPU %, the log read meanwhile (the baseline waits on the engine's settled stats reading)"))
    run(["docker", "rm", "-f", NAME], check=False)
    save("rollout", rows)


# ---------------------------------------------------------------- monitor footprint


ANON_BOUND = ("the history a tick judges holds the longest window (the 1 h health rule): samples past the 5 min scrape-reading windows are slimmed to their readings (about 0.4 KB each), so it grows about 0.7 KB a tick until the hour is full, then stays flat; plus a one-time step of about 0.9 MiB at minute 5-6. A compact record for slimmed samples (or running aggregates per rule) would meet it; not done")


def bench_monitor():
    log(f"== monitor --interval 1s for {MONITOR_SECONDS} s")
    tags = build_images()
    fresh(tags[("a", False)], "a")
    p = subprocess.Popen([BIN, "-q", "monitor", "--interval", "1s", "--duration", f"{MONITOR_SECONDS}s"], env=BASE_ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    hz = os.sysconf("SC_CLK_TCK")
    early_at = 120 if MONITOR_SECONDS >= 600 else max(5, MONITOR_SECONDS // 3)
    rss, anon, cpu = {}, {}, {}
    start = time.monotonic()
    while p.poll() is None:
        t = int(time.monotonic() - start)
        try:
            with open(f"/proc/{p.pid}/status") as f:
                status = f.read()
                kb = int(re.search(r"VmRSS:\s+(\d+)", status).group(1))
                anon[t] = int(re.search(r"RssAnon:\s+(\d+)", status).group(1)) / 1024
            with open(f"/proc/{p.pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
                ticks = int(fields[11]) + int(fields[12])
            rss[t] = kb / 1024
            cpu[t] = ticks / hz
        except (OSError, AttributeError):
            pass
        time.sleep(1)
    ts = sorted(rss)
    end = ts[-1]
    early = min(ts, key=lambda x: abs(x - early_at))
    share = (cpu[end] - cpu[early]) / max(1, end - early) * 100
    rows = [
        row("monitor", f"anonymous RSS (the process' own memory) at {end} s minus at {early} s", f"dhi-stage monitor --interval 1s --duration {MONITOR_SECONDS}s", [anon[end] - anon[early]], "MiB", target=1.0, bounded_by=ANON_BOUND),
        row("monitor", f"RSS at {end} s minus RSS at {early} s (1 s interval)", f"dhi-stage monitor --interval 1s --duration {MONITOR_SECONDS}s", [rss[end] - rss[early]], "MiB", target=1.0, bounded_by="anonymous memory: see the row above (the file-backed part, the binary's code, is flat after minute 1)"),
        row("monitor", f"RSS at {end} s", "", [rss[end]], "MiB", target=20),
        row("monitor", f"CPU from {early} s to {end} s, share of one core", "", [share], "%", target=1.0, bounded_by="per tick: a health probe, a scrape, two engine calls, one SQLite insert and the rules over the longest window (1 h)"),
    ]
    run(["docker", "rm", "-f", NAME], check=False)
    save("monitor", rows, {"rss_mib": {str(k): round(v, 2) for k, v in rss.items() if k % 60 == 0 or k == end}, "anon_mib": {str(k): round(v, 2) for k, v in anon.items() if k % 60 == 0 or k == end}})


# ---------------------------------------------------------------- scrape at real cardinality


def exposition(series):
    """A Go-promhttp-style /metrics of about `series` series (a counter and a latency
    histogram per route and status code, many routes): the cardinality of a real service,
    kept under the monitor's 4 MiB scrape cap."""
    les = ["0.005", "0.01", "0.025", "0.05", "0.075", "0.1", "0.25", "0.5", "0.75", "1", "2.5", "5", "7.5", "10", "+Inf"]
    per_route = 3 * (len(les) + 3)
    lines = ["# TYPE http_requests_total counter", "# TYPE http_request_duration_seconds histogram"]
    for r in range(max(1, series // per_route)):
        for code in ("200", "404", "500"):
            lab = f'code="{code}",handler="/r{r}"'
            lines.append(f"http_requests_total{{{lab}}} 205")
            for i, le in enumerate(les):
                lines.append(f'http_request_duration_seconds_bucket{{{lab},le="{le}"}} {100 + i * 7}')
            lines.append(f"http_request_duration_seconds_count{{{lab}}} 205")
            lines.append(f"http_request_duration_seconds_sum{{{lab}}} 12.5")
    return ("\n".join(lines) + "\n").encode()


def serve(body):
    import http.server
    class H(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            b = body if self.path.startswith("/metrics") else b'{"status":"healthy"}'
            self.send_response(200)
            self.send_header("Content-Length", str(len(b)))
            self.end_headers()
            self.wfile.write(b)
        def log_message(self, *a):
            pass
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), H)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    return srv


def bench_scrape():
    big = exposition(50_000)
    small = exposition(200)
    assert len(big) <= 4 << 20, f"the exposition must fit the 4 MiB scrape cap: {len(big)}"
    nl = b"\n"
    n_big = big.count(nl)
    log(f"== one monitor tick against /metrics of {len(big) / 2**20:.1f} MiB ({n_big} series) vs {len(small) / 1024:.0f} KiB")
    servers = {k: serve(b) for k, b in (("big", big), ("small", small))}
    env = dict(BASE_ENV)
    env.pop("DHI_STAGE_CONTAINER", None)
    res = {"big": ([], []), "small": ([], [])}
    for _ in range(N):
        for k in ("small", "big"):
            url = f"http://127.0.0.1:{servers[k].server_address[1]}"
            state = os.path.join(WORK, f"scrape-{k}")
            wall, rss, _ = timed([BIN, "-q", "--state-dir", state, "monitor", "--once", "--base-url", url, "--output", "json"], env=env, ok=(0, 3, 4, 6))
            res[k][0].append(wall)
            res[k][1].append(rss)
    for srv in servers.values():
        srv.shutdown()
    cmd = "dhi-stage monitor --once --base-url URL (no container)"
    rows = [
        row("scrape", f"a tick over {n_big} series ({len(big) / 2**20:.1f} MiB), wall", cmd, res["big"][0], "s", target=1.0, baseline=("the same tick over 200 series", res["small"][0]), bounded_by="two passes over the text (an inventory of the names a convention reads, then the sums); process start and the store"),
        row("scrape", "its peak RSS", cmd, res["big"][1], "MiB", target=64, baseline=("over 200 series", res["small"][1]), bounded_by="the body (4 MiB) and one parsed line at a time: no list of series is kept"),
    ]
    save("scrape", rows)


# ---------------------------------------------------------------- load


def bench_load():
    log("== load: GET /health, 10 connections")
    tags = build_images()
    fresh(tags[("a", False)], "a")
    secs = 3 if QUICK else 10
    url = f"http://127.0.0.1:{PORT}/health"
    ours, oha, wrk = {"rps": [], "p50": [], "p99": []}, {"rps": [], "p50": [], "p99": []}, {"rps": [], "p50": [], "p99": []}
    for i in range(max(3, N) if not QUICK else 1):
        order = ["ours", "oha", "wrk"]
        order = order[i % 3:] + order[: i % 3]
        for tool in order:
            if tool == "ours":
                r = run([BIN, "-q", "load", "--profile", "smoke", "--vus", "10", "--duration", f"{secs}s", "--ramp", "0s", "--output", "json"], check=False)
                d = json.loads(r.stdout)
                ours["rps"].append(d["rps"])
                ours["p50"].append(d["latency_ms"]["p50"])
                ours["p99"].append(d["latency_ms"]["p99"])
            elif tool == "oha":
                r = run(["oha", "-c", "10", "-z", f"{secs}s", "--no-tui", "--output-format", "json", url])
                d = json.loads(r.stdout)
                oha["rps"].append(d["summary"]["requestsPerSec"])
                oha["p50"].append(d["latencyPercentiles"]["p50"] * 1000)
                oha["p99"].append(d["latencyPercentiles"]["p99"] * 1000)
            else:
                r = run(["wrk", "-t2", "-c10", f"-d{secs}s", "--latency", url])
                wrk["rps"].append(float(re.search(r"Requests/sec:\s+([\d.]+)", r.stdout).group(1)))
                for q in ("50", "99"):
                    m = re.search(rf"\s{q}%\s+([\d.]+)(us|ms|s)\b", r.stdout)
                    v = float(m.group(1)) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[m.group(2)]
                    wrk[f"p{q}"].append(v)
    rows = []
    for name, base in (("oha", oha), ("wrk", wrk)):
        rows.append(row("load", f"req/s against {name}", f"dhi-stage load --profile smoke --vus 10 --duration {secs}s --ramp 0s", ours["rps"], "req/s", target=0.9, target_op="ratio >=", baseline=(name, base["rps"]), bounded_by="the service under test shares the two cores with the load generator"))
        for q in ("p50", "p99"):
            r = row("load", f"  {q} against {name}", "", ours[q], "ms", baseline=(name, base[q]), bounded_by=P50_BOUND if q == "p50" else P99_BOUND)
            r["target"] = "ratio within 0.9-1.1"
            r["met"] = 0.9 <= r["ratio"] <= 1.1
            log(f"    within 10%: {'met' if r['met'] else 'NOT met'}")
            rows.append(r)
    run(["docker", "rm", "-f", NAME], check=False)
    save("load", rows)


# ---------------------------------------------------------------- BENCHMARKS.md


def machine():
    cpu = ""
    try:
        cpu = re.search(r"model name\s*:\s*(.*)", open("/proc/cpuinfo").read()).group(1)
    except Exception:
        pass
    mem = int(re.search(r"MemTotal:\s+(\d+)", open("/proc/meminfo").read()).group(1)) // 1024 // 1024
    docker = run(["docker", "version", "--format", "{{.Server.Version}}"], check=False).stdout.strip()
    return f"{platform.system()} {platform.release()}, {os.cpu_count()} cores ({cpu}), {mem} GiB, Docker Engine {docker}"


def fmt(v, unit):
    if unit == "s":
        return f"{v * 1000:.0f} ms" if v < 10 else f"{v:.1f} s"
    if unit == "ms":
        return f"{v:.2f} ms"
    if unit in ("MiB", "B", "%", "x"):
        return f"{v:.2f} {unit}" if unit != "B" else f"{v:.0f} B"
    return f"{v:.1f} {unit}"


def write_md(path):
    sections = []
    for s in ("store", "monitor", "scrape", "rollout", "switch", "load"):
        p = os.path.join(OUT_DIR, f"{s}.json")
        if os.path.exists(p):
            sections.append(json.load(open(p)))
    out = ["# Benchmarks", "", f"Measured with `bash scripts/bench.sh` on {machine()}.",
           "Each figure is the median of the runs shown (min-max beside it); a ratio is ours over",
           "the baseline measured alternately in the same run. Regenerate with `bash scripts/bench.sh`",
           "(`MONITOR_SECONDS`, `BENCH_N`, or section names: `store monitor rollout load`).", ""]
    titles = {"store": "A week of samples: storage, report, gate", "monitor": "The monitor at a 1 s interval",
              "rollout": "Deploy, rollback and status against the Docker CLI", "load": "The load probe against oha and wrk",
              "scrape": "A scrape at real cardinality (issue M)", "switch": "Rollouts under load: switch against recreate (issue N)"}
    misses = []
    for s in sections:
        out += [f"## {titles[s['section']]}", "", f"Measured {s['at']}{' (quick smoke)' if s['quick'] else ''}.", "",
                "| what | command | median | min-max | baseline (median) | ratio | target | met? | bounded by |",
                "|---|---|---|---|---|---|---|---|---|"]
        for r in s["rows"]:
            base = f"{r['baseline']['what']}: {fmt(r['baseline']['median'], r['unit'])}" if "baseline" in r else ""
            ratio = f"{r['ratio']:.2f}" if r.get("ratio") is not None else ""
            met = "" if "met" not in r else ("yes" if r["met"] else "**no**")
            command = re.sub(r"/tmp/dhi-bench-[^/ ]+/", "DIR/", r["command"])
            cmd = f"`{command}`" if command else ""
            target = r.get("target", "")
            if target and not target.startswith("ratio") and r["unit"] == "s":
                op, v = target.split()
                target = f"{op} {fmt(float(v), 's')}"
            out.append(f"| {r['what']} | {cmd} | {fmt(r['median'], r['unit'])} | {fmt(r['min'], r['unit'])}-{fmt(r['max'], r['unit'])} (n={r['n']}) | {base} | {ratio} | {target} | {met} | {r.get('bounded_by', '')} |")
            if r.get("met") is False:
                misses.append(f"- {titles[s['section']]}: {r['what'].strip()} — {ratio or fmt(r['median'], r['unit'])} against {target}: {r.get('bounded_by') or 'see the row'}.")
        if s["section"] == "monitor" and s.get("rss_mib"):
            for key, label in (("rss_mib", "RSS"), ("anon_mib", "anonymous RSS")):
                if s.get(key):
                    out += ["", f"{label} by minute (MiB): " + ", ".join(f"{int(k) // 60}m {v}" for k, v in sorted(s[key].items(), key=lambda kv: int(kv[0])))]
        out.append("")
    out += ["## What misses, and why", ""] + (misses or ["Nothing: every target is met."]) + [""]
    with open(path, "w") as f:
        f.write("\n".join(out))
    log(f"wrote {path}")


# ---------------------------------------------------------------- rollouts under load


def free_port():
    import socket
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


class OpenLoad:
    """A request every 5 ms whatever the answers (open model), 1 s timeout each:
    (sent, answered, service_id or None)."""

    def __init__(self, port, rate=200):
        self.port, self.every, self.hits, self.stop = port, 1.0 / rate, [], False
        self.thread = threading.Thread(target=self.loop)
        self.thread.start()

    def one(self):
        sent = time.monotonic()
        sid = None
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/health", timeout=1) as r:
                if r.status == 200:
                    sid = json.loads(r.read()).get("service_id")
        except Exception:
            pass
        self.hits.append((sent, time.monotonic(), sid))

    def loop(self):
        workers, nxt = [], time.monotonic()
        while not self.stop:
            w = threading.Thread(target=self.one)
            w.start()
            workers.append(w)
            nxt += self.every
            time.sleep(max(0.0, nxt - time.monotonic()))
        for w in workers:
            w.join()

    def finish(self):
        self.stop = True
        self.thread.join()
        return sorted(self.hits)


def step_figures(hits, start, end):
    """Failed requests sent in [start, end + 1 s], and the longest stretch without an answer."""
    during = [h for h in hits if start <= h[0] <= end + 1.0]
    failed = sum(1 for h in during if h[2] is None)
    gap, last = 0.0, start
    for h in during:
        if h[2] is not None:
            gap, last = max(gap, h[1] - last), h[1]
    return failed, gap


def rollout_round(strategy, a, b):
    """deploy A; under load: deploy B, rollback; (deploy failed, deploy gap, rollback failed,
    rollback gap, rollback start to the first answer of A)."""
    cfg = os.path.join(WORK, f"{strategy}.toml")
    text = open(os.path.join(ROOT, "config", "staging.toml")).read()
    text = text.replace('strategy = "recreate"', f'strategy = "{strategy}"')
    text = text.replace("slots = [3101, 3102]", f"slots = [{free_port()}, {free_port()}]")
    open(cfg, "w").write(text)
    env = dict(BASE_ENV, DHI_STAGE_CONFIG=cfg)
    run(["docker", "rm", "-f", NAME, f"{NAME}-slot1", f"{NAME}-slot2"], check=False)
    shutil.rmtree(env["DHI_STAGE_STATE_DIR"], ignore_errors=True)
    if strategy == "switch":
        run([BIN, "-q", "front", "up"], env=env)
    try:
        run([BIN, "-q", "deploy", "--image", a], env=env)
        poll_until("a", time.monotonic())
        load = OpenLoad(PORT)
        time.sleep(1.0)
        t0 = time.monotonic()
        run([BIN, "-q", "deploy", "--image", b], env=env)
        t1 = time.monotonic()
        time.sleep(1.5)
        t2 = time.monotonic()
        run([BIN, "-q", "rollback", "--reason", "bench"], env=env)
        t3 = time.monotonic()
        time.sleep(1.5)
        hits = load.finish()
    finally:
        if strategy == "switch":
            run([BIN, "-q", "front", "down"], env=env, check=False)
        run(["docker", "rm", "-f", NAME, f"{NAME}-slot1", f"{NAME}-slot2"], check=False)
    df, dg = step_figures(hits, t0, t1)
    rf, rg = step_figures(hits, t2, t3)
    first_a = min((h[1] for h in hits if h[0] >= t2 and h[2] == "a"), default=None)
    return df, dg, rf, rg, (first_a - t2) if first_a else None


def bench_switch():
    tags = build_images()
    a, b = tags[("a", False)], tags[("b", False)]
    got = {"switch": [], "recreate": []}
    for i in range(N):
        for strategy in ("switch", "recreate"):
            log(f"== rollouts under load: {strategy}, round {i + 1}")
            got[strategy].append(rollout_round(strategy, a, b))
    col = lambda st, k: [r[k] for r in got[st] if r[k] is not None]
    base = "the same sequence with strategy = recreate"
    rows = [
        row("switch", "failed requests during a deploy (200 req/s, open model)", "dhi-stage deploy --image B (switch)", col("switch", 0), "req", target=0, baseline=(base, col("recreate", 0))),
        row("switch", "failed requests during a rollback", "dhi-stage rollback (switch, warm)", col("switch", 2), "req", target=0, baseline=(base, col("recreate", 2))),
        row("switch", "longest stretch without an answer, deploy", "dhi-stage deploy --image B (switch)", col("switch", 1), "s", baseline=(base, col("recreate", 1))),
        row("switch", "longest stretch without an answer, rollback", "dhi-stage rollback (switch, warm)", col("switch", 3), "s", baseline=(base, col("recreate", 3))),
        row("switch", "rollback start to the first baseline answer (process start included)", "dhi-stage rollback (switch, warm)", col("switch", 4), "s", target=0.1, baseline=(base, col("recreate", 4)), bounded_by="a process start, the config, the engine's and the front's answers before the switch (reconcile, reap, the warm slot's image): about 50 ms of it is dhi-stage's decision to the switch"),
    ]
    save("switch", rows)


def main():
    wanted = [a for a in sys.argv[1:] if not a.isdigit()] or ["store", "rollout", "switch", "load", "scrape", "monitor"]
    try:
        for s in wanted:
            {"store": bench_store, "rollout": bench_rollout, "switch": bench_switch, "load": bench_load, "monitor": bench_monitor, "scrape": bench_scrape}[s]()
    finally:
        run(["docker", "rm", "-f", NAME], check=False)
        shutil.rmtree(WORK, ignore_errors=True)
    write_md(os.environ.get("BENCH_OUT", os.path.join(ROOT, "BENCHMARKS.md")))


if __name__ == "__main__":
    main()
