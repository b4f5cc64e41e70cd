#!/usr/bin/env bash
# `make package`: builds the filter (root wasm build: the filter only) and the
# packaging tool, then writes OUT_DIR/secretgate.wasm, its .sha256 and the OCI
# image layout OUT_DIR/oci (see README, "The package: make package").
#
#   bash package/package.sh [OUT_DIR]     default: dist
#
# Every input comes from the commit, never from the clock, so two runs from
# one commit write identical files:
#   version   the `secretgate` package version (plugin/Cargo.toml)
#   revision  git rev-parse HEAD
#   created   the commit time, UTC
#   source    SECRETGATE_PACKAGE_SOURCE, else the clone's remote.origin.url,
#             else file://<repository folder>; set it for a release
#             (credentials in a URL are cut off).
set -euo pipefail

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
OUT_DIR="${1:-$REPO_ROOT/dist}"
# cargo's own variable: a release build in a fixed folder gives the same
# .wasm digest on another machine (see README).
TARGET_DIR="${CARGO_TARGET_DIR:-$REPO_ROOT/target}"

log() { printf '[package] %s\n' "$*" >&2; }

cd "$REPO_ROOT"
version="$(sed -n 's/^version = "\(.*\)"$/\1/p' plugin/Cargo.toml | head -n1)"
revision="$(git rev-parse HEAD)"
created="$(TZ=UTC0 git show -s --format=%cd --date=format-local:%Y-%m-%dT%H:%M:%SZ HEAD)"
source_url="${SECRETGATE_PACKAGE_SOURCE:-$(git config --get remote.origin.url || true)}"
source_url="${source_url:-file://$REPO_ROOT}"
if [[ -n "$(git status --porcelain --untracked-files=no)" ]]; then
    log "warning: the work tree has uncommitted changes; the package is labelled $revision but is built from the files as they are"
fi

log "building the filter (cargo build --release --target wasm32-wasip1)"
cargo build --quiet --release --target wasm32-wasip1
log "building the packaging tool (cargo build -p secretgate-package)"
cargo build --quiet -p secretgate-package

mkdir -p "$OUT_DIR"
"$TARGET_DIR/debug/secretgate-package" \
    --wasm "$TARGET_DIR/wasm32-wasip1/release/secretgate.wasm" \
    --out "$OUT_DIR" \
    --version "$version" \
    --revision "$revision" \
    --created "$created" \
    --source "$source_url"
