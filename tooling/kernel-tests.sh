#!/bin/bash
# SPDX-License-Identifier: GPL-2.0-or-later
# kernel-tests.sh: the kernel tests of make check, in one boot of L2.
#
#   tooling/kernel-tests.sh [--module FILE.ko] [--params 'P=V ...']
#                           [--client BIN | --no-client] [--qemu BIN | --no-qemu]
#
# Builds the sample mdev driver (tooling/kmod-build.sh) and a hostile
# VFIO-uAPI test program against the Linux series' vfio.h, boots L2
# (tooling/l2-run.sh) with the sample loaded and instances created, and
# runs there (tooling/kernel-tests/in-l2.sh): the seed-003 management
# check through sysfs, the hostile-userspace checks, the reference
# device's protocol client through a VFIO device fd (the QEMU build's
# devstate-client-test), the project's QEMU with -device
# vfio-pci,sysfsdev= on the sample (realize, save to a file, load into a
# second instance, digests equal; tooling/kernel-tests/qemu-migrate.py),
# QEMU's migration qtest in its kernel mode (live migrations between two
# instances, cancel, device errors, refusal; one case at a time,
# tooling/kernel-tests/migration-qtest.sh) and, after all of them, the L2
# kernel-log check.  The client, QEMU and the qtest default to the series
# build (.work/series/build; KTEST_QTEST_BUILD for the qtest's build dir).
# --module/--params replace the built module or add module parameters
# (e.g. for a deliberate breakage).  Prints "PASS  name" / "FAIL  name"
# lines and ends with "kernel tests: N passed, N failed".
set -uo pipefail
. "$(dirname "$0")/lib.sh"

TYPE=${KTEST_TYPE:-mdevstate-1}
INCOMPAT_TYPE=${KTEST_INCOMPAT_TYPE:-mdevstate-2}
# The sample's answers to a migration_version it refuses: EPROTO for an
# incompatible one, EINVAL for an ill-formed one (mdevstate.c).
REFUSE_ERRNO=${KTEST_REFUSE_ERRNO:-EPROTO}
MALFORMED_ERRNO=${KTEST_MALFORMED_ERRNO:-EINVAL}

# KTEST_MODULE / KTEST_PARAMS: the same as --module / --params, for a
# deliberate breakage through make check (KTEST_PARAMS=fail=arc:EIO).
module=${KTEST_MODULE:-} params=${KTEST_PARAMS:-} client=auto qemu=auto
while [ $# -gt 0 ]; do
    case $1 in
        --module) module=$2; shift 2 ;;
        --params) params=$2; shift 2 ;;
        --client) client=$2; shift 2 ;;
        --no-client) client=; shift ;;
        --qemu) qemu=$2; shift 2 ;;
        --no-qemu) qemu=; shift ;;
        *) die "kernel-tests.sh: unknown option '$1'" ;;
    esac
done

t0=$(date +%s)
out=$WORK/kernel-tests
mkdir -p "$out"
# One run at a time in this work tree (the results and L2 directories are
# shared); a second run waits.
exec 7> "$out/.lock"
flock -n 7 || { say "waiting for another kernel-tests.sh run to end"; flock -w 3600 7; } ||
    die "kernel-tests.sh: another run holds $out/.lock"
results=$out/results.txt
: > "$results"
emit() { echo "$*" | tee -a "$results"; }
finish() {
    local pass fail
    pass=$(grep -c '^PASS' "$results")
    fail=$(grep -c '^FAIL' "$results")
    say "kernel tests took $(since "$t0")s"
    echo "kernel tests: $pass passed, $fail failed"
    [ "$fail" = 0 ] && [ "$pass" -gt 0 ]
    exit
}

kenv=$("$TOP/tooling/kernel-pkgs.sh" --print-env) ||
    { emit "FAIL  kernel: pinned kernel packages (tooling/kernel-pkgs.sh)"; finish; }
eval "$kenv"

# The sample module and the series' uAPI header (also with --module: the
# hostile test is built against the series' header).
if [ ! -x "$TOP/tooling/kmod-build.sh" ]; then
    emit "FAIL  kernel: sample module builds (tooling/kmod-build.sh is missing)"
    finish
fi
kenv=$("$TOP/tooling/kmod-build.sh" --print-env) ||
    { emit "FAIL  kernel: sample module builds (tooling/kmod-build.sh)"; finish; }
eval "$kenv"
[ -n "$module" ] || module=${KMOD:-}
if [ ! -f "$module" ]; then
    emit "FAIL  kernel: sample module builds (no module at '${module}')"
    finish
fi
emit "PASS  kernel: sample module builds ($module)"

uapi=${UAPI_VFIO_H:-}
if [ -z "$uapi" ] || [ ! -f "$uapi" ]; then
    emit "FAIL  kernel: the Linux series' include/uapi/linux/vfio.h (kmod-build.sh gave '${uapi}')"
    finish
fi
inc=$out/include
mkdir -p "$inc/linux"
# What headers_install does to a uAPI header, for this one.
sed -E -e 's/([[:space:](])(__user|__force|__iomem)[[:space:]]/\1/g' "$uapi" > "$inc/linux/vfio.h"
hostile=$out/vfio-devstate-hostile
if gcc -O2 -Wall -Wextra -Werror -I"$inc" -o "$hostile" \
       "$TOP/tooling/kernel-tests/vfio-devstate-hostile.c" 2> "$out/hostile-build.log"; then
    emit "PASS  kernel: hostile-userspace test builds against the series' vfio.h"
else
    sed 's/^/      /' "$out/hostile-build.log" | head -20
    emit "FAIL  kernel: hostile-userspace test builds against the series' vfio.h"
    finish
fi

client_args=()
if [ "$client" = auto ]; then
    client=$SERIES_BUILD/tests/vfio-user-devstate/devstate-client-test
    [ -x "$client" ] || {
        emit "FAIL  kernel client: $client is not built (run after the QEMU build)"
        client=
    }
fi
if [ -n "$client" ] && ! grep -q -a -e '--vfio-sysfsdev' "$client"; then
    emit "FAIL  kernel client: $client has no VFIO device-fd mode (--vfio-sysfsdev)"
    client=
fi
[ -z "$client" ] || client_args=(--client "$client")
if [ "$qemu" = auto ]; then
    qemu=$SERIES_BUILD/qemu-system-x86_64
    [ -x "$qemu" ] || {
        emit "FAIL  kernel qemu: $qemu is not built (run after the QEMU build)"
        qemu=
    }
fi
[ -z "$qemu" ] || client_args+=(--qemu "$qemu")
# QEMU's migration qtest in its kernel mode, from the series build (or the
# build dir KTEST_QTEST_BUILD); its cases create instances of their own
# (up to four at a time) and VMs of 128 MiB: room for them in L2.
qbuild=${KTEST_QTEST_BUILD:-$SERIES_BUILD}
qtest=$qbuild/tests/qtest/vfio-devstate-migration-test
if [ ! -x "$qtest" ] || [ ! -x "$qbuild/qemu-system-x86_64" ]; then
    emit "FAIL  kernel qtest: $qtest is not built (run after the QEMU build)"
elif ! grep -q -a DEVSTATE_KERNEL_MDEV_TYPE "$qtest"; then
    emit "FAIL  kernel qtest: $qtest has no kernel mode (DEVSTATE_KERNEL_MDEV_TYPE)"
else
    client_args+=(--qtest "$qtest" --qtest-qemu "$qbuild/qemu-system-x86_64")
    params="max_instances=16 $params"
fi

say "booting L2 for the kernel tests"
"$TOP/tooling/l2-run.sh" --name kernel-tests --results "$out/l2" --timeout 2700 \
    --smp "${KTEST_L2_SMP:-1}" --mem "${KTEST_L2_MEM:-2048}" \
    --module "$module $params" --mdev "$TYPE:5" --mdev "$INCOMPAT_TYPE:1" \
    --check-name "kernel: L2 kernel log has no warning, BUG, oops or taint" \
    -- "$TOP/tooling/kernel-tests/in-l2.sh" --type "$TYPE" \
    --incompat-type "$INCOMPAT_TYPE" --hostile "$hostile" \
    --refuse-errno "$REFUSE_ERRNO" --malformed-errno "$MALFORMED_ERRNO" \
    "${client_args[@]}" > "$out/l2-output.txt"
rc=$?
grep -E '^(PASS|FAIL)  ' "$out/l2-output.txt" >> "$results"
cat "$out/l2-output.txt"
if [ "$rc" != 0 ] && ! grep -q '^FAIL' "$out/l2-output.txt"; then
    emit "FAIL  kernel: L2 run (tooling/l2-run.sh exit status $rc; console: $WORK/l2/kernel-tests/console.log)"
fi
finish
