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
# Our suites, then upstream regressions: the migration-test smoke set
# (TCG only: meson passes --full only with KVM) and device-introspect-test,
# which introspects every device type including vfio-pci and vfio-user-pci.
WANT=(
    devstate
    qtest-x86_64/vfio-user-devstate-test
    qtest-x86_64/vfio-devstate-migration-test
    qtest-x86_64/device-introspect-test
    qtest-x86_64/migration-test
)
have=$(meson test -C "$build" --list 2>/dev/null | sed 's/.* \/ //')
args=()
missing=0
for t in "${WANT[@]}"; do
    if [[ $t == */* ]]; then
        if grep -qxF "$t" <<< "$have"; then
            args+=("$t")
        else
            echo "FAIL  $t (not built: the test is missing from this tree)"
            missing=$((missing + 1))
        fi
    else
        args+=(--suite "$t")
    fi
done
say "running tests: ${WANT[*]}"
meson test -C "$build" --no-rebuild --print-errorlogs \
    --timeout-multiplier "${TIMEOUT_MULTIPLIER:-2}" "${args[@]}" >&2
mrc=$?
python3 - "$build/meson-logs/testlog.json" "$missing" <<'PY'
import json, re, sys
passed, failed = 0, int(sys.argv[2])
for line in open(sys.argv[1]):
    t = json.loads(line)
    name, res, out = t['name'], t['result'], t.get('stdout') or ''
    cases = re.findall(r'^(not ok|ok)\b[ \d-]*(.*)$', out, re.M)
    cases = [(s, d) for s, d in cases if '# SKIP' not in d]
    if not cases or res not in ('OK', 'EXPECTEDFAIL'):
        cases.append(('ok' if res in ('OK', 'SKIP', 'EXPECTEDFAIL') else 'not ok', '(%s)' % res.lower()))
    for s, d in cases:
        ok = s == 'ok'
        passed += ok
        failed += not ok
        print('%s  %s %s' % ('PASS' if ok else 'FAIL', name, d.strip()))
print('tests: %d passed, %d failed' % (passed, failed))
sys.exit(1 if failed else 0)
PY
prc=$?
[ "$mrc" = 0 ] && [ "$prc" = 0 ]
