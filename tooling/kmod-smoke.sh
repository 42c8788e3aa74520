#!/bin/bash
# SPDX-License-Identifier: GPL-2.0-or-later
# kmod-smoke.sh: build the sample mdev driver (tooling/kmod-build.sh) and
# tooling/kmod-smoke.c, boot L2 (tooling/l2-run.sh) and migrate between
# two instances through the VFIO uAPI, with the data regions mmapped and
# then with mmap=0.  A quick check of the driver by its author; the
# protocol tests proper are tooling/kernel-tests.sh.
#
#   tooling/kmod-smoke.sh [MODULE-PARAMS...]
set -euo pipefail
. "$(dirname "$0")/lib.sh"

out=$WORK/kmod-smoke
mkdir -p "$out/include/linux"
eval "$("$TOP/tooling/kmod-build.sh" --print-env)"
# What headers_install does to a uAPI header, for this one.
sed -E -e 's/([[:space:](])(__user|__force|__iomem)[[:space:]]/\1/g' "$UAPI_VFIO_H" > "$out/include/linux/vfio.h"
gcc -O2 -Wall -Wextra -Werror -I"$out/include" -o "$out/kmod-smoke" "$TOP/tooling/kmod-smoke.c"

cat > "$out/in-l2.sh" <<'EOS'
#!/bin/bash
set -u
smoke=$1
types=/sys/class/mdev_bus/mdevstate/mdev_supported_types
fail=0
read -r a b < <(echo $L2_MDEVS)
"$smoke" "$a" "$b" || fail=1
echo 0 > /sys/module/mdevstate/parameters/mmap
c=5ca1ab1e-0000-4000-8000-0000000000c1 d=5ca1ab1e-0000-4000-8000-0000000000d1
echo $c > $types/mdevstate-1/create && echo $d > $types/mdevstate-1/create || fail=1
"$smoke" $c $d || fail=1
for u in $L2_MDEVS $c $d; do
    echo 1 > /sys/bus/mdev/devices/$u/remove || fail=1
done
if "$L2_BUSYBOX" rmmod mdevstate; then
    echo "PASS  kmod smoke: instances removed, module unloaded"
else
    echo "FAIL  kmod smoke: instances removed, module unloaded"
    fail=1
fi
exit $fail
EOS
chmod +x "$out/in-l2.sh"
"$TOP/tooling/l2-run.sh" --name kmod-smoke --timeout 240 \
    --module "$KMOD mem_size=16M $*" --mdev mdevstate-1:2 \
    --check-name "kmod smoke: L2 kernel log has no warning, BUG, oops or taint" \
    -- "$out/in-l2.sh" "$out/kmod-smoke"
