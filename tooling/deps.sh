#!/bin/bash
# SPDX-License-Identifier: GPL-2.0-or-later
# Install the Debian packages the build, tests and demo need.  Idempotent:
# does nothing when everything is there.
set -euo pipefail
. "$(dirname "$0")/lib.sh"

PKGS=(build-essential git ccache ninja-build pkg-config flex bison
      libglib2.0-dev libpixman-1-dev libslirp-dev libfdt-dev
      device-tree-compiler seabios ipxe-qemu python3-venv
      python3-setuptools dpkg-dev xz-utils)
BPO_PKGS=(meson python3-pycotap)

missing=()
for p in "${PKGS[@]}" "${BPO_PKGS[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'ok installed' ||
        missing+=("$p")
done
meson_ok() {
    command -v meson >/dev/null &&
        dpkg --compare-versions "$(meson --version)" ge 1.5
}
meson_ok || missing+=(meson)

# The fetch needs a deb-src entry for the suite that carries the pinned
# source package, and meson/pycotap come from bookworm-backports.
src=/etc/apt/sources.list.d/vfio-devstate.sources
if [ ! -f "$src" ]; then
    say "adding bookworm-backports and $UPSTREAM_SUITE deb-src to apt"
    cat > "$src" <<EOS
Types: deb deb-src
URIs: http://deb.debian.org/debian
Suites: bookworm-backports
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb-src
URIs: http://deb.debian.org/debian
Suites: $UPSTREAM_SUITE
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
EOS
    need_update=1
fi

if [ ${#missing[@]} -eq 0 ] && [ -z "${need_update:-}" ]; then
    exit 0
fi
[ "$(id -u)" = 0 ] || die "missing packages (${missing[*]}); run as root or install them"
say "installing: ${missing[*]:-(apt sources only)}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -q
if [ ${#missing[@]} -gt 0 ]; then
    apt-get install -y -q -t bookworm-backports "${BPO_PKGS[@]}"
    apt-get install -y -q "${PKGS[@]}"
fi
meson_ok || die "meson >= 1.5 not available after install"
