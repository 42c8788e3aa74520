/*
 * VFIO migration through device-state regions
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 */

#ifndef HW_VFIO_MIGRATION_DEVSTATE_H
#define HW_VFIO_MIGRATION_DEVSTATE_H

#include "qemu/typedefs.h"
#include "hw/vfio/vfio-device.h"
#include "migration/register.h"
#include "system/runstate.h"

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

/* Bounds QEMU puts on what a device advertises (and a stream claims). */
#define VFIO_DS_MAX_REGION_SIZE     (64 * MiB)

typedef struct VFIODevstate VFIODevstate;

/*
 * Probe @vbasedev for the device-state regions.  Returns 0 when the
 * device has none, 1 with *@ds set when it has a usable set, and a
 * negative errno with @errp set when it has them but something is wrong.
 */
int vfio_devstate_probe(VFIODevice *vbasedev, VFIODevstate **ds, Error **errp);
void vfio_devstate_free(VFIODevstate *ds);

extern const SaveVMHandlers savevm_vfio_devstate_handlers;
void vfio_devstate_vmstate_prepare(void *opaque, bool running, RunState state);
void vfio_devstate_vmstate_change(void *opaque, bool running, RunState state);
bool vfio_devstate_has_p2p(VFIODevstate *ds);
void vfio_devstate_migration_failed(VFIODevice *vbasedev);
void vfio_devstate_reset(VFIODevice *vbasedev);

/* The system-memory dirty bitmap, for the VFIO memory listener. */
bool vfio_devstate_device(VFIODevice *vbasedev);
int vfio_devstate_logging_start(VFIODevice *vbasedev, Error **errp);
int vfio_devstate_logging_stop(VFIODevice *vbasedev, Error **errp);
int vfio_devstate_query_dirty_bitmap(VFIODevice *vbasedev, hwaddr iova,
                                     hwaddr size, unsigned long *bitmap,
                                     Error **errp);

#endif /* HW_VFIO_MIGRATION_DEVSTATE_H */
