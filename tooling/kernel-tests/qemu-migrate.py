#!/usr/bin/python3
# SPDX-License-Identifier: GPL-2.0-or-later
"""The project's QEMU on the kernel sample, run inside L2 by in-l2.sh.

    qemu-migrate.py QEMU SRC-UUID DST-UUID INCOMPAT-UUID LOGDIR [--no-mmap]

(QEMU's logs and QMP sockets go to LOGDIR, the stream to /tmp.)

Starts QEMU (-accel qtest) with -device vfio-pci,sysfsdev=<SRC>, checks
that the device-state backend probed the device, migrates the VM to a
file, loads it into a second QEMU with the DST instance (-incoming, -S),
and checks: both migrations completed, the instances' digests (device
memory and config state, from sysfs) are equal, and every device_state
arc QEMU took is an arc between two valid states, in the order of the
spec (section 3).  Then the same stream into an instance of the
incompatible type: the load must fail on migration_version before any
device data, with an error naming both strings.  --no-mmap: the
instances offer no mmap (module parameter mmap=n at their creation), and
QEMU must move the data through read/write; otherwise it must mmap them.
Prints "PASS  name" / "FAIL  name"; exits 1 on failure.
"""
import json
import os
import re
import socket
import subprocess
import sys
import time

failures = 0
LABEL = ''


def result(name, problems, info=None):
    global failures
    if problems:
        failures += 1
        print('FAIL  kernel qemu: %s%s' % (name, LABEL))
        for p in problems:
            print('      %s' % p)
    else:
        print('PASS  kernel qemu: %s%s' % (name, LABEL))
    if info:
        print('      %s' % info)
    sys.stdout.flush()


class VM:
    def __init__(self, qemu, work, name, uuid, *extra):
        self.name = name
        self.sock = os.path.join('/tmp', 'qemu-migrate-%s.qmp' % name)
        self.logname = os.path.join(work, name + '.log')
        if os.path.exists(self.sock):
            os.unlink(self.sock)
        self.log = open(self.logname, 'w')
        self.p = subprocess.Popen(
            [qemu, '-M', 'pc', '-accel', 'qtest', '-m', '64', '-nodefaults',
             '-display', 'none', '-no-user-config', '-L', '/usr/share/seabios',
             '-qmp', 'unix:%s,server=on,wait=off' % self.sock,
             '-trace', 'vfio_ds_probe', '-trace', 'vfio_ds_set_state',
             '-trace', 'vfio_ds_version_check', '-trace', 'vfio_ds_load_set',
             '-trace', 'vfio_ds_load_config', '-trace', 'vfio_ds_region_mmap',
             '-device', 'vfio-pci,sysfsdev=/sys/bus/mdev/devices/%s,id=dev0'
             % uuid] + list(extra),
            stdout=self.log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        self.f = None
        for _ in range(1200):
            if self.p.poll() is not None:
                raise RuntimeError('%s QEMU exited with status %d: %s' %
                                   (name, self.p.returncode, self.tail()))
            try:
                s = socket.socket(socket.AF_UNIX)
                s.connect(self.sock)
                self.f = s.makefile('rw')
                break
            except OSError:
                time.sleep(0.1)
        if not self.f:
            raise RuntimeError('%s QEMU: no QMP socket after 120 s' % name)
        json.loads(self.f.readline())
        self.cmd('qmp_capabilities')

    def tail(self):
        self.log.flush()
        return ' | '.join(l.strip() for l in open(self.logname)
                          if 'kvmvapic' not in l)[-600:]

    def cmd(self, c, **a):
        try:
            return self._cmd(c, **a)
        except OSError as e:
            time.sleep(0.5)
            raise RuntimeError('%s QEMU: %s: %s; its log: %s' %
                               (self.name, c, e, self.tail()))

    def _cmd(self, c, **a):
        self.f.write(json.dumps({'execute': c, 'arguments': a}) + '\n')
        self.f.flush()
        while True:
            line = self.f.readline()
            if not line:
                raise RuntimeError('%s QEMU closed QMP: %s' % (self.name, self.tail()))
            r = json.loads(line)
            if 'event' not in r:
                if 'error' in r:
                    raise RuntimeError('%s: %s: %s' % (self.name, c, r['error']['desc']))
                return r['return']

    def wait_migration(self, timeout=600):
        t0 = time.time()
        while time.time() - t0 < timeout:
            r = self.cmd('query-migrate')
            if r.get('status') in ('completed', 'failed', 'cancelled'):
                return r, time.time() - t0
            time.sleep(0.1)
        return r, time.time() - t0

    def quit(self):
        try:
            self.cmd('quit')
        except RuntimeError:
            pass
        try:
            self.p.wait(60)
        except subprocess.TimeoutExpired:
            self.p.kill()
            self.p.wait()
        self.log.close()

    def kill(self):
        if self.p.poll() is None:
            self.p.kill()
            self.p.wait()

    def trace(self, event):
        self.log.flush()
        return [l.split(event, 1)[1] for l in open(self.logname) if event in l]


REALIZE = 'vfio-pci,sysfsdev=<sample> realizes with the device-state backend'
MIGRATE = ('migrate to a file and load into a second instance: digests equal, '
           'valid arcs')
INCOMPAT = ('the stream into an instance of the incompatible type is '
            'refused on migration_version')
VALID = {'RUNNING', 'RUNNING|LOGGING', 'STOP', 'STOP|LOGGING', 'P2P',
         'P2P|LOGGING'}


def arcs(vm):
    out = []
    for t in vm.trace('vfio_ds_set_state'):
        m = re.search(r'\) (\S+) -> (\S+)\s*$', t)
        if m:
            out.append((m.group(1), m.group(2)))
    return out


def check_arcs(vm, want_prefix):
    p = []
    got = arcs(vm)
    for a, b in got:
        if a not in VALID or b not in VALID or a == b:
            p.append('%s took the arc %s -> %s' % (vm.name, a, b))
    if got[:len(want_prefix)] != want_prefix:
        p.append('%s arcs %s, want them to start with %s' %
                 (vm.name, ', '.join('%s->%s' % x for x in got),
                  ', '.join('%s->%s' % x for x in want_prefix)))
    return p


def digest(uuid):
    with open('/sys/bus/mdev/devices/%s/digest' % uuid) as f:
        return f.read().strip()


def main():
    global LABEL
    args = sys.argv[1:]
    mmap = '--no-mmap' not in args
    args = [a for a in args if a != '--no-mmap']
    if len(args) != 5:
        sys.exit('usage: qemu-migrate.py QEMU SRC-UUID DST-UUID INCOMPAT-UUID '
                 'LOGDIR [--no-mmap]')
    qemu, src, dst, inc, work = args
    LABEL = ' (data regions mmapped)' if mmap else ' (no mmap: read/write)'
    work = os.path.join(work, 'mmap' if mmap else 'no-mmap')
    os.makedirs(work, exist_ok=True)
    stream = '/tmp/qemu-migrate.bin'
    vms = []
    step = REALIZE
    try:
        a = VM(qemu, work, 'source', src)
        vms.append(a)
        p = []
        probe = a.trace('vfio_ds_probe')
        if not probe:
            p.append('no vfio_ds_probe trace: the device-state backend did '
                     'not take the device (log: %s)' % a.logname)
        devs = [d for bus in a.cmd('query-pci') for d in bus['devices']
                if d.get('qdev_id') == 'dev0']
        if not devs:
            p.append('query-pci does not show dev0')
        mapped = a.trace('vfio_ds_region_mmap')
        if mmap and not mapped:
            p.append('QEMU mmapped no data region of a device that offers mmap')
        if not mmap and mapped:
            p.append('QEMU mmapped a data region of a device that offers none: %s'
                     % mapped[0].strip())
        result(REALIZE, p, probe[0].strip() if probe else None)
        if p:
            return
        step = MIGRATE

        p = []
        a.cmd('migrate', uri='file:' + stream)
        r, t_save = a.wait_migration()
        if r.get('status') != 'completed':
            p.append('save: %s: %s' % (r.get('status'), r.get('error-desc')))
        d_src = digest(src)
        size = os.path.getsize(stream) if os.path.exists(stream) else 0
        p += check_arcs(a, [('RUNNING', 'RUNNING|LOGGING'),
                            ('RUNNING|LOGGING', 'P2P|LOGGING'),
                            ('P2P|LOGGING', 'STOP|LOGGING'),
                            ('STOP|LOGGING', 'STOP')])
        a.quit()
        t_load = 0
        if not p:
            b = VM(qemu, work, 'destination', dst, '-S', '-incoming', 'defer')
            vms.append(b)
            b.cmd('migrate-incoming', uri='file:' + stream)
            r, t_load = b.wait_migration()
            if r.get('status') != 'completed':
                p.append('load: %s: %s' % (r.get('status'), r.get('error-desc')))
            d_dst = digest(dst)
            if d_src != d_dst:
                p.append('digests differ: source %s, destination %s' %
                         (d_src, d_dst))
            if not b.trace('vfio_ds_version_check'):
                p.append('the destination checked no migration_version')
            p += check_arcs(b, [('RUNNING', 'STOP')])
            b.quit()
        result(MIGRATE, p, 'stream %d bytes, save %.1fs, load %.1fs'
               % (size, t_save, t_load))
        if p:
            return

        step = INCOMPAT
        p = []
        c = VM(qemu, work, 'incompatible', inc, '-S', '-incoming', 'defer')
        vms.append(c)
        src_ver = probe[0].split("version '", 1)[1].rstrip("' \n")
        try:
            c.cmd('migrate-incoming', uri='file:' + stream)
            r, _ = c.wait_migration(120)
            status = r.get('status')
        except RuntimeError:
            status = 'QEMU exited'
        try:
            c.p.wait(60)
        except subprocess.TimeoutExpired:
            pass
        log = open(c.logname).read()
        if status == 'completed':
            p.append('the incompatible instance loaded the stream')
        if src_ver not in log or 'Protocol error' not in log:
            p.append("no error naming the source's migration_version '%s' and "
                     "EPROTO in %s: %s" % (src_ver, c.logname, c.tail()))
        if c.trace('vfio_ds_load_set') or c.trace('vfio_ds_load_config'):
            p.append('device data was loaded before the refusal')
        err = [l.strip() for l in log.splitlines() if 'migration_version' in l
               and 'vfio_ds_' not in l]
        result(INCOMPAT, p, err[0] if err else None)
    except (RuntimeError, OSError, ValueError) as e:
        result(step, [str(e)])
    finally:
        for vm in vms:
            vm.kill()


main()
sys.exit(1 if failures else 0)
