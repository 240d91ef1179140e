/*
 * uwsgi packet decoder (sans-IO): one pass over a complete vars block.
 *
 * Wire format (uwsgi protocol, as nginx's ngx_http_uwsgi_module sends it):
 *   header: modifier1 (u8), datasize (u16 little-endian), modifier2 (u8)
 *   block:  datasize bytes of repeated {u16le keylen, key, u16le vallen, value}
 *
 * The decoder does no allocation and no I/O. The caller (uwsgigw/protocol/decoder_c.py)
 * owns one uwsgi_scratch per thread and turns the output layout into Python
 * strings with builtins only. The pure-Python twin (uwsgigw/protocol/decoder_py.py)
 * implements exactly the same checks in the same order; keep them in step.
 *
 * Only the region between the cffi markers is given to cffi's cdef, so it
 * must stay plain declarations pycparser understands (no #include, no #if).
 */
#ifndef UWSGI_DECODER_H
#define UWSGI_DECODER_H

#include <stddef.h>
#include <stdint.h>

/* cffi-cdef-begin */

/* Limits. A u16 datasize caps the block at 65535 bytes, so the output layout
 * (never longer than the block) always fits in UWSGI_SCRATCH_SIZE. */
#define UWSGI_HEADER_SIZE 4
#define UWSGI_MAX_VARS 1000
#define UWSGI_SCRATCH_SIZE 65536
/* datasize whose bytes spell "ET": the tail of "GET " read as a u16le. */
#define UWSGI_HTTP_DATASIZE 21573

/* Negative return values of uwsgi_decode(); > 0 means success. */
#define UWSGI_NEED_DATA -1
#define UWSGI_ERROR -2

/* uwsgi_result.error */
enum uwsgi_error {
    UWSGI_E_OK = 0,
    UWSGI_E_HTTP = 1,             /* an HTTP request line reached the socket */
    UWSGI_E_MODIFIER = 2,         /* modifier1 not 0/30, or modifier2 != 0 */
    UWSGI_E_BLOCK_TOO_LARGE = 3,  /* datasize > max_block */
    UWSGI_E_EMPTY_KEY = 4,
    UWSGI_E_TRUNCATED = 5,        /* a var field runs past the block end */
    UWSGI_E_TRAILING = 6,         /* 1 byte left: cannot hold a key length */
    UWSGI_E_TOO_MANY_VARS = 7,
    UWSGI_E_SCRATCH = 8           /* caller bug: scratch too small */
};

/* uwsgi_result.field for UWSGI_E_TRUNCATED. A truncated key length is a
 * lone byte at the end of the block, reported as UWSGI_E_TRAILING, so it
 * has no field code. */
enum uwsgi_field {
    UWSGI_FIELD_KEY = 1,
    UWSGI_FIELD_VAL_LEN = 2,
    UWSGI_FIELD_VAL = 3
};

/* Filled on UWSGI_ERROR only: the numbers the Python error messages need. */
typedef struct {
    int32_t error;       /* enum uwsgi_error */
    int32_t field;       /* enum uwsgi_field, for UWSGI_E_TRUNCATED */
    uint32_t modifier1;
    uint32_t modifier2;
    uint32_t datasize;
    uint32_t index;      /* var index (0-based) the error is about */
    uint32_t offset;     /* packet offset (header included) of the bad field */
    uint32_t need;       /* bytes the truncated field needs */
    uint32_t left;       /* bytes left in the block at that offset */
} uwsgi_result;

/* Per-thread working memory, allocated once by the caller.
 * out:  key0 \0 value0 \0 key1 \0 ... valueN (no trailing NUL), so that
 *       Python gets the items with one decode and one split.
 * ends: ends[2*i] / ends[2*i+1] = offset in out just past key i / value i.
 *       Python slices by these instead of splitting when a key or value
 *       contains a NUL byte (the split then yields more than 2*nvars items:
 *       one len() detects it, cheaper than scanning every field in C), and
 *       when items are large (str.split scans byte by byte). */
typedef struct {
    uwsgi_result res;
    uint32_t ends[2000];   /* 2 * UWSGI_MAX_VARS; cdef needs a literal */
    char out[65536];       /* UWSGI_SCRATCH_SIZE */
} uwsgi_scratch;

/*
 * Decode the packet at data[0:len].
 *
 * Returns
 *   UWSGI_NEED_DATA   fewer than 4 bytes, or the block is not complete yet;
 *                     header errors are reported as soon as 4 bytes are there.
 *   UWSGI_ERROR       sc->res.error says why (plus index/offset/need/left).
 *   > 0               valid; sc->out and sc->ends are filled, and the packet
 *                     summary is packed so Python needs no struct reads:
 *                       bits  0-16  outlen (bytes of sc->out used)
 *                       bits 17-33  consumed (4 + datasize; >= 4, so rc > 0)
 *                       bits 34-41  modifier1
 *                       bits 42-53  2 * nvars (number of items)
 *
 * max_block: largest accepted datasize (uWSGI's buffer-size). Negative means
 * every packet is too large (the Python twin compares the same way).
 */
int64_t uwsgi_decode(const char *data, size_t len, int64_t max_block,
                     uwsgi_scratch *sc);

/* cffi-cdef-end */

#endif /* UWSGI_DECODER_H */
