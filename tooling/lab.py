# SPDX-License-Identifier: GPL-2.0-or-later
"""A small lab for the demo and the benchmark: reference-device servers (or
instances of the Linux series' sample mdev driver, in a nested guest) and
QEMU machines (through QEMU's own python/qemu/machine and qemu.qmp), one
source and one destination on this host."""

import errno
import glob
import json
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid

TOP = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TREE = os.environ.get('SERIES_TREE', os.path.join(TOP, '.work', 'series'))
BUILD = os.path.join(TREE, 'build')
sys.path.insert(0, os.path.join(TREE, 'python'))

from qemu.machine import QEMUMachine  # noqa: E402  pylint: disable=C0413

QEMU = os.path.join(BUILD, 'qemu-system-x86_64')
SERVER = os.path.join(BUILD, 'tests', 'vfio-user-devstate',
                      'vfio-user-devstate')
BOOTBLOCK_H = os.path.join(TREE, 'tests', 'qtest', 'migration', 'i386',
                           'a-b-bootblock.h')
MiB = 1 << 20


def parse_size(s):
    m = re.fullmatch(r'(\d+)([KMG]?)i?B?', str(s), re.I)
    if not m:
        raise ValueError('bad size %r' % s)
    return int(m.group(1)) << {'': 0, 'K': 10, 'M': 20, 'G': 30}[m.group(2).upper()]


def write_bootdisk(path):
    """The guest of upstream's migration-test: it increments a byte in each
    4 KiB page of [1 MiB, 100 MiB) forever, so it keeps dirtying its RAM."""
    text = open(BOOTBLOCK_H).read()
    body = text[text.index('{') + 1:text.index('}')]
    data = bytes(int(x, 16) for x in re.findall(r'0x[0-9a-fA-F]{2}', body))
    with open(path, 'wb') as f:
        f.write(data)


class DeviceServer:
    """One reference device (tests/vfio-user-devstate) with its control
    socket."""

    def __init__(self, workdir, name, args):
        self.name = name
        self.sock = os.path.join(workdir, name + '.sock')
        self.ctl = os.path.join(workdir, name + '.ctl')
        self.log = os.path.join(workdir, name + '.log')
        cmd = [SERVER, '--socket', self.sock, '--control', self.ctl, '-v'] + args
        self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL,
                                     stderr=open(self.log, 'w'))
        for _ in range(200):
            if os.path.exists(self.sock) and os.path.exists(self.ctl):
                return
            if self.proc.poll() is not None:
                raise RuntimeError('%s exited: %s' % (name, self.tail()))
            time.sleep(0.02)
        raise RuntimeError('%s did not start' % name)

    def cmd(self, line):
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(10)
            s.connect(self.ctl)
            s.sendall(line.encode() + b'\n')
            buf = b''
            while not buf.endswith(b'\n'):
                chunk = s.recv(4096)
                if not chunk:
                    break
                buf += chunk
        return buf.decode().strip()

    def status(self):
        return dict(kv.split('=', 1) for kv in self.cmd('status').split()
                    if '=' in kv)

    def digest(self):
        return self.cmd('digest').split()[-1]

    def tail(self, n=5):
        try:
            return ' | '.join(open(self.log).read().splitlines()[-n:])
        except OSError:
            return ''

    def log_text(self):
        with open(self.log) as f:
            return f.read()

    def states(self):
        """The device-state arcs the device took, from its log."""
        return re.findall(r'^devstate: state (\S+ -> \S+)$',
                          self.log_text(), re.M)

    def device_arg(self, qdev_id='dev0'):
        return json.dumps({'driver': 'vfio-user-pci', 'id': qdev_id,
                           'socket': {'type': 'unix', 'path': self.sock}})

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


class KernelDevice:
    """An instance of a kernel mdev type of the sample driver
    (samples/vfio-mdev/mdevstate.c, the same device model as the reference
    device), with the interface of DeviceServer: the server's options
    become the driver's module parameters for the time of the creation
    (the driver reads them then), the control commands its sysfs
    attributes, and its log the driver's kernel-log lines for the
    instance (debug messages, turned on here)."""

    PARAMS = {'--mem-size': 'mem_size', '--chunk-size': 'chunk_size',
              '--mutate-rate': 'mutate_rate', '--dma-rate': 'dma_rate',
              '--dma-addr': 'dma_addr', '--dma-pages': 'dma_pages',
              '--version': 'version', '--fail': 'fail'}
    FLAGS = {'--start': ('start', 'Y'), '--no-mmap': ('mmap', 'N'),
             '--no-p2p': ('p2p', 'N')}

    def __init__(self, mdev_type, name, args):
        self.name = name
        params = {}
        it = iter(args)
        for a in it:
            if a == '--mdev-type':
                mdev_type = next(it)
            elif a in self.FLAGS:
                params[self.FLAGS[a][0]] = self.FLAGS[a][1]
            elif a in self.PARAMS:
                params[self.PARAMS[a]] = str(next(it))
            else:
                raise ValueError('%s: option %s has no module parameter of '
                                 'the driver' % (name, a))
        driver = mdev_type.rsplit('-', 1)[0]
        creates = glob.glob('/sys/class/mdev_bus/*/mdev_supported_types/%s/'
                            'create' % mdev_type)
        if len(creates) != 1:
            raise RuntimeError('mdev type %s: %d parents (is the driver '
                               'loaded?)' % (mdev_type, len(creates)))
        ctl = '/proc/dynamic_debug/control'
        if not os.path.exists(ctl):
            ctl = '/sys/kernel/debug/dynamic_debug/control'
        # Arcs, refusals and faults; not each control-region access, data
        # set or config message, which would soon overwrite the arcs in
        # the kernel's log buffer during a migration of a minute or more.
        self._write(ctl, 'module %s +p' % driver)
        for fmt in ('ctl:', 'data', 'config'):
            self._write(ctl, 'module %s format %s -p' % (driver, fmt))
        pdir = '/sys/module/%s/parameters/' % driver
        saved = {k: open(pdir + k).read().strip() for k in params}
        self.uuid = str(uuid.uuid4())
        self.sysfsdev = '/sys/bus/mdev/devices/' + self.uuid
        try:
            for k, v in params.items():
                self._write(pdir + k, v + '\n')
            self._write(creates[0], self.uuid)
        finally:
            for k, v in saved.items():
                # with its newline: an empty value ("fail") is one write too
                self._write(pdir + k, v + '\n')

    @staticmethod
    def _write(path, val):
        with open(path, 'w') as f:
            f.write(val)

    def _read(self, attr):
        with open(os.path.join(self.sysfsdev, attr)) as f:
            return f.read().strip()

    def cmd(self, line):
        words = line.split(' ', 1)
        if line in ('status', 'digest'):
            v = self._read(line)
            return 'digest ' + v if line == 'digest' else v
        if words[0] in ('fail', 'delay', 'clear') and len(words) == 2:
            try:
                self._write(os.path.join(self.sysfsdev, 'fail'), line)
            except OSError as e:
                return 'error %s' % os.strerror(e.errno)
            return 'ok'
        return "error unknown command '%s'" % words[0]

    status = DeviceServer.status
    digest = DeviceServer.digest
    states = DeviceServer.states

    def log_text(self):
        """The kernel log's lines of this instance, as the server logs."""
        tag = ' %s: ' % self.uuid
        out = []
        fd = os.open('/dev/kmsg', os.O_RDONLY | os.O_NONBLOCK)
        try:
            while True:
                try:
                    rec = os.read(fd, 8192).decode(errors='replace')
                except BlockingIOError:
                    break
                except OSError as e:
                    if e.errno == errno.EPIPE:
                        continue        # overwritten records: read on
                    raise
                msg = rec.split(';', 1)[-1].split('\n', 1)[0]
                if tag in msg:
                    out.append('devstate: ' + msg.split(tag, 1)[1])
        finally:
            os.close(fd)
        return '\n'.join(out) + '\n'

    def tail(self, n=5):
        return ' | '.join(self.log_text().splitlines()[-n:])

    def device_arg(self, qdev_id='dev0'):
        return 'vfio-pci,sysfsdev=%s,id=%s' % (self.sysfsdev, qdev_id)

    def stop(self):
        """Remove the instance (its QEMU must have quit)."""
        if os.path.exists(self.sysfsdev):
            self._write(os.path.join(self.sysfsdev, 'remove'), '1')


def vm(workdir, name, server, ram, disk=None, incoming=False, extra=(),
       mem_path=None):
    """mem_path: back guest RAM with this file (memory-backend-file,
    share=on) instead of the default memfd."""
    # i440fx: Debian 12's SeaBIOS does not boot q35 under TCG here.
    if mem_path:
        backend = ('memory-backend-file,id=mem,size=%d,mem-path=%s,share=on'
                   % (ram, mem_path))
    else:
        backend = 'memory-backend-memfd,id=mem,size=%d' % ram
    args = ['-machine', 'pc,memory-backend=mem',
            '-object', backend,
            '-accel', 'tcg', '-m', str(ram >> 20),
            '-nodefaults', '-display', 'none',
            '-serial', 'file:' + os.path.join(workdir, name + '.serial')]
    if disk:
        args += ['-drive', 'file=%s,format=raw,if=ide' % disk]
    args += ['-device', server.device_arg('dev0')]
    if incoming:
        args += ['-incoming', 'defer']
    if os.environ.get('DEMO_TRACE'):
        args += ['-trace', os.environ['DEMO_TRACE'],
                 '-D', os.path.join(workdir, name + '.trace')]
    args += list(extra)
    m = QEMUMachine(QEMU, args=args, name=name, base_temp_dir=workdir,
                    log_dir=workdir)
    m.launch()
    return m


def wait_guest(workdir, name, timeout=60):
    """Wait until the migration-test guest prints its first 'B' (it is
    then dirtying its memory)."""
    path = os.path.join(workdir, name + '.serial')
    end = time.time() + timeout
    while time.time() < end:
        if os.path.exists(path) and b'B' in open(path, 'rb').read():
            return True
        time.sleep(0.1)
    return False


def set_caps(m, **caps):
    m.cmd('migrate-set-capabilities',
          capabilities=[{'capability': k.replace('_', '-'), 'state': v}
                        for k, v in caps.items()])


def workdir():
    return tempfile.mkdtemp(prefix='vfio-devstate-')
