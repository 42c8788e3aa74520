/*
 * vfio-user-devstate: the device-state regions
 *
 * The control region (struct vfio_device_state_ctl) with its state machine,
 * the config blob, device-memory data sets, the system-memory dirty bitmap
 * and the migration_version string.
 *
 * Config blob: struct devstate_config_hdr, the config payload (registers
 * and counters), then the SHA-256 of everything before it.  The device
 * checks all of it before it applies anything.
 *
 * Device-memory data set: struct devstate_mem_hdr, then nr_records records
 * of { u64 page index; u8 data[4096] }, pages in ascending order.  A data
 * set with no record has length 0 (no header) and is closed as soon as its
 * size is read.  device_memory.pos (read-only) is 0 when a set opens and
 * advances by each chunk; pending counts the dirtied pages since the set
 * in progress was opened, so a dirty set is never larger than the whole
 * set that opened its session.  Loads apply each chunk in place once it
 * is checked (no staging copy).
 *
 * Copyright (c) 2025 The QEMU project contributors
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 */

#include <errno.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/mman.h>

#include "devstate.h"

#define DEVSTATE_CONFIG_MAGIC   0x46435344  /* "DSCF" */
#define DEVSTATE_MEM_MAGIC      0x4d4d5344  /* "DSMM" */
#define DEVSTATE_IDENTITY_MAX   64
#define SHA256_LEN              32

struct devstate_config_hdr {
    uint32_t magic;
    uint32_t interface_version;
    char identity[DEVSTATE_IDENTITY_MAX];
    uint32_t major, minor, bugfix;
    uint32_t payload_len;
};

struct devstate_mem_hdr {
    uint32_t magic;
    uint32_t version;
    uint64_t nr_records;
    uint64_t mem_size;
    uint32_t flags;             /* bit0: whole snapshot */
    uint32_t reserved;
};

#define MEM_HDR_SIZE    sizeof(struct devstate_mem_hdr)
#define MEM_REC_SIZE    (8 + DEVSTATE_PAGE_SIZE)

static const char *const fault_names[FAULT_NR] = {
    [FAULT_ARC] = "arc",
    [FAULT_CONFIG_GET] = "config-get",
    [FAULT_CONFIG_SET] = "config-set",
    [FAULT_MEM_GET] = "mem-get",
    [FAULT_MEM_SET] = "mem-set",
    [FAULT_BITMAP] = "bitmap",
    [FAULT_VERSION] = "version",
};

void devstate_log(Devstate *ds, const char *fmt, ...)
{
    va_list ap;

    if (!ds->verbose) {
        return;
    }
    va_start(ap, fmt);
    fputs("devstate: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
}

const char *devstate_state_name(uint32_t state)
{
    static const char *const names[] = {
        "RUNNING", "STOP", "RUNNING|LOGGING", "STOP|LOGGING",
        "P2P", "INVALID", "P2P|LOGGING", "INVALID",
    };

    return state < G_N_ELEMENTS(names) ? names[state] : "INVALID";
}

/* A state name, with | or +, or its value; -2 if none */
static int parse_state(const char *s)
{
    unsigned i;

    for (i = 0; i <= VFIO_DEVICE_DATA_STATE_MASK; i++) {
        g_autofree char *alt = g_strdelimit(g_strdup(devstate_state_name(i)),
                                            "|", '+');

        if (strcmp(devstate_state_name(i), "INVALID") &&
            (!strcmp(s, devstate_state_name(i)) || !strcmp(s, alt))) {
            return i;
        }
    }
    if (s[0] >= '0' && s[0] <= '7' && !s[1] &&
        strcmp(devstate_state_name(s[0] - '0'), "INVALID")) {
        return s[0] - '0';
    }
    return -2;
}

static int parse_errno(const char *s)
{
    static const struct {
        const char *name;
        int err;
    } names[] = {
        { "EIO", EIO }, { "EINVAL", EINVAL }, { "EBUSY", EBUSY },
        { "ENOSPC", ENOSPC }, { "ENOMEM", ENOMEM }, { "EPERM", EPERM },
        { "EFAULT", EFAULT }, { "EAGAIN", EAGAIN }, { "ENODEV", ENODEV },
        { "EPROTO", EPROTO }, { "ENOTSUP", ENOTSUP },
    };
    unsigned i;
    char *end;
    gint64 v;

    for (i = 0; i < G_N_ELEMENTS(names); i++) {
        if (!g_ascii_strcasecmp(s, names[i].name)) {
            return names[i].err;
        }
    }
    v = g_ascii_strtoll(s, &end, 10);
    return (*s && !*end && v > 0 && v < 4096) ? v : -1;
}

/*
 * kind is "fail" (arg POINT:ERRNO[:COUNT]), "delay" (POINT:MS), "exit-at"
 * (POINT) or "clear" (POINT or "all").  POINT may be "arc:FROM->TO".
 */
bool devstate_parse_fault(Devstate *ds, const char *kind, const char *arg,
                          GError **errp)
{
    g_auto(GStrv) parts = g_strsplit(arg, ":", -1);
    guint n = g_strv_length(parts), i = 1;
    int point, from = -1, to = -1;
    DevstateFault *f;

    if (!strcmp(kind, "clear") && !strcmp(arg, "all")) {
        memset(ds->faults, 0, sizeof(ds->faults));
        return true;
    }
    for (point = 0; point < FAULT_NR; point++) {
        if (n && !strcmp(parts[0], fault_names[point])) {
            break;
        }
    }
    if (point == FAULT_NR) {
        g_set_error(errp, G_OPTION_ERROR, G_OPTION_ERROR_BAD_VALUE,
                    "unknown fault point in '%s'", arg);
        return false;
    }
    if (point == FAULT_ARC && n > 1 && strstr(parts[1], "->")) {
        g_auto(GStrv) ft = g_strsplit(parts[1], "->", 2);

        from = parse_state(ft[0]);
        to = g_strv_length(ft) == 2 ? parse_state(ft[1]) : -2;
        if (from < -1 || to < -1) {
            g_set_error(errp, G_OPTION_ERROR, G_OPTION_ERROR_BAD_VALUE,
                        "bad arc in '%s'", arg);
            return false;
        }
        i++;
    }
    f = &ds->faults[point];
    if (!strcmp(kind, "clear")) {
        memset(f, 0, sizeof(*f));
        return true;
    }
    f->from = from + 1;
    f->to = to + 1;
    if (!strcmp(kind, "exit-at")) {
        f->exit_at = true;
        return n == i;
    }
    if (n <= i) {
        g_set_error(errp, G_OPTION_ERROR, G_OPTION_ERROR_BAD_VALUE,
                    "missing value in '%s'", arg);
        return false;
    }
    if (!strcmp(kind, "delay")) {
        f->delay_ms = atoi(parts[i]);
        return true;
    }
    f->err = parse_errno(parts[i]);
    f->count = n > i + 1 ? atoi(parts[i + 1]) : -1;
    if (f->err < 0 || n > i + 2) {
        f->err = 0;
        g_set_error(errp, G_OPTION_ERROR, G_OPTION_ERROR_BAD_VALUE,
                    "bad errno or count in '%s'", arg);
        return false;
    }
    return true;
}

/* Returns 0 or a negative errno to fail the operation with */
int devstate_fault(Devstate *ds, DevstateFaultPoint point, int from, int to)
{
    DevstateFault *f = &ds->faults[point];

    /* from and to are stored plus one, 0 matching any state */
    if ((f->from && f->from - 1 != from) || (f->to && f->to - 1 != to)) {
        return 0;
    }
    if (f->delay_ms) {
        g_usleep(f->delay_ms * 1000ull);
    }
    if (f->exit_at) {
        fprintf(stderr, "devstate: exit at %s\n", fault_names[point]);
        _exit(3);
    }
    if (f->err && f->count) {
        if (f->count > 0) {
            f->count--;
        }
        devstate_log(ds, "fault: %s fails with %s", fault_names[point],
                     g_strerror(f->err));
        return -f->err;
    }
    return 0;
}

/* Device-memory data sets */

static void save_set_close(Devstate *ds)
{
    g_free(ds->save_set.pages);
    memset(&ds->save_set, 0, sizeof(ds->save_set));
}

static void load_set_close(Devstate *ds)
{
    memset(&ds->load_set, 0, sizeof(ds->load_set));
}

static uint64_t set_bytes(uint64_t nr_records)
{
    return nr_records ? MEM_HDR_SIZE + nr_records * MEM_REC_SIZE : 0;
}

/*
 * device_memory.pending: the size the next data set would have if it were
 * opened now.  Outside a logging session there is no next data set of the
 * session (0).  A dirty set never holds more records than there are pages,
 * so it is never larger than the whole snapshot that opened the session;
 * when every page is dirty it is that snapshot (flag bit 0).
 */
static uint64_t mem_pending(Devstate *ds)
{
    if (!(ds->state & VFIO_DEVICE_DATA_STATE_LOGGING)) {
        return 0;
    }
    return set_bytes(ds->mem_dirty_count);
}

/*
 * Open a data set: in a logging session the pages dirtied since the
 * previous set was opened (all of them for the first set, since logging
 * starts with every page dirty), otherwise every page.
 */
static void save_set_open(Devstate *ds)
{
    DevstateDataSet *set = &ds->save_set;
    bool logging = ds->state & VFIO_DEVICE_DATA_STATE_LOGGING;
    uint64_t p, n = 0;

    load_set_close(ds);
    if (ds->misbehave_endless_dirty && logging &&
        (ds->state & VFIO_DEVICE_DATA_STATE_STOP) && !ds->mem_dirty_count) {
        ds->mem_dirty[0] |= 1;                  /* a stopped device "writes" */
        ds->mem_dirty_count = 1;
    }
    set->pages = g_new(uint32_t, ds->nr_pages);
    for (p = 0; p < ds->nr_pages; p++) {
        uint64_t w = ds->mem_dirty[p / 64];

        if (logging && !(p % 64) && !w) {
            p += 63;                            /* a clean word */
            continue;
        }
        if (!logging || (w & (1ull << (p % 64)))) {
            set->pages[n++] = p;
        }
    }
    if (logging) {
        memset(ds->mem_dirty, 0, (ds->nr_pages + 63) / 64 * 8);
        ds->mem_dirty_count = 0;
    }
    set->nr_pages = n;
    set->size = set_bytes(n);
    if (ds->misbehave_big_set && logging && ds->session_sets && n) {
        set->size = set_bytes(ds->nr_pages + 1);   /* beyond the snapshot */
    }
    ds->session_sets++;
    set->pos = 0;
    set->open = n != 0;
    ds->ctl.device_memory.pos = 0;
    devstate_log(ds, "data set opened: %" G_GUINT64_FORMAT " pages, %"
                 G_GUINT64_FORMAT " bytes", n, set->size);
    if (!set->open) {
        save_set_close(ds);
    }
}

/* Bytes [pos, pos + len) of the open data set into buf */
static void save_set_emit(Devstate *ds, uint64_t pos, uint8_t *buf,
                          uint64_t len)
{
    DevstateDataSet *set = &ds->save_set;
    struct devstate_mem_hdr hdr = {
        .magic = GUINT32_TO_LE(DEVSTATE_MEM_MAGIC),
        .version = GUINT32_TO_LE(1),
        .nr_records = GUINT64_TO_LE(set->nr_pages),
        .mem_size = GUINT64_TO_LE(ds->mem_size),
        .flags = GUINT32_TO_LE(set->nr_pages == ds->nr_pages),
    };

    while (len) {
        uint64_t n;

        if (pos < MEM_HDR_SIZE) {
            n = MIN(len, MEM_HDR_SIZE - pos);
            memcpy(buf, (uint8_t *)&hdr + pos, n);
        } else {
            uint64_t rec = (pos - MEM_HDR_SIZE) / MEM_REC_SIZE;
            uint64_t in = (pos - MEM_HDR_SIZE) % MEM_REC_SIZE;
            uint64_t page;

            if (rec >= set->nr_pages) {
                /* --misbehave big-set: padding past the real records */
                n = MIN(len, MEM_REC_SIZE - in);
                memset(buf, 0, n);
                buf += n;
                pos += n;
                len -= n;
                continue;
            }
            page = set->pages[rec];
            if (in < 8) {
                uint64_t le = GUINT64_TO_LE(page);

                n = MIN(len, 8 - in);
                memcpy(buf, (uint8_t *)&le + in, n);
            } else {
                n = MIN(len, MEM_REC_SIZE - in);
                memcpy(buf, ds->mem + page * DEVSTATE_PAGE_SIZE + in - 8, n);
            }
        }
        buf += n;
        pos += n;
        len -= n;
    }
}

/* GET_BUFFER: the chunk at pos into the region, pos advances past it */
static int mem_get_buffer(Devstate *ds)
{
    DevstateDataSet *set = &ds->save_set;
    uint64_t chunk = ds->region_size[DEVSTATE_REGION_DATA_MEMORY];
    uint64_t len;
    int ret;

    if (!set->open) {
        devstate_log(ds, "GET_BUFFER refused: no data set open");
        return -EINVAL;
    }
    ret = devstate_fault(ds, FAULT_MEM_GET, -1, -1);
    if (ret) {
        return ret;
    }
    len = MIN(chunk, set->size - set->pos);
    save_set_emit(ds, set->pos, ds->region_buf[DEVSTATE_REGION_DATA_MEMORY],
                  len);
    set->pos += len;
    ds->ctl.device_memory.pos = set->pos;
    if (set->pos == set->size) {
        devstate_log(ds, "data set closed");
        save_set_close(ds);
    }
    return 0;
}

/* Writing size opens a data set to load; nothing is applied yet */
static int mem_set_size(Devstate *ds, uint64_t size)
{
    DevstateDataSet *set = &ds->load_set;
    uint64_t max = set_bytes(ds->nr_pages);

    if (ds->state != VFIO_DEVICE_DATA_STATE_STOP) {
        return -EBUSY;
    }
    if (size && (size < MEM_HDR_SIZE + MEM_REC_SIZE || size > max ||
                 (size - MEM_HDR_SIZE) % MEM_REC_SIZE)) {
        devstate_log(ds, "data set of %" G_GUINT64_FORMAT " bytes refused: "
                     "not a whole number of records of %" G_GUINT64_FORMAT
                     " pages", size, ds->nr_pages);
        return -EINVAL;
    }
    save_set_close(ds);
    load_set_close(ds);
    ds->ctl.device_memory.pos = 0;
    if (!size) {
        return 0;
    }
    set->size = size;
    set->open = true;
    return 0;
}

static int mem_check_hdr(Devstate *ds, const uint8_t *buf)
{
    DevstateDataSet *set = &ds->load_set;
    struct devstate_mem_hdr hdr;
    uint64_t nr;
    uint32_t flags;

    memcpy(&hdr, buf, sizeof(hdr));
    nr = GUINT64_FROM_LE(hdr.nr_records);
    flags = GUINT32_FROM_LE(hdr.flags);
    if (GUINT32_FROM_LE(hdr.magic) != DEVSTATE_MEM_MAGIC ||
        GUINT32_FROM_LE(hdr.version) != 1 ||
        GUINT64_FROM_LE(hdr.mem_size) != ds->mem_size ||
        !nr || nr > ds->nr_pages || set_bytes(nr) != set->size ||
        (flags & ~1u) || ((flags & 1) && nr != ds->nr_pages) ||
        hdr.reserved) {
        devstate_log(ds, "data set refused: bad header (magic 0x%x, "
                     "%" G_GUINT64_FORMAT " records, memory %"
                     G_GUINT64_FORMAT ", flags 0x%x)",
                     GUINT32_FROM_LE(hdr.magic), nr,
                     (uint64_t)GUINT64_FROM_LE(hdr.mem_size), flags);
        return -EINVAL;
    }
    set->nr_records = nr;
    return 0;
}

/*
 * Walk the records in bytes [pos, pos + len) of the set being loaded,
 * from the cursor *cur.  Without apply, only check: every record's page
 * is a page of the device, in strictly ascending order.  With apply, copy
 * the page bytes to device memory.  Returns false on a bad record.
 */
static bool mem_load_walk(Devstate *ds, DevstateLoadCursor *cur,
                          const uint8_t *buf, uint64_t len, bool apply)
{
    while (len) {
        uint64_t n;

        if (cur->rec_off < 8) {
            n = MIN(len, 8 - cur->rec_off);
            memcpy(cur->idx + cur->rec_off, buf, n);
            if (cur->rec_off + n == 8) {
                uint64_t page;

                memcpy(&page, cur->idx, 8);
                page = GUINT64_FROM_LE(page);
                if (page >= ds->nr_pages ||
                    (cur->records && page <= cur->last_page)) {
                    devstate_log(ds, "data set refused: record %"
                                 G_GUINT64_FORMAT " is page %"
                                 G_GUINT64_FORMAT " (%" G_GUINT64_FORMAT
                                 " pages, ascending)", cur->records, page,
                                 ds->nr_pages);
                    return false;
                }
                cur->page = cur->last_page = page;
                cur->records++;
            }
        } else {
            n = MIN(len, MEM_REC_SIZE - cur->rec_off);
            if (apply) {
                memcpy(ds->mem + cur->page * DEVSTATE_PAGE_SIZE +
                       cur->rec_off - 8, buf, n);
            }
        }
        cur->rec_off = (cur->rec_off + n) % MEM_REC_SIZE;
        buf += n;
        len -= n;
    }
    return true;
}

/*
 * SET_BUFFER: take min(R, size - pos) bytes from the region.  The chunk is
 * checked whole (the header with the first chunk) before any of it is
 * applied, and then applied in place: no staging copy of the set.  A bad
 * chunk changes nothing and aborts the set; chunks before it stay applied
 * (each page a valid page of the source), and QEMU resets a device whose
 * load failed.
 */
static int mem_set_buffer(Devstate *ds)
{
    DevstateDataSet *set = &ds->load_set;
    uint64_t chunk = ds->region_size[DEVSTATE_REGION_DATA_MEMORY];
    const uint8_t *buf = ds->region_buf[DEVSTATE_REGION_DATA_MEMORY];
    DevstateLoadCursor check;
    uint64_t len, skip = 0;
    int ret;

    if (ds->state != VFIO_DEVICE_DATA_STATE_STOP) {
        return -EBUSY;
    }
    if (!set->open) {
        devstate_log(ds, "SET_BUFFER refused: no data set open");
        return -EINVAL;
    }
    ret = devstate_fault(ds, FAULT_MEM_SET, -1, -1);
    if (ret) {
        return ret;
    }
    len = MIN(chunk, set->size - set->pos);
    if (set->pos == 0) {
        ret = mem_check_hdr(ds, buf);           /* chunk >= 64 KiB */
        if (ret) {
            load_set_close(ds);
            return ret;
        }
        skip = MEM_HDR_SIZE;
    }
    check = set->cur;
    if (!mem_load_walk(ds, &check, buf + skip, len - skip, false)) {
        load_set_close(ds);
        return -EINVAL;
    }
    mem_load_walk(ds, &set->cur, buf + skip, len - skip, true);
    set->pos += len;
    ds->ctl.device_memory.pos = set->pos;
    if (set->pos == set->size) {
        devstate_log(ds, "data set loaded: %" G_GUINT64_FORMAT " pages",
                     set->cur.records);
        load_set_close(ds);
    }
    return 0;
}

/* Config blob */

static int config_get_buffer(Devstate *ds)
{
    g_autoptr(GByteArray) blob = g_byte_array_new();
    g_autoptr(GChecksum) sum = g_checksum_new(G_CHECKSUM_SHA256);
    struct devstate_config_hdr hdr = {
        .magic = GUINT32_TO_LE(DEVSTATE_CONFIG_MAGIC),
        .interface_version = GUINT32_TO_LE(VFIO_DEVICE_DATA_INTERFACE_VERSION),
        .major = GUINT32_TO_LE(ds->ver_major),
        .minor = GUINT32_TO_LE(ds->ver_minor),
        .bugfix = GUINT32_TO_LE(ds->ver_bugfix),
    };
    uint8_t digest[SHA256_LEN];
    gsize dlen = sizeof(digest);
    int ret;

    if (!(ds->state & VFIO_DEVICE_DATA_STATE_STOP)) {
        return -EBUSY;
    }
    ret = devstate_fault(ds, FAULT_CONFIG_GET, -1, -1);
    if (ret) {
        return ret;
    }
    g_strlcpy(hdr.identity, ds->identity, sizeof(hdr.identity));
    g_byte_array_append(blob, (const guint8 *)&hdr, sizeof(hdr));
    devstate_config_payload(ds, blob);
    ((struct devstate_config_hdr *)blob->data)->payload_len =
        GUINT32_TO_LE(blob->len - sizeof(hdr));
    g_checksum_update(sum, blob->data, blob->len);
    g_checksum_get_digest(sum, digest, &dlen);
    g_byte_array_append(blob, digest, sizeof(digest));

    memcpy(ds->region_buf[DEVSTATE_REGION_DATA_CONFIG], blob->data, blob->len);
    ds->ctl.device_config.size = blob->len;
    devstate_log(ds, "config saved: %u bytes", blob->len);
    return 0;
}

static int config_set_buffer(Devstate *ds)
{
    uint64_t len = ds->ctl.device_config.size;
    const uint8_t *buf = ds->region_buf[DEVSTATE_REGION_DATA_CONFIG];
    g_autoptr(GChecksum) sum = g_checksum_new(G_CHECKSUM_SHA256);
    struct devstate_config_hdr hdr;
    uint8_t digest[SHA256_LEN];
    gsize dlen = sizeof(digest);
    int ret;

    if (ds->state != VFIO_DEVICE_DATA_STATE_STOP) {
        return -EBUSY;
    }
    ret = devstate_fault(ds, FAULT_CONFIG_SET, -1, -1);
    if (ret) {
        return ret;
    }
    if (len < sizeof(hdr) + SHA256_LEN) {
        devstate_log(ds, "config refused: %" G_GUINT64_FORMAT " bytes", len);
        return -EINVAL;
    }
    memcpy(&hdr, buf, sizeof(hdr));
    g_checksum_update(sum, buf, len - SHA256_LEN);
    g_checksum_get_digest(sum, digest, &dlen);
    if (GUINT32_FROM_LE(hdr.magic) != DEVSTATE_CONFIG_MAGIC ||
        GUINT32_FROM_LE(hdr.interface_version) !=
        VFIO_DEVICE_DATA_INTERFACE_VERSION ||
        GUINT32_FROM_LE(hdr.payload_len) !=
        len - sizeof(hdr) - SHA256_LEN ||
        memcmp(digest, buf + len - SHA256_LEN, SHA256_LEN) ||
        strncmp(hdr.identity, ds->identity, sizeof(hdr.identity)) ||
        GUINT32_FROM_LE(hdr.major) != ds->ver_major ||
        GUINT32_FROM_LE(hdr.minor) > ds->ver_minor ||
        !devstate_config_payload_apply(ds, buf + sizeof(hdr),
                                       len - sizeof(hdr) - SHA256_LEN)) {
        devstate_log(ds, "config refused: invalid blob");
        return -EINVAL;
    }
    devstate_log(ds, "config loaded: %" G_GUINT64_FORMAT " bytes", len);
    return 0;
}

/* System-memory dirty bitmap: query and clear */
static int get_bitmap(Devstate *ds)
{
    uint64_t start = ds->ctl.system_memory.start_pfn;
    uint64_t nr = ds->ctl.system_memory.page_nr;
    uint64_t *out = (uint64_t *)ds->region_buf[DEVSTATE_REGION_DATA_BITMAP];
    uint64_t *block = NULL;
    uint64_t i, cur = G_MAXUINT64;
    int ret;

    if (!nr || nr > ds->region_size[DEVSTATE_REGION_DATA_BITMAP] * 8 ||
        start + nr < start) {
        return -EINVAL;
    }
    ret = devstate_fault(ds, FAULT_BITMAP, -1, -1);
    if (ret) {
        return ret;
    }
    memset(out, 0, (nr + 63) / 64 * 8);
    for (i = 0; i < nr; i++) {
        uint64_t pfn = start + i;
        uint64_t *w;

        if ((pfn >> 15) != cur) {
            cur = pfn >> 15;
            block = g_hash_table_lookup(ds->sys_dirty, GSIZE_TO_POINTER(cur));
        }
        if (!block) {
            i += 0x7fff - (pfn & 0x7fff);       /* skip the empty block */
            continue;
        }
        w = &block[(pfn & 0x7fff) / 64];
        if (*w & (1ull << (pfn % 64))) {
            *w &= ~(1ull << (pfn % 64));
            out[i / 64] |= GUINT64_TO_LE(1ull << (i % 64));
        }
    }
    return 0;
}

/* The state machine */

static void logging_start(Devstate *ds)
{
    uint64_t words = (ds->nr_pages + 63) / 64;

    /* Every page dirty: the first data set is a whole snapshot */
    memset(ds->mem_dirty, 0xff, words * 8);
    if (ds->nr_pages % 64) {
        ds->mem_dirty[words - 1] = (1ull << (ds->nr_pages % 64)) - 1;
    }
    ds->mem_dirty_count = ds->nr_pages;
    ds->session_sets = 0;
    g_hash_table_remove_all(ds->sys_dirty);
    save_set_close(ds);
}

static void logging_stop(Devstate *ds)
{
    memset(ds->mem_dirty, 0, (ds->nr_pages + 63) / 64 * 8);
    ds->mem_dirty_count = 0;
    g_hash_table_remove_all(ds->sys_dirty);
    save_set_close(ds);
}

/*
 * Valid: RUNNING, P2P (with CAP_P2P) and STOP, each with or without
 * LOGGING.  STOP|P2P is not a state.
 */
static bool state_valid(Devstate *ds, uint32_t s)
{
    if (s & ~VFIO_DEVICE_DATA_STATE_MASK) {
        return false;
    }
    if (s & VFIO_DEVICE_DATA_STATE_P2P) {
        return !(s & VFIO_DEVICE_DATA_STATE_STOP) &&
            (ds->ctl.caps & VFIO_DEVICE_DATA_CAP_P2P);
    }
    return true;
}

static int set_state(Devstate *ds, uint32_t new)
{
    uint32_t old = ds->state;
    int ret;

    if (!state_valid(ds, new)) {
        devstate_log(ds, "state %s -> 0x%x refused: %s",
                     devstate_state_name(old), new, g_strerror(EINVAL));
        return -EINVAL;
    }
    if (new == old) {
        return 0;
    }
    ret = devstate_fault(ds, FAULT_ARC, old, new);
    if (ret) {
        devstate_log(ds, "state %s -> %s failed: %s", devstate_state_name(old),
                     devstate_state_name(new), g_strerror(-ret));
        return ret;
    }
    if ((new ^ old) & VFIO_DEVICE_DATA_STATE_LOGGING) {
        if (new & VFIO_DEVICE_DATA_STATE_LOGGING) {
            logging_start(ds);
        } else {
            logging_stop(ds);
        }
    }
    if (new != VFIO_DEVICE_DATA_STATE_STOP) {
        load_set_close(ds);                     /* loads are STOP only */
    }
    ds->state = new;
    ds->ctl.device_state = new;
    devstate_log(ds, "state %s -> %s", devstate_state_name(old),
                 devstate_state_name(new));
    devstate_irq_flush(ds);                     /* held in P2P */
    return 0;
}

/* The control region: one aligned access per field, of the field's width */

enum { RO, RW, WO };

static const struct {
    unsigned off, width, access;
    const char *name;
} ctl_fields[] = {
    { 0, 4, RO, "version" },
    { 4, 4, RW, "device_state" },
    { 8, 4, RO, "caps" },
    { 12, 4, RO, "reserved" },
    { 16, 4, WO, "device_config.action" },
    { 20, 4, RO, "device_config.reserved" },
    { 24, 8, RW, "device_config.size" },
    { 32, 4, WO, "device_memory.action" },
    { 36, 4, RO, "device_memory.reserved" },
    { 40, 8, RW, "device_memory.size" },
    { 48, 8, RO, "device_memory.pos" },
    { 56, 8, RO, "device_memory.pending" },
    { 64, 8, WO, "system_memory.start_pfn" },
    { 72, 8, WO, "system_memory.page_nr" },
    { 80, 4, WO, "system_memory.action" },
    { 84, 4, RO, "system_memory.page_shift" },
};

G_STATIC_ASSERT(sizeof(struct vfio_device_state_ctl) == 88);
G_STATIC_ASSERT(offsetof(struct vfio_device_state_ctl,
                         device_memory.pos) == 48);
G_STATIC_ASSERT(offsetof(struct vfio_device_state_ctl,
                         device_memory.pending) == 56);
G_STATIC_ASSERT(offsetof(struct vfio_device_state_ctl,
                         system_memory.start_pfn) == 64);
G_STATIC_ASSERT(offsetof(struct vfio_device_state_ctl,
                         system_memory.page_shift) == 84);

static int ctl_write(Devstate *ds, unsigned off, uint64_t val)
{
    struct vfio_device_state_ctl *c = &ds->ctl;

    switch (off) {
    case 4:
        return set_state(ds, val);
    case 16:
        if (val == VFIO_DEVICE_DATA_ACTION_GET_BUFFER) {
            return config_get_buffer(ds);
        } else if (val == VFIO_DEVICE_DATA_ACTION_SET_BUFFER) {
            return config_set_buffer(ds);
        }
        return -EINVAL;
    case 24:
        if (val > ds->region_size[DEVSTATE_REGION_DATA_CONFIG]) {
            return -EINVAL;
        }
        c->device_config.size = val;
        return 0;
    case 32:
        if (val == VFIO_DEVICE_DATA_ACTION_GET_BUFFER) {
            return mem_get_buffer(ds);
        } else if (val == VFIO_DEVICE_DATA_ACTION_SET_BUFFER) {
            return mem_set_buffer(ds);
        }
        return -EINVAL;
    case 40:
        return mem_set_size(ds, val);
    case 64:
        c->system_memory.start_pfn = val;
        return 0;
    case 72:
        c->system_memory.page_nr = val;
        return 0;
    case 80:
        return val == VFIO_DEVICE_DATA_ACTION_GET_BITMAP ? get_bitmap(ds) :
            -EINVAL;
    }
    return -EINVAL;
}

static uint64_t ctl_read(Devstate *ds, unsigned off)
{
    struct vfio_device_state_ctl *c = &ds->ctl;

    switch (off) {
    case 0:
        return c->version;
    case 4:
        return ds->state;
    case 8:
        return c->caps;
    case 24:
        return c->device_config.size;
    case 40:
        if (ds->load_set.open) {
            return ds->load_set.size;
        }
        if (!ds->save_set.open) {
            save_set_open(ds);
            return ds->save_set.open ? ds->save_set.size : 0;
        }
        return ds->save_set.size;
    case 48:
        return c->device_memory.pos;
    case 56:
        return mem_pending(ds);
    case 84:
        return c->system_memory.page_shift;
    }
    return 0;                                   /* reserved, actions */
}

static int ctl_access(Devstate *ds, uint64_t off, uint32_t count, void *buf,
                      bool is_write)
{
    unsigned i;
    uint64_t val = 0;
    int ret;

    for (i = 0; i < G_N_ELEMENTS(ctl_fields); i++) {
        if (ctl_fields[i].off == off) {
            break;
        }
    }
    if (i == G_N_ELEMENTS(ctl_fields) || ctl_fields[i].width != count ||
        (is_write && ctl_fields[i].access == RO)) {
        devstate_log(ds, "ctl: bad %s of %u bytes at %" G_GUINT64_FORMAT,
                     is_write ? "write" : "read", count, off);
        return -EINVAL;
    }
    if (!is_write) {
        val = GUINT64_TO_LE(ctl_read(ds, off));
        memcpy(buf, &val, count);               /* little-endian host */
        devstate_log(ds, "ctl: read %s = 0x%" G_GINT64_MODIFIER "x",
                     ctl_fields[i].name, GUINT64_FROM_LE(val));
        return 0;
    }
    memcpy(&val, buf, count);
    val = GUINT64_FROM_LE(val);
    ret = ctl_write(ds, off, val);
    devstate_log(ds, "ctl: write %s = 0x%" G_GINT64_MODIFIER "x%s%s",
                 ctl_fields[i].name, val, ret ? ": " : "",
                 ret ? g_strerror(-ret) : "");
    return ret;
}

/* One decimal part: digits only, no sign or blank, fits 32 bits */
static bool parse_part(const char **p, uint32_t *out)
{
    uint64_t v = 0;
    const char *s = *p;

    if (!g_ascii_isdigit(*s)) {
        return false;
    }
    for (; g_ascii_isdigit(*s); s++) {
        v = v * 10 + (*s - '0');
        if (v > G_MAXUINT32) {
            return false;
        }
    }
    *out = v;
    *p = s;
    return true;
}

/*
 * "<identity>-<major>.<minor>.<bugfix>" with at most one trailing
 * newline; the identity is printable ASCII without blanks and ends at the
 * last '-'.  *identity is allocated on success.
 */
bool devstate_parse_version(const char *s, char **identity, uint32_t *major,
                            uint32_t *minor, uint32_t *bugfix)
{
    const char *dash = strrchr(s, '-'), *p, *c;

    if (!dash || dash == s) {
        return false;
    }
    for (c = s; c < dash; c++) {
        if (!g_ascii_isgraph(*c)) {
            return false;
        }
    }
    p = dash + 1;
    if (!parse_part(&p, major) || *p++ != '.' ||
        !parse_part(&p, minor) || *p++ != '.' ||
        !parse_part(&p, bugfix)) {
        return false;
    }
    if (*p == '\n') {
        p++;
    }
    if (*p) {
        return false;
    }
    *identity = g_strndup(s, dash - s);
    return true;
}

/* migration_version: written NUL-terminated, or the whole write a string */
static int version_check(Devstate *ds, const char *buf, uint32_t count)
{
    g_autofree char *s = g_strndup(buf, count);
    g_autofree char *id = NULL;
    g_autofree char *shown = NULL;
    uint32_t major, minor, bugfix;
    int ret;

    ret = devstate_fault(ds, FAULT_VERSION, -1, -1);
    if (ret) {
        return ret;
    }
    shown = g_strescape(s, NULL);
    if (memchr(buf, 0, count) && strlen(s) + 1 != count) {
        devstate_log(ds, "version '%s' refused: bytes after the NUL", shown);
        return -EINVAL;
    }
    if (!devstate_parse_version(s, &id, &major, &minor, &bugfix)) {
        devstate_log(ds, "version '%s' refused: not "
                     "IDENTITY-MAJOR.MINOR.BUGFIX", shown);
        return -EINVAL;
    }
    if (strcmp(id, ds->identity) || major != ds->ver_major ||
        minor > ds->ver_minor) {
        devstate_log(ds, "version '%s-%u.%u.%u' refused by %s", id, major,
                     minor, bugfix, ds->version_str);
        return -EPROTO;
    }
    devstate_log(ds, "version '%s-%u.%u.%u' accepted", id, major, minor,
                 bugfix);
    return 0;
}

int devstate_region_access(Devstate *ds, unsigned index, uint64_t off,
                           uint32_t count, void *buf, bool is_write)
{
    uint64_t size = ds->region_size[index];

    if (off > size || count > size - off || !count) {
        return -EINVAL;
    }
    switch (index) {
    case DEVSTATE_REGION_BAR0:
        return devstate_bar0_access(ds, off, count, buf, is_write);
    case DEVSTATE_REGION_BAR1:
        return devstate_bar1_access(ds, off, count, buf, is_write);
    case DEVSTATE_REGION_CONFIG:
        return devstate_pci_cfg_access(ds, off, count, buf, is_write);
    case DEVSTATE_REGION_CTL:
        return ctl_access(ds, off, count, buf, is_write);
    case DEVSTATE_REGION_VERSION:
        if (!is_write) {
            memcpy(buf, ds->version_str + off, count);
            return 0;
        }
        return off ? -EINVAL : version_check(ds, buf, count);
    case DEVSTATE_REGION_DATA_CONFIG:
    case DEVSTATE_REGION_DATA_MEMORY:
    case DEVSTATE_REGION_DATA_BITMAP:
        if (is_write) {
            memcpy(ds->region_buf[index] + off, buf, count);
        } else {
            memcpy(buf, ds->region_buf[index] + off, count);
        }
        return 0;
    }
    return -EINVAL;
}

/*
 * The bytes a read of a data region returns, in place (no copy): NULL for
 * other regions and for accesses out of bounds.
 */
const uint8_t *devstate_region_data(Devstate *ds, unsigned index,
                                    uint64_t off, uint32_t count)
{
    uint64_t size;

    if (index != DEVSTATE_REGION_DATA_CONFIG &&
        index != DEVSTATE_REGION_DATA_MEMORY &&
        index != DEVSTATE_REGION_DATA_BITMAP) {
        return NULL;
    }
    size = ds->region_size[index];
    if (!count || off > size || count > size - off) {
        return NULL;
    }
    return ds->region_buf[index] + off;
}

static void region_alloc(Devstate *ds, unsigned index, const char *name)
{
    uint64_t size = ds->region_size[index];
    int fd = memfd_create(name, MFD_CLOEXEC);

    if (fd < 0 || ftruncate(fd, size) < 0) {
        g_error("memfd for %s: %s", name, g_strerror(errno));
    }
    ds->region_buf[index] = mmap(NULL, size, PROT_READ | PROT_WRITE,
                                 MAP_SHARED | MAP_POPULATE, fd, 0);
    if (ds->region_buf[index] == MAP_FAILED) {
        g_error("mmap of %s: %s", name, g_strerror(errno));
    }
    ds->region_fd[index] = fd;
}

void devstate_regions_init(Devstate *ds)
{
    unsigned i;

    for (i = 0; i < DEVSTATE_NUM_REGIONS; i++) {
        ds->region_fd[i] = -1;
    }
    ds->region_size[DEVSTATE_REGION_BAR0] = DEVSTATE_BAR0_SIZE;
    ds->region_size[DEVSTATE_REGION_BAR1] = DEVSTATE_BAR1_SIZE;
    ds->region_size[DEVSTATE_REGION_CONFIG] = DEVSTATE_CFG_SPACE_SIZE;
    ds->region_size[DEVSTATE_REGION_CTL] = sizeof(struct vfio_device_state_ctl);
    ds->region_size[DEVSTATE_REGION_DATA_CONFIG] = DEVSTATE_DATA_CONFIG_SIZE;
    ds->region_size[DEVSTATE_REGION_DATA_MEMORY] = ds->chunk_size;
    ds->region_size[DEVSTATE_REGION_DATA_BITMAP] = ds->bitmap_size;
    ds->region_size[DEVSTATE_REGION_VERSION] = VFIO_DEVICE_DATA_VERSION_MAX;
    region_alloc(ds, DEVSTATE_REGION_DATA_CONFIG, "devstate-config");
    region_alloc(ds, DEVSTATE_REGION_DATA_MEMORY, "devstate-memory");
    region_alloc(ds, DEVSTATE_REGION_DATA_BITMAP, "devstate-bitmap");

    g_snprintf(ds->version_str, sizeof(ds->version_str), "%s-%u.%u.%u",
               ds->identity, ds->ver_major, ds->ver_minor, ds->ver_bugfix);
    devstate_regions_reset(ds);
}

/* Back to RUNNING, the logging session ended, no data set open */
void devstate_regions_reset(Devstate *ds)
{
    save_set_close(ds);
    load_set_close(ds);
    logging_stop(ds);
    memset(&ds->ctl, 0, sizeof(ds->ctl));
    ds->ctl.version = VFIO_DEVICE_DATA_INTERFACE_VERSION;
    ds->ctl.caps = VFIO_DEVICE_DATA_CAP_DEVICE_MEMORY |
        VFIO_DEVICE_DATA_CAP_SYSTEM_MEMORY |
        (ds->no_p2p ? 0 : VFIO_DEVICE_DATA_CAP_P2P);
    ds->ctl.system_memory.page_shift = DEVSTATE_PAGE_SHIFT;
    if (ds->state != VFIO_DEVICE_DATA_STATE_RUNNING) {
        devstate_log(ds, "state %s -> RUNNING (reset)",
                     devstate_state_name(ds->state));
    }
    ds->state = VFIO_DEVICE_DATA_STATE_RUNNING;
}
