#!/bin/bash
# SPDX-License-Identifier: GPL-2.0-or-later
# check-asan.sh: build the series tip with AddressSanitizer and
# UndefinedBehaviorSanitizer (QEMU and the reference device) in a build of
# its own, and run the device's protocol tests and the vfio qtests in it.
# Any sanitizer report fails the test that triggered it.
set -euo pipefail
. "$(dirname "$0")/lib.sh"

"$TOP/tooling/deps.sh"
"$TOP/tooling/mktree.sh" "$SERIES_TREE"
export BUILD_DIR=$SERIES_TREE/build-asan
export EXTRA_CONFIGURE_ARGS="--enable-asan --enable-ubsan"
"$TOP/tooling/build.sh" "$SERIES_TREE" qemu-system-x86_64 \
    tests/vfio-user-devstate/vfio-user-devstate \
    tests/vfio-user-devstate/devstate-client-test \
    tests/vfio-user-devstate/devstate-fuzz \
    tests/unit/vfio-devstate-stream-fuzz \
    tests/qtest/vfio-user-devstate-test \
    tests/qtest/vfio-devstate-migration-test
# Leaks of QEMU at exit are not what this looks for; everything else is.
export ASAN_OPTIONS=detect_leaks=0:abort_on_error=1
export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
say "running the device tests and the vfio qtests under ASan/UBSan"
# meson intersects --suite with test names: one run each.
meson test -C "$BUILD_DIR" --no-rebuild --print-errorlogs \
    --timeout-multiplier 4 --suite devstate
meson test -C "$BUILD_DIR" --no-rebuild --print-errorlogs \
    --timeout-multiplier 4 qtest-x86_64/vfio-user-devstate-test \
    qtest-x86_64/vfio-devstate-migration-test
