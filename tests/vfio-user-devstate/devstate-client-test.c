/*
 * vfio-user-devstate protocol tests: a small vfio-user client that drives
 * the reference device without QEMU
 *
 * The server binary is taken from $DEVSTATE_SERVER_BINARY or from the
 * first argument that is not a GTest option.
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
#define CTL_SYS_START   56
#define CTL_SYS_NR      64
#define CTL_SYS_ACTION  72
#define CTL_SYS_SHIFT   76

#define RUNNING         VFIO_DEVICE_DATA_STATE_RUNNING
#define STOP            VFIO_DEVICE_DATA_STATE_STOP
#define LOGGING         VFIO_DEVICE_DATA_STATE_LOGGING

#define MEM_HDR_SIZE    32
#define MEM_REC_SIZE    (8 + 4096)

static const char *server_binary;

typedef struct {
    GPid pid;
    char *dir;
    char *sock;
    char *ctl;
    char *log;
} Server;

typedef struct {
    int fd;
    uint16_t id;
    uint8_t *map[NUM_REGIONS];  /* mmapped data regions, if any */
    uint64_t map_size[NUM_REGIONS];
} Client;

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

static Server *server_start(const char *args)
{
    Server *s = g_new0(Server, 1);
    g_autofree char *cmd = NULL;
    g_auto(GStrv) argv = NULL;
    g_autoptr(GError) err = NULL;
    int logfd;

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

/* One command on the control socket, the reply line without newline */
static char *server_cmd(Server *s, const char *cmd)
{
    int fd = unix_connect(s->ctl);
    GString *reply = g_string_new(NULL);
    char c;

    g_assert_cmpint(write(fd, cmd, strlen(cmd)), ==, strlen(cmd));
    g_assert_cmpint(write(fd, "\n", 1), ==, 1);
    while (read(fd, &c, 1) == 1 && c != '\n') {
        g_string_append_c(reply, c);
    }
    close(fd);
    return g_string_free(reply, FALSE);
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
    g_autofree char *k = g_strdup_printf(" %s=", key);
    char *p = strstr(st, k);

    g_assert_nonnull(p);
    return g_ascii_strtoull(p + strlen(k), NULL, 0);
}

static bool log_contains(Server *s, const char *text)
{
    g_autofree char *log = NULL;

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
        char buf[CMSG_SPACE(sizeof(int) * 4)];
        struct cmsghdr align;
    } u;
    struct iovec iov[2] = {
        { .iov_base = &hdr, .iov_len = sizeof(hdr) },
        { .iov_base = (void *)payload, .iov_len = len },
    };
    struct msghdr msg = { .msg_iov = iov, .msg_iovlen = 2 };

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
    g_assert_cmpint(sendmsg(c->fd, &msg, MSG_NOSIGNAL), ==, hdr.size);
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

static int negotiate(Client *c)
{
    static const char caps[] = "{\"capabilities\":{\"max_msg_fds\":16,"
        "\"max_data_xfer_size\":1048576}}";
    g_autofree uint8_t *v = g_malloc0(4 + sizeof(caps));

    memcpy(v + 4, caps, sizeof(caps));
    return request(c, VFIO_USER_VERSION, v, 4 + sizeof(caps), NULL);
}

static Client *client_connect(Server *s)
{
    Client *c = g_new0(Client, 1);

    c->fd = unix_connect(s->sock);
    g_assert_cmpint(negotiate(c), ==, 0);
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
    g_free(c);
}

static int region_read(Client *c, uint32_t region, uint64_t off,
                       uint32_t count, void *buf)
{
    struct {
        uint64_t offset;
        uint32_t region, count;
    } rw = { off, region, count };
    g_autoptr(GByteArray) out = g_byte_array_new();
    int err = request(c, VFIO_USER_REGION_READ, &rw, sizeof(rw), out);

    if (!err) {
        g_assert_cmpint(out->len, ==, sizeof(rw) + count);
        memcpy(buf, out->data + sizeof(rw), count);
    }
    return err;
}

static int region_write(Client *c, uint32_t region, uint64_t off,
                        uint32_t count, const void *buf)
{
    g_autofree uint8_t *msg = g_malloc(16 + count);
    struct {
        uint64_t offset;
        uint32_t region, count;
    } rw = { off, region, count };

    memcpy(msg, &rw, sizeof(rw));
    memcpy(msg + 16, buf, count);
    return request(c, VFIO_USER_REGION_WRITE, msg, 16 + count, NULL);
}

/* Data regions: through the mmap when the client mapped them */
static void data_read(Client *c, uint32_t region, uint32_t count, void *buf)
{
    if (c->map[region]) {
        memcpy(buf, c->map[region], count);
    } else {
        g_assert_cmpint(region_read(c, region, 0, count, buf), ==, 0);
    }
}

static void data_write(Client *c, uint32_t region, uint32_t count,
                       const void *buf)
{
    if (c->map[region]) {
        memcpy(c->map[region], buf, count);
    } else {
        g_assert_cmpint(region_write(c, region, 0, count, buf), ==, 0);
    }
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

    g_assert_cmpint(region_read(c, 0, reg, 4, &v), ==, 0);
    return v;
}

static void bar0_write(Client *c, unsigned reg, uint32_t v)
{
    g_assert_cmpint(region_write(c, 0, reg, 4, &v), ==, 0);
}

/* Region info: the whole reply payload, and the fd it carried (or -1) */
static GByteArray *region_info(Client *c, uint32_t index, uint32_t argsz,
                               int *err, int *fd)
{
    struct vfio_region_info info = { .argsz = argsz, .index = index };
    GByteArray *out = g_byte_array_new();

    *fd = -1;
    send_msg(c, VFIO_USER_DEVICE_GET_REGION_INFO, &info, sizeof(info), NULL,
             0);
    *err = recv_reply(c, out, fd);
    return out;
}

/* The type cap of a region info reply, or NULL */
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

static void client_map_regions(Client *c)
{
    unsigned i;

    for (i = DATA_CONFIG; i <= DATA_BITMAP; i++) {
        g_autoptr(GByteArray) info = NULL;
        struct vfio_region_info *ri;
        int err, fd;

        info = region_info(c, i, 256, &err, &fd);
        g_assert_cmpint(err, ==, 0);
        ri = (void *)info->data;
        g_assert_true(ri->flags & VFIO_REGION_INFO_FLAG_MMAP);
        g_assert_cmpint(fd, >=, 0);
        c->map[i] = mmap(NULL, ri->size, PROT_READ | PROT_WRITE, MAP_SHARED,
                         fd, ri->offset);
        g_assert_true(c->map[i] != MAP_FAILED);
        c->map_size[i] = ri->size;
        close(fd);
    }
}

/* Save and load helpers */

static GByteArray *save_config(Client *c)
{
    GByteArray *blob = g_byte_array_new();
    uint64_t size;

    g_assert_cmpint(ctl_write(c, CTL_CFG_ACTION, 4,
                              VFIO_DEVICE_DATA_ACTION_GET_BUFFER), ==, 0);
    size = ctl_read(c, CTL_CFG_SIZE, 8);
    g_assert_cmpint(size, >, 0);
    g_assert_cmpint(size, <=, 4096);
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
    return ctl_write(c, CTL_CFG_ACTION, 4, VFIO_DEVICE_DATA_ACTION_SET_BUFFER);
}

/* One whole data set, chunk by chunk */
static GByteArray *save_mem_set(Client *c, uint64_t chunk)
{
    GByteArray *set = g_byte_array_new();
    uint64_t size = ctl_read(c, CTL_MEM_SIZE, 8), pos;

    g_assert_cmpint(ctl_read(c, CTL_MEM_SIZE, 8), ==, size);
    g_byte_array_set_size(set, size);
    for (pos = 0; pos < size; pos += chunk) {
        g_assert_cmpint(ctl_write(c, CTL_MEM_POS, 8, pos), ==, 0);
        g_assert_cmpint(ctl_write(c, CTL_MEM_ACTION, 4,
                                  VFIO_DEVICE_DATA_ACTION_GET_BUFFER), ==, 0);
        data_read(c, DATA_MEMORY, MIN(chunk, size - pos), set->data + pos);
    }
    return set;
}

static int load_mem_set(Client *c, GByteArray *set, uint64_t chunk)
{
    uint64_t pos;
    int err;

    if (!set->len) {
        return 0;
    }
    err = ctl_write(c, CTL_MEM_SIZE, 8, set->len);
    for (pos = 0; !err && pos < set->len; pos += chunk) {
        data_write(c, DATA_MEMORY, MIN(chunk, set->len - pos),
                   set->data + pos);
        err = ctl_write(c, CTL_MEM_POS, 8, pos) ?:
            ctl_write(c, CTL_MEM_ACTION, 4,
                      VFIO_DEVICE_DATA_ACTION_SET_BUFFER);
    }
    return err;
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

/* Test cases */

static void test_version(void)
{
    Server *s = server_start(NULL);
    Client *c = g_new0(Client, 1);
    static const char caps[] = "{}";
    uint8_t v[4 + sizeof(caps)] = { 0 };
    g_autoptr(GByteArray) out = g_byte_array_new();
    struct vfio_device_info info = { .argsz = 16 };

    c->fd = unix_connect(s->sock);
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
    c = g_new0(Client, 1);
    c->fd = unix_connect(s->sock);
    g_assert_cmpint(request(c, VFIO_USER_VERSION, v, sizeof(v), out), ==, 0);
    g_assert_nonnull(strstr((char *)out->data + 4,
                            "\"max_data_xfer_size\":4194304"));
    client_close(c);
    server_stop(s);
}

static void test_dma_map(void)
{
    Server *s = server_start(NULL);
    Client *c = client_connect(s);
    int fd = memfd_create("guest", MFD_CLOEXEC), fds[2];
    VFIOUserDMAMap map = { .argsz = 32, .flags = 3, .size = 64 * 4096 };
    VFIOUserDMAUnmap unmap = { .argsz = 24 };
    const size_t ml = sizeof(map) - sizeof(VFIOUserHdr);
    const size_t ul = sizeof(unmap) - sizeof(VFIOUserHdr);

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
    Server *s = server_start("--chunk-size 128K --bitmap-size 8K");
    Client *c = client_connect(s);
    static const uint64_t sizes[NUM_REGIONS] = {
        4096, 0, 0, 0, 0, 0, 0, 256, 0, 88, 4096, 128 * 1024, 8192, 4096,
    };
    struct vfio_device_info di = { .argsz = 16 };
    g_autoptr(GByteArray) out = g_byte_array_new();
    unsigned i;
    int err, fd;

    g_assert_cmpint(request(c, VFIO_USER_DEVICE_GET_INFO, &di, sizeof(di),
                            out), ==, 0);
    g_assert_cmpint(out->len, ==, 16);
    memcpy(&di, out->data, 16);
    g_assert_cmpint(di.flags, ==,
                    VFIO_DEVICE_FLAGS_PCI | VFIO_DEVICE_FLAGS_RESET);
    g_assert_cmpint(di.num_regions, ==, NUM_REGIONS);
    g_assert_cmpint(di.num_irqs, >=, 3);

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

    /* IRQs: INTx, MSI and ERR, one vector each */
    for (i = 0; i < di.num_irqs; i++) {
        struct vfio_irq_info ii = { .argsz = 16, .index = i };

        g_assert_cmpint(request(c, VFIO_USER_DEVICE_GET_IRQ_INFO, &ii,
                                sizeof(ii), out), ==, 0);
        memcpy(&ii, out->data, sizeof(ii));
        g_assert_cmpint(ii.count, ==, i != VFIO_PCI_MSIX_IRQ_INDEX &&
                        i != VFIO_PCI_REQ_IRQ_INDEX);
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
    client_close(c);
    server_stop(s);
}

static void test_pci_config(void)
{
    Server *s = server_start(NULL);
    Client *c = client_connect(s);
    uint8_t cfg[256];
    uint32_t v = 0xffffffff;

    g_assert_cmpint(region_read(c, 7, 0, 256, cfg), ==, 0);
    g_assert_cmpint(cfg[0] | cfg[1] << 8, ==, DEVSTATE_PCI_VENDOR_ID);
    g_assert_cmpint(cfg[2] | cfg[3] << 8, ==, DEVSTATE_PCI_DEVICE_ID);
    g_assert_cmpint(cfg[0x2c] | cfg[0x2d] << 8, ==, DEVSTATE_PCI_SUBVENDOR_ID);
    g_assert_cmpint(cfg[0x2e] | cfg[0x2f] << 8, ==, DEVSTATE_PCI_SUBDEVICE_ID);
    g_assert_cmpint(cfg[0x0a] | cfg[0x0b] << 8, ==, 0xff00);
    g_assert_cmpint(cfg[0x3d], ==, 1);
    /* BAR0 sizing, no ROM */
    g_assert_cmpint(region_write(c, 7, 0x10, 4, &v), ==, 0);
    g_assert_cmpint(region_read(c, 7, 0x10, 4, &v), ==, 0);
    g_assert_cmphex(v, ==, 0xfffff000);
    v = 0xffffffff;
    g_assert_cmpint(region_write(c, 7, 0x30, 4, &v), ==, 0);
    g_assert_cmpint(region_read(c, 7, 0x30, 4, &v), ==, 0);
    g_assert_cmphex(v, ==, 0);
    g_assert_cmpint(region_read(c, 7, 250, 8, cfg), ==, EINVAL);

    g_assert_cmphex(bar0_read(c, DEVSTATE_REG_ID), ==, DEVSTATE_ID_MAGIC);
    g_assert_cmpint(bar0_read(c, DEVSTATE_REG_DEVMEM_MIB), ==, 64);
    bar0_write(c, DEVSTATE_REG_SCRATCH, 0xdeadbeef);
    g_assert_cmphex(bar0_read(c, DEVSTATE_REG_SCRATCH), ==, 0xdeadbeef);
    bar0_write(c, DEVSTATE_REG_ID, 0);
    g_assert_cmphex(bar0_read(c, DEVSTATE_REG_ID), ==, DEVSTATE_ID_MAGIC);
    /* reset: registers back to their defaults */
    g_assert_cmpint(request(c, VFIO_USER_DEVICE_RESET, NULL, 0, NULL), ==, 0);
    g_assert_cmphex(bar0_read(c, DEVSTATE_REG_SCRATCH), ==, 0);
    client_close(c);
    server_stop(s);
}

static const uint32_t states[] = {
    RUNNING, RUNNING | LOGGING, STOP | LOGGING, STOP,
};

static const char *const state_names[] = {
    "RUNNING", "STOP", "RUNNING|LOGGING", "STOP|LOGGING",
};

static void test_fsm(void)
{
    Server *s = server_start(NULL);
    Client *c = client_connect(s);
    unsigned i, j, arcs = 0;
    uint64_t v;

    g_assert_cmpint(get_state(c), ==, RUNNING);
    g_assert_cmpint(ctl_read(c, CTL_VERSION, 4), ==, 1);
    g_assert_cmpint(ctl_read(c, CTL_CAPS, 4), ==,
                    VFIO_DEVICE_DATA_CAP_DEVICE_MEMORY |
                    VFIO_DEVICE_DATA_CAP_SYSTEM_MEMORY);
    g_assert_cmpint(ctl_read(c, CTL_SYS_SHIFT, 4), ==, 12);

    /* all twelve arcs */
    for (i = 0; i < 4; i++) {
        for (j = 0; j < 4; j++) {
            g_autofree char *line = NULL;

            if (i == j) {
                continue;
            }
            if (get_state(c) != states[i]) {
                g_assert_cmpint(set_state(c, states[i]), ==, 0);
            }
            g_assert_cmpint(set_state(c, states[j]), ==, 0);
            g_assert_cmpint(get_state(c), ==, states[j]);
            line = g_strdup_printf("devstate: state %s -> %s\n",
                                   state_names[states[i]],
                                   state_names[states[j]]);
            g_assert_true(log_contains(s, line));
            arcs++;
        }
    }
    g_assert_cmpint(arcs, ==, 12);

    /* invalid values */
    g_assert_cmpint(set_state(c, RUNNING), ==, 0);
    g_assert_cmpint(set_state(c, 4), ==, EINVAL);
    g_assert_cmpint(set_state(c, 7), ==, EINVAL);
    g_assert_cmpint(set_state(c, 0xffffffff), ==, EINVAL);
    g_assert_cmpint(get_state(c), ==, RUNNING);

    /* access rules */
    v = 0;
    g_assert_cmpint(region_read(c, CTL_REGION, 4, 8, &v), ==, EINVAL);
    g_assert_cmpint(region_read(c, CTL_REGION, 5, 2, &v), ==, EINVAL);
    g_assert_cmpint(region_read(c, CTL_REGION, 0, 88, NULL), ==, EINVAL);
    g_assert_cmpint(ctl_write(c, CTL_STATE, 2, STOP), ==, EINVAL);
    g_assert_cmpint(ctl_write(c, CTL_VERSION, 4, 2), ==, EINVAL);
    g_assert_cmpint(ctl_write(c, CTL_CAPS, 4, 0), ==, EINVAL);
    g_assert_cmpint(ctl_write(c, CTL_SYS_SHIFT, 4, 16), ==, EINVAL);
    g_assert_cmpint(ctl_write(c, 80, 8, 1), ==, EINVAL);
    g_assert_cmpint(ctl_write(c, CTL_CFG_ACTION, 4, 3), ==, EINVAL);
    g_assert_cmpint(ctl_write(c, CTL_MEM_ACTION, 4, 0), ==, EINVAL);
    g_assert_cmpint(ctl_write(c, CTL_SYS_ACTION, 4, 1), ==, EINVAL);
    g_assert_cmpint(region_write(c, CTL_REGION, 88, 4, &v), ==, EINVAL);
    g_assert_cmpint(ctl_read(c, CTL_VERSION, 4), ==, 1);
    g_assert_cmpint(get_state(c), ==, RUNNING);

    /* a failed arc: EIO, and the state it really is in */
    g_free(server_cmd(s, "fail arc:RUNNING->STOP:EIO:1"));
    g_assert_cmpint(set_state(c, STOP), ==, EIO);
    g_assert_cmpint(get_state(c), ==, RUNNING);
    g_assert_cmpint(set_state(c, STOP), ==, 0);
    g_free(server_cmd(s, "fail arc:EIO"));
    g_assert_cmpint(set_state(c, RUNNING), ==, EIO);
    g_assert_cmpint(set_state(c, STOP | LOGGING), ==, EIO);
    g_assert_cmpint(get_state(c), ==, STOP);
    g_free(server_cmd(s, "clear arc"));
    g_assert_cmpint(set_state(c, STOP | LOGGING), ==, 0);

    /* reset: back to RUNNING, logging off */
    g_assert_cmpint(request(c, VFIO_USER_DEVICE_RESET, NULL, 0, NULL), ==, 0);
    g_assert_cmpint(get_state(c), ==, RUNNING);
    g_assert_cmpint(status_value(s, "logging"), ==, 0);
    client_close(c);
    server_stop(s);
}

static void test_config(void)
{
    Server *s = server_start("--version 1.2.0");
    Server *d = server_start("--version 1.2.5");
    Server *other = server_start("--identity other-device --version 1.2.0");
    Client *c = client_connect(s), *dc = client_connect(d);
    Client *oc = client_connect(other);
    g_autoptr(GByteArray) blob = NULL;
    g_autofree uint8_t *bad = NULL;
    uint64_t big = 4097;

    bar0_write(c, DEVSTATE_REG_SCRATCH, 0x12345678);
    bar0_write(c, DEVSTATE_REG_DMA_PAGES, 77);
    g_assert_cmpint(ctl_write(c, CTL_CFG_ACTION, 4,
                              VFIO_DEVICE_DATA_ACTION_GET_BUFFER), ==, EBUSY);
    g_assert_cmpint(set_state(c, RUNNING | LOGGING), ==, 0);
    g_assert_cmpint(ctl_write(c, CTL_CFG_ACTION, 4,
                              VFIO_DEVICE_DATA_ACTION_GET_BUFFER), ==, EBUSY);
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
                              VFIO_DEVICE_DATA_ACTION_GET_BUFFER), ==, EIO);
    client_close(c);
    client_close(dc);
    client_close(oc);
    server_stop(s);
    server_stop(d);
    server_stop(other);
}

static void test_config_minor(void)
{
    Server *s = server_start("--version 1.3.0");
    Server *d = server_start("--version 1.2.9");
    Client *c = client_connect(s), *dc = client_connect(d);
    g_autoptr(GByteArray) blob = NULL;

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
#define SMALL_PAGES 256
#define CHUNK       (64 * 1024)

static void test_memory(void)
{
    Server *s = server_start(SMALL_MEM);
    Client *c = client_connect(s);
    uint64_t full = MEM_HDR_SIZE + SMALL_PAGES * MEM_REC_SIZE, size, pos;
    uint64_t before, after;
    g_autoptr(GByteArray) set = NULL;
    g_autoptr(GByteArray) delta = NULL;
    uint32_t flags;

    /* outside logging: a whole snapshot; size has no side effect */
    size = ctl_read(c, CTL_MEM_SIZE, 8);
    g_assert_cmpint(size, ==, full);
    g_assert_cmpint(ctl_read(c, CTL_MEM_SIZE, 8), ==, full);
    /* chunk order */
    g_assert_cmpint(ctl_write(c, CTL_MEM_POS, 8, 100), ==, EINVAL);
    g_assert_cmpint(ctl_write(c, CTL_MEM_POS, 8, CHUNK), ==, 0);
    g_assert_cmpint(ctl_write(c, CTL_MEM_ACTION, 4,
                              VFIO_DEVICE_DATA_ACTION_GET_BUFFER), ==, EINVAL);
    g_assert_cmpint(ctl_write(c, CTL_MEM_POS, 8, 0), ==, 0);
    g_assert_cmpint(ctl_write(c, CTL_MEM_ACTION, 4,
                              VFIO_DEVICE_DATA_ACTION_GET_BUFFER), ==, 0);
    g_assert_cmpint(ctl_write(c, CTL_MEM_ACTION, 4,
                              VFIO_DEVICE_DATA_ACTION_GET_BUFFER), ==, EINVAL);
    /* pos beyond size */
    pos = (full + CHUNK - 1) / CHUNK * CHUNK;
    g_assert_cmpint(ctl_write(c, CTL_MEM_POS, 8, pos), ==, 0);
    g_assert_cmpint(ctl_write(c, CTL_MEM_ACTION, 4,
                              VFIO_DEVICE_DATA_ACTION_GET_BUFFER), ==, EINVAL);
    for (pos = CHUNK; pos < full; pos += CHUNK) {
        g_assert_cmpint(ctl_write(c, CTL_MEM_POS, 8, pos), ==, 0);
        g_assert_cmpint(ctl_write(c, CTL_MEM_ACTION, 4,
                                  VFIO_DEVICE_DATA_ACTION_GET_BUFFER), ==, 0);
    }
    /* closed: no more chunks until a new set is opened */
    g_assert_cmpint(ctl_write(c, CTL_MEM_POS, 8, 0), ==, 0);
    g_assert_cmpint(ctl_write(c, CTL_MEM_ACTION, 4,
                              VFIO_DEVICE_DATA_ACTION_GET_BUFFER), ==, EINVAL);
    /* loads in STOP only */
    g_assert_cmpint(ctl_write(c, CTL_MEM_SIZE, 8, full), ==, EBUSY);

    /* logging: the first set is a whole snapshot */
    bar0_write(c, DEVSTATE_REG_MUTATE_RATE, 5000);
    bar0_write(c, DEVSTATE_REG_CTRL, DEVSTATE_CTRL_MUTATE);
    g_usleep(20 * 1000);
    g_assert_cmpint(set_state(c, RUNNING | LOGGING), ==, 0);
    bar0_write(c, DEVSTATE_REG_CTRL, 0);
    set = save_mem_set(c, CHUNK);
    g_assert_cmpint(set_records(set), ==, SMALL_PAGES);
    memcpy(&flags, set->data + 24, 4);
    g_assert_cmpint(flags & 1, ==, 1);
    /* nothing dirtied since: an empty set */
    g_assert_cmpint(ctl_read(c, CTL_MEM_SIZE, 8), ==, 0);
    /* a few pages dirtied: exactly those */
    before = status_value(s, "mutate_count");
    bar0_write(c, DEVSTATE_REG_MUTATE_RATE, 1000);
    bar0_write(c, DEVSTATE_REG_CTRL, DEVSTATE_CTRL_MUTATE);
    g_usleep(50 * 1000);
    g_assert_cmpint(set_state(c, STOP | LOGGING), ==, 0);
    after = status_value(s, "mutate_count");
    g_assert_cmpint(after - before, >, 0);
    g_assert_cmpint(after - before, <, SMALL_PAGES);
    delta = save_mem_set(c, CHUNK);
    g_assert_cmpint(set_records(delta), ==, after - before);
    /* no change in STOP */
    g_usleep(30 * 1000);
    g_assert_cmpint(status_value(s, "mutate_count"), ==, after);
    g_assert_cmpint(ctl_read(c, CTL_MEM_SIZE, 8), ==, 0);

    /* loads: STOP only, whole sets, malformed ones change nothing */
    g_assert_cmpint(load_mem_set(c, set, CHUNK), ==, EBUSY);
    g_assert_cmpint(set_state(c, STOP), ==, 0);
    g_assert_cmpint(ctl_write(c, CTL_MEM_SIZE, 8, full + 1), ==, EINVAL);
    g_assert_cmpint(ctl_write(c, CTL_MEM_SIZE, 8, 8), ==, EINVAL);
    {
        g_autofree char *d0 = server_digest(s);
        g_autofree char *d1 = NULL;
        uint64_t badpage = SMALL_PAGES;

        /* the last record points past the device memory */
        memcpy(set->data + full - MEM_REC_SIZE, &badpage, 8);
        g_assert_cmpint(load_mem_set(c, set, CHUNK), ==, EINVAL);
        d1 = server_digest(s);
        g_assert_cmpstr(d0, ==, d1);
        set->data[0] ^= 1;
        badpage = 0;
        memcpy(set->data + full - MEM_REC_SIZE, &badpage, 8);
        g_assert_cmpint(load_mem_set(c, set, CHUNK), ==, EINVAL);
        set->data[0] ^= 1;
        g_free(d1);
        d1 = server_digest(s);
        g_assert_cmpstr(d0, ==, d1);
    }
    /* out-of-order load chunk */
    g_assert_cmpint(ctl_write(c, CTL_MEM_SIZE, 8, set->len), ==, 0);
    g_assert_cmpint(ctl_write(c, CTL_MEM_POS, 8, CHUNK), ==, 0);
    g_assert_cmpint(ctl_write(c, CTL_MEM_ACTION, 4,
                              VFIO_DEVICE_DATA_ACTION_SET_BUFFER), ==, EINVAL);
    g_free(server_cmd(s, "fail mem-set:EIO:1"));
    g_assert_cmpint(load_mem_set(c, set, CHUNK), ==, EIO);
    g_assert_cmpint(load_mem_set(c, set, CHUNK), ==, 0);
    g_free(server_cmd(s, "fail mem-get:EIO:1"));
    g_assert_cmpint(ctl_read(c, CTL_MEM_SIZE, 8), ==, full);
    g_assert_cmpint(ctl_write(c, CTL_MEM_POS, 8, 0), ==, 0);
    g_assert_cmpint(ctl_write(c, CTL_MEM_ACTION, 4,
                              VFIO_DEVICE_DATA_ACTION_GET_BUFFER), ==, EIO);
    client_close(c);
    server_stop(s);
}

#define DMA_IOVA    0x100000
#define DMA_NPAGES  64

static int map_guest(Client *c, uint64_t iova, uint64_t pages, void **host)
{
    int fd = memfd_create("guest", MFD_CLOEXEC);
    VFIOUserDMAMap map = {
        .argsz = 32, .flags = 3, .iova = iova, .size = pages * 4096,
    };

    g_assert_cmpint(ftruncate(fd, pages * 4096), ==, 0);
    *host = mmap(NULL, pages * 4096, PROT_READ | PROT_WRITE, MAP_SHARED, fd,
                 0);
    g_assert_true(*host != MAP_FAILED);
    send_msg(c, VFIO_USER_DMA_MAP, &map.argsz, 32, &fd, 1);
    g_assert_cmpint(recv_reply(c, NULL, NULL), ==, 0);
    return fd;
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
    Client *c = client_connect(s);
    uint64_t bm[4096 / 8], passes;
    struct devstate_dma_stamp stamp;
    uint8_t *guest;
    int fd = map_guest(c, DMA_IOVA, DMA_NPAGES, (void **)&guest), i;

    /* outside logging: all zero */
    wait_dma_passes(s, status_value(s, "dma_passes") + 2);
    get_bitmap(c, DMA_IOVA >> 12, DMA_NPAGES, bm);
    g_assert_cmphex(bm[0], ==, 0);
    memcpy(&stamp, guest + 4 * 4096 + 5 * 4096, sizeof(stamp));
    g_assert_cmphex(stamp.magic, ==, DEVSTATE_DMA_MAGIC);
    g_assert_cmpint(stamp.page, ==, 5);

    /* limit: 8 bits per byte of the region */
    g_assert_cmpint(ctl_write(c, CTL_SYS_NR, 8, 4096 * 8 + 1), ==, 0);
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
    get_bitmap(c, 0, 4096 * 8, bm);
    for (i = 0; i < G_N_ELEMENTS(bm); i++) {
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
    munmap(guest, DMA_NPAGES * 4096);
    close(fd);
    client_close(c);
    server_stop(s);
}

static void test_interrupt(void)
{
    Server *s = server_start("--dma-addr 0x100000 --dma-pages 4 "
                             "--dma-rate 2000 --mutate-rate 0");
    Client *c = client_connect(s);
    struct {
        uint32_t argsz, flags, index, start, count;
    } irqs = {
        20, VFIO_IRQ_SET_DATA_EVENTFD | VFIO_IRQ_SET_ACTION_TRIGGER,
        VFIO_PCI_INTX_IRQ_INDEX, 0, 1,
    };
    int efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK), gfd;
    uint64_t cnt;
    void *guest;
    int i;

    gfd = map_guest(c, DMA_IOVA, 8, &guest);
    send_msg(c, VFIO_USER_DEVICE_SET_IRQS, &irqs, sizeof(irqs), &efd, 1);
    g_assert_cmpint(recv_reply(c, NULL, NULL), ==, 0);
    irqs.count = 2;
    send_msg(c, VFIO_USER_DEVICE_SET_IRQS, &irqs, sizeof(irqs), &efd, 1);
    g_assert_cmpint(recv_reply(c, NULL, NULL), ==, EINVAL);
    bar0_write(c, DEVSTATE_REG_CTRL, DEVSTATE_CTRL_DMA | DEVSTATE_CTRL_DMA_IRQ);
    for (i = 0; i < 500 && read(efd, &cnt, 8) != 8; i++) {
        g_usleep(10 * 1000);
    }
    g_assert_cmpint(i, <, 500);
    g_assert_cmpint(cnt, >=, 1);
    close(efd);
    close(gfd);
    munmap(guest, 8 * 4096);
    client_close(c);
    server_stop(s);
}

static void test_migration_version(void)
{
    Server *s = server_start("--version 1.2.3");
    Client *c = client_connect(s);
    static const struct {
        const char *str;
        bool ok;
    } cases[] = {
        { "vfio-user-devstate-1.2.3", true },
        { "vfio-user-devstate-1.2.3\n", true },
        { "vfio-user-devstate-1.2.99", true },
        { "vfio-user-devstate-1.0.0", true },
        { "vfio-user-devstate-1.3.0", false },
        { "vfio-user-devstate-2.2.3", false },
        { "vfio-user-devstate-0.2.3", false },
        { "other-device-1.2.3", false },
        { "vfio-user-devstate", false },
        { "vfio-user-devstate-1.2", false },
        { "vfio-user-devstate-1.2.3x", false },
        { "", false },
    };
    char buf[4096];
    unsigned i;

    g_assert_cmpint(region_read(c, VERSION_REGION, 0, sizeof(buf), buf), ==,
                    0);
    g_assert_cmpstr(buf, ==, "vfio-user-devstate-1.2.3");
    for (i = 0; i < G_N_ELEMENTS(cases); i++) {
        int err = region_write(c, VERSION_REGION, 0,
                               strlen(cases[i].str) + 1, cases[i].str);

        if (cases[i].ok) {
            g_assert_cmpint(err, ==, 0);
        } else {
            g_assert_cmpint(err, !=, 0);
        }
    }
    g_assert_cmpint(region_write(c, VERSION_REGION, 1, 4, "abc"), ==, EINVAL);
    g_free(server_cmd(s, "fail version:EPERM:1"));
    g_assert_cmpint(region_write(c, VERSION_REGION, 0, 25,
                                 "vfio-user-devstate-1.2.3"), ==, EPERM);
    client_close(c);
    server_stop(s);
}

static void test_malformed(void)
{
    Server *s = server_start("--persist");
    Client *c = client_connect(s);
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
    rw.region = 1;
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
    rw.count = (1 << 20) + 1;
    g_assert_cmpint(request(c, VFIO_USER_REGION_READ, &rw, sizeof(rw), NULL),
                    ==, EINVAL);
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
    Server *s = server_start("--exit-at config-get");
    Client *c = client_connect(s);

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
 * Source to destination through this client: precopy rounds while the
 * source runs, then the stop-and-copy phase, then the digests must match.
 */
static void transfer(bool use_mmap)
{
    Server *s = server_start("--mem-size 4M --chunk-size 128K --start "
                             "--mutate-rate 20000");
    Server *d = server_start("--mem-size 4M --chunk-size 128K");
    Client *c = client_connect(s), *dc = client_connect(d);
    const uint64_t chunk = 128 * 1024;
    g_autoptr(GByteArray) blob = NULL;
    g_autofree char *sd = NULL, *dd = NULL, *before = NULL;
    char version[4096];
    int round;

    if (use_mmap) {
        client_map_regions(c);
        client_map_regions(dc);
    }
    /* destination: stopped before any byte of state */
    g_assert_cmpint(set_state(dc, STOP), ==, 0);
    g_assert_cmpint(region_read(c, VERSION_REGION, 0, sizeof(version),
                                version), ==, 0);
    g_assert_cmpint(region_write(dc, VERSION_REGION, 0, strlen(version) + 1,
                                 version), ==, 0);
    before = server_digest(d);

    g_assert_cmpint(set_state(c, RUNNING | LOGGING), ==, 0);
    for (round = 0; round < 3; round++) {
        g_autoptr(GByteArray) set = save_mem_set(c, chunk);

        if (round == 0) {
            g_assert_cmpint(set_records(set), ==, 1024);
        }
        g_assert_cmpint(load_mem_set(dc, set, chunk), ==, 0);
        g_usleep(20 * 1000);
    }
    g_assert_cmpint(set_state(c, STOP | LOGGING), ==, 0);
    for (;;) {
        g_autoptr(GByteArray) set = save_mem_set(c, chunk);

        if (!set->len) {
            break;
        }
        g_assert_cmpint(load_mem_set(dc, set, chunk), ==, 0);
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
    g_assert_cmpint(set_state(dc, RUNNING), ==, 0);
    g_usleep(30 * 1000);
    g_free(dd);
    dd = server_digest(d);
    g_assert_cmpstr(sd, !=, dd);
    g_free(dd);
    dd = server_digest(s);
    g_assert_cmpstr(sd, ==, dd);
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
    int i;

    g_test_init(&argc, &argv, NULL);
    server_binary = g_getenv("DEVSTATE_SERVER_BINARY");
    for (i = 1; i < argc && !server_binary; i++) {
        if (argv[i][0] != '-') {
            server_binary = argv[i];
        }
    }
    if (!server_binary) {
        g_printerr("set DEVSTATE_SERVER_BINARY or pass the server path\n");
        return 1;
    }
    signal(SIGPIPE, SIG_IGN);

    g_test_add_func("/devstate/version", test_version);
    g_test_add_func("/devstate/dma-map", test_dma_map);
    g_test_add_func("/devstate/region-info", test_region_info);
    g_test_add_func("/devstate/pci-config", test_pci_config);
    g_test_add_func("/devstate/fsm", test_fsm);
    g_test_add_func("/devstate/config", test_config);
    g_test_add_func("/devstate/config-minor", test_config_minor);
    g_test_add_func("/devstate/memory", test_memory);
    g_test_add_func("/devstate/bitmap", test_bitmap);
    g_test_add_func("/devstate/interrupt", test_interrupt);
    g_test_add_func("/devstate/migration-version", test_migration_version);
    g_test_add_func("/devstate/malformed", test_malformed);
    g_test_add_func("/devstate/exit-at", test_exit_at);
    g_test_add_func("/devstate/transfer", test_transfer);
    g_test_add_func("/devstate/transfer-mmap", test_transfer_mmap);
    return g_test_run();
}
