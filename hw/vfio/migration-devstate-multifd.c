/*
 * VFIO migration through device-state regions: multifd transfer
 *
 * With x-migration-multifd-transfer the stop-and-copy state of a device
 * goes over the multifd channels, in parallel with the other devices':
 * a save thread drains the device memory into device state buffers and
 * queues the device config and the PCI config last; on the destination
 * the load thread of migration-multifd.c hands them back in order.  A
 * buffer holds records of the main channel's stream, which the load side
 * checks as it checks those.
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 */

#include "qemu/osdep.h"
#include "qemu/bswap.h"
#include "qemu/main-loop.h"
#include "io/channel-buffer.h"
#include "migration/misc.h"
#include "migration/qemu-file.h"
#include "qapi/error.h"
#include "migration-devstate.h"
#include "migration-multifd.h"
#include "trace.h"

/* A data buffer: MEM_SET (first chunk of a set), MEM_CHUNK, END_OF_STATE */
#define DS_SET_RECORD       (8 + VFIO_DS_MEM_SET_LEN)
#define DS_CHUNK_RECORD     (8 + VFIO_DS_MEM_CHUNK_LEN)
#define DS_EOS_RECORD       8

static bool ds_queue(SaveCompletePrecopyThreadData *d, VFIODevstate *ds,
                     VFIODeviceStatePacket *packet, uint32_t idx,
                     uint32_t flags, size_t len, Error **errp)
{
    packet->version = cpu_to_be32(VFIO_DEVICE_STATE_PACKET_VER_CURRENT);
    packet->idx = cpu_to_be32(idx);
    packet->flags = cpu_to_be32(flags);
    if (!multifd_queue_device_state(d->idstr, d->instance_id, (char *)packet,
                                    sizeof(*packet) + len)) {
        error_setg(errp, "%s: failed to queue device state buffer %u on the "
                   "multifd channels", ds->name, idx);
        return false;
    }
    trace_vfio_ds_multifd_queue(ds->name, idx, len);
    return true;
}

/* The last buffer: the device config, then the PCI config. */
static bool ds_queue_configs(SaveCompletePrecopyThreadData *d,
                             VFIODevstate *ds, uint32_t idx, Error **errp)
{
    g_autoptr(QIOChannelBuffer) bioc = NULL;
    g_autoptr(QEMUFile) f = NULL;
    VFIODeviceStatePacket hdr = { };
    int ret;

    bioc = qio_channel_buffer_new(sizeof(hdr) + ds->config.size + 4096);
    qio_channel_set_name(QIO_CHANNEL(bioc), "vfio-devstate-config-save");
    f = qemu_file_new_output(QIO_CHANNEL(bioc));
    /* Room for the packet header, filled in by ds_queue() */
    qemu_put_buffer(f, (uint8_t *)&hdr, sizeof(hdr));
    ret = vfio_ds_put_config(f, ds, errp);
    ret = ret ?: vfio_ds_put_pci_config(f, ds, errp);
    if (ret) {
        return false;
    }
    qemu_put_be64(f, VFIO_MIG_FLAG_END_OF_STATE);
    ret = qemu_fflush(f);
    if (ret) {
        error_setg_errno(errp, -ret, "%s: failed to build the config buffer",
                         ds->name);
        return false;
    }
    return ds_queue(d, ds, (VFIODeviceStatePacket *)bioc->data, idx,
                    VFIO_DEVICE_STATE_CONFIG_STATE, bioc->usage - sizeof(hdr),
                    errp);
}

/*
 * The migration core runs this in a thread of its own, without the BQL,
 * once the VM is stopped, while the migration thread saves the rest.
 * The logging session stays open: RAM's final dirty-bitmap sync may come
 * after this, and vfio_ds_save_state() ends it.
 */
bool vfio_ds_save_complete_precopy_thread(SaveCompletePrecopyThreadData *d,
                                          Error **errp)
{
    VFIODevice *vbasedev = d->handler_opaque;
    VFIODevstate *ds = vfio_ds_of(vbasedev);
    g_autofree VFIODeviceStatePacket *packet = NULL;
    bool opened_stopped = false;
    uint32_t idx = 0;
    int ret;

    if (!vfio_multifd_transfer_enabled(vbasedev)) {
        /* vfio_ds_save_complete() sends it on the main channel */
        return true;
    }
    trace_vfio_ds_multifd_save(ds->name, d->idstr, d->instance_id, "start");
    if (vfio_ds_complete_start(ds, errp)) {
        return false;
    }
    packet = g_malloc0(sizeof(*packet) + DS_SET_RECORD + DS_CHUNK_RECORD +
                       ds->memory.size + DS_EOS_RECORD);
    while ((ret = vfio_ds_drain_next(ds, &opened_stopped, errp)) > 0) {
        uint8_t *p = packet->data;
        uint64_t pos = ds->set_pos, len;

        if (multifd_device_state_save_thread_should_exit()) {
            error_setg(errp, "%s: operation cancelled", ds->name);
            return false;
        }
        if (pos == 0) {
            stq_be_p(p, VFIO_DS_FLAG_MEM_SET);
            stl_be_p(p + 8, ds->sets_sent);
            stq_be_p(p + 12, ds->set_size);
            p += DS_SET_RECORD;
        }
        if (vfio_ds_get_chunk(ds, p + DS_CHUNK_RECORD, &len, errp)) {
            return false;
        }
        stq_be_p(p, VFIO_DS_FLAG_MEM_CHUNK);
        stq_be_p(p + 8, pos);
        stq_be_p(p + 16, len);
        p += DS_CHUNK_RECORD + len;
        stq_be_p(p, VFIO_MIG_FLAG_END_OF_STATE);
        p += DS_EOS_RECORD;
        vfio_ds_chunk_sent(ds, len);
        if (!ds_queue(d, ds, packet, idx++, 0, p - packet->data, errp)) {
            return false;
        }
    }
    if (ret < 0 || !ds_queue_configs(d, ds, idx, errp)) {
        return false;
    }
    trace_vfio_ds_multifd_save(ds->name, d->idstr, d->instance_id, "done");
    return true;
}

int vfio_ds_switchover_start(void *opaque)
{
    VFIODevice *vbasedev = opaque;

    if (vfio_multifd_transfer_enabled(vbasedev)) {
        return vfio_multifd_switchover_start(vbasedev);
    }
    return 0;
}

/*
 * In the load thread, without the BQL (but with it for the last buffer,
 * whose PCI config load needs it).  @data is a device state buffer as
 * vfio_ds_save_complete_precopy_thread() queued it, or so it claims: a
 * data buffer is parsed in place, the last one read through a QEMUFile,
 * for the PCI config's vmstate.
 */
bool vfio_ds_multifd_load_buffer(VFIODevice *vbasedev, char *data, size_t len,
                                 bool config, Error **errp)
{
    VFIODevstate *ds = vfio_ds_of(vbasedev);
    g_autoptr(QIOChannelBuffer) bioc = NULL;
    g_autoptr(QEMUFile) f = NULL;
    int ret;

    trace_vfio_ds_multifd_load(ds->name, len, config);
    if (!config) {
        ret = vfio_ds_load_data_buffer(ds, (uint8_t *)data, len, errp);
        g_free(data);
        return !ret;
    }

    /* Read the buffer in place: the channel owns it from here. */
    bioc = qio_channel_buffer_new(0);
    g_free(bioc->data);
    bioc->data = (uint8_t *)data;
    bioc->capacity = bioc->usage = len;
    qio_channel_set_name(QIO_CHANNEL(bioc), "vfio-devstate-load");
    f = qemu_file_new_input(QIO_CHANNEL(bioc));

    bql_lock();
    ret = vfio_ds_load_config_buffer(f, ds, errp);
    bql_unlock();
    return !ret;
}
