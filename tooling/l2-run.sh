#!/bin/bash
# SPDX-License-Identifier: GPL-2.0-or-later
# l2-run.sh: run a command inside a nested guest (L2) that has the pinned
# Debian kernel (tooling/kernel-pkgs.sh), vfio, vfio_iommu_type1, mdev and
# the given sample module(s) loaded and mdev instances created.
#
#   tooling/l2-run.sh [options] -- COMMAND [ARG...]
#
#   --module 'FILE.ko [PARAM=VALUE...]'  load this module (after its
#                       dependencies from Debian's tree); repeatable, in order
#   --mdev TYPE[:N]     create N (default 1) instances of mdev type TYPE;
#                       repeatable
#   --results DIR       host directory shared read-write; it appears at the
#                       same path inside L2 (default .work/l2/NAME/results,
#                       emptied first)
#   --name NAME         work directory .work/l2/NAME (default: run)
#   --timeout SECONDS   kill L2 after this long (default 1200)
#   --mem MIB, --smp N  L2 size (default 768 MiB, 1 vCPU)
#   --check-name NAME   print "PASS  NAME" / "FAIL  NAME" for the kernel-log
#                       check
#
# L2 boots under TCG (this machine's KVM cannot run a Linux guest), with an
# initramfs of busybox-static, Debian's modules (decompressed: busybox
# insmod cannot read .ko.xz) and the given modules.  The host's / is
# shared read-only over 9p; COMMAND runs chrooted into it with bash, in the
# caller's working directory, with /proc, /sys, /dev, /dev/shm, a tmpfs
# /run, /tmp as an overlay of the host's /tmp and a tmpfs, and the results
# directory mounted.  Its environment:
#   L2_RESULTS   the results directory (writable)
#   L2_MDEVS     the created instances' UUIDs, in order of creation
#   L2_MDEV_LIST file with one "TYPE UUID" line per instance
#   L2_BUSYBOX   a static busybox (insmod, rmmod, ...)
#   L2_MODDIR    the initramfs' modules (NAME.ko) for reloading
#
# Which QEMU runs L2: Debian's qemu-system-x86 (tooling installs it), since
# the project's own build is configured without VirtFS; the project's QEMU
# under test runs INSIDE L2, from the host tree.
#
# COMMAND's output is printed when L2 has stopped; the exit status is
# COMMAND's, or 124 on timeout, 125 when the setup inside L2 failed, 3 when
# COMMAND passed but the kernel log shows a warning, BUG, oops, call trace
# or a taint other than unsigned/out-of-tree module (the log is kept in
# RESULTS/dmesg.txt).
set -euo pipefail
. "$(dirname "$0")/lib.sh"

modules=()
mdevs=()
results=
name=run
timeout_s=1200
mem=768
smp=1
check_name=
while [ $# -gt 0 ]; do
    case $1 in
        --module) modules+=("$2"); shift 2 ;;
        --mdev) mdevs+=("$2"); shift 2 ;;
        --results) results=$2; shift 2 ;;
        --name) name=$2; shift 2 ;;
        --timeout) timeout_s=$2; shift 2 ;;
        --mem) mem=$2; shift 2 ;;
        --smp) smp=$2; shift 2 ;;
        --check-name) check_name=$2; shift 2 ;;
        --) shift; break ;;
        *) die "l2-run.sh: unknown option '$1' (see the top of $0)" ;;
    esac
done
[ $# -gt 0 ] || die "l2-run.sh: no COMMAND given (after --)"
[[ $name =~ ^[A-Za-z0-9._-]+$ ]] || die "l2-run.sh: --name '$name': letters, digits, . _ - only"
for v in timeout_s mem smp; do
    [[ ${!v} =~ ^[1-9][0-9]*$ ]] || die "l2-run.sh: --${v%_s} '${!v}' is not a positive number"
done

# L1's QEMU and the tools to build the initramfs.
need=()
command -v qemu-system-x86_64 >/dev/null || need+=(qemu-system-x86)
command -v objcopy >/dev/null || need+=(binutils)
command -v xz >/dev/null || need+=(xz-utils)
if [ ${#need[@]} -gt 0 ]; then
    [ "$(id -u)" = 0 ] || die "missing packages: ${need[*]}"
    say "installing ${need[*]}"
    DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 install -y -q \
        --no-install-recommends "${need[@]}" >&2 ||
        { apt-get update -q >&2 &&
          DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${need[@]}" >&2; } ||
        die "could not install ${need[*]}"
fi

kenv=$("$TOP/tooling/kernel-pkgs.sh" --print-env) ||
    die "l2-run.sh: the pinned kernel packages are not there (tooling/kernel-pkgs.sh failed)"
eval "$kenv"

dir=$WORK/l2/$name
mkdir -p "$dir"
# One L2 per work directory at a time; a second run of NAME waits.
exec 7> "$dir/.lock"
flock -n 7 || { say "waiting for another L2 run of '$name' to end"; flock -w 3600 7; } ||
    die "l2-run.sh: another run holds $dir/.lock"
if [ -z "$results" ]; then
    results=$dir/results
    rm -rf "$results"
fi
mkdir -p "$results"
results=$(cd "$results" && pwd)
rm -f "$results/.l2-status" "$results/.l2-tainted" "$results/dmesg.txt" "$results/output.log"
init=$dir/initramfs
rm -rf "$init"
mkdir -p "$init"/{bin,dev,proc,sys,host,lib/modules}

# Debian's modules by name (dashes and underscores are the same).
declare -A kmod_path
while IFS= read -r f; do
    b=${f##*/}
    b=${b%.ko.xz}
    kmod_path[${b//-/_}]=$f
done < <(find "$KMODULES/kernel" -name '*.ko.xz')

modinfo_depends() {  # the depends= of an uncompressed module
    objcopy -O binary -j .modinfo "$1" /dev/stdout 2>/dev/null | tr '\0' '\n' |
        sed -n 's/^depends=//p' | tr ',' ' '
}

declare -A added
load_order=()
add_debian_module() {  # add_debian_module NAME: NAME and its dependencies
    local m=${1//-/_} d
    [ -z "${added[$m]:-}" ] || return 0
    [ -n "${kmod_path[$m]:-}" ] || die "module '$m' is not in Debian's $KVER modules"
    added[$m]=1
    xz -dc "${kmod_path[$m]}" > "$init/lib/modules/$m.ko"
    for d in $(modinfo_depends "$init/lib/modules/$m.ko"); do
        add_debian_module "$d"
    done
    load_order+=("$m")
}
for m in netfs 9pnet 9pnet_virtio 9p overlay vfio vfio_iommu_type1 mdev; do
    add_debian_module "$m"
done
given=()
for spec in "${modules[@]}"; do
    read -r file params <<< "$spec"
    [ -f "$file" ] || die "--module: $file does not exist"
    m=$(basename "$file" .ko)
    m=${m//-/_}
    [ -z "${added[$m]:-}" ] || die "--module $file: module '$m' given twice"
    added[$m]=1
    cp "$file" "$init/lib/modules/$m.ko"
    for d in $(modinfo_depends "$file"); do
        add_debian_module "$d"
    done
    given+=("$m $params")
done

# What init does: module list, mdev list, the command.
{
    for m in "${load_order[@]}"; do echo "$m"; done
    for g in "${given[@]}"; do echo "$g"; done
} > "$init/modules.list"
: > "$init/mdevs.list"
ti=0
for spec in "${mdevs[@]}"; do
    type=${spec%%:*}
    n=1
    [ "$type" = "$spec" ] || n=${spec#*:}
    [[ $type =~ ^[A-Za-z0-9._-]+$ ]] || die "--mdev '$spec': bad type name"
    [[ $n =~ ^[1-9][0-9]*$ ]] || die "--mdev '$spec': bad count"
    ti=$((ti + 1))
    for i in $(seq 1 "$n"); do
        printf '%s %s\n' "$type" "$(printf '5ca1ab1e-0000-4000-8000-%04x%08x' "$ti" "$i")"
    done >> "$init/mdevs.list"
done
{
    echo '#!/bin/bash'
    printf 'cd %q 2>/dev/null || cd /\n' "$PWD"
    printf 'exec'
    printf ' %q' "$@"
    echo
} > "$init/cmd.sh"
printf 'RESULTS=%s\n' "$results" > "$init/l2.conf"

cat > "$init/init" <<'EOF'
#!/bin/busybox sh
# L2's init (generated by tooling/l2-run.sh).
/bin/busybox --install -s /bin
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
. /l2.conf
log() { echo "l2[$(cut -d' ' -f1 /proc/uptime)] $*"; }
fail_setup() {
    log "SETUP FAILED: $*"
    echo 125 > "/host$RESULTS/.l2-status" 2>/dev/null
    dmesg > "/host$RESULTS/dmesg.txt" 2>/dev/null
    cat /proc/sys/kernel/tainted > "/host$RESULTS/.l2-tainted" 2>/dev/null
    sync
    poweroff -f
}
log "init, kernel $(uname -r)"
while read -r m params; do
    # shellcheck disable=SC2086
    insmod "/lib/modules/$m.ko" $params || fail_setup "insmod $m $params"
done < /modules.list
mount -t 9p -o trans=virtio,version=9p2000.L,ro,msize=512000,cache=loose hostroot /host ||
    fail_setup "cannot mount the host root (9p tag hostroot)"
log "modules loaded, host root mounted"
H=/host
mount -t proc proc $H/proc && mount -t sysfs sys $H/sys && mount -t devtmpfs dev $H/dev &&
    mkdir -p $H/dev/shm $H/dev/pts && mount -t tmpfs shm $H/dev/shm &&
    mount -t devpts devpts $H/dev/pts && ln -sf /proc/self/fd $H/dev/fd &&
    ln -sf /proc/self/fd/0 $H/dev/stdin && ln -sf /proc/self/fd/1 $H/dev/stdout &&
    ln -sf /proc/self/fd/2 $H/dev/stderr && mount -t tmpfs run $H/run ||
    fail_setup "cannot mount /proc /sys /dev /run in the host root"
# /tmp: the host's /tmp (a tree or a results directory may live there)
# with a tmpfs over it for writes.
mkdir -p /tmpfs && mount -t tmpfs tmpfs /tmpfs && mkdir /tmpfs/upper /tmpfs/work &&
    mount -t overlay overlay -o lowerdir=$H/tmp,upperdir=/tmpfs/upper,workdir=/tmpfs/work $H/tmp ||
    fail_setup "cannot mount an overlay of the host's /tmp and a tmpfs on /tmp"
mkdir -p "$H$RESULTS" &&
    mount -t 9p -o trans=virtio,version=9p2000.L,msize=512000 results "$H$RESULTS" ||
    fail_setup "cannot mount the results directory (9p tag results) at $RESULTS"
mkdir -p $H/tmp/l2/modules && cp /bin/busybox $H/tmp/l2/ && cp /lib/modules/*.ko $H/tmp/l2/modules/ &&
    cp /cmd.sh $H/tmp/l2/cmd.sh || fail_setup "cannot fill /tmp/l2"
uuids=
: > $H/tmp/l2/mdevs
while read -r type uuid; do
    set -- /sys/class/mdev_bus/*/mdev_supported_types/$type
    [ -d "$1" ] || fail_setup "mdev type $type does not exist ($(ls /sys/class/mdev_bus/*/mdev_supported_types 2>&1 | tr '\n' ' '))"
    echo "$uuid" > "$1/create" || fail_setup "cannot create an instance of $type"
    echo "$type $uuid" >> $H/tmp/l2/mdevs
    uuids="$uuids${uuids:+ }$uuid"
done < /mdevs.list
log "mdevs: ${uuids:-none}; running the command"
chroot $H /usr/bin/env -i PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    HOME=/tmp TERM=dumb LANG=C.UTF-8 L2_RESULTS="$RESULTS" L2_MDEVS="$uuids" \
    L2_MDEV_LIST=/tmp/l2/mdevs L2_BUSYBOX=/tmp/l2/busybox L2_MODDIR=/tmp/l2/modules \
    /bin/bash /tmp/l2/cmd.sh > "$H$RESULTS/output.log" 2>&1 < /dev/null
rc=$?
log "command exited with status $rc"
dmesg -s 4194304 > "$H$RESULTS/dmesg.txt"
cat /proc/sys/kernel/tainted > "$H$RESULTS/.l2-tainted"
echo $rc > "$H$RESULTS/.l2-status"
sync
poweroff -f
EOF
chmod 755 "$init/init"
cp "$BUSYBOX" "$init/bin/busybox"
mknod "$init/dev/console" c 5 1
mknod "$init/dev/null" c 1 3
(cd "$init" && find . | "$BUSYBOX" cpio -o -H newc 2>/dev/null | gzip -1) > "$dir/initramfs.cpio.gz"

console=$dir/console.log
say "booting L2 ($KVER, TCG, ${mem} MiB, $smp vCPU); console: $console"
t0=$(date +%s%N)
set +e
timeout --kill-after=10 "$timeout_s" qemu-system-x86_64 \
    -accel tcg -cpu max -m "$mem" -smp "$smp" \
    -nodefaults -no-user-config -display none -no-reboot \
    -serial "file:$console" -monitor none \
    -kernel "$KIMAGE" -initrd "$dir/initramfs.cpio.gz" \
    -append "console=ttyS0 panic=-1 loglevel=4 mitigations=off" \
    -virtfs local,path=/,mount_tag=hostroot,security_model=none,readonly=on,multidevs=remap \
    -virtfs "local,path=$results,mount_tag=results,security_model=none,multidevs=remap" \
    < /dev/null
qrc=$?
set -e
ms=$((($(date +%s%N) - t0) / 1000000))
wall=$((ms / 1000)).$(printf %03d $((ms % 1000)))

[ -f "$results/output.log" ] && cat "$results/output.log"
boot=$(sed -n 's/^l2\[\([0-9.]*\)\] modules loaded.*/\1/p' "$console" | head -1)
say "L2 finished after ${wall}s (wall; userspace ready at ${boot:-?}s of L2 uptime)"

KLOG_BAD='WARNING:|BUG:|kernel BUG|Oops|Call Trace|cut here|general protection|Kernel panic|UBSAN|KASAN|refcount_t|list_(add|del) corruption|soft lockup|hard LOCKUP|blocked for more than|rcu_.*stall|self-detected stall'
if [ ! -f "$results/.l2-status" ]; then
    tail -n 40 "$console" | sed 's/^/  console: /' >&2
    oops=$(grep -a -E "$KLOG_BAD" "$console" | head -5 || true)
    [ -z "$oops" ] || {
        echo "l2-run.sh: the L2 console shows:" >&2
        sed 's/^/  console: /' <<< "$oops" >&2
    }
    if [ "$qrc" = 124 ] || [ "$qrc" = 137 ]; then
        echo "l2-run.sh: L2 timed out after ${timeout_s}s" >&2
        [ -z "$check_name" ] || echo "FAIL  $check_name (L2 timed out${oops:+; the console shows a kernel oops/warning})"
        exit 124
    fi
    echo "l2-run.sh: L2 stopped without a result (QEMU exit status $qrc)" >&2
    [ -z "$check_name" ] || echo "FAIL  $check_name (L2 stopped without a result${oops:+; the console shows a kernel oops/warning})"
    exit 125
fi
rc=$(cat "$results/.l2-status")
if [ "$rc" = 125 ]; then
    grep -a 'SETUP FAILED' "$console" >&2 || true
    tail -n 20 "$console" | sed 's/^/  console: /' >&2
    [ -z "$check_name" ] || echo "FAIL  $check_name (setup inside L2 failed)"
    exit 125
fi

# The kernel log: no warning, BUG, oops or call trace; no taint but
# O (out-of-tree module, 4096) and E (unsigned module, 8192).
bad=$(grep -a -n -E "$KLOG_BAD" "$results/dmesg.txt" | head -40 || true)
tainted=$(cat "$results/.l2-tainted" 2>/dev/null || echo unknown)
taint_bad=
if ! [[ $tainted =~ ^[0-9]+$ ]]; then
    taint_bad="unreadable ($tainted)"
elif [ $((tainted & ~(4096 | 8192))) != 0 ]; then
    letters=PFSRMBUDAWCIOELKXT
    flags=
    for b in $(seq 0 17); do
        [ $(((tainted >> b) & 1)) = 0 ] || flags=$flags${letters:$b:1}
    done
    taint_bad="$tainted ($flags)"
fi
if [ -n "$bad" ] || [ -n "$taint_bad" ]; then
    echo "l2-run.sh: the L2 kernel log is not clean (full log: $results/dmesg.txt):" >&2
    [ -z "$bad" ] || sed 's/^/  dmesg: /' <<< "$bad" >&2
    [ -z "$taint_bad" ] || echo "  kernel taint: $taint_bad" >&2
    [ -z "$check_name" ] || echo "FAIL  $check_name${taint_bad:+ (taint $taint_bad)}"
    [ "$rc" != 0 ] || rc=3
    exit "$rc"
fi
[ -z "$check_name" ] || echo "PASS  $check_name"
exit "$rc"
