/*
 * Helpers for qtests that use the vfio-user-devstate reference device
 *
 * Copyright (c) 2025 The QEMU project contributors
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 */

#include "qemu/osdep.h"
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>

#include "libqtest.h"
#include "vfio-user-devstate-util.h"

const char *devstate_server_binary(void)
{
    return g_getenv("DEVSTATE_SERVER_BINARY");
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

char *devstate_server_cmd(DevstateServer *srv, const char *cmd)
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
