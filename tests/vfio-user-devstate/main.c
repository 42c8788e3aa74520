/*
 * vfio-user-devstate: a vfio-user reference device for the device-state
 * region interface, for tests and demos of VFIO live migration
 *
 *   vfio-user-devstate --socket PATH [--control PATH] [options]
 *
 * Control socket (--control), one command per line, one reply line:
 *   digest                  -> "digest <sha256 of device memory + config>"
 *   status                  -> "state=... mutate_count=... ..." (key=value)
 *   fail POINT:ERRNO[:COUNT] | delay POINT:MS | exit-at POINT
 *   clear POINT|all         -> "ok" or "error <reason>"
 *   ping                    -> "pong"
 * POINT: arc, arc:FROM->TO, config-get, config-set, mem-get, mem-set,
 * bitmap, version.  FROM and TO are state names (RUNNING, STOP, P2P, each
 * with or without |LOGGING, '+' for '|') or values.
 *
 * The device offers CAP_P2P unless --no-p2p, advertises --max-xfer as its
 * max_data_xfer_size and refuses any larger access.  Any reset (DEVICE_RESET,
 * an FLR through the AF capability, a disconnect or a new connection)
 * returns the state machine to RUNNING and ends the logging session.
 *
 * Copyright (c) 2025 The QEMU project contributors
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 */

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/socket.h>
#include <sys/un.h>

#include "devstate.h"

static Devstate devstate;

static bool parse_size(const char *s, uint64_t *out)
{
    char *end;
    guint64 v = g_ascii_strtoull(s, &end, 0);
    int shift = 0;

    switch (g_ascii_toupper(*end)) {
    case 'K':
        shift = 10;
        end++;
        break;
    case 'M':
        shift = 20;
        end++;
        break;
    case 'G':
        shift = 30;
        end++;
        break;
    }
    if (end == s || *end || v > (G_MAXUINT64 >> shift)) {
        return false;
    }
    *out = v << shift;
    return true;
}

void devstate_control_line(Devstate *ds, const char *line, GString *reply)
{
    g_auto(GStrv) words = g_strsplit(line, " ", 2);
    g_autoptr(GError) err = NULL;
    const char *cmd = words[0] ? words[0] : "";
    const char *arg = words[0] && words[1] ? words[1] : NULL;

    if (!strcmp(cmd, "digest")) {
        g_autofree char *d = devstate_digest(ds);

        g_string_printf(reply, "digest %s", d);
    } else if (!strcmp(cmd, "status")) {
        g_autofree char *s = devstate_status(ds);

        g_string_assign(reply, s);
    } else if (!strcmp(cmd, "ping")) {
        g_string_assign(reply, "pong");
    } else if (arg && (!strcmp(cmd, "fail") || !strcmp(cmd, "delay") ||
                       !strcmp(cmd, "exit-at") || !strcmp(cmd, "clear"))) {
        bool ok;

        g_mutex_lock(&ds->lock);
        ok = devstate_parse_fault(ds, cmd, arg, &err);
        g_mutex_unlock(&ds->lock);
        if (ok) {
            g_string_assign(reply, "ok");
        } else {
            g_string_printf(reply, "error %s",
                            err ? err->message : "bad argument");
        }
    } else {
        g_string_printf(reply, "error unknown command '%s'", cmd);
    }
}

static int unix_listen(const char *path)
{
    struct sockaddr_un un = { .sun_family = AF_UNIX };
    int fd;

    if (strlen(path) >= sizeof(un.sun_path)) {
        g_printerr("socket path too long: %s\n", path);
        exit(1);
    }
    strcpy(un.sun_path, path);
    fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    unlink(path);
    if (fd < 0 || bind(fd, (struct sockaddr *)&un, sizeof(un)) < 0 ||
        listen(fd, 4) < 0) {
        g_printerr("cannot listen on %s: %s\n", path, g_strerror(errno));
        exit(1);
    }
    return fd;
}

static bool valid_identity(const char *s)
{
    if (!*s || strlen(s) >= 64) {
        return false;
    }
    for (; *s; s++) {
        if (!g_ascii_isgraph(*s)) {
            return false;
        }
    }
    return true;
}

static void usage_error(GOptionContext *ctx, const char *msg)
{
    g_autofree char *help = g_option_context_get_help(ctx, TRUE, NULL);

    g_printerr("%s\n%s", msg, help);
    exit(1);
}

int main(int argc, char **argv)
{
    Devstate *ds = &devstate;
    g_autofree char *socket_path = NULL, *control_path = NULL;
    g_autofree char *mem_size = NULL, *chunk_size = NULL;
    g_autofree char *bitmap_size = NULL, *version = NULL;
    g_autofree char *max_xfer = NULL;
    g_autofree char *identity = NULL;
    g_auto(GStrv) fails = NULL, delays = NULL, exits = NULL;
    gint fd = -1, mutate_rate = 1000, dma_rate = 1000, dma_pages = 256;
    gint64 dma_addr = 0x1000000;
    gboolean persist = FALSE, start = FALSE, no_mmap = FALSE;
    gboolean verbose = FALSE, no_p2p = FALSE, no_devstate = FALSE;
    g_autofree char *misbehave = NULL;
    GOptionEntry entries[] = {
        { "socket", 's', 0, G_OPTION_ARG_FILENAME, &socket_path,
          "Listen for the vfio-user client on this UNIX socket", "PATH" },
        { "fd", 0, 0, G_OPTION_ARG_INT, &fd,
          "Use this inherited listening or connected socket", "N" },
        { "control", 'c', 0, G_OPTION_ARG_FILENAME, &control_path,
          "Listen for control commands on this UNIX socket", "PATH" },
        { "persist", 0, 0, G_OPTION_ARG_NONE, &persist,
          "Wait for a new client after a disconnect", NULL },
        { "mem-size", 'm', 0, G_OPTION_ARG_STRING, &mem_size,
          "Device memory size (K/M/G suffixes, default 64M)", "SIZE" },
        { "chunk-size", 0, 0, G_OPTION_ARG_STRING, &chunk_size,
          "DATA_MEMORY region size, 64K..4M (default 1M)", "SIZE" },
        { "bitmap-size", 0, 0, G_OPTION_ARG_STRING, &bitmap_size,
          "DATA_DIRTYBITMAP region size (default 64K)", "SIZE" },
        { "no-mmap", 0, 0, G_OPTION_ARG_NONE, &no_mmap,
          "Do not offer the data regions for mmap", NULL },
        { "max-xfer", 0, 0, G_OPTION_ARG_STRING, &max_xfer,
          "max_data_xfer_size to advertise, 4K..64M (default the larger "
          "of 1M and --chunk-size)", "SIZE" },
        { "no-p2p", 0, 0, G_OPTION_ARG_NONE, &no_p2p,
          "Withhold VFIO_DEVICE_DATA_CAP_P2P (no P2P state)", NULL },
        { "no-devstate", 0, 0, G_OPTION_ARG_NONE, &no_devstate,
          "Withhold the device-state regions (no migration interface)",
          NULL },
        { "misbehave", 0, 0, G_OPTION_ARG_STRING, &misbehave,
          "Break the interface on purpose, for tests of QEMU: big-set "
          "(a data set larger than the session's first) or endless-dirty "
          "(dirty memory while stopped)", "HOW" },
        { "mutate-rate", 0, 0, G_OPTION_ARG_INT, &mutate_rate,
          "Device-memory pages written per second (default 1000)", "N" },
        { "dma-rate", 0, 0, G_OPTION_ARG_INT, &dma_rate,
          "Guest pages written by DMA per second (default 1000)", "N" },
        { "dma-addr", 0, 0, G_OPTION_ARG_INT64, &dma_addr,
          "Guest-physical address of the DMA window (default 16M)", "ADDR" },
        { "dma-pages", 0, 0, G_OPTION_ARG_INT, &dma_pages,
          "Pages in the DMA window (default 256)", "N" },
        { "start", 0, 0, G_OPTION_ARG_NONE, &start,
          "Enable mutation and DMA from the start", NULL },
        { "identity", 0, 0, G_OPTION_ARG_STRING, &identity,
          "Device identity in migration_version (default "
          "vfio-user-devstate)", "NAME" },
        { "version", 0, 0, G_OPTION_ARG_STRING, &version,
          "Interface version MAJOR.MINOR.BUGFIX (default 1.0.0)", "VER" },
        { "fail", 0, 0, G_OPTION_ARG_STRING_ARRAY, &fails,
          "Fail POINT with ERRNO (COUNT times)", "POINT:ERRNO[:COUNT]" },
        { "delay", 0, 0, G_OPTION_ARG_STRING_ARRAY, &delays,
          "Delay POINT by MS milliseconds", "POINT:MS" },
        { "exit-at", 0, 0, G_OPTION_ARG_STRING_ARRAY, &exits,
          "Exit with status 3 when POINT is reached", "POINT" },
        { "verbose", 'v', 0, G_OPTION_ARG_NONE, &verbose,
          "Log control-region accesses and state changes to stderr", NULL },
        { NULL }
    };
    g_autoptr(GOptionContext) ctx =
        g_option_context_new("- vfio-user device-state reference device");
    g_autoptr(GError) err = NULL;
    const char *kinds[] = { "fail", "delay", "exit-at" };
    int control_fd = -1, accepting = 0, ret;
    socklen_t len = sizeof(accepting);
    unsigned i, j;

    g_option_context_add_main_entries(ctx, entries, NULL);
    if (!g_option_context_parse(ctx, &argc, &argv, &err)) {
        usage_error(ctx, err->message);
    }
    if (!socket_path == (fd < 0)) {
        usage_error(ctx, "exactly one of --socket and --fd is required");
    }
    ds->mem_size = 64 << 20;
    ds->chunk_size = 1 << 20;
    ds->bitmap_size = 64 << 10;
    if ((mem_size && !parse_size(mem_size, &ds->mem_size)) ||
        ds->mem_size < DEVSTATE_PAGE_SIZE || ds->mem_size > (64ull << 30) ||
        ds->mem_size % DEVSTATE_PAGE_SIZE) {
        usage_error(ctx, "--mem-size: a multiple of 4K, at most 64G");
    }
    if ((chunk_size && !parse_size(chunk_size, &ds->chunk_size)) ||
        ds->chunk_size < (64 << 10) || ds->chunk_size > (4 << 20) ||
        ds->chunk_size % DEVSTATE_PAGE_SIZE) {
        usage_error(ctx, "--chunk-size: a multiple of 4K in 64K..4M");
    }
    if ((bitmap_size && !parse_size(bitmap_size, &ds->bitmap_size)) ||
        ds->bitmap_size < 8 || ds->bitmap_size > (64 << 20) ||
        ds->bitmap_size % 8) {
        usage_error(ctx, "--bitmap-size: a multiple of 8 up to 64M");
    }
    ds->identity = g_strdup(identity ? identity : "vfio-user-devstate");
    if (!valid_identity(ds->identity)) {
        usage_error(ctx, "--identity: 1 to 63 characters, no blanks");
    }
    ds->max_xfer = MAX(1 << 20, ds->chunk_size);
    if (max_xfer && (!parse_size(max_xfer, &ds->max_xfer) ||
                     ds->max_xfer < 4096 || ds->max_xfer > (64 << 20))) {
        usage_error(ctx, "--max-xfer: a size in 4K..64M");
    }
    ds->ver_major = 1;
    if (version) {
        g_autofree char *full = g_strdup_printf("x-%s", version);
        g_autofree char *id = NULL;

        if (strchr(version, '\n') ||
            !devstate_parse_version(full, &id, &ds->ver_major,
                                    &ds->ver_minor, &ds->ver_bugfix) ||
            strcmp(id, "x")) {
            usage_error(ctx, "--version: MAJOR.MINOR.BUGFIX, decimal");
        }
    }
    if (mutate_rate < 0 || dma_rate < 0 || dma_pages < 0) {
        usage_error(ctx, "rates and page counts must not be negative");
    }
    ds->no_mmap = no_mmap;
    ds->no_p2p = no_p2p;
    ds->no_devstate = no_devstate;
    if (misbehave && !strcmp(misbehave, "big-set")) {
        ds->misbehave_big_set = true;
    } else if (misbehave && !strcmp(misbehave, "endless-dirty")) {
        ds->misbehave_endless_dirty = true;
    } else if (misbehave) {
        usage_error(ctx, "--misbehave: big-set or endless-dirty");
    }
    ds->verbose = verbose;
    ds->init_regs[DEVSTATE_REG_CTRL / 4] =
        start ? DEVSTATE_CTRL_MUTATE | DEVSTATE_CTRL_DMA : 0;
    ds->init_regs[DEVSTATE_REG_MUTATE_RATE / 4] = mutate_rate;
    ds->init_regs[DEVSTATE_REG_DMA_RATE / 4] = dma_rate;
    ds->init_regs[DEVSTATE_REG_DMA_ADDR_LO / 4] = dma_addr;
    ds->init_regs[DEVSTATE_REG_DMA_ADDR_HI / 4] = (uint64_t)dma_addr >> 32;
    ds->init_regs[DEVSTATE_REG_DMA_PAGES / 4] = dma_pages;
    for (i = 0; i < G_N_ELEMENTS(kinds); i++) {
        GStrv list = i == 0 ? fails : i == 1 ? delays : exits;

        for (j = 0; list && list[j]; j++) {
            if (!devstate_parse_fault(ds, kinds[i], list[j], &err)) {
                usage_error(ctx, err ? err->message : "bad --exit-at");
            }
        }
    }

    signal(SIGPIPE, SIG_IGN);
    if (socket_path) {
        fd = unix_listen(socket_path);
        accepting = 1;
    } else if (getsockopt(fd, SOL_SOCKET, SO_ACCEPTCONN, &accepting,
                          &len) < 0) {
        g_printerr("--fd %d: not a socket: %s\n", fd, g_strerror(errno));
        return 1;
    }
    if (control_path) {
        control_fd = unix_listen(control_path);
    }

    devstate_dev_init(ds);
    devstate_regions_init(ds);
    devstate_dev_start(ds);
    devstate_log(ds, "ready: %s, memory %" G_GUINT64_FORMAT " bytes, "
                 "version %s", socket_path ? socket_path : "fd",
                 ds->mem_size, ds->version_str);
    ret = vfu_serve(ds, fd, accepting, persist, control_fd);
    devstate_dev_stop(ds);
    if (socket_path) {
        unlink(socket_path);
    }
    if (control_path) {
        unlink(control_path);
    }
    return ret;
}
