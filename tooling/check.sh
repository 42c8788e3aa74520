#!/bin/bash
# SPDX-License-Identifier: GPL-2.0-or-later
# check.sh: the project's whole check, on a pristine upstream tree.
#   1. the series applies with git am;
#   2. checkpatch reports no error on any patch;
#   3. every patch builds on its own (incrementally, one after the other);
#   4. the view equals what the series creates;
#   5. every test runs (tooling/run-tests.sh);
#   6. the fuzzers run for a short while (tooling/fuzz.sh).
# Ends with "N passed, N failed" and exits non-zero on any failure.
set -uo pipefail
. "$(dirname "$0")/lib.sh"

pass=0
fail=0
failed=()
result() {  # result NAME RC
    if [ "$2" = 0 ]; then
        pass=$((pass + 1)); printf 'PASS  %s\n' "$1"
    else
        fail=$((fail + 1)); failed+=("$1"); printf 'FAIL  %s\n' "$1"
    fi
}
finish() {
    [ ${#failed[@]} -eq 0 ] || { echo "failed:"; printf '  %s\n' "${failed[@]}"; }
    echo "$pass passed, $fail failed"
    [ "$fail" = 0 ]
    exit
}

"$TOP/tooling/deps.sh" || die "could not install the build dependencies"

# 1. Apply.
"$TOP/tooling/mktree.sh" "$SERIES_TREE"
result "series applies with git am onto upstream" $?
[ "$fail" = 0 ] || finish
cd "$SERIES_TREE"
mapfile -t commits < <(git rev-list --reverse upstream..series)
mapfile -t files < <(ls "$TOP"/patches/[0-9][0-9][0-9][0-9]-*.patch | grep -v '/0000-')

# 2. checkpatch, on the patch files as they are in patches/.
for p in "${files[@]}"; do
    out=$(perl scripts/checkpatch.pl --no-color "$p" 2>&1)
    errors=$(sed -n 's/^total: \([0-9]*\) errors.*/\1/p' <<< "$out")
    warnings=$(sed -n 's/^total: [0-9]* errors, \([0-9]*\) warnings.*/\1/p' <<< "$out")
    if [ "${errors:-1}" != 0 ]; then
        grep -A3 '^ERROR' <<< "$out" | head -40
    fi
    [ "${warnings:-0}" = 0 ] || grep '^WARNING' <<< "$out" | sed 's/^/      /'
    result "checkpatch: $(basename "$p") (${errors:-?} errors, ${warnings:-?} warnings)" \
        "$([ "${errors:-1}" = 0 ] && echo 0 || echo 1)"
done

# 3. Each patch builds on its own.  A tree that built once is not built
# again (the stamp is keyed by the git tree hash).
stamp=$WORK/built-trees
touch "$stamp"
builds_alone() {  # builds_alone TREE LABEL
    local tree=$1 label=$2 i c t name log
    local -a cs
    mapfile -t cs < <(git -C "$tree" rev-list --reverse upstream..series)
    for i in "${!cs[@]}"; do
        c=${cs[$i]}
        name=$(basename "${files[$i]:-$c}")
        t=$(git -C "$tree" rev-parse "$c^{tree}")
        if grep -qx "$t" "$stamp"; then
            result "builds alone$label: $name (cached)" 0
            continue
        fi
        git -C "$tree" checkout -q "$c"
        log=build${label// /-}-$i.log
        if "$TOP/tooling/build.sh" "$tree" > "$WORK/$log" 2>&1; then
            echo "$t" >> "$stamp"
            result "builds alone$label: $name" 0
        else
            grep -E 'error|FAILED' "$WORK/$log" | head -20
            result "builds alone$label: $name (log: .work/$log)" 1
        fi
    done
    git -C "$tree" checkout -q series
}
builds_alone "$SERIES_TREE" ""

# 3b. The same on upstream master: the series goes to qemu-devel against
# it.  Its tarball lives in the project's shared/ folder.
master=1
if [ ! -f "$MASTER_TARBALL" ]; then
    echo "no upstream master tarball at $MASTER_TARBALL (set MASTER_TARBALL)"
    result "upstream master tarball is there" 1
    master=0
elif ! echo "$MASTER_SHA256  $MASTER_TARBALL" | sha256sum -c --quiet - >/dev/null 2>&1; then
    result "upstream master tarball: sha256 $MASTER_SHA256" 1
    master=0
elif QEMU_SRC=$MASTER_TARBALL "$TOP/tooling/mktree.sh" "$MASTER_TREE"; then
    result "series applies with git am onto upstream master" 0
    builds_alone "$MASTER_TREE" " on master"
else
    result "series applies with git am onto upstream master" 1
    master=0
fi
cd "$SERIES_TREE"

# 4. The view.
"$TOP/tooling/view.sh" check "$SERIES_TREE"
result "view (hw/ include/ linux-headers/ tests/ docs/) equals what the series creates" $?

# 4b. The Linux series (linux/patches/): applies onto the pinned
# linux-source-6.12 tree, checkpatch --strict, each patch builds, its view;
# and QEMU's linux-headers patch is what update-linux-headers.sh makes of
# it.
"$TOP/tooling/linux-check.sh" > "$WORK/linux-check.out" 2>&1
lrc=$?
while IFS= read -r l; do
    result "${l#????  }" "$([[ $l == PASS* ]] && echo 0 || echo 1)"
done < <(grep -E '^(PASS|FAIL)  ' "$WORK/linux-check.out")
if [ "$lrc" != 0 ] && ! grep -q '^FAIL' "$WORK/linux-check.out"; then
    tail -20 "$WORK/linux-check.out"
    result "linux series checks (log: .work/linux-check.out)" 1
fi
hdr=$(ls "$TOP"/patches/[0-9][0-9][0-9][0-9]-linux-headers-*.patch 2>/dev/null | head -1)
if [ -n "$hdr" ] &&
   "$TOP/tooling/gen-linux-headers.sh" --qemu "$SERIES_TREE" --check "$hdr" \
       > "$WORK/gen-linux-headers.out" 2>&1; then
    result "$(basename "$hdr") is what update-linux-headers.sh makes of the Linux series" 0
else
    tail -20 "$WORK/gen-linux-headers.out" 2>/dev/null
    result "${hdr:+$(basename "$hdr") }is what update-linux-headers.sh makes of the Linux series (log: .work/gen-linux-headers.out)" 1
fi

# CHECK_SERIES_ONLY=1 (make check-series) stops here: the series checks
# without the tests.
[ "${CHECK_SERIES_ONLY:-0}" = 1 ] && finish

# 5. The tests.  A failed build of the tip leaves nothing to test.
if [ "$fail" = 0 ] || "$TOP/tooling/build.sh" "$SERIES_TREE" > "$WORK/build-tip.log" 2>&1; then
    "$TOP/tooling/run-tests.sh" "$SERIES_TREE" > "$WORK/tests.out"
    rc=$?
    # On master: the device-state suite and the vfio qtests.
    if [ "$master" = 1 ]; then
        if "$TOP/tooling/build.sh" "$MASTER_TREE" > "$WORK/build-master-tip.log" 2>&1; then
            RUN_TESTS_LABEL=" (master)" RUN_TESTS_ONLY_DEVSTATE=1 \
                "$TOP/tooling/run-tests.sh" "$MASTER_TREE" >> "$WORK/tests.out" || rc=1
        else
            echo "FAIL  build of the series tip on upstream master (log: .work/build-master-tip.log)" >> "$WORK/tests.out"
            rc=1
        fi
    fi
    cat "$WORK/tests.out"
    tp=$(grep -c '^PASS  ' "$WORK/tests.out")
    tf=$(grep -c '^FAIL  ' "$WORK/tests.out")
    pass=$((pass + ${tp:-0}))
    fail=$((fail + ${tf:-0}))
    if [ "$rc" != 0 ] && [ "${tf:-0}" = 0 ]; then
        result "test runner" "$rc"
    fi
    while read -r l; do failed+=("${l#FAIL  }"); done < <(grep '^FAIL  ' "$WORK/tests.out")
else
    result "build of the series tip" 1
fi

# 6. The fuzzers, a short smoke run each (make fuzz runs them longer).
"$TOP/tooling/fuzz.sh" --seconds "${FUZZ_SECONDS:-30}" "$SERIES_TREE" \
    > "$WORK/fuzz.out" 2>&1
frc=$?
grep -E '^(PASS|FAIL)  ' "$WORK/fuzz.out" > "$WORK/fuzz.results" || true
while IFS= read -r l; do
    result "${l#????  }" "$([[ $l == PASS* ]] && echo 0 || echo 1)"
done < "$WORK/fuzz.results"
if [ "$frc" != 0 ] && ! grep -q '^FAIL' "$WORK/fuzz.results"; then
    tail -20 "$WORK/fuzz.out"
    result "fuzz smoke run (log: .work/fuzz.out)" 1
fi
finish
