/*
 * vfio-user-devstate: the server side of the vfio-user protocol
 *
 * One client at a time, messages handled in order.  Every request is
 * checked against its own size before it is used; a malformed or unknown
 * request gets an error reply with an errno, and the server carries on.
 * DMA is done through the fds of DMA_MAP only (no DMA_READ/DMA_WRITE).
 *
 * Copyright (c) 2025 The QEMU project contributors
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 */

#include <errno.h>
#include <poll.h>
#include <string.h>
#include <unistd.h>
#include <sys/socket.h>

#include "devstate.h"
#include "hw/vfio-user/protocol.h"

#define HDR_SIZE        sizeof(VFIOUserHdr)
#define DISCARD_MAX     (128 * 1024 * 1024)

typedef struct {
    Devstate *ds;
    int fd;
    bool negotiated;
    uint64_t max_xfer;
    VFIOUserHdr hdr;
    uint8_t *data;          /* payload, hdr.size - HDR_SIZE bytes */
    uint32_t len;
    uint8_t *buf;           /* receive buffer, kept between messages */
    size_t buf_size;
    int fds[DEVSTATE_MAX_FDS];
    unsigned nfds;
} VfuConn;

typedef struct {
    GByteArray *data;       /* reply payload */
    const uint8_t *tail;    /* more payload, sent from where it is */
    uint32_t tail_len;
    int fd;                 /* fd to pass with the reply, or -1 */
} VfuReply;

static void conn_close_fds(VfuConn *c)
{
    unsigned i;

    for (i = 0; i < c->nfds; i++) {
        if (c->fds[i] >= 0) {
            close(c->fds[i]);
        }
    }
    c->nfds = 0;
}

static int take_fd(VfuConn *c, unsigned i)
{
    int fd = c->fds[i];

    c->fds[i] = -1;
    return fd;
}

static bool read_full(int fd, void *buf, size_t len)
{
    while (len) {
        ssize_t n = read(fd, buf, len);

        if (n < 0 && errno == EINTR) {
            continue;
        }
        if (n <= 0) {
            return false;
        }
        buf = (uint8_t *)buf + n;
        len -= n;
    }
    return true;
}

static bool write_full(int fd, const void *buf, size_t len)
{
    while (len) {
        ssize_t n = write(fd, buf, len);

        if (n < 0 && errno == EINTR) {
            continue;
        }
        if (n <= 0) {
            return false;
        }
        buf = (const uint8_t *)buf + n;
        len -= n;
    }
    return true;
}

/* Header and fds; 0 at EOF, -1 on a broken connection, 1 on success */
static int recv_hdr(VfuConn *c, bool *fd_error)
{
    union {
        char buf[CMSG_SPACE(sizeof(int) * DEVSTATE_MAX_FDS)];
        struct cmsghdr align;
    } u;
    struct iovec iov = { .iov_base = &c->hdr, .iov_len = HDR_SIZE };
    struct msghdr msg = {
        .msg_iov = &iov, .msg_iovlen = 1,
        .msg_control = u.buf, .msg_controllen = sizeof(u.buf),
    };
    struct cmsghdr *cm;
    ssize_t n;

    do {
        n = recvmsg(c->fd, &msg, MSG_CMSG_CLOEXEC);
    } while (n < 0 && errno == EINTR);
    if (n <= 0) {
        return n == 0 ? 0 : -1;
    }
    *fd_error = msg.msg_flags & MSG_CTRUNC;
    for (cm = CMSG_FIRSTHDR(&msg); cm; cm = CMSG_NXTHDR(&msg, cm)) {
        unsigned i, nr;

        if (cm->cmsg_level != SOL_SOCKET || cm->cmsg_type != SCM_RIGHTS) {
            continue;
        }
        nr = (cm->cmsg_len - CMSG_LEN(0)) / sizeof(int);
        for (i = 0; i < nr; i++) {
            int fd;

            memcpy(&fd, CMSG_DATA(cm) + i * sizeof(int), sizeof(int));
            if (c->nfds < DEVSTATE_MAX_FDS) {
                c->fds[c->nfds++] = fd;
            } else {
                close(fd);
                *fd_error = true;
            }
        }
    }
    if (n < HDR_SIZE && !read_full(c->fd, (uint8_t *)&c->hdr + n,
                                   HDR_SIZE - n)) {
        return -1;
    }
    return 1;
}

/*
 * The reply: header, payload and tail in one sendmsg, then what the
 * socket did not take, from where it is (no copy), fds only once.
 */
static bool send_reply(VfuConn *c, int err, VfuReply *r)
{
    VFIOUserHdr hdr = {
        .id = c->hdr.id,
        .command = c->hdr.command,
        .size = HDR_SIZE + (err ? 0 : r->data->len + r->tail_len),
        .flags = VFIO_USER_REPLY | (err ? VFIO_USER_ERROR : 0),
        .error_reply = err,
    };
    union {
        char buf[CMSG_SPACE(sizeof(int))];
        struct cmsghdr align;
    } u;
    struct iovec iov[3] = {
        { .iov_base = &hdr, .iov_len = HDR_SIZE },
        { .iov_base = r->data->data, .iov_len = err ? 0 : r->data->len },
        { .iov_base = (void *)r->tail, .iov_len = err ? 0 : r->tail_len },
    };
    struct msghdr msg = { .msg_iov = iov, .msg_iovlen = 3 };
    ssize_t n;

    if (!err && r->fd >= 0) {
        struct cmsghdr *cm;

        msg.msg_control = u.buf;
        msg.msg_controllen = sizeof(u.buf);
        cm = CMSG_FIRSTHDR(&msg);
        cm->cmsg_level = SOL_SOCKET;
        cm->cmsg_type = SCM_RIGHTS;
        cm->cmsg_len = CMSG_LEN(sizeof(int));
        memcpy(CMSG_DATA(cm), &r->fd, sizeof(int));
    }
    for (;;) {
        do {
            n = sendmsg(c->fd, &msg, MSG_NOSIGNAL);
        } while (n < 0 && errno == EINTR);
        if (n <= 0) {
            return false;
        }
        msg.msg_control = NULL;
        msg.msg_controllen = 0;
        while (msg.msg_iovlen && (size_t)n >= msg.msg_iov->iov_len) {
            n -= msg.msg_iov->iov_len;
            msg.msg_iov++;
            msg.msg_iovlen--;
        }
        if (!msg.msg_iovlen) {
            return true;
        }
        msg.msg_iov->iov_base = (uint8_t *)msg.msg_iov->iov_base + n;
        msg.msg_iov->iov_len -= n;
    }
}

static void put32(GByteArray *a, uint32_t v)
{
    g_byte_array_append(a, (const guint8 *)&v, 4);
}

static uint32_t get32(VfuConn *c, unsigned off)
{
    uint32_t v;

    memcpy(&v, c->data + off, 4);
    return v;
}

static uint64_t get64(VfuConn *c, unsigned off)
{
    uint64_t v;

    memcpy(&v, c->data + off, 8);
    return v;
}

static int handle_version(VfuConn *c, VfuReply *r)
{
    g_autofree char *caps = NULL;

    if (c->negotiated || c->len < 4) {
        return -EINVAL;
    }
    if ((get32(c, 0) & 0xffff) != VFIO_USER_MAJOR_VER) {
        return -ENOTSUP;
    }
    if (c->len > 4 && c->data[c->len - 1] != 0) {
        return -EINVAL;                         /* caps not NUL-terminated */
    }
    caps = g_strdup_printf("{\"capabilities\":{\"max_msg_fds\":%d,"
                           "\"max_data_xfer_size\":%" G_GUINT64_FORMAT ","
                           "\"pgsizes\":%d,\"max_dma_maps\":%d}}",
                           DEVSTATE_MAX_FDS, c->max_xfer, DEVSTATE_PAGE_SIZE,
                           DEVSTATE_MAX_DMA_MAPS);
    put32(r->data, VFIO_USER_MAJOR_VER | VFIO_USER_MINOR_VER << 16);
    g_byte_array_append(r->data, (const guint8 *)caps, strlen(caps) + 1);
    c->negotiated = true;
    devstate_log(c->ds, "version negotiated: %s", caps);
    return 0;
}

static int handle_dma_map(VfuConn *c, VfuReply *r)
{
    Devstate *ds = c->ds;
    int ret, fd;

    if (c->len < 32 || get32(c, 0) < 32 || get32(c, 0) > c->len ||
        c->nfds > 1) {
        return -EINVAL;
    }
    fd = c->nfds ? take_fd(c, 0) : -1;
    g_mutex_lock(&ds->lock);
    ret = devstate_dma_map(ds, get64(c, 16), get64(c, 24), fd, get64(c, 8),
                           get32(c, 4));
    g_mutex_unlock(&ds->lock);
    if (fd >= 0) {
        close(fd);
    }
    return ret;
}

static int handle_dma_unmap(VfuConn *c, VfuReply *r)
{
    Devstate *ds = c->ds;
    uint32_t flags;
    int ret;

    if (c->len < 24 || get32(c, 0) < 24 || get32(c, 0) > c->len) {
        return -EINVAL;
    }
    flags = get32(c, 4);
    if (flags & ~VFIO_DMA_UNMAP_FLAG_ALL) {
        return -ENOTSUP;
    }
    g_mutex_lock(&ds->lock);
    ret = devstate_dma_unmap(ds, get64(c, 8), get64(c, 16),
                             flags & VFIO_DMA_UNMAP_FLAG_ALL);
    g_mutex_unlock(&ds->lock);
    g_byte_array_append(r->data, c->data, 24);
    return ret;
}

static int handle_get_info(VfuConn *c, VfuReply *r)
{
    if (c->len < 16 || get32(c, 0) < 16) {
        return -EINVAL;
    }
    put32(r->data, 16);
    put32(r->data, VFIO_DEVICE_FLAGS_PCI | VFIO_DEVICE_FLAGS_RESET);
    put32(r->data, DEVSTATE_NUM_REGIONS);
    put32(r->data, DEVSTATE_NUM_IRQS);
    return 0;
}

static const uint32_t region_subtype[DEVSTATE_NUM_REGIONS] = {
    [DEVSTATE_REGION_CTL] = VFIO_REGION_SUBTYPE_DEVICE_STATE_CTL,
    [DEVSTATE_REGION_DATA_CONFIG] =
        VFIO_REGION_SUBTYPE_DEVICE_STATE_DATA_CONFIG,
    [DEVSTATE_REGION_DATA_MEMORY] =
        VFIO_REGION_SUBTYPE_DEVICE_STATE_DATA_MEMORY,
    [DEVSTATE_REGION_DATA_BITMAP] =
        VFIO_REGION_SUBTYPE_DEVICE_STATE_DATA_DIRTYBITMAP,
    [DEVSTATE_REGION_VERSION] = VFIO_REGION_SUBTYPE_DEVICE_STATE_VERSION,
};

/*
 * struct vfio_region_info, then for a device-state region the type cap
 * and, when mmappable, a sparse-mmap cap with one area: the whole region,
 * at offset 0 of the fd passed with the reply.  A reply that would not
 * fit in argsz carries only the struct, with the argsz needed.
 */
static int handle_region_info(VfuConn *c, VfuReply *r)
{
    Devstate *ds = c->ds;
    struct vfio_region_info info = { 0 };
    struct vfio_region_info_cap_type type = { 0 };
    struct {
        struct vfio_region_info_cap_sparse_mmap hdr;
        struct vfio_region_sparse_mmap_area area;
    } sparse = { 0 };
    uint32_t index, argsz;
    bool mmap, devstate, withheld;

    if (c->len < sizeof(info) || get32(c, 0) < sizeof(info)) {
        return -EINVAL;
    }
    argsz = get32(c, 0);
    index = get32(c, 8);
    if (index >= DEVSTATE_NUM_REGIONS) {
        return -EINVAL;
    }
    /* With --no-devstate, the device-state regions are empty and untyped */
    withheld = region_subtype[index] && ds->no_devstate;
    devstate = region_subtype[index] && !withheld;
    info.argsz = sizeof(info);
    info.index = index;
    info.size = withheld ? 0 : ds->region_size[index];
    if (info.size) {
        info.flags = VFIO_REGION_INFO_FLAG_READ | VFIO_REGION_INFO_FLAG_WRITE;
    }
    mmap = info.size && ds->region_fd[index] >= 0 && !ds->no_mmap;
    if (devstate) {
        info.argsz += sizeof(type) + (mmap ? sizeof(sparse) : 0);
    }
    if (argsz < info.argsz) {
        g_byte_array_append(r->data, (const guint8 *)&info, sizeof(info));
        return 0;
    }
    if (devstate) {
        info.flags |= VFIO_REGION_INFO_FLAG_CAPS;
        info.cap_offset = sizeof(info);
        type.header.id = VFIO_REGION_INFO_CAP_TYPE;
        type.header.version = 1;
        type.type = VFIO_REGION_TYPE_DEVICE_STATE;
        type.subtype = region_subtype[index];
    }
    if (mmap) {
        info.flags |= VFIO_REGION_INFO_FLAG_MMAP;
        type.header.next = sizeof(info) + sizeof(type);
        sparse.hdr.header.id = VFIO_REGION_INFO_CAP_SPARSE_MMAP;
        sparse.hdr.header.version = 1;
        sparse.hdr.nr_areas = 1;
        sparse.area.size = info.size;
        r->fd = ds->region_fd[index];
    }
    g_byte_array_append(r->data, (const guint8 *)&info, sizeof(info));
    if (devstate) {
        g_byte_array_append(r->data, (const guint8 *)&type, sizeof(type));
    }
    if (mmap) {
        g_byte_array_append(r->data, (const guint8 *)&sparse, sizeof(sparse));
    }
    return 0;
}

/* INTx, MSI, MSI-X (DEVSTATE_MSIX_VECTORS) and an error eventfd */
static uint32_t irq_count(unsigned index)
{
    return devstate_irq_count(index);
}

static int handle_irq_info(VfuConn *c, VfuReply *r)
{
    uint32_t index;

    if (c->len < 16 || get32(c, 0) < 16) {
        return -EINVAL;
    }
    index = get32(c, 8);
    if (index >= DEVSTATE_NUM_IRQS) {
        return -EINVAL;
    }
    put32(r->data, 16);
    put32(r->data, VFIO_IRQ_INFO_EVENTFD |
          (index == VFIO_PCI_INTX_IRQ_INDEX ? VFIO_IRQ_INFO_MASKABLE :
           VFIO_IRQ_INFO_NORESIZE));
    put32(r->data, index);
    put32(r->data, irq_count(index));
    return 0;
}

static int handle_set_irqs(VfuConn *c, VfuReply *r)
{
    Devstate *ds = c->ds;
    uint32_t flags, index, start, count, data, action, i;

    if (c->len < 20 || get32(c, 0) < 20) {
        return -EINVAL;
    }
    flags = get32(c, 4);
    index = get32(c, 8);
    start = get32(c, 12);
    count = get32(c, 16);
    data = flags & VFIO_IRQ_SET_DATA_TYPE_MASK;
    action = flags & VFIO_IRQ_SET_ACTION_TYPE_MASK;
    if (index >= DEVSTATE_NUM_IRQS || start > irq_count(index) ||
        count > irq_count(index) - start ||
        (flags & ~(VFIO_IRQ_SET_DATA_TYPE_MASK |
                   VFIO_IRQ_SET_ACTION_TYPE_MASK)) ||
        !data || (data & (data - 1)) || !action || (action & (action - 1)) ||
        (data == VFIO_IRQ_SET_DATA_BOOL && c->len < 20 + count) ||
        (data == VFIO_IRQ_SET_DATA_EVENTFD && c->nfds &&
         c->nfds != count) ||
        (data != VFIO_IRQ_SET_DATA_EVENTFD && c->nfds)) {
        return -EINVAL;
    }
    g_mutex_lock(&ds->lock);
    if (action == VFIO_IRQ_SET_ACTION_TRIGGER) {
        /* eventfds for vectors start.., none: -1 for each; NONE, 0: all */
        if (index == VFIO_PCI_MSIX_IRQ_INDEX) {
            ds->msix_on = data == VFIO_IRQ_SET_DATA_EVENTFD ||
                (ds->msix_on && count);
        }
        if (data == VFIO_IRQ_SET_DATA_EVENTFD) {
            for (i = 0; i < count; i++) {
                devstate_set_irq_fd(ds, index, start + i,
                                    c->nfds ? take_fd(c, i) : -1);
            }
        } else if (count == 0 && data == VFIO_IRQ_SET_DATA_NONE) {
            for (i = 0; i < irq_count(index); i++) {
                devstate_set_irq_fd(ds, index, i, -1);
            }
        }
    } else if (index == VFIO_PCI_INTX_IRQ_INDEX && count &&
               data != VFIO_IRQ_SET_DATA_EVENTFD &&
               (data == VFIO_IRQ_SET_DATA_NONE || c->data[20])) {
        devstate_intx_mask(ds, action == VFIO_IRQ_SET_ACTION_MASK);
    }
    g_mutex_unlock(&ds->lock);
    return 0;
}

static int handle_region_rw(VfuConn *c, VfuReply *r, bool is_write)
{
    Devstate *ds = c->ds;
    uint64_t offset;
    uint32_t region, count;
    int ret;

    if (c->len < 16) {
        return -EINVAL;
    }
    offset = get64(c, 0);
    region = get32(c, 8);
    count = get32(c, 12);
    if (region >= DEVSTATE_NUM_REGIONS || (is_write && c->len != 16 + count)) {
        return -EINVAL;
    }
    if (count > c->max_xfer) {
        /* the peer's max_data_xfer_size bounds every count: no truncation */
        devstate_log(ds, "region %u %s of %u bytes refused: more than "
                     "max_data_xfer_size %" G_GUINT64_FORMAT, region,
                     is_write ? "write" : "read", count, c->max_xfer);
        return -E2BIG;
    }
    g_byte_array_append(r->data, c->data, 16);
    g_mutex_lock(&ds->lock);
    if (!is_write) {
        /* data regions: the reply is sent from the region, no copy */
        r->tail = devstate_region_data(ds, region, offset, count);
        if (r->tail) {
            r->tail_len = count;
            g_mutex_unlock(&ds->lock);
            return 0;
        }
        g_byte_array_set_size(r->data, 16 + count);
    }
    ret = devstate_region_access(ds, region, offset, count,
                                 is_write ? c->data + 16 : r->data->data + 16,
                                 is_write);
    g_mutex_unlock(&ds->lock);
    return ret;
}

static int handle_reset(VfuConn *c, VfuReply *r)
{
    g_mutex_lock(&c->ds->lock);
    devstate_dev_reset(c->ds);
    g_mutex_unlock(&c->ds->lock);
    devstate_log(c->ds, "device reset");
    return 0;
}

static int dispatch(VfuConn *c, VfuReply *r)
{
    if ((c->hdr.flags & VFIO_USER_TYPE) != VFIO_USER_REQUEST) {
        return -EINVAL;
    }
    if (!c->negotiated && c->hdr.command != VFIO_USER_VERSION) {
        return -EINVAL;
    }
    if (c->nfds && c->hdr.command != VFIO_USER_DMA_MAP &&
        c->hdr.command != VFIO_USER_DEVICE_SET_IRQS) {
        return -EINVAL;
    }
    switch (c->hdr.command) {
    case VFIO_USER_VERSION:
        return handle_version(c, r);
    case VFIO_USER_DMA_MAP:
        return handle_dma_map(c, r);
    case VFIO_USER_DMA_UNMAP:
        return handle_dma_unmap(c, r);
    case VFIO_USER_DEVICE_GET_INFO:
        return handle_get_info(c, r);
    case VFIO_USER_DEVICE_GET_REGION_INFO:
        return handle_region_info(c, r);
    case VFIO_USER_DEVICE_GET_IRQ_INFO:
        return handle_irq_info(c, r);
    case VFIO_USER_DEVICE_SET_IRQS:
        return handle_set_irqs(c, r);
    case VFIO_USER_REGION_READ:
        return handle_region_rw(c, r, false);
    case VFIO_USER_REGION_WRITE:
        return handle_region_rw(c, r, true);
    case VFIO_USER_DEVICE_RESET:
        return handle_reset(c, r);
    default:
        return -ENOSYS;
    }
}

/* One message: false when the connection must be closed */
static bool handle_one(VfuConn *c)
{
    g_autoptr(GByteArray) data = g_byte_array_new();
    VfuReply r = { .data = data, .fd = -1 };
    size_t need;
    bool fd_error = false, ok;
    uint64_t max_msg = c->max_xfer + 4096;
    int ret, rc;

    rc = recv_hdr(c, &fd_error);
    if (rc <= 0) {
        conn_close_fds(c);
        return false;
    }
    c->len = c->hdr.size >= HDR_SIZE ? c->hdr.size - HDR_SIZE : 0;
    if (c->hdr.size < HDR_SIZE) {
        ret = -EINVAL;
        c->len = 0;
    } else if (c->hdr.size > max_msg) {
        /* drop the payload when it is sane to, else give up the client */
        uint8_t buf[4096];
        uint64_t left = c->len;

        if (left > DISCARD_MAX) {
            c->hdr.flags &= ~VFIO_USER_NO_REPLY;
            send_reply(c, E2BIG, &r);
            conn_close_fds(c);
            return false;
        }
        while (left) {
            if (!read_full(c->fd, buf, MIN(left, sizeof(buf)))) {
                conn_close_fds(c);
                return false;
            }
            left -= MIN(left, sizeof(buf));
        }
        ret = -E2BIG;
        c->len = 0;
    } else {
        /* one buffer for the connection, touched once: no fresh pages */
        need = c->len + 8;
        if (need > c->buf_size) {
            g_free(c->buf);
            c->buf = g_malloc0(need);
            c->buf_size = need;
        }
        c->data = c->buf;
        if (!read_full(c->fd, c->data, c->len)) {
            c->data = NULL;
            conn_close_fds(c);
            return false;
        }
        ret = fd_error ? -EINVAL : dispatch(c, &r);
    }
    if (ret) {
        devstate_log(c->ds, "command %u (id %u, %u bytes) failed: %s",
                     c->hdr.command, c->hdr.id, c->hdr.size,
                     g_strerror(-ret));
    }
    ok = (c->hdr.flags & VFIO_USER_NO_REPLY) || send_reply(c, -ret, &r);
    c->data = NULL;
    conn_close_fds(c);
    return ok;
}

/* Control socket connections: one line in, one line out */
typedef struct {
    int fd;
    GString *in;
} CtlConn;

static void ctl_conn_free(gpointer p)
{
    CtlConn *cc = p;

    close(cc->fd);
    g_string_free(cc->in, TRUE);
    g_free(cc);
}

static bool ctl_conn_input(Devstate *ds, CtlConn *cc)
{
    char buf[1024];
    ssize_t n = read(cc->fd, buf, sizeof(buf));
    char *nl;

    if (n <= 0 || cc->in->len > 65536) {
        return false;
    }
    g_string_append_len(cc->in, buf, n);
    while ((nl = memchr(cc->in->str, '\n', cc->in->len))) {
        g_autoptr(GString) reply = g_string_new(NULL);

        *nl = 0;
        g_strchomp(cc->in->str);
        devstate_control_line(ds, cc->in->str, reply);
        g_string_append_c(reply, '\n');
        g_string_erase(cc->in, 0, nl + 1 - cc->in->str);
        if (!write_full(cc->fd, reply->str, reply->len)) {
            return false;
        }
    }
    return true;
}

/*
 * The main loop: the vfio-user socket (listening, or one connection),
 * the control socket and its connections.  Returns the exit status.
 */
int vfu_serve(Devstate *ds, int fd, bool listening, bool persist,
              int control_fd)
{
    g_autoptr(GPtrArray) ctls = g_ptr_array_new_with_free_func(ctl_conn_free);
    VfuConn c = {
        .ds = ds, .fd = listening ? -1 : fd,
        .max_xfer = ds->max_xfer,
    };

    if (c.fd >= 0) {
        ds->connected = true;
    }
    for (;;) {
        g_autofree struct pollfd *pfd = g_new0(struct pollfd, ctls->len + 2);
        unsigned n = 0, i;

        pfd[n].fd = c.fd >= 0 ? c.fd : fd;
        pfd[n++].events = POLLIN;
        pfd[n].fd = control_fd;
        pfd[n++].events = POLLIN;
        for (i = 0; i < ctls->len; i++) {
            pfd[n].fd = ((CtlConn *)g_ptr_array_index(ctls, i))->fd;
            pfd[n++].events = POLLIN;
        }
        if (poll(pfd, n, -1) < 0) {
            if (errno == EINTR) {
                continue;
            }
            return 1;
        }
        for (i = ctls->len; i > 0; i--) {
            if (pfd[i + 1].revents &&
                !ctl_conn_input(ds, g_ptr_array_index(ctls, i - 1))) {
                g_ptr_array_remove_index(ctls, i - 1);
            }
        }
        if (pfd[1].revents) {
            int cfd = accept4(control_fd, NULL, NULL, SOCK_CLOEXEC);

            if (cfd >= 0) {
                CtlConn *cc = g_new0(CtlConn, 1);

                cc->fd = cfd;
                cc->in = g_string_new(NULL);
                g_ptr_array_add(ctls, cc);
            }
        }
        if (!pfd[0].revents) {
            continue;
        }
        if (c.fd < 0) {
            c.fd = accept4(fd, NULL, NULL, SOCK_CLOEXEC);
            if (c.fd >= 0) {
                devstate_log(ds, "client connected");
                g_mutex_lock(&ds->lock);
                ds->connected = true;
                devstate_regions_reset(ds);     /* RUNNING at open */
                g_mutex_unlock(&ds->lock);
                c.negotiated = false;
            }
            continue;
        }
        if (handle_one(&c)) {
            continue;
        }
        devstate_log(ds, "client disconnected");
        close(c.fd);
        c.fd = -1;
        g_mutex_lock(&ds->lock);
        devstate_disconnect(ds);
        g_mutex_unlock(&ds->lock);
        g_clear_pointer(&c.buf, g_free);
        c.buf_size = 0;
        if (!persist || !listening) {
            return 0;
        }
    }
}
