# SPDX-License-Identifier: GPL-2.0-or-later
"""The demo's virsh path (make demo DEMO_ARGS="--via virsh"): the same
guest and the same busy reference device as the plain demo, but the VM is
a libvirt domain and `virsh migrate --live` moves it, between two libvirt
instances on this host (tooling/virsh_lab.py).

The domain runs the series' QEMU (<emulator> is the build's binary) with
shared memfd RAM and the vfio-user-pci device on <qemu:commandline>.  The
destination gets its own device socket through `virsh migrate --xml`: the
source's migratable XML with the destination's paths.  `--suspend` leaves
the destination paused after the switchover, so that its device is still
stopped and can be compared with the source's (digests, and the guest RAM
the device wrote by DMA, read from both QEMUs' memfds); then `virsh resume`
and the device must work on.

Scenarios: live, and incompatible (the destination device refuses the
source's migration_version; virsh migrate fails with QEMU's reason and the
source domain runs on with a working device)."""

import os
import re
import shutil
import signal
import socket
import struct
import subprocess
import sys
import textwrap
import threading
import time

import lab
import virsh_lab

DOM = 'vfio-devstate-demo'
PAGE = 4096
DMA_MAGIC = 0x50414d44      # DEVSTATE_DMA_MAGIC, devstate-regs.h
SCENARIOS = ('live', 'incompatible')


def check(name, ok, detail=''):
    """One line per check, for the reader and for tooling/virsh-test.sh."""
    print('check: %-4s %s%s' % ('ok' if ok else 'FAIL', name,
                                 ' (%s)' % detail if detail else ''))
    return ok


def run_migrate(src, args, log):
    """virsh migrate on the source instance, its progress shown as it
    comes and kept in LOG.  Returns (exit status, output, seconds)."""
    cmd = ['virsh', '-c', src.uri, 'migrate'] + args
    print('$ virsh migrate ' + ' '.join(args))
    t0 = time.time()
    with open(log, 'wb') as f:
        p = subprocess.Popen(cmd, stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT)
        out = b''
        while True:
            chunk = os.read(p.stdout.fileno(), 4096)
            if not chunk:
                break
            out += chunk
            f.write(chunk)
            sys.stdout.buffer.write(chunk)
            sys.stdout.flush()
        rc = p.wait()
    secs = time.time() - t0
    if not out.endswith(b'\n'):
        print()
    return rc, out.decode(errors='replace'), secs


def virsh_error(out):
    """virsh's error text ("error: ..." lines; the first may follow the
    progress on the same line)."""
    return ' '.join(m.group(1).strip()
                    for m in re.finditer(r'error: (.*)', out))


def dma_window(fd, addr, pages):
    return os.pread(fd, pages * PAGE, addr)


def stamps(window, pages):
    """Check the DMA engine's pattern in WINDOW: every page is zero (never
    written) or starts with (magic, pass, page index) and is filled with
    the word pass << 32 | page.  Returns (pages stamped, bad pages)."""
    written = bad = 0
    for i in range(pages):
        pg = window[i * PAGE:(i + 1) * PAGE]
        magic, pas, idx = struct.unpack_from('<IIQ', pg)
        if magic == 0 and not any(pg):
            continue
        word = struct.pack('<Q', pas << 32 | i)
        if magic != DMA_MAGIC or idx != i or pg[16:] != word * (PAGE // 8 - 2):
            bad += 1
        else:
            written += 1
    return written, bad


def batch(server, lines):
    """Send LINES to the device's control socket at once; its replies."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(60)
        s.connect(server.ctl)
        s.sendall(''.join(ln + '\n' for ln in lines).encode())
        buf = b''
        while buf.count(b'\n') < len(lines):
            chunk = s.recv(65536)
            if not chunk:
                raise OSError('%s closed the control connection' %
                              server.name)
            buf += chunk
    return buf.decode().splitlines()


def kv(line):
    return dict(w.split('=', 1) for w in line.split() if '=' in w)


class StoppedDevice(threading.Thread):
    """Watch the source device during the migration and take its digest
    and status once it is stopped after the switchover (state STOP after
    a LOGGING state, its QEMU still connected): libvirt ends the source
    QEMU right after the migration, and the device resets when its client
    goes.  The device does not change while stopped; the digest counts
    only if the device is stopped, connected and with the same counters
    right before and after it."""

    SAME = ('state', 'connected', 'mutate_count', 'dma_count', 'dma_passes',
            'dma_errors', 'ctrl')

    def __init__(self, server):
        super().__init__(daemon=True)
        self.server = server
        self.digest = None
        self.status = None
        self.last = 'not polled'
        self.done = threading.Event()

    def run(self):
        logging = False
        while not self.done.is_set() and not self.digest:
            try:
                st = self.server.status()
                self.last = 'state=%s connected=%s' % (st.get('state'),
                                                       st.get('connected'))
                if 'LOGGING' in st.get('state', ''):
                    logging = True
                elif (logging and st.get('state') == 'STOP' and
                      st.get('connected') == '1'):
                    # One batch: the device answers all three lines before
                    # it handles anything else (such as its QEMU going).
                    before, dig, after = batch(self.server, (
                        'status', 'digest', 'status'))
                    before, after = kv(before), kv(after)
                    if (before.get('state') == 'STOP' and
                            before.get('connected') == '1' and
                            all(after.get(k) == before.get(k)
                                for k in self.SAME) and
                            dig.startswith('digest ')):
                        self.digest, self.status = dig.split()[-1], before
            except (OSError, ValueError) as e:
                self.last = str(e)
            time.sleep(0.005)

    def stop(self):
        self.done.set()
        if self.is_alive():
            self.join(30)


class JobEvents:
    """`virsh event --event job-completed` on the source, started before
    the migration: libvirt sends the finished job's statistics."""

    def __init__(self, inst, log):
        self.log = log
        self.proc = subprocess.Popen(
            ['virsh', '-c', inst.uri, 'event', '--domain', DOM,
             '--event', 'job-completed', '--timeout', '600'],
            stdout=open(log, 'w'), stderr=subprocess.STDOUT)

    def stats(self, timeout=10):
        """Wait for the event; returns (stats dict, virsh's text)."""
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.stop()
        with open(self.log) as f:
            text = f.read()
        stats = dict(re.findall(r'^\s+(\w+): (\d+)$', text, re.M))
        return stats, text

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait()


def run(o, demo):
    """Called by demo.py for --via virsh; returns the exit status."""
    if o.scenario not in SCENARIOS:
        print('error: --via virsh runs the scenarios %s, not %s' %
              (' and '.join(SCENARIOS), o.scenario), file=sys.stderr)
        return 2
    if os.geteuid() != 0:
        print('error: --via virsh runs two libvirtd instances and needs root',
              file=sys.stderr)
        return 2
    # A SIGTERM or SIGHUP must still tear everything down (SIGINT raises
    # KeyboardInterrupt, which does).
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, lambda *_: sys.exit(128 + 15))

    wd = lab.workdir()
    mem = lab.parse_size(o.mem_size)
    ram = lab.parse_size(o.ram)
    disk = os.path.join(wd, 'guest.img')
    lab.write_bootdisk(disk)
    # SeaBIOS boots the 512-byte boot block from a virtio disk only when
    # the disk is larger than that sector.
    os.truncate(disk, 1 << 20)
    common = ['--mem-size', str(mem), '--mutate-rate', str(o.mutate_rate),
              '--dma-rate', str(o.dma_rate), '--dma-addr', str(demo.DMA_ADDR),
              '--dma-pages', str(o.dma_pages)] + \
             (['--no-mmap'] if o.no_mmap else [])
    dst_extra = ['--version', '2.0.0'] if o.scenario == 'incompatible' else []
    servers, insts, fds, procs = [], [], [], []
    verdict = 'demo: FAIL reason=internal'
    try:
        print('demo: %s scenario via virsh, device memory %d MiB, guest RAM '
              '%d MiB, mmap %s, work dir %s' %
              (o.scenario, mem >> 20, ram >> 20,
               'off' if o.no_mmap else 'on', wd))
        # --persist: the source device outlives its QEMU (which libvirt
        # ends after the switchover; the device then resets), so that its
        # log and status stay at hand.
        ssrv = lab.DeviceServer(wd, 'src-dev', common + ['--start',
                                                         '--persist'])
        dsrv = lab.DeviceServer(wd, 'dst-dev', common + dst_extra)
        servers += [ssrv, dsrv]
        src = virsh_lab.Libvirtd(wd, 'src')
        dst = virsh_lab.Libvirtd(wd, 'dst')
        insts += [src, dst]
        t = time.time()
        src.start()
        dst.start()
        print('libvirtd %s (pid %d, host_uuid %s) and %s (pid %d, '
              'host_uuid %s) up in %.1fs\n  source      %s\n  destination %s'
              % (src.name, src.pid, src.host_uuid, dst.name, dst.pid,
                 dst.host_uuid, time.time() - t, src.uri, dst.uri))

        # Each daemon probes the emulator once (then caches it: the build
        # has KVM, so libvirt does not re-probe on every lookup); the
        # destination probes while the source domain starts, as a host that
        # had run this QEMU before would have it cached.
        probe = dst.probe_async(lab.QEMU)
        procs.append(probe)
        xml = os.path.join(wd, 'src.xml')
        with open(xml, 'w') as f:
            f.write(virsh_lab.domain_xml(DOM, lab.QEMU, ram, disk,
                                         os.path.join(wd, 'src.serial'),
                                         ssrv.sock))
        t = time.time()
        src.virsh('create', xml)
        print('virsh create: domain %s runs on %s (%.1fs, QEMU pid %d)' %
              (DOM, src.name, time.time() - t, src.qemu_pid(DOM)))
        # The statistics of the finished job, as the source reports them
        # (with the device-state bytes, which the destination's
        # domjobinfo --completed lacks).
        events = JobEvents(src, os.path.join(wd, 'job-completed.log'))
        procs.append(events)
        if not lab.wait_guest(wd, 'src'):
            raise RuntimeError('the guest did not boot')
        print('guest booted and dirtying its memory; device status: %s' %
              ssrv.cmd('status'))

        # The destination's XML: the source's, with this side's device
        # socket and serial file.
        mxml = src.virsh('dumpxml', '--migratable', DOM).stdout
        dxml = (mxml.replace(ssrv.sock, dsrv.sock)
                .replace(os.path.join(wd, 'src.serial'),
                         os.path.join(wd, 'dst.serial')))
        if dsrv.sock not in dxml:
            raise RuntimeError('the migratable XML has no device socket %s'
                               % ssrv.sock)
        dpath = os.path.join(wd, 'dst.xml')
        with open(dpath, 'w') as f:
            f.write(dxml)
        print('destination probed %s in %.1fs' % (lab.QEMU, probe.wait()))
        src.virsh('migrate-setmaxdowntime', DOM, str(o.downtime_limit))
        sram = virsh_lab.memfd_of(src.qemu_pid(DOM), ram)
        fds.append(sram)

        args = ['--live', '--verbose', '--suspend', '--p2p',
                '--xml', dpath,
                '--migrateuri', 'unix://' + os.path.join(wd, 'migration.sock')]
        bw = lab.parse_size(o.bandwidth)
        if bw:
            args += ['--bandwidth', str(max(1, bw >> 20))]
        args += [DOM, dst.uri]
        watch = StoppedDevice(ssrv)
        procs.append(watch)
        watch.start()
        rc, out, secs = run_migrate(src, args,
                                    os.path.join(wd, 'virsh-migrate.log'))
        print('virsh migrate: exit status %d after %.1fs' % (rc, secs))
        if o.scenario == 'incompatible':
            verdict = incompatible(src, dst, ssrv, dsrv, rc, out, demo)
        else:
            verdict = live(o, src, dst, watch, dsrv, rc, out, secs, sram,
                           mem, ram, demo, events)
    except Exception as e:      # pylint: disable=broad-except
        verdict = 'demo: FAIL reason=%s' % str(e).replace(' ', '_')[:300]
    finally:
        for p in procs:
            p.stop()
        for fd in fds:
            os.close(fd)
        for inst in insts:
            try:
                inst.stop()
            except Exception as e:  # pylint: disable=broad-except
                print('teardown: %s' % e)
                verdict = verdict.replace('PASS', 'FAIL').replace(
                    'REFUSED', 'FAIL') + ' teardown=unclean'
        virsh_lab.release_run_mountpoint()
        for s in servers:
            s.stop()
        if not o.keep and verdict.split()[1] in ('PASS', 'REFUSED'):
            shutil.rmtree(wd, ignore_errors=True)
        else:
            print('work dir kept: %s (libvirtd and QEMU logs in '
                  'libvirt-*/log)' % wd)
        print(verdict)
    return 0 if verdict.split()[1] in ('PASS', 'REFUSED') else 1


def live(o, src, dst, watch, dsrv, rc, out, secs, sram, mem, ram, demo,
         events):
    if rc != 0:
        return 'demo: FAIL reason=virsh_migrate:%s' % (
            virsh_error(out) or 'exit_%d' % rc).replace(' ', '_')[:300]
    state = dst.virsh('domstate', DOM, check=False).stdout.strip()
    gone = DOM not in src.domains()
    check('domain on the destination, paused (--suspend)',
          state == 'paused', state)
    check('domain gone from the source', gone)
    # Both devices are stopped now: the source's QEMU is gone (its device
    # server persists), the destination is paused.
    watch.stop()
    if not watch.digest:
        return ('demo: FAIL reason=the_source_device_was_not_seen_stopped_'
                'after_the_switchover (%s)' % watch.last)
    sdig, ddig = watch.digest, dsrv.digest()
    dram = virsh_lab.memfd_of(dst.qemu_pid(DOM), ram)
    try:
        swin = dma_window(sram, demo.DMA_ADDR, o.dma_pages)
        dwin = dma_window(dram, demo.DMA_ADDR, o.dma_pages)
    finally:
        os.close(dram)
    ram_ok = swin == dwin
    written, bad = stamps(dwin, o.dma_pages)
    dma = int(watch.status.get('dma_count', 0))
    dig_ok = check('device digests equal', sdig == ddig,
                   '%s / %s' % (sdig[:16], ddig[:16]))
    ram_ok = check('guest RAM written by DMA equal', ram_ok,
                   '%d KiB, %d DMA page writes' % (len(swin) >> 10, dma))
    st_ok = check('DMA window holds the device\'s stamps', written > 0 and
                  bad == 0, '%d pages stamped, %d bad' % (written, bad))
    info, _ = events.stats()
    print('\n'.join(textwrap.wrap(
        ' '.join('%s=%s' % kv for kv in info.items()),
        initial_indent='virsh event job-completed (source): ',
        subsequent_indent='    ', width=78)))
    dst.virsh('resume', DOM)
    state = dst.virsh('domstate', DOM, check=False).stdout.strip()
    works = demo.device_works(dsrv)
    run_ok = check('destination running after virsh resume, device working',
                   state == 'running' and works, state)
    print('source device arcs:      %s' % ', '.join(watch.server.states()))
    print('destination device arcs: %s' % ', '.join(dsrv.states()))
    total = int(info.get('time_elapsed', 0))
    downtime = int(info.get('downtime', 0))
    vfio = int(info.get('vfio_data_transferred', 0))
    mbps = vfio / 1e6 / max(total / 1000.0, 1e-3)
    print('virsh migrate %.1fs; libvirt: total %d ms, downtime %d ms, '
          'device state %.1f MiB (device memory %d MiB + config), '
          'all data %.1f MiB' %
          (secs, total, downtime, vfio / lab.MiB, mem >> 20,
           int(info.get('data_processed', 0)) / lab.MiB))
    stats_ok = check('libvirt reported the job (virsh event job-completed)',
                     total > 0 and vfio >= mem, '%d ms, %d device-state '
                     'bytes' % (total, vfio))
    good = dig_ok and ram_ok and st_ok and run_ok and stats_ok and dma > 0
    return ('demo: %s device_mem=%d downtime_ms=%d total_ms=%d '
            'devmem_MBps=%d virsh_s=%.1f integrity=%s' %
            ('PASS' if good else 'FAIL', mem >> 20, downtime, total, mbps,
             secs, 'ok' if good else 'bad'))


def incompatible(src, dst, ssrv, dsrv, rc, out, demo):
    err = virsh_error(out)
    failed = check('virsh migrate failed', rc != 0, 'exit status %d' % rc)
    # QEMU's reason, as libvirt passes it on: "...: DEVICE: device refused
    # migration_version: source 'S', destination 'D'..."
    m = re.search(r"device refused migration_version: source '([^']*)', "
                  r"destination '([^']*)'", err)
    device = (err[:m.start()].rstrip(': ').rsplit(': ', 1)[-1]
              if m and m.group(1) and m.group(2) else '')
    named = check("libvirt's error carries QEMU's reason (device and both "
                  "migration_version strings)", bool(device),
                  'device %s, source %r, destination %r' %
                  (device, m.group(1), m.group(2)) if device else
                  err or 'no error text')
    time.sleep(0.5)
    state = src.virsh('domstate', DOM, check=False).stdout.strip()
    dstate = ssrv.status().get('state')
    works = demo.device_works(ssrv)
    run_ok = check('source domain running, device %s' % dstate,
                   state == 'running' and dstate == 'RUNNING' and works,
                   '%s, device %s' % (state, 'working' if works else
                                      'NOT working'))
    gone = check('no domain left on the destination', not dst.domains())
    # What the destination QEMU wrote to its log (libvirt's
    # /var/log/libvirt/qemu/DOMAIN.log of the destination instance).
    why = [ln for ln in dst.qemu_log(DOM).splitlines()
           if 'refused migration_version' in ln]
    if why:
        print('destination QEMU log: %s' % why[0])
    with open(dsrv.log) as f:
        dev_ok = check('destination device refused the version',
                       'refused' in f.read())
    if device:
        reason = '%s: %s' % (device, m.group(0))
    else:
        reason = err or 'virsh_exit_%d' % rc
    reason = reason.replace(' ', '_')
    if failed and named and run_ok and gone and dev_ok:
        return 'demo: REFUSED reason=%s source=running' % reason
    return 'demo: FAIL reason=%s source=%s' % (reason, state or 'unknown')

