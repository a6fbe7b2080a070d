#!/usr/bin/env bash
# The README's main command: installs what the build needs (the same setup as the tests, only
# what is missing), then runs `fer demo` with any arguments given (`--help` lists them).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec cargo run -q -p tools --bin fer -- demo "$@"
