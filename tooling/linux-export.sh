#!/bin/bash
# SPDX-License-Identifier: GPL-2.0-or-later
# linux-export.sh: write the Linux series of a work tree (default
# .work/linux, upstream..HEAD) back into linux/patches/ and refresh the
# view of the files it creates (linux/<path>, e.g.
# linux/samples/vfio-mdev/mdevstate.c).
#
#   tooling/linux-export.sh [TREE]
set -euo pipefail
. "$(dirname "$0")/lib.sh"

tree=${1:-$WORK/linux}
[ -d "$tree/.git" ] || die "no Linux work tree at $tree: run tooling/linux-tree.sh first"
cd "$tree"
git rev-parse -q --verify upstream >/dev/null || die "$tree has no 'upstream' tag"
git diff --quiet HEAD -- || die "$tree has uncommitted changes; commit them into a patch first"
n=$(git rev-list --count upstream..HEAD)
[ "$n" -gt 0 ] || die "$tree has no patches on top of upstream"

out=$(mktemp -d)
git format-patch -q --zero-commit --no-signature -o "$out" upstream..HEAD
rm -f "$TOP"/linux/patches/*.patch
mkdir -p "$TOP/linux/patches"
mv "$out"/*.patch "$TOP/linux/patches/"
rmdir "$out"

# The view: every file the series creates, as of its last patch.
find "$TOP/linux" -mindepth 1 -maxdepth 1 ! -name patches -exec rm -rf {} +
git diff --name-only --diff-filter=A upstream HEAD | while read -r f; do
    mkdir -p "$TOP/linux/$(dirname "$f")"
    git show "HEAD:$f" > "$TOP/linux/$f"
done

# The tree now holds exactly the exported series.
sum=$(cat "$TOP"/linux/patches/0*.patch | sha256sum | cut -d' ' -f1)
echo "$sum $(git rev-parse HEAD)" > .git/vfio-devstate-series
say "exported $n patches to linux/patches/ and refreshed the view"
ls "$TOP/linux/patches"
