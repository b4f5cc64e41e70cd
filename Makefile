# The two commands of the README: `make demo` and `make test`.
# Everything they need is installed by envoy/setup.sh (project-local .venv,
# Debian's chromium for the approver page's browser tests, wasm32-wasip1
# target, the filter build); nothing is installed by hand.

SHELL := /bin/bash
PYTHON := .venv/bin/python

.PHONY: demo test setup lint unit benches e2e fuzz package

demo:
	bash envoy/demo.sh

test: setup lint unit benches e2e

setup:
	bash envoy/setup.sh

lint:
	cargo fmt --all -- --check
	cargo clippy --workspace --all-targets -- -D warnings
	cargo clippy --release --target wasm32-wasip1 -p secretgate --lib -- -D warnings

unit: setup
	cargo test --workspace

# The benchmarks must keep building (they are run by hand: benches/README.md).
benches: setup
	cargo bench -p secretgate-benches --no-run

e2e: setup
	cargo test --workspace --no-run -q
	$(PYTHON) -m pytest envoy/tests -v -p no:cacheprovider

# Bounded fuzzing (nightly, cargo-fuzz), separate from `make test`:
# `make fuzz FUZZ_SECONDS=600` for a longer run.
FUZZ_SECONDS ?= 60
fuzz:
	bash fuzz/run.sh $(FUZZ_SECONDS)

# The release files: dist/secretgate.wasm, its .sha256 and the OCI image
# layout dist/oci with both Wasm image variants (README, "The package").
package:
	bash package/package.sh dist
