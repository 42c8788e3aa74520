/*
 * VFIO migration through device-state regions
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

/* Control-region accesses by field name, e.g. CTL_READ32(ds, caps, &v, errp) */
#define CTL_OFF(field) offsetof(struct vfio_device_state_ctl, field)
#define CTL_READ32(ds, field, val, errp) \
    ds_ctl_read32(ds, CTL_OFF(field), #field, val, errp)
#define CTL_READ64(ds, field, val, errp) \
    ds_ctl_read64(ds, CTL_OFF(field), #field, val, errp)
#define CTL_WRITE32(ds, field, val, errp) \
    ds_ctl_write32(ds, CTL_OFF(field), #field, val, errp)
#define CTL_WRITE64(ds, field, val, errp) \
    ds_ctl_write64(ds, CTL_OFF(field), #field, val, errp)

#define DS_STATE_RUNNING_LOGGING VFIO_DEVICE_DATA_STATE_LOGGING
#define DS_STATE_STOP_LOGGING    (VFIO_DEVICE_DATA_STATE_STOP | \
                                  VFIO_DEVICE_DATA_STATE_LOGGING)
#define DS_STATE_P2P_LOGGING     (VFIO_DEVICE_DATA_STATE_P2P | \
                                  VFIO_DEVICE_DATA_STATE_LOGGING)
#define DS_CAPS_KNOWN            (VFIO_DEVICE_DATA_CAP_DEVICE_MEMORY | \
                                  VFIO_DEVICE_DATA_CAP_SYSTEM_MEMORY | \
                                  VFIO_DEVICE_DATA_CAP_P2P)

/* Bounds of one precopy iteration (review R50). */
#define VFIO_DS_ITER_MAX_BYTES   (256 * MiB)
#define VFIO_DS_ITER_MAX_NS      (100 * SCALE_MS)

typedef struct VFIODevstateRegion {
    const char *name;
    uint8_t nr;
    uint64_t size;
    void *mmap;
} VFIODevstateRegion;

struct VFIODevstate {
    VFIODevice *vbasedev;
    char *name;                 /* for messages: qdev id and PCI address */
    uint32_t caps;
    uint32_t state;
    uint32_t page_shift;
    VFIODevstateRegion ctl, config, memory, bitmap, version;
    char version_str[VFIO_DEVICE_DATA_VERSION_MAX];
    uint8_t *bounce;            /* for data regions that are not mmapped */
    size_t bounce_size;

    /* Save side: the data set being sent, if any. */
    bool put_pending;           /* the stream still points into a buffer */
    bool set_open;
    uint64_t set_size;
    uint64_t set_pos;
    uint64_t last_set_size;
    bool first_set_read;        /* the session's first set was opened */
    uint64_t first_set_size;    /* of this logging session: the bound */
    uint64_t dev_pending;       /* device_memory.pending, last read */
    uint32_t sets_sent;
    Error *save_err;

    /* Load side. */
    bool incoming;              /* loading, until the VM starts */
    bool load_failed;           /* the last incoming load was incomplete */
    bool header_loaded;
    uint32_t load_sets;         /* data sets received */
    bool load_config_done;      /* the device accepted a DEV_CONFIG */
    bool load_done;
    uint64_t src_memory_region_size;
    bool load_set_open;
    uint64_t load_set_size;
    uint64_t load_pos;          /* bytes of the set received */
    uint64_t load_dev_pos;      /* bytes of the set handed to the device */
};

static const char *ds_state_str(uint32_t state)
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

static VFIODevstate *ds_of(VFIODevice *vbasedev)
{
    return vbasedev->migration ? vbasedev->migration->devstate : NULL;
}

bool vfio_devstate_device(VFIODevice *vbasedev)
{
    return ds_of(vbasedev) != NULL;
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

static int ds_ctl_read32(VFIODevstate *ds, off_t off, const char *field,
                         uint32_t *val, Error **errp)
{
    uint32_t le;
    int ret = ds_ctl_read(ds, off, field, &le, sizeof(le), errp);

    *val = le32_to_cpu(le);
    trace_vfio_ds_ctl_read(ds->name, field, ret ? -1 : *val);
    return ret;
}

static int ds_ctl_read64(VFIODevstate *ds, off_t off, const char *field,
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

static int ds_ctl_write32(VFIODevstate *ds, off_t off, const char *field,
                          uint32_t val, Error **errp)
{
    return ds_ctl_write(ds, off, field, val, 4, errp);
}

static int ds_ctl_write64(VFIODevstate *ds, off_t off, const char *field,
                          uint64_t val, Error **errp)
{
    return ds_ctl_write(ds, off, field, val, 8, errp);
}

/* Move @len bytes at @off of a data region from/to @buf. */
static int ds_region_rw(VFIODevstate *ds, VFIODevstateRegion *r, uint64_t off,
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
    if (ds->vbasedev->migration && ds->vbasedev->migration->devstate) {
        vfio_migration_set_device_state(ds->vbasedev, v2[state]);
    }
}

static int ds_set_state(VFIODevstate *ds, uint32_t new, Error **errp)
{
    uint32_t old = ds->state, real;
    int ret;

    if (new == old) {
        return 0;
    }
    trace_vfio_ds_set_state(ds->name, ds_state_str(old),
                            ds_state_str(new));
    ret = CTL_WRITE32(ds, device_state, new, errp);
    if (!ret) {
        ds_state_changed(ds, new);
        return 0;
    }
    error_prepend(errp, "%s -> %s: ", ds_state_str(old), ds_state_str(new));
    /* The device reports the state it is really in (or nothing at all). */
    if (!CTL_READ32(ds, device_state, &real, NULL) &&
        ds_state_valid(ds, real)) {
        ds_state_changed(ds, real);
    }
    return ret;
}

static int ds_set_logging(VFIODevstate *ds, bool on, Error **errp)
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
    return ds_set_state(ds, new, errp);
}

static void ds_vmstate_set(VFIODevice *vbasedev, uint32_t new, bool running,
                           RunState state)
{
    VFIODevstate *ds = ds_of(vbasedev);
    Error *local_err = NULL;
    int ret;

    trace_vfio_ds_vmstate_change(ds->name, running, RunState_str(state),
                                 ds_state_str(new));
    ret = ds_set_state(ds, new, &local_err);
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
 * for all of them before vfio_devstate_vmstate_change runs for any), so
 * that no device is stopped while a peer may still write to it.
 */
void vfio_devstate_vmstate_prepare(void *opaque, bool running, RunState state)
{
    VFIODevice *vbasedev = opaque;
    VFIODevstate *ds = ds_of(vbasedev);

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

void vfio_devstate_vmstate_change(void *opaque, bool running, RunState state)
{
    VFIODevice *vbasedev = opaque;
    VFIODevstate *ds = ds_of(vbasedev);

    if (ds_refuse_start(ds, running)) {
        return;
    }
    ds_vmstate_set(vbasedev, (ds->state & VFIO_DEVICE_DATA_STATE_LOGGING) |
                   (running ? 0 : VFIO_DEVICE_DATA_STATE_STOP), running,
                   state);
}

bool vfio_devstate_has_p2p(VFIODevstate *ds)
{
    return ds->caps & VFIO_DEVICE_DATA_CAP_P2P;
}

void vfio_devstate_migration_failed(VFIODevice *vbasedev)
{
    VFIODevstate *ds = ds_of(vbasedev);
    Error *local_err = NULL;

    if (ds_set_logging(ds, false, &local_err)) {
        error_report_err(local_err);
    }
}

/*
 * The device was reset, which puts it back in RUNNING and ends any
 * logging session: follow it, and fail a migration that relied on the
 * session, whose dirty tracking is lost.
 */
void vfio_devstate_reset(VFIODevice *vbasedev)
{
    VFIODevstate *ds = ds_of(vbasedev);
    Error *err = NULL;
    uint32_t real;

    if (CTL_READ32(ds, device_state, &real, &err)) {
        error_report_err(err);
        return;
    }
    trace_vfio_ds_reset(ds->name, ds_state_str(ds->state),
                        ds_state_str(real));
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

int vfio_devstate_logging_start(VFIODevice *vbasedev, Error **errp)
{
    return ds_set_logging(ds_of(vbasedev), true, errp);
}

int vfio_devstate_logging_stop(VFIODevice *vbasedev, Error **errp)
{
    return ds_set_logging(ds_of(vbasedev), false, errp);
}

/*
 * OR the device's dirty bits of [@iova, @iova + @size) into @bitmap, one
 * bit per host page from @iova.  A device without CAP_SYSTEM_MEMORY has
 * declared that it never writes guest memory: it adds nothing.
 */
int vfio_devstate_query_dirty_bitmap(VFIODevice *vbasedev, hwaddr iova,
                                     hwaddr size, unsigned long *bitmap,
                                     Error **errp)
{
    VFIODevstate *ds = ds_of(vbasedev);
    uint64_t first = iova >> ds->page_shift;
    uint64_t pages = DIV_ROUND_UP(size, 1ULL << ds->page_shift);
    uint64_t capacity = ds->bitmap.size * BITS_PER_BYTE;
    uint64_t done = 0;
    g_autofree uint64_t *words = NULL;
    int ret;

    if (!(ds->caps & VFIO_DEVICE_DATA_CAP_SYSTEM_MEMORY)) {
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
        ret = ret ?: ds_region_rw(ds, &ds->bitmap, 0, words, nwords * 8,
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

    ret = ds_region_rw(ds, &ds->version, 0, ds->version_str, len, false, errp);
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
static void ds_bounce_alloc(VFIODevstate *ds)
{
    size_t size = MAX(ds->config.mmap ? 0 : ds->config.size,
                      ds->memory.mmap ? 0 : ds->memory.size);

    g_free(ds->bounce);
    ds->bounce = size ? g_malloc(size) : NULL;
    ds->bounce_size = size;
}

static void ds_bounce_free(VFIODevstate *ds)
{
    g_free(ds->bounce);
    ds->bounce = NULL;
    ds->bounce_size = 0;
}

void vfio_devstate_free(VFIODevstate *ds)
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

G_DEFINE_AUTOPTR_CLEANUP_FUNC(VFIODevstate, vfio_devstate_free)

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

int vfio_devstate_probe(VFIODevice *vbasedev, VFIODevstate **out,
                        Error **errp)
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
        return ret;     /* no device-state interface, or a broken one */
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
                   ds_state_str(state), state);
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
    *out = g_steal_pointer(&ds);
    return 1;
}

/* ---------------------------------------------------------------------- */
/* Save */

static VFIODevstate *ds_opaque(void *opaque)
{
    return ds_of(opaque);
}

static PCIDevice *ds_pci_dev(VFIODevstate *ds)
{
    return (PCIDevice *)object_dynamic_cast(OBJECT(ds->vbasedev->dev),
                                            TYPE_PCI_DEVICE);
}

static void ds_identity(VFIODevstate *ds, uint16_t id[4])
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

static int vfio_ds_save_prepare(void *opaque, Error **errp)
{
    VFIODevice *vbasedev = opaque;
    VFIODevstate *ds = ds_of(vbasedev);

    if (runstate_check(RUN_STATE_SAVE_VM)) {
        return 0;
    }
    if (migrate_postcopy_ram() || migrate_background_snapshot()) {
        error_setg(errp, "%s: device-state migration supports neither "
                   "postcopy nor background snapshot", ds->name);
        return -EOPNOTSUPP;
    }
    if (vbasedev->migration_multifd_transfer == ON_OFF_AUTO_ON) {
        error_setg(errp, "%s: x-migration-multifd-transfer=on is not "
                   "supported by device-state migration", ds->name);
        return -EOPNOTSUPP;
    }
    return 0;
}

static int vfio_ds_save_setup(QEMUFile *f, void *opaque, Error **errp)
{
    VFIODevstate *ds = ds_opaque(opaque);
    size_t vlen = strlen(ds->version_str);
    uint16_t id[4];
    int i, ret;

    ds->set_open = false;
    ds->put_pending = false;
    ds->last_set_size = 0;
    ds->first_set_read = false;
    ds->first_set_size = 0;
    ds->dev_pending = 0;
    ds->sets_sent = 0;
    error_free(ds->save_err);
    ds->save_err = NULL;
    ds_bounce_alloc(ds);

    /* The logging session starts before any data is read (review X2). */
    ret = ds_set_logging(ds, true, errp);
    if (ret) {
        return ret;
    }

    ds_identity(ds, id);
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
     * one may be larger (spec section 5): a device that says otherwise
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

static int ds_save_chunk(QEMUFile *f, VFIODevstate *ds, Error **errp)
{
    uint64_t len = MIN(ds->memory.size, ds->set_size - ds->set_pos);
    void *buf = ds->memory.mmap ?: ds->bounce;
    int ret = ds_put_flush(f, ds);

    if (ret) {
        return ret;
    }

    if (ds->set_pos == 0) {
        qemu_put_be64(f, VFIO_DS_FLAG_MEM_SET);
        qemu_put_be32(f, ds->sets_sent);
        qemu_put_be64(f, ds->set_size);
    }
    /* The device advances its read-only pos itself (spec section 5). */
    ret = CTL_WRITE32(ds, device_memory.action,
                      VFIO_DEVICE_DATA_ACTION_GET_BUFFER, errp);
    if (!ret && !ds->memory.mmap) {
        ret = ds_region_rw(ds, &ds->memory, 0, buf, len, false, errp);
    }
    if (ret) {
        return ret;
    }
    trace_vfio_ds_save_chunk(ds->name, ds->set_pos, len);
    qemu_put_be64(f, VFIO_DS_FLAG_MEM_CHUNK);
    qemu_put_be64(f, ds->set_pos);
    qemu_put_be64(f, len);
    qemu_put_buffer_async(f, buf, len, false);
    ds->put_pending = true;
    vfio_migration_add_bytes_transferred(len);
    ds->set_pos += len;
    if (ds->set_pos == ds->set_size) {
        ds->set_open = false;
    }
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

static void vfio_ds_state_pending_estimate(void *opaque,
                                           uint64_t *must_precopy,
                                           uint64_t *can_postcopy)
{
    VFIODevstate *ds = ds_opaque(opaque);

    if (ds->caps & VFIO_DEVICE_DATA_CAP_DEVICE_MEMORY) {
        ds_pending(ds, must_precopy);
    }
    trace_vfio_ds_state_pending(ds->name, "estimate",
                                *must_precopy);
}

static void vfio_ds_state_pending_exact(void *opaque, uint64_t *must_precopy,
                                        uint64_t *can_postcopy)
{
    VFIODevstate *ds = ds_opaque(opaque);

    if (!(ds->caps & VFIO_DEVICE_DATA_CAP_DEVICE_MEMORY)) {
        return;
    }
    /* The honest figure: what the device has dirtied by now. */
    ds_read_pending(ds);
    ds_pending(ds, must_precopy);
    trace_vfio_ds_state_pending(ds->name, "exact", *must_precopy);
}

static bool vfio_ds_is_active_iterate(void *opaque)
{
    VFIODevstate *ds = ds_opaque(opaque);

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
 * unknown, so the migration cannot complete (spec section 3).  True, with
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
               ds_state_str(real));
    return true;
}

static int vfio_ds_save_iterate(QEMUFile *f, void *opaque)
{
    VFIODevstate *ds = ds_opaque(opaque);
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
    /* Done for now when the device had nothing dirty. */
    return !ds->set_open && ds->last_set_size == 0;
}

/*
 * Drain the device memory of a stopped device: the rest of the open data
 * set, then the set opened in STOP|LOGGING; after that the device may
 * report nothing dirty (spec section 5), or it is broken.
 */
static int ds_save_drain(QEMUFile *f, VFIODevstate *ds, Error **errp)
{
    bool opened_stopped = false;
    int ret;

    while (ds->caps & VFIO_DEVICE_DATA_CAP_DEVICE_MEMORY) {
        if (!ds->set_open) {
            ret = ds_open_set(ds, errp);
            if (ret) {
                return ret;
            }
            if (!ds->set_open) {
                break;
            }
            if (opened_stopped) {
                error_setg(errp, "%s: stopped device still reports %" PRIu64
                           " bytes of dirty device memory after its final "
                           "data set", ds->name, ds->set_size);
                return -EIO;
            }
            opened_stopped = true;
        }
        ret = ds_save_chunk(f, ds, errp);
        if (ret) {
            return ret;
        }
    }
    return ds_put_flush(f, ds);
}

static int vfio_ds_save_complete(QEMUFile *f, void *opaque)
{
    VFIODevstate *ds = ds_opaque(opaque);
    Error *err = NULL;
    uint64_t size;
    int ret = 0;

    if (ds->save_err) {
        return ds_fail(ds, -EIO, error_copy(ds->save_err));
    }
    if (ds_session_lost(ds, &err)) {
        return ds_fail(ds, -EIO, err);
    }
    /* The device is stopped (by the VM stop): drain what it still has. */
    if (!(ds->state & VFIO_DEVICE_DATA_STATE_STOP)) {
        ret = ds_set_state(ds, DS_STATE_STOP_LOGGING, &err);
        if (ret) {
            return ds_fail(ds, ret, err);
        }
    }
    ret = ds_save_drain(f, ds, &err);
    ret = ret ?: CTL_WRITE32(ds, device_config.action,
                             VFIO_DEVICE_DATA_ACTION_GET_BUFFER, &err);
    ret = ret ?: CTL_READ64(ds, device_config.size, &size, &err);
    if (!ret && (size == 0 || size > ds->config.size)) {
        error_setg(&err, "%s: device-state config size %" PRIu64 " is out of "
                   "range (1 to %" PRIu64 ")", ds->name, size,
                   ds->config.size);
        ret = -EINVAL;
    }
    if (!ret && !ds->config.mmap) {
        ret = ds_region_rw(ds, &ds->config, 0, ds->bounce, size, false, &err);
    }
    if (ret) {
        return ds_fail(ds, ret, err);
    }
    trace_vfio_ds_save_config(ds->name, size);
    qemu_put_be64(f, VFIO_DS_FLAG_DEV_CONFIG);
    qemu_put_be32(f, ds->sets_sent);
    qemu_put_be64(f, size);
    qemu_put_buffer(f, ds->config.mmap ?: ds->bounce, size);
    vfio_migration_add_bytes_transferred(size);
    qemu_put_be64(f, VFIO_MIG_FLAG_END_OF_STATE);

    /*
     * The device's state is all out: end the logging session here, where
     * a failure still fails the migration (STOP|LOGGING -> STOP).
     */
    ret = ds_set_logging(ds, false, &err);
    if (ret) {
        return ds_fail(ds, ret, err);
    }
    trace_vfio_ds_save_complete(ds->name, size);
    return qemu_file_get_error(f);
}

/*
 * The PCI config (MSI/MSI-X state) goes in the non-iterable part, as the
 * v2 backend's does, so that the destination restores it after the
 * interrupt controllers it refers to.
 */
static void vfio_ds_save_state(QEMUFile *f, void *opaque)
{
    VFIODevstate *ds = ds_opaque(opaque);
    VFIODevice *vbasedev = ds->vbasedev;
    Error *err = NULL;
    int ret;

    if (vbasedev->ops->vfio_save_config) {
        qemu_put_be64(f, VFIO_DS_FLAG_PCI_CONFIG);
        ret = vbasedev->ops->vfio_save_config(vbasedev, f, &err);
        if (ret) {
            error_prepend(&err, "%s: failed to save PCI config: ",
                          ds->name);
            ds_fail(ds, ret, err);
            qemu_file_set_error(f, ret);
            return;
        }
    }
    qemu_put_be64(f, VFIO_MIG_FLAG_END_OF_STATE);
}

static void vfio_ds_save_cleanup(void *opaque)
{
    VFIODevstate *ds = ds_opaque(opaque);
    Error *err = NULL;

    /* Completed: STOP|LOGGING -> STOP; failed and running: -> RUNNING. */
    if (ds_set_logging(ds, false, &err)) {
        error_report_err(err);
    }
    error_free(ds->save_err);
    ds->save_err = NULL;
    ds_bounce_free(ds);
}

/* ---------------------------------------------------------------------- */
/* Load */

static int vfio_ds_load_setup(QEMUFile *f, void *opaque, Error **errp)
{
    VFIODevstate *ds = ds_opaque(opaque);

    if (ds->vbasedev->migration_multifd_transfer == ON_OFF_AUTO_ON) {
        error_setg(errp, "%s: x-migration-multifd-transfer=on is not "
                   "supported by device-state migration", ds->name);
        return -EOPNOTSUPP;
    }

    ds->incoming = true;
    ds->load_failed = false;
    ds->header_loaded = false;
    ds->load_sets = 0;
    ds->load_config_done = false;
    ds->load_done = false;
    ds->load_set_open = false;
    ds_bounce_alloc(ds);
    /* Hold the device still from before the first byte (review R52). */
    return ds_set_state(ds, VFIO_DEVICE_DATA_STATE_STOP, errp);
}

static int vfio_ds_load_cleanup(void *opaque)
{
    VFIODevstate *ds = ds_opaque(opaque);

    ds_bounce_free(ds);
    if (!ds->load_done) {
        /*
         * The load failed or was cut short: reset the device, so that no
         * partly loaded state ever runs (spec section 3).  The reset
         * brings the device back to RUNNING (vfio_devstate_reset).
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
     * source's migration_version decides compatibility (spec section 8),
     * which lets a newer device take an older one's state.
     */
    ds_identity(ds, id);
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
         * Compatibility before any device data (spec section 7): the
         * destination device judges the source's string.
         */
        if (vlen + 1 > ds->version.size) {
            error_setg(errp, "%s: source migration_version '%s' does not "
                       "fit the destination's region of %" PRIu64 " bytes",
                       name, src_version, ds->version.size);
            return -EINVAL;
        }
        trace_vfio_ds_version_check(name, src_version, ds->version_str);
        ret = ds_region_rw(ds, &ds->version, 0, src_version, vlen + 1, true,
                           NULL);
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

static int ds_load_set(QEMUFile *f, VFIODevstate *ds, Error **errp)
{
    const char *name = ds->name;
    uint32_t seq = qemu_get_be32(f);
    uint64_t size = qemu_get_be64(f);
    int ret = qemu_file_get_error(f);

    if (ret) {
        error_setg_errno(errp, -ret, "%s: truncated data set header", name);
        return ret;
    }
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

/* Hand what was staged of the data set to the device. */
static int ds_load_flush(VFIODevstate *ds, uint64_t len, Error **errp)
{
    int ret = 0;

    if (!ds->memory.mmap) {
        ret = ds_region_rw(ds, &ds->memory, 0, ds->bounce, len, true, errp);
    }
    /* The device advances its read-only pos itself (spec section 5). */
    ret = ret ?: CTL_WRITE32(ds, device_memory.action,
                             VFIO_DEVICE_DATA_ACTION_SET_BUFFER, errp);
    if (!ret) {
        trace_vfio_ds_load_chunk(ds->name, ds->load_dev_pos, len);
        ds->load_dev_pos += len;
    }
    return ret;
}

static int ds_load_chunk(QEMUFile *f, VFIODevstate *ds, Error **errp)
{
    const char *name = ds->name;
    uint64_t pos = qemu_get_be64(f);
    uint64_t len = qemu_get_be64(f);
    uint8_t *stage = ds->memory.mmap ?: ds->bounce;
    uint64_t R = ds->memory.size;
    int ret = qemu_file_get_error(f);

    if (ret) {
        error_setg_errno(errp, -ret, "%s: truncated chunk header", name);
        return ret;
    }
    /* Review R4/X6: every value of the stream is checked before use. */
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

        if (qemu_get_buffer(f, stage + fill, n) != n ||
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
          ds_region_rw(ds, &ds->config, 0, buf, size, true, errp);
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

static int vfio_ds_load_state(QEMUFile *f, void *opaque, int version_id)
{
    VFIODevstate *ds = ds_opaque(opaque);
    const char *name = ds->name;
    Error *err = NULL;
    int ret = 0;

    if (version_id != 1) {
        error_setg(&err, "%s: device-state section version %d, expected 1",
                   name, version_id);
        qemu_file_set_error_obj(f, -EINVAL, err);
        return -EINVAL;
    }
    while (!ret) {
        uint64_t tag = qemu_get_be64(f);

        ret = qemu_file_get_error(f);
        if (ret) {
            error_setg_errno(&err, -ret, "%s: truncated device-state section",
                             name);
            break;
        }
        trace_vfio_ds_load_tag(name, tag);
        if (tag == VFIO_MIG_FLAG_END_OF_STATE) {
            return 0;
        }
        if (tag != VFIO_DS_FLAG_HEADER && !ds->header_loaded) {
            error_setg(&err, "%s: device-state data 0x%" PRIx64 " before the "
                       "header", name, tag);
            ret = -EINVAL;
            break;
        }
        if (ds->load_done) {
            error_setg(&err, "%s: device-state data 0x%" PRIx64 " after the "
                       "end of the device state", name, tag);
            ret = -EINVAL;
            break;
        }
        switch (tag) {
        case VFIO_DS_FLAG_HEADER:
            ret = ds_load_header(f, ds, &err);
            break;
        case VFIO_DS_FLAG_MEM_SET:
            ret = ds_load_set(f, ds, &err);
            break;
        case VFIO_DS_FLAG_MEM_CHUNK:
            ret = ds_load_chunk(f, ds, &err);
            break;
        case VFIO_DS_FLAG_DEV_CONFIG:
            ret = ds_load_config(f, ds, &err);
            break;
        case VFIO_DS_FLAG_PCI_CONFIG:
            ret = ds_load_pci_config(f, ds, &err);
            break;
        default:
            error_setg(&err, "%s: unknown device-state tag 0x%" PRIx64, name,
                       tag);
            ret = -EINVAL;
        }
    }
    if (!err) {
        /* qemu_loadvm_approve_switchover() failed */
        error_setg_errno(&err, -ret, "%s: cannot approve the switchover",
                         name);
    }
    /* The core reports it with the failed migration (query-migrate). */
    qemu_file_set_error_obj(f, ret, err);
    return ret;
}

static bool vfio_ds_switchover_ack_needed(void *opaque)
{
    /* The destination acknowledges once it accepted the header. */
    return true;
}

const SaveVMHandlers savevm_vfio_devstate_handlers = {
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
};
