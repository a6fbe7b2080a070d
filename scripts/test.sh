#!/usr/bin/env bash
# Runs every test: the workspace's unit, integration and end-to-end tests, the no_std build of
# the board contract, and the aarch64 board binary under qemu-user.
#
# Real-data tests read ../shared (or $FER_SHARED_DIR); where it is absent they say so and
# skip, unless FER_REQUIRE_SHARED=1 (CI), which makes them fail instead.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh

echo "== no_std build of firmware-config (thumbv7em-none-eabihf)"
cargo build -q -p firmware-config --no-default-features --target thumbv7em-none-eabihf

# No separate `cargo build` of fer and fer-edge first: `cargo test --workspace` builds them
# (tools and edge have integration tests), with the feature set of the test build. A build of
# only those packages resolves other features and compiled burn and tract a second time.
echo "== workspace tests (they build fer and fer-edge for the end-to-end tests)"
cargo test --workspace --no-fail-fast

echo "== aarch64 board binary under qemu-user"
bash scripts/cross-aarch64.sh --with-tests

echo "== fuzzing the contract's decoders (20 s each)"
bash scripts/fuzz.sh 20
