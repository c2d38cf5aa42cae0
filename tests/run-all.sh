#!/usr/bin/env bash
# The test command (README): lint, then every test, on a machine with the packages of .ci/run.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo fmt --check
cargo clippy --all-targets -- -D warnings
bash fixtures/make-world.sh fixtures/world
cargo test -- --test-threads=2
