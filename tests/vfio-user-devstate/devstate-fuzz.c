/*
 * vfio-user-devstate: a libFuzzer target for the reference device
 *
 * The input is a sequence of vfio-user messages, compact region accesses
 * and control-socket lines.  Messages go through a socketpair into the
 * server's real message handling (handle_one() of vfu-server.c, included
 * here so that its static functions are reachable); a thread reads the
 * replies and counts the error replies.  Each input gets a fresh device
 * with 1 MiB of device memory and no mutation/DMA worker threads.
 *
 * Input: byte 0 selects the device options:
 *   bit 0     no mmap of the data regions
 *   bit 1     data memory region 128 KiB instead of 64 KiB
 *   bits 2-3  dirty-bitmap region 8, 64, 4096 or 65536 bytes
 *   bit 4     do not negotiate the version first
 *   bit 5     withhold CAP_P2P (P2P states invalid)
 *   bit 6     max_data_xfer_size 4 KiB instead of 1 MiB (data regions
 *             move in several accesses; larger ones are refused)
 * then records, each starting with a kind byte (kind % 5):
 *   0: message:  le16 command, le16 flags, le16 payload length, u8 extra
 *                (bit 0: pass a memfd with it; bit 1: le32 raw hdr.size
 *                follows, and the rest of the input is sent as is and the
 *                connection closed), le32 id, payload
 *   1: region access: u8 region, u8 write, le64 offset, u8 count code
 *                (1, 2, 4, 8 or a le16 count), then the bytes for a write
 *   2: control-region write: u8 field offset (mod 88), u8 width (4 or 8),
 *                le64 value
 *   3: control line: u8 length, the line ("delay" and "exit-at" are not
 *                passed on: they sleep and exit by design)
 *   4: worker tick: u8 n; n pages of the mutation worker and of the DMA
 *                engine, each when the device would run it (the worker
 *                threads are not started; this runs their page function)
 *
 * The device takes an input whole when it answers no request with an
 * error, no control line with "error" and keeps the connection.  Built by
 * meson twice: with libFuzzer in a --enable-fuzzing build, and with
 * tests/fuzz-replay.c as the meson test devstate-fuzz, which replays the
 * seeds below (each must be taken whole) and corrupt inputs (each must be
 * refused).  DEVSTATE_FUZZ_SEEDS=DIR writes them to DIR;
 * DEVSTATE_FUZZ_VERBOSE=1 turns on the device's log.
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 */

#include "fuzz-replay.h"

/* main.c's main(), renamed: it is not called, and needs no prototype */
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmissing-prototypes"
#define main devstate_main
#include "main.c"
#undef main
#pragma GCC diagnostic pop
#include "vfu-server.c"
#include "devstate-dev.c"

#include <pthread.h>
#include <sys/mman.h>

typedef struct {
    const uint8_t *p;
    size_t left;
} Input;

static bool in_bytes(Input *in, void *buf, size_t n)
{
    if (in->left < n) {
        return false;
    }
    memcpy(buf, in->p, n);
    in->p += n;
    in->left -= n;
    return true;
}

static uint8_t in_u8(Input *in, bool *ok)
{
    uint8_t v = 0;

    *ok = *ok && in_bytes(in, &v, 1);
    return v;
}

static uint16_t in_u16(Input *in, bool *ok)
{
    uint16_t v = 0;

    *ok = *ok && in_bytes(in, &v, 2);
    return v;
}

static uint32_t in_u32(Input *in, bool *ok)
{
    uint32_t v = 0;

    *ok = *ok && in_bytes(in, &v, 4);
    return v;
}

static uint64_t in_u64(Input *in, bool *ok)
{
    uint64_t v = 0;

    *ok = *ok && in_bytes(in, &v, 8);
    return v;
}

/* Replies: read, counted (errors apart) and dropped; their fds closed */
typedef struct {
    int fd;
    unsigned replies, errors;
    bool bad_frame;
} Drain;

static void *drain_thread(void *opaque)
{
    Drain *d = opaque;
    static __thread uint8_t buf[1 << 16];
    uint8_t hdr[HDR_SIZE];
    size_t have = 0;
    uint64_t skip = 0;

    for (;;) {
        union {
            char buf[CMSG_SPACE(sizeof(int) * DEVSTATE_MAX_FDS)];
            struct cmsghdr align;
        } u;
        struct iovec iov = { .iov_base = buf, .iov_len = sizeof(buf) };
        struct msghdr msg = {
            .msg_iov = &iov, .msg_iovlen = 1,
            .msg_control = u.buf, .msg_controllen = sizeof(u.buf),
        };
        struct cmsghdr *cm;
        ssize_t n = recvmsg(d->fd, &msg, MSG_CMSG_CLOEXEC);
        const uint8_t *p = buf;

        if (n < 0 && errno == EINTR) {
            continue;
        }
        if (n <= 0) {
            break;
        }
        for (cm = CMSG_FIRSTHDR(&msg); cm; cm = CMSG_NXTHDR(&msg, cm)) {
            unsigned i, nr = (cm->cmsg_len - CMSG_LEN(0)) / sizeof(int);

            for (i = 0; i < nr; i++) {
                int rfd;

                memcpy(&rfd, CMSG_DATA(cm) + i * sizeof(int), sizeof(int));
                close(rfd);
            }
        }
        while (n > 0) {
            size_t m;

            if (skip) {
                m = MIN(skip, (uint64_t)n);
                skip -= m;
            } else {
                m = MIN(sizeof(hdr) - have, (size_t)n);
                memcpy(hdr + have, p, m);
                have += m;
                if (have == sizeof(hdr)) {
                    VFIOUserHdr h;

                    memcpy(&h, hdr, sizeof(h));
                    d->replies++;
                    d->errors += !!(h.flags & VFIO_USER_ERROR);
                    d->bad_frame |= h.size < HDR_SIZE;
                    skip = h.size >= HDR_SIZE ? h.size - HDR_SIZE : 0;
                    have = 0;
                }
            }
            p += m;
            n -= m;
        }
    }
    return NULL;
}

static bool send_msg(int fd, const void *buf, size_t len, int pass_fd)
{
    union {
        char buf[CMSG_SPACE(sizeof(int))];
        struct cmsghdr align;
    } u;
    struct iovec iov = { .iov_base = (void *)buf, .iov_len = len };
    struct msghdr msg = { .msg_iov = &iov, .msg_iovlen = 1 };
    ssize_t n;

    if (pass_fd >= 0) {
        struct cmsghdr *cm;

        msg.msg_control = u.buf;
        msg.msg_controllen = sizeof(u.buf);
        cm = CMSG_FIRSTHDR(&msg);
        cm->cmsg_level = SOL_SOCKET;
        cm->cmsg_type = SCM_RIGHTS;
        cm->cmsg_len = CMSG_LEN(sizeof(int));
        memcpy(CMSG_DATA(cm), &pass_fd, sizeof(int));
    }
    do {
        n = sendmsg(fd, &msg, MSG_NOSIGNAL);
    } while (n < 0 && errno == EINTR);
    if (n < 0) {
        return false;
    }
    return write_full(fd, (const uint8_t *)buf + n, len - n);
}

static void dev_create(Devstate *ds, uint8_t opts)
{
    static const uint64_t bitmap_sizes[] = { 8, 64, 4096, 65536 };

    memset(ds, 0, sizeof(*ds));
    ds->mem_size = 1 << 20;
    ds->chunk_size = (opts & 2) ? 128 << 10 : 64 << 10;
    ds->bitmap_size = bitmap_sizes[(opts >> 2) & 3];
    ds->no_mmap = opts & 1;
    ds->no_p2p = opts & 0x20;
    ds->max_xfer = (opts & 0x40) ? 4096 : MAX(1 << 20, ds->chunk_size);
    ds->verbose = getenv("DEVSTATE_FUZZ_VERBOSE");
    ds->identity = g_strdup("vfio-user-devstate");
    ds->ver_major = 1;
    ds->init_regs[DEVSTATE_REG_MUTATE_RATE / 4] = 1000;
    ds->init_regs[DEVSTATE_REG_DMA_RATE / 4] = 1000;
    ds->init_regs[DEVSTATE_REG_DMA_ADDR_LO / 4] = 0x1000000;
    ds->init_regs[DEVSTATE_REG_DMA_PAGES / 4] = 256;
    devstate_dev_init(ds);
    devstate_regions_init(ds);
    /* No devstate_dev_start(): the mutation and DMA workers stay off. */
}

static void dev_destroy(Devstate *ds)
{
    unsigned i;

    g_mutex_lock(&ds->lock);
    devstate_disconnect(ds);
    devstate_dev_reset(ds);     /* closes the data sets */
    g_mutex_unlock(&ds->lock);
    for (i = 0; i < DEVSTATE_NUM_REGIONS; i++) {
        if (ds->region_buf[i]) {
            munmap(ds->region_buf[i], ds->region_size[i]);
        }
        if (ds->region_fd[i] >= 0) {
            close(ds->region_fd[i]);
        }
    }
    munmap(ds->mem, ds->mem_size);
    g_free(ds->mem_dirty);
    g_hash_table_destroy(ds->sys_dirty);
    g_array_free(ds->dma_maps, TRUE);
    g_free(ds->identity);
    g_mutex_clear(&ds->lock);
    g_cond_clear(&ds->cond);
}

static void put_hdr(GByteArray *a, uint16_t cmd, uint16_t flags, uint32_t id,
                    uint32_t size)
{
    VFIOUserHdr hdr = {
        .id = id, .command = cmd, .size = size, .flags = flags,
    };

    g_byte_array_append(a, (const guint8 *)&hdr, sizeof(hdr));
}

static void put_region_rw(GByteArray *a, unsigned region, uint64_t off,
                          uint32_t count, bool write, const uint8_t *wdata)
{
    uint32_t v32;

    put_hdr(a, write ? VFIO_USER_REGION_WRITE : VFIO_USER_REGION_READ,
            VFIO_USER_REQUEST, 0, HDR_SIZE + 16 + (write ? count : 0));
    g_byte_array_append(a, (const guint8 *)&off, 8);
    v32 = region;
    g_byte_array_append(a, (const guint8 *)&v32, 4);
    g_byte_array_append(a, (const guint8 *)&count, 4);
    if (write && count) {
        g_byte_array_append(a, wdata, count);
    }
}

static bool last_accepted;
static char last_why[128];

bool fuzz_last_accepted(const char **why)
{
    *why = last_why;
    return last_accepted;
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    const char *dir = getenv("DEVSTATE_FUZZ_SEEDS");

    signal(SIGPIPE, SIG_IGN);   /* as main() does */
    if (dir && !fuzz_write_inputs(dir)) {
        fprintf(stderr, "cannot write the seeds to %s\n", dir);
        exit(1);
    }
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static Devstate dev;
    Devstate *ds = &dev;
    Input in = { data, size };
    VfuConn c = { 0 };
    pthread_t drain;
    Drain d = { 0 };
    int sv[2];
    uint8_t opts;
    bool ok = true, open = true;
    unsigned digests = 0, line_errors = 0;
    bool closed = false;

    last_accepted = false;
    snprintf(last_why, sizeof(last_why), "empty input");
    opts = in_u8(&in, &ok);
    if (!ok) {
        return 0;
    }
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0) {
        abort();
    }
    dev_create(ds, opts);
    c.ds = ds;
    c.fd = sv[1];
    c.max_xfer = ds->max_xfer;
    ds->connected = true;
    d.fd = sv[0];
    pthread_create(&drain, NULL, drain_thread, &d);

    if (!(opts & 0x10)) {
        g_autoptr(GByteArray) a = g_byte_array_new();
        uint32_t ver = VFIO_USER_MAJOR_VER | VFIO_USER_MINOR_VER << 16;
        static const char caps[] = "{}";

        put_hdr(a, VFIO_USER_VERSION, VFIO_USER_REQUEST, 0,
                HDR_SIZE + 4 + sizeof(caps));
        g_byte_array_append(a, (const guint8 *)&ver, 4);
        g_byte_array_append(a, (const guint8 *)caps, sizeof(caps));
        send_msg(sv[0], a->data, a->len, -1);
        open = handle_one(&c);
    }

    while (open && in.left) {
        g_autoptr(GByteArray) a = g_byte_array_new();
        uint8_t kind = in_u8(&in, &ok);
        int pass_fd = -1;
        bool last = false;

        switch (kind % 5) {
        case 0: {
            uint16_t cmd = in_u16(&in, &ok);
            uint16_t flags = in_u16(&in, &ok);
            uint16_t len = in_u16(&in, &ok);
            uint8_t extra = in_u8(&in, &ok);
            uint32_t raw = (extra & 2) ? in_u32(&in, &ok) : 0;
            uint32_t id = in_u32(&in, &ok);

            if (!ok) {
                break;
            }
            if (extra & 2) {
                len = in.left;
                last = true;
            }
            len = MIN(len, in.left);
            put_hdr(a, cmd, flags, id, (extra & 2) ? raw : HDR_SIZE + len);
            g_byte_array_append(a, in.p, len);
            in.p += len;
            in.left -= len;
            if (extra & 1) {
                pass_fd = memfd_create("devstate-fuzz-dma", MFD_CLOEXEC);
                if (pass_fd < 0 || ftruncate(pass_fd, 64 << 10) < 0) {
                    abort();
                }
            }
            break;
        }
        case 1: {
            uint8_t region = in_u8(&in, &ok);
            bool write = in_u8(&in, &ok) & 1;
            uint64_t off = in_u64(&in, &ok);
            uint8_t code = in_u8(&in, &ok);
            uint32_t count;
            g_autofree uint8_t *wdata = NULL;

            count = code % 5 == 4 ? in_u16(&in, &ok) : 1u << (code % 5);
            if (!ok) {
                break;
            }
            if (write) {
                wdata = g_malloc0(count + 1);
                memcpy(wdata, in.p, MIN(count, in.left));
                in.p += MIN(count, in.left);
                in.left -= MIN(count, in.left);
            }
            put_region_rw(a, region % (DEVSTATE_NUM_REGIONS + 1), off, count,
                          write, wdata);
            break;
        }
        case 2: {
            uint8_t off = in_u8(&in, &ok) % 88;
            uint8_t width = (in_u8(&in, &ok) & 1) ? 8 : 4;
            uint64_t val = in_u64(&in, &ok);

            if (!ok) {
                break;
            }
            put_region_rw(a, DEVSTATE_REGION_CTL, off, width, true,
                          (const uint8_t *)&val);
            break;
        }
        case 3: {
            uint8_t len = in_u8(&in, &ok);
            g_autofree char *line = NULL;
            g_autoptr(GString) reply = g_string_new(NULL);

            if (!ok) {
                break;
            }
            len = MIN(len, in.left);
            line = g_strndup((const char *)in.p, len);
            in.p += len;
            in.left -= len;
            if (g_str_has_prefix(line, "delay") ||
                g_str_has_prefix(line, "exit-at") ||
                (g_str_has_prefix(line, "digest") && digests++)) {
                break;
            }
            devstate_control_line(ds, line, reply);
            line_errors += g_str_has_prefix(reply->str, "error");
            break;
        }
        case 4: {
            unsigned n = in_u8(&in, &ok), i;

            g_mutex_lock(&ds->lock);
            for (i = 0; ok && i < n; i++) {
                if (mutate_ready(ds)) {
                    mutate_one(ds);
                }
                if (dma_ready(ds)) {
                    dma_one(ds);
                }
            }
            g_mutex_unlock(&ds->lock);
            break;
        }
        }
        if (!ok) {
            break;
        }
        if (!a->len) {
            continue;
        }
        if (!send_msg(sv[0], a->data, a->len, pass_fd)) {
            abort();
        }
        if (pass_fd >= 0) {
            close(pass_fd);
        }
        if (last) {
            break;
        }
        open = handle_one(&c);
    }
    closed = !open;             /* the server gave up the connection */
    /* Whatever is left in the socket (a lying hdr.size), up to EOF */
    shutdown(sv[0], SHUT_WR);
    while (open) {
        open = handle_one(&c);
    }
    close(sv[1]);
    pthread_join(drain, NULL);
    close(sv[0]);
    g_free(c.buf);
    dev_destroy(ds);
    last_accepted = !d.errors && !line_errors && !closed && !d.bad_frame;
    snprintf(last_why, sizeof(last_why), "%u replies, %u errors, %u control "
             "lines refused%s%s", d.replies, d.errors, line_errors,
             closed ? ", connection closed by the device" : "",
             d.bad_frame ? ", a reply shorter than its header" : "");
    return 0;
}

/* ---------------------------------------------------------------------- */
/* Seeds and corrupt inputs, in the record format above */

static void rec_ctlw(GByteArray *a, uint8_t off, uint64_t val, bool wide)
{
    uint8_t h[3] = { 2, off, wide };
    uint64_t le = GUINT64_TO_LE(val);

    g_byte_array_append(a, h, 3);
    g_byte_array_append(a, (const guint8 *)&le, 8);
}

static void rec_rw(GByteArray *a, uint8_t region, bool write, uint64_t off,
                   uint16_t count, const void *data)
{
    uint8_t h[3] = { 1, region, write };
    uint64_t le = GUINT64_TO_LE(off);
    uint8_t code = count == 1 ? 0 : count == 2 ? 1 : count == 4 ? 2 :
                   count == 8 ? 3 : 4;
    uint16_t le16 = GUINT16_TO_LE(count);

    g_byte_array_append(a, h, 3);
    g_byte_array_append(a, (const guint8 *)&le, 8);
    g_byte_array_append(a, &code, 1);
    if (code == 4) {
        g_byte_array_append(a, (const guint8 *)&le16, 2);
    }
    if (write) {
        g_byte_array_append(a, data, count);
    }
}

static void rec_rd(GByteArray *a, uint8_t region, uint64_t off,
                   uint16_t count)
{
    rec_rw(a, region, false, off, count, NULL);
}

/* A write of any length, in pieces of at most @piece bytes */
static void rec_wr(GByteArray *a, uint8_t region, uint64_t off,
                   const void *data, size_t len, size_t piece)
{
    size_t done;

    for (done = 0; done < len; done += piece) {
        rec_rw(a, region, true, off + done, MIN(piece, len - done),
               (const uint8_t *)data + done);
    }
}

static void rec_msg(GByteArray *a, uint16_t cmd, const void *payload,
                    uint16_t len, bool fd)
{
    uint8_t kind = 0, extra = fd;
    uint16_t le[3] = { GUINT16_TO_LE(cmd), 0, GUINT16_TO_LE(len) };
    uint32_t id = GUINT32_TO_LE(7);

    g_byte_array_append(a, &kind, 1);
    g_byte_array_append(a, (const guint8 *)le, 6);
    g_byte_array_append(a, &extra, 1);
    g_byte_array_append(a, (const guint8 *)&id, 4);
    g_byte_array_append(a, payload, len);
}

static void rec_line(GByteArray *a, const char *line)
{
    uint8_t h[2] = { 3, strlen(line) };

    g_byte_array_append(a, h, 2);
    g_byte_array_append(a, (const guint8 *)line, strlen(line));
}

static void rec_tick(GByteArray *a, uint8_t n)
{
    uint8_t h[2] = { 4, n };

    g_byte_array_append(a, h, 2);
}

static void rec_bar0(GByteArray *a, uint8_t reg, uint32_t val)
{
    uint32_t le = GUINT32_TO_LE(val);

    rec_rw(a, DEVSTATE_REGION_BAR0, true, reg, 4, &le);
}

/* VFIO_USER_DMA_MAP of the 64 KiB memfd the record passes */
static void rec_dma_map(GByteArray *a, uint64_t offset, uint64_t iova,
                        uint64_t size)
{
    struct {
        uint32_t argsz, flags;
        uint64_t offset, iova, size;
    } __attribute__((packed)) m = {
        GUINT32_TO_LE(32), GUINT32_TO_LE(3), GUINT64_TO_LE(offset),
        GUINT64_TO_LE(iova), GUINT64_TO_LE(size),
    };

    rec_msg(a, VFIO_USER_DMA_MAP, &m, sizeof(m), true);
}

/*
 * A device-memory data set in the device's own format (devstate-regions.c):
 * header, then { le64 page; 4 KiB } records in ascending page order.
 */
static GByteArray *mem_set(const uint32_t *pages, unsigned n, bool bad_hdr)
{
    GByteArray *set = g_byte_array_new();
    struct {
        uint32_t magic, version;
        uint64_t nr_records, mem_size;
        uint32_t flags, reserved;
    } hdr = {
        GUINT32_TO_LE(bad_hdr ? 0x12345678 : 0x4d4d5344), GUINT32_TO_LE(1),
        GUINT64_TO_LE(n), GUINT64_TO_LE(1 << 20), 0, 0,
    };
    uint8_t page[DEVSTATE_PAGE_SIZE];
    unsigned i;

    g_byte_array_append(set, (const guint8 *)&hdr, sizeof(hdr));
    for (i = 0; i < n; i++) {
        uint64_t le = GUINT64_TO_LE(pages[i]);

        memset(page, 0x5a ^ pages[i], sizeof(page));
        g_byte_array_append(set, (const guint8 *)&le, 8);
        g_byte_array_append(set, page, sizeof(page));
    }
    return set;
}

/* Load @set in STOP: its size, then each chunk and SET_BUFFER */
static void rec_load_set(GByteArray *a, GByteArray *set, uint64_t chunk,
                         size_t piece)
{
    uint64_t pos;

    rec_ctlw(a, 40, set->len, true);
    for (pos = 0; pos < set->len; pos += chunk) {
        rec_wr(a, DEVSTATE_REGION_DATA_MEMORY, 0, set->data + pos,
               MIN(chunk, set->len - pos), piece);
        rec_ctlw(a, 32, VFIO_DEVICE_DATA_ACTION_SET_BUFFER, false);
    }
}

static const char version_ok[] = "vfio-user-devstate-1.0.0";

static void add(GPtrArray *inputs, const char *name, FuzzExpect expect,
                GByteArray *a)
{
    fuzz_input_add(inputs, name, expect, a->data, a->len);
    g_byte_array_free(a, TRUE);
}

static GByteArray *input(uint8_t opts)
{
    GByteArray *a = g_byte_array_new();

    g_byte_array_append(a, &opts, 1);
    return a;
}

GPtrArray *fuzz_inputs(void)
{
    GPtrArray *inputs = g_ptr_array_new_with_free_func(fuzz_input_free);
    static const uint32_t two[] = { 3, 200 }, down[] = { 200, 3 };
    static const uint32_t past[] = { 256 };
    uint32_t twenty[20];
    g_autoptr(GByteArray) set2 = mem_set(two, 2, false);
    g_autoptr(GByteArray) set20 = NULL;
    GByteArray *a;
    unsigned i;

    for (i = 0; i < 20; i++) {
        twenty[i] = i * 5;
    }
    set20 = mem_set(twenty, 20, false);

    /* Save: a logging session, a chunk, config, dirty bitmap, the end */
    a = input(0);
    rec_ctlw(a, 4, VFIO_DEVICE_DATA_STATE_LOGGING, false);
    rec_rd(a, DEVSTATE_REGION_CTL, 40, 8);      /* opens the snapshot */
    rec_rd(a, DEVSTATE_REGION_CTL, 48, 8);
    rec_rd(a, DEVSTATE_REGION_CTL, 56, 8);
    rec_ctlw(a, 32, VFIO_DEVICE_DATA_ACTION_GET_BUFFER, false);
    rec_rd(a, DEVSTATE_REGION_DATA_MEMORY, 0, 4096);
    rec_ctlw(a, 4, VFIO_DEVICE_DATA_STATE_STOP |
             VFIO_DEVICE_DATA_STATE_LOGGING, false);
    rec_ctlw(a, 16, VFIO_DEVICE_DATA_ACTION_GET_BUFFER, false);
    rec_rd(a, DEVSTATE_REGION_CTL, 24, 8);
    rec_rd(a, DEVSTATE_REGION_DATA_CONFIG, 0, 256);
    rec_ctlw(a, 64, 64, true);
    rec_ctlw(a, 72, 3, true);
    rec_ctlw(a, 80, VFIO_DEVICE_DATA_ACTION_GET_BITMAP, false);
    rec_rd(a, DEVSTATE_REGION_DATA_BITMAP, 0, 8);
    rec_ctlw(a, 4, VFIO_DEVICE_DATA_STATE_STOP, false);
    rec_ctlw(a, 4, VFIO_DEVICE_DATA_STATE_RUNNING, false);
    add(inputs, "save", FUZZ_EXPECT_ACCEPT, a);

    /* Load: version, STOP, the device's own config back, a data set */
    for (i = 0; i < 3; i++) {
        static const char *const names[] = {
            "load", "load-two-chunks", "load-xfer-4k"
        };

        a = input(i == 2 ? 0x40 : 0);
        rec_wr(a, DEVSTATE_REGION_VERSION, 0, version_ok,
               sizeof(version_ok), 4096);
        rec_ctlw(a, 4, VFIO_DEVICE_DATA_STATE_STOP, false);
        rec_ctlw(a, 16, VFIO_DEVICE_DATA_ACTION_GET_BUFFER, false);
        rec_ctlw(a, 16, VFIO_DEVICE_DATA_ACTION_SET_BUFFER, false);
        rec_load_set(a, i == 0 ? set2 : set20, 64 << 10,
                     i == 2 ? 4096 : 32768);
        rec_rd(a, DEVSTATE_REGION_CTL, 48, 8);
        rec_line(a, "digest");
        rec_ctlw(a, 4, VFIO_DEVICE_DATA_STATE_RUNNING, false);
        add(inputs, names[i], FUZZ_EXPECT_ACCEPT, a);
    }

    /* Protocol: info, regions, IRQs, DMA, config space, BARs, reset */
    a = input(0);
    {
        uint32_t info[4] = { GUINT32_TO_LE(16) };
        static const uint8_t regions[] = { 0, 1, 7, 9, 10, 11, 12, 13 };
        uint32_t unmap[6] = {
            GUINT32_TO_LE(24), 0, GUINT32_TO_LE(0x100000), 0,
            GUINT32_TO_LE(0x10000), 0,
        };
        uint32_t irqs[5] = {
            GUINT32_TO_LE(20),
            GUINT32_TO_LE(VFIO_IRQ_SET_DATA_NONE |
                          VFIO_IRQ_SET_ACTION_TRIGGER),
        };
        uint8_t cmd[2] = { 0x06, 0x00 };
        uint8_t msix[8] = { 0 };

        rec_msg(a, VFIO_USER_DEVICE_GET_INFO, info, sizeof(info), false);
        for (i = 0; i < sizeof(regions); i++) {
            uint32_t ri[8] = { GUINT32_TO_LE(256), 0, regions[i] };

            rec_msg(a, VFIO_USER_DEVICE_GET_REGION_INFO, ri, sizeof(ri),
                    false);
        }
        for (i = 0; i < 4; i++) {
            uint32_t ii[4] = { GUINT32_TO_LE(16), 0, GUINT32_TO_LE(i) };

            rec_msg(a, VFIO_USER_DEVICE_GET_IRQ_INFO, ii, sizeof(ii), false);
        }
        rec_dma_map(a, 0, 0x100000, 0x10000);
        rec_msg(a, VFIO_USER_DMA_UNMAP, unmap, sizeof(unmap), false);
        rec_msg(a, VFIO_USER_DEVICE_SET_IRQS, irqs, sizeof(irqs), false);
        rec_rd(a, DEVSTATE_REGION_BAR0, 0, 4);
        rec_rd(a, DEVSTATE_REGION_CONFIG, 0, 64);
        rec_wr(a, DEVSTATE_REGION_CONFIG, 4, cmd, 2, 2);
        rec_bar0(a, DEVSTATE_REG_SCRATCH, 0x04030201);
        rec_rd(a, DEVSTATE_REGION_BAR1, 0, 8);
        rec_wr(a, DEVSTATE_REGION_BAR1, 16, msix, 8, 8);
        rec_rd(a, DEVSTATE_REGION_BAR1, 0x800, 8);
        rec_msg(a, VFIO_USER_DEVICE_RESET, NULL, 0, false);
        rec_line(a, "status");
        rec_line(a, "fail mem-set:EIO:1");
        rec_line(a, "clear all");
        rec_line(a, "digest");
    }
    add(inputs, "proto", FUZZ_EXPECT_ACCEPT, a);

    /* DMA: a 64 KiB mapping, the engine writing it, then past the top */
    a = input(0);
    rec_dma_map(a, 0, 0, 0x10000);
    rec_bar0(a, DEVSTATE_REG_DMA_ADDR_LO, 0);
    rec_bar0(a, DEVSTATE_REG_DMA_PAGES, 16);
    rec_bar0(a, DEVSTATE_REG_CTRL, 7);
    rec_line(a, "status");
    rec_tick(a, 20);
    rec_bar0(a, DEVSTATE_REG_DMA_ADDR_LO, 0xfffff000);
    rec_bar0(a, DEVSTATE_REG_DMA_ADDR_HI, 0xffffffff);
    rec_bar0(a, DEVSTATE_REG_DMA_PAGES, 1);
    rec_tick(a, 2);
    add(inputs, "dma", FUZZ_EXPECT_ACCEPT, a);

    /* P2P: BAR accesses complete, then a stop-and-copy arc */
    a = input(0);
    rec_ctlw(a, 4, VFIO_DEVICE_DATA_STATE_LOGGING, false);
    rec_ctlw(a, 4, VFIO_DEVICE_DATA_STATE_P2P |
             VFIO_DEVICE_DATA_STATE_LOGGING, false);
    rec_bar0(a, DEVSTATE_REG_SCRATCH, 0x1234);
    rec_ctlw(a, 4, VFIO_DEVICE_DATA_STATE_STOP |
             VFIO_DEVICE_DATA_STATE_LOGGING, false);
    rec_ctlw(a, 4, VFIO_DEVICE_DATA_STATE_P2P, false);
    rec_ctlw(a, 4, VFIO_DEVICE_DATA_STATE_RUNNING, false);
    add(inputs, "p2p", FUZZ_EXPECT_ACCEPT, a);

    /*
     * A save session with the workers on: the whole set, pages dirtied
     * between chunks, an interrupt held in P2P, stop-and-copy
     */
    a = input(0);
    rec_bar0(a, DEVSTATE_REG_CTRL, DEVSTATE_CTRL_MUTATE |
             DEVSTATE_CTRL_DMA_IRQ);
    rec_ctlw(a, 4, VFIO_DEVICE_DATA_STATE_LOGGING, false);
    rec_rd(a, DEVSTATE_REGION_CTL, 40, 8);
    for (i = 0; i < 3; i++) {
        rec_ctlw(a, 32, VFIO_DEVICE_DATA_ACTION_GET_BUFFER, false);
        rec_rd(a, DEVSTATE_REGION_CTL, 48, 8);
    }
    rec_tick(a, 20);
    rec_rd(a, DEVSTATE_REGION_CTL, 56, 8);
    rec_ctlw(a, 4, VFIO_DEVICE_DATA_STATE_P2P |
             VFIO_DEVICE_DATA_STATE_LOGGING, false);
    rec_bar0(a, DEVSTATE_REG_IRQ, 0);
    rec_ctlw(a, 4, VFIO_DEVICE_DATA_STATE_STOP |
             VFIO_DEVICE_DATA_STATE_LOGGING, false);
    rec_ctlw(a, 16, VFIO_DEVICE_DATA_ACTION_GET_BUFFER, false);
    rec_ctlw(a, 64, 0x1000, true);
    rec_ctlw(a, 72, 64, true);
    rec_ctlw(a, 80, VFIO_DEVICE_DATA_ACTION_GET_BITMAP, false);
    rec_ctlw(a, 4, VFIO_DEVICE_DATA_STATE_STOP, false);
    add(inputs, "save-session", FUZZ_EXPECT_ACCEPT, a);

    /* migration_version with the one trailing newline it may carry */
    a = input(0);
    {
        static const char v[] = "vfio-user-devstate-1.0.0\n";

        rec_wr(a, DEVSTATE_REGION_VERSION, 0, v, sizeof(v), 4096);
    }
    add(inputs, "version-newline", FUZZ_EXPECT_ACCEPT, a);

    /* MSI-X: an fd for vector 0, the IRQ register, the PBA, an FLR */
    a = input(0);
    {
        uint32_t irqs[5] = {
            GUINT32_TO_LE(20),
            GUINT32_TO_LE(VFIO_IRQ_SET_DATA_EVENTFD |
                          VFIO_IRQ_SET_ACTION_TRIGGER),
            GUINT32_TO_LE(VFIO_PCI_MSIX_IRQ_INDEX), 0, GUINT32_TO_LE(1),
        };
        uint8_t flr = 1;

        rec_msg(a, VFIO_USER_DEVICE_SET_IRQS, irqs, sizeof(irqs), true);
        rec_bar0(a, DEVSTATE_REG_IRQ, 0);
        rec_bar0(a, DEVSTATE_REG_IRQ, 1);
        rec_rd(a, DEVSTATE_REGION_BAR1, DEVSTATE_MSIX_PBA_OFFSET, 8);
        rec_wr(a, DEVSTATE_REGION_CONFIG, DEVSTATE_CAP_AF + 4, &flr, 1, 1);
    }
    add(inputs, "msix-flr", FUZZ_EXPECT_ACCEPT, a);

    /* Corrupt inputs: each ends in one request the device must refuse */
    a = input(0);
    rec_ctlw(a, 48, 0, true);
    add(inputs, "bad-pos-write", FUZZ_EXPECT_REJECT, a);

    a = input(0);
    rec_ctlw(a, 56, 0, true);
    add(inputs, "bad-pending-write", FUZZ_EXPECT_REJECT, a);

    a = input(0);
    rec_ctlw(a, 40, 8240, false);
    add(inputs, "bad-mixed-width", FUZZ_EXPECT_REJECT, a);

    a = input(0);
    rec_ctlw(a, 4, VFIO_DEVICE_DATA_STATE_STOP | VFIO_DEVICE_DATA_STATE_P2P,
             false);
    add(inputs, "bad-state-stop-p2p", FUZZ_EXPECT_REJECT, a);

    a = input(0x20);
    rec_ctlw(a, 4, VFIO_DEVICE_DATA_STATE_P2P, false);
    add(inputs, "bad-p2p-without-cap", FUZZ_EXPECT_REJECT, a);

    a = input(0);
    rec_ctlw(a, 40, set2->len, true);
    add(inputs, "bad-load-running", FUZZ_EXPECT_REJECT, a);

    a = input(0);
    rec_ctlw(a, 4, VFIO_DEVICE_DATA_STATE_STOP, false);
    rec_ctlw(a, 40, 100, true);
    add(inputs, "bad-set-size", FUZZ_EXPECT_REJECT, a);

    for (i = 0; i < 3; i++) {
        static const char *const names[] = {
            "bad-set-header", "bad-set-page-order", "bad-set-page-past-end",
        };
        g_autoptr(GByteArray) bad = i == 0 ? mem_set(two, 2, true) :
                                    i == 1 ? mem_set(down, 2, false) :
                                    mem_set(past, 1, false);

        a = input(0);
        rec_ctlw(a, 4, VFIO_DEVICE_DATA_STATE_STOP, false);
        rec_load_set(a, bad, 64 << 10, 32768);
        add(inputs, names[i], FUZZ_EXPECT_REJECT, a);
    }

    a = input(0);
    {
        uint8_t junk[100];

        memset(junk, 0x33, sizeof(junk));
        rec_ctlw(a, 4, VFIO_DEVICE_DATA_STATE_STOP, false);
        rec_ctlw(a, 24, sizeof(junk), true);
        rec_wr(a, DEVSTATE_REGION_DATA_CONFIG, 0, junk, sizeof(junk), 4096);
        rec_ctlw(a, 16, VFIO_DEVICE_DATA_ACTION_SET_BUFFER, false);
    }
    add(inputs, "bad-config-blob", FUZZ_EXPECT_REJECT, a);

    a = input(0);
    rec_ctlw(a, 32, VFIO_DEVICE_DATA_ACTION_GET_BUFFER, false);
    add(inputs, "bad-get-buffer-no-set", FUZZ_EXPECT_REJECT, a);

    a = input(0);
    rec_ctlw(a, 72, 1 << 20, true);
    rec_ctlw(a, 80, VFIO_DEVICE_DATA_ACTION_GET_BITMAP, false);
    add(inputs, "bad-bitmap-range", FUZZ_EXPECT_REJECT, a);

    for (i = 0; i < 3; i++) {
        static const char *const v[] = {
            "vfio-user-devstate-2.0.0", "vfio-user-devstate-4294967297.0.0",
            "vfio-user-devstate-+1.+0.+0",
        };
        static const char *const names[] = {
            "bad-version-major", "bad-version-wrap", "bad-version-sign",
        };

        a = input(0);
        rec_wr(a, DEVSTATE_REGION_VERSION, 0, v[i], strlen(v[i]) + 1, 4096);
        add(inputs, names[i], FUZZ_EXPECT_REJECT, a);
    }

    a = input(0);
    rec_ctlw(a, 4, VFIO_DEVICE_DATA_STATE_STOP, false);
    rec_bar0(a, DEVSTATE_REG_SCRATCH, 1);
    add(inputs, "bad-register-write-in-stop", FUZZ_EXPECT_REJECT, a);

    a = input(0x40);
    rec_rd(a, DEVSTATE_REGION_DATA_MEMORY, 0, 8192);
    add(inputs, "bad-xfer-above-max", FUZZ_EXPECT_REJECT, a);

    a = input(0);
    rec_rd(a, DEVSTATE_REGION_BAR1, 0, 16);
    add(inputs, "bad-msix-access-width", FUZZ_EXPECT_REJECT, a);

    a = input(0);
    rec_rd(a, DEVSTATE_NUM_REGIONS, 0, 4);
    add(inputs, "bad-region-index", FUZZ_EXPECT_REJECT, a);

    a = input(0);
    rec_dma_map(a, 0x10000, 0x100000, 0x10000);
    add(inputs, "bad-dma-past-memfd", FUZZ_EXPECT_REJECT, a);

    a = input(0);
    rec_msg(a, 99, NULL, 0, false);
    add(inputs, "bad-command", FUZZ_EXPECT_REJECT, a);

    a = input(0);
    {
        /* a header that claims 8 bytes, shorter than itself */
        static const uint8_t lie[] = {
            0, 4, 0, 0, 0, 0, 0, 2, 8, 0, 0, 0, 7, 0, 0, 0,
        };

        g_byte_array_append(a, lie, sizeof(lie));
    }
    add(inputs, "bad-header-size", FUZZ_EXPECT_REJECT, a);
    return inputs;
}
