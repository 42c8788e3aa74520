# SPDX-License-Identifier: GPL-2.0-or-later
# Shared settings of the project's tooling.  Sourced, never run.

TOP=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
WORK=${WORK:-$TOP/.work}
CACHE=${VFIO_DEVSTATE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/vfio-devstate}

# The pinned upstream: Debian's orig tarball of qemu 1:10.2.2+ds-1.
UPSTREAM_PKG=qemu
UPSTREAM_DEBVER=1:10.2.2+ds-1
UPSTREAM_TARBALL=qemu_10.2.2+ds.orig.tar.xz
UPSTREAM_SHA256=be05230fe47a6937cd29f28f562932c8125f9c93c2a82c625198f7a4aa601dfb
UPSTREAM_SUITE=unstable

# The second base: upstream master at ece408818d27 (10.2.50), from the
# tarball in the project's shared/ folder, checked against its SHA256SUMS.
MASTER_TARBALL=${MASTER_TARBALL:-$TOP/../shared/upstream/qemu-ece408818d27.tar.xz}
MASTER_SHA256=204a11a3c2d530c17ffbbf48509eaf243641bdc4af3e28fa7ffbb0aa7a529951
MASTER_TREE=$WORK/series-master # the series on upstream master

SERIES_TREE=$WORK/series        # made from patches/ by make check/demo
SERIES_BUILD=$SERIES_TREE/build
DEV_TREE=$WORK/qemu             # the developer's work tree (make tree)
DEV_BUILD=$DEV_TREE/build

export CCACHE_DIR=${CCACHE_DIR:-$CACHE/ccache}
# Share cache hits between the work trees (series, dev, worktrees).
export CCACHE_BASEDIR=${CCACHE_BASEDIR:-$WORK}
export CCACHE_NOHASHDIR=1

CONFIGURE_ARGS=(
    --target-list=x86_64-softmmu
    --without-default-features
    --disable-download
    --python=/usr/bin/python3
    --disable-install-blobs
    --enable-tcg
    --enable-kvm
    --enable-slirp
    --enable-fdt=system
)
# QEMU's configure names the compiler itself, so meson does not add ccache
# on its own: ask for it (the cache is shared between the trees).
if command -v ccache >/dev/null; then
    CONFIGURE_ARGS+=(--cc="ccache cc")
fi

say()  { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }
die()  { printf 'error: %s\n' "$*" >&2; exit 1; }

# Seconds since an epoch value, for progress lines.
since() { echo $(( $(date +%s) - $1 )); }
