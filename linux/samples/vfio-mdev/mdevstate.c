// SPDX-License-Identifier: GPL-2.0-only
/*
 * Mediated PCI device that migrates through device-state regions
 *
 * A sample driver for the device-state region interface of
 * include/uapi/linux/vfio.h (Documentation/driver-api/vfio-device-state.rst).
 * Each instance is a PCI device with:
 *
 * - BAR0, 4 KiB of 32-bit registers (see MDEVSTATE_REG_*);
 * - device memory (mem_size bytes) that a worker rewrites at MUTATE_RATE
 *   pages per second while the device runs;
 * - a DMA engine that writes DMA_RATE pages per second of the guest window
 *   DMA_ADDR/DMA_PAGES through vfio_dma_rw(), each page stamped with a
 *   struct mdevstate_dma_stamp, and raises INTx or MSI at the end of each
 *   pass over the window when CTRL asks for it;
 * - an IRQ register that raises one interrupt; an interrupt raised in STOP
 *   or P2P is held pending and raised when the device runs again;
 * - the device-state regions: control, config data, device-memory data,
 *   system-memory dirty bitmap and migration_version.
 *
 * The device state, its data formats and its answers are those of the
 * vfio-user reference device of QEMU's devstate series, so that the same
 * protocol tests run against both.
 *
 * Config blob: struct mdevstate_config_hdr, the registers and counters
 * (struct mdevstate_config_payload), then the SHA-256 of all of it.
 * Device-memory data set: struct mdevstate_mem_hdr, then nr_records records
 * of { __le64 page index; u8 data[4096] }, pages in strictly ascending
 * order.  A data set with no record has length 0.
 *
 * sysfs, on the mdev device: migration_version (rw), digest (ro, SHA-256 of
 * device memory and config state), status (ro, key=value) and fail (rw,
 * fault injection); on the mdev type: migration_version (rw).
 */

#include <linux/init.h>
#include <linux/module.h>
#include <linux/kernel.h>
#include <linux/slab.h>
#include <linux/vmalloc.h>
#include <linux/mm.h>
#include <linux/cdev.h>
#include <linux/device.h>
#include <linux/sysfs.h>
#include <linux/ctype.h>
#include <linux/string.h>
#include <linux/bitmap.h>
#include <linux/xarray.h>
#include <linux/workqueue.h>
#include <linux/ktime.h>
#include <linux/delay.h>
#include <linux/eventfd.h>
#include <linux/vfio.h>
#include <linux/mdev.h>
#include <linux/pci.h>
#include <linux/sizes.h>
#include <linux/unaligned.h>
#include <crypto/sha2.h>

#define MDEVSTATE_NAME			"mdevstate"
#define MDEVSTATE_CLASS_NAME		"mdevstate"

#define MDEVSTATE_OFFSET_SHIFT		40
#define MDEVSTATE_OFFSET_TO_INDEX(off)	((off) >> MDEVSTATE_OFFSET_SHIFT)
#define MDEVSTATE_INDEX_TO_OFFSET(i)	((u64)(i) << MDEVSTATE_OFFSET_SHIFT)
#define MDEVSTATE_OFFSET_MASK		(MDEVSTATE_INDEX_TO_OFFSET(1) - 1)

/* Region indexes: the PCI ones, then the device-state regions */
enum {
	MDEVSTATE_REGION_CTL = VFIO_PCI_NUM_REGIONS,
	MDEVSTATE_REGION_DATA_CONFIG,
	MDEVSTATE_REGION_DATA_MEMORY,
	MDEVSTATE_REGION_DATA_BITMAP,
	MDEVSTATE_REGION_VERSION,
	MDEVSTATE_NUM_REGIONS,
};

#define MDEVSTATE_PCI_VENDOR_ID		0x1b36
#define MDEVSTATE_PCI_DEVICE_ID		0x0015
#define MDEVSTATE_PCI_SUBVENDOR_ID	0x1af4
#define MDEVSTATE_PCI_SUBDEVICE_ID	0x1100
#define MDEVSTATE_CFG_SPACE_SIZE	256

#define MDEVSTATE_BAR0_SIZE		4096
#define MDEVSTATE_PAGE_SIZE		4096
#define MDEVSTATE_PAGE_SHIFT		12
#define MDEVSTATE_DATA_CONFIG_SIZE	4096

/* BAR0: 32-bit little-endian registers; other offsets read as 0 */
#define MDEVSTATE_REG_ID		0x00	/* ro MDEVSTATE_ID_MAGIC */
#define MDEVSTATE_REG_CTRL		0x04	/* rw MDEVSTATE_CTRL_* */
#define MDEVSTATE_REG_MUTATE_RATE	0x08	/* rw device pages/s */
#define MDEVSTATE_REG_DMA_RATE		0x0c	/* rw guest pages/s */
#define MDEVSTATE_REG_DMA_ADDR_LO	0x10	/* rw DMA window, low 12 bits */
#define MDEVSTATE_REG_DMA_ADDR_HI	0x14	/*    ignored */
#define MDEVSTATE_REG_DMA_PAGES		0x18	/* rw pages in the DMA window */
#define MDEVSTATE_REG_SCRATCH		0x1c	/* rw free for tests */
#define MDEVSTATE_REG_MUTATE_COUNT_LO	0x20	/* ro pages mutated */
#define MDEVSTATE_REG_MUTATE_COUNT_HI	0x24
#define MDEVSTATE_REG_DMA_COUNT_LO	0x28	/* ro pages written by DMA */
#define MDEVSTATE_REG_DMA_COUNT_HI	0x2c
#define MDEVSTATE_REG_DMA_PASSES	0x30	/* ro passes over the window */
#define MDEVSTATE_REG_DEVMEM_MIB	0x34	/* ro device memory in MiB */
#define MDEVSTATE_REG_DMA_ERRORS	0x38	/* ro DMA pages not written */
#define MDEVSTATE_REG_STATUS		0x3c	/* ro device_state */
#define MDEVSTATE_NR_REGS		16
#define MDEVSTATE_REG_IRQ		0x40	/* wo raise one interrupt (MSI, */
						/* else INTx); reads 0 */

#define MDEVSTATE_ID_MAGIC		0x41545344	/* "DSTA" */
#define MDEVSTATE_CTRL_MUTATE		BIT(0)
#define MDEVSTATE_CTRL_DMA		BIT(1)
#define MDEVSTATE_CTRL_DMA_IRQ		BIT(2)
#define MDEVSTATE_CTRL_MASK		0x7

#define MDEVSTATE_DMA_MAGIC		0x50414d44	/* "DMAP" */

/* The start of every page the DMA engine writes; the rest is pass << 32 | page */
struct mdevstate_dma_stamp {
	__le32 magic;
	__le32 pass;
	__le64 page;
};

#define MDEVSTATE_CONFIG_MAGIC		0x46435344	/* "DSCF" */
#define MDEVSTATE_MEM_MAGIC		0x4d4d5344	/* "DSMM" */
#define MDEVSTATE_IDENTITY_MAX		64

struct mdevstate_config_hdr {
	__le32 magic;
	__le32 interface_version;
	char identity[MDEVSTATE_IDENTITY_MAX];
	__le32 major;
	__le32 minor;
	__le32 bugfix;
	__le32 payload_len;
};

struct mdevstate_config_payload {
	__le32 regs[MDEVSTATE_NR_REGS];
	__le64 mutate_count;
	__le64 dma_count;
	__le64 dma_cursor;
	__le64 mem_size;
	__le32 intx_masked;
	__le32 irq_pending;	/* an interrupt held, raised when it can be */
};

#define MDEVSTATE_CONFIG_LEN	(sizeof(struct mdevstate_config_hdr) + \
				 sizeof(struct mdevstate_config_payload) + \
				 SHA256_DIGEST_SIZE)

struct mdevstate_mem_hdr {
	__le32 magic;
	__le32 version;
	__le64 nr_records;
	__le64 mem_size;
	__le32 flags;			/* bit 0: whole snapshot */
	__le32 reserved;
};

#define MEM_HDR_SIZE	((u64)sizeof(struct mdevstate_mem_hdr))
#define MEM_REC_SIZE	((u64)8 + MDEVSTATE_PAGE_SIZE)

/* Workers: a tick every few ms, each page done with the lock held */
#define MDEVSTATE_TICK_MS		5
#define MDEVSTATE_MAX_BATCH		4096
#define MDEVSTATE_MUTATE_STRIDE		1000003
#define MDEVSTATE_MAX_DELAY_MS		10000

/* Fault injection points, as the reference device's --fail */
enum {
	FAULT_ARC,
	FAULT_CONFIG_GET,
	FAULT_CONFIG_SET,
	FAULT_MEM_GET,
	FAULT_MEM_SET,
	FAULT_BITMAP,
	FAULT_VERSION,
	FAULT_NR,
};

static const char *const fault_names[FAULT_NR] = {
	[FAULT_ARC] = "arc",
	[FAULT_CONFIG_GET] = "config-get",
	[FAULT_CONFIG_SET] = "config-set",
	[FAULT_MEM_GET] = "mem-get",
	[FAULT_MEM_SET] = "mem-set",
	[FAULT_BITMAP] = "bitmap",
	[FAULT_VERSION] = "version",
};

struct mdevstate_fault {
	int err;			/* errno to fail with, 0 for none */
	int count;			/* failures left, -1 for always */
	int from, to;			/* arc only: state + 1, 0 for any */
	unsigned int delay_ms;
};

/* The open device-memory data set, saving or loading */
struct mdevstate_set {
	bool open;
	bool loading;
	u64 size;			/* bytes */
	u64 pos;			/* offset of the next chunk */
	u64 nr_records;
	/* load: header and page index of the record being received */
	u8 hdr[MEM_HDR_SIZE];
	u8 index[8];
	bool hdr_ok;
	u64 page;
	u64 records;			/* page indexes received */
};

struct mdev_state {
	struct vfio_device vdev;
	struct mdev_device *mdev;
	/* protects everything below, taken by every access and the worker */
	struct mutex lock;

	/* Taken from the module parameters when the instance is created */
	u64 mem_size;
	u64 chunk_size;
	u64 bitmap_size;
	bool mmap;
	char identity[MDEVSTATE_IDENTITY_MAX];
	u32 ver_major, ver_minor, ver_bugfix;
	char version_str[VFIO_DEVICE_DATA_VERSION_MAX];
	u32 init_regs[MDEVSTATE_NR_REGS];

	/* Device model */
	u32 regs[MDEVSTATE_NR_REGS];
	u64 mutate_count;
	u64 dma_count;
	u64 dma_cursor;
	u8 *mem;
	u64 nr_pages;
	u8 vconfig[MDEVSTATE_CFG_SPACE_SIZE];
	bool opened;
	int irq_index;
	struct eventfd_ctx *intx_evtfd;
	struct eventfd_ctx *msi_evtfd;
	bool intx_mask;
	bool irq_pending;
	u8 *dma_page;
	struct delayed_work work;
	bool quit;
	ktime_t last_tick;
	u64 mutate_credit;		/* in page-microseconds */
	u64 dma_credit;

	/* Device-state regions */
	u32 state;
	u32 caps;
	u64 config_size;
	u64 start_pfn;
	u64 page_nr;
	unsigned long *mem_dirty;	/* device-memory pages, while logging */
	u64 mem_dirty_count;
	struct xarray sys_dirty;	/* pfn >> 15 -> 4 KiB bitmap block */
	u32 *set_pages;			/* save: page of each record */
	struct mdevstate_set set;
	void *region_buf[MDEVSTATE_NUM_REGIONS];
	u64 region_size[MDEVSTATE_NUM_REGIONS];

	struct mdevstate_fault faults[FAULT_NR];
};

#define SYS_BLOCK_SHIFT		15	/* pages per bitmap block: 32768 */
#define SYS_BLOCK_PAGES		BIT(SYS_BLOCK_SHIFT)

/* Module parameters: read when an instance is created */

static DEFINE_MUTEX(mdevstate_param_lock);	/* the parameters below */

static unsigned long long param_mem_size = 64ULL << 20;
static unsigned long long param_chunk_size = 1ULL << 20;
static unsigned long long param_bitmap_size = 64ULL << 10;
static unsigned int param_mutate_rate = 1000;
static unsigned int param_dma_rate = 1000;
static unsigned long long param_dma_addr = 0x1000000;
static unsigned int param_dma_pages = 256;
static bool param_start;
static bool param_mmap = true;
static bool param_p2p = true;
static unsigned int param_max_instances = 8;
static char param_identity[MDEVSTATE_IDENTITY_MAX] = MDEVSTATE_NAME;
static char param_version[32] = "1.0.0";
static char param_fail[256];

static int parse_size(const char *val, unsigned long long *out)
{
	unsigned long long v;
	char *end;

	if (!isdigit(*val))
		return -EINVAL;
	v = memparse(val, &end);
	if (*end == '\n')
		end++;
	if (*end)
		return -EINVAL;
	*out = v;
	return 0;
}

static int set_size_param(const char *val, unsigned long long *p,
			  unsigned long long min, unsigned long long max,
			  unsigned long long align)
{
	unsigned long long v;

	if (parse_size(val, &v) || v < min || v > max || v % align)
		return -EINVAL;
	mutex_lock(&mdevstate_param_lock);
	*p = v;
	mutex_unlock(&mdevstate_param_lock);
	return 0;
}

static int mem_size_set(const char *val, const struct kernel_param *kp)
{
	return set_size_param(val, &param_mem_size, MDEVSTATE_PAGE_SIZE,
			      64ULL << 30, MDEVSTATE_PAGE_SIZE);
}

static int chunk_size_set(const char *val, const struct kernel_param *kp)
{
	return set_size_param(val, &param_chunk_size, 64 << 10, 4 << 20,
			      MDEVSTATE_PAGE_SIZE);
}

static int bitmap_size_set(const char *val, const struct kernel_param *kp)
{
	return set_size_param(val, &param_bitmap_size, 8, 64 << 20, 8);
}

static int size_get(char *buf, const struct kernel_param *kp)
{
	unsigned long long v;

	mutex_lock(&mdevstate_param_lock);
	v = *(unsigned long long *)kp->arg;
	mutex_unlock(&mdevstate_param_lock);
	return sysfs_emit(buf, "%llu\n", v);
}

static const struct kernel_param_ops mem_size_ops = {
	.set = mem_size_set,
	.get = size_get,
};

static const struct kernel_param_ops chunk_size_ops = {
	.set = chunk_size_set,
	.get = size_get,
};

static const struct kernel_param_ops bitmap_size_ops = {
	.set = bitmap_size_set,
	.get = size_get,
};

module_param_cb(mem_size, &mem_size_ops, &param_mem_size, 0644);
MODULE_PARM_DESC(mem_size, "Device memory per instance, bytes (K/M/G), a multiple of 4K (64M)");
module_param_cb(chunk_size, &chunk_size_ops, &param_chunk_size, 0644);
MODULE_PARM_DESC(chunk_size, "DATA_MEMORY region size, a multiple of 4K in 64K..4M (1M)");
module_param_cb(bitmap_size, &bitmap_size_ops, &param_bitmap_size, 0644);
MODULE_PARM_DESC(bitmap_size, "DATA_DIRTYBITMAP region size, a multiple of 8 up to 64M (64K)");

/*
 * Strict unsigned decimal: digits only, no sign, no blank, no overflow.
 * Returns the number of characters used, 0 if there is no number.
 */
static size_t parse_u32(const char *s, u32 *out)
{
	u64 v = 0;
	size_t n = 0;

	while (isdigit(s[n])) {
		v = v * 10 + (s[n] - '0');
		if (v > U32_MAX)
			return 0;
		n++;
	}
	*out = v;
	return n;
}

/* "MAJOR.MINOR.BUGFIX", exactly */
static int parse_version(const char *s, size_t len, u32 v[3])
{
	size_t i, n, pos = 0;

	for (i = 0; i < 3; i++) {
		if (i) {
			if (pos >= len || s[pos] != '.')
				return -EINVAL;
			pos++;
		}
		if (pos >= len)
			return -EINVAL;
		n = parse_u32(s + pos, &v[i]);
		if (!n || pos + n > len)
			return -EINVAL;
		pos += n;
	}
	return pos == len ? 0 : -EINVAL;
}

/* One trailing newline allowed, as sysfs writes from echo carry one */
static size_t strip_newline(const char *s, size_t len)
{
	return len && s[len - 1] == '\n' ? len - 1 : len;
}

static int version_set(const char *val, const struct kernel_param *kp)
{
	size_t len = strip_newline(val, strlen(val));
	u32 v[3];

	if (len >= sizeof(param_version) || parse_version(val, len, v))
		return -EINVAL;
	mutex_lock(&mdevstate_param_lock);
	memcpy(param_version, val, len);
	param_version[len] = 0;
	mutex_unlock(&mdevstate_param_lock);
	return 0;
}

static bool valid_identity(const char *s, size_t len)
{
	size_t i;

	if (!len || len >= MDEVSTATE_IDENTITY_MAX)
		return false;
	for (i = 0; i < len; i++)
		if (!isgraph(s[i]) || !isascii(s[i]))
			return false;
	return true;
}

static int identity_set(const char *val, const struct kernel_param *kp)
{
	size_t len = strip_newline(val, strlen(val));

	if (!valid_identity(val, len))
		return -EINVAL;
	mutex_lock(&mdevstate_param_lock);
	memcpy(param_identity, val, len);
	param_identity[len] = 0;
	mutex_unlock(&mdevstate_param_lock);
	return 0;
}

static int string_get(char *buf, const struct kernel_param *kp)
{
	int ret;

	mutex_lock(&mdevstate_param_lock);
	ret = sysfs_emit(buf, "%s\n", (char *)kp->arg);
	mutex_unlock(&mdevstate_param_lock);
	return ret;
}

static const struct kernel_param_ops version_ops = {
	.set = version_set,
	.get = string_get,
};

static const struct kernel_param_ops identity_ops = {
	.set = identity_set,
	.get = string_get,
};

module_param_cb(version, &version_ops, param_version, 0644);
MODULE_PARM_DESC(version, "Interface version MAJOR.MINOR.BUGFIX in migration_version (1.0.0)");
module_param_cb(identity, &identity_ops, param_identity, 0644);
MODULE_PARM_DESC(identity, "Device identity in migration_version, 1-63 printable characters (mdevstate)");

module_param_named(mutate_rate, param_mutate_rate, uint, 0644);
MODULE_PARM_DESC(mutate_rate, "Initial MUTATE_RATE: device-memory pages written per second (1000)");
module_param_named(dma_rate, param_dma_rate, uint, 0644);
MODULE_PARM_DESC(dma_rate, "Initial DMA_RATE: guest pages written by DMA per second (1000)");
module_param_named(dma_addr, param_dma_addr, ullong, 0644);
MODULE_PARM_DESC(dma_addr, "Initial DMA_ADDR: IOVA of the DMA window (16M)");
module_param_named(dma_pages, param_dma_pages, uint, 0644);
MODULE_PARM_DESC(dma_pages, "Initial DMA_PAGES: pages in the DMA window (256)");
module_param_named(start, param_start, bool, 0644);
MODULE_PARM_DESC(start, "Enable mutation and DMA from the start (n)");
module_param_named(mmap, param_mmap, bool, 0644);
MODULE_PARM_DESC(mmap, "Offer the data regions for mmap (y)");
module_param_named(p2p, param_p2p, bool, 0644);
MODULE_PARM_DESC(p2p, "Advertise VFIO_DEVICE_DATA_CAP_P2P (y)");
module_param_named(max_instances, param_max_instances, uint, 0444);
MODULE_PARM_DESC(max_instances, "Instances that can be created (8)");

static int fault_parse(struct mdevstate_fault *faults, const char *spec);

/* "SPEC[,SPEC...]", each as written to the fail attribute */
static int fail_parse_list(struct mdevstate_fault *faults, const char *list)
{
	char *copy, *p, *spec;
	int ret = 0;

	copy = kstrdup(list, GFP_KERNEL);
	if (!copy)
		return -ENOMEM;
	p = strim(copy);
	while ((spec = strsep(&p, ",")) && !ret) {
		spec = strim(spec);
		if (*spec)
			ret = fault_parse(faults, spec);
	}
	kfree(copy);
	return ret;
}

static int fail_set(const char *val, const struct kernel_param *kp)
{
	struct mdevstate_fault *faults;
	size_t len = strip_newline(val, strlen(val));
	int ret;

	if (len >= sizeof(param_fail))
		return -EINVAL;
	faults = kcalloc(FAULT_NR, sizeof(*faults), GFP_KERNEL);
	if (!faults)
		return -ENOMEM;
	ret = fail_parse_list(faults, val);
	kfree(faults);
	if (ret)
		return ret;
	mutex_lock(&mdevstate_param_lock);
	memcpy(param_fail, val, len);
	param_fail[len] = 0;
	mutex_unlock(&mdevstate_param_lock);
	return 0;
}

static const struct kernel_param_ops fail_ops = {
	.set = fail_set,
	.get = string_get,
};

module_param_cb(fail, &fail_ops, param_fail, 0644);
MODULE_PARM_DESC(fail, "Faults of new instances: POINT:ERRNO[:COUNT],... (see the fail attribute)");

static struct mdevstate_dev {
	dev_t devt;
	struct cdev cdev;
	struct device dev;
	struct mdev_parent parent;
} mdevstate_dev;

/*
 * Type 1 is the device of the module parameters.  Type 2 is the same
 * device with the next major interface version, whose migration_version
 * refuses type 1's (and the other way round): an incompatible target for
 * compatibility checks on one machine.
 */
static struct mdevstate_type {
	struct mdev_type type;
	u32 major_bump;
} mdevstate_types[] = {
	{ .type.sysfs_name = "1", .major_bump = 0,
	  .type.pretty_name = "Device with device-state regions" },
	{ .type.sysfs_name = "2", .major_bump = 1,
	  .type.pretty_name = "Device with device-state regions, next major version" },
};

static struct mdev_type *mdevstate_mdev_types[] = {
	&mdevstate_types[0].type,
	&mdevstate_types[1].type,
};

static atomic_t mdevstate_avail;
static const struct vfio_device_ops mdevstate_dev_ops;

/* States and faults */

static const char *state_name(u32 state)
{
	static const char *const names[] = {
		[VFIO_DEVICE_DATA_STATE_RUNNING] = "RUNNING",
		[VFIO_DEVICE_DATA_STATE_STOP] = "STOP",
		[VFIO_DEVICE_DATA_STATE_LOGGING] = "RUNNING|LOGGING",
		[VFIO_DEVICE_DATA_STATE_STOP |
		 VFIO_DEVICE_DATA_STATE_LOGGING] = "STOP|LOGGING",
		[VFIO_DEVICE_DATA_STATE_P2P] = "P2P",
		[VFIO_DEVICE_DATA_STATE_P2P |
		 VFIO_DEVICE_DATA_STATE_LOGGING] = "P2P|LOGGING",
	};

	return state < ARRAY_SIZE(names) && names[state] ? names[state] :
		"INVALID";
}

/* A state name ("STOP|LOGGING" or "STOP+LOGGING") or number; -1 if none */
static int parse_state(const char *s)
{
	u32 i, n;

	for (i = 0; i <= VFIO_DEVICE_DATA_STATE_MASK; i++) {
		const char *name = state_name(i);
		size_t j, len = strlen(name);

		if (!strcmp(name, "INVALID") || strlen(s) != len)
			continue;
		for (j = 0; j < len; j++)
			if (s[j] != name[j] &&
			    !(name[j] == '|' && s[j] == '+'))
				break;
		if (j == len)
			return i;
	}
	if (parse_u32(s, &n) == strlen(s) && *s &&
	    strcmp(state_name(n), "INVALID"))
		return n;
	return -1;
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
		{ "EPROTO", EPROTO }, { "ENOTSUP", EOPNOTSUPP },
		{ "EOPNOTSUPP", EOPNOTSUPP },
	};
	unsigned int i;
	u32 v;

	for (i = 0; i < ARRAY_SIZE(names); i++)
		if (!strcasecmp(s, names[i].name))
			return names[i].err;
	if (*s && parse_u32(s, &v) == strlen(s) && v > 0 && v < MAX_ERRNO)
		return v;
	return -1;
}

/*
 * One fault spec, as the reference device's control commands:
 *   [fail ]POINT:ERRNO[:COUNT]   fail POINT with ERRNO (COUNT times)
 *   delay POINT:MS               delay POINT by MS milliseconds
 *   clear POINT|all              remove the faults of POINT, or all
 * POINT is a name of fault_names, or arc:FROM->TO for one arc.
 */
static int fault_parse(struct mdevstate_fault *faults, const char *spec)
{
	char buf[96], *p = buf, *point, *arg = NULL, *count = NULL;
	int kind = 0, i, from = -1, to = -1, err = 0;
	struct mdevstate_fault *f;
	u32 v = 0;

	if (strscpy(buf, spec, sizeof(buf)) < 0)
		return -EINVAL;
	if (!strncmp(p, "fail ", 5)) {
		p += 5;
	} else if (!strncmp(p, "delay ", 6)) {
		kind = 1;
		p += 6;
	} else if (!strncmp(p, "clear ", 6)) {
		kind = 2;
		p += 6;
		if (!strcmp(p, "all")) {
			memset(faults, 0, FAULT_NR * sizeof(*faults));
			return 0;
		}
	}
	point = strsep(&p, ":");
	for (i = 0; i < FAULT_NR; i++)
		if (!strcmp(point, fault_names[i]))
			break;
	if (i == FAULT_NR)
		return -EINVAL;
	if (i == FAULT_ARC && p && strnstr(p, "->", strchrnul(p, ':') - p)) {
		char *arc = strsep(&p, ":");
		char *sep = strstr(arc, "->");

		*sep = 0;
		from = parse_state(arc);
		to = parse_state(sep + 2);
		if (from < 0 || to < 0)
			return -EINVAL;
	}
	f = &faults[i];
	if (kind == 2) {
		if (p)
			return -EINVAL;
		memset(f, 0, sizeof(*f));
		return 0;
	}
	arg = strsep(&p, ":");
	if (!arg)
		return -EINVAL;
	if (kind == 1) {
		if (p || parse_u32(arg, &v) != strlen(arg) || !*arg ||
		    v > MDEVSTATE_MAX_DELAY_MS)
			return -EINVAL;
	} else {
		count = strsep(&p, ":");
		err = parse_errno(arg);
		if (err < 0 || p)
			return -EINVAL;
		if (count && (!*count || parse_u32(count, &v) != strlen(count) ||
			      v > INT_MAX))
			return -EINVAL;
	}
	f->from = from + 1;
	f->to = to + 1;
	if (kind == 1) {
		f->delay_ms = v;
	} else {
		f->err = err;
		f->count = count ? v : -1;
	}
	return 0;
}

/* Returns 0 or the negative errno to fail the operation with */
static int fault_check(struct mdev_state *ms, int point, int from, int to)
{
	struct mdevstate_fault *f = &ms->faults[point];

	lockdep_assert_held(&ms->lock);
	if ((f->from && f->from - 1 != from) || (f->to && f->to - 1 != to))
		return 0;
	if (f->delay_ms)
		msleep(f->delay_ms);
	if (f->err && f->count) {
		if (f->count > 0)
			f->count--;
		dev_dbg(ms->vdev.dev, "fault: %s fails with %d\n",
			fault_names[point], f->err);
		return -f->err;
	}
	return 0;
}

/* Device model */

static bool dev_idle(struct mdev_state *ms)
{
	return ms->state & (VFIO_DEVICE_DATA_STATE_STOP |
			    VFIO_DEVICE_DATA_STATE_P2P);
}

static bool logging(struct mdev_state *ms)
{
	return ms->state & VFIO_DEVICE_DATA_STATE_LOGGING;
}

static void mark_mem_dirty(struct mdev_state *ms, u64 page)
{
	if (logging(ms) && !__test_and_set_bit(page, ms->mem_dirty))
		ms->mem_dirty_count++;
}

static unsigned long *sys_block(struct mdev_state *ms, u64 pfn, bool alloc)
{
	unsigned long idx = pfn >> SYS_BLOCK_SHIFT;
	unsigned long *block = xa_load(&ms->sys_dirty, idx);

	if (block || !alloc)
		return block;
	block = bitmap_zalloc(SYS_BLOCK_PAGES, GFP_KERNEL);
	if (!block)
		return NULL;
	if (xa_err(xa_store(&ms->sys_dirty, idx, block, GFP_KERNEL))) {
		bitmap_free(block);
		return NULL;
	}
	return block;
}

static void sys_dirty_clear(struct mdev_state *ms)
{
	unsigned long idx;
	void *block;

	xa_for_each(&ms->sys_dirty, idx, block)
		bitmap_free(block);
	xa_destroy(&ms->sys_dirty);
}

static void mutate_one(struct mdev_state *ms)
{
	u64 page = (ms->mutate_count * MDEVSTATE_MUTATE_STRIDE) % ms->nr_pages;
	__le64 *p = (__le64 *)(ms->mem + page * MDEVSTATE_PAGE_SIZE);
	u64 seed = ms->mutate_count * 0x9e3779b97f4a7c15ULL;
	unsigned int i;

	for (i = 0; i < MDEVSTATE_PAGE_SIZE / 8; i++)
		p[i] = cpu_to_le64(seed + i);
	ms->mutate_count++;
	mark_mem_dirty(ms, page);
}

/*
 * MSI, else INTx.  An interrupt with no eventfd to signal, INTx while
 * masked or disabled in the command register, and any interrupt while the
 * device is in STOP or P2P stays pending and is raised once it can be:
 * on the move to RUNNING, on SET_IRQS giving an eventfd, on UNMASK.
 */
static void trigger_irq(struct mdev_state *ms)
{
	bool intx_off = ms->vconfig[PCI_COMMAND + 1] &
		(PCI_COMMAND_INTX_DISABLE >> 8);

	if (dev_idle(ms)) {
		ms->irq_pending = true;
	} else if (ms->irq_index == VFIO_PCI_MSI_IRQ_INDEX && ms->msi_evtfd) {
		ms->irq_pending = false;
		eventfd_signal(ms->msi_evtfd);
	} else if (ms->irq_index == VFIO_PCI_INTX_IRQ_INDEX &&
		   ms->intx_evtfd && !ms->intx_mask && !intx_off) {
		ms->irq_pending = false;
		eventfd_signal(ms->intx_evtfd);
		ms->intx_mask = true;		/* automasked */
	} else {
		ms->irq_pending = true;
	}
}

/* Raise the interrupt held pending, if the device can now */
static void flush_irq(struct mdev_state *ms)
{
	if (ms->irq_pending)
		trigger_irq(ms);
}

static u64 dma_base(struct mdev_state *ms)
{
	return ((u64)ms->regs[MDEVSTATE_REG_DMA_ADDR_HI / 4] << 32 |
		ms->regs[MDEVSTATE_REG_DMA_ADDR_LO / 4]) &
		~(u64)(MDEVSTATE_PAGE_SIZE - 1);
}

/* Stamp one page of the DMA window, through the container's IOMMU */
static void dma_one(struct mdev_state *ms)
{
	u32 pass = ms->regs[MDEVSTATE_REG_DMA_PASSES / 4];
	u64 page = ms->dma_cursor;
	u64 iova = dma_base(ms) + page * MDEVSTATE_PAGE_SIZE;
	u64 pfn = iova >> MDEVSTATE_PAGE_SHIFT;
	struct mdevstate_dma_stamp *stamp = (void *)ms->dma_page;
	__le64 *p = (__le64 *)ms->dma_page;
	unsigned long *block = NULL;
	unsigned int i;
	bool ok;

	for (i = 2; i < MDEVSTATE_PAGE_SIZE / 8; i++)
		p[i] = cpu_to_le64((u64)pass << 32 | page);
	stamp->magic = cpu_to_le32(MDEVSTATE_DMA_MAGIC);
	stamp->pass = cpu_to_le32(pass);
	stamp->page = cpu_to_le64(page);

	/* No page written by DMA may go untracked: block first */
	if (logging(ms))
		block = sys_block(ms, pfn, true);
	ok = (!logging(ms) || block) && iova >= dma_base(ms) &&
		!vfio_dma_rw(&ms->vdev, iova, ms->dma_page,
			     MDEVSTATE_PAGE_SIZE, true);
	if (ok) {
		if (block)
			__set_bit(pfn & (SYS_BLOCK_PAGES - 1), block);
		ms->dma_count++;
	} else {
		ms->regs[MDEVSTATE_REG_DMA_ERRORS / 4]++;
	}

	if (++ms->dma_cursor >= ms->regs[MDEVSTATE_REG_DMA_PAGES / 4]) {
		ms->dma_cursor = 0;
		ms->regs[MDEVSTATE_REG_DMA_PASSES / 4]++;
		if (ms->regs[MDEVSTATE_REG_CTRL / 4] & MDEVSTATE_CTRL_DMA_IRQ)
			trigger_irq(ms);
	}
}

static bool mutate_ready(struct mdev_state *ms)
{
	return !ms->quit && !dev_idle(ms) &&
		(ms->regs[MDEVSTATE_REG_CTRL / 4] & MDEVSTATE_CTRL_MUTATE) &&
		ms->regs[MDEVSTATE_REG_MUTATE_RATE / 4];
}

/* DMA only while the device is open: vfio_dma_rw() needs an open device */
static bool dma_ready(struct mdev_state *ms)
{
	return !ms->quit && !dev_idle(ms) && ms->opened &&
		(ms->regs[MDEVSTATE_REG_CTRL / 4] & MDEVSTATE_CTRL_DMA) &&
		ms->regs[MDEVSTATE_REG_DMA_RATE / 4] &&
		ms->regs[MDEVSTATE_REG_DMA_PAGES / 4];
}

static void earn(u64 *credit, bool ready, u32 rate, u64 us)
{
	if (!ready) {
		*credit = 0;
		return;
	}
	*credit = min_t(u64, *credit + rate * us,
			(u64)MDEVSTATE_MAX_BATCH * USEC_PER_SEC);
}

/*
 * The worker: each tick earns rate * elapsed pages of credit for mutation
 * and for DMA.  Every page is done with the lock held and the lock is
 * dropped between pages, so a state change to STOP or P2P waits for the
 * page in progress and nothing happens after it.
 */
static void mdevstate_work(struct work_struct *work)
{
	struct mdev_state *ms = container_of(to_delayed_work(work),
					     struct mdev_state, work);
	ktime_t now;
	u64 us;
	bool more = true;

	mutex_lock(&ms->lock);
	now = ktime_get();
	us = min_t(u64, ktime_us_delta(now, ms->last_tick), USEC_PER_SEC);
	ms->last_tick = now;
	earn(&ms->mutate_credit, mutate_ready(ms),
	     ms->regs[MDEVSTATE_REG_MUTATE_RATE / 4], us);
	earn(&ms->dma_credit, dma_ready(ms),
	     ms->regs[MDEVSTATE_REG_DMA_RATE / 4], us);
	while (more) {
		more = false;
		if (ms->mutate_credit >= USEC_PER_SEC && mutate_ready(ms)) {
			mutate_one(ms);
			ms->mutate_credit -= USEC_PER_SEC;
			more = true;
		}
		if (ms->dma_credit >= USEC_PER_SEC && dma_ready(ms)) {
			dma_one(ms);
			ms->dma_credit -= USEC_PER_SEC;
			more = true;
		}
		mutex_unlock(&ms->lock);
		cond_resched();
		mutex_lock(&ms->lock);
	}
	if (!ms->quit)
		schedule_delayed_work(&ms->work,
				      msecs_to_jiffies(MDEVSTATE_TICK_MS));
	mutex_unlock(&ms->lock);
}

static void create_config_space(struct mdev_state *ms)
{
	u8 *c = ms->vconfig;

	memset(c, 0, MDEVSTATE_CFG_SPACE_SIZE);
	*(__le16 *)&c[PCI_VENDOR_ID] = cpu_to_le16(MDEVSTATE_PCI_VENDOR_ID);
	*(__le16 *)&c[PCI_DEVICE_ID] = cpu_to_le16(MDEVSTATE_PCI_DEVICE_ID);
	c[PCI_REVISION_ID] = 0x01;
	*(__le16 *)&c[PCI_CLASS_DEVICE] = cpu_to_le16(PCI_CLASS_OTHERS << 8);
	*(__le16 *)&c[PCI_SUBSYSTEM_VENDOR_ID] =
		cpu_to_le16(MDEVSTATE_PCI_SUBVENDOR_ID);
	*(__le16 *)&c[PCI_SUBSYSTEM_ID] =
		cpu_to_le16(MDEVSTATE_PCI_SUBDEVICE_ID);
	c[PCI_INTERRUPT_PIN] = 1;			/* INTA# */
}

static void regions_reset(struct mdev_state *ms);

/* Registers and counters back to their initial values; state RUNNING */
static void device_reset(struct mdev_state *ms)
{
	memcpy(ms->regs, ms->init_regs, sizeof(ms->regs));
	ms->mutate_count = 0;
	ms->dma_count = 0;
	ms->dma_cursor = 0;
	ms->intx_mask = false;
	ms->irq_pending = false;
	memset(&ms->vconfig[PCI_COMMAND], 0, 2);
	memset(&ms->vconfig[PCI_BASE_ADDRESS_0], 0, 4);
	regions_reset(ms);
}

static u32 reg_read(struct mdev_state *ms, unsigned int reg)
{
	switch (reg * 4) {
	case MDEVSTATE_REG_MUTATE_COUNT_LO:
		return lower_32_bits(ms->mutate_count);
	case MDEVSTATE_REG_MUTATE_COUNT_HI:
		return upper_32_bits(ms->mutate_count);
	case MDEVSTATE_REG_DMA_COUNT_LO:
		return lower_32_bits(ms->dma_count);
	case MDEVSTATE_REG_DMA_COUNT_HI:
		return upper_32_bits(ms->dma_count);
	case MDEVSTATE_REG_STATUS:
		return ms->state;
	default:
		return reg < MDEVSTATE_NR_REGS ? ms->regs[reg] : 0;
	}
}

static void reg_write(struct mdev_state *ms, unsigned int reg, u32 val)
{
	switch (reg * 4) {
	case MDEVSTATE_REG_IRQ:
		trigger_irq(ms);
		break;
	case MDEVSTATE_REG_CTRL:
		ms->regs[reg] = val & MDEVSTATE_CTRL_MASK;
		break;
	case MDEVSTATE_REG_DMA_PAGES:
		ms->dma_cursor = 0;
		fallthrough;
	case MDEVSTATE_REG_MUTATE_RATE:
	case MDEVSTATE_REG_DMA_RATE:
	case MDEVSTATE_REG_DMA_ADDR_LO:
	case MDEVSTATE_REG_DMA_ADDR_HI:
	case MDEVSTATE_REG_SCRATCH:
		ms->regs[reg] = val;
		break;
	default:
		break;				/* read-only or unused */
	}
}

/* Aligned accesses of 1, 2, 4 or 8 bytes; writes of 4 or 8 */
static int bar0_access(struct mdev_state *ms, u64 off, size_t count,
		       u8 *buf, bool is_write)
{
	__le32 val;

	if ((count != 1 && count != 2 && count != 4 && count != 8) ||
	    off % count || (is_write && count < 4))
		return -EINVAL;
	if (count < 4) {
		val = cpu_to_le32(reg_read(ms, off / 4));
		memcpy(buf, (u8 *)&val + off % 4, count);
		return 0;
	}
	for (; count; count -= 4, off += 4, buf += 4) {
		if (is_write) {
			memcpy(&val, buf, 4);
			reg_write(ms, off / 4, le32_to_cpu(val));
		} else {
			val = cpu_to_le32(reg_read(ms, off / 4));
			memcpy(buf, &val, 4);
		}
	}
	return 0;
}

/*
 * Config space: userspace emulates most of it; the device keeps command,
 * BAR0 (4 KiB, 32-bit memory) and the interrupt line, and ignores other
 * writes.
 */
static int cfg_access(struct mdev_state *ms, u64 off, size_t count, u8 *buf,
		      bool is_write)
{
	size_t i;

	if (!is_write) {
		memcpy(buf, ms->vconfig + off, count);
		return 0;
	}
	for (i = 0; i < count; i++) {
		u64 o = off + i;
		u8 v = buf[i];

		if (o == PCI_COMMAND)
			ms->vconfig[o] = v & (PCI_COMMAND_IO | PCI_COMMAND_MEMORY |
					      PCI_COMMAND_MASTER |
					      PCI_COMMAND_PARITY);
		else if (o == PCI_COMMAND + 1)
			ms->vconfig[o] = v & ((PCI_COMMAND_SERR |
					       PCI_COMMAND_INTX_DISABLE) >> 8);
		else if (o == PCI_BASE_ADDRESS_0 + 1)
			ms->vconfig[o] = v & 0xf0;	/* 4 KiB BAR */
		else if (o == PCI_BASE_ADDRESS_0 + 2 ||
			 o == PCI_BASE_ADDRESS_0 + 3 || o == PCI_INTERRUPT_LINE)
			ms->vconfig[o] = v;
	}
	return 0;
}

/* The config blob: registers and counters, little-endian */
static void config_payload(struct mdev_state *ms,
			   struct mdevstate_config_payload *p)
{
	unsigned int i;

	memset(p, 0, sizeof(*p));
	for (i = 0; i < MDEVSTATE_NR_REGS; i++)
		p->regs[i] = cpu_to_le32(ms->regs[i]);
	p->regs[MDEVSTATE_REG_STATUS / 4] = 0;	/* not config state */
	p->mutate_count = cpu_to_le64(ms->mutate_count);
	p->dma_count = cpu_to_le64(ms->dma_count);
	p->dma_cursor = cpu_to_le64(ms->dma_cursor);
	p->mem_size = cpu_to_le64(ms->mem_size);
	p->intx_masked = cpu_to_le32(ms->intx_mask);
	p->irq_pending = cpu_to_le32(ms->irq_pending);
}

static bool config_payload_valid(struct mdev_state *ms,
				 const struct mdevstate_config_payload *p)
{
	return le64_to_cpu(p->mem_size) == ms->mem_size &&
		le32_to_cpu(p->regs[MDEVSTATE_REG_ID / 4]) ==
		MDEVSTATE_ID_MAGIC &&
		!(le32_to_cpu(p->regs[MDEVSTATE_REG_CTRL / 4]) &
		  ~MDEVSTATE_CTRL_MASK) &&
		le64_to_cpu(p->dma_cursor) <=
		le32_to_cpu(p->regs[MDEVSTATE_REG_DMA_PAGES / 4]) &&
		le32_to_cpu(p->intx_masked) <= 1 &&
		le32_to_cpu(p->irq_pending) <= 1;
}

static void config_payload_apply(struct mdev_state *ms,
				 const struct mdevstate_config_payload *p)
{
	unsigned int i;

	for (i = 0; i < MDEVSTATE_NR_REGS; i++)
		if (i != MDEVSTATE_REG_STATUS / 4)
			ms->regs[i] = le32_to_cpu(p->regs[i]);
	ms->mutate_count = le64_to_cpu(p->mutate_count);
	ms->dma_count = le64_to_cpu(p->dma_count);
	ms->dma_cursor = le64_to_cpu(p->dma_cursor);
	ms->intx_mask = le32_to_cpu(p->intx_masked);
	ms->irq_pending = le32_to_cpu(p->irq_pending);
}

/* Device-memory data sets */

static void set_close(struct mdev_state *ms)
{
	memset(&ms->set, 0, sizeof(ms->set));
}

/*
 * Open a data set: in a logging session the pages dirtied since the
 * previous set was opened (all of them for the first set, since logging
 * starts with every page dirty), otherwise every page.
 */
static void save_set_open(struct mdev_state *ms)
{
	struct mdevstate_set *set = &ms->set;
	unsigned long p;
	u64 n = 0;

	if (logging(ms)) {
		for_each_set_bit(p, ms->mem_dirty, ms->nr_pages)
			ms->set_pages[n++] = p;
	} else {
		for (p = 0; p < ms->nr_pages; p++)
			ms->set_pages[n++] = p;
	}
	if (logging(ms)) {
		bitmap_zero(ms->mem_dirty, ms->nr_pages);
		ms->mem_dirty_count = 0;
	}
	set_close(ms);
	set->nr_records = n;
	set->size = n ? MEM_HDR_SIZE + n * MEM_REC_SIZE : 0;
	set->open = n != 0;
	dev_dbg(ms->vdev.dev, "data set opened: %llu pages, %llu bytes\n",
		n, set->size);
}

/* Bytes [pos, pos + len) of the open data set into buf */
static void save_set_emit(struct mdev_state *ms, u64 pos, u8 *buf, u64 len)
{
	struct mdevstate_set *set = &ms->set;
	struct mdevstate_mem_hdr hdr = {
		.magic = cpu_to_le32(MDEVSTATE_MEM_MAGIC),
		.version = cpu_to_le32(1),
		.nr_records = cpu_to_le64(set->nr_records),
		.mem_size = cpu_to_le64(ms->mem_size),
		.flags = cpu_to_le32(set->nr_records == ms->nr_pages),
	};

	while (len) {
		u64 n;

		if (pos < MEM_HDR_SIZE) {
			n = min(len, MEM_HDR_SIZE - pos);
			memcpy(buf, (u8 *)&hdr + pos, n);
		} else {
			u64 rec = (pos - MEM_HDR_SIZE) / MEM_REC_SIZE;
			u64 in = (pos - MEM_HDR_SIZE) % MEM_REC_SIZE;
			u64 page = ms->set_pages[rec];

			if (in < 8) {
				__le64 le = cpu_to_le64(page);

				n = min(len, 8 - in);
				memcpy(buf, (u8 *)&le + in, n);
			} else {
				n = min(len, MEM_REC_SIZE - in);
				memcpy(buf, ms->mem + page * MDEVSTATE_PAGE_SIZE +
				       in - 8, n);
			}
		}
		buf += n;
		pos += n;
		len -= n;
	}
}

static int mem_get_buffer(struct mdev_state *ms)
{
	struct mdevstate_set *set = &ms->set;
	u64 len;
	int ret;

	if (!set->open || set->loading)
		return -EINVAL;
	ret = fault_check(ms, FAULT_MEM_GET, -1, -1);
	if (ret)
		return ret;
	len = min(ms->chunk_size, set->size - set->pos);
	save_set_emit(ms, set->pos, ms->region_buf[MDEVSTATE_REGION_DATA_MEMORY],
		      len);
	set->pos += len;
	if (set->pos == set->size) {
		dev_dbg(ms->vdev.dev, "data set saved\n");
		set->open = false;
	}
	return 0;
}

static int mem_set_size(struct mdev_state *ms, u64 size)
{
	struct mdevstate_set *set = &ms->set;
	u64 max = MEM_HDR_SIZE + ms->nr_pages * MEM_REC_SIZE;

	if (ms->state != VFIO_DEVICE_DATA_STATE_STOP)
		return -EBUSY;
	if (size && (size < MEM_HDR_SIZE + MEM_REC_SIZE || size > max ||
		     (size - MEM_HDR_SIZE) % MEM_REC_SIZE))
		return -EINVAL;
	set_close(ms);
	set->size = size;
	set->loading = true;
	set->open = size != 0;
	return 0;
}

static bool mem_hdr_valid(struct mdev_state *ms, const u8 *raw, u64 size)
{
	struct mdevstate_mem_hdr hdr;
	u32 flags;
	u64 nr;

	memcpy(&hdr, raw, sizeof(hdr));
	nr = le64_to_cpu(hdr.nr_records);
	flags = le32_to_cpu(hdr.flags);
	/* a set that says it is whole has every page */
	return le32_to_cpu(hdr.magic) == MDEVSTATE_MEM_MAGIC &&
		le32_to_cpu(hdr.version) == 1 &&
		le64_to_cpu(hdr.mem_size) == ms->mem_size &&
		nr && nr <= ms->nr_pages &&
		MEM_HDR_SIZE + nr * MEM_REC_SIZE == size &&
		!(flags & ~1u) && (!(flags & 1) || nr == ms->nr_pages) &&
		!hdr.reserved;
}

/*
 * Parse the bytes [st->pos, st->pos + len) of the data set being loaded,
 * checking the header and every page index before anything of it is
 * used; with apply, copy the page data into device memory as it comes.
 * The caller checks a whole chunk without apply first, so a chunk that
 * is refused changes nothing.  The chunk may be mmapped by userspace, so
 * the apply pass checks again what it reads.
 */
static int mem_parse(struct mdev_state *ms, struct mdevstate_set *st,
		     const u8 *buf, u64 len, bool apply)
{
	while (len) {
		u64 n, in;

		if (st->pos < MEM_HDR_SIZE) {
			n = min(len, MEM_HDR_SIZE - st->pos);
			memcpy(st->hdr + st->pos, buf, n);
			if (st->pos + n == MEM_HDR_SIZE) {
				if (!mem_hdr_valid(ms, st->hdr, st->size))
					return -EINVAL;
				st->hdr_ok = true;
			}
			goto next;
		}
		if (!st->hdr_ok)
			return -EINVAL;
		in = (st->pos - MEM_HDR_SIZE) % MEM_REC_SIZE;
		if (in < 8) {
			n = min(len, 8 - in);
			memcpy(st->index + in, buf, n);
			if (in + n == 8) {
				u64 page = get_unaligned_le64(st->index);

				/* a page of the device, above the one before */
				if (page >= ms->nr_pages ||
				    (st->records && page <= st->page))
					return -EINVAL;
				st->page = page;
				st->records++;
			}
			goto next;
		}
		n = min(len, MEM_REC_SIZE - in);
		if (apply)
			memcpy(ms->mem + st->page * MDEVSTATE_PAGE_SIZE + in - 8,
			       buf, n);
next:
		buf += n;
		st->pos += n;
		len -= n;
	}
	return 0;
}

static int mem_set_buffer(struct mdev_state *ms)
{
	struct mdevstate_set *set = &ms->set;
	const u8 *buf = ms->region_buf[MDEVSTATE_REGION_DATA_MEMORY];
	struct mdevstate_set check;
	u64 len, pos;
	int ret;

	if (ms->state != VFIO_DEVICE_DATA_STATE_STOP)
		return -EBUSY;
	if (!set->open || !set->loading)
		return -EINVAL;
	ret = fault_check(ms, FAULT_MEM_SET, -1, -1);
	if (ret)
		return ret;
	pos = set->pos;
	len = min(ms->chunk_size, set->size - pos);
	check = *set;
	ret = mem_parse(ms, &check, buf, len, false);
	if (!ret)
		ret = mem_parse(ms, set, buf, len, true);
	if (ret) {
		/* the set ends; pos stays at the chunk refused */
		dev_dbg(ms->vdev.dev, "data set refused at %llu\n", pos);
		set_close(ms);
		set->pos = pos;
		return ret;
	}
	if (set->pos == set->size) {
		dev_dbg(ms->vdev.dev, "data set loaded: %llu bytes\n",
			set->size);
		set->open = false;
	}
	return 0;
}

/* Config blob */

static int config_get_buffer(struct mdev_state *ms)
{
	u8 *buf = ms->region_buf[MDEVSTATE_REGION_DATA_CONFIG];
	struct mdevstate_config_hdr *hdr = (void *)buf;
	struct mdevstate_config_payload *p = (void *)(hdr + 1);
	int ret;

	if (!(ms->state & VFIO_DEVICE_DATA_STATE_STOP))
		return -EBUSY;
	ret = fault_check(ms, FAULT_CONFIG_GET, -1, -1);
	if (ret)
		return ret;
	memset(hdr, 0, sizeof(*hdr));
	hdr->magic = cpu_to_le32(MDEVSTATE_CONFIG_MAGIC);
	hdr->interface_version = cpu_to_le32(VFIO_DEVICE_DATA_INTERFACE_VERSION);
	strscpy(hdr->identity, ms->identity, sizeof(hdr->identity));
	hdr->major = cpu_to_le32(ms->ver_major);
	hdr->minor = cpu_to_le32(ms->ver_minor);
	hdr->bugfix = cpu_to_le32(ms->ver_bugfix);
	hdr->payload_len = cpu_to_le32(sizeof(*p));
	config_payload(ms, p);
	sha256(buf, sizeof(*hdr) + sizeof(*p), (u8 *)(p + 1));
	ms->config_size = MDEVSTATE_CONFIG_LEN;
	dev_dbg(ms->vdev.dev, "config saved: %zu bytes\n",
		MDEVSTATE_CONFIG_LEN);
	return 0;
}

/* Validate the whole blob, then apply it: a refused blob changes nothing */
static int config_set_buffer(struct mdev_state *ms)
{
	const struct mdevstate_config_payload *p;
	const struct mdevstate_config_hdr *hdr;
	u64 len = ms->config_size;
	u8 digest[SHA256_DIGEST_SIZE];
	u8 *blob;
	int ret;

	if (ms->state != VFIO_DEVICE_DATA_STATE_STOP)
		return -EBUSY;
	ret = fault_check(ms, FAULT_CONFIG_SET, -1, -1);
	if (ret)
		return ret;
	if (len != MDEVSTATE_CONFIG_LEN) {
		dev_dbg(ms->vdev.dev, "config refused: %llu bytes\n", len);
		return -EINVAL;
	}
	/* The region may be mmapped: check and apply one private copy */
	blob = kmemdup(ms->region_buf[MDEVSTATE_REGION_DATA_CONFIG], len,
		       GFP_KERNEL);
	if (!blob)
		return -ENOMEM;
	hdr = (void *)blob;
	p = (void *)(hdr + 1);
	sha256(blob, len - SHA256_DIGEST_SIZE, digest);
	if (le32_to_cpu(hdr->magic) != MDEVSTATE_CONFIG_MAGIC ||
	    le32_to_cpu(hdr->interface_version) !=
	    VFIO_DEVICE_DATA_INTERFACE_VERSION ||
	    le32_to_cpu(hdr->payload_len) != sizeof(*p) ||
	    memcmp(digest, blob + len - SHA256_DIGEST_SIZE, sizeof(digest)) ||
	    strncmp(hdr->identity, ms->identity, sizeof(hdr->identity)) ||
	    le32_to_cpu(hdr->major) != ms->ver_major ||
	    le32_to_cpu(hdr->minor) > ms->ver_minor ||
	    !config_payload_valid(ms, p)) {
		dev_dbg(ms->vdev.dev, "config refused: invalid blob\n");
		ret = -EINVAL;
	} else {
		config_payload_apply(ms, p);
		dev_dbg(ms->vdev.dev, "config loaded: %llu bytes\n", len);
	}
	kfree(blob);
	return ret;
}

/* System-memory dirty bitmap: report and clear */
static int get_bitmap(struct mdev_state *ms)
{
	__le64 *out = ms->region_buf[MDEVSTATE_REGION_DATA_BITMAP];
	u64 start = ms->start_pfn, nr = ms->page_nr, i, n;
	unsigned long first, bit, end, *block;
	int ret;

	if (!nr || nr > ms->bitmap_size * 8 || start + nr < start)
		return -EINVAL;
	ret = fault_check(ms, FAULT_BITMAP, -1, -1);
	if (ret)
		return ret;
	memset(out, 0, DIV_ROUND_UP(nr, 64) * 8);
	/* block by block: bits [bit, bit + n) of a block are pages i.. */
	for (i = 0; i < nr; i += n) {
		first = (start + i) & (SYS_BLOCK_PAGES - 1);
		n = min(nr - i, SYS_BLOCK_PAGES - first);
		end = first + n;
		block = sys_block(ms, start + i, false);
		if (!block)
			continue;
		bit = first;
		for_each_set_bit_from(bit, block, end) {
			u64 k = i + bit - first;

			__clear_bit(bit, block);
			out[k / 64] |= cpu_to_le64(BIT_ULL(k % 64));
		}
	}
	return 0;
}

/* The state machine */

static bool state_valid(struct mdev_state *ms, u32 state)
{
	if (state & ~VFIO_DEVICE_DATA_STATE_MASK)
		return false;
	if (state & VFIO_DEVICE_DATA_STATE_P2P)
		return (ms->caps & VFIO_DEVICE_DATA_CAP_P2P) &&
			!(state & VFIO_DEVICE_DATA_STATE_STOP);
	return true;
}

static void logging_stop(struct mdev_state *ms)
{
	bitmap_zero(ms->mem_dirty, ms->nr_pages);
	ms->mem_dirty_count = 0;
	sys_dirty_clear(ms);
	if (!ms->set.loading)
		set_close(ms);
}

/* Every page dirty: the first data set of the session is a whole snapshot */
static void logging_start(struct mdev_state *ms)
{
	logging_stop(ms);
	bitmap_fill(ms->mem_dirty, ms->nr_pages);
	ms->mem_dirty_count = ms->nr_pages;
}

static int set_state(struct mdev_state *ms, u32 new)
{
	u32 old = ms->state;
	int ret;

	if (!state_valid(ms, new)) {
		dev_dbg(ms->vdev.dev, "state %s -> 0x%x refused\n",
			state_name(old), new);
		return -EINVAL;
	}
	if (new == old)
		return 0;
	ret = fault_check(ms, FAULT_ARC, old, new);
	if (ret) {
		dev_dbg(ms->vdev.dev, "state %s -> %s failed: %d\n",
			state_name(old), state_name(new), ret);
		return ret;
	}
	if ((new ^ old) & VFIO_DEVICE_DATA_STATE_LOGGING) {
		if (new & VFIO_DEVICE_DATA_STATE_LOGGING)
			logging_start(ms);
		else
			logging_stop(ms);
	}
	if (new != VFIO_DEVICE_DATA_STATE_STOP && ms->set.loading)
		set_close(ms);			/* loads are STOP only */
	ms->state = new;
	dev_dbg(ms->vdev.dev, "state %s -> %s\n", state_name(old),
		state_name(new));
	flush_irq(ms);			/* held in STOP or P2P */
	return 0;
}

/* Back to RUNNING, logging off, no data set open */
static void regions_reset(struct mdev_state *ms)
{
	set_close(ms);
	logging_stop(ms);
	ms->config_size = 0;
	ms->start_pfn = 0;
	ms->page_nr = 0;
	if (ms->state != VFIO_DEVICE_DATA_STATE_RUNNING)
		dev_dbg(ms->vdev.dev, "state %s -> RUNNING (reset)\n",
			state_name(ms->state));
	ms->state = VFIO_DEVICE_DATA_STATE_RUNNING;
}

/* The control region: one aligned access per field, of the field's width */

enum { RO, RW, WO };

#define CTL_FIELD(f, a)	{ offsetof(struct vfio_device_state_ctl, f), \
			  sizeof_field(struct vfio_device_state_ctl, f), a, #f }

static const struct {
	unsigned int off, width, access;
	const char *name;
} ctl_fields[] = {
	CTL_FIELD(version, RO),
	CTL_FIELD(device_state, RW),
	CTL_FIELD(caps, RO),
	CTL_FIELD(reserved, RO),
	CTL_FIELD(device_config.action, WO),
	CTL_FIELD(device_config.reserved, RO),
	CTL_FIELD(device_config.size, RW),
	CTL_FIELD(device_memory.action, WO),
	CTL_FIELD(device_memory.reserved, RO),
	CTL_FIELD(device_memory.size, RW),
	CTL_FIELD(device_memory.pos, RO),
	CTL_FIELD(device_memory.pending, RO),
	CTL_FIELD(system_memory.start_pfn, WO),
	CTL_FIELD(system_memory.page_nr, WO),
	CTL_FIELD(system_memory.action, WO),
	CTL_FIELD(system_memory.page_shift, RO),
};

#define CTL_OFF(f)	offsetof(struct vfio_device_state_ctl, f)

static int ctl_write(struct mdev_state *ms, unsigned int off, u64 val)
{
	switch (off) {
	case CTL_OFF(device_state):
		return set_state(ms, val);
	case CTL_OFF(device_config.action):
		if (val == VFIO_DEVICE_DATA_ACTION_GET_BUFFER)
			return config_get_buffer(ms);
		if (val == VFIO_DEVICE_DATA_ACTION_SET_BUFFER)
			return config_set_buffer(ms);
		return -EINVAL;
	case CTL_OFF(device_config.size):
		if (val > ms->region_size[MDEVSTATE_REGION_DATA_CONFIG])
			return -EINVAL;
		ms->config_size = val;
		return 0;
	case CTL_OFF(device_memory.action):
		if (val == VFIO_DEVICE_DATA_ACTION_GET_BUFFER)
			return mem_get_buffer(ms);
		if (val == VFIO_DEVICE_DATA_ACTION_SET_BUFFER)
			return mem_set_buffer(ms);
		return -EINVAL;
	case CTL_OFF(device_memory.size):
		return mem_set_size(ms, val);
	case CTL_OFF(system_memory.start_pfn):
		ms->start_pfn = val;
		return 0;
	case CTL_OFF(system_memory.page_nr):
		ms->page_nr = val;
		return 0;
	case CTL_OFF(system_memory.action):
		if (val == VFIO_DEVICE_DATA_ACTION_GET_BITMAP)
			return get_bitmap(ms);
		return -EINVAL;
	}
	return -EINVAL;
}

static u64 pending(struct mdev_state *ms)
{
	if (!logging(ms) || !ms->mem_dirty_count)
		return 0;
	return MEM_HDR_SIZE + ms->mem_dirty_count * MEM_REC_SIZE;
}

static u64 ctl_read(struct mdev_state *ms, unsigned int off)
{
	switch (off) {
	case CTL_OFF(version):
		return VFIO_DEVICE_DATA_INTERFACE_VERSION;
	case CTL_OFF(device_state):
		return ms->state;
	case CTL_OFF(caps):
		return ms->caps;
	case CTL_OFF(device_config.size):
		return ms->config_size;
	case CTL_OFF(device_memory.size):
		/* opens a data set when none is open */
		if (!ms->set.open)
			save_set_open(ms);
		return ms->set.size;
	case CTL_OFF(device_memory.pos):
		return ms->set.pos;
	case CTL_OFF(device_memory.pending):
		return pending(ms);
	case CTL_OFF(system_memory.start_pfn):
		return ms->start_pfn;
	case CTL_OFF(system_memory.page_nr):
		return ms->page_nr;
	case CTL_OFF(system_memory.page_shift):
		return MDEVSTATE_PAGE_SHIFT;
	}
	return 0;				/* reserved, actions */
}

static int ctl_access(struct mdev_state *ms, u64 off, size_t count, u8 *buf,
		      bool is_write)
{
	unsigned int i;
	__le64 le = 0;
	int ret;

	for (i = 0; i < ARRAY_SIZE(ctl_fields); i++)
		if (ctl_fields[i].off == off)
			break;
	if (i == ARRAY_SIZE(ctl_fields) || ctl_fields[i].width != count ||
	    (is_write && ctl_fields[i].access == RO)) {
		dev_dbg(ms->vdev.dev, "ctl: bad %s of %zu bytes at %llu\n",
			is_write ? "write" : "read", count, off);
		return -EINVAL;
	}
	if (!is_write) {
		le = cpu_to_le64(ctl_read(ms, off));
		memcpy(buf, &le, count);
		return 0;
	}
	memcpy(&le, buf, count);
	ret = ctl_write(ms, off, le64_to_cpu(le));
	dev_dbg(ms->vdev.dev, "ctl: write %s = 0x%llx: %d\n",
		ctl_fields[i].name, le64_to_cpu(le), ret);
	return ret;
}

/* migration_version: "<identity>-<major>.<minor>.<bugfix>" */

/*
 * Can a device of identity/major/minor accept the state of the device
 * whose string is buf?  0 if it can, -EINVAL for a malformed string,
 * -EPROTO for an incompatible one.  Well-formed: the identity, printable
 * ASCII without blanks, then '-' and the version, with at most one
 * trailing newline.
 */
static int version_compatible(const char *id, u32 major, u32 minor,
			      const char *buf, size_t count)
{
	size_t len = strip_newline(buf, strnlen(buf, count));
	size_t i, dash = 0;
	u32 v[3];

	for (i = 0; i < len; i++) {
		if (!isascii(buf[i]) || !isgraph(buf[i]))
			return -EINVAL;
		if (buf[i] == '-')
			dash = i + 1;
	}
	/* the identity is what comes before the last dash, not empty */
	if (dash < 2 || parse_version(buf + dash, len - dash, v))
		return -EINVAL;
	if (dash - 1 != strlen(id) || memcmp(buf, id, dash - 1) ||
	    v[0] != major || v[1] > minor)
		return -EPROTO;
	return 0;
}

static int version_check(struct mdev_state *ms, const char *buf,
			 size_t count)
{
	int ret;

	mutex_lock(&ms->lock);
	ret = fault_check(ms, FAULT_VERSION, -1, -1);
	mutex_unlock(&ms->lock);
	if (ret)
		return ret;
	ret = version_compatible(ms->identity, ms->ver_major, ms->ver_minor,
				 buf, count);
	if (ret)
		dev_dbg(ms->vdev.dev, "migration_version '%.*s' refused by %s: %d\n",
			(int)strnlen(buf, count), buf, ms->version_str, ret);
	return ret;
}

/* read() and write() on the device fd */

static ssize_t region_access(struct mdev_state *ms, char __user *ubuf,
			     size_t count, loff_t *ppos, bool is_write)
{
	unsigned int index = MDEVSTATE_OFFSET_TO_INDEX(*ppos);
	u64 off = *ppos & MDEVSTATE_OFFSET_MASK;
	u8 small[8];
	u8 *kbuf;
	int ret;

	if (index >= MDEVSTATE_NUM_REGIONS || !ms->region_size[index] ||
	    off > ms->region_size[index] ||
	    count > ms->region_size[index] - off || !count)
		return -EINVAL;

	switch (index) {
	case MDEVSTATE_REGION_DATA_CONFIG:
	case MDEVSTATE_REGION_DATA_MEMORY:
	case MDEVSTATE_REGION_DATA_BITMAP:
		/* plain memory, as through mmap */
		kbuf = ms->region_buf[index] + off;
		if (is_write ? copy_from_user(kbuf, ubuf, count) :
		    copy_to_user(ubuf, kbuf, count))
			return -EFAULT;
		return count;
	case MDEVSTATE_REGION_VERSION:
		if (!is_write) {
			if (copy_to_user(ubuf, ms->version_str + off, count))
				return -EFAULT;
			return count;
		}
		if (off)
			return -EINVAL;
		kbuf = memdup_user(ubuf, count);
		if (IS_ERR(kbuf))
			return PTR_ERR(kbuf);
		/* a NUL-terminated string, unlike sysfs writes; no byte after */
		ret = strnlen(kbuf, count) + 1 == count ?
			version_check(ms, kbuf, count) : -EINVAL;
		kfree(kbuf);
		return ret ? ret : count;
	}

	if (count > sizeof(small) && index != VFIO_PCI_CONFIG_REGION_INDEX)
		return -EINVAL;
	kbuf = count > sizeof(small) ? kmalloc(count, GFP_KERNEL) : small;
	if (!kbuf)
		return -ENOMEM;
	if (is_write && copy_from_user(kbuf, ubuf, count)) {
		ret = -EFAULT;
		goto out;
	}
	mutex_lock(&ms->lock);
	switch (index) {
	case VFIO_PCI_CONFIG_REGION_INDEX:
		ret = cfg_access(ms, off, count, kbuf, is_write);
		break;
	case VFIO_PCI_BAR0_REGION_INDEX:
		ret = bar0_access(ms, off, count, kbuf, is_write);
		break;
	case MDEVSTATE_REGION_CTL:
		ret = ctl_access(ms, off, count, kbuf, is_write);
		break;
	default:
		ret = -EINVAL;
	}
	mutex_unlock(&ms->lock);
	if (!ret && !is_write && copy_to_user(ubuf, kbuf, count))
		ret = -EFAULT;
out:
	if (kbuf != small)
		kfree(kbuf);
	return ret ? ret : count;
}

static ssize_t mdevstate_read(struct vfio_device *vdev, char __user *buf,
			      size_t count, loff_t *ppos)
{
	struct mdev_state *ms = container_of(vdev, struct mdev_state, vdev);

	return region_access(ms, buf, count, ppos, false);
}

static ssize_t mdevstate_write(struct vfio_device *vdev,
			       const char __user *buf, size_t count,
			       loff_t *ppos)
{
	struct mdev_state *ms = container_of(vdev, struct mdev_state, vdev);

	return region_access(ms, (char __user *)buf, count, ppos, true);
}

static bool region_mmappable(struct mdev_state *ms, unsigned int index)
{
	return ms->mmap &&
		(index == MDEVSTATE_REGION_DATA_CONFIG ||
		 index == MDEVSTATE_REGION_DATA_MEMORY ||
		 index == MDEVSTATE_REGION_DATA_BITMAP) &&
		PAGE_ALIGNED(ms->region_size[index]);
}

static int mdevstate_mmap(struct vfio_device *vdev, struct vm_area_struct *vma)
{
	struct mdev_state *ms = container_of(vdev, struct mdev_state, vdev);
	u64 off = (u64)vma->vm_pgoff << PAGE_SHIFT;
	unsigned int index = MDEVSTATE_OFFSET_TO_INDEX(off);
	u64 pgoff = (off & MDEVSTATE_OFFSET_MASK) >> PAGE_SHIFT;
	u64 npages = vma_pages(vma);

	if (index >= MDEVSTATE_NUM_REGIONS || !region_mmappable(ms, index))
		return -EINVAL;
	if (!(vma->vm_flags & VM_SHARED))
		return -EINVAL;
	if (pgoff > ms->region_size[index] >> PAGE_SHIFT ||
	    npages > (ms->region_size[index] >> PAGE_SHIFT) - pgoff)
		return -EINVAL;
	return remap_vmalloc_range(vma, ms->region_buf[index], pgoff);
}

/* Interrupts: INTx and MSI through eventfds */

static void disable_irqs(struct mdev_state *ms)
{
	if (ms->intx_evtfd)
		eventfd_ctx_put(ms->intx_evtfd);
	if (ms->msi_evtfd)
		eventfd_ctx_put(ms->msi_evtfd);
	ms->intx_evtfd = NULL;
	ms->msi_evtfd = NULL;
	ms->irq_index = -1;
	ms->intx_mask = false;
}

static int set_irqs(struct mdev_state *ms, struct vfio_irq_set *hdr,
		    void *data)
{
	u32 action = hdr->flags & VFIO_IRQ_SET_ACTION_TYPE_MASK;
	bool is_bool = hdr->flags & VFIO_IRQ_SET_DATA_BOOL;
	struct eventfd_ctx *evt, **slot;
	int fd;

	if (hdr->index == VFIO_PCI_INTX_IRQ_INDEX &&
	    (action == VFIO_IRQ_SET_ACTION_MASK ||
	     action == VFIO_IRQ_SET_ACTION_UNMASK)) {
		if (ms->irq_index != VFIO_PCI_INTX_IRQ_INDEX || !hdr->count)
			return -EINVAL;
		if (hdr->flags & VFIO_IRQ_SET_DATA_EVENTFD)
			return -ENOTTY;
		if (!is_bool || *(u8 *)data)
			ms->intx_mask = action == VFIO_IRQ_SET_ACTION_MASK;
		flush_irq(ms);
		return 0;
	}
	if ((hdr->index != VFIO_PCI_INTX_IRQ_INDEX &&
	     hdr->index != VFIO_PCI_MSI_IRQ_INDEX) ||
	    action != VFIO_IRQ_SET_ACTION_TRIGGER)
		return -ENOTTY;
	if (!hdr->count) {
		if (ms->irq_index == hdr->index)
			disable_irqs(ms);
		return 0;
	}
	if (ms->irq_index >= 0 && ms->irq_index != hdr->index)
		return -EINVAL;
	slot = hdr->index == VFIO_PCI_MSI_IRQ_INDEX ? &ms->msi_evtfd :
		&ms->intx_evtfd;
	if (!(hdr->flags & VFIO_IRQ_SET_DATA_EVENTFD)) {
		if (ms->irq_index != hdr->index)
			return -EINVAL;
		if (!is_bool || *(u8 *)data)
			trigger_irq(ms);
		return 0;
	}
	fd = *(s32 *)data;
	disable_irqs(ms);
	if (fd < 0)
		return 0;
	evt = eventfd_ctx_fdget(fd);
	if (IS_ERR(evt))
		return PTR_ERR(evt);
	*slot = evt;
	ms->irq_index = hdr->index;
	flush_irq(ms);
	return 0;
}

/* ioctl */

struct mdevstate_region_info {
	struct vfio_region_info base;
	struct vfio_region_info_cap_type type;
};

static const u32 region_subtype[] = {
	[MDEVSTATE_REGION_CTL] = VFIO_REGION_SUBTYPE_DEVICE_STATE_CTL,
	[MDEVSTATE_REGION_DATA_CONFIG] =
		VFIO_REGION_SUBTYPE_DEVICE_STATE_DATA_CONFIG,
	[MDEVSTATE_REGION_DATA_MEMORY] =
		VFIO_REGION_SUBTYPE_DEVICE_STATE_DATA_MEMORY,
	[MDEVSTATE_REGION_DATA_BITMAP] =
		VFIO_REGION_SUBTYPE_DEVICE_STATE_DATA_DIRTYBITMAP,
	[MDEVSTATE_REGION_VERSION] = VFIO_REGION_SUBTYPE_DEVICE_STATE_VERSION,
};

static void get_region_info(struct mdev_state *ms,
			    struct mdevstate_region_info *info)
{
	unsigned int index = info->base.index;

	info->base.cap_offset = 0;
	info->base.offset = MDEVSTATE_INDEX_TO_OFFSET(index);
	info->base.size = ms->region_size[index];
	info->base.flags = info->base.size ? VFIO_REGION_INFO_FLAG_READ |
		VFIO_REGION_INFO_FLAG_WRITE : 0;
	if (region_mmappable(ms, index))
		info->base.flags |= VFIO_REGION_INFO_FLAG_MMAP;
	if (index < MDEVSTATE_REGION_CTL)
		return;
	info->base.flags |= VFIO_REGION_INFO_FLAG_CAPS;
	info->base.cap_offset = offsetof(struct mdevstate_region_info, type);
	info->type.header.id = VFIO_REGION_INFO_CAP_TYPE;
	info->type.header.version = 1;
	info->type.header.next = 0;
	info->type.type = VFIO_REGION_TYPE_DEVICE_STATE;
	info->type.subtype = region_subtype[index];
}

static long mdevstate_ioctl(struct vfio_device *vdev, unsigned int cmd,
			    unsigned long arg)
{
	struct mdev_state *ms = container_of(vdev, struct mdev_state, vdev);
	void __user *uarg = (void __user *)arg;
	unsigned long minsz, outsz;
	int ret;

	switch (cmd) {
	case VFIO_DEVICE_GET_INFO: {
		struct vfio_device_info info;

		minsz = offsetofend(struct vfio_device_info, num_irqs);
		if (copy_from_user(&info, uarg, minsz))
			return -EFAULT;
		if (info.argsz < minsz)
			return -EINVAL;
		info.flags = VFIO_DEVICE_FLAGS_PCI | VFIO_DEVICE_FLAGS_RESET;
		info.num_regions = MDEVSTATE_NUM_REGIONS;
		info.num_irqs = VFIO_PCI_NUM_IRQS;
		return copy_to_user(uarg, &info, minsz) ? -EFAULT : 0;
	}
	case VFIO_DEVICE_GET_REGION_INFO: {
		struct mdevstate_region_info info = {};

		minsz = offsetofend(struct vfio_region_info, offset);
		if (copy_from_user(&info, uarg, minsz))
			return -EFAULT;
		outsz = info.base.argsz;
		if (outsz < minsz)
			return -EINVAL;
		if (info.base.index >= MDEVSTATE_NUM_REGIONS)
			return -EINVAL;
		get_region_info(ms, &info);
		if (info.base.flags & VFIO_REGION_INFO_FLAG_CAPS) {
			/* too small for the cap: tell userspace the size */
			if (outsz < sizeof(info)) {
				info.base.cap_offset = 0;
				outsz = minsz;
			} else {
				outsz = sizeof(info);
			}
			info.base.argsz = sizeof(info);
		} else {
			outsz = minsz;
		}
		return copy_to_user(uarg, &info, outsz) ? -EFAULT : 0;
	}
	case VFIO_DEVICE_GET_IRQ_INFO: {
		struct vfio_irq_info info;

		minsz = offsetofend(struct vfio_irq_info, count);
		if (copy_from_user(&info, uarg, minsz))
			return -EFAULT;
		if (info.argsz < minsz || info.index >= VFIO_PCI_NUM_IRQS)
			return -EINVAL;
		info.flags = 0;
		info.count = 0;
		if (info.index == VFIO_PCI_INTX_IRQ_INDEX) {
			info.flags = VFIO_IRQ_INFO_EVENTFD |
				VFIO_IRQ_INFO_MASKABLE |
				VFIO_IRQ_INFO_AUTOMASKED;
			info.count = 1;
		} else if (info.index == VFIO_PCI_MSI_IRQ_INDEX) {
			info.flags = VFIO_IRQ_INFO_EVENTFD |
				VFIO_IRQ_INFO_NORESIZE;
			info.count = 1;
		}
		return copy_to_user(uarg, &info, minsz) ? -EFAULT : 0;
	}
	case VFIO_DEVICE_SET_IRQS: {
		struct vfio_irq_set hdr;
		size_t data_size = 0;
		u8 *data = NULL;

		minsz = offsetofend(struct vfio_irq_set, count);
		if (copy_from_user(&hdr, uarg, minsz))
			return -EFAULT;
		ret = vfio_set_irqs_validate_and_prepare(&hdr, 1,
							 VFIO_PCI_NUM_IRQS,
							 &data_size);
		if (ret)
			return ret;
		if (data_size) {
			data = memdup_user(uarg + minsz, data_size);
			if (IS_ERR(data))
				return PTR_ERR(data);
		}
		mutex_lock(&ms->lock);
		ret = set_irqs(ms, &hdr, data);
		mutex_unlock(&ms->lock);
		kfree(data);
		return ret;
	}
	case VFIO_DEVICE_RESET:
		mutex_lock(&ms->lock);
		device_reset(ms);
		mutex_unlock(&ms->lock);
		return 0;
	}
	return -ENOTTY;
}

/* A new user starts with a device in RUNNING and no logging session */
static int mdevstate_open(struct vfio_device *vdev)
{
	struct mdev_state *ms = container_of(vdev, struct mdev_state, vdev);

	mutex_lock(&ms->lock);
	regions_reset(ms);
	ms->opened = true;
	mutex_unlock(&ms->lock);
	return 0;
}

static void mdevstate_close(struct vfio_device *vdev)
{
	struct mdev_state *ms = container_of(vdev, struct mdev_state, vdev);

	mutex_lock(&ms->lock);
	ms->opened = false;		/* no DMA from now on */
	disable_irqs(ms);
	ms->irq_pending = false;
	regions_reset(ms);
	mutex_unlock(&ms->lock);
}

/* Instances */

static int mdevstate_init_dev(struct vfio_device *vdev)
{
	struct mdev_state *ms = container_of(vdev, struct mdev_state, vdev);
	struct mdev_device *mdev = to_mdev_device(vdev->dev);
	struct mdevstate_type *type = container_of(mdev->type,
						   struct mdevstate_type, type);
	struct mdevstate_fault *faults = ms->faults;
	int avail = atomic_read(&mdevstate_avail);
	u32 v[3];
	int ret;

	do {
		if (!avail)
			return -ENOSPC;
	} while (!atomic_try_cmpxchg(&mdevstate_avail, &avail, avail - 1));

	mutex_lock(&mdevstate_param_lock);
	ms->mem_size = param_mem_size;
	ms->chunk_size = param_chunk_size;
	ms->bitmap_size = param_bitmap_size;
	ms->mmap = param_mmap;
	ms->caps = VFIO_DEVICE_DATA_CAP_DEVICE_MEMORY |
		VFIO_DEVICE_DATA_CAP_SYSTEM_MEMORY |
		(param_p2p ? VFIO_DEVICE_DATA_CAP_P2P : 0);
	strscpy(ms->identity, param_identity, sizeof(ms->identity));
	parse_version(param_version, strlen(param_version), v);
	ret = fail_parse_list(faults, param_fail);
	ms->init_regs[MDEVSTATE_REG_CTRL / 4] =
		param_start ? MDEVSTATE_CTRL_MUTATE | MDEVSTATE_CTRL_DMA : 0;
	ms->init_regs[MDEVSTATE_REG_MUTATE_RATE / 4] = param_mutate_rate;
	ms->init_regs[MDEVSTATE_REG_DMA_RATE / 4] = param_dma_rate;
	ms->init_regs[MDEVSTATE_REG_DMA_ADDR_LO / 4] =
		lower_32_bits(param_dma_addr);
	ms->init_regs[MDEVSTATE_REG_DMA_ADDR_HI / 4] =
		upper_32_bits(param_dma_addr);
	ms->init_regs[MDEVSTATE_REG_DMA_PAGES / 4] = param_dma_pages;
	mutex_unlock(&mdevstate_param_lock);
	if (ret)
		goto err_avail;
	if (type->major_bump) {
		v[0] += type->major_bump;
		v[1] = 0;
		v[2] = 0;
	}
	ms->ver_major = v[0];
	ms->ver_minor = v[1];
	ms->ver_bugfix = v[2];
	snprintf(ms->version_str, sizeof(ms->version_str), "%s-%u.%u.%u",
		 ms->identity, v[0], v[1], v[2]);
	ms->init_regs[MDEVSTATE_REG_ID / 4] = MDEVSTATE_ID_MAGIC;
	ms->init_regs[MDEVSTATE_REG_DEVMEM_MIB / 4] = ms->mem_size >> 20;
	ms->nr_pages = ms->mem_size / MDEVSTATE_PAGE_SIZE;

	ms->region_size[VFIO_PCI_CONFIG_REGION_INDEX] = MDEVSTATE_CFG_SPACE_SIZE;
	ms->region_size[VFIO_PCI_BAR0_REGION_INDEX] = MDEVSTATE_BAR0_SIZE;
	ms->region_size[MDEVSTATE_REGION_CTL] =
		sizeof(struct vfio_device_state_ctl);
	ms->region_size[MDEVSTATE_REGION_DATA_CONFIG] =
		MDEVSTATE_DATA_CONFIG_SIZE;
	ms->region_size[MDEVSTATE_REGION_DATA_MEMORY] = ms->chunk_size;
	ms->region_size[MDEVSTATE_REGION_DATA_BITMAP] = ms->bitmap_size;
	ms->region_size[MDEVSTATE_REGION_VERSION] =
		VFIO_DEVICE_DATA_VERSION_MAX;

	/* sizes from the parameters: a failure is -ENOMEM, not a warning */
	ret = -ENOMEM;
	ms->mem = __vmalloc(ms->mem_size, GFP_KERNEL | __GFP_ZERO | __GFP_NOWARN);
	ms->mem_dirty = kvcalloc(BITS_TO_LONGS(ms->nr_pages), sizeof(long),
				 GFP_KERNEL | __GFP_NOWARN);
	ms->set_pages = __vmalloc(ms->nr_pages * sizeof(u32),
				  GFP_KERNEL | __GFP_NOWARN);
	ms->dma_page = kzalloc(MDEVSTATE_PAGE_SIZE, GFP_KERNEL);
	ms->region_buf[MDEVSTATE_REGION_DATA_CONFIG] =
		vmalloc_user(MDEVSTATE_DATA_CONFIG_SIZE);
	ms->region_buf[MDEVSTATE_REGION_DATA_MEMORY] =
		vmalloc_user(ms->chunk_size);
	ms->region_buf[MDEVSTATE_REGION_DATA_BITMAP] =
		vmalloc_user(PAGE_ALIGN(ms->bitmap_size));
	if (!ms->mem || !ms->mem_dirty || !ms->set_pages || !ms->dma_page ||
	    !ms->region_buf[MDEVSTATE_REGION_DATA_CONFIG] ||
	    !ms->region_buf[MDEVSTATE_REGION_DATA_MEMORY] ||
	    !ms->region_buf[MDEVSTATE_REGION_DATA_BITMAP])
		goto err_free;

	mutex_init(&ms->lock);
	xa_init(&ms->sys_dirty);
	ms->mdev = mdev;
	ms->irq_index = -1;
	create_config_space(ms);
	device_reset(ms);
	INIT_DELAYED_WORK(&ms->work, mdevstate_work);
	ms->last_tick = ktime_get();
	schedule_delayed_work(&ms->work, msecs_to_jiffies(MDEVSTATE_TICK_MS));
	return 0;

err_free:
	vfree(ms->region_buf[MDEVSTATE_REGION_DATA_BITMAP]);
	vfree(ms->region_buf[MDEVSTATE_REGION_DATA_MEMORY]);
	vfree(ms->region_buf[MDEVSTATE_REGION_DATA_CONFIG]);
	kfree(ms->dma_page);
	vfree(ms->set_pages);
	kvfree(ms->mem_dirty);
	vfree(ms->mem);
err_avail:
	atomic_inc(&mdevstate_avail);
	return ret;
}

static void mdevstate_release_dev(struct vfio_device *vdev)
{
	struct mdev_state *ms = container_of(vdev, struct mdev_state, vdev);

	sys_dirty_clear(ms);
	mutex_destroy(&ms->lock);
	vfree(ms->region_buf[MDEVSTATE_REGION_DATA_BITMAP]);
	vfree(ms->region_buf[MDEVSTATE_REGION_DATA_MEMORY]);
	vfree(ms->region_buf[MDEVSTATE_REGION_DATA_CONFIG]);
	kfree(ms->dma_page);
	vfree(ms->set_pages);
	kvfree(ms->mem_dirty);
	vfree(ms->mem);
	atomic_inc(&mdevstate_avail);
}

static int mdevstate_probe(struct mdev_device *mdev)
{
	struct mdev_state *ms;
	int ret;

	ms = vfio_alloc_device(mdev_state, vdev, &mdev->dev,
			       &mdevstate_dev_ops);
	if (IS_ERR(ms))
		return PTR_ERR(ms);

	ret = vfio_register_emulated_iommu_dev(&ms->vdev);
	if (ret)
		goto err_stop;
	dev_set_drvdata(&mdev->dev, ms);
	return 0;

err_stop:
	mutex_lock(&ms->lock);
	ms->quit = true;
	mutex_unlock(&ms->lock);
	cancel_delayed_work_sync(&ms->work);
	vfio_put_device(&ms->vdev);
	return ret;
}

static void mdevstate_remove(struct mdev_device *mdev)
{
	struct mdev_state *ms = dev_get_drvdata(&mdev->dev);

	vfio_unregister_group_dev(&ms->vdev);
	mutex_lock(&ms->lock);
	ms->quit = true;
	mutex_unlock(&ms->lock);
	cancel_delayed_work_sync(&ms->work);
	vfio_put_device(&ms->vdev);
}

/* sysfs of the mdev device */

static ssize_t migration_version_show(struct device *dev,
				      struct device_attribute *attr, char *buf)
{
	struct mdev_state *ms = dev_get_drvdata(dev);

	return sysfs_emit(buf, "%s\n", ms->version_str);
}

static ssize_t migration_version_store(struct device *dev,
				       struct device_attribute *attr,
				       const char *buf, size_t count)
{
	struct mdev_state *ms = dev_get_drvdata(dev);
	int ret = version_check(ms, buf, count);

	return ret ? ret : count;
}
static DEVICE_ATTR_RW(migration_version);

static ssize_t digest_show(struct device *dev, struct device_attribute *attr,
			   char *buf)
{
	struct mdev_state *ms = dev_get_drvdata(dev);
	struct mdevstate_config_payload p;
	u8 digest[SHA256_DIGEST_SIZE];
	struct sha256_state sctx;
	u64 off;

	sha256_init(&sctx);
	mutex_lock(&ms->lock);
	for (off = 0; off < ms->mem_size; off += SZ_1M)
		sha256_update(&sctx, ms->mem + off,
			      min_t(u64, SZ_1M, ms->mem_size - off));
	config_payload(ms, &p);
	mutex_unlock(&ms->lock);
	sha256_update(&sctx, (u8 *)&p, sizeof(p));
	sha256_final(&sctx, digest);
	return sysfs_emit(buf, "%*phN\n", SHA256_DIGEST_SIZE, digest);
}
static DEVICE_ATTR_RO(digest);

static ssize_t status_show(struct device *dev, struct device_attribute *attr,
			   char *buf)
{
	struct mdev_state *ms = dev_get_drvdata(dev);
	ssize_t ret;

	mutex_lock(&ms->lock);
	ret = sysfs_emit(buf,
			 "state=%s logging=%d mutate_count=%llu dma_count=%llu dma_passes=%u dma_errors=%u mem_size=%llu ctrl=0x%x connected=%d pending=%llu set_open=%d set_pos=%llu set_size=%llu\n",
			 state_name(ms->state), logging(ms), ms->mutate_count,
			 ms->dma_count, ms->regs[MDEVSTATE_REG_DMA_PASSES / 4],
			 ms->regs[MDEVSTATE_REG_DMA_ERRORS / 4], ms->mem_size,
			 ms->regs[MDEVSTATE_REG_CTRL / 4], ms->opened,
			 pending(ms), ms->set.open, ms->set.pos, ms->set.size);
	mutex_unlock(&ms->lock);
	return ret;
}
static DEVICE_ATTR_RO(status);

static ssize_t fail_show(struct device *dev, struct device_attribute *attr,
			 char *buf)
{
	struct mdev_state *ms = dev_get_drvdata(dev);
	ssize_t len = 0;
	int i;

	mutex_lock(&ms->lock);
	for (i = 0; i < FAULT_NR; i++) {
		struct mdevstate_fault *f = &ms->faults[i];

		if (!f->err && !f->delay_ms)
			continue;
		len += sysfs_emit_at(buf, len,
				     "%s from=%s to=%s err=%d count=%d delay_ms=%u\n",
				     fault_names[i],
				     f->from ? state_name(f->from - 1) : "any",
				     f->to ? state_name(f->to - 1) : "any",
				     f->err, f->count, f->delay_ms);
	}
	mutex_unlock(&ms->lock);
	return len;
}

static ssize_t fail_store(struct device *dev, struct device_attribute *attr,
			  const char *buf, size_t count)
{
	struct mdev_state *ms = dev_get_drvdata(dev);
	char *spec;
	int ret;

	spec = kstrndup(buf, count, GFP_KERNEL);
	if (!spec)
		return -ENOMEM;
	mutex_lock(&ms->lock);
	ret = fault_parse(ms->faults, strim(spec));
	mutex_unlock(&ms->lock);
	kfree(spec);
	return ret ? ret : count;
}
static DEVICE_ATTR_RW(fail);

static struct attribute *mdevstate_dev_attrs[] = {
	&dev_attr_migration_version.attr,
	&dev_attr_digest.attr,
	&dev_attr_status.attr,
	&dev_attr_fail.attr,
	NULL,
};

static const struct attribute_group mdevstate_dev_group = {
	.attrs = mdevstate_dev_attrs,
};

static const struct attribute_group *mdevstate_dev_groups[] = {
	&mdevstate_dev_group,
	NULL,
};

/*
 * sysfs of the mdev type: migration_version, so that management software
 * can check a target before it creates the instance.  The mdev core has
 * no hook for driver attributes of a type; the type's kobject dispatches
 * to attributes laid out as this struct (struct mdev_type_attribute of
 * drivers/vfio/mdev/mdev_sysfs.c).
 */
struct mdevstate_type_attribute {
	struct attribute attr;
	ssize_t (*show)(struct mdev_type *mtype,
			struct mdevstate_type_attribute *attr, char *buf);
	ssize_t (*store)(struct mdev_type *mtype,
			 struct mdevstate_type_attribute *attr,
			 const char *buf, size_t count);
};

/* What an instance of the type created now would report */
static int type_version(struct mdev_type *mtype, char *id, u32 v[3])
{
	struct mdevstate_type *type = container_of(mtype, struct mdevstate_type,
						   type);
	int ret;

	mutex_lock(&mdevstate_param_lock);
	strscpy(id, param_identity, MDEVSTATE_IDENTITY_MAX);
	ret = parse_version(param_version, strlen(param_version), v);
	mutex_unlock(&mdevstate_param_lock);
	if (type->major_bump) {
		v[0] += type->major_bump;
		v[1] = 0;
		v[2] = 0;
	}
	return ret;
}

static ssize_t type_migration_version_show(struct mdev_type *mtype,
					   struct mdevstate_type_attribute *attr,
					   char *buf)
{
	char id[MDEVSTATE_IDENTITY_MAX];
	u32 v[3];
	int ret = type_version(mtype, id, v);

	return ret ? ret : sysfs_emit(buf, "%s-%u.%u.%u\n", id, v[0], v[1],
				      v[2]);
}

static ssize_t type_migration_version_store(struct mdev_type *mtype,
					    struct mdevstate_type_attribute *attr,
					    const char *buf, size_t count)
{
	char id[MDEVSTATE_IDENTITY_MAX];
	u32 v[3];
	int ret = type_version(mtype, id, v);

	if (!ret)
		ret = version_compatible(id, v[0], v[1], buf, count);
	return ret ? ret : count;
}

static struct mdevstate_type_attribute mdevstate_type_attr_migration_version = {
	.attr = { .name = "migration_version", .mode = 0644 },
	.show = type_migration_version_show,
	.store = type_migration_version_store,
};

static unsigned int mdevstate_get_available(struct mdev_type *mtype)
{
	return atomic_read(&mdevstate_avail);
}

static ssize_t mdevstate_show_description(struct mdev_type *mtype, char *buf)
{
	return sysfs_emit(buf, "device memory, DMA engine, device-state regions\n");
}

static const struct vfio_device_ops mdevstate_dev_ops = {
	.name = "vfio-mdevstate",
	.init = mdevstate_init_dev,
	.release = mdevstate_release_dev,
	.open_device = mdevstate_open,
	.close_device = mdevstate_close,
	.read = mdevstate_read,
	.write = mdevstate_write,
	.mmap = mdevstate_mmap,
	.ioctl = mdevstate_ioctl,
	.bind_iommufd = vfio_iommufd_emulated_bind,
	.unbind_iommufd = vfio_iommufd_emulated_unbind,
	.attach_ioas = vfio_iommufd_emulated_attach_ioas,
	.detach_ioas = vfio_iommufd_emulated_detach_ioas,
};

static struct mdev_driver mdevstate_driver = {
	.device_api = VFIO_DEVICE_API_PCI_STRING,
	.driver = {
		.name = MDEVSTATE_NAME,
		.owner = THIS_MODULE,
		.mod_name = KBUILD_MODNAME,
		.dev_groups = mdevstate_dev_groups,
	},
	.probe = mdevstate_probe,
	.remove = mdevstate_remove,
	.get_available = mdevstate_get_available,
	.show_description = mdevstate_show_description,
};

static const struct file_operations vd_fops = {
	.owner = THIS_MODULE,
};

static const struct class mdevstate_class = {
	.name = MDEVSTATE_CLASS_NAME,
};

static void mdevstate_device_release(struct device *dev)
{
	/* nothing: the parent device is static */
}

static int __init mdevstate_init(void)
{
	unsigned int i;
	u32 v[3];
	int ret;

	if (parse_version(param_version, strlen(param_version), v))
		return -EINVAL;
	atomic_set(&mdevstate_avail, param_max_instances);

	ret = alloc_chrdev_region(&mdevstate_dev.devt, 0, MINORMASK + 1,
				  MDEVSTATE_NAME);
	if (ret < 0) {
		pr_err("mdevstate: cannot register a chrdev region: %d\n", ret);
		return ret;
	}
	cdev_init(&mdevstate_dev.cdev, &vd_fops);
	cdev_add(&mdevstate_dev.cdev, mdevstate_dev.devt, MINORMASK + 1);

	ret = mdev_register_driver(&mdevstate_driver);
	if (ret)
		goto err_cdev;

	ret = class_register(&mdevstate_class);
	if (ret)
		goto err_driver;
	mdevstate_dev.dev.class = &mdevstate_class;
	mdevstate_dev.dev.release = mdevstate_device_release;
	dev_set_name(&mdevstate_dev.dev, "%s", MDEVSTATE_NAME);

	ret = device_register(&mdevstate_dev.dev);
	if (ret)
		goto err_put;

	ret = mdev_register_parent(&mdevstate_dev.parent, &mdevstate_dev.dev,
				   &mdevstate_driver, mdevstate_mdev_types,
				   ARRAY_SIZE(mdevstate_mdev_types));
	if (ret)
		goto err_device;

	for (i = 0; i < ARRAY_SIZE(mdevstate_types); i++) {
		ret = sysfs_create_file(&mdevstate_types[i].type.kobj,
					&mdevstate_type_attr_migration_version.attr);
		if (ret)
			goto err_parent;
	}
	return 0;

err_parent:
	while (i--)
		sysfs_remove_file(&mdevstate_types[i].type.kobj,
				  &mdevstate_type_attr_migration_version.attr);
	mdev_unregister_parent(&mdevstate_dev.parent);
err_device:
	device_del(&mdevstate_dev.dev);
err_put:
	put_device(&mdevstate_dev.dev);
	class_unregister(&mdevstate_class);
err_driver:
	mdev_unregister_driver(&mdevstate_driver);
err_cdev:
	cdev_del(&mdevstate_dev.cdev);
	unregister_chrdev_region(mdevstate_dev.devt, MINORMASK + 1);
	return ret;
}

static void __exit mdevstate_exit(void)
{
	unsigned int i;

	for (i = 0; i < ARRAY_SIZE(mdevstate_types); i++)
		sysfs_remove_file(&mdevstate_types[i].type.kobj,
				  &mdevstate_type_attr_migration_version.attr);
	mdev_unregister_parent(&mdevstate_dev.parent);
	device_unregister(&mdevstate_dev.dev);
	mdev_unregister_driver(&mdevstate_driver);
	cdev_del(&mdevstate_dev.cdev);
	unregister_chrdev_region(mdevstate_dev.devt, MINORMASK + 1);
	class_unregister(&mdevstate_class);
}

module_init(mdevstate_init)
module_exit(mdevstate_exit)

MODULE_LICENSE("GPL");
MODULE_DESCRIPTION("Sample mdev driver for the VFIO device-state region interface");
