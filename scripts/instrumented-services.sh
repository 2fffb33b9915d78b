#!/usr/bin/env bash
# Installs the real instrumentation libraries the metric-convention tests run (issue M) into
# target/instrumented/: a Python venv with FastAPI + prometheus-fastapi-instrumentator, Flask +
# prometheus_flask_exporter and the OpenTelemetry SDK with its Prometheus exporter (PyPI), and
# express + express-prom-bundle (npm), at the versions pinned in testsvc/instrumented/.
# Idempotent: a stamp of the pins skips a second install. Prints the directory.
set -euo pipefail
cd "$(dirname "$0")/.."
src=testsvc/instrumented
out=target/instrumented
log() { printf 'instrumented: %s\n' "$*" >&2; }
stamp=$(cat "$src/requirements.txt" "$src/package-lock.json" | sha256sum | cut -c1-16)
if [[ -f $out/.stamp && $(cat "$out/.stamp") == "$stamp" ]]; then
  echo "$PWD/$out"
  exit 0
fi
if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
  log "installing nodejs and npm (Debian)"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nodejs npm >/dev/null
fi
rm -rf "$out"
mkdir -p "$out"
log "pip: $(wc -l <"$src/requirements.txt") pinned packages into $out/venv"
python3 -m venv "$out/venv"
"$out/venv/bin/pip" install -q --no-cache-dir --disable-pip-version-check -r "$src/requirements.txt" >&2
log "npm: express + express-prom-bundle into $out/node_modules"
cp "$src/package.json" "$src/package-lock.json" "$out/"
(cd "$out" && npm ci --no-audit --no-fund --silent >&2)
echo "$stamp" >"$out/.stamp"
echo "$PWD/$out"
