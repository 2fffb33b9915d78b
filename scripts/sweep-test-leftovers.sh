#!/usr/bin/env bash
# What an interrupted test run leaves behind, removed before the next one starts:
#   - containers named dhi-test-* (every Stage names its container so) and their
#     `.previous` siblings, including `--restart unless-stopped` ones;
#   - images of the test repositories (dhi-test/*), which every run rebuilds from the
#     builder cache in seconds;
#   - tags the tests pushed to the local test registries: they end in the test process's
#     id and a counter (`push-4711-3`, `push-4711-3.sbom`), so an operator's own tags are
#     left alone;
#   - every tag of a stage's own image repository (`dhi-test-4711-3`, tests/common `Stage`),
#     in the engine and in the registries.
# Prints what it removed; idempotent; safe beside another run in progress.
set -euo pipefail
REG_PORT="${DHI_REGISTRY_PORT:-5000}"
AUTH_REG_PORT="${DHI_AUTH_REGISTRY_PORT:-5001}"

# A test names what it creates after its process id (tests/common `unique`): what belongs
# to a process that still runs is another run's, in progress, and stays.
alive() { [[ -d /proc/$1 ]]; }
dead_containers=()
live_run=0
while read -r name; do
  [[ -z $name ]] && continue
  pid=$(sed -E 's/^dhi-test-([0-9]+)-.*/\1/' <<<"$name")
  if [[ $pid =~ ^[0-9]+$ ]] && alive "$pid"; then live_run=1; else dead_containers+=("$name"); fi
done < <(docker ps -a --format '{{.Names}}' --filter 'name=^dhi-test-')
if ((${#dead_containers[@]})); then
  echo "sweep: removing ${#dead_containers[@]} container(s) left by an interrupted run" >&2
  docker rm -f "${dead_containers[@]}" >/dev/null
fi

# The shared test images are rebuilt from the builder cache in seconds; they go only when
# no run is using them (no test binary of any checkout is running).
if pgrep -f '/target/[a-z]+/deps/' >/dev/null 2>&1; then live_run=1; fi
if ((live_run == 0)); then
  images=$(docker images --format '{{.Repository}}:{{.Tag}}' | grep -E '^dhi-test/' || true)
  if [[ -n $images ]]; then
    echo "sweep: removing $(wc -l <<<"$images") test image tag(s)" >&2
    docker rmi -f $images >/dev/null 2>&1 || true
  fi
fi
pushed=()
while read -r ref; do
  [[ -z $ref ]] && continue
  pid=$(sed -E 's/.*-([0-9]+)-[0-9]+(\.sbom)?$/\1/' <<<"$ref")
  alive "$pid" || pushed+=("$ref")
done < <(docker images --format '{{.Repository}}:{{.Tag}}' \
  | grep -E "^127\.0\.0\.1:($REG_PORT|$AUTH_REG_PORT)/.*:.*-[0-9]+-[0-9]+(\.sbom)?$" || true)
while read -r ref; do
  [[ -z $ref ]] && continue
  pid=$(sed -E 's/^(.*\/)?dhi-test-([0-9]+)-[0-9]+:.*/\2/' <<<"$ref")
  alive "$pid" || pushed+=("$ref")
done < <(docker images --format '{{.Repository}}:{{.Tag}}' | grep -E '^(.*/)?dhi-test-[0-9]+-[0-9]+:' || true)
if ((${#pushed[@]})); then
  echo "sweep: removing ${#pushed[@]} local tag(s) of pushed test images" >&2
  docker rmi -f "${pushed[@]}" >/dev/null 2>&1 || true
fi

# Registry tags, through the registry's own API (delete is enabled by scripts/setup.sh).
python3 - "$REG_PORT" "$AUTH_REG_PORT" <<'PY'
import base64, json, re, sys, urllib.error, urllib.request

import os
test_tag = re.compile(r".*-([0-9]+)-[0-9]+(\.sbom)?$")
stage_repo = re.compile(r"^dhi-test-([0-9]+)-[0-9]+$")
accept = ", ".join([
    "application/vnd.docker.distribution.manifest.v2+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.oci.image.index.v1+json",
])
removed = 0
for port, auth in ((sys.argv[1], None), (sys.argv[2], ("dhi", "dhi-secret"))):
    base = f"http://127.0.0.1:{port}/v2"
    def call(path, method="GET", headers=None):
        req = urllib.request.Request(base + path, method=method, headers=headers or {})
        if auth:
            token = base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode()
            req.add_header("Authorization", "Basic " + token)
        return urllib.request.urlopen(req, timeout=5)
    try:
        repos = json.load(call("/_catalog?n=1000")).get("repositories") or []
    except Exception as e:
        print(f"sweep: registry 127.0.0.1:{port} not read ({e})", file=sys.stderr)
        continue
    for repo in repos:
        try:
            tags = json.load(call(f"/{repo}/tags/list")).get("tags") or []
        except Exception:
            continue
        own = stage_repo.match(repo)
        for tag in tags:
            m = own if own and not os.path.isdir(f"/proc/{own.group(1)}") else test_tag.match(tag)
            if not m or os.path.isdir(f"/proc/{m.group(1)}"):
                continue
            try:
                digest = call(f"/{repo}/manifests/{tag}", "HEAD", {"Accept": accept}).headers["Docker-Content-Digest"]
                call(f"/{repo}/manifests/{digest}", "DELETE")
                removed += 1
            except urllib.error.HTTPError as e:
                # Another tag of the same manifest was deleted first: this one went with it.
                if e.code != 404:
                    print(f"sweep: {repo}:{tag} not deleted ({e})", file=sys.stderr)
            except Exception as e:
                print(f"sweep: {repo}:{tag} not deleted ({e})", file=sys.stderr)
if removed:
    print(f"sweep: deleted {removed} test tag(s) from the local registries", file=sys.stderr)
PY
