/*
 * libFuzzer target for the incoming migration stream of the VFIO
 * device-state backend (hw/vfio/migration-devstate.c)
 *
 * The real backend is #included; QEMUFile is a small in-memory reader,
 * and the few QEMU symbols the backend needs are stubbed.  The device is
 * a fake whose regions are heap buffers of exactly their advertised size
 * (so ASan sees any out-of-bounds access, also through the "mmap" of a
 * data region, which returns the buffer itself) and which aborts when
 * QEMU breaks a rule of the interface (docs/devel/migration/
 * vfio-devstate.rst, section "device-state regions"): a bad region index,
 * offset or size, a misaligned or mixed-width control access, a write to
 * a read-only field, SET_BUFFER before the data was written, a chunk out
 * of pos order, data loaded outside STOP, ...
 *
 * Input: 4 bytes of device options, then the section payloads:
 *   byte 0: bit 0 config region mmappable, bit 1 memory region mmappable,
 *           bit 2 no migration_version region, bit 3 no device memory,
 *           bit 4 no vfio_load_config op, bit 5 data-region transfers are
 *           short (half), bit 6 the device refuses the source's version,
 *           bit 7 the device refuses the config blob
 *   byte 1: bits 0-1 config region size (4096, 256, 16, 1), bits 2-3
 *           memory region size (65536, 4096, 3000, 1 MiB)
 *   byte 2: fail the Nth device access with EIO (0: never)
 *   byte 3: number of sections (vfio_ds_load_state() calls, 1-4)
 *   rest:   the stream, read by the sections in turn
 *
 * It is a unit-level harness (one translation unit and stubs), not a
 * qtest-based fuzzer: it needs neither a guest nor a vfio device, and
 * runs thousands of streams a second.  LLVMFuzzerInitialize writes seed
 * streams (valid migrations made like the source does) to the directory
 * named by $VFIO_DS_FUZZ_SEEDS when it is set.
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 */

#include "qemu/osdep.h"
#include <sys/mman.h>
#include "qapi/error.h"

/* Set to the fake device's by LLVMFuzzerInitialize() */
static void *(*mmap_hook)(void *addr, size_t len, int prot, int flags, int fd,
                          off_t off);
static int (*munmap_hook)(void *addr, size_t len);
#define mmap(...) mmap_hook(__VA_ARGS__)
#define munmap(...) munmap_hook(__VA_ARGS__)

/* No tracing: the generated tracers need the trace and log subsystems. */
#define TRACE_HW_VFIO_GENERATED_TRACERS_H
#define TRACE_NOP(...) do { } while (0)
#define trace_vfio_ds_bitmap_query TRACE_NOP
#define trace_vfio_ds_bitmap_query_done TRACE_NOP
#define trace_vfio_ds_ctl_read TRACE_NOP
#define trace_vfio_ds_ctl_write TRACE_NOP
#define trace_vfio_ds_load_abandoned TRACE_NOP
#define trace_vfio_ds_load_chunk TRACE_NOP
#define trace_vfio_ds_load_config TRACE_NOP
#define trace_vfio_ds_load_header TRACE_NOP
#define trace_vfio_ds_load_set TRACE_NOP
#define trace_vfio_ds_load_tag TRACE_NOP
#define trace_vfio_ds_probe TRACE_NOP
#define trace_vfio_ds_region TRACE_NOP
#define trace_vfio_ds_region_mmap TRACE_NOP
#define trace_vfio_ds_reset TRACE_NOP
#define trace_vfio_ds_save_chunk TRACE_NOP
#define trace_vfio_ds_save_complete TRACE_NOP
#define trace_vfio_ds_save_config TRACE_NOP
#define trace_vfio_ds_save_iterate TRACE_NOP
#define trace_vfio_ds_save_setup TRACE_NOP
#define trace_vfio_ds_set_open TRACE_NOP
#define trace_vfio_ds_set_state TRACE_NOP
#define trace_vfio_ds_state_pending TRACE_NOP
#define trace_vfio_ds_version_check TRACE_NOP
#define trace_vfio_ds_vmstate_change TRACE_NOP

#include "../../hw/vfio/migration-devstate.c"

#undef mmap
#undef munmap

#define FAIL(...) do { \
        fprintf(stderr, "interface violation: " __VA_ARGS__); \
        fputc('\n', stderr); \
        abort(); \
    } while (0)

/* ---------------------------------------------------------------------- */
/* QEMUFile: an in-memory reader (and a writer, for the seeds) */

struct QEMUFile {
    const uint8_t *buf;
    size_t len, pos;
    int err;
    GByteArray *out;
};

int qemu_file_get_error(QEMUFile *f)
{
    return f->err;
}

size_t qemu_get_buffer(QEMUFile *f, uint8_t *buf, size_t size)
{
    size_t n = MIN(size, f->len - f->pos);

    if (f->err) {
        return 0;
    }
    memcpy(buf, f->buf + f->pos, n);
    f->pos += n;
    if (n < size) {
        f->err = -EIO;
    }
    return n;
}

static uint64_t get_be(QEMUFile *f, unsigned bytes)
{
    uint8_t b[8] = { 0 };
    uint64_t v = 0;
    unsigned i;

    qemu_get_buffer(f, b, bytes);
    for (i = 0; i < bytes; i++) {
        v = v << 8 | b[i];
    }
    return v;
}

uint64_t qemu_get_be64(QEMUFile *f) { return get_be(f, 8); }
unsigned int qemu_get_be32(QEMUFile *f) { return get_be(f, 4); }
unsigned int qemu_get_be16(QEMUFile *f) { return get_be(f, 2); }
int qemu_get_byte(QEMUFile *f) { return get_be(f, 1); }

void qemu_put_buffer(QEMUFile *f, const uint8_t *buf, size_t size)
{
    if (f->out) {
        g_byte_array_append(f->out, buf, size);
    }
}

/* The fake stream copies at once, so nothing is left to flush. */
void qemu_put_buffer_async(QEMUFile *f, const uint8_t *buf, size_t size,
                           bool may_free)
{
    qemu_put_buffer(f, buf, size);
}

int qemu_fflush(QEMUFile *f)
{
    return 0;
}

static void put_be(QEMUFile *f, uint64_t v, unsigned bytes)
{
    uint8_t b[8];
    unsigned i;

    for (i = 0; i < bytes; i++) {
        b[i] = v >> (8 * (bytes - 1 - i));
    }
    qemu_put_buffer(f, b, bytes);
}

void qemu_put_be64(QEMUFile *f, uint64_t v) { put_be(f, v, 8); }
void qemu_put_be32(QEMUFile *f, unsigned int v) { put_be(f, v, 4); }
void qemu_put_be16(QEMUFile *f, unsigned int v) { put_be(f, v, 2); }
void qemu_put_byte(QEMUFile *f, int v) { put_be(f, v, 1); }

/* ---------------------------------------------------------------------- */
/* Stubs */

struct Error {
    char *msg;
};

static void error_setv(Error **errp, int os_errno, const char *fmt,
                       va_list ap)
{
    Error *err;

    if (!errp) {
        return;
    }
    assert(*errp == NULL);      /* as QEMU's error_setv() */
    err = g_new0(Error, 1);
    err->msg = g_strdup_vprintf(fmt, ap);
    if (os_errno) {
        char *m = g_strdup_printf("%s: %s", err->msg, g_strerror(os_errno));

        g_free(err->msg);
        err->msg = m;
    }
    if (errp == &error_abort) {
        abort();
    }
    *errp = err;
}

void error_setg_internal(Error **errp, const char *src, int line,
                         const char *func, const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    error_setv(errp, 0, fmt, ap);
    va_end(ap);
}

void error_setg_errno_internal(Error **errp, const char *src, int line,
                               const char *func, int os_errno,
                               const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    error_setv(errp, os_errno, fmt, ap);
    va_end(ap);
}

void error_prepend(Error *const *errp, const char *fmt, ...)
{
    va_list ap;
    char *p, *m;

    if (!errp || !*errp) {
        return;
    }
    va_start(ap, fmt);
    p = g_strdup_vprintf(fmt, ap);
    va_end(ap);
    m = g_strconcat(p, (*errp)->msg, NULL);
    g_free(p);
    g_free((*errp)->msg);
    (*errp)->msg = m;
}

void error_free(Error *err)
{
    if (err) {
        g_free(err->msg);
        g_free(err);
    }
}

static bool verbose;

void error_report_err(Error *err)
{
    if (err && verbose) {
        fprintf(stderr, "error: %s\n", err->msg);
    }
    error_free(err);
}

Error *error_copy(const Error *err)
{
    Error *c = g_new0(Error, 1);

    c->msg = g_strdup(err->msg);
    return c;
}

void error_report(const char *fmt, ...)
{
    va_list ap;

    if (verbose) {
        va_start(ap, fmt);
        vfprintf(stderr, fmt, ap);
        va_end(ap);
        fputc('\n', stderr);
    }
}

void warn_report(const char *fmt, ...)
{
}

Error *error_abort;

void migration_file_set_error(int ret, Error *err)
{
    error_free(err);
}

bool migrate_switchover_ack(void) { return true; }
bool migrate_postcopy_ram(void) { return false; }
bool migrate_background_snapshot(void) { return false; }
bool runstate_check(RunState state) { return false; }
bool runstate_is_running(void) { return true; }
const QEnumLookup RunState_lookup;
const char *qapi_enum_lookup(const QEnumLookup *lookup, int val)
{
    return "?";
}
void vfio_migration_add_bytes_transferred(unsigned long val) { }
bool migration_rate_exceeded(QEMUFile *f) { return false; }
int64_t qemu_clock_get_ns(QEMUClockType type) { return 0; }

static int approvals;

int qemu_loadvm_approve_switchover(void)
{
    approvals++;
    return 0;
}

/* ---------------------------------------------------------------------- */
/* The fake device */

enum { R_CTL = 9, R_CONFIG, R_MEMORY, R_BITMAP, R_VERSION, R_NUM };

#define FAKE_MAX_SET    (4 * MiB)
#define FAKE_VERSION    "fake-devstate-1.0.0"

static const uint32_t subtype_of[R_NUM] = {
    [R_CTL] = VFIO_REGION_SUBTYPE_DEVICE_STATE_CTL,
    [R_CONFIG] = VFIO_REGION_SUBTYPE_DEVICE_STATE_DATA_CONFIG,
    [R_MEMORY] = VFIO_REGION_SUBTYPE_DEVICE_STATE_DATA_MEMORY,
    [R_BITMAP] = VFIO_REGION_SUBTYPE_DEVICE_STATE_DATA_DIRTYBITMAP,
    [R_VERSION] = VFIO_REGION_SUBTYPE_DEVICE_STATE_VERSION,
};

typedef struct {
    uint8_t *buf[R_NUM];
    uint64_t size[R_NUM];
    bool mmappable[R_NUM];
    bool mapped[R_NUM];
    struct vfio_region_info info[R_NUM];

    bool short_xfer, refuse_version, refuse_config;
    unsigned accesses, fail_at;

    uint32_t state, caps;
    /* device_config */
    uint64_t cfg_size;
    uint64_t cfg_filled;        /* bytes [0, n) written since size */
    bool cfg_size_set;
    /* device_memory */
    bool set_open;
    uint64_t set_size, next_pos, pos;
    uint64_t mem_filled;        /* bytes [0, n) written since SET_BUFFER */
    bool version_ok;
    bool cfg_loaded;
    GByteArray *rx;             /* bytes of the data sets, as handed over */
    unsigned rx_done;           /* ... of the complete ones */
    GByteArray *cfg_rx;         /* the last config the device accepted */
    unsigned sets_loaded;
} FakeDev;

static FakeDev fake;
static PCIDevice fake_pci;
static uint8_t fake_pci_config[PCI_CONFIG_SPACE_SIZE];
static DeviceState fake_qdev;

static bool fake_fail(void)
{
    return fake.fail_at && ++fake.accesses == fake.fail_at;
}

static void check_access(uint8_t nr, off_t off, uint32_t size)
{
    if (nr >= R_NUM || !fake.size[nr]) {
        FAIL("access to region %u, which the device does not have", nr);
    }
    if (off < 0 || size == 0 || off > fake.size[nr] ||
        size > fake.size[nr] - off) {
        FAIL("access of %u bytes at 0x%llx of region %u (%" PRIu64
             " bytes)", size, (long long)off, nr, fake.size[nr]);
    }
}

/* Control-region fields: offset, width, writable */
static const struct {
    unsigned off, width;
    bool rw;
} ctl_fields[] = {
    { 0, 4, false }, { 4, 4, true }, { 8, 4, false }, { 12, 4, false },
    { 16, 4, true }, { 20, 4, false }, { 24, 8, true },
    { 32, 4, true }, { 36, 4, false }, { 40, 8, true }, { 48, 8, true },
    { 56, 8, true }, { 64, 8, true }, { 72, 4, true }, { 76, 4, false },
    { 80, 8, false },
};

static void check_ctl(off_t off, uint32_t size, bool write)
{
    unsigned i;

    for (i = 0; i < ARRAY_SIZE(ctl_fields); i++) {
        if (ctl_fields[i].off == off) {
            if (ctl_fields[i].width != size) {
                FAIL("control access of %u bytes at %lld, field is %u",
                     size, (long long)off, ctl_fields[i].width);
            }
            if (write && !ctl_fields[i].rw) {
                FAIL("write to read-only control field at %lld",
                     (long long)off);
            }
            return;
        }
    }
    FAIL("control access at %lld is not a field", (long long)off);
}

static uint64_t ctl_value(off_t off)
{
    switch (off) {
    case 0:
        return VFIO_DEVICE_STATE_INTERFACE_VERSION;
    case 4:
        return fake.state;
    case 8:
        return fake.caps;
    case 24:
        return fake.cfg_size;
    case 40:
        return fake.set_open ? fake.set_size : 0;
    case 48:
        return fake.pos;
    case 76:
        return 12;
    default:
        return 0;
    }
}

static void need_stop(const char *what)
{
    if (fake.state != VFIO_DEVICE_DATA_STATE_STOP) {
        FAIL("%s in state 0x%x, the device loads only in STOP", what,
             fake.state);
    }
}

static int ctl_write(off_t off, uint64_t val)
{
    switch (off) {
    case 4:
        if (val & ~(uint64_t)VFIO_DEVICE_DATA_STATE_MASK) {
            FAIL("device_state 0x%" PRIx64, val);
        }
        if (fake.state == VFIO_DEVICE_DATA_STATE_STOP &&
            val != VFIO_DEVICE_DATA_STATE_STOP) {
            /* Leaving STOP drops an incomplete data set. */
            fake.set_open = false;
            g_byte_array_set_size(fake.rx, fake.rx_done);
        }
        fake.state = val;
        return 0;
    case 16:
        if (val != VFIO_DEVICE_DATA_ACTION_SET_BUFFER) {
            FAIL("device_config.action %" PRIu64 " while loading", val);
        }
        need_stop("device_config SET_BUFFER");
        if (!fake.cfg_size_set) {
            FAIL("device_config SET_BUFFER before its size");
        }
        if (!fake.mapped[R_CONFIG] && fake.cfg_filled < fake.cfg_size) {
            FAIL("device_config SET_BUFFER with %" PRIu64 " of %" PRIu64
                 " bytes written", fake.cfg_filled, fake.cfg_size);
        }
        fake.cfg_size_set = false;
        if (fake.refuse_config) {
            return -EINVAL;
        }
        fake.cfg_loaded = true;
        g_byte_array_set_size(fake.cfg_rx, 0);
        g_byte_array_append(fake.cfg_rx, fake.buf[R_CONFIG], fake.cfg_size);
        return 0;
    case 24:
        need_stop("device_config.size");
        if (val == 0 || val > fake.size[R_CONFIG]) {
            FAIL("device_config.size %" PRIu64 " (region %" PRIu64 ")", val,
                 fake.size[R_CONFIG]);
        }
        fake.cfg_size = val;
        fake.cfg_size_set = true;
        fake.cfg_filled = 0;
        return 0;
    case 32: {
        uint64_t chunk;

        if (val != VFIO_DEVICE_DATA_ACTION_SET_BUFFER) {
            FAIL("device_memory.action %" PRIu64 " while loading", val);
        }
        need_stop("device_memory SET_BUFFER");
        if (!fake.set_open) {
            FAIL("device_memory SET_BUFFER without an open data set");
        }
        if (fake.pos != fake.next_pos) {
            FAIL("device_memory SET_BUFFER at pos %" PRIu64 ", expected %"
                 PRIu64, fake.pos, fake.next_pos);
        }
        chunk = MIN(fake.size[R_MEMORY], fake.set_size - fake.pos);
        if (!fake.mapped[R_MEMORY] && fake.mem_filled < chunk) {
            FAIL("device_memory SET_BUFFER with %" PRIu64 " of %" PRIu64
                 " bytes written", fake.mem_filled, chunk);
        }
        g_byte_array_append(fake.rx, fake.buf[R_MEMORY], chunk);
        fake.next_pos += chunk;
        fake.mem_filled = 0;
        if (fake.next_pos == fake.set_size) {
            fake.set_open = false;
            fake.sets_loaded++;
            fake.rx_done = fake.rx->len;
        }
        return 0;
    }
    case 40:
        need_stop("device_memory.size");
        if (fake.set_open) {
            /* the interface: a new size replaces an incomplete set */
        }
        if (val == 0) {
            FAIL("device_memory.size 0");
        }
        if (val > FAKE_MAX_SET) {
            return -EINVAL;
        }
        g_byte_array_set_size(fake.rx, fake.rx_done);
        fake.set_open = true;
        fake.set_size = val;
        fake.next_pos = 0;
        fake.mem_filled = 0;
        return 0;
    case 48:
        need_stop("device_memory.pos");
        if (!fake.set_open || val >= fake.set_size ||
            val % fake.size[R_MEMORY]) {
            FAIL("device_memory.pos %" PRIu64 " (set %s, %" PRIu64
                 " bytes)", val, fake.set_open ? "open" : "closed",
                 fake.set_size);
        }
        fake.pos = val;
        return 0;
    default:
        FAIL("control write of 0x%" PRIx64 " at %lld while loading", val,
             (long long)off);
    }
}

static int fake_region_read(VFIODevice *vdev, uint8_t nr, off_t off,
                            uint32_t size, void *data)
{
    check_access(nr, off, size);
    if (nr == R_CTL) {
        uint64_t v;

        check_ctl(off, size, false);
        if (fake_fail()) {
            return -EIO;
        }
        v = cpu_to_le64(ctl_value(off));
        if (size == 4) {
            uint32_t v32 = cpu_to_le32(ctl_value(off));

            memcpy(data, &v32, 4);
        } else {
            memcpy(data, &v, 8);
        }
        return size;
    }
    if (fake_fail()) {
        return -EIO;
    }
    if (fake.short_xfer && size > 1) {
        size /= 2;
    }
    memcpy(data, fake.buf[nr] + off, size);
    return size;
}

static int fake_region_write(VFIODevice *vdev, uint8_t nr, off_t off,
                             uint32_t size, void *data, bool post)
{
    check_access(nr, off, size);
    if (nr == R_CTL) {
        uint64_t v = 0;
        int ret;

        check_ctl(off, size, true);
        memcpy(&v, data, size);
        v = le64_to_cpu(v);
        if (fake_fail()) {
            return -EIO;
        }
        ret = ctl_write(off, v);
        return ret ? ret : size;
    }
    if (nr == R_VERSION) {
        const char *s = data;

        if (off != 0 || !memchr(s, 0, size) || strlen(s) + 1 != size) {
            FAIL("migration_version write of %u bytes at %lld", size,
                 (long long)off);
        }
        if (fake_fail()) {
            return -EIO;
        }
        fake.version_ok = !fake.refuse_version;
        return fake.refuse_version ? -EPERM : size;
    }
    if (fake_fail()) {
        return -EIO;
    }
    if (fake.short_xfer && size > 1) {
        size /= 2;
    }
    if (nr == R_CONFIG) {
        need_stop("device_config data");
        if (!fake.cfg_size_set) {
            FAIL("device_config data before its size");
        }
        if (off <= fake.cfg_filled) {
            fake.cfg_filled = MAX(fake.cfg_filled, off + size);
        }
    } else if (nr == R_MEMORY) {
        need_stop("device_memory data");
        if (!fake.set_open) {
            FAIL("device_memory data without an open data set");
        }
        if (off <= fake.mem_filled) {
            fake.mem_filled = MAX(fake.mem_filled, off + size);
        }
    } else {
        FAIL("write to region %u while loading", nr);
    }
    memcpy(fake.buf[nr] + off, data, size);
    return size;
}

static void *fake_mmap(void *addr, size_t len, int prot, int flags, int fd,
                       off_t off)
{
    int nr = fd - 1000;

    if (nr < 0 || nr >= R_NUM || !fake.mmappable[nr] || off != 0 ||
        len != fake.size[nr] || fake.mapped[nr]) {
        FAIL("mmap of fd %d, %zu bytes at %lld", fd, len, (long long)off);
    }
    fake.mapped[nr] = true;
    return fake.buf[nr];
}

static int fake_munmap(void *addr, size_t len)
{
    int nr;

    for (nr = 0; nr < R_NUM; nr++) {
        if (fake.mapped[nr] && addr == fake.buf[nr]) {
            fake.mapped[nr] = false;
            return 0;
        }
    }
    FAIL("munmap of %p", addr);
}

int vfio_device_get_region_info(VFIODevice *vbasedev, int index,
                                struct vfio_region_info **info)
{
    if (index < 0 || index >= R_NUM || !fake.size[index]) {
        return -EINVAL;
    }
    *info = &fake.info[index];
    return 0;
}

int vfio_device_get_region_info_type(VFIODevice *vbasedev, uint32_t type,
                                     uint32_t subtype,
                                     struct vfio_region_info **info)
{
    int i;

    for (i = 0; i < R_NUM; i++) {
        if (fake.size[i] && type == VFIO_REGION_TYPE_DEVICE_STATE &&
            subtype_of[i] == subtype) {
            *info = &fake.info[i];
            return 0;
        }
    }
    return -ENODEV;
}

struct vfio_info_cap_header *
vfio_get_region_info_cap(struct vfio_region_info *info, uint16_t id)
{
    return NULL;
}

int vfio_device_get_region_fd(VFIODevice *vbasedev, int index)
{
    return 1000 + index;
}

Object *object_dynamic_cast(Object *obj, const char *typename)
{
    return obj == OBJECT(&fake_qdev) ? OBJECT(&fake_pci) : NULL;
}

/* The PCI config part of the stream: a be32 length and that many bytes */
static int fake_load_config(VFIODevice *vdev, QEMUFile *f)
{
    uint32_t len = qemu_get_be32(f);
    uint8_t buf[64];

    if (qemu_file_get_error(f) || len > sizeof(buf)) {
        return -EINVAL;
    }
    qemu_get_buffer(f, buf, len);
    return qemu_file_get_error(f);
}

static VFIODeviceIOOps fake_io_ops = {
    .region_read = fake_region_read,
    .region_write = fake_region_write,
};

static VFIODeviceOps fake_ops_config = {
    .vfio_load_config = fake_load_config,
};

static VFIODeviceOps fake_ops_none;

static const uint64_t config_sizes[] = { 4096, 256, 16, 1 };
static const uint64_t memory_sizes[] = { 64 * KiB, 4 * KiB, 3000, 1 * MiB };

static void fake_create(const uint8_t opts[4])
{
    int i;

    for (i = 0; i < R_NUM; i++) {
        g_free(fake.buf[i]);
    }
    if (fake.rx) {
        g_byte_array_free(fake.rx, TRUE);
        g_byte_array_free(fake.cfg_rx, TRUE);
    }
    memset(&fake, 0, sizeof(fake));
    fake.rx = g_byte_array_new();
    fake.cfg_rx = g_byte_array_new();
    fake.size[R_CTL] = sizeof(struct vfio_device_state_ctl);
    fake.size[R_CONFIG] = config_sizes[opts[1] & 3];
    if (!(opts[0] & 8)) {
        fake.caps |= VFIO_DEVICE_DATA_CAP_DEVICE_MEMORY;
        fake.size[R_MEMORY] = memory_sizes[(opts[1] >> 2) & 3];
    }
    if (!(opts[0] & 4)) {
        fake.size[R_VERSION] = sizeof(FAKE_VERSION);
    }
    fake.mmappable[R_CONFIG] = opts[0] & 1;
    fake.mmappable[R_MEMORY] = opts[0] & 2;
    fake.short_xfer = opts[0] & 0x20;
    fake.refuse_version = opts[0] & 0x40;
    fake.refuse_config = opts[0] & 0x80;
    for (i = 0; i < R_NUM; i++) {
        struct vfio_region_info *info = &fake.info[i];

        if (!fake.size[i]) {
            continue;
        }
        fake.buf[i] = g_malloc0(fake.size[i]);
        info->argsz = sizeof(*info);
        info->index = i;
        info->size = fake.size[i];
        info->flags = VFIO_REGION_INFO_FLAG_READ | VFIO_REGION_INFO_FLAG_WRITE |
                      (fake.mmappable[i] ? VFIO_REGION_INFO_FLAG_MMAP : 0);
    }
    if (fake.size[R_VERSION]) {
        memcpy(fake.buf[R_VERSION], FAKE_VERSION, sizeof(FAKE_VERSION));
    }
    fake.state = VFIO_DEVICE_DATA_STATE_RUNNING;
}

static void fake_pci_init(void)
{
    fake_pci.config = fake_pci_config;
    pci_set_word(fake_pci_config + PCI_VENDOR_ID, 0x1b36);
    pci_set_word(fake_pci_config + PCI_DEVICE_ID, 0x0015);
    pci_set_word(fake_pci_config + PCI_SUBSYSTEM_VENDOR_ID, 0x1af4);
    pci_set_word(fake_pci_config + PCI_SUBSYSTEM_ID, 0x1100);
}

/*
 * An independent reading of the first @len bytes of a stream that loaded
 * without error: the bytes of its chunks and of its last device config.
 */
static void reference_parse(const uint8_t *p, size_t len, GByteArray *chunks,
                            GByteArray *cfg)
{
    QEMUFile f = { .buf = p, .len = len };

    while (f.pos < len) {
        uint64_t tag = qemu_get_be64(&f), n;

        switch (tag) {
        case VFIO_DS_FLAG_HEADER:
            f.pos += 4 + 4 + 8 * 3 + 2 * 4;
            n = qemu_get_be32(&f);
            f.pos += n;
            break;
        case VFIO_DS_FLAG_MEM_SET:
            qemu_get_be64(&f);
            break;
        case VFIO_DS_FLAG_MEM_CHUNK:
            qemu_get_be64(&f);
            n = qemu_get_be64(&f);
            g_byte_array_append(chunks, p + f.pos, n);
            f.pos += n;
            break;
        case VFIO_DS_FLAG_DEV_CONFIG:
            n = qemu_get_be64(&f);
            g_byte_array_set_size(cfg, 0);
            g_byte_array_append(cfg, p + f.pos, n);
            f.pos += n;
            break;
        case VFIO_DS_FLAG_PCI_CONFIG:
            n = qemu_get_be32(&f);
            f.pos += n;
            break;
        case VFIO_MIG_FLAG_END_OF_STATE:
            break;
        default:
            FAIL("reference parser: tag 0x%" PRIx64 " in a loaded stream",
                 tag);
        }
        if (f.err || f.pos > len) {
            FAIL("reference parser: loaded stream is truncated");
        }
    }
}

/* Run the backend's load over @stream; returns the device for checks */
static int run_load(const uint8_t opts[4], const uint8_t *stream, size_t len)
{
    VFIODevice vbasedev = {
        .name = (char *)"fuzz",
        .io_ops = &fake_io_ops,
        .ops = (opts[0] & 0x10) ? &fake_ops_none : &fake_ops_config,
        .dev = &fake_qdev,
    };
    VFIOMigration migration = { .vbasedev = &vbasedev };
    QEMUFile f = { .buf = stream, .len = len };
    unsigned sections = (opts[3] & 3) + 1, i;
    Error *err = NULL;
    VFIODevstate *ds;
    int ret;

    fake_create(opts);
    fake.fail_at = opts[2];
    vbasedev.migration = &migration;
    approvals = 0;
    ret = vfio_devstate_probe(&vbasedev, &ds, &err);
    if (ret <= 0) {
        /* Only an injected fault may make the probe fail. */
        if (!fake.fail_at || fake.accesses < fake.fail_at) {
            FAIL("probe of a valid device failed: %s",
                 err ? err->msg : "no device-state regions");
        }
        error_free(err);
        return ret;
    }
    migration.devstate = ds;
    if (!ds->memory.mmap != !fake.mapped[R_MEMORY] ||
        !ds->config.mmap != !fake.mapped[R_CONFIG]) {
        FAIL("backend and device disagree on the mmaps");
    }
    ret = vfio_ds_load_setup(&f, &vbasedev, &err);
    error_free(err);
    err = NULL;
    for (i = 0; !ret && i < sections; i++) {
        ret = vfio_ds_load_state(&f, &vbasedev, 1);
        /* A successful section leaves no data set half handed over. */
        if (!ret && ds->load_dev_pos > ds->load_pos) {
            FAIL("handed %" PRIu64 " bytes over, received %" PRIu64,
                 ds->load_dev_pos, ds->load_pos);
        }
    }
    if (!ret && ds->load_done) {
        /* A load that succeeded handed the device all of its state. */
        if (ds->load_set_open || fake.set_open) {
            FAIL("load done with a data set open (backend %d, device %d)",
                 ds->load_set_open, fake.set_open);
        }
        if (!fake.cfg_loaded) {
            FAIL("load done without the device config");
        }
        /* The device got exactly the bytes of the stream, in order. */
        {
            g_autoptr(GByteArray) chunks = g_byte_array_new();
            g_autoptr(GByteArray) cfg = g_byte_array_new();

            reference_parse(stream, f.pos, chunks, cfg);
            if (chunks->len != fake.rx->len || (chunks->len &&
                memcmp(chunks->data, fake.rx->data, chunks->len))) {
                FAIL("device memory differs from the stream (%u vs %u "
                     "bytes)", fake.rx->len, chunks->len);
            }
            if (cfg->len != fake.cfg_rx->len || (cfg->len &&
                memcmp(cfg->data, fake.cfg_rx->data, cfg->len))) {
                FAIL("device config differs from the stream");
            }
        }
    }
    if (verbose) {
        fprintf(stderr, "load: ret %d, done %d, %u data sets loaded\n", ret,
                ds->load_done, fake.sets_loaded);
    }
    if (approvals > 1) {
        FAIL("switchover approved %d times", approvals);
    }
    if (approvals && !ds->header_loaded) {
        FAIL("switchover approved without a header");
    }
    vfio_ds_load_cleanup(&vbasedev);
    if (!ds->load_done && fake.state == VFIO_DEVICE_DATA_STATE_STOP &&
        !fake.fail_at) {
        FAIL("an abandoned load left the device in STOP");
    }
    vfio_devstate_free(ds);
    for (i = 0; i < R_NUM; i++) {
        if (fake.mapped[i]) {
            FAIL("region %u still mapped after free", i);
        }
    }
    return ret;
}

/* ---------------------------------------------------------------------- */
/* Seeds: streams as the source writes them */

static void seed_header(QEMUFile *f, uint32_t caps, uint64_t cfg, uint64_t mem,
                        bool version)
{
    size_t vlen = version ? strlen(FAKE_VERSION) : 0;

    qemu_put_be64(f, VFIO_DS_FLAG_HEADER);
    qemu_put_be32(f, VFIO_DEVICE_STATE_INTERFACE_VERSION);
    qemu_put_be32(f, caps);
    qemu_put_be64(f, cfg);
    qemu_put_be64(f, mem);
    qemu_put_be64(f, 0);
    qemu_put_be16(f, 0x1b36);
    qemu_put_be16(f, 0x0015);
    qemu_put_be16(f, 0x1af4);
    qemu_put_be16(f, 0x1100);
    qemu_put_be32(f, vlen);
    qemu_put_buffer(f, (const uint8_t *)FAKE_VERSION, vlen);
    qemu_put_be64(f, VFIO_MIG_FLAG_END_OF_STATE);
}

static void seed_set(QEMUFile *f, uint64_t size, uint64_t chunk, uint8_t fill)
{
    g_autofree uint8_t *buf = g_malloc(chunk);
    uint64_t pos;

    memset(buf, fill, chunk);
    qemu_put_be64(f, VFIO_DS_FLAG_MEM_SET);
    qemu_put_be64(f, size);
    for (pos = 0; pos < size; pos += chunk) {
        uint64_t n = MIN(chunk, size - pos);

        qemu_put_be64(f, VFIO_DS_FLAG_MEM_CHUNK);
        qemu_put_be64(f, pos);
        qemu_put_be64(f, n);
        qemu_put_buffer(f, buf, n);
    }
}

static void write_seed(const char *dir, const char *name, uint8_t o0,
                       uint8_t o1, uint8_t sections, GByteArray *s)
{
    g_autofree char *path = g_strdup_printf("%s/%s", dir, name);
    g_autoptr(GByteArray) all = g_byte_array_new();
    uint8_t opts[4] = { o0, o1, 0, sections };

    g_byte_array_append(all, opts, 4);
    g_byte_array_append(all, s->data, s->len);
    if (!g_file_set_contents(path, (char *)all->data, all->len, NULL)) {
        fprintf(stderr, "cannot write %s\n", path);
        exit(1);
    }
}

static void make_seeds(const char *dir)
{
    /* opts[1] 0x5: config 256, memory 4 KiB; 0: config 4 KiB, memory 64 */
    static const struct {
        const char *name;
        uint8_t o0, o1;
        uint64_t src_chunk, set1, set2, cfg;
    } seeds[] = {
        { "rw-4k", 0x00, 0x05, 4096, 10000, 4096, 200 },
        { "mmap-4k", 0x03, 0x05, 4096, 10000, 100, 256 },
        { "rechunk-64k-to-4k", 0x00, 0x05, 65536, 70000, 1, 1 },
        { "rechunk-4k-to-64k", 0x02, 0x00, 4096, 70000, 8192, 4096 },
        { "short-xfer", 0x20, 0x0d, 3000, 9001, 3000, 17 },
        { "noversion", 0x04, 0x05, 4096, 5000, 1, 64 },
    };
    unsigned i;

    for (i = 0; i < ARRAY_SIZE(seeds); i++) {
        g_autoptr(GByteArray) s = g_byte_array_new();
        QEMUFile f = { .out = s };
        g_autofree uint8_t *cfg = g_malloc0(seeds[i].cfg);

        /* setup section, one iteration, complete */
        seed_header(&f, VFIO_DEVICE_DATA_CAP_DEVICE_MEMORY, 256 << (i % 3),
                    seeds[i].src_chunk, !(seeds[i].o0 & 4));
        seed_set(&f, seeds[i].set1, seeds[i].src_chunk, 0x11);
        qemu_put_be64(&f, VFIO_MIG_FLAG_END_OF_STATE);
        seed_set(&f, seeds[i].set2, seeds[i].src_chunk, 0x22);
        qemu_put_be64(&f, VFIO_DS_FLAG_DEV_CONFIG);
        qemu_put_be64(&f, seeds[i].cfg);
        qemu_put_buffer(&f, cfg, seeds[i].cfg);
        qemu_put_be64(&f, VFIO_DS_FLAG_PCI_CONFIG);
        qemu_put_be32(&f, 4);
        qemu_put_be32(&f, 0xdeadbeef);
        qemu_put_be64(&f, VFIO_MIG_FLAG_END_OF_STATE);
        write_seed(dir, seeds[i].name, seeds[i].o0, seeds[i].o1, 2, s);
    }
    /* a device without device memory: header, config only */
    {
        g_autoptr(GByteArray) s = g_byte_array_new();
        QEMUFile f = { .out = s };
        uint8_t cfg[16] = { 1, 2, 3 };

        seed_header(&f, 0, 16, 0, true);
        qemu_put_be64(&f, VFIO_DS_FLAG_DEV_CONFIG);
        qemu_put_be64(&f, sizeof(cfg));
        qemu_put_buffer(&f, cfg, sizeof(cfg));
        qemu_put_be64(&f, VFIO_DS_FLAG_PCI_CONFIG);
        qemu_put_be32(&f, 0);
        qemu_put_be64(&f, VFIO_MIG_FLAG_END_OF_STATE);
        write_seed(dir, "config-only", 0x08, 0x02, 1, s);
    }
    /*
     * Streams that end before the state does; the load must fail (it
     * once succeeded with the device config missing or a data set cut).
     */
    for (i = 0; i < 3; i++) {
        g_autoptr(GByteArray) s = g_byte_array_new();
        QEMUFile f = { .out = s };
        uint8_t cfg[4] = { 1, 2, 3, 4 };

        seed_header(&f, VFIO_DEVICE_DATA_CAP_DEVICE_MEMORY, 256, 4096, true);
        if (i == 1) {           /* a data set cut short */
            qemu_put_be64(&f, VFIO_DS_FLAG_DEV_CONFIG);
            qemu_put_be64(&f, sizeof(cfg));
            qemu_put_buffer(&f, cfg, sizeof(cfg));
            seed_set(&f, 4096, 4096, 0x33);
            qemu_put_be64(&f, VFIO_DS_FLAG_MEM_SET);
            qemu_put_be64(&f, 8192);
        }
        if (i == 2) {           /* config, PCI config, then a data set */
            qemu_put_be64(&f, VFIO_DS_FLAG_DEV_CONFIG);
            qemu_put_be64(&f, sizeof(cfg));
            qemu_put_buffer(&f, cfg, sizeof(cfg));
            qemu_put_be64(&f, VFIO_DS_FLAG_PCI_CONFIG);
            qemu_put_be32(&f, 0);
            seed_set(&f, 4096, 4096, 0x44);
        } else {                /* 0: no device config at all */
            qemu_put_be64(&f, VFIO_DS_FLAG_PCI_CONFIG);
            qemu_put_be32(&f, 0);
        }
        qemu_put_be64(&f, VFIO_MIG_FLAG_END_OF_STATE);
        write_seed(dir, i == 0 ? "bad-no-config" : i == 1 ? "bad-half-set" :
                   "bad-set-after-end", 0x00, 0x05, 1, s);
    }
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    const char *dir = getenv("VFIO_DS_FUZZ_SEEDS");

    verbose = getenv("VFIO_DS_FUZZ_VERBOSE");
    mmap_hook = fake_mmap;
    munmap_hook = fake_munmap;
    fake_pci_init();
    if (dir) {
        g_mkdir_with_parents(dir, 0755);
        make_seeds(dir);
    }
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 4) {
        return 0;
    }
    run_load(data, data + 4, size - 4);
    return 0;
}
