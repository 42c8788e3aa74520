/*
 * vfio-user-devstate: the device model
 *
 * BAR0 registers, PCI config space, device memory with a mutation worker,
 * a DMA engine that writes guest memory through the DMA_MAP mappings, and
 * the interrupts it raises (INTx, MSI, or MSI-X with the table and PBA in
 * BAR1).  Both workers do nothing while the device is in STOP or P2P, so
 * that a stopped device changes none of its state and a device in P2P
 * initiates no DMA; an interrupt raised in P2P is held pending.
 *
 * Copyright (c) 2025 The QEMU project contributors
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 */

#include <errno.h>
#include <string.h>
#include <unistd.h>
#include <sys/mman.h>
#include <sys/stat.h>

#include "devstate.h"

#define WORKER_TICK_US      5000
#define WORKER_MAX_BATCH    4096
#define MUTATE_STRIDE       1000003
#define PCI_COMMAND_OFF     0x04

/* STOP or P2P: no DMA, no mutation, no interrupt */
static bool dev_quiesced(Devstate *ds)
{
    return ds->state & (VFIO_DEVICE_DATA_STATE_STOP |
                        VFIO_DEVICE_DATA_STATE_P2P);
}

void devstate_mark_mem_dirty(Devstate *ds, uint64_t page)
{
    uint64_t bit = 1ull << (page % 64);

    if ((ds->state & VFIO_DEVICE_DATA_STATE_LOGGING) &&
        !(ds->mem_dirty[page / 64] & bit)) {
        ds->mem_dirty[page / 64] |= bit;
        ds->mem_dirty_count++;
    }
}

void devstate_mark_sys_dirty(Devstate *ds, uint64_t pfn)
{
    uint64_t *block;
    gpointer key = GSIZE_TO_POINTER(pfn >> 15);

    if (!(ds->state & VFIO_DEVICE_DATA_STATE_LOGGING)) {
        return;
    }
    block = g_hash_table_lookup(ds->sys_dirty, key);
    if (!block) {
        block = g_malloc0(4096);
        g_hash_table_insert(ds->sys_dirty, key, block);
    }
    block[(pfn & 0x7fff) / 64] |= 1ull << (pfn % 64);
}

/* Mutation worker: rewrite device-memory pages at MUTATE_RATE pages/s */
static void mutate_one(Devstate *ds)
{
    uint64_t page = (ds->mutate_count * MUTATE_STRIDE) % ds->nr_pages;
    uint64_t *p = (uint64_t *)(ds->mem + page * DEVSTATE_PAGE_SIZE);
    uint64_t seed = ds->mutate_count * 0x9e3779b97f4a7c15ull;
    unsigned i;

    for (i = 0; i < DEVSTATE_PAGE_SIZE / 8; i++) {
        p[i] = seed + i;
    }
    ds->mutate_count++;
    devstate_mark_mem_dirty(ds, page);
}

/* Interrupts */

unsigned devstate_irq_count(unsigned index)
{
    switch (index) {
    case VFIO_PCI_INTX_IRQ_INDEX:
    case VFIO_PCI_MSI_IRQ_INDEX:
    case VFIO_PCI_ERR_IRQ_INDEX:
        return 1;
    case VFIO_PCI_MSIX_IRQ_INDEX:
        return DEVSTATE_MSIX_VECTORS;
    }
    return 0;
}

static bool msix_enabled(Devstate *ds)
{
    return ds->msix_on;
}

static void irq_signal(Devstate *ds, int fd, const char *what, unsigned v)
{
    uint64_t one = 1;

    if (write(fd, &one, sizeof(one)) != sizeof(one)) {
        devstate_log(ds, "interrupt: eventfd write failed: %s",
                     g_strerror(errno));
        return;
    }
    ds->irq_count++;
    devstate_log(ds, "interrupt: %s %u", what, v);
}

/*
 * MSI-X once SET_IRQS gave its index eventfds (even none, -1: as the
 * kernel's vfio-pci enables MSI-X), else MSI, else INTx.  A vector with no
 * eventfd, or INTx while masked, stays pending (the PBA shows it) until
 * it gets one.
 */
static void irq_deliver(Devstate *ds, unsigned v)
{
    int fd;

    if (msix_enabled(ds)) {
        if (v >= DEVSTATE_MSIX_VECTORS) {
            devstate_log(ds, "interrupt: no MSI-X vector %u", v);
            return;
        }
        fd = ds->irq_fd[VFIO_PCI_MSIX_IRQ_INDEX][v];
        if (fd < 0) {
            ds->irq_pending |= 1u << v;
            return;
        }
        irq_signal(ds, fd, "MSI-X vector", v);
    } else if (ds->irq_fd[VFIO_PCI_MSI_IRQ_INDEX][0] >= 0) {
        irq_signal(ds, ds->irq_fd[VFIO_PCI_MSI_IRQ_INDEX][0], "MSI", 0);
    } else if (ds->irq_fd[VFIO_PCI_INTX_IRQ_INDEX][0] >= 0 &&
               !ds->intx_masked &&
               !(ds->pci_cfg[PCI_COMMAND_OFF + 1] & 0x04)) {
        irq_signal(ds, ds->irq_fd[VFIO_PCI_INTX_IRQ_INDEX][0], "INTx", 0);
    } else {
        ds->irq_pending |= 1u;
    }
}

/* Called with the lock held; in STOP or P2P the interrupt waits */
void devstate_irq_raise(Devstate *ds, unsigned vector)
{
    if (dev_quiesced(ds)) {
        if (vector < DEVSTATE_MAX_IRQ_VECTORS) {
            ds->irq_pending |= 1u << vector;
        }
        devstate_log(ds, "interrupt: vector %u held pending (%s)", vector,
                     devstate_state_name(ds->state));
        return;
    }
    irq_deliver(ds, vector);
}

/* Raise what is pending once the device runs and has a way to raise it */
void devstate_irq_flush(Devstate *ds)
{
    uint32_t pending = ds->irq_pending;
    unsigned v;

    if (dev_quiesced(ds) || !pending) {
        return;
    }
    ds->irq_pending = 0;
    for (v = 0; v < DEVSTATE_MAX_IRQ_VECTORS; v++) {
        if (pending & (1u << v)) {
            irq_deliver(ds, v);
        }
    }
}

static DevstateDMAMap *dma_lookup(Devstate *ds, uint64_t iova, uint64_t len)
{
    guint i;

    for (i = 0; i < ds->dma_maps->len; i++) {
        DevstateDMAMap *m = &g_array_index(ds->dma_maps, DevstateDMAMap, i);

        /* iova - m->iova + len may wrap: compare without adding */
        if (iova >= m->iova && iova - m->iova <= m->size &&
            len <= m->size - (iova - m->iova)) {
            return m;
        }
    }
    return NULL;
}

/* DMA engine: stamp one page of the guest window */
static void dma_one(Devstate *ds)
{
    uint64_t base = ((uint64_t)ds->regs[DEVSTATE_REG_DMA_ADDR_HI / 4] << 32 |
                     ds->regs[DEVSTATE_REG_DMA_ADDR_LO / 4]) &
                    ~(uint64_t)(DEVSTATE_PAGE_SIZE - 1);
    uint32_t pass = ds->regs[DEVSTATE_REG_DMA_PASSES / 4];
    uint64_t page = ds->dma_cursor;
    uint64_t iova = base + page * DEVSTATE_PAGE_SIZE;
    DevstateDMAMap *m = dma_lookup(ds, iova, DEVSTATE_PAGE_SIZE);

    if (m && m->host && m->writable) {
        uint64_t *p = (uint64_t *)((uint8_t *)m->host + (iova - m->iova));
        struct devstate_dma_stamp stamp = {
            .magic = DEVSTATE_DMA_MAGIC, .pass = pass, .page = page,
        };
        unsigned i;

        for (i = 2; i < DEVSTATE_PAGE_SIZE / 8; i++) {
            p[i] = (uint64_t)pass << 32 | page;
        }
        memcpy(p, &stamp, sizeof(stamp));
        devstate_mark_sys_dirty(ds, iova >> DEVSTATE_PAGE_SHIFT);
        ds->dma_count++;
    } else {
        ds->regs[DEVSTATE_REG_DMA_ERRORS / 4]++;
    }

    if (++ds->dma_cursor >= ds->regs[DEVSTATE_REG_DMA_PAGES / 4]) {
        ds->dma_cursor = 0;
        ds->regs[DEVSTATE_REG_DMA_PASSES / 4]++;
        if (ds->regs[DEVSTATE_REG_CTRL / 4] & DEVSTATE_CTRL_DMA_IRQ) {
            devstate_irq_raise(ds, 0);
        }
    }
}

static bool mutate_ready(Devstate *ds)
{
    return !dev_quiesced(ds) &&
        (ds->regs[DEVSTATE_REG_CTRL / 4] & DEVSTATE_CTRL_MUTATE) &&
        ds->regs[DEVSTATE_REG_MUTATE_RATE / 4];
}

static bool dma_ready(Devstate *ds)
{
    return !dev_quiesced(ds) && ds->connected &&
        (ds->regs[DEVSTATE_REG_CTRL / 4] & DEVSTATE_CTRL_DMA) &&
        ds->regs[DEVSTATE_REG_DMA_RATE / 4] &&
        ds->regs[DEVSTATE_REG_DMA_PAGES / 4];
}

typedef struct {
    Devstate *ds;
    bool (*ready)(Devstate *ds);
    void (*one)(Devstate *ds);
    unsigned rate_reg;
} Worker;

/*
 * Each tick earns rate * elapsed pages of credit; every page is done with
 * the lock held, so a state change (STOP) waits for the page in progress
 * and nothing happens after it.
 */
static gpointer worker_thread(gpointer opaque)
{
    Worker *w = opaque;
    Devstate *ds = w->ds;
    gint64 last = g_get_monotonic_time();
    double credit = 0;

    g_mutex_lock(&ds->lock);
    while (!ds->quit) {
        gint64 now, end;

        end = g_get_monotonic_time() + WORKER_TICK_US;
        while (!ds->quit && g_cond_wait_until(&ds->cond, &ds->lock, end)) {
            /* woken early: only quit matters */
        }
        now = g_get_monotonic_time();
        if (!w->ready(ds)) {
            credit = 0;
            last = now;
            continue;
        }
        credit += (double)ds->regs[w->rate_reg / 4] * (now - last) / 1e6;
        last = now;
        if (credit > WORKER_MAX_BATCH) {
            credit = WORKER_MAX_BATCH;
        }
        while (credit >= 1 && w->ready(ds) && !ds->quit) {
            w->one(ds);
            credit -= 1;
            /* let the protocol thread in between pages */
            g_mutex_unlock(&ds->lock);
            g_mutex_lock(&ds->lock);
        }
    }
    g_mutex_unlock(&ds->lock);
    g_free(w);
    return NULL;
}

/* Every vector masked, as after a reset */
static void msix_table_reset(Devstate *ds)
{
    unsigned v;

    memset(ds->msix_table, 0, sizeof(ds->msix_table));
    for (v = 0; v < DEVSTATE_MSIX_VECTORS; v++) {
        ds->msix_table[v * 16 + 12] = 1;
    }
}

void devstate_dev_init(Devstate *ds)
{
    unsigned i;

    g_mutex_init(&ds->lock);
    g_cond_init(&ds->cond);
    ds->nr_pages = ds->mem_size / DEVSTATE_PAGE_SIZE;
    /*
     * A device has its memory from the start: populate it, so that
     * neither the mutator nor a load pays page faults a real device
     * would not.
     */
    ds->mem = mmap(NULL, ds->mem_size, PROT_READ | PROT_WRITE,
                   MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE | MAP_POPULATE,
                   -1, 0);
    if (ds->mem == MAP_FAILED) {
        g_error("cannot allocate %" G_GUINT64_FORMAT " bytes of device memory",
                ds->mem_size);
    }
    ds->mem_dirty = g_new0(uint64_t, (ds->nr_pages + 63) / 64);
    ds->sys_dirty = g_hash_table_new_full(NULL, NULL, NULL, g_free);
    ds->dma_maps = g_array_new(FALSE, TRUE, sizeof(DevstateDMAMap));
    for (i = 0; i < DEVSTATE_NUM_IRQS * DEVSTATE_MAX_IRQ_VECTORS; i++) {
        ds->irq_fd[i / DEVSTATE_MAX_IRQ_VECTORS][i % DEVSTATE_MAX_IRQ_VECTORS] =
            -1;
    }

    ds->init_regs[DEVSTATE_REG_ID / 4] = DEVSTATE_ID_MAGIC;
    ds->init_regs[DEVSTATE_REG_DEVMEM_MIB / 4] = ds->mem_size >> 20;
    memcpy(ds->regs, ds->init_regs, sizeof(ds->regs));

    /*
     * PCI config space: conventional PCI, two 4 KiB memory BARs (registers,
     * MSI-X), INTx, an Advanced Features capability with FLR and MSI-X.
     */
    memset(ds->pci_cfg, 0, sizeof(ds->pci_cfg));
    ds->pci_cfg[0x00] = DEVSTATE_PCI_VENDOR_ID & 0xff;
    ds->pci_cfg[0x01] = DEVSTATE_PCI_VENDOR_ID >> 8;
    ds->pci_cfg[0x02] = DEVSTATE_PCI_DEVICE_ID & 0xff;
    ds->pci_cfg[0x03] = DEVSTATE_PCI_DEVICE_ID >> 8;
    ds->pci_cfg[0x08] = 0x01;                   /* revision */
    ds->pci_cfg[0x0a] = 0x00;                   /* class 0xff00 */
    ds->pci_cfg[0x0b] = 0xff;
    ds->pci_cfg[0x2c] = DEVSTATE_PCI_SUBVENDOR_ID & 0xff;
    ds->pci_cfg[0x2d] = DEVSTATE_PCI_SUBVENDOR_ID >> 8;
    ds->pci_cfg[0x2e] = DEVSTATE_PCI_SUBDEVICE_ID & 0xff;
    ds->pci_cfg[0x2f] = DEVSTATE_PCI_SUBDEVICE_ID >> 8;
    ds->pci_cfg[0x3d] = 1;                      /* INTA# */
    ds->pci_cfg[0x06] = 0x10;                   /* status: capability list */
    ds->pci_cfg[0x34] = DEVSTATE_CAP_AF;
    ds->pci_cfg[DEVSTATE_CAP_AF + 0] = 0x13;    /* PCI_CAP_ID_AF */
    ds->pci_cfg[DEVSTATE_CAP_AF + 1] = DEVSTATE_CAP_MSIX;
    ds->pci_cfg[DEVSTATE_CAP_AF + 2] = 6;       /* length */
    ds->pci_cfg[DEVSTATE_CAP_AF + 3] = 0x03;    /* TP, FLR */
    ds->pci_cfg[DEVSTATE_CAP_MSIX + 0] = 0x11;  /* PCI_CAP_ID_MSIX */
    ds->pci_cfg[DEVSTATE_CAP_MSIX + 2] = DEVSTATE_MSIX_VECTORS - 1;
    ds->pci_cfg[DEVSTATE_CAP_MSIX + 4] = DEVSTATE_MSIX_TABLE_OFFSET | 1;
    ds->pci_cfg[DEVSTATE_CAP_MSIX + 8] = DEVSTATE_MSIX_PBA_OFFSET & 0xff;
    ds->pci_cfg[DEVSTATE_CAP_MSIX + 9] = DEVSTATE_MSIX_PBA_OFFSET >> 8;
    ds->pci_cfg[DEVSTATE_CAP_MSIX + 8] |= 1;    /* BIR 1 */
    msix_table_reset(ds);
}

void devstate_dev_start(Devstate *ds)
{
    static const struct {
        const char *name;
        bool (*ready)(Devstate *ds);
        void (*one)(Devstate *ds);
        unsigned rate_reg;
    } workers[] = {
        { "devstate-mutate", mutate_ready, mutate_one,
          DEVSTATE_REG_MUTATE_RATE },
        { "devstate-dma", dma_ready, dma_one, DEVSTATE_REG_DMA_RATE },
    };
    GThread **threads[] = { &ds->mutate_thread, &ds->dma_thread };
    unsigned i;

    for (i = 0; i < G_N_ELEMENTS(workers); i++) {
        Worker *w = g_new0(Worker, 1);

        w->ds = ds;
        w->ready = workers[i].ready;
        w->one = workers[i].one;
        w->rate_reg = workers[i].rate_reg;
        *threads[i] = g_thread_new(workers[i].name, worker_thread, w);
    }
}

void devstate_dev_stop(Devstate *ds)
{
    g_mutex_lock(&ds->lock);
    ds->quit = true;
    g_cond_broadcast(&ds->cond);
    g_mutex_unlock(&ds->lock);
    g_thread_join(ds->mutate_thread);
    g_thread_join(ds->dma_thread);
}

/* Called with the lock held */
void devstate_dev_reset(Devstate *ds)
{
    memcpy(ds->regs, ds->init_regs, sizeof(ds->regs));
    ds->mutate_count = 0;
    ds->dma_count = 0;
    ds->dma_cursor = 0;
    ds->intx_masked = false;
    ds->irq_pending = 0;
    memset(ds->pci_cfg + 0x04, 0, 2);           /* command */
    memset(ds->pci_cfg + 0x10, 0, 8);           /* BAR0, BAR1 */
    ds->pci_cfg[0x3c] = 0;                      /* interrupt line */
    ds->pci_cfg[DEVSTATE_CAP_MSIX + 3] = 0;     /* MSI-X enable, mask */
    msix_table_reset(ds);
    devstate_regions_reset(ds);
}

static uint32_t reg_read(Devstate *ds, unsigned reg)
{
    switch (reg * 4) {
    case DEVSTATE_REG_MUTATE_COUNT_LO:
        return ds->mutate_count;
    case DEVSTATE_REG_MUTATE_COUNT_HI:
        return ds->mutate_count >> 32;
    case DEVSTATE_REG_DMA_COUNT_LO:
        return ds->dma_count;
    case DEVSTATE_REG_DMA_COUNT_HI:
        return ds->dma_count >> 32;
    case DEVSTATE_REG_STATUS:
        return ds->state;
    case DEVSTATE_REG_STATUS + 4 ... DEVSTATE_BAR0_SIZE - 4:
        return 0;
    default:
        return ds->regs[reg];
    }
}

static void reg_write(Devstate *ds, unsigned reg, uint32_t val)
{
    switch (reg * 4) {
    case DEVSTATE_REG_IRQ:
        devstate_irq_raise(ds, val);
        break;
    case DEVSTATE_REG_CTRL:
        ds->regs[reg] = val & DEVSTATE_CTRL_MASK;
        break;
    case DEVSTATE_REG_DMA_PAGES:
        ds->dma_cursor = 0;
        /* fall through */
    case DEVSTATE_REG_MUTATE_RATE:
    case DEVSTATE_REG_DMA_RATE:
    case DEVSTATE_REG_DMA_ADDR_LO:
    case DEVSTATE_REG_DMA_ADDR_HI:
    case DEVSTATE_REG_SCRATCH:
        ds->regs[reg] = val;
        break;
    default:
        break;                                  /* read-only or unused */
    }
}

/* 4-byte aligned accesses of 4 or 8 bytes; smaller aligned reads too */
int devstate_bar0_access(Devstate *ds, uint64_t off, uint32_t count,
                         void *buf, bool is_write)
{
    uint32_t val;

    if (off % count || (count != 1 && count != 2 && count != 4 &&
                        count != 8)) {
        return -EINVAL;
    }
    if (is_write) {
        if (count < 4) {
            return -EINVAL;
        }
        if (ds->state & VFIO_DEVICE_DATA_STATE_STOP) {
            devstate_log(ds, "BAR0 write at 0x%" G_GINT64_MODIFIER "x "
                         "refused: the device is in %s", off,
                         devstate_state_name(ds->state));
            return -EBUSY;
        }
        for (; count; count -= 4, off += 4, buf = (uint8_t *)buf + 4) {
            memcpy(&val, buf, 4);
            reg_write(ds, off / 4, GUINT32_FROM_LE(val));
        }
        return 0;
    }
    if (count < 4) {
        val = GUINT32_TO_LE(reg_read(ds, off / 4));
        memcpy(buf, (uint8_t *)&val + off % 4, count);
        return 0;
    }
    for (; count; count -= 4, off += 4, buf = (uint8_t *)buf + 4) {
        val = GUINT32_TO_LE(reg_read(ds, off / 4));
        memcpy(buf, &val, 4);
    }
    return 0;
}

/*
 * BAR1: the MSI-X table (read/write, 4- or 8-byte aligned accesses) and
 * the PBA (read-only).  QEMU emulates the table for the guest and gives
 * the device an eventfd per vector; the device keeps what is written here
 * and shows its pending vectors in the PBA.
 */
int devstate_bar1_access(Devstate *ds, uint64_t off, uint32_t count,
                         void *buf, bool is_write)
{
    uint64_t pba = 0;

    if ((count != 4 && count != 8) || off % count) {
        return -EINVAL;
    }
    if (off + count <= sizeof(ds->msix_table)) {
        if (is_write) {
            memcpy(ds->msix_table + off, buf, count);
        } else {
            memcpy(buf, ds->msix_table + off, count);
        }
        return 0;
    }
    if (is_write) {
        return 0;                               /* PBA and the rest: ro */
    }
    if (off == DEVSTATE_MSIX_PBA_OFFSET && msix_enabled(ds)) {
        pba = GUINT64_TO_LE(ds->irq_pending &
                            ((1u << DEVSTATE_MSIX_VECTORS) - 1));
    }
    memset(buf, 0, count);
    if (off == DEVSTATE_MSIX_PBA_OFFSET) {
        memcpy(buf, &pba, count);
    }
    return 0;
}

/*
 * Config space: QEMU emulates most of it; the device keeps command,
 * BAR0 and BAR1 (4 KiB, 32-bit memory), interrupt line, the MSI-X enable
 * and mask bits, and resets itself when the AF capability's FLR bit is
 * written; it ignores other writes.
 */
int devstate_pci_cfg_access(Devstate *ds, uint64_t off, uint32_t count,
                            void *buf, bool is_write)
{
    uint32_t i;

    if (!is_write) {
        memcpy(buf, ds->pci_cfg + off, count);
        return 0;
    }
    for (i = 0; i < count; i++) {
        uint64_t o = off + i;
        uint8_t v = ((uint8_t *)buf)[i];

        if (o == 0x04) {
            ds->pci_cfg[o] = v & 0x47;          /* IO, MEM, MASTER, PARITY */
        } else if (o == 0x05) {
            ds->pci_cfg[o] = v & 0x05;          /* SERR, INTX_DISABLE */
        } else if (o == 0x11 || o == 0x15) {
            ds->pci_cfg[o] = v & 0xf0;          /* 4 KiB BARs */
        } else if (o == 0x12 || o == 0x13 || o == 0x16 || o == 0x17 ||
                   o == 0x3c) {
            ds->pci_cfg[o] = v;
        } else if (o == DEVSTATE_CAP_MSIX + 3) {
            ds->pci_cfg[o] = v & 0xc0;          /* MSI-X enable, mask */
        } else if (o == DEVSTATE_CAP_AF + 4 && (v & 1)) {
            devstate_log(ds, "function-level reset (AF FLR)");
            devstate_dev_reset(ds);             /* reads back as 0 */
        }
    }
    return 0;
}

int devstate_dma_map(Devstate *ds, uint64_t iova, uint64_t size, int fd,
                     uint64_t offset, uint32_t flags)
{
    DevstateDMAMap m = {
        .iova = iova, .size = size,
        .writable = flags & VFIO_DMA_MAP_FLAG_WRITE,
    };
    guint i;

    /* Whole pages of the size advertised in pgsizes, nothing less */
    if (!size || iova + size < iova ||
        (iova | size | offset) % DEVSTATE_PAGE_SIZE ||
        (flags & ~(VFIO_DMA_MAP_FLAG_READ | VFIO_DMA_MAP_FLAG_WRITE))) {
        return -EINVAL;
    }
    for (i = 0; i < ds->dma_maps->len; i++) {
        DevstateDMAMap *o = &g_array_index(ds->dma_maps, DevstateDMAMap, i);

        if (iova < o->iova + o->size && o->iova < iova + size) {
            return -EEXIST;
        }
    }
    if (ds->dma_maps->len >= DEVSTATE_MAX_DMA_MAPS) {
        return -ENOSPC;
    }
    if (fd >= 0) {
        int prot = PROT_READ | (m.writable ? PROT_WRITE : 0);
        struct stat st;

        /* A mapping past the end of a file faults (SIGBUS) on access. */
        if (fstat(fd, &st) < 0) {
            return -errno;
        }
        if (S_ISREG(st.st_mode) &&
            (offset > (uint64_t)st.st_size ||
             size > (uint64_t)st.st_size - offset)) {
            devstate_log(ds, "dma map [0x%" G_GINT64_MODIFIER "x, +0x%"
                         G_GINT64_MODIFIER "x) refused: it ends past the "
                         "end of its fd (offset 0x%" G_GINT64_MODIFIER "x)",
                         iova, size, offset);
            return -EINVAL;
        }

        m.host = mmap(NULL, size, prot, MAP_SHARED, fd, offset);
        if (m.host == MAP_FAILED) {
            return -errno;
        }
    }
    g_array_append_val(ds->dma_maps, m);
    devstate_log(ds, "dma map [0x%" G_GINT64_MODIFIER "x, +0x%"
                 G_GINT64_MODIFIER "x)%s", iova, size,
                 fd >= 0 ? "" : " (no fd)");
    return 0;
}

static void dma_release(DevstateDMAMap *m)
{
    if (m->host) {
        munmap(m->host, m->size);
    }
}

int devstate_dma_unmap(Devstate *ds, uint64_t iova, uint64_t size, bool all)
{
    guint i;

    for (i = 0; i < ds->dma_maps->len; i++) {
        DevstateDMAMap *m = &g_array_index(ds->dma_maps, DevstateDMAMap, i);

        if (all) {
            dma_release(m);
        } else if (m->iova == iova && m->size == size) {
            devstate_log(ds, "dma unmap [0x%" G_GINT64_MODIFIER "x, +0x%"
                         G_GINT64_MODIFIER "x)", iova, size);
            dma_release(m);
            g_array_remove_index(ds->dma_maps, i);
            return 0;
        }
    }
    if (all) {
        g_array_set_size(ds->dma_maps, 0);
        return 0;
    }
    return -ENOENT;
}

/* Called with the lock held; fd -1 removes the vector's eventfd */
int devstate_set_irq_fd(Devstate *ds, unsigned index, unsigned vector,
                        int fd)
{
    int *slot = &ds->irq_fd[index][vector];

    if (*slot >= 0) {
        close(*slot);
    }
    *slot = fd;
    if (index == VFIO_PCI_INTX_IRQ_INDEX) {
        ds->intx_masked = false;
    }
    if (fd >= 0) {
        devstate_irq_flush(ds);
    }
    return 0;
}

void devstate_intx_mask(Devstate *ds, bool masked)
{
    ds->intx_masked = masked;
    if (!masked) {
        devstate_irq_flush(ds);
    }
}

/* Called with the lock held */
void devstate_disconnect(Devstate *ds)
{
    unsigned i;

    devstate_dma_unmap(ds, 0, 0, true);
    for (i = 0; i < DEVSTATE_NUM_IRQS * DEVSTATE_MAX_IRQ_VECTORS; i++) {
        devstate_set_irq_fd(ds, i / DEVSTATE_MAX_IRQ_VECTORS,
                            i % DEVSTATE_MAX_IRQ_VECTORS, -1);
    }
    ds->irq_pending = 0;
    ds->msix_on = false;
    ds->connected = false;
    /* RUNNING at open: the next client finds no state or session of ours */
    devstate_regions_reset(ds);
}

/*
 * The config state payload: registers and counters, little-endian.
 * Kept in one place so that the config blob and the digest agree.
 */
typedef struct {
    uint32_t regs[DEVSTATE_NR_REGS];
    uint64_t mutate_count;
    uint64_t dma_count;
    uint64_t dma_cursor;
    uint64_t mem_size;
    uint32_t intx_masked;
    uint32_t irq_pending;   /* interrupts held in P2P, raised on RUNNING */
} DevstateConfigPayload;

void devstate_config_payload(Devstate *ds, GByteArray *out)
{
    DevstateConfigPayload p = { 0 };
    unsigned i;

    for (i = 0; i < DEVSTATE_NR_REGS; i++) {
        p.regs[i] = GUINT32_TO_LE(ds->regs[i]);
    }
    p.regs[DEVSTATE_REG_STATUS / 4] = 0;        /* not config state */
    p.mutate_count = GUINT64_TO_LE(ds->mutate_count);
    p.dma_count = GUINT64_TO_LE(ds->dma_count);
    p.dma_cursor = GUINT64_TO_LE(ds->dma_cursor);
    p.mem_size = GUINT64_TO_LE(ds->mem_size);
    p.intx_masked = GUINT32_TO_LE(ds->intx_masked);
    p.irq_pending = GUINT32_TO_LE(ds->irq_pending);
    g_byte_array_append(out, (const guint8 *)&p, sizeof(p));
}

/* Validate first, then apply: a refused payload changes nothing */
bool devstate_config_payload_apply(Devstate *ds, const uint8_t *buf,
                                   size_t len)
{
    DevstateConfigPayload p;
    unsigned i;

    if (len != sizeof(p)) {
        return false;
    }
    memcpy(&p, buf, sizeof(p));
    if (GUINT64_FROM_LE(p.mem_size) != ds->mem_size ||
        GUINT32_FROM_LE(p.regs[DEVSTATE_REG_ID / 4]) != DEVSTATE_ID_MAGIC ||
        (GUINT32_FROM_LE(p.regs[DEVSTATE_REG_CTRL / 4]) &
         ~DEVSTATE_CTRL_MASK) ||
        GUINT64_FROM_LE(p.dma_cursor) >
        GUINT32_FROM_LE(p.regs[DEVSTATE_REG_DMA_PAGES / 4]) ||
        GUINT32_FROM_LE(p.intx_masked) > 1 ||
        GUINT32_FROM_LE(p.irq_pending) >> DEVSTATE_MAX_IRQ_VECTORS) {
        return false;
    }
    for (i = 0; i < DEVSTATE_NR_REGS; i++) {
        if (i != DEVSTATE_REG_STATUS / 4) {
            ds->regs[i] = GUINT32_FROM_LE(p.regs[i]);
        }
    }
    ds->mutate_count = GUINT64_FROM_LE(p.mutate_count);
    ds->dma_count = GUINT64_FROM_LE(p.dma_count);
    ds->dma_cursor = GUINT64_FROM_LE(p.dma_cursor);
    ds->intx_masked = GUINT32_FROM_LE(p.intx_masked);
    ds->irq_pending = GUINT32_FROM_LE(p.irq_pending);
    return true;
}

char *devstate_digest(Devstate *ds)
{
    g_autoptr(GChecksum) sum = g_checksum_new(G_CHECKSUM_SHA256);
    g_autoptr(GByteArray) cfg = g_byte_array_new();
    uint64_t off;

    g_mutex_lock(&ds->lock);
    for (off = 0; off < ds->mem_size; off += 1 << 20) {
        g_checksum_update(sum, ds->mem + off, MIN(1 << 20, ds->mem_size - off));
    }
    devstate_config_payload(ds, cfg);
    g_mutex_unlock(&ds->lock);
    g_checksum_update(sum, cfg->data, cfg->len);
    return g_strdup(g_checksum_get_string(sum));
}

char *devstate_status(Devstate *ds)
{
    char *s;

    g_mutex_lock(&ds->lock);
    s = g_strdup_printf("state=%s logging=%d mutate_count=%" G_GUINT64_FORMAT
                        " dma_count=%" G_GUINT64_FORMAT " dma_passes=%u"
                        " dma_errors=%u mem_size=%" G_GUINT64_FORMAT
                        " ctrl=0x%x connected=%d dma_maps=%u"
                        " irq_count=%" G_GUINT64_FORMAT " irq_pending=0x%x"
                        " msix=%d dirty_pages=%" G_GUINT64_FORMAT,
                        devstate_state_name(ds->state),
                        !!(ds->state & VFIO_DEVICE_DATA_STATE_LOGGING),
                        ds->mutate_count, ds->dma_count,
                        ds->regs[DEVSTATE_REG_DMA_PASSES / 4],
                        ds->regs[DEVSTATE_REG_DMA_ERRORS / 4],
                        ds->mem_size, ds->regs[DEVSTATE_REG_CTRL / 4],
                        ds->connected, ds->dma_maps->len, ds->irq_count,
                        ds->irq_pending, msix_enabled(ds),
                        ds->mem_dirty_count);
    g_mutex_unlock(&ds->lock);
    return s;
}
