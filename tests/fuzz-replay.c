/*
 * main() of the project's libFuzzer targets when built without libFuzzer
 * (see fuzz-replay.h)
 *
 * Without arguments: replay the target's seeds and corrupt inputs and
 * check each verdict, printing TAP; exit 1 on any mismatch.  A crash, an
 * abort of the target's checks or a sanitizer report ends the test too.
 * With arguments: replay the files (or the files in the directories)
 * named, printing the verdict on each, as a libFuzzer binary would run
 * them; exit 0 when none crashed.
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 */

#include <stdio.h>
#include <stdlib.h>
#include "fuzz-replay.h"

static void replay_file(const char *path)
{
    g_autofree char *buf = NULL;
    g_autoptr(GError) err = NULL;
    const char *why = "";
    gsize len;
    bool ok;

    if (!g_file_get_contents(path, &buf, &len, &err)) {
        fprintf(stderr, "%s\n", err->message);
        exit(1);
    }
    LLVMFuzzerTestOneInput((const uint8_t *)buf, len);
    ok = fuzz_last_accepted(&why);
    printf("%s: %s (%s)\n", path, ok ? "accepted" : "rejected", why);
}

static void replay_path(const char *path)
{
    g_autoptr(GDir) dir = NULL;
    const char *name;

    if (!g_file_test(path, G_FILE_TEST_IS_DIR)) {
        replay_file(path);
        return;
    }
    dir = g_dir_open(path, 0, NULL);
    while (dir && (name = g_dir_read_name(dir))) {
        g_autofree char *p = g_build_filename(path, name, NULL);

        if (g_file_test(p, G_FILE_TEST_IS_REGULAR)) {
            replay_file(p);
        }
    }
}

int main(int argc, char **argv)
{
    g_autoptr(GPtrArray) inputs = NULL;
    unsigned fails = 0, accepted = 0, rejected = 0;
    guint i;

    setvbuf(stdout, NULL, _IOLBF, 0);
    LLVMFuzzerInitialize(&argc, &argv);
    if (argc > 1) {
        for (i = 1; i < argc; i++) {
            replay_path(argv[i]);
        }
        return 0;
    }

    inputs = fuzz_inputs();
    printf("1..%u\n", inputs->len + 1);
    for (i = 0; i < inputs->len; i++) {
        FuzzInput *in = g_ptr_array_index(inputs, i);
        const char *why = "";
        bool ok;

        LLVMFuzzerTestOneInput(in->data->data, in->data->len);
        ok = fuzz_last_accepted(&why);
        if (ok) {
            accepted++;
        } else {
            rejected++;
        }
        if (ok == (in->expect == FUZZ_EXPECT_ACCEPT)) {
            printf("ok %u - %s: %s as expected (%s)\n", i + 1, in->name,
                   ok ? "accepted" : "rejected", why);
        } else {
            printf("not ok %u - %s: %s, expected %s (%s)\n", i + 1, in->name,
                   ok ? "accepted" : "rejected",
                   ok ? "a rejection" : "it accepted whole", why);
            fails++;
        }
    }
    /* A replay of only one kind of input would show little. */
    if (accepted && rejected) {
        printf("ok %u - %u inputs accepted, %u rejected\n", inputs->len + 1,
               accepted, rejected);
    } else {
        printf("not ok %u - %u inputs accepted, %u rejected: need both\n",
               inputs->len + 1, accepted, rejected);
        fails++;
    }
    return fails ? 1 : 0;
}
