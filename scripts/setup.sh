#!/usr/bin/env bash
# Installs what the build and the tests need beyond the Rust toolchain, and only what is
# missing: Debian packages (libclang for v4l's bindgen, the aarch64 cross toolchain and
# qemu-user for the board build, OpenSSH for the flash/collect tests, OpenCV's face cascades,
# chromium for the fleet report's headless-browser test),
# rustup targets (aarch64 board, a no_std microcontroller) and Python packages for the
# reference checks (onnx, onnxruntime, numpy). Safe to run again.
set -euo pipefail

debs=(libclang-dev gcc-aarch64-linux-gnu libc6-dev-arm64-cross qemu-user openssh-server
      openssh-client opencv-data fonts-dejavu-core chromium)
missing=()
for p in "${debs[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
    echo "setup: installing Debian packages: ${missing[*]}"
    sudo=""
    [ "$(id -u)" -eq 0 ] || sudo="sudo"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

for t in aarch64-unknown-linux-gnu thumbv7em-none-eabihf; do
    rustup target list --installed | grep -qx "$t" || rustup target add "$t"
done

python3 -c "import onnx, onnxruntime, numpy" 2>/dev/null || {
    echo "setup: installing Python packages from scripts/requirements.txt"
    python3 -m pip install -q --disable-pip-version-check -r "$(dirname "$0")/requirements.txt"
}
