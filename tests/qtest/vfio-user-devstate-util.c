/*
 * Helpers for qtests that use the vfio-user-devstate reference device
 * or, in kernel mode, an instance of a kernel mdev driver with the same
 * device model
 *
 * Copyright (c) 2025 The QEMU project contributors
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 */

#include "qemu/osdep.h"
#include <glob.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>

#include "libqtest.h"
#include "hw/pci/pci_regs.h"
#include "qobject/qdict.h"
#include "vfio-user-devstate-util.h"

const char *devstate_server_binary(void)
{
    return g_getenv("DEVSTATE_SERVER_BINARY");
}

const char *devstate_kernel_mdev_type(void)
{
    return g_getenv("DEVSTATE_KERNEL_MDEV_TYPE");
}

const char *devstate_kernel_mdev_incompat_type(void)
{
    return g_getenv("DEVSTATE_KERNEL_MDEV_INCOMPAT_TYPE");
}

/* Kernel mode: sysfs and the kernel log */

static char *sysfs_read(const char *path)
{
    g_autoptr(GError) err = NULL;
    char *s = NULL;

    if (!g_file_get_contents(path, &s, NULL, &err)) {
        g_error("kernel mdev: cannot read %s: %s", path, err->message);
    }
    g_strchomp(s);
    return s;
}

/* Write @val to @path; 0 or the errno of the write */
static int sysfs_try_write(const char *path, const char *val)
{
    int fd = open(path, O_WRONLY | O_CLOEXEC);
    ssize_t n;
    int err;

    if (fd < 0) {
        return errno;
    }
    n = write(fd, val, strlen(val));
    err = n < 0 ? errno : n == strlen(val) ? 0 : EIO;
    close(fd);
    return err;
}

static void sysfs_write(const char *path, const char *val)
{
    int err = sysfs_try_write(path, val);

    if (err) {
        g_error("kernel mdev: cannot write '%s' to %s: %s", val, path,
                strerror(err));
    }
}

/* "mdevstate-1" is type "1" of driver "mdevstate" */
static char *mdev_driver_of(const char *type)
{
    const char *dash = strrchr(type, '-');

    if (!dash || dash == type) {
        g_error("kernel mdev: type '%s' is not DRIVER-NAME", type);
    }
    return g_strndup(type, dash - type);
}

/* The create file of @type under its parent device */
static char *mdev_create_path(const char *type)
{
    g_autofree char *pattern =
        g_strdup_printf("/sys/class/mdev_bus/?*/mdev_supported_types/%s/"
                        "create", type);
    glob_t gl;
    char *path;

    if (glob(pattern, 0, NULL, &gl) || gl.gl_pathc != 1) {
        g_error("kernel mdev: %s matches %zu files, want one (is the "
                "driver loaded?)", pattern, (size_t)gl.gl_pathc);
    }
    path = g_strdup(gl.gl_pathv[0]);
    globfree(&gl);
    return path;
}

/*
 * The driver logs the device-state arcs, data sets and refusals as
 * debug messages: turn them on (but not those of each control-region
 * access, which would flood the log).
 */
static void mdev_enable_log(const char *driver)
{
    const char *ctl = "/proc/dynamic_debug/control";
    g_autofree char *on = g_strdup_printf("module %s +p", driver);
    g_autofree char *off = g_strdup_printf("module %s format ctl: -p",
                                           driver);

    if (access(ctl, W_OK)) {
        ctl = "/sys/kernel/debug/dynamic_debug/control";
    }
    sysfs_write(ctl, on);
    sysfs_write(ctl, off);
}

/* The module parameters the options of a server stand for */
static const struct {
    const char *opt;            /* server option */
    const char *param;          /* module parameter */
    const char *value;          /* the value of a flag; NULL: takes one */
} mdev_params[] = {
    { "--mem-size", "mem_size", NULL },
    { "--chunk-size", "chunk_size", NULL },
    { "--mutate-rate", "mutate_rate", NULL },
    { "--dma-rate", "dma_rate", NULL },
    { "--dma-addr", "dma_addr", NULL },
    { "--dma-pages", "dma_pages", NULL },
    { "--version", "version", NULL },
    { "--fail", "fail", NULL },
    { "--start", "start", "Y" },
    { "--no-mmap", "mmap", "N" },
    { "--no-p2p", "p2p", "N" },
};

static char *mdev_param_path(const char *driver, const char *param)
{
    return g_strdup_printf("/sys/module/%s/parameters/%s", driver, param);
}

/*
 * Create an instance with @opts: the module parameters are set for the
 * time of the creation (the driver reads them then) and put back after.
 */
static void mdev_create(DevstateServer *srv, const char *opts)
{
    const char *type = devstate_kernel_mdev_type();
    g_autoptr(GHashTable) set = g_hash_table_new_full(g_str_hash,
                                                      g_str_equal, NULL,
                                                      g_free);
    g_autoptr(GHashTable) saved = g_hash_table_new_full(g_str_hash,
                                                        g_str_equal, NULL,
                                                        g_free);
    g_auto(GStrv) argv = NULL;
    g_autoptr(GError) err = NULL;
    g_autofree char *driver = NULL, *create = NULL;
    GHashTableIter it;
    gpointer key, val;
    const char *v;
    int i, j, ret;

    if (opts && *opts && !g_shell_parse_argv(opts, NULL, &argv, &err)) {
        g_error("kernel mdev: options '%s': %s", opts, err->message);
    }
    for (i = 0; argv && argv[i]; i++) {
        if (!strcmp(argv[i], "--mdev-type") && argv[i + 1]) {
            type = argv[++i];
            continue;
        }
        for (j = 0; j < ARRAY_SIZE(mdev_params); j++) {
            if (!strcmp(argv[i], mdev_params[j].opt)) {
                break;
            }
        }
        if (j == ARRAY_SIZE(mdev_params) ||
            (!mdev_params[j].value && !argv[i + 1])) {
            g_error("kernel mdev: server option '%s' has no module "
                    "parameter of the driver", argv[i]);
        }
        v = mdev_params[j].value ?: argv[++i];
        if (!strcmp(mdev_params[j].param, "fail") &&
            g_hash_table_lookup(set, "fail")) {
            /* several --fail: the parameter takes a list */
            val = g_strdup_printf("%s,%s",
                                  (char *)g_hash_table_lookup(set, "fail"), v);
        } else {
            val = g_strdup(v);
        }
        g_hash_table_insert(set, (gpointer)mdev_params[j].param, val);
    }
    g_assert_nonnull(type);
    driver = mdev_driver_of(type);
    create = mdev_create_path(type);
    mdev_enable_log(driver);

    g_hash_table_iter_init(&it, set);
    while (g_hash_table_iter_next(&it, &key, &val)) {
        g_autofree char *path = mdev_param_path(driver, key);

        g_autofree char *line = g_strdup_printf("%s\n", (char *)val);

        g_hash_table_insert(saved, key, sysfs_read(path));
        sysfs_write(path, line);
    }
    srv->uuid = g_uuid_string_random();
    srv->sysfsdev = g_strdup_printf("/sys/bus/mdev/devices/%s", srv->uuid);
    g_test_message("creating %s instance %s with '%s'", type, srv->uuid,
                   opts ?: "");
    ret = sysfs_try_write(create, srv->uuid);
    g_hash_table_iter_init(&it, saved);
    while (g_hash_table_iter_next(&it, &key, &val)) {
        g_autofree char *path = mdev_param_path(driver, key);
        /* with its newline: an empty value ("fail") is one write too */
        g_autofree char *line = g_strdup_printf("%s\n", (char *)val);

        sysfs_write(path, line);
    }
    if (ret) {
        g_error("kernel mdev: cannot create an instance of %s (%s): %s",
                type, create, strerror(ret));
    }
}

/* The kernel log's lines of the instance, as the server's log */
static char *mdev_log(DevstateServer *srv)
{
    g_autofree char *tag = g_strdup_printf(" %s: ", srv->uuid);
    GString *s = g_string_new("");
    char rec[8192];
    int fd = open("/dev/kmsg", O_RDONLY | O_NONBLOCK | O_CLOEXEC);

    if (fd < 0) {
        g_error("kernel mdev: cannot open /dev/kmsg: %s", strerror(errno));
    }
    for (;;) {
        ssize_t n = read(fd, rec, sizeof(rec) - 1);
        char *msg, *end, *at;

        if (n < 0 && errno == EPIPE) {
            continue;           /* overwritten records: read on */
        }
        if (n < 0 && errno == EAGAIN) {
            break;
        }
        if (n < 0) {
            g_error("kernel mdev: reading /dev/kmsg: %s", strerror(errno));
        }
        rec[n] = 0;
        /* "PRIO,SEQ,USEC,FLAGS;MESSAGE\n" then " KEY=VALUE" lines */
        msg = strchr(rec, ';');
        if (!msg) {
            continue;
        }
        msg++;
        end = strchr(msg, '\n');
        if (end) {
            *end = 0;
        }
        at = strstr(msg, tag);
        if (at) {
            g_string_append_printf(s, "devstate: %s\n", at + strlen(tag));
        }
    }
    close(fd);
    return g_string_free(s, false);
}

static char *mdev_cmd(DevstateServer *srv, const char *cmd)
{
    g_auto(GStrv) words = g_strsplit(cmd, " ", 2);
    g_autofree char *path = NULL;
    int err;

    if (!strcmp(cmd, "digest") || !strcmp(cmd, "status")) {
        g_autofree char *v = NULL;

        path = g_strdup_printf("%s/%s", srv->sysfsdev, cmd);
        v = sysfs_read(path);
        return !strcmp(cmd, "digest") ? g_strdup_printf("digest %s", v) :
                                        g_steal_pointer(&v);
    }
    if (!strcmp(cmd, "ping")) {
        return g_strdup("pong");
    }
    if (words[0] && words[1] && (!strcmp(words[0], "fail") ||
                                 !strcmp(words[0], "delay") ||
                                 !strcmp(words[0], "clear"))) {
        path = g_strdup_printf("%s/fail", srv->sysfsdev);
        err = sysfs_try_write(path, cmd);
        return err ? g_strdup_printf("error %s", strerror(err)) :
                     g_strdup("ok");
    }
    return g_strdup_printf("error unknown command '%s'", words[0] ?: "");
}

static void devstate_server_kill(void *opaque)
{
    DevstateServer *srv = opaque;

    if (srv->pid > 0) {
        kill(srv->pid, SIGKILL);
    }
}

DevstateServer *devstate_server_start(const char *opts)
{
    DevstateServer *srv = g_new0(DevstateServer, 1);
    g_autofree char *cmd = NULL;
    g_auto(GStrv) argv = NULL;
    g_autoptr(GError) err = NULL;
    int logfd, i;

    if (devstate_kernel_mdev_type()) {
        mdev_create(srv, opts);
        return srv;
    }
    g_assert_nonnull(devstate_server_binary());
    srv->dir = g_dir_make_tmp("devstate-qtest-XXXXXX", &err);
    g_assert_no_error(err);
    srv->sock = g_build_filename(srv->dir, "vfu.sock", NULL);
    srv->ctl = g_build_filename(srv->dir, "ctl.sock", NULL);
    srv->log = g_build_filename(srv->dir, "server.log", NULL);
    cmd = g_strdup_printf("%s --socket %s --control %s -v %s",
                          devstate_server_binary(), srv->sock, srv->ctl,
                          opts ? opts : "");
    g_assert_true(g_shell_parse_argv(cmd, NULL, &argv, &err));
    logfd = open(srv->log, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    g_assert_cmpint(logfd, >=, 0);

    g_test_message("starting %s", cmd);
    srv->pid = fork();
    g_assert_cmpint(srv->pid, >=, 0);
    if (srv->pid == 0) {
        /* keep the TAP pipe free, see vhost-user-blk-test */
        dup2(logfd, STDERR_FILENO);
        close(STDIN_FILENO);
        close(STDOUT_FILENO);
        open("/dev/null", O_RDONLY);
        open("/dev/null", O_WRONLY);
        execv(argv[0], argv);
        _exit(127);
    }
    close(logfd);
    qtest_add_abrt_handler(devstate_server_kill, srv);

    /* the control socket is created after the vfio-user one */
    for (i = 0; i < 1000 && !g_file_test(srv->ctl, G_FILE_TEST_EXISTS); i++) {
        g_usleep(10 * 1000);
    }
    g_assert_true(g_file_test(srv->ctl, G_FILE_TEST_EXISTS));
    return srv;
}

char *devstate_server_device(DevstateServer *srv, const char *id)
{
    if (srv->sysfsdev) {
        return g_strdup_printf("vfio-pci,sysfsdev=%s,id=%s", srv->sysfsdev,
                               id);
    }
    return g_strdup_printf("'{\"driver\": \"vfio-user-pci\", \"id\": "
                           "\"%s\", \"socket\": {\"type\": \"unix\", "
                           "\"path\": \"%s\"}}'", id, srv->sock);
}

char *devstate_server_log(DevstateServer *srv)
{
    char *log = NULL;

    if (srv->sysfsdev) {
        return mdev_log(srv);
    }
    g_assert_true(g_file_get_contents(srv->log, &log, NULL, NULL));
    return log;
}

static char *server_cmd(DevstateServer *srv, const char *cmd)
{
    struct sockaddr_un un = { .sun_family = AF_UNIX };
    struct timeval tv = { .tv_sec = 30 };
    GString *reply = g_string_new(NULL);
    g_autofree char *line = g_strdup_printf("%s\n", cmd);
    int fd = socket(AF_UNIX, SOCK_STREAM, 0);
    char c;

    g_assert_cmpint(fd, >=, 0);
    g_strlcpy(un.sun_path, srv->ctl, sizeof(un.sun_path));
    g_assert_cmpint(connect(fd, (struct sockaddr *)&un, sizeof(un)), ==, 0);
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    g_assert_cmpint(write(fd, line, strlen(line)), ==, strlen(line));
    while (read(fd, &c, 1) == 1 && c != '\n') {
        g_string_append_c(reply, c);
    }
    close(fd);
    return g_string_free(reply, false);
}

char *devstate_server_cmd(DevstateServer *srv, const char *cmd)
{
    return srv->sysfsdev ? mdev_cmd(srv, cmd) : server_cmd(srv, cmd);
}

char *devstate_server_digest(DevstateServer *srv)
{
    g_autofree char *reply = devstate_server_cmd(srv, "digest");

    g_assert_true(g_str_has_prefix(reply, "digest "));
    return g_strdup(reply + strlen("digest "));
}

int devstate_server_wait(DevstateServer *srv, int timeout_ms)
{
    int status, i;

    for (i = 0; srv->pid > 0 && i <= timeout_ms / 10; i++) {
        if (waitpid(srv->pid, &status, WNOHANG) == srv->pid) {
            srv->pid = 0;
            return WIFEXITED(status) ? WEXITSTATUS(status) : 128;
        }
        g_usleep(10 * 1000);
    }
    return -1;
}

void devstate_server_stop(DevstateServer *srv)
{
    if (srv->sysfsdev) {
        g_autofree char *path = g_strdup_printf("%s/remove", srv->sysfsdev);

        sysfs_write(path, "1");
        g_free(srv->sysfsdev);
        g_free(srv->uuid);
        g_free(srv);
        return;
    }
    qtest_remove_abrt_handler(srv);
    if (srv->pid > 0) {
        kill(srv->pid, SIGTERM);
        waitpid(srv->pid, NULL, 0);
    }
    unlink(srv->sock);
    unlink(srv->ctl);
    if (g_getenv("DEVSTATE_KEEP_LOG")) {
        g_test_message("server log kept: %s", srv->log);
    } else {
        unlink(srv->log);
        rmdir(srv->dir);
    }
    g_free(srv->dir);
    g_free(srv->sock);
    g_free(srv->ctl);
    g_free(srv->log);
    g_free(srv);
}

void devstate_msix_setup(QPCIDevice *dev)
{
    uint64_t off;

    qpci_msix_enable(dev);
    off = dev->msix_table_off;
    qpci_io_writel(dev, dev->msix_table_bar, off + PCI_MSIX_ENTRY_LOWER_ADDR,
                   DEVSTATE_MSIX_ADDR);
    qpci_io_writel(dev, dev->msix_table_bar, off + PCI_MSIX_ENTRY_UPPER_ADDR,
                   0);
    qpci_io_writel(dev, dev->msix_table_bar, off + PCI_MSIX_ENTRY_DATA,
                   DEVSTATE_MSIX_DATA);
    qpci_io_writel(dev, dev->msix_table_bar,
                   off + PCI_MSIX_ENTRY_VECTOR_CTRL, 0);
}

void devstate_msix_assert_fires(QTestState *qts, QPCIDevice *dev,
                                QPCIBar bar0)
{
    int i;

    qtest_writel(qts, DEVSTATE_MSIX_ADDR, 0);
    qpci_io_writel(dev, bar0, DEVSTATE_REG_IRQ, 0);
    for (i = 0; i < 500 &&
         qtest_readl(qts, DEVSTATE_MSIX_ADDR) != DEVSTATE_MSIX_DATA; i++) {
        g_usleep(10 * 1000);
    }
    g_assert_cmphex(qtest_readl(qts, DEVSTATE_MSIX_ADDR), ==,
                    DEVSTATE_MSIX_DATA);
    qtest_writel(qts, DEVSTATE_MSIX_ADDR, 0);
}

char *devstate_mig_status(QTestState *qts, char **err)
{
    QDict *rsp = qtest_qmp_assert_success_ref(qts,
                                              "{'execute': 'query-migrate'}");
    char *st = g_strdup(qdict_get_try_str(rsp, "status"));

    if (err) {
        *err = g_strdup(qdict_get_try_str(rsp, "error-desc"));
    }
    qobject_unref(rsp);
    return st;
}

char *devstate_mig_wait(QTestState *qts, char **err)
{
    int i;

    for (i = 0; i < 3000; i++) {
        g_autofree char *st = devstate_mig_status(qts, NULL);

        if (!strcmp(st, "completed") || !strcmp(st, "failed") ||
            !strcmp(st, "cancelled")) {
            return devstate_mig_status(qts, err);
        }
        g_usleep(20 * 1000);
    }
    g_assert_not_reached();
}
