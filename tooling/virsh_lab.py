# SPDX-License-Identifier: GPL-2.0-or-later
"""Two libvirt instances on one host, for the virsh path of the demo
(demo --via virsh) and its tests (tooling/virsh-test.sh).

Each instance is a plain `libvirtd -d` (the monolithic daemon of libvirt
11.3 from bookworm-backports; no systemd) in its own private mount
namespace, where /etc/libvirt, /run/libvirt, /var/lib/libvirt,
/var/cache/libvirt and /var/log/libvirt are bind mounts of directories
under the work dir.  Its sockets live in a directory outside those mounts,
so virsh (and the other instance, for a peer-to-peer migration) reaches
them from outside the namespace; each instance has its own host_uuid,
because libvirt refuses "Attempt to migrate guest to the same host" when
the UUIDs match (the only same-host check it makes).

Every process an instance starts (libvirtd, its QEMUs, capability probes,
hooks) lives in that mount namespace; stop() finds them by the namespace
(/proc/PID/ns/mnt) and ends them by pid, so nothing survives a failed
run."""

import os
import signal
import subprocess
import time
import uuid
from xml.sax.saxutils import quoteattr

LIBVIRTD = '/usr/sbin/libvirtd'
# instance dir -> the path it is mounted on inside the namespace
MOUNTS = (('etc', '/etc/libvirt'), ('run', '/run/libvirt'),
          ('lib', '/var/lib/libvirt'), ('cache', '/var/cache/libvirt'),
          ('log', '/var/log/libvirt'))

QEMU_CONF = '''\
# Written by tooling/virsh_lab.py: libvirt runs the project's QEMU as root
# with no per-domain isolation, as two daemons share this host.
user = "root"
group = "root"
dynamic_ownership = 0
remember_owner = 0
security_driver = "none"
# both daemons number their guests from 1: their cgroup names would collide
cgroup_controllers = [ ]
namespaces = [ ]
# QEMU's stdout/stderr to a file (else libvirt wants virtlogd)
stdio_handler = "file"
'''


class VirshError(RuntimeError):
    pass


class Libvirtd:
    """One libvirtd in its own mount namespace, with its state under
    WORKDIR/libvirt-NAME."""

    def __init__(self, workdir, name):
        self.name = name
        self.dir = os.path.join(workdir, 'libvirt-' + name)
        self.sockdir = os.path.join(self.dir, 'sock')
        self.uri = ('qemu+unix:///system?socket=' +
                    os.path.join(self.sockdir, 'libvirt-sock'))
        self.host_uuid = str(uuid.uuid4())
        self.log = self.path('log', 'libvirtd.log')
        self.pid = None
        self.mntns = None

    def path(self, mount, *rest):
        """Host path of a file that the daemon sees under a mount."""
        return os.path.join(self.dir, mount, *rest)

    def _configure(self):
        for sub, _ in MOUNTS:
            os.makedirs(self.path(sub), exist_ok=True)
        for sub in ('qemu', 'hooks'):
            os.makedirs(self.path('etc', sub), exist_ok=True)
        os.makedirs(self.sockdir, exist_ok=True)
        with open(self.path('etc', 'libvirtd.conf'), 'w') as f:
            f.write('unix_sock_dir = "%s"\n'
                    'unix_sock_rw_perms = "0700"\n'
                    'unix_sock_ro_perms = "0700"\n'
                    'unix_sock_admin_perms = "0700"\n'
                    'auth_unix_rw = "none"\n'
                    'auth_unix_ro = "none"\n'
                    'host_uuid = "%s"\n'
                    'log_filters = "1:qemu.qemu_migration '
                    '1:qemu.qemu_capabilities 3:qemu 3:util 3:rpc"\n'
                    'log_outputs = "1:file:/var/log/libvirt/libvirtd.log"\n'
                    % (self.sockdir, self.host_uuid))
        with open(self.path('etc', 'qemu.conf'), 'w') as f:
            f.write(QEMU_CONF)

    def start(self, timeout=30):
        self._configure()
        # The mount point must exist on the host: an empty directory in
        # /run (tmpfs), removed again by release_run_mountpoint().
        global _MADE_RUN        # pylint: disable=global-statement
        if not os.path.isdir('/run/libvirt'):
            os.makedirs('/run/libvirt')
            _MADE_RUN = True
        binds = ''.join('mount --bind %s %s\n' % (self.path(sub), mnt)
                        for sub, mnt in MOUNTS)
        script = (binds + 'exec %s -d -p /run/libvirt/libvirtd.pid '
                  '-f /etc/libvirt/libvirtd.conf\n' % LIBVIRTD)
        r = subprocess.run(['unshare', '-m', '--propagation', 'private',
                            '--', '/bin/sh', '-ec', script],
                           capture_output=True, text=True, timeout=timeout)
        if r.returncode:
            raise VirshError('%s libvirtd did not start: %s%s' %
                             (self.name, r.stderr.strip(), self.tail()))
        end = time.time() + timeout
        pidfile = self.path('run', 'libvirtd.pid')
        while self.pid is None:
            try:
                with open(pidfile) as f:
                    self.pid = int(f.read().strip())
                self.mntns = os.readlink('/proc/%d/ns/mnt' % self.pid)
            except (OSError, ValueError):
                self.pid = None
                if time.time() > end:
                    raise VirshError('%s libvirtd wrote no pid file%s' %
                                     (self.name, self.tail()))
                time.sleep(0.05)
        if self.mntns == os.readlink('/proc/self/ns/mnt'):
            self.mntns = None       # never end the host's processes
            raise VirshError('%s libvirtd runs in the host mount namespace'
                             % self.name)
        # For a caller that checks for leftovers (tooling/virsh-test.sh).
        if os.environ.get('VIRSH_LAB_NSLOG'):
            with open(os.environ['VIRSH_LAB_NSLOG'], 'a') as f:
                f.write(self.mntns + '\n')
        while time.time() < end:
            if self.virsh('uri', check=False).returncode == 0:
                return self
            time.sleep(0.1)
        raise VirshError('%s libvirtd does not answer on %s%s' %
                         (self.name, self.uri, self.tail()))

    def tail(self, n=5):
        try:
            with open(self.log) as f:
                lines = f.read().splitlines()[-n:]
            return ' | ' + ' | '.join(lines) if lines else ''
        except OSError:
            return ''

    def virsh(self, *args, check=True, timeout=120):
        """Run virsh against this instance; with check, a failure raises
        VirshError with virsh's own error."""
        r = subprocess.run(['virsh', '-q', '-c', self.uri] + list(args),
                           capture_output=True, text=True, timeout=timeout)
        if check and r.returncode:
            raise VirshError('virsh %s on %s: %s' %
                             (args[0], self.name,
                              (r.stderr or r.stdout).strip()))
        return r

    def probe_async(self, emulator):
        """Let the daemon probe EMULATOR (domcapabilities) in the
        background; .wait() returns the seconds it took, or raises."""
        inst = self

        class Probe:
            def __init__(self):
                self.t0 = time.time()
                self.proc = subprocess.Popen(
                    ['virsh', '-q', '-c', inst.uri, 'domcapabilities',
                     '--emulatorbin', emulator, '--virttype', 'qemu'],
                    stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                    text=True)

            def wait(self, timeout=120):
                _, err = self.proc.communicate(timeout=timeout)
                if self.proc.returncode:
                    raise VirshError('%s could not probe %s: %s' %
                                     (inst.name, emulator, err.strip()))
                return time.time() - self.t0

            def stop(self):
                if self.proc.poll() is None:
                    self.proc.kill()
                    self.proc.wait()
        return Probe()

    def domains(self):
        r = self.virsh('list', '--all', '--name', check=False)
        return [d for d in r.stdout.split() if d]

    def qemu_pid(self, dom):
        """The pid of the domain's QEMU, from libvirt's pid file."""
        with open(self.path('run', 'qemu', dom + '.pid')) as f:
            return int(f.read().strip())

    def qemu_log(self, dom):
        try:
            with open(self.path('log', 'qemu', dom + '.log')) as f:
                return f.read()
        except OSError:
            return ''

    def processes(self):
        """Pids of every process in this instance's mount namespace."""
        if not self.mntns or self.mntns == os.readlink('/proc/self/ns/mnt'):
            return []
        pids = []
        for p in os.listdir('/proc'):
            if not p.isdigit():
                continue
            try:
                if os.readlink('/proc/%s/ns/mnt' % p) == self.mntns:
                    pids.append(int(p))
            except OSError:
                pass
        return pids

    def stop(self):
        """Destroy the domains, stop libvirtd, then end whatever else runs
        in the namespace (by pid); the namespace goes with its last
        process.  Safe to call more than once, and on a failed start."""
        if self.pid:
            for dom in self.domains():
                self.virsh('destroy', dom, check=False, timeout=30)
        for sig in (signal.SIGTERM, signal.SIGKILL):
            pids = self.processes()
            for p in pids:
                try:
                    os.kill(p, sig)
                except ProcessLookupError:
                    pass
            end = time.time() + 10
            while pids and time.time() < end:
                pids = [p for p in pids if os.path.exists('/proc/%d' % p)
                        and not _zombie(p)]
                time.sleep(0.1)
            if not pids:
                break
        left = self.processes()
        if left:
            raise VirshError('%s: processes left in the namespace: %s' %
                             (self.name, left))


def _zombie(pid):
    try:
        with open('/proc/%d/stat' % pid) as f:
            return f.read().rsplit(')', 1)[1].split()[0] == 'Z'
    except OSError:
        return False


_MADE_RUN = False


def release_run_mountpoint():
    """Remove the /run/libvirt mount point if start() made it, unless some
    process (of another run) still has something mounted there."""
    if not _MADE_RUN:
        return
    for p in os.listdir('/proc'):
        if not p.isdigit():
            continue
        try:
            with open('/proc/%s/mountinfo' % p) as f:
                if any(' /run/libvirt ' in ln for ln in f):
                    return
        except OSError:
            pass
    try:
        os.rmdir('/run/libvirt')
    except OSError:
        pass                    # not empty: not ours to remove


def domain_xml(name, emulator, ram, disk, serial, device_sock):
    """A TCG i440fx domain like the plain demo's VM: shared memfd RAM (the
    vfio-user server maps it), the migration-test boot block on a
    read-only virtio disk (shared and read-only, so libvirt calls the
    migration safe), the serial port in a file, and the vfio-user-pci
    device, for which libvirt has no XML, on the QEMU command line."""
    dev = ('{"driver":"vfio-user-pci","id":"dev0","bus":"pci.0",'
           '"addr":"0x10","socket":{"type":"unix","path":"%s"}}'
           % device_sock)
    return '''\
<domain type='qemu' xmlns:qemu='http://libvirt.org/schemas/domain/qemu/1.0'>
  <name>%(name)s</name>
  <memory unit='MiB'>%(mib)d</memory>
  <memoryBacking>
    <source type='memfd'/>
    <access mode='shared'/>
  </memoryBacking>
  <vcpu>1</vcpu>
  <os>
    <type arch='x86_64' machine='pc'>hvm</type>
    <boot dev='hd'/>
  </os>
  <on_poweroff>destroy</on_poweroff>
  <on_reboot>destroy</on_reboot>
  <on_crash>destroy</on_crash>
  <devices>
    <emulator>%(emulator)s</emulator>
    <disk type='file' device='disk'>
      <driver name='qemu' type='raw'/>
      <source file=%(disk)s/>
      <target dev='vda' bus='virtio'/>
      <readonly/>
    </disk>
    <controller type='usb' model='none'/>
    <serial type='file'>
      <source path=%(serial)s/>
    </serial>
    <memballoon model='none'/>
  </devices>
  <qemu:commandline>
    <qemu:arg value='-device'/>
    <qemu:arg value=%(dev)s/>
  </qemu:commandline>
</domain>
''' % {'name': name, 'mib': ram >> 20, 'emulator': emulator,
       'disk': quoteattr(disk), 'serial': quoteattr(serial),
       'dev': quoteattr(dev)}


def memfd_of(pid, size):
    """Open the guest-RAM memfd of QEMU PID (the one of SIZE bytes) through
    /proc, so that it can be read after QEMU has exited."""
    fddir = '/proc/%d/fd' % pid
    for fd in os.listdir(fddir):
        try:
            if not os.readlink(os.path.join(fddir, fd)).startswith('/memfd:'):
                continue
            f = os.open(os.path.join(fddir, fd), os.O_RDONLY)
        except OSError:
            continue
        if os.fstat(f).st_size == size:
            return f
        os.close(f)
    raise VirshError('QEMU pid %d has no guest-RAM memfd of %d bytes' %
                     (pid, size))
