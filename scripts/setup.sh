#!/usr/bin/env bash
# Installs and starts what dhi-stage and its tests need on a fresh Debian machine:
# a Docker Engine, a plain local registry on 127.0.0.1:${DHI_REGISTRY_PORT:-5000} and
# one that demands credentials on 127.0.0.1:${DHI_AUTH_REGISTRY_PORT:-5001} (user
# dhi / password dhi-secret), and redis-server on 127.0.0.1:${DHI_REDIS_PORT:-6399}.
# Also installs openssl, chromium, socat, stunnel and prometheus, which tests use. Idempotent: what answers is left alone.
set -euo pipefail

REG_PORT="${DHI_REGISTRY_PORT:-5000}"
AUTH_REG_PORT="${DHI_AUTH_REGISTRY_PORT:-5001}"
WORK="${DHI_SETUP_DIR:-/var/lib/dhi-stage-setup}"
log() { printf 'setup: %s\n' "$*" >&2; }

need_pkgs=()
command -v dockerd >/dev/null 2>&1 || need_pkgs+=(docker.io)
command -v docker-registry >/dev/null 2>&1 || need_pkgs+=(docker-registry)
command -v htpasswd >/dev/null 2>&1 || need_pkgs+=(apache2-utils)
command -v curl >/dev/null 2>&1 || need_pkgs+=(curl)
command -v redis-server >/dev/null 2>&1 || need_pkgs+=(redis-server)
command -v openssl >/dev/null 2>&1 || need_pkgs+=(openssl)
command -v chromium >/dev/null 2>&1 || need_pkgs+=(chromium)
# socat: the fault tests put a proxy in front of the engine's socket and cut it.
command -v socat >/dev/null 2>&1 || need_pkgs+=(socat)
# stunnel: the remote-engine tests expose the engine over mutual TLS.
command -v stunnel >/dev/null 2>&1 || need_pkgs+=(stunnel4)
# prometheus: the PromQL metrics source is tested against a real server (started by the tests).
command -v prometheus >/dev/null 2>&1 || need_pkgs+=(prometheus)
# prometheus-alertmanager: the generated alerting is proven live (tests/alerting.rs).
command -v prometheus-alertmanager >/dev/null 2>&1 || need_pkgs+=(prometheus-alertmanager)
# haproxy: the switch rollout strategy's front (tests/switch.rs runs Debian's 2.6).
command -v haproxy >/dev/null 2>&1 || need_pkgs+=(haproxy)
if ((${#need_pkgs[@]})); then
  log "installing ${need_pkgs[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${need_pkgs[@]}" >/dev/null
fi
mkdir -p "$WORK"

# --- Docker Engine -----------------------------------------------------------
if ! docker info >/dev/null 2>&1; then
  if [[ -f /var/run/docker.pid ]] && ! kill -0 "$(cat /var/run/docker.pid)" 2>/dev/null; then
    log "removing stale /var/run/docker.pid"
    rm -f /var/run/docker.pid
  fi
  if ! pgrep -x dockerd >/dev/null; then
    log "starting dockerd (log: $WORK/dockerd.log)"
    nohup dockerd >"$WORK/dockerd.log" 2>&1 &
  fi
  for _ in $(seq 1 60); do docker info >/dev/null 2>&1 && break; sleep 0.5; done
  docker info >/dev/null 2>&1 || { log "dockerd did not come up; see $WORK/dockerd.log"; tail -20 "$WORK/dockerd.log" >&2; exit 1; }
fi
log "docker engine: $(docker version --format '{{.Server.Version}}')"

# --- registries ----------------------------------------------------------------
start_registry() { # name port [auth]
  local name=$1 port=$2 auth=${3:-}
  if curl -s -o /dev/null --max-time 2 "http://127.0.0.1:$port/v2/"; then return 0; fi
  local dir="$WORK/$name"
  mkdir -p "$dir/data"
  {
    echo "version: 0.1"
    echo "log: {level: warn}"
    echo "storage: {filesystem: {rootdirectory: $dir/data}, delete: {enabled: true}}"
    echo "http: {addr: 127.0.0.1:$port}"
    if [[ -n $auth ]]; then
      htpasswd -Bbn dhi dhi-secret >"$dir/htpasswd"
      echo "auth: {htpasswd: {realm: dhi-stage, path: $dir/htpasswd}}"
    fi
  } >"$dir/config.yml"
  log "starting registry $name on 127.0.0.1:$port"
  nohup docker-registry serve "$dir/config.yml" >"$dir/registry.log" 2>&1 &
  for _ in $(seq 1 40); do curl -s -o /dev/null --max-time 1 "http://127.0.0.1:$port/v2/" && return 0; sleep 0.25; done
  log "registry $name did not answer; see $dir/registry.log"; tail -20 "$dir/registry.log" >&2; exit 1
}
start_registry registry "$REG_PORT"
start_registry registry-auth "$AUTH_REG_PORT" auth
# --- redis (preflight tests: "Redis instance available") ------------------------
REDIS_PORT="${DHI_REDIS_PORT:-6399}"
if ! redis-cli -p "$REDIS_PORT" ping >/dev/null 2>&1; then
  log "starting redis-server on 127.0.0.1:$REDIS_PORT"
  redis-server --bind 127.0.0.1 --port "$REDIS_PORT" --save '' --appendonly no --daemonize yes --logfile "$WORK/redis.log" >/dev/null
  for _ in $(seq 1 40); do redis-cli -p "$REDIS_PORT" ping >/dev/null 2>&1 && break; sleep 0.25; done
fi
log "ready: docker engine, registry 127.0.0.1:$REG_PORT, authenticated registry 127.0.0.1:$AUTH_REG_PORT"
