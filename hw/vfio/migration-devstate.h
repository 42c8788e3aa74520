/*
 * VFIO migration through device-state regions: the backend's own header,
 * for its files only.  The rest of VFIO reaches the backend through
 * vfio_devstate_migration_ops.
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 */

#ifndef HW_VFIO_MIGRATION_DEVSTATE_H
#define HW_VFIO_MIGRATION_DEVSTATE_H

#include <linux/vfio.h>
#include "qemu/units.h"
#include "hw/vfio/vfio-device.h"
#include "migration/misc.h"
#include "vfio-migration-internal.h"

/*
 * Stream tags of the device-state backend, in the style of
 * VFIO_MIG_FLAG_*: 0xffffffff, the 0xef10 magic, then a flag that the v2
 * backend does not use.  Every section ends with VFIO_MIG_FLAG_END_OF_STATE.
 */
#define VFIO_DS_FLAG_HEADER         (0xffffffffef100011ULL)
#define VFIO_DS_FLAG_MEM_SET        (0xffffffffef100012ULL)
#define VFIO_DS_FLAG_MEM_CHUNK      (0xffffffffef100013ULL)
#define VFIO_DS_FLAG_DEV_CONFIG     (0xffffffffef100014ULL)
#define VFIO_DS_FLAG_PCI_CONFIG     (0xffffffffef100015ULL)

/* What follows the be64 tag of a data-set record, before any data */
#define VFIO_DS_MEM_SET_LEN         (4 + 8)     /* be32 number, be64 size */
#define VFIO_DS_MEM_CHUNK_LEN       (8 + 8)     /* be64 pos, be64 len */

/* Bounds QEMU puts on what a device advertises (and a stream claims). */
#define VFIO_DS_MAX_REGION_SIZE     (64 * MiB)

#define DS_STATE_RUNNING_LOGGING VFIO_DEVICE_DATA_STATE_LOGGING
#define DS_STATE_STOP_LOGGING    (VFIO_DEVICE_DATA_STATE_STOP | \
                                  VFIO_DEVICE_DATA_STATE_LOGGING)
#define DS_STATE_P2P_LOGGING     (VFIO_DEVICE_DATA_STATE_P2P | \
                                  VFIO_DEVICE_DATA_STATE_LOGGING)
#define DS_CAPS_KNOWN            (VFIO_DEVICE_DATA_CAP_DEVICE_MEMORY | \
                                  VFIO_DEVICE_DATA_CAP_SYSTEM_MEMORY | \
                                  VFIO_DEVICE_DATA_CAP_P2P)

typedef struct VFIODevstateRegion {
    const char *name;
    uint8_t nr;
    uint64_t size;
    void *mmap;
} VFIODevstateRegion;

typedef struct VFIODevstate {
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
} VFIODevstate;

/* The SaveVMHandlers' and VM state handlers' opaque is the VFIODevice. */
static inline VFIODevstate *vfio_ds_of(void *opaque)
{
    VFIODevice *vbasedev = opaque;

    return vbasedev->migration->opaque;
}

/* Control-region accesses by field name, e.g. CTL_READ32(ds, caps, &v, errp) */
#define CTL_OFF(field) offsetof(struct vfio_device_state_ctl, field)
#define CTL_READ32(ds, field, val, errp) \
    vfio_ds_ctl_read32(ds, CTL_OFF(field), #field, val, errp)
#define CTL_READ64(ds, field, val, errp) \
    vfio_ds_ctl_read64(ds, CTL_OFF(field), #field, val, errp)
#define CTL_WRITE32(ds, field, val, errp) \
    vfio_ds_ctl_write32(ds, CTL_OFF(field), #field, val, errp)
#define CTL_WRITE64(ds, field, val, errp) \
    vfio_ds_ctl_write64(ds, CTL_OFF(field), #field, val, errp)

int vfio_ds_ctl_read32(VFIODevstate *ds, off_t off, const char *field,
                       uint32_t *val, Error **errp);
int vfio_ds_ctl_read64(VFIODevstate *ds, off_t off, const char *field,
                       uint64_t *val, Error **errp);
int vfio_ds_ctl_write32(VFIODevstate *ds, off_t off, const char *field,
                        uint32_t val, Error **errp);
int vfio_ds_ctl_write64(VFIODevstate *ds, off_t off, const char *field,
                        uint64_t val, Error **errp);
int vfio_ds_region_rw(VFIODevstate *ds, VFIODevstateRegion *r, uint64_t off,
                      void *buf, uint64_t len, bool write, Error **errp);
void vfio_ds_bounce_alloc(VFIODevstate *ds);
void vfio_ds_bounce_free(VFIODevstate *ds);

const char *vfio_ds_state_str(uint32_t state);
int vfio_ds_set_state(VFIODevstate *ds, uint32_t new, Error **errp);
int vfio_ds_set_logging(VFIODevstate *ds, bool on, Error **errp);

/* migration-devstate-save.c */
void vfio_ds_identity(VFIODevstate *ds, uint16_t id[4]);
int vfio_ds_get_chunk(VFIODevstate *ds, void *buf, uint64_t *len,
                      Error **errp);
void vfio_ds_chunk_sent(VFIODevstate *ds, uint64_t len);
int vfio_ds_complete_start(VFIODevstate *ds, Error **errp);
int vfio_ds_drain_next(VFIODevstate *ds, bool *opened_stopped, Error **errp);
int vfio_ds_put_config(QEMUFile *f, VFIODevstate *ds, Error **errp);
int vfio_ds_put_pci_config(QEMUFile *f, VFIODevstate *ds, Error **errp);
int vfio_ds_save_prepare(void *opaque, Error **errp);
int vfio_ds_save_setup(QEMUFile *f, void *opaque, Error **errp);
void vfio_ds_save_cleanup(void *opaque);
void vfio_ds_state_pending_estimate(void *opaque, uint64_t *must_precopy,
                                    uint64_t *can_postcopy);
void vfio_ds_state_pending_exact(void *opaque, uint64_t *must_precopy,
                                 uint64_t *can_postcopy);
bool vfio_ds_is_active_iterate(void *opaque);
int vfio_ds_save_iterate(QEMUFile *f, void *opaque);
int vfio_ds_save_complete(QEMUFile *f, void *opaque);
void vfio_ds_save_state(QEMUFile *f, void *opaque);

/* migration-devstate-load.c */
typedef enum VFIODevstateInput {
    VFIO_DS_IN_MAIN,            /* a section on the main channel */
    VFIO_DS_IN_MULTIFD_DATA,    /* a multifd buffer: data set chunks */
    VFIO_DS_IN_MULTIFD_CONFIG,  /* the last one: the configs */
} VFIODevstateInput;

int vfio_ds_load_records(QEMUFile *f, VFIODevstate *ds, VFIODevstateInput in,
                         Error **errp);
int vfio_ds_load_data_buffer(VFIODevstate *ds, const uint8_t *p, size_t len,
                             Error **errp);
int vfio_ds_load_config_buffer(QEMUFile *f, VFIODevstate *ds, Error **errp);
int vfio_ds_load_setup(QEMUFile *f, void *opaque, Error **errp);
int vfio_ds_load_cleanup(void *opaque);
int vfio_ds_load_state(QEMUFile *f, void *opaque, int version_id);
bool vfio_ds_switchover_ack_needed(void *opaque);

/* migration-devstate-multifd.c */
bool vfio_ds_save_complete_precopy_thread(SaveCompletePrecopyThreadData *d,
                                          Error **errp);
int vfio_ds_switchover_start(void *opaque);
bool vfio_ds_multifd_load_buffer(VFIODevice *vbasedev, char *data, size_t len,
                                 bool config, Error **errp);

#endif /* HW_VFIO_MIGRATION_DEVSTATE_H */
