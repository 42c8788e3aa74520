#!/usr/bin/env python3
# SPDX-License-Identifier: GPL-2.0-or-later
"""Benchmark device-state migration against guest-RAM migration.

All migrations go from one QEMU to another on this host over a unix
socket, one at a time, with max-bandwidth 0 (unlimited in this QEMU:
RATE_LIMIT_DISABLED).  Four measures:

 1. throughput: device memory of S bytes (small guest RAM) against guest
    RAM of S bytes of random content (tiny device memory), S = 256 MiB and
    1 GiB, data regions mmapped and not (--no-mmap).  Throughput = bytes /
    query-migrate total-time.
 2. switchover: the time the device state takes in the stop-and-copy
    phase (trace: STOP|LOGGING -> vfio_ds_save_complete) against its bytes
    / the channel bandwidth measured in 1.
 3. the system-memory dirty-bitmap query: its cost per log_sync per GiB
    of guest RAM (trace: vfio_ds_bitmap_query..._done per section, summed
    between migration_bitmap_sync_start and _end).
 4. throughput against --chunk-size (size of the DATA_MEMORY region).

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


def opts():
    p = argparse.ArgumentParser(prog='make bench BENCH_ARGS=...',
                                description=__doc__.split('\n\n')[0])
    p.add_argument('--out', default=os.path.join(lab.TOP, '.work', 'bench'),
                   help='results directory (default .work/bench)')
    p.add_argument('--sizes', default='256M,1G',
                   help='sizes S for measure 1 (default 256M,1G)')
    p.add_argument('--only', default='1,2,3,4',
                   help='measures to run, e.g. 1,4 (default all)')
    p.add_argument('--repeat', type=int, default=3,
                   help='measure 1: runs per case, the median counts (3)')
    p.add_argument('--chunk-repeat', type=int, default=2,
                   help='measure 4: runs per chunk size (2; with an even '
                   'count the median is the upper middle run)')
    p.add_argument('--chunk-mmap-only', action='store_true',
                   help='measure 4 only with mmapped data regions')
    p.add_argument('--mutate-rate', type=int, default=200000,
                   help='measure 2: device pages mutated per second')
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


class Run:
    """One migration: source and destination device servers and QEMUs."""

    def __init__(self, wd, tag):
        self.wd = os.path.join(wd, tag)
        os.makedirs(self.wd)
        self.tag = tag
        self.servers, self.vms = [], []

    def start(self, ram, dev_args, src_dev_extra=(), mem_path=None,
              paused=False, trace=()):
        self.ssrv = lab.DeviceServer(self.wd, 'src-dev',
                                     dev_args + list(src_dev_extra))
        self.servers.append(self.ssrv)
        self.dsrv = lab.DeviceServer(self.wd, 'dst-dev', dev_args)
        self.servers.append(self.dsrv)
        extra = ['-S'] if paused else []
        old = os.environ.pop('DEMO_TRACE', None)
        try:
            if trace:
                os.environ['DEMO_TRACE'] = trace[0]
                extra += ['-msg', 'timestamp=on']
                for t in trace[1:]:
                    extra += ['-trace', t]
            self.src = lab.vm(self.wd, 'src', self.ssrv, ram, extra=extra,
                              mem_path=mem_path)
            self.vms.append(self.src)
            os.environ.pop('DEMO_TRACE', None)
            self.dst = lab.vm(self.wd, 'dst', self.dsrv, ram, incoming=True,
                              extra=['-S'])
            self.vms.append(self.dst)
        finally:
            os.environ.pop('DEMO_TRACE', None)
            if old is not None:
                os.environ['DEMO_TRACE'] = old
        self.trace = os.path.join(self.wd, 'src.trace')

    def migrate(self, downtime_limit=300, timeout=180):
        for m in (self.src, self.dst):
            lab.set_caps(m, return_path=True, switchover_ack=True)
        # max-bandwidth 0 = RATE_LIMIT_DISABLED in this QEMU
        # (migration/migration-stats.c); checked back below.
        self.src.cmd('migrate-set-parameters', max_bandwidth=0,
                     downtime_limit=downtime_limit)
        params = self.src.cmd('query-migrate-parameters')
        if params.get('max-bandwidth') != 0:
            raise RuntimeError('max-bandwidth is %r, not 0' %
                               params.get('max-bandwidth'))
        uri = 'unix:' + os.path.join(self.wd, 'migration.sock')
        self.dst.cmd('migrate-incoming', uri=uri)
        time.sleep(0.1)
        t0 = time.time()
        self.src.cmd('migrate', uri=uri)
        while True:
            info = self.src.cmd('query-migrate')
            if info.get('status') in ('completed', 'failed', 'cancelled'):
                break
            if time.time() - t0 > timeout:
                self.src.cmd('migrate_cancel')
                time.sleep(1)
                info = self.src.cmd('query-migrate')
                info['error-desc'] = 'timeout after %ds' % timeout
                break
            time.sleep(0.05)
        # Let the destination finish loading before anything is compared.
        end = time.time() + 30
        while time.time() < end:
            st = self.dst.cmd('query-migrate').get('status')
            if st in ('completed', 'failed'):
                break
            time.sleep(0.05)
        ram = info.get('ram', {})
        r = {'status': info.get('status'),
             'error': info.get('error-desc'),
             'total_ms': info.get('total-time', 0),
             'setup_ms': info.get('setup-time', 0),
             'downtime_ms': info.get('downtime', 0),
             'ram_bytes': ram.get('transferred', 0),
             'ram_normal_bytes': ram.get('normal-bytes', 0),
             'vfio_bytes': info.get('vfio', {}).get('transferred', 0),
             'dst_status': st}
        r['ok'] = r['status'] == 'completed' and st == 'completed'
        return r

    def digests(self):
        s, d = self.ssrv.digest(), self.dsrv.digest()
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
        res.update(run.migrate())
        if res['ok']:
            res['digest_ok'] = run.digests()[0]
            if ram_samples:
                res['ram_sample_ok'] = ram_equal(run, ram)
        res['bytes'] = res[nbytes_key]
        res['MBps'] = mbps(res['bytes'], res['total_ms'])
        res['MBps_all'] = mbps(res['ram_bytes'] + res['vfio_bytes'],
                               res['total_ms'])
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


def measure_switchover(o, wd, results, bw_MBps):
    log('== 2. device state at switchover vs its bytes / channel bandwidth')
    mem = 256 * MiB
    run = Run(wd, 'switchover')
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
                         'migration_completion_vm_stop'))
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
                                if ev == 'vfio_ds_save_complete'][0]).group(1))
        # Where the device's own section of the stop-and-copy begins.
        t_sec = next((t for t, ev, a in after if ev == 'savevm_section_start'
                      and 'vfio' in a), None)
        nbytes = chunks + config
        share_ms = (t_done - t_stop) * 1000
        ideal_ms = nbytes / 1e6 / bw_MBps * 1000 if bw_MBps else None
        res.update(stop_bytes=nbytes, stop_chunk_bytes=chunks,
                   stop_sets_opened=sets, config_bytes=config,
                   device_share_ms=share_ms, ideal_ms=ideal_ms,
                   ratio=share_ms / ideal_ms if ideal_ms else None,
                   device_section_ms=((t_done - t_sec) * 1000
                                      if t_sec else None))
    except Exception as e:      # pylint: disable=broad-except
        res.update(ok=False, error='%s: %s' % (type(e).__name__, e))
    finally:
        run.stop()
    res['valid'] = bool(res.get('ok') and res.get('digest_ok') and
                        res.get('ratio'))
    if res.get('ratio'):
        log('  stop-and-copy device bytes %.1f MiB (sets opened at stop %s, '
            'config %d B): device share %.1f ms vs %.1f ms at %.0f MB/s '
            '-> %.2fx; downtime %d ms; %s' %
            (res['stop_bytes'] / MiB, res['stop_sets_opened'],
             res['config_bytes'], res['device_share_ms'], res['ideal_ms'],
             bw_MBps, res['ratio'], res['downtime_ms'],
             'ok' if res['valid'] else 'FAILED'))
    else:
        log('  FAILED: %s' % res.get('error'))
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
    only = set(o.only.split(','))
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
             fmt(s.get('bandwidth_MBps'), '%.0f'),
             'ok' if s['valid'] else 'FAIL'))
        log('%-28s ideal %s ms, measured/ideal %s, downtime %s ms' %
            ('', fmt(s.get('ideal_ms'), '%.1f'), fmt(s.get('ratio')),
             s.get('downtime_ms', 'n/a')))
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
    if s:
        line += ' switchover_ratio=%s' % fmt(s.get('ratio'))
    for k, b in bm.items():
        line += ' bitmap_us_per_GiB_sync_%s=%s' % (
            k, fmt(b.get('us_per_GiB_per_sync'), '%.1f'))
    line += ' failed=%s elapsed_s=%s' % (','.join(r['failed']) or 'none',
                                         r['elapsed_s'])
    log(line)


if __name__ == '__main__':
    main()
