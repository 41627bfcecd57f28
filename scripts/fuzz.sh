#!/usr/bin/env bash
# The long fuzz run: every target of src/fuzzing.rs under cargo-fuzz (libFuzzer) for SECONDS each
# (default 600), one after another, then a table of target, seconds, executions, corpus size and
# crashes. Exits non-zero if any target crashed; crash inputs land in fuzz/artifacts/<target>/.
#
#   scripts/fuzz.sh [SECONDS] [TARGET...]
#   nice -n 19 scripts/fuzz.sh 600          # the documented run (on a shared machine, niced)
#
# Stable Rust is enough: cargo-fuzz's nightly flags are allowed with RUSTC_BOOTSTRAP=1. cargo-fuzz
# is installed into target/cargo-tools when missing. New inputs found in a run go to a scratch
# corpus first; then fuzz/corpus/<target>/ keeps its seeds (seed-*) and regression inputs
# (regress-*) plus the smallest set of found inputs that adds edge coverage to them (libFuzzer
# -merge=1, like `cargo fuzz cmin`), so the committed corpus stays small. tests/fuzz_corpus.rs
# replays it on every `cargo test`. To reproduce a crash:
#   RUSTC_BOOTSTRAP=1 target/cargo-tools/bin/cargo-fuzz fuzz run <target> fuzz/artifacts/<target>/<file>
set -euo pipefail
cd "$(dirname "$0")/.."

secs="${1:-600}"
shift || true
all=(template_and_destination scrubber policy tool_arguments pack_loading sse_framing stdio_framing)
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=("${all[@]}")

tools="$PWD/target/cargo-tools"
if [ ! -x "$tools/bin/cargo-fuzz" ]; then
    echo "==> installing cargo-fuzz into $tools"
    cargo install cargo-fuzz --locked --root "$tools"
fi
export PATH="$tools/bin:$PATH" RUSTC_BOOTSTRAP=1

# Built once, then the binaries run directly: `cargo fuzz run` would rebuild whenever src/ changes
# during a long run, and every target is meant to run against the same build.
echo "==> building the fuzz targets"
cargo fuzz build
bin_dir="fuzz/target/$(rustc -vV | sed -n 's/^host: //p')/release"
export ASAN_OPTIONS="${ASAN_OPTIONS:+$ASAN_OPTIONS:}detect_odr_violation=0"

logs=fuzz/target/logs
mkdir -p "$logs"
rows=()
failed=0
for t in "${targets[@]}"; do
    corpus="fuzz/corpus/$t"
    scratch="fuzz/target/new-corpus/$t"
    artifacts="fuzz/artifacts/$t"
    rm -rf "$scratch"
    mkdir -p "$corpus" "$scratch" "$artifacts"
    before=$(find "$corpus" -type f | wc -l)
    crashes_before=$(find "$artifacts" -type f | wc -l)
    echo "==> $t: ${secs}s (log: $logs/$t.log)"
    start=$(date +%s)
    set +e
    # New inputs go to the first corpus directory (the scratch one).
    "$bin_dir/$t" -max_total_time="$secs" -timeout=30 -print_final_stats=1 \
        -artifact_prefix="$artifacts/" "$scratch" "$corpus" >"$logs/$t.log" 2>&1
    rc=$?
    set -e
    took=$(($(date +%s) - start))
    execs=$(grep -o 'stat::number_of_executed_units: [0-9]*' "$logs/$t.log" | tail -1 | awk '{print $2}')
    [ -n "$execs" ] || execs=$(grep -o '^#[0-9]*' "$logs/$t.log" | tail -1 | tr -d '#')
    # The corpus keeps its hand-written seeds (seed-*) and regression inputs (regress-*) as they
    # are, plus the smallest set of found inputs (old and new) that adds edge coverage to them.
    merged="fuzz/target/merge/$t"
    rm -rf "$merged" "$merged.old"
    mkdir -p "$merged" "$merged.old"
    find "$corpus" -type f \( -name 'seed-*' -o -name 'regress-*' \) -exec cp {} "$merged/" \;
    find "$corpus" -type f ! -name 'seed-*' ! -name 'regress-*' -exec mv {} "$merged.old/" \;
    "$bin_dir/$t" -merge=1 -use_counters=0 -timeout=30 "$merged" "$merged.old" "$scratch" \
        >"$logs/$t.merge.log" 2>&1 || cp "$merged.old"/* "$corpus/" 2>/dev/null || true
    find "$merged" -type f ! -name 'seed-*' ! -name 'regress-*' -exec cp {} "$corpus/" \;
    after=$(find "$corpus" -type f | wc -l)
    crashes=$(($(find "$artifacts" -type f | wc -l) - crashes_before))
    if [ "$rc" -ne 0 ] && [ "$crashes" -eq 0 ]; then
        crashes="error (exit $rc)"
    fi
    [ "$crashes" = 0 ] || failed=1
    rows+=("| $t | $took | ${execs:-?} | $before → $after | $crashes |")
done

echo
echo "| target | seconds | executions | corpus files (before → after) | crashes |"
echo "|---|---|---|---|---|"
printf '%s\n' "${rows[@]}"
if [ "$failed" -ne 0 ]; then
    echo "crashes: see fuzz/artifacts/ and $logs/" >&2
    exit 1
fi
