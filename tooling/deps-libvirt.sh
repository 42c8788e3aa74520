#!/bin/bash
# SPDX-License-Identifier: GPL-2.0-or-later
# Install libvirt for the virsh path of the demo and tests (demo --via virsh,
# tooling/virsh-test.sh): the monolithic libvirtd, its QEMU driver and virsh,
# from bookworm-backports (libvirt 11.3), without recommends (no default
# network, no dnsmasq, no swtpm).  Idempotent: does nothing when installed.
#
# Note: from backports this upgrades systemd/libudev to 254, pulls Debian's
# qemu-system-x86 (a dependency of the QEMU driver; the project does not use
# it) and upgrades seabios to 1.16.3, which is the firmware the project's
# builds link (tooling/build.sh).  No systemd is needed to run libvirtd.
set -euo pipefail
. "$(dirname "$0")/lib.sh"
"$TOP/tooling/deps.sh"          # adds bookworm-backports to apt if absent

PKGS=(libvirt-daemon libvirt-daemon-driver-qemu libvirt-clients)
MIN_VERSION=11.3                # tested with 11.3.0-2~bpo12+1

have() {
    local p
    for p in "${PKGS[@]}"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'ok installed' ||
            return 1
    done
    command -v virsh >/dev/null && [ -x /usr/sbin/libvirtd ] &&
        dpkg --compare-versions "$(dpkg-query -W -f='${Version}' libvirt-daemon)" \
            ge "$MIN_VERSION"
}
have && exit 0
[ "$(id -u)" = 0 ] || die "libvirt missing (${PKGS[*]} >= $MIN_VERSION from bookworm-backports); run as root or install it"
say "installing libvirt from bookworm-backports: ${PKGS[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get -o DPkg::Lock::Timeout=600 update -q
apt-get -o DPkg::Lock::Timeout=600 install -y -q --no-install-recommends \
    -t bookworm-backports "${PKGS[@]}"
have || die "libvirt >= $MIN_VERSION not available after install"
