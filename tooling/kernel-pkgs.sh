#!/bin/bash
# SPDX-License-Identifier: GPL-2.0-or-later
# kernel-pkgs.sh: the pinned Debian kernel packages the kernel path builds
# and boots against (the L2 guest of tooling/l2-run.sh, the out-of-tree
# sample module of tooling/kmod-build.sh).
#
#   tooling/kernel-pkgs.sh              fetch, check, unpack; print KROOT
#   tooling/kernel-pkgs.sh --print-env  the same, then print shell
#                                       assignments (eval-able):
#       KVER         kernel release, 6.12.117+deb12-amd64
#       KROOT        the packages unpacked with dpkg -x (.work/kernel/root)
#       KHEADERS     KROOT/usr/src/linux-headers-KVER, make -C target
#       KIMAGE       KROOT/boot/vmlinuz-KVER
#       KCONFIG      KROOT/boot/config-KVER
#       KMODULES     KROOT/lib/modules/KVER (Debian's .ko.xz modules)
#       KSRC_TARBALL KROOT/usr/src/linux-source-6.12.tar.xz
#       BUSYBOX      KROOT/bin/busybox (static)
#
# Each .deb is fetched with apt-get download at its pinned version, checked
# against the SHA256 recorded below (from the archive's Packages entries)
# and kept in $CACHE/kernel/; the unpacked tree is reused while it matches
# the recorded hashes.  Runs apt-get update when the package lists do not
# know a pinned version yet (fresh machine).  Concurrent runs serialise on
# a lock.
set -euo pipefail
. "$(dirname "$0")/lib.sh"

KVER=6.12.117+deb12-amd64
KABI=6.12.117+deb12
KPKGVER=6.12.117-1~deb12u1

# package  version  sha256  file name in the cache
PKGS=(
    "linux-image-$KVER $KPKGVER 803d36a7cda13355ae8152122470288b2636f19f1cb58162dd9d8b408af9b1b4 linux-image-${KVER}_${KPKGVER}_amd64.deb"
    "linux-headers-$KVER $KPKGVER 8ee4c67f8399bc6f9aa1c5256d9d1b1b7eace76c7acca519e63f1b7df5fc4bd0 linux-headers-${KVER}_${KPKGVER}_amd64.deb"
    "linux-headers-$KABI-common $KPKGVER 0c70107dda266a9d26dc119d80a71589202b17fbf4d4ddf544681c89e2002742 linux-headers-${KABI}-common_${KPKGVER}_all.deb"
    "linux-kbuild-$KABI $KPKGVER 69761d1daf39e43485d278cc7066f77c15edc3b881d6e47afd61cf0da0985677 linux-kbuild-${KABI}_${KPKGVER}_amd64.deb"
    "linux-source-6.12 $KPKGVER e849faf31ca3555757f3a8877cb01af92122f744f75d1f3102734651c4e14703 linux-source-6.12_${KPKGVER}_all.deb"
    "busybox-static 1:1.35.0-4+deb12u1+b1 3d3fdbe91d4660c873e14b092c213fe81c1da6362daa236eb25d0171eb108744 busybox-static_1.35.0-4+deb12u1+b1_amd64.deb"
)

print_env=
case "${1:-}" in
    --print-env) print_env=1 ;;
    "") ;;
    *) die "usage: $0 [--print-env]" ;;
esac

debs=$CACHE/kernel
kwork=$WORK/kernel
KROOT=$kwork/root
mkdir -p "$debs" "$kwork"

sha_ok() { echo "$1  $2" | sha256sum -c --quiet - >/dev/null 2>&1; }

# The apt lists know PACKAGE=VERSION (apt-get update once if they do not).
updated=
known() {
    apt-cache show "$1=$2" >/dev/null 2>&1 && return 0
    [ -z "$updated" ] || return 1
    [ "$(id -u)" = 0 ] || die "apt does not know $1=$2; run 'apt-get update' as root"
    say "apt-get update (the package lists do not know $1=$2)"
    apt-get -o DPkg::Lock::Timeout=600 update -q >&2 || die "apt-get update failed"
    updated=1
    apt-cache show "$1=$2" >/dev/null 2>&1
}

fetch() {  # fetch PACKAGE VERSION SHA256 FILE
    local pkg=$1 ver=$2 sum=$3 file=$4 tmp got
    if [ -f "$debs/$file" ] && sha_ok "$sum" "$debs/$file"; then
        return 0
    fi
    known "$pkg" "$ver" ||
        die "$pkg=$ver: not in the apt archive's lists (is bookworm-security in /etc/apt/sources?)"
    say "fetching $pkg=$ver"
    tmp=$(mktemp -d "$debs/.dl.XXXXXX")
    # The cache may be in a home directory that user _apt cannot enter;
    # the download is checked against its hash anyway.
    (cd "$tmp" && apt-get download -q -o APT::Sandbox::User=root "$pkg=$ver" >&2) || {
        rm -rf "$tmp"
        die "apt-get download $pkg=$ver failed"
    }
    got=$(find "$tmp" -maxdepth 1 -name '*.deb' | head -1)
    [ -n "$got" ] || { rm -rf "$tmp"; die "apt-get download $pkg=$ver left no .deb"; }
    if ! sha_ok "$sum" "$got"; then
        local actual
        actual=$(sha256sum "$got" | cut -d' ' -f1)
        rm -rf "$tmp"
        die "$pkg=$ver: sha256 mismatch: got $actual, recorded $sum"
    fi
    mv "$got" "$debs/$file"
    rm -rf "$tmp"
}

command -v dpkg-deb >/dev/null || die "dpkg-deb is missing (this is meant for Debian)"

exec 9> "$kwork/.lock"
flock 9

t0=$(date +%s)
{ exec 8> "$debs/.lock" && flock 8; } || die "cannot lock $debs"
for p in "${PKGS[@]}"; do
    # shellcheck disable=SC2086
    fetch $p
done
flock -u 8

# The unpacked tree is valid while its stamp lists the same hashes.
want=$(printf '%s\n' "${PKGS[@]}" | awk '{print $3, $4}')
stamp=$KROOT/.vfio-devstate-unpacked
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
    say "unpacking the kernel packages into $KROOT"
    rm -rf "$KROOT"
    mkdir -p "$KROOT"
    for p in "${PKGS[@]}"; do
        # shellcheck disable=SC2086
        set -- $p
        dpkg -x "$debs/$4" "$KROOT"
    done
    # Debian's headers Makefile includes the -common Makefile by its
    # installed absolute path; point it at the unpacked one.
    hdr=$KROOT/usr/src/linux-headers-$KVER
    grep -q "^include /usr/src/linux-headers-$KABI-common/Makefile" "$hdr/Makefile" ||
        die "$hdr/Makefile: unexpected contents (no include of the -common Makefile)"
    sed -i "s|^include /usr/src/linux-headers-$KABI-common/Makefile|include $KROOT/usr/src/linux-headers-$KABI-common/Makefile|" \
        "$hdr/Makefile"
    ln -sfn "$hdr" "$KROOT/lib/modules/$KVER/build"
    echo "$want" > "$stamp"
    say "kernel packages ready in $(since "$t0")s"
fi

KHEADERS=$KROOT/usr/src/linux-headers-$KVER
KIMAGE=$KROOT/boot/vmlinuz-$KVER
KCONFIG=$KROOT/boot/config-$KVER
KMODULES=$KROOT/lib/modules/$KVER
KSRC_TARBALL=$KROOT/usr/src/linux-source-6.12.tar.xz
BUSYBOX=$KROOT/bin/busybox
for f in "$KHEADERS/Makefile" "$KIMAGE" "$KCONFIG" "$KMODULES/kernel/drivers/vfio/vfio.ko.xz" \
         "$KSRC_TARBALL" "$BUSYBOX"; do
    [ -e "$f" ] || die "$f missing after unpacking (remove $KROOT and retry)"
done

if [ -n "$print_env" ]; then
    for v in KVER KROOT KHEADERS KIMAGE KCONFIG KMODULES KSRC_TARBALL BUSYBOX; do
        printf '%s=%q\n' "$v" "${!v}"
    done
else
    echo "$KROOT"
fi
