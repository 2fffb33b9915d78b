#!/usr/bin/env bash
# Benchmarks that print figures, each against a baseline measured in the same run:
#   1. deploy start-to-healthy and rollback decision-to-healthy (median of N) vs the runbook's
#      shell procedure (docker stop/rm/run, then curl polled every 50 ms, no `sleep 10`);
#   2. load req/s vs wrk on the same service, connections and duration;
#   3. the monitor's RSS and CPU at a 1 s interval over MONITOR_SECONDS (default 300).
# Traffic goes to 127.0.0.1 only. Usage: bash scripts/bench.sh [N]
set -euo pipefail
cd "$(dirname "$0")/.."
N="${1:-5}"
MONITOR_SECONDS="${MONITOR_SECONDS:-300}"
bash scripts/setup.sh
command -v wrk >/dev/null || { DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk >/dev/null; }
cargo build --release --quiet
bin="$PWD/target/release/dhi-stage"
ctx="$(bash scripts/build-testsvc.sh)"
work="$(mktemp -d)"; trap 'docker rm -f dhi-bench dhi-bench.previous >/dev/null 2>&1 || true; rm -rf "$work"' EXIT
printf 'PORT=3000\nNODE_ENV=staging\n' > "$work/env"
export DHI_STAGE_STATE_DIR="$work/state" DHI_STAGE_ENV_FILE="$work/env" DHI_STAGE_CONTAINER=dhi-bench DHI_STAGE_PORT=3299
"$bin" -q build --context "$ctx" --tag dhi-bench/a:1 >/dev/null
"$bin" -q build --context "$ctx" --tag dhi-bench/b:1 --build-arg FAULT_LATENCY_MS=0 >/dev/null
median() { sort -n | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }
ms() { python3 -c 'import sys,json; d=json.load(sys.stdin); print(eval(sys.argv[1]))' "$1"; }

echo "== deploy and rollback, median of $N"
docker rm -f dhi-bench >/dev/null 2>&1 || true
"$bin" -q deploy --image dhi-bench/a:1 >/dev/null
: > "$work/deploy"; : > "$work/rollback"; : > "$work/shell"
for i in $(seq "$N"); do
  "$bin" -q deploy --image dhi-bench/b:1 --output json | ms 'd["start_to_healthy_ms"]' >> "$work/deploy"
  "$bin" -q rollback --to dhi-bench/a:1 --output json | ms 'd["rollback"]["decision_to_healthy_ms"]' >> "$work/rollback"
  # Baseline: the runbook's Docker rollback procedure by hand, health polled every 50 ms.
  start=$(date +%s%N)
  docker stop dhi-bench >/dev/null; docker rm dhi-bench >/dev/null
  docker run -d --name dhi-bench --env-file "$work/env" -p 127.0.0.1:3299:3000 --user 65532:65532 --read-only \
    --tmpfs /tmp:noexec,nosuid,size=100m --tmpfs /app/profiles:noexec,nosuid,size=50m --cap-drop=ALL \
    --security-opt=no-new-privileges:true --restart=unless-stopped dhi-bench/a:1 >/dev/null
  until curl -fs -o /dev/null --max-time 1 http://127.0.0.1:3299/health; do sleep 0.05; done
  echo $(( ($(date +%s%N) - start) / 1000000 )) >> "$work/shell"
  docker rm -f dhi-bench >/dev/null; rm -rf "$work/state"; "$bin" -q deploy --image dhi-bench/a:1 >/dev/null
done
d=$(median < "$work/deploy"); r=$(median < "$work/rollback"); s=$(median < "$work/shell")
echo "deploy start-to-healthy:      median ${d} ms  (runs: $(tr '\n' ' ' < "$work/deploy"))"
echo "rollback decision-to-healthy: median ${r} ms  (runs: $(tr '\n' ' ' < "$work/rollback"))"
echo "runbook shell rollback:       median ${s} ms  (baseline, same machine, same images)"
python3 -c "print(f'rollback ratio dhi-stage / shell baseline: {$r/$s:.2f}')"

echo "== load: req/s against the test service (10 connections, 10 s, GET /auth/verify)"
ours=$("$bin" -q load --profile load --vus 10 --duration 10s --ramp 0s --output json | ms 'round(d["rps"])' || true)
theirs=$(wrk -t2 -c10 -d10s http://127.0.0.1:3299/auth/verify | awk '/Requests\/sec/ {print int($2)}')
echo "dhi-stage load: ${ours} req/s   wrk (baseline): ${theirs} req/s"
python3 -c "print(f'load ratio dhi-stage / wrk: {$ours/$theirs:.2f}')"

echo "== monitor at a 1 s interval for ${MONITOR_SECONDS} s"
"$bin" -q monitor --interval 1s --duration "${MONITOR_SECONDS}s" >/dev/null 2>&1 &
pid=$!
peak=0
while kill -0 "$pid" 2>/dev/null; do
  rss=$(awk '/VmRSS/ {print $2}' "/proc/$pid/status" 2>/dev/null || echo 0)
  (( rss > peak )) && peak=$rss
  ticks=$(awk '{print $14+$15}' "/proc/$pid/stat" 2>/dev/null || echo "$ticks")
  sleep 1
done
wait "$pid" || true
hz=$(getconf CLK_TCK)
python3 -c "print(f'monitor: peak RSS {$peak/1024:.1f} MiB, CPU {${ticks:-0}/$hz:.2f} s over ${MONITOR_SECONDS} s = {100*${ticks:-0}/$hz/${MONITOR_SECONDS}:.2f}% of one core')"
# Baseline: the runbook's own loop, one `docker stats --no-stream` and one curl per second.
start=$(date +%s%N); cpu0=$(awk '{print $14+$15+$16+$17}' /proc/$$/stat)
for _ in $(seq 30); do docker stats dhi-bench --no-stream >/dev/null; curl -s -o /dev/null http://127.0.0.1:3299/health; done
echo "runbook loop (docker stats + curl, 30 iterations): $(( ($(date +%s%N) - start) / 30000000 )) ms per iteration (dhi-stage samples every 1000 ms)"
