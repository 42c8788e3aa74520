#!/bin/bash
# SPDX-License-Identifier: GPL-2.0-or-later
# mktree.sh DIR: make DIR a QEMU git work tree: upstream as one commit
# (tagged 'upstream'), the series of patches/ applied with git am on top.
#
# The upstream comes from QEMU_SRC when set (a QEMU git checkout or a
# tarball), else from the pinned Debian tarball.
set -euo pipefail
. "$(dirname "$0")/lib.sh"

dir=${1:?usage: mktree.sh DIR}
src_id="${QEMU_SRC:-pinned:$UPSTREAM_SHA256}"
series_id=$(cat "$TOP"/patches/*.patch 2>/dev/null | sha256sum | cut -d' ' -f1)

# Nothing to do when DIR already holds this series on this upstream.
if [ "${MKTREE_FORCE:-}" != 1 ] &&
   [ "$(cat "$dir/.git/upstream-source" 2>/dev/null)" = "$src_id" ] &&
   [ "$(cat "$dir/.git/series-applied" 2>/dev/null)" = "$series_id" ] &&
   [ "$(git -C "$dir" rev-parse --abbrev-ref HEAD 2>/dev/null)" = series ] &&
   git -C "$dir" diff --quiet HEAD -- 2>/dev/null; then
    exit 0
fi

if [ -d "$dir/.git" ] && [ "$(cat "$dir/.git/upstream-source" 2>/dev/null)" = "$src_id" ]; then
    # Reuse the unpacked upstream (and the build directory inside it):
    # back to the upstream commit, then apply the series again.
    cd "$dir"
    git am --abort >/dev/null 2>&1 || true
    rm -f .git/series-applied
    git checkout -q -f -B series upstream
    git clean -q -fdx -e /build/
    desc=$(git log -1 --format=%s upstream)
else
    rm -rf "$dir"
    mkdir -p "$dir"
    if [ -n "${QEMU_SRC:-}" ]; then
        if [ -d "$QEMU_SRC/.git" ]; then
            say "exporting upstream from git checkout $QEMU_SRC (HEAD)"
            git -C "$QEMU_SRC" archive --format=tar HEAD | tar -x -C "$dir"
        elif [ -f "$QEMU_SRC" ]; then
            say "unpacking upstream from $QEMU_SRC"
            tar -x -f "$QEMU_SRC" -C "$dir" --strip-components=1
        else
            die "QEMU_SRC=$QEMU_SRC is neither a git checkout nor a tarball"
        fi
        desc="QEMU from $QEMU_SRC"
    else
        tarball=$("$TOP/tooling/fetch.sh")
        say "unpacking $(basename "$tarball")"
        tar -x -f "$tarball" -C "$dir" --strip-components=1
        desc="QEMU $(cat "$dir/VERSION") ($UPSTREAM_TARBALL, Debian $UPSTREAM_DEBVER)"
    fi

    cd "$dir"
    git init -q -b series
    git config user.name  "$(git -C "$TOP" config user.name  || echo 'vfio-devstate tooling')"
    git config user.email "$(git -C "$TOP" config user.email || echo 'tooling@localhost')"
    git config core.autocrlf false
    echo "/build/" >> .git/info/exclude
    git add -A -f .
    git commit -q -m "upstream: $desc" --no-verify
    git tag upstream
    echo "$src_id" > .git/upstream-source
fi

# Build workaround for Debian's +ds tarball, which strips the edk2 blobs
# that pc-bios/meson.build unpacks (Debian's skip-unpack-edk2-blobs.patch).
# It is kept out of the history: git ignores the edit (skip-worktree), so
# the series stays git-am-able onto pristine upstream.
if ! ls pc-bios/edk2-*.fd.bz2 >/dev/null 2>&1 &&
   grep -q '^if unpack_edk2_blobs$' pc-bios/meson.build; then
    sed -i 's/^if unpack_edk2_blobs$/if unpack_edk2_blobs and false/' pc-bios/meson.build
    git update-index --skip-worktree pc-bios/meson.build
fi

shopt -s nullglob
patches=()
for p in "$TOP"/patches/[0-9][0-9][0-9][0-9]-*.patch; do
    case $(basename "$p") in 0000-*) ;; *) patches+=("$p") ;; esac
done
if [ ${#patches[@]} -gt 0 ]; then
    say "applying ${#patches[@]} patches with git am"
    if ! git am -q --keep-cr "${patches[@]}"; then
        n=$(cat .git/rebase-apply/next 2>/dev/null || echo 1)
        cur=$(basename "${patches[$((n - 1))]}")
        git am --abort || true
        die "git am failed on $cur: the series does not apply onto $desc"
    fi
fi
git log --oneline upstream..HEAD >&2
echo "$series_id" > .git/series-applied
