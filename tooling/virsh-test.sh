#!/bin/bash
# SPDX-License-Identifier: GPL-2.0-or-later
# virsh-test.sh [TREE]: the virsh tests of make check (run by
# tooling/run-tests.sh).  Runs the demo's virsh path twice, as a user runs
# it (two libvirt instances, `virsh migrate --live`; tooling/virsh_demo.py):
#   live          the migration completes, the device digests and the guest
#                 RAM the device wrote by DMA are equal on both sides, the
#                 destination works on after `virsh resume`;
#   incompatible  the destination device refuses the source's
#                 migration_version, virsh migrate fails with QEMU's reason
#                 (device and both strings), the source domain runs on with
#                 a working device.
# After each run it checks that nothing is left: no process in the
# instances' mount namespaces or using the run's temp dir, no temp dir.
# Installs libvirt from bookworm-backports when missing (deps-libvirt.sh).
# Prints "PASS  name" / "FAIL  name" lines on stdout, progress on stderr;
# the demo logs go to $WORK/virsh-test/.
set -uo pipefail
. "$(dirname "$0")/lib.sh"

tree=${1:-$SERIES_TREE}
logs=$WORK/virsh-test
t_stage=$(date +%s)
mkdir -p "$logs"
rm -rf "$logs"/*-workdir    # the work dirs a failed run of last time kept
tmp=$(mktemp -d /tmp/vfio-virsh-test.XXXXXX)

result() {  # result NAME RC
    if [ "$2" = 0 ]; then echo "PASS  virsh: $1"; else echo "FAIL  virsh: $1"; fi
}

# Pids of what a run left: processes in its libvirtd mount namespaces
# (virsh_lab.py records them in $nslog) and processes that use this run's
# temp dir (the reference devices, a stray QEMU).
nslog=$logs/mntns
: > "$nslog"
leftovers() {
    local p ns nss
    # the daemons' namespaces, never our own
    mapfile -t nss < <(grep -vxF "$(readlink /proc/self/ns/mnt)" "$nslog")
    for p in /proc/[0-9]*; do
        p=${p#/proc/}
        [ "$p" = $$ ] || [ "$p" = "$BASHPID" ] && continue
        ns=$(readlink "/proc/$p/ns/mnt" 2>/dev/null) || continue
        if printf '%s\n' "${nss[@]}" | grep -qxF "$ns" ||
            tr '\0' '\n' < "/proc/$p/cmdline" 2>/dev/null | grep -q "^$tmp/"; then
            echo "$p"
        fi
    done
}

cleanup() {
    local pids
    pids=$(leftovers)
    if [ -n "$pids" ]; then
        # shellcheck disable=SC2086
        kill -9 $pids 2>/dev/null
        sleep 0.5
    fi
    rm -rf "$tmp"
    return 0
}
trap cleanup EXIT
trap 'exit 130' INT TERM

if ! "$TOP/tooling/deps-libvirt.sh" >&2; then
    result "libvirt from bookworm-backports installed (tooling/deps-libvirt.sh)" 1
    exit 0
fi

scenario() {  # scenario NAME EXPECTED-VERDICT-REGEX [demo args]
    local name=$1 want=$2 log=$logs/$1.log rc t0 last
    shift 2
    say "virsh: $name scenario (log: ${log#"$TOP"/})"
    t0=$(date +%s)
    SERIES_TREE=$tree TMPDIR=$tmp VIRSH_LAB_NSLOG=$nslog timeout -k 10 "${VIRSH_TEST_TIMEOUT:-300}" \
        python3 "$TOP/tooling/demo.py" --via virsh --scenario "$name" "$@" \
        > "$log" 2>&1
    rc=$?
    say "virsh: $name scenario done in $(since "$t0")s (exit status $rc)"
    # Every check the demo made, then its verdict.
    sed -n 's/^check: \(ok  \|FAIL\) \(.*\)/\1|\2/p' "$log" |
        while IFS='|' read -r st what; do
            result "$name: $what" "$([ "$st" = FAIL ] && echo 1 || echo 0)"
        done
    last=$(grep -E "^demo: (PASS|FAIL|REFUSED)" "$log" | tail -n 1)
    grep -q '^check: ' "$log" ||
        result "$name: the demo made its checks (log: ${log#"$TOP"/})" 1
    if [[ $last =~ $want ]] && [ "$rc" = 0 ]; then
        result "$name: $last" 0
    else
        tail -n 15 "$log" | sed 's/^/    /' >&2
        result "$name: verdict '$last' (exit status $rc; log: ${log#"$TOP"/})" 1
    fi
    grep -h '^virsh migrate: exit status' "$log" | sed 's/^/    /' >&2
    # Nothing may be left behind, whatever the outcome.
    local pids
    pids=$(leftovers)
    result "$name: no process left (libvirtd, QEMU, devices)${pids:+: $pids}" \
        "$([ -z "$pids" ] && echo 0 || echo 1)"
    # On success the demo removes its work dir; after a failure it keeps
    # it for the logs: copy them out, then remove it.
    local left
    left=$(ls -A "$tmp")
    if [ "$rc" = 0 ]; then
        result "$name: work dir removed${left:+ (left: $left)}" \
            "$([ -z "$left" ] && echo 0 || echo 1)"
    fi
    if [ -n "$left" ]; then
        mkdir -p "$logs/$name-workdir"
        cp -a "$tmp"/. "$logs/$name-workdir/" 2>/dev/null
        rm -rf "${tmp:?}"/*
    fi
}

scenario live '^demo: PASS .* integrity=ok$'
scenario incompatible '^demo: REFUSED reason=.* source=running$'
say "virsh: stage done in $(since "$t_stage")s"
