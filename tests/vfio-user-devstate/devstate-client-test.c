/*
 * vfio-user-devstate protocol tests: a client that drives a device of the
 * device-state region interface without QEMU, through one of two
 * transports, with the same cases:
 *
 * - vfio-user (the default): the reference device, one server process per
 *   case, taken from $DEVSTATE_SERVER_BINARY or from the first argument
 *   that is not an option; its control socket gives the digest, the status
 *   and fault injection;
 * - kernel VFIO (--vfio-sysfsdev=/sys/bus/mdev/devices/UUID, once, or
 *   twice for the cases that need a source and a destination): the device
 *   fd of an mdev device through a legacy type1 container; the device's
 *   sysfs attributes digest, status, fail and migration_version are its
 *   control channel.
 *
 * A case that cannot apply to the transport in use, or that needs device
 * options the kernel device does not have, says so with g_test_skip().
 *
 * Copyright (c) 2025 The QEMU project contributors
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 */

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/un.h>
#include <sys/wait.h>

#include <glib.h>
#include <linux/vfio.h>

#include "hw/vfio-user/protocol.h"
#include "devstate-regs.h"

/*
 * Region numbers as the reference device has them; a kernel device's
 * regions are found by type and mapped to these numbers.
 */
#define BAR0_REGION     0
#define BAR1_REGION     1
#define CONFIG_REGION   7
#define CTL_REGION      9
#define DATA_CONFIG     10
#define DATA_MEMORY     11
#define DATA_BITMAP     12
#define VERSION_REGION  13
#define NUM_REGIONS     14

#define CTL_VERSION     0
#define CTL_STATE       4
#define CTL_CAPS        8
#define CTL_CFG_ACTION  16
#define CTL_CFG_SIZE    24
#define CTL_MEM_ACTION  32
#define CTL_MEM_SIZE    40
#define CTL_MEM_POS     48
#define CTL_MEM_PENDING 56
#define CTL_SYS_START   64
#define CTL_SYS_NR      72
#define CTL_SYS_ACTION  80
#define CTL_SYS_SHIFT   84

#define RUNNING         VFIO_DEVICE_DATA_STATE_RUNNING
#define STOP            VFIO_DEVICE_DATA_STATE_STOP
#define LOGGING         VFIO_DEVICE_DATA_STATE_LOGGING
#define P2P             VFIO_DEVICE_DATA_STATE_P2P

#define GET_BUFFER      VFIO_DEVICE_DATA_ACTION_GET_BUFFER
#define SET_BUFFER      VFIO_DEVICE_DATA_ACTION_SET_BUFFER

#define MEM_HDR_SIZE    32
#define MEM_REC_SIZE    (8 + 4096)

G_STATIC_ASSERT(sizeof(struct vfio_device_state_ctl) == 88);

static const char *server_binary;
static char *sysfsdevs[2];
static unsigned nr_sysfsdevs;
static bool kernel_busy[2];

typedef enum {
    TRANSPORT_USER,
    TRANSPORT_KERNEL,
} Transport;

static Transport transport;

/* A device: a reference-device server, or a kernel device in sysfs */
typedef struct {
    Transport kind;
    GPid pid;
    char *dir;
    char *sock;
    char *ctl;
    char *log;
    char *sysfsdev;         /* kernel */
    unsigned slot;          /* kernel: index in sysfsdevs */
    GHashTable *regs;       /* kernel: BAR0 registers to set at open */
} Server;

typedef struct {
    Server *s;
    int fd;                 /* vfio-user socket, or the VFIO device fd */
    int container, group;   /* kernel */
    uint16_t id;
    uint64_t max_xfer;      /* vfio-user: the server's max_data_xfer_size */
    uint32_t index[NUM_REGIONS];    /* the device's index of each region */
    uint64_t offset[NUM_REGIONS];   /* kernel: offset in the device fd */
    uint64_t size[NUM_REGIONS];
    uint32_t flags[NUM_REGIONS];
    uint8_t *map[NUM_REGIONS];  /* mmapped data regions, if any */
    uint64_t map_size[NUM_REGIONS];
} Client;

static bool is_kernel(Server *s)
{
    return s->kind == TRANSPORT_KERNEL;
}

/* Skip a case the kernel transport cannot run; true when skipped */
static bool user_only(const char *why)
{
    if (transport == TRANSPORT_KERNEL) {
        g_autofree char *msg = g_strdup_printf("vfio-user transport only: %s",
                                               why);

        g_test_skip(msg);
        return true;
    }
    return false;
}

/* Server processes */

static bool wait_for_path(const char *path)
{
    int i;

    for (i = 0; i < 500; i++) {
        if (g_file_test(path, G_FILE_TEST_EXISTS)) {
            return true;
        }
        g_usleep(10 * 1000);
    }
    return false;
}

/*
 * A kernel device has its own geometry (the cases read it) and BAR0
 * registers for the rates and the DMA window; any other option of the
 * reference device makes the case skip.
 */
static Server *kernel_open(const char *args)
{
    static const struct {
        const char *opt;
        int reg;            /* -1: geometry, read from the device */
    } opts[] = {
        { "--mem-size", -1 }, { "--chunk-size", -1 },
        { "--bitmap-size", -1 },
        { "--mutate-rate", DEVSTATE_REG_MUTATE_RATE },
        { "--dma-rate", DEVSTATE_REG_DMA_RATE },
        { "--dma-addr", DEVSTATE_REG_DMA_ADDR_LO },
        { "--dma-pages", DEVSTATE_REG_DMA_PAGES },
    };
    g_auto(GStrv) argv = NULL;
    Server *s;
    unsigned i, j, slot;

    for (slot = 0; slot < nr_sysfsdevs && kernel_busy[slot]; slot++) {
        /* the first free device */
    }
    if (slot == nr_sysfsdevs) {
        g_autofree char *msg = g_strdup_printf(
            "the case needs %u kernel devices, --vfio-sysfsdev gave %u",
            nr_sysfsdevs + 1, nr_sysfsdevs);

        g_test_skip(msg);
        return NULL;
    }
    s = g_new0(Server, 1);
    s->kind = TRANSPORT_KERNEL;
    s->sysfsdev = sysfsdevs[slot];
    s->slot = slot;
    s->regs = g_hash_table_new(NULL, NULL);
    g_assert_true(g_shell_parse_argv(args && *args ? args : "true", NULL,
                                     &argv, NULL));
    for (i = 0; argv[i]; i++) {
        if (!strcmp(argv[i], "true")) {
            continue;
        }
        if (!strcmp(argv[i], "--start")) {
            g_hash_table_insert(s->regs,
                                GUINT_TO_POINTER(DEVSTATE_REG_CTRL + 1),
                                GUINT_TO_POINTER(DEVSTATE_CTRL_MUTATE |
                                                 DEVSTATE_CTRL_DMA));
            continue;
        }
        for (j = 0; j < G_N_ELEMENTS(opts); j++) {
            if (!strcmp(argv[i], opts[j].opt) && argv[i + 1]) {
                break;
            }
        }
        if (j == G_N_ELEMENTS(opts)) {
            g_autofree char *msg = g_strdup_printf(
                "kernel transport: the device has no option %s", argv[i]);

            g_test_skip(msg);
            g_hash_table_destroy(s->regs);
            g_free(s);
            return NULL;
        }
        i++;
        if (opts[j].reg >= 0) {
            g_hash_table_insert(s->regs, GUINT_TO_POINTER(opts[j].reg + 1),
                                GUINT_TO_POINTER(
                                    g_ascii_strtoull(argv[i], NULL, 0)));
        }
    }
    kernel_busy[slot] = true;
    return s;
}

/* A device for the case, NULL (and the case skipped) if there is none */
static Server *server_start(const char *args)
{
    Server *s;
    g_autofree char *cmd = NULL;
    g_auto(GStrv) argv = NULL;
    g_autoptr(GError) err = NULL;
    int logfd;

    if (transport == TRANSPORT_KERNEL) {
        return kernel_open(args);
    }
    s = g_new0(Server, 1);
    s->kind = TRANSPORT_USER;
    s->dir = g_dir_make_tmp("devstate-XXXXXX", &err);
    g_assert_no_error(err);
    s->sock = g_build_filename(s->dir, "vfu.sock", NULL);
    s->ctl = g_build_filename(s->dir, "ctl.sock", NULL);
    s->log = g_build_filename(s->dir, "server.log", NULL);
    cmd = g_strdup_printf("%s --socket %s --control %s -v %s", server_binary,
                          s->sock, s->ctl, args ? args : "");
    g_assert_true(g_shell_parse_argv(cmd, NULL, &argv, &err));
    logfd = open(s->log, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    g_assert_cmpint(logfd, >=, 0);
    s->pid = fork();
    g_assert_cmpint(s->pid, >=, 0);
    if (s->pid == 0) {
        dup2(logfd, STDERR_FILENO);
        execv(argv[0], argv);
        _exit(127);
    }
    close(logfd);
    g_assert_true(wait_for_path(s->ctl));
    return s;
}

/* Exit status of the server, waiting at most a few seconds */
static int server_wait(Server *s)
{
    int status, i;

    for (i = 0; i < 500; i++) {
        if (waitpid(s->pid, &status, WNOHANG) == s->pid) {
            s->pid = 0;
            return WIFEXITED(status) ? WEXITSTATUS(status) : 128;
        }
        g_usleep(10 * 1000);
    }
    return -1;
}

static void server_stop(Server *s)
{
    if (!s) {
        return;
    }
    if (is_kernel(s)) {
        kernel_busy[s->slot] = false;
        g_hash_table_destroy(s->regs);
        g_free(s);
        return;
    }
    if (s->pid) {
        kill(s->pid, SIGTERM);
        waitpid(s->pid, NULL, 0);
    }
    unlink(s->sock);
    unlink(s->ctl);
    unlink(s->log);
    rmdir(s->dir);
    g_free(s->dir);
    g_free(s->sock);
    g_free(s->ctl);
    g_free(s->log);
    g_free(s);
}

static int unix_connect(const char *path)
{
    struct sockaddr_un un = { .sun_family = AF_UNIX };
    struct timeval tv = { .tv_sec = 10 };
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);

    g_assert_cmpint(fd, >=, 0);
    g_strlcpy(un.sun_path, path, sizeof(un.sun_path));
    g_assert_cmpint(connect(fd, (struct sockaddr *)&un, sizeof(un)), ==, 0);
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    return fd;
}

/* The control channel: a sysfs attribute of a kernel device */
static char *sysfs_read(Server *s, const char *attr)
{
    g_autofree char *path = g_build_filename(s->sysfsdev, attr, NULL);
    g_autoptr(GError) err = NULL;
    char *text = NULL;

    g_file_get_contents(path, &text, NULL, &err);
    g_assert_no_error(err);
    return g_strchomp(text);
}

static int sysfs_write(Server *s, const char *attr, const char *val)
{
    g_autofree char *path = g_build_filename(s->sysfsdev, attr, NULL);
    int fd = open(path, O_WRONLY | O_CLOEXEC), ret = 0;

    g_assert_cmpint(fd, >=, 0);
    if (write(fd, val, strlen(val)) != (ssize_t)strlen(val)) {
        ret = errno;
    }
    close(fd);
    return ret;
}

/*
 * One command on the control channel, the reply line without newline:
 * digest, status, fail POINT:ERRNO[:COUNT] (and, for the reference
 * device only, the rest of its control commands).
 */
static char *server_cmd(Server *s, const char *cmd)
{
    int fd;
    GString *reply;
    char c;

    if (is_kernel(s)) {
        if (!strcmp(cmd, "digest")) {
            g_autofree char *d = sysfs_read(s, "digest");

            return g_strdup_printf("digest %s", d);
        }
        if (!strcmp(cmd, "status")) {
            return sysfs_read(s, "status");
        }
        g_assert_true(g_str_has_prefix(cmd, "fail "));
        return g_strdup(sysfs_write(s, "fail", cmd + 5) ? "error" : "ok");
    }
    fd = unix_connect(s->ctl);
    reply = g_string_new(NULL);
    g_assert_cmpint(write(fd, cmd, strlen(cmd)), ==, strlen(cmd));
    g_assert_cmpint(write(fd, "\n", 1), ==, 1);
    while (read(fd, &c, 1) == 1 && c != '\n') {
        g_string_append_c(reply, c);
    }
    close(fd);
    return g_string_free(reply, FALSE);
}

static void server_fail(Server *s, const char *arg)
{
    g_autofree char *cmd = g_strdup_printf("fail %s", arg);
    g_autofree char *reply = server_cmd(s, cmd);

    g_assert_cmpstr(reply, ==, "ok");
}

static char *server_digest(Server *s)
{
    char *d = server_cmd(s, "digest");

    g_assert_true(g_str_has_prefix(d, "digest "));
    return d;
}

static uint64_t status_value(Server *s, const char *key)
{
    g_autofree char *st = server_cmd(s, "status");
    g_autofree char *spaced = g_strdup_printf(" %s", st);
    g_autofree char *k = g_strdup_printf(" %s=", key);
    char *p = strstr(spaced, k);

    if (!p) {
        g_test_message("status of the device has no '%s': %s", key, st);
    }
    g_assert_nonnull(p);
    return g_ascii_strtoull(p + strlen(k), NULL, 0);
}

/*
 * Wait (bounded, generously: the workers may be slow on a loaded machine
 * or under nested TCG) until the status value @key exceeds @than.
 */
static uint64_t wait_status_above(Server *s, const char *key, uint64_t than)
{
    gint64 deadline = g_get_monotonic_time() + 60 * G_USEC_PER_SEC;
    uint64_t v;

    while ((v = status_value(s, key)) <= than &&
           g_get_monotonic_time() < deadline) {
        g_usleep(2 * 1000);
    }
    g_assert_cmpint(v, >, than);
    return v;
}

/* The reference device's log: what its -v printed (vfio-user only) */
static bool log_contains(Server *s, const char *text)
{
    g_autofree char *log = NULL;

    g_assert_false(is_kernel(s));
    g_assert_true(g_file_get_contents(s->log, &log, NULL, NULL));
    return strstr(log, text) != NULL;
}

/* vfio-user messages */

static void send_msg(Client *c, uint16_t cmd, const void *payload,
                     uint32_t len, const int *fds, unsigned nfds)
{
    VFIOUserHdr hdr = {
        .id = ++c->id, .command = cmd, .size = sizeof(hdr) + len,
    };
    union {
        char buf[CMSG_SPACE(sizeof(int) * 8)];
        struct cmsghdr align;
    } u;
    struct iovec iov[2] = {
        { .iov_base = &hdr, .iov_len = sizeof(hdr) },
        { .iov_base = (void *)payload, .iov_len = len },
    };
    struct msghdr msg = { .msg_iov = iov, .msg_iovlen = 2 };
    size_t sent = 0;
    ssize_t n;

    g_assert_cmpint(nfds, <=, 8);
    if (nfds) {
        struct cmsghdr *cm;

        msg.msg_control = u.buf;
        msg.msg_controllen = CMSG_SPACE(sizeof(int) * nfds);
        cm = CMSG_FIRSTHDR(&msg);
        cm->cmsg_level = SOL_SOCKET;
        cm->cmsg_type = SCM_RIGHTS;
        cm->cmsg_len = CMSG_LEN(sizeof(int) * nfds);
        memcpy(CMSG_DATA(cm), fds, sizeof(int) * nfds);
    }
    n = sendmsg(c->fd, &msg, MSG_NOSIGNAL);
    g_assert_cmpint(n, >, 0);
    sent = n;
    /* a big message may go in parts */
    while (sent < hdr.size) {
        const uint8_t *p = sent < sizeof(hdr) ? (uint8_t *)&hdr + sent :
            (const uint8_t *)payload + (sent - sizeof(hdr));
        size_t left = sent < sizeof(hdr) ? sizeof(hdr) - sent :
            hdr.size - sent;

        n = send(c->fd, p, left, MSG_NOSIGNAL);
        g_assert_cmpint(n, >, 0);
        sent += n;
    }
}

static void send_raw(Client *c, const void *buf, size_t len)
{
    g_assert_cmpint(send(c->fd, buf, len, MSG_NOSIGNAL), ==, len);
}

/* A reply: 0 or its errno; payload in *out, a passed fd in *fd */
static int recv_reply(Client *c, GByteArray *out, int *fd)
{
    VFIOUserHdr hdr;
    union {
        char buf[CMSG_SPACE(sizeof(int) * 4)];
        struct cmsghdr align;
    } u;
    struct iovec iov = { .iov_base = &hdr, .iov_len = sizeof(hdr) };
    struct msghdr msg = {
        .msg_iov = &iov, .msg_iovlen = 1,
        .msg_control = u.buf, .msg_controllen = sizeof(u.buf),
    };
    struct cmsghdr *cm;
    size_t got = 0, len;

    g_assert_cmpint(recvmsg(c->fd, &msg, MSG_WAITALL), ==, sizeof(hdr));
    for (cm = CMSG_FIRSTHDR(&msg); cm; cm = CMSG_NXTHDR(&msg, cm)) {
        int rfd;

        g_assert_cmpint(cm->cmsg_type, ==, SCM_RIGHTS);
        g_assert_cmpint(cm->cmsg_len, ==, CMSG_LEN(sizeof(int)));
        memcpy(&rfd, CMSG_DATA(cm), sizeof(int));
        g_assert_nonnull(fd);
        *fd = rfd;
    }
    g_assert_cmpint(hdr.id, ==, c->id);
    g_assert_cmpint(hdr.flags & VFIO_USER_TYPE, ==, VFIO_USER_REPLY);
    g_assert_cmpint(hdr.size, >=, sizeof(hdr));
    len = hdr.size - sizeof(hdr);
    if (out) {
        g_byte_array_set_size(out, len);
    }
    while (got < len) {
        uint8_t tmp[4096];
        ssize_t n = read(c->fd, out ? out->data + got : tmp,
                         out ? len - got : MIN(len - got, sizeof(tmp)));

        g_assert_cmpint(n, >, 0);
        got += n;
    }
    if (hdr.flags & VFIO_USER_ERROR) {
        g_assert_cmpint(hdr.size, ==, sizeof(hdr));
        g_assert_cmpint(hdr.error_reply, !=, 0);
        return hdr.error_reply;
    }
    return 0;
}

static int request(Client *c, uint16_t cmd, const void *payload, uint32_t len,
                   GByteArray *out)
{
    send_msg(c, cmd, payload, len, NULL, 0);
    return recv_reply(c, out, NULL);
}

/* VERSION; the server's max_data_xfer_size into c->max_xfer */
static int negotiate(Client *c)
{
    static const char caps[] = "{\"capabilities\":{\"max_msg_fds\":16,"
        "\"max_data_xfer_size\":1048576}}";
    g_autofree uint8_t *v = g_malloc0(4 + sizeof(caps));
    g_autoptr(GByteArray) out = g_byte_array_new();
    const char *p;
    int err;

    memcpy(v + 4, caps, sizeof(caps));
    err = request(c, VFIO_USER_VERSION, v, 4 + sizeof(caps), out);
    if (err) {
        return err;
    }
    g_byte_array_append(out, (const guint8 *)"", 1);
    p = strstr((char *)out->data + 4, "\"max_data_xfer_size\":");
    c->max_xfer = p ? g_ascii_strtoull(p + 21, NULL, 10) :
        VFIO_USER_DEF_MAX_XFER;
    g_assert_cmpint(c->max_xfer, >=, 4096);
    return 0;
}

/* Region I/O of either transport: 0 or an errno */
static int region_read(Client *c, uint32_t region, uint64_t off,
                       uint32_t count, void *buf)
{
    struct {
        uint64_t offset;
        uint32_t region, count;
    } rw = { off, c->index[region], count };
    g_autoptr(GByteArray) out = NULL;
    int err;

    if (is_kernel(c->s)) {
        ssize_t n = pread(c->fd, buf, count, c->offset[region] + off);

        return n < 0 ? errno : n == count ? 0 : EIO;
    }
    out = g_byte_array_new();
    err = request(c, VFIO_USER_REGION_READ, &rw, sizeof(rw), out);
    if (!err) {
        g_assert_cmpint(out->len, ==, sizeof(rw) + count);
        memcpy(buf, out->data + sizeof(rw), count);
    }
    return err;
}

static int region_write(Client *c, uint32_t region, uint64_t off,
                        uint32_t count, const void *buf)
{
    g_autofree uint8_t *msg = NULL;
    struct {
        uint64_t offset;
        uint32_t region, count;
    } rw = { off, c->index[region], count };

    if (is_kernel(c->s)) {
        ssize_t n = pwrite(c->fd, buf, count, c->offset[region] + off);

        return n < 0 ? errno : n == count ? 0 : EIO;
    }
    msg = g_malloc(16 + count);
    memcpy(msg, &rw, sizeof(rw));
    memcpy(msg + 16, buf, count);
    return request(c, VFIO_USER_REGION_WRITE, msg, 16 + count, NULL);
}

static int device_reset(Client *c)
{
    if (is_kernel(c->s)) {
        return ioctl(c->fd, VFIO_DEVICE_RESET) ? errno : 0;
    }
    return request(c, VFIO_USER_DEVICE_RESET, NULL, 0, NULL);
}

/*
 * SET_IRQS with eventfd data for vectors [start, start + count): fds, or
 * none to remove them; count 0 with no fds disables the index.
 */
static int set_irqs(Client *c, uint32_t index, uint32_t start, uint32_t count,
                    const int *fds)
{
    struct {
        uint32_t argsz, flags, index, start, count;
        int32_t data[8];
    } irqs = {
        20, VFIO_IRQ_SET_ACTION_TRIGGER |
        (count ? VFIO_IRQ_SET_DATA_EVENTFD : VFIO_IRQ_SET_DATA_NONE),
        index, start, count,
    };
    unsigned i;

    g_assert_cmpint(count, <=, 8);
    if (is_kernel(c->s)) {
        for (i = 0; i < count; i++) {
            irqs.data[i] = fds ? fds[i] : -1;
        }
        irqs.argsz += count ? 4 * count : 0;
        return ioctl(c->fd, VFIO_DEVICE_SET_IRQS, &irqs) ? errno : 0;
    }
    send_msg(c, VFIO_USER_DEVICE_SET_IRQS, &irqs, 20, fds, fds ? count : 0);
    return recv_reply(c, NULL, NULL);
}

static uint64_t ctl_read(Client *c, unsigned off, unsigned width)
{
    uint64_t v = 0;

    g_assert_cmpint(region_read(c, CTL_REGION, off, width, &v), ==, 0);
    return v;
}

static int ctl_write(Client *c, unsigned off, unsigned width, uint64_t v)
{
    return region_write(c, CTL_REGION, off, width, &v);
}

static int set_state(Client *c, uint32_t state)
{
    return ctl_write(c, CTL_STATE, 4, state);
}

static uint32_t get_state(Client *c)
{
    return ctl_read(c, CTL_STATE, 4);
}

static uint32_t bar0_read(Client *c, unsigned reg)
{
    uint32_t v;

    g_assert_cmpint(region_read(c, BAR0_REGION, reg, 4, &v), ==, 0);
    return v;
}

static void bar0_write(Client *c, unsigned reg, uint32_t v)
{
    g_assert_cmpint(region_write(c, BAR0_REGION, reg, 4, &v), ==, 0);
}

/* Region info: the whole reply payload, and the fd it carried (or -1) */
static GByteArray *region_info(Client *c, uint32_t index, uint32_t argsz,
                               int *err, int *fd)
{
    struct vfio_region_info info = { .argsz = argsz, .index = index };
    GByteArray *out = g_byte_array_new();

    *fd = -1;
    if (is_kernel(c->s)) {
        g_byte_array_set_size(out, MAX(argsz, sizeof(info)));
        memset(out->data, 0, out->len);
        memcpy(out->data, &info, sizeof(info));
        *err = ioctl(c->fd, VFIO_DEVICE_GET_REGION_INFO, out->data) ? errno :
            0;
        if (!*err) {
            struct vfio_region_info *ri = (void *)out->data;

            g_byte_array_set_size(out, MIN(out->len, ri->argsz));
        }
        return out;
    }
    send_msg(c, VFIO_USER_DEVICE_GET_REGION_INFO, &info, sizeof(info), NULL,
             0);
    *err = recv_reply(c, out, fd);
    return out;
}

/* A cap of a region info reply, or NULL */
static void *find_cap(GByteArray *info, uint16_t id)
{
    struct vfio_region_info *ri = (void *)info->data;
    uint32_t off = ri->flags & VFIO_REGION_INFO_FLAG_CAPS ? ri->cap_offset : 0;

    while (off) {
        struct vfio_info_cap_header *h = (void *)(info->data + off);

        g_assert_cmpint(off + sizeof(*h), <=, info->len);
        if (h->id == id) {
            return h;
        }
        off = h->next;
    }
    return NULL;
}

/*
 * Find the regions: BARs and config space by index, the device-state
 * regions by their type capability (all five must be there).
 */
static void client_find_regions(Client *c)
{
    struct vfio_device_info di = { .argsz = sizeof(di) };
    g_autoptr(GByteArray) out = g_byte_array_new();
    unsigned i, found = 0;

    for (i = 0; i < NUM_REGIONS; i++) {
        c->index[i] = i;
    }
    if (is_kernel(c->s)) {
        g_assert_cmpint(ioctl(c->fd, VFIO_DEVICE_GET_INFO, &di), ==, 0);
    } else {
        g_assert_cmpint(request(c, VFIO_USER_DEVICE_GET_INFO, &di, 16, out),
                        ==, 0);
        memcpy(&di, out->data, 16);
    }
    g_assert_true(di.flags & VFIO_DEVICE_FLAGS_PCI);
    for (i = 0; i < di.num_regions; i++) {
        g_autoptr(GByteArray) info = NULL;
        struct vfio_region_info *ri;
        struct vfio_region_info_cap_type *type;
        int err, fd;
        unsigned n = i;

        info = region_info(c, i, 512, &err, &fd);
        g_assert_cmpint(err, ==, 0);
        if (fd >= 0) {
            close(fd);
        }
        ri = (void *)info->data;
        g_assert_cmpint(ri->argsz, <=, 512);
        type = find_cap(info, VFIO_REGION_INFO_CAP_TYPE);
        if (type && type->type == VFIO_REGION_TYPE_DEVICE_STATE) {
            g_assert_cmpint(type->subtype, >=, 1);
            g_assert_cmpint(type->subtype, <=, 5);
            n = CTL_REGION + type->subtype - 1;
            g_assert_cmpint(c->size[n], ==, 0);
            found |= 1u << (type->subtype - 1);
        } else if (i >= CTL_REGION) {
            continue;
        }
        c->index[n] = i;
        c->offset[n] = ri->offset;
        c->size[n] = ri->size;
        c->flags[n] = ri->flags;
    }
    g_assert_cmphex(found, ==, 0x1f);
}

/* Kernel VFIO: a legacy type1 container with the device's group */
static void kernel_connect(Client *c)
{
    Server *s = c->s;
    g_autofree char *link = g_build_filename(s->sysfsdev, "iommu_group",
                                             NULL);
    g_autofree char *target = g_file_read_link(link, NULL);
    g_autofree char *group = NULL, *uuid = NULL;
    struct vfio_group_status st = { .argsz = sizeof(st) };
    GHashTableIter it;
    gpointer k, v;

    if (!target) {
        g_test_message("%s: no iommu_group: %s", s->sysfsdev,
                       g_strerror(errno));
    }
    g_assert_nonnull(target);
    group = g_strdup_printf("/dev/vfio/%s", strrchr(target, '/') + 1);
    uuid = g_path_get_basename(s->sysfsdev);
    c->container = open("/dev/vfio/vfio", O_RDWR | O_CLOEXEC);
    g_assert_cmpint(c->container, >=, 0);
    g_assert_cmpint(ioctl(c->container, VFIO_GET_API_VERSION), ==,
                    VFIO_API_VERSION);
    c->group = open(group, O_RDWR | O_CLOEXEC);
    if (c->group < 0) {
        g_test_message("%s: %s", group, g_strerror(errno));
    }
    g_assert_cmpint(c->group, >=, 0);
    g_assert_cmpint(ioctl(c->group, VFIO_GROUP_GET_STATUS, &st), ==, 0);
    g_assert_true(st.flags & VFIO_GROUP_FLAGS_VIABLE);
    g_assert_cmpint(ioctl(c->group, VFIO_GROUP_SET_CONTAINER, &c->container),
                    ==, 0);
    if (ioctl(c->container, VFIO_SET_IOMMU, VFIO_TYPE1v2_IOMMU)) {
        g_assert_cmpint(ioctl(c->container, VFIO_SET_IOMMU,
                              VFIO_TYPE1_IOMMU), ==, 0);
    }
    c->fd = ioctl(c->group, VFIO_GROUP_GET_DEVICE_FD, uuid);
    if (c->fd < 0) {
        g_test_message("%s: VFIO_GROUP_GET_DEVICE_FD: %s", uuid,
                       g_strerror(errno));
    }
    g_assert_cmpint(c->fd, >=, 0);
    client_find_regions(c);
    /* a fresh device for every case: RUNNING, no session */
    g_assert_cmpint(device_reset(c), ==, 0);
    g_hash_table_iter_init(&it, s->regs);
    while (g_hash_table_iter_next(&it, &k, &v)) {
        unsigned reg = GPOINTER_TO_UINT(k) - 1;

        bar0_write(c, reg, GPOINTER_TO_UINT(v));
    }
}

static Client *client_connect(Server *s)
{
    Client *c = g_new0(Client, 1);

    c->s = s;
    c->container = c->group = -1;
    if (is_kernel(s)) {
        kernel_connect(c);
        return c;
    }
    c->fd = unix_connect(s->sock);
    g_assert_cmpint(negotiate(c), ==, 0);
    client_find_regions(c);
    return c;
}

/* A vfio-user connection that has not negotiated yet */
static Client *client_raw(Server *s)
{
    Client *c = g_new0(Client, 1);
    unsigned i;

    c->s = s;
    c->container = c->group = -1;
    c->fd = unix_connect(s->sock);
    c->max_xfer = VFIO_USER_DEF_MAX_XFER;
    for (i = 0; i < NUM_REGIONS; i++) {
        c->index[i] = i;
    }
    return c;
}

static void client_close(Client *c)
{
    unsigned i;

    for (i = 0; i < NUM_REGIONS; i++) {
        if (c->map[i]) {
            munmap(c->map[i], c->map_size[i]);
        }
    }
    close(c->fd);
    if (c->group >= 0) {
        close(c->group);
    }
    if (c->container >= 0) {
        close(c->container);
    }
    g_free(c);
}

/* mmap the data regions; false when the device offers no mmap for one */
static bool client_map_regions(Client *c)
{
    unsigned i;

    for (i = DATA_CONFIG; i <= DATA_BITMAP; i++) {
        g_autoptr(GByteArray) info = NULL;
        struct vfio_region_info *ri;
        int err, fd;

        info = region_info(c, c->index[i], 512, &err, &fd);
        g_assert_cmpint(err, ==, 0);
        ri = (void *)info->data;
        if (!(ri->flags & VFIO_REGION_INFO_FLAG_MMAP)) {
            return false;
        }
        if (is_kernel(c->s)) {
            fd = c->fd;
        }
        g_assert_cmpint(fd, >=, 0);
        c->map[i] = mmap(NULL, ri->size, PROT_READ | PROT_WRITE, MAP_SHARED,
                         fd, ri->offset);
        g_assert_true(c->map[i] != MAP_FAILED);
        c->map_size[i] = ri->size;
        if (!is_kernel(c->s)) {
            close(fd);
        }
    }
    return true;
}

/*
 * Data regions: through the mmap when the client mapped them, else in
 * accesses no larger than the transport allows (vfio-user: the server's
 * max_data_xfer_size).
 */
static void data_read(Client *c, uint32_t region, uint32_t count, void *buf)
{
    uint64_t step = is_kernel(c->s) ? count : c->max_xfer, off;

    if (c->map[region]) {
        memcpy(buf, c->map[region], count);
        return;
    }
    for (off = 0; off < count; off += step) {
        g_assert_cmpint(region_read(c, region, off, MIN(step, count - off),
                                    (uint8_t *)buf + off), ==, 0);
    }
}

static void data_write(Client *c, uint32_t region, uint32_t count,
                       const void *buf)
{
    uint64_t step = is_kernel(c->s) ? count : c->max_xfer, off;

    if (c->map[region]) {
        memcpy(c->map[region], buf, count);
        return;
    }
    for (off = 0; off < count; off += step) {
        g_assert_cmpint(region_write(c, region, off, MIN(step, count - off),
                                     (const uint8_t *)buf + off), ==, 0);
    }
}

/* Geometry of the device */
static uint64_t dev_pages(Client *c)
{
    return (uint64_t)bar0_read(c, DEVSTATE_REG_DEVMEM_MIB) << 8;
}

static uint64_t dev_chunk(Client *c)
{
    return c->size[DATA_MEMORY];
}

static uint64_t whole_set_size(Client *c)
{
    return MEM_HDR_SIZE + dev_pages(c) * MEM_REC_SIZE;
}

static uint64_t set_bytes(uint64_t records)
{
    return records ? MEM_HDR_SIZE + records * MEM_REC_SIZE : 0;
}

static bool has_p2p(Client *c)
{
    return ctl_read(c, CTL_CAPS, 4) & VFIO_DEVICE_DATA_CAP_P2P;
}

/* Save and load helpers */

static GByteArray *save_config(Client *c)
{
    GByteArray *blob = g_byte_array_new();
    uint64_t size;

    g_assert_cmpint(ctl_write(c, CTL_CFG_ACTION, 4, GET_BUFFER), ==, 0);
    size = ctl_read(c, CTL_CFG_SIZE, 8);
    g_assert_cmpint(size, >, 0);
    g_assert_cmpint(size, <=, c->size[DATA_CONFIG]);
    g_byte_array_set_size(blob, size);
    data_read(c, DATA_CONFIG, size, blob->data);
    return blob;
}

static int load_config(Client *c, const uint8_t *blob, uint64_t size)
{
    int err = ctl_write(c, CTL_CFG_SIZE, 8, size);

    if (err) {
        return err;
    }
    if (size) {
        data_write(c, DATA_CONFIG, size, blob);
    }
    return ctl_write(c, CTL_CFG_ACTION, 4, SET_BUFFER);
}

/*
 * A data set, chunk by chunk: one GET_BUFFER per chunk, pos advanced by
 * the device by each chunk's length.  A set opened here starts at pos 0;
 * one already open goes on from its pos (the bytes before it read as 0).
 */
static GByteArray *save_mem_set(Client *c)
{
    GByteArray *set = g_byte_array_new();
    uint64_t chunk = dev_chunk(c);
    uint64_t size = ctl_read(c, CTL_MEM_SIZE, 8), pos = 0;

    g_assert_cmpint(ctl_read(c, CTL_MEM_SIZE, 8), ==, size);
    g_byte_array_set_size(set, size);
    if (size) {
        memset(set->data, 0, size);
        pos = ctl_read(c, CTL_MEM_POS, 8);
        g_assert_cmpint(pos % chunk, ==, 0);
        g_assert_cmpint(pos, <, size);
    }
    for (; pos < size; pos += chunk) {
        g_assert_cmpint(ctl_write(c, CTL_MEM_ACTION, 4, GET_BUFFER), ==, 0);
        g_assert_cmpint(ctl_read(c, CTL_MEM_POS, 8), ==,
                        pos + MIN(chunk, size - pos));
        data_read(c, DATA_MEMORY, MIN(chunk, size - pos), set->data + pos);
    }
    return set;
}

/* Load a set; the first error, and in *at the pos where it happened */
static int load_mem_set_at(Client *c, GByteArray *set, uint64_t *at)
{
    uint64_t chunk = dev_chunk(c), pos;
    int err;

    *at = 0;
    if (!set->len) {
        return 0;
    }
    err = ctl_write(c, CTL_MEM_SIZE, 8, set->len);
    if (err) {
        return err;
    }
    g_assert_cmpint(ctl_read(c, CTL_MEM_POS, 8), ==, 0);
    for (pos = 0; pos < set->len; pos += chunk) {
        *at = pos;
        data_write(c, DATA_MEMORY, MIN(chunk, set->len - pos),
                   set->data + pos);
        err = ctl_write(c, CTL_MEM_ACTION, 4, SET_BUFFER);
        if (err) {
            g_assert_cmpint(ctl_read(c, CTL_MEM_POS, 8), ==, pos);
            return err;
        }
        g_assert_cmpint(ctl_read(c, CTL_MEM_POS, 8), ==,
                        pos + MIN(chunk, set->len - pos));
    }
    return 0;
}

static int load_mem_set(Client *c, GByteArray *set)
{
    uint64_t at;

    return load_mem_set_at(c, set, &at);
}

static uint64_t set_records(GByteArray *set)
{
    uint64_t nr;

    if (!set->len) {
        return 0;
    }
    memcpy(&nr, set->data + 8, 8);
    g_assert_cmpint(set->len, ==, MEM_HDR_SIZE + nr * MEM_REC_SIZE);
    return nr;
}

static uint64_t rec_page(GByteArray *set, uint64_t i)
{
    uint64_t page;

    memcpy(&page, set->data + MEM_HDR_SIZE + i * MEM_REC_SIZE, 8);
    return page;
}

static const uint8_t *rec_data(GByteArray *set, uint64_t i)
{
    return set->data + MEM_HDR_SIZE + i * MEM_REC_SIZE + 8;
}

/* Device memory as a whole set (the device must not be logging) */
static GByteArray *mem_snapshot(Client *c)
{
    GByteArray *set;

    g_assert_false(get_state(c) & LOGGING);
    set = save_mem_set(c);
    g_assert_cmpint(set_records(set), ==, dev_pages(c));
    return set;
}

/*
 * Run the mutation worker until it wrote n more pages, then stop it.  At
 * the rate set, about 50 ms of work whatever the size of the device; a
 * slow host (a nested guest under TCG) takes longer, so wait for the
 * worker's counter, for at most a minute.
 */
static void mutate_pages(Server *s, Client *c, uint64_t n)
{
    uint64_t start = status_value(s, "mutate_count");
    gint64 deadline = g_get_monotonic_time() + 60 * G_USEC_PER_SEC;

    bar0_write(c, DEVSTATE_REG_MUTATE_RATE, MAX(2000, MIN(n * 20, 400000)));
    bar0_write(c, DEVSTATE_REG_CTRL, DEVSTATE_CTRL_MUTATE);
    while (status_value(s, "mutate_count") < start + n &&
           g_get_monotonic_time() < deadline) {
        g_usleep(2 * 1000);
    }
    bar0_write(c, DEVSTATE_REG_CTRL, 0);
    g_assert_cmpint(status_value(s, "mutate_count"), >=, start + n);
}

/* The VFIO_IRQ_INFO_* flags of an interrupt index */
static uint32_t irq_flags(Client *c, uint32_t index)
{
    struct vfio_irq_info ii = { .argsz = sizeof(ii), .index = index };

    if (is_kernel(c->s)) {
        g_assert_cmpint(ioctl(c->fd, VFIO_DEVICE_GET_IRQ_INFO, &ii), ==, 0);
    } else {
        g_autoptr(GByteArray) out = g_byte_array_new();

        g_assert_cmpint(request(c, VFIO_USER_DEVICE_GET_IRQ_INFO, &ii,
                                sizeof(ii), out), ==, 0);
        g_assert_cmpint(out->len, >=, sizeof(ii));
        memcpy(&ii, out->data, sizeof(ii));
    }
    g_assert_cmpint(ii.index, ==, index);
    return ii.flags;
}

/* Unmask INTx, as a driver does once it handled an automasked interrupt */
static int intx_unmask(Client *c)
{
    struct vfio_irq_set irqs = {
        .argsz = sizeof(irqs),
        .flags = VFIO_IRQ_SET_ACTION_UNMASK | VFIO_IRQ_SET_DATA_NONE,
        .index = VFIO_PCI_INTX_IRQ_INDEX,
        .count = 1,
    };

    G_STATIC_ASSERT(sizeof(irqs) == 20);
    if (is_kernel(c->s)) {
        return ioctl(c->fd, VFIO_DEVICE_SET_IRQS, &irqs) ? errno : 0;
    }
    return request(c, VFIO_USER_DEVICE_SET_IRQS, &irqs, sizeof(irqs), NULL);
}

/* Wait for an eventfd to be signalled (true) or time out (false) */
static bool wait_eventfd(int efd, int ms)
{
    uint64_t cnt;
    int i;

    for (i = 0; i <= ms; i++) {
        if (read(efd, &cnt, 8) == 8) {
            return true;
        }
        g_usleep(1000);
    }
    return false;
}

#define DMA_IOVA    0x100000
#define DMA_NPAGES  64

/*
 * Guest memory the device may DMA to: a memfd passed with DMA_MAP
 * (vfio-user), or an anonymous buffer mapped with VFIO_IOMMU_MAP_DMA
 * (kernel); the fd to close after, or -1.
 */
static int map_guest(Client *c, uint64_t iova, uint64_t pages, void **host)
{
    int fd = -1;
    VFIOUserDMAMap map = {
        .argsz = 32, .flags = 3, .iova = iova, .size = pages * 4096,
    };

    if (is_kernel(c->s)) {
        struct vfio_iommu_type1_dma_map dm = {
            .argsz = sizeof(dm),
            .flags = VFIO_DMA_MAP_FLAG_READ | VFIO_DMA_MAP_FLAG_WRITE,
            .iova = iova, .size = pages * 4096,
        };

        *host = mmap(NULL, pages * 4096, PROT_READ | PROT_WRITE,
                     MAP_SHARED | MAP_ANONYMOUS, -1, 0);
        g_assert_true(*host != MAP_FAILED);
        dm.vaddr = (uintptr_t)*host;
        g_assert_cmpint(ioctl(c->container, VFIO_IOMMU_MAP_DMA, &dm), ==, 0);
        return -1;
    }
    fd = memfd_create("guest", MFD_CLOEXEC);
    g_assert_cmpint(ftruncate(fd, pages * 4096), ==, 0);
    *host = mmap(NULL, pages * 4096, PROT_READ | PROT_WRITE, MAP_SHARED, fd,
                 0);
    g_assert_true(*host != MAP_FAILED);
    send_msg(c, VFIO_USER_DMA_MAP, &map.argsz, 32, &fd, 1);
    g_assert_cmpint(recv_reply(c, NULL, NULL), ==, 0);
    return fd;
}

static void unmap_guest(int fd, void *host, uint64_t pages)
{
    munmap(host, pages * 4096);
    if (fd >= 0) {
        close(fd);
    }
}
static void test_version(void)
{
    Server *s;
    Client *c;
    static const char caps[] = "{}";
    uint8_t v[4 + sizeof(caps)] = { 0 };
    g_autoptr(GByteArray) out = g_byte_array_new();
    struct vfio_device_info info = { .argsz = 16 };

    if (user_only("the vfio-user version handshake")) {
        return;
    }
    s = server_start(NULL);
    c = client_raw(s);
    /* nothing but VERSION before negotiation */
    g_assert_cmpint(request(c, VFIO_USER_DEVICE_GET_INFO, &info,
                            sizeof(info), NULL), ==, EINVAL);
    /* caps not NUL-terminated */
    memcpy(v + 4, caps, 2);
    g_assert_cmpint(request(c, VFIO_USER_VERSION, v, 6, NULL), ==, EINVAL);
    memcpy(v + 4, caps, sizeof(caps));
    g_assert_cmpint(request(c, VFIO_USER_VERSION, v, sizeof(v), out), ==, 0);
    g_assert_cmpint(out->len, >, 5);
    g_assert_cmpint(out->data[0] | out->data[1] << 8, ==, 0);
    g_assert_cmpint(out->data[out->len - 1], ==, 0);
    g_assert_nonnull(strstr((char *)out->data + 4,
                            "\"max_data_xfer_size\":1048576"));
    g_assert_nonnull(strstr((char *)out->data + 4, "\"pgsizes\":4096"));
    /* only once */
    g_assert_cmpint(request(c, VFIO_USER_VERSION, v, sizeof(v), NULL), ==,
                    EINVAL);
    g_assert_cmpint(request(c, VFIO_USER_DEVICE_GET_INFO, &info,
                            sizeof(info), NULL), ==, 0);
    client_close(c);
    g_assert_cmpint(server_wait(s), ==, 0);
    server_stop(s);

    /* a bigger chunk raises max_data_xfer_size */
    s = server_start("--chunk-size 4M");
    c = client_raw(s);
    g_assert_cmpint(request(c, VFIO_USER_VERSION, v, sizeof(v), out), ==, 0);
    g_assert_nonnull(strstr((char *)out->data + 4,
                            "\"max_data_xfer_size\":4194304"));
    client_close(c);
    server_stop(s);
}

static void test_dma_map(void)
{
    Server *s;
    Client *c;
    int fd, fds[2];
    VFIOUserDMAMap map = { .argsz = 32, .flags = 3, .size = 64 * 4096 };
    VFIOUserDMAUnmap unmap = { .argsz = 24 };
    const size_t ml = sizeof(map) - sizeof(VFIOUserHdr);
    const size_t ul = sizeof(unmap) - sizeof(VFIOUserHdr);

    if (user_only("vfio-user DMA_MAP and DMA_UNMAP messages")) {
        return;
    }
    s = server_start(NULL);
    c = client_connect(s);
    fd = memfd_create("guest", MFD_CLOEXEC);
    g_assert_cmpint(ftruncate(fd, 128 * 4096), ==, 0);
    fds[0] = fds[1] = fd;
    map.iova = 0x100000;
    send_msg(c, VFIO_USER_DMA_MAP, &map.argsz, ml, &fd, 1);
    g_assert_cmpint(recv_reply(c, NULL, NULL), ==, 0);
    /* overlap */
    map.iova = 0x100000 + 63 * 4096;
    send_msg(c, VFIO_USER_DMA_MAP, &map.argsz, ml, &fd, 1);
    g_assert_cmpint(recv_reply(c, NULL, NULL), ==, EEXIST);
    /* too many fds */
    map.iova = 0x200000;
    send_msg(c, VFIO_USER_DMA_MAP, &map.argsz, ml, fds, 2);
    g_assert_cmpint(recv_reply(c, NULL, NULL), ==, EINVAL);
    /* bad argsz, zero size */
    map.argsz = 16;
    send_msg(c, VFIO_USER_DMA_MAP, &map.argsz, ml, &fd, 1);
    g_assert_cmpint(recv_reply(c, NULL, NULL), ==, EINVAL);
    map.argsz = 32;
    map.size = 0;
    send_msg(c, VFIO_USER_DMA_MAP, &map.argsz, ml, &fd, 1);
    g_assert_cmpint(recv_reply(c, NULL, NULL), ==, EINVAL);
    /* mapped without an fd, at an offset of the memfd */
    map.size = 4096;
    g_assert_cmpint(request(c, VFIO_USER_DMA_MAP, &map.argsz, ml, NULL), ==,
                    0);
    map.iova = 0x300000;
    map.offset = 64 * 4096;
    map.size = 64 * 4096;
    send_msg(c, VFIO_USER_DMA_MAP, &map.argsz, ml, &fd, 1);
    g_assert_cmpint(recv_reply(c, NULL, NULL), ==, 0);
    g_assert_cmpint(status_value(s, "dma_maps"), ==, 3);
    /* past the end of the memfd: DMA there would fault (SIGBUS) */
    map.iova = 0x400000;
    map.offset = 127 * 4096;
    map.size = 2 * 4096;
    send_msg(c, VFIO_USER_DMA_MAP, &map.argsz, ml, &fd, 1);
    g_assert_cmpint(recv_reply(c, NULL, NULL), ==, EINVAL);
    map.offset = 0;
    map.size = 129 * 4096;
    send_msg(c, VFIO_USER_DMA_MAP, &map.argsz, ml, &fd, 1);
    g_assert_cmpint(recv_reply(c, NULL, NULL), ==, EINVAL);
    g_assert_cmpint(status_value(s, "dma_maps"), ==, 3);
    map.size = 64 * 4096;
    /* not page-aligned: iova, size or offset */
    map.iova = 0x400000 + 0xfd;
    send_msg(c, VFIO_USER_DMA_MAP, &map.argsz, ml, &fd, 1);
    g_assert_cmpint(recv_reply(c, NULL, NULL), ==, EINVAL);
    map.iova = 0x400000;
    map.size = 4096 + 8;
    send_msg(c, VFIO_USER_DMA_MAP, &map.argsz, ml, &fd, 1);
    g_assert_cmpint(recv_reply(c, NULL, NULL), ==, EINVAL);
    map.size = 4096;
    map.offset = 8;
    send_msg(c, VFIO_USER_DMA_MAP, &map.argsz, ml, &fd, 1);
    g_assert_cmpint(recv_reply(c, NULL, NULL), ==, EINVAL);
    g_assert_cmpint(status_value(s, "dma_maps"), ==, 3);
    map.offset = 0;
    map.size = 64 * 4096;

    /* unmap must match exactly */
    unmap.iova = 0x100000;
    unmap.size = 4096;
    g_assert_cmpint(request(c, VFIO_USER_DMA_UNMAP, &unmap.argsz, ul, NULL),
                    ==, ENOENT);
    unmap.size = 64 * 4096;
    g_assert_cmpint(request(c, VFIO_USER_DMA_UNMAP, &unmap.argsz, ul, NULL),
                    ==, 0);
    g_assert_cmpint(request(c, VFIO_USER_DMA_UNMAP, &unmap.argsz, ul, NULL),
                    ==, ENOENT);
    g_assert_cmpint(status_value(s, "dma_maps"), ==, 2);
    unmap.flags = VFIO_DMA_UNMAP_FLAG_GET_DIRTY_BITMAP;
    g_assert_cmpint(request(c, VFIO_USER_DMA_UNMAP, &unmap.argsz, ul, NULL),
                    ==, ENOTSUP);
    unmap.flags = VFIO_DMA_UNMAP_FLAG_ALL;
    unmap.iova = unmap.size = 0;
    g_assert_cmpint(request(c, VFIO_USER_DMA_UNMAP, &unmap.argsz, ul, NULL),
                    ==, 0);
    g_assert_cmpint(status_value(s, "dma_maps"), ==, 0);

    /* a disconnect drops the mappings */
    map.iova = 0x100000;
    map.offset = 0;
    send_msg(c, VFIO_USER_DMA_MAP, &map.argsz, ml, &fd, 1);
    g_assert_cmpint(recv_reply(c, NULL, NULL), ==, 0);
    close(fd);
    client_close(c);
    g_assert_cmpint(server_wait(s), ==, 0);
    server_stop(s);
}


static void test_region_info(void)
{
    Server *s;
    Client *c;
    static const uint64_t sizes[NUM_REGIONS] = {
        4096, 4096, 0, 0, 0, 0, 0, 256, 0, 88, 4096, 128 * 1024, 8192, 4096,
    };
    struct vfio_device_info di = { .argsz = 16 };
    g_autoptr(GByteArray) out = g_byte_array_new();
    unsigned i;
    int err, fd;

    if (user_only("vfio-user region info replies (argsz, fds)")) {
        return;
    }
    s = server_start("--chunk-size 128K --bitmap-size 8K");
    c = client_connect(s);
    g_assert_cmpint(request(c, VFIO_USER_DEVICE_GET_INFO, &di, sizeof(di),
                            out), ==, 0);
    g_assert_cmpint(out->len, ==, 16);
    memcpy(&di, out->data, 16);
    g_assert_cmpint(di.flags, ==,
                    VFIO_DEVICE_FLAGS_PCI | VFIO_DEVICE_FLAGS_RESET);
    g_assert_cmpint(di.num_regions, ==, NUM_REGIONS);
    g_assert_cmpint(di.num_irqs, ==, VFIO_PCI_NUM_IRQS);
    /* the regions were found at the reference device's indices */
    for (i = 0; i < NUM_REGIONS; i++) {
        g_assert_cmpint(c->index[i], ==, i);
    }

    for (i = 0; i < NUM_REGIONS; i++) {
        g_autoptr(GByteArray) info = region_info(c, i, 32, &err, &fd);
        struct vfio_region_info *ri = (void *)info->data;
        struct vfio_region_info_cap_type *type;
        struct vfio_region_info_cap_sparse_mmap *sparse;

        g_assert_cmpint(err, ==, 0);
        g_assert_cmpint(ri->size, ==, sizes[i]);
        g_assert_false(ri->flags & VFIO_REGION_INFO_FLAG_CAPS);
        if (i < CTL_REGION) {
            g_assert_cmpint(ri->argsz, ==, 32);
            g_assert_cmpint(fd, ==, -1);
            continue;
        }
        /* too short: the argsz needed, no caps, no fd */
        g_assert_cmpint(ri->argsz, >, 32);
        g_assert_cmpint(fd, ==, -1);
        g_byte_array_unref(info);
        info = region_info(c, i, 256, &err, &fd);
        ri = (void *)info->data;
        g_assert_cmpint(err, ==, 0);
        g_assert_cmpint(info->len, ==, ri->argsz);
        type = find_cap(info, VFIO_REGION_INFO_CAP_TYPE);
        g_assert_nonnull(type);
        g_assert_cmpint(type->type, ==, VFIO_REGION_TYPE_DEVICE_STATE);
        g_assert_cmpint(type->subtype, ==, i - CTL_REGION + 1);
        sparse = find_cap(info, VFIO_REGION_INFO_CAP_SPARSE_MMAP);
        if (i >= DATA_CONFIG && i <= DATA_BITMAP) {
            g_assert_true(ri->flags & VFIO_REGION_INFO_FLAG_MMAP);
            g_assert_nonnull(sparse);
            g_assert_cmpint(sparse->nr_areas, ==, 1);
            g_assert_cmpint(sparse->areas[0].size, ==, ri->size);
            g_assert_cmpint(fd, >=, 0);
            close(fd);
        } else {
            g_assert_false(ri->flags & VFIO_REGION_INFO_FLAG_MMAP);
            g_assert_null(sparse);
            g_assert_cmpint(fd, ==, -1);
        }
    }
    g_byte_array_unref(region_info(c, NUM_REGIONS, 32, &err, &fd));
    g_assert_cmpint(err, ==, EINVAL);
    g_byte_array_unref(region_info(c, 0, 16, &err, &fd));
    g_assert_cmpint(err, ==, EINVAL);

    /* IRQs: INTx, MSI and ERR one vector each, MSI-X four, REQ none */
    for (i = 0; i < di.num_irqs; i++) {
        struct vfio_irq_info ii = { .argsz = 16, .index = i };

        g_assert_cmpint(request(c, VFIO_USER_DEVICE_GET_IRQ_INFO, &ii,
                                sizeof(ii), out), ==, 0);
        memcpy(&ii, out->data, sizeof(ii));
        g_assert_cmpint(ii.count, ==,
                        i == VFIO_PCI_MSIX_IRQ_INDEX ? DEVSTATE_MSIX_VECTORS :
                        i != VFIO_PCI_REQ_IRQ_INDEX);
        if (ii.count) {
            g_assert_true(ii.flags & VFIO_IRQ_INFO_EVENTFD);
        }
    }
    client_close(c);
    server_stop(s);

    /* --no-mmap: no data region is mmappable */
    s = server_start("--no-mmap");
    c = client_connect(s);
    for (i = CTL_REGION; i < NUM_REGIONS; i++) {
        g_autoptr(GByteArray) info = region_info(c, i, 256, &err, &fd);
        struct vfio_region_info *ri = (void *)info->data;

        g_assert_cmpint(err, ==, 0);
        g_assert_false(ri->flags & VFIO_REGION_INFO_FLAG_MMAP);
        g_assert_cmpint(fd, ==, -1);
    }
    g_assert_false(client_map_regions(c));
    client_close(c);
    server_stop(s);
}

static void test_pci_config(void)
{
    Server *s;
    Client *c;
    uint8_t cfg[256];
    uint32_t v = 0xffffffff;

    if (user_only("the reference device's PCI identity and capabilities")) {
        return;
    }
    s = server_start(NULL);
    c = client_connect(s);
    g_assert_cmpint(region_read(c, CONFIG_REGION, 0, 256, cfg), ==, 0);
    g_assert_cmpint(cfg[0] | cfg[1] << 8, ==, DEVSTATE_PCI_VENDOR_ID);
    g_assert_cmpint(cfg[2] | cfg[3] << 8, ==, DEVSTATE_PCI_DEVICE_ID);
    g_assert_cmpint(cfg[0x2c] | cfg[0x2d] << 8, ==, DEVSTATE_PCI_SUBVENDOR_ID);
    g_assert_cmpint(cfg[0x2e] | cfg[0x2f] << 8, ==, DEVSTATE_PCI_SUBDEVICE_ID);
    g_assert_cmpint(cfg[0x0a] | cfg[0x0b] << 8, ==, 0xff00);
    g_assert_cmpint(cfg[0x3d], ==, 1);
    /* capabilities: AF with FLR, then MSI-X with its table in BAR1 */
    g_assert_true(cfg[0x06] & 0x10);
    g_assert_cmphex(cfg[0x34], ==, DEVSTATE_CAP_AF);
    g_assert_cmphex(cfg[DEVSTATE_CAP_AF], ==, 0x13);
    g_assert_cmphex(cfg[DEVSTATE_CAP_AF + 1], ==, DEVSTATE_CAP_MSIX);
    g_assert_cmphex(cfg[DEVSTATE_CAP_AF + 2], ==, 6);
    g_assert_cmphex(cfg[DEVSTATE_CAP_AF + 3], ==, 0x03);
    g_assert_cmphex(cfg[DEVSTATE_CAP_MSIX], ==, 0x11);
    g_assert_cmphex(cfg[DEVSTATE_CAP_MSIX + 1], ==, 0);
    g_assert_cmphex(cfg[DEVSTATE_CAP_MSIX + 2] |
                    cfg[DEVSTATE_CAP_MSIX + 3] << 8, ==,
                    DEVSTATE_MSIX_VECTORS - 1);
    memcpy(&v, cfg + DEVSTATE_CAP_MSIX + 4, 4);
    g_assert_cmphex(v, ==, DEVSTATE_MSIX_TABLE_OFFSET | 1);
    memcpy(&v, cfg + DEVSTATE_CAP_MSIX + 8, 4);
    g_assert_cmphex(v, ==, DEVSTATE_MSIX_PBA_OFFSET | 1);
    /* BAR sizing (BAR0 and BAR1 4 KiB), no ROM */
    v = 0xffffffff;
    g_assert_cmpint(region_write(c, CONFIG_REGION, 0x10, 4, &v), ==, 0);
    g_assert_cmpint(region_read(c, CONFIG_REGION, 0x10, 4, &v), ==, 0);
    g_assert_cmphex(v, ==, 0xfffff000);
    v = 0xffffffff;
    g_assert_cmpint(region_write(c, CONFIG_REGION, 0x14, 4, &v), ==, 0);
    g_assert_cmpint(region_read(c, CONFIG_REGION, 0x14, 4, &v), ==, 0);
    g_assert_cmphex(v, ==, 0xfffff000);
    v = 0xffffffff;
    g_assert_cmpint(region_write(c, CONFIG_REGION, 0x30, 4, &v), ==, 0);
    g_assert_cmpint(region_read(c, CONFIG_REGION, 0x30, 4, &v), ==, 0);
    g_assert_cmphex(v, ==, 0);
    g_assert_cmpint(region_read(c, CONFIG_REGION, 250, 8, cfg), ==, EINVAL);

    g_assert_cmphex(bar0_read(c, DEVSTATE_REG_ID), ==, DEVSTATE_ID_MAGIC);
    g_assert_cmpint(bar0_read(c, DEVSTATE_REG_DEVMEM_MIB), ==, 64);
    bar0_write(c, DEVSTATE_REG_SCRATCH, 0xdeadbeef);
    g_assert_cmphex(bar0_read(c, DEVSTATE_REG_SCRATCH), ==, 0xdeadbeef);
    bar0_write(c, DEVSTATE_REG_ID, 0);
    g_assert_cmphex(bar0_read(c, DEVSTATE_REG_ID), ==, DEVSTATE_ID_MAGIC);
    g_assert_cmphex(bar0_read(c, DEVSTATE_REG_IRQ), ==, 0);
    /* reset: registers back to their defaults */
    g_assert_cmpint(device_reset(c), ==, 0);
    g_assert_cmphex(bar0_read(c, DEVSTATE_REG_SCRATCH), ==, 0);
    client_close(c);
    server_stop(s);
}

/*
 * MSI-X: the table and PBA in BAR1, one eventfd per vector from
 * SET_IRQS; a vector without an eventfd stays pending in the PBA until it
 * gets one; interrupts go to MSI-X (the DMA pass to vector 0) while any
 * vector is set, to INTx once MSI-X is disabled again.
 */
static void test_msix(void)
{
    Server *s;
    Client *c;
    int efd[DEVSTATE_MSIX_VECTORS], intx, gfd, i;
    uint64_t pba, entry = 0x1122334455667788ull, v64;
    void *guest;

    if (user_only("the reference device's MSI-X capability")) {
        return;
    }
    s = server_start("--dma-addr 0x100000 --dma-pages 4 --dma-rate 4000 "
                     "--mutate-rate 0");
    c = client_connect(s);
    for (i = 0; i < DEVSTATE_MSIX_VECTORS; i++) {
        efd[i] = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    }
    intx = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    g_assert_cmpint(c->size[BAR1_REGION], ==, DEVSTATE_BAR1_SIZE);

    /* the table keeps what is written; entries start masked */
    g_assert_cmpint(region_read(c, BAR1_REGION, 12, 4, &v64), ==, 0);
    g_assert_cmphex((uint32_t)v64, ==, 1);
    g_assert_cmpint(region_write(c, BAR1_REGION, 16, 8, &entry), ==, 0);
    g_assert_cmpint(region_read(c, BAR1_REGION, 16, 8, &v64), ==, 0);
    g_assert_cmphex(v64, ==, entry);
    g_assert_cmpint(region_read(c, BAR1_REGION, 3, 4, &v64), ==, EINVAL);

    /* INTx before MSI-X */
    g_assert_cmpint(set_irqs(c, VFIO_PCI_INTX_IRQ_INDEX, 0, 1, &intx), ==, 0);
    bar0_write(c, DEVSTATE_REG_IRQ, 0);
    g_assert_true(wait_eventfd(intx, 2000));

    /* MSI-X on with no vector set (as QEMU starts it): pending, no INTx */
    g_assert_cmpint(set_irqs(c, VFIO_PCI_MSIX_IRQ_INDEX, 0, 1, NULL), ==, 0);
    g_assert_cmpint(status_value(s, "msix"), ==, 1);
    bar0_write(c, DEVSTATE_REG_IRQ, 0);
    g_assert_false(wait_eventfd(intx, 20));
    g_assert_cmpint(region_read(c, BAR1_REGION, DEVSTATE_MSIX_PBA_OFFSET, 8,
                                &pba), ==, 0);
    g_assert_cmphex(pba, ==, 1);

    /* all vectors: the one pending comes, the IRQ register raises one */
    g_assert_cmpint(set_irqs(c, VFIO_PCI_MSIX_IRQ_INDEX, 0,
                             DEVSTATE_MSIX_VECTORS, efd), ==, 0);
    g_assert_cmpint(status_value(s, "msix"), ==, 1);
    g_assert_true(wait_eventfd(efd[0], 2000));
    bar0_write(c, DEVSTATE_REG_IRQ, 2);
    g_assert_true(wait_eventfd(efd[2], 2000));
    g_assert_false(wait_eventfd(efd[0], 20));
    g_assert_false(wait_eventfd(efd[1], 0));
    g_assert_false(wait_eventfd(efd[3], 0));
    g_assert_false(wait_eventfd(intx, 0));
    /* more vectors than the table has: refused */
    g_assert_cmpint(set_irqs(c, VFIO_PCI_MSIX_IRQ_INDEX, 2,
                             DEVSTATE_MSIX_VECTORS - 1, efd), ==, EINVAL);

    /* the DMA-pass interrupt goes to vector 0 */
    gfd = map_guest(c, DMA_IOVA, 8, &guest);
    bar0_write(c, DEVSTATE_REG_CTRL, DEVSTATE_CTRL_DMA | DEVSTATE_CTRL_DMA_IRQ);
    g_assert_true(wait_eventfd(efd[0], 2000));
    bar0_write(c, DEVSTATE_REG_CTRL, 0);
    g_usleep(20 * 1000);
    wait_eventfd(efd[0], 0);

    /* vector 1 without an eventfd: pending in the PBA, raised once set */
    g_assert_cmpint(set_irqs(c, VFIO_PCI_MSIX_IRQ_INDEX, 1, 1, NULL), ==, 0);
    bar0_write(c, DEVSTATE_REG_IRQ, 1);
    g_assert_cmpint(region_read(c, BAR1_REGION, DEVSTATE_MSIX_PBA_OFFSET, 8,
                                &pba), ==, 0);
    g_assert_cmphex(pba, ==, 1u << 1);
    g_assert_false(wait_eventfd(efd[1], 20));
    g_assert_cmpint(set_irqs(c, VFIO_PCI_MSIX_IRQ_INDEX, 1, 1, &efd[1]), ==,
                    0);
    g_assert_true(wait_eventfd(efd[1], 2000));
    g_assert_cmpint(region_read(c, BAR1_REGION, DEVSTATE_MSIX_PBA_OFFSET, 8,
                                &pba), ==, 0);
    g_assert_cmphex(pba, ==, 0);

    /* STOP: no interrupt, and BAR0 writes fail; the table still works */
    g_assert_cmpint(set_state(c, STOP), ==, 0);
    g_assert_cmpint(region_write(c, BAR0_REGION, DEVSTATE_REG_IRQ, 4,
                                 &(uint32_t){ 3 }), ==, EBUSY);
    g_assert_cmpint(region_write(c, BAR1_REGION, 32, 8, &entry), ==, 0);
    g_assert_cmpint(set_state(c, RUNNING), ==, 0);
    g_assert_false(wait_eventfd(efd[3], 20));

    /* MSI-X disabled: back to INTx */
    g_assert_cmpint(set_irqs(c, VFIO_PCI_MSIX_IRQ_INDEX, 0, 0, NULL), ==, 0);
    g_assert_cmpint(status_value(s, "msix"), ==, 0);
    bar0_write(c, DEVSTATE_REG_IRQ, 0);
    g_assert_true(wait_eventfd(intx, 2000));
    g_assert_false(wait_eventfd(efd[0], 20));

    unmap_guest(gfd, guest, 8);
    for (i = 0; i < DEVSTATE_MSIX_VECTORS; i++) {
        close(efd[i]);
    }
    close(intx);
    client_close(c);
    server_stop(s);
}

/* The six states of a device with CAP_P2P, the four of one without */
static const uint32_t states[] = {
    RUNNING, RUNNING | LOGGING, STOP | LOGGING, STOP, P2P, P2P | LOGGING,
};

static const char *const state_names[] = {
    "RUNNING", "STOP", "RUNNING|LOGGING", "STOP|LOGGING",
    "P2P", "INVALID", "P2P|LOGGING", "INVALID",
};

/* Every arc between the valid states; returns how many */
static unsigned walk_arcs(Server *s, Client *c, unsigned nr)
{
    unsigned i, j, arcs = 0;

    for (i = 0; i < nr; i++) {
        for (j = 0; j < nr; j++) {
            if (i == j) {
                continue;
            }
            if (get_state(c) != states[i]) {
                g_assert_cmpint(set_state(c, states[i]), ==, 0);
            }
            g_assert_cmpint(set_state(c, states[j]), ==, 0);
            g_assert_cmpint(get_state(c), ==, states[j]);
            if (!is_kernel(s)) {
                g_autofree char *line = g_strdup_printf(
                    "devstate: state %s -> %s\n", state_names[states[i]],
                    state_names[states[j]]);

                g_assert_true(log_contains(s, line));
            }
            arcs++;
        }
    }
    return arcs;
}

static void test_fsm(void)
{
    /* a kernel device: whatever caps it has, the four non-P2P states */
    Server *s = server_start(transport == TRANSPORT_KERNEL ? NULL :
                             "--no-p2p");
    Client *c;
    uint64_t v;

    if (!s) {
        return;
    }
    c = client_connect(s);
    g_assert_cmpint(get_state(c), ==, RUNNING);
    g_assert_cmpint(ctl_read(c, CTL_VERSION, 4), ==, 1);
    v = ctl_read(c, CTL_CAPS, 4);
    g_assert_true(v & VFIO_DEVICE_DATA_CAP_DEVICE_MEMORY);
    g_assert_true(v & VFIO_DEVICE_DATA_CAP_SYSTEM_MEMORY);
    if (!is_kernel(s)) {
        g_assert_false(v & VFIO_DEVICE_DATA_CAP_P2P);
    }
    g_assert_cmpint(ctl_read(c, CTL_SYS_SHIFT, 4), ==, 12);

    /* all twelve arcs between the four states without P2P */
    g_assert_cmpint(walk_arcs(s, c, 4), ==, 12);

    /* invalid values; P2P without CAP_P2P too */
    g_assert_cmpint(set_state(c, RUNNING), ==, 0);
    if (!has_p2p(c)) {
        g_assert_cmpint(set_state(c, P2P), ==, EINVAL);
        g_assert_cmpint(set_state(c, P2P | LOGGING), ==, EINVAL);
    }
    g_assert_cmpint(set_state(c, STOP | P2P), ==, EINVAL);
    g_assert_cmpint(set_state(c, STOP | P2P | LOGGING), ==, EINVAL);
    g_assert_cmpint(set_state(c, 8), ==, EINVAL);
    g_assert_cmpint(set_state(c, 0xffffffff), ==, EINVAL);
    g_assert_cmpint(get_state(c), ==, RUNNING);

    /* access rules: one aligned access per field, of its width */
    v = 0;
    g_assert_cmpint(region_read(c, CTL_REGION, 4, 8, &v), ==, EINVAL);
    g_assert_cmpint(region_read(c, CTL_REGION, 5, 2, &v), ==, EINVAL);
    {
        uint8_t all[88];

        g_assert_cmpint(region_read(c, CTL_REGION, 0, 88, all), ==, EINVAL);
    }
    g_assert_cmpint(ctl_write(c, CTL_STATE, 2, STOP), ==, EINVAL);
    g_assert_cmpint(ctl_write(c, CTL_VERSION, 4, 2), ==, EINVAL);
    g_assert_cmpint(ctl_write(c, CTL_CAPS, 4, 0), ==, EINVAL);
    g_assert_cmpint(ctl_write(c, CTL_SYS_SHIFT, 4, 16), ==, EINVAL);
    g_assert_cmpint(ctl_write(c, CTL_MEM_POS, 8, 0), ==, EINVAL);
    g_assert_cmpint(ctl_write(c, CTL_MEM_PENDING, 8, 0), ==, EINVAL);
    g_assert_cmpint(ctl_write(c, CTL_SYS_START, 4, 0), ==, EINVAL);
    g_assert_cmpint(ctl_write(c, CTL_SYS_ACTION, 8, 3), ==, EINVAL);
    g_assert_cmpint(ctl_write(c, CTL_CFG_ACTION, 4, 3), ==, EINVAL);
    g_assert_cmpint(ctl_write(c, CTL_MEM_ACTION, 4, 0), ==, EINVAL);
    g_assert_cmpint(ctl_write(c, CTL_SYS_ACTION, 4, 1), ==, EINVAL);
    g_assert_cmpint(region_write(c, CTL_REGION, 88, 4, &v), ==, EINVAL);
    g_assert_cmpint(ctl_read(c, CTL_VERSION, 4), ==, 1);
    g_assert_cmpint(get_state(c), ==, RUNNING);

    /* a failed arc: EIO, and the state it really is in */
    server_fail(s, "arc:RUNNING->STOP:EIO:1");
    g_assert_cmpint(set_state(c, STOP), ==, EIO);
    g_assert_cmpint(get_state(c), ==, RUNNING);
    g_assert_cmpint(set_state(c, STOP), ==, 0);
    server_fail(s, "arc:EIO:2");
    g_assert_cmpint(set_state(c, RUNNING), ==, EIO);
    g_assert_cmpint(set_state(c, STOP | LOGGING), ==, EIO);
    g_assert_cmpint(get_state(c), ==, STOP);
    g_assert_cmpint(set_state(c, STOP | LOGGING), ==, 0);

    /* reset: back to RUNNING, logging off */
    g_assert_cmpint(device_reset(c), ==, 0);
    g_assert_cmpint(get_state(c), ==, RUNNING);
    g_assert_cmpint(status_value(s, "logging"), ==, 0);
    client_close(c);
    server_stop(s);
}

/*
 * P2P: the six states and their thirty arcs; in P2P the device does no
 * DMA, no mutation and raises no interrupt (held until it runs), but BAR
 * accesses complete and change its state; loads and config saves are
 * refused as outside STOP.
 */
static void test_p2p(void)
{
    Server *s = server_start("--mutate-rate 5000 --dma-addr 0x100000 "
                             "--dma-pages 4 --dma-rate 5000");
    Client *c;
    uint64_t mutated, dma;
    void *guest;
    int efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK), gfd;

    if (!s) {
        close(efd);
        return;
    }
    c = client_connect(s);
    if (!has_p2p(c)) {
        g_test_skip("the kernel device does not offer CAP_P2P");
        goto out;
    }
    g_assert_cmpint(walk_arcs(s, c, 6), ==, 30);
    g_assert_cmpint(set_state(c, STOP | P2P), ==, EINVAL);
    g_assert_cmpint(set_state(c, STOP | P2P | LOGGING), ==, EINVAL);

    /* P2P: quiet, but BAR accesses complete */
    gfd = map_guest(c, DMA_IOVA, 8, &guest);
    g_assert_cmpint(set_irqs(c, VFIO_PCI_INTX_IRQ_INDEX, 0, 1, &efd), ==, 0);
    g_assert_cmpint(set_state(c, RUNNING), ==, 0);
    bar0_write(c, DEVSTATE_REG_CTRL, DEVSTATE_CTRL_MUTATE | DEVSTATE_CTRL_DMA);
    wait_status_above(s, "mutate_count", 0);
    wait_status_above(s, "dma_count", 0);
    g_assert_cmpint(set_state(c, P2P), ==, 0);
    g_assert_cmpint(get_state(c), ==, P2P);
    g_assert_cmphex(bar0_read(c, DEVSTATE_REG_STATUS), ==,
                    DEVSTATE_STATUS_P2P);
    mutated = status_value(s, "mutate_count");
    dma = status_value(s, "dma_count");
    g_assert_cmpint(mutated, >, 0);
    g_assert_cmpint(dma, >, 0);
    bar0_write(c, DEVSTATE_REG_SCRATCH, 0xfeedf00d);
    g_assert_cmphex(bar0_read(c, DEVSTATE_REG_SCRATCH), ==, 0xfeedf00d);
    bar0_write(c, DEVSTATE_REG_IRQ, 0);
    g_usleep(30 * 1000);
    g_assert_cmpint(status_value(s, "mutate_count"), ==, mutated);
    g_assert_cmpint(status_value(s, "dma_count"), ==, dma);
    g_assert_false(wait_eventfd(efd, 0));
    /* no loads, no config save outside STOP */
    g_assert_cmpint(ctl_write(c, CTL_CFG_ACTION, 4, GET_BUFFER), ==, EBUSY);
    g_assert_cmpint(ctl_write(c, CTL_MEM_SIZE, 8, whole_set_size(c)), ==,
                    EBUSY);
    g_assert_cmpint(ctl_write(c, CTL_CFG_ACTION, 4, SET_BUFFER), ==, EBUSY);
    /* the interrupt held in P2P comes when the device runs again */
    g_assert_cmpint(set_state(c, RUNNING), ==, 0);
    g_assert_true(wait_eventfd(efd, 2000));
    wait_status_above(s, "mutate_count", mutated);
    bar0_write(c, DEVSTATE_REG_CTRL, 0);

    /* P2P|LOGGING: the session goes on, nothing is dirtied */
    g_assert_cmpint(set_state(c, RUNNING | LOGGING), ==, 0);
    g_assert_cmpint(ctl_read(c, CTL_MEM_PENDING, 8), ==, whole_set_size(c));
    g_assert_cmpint(set_state(c, P2P | LOGGING), ==, 0);
    g_assert_cmpint(status_value(s, "logging"), ==, 1);
    g_assert_cmpint(set_state(c, STOP | LOGGING), ==, 0);
    unmap_guest(gfd, guest, 8);
    if (!is_kernel(s)) {
        client_close(c);
        server_stop(s);
        /* withheld: P2P is not a state */
        s = server_start("--no-p2p");
        c = client_connect(s);
        g_assert_false(has_p2p(c));
        g_assert_cmpint(set_state(c, P2P), ==, EINVAL);
        g_assert_cmpint(set_state(c, P2P | LOGGING), ==, EINVAL);
        g_assert_cmpint(get_state(c), ==, RUNNING);
    }
out:
    close(efd);
    client_close(c);
    server_stop(s);
}

/*
 * Any reset returns the device to RUNNING and ends the logging session:
 * VFIO_DEVICE_RESET, a guest FLR through config space, a new vfio-user
 * connection.
 */
static void test_reset(void)
{
    Server *s = server_start(transport == TRANSPORT_KERNEL ?
                             "--mutate-rate 0" :
                             "--persist --mem-size 1M --chunk-size 64K "
                             "--mutate-rate 0");
    Client *c;
    uint64_t size;

    if (!s) {
        return;
    }
    c = client_connect(s);
    g_assert_cmpint(set_state(c, RUNNING | LOGGING), ==, 0);
    size = ctl_read(c, CTL_MEM_SIZE, 8);
    g_assert_cmpint(size, ==, whole_set_size(c));
    g_assert_cmpint(ctl_write(c, CTL_MEM_ACTION, 4, GET_BUFFER), ==, 0);
    g_assert_cmpint(set_state(c, STOP | LOGGING), ==, 0);
    g_assert_cmpint(device_reset(c), ==, 0);
    g_assert_cmpint(get_state(c), ==, RUNNING);
    g_assert_cmpint(status_value(s, "logging"), ==, 0);
    g_assert_cmpint(ctl_read(c, CTL_MEM_PENDING, 8), ==, 0);
    /* the open set is gone with the session */
    g_assert_cmpint(ctl_write(c, CTL_MEM_ACTION, 4, GET_BUFFER), ==, EINVAL);
    /* a new session starts with a whole snapshot again */
    g_assert_cmpint(set_state(c, RUNNING | LOGGING), ==, 0);
    g_assert_cmpint(ctl_read(c, CTL_MEM_PENDING, 8), ==, whole_set_size(c));
    g_assert_cmpint(device_reset(c), ==, 0);

    if (is_kernel(s)) {
        client_close(c);
        server_stop(s);
        return;
    }
    /* FLR through the AF capability */
    bar0_write(c, DEVSTATE_REG_SCRATCH, 0x5a5a5a5a);
    g_assert_cmpint(set_state(c, STOP | LOGGING), ==, 0);
    g_assert_cmpint(region_write(c, CONFIG_REGION, DEVSTATE_CAP_AF + 4, 1,
                                 &(uint8_t){ 1 }), ==, 0);
    g_assert_cmpint(get_state(c), ==, RUNNING);
    g_assert_cmpint(status_value(s, "logging"), ==, 0);
    g_assert_cmphex(bar0_read(c, DEVSTATE_REG_SCRATCH), ==, 0);
    g_assert_true(log_contains(s, "function-level reset"));

    /* a disconnect: the next client finds RUNNING, no session */
    g_assert_cmpint(set_state(c, STOP | LOGGING), ==, 0);
    client_close(c);
    c = client_connect(s);
    g_assert_cmpint(get_state(c), ==, RUNNING);
    g_assert_cmpint(status_value(s, "logging"), ==, 0);
    g_assert_true(log_contains(s, "STOP|LOGGING -> RUNNING (reset)"));
    client_close(c);
    server_stop(s);
}
static void test_config(void)
{
    Server *s, *d, *other;
    Client *c, *dc, *oc;
    g_autoptr(GByteArray) blob = NULL;
    g_autofree uint8_t *bad = NULL;
    uint64_t big = 4097;

    if (user_only("three devices with chosen versions and identities")) {
        return;
    }
    s = server_start("--version 1.2.0");
    d = server_start("--version 1.2.5");
    other = server_start("--identity other-device --version 1.2.0");
    c = client_connect(s);
    dc = client_connect(d);
    oc = client_connect(other);

    bar0_write(c, DEVSTATE_REG_SCRATCH, 0x12345678);
    bar0_write(c, DEVSTATE_REG_DMA_PAGES, 77);
    g_assert_cmpint(ctl_write(c, CTL_CFG_ACTION, 4,
                              GET_BUFFER), ==, EBUSY);
    g_assert_cmpint(set_state(c, RUNNING | LOGGING), ==, 0);
    g_assert_cmpint(ctl_write(c, CTL_CFG_ACTION, 4,
                              GET_BUFFER), ==, EBUSY);
    g_assert_cmpint(set_state(c, STOP | LOGGING), ==, 0);
    blob = save_config(c);

    /* loads in STOP only */
    g_assert_cmpint(load_config(dc, blob->data, blob->len), ==, EBUSY);
    g_assert_cmpint(set_state(dc, STOP | LOGGING), ==, 0);
    g_assert_cmpint(load_config(dc, blob->data, blob->len), ==, EBUSY);
    g_assert_cmpint(set_state(dc, STOP), ==, 0);
    g_assert_cmpint(ctl_write(dc, CTL_CFG_SIZE, 8, big), ==, EINVAL);

    /* corrupted blobs are refused whole */
    bad = g_memdup2(blob->data, blob->len);
    bad[0] ^= 1;
    g_assert_cmpint(load_config(dc, bad, blob->len), ==, EINVAL);
    memcpy(bad, blob->data, blob->len);
    bad[blob->len / 2] ^= 0x80;
    g_assert_cmpint(load_config(dc, bad, blob->len), ==, EINVAL);
    memcpy(bad, blob->data, blob->len);
    bad[blob->len - 1] ^= 0x80;
    g_assert_cmpint(load_config(dc, bad, blob->len), ==, EINVAL);
    g_assert_cmpint(load_config(dc, blob->data, blob->len - 1), ==, EINVAL);
    g_assert_cmpint(load_config(dc, blob->data, 16), ==, EINVAL);
    g_assert_cmpint(load_config(dc, blob->data, 0), ==, EINVAL);
    g_assert_cmphex(bar0_read(dc, DEVSTATE_REG_SCRATCH), ==, 0);

    /* another identity */
    g_assert_cmpint(set_state(oc, STOP), ==, 0);
    g_assert_cmpint(load_config(oc, blob->data, blob->len), ==, EINVAL);

    /* fault injection */
    g_free(server_cmd(d, "fail config-set:ENOSPC:1"));
    g_assert_cmpint(load_config(dc, blob->data, blob->len), ==, ENOSPC);

    /* good blob: minor 2 <= 2 */
    g_assert_cmpint(load_config(dc, blob->data, blob->len), ==, 0);
    g_assert_cmphex(bar0_read(dc, DEVSTATE_REG_SCRATCH), ==, 0x12345678);
    g_assert_cmpint(bar0_read(dc, DEVSTATE_REG_DMA_PAGES), ==, 77);

    /* and back: same minor, another bugfix */
    g_assert_cmpint(set_state(dc, STOP | LOGGING), ==, 0);
    g_byte_array_unref(blob);
    blob = save_config(dc);
    g_assert_cmpint(set_state(c, STOP), ==, 0);
    g_assert_cmpint(load_config(c, blob->data, blob->len), ==, 0);

    g_free(server_cmd(s, "fail config-get:EIO"));
    g_assert_cmpint(ctl_write(c, CTL_CFG_ACTION, 4,
                              GET_BUFFER), ==, EIO);
    client_close(c);
    client_close(dc);
    client_close(oc);
    server_stop(s);
    server_stop(d);
    server_stop(other);
}

static void test_config_minor(void)
{
    Server *s, *d;
    Client *c, *dc;
    g_autoptr(GByteArray) blob = NULL;

    if (user_only("two devices with chosen versions")) {
        return;
    }
    s = server_start("--version 1.3.0");
    d = server_start("--version 1.2.9");
    c = client_connect(s);
    dc = client_connect(d);

    g_assert_cmpint(set_state(c, STOP), ==, 0);
    blob = save_config(c);
    g_assert_cmpint(set_state(dc, STOP), ==, 0);
    g_assert_cmpint(load_config(dc, blob->data, blob->len), ==, EINVAL);
    client_close(c);
    client_close(dc);
    server_stop(s);
    server_stop(d);
}


#define SMALL_MEM   "--mem-size 1M --chunk-size 64K --mutate-rate 0"

/* Data sets: size, the read-only pos, and the chunk sequence */
static void test_memory(void)
{
    Server *s = server_start(SMALL_MEM);
    Client *c;
    uint64_t full, chunk, size, pos, before, after, pages;
    g_autoptr(GByteArray) set = NULL;
    g_autoptr(GByteArray) delta = NULL;
    uint32_t flags;

    if (!s) {
        return;
    }
    c = client_connect(s);
    full = whole_set_size(c);
    chunk = dev_chunk(c);
    pages = dev_pages(c);
    g_assert_cmpint(full, >, chunk);

    /* outside logging: a whole snapshot; size has no side effect */
    g_assert_cmpint(ctl_read(c, CTL_MEM_PENDING, 8), ==, 0);
    size = ctl_read(c, CTL_MEM_SIZE, 8);
    g_assert_cmpint(size, ==, full);
    g_assert_cmpint(ctl_read(c, CTL_MEM_SIZE, 8), ==, full);
    /* pos: read-only, 0 at open, advanced by each chunk */
    g_assert_cmpint(ctl_read(c, CTL_MEM_POS, 8), ==, 0);
    g_assert_cmpint(ctl_write(c, CTL_MEM_POS, 8, chunk), ==, EINVAL);
    g_assert_cmpint(ctl_read(c, CTL_MEM_POS, 8), ==, 0);
    for (pos = 0; pos < full; pos += chunk) {
        g_assert_cmpint(ctl_write(c, CTL_MEM_ACTION, 4, GET_BUFFER), ==, 0);
        g_assert_cmpint(ctl_read(c, CTL_MEM_POS, 8), ==,
                        MIN(pos + chunk, full));
        if (pos == 0) {
            g_assert_cmpint(ctl_write(c, CTL_MEM_POS, 8, 0), ==, EINVAL);
        }
    }
    /* closed: no more chunks until a new set is opened */
    g_assert_cmpint(ctl_write(c, CTL_MEM_ACTION, 4, GET_BUFFER), ==, EINVAL);
    g_assert_cmpint(ctl_read(c, CTL_MEM_POS, 8), ==, full);
    /* a failed GET_BUFFER does not advance pos */
    g_assert_cmpint(ctl_read(c, CTL_MEM_SIZE, 8), ==, full);
    server_fail(s, "mem-get:EIO:1");
    g_assert_cmpint(ctl_write(c, CTL_MEM_ACTION, 4, GET_BUFFER), ==, EIO);
    g_assert_cmpint(ctl_read(c, CTL_MEM_POS, 8), ==, 0);
    g_assert_cmpint(ctl_write(c, CTL_MEM_ACTION, 4, GET_BUFFER), ==, 0);
    g_assert_cmpint(ctl_read(c, CTL_MEM_POS, 8), ==, chunk);
    /* loads in STOP only */
    g_assert_cmpint(ctl_write(c, CTL_MEM_SIZE, 8, full), ==, EBUSY);

    /* logging: the first set is a whole snapshot (the open one is gone) */
    bar0_write(c, DEVSTATE_REG_MUTATE_RATE, 5000);
    bar0_write(c, DEVSTATE_REG_CTRL, DEVSTATE_CTRL_MUTATE);
    g_usleep(20 * 1000);
    g_assert_cmpint(set_state(c, RUNNING | LOGGING), ==, 0);
    bar0_write(c, DEVSTATE_REG_CTRL, 0);
    set = save_mem_set(c);
    g_assert_cmpint(set_records(set), ==, pages);
    memcpy(&flags, set->data + 24, 4);
    g_assert_cmpint(flags & 1, ==, 1);
    /* nothing dirtied since: an empty set */
    g_assert_cmpint(ctl_read(c, CTL_MEM_SIZE, 8), ==, 0);
    /* a few pages dirtied: exactly those */
    before = status_value(s, "mutate_count");
    mutate_pages(s, c, 8);
    g_assert_cmpint(set_state(c, STOP | LOGGING), ==, 0);
    after = status_value(s, "mutate_count");
    g_assert_cmpint(after - before, <, pages);
    delta = save_mem_set(c);
    g_assert_cmpint(set_records(delta), ==, after - before);
    /* no change in STOP */
    g_usleep(30 * 1000);
    g_assert_cmpint(status_value(s, "mutate_count"), ==, after);
    g_assert_cmpint(ctl_read(c, CTL_MEM_SIZE, 8), ==, 0);
    client_close(c);
    server_stop(s);
}

/*
 * pending: the size of the next data set if it were opened now; 0 outside
 * a session; frozen in STOP|LOGGING, after which the next set is empty;
 * never a set larger than the session's first.
 */
static void test_pending(void)
{
    Server *s = server_start(SMALL_MEM);
    Client *c;
    uint64_t full, pending, size, n, before;
    g_autoptr(GByteArray) set = NULL;

    if (!s) {
        return;
    }
    c = client_connect(s);
    full = whole_set_size(c);
    g_assert_cmpint(ctl_read(c, CTL_MEM_PENDING, 8), ==, 0);
    mutate_pages(s, c, 4);
    g_assert_cmpint(ctl_read(c, CTL_MEM_PENDING, 8), ==, 0);

    /* the session opens with everything pending */
    g_assert_cmpint(set_state(c, RUNNING | LOGGING), ==, 0);
    g_assert_cmpint(ctl_read(c, CTL_MEM_PENDING, 8), ==, full);
    g_assert_cmpint(ctl_read(c, CTL_MEM_SIZE, 8), ==, full);
    g_assert_cmpint(ctl_read(c, CTL_MEM_PENDING, 8), ==, 0);
    /* dirtied while the first set is still open count for the next one */
    before = status_value(s, "mutate_count");
    g_assert_cmpint(ctl_write(c, CTL_MEM_ACTION, 4, GET_BUFFER), ==, 0);
    mutate_pages(s, c, 5);
    n = status_value(s, "mutate_count") - before;
    pending = ctl_read(c, CTL_MEM_PENDING, 8);
    g_assert_cmpint(pending, ==, set_bytes(n));
    g_byte_array_unref(save_mem_set(c));       /* the rest of the first */
    g_assert_cmpint(ctl_read(c, CTL_MEM_PENDING, 8), ==, pending);
    size = ctl_read(c, CTL_MEM_SIZE, 8);
    g_assert_cmpint(size, <=, pending);         /* never an under-count */
    g_assert_cmpint(size, ==, set_bytes(n));
    set = save_mem_set(c);
    g_assert_cmpint(set->len, ==, size);
    g_assert_cmpint(ctl_read(c, CTL_MEM_PENDING, 8), ==, 0);

    /* every page dirty: the set is the whole snapshot, no larger */
    mutate_pages(s, c, dev_pages(c) + 16);
    g_assert_cmpint(ctl_read(c, CTL_MEM_PENDING, 8), ==, full);
    g_assert_cmpint(ctl_read(c, CTL_MEM_SIZE, 8), ==, full);
    g_byte_array_unref(save_mem_set(c));

    /* STOP|LOGGING: pending stops growing; after that set, nothing */
    before = status_value(s, "mutate_count");
    bar0_write(c, DEVSTATE_REG_MUTATE_RATE, 5000);
    bar0_write(c, DEVSTATE_REG_CTRL, DEVSTATE_CTRL_MUTATE);
    wait_status_above(s, "mutate_count", before);
    g_assert_cmpint(set_state(c, STOP | LOGGING), ==, 0);
    pending = ctl_read(c, CTL_MEM_PENDING, 8);
    g_assert_cmpint(pending, >, 0);
    g_assert_cmpint(pending, <=, full);
    g_usleep(30 * 1000);
    g_assert_cmpint(ctl_read(c, CTL_MEM_PENDING, 8), ==, pending);
    g_byte_array_unref(set);
    set = save_mem_set(c);
    g_assert_cmpint(set->len, <=, pending);
    g_assert_cmpint(set->len, >, 0);
    g_assert_cmpint(ctl_read(c, CTL_MEM_PENDING, 8), ==, 0);
    g_assert_cmpint(ctl_read(c, CTL_MEM_SIZE, 8), ==, 0);
    /* the session ends: 0 */
    g_assert_cmpint(set_state(c, STOP), ==, 0);
    g_assert_cmpint(ctl_read(c, CTL_MEM_PENDING, 8), ==, 0);
    client_close(c);
    server_stop(s);
}

/*
 * Loads: STOP only, a chunk per SET_BUFFER applied in place once it is
 * checked; a bad header applies nothing, a bad record fails its chunk
 * (which applies nothing) and ends the set; a failed SET_BUFFER does not
 * advance pos.
 */
static void test_load(void)
{
    Server *s = server_start(SMALL_MEM);
    Client *c;
    g_autoptr(GByteArray) a = NULL;
    g_autoptr(GByteArray) b = NULL;
    g_autoptr(GByteArray) now = NULL;
    g_autoptr(GByteArray) bad = NULL;
    uint64_t full, chunk, pages, last, at, page;

    if (!s) {
        return;
    }
    c = client_connect(s);
    full = whole_set_size(c);
    chunk = dev_chunk(c);
    pages = dev_pages(c);
    last = pages - 1;
    /*
     * Every page written by this case first: a kernel device outlives a
     * case, and what the cases before left in its memory could be what the
     * mutation below writes (the worker's pattern follows its count, which
     * a reset sets back to 0).  Then the mutation below writes every page
     * at a count above any that wrote a.
     */
    mutate_pages(s, c, pages + 8);
    g_assert_cmpint(set_state(c, STOP), ==, 0);
    a = mem_snapshot(c);
    g_assert_cmpint(set_state(c, RUNNING), ==, 0);
    mutate_pages(s, c, pages + 8);              /* every page changes */
    g_assert_cmpint(set_state(c, STOP), ==, 0);
    b = mem_snapshot(c);
    g_assert_cmpint(memcmp(rec_data(a, 0), rec_data(b, 0), 4096), !=, 0);
    g_assert_cmpint(memcmp(rec_data(a, last), rec_data(b, last), 4096), !=,
                    0);

    /* sizes that are no set of this device */
    g_assert_cmpint(ctl_write(c, CTL_MEM_SIZE, 8, full + MEM_REC_SIZE), ==,
                    EINVAL);
    g_assert_cmpint(ctl_write(c, CTL_MEM_SIZE, 8, full + 1), ==, EINVAL);
    g_assert_cmpint(ctl_write(c, CTL_MEM_SIZE, 8, 8), ==, EINVAL);
    /* SET_BUFFER without a set */
    g_assert_cmpint(ctl_write(c, CTL_MEM_ACTION, 4, SET_BUFFER), ==, EINVAL);

    /* a bad header: refused at the first chunk, nothing applied */
    bad = g_byte_array_new();
    g_byte_array_append(bad, a->data, a->len);
    bad->data[0] ^= 1;
    g_assert_cmpint(load_mem_set_at(c, bad, &at), ==, EINVAL);
    g_assert_cmpint(at, ==, 0);
    g_assert_cmpint(ctl_write(c, CTL_MEM_ACTION, 4, SET_BUFFER), ==, EINVAL);
    bad->data[0] ^= 1;
    bad->data[8] ^= 1;                          /* nr_records */
    g_assert_cmpint(load_mem_set_at(c, bad, &at), ==, EINVAL);
    bad->data[8] ^= 1;
    now = mem_snapshot(c);
    g_assert_cmpmem(now->data, now->len, b->data, b->len);

    /* records out of order in the first chunk: nothing applied */
    page = rec_page(bad, 1);
    memcpy(bad->data + MEM_HDR_SIZE + MEM_REC_SIZE, bad->data + MEM_HDR_SIZE,
           8);
    g_assert_cmpint(load_mem_set_at(c, bad, &at), ==, EINVAL);
    g_assert_cmpint(at, ==, 0);
    memcpy(bad->data + MEM_HDR_SIZE + MEM_REC_SIZE, &page, 8);
    g_byte_array_unref(now);
    now = mem_snapshot(c);
    g_assert_cmpmem(now->data, now->len, b->data, b->len);

    /*
     * The last record names a page past the device memory: its chunk is
     * refused and applies nothing, the chunks before it were applied.
     */
    page = pages;
    memcpy(bad->data + full - MEM_REC_SIZE, &page, 8);
    g_assert_cmpint(load_mem_set_at(c, bad, &at), ==, EINVAL);
    g_assert_cmpint(at, ==, (full - MEM_REC_SIZE) / chunk * chunk);
    g_assert_cmpint(ctl_write(c, CTL_MEM_ACTION, 4, SET_BUFFER), ==, EINVAL);
    g_byte_array_unref(now);
    now = mem_snapshot(c);
    g_assert_cmpmem(rec_data(now, 0), 4096, rec_data(a, 0), 4096);
    g_assert_cmpmem(rec_data(now, last), 4096, rec_data(b, last), 4096);

    /* a failed SET_BUFFER: pos stays; the set loads again from the top */
    server_fail(s, "mem-set:EIO:1");
    g_assert_cmpint(load_mem_set_at(c, a, &at), ==, EIO);
    g_assert_cmpint(at, ==, 0);
    g_assert_cmpint(load_mem_set(c, a), ==, 0);
    g_byte_array_unref(now);
    now = mem_snapshot(c);
    g_assert_cmpmem(now->data, now->len, a->data, a->len);
    /* a dirty set applies its pages only */
    {
        g_autoptr(GByteArray) d = g_byte_array_new();
        uint64_t nr = 2, one = 1;

        g_byte_array_append(d, b->data, MEM_HDR_SIZE);
        memcpy(d->data + 8, &nr, 8);
        memset(d->data + 24, 0, 4);             /* not a whole snapshot */
        g_byte_array_append(d, b->data + MEM_HDR_SIZE, MEM_REC_SIZE);
        g_byte_array_append(d, b->data + MEM_HDR_SIZE + last * MEM_REC_SIZE,
                            MEM_REC_SIZE);
        g_assert_cmpint(load_mem_set(c, d), ==, 0);
        g_byte_array_unref(now);
        now = mem_snapshot(c);
        g_assert_cmpmem(rec_data(now, 0), 4096, rec_data(b, 0), 4096);
        g_assert_cmpmem(rec_data(now, 1), 4096, rec_data(a, 1), 4096);
        g_assert_cmpmem(rec_data(now, last), 4096, rec_data(b, last), 4096);
        /* a dirty set that says it is whole */
        memcpy(d->data + 24, &one, 4);
        g_assert_cmpint(load_mem_set(c, d), ==, EINVAL);
    }
    /* not in RUNNING or STOP|LOGGING */
    g_assert_cmpint(set_state(c, STOP | LOGGING), ==, 0);
    g_assert_cmpint(load_mem_set(c, a), ==, EBUSY);
    client_close(c);
    server_stop(s);
}

static void get_bitmap(Client *c, uint64_t start, uint64_t nr, uint64_t *bm)
{
    g_assert_cmpint(ctl_write(c, CTL_SYS_START, 8, start), ==, 0);
    g_assert_cmpint(ctl_write(c, CTL_SYS_NR, 8, nr), ==, 0);
    g_assert_cmpint(ctl_write(c, CTL_SYS_ACTION, 4,
                              VFIO_DEVICE_DATA_ACTION_GET_BITMAP), ==, 0);
    data_read(c, DATA_BITMAP, (nr + 63) / 64 * 8, bm);
}

static void wait_dma_passes(Server *s, uint64_t passes)
{
    int i;

    for (i = 0; i < 500 && status_value(s, "dma_passes") < passes; i++) {
        g_usleep(10 * 1000);
    }
    g_assert_cmpint(status_value(s, "dma_passes"), >=, passes);
}

static void test_bitmap(void)
{
    Server *s = server_start("--bitmap-size 4K --dma-addr 0x104000 "
                             "--dma-pages 16 --dma-rate 20000 "
                             "--mutate-rate 0 --start");
    Client *c;
    g_autofree uint64_t *bm = NULL;
    uint64_t passes, bits;
    struct devstate_dma_stamp stamp;
    uint8_t *guest;
    int fd, i;

    if (!s) {
        return;
    }
    c = client_connect(s);
    /* the region's capacity: 8 pages per byte (4 KiB unless a kernel's) */
    bits = c->size[DATA_BITMAP] * 8;
    g_assert_cmpint(bits, >=, 5 * 64);
    bm = g_new0(uint64_t, bits / 64);
    fd = map_guest(c, DMA_IOVA, DMA_NPAGES, (void **)&guest);

    /* outside logging: all zero */
    wait_dma_passes(s, status_value(s, "dma_passes") + 2);
    get_bitmap(c, DMA_IOVA >> 12, DMA_NPAGES, bm);
    g_assert_cmphex(bm[0], ==, 0);
    memcpy(&stamp, guest + 4 * 4096 + 5 * 4096, sizeof(stamp));
    g_assert_cmphex(stamp.magic, ==, DEVSTATE_DMA_MAGIC);
    g_assert_cmpint(stamp.page, ==, 5);

    /* limit: 8 bits per byte of the region */
    g_assert_cmpint(ctl_write(c, CTL_SYS_NR, 8, bits + 1), ==, 0);
    g_assert_cmpint(ctl_write(c, CTL_SYS_ACTION, 4,
                              VFIO_DEVICE_DATA_ACTION_GET_BITMAP), ==, EINVAL);
    g_assert_cmpint(ctl_write(c, CTL_SYS_NR, 8, 0), ==, 0);
    g_assert_cmpint(ctl_write(c, CTL_SYS_ACTION, 4,
                              VFIO_DEVICE_DATA_ACTION_GET_BITMAP), ==, EINVAL);
    g_assert_cmpint(ctl_write(c, CTL_SYS_START, 8, G_MAXUINT64), ==, 0);
    g_assert_cmpint(ctl_write(c, CTL_SYS_NR, 8, 2), ==, 0);
    g_assert_cmpint(ctl_write(c, CTL_SYS_ACTION, 4,
                              VFIO_DEVICE_DATA_ACTION_GET_BITMAP), ==, EINVAL);

    /* logging: the DMA window, pages 4..19 of the mapping */
    g_assert_cmpint(set_state(c, RUNNING | LOGGING), ==, 0);
    passes = status_value(s, "dma_passes");
    wait_dma_passes(s, passes + 2);
    g_assert_cmpint(set_state(c, STOP | LOGGING), ==, 0);
    get_bitmap(c, DMA_IOVA >> 12, DMA_NPAGES, bm);
    g_assert_cmphex(bm[0], ==, 0xffffull << 4);
    /* query and clear */
    get_bitmap(c, DMA_IOVA >> 12, DMA_NPAGES, bm);
    g_assert_cmphex(bm[0], ==, 0);
    /* STOP: no DMA */
    passes = status_value(s, "dma_passes");
    g_usleep(30 * 1000);
    g_assert_cmpint(status_value(s, "dma_passes"), ==, passes);

    /* an unaligned range, then a range spanning two tracking blocks */
    g_assert_cmpint(set_state(c, RUNNING | LOGGING), ==, 0);
    wait_dma_passes(s, passes + 2);
    g_assert_cmpint(set_state(c, STOP | LOGGING), ==, 0);
    get_bitmap(c, (DMA_IOVA >> 12) + 6, 3, bm);
    g_assert_cmphex(bm[0], ==, 0x7);
    get_bitmap(c, 0, bits, bm);
    for (i = 0; i < bits / 64; i++) {
        g_assert_cmphex(bm[i], ==,
                        i == 4 ? (0xffffull << 4) & ~(0x7ull << 6) : 0);
    }
    g_free(server_cmd(s, "fail bitmap:EBUSY:1"));
    g_assert_cmpint(ctl_write(c, CTL_SYS_ACTION, 4,
                              VFIO_DEVICE_DATA_ACTION_GET_BITMAP), ==, EBUSY);
    /* logging off: tracking discarded */
    g_assert_cmpint(set_state(c, STOP), ==, 0);
    g_assert_cmpint(set_state(c, RUNNING), ==, 0);
    wait_dma_passes(s, status_value(s, "dma_passes") + 1);
    get_bitmap(c, DMA_IOVA >> 12, DMA_NPAGES, bm);
    g_assert_cmphex(bm[0], ==, 0);
    unmap_guest(fd, guest, DMA_NPAGES);
    client_close(c);
    server_stop(s);
}

static void test_interrupt(void)
{
    Server *s = server_start("--dma-addr 0x100000 --dma-pages 4 "
                             "--dma-rate 2000 --mutate-rate 0");
    Client *c;
    int efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK), fds[2], gfd;
    void *guest;
    bool automasked;

    if (!s) {
        close(efd);
        return;
    }
    c = client_connect(s);
    /* the reference device's INTx is not automasked, the kernel's may be */
    automasked = irq_flags(c, VFIO_PCI_INTX_IRQ_INDEX) &
        VFIO_IRQ_INFO_AUTOMASKED;
    gfd = map_guest(c, DMA_IOVA, 8, &guest);
    g_assert_cmpint(set_irqs(c, VFIO_PCI_INTX_IRQ_INDEX, 0, 1, &efd), ==, 0);
    fds[0] = fds[1] = efd;
    g_assert_cmpint(set_irqs(c, VFIO_PCI_INTX_IRQ_INDEX, 0, 2, fds), ==,
                    EINVAL);
    bar0_write(c, DEVSTATE_REG_CTRL, DEVSTATE_CTRL_DMA | DEVSTATE_CTRL_DMA_IRQ);
    g_assert_true(wait_eventfd(efd, 5000));
    if (automasked) {
        /* masked by the interrupt: no other until it is unmasked */
        g_assert_false(wait_eventfd(efd, 50));
    }
    /* a stopped device raises none */
    g_assert_cmpint(set_state(c, STOP), ==, 0);
    wait_eventfd(efd, 0);
    if (automasked) {
        /* handled: unmask it; what it held stays held while stopped */
        g_assert_cmpint(intx_unmask(c), ==, 0);
    }
    g_assert_false(wait_eventfd(efd, 50));
    g_assert_cmpint(set_state(c, RUNNING), ==, 0);
    g_assert_true(wait_eventfd(efd, 5000));
    close(efd);
    unmap_guest(gfd, guest, 8);
    client_close(c);
    server_stop(s);
}

static void test_migration_version(void)
{
    /* a kernel device has its own string: the cases derive from it */
    Server *s = server_start(transport == TRANSPORT_KERNEL ? NULL :
                             "--version 1.2.3");
    Client *c;
    char own[4096] = "";
    g_autofree char *id = NULL;
    char *dash;
    uint32_t maj, min, fix;
    struct {
        char *str;
        int ok;             /* 1: accepted, 0: refused, -1: EINVAL */
    } cases[40];
    unsigned n = 0, i;

    if (!s) {
        return;
    }
    c = client_connect(s);
    g_assert_cmpint(region_read(c, VERSION_REGION, 0, sizeof(own), own), ==,
                    0);
    g_assert_nonnull(memchr(own, 0, sizeof(own)));
    if (!is_kernel(s)) {
        g_assert_cmpstr(own, ==, "vfio-user-devstate-1.2.3");
    } else {
        g_autofree char *attr = sysfs_read(s, "migration_version");

        g_assert_cmpstr(attr, ==, own);
    }
    /* the device's own string: IDENTITY-MAJOR.MINOR.BUGFIX */
    dash = strrchr(own, '-');
    g_assert_nonnull(dash);
    g_assert_cmpint(sscanf(dash + 1, "%u.%u.%u", &maj, &min, &fix), ==, 3);
    id = g_strndup(own, dash - own);

#define VCASE(ok_, ...) \
    (cases[n].str = g_strdup_printf(__VA_ARGS__), cases[n++].ok = (ok_))
    VCASE(1, "%s", own);
    VCASE(1, "%s\n", own);
    VCASE(1, "%s-%u.%u.%u", id, maj, min, fix + 1);
    VCASE(1, "%s-%u.%u.4294967295", id, maj, min);
    VCASE(1, "%s-%u.0.0", id, maj);
    VCASE(0, "%s-%u.%u.%u", id, maj, min + 1, fix);
    VCASE(0, "%s-%u.%u.%u", id, maj + 1, min, fix);
    VCASE(0, "other-device-%u.%u.%u", maj, min, fix);
    /* ill-formed: refused with EINVAL (no wrap-around, no signs) */
    VCASE(-1, "%s-%u", id, (uint32_t)(4294967296ull + maj));
    VCASE(-1, "%s-%llu.%u.%u", id, 4294967296ull + maj, min, fix);
    VCASE(-1, "%s-%u.%llu.%u", id, maj, 4294967296ull + min, fix);
    VCASE(-1, "%s-%u.%u.4294967296", id, maj, min);
    VCASE(-1, "%s-99999999999999999999.0.0", id);
    VCASE(-1, "%s-+%u.+%u.+%u", id, maj, min, fix);
    VCASE(-1, "%s- %u.%u.%u", id, maj, min, fix);
    VCASE(-1, "%s-%u. %u.%u", id, maj, min, fix);
    VCASE(-1, "%s-%u.%u.%u ", id, maj, min, fix);
    VCASE(-1, "%s-%u.%u.%u\n\n", id, maj, min, fix);
    VCASE(-1, "%s-%u.%u.%ux", id, maj, min, fix);
    VCASE(-1, "%s-%u.%u.%u.0", id, maj, min, fix);
    VCASE(-1, "%s-%u.%u", id, maj, min);
    VCASE(-1, "%s-%u..%u", id, maj, fix);
    VCASE(-1, "%s-0x%x.%u.%u", id, maj, min, fix);
    VCASE(-1, "%s", id);
    VCASE(-1, " %s", own);
    VCASE(-1, "%s", "");
#undef VCASE
    for (i = 0; i < n; i++) {
        int err = region_write(c, VERSION_REGION, 0,
                               strlen(cases[i].str) + 1, cases[i].str);
        g_autofree char *shown = g_strescape(cases[i].str, NULL);

        g_test_message("migration_version '%s': %s", shown, g_strerror(err));
        if (cases[i].ok > 0) {
            g_assert_cmpint(err, ==, 0);
        } else if (cases[i].ok < 0) {
            g_assert_cmpint(err, ==, EINVAL);
        } else {
            g_assert_cmpint(err, !=, 0);
        }
        g_free(cases[i].str);
    }
    g_assert_cmpint(region_write(c, VERSION_REGION, 1, 4, "abc"), ==, EINVAL);
    /* bytes after the NUL are no part of a string */
    {
        size_t len = strlen(own);
        g_autofree char *tail = g_malloc(len + 2);

        memcpy(tail, own, len + 1);
        tail[len + 1] = 'x';
        g_assert_cmpint(region_write(c, VERSION_REGION, 0, len + 2, tail), ==,
                        EINVAL);
    }
    server_fail(s, "version:EPERM:1");
    g_assert_cmpint(region_write(c, VERSION_REGION, 0, strlen(own) + 1, own),
                    ==, EPERM);
    g_assert_cmpint(region_write(c, VERSION_REGION, 0, strlen(own) + 1, own),
                    ==, 0);
    client_close(c);
    server_stop(s);
}

static void test_malformed(void)
{
    Server *s;
    Client *c;
    VFIOUserHdr hdr = { .id = 1000, .command = VFIO_USER_DEVICE_GET_INFO };
    struct vfio_device_info di = { .argsz = 4 };
    struct {
        uint64_t offset;
        uint32_t region, count;
    } rw = { 0, 0, 4 };
    g_autofree uint8_t *huge = NULL;
    g_autofree char *pong = NULL;
    uint32_t huge_len = (1 << 20) + 8192;
    int fds[2];

    if (user_only("malformed vfio-user messages")) {
        return;
    }
    s = server_start("--persist");
    c = client_connect(s);
    /* size smaller than a header */
    hdr.size = 8;
    c->id = hdr.id;
    send_raw(c, &hdr, sizeof(hdr));
    g_assert_cmpint(recv_reply(c, NULL, NULL), ==, EINVAL);
    /* a reply where a request belongs */
    hdr.size = 16;
    hdr.flags = VFIO_USER_REPLY;
    hdr.id = ++c->id;
    send_raw(c, &hdr, sizeof(hdr));
    g_assert_cmpint(recv_reply(c, NULL, NULL), ==, EINVAL);
    /* bigger than max_data_xfer_size allows, payload sent */
    huge = g_malloc0(huge_len);
    g_assert_cmpint(request(c, VFIO_USER_REGION_WRITE, huge, huge_len, NULL),
                    ==, E2BIG);
    /* bad argsz, truncated payloads */
    g_assert_cmpint(request(c, VFIO_USER_DEVICE_GET_INFO, &di, sizeof(di),
                            NULL), ==, EINVAL);
    g_assert_cmpint(request(c, VFIO_USER_DEVICE_GET_INFO, &di, 8, NULL), ==,
                    EINVAL);
    g_assert_cmpint(request(c, VFIO_USER_REGION_READ, &rw, 8, NULL), ==,
                    EINVAL);
    g_assert_cmpint(request(c, VFIO_USER_DEVICE_SET_IRQS, &rw, 12, NULL), ==,
                    EINVAL);
    /* unknown commands, and ones a client must not send */
    g_assert_cmpint(request(c, 99, NULL, 0, NULL), ==, ENOSYS);
    g_assert_cmpint(request(c, VFIO_USER_DMA_READ, &rw, sizeof(rw), NULL),
                    ==, ENOSYS);
    g_assert_cmpint(request(c, VFIO_USER_DIRTY_PAGES, NULL, 0, NULL), ==,
                    ENOSYS);
    /* regions and offsets out of range, counts too big */
    rw.region = NUM_REGIONS;
    g_assert_cmpint(request(c, VFIO_USER_REGION_READ, &rw, sizeof(rw), NULL),
                    ==, EINVAL);
    rw.region = 2;                      /* BAR2: no such region */
    g_assert_cmpint(request(c, VFIO_USER_REGION_READ, &rw, sizeof(rw), NULL),
                    ==, EINVAL);
    rw.region = 0;
    rw.offset = 4096;
    g_assert_cmpint(request(c, VFIO_USER_REGION_READ, &rw, sizeof(rw), NULL),
                    ==, EINVAL);
    rw.offset = G_MAXUINT64 - 1;
    g_assert_cmpint(request(c, VFIO_USER_REGION_READ, &rw, sizeof(rw), NULL),
                    ==, EINVAL);
    rw.offset = 0;
    /* more than max_data_xfer_size: refused, not truncated */
    rw.count = (1 << 20) + 1;
    g_assert_cmpint(request(c, VFIO_USER_REGION_READ, &rw, sizeof(rw), NULL),
                    ==, E2BIG);
    rw.count = 0;
    g_assert_cmpint(request(c, VFIO_USER_REGION_READ, &rw, sizeof(rw), NULL),
                    ==, EINVAL);
    /* a write whose count disagrees with its size */
    rw.count = 8;
    g_assert_cmpint(request(c, VFIO_USER_REGION_WRITE, &rw, sizeof(rw), NULL),
                    ==, EINVAL);
    /* fds where none belong */
    fds[0] = fds[1] = eventfd(0, EFD_CLOEXEC);
    send_msg(c, VFIO_USER_DEVICE_RESET, NULL, 0, fds, 2);
    g_assert_cmpint(recv_reply(c, NULL, NULL), ==, EINVAL);
    close(fds[0]);
    /* still alive */
    di.argsz = 16;
    g_assert_cmpint(request(c, VFIO_USER_DEVICE_GET_INFO, &di, sizeof(di),
                            NULL), ==, 0);

    /* a size it will not read: reply, drop the client, serve the next */
    hdr.size = 0xfffffff0;
    hdr.flags = 0;
    hdr.id = ++c->id;
    send_raw(c, &hdr, sizeof(hdr));
    g_assert_cmpint(recv_reply(c, NULL, NULL), ==, E2BIG);
    client_close(c);
    c = client_connect(s);
    g_assert_cmpint(request(c, VFIO_USER_DEVICE_GET_INFO, &di, sizeof(di),
                            NULL), ==, 0);
    client_close(c);
    pong = server_cmd(s, "ping");
    g_assert_cmpstr(pong, ==, "pong");
    server_stop(s);
}


static void test_exit_at(void)
{
    Server *s;
    Client *c;

    if (user_only("the reference device's --exit-at")) {
        return;
    }
    s = server_start("--exit-at config-get");
    c = client_connect(s);

    g_assert_cmpint(set_state(c, STOP), ==, 0);
    g_assert_cmpint(ctl_write(c, CTL_CFG_ACTION, 4, 0), ==, EINVAL);
    send_msg(c, VFIO_USER_REGION_WRITE, NULL, 0, NULL, 0);
    g_assert_cmpint(recv_reply(c, NULL, NULL), ==, EINVAL);
    {
        uint8_t msg[20] = { 0 };
        uint32_t v = VFIO_DEVICE_DATA_ACTION_GET_BUFFER;

        msg[0] = CTL_CFG_ACTION;
        msg[8] = CTL_REGION;
        msg[12] = 4;
        memcpy(msg + 16, &v, 4);
        send_msg(c, VFIO_USER_REGION_WRITE, msg, sizeof(msg), NULL, 0);
    }
    g_assert_cmpint(server_wait(s), ==, 3);
    client_close(c);
    server_stop(s);
}

/*
 * max_data_xfer_size: the server advertises --max-xfer and refuses any
 * access with a larger count (E2BIG, nothing truncated); a client that
 * splits its accesses moves whole data sets through it, below and above
 * 1 MiB.
 */
static void max_xfer_case(const char *opts, uint64_t max, uint64_t chunk)
{
    g_autofree char *args = g_strdup_printf("--persist %s", opts);
    Server *s = server_start(args);
    Server *d = server_start(args);
    Client *c = client_raw(s), *dc;
    g_autofree uint8_t *buf = g_malloc0(chunk + 1);
    g_autoptr(GByteArray) set = NULL;
    g_autofree char *sd = NULL, *dd = NULL;
    g_autofree char *needle = g_strdup_printf("\"max_data_xfer_size\":%"
                                              G_GUINT64_FORMAT ",", max);
    g_autoptr(GByteArray) out = g_byte_array_new();
    static const char caps[] = "{}";
    uint8_t v[4 + sizeof(caps)] = { 0 };

    memcpy(v + 4, caps, sizeof(caps));
    g_assert_cmpint(request(c, VFIO_USER_VERSION, v, sizeof(v), out), ==, 0);
    g_byte_array_append(out, (const guint8 *)"", 1);
    g_assert_nonnull(strstr((char *)out->data + 4, needle));
    client_close(c);
    c = client_connect(s);
    dc = client_connect(d);
    g_assert_cmpint(c->max_xfer, ==, max);
    if (chunk > max) {
        g_assert_cmpint(region_read(c, DATA_MEMORY, 0, max + 1, buf), ==,
                        E2BIG);
        g_assert_cmpint(region_write(c, DATA_MEMORY, 0, max + 1, buf), ==,
                        E2BIG);
    }
    g_assert_cmpint(region_read(c, DATA_MEMORY, 0, MIN(max, chunk), buf), ==,
                    0);
    /* a whole set moved in accesses of at most max bytes */
    bar0_write(dc, DEVSTATE_REG_SCRATCH, 1);
    g_assert_cmpint(set_state(c, STOP), ==, 0);
    g_assert_cmpint(set_state(dc, STOP), ==, 0);
    set = save_mem_set(c);
    g_assert_cmpint(load_mem_set(dc, set), ==, 0);
    g_byte_array_unref(set);
    set = save_config(c);
    g_assert_cmpint(load_config(dc, set->data, set->len), ==, 0);
    sd = server_digest(s);
    dd = server_digest(d);
    g_assert_cmpstr(sd, ==, dd);
    client_close(c);
    client_close(dc);
    server_stop(s);
    server_stop(d);
}

static void test_max_xfer(void)
{
    Server *s;

    if (user_only("the vfio-user max_data_xfer_size")) {
        return;
    }
    max_xfer_case("--mem-size 2M --chunk-size 256K --max-xfer 64K",
                  64 * 1024, 256 * 1024);
    max_xfer_case("--mem-size 8M --chunk-size 4M --max-xfer 8M",
                  8 << 20, 4 << 20);
    /* the default: the larger of 1 MiB and the chunk */
    max_xfer_case("--mem-size 2M --chunk-size 64K", 1 << 20, 64 * 1024);
    /* bad values are refused at start */
    s = g_new0(Server, 1);
    {
        g_autofree char *cmd = g_strdup_printf("%s --socket /nonexistent/x "
                                               "--max-xfer 1K",
                                               server_binary);
        g_autofree char *errout = NULL;
        int status = 0;

        g_assert_true(g_spawn_command_line_sync(cmd, NULL, &errout, &status,
                                                NULL));
        g_assert_false(g_spawn_check_wait_status(status, NULL));
        g_assert_true(g_str_has_prefix(errout, "--max-xfer: "));
    }
    g_free(s);
}

/*
 * Source to destination through this client: precopy rounds while the
 * source runs, then the stop-and-copy phase (through P2P when both offer
 * it), then the digests must match.
 */
static void transfer(bool use_mmap)
{
    Server *s = server_start("--mem-size 4M --chunk-size 128K --start "
                             "--mutate-rate 20000");
    Server *d = s ? server_start("--mem-size 4M --chunk-size 128K") : NULL;
    Client *c, *dc;
    g_autoptr(GByteArray) blob = NULL;
    g_autofree char *sd = NULL, *dd = NULL, *before = NULL;
    char version[4096];
    uint64_t pending;
    bool p2p;
    int round, efd;

    if (!d) {
        server_stop(s);
        return;
    }
    efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    c = client_connect(s);
    dc = client_connect(d);
    if (use_mmap && (!client_map_regions(c) || !client_map_regions(dc))) {
        g_test_skip("the devices offer no mmap of their data regions");
        goto out;
    }
    p2p = has_p2p(c) && has_p2p(dc);
    /* destination: stopped before any byte of state */
    g_assert_cmpint(set_state(dc, STOP), ==, 0);
    g_assert_cmpint(region_read(c, VERSION_REGION, 0, sizeof(version),
                                version), ==, 0);
    g_assert_cmpint(region_write(dc, VERSION_REGION, 0, strlen(version) + 1,
                                 version), ==, 0);
    before = server_digest(d);

    g_assert_cmpint(set_state(c, RUNNING | LOGGING), ==, 0);
    for (round = 0; round < 3; round++) {
        g_autoptr(GByteArray) set = save_mem_set(c);

        /* a running device may dirty more after pending was read */
        if (round == 0) {
            g_assert_cmpint(set_records(set), ==, dev_pages(c));
        }
        g_assert_cmpint(load_mem_set(dc, set), ==, 0);
        g_usleep(20 * 1000);
    }
    if (p2p) {
        g_assert_cmpint(set_state(c, P2P | LOGGING), ==, 0);
        /* raised in P2P: held, migrated, raised by the destination */
        bar0_write(c, DEVSTATE_REG_IRQ, 0);
    }
    g_assert_cmpint(set_state(c, STOP | LOGGING), ==, 0);
    pending = ctl_read(c, CTL_MEM_PENDING, 8);
    for (round = 0;; round++) {
        g_autoptr(GByteArray) set = save_mem_set(c);

        if (!set->len) {
            break;
        }
        /* stopped: pending holds; the set opened now is the last one */
        g_assert_cmpint(round, ==, 0);
        g_assert_cmpint(set->len, <=, pending);
        g_assert_cmpint(load_mem_set(dc, set), ==, 0);
    }
    blob = save_config(c);
    g_assert_cmpint(set_state(c, STOP), ==, 0);
    g_assert_cmpint(load_config(dc, blob->data, blob->len), ==, 0);

    sd = server_digest(s);
    dd = server_digest(d);
    g_assert_cmpstr(sd, ==, dd);
    g_assert_cmpstr(sd, !=, before);
    g_assert_cmpint(status_value(s, "mutate_count"), >, 0);
    g_assert_cmpint(status_value(d, "mutate_count"), ==,
                    status_value(s, "mutate_count"));

    /* the destination runs on and changes; the source stays put */
    if (p2p) {
        g_assert_cmpint(set_state(dc, P2P), ==, 0);
    }
    g_assert_cmpint(set_irqs(dc, VFIO_PCI_INTX_IRQ_INDEX, 0, 1, &efd), ==, 0);
    g_assert_false(wait_eventfd(efd, 0));
    g_assert_cmpint(set_state(dc, RUNNING), ==, 0);
    if (p2p) {
        g_assert_true(wait_eventfd(efd, 2000));
        if (!is_kernel(s)) {
            /* a kernel device has no interrupt counter */
            g_assert_cmpint(status_value(d, "irq_count"), ==, 1);
            g_assert_cmpint(status_value(s, "irq_count"), ==, 0);
        }
    }
    g_usleep(30 * 1000);
    g_free(dd);
    dd = server_digest(d);
    g_assert_cmpstr(sd, !=, dd);
    g_free(dd);
    dd = server_digest(s);
    g_assert_cmpstr(sd, ==, dd);
out:
    close(efd);
    client_close(c);
    client_close(dc);
    server_stop(s);
    server_stop(d);
}

static void test_transfer(void)
{
    transfer(false);
}

static void test_transfer_mmap(void)
{
    transfer(true);
}

int main(int argc, char **argv)
{
    int i, j;

    /* --vfio-sysfsdev=PATH or --vfio-sysfsdev PATH, at most twice */
    for (i = j = 1; i < argc; i++) {
        const char *path = NULL;

        if (g_str_has_prefix(argv[i], "--vfio-sysfsdev=")) {
            path = argv[i] + strlen("--vfio-sysfsdev=");
        } else if (!strcmp(argv[i], "--vfio-sysfsdev") && i + 1 < argc) {
            path = argv[++i];
        } else {
            argv[j++] = argv[i];
            continue;
        }
        if (nr_sysfsdevs == G_N_ELEMENTS(sysfsdevs) || !*path) {
            g_printerr("--vfio-sysfsdev: one or two devices\n");
            return 1;
        }
        sysfsdevs[nr_sysfsdevs++] = g_strdup(path);
    }
    argc = j;
    argv[argc] = NULL;
    g_test_init(&argc, &argv, NULL);
    if (nr_sysfsdevs) {
        transport = TRANSPORT_KERNEL;
        for (i = 0; i < nr_sysfsdevs; i++) {
            g_autofree char *grp = g_build_filename(sysfsdevs[i],
                                                    "iommu_group", NULL);

            if (!g_file_test(grp, G_FILE_TEST_EXISTS)) {
                g_printerr("--vfio-sysfsdev %s: not a VFIO device (no "
                           "iommu_group)\n", sysfsdevs[i]);
                return 1;
            }
        }
    } else {
        server_binary = g_getenv("DEVSTATE_SERVER_BINARY");
        for (i = 1; i < argc && !server_binary; i++) {
            if (argv[i][0] != '-') {
                server_binary = argv[i];
            }
        }
        if (!server_binary) {
            g_printerr("set DEVSTATE_SERVER_BINARY, pass the server path, "
                       "or give --vfio-sysfsdev=/sys/bus/mdev/devices/UUID\n");
            return 1;
        }
    }
    signal(SIGPIPE, SIG_IGN);

    g_test_add_func("/devstate/version", test_version);
    g_test_add_func("/devstate/max-xfer", test_max_xfer);
    g_test_add_func("/devstate/dma-map", test_dma_map);
    g_test_add_func("/devstate/region-info", test_region_info);
    g_test_add_func("/devstate/pci-config", test_pci_config);
    g_test_add_func("/devstate/msix", test_msix);
    g_test_add_func("/devstate/fsm", test_fsm);
    g_test_add_func("/devstate/p2p", test_p2p);
    g_test_add_func("/devstate/reset", test_reset);
    g_test_add_func("/devstate/config", test_config);
    g_test_add_func("/devstate/config-minor", test_config_minor);
    g_test_add_func("/devstate/memory", test_memory);
    g_test_add_func("/devstate/pending", test_pending);
    g_test_add_func("/devstate/load", test_load);
    g_test_add_func("/devstate/bitmap", test_bitmap);
    g_test_add_func("/devstate/interrupt", test_interrupt);
    g_test_add_func("/devstate/migration-version", test_migration_version);
    g_test_add_func("/devstate/malformed", test_malformed);
    g_test_add_func("/devstate/exit-at", test_exit_at);
    g_test_add_func("/devstate/transfer", test_transfer);
    g_test_add_func("/devstate/transfer-mmap", test_transfer_mmap);
    return g_test_run();
}
