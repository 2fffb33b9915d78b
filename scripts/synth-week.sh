#!/usr/bin/env bash
# Writes a realistic validation week into a state dir through dhi-stage's own store calls:
# a deployment, samples at the given interval (counters rising, the runbook's latency
# buckets, memory with noise, a few restarts), one rollback, validations and test results.
# Any store layout is benchmarked on the same week this way.
#   bash scripts/synth-week.sh STATE_DIR [--interval 1s] [--days 7] [--seed N]
set -euo pipefail
cd "$(dirname "$0")/.."
[ $# -ge 1 ] || { echo "usage: bash scripts/synth-week.sh STATE_DIR [--interval 1s] [--days 7] [--seed N]" >&2; exit 2; }
dir="$1"; shift
bin="${DHI_STAGE_BIN:-}"
if [ -z "$bin" ]; then
  cargo build --release --quiet
  bin="$PWD/target/release/dhi-stage"
fi
exec "$bin" synth-week --state-dir "$dir" "$@"
