/*
 * vfio-user-devstate: a libFuzzer target for the reference device
 *
 * The input is a sequence of vfio-user messages, compact region accesses
 * and control-socket lines.  Messages go through a socketpair into the
 * server's real message handling (handle_one() of vfu-server.c, included
 * here so that its static functions are reachable); replies are read and
 * dropped by a thread.  Each input gets a fresh device with 1 MiB of
 * device memory and no mutation/DMA worker threads.
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
 * DEVSTATE_FUZZ_VERBOSE=1 turns on the device's log.  DEVSTATE_FUZZ_SEEDS=DIR
 * writes seed inputs to DIR at start: a save session through P2P, loads
 * of a good and of a malformed data set, migration_version strings, and
 * MSI-X with the IRQ register and an FLR.
 *
 * Built by meson in a --enable-fuzzing build (ninja target
 * tests/vfio-user-devstate/devstate-fuzz; tooling/fuzz.sh in the project).
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 */

#define main devstate_main
#include "main.c"
#undef main
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

/* Replies: read and drop, closing any fd that comes with them */
static void *drain_thread(void *opaque)
{
    int fd = (intptr_t)opaque;
    static __thread uint8_t buf[1 << 16];

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
        ssize_t n = recvmsg(fd, &msg, MSG_CMSG_CLOEXEC);

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
    ds->max_xfer = (opts & 0x40) ? 4096 : 1 << 20;
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

/* Seeds, in the input format above */

#define SEED_SET_SIZE   (32 + 8 + DEVSTATE_PAGE_SIZE)   /* one record */

static void seed_ctl(GByteArray *a, uint8_t off, bool wide, uint64_t val)
{
    uint8_t rec[3] = { 2, off, wide };

    g_byte_array_append(a, rec, sizeof(rec));
    g_byte_array_append(a, (const guint8 *)&val, 8);
}

static void seed_rw(GByteArray *a, uint8_t region, bool write, uint64_t off,
                    uint16_t count, const void *data)
{
    uint8_t rec[3] = { 1, region, write };
    uint8_t code = count == 1 ? 0 : count == 2 ? 1 : count == 4 ? 2 :
        count == 8 ? 3 : 4;

    g_byte_array_append(a, rec, sizeof(rec));
    g_byte_array_append(a, (const guint8 *)&off, 8);
    g_byte_array_append(a, &code, 1);
    if (code == 4) {
        g_byte_array_append(a, (const guint8 *)&count, 2);
    }
    if (write) {
        g_byte_array_append(a, data, count);
    }
}

static void seed_ticks(GByteArray *a, uint8_t n)
{
    uint8_t rec[2] = { 4, n };

    g_byte_array_append(a, rec, sizeof(rec));
}

static void seed_write(const char *dir, const char *name, GByteArray *a)
{
    g_autofree char *path = g_build_filename(dir, name, NULL);
    g_autoptr(GError) err = NULL;

    if (!g_file_set_contents(path, (const char *)a->data, a->len, &err)) {
        fprintf(stderr, "devstate-fuzz: %s\n", err->message);
        exit(1);
    }
}

static void write_seeds(const char *dir)
{
    g_autoptr(GByteArray) a = g_byte_array_new();
    const uint32_t ctrl = DEVSTATE_CTRL_MUTATE | DEVSTATE_CTRL_DMA_IRQ;
    const uint32_t zero = 0, one = 1;
    uint8_t opts = 0, flr = 1;
    unsigned i;

    g_mkdir_with_parents(dir, 0700);

    /* a save session: whole set, dirty pages, P2P, stop-and-copy */
    g_byte_array_append(a, &opts, 1);
    seed_rw(a, DEVSTATE_REGION_BAR0, true, DEVSTATE_REG_CTRL, 4, &ctrl);
    seed_ctl(a, 4, false, VFIO_DEVICE_DATA_STATE_LOGGING);
    seed_rw(a, DEVSTATE_REGION_CTL, false, 40, 8, NULL);
    for (i = 0; i < 3; i++) {
        seed_ctl(a, 32, false, VFIO_DEVICE_DATA_ACTION_GET_BUFFER);
        seed_rw(a, DEVSTATE_REGION_CTL, false, 48, 8, NULL);
    }
    seed_ticks(a, 20);
    seed_rw(a, DEVSTATE_REGION_CTL, false, 56, 8, NULL);
    seed_ctl(a, 4, false, VFIO_DEVICE_DATA_STATE_P2P |
             VFIO_DEVICE_DATA_STATE_LOGGING);
    seed_rw(a, DEVSTATE_REGION_BAR0, true, DEVSTATE_REG_IRQ, 4, &zero);
    seed_ctl(a, 4, false, VFIO_DEVICE_DATA_STATE_STOP |
             VFIO_DEVICE_DATA_STATE_LOGGING);
    seed_rw(a, DEVSTATE_REGION_CTL, false, 40, 8, NULL);
    seed_ctl(a, 32, false, VFIO_DEVICE_DATA_ACTION_GET_BUFFER);
    seed_ctl(a, 16, false, VFIO_DEVICE_DATA_ACTION_GET_BUFFER);
    seed_ctl(a, 64, true, 0x1000);
    seed_ctl(a, 72, true, 64);
    seed_ctl(a, 80, false, VFIO_DEVICE_DATA_ACTION_GET_BITMAP);
    seed_ctl(a, 4, false, VFIO_DEVICE_DATA_STATE_STOP);
    seed_write(dir, "save-session", a);

    /* loads: a one-record set, then the same with a bad page */
    for (i = 0; i < 2; i++) {
        /* devstate-regions.c's set header: magic "DSMM", version 1 */
        struct {
            uint32_t magic, version;
            uint64_t nr_records, mem_size;
            uint32_t flags, reserved;
        } hdr = {
            .magic = GUINT32_TO_LE(0x4d4d5344),
            .version = GUINT32_TO_LE(1),
            .nr_records = GUINT64_TO_LE(1),
            .mem_size = GUINT64_TO_LE(1 << 20),
        };
        uint64_t page = GUINT64_TO_LE(i ? 256 : 5);
        g_autofree uint8_t *set = g_malloc0(SEED_SET_SIZE);

        memcpy(set, &hdr, sizeof(hdr));
        memcpy(set + 32, &page, 8);
        memset(set + 40, 0xa5, DEVSTATE_PAGE_SIZE);
        g_byte_array_set_size(a, 0);
        g_byte_array_append(a, &opts, 1);
        seed_ctl(a, 4, false, VFIO_DEVICE_DATA_STATE_STOP);
        seed_ctl(a, 40, true, SEED_SET_SIZE);
        seed_rw(a, DEVSTATE_REGION_DATA_MEMORY, true, 0,
                SEED_SET_SIZE, set);
        seed_ctl(a, 32, false, VFIO_DEVICE_DATA_ACTION_SET_BUFFER);
        seed_rw(a, DEVSTATE_REGION_CTL, false, 48, 8, NULL);
        seed_ctl(a, 24, true, 64);
        seed_ctl(a, 16, false, VFIO_DEVICE_DATA_ACTION_SET_BUFFER);
        seed_write(dir, i ? "load-bad-page" : "load", a);
    }

    /* migration_version: accepted, wrapped, signed */
    g_byte_array_set_size(a, 0);
    g_byte_array_append(a, &opts, 1);
    {
        static const char *const v[] = {
            "vfio-user-devstate-1.0.0", "vfio-user-devstate-4294967297.0.0",
            "vfio-user-devstate-+1.+0.+0", "vfio-user-devstate-1.0.0\n",
        };

        for (i = 0; i < G_N_ELEMENTS(v); i++) {
            seed_rw(a, DEVSTATE_REGION_VERSION, true, 0, strlen(v[i]) + 1,
                    v[i]);
        }
    }
    seed_write(dir, "version", a);

    /* MSI-X: an fd for vector 0, the IRQ register, PBA, an FLR */
    g_byte_array_set_size(a, 0);
    g_byte_array_append(a, &opts, 1);
    {
        uint8_t rec[8] = { 0, VFIO_USER_DEVICE_SET_IRQS, 0, 0, 0, 20, 0, 1 };
        uint32_t irqs[5] = {
            20, VFIO_IRQ_SET_DATA_EVENTFD | VFIO_IRQ_SET_ACTION_TRIGGER,
            VFIO_PCI_MSIX_IRQ_INDEX, 0, 1,
        };
        uint32_t id = 7;

        g_byte_array_append(a, rec, sizeof(rec));
        g_byte_array_append(a, (const guint8 *)&id, 4);
        g_byte_array_append(a, (const guint8 *)irqs, sizeof(irqs));
    }
    seed_rw(a, DEVSTATE_REGION_BAR0, true, DEVSTATE_REG_IRQ, 4, &zero);
    seed_rw(a, DEVSTATE_REGION_BAR0, true, DEVSTATE_REG_IRQ, 4, &one);
    seed_rw(a, DEVSTATE_REGION_BAR1, false, DEVSTATE_MSIX_PBA_OFFSET, 8, NULL);
    seed_rw(a, DEVSTATE_REGION_CONFIG, true, DEVSTATE_CAP_AF + 4, 1, &flr);
    seed_write(dir, "msix-flr", a);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    const char *seeds = getenv("DEVSTATE_FUZZ_SEEDS");

    signal(SIGPIPE, SIG_IGN);   /* as main() does */
    if (seeds) {
        write_seeds(seeds);
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
    int sv[2];
    uint8_t opts;
    bool ok = true, open = true;
    unsigned digests = 0;

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
    pthread_create(&drain, NULL, drain_thread, (void *)(intptr_t)sv[0]);

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
    return 0;
}
