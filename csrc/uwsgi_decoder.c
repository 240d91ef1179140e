/*
 * uwsgi packet decoder; see uwsgi_decoder.h for the contract.
 *
 * Every length read from the wire is checked against the bytes left in the
 * block before it is used (DESIGN.md: "Bounds-check every length in C"), and
 * the output never outgrows the block, which never outgrows the scratch.
 */
#include <string.h>

#include "uwsgi_decoder.h"

/* The cdef section cannot use these names for array sizes; tie them here. */
_Static_assert(sizeof(((uwsgi_scratch *)0)->out) == UWSGI_SCRATCH_SIZE,
               "out must hold the largest block");
_Static_assert(sizeof(((uwsgi_scratch *)0)->ends) ==
                   2 * UWSGI_MAX_VARS * sizeof(uint32_t),
               "ends must hold two offsets per var");

static inline uint32_t read_u16le(const unsigned char *p)
{
    return (uint32_t)p[0] | ((uint32_t)p[1] << 8);
}

/* Request lines nginx would never send on a uwsgi upstream: someone used
 * proxy_pass (or a browser) against the uwsgi socket. Same list as
 * decoder_py._HTTP_STARTS. */
static int looks_like_http(const unsigned char *h)
{
    static const char methods[][4] = {
        {'G', 'E', 'T', ' '}, {'P', 'O', 'S', 'T'}, {'H', 'E', 'A', 'D'},
        {'P', 'U', 'T', ' '}, {'D', 'E', 'L', 'E'}, {'O', 'P', 'T', 'I'},
        {'P', 'A', 'T', 'C'}, {'C', 'O', 'N', 'N'}, {'T', 'R', 'A', 'C'},
    };
    size_t i;

    /* Valid modifier1 values are 0 and 30: skip the compares for them. */
    if (h[0] < 'C' || h[0] > 'T')
        return 0;
    for (i = 0; i < sizeof(methods) / sizeof(methods[0]); i++) {
        if (memcmp(h, methods[i], 4) == 0)
            return 1;
    }
    return 0;
}

static int64_t fail(uwsgi_result *res, int32_t error, uint32_t index,
                    uint32_t offset)
{
    res->error = error;
    res->index = index;
    res->offset = offset;
    return UWSGI_ERROR;
}

static int64_t fail_header(uwsgi_result *res, int32_t error,
                           uint32_t modifier1, uint32_t modifier2,
                           uint32_t datasize)
{
    res->modifier1 = modifier1;
    res->modifier2 = modifier2;
    res->datasize = datasize;
    return fail(res, error, 0, 0);
}

static int64_t fail_truncated(uwsgi_result *res, int32_t field,
                              uint32_t index, uint32_t offset, uint32_t need,
                              uint32_t left)
{
    res->field = field;
    res->need = need;
    res->left = left;
    return fail(res, UWSGI_E_TRUNCATED, index, offset);
}

int64_t uwsgi_decode(const char *data, size_t len, int64_t max_block,
                     uwsgi_scratch *sc)
{
    const unsigned char *pkt = (const unsigned char *)data;
    uwsgi_result *res = &sc->res;
    uint32_t modifier1, modifier2, datasize, nvars = 0;
    size_t pos, end, outlen;
    char *o = sc->out;

    if (len < UWSGI_HEADER_SIZE)
        return UWSGI_NEED_DATA;

    modifier1 = pkt[0];
    datasize = read_u16le(pkt + 1);
    modifier2 = pkt[3];

    /* Header checks need only the 4 header bytes; order matches the twin:
     * HTTP first (its bytes would also fail the modifier check, but the HTTP
     * message is the one that tells the operator what is wrong). */
    if (datasize == UWSGI_HTTP_DATASIZE || looks_like_http(pkt))
        return fail_header(res, UWSGI_E_HTTP, modifier1, modifier2, datasize);
    if ((modifier1 != 0 && modifier1 != 30) || modifier2 != 0)
        return fail_header(res, UWSGI_E_MODIFIER, modifier1, modifier2,
                           datasize);
    if ((int64_t)datasize > max_block)
        return fail_header(res, UWSGI_E_BLOCK_TOO_LARGE, modifier1, modifier2,
                           datasize);

    end = UWSGI_HEADER_SIZE + (size_t)datasize;
    if (len < end)
        return UWSGI_NEED_DATA;
    /* Unreachable with the static sizes above; kept so that a future change
     * of the scratch layout cannot turn into an overflow. */
    if (datasize > sizeof(sc->out))
        return fail_header(res, UWSGI_E_SCRATCH, modifier1, modifier2,
                           datasize);

    pos = UWSGI_HEADER_SIZE;
    while (pos < end) {
        size_t left = end - pos;
        uint32_t klen, vlen;

        /* A 1001st var is refused before looking at its bytes. */
        if (nvars == UWSGI_MAX_VARS)
            return fail(res, UWSGI_E_TOO_MANY_VARS, nvars, (uint32_t)pos);
        /* A lone byte cannot start a var: it is a trailing byte. */
        if (left < 2) {
            res->left = (uint32_t)left;
            return fail(res, UWSGI_E_TRAILING, nvars, (uint32_t)pos);
        }
        klen = read_u16le(pkt + pos);
        if (klen == 0)
            return fail(res, UWSGI_E_EMPTY_KEY, nvars, (uint32_t)pos);
        pos += 2;
        left -= 2;
        if (klen > left)
            return fail_truncated(res, UWSGI_FIELD_KEY, nvars, (uint32_t)pos,
                                  klen, (uint32_t)left);
        memcpy(o, pkt + pos, klen);
        o += klen;
        sc->ends[2 * nvars] = (uint32_t)(o - sc->out);
        *o++ = '\0';
        pos += klen;
        left -= klen;

        if (left < 2)
            return fail_truncated(res, UWSGI_FIELD_VAL_LEN, nvars,
                                  (uint32_t)pos, 2, (uint32_t)left);
        vlen = read_u16le(pkt + pos);
        pos += 2;
        left -= 2;
        if (vlen > left)
            return fail_truncated(res, UWSGI_FIELD_VAL, nvars, (uint32_t)pos,
                                  vlen, (uint32_t)left);
        memcpy(o, pkt + pos, vlen);
        o += vlen;
        sc->ends[2 * nvars + 1] = (uint32_t)(o - sc->out);
        *o++ = '\0';
        pos += vlen;
        nvars++;
    }

    /* No separator after the last value: Python splits on NUL and must get
     * exactly 2 * nvars items. Each var wrote klen+vlen+2 bytes from
     * klen+vlen+4 block bytes, so o - out <= datasize <= sizeof(out). */
    outlen = nvars ? (size_t)(o - sc->out) - 1 : 0;
    return (int64_t)outlen | ((int64_t)end << 17) | ((int64_t)modifier1 << 34)
        | ((int64_t)(2 * nvars) << 42);
}
