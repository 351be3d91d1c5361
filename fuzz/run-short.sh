#!/usr/bin/env bash
# A short fuzzing run of every target (what `.ci/run` does; longer runs by hand:
# `cd fuzz && cargo +nightly fuzz run <target>`).
#
# cargo fuzz needs nightly-only compiler flags (sanitizers); where only the stable
# toolchain exists (a fresh CI machine), RUSTC_BOOTSTRAP=1 lets stable accept them.
# Installs cargo-fuzz from crates.io when missing. Any crash fails the run; libFuzzer
# prints the input it saved under fuzz/artifacts/<target>/ (copy it to
# fuzz/regressions/<target>/ once fixed: tests/tests/fuzz_regressions.rs replays those).
#
#   SECONDS_PER_TARGET (20)
set -euo pipefail
cd "$(dirname "$0")"
SECS=${SECONDS_PER_TARGET:-20}
command -v cargo-fuzz >/dev/null || cargo install --locked --quiet cargo-fuzz
export RUSTC_BOOTSTRAP=1
echo "== fuzz: building the targets"
cargo fuzz build -O 2>&1 | tail -n 3
for t in $(cargo fuzz list); do
    mkdir -p "corpus/$t"
    echo "== fuzz: $t for ${SECS} s"
    # -O as built above; the corpus grows between runs (it is not committed beyond seeds).
    set +e
    cargo fuzz run -O "$t" "corpus/$t" -- -max_total_time="$SECS" -print_final_stats=1 \
        > "/tmp/statelite-fuzz-$t.log" 2>&1
    st=$?
    set -e
    grep -E '^(Done|stat::number_of_executed_units|SUMMARY)' "/tmp/statelite-fuzz-$t.log" || true
    if [ "$st" -ne 0 ]; then
        tail -n 40 "/tmp/statelite-fuzz-$t.log" >&2
        echo "fuzz: $t failed (input saved under fuzz/artifacts/$t/)" >&2
        exit 1
    fi
done
echo "== fuzz: no crash"
