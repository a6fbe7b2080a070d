#!/usr/bin/env bash
# The FER2013 table of docs/results/fer2013 on this machine, one run after another (rows in
# scripts/fer2013-table.sh: supervised at 10/25/100% labels, fixed 0.95 at 10/25%, DTA at 10%,
# DTA+SNL at 10/25%, the 10% ablations without LAE / RRD, second seeds at 10%), then
# `fer-train compare`. On a GPU machine scripts/gpu-campaign.sh runs the same rows at once.
#
# Usage: scripts/fer2013-comparison.sh [OUT_DIR]       (default: runs/fer2013)
# Settings (environment):
#   FER_TRAIN   the fer-train binary (default: target/release/fer-train; build it with
#               `cargo build --release -p trainer --features tch|cuda`)
#   BACKEND     flex | tch | cuda (default: tch)
#   STEPS       steps of every run (default: 10000)
#   FER_SHARED_DIR  the shared data folder (default: ../shared)
#   RUNS        space-separated subset of the rows (default: all)
# Finished runs are skipped and interrupted ones resumed, so re-running continues.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=fer2013-table.sh
source "$here/fer2013-table.sh"

out=${1:-runs/fer2013}
fer_train=${FER_TRAIN:-target/release/fer-train}
shared=${FER_SHARED_DIR:-../shared}
data="$shared/data/fer2013"
backend=${BACKEND:-tch}
steps=${STEPS:-10000}
eval_every=$(( steps / 20 > 0 ? steps / 20 : 1 ))

if [[ ! -x "$fer_train" ]]; then
    echo "error: $fer_train is not a built fer-train; build it with" >&2
    echo "  cargo build --release -p trainer --features tch   (or cuda), or set FER_TRAIN" >&2
    exit 2
fi
if [[ ! -d "$data/train" || ! -d "$data/val" ]]; then
    echo "error: $data/train and $data/val are missing; set FER_SHARED_DIR" >&2
    exit 2
fi

mkdir -p "$out"
done_runs=()
for name in ${RUNS:-$FER2013_ROWS}; do
    row=$(fer2013_row_flags "$name") || { echo "error: unknown row $name (known: $FER2013_ROWS)" >&2; exit 2; }
    run="$out/$name"
    if [[ -f "$run/summary.json" ]]; then
        echo "$name: finished earlier"
    elif [[ -d "$run/checkpoint" ]]; then
        echo "$name: resuming"
        "$fer_train" train --resume --run "$run" >> "$run/train.log" 2>&1
    else
        echo "$name: training $steps steps ($backend)"
        mkdir -p "$run"
        # shellcheck disable=SC2046,SC2086 # the flags are words on purpose
        "$fer_train" train --run "$run" $(fer2013_common_flags "$data" "$steps") $row \
            --eval-every "$eval_every" --checkpoint-every "$eval_every" \
            --backend "$backend" > "$run/train.log" 2>&1 \
            || { tail -20 "$run/train.log" >&2; exit 1; }
    fi
    done_runs+=("$run")
done
"$fer_train" compare "${done_runs[@]}" --out "$out/compare"
