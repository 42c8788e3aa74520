/*
 * Helpers for qtests that use the vfio-user-devstate reference device
 * or, in kernel mode, an instance of a kernel mdev driver with the same
 * device model (the Linux series' samples/vfio-mdev/mdevstate.c)
 *
 * Copyright (c) 2025 The QEMU project contributors
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 */

#ifndef VFIO_USER_DEVSTATE_UTIL_H
#define VFIO_USER_DEVSTATE_UTIL_H

#include "../vfio-user-devstate/devstate-regs.h"
#include "libqos/pci.h"

typedef struct DevstateServer {
    pid_t pid;
    char *dir;          /* temporary directory of the sockets and log */
    char *sock;         /* vfio-user socket, for socket.path= */
    char *ctl;          /* control socket */
    char *log;          /* the server's stderr (it runs with -v) */
    char *sysfsdev;     /* kernel mode: /sys/bus/mdev/devices/UUID */
    char *uuid;         /* kernel mode: the instance's UUID */
} DevstateServer;

/* The server binary ($DEVSTATE_SERVER_BINARY), or NULL to skip tests */
const char *devstate_server_binary(void);

/*
 * Kernel mode: the mdev type whose instances stand in for the servers
 * ($DEVSTATE_KERNEL_MDEV_TYPE, e.g. "mdevstate-1"), or NULL.  The
 * instances are passed to QEMU as -device vfio-pci,sysfsdev=...
 */
const char *devstate_kernel_mdev_type(void);

/*
 * Kernel mode: a type of the same driver with an incompatible
 * migration_version ($DEVSTATE_KERNEL_MDEV_INCOMPAT_TYPE), or NULL.
 */
const char *devstate_kernel_mdev_incompat_type(void);

/*
 * Start a server with extra command-line options (may be NULL), e.g.
 * "--mem-size 16M --start".  Returns once its sockets are listening.
 *
 * In kernel mode, create an instance of the mdev type instead, with the
 * options turned into the driver's module parameters (--mem-size,
 * --chunk-size, --mutate-rate, --dma-rate, --dma-addr, --dma-pages,
 * --start, --no-mmap, --no-p2p, --version, --fail) for the time of the
 * creation, and "--mdev-type TYPE" for another type; any other option
 * fails the test.
 */
DevstateServer *devstate_server_start(const char *opts);

/*
 * The -device option of a VM with this device as @id: vfio-user-pci on
 * the server's socket, or in kernel mode vfio-pci on the instance
 */
char *devstate_server_device(DevstateServer *srv, const char *id);

/*
 * One control-socket command; the reply line, without newline.  Kernel
 * mode answers "digest", "status" and "fail"/"delay"/"clear" from the
 * instance's sysfs attributes, as the server does.
 */
char *devstate_server_cmd(DevstateServer *srv, const char *cmd);

/*
 * The device's log so far: the server's stderr, or in kernel mode the
 * driver's kernel-log lines for the instance (its debug messages, which
 * start() enables), each as "devstate: MESSAGE" as the server logs it
 */
char *devstate_server_log(DevstateServer *srv);

/* The "digest" reply without its "digest " prefix */
char *devstate_server_digest(DevstateServer *srv);

/*
 * Wait for the server to exit by itself (it does when its client
 * disconnects); the exit status, or -1 if it did not exit in time.
 */
int devstate_server_wait(DevstateServer *srv, int timeout_ms);

/*
 * Kill (if still running) and free a server, removing its files; in
 * kernel mode, remove the instance (its VM must have quit)
 */
void devstate_server_stop(DevstateServer *srv);

/* Guest RAM where the MSI-X vector of devstate_msix_setup() writes */
#define DEVSTATE_MSIX_ADDR  (112 * 1024 * 1024)
#define DEVSTATE_MSIX_DATA  0x5a5a1234

/*
 * Enable MSI-X on @dev and program its vector 0 to write
 * DEVSTATE_MSIX_DATA to DEVSTATE_MSIX_ADDR.  The table BAR stays mapped
 * (dev->msix_table_bar) until qpci_iounmap().
 */
void devstate_msix_setup(QPCIDevice *dev);

/*
 * Raise vector 0 through the device's IRQ register in @bar0 and wait for
 * its message in guest RAM (then cleared)
 */
void devstate_msix_assert_fires(QTestState *qts, QPCIDevice *dev,
                                QPCIBar bar0);

/* query-migrate: the status, and in *@err (if set) the error-desc */
char *devstate_mig_status(QTestState *qts, char **err);

/*
 * Wait (at most 60 s) until the migration of @qts is no longer in
 * progress: its final status, and in *@err (if set) the error-desc
 */
char *devstate_mig_wait(QTestState *qts, char **err);

#endif /* VFIO_USER_DEVSTATE_UTIL_H */
