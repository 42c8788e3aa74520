/*
 * vfio-user-devstate: the reference device's BAR0 register map
 *
 * This header has no dependencies so that tests (qtests included) can use
 * the register map of the device without pulling in the server.
 *
 * BAR0 is 4 KiB of 32-bit little-endian registers:
 *
 *   0x00 ID              ro  DEVSTATE_ID_MAGIC
 *   0x04 CTRL            rw  bit0 mutate enable, bit1 DMA enable,
 *                            bit2 interrupt at the end of each DMA pass
 *   0x08 MUTATE_RATE     rw  device-memory pages written per second
 *   0x0c DMA_RATE        rw  guest pages written by DMA per second
 *   0x10 DMA_ADDR_LO     rw  guest-physical address of the DMA window
 *   0x14 DMA_ADDR_HI     rw  (low 12 bits ignored)
 *   0x18 DMA_PAGES       rw  pages in the DMA window
 *   0x1c SCRATCH         rw  free for tests
 *   0x20 MUTATE_COUNT_LO ro  pages written by the mutation worker
 *   0x24 MUTATE_COUNT_HI ro
 *   0x28 DMA_COUNT_LO    ro  pages written by the DMA engine
 *   0x2c DMA_COUNT_HI    ro
 *   0x30 DMA_PASSES      ro  complete passes over the DMA window
 *   0x34 DEVMEM_MIB      ro  device memory size in MiB
 *   0x38 DMA_ERRORS      ro  DMA pages skipped (address not mapped)
 *   0x3c STATUS          ro  bit0 STOP, bit1 LOGGING, bit2 P2P (the
 *                            device state)
 *   0x40 IRQ             wo  raise one interrupt: MSI-X vector (value) when
 *                            MSI-X is enabled, else MSI, else INTx; reads 0
 *
 * Other offsets read as 0 and ignore writes.  The registers and counters
 * are the device's config state (saved with the device config).  In STOP
 * a register write fails (EBUSY): a stopped device changes none of its
 * state.  In P2P it completes; an interrupt it would raise (IRQ, the end
 * of a DMA pass) is held pending and raised once the device runs again.
 *
 * BAR1 is 4 KiB holding the MSI-X table (DEVSTATE_MSIX_VECTORS entries at
 * offset 0) and the PBA (at offset 0x800).  Config space has an Advanced
 * Features capability at 0x40 (FLR: writing 1 to its control byte resets
 * the device) and the MSI-X capability at 0x48.
 *
 * Every page the DMA engine writes starts with a struct devstate_dma_stamp
 * and is filled with the 64-bit word (pass << 32 | page index).
 *
 * Copyright (c) 2025 The QEMU project contributors
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 */

#ifndef DEVSTATE_REGS_H
#define DEVSTATE_REGS_H

#include <stdint.h>

#define DEVSTATE_PCI_VENDOR_ID      0x1b36
#define DEVSTATE_PCI_DEVICE_ID      0x0015
#define DEVSTATE_PCI_SUBVENDOR_ID   0x1af4
#define DEVSTATE_PCI_SUBDEVICE_ID   0x1100

#define DEVSTATE_BAR0_SIZE          4096
#define DEVSTATE_PAGE_SIZE          4096
#define DEVSTATE_PAGE_SHIFT         12

#define DEVSTATE_ID_MAGIC           0x41545344 /* "DSTA" */

#define DEVSTATE_REG_ID             0x00
#define DEVSTATE_REG_CTRL           0x04
#define DEVSTATE_REG_MUTATE_RATE    0x08
#define DEVSTATE_REG_DMA_RATE       0x0c
#define DEVSTATE_REG_DMA_ADDR_LO    0x10
#define DEVSTATE_REG_DMA_ADDR_HI    0x14
#define DEVSTATE_REG_DMA_PAGES      0x18
#define DEVSTATE_REG_SCRATCH        0x1c
#define DEVSTATE_REG_MUTATE_COUNT_LO 0x20
#define DEVSTATE_REG_MUTATE_COUNT_HI 0x24
#define DEVSTATE_REG_DMA_COUNT_LO   0x28
#define DEVSTATE_REG_DMA_COUNT_HI   0x2c
#define DEVSTATE_REG_DMA_PASSES     0x30
#define DEVSTATE_REG_DEVMEM_MIB     0x34
#define DEVSTATE_REG_DMA_ERRORS     0x38
#define DEVSTATE_REG_STATUS         0x3c
#define DEVSTATE_NR_REGS            16
#define DEVSTATE_REG_IRQ            0x40    /* not in the saved registers */

#define DEVSTATE_CTRL_MUTATE        (1u << 0)
#define DEVSTATE_CTRL_DMA           (1u << 1)
#define DEVSTATE_CTRL_DMA_IRQ       (1u << 2)
#define DEVSTATE_CTRL_MASK          0x7u

#define DEVSTATE_STATUS_STOP        (1u << 0)
#define DEVSTATE_STATUS_LOGGING     (1u << 1)
#define DEVSTATE_STATUS_P2P         (1u << 2)

/* BAR1: MSI-X table and PBA */
#define DEVSTATE_BAR1_SIZE          4096
#define DEVSTATE_MSIX_VECTORS       4
#define DEVSTATE_MSIX_TABLE_OFFSET  0x000
#define DEVSTATE_MSIX_PBA_OFFSET    0x800

/* Config-space capabilities */
#define DEVSTATE_CAP_AF             0x40    /* Advanced Features: FLR */
#define DEVSTATE_CAP_MSIX           0x48

#define DEVSTATE_DMA_MAGIC          0x50414d44 /* "DMAP" */

struct devstate_dma_stamp {
    uint32_t magic;         /* DEVSTATE_DMA_MAGIC */
    uint32_t pass;          /* DMA_PASSES when the page was written */
    uint64_t page;          /* index of the page in the DMA window */
};

#endif /* DEVSTATE_REGS_H */
