#!/bin/bash
# SPDX-License-Identifier: GPL-2.0-or-later
# linux-check.sh: the checks of the Linux series (linux/patches/), without
# booting anything:
#
#   - it applies with git am onto the pinned linux-source-6.12 tree
#     (a tree of its own, .work/linux-check, applied afresh);
#   - scripts/checkpatch.pl --strict reports no error on any patch (and
#     its SPDX check really runs);
#   - every patch has a commit message and a Signed-off-by;
#   - after every patch, the uAPI header compiles in userspace with the
#     layout of the interface (88-byte control struct, field offsets),
#     the sample module (once it exists) builds out of tree against the
#     pinned linux-headers with the series' vfio.h taking precedence over
#     the packaged one, and the documentation (once it exists) parses
#     with docutils without a warning;
#   - the view (linux/ minus patches/) equals the files the series creates.
#
#   tooling/linux-check.sh
#
# Prints "PASS  linux: ..." / "FAIL  linux: ..." lines and ends with
# "linux checks: N passed, N failed"; exits non-zero on any failure.
set -uo pipefail
. "$(dirname "$0")/lib.sh"

tree=$WORK/linux-check
kout=$WORK/linux-check-kmod
log=$WORK/linux-check.log
: > "$log"
npass=0 nfail=0
pass() { echo "PASS  linux: $*"; npass=$((npass + 1)); }
fail() { echo "FAIL  linux: $1"; shift; for l in "$@"; do echo "      $l"; done; nfail=$((nfail + 1)); }
finish() {
    echo "linux checks: $npass passed, $nfail failed"
    [ "$nfail" = 0 ]
    exit
}

# checkpatch's SPDX check needs ply and GitPython (Debian's python3);
# docutils checks the documentation.
need=()
for p in perl python3-ply python3-git python3-docutils; do
    dpkg -s "$p" >/dev/null 2>&1 || need+=("$p")
done
if [ ${#need[@]} -gt 0 ]; then
    [ "$(id -u)" = 0 ] || die "missing packages: ${need[*]} (apt-get install them as root)"
    say "installing ${need[*]}"
    DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 install -y -q "${need[@]}" >&2 ||
        die "apt-get install ${need[*]} failed"
fi
# Debian's python3 (with those modules), not another one first in PATH.
export PATH=/usr/bin:$PATH

t0=$(date +%s)
if "$TOP/tooling/linux-tree.sh" --dir "$tree" --reset >> "$log" 2>&1; then
    pass "the series applies with git am onto linux-source-6.12 ($(ls "$TOP"/linux/patches/0*.patch | wc -l) patches)"
else
    fail "the series applies with git am onto linux-source-6.12" "$(tail -n 5 "$log")"
    finish
fi

# checkpatch on each patch file as it is in linux/patches/
for p in "$TOP"/linux/patches/0*.patch; do
    name=$(basename "$p")
    out=$(cd "$tree" && ./scripts/checkpatch.pl --strict "$p" 2>&1)
    total=$(grep '^total:' <<< "$out")
    if grep -q '^ERROR:' <<< "$out" || ! grep -q '^total: 0 errors' <<< "$out"; then
        mapfile -t errs < <(grep -A3 '^ERROR:' <<< "$out" | head -20)
        fail "checkpatch --strict: no error in $name" "$total" "${errs[@]}"
    elif grep -q 'Traceback' <<< "$out"; then
        fail "checkpatch --strict: no error in $name" "scripts/spdxcheck.py did not run:" \
            "$(grep -A3 Traceback <<< "$out" | tail -1)"
    else
        pass "checkpatch --strict: no error in $name (${total#total: })"
    fi
done

# The commits: a message and a Signed-off-by each
mapfile -t commits < <(git -C "$tree" rev-list --reverse upstream..HEAD)
for c in "${commits[@]}"; do
    subj=$(git -C "$tree" log -1 --format=%s "$c")
    body=$(git -C "$tree" log -1 --format=%b "$c" | grep -cv -e '^Signed-off-by:' -e '^$')
    if [ "$body" -lt 3 ]; then
        fail "'$subj': a commit message" "only $body lines of text besides the Signed-off-by"
    elif ! git -C "$tree" log -1 --format=%b "$c" | grep -q '^Signed-off-by: '; then
        fail "'$subj': a commit message" "no Signed-off-by"
    else
        pass "'$subj': commit message and Signed-off-by"
    fi
done

# After each patch: the uAPI compiles with its layout, the sample builds,
# the documentation parses.
probe=$WORK/linux-check-uapi
mkdir -p "$probe/include/linux"
cat > "$probe/layout.c" <<'EOF'
/* The device-state uAPI as userspace sees it: names, values, layout. */
#include <stddef.h>
#include <linux/vfio.h>
#define CTL(f) offsetof(struct vfio_device_state_ctl, f)
_Static_assert(sizeof(struct vfio_device_state_ctl) == 88, "size");
_Static_assert(CTL(version) == 0 && CTL(device_state) == 4 &&
	       CTL(caps) == 8 && CTL(reserved) == 12, "header");
_Static_assert(CTL(device_config.action) == 16 &&
	       CTL(device_config.size) == 24, "device_config");
_Static_assert(CTL(device_memory.action) == 32 &&
	       CTL(device_memory.size) == 40 && CTL(device_memory.pos) == 48 &&
	       CTL(device_memory.pending) == 56, "device_memory");
_Static_assert(CTL(system_memory.start_pfn) == 64 &&
	       CTL(system_memory.page_nr) == 72 &&
	       CTL(system_memory.action) == 80 &&
	       CTL(system_memory.page_shift) == 84, "system_memory");
_Static_assert(VFIO_REGION_TYPE_DEVICE_STATE == 4 &&
	       VFIO_REGION_SUBTYPE_DEVICE_STATE_CTL == 1 &&
	       VFIO_REGION_SUBTYPE_DEVICE_STATE_DATA_CONFIG == 2 &&
	       VFIO_REGION_SUBTYPE_DEVICE_STATE_DATA_MEMORY == 3 &&
	       VFIO_REGION_SUBTYPE_DEVICE_STATE_DATA_DIRTYBITMAP == 4 &&
	       VFIO_REGION_SUBTYPE_DEVICE_STATE_VERSION == 5, "regions");
_Static_assert(VFIO_DEVICE_DATA_STATE_RUNNING == 0 &&
	       VFIO_DEVICE_DATA_STATE_STOP == 1 &&
	       VFIO_DEVICE_DATA_STATE_LOGGING == 2 &&
	       VFIO_DEVICE_DATA_STATE_P2P == 4 &&
	       VFIO_DEVICE_DATA_STATE_MASK == 7, "states");
_Static_assert(VFIO_DEVICE_DATA_CAP_DEVICE_MEMORY == 1 &&
	       VFIO_DEVICE_DATA_CAP_SYSTEM_MEMORY == 2 &&
	       VFIO_DEVICE_DATA_CAP_P2P == 4 &&
	       VFIO_DEVICE_DATA_ACTION_GET_BUFFER == 1 &&
	       VFIO_DEVICE_DATA_ACTION_SET_BUFFER == 2 &&
	       VFIO_DEVICE_DATA_ACTION_GET_BITMAP == 3 &&
	       VFIO_DEVICE_DATA_INTERFACE_VERSION == 1 &&
	       VFIO_DEVICE_DATA_VERSION_MAX == 4096, "values");
EOF
orig=$(git -C "$tree" rev-parse HEAD)
uapi_seen= kmod_seen= doc_seen=
for c in "${commits[@]}"; do
    subj=$(git -C "$tree" log -1 --format=%s "$c")
    git -C "$tree" checkout -q "$c"
    if grep -q VFIO_REGION_TYPE_DEVICE_STATE "$tree/include/uapi/linux/vfio.h"; then
        uapi_seen=1
        # What headers_install does to a uAPI header, for this one.
        sed -E -e 's/([[:space:](])(__user|__force|__iomem)[[:space:]]/\1/g' \
            "$tree/include/uapi/linux/vfio.h" > "$probe/include/linux/vfio.h"
        if err=$(gcc -std=gnu11 -Wall -Werror -fsyntax-only -I"$probe/include" "$probe/layout.c" 2>&1); then
            pass "after '$subj': the uAPI header compiles with the interface's names and layout"
        else
            fail "after '$subj': the uAPI header compiles with the interface's names and layout" \
                "$(head -n 5 <<< "$err")"
        fi
    fi
    if [ -f "$tree/samples/vfio-mdev/mdevstate.c" ]; then
        kmod_seen=1
        if env=$("$TOP/tooling/kmod-build.sh" --tree "$tree" --out "$kout" --print-env 2>> "$log"); then
            eval "$env"
            pass "after '$subj': mdevstate.ko builds out of tree with the series' vfio.h first"
        else
            fail "after '$subj': mdevstate.ko builds out of tree with the series' vfio.h first" \
                "$(tail -n 8 "$log")"
        fi
        grep -q "^config SAMPLE_VFIO_MDEV_DEVSTATE$" "$tree/samples/Kconfig" &&
            grep -q "CONFIG_SAMPLE_VFIO_MDEV_DEVSTATE.*mdevstate.o" "$tree/samples/vfio-mdev/Makefile" ||
            fail "after '$subj': samples/Kconfig and samples/vfio-mdev/Makefile know mdevstate"
    fi
    doc=$tree/Documentation/driver-api/vfio-device-state.rst
    if [ -f "$doc" ]; then
        doc_seen=1
        if err=$(python3 - "$doc" 2>&1 <<'PY'
import sys, docutils.core
docutils.core.publish_string(open(sys.argv[1]).read(), writer_name='null',
                             settings_overrides={'halt_level': 2, 'report_level': 2})
PY
        ) && grep -q '^   vfio-device-state$' "$tree/Documentation/driver-api/index.rst"; then
            pass "after '$subj': the documentation parses and is in the driver-api index"
        else
            fail "after '$subj': the documentation parses and is in the driver-api index" \
                "$(tail -n 3 <<< "$err")"
        fi
    fi
done
git -C "$tree" checkout -q "$orig"
[ -n "$uapi_seen" ] || fail "the series adds the device-state interface to include/uapi/linux/vfio.h"
[ -n "$kmod_seen" ] || fail "the series adds samples/vfio-mdev/mdevstate.c"
[ -n "$doc_seen" ] || fail "the series adds Documentation/driver-api/vfio-device-state.rst"

# The view
probs=()
mapfile -t created < <(git -C "$tree" diff --name-only --diff-filter=A upstream HEAD)
for f in "${created[@]}"; do
    if [ ! -f "$TOP/linux/$f" ]; then
        probs+=("linux/$f is missing")
    elif ! git -C "$tree" show "HEAD:$f" | cmp -s - "$TOP/linux/$f"; then
        probs+=("linux/$f differs from what the series creates")
    fi
done
while read -r f; do
    f=${f#"$TOP/linux/"}
    printf '%s\n' "${created[@]}" | grep -qxF "$f" || probs+=("linux/$f is not created by the series")
done < <(find "$TOP/linux" -path "$TOP/linux/patches" -prune -o -type f -print)
if [ ${#probs[@]} = 0 ]; then
    pass "the view (linux/) equals the files the series creates (${#created[@]} files)"
else
    fail "the view (linux/) equals the files the series creates" "${probs[@]}" \
        "(tooling/linux-export.sh refreshes it from .work/linux)"
fi

say "linux checks took $(since "$t0")s (log: $log)"
finish
