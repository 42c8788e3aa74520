/*
 * Live migration of VFIO devices through device-state regions
 *
 * Two QEMUs, two vfio-user reference devices (tests/vfio-user-devstate),
 * a real migration over a UNIX socket.  The source device mutates its
 * memory and writes guest RAM by DMA during precopy; the destination is
 * started with -S, so that after the switchover both devices are stopped
 * and can be compared: the device digests (device memory + config), the
 * guest RAM the device wrote, and the device-state arcs each device took.
 * The failure cases check that the source VM keeps running with its
 * device working.
 *
 * With DEVSTATE_KERNEL_MDEV_TYPE set, the devices are instances of that
 * kernel mdev type instead (the same device model in a kernel driver,
 * e.g. the Linux series' samples/vfio-mdev/mdevstate.c), on -device
 * vfio-pci; the cases about the vfio-user transport or the server
 * process skip then.
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 */

#include "qemu/osdep.h"
#include "qemu/bswap.h"
#include "qemu/units.h"
#include "libqtest.h"
#include "libqos/pci-pc.h"
#include "hw/pci/pci_regs.h"
#include "qobject/qdict.h"
#include "vfio-user-devstate-util.h"

#define RAM_SIZE        (128 * MiB)
#define DMA_ADDR        (64 * MiB)
#define DMA_PAGES       1024
#define DMA_SIZE        (DMA_PAGES * DEVSTATE_PAGE_SIZE)

typedef struct Side {
    DevstateServer *srv;
    QTestState *qts;
} Side;

typedef struct Mig {
    Side src, dst;
    char *tmpdir;
    char *uri;
} Mig;

static bool kernel_mode(void)
{
    return devstate_kernel_mdev_type() != NULL;
}

/* Skip a case that only applies to the vfio-user reference device */
static bool skip_in_kernel_mode(const char *why)
{
    if (kernel_mode()) {
        g_test_skip(why);
        return true;
    }
    return false;
}

/*
 * The machine: a vfio-user server reaches guest RAM through a shared
 * memfd; a kernel device through the VFIO container's mappings.
 */
static const char *machine_opts(void)
{
    return kernel_mode() ? "-machine q35 -m 128M" :
        "-machine q35 -m 128M -object memory-backend-memfd,id=mem,size=128M "
        "-machine memory-backend=mem";
}

/*
 * Options of every VM that a multifd case starts: the multifd capability,
 * and the device's stop-and-copy state over the multifd channels ("on":
 * the migration fails if the device cannot).
 */
static const char *vm_extra = "";

static const char *multifd_opts(void)
{
    return kernel_mode() ?
        "-global migration.x-multifd=on "
        "-global vfio-pci.x-migration-multifd-transfer=on" :
        "-global migration.x-multifd=on "
        "-global vfio-user-pci.x-migration-multifd-transfer=on";
}

/* Run @fn(@data) with multifd device state transfer on all VMs */
static void with_multifd(void (*fn)(const void *), const void *data)
{
    vm_extra = multifd_opts();
    fn(data);
    vm_extra = "";
}

static QTestState *start_vm(DevstateServer *srv, const char *extra)
{
    g_autofree char *dev = devstate_server_device(srv, "dev0");

    return qtest_initf("%s -device %s %s %s", machine_opts(), dev, vm_extra,
                       extra ? extra : "");
}

static void set_caps(QTestState *qts, bool ack)
{
    qtest_qmp_assert_success(qts,
        "{'execute': 'migrate-set-capabilities', 'arguments': "
        "{'capabilities': [{'capability': 'return-path', 'state': %i}, "
        "{'capability': 'switchover-ack', 'state': %i}]}}", ack, ack);
}

/* Start both sides; the destination waits on a UNIX socket. */
static void mig_start_full(Mig *m, const char *src_opts,
                           const char *src_vm_opts, const char *dst_opts,
                           const char *dst_vm_opts, bool ack)
{
    m->tmpdir = g_dir_make_tmp("vfio-devstate-mig-XXXXXX", NULL);
    g_assert_nonnull(m->tmpdir);
    m->uri = g_strdup_printf("unix:%s/mig.sock", m->tmpdir);
    m->src.srv = devstate_server_start(src_opts);
    m->dst.srv = devstate_server_start(dst_opts);
    m->src.qts = start_vm(m->src.srv, src_vm_opts);
    m->dst.qts = start_vm(m->dst.srv, dst_vm_opts ? dst_vm_opts :
                          "-incoming defer -S");
    set_caps(m->src.qts, ack);
    set_caps(m->dst.qts, ack);
    /*
     * The devices of live_opts() dirty all of their memory in well under
     * a second: with the default 300 ms, their pending device memory
     * would never fit the downtime limit, and the migration would
     * (rightly) not converge.
     */
    qtest_qmp_assert_success(m->src.qts,
        "{'execute': 'migrate-set-parameters', 'arguments': "
        "{'downtime-limit': 5000}}");
    qtest_qmp_assert_success(m->dst.qts,
        "{'execute': 'migrate-incoming', 'arguments': {'uri': %s}}", m->uri);
}

static void mig_start(Mig *m, const char *src_opts, const char *dst_opts,
                      const char *dst_vm_opts, bool ack)
{
    mig_start_full(m, src_opts, NULL, dst_opts, dst_vm_opts, ack);
}

static void mig_end(Mig *m)
{
    if (m->src.qts) {
        qtest_quit(m->src.qts);
    }
    if (m->dst.qts) {
        qtest_quit(m->dst.qts);
    }
    devstate_server_stop(m->src.srv);
    devstate_server_stop(m->dst.srv);
    g_autofree char *sock = g_strdup_printf("%s/mig.sock", m->tmpdir);
    unlink(sock);
    rmdir(m->tmpdir);
    g_free(m->tmpdir);
    g_free(m->uri);
}

static void save_fn(QPCIDevice *dev, int devfn, void *data)
{
    *(QPCIDevice **)data = dev;
}

/* Enable the device (memory, bus master) and read one BAR0 register. */
static uint32_t read_reg(QTestState *qts, uint32_t reg)
{
    QPCIBus *bus = qpci_new_pc(qts, NULL);
    QPCIDevice *dev = NULL;
    QPCIBar bar0;
    uint32_t v;

    qpci_device_foreach(bus, DEVSTATE_PCI_VENDOR_ID, DEVSTATE_PCI_DEVICE_ID,
                        save_fn, &dev);
    g_assert_nonnull(dev);
    qpci_device_enable(dev);
    bar0 = qpci_iomap(dev, 0, NULL);
    v = qpci_io_readl(dev, bar0, reg);
    qpci_iounmap(dev, bar0);
    g_free(dev);
    qpci_free_pc(bus);
    return v;
}

/* The device on @qts, enabled, with BAR0 mapped */
static QPCIDevice *open_dev(QTestState *qts, QPCIBus **bus, QPCIBar *bar0)
{
    QPCIDevice *dev = NULL;

    *bus = qpci_new_pc(qts, NULL);
    qpci_device_foreach(*bus, DEVSTATE_PCI_VENDOR_ID, DEVSTATE_PCI_DEVICE_ID,
                        save_fn, &dev);
    g_assert_nonnull(dev);
    qpci_device_enable(dev);
    *bar0 = qpci_iomap(dev, 0, NULL);
    return dev;
}

static void close_dev(QPCIDevice *dev, QPCIBus *bus, QPCIBar bar0)
{
    qpci_iounmap(dev, bar0);
    g_free(dev);
    qpci_free_pc(bus);
}

static char *status_field(DevstateServer *srv, const char *key)
{
    g_autofree char *st = devstate_server_cmd(srv, "status");
    g_auto(GStrv) kv = g_strsplit(st, " ", -1);
    size_t n = strlen(key);
    int i;

    for (i = 0; kv[i]; i++) {
        if (!strncmp(kv[i], key, n) && kv[i][n] == '=') {
            return g_strdup(kv[i] + n + 1);
        }
    }
    g_assert_not_reached();
}

static uint64_t status_u64(DevstateServer *srv, const char *key)
{
    g_autofree char *v = status_field(srv, key);

    return g_ascii_strtoull(v, NULL, 0);
}

static void assert_state(DevstateServer *srv, const char *state)
{
    g_autofree char *v = status_field(srv, "state");

    g_assert_cmpstr(v, ==, state);
}

/* The device works: its mutation counter moves. */
static void assert_device_works(DevstateServer *srv)
{
    uint64_t a = status_u64(srv, "mutate_count");
    int i;

    for (i = 0; i < 100; i++) {
        g_usleep(20 * 1000);
        if (status_u64(srv, "mutate_count") > a) {
            return;
        }
    }
    g_assert_not_reached();
}

/*
 * Start a migration from @qts to @uri.  Right after a failed one the core
 * may still be cleaning that up: its status reads "failed" before the
 * cleanup unregisters its yank instance, and until then a new migration
 * is refused with "duplicate yank instance".  Try again until it is done.
 */
static void migrate_to(QTestState *qts, const char *uri)
{
    int i;

    for (i = 0; i < 500; i++) {
        g_autoptr(QDict) rsp = qtest_qmp(qts, "{'execute': 'migrate', "
                                         "'arguments': {'uri': %s}}", uri);
        QDict *err = qdict_get_qdict(rsp, "error");

        if (!err) {
            g_assert_true(qdict_haskey(rsp, "return"));
            return;
        }
        g_assert_cmpstr(qdict_get_try_str(err, "desc"), ==,
                        "duplicate yank instance");
        g_usleep(10 * 1000);
    }
    g_assert_not_reached();
}

static void mig_go(Mig *m)
{
    migrate_to(m->src.qts, m->uri);
}

/* Device-state arcs of a device, from its log, as "A -> B,C -> D" */
static char *arcs(DevstateServer *srv)
{
    g_autofree char *log = NULL;
    g_auto(GStrv) lines = NULL;
    GString *s = g_string_new("");
    int i;

    log = devstate_server_log(srv);
    lines = g_strsplit(log, "\n", -1);
    for (i = 0; lines[i]; i++) {
        if (g_str_has_prefix(lines[i], "devstate: state ") &&
            !strstr(lines[i], "refused") && !strstr(lines[i], "failed")) {
            g_string_append_printf(s, "%s%s", s->len ? "," : "",
                                   lines[i] + strlen("devstate: state "));
        }
    }
    return g_string_free(s, false);
}

static bool log_has(DevstateServer *srv, const char *what)
{
    g_autofree char *log = devstate_server_log(srv);

    return strstr(log, what) != NULL;
}

/* Wait until a device's log shows @what (the migration got that far). */
static void wait_log(DevstateServer *srv, const char *what)
{
    int i;

    for (i = 0; i < 1000 && !log_has(srv, what); i++) {
        g_usleep(10 * 1000);
    }
    g_assert_true(log_has(srv, what));
}

#define LIVE_DMA_OPTS   "--dma-addr 0x4000000 --dma-pages 1024 --start"
#define LIVE_OPTS       "--mem-size 64M --mutate-rate 20000 --dma-rate 5000 " \
                        LIVE_DMA_OPTS
/* A kernel device may run in a slow nested guest: less memory, lower rates */
#define KERNEL_LIVE_OPTS "--mem-size 16M --mutate-rate 1000 --dma-rate 500 " \
                        LIVE_DMA_OPTS

static const char *live_opts(bool mmap)
{
    if (kernel_mode()) {
        return mmap ? KERNEL_LIVE_OPTS : KERNEL_LIVE_OPTS " --no-mmap";
    }
    return mmap ? LIVE_OPTS : LIVE_OPTS " --no-mmap";
}

/* The device memory of live_opts(), for a destination device */
static const char *dst_mem(void)
{
    return kernel_mode() ? "--mem-size 16M" : "--mem-size 64M";
}

static void do_live(bool mmap, const char *xfer)
{
    Mig m = { 0 };
    g_autofree char *st = NULL, *err = NULL;
    g_autofree char *sdig = NULL, *ddig = NULL, *sarcs = NULL, *darcs = NULL;
    g_autofree uint8_t *sram = g_malloc(DMA_SIZE);
    g_autofree uint8_t *dram = g_malloc(DMA_SIZE);
    uint64_t dma_before, dma_after;
    const struct devstate_dma_stamp *stamp;

    g_autofree char *sopts = g_strdup_printf("%s %s", live_opts(mmap),
                                             xfer ?: "");
    g_autofree char *dopts = g_strdup_printf("%s %s %s", dst_mem(),
                                             mmap ? "" : "--no-mmap",
                                             xfer ?: "");

    mig_start(&m, sopts, dopts, NULL, true);
    g_assert_cmphex(read_reg(m.src.qts, DEVSTATE_REG_ID), ==,
                    DEVSTATE_ID_MAGIC);
    /* Slow enough that the device is busy for several iterations. */
    qtest_qmp_assert_success(m.src.qts,
        "{'execute': 'migrate-set-parameters', 'arguments': "
        "{'max-bandwidth': %d, 'downtime-limit': 1000}}", (int)(64 * MiB));
    dma_before = status_u64(m.src.srv, "dma_count");
    mig_go(&m);
    st = devstate_mig_wait(m.src.qts, &err);
    g_assert_cmpstr(st, ==, "completed");
    dma_after = status_u64(m.src.srv, "dma_count");
    /* The device wrote guest RAM during the migration */
    g_assert_cmpuint(dma_after, >, dma_before + 100);

    /* Both devices are stopped now. */
    assert_state(m.src.srv, "STOP");
    assert_state(m.dst.srv, "STOP");
    sdig = devstate_server_digest(m.src.srv);
    ddig = devstate_server_digest(m.dst.srv);
    g_assert_cmpstr(sdig, ==, ddig);

    qtest_memread(m.src.qts, DMA_ADDR, sram, DMA_SIZE);
    qtest_memread(m.dst.qts, DMA_ADDR, dram, DMA_SIZE);
    stamp = (const struct devstate_dma_stamp *)sram;
    g_assert_cmphex(stamp->magic, ==, DEVSTATE_DMA_MAGIC);
    g_assert_true(memcmp(sram, dram, DMA_SIZE) == 0);

    /* Only valid arcs, and exactly the flows of the interface */
    sarcs = arcs(m.src.srv);
    darcs = arcs(m.dst.srv);
    g_assert_cmpstr(sarcs, ==, "RUNNING -> RUNNING|LOGGING,"
                    "RUNNING|LOGGING -> P2P|LOGGING,"
                    "P2P|LOGGING -> STOP|LOGGING,STOP|LOGGING -> STOP");
    g_assert_cmpstr(darcs, ==, "RUNNING -> STOP");
    g_assert_false(log_has(m.src.srv, "refused"));
    g_assert_false(log_has(m.dst.srv, "refused"));

    /* The destination runs on with the device working */
    qtest_qmp_assert_success(m.dst.qts, "{'execute': 'cont'}");
    assert_state(m.dst.srv, "RUNNING");
    assert_device_works(m.dst.srv);
    g_free(darcs);
    darcs = arcs(m.dst.srv);
    g_assert_cmpstr(darcs, ==, "RUNNING -> STOP,STOP -> P2P,P2P -> RUNNING");
    mig_end(&m);
}

static void test_live_mmap(void)
{
    do_live(true, NULL);
}

static void test_live_nommap(void)
{
    do_live(false, NULL);
}

static void do_live_multifd(const void *mmap)
{
    do_live(mmap != NULL, NULL);
}

/*
 * The same with the stop-and-copy state on the multifd channels: the
 * same digests, the same guest RAM, the same arcs.
 */
static void test_live_multifd(void)
{
    with_multifd(do_live_multifd, "mmap");
}

static void test_live_multifd_nommap(void)
{
    with_multifd(do_live_multifd, NULL);
}

/*
 * The same with x-migration-load-config-after-iter: the destination loads
 * the last buffer (the configs) only once the main channel's
 * non-iterable section said DEV_CONFIG_LOAD_READY, which the source
 * sends only with the property on.  Without the marker the load thread
 * would wait for good; a marker the loader did not expect fails it.
 */
static void test_live_multifd_config_after_iter(void)
{
    g_autofree char *opts = g_strdup_printf("%s -global %s."
                                            "x-migration-load-config-after-"
                                            "iter=on", multifd_opts(),
                                            kernel_mode() ? "vfio-pci" :
                                            "vfio-user-pci");

    vm_extra = opts;
    do_live(true, NULL);
    vm_extra = "";
}

/*
 * Servers that negotiate a smaller or a larger max_data_xfer_size than
 * the 1 MiB data regions: QEMU's region accesses follow the transport.
 */
static void test_live_small_xfer(void)
{
    if (skip_in_kernel_mode("the vfio-user transfer size does not apply to "
                            "a kernel device")) {
        return;
    }
    do_live(false, "--max-xfer 64K");
}

static void test_live_large_xfer(void)
{
    if (skip_in_kernel_mode("the vfio-user transfer size does not apply to "
                            "a kernel device")) {
        return;
    }
    do_live(false, "--chunk-size 4M --max-xfer 8M");
}

/*
 * A VM that never ran (-S) has nothing to stop at the switchover: its
 * device must be stopped when the migration starts.
 */
static void test_paused_source(void)
{
    Mig m = { 0 };
    g_autofree char *st = NULL, *err = NULL, *sdig = NULL, *ddig = NULL;
    g_autofree char *sarcs = NULL;

    mig_start_full(&m, "--mem-size 16M --start", "-S", "--mem-size 16M",
                   NULL, true);
    mig_go(&m);
    st = devstate_mig_wait(m.src.qts, &err);
    g_assert_cmpstr(st, ==, "completed");
    sdig = devstate_server_digest(m.src.srv);
    ddig = devstate_server_digest(m.dst.srv);
    g_assert_cmpstr(sdig, ==, ddig);
    sarcs = arcs(m.src.srv);
    g_assert_cmpstr(sarcs, ==, "RUNNING -> STOP|LOGGING,STOP|LOGGING -> STOP");
    mig_end(&m);
}

/* After a failed migration: the source VM runs, its device is RUNNING */
static void assert_source_running(Mig *m)
{
    g_autofree char *run = NULL;
    QDict *rsp;

    rsp = qtest_qmp_assert_success_ref(m->src.qts,
                                       "{'execute': 'query-status'}");
    run = g_strdup(qdict_get_try_str(rsp, "status"));
    qobject_unref(rsp);
    g_assert_cmpstr(run, ==, "running");
    assert_state(m->src.srv, "RUNNING");
    assert_device_works(m->src.srv);
}

/*
 * After a failed migration: the source VM runs, its device is RUNNING and
 * working, and a second migration to a fresh destination succeeds.
 */
static void assert_source_recovered(Mig *m, const char *dst_opts)
{
    Mig again = { 0 };
    g_autofree char *st = NULL, *err = NULL;
    g_autofree char *sdig = NULL, *ddig = NULL;

    assert_source_running(m);

    /* Second migration, from the same source */
    again.tmpdir = g_dir_make_tmp("vfio-devstate-mig-XXXXXX", NULL);
    again.uri = g_strdup_printf("unix:%s/mig.sock", again.tmpdir);
    again.dst.srv = devstate_server_start(dst_opts);
    again.dst.qts = start_vm(again.dst.srv, "-incoming defer -S");
    set_caps(m->src.qts, true);
    set_caps(again.dst.qts, true);
    qtest_qmp_assert_success(again.dst.qts,
        "{'execute': 'migrate-incoming', 'arguments': {'uri': %s}}",
        again.uri);
    qtest_qmp_assert_success(m->src.qts,
        "{'execute': 'migrate-set-parameters', 'arguments': "
        "{'max-bandwidth': %" PRIu64 "}}", (uint64_t)10 * GiB);
    migrate_to(m->src.qts, again.uri);
    st = devstate_mig_wait(m->src.qts, &err);
    g_assert_cmpstr(st, ==, "completed");
    sdig = devstate_server_digest(m->src.srv);
    ddig = devstate_server_digest(again.dst.srv);
    g_assert_cmpstr(sdig, ==, ddig);
    qtest_quit(again.dst.qts);
    devstate_server_stop(again.dst.srv);
    g_autofree char *sock = g_strdup_printf("%s/mig.sock", again.tmpdir);
    unlink(sock);
    rmdir(again.tmpdir);
    g_free(again.tmpdir);
    g_free(again.uri);
}

static void test_cancel_precopy(void)
{
    Mig m = { 0 };
    g_autofree char *st = NULL;
    int i;

    /*
     * Without a return path: with one, migration_cancel() shuts the return
     * path down before it marks the migration cancelling, and the return
     * path thread may fail the migration first.
     */
    mig_start(&m, live_opts(true), dst_mem(), NULL, false);
    qtest_qmp_assert_success(m.src.qts,
        "{'execute': 'migrate-set-parameters', 'arguments': "
        "{'max-bandwidth': %d}}", (int)(16 * MiB));
    mig_go(&m);
    /* Wait until device memory is on the move, then cancel */
    for (i = 0; i < 500 && !log_has(m.src.srv, "data set opened"); i++) {
        g_usleep(10 * 1000);
    }
    g_assert_true(log_has(m.src.srv, "data set opened"));
    qtest_qmp_assert_success(m.src.qts, "{'execute': 'migrate_cancel'}");
    st = devstate_mig_wait(m.src.qts, NULL);
    g_assert_cmpstr(st, ==, "cancelled");
    qtest_set_expected_status(m.dst.qts, EXIT_FAILURE);
    assert_source_recovered(&m, dst_mem());
    mig_end(&m);
}

static void test_cancel_stop_copy(void)
{
    Mig m = { 0 };
    g_autofree char *st = NULL;
    int i;

    /*
     * The stop-and-copy phase runs under the BQL, so QMP can only cancel
     * in it while the migration pauses before the switchover: the VM and
     * the device are stopped by then (STOP|LOGGING).
     */
    mig_start(&m, live_opts(true), dst_mem(), NULL, false);
    qtest_qmp_assert_success(m.src.qts,
        "{'execute': 'migrate-set-capabilities', 'arguments': "
        "{'capabilities': [{'capability': 'pause-before-switchover', "
        "'state': true}]}}");
    mig_go(&m);
    for (i = 0; i < 3000; i++) {
        g_free(st);
        st = devstate_mig_status(m.src.qts, NULL);
        if (!strcmp(st, "pre-switchover")) {
            break;
        }
        g_usleep(10 * 1000);
    }
    g_assert_cmpstr(st, ==, "pre-switchover");
    assert_state(m.src.srv, "STOP|LOGGING");
    qtest_qmp_assert_success(m.src.qts, "{'execute': 'migrate_cancel'}");
    g_free(st);
    st = devstate_mig_wait(m.src.qts, NULL);
    g_assert_cmpstr(st, ==, "cancelled");
    qtest_set_expected_status(m.dst.qts, EXIT_FAILURE);
    qtest_qmp_assert_success(m.src.qts,
        "{'execute': 'migrate-set-capabilities', 'arguments': "
        "{'capabilities': [{'capability': 'pause-before-switchover', "
        "'state': false}]}}");
    assert_source_recovered(&m, dst_mem());
    mig_end(&m);
}

static void test_incompatible(void)
{
    Mig m = { 0 };
    g_autofree char *st = NULL, *err = NULL, *dopts = NULL;

    if (kernel_mode()) {
        /* A type of the driver with another major interface version */
        if (!devstate_kernel_mdev_incompat_type()) {
            g_test_skip("DEVSTATE_KERNEL_MDEV_INCOMPAT_TYPE is not set");
            return;
        }
        dopts = g_strdup_printf("%s --mdev-type %s", dst_mem(),
                                devstate_kernel_mdev_incompat_type());
    } else {
        dopts = g_strdup_printf("%s --version 2.0.0", dst_mem());
    }
    mig_start(&m, live_opts(true), dopts, NULL, true);
    qtest_set_expected_status(m.dst.qts, EXIT_FAILURE);
    mig_go(&m);
    st = devstate_mig_wait(m.src.qts, &err);
    g_assert_cmpstr(st, ==, "failed");
    /* Refused before any device data, and the source never stopped */
    g_assert_true(log_has(m.dst.srv, "refused"));
    g_assert_false(log_has(m.dst.srv, "data set loaded"));
    g_assert_false(log_has(m.src.srv, "STOP"));
    assert_source_recovered(&m, dst_mem());
    mig_end(&m);
}

typedef struct FaultCase {
    const char *path;
    const char *src_fault;      /* extra options of the source device */
    const char *dst_fault;      /* extra options of the destination device */
    bool dst_loaded;            /* the destination loaded part of the state */
    const char *expect;         /* in the source's error, if set */
} FaultCase;

/*
 * The MSI-X vector the guest programmed before the migration fires on
 * the destination: the PCI config (MSI-X enable, the emulated table)
 * arrived, and QEMU set the device's interrupts up again from it.
 */
static void test_msix(void)
{
    Mig m = { 0 };
    g_autofree char *st = NULL;
    QPCIBus *sbus, *dbus;
    QPCIDevice *sdev, *ddev;
    QPCIBar sbar, dbar;

    if (skip_in_kernel_mode("the sample driver has no MSI-X capability")) {
        return;
    }
    mig_start(&m, "--mem-size 8M --start", "--mem-size 8M", NULL, true);
    sdev = open_dev(m.src.qts, &sbus, &sbar);
    devstate_msix_setup(sdev);
    devstate_msix_assert_fires(m.src.qts, sdev, sbar);

    mig_go(&m);
    st = devstate_mig_wait(m.src.qts, NULL);
    g_assert_cmpstr(st, ==, "completed");
    qtest_qmp_assert_success(m.dst.qts, "{'execute': 'cont'}");
    assert_state(m.dst.srv, "RUNNING");
    /* Same BAR layout as the source: libqos assigns the same addresses */
    ddev = open_dev(m.dst.qts, &dbus, &dbar);
    g_assert_cmphex(qtest_readl(m.dst.qts, DEVSTATE_MSIX_ADDR), ==, 0);
    devstate_msix_assert_fires(m.dst.qts, ddev, dbar);
    g_assert_true(log_has(m.dst.srv, "MSI-X vector 0"));

    close_dev(ddev, dbus, dbar);
    qpci_iounmap(sdev, sdev->msix_table_bar);
    close_dev(sdev, sbus, sbar);
    mig_end(&m);
}

/*
 * A function-level reset the guest asks for, handled by the device
 * without QEMU's knowledge (as a kernel driver does), ends the logging
 * session: the migration must fail rather than lose the pages the device
 * dirtied since, and the VM runs on with its (reset) device.
 */
static void test_reset_behind_qemu(void)
{
    Mig m = { 0 };
    g_autofree char *st = NULL, *err = NULL;
    QPCIBus *bus;
    QPCIDevice *dev;
    QPCIBar bar0;
    QDict *rsp;

    if (skip_in_kernel_mode("the sample driver has no FLR capability")) {
        return;
    }
    mig_start(&m, live_opts(true), dst_mem(), NULL, true);
    dev = open_dev(m.src.qts, &bus, &bar0);
    qtest_qmp_assert_success(m.src.qts,
        "{'execute': 'migrate-set-parameters', 'arguments': "
        "{'max-bandwidth': %d}}", (int)(32 * MiB));
    mig_go(&m);
    wait_log(m.src.srv, "data set opened");
    /* AF capability: Initiate FLR in its control register */
    qpci_config_writeb(dev, DEVSTATE_CAP_AF + 4, 1);
    wait_log(m.src.srv, "(reset)");
    qtest_qmp_assert_success(m.src.qts,
        "{'execute': 'migrate-set-parameters', 'arguments': "
        "{'max-bandwidth': %" PRIu64 "}}", (uint64_t)10 * GiB);
    qtest_set_expected_status(m.dst.qts, EXIT_FAILURE);
    st = devstate_mig_wait(m.src.qts, &err);
    g_assert_cmpstr(st, ==, "failed");
    g_test_message("error-desc: %s", err);
    g_assert_nonnull(strstr(err, "logging session ended"));
    rsp = qtest_qmp_assert_success_ref(m.src.qts,
                                       "{'execute': 'query-status'}");
    g_assert_cmpstr(qdict_get_try_str(rsp, "status"), ==, "running");
    qobject_unref(rsp);
    assert_state(m.src.srv, "RUNNING");
    close_dev(dev, bus, bar0);
    mig_end(&m);
}

static void do_fault(const void *opaque)
{
    const FaultCase *fc = opaque;
    Mig m = { 0 };
    g_autofree char *sopts = g_strdup_printf("%s %s", live_opts(true),
                                             fc->src_fault ?: "");
    g_autofree char *dopts = g_strdup_printf("%s %s", dst_mem(),
                                             fc->dst_fault ?: "");
    g_autofree char *st = NULL, *err = NULL;

    if (fc->src_fault && g_str_has_prefix(fc->src_fault, "--misbehave") &&
        skip_in_kernel_mode("the sample driver has no misbehaving modes")) {
        return;
    }
    mig_start(&m, sopts, dopts, NULL, true);
    qtest_set_expected_status(m.dst.qts, EXIT_FAILURE);
    mig_go(&m);
    st = devstate_mig_wait(m.src.qts, &err);
    g_assert_cmpstr(st, ==, "failed");
    if (fc->expect) {
        g_test_message("error-desc: %s", err);
        g_assert_nonnull(strstr(err, fc->expect));
    }
    if (fc->dst_loaded) {
        /* The destination reset its device, with what it had loaded */
        wait_log(m.dst.srv, "RUNNING (reset)");
    }
    if (fc->expect) {
        /* The device is broken for good: no second migration */
        assert_source_running(&m);
    } else {
        assert_source_recovered(&m, dst_mem());
    }
    mig_end(&m);
}

static void test_fault(const void *opaque)
{
    do_fault(opaque);
}

/* The same faults with the stop-and-copy state on the multifd channels */
static void test_fault_multifd(const void *opaque)
{
    with_multifd(do_fault, opaque);
}

static const FaultCase faults[] = {
    /* Once on the source, so that the second migration can succeed */
    { "src-config-get", "--fail config-get:EIO:1", NULL },
    { "src-mem-get", "--fail mem-get:EIO:1", NULL },
    { "src-bitmap", "--fail bitmap:EIO:1", NULL },
    { "src-arc", "--fail arc:P2P|LOGGING->STOP|LOGGING:EIO:1", NULL },
    { "src-final-arc", "--fail arc:STOP|LOGGING->STOP:EIO:1", NULL },
    /* A broken device cannot keep the migration (and the stopped VM) going */
    { "src-big-set", "--misbehave big-set", NULL, false,
      "exceeds the session's first data set" },
    { "src-endless-dirty", "--misbehave endless-dirty", NULL, false,
      "still reports" },
    { "dst-config-set", NULL, "--fail config-set:EINVAL", true },
    { "dst-mem-set", NULL, "--fail mem-set:EIO", true },
    { "dst-arc", NULL, "--fail arc:RUNNING->STOP:EIO" },
    { "dst-smaller-memory", NULL, "--mem-size 8M", true },
};

/* ---------------------------------------------------------------------- */
/* Save to a file, restore from it; corrupt it on the way */

#define TAG_END         0xffffffffef100001ULL
#define TAG_HEADER      0xffffffffef100011ULL
#define TAG_MEM_SET     0xffffffffef100012ULL
#define TAG_MEM_CHUNK   0xffffffffef100013ULL
#define TAG_DEV_CONFIG  0xffffffffef100014ULL
#define TAG_PCI_CONFIG  0xffffffffef100015ULL

/* Save the VM with its device to @path; returns the source digest. */
static char *save_to_file(const char *path, const char *dev_opts)
{
    DevstateServer *srv = devstate_server_start(dev_opts);
    QTestState *qts = start_vm(srv, NULL);
    g_autofree char *uri = g_strdup_printf("file:%s", path);
    g_autofree char *st = NULL;
    char *digest;

    qtest_qmp_assert_success(qts,
        "{'execute': 'migrate', 'arguments': {'uri': %s}}", uri);
    st = devstate_mig_wait(qts, NULL);
    g_assert_cmpstr(st, ==, "completed");
    digest = devstate_server_digest(srv);
    qtest_quit(qts);
    devstate_server_stop(srv);
    return digest;
}

/*
 * Restore from @path into a fresh VM and device; returns the incoming
 * migration's status, with its error in *@err and the device's digest
 * in *@digest.  The destination does not exit on error, so that the test
 * can check it is alive and its device works.
 */
/*
 * Start a VM (paused, not exiting on error) with @srv's device that
 * loads @path, and wait until the load completed or failed.
 */
static QTestState *incoming_from_file(DevstateServer *srv, const char *path)
{
    QTestState *qts = start_vm(srv, "-incoming defer -S");
    g_autofree char *uri = g_strdup_printf("file:%s", path);
    int i;

    qtest_qmp_assert_success(qts,
        "{'execute': 'migrate-incoming', 'arguments': "
        "{'uri': %s, 'exit-on-error': false}}", uri);
    for (i = 0; i < 1000; i++) {
        g_autofree char *st = devstate_mig_status(qts, NULL);

        if (!strcmp(st, "completed") || !strcmp(st, "failed")) {
            break;
        }
        g_usleep(10 * 1000);
    }
    return qts;
}

static char *load_from_file(const char *path, const char *dev_opts,
                            char **err, char **digest)
{
    DevstateServer *srv = devstate_server_start(dev_opts);
    QTestState *qts = incoming_from_file(srv, path);
    char *st = devstate_mig_status(qts, err);

    *digest = devstate_server_digest(srv);
    if (strcmp(st, "completed")) {
        /* The failed load handed the device back, alive and RUNNING */
        assert_state(srv, "RUNNING");
    }
    qtest_quit(qts);
    devstate_server_stop(srv);
    return st;
}

static void test_file_restore(void)
{
    g_autofree char *dir = g_dir_make_tmp("vfio-devstate-file-XXXXXX", NULL);
    g_autofree char *path = g_strdup_printf("%s/vm.state", dir);
    g_autofree char *sdig = save_to_file(path, "--mem-size 32M --start");
    g_autofree char *st = NULL, *err = NULL, *ddig = NULL;

    st = load_from_file(path, "--mem-size 32M", &err, &ddig);
    g_assert_cmpstr(st, ==, "completed");
    g_assert_cmpstr(sdig, ==, ddig);
    unlink(path);
    rmdir(dir);
}

/* Offset of the first big-endian @tag in the stream, or SIZE_MAX */
static size_t find_tag_opt(const uint8_t *buf, size_t len, uint64_t tag)
{
    uint64_t be = cpu_to_be64(tag);
    const uint8_t *p = memmem(buf, len, &be, sizeof(be));

    return p ? p - buf : SIZE_MAX;
}

static size_t find_tag(const uint8_t *buf, size_t len, uint64_t tag)
{
    size_t off = find_tag_opt(buf, len, tag);

    g_assert_cmpuint(off, !=, SIZE_MAX);
    return off;
}

/* Bytes of the DEV_CONFIG record at @cfg (after its tag), tag included */
static size_t config_record_len(const uint8_t *buf, size_t cfg)
{
    uint64_t size;

    memcpy(&size, buf + cfg + 4, sizeof(size));
    return 8 + 4 + 8 + be64_to_cpu(size);
}

static void put_be64(uint8_t *p, uint64_t v)
{
    v = cpu_to_be64(v);
    memcpy(p, &v, sizeof(v));
}

static void put_be32(uint8_t *p, uint32_t v)
{
    v = cpu_to_be32(v);
    memcpy(p, &v, sizeof(v));
}

static uint64_t get_be64(const uint8_t *p)
{
    uint64_t v;

    memcpy(&v, p, sizeof(v));
    return be64_to_cpu(v);
}

/* Cut [@from, @to) out of the stream. */
static void cut(uint8_t *buf, gsize *len, size_t from, size_t to)
{
    g_assert_cmpuint(from, <=, to);
    g_assert_cmpuint(to, <=, *len);
    memmove(buf + from, buf + to, *len - to);
    *len -= to - from;
}

/* Insert @n bytes of @what at @at; @buf has room for them. */
static void insert(uint8_t *buf, gsize *len, size_t at, const void *what,
                   size_t n)
{
    memmove(buf + at + n, buf + at, *len - at);
    memcpy(buf + at, what, n);
    *len += n;
}

typedef enum {
    CORRUPT_TRUNCATE,
    CORRUPT_TAG,
    CORRUPT_CHUNK_LEN,
    CORRUPT_CHUNK_POS,
    CORRUPT_SET_SIZE,
    CORRUPT_SET_SEQ,
    CORRUPT_DROP_SET,
    CORRUPT_SET_AFTER_CONFIG,
    CORRUPT_HEADER_CAPS,
    CORRUPT_HEADER_VERSION_LEN,
    CORRUPT_CONFIG_SIZE,
    CORRUPT_CONFIG_BYTES,
    CORRUPT_CONFIG_TWICE,
    CORRUPT_DROP_CONFIG,
    CORRUPT_SET_COUNT,
} Corruption;

typedef struct CorruptCase {
    const char *path;
    Corruption what;
    const char *expect;         /* in the destination's error */
} CorruptCase;

/*
 * Each rejection names the device (qdev id and PCI address) and says why,
 * in the incoming migration's error-desc.
 */
static const CorruptCase corrupt_cases[] = {
    /* A stream cut short is the channel's error, reported as such */
    { "truncated", CORRUPT_TRUNCATE, "Input/output error" },
    { "tag", CORRUPT_TAG, "unknown device-state tag" },
    { "chunk-length", CORRUPT_CHUNK_LEN, "chunk size" },
    { "chunk-offset", CORRUPT_CHUNK_POS, "chunk at offset 4096, expected 0" },
    { "set-size", CORRUPT_SET_SIZE, "device_memory.size" },
    { "set-number", CORRUPT_SET_SEQ, "data set number 7 in the stream, "
      "expected 1" },
    { "set-dropped", CORRUPT_DROP_SET, "data set" },
    { "set-after-config", CORRUPT_SET_AFTER_CONFIG,
      "data set after the device config" },
    { "header-caps", CORRUPT_HEADER_CAPS, "caps" },
    { "header-version-length", CORRUPT_HEADER_VERSION_LEN,
      "migration_version length" },
    { "config-size", CORRUPT_CONFIG_SIZE, "device config size" },
    { "config-bytes", CORRUPT_CONFIG_BYTES, "device_config.action" },
    { "config-twice", CORRUPT_CONFIG_TWICE, "second device config" },
    { "config-dropped", CORRUPT_DROP_CONFIG,
      "PCI config before the device config" },
    { "set-count", CORRUPT_SET_COUNT, "data sets," },
};

static void test_corrupt(const void *opaque)
{
    const CorruptCase *cc = opaque;
    g_autofree char *dir = g_dir_make_tmp("vfio-devstate-file-XXXXXX", NULL);
    g_autofree char *path = g_strdup_printf("%s/vm.state", dir);
    g_autofree char *sdig = save_to_file(path, "--mem-size 8M --start");
    g_autofree char *st = NULL, *err = NULL, *ddig = NULL;
    g_autofree uint8_t *buf = NULL;
    uint8_t rec[20];
    gsize len;
    size_t hdr, set, chunk, cfg, next;

    g_assert_true(g_file_get_contents(path, (char **)&buf, &len, NULL));
    buf = g_realloc(buf, len + 64);
    hdr = find_tag(buf, len, TAG_HEADER) + 8;
    set = find_tag(buf, len, TAG_MEM_SET) + 8;
    chunk = find_tag(buf, len, TAG_MEM_CHUNK) + 8;
    cfg = find_tag(buf + chunk, len - chunk, TAG_DEV_CONFIG) + chunk + 8;

    switch (cc->what) {
    case CORRUPT_TRUNCATE:
        len = chunk + 16 + 1000;
        break;
    case CORRUPT_TAG:
        put_be64(buf + chunk - 8, 0xffffffffef1000ffULL);
        break;
    case CORRUPT_CHUNK_LEN:
        put_be64(buf + chunk + 8, 0xffffffff00000000ULL);
        break;
    case CORRUPT_CHUNK_POS:
        put_be64(buf + chunk, 4096);
        break;
    case CORRUPT_SET_SIZE:
        put_be64(buf + set + 4, 1ULL << 62); /* after the be32 number */
        break;
    case CORRUPT_SET_SEQ:
        put_be32(buf + set, 7);
        break;
    case CORRUPT_DROP_SET:
        /* The first data set, up to the next set or the section's end */
        next = MIN(find_tag(buf + set, len - set, TAG_END),
                   find_tag_opt(buf + set, len - set, TAG_MEM_SET));
        cut(buf, &len, set - 8, set + next);
        break;
    case CORRUPT_SET_AFTER_CONFIG:
        put_be64(rec, TAG_MEM_SET);
        put_be32(rec + 8, get_be64(buf + cfg) >> 32);
        put_be64(rec + 12, 4096);
        insert(buf, &len, cfg - 8 + config_record_len(buf, cfg), rec,
               sizeof(rec));
        break;
    case CORRUPT_HEADER_CAPS:
        buf[hdr + 7] ^= 0x3;                /* be32 caps after be32 version */
        break;
    case CORRUPT_HEADER_VERSION_LEN:
        memset(buf + hdr + 40, 0xff, 4);
        break;
    case CORRUPT_CONFIG_SIZE:
        put_be64(buf + cfg + 4, 1ULL << 40); /* after the be32 set count */
        break;
    case CORRUPT_CONFIG_BYTES:
        buf[cfg + 12 + 20] ^= 0x5a;         /* the device's checksum fails */
        break;
    case CORRUPT_CONFIG_TWICE:
    case CORRUPT_DROP_CONFIG: {
        /* tag, be32 set count, be64 size, the blob */
        size_t rlen = config_record_len(buf, cfg);
        g_autofree uint8_t *copy = g_memdup2(buf + cfg - 8, rlen);

        if (cc->what == CORRUPT_DROP_CONFIG) {
            cut(buf, &len, cfg - 8, cfg - 8 + rlen);
        } else {
            buf = g_realloc(buf, len + rlen);
            insert(buf, &len, cfg - 8 + rlen, copy, rlen);
        }
        break;
    }
    case CORRUPT_SET_COUNT:
        put_be32(buf + cfg, (get_be64(buf + cfg) >> 32) + 1);
        break;
    }
    g_assert_true(g_file_set_contents(path, (char *)buf, len, NULL));

    st = load_from_file(path, "--mem-size 8M", &err, &ddig);
    g_assert_cmpstr(st, ==, "failed");
    g_assert_nonnull(err);
    g_test_message("error-desc: %s", err);
    if (cc->what != CORRUPT_TRUNCATE) {
        g_assert_nonnull(strstr(err, "dev0 (0000:00:"));
    }
    g_assert_nonnull(strstr(err, cc->expect));
    /* The device loaded nothing it could not validate */
    g_assert_cmpstr(sdig, !=, ddig);
    unlink(path);
    rmdir(dir);
}

/*
 * Only the device's answer to the source's migration_version decides
 * compatibility: a stream from a device with other PCI IDs (a newer
 * generation, x-pci-*-id overrides) loads.
 */
static void test_other_ids(void)
{
    g_autofree char *dir = g_dir_make_tmp("vfio-devstate-file-XXXXXX", NULL);
    g_autofree char *path = g_strdup_printf("%s/vm.state", dir);
    g_autofree char *sdig = save_to_file(path, "--mem-size 8M --start");
    g_autofree char *st = NULL, *err = NULL, *ddig = NULL;
    g_autofree uint8_t *buf = NULL;
    gsize len;
    size_t hdr;

    g_assert_true(g_file_get_contents(path, (char **)&buf, &len, NULL));
    hdr = find_tag(buf, len, TAG_HEADER) + 8;
    buf[hdr + 32] ^= 0xff;                  /* first be16 of the IDs */
    buf[hdr + 36] ^= 0x0f;                  /* the subsystem vendor ID */
    g_assert_true(g_file_set_contents(path, (char *)buf, len, NULL));
    st = load_from_file(path, "--mem-size 8M", &err, &ddig);
    g_assert_cmpstr(st, ==, "completed");
    g_assert_cmpstr(sdig, ==, ddig);
    unlink(path);
    rmdir(dir);
}

/*
 * A stream without this device's non-iterable section (its PCI config)
 * "completes" as far as the migration core can tell, but the VM must not
 * run with a device whose state did not all arrive.
 */
static void test_missing_section(void)
{
    g_autofree char *dir = g_dir_make_tmp("vfio-devstate-file-XXXXXX", NULL);
    g_autofree char *path = g_strdup_printf("%s/vm.state", dir);
    g_autofree char *sdig = save_to_file(path, "--mem-size 8M --start");
    g_autofree uint8_t *buf = NULL;
    DevstateServer *srv;
    QTestState *qts;
    gsize len;
    size_t pci, start, end, l;
    QDict *rsp;
    int i;

    g_assert_true(g_file_get_contents(path, (char **)&buf, &len, NULL));
    pci = find_tag(buf, len, TAG_PCI_CONFIG);
    /*
     * The section starts with QEMU_VM_SECTION_FULL, a be32 section id,
     * the id string ("<path>/vfio") and be32 instance and version ids;
     * it ends with our END tag and the section footer (0x7e, section id).
     */
    g_assert_cmpmem(buf + pci - 8 - 5, 5, "/vfio", 5);
    for (l = 5, start = 0; l < 256 && l + 1 + 13 <= pci; l++) {
        size_t p = pci - 8 - l - 1;

        if (buf[p] == l && buf[p - 5] == 0x04) {
            start = p - 5;
            break;
        }
    }
    g_assert_cmpuint(start, >, 0);
    end = pci + find_tag(buf + pci, len - pci, TAG_END) + 8 + 5;
    g_assert_cmphex(buf[end - 5], ==, 0x7e);
    cut(buf, &len, start, end);
    g_assert_true(g_file_set_contents(path, (char *)buf, len, NULL));

    srv = devstate_server_start("--mem-size 8M");
    qts = incoming_from_file(srv, path);
    /* The VM is refused its start, and stops with an internal error */
    qtest_qmp_assert_success(qts, "{'execute': 'cont'}");
    for (i = 0; i < 500; i++) {
        g_autofree char *run = NULL;

        rsp = qtest_qmp_assert_success_ref(qts, "{'execute': 'query-status'}");
        run = g_strdup(qdict_get_try_str(rsp, "status"));
        qobject_unref(rsp);
        if (!strcmp(run, "internal-error")) {
            break;
        }
        g_usleep(10 * 1000);
    }
    g_assert_cmpint(i, <, 500);
    qtest_quit(qts);
    devstate_server_stop(srv);
    unlink(path);
    rmdir(dir);
}

/* Two reference devices in one VM arrive each with its own state */
static void do_two_devices(const void *unused)
{
    DevstateServer *s1 = devstate_server_start("--mem-size 16M --start");
    DevstateServer *s2 = devstate_server_start("--mem-size 8M --start "
                                               "--mutate-rate 3000");
    DevstateServer *d1 = devstate_server_start("--mem-size 16M");
    DevstateServer *d2 = devstate_server_start("--mem-size 8M");
    g_autofree char *dir = g_dir_make_tmp("vfio-devstate-mig-XXXXXX", NULL);
    g_autofree char *uri = g_strdup_printf("unix:%s/mig.sock", dir);
    g_autofree char *sock = g_strdup_printf("%s/mig.sock", dir);
    g_autofree char *st = NULL;
    g_autofree char *sa = devstate_server_device(s1, "a");
    g_autofree char *sb = devstate_server_device(s2, "b");
    g_autofree char *da = devstate_server_device(d1, "a");
    g_autofree char *db = devstate_server_device(d2, "b");
    const char *fmt = "%s -device %s -device %s %s %s";
    QTestState *src = qtest_initf(fmt, machine_opts(), sa, sb, vm_extra, "");
    QTestState *dst = qtest_initf(fmt, machine_opts(), da, db, vm_extra,
                                  "-incoming defer -S");
    g_autofree char *a1 = NULL, *a2 = NULL, *b1 = NULL, *b2 = NULL;

    set_caps(src, true);
    set_caps(dst, true);
    qtest_qmp_assert_success(dst,
        "{'execute': 'migrate-incoming', 'arguments': {'uri': %s}}", uri);
    qtest_qmp_assert_success(src,
        "{'execute': 'migrate', 'arguments': {'uri': %s}}", uri);
    st = devstate_mig_wait(src, NULL);
    g_assert_cmpstr(st, ==, "completed");
    a1 = devstate_server_digest(s1);
    a2 = devstate_server_digest(d1);
    b1 = devstate_server_digest(s2);
    b2 = devstate_server_digest(d2);
    g_assert_cmpstr(a1, ==, a2);
    g_assert_cmpstr(b1, ==, b2);
    g_assert_cmpstr(a1, !=, b1);
    qtest_quit(src);
    qtest_quit(dst);
    devstate_server_stop(s1);
    devstate_server_stop(s2);
    devstate_server_stop(d1);
    devstate_server_stop(d2);
    unlink(sock);
    rmdir(dir);
}

static void test_two_devices(void)
{
    do_two_devices(NULL);
}

/* The same, with a save thread and a load thread for each device */
static void test_two_devices_multifd(void)
{
    with_multifd(do_two_devices, NULL);
}

/*
 * RAM over multifd, the devices' state on the main channel: the core
 * still starts a save thread for each device, which has nothing to do.
 */
static void test_two_devices_multifd_off(void)
{
    vm_extra = kernel_mode() ?
        "-global migration.x-multifd=on "
        "-global vfio-pci.x-migration-multifd-transfer=off" :
        "-global migration.x-multifd=on "
        "-global vfio-user-pci.x-migration-multifd-transfer=off";
    do_two_devices(NULL);
    vm_extra = "";
}

/*
 * Without a P2P state, a second device could be stopped while the first
 * still writes to it: as for v2 devices, such a VM does not migrate.
 */
static void test_two_devices_no_p2p(void)
{
    DevstateServer *s1 = devstate_server_start("--mem-size 8M --no-p2p");
    DevstateServer *s2 = devstate_server_start("--mem-size 8M --no-p2p");
    g_autofree char *dir = g_dir_make_tmp("vfio-devstate-mig-XXXXXX", NULL);
    g_autofree char *uri = g_strdup_printf("unix:%s/mig.sock", dir);
    g_autofree char *sa = devstate_server_device(s1, "a");
    g_autofree char *sb = devstate_server_device(s2, "b");
    QTestState *src = qtest_initf("%s -device %s -device %s", machine_opts(),
                                  sa, sb);
    QDict *rsp;
    const char *desc;

    rsp = qtest_qmp(src, "{'execute': 'migrate', 'arguments': {'uri': %s}}",
                    uri);
    g_assert_true(qdict_haskey(rsp, "error"));
    desc = qdict_get_str(qdict_get_qdict(rsp, "error"), "desc");
    g_test_message("migrate: %s", desc);
    g_assert_nonnull(strstr(desc, "P2P"));
    qobject_unref(rsp);
    assert_state(s1, "RUNNING");
    qtest_quit(src);
    devstate_server_stop(s1);
    devstate_server_stop(s2);
    rmdir(dir);
}

/* Start a slow migration and wait until device memory is moving. */
static void mig_go_slow(Mig *m, bool ack)
{
    mig_start(m, live_opts(true), dst_mem(), NULL, ack);
    qtest_qmp_assert_success(m->src.qts,
        "{'execute': 'migrate-set-parameters', 'arguments': "
        "{'max-bandwidth': %d}}", (int)(16 * MiB));
    mig_go(m);
    wait_log(m->src.srv, "data set opened");
}

/*
 * The migration properties of vfio-pci (kernel devices only: vfio-user-pci
 * has neither).  With migration-events, the VFIO_MIGRATION events report
 * the device's state in the terms of the v2 FSM, as for a v2 device.
 */
static void test_migration_events(void)
{
    Mig m = { 0 };
    g_autofree char *st = NULL, *err = NULL;
    GString *states = g_string_new("");
    QDict *ev;

    if (!kernel_mode()) {
        g_test_skip("vfio-user-pci has no migration-events property");
        g_string_free(states, true);
        return;
    }
    mig_start_full(&m, live_opts(true),
                   "-global vfio-pci.migration-events=on", dst_mem(), NULL,
                   true);
    mig_go(&m);
    st = devstate_mig_wait(m.src.qts, &err);
    g_assert_cmpstr(st, ==, "completed");
    while ((ev = qtest_qmp_event_ref(m.src.qts, "VFIO_MIGRATION"))) {
        QDict *data = qdict_get_qdict(ev, "data");

        g_assert_cmpstr(qdict_get_str(data, "device-id"), ==, "dev0");
        g_string_append_printf(states, "%s%s", states->len ? "," : "",
                               qdict_get_str(data, "device-state"));
        qobject_unref(ev);
    }
    g_test_message("VFIO_MIGRATION states: %s", states->str);
    g_assert_nonnull(strstr(states->str, "pre-copy"));
    g_assert_nonnull(strstr(states->str, "stop-copy"));
    g_assert_true(g_str_has_suffix(states->str, ",stop"));
    g_string_free(states, true);
    mig_end(&m);
}

/*
 * x-migration-multifd-transfer=on without the multifd capability: the
 * migration fails at once, naming the device, and the source runs on with
 * its device working.
 */
static void test_multifd_unsupported(void)
{
    Mig m = { 0 };
    g_autoptr(QDict) resp = NULL;
    const char *desc;

    mig_start_full(&m, live_opts(true), kernel_mode() ?
                   "-global vfio-pci.x-migration-multifd-transfer=on" :
                   "-global vfio-user-pci.x-migration-multifd-transfer=on",
                   dst_mem(), NULL, true);
    resp = qtest_qmp(m.src.qts, "{'execute': 'migrate', 'arguments': "
                     "{'uri': %s}}", m.uri);
    g_assert_true(qdict_haskey(resp, "error"));
    desc = qdict_get_str(qdict_get_qdict(resp, "error"), "desc");
    g_test_message("error: %s", desc);
    g_assert_nonnull(strstr(desc, "x-migration-multifd-transfer=on, but "
                            "this migration cannot move device state over "
                            "multifd channels"));
    g_assert_nonnull(strstr(desc, "dev0"));
    assert_state(m.src.srv, "RUNNING");
    assert_device_works(m.src.srv);
    mig_end(&m);
}

static void test_kill_dst_qemu(void)
{
    Mig m = { 0 };
    g_autofree char *st = NULL;

    mig_go_slow(&m, true);
    qtest_kill_qemu(m.dst.qts);
    st = devstate_mig_wait(m.src.qts, NULL);
    g_assert_cmpstr(st, ==, "failed");
    assert_source_recovered(&m, dst_mem());
    mig_end(&m);
}

static void test_kill_dst_server(void)
{
    Mig m = { 0 };
    g_autofree char *st = NULL;

    if (skip_in_kernel_mode("a kernel device has no server process to "
                            "kill")) {
        return;
    }

    mig_go_slow(&m, true);
    wait_log(m.dst.srv, "device_memory.size");
    kill(m.dst.srv->pid, SIGKILL);
    qtest_set_expected_status(m.dst.qts, EXIT_FAILURE);
    st = devstate_mig_wait(m.src.qts, NULL);
    g_assert_cmpstr(st, ==, "failed");
    assert_source_recovered(&m, dst_mem());
    mig_end(&m);
}

/*
 * The destination's server hangs (SIGSTOP) while QEMU writes it chunks
 * of device memory through the data region (no mmap: a region write of
 * up to 1 MiB, larger than the socket's buffer, so the socket takes the
 * message in parts): the request times out (x-msg-timeout), a message
 * the socket took only in part shuts the connection down rather than
 * leave half of it on the wire, the load fails and the source runs on.
 */
static void test_stall_dst_server(void)
{
    Mig m = { 0 };
    g_autofree char *st = NULL;
    g_autofree char *dst_opts = g_strdup_printf("%s --no-mmap", dst_mem());

    if (skip_in_kernel_mode("a kernel device has no server process to "
                            "stop")) {
        return;
    }
    mig_start(&m, live_opts(true), dst_opts,
              "-incoming defer -S -global vfio-user-pci.x-msg-timeout=500",
              true);
    qtest_qmp_assert_success(m.src.qts,
        "{'execute': 'migrate-set-parameters', 'arguments': "
        "{'max-bandwidth': %d}}", (int)(16 * MiB));
    mig_go(&m);
    wait_log(m.dst.srv, "device_memory.size");
    kill(m.dst.srv->pid, SIGSTOP);
    qtest_set_expected_status(m.dst.qts, EXIT_FAILURE);
    st = devstate_mig_wait(m.src.qts, NULL);
    kill(m.dst.srv->pid, SIGCONT);
    g_assert_cmpstr(st, ==, "failed");
    assert_source_recovered(&m, dst_mem());
    mig_end(&m);
}

/*
 * The source's device is gone: the migration fails with an error and the
 * VM runs on without it; QEMU neither hangs nor crashes, and a second
 * migration fails cleanly too.
 */
static void test_kill_src_server(void)
{
    Mig m = { 0 };
    g_autofree char *st = NULL, *err = NULL, *st2 = NULL, *err2 = NULL;
    QDict *rsp;

    if (skip_in_kernel_mode("a kernel device has no server process to "
                            "kill")) {
        return;
    }
    mig_go_slow(&m, true);
    kill(m.src.srv->pid, SIGKILL);
    st = devstate_mig_wait(m.src.qts, &err);
    g_assert_cmpstr(st, ==, "failed");
    g_assert_nonnull(err);
    rsp = qtest_qmp_assert_success_ref(m.src.qts,
                                       "{'execute': 'query-status'}");
    g_assert_cmpstr(qdict_get_try_str(rsp, "status"), ==, "running");
    qobject_unref(rsp);

    migrate_to(m.src.qts, m.uri);
    st2 = devstate_mig_wait(m.src.qts, &err2);
    g_assert_cmpstr(st2, ==, "failed");
    qtest_set_expected_status(m.dst.qts, EXIT_FAILURE);
    mig_end(&m);
}

/* Add a case per entry of @cases, whose first member is its name */
static void add_cases(const char *group, const void *cases, size_t n,
                      size_t size, GTestDataFunc fn)
{
    size_t i;

    for (i = 0; i < n; i++) {
        const void *c = (const char *)cases + i * size;
        g_autofree char *path = g_strdup_printf("/vfio-devstate/migration/"
                                                "%s/%s", group,
                                                *(const char *const *)c);

        qtest_add_data_func(path, c, fn);
    }
}

#define ADD_CASES(group, cases, fn) \
    add_cases(group, cases, ARRAY_SIZE(cases), sizeof(cases[0]), fn)

int main(int argc, char **argv)
{
    g_test_init(&argc, &argv, NULL);

    if (kernel_mode()) {
        if (!qtest_has_device("vfio-pci")) {
            g_test_skip("vfio-pci is not available");
            return g_test_run();
        }
    } else if (!devstate_server_binary()) {
        g_test_skip("DEVSTATE_SERVER_BINARY is not set");
        return g_test_run();
    } else if (!qtest_has_device("vfio-user-pci")) {
        g_test_skip("vfio-user-pci is not available");
        return g_test_run();
    }
    qtest_add_func("/vfio-devstate/migration/live/mmap", test_live_mmap);
    qtest_add_func("/vfio-devstate/migration/live/nommap", test_live_nommap);
    qtest_add_func("/vfio-devstate/migration/live/small-xfer",
                   test_live_small_xfer);
    qtest_add_func("/vfio-devstate/migration/live/large-xfer",
                   test_live_large_xfer);
    qtest_add_func("/vfio-devstate/migration/paused-source",
                   test_paused_source);
    qtest_add_func("/vfio-devstate/migration/cancel/precopy",
                   test_cancel_precopy);
    qtest_add_func("/vfio-devstate/migration/cancel/stop-copy",
                   test_cancel_stop_copy);
    qtest_add_func("/vfio-devstate/migration/incompatible", test_incompatible);
    qtest_add_func("/vfio-devstate/migration/kill/dst-qemu",
                   test_kill_dst_qemu);
    qtest_add_func("/vfio-devstate/migration/kill/dst-server",
                   test_kill_dst_server);
    qtest_add_func("/vfio-devstate/migration/kill/src-server",
                   test_kill_src_server);
    qtest_add_func("/vfio-devstate/migration/stall/dst-server",
                   test_stall_dst_server);
    ADD_CASES("fault", faults, test_fault);
    qtest_add_func("/vfio-devstate/migration/two-devices", test_two_devices);
    qtest_add_func("/vfio-devstate/migration/migration-events",
                   test_migration_events);
    qtest_add_func("/vfio-devstate/migration/multifd/unsupported",
                   test_multifd_unsupported);
    qtest_add_func("/vfio-devstate/migration/multifd/live/mmap",
                   test_live_multifd);
    qtest_add_func("/vfio-devstate/migration/multifd/live/nommap",
                   test_live_multifd_nommap);
    qtest_add_func("/vfio-devstate/migration/multifd/live/"
                   "config-after-iter", test_live_multifd_config_after_iter);
    qtest_add_func("/vfio-devstate/migration/multifd/two-devices",
                   test_two_devices_multifd);
    qtest_add_func("/vfio-devstate/migration/multifd/two-devices-off",
                   test_two_devices_multifd_off);
    ADD_CASES("multifd/fault", faults, test_fault_multifd);
    qtest_add_func("/vfio-devstate/migration/msix", test_msix);
    qtest_add_func("/vfio-devstate/migration/reset-behind-qemu",
                   test_reset_behind_qemu);
    qtest_add_func("/vfio-devstate/migration/two-devices-no-p2p",
                   test_two_devices_no_p2p);
    qtest_add_func("/vfio-devstate/migration/file", test_file_restore);
    qtest_add_func("/vfio-devstate/migration/file/other-pci-ids",
                   test_other_ids);
    qtest_add_func("/vfio-devstate/migration/file/missing-section",
                   test_missing_section);
    ADD_CASES("corrupt", corrupt_cases, test_corrupt);
    return g_test_run();
}
