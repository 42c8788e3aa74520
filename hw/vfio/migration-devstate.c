/*
 * VFIO migration through device-state regions: region access, the
 * device's state, the dirty bitmap and the probe
 *
 * A device that has no VFIO_DEVICE_FEATURE_MIGRATION but offers the
 * device-state regions (a control region, a config data region, and
 * optionally a device-memory data region, a system-memory dirty bitmap
 * region and a migration_version region; see linux-headers/linux/vfio.h)
 * is migrated through them.  Every access goes through the device's
 * region I/O operations, so kernel vfio-pci and vfio-user-pci devices
 * share this code.
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 */

#include "qemu/osdep.h"
#include "qemu/error-report.h"
#include "qemu/units.h"
#include "qemu/timer.h"
#include <linux/vfio.h>
#include <sys/mman.h>
#include "system/runstate.h"
#include "hw/pci/pci_device.h"
#include "hw/vfio/vfio-device.h"
#include "migration/misc.h"
#include "migration/savevm.h"
#include "migration/qemu-file.h"
#include "migration/register.h"
#include "migration/options.h"
#include "qapi/error.h"
#include "vfio-migration-internal.h"
#include "vfio-helpers.h"
#include "migration-devstate.h"
#include "migration-multifd.h"
#include "trace.h"

/* The uAPI struct is naturally aligned; check its layout. */
QEMU_BUILD_BUG_ON(sizeof(struct vfio_device_state_ctl) != 88);
QEMU_BUILD_BUG_ON(offsetof(struct vfio_device_state_ctl, device_config) != 16);
QEMU_BUILD_BUG_ON(offsetof(struct vfio_device_state_ctl, device_memory) != 32);
QEMU_BUILD_BUG_ON(offsetof(struct vfio_device_state_ctl,
                           device_memory.pending) != 56);
QEMU_BUILD_BUG_ON(offsetof(struct vfio_device_state_ctl, system_memory) != 64);
QEMU_BUILD_BUG_ON(offsetof(struct vfio_device_state_ctl,
                           system_memory.page_shift) != 84);

const char *vfio_ds_state_str(uint32_t state)
{
    switch (state) {
    case VFIO_DEVICE_DATA_STATE_RUNNING:
        return "RUNNING";
    case VFIO_DEVICE_DATA_STATE_STOP:
        return "STOP";
    case DS_STATE_RUNNING_LOGGING:
        return "RUNNING|LOGGING";
    case DS_STATE_STOP_LOGGING:
        return "STOP|LOGGING";
    case VFIO_DEVICE_DATA_STATE_P2P:
        return "P2P";
    case DS_STATE_P2P_LOGGING:
        return "P2P|LOGGING";
    default:
        return "INVALID";
    }
}

/* The six states of the interface (section 3); P2P only with CAP_P2P. */
static bool ds_state_valid(VFIODevstate *ds, uint32_t state)
{
    if (state & ~VFIO_DEVICE_DATA_STATE_MASK) {
        return false;
    }
    if (state & VFIO_DEVICE_DATA_STATE_P2P) {
        return (ds->caps & VFIO_DEVICE_DATA_CAP_P2P) &&
               !(state & VFIO_DEVICE_DATA_STATE_STOP);
    }
    return true;
}

/* ---------------------------------------------------------------------- */
/* Region access */

static int ds_ctl_read(VFIODevstate *ds, off_t off, const char *field,
                       void *val, uint32_t size, Error **errp)
{
    VFIODevice *vbasedev = ds->vbasedev;
    int ret;

    ret = vbasedev->io_ops->region_read(vbasedev, ds->ctl.nr, off, size, val);
    if (ret != size) {
        error_setg_errno(errp, ret < 0 ? -ret : EIO,
                         "%s: failed to read device-state %s", ds->name,
                         field);
        return ret < 0 ? ret : -EIO;
    }
    return 0;
}

int vfio_ds_ctl_read32(VFIODevstate *ds, off_t off, const char *field,
                       uint32_t *val, Error **errp)
{
    uint32_t le;
    int ret = ds_ctl_read(ds, off, field, &le, sizeof(le), errp);

    *val = le32_to_cpu(le);
    trace_vfio_ds_ctl_read(ds->name, field, ret ? -1 : *val);
    return ret;
}

int vfio_ds_ctl_read64(VFIODevstate *ds, off_t off, const char *field,
                       uint64_t *val, Error **errp)
{
    uint64_t le;
    int ret = ds_ctl_read(ds, off, field, &le, sizeof(le), errp);

    *val = le64_to_cpu(le);
    trace_vfio_ds_ctl_read(ds->name, field, ret ? -1 : *val);
    return ret;
}

static int ds_ctl_write(VFIODevstate *ds, off_t off, const char *field,
                        uint64_t val, uint32_t size, Error **errp)
{
    VFIODevice *vbasedev = ds->vbasedev;
    uint64_t le64 = cpu_to_le64(val);
    uint32_t le32 = cpu_to_le32(val);
    int ret;

    trace_vfio_ds_ctl_write(ds->name, field, val);
    ret = vbasedev->io_ops->region_write(vbasedev, ds->ctl.nr, off, size,
                                         size == 8 ? (void *)&le64 : &le32,
                                         false);
    if (ret != size) {
        error_setg_errno(errp, ret < 0 ? -ret : EIO,
                         "%s: device refused write of 0x%" PRIx64
                         " to device-state %s", ds->name, val, field);
        return ret < 0 ? ret : -EIO;
    }
    return 0;
}

int vfio_ds_ctl_write32(VFIODevstate *ds, off_t off, const char *field,
                        uint32_t val, Error **errp)
{
    return ds_ctl_write(ds, off, field, val, 4, errp);
}

int vfio_ds_ctl_write64(VFIODevstate *ds, off_t off, const char *field,
                        uint64_t val, Error **errp)
{
    return ds_ctl_write(ds, off, field, val, 8, errp);
}

/* Move @len bytes at @off of a data region from/to @buf. */
int vfio_ds_region_rw(VFIODevstate *ds, VFIODevstateRegion *r, uint64_t off,
                      void *buf, uint64_t len, bool write, Error **errp)
{
    VFIODevice *vbasedev = ds->vbasedev;
    uint64_t done = 0;

    assert(off <= r->size && len <= r->size - off);
    if (r->mmap) {
        if (write) {
            memcpy((uint8_t *)r->mmap + off, buf, len);
        } else {
            memcpy(buf, (uint8_t *)r->mmap + off, len);
        }
        return 0;
    }
    while (done < len) {
        uint64_t max = vbasedev->region_max_xfer ?: len;
        uint32_t n = MIN(MIN(len - done, max), UINT32_MAX & ~0xfffULL);
        int ret;

        if (write) {
            ret = vbasedev->io_ops->region_write(vbasedev, r->nr, off + done,
                                                 n, (uint8_t *)buf + done,
                                                 false);
        } else {
            ret = vbasedev->io_ops->region_read(vbasedev, r->nr, off + done,
                                                n, (uint8_t *)buf + done);
        }
        if (ret <= 0) {
            error_setg_errno(errp, ret < 0 ? -ret : EIO,
                             "%s: failed to %s %u bytes at 0x%" PRIx64
                             " of the device-state %s region", ds->name,
                             write ? "write" : "read", n, off + done, r->name);
            return ret < 0 ? ret : -EIO;
        }
        done += ret;
    }
    return 0;
}

/* ---------------------------------------------------------------------- */
/* Device state */

/*
 * Mirror the device's state in VFIOMigration::device_state, in the terms
 * of the v2 FSM, so that the rest of VFIO (and the VFIO_MIGRATION QMP
 * events of x-migration-events) sees it as it sees a v2 device's.
 */
static void ds_state_changed(VFIODevstate *ds, uint32_t state)
{
    static const enum vfio_device_mig_state v2[] = {
        [VFIO_DEVICE_DATA_STATE_RUNNING] = VFIO_DEVICE_STATE_RUNNING,
        [DS_STATE_RUNNING_LOGGING] = VFIO_DEVICE_STATE_PRE_COPY,
        [VFIO_DEVICE_DATA_STATE_P2P] = VFIO_DEVICE_STATE_RUNNING_P2P,
        [DS_STATE_P2P_LOGGING] = VFIO_DEVICE_STATE_PRE_COPY_P2P,
        [VFIO_DEVICE_DATA_STATE_STOP] = VFIO_DEVICE_STATE_STOP,
        [DS_STATE_STOP_LOGGING] = VFIO_DEVICE_STATE_STOP_COPY,
    };

    assert(state < ARRAY_SIZE(v2));
    ds->state = state;
    if (ds->vbasedev->migration) {     /* not while probing */
        vfio_migration_set_device_state(ds->vbasedev, v2[state]);
    }
}

int vfio_ds_set_state(VFIODevstate *ds, uint32_t new, Error **errp)
{
    uint32_t old = ds->state, real;
    int ret;

    if (new == old) {
        return 0;
    }
    trace_vfio_ds_set_state(ds->name, vfio_ds_state_str(old),
                            vfio_ds_state_str(new));
    ret = CTL_WRITE32(ds, device_state, new, errp);
    if (!ret) {
        ds_state_changed(ds, new);
        return 0;
    }
    error_prepend(errp, "%s -> %s: ", vfio_ds_state_str(old),
                  vfio_ds_state_str(new));
    /* The device reports the state it is really in (or nothing at all). */
    if (!CTL_READ32(ds, device_state, &real, NULL) &&
        ds_state_valid(ds, real)) {
        ds_state_changed(ds, real);
    }
    return ret;
}

int vfio_ds_set_logging(VFIODevstate *ds, bool on, Error **errp)
{
    uint32_t new = on ? ds->state | VFIO_DEVICE_DATA_STATE_LOGGING :
                        ds->state & ~VFIO_DEVICE_DATA_STATE_LOGGING;

    /*
     * A VM that is not running (started with -S, paused, savevm) does not
     * stop at the switchover: a session on its behalf starts stopped.
     */
    if (on && !runstate_is_running()) {
        new |= VFIO_DEVICE_DATA_STATE_STOP;
    }

    if (!on) {
        /* Ending the session discards any data set that was open. */
        ds->set_open = false;
    }
    return vfio_ds_set_state(ds, new, errp);
}

static void ds_vmstate_set(VFIODevice *vbasedev, uint32_t new, bool running,
                           RunState state)
{
    VFIODevstate *ds = vfio_ds_of(vbasedev);
    Error *local_err = NULL;
    int ret;

    trace_vfio_ds_vmstate_change(ds->name, running, RunState_str(state),
                                 vfio_ds_state_str(new));
    ret = vfio_ds_set_state(ds, new, &local_err);
    if (ret && state == RUN_STATE_FINISH_MIGRATE) {
        /* vm_state_notify() cannot fail; fail the migration instead. */
        error_report_err(error_copy(local_err));
        migration_file_set_error(ret, local_err);
    } else if (ret) {
        /* Not in a migration (at shutdown, the migration object is gone) */
        error_report_err(local_err);
    }
}

/*
 * A VM whose incoming stream lacked part of this device's state (a
 * section of it cut out, the end never reached) must not run: the core
 * cannot tell, since it does not know which sections to expect.
 */
static bool ds_refuse_start(VFIODevstate *ds, bool running)
{
    if (!running || !(ds->load_failed || (ds->incoming && !ds->load_done))) {
        return false;
    }
    error_report("%s: the incoming migration did not carry all of the "
                 "device's state; the VM is stopped", ds->name);
    qemu_system_vmstop_request_prepare();
    qemu_system_vmstop_request(RUN_STATE_INTERNAL_ERROR);
    return true;
}

/*
 * With CAP_P2P every device of the VM goes through P2P first (this runs
 * for all of them before vfio_ds_vmstate_change runs for any), so
 * that no device is stopped while a peer may still write to it.
 */
static void vfio_ds_vmstate_prepare(void *opaque, bool running,
                                    RunState state)
{
    VFIODevice *vbasedev = opaque;
    VFIODevstate *ds = vfio_ds_of(vbasedev);

    if (ds_refuse_start(ds, running)) {
        return;
    }
    /* Only between stopped and running: not at the first start, say. */
    if (running != !!(ds->state & VFIO_DEVICE_DATA_STATE_STOP)) {
        return;
    }
    ds_vmstate_set(vbasedev, (ds->state & VFIO_DEVICE_DATA_STATE_LOGGING) |
                   VFIO_DEVICE_DATA_STATE_P2P, running, state);
}

static void vfio_ds_vmstate_change(void *opaque, bool running,
                                   RunState state)
{
    VFIODevice *vbasedev = opaque;
    VFIODevstate *ds = vfio_ds_of(vbasedev);

    if (ds_refuse_start(ds, running)) {
        return;
    }
    ds_vmstate_set(vbasedev, (ds->state & VFIO_DEVICE_DATA_STATE_LOGGING) |
                   (running ? 0 : VFIO_DEVICE_DATA_STATE_STOP), running,
                   state);
}

/* The migration failed while the VM ran: end the session. */
static void vfio_ds_precopy_failed(VFIODevice *vbasedev)
{
    VFIODevstate *ds = vfio_ds_of(vbasedev);
    Error *local_err = NULL;

    if (vfio_ds_set_logging(ds, false, &local_err)) {
        error_report_err(local_err);
    }
}

/*
 * The device was reset, which puts it back in RUNNING and ends any
 * logging session: follow it, and fail a migration that relied on the
 * session, whose dirty tracking is lost.
 */
static void vfio_ds_reset(VFIODevice *vbasedev)
{
    VFIODevstate *ds = vfio_ds_of(vbasedev);
    Error *err = NULL;
    uint32_t real;

    if (CTL_READ32(ds, device_state, &real, &err)) {
        error_report_err(err);
        return;
    }
    trace_vfio_ds_reset(ds->name, vfio_ds_state_str(ds->state),
                        vfio_ds_state_str(real));
    if ((ds->state & VFIO_DEVICE_DATA_STATE_LOGGING) &&
        !(real & VFIO_DEVICE_DATA_STATE_LOGGING)) {
        error_setg(&err, "%s: device was reset during migration; its "
                   "dirty tracking is lost", ds->name);
        migration_file_set_error(-EIO, err);
    }
    ds_state_changed(ds, ds_state_valid(ds, real) ? real :
                                              VFIO_DEVICE_DATA_STATE_RUNNING);
    ds->set_open = false;
}

/* ---------------------------------------------------------------------- */
/* System-memory dirty bitmap */

/*
 * OR the device's dirty bits of [@iova, @iova + @size) into @bitmap, one
 * bit per host page from @iova.  A device without CAP_SYSTEM_MEMORY has
 * declared that it never writes guest memory: it adds nothing.  The bits
 * are those of the logging session, which the save side opens (in
 * save_setup, before any page is sent: until then every page counts as
 * dirty) and closes; outside it there is nothing to report.
 */
static int vfio_ds_query_dirty_bitmap(VFIODevice *vbasedev, hwaddr iova,
                                      hwaddr size, unsigned long *bitmap,
                                      Error **errp)
{
    VFIODevstate *ds = vfio_ds_of(vbasedev);
    uint64_t first = iova >> ds->page_shift;
    uint64_t pages = DIV_ROUND_UP(size, 1ULL << ds->page_shift);
    uint64_t capacity = ds->bitmap.size * BITS_PER_BYTE;
    uint64_t done = 0;
    g_autofree uint64_t *words = NULL;
    int ret;

    if (!(ds->caps & VFIO_DEVICE_DATA_CAP_SYSTEM_MEMORY) ||
        !(ds->state & VFIO_DEVICE_DATA_STATE_LOGGING)) {
        return 0;
    }
    words = g_malloc(ds->bitmap.size);
    while (done < pages) {
        uint64_t nr = MIN(pages - done, capacity);
        uint64_t nwords = DIV_ROUND_UP(nr, 64), i;

        trace_vfio_ds_bitmap_query(ds->name, first + done, nr);
        ret = CTL_WRITE64(ds, system_memory.start_pfn, first + done, errp);
        ret = ret ?: CTL_WRITE64(ds, system_memory.page_nr, nr, errp);
        ret = ret ?: CTL_WRITE32(ds, system_memory.action,
                                 VFIO_DEVICE_DATA_ACTION_GET_BITMAP, errp);
        ret = ret ?: vfio_ds_region_rw(ds, &ds->bitmap, 0, words, nwords * 8,
                                       false, errp);
        if (ret) {
            return ret;
        }
        if (nr % 64) {
            /* Bits past page_nr are the device's garbage, not ours. */
            words[nwords - 1] &= cpu_to_le64((1ULL << (nr % 64)) - 1);
        }
        /*
         * @bitmap is little-endian, as physical_memory_set_dirty_lebitmap()
         * wants it, and so are the device's words: OR them in unconverted.
         * done is a multiple of capacity, itself a multiple of 64.
         */
        for (i = 0; i < nwords; i++) {
            uint8_t *p = (uint8_t *)bitmap + (done + i * 64) / BITS_PER_BYTE;

            if (words[i]) {
                stq_he_p(p, ldq_he_p(p) | words[i]);
            }
        }
        done += nr;
    }
    trace_vfio_ds_bitmap_query_done(ds->name, first, pages);
    return 0;
}

/* ---------------------------------------------------------------------- */
/* Probe */

/* Whether a region must be there, must not be there, or may be there. */
typedef enum {
    DS_REGION_ABSENT,
    DS_REGION_REQUIRED,
    DS_REGION_OPTIONAL,
} DSRegionPresence;

static int ds_find_region(VFIODevstate *ds, VFIODevstateRegion *r,
                          uint32_t subtype, const char *name,
                          DSRegionPresence presence, Error **errp)
{
    VFIODevice *vbasedev = ds->vbasedev;
    struct vfio_region_info *info;
    int ret;

    r->name = name;
    ret = vfio_device_get_region_info_type(vbasedev,
                                           VFIO_REGION_TYPE_DEVICE_STATE,
                                           subtype, &info);
    if (ret) {
        if (presence == DS_REGION_REQUIRED) {
            error_setg(errp, "%s: device-state %s region is missing",
                       ds->name, name);
            return -ENODEV;
        }
        return 0;
    }
    if (presence == DS_REGION_ABSENT) {
        error_setg(errp, "%s: device has a device-state %s region but not "
                   "the capability that goes with it", ds->name, name);
        return -EINVAL;
    }
    if ((info->flags & (VFIO_REGION_INFO_FLAG_READ |
                        VFIO_REGION_INFO_FLAG_WRITE)) !=
        (VFIO_REGION_INFO_FLAG_READ | VFIO_REGION_INFO_FLAG_WRITE)) {
        error_setg(errp, "%s: device-state %s region is not readable and "
                   "writable", ds->name, name);
        return -EINVAL;
    }
    if (info->size == 0 || info->size > VFIO_DS_MAX_REGION_SIZE) {
        error_setg(errp, "%s: device-state %s region size 0x%llx is out of "
                   "range (1 byte to %u MiB)", ds->name, name,
                   (unsigned long long)info->size,
                   (unsigned)(VFIO_DS_MAX_REGION_SIZE / MiB));
        return -EINVAL;
    }
    r->nr = info->index;
    r->size = info->size;
    trace_vfio_ds_region(ds->name, name, r->nr, r->size, info->flags);
    return 1;
}

/* mmap a data region when the device offers the whole of it. */
static void ds_mmap_region(VFIODevstate *ds, VFIODevstateRegion *r)
{
    VFIODevice *vbasedev = ds->vbasedev;
    struct vfio_region_info *info;
    struct vfio_info_cap_header *hdr;
    void *p;
    int fd;

    if (!r->size || vbasedev->no_mmap ||
        vfio_device_get_region_info(vbasedev, r->nr, &info) ||
        !(info->flags & VFIO_REGION_INFO_FLAG_MMAP)) {
        return;
    }
    hdr = vfio_get_region_info_cap(info, VFIO_REGION_INFO_CAP_SPARSE_MMAP);
    if (hdr) {
        struct vfio_region_info_cap_sparse_mmap *sparse =
            container_of(hdr, struct vfio_region_info_cap_sparse_mmap, header);

        if (sparse->nr_areas != 1 || sparse->areas[0].offset != 0 ||
            sparse->areas[0].size < r->size) {
            return;
        }
    }
    fd = vfio_device_get_region_fd(vbasedev, r->nr);
    p = mmap(NULL, r->size, PROT_READ | PROT_WRITE, MAP_SHARED, fd,
             info->offset);
    if (p == MAP_FAILED) {
        warn_report("%s: cannot mmap device-state %s region, using "
                    "read/write: %s", ds->name, r->name,
                    strerror(errno));
        return;
    }
    r->mmap = p;
    trace_vfio_ds_region_mmap(ds->name, r->name, r->size);
}

static int ds_read_version(VFIODevstate *ds, Error **errp)
{
    size_t len = MIN(ds->version.size, sizeof(ds->version_str));
    size_t i;
    int ret;

    ret = vfio_ds_region_rw(ds, &ds->version, 0, ds->version_str, len, false,
                            errp);
    if (ret) {
        return ret;
    }
    for (i = 0; i < len && ds->version_str[i]; i++) {
        if (!g_ascii_isprint(ds->version_str[i])) {
            break;
        }
    }
    if (i == 0 || i == len || ds->version_str[i]) {
        error_setg(errp, "%s: device-state migration_version is not a "
                   "printable NUL-terminated string", ds->name);
        return -EINVAL;
    }
    return 0;
}

/*
 * The bounce buffer, for data regions that are not mmapped, lives only
 * while a migration needs it.
 */
void vfio_ds_bounce_alloc(VFIODevstate *ds)
{
    size_t size = MAX(ds->config.mmap ? 0 : ds->config.size,
                      ds->memory.mmap ? 0 : ds->memory.size);

    g_free(ds->bounce);
    ds->bounce = size ? g_malloc(size) : NULL;
    ds->bounce_size = size;
}

void vfio_ds_bounce_free(VFIODevstate *ds)
{
    g_free(ds->bounce);
    ds->bounce = NULL;
    ds->bounce_size = 0;
}

static void ds_free(VFIODevstate *ds)
{
    VFIODevstateRegion *regions[] = { &ds->config, &ds->memory, &ds->bitmap };
    int i;

    for (i = 0; i < ARRAY_SIZE(regions); i++) {
        if (regions[i]->mmap) {
            munmap(regions[i]->mmap, regions[i]->size);
        }
    }
    error_free(ds->save_err);
    g_free(ds->bounce);
    g_free(ds->name);
    g_free(ds);
}

G_DEFINE_AUTOPTR_CLEANUP_FUNC(VFIODevstate, ds_free)

static void vfio_ds_free(void *opaque)
{
    ds_free(opaque);
}

/*
 * Messages name the device as the user knows it: its qdev id and its
 * PCI address (the vfio-user socket path means little to a user).
 */
static char *ds_make_name(VFIODevice *vbasedev)
{
    DeviceState *dev = vbasedev->dev;
    g_autofree char *path = dev ? qdev_get_dev_path(dev) : NULL;

    if (!path) {
        return g_strdup(vbasedev->name);
    }
    if (dev->id) {
        return g_strdup_printf("%s (%s)", dev->id, path);
    }
    return g_steal_pointer(&path);
}

static int vfio_ds_probe(VFIODevice *vbasedev, uint64_t *mig_flags,
                         void **opaque, Error **errp)
{
    g_autoptr(VFIODevstate) ds = g_new0(VFIODevstate, 1);
    uint32_t version, reserved, state;
    bool devmem, sysmem;
    int ret;

    ds->vbasedev = vbasedev;
    ds->name = ds_make_name(vbasedev);
    ret = ds_find_region(ds, &ds->ctl, VFIO_REGION_SUBTYPE_DEVICE_STATE_CTL,
                         "control", DS_REGION_OPTIONAL, errp);
    if (ret <= 0) {
        return ret ?: -ENOTTY;  /* no device-state interface, or broken */
    }
    if (ds->ctl.size < sizeof(struct vfio_device_state_ctl)) {
        error_setg(errp, "%s: device-state control region is %" PRIu64
                   " bytes, the interface needs %zu", ds->name,
                   ds->ctl.size, sizeof(struct vfio_device_state_ctl));
        return -EINVAL;
    }
    if (CTL_READ32(ds, version, &version, errp) ||
        CTL_READ32(ds, caps, &ds->caps, errp) ||
        CTL_READ32(ds, reserved, &reserved, errp) ||
        CTL_READ32(ds, device_state, &state, errp)) {
        return -EIO;
    }
    if (version != VFIO_DEVICE_DATA_INTERFACE_VERSION) {
        error_setg(errp, "%s: device-state interface version %u, QEMU "
                   "supports %u", ds->name, version,
                   VFIO_DEVICE_DATA_INTERFACE_VERSION);
        return -EINVAL;
    }
    if (ds->caps & ~DS_CAPS_KNOWN) {
        error_setg(errp, "%s: device-state caps 0x%x has unknown bits",
                   ds->name, ds->caps);
        return -EINVAL;
    }
    if (state != VFIO_DEVICE_DATA_STATE_RUNNING) {
        error_setg(errp, "%s: device-state device_state is %s (0x%x) at "
                   "realize, expected RUNNING", ds->name,
                   vfio_ds_state_str(state), state);
        return -EINVAL;
    }
    ds->state = state;
    devmem = ds->caps & VFIO_DEVICE_DATA_CAP_DEVICE_MEMORY;
    sysmem = ds->caps & VFIO_DEVICE_DATA_CAP_SYSTEM_MEMORY;

    if (ds_find_region(ds, &ds->config,
                       VFIO_REGION_SUBTYPE_DEVICE_STATE_DATA_CONFIG,
                       "config", DS_REGION_REQUIRED, errp) < 0 ||
        ds_find_region(ds, &ds->memory,
                       VFIO_REGION_SUBTYPE_DEVICE_STATE_DATA_MEMORY,
                       "device-memory",
                       devmem ? DS_REGION_REQUIRED : DS_REGION_ABSENT,
                       errp) < 0 ||
        ds_find_region(ds, &ds->bitmap,
                       VFIO_REGION_SUBTYPE_DEVICE_STATE_DATA_DIRTYBITMAP,
                       "dirty-bitmap",
                       sysmem ? DS_REGION_REQUIRED : DS_REGION_ABSENT,
                       errp) < 0 ||
        ds_find_region(ds, &ds->version,
                       VFIO_REGION_SUBTYPE_DEVICE_STATE_VERSION,
                       "migration_version", DS_REGION_OPTIONAL, errp) < 0) {
        return -EINVAL;
    }
    if (sysmem) {
        if (ds->bitmap.size % sizeof(uint64_t)) {
            error_setg(errp, "%s: device-state dirty-bitmap region size "
                       "%" PRIu64 " is not a multiple of 8", ds->name,
                       ds->bitmap.size);
            return -EINVAL;
        }
        if (CTL_READ32(ds, system_memory.page_shift, &ds->page_shift,
                          errp)) {
            return -EIO;
        }
        if (ds->page_shift != ctz64(qemu_real_host_page_size())) {
            error_setg(errp, "%s: device-state page_shift %u does not match "
                       "the host page size %zu", ds->name,
                       ds->page_shift, qemu_real_host_page_size());
            return -EINVAL;
        }
    }
    if (ds->version.size && ds_read_version(ds, errp)) {
        return -EINVAL;
    }

    ds_mmap_region(ds, &ds->config);
    ds_mmap_region(ds, &ds->memory);
    ds_mmap_region(ds, &ds->bitmap);

    trace_vfio_ds_probe(ds->name, ds->caps, ds->config.size,
                        ds->memory.size, ds->bitmap.size, ds->version_str);
    /*
     * Only a device with a P2P state lets the VM have several migratable
     * devices (the rule of vfio_multiple_devices_migration_is_supported).
     */
    *mig_flags = VFIO_MIGRATION_STOP_COPY |
                 (ds->caps & VFIO_DEVICE_DATA_CAP_P2P ? VFIO_MIGRATION_P2P : 0);
    *opaque = g_steal_pointer(&ds);
    return 0;
}

static const SaveVMHandlers vfio_ds_savevm_handlers = {
    .save_prepare = vfio_ds_save_prepare,
    .save_setup = vfio_ds_save_setup,
    .save_cleanup = vfio_ds_save_cleanup,
    .state_pending_estimate = vfio_ds_state_pending_estimate,
    .state_pending_exact = vfio_ds_state_pending_exact,
    .is_active_iterate = vfio_ds_is_active_iterate,
    .save_live_iterate = vfio_ds_save_iterate,
    .save_complete = vfio_ds_save_complete,
    .save_state = vfio_ds_save_state,
    .load_setup = vfio_ds_load_setup,
    .load_cleanup = vfio_ds_load_cleanup,
    .load_state = vfio_ds_load_state,
    .switchover_ack_needed = vfio_ds_switchover_ack_needed,
    .save_complete_precopy_thread = vfio_ds_save_complete_precopy_thread,
    .load_state_buffer = vfio_multifd_load_state_buffer,
    .switchover_start = vfio_ds_switchover_start,
};

const VFIOMigrationOps vfio_devstate_migration_ops = {
    .probe = vfio_ds_probe,
    .free = vfio_ds_free,
    .savevm_handlers = &vfio_ds_savevm_handlers,
    .vmstate_change = vfio_ds_vmstate_change,
    .vmstate_change_prepare = vfio_ds_vmstate_prepare,
    .precopy_failed = vfio_ds_precopy_failed,
    .reset = vfio_ds_reset,
    .query_dirty_bitmap = vfio_ds_query_dirty_bitmap,
    .multifd_load_buffer = vfio_ds_multifd_load_buffer,
};

