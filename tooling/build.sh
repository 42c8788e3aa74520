#!/bin/bash
# SPDX-License-Identifier: GPL-2.0-or-later
# build.sh SRC [ninja targets...]: configure SRC/build once, then build
# incrementally with ninja (ccache is picked up by meson when installed).
# BUILD_DIR and EXTRA_CONFIGURE_ARGS select another build (e.g. ASan).
set -euo pipefail
. "$(dirname "$0")/lib.sh"

src=$(cd "${1:?usage: build.sh SRC [targets]}" && pwd)
shift
build=${BUILD_DIR:-$src/build}
mkdir -p "$CCACHE_DIR"
if [ ! -f "$build/build.ninja" ]; then
    say "configuring QEMU in $build"
    mkdir -p "$build"
    # shellcheck disable=SC2086
    (cd "$build" && "$src/configure" "${CONFIGURE_ARGS[@]}" \
        ${EXTRA_CONFIGURE_ARGS:-} > configure.log 2>&1) ||
        { tail -30 "$build/configure.log" >&2; die "configure failed (log: $build/configure.log)"; }
    # In a build tree QEMU looks for firmware in qemu-bundle; the +ds
    # tarball has none, so link Debian's seabios and iPXE ROMs there.
    fw=$build/qemu-bundle/usr/local/share/qemu
    mkdir -p "$fw"
    for f in /usr/share/seabios/*.bin /usr/lib/ipxe/qemu/*.rom \
             /usr/share/qemu/kvmvapic.bin; do
        [ -e "$f" ] && ln -sf "$f" "$fw/$(basename "$f")"
    done
fi
t0=$(date +%s)
say "building ${*:-all} in $build (ninja, $(nproc) jobs; a cold build takes ~5 min)"
ninja -C "$build" "$@" | awk '/^\[[0-9]+\/[0-9]+\]/ { n++; if (n % 200 == 0) { print "    " $1 " ..."; fflush() } next } { print }' >&2
rc=${PIPESTATUS[0]}
[ "$rc" = 0 ] || die "build failed in $build"
say "build done in $(since "$t0")s"
