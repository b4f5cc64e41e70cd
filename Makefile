# The two commands of the README: `make demo` and `make test`.
# Everything they need is installed by envoy/setup.sh (project-local .venv,
# wasm32-wasip1 target, the filter build); nothing is installed by hand.

SHELL := /bin/bash
PYTHON := .venv/bin/python

.PHONY: demo test setup lint unit e2e approver-browser

demo:
	bash envoy/demo.sh

test: setup lint unit e2e

setup:
	bash envoy/setup.sh

lint:
	cargo fmt --all -- --check
	cargo clippy --all-targets -- -D warnings
	cargo clippy --release --target wasm32-wasip1 -p secretgate --lib -- -D warnings

unit:
	cargo test --workspace

e2e: setup
	cargo test --workspace --no-run -q
	$(PYTHON) -m pytest envoy/tests -v -p no:cacheprovider

# Headless-Chromium test of the approval service's web page (installs Debian's
# chromium when missing). Not part of `make test`: it needs the browser package.
approver-browser:
	bash approver/tests/browser.sh
