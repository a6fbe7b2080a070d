#!/usr/bin/env bash
# The DTA/SNL comparison on FER2013 (docs/RESULTS.md, "FER2013 comparison"): one network, one
# seed, the same number of steps for every run:
#   * 100 labels per class and 10% labels: supervised, fixed (FixMatch), dta, dta-snl;
#   * dta-snl at 100 labels per class without LAE, and without RRD;
#   * the same network supervised on 100% of the labels (reference).
# The rest of FER2013 train is the unlabeled pool; val (PublicTest) is evaluated.
#
# Usage: scripts/fer2013-comparison.sh [OUT_DIR]       (default: runs/fer2013)
# Settings (environment):
#   FER_TRAIN   the fer-train binary (default: target/release/fer-train; build it with
#               `cargo build --release -p trainer --features tch|cuda`)
#   BACKEND     flex | tch | cuda (default: tch)
#   STEPS       steps of every run (default: 20000, about 20 epochs of the unlabeled pool)
#   BATCH       labeled images per step (default: 32; 2x as many unlabeled)
#   WIDTH       backbone width (default: 32), INPUT input side (default: 48)
#   BACKBONE    resnet | mobile (default: resnet)
#   FER_SHARED_DIR  the shared data folder (default: ../shared)
#   RUNS        space-separated subset of the run names below (default: all)
# Finished runs are skipped and interrupted ones resumed, so re-running continues.
set -euo pipefail

out=${1:-runs/fer2013}
fer_train=${FER_TRAIN:-target/release/fer-train}
shared=${FER_SHARED_DIR:-../shared}
data="$shared/data/fer2013"
backend=${BACKEND:-tch}
steps=${STEPS:-20000}
batch=${BATCH:-32}
width=${WIDTH:-32}
input=${INPUT:-48}
backbone=${BACKBONE:-resnet}
eval_every=$(( steps / 10 > 0 ? steps / 10 : 1 ))

if [[ ! -x "$fer_train" ]]; then
    echo "error: $fer_train is not a built fer-train; build it with" >&2
    echo "  cargo build --release -p trainer --features tch   (or cuda), or set FER_TRAIN" >&2
    exit 2
fi
if [[ ! -d "$data/train" || ! -d "$data/val" ]]; then
    echo "error: $data/train and $data/val are missing; set FER_SHARED_DIR" >&2
    exit 2
fi

declare -A flags=(
    [sup-100]="--algorithm supervised --labels-per-class 100"
    [fixed-100]="--algorithm fixed --labels-per-class 100"
    [dta-100]="--algorithm dta --labels-per-class 100"
    [dta-snl-100]="--algorithm dta-snl --labels-per-class 100"
    [dta-snl-100-no-lae]="--algorithm dta-snl --labels-per-class 100 --no-lae"
    [dta-snl-100-no-rrd]="--algorithm dta-snl --labels-per-class 100 --no-rrd"
    [sup-10pct]="--algorithm supervised --labeled-fraction 0.1"
    [fixed-10pct]="--algorithm fixed --labeled-fraction 0.1"
    [dta-10pct]="--algorithm dta --labeled-fraction 0.1"
    [dta-snl-10pct]="--algorithm dta-snl --labeled-fraction 0.1"
    [sup-all]="--algorithm supervised"
)
order="sup-100 fixed-100 dta-100 dta-snl-100 dta-snl-100-no-lae dta-snl-100-no-rrd
       sup-10pct fixed-10pct dta-10pct dta-snl-10pct sup-all"
runs=${RUNS:-$order}

mkdir -p "$out"
done_runs=()
for name in $runs; do
    [[ -n "${flags[$name]:-}" ]] || { echo "error: unknown run $name (known: $order)" >&2; exit 2; }
    run="$out/$name"
    if [[ -f "$run/summary.json" ]]; then
        echo "$name: finished earlier"
    elif [[ -d "$run/checkpoint" ]]; then
        echo "$name: resuming"
        "$fer_train" train --resume --run "$run" --quiet >> "$run/train.log" 2>&1
    else
        echo "$name: training $steps steps ($backend)"
        mkdir -p "$run"
        # shellcheck disable=SC2086 # the flags are words on purpose
        "$fer_train" train --run "$run" --data "$data/train" --val "$data/val" \
            --backbone "$backbone" --width "$width" --input-size "$input" --channels 1 \
            --steps "$steps" --batch "$batch" --unlabeled-ratio 2 --seed 1 \
            --eval-every "$eval_every" --checkpoint-every "$eval_every" \
            --backend "$backend" --quiet ${flags[$name]} > "$run/train.log" 2>&1 \
            || { tail -20 "$run/train.log" >&2; exit 1; }
    fi
    done_runs+=("$run")
done
"$fer_train" compare "${done_runs[@]}" --out "$out/compare"
