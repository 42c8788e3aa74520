#!/bin/bash
# SPDX-License-Identifier: GPL-2.0-or-later
# Fetch the pinned upstream QEMU (Debian's orig tarball, with Debian's own
# client) into the cache and check its hash.  Prints the tarball's path.
set -euo pipefail
. "$(dirname "$0")/lib.sh"

dir=$CACHE/upstream
tarball=$dir/$UPSTREAM_TARBALL
check() { echo "$UPSTREAM_SHA256  $1" | sha256sum -c --quiet - >/dev/null 2>&1; }

if [ -f "$tarball" ] && check "$tarball"; then
    echo "$tarball"
    exit 0
fi
mkdir -p "$dir"
say "fetching $UPSTREAM_PKG $UPSTREAM_DEBVER source from Debian (about 39 MB)"
t0=$(date +%s)
(cd "$dir" && apt-get source -q --download-only "$UPSTREAM_PKG=$UPSTREAM_DEBVER" >&2) ||
    die "apt-get source failed: is the deb-src entry for '$UPSTREAM_SUITE' there? (make deps adds it)"
check "$tarball" ||
    die "$tarball: sha256 mismatch, expected $UPSTREAM_SHA256"
say "fetched and verified in $(since "$t0")s"
echo "$tarball"
