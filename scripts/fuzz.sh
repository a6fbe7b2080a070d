#!/usr/bin/env bash
# Fuzzes the board contract's decoders (fuzz/fuzz_targets) with libFuzzer for SECONDS each
# (default 30). Uses cargo-fuzz's coverage instrumentation on the stable toolchain; with
# nightly and cargo-fuzz installed, `cd fuzz && cargo fuzz run segment_reader` works as well.
# Crashing inputs are written to fuzz/artifacts/<target>/.
set -euo pipefail
cd "$(dirname "$0")/../fuzz"
seconds="${1:-30}"
host="$(rustc -vV | sed -n 's/^host: //p')"
# An explicit --target keeps the instrumentation off build scripts and proc-macros.
RUSTFLAGS="--cfg fuzzing -Cpasses=sancov-module -Cllvm-args=-sanitizer-coverage-level=4 \
-Cllvm-args=-sanitizer-coverage-inline-8bit-counters -Cllvm-args=-sanitizer-coverage-pc-table \
-Cllvm-args=-sanitizer-coverage-trace-compares -Cdebug-assertions -Coverflow-checks" \
    cargo build -q --release --target "$host" --target-dir target/instrumented
for t in segment_reader framed_payload config_decoder; do
    mkdir -p "corpus/$t" "artifacts/$t"
    echo "== fuzzing $t for ${seconds}s"
    "target/instrumented/$host/release/$t" -max_total_time="$seconds" \
        -artifact_prefix="artifacts/$t/" -print_final_stats=1 "corpus/$t" 2>&1 |
        grep -E "^(stat::number_of_executed_units|Done|==[0-9]+==|SUMMARY)" || true
    if compgen -G "artifacts/$t/crash-*" >/dev/null; then
        echo "fuzz: $t crashed; inputs in fuzz/artifacts/$t/" >&2
        exit 1
    fi
done

echo "== the collect path over the framed_payload corpus"
cd ..
log="$(mktemp)"
if FER_FUZZ_CORPUS="$PWD/fuzz/corpus/framed_payload" \
    cargo test -q --workspace --test collect_corpus -- --nocapture >"$log" 2>&1; then
    grep -E "corpus inputs|test result" "$log"
else
    cat "$log"
    echo "fuzz: the collect path failed on the framed_payload corpus (fuzz/corpus/framed_payload)" >&2
    exit 1
fi
