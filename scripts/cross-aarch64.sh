#!/usr/bin/env bash
# Cross-builds the board binary `fer-edge` for aarch64 Linux (Jetson-class boards, JetPack 6,
# so glibc <= 2.35) and runs it under qemu-user on a real photo, checking what it prints.
#
#   bash scripts/cross-aarch64.sh [--release | --board] [--with-tests]
#
#   --release      build with the release profile
#   --board        build with the board profile (what goes on a board: stripped, fat LTO, one
#                  codegen unit; Cargo.toml says why panics still unwind)
#   --with-tests   also run the edge library's frame-source, synthetic-face, overlay and
#                  display tests (YUYV/MJPEG decoding, synthetic faces, framebuffer packing,
#                  ...) on aarch64 under qemu
#
# Needs the rustup target aarch64-unknown-linux-gnu and Debian/Ubuntu's gcc-aarch64-linux-gnu,
# libc6-dev-arm64-cross, qemu-user and libclang-dev; .cargo/config.toml sets the linker, the
# qemu runner and bindgen's aarch64 sysroot. Honours CARGO_TARGET_DIR (the binary lands in
# <target dir>/aarch64-unknown-linux-gnu/<profile>/fer-edge) and FER_SHARED_DIR (default
# ../shared); with FER_REQUIRE_SHARED=1 (CI) a missing photo or model is a failure, otherwise
# the detection run is skipped with a note. FER_MAX_GLIBC overrides the glibc ceiling.
set -euo pipefail
cd "$(dirname "$0")/.."

TARGET=aarch64-unknown-linux-gnu
SYSROOT=/usr/aarch64-linux-gnu
MAX_GLIBC="${FER_MAX_GLIBC:-2.35}"
SHARED="${FER_SHARED_DIR:-$(cd .. && pwd)/shared}"

profile=debug
build_flags=()
with_tests=0
for arg in "$@"; do
    case "$arg" in
        --release) profile=release; build_flags=(--release) ;;
        --board) profile=board; build_flags=(--profile board) ;;
        --with-tests) with_tests=1 ;;
        -h|--help) sed -n '2,19p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "error: unknown argument $arg (try --help)" >&2; exit 2 ;;
    esac
done

fail() { echo "FAIL: $*" >&2; exit 1; }
need() { command -v "$1" >/dev/null || fail "$1 not found; install it with: $2"; }
need aarch64-linux-gnu-gcc "apt-get install gcc-aarch64-linux-gnu libc6-dev-arm64-cross"
need aarch64-linux-gnu-objdump "apt-get install binutils-aarch64-linux-gnu"
need qemu-aarch64 "apt-get install qemu-user"
need file "apt-get install file"
need python3 "apt-get install python3"
[ -e "$SYSROOT/include/stdio.h" ] || fail "no aarch64 sysroot at $SYSROOT; apt-get install libc6-dev-arm64-cross"
rustup target list --installed | grep -qx "$TARGET" || fail "rustup target add $TARGET"

echo "== cross build: cargo build -p edge --bin fer-edge --target $TARGET ${build_flags[*]}"
cargo build -p edge --bin fer-edge --target "$TARGET" "${build_flags[@]}"
target_dir=$(cargo metadata --format-version 1 --no-deps | grep -o '"target_directory":"[^"]*"' | cut -d'"' -f4)
bin="$target_dir/$TARGET/$profile/fer-edge"
[ -x "$bin" ] || fail "the build reported success but $bin is missing"

echo "== binary: $bin"
kind=$(file -b "$bin")
grep -q "ARM aarch64" <<<"$kind" || fail "$bin is not an aarch64 executable: $kind"
# The newest glibc symbol version the binary needs must exist on the board.
needs=$(aarch64-linux-gnu-objdump -T "$bin" | grep -o 'GLIBC_[0-9][0-9.]*' | sed 's/GLIBC_//' | sort -uV | tail -1)
newest=$(printf '%s\n%s\n' "$needs" "$MAX_GLIBC" | sort -V | tail -1)
[ "$newest" = "$MAX_GLIBC" ] || fail "$bin needs glibc $needs, the board has $MAX_GLIBC"
echo "   aarch64 ELF, needs glibc $needs (board: $MAX_GLIBC), $(stat -c %s "$bin") bytes"

run() { qemu-aarch64 -L "$SYSROOT" "$bin" "$@"; }

echo "== qemu: fer-edge --help"
help=$(run --help)
grep -q "Usage:" <<<"$help" || fail "fer-edge --help under qemu printed: $help"

photo="$SHARED/images/astronaut.png"
detector="$SHARED/models/ultraface/version-RFB-320_simplified.onnx"
if [ -f "$photo" ] && [ -f "$detector" ]; then
    echo "== qemu: fer-edge detect $photo (UltraFace)"
    arm_out=$(run detect "$photo" --detector ultraface --model "$detector")
    echo "   aarch64: $(tr -d " \n" <<<"$arm_out")"
    echo "== host: the same command, for comparison"
    if [[ $profile == debug ]]; then
        # The workspace build the tests made: `-p edge` alone resolves other features of
        # tract's dependencies and would compile tract for the host once more.
        cargo build -q --workspace --bins
    else
        cargo build -q -p edge --bin fer-edge "${build_flags[@]}"
    fi
    host_out=$("$target_dir/$profile/fer-edge" detect "$photo" --detector ultraface --model "$detector")
    echo "   x86_64:  $(tr -d " \n" <<<"$host_out")"
    # One face near (180,62)-(268,174) as DATA.md states, and the same numbers as on x86.
    python3 - "$arm_out" "$host_out" <<'PY' || fail "the aarch64 detection is wrong (see above)"
import json, sys
arm, host = (json.loads(a) for a in sys.argv[1:3])
faces = arm["faces"]
assert len(faces) == 1, f"expected exactly one face, got {len(faces)}"
box, score = faces[0]["face"], faces[0]["score"]
want = {"x": 180, "y": 62, "width": 88, "height": 112}
for key, value in want.items():
    assert abs(box[key] - value) <= 8, f"{key} = {box[key]:.1f}, expected about {value}"
assert score >= 0.9, f"score {score}"
assert len(host["faces"]) == 1, "the x86 build disagrees on the number of faces"
h = host["faces"][0]
for key in want:
    assert abs(box[key] - h["face"][key]) <= 1e-3, f"{key}: aarch64 {box[key]} vs x86 {h['face'][key]}"
assert abs(score - h["score"]) <= 1e-4, f"score: aarch64 {score} vs x86 {h['score']}"
print(f"   one face at ({box['x']:.1f},{box['y']:.1f}) {box['width']:.1f}x{box['height']:.1f}, "
      f"score {score:.4f}; matches x86")
PY
elif [ "${FER_REQUIRE_SHARED:-0}" = 1 ]; then
    fail "$photo or $detector is missing (FER_REQUIRE_SHARED=1); set FER_SHARED_DIR"
else
    echo "skipping the detection run: $photo or $detector is missing (see DATA.md)"
fi

if [ "$with_tests" = 1 ]; then
    echo "== qemu: edge capture, synthetic, overlay and display tests on aarch64"
    cargo test -p edge --lib --target "$TARGET" "${build_flags[@]}" -- capture:: synthetic:: overlay:: display::
fi

echo "OK: fer-edge for $TARGET builds and runs under qemu"
