# SPDX-License-Identifier: GPL-2.0-or-later
"""A small lab for the demo and the benchmark: reference-device servers and
QEMU machines (through QEMU's own python/qemu/machine and qemu.qmp), one
source and one destination on this host."""

import json
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time

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

    def states(self):
        """The device-state arcs the device took, from its log."""
        return re.findall(r'^devstate: state (\S+ -> \S+)$',
                          open(self.log).read(), re.M)

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


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
    args += ['-device', json.dumps({'driver': 'vfio-user-pci', 'id': 'dev0',
                                    'socket': {'type': 'unix',
                                               'path': server.sock}})]
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
