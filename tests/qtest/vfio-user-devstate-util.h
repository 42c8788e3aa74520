/*
 * Helpers for qtests that use the vfio-user-devstate reference device
 *
 * Copyright (c) 2025 The QEMU project contributors
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 */

#ifndef VFIO_USER_DEVSTATE_UTIL_H
#define VFIO_USER_DEVSTATE_UTIL_H

#include "../vfio-user-devstate/devstate-regs.h"

typedef struct DevstateServer {
    pid_t pid;
    char *dir;          /* temporary directory of the sockets and log */
    char *sock;         /* vfio-user socket, for socket.path= */
    char *ctl;          /* control socket */
    char *log;          /* the server's stderr (it runs with -v) */
} DevstateServer;

/* The server binary ($DEVSTATE_SERVER_BINARY), or NULL to skip tests */
const char *devstate_server_binary(void);

/*
 * Start a server with extra command-line options (may be NULL), e.g.
 * "--mem-size 16M --start".  Returns once its sockets are listening.
 */
DevstateServer *devstate_server_start(const char *opts);

/* One control-socket command; the reply line, without newline */
char *devstate_server_cmd(DevstateServer *srv, const char *cmd);

/* The "digest" reply without its "digest " prefix */
char *devstate_server_digest(DevstateServer *srv);

/*
 * Wait for the server to exit by itself (it does when its client
 * disconnects); the exit status, or -1 if it did not exit in time.
 */
int devstate_server_wait(DevstateServer *srv, int timeout_ms);

/* Kill (if still running) and free a server, removing its files */
void devstate_server_stop(DevstateServer *srv);

#endif /* VFIO_USER_DEVSTATE_UTIL_H */
