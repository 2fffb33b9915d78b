#!/usr/bin/env bash
# The main job end to end on embedded defaults, on a fresh machine: engine + registry up,
# the stand-in authentication service built FROM scratch, then the runbook in order:
# Step 1 build + push, Step 2 validate (score, SBOM), Steps 3-4 deploy hardened on
# 127.0.0.1:3002 and verify, the quick health check, a first monitoring sample and a smoke
# run for day 1, and the day's validation report. It leaves the service running.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
cargo build --release --quiet
bin=target/release/dhi-stage
ctx="$(bash scripts/build-testsvc.sh)"
[[ -f .env.stg ]] || { cp .env.stg.example .env.stg; echo "created .env.stg from .env.stg.example" >&2; }
registry="127.0.0.1:${DHI_REGISTRY_PORT:-5000}"
tag="staging-dhi-$(date -u +%Y%m%d)"
mkdir -p reports

echo "== Step 1: build and push"
"$bin" build --context "$ctx"
"$bin" validate --image authentication-service:dhi-staging --sbom-out reports/sbom.cdx.json >/dev/null || true
"$bin" push --registry "$registry" --tag "$tag" --sbom reports/sbom.cdx.json
# The runbook's rollback target; here the same stand-in, so a rollback has somewhere to go.
docker tag authentication-service:dhi-staging "$registry/authentication-service:baseline-distroless"
echo "== Step 2: pre-deployment validation (no provenance or CVE feed offline: 11/12 is expected here)"
"$bin" validate --image authentication-service:dhi-staging || true
echo "== Steps 3-4: deploy hardened and verify"
"$bin" deploy --image "$registry/authentication-service:$tag"
echo "== Quick health check"
"$bin" status
echo "== Day 1: a monitoring sample and a K6-equivalent smoke run"
"$bin" monitor --day 1 --once || true
"$bin" load --profile smoke --duration 10s || true
echo "== Daily report"
"$bin" -q report --day 1 --out reports >/dev/null || true
cat <<EOT

The service runs as auth-service-staging on http://127.0.0.1:3002 (state in .dhi-stage/).
  report:     reports/day-1.md (charts: reports/day-1-*.svg)
  roll back:  $bin rollback --reason "why"   (no previous deployment: the runbook baseline)
  remove it:  docker rm -f auth-service-staging
EOT
