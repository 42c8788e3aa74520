#!/bin/bash
# SPDX-License-Identifier: GPL-2.0-or-later
# fuzz.sh [--seconds N] [--only NAME] [--build-only] [SRC]: build the two
# libFuzzer targets of the series, meson targets of SRC, in a clang build
# configured with QEMU's --enable-fuzzing --enable-asan --enable-ubsan,
# and run each for N seconds (default 30), one job each, one after the
# other:
#   devstate-fuzz  the reference device's vfio-user message handling
#                  (ninja target tests/vfio-user-devstate/devstate-fuzz)
#   stream-fuzz    the backend's incoming migration stream
#                  (ninja target tests/unit/vfio-devstate-stream-fuzz)
# SRC defaults to the series tree.  Only the two targets (and the headers
# they need) are built, in $WORK/fuzz-build/qemu-NAME (FUZZ_BUILD
# overrides), configured once with clang-14 and the project's configure
# arguments, then incremental.  Seeds (each target writes its own), corpora
# and crash artifacts go to $WORK/fuzz-build/ (FUZZ_OUT overrides).
# Prints, per target, "PASS  fuzz/NAME" or "FAIL  fuzz/NAME" with the
# executions, coverage (cov/ft) and crashes, and exits non-zero on any
# crash, leak, timeout, out-of-memory or sanitizer report.
set -uo pipefail
. "$(dirname "$0")/lib.sh"

seconds=30
only=
build_only=0
src=
while [ $# -gt 0 ]; do
    case $1 in
    --seconds) seconds=${2:?}; shift 2 ;;
    --seconds=*) seconds=${1#*=}; shift ;;
    --only) only=${2:?}; shift 2 ;;
    --build-only) build_only=1; shift ;;
    -h|--help) sed -n '3,19p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    -*) die "unknown option $1" ;;
    *) src=$1; shift ;;
    esac
done
case $only in ''|devstate-fuzz|stream-fuzz) ;; *) die "no fuzzer '$only'" ;; esac
src=$(cd "${src:-$SERIES_TREE}" 2>/dev/null && pwd) || die "no source tree ${src:-$SERIES_TREE}"
out=${FUZZ_OUT:-$WORK/fuzz-build}
build=${FUZZ_BUILD:-$out/qemu-$(basename "$src")}
mkdir -p "$out"

# Tools: Debian 12's clang 14 with its libFuzzer and sanitizer runtimes.
need=()
command -v clang-14 >/dev/null || need+=(clang-14)
ls /usr/lib/llvm-14/lib/clang/14*/lib/linux/libclang_rt.fuzzer-x86_64.a \
    >/dev/null 2>&1 || need+=(libclang-rt-14-dev)
if [ ${#need[@]} -gt 0 ]; then
    say "installing ${need[*]}"
    SUDO=; [ "$(id -u)" = 0 ] || SUDO=sudo
    $SUDO apt-get update -qq && \
        DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need[@]}" >&2 ||
        die "could not install ${need[*]}"
fi
"$TOP/tooling/deps.sh" >/dev/null || die "could not install the build dependencies"

# A build directory belongs to one source tree: start afresh for another.
if [ -f "$build/build.ninja" ] && [ "$(cat "$build/.fuzz-source" 2>/dev/null)" != "$src" ]; then
    say "$build was configured for another tree; configuring it again"
    rm -rf "$build"
fi
targets=(tests/vfio-user-devstate/devstate-fuzz tests/unit/vfio-devstate-stream-fuzz)
t0=$(date +%s)
[ -f "$build/build.ninja" ] || say "configuring a clang --enable-fuzzing build in $build"
BUILD_DIR=$build \
EXTRA_CONFIGURE_ARGS="--cc=clang-14 --cxx=clang++-14 --enable-fuzzing --enable-asan --enable-ubsan" \
    "$TOP/tooling/build.sh" "$src" "${targets[@]}" ||
    die "building the fuzzers failed (configure log: $build/configure.log)"
echo "$src" > "$build/.fuzz-source"
say "fuzzers built in $(since "$t0")s (configure and build)"
bin_devstate=$build/tests/vfio-user-devstate/devstate-fuzz
bin_stream=$build/tests/unit/vfio-devstate-stream-fuzz
[ "$build_only" = 1 ] && exit 0

# Seeds: each target writes its own (valid inputs and corrupt ones).
mkdir -p "$out/seeds-devstate-fuzz" "$out/seeds-stream-fuzz"
DEVSTATE_FUZZ_SEEDS=$out/seeds-devstate-fuzz "$bin_devstate" -runs=0 \
    >/dev/null 2>&1 || die "could not write the device seeds"
VFIO_DS_FUZZ_SEEDS=$out/seeds-stream-fuzz "$bin_stream" -runs=0 \
    >/dev/null 2>&1 || die "could not write the stream seeds"

rc=0
run() {  # run NAME BINARY MAX_LEN
    local name=$1 bin=$2 max_len=$3 log=$out/$1.log corpus=$out/corpus-$1 art=$out/artifacts-$1
    local frc execs cov ft crashes
    mkdir -p "$corpus" "$art"
    rm -f "$art"/*
    say "running $name for ${seconds}s"
    # One job; a slow unit (> 10 s) is a hang; the corpus is kept and grows.
    ASAN_OPTIONS=detect_leaks=1:abort_on_error=1:allocator_may_return_null=0 \
    UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
    "$bin" -max_total_time="$seconds" -max_len="$max_len" -timeout=10 \
        -rss_limit_mb=2048 -malloc_limit_mb=1024 -print_final_stats=1 \
        -artifact_prefix="$art/" "$corpus" "$out/seeds-$name" > "$log" 2>&1
    frc=$?
    execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
    cov=$(grep -o 'cov: [0-9]* ft: [0-9]*' "$log" | tail -1)
    crashes=$(find "$art" -type f | wc -l)
    if grep -qE 'ERROR: (AddressSanitizer|LeakSanitizer|libFuzzer)|runtime error:|SUMMARY: ' "$log"; then
        [ "$crashes" -gt 0 ] || crashes=1
    fi
    if [ "$frc" = 0 ] && [ "$crashes" = 0 ]; then
        printf 'PASS  fuzz/%s (%s executions, %s, 0 crashes, %ss)\n' \
            "$name" "${execs:-?}" "${cov:-cov: ?}" "$seconds"
    else
        printf 'FAIL  fuzz/%s (%s executions, %s, %s crashes, exit %s; log %s)\n' \
            "$name" "${execs:-?}" "${cov:-cov: ?}" "$crashes" "$frc" "$log"
        grep -m3 -E 'SUMMARY|runtime error|interface violation|ERROR:' "$log" | sed 's/^/      /'
        ls "$art" | sed "s|^|      artifact: $art/|"
        rc=1
    fi
}
[ -z "$only" ] || [ "$only" = devstate-fuzz ] && run devstate-fuzz "$bin_devstate" 131072
[ -z "$only" ] || [ "$only" = stream-fuzz ] && run stream-fuzz "$bin_stream" 131072
exit $rc
