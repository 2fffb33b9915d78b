#!/usr/bin/env bash
# Benchmarks that print figures and write BENCHMARKS.md (see scripts/bench.py for what is
# measured and how). Traffic goes to 127.0.0.1 only.
#   bash scripts/bench.sh                 every section, N=5, the monitor for 30 minutes
#   bash scripts/bench.sh store load      some sections (store monitor rollout load)
#   BENCH_QUICK=1 BENCH_OUT=target/bench/smoke.md bash scripts/bench.sh   the CI smoke
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh >&2
if ! command -v wrk >/dev/null; then
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk >/dev/null
fi
if ! command -v oha >/dev/null; then
  echo "bench: installing oha from crates.io (once)" >&2
  cargo install oha --locked --quiet
fi
cargo build --release --quiet
export BIN="$PWD/target/release/dhi-stage"
CTX="$(bash scripts/build-testsvc.sh)"
export CTX
exec python3 scripts/bench.py "$@"
