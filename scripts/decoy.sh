#!/usr/bin/env bash
# What the main job leaves on a machine, planted before the suite so that a test which reads
# the machine instead of its own names fails here first (issue P): a service named
# auth-service-staging on 127.0.0.1:3002 and the runbook's baseline tag
# <registry>/authentication-service:baseline-distroless in the engine.
#   decoy.sh up    plants what is absent (a developer's own service or tag is left as it is)
#                  and writes what it planted to target/decoy.planted
#   decoy.sh down  removes only what `up` planted
set -euo pipefail
cd "$(dirname "$0")/.."
REG="127.0.0.1:${DHI_REGISTRY_PORT:-5000}"
NAME=auth-service-staging
BASELINE="$REG/authentication-service:baseline-distroless"
IMAGE=dhi-decoy/authsvc:main-job
planted=target/decoy.planted
case "${1:-}" in
up)
  mkdir -p target
  : >"$planted"
  ctx="$(bash scripts/build-testsvc.sh)"
  out=$(docker build -q -t "$IMAGE" "$ctx" 2>&1) || { echo "$out" >&2; exit 1; }
  if ! docker image inspect "$BASELINE" >/dev/null 2>&1; then
    docker tag "$IMAGE" "$BASELINE"
    echo "tag $BASELINE" >>"$planted"
  fi
  if ! docker container inspect "$NAME" >/dev/null 2>&1; then
    if (exec 3<>/dev/tcp/127.0.0.1/3002) 2>/dev/null; then
      echo "decoy: 127.0.0.1:3002 is taken by something else; leaving it as the decoy" >&2
    else
      docker run -d --name "$NAME" -p 127.0.0.1:3002:3000 --user 65532:65532 --read-only \
        --cap-drop ALL "$IMAGE" >/dev/null
      echo "container $NAME" >>"$planted"
    fi
  fi
  echo "decoy: $(docker ps --filter name=^$NAME\$ --format '{{.Names}} {{.Ports}}') and $BASELINE present" >&2
  ;;
down)
  [[ -f $planted ]] || exit 0
  while read -r kind what; do
    case $kind in
    tag) docker rmi "$what" >/dev/null 2>&1 || true ;;
    container) docker rm -f "$what" >/dev/null 2>&1 || true ;;
    esac
  done <"$planted"
  rm -f "$planted"
  ;;
*) echo "usage: decoy.sh up|down" >&2; exit 2 ;;
esac
