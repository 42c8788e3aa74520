#!/bin/bash
# SPDX-License-Identifier: GPL-2.0-or-later
# in-l2.sh: the kernel tests, run inside L2 by tooling/kernel-tests.sh
# (through tooling/l2-run.sh, chrooted into the host root, with the sample
# loaded and its instances created).
#
#   in-l2.sh --type TYPE --incompat-type TYPE --hostile BIN [--client BIN]
#            [--refuse-errno NAME]
#
# Instances ($L2_MDEV_LIST): the first three of TYPE are the source, the
# compatible target and the instance the hostile checks use; the first of
# the incompatible type is the incompatible target.  Prints "PASS  name" /
# "FAIL  name" lines; exits 1 when any failed.
set -uo pipefail

type= incompat_type= hostile= client= refuse=EINVAL
while [ $# -gt 0 ]; do
    case $1 in
        --type) type=$2; shift 2 ;;
        --incompat-type) incompat_type=$2; shift 2 ;;
        --hostile) hostile=$2; shift 2 ;;
        --client) client=$2; shift 2 ;;
        --refuse-errno) refuse=$2; shift 2 ;;
        *) echo "in-l2.sh: unknown option '$1'" >&2; exit 2 ;;
    esac
done
here=$(cd "$(dirname "$0")" && pwd)
fail=0
mapfile -t mine < <(awk -v t="$type" '$1 == t { print $2 }' "$L2_MDEV_LIST")
mapfile -t other < <(awk -v t="$incompat_type" '$1 == t { print $2 }' "$L2_MDEV_LIST")
if [ ${#mine[@]} -lt 3 ] || [ ${#other[@]} -lt 1 ]; then
    echo "FAIL  kernel: instances (want 3 of $type and 1 of $incompat_type; have: $(tr '\n' ' ' < "$L2_MDEV_LIST"))"
    exit 1
fi
src=${mine[0]} dst=${mine[1]} hos=${mine[2]} inc=${other[0]}

# The sample is there and its instances are bound to it.
probs=
for u in "$src" "$dst" "$hos" "$inc"; do
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

python3 "$here/mgmt-check.py" "$src" "$dst" "$inc" --errno "$refuse" || fail=1
"$hostile" "$hos" || fail=1

if [ -n "$client" ]; then
    # The protocol client's cases, through a VFIO device fd.
    out=$L2_RESULTS/client-test.log
    "$client" --vfio-device "/sys/bus/mdev/devices/$hos" --tap -k > "$out" 2>&1
    rc=$?
    grep -E '^(not )?ok ' "$out" | sed -E 's/^ok [0-9]+ (- )?/PASS  kernel client: /; s/^not ok [0-9]+ (- )?/FAIL  kernel client: /' |
        grep -v '# SKIP'
    if [ "$rc" != 0 ]; then
        echo "FAIL  kernel client: devstate-client-test exit status $rc (log: $out)"
        tail -n 20 "$out" | sed 's/^/      /'
        fail=1
    fi
fi
exit $fail
