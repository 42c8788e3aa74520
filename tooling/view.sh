#!/bin/bash
# SPDX-License-Identifier: GPL-2.0-or-later
# view.sh refresh|check TREE: the read-only view (hw/ include/
# linux-headers/ tests/ docs/ in the project) holds every file that the
# series in TREE creates, as it stands after the last patch.  'refresh'
# rewrites it, 'check' fails naming each file that differs.
set -euo pipefail
. "$(dirname "$0")/lib.sh"

mode=${1:?usage: view.sh refresh|check TREE}
tree=${2:?usage: view.sh refresh|check TREE}
VIEW_DIRS=(hw include linux-headers tests docs)

created=$(git -C "$tree" diff --name-only --diff-filter=A upstream HEAD)
for f in $created; do
    case "${f%%/*}" in
        hw|include|linux-headers|tests|docs) ;;
        *) die "the series creates $f outside the view directories" ;;
    esac
done

case $mode in
refresh)
    for d in "${VIEW_DIRS[@]}"; do rm -rf "${TOP:?}/$d"; done
    for f in $created; do
        mkdir -p "$TOP/$(dirname "$f")"
        git -C "$tree" show "HEAD:$f" > "$TOP/$f"
        chmod a-w "$TOP/$f"
    done
    ;;
check)
    bad=0
    for f in $created; do
        if [ ! -f "$TOP/$f" ]; then
            echo "view: $f is created by the series but missing from the view" >&2; bad=1
        elif ! git -C "$tree" show "HEAD:$f" | cmp -s - "$TOP/$f"; then
            echo "view: $f differs from what the series creates (edited by hand?)" >&2; bad=1
        fi
    done
    for d in "${VIEW_DIRS[@]}"; do
        [ -d "$TOP/$d" ] || continue
        while IFS= read -r f; do
            f=${f#"$TOP"/}
            grep -qxF "$f" <<< "$created" ||
                { echo "view: $f is not created by the series" >&2; bad=1; }
        done < <(find "$TOP/$d" -type f)
    done
    exit $bad
    ;;
*) die "unknown mode $mode" ;;
esac
