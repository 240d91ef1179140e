/*
 * The restricted HTTP/1.1 request-head parser of the C path (declarations
 * in fastpath.h; Core.serve_http in fastpath_http.c uses it).
 *
 * It takes a small, strict subset of RFC 9112: GET or HEAD, an origin-form
 * target of RFC 3986 characters without '#', HTTP/1.0 or 1.1, CRLF line
 * ends, token field names without '_', visible ASCII values, at most one
 * Host and one Connection (close or keep-alive), no Content-Length,
 * Transfer-Encoding, Expect or Upgrade. Anything else it declines, and the
 * connection goes to protocol/http.py (llhttp), which answers or refuses
 * it. On what it takes it agrees with llhttp field by field
 * (tests/test_http_fast.py fuzzes the two against each other), so a
 * request means the same whichever parser read it.
 */
#include "fastpath.h"

#include <string.h>

/* RFC 3986 characters of an origin-form target, '#' left out. */
static const unsigned char target_chars[256] = {
    ['a' ... 'z'] = 1, ['A' ... 'Z'] = 1, ['0' ... '9'] = 1,
    ['-'] = 1, ['.'] = 1, ['_'] = 1, ['~'] = 1, [':'] = 1, ['/'] = 1, ['?'] = 1,
    ['['] = 1, [']'] = 1, ['@'] = 1, ['!'] = 1, ['$'] = 1, ['&'] = 1, ['\''] = 1,
    ['('] = 1, [')'] = 1, ['*'] = 1, ['+'] = 1, [','] = 1, [';'] = 1, ['='] = 1,
    ['%'] = 1,
};

#define MAX_TARGET 16384 /* protocol/http.py's max_target */

int fp_field_is(const fp_hfield *f, const char *lit, uint32_t n)
{
    uint32_t i;
    if (f->nlen != n)
        return 0;
    for (i = 0; i < n; i++) /* lit is lower-case letters and '-' */
        if ((f->name[i] | 0x20) != lit[i])
            return 0;
    return 1;
}

static int value_is(const fp_hfield *f, const char *lit, uint32_t n)
{
    uint32_t i;
    if (f->vlen != n)
        return 0;
    for (i = 0; i < n; i++)
        if ((f->value[i] | 0x20) != lit[i])
            return 0;
    return 1;
}

/* MORE, or DECLINE once the head is over max_head without its end. */
static int more(size_t used, size_t max_head)
{
    return used > max_head ? FP_HTTP_DECLINE : FP_HTTP_MORE;
}

/* Does p[0:n] start one of the two versions (or is it a prefix of one)? */
static int version_of(const unsigned char *p, size_t n, int *v10)
{
    size_t m = n < 10 ? n : 10;
    if (memcmp(p, "HTTP/1.1\r\n", m) == 0)
        *v10 = 0;
    else if (memcmp(p, "HTTP/1.0\r\n", m) == 0)
        *v10 = 1;
    else
        return FP_HTTP_DECLINE;
    return n < 10 ? FP_HTTP_MORE : FP_HTTP_DONE;
}

int fp_http_parse(const char *buf, size_t n, size_t max_head, fp_http_req *r)
{
    const unsigned char *p = (const unsigned char *)buf, *end = p + n, *q;
    int nhost = 0, nconn = 0, close = 0, keep = 0, rc;
    long long size;

    r->nfields = 0;
    r->host = -1;
    r->forwarded = 0;
    if (n >= 4 && memcmp(p, "GET ", 4) == 0) {
        r->head = 0;
        q = p + 4;
    } else if (n >= 5 && memcmp(p, "HEAD ", 5) == 0) {
        r->head = 1;
        q = p + 5;
    } else if (n < 5 && (memcmp(p, "GET ", n < 4 ? n : 4) == 0 || memcmp(p, "HEAD ", n) == 0)) {
        return FP_HTTP_MORE;
    } else {
        return FP_HTTP_DECLINE;
    }
    size = q - p - 1;
    r->target = (const char *)q;
    while (q < end && target_chars[*q])
        q++;
    if (q == end)
        return (size_t)(q - (const unsigned char *)r->target) > MAX_TARGET ? FP_HTTP_DECLINE
                                                                           : more(n, max_head);
    r->tlen = (uint32_t)(q - (const unsigned char *)r->target);
    if (*q != ' ' || r->tlen == 0 || r->target[0] != '/' || r->tlen > MAX_TARGET)
        return FP_HTTP_DECLINE;
    q++;
    rc = version_of(q, (size_t)(end - q), &r->v10);
    if (rc != FP_HTTP_DONE)
        return rc == FP_HTTP_MORE ? more(n, max_head) : rc;
    q += 10;
    size += r->tlen + 12;
    for (;;) {
        fp_hfield *f;
        const unsigned char *name = q, *value;

        if (q == end)
            return more(n, max_head);
        if (*q == '\r') {
            if (q + 1 == end)
                return more(n, max_head);
            if (q[1] != '\n')
                return FP_HTTP_DECLINE;
            q += 2;
            break;
        }
        while (q < end && fp_token_chars[*q] && *q != '_')
            q++;
        if (q == end)
            return more(n, max_head);
        if (*q != ':' || q == name || q - name > FP_HTTP_MAX_NAME)
            return FP_HTTP_DECLINE; /* '_', a space before ':', obs-fold, ... */
        value = ++q;
        while (q < end && (*q == ' ' || *q == '\t'))
            q++;
        value = q;
        while (q < end && ((*q >= 0x20 && *q < 0x7f) || *q == '\t'))
            q++;
        if (q == end || (*q == '\r' && q + 1 == end))
            return more(n, max_head);
        if (*q != '\r' || q[1] != '\n' || r->nfields == FP_HTTP_MAX_FIELDS)
            return FP_HTTP_DECLINE;
        f = &r->f[r->nfields];
        f->name = (const char *)name;
        f->nlen = (uint32_t)(value - name); /* through the OWS: cut below */
        f->value = (const char *)value;
        f->vlen = (uint32_t)(q - value);
        q += 2;
        {   /* the name ends at its ':' */
            const char *colon = memchr(f->name, ':', f->nlen);
            f->nlen = (uint32_t)(colon - f->name);
        }
        size += f->nlen + f->vlen + 4;
        switch (f->nlen) {
        case 4:
            if (fp_field_is(f, "host", 4)) {
                nhost++;
                r->host = r->nfields;
            }
            break;
        case 6:
            if (fp_field_is(f, "expect", 6))
                return FP_HTTP_DECLINE;
            break;
        case 7:
            if (fp_field_is(f, "upgrade", 7))
                return FP_HTTP_DECLINE;
            break;
        case 10:
            if (fp_field_is(f, "connection", 10)) {
                nconn++;
                if (value_is(f, "close", 5))
                    close = 1;
                else if (value_is(f, "keep-alive", 10))
                    keep = 1;
                else
                    return FP_HTTP_DECLINE;
            }
            break;
        case 14:
            if (fp_field_is(f, "content-length", 14))
                return FP_HTTP_DECLINE;
            break;
        case 15:
            if (fp_field_is(f, "x-forwarded-for", 15))
                r->forwarded = 1;
            break;
        case 17:
            if (fp_field_is(f, "transfer-encoding", 17))
                return FP_HTTP_DECLINE;
            if (fp_field_is(f, "x-forwarded-proto", 17))
                r->forwarded = 1;
            break;
        }
        r->nfields++;
    }
    r->head_len = (size_t)(q - p);
    if (r->head_len > max_head || nhost > 1 || nconn > 1 || (!r->v10 && nhost == 0))
        return FP_HTTP_DECLINE;
    r->keep_alive = r->v10 ? keep : !close;
    r->size = size + 2;
    return FP_HTTP_DONE;
}

/* _fastpath.http_parse(data, max_head) -> 0 (more), -1 (declined), or
 * (method, target, version, [(name, value)], keep_alive, size, host,
 * head_len) with names lower-cased: protocol/http.py's HttpHead fields,
 * for the differential tests. */
PyObject *fp_http_parse_py(PyObject *mod, PyObject *args)
{
    Py_buffer data;
    Py_ssize_t max_head;
    fp_http_req r;
    PyObject *fields, *res = NULL;
    int rc, i;

    if (!PyArg_ParseTuple(args, "y*n:http_parse", &data, &max_head))
        return NULL;
    rc = fp_http_parse(data.buf, (size_t)data.len, (size_t)max_head, &r);
    if (rc != FP_HTTP_DONE) {
        PyBuffer_Release(&data);
        return PyLong_FromLong(rc);
    }
    fields = PyList_New(r.nfields);
    for (i = 0; fields != NULL && i < r.nfields; i++) {
        PyObject *name = PyBytes_FromStringAndSize(r.f[i].name, r.f[i].nlen), *pair;
        uint32_t j;
        if (name == NULL) {
            Py_CLEAR(fields);
            break;
        }
        for (j = 0; j < r.f[i].nlen; j++) {
            char ch = PyBytes_AS_STRING(name)[j];
            if (ch >= 'A' && ch <= 'Z')
                PyBytes_AS_STRING(name)[j] = (char)(ch + 32);
        }
        pair = Py_BuildValue("(Ny#)", name, r.f[i].value, (Py_ssize_t)r.f[i].vlen);
        if (pair == NULL) {
            Py_CLEAR(fields);
            break;
        }
        PyList_SET_ITEM(fields, i, pair);
    }
    if (fields != NULL) {
        PyObject *host = r.host >= 0 ? PyUnicode_DecodeLatin1(r.f[r.host].value,
                                                              r.f[r.host].vlen, NULL)
                                     : (Py_INCREF(Py_None), Py_None);
        if (host != NULL)
            res = Py_BuildValue("(ss#sNOLNn)", r.head ? "HEAD" : "GET", r.target,
                                (Py_ssize_t)r.tlen, r.v10 ? "1.0" : "1.1", fields,
                                r.keep_alive ? Py_True : Py_False, r.size, host,
                                (Py_ssize_t)r.head_len);
        else
            Py_DECREF(fields);
    }
    PyBuffer_Release(&data);
    return res;
}
