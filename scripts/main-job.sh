#!/usr/bin/env bash
# The main job end to end on embedded defaults, on a fresh machine: engine + registry up,
# the stand-in authentication service built FROM scratch, then the runbook's Steps 1-4:
# build, push, deploy hardened on 127.0.0.1:3002, verify, status. It leaves the service running.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
cargo build --release --quiet
bin=target/release/dhi-stage
ctx="$(bash scripts/build-testsvc.sh)"
[[ -f .env.stg ]] || { cp .env.stg.example .env.stg; echo "created .env.stg from .env.stg.example" >&2; }
registry="127.0.0.1:${DHI_REGISTRY_PORT:-5000}"
tag="staging-dhi-$(date -u +%Y%m%d)"

echo "== Step 1: build and push"
"$bin" build --context "$ctx"
"$bin" push --registry "$registry" --tag "$tag"
# The runbook's rollback target; here the same stand-in, so a rollback has somewhere to go.
docker tag authentication-service:dhi-staging "$registry/authentication-service:baseline-distroless"
echo "== Steps 3-4: deploy hardened and verify"
"$bin" deploy --image "$registry/authentication-service:$tag"
echo "== Quick health check"
"$bin" status
cat <<EOT

The service runs as auth-service-staging on http://127.0.0.1:3002 (state in .dhi-stage/).
  roll back:  $bin rollback --to $registry/authentication-service:baseline-distroless --reason "why"
  remove it:  docker rm -f auth-service-staging
EOT
