// SPDX-License-Identifier: GPL-2.0-or-later
/*
 * vfio-devstate-hostile: hostile-userspace checks of a kernel device that
 * implements the device-state region interface, through the VFIO uAPI
 * (legacy type1 container, group, device fd).  Run inside L2 by
 * tooling/kernel-tests.sh.
 *
 *   vfio-devstate-hostile UUID      (the mdev /sys/bus/mdev/devices/UUID)
 *
 * Every bad access must fail with the errno of the spec
 * (shared/design/device-state-interface.md, sections 2-7) and change
 * nothing that can be read back.  Prints "PASS  name" / "FAIL  name" per
 * check, a reason under each failure; exits 1 if any check failed.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <unistd.h>
#include <linux/vfio.h>

#define CTL_VERSION	0
#define CTL_STATE	4
#define CTL_CAPS	8
#define CTL_RESERVED	12
#define CTL_CFG_ACTION	16
#define CTL_CFG_SIZE	24
#define CTL_MEM_ACTION	32
#define CTL_MEM_SIZE	40
#define CTL_MEM_POS	48
#define CTL_MEM_PENDING	56
#define CTL_SYS_START	64
#define CTL_SYS_NR	72
#define CTL_SYS_ACTION	80
#define CTL_SYS_SHIFT	84
#define CTL_SIZE	88

#define RUNNING		VFIO_DEVICE_DATA_STATE_RUNNING
#define STOP		VFIO_DEVICE_DATA_STATE_STOP
#define LOGGING		VFIO_DEVICE_DATA_STATE_LOGGING
#define P2P		VFIO_DEVICE_DATA_STATE_P2P

_Static_assert(sizeof(struct vfio_device_state_ctl) == CTL_SIZE,
	       "struct vfio_device_state_ctl is 88 bytes");

struct region {
	bool present;
	uint32_t index;
	uint64_t offset, size;
	uint32_t flags;
};

static const char *uuid;
static int devfd = -1;
static struct region ctl, cfg, mem, bmap, ver;
static uint32_t caps;
static int failures, checks;
static char why[1024];
static bool failed_now;

/* Record the first reason a check fails. */
static void fail(const char *fmt, ...)
{
	va_list ap;
	size_t n = strlen(why);

	if (!failed_now) {
		failed_now = true;
		why[0] = 0;
		n = 0;
	}
	if (n >= sizeof(why) - 2)
		return;
	if (n) {
		memcpy(why + n, "; ", 3);
		n += 2;
	}
	va_start(ap, fmt);
	vsnprintf(why + n, sizeof(why) - n, fmt, ap);
	va_end(ap);
}

static void check(const char *name, void (*fn)(void))
{
	failed_now = false;
	why[0] = 0;
	fn();
	checks++;
	if (failed_now) {
		failures++;
		printf("FAIL  kernel: %s\n      %s (device %s)\n", name, why,
		       uuid);
	} else {
		printf("PASS  kernel: %s\n", name);
	}
	fflush(stdout);
}

/* One access of WIDTH bytes at OFF of region R: 0 or the errno. */
static int rw_region(const struct region *r, bool write, uint64_t off,
		     unsigned int width, void *buf)
{
	ssize_t n;

	if (write)
		n = pwrite(devfd, buf, width, r->offset + off);
	else
		n = pread(devfd, buf, width, r->offset + off);
	if (n < 0)
		return errno;
	if ((size_t)n != width)
		return -1;	/* short access: never a valid answer */
	return 0;
}

static int ctl_write(uint64_t off, unsigned int width, uint64_t v)
{
	return rw_region(&ctl, true, off, width, &v);
}

static int ctl_read(uint64_t off, unsigned int width, uint64_t *v)
{
	*v = 0;
	return rw_region(&ctl, false, off, width, v);
}

/* A field that must read fine; a failed read is a failure of the check. */
static uint64_t field(uint64_t off, unsigned int width)
{
	uint64_t v;
	int err = ctl_read(off, width, &v);

	if (err)
		fail("read of ctl offset %" PRIu64 " width %u: %s", off,
		     width, err > 0 ? strerror(err) : "short read");
	return v;
}

static uint32_t get_state(void)
{
	return field(CTL_STATE, 4);
}

static int set_state(uint32_t s)
{
	return ctl_write(CTL_STATE, 4, s);
}

/* What a bad access must leave as it was (reads without side effects). */
struct snap {
	uint64_t version, state, caps, reserved, cfg_size, pos, pending, shift;
};

static struct snap snapshot(void)
{
	struct snap s = {
		.version = field(CTL_VERSION, 4),
		.state = field(CTL_STATE, 4),
		.caps = field(CTL_CAPS, 4),
		.reserved = field(CTL_RESERVED, 4),
		.cfg_size = field(CTL_CFG_SIZE, 8),
		.pos = field(CTL_MEM_POS, 8),
		.pending = field(CTL_MEM_PENDING, 8),
		.shift = field(CTL_SYS_SHIFT, 4),
	};
	return s;
}

static void same(const char *what, struct snap a)
{
	struct snap b = snapshot();

#define CMP(f) do { if (a.f != b.f) \
	fail("%s changed " #f ": 0x%" PRIx64 " -> 0x%" PRIx64, what, \
	     a.f, b.f); } while (0)
	CMP(version);
	CMP(state);
	CMP(caps);
	CMP(reserved);
	CMP(cfg_size);
	CMP(pos);
	/* in a running logging session the device may dirty more memory */
	if (!(a.state & LOGGING) || (a.state & STOP))
		CMP(pending);
	CMP(shift);
#undef CMP
}

/* A write that must fail with WANT and change nothing. */
static void bad_write(const char *what, uint64_t off, unsigned int width,
		      uint64_t v, int want)
{
	struct snap before = snapshot();
	int err = ctl_write(off, width, v);

	if (err != want)
		fail("%s (ctl offset %" PRIu64 ", width %u, value 0x%" PRIx64
		     "): got %s, want %s", what, off, width, v,
		     err > 0 ? strerror(err) : err ? "a short write" :
		     "success", strerror(want));
	same(what, before);
}

static void bad_read(const char *what, uint64_t off, unsigned int width,
		     int want)
{
	uint64_t v[2];
	int err = rw_region(&ctl, false, off, width, v);

	if (err != want)
		fail("%s (ctl offset %" PRIu64 ", width %u): got %s, want %s",
		     what, off, width, err > 0 ? strerror(err) :
		     err ? "a short read" : "success", strerror(want));
}

static void must(const char *what, int err)
{
	if (err)
		fail("%s: %s", what, err > 0 ? strerror(err) : "short access");
}

/* ---- setup: container, group, device fd ---- */

static void open_device(void)
{
	char path[PATH_MAX + 16], link[PATH_MAX];
	struct vfio_group_status gs = { .argsz = sizeof(gs) };
	const char *g;
	ssize_t n;
	int container, group;

	snprintf(path, sizeof(path), "/sys/bus/mdev/devices/%s/iommu_group",
		 uuid);
	n = readlink(path, link, sizeof(link) - 1);
	if (n < 0) {
		fail("%s: %s", path, strerror(errno));
		return;
	}
	link[n] = 0;
	g = strrchr(link, '/');
	g = g ? g + 1 : link;
	container = open("/dev/vfio/vfio", O_RDWR | O_CLOEXEC);
	if (container < 0) {
		fail("/dev/vfio/vfio: %s", strerror(errno));
		return;
	}
	if (ioctl(container, VFIO_GET_API_VERSION) != VFIO_API_VERSION)
		fail("VFIO_GET_API_VERSION is not %d", VFIO_API_VERSION);
	if (ioctl(container, VFIO_CHECK_EXTENSION, VFIO_TYPE1v2_IOMMU) <= 0)
		fail("the container has no VFIO_TYPE1v2_IOMMU");
	snprintf(path, sizeof(path), "/dev/vfio/%s", g);
	group = open(path, O_RDWR | O_CLOEXEC);
	if (group < 0) {
		fail("%s: %s", path, strerror(errno));
		return;
	}
	if (ioctl(group, VFIO_GROUP_GET_STATUS, &gs) < 0 ||
	    !(gs.flags & VFIO_GROUP_FLAGS_VIABLE)) {
		fail("group %s is not viable", g);
		return;
	}
	if (ioctl(group, VFIO_GROUP_SET_CONTAINER, &container) < 0) {
		fail("VFIO_GROUP_SET_CONTAINER: %s", strerror(errno));
		return;
	}
	if (ioctl(container, VFIO_SET_IOMMU, VFIO_TYPE1v2_IOMMU) < 0) {
		fail("VFIO_SET_IOMMU: %s", strerror(errno));
		return;
	}
	if (ioctl(group, VFIO_GROUP_GET_DEVICE_FD, "no-such-device") >= 0 ||
	    errno != ENODEV)
		fail("GET_DEVICE_FD of an unknown name did not fail with ENODEV");
	devfd = ioctl(group, VFIO_GROUP_GET_DEVICE_FD, uuid);
	if (devfd < 0)
		fail("VFIO_GROUP_GET_DEVICE_FD(%s): %s", uuid, strerror(errno));
}

/* ---- regions ---- */

static void region_info(void)
{
	struct vfio_device_info di = { .argsz = sizeof(di) };
	struct region *by_sub[6] = { NULL, &ctl, &cfg, &mem, &bmap, &ver };
	uint32_t i;

	if (ioctl(devfd, VFIO_DEVICE_GET_INFO, &di) < 0) {
		fail("VFIO_DEVICE_GET_INFO: %s", strerror(errno));
		return;
	}
	for (i = 0; i < di.num_regions; i++) {
		union {
			struct vfio_region_info info;
			char buf[4096];
		} u = { .info = { .argsz = sizeof(u), .index = i } };
		uint32_t off;

		if (ioctl(devfd, VFIO_DEVICE_GET_REGION_INFO, &u) < 0) {
			if (errno != EINVAL)
				fail("REGION_INFO %u: %s", i, strerror(errno));
			continue;
		}
		if (u.info.argsz > sizeof(u)) {
			fail("REGION_INFO %u: argsz %u too big", i, u.info.argsz);
			continue;
		}
		if (!(u.info.flags & VFIO_REGION_INFO_FLAG_CAPS))
			continue;
		for (off = u.info.cap_offset; off;) {
			struct vfio_info_cap_header *h;

			if (off < sizeof(u.info) || off + sizeof(*h) > u.info.argsz) {
				fail("REGION_INFO %u: cap offset %u out of range",
				     i, off);
				break;
			}
			h = (void *)(u.buf + off);
			if (h->id == VFIO_REGION_INFO_CAP_TYPE) {
				struct vfio_region_info_cap_type *t = (void *)h;

				if (t->header.version != 1)
					fail("region %u: type cap version %u", i,
					     t->header.version);
				if (t->type == VFIO_REGION_TYPE_DEVICE_STATE) {
					struct region *r;

					if (t->subtype < 1 || t->subtype > 5) {
						fail("region %u: unknown subtype %u",
						     i, t->subtype);
						break;
					}
					r = by_sub[t->subtype];
					if (r->present)
						fail("subtype %u twice", t->subtype);
					r->present = true;
					r->index = i;
					r->offset = u.info.offset;
					r->size = u.info.size;
					r->flags = u.info.flags;
				}
			}
			if (h->next && h->next <= off) {
				fail("REGION_INFO %u: cap chain loops", i);
				break;
			}
			off = h->next;
		}
	}
	if (!ctl.present || !cfg.present) {
		fail("the control and config regions are mandatory (ctl %s, config %s)",
		     ctl.present ? "found" : "missing",
		     cfg.present ? "found" : "missing");
		return;
	}
	if (ctl.size < CTL_SIZE)
		fail("control region is %" PRIu64 " bytes, less than %d",
		     ctl.size, CTL_SIZE);
	if ((ctl.flags & (VFIO_REGION_INFO_FLAG_READ | VFIO_REGION_INFO_FLAG_WRITE)) !=
	    (VFIO_REGION_INFO_FLAG_READ | VFIO_REGION_INFO_FLAG_WRITE))
		fail("control region is not read/write (flags 0x%x)", ctl.flags);
	if (ctl.flags & VFIO_REGION_INFO_FLAG_MMAP)
		fail("control region is mmappable");
	caps = field(CTL_CAPS, 4);
	if (caps & ~(VFIO_DEVICE_DATA_CAP_DEVICE_MEMORY |
		     VFIO_DEVICE_DATA_CAP_SYSTEM_MEMORY |
		     VFIO_DEVICE_DATA_CAP_P2P))
		fail("unknown caps 0x%x", caps);
	if (!!(caps & VFIO_DEVICE_DATA_CAP_DEVICE_MEMORY) != mem.present)
		fail("CAP_DEVICE_MEMORY %s but the DATA_MEMORY region is %s",
		     caps & VFIO_DEVICE_DATA_CAP_DEVICE_MEMORY ? "set" : "clear",
		     mem.present ? "there" : "missing");
	if (!!(caps & VFIO_DEVICE_DATA_CAP_SYSTEM_MEMORY) != bmap.present)
		fail("CAP_SYSTEM_MEMORY %s but the DIRTYBITMAP region is %s",
		     caps & VFIO_DEVICE_DATA_CAP_SYSTEM_MEMORY ? "set" : "clear",
		     bmap.present ? "there" : "missing");
}

static void initial_fields(void)
{
	if (field(CTL_VERSION, 4) != VFIO_DEVICE_DATA_INTERFACE_VERSION)
		fail("version is %" PRIu64, field(CTL_VERSION, 4));
	if (get_state() != RUNNING)
		fail("device_state at open is 0x%x, not RUNNING", get_state());
	if (field(CTL_RESERVED, 4) != 0)
		fail("reserved is not 0");
	if (field(CTL_MEM_PENDING, 8) != 0)
		fail("pending is not 0 outside a logging session");
	if (field(CTL_SYS_SHIFT, 4) != 12)
		fail("page_shift is %" PRIu64 ", not 12", field(CTL_SYS_SHIFT, 4));
}

static void misaligned(void)
{
	bad_write("misaligned device_state write", CTL_STATE + 1, 4, STOP, EINVAL);
	bad_write("misaligned device_state write", CTL_STATE + 2, 2, STOP, EINVAL);
	bad_write("misaligned config size write", CTL_CFG_SIZE + 4, 8, 16, EINVAL);
	bad_write("misaligned start_pfn write", CTL_SYS_START + 4, 8, 1, EINVAL);
	bad_write("misaligned action write", CTL_MEM_ACTION + 1, 4,
		  VFIO_DEVICE_DATA_ACTION_GET_BUFFER, EINVAL);
	bad_read("misaligned version read", CTL_VERSION + 1, 4, EINVAL);
	bad_read("misaligned pos read", CTL_MEM_POS + 4, 8, EINVAL);
}

static void wrong_width(void)
{
	bad_write("1-byte device_state write", CTL_STATE, 1, STOP, EINVAL);
	bad_write("2-byte device_state write", CTL_STATE, 2, STOP, EINVAL);
	bad_write("8-byte write over device_state and caps", CTL_STATE - 4, 8,
		  (uint64_t)STOP << 32 | 1, EINVAL);
	bad_write("4-byte write to the 8-byte config size", CTL_CFG_SIZE, 4, 8,
		  EINVAL);
	bad_write("8-byte write over an action and its reserved word",
		  CTL_CFG_ACTION, 8, VFIO_DEVICE_DATA_ACTION_GET_BUFFER, EINVAL);
	bad_read("8-byte read over device_state and caps", CTL_STATE - 4, 8,
		 EINVAL);
	bad_read("2-byte read of device_state", CTL_STATE, 2, EINVAL);
	bad_read("16-byte read of the config size", CTL_CFG_SIZE, 16, EINVAL);
}

static void read_only(void)
{
	bad_write("write to version", CTL_VERSION, 4, 2, EINVAL);
	bad_write("write to caps", CTL_CAPS, 4, 0, EINVAL);
	bad_write("write to reserved", CTL_RESERVED, 4, 1, EINVAL);
	bad_write("write to device_config.reserved", CTL_CFG_ACTION + 4, 4, 1,
		  EINVAL);
	bad_write("write to device_memory.pos", CTL_MEM_POS, 8, 4096, EINVAL);
	bad_write("write to device_memory.pending", CTL_MEM_PENDING, 8, 1,
		  EINVAL);
	bad_write("write to page_shift", CTL_SYS_SHIFT, 4, 16, EINVAL);
}

static void past_end(void)
{
	uint64_t v = 0;

	bad_write("write at the end of the control struct", CTL_SIZE, 4, 0,
		  EINVAL);
	bad_read("read at the end of the control struct", CTL_SIZE, 4, EINVAL);
	bad_read("read of the whole struct at once", 0, 16, EINVAL);
	if (!rw_region(&ctl, false, ctl.size, 4, &v))
		fail("a read past the end of the control region succeeded");
	if (!rw_region(&ctl, false, ctl.size - 2, 4, &v))
		fail("a read across the end of the control region succeeded");
}

static void invalid_states(void)
{
	bad_write("STOP|P2P", CTL_STATE, 4, STOP | P2P, EINVAL);
	bad_write("STOP|P2P|LOGGING", CTL_STATE, 4, STOP | P2P | LOGGING, EINVAL);
	bad_write("unknown bit 8", CTL_STATE, 4, 8, EINVAL);
	bad_write("all bits", CTL_STATE, 4, 0xffffffff, EINVAL);
	if (!(caps & VFIO_DEVICE_DATA_CAP_P2P)) {
		bad_write("P2P without CAP_P2P", CTL_STATE, 4, P2P, EINVAL);
		bad_write("P2P|LOGGING without CAP_P2P", CTL_STATE, 4,
			  P2P | LOGGING, EINVAL);
	}
	if (get_state() != RUNNING)
		fail("state is 0x%x after invalid writes", get_state());
}

static void all_arcs(void)
{
	uint32_t states[6] = { RUNNING, RUNNING | LOGGING, STOP,
			       STOP | LOGGING, P2P, P2P | LOGGING };
	unsigned int n = caps & VFIO_DEVICE_DATA_CAP_P2P ? 6 : 4, i, j;
	char what[64];

	for (i = 0; i < n; i++) {
		for (j = 0; j < n; j++) {
			if (i == j)
				continue;
			snprintf(what, sizeof(what), "arc 0x%x -> 0x%x",
				 states[i], states[j]);
			if (get_state() != states[i])
				must(what, set_state(states[i]));
			must(what, set_state(states[j]));
			if (get_state() != states[j])
				fail("%s: state reads 0x%x", what, get_state());
		}
	}
	must("back to RUNNING", set_state(RUNNING));
}

static void unknown_actions(void)
{
	bad_write("config action 0", CTL_CFG_ACTION, 4, 0, EINVAL);
	bad_write("config action GET_BITMAP", CTL_CFG_ACTION, 4,
		  VFIO_DEVICE_DATA_ACTION_GET_BITMAP, EINVAL);
	bad_write("config action 0x80000001", CTL_CFG_ACTION, 4, 0x80000001,
		  EINVAL);
	bad_write("memory action 0", CTL_MEM_ACTION, 4, 0, EINVAL);
	bad_write("memory action GET_BITMAP", CTL_MEM_ACTION, 4,
		  VFIO_DEVICE_DATA_ACTION_GET_BITMAP, EINVAL);
	bad_write("memory action 99", CTL_MEM_ACTION, 4, 99, EINVAL);
	bad_write("system-memory action GET_BUFFER", CTL_SYS_ACTION, 4,
		  VFIO_DEVICE_DATA_ACTION_GET_BUFFER, EINVAL);
	bad_write("system-memory action SET_BUFFER", CTL_SYS_ACTION, 4,
		  VFIO_DEVICE_DATA_ACTION_SET_BUFFER, EINVAL);
	bad_write("system-memory action 0", CTL_SYS_ACTION, 4, 0, EINVAL);
	/* the same in STOP, where the known actions are allowed */
	must("to STOP", set_state(STOP));
	bad_write("config action 0 in STOP", CTL_CFG_ACTION, 4, 0, EINVAL);
	bad_write("memory action 7 in STOP", CTL_MEM_ACTION, 4, 7, EINVAL);
	must("back to RUNNING", set_state(RUNNING));
}

static void wrong_state(void)
{
	bad_write("config save in RUNNING", CTL_CFG_ACTION, 4,
		  VFIO_DEVICE_DATA_ACTION_GET_BUFFER, EBUSY);
	bad_write("config load in RUNNING", CTL_CFG_ACTION, 4,
		  VFIO_DEVICE_DATA_ACTION_SET_BUFFER, EBUSY);
	must("to RUNNING|LOGGING", set_state(RUNNING | LOGGING));
	bad_write("config save in RUNNING|LOGGING", CTL_CFG_ACTION, 4,
		  VFIO_DEVICE_DATA_ACTION_GET_BUFFER, EBUSY);
	must("to STOP|LOGGING", set_state(STOP | LOGGING));
	bad_write("config load in STOP|LOGGING", CTL_CFG_ACTION, 4,
		  VFIO_DEVICE_DATA_ACTION_SET_BUFFER, EBUSY);
	if (mem.present)
		bad_write("memory load in STOP|LOGGING", CTL_MEM_ACTION, 4,
			  VFIO_DEVICE_DATA_ACTION_SET_BUFFER, EBUSY);
	must("to RUNNING", set_state(RUNNING));
	if (mem.present)
		bad_write("memory load in RUNNING", CTL_MEM_ACTION, 4,
			  VFIO_DEVICE_DATA_ACTION_SET_BUFFER, EBUSY);
}

static void sizes(void)
{
	if (mem.present)
		bad_write("device-memory load size in RUNNING", CTL_MEM_SIZE, 8,
			  4096, EBUSY);
	must("to STOP", set_state(STOP));
	bad_write("config size larger than the region", CTL_CFG_SIZE, 8,
		  cfg.size + 1, EINVAL);
	bad_write("config size 2^64-1", CTL_CFG_SIZE, 8, UINT64_MAX, EINVAL);
	if (mem.present) {
		bad_write("device-memory size 2^64-1", CTL_MEM_SIZE, 8,
			  UINT64_MAX, EINVAL);
		bad_write("device-memory size 1", CTL_MEM_SIZE, 8, 1, EINVAL);
		bad_write("device-memory SET_BUFFER with no data set open",
			  CTL_MEM_ACTION, 4, VFIO_DEVICE_DATA_ACTION_SET_BUFFER,
			  EINVAL);
	}
	must("back to RUNNING", set_state(RUNNING));
}

static void bitmap_range(void)
{
	struct snap before;
	int err;

	if (!bmap.present)
		return;
	/* page_nr is checked when it is written or at GET_BITMAP */
	before = snapshot();
	err = ctl_write(CTL_SYS_NR, 8, bmap.size * 8 + 1);
	if (!err)
		err = ctl_write(CTL_SYS_ACTION, 4,
				VFIO_DEVICE_DATA_ACTION_GET_BITMAP);
	if (err != EINVAL)
		fail("page_nr 8 * region size + 1: got %s, want %s",
		     err > 0 ? strerror(err) : err ? "short" : "success",
		     strerror(EINVAL));
	same("page_nr out of range", before);
	err = ctl_write(CTL_SYS_START, 8, UINT64_MAX);
	if (!err)
		err = ctl_write(CTL_SYS_NR, 8, 2);
	if (!err)
		err = ctl_write(CTL_SYS_ACTION, 4,
				VFIO_DEVICE_DATA_ACTION_GET_BITMAP);
	if (err != EINVAL)
		fail("start_pfn + page_nr wrapping: got %s, want %s",
		     err > 0 ? strerror(err) : err ? "short" : "success",
		     strerror(EINVAL));
	same("start_pfn + page_nr wrapping", before);
	/* a good query outside logging reads all zeroes */
	must("start_pfn 0", ctl_write(CTL_SYS_START, 8, 0));
	must("page_nr 64", ctl_write(CTL_SYS_NR, 8, 64));
	must("GET_BITMAP", ctl_write(CTL_SYS_ACTION, 4,
				     VFIO_DEVICE_DATA_ACTION_GET_BITMAP));
	{
		uint64_t word = ~0ull;

		must("bitmap read", rw_region(&bmap, false, 0, 8, &word));
		if (word)
			fail("bitmap outside logging is 0x%" PRIx64, word);
	}
}

static void version_region(void)
{
	char cur[VFIO_DEVICE_DATA_VERSION_MAX + 2];
	static char big[VFIO_DEVICE_DATA_VERSION_MAX + 8];
	int err;

	if (!ver.present)
		return;
	memset(cur, 0, sizeof(cur));
	err = rw_region(&ver, false, 0,
			ver.size < VFIO_DEVICE_DATA_VERSION_MAX ?
			ver.size : VFIO_DEVICE_DATA_VERSION_MAX, cur);
	if (err) {
		fail("reading the VERSION region: %s",
		     err > 0 ? strerror(err) : "short read");
		return;
	}
	if (!memchr(cur, 0, VFIO_DEVICE_DATA_VERSION_MAX) || !cur[0]) {
		fail("the VERSION region holds no NUL-terminated string");
		return;
	}
	err = rw_region(&ver, true, 0, strlen(cur) + 1, cur);
	if (err)
		fail("writing back its own string '%s': %s", cur,
		     err > 0 ? strerror(err) : "short");
	err = rw_region(&ver, true, 1, strlen(cur), cur + 1);
	if (err != EINVAL)
		fail("a write at offset 1: got %s, want EINVAL",
		     err > 0 ? strerror(err) : err ? "short" : "success");
	err = rw_region(&ver, true, 0, 1, "");
	if (!err)
		fail("the empty string was accepted");
	memset(big, 'a', sizeof(big));
	big[sizeof(big) - 1] = 0;
	if (ver.size >= sizeof(big)) {
		err = rw_region(&ver, true, 0, sizeof(big), big);
		if (!err)
			fail("a string longer than %d bytes was accepted",
			     VFIO_DEVICE_DATA_VERSION_MAX);
	}
	snprintf(big, sizeof(big), "%s\x01", cur);
	err = rw_region(&ver, true, 0, strlen(big) + 1, big);
	if (!err)
		fail("a string with a control character was accepted");
	if (get_state() != RUNNING)
		fail("state changed by VERSION writes");
}

static void reset(void)
{
	must("to STOP|LOGGING", set_state(STOP | LOGGING));
	if (ioctl(devfd, VFIO_DEVICE_RESET) < 0)
		fail("VFIO_DEVICE_RESET: %s", strerror(errno));
	if (get_state() != RUNNING)
		fail("state after reset is 0x%x, not RUNNING", get_state());
	if (field(CTL_MEM_PENDING, 8) != 0)
		fail("pending is not 0 after reset (logging not ended)");
}

static void bad_ioctls(void)
{
	struct vfio_region_info ri = { .argsz = 8, .index = ctl.index };
	void *p;

	if (ioctl(devfd, VFIO_DEVICE_GET_REGION_INFO, &ri) >= 0 ||
	    errno != EINVAL)
		fail("REGION_INFO with argsz 8 did not fail with EINVAL");
	ri.argsz = sizeof(ri);
	ri.index = 0xffff;
	if (ioctl(devfd, VFIO_DEVICE_GET_REGION_INFO, &ri) >= 0 ||
	    errno != EINVAL)
		fail("REGION_INFO of index 0xffff did not fail with EINVAL");
	p = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED, devfd,
		 ctl.offset);
	if (p != MAP_FAILED) {
		munmap(p, 4096);
		fail("the control region could be mmapped");
	}
}

int main(int argc, char **argv)
{
	if (argc != 2) {
		fprintf(stderr, "usage: %s MDEV-UUID\n", argv[0]);
		return 2;
	}
	uuid = argv[1];
	check("vfio: container, group, GET_DEVICE_FD by uuid", open_device);
	if (devfd < 0)
		return 1;
	check("region info: device-state regions by type capability",
	      region_info);
	if (!ctl.present)
		return 1;
	check("ctl: fields at open", initial_fields);
	check("ctl: misaligned accesses -> EINVAL, nothing changed", misaligned);
	check("ctl: wrong-width accesses -> EINVAL, nothing changed",
	      wrong_width);
	check("ctl: writes to read-only fields -> EINVAL, nothing changed",
	      read_only);
	check("ctl: accesses past the end -> EINVAL", past_end);
	check("fsm: invalid states -> EINVAL, state unchanged", invalid_states);
	check("fsm: every arc between valid states", all_arcs);
	check("actions: unknown actions -> EINVAL, nothing changed",
	      unknown_actions);
	check("actions: save/load in the wrong state -> EBUSY", wrong_state);
	check("sizes: out of range -> EINVAL, a memory load outside STOP -> EBUSY",
	      sizes);
	check("bitmap: page_nr out of range -> EINVAL", bitmap_range);
	check("version region: ill-formed strings refused", version_region);
	check("reset: VFIO_DEVICE_RESET -> RUNNING, logging ended", reset);
	check("ioctl/mmap: bad argsz, bad index, mmap of the control region",
	      bad_ioctls);
	close(devfd);
	return failures ? 1 : 0;
}
