#!/usr/bin/env bash
# The test command (README): lint, then every test, on a machine with the packages of .ci/run.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo fmt --check
cargo clippy --all-targets -- -D warnings
bash fixtures/make-world.sh fixtures/world
# The live-system module and the fixture flake parse with Nix's own parser.
bash tests/boot/check-nix.sh fixtures/world
cargo test -- --test-threads=2
