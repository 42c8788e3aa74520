#!/bin/bash
# SPDX-License-Identifier: GPL-2.0-or-later
# bench.sh [bench options]: measure device-state migration against guest-RAM
# migration on the series build (make bench builds it first).  SERIES_TREE
# in the environment selects another built tree, e.g. .work/qemu.
set -euo pipefail
tree=${SERIES_TREE:-}
. "$(dirname "$0")/lib.sh"
SERIES_TREE=${tree:-$SERIES_TREE}
SERIES_BUILD=$SERIES_TREE/build
export SERIES_TREE
[ -x "$SERIES_BUILD/qemu-system-x86_64" ] || die "no build at $SERIES_BUILD: run 'make bench'"
[ -x "$SERIES_BUILD/tests/vfio-user-devstate/vfio-user-devstate" ] ||
    die "no reference device in $SERIES_BUILD: run 'make bench'"
# Debian's python: apt's python3-matplotlib is for it (a python3 earlier in
# PATH, e.g. pyenv's, would not see it).
PY=${BENCH_PYTHON:-/usr/bin/python3}
if ! "$PY" -c 'import matplotlib' 2>/dev/null; then
    say "installing python3-matplotlib (for the plot)"
    apt-get install -y python3-matplotlib >/dev/null ||
        die "cannot install python3-matplotlib"
fi
exec "$PY" "$TOP/tooling/bench.py" "$@"
