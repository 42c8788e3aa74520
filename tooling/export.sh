#!/bin/bash
# SPDX-License-Identifier: GPL-2.0-or-later
# export.sh: write the series of the developer's work tree (.work/qemu,
# upstream..series) back into patches/ with a cover letter, and refresh
# the read-only view of the files the series creates.
set -euo pipefail
. "$(dirname "$0")/lib.sh"

tree=$(cd "${1:-$DEV_TREE}" 2>/dev/null && pwd) || die "no work tree at ${1:-$DEV_TREE}: run 'make tree' first"
[ -d "$tree/.git" ] || die "no work tree at $tree: run 'make tree' first"
cd "$tree"
git diff --quiet HEAD -- || die "$tree has uncommitted changes; commit them into a patch first"
n=$(git rev-list --count upstream..HEAD)
[ "$n" -gt 0 ] || die "$tree has no patches on top of upstream"

out=$(mktemp -d)
git format-patch -q --zero-commit --no-signature --cover-letter \
    -o "$out" upstream..HEAD
# The cover letter's subject and blurb live in tooling/cover-letter.txt
# (first line: subject; the rest: the body).
python3 - "$out"/0000-cover-letter.patch "$TOP/tooling/cover-letter.txt" <<'PY'
import sys
path, blurb = sys.argv[1], open(sys.argv[2]).read().rstrip('\n').split('\n', 1)
s = open(path).read()
s = s.replace('*** SUBJECT HERE ***', blurb[0], 1)
s = s.replace('*** BLURB HERE ***', blurb[1].strip('\n') if len(blurb) > 1 else '', 1)
open(path, 'w').write(s)
PY
rm -f "$TOP"/patches/*.patch
mkdir -p "$TOP/patches"
cp "$out"/*.patch "$TOP/patches/"
rm -rf "$out"

# The view: every file the series creates, as of the last patch.
"$TOP/tooling/view.sh" refresh "$tree"
say "exported $n patches to patches/ and refreshed the view"
