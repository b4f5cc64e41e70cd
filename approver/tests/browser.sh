#!/usr/bin/env bash
# Headless-Chromium test of the approver web page. Installs Debian's chromium
# when it is missing (needs root and the Debian package mirror), then runs the
# ignored browser test.
set -euo pipefail
cd "$(dirname "$0")/../.."
if ! command -v "${CHROMIUM:-chromium}" >/dev/null 2>&1; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends chromium fonts-dejavu-core >/dev/null
fi
cargo test -p approver --test browser -- --ignored --nocapture
