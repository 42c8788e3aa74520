#!/bin/bash
# SPDX-License-Identifier: GPL-2.0-or-later
# drop-full.sh PROGRAM ARGS...: run PROGRAM without its --full argument.
# meson passes --full to migration-test when QEMU has KVM and /dev/kvm is
# there (54 cases, about 18 minutes here); make check runs its smoke set.
args=()
for a in "$@"; do
    [ "$a" = --full ] || args+=("$a")
done
exec "${args[@]}"
