#!/bin/bash
# SPDX-License-Identifier: GPL-2.0-or-later
# demo.sh [demo options]: run the live-migration demo on the series build
# (make demo builds it first).
set -euo pipefail
. "$(dirname "$0")/lib.sh"
[ -x "$SERIES_BUILD/qemu-system-x86_64" ] || die "no build at $SERIES_BUILD: run 'make demo'"
# --via virsh needs libvirt (from bookworm-backports).
prev=
for a in "$@"; do
    if [ "$a" = --via=virsh ] || { [ "$prev" = --via ] && [ "$a" = virsh ]; }; then
        "$TOP/tooling/deps-libvirt.sh"
    fi
    prev=$a
done
exec python3 "$TOP/tooling/demo.py" "$@"
