/*
 * qtest: QEMU's vfio-user-pci client with the vfio-user-devstate
 * reference device
 *
 * Copyright (c) 2025 The QEMU project contributors
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 */

#include "qemu/osdep.h"
#include "libqtest.h"
#include "libqos/pci-pc.h"
#include "hw/pci/pci_regs.h"
#include "qobject/qdict.h"
#include "qobject/qlist.h"
#include "vfio-user-devstate-util.h"

#define DMA_GPA 0x1000000

static QTestState *start_qemu(DevstateServer *srv)
{
    return qtest_initf("-machine q35 -m 128M "
                       "-object memory-backend-memfd,id=mem,size=128M "
                       "-machine memory-backend=mem "
                       "-device '{\"driver\": \"vfio-user-pci\", "
                       "\"id\": \"devstate0\", \"socket\": "
                       "{\"type\": \"unix\", \"path\": \"%s\"}}'",
                       srv->sock);
}

/* The device in query-pci, with our vendor and device IDs */
static bool find_in_query_pci(QTestState *qts)
{
    g_autoptr(QDict) resp = qtest_qmp(qts, "{'execute': 'query-pci'}");
    QList *buses = qdict_get_qlist(resp, "return");
    QListEntry *b, *d;

    g_assert_nonnull(buses);
    QLIST_FOREACH_ENTRY(buses, b) {
        QDict *bus = qobject_to(QDict, qlist_entry_obj(b));

        QLIST_FOREACH_ENTRY(qdict_get_qlist(bus, "devices"), d) {
            QDict *dev = qobject_to(QDict, qlist_entry_obj(d));
            QDict *id = qdict_get_qdict(dev, "id");

            if (qdict_get_int(id, "vendor") == DEVSTATE_PCI_VENDOR_ID &&
                qdict_get_int(id, "device") == DEVSTATE_PCI_DEVICE_ID) {
                g_assert_cmpstr(qdict_get_try_str(dev, "qdev_id"), ==,
                                "devstate0");
                return true;
            }
        }
    }
    return false;
}

static void save_fn(QPCIDevice *dev, int devfn, void *data)
{
    *(QPCIDevice **)data = dev;
}

static void test_device(void)
{
    DevstateServer *srv = devstate_server_start("--mem-size 16M");
    QTestState *qts = start_qemu(srv);
    QPCIBus *bus = qpci_new_pc(qts, NULL);
    QPCIDevice *dev = NULL;
    g_autofree char *status = NULL;
    QPCIBar bar0;
    struct devstate_dma_stamp stamp;
    int i;

    g_assert_true(find_in_query_pci(qts));

    qpci_device_foreach(bus, DEVSTATE_PCI_VENDOR_ID, DEVSTATE_PCI_DEVICE_ID,
                        save_fn, &dev);
    g_assert_nonnull(dev);
    g_assert_cmphex(qpci_config_readw(dev, PCI_SUBSYSTEM_VENDOR_ID), ==,
                    DEVSTATE_PCI_SUBVENDOR_ID);
    qpci_device_enable(dev);
    bar0 = qpci_iomap(dev, 0, NULL);
    g_assert_cmphex(qpci_io_readl(dev, bar0, DEVSTATE_REG_ID), ==,
                    DEVSTATE_ID_MAGIC);
    g_assert_cmpint(qpci_io_readl(dev, bar0, DEVSTATE_REG_DEVMEM_MIB), ==, 16);
    qpci_io_writel(dev, bar0, DEVSTATE_REG_SCRATCH, 0xc0ffee);
    g_assert_cmphex(qpci_io_readl(dev, bar0, DEVSTATE_REG_SCRATCH), ==,
                    0xc0ffee);

    /* DMA into guest RAM through the memfd that QEMU mapped */
    qpci_io_writel(dev, bar0, DEVSTATE_REG_DMA_ADDR_LO, DMA_GPA);
    qpci_io_writel(dev, bar0, DEVSTATE_REG_DMA_ADDR_HI, 0);
    qpci_io_writel(dev, bar0, DEVSTATE_REG_DMA_PAGES, 4);
    qpci_io_writel(dev, bar0, DEVSTATE_REG_DMA_RATE, 10000);
    qpci_io_writel(dev, bar0, DEVSTATE_REG_CTRL, DEVSTATE_CTRL_DMA);
    for (i = 0; i < 500 &&
         qpci_io_readl(dev, bar0, DEVSTATE_REG_DMA_PASSES) < 2; i++) {
        g_usleep(10 * 1000);
    }
    qpci_io_writel(dev, bar0, DEVSTATE_REG_CTRL, 0);
    g_assert_cmpint(qpci_io_readl(dev, bar0, DEVSTATE_REG_DMA_ERRORS), ==, 0);
    qtest_memread(qts, DMA_GPA + 3 * 4096, &stamp, sizeof(stamp));
    g_assert_cmphex(stamp.magic, ==, DEVSTATE_DMA_MAGIC);
    g_assert_cmpint(stamp.page, ==, 3);

    status = devstate_server_cmd(srv, "status");
    g_assert_nonnull(strstr(status, "state=RUNNING "));
    g_assert_nonnull(strstr(status, "connected=1"));

    qpci_iounmap(dev, bar0);
    g_free(dev);
    qpci_free_pc(bus);
    qtest_quit(qts);
    /* QEMU gone: the server exits by itself */
    g_assert_cmpint(devstate_server_wait(srv, 5000), ==, 0);
    devstate_server_stop(srv);
}

/* The description of the error of a QMP command that must fail */
static char *qmp_error_desc(QDict *resp)
{
    QDict *err = qdict_get_qdict(resp, "error");

    g_assert_nonnull(err);
    return g_strdup(qdict_get_str(err, "desc"));
}

/*
 * A device without the device-state regions (and vfio-user has no v2
 * interface): with enable-migration=auto it realizes, and its migration
 * blocker says why.
 */
static void test_no_interface_blocker(void)
{
    DevstateServer *srv = devstate_server_start("--no-devstate");
    QTestState *qts = start_qemu(srv);
    g_autoptr(QDict) resp = NULL;
    g_autofree char *desc = NULL;

    g_assert_true(find_in_query_pci(qts));
    resp = qtest_qmp(qts, "{'execute': 'migrate', 'arguments': "
                     "{'uri': 'unix:/dev/null/none'}}");
    desc = qmp_error_desc(resp);
    g_assert_nonnull(strstr(desc, "offers no migration interface"));

    qtest_quit(qts);
    g_assert_cmpint(devstate_server_wait(srv, 5000), ==, 0);
    devstate_server_stop(srv);
}

/*
 * With enable-migration=on, such a device fails to realize.  Realize had
 * set up its interrupts by then (INTx handler, mmap timer, irqchip
 * notifier); the error path must take them down, or they fire on the
 * freed device.  QEMU runs on, with its clock running, and a good device
 * plugs in afterwards.
 */
static void test_no_interface_realize_error(void)
{
    DevstateServer *bad = devstate_server_start("--no-devstate");
    DevstateServer *good = devstate_server_start("--mem-size 16M");
    QTestState *qts;
    g_autoptr(QDict) resp = NULL;
    g_autoptr(QDict) resp2 = NULL;
    g_autoptr(QDict) resp3 = NULL;
    g_autofree char *desc = NULL;

    qts = qtest_init("-machine q35 -m 128M "
                     "-object memory-backend-memfd,id=mem,size=128M "
                     "-machine memory-backend=mem "
                     "-device pcie-root-port,id=rp0,chassis=1 "
                     "-device pcie-root-port,id=rp1,chassis=2");
    resp = qtest_qmp(qts, "{'execute': 'device_add', 'arguments': "
                     "{'driver': 'vfio-user-pci', 'id': 'bad0', "
                     "'bus': 'rp0', 'enable-migration': 'on', "
                     "'socket': {'type': 'unix', 'path': %s}}}", bad->sock);
    desc = qmp_error_desc(resp);
    g_assert_nonnull(strstr(desc, "offers no migration interface"));
    /* The failed device's connection is gone: its server exits. */
    g_assert_cmpint(devstate_server_wait(bad, 5000), ==, 0);

    qtest_clock_step(qts, 2000000000LL);
    resp2 = qtest_qmp(qts, "{'execute': 'device_add', 'arguments': "
                      "{'driver': 'vfio-user-pci', 'id': 'devstate0', "
                      "'bus': 'rp1', "
                      "'socket': {'type': 'unix', 'path': %s}}}",
                      good->sock);
    g_assert_false(qdict_haskey(resp2, "error"));
    qtest_clock_step(qts, 2000000000LL);
    g_assert_true(qtest_qom_get_bool(qts, "/machine/peripheral/devstate0",
                                     "realized"));
    resp3 = qtest_qmp(qts, "{'execute': 'qom-get', 'arguments': "
                      "{'path': '/machine/peripheral/bad0', "
                      "'property': 'realized'}}");
    g_assert_true(qdict_haskey(resp3, "error"));

    qtest_quit(qts);
    g_assert_cmpint(devstate_server_wait(good, 5000), ==, 0);
    devstate_server_stop(good);
    devstate_server_stop(bad);
}

/*
 * Hot-unplug of a device whose MSI-X vector is enabled and firing and
 * whose DMA engine is writing guest RAM: the guest ejects it (ACPI PCI
 * hotplug of the pc machine), its connection closes (the server exits by
 * itself), QEMU runs on and migrates without it (its migration handlers
 * went with it), and a new device plugs into the same VM and works.
 */
static void test_unplug(void)
{
    DevstateServer *srv = devstate_server_start("--mem-size 8M --start");
    DevstateServer *srv2 = devstate_server_start("--mem-size 8M");
    g_autofree char *dir = g_dir_make_tmp("vfio-user-devstate-XXXXXX", NULL);
    g_autofree char *file = g_strdup_printf("%s/state", dir);
    g_autofree char *uri = g_strdup_printf("file:%s", file);
    g_autofree char *st = NULL;
    g_autofree char *status = NULL;
    QTestState *qts;
    QPCIBus *bus;
    QPCIDevice *dev = NULL;
    QPCIBar bar0;
    int i;

    /* No vapic: its option ROM is not part of the build. */
    qts = qtest_initf("-machine pc -m 128M -global apic-common.vapic=off "
                      "-object memory-backend-memfd,id=mem,size=128M "
                      "-machine memory-backend=mem "
                      "-device '{\"driver\": \"vfio-user-pci\", "
                      "\"id\": \"devstate0\", \"addr\": \"0x4\", "
                      "\"socket\": {\"type\": \"unix\", "
                      "\"path\": \"%s\"}}'", srv->sock);
    bus = qpci_new_pc(qts, NULL);
    qpci_device_foreach(bus, DEVSTATE_PCI_VENDOR_ID, DEVSTATE_PCI_DEVICE_ID,
                        save_fn, &dev);
    g_assert_nonnull(dev);
    qpci_device_enable(dev);
    bar0 = qpci_iomap(dev, 0, NULL);

    devstate_msix_setup(dev);
    devstate_msix_assert_fires(qts, dev, bar0);

    /* DMA with an interrupt after every pass, still running at the eject */
    qpci_io_writel(dev, bar0, DEVSTATE_REG_DMA_ADDR_LO, DMA_GPA);
    qpci_io_writel(dev, bar0, DEVSTATE_REG_DMA_ADDR_HI, 0);
    qpci_io_writel(dev, bar0, DEVSTATE_REG_DMA_PAGES, 4);
    qpci_io_writel(dev, bar0, DEVSTATE_REG_DMA_RATE, 10000);
    qpci_io_writel(dev, bar0, DEVSTATE_REG_CTRL,
                   DEVSTATE_CTRL_DMA | DEVSTATE_CTRL_DMA_IRQ);
    for (i = 0; i < 500 &&
         qpci_io_readl(dev, bar0, DEVSTATE_REG_DMA_PASSES) < 2; i++) {
        g_usleep(10 * 1000);
    }
    g_assert_cmpint(qpci_io_readl(dev, bar0, DEVSTATE_REG_DMA_PASSES), >=, 2);
    qpci_iounmap(dev, dev->msix_table_bar);
    qpci_iounmap(dev, bar0);
    g_free(dev);
    dev = NULL;

    qpci_unplug_acpi_device_test(qts, "devstate0", 4);
    g_assert_false(find_in_query_pci(qts));
    /* Its connection is gone: the server exits by itself. */
    g_assert_cmpint(devstate_server_wait(srv, 5000), ==, 0);

    /* The VM migrates without it. */
    qtest_qmp_assert_success(qts, "{'execute': 'migrate', 'arguments': "
                             "{'uri': %s}}", uri);
    st = devstate_mig_wait(qts, NULL);
    g_assert_cmpstr(st, ==, "completed");
    qtest_qmp_assert_success(qts, "{'execute': 'cont'}");

    /* A new device plugs in and works. */
    qtest_qmp_assert_success(qts, "{'execute': 'device_add', 'arguments': "
                             "{'driver': 'vfio-user-pci', 'id': 'devstate0', "
                             "'addr': '0x5', "
                             "'socket': {'type': 'unix', 'path': %s}}}",
                             srv2->sock);
    g_assert_true(find_in_query_pci(qts));
    qpci_device_foreach(bus, DEVSTATE_PCI_VENDOR_ID, DEVSTATE_PCI_DEVICE_ID,
                        save_fn, &dev);
    g_assert_nonnull(dev);
    qpci_device_enable(dev);
    bar0 = qpci_iomap(dev, 0, NULL);
    g_assert_cmphex(qpci_io_readl(dev, bar0, DEVSTATE_REG_ID), ==,
                    DEVSTATE_ID_MAGIC);
    status = devstate_server_cmd(srv2, "status");
    g_assert_nonnull(strstr(status, "connected=1"));

    qpci_iounmap(dev, bar0);
    g_free(dev);
    qpci_free_pc(bus);
    qtest_quit(qts);
    g_assert_cmpint(devstate_server_wait(srv2, 5000), ==, 0);
    devstate_server_stop(srv2);
    devstate_server_stop(srv);
    unlink(file);
    rmdir(dir);
}

int main(int argc, char **argv)
{
    g_test_init(&argc, &argv, NULL);

    if (!devstate_server_binary()) {
        g_test_skip("DEVSTATE_SERVER_BINARY is not set");
        return g_test_run();
    }
    if (!qtest_has_device("vfio-user-pci")) {
        g_test_skip("vfio-user-pci is not available");
        return g_test_run();
    }
    qtest_add_func("/vfio-user-devstate/device", test_device);
    qtest_add_func("/vfio-user-devstate/no-interface/blocker",
                   test_no_interface_blocker);
    qtest_add_func("/vfio-user-devstate/no-interface/realize-error",
                   test_no_interface_realize_error);
    qtest_add_func("/vfio-user-devstate/unplug", test_unplug);
    return g_test_run();
}
