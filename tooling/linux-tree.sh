#!/bin/bash
# SPDX-License-Identifier: GPL-2.0-or-later
# linux-tree.sh: the Linux work tree of the kernel path: Debian's
# linux-source-6.12 of the pinned version (tooling/kernel-pkgs.sh) as one
# commit, tagged "upstream", with the Linux series (linux/patches/) applied
# on top with git am.
#
#   tooling/linux-tree.sh [--dir DIR] [--reset]    (default DIR: .work/linux)
#
# An existing tree is reused while it holds exactly the series as last
# applied or exported.  When linux/patches/ changed, a tree without work
# of its own is re-applied; a tree with commits or changes that are not
# in linux/patches/ is left alone (export them with tooling/linux-export.sh,
# or pass --reset to throw them away; --reset always applies the series
# afresh).  Prints the tree's path.
set -euo pipefail
. "$(dirname "$0")/lib.sh"

dir=$WORK/linux
reset=
while [ $# -gt 0 ]; do
    case $1 in
        --dir) dir=$2; shift 2 ;;
        --reset) reset=1; shift ;;
        *) die "usage: $0 [--dir DIR] [--reset]" ;;
    esac
done

patches=("$TOP"/linux/patches/0*.patch)
[ -e "${patches[0]}" ] || die "no Linux series in $TOP/linux/patches"
series_sum=$(cat "${patches[@]}" | sha256sum | cut -d' ' -f1)
stamp=$dir/.git/vfio-devstate-series      # "SERIES_SUM HEAD" when applied

tree_current() {
    [ -f "$stamp" ] || return 1
    read -r sum head < "$stamp"
    [ "$sum" = "$series_sum" ] && [ "$head" = "$(git -C "$dir" rev-parse HEAD)" ] &&
        git -C "$dir" diff --quiet HEAD --
}

tree_clean() {   # HEAD is what was last applied or exported, no changes
    [ -f "$stamp" ] || return 1
    read -r _ head < "$stamp"
    [ "$head" = "$(git -C "$dir" rev-parse HEAD)" ] && git -C "$dir" diff --quiet HEAD --
}

if [ -d "$dir/.git" ] && git -C "$dir" rev-parse -q --verify upstream >/dev/null; then
    if [ -z "$reset" ] && tree_current; then
        echo "$dir"
        exit 0
    fi
    if [ -z "$reset" ] && ! tree_clean; then
        die "$dir has work that is not in linux/patches/ (export it with tooling/linux-export.sh, or rerun with --reset to discard it)"
    fi
else
    [ ! -e "$dir" ] || [ -n "$reset" ] ||
        die "$dir exists but is not a Linux work tree (remove it or pass --reset)"
    rm -rf "$dir"
    eval "$("$TOP/tooling/kernel-pkgs.sh" --print-env)"
    say "unpacking $(basename "$KSRC_TARBALL") into $dir"
    t0=$(date +%s)
    tmp=$(mktemp -d "$WORK/.linux-src.XXXXXX")
    tar -xJf "$KSRC_TARBALL" -C "$tmp"
    src=$(find "$tmp" -mindepth 1 -maxdepth 1 -type d | head -1)
    [ -n "$src" ] && [ -f "$src/Makefile" ] || die "$KSRC_TARBALL: no kernel tree inside"
    mkdir -p "$(dirname "$dir")"
    mv "$src" "$dir"
    rmdir "$tmp"
    cd "$dir"
    git init -q
    git config user.name "$(git -C "$TOP" config user.name)"
    git config user.email "$(git -C "$TOP" config user.email)"
    # Debian's tarball has a .gitignore that ignores its whole top level.
    nice -n 10 git add -f -A
    lver=$(awk '$1 == "VERSION" { v = $3 } $1 == "PATCHLEVEL" { p = $3 }
                $1 == "SUBLEVEL" { s = $3 } END { print v "." p "." s }' Makefile)
    git commit -q -m "Linux $lver: Debian's linux-source-6.12 $(sed -n 's/^KPKGVER=//p' "$TOP/tooling/kernel-pkgs.sh")"
    git tag upstream
    say "Linux tree unpacked in $(since "$t0")s"
fi

cd "$dir"
git am --abort >/dev/null 2>&1 || true
git checkout -q -f -B series upstream
git clean -q -fdx -e .git
say "applying the Linux series (${#patches[@]} patches)"
git am -q --whitespace=error-all "${patches[@]}" ||
    { git am --abort >/dev/null 2>&1 || true; die "the Linux series does not apply with git am onto upstream"; }
echo "$series_sum $(git rev-parse HEAD)" > "$stamp"
echo "$dir"
