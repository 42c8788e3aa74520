/*
 * libFuzzer target for the incoming migration stream of the VFIO
 * device-state backend (hw/vfio/migration-devstate*.c)
 *
 * The real backend is #included: it is a unit harness, one translation
 * unit with stubs for the rest of QEMU, which needs the backend's static
 * handlers and state (VFIODevstate is private to it).  QEMUFile is a
 * small in-memory reader.  The device is a fake whose regions are heap
 * buffers of exactly their advertised size (so ASan sees any
 * out-of-bounds access, also through the "mmap" of a data region, which
 * returns the buffer itself) and which aborts when QEMU breaks a rule of
 * the interface (linux-headers/linux/vfio.h, docs/devel/migration/
 * vfio-devstate.rst), second edition: a bad region index, offset or size,
 * a misaligned or mixed-width control access, a write to a read-only
 * field (pos and pending among them), a data-region access larger than
 * the transport allows, SET_BUFFER before the data was written, loading
 * outside STOP, an invalid device_state, leaving STOP with a partly
 * loaded state other than by a reset, ...  It also aborts when the
 * backend breaks a rule of the stream: a load that "succeeds" without all
 * of the state, a data set after the config or while another is open, a
 * second config, data sets misnumbered or miscounted, an incomplete load
 * without a reset, a load error that does not name the device or does not
 * reach the stream.
 *
 * Input: 4 bytes of device options, then the section payloads:
 *   byte 0: bit 0 config region mmappable, bit 1 memory region mmappable,
 *           bit 2 no migration_version region, bit 3 no device memory,
 *           bit 4 no vfio_load_config op, bit 5 data-region transfers are
 *           short (half), bit 6 the device refuses the source's version,
 *           bit 7 the device refuses the config blob
 *   byte 1: bits 0-1 config region size (4096, 256, 16, 1), bits 2-3
 *           memory region size (65536, 4096, 3000, 1 MiB), bits 4-5 the
 *           transport's region_max_xfer (none, 4096, 1000, 65536), bit 6
 *           CAP_P2P, bit 7 no switchover-ack
 *   byte 2: fail the Nth device access with EIO (0: never)
 *   byte 3: bits 0-2 number of sections (vfio_ds_load_state() calls, 1-8),
 *           bit 3 multifd device state transfer
 *   rest:   the stream, read by the sections in turn; with multifd, then
 *           the device state buffers as the load thread of
 *           migration-multifd.c hands them over, in order, each a be32
 *           (bit 31: the last buffer, bits 0-30: its length, cut to what
 *           is left) and its bytes, up to the last one
 *
 * The source writes, for one device: a setup section (HEADER), iterable
 * sections (data sets: MEM_SET with its be32 number and be64 size, then
 * MEM_CHUNKs; a set may span sections), the complete section (the rest of
 * the device memory, then DEV_CONFIG with the be32 count of data sets
 * sent) and a non-iterable section (PCI_CONFIG, when the device has one);
 * each ends with END_OF_STATE.  With multifd transfer the complete and
 * non-iterable sections hold only END_OF_STATE, and the stop-and-copy
 * state comes in buffers: data buffers of one chunk each (MEM_SET when it
 * opens a set, MEM_CHUNK, END_OF_STATE), then the last buffer (DEV_CONFIG,
 * PCI_CONFIG, END_OF_STATE).
 *
 * It needs neither a guest nor a vfio device, and runs thousands of
 * streams a second.  Built by meson twice: with libFuzzer in a
 * --enable-fuzzing build, and with tests/fuzz-replay.c as the meson test
 * vfio-devstate-stream-fuzz, which replays the seeds (valid migrations
 * made as the source makes them; each must load completely) and corrupt
 * streams (each must be refused).  $VFIO_DS_FUZZ_SEEDS=DIR writes them to
 * DIR, $VFIO_DS_FUZZ_VERBOSE=1 prints the backend's errors.
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 */

#include "qemu/osdep.h"
#include <sys/mman.h>
#include "qapi/error.h"
#include "fuzz-replay.h"

/* Set to the fake device's by LLVMFuzzerInitialize() */
static void *(*mmap_hook)(void *addr, size_t len, int prot, int flags, int fd,
                          off_t off);
static int (*munmap_hook)(void *addr, size_t len);
#define mmap(...) mmap_hook(__VA_ARGS__)
#define munmap(...) munmap_hook(__VA_ARGS__)

/* No tracing: the generated tracers need the trace and log subsystems. */
#define TRACE_HW_VFIO_GENERATED_TRACERS_H
static inline void trace_nop(const char *name, ...)
{
}
#define TRACE_NOP(...) trace_nop(__VA_ARGS__)
#define trace_vfio_ds_bitmap_query TRACE_NOP
#define trace_vfio_ds_bitmap_query_done TRACE_NOP
#define trace_vfio_ds_ctl_read TRACE_NOP
#define trace_vfio_ds_ctl_write TRACE_NOP
#define trace_vfio_ds_load_abandoned TRACE_NOP
#define trace_vfio_ds_load_chunk TRACE_NOP
#define trace_vfio_ds_load_config TRACE_NOP
#define trace_vfio_ds_load_header TRACE_NOP
#define trace_vfio_ds_load_ids TRACE_NOP
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
#include "../../hw/vfio/migration-devstate-save.c"
#include "../../hw/vfio/migration-devstate-load.c"

#undef mmap
#undef munmap

#define FAIL(...) do { \
        fprintf(stderr, "interface violation: " __VA_ARGS__); \
        fputc('\n', stderr); \
        abort(); \
    } while (0)

/* How the fake device's messages name it: qdev id (PCI address) */
#define FAKE_QDEV_ID    "fuzz0"
#define FAKE_PCI_PATH   "0000:00:04.0"
#define FAKE_DEV_NAME   FAKE_QDEV_ID " (" FAKE_PCI_PATH ")"

static bool verbose;

/* ---------------------------------------------------------------------- */
/* QEMUFile: an in-memory reader (and a writer, for the seeds) */

struct QEMUFile {
    const uint8_t *buf;
    size_t len, pos;
    int err;
    char *err_msg;              /* the Error that came with err, if any */
    unsigned err_obj_calls;     /* qemu_file_set_error_obj() calls */
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
    if (n) {
        memcpy(buf, f->buf + f->pos, n);
    }
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

static void G_GNUC_PRINTF(3, 0)
error_setv(Error **errp, int os_errno, const char *fmt, va_list ap)
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

void error_report_err(Error *err)
{
    if (err && verbose) {
        fprintf(stderr, "error: %s\n", err->msg);
    }
    error_free(err);
}

void error_propagate(Error **dst_errp, Error *local_err)
{
    if (dst_errp && !*dst_errp) {
        *dst_errp = local_err;
    } else {
        error_free(local_err);
    }
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

/*
 * As migration/qemu-file.c: the first error of a stream sticks, with its
 * Error; a later one is only reported.  Every Error of the loader must
 * name the device as the user knows it (qdev id and PCI address).
 */
void qemu_file_set_error_obj(QEMUFile *f, int ret, Error *err)
{
    f->err_obj_calls++;
    if (err && !g_str_has_prefix(err->msg, FAKE_DEV_NAME ": ")) {
        FAIL("load error does not name the device as " FAKE_DEV_NAME
             ": '%s'", err->msg);
    }
    if (!ret) {
        FAIL("qemu_file_set_error_obj() without an error (%s)",
             err ? err->msg : "no Error");
    }
    if (!f->err) {
        f->err = ret;
        g_free(f->err_msg);
        f->err_msg = err ? g_strdup(err->msg) : NULL;
        error_free(err);
    } else {
        error_report_err(err);
    }
}

void qemu_file_set_error(QEMUFile *f, int ret)
{
    if (!f->err) {
        f->err = ret;
    }
}

void migration_file_set_error(int ret, Error *err)
{
    error_free(err);
}

static bool switchover_ack;

bool migrate_switchover_ack(void) { return switchover_ack; }
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

static unsigned vmstop_requests;

void qemu_system_vmstop_request_prepare(void) { }

void qemu_system_vmstop_request(RunState reason)
{
    vmstop_requests++;
}

static int approvals;

int qemu_loadvm_approve_switchover(void)
{
    approvals++;
    return 0;
}

/*
 * Multifd device state transfer: migration-devstate-multifd.c is not part
 * of this harness (it needs the multifd channels and QIOChannelBuffer);
 * run_load() hands the buffers to its parsers as that file does.
 */
static bool multifd;

bool vfio_multifd_setup(VFIODevice *vbasedev, bool alloc_multifd,
                        Error **errp)
{
    return true;
}
void vfio_multifd_cleanup(VFIODevice *vbasedev) { }
bool vfio_multifd_transfer_enabled(VFIODevice *vbasedev) { return multifd; }
bool vfio_multifd_transfer_supported(void) { return false; }
bool vfio_load_config_after_iter(VFIODevice *vbasedev) { return false; }
void vfio_multifd_emit_dummy_eos(VFIODevice *vbasedev, QEMUFile *f)
{
    abort();
}
int vfio_load_state_config_load_ready(VFIODevice *vbasedev)
{
    return -EINVAL;
}
bool vfio_multifd_load_state_buffer(void *opaque, char *data, size_t len,
                                    Error **errp)
{
    abort();
}
bool vfio_ds_save_complete_precopy_thread(SaveCompletePrecopyThreadData *d,
                                          Error **errp)
{
    abort();
}
int vfio_ds_switchover_start(void *opaque) { abort(); }
bool vfio_ds_multifd_load_buffer(VFIODevice *vbasedev, char *data, size_t len,
                                 bool config, Error **errp)
{
    abort();
}

/* The backend mirrors the device's state in VFIOMigration::device_state */
void vfio_migration_set_device_state(VFIODevice *vbasedev,
                                     enum vfio_device_mig_state state)
{
    vbasedev->migration->device_state = state;
}

char *qdev_get_dev_path(DeviceState *dev)
{
    return g_strdup(FAKE_PCI_PATH);
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
    uint64_t max_xfer;          /* the transport's, 0: none */
    unsigned accesses, fail_at;

    uint32_t state, caps;
    unsigned resets;
    /* device_config */
    uint64_t cfg_size;
    uint64_t cfg_filled;        /* bytes [0, n) written since size */
    bool cfg_size_set;
    bool cfg_loaded;            /* a config was applied: the state is in */
    /* device_memory */
    bool set_open;
    uint64_t set_size, pos;     /* pos: read-only, advanced by SET_BUFFER */
    uint64_t mem_filled;        /* bytes [0, n) written since SET_BUFFER */
    bool version_ok;
    GByteArray *rx;             /* bytes of the data sets, as handed over */
    unsigned rx_done;           /* ... of the complete ones */
    GByteArray *cfg_rx;         /* the config the device accepted */
    unsigned sets_loaded;
} FakeDev;

static FakeDev fake;
static PCIDevice fake_pci;
static uint8_t fake_pci_config[PCI_CONFIG_SPACE_SIZE];
static DeviceState fake_qdev = { .id = (char *)FAKE_QDEV_ID };
static VFIODevice *fake_vbasedev;

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
    if (nr != R_CTL && fake.max_xfer && size > fake.max_xfer) {
        FAIL("access of %u bytes to region %u, the transport allows %"
             PRIu64, size, nr, fake.max_xfer);
    }
}

/* Control-region fields (second edition): offset, width, access */
enum { F_RO = 1, F_WO = 2, F_RW = 3 };

static const struct {
    unsigned off, width, access;
    const char *name;
} ctl_fields[] = {
    { 0, 4, F_RO, "version" },
    { 4, 4, F_RW, "device_state" },
    { 8, 4, F_RO, "caps" },
    { 12, 4, F_RO, "reserved" },
    { 16, 4, F_WO, "device_config.action" },
    { 24, 8, F_RW, "device_config.size" },
    { 32, 4, F_WO, "device_memory.action" },
    { 40, 8, F_RW, "device_memory.size" },
    { 48, 8, F_RO, "device_memory.pos" },
    { 56, 8, F_RO, "device_memory.pending" },
    { 64, 8, F_WO, "system_memory.start_pfn" },
    { 72, 8, F_WO, "system_memory.page_nr" },
    { 80, 4, F_WO, "system_memory.action" },
    { 84, 4, F_RO, "system_memory.page_shift" },
};

static void check_ctl(off_t off, uint32_t size, bool write)
{
    unsigned i;

    for (i = 0; i < ARRAY_SIZE(ctl_fields); i++) {
        if (ctl_fields[i].off == off) {
            if (ctl_fields[i].width != size) {
                FAIL("control access of %u bytes to %s, a %u-byte field",
                     size, ctl_fields[i].name, ctl_fields[i].width);
            }
            if (!(ctl_fields[i].access & (write ? F_WO : F_RO))) {
                FAIL("%s of %s, which is %s", write ? "write" : "read",
                     ctl_fields[i].name,
                     write ? "read-only" : "write-only");
            }
            return;
        }
    }
    FAIL("control access of %u bytes at %lld is not a field", size,
         (long long)off);
}

static uint64_t ctl_value(off_t off)
{
    switch (off) {
    case 0:
        return VFIO_DEVICE_DATA_INTERFACE_VERSION;
    case 4:
        return fake.state;
    case 8:
        return fake.caps;
    case 24:
        return fake.cfg_size;
    case 40:
        /*
         * Reading size opens a data set to save (section 5): a loader has
         * no business doing it.
         */
        FAIL("read of device_memory.size on a destination");
    case 48:
        return fake.pos;
    case 56:
        return 0;               /* no logging session: nothing pending */
    case 84:
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
    /* Compatibility is settled before any device data (section 7). */
    if (fake.size[R_VERSION] && !fake.version_ok) {
        FAIL("%s before the device accepted the migration_version", what);
    }
}

/* A reset: RUNNING, no data set, nothing of a load kept (section 3) */
static void fake_reset(void)
{
    fake.resets++;
    fake.state = VFIO_DEVICE_DATA_STATE_RUNNING;
    fake.set_open = false;
    fake.pos = 0;
    fake.cfg_size_set = false;
    fake.cfg_loaded = false;
    fake.sets_loaded = 0;
    fake.rx_done = 0;
    g_byte_array_set_size(fake.rx, 0);
    g_byte_array_set_size(fake.cfg_rx, 0);
}

static void fake_set_state(uint64_t val)
{
    bool p2p = val & VFIO_DEVICE_DATA_STATE_P2P;

    if ((val & ~(uint64_t)VFIO_DEVICE_DATA_STATE_MASK) ||
        (p2p && (val & VFIO_DEVICE_DATA_STATE_STOP)) ||
        (p2p && !(fake.caps & VFIO_DEVICE_DATA_CAP_P2P))) {
        FAIL("device_state 0x%" PRIx64 " is not a valid state (caps 0x%x)",
             val, fake.caps);
    }
    if (val & VFIO_DEVICE_DATA_STATE_LOGGING) {
        FAIL("device_state 0x%" PRIx64 ": a logging session on a "
             "destination", val);
    }
    if (fake.state == VFIO_DEVICE_DATA_STATE_STOP &&
        val != VFIO_DEVICE_DATA_STATE_STOP &&
        (!fake.cfg_loaded || fake.set_open)) {
        /* Only a reset takes a partly loaded device out of STOP. */
        FAIL("device_state STOP -> 0x%" PRIx64 " with the state partly "
             "loaded (config %s, data set %s)", val,
             fake.cfg_loaded ? "loaded" : "missing",
             fake.set_open ? "open" : "closed");
    }
    fake.state = val;
}

static int ctl_write(off_t off, uint64_t val)
{
    switch (off) {
    case 4:
        fake_set_state(val);
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
        if (fake.set_open) {
            FAIL("device_config SET_BUFFER with %" PRIu64 " of %" PRIu64
                 " bytes of a data set loaded", fake.pos, fake.set_size);
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
        if (fake.cfg_loaded) {
            FAIL("a second device config in one load");
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
        /* The device takes min(R, size - pos) and advances pos itself. */
        chunk = MIN(fake.size[R_MEMORY], fake.set_size - fake.pos);
        if (!fake.mapped[R_MEMORY] && fake.mem_filled < chunk) {
            FAIL("device_memory SET_BUFFER with %" PRIu64 " of %" PRIu64
                 " bytes written", fake.mem_filled, chunk);
        }
        g_byte_array_append(fake.rx, fake.buf[R_MEMORY], chunk);
        fake.pos += chunk;
        fake.mem_filled = 0;
        if (fake.pos == fake.set_size) {
            fake.set_open = false;
            fake.sets_loaded++;
            fake.rx_done = fake.rx->len;
        }
        return 0;
    }
    case 40:
        need_stop("device_memory.size");
        if (val == 0) {
            FAIL("device_memory.size 0");
        }
        if (fake.set_open) {
            FAIL("device_memory.size %" PRIu64 " with %" PRIu64 " of %"
                 PRIu64 " bytes of the previous data set loaded", val,
                 fake.pos, fake.set_size);
        }
        if (fake.cfg_loaded) {
            FAIL("device_memory.size %" PRIu64 " after the device config",
                 val);
        }
        if (val > FAKE_MAX_SET) {
            return -EINVAL;
        }
        fake.set_open = true;
        fake.set_size = val;
        fake.pos = 0;
        fake.mem_filled = 0;
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
        check_ctl(off, size, false);
        if (fake_fail()) {
            return -EIO;
        }
        if (size == 4) {
            uint32_t v32 = cpu_to_le32(ctl_value(off));

            memcpy(data, &v32, 4);
        } else {
            uint64_t v = cpu_to_le64(ctl_value(off));

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
        if (fake.state != VFIO_DEVICE_DATA_STATE_STOP) {
            FAIL("migration_version written outside a load");
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

/*
 * QEMU's reset of the device (hw/vfio/pci.c, vfio_pci_reset): the device
 * resets, then the backend follows it with its reset hook.
 */
void device_cold_reset(DeviceState *dev)
{
    if (dev != &fake_qdev) {
        FAIL("reset of a device that is not the fake");
    }
    fake_reset();
    vfio_devstate_migration_ops.reset(fake_vbasedev);
}

static const uint64_t config_sizes[] = { 4096, 256, 16, 1 };
static const uint64_t memory_sizes[] = { 64 * KiB, 4 * KiB, 3000, 1 * MiB };
static const uint64_t max_xfers[] = { 0, 4096, 1000, 64 * KiB };

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
    if (opts[1] & 0x40) {
        fake.caps |= VFIO_DEVICE_DATA_CAP_P2P;
    }
    if (!(opts[0] & 4)) {
        fake.size[R_VERSION] = sizeof(FAKE_VERSION);
    }
    fake.max_xfer = max_xfers[(opts[1] >> 4) & 3];
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
 * completely: the bytes of its chunks and of its device config, and the
 * rules of the stream the loader must have enforced to accept it.
 */
static void reference_parse(const uint8_t *p, size_t len, GByteArray *chunks,
                            GByteArray *cfg)
{
    QEMUFile f = { .buf = p, .len = len };
    uint32_t sets = 0, n32;
    bool have_cfg = false;

    while (f.pos < len) {
        uint64_t tag = qemu_get_be64(&f), n;

        switch (tag) {
        case VFIO_DS_FLAG_HEADER:
            f.pos += 4 + 4 + 8 * 3 + 2 * 4;
            n = qemu_get_be32(&f);
            f.pos += n;
            break;
        case VFIO_DS_FLAG_MEM_SET:
            n32 = qemu_get_be32(&f);
            qemu_get_be64(&f);
            if (have_cfg) {
                FAIL("loaded a stream with a data set after its config");
            }
            if (n32 != sets + 1) {
                FAIL("loaded a stream whose data set %u is numbered %u",
                     sets + 1, n32);
            }
            sets = n32;
            break;
        case VFIO_DS_FLAG_MEM_CHUNK:
            qemu_get_be64(&f);
            n = qemu_get_be64(&f);
            if (n > len - MIN(len, f.pos)) {
                FAIL("reference parser: loaded stream is truncated");
            }
            g_byte_array_append(chunks, p + f.pos, n);
            f.pos += n;
            break;
        case VFIO_DS_FLAG_DEV_CONFIG:
            n32 = qemu_get_be32(&f);
            n = qemu_get_be64(&f);
            if (have_cfg) {
                FAIL("loaded a stream with two device configs");
            }
            if (n32 != sets) {
                FAIL("loaded a stream that counts %u data sets and has %u",
                     n32, sets);
            }
            if (n > len - MIN(len, f.pos)) {
                FAIL("reference parser: loaded stream is truncated");
            }
            have_cfg = true;
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
    if (!have_cfg) {
        FAIL("loaded a stream without a device config");
    }
}

/* What interface state the backend's mirror must show for the device's */
static bool mirror_matches(uint32_t mirrored)
{
    switch (fake.state) {
    case VFIO_DEVICE_DATA_STATE_RUNNING:
        return mirrored == VFIO_DEVICE_STATE_RUNNING;
    case VFIO_DEVICE_DATA_STATE_P2P:
        return mirrored == VFIO_DEVICE_STATE_RUNNING_P2P;
    case VFIO_DEVICE_DATA_STATE_STOP:
        return mirrored == VFIO_DEVICE_STATE_STOP;
    default:
        return false;
    }
}

static bool last_accepted;
static char last_why[160];

/*
 * With multifd: the device state buffers that follow the sections, as
 * vfio_ds_multifd_load_buffer() takes them (each in a heap buffer of its
 * own size, for ASan), up to and with the last one.  The bytes of those
 * that loaded go to @loaded, for reference_parse().
 */
static int run_load_buffers(VFIODevstate *ds, const uint8_t *p, size_t len,
                            GByteArray *loaded)
{
    const uint8_t *end = p + len;
    bool last = false;
    Error *err = NULL;
    int ret = 0;

    while (!ret && !last && end - p >= 4) {
        uint32_t hdr = ldl_be_p(p);
        size_t n = MIN(hdr & 0x7fffffff, end - p - 4);
        g_autofree uint8_t *buf = g_memdup2(p + 4, n);

        last = hdr >> 31;
        p += 4 + n;
        if (last) {
            QEMUFile bf = { .buf = buf, .len = n };

            ret = vfio_ds_load_config_buffer(&bf, ds, &err);
            g_free(bf.err_msg);
        } else {
            ret = vfio_ds_load_data_buffer(ds, buf, n, &err);
        }
        if (!ret != !err) {
            FAIL("multifd buffer: returned %d, %s an Error", ret,
                 err ? "with" : "without");
        }
        if (ret) {
            /* The load thread's error fails the migration. */
            if (!g_str_has_prefix(err->msg, FAKE_DEV_NAME ": ")) {
                FAIL("load error does not name the device as "
                     FAKE_DEV_NAME ": '%s'", err->msg);
            }
            snprintf(last_why, sizeof(last_why), "multifd buffer: %s",
                     err->msg);
            error_free(err);
            break;
        }
        if (ds->load_dev_pos > ds->load_pos) {
            FAIL("handed %" PRIu64 " bytes over, received %" PRIu64,
                 ds->load_dev_pos, ds->load_pos);
        }
        g_byte_array_append(loaded, buf, n);
    }
    if (!ret && !last) {
        /* The load thread waits for the last buffer: the migration fails. */
        snprintf(last_why, sizeof(last_why), "no last multifd buffer");
        ret = -EINVAL;
    }
    return ret;
}

/*
 * Run the backend's load over @stream as the migration core does:
 * load_setup, load_state per section, load_cleanup, and when every
 * section loaded, the VM start (vmstate prepare and change).
 */
static void run_load(const uint8_t opts[4], const uint8_t *stream, size_t len)
{
    VFIODevice vbasedev = {
        .name = (char *)"/tmp/fuzz.sock",
        .io_ops = &fake_io_ops,
        .ops = (opts[0] & 0x10) ? &fake_ops_none : &fake_ops_config,
        .dev = &fake_qdev,
        .region_max_xfer = max_xfers[(opts[1] >> 4) & 3],
    };
    VFIOMigration migration = {
        .vbasedev = &vbasedev,
        .device_state = VFIO_DEVICE_STATE_RUNNING,
    };
    QEMUFile f = { .buf = stream, .len = len };
    g_autoptr(GByteArray) loaded = g_byte_array_new();
    unsigned sections = (opts[3] & 7) + 1, i;
    Error *err = NULL;
    const VFIOMigrationOps *ops = &vfio_devstate_migration_ops;
    uint64_t mig_flags = 0;
    void *opaque = NULL;
    VFIODevstate *ds;
    bool faults;
    int ret;

    fake_create(opts);
    multifd = opts[3] & 8;
    fake.fail_at = opts[2];
    faults = fake.fail_at != 0;
    switchover_ack = !(opts[1] & 0x80);
    vbasedev.migration = &migration;
    fake_vbasedev = &vbasedev;
    approvals = 0;
    vmstop_requests = 0;
    last_accepted = false;
    ret = ops->probe(&vbasedev, &mig_flags, &opaque, &err);
    if (ret) {
        /* Only an injected fault may make the probe fail. */
        if (!fake.fail_at || fake.accesses < fake.fail_at) {
            FAIL("probe of a valid device failed: %s",
                 err ? err->msg : "no device-state regions");
        }
        snprintf(last_why, sizeof(last_why), "probe failed: %s",
                 err ? err->msg : "?");
        error_free(err);
        return;
    }
    ds = opaque;
    migration.ops = ops;
    migration.opaque = ds;
    if (!(mig_flags & VFIO_MIGRATION_STOP_COPY) ||
        !(mig_flags & VFIO_MIGRATION_P2P) !=
        !(fake.caps & VFIO_DEVICE_DATA_CAP_P2P)) {
        FAIL("probe gave migration flags 0x%" PRIx64 " for caps 0x%x",
             mig_flags, fake.caps);
    }
    if (strcmp(ds->name, FAKE_DEV_NAME)) {
        FAIL("backend names the device '%s', not " FAKE_DEV_NAME, ds->name);
    }
    if (!ds->memory.mmap != !fake.mapped[R_MEMORY] ||
        !ds->config.mmap != !fake.mapped[R_CONFIG]) {
        FAIL("backend and device disagree on the mmaps");
    }
    ret = vfio_ds_load_setup(&f, &vbasedev, &err);
    if (ret) {
        snprintf(last_why, sizeof(last_why), "load_setup: %s",
                 err ? err->msg : "?");
    }
    error_free(err);
    err = NULL;
    for (i = 0; !ret && i < sections; i++) {
        unsigned calls = f.err_obj_calls;

        ret = vfio_ds_load_state(&f, &vbasedev, 1);
        if (ret) {
            /* The loader's reason goes with the stream (query-migrate). */
            if (f.err_obj_calls == calls || !f.err) {
                FAIL("section %u failed (%d) without an error on the "
                     "stream", i + 1, ret);
            }
            snprintf(last_why, sizeof(last_why), "section %u: %s", i + 1,
                     f.err_msg ? f.err_msg : "stream error");
        }
        /* A successful section leaves no data set half handed over. */
        if (!ret && ds->load_dev_pos > ds->load_pos) {
            FAIL("handed %" PRIu64 " bytes over, received %" PRIu64,
                 ds->load_dev_pos, ds->load_pos);
        }
    }
    if (!ret && multifd) {
        g_byte_array_append(loaded, stream, f.pos);
        ret = run_load_buffers(ds, stream + f.pos, len - f.pos, loaded);
    } else if (!ret) {
        g_byte_array_append(loaded, stream, f.pos);
    }
    if (!ret && ds->load_done) {
        g_autoptr(GByteArray) chunks = g_byte_array_new();
        g_autoptr(GByteArray) cfg = g_byte_array_new();

        /* A load that succeeded handed the device all of its state. */
        if (ds->load_set_open || fake.set_open) {
            FAIL("load done with a data set open (backend %d, device %d)",
                 ds->load_set_open, fake.set_open);
        }
        if (!fake.cfg_loaded) {
            FAIL("load done without the device config");
        }
        /* The device got exactly the bytes of the stream, in order. */
        reference_parse(loaded->data, loaded->len, chunks, cfg);
        if (chunks->len != fake.rx->len || (chunks->len &&
            memcmp(chunks->data, fake.rx->data, chunks->len))) {
            FAIL("device memory differs from the stream (%u vs %u "
                 "bytes)", fake.rx->len, chunks->len);
        }
        if (cfg->len != fake.cfg_rx->len || (cfg->len &&
            memcmp(cfg->data, fake.cfg_rx->data, cfg->len))) {
            FAIL("device config differs from the stream");
        }
    } else if (!ret) {
        snprintf(last_why, sizeof(last_why), "%u sections loaded, the "
                 "device's state incomplete", sections);
    }
    if (approvals > 1) {
        FAIL("switchover approved %d times", approvals);
    }
    if (approvals && !ds->header_loaded) {
        FAIL("switchover approved without a header");
    }
    if (approvals && !switchover_ack) {
        FAIL("switchover approved without switchover-ack");
    }

    vfio_ds_load_cleanup(&vbasedev);
    /* An incomplete load resets the device; a complete one does not. */
    if (!ds->load_done && !fake.resets) {
        FAIL("an incomplete load did not reset the device");
    }
    if (ds->load_done && fake.resets) {
        FAIL("a complete load reset the device");
    }
    if (!faults && !mirror_matches(migration.device_state)) {
        FAIL("device is in 0x%x, the backend's mirror says %u", fake.state,
             migration.device_state);
    }

    if (!ret) {
        /*
         * Every section loaded, so the core starts the VM: the backend
         * must refuse it when the device's state did not all arrive.
         */
        if (fake.caps & VFIO_DEVICE_DATA_CAP_P2P) {
            ops->vmstate_change_prepare(&vbasedev, true, RUN_STATE_RUNNING);
        }
        ops->vmstate_change(&vbasedev, true, RUN_STATE_RUNNING);
        if (ds->load_done && vmstop_requests) {
            FAIL("VM start refused after a complete load");
        }
        if (!ds->load_done && !vmstop_requests) {
            FAIL("VM started with the device's state incomplete");
        }
        if (!faults && fake.state != VFIO_DEVICE_DATA_STATE_RUNNING) {
            FAIL("device in 0x%x after the VM start", fake.state);
        }
        if (!faults && !mirror_matches(migration.device_state)) {
            FAIL("device is in 0x%x, the backend's mirror says %u",
                 fake.state, migration.device_state);
        }
    }
    last_accepted = !ret && ds->load_done;
    if (last_accepted) {
        snprintf(last_why, sizeof(last_why), "%u data sets, %u bytes of "
                 "device memory, %u bytes of config", fake.sets_loaded,
                 fake.rx->len, fake.cfg_rx->len);
    }
    if (verbose) {
        fprintf(stderr, "load: ret %d, done %d: %s\n", ret, ds->load_done,
                last_why);
    }
    ops->free(ds);
    for (i = 0; i < R_NUM; i++) {
        if (fake.mapped[i]) {
            FAIL("region %u still mapped after free", i);
        }
    }
    g_free(f.err_msg);
}

bool fuzz_last_accepted(const char **why)
{
    *why = last_why;
    return last_accepted;
}

/* ---------------------------------------------------------------------- */
/* Seeds: streams as the source writes them, and corrupt ones */

typedef struct {
    GByteArray *s;
    QEMUFile f;
    uint32_t sets;              /* data sets sent so far */
    uint64_t chunk;             /* the source's memory region size */
} Src;

static void src_init(Src *src, uint64_t chunk)
{
    src->s = g_byte_array_new();
    src->f = (QEMUFile) { .out = src->s };
    src->sets = 0;
    src->chunk = chunk;
}

/* vfio_ds_save_setup(): the header section */
static void src_setup(Src *src, uint32_t caps, uint64_t cfg_region,
                      bool version)
{
    QEMUFile *f = &src->f;
    size_t vlen = version ? strlen(FAKE_VERSION) : 0;

    qemu_put_be64(f, VFIO_DS_FLAG_HEADER);
    qemu_put_be32(f, VFIO_DEVICE_DATA_INTERFACE_VERSION);
    qemu_put_be32(f, caps);
    qemu_put_be64(f, cfg_region);
    qemu_put_be64(f, src->chunk);
    qemu_put_be64(f, 0);
    qemu_put_be16(f, 0x1b36);
    qemu_put_be16(f, 0x0015);
    qemu_put_be16(f, 0x1af4);
    qemu_put_be16(f, 0x1100);
    qemu_put_be32(f, vlen);
    qemu_put_buffer(f, (const uint8_t *)FAKE_VERSION, vlen);
}

/* ds_save_chunk(): the chunks [from, to) of a data set numbered @seq */
static void src_chunks(Src *src, uint32_t seq, uint64_t size, uint64_t from,
                       uint64_t to, uint8_t fill)
{
    QEMUFile *f = &src->f;
    g_autofree uint8_t *buf = g_malloc(src->chunk);
    uint64_t pos;

    for (pos = from; pos < to; pos += src->chunk) {
        uint64_t n = MIN(src->chunk, size - pos), i;

        if (pos == 0) {
            qemu_put_be64(f, VFIO_DS_FLAG_MEM_SET);
            qemu_put_be32(f, seq);
            qemu_put_be64(f, size);
        }
        for (i = 0; i < n; i++) {
            buf[i] = fill + (pos + i) / 251;    /* a chunk's own bytes */
        }
        qemu_put_be64(f, VFIO_DS_FLAG_MEM_CHUNK);
        qemu_put_be64(f, pos);
        qemu_put_be64(f, n);
        qemu_put_buffer(f, buf, n);
    }
}

/* A whole data set, numbered as the source numbers them */
static void src_set(Src *src, uint64_t size, uint8_t fill)
{
    src_chunks(src, ++src->sets, size, 0, size, fill);
}

static void src_end(Src *src)
{
    qemu_put_be64(&src->f, VFIO_MIG_FLAG_END_OF_STATE);
}

/* vfio_ds_save_complete()'s config: the count of sets, then the blob */
static void src_config(Src *src, uint32_t sets, uint64_t size)
{
    QEMUFile *f = &src->f;
    g_autofree uint8_t *cfg = g_malloc(size);
    uint64_t i;

    for (i = 0; i < size; i++) {
        cfg[i] = 0xc0 ^ i;
    }
    qemu_put_be64(f, VFIO_DS_FLAG_DEV_CONFIG);
    qemu_put_be32(f, sets);
    qemu_put_be64(f, size);
    qemu_put_buffer(f, cfg, size);
}

/* vfio_ds_save_state(): the non-iterable section, PCI config if any */
static void src_state(Src *src, bool pci_config)
{
    if (pci_config) {
        qemu_put_be64(&src->f, VFIO_DS_FLAG_PCI_CONFIG);
        qemu_put_be32(&src->f, 4);      /* fake_load_config()'s format */
        qemu_put_be32(&src->f, 0xdeadbeef);
    }
    src_end(src);
}

/*
 * Multifd transfer: a device state buffer, its be32 length (and last
 * flag) filled in by src_buffer_end()
 */
static guint src_buffer_begin(Src *src)
{
    guint off = src->s->len;

    qemu_put_be32(&src->f, 0);
    return off;
}

static void src_buffer_end(Src *src, guint off, bool last)
{
    stl_be_p(src->s->data + off,
             (src->s->len - off - 4) | (last ? 1u << 31 : 0));
}

/*
 * vfio_ds_save_complete_precopy_thread(): a data buffer per chunk of data
 * set @seq, from @from to its end
 */
static void src_buffers(Src *src, uint32_t seq, uint64_t size, uint64_t from,
                        uint8_t fill)
{
    uint64_t pos;

    for (pos = from; pos < size; pos += src->chunk) {
        guint off = src_buffer_begin(src);

        src_chunks(src, seq, size, pos, MIN(pos + src->chunk, size), fill);
        src_end(src);
        src_buffer_end(src, off, false);
    }
}

/* ... and the last buffer: the device config, the PCI config if any */
static void src_last_buffer(Src *src, uint32_t sets, uint64_t cfg,
                            bool pci_config)
{
    guint off = src_buffer_begin(src);

    src_config(src, sets, cfg);
    src_state(src, pci_config);
    src_buffer_end(src, off, true);
}

#define SECTIONS_MULTIFD 0x80   /* add_input(): multifd transfer */

static void add_input(GPtrArray *inputs, const char *name, FuzzExpect expect,
                      uint8_t o0, uint8_t o1, uint8_t fail_at,
                      uint8_t sections, Src *src)
{
    uint8_t opts[4] = {
        o0, o1, fail_at,
        ((sections & ~SECTIONS_MULTIFD) - 1) |
        (sections & SECTIONS_MULTIFD ? 8 : 0)
    };
    g_autoptr(GByteArray) all = g_byte_array_new();

    sections &= ~SECTIONS_MULTIFD;
    assert(sections >= 1 && sections <= 8);
    g_byte_array_append(all, opts, 4);
    g_byte_array_append(all, src->s->data, src->s->len);
    fuzz_input_add(inputs, name, expect, all->data, all->len);
    g_byte_array_free(src->s, TRUE);
    src->s = NULL;
}

/*
 * A migration as the source makes it: setup; iterations, the first data
 * set spread over two of them, one with nothing dirty; the complete
 * section with the set opened in STOP|LOGGING and the config; the
 * non-iterable section.  5 sections.
 */
static void src_migration(Src *src, uint32_t caps, uint64_t cfg_region,
                          bool version, uint64_t set1, uint64_t set2,
                          uint64_t set3, uint64_t cfg, bool pci_config)
{
    uint64_t half = set1 > src->chunk ?
                    QEMU_ALIGN_DOWN(set1 / 2, src->chunk) ?: src->chunk :
                    set1;

    src_setup(src, caps, cfg_region, version);
    src_end(src);
    if (caps & VFIO_DEVICE_DATA_CAP_DEVICE_MEMORY) {
        src->sets++;
        src_chunks(src, src->sets, set1, 0, half, 0x11);
        src_end(src);
        src_chunks(src, src->sets, set1, half, set1, 0x11);
        if (set2) {
            src_set(src, set2, 0x22);
        }
        src_end(src);
        if (set3) {
            src_set(src, set3, 0x33);
        }
    } else {
        src_end(src);
        src_end(src);
    }
    src_config(src, src->sets, cfg);
    src_end(src);
    src_state(src, pci_config);
}

/*
 * The same with multifd transfer: the first data set half in precopy, the
 * rest of it and the second one in stop-and-copy, in data buffers; the
 * complete and non-iterable sections only END_OF_STATE; the configs in
 * the last buffer.  4 sections, then the buffers.
 */
static void src_migration_multifd(Src *src, uint32_t caps,
                                  uint64_t cfg_region, bool version,
                                  uint64_t set1, uint64_t set2, uint64_t cfg,
                                  bool pci_config)
{
    uint64_t half = set1 > src->chunk ?
                    QEMU_ALIGN_DOWN(set1 / 2, src->chunk) ?: src->chunk :
                    set1;
    bool mem = caps & VFIO_DEVICE_DATA_CAP_DEVICE_MEMORY;

    src_setup(src, caps, cfg_region, version);
    src_end(src);
    if (mem) {
        src->sets++;
        src_chunks(src, src->sets, set1, 0, half, 0x11);
    }
    src_end(src);
    src_end(src);               /* vfio_multifd_emit_dummy_eos() */
    src_end(src);               /* the PCI config is in the last buffer */
    if (mem) {
        src_buffers(src, src->sets, set1, half, 0x11);
        if (set2) {
            src->sets++;
            src_buffers(src, src->sets, set2, 0, 0x22);
        }
    }
    src_last_buffer(src, src->sets, cfg, pci_config);
}

/*
 * The 4 sections of a multifd migration of a device with 4 KiB of device
 * memory whose precopy sent data set 1 of @set1 bytes (0: none)
 */
static void src_multifd_sections(Src *src, uint64_t set1)
{
    src_setup(src, VFIO_DEVICE_DATA_CAP_DEVICE_MEMORY, 256, true);
    src_end(src);
    if (set1) {
        src_set(src, set1, 0x11);
    }
    src_end(src);
    src_end(src);
    src_end(src);
}

/* Multifd transfer: valid streams, then corrupt ones */
static void fuzz_inputs_multifd(GPtrArray *inputs)
{
    static const struct {
        const char *name;
        uint8_t o0, o1;
        uint64_t src_chunk, set1, set2, cfg;
    } valid[] = {
        { "multifd-rw-4k", 0x00, 0x05, 4096, 10000, 5000, 200 },
        { "multifd-mmap-4k", 0x03, 0x05, 4096, 10000, 4096, 256 },
        { "multifd-rechunk-64k-to-4k", 0x00, 0x05, 65536, 70000, 1, 1 },
        { "multifd-short-xfer", 0x20, 0x0d, 3000, 9001, 17, 17 },
        { "multifd-no-pci-config", 0x10, 0x05, 4096, 5000, 5000, 10 },
        { "multifd-stop-copy-only", 0x00, 0x05, 4096, 4096, 8192, 8 },
    };
    const uint32_t mem = VFIO_DEVICE_DATA_CAP_DEVICE_MEMORY;
    const uint8_t mf4 = SECTIONS_MULTIFD | 4;
    Src src;
    guint off;
    unsigned i;

    for (i = 0; i < ARRAY_SIZE(valid); i++) {
        src_init(&src, valid[i].src_chunk);
        src_migration_multifd(&src, mem, 256 << (i % 3), true,
                              valid[i].set1, valid[i].set2, valid[i].cfg,
                              !(valid[i].o0 & 0x10));
        add_input(inputs, valid[i].name, FUZZ_EXPECT_ACCEPT, valid[i].o0,
                  valid[i].o1, 0, mf4, &src);
    }
    src_init(&src, 0);          /* a device without device memory */
    src_migration_multifd(&src, 0, 16, true, 0, 0, 16, true);
    add_input(inputs, "multifd-config-only", FUZZ_EXPECT_ACCEPT, 0x08, 0x02,
              0, mf4, &src);

    /* The main channel's stream: its configs may not come there. */
    src_init(&src, 4096);
    src_migration(&src, mem, 256, true, 5000, 0, 0, 8, true);
    add_input(inputs, "bad-multifd-config-on-main", FUZZ_EXPECT_REJECT, 0,
              0x05, 0, SECTIONS_MULTIFD | 5, &src);

    src_init(&src, 4096);       /* the header in a data buffer */
    src_multifd_sections(&src, 4096);
    off = src_buffer_begin(&src);
    src_setup(&src, mem, 256, true);
    src_end(&src);
    src_buffer_end(&src, off, false);
    src_last_buffer(&src, 1, 8, true);
    add_input(inputs, "bad-multifd-header-in-buffer", FUZZ_EXPECT_REJECT, 0,
              0x05, 0, mf4, &src);

    src_init(&src, 4096);       /* a data buffer without END_OF_STATE */
    src_multifd_sections(&src, 0);
    off = src_buffer_begin(&src);
    src_chunks(&src, 1, 4096, 0, 4096, 0x90);
    src_buffer_end(&src, off, false);
    src_last_buffer(&src, 1, 8, true);
    add_input(inputs, "bad-multifd-no-end", FUZZ_EXPECT_REJECT, 0, 0x05, 0,
              mf4, &src);

    for (i = 0; i < 2; i++) {   /* an empty buffer (data NULL) */
        src_init(&src, 4096);
        src_multifd_sections(&src, 4096);
        src_buffer_end(&src, src_buffer_begin(&src), i);
        add_input(inputs, i ? "bad-multifd-last-empty" : "bad-multifd-empty",
                  FUZZ_EXPECT_REJECT, 0, 0x05, 0, mf4, &src);
    }

    src_init(&src, 4096);       /* bytes after a data buffer's end */
    src_multifd_sections(&src, 0);
    off = src_buffer_begin(&src);
    src_chunks(&src, 1, 4096, 0, 4096, 0x91);
    src_end(&src);
    qemu_put_be32(&src.f, 0);
    src_buffer_end(&src, off, false);
    src_last_buffer(&src, 1, 8, true);
    add_input(inputs, "bad-multifd-trailing", FUZZ_EXPECT_REJECT, 0, 0x05,
              0, mf4, &src);

    src_init(&src, 4096);       /* a chunk longer than its buffer */
    src_multifd_sections(&src, 0);
    off = src_buffer_begin(&src);
    src_chunks(&src, 1, 4096, 0, 4096, 0x92);
    src_end(&src);
    g_byte_array_set_size(src.s, src.s->len - 100);
    src_buffer_end(&src, off, false);
    src_last_buffer(&src, 1, 8, true);
    add_input(inputs, "bad-multifd-chunk-cut", FUZZ_EXPECT_REJECT, 0, 0x05,
              0, mf4, &src);

    src_init(&src, 4096);       /* the device config in a data buffer */
    src_multifd_sections(&src, 4096);
    off = src_buffer_begin(&src);
    src_config(&src, 1, 8);
    src_end(&src);
    src_buffer_end(&src, off, false);
    src_last_buffer(&src, 1, 8, true);
    add_input(inputs, "bad-multifd-config-in-data", FUZZ_EXPECT_REJECT, 0,
              0x05, 0, mf4, &src);

    src_init(&src, 4096);       /* a chunk in the last buffer */
    src_multifd_sections(&src, 0);
    off = src_buffer_begin(&src);
    src_chunks(&src, 1, 4096, 0, 4096, 0x93);
    src_config(&src, 1, 8);
    src_state(&src, true);
    src_buffer_end(&src, off, true);
    add_input(inputs, "bad-multifd-chunk-in-last", FUZZ_EXPECT_REJECT, 0,
              0x05, 0, mf4, &src);

    src_init(&src, 4096);       /* no last buffer */
    src_multifd_sections(&src, 0);
    src_buffers(&src, 1, 10000, 0, 0x94);
    add_input(inputs, "bad-multifd-no-last", FUZZ_EXPECT_REJECT, 0, 0x05, 0,
              mf4, &src);

    src_init(&src, 4096);       /* a last buffer without the PCI config */
    src_multifd_sections(&src, 4096);
    src_last_buffer(&src, 1, 8, false);
    add_input(inputs, "bad-multifd-last-incomplete", FUZZ_EXPECT_REJECT, 0,
              0x05, 0, mf4, &src);

    src_init(&src, 4096);       /* bytes after the last buffer's end */
    src_multifd_sections(&src, 4096);
    off = src_buffer_begin(&src);
    src_config(&src, 1, 8);
    src_state(&src, true);
    qemu_put_byte(&src.f, 0);
    src_buffer_end(&src, off, true);
    add_input(inputs, "bad-multifd-last-trailing", FUZZ_EXPECT_REJECT, 0,
              0x05, 0, mf4, &src);

    for (i = 0; i < 2; i++) {   /* a device access fails */
        static const uint8_t at[] = { 9, 16 };
        g_autofree char *name = g_strdup_printf("bad-multifd-eio-%u", at[i]);

        src_init(&src, 4096);
        src_migration_multifd(&src, mem, 256, true, 10000, 4096, 200, true);
        add_input(inputs, name, FUZZ_EXPECT_REJECT, 0, 0x05, at[i], mf4,
                  &src);
    }
}

GPtrArray *fuzz_inputs(void)
{
    /* o1 0x05: config 256, memory 4 KiB; 0: config 4 KiB, memory 64 KiB */
    static const struct {
        const char *name;
        uint8_t o0, o1;
        uint64_t src_chunk, set1, set2, set3, cfg;
    } valid[] = {
        { "rw-4k", 0x00, 0x05, 4096, 10000, 4096, 100, 200 },
        { "mmap-4k", 0x03, 0x05, 4096, 10000, 100, 4096, 256 },
        { "rechunk-64k-to-4k", 0x00, 0x05, 65536, 70000, 1, 0, 1 },
        { "rechunk-4k-to-64k", 0x02, 0x00, 4096, 70000, 8192, 1, 4096 },
        { "short-xfer", 0x20, 0x0d, 3000, 9001, 3000, 17, 17 },
        { "noversion", 0x04, 0x05, 4096, 5000, 0, 1, 64 },
        { "max-xfer-1000", 0x00, 0x20, 65536, 70000, 65536, 3, 4096 },
        { "max-xfer-4k-1m", 0x00, 0x1c, 65536, 300000, 0, 0, 4000 },
        { "p2p", 0x00, 0x45, 4096, 8192, 4096, 4096, 256 },
        { "no-switchover-ack", 0x00, 0x85, 4096, 5000, 0, 0, 10 },
        { "no-pci-config", 0x10, 0x05, 4096, 5000, 5000, 0, 10 },
    };
    GPtrArray *inputs = g_ptr_array_new_with_free_func(fuzz_input_free);
    const uint32_t mem = VFIO_DEVICE_DATA_CAP_DEVICE_MEMORY;
    Src src;
    unsigned i;

    for (i = 0; i < ARRAY_SIZE(valid); i++) {
        uint32_t caps = mem | (valid[i].o1 & 0x40 ?
                               VFIO_DEVICE_DATA_CAP_P2P : 0);

        src_init(&src, valid[i].src_chunk);
        src_migration(&src, caps, 256 << (i % 3), !(valid[i].o0 & 4),
                      valid[i].set1, valid[i].set2, valid[i].set3,
                      valid[i].cfg, !(valid[i].o0 & 0x10));
        add_input(inputs, valid[i].name, FUZZ_EXPECT_ACCEPT, valid[i].o0,
                  valid[i].o1, 0, 5, &src);
    }
    /* A device without device memory: header, then config only */
    src_init(&src, 0);
    src_migration(&src, 0, 16, true, 0, 0, 0, 16, true);
    add_input(inputs, "config-only", FUZZ_EXPECT_ACCEPT, 0x08, 0x02, 0, 5,
              &src);
    /* Only the stop-and-copy phase (a migration that converged at once) */
    src_init(&src, 4096);
    src_setup(&src, mem, 256, true);
    src_end(&src);
    src_set(&src, 4096, 0x44);
    src_config(&src, 1, 8);
    src_end(&src);
    src_state(&src, true);
    add_input(inputs, "stop-copy-only", FUZZ_EXPECT_ACCEPT, 0x00, 0x05, 0,
              3, &src);

    /*
     * Corrupt streams: each must be refused (the state left in the
     * device is reset), never crash or break the interface.
     */
    src_init(&src, 4096);       /* the config section cut out */
    src_setup(&src, mem, 256, true);
    src_end(&src);
    src_set(&src, 4096, 0x55);
    src_end(&src);
    src_state(&src, true);
    add_input(inputs, "bad-no-config", FUZZ_EXPECT_REJECT, 0, 0x05, 0, 3,
              &src);

    src_init(&src, 4096);       /* the non-iterable section cut out */
    src_migration(&src, mem, 256, true, 5000, 0, 0, 8, true);
    g_byte_array_set_size(src.s, src.s->len - 8 - 8 - 4 - 4);
    add_input(inputs, "bad-no-pci-config", FUZZ_EXPECT_REJECT, 0, 0x05, 0,
              4, &src);

    src_init(&src, 4096);       /* a data set cut short */
    src_setup(&src, mem, 256, true);
    src_chunks(&src, 1, 8192, 0, 4096, 0x66);
    src_config(&src, 1, 8);
    src_end(&src);
    src_state(&src, true);
    add_input(inputs, "bad-half-set", FUZZ_EXPECT_REJECT, 0, 0x05, 0, 2,
              &src);

    src_init(&src, 4096);       /* a data set after the config */
    src_setup(&src, mem, 256, true);
    src_set(&src, 4096, 0x77);
    src_config(&src, 1, 8);
    src_set(&src, 4096, 0x78);
    src_end(&src);
    src_state(&src, true);
    add_input(inputs, "bad-set-after-config", FUZZ_EXPECT_REJECT, 0, 0x05,
              0, 2, &src);

    src_init(&src, 4096);       /* two configs */
    src_setup(&src, mem, 256, true);
    src_set(&src, 4096, 0x79);
    src_config(&src, 1, 8);
    src_config(&src, 1, 8);
    src_end(&src);
    src_state(&src, true);
    add_input(inputs, "bad-second-config", FUZZ_EXPECT_REJECT, 0, 0x05, 0,
              2, &src);

    src_init(&src, 4096);       /* data set 2 dropped */
    src_setup(&src, mem, 256, true);
    src_set(&src, 4096, 0x7a);
    src.sets++;
    src_set(&src, 4096, 0x7b);
    src_config(&src, 3, 8);
    src_end(&src);
    src_state(&src, true);
    add_input(inputs, "bad-set-dropped", FUZZ_EXPECT_REJECT, 0, 0x05, 0, 2,
              &src);

    src_init(&src, 4096);       /* every data set dropped */
    src_setup(&src, mem, 256, true);
    src_config(&src, 2, 8);
    src_end(&src);
    src_state(&src, true);
    add_input(inputs, "bad-sets-all-dropped", FUZZ_EXPECT_REJECT, 0, 0x05,
              0, 2, &src);

    src_init(&src, 4096);       /* the last two data sets swapped */
    src_setup(&src, mem, 256, true);
    src_set(&src, 4096, 0x7c);
    src_chunks(&src, 3, 100, 0, 100, 0x7d);
    src_chunks(&src, 2, 200, 0, 200, 0x7e);
    src_config(&src, 3, 8);
    src_end(&src);
    src_state(&src, true);
    add_input(inputs, "bad-sets-swapped", FUZZ_EXPECT_REJECT, 0, 0x05, 0, 2,
              &src);

    src_init(&src, 4096);       /* a data set repeated */
    src_setup(&src, mem, 256, true);
    src_set(&src, 4096, 0x7f);
    src_chunks(&src, 1, 4096, 0, 4096, 0x7f);
    src_config(&src, 1, 8);
    src_end(&src);
    src_state(&src, true);
    add_input(inputs, "bad-set-repeated", FUZZ_EXPECT_REJECT, 0, 0x05, 0,
              2, &src);

    src_init(&src, 4096);       /* the config counts a set too many */
    src_setup(&src, mem, 256, true);
    src_set(&src, 4096, 0x80);
    src_config(&src, 2, 8);
    src_end(&src);
    src_state(&src, true);
    add_input(inputs, "bad-set-count", FUZZ_EXPECT_REJECT, 0, 0x05, 0, 2,
              &src);

    src_init(&src, 4096);       /* a chunk at the wrong offset */
    src_setup(&src, mem, 256, true);
    src_chunks(&src, 1, 8192, 0, 4096, 0x81);
    src_chunks(&src, 1, 8192, 4096 * 3, 4096 * 4, 0x82);
    add_input(inputs, "bad-chunk-pos", FUZZ_EXPECT_REJECT, 0, 0x05, 0, 1,
              &src);

    src_init(&src, 4096);       /* truncated inside a chunk */
    src_migration(&src, mem, 256, true, 10000, 0, 0, 8, true);
    g_byte_array_set_size(src.s, src.s->len / 2);
    add_input(inputs, "bad-truncated", FUZZ_EXPECT_REJECT, 0, 0x05, 0, 5,
              &src);

    src_init(&src, 4096);       /* a data set larger than the device's */
    src_setup(&src, mem, 256, true);
    src_set(&src, FAKE_MAX_SET + 1, 0x83);
    add_input(inputs, "bad-set-too-large", FUZZ_EXPECT_REJECT, 0, 0x05, 0,
              1, &src);

    src_init(&src, 4096);       /* a cap QEMU does not know */
    src_migration(&src, mem | 0x80, 256, true, 5000, 0, 0, 8, true);
    add_input(inputs, "bad-caps", FUZZ_EXPECT_REJECT, 0, 0x05, 0, 5, &src);

    /*
     * A source with a P2P state: it does not change the stream, and only
     * the device's migration_version answer decides compatibility.
     */
    src_init(&src, 4096);
    src_migration(&src, mem | VFIO_DEVICE_DATA_CAP_P2P, 256, true, 5000, 0,
                  0, 8, true);
    add_input(inputs, "caps-p2p-differs", FUZZ_EXPECT_ACCEPT, 0, 0x05, 0, 5,
              &src);

    src_init(&src, 4096);       /* data before the header */
    src_set(&src, 4096, 0x84);
    add_input(inputs, "bad-no-header", FUZZ_EXPECT_REJECT, 0, 0x05, 0, 1,
              &src);

    src_init(&src, 4096);       /* an unknown tag */
    src_setup(&src, mem, 256, true);
    qemu_put_be64(&src.f, VFIO_DS_FLAG_PCI_CONFIG + 1);
    add_input(inputs, "bad-tag", FUZZ_EXPECT_REJECT, 0, 0x05, 0, 1, &src);

    src_init(&src, 4096);       /* the device refuses the source */
    src_migration(&src, mem, 256, true, 5000, 0, 0, 8, true);
    add_input(inputs, "bad-version-refused", FUZZ_EXPECT_REJECT, 0x40, 0x05,
              0, 5, &src);

    src_init(&src, 4096);       /* the device refuses the config */
    src_migration(&src, mem, 256, true, 5000, 0, 0, 8, true);
    add_input(inputs, "bad-config-refused", FUZZ_EXPECT_REJECT, 0x80, 0x05,
              0, 5, &src);

    src_init(&src, 4096);       /* a migration_version the device lacks */
    src_migration(&src, mem, 256, true, 5000, 0, 0, 8, true);
    add_input(inputs, "bad-version-unexpected", FUZZ_EXPECT_REJECT, 0x04,
              0x05, 0, 5, &src);

    for (i = 0; i < 3; i++) {   /* a device access fails */
        static const uint8_t at[] = { 7, 12, 20 };
        g_autofree char *name = g_strdup_printf("bad-device-eio-%u", at[i]);

        src_init(&src, 4096);
        src_migration(&src, mem, 256, true, 10000, 4096, 100, 200, true);
        add_input(inputs, name, FUZZ_EXPECT_REJECT, 0, 0x05, at[i], 5, &src);
    }
    fuzz_inputs_multifd(inputs);
    return inputs;
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    const char *dir = getenv("VFIO_DS_FUZZ_SEEDS");

    verbose = getenv("VFIO_DS_FUZZ_VERBOSE");
    mmap_hook = fake_mmap;
    munmap_hook = fake_munmap;
    fake_pci_init();
    if (dir && !fuzz_write_inputs(dir)) {
        fprintf(stderr, "cannot write the seeds to %s\n", dir);
        exit(1);
    }
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    last_accepted = false;
    snprintf(last_why, sizeof(last_why), "shorter than the options");
    if (size < 4) {
        return 0;
    }
    run_load(data, data + 4, size - 4);
    return 0;
}
