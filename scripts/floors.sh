#!/usr/bin/env bash
# The import graph's floors (ARCHITECTURE.md): prints what each module imports from the
# crate, and fails when a module imports one on a higher floor.
set -euo pipefail
cd "$(dirname "$0")/.."
declare -A floor=(
  [exit]=0 [files]=0 [redact]=0 [security]=0 [config]=0 [output]=0
  [probe]=1 [front]=1 [envfile]=1 [engine]=1 [cluster]=1 [store]=1 [lock]=1 [notify]=1 [load]=1 [service]=1
  [monitor]=2
  [report]=3 [image]=3 [validate]=3
  [alerting]=3 [rollout]=4
  [watch]=5 [preflight]=5 [status]=5 [synth]=5
  [commands]=6 [cli]=6 [main]=6
)
bad=0
for m in "${!floor[@]}"; do
  path=src/$m
  [[ -d $path ]] || path=src/$m.rs
  [[ -e $path ]] || { echo "floors: no module $m" >&2; bad=1; continue; }
  imports=$(grep -rhoE 'crate::[a-z_]+' "$path" | sed 's/crate:://' | sort -u | grep -vx "$m" || true)
  printf '%-10s floor %s: %s\n' "$m" "${floor[$m]}" "$(echo $imports)"
  for i in $imports; do
    f=${floor[$i]:-}
    if [[ -z $f ]]; then echo "  unknown module $i (add it to scripts/floors.sh)"; bad=1
    elif ((f > floor[$m])); then echo "  VIOLATION: $m (floor ${floor[$m]}) imports $i (floor $f)"; bad=1
    fi
  done
done | sort -t' ' -k3,3n -k1,1
exit $bad
