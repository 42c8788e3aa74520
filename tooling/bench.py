#!/usr/bin/env python3
# SPDX-License-Identifier: GPL-2.0-or-later
"""Benchmark device-state migration against guest-RAM migration.

All migrations go from one QEMU to another on this host over a unix
socket, one at a time, with max-bandwidth 0 (unlimited in this QEMU:
RATE_LIMIT_DISABLED), but those of 9.  The measures:

 1. throughput: device memory of S bytes (small guest RAM) against guest
    RAM of S bytes of random content (tiny device memory), S = 256 MiB and
    1 GiB, data regions mmapped and not (--no-mmap).  Throughput = bytes /
    query-migrate total-time.
 2. switchover: the time the device state takes in the stop-and-copy
    phase (trace: STOP|LOGGING -> vfio_ds_save_complete) against its bytes
    / the bandwidth the migration core estimated for the switchover (its
    last migrate_transferred before the stop, on which its downtime
    prediction rests), --repeat runs, median; also against the throughput
    of the 256 MiB migration of 1 (the measure of earlier rounds).
 3. the system-memory dirty-bitmap query: its cost per log_sync per GiB
    of guest RAM (trace: vfio_ds_bitmap_query..._done per section, summed
    between migration_bitmap_sync_start and _end).
 4. throughput against --chunk-size (size of the DATA_MEMORY region).
 5. downtime at QEMU's default downtime limit (300 ms): 1 GiB of mmapped
    device memory that the device mutates (--limit-mutate-rate) during the
    migration; whether it converged within --limit-timeout seconds (if not:
    the figures query-migrate and the trace give at that point, then
    migrate_cancel).
 6. CPU seconds per GiB moved, device memory against guest RAM (1 GiB,
    mmapped): utime+stime of both QEMUs and both device servers from
    /proc/<pid>/stat, between the migrate command and the end of the load
    (the runs of 1 when it ran with 1G, else runs of its own).
 7. 4 devices x 256 MiB in one VM (--multi-devs, --multi-mem), mutating at
    --limit-mutate-rate / 4 each (the same total as 5): downtime at 300 ms
    and, when that does not converge, with the limit raised live until the
    migration completes; then multifd device state: --repeat pairs of
    migrations with the multifd capability (--multifd-channels) at a high
    limit (--multifd-limit), the devices' stop-and-copy state on the main
    channel (x-migration-multifd-transfer=off) and on the multifd channels
    (=on): downtime, and downtime per GiB of device state moved in
    stop-and-copy (which varies from run to run), medians.
 8. breakdown of one 1 GiB device-memory migration (mmapped, idle device):
    phases and per-chunk times from the source's and the destination's
    traces, CPU per thread from /proc/<pid>/task/*/stat.
 9. fairness under max-bandwidth (--fair-bandwidth): guest RAM of random
    content (--fair-ram) and device memory (--fair-mem, mmapped, idle
    device) in one migration at the default downtime limit, query-migrate
    sampled every --fair-interval ms: the first byte of each, the RAM and
    device shares of each quarter of the precopy phase, the longest time
    one made no progress while the other did, each one's rate.

NOTE: the source VMs run (no disk: SeaBIOS finds nothing to boot and
idles) instead of being paused with -S: with a paused source the
switchover never stops the device (vm_stop_force_state() does not notify
a VM that is not running), the device refuses to hand out its config
while running (EBUSY) and the migration fails.  Use --paused to see it.

Every run checks that the migration completed and compares the source's
and the destination's device digests (and guest RAM samples); a failed
run is reported as such.  Results go to a JSON file and a PNG plot."""

import argparse
import datetime
import filecmp
import glob
import json
import os
import re
import shutil
import subprocess
import sys
import time

import lab

MiB = lab.MiB
GiB = 1 << 30
DMA_ADDR = 16 * MiB
CHUNKS = ['64K', '128K', '256K', '512K', '1M', '2M', '4M']
# -msg timestamp=on: 'PID@SEC.USEC:event args' or 'ISO-8601Z event args'
TS_RE = re.compile(r'^(?:\d+@(\d+\.\d+):|(\d{4}-\d\d-\d\dT[\d:.]+)Z )'
                   r'(\w+)\s*(.*)$')
DEFAULT_DOWNTIME_LIMIT = 300      # ms, QEMU's default (migration/options.c)
# Section 7: when 300 ms does not converge, raise the limit live, step by
# step: (limit ms, seconds to wait for completion at it).
RAISE_STEPS = ((1000, 10), (2000, 10), (5000, 15), (10000, 15), (30000, 20))
CLK_TCK = os.sysconf('SC_CLK_TCK')


def opts():
    p = argparse.ArgumentParser(prog='make bench BENCH_ARGS=...',
                                description=__doc__.split('\n\n')[0])
    p.add_argument('--out', default=os.path.join(lab.TOP, '.work', 'bench'),
                   help='results directory (default .work/bench)')
    p.add_argument('--sizes', default='256M,1G',
                   help='sizes S for measure 1 (default 256M,1G)')
    p.add_argument('--only', default='1,2,3,4,5,6,7,8,9',
                   help='measures to run, e.g. 1,4 (default all: 1-9)')
    p.add_argument('--repeat', type=int, default=3,
                   help='measure 1: runs per case, the median counts (3)')
    p.add_argument('--chunk-repeat', type=int, default=2,
                   help='measure 4: runs per chunk size (2; with an even '
                   'count the median is the upper middle run)')
    p.add_argument('--chunk-mmap-only', action='store_true',
                   help='measure 4 only with mmapped data regions')
    p.add_argument('--mutate-rate', type=int, default=200000,
                   help='measure 2: device pages mutated per second '
                   '(200000; measures 5 and 7 too, unless '
                   '--limit-mutate-rate)')
    p.add_argument('--limit-mutate-rate', type=int, default=None,
                   help='measures 5 and 7: device pages mutated per second '
                   '(in all; default --mutate-rate)')
    p.add_argument('--limit-mem', default='1G',
                   help='measure 5: device memory (default 1G)')
    p.add_argument('--limit-timeout', type=int, default=60,
                   help='measures 5 and 7: seconds the migration may take '
                   'at the 300 ms limit before it counts as not converged '
                   '(default 60)')
    p.add_argument('--multi-devs', type=int, default=4,
                   help='measure 7: devices in the VM (default 4)')
    p.add_argument('--multi-mem', default='256M',
                   help='measure 7: device memory of each (default 256M)')
    p.add_argument('--multifd-channels', type=int, default=4,
                   help='measure 7, multifd runs: multifd-channels (4)')
    p.add_argument('--multifd-limit', type=int, default=10000,
                   help='measure 7, multifd runs: downtime-limit, ms '
                   '(10000)')
    p.add_argument('--breakdown-mem', default='1G',
                   help='measure 8: device memory (default 1G)')
    p.add_argument('--fair-bandwidth', default='64M',
                   help='measure 9: max-bandwidth, bytes per second '
                   '(default 64M)')
    p.add_argument('--fair-ram', default='256M',
                   help='measure 9: guest RAM, random content (default '
                   '256M)')
    p.add_argument('--fair-mem', default='256M',
                   help='measure 9: device memory (default 256M)')
    p.add_argument('--fair-interval', type=int, default=100,
                   help='measure 9: ms between query-migrate samples '
                   '(default 100)')
    p.add_argument('--bitmap-rams', default='1G,4G',
                   help='measure 3: guest RAM sizes (default 1G,4G)')
    p.add_argument('--paused', action='store_true',
                   help='measures 1 and 4: source VM paused with -S (fails '
                   'in this series, see NOTE)')
    p.add_argument('--keep', action='store_true', help='keep the work dir')
    return p.parse_args()


def log(msg):
    sys.stdout.write(msg + '\n')
    sys.stdout.flush()


def read_trace(path):
    """[(seconds, event, args)] of a trace written with -msg timestamp=on."""
    out = []
    if not os.path.exists(path):
        return out
    for line in open(path, errors='replace'):
        m = TS_RE.match(line.strip())
        if not m:
            continue
        if m.group(1):
            t = float(m.group(1))
        else:
            t = datetime.datetime.strptime(
                m.group(2), '%Y-%m-%dT%H:%M:%S.%f').replace(
                    tzinfo=datetime.timezone.utc).timestamp()
        out.append((t, m.group(3), m.group(4)))
    return out


def _stat_cpu(path):
    """utime + stime in seconds of a /proc/.../stat (a process: with its
    exited threads; a task: that thread)."""
    with open(path) as f:
        text = f.read()
    fields = text[text.rindex(')') + 2:].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


class CpuSampler:
    """CPU time of processes and their threads over a migration.

    start() and stop() read each process's /proc/<pid>/stat (its total,
    with the threads that exited meanwhile) and every thread's
    /proc/<pid>/task/<tid>/stat; poll() in between keeps the last figure
    of each thread, so that one that exits before stop() (the source's
    mig/src/main) still counts up to its last sample; what no sample saw
    is the process's 'unattributed' rest.  Resolution: 1/CLK_TCK s."""

    def __init__(self, procs):
        self.procs = [(label, pid) for label, pid in procs if pid]
        self.t0 = self.t1 = None

    @staticmethod
    def _threads(pid):
        out = {}
        for d in glob.glob('/proc/%d/task/*' % pid):
            try:
                with open(d + '/comm') as f:
                    comm = f.read().strip()
                out[int(os.path.basename(d))] = (comm, _stat_cpu(d + '/stat'))
            except (OSError, ValueError, IndexError):
                pass            # the thread is gone
        return out

    def _proc(self, pid):
        try:
            return _stat_cpu('/proc/%d/stat' % pid)
        except (OSError, ValueError, IndexError):
            return None

    @staticmethod
    def _minflt(pid):
        """Minor page faults of the process (with its exited threads)."""
        try:
            with open('/proc/%d/stat' % pid) as f:
                text = f.read()
            return int(text[text.rindex(')') + 2:].split()[7])
        except (OSError, ValueError, IndexError):
            return None

    def start(self):
        self.t0 = time.time()
        self.p0 = {label: self._proc(pid) for label, pid in self.procs}
        self.f0 = {label: self._minflt(pid) for label, pid in self.procs}
        self.th0 = {label: self._threads(pid) for label, pid in self.procs}
        self.last = {label: dict(v) for label, v in self.th0.items()}

    def poll(self):
        if self.t0 is None:
            return
        for label, pid in self.procs:
            self.last[label].update(self._threads(pid))

    def stop(self):
        if self.t0 is None:
            return
        self.poll()
        self.t1 = time.time()
        self.p1 = {label: self._proc(pid) for label, pid in self.procs}
        self.f1 = {label: self._minflt(pid) for label, pid in self.procs}

    def result(self):
        """{'wall_s', 'cpu_s' (all processes), 'procs': {label: {'cpu_s',
        'minor_faults', 'threads': {comm: cpu_s}, 'unattributed_s'}}}."""
        if self.t1 is None:
            return None
        procs, total = {}, 0.0
        for label, _ in self.procs:
            p0, p1 = self.p0[label], self.p1[label]
            if p0 is None or p1 is None:
                procs[label] = {'cpu_s': None, 'error': 'process gone'}
                continue
            threads = {}
            for tid, (comm, cpu) in self.last[label].items():
                before = self.th0[label].get(tid, (comm, 0.0))[1]
                threads[comm] = round(threads.get(comm, 0.0) + cpu - before,
                                      3)
            d = p1 - p0
            total += d
            f0, f1 = self.f0[label], self.f1[label]
            procs[label] = {
                'cpu_s': round(d, 3),
                'minor_faults': f1 - f0 if None not in (f0, f1) else None,
                'threads': dict(sorted(threads.items(),
                                       key=lambda kv: -kv[1])),
                'unattributed_s': round(d - sum(threads.values()), 3)}
        return {'wall_s': round(self.t1 - self.t0, 3),
                'cpu_s': round(total, 3), 'clk_tck': CLK_TCK,
                'procs': procs}


class _Dev:
    """A device server whose -device argument carries extra properties."""

    def __init__(self, srv, props):
        self.srv, self.props = srv, props or {}

    def device_arg(self, qdev_id='dev0'):
        d = json.loads(self.srv.device_arg(qdev_id))
        d.update(self.props)
        return json.dumps(d)


class Run:
    """One migration: source and destination device servers and QEMUs."""

    def __init__(self, wd, tag):
        self.wd = os.path.join(wd, tag)
        os.makedirs(self.wd)
        self.tag = tag
        self.servers, self.vms = [], []

    def start(self, ram, dev_args, src_dev_extra=(), mem_path=None,
              paused=False, trace=(), ndev=1, dst_trace=(), dev_props=None):
        """ndev devices per side (dev0, dev1, ...; servers src-dev,
        src-dev1, ...); dst_trace: trace events of the destination (its
        trace in dst.trace); dev_props: extra -device properties."""
        def name(side, i):
            return '%s-dev%s' % (side, '' if i == 0 else i)
        self.ssrvs, self.dsrvs = [], []
        for i in range(ndev):
            self.ssrvs.append(lab.DeviceServer(self.wd, name('src', i),
                                               dev_args +
                                               list(src_dev_extra)))
            self.servers.append(self.ssrvs[-1])
            self.dsrvs.append(lab.DeviceServer(self.wd, name('dst', i),
                                               dev_args))
            self.servers.append(self.dsrvs[-1])
        self.ssrv, self.dsrv = self.ssrvs[0], self.dsrvs[0]

        def devices(srvs):
            more = []
            for i, srv in enumerate(srvs[1:], 1):
                more += ['-device', _Dev(srv, dev_props).device_arg(
                    'dev%d' % i)]
            return _Dev(srvs[0], dev_props), more
        extra = ['-S'] if paused else []
        # Thread names (mig/src/main, CPU 0/TCG, ...) for the CPU figures.
        extra += ['-name', 'src,debug-threads=on']
        old = os.environ.pop('DEMO_TRACE', None)
        try:
            if trace:
                os.environ['DEMO_TRACE'] = trace[0]
                extra += ['-msg', 'timestamp=on']
                for t in trace[1:]:
                    extra += ['-trace', t]
            first, more = devices(self.ssrvs)
            self.src = lab.vm(self.wd, 'src', first, ram, extra=extra + more,
                              mem_path=mem_path)
            self.vms.append(self.src)
            os.environ.pop('DEMO_TRACE', None)
            dextra = ['-S', '-name', 'dst,debug-threads=on']
            if dst_trace:
                os.environ['DEMO_TRACE'] = dst_trace[0]
                dextra += ['-msg', 'timestamp=on']
                for t in dst_trace[1:]:
                    dextra += ['-trace', t]
            first, more = devices(self.dsrvs)
            self.dst = lab.vm(self.wd, 'dst', first, ram, incoming=True,
                              extra=dextra + more)
            self.vms.append(self.dst)
        finally:
            os.environ.pop('DEMO_TRACE', None)
            if old is not None:
                os.environ['DEMO_TRACE'] = old
        self.trace = os.path.join(self.wd, 'src.trace')
        self.dst_trace = os.path.join(self.wd, 'dst.trace')

    def cpu_sampler(self):
        """A CpuSampler of both QEMUs and all device servers."""
        procs = [('src-qemu', self.src.get_pid()),
                 ('dst-qemu', self.dst.get_pid())]
        procs += [(s.name, s.proc.pid) for s in self.ssrvs + self.dsrvs]
        return CpuSampler(procs)

    def migrate(self, downtime_limit=DEFAULT_DOWNTIME_LIMIT, timeout=180,
                cpu=None, raise_to=(), caps=None, params=None,
                max_bandwidth=0, on_info=None, poll_s=0.05):
        """Migrate and wait, at most @timeout seconds; then, for each
        (limit, seconds) of @raise_to, raise downtime-limit to limit and
        wait seconds more; then migrate_cancel.  @cpu: a CpuSampler,
        started at the migrate command, polled while waiting, stopped when
        the destination is done.  @on_info(info, t): each query-migrate
        answer, t seconds after the migrate command (the middle of the
        query), every @poll_s seconds.  'converged': completed within
        @timeout at @downtime_limit; 'at_timeout': query-migrate when
        @timeout passed."""
        for m in (self.src, self.dst):
            lab.set_caps(m, return_path=True, switchover_ack=True,
                         **(caps or {}))
            if params:
                m.cmd('migrate-set-parameters', **params)
        # max-bandwidth 0 = RATE_LIMIT_DISABLED in this QEMU
        # (migration/migration-stats.c); checked back below.
        self.src.cmd('migrate-set-parameters', max_bandwidth=max_bandwidth,
                     downtime_limit=downtime_limit)
        params = self.src.cmd('query-migrate-parameters')
        if params.get('max-bandwidth') != max_bandwidth:
            raise RuntimeError('max-bandwidth is %r, not %d' %
                               (params.get('max-bandwidth'), max_bandwidth))
        uri = 'unix:' + os.path.join(self.wd, 'migration.sock')
        self.dst.cmd('migrate-incoming', uri=uri)
        time.sleep(0.1)
        if cpu:
            cpu.start()
        t0 = time.time()
        self.src.cmd('migrate', uri=uri)
        deadline = t0 + timeout
        steps = list(raise_to)
        limit = downtime_limit
        at_timeout = None
        while True:
            ta = time.time()
            info = self.src.cmd('query-migrate')
            if on_info:
                on_info(info, (ta + time.time()) / 2 - t0)
            if cpu:
                cpu.poll()
            if info.get('status') in ('completed', 'failed', 'cancelled'):
                break
            if time.time() > deadline:
                if at_timeout is None:
                    at_timeout = dict(info, after_s=round(time.time() - t0,
                                                          1),
                                      downtime_limit_ms=limit)
                if steps:
                    limit, secs = steps.pop(0)
                    self.src.cmd('migrate-set-parameters',
                                 downtime_limit=limit)
                    deadline = time.time() + secs
                    continue
                self.src.cmd('migrate_cancel')
                end = time.time() + 30
                while time.time() < end:
                    info = self.src.cmd('query-migrate')
                    if info.get('status') not in ('active', 'cancelling',
                                                  'device'):
                        break
                    time.sleep(0.1)
                info['error-desc'] = 'timeout after %ds' % timeout
                break
            time.sleep(max(0.0, poll_s - (time.time() - ta)))
        # Let the destination finish loading before anything is compared.
        end = time.time() + 30
        st = None
        while time.time() < end:
            try:
                st = self.dst.cmd('query-migrate').get('status')
            except Exception:   # pylint: disable=broad-except
                # A destination whose load failed (a cancel) exits.
                st = 'exited'
                break
            if cpu:
                cpu.poll()
            if st in ('completed', 'failed'):
                break
            time.sleep(0.05)
        if cpu:
            cpu.stop()
        ram = info.get('ram', {})
        r = {'status': info.get('status'),
             'error': info.get('error-desc'),
             'total_ms': info.get('total-time', 0),
             'setup_ms': info.get('setup-time', 0),
             'downtime_ms': info.get('downtime', 0),
             'ram_bytes': ram.get('transferred', 0),
             'ram_normal_bytes': ram.get('normal-bytes', 0),
             'vfio_bytes': info.get('vfio', {}).get('transferred', 0),
             'dst_status': st,
             't_migrate': t0,
             'final_downtime_limit_ms': limit}
        r['ok'] = r['status'] == 'completed' and st == 'completed'
        r['converged'] = r['ok'] and at_timeout is None
        if at_timeout is not None:
            r['at_timeout'] = at_timeout
        return r

    def digests(self):
        """(all equal, source digests, destination digests)."""
        s = [x.digest() for x in self.ssrvs]
        d = [x.digest() for x in self.dsrvs]
        if len(s) == 1:
            return s == d, s[0], d[0]
        return s == d, s, d

    def stop(self):
        for m in self.vms:
            try:
                m.shutdown(timeout=10)
            except Exception:   # pylint: disable=broad-except
                m.kill()
        for s in self.servers:
            s.stop()
        self.vms, self.servers = [], []


def mbps(nbytes, ms):
    return nbytes / 1e6 / (ms / 1000.0) if ms else 0.0


def fill_random(path, size):
    with open('/dev/urandom', 'rb') as src, open(path, 'wb') as dst:
        left = size
        while left:
            n = min(left, 16 * MiB)
            dst.write(src.read(n))
            left -= n


PAUSED = False


def one_run(wd, tag, ram, dev_args, *, kind, nbytes_key, mem_path=None,
            ram_samples=False, **kw):
    """One migration of an idle VM (see NOTE); its figures and checks."""
    run = Run(wd, tag)
    res = {'tag': tag, 'kind': kind}
    try:
        run.start(ram, dev_args, mem_path=mem_path, paused=PAUSED, **kw)
        cpu = run.cpu_sampler()
        res.update(run.migrate(cpu=cpu))
        if res['ok']:
            res['digest_ok'] = run.digests()[0]
            if ram_samples:
                res['ram_sample_ok'] = ram_equal(run, ram)
        res['bytes'] = res[nbytes_key]
        res['MBps'] = mbps(res['bytes'], res['total_ms'])
        res['MBps_all'] = mbps(res['ram_bytes'] + res['vfio_bytes'],
                               res['total_ms'])
        res['cpu'] = cpu.result()
        if res['cpu'] and res['bytes']:
            res['cpu_s'] = res['cpu']['cpu_s']
            res['cpu_s_per_GiB'] = res['cpu_s'] / (res['bytes'] / GiB)
    except Exception as e:      # pylint: disable=broad-except
        res.update(ok=False, error='%s: %s' % (type(e).__name__, e))
    finally:
        run.stop()
    res['valid'] = bool(res.get('ok') and res.get('digest_ok') and
                        res.get('ram_sample_ok', True))
    log('  %-22s %-9s %8.1f MiB in %6d ms = %7.0f MB/s  %s' %
        (tag, res.get('status', 'error'), res.get('bytes', 0) / MiB,
         res.get('total_ms', 0), res.get('MBps', 0),
         'ok' if res['valid'] else 'FAILED %s' % (res.get('error') or
                                                 'integrity check')))
    return res


def ram_equal(run, ram):
    """Compare guest RAM windows of source and destination (1 MiB at the
    start, the middle and the end of RAM below the PCI hole)."""
    top = min(ram, 3 * GiB)
    ok = True
    for i, addr in enumerate((2 * MiB, top // 2, top - 2 * MiB)):
        a = os.path.join(run.wd, 'src-%d.ram' % i)
        b = os.path.join(run.wd, 'dst-%d.ram' % i)
        run.src.cmd('pmemsave', val=addr, size=MiB, filename=a)
        run.dst.cmd('pmemsave', val=addr, size=MiB, filename=b)
        ok = ok and filecmp.cmp(a, b, shallow=False)
    return ok


# ---------------------------------------------------------------------------

def aggregate(runs):
    """The median run (by MB/s) of repeated runs, with all the figures;
    valid only if every run was."""
    good = sorted((r for r in runs if r['valid']), key=lambda r: r['MBps'])
    res = dict(good[len(good) // 2]) if good else dict(runs[-1])
    res['runs_MBps'] = [round(r.get('MBps', 0), 1) if r['valid'] else None
                        for r in runs]
    res['runs_total_ms'] = [r.get('total_ms') for r in runs]
    res['runs_cpu_s_per_GiB'] = [
        round(r['cpu_s_per_GiB'], 3) if r['valid'] and
        r.get('cpu_s_per_GiB') is not None else None for r in runs]
    res['valid'] = bool(good) and len(good) == len(runs)
    if not res['valid']:
        res['error'] = '; '.join(sorted(set(
            str(r.get('error') or 'integrity check') for r in runs
            if not r['valid'])))
    return res


def measure_throughput(o, wd, results):
    log('== 1. device memory vs guest RAM throughput (unix socket), '
        '%d run(s) each, median' % o.repeat)
    out = {}
    sizes = [lab.parse_size(s) for s in o.sizes.split(',')]
    shm = '/dev/shm/vfio-bench-%d.ram' % os.getpid()
    try:
        t = time.time()
        fill_random(shm, max(sizes))
        log('  (%d MiB of random guest RAM in %s, %.1fs)' %
            (max(sizes) >> 20, shm, time.time() - t))
        for size in sizes:
            name = '%dM' % (size >> 20)
            runs = {'ram': [], 'dev_mmap': [], 'dev_nommap': []}
            for rep in range(o.repeat):
                # Interleaved, so that drift of the shared host hits all.
                runs['ram'].append(one_run(
                    wd, 'ram-%s-r%d' % (name, rep), size,
                    ['--mem-size', '1M'], kind='ram', mem_path=shm,
                    nbytes_key='ram_bytes', ram_samples=True))
                for mmap in (True, False):
                    key = 'dev_mmap' if mmap else 'dev_nommap'
                    runs[key].append(one_run(
                        wd, 'dev-%s-%s-r%d' % (name, key[4:], rep), 32 * MiB,
                        ['--mem-size', str(size)] +
                        ([] if mmap else ['--no-mmap']),
                        kind=key, nbytes_key='vfio_bytes'))
            case = {k: aggregate(v) for k, v in runs.items()}
            ref = case['ram']
            for key in ('dev_mmap', 'dev_nommap'):
                dev = case[key]
                ok = ref['valid'] and dev['valid'] and ref['MBps'] > 0
                case['ratio_' + key[4:]] = (dev['MBps'] / ref['MBps']
                                            if ok else None)
            out[name] = case
    finally:
        if os.path.exists(shm):
            os.unlink(shm)
    results['throughput'] = out
    return out


def one_switchover(o, wd, rep, bw_MBps):
    """One run of 2: the device's share of the stop-and-copy phase."""
    mem = 256 * MiB
    run = Run(wd, 'switchover-r%d' % rep)
    res = {'device_mem': mem, 'mutate_rate': o.mutate_rate,
           'downtime_limit_ms': 5000, 'bandwidth_MBps': bw_MBps}
    try:
        # A running VM (no disk: SeaBIOS, idle) so that the switchover
        # stops the device; device mutating fast so the last set is big.
        run.start(64 * MiB, ['--mem-size', str(mem), '--mutate-rate',
                             str(o.mutate_rate), '--dma-rate', '0'],
                  src_dev_extra=['--start'], paused=False,
                  trace=('vfio_ds_set_state', 'vfio_ds_set_open',
                         'vfio_ds_save_chunk', 'vfio_ds_save_complete',
                         'vfio_ds_save_config', 'savevm_section_start',
                         'migration_completion_vm_stop',
                         'migrate_transferred'))
        time.sleep(1.0)
        res.update(run.migrate(downtime_limit=5000))
        if res['ok']:
            res['digest_ok'] = run.digests()[0]
        tr = read_trace(run.trace)
        # The VM stop: RUNNING|LOGGING -> P2P|LOGGING with CAP_P2P (the
        # second edition), straight to STOP|LOGGING without it.
        t_stop = next((t for t, ev, a in tr if ev == 'vfio_ds_set_state' and
                       (a.endswith('RUNNING|LOGGING -> P2P|LOGGING') or
                        a.endswith('RUNNING|LOGGING -> STOP|LOGGING'))), None)
        t_done = next((t for t, ev, a in tr if ev == 'vfio_ds_save_complete'),
                      None)
        if t_stop is None or t_done is None:
            raise RuntimeError('trace has no STOP|LOGGING or save_complete')
        after = [(t, ev, a) for t, ev, a in tr if t_stop <= t <= t_done]
        chunks = sum(int(re.search(r'len 0x([0-9a-f]+)', a).group(1), 16)
                     for t, ev, a in after if ev == 'vfio_ds_save_chunk')
        sets = [int(re.search(r'of (\d+) bytes', a).group(1))
                for t, ev, a in after if ev == 'vfio_ds_set_open']
        config = int(re.search(r'config (\d+) bytes',
                               [a for t, ev, a in after
                                if ev == 'vfio_ds_save_config'][0]).group(1))
        # The bandwidth the core took for the switchover decision: its
        # last estimate before the stop (bytes per ms of the last window).
        core_bw = [int(re.search(r'bandwidth (\d+)', a).group(1))
                   for t, ev, a in tr
                   if ev == 'migrate_transferred' and t < t_stop]
        core_MBps = core_bw[-1] * 1000 / 1e6 if core_bw else None
        # Where the device's own section of the stop-and-copy begins.
        t_sec = next((t for t, ev, a in after if ev == 'savevm_section_start'
                      and 'vfio' in a), None)
        nbytes = chunks + config
        share_ms = (t_done - t_stop) * 1000
        ideal_ms = nbytes / 1e6 / core_MBps * 1000 if core_MBps else None
        ideal1_ms = nbytes / 1e6 / bw_MBps * 1000 if bw_MBps else None
        res.update(stop_bytes=nbytes, stop_chunk_bytes=chunks,
                   stop_sets_opened=sets, config_bytes=config,
                   device_share_ms=share_ms, core_bandwidth_MBps=core_MBps,
                   ideal_ms=ideal_ms,
                   ratio=share_ms / ideal_ms if ideal_ms else None,
                   ideal_ms_section1_bw=ideal1_ms,
                   ratio_section1_bw=(share_ms / ideal1_ms if ideal1_ms
                                      else None),
                   device_section_ms=((t_done - t_sec) * 1000
                                      if t_sec else None))
        if res.get('downtime_ms'):
            # The device's part of the downtime QEMU reports.
            res['device_share_of_downtime'] = share_ms / res['downtime_ms']
    except Exception as e:      # pylint: disable=broad-except
        res.update(ok=False, error='%s: %s' % (type(e).__name__, e))
    finally:
        run.stop()
    res['valid'] = bool(res.get('ok') and res.get('digest_ok') and
                        res.get('ratio'))
    if res.get('ratio'):
        log('  run %d: stop-and-copy device bytes %.1f MiB (sets opened at '
            'stop %s, config %d B): device share %.1f ms vs %.1f ms at the '
            "core's %.0f MB/s -> %.2fx (%s at %s MB/s of 1); downtime %d ms; "
            '%s' %
            (rep, res['stop_bytes'] / MiB, res['stop_sets_opened'],
             res['config_bytes'], res['device_share_ms'], res['ideal_ms'],
             res['core_bandwidth_MBps'], res['ratio'],
             fmt(res['ratio_section1_bw']), fmt(bw_MBps, '%.0f'),
             res['downtime_ms'], 'ok' if res['valid'] else 'FAILED'))
    else:
        log('  run %d FAILED: %s' % (rep, res.get('error')))
    return res


def measure_switchover(o, wd, results, bw_MBps):
    """
    2, --repeat runs: the device's time between its stop and the end of
    its complete section against its stop-and-copy bytes / the bandwidth
    the migration core estimated for the switchover (the figure its
    downtime prediction rests on), median; the ratio against the
    throughput of 1 (another migration, earlier) too, as before.
    """
    log('== 2. device state at switchover vs its bytes / channel '
        'bandwidth, %d run(s), median' % o.repeat)
    runs = [one_switchover(o, wd, rep, bw_MBps) for rep in range(o.repeat)]
    good = sorted((r for r in runs if r['valid']), key=lambda r: r['ratio'])
    if len(good) == len(runs):
        res = dict(good[len(good) // 2])
        r1 = sorted(r['ratio_section1_bw'] for r in good
                    if r.get('ratio_section1_bw'))
        res['ratio_section1_bw'] = r1[len(r1) // 2] if r1 else None
    else:
        res = dict(next(r for r in runs if not r['valid']))
    res['runs_ratio'] = [round(r['ratio'], 3) if r.get('ratio') else None
                         for r in runs]
    res['runs'] = runs
    results['switchover'] = res
    return res


def bitmap_costs(tr):
    """Per log_sync: (sum of query seconds, sections, pages)."""
    syncs, cur, qstart = [], None, None
    for t, ev, a in tr:
        if ev == 'migration_bitmap_sync_start':
            cur = [0.0, 0, 0]
        elif ev == 'migration_bitmap_sync_end' and cur is not None:
            syncs.append(tuple(cur))
            cur = None
        elif ev == 'vfio_ds_bitmap_query' and qstart is None:
            qstart = t
        elif ev == 'vfio_ds_bitmap_query_done' and qstart is not None:
            if cur is not None:
                cur[0] += t - qstart
                cur[1] += 1
                cur[2] += int(re.search(r'pages (\d+)', a).group(1))
            qstart = None
    return syncs


def measure_bitmap(o, wd, results):
    log('== 3. dirty-bitmap query cost per log_sync per GiB of guest RAM')
    out = {}
    for rs in o.bitmap_rams.split(','):
        ram = lab.parse_size(rs)
        run = Run(wd, 'bitmap-%s' % rs)
        res = {'ram': ram}
        try:
            # Running VM (no disk, idle SeaBIOS) so that the device is
            # stopped at the switchover and the digests compare.
            run.start(ram, ['--mem-size', '1M', '--mutate-rate', '0',
                            '--dma-rate', '20000', '--dma-addr',
                            str(DMA_ADDR), '--dma-pages', '4096'],
                      src_dev_extra=['--start'], paused=False,
                      trace=('vfio_ds_bitmap_query*',
                             'migration_bitmap_sync_*'))
            time.sleep(0.5)
            res.update(run.migrate())
            if res['ok']:
                res['digest_ok'] = run.digests()[0]
                a = os.path.join(run.wd, 'src.dma')
                b = os.path.join(run.wd, 'dst.dma')
                run.src.cmd('pmemsave', val=DMA_ADDR, size=4096 * 4096,
                            filename=a)
                run.dst.cmd('pmemsave', val=DMA_ADDR, size=4096 * 4096,
                            filename=b)
                res['dma_ram_ok'] = filecmp.cmp(a, b, shallow=False)
            res['dma_count'] = int(run.ssrv.status().get('dma_count', 0))
            syncs = [s for s in bitmap_costs(read_trace(run.trace)) if s[1]]
            if not syncs:
                raise RuntimeError('no bitmap queries in the trace')
            per = [s[0] * 1e6 / (ram / GiB) for s in syncs]
            res.update(log_syncs=len(syncs),
                       sections_per_sync=syncs[0][1],
                       pages_per_sync=syncs[0][2],
                       us_per_sync=[round(s[0] * 1e6, 1) for s in syncs],
                       us_per_GiB_per_sync=sum(per) / len(per),
                       us_per_GiB_per_sync_min=min(per))
        except Exception as e:  # pylint: disable=broad-except
            res.update(ok=False, error='%s: %s' % (type(e).__name__, e))
        finally:
            run.stop()
        res['valid'] = bool(res.get('ok') and res.get('digest_ok') and
                            res.get('dma_ram_ok') and
                            res.get('us_per_GiB_per_sync'))
        if res.get('us_per_GiB_per_sync'):
            log('  RAM %-4s %d log_syncs, %d sections, %d pages each: %s us '
                'per sync -> %.1f us/GiB/log_sync (min %.1f), DMA writes %d; '
                '%s' % (rs, res['log_syncs'], res['sections_per_sync'],
                        res['pages_per_sync'], res['us_per_sync'],
                        res['us_per_GiB_per_sync'],
                        res['us_per_GiB_per_sync_min'], res['dma_count'],
                        'ok' if res['valid'] else 'FAILED'))
        else:
            log('  RAM %s FAILED: %s' % (rs, res.get('error')))
        out[rs] = res
    results['bitmap'] = out
    return out


def measure_chunks(o, wd, results):
    log('== 4. device-memory throughput vs chunk size (256 MiB), %d run(s) '
        'each, median' % o.chunk_repeat)
    out = {}
    modes = [True] if o.chunk_mmap_only else [True, False]
    for mmap in modes:
        key = 'mmap' if mmap else 'nommap'
        out[key] = {}
        runs = {c: [] for c in CHUNKS}
        for rep in range(o.chunk_repeat):
            for c in CHUNKS:
                runs[c].append(one_run(
                    wd, 'chunk-%s-%s-r%d' % (c, key, rep), 32 * MiB,
                    ['--mem-size', '256M', '--chunk-size', c] +
                    ([] if mmap else ['--no-mmap']),
                    kind='chunk', nbytes_key='vfio_bytes'))
        out[key] = {c: aggregate(v) for c, v in runs.items()}
    results['chunks'] = out
    return out


def _num(pattern, text, default=None):
    m = re.search(pattern, text)
    return int(m.group(1)) if m else default


def t_vm_stop(tr):
    """When the VM stop reached the device: RUNNING|LOGGING -> P2P|LOGGING
    with CAP_P2P (the second edition), straight to STOP|LOGGING without."""
    return next((t for t, ev, a in tr if ev == 'vfio_ds_set_state' and
                 (a.endswith('RUNNING|LOGGING -> P2P|LOGGING') or
                  a.endswith('RUNNING|LOGGING -> STOP|LOGGING'))), None)


def convergence_figures(tr):
    """From a source trace: the size of each data set opened (one per pass
    over the dirty device memory), the channel bandwidth and the threshold
    QEMU last computed (migrate_transferred, every 100 ms), the last exact
    pending size."""
    sets = [_num(r'of (\d+) bytes', a, 0) for t, ev, a in tr
            if ev == 'vfio_ds_set_open']
    bws = [(_num(r'bandwidth (\d+)', a), _num(r'max_size (-?\d+)', a))
           for t, ev, a in tr if ev == 'migrate_transferred']
    exact = [(t, _num(r'exact pending size (\d+)', a)) for t, ev, a in tr
             if ev == 'migrate_pending_exact']
    est = [_num(r'estimate pending size (\d+)', a) for t, ev, a in tr
           if ev == 'migrate_pending_estimate']
    t_first = tr[0][0] if tr else 0
    out = {'sets_opened': len(sets), 'set_bytes_first': sets[:3],
           'set_bytes_last': sets[-5:],
           'last_nonzero_set_bytes': next((x for x in reversed(sets) if x),
                                          None)}
    if bws:
        # bytes/ms = kB/s * 1000 / 1000: MB/s = bytes/ms / 1000
        out['bandwidth_MBps_last'] = bws[-1][0] / 1000.0
        out['threshold_bytes_last'] = bws[-1][1]
    # QEMU reads the exact figure (the device's device_memory.pending)
    # only when the estimate is under the threshold; the backend's estimate
    # is the open set's rest plus the last exact figure.
    out['pending_exact_reads'] = len(exact)
    out['iterations'] = len(est)
    if est:
        out['pending_estimate_bytes_last'] = est[-1]
        out['pending_estimate_bytes_min'] = min(est)
    if exact:
        out['pending_exact_bytes_last'] = exact[-1][1]
        out['pending_exact_last_at_s'] = round(exact[-1][0] - t_first, 2)
        if bws and bws[-1][0]:
            # What the switchover would take, were it started then.
            out['est_downtime_ms_last'] = exact[-1][1] / bws[-1][0]
    if bws and bws[-1][0] and out['last_nonzero_set_bytes']:
        # What the device's last non-empty pass would take at that rate.
        out['last_set_ms_at_bandwidth'] = (out['last_nonzero_set_bytes'] /
                                           bws[-1][0])
    return out


LIMIT_TRACE = ('vfio_ds_set_open', 'vfio_ds_set_state',
               'vfio_ds_save_complete', 'migrate_pending_exact',
               'migrate_pending_estimate', 'migrate_transferred',
               'migration_thread_low_pending')


def limit_run(o, wd, tag, mem, rate, ndev, raise_to=()):
    """A migration of devices that mutate their memory, at the default
    downtime limit, bounded by --limit-timeout (then @raise_to, then
    migrate_cancel)."""
    run = Run(wd, tag)
    res = {'device_mem': mem, 'devices': ndev, 'mutate_rate_per_dev': rate,
           'downtime_limit_ms': DEFAULT_DOWNTIME_LIMIT,
           'timeout_s': o.limit_timeout}
    try:
        run.start(64 * MiB, ['--mem-size', str(mem), '--mutate-rate',
                             str(rate), '--dma-rate', '0'],
                  src_dev_extra=['--start'], trace=LIMIT_TRACE, ndev=ndev)
        t_c0 = time.time()
        c0 = sum(int(s.status()['mutate_count']) for s in run.ssrvs)
        time.sleep(1.0)
        t_c1 = time.time()
        c1 = sum(int(s.status()['mutate_count']) for s in run.ssrvs)
        res['mutated_pages_per_s_before'] = round((c1 - c0) / (t_c1 - t_c0))
        cpu = run.cpu_sampler()
        res.update(run.migrate(downtime_limit=DEFAULT_DOWNTIME_LIMIT,
                               timeout=o.limit_timeout, cpu=cpu,
                               raise_to=raise_to))
        t_ret = time.time()
        c2 = sum(int(s.status()['mutate_count']) for s in run.ssrvs)
        tr = read_trace(run.trace)
        t_stop = t_vm_stop(tr)
        t_end = t_stop if (res['ok'] and t_stop) else t_ret
        if t_end > t_c1:
            # From the last count before the migration to the VM stop (or
            # the cancel: the device mutates on after it).
            res['mutated_pages_per_s_during'] = round(
                (c2 - c1) / (t_end - t_c1))
        if res['ok']:
            res['digest_ok'] = run.digests()[0]
        res['cpu'] = cpu.result()
        res.update(convergence_figures(tr))
        if res.get('at_timeout'):
            at = res['at_timeout']
            # Only ram's dirty bytes count in QEMU's expected-downtime
            # (migration_update_counters); est_downtime_ms_last has all.
            res['at_timeout'] = {
                'after_s': at.get('after_s'),
                'status': at.get('status'),
                'downtime_limit_ms': at.get('downtime_limit_ms'),
                'expected_downtime_ms_ram_only': at.get('expected-downtime'),
                'ram_remaining_bytes': at.get('ram', {}).get('remaining'),
                'ram_dirty_sync_count': at.get('ram', {}).get(
                    'dirty-sync-count'),
                'vfio_transferred_bytes': at.get('vfio', {}).get(
                    'transferred'),
                'total_ms': at.get('total-time')}
    except Exception as e:      # pylint: disable=broad-except
        res.update(ok=False, error='%s: %s' % (type(e).__name__, e))
    finally:
        run.stop()
    return res


def limit_line(res):
    at = res.get('at_timeout') or {}

    def mib(k):
        return fmt(res[k] / MiB if res.get(k) is not None else None, '%.1f')
    line = ('converged %s, %s; downtime %s ms (limit %s ms%s); %d '
            'iterations, %d sets opened, last non-empty %s MiB (%s ms at '
            '%s MB/s); pending estimate last %s MiB (min %s), %d exact '
            'read(s), last %s MiB at %s s; mutated %s pages/s during (%s '
            'before)' %
            ('yes' if res.get('converged') else 'NO',
             ('completed in %s ms' % res.get('total_ms')) if res.get('ok')
             else 'status %s after %s s' % (res.get('status'),
                                            at.get('after_s')),
             res.get('downtime_ms') if res.get('ok') else 'n/a',
             res.get('final_downtime_limit_ms'),
             (', raised live after %s s at %d ms' %
              (at.get('after_s'), DEFAULT_DOWNTIME_LIMIT)
              if at and res.get('ok') else ''),
             res.get('iterations', 0), res.get('sets_opened', 0),
             mib('last_nonzero_set_bytes'),
             fmt(res.get('last_set_ms_at_bandwidth'), '%.0f'),
             fmt(res.get('bandwidth_MBps_last'), '%.0f'),
             mib('pending_estimate_bytes_last'),
             mib('pending_estimate_bytes_min'),
             res.get('pending_exact_reads', 0),
             mib('pending_exact_bytes_last'),
             res.get('pending_exact_last_at_s', 'n/a'),
             res.get('mutated_pages_per_s_during', 'n/a'),
             res.get('mutated_pages_per_s_before', 'n/a')))
    return line


def measure_limit(o, wd, results):
    mem = lab.parse_size(o.limit_mem)
    rate = o.limit_mutate_rate
    log('== 5. downtime at the default limit (%d ms): %d MiB device memory '
        '(mmap) mutated at %d pages/s, at most %d s' %
        (DEFAULT_DOWNTIME_LIMIT, mem >> 20, rate, o.limit_timeout))
    res = limit_run(o, wd, 'limit', mem, rate, 1)
    if res.get('converged'):
        res['valid'] = bool(res.get('digest_ok'))
        res['downtime_over_limit'] = (res['downtime_ms'] /
                                      DEFAULT_DOWNTIME_LIMIT)
    else:
        # Not converging is a result; a cancel that did not work is not.
        res['valid'] = res.get('status') == 'cancelled'
    log('  %s; %s' % (limit_line(res), 'ok' if res['valid'] else
                      'FAILED %s' % (res.get('error') or 'integrity check')))
    results['downtime_at_limit'] = res
    return res


def median(xs):
    xs = sorted(x for x in xs if x is not None)
    return xs[len(xs) // 2] if xs else None


def measure_cpu(o, wd, results):
    log('== 6. CPU seconds per GiB moved (both QEMUs and device servers), '
        'device memory vs guest RAM, 1 GiB, mmap')
    case = results.get('throughput', {}).get('1024M')
    src = 'measure 1 (1024M)'
    if not (case and case['ram']['valid'] and case['dev_mmap']['valid']):
        src = 'own runs'
        shm = '/dev/shm/vfio-bench-cpu-%d.ram' % os.getpid()
        runs = {'ram': [], 'dev_mmap': []}
        try:
            fill_random(shm, GiB)
            for rep in range(o.repeat):
                runs['ram'].append(one_run(
                    wd, 'cpu-ram-1024M-r%d' % rep, GiB, ['--mem-size', '1M'],
                    kind='ram', mem_path=shm, nbytes_key='ram_bytes',
                    ram_samples=True))
                runs['dev_mmap'].append(one_run(
                    wd, 'cpu-dev-1024M-mmap-r%d' % rep, 32 * MiB,
                    ['--mem-size', '1G'], kind='dev_mmap',
                    nbytes_key='vfio_bytes'))
        finally:
            if os.path.exists(shm):
                os.unlink(shm)
        case = {k: aggregate(v) for k, v in runs.items()}
    res = {'from': src}
    for k, name in (('dev_mmap', 'devmem'), ('ram', 'ram')):
        x = case[k]
        res['cpu_s_per_GiB_' + name] = (median(x['runs_cpu_s_per_GiB'])
                                        if x['valid'] else None)
        res['runs_cpu_s_per_GiB_' + name] = x['runs_cpu_s_per_GiB']
        # processes and threads of the median (by MB/s) run
        res['median_run_' + name] = {'tag': x.get('tag'),
                                     'total_ms': x.get('total_ms'),
                                     'bytes': x.get('bytes'),
                                     'cpu': x.get('cpu')}
    d, r = res['cpu_s_per_GiB_devmem'], res['cpu_s_per_GiB_ram']
    res['cpu_ratio_devmem_vs_ram'] = d / r if d and r else None
    res['valid'] = res['cpu_ratio_devmem_vs_ram'] is not None
    for name in ('devmem', 'ram'):
        c = res['median_run_' + name].get('cpu') or {}
        log('  %-7s %s CPU s/GiB (runs %s); median run %s: %s' %
            (name, fmt(res['cpu_s_per_GiB_' + name], '%.2f'),
             res['runs_cpu_s_per_GiB_' + name],
             res['median_run_' + name]['tag'],
             ', '.join('%s %.2f s' % (p, v['cpu_s'] or 0)
                       for p, v in c.get('procs', {}).items())))
    log('  devmem/ram CPU per GiB: %s (from %s)' %
        (fmt(res['cpu_ratio_devmem_vs_ram']), src))
    results['cpu'] = res
    return res


MULTIFD_TRACE = ('vfio_ds_set_state', 'vfio_ds_save_chunk',
                 'vfio_ds_save_complete', 'vfio_ds_multifd_save')


def multifd_run(o, wd, tag, multifd):
    """4 devices (--multi-devs) x --multi-mem, mutating as in 7, with the
    multifd capability (--multifd-channels channels) on both sides, at
    --multifd-limit ms (high: the switchover comes as soon as the
    bandwidth is known, with much device memory left for the
    stop-and-copy phase); the devices' stop-and-copy state on the main
    channel (x-migration-multifd-transfer=off) or on the multifd
    channels (=on)."""
    n, mem = o.multi_devs, lab.parse_size(o.multi_mem)
    rate = max(1, o.limit_mutate_rate // n)
    run = Run(wd, tag)
    res = {'multifd_transfer': multifd, 'devices': n, 'device_mem': mem,
           'mutate_rate_per_dev': rate, 'downtime_limit_ms': o.multifd_limit,
           'multifd_channels': o.multifd_channels}
    try:
        run.start(64 * MiB, ['--mem-size', str(mem), '--mutate-rate',
                             str(rate), '--dma-rate', '0'],
                  src_dev_extra=['--start'], trace=MULTIFD_TRACE, ndev=n,
                  dev_props={'x-migration-multifd-transfer':
                             'on' if multifd else 'off'})
        res.update(run.migrate(downtime_limit=o.multifd_limit, timeout=120,
                               caps={'multifd': True},
                               params={'multifd_channels':
                                       o.multifd_channels}))
        if res['ok']:
            res['digest_ok'] = run.digests()[0]
        tr = read_trace(run.trace)
        t_stop = t_vm_stop(tr)
        if t_stop is not None:
            res['stopcopy_device_bytes'] = sum(
                int(re.search(r'len 0x([0-9a-f]+)', a).group(1), 16)
                for t, ev, a in tr
                if ev == 'vfio_ds_save_chunk' and t >= t_stop)
            res['save_threads'] = sum(1 for t, ev, a in tr
                                      if ev == 'vfio_ds_multifd_save' and
                                      a.endswith('done'))
    except Exception as e:      # pylint: disable=broad-except
        res.update(ok=False, error='%s: %s' % (type(e).__name__, e))
    finally:
        run.stop()
    b = res.get('stopcopy_device_bytes')
    res['valid'] = bool(res.get('ok') and res.get('digest_ok') and b and
                        res.get('save_threads') == (n if multifd else 0))
    if res['valid']:
        res['downtime_ms_per_GiB_stopcopy'] = res['downtime_ms'] / (b / GiB)
    return res


def multifd_line(x):
    if not x.get('valid'):
        return 'FAILED %s' % (x.get('error') or 'integrity check')
    return ('downtime %d ms, %.0f MiB of device state in stop-and-copy '
            '(%.0f ms per GiB), %s save threads' %
            (x['downtime_ms'], x['stopcopy_device_bytes'] / MiB,
             x['downtime_ms_per_GiB_stopcopy'], x['save_threads']))


def measure_multifd(o, wd, res):
    """Section 7's multifd comparison: --repeat pairs of runs, main channel
    and multifd alternating; the medians."""
    runs = {'main': [], 'multifd': []}
    for rep in range(o.repeat):
        for k in ('main', 'multifd'):
            x = multifd_run(o, wd, 'multifd-%s-r%d' % (k, rep),
                            k == 'multifd')
            log('  %-8s run %d: %s' % (k, rep, multifd_line(x)))
            runs[k].append(x)
    out = {'runs': runs}
    for k in runs:
        ok = [x for x in runs[k] if x['valid']]
        out['downtime_ms_' + k] = median([x['downtime_ms'] for x in ok])
        out['ms_per_GiB_' + k] = median([x['downtime_ms_per_GiB_stopcopy']
                                         for x in ok])
        out['stopcopy_MiB_' + k] = median([x['stopcopy_device_bytes'] / MiB
                                           for x in ok])
    m, f = out['ms_per_GiB_main'], out['ms_per_GiB_multifd']
    out['valid'] = all(x['valid'] for v in runs.values() for x in v)
    out['downtime_cut'] = 1 - f / m if m and f else None
    dm, df = out['downtime_ms_main'], out['downtime_ms_multifd']
    out['downtime_cut_raw'] = 1 - df / dm if dm and df else None
    res['multifd'] = out
    res['multifd_devstate'] = 'works' if out['valid'] else 'error'
    log('  multifd device state: downtime per GiB of stop-and-copy device '
        'state %s ms (main channel) -> %s ms (multifd): cut %s; raw '
        'downtime %s -> %s ms' %
        (fmt(m, '%.0f'), fmt(f, '%.0f'),
         fmt(out['downtime_cut'] * 100 if out['downtime_cut'] is not None
             else None, '%.0f%%'), dm, df))
    return out


def measure_multi(o, wd, results):
    n, mem = o.multi_devs, lab.parse_size(o.multi_mem)
    rate = max(1, o.limit_mutate_rate // n)
    log('== 7. %d devices x %d MiB (mmap) in one VM, each mutated at %d '
        'pages/s: downtime at %d ms (at most %d s), then the limit raised '
        'live as needed' % (n, mem >> 20, rate, DEFAULT_DOWNTIME_LIMIT,
                            o.limit_timeout))
    res = limit_run(o, wd, 'multi', mem, rate, n, raise_to=RAISE_STEPS)
    res['valid'] = bool(res.get('ok') and res.get('digest_ok'))
    res['downtime_ms_at_limit'] = (res['downtime_ms'] if res.get('converged')
                                   else None)
    res['downtime_ms_raised'] = res['downtime_ms'] if res.get('ok') else None
    log('  %s; %s' % (limit_line(res), 'ok' if res['valid'] else
                      'FAILED %s' % (res.get('error') or 'integrity check')))
    log('  with multifd (%d channels) at %d ms: the stop-and-copy state on '
        'the main channel and on the multifd channels' %
        (o.multifd_channels, o.multifd_limit))
    measure_multifd(o, wd, res)
    results['multi_device'] = res
    return res


def _stats_ms(xs):
    xs = sorted(xs)
    if not xs:
        return None
    return {'n': len(xs), 'mean': round(sum(xs) / len(xs) * 1000, 3),
            'median': round(xs[len(xs) // 2] * 1000, 3),
            'p90': round(xs[int(len(xs) * 0.9)] * 1000, 3),
            'max': round(xs[-1] * 1000, 3),
            'sum': round(sum(xs) * 1000, 1)}


def chunk_times(tr, action_ev, chunk_ev, boundary, t_phase=None):
    """Per chunk event: time since the previous chunk (within one
    iteration: no @boundary event in between), split at the control write
    of the chunk's action (GET_BUFFER on the source: before it the
    previous chunk's flush into the stream; after it the device filling
    the region; SET_BUFFER on the destination: before it the chunk's
    reception from the stream into the region, after it the device taking
    it).  t_phase: chunks before it are 'precopy', after 'stopcopy'."""
    out = {}
    last_t = last_ctl = None
    crossed = False
    for t, ev, a in tr:
        if ev == 'vfio_ds_ctl_write' and action_ev in a:
            last_ctl = t
        elif ev in boundary:
            crossed = True
        elif ev == chunk_ev:
            ph = 'precopy' if t_phase is None or t < t_phase else 'stopcopy'
            c = out.setdefault(ph, {'n': 0, 'bytes': 0, 'dt': [], 'before':
                                    [], 'after': [], 'gaps': []})
            c['n'] += 1
            c['bytes'] += int(re.search(r'len 0x([0-9a-f]+)', a).group(1),
                              16)
            if last_ctl is not None and (last_t is None or last_ctl > last_t):
                c['after'].append(t - last_ctl)
            if last_t is not None:
                if crossed or (t_phase is not None and
                               (last_t < t_phase) != (t < t_phase)):
                    c['gaps'].append(t - last_t)
                else:
                    c['dt'].append(t - last_t)
                    if last_ctl is not None and last_ctl > last_t:
                        c['before'].append(last_ctl - last_t)
            last_t, crossed = t, False
    res = {}
    for ph, c in out.items():
        res[ph] = {'chunks': c['n'], 'bytes': c['bytes'],
                   'interval_ms': _stats_ms(c['dt']),
                   'before_ctl_ms': _stats_ms(c['before']),
                   'after_ctl_ms': _stats_ms(c['after']),
                   'gaps_across_iterations_ms': _stats_ms(c['gaps'])}
    return res


def section_times(tr, t_stop):
    """Time in each savevm section (ram, the device, others) before and
    after the VM stop, from savevm_section_start/_end."""
    out, open_ = {}, {}
    for t, ev, a in tr:
        if ev not in ('savevm_section_start', 'savevm_section_end'):
            continue
        sid = a.split(',')[0]
        if ev == 'savevm_section_start':
            open_[sid] = t
        elif sid in open_:
            t1 = open_.pop(sid)
            ph = 'precopy' if t_stop is None or t1 < t_stop else 'stopcopy'
            key = 'vfio' if 'vfio' in sid else (sid if sid == 'ram' else
                                                'other')
            d = out.setdefault(ph, {})
            d[key] = d.get(key, 0.0) + (t - t1) * 1000
    return {ph: {k: round(v, 1) for k, v in d.items()}
            for ph, d in out.items()}


BREAKDOWN_SRC_TRACE = ('vfio_ds_save_chunk', 'vfio_ds_set_state',
                       'vfio_ds_set_open', 'vfio_ds_save_iterate',
                       'vfio_ds_save_setup', 'vfio_ds_save_complete',
                       'vfio_ds_ctl_write', 'savevm_section_start',
                       'savevm_section_end', 'migration_completion_vm_stop')
BREAKDOWN_DST_TRACE = ('vfio_ds_load_chunk', 'vfio_ds_load_set',
                       'vfio_ds_load_config', 'vfio_ds_ctl_write',
                       'vfio_ds_load_header')


def measure_breakdown(o, wd, results):
    mem = lab.parse_size(o.breakdown_mem)
    log('== 8. breakdown of one %d MiB device-memory migration (mmap, idle '
        'device): trace timestamps, CPU per thread' % (mem >> 20))
    run = Run(wd, 'breakdown')
    res = {'device_mem': mem}
    try:
        run.start(32 * MiB, ['--mem-size', str(mem)],
                  trace=BREAKDOWN_SRC_TRACE, dst_trace=BREAKDOWN_DST_TRACE)
        cpu = run.cpu_sampler()
        res.update(run.migrate(cpu=cpu))
        if res['ok']:
            res['digest_ok'] = run.digests()[0]
        res['cpu'] = cpu.result()
        tr, dtr = read_trace(run.trace), read_trace(run.dst_trace)
        t0 = res['t_migrate']
        t_stop = t_vm_stop(tr)

        def first(trace, name):
            return next((t for t, ev, a in trace if ev == name), None)

        def rel(t):
            return round((t - t0) * 1000, 1) if t is not None else None
        t_set = first(tr, 'vfio_ds_set_open')
        t_done = first(tr, 'vfio_ds_save_complete')
        t_dcfg = first(dtr, 'vfio_ds_load_config')
        if None in (t_set, t_stop, t_done):
            raise RuntimeError('trace lacks set_open, the VM stop or '
                               'save_complete')
        res['timeline_ms'] = {
            'first_set_open': rel(t_set), 'vm_stop': rel(t_stop),
            'save_complete': rel(t_done), 'dst_config_loaded': rel(t_dcfg),
            'src_total': res['total_ms']}
        res['phases_ms'] = {
            'setup': rel(t_set), 'precopy': round((t_stop - t_set) * 1000, 1),
            'stop_copy_device': round((t_done - t_stop) * 1000, 1),
            'after_device': round(res['total_ms'] - (t_done - t0) * 1000, 1)}
        res['src_chunks'] = chunk_times(
            tr, 'device_memory.action', 'vfio_ds_save_chunk',
            ('vfio_ds_save_iterate',), t_stop)
        # The destination's chunks: precopy/stopcopy by the source's stop
        # (the same clock).
        res['dst_chunks'] = chunk_times(
            dtr, 'device_memory.action', 'vfio_ds_load_chunk',
            ('vfio_ds_load_set',), t_stop)
        res['sections_ms'] = section_times(tr, t_stop)
        res['iterations'] = sum(1 for t, ev, a in tr
                                if ev == 'vfio_ds_save_iterate')
        pre = res['src_chunks'].get('precopy', {})
        stc = res['src_chunks'].get('stopcopy', {})
        res['devmem_bytes_precopy'] = pre.get('bytes', 0)
        res['devmem_bytes_stopcopy'] = stc.get('bytes', 0)
        res['chunks'] = pre.get('chunks', 0) + stc.get('chunks', 0)
        iv = pre.get('interval_ms') or {}
        res['src_ms_per_chunk'] = iv.get('mean')
        wall = res['cpu']['wall_s'] if res['cpu'] else None
        rows = []
        for p, v in (res['cpu'] or {}).get('procs', {}).items():
            for comm, c in v.get('threads', {}).items():
                rows.append((p, comm, c))
            if v.get('unattributed_s'):
                rows.append((p, '(unsampled/exited)', v['unattributed_s']))
        rows.sort(key=lambda r: -r[2])
        res['threads'] = [{'process': p, 'thread': comm, 'cpu_s': c,
                           'busy': round(c / wall, 3) if wall else None}
                          for p, comm, c in rows]
    except Exception as e:      # pylint: disable=broad-except
        res.update(ok=False, error='%s: %s' % (type(e).__name__, e))
    finally:
        run.stop()
    res['valid'] = bool(res.get('ok') and res.get('digest_ok') and
                        res.get('threads') is not None)
    if res.get('threads') is None:
        log('  FAILED: %s' % res.get('error'))
    else:
        log('  %s' % ('ok' if res['valid'] else 'FAILED %s' %
                      (res.get('error') or 'integrity check')))
    results['breakdown'] = res
    return res


def _interp(samples, t, k):
    """Counter @k of [(t, ...)] samples at time t (linear in between)."""
    prev = samples[0]
    for s in samples:
        if s['t'] >= t:
            if s['t'] == prev['t']:
                return s[k]
            return prev[k] + (s[k] - prev[k]) * (t - prev['t']) / (s['t'] -
                                                                   prev['t'])
        prev = s
    return samples[-1][k]


def _shares(ram, dev):
    tot = ram + dev
    return {'ram_bytes': int(ram), 'dev_bytes': int(dev),
            'ram_share': round(ram / tot, 3) if tot else None,
            'dev_share': round(dev / tot, 3) if tot else None}


def _stalls(pre, kind, other, left):
    """The longest run of sample intervals in which @kind did not advance
    while @other did: (ms, start s, the other's MB/s in it) over all such
    runs, and over those in which @kind still had bytes to send (@left of
    the interval's first sample > 0: it was starved, not done)."""
    best = {'stall': (0.0, None, None), 'starve': (0.0, None, None)}
    for key in best:
        start = None
        for a, b in zip(pre, pre[1:] + [None]):
            hit = (b is not None and b[kind] == a[kind] and
                   b[other] > a[other] and
                   (key == 'stall' or left(a) > 0))
            if hit and start is None:
                start = a
            elif not hit and start is not None:
                ms = (a['t'] - start['t']) * 1000
                if ms > best[key][0]:
                    best[key] = (ms, start['t'], mbps(a[other] -
                                                      start[other], ms))
                start = None
    out = {}
    for key, (ms, t, rate) in best.items():
        out['longest_%s_ms' % key] = round(ms)
        out['longest_%s_at_s' % key] = round(t, 2) if t is not None else None
        out['longest_%s_other_MBps' % key] = (round(rate, 1) if rate
                                              else None)
    return out


def fairness_figures(samples, dev_mem):
    """From query-migrate samples ({'t': s after the migrate command,
    'status', 'ram': RAM page bytes, 'dev': device bytes, 'ram_left': RAM
    remaining}): precopy = the migrate command to the last 'active'
    sample; the first byte of each kind, each quarter's and the first
    half's shares, each kind's longest stall (no progress while the other
    progressed) and starvation (the same, while it still had bytes left;
    the device's: its memory less what it sent, an idle device's first
    data set being all of it), each kind's average rate."""
    active = [s for s in samples if s['status'] == 'active']
    if len(active) < 8:
        raise RuntimeError('%d query-migrate samples in precopy, too few' %
                           len(active))
    t_end = active[-1]['t']
    start = {'t': 0.0, 'status': 'start', 'ram': 0, 'dev': 0,
             'ram_left': 1}
    pre = [start] + [s for s in samples if s['t'] <= t_end]
    res = {'samples': len(samples), 'samples_precopy': len(active),
           'sample_interval_ms': round(
               (pre[-1]['t'] - pre[1]['t']) * 1000 / max(1, len(pre) - 2),
               1),
           'precopy_ms': round(t_end * 1000)}
    for k, name in (('ram', 'ram'), ('dev', 'dev')):
        first = next((s for s in samples if s[k] > 0), None)
        res['first_%s_byte_ms' % name] = (round(first['t'] * 1000)
                                          if first else None)
    q = [t_end * i / 4 for i in range(5)]
    res['quarters'] = []
    for a, b in zip(q, q[1:]):
        x = _shares(_interp(pre, b, 'ram') - _interp(pre, a, 'ram'),
                    _interp(pre, b, 'dev') - _interp(pre, a, 'dev'))
        x['from_ms'], x['to_ms'] = round(a * 1000), round(b * 1000)
        res['quarters'].append(x)
    res['first_half'] = _shares(_interp(pre, q[2], 'ram'),
                                _interp(pre, q[2], 'dev'))
    h = res['first_half']
    res['min_share_first_half'] = (min(h['ram_share'], h['dev_share'])
                                   if h['ram_share'] is not None else None)
    res['precopy'] = _shares(pre[-1]['ram'], pre[-1]['dev'])
    last = samples[-1]
    res['final'] = _shares(last['ram'], last['dev'])
    tot = last['ram'] + last['dev']
    res['precopied_share'] = (round((pre[-1]['ram'] + pre[-1]['dev']) / tot,
                                    3) if tot else None)
    res['dev'] = _stalls(pre, 'dev', 'ram', lambda s: dev_mem - s['dev'])
    res['ram'] = _stalls(pre, 'ram', 'dev', lambda s: s['ram_left'])
    for k in ('ram', 'dev'):
        moving = [s for s in pre if 0 < s[k]]
        t_a = next((p['t'] for p, s in zip(pre, pre[1:]) if s[k] > 0), None)
        t_z = next((s['t'] for s in pre if s[k] == pre[-1][k]), None)
        res[k]['MBps_precopy'] = round(mbps(pre[-1][k], t_end * 1000), 1)
        # From the sample before its first byte to its last progress.
        res[k]['MBps_while_sending'] = (round(mbps(
            pre[-1][k], (t_z - t_a) * 1000), 1) if moving and t_z and
            t_z > t_a else None)
    res['max_stall_ms'] = max(res['dev']['longest_stall_ms'],
                              res['ram']['longest_stall_ms'])
    res['max_starve_ms'] = max(res['dev']['longest_starve_ms'],
                               res['ram']['longest_starve_ms'])
    res['starved'] = ('dev' if res['dev']['longest_starve_ms'] >
                      res['ram']['longest_starve_ms'] else
                      'ram' if res['ram']['longest_starve_ms'] else 'none')
    return res


def measure_fairness(o, wd, results):
    bw, ram = lab.parse_size(o.fair_bandwidth), lab.parse_size(o.fair_ram)
    mem = lab.parse_size(o.fair_mem)
    log('== 9. fairness under max-bandwidth %d MiB/s: %d MiB random guest '
        'RAM and %d MiB device memory (mmap, idle), downtime limit %d ms, '
        'query-migrate every %d ms' % (bw >> 20, ram >> 20, mem >> 20,
                                       DEFAULT_DOWNTIME_LIMIT,
                                       o.fair_interval))
    res = {'max_bandwidth': bw, 'guest_ram': ram, 'device_mem': mem,
           'downtime_limit_ms': DEFAULT_DOWNTIME_LIMIT}
    shm = '/dev/shm/vfio-bench-fair-%d.ram' % os.getpid()
    run = Run(wd, 'fairness')
    try:
        fill_random(shm, ram)
        run.start(ram, ['--mem-size', str(mem), '--mutate-rate', '0',
                        '--dma-rate', '0'], mem_path=shm)
        samples = []

        def sample(info, t):
            r = info.get('ram', {})
            # ram.transferred is the whole stream's (migration/
            # migration.c: migration_transferred_bytes()), device memory
            # with it: RAM's own are its pages, normal-bytes.
            samples.append({'t': t, 'status': info.get('status'),
                            'ram': r.get('normal-bytes', 0),
                            'ram_left': r.get('remaining', 0),
                            'stream': r.get('transferred', 0),
                            'dev': info.get('vfio', {}).get('transferred',
                                                            0)})
        # Three times what the bytes take at the limit, at least 30 s.
        m = run.migrate(timeout=max(30.0, 3.0 * (ram + mem) / bw),
                        max_bandwidth=bw, on_info=sample,
                        poll_s=o.fair_interval / 1000.0)
        res.update(status=m['status'], error=m['error'],
                   dst_status=m['dst_status'], total_ms=m['total_ms'],
                   setup_ms=m['setup_ms'], downtime_ms=m['downtime_ms'],
                   stream_bytes=m['ram_bytes'],
                   ram_bytes=m['ram_normal_bytes'],
                   vfio_bytes=m['vfio_bytes'])
        res['ok'] = m['ok']
        if res['ok']:
            res['digest_ok'] = run.digests()[0]
            res['ram_sample_ok'] = ram_equal(run, ram)
        res['MBps_all'] = mbps(res['stream_bytes'], res['total_ms'])
        res.update(fairness_figures(samples, mem))
        res['trace'] = [[round(s['t'], 3), s['status'], s['ram'], s['dev'],
                         s['ram_left']] for s in samples]
    except Exception as e:      # pylint: disable=broad-except
        res.update(ok=False, error='%s: %s' % (type(e).__name__, e))
    finally:
        run.stop()
        if os.path.exists(shm):
            os.unlink(shm)
    # Starving is a result; a failed migration or check is not.
    res['valid'] = bool(res.get('ok') and res.get('digest_ok') and
                        res.get('ram_sample_ok') and
                        res.get('quarters') is not None)
    if res.get('quarters') is not None:
        log('  %s; %s' % (fairness_line(res), 'ok' if res['valid'] else
                          'FAILED %s' % (res.get('error') or
                                         'integrity check')))
    else:
        log('  FAILED: %s' % res.get('error'))
    results['fairness'] = res
    return res


def fairness_line(f):
    return ('%s in %s ms (precopy %s ms, %s of the bytes; downtime %s ms), '
            '%.0f MB/s; first byte: RAM %s ms, device %s ms; RAM share per '
            'quarter %s; first half: min share %s; longest starvation (no '
            'progress, bytes left, the other moving): device %s ms at %s s, '
            'RAM %s ms at %s s; without "bytes left": device %s ms, RAM %s '
            'ms; precopy MB/s RAM %s, device %s (while sending %s, %s)' %
            (f.get('status'), f.get('total_ms'), f.get('precopy_ms'),
             fmt(f.get('precopied_share')), f.get('downtime_ms'),
             f.get('MBps_all', 0), f.get('first_ram_byte_ms'),
             f.get('first_dev_byte_ms'),
             '/'.join(fmt(x['ram_share']) for x in f['quarters']),
             fmt(f.get('min_share_first_half'), '%.3f'),
             f['dev']['longest_starve_ms'],
             fmt(f['dev']['longest_starve_at_s']),
             f['ram']['longest_starve_ms'],
             fmt(f['ram']['longest_starve_at_s']),
             f['dev']['longest_stall_ms'], f['ram']['longest_stall_ms'],
             f['ram']['MBps_precopy'], f['dev']['MBps_precopy'],
             f['ram']['MBps_while_sending'],
             f['dev']['MBps_while_sending']))


def plot_chunks(chunks, path):
    import matplotlib       # pylint: disable=import-outside-toplevel
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt  # pylint: disable=import-outside-toplevel
    fig, ax = plt.subplots(figsize=(7, 4))
    for key, rows in chunks.items():
        xs = [lab.parse_size(c) / 1024 for c in rows]
        ys = [r.get('MBps', 0) if r['valid'] else float('nan')
              for r in rows.values()]
        ax.plot(xs, ys, marker='o', label=key)
    ax.set_xscale('log', base=2)
    ax.set_xticks([lab.parse_size(c) / 1024 for c in CHUNKS])
    ax.set_xticklabels(CHUNKS)
    ax.set_xlabel('--chunk-size (DATA_MEMORY region)')
    ax.set_ylabel('device-memory throughput, MB/s')
    ax.set_title('256 MiB device memory, unix socket, max-bandwidth 0')
    ax.grid(True, alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def fmt(x, spec='%.2f'):
    return 'n/a' if x is None else spec % x


def main():
    global PAUSED      # pylint: disable=global-statement
    o = opts()
    PAUSED = o.paused
    if o.limit_mutate_rate is None:
        o.limit_mutate_rate = o.mutate_rate
    only = set(o.only.split(','))
    unknown = only - set('123456789')
    if unknown:
        sys.exit('bench: --only: no measure %s (1-9)' % ','.join(
            sorted(unknown)))
    os.makedirs(o.out, exist_ok=True)
    wd = lab.workdir()
    t0 = time.time()
    build = build_id()
    results = {'host': {'cpus': os.cpu_count(), 'qemu': lab.QEMU},
               'build': build,
               'started': time.strftime('%Y-%m-%dT%H:%M:%S'),
               'max_bandwidth': 0, 'workdir': wd}
    log('bench: QEMU %s (%s), work dir %s' % (lab.QEMU, build, wd))
    failed = []
    summary = {}
    try:
        if '1' in only:
            tp = measure_throughput(o, wd, results)
            for name, case in tp.items():
                for k in ('ram', 'dev_mmap', 'dev_nommap'):
                    if not case[k]['valid']:
                        failed.append('%s-%s' % (k, name))
            summary = tp
        bw = None
        if tp_ok(summary, '256M', 'dev_mmap'):
            bw = summary['256M']['dev_mmap']['MBps']
        elif '2' in only:
            bw = quick_bw(wd)
        results['channel_MBps_for_2'] = bw
        if '2' in only:
            if measure_switchover(o, wd, results, bw).get('valid') is False:
                failed.append('switchover')
        if '3' in only:
            for k, v in measure_bitmap(o, wd, results).items():
                if not v['valid']:
                    failed.append('bitmap-%s' % k)
        if '4' in only:
            ch = measure_chunks(o, wd, results)
            for key, rows in ch.items():
                failed += ['chunk-%s-%s' % (c, key) for c, r in rows.items()
                           if not r['valid']]
            png = os.path.join(o.out, 'chunk-size.png')
            try:
                plot_chunks(ch, png)
                results['plot'] = png
            except Exception as e:  # pylint: disable=broad-except
                log('plot failed: %s' % e)
                failed.append('plot')
        if '6' in only:
            if not measure_cpu(o, wd, results)['valid']:
                failed.append('cpu')
        if '5' in only:
            if not measure_limit(o, wd, results)['valid']:
                failed.append('downtime-at-limit')
        if '7' in only:
            mres = measure_multi(o, wd, results)
            if not mres['valid']:
                failed.append('multi-device')
            if mres['multifd_devstate'] == 'error':
                failed.append('multifd')
        if '8' in only:
            if not measure_breakdown(o, wd, results)['valid']:
                failed.append('breakdown')
        if '9' in only:
            if not measure_fairness(o, wd, results)['valid']:
                failed.append('fairness')
    finally:
        results['elapsed_s'] = round(time.time() - t0, 1)
        if build_id().split()[1:] != build.split()[1:]:
            # Someone rebuilt the tree during the run: mixed binaries.
            log('bench: WARNING: %s changed during the run (%s -> %s); '
                'figures mix two builds' % (lab.QEMU, build, build_id()))
            failed.append('build-changed')
        results['failed'] = failed
        path = os.path.join(o.out, 'results.json')
        with open(path, 'w') as f:
            json.dump(results, f, indent=1, sort_keys=True)
        print_table(results)
        log('bench: results %s%s' % (path, (', plot ' + results['plot'])
                                     if results.get('plot') else ''))
        if not o.keep and not failed:
            shutil.rmtree(wd, ignore_errors=True)
        else:
            log('bench: work dir kept: %s' % wd)
    sys.exit(1 if failed else 0)


def build_id():
    """The tree's commit and the binaries' mtimes."""
    try:
        head = subprocess.run(['git', '-C', lab.TREE, 'rev-parse', '--short',
                               'HEAD'], capture_output=True, text=True,
                              check=False).stdout.strip() or '?'
    except OSError:
        head = '?'
    return '%s qemu@%d dev@%d' % (head, os.path.getmtime(lab.QEMU),
                                  os.path.getmtime(lab.SERVER))


def tp_ok(tp, name, key):
    return name in tp and tp[name][key]['valid']


def quick_bw(wd):
    """Channel bandwidth for measure 2 when measure 1 was not run."""
    log('== channel bandwidth for 2: 256 MiB device memory, mmap')
    r = one_run(wd, 'bw-256M', 32 * MiB, ['--mem-size', '256M'],
                kind='dev_mmap', nbytes_key='vfio_bytes')
    return r['MBps'] if r['valid'] else None


def print_table(r):
    log('')
    log('%-28s %10s %10s %10s %8s  %s' % ('measure', 'bytes MiB', 'time ms',
                                          'MB/s', 'check', 'all runs MB/s'))
    for name, case in r.get('throughput', {}).items():
        for k in ('ram', 'dev_mmap', 'dev_nommap'):
            x = case[k]
            log('%-28s %10.1f %10d %10.0f %8s  %s' %
                ('1. %s %s' % (k, name), (x.get('bytes') or 0) / MiB,
                 x.get('total_ms') or 0, x.get('MBps') or 0,
                 'ok' if x['valid'] else 'FAIL', x.get('runs_MBps')))
        log('%-28s devmem/ram mmap %s, no-mmap %s' %
            ('1. ratio %s' % name, fmt(case['ratio_mmap']),
             fmt(case['ratio_nommap'])))
    s = r.get('switchover')
    if s:
        log('%-28s %10.1f %10s %10s %8s' %
            ('2. device stop-and-copy', s.get('stop_bytes', 0) / MiB,
             fmt(s.get('device_share_ms'), '%.1f'),
             fmt(s.get('core_bandwidth_MBps'), '%.0f'),
             'ok' if s['valid'] else 'FAIL'))
        log('%-28s ideal %s ms, measured/ideal %s (median of %s), downtime '
            '%s ms (device share %s of it); against the bandwidth of 1: %s' %
            ('', fmt(s.get('ideal_ms'), '%.1f'), fmt(s.get('ratio')),
             s.get('runs_ratio'), s.get('downtime_ms', 'n/a'),
             fmt(s.get('device_share_of_downtime')),
             fmt(s.get('ratio_section1_bw'))))
    for k, b in r.get('bitmap', {}).items():
        log('%-28s %s us/GiB/log_sync (%s syncs, min %s)  %s' %
            ('3. bitmap query RAM %s' % k,
             fmt(b.get('us_per_GiB_per_sync'), '%.1f'),
             b.get('log_syncs', 0),
             fmt(b.get('us_per_GiB_per_sync_min'), '%.1f'),
             'ok' if b['valid'] else 'FAIL'))
    for key, rows in r.get('chunks', {}).items():
        log('4. chunk size (%s): %s' % (key, '  '.join(
            '%s=%s' % (c, ('%.0f' % x['MBps']) if x['valid'] else
                       'FAIL(%s)' % x.get('runs_MBps'))
            for c, x in rows.items())))
    d5 = r.get('downtime_at_limit')
    if d5:
        log('%-28s %s' % ('5. downtime at %d ms' % DEFAULT_DOWNTIME_LIMIT,
                          limit_line(d5)))
    c6 = r.get('cpu')
    if c6:
        log('%-28s devmem %s, ram %s CPU s/GiB -> devmem/ram %s' %
            ('6. CPU per GiB moved', fmt(c6.get('cpu_s_per_GiB_devmem')),
             fmt(c6.get('cpu_s_per_GiB_ram')),
             fmt(c6.get('cpu_ratio_devmem_vs_ram'))))
    m7 = r.get('multi_device')
    if m7:
        log('%-28s %s' % ('7. %d devices x %d MiB' %
                          (m7['devices'], m7['device_mem'] >> 20),
                          limit_line(m7)))
        mf = m7.get('multifd') or {}
        log('%-28s multifd device state: %s; downtime per GiB of '
            'stop-and-copy device state %s ms (main) / %s ms (multifd): '
            'cut %s; downtime %s / %s ms' %
            ('', m7.get('multifd_devstate'), fmt(mf.get('ms_per_GiB_main'),
                                                 '%.0f'),
             fmt(mf.get('ms_per_GiB_multifd'), '%.0f'),
             fmt(mf.get('downtime_cut')), mf.get('downtime_ms_main'),
             mf.get('downtime_ms_multifd')))
    b8 = r.get('breakdown')
    if b8 and b8.get('threads') is not None:
        print_breakdown(b8)
    f9 = r.get('fairness')
    if f9:
        log('%-28s %s' % ('9. fairness at %d MiB/s' %
                          (f9['max_bandwidth'] >> 20),
                          fairness_line(f9) if f9.get('quarters') is not None
                          else 'FAIL: %s' % f9.get('error')))
    tp = r.get('throughput', {})
    fields = []
    for name, case in tp.items():
        fields.append('ratio_%s_mmap=%s ratio_%s_nommap=%s' %
                      (name, fmt(case['ratio_mmap']), name,
                       fmt(case['ratio_nommap'])))
    main_ratio = tp.get('1024M', {}).get('ratio_mmap')
    s = r.get('switchover') or {}
    bm = r.get('bitmap', {})
    line = 'bench: devmem_vs_ram_ratio=%s %s' % (fmt(main_ratio),
                                                 ' '.join(fields))
    d5 = r.get('downtime_at_limit') or {}
    c6 = r.get('cpu') or {}
    m7 = r.get('multi_device') or {}

    def yes_no(x, ran):
        return ('yes' if x else 'no') if ran else 'n/a'
    line += (' downtime_ms_at_limit=%s downtime_limit_ms=%d '
             'converged_at_limit=%s cpu_ratio_devmem_vs_ram=%s '
             'devstate_share_vs_bytes_bw=%s downtime_ms_4dev=%s '
             'multifd_devstate=%s' %
             (d5.get('downtime_ms') if d5.get('converged') else 'n/a',
              DEFAULT_DOWNTIME_LIMIT, yes_no(d5.get('converged'), d5),
              fmt(c6.get('cpu_ratio_devmem_vs_ram')),
              fmt(s.get('ratio')),
              m7.get('downtime_ms_raised') if m7.get('ok') else 'n/a',
              m7.get('multifd_devstate', 'n/a')))
    mf = m7.get('multifd') or {}
    line += (' multifd_downtime_cut=%s multifd_downtime_ms_4dev=%s '
             'main_downtime_ms_4dev=%s' %
             (fmt(mf.get('downtime_cut')), mf.get('downtime_ms_multifd', 'n/a'),
              mf.get('downtime_ms_main', 'n/a')))
    line += (' cpu_s_per_GiB_devmem=%s cpu_s_per_GiB_ram=%s '
             'downtime_limit_ms_4dev=%s converged_4dev_at_limit=%s' %
             (fmt(c6.get('cpu_s_per_GiB_devmem')),
              fmt(c6.get('cpu_s_per_GiB_ram')),
              m7.get('final_downtime_limit_ms', 'n/a') if m7.get('ok')
              else 'n/a', yes_no(m7.get('converged'), m7)))
    if s:
        line += ' switchover_ratio=%s switchover_ratio_bw_of_1=%s' % (
            fmt(s.get('ratio')), fmt(s.get('ratio_section1_bw')))
    for k, b in bm.items():
        line += ' bitmap_us_per_GiB_sync_%s=%s' % (
            k, fmt(b.get('us_per_GiB_per_sync'), '%.1f'))
    f9 = r.get('fairness') or {}
    if f9:
        line += ' fair_min_share=%s fair_max_starve_ms=%s' % (
            fmt(f9.get('min_share_first_half'), '%.3f'),
            f9.get('max_starve_ms', 'n/a'))
    line += ' failed=%s elapsed_s=%s' % (','.join(r['failed']) or 'none',
                                         r['elapsed_s'])
    log(line)


def print_breakdown(b):
    ph, tl = b.get('phases_ms', {}), b.get('timeline_ms', {})
    log('8. breakdown, %d MiB device memory (mmap): total %s ms = setup %s + '
        'precopy %s + device stop-and-copy %s + rest %s; downtime %s ms' %
        (b['device_mem'] >> 20, tl.get('src_total'), ph.get('setup'),
         ph.get('precopy'), ph.get('stop_copy_device'),
         ph.get('after_device'), b.get('downtime_ms')))
    log('   device memory: precopy %.1f MiB, stop-and-copy %.1f MiB; %d '
        'chunks in %d iterations' %
        (b.get('devmem_bytes_precopy', 0) / MiB,
         b.get('devmem_bytes_stopcopy', 0) / MiB, b.get('chunks', 0),
         b.get('iterations', 0)))
    for side, key, before, after in (
            ('src', 'src_chunks', 'flush prev', 'GET_BUFFER'),
            ('dst', 'dst_chunks', 'receive', 'SET_BUFFER')):
        for p, c in sorted(b.get(key, {}).items()):
            iv = c.get('interval_ms') or {}
            bc = c.get('before_ctl_ms') or {}
            ac = c.get('after_ctl_ms') or {}
            gp = c.get('gaps_across_iterations_ms') or {}
            log('   %s %-8s %4d chunks: %s ms/chunk (median %s, p90 %s, max '
                '%s) = %s %s + %s %s; %d gaps between iterations, %s ms' %
                (side, p, c['chunks'], iv.get('mean'), iv.get('median'),
                 iv.get('p90'), iv.get('max'), before, bc.get('mean'),
                 after, ac.get('mean'), gp.get('n', 0), gp.get('sum', 0)))
    for p, d in b.get('sections_ms', {}).items():
        log('   source savevm sections, %s: %s' % (p, ', '.join(
            '%s %.1f ms' % kv for kv in sorted(d.items()))))
    wall = (b.get('cpu') or {}).get('wall_s')
    log('   minor page faults: %s' % ', '.join(
        '%s %s' % (p, v.get('minor_faults'))
        for p, v in sorted((b.get('cpu') or {}).get('procs', {}).items())))
    log('   %-10s %-22s %8s %7s   (wall %s s)' %
        ('process', 'thread', 'CPU s', 'busy', wall))
    for t in b['threads']:
        if t['cpu_s'] >= 0.01:
            log('   %-10s %-22s %8.2f %6.0f%%' %
                (t['process'], t['thread'], t['cpu_s'],
                 100 * (t['busy'] or 0)))


if __name__ == '__main__':
    main()
