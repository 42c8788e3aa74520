/*
 * VFIO migration through device-state regions: the save side
 *
 * The stream of one device: a setup section (HEADER), iterable sections
 * (data sets of device memory: MEM_SET, then MEM_CHUNKs), the complete
 * section (the rest of the device memory, then DEV_CONFIG) and a
 * non-iterable section (PCI_CONFIG); each ends with END_OF_STATE.
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 */

#include "qemu/osdep.h"
#include "qemu/error-report.h"
#include "qemu/timer.h"
#include "system/runstate.h"
#include "hw/pci/pci_device.h"
#include "migration/misc.h"
#include "migration/qemu-file.h"
#include "migration/options.h"
#include "qapi/error.h"
#include "migration-devstate.h"
#include "migration-multifd.h"
#include "trace.h"

/* Bounds of one precopy iteration, so that RAM gets its turn too. */
#define VFIO_DS_ITER_MAX_BYTES   (256 * MiB)
#define VFIO_DS_ITER_MAX_NS      (100 * SCALE_MS)

static PCIDevice *ds_pci_dev(VFIODevstate *ds)
{
    return (PCIDevice *)object_dynamic_cast(OBJECT(ds->vbasedev->dev),
                                            TYPE_PCI_DEVICE);
}

void vfio_ds_identity(VFIODevstate *ds, uint16_t id[4])
{
    PCIDevice *pdev = ds_pci_dev(ds);

    memset(id, 0, 4 * sizeof(id[0]));
    if (pdev) {
        id[0] = pci_get_word(pdev->config + PCI_VENDOR_ID);
        id[1] = pci_get_word(pdev->config + PCI_DEVICE_ID);
        id[2] = pci_get_word(pdev->config + PCI_SUBSYSTEM_VENDOR_ID);
        id[3] = pci_get_word(pdev->config + PCI_SUBSYSTEM_ID);
    }
}

int vfio_ds_save_prepare(void *opaque, Error **errp)
{
    VFIODevice *vbasedev = opaque;
    VFIODevstate *ds = vfio_ds_of(vbasedev);

    if (runstate_check(RUN_STATE_SAVE_VM)) {
        return 0;
    }
    if (migrate_postcopy_ram() || migrate_background_snapshot()) {
        error_setg(errp, "%s: device-state migration supports neither "
                   "postcopy nor background snapshot", ds->name);
        return -EOPNOTSUPP;
    }
    if (vbasedev->migration_multifd_transfer == ON_OFF_AUTO_ON &&
        !vfio_multifd_transfer_supported()) {
        error_setg(errp, "%s: x-migration-multifd-transfer=on, but this "
                   "migration cannot move device state over multifd "
                   "channels (that needs multifd without compression or "
                   "mapped-ram, and switchover-start)", ds->name);
        return -EOPNOTSUPP;
    }
    return 0;
}

int vfio_ds_save_setup(QEMUFile *f, void *opaque, Error **errp)
{
    VFIODevstate *ds = vfio_ds_of(opaque);
    size_t vlen = strlen(ds->version_str);
    uint16_t id[4];
    int i, ret;

    if (!vfio_multifd_setup(ds->vbasedev, false, errp)) {
        return -EINVAL;
    }
    ds->set_open = false;
    ds->put_pending = false;
    ds->last_set_size = 0;
    ds->first_set_read = false;
    ds->first_set_size = 0;
    ds->dev_pending = 0;
    ds->sets_sent = 0;
    error_free(ds->save_err);
    ds->save_err = NULL;
    vfio_ds_bounce_alloc(ds);

    /*
     * The logging session starts before any data is read.  It is the
     * migration's: opened here, closed in save_complete, in save_cleanup
     * or when the migration fails.
     */
    ret = vfio_ds_set_logging(ds, true, errp);
    if (ret) {
        return ret;
    }

    vfio_ds_identity(ds, id);
    qemu_put_be64(f, VFIO_DS_FLAG_HEADER);
    qemu_put_be32(f, VFIO_DEVICE_DATA_INTERFACE_VERSION);
    qemu_put_be32(f, ds->caps);
    qemu_put_be64(f, ds->config.size);
    qemu_put_be64(f, ds->memory.size);
    qemu_put_be64(f, ds->bitmap.size);
    for (i = 0; i < 4; i++) {
        qemu_put_be16(f, id[i]);
    }
    qemu_put_be32(f, vlen);
    qemu_put_buffer(f, (uint8_t *)ds->version_str, vlen);
    qemu_put_be64(f, VFIO_MIG_FLAG_END_OF_STATE);
    trace_vfio_ds_save_setup(ds->name, ds->caps, ds->version_str);

    ret = qemu_file_get_error(f);
    if (ret) {
        error_setg_errno(errp, -ret, "%s: failed to send the device-state "
                         "header", ds->name);
    }
    return ret;
}

/* Open a data set; its size is 0 when the device has nothing to send. */
static int ds_open_set(VFIODevstate *ds, Error **errp)
{
    int ret;

    assert(!ds->set_open);
    ret = CTL_READ64(ds, device_memory.size, &ds->set_size, errp);
    if (ret) {
        return ret;
    }
    trace_vfio_ds_set_open(ds->name, ds->set_size);
    /*
     * The first data set of a session is the whole snapshot, and no later
     * one may be larger: a device that says otherwise
     * would keep the migration looping.
     */
    if (!ds->first_set_read) {
        ds->first_set_read = true;
        ds->first_set_size = ds->set_size;
    } else if (ds->set_size > ds->first_set_size) {
        error_setg(errp, "%s: device-state device_memory.size %" PRIu64
                   " exceeds the session's first data set of %" PRIu64
                   " bytes", ds->name, ds->set_size,
                   ds->first_set_size);
        return -EINVAL;
    }
    ds->set_pos = 0;
    ds->set_open = ds->set_size > 0;
    ds->last_set_size = ds->set_size;
    if (ds->set_open) {
        ds->sets_sent++;
    }
    return 0;
}

/*
 * Chunks go into the stream without a copy (qemu_put_buffer_async), so
 * the stream must be flushed before the region or the bounce buffer they
 * point into is filled again.
 */
static int ds_put_flush(QEMUFile *f, VFIODevstate *ds)
{
    if (ds->put_pending) {
        ds->put_pending = false;
        qemu_fflush(f);
    }
    return qemu_file_get_error(f);
}

/*
 * Have the device put the next chunk of the open data set in its data
 * region, and copy it to @buf unless @buf is NULL; *@len is its size.
 */
int vfio_ds_get_chunk(VFIODevstate *ds, void *buf, uint64_t *len,
                      Error **errp)
{
    int ret;

    *len = MIN(ds->memory.size, ds->set_size - ds->set_pos);
    /* The device advances its read-only pos itself. */
    ret = CTL_WRITE32(ds, device_memory.action,
                      VFIO_DEVICE_DATA_ACTION_GET_BUFFER, errp);
    if (!ret && buf) {
        ret = vfio_ds_region_rw(ds, &ds->memory, 0, buf, *len, false, errp);
    }
    if (!ret) {
        trace_vfio_ds_save_chunk(ds->name, ds->set_pos, *len);
    }
    return ret;
}

/* The chunk that vfio_ds_get_chunk() returned is in the stream. */
void vfio_ds_chunk_sent(VFIODevstate *ds, uint64_t len)
{
    vfio_migration_add_bytes_transferred(len);
    ds->set_pos += len;
    if (ds->set_pos == ds->set_size) {
        ds->set_open = false;
    }
}

static int ds_save_chunk(QEMUFile *f, VFIODevstate *ds, Error **errp)
{
    void *buf = ds->memory.mmap ?: ds->bounce;
    uint64_t len;
    int ret = ds_put_flush(f, ds);

    if (ret) {
        return ret;
    }

    if (ds->set_pos == 0) {
        qemu_put_be64(f, VFIO_DS_FLAG_MEM_SET);
        qemu_put_be32(f, ds->sets_sent);
        qemu_put_be64(f, ds->set_size);
    }
    ret = vfio_ds_get_chunk(ds, ds->memory.mmap ? NULL : buf, &len, errp);
    if (ret) {
        return ret;
    }
    qemu_put_be64(f, VFIO_DS_FLAG_MEM_CHUNK);
    qemu_put_be64(f, ds->set_pos);
    qemu_put_be64(f, len);
    qemu_put_buffer_async(f, buf, len, false);
    ds->put_pending = true;
    vfio_ds_chunk_sent(ds, len);
    return qemu_file_get_error(f);
}

/*
 * What is left to send: the rest of the open data set plus what the
 * device has dirtied that is in no data set yet (device_memory.pending).
 */
static void ds_pending(VFIODevstate *ds, uint64_t *must_precopy)
{
    *must_precopy += (ds->set_open ? ds->set_size - ds->set_pos : 0) +
                     ds->dev_pending;
}

static void ds_read_pending(VFIODevstate *ds)
{
    uint64_t pending;

    if (ds->save_err) {
        return;
    }
    if (!ds->first_set_read) {
        /*
         * Nothing read yet: open the session's first data set, the whole
         * snapshot, whose size is the first figure to report.
         */
        ds_open_set(ds, &ds->save_err);
        return;
    }
    if (CTL_READ64(ds, device_memory.pending, &pending, &ds->save_err)) {
        return;
    }
    if (pending > ds->first_set_size) {
        /* It over-counts at worst: one whole snapshot. */
        pending = ds->first_set_size;
    }
    ds->dev_pending = pending;
}

void vfio_ds_state_pending_estimate(void *opaque,
                                    uint64_t *must_precopy,
                                    uint64_t *can_postcopy)
{
    VFIODevstate *ds = vfio_ds_of(opaque);

    if (ds->caps & VFIO_DEVICE_DATA_CAP_DEVICE_MEMORY) {
        ds_pending(ds, must_precopy);
    }
    trace_vfio_ds_state_pending(ds->name, "estimate",
                                *must_precopy);
}

void vfio_ds_state_pending_exact(void *opaque, uint64_t *must_precopy,
                                 uint64_t *can_postcopy)
{
    VFIODevstate *ds = vfio_ds_of(opaque);

    if (!(ds->caps & VFIO_DEVICE_DATA_CAP_DEVICE_MEMORY)) {
        return;
    }
    /* The honest figure: what the device has dirtied by now. */
    ds_read_pending(ds);
    ds_pending(ds, must_precopy);
    trace_vfio_ds_state_pending(ds->name, "exact", *must_precopy);
}

bool vfio_ds_is_active_iterate(void *opaque)
{
    VFIODevstate *ds = vfio_ds_of(opaque);

    return (ds->caps & VFIO_DEVICE_DATA_CAP_DEVICE_MEMORY) &&
           (ds->state & VFIO_DEVICE_DATA_STATE_LOGGING);
}

/*
 * Fail the migration with @err; without @err the error is the stream's
 * own (a cancelled or broken migration), which is already recorded.
 */
static int ds_fail(VFIODevstate *ds, int ret, Error *err)
{
    if (err) {
        migration_file_set_error(ret, error_copy(err));
        error_report_err(err);
    }
    return ret;
}

/*
 * A reset that QEMU did not see (an FLR handled by the kernel driver, say)
 * ends the logging session: the pages the device dirtied since are
 * unknown, so the migration cannot complete.  True, with
 * @errp set, when the device is no longer in the session.
 */
static bool ds_session_lost(VFIODevstate *ds, Error **errp)
{
    uint32_t real;

    if (CTL_READ32(ds, device_state, &real, NULL) ||
        (real & VFIO_DEVICE_DATA_STATE_LOGGING)) {
        return false;
    }
    error_setg(errp, "%s: device-state logging session ended (device "
               "reset?) during the migration: device_state is %s", ds->name,
               vfio_ds_state_str(real));
    return true;
}

int vfio_ds_save_iterate(QEMUFile *f, void *opaque)
{
    VFIODevstate *ds = vfio_ds_of(opaque);
    int64_t start = qemu_clock_get_ns(QEMU_CLOCK_REALTIME);
    uint64_t sent = 0;
    Error *err = NULL;
    int ret = 0;

    if (ds->save_err) {
        return ds_fail(ds, -EIO, error_copy(ds->save_err));
    }
    if (!ds->set_open) {
        ret = ds_open_set(ds, &err);
    }
    while (!ret && ds->set_open && sent < VFIO_DS_ITER_MAX_BYTES &&
           !migration_rate_exceeded(f) &&
           qemu_clock_get_ns(QEMU_CLOCK_REALTIME) - start <
           VFIO_DS_ITER_MAX_NS) {
        uint64_t before = ds->set_pos;

        ret = ds_save_chunk(f, ds, &err);
        sent += ds->set_pos - before;
    }
    qemu_put_be64(f, VFIO_MIG_FLAG_END_OF_STATE);
    trace_vfio_ds_save_iterate(ds->name, sent, ds->set_open);
    if (ret) {
        Error *lost = NULL;

        /* Say why the device refused, when it is that */
        if (err && ds_session_lost(ds, &lost)) {
            error_free(err);
            err = lost;
        }
        return ds_fail(ds, ret, err);
    }
    /*
     * Keep the estimate honest: the core asks for the exact figure only
     * once the estimate fits the downtime limit, so a stale count of the
     * device's pending bytes would keep it iterating for ever.
     */
    ds_read_pending(ds);
    /* Done for now when the device had nothing dirty. */
    return !ds->set_open && ds->last_set_size == 0;
}

/*
 * Stop-and-copy starts: the device must still be in the logging session,
 * and stopped (the VM stop does that, unless the VM was not running).
 */
int vfio_ds_complete_start(VFIODevstate *ds, Error **errp)
{
    if (ds->save_err) {
        error_propagate(errp, error_copy(ds->save_err));
        return -EIO;
    }
    if (ds_session_lost(ds, errp)) {
        return -EIO;
    }
    if (!(ds->state & VFIO_DEVICE_DATA_STATE_STOP)) {
        return vfio_ds_set_state(ds, DS_STATE_STOP_LOGGING, errp);
    }
    return 0;
}

/*
 * Draining the device memory of a stopped device: the rest of the open
 * data set, then the set opened in STOP|LOGGING; after that the device
 * may report nothing dirty, or it is broken.  Returns 1 while a data set
 * is open, with a chunk to send, 0 once drained.
 */
int vfio_ds_drain_next(VFIODevstate *ds, bool *opened_stopped, Error **errp)
{
    int ret;

    if (!(ds->caps & VFIO_DEVICE_DATA_CAP_DEVICE_MEMORY)) {
        return 0;
    }
    if (ds->set_open) {
        return 1;
    }
    ret = ds_open_set(ds, errp);
    if (ret) {
        return ret;
    }
    if (!ds->set_open) {
        return 0;
    }
    if (*opened_stopped) {
        error_setg(errp, "%s: stopped device still reports %" PRIu64
                   " bytes of dirty device memory after its final "
                   "data set", ds->name, ds->set_size);
        return -EIO;
    }
    *opened_stopped = true;
    return 1;
}

/* The device config of a stopped device, which ends its data sets. */
int vfio_ds_put_config(QEMUFile *f, VFIODevstate *ds, Error **errp)
{
    uint64_t size;
    int ret;

    ret = CTL_WRITE32(ds, device_config.action,
                      VFIO_DEVICE_DATA_ACTION_GET_BUFFER, errp);
    ret = ret ?: CTL_READ64(ds, device_config.size, &size, errp);
    if (!ret && (size == 0 || size > ds->config.size)) {
        error_setg(errp, "%s: device-state config size %" PRIu64 " is out "
                   "of range (1 to %" PRIu64 ")", ds->name, size,
                   ds->config.size);
        ret = -EINVAL;
    }
    if (!ret && !ds->config.mmap) {
        ret = vfio_ds_region_rw(ds, &ds->config, 0, ds->bounce, size, false,
                                errp);
    }
    if (ret) {
        return ret;
    }
    trace_vfio_ds_save_config(ds->name, size);
    qemu_put_be64(f, VFIO_DS_FLAG_DEV_CONFIG);
    qemu_put_be32(f, ds->sets_sent);
    qemu_put_be64(f, size);
    qemu_put_buffer(f, ds->config.mmap ?: ds->bounce, size);
    vfio_migration_add_bytes_transferred(size);
    return 0;
}

/* The PCI config (MSI/MSI-X state), which ends the device's state. */
int vfio_ds_put_pci_config(QEMUFile *f, VFIODevstate *ds, Error **errp)
{
    VFIODevice *vbasedev = ds->vbasedev;
    int ret;

    if (!vbasedev->ops->vfio_save_config) {
        return 0;
    }
    qemu_put_be64(f, VFIO_DS_FLAG_PCI_CONFIG);
    ret = vbasedev->ops->vfio_save_config(vbasedev, f, errp);
    if (ret) {
        error_prepend(errp, "%s: failed to save PCI config: ", ds->name);
    }
    return ret;
}

int vfio_ds_save_complete(QEMUFile *f, void *opaque)
{
    VFIODevstate *ds = vfio_ds_of(opaque);
    bool opened_stopped = false;
    Error *err = NULL;
    int ret;

    /* The save thread sends the state on a multifd channel. */
    if (vfio_multifd_transfer_enabled(ds->vbasedev)) {
        vfio_multifd_emit_dummy_eos(ds->vbasedev, f);
        return 0;
    }
    ret = vfio_ds_complete_start(ds, &err);
    while (!ret && (ret = vfio_ds_drain_next(ds, &opened_stopped,
                                             &err)) > 0) {
        ret = ds_save_chunk(f, ds, &err);
    }
    ret = ret ?: ds_put_flush(f, ds);
    ret = ret ?: vfio_ds_put_config(f, ds, &err);
    if (ret) {
        return ds_fail(ds, ret, err);
    }
    qemu_put_be64(f, VFIO_MIG_FLAG_END_OF_STATE);

    /*
     * The device's state is all out: end the logging session here, where
     * a failure still fails the migration (STOP|LOGGING -> STOP).
     */
    ret = vfio_ds_set_logging(ds, false, &err);
    if (ret) {
        return ds_fail(ds, ret, err);
    }
    trace_vfio_ds_save_complete(ds->name);
    return qemu_file_get_error(f);
}

/*
 * The PCI config (MSI/MSI-X state) goes in the non-iterable part, as the
 * v2 backend's does, so that the destination restores it after the
 * interrupt controllers it refers to.
 *
 * With multifd transfer the save thread has sent it, after the device
 * config, and the save threads are done by now.  So are the iterable
 * sections, and with them RAM's final dirty-bitmap sync: the logging
 * session ends here, where a failure still fails the migration.
 */
void vfio_ds_save_state(QEMUFile *f, void *opaque)
{
    VFIODevstate *ds = vfio_ds_of(opaque);
    VFIODevice *vbasedev = ds->vbasedev;
    Error *err = NULL;
    int ret;

    if (!vfio_multifd_transfer_enabled(vbasedev)) {
        ret = vfio_ds_put_pci_config(f, ds, &err);
    } else {
        ret = vfio_ds_set_logging(ds, false, &err);
        if (!ret) {
            trace_vfio_ds_save_complete(ds->name);
        }
    }
    if (ret) {
        ds_fail(ds, ret, err);
        qemu_file_set_error(f, ret);
        return;
    }
    if (vfio_multifd_transfer_enabled(vbasedev) &&
        vfio_load_config_after_iter(vbasedev)) {
        qemu_put_be64(f, VFIO_MIG_FLAG_DEV_CONFIG_LOAD_READY);
    } else {
        qemu_put_be64(f, VFIO_MIG_FLAG_END_OF_STATE);
    }
}

void vfio_ds_save_cleanup(void *opaque)
{
    VFIODevstate *ds = vfio_ds_of(opaque);
    Error *err = NULL;

    /* Completed: STOP|LOGGING -> STOP; failed and running: -> RUNNING. */
    if (vfio_ds_set_logging(ds, false, &err)) {
        error_report_err(err);
    }
    error_free(ds->save_err);
    ds->save_err = NULL;
    vfio_ds_bounce_free(ds);
    vfio_multifd_cleanup(ds->vbasedev);
}

