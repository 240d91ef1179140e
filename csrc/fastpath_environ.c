/*
 * The var-name cache, the environ, read_request() and accept() of
 * uwsgigw._fastpath (declarations in fastpath.h).
 */
#include "fastpath.h"

#include <errno.h>
#include <poll.h>
#include <string.h>
#include <sys/socket.h>

/* ---------------------------------------------------------------- keys -- */

/* nginx sends the same ~20 var names on every request: keep one interned
 * str per name instead of decoding it again (and hashing it again on dict
 * insert). Bounded: a client inventing header names fills the table once,
 * after which new names are simply decoded per request. */
#define KEY_SLOTS 1024 /* power of two */
#define KEY_MAX_CACHED 512
#define KEY_MAX_LEN 64

typedef struct {
    PyObject *str;
    uint32_t len;
    uint32_t hash;
} key_slot;

static key_slot keys[KEY_SLOTS];
static int keys_cached;

static uint32_t fnv1a(const char *p, size_t n)
{
    uint32_t h = 2166136261u;
    while (n--)
        h = (h ^ (unsigned char)*p++) * 16777619u;
    return h;
}

static PyObject *latin1(const char *p, Py_ssize_t n)
{
    return PyUnicode_DecodeLatin1(p, n, NULL);
}

/* New reference to the str for key bytes p[0:n]. */
PyObject *fp_key_str(const char *p, uint32_t n)
{
    uint32_t h, probe;
    PyObject *s;

    if (n > KEY_MAX_LEN)
        return latin1(p, n);
    h = fnv1a(p, n);
    for (probe = 0; probe < 8; probe++) {
        key_slot *k = &keys[(h + probe) & (KEY_SLOTS - 1)];
        if (k->str == NULL) {
            s = latin1(p, n);
            /* k->str is checked again: making s may have run other code
             * (a finalizer) that filled this slot. */
            if (s == NULL || keys_cached >= KEY_MAX_CACHED || k->str != NULL)
                return s;
            PyUnicode_InternInPlace(&s);
            Py_INCREF(s);
            k->str = s;
            k->len = n;
            k->hash = h;
            keys_cached++;
            return s;
        }
        if (k->hash == h && k->len == n &&
            memcmp(PyUnicode_1BYTE_DATA(k->str), p, n) == 0) {
            Py_INCREF(k->str);
            return k->str;
        }
    }
    return latin1(p, n);
}

/* ------------------------------------------------------------- environ -- */


/* HTTPS in ("on", "1") after .lower(): only ASCII letters lower to o/n in
 * latin-1, so an ASCII case fold is exact. */
static int https_on(PyObject *v)
{
    const unsigned char *d;
    if (v == NULL || !PyUnicode_Check(v) || PyUnicode_KIND(v) != PyUnicode_1BYTE_KIND)
        return 0;
    d = PyUnicode_1BYTE_DATA(v);
    if (PyUnicode_GET_LENGTH(v) == 1)
        return d[0] == '1';
    return PyUnicode_GET_LENGTH(v) == 2 && (d[0] | 0x20) == 'o' && (d[1] | 0x20) == 'n';
}

/* Insert one request var, joining a repeated one as environ.merge_repeated
 * does. ``seen`` holds the request's keys that also exist in ``base``, so a
 * request value replacing a base default is not taken for a repeat. It owns
 * a reference to each: the dict keeps base's equal key object, not ``k``,
 * so nothing else would keep an uncached ``k`` alive (fp_release_seen).
 * Returns 1 when it joined a repeat, 0 for a new var, -1 on error. */
int fp_put_var(PyObject *env, PyObject *base, PyObject *k, PyObject *v,
               PyObject **seen, int *nseen)
{
    PyObject *old = PyDict_GetItemWithError(env, k);
    int i, repeated = 0;

    if (old == NULL) {
        if (PyErr_Occurred())
            return -1;
        return PyDict_SetItem(env, k, v);
    }
    for (i = 0; i < *nseen; i++) {
        if (seen[i] == k || PyUnicode_Compare(seen[i], k) == 0) {
            repeated = 1;
            break;
        }
    }
    if (!repeated) {
        int in_base = PyDict_Contains(base, k);
        if (in_base < 0)
            return -1;
        if (in_base) {
            if (*nseen < FP_MAX_BASE_SEEN) {
                Py_INCREF(k);
                seen[(*nseen)++] = k;
            }
            return PyDict_SetItem(env, k, v);
        }
        repeated = 1;
    }
    {
        /* RFC 9110 5.3 joins repeats with ", "; Cookie (RFC 6265 5.4) with "; ". */
        PyObject *sep = fp_is_str(k, "HTTP_COOKIE", 11) ? fp.semicolon : fp.comma;
        PyObject *a = PyUnicode_Concat(old, sep), *joined;
        int rc;
        if (a == NULL)
            return -1;
        joined = PyUnicode_Concat(a, v);
        Py_DECREF(a);
        if (joined == NULL)
            return -1;
        rc = PyDict_SetItem(env, k, joined);
        Py_DECREF(joined);
        return rc < 0 ? -1 : 1;
    }
}

void fp_release_seen(PyObject **seen, int nseen)
{
    while (nseen > 0)
        Py_DECREF(seen[--nseen]);
}

/* CONTENT_LENGTH as environ.content_length() validates it: -2 means "not
 * valid here" (Python raises the error), -1 a Python error. */
static long long body_length(PyObject *env)
{
    PyObject *v = PyDict_GetItemWithError(env, fp.CONTENT_TYPE);
    const unsigned char *d;
    Py_ssize_t n, i;
    long long length = 0;

    if (v != NULL && PyUnicode_Check(v) && PyUnicode_GET_LENGTH(v) == 0) {
        if (PyDict_DelItem(env, fp.CONTENT_TYPE) < 0)
            return -1;
    } else if (v == NULL && PyErr_Occurred()) {
        return -1;
    }
    v = PyDict_GetItemWithError(env, fp.CONTENT_LENGTH);
    if (v == NULL)
        return PyErr_Occurred() ? -1 : 0;
    if (!PyUnicode_Check(v) || PyUnicode_KIND(v) != PyUnicode_1BYTE_KIND)
        return -2;
    n = PyUnicode_GET_LENGTH(v);
    if (n == 0)
        return PyDict_DelItem(env, fp.CONTENT_LENGTH) < 0 ? -1 : 0;
    if (n > 18)
        return -2;
    d = PyUnicode_1BYTE_DATA(v);
    for (i = 0; i < n; i++) {
        if (d[i] < '0' || d[i] > '9')
            return -2;
        length = length * 10 + (d[i] - '0');
    }
    return length;
}

/* Decode data[0:n] and build the environ. Returns a new reference to the
 * environ and fills h's length, consumed, nvars and modifier1; Py_None (new
 * ref) when Python must take over (need data, a protocol error, an invalid
 * CONTENT_LENGTH); NULL on a Python error. */
static PyObject *environ_of(const char *data, size_t n, long long max_block,
                            PyObject *base, fp_head *h)
{
    int64_t rc = uwsgi_decode(data, n, max_block, &fp_scratch);
    PyObject *env, *seen[FP_MAX_BASE_SEEN];
    int nseen = 0;
    const unsigned char *p, *end;
    long long length;

    if (rc <= 0)
        Py_RETURN_NONE;
    /* uwsgi_decode() checked every length against the block: walk it. */
    p = (const unsigned char *)data + UWSGI_HEADER_SIZE;
    end = (const unsigned char *)data + ((rc >> 17) & 0x1FFFF);
    env = PyDict_Copy(base);
    if (env == NULL)
        return NULL;
    while (p < end) {
        uint32_t klen = p[0] | (uint32_t)p[1] << 8, vlen;
        const char *kp = (const char *)p + 2, *vp;
        PyObject *k, *v;

        p += 2 + klen;
        vlen = p[0] | (uint32_t)p[1] << 8;
        vp = (const char *)p + 2;
        p += 2 + vlen;
        /* UWSGI_* vars make uWSGI load code named by the request: dropped,
         * as are the HTTP_ twins of CONTENT_* (environ.request_vars). */
        if ((klen >= 6 && memcmp(kp, "UWSGI_", 6) == 0) ||
            (klen == 19 && memcmp(kp, "HTTP_CONTENT_LENGTH", 19) == 0) ||
            (klen == 17 && memcmp(kp, "HTTP_CONTENT_TYPE", 17) == 0))
            continue;
        k = fp_key_str(kp, klen);
        if (k == NULL)
            goto fail;
        v = latin1(vp, vlen);
        if (v == NULL) {
            Py_DECREF(k);
            goto fail;
        }
        if (fp_put_var(env, base, k, v, seen, &nseen) < 0) {
            Py_DECREF(k);
            Py_DECREF(v);
            goto fail;
        }
        Py_DECREF(k);
        Py_DECREF(v);
    }
    fp_release_seen(seen, nseen);
    nseen = 0;
    length = body_length(env);
    if (length == -1)
        goto fail;
    if (length == -2) {
        Py_DECREF(env);
        Py_RETURN_NONE;
    }
    {
        PyObject *https = PyDict_GetItemWithError(env, fp.HTTPS);
        if (https == NULL && PyErr_Occurred())
            goto fail;
        if (https_on(https) ||
            fp_is_str(PyDict_GetItemWithError(env, fp.REQUEST_SCHEME), "https", 5)) {
            if (PyDict_SetItem(env, fp.url_scheme, fp.https) < 0)
                goto fail;
        } else if (PyErr_Occurred()) {
            goto fail;
        }
    }
    if (((rc >> 34) & 0xFF) == 30) {
        /* modifier1 30: PATH_INFO still carries the SCRIPT_NAME prefix. */
        PyObject *sn = PyDict_GetItemWithError(env, fp.SCRIPT_NAME);
        PyObject *path = sn ? PyDict_GetItemWithError(env, fp.PATH_INFO) : NULL;
        if (PyErr_Occurred())
            goto fail;
        if (sn && path && PyUnicode_Check(sn) && PyUnicode_Check(path) &&
            PyUnicode_GET_LENGTH(sn) > 0) {
            Py_ssize_t m = PyUnicode_Tailmatch(path, sn, 0, PY_SSIZE_T_MAX, -1);
            if (m < 0)
                goto fail;
            if (m) {
                PyObject *rest = PyUnicode_Substring(path, PyUnicode_GET_LENGTH(sn),
                                                     PyUnicode_GET_LENGTH(path));
                if (rest == NULL || PyDict_SetItem(env, fp.PATH_INFO, rest) < 0) {
                    Py_XDECREF(rest);
                    goto fail;
                }
                Py_DECREF(rest);
            }
        }
    }
    /* The decoder's packed summary (uwsgi_decoder.h) ends here: named fields
     * from now on. */
    h->length = length;
    h->consumed = (rc >> 17) & 0x1FFFF;
    h->modifier1 = (rc >> 34) & 0xFF;
    h->nvars = rc >> 42;
    return env;
fail:
    fp_release_seen(seen, nseen);
    Py_DECREF(env);
    return NULL;
}

static int parse_base(PyObject *base)
{
    if (!PyDict_CheckExact(base)) {
        PyErr_SetString(PyExc_TypeError, "base environ must be a dict");
        return -1;
    }
    return 0;
}

PyObject *fp_head_tuple(fp_head *h)
{
    PyObject *args[7], *head = NULL;
    int i;

    args[0] = h->env; /* stolen: released below with the numbers */
    h->env = NULL;
    args[1] = PyLong_FromLongLong(h->length);
    args[2] = PyLong_FromLongLong(h->consumed);
    args[3] = PyLong_FromLongLong(h->nvars);
    args[4] = PyLong_FromLongLong(h->modifier1);
    args[5] = PyLong_FromSsize_t(h->nread);
    args[6] = PyLong_FromSsize_t(h->held);
    for (i = 1; i < 7 && args[i] != NULL; i++)
        ;
    if (i == 7)
        head = PyObject_Vectorcall(fp.RequestHead, args, 7, NULL);
    for (i = 0; i < 7; i++)
        Py_XDECREF(args[i]);
    return head;
}

PyObject *fp_environ_from(PyObject *mod, PyObject *args)
{
    Py_buffer data;
    long long max_block;
    PyObject *base;
    fp_head h = {0};

    if (!PyArg_ParseTuple(args, "y*LO", &data, &max_block, &base))
        return NULL;
    if (parse_base(base) < 0) {
        PyBuffer_Release(&data);
        return NULL;
    }
    h.env = environ_of(data.buf, (size_t)data.len, max_block, base, &h);
    h.nread = data.len;
    PyBuffer_Release(&data);
    if (h.env == NULL || h.env == Py_None)
        return h.env;
    return fp_head_tuple(&h);
}

/* Consume ``n`` bytes already peeked (they are queued: no waiting). */
static int consume_peeked(int fd, char *into, size_t n)
{
    while (n > 0) {
        ssize_t got = recv(fd, into, n, MSG_DONTWAIT);
        if (got > 0) {
            into += got;
            n -= (size_t)got;
        } else if (got < 0 && errno == EINTR) {
            if (PyErr_CheckSignals() < 0)
                return -1;
        } else {
            if (got == 0)
                errno = ECONNRESET; /* cannot happen: the bytes were queued */
            PyErr_SetFromErrno(PyExc_OSError);
            return -1;
        }
    }
    return 0;
}

/* Read the vars block into ``buf`` and build the environ. nginx writes the
 * packet right after connecting, so the first read nearly always brings all
 * of it; otherwise this waits (GIL released) and reads on, with
 * socket-timeout bounding the whole vars block, as handler._read_packet does.
 *
 * The reads are MSG_PEEK: the last out->held of the out->nread bytes in buf
 * stay in the kernel's receive queue until the response is complete
 * (uwsgigw/cycle/ending.py, "the held tail"). Closing a socket with unread data
 * resets the connection, on unix sockets as on TCP, so a response cut short
 * (an exception, a killed worker) reaches nginx as an error, never as a
 * clean end. An incomplete packet's bytes are consumed before waiting for
 * more: queued data would keep poll() from ever waiting.
 *
 * FP_HANDOVER means "Python takes it from here", with nothing held: the
 * out->nread bytes in buf are a protocol error or a bad CONTENT_LENGTH,
 * which Python explains, or all that came before EOF (0: none). */
int fp_read_head(int fd, PyObject *bufobj, long long max_block, PyObject *base,
                 double timeout, fp_head *out)
{
    Py_buffer buf;
    double deadline = -1;
    size_t n = 0;
    ssize_t got;
    PyObject *env;
    int rc;

    if (PyObject_GetBuffer(bufobj, &buf, PyBUF_WRITABLE) < 0)
        return FP_ERROR;
    for (;;) {
        got = recv(fd, (char *)buf.buf + n, (size_t)buf.len - n, MSG_DONTWAIT | MSG_PEEK);
        if (got > 0) {
            int whole;
            env = environ_of(buf.buf, n + (size_t)got, max_block, base, out);
            if (env == NULL) {
                rc = FP_ERROR;
                goto done;
            }
            if (env != Py_None) {
                out->env = env;
                out->nread = (Py_ssize_t)(n + (size_t)got);
                out->held = got;
                rc = FP_HEAD;
                goto done;
            }
            Py_DECREF(env);
            whole = uwsgi_decode(buf.buf, n + (size_t)got, max_block, &fp_scratch) !=
                    UWSGI_NEED_DATA;
            if (consume_peeked(fd, (char *)buf.buf + n, (size_t)got) < 0) {
                rc = FP_ERROR;
                goto done;
            }
            n += (size_t)got;
            if (whole || n == (size_t)buf.len)
                goto hand_over; /* Python names the error */
            continue;
        }
        if (got == 0)
            goto hand_over; /* EOF after n bytes */
        if (errno == EINTR) {
            if (PyErr_CheckSignals() < 0) {
                rc = FP_ERROR;
                goto done;
            }
            continue;
        }
        if (errno != EAGAIN && errno != EWOULDBLOCK) {
            PyErr_SetFromErrno(PyExc_OSError);
            rc = FP_ERROR;
            goto done;
        }
        {
            struct pollfd p = {fd, POLLIN, 0};
            int left_ms, r;
            if (deadline < 0)
                deadline = fp_now_monotonic() + timeout;
            left_ms = (int)((deadline - fp_now_monotonic()) * 1000) + 1;
            if (left_ms <= 0) {
                rc = FP_TIMEOUT;
                goto done;
            }
            Py_BEGIN_ALLOW_THREADS
            r = poll(&p, 1, left_ms);
            Py_END_ALLOW_THREADS
            if (r == 0) {
                rc = FP_TIMEOUT;
                goto done;
            }
            if (r < 0) {
                /* errno first: a Python signal handler (a worker's SIGTERM
                 * while it waits here) may change it. */
                int err = errno;
                if (err != EINTR) {
                    errno = err;
                    PyErr_SetFromErrno(PyExc_OSError);
                    rc = FP_ERROR;
                    goto done;
                }
                if (PyErr_CheckSignals() < 0) {
                    rc = FP_ERROR;
                    goto done;
                }
            }
        }
    }
hand_over:
    out->nread = (Py_ssize_t)n;
    out->held = 0;
    rc = FP_HANDOVER;
done:
    PyBuffer_Release(&buf);
    return rc;
}

/* read_request(fd, buffer, max_block, base, timeout) -> RequestHead | int;
 * raises TimeoutError when socket-timeout passed before the vars block was
 * complete. The int: fp_read_head's FP_HANDOVER, the bytes in the buffer. */
PyObject *fp_read_request(PyObject *mod, PyObject *const *args, Py_ssize_t nargs)
{
    int fd;
    long long max_block;
    double timeout;
    fp_head h = {0};

    if (nargs != 5) {
        PyErr_SetString(PyExc_TypeError, "read_request(fd, buffer, max_block, base, timeout)");
        return NULL;
    }
    fd = PyLong_AsLong(args[0]);
    max_block = PyLong_AsLongLong(args[2]);
    timeout = PyFloat_AsDouble(args[4]);
    if (PyErr_Occurred() || parse_base(args[3]) < 0)
        return NULL;
    switch (fp_read_head(fd, args[1], max_block, args[3], timeout, &h)) {
    case FP_HEAD:
        return fp_head_tuple(&h);
    case FP_HANDOVER:
        return PyLong_FromSsize_t(h.nread);
    case FP_TIMEOUT:
        PyErr_SetString(PyExc_TimeoutError, "vars block not complete within socket-timeout");
        return NULL;
    default:
        return NULL;
    }
}

PyObject *fp_accept(PyObject *mod, PyObject *arg)
{
    int lfd = PyLong_AsLong(arg), fd;

    if (lfd == -1 && PyErr_Occurred())
        return NULL;
    for (;;) {
        fd = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
        if (fd >= 0)
            return PyLong_FromLong(fd);
        /* An empty queue is the normal end of a burst (and another worker
         * taking the connection): -1, not a BlockingIOError to build,
         * format and catch. */
        if (errno == EAGAIN || errno == EWOULDBLOCK)
            return PyLong_FromLong(-1);
        if (errno != EINTR)
            return PyErr_SetFromErrno(PyExc_OSError);
        if (PyErr_CheckSignals() < 0)
            return NULL;
    }
}
