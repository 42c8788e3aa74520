/*
 * vfio-user-devstate: a vfio-user reference device for the device-state
 * region interface (docs: linux-headers/linux/vfio.h, device-state regions)
 *
 * Copyright (c) 2025 The QEMU project contributors
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 */

#ifndef DEVSTATE_H
#define DEVSTATE_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>
#include <glib.h>
#include <linux/vfio.h>

#include "devstate-regs.h"

/* Region indices */
enum {
    DEVSTATE_REGION_BAR0 = VFIO_PCI_BAR0_REGION_INDEX,
    DEVSTATE_REGION_BAR1 = VFIO_PCI_BAR1_REGION_INDEX,      /* MSI-X */
    DEVSTATE_REGION_CONFIG = VFIO_PCI_CONFIG_REGION_INDEX,   /* 7 */
    DEVSTATE_REGION_CTL = VFIO_PCI_NUM_REGIONS,             /* 9 */
    DEVSTATE_REGION_DATA_CONFIG,
    DEVSTATE_REGION_DATA_MEMORY,
    DEVSTATE_REGION_DATA_BITMAP,
    DEVSTATE_REGION_VERSION,
    DEVSTATE_NUM_REGIONS,
};

#define DEVSTATE_NUM_IRQS           VFIO_PCI_NUM_IRQS
#define DEVSTATE_CFG_SPACE_SIZE     256
#define DEVSTATE_DATA_CONFIG_SIZE   4096
#define DEVSTATE_MAX_FDS            16
#define DEVSTATE_MAX_DMA_MAPS       65535
#define DEVSTATE_MAX_IRQ_VECTORS    DEVSTATE_MSIX_VECTORS

/* Fault injection points */
typedef enum {
    FAULT_ARC,
    FAULT_CONFIG_GET,
    FAULT_CONFIG_SET,
    FAULT_MEM_GET,
    FAULT_MEM_SET,
    FAULT_BITMAP,
    FAULT_VERSION,
    FAULT_NR,
} DevstateFaultPoint;

typedef struct {
    int err;                /* errno to fail with, 0 for none */
    int count;              /* failures left, -1 for always */
    int from, to;           /* FAULT_ARC only: state + 1, 0 for any */
    unsigned delay_ms;
    bool exit_at;
} DevstateFault;

typedef struct {
    uint64_t iova;
    uint64_t size;
    void *host;             /* NULL when mapped without an fd */
    bool writable;
} DevstateDMAMap;

/*
 * Where a load is in the record stream of its data set: the bytes of a
 * record are applied as they come, so only the record in progress is kept
 * (its page index once complete, or the part of the index seen so far).
 */
typedef struct {
    uint64_t rec_off;       /* offset in the current record */
    uint8_t idx[8];         /* its page index, little-endian */
    uint64_t page;          /* the page, once rec_off >= 8 */
    uint64_t records;       /* records whose index was seen */
    uint64_t last_page;     /* page of the previous record */
} DevstateLoadCursor;

/* One device-memory data set, for saving or for loading */
typedef struct {
    bool open;
    uint64_t size;          /* bytes */
    uint64_t pos;           /* offset of the next chunk */
    uint64_t nr_pages;
    uint32_t *pages;        /* save: page indices of the records */
    uint64_t nr_records;    /* load: from the set header */
    DevstateLoadCursor cur; /* load */
} DevstateDataSet;

typedef struct {
    /* Options */
    uint64_t mem_size;
    uint64_t chunk_size;
    uint64_t bitmap_size;
    uint64_t max_xfer;      /* max_data_xfer_size the server advertises */
    bool no_mmap;
    bool no_p2p;            /* withhold VFIO_DEVICE_DATA_CAP_P2P */
    bool no_devstate;       /* withhold the device-state regions */
    /*
     * Break the interface on purpose, to test QEMU's bounds:
     * big-set reports every data set after the first of a session as
     * larger than that first one; endless-dirty keeps reporting dirty
     * memory in STOP|LOGGING.
     */
    bool misbehave_big_set;
    bool misbehave_endless_dirty;
    uint64_t session_sets;  /* data sets opened in this logging session */
    bool verbose;
    char *identity;
    unsigned ver_major, ver_minor, ver_bugfix;
    uint32_t init_regs[DEVSTATE_NR_REGS];

    GMutex lock;            /* everything below */
    GCond cond;
    bool quit;

    /* Device model */
    uint32_t regs[DEVSTATE_NR_REGS];
    uint64_t mutate_count;
    uint64_t dma_count;
    uint64_t dma_cursor;
    uint8_t *mem;
    uint64_t nr_pages;
    uint8_t pci_cfg[DEVSTATE_CFG_SPACE_SIZE];
    uint8_t msix_table[DEVSTATE_MSIX_VECTORS * 16];
    GArray *dma_maps;       /* of DevstateDMAMap */
    bool connected;
    int irq_fd[DEVSTATE_NUM_IRQS][DEVSTATE_MAX_IRQ_VECTORS];
    bool intx_masked;
    bool msix_on;           /* MSI-X enabled by SET_IRQS, as in the kernel */
    uint32_t irq_pending;   /* held in STOP/P2P: bit v MSI-X/MSI vector v */
    bool intx_pending;      /* bit for INTx when MSI(-X) is off */
    uint64_t irq_count;     /* interrupts raised */
    GThread *mutate_thread;
    GThread *dma_thread;

    /* Device-state regions */
    struct vfio_device_state_ctl ctl;
    uint32_t state;
    uint64_t *mem_dirty;    /* bitmap of device-memory pages */
    uint64_t mem_dirty_count;   /* bits set in mem_dirty */
    GHashTable *sys_dirty;  /* pfn >> 15 -> 4 KiB bitmap block */
    DevstateDataSet save_set;
    DevstateDataSet load_set;
    char version_str[VFIO_DEVICE_DATA_VERSION_MAX];
    int region_fd[DEVSTATE_NUM_REGIONS];
    uint8_t *region_buf[DEVSTATE_NUM_REGIONS];
    uint64_t region_size[DEVSTATE_NUM_REGIONS];

    DevstateFault faults[FAULT_NR];
} Devstate;

/* devstate-dev.c: device model */
void devstate_dev_init(Devstate *ds);
void devstate_dev_start(Devstate *ds);
void devstate_dev_stop(Devstate *ds);
void devstate_dev_reset(Devstate *ds);
int devstate_bar0_access(Devstate *ds, uint64_t off, uint32_t count,
                         void *buf, bool is_write);
int devstate_pci_cfg_access(Devstate *ds, uint64_t off, uint32_t count,
                            void *buf, bool is_write);
int devstate_dma_map(Devstate *ds, uint64_t iova, uint64_t size, int fd,
                     uint64_t offset, uint32_t flags);
int devstate_dma_unmap(Devstate *ds, uint64_t iova, uint64_t size, bool all);
void devstate_disconnect(Devstate *ds);
unsigned devstate_irq_count(unsigned index);
int devstate_set_irq_fd(Devstate *ds, unsigned index, unsigned vector,
                        int fd);
void devstate_intx_mask(Devstate *ds, bool masked);
void devstate_irq_raise(Devstate *ds, unsigned vector);
void devstate_irq_flush(Devstate *ds);
int devstate_bar1_access(Devstate *ds, uint64_t off, uint32_t count,
                         void *buf, bool is_write);
void devstate_config_payload(Devstate *ds, GByteArray *out);
bool devstate_config_payload_apply(Devstate *ds, const uint8_t *p,
                                   size_t len);
char *devstate_digest(Devstate *ds);
char *devstate_status(Devstate *ds);
void devstate_mark_mem_dirty(Devstate *ds, uint64_t page);
void devstate_mark_sys_dirty(Devstate *ds, uint64_t pfn);

/* devstate-regions.c: the device-state regions */
void devstate_regions_init(Devstate *ds);
void devstate_regions_reset(Devstate *ds);
int devstate_region_access(Devstate *ds, unsigned index, uint64_t off,
                           uint32_t count, void *buf, bool is_write);
const uint8_t *devstate_region_data(Devstate *ds, unsigned index,
                                    uint64_t off, uint32_t count);
bool devstate_parse_version(const char *s, char **identity, uint32_t *major,
                            uint32_t *minor, uint32_t *bugfix);
const char *devstate_state_name(uint32_t state);
int devstate_fault(Devstate *ds, DevstateFaultPoint point, int from, int to);
bool devstate_parse_fault(Devstate *ds, const char *kind, const char *arg,
                          GError **errp);
void devstate_log(Devstate *ds, const char *fmt, ...) G_GNUC_PRINTF(2, 3);

/* vfu-server.c: the vfio-user protocol */
int vfu_serve(Devstate *ds, int fd, bool listening, bool persist,
              int control_fd);

/* main.c: the control socket */
void devstate_control_line(Devstate *ds, const char *line, GString *reply);

#endif /* DEVSTATE_H */
