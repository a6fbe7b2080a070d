#!/usr/bin/env bash
# The README's main command: installs what the build needs (the same setup as the tests, only
# what is missing), then runs `fer demo` with any arguments given (`--help` lists them).
#
# It builds every binary of the workspace rather than `cargo run -p tools`: building one
# package resolves the dependencies' features for that package alone, which differ from the
# test build's, so `scripts/test.sh` afterwards compiled burn and tract a second time. With
# the whole workspace the two share one build of the dependencies.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
cargo build -q --workspace --bins
target="$(cargo metadata -q --format-version 1 --no-deps |
    python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')"
exec "$target/debug/fer" demo "$@"
