#!/bin/bash
# SPDX-License-Identifier: GPL-2.0-or-later
# gen-linux-headers.sh: QEMU's linux-headers patch for the device-state
# region interface, generated the way QEMU takes every header update: with
# its scripts/update-linux-headers.sh run against a Linux tree, here the
# pinned linux-source-6.12 with the Linux series (linux/patches/) applied.
#
#   tooling/gen-linux-headers.sh [--qemu TREE] [--out FILE] [--check PATCH]
#
#   --qemu TREE   QEMU git tree with an "upstream" tag whose
#                 scripts/update-linux-headers.sh and
#                 linux-headers/linux/vfio.h are used, read only
#                 (default .work/qemu)
#   --out FILE    where to write the patch (default
#                 .work/gen-linux-headers/linux-headers-vfio.patch)
#   --check PATCH instead of writing, check that PATCH (e.g. the series'
#                 patches/0001-*.patch) changes linux-headers/linux/vfio.h
#                 exactly as generated; prints PASS/FAIL
#
# The script is run twice, into temporary directories: against the Linux
# tree at its base and with the series applied.  The difference between the
# two linux/vfio.h it produces is what the series adds; as QEMU series do
# for a header that is not upstream yet, only that hunk is kept, applied to
# QEMU's own linux-headers/linux/vfio.h (the rest of a 6.12 update would
# take QEMU's newer headers back).  QEMU 10.2's script also copies
# linux/mshv.h, which 6.12 does not have: it stops there, after vfio.h is
# written; any other failure is an error.  The base run is cached.
set -euo pipefail
. "$(dirname "$0")/lib.sh"

qemu=$DEV_TREE
outfile=$WORK/gen-linux-headers/linux-headers-vfio.patch
check=
while [ $# -gt 0 ]; do
    case $1 in
        --qemu) qemu=$2; shift 2 ;;
        --out) outfile=$2; shift 2 ;;
        --check) check=$2; shift 2 ;;
        *) die "usage: $0 [--qemu TREE] [--out FILE] [--check PATCH]" ;;
    esac
done
script=$qemu/scripts/update-linux-headers.sh
[ -x "$script" ] || die "$script is missing or not executable (is $qemu a QEMU tree?)"
git -C "$qemu" rev-parse -q --verify upstream >/dev/null ||
    die "$qemu has no 'upstream' tag (make tree makes one)"
[ -z "$check" ] || [ -f "$check" ] || die "--check $check: no such file"

need=()
for c in make:make gcc:gcc rsync:rsync patch:patch; do
    command -v "${c%%:*}" >/dev/null || need+=("${c#*:}")
done
if [ ${#need[@]} -gt 0 ]; then
    [ "$(id -u)" = 0 ] || die "missing packages: ${need[*]} (apt-get install them as root)"
    say "installing ${need[*]}"
    DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 install -y -q "${need[@]}" >&2 ||
        die "apt-get install ${need[*]} failed"
fi

gen=$WORK/gen-linux-headers
mkdir -p "$gen"
linux=$("$TOP/tooling/linux-tree.sh" --dir "$WORK/linux-headers-src" | tail -1)
base_commit=$(git -C "$linux" rev-parse upstream)
series_commit=$(git -C "$linux" rev-parse HEAD)
script_sum=$(sha256sum "$script" | cut -d' ' -f1)

# run_script COMMIT OUT: linux/vfio.h as the script produces it at COMMIT
run_script() {
    local commit=$1 dest=$2 tmp rc
    tmp=$(mktemp -d "$gen/.run.XXXXXX")
    git -C "$linux" checkout -q "$commit"
    mkdir -p "$tmp/out" "$tmp/tmp"
    say "running QEMU's update-linux-headers.sh on the Linux tree at ${commit:0:12}"
    rc=0
    (cd "$tmp" && TMPDIR=$tmp/tmp nice -n 10 "$script" "$linux" "$tmp/out") > "$tmp/log" 2>&1 || rc=$?
    git -C "$linux" checkout -q series
    if [ "$rc" != 0 ]; then
        # 6.12 has no linux/mshv.h, the last header the script copies
        # into linux-headers/linux/; anything else is a real failure.
        if ! tail -n 1 "$tmp/log" | grep -q "mshv.h': No such file or directory" ||
           grep -v mshv.h "$tmp/log" | grep -qE "^(cp|sed|grep|make|Unexpected).*(cannot|No such|Error|error|Unexpected)"; then
            tail -n 20 "$tmp/log" >&2
            rm -rf "$tmp"
            die "update-linux-headers.sh failed on ${commit:0:12} (see above)"
        fi
    fi
    [ -f "$tmp/out/linux-headers/linux/vfio.h" ] ||
        { rm -rf "$tmp"; die "update-linux-headers.sh wrote no linux-headers/linux/vfio.h"; }
    cp "$tmp/out/linux-headers/linux/vfio.h" "$dest"
    rm -rf "$tmp"
}

t0=$(date +%s)
base=$gen/vfio.h.base-${base_commit:0:12}-${script_sum:0:12}
[ -f "$base" ] || run_script "$base_commit" "$base"
series=$gen/vfio.h.series
run_script "$series_commit" "$series"

# What the series adds: additions only, in one hunk.
hunk=$gen/series.diff
diff -u --label a/linux/vfio.h --label b/linux/vfio.h "$base" "$series" > "$hunk" && 
    die "the series changes nothing in linux/vfio.h as update-linux-headers.sh produces it"
grep -q '^-[^-]' "$hunk" && die "the series removes lines from linux/vfio.h; expected additions only ($hunk)"
[ "$(grep -c '^@@' "$hunk")" = 1 ] || die "the series changes linux/vfio.h in more than one place ($hunk)"

# Apply that hunk to QEMU's own header, in a scratch repository, and make
# the QEMU patch there.
repo=$(mktemp -d "$gen/.repo.XXXXXX")
trap 'rm -rf "$repo"' EXIT
git -C "$repo" init -q
git -C "$repo" config user.name "$(git -C "$TOP" config user.name)"
git -C "$repo" config user.email "$(git -C "$TOP" config user.email)"
mkdir -p "$repo/linux-headers/linux"
git -C "$qemu" show upstream:linux-headers/linux/vfio.h > "$repo/linux-headers/linux/vfio.h"
git -C "$repo" add linux-headers/linux/vfio.h
git -C "$repo" commit -q -m "QEMU's linux-headers/linux/vfio.h"
patch -s --no-backup-if-mismatch -p1 -d "$repo/linux-headers" < "$hunk" ||
    die "the series' hunk does not apply to QEMU's linux-headers/linux/vfio.h ($hunk)"
git -C "$repo" add linux-headers/linux/vfio.h

subjects=$(git -C "$linux" log --reverse --format=%s upstream.."$series_commit")
lver=$(awk '$1 == "VERSION" { v = $3 } $1 == "PATCHLEVEL" { p = $3 }
            $1 == "SUBLEVEL" { s = $3 } END { print v "." p "." s }' "$linux/Makefile")
debver=$(sed -n 's/^KPKGVER=//p' "$TOP/tooling/kernel-pkgs.sh")
git -C "$repo" commit -q -s -F - <<EOF
linux-headers: vfio: add the device-state region interface

Add the device-state region interface to linux-headers/linux/vfio.h: the
region type VFIO_REGION_TYPE_DEVICE_STATE with its five subtypes, struct
vfio_device_state_ctl (the control region), the VFIO_DEVICE_DATA_STATE_*
bits, the capabilities and the actions.

This is the output of scripts/update-linux-headers.sh run against a Linux
tree with this project's Linux series applied (linux/patches/), on Linux
$lver (Debian's linux-source-6.12 $debver):

$(sed 's/^/  /' <<< "$subjects")

The series is not upstream yet, so only the hunk that it adds to
linux/vfio.h is kept; the rest of the update, from a kernel older than
QEMU's headers, is not part of this patch.  Replace this patch with a
full headers update once the series is merged.
EOF
patch_out=$gen/.format
rm -rf "$patch_out"
git -C "$repo" format-patch -q --zero-commit --no-signature -1 -o "$patch_out"
generated=$(ls "$patch_out"/*.patch)

if [ -n "$check" ]; then
    # Compare the diffs (hunks of linux-headers/linux/vfio.h) only.
    hunks() { awk '/^diff --git/ { on = ($0 ~ /linux-headers\/linux\/vfio.h/) } on && /^(@@|[-+ ])/ && !/^(\+\+\+|---) / { print }' "$1" | sed '/^-- $/,$d'; }
    if cmp -s <(hunks "$generated") <(hunks "$check") &&
       [ "$(grep -c '^diff --git' "$check")" = 1 ]; then
        echo "PASS  linux-headers: $(basename "$check") is what update-linux-headers.sh makes of the Linux series"
    else
        echo "FAIL  linux-headers: $(basename "$check") is what update-linux-headers.sh makes of the Linux series"
        diff <(hunks "$generated") <(hunks "$check") | head -n 20 | sed 's/^/      /'
        rm -rf "$patch_out"
        exit 1
    fi
else
    mkdir -p "$(dirname "$outfile")"
    mv "$generated" "$outfile"
    say "wrote $outfile in $(since "$t0")s"
    echo "$outfile"
fi
rm -rf "$patch_out"
