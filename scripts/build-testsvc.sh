#!/usr/bin/env bash
# Compiles the test service statically and lays out its Docker build context in
# target/testsvc-image/ (printed on stdout). `dhi-stage build --context <that dir>` builds it.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
triple="$(rustc -vV | sed -n 's/^host: //p')"
RUSTFLAGS='-C target-feature=+crt-static' cargo build --quiet --release -p testsvc \
  --manifest-path "$root/Cargo.toml" --target "$triple" --target-dir "$root/target/static"
out="$root/target/testsvc-image"
mkdir -p "$out"
for bin in authsvc bun; do
  install -m 0755 "$root/target/static/$triple/release/$bin" "$out/$bin.new"
  mv "$out/$bin.new" "$out/$bin"
done
cp "$root/testsvc/image/Dockerfile" "$out/Dockerfile.new" && mv "$out/Dockerfile.new" "$out/Dockerfile"
echo "$out"
