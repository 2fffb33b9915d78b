#!/usr/bin/env bash
# The full test suite: unit tests and integration tests against a real Docker Engine and
# real local registries (started by scripts/setup.sh when none answers). The ten-minute
# healthy soak (tests/soak.rs) runs beside the rest instead of after it. Measured results
# (fault matrix, crash trials, soak) are printed at the end from target/reliability/.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh

# A developer's own settings must not leak into the tests (a real webhook, another state dir).
while IFS= read -r var; do unset "$var"; done < <(env | sed -n 's/^\(DHI_STAGE_[A-Z_]*\)=.*/\1/p')
# Containers, images and registry tags a previous, interrupted run left behind.
bash scripts/sweep-test-leftovers.sh
rm -rf target/reliability
mkdir -p target/reliability
# The main job's leftovers (a service on 3002, the baseline tag): the suite passes beside
# them because every test uses names of its own (tests/hermetic.rs checks they are here).
bash scripts/decoy.sh up
trap 'bash scripts/decoy.sh down' EXIT
export DHI_TEST_DECOY=1

cargo test --workspace --all-targets --no-run "$@"
soak_log=target/reliability/soak.log
cargo test --test soak "$@" >"$soak_log" 2>&1 &
soak_pid=$!
status=0
cargo test --workspace --all-targets --no-fail-fast "$@" -- --skip a_ten_minute_healthy_soak || status=$?
soak_status=0
wait "$soak_pid" || soak_status=$?
cat "$soak_log"
echo
echo "=== measured (target/reliability) ==="
for f in target/reliability/*.tsv target/reliability/*.txt; do
  [[ -f $f ]] && { echo "--- $f"; cat "$f"; }
done
if ((status != 0 || soak_status != 0)); then
  echo "test: FAILED (suite exit $status, soak exit $soak_status)" >&2
  exit 1
fi
