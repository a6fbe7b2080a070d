#!/usr/bin/env bash
# The whole FER2013 table (scripts/fer2013-table.sh) at full length on NVIDIA GPUs: every row
# runs at the same time (one process per row, spread over the GPUs), then `fer-train compare`,
# a burn-cuda vs PyTorch benchmark on the same GPU, and the summaries (no checkpoints, no
# weights, no images) are copied to OUT_DIR. Sized for one H200 and 16 cores: 16 runs of
# 10,000 steps in under 9 minutes.
#
# Usage: scripts/gpu-campaign.sh OUT_DIR
# Settings (environment):
#   FER_TRAIN   a fer-train built with --features cuda (default: build it here with
#               `cargo build --release -p trainer --features cuda`)
#   FER2013     the dataset root with train/ and val/ (default: $FER_SHARED_DIR/data/fer2013,
#               FER_SHARED_DIR defaulting to ../shared)
#   STEPS       steps of every run (default: 10000)
#   ROWS        space-separated subset of the rows (default: all)
#   EVAL_EVERY  steps between evaluations (default: STEPS / 20)
#   DEADLINE    seconds after which unfinished runs are stopped and reported as such
#               (default: none)
#   WORK        where the runs live (default: OUT_DIR/runs; checkpoints stay there)
#   BACKEND     cuda (default), or flex/tch for a dry run of this script on a machine
#               without a GPU (every run then shares the CPU)
#   DEVICES     GPUs per run, data-parallel (`fer-train train --devices`, burn's collective
#               all-reduce). Default: one per run while runs outnumber GPUs (then spreading
#               the runs is faster than splitting them); with more GPUs than runs, each run
#               gets GPUS / RUNS of them. Each run's global batch grows with its devices.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=fer2013-table.sh
source "$here/fer2013-table.sh"
started=$(date +%s)

out=${1:?usage: scripts/gpu-campaign.sh OUT_DIR}
shared=${FER_SHARED_DIR:-$here/../../shared}
data=${FER2013:-$shared/data/fer2013}
steps=${STEPS:-10000}
rows=${ROWS:-$FER2013_ROWS}
work=${WORK:-$out/runs}
mkdir -p "$out" "$work"
log="$out/campaign.log"
say() { echo "[$(( $(date +%s) - started ))s] $*" | tee -a "$log"; }

backend=${BACKEND:-cuda}
gpus=$(nvidia-smi -L 2>/dev/null | grep -c '^GPU' || true)
if [[ $backend == cuda ]] && (( gpus == 0 )); then
    echo "error: nvidia-smi lists no GPU; this script needs at least one NVIDIA GPU" \
        "(BACKEND=flex runs it on the CPU as a dry run)" >&2
    exit 8
fi
gpus=$(( gpus > 0 ? gpus : 1 ))
if [[ ! -d "$data/train" || ! -d "$data/val" ]]; then
    echo "error: $data/train and $data/val are missing; set FER2013 or FER_SHARED_DIR" >&2
    exit 2
fi
fer_train=${FER_TRAIN:-}
if [[ -z $fer_train ]]; then
    say "building fer-train with the CUDA backend"
    (cd "$here/.." && cargo build --release -q -p trainer --features cuda)
    fer_train="$here/../target/release/fer-train"
fi
nvidia-smi --query-gpu=index,name,memory.total,driver_version --format=csv,noheader 2>/dev/null \
    | tee -a "$log" || true

count=$(wc -w <<< "$rows")
cores=$(getconf _NPROCESSORS_ONLN)
workers=$(( cores / count > 1 ? cores / count : 1 ))
devices=${DEVICES:-$(( gpus / count > 1 ? gpus / count : 1 ))}
if [[ $backend == cuda ]] && (( devices > gpus )); then
    echo "error: DEVICES=$devices but only $gpus GPU(s) are present" >&2
    exit 2
fi
say "$count runs of $steps steps on $gpus GPU(s), $devices GPU(s) per run," \
    "$workers data thread(s) each, $cores cores"

pids=()
names=()
k=0
for name in $rows; do
    row=$(fer2013_row_flags "$name") || { echo "error: unknown row $name" >&2; exit 2; }
    run="$work/$name"
    mkdir -p "$run"
    # Run k takes `devices` consecutive GPUs, wrapping around the machine's.
    visible=$(seq -s, "$(( (k * devices) % gpus ))" "$(( (k * devices) % gpus + devices - 1 ))" \
        | tr ',' '\n' | awk -v g="$gpus" '{ printf "%s%d", (NR > 1 ? "," : ""), $1 % g }')
    # shellcheck disable=SC2046,SC2086 # the flags are words on purpose
    CUDA_VISIBLE_DEVICES=$visible "$fer_train" train --run "$run" --devices "$devices" \
        $(fer2013_common_flags "$data" "$steps") $row \
        --eval-every "${EVAL_EVERY:-$(( steps / 20 > 0 ? steps / 20 : 1 ))}" --checkpoint-every 0 \
        --workers "$workers" --backend "$backend" > "$run/train.log" 2>&1 &
    pids+=($!)
    names+=("$name")
    k=$(( k + 1 ))
done

# Wait for every run, or stop the rest at the deadline.
while :; do
    running=0
    for pid in "${pids[@]}"; do kill -0 "$pid" 2>/dev/null && running=$(( running + 1 )); done
    (( running == 0 )) && break
    if [[ -n ${DEADLINE:-} ]] && (( $(date +%s) - started >= DEADLINE )); then
        say "deadline: stopping $running unfinished run(s)"
        for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
        break
    fi
    progress=""
    for name in "${names[@]}"; do
        last=$(grep -o 'step [0-9]*/[0-9]*' "$work/$name/train.log" 2>/dev/null | tail -1 || true)
        progress+=" $name:${last#step }"
    done
    say "running $running:$progress"
    sleep 20
done
wait || true

finished=()
for name in "${names[@]}"; do
    run="$work/$name"
    dest="$out/$name"
    mkdir -p "$dest"
    cp "$run/config.json" "$run/train.log" "$dest/" 2>/dev/null || true
    grep '"kind":"eval"' "$run/metrics.jsonl" > "$dest/evals.jsonl" 2>/dev/null || true
    if [[ -f "$run/summary.json" ]]; then
        cp "$run/summary.json" "$run"/*.png "$run/plots.txt" "$dest/"
        cp "$run/checkpoint/thresholds.json" "$dest/" 2>/dev/null || true
        finished+=("$run")
        say "$name: finished"
    else
        say "$name: NOT finished (see $dest/train.log)"
    fi
done
if (( ${#finished[@]} )); then
    "$fer_train" compare "${finished[@]}" --out "$out/compare" | tee -a "$log"
fi
# The best finished 25%-label DTA+SNL run, exported (fp32 and int8 ONNX with manifests) so
# that the board path can be measured on it: the files land in OUT_DIR/export-25pct.
best=""
best_acc=-1
for run in "${finished[@]}"; do
    [[ $(basename "$run") == dta-snl-25pct* ]] || continue
    acc=$(python3 -c "import json,sys; print(json.load(open(sys.argv[1]))['teacher']['accuracy'])" "$run/summary.json")
    if python3 -c "import sys; sys.exit(0 if float(sys.argv[1]) > float(sys.argv[2]) else 1)" "$acc" "$best_acc"; then
        best=$run
        best_acc=$acc
    fi
done
if [[ -n $best ]]; then
    say "exporting $(basename "$best") (teacher accuracy $best_acc)"
    "$fer_train" export --checkpoint "$best" --out "$out/export-25pct" --calibration "$data/train" \
        --calib-images 300 --eval "$data/val" --latency-runs 0 2>&1 | tail -5 | tee -a "$log" || true
fi
say "burn-$backend vs PyTorch on the same device"
(cd "$here/.." && "$fer_train" bench --backend "$backend" --backbone resnet --input-size 48 \
    --batch 96 --iters "${BENCH_ITERS:-50}" --json "$out/bench.json") 2>&1 | tee -a "$log" || true
say "done: ${#finished[@]} of $count runs finished"
