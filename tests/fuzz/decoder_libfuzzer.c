/*
 * libFuzzer harness for csrc/uwsgi_decoder.c, built with ASan and UBSan by
 * tests/fuzz/build.py (`make fuzz`):
 *
 *   clang -g -O1 -fsanitize=fuzzer,address,undefined -Icsrc \
 *         tests/fuzz/decoder_libfuzzer.c csrc/uwsgi_decoder.c -o decoder_fuzzer
 *
 * Input layout (shared with the atheris harness and the seed corpus in
 * tests/fuzz/corpus): byte 0 picks max_block, the rest is the packet. The
 * packet is copied into a buffer of exactly its size, so ASan catches a read
 * one byte past the end -- which a Python bytes object (always followed by a
 * NUL and allocator slack) would hide.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "uwsgi_decoder.h"

static const int64_t LIMITS[] = {4096, 65535, 0, 1, 100, 8192, -1, INT64_MAX};

static uwsgi_scratch scratch;

static void check_output(const unsigned char *data, size_t len, int64_t rc)
{
    if (rc == UWSGI_NEED_DATA || rc == UWSGI_ERROR)
        return;
    if (rc <= 0)
        abort();
    {
        uint32_t outlen = (uint32_t)(rc & ((1 << 17) - 1));
        uint32_t consumed = (uint32_t)((rc >> 17) & ((1 << 17) - 1));
        uint32_t nitems = (uint32_t)(rc >> 42);
        uint32_t i, prev = 0;

        /* The contract in uwsgi_decoder.h: a whole block was there, the
         * output is never longer than it, the offsets are increasing. */
        if (consumed < UWSGI_HEADER_SIZE || consumed > len)
            abort();
        if (outlen > consumed - UWSGI_HEADER_SIZE || outlen > UWSGI_SCRATCH_SIZE)
            abort();
        if (nitems % 2 || nitems > 2 * UWSGI_MAX_VARS)
            abort();
        for (i = 0; i < nitems; i++) {
            if (scratch.ends[i] < prev || scratch.ends[i] > outlen)
                abort();
            prev = scratch.ends[i] + 1;
        }
        (void)data;
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *raw, size_t size)
{
    unsigned char *data;
    int64_t max_block, rc;
    size_t len;

    if (size == 0)
        return 0;
    max_block = LIMITS[raw[0] % (sizeof(LIMITS) / sizeof(LIMITS[0]))];
    len = size - 1;
    data = malloc(len ? len : 1);
    if (!data)
        return 0;
    memcpy(data, raw + 1, len);
    rc = uwsgi_decode((const char *)data, len, max_block, &scratch);
    check_output(data, len, rc);
    /* The worker decodes again after every recv(): the packet alone must
     * give the same answer, and one byte less must ask for more data. */
    if (rc > 0) {
        size_t consumed = (size_t)((rc >> 17) & ((1 << 17) - 1));
        if (uwsgi_decode((const char *)data, consumed, max_block, &scratch) != rc)
            abort();
        if (uwsgi_decode((const char *)data, consumed - 1, max_block, &scratch) !=
            UWSGI_NEED_DATA)
            abort();
    }
    free(data);
    return 0;
}
