#!/usr/bin/env bash
# int8 against fp32, for our exporter and for the mini-Xception peer quantized by onnxruntime's
# own quantizer: accuracy on all of FER2013 val in tract, speed in tract and onnxruntime in one
# `fer-edge bench` run (integer files, then the QDQ files), and the integer files' predictions
# on aarch64 under qemu against x86 (correctness only: qemu's timings mean nothing).
#
#   bash scripts/int8-bench.sh [OUT]        OUT defaults to ~/fer-runs/int8; re-running resumes
#                                           (delete a result file to measure it again)
#
# Our model is a short supervised FER2013 run of the comparison table's network (resnet width
# 32, 48x48 gray; STEPS, default 800, on burn-flex: about 15 minutes on 2 cores). It is far
# from a finished model, but it is a real FER2013 model, and the quantization drop is what this
# measures.
# Results land in OUT: export-{integer,qdq}/export_report.md, peer-accuracy.json,
# bench-{integer,qdq}.md, qemu.txt. Reads ../shared (or FER_SHARED_DIR); needs pillow for the
# peer's calibration images (installed if missing).
set -euo pipefail
cd "$(dirname "$0")/.."
OUT="${1:-$HOME/fer-runs/int8}"
SHARED="${FER_SHARED_DIR:-$(cd .. && pwd)/shared}"
STEPS="${STEPS:-800}"
TRAIN="$SHARED/data/fer2013/train"
VAL="$SHARED/data/fer2013/val"
PEER="$SHARED/models/peer/fer_mini_xception_nhwc.onnx"
DETECTOR="$SHARED/models/ultraface/version-RFB-320_simplified.onnx"
PHOTO="$SHARED/images/astronaut.png"
for f in "$TRAIN" "$VAL" "$PEER" "$DETECTOR" "$PHOTO"; do
    [ -e "$f" ] || { echo "error: $f is missing: set FER_SHARED_DIR to the shared data" >&2; exit 2; }
done
mkdir -p "$OUT"

bash scripts/setup.sh
python3 -c "import PIL" 2>/dev/null || python3 -m pip install -q --disable-pip-version-check pillow
cargo build -q --workspace --bins
target="$(cargo metadata -q --format-version 1 --no-deps |
    python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')"
bin="$target/debug"

echo "== our model: supervised FER2013, $STEPS steps ($OUT/run)"
if [ -f "$OUT/run.done" ]; then
    echo "   finished before"
elif [ -f "$OUT/run/checkpoint/state.json" ]; then
    "$bin/fer-train" train --resume --run "$OUT/run" && touch "$OUT/run.done"
else
    "$bin/fer-train" train --data "$TRAIN" --val "$VAL" --algorithm supervised \
        --backbone resnet --width 32 --input-size 48 --channels 1 --steps "$STEPS" \
        --batch 32 --run "$OUT/run" && touch "$OUT/run.done"
fi
for form in integer qdq; do
    if [ ! -f "$OUT/export-$form/export_report.json" ]; then
        echo "== export, int8 form $form (calibration: 300 train faces; eval: all of val)"
        "$bin/fer-train" export --checkpoint "$OUT/run" --out "$OUT/export-$form" \
            --calibration "$TRAIN" --eval "$VAL" --int8-form "$form"
    fi
done

echo "== the peer: int8 by onnxruntime's quantizer ($OUT/peer)"
[ -f "$OUT/peer/peer_int8.onnx" ] ||
    python3 scripts/int8_peer.py --peer "$PEER" --calibration "$TRAIN" --out "$OUT/peer"
echo "== the peer's accuracy on all of FER2013 val in tract (fer-edge classify)"
[ -f "$OUT/peer-accuracy.json" ] || python3 - "$bin/fer-edge" "$VAL" "$OUT/peer" > "$OUT/peer-accuracy.tmp" <<'PY'
import json, subprocess, sys
edge, val, peer = sys.argv[1:4]
rows = {}
for name in ["peer_fp32.onnx", "peer_int8.onnx", "peer_int8_qdq.onnx"]:
    out = subprocess.run([edge, "classify", val, "--manifest", f"{peer}/manifest.json",
                          "--model", f"{peer}/{name}"], check=True, capture_output=True, text=True)
    r = json.loads(out.stdout)
    rows[name] = {k: r[k] for k in ["images", "accuracy", "macro_f1"]}
print(json.dumps(rows, indent=2))
PY
[ -f "$OUT/peer-accuracy.json" ] || mv "$OUT/peer-accuracy.tmp" "$OUT/peer-accuracy.json"
cat "$OUT/peer-accuracy.json"

for form in integer qdq; do
    peer_int8="$OUT/peer/peer_int8.onnx"
    [ "$form" = qdq ] && peer_int8="$OUT/peer/peer_int8_qdq.onnx"
    [ -f "$OUT/bench-$form.md" ] && continue
    echo "== fer-edge bench, int8 form $form (ours and the peer, tract and onnxruntime)"
    "$bin/fer-edge" bench --image "$PHOTO" --detector-model "$DETECTOR" \
        --manifest "$OUT/export-$form/model_fp32.manifest.json" \
        --int8-model "$OUT/export-$form/model_int8.onnx" \
        --peer-manifest "$OUT/peer/manifest.json" --peer-int8-model "$peer_int8" \
        --iterations 200 --no-intervals --markdown > "$OUT/bench-$form.tmp"
    mv "$OUT/bench-$form.tmp" "$OUT/bench-$form.md"
    cat "$OUT/bench-$form.md"
done

echo "== aarch64 under qemu: the integer files classify 10 val faces per class as on x86"
bash scripts/cross-aarch64.sh > /dev/null
arm="$target/aarch64-unknown-linux-gnu/debug/fer-edge"
{
    for model in "$OUT/export-integer/model_int8.manifest.json" "$OUT/peer/manifest.json:$OUT/peer/peer_int8.onnx"; do
        manifest=${model%%:*}
        args=(classify "$VAL" --manifest "$manifest" --per-class 10)
        [[ $model == *:* ]] && args+=(--model "${model#*:}")
        host=$("$bin/fer-edge" "${args[@]}")
        board=$(qemu-aarch64 -L /usr/aarch64-linux-gnu "$arm" "${args[@]}")
        python3 - "$manifest" "$host" "$board" <<'PY'
import json, sys
name, host, board = sys.argv[1], json.loads(sys.argv[2]), json.loads(sys.argv[3])
same = host["confusion"] == board["confusion"]
print(f"{name}: x86 accuracy {host['accuracy']:.4f}, aarch64 {board['accuracy']:.4f}, "
      f"confusion matrices {'identical' if same else 'DIFFER'} ({host['images']} faces)")
sys.exit(0 if same else 1)
PY
    done
} | tee "$OUT/qemu.txt"
echo "OK: results in $OUT"
