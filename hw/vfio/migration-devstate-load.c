/*
 * VFIO migration through device-state regions: the load side
 *
 * Nothing in the stream is trusted: every value is checked before it
 * reaches the device, the sections must come in the order the source
 * writes them, and a load that did not carry all of the device's state
 * resets the device and keeps the VM from running.
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 */

#include "qemu/osdep.h"
#include "qemu/bswap.h"
#include "qemu/error-report.h"
#include "hw/pci/pci_device.h"
#include "migration/misc.h"
#include "migration/savevm.h"
#include "migration/qemu-file.h"
#include "migration/options.h"
#include "qapi/error.h"
#include "migration-devstate.h"
#include "migration-multifd.h"
#include "trace.h"

int vfio_ds_load_setup(QEMUFile *f, void *opaque, Error **errp)
{
    VFIODevstate *ds = vfio_ds_of(opaque);

    if (!vfio_multifd_setup(ds->vbasedev, true, errp)) {
        return -EINVAL;
    }
    ds->incoming = true;
    ds->load_failed = false;
    ds->header_loaded = false;
    ds->load_sets = 0;
    ds->load_config_done = false;
    ds->load_done = false;
    ds->load_set_open = false;
    vfio_ds_bounce_alloc(ds);
    /* Hold the device still from before the first byte. */
    return vfio_ds_set_state(ds, VFIO_DEVICE_DATA_STATE_STOP, errp);
}

int vfio_ds_load_cleanup(void *opaque)
{
    VFIODevstate *ds = vfio_ds_of(opaque);

    /* Stops the load thread, if it still runs. */
    vfio_multifd_cleanup(ds->vbasedev);
    vfio_ds_bounce_free(ds);
    if (!ds->load_done) {
        /*
         * The load failed or was cut short: reset the device, so that no
         * partly loaded state ever runs.  The reset
         * brings the device back to RUNNING (vfio_ds_reset).
         */
        trace_vfio_ds_load_abandoned(ds->name);
        ds->load_failed = true;
        device_cold_reset(ds->vbasedev->dev);
    }
    ds->incoming = false;
    return 0;
}

static int ds_load_header(QEMUFile *f, VFIODevstate *ds, Error **errp)
{
    const char *name = ds->name;
    char src_version[VFIO_DEVICE_DATA_VERSION_MAX];
    uint32_t version, caps, vlen;
    uint64_t config_size, memory_size, bitmap_size;
    uint16_t id[4], src_id[4];
    int i, ret;

    if (ds->header_loaded) {
        error_setg(errp, "%s: second device-state header in the stream",
                   name);
        return -EINVAL;
    }
    version = qemu_get_be32(f);
    caps = qemu_get_be32(f);
    config_size = qemu_get_be64(f);
    memory_size = qemu_get_be64(f);
    bitmap_size = qemu_get_be64(f);
    for (i = 0; i < 4; i++) {
        src_id[i] = qemu_get_be16(f);
    }
    vlen = qemu_get_be32(f);
    ret = qemu_file_get_error(f);
    if (ret) {
        error_setg_errno(errp, -ret, "%s: truncated device-state header",
                         name);
        return ret;
    }
    if (version != VFIO_DEVICE_DATA_INTERFACE_VERSION) {
        error_setg(errp, "%s: stream has device-state interface version %u, "
                   "QEMU supports %u", name, version,
                   VFIO_DEVICE_DATA_INTERFACE_VERSION);
        return -EINVAL;
    }
    /*
     * Only device memory changes what the stream carries; whether the
     * devices track DMA writes or have a P2P state does not (and the
     * device's migration_version answer decides the rest).
     */
    if ((caps & ~DS_CAPS_KNOWN) ||
        ((caps ^ ds->caps) & VFIO_DEVICE_DATA_CAP_DEVICE_MEMORY)) {
        error_setg(errp, "%s: stream has device-state caps 0x%x, the "
                   "destination device has 0x%x", name, caps, ds->caps);
        return -EINVAL;
    }
    if (config_size == 0 || config_size > VFIO_DS_MAX_REGION_SIZE ||
        bitmap_size > VFIO_DS_MAX_REGION_SIZE ||
        memory_size > VFIO_DS_MAX_REGION_SIZE ||
        !memory_size != !(caps & VFIO_DEVICE_DATA_CAP_DEVICE_MEMORY)) {
        error_setg(errp, "%s: stream has invalid device-state region sizes "
                   "(config %" PRIu64 ", memory %" PRIu64 ", bitmap %" PRIu64
                   ")", name, config_size, memory_size, bitmap_size);
        return -EINVAL;
    }
    /*
     * The PCI IDs are informational: only the device's answer to the
     * source's migration_version decides compatibility, which lets a
     * newer device take an older one's state.
     */
    vfio_ds_identity(ds, id);
    trace_vfio_ds_load_ids(name, src_id[0], src_id[1], src_id[2], src_id[3],
                           id[0], id[1], id[2], id[3]);
    if (vlen >= sizeof(src_version)) {
        error_setg(errp, "%s: stream's migration_version length %u exceeds "
                   "%zu", name, vlen, sizeof(src_version) - 1);
        return -EINVAL;
    }
    qemu_get_buffer(f, (uint8_t *)src_version, vlen);
    src_version[vlen] = '\0';
    ret = qemu_file_get_error(f);
    if (ret) {
        error_setg_errno(errp, -ret, "%s: truncated device-state header",
                         name);
        return ret;
    }
    for (i = 0; i < vlen; i++) {
        if (!g_ascii_isprint(src_version[i])) {
            error_setg(errp, "%s: stream's migration_version is not "
                       "printable ASCII", name);
            return -EINVAL;
        }
    }
    if (!vlen != !ds->version.size) {
        error_setg(errp, "%s: %s a migration_version, the destination "
                   "device %s", name,
                   vlen ? "source device has" : "source device has no",
                   ds->version.size ? "has one" : "has none");
        return -EINVAL;
    }
    if (vlen) {
        /*
         * Compatibility before any device data: the destination device
         * judges the source's string.
         */
        if (vlen + 1 > ds->version.size) {
            error_setg(errp, "%s: source migration_version '%s' does not "
                       "fit the destination's region of %" PRIu64 " bytes",
                       name, src_version, ds->version.size);
            return -EINVAL;
        }
        trace_vfio_ds_version_check(name, src_version, ds->version_str);
        ret = vfio_ds_region_rw(ds, &ds->version, 0, src_version, vlen + 1,
                                true, NULL);
        if (ret) {
            error_setg_errno(errp, -ret, "%s: device refused migration_version"
                             ": source '%s', destination '%s'", name,
                             src_version, ds->version_str);
            return ret;
        }
    }
    ds->src_memory_region_size = memory_size;
    ds->header_loaded = true;
    trace_vfio_ds_load_header(name, caps, src_version);
    if (migrate_switchover_ack()) {
        return qemu_loadvm_approve_switchover();
    }
    return 0;
}

/* A data set @seq of @size bytes starts. */
static int ds_load_set_open(VFIODevstate *ds, uint32_t seq, uint64_t size,
                            Error **errp)
{
    const char *name = ds->name;
    int ret;

    if (!(ds->caps & VFIO_DEVICE_DATA_CAP_DEVICE_MEMORY)) {
        error_setg(errp, "%s: device-memory data in the stream, but the "
                   "device has no device memory", name);
        return -EINVAL;
    }
    if (ds->load_set_open) {
        error_setg(errp, "%s: new data set while %" PRIu64 " of %" PRIu64
                   " bytes of the previous one are missing", name,
                   ds->load_set_size - ds->load_pos, ds->load_set_size);
        return -EINVAL;
    }
    if (ds->load_config_done) {
        error_setg(errp, "%s: data set after the device config", name);
        return -EINVAL;
    }
    /* Data sets are numbered: none may be lost, repeated or reordered. */
    if (seq != ds->load_sets + 1) {
        error_setg(errp, "%s: data set number %u in the stream, expected %u",
                   name, seq, ds->load_sets + 1);
        return -EINVAL;
    }
    if (size == 0) {
        error_setg(errp, "%s: empty data set in the stream", name);
        return -EINVAL;
    }
    /* The device checks the size against what it can hold. */
    ret = CTL_WRITE64(ds, device_memory.size, size, errp);
    if (ret) {
        return ret;
    }
    trace_vfio_ds_load_set(name, size);
    ds->load_sets = seq;
    ds->load_set_open = true;
    ds->load_set_size = size;
    ds->load_pos = 0;
    ds->load_dev_pos = 0;
    return 0;
}

static int ds_load_set(QEMUFile *f, VFIODevstate *ds, Error **errp)
{
    uint32_t seq = qemu_get_be32(f);
    uint64_t size = qemu_get_be64(f);
    int ret = qemu_file_get_error(f);

    if (ret) {
        error_setg_errno(errp, -ret, "%s: truncated data set header",
                         ds->name);
        return ret;
    }
    return ds_load_set_open(ds, seq, size, errp);
}

/* Hand what was staged of the data set to the device. */
static int ds_load_flush(VFIODevstate *ds, uint64_t len, Error **errp)
{
    int ret = 0;

    if (!ds->memory.mmap) {
        ret = vfio_ds_region_rw(ds, &ds->memory, 0, ds->bounce, len, true,
                                errp);
    }
    /* The device advances its read-only pos itself. */
    ret = ret ?: CTL_WRITE32(ds, device_memory.action,
                             VFIO_DEVICE_DATA_ACTION_SET_BUFFER, errp);
    if (!ret) {
        trace_vfio_ds_load_chunk(ds->name, ds->load_dev_pos, len);
        ds->load_dev_pos += len;
    }
    return ret;
}

/*
 * The chunk of @len bytes at @pos of the open data set: its data comes
 * from @f, or from @buf when @f is NULL.
 */
static int ds_load_chunk_data(VFIODevstate *ds, uint64_t pos, uint64_t len,
                              QEMUFile *f, const uint8_t *buf, Error **errp)
{
    const char *name = ds->name;
    uint8_t *stage = ds->memory.mmap ?: ds->bounce;
    uint64_t R = ds->memory.size;
    int ret;

    /* Every value of the stream is checked before use. */
    if (!ds->load_set_open) {
        error_setg(errp, "%s: device-memory chunk outside a data set", name);
        return -EINVAL;
    }
    if (pos != ds->load_pos) {
        error_setg(errp, "%s: chunk at offset %" PRIu64 ", expected %" PRIu64,
                   name, pos, ds->load_pos);
        return -EINVAL;
    }
    if (len == 0 || len > ds->src_memory_region_size ||
        len > ds->load_set_size - pos) {
        error_setg(errp, "%s: chunk size %" PRIu64 " at offset %" PRIu64
                   " is out of range (1 to %" PRIu64 ")", name, len, pos,
                   MIN(ds->src_memory_region_size, ds->load_set_size - pos));
        return -EINVAL;
    }
    /*
     * Re-chunk to this device's region size: the source's may differ.
     * Chunks are staged in the region (or the bounce buffer) and handed
     * over whole, in order.
     */
    while (len) {
        uint64_t fill = ds->load_pos - ds->load_dev_pos;
        uint64_t n = MIN(len, R - fill);

        if (!f) {
            memcpy(stage + fill, buf, n);
            buf += n;
        } else if (qemu_get_buffer(f, stage + fill, n) != n ||
                   qemu_file_get_error(f)) {
            ret = qemu_file_get_error(f) ?: -EIO;
            error_setg_errno(errp, -ret, "%s: truncated chunk at offset %"
                             PRIu64, name, ds->load_pos);
            return ret;
        }
        ds->load_pos += n;
        len -= n;
        fill += n;
        if (fill == R || ds->load_pos == ds->load_set_size) {
            ret = ds_load_flush(ds, fill, errp);
            if (ret) {
                return ret;
            }
        }
    }
    if (ds->load_pos == ds->load_set_size) {
        ds->load_set_open = false;
    }
    return 0;
}

static int ds_load_chunk(QEMUFile *f, VFIODevstate *ds, Error **errp)
{
    uint64_t pos = qemu_get_be64(f);
    uint64_t len = qemu_get_be64(f);
    int ret = qemu_file_get_error(f);

    if (ret) {
        error_setg_errno(errp, -ret, "%s: truncated chunk header", ds->name);
        return ret;
    }
    return ds_load_chunk_data(ds, pos, len, f, NULL, errp);
}

static int ds_load_config(QEMUFile *f, VFIODevstate *ds, Error **errp)
{
    const char *name = ds->name;
    uint32_t sets = qemu_get_be32(f);
    uint64_t size = qemu_get_be64(f);
    uint8_t *buf = ds->config.mmap ?: ds->bounce;
    int ret = qemu_file_get_error(f);

    if (ret) {
        error_setg_errno(errp, -ret, "%s: truncated config header", name);
        return ret;
    }
    if (ds->load_config_done) {
        error_setg(errp, "%s: second device config in the stream", name);
        return -EINVAL;
    }
    if (sets != ds->load_sets) {
        error_setg(errp, "%s: source sent %u data sets, %u arrived", name,
                   sets, ds->load_sets);
        return -EINVAL;
    }
    if (ds->load_set_open) {
        error_setg(errp, "%s: device config while %" PRIu64 " bytes of a "
                   "data set are missing", name,
                   ds->load_set_size - ds->load_pos);
        return -EINVAL;
    }
    if (size == 0 || size > ds->config.size) {
        error_setg(errp, "%s: device config size %" PRIu64 " is out of range "
                   "(1 to %" PRIu64 ")", name, size, ds->config.size);
        return -EINVAL;
    }
    ret = CTL_WRITE64(ds, device_config.size, size, errp);
    if (ret) {
        return ret;
    }
    if (qemu_get_buffer(f, buf, size) != size || qemu_file_get_error(f)) {
        ret = qemu_file_get_error(f) ?: -EIO;
        error_setg_errno(errp, -ret, "%s: truncated device config", name);
        return ret;
    }
    ret = ds->config.mmap ? 0 :
          vfio_ds_region_rw(ds, &ds->config, 0, buf, size, true, errp);
    ret = ret ?: CTL_WRITE32(ds, device_config.action,
                             VFIO_DEVICE_DATA_ACTION_SET_BUFFER, errp);
    if (!ret) {
        trace_vfio_ds_load_config(name, size);
        ds->load_config_done = true;
        /* Without a PCI config to follow, the device config is the end. */
        if (!ds->vbasedev->ops->vfio_load_config) {
            ds->load_done = true;
        }
    }
    return ret;
}

static int ds_load_pci_config(QEMUFile *f, VFIODevstate *ds, Error **errp)
{
    VFIODevice *vbasedev = ds->vbasedev;
    int ret;

    if (!vbasedev->ops->vfio_load_config) {
        error_setg(errp, "%s: PCI config in the stream for a device that "
                   "has none", ds->name);
        return -EINVAL;
    }
    /* The PCI config ends the state: the device's must all be in. */
    if (ds->load_set_open) {
        error_setg(errp, "%s: PCI config while %" PRIu64 " bytes of a data "
                   "set are missing", ds->name,
                   ds->load_set_size - ds->load_pos);
        return -EINVAL;
    }
    if (!ds->load_config_done) {
        error_setg(errp, "%s: PCI config before the device config",
                   ds->name);
        return -EINVAL;
    }
    ret = vbasedev->ops->vfio_load_config(vbasedev, f);
    if (ret) {
        error_setg_errno(errp, -ret, "%s: failed to load PCI config",
                         ds->name);
        return ret;
    }
    ds->load_done = true;
    return 0;
}

/*
 * Which records may come where: all of them on the main channel; with
 * multifd transfer the stop-and-copy state comes in buffers on the
 * multifd channels instead, the data sets' chunks first and in the last
 * buffer the device config and the PCI config.
 */
static bool ds_record_allowed(VFIODevstate *ds, VFIODevstateInput in,
                              uint64_t tag)
{
    bool multifd = vfio_multifd_transfer_enabled(ds->vbasedev);

    switch (tag) {
    case VFIO_DS_FLAG_HEADER:
        return in == VFIO_DS_IN_MAIN;
    case VFIO_DS_FLAG_MEM_SET:
    case VFIO_DS_FLAG_MEM_CHUNK:
        return in != VFIO_DS_IN_MULTIFD_CONFIG;
    case VFIO_DS_FLAG_DEV_CONFIG:
    case VFIO_DS_FLAG_PCI_CONFIG:
        return in == (multifd ? VFIO_DS_IN_MULTIFD_CONFIG : VFIO_DS_IN_MAIN);
    default:
        return true;            /* refused as unknown */
    }
}

static const char *ds_input_str(VFIODevstateInput in)
{
    switch (in) {
    case VFIO_DS_IN_MAIN:
        return "the main migration channel";
    case VFIO_DS_IN_MULTIFD_DATA:
        return "a multifd device state buffer";
    default:
        return "the last multifd device state buffer";
    }
}

/* May a record with @tag come now, from @in? */
static int ds_check_record(VFIODevstate *ds, VFIODevstateInput in,
                           uint64_t tag, Error **errp)
{
    const char *name = ds->name;

    if (tag != VFIO_DS_FLAG_HEADER && !ds->header_loaded) {
        error_setg(errp, "%s: device-state data 0x%" PRIx64 " before the "
                   "header", name, tag);
        return -EINVAL;
    }
    if (ds->load_done) {
        error_setg(errp, "%s: device-state data 0x%" PRIx64 " after the "
                   "end of the device state", name, tag);
        return -EINVAL;
    }
    if (!ds_record_allowed(ds, in, tag)) {
        error_setg(errp, "%s: device-state data 0x%" PRIx64 " in %s, "
                   "with multifd transfer %s", name, tag, ds_input_str(in),
                   vfio_multifd_transfer_enabled(ds->vbasedev) ?
                   "on" : "off");
        return -EINVAL;
    }
    return 0;
}

/*
 * A multifd data buffer: MEM_SET and MEM_CHUNK records up to its
 * END_OF_STATE, which ends it.  Parsed in place, so that a chunk's data
 * is copied once, where it belongs.
 */
int vfio_ds_load_data_buffer(VFIODevstate *ds, const uint8_t *p, size_t len,
                             Error **errp)
{
    const uint8_t *end;
    uint64_t tag, pos, n;
    int ret;

    if (!len) {
        /* An empty buffer (NULL: the receiver's g_memdup2() of nothing) */
        goto truncated;
    }
    end = p + len;
    while (end - p >= 8) {
        tag = ldq_be_p(p);
        p += 8;
        trace_vfio_ds_load_tag(ds->name, tag);
        if (tag == VFIO_MIG_FLAG_END_OF_STATE) {
            if (p != end) {
                error_setg(errp, "%s: data after the end of a multifd "
                           "device state buffer", ds->name);
                return -EINVAL;
            }
            return 0;
        }
        ret = ds_check_record(ds, VFIO_DS_IN_MULTIFD_DATA, tag, errp);
        if (ret) {
            return ret;
        }
        switch (tag) {
        case VFIO_DS_FLAG_MEM_SET:
            if (end - p < VFIO_DS_MEM_SET_LEN) {
                goto truncated;
            }
            ret = ds_load_set_open(ds, ldl_be_p(p), ldq_be_p(p + 4), errp);
            p += VFIO_DS_MEM_SET_LEN;
            break;
        case VFIO_DS_FLAG_MEM_CHUNK:
            if (end - p < VFIO_DS_MEM_CHUNK_LEN) {
                goto truncated;
            }
            pos = ldq_be_p(p);
            n = ldq_be_p(p + 8);
            p += VFIO_DS_MEM_CHUNK_LEN;
            if (n > end - p) {
                error_setg(errp, "%s: truncated chunk at offset %" PRIu64,
                           ds->name, pos);
                return -EINVAL;
            }
            ret = ds_load_chunk_data(ds, pos, n, NULL, p, errp);
            p += n;
            break;
        default:
            error_setg(errp, "%s: unknown device-state tag 0x%" PRIx64,
                       ds->name, tag);
            return -EINVAL;
        }
        if (ret) {
            return ret;
        }
    }
truncated:
    error_setg(errp, "%s: truncated multifd device state buffer", ds->name);
    return -EINVAL;
}

/* Load the records of @f up to END_OF_STATE. */
int vfio_ds_load_records(QEMUFile *f, VFIODevstate *ds, VFIODevstateInput in,
                         Error **errp)
{
    const char *name = ds->name;
    int ret = 0;

    while (!ret) {
        uint64_t tag = qemu_get_be64(f);

        ret = qemu_file_get_error(f);
        if (ret) {
            error_setg_errno(errp, -ret, "%s: truncated device-state %s",
                             name, in == VFIO_DS_IN_MAIN ? "section" :
                             "buffer");
            return ret;
        }
        trace_vfio_ds_load_tag(name, tag);
        if (tag == VFIO_MIG_FLAG_END_OF_STATE) {
            return 0;
        }
        if (tag == VFIO_MIG_FLAG_DEV_CONFIG_LOAD_READY &&
            in == VFIO_DS_IN_MAIN) {
            /* Lets the load thread load the config (it reports errors). */
            ret = vfio_load_state_config_load_ready(ds->vbasedev);
            if (ret) {
                error_setg(errp, "%s: unexpected DEV_CONFIG_LOAD_READY",
                           name);
            }
            return ret;
        }
        ret = ds_check_record(ds, in, tag, errp);
        if (ret) {
            return ret;
        }
        switch (tag) {
        case VFIO_DS_FLAG_HEADER:
            ret = ds_load_header(f, ds, errp);
            break;
        case VFIO_DS_FLAG_MEM_SET:
            ret = ds_load_set(f, ds, errp);
            break;
        case VFIO_DS_FLAG_MEM_CHUNK:
            ret = ds_load_chunk(f, ds, errp);
            break;
        case VFIO_DS_FLAG_DEV_CONFIG:
            ret = ds_load_config(f, ds, errp);
            break;
        case VFIO_DS_FLAG_PCI_CONFIG:
            ret = ds_load_pci_config(f, ds, errp);
            break;
        default:
            error_setg(errp, "%s: unknown device-state tag 0x%" PRIx64, name,
                       tag);
            ret = -EINVAL;
        }
    }
    return ret;
}

/*
 * The last multifd buffer, read through @f: the device config and the PCI
 * config up to its END_OF_STATE, which must end the buffer and complete
 * the device state.
 */
int vfio_ds_load_config_buffer(QEMUFile *f, VFIODevstate *ds, Error **errp)
{
    int ret = vfio_ds_load_records(f, ds, VFIO_DS_IN_MULTIFD_CONFIG, errp);

    if (ret) {
        return ret;
    }
    qemu_get_byte(f);
    if (!qemu_file_get_error(f)) {
        error_setg(errp, "%s: data after the end of a multifd device state "
                   "buffer", ds->name);
        return -EINVAL;
    }
    if (!ds->load_done) {
        error_setg(errp, "%s: the last multifd device state buffer did not "
                   "complete the device state", ds->name);
        return -EINVAL;
    }
    return 0;
}

int vfio_ds_load_state(QEMUFile *f, void *opaque, int version_id)
{
    VFIODevstate *ds = vfio_ds_of(opaque);
    Error *err = NULL;
    int ret;

    if (version_id != 1) {
        error_setg(&err, "%s: device-state section version %d, expected 1",
                   ds->name, version_id);
        qemu_file_set_error_obj(f, -EINVAL, err);
        return -EINVAL;
    }
    ret = vfio_ds_load_records(f, ds, VFIO_DS_IN_MAIN, &err);
    if (!ret) {
        return 0;
    }
    if (!err) {
        /* qemu_loadvm_approve_switchover() failed */
        error_setg_errno(&err, -ret, "%s: cannot approve the switchover",
                         ds->name);
    }
    /* The core reports it with the failed migration (query-migrate). */
    qemu_file_set_error_obj(f, ret, err);
    return ret;
}

bool vfio_ds_switchover_ack_needed(void *opaque)
{
    /* The destination acknowledges once it accepted the header. */
    return true;
}
