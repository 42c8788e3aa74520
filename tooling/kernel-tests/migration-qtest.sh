#!/bin/bash
# SPDX-License-Identifier: GPL-2.0-or-later
# migration-qtest.sh: QEMU's migration qtest against the kernel sample,
# run inside L2 by tooling/kernel-tests/in-l2.sh.
#
#   migration-qtest.sh --qtest BIN --qemu BIN --type TYPE --incompat-type TYPE
#                      [-p CASE]...
#
# BIN is tests/qtest/vfio-devstate-migration-test of a QEMU build with the
# series, run in its kernel mode (DEVSTATE_KERNEL_MDEV_TYPE): each case
# creates and removes its own instances of TYPE (and of the incompatible
# type for the refusal case), passes them to QEMU as -device
# vfio-pci,sysfsdev=/sys/bus/mdev/devices/UUID and runs QEMU under -accel
# qtest.  Every case the binary lists runs (or only the -p ones), one
# process per case, so that an aborted case hides no other.  Prints
# "PASS  kernel qtest: CASE (Ns)", "SKIP  ..." (the case says why) or
# "FAIL  ..."; exits 1 when any failed.  Each case's output is kept in
# $L2_RESULTS/qtest.log.
set -uo pipefail

qtest= qemu= type= incompat_type=
only=()
while [ $# -gt 0 ]; do
    case $1 in
        --qtest) qtest=$2; shift 2 ;;
        --qemu) qemu=$2; shift 2 ;;
        --type) type=$2; shift 2 ;;
        --incompat-type) incompat_type=$2; shift 2 ;;
        -p) only+=("$2"); shift 2 ;;
        *) echo "migration-qtest.sh: unknown option '$1'" >&2; exit 2 ;;
    esac
done
for v in qtest qemu type incompat_type; do
    [ -n "${!v}" ] || { echo "migration-qtest.sh: --${v/_/-} is missing" >&2; exit 2; }
done
# A live case takes tens of seconds under nested TCG; a hung one must not
# eat the whole run.
timeout_s=${KTEST_QTEST_TIMEOUT:-300}
log=${L2_RESULTS:-/tmp}/qtest.log
: > "$log"
export QTEST_QEMU_BINARY=$qemu DEVSTATE_KERNEL_MDEV_TYPE=$type
export DEVSTATE_KERNEL_MDEV_INCOMPAT_TYPE=$incompat_type
fail=0
t0=$(date +%s)
if [ ${#only[@]} -gt 0 ]; then
    cases=("${only[@]}")
else
    mapfile -t cases < <("$qtest" -l 2>> "$log" | grep '^/')
fi
if [ ${#cases[@]} = 0 ]; then
    echo "FAIL  kernel qtest: $(basename "$qtest") lists no case (log: $log)"
    exit 1
fi
for c in "${cases[@]}"; do
    t=$(date +%s)
    out=$(timeout -k 5 "$timeout_s" "$qtest" --tap -k -p "$c" 2>&1)
    rc=$?
    took=$(( $(date +%s) - t ))s
    printf '==== %s (exit status %s, %s)\n%s\n' "$c" "$rc" "$took" "$out" >> "$log"
    if [ "$rc" = 0 ] && grep -q "^ok [0-9]* $c # SKIP" <<< "$out"; then
        echo "SKIP  kernel qtest: $c ($(sed -n "s|^ok [0-9]* $c # SKIP *||p" <<< "$out"))"
    elif [ "$rc" = 0 ] && grep -q "^ok [0-9]* $c\$" <<< "$out"; then
        echo "PASS  kernel qtest: $c ($took)"
    elif [ "$rc" = 124 ]; then
        echo "FAIL  kernel qtest: $c (timed out after ${timeout_s}s; log: $log)"
        fail=1
    else
        echo "FAIL  kernel qtest: $c (exit status $rc; log: $log)"
        grep -v -E '^(ok |not ok |# (Start|End|slow)|1\.\.)' <<< "$out" | tail -n 8 | sed 's/^/      /'
        fail=1
    fi
done
echo "      kernel qtest: ${#cases[@]} cases in $(( $(date +%s) - t0 ))s"
exit $fail
