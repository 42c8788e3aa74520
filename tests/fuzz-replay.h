/*
 * Replay of the project's libFuzzer targets without libFuzzer
 *
 * A target (tests/unit/vfio-devstate-stream-fuzz.c,
 * tests/vfio-user-devstate/devstate-fuzz.c) defines the libFuzzer entry
 * points and, for this driver, the inputs it was designed with (its seeds,
 * which it must accept whole, and hand-made corrupt inputs, which it must
 * refuse cleanly) and its verdict on the last input.  tests/fuzz-replay.c
 * is the main() of the gcc build: it replays them as a meson test (or the
 * files named on its command line, to reproduce a finding).  The clang
 * build links the same target with libFuzzer instead.
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 */

#ifndef TESTS_FUZZ_REPLAY_H
#define TESTS_FUZZ_REPLAY_H

#include <glib.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef enum {
    FUZZ_EXPECT_ACCEPT,     /* taken whole: a valid seed */
    FUZZ_EXPECT_REJECT,     /* refused, without abort or sanitizer report */
} FuzzExpect;

typedef struct {
    char *name;
    GByteArray *data;
    FuzzExpect expect;
} FuzzInput;

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* The target's seeds and corrupt inputs, a GPtrArray of FuzzInput */
GPtrArray *fuzz_inputs(void);

/* Whether the target took its last input whole; *why says what happened */
bool fuzz_last_accepted(const char **why);

static inline void fuzz_input_free(gpointer p)
{
    FuzzInput *in = p;

    g_free(in->name);
    g_byte_array_free(in->data, TRUE);
    g_free(in);
}

static inline void fuzz_input_add(GPtrArray *inputs, const char *name,
                                  FuzzExpect expect, const uint8_t *data,
                                  size_t len)
{
    FuzzInput *in = g_new0(FuzzInput, 1);

    in->name = g_strdup(name);
    in->expect = expect;
    in->data = g_byte_array_sized_new(len);
    g_byte_array_append(in->data, data, len);
    g_ptr_array_add(inputs, in);
}

/* Write the inputs to @dir as files (a libFuzzer seed corpus) */
static inline bool fuzz_write_inputs(const char *dir)
{
    g_autoptr(GPtrArray) inputs = fuzz_inputs();
    guint i;

    if (g_mkdir_with_parents(dir, 0755) < 0) {
        return false;
    }
    for (i = 0; i < inputs->len; i++) {
        FuzzInput *in = g_ptr_array_index(inputs, i);
        g_autofree char *path = g_build_filename(dir, in->name, NULL);

        if (!g_file_set_contents(path, (const char *)in->data->data,
                                 in->data->len, NULL)) {
            return false;
        }
    }
    return true;
}

#endif /* TESTS_FUZZ_REPLAY_H */
