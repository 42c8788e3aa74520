// SPDX-License-Identifier: GPL-2.0-or-later
/*
 * kmod-smoke: a migration between two instances of the sample mdev driver
 * (samples/vfio-mdev/mdevstate.c), driven through the VFIO uAPI the way
 * QEMU's devstate backend drives it, with no QEMU.  Run inside L2 by
 * tooling/kmod-smoke.sh.
 *
 *   kmod-smoke SRC-UUID DST-UUID
 *
 * Each instance gets a container with 2 MiB of "guest RAM" mapped at IOVA
 * 16 MiB (the DMA window of the driver's defaults).  The source mutates
 * its memory and writes its window by DMA while it is migrated live:
 * RUNNING|LOGGING with iterative data sets and dirty-bitmap queries
 * (dirty RAM copied to the destination's RAM), P2P|LOGGING, STOP|LOGGING,
 * the last data set and the config; the destination loads them in STOP.
 * Then: the digests (sysfs) are equal, the RAM windows byte-equal, the
 * destination runs on, a corrupted config blob is refused and changes
 * nothing.  Prints "PASS  ..." / "FAIL  ..." lines, exits 1 on failure.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stddef.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>
#include <linux/vfio.h>

#define RAM_IOVA	0x1000000ULL
#define RAM_SIZE	(2ULL << 20)
#define WIN_PAGES	256

#define CTL(f)		offsetof(struct vfio_device_state_ctl, f)

struct region {
	uint64_t offset, size;
	uint32_t flags;
	void *map;
};

struct dev {
	const char *uuid;
	int container, group, fd;
	struct region bar0, ctl, cfg, mem, bmp, ver;
	uint8_t *ram;
};

static int failures;

static void die(const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	printf("FAIL  kmod smoke: ");
	vprintf(fmt, ap);
	printf("\n");
	va_end(ap);
	exit(1);
}

static void result(bool ok, const char *what)
{
	printf("%s  kmod smoke: %s\n", ok ? "PASS" : "FAIL", what);
	fflush(stdout);
	failures += !ok;
}

static void rw(struct dev *d, struct region *r, uint64_t off, void *buf,
	       size_t len, bool write)
{
	ssize_t n = write ? pwrite(d->fd, buf, len, r->offset + off) :
		pread(d->fd, buf, len, r->offset + off);

	if (n != (ssize_t)len)
		die("%s: %s of %zu bytes at 0x%" PRIx64 ": %s", d->uuid,
		    write ? "write" : "read", len, off,
		    n < 0 ? strerror(errno) : "short");
}

static int try_rw(struct dev *d, struct region *r, uint64_t off, void *buf,
		  size_t len, bool write)
{
	ssize_t n = write ? pwrite(d->fd, buf, len, r->offset + off) :
		pread(d->fd, buf, len, r->offset + off);

	return n == (ssize_t)len ? 0 : n < 0 ? errno : EIO;
}

static uint64_t ctl_get(struct dev *d, unsigned int off, unsigned int w)
{
	uint64_t v = 0;

	rw(d, &d->ctl, off, &v, w, false);
	return v;
}

static void ctl_set(struct dev *d, unsigned int off, unsigned int w,
		    uint64_t v)
{
	rw(d, &d->ctl, off, &v, w, true);
}

static void data_rw(struct dev *d, struct region *r, void *buf, size_t len,
		    bool write)
{
	if (r->map) {
		if (write)
			memcpy(r->map, buf, len);
		else
			memcpy(buf, r->map, len);
	} else {
		rw(d, r, 0, buf, len, write);
	}
}

static void open_dev(struct dev *d, const char *uuid)
{
	struct vfio_group_status gs = { .argsz = sizeof(gs) };
	struct vfio_iommu_type1_dma_map map = { .argsz = sizeof(map) };
	char path[256], link[256];
	ssize_t n;
	uint32_t i;

	d->uuid = uuid;
	snprintf(path, sizeof(path), "/sys/bus/mdev/devices/%s/iommu_group",
		 uuid);
	n = readlink(path, link, sizeof(link) - 1);
	if (n < 0)
		die("%s: %s", path, strerror(errno));
	link[n] = 0;
	snprintf(path, sizeof(path), "/dev/vfio/%s", strrchr(link, '/') + 1);
	d->container = open("/dev/vfio/vfio", O_RDWR);
	d->group = open(path, O_RDWR);
	if (d->container < 0 || d->group < 0)
		die("%s: cannot open the container or %s", uuid, path);
	if (ioctl(d->group, VFIO_GROUP_GET_STATUS, &gs) ||
	    !(gs.flags & VFIO_GROUP_FLAGS_VIABLE) ||
	    ioctl(d->group, VFIO_GROUP_SET_CONTAINER, &d->container) ||
	    ioctl(d->container, VFIO_SET_IOMMU, VFIO_TYPE1v2_IOMMU))
		die("%s: group setup: %s", uuid, strerror(errno));
	d->ram = mmap(NULL, RAM_SIZE, PROT_READ | PROT_WRITE,
		      MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (d->ram == MAP_FAILED)
		die("guest RAM: %s", strerror(errno));
	memset(d->ram, 0, RAM_SIZE);
	map.vaddr = (uintptr_t)d->ram;
	map.iova = RAM_IOVA;
	map.size = RAM_SIZE;
	map.flags = VFIO_DMA_MAP_FLAG_READ | VFIO_DMA_MAP_FLAG_WRITE;
	if (ioctl(d->container, VFIO_IOMMU_MAP_DMA, &map))
		die("%s: VFIO_IOMMU_MAP_DMA: %s", uuid, strerror(errno));
	d->fd = ioctl(d->group, VFIO_GROUP_GET_DEVICE_FD, uuid);
	if (d->fd < 0)
		die("%s: VFIO_GROUP_GET_DEVICE_FD: %s", uuid, strerror(errno));

	for (i = 0; i < VFIO_PCI_NUM_REGIONS + 5; i++) {
		union {
			struct vfio_region_info info;
			char buf[256];
		} u = { .info = { .argsz = sizeof(u), .index = i } };
		struct vfio_region_info_cap_type *t;
		struct region *r = NULL;

		if (ioctl(d->fd, VFIO_DEVICE_GET_REGION_INFO, &u))
			die("%s: REGION_INFO %u: %s", uuid, i, strerror(errno));
		if (i == VFIO_PCI_BAR0_REGION_INDEX)
			r = &d->bar0;
		if (i >= VFIO_PCI_NUM_REGIONS &&
		    (u.info.flags & VFIO_REGION_INFO_FLAG_CAPS)) {
			t = (void *)(u.buf + u.info.cap_offset);
			if (t->header.id != VFIO_REGION_INFO_CAP_TYPE ||
			    t->type != VFIO_REGION_TYPE_DEVICE_STATE)
				continue;
			switch (t->subtype) {
			case VFIO_REGION_SUBTYPE_DEVICE_STATE_CTL:
				r = &d->ctl;
				break;
			case VFIO_REGION_SUBTYPE_DEVICE_STATE_DATA_CONFIG:
				r = &d->cfg;
				break;
			case VFIO_REGION_SUBTYPE_DEVICE_STATE_DATA_MEMORY:
				r = &d->mem;
				break;
			case VFIO_REGION_SUBTYPE_DEVICE_STATE_DATA_DIRTYBITMAP:
				r = &d->bmp;
				break;
			case VFIO_REGION_SUBTYPE_DEVICE_STATE_VERSION:
				r = &d->ver;
				break;
			}
		}
		if (!r)
			continue;
		r->offset = u.info.offset;
		r->size = u.info.size;
		r->flags = u.info.flags;
		if (r != &d->ctl && r != &d->bar0 &&
		    (r->flags & VFIO_REGION_INFO_FLAG_MMAP)) {
			r->map = mmap(NULL, r->size, PROT_READ | PROT_WRITE,
				      MAP_SHARED, d->fd, r->offset);
			if (r->map == MAP_FAILED)
				die("%s: mmap of region %u: %s", uuid, i,
				    strerror(errno));
		}
	}
	if (!d->ctl.size || !d->cfg.size || !d->mem.size || !d->bmp.size ||
	    !d->ver.size)
		die("%s: a device-state region is missing", uuid);
}

static void read_attr(const char *uuid, const char *attr, char *buf,
		      size_t len)
{
	char path[256];
	FILE *f;

	snprintf(path, sizeof(path), "/sys/bus/mdev/devices/%s/%s", uuid,
		 attr);
	f = fopen(path, "r");
	if (!f || !fgets(buf, len, f))
		die("%s: %s", path, strerror(errno));
	fclose(f);
	buf[strcspn(buf, "\n")] = 0;
}

static uint64_t attr_u64(const char *uuid, const char *key)
{
	char buf[1024], *p;

	read_attr(uuid, "status", buf, sizeof(buf));
	p = strstr(buf, key);
	if (!p)
		die("%s: status has no %s: %s", uuid, key, buf);
	return strtoull(p + strlen(key), NULL, 0);
}

/* One data set of the source, as bytes */
struct set {
	uint8_t *data;
	uint64_t size;
};

static struct set save_set(struct dev *s)
{
	struct set set = { .size = ctl_get(s, CTL(device_memory.size), 8) };
	uint64_t pos = 0, chunk = s->mem.size;

	if (ctl_get(s, CTL(device_memory.size), 8) != set.size)
		die("device_memory.size changed on a second read");
	set.data = malloc(set.size ? set.size : 1);
	while (pos < set.size) {
		uint64_t n = set.size - pos < chunk ? set.size - pos : chunk;

		ctl_set(s, CTL(device_memory.action), 4,
			VFIO_DEVICE_DATA_ACTION_GET_BUFFER);
		if (ctl_get(s, CTL(device_memory.pos), 8) != pos + n)
			die("pos is %" PRIu64 " after a chunk, want %" PRIu64,
			    ctl_get(s, CTL(device_memory.pos), 8), pos + n);
		data_rw(s, &s->mem, set.data + pos, n, false);
		pos += n;
	}
	return set;
}

static void load_set(struct dev *d, struct set *set)
{
	uint64_t pos = 0, chunk = d->mem.size;

	ctl_set(d, CTL(device_memory.size), 8, set->size);
	while (pos < set->size) {
		uint64_t n = set->size - pos < chunk ? set->size - pos : chunk;

		data_rw(d, &d->mem, set->data + pos, n, true);
		ctl_set(d, CTL(device_memory.action), 4,
			VFIO_DEVICE_DATA_ACTION_SET_BUFFER);
		pos += n;
	}
}

/* Copy the RAM pages the source reports dirty; returns how many */
static unsigned int sync_ram(struct dev *s, struct dev *d)
{
	uint64_t bits[WIN_PAGES / 64];
	unsigned int i, n = 0;

	ctl_set(s, CTL(system_memory.start_pfn), 8, RAM_IOVA >> 12);
	ctl_set(s, CTL(system_memory.page_nr), 8, WIN_PAGES);
	ctl_set(s, CTL(system_memory.action), 4,
		VFIO_DEVICE_DATA_ACTION_GET_BITMAP);
	data_rw(s, &s->bmp, bits, sizeof(bits), false);
	for (i = 0; i < WIN_PAGES; i++) {
		if (bits[i / 64] & (1ULL << (i % 64))) {
			memcpy(d->ram + i * 4096, s->ram + i * 4096, 4096);
			n++;
		}
	}
	return n;
}

static double now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

static void msleep(unsigned int ms)
{
	struct timespec ts = { ms / 1000, (ms % 1000) * 1000000L };

	nanosleep(&ts, NULL);
}

static int set_irq(struct dev *d, unsigned int index, uint32_t action,
		   int fd, bool none)
{
	struct {
		struct vfio_irq_set set;
		int32_t fd;
	} s = {
		.set = {
			.argsz = sizeof(s.set) + (none ? 0 : 4),
			.flags = action | (none ? VFIO_IRQ_SET_DATA_NONE :
					   VFIO_IRQ_SET_DATA_EVENTFD),
			.index = index, .count = fd == -2 ? 0 : 1,
		},
		.fd = fd,
	};

	return ioctl(d->fd, VFIO_DEVICE_SET_IRQS, &s) ? errno : 0;
}

static uint64_t irq_count(int efd)
{
	uint64_t n = 0;

	if (read(efd, &n, sizeof(n)) != sizeof(n))
		return 0;
	return n;
}

/* The interrupt at the end of each DMA pass, by INTx (automasked) and MSI */
static void test_irqs(struct dev *d)
{
	int efd = eventfd(0, EFD_NONBLOCK);
	uint32_t ctrl = 7;
	uint64_t a, b, c;

	if (efd < 0)
		die("eventfd: %s", strerror(errno));
	if (set_irq(d, VFIO_PCI_INTX_IRQ_INDEX, VFIO_IRQ_SET_ACTION_TRIGGER,
		    efd, false))
		die("SET_IRQS INTx eventfd: %s", strerror(errno));
	rw(d, &d->bar0, 4, &ctrl, 4, true);
	msleep(800);				/* about three passes */
	a = irq_count(efd);
	msleep(400);
	b = irq_count(efd);			/* masked: nothing more */
	set_irq(d, VFIO_PCI_INTX_IRQ_INDEX, VFIO_IRQ_SET_ACTION_UNMASK, -1,
		true);
	msleep(400);
	c = irq_count(efd);
	result(a == 1 && b == 0 && c == 1,
	       "INTx at the end of a DMA pass, automasked until unmasked");
	set_irq(d, VFIO_PCI_INTX_IRQ_INDEX, VFIO_IRQ_SET_ACTION_TRIGGER, -2,
		true);
	if (set_irq(d, VFIO_PCI_MSI_IRQ_INDEX, VFIO_IRQ_SET_ACTION_TRIGGER,
		    efd, false))
		die("SET_IRQS MSI eventfd: %s", strerror(errno));
	msleep(800);
	a = irq_count(efd);
	result(a >= 2, "MSI at the end of every DMA pass");
	set_irq(d, VFIO_PCI_MSI_IRQ_INDEX, VFIO_IRQ_SET_ACTION_TRIGGER, -2,
		true);
	ctrl = 3;
	rw(d, &d->bar0, 4, &ctrl, 4, true);
	close(efd);
}

int main(int argc, char **argv)
{
	struct dev src = {}, dst = {};
	struct set sets[64];
	unsigned int nsets = 0, i, dirty = 0;
	uint8_t cfg[4096];
	char dsrc[128], ddst[128], tmp[128];
	uint64_t cfg_size, before, after, first;
	uint32_t ctrl = 3;
	double t, t_save = 0, t_load;
	int err;

	if (argc != 3) {
		fprintf(stderr, "usage: %s SRC-UUID DST-UUID\n", argv[0]);
		return 2;
	}
	open_dev(&src, argv[1]);
	open_dev(&dst, argv[2]);
	printf("      data regions %s\n", src.mem.map ? "mmapped" : "read/write");

	/* The source works: mutation and DMA into its RAM */
	rw(&src, &src.bar0, 4, &ctrl, 4, true);
	msleep(500);
	before = attr_u64(src.uuid, "dma_count=");
	result(before > 0 && attr_u64(src.uuid, "mutate_count=") > 0,
	       "the source mutates its memory and writes guest RAM by DMA");
	test_irqs(&src);

	/* Precopy: the RAM's first pass, then iterations */
	ctl_set(&src, CTL(device_state), 4, VFIO_DEVICE_DATA_STATE_LOGGING);
	memcpy(dst.ram, src.ram, RAM_SIZE);
	first = 0;
	for (i = 0; i < 4; i++) {
		t = now();
		sets[nsets] = save_set(&src);
		if (!i) {
			first = sets[nsets].size;
			t_save = now() - t;
		}
		else if (sets[nsets].size > first)
			die("data set %u is larger than the first", i);
		nsets++;
		dirty += sync_ram(&src, &dst);
		msleep(200);
	}
	result(first > 0 && ctl_get(&src, CTL(device_memory.pending), 8) > 0,
	       "logging: the first data set is whole, pending grows while running");
	ctl_set(&src, CTL(device_state), 4,
		VFIO_DEVICE_DATA_STATE_P2P | VFIO_DEVICE_DATA_STATE_LOGGING);
	ctl_set(&src, CTL(device_state), 4,
		VFIO_DEVICE_DATA_STATE_STOP | VFIO_DEVICE_DATA_STATE_LOGGING);
	sets[nsets++] = save_set(&src);
	dirty += sync_ram(&src, &dst);
	result(ctl_get(&src, CTL(device_memory.pending), 8) == 0 &&
	       ctl_get(&src, CTL(device_memory.size), 8) == 0,
	       "stopped: pending is 0 and the next data set is empty");
	ctl_set(&src, CTL(device_config.action), 4,
		VFIO_DEVICE_DATA_ACTION_GET_BUFFER);
	cfg_size = ctl_get(&src, CTL(device_config.size), 8);
	data_rw(&src, &src.cfg, cfg, cfg_size, false);
	read_attr(src.uuid, "digest", dsrc, sizeof(dsrc));
	printf("      %u data sets (first %" PRIu64 " bytes), %u RAM pages copied by bitmap, config %" PRIu64 " bytes\n",
	       nsets, first, dirty, cfg_size);
	result(dirty > 0, "the dirty bitmap reports the pages written by DMA");

	/* Destination */
	ctl_set(&dst, CTL(device_state), 4, VFIO_DEVICE_DATA_STATE_STOP);
	t = now();
	load_set(&dst, &sets[0]);
	t_load = now() - t;
	for (i = 1; i < nsets; i++)
		load_set(&dst, &sets[i]);
	printf("      first data set: saved at %.1f MB/s, loaded at %.1f MB/s\n",
	       first / t_save / 1e6, first / t_load / 1e6);
	ctl_set(&dst, CTL(device_config.size), 8, cfg_size);
	data_rw(&dst, &dst.cfg, cfg, cfg_size, true);
	ctl_set(&dst, CTL(device_config.action), 4,
		VFIO_DEVICE_DATA_ACTION_SET_BUFFER);
	read_attr(dst.uuid, "digest", ddst, sizeof(ddst));
	result(!strcmp(dsrc, ddst), "digests of source and destination are equal");
	result(!memcmp(src.ram, dst.ram, RAM_SIZE),
	       "guest RAM written by DMA is byte-equal on the destination");

	/* A corrupted config blob is refused and changes nothing */
	cfg[100] ^= 1;
	data_rw(&dst, &dst.cfg, cfg, cfg_size, true);
	err = try_rw(&dst, &dst.ctl, CTL(device_config.action),
		     &(uint32_t){ VFIO_DEVICE_DATA_ACTION_SET_BUFFER }, 4, true);
	read_attr(dst.uuid, "digest", tmp, sizeof(tmp));
	result(err == EINVAL && !strcmp(tmp, ddst),
	       "a corrupted config blob fails SET_BUFFER with EINVAL, nothing changed");

	/* The destination runs on */
	ctl_set(&dst, CTL(device_state), 4, VFIO_DEVICE_DATA_STATE_P2P);
	ctl_set(&dst, CTL(device_state), 4, VFIO_DEVICE_DATA_STATE_RUNNING);
	before = attr_u64(dst.uuid, "dma_count=");
	msleep(500);
	after = attr_u64(dst.uuid, "dma_count=");
	result(after > before, "the destination runs on: its DMA engine writes");

	/* The source, stopped, changed nothing; cancelled, it runs on */
	read_attr(src.uuid, "digest", tmp, sizeof(tmp));
	result(!strcmp(tmp, dsrc), "the stopped source changed nothing");
	ctl_set(&src, CTL(device_state), 4, VFIO_DEVICE_DATA_STATE_RUNNING);
	before = attr_u64(src.uuid, "mutate_count=");
	msleep(300);
	result(attr_u64(src.uuid, "mutate_count=") > before &&
	       ctl_get(&src, CTL(device_memory.pending), 8) == 0,
	       "back to RUNNING the source works on, no logging session");
	return failures ? 1 : 0;
}
