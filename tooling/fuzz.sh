#!/bin/bash
# SPDX-License-Identifier: GPL-2.0-or-later
# fuzz.sh [--seconds N] [--only NAME] [--build-only] [SRC]: build the two
# libFuzzer targets of the series with clang -fsanitize=fuzzer,address,
# undefined and run each for N seconds (default 30), one job each, one
# after the other:
#   devstate-fuzz  the reference device's vfio-user message handling
#                  (SRC/tests/vfio-user-devstate/devstate-fuzz.c)
#   stream-fuzz    the backend's incoming migration stream
#                  (SRC/tests/unit/vfio-devstate-stream-fuzz.c)
# SRC defaults to the series tree; its build/ provides the generated QEMU
# headers (configured with tooling/build.sh if missing; FUZZ_QEMU_BUILD
# overrides).  Objects, corpora
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
    -h|--help) sed -n '3,18p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    -*) die "unknown option $1" ;;
    *) src=$1; shift ;;
    esac
done
src=$(cd "${src:-$SERIES_TREE}" 2>/dev/null && pwd) || die "no source tree ${src:-$SERIES_TREE}"
out=${FUZZ_OUT:-$WORK/fuzz-build}
mkdir -p "$out"

# Tools: Debian 12's clang 14 with its libFuzzer runtime, glib.
need=()
command -v clang-14 >/dev/null || command -v clang >/dev/null || need+=(clang-14)
ls /usr/lib/llvm-14/lib/clang/14*/lib/linux/libclang_rt.fuzzer-x86_64.a \
    >/dev/null 2>&1 || need+=(libclang-rt-14-dev)
pkg-config --exists glib-2.0 2>/dev/null || need+=(libglib2.0-dev pkg-config)
if [ ${#need[@]} -gt 0 ]; then
    say "installing ${need[*]}"
    SUDO=; [ "$(id -u)" = 0 ] || SUDO=sudo
    $SUDO apt-get update -qq && \
        DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need[@]}" >&2 ||
        die "could not install ${need[*]}"
fi
CC=$(command -v clang-14 || command -v clang)

# Generated QEMU headers for the stream harness.
build=${FUZZ_QEMU_BUILD:-$src/build}
gen=(config-poison.h trace/trace-hw_vfio.h qapi/qapi-types-run-state.h
     qapi/qapi-types-migration.h qapi/qapi-types-machine.h
     qapi/qapi-types-block-core.h qapi/qapi-types-net.h)
missing=0
[ -f "$build/config-host.h" ] || missing=1
for h in "${gen[@]}"; do [ -f "$build/$h" ] || missing=1; done
if [ "$missing" = 1 ]; then
    "$TOP/tooling/build.sh" "$src" "${gen[@]}" || die "could not generate the QEMU headers in $build"
fi

CFLAGS=(-g -O1 -fsanitize=fuzzer,address,undefined
        -fno-sanitize-recover=undefined -fno-omit-frame-pointer
        -std=gnu11 -D_GNU_SOURCE -D_FILE_OFFSET_BITS=64
        -Wno-gnu-variable-sized-type-not-at-end)
GLIB_CFLAGS=($(pkg-config --cflags glib-2.0))
GLIB_LIBS=($(pkg-config --libs glib-2.0))

build_dev() {
    local d=$src/tests/vfio-user-devstate
    "$CC" "${CFLAGS[@]}" -I"$src" -I"$src/linux-headers" -I"$d" "${GLIB_CFLAGS[@]}" \
        "$d/devstate-fuzz.c" "$d/devstate-regions.c" \
        "${GLIB_LIBS[@]}" -lpthread -o "$out/devstate-fuzz"
}

build_stream() {
    "$CC" "${CFLAGS[@]}" -DCONFIG_SOFTMMU -DCOMPILING_SYSTEM_VS_USER \
        -fno-strict-aliasing -fwrapv \
        -I"$build" -I"$build/qapi" -I"$build/trace" \
        -isystem "$src/linux-headers" -iquote "$src" -iquote "$src/include" \
        -iquote "$src/host/include/x86_64" -iquote "$src/host/include/generic" \
        -iquote "$src/hw/vfio" "${GLIB_CFLAGS[@]}" \
        "$src/tests/unit/vfio-devstate-stream-fuzz.c" "${GLIB_LIBS[@]}" \
        -o "$out/stream-fuzz"
}

say "building the fuzzers from $src in $out"
build_dev || die "building devstate-fuzz failed"
build_stream || die "building stream-fuzz failed"
[ "$build_only" = 1 ] && exit 0

# Seeds: the stream harness writes valid streams; the device's are here.
seed_dev() {
    python3 - "$1" <<'PY'
import struct, sys, os
d = sys.argv[1]
def ctlw(off, val, w=4): return bytes([2, off, 1 if w == 8 else 0]) + struct.pack('<Q', val)
def rd(region, off, count):
    codes = {1: 0, 2: 1, 4: 2, 8: 3}
    if count in codes:
        return bytes([1, region, 0]) + struct.pack('<Q', off) + bytes([codes[count]])
    return bytes([1, region, 0]) + struct.pack('<QBH', off, 4, count)
def wr(region, off, data):
    return bytes([1, region, 1]) + struct.pack('<QBH', off, 4, len(data)) + data
def msg(cmd, payload, fd=False):
    return bytes([0]) + struct.pack('<HHHBI', cmd, 0, len(payload), 1 if fd else 0, 7) + payload
def line(s): return bytes([3, len(s)]) + s.encode()
seeds = {
 'save': b'\x00' + ctlw(4, 2) + rd(9, 40, 8) + ctlw(48, 0, 8) + ctlw(32, 1) + rd(11, 0, 4096)
   + ctlw(4, 3) + ctlw(16, 1) + rd(9, 24, 8) + rd(10, 0, 256) + ctlw(56, 0, 8) + ctlw(64, 64, 8)
   + ctlw(72, 3) + rd(12, 0, 8) + ctlw(4, 1) + ctlw(4, 0),
 'load': b'\x01' + wr(13, 0, b'vfio-user-devstate-1.0.0\0') + ctlw(4, 1) + ctlw(40, 65536 + 16, 8)
   + wr(11, 0, b'\x11' * 64) + ctlw(48, 0, 8) + ctlw(32, 2) + wr(11, 0, b'\x22' * 16)
   + ctlw(48, 65536, 8) + ctlw(32, 2) + ctlw(24, 128, 8) + wr(10, 0, b'\0' * 128)
   + ctlw(16, 2) + ctlw(4, 0),
}
m = b'\x04' + msg(4, struct.pack('<IIII', 16, 0, 0, 0))
for i in (7, 9, 10, 11, 12, 13):
    m += msg(5, struct.pack('<IIIIQQ', 256, 0, i, 0, 0, 0))
m += msg(6, struct.pack('<IIII', 16, 0, 0, 0))
m += msg(2, struct.pack('<IIQQQ', 32, 3, 0, 0x100000, 0x10000), fd=True)
m += msg(3, struct.pack('<IIQQ', 24, 0, 0x100000, 0x10000))
m += msg(7, struct.pack('<IIIII', 20, 0x21, 0, 0, 1) + b'\x01')
m += rd(0, 0, 4) + rd(7, 0, 64) + wr(7, 4, b'\x06\x00') + wr(0, 0x1c, b'\x01\x02\x03\x04')
m += msg(13, b'') + line('status') + line('fail mem-set:EIO:1') + line('clear all') + line('digest')
seeds['proto'] = m
# Round trip in STOP: the blob and the chunks that GET_BUFFER leaves in the
# data regions are loaded back with SET_BUFFER (a valid config and data set).
size = 32 + 256 * (8 + 4096)
r = b'\x00' + ctlw(4, 1) + ctlw(16, 1) + ctlw(16, 2) + rd(9, 40, 8) + ctlw(40, size, 8)
for pos in range(0, size, 65536):
    r += ctlw(48, pos, 8) + ctlw(32, 1) + ctlw(32, 2)
seeds['roundtrip'] = r + line('digest') + ctlw(4, 0)
# DMA: a 64 KiB mapping with a memfd, the window at its start, at the top
# of the IOVA space (must count as an error) and past the memfd (refused).
def bar0(off, v): return wr(0, off, struct.pack('<I', v))
dma = b'\x00' + msg(2, struct.pack('<IIQQQ', 32, 3, 0, 0, 0x10000), fd=True)
dma += bar0(0x10, 0) + bar0(0x18, 16) + bar0(4, 7) + line('status') + bytes([4, 20])
dma += bar0(0x10, 0xfffff000) + bar0(0x14, 0xffffffff) + bar0(0x18, 1) + bytes([4, 2])
dma += msg(2, struct.pack('<IIQQQ', 32, 3, 0, 0x100000, 0x100000), fd=True)
seeds['dma'] = dma
for k, v in seeds.items():
    open(os.path.join(d, k), 'wb').write(v)
PY
}
mkdir -p "$out/seeds-devstate-fuzz" "$out/seeds-stream-fuzz"
seed_dev "$out/seeds-devstate-fuzz" || die "could not write the device seeds"
VFIO_DS_FUZZ_SEEDS=$out/seeds-stream-fuzz "$out/stream-fuzz" -runs=0 \
    >/dev/null 2>&1 || die "could not write the stream seeds"

rc=0
run() {  # run NAME MAX_LEN
    local name=$1 max_len=$2 log=$out/$1.log corpus=$out/corpus-$1 art=$out/artifacts-$1
    local frc execs cov ft crashes
    mkdir -p "$corpus" "$art"
    rm -f "$art"/*
    say "running $name for ${seconds}s"
    # One job; a slow unit (> 10 s) is a hang; the corpus is kept and grows.
    ASAN_OPTIONS=detect_leaks=1:abort_on_error=1:allocator_may_return_null=0 \
    UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
    "$out/$name" -max_total_time="$seconds" -max_len="$max_len" -timeout=10 \
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
[ -z "$only" ] || [ "$only" = devstate-fuzz ] && run devstate-fuzz 8192
[ -z "$only" ] || [ "$only" = stream-fuzz ] && run stream-fuzz 131072
exit $rc
