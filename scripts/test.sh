#!/usr/bin/env bash
# The full test suite: unit tests and integration tests against a real Docker Engine and
# real local registries (started by scripts/setup.sh when none answers).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
cargo test --workspace --all-targets "$@"
