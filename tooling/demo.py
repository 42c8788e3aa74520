#!/usr/bin/env python3
# SPDX-License-Identifier: GPL-2.0-or-later
"""The main job: live-migrate a running VM with a busy reference device
from one QEMU to another on this host, and check that the device arrived
with its state.

Two reference devices (source and destination), two QEMUs (the second
with -incoming), a TCG guest that keeps dirtying its RAM, the device
mutating its memory and writing guest RAM by DMA during precopy.  The
destination is started with -S so that its device stays stopped after the
switchover: the demo compares the devices' digests and the guest RAM the
device wrote, then resumes the destination and checks that the device
works on.

With --device kernel the devices are two instances of the Linux series'
sample mdev driver (samples/vfio-mdev/mdevstate.c) on -device vfio-pci,
and everything runs in a nested guest (L2, tooling/l2-run.sh) with the
pinned Debian kernel, the sample loaded and the guest booted as above,
under TCG inside L2."""

import argparse
import filecmp
import os
import shutil
import subprocess
import sys
import time

import lab

DMA_ADDR = 112 * lab.MiB        # above the guest's dirtying range (1-100 MiB)


def opts():
    p = argparse.ArgumentParser(prog='make demo DEMO_ARGS=...',
                                description=__doc__.split('\n\n')[0])
    p.add_argument('--mem-size', default=None,
                   help='device memory (default 64M; 16M with --device '
                   'kernel)')
    p.add_argument('--ram', default=None,
                   help='guest RAM (default 256M; 128M with --device kernel)')
    p.add_argument('--mutate-rate', type=int, default=None,
                   help='device-memory pages mutated per second (4000; 500 '
                   'with --device kernel)')
    p.add_argument('--dma-rate', type=int, default=None,
                   help='guest pages written by DMA per second (2000; 500 '
                   'with --device kernel)')
    p.add_argument('--dma-pages', type=int, default=2048,
                   help='pages in the DMA window (2048 = 8 MiB)')
    p.add_argument('--no-mmap', action='store_true',
                   help='data regions not mmappable (read/write path)')
    p.add_argument('--downtime-limit', type=int, default=None,
                   help='downtime limit in ms (300; 1000 with --device '
                   'kernel)')
    p.add_argument('--bandwidth', default='0',
                   help='max-bandwidth, e.g. 200M (default: unlimited)')
    p.add_argument('--scenario', default='live',
                   choices=['live', 'cancel', 'incompatible', 'device-error'])
    p.add_argument('--via', default='qmp', choices=['qmp', 'virsh'],
                   help='qmp: the demo drives both QEMUs over QMP (default); '
                   'virsh: two libvirt instances on this host and '
                   '`virsh migrate --live` (scenarios live and incompatible; '
                   'tooling/virsh_demo.py)')
    p.add_argument('--device', default='ref', choices=['ref', 'kernel'],
                   help='ref: the vfio-user reference device (default); '
                   'kernel: instances of the sample mdev driver in a nested '
                   'guest (L2), through vfio-pci (with --via qmp)')
    p.add_argument('--mdev-type', default='mdevstate-1',
                   help='--device kernel: the mdev type (mdevstate-1)')
    p.add_argument('--incompat-mdev-type', default='mdevstate-2',
                   help='--device kernel: the type with an incompatible '
                   'migration_version (mdevstate-2)')
    p.add_argument('--in-l2', action='store_true', help=argparse.SUPPRESS)
    p.add_argument('--keep', action='store_true', help='keep the work dir')
    o = p.parse_args()
    kernel = o.device == 'kernel'
    if kernel and o.via != 'qmp':
        p.error('--device kernel runs with --via qmp only')
    # Nested TCG moves some 10-25 MiB/s: a kernel device gets less memory
    # and lower rates, so that the migration converges.
    for k, ref, ker in (('mem_size', '64M', '16M'), ('ram', '256M', '128M'),
                        ('mutate_rate', 4000, 500), ('dma_rate', 2000, 500),
                        ('downtime_limit', 300, 1000)):
        if getattr(o, k) is None:
            setattr(o, k, ker if kernel else ref)
    return o


def run_in_l2(o):
    """Run this demo in L2, with the sample module loaded."""
    tooling = os.path.dirname(os.path.abspath(__file__))
    built = subprocess.run([os.path.join(tooling, 'kmod-build.sh'),
                            '--print-env'], stdout=subprocess.PIPE, text=True,
                           check=False)
    if built.returncode:
        print('demo: FAIL reason=the_sample_module_did_not_build '
              '(tooling/kmod-build.sh)')
        return 1
    env = built.stdout
    kmod = dict(ln.split('=', 1) for ln in env.split() if '=' in ln)
    kmod = kmod['KMOD'].strip('\'"')
    args = [a for a in sys.argv[1:]] + ['--in-l2']
    cmd = [os.path.join(tooling, 'l2-run.sh'), '--name', 'demo-kernel',
           '--mem', '2048', '--timeout', '1800', '--module', kmod, '--',
           'env', 'SERIES_TREE=' + lab.TREE, 'python3', '-u',
           os.path.abspath(__file__)] + args
    t0 = time.time()
    print('demo: running in L2 (tooling/l2-run.sh, nested TCG)')
    sys.stdout.flush()
    rc = subprocess.call(cmd)
    print('demo: L2 run took %.0f s (exit status %d)' % (time.time() - t0, rc))
    return rc


def progress(src, t0, final=False):
    info = src.cmd('query-migrate')
    ram = info.get('ram', {})
    vfio = info.get('vfio', {}).get('transferred', 0)
    total = ram.get('total', 1) or 1
    done = min(1.0, (ram.get('transferred', 0)) / (total * 1.0))
    bar = '#' * int(done * 30)
    line = ('\r[%-30s] %5.1fs ram %6.1f MiB devstate %6.1f MiB '
            'dirty %6.0f pg/s iter %3d exp.downtime %4d ms %-10s' %
            (bar, time.time() - t0, ram.get('transferred', 0) / lab.MiB,
             vfio / lab.MiB, ram.get('dirty-pages-rate', 0),
             ram.get('dirty-sync-count', 0),
             info.get('expected-downtime', 0), info.get('status', '?')))
    sys.stdout.write(line + ('\n' if final else ''))
    sys.stdout.flush()
    return info


def wait_migration(src, t0, until=('completed', 'failed', 'cancelled'),
                   hook=None):
    while True:
        info = progress(src, t0)
        if hook:
            hook(info)
        if info.get('status') in until:
            progress(src, t0, final=True)
            return info
        time.sleep(0.2)


def device_works(server, seconds=1.0):
    a = int(server.status().get('mutate_count', 0))
    time.sleep(seconds)
    b = int(server.status().get('mutate_count', 0))
    return b > a


def main():
    o = opts()
    if o.device == 'kernel' and not o.in_l2:
        sys.exit(run_in_l2(o))
    if o.via == 'virsh':
        import virsh_demo   # pylint: disable=import-outside-toplevel
        sys.exit(virsh_demo.run(o, sys.modules[__name__]))
    wd = lab.workdir()
    mem = lab.parse_size(o.mem_size)
    ram = lab.parse_size(o.ram)
    disk = os.path.join(wd, 'guest.img')
    lab.write_bootdisk(disk)
    common = ['--mem-size', str(mem), '--mutate-rate', str(o.mutate_rate),
              '--dma-rate', str(o.dma_rate), '--dma-addr', str(DMA_ADDR),
              '--dma-pages', str(o.dma_pages)] + \
             (['--no-mmap'] if o.no_mmap else [])
    dst_extra = []
    if o.scenario == 'incompatible':
        dst_extra = (['--mdev-type', o.incompat_mdev_type]
                     if o.device == 'kernel' else ['--version', '2.0.0'])

    def device(name, args):
        if o.device == 'kernel':
            return lab.KernelDevice(o.mdev_type, name, args)
        return lab.DeviceServer(wd, name, args)
    servers, vms = [], []
    verdict = 'demo: FAIL reason=internal'
    try:
        print('demo: %s scenario, device memory %d MiB, guest RAM %d MiB, '
              'mmap %s, work dir %s' % (o.scenario, mem >> 20, ram >> 20,
                                        'off' if o.no_mmap else 'on', wd))
        ssrv = device('src-dev', common + ['--start'])
        servers.append(ssrv)
        dsrv = device('dst-dev', common + dst_extra)
        servers.append(dsrv)
        src = lab.vm(wd, 'src', ssrv, ram, disk)
        dst = lab.vm(wd, 'dst', dsrv, ram, disk, incoming=True,
                     extra=['-S'])
        vms += [src, dst]
        for m in (src, dst):
            lab.set_caps(m, return_path=True, switchover_ack=True)
        src.cmd('migrate-set-parameters', downtime_limit=o.downtime_limit,
                max_bandwidth=lab.parse_size(o.bandwidth))
        if o.device == 'kernel':
            # Under nested TCG the guest dirties its RAM about as fast as
            # the migration moves it: throttle its vCPU (auto-converge).
            lab.set_caps(src, auto_converge=True)
            src.cmd('migrate-set-parameters', cpu_throttle_initial=50,
                    cpu_throttle_increment=20)
        uri = 'unix:' + os.path.join(wd, 'migration.sock')
        dst.cmd('migrate-incoming', uri=uri)
        if not lab.wait_guest(wd, 'src',
                              timeout=600 if o.device == 'kernel' else 60):
            raise RuntimeError('the guest did not boot')
        print('guest booted and dirtying its memory; device status: %s' %
              ssrv.cmd('status'))
        if o.scenario == 'device-error':
            ssrv.cmd('fail mem-get:EIO')

        t0 = time.time()
        src.cmd('migrate', uri=uri)

        cancelled = []

        def cancel_hook(info):
            if (o.scenario == 'cancel' and not cancelled and
                    info.get('vfio', {}).get('transferred', 0) > 0):
                src.cmd('migrate_cancel')
                cancelled.append(time.time())
        info = wait_migration(src, t0, hook=cancel_hook)
        status = info.get('status')

        if o.scenario != 'live':
            time.sleep(0.5)
            run = src.cmd('query-status')['status']
            st = ssrv.status().get('state')
            works = device_works(ssrv)
            print('source: migration %s, VM %s, device %s, device %s' %
                  (status, run, st, 'working' if works else 'NOT working'))
            ok = (status in ('failed', 'cancelled') and run == 'running' and
                  st == 'RUNNING' and works)
            reason = (info.get('error-desc') or status).replace(' ', '_')
            if o.scenario == 'incompatible':
                # The destination says why, naming the device and both
                # migration_version strings.
                try:
                    dst.shutdown(timeout=10)
                except Exception:   # pylint: disable=broad-except
                    pass            # it exits by itself after the refusal
                why = [ln for ln in (dst.get_log() or '').splitlines()
                       if 'refused migration_version' in ln]
                if why:
                    print('destination: %s' % why[0])
                    reason = why[0].split(': ', 1)[-1].replace(' ', '_')
                log = dsrv.log_text()
                refused = bool(why) and 'refused' in log
                verdict = ('demo: REFUSED reason=%s source=running' % reason
                           if ok and refused else
                           'demo: FAIL reason=%s source=%s' % (reason, run))
            else:
                verdict = ('demo: PASS scenario=%s source=running '
                           'migration=%s' % (o.scenario, status) if ok else
                           'demo: FAIL scenario=%s migration=%s source=%s '
                           'device=%s' % (o.scenario, status, run, st))
            return

        if status != 'completed':
            verdict = 'demo: FAIL reason=migration_%s:%s' % (
                status, info.get('error-desc', '').replace(' ', '_'))
            return
        # Both devices are stopped now: compare them, and the guest RAM
        # the device wrote.
        sdig, ddig = ssrv.digest(), dsrv.digest()
        win = o.dma_pages * 4096
        sram, dram = os.path.join(wd, 'src.ram'), os.path.join(wd, 'dst.ram')
        src.cmd('pmemsave', val=DMA_ADDR, size=win, filename=sram)
        dst.cmd('pmemsave', val=DMA_ADDR, size=win, filename=dram)
        ram_ok = filecmp.cmp(sram, dram, shallow=False)
        dma = int(ssrv.status().get('dma_count', 0))
        dst.cmd('cont')
        works = device_works(dsrv)
        sarcs, darcs = ssrv.states(), dsrv.states()
        total = info.get('total-time', 0)
        downtime = info.get('downtime', 0)
        vfio = info.get('vfio', {}).get('transferred', 0)
        mbps = vfio / 1e6 / max(total / 1000.0, 1e-3)
        print('source device arcs:      %s' % ', '.join(sarcs))
        print('destination device arcs: %s' % ', '.join(darcs))
        print('digest source %s\n       destination %s  %s' %
              (sdig[:16], ddig[:16], 'equal' if sdig == ddig else 'DIFFERENT'))
        print('guest RAM written by DMA (%d KiB, %d DMA page writes): %s' %
              (win >> 10, dma, 'equal' if ram_ok else 'DIFFERENT'))
        print('destination device after resume: %s' %
              ('working' if works else 'NOT working'))
        print('total %d ms, downtime %d ms, device state %.1f MiB '
              '(device memory %d MiB + config), %.0f MB/s' %
              (total, downtime, vfio / lab.MiB, mem >> 20, mbps))
        good = sdig == ddig and ram_ok and works and dma > 0
        verdict = ('demo: %s device_mem=%d downtime_ms=%d total_ms=%d '
                   'devmem_MBps=%d integrity=%s' %
                   ('PASS' if good else 'FAIL', mem >> 20, downtime, total,
                    mbps, 'ok' if good else 'bad'))
    except Exception as e:      # pylint: disable=broad-except
        verdict = 'demo: FAIL reason=%s' % str(e).replace(' ', '_')[:200]
    finally:
        for m in vms:
            try:
                m.shutdown(timeout=10)
            except Exception:   # pylint: disable=broad-except
                m.kill()
        for s in servers:
            s.stop()
        print(verdict)
        if not o.keep and verdict.startswith('demo: PASS'):
            shutil.rmtree(wd, ignore_errors=True)
        sys.exit(0 if verdict.split()[1] in ('PASS', 'REFUSED') else 1)


if __name__ == '__main__':
    main()
