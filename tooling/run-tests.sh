#!/bin/bash
# SPDX-License-Identifier: GPL-2.0-or-later
# run-tests.sh TREE: run the project's tests in TREE/build with meson and
# count them: every TAP test case of a test program counts once (a program
# without TAP output counts as one).  Prints "PASS  name" / "FAIL  name"
# lines and ends with "tests: N passed, N failed".
set -uo pipefail
. "$(dirname "$0")/lib.sh"

tree=${1:-$SERIES_TREE}
build=$tree/build
# Our suite and qtests, then upstream regressions: the migration-test smoke
# set (meson adds --full when QEMU has KVM; drop-full.sh takes it out) and
# device-introspect-test, which introspects every device type including
# vfio-pci and vfio-user-pci.
SUITES=(devstate)
TESTS=(
    qtest-x86_64/vfio-user-devstate-test
    qtest-x86_64/vfio-devstate-migration-test
    qtest-x86_64/device-introspect-test
    qtest-x86_64/migration-test
)
# RUN_TESTS_ONLY_DEVSTATE=1: the device-state tests alone (check.sh runs
# them so on the second base); RUN_TESTS_LABEL is appended to each name.
only_devstate=${RUN_TESTS_ONLY_DEVSTATE:-0}
label=${RUN_TESTS_LABEL:-}
if [ "$only_devstate" = 1 ]; then
    TESTS=(qtest-x86_64/vfio-user-devstate-test
           qtest-x86_64/vfio-devstate-migration-test)
fi
results=$WORK/test-results$(tr -c 'a-z0-9\n' '-' <<< "$label").txt

count() {  # count TESTLOG: PASS/FAIL lines for each TAP case
    python3 - "$1" "$label" <<'PY'
import json, re, sys
for line in open(sys.argv[1]):
    t = json.loads(line)
    name, res, out = t['name'], t['result'], t.get('stdout') or ''
    cases = re.findall(r'^(not ok|ok)\b[ \d-]*(.*)$', out, re.M)
    cases = [(s, d) for s, d in cases if '# SKIP' not in d]
    if not cases or res not in ('OK', 'EXPECTEDFAIL'):
        cases.append(('ok' if res in ('OK', 'SKIP', 'EXPECTEDFAIL')
                      else 'not ok', '(%s)' % res.lower()))
    for s, d in cases:
        print('%s  %s %s%s' % ('PASS' if s == 'ok' else 'FAIL', name, d.strip(),
                             sys.argv[2]))
PY
}

run() {  # run DESCRIPTION MESON-TEST-ARGS...: one meson test run, counted
    local what=$1
    shift
    say "running $what"
    # meson names the log after the wrapper when there is one
    # (testlog-drop-full.sh.json)
    rm -f "$build"/meson-logs/testlog*.json
    meson test -C "$build" --no-rebuild --print-errorlogs \
        --timeout-multiplier "${TIMEOUT_MULTIPLIER:-2}" "$@" >&2
    local rc=$?
    local log
    log=$(ls "$build"/meson-logs/testlog*.json 2>/dev/null | head -1)
    if [ -n "$log" ]; then
        count "$log"
    fi
    [ "$rc" = 0 ] || echo "FAIL  meson test $what (exit status $rc)$label"
}

have=$(meson test -C "$build" --list 2>/dev/null | sed 's/.* \/ //')
{
    for s in "${SUITES[@]}"; do
        run "suite $s" --suite "$s"
    done
    for t in "${TESTS[@]}"; do
        if [ "$t" = qtest-x86_64/migration-test ] && grep -qxF "$t" <<< "$have"; then
            # The smoke set, with or without KVM (tooling/drop-full.sh)
            run "$t" --wrapper "$TOP/tooling/drop-full.sh" "$t"
        elif grep -qxF "$t" <<< "$have"; then
            run "$t" "$t"
        else
            echo "FAIL  $t (not built: the test is missing from this tree)"
        fi
    done

    # --- virsh: the live migration and the incompatible case under
    # libvirt, run as a user runs them (tooling/virsh-test.sh; installs
    # libvirt from bookworm-backports, tears down what it starts) ---
    [ "$only_devstate" = 1 ] || "$TOP/tooling/virsh-test.sh" "$tree"
    # --- end virsh ---

    # --- kernel: the Linux series' sample mdev driver in a nested L2 guest
    # (TCG), in one boot: seed-003 management check, hostile VFIO uAPI
    # checks, the protocol client through a VFIO device fd, this tree's
    # QEMU with vfio-pci,sysfsdev=, the L2 kernel log
    # (tooling/kernel-tests.sh; fetches the pinned Debian kernel) ---
    [ "$only_devstate" = 1 ] ||
        "$TOP/tooling/kernel-tests.sh" \
            --client "$build/tests/vfio-user-devstate/devstate-client-test" \
            --qemu "$build/qemu-system-x86_64" | grep -v '^kernel tests: '
    # --- end kernel ---
} | tee "$results"
pass=$(grep -c '^PASS' "$results")
fail=$(grep -c '^FAIL' "$results")
echo "tests: $pass passed, $fail failed"
[ "$fail" = 0 ]
