#!/usr/bin/env bash
# Builds the fuzz targets (fuzz/) and runs each for SECONDS:
#
#   scripts/fuzz.sh SECONDS [TARGET...]      (no TARGET: every target)
#
# Exits non-zero if a target crashes (panic, abort, leak check, hang, sanitizer report) and
# prints where the crashing input was written; reproduce it with
#   RUSTC_BOOTSTRAP=1 cargo fuzz run TARGET fuzz/artifacts/TARGET/crash-...
# and minimise it with `cargo fuzz tmin TARGET FILE`.
#
# How this works on a stable toolchain (no nightly can be fetched here):
# - cargo-fuzz 0.13.2 builds on stable; it passes nightly-only flags (-Zsanitizer=address,
#   -Cpasses=sancov-module, ...), which stable rustc accepts with RUSTC_BOOTSTRAP=1.
# - Stable ships the AddressSanitizer runtime (librustc-stable_rt.asan.a), so ASan works
#   (without -Zbuild-std: the standard library itself is not instrumented). FUZZ_SANITIZER=none
#   builds without it (faster, still catches panics, overflows and aborts).
# - Seeds come from fuzz/corpus/TARGET (read-only); what the fuzzer learns goes to
#   fuzz/work/TARGET (git-ignored), so repeated runs build on earlier ones.
# - vfio_user_messages runs with IOPATH_FUZZ_VFIO_STRICT=1 (only well-formed messages reach
#   the server) because the vfio_user 0.1.7 crate panics on malformed Version messages, a known
#   bug recorded in fuzz/regressions/; FUZZ_VFIO_RAW=1 fuzzes the raw socket instead.
# - FUZZ_FEATURES=--no-default-features leaves out disk_config, the one target that needs the
#   vmm crate.
set -euo pipefail

cd "$(dirname "$0")/.."

if [ $# -lt 1 ] || ! [[ $1 =~ ^[0-9]+$ ]]; then
    echo "usage: $0 SECONDS [TARGET...]" >&2
    exit 2
fi
seconds=$1
shift

CARGO_FUZZ_VERSION=0.13.2
if ! cargo fuzz --version 2>/dev/null | grep -q "$CARGO_FUZZ_VERSION"; then
    cargo install cargo-fuzz --version "=$CARGO_FUZZ_VERSION" --locked
fi
export RUSTC_BOOTSTRAP=1
sanitizer=${FUZZ_SANITIZER:-address}
read -r -a features <<<"${FUZZ_FEATURES:-}"
fuzz=(cargo fuzz)

if [ $# -gt 0 ]; then
    targets=("$@")
else
    mapfile -t targets < <("${fuzz[@]}" list)
    if [ "${features[*]:-}" = "--no-default-features" ]; then
        mapfile -t targets < <(printf '%s\n' "${targets[@]}" | grep -vx disk_config)
    fi
fi

# One build for every target: they share the dependencies.
"${fuzz[@]}" build --sanitizer "$sanitizer" ${features[@]+"${features[@]}"}

failed=()
summary=()
for target in "${targets[@]}"; do
    work=fuzz/work/$target
    log=fuzz/work/$target.log
    mkdir -p "$work" "fuzz/corpus/$target"
    env=()
    if [ "$target" = vfio_user_messages ] && [ "${FUZZ_VFIO_RAW:-0}" != 1 ]; then
        env=(IOPATH_FUZZ_VFIO_STRICT=1)
    fi
    echo "== $target: ${seconds}s"
    status=0
    env ${env[@]+"${env[@]}"} "${fuzz[@]}" run --sanitizer "$sanitizer" \
        ${features[@]+"${features[@]}"} "$target" "$work" "fuzz/corpus/$target" -- \
        -max_total_time="$seconds" -timeout=30 -rss_limit_mb=4096 -print_final_stats=1 \
        >"$log" 2>&1 || status=$?
    execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n 1)
    if [ "$status" -ne 0 ]; then
        failed+=("$target")
        summary+=("$target ${seconds}s execs=${execs:-?} CRASH")
        echo "!! $target failed (exit $status); log: $log"
        grep -E "panicked at|^SUMMARY|ERROR: libFuzzer|leaked|Test unit written to" "$log" | head -n 8 || true
    else
        summary+=("$target ${seconds}s execs=${execs:-?} ok")
    fi
done

echo "== fuzz summary"
printf '%s\n' "${summary[@]}"
if [ ${#failed[@]} -gt 0 ]; then
    echo "crashed: ${failed[*]} (inputs under fuzz/artifacts/<target>/, logs under fuzz/work/)" >&2
    exit 1
fi
