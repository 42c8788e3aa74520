#!/bin/bash
# SPDX-License-Identifier: GPL-2.0-or-later
# in-l2.sh: the kernel tests, run inside L2 by tooling/kernel-tests.sh
# (through tooling/l2-run.sh, chrooted into the host root, with the sample
# loaded and its instances created).
#
#   in-l2.sh --type TYPE --incompat-type TYPE --hostile BIN [--client BIN]
#            [--qemu BIN] [--qtest BIN --qtest-qemu BIN]
#            [--refuse-errno NAME] [--malformed-errno NAME]
#
# Instances ($L2_MDEV_LIST): the first five of TYPE are the source and
# the compatible target (management check, then the protocol client), the
# instance of the hostile checks, and the two of the QEMU migration; the
# first of the incompatible type is the incompatible target.  --qtest runs
# QEMU's migration qtest in its kernel mode, with instances of its own
# (tooling/kernel-tests/migration-qtest.sh).  Prints "PASS  name" /
# "FAIL  name" lines; exits 1 when any failed.
set -uo pipefail

type= incompat_type= hostile= client= qemu= refuse=EINVAL malformed=EINVAL
qtest= qtest_qemu=
while [ $# -gt 0 ]; do
    case $1 in
        --type) type=$2; shift 2 ;;
        --incompat-type) incompat_type=$2; shift 2 ;;
        --hostile) hostile=$2; shift 2 ;;
        --client) client=$2; shift 2 ;;
        --qemu) qemu=$2; shift 2 ;;
        --qtest) qtest=$2; shift 2 ;;
        --qtest-qemu) qtest_qemu=$2; shift 2 ;;
        --refuse-errno) refuse=$2; shift 2 ;;
        --malformed-errno) malformed=$2; shift 2 ;;
        *) echo "in-l2.sh: unknown option '$1'" >&2; exit 2 ;;
    esac
done
here=$(cd "$(dirname "$0")" && pwd)
# A client case takes seconds even under nested TCG; a hung one (a driver
# that holds a lock after an oops) must not eat the whole run.
case_timeout=${KTEST_CASE_TIMEOUT:-180}
fail=0
mapfile -t mine < <(awk -v t="$type" '$1 == t { print $2 }' "$L2_MDEV_LIST")
mapfile -t other < <(awk -v t="$incompat_type" '$1 == t { print $2 }' "$L2_MDEV_LIST")
if [ ${#mine[@]} -lt 5 ] || [ ${#other[@]} -lt 1 ]; then
    echo "FAIL  kernel: instances (want 5 of $type and 1 of $incompat_type; have: $(tr '\n' ' ' < "$L2_MDEV_LIST"))"
    exit 1
fi
src=${mine[0]} dst=${mine[1]} hos=${mine[2]} qsrc=${mine[3]} qdst=${mine[4]} inc=${other[0]}

# The sample is there and its instances are bound to it.
probs=
for u in "$src" "$dst" "$hos" "$qsrc" "$qdst" "$inc"; do
    [ -e "/sys/bus/mdev/devices/$u/iommu_group" ] || probs="$probs $u has no iommu_group;"
    [ -e "/sys/bus/mdev/devices/$u/driver" ] || probs="$probs $u is bound to no driver;"
done
if [ -z "$probs" ]; then
    echo "PASS  kernel: instances created, bound, in IOMMU groups"
else
    echo "FAIL  kernel: instances created, bound, in IOMMU groups"
    echo "      $probs"
    fail=1
fi

python3 "$here/mgmt-check.py" "$src" "$dst" "$inc" --errno "$refuse" \
    --malformed-errno "$malformed" || fail=1
"$hostile" "$hos" || fail=1

if [ -n "$client" ]; then
    # The protocol client's cases through a VFIO device fd, on the source
    # and the compatible target (the management check changed neither);
    # one process per case, so that an aborted case hides no other.
    devs=(--vfio-sysfsdev "/sys/bus/mdev/devices/$src"
          --vfio-sysfsdev "/sys/bus/mdev/devices/$dst")
    log=$L2_RESULTS/client-test.log
    : > "$log"
    mapfile -t cases < <("$client" -l "${devs[@]}" 2>> "$log" | grep '^/')
    if [ ${#cases[@]} = 0 ]; then
        echo "FAIL  kernel client: devstate-client-test lists no case (log: $log)"
        fail=1
    fi
    oopsed=
    for c in "${cases[@]}"; do
        if [ -n "$oopsed" ]; then
            echo "FAIL  kernel client: $c (not run: the kernel oopsed in an earlier case)"
            continue
        fi
        t=$(date +%s)
        out=$(timeout -k 5 "$case_timeout" "$client" --tap -p "$c" "${devs[@]}" 2>&1)
        rc=$?
        out="$out
(took $(( $(date +%s) - t ))s)"
        if dmesg | grep -q -E 'Oops|BUG:|Call Trace'; then
            oopsed=1
            rc="$rc, and the kernel oopsed"
        fi
        printf '==== %s (exit status %s)\n%s\n' "$c" "$rc" "$out" >> "$log"
        if [ "$rc" = 0 ] && grep -q "^ok [0-9]* $c # SKIP" <<< "$out"; then
            echo "SKIP  kernel client: $c ($(sed -n "s|^ok [0-9]* $c # SKIP *||p" <<< "$out"))"
        elif [ "$rc" = 0 ] && grep -q "^ok [0-9]* $c\$" <<< "$out"; then
            echo "PASS  kernel client: $c"
        elif [ "$rc" = 124 ]; then
            echo "FAIL  kernel client: $c (timed out after ${case_timeout}s)"
            fail=1
        else
            echo "FAIL  kernel client: $c (exit status $rc)"
            grep -v -E '^(ok|not ok|#|1\.\.|\*\*$)' <<< "$out" | tail -n 8 | sed 's/^/      /'
            fail=1
        fi
    done
fi
if [ -n "$qemu" ]; then
    # The project's QEMU: realize on the sample, save, load elsewhere.
    # Fresh instances: the client cases above leave theirs as they end.
    python3 "$here/qemu-migrate.py" "$qemu" "$qsrc" "$qdst" "$inc" \
        "$L2_RESULTS/qemu-migrate" || fail=1
    # Again with two instances created without mmap (the sample's mmap
    # parameter is read when an instance is created).
    p=/sys/module/mdevstate/parameters/mmap
    nsrc=5ca1ab1e-0000-4000-8000-00ff00000001
    ndst=5ca1ab1e-0000-4000-8000-00ff00000002
    tdir=$(readlink -f "/sys/bus/mdev/devices/$qsrc/mdev_type")
    if echo N > "$p" && echo "$nsrc" > "$tdir/create" &&
       echo "$ndst" > "$tdir/create" && echo Y > "$p"; then
        python3 "$here/qemu-migrate.py" "$qemu" "$nsrc" "$ndst" "$inc" \
            "$L2_RESULTS/qemu-migrate" --no-mmap || fail=1
    else
        echo "FAIL  kernel qemu: instances without mmap (mmap=N, create in $tdir)"
        fail=1
    fi
    echo Y > "$p"
fi

# ---- QEMU's migration qtest, kernel mode (tooling/kernel-tests/migration-qtest.sh)
if [ -n "$qtest" ]; then
    "$here/migration-qtest.sh" --qtest "$qtest" --qemu "$qtest_qemu" \
        --type "$type" --incompat-type "$incompat_type" || fail=1
fi
exit $fail
