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

echo "== programs the end-to-end tests run (fer, fer-edge)"
cargo build -q -p tools -p edge --bins

echo "== workspace tests"
cargo test --workspace --no-fail-fast

echo "== aarch64 board binary under qemu-user"
bash scripts/cross-aarch64.sh --with-tests

echo "== fuzzing the contract's decoders (20 s each)"
bash scripts/fuzz.sh 20
