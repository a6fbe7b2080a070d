# The rows of the FER2013 table in docs/results/fer2013 (sourced by fer2013-comparison.sh and
# gpu-campaign.sh, so that the CPU and GPU campaigns run exactly the same configurations).
#
# Every row: FER2013 train is the pool (the label budget is drawn from it, the rest is the
# unlabeled data), val (PublicTest) is evaluated; resnet width 32, 48x48 gray, batch 32
# labeled + 64 unlabeled, the trainer's default recipe; seed 1 unless the name ends in -s2.

# All rows, in table order.
FER2013_ROWS="sup-10pct sup-25pct sup-100pct fixed-10pct fixed-25pct dta-10pct dta-snl-10pct
dta-snl-25pct dta-snl-10pct-no-lae dta-snl-10pct-no-rrd sup-10pct-s2 fixed-10pct-s2
dta-10pct-s2 dta-snl-10pct-s2 dta-snl-10pct-no-lae-s2 dta-snl-10pct-no-rrd-s2"

# Prints the fer-train flags of row $1 (besides data, steps and backend); fails on an
# unknown name. Names are ALGORITHM-BUDGET[-no-lae|-no-rrd][-VARIANT...][-s2]; the variants
# pick the candidates the DTA and sampling choices were made between: -freematch, -quantile
# (threshold rule), -hard (no soft weights), -natural (label sampling).
fer2013_row_flags() {
    local name=$1 seed=1 flags="" extra=""
    if [[ $name == *-s2 ]]; then
        seed=2
        name=${name%-s2}
    fi
    while :; do
        case $name in
            *-freematch) extra+=" --threshold-rule freematch"; name=${name%-freematch} ;;
            *-quantile) extra+=" --threshold-rule quantile"; name=${name%-quantile} ;;
            *-hard) extra+=" --hard-thresholds"; name=${name%-hard} ;;
            *-natural) extra+=" --sampling natural"; name=${name%-natural} ;;
            *) break ;;
        esac
    done
    case $name in
        sup-*) flags="--algorithm supervised" ;;
        fixed-*) flags="--algorithm fixed" ;;
        dta-snl-*) flags="--algorithm dta-snl" ;;
        dta-*) flags="--algorithm dta" ;;
        *) return 1 ;;
    esac
    case $name in
        *-10pct*) flags+=" --labeled-fraction 0.1" ;;
        *-25pct*) flags+=" --labeled-fraction 0.25" ;;
        *-100pct*) ;;
        *) return 1 ;;
    esac
    [[ $name == *-no-lae ]] && flags+=" --no-lae"
    [[ $name == *-no-rrd ]] && flags+=" --no-rrd"
    echo "$flags$extra --seed $seed"
}

# The flags every row shares: $1 data root (with train/ and val/), $2 steps.
fer2013_common_flags() {
    local data=$1 steps=$2
    echo "--data $data/train --val $data/val --backbone resnet --width 32 --input-size 48" \
        "--channels 1 --steps $steps --batch 32 --unlabeled-ratio 2"
}
