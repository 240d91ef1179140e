/*
 * uwsgigw._fastpath: the per-request hot path in C (CPython C API).
 *
 * The cffi decoder (uwsgi_decoder.c) cannot create Python objects, so every
 * request paid for a Python pass that turned its output into strings, a dict
 * and a response head. This module does those steps in C for the common
 * request and hands everything unusual back to the Python code, which stays
 * the one place where errors are explained (uwsgigw/handler.py):
 *
 *   accept(listen_fd)            accept4() -> int fd (no socket object, no
 *                                getsockname() as socket.socket(fileno=) does)
 *   read_request(fd, buf, max_block, base)
 *                                one non-blocking recv + decode + environ;
 *                                an int when Python must take over
 *   environ_from(data, max_block, base)
 *                                decode + environ of a buffer (tests, bench)
 *   Exchange(fd, head_only, timeout)
 *                                PEP 3333 start_response/write; builds the
 *                                head and sends head + body in one sendmsg()
 *
 * Semantics mirror uwsgigw/environ.py and uwsgigw/handler.py's _Exchange
 * exactly; tests/test_fastpath.py compares them on random packets and
 * responses. Validation is by uwsgi_decode() (the same C the cffi decoder
 * runs), so a packet it accepts can be walked without further checks.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h>

#include <errno.h>
#include <poll.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#include "uwsgi_decoder.h"

/* Hooks set once by uwsgigw/fastpath.py: the Python pieces C defers to. */
static PyObject *ResponseError;      /* response.ResponseError */
static PyObject *HeadersAlreadySent; /* response.HeadersAlreadySent */
static PyObject *py_build_head;      /* response.build_head: explains errors */
static PyObject *FileWrapperType;    /* response.FileWrapper */

/* Interned strings used per request. */
static PyObject *s_CONTENT_TYPE, *s_CONTENT_LENGTH, *s_HTTPS, *s_REQUEST_SCHEME,
    *s_url_scheme, *s_https, *s_SCRIPT_NAME, *s_PATH_INFO, *s_write,
    *s_comma, *s_semicolon;

static double now_monotonic(void);

/* One scratch for uwsgi_decode(): it is written and read within that one
 * call, with the GIL held. Nothing reads it afterwards: Python calls made
 * while building the environ can run other code (a finalizer, another
 * thread) that decodes too, so the environ walks the validated packet in
 * the caller's buffer instead. */
static uwsgi_scratch scratch;

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
static PyObject *key_str(const char *p, uint32_t n)
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

#define MAX_BASE_SEEN 64

static int is_str(PyObject *v, const char *lit, Py_ssize_t n)
{
    return v != NULL && PyUnicode_Check(v) && PyUnicode_KIND(v) == PyUnicode_1BYTE_KIND &&
           PyUnicode_GET_LENGTH(v) == n && memcmp(PyUnicode_1BYTE_DATA(v), lit, n) == 0;
}

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
 * request value replacing a base default is not taken for a repeat. */
static int put_var(PyObject *env, PyObject *base, PyObject *k, PyObject *v,
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
            if (*nseen < MAX_BASE_SEEN)
                seen[(*nseen)++] = k; /* borrowed: env keeps it alive */
            return PyDict_SetItem(env, k, v);
        }
        repeated = 1;
    }
    {
        /* RFC 9110 5.3 joins repeats with ", "; Cookie (RFC 6265 5.4) with "; ". */
        PyObject *sep = is_str(k, "HTTP_COOKIE", 11) ? s_semicolon : s_comma;
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
        return rc;
    }
}

/* CONTENT_LENGTH as environ.content_length() validates it: -2 means "not
 * valid here" (Python raises the error), -1 a Python error. */
static long long body_length(PyObject *env)
{
    PyObject *v = PyDict_GetItemWithError(env, s_CONTENT_TYPE);
    const unsigned char *d;
    Py_ssize_t n, i;
    long long length = 0;

    if (v != NULL && PyUnicode_Check(v) && PyUnicode_GET_LENGTH(v) == 0) {
        if (PyDict_DelItem(env, s_CONTENT_TYPE) < 0)
            return -1;
    } else if (v == NULL && PyErr_Occurred()) {
        return -1;
    }
    v = PyDict_GetItemWithError(env, s_CONTENT_LENGTH);
    if (v == NULL)
        return PyErr_Occurred() ? -1 : 0;
    if (!PyUnicode_Check(v) || PyUnicode_KIND(v) != PyUnicode_1BYTE_KIND)
        return -2;
    n = PyUnicode_GET_LENGTH(v);
    if (n == 0)
        return PyDict_DelItem(env, s_CONTENT_LENGTH) < 0 ? -1 : 0;
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
 * environ (and sets *length and *info); Py_None (new ref) when Python must
 * take over (need data, a protocol error, an invalid CONTENT_LENGTH); NULL
 * on a Python error. *info is the decoder's packed summary without outlen
 * (consumed, modifier1, item count: see uwsgi_decoder.h). */
static PyObject *environ_of(const char *data, size_t n, long long max_block,
                            PyObject *base, long long *length_out, long long *info)
{
    int64_t rc = uwsgi_decode(data, n, max_block, &scratch);
    PyObject *env, *seen[MAX_BASE_SEEN];
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
        k = key_str(kp, klen);
        if (k == NULL)
            goto fail;
        v = latin1(vp, vlen);
        if (v == NULL) {
            Py_DECREF(k);
            goto fail;
        }
        if (put_var(env, base, k, v, seen, &nseen) < 0) {
            Py_DECREF(k);
            Py_DECREF(v);
            goto fail;
        }
        Py_DECREF(k);
        Py_DECREF(v);
    }
    length = body_length(env);
    if (length == -1)
        goto fail;
    if (length == -2) {
        Py_DECREF(env);
        Py_RETURN_NONE;
    }
    {
        PyObject *https = PyDict_GetItemWithError(env, s_HTTPS);
        if (https == NULL && PyErr_Occurred())
            goto fail;
        if (https_on(https) ||
            is_str(PyDict_GetItemWithError(env, s_REQUEST_SCHEME), "https", 5)) {
            if (PyDict_SetItem(env, s_url_scheme, s_https) < 0)
                goto fail;
        } else if (PyErr_Occurred()) {
            goto fail;
        }
    }
    if (((rc >> 34) & 0xFF) == 30) {
        /* modifier1 30: PATH_INFO still carries the SCRIPT_NAME prefix. */
        PyObject *sn = PyDict_GetItemWithError(env, s_SCRIPT_NAME);
        PyObject *path = sn ? PyDict_GetItemWithError(env, s_PATH_INFO) : NULL;
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
                if (rest == NULL || PyDict_SetItem(env, s_PATH_INFO, rest) < 0) {
                    Py_XDECREF(rest);
                    goto fail;
                }
                Py_DECREF(rest);
            }
        }
    }
    *length_out = length;
    *info = (long long)(rc & ~(int64_t)0x1FFFF);
    return env;
fail:
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

static PyObject *fp_environ_from(PyObject *mod, PyObject *args)
{
    Py_buffer data;
    long long max_block, length = 0, info = 0;
    PyObject *base, *env;

    if (!PyArg_ParseTuple(args, "y*LO", &data, &max_block, &base))
        return NULL;
    if (parse_base(base) < 0) {
        PyBuffer_Release(&data);
        return NULL;
    }
    env = environ_of(data.buf, (size_t)data.len, max_block, base, &length, &info);
    PyBuffer_Release(&data);
    if (env == NULL || env == Py_None)
        return env;
    return Py_BuildValue("(NLL)", env, length, info);
}

/* read_request(fd, buffer, max_block, base, timeout) -> (env, length, n, info) | int
 *
 * Reads the vars block into ``buffer`` and builds the environ. nginx writes
 * the packet right after connecting, so the first recv() nearly always
 * brings all of it; otherwise this waits (GIL released) and reads on, with
 * socket-timeout bounding the whole vars block, as handler._read_packet
 * does. The int means "Python takes it from here": the number of bytes in
 * ``buffer`` (a protocol error or a bad CONTENT_LENGTH, which Python
 * explains; or EOF after that many bytes, 0 for none), or -2 when
 * socket-timeout passed before the block was complete. */
static PyObject *fp_read_request(PyObject *mod, PyObject *const *args, Py_ssize_t nargs)
{
    Py_buffer buf;
    int fd;
    long long max_block, length = 0, info = 0;
    double timeout, deadline = -1;
    size_t n = 0;
    ssize_t got;
    PyObject *env;

    if (nargs != 5) {
        PyErr_SetString(PyExc_TypeError, "read_request(fd, buffer, max_block, base, timeout)");
        return NULL;
    }
    fd = PyLong_AsLong(args[0]);
    max_block = PyLong_AsLongLong(args[2]);
    timeout = PyFloat_AsDouble(args[4]);
    if (PyErr_Occurred() || parse_base(args[3]) < 0)
        return NULL;
    if (PyObject_GetBuffer(args[1], &buf, PyBUF_WRITABLE) < 0)
        return NULL;
    for (;;) {
        got = recv(fd, (char *)buf.buf + n, (size_t)buf.len - n, MSG_DONTWAIT);
        if (got > 0) {
            n += (size_t)got;
            env = environ_of(buf.buf, n, max_block, args[3], &length, &info);
            if (env != Py_None)
                break; /* the environ, or a Python error */
            Py_DECREF(env);
            if (uwsgi_decode(buf.buf, n, max_block, &scratch) != UWSGI_NEED_DATA ||
                n == (size_t)buf.len)
                goto hand_over; /* Python names the error */
            continue;
        }
        if (got == 0)
            goto hand_over; /* EOF after n bytes */
        if (errno == EINTR) {
            if (PyErr_CheckSignals() < 0)
                goto error;
            continue;
        }
        if (errno != EAGAIN && errno != EWOULDBLOCK) {
            PyErr_SetFromErrno(PyExc_OSError);
            goto error;
        }
        {
            struct pollfd p = {fd, POLLIN, 0};
            int left_ms, r;
            if (deadline < 0)
                deadline = now_monotonic() + timeout;
            left_ms = (int)((deadline - now_monotonic()) * 1000) + 1;
            if (left_ms <= 0)
                goto timed_out;
            Py_BEGIN_ALLOW_THREADS
            r = poll(&p, 1, left_ms);
            Py_END_ALLOW_THREADS
            if (r == 0)
                goto timed_out;
            if (r < 0 && errno == EINTR && PyErr_CheckSignals() < 0)
                goto error;
            if (r < 0 && errno != EINTR) {
                PyErr_SetFromErrno(PyExc_OSError);
                goto error;
            }
        }
    }
    PyBuffer_Release(&buf);
    if (env == NULL)
        return NULL;
    return Py_BuildValue("(NLnL)", env, length, (Py_ssize_t)n, info);
hand_over:
    PyBuffer_Release(&buf);
    return PyLong_FromSsize_t((Py_ssize_t)n);
timed_out:
    PyBuffer_Release(&buf);
    return PyLong_FromLong(-2);
error:
    PyBuffer_Release(&buf);
    return NULL;
}

static PyObject *fp_accept(PyObject *mod, PyObject *arg)
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

/* ------------------------------------------------------------ Exchange -- */

typedef struct {
    PyObject_HEAD
    int fd;
    int head_only;
    double timeout;
    PyObject *pending; /* (status, headers) once start_response ran */
    int sent;
    long long tx;
    int headers_count;
    int head_size;
    int status;
} Exchange;

static PyTypeObject ExchangeType;

static double now_monotonic(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

/* Send every byte of iov[0:cnt]: one non-blocking sendmsg() in the common
 * case; when the socket buffer is full, wait for it with the GIL released,
 * all of it bounded by socket-timeout (as socket.sendall with a timeout). */
static int send_iov(Exchange *x, struct iovec *iov, int cnt)
{
    double deadline = -1;

    while (cnt > 0) {
        struct msghdr msg;
        ssize_t n;

        memset(&msg, 0, sizeof msg);
        msg.msg_iov = iov;
        msg.msg_iovlen = (size_t)cnt;
        n = sendmsg(x->fd, &msg, MSG_DONTWAIT | MSG_NOSIGNAL);
        if (n < 0) {
            struct pollfd p;
            int left_ms, r;
            if (errno == EINTR) {
                if (PyErr_CheckSignals() < 0)
                    return -1;
                continue;
            }
            if (errno != EAGAIN && errno != EWOULDBLOCK) {
                PyErr_SetFromErrno(PyExc_OSError);
                return -1;
            }
            if (deadline < 0)
                deadline = now_monotonic() + x->timeout;
            left_ms = (int)((deadline - now_monotonic()) * 1000) + 1;
            if (left_ms <= 0) {
                PyErr_SetString(PyExc_TimeoutError, "timed out");
                return -1;
            }
            p.fd = x->fd;
            p.events = POLLOUT;
            Py_BEGIN_ALLOW_THREADS
            r = poll(&p, 1, left_ms);
            Py_END_ALLOW_THREADS
            if (r < 0 && errno == EINTR) {
                if (PyErr_CheckSignals() < 0)
                    return -1;
            } else if (r < 0) {
                PyErr_SetFromErrno(PyExc_OSError);
                return -1;
            } else if (r == 0) {
                PyErr_SetString(PyExc_TimeoutError, "timed out");
                return -1;
            }
            continue;
        }
        x->tx += n;
        while (cnt > 0 && (size_t)n >= iov->iov_len) {
            n -= (ssize_t)iov->iov_len;
            iov++;
            cnt--;
        }
        if (cnt > 0) {
            iov->iov_base = (char *)iov->iov_base + n;
            iov->iov_len -= (size_t)n;
        }
    }
    return 0;
}

static const unsigned char token_chars[256] = {
    /* RFC 9110 5.6.2 tchar: ! # $ % & ' * + - . ^ _ ` | ~ DIGIT ALPHA */
    ['!'] = 1, ['#'] = 1, ['$'] = 1, ['%'] = 1, ['&'] = 1, ['\''] = 1, ['*'] = 1,
    ['+'] = 1, ['-'] = 1, ['.'] = 1, ['^'] = 1, ['_'] = 1, ['`'] = 1, ['|'] = 1,
    ['~'] = 1,
    ['0'] = 1, ['1'] = 1, ['2'] = 1, ['3'] = 1, ['4'] = 1, ['5'] = 1, ['6'] = 1,
    ['7'] = 1, ['8'] = 1, ['9'] = 1,
    ['A'] = 1, ['B'] = 1, ['C'] = 1, ['D'] = 1, ['E'] = 1, ['F'] = 1, ['G'] = 1,
    ['H'] = 1, ['I'] = 1, ['J'] = 1, ['K'] = 1, ['L'] = 1, ['M'] = 1, ['N'] = 1,
    ['O'] = 1, ['P'] = 1, ['Q'] = 1, ['R'] = 1, ['S'] = 1, ['T'] = 1, ['U'] = 1,
    ['V'] = 1, ['W'] = 1, ['X'] = 1, ['Y'] = 1, ['Z'] = 1,
    ['a'] = 1, ['b'] = 1, ['c'] = 1, ['d'] = 1, ['e'] = 1, ['f'] = 1, ['g'] = 1,
    ['h'] = 1, ['i'] = 1, ['j'] = 1, ['k'] = 1, ['l'] = 1, ['m'] = 1, ['n'] = 1,
    ['o'] = 1, ['p'] = 1, ['q'] = 1, ['r'] = 1, ['s'] = 1, ['t'] = 1, ['u'] = 1,
    ['v'] = 1, ['w'] = 1, ['x'] = 1, ['y'] = 1, ['z'] = 1,
};

static int latin1_str(PyObject *s)
{
    return PyUnicode_CheckExact(s) && PyUnicode_KIND(s) == PyUnicode_1BYTE_KIND;
}

static int clean_text(const unsigned char *d, Py_ssize_t n)
{
    return memchr(d, '\r', n) == NULL && memchr(d, '\n', n) == NULL &&
           memchr(d, '\0', n) == NULL;
}

/* (name, value) of a header item if both are latin-1 str, else 0. */
static int header_pair(PyObject *h, PyObject **name, PyObject **value)
{
    if (PyTuple_CheckExact(h) && PyTuple_GET_SIZE(h) == 2) {
        *name = PyTuple_GET_ITEM(h, 0);
        *value = PyTuple_GET_ITEM(h, 1);
    } else if (PyList_CheckExact(h) && PyList_GET_SIZE(h) == 2) {
        *name = PyList_GET_ITEM(h, 0);
        *value = PyList_GET_ITEM(h, 1);
    } else {
        return 0;
    }
    return latin1_str(*name) && latin1_str(*value);
}

/* The head for (status, headers) if every part is plainly valid, else NULL
 * with no error set: response.build_head then decides (and explains).
 *
 * A first pass sizes the head; the second validates and writes what it
 * finds then, bounded by that size. Allocating the head can run other code
 * (a finalizer), so the second pass trusts nothing the first one saw. */
static PyObject *fast_head(PyObject *status, PyObject *headers, int *count)
{
    const unsigned char *sd;
    Py_ssize_t sn, n, i, size;
    PyObject *head, *name, *value;
    char *w, *end;

    if (!latin1_str(status) || !(PyList_CheckExact(headers) || PyTuple_CheckExact(headers)))
        return NULL;
    n = PySequence_Fast_GET_SIZE(headers);
    if (n == 0 && !PyList_CheckExact(headers))
        return NULL;
    sd = PyUnicode_1BYTE_DATA(status);
    sn = PyUnicode_GET_LENGTH(status);
    /* [1-9][0-9][0-9](?: [^\r\n\0]*)? */
    if (sn < 3 || sd[0] < '1' || sd[0] > '9' || sd[1] < '0' || sd[1] > '9' ||
        sd[2] < '0' || sd[2] > '9' || (sn > 3 && sd[3] != ' ') || !clean_text(sd, sn))
        return NULL;
    size = 9 + sn + 2 + 2; /* "HTTP/1.1 " status CRLF ... CRLF */
    for (i = 0; i < n; i++) {
        if (!header_pair(PySequence_Fast_ITEMS(headers)[i], &name, &value))
            return NULL;
        size += PyUnicode_GET_LENGTH(name) + 2 + PyUnicode_GET_LENGTH(value) + 2;
    }
    head = PyBytes_FromStringAndSize(NULL, size);
    if (head == NULL)
        return NULL; /* MemoryError stays set: the caller checks */
    w = PyBytes_AS_STRING(head);
    end = w + size;
    memcpy(w, "HTTP/1.1 ", 9);
    w += 9;
    memcpy(w, sd, sn);
    w += sn;
    *w++ = '\r';
    *w++ = '\n';
    if (PySequence_Fast_GET_SIZE(headers) != n)
        goto give_up;
    for (i = 0; i < n; i++) {
        const unsigned char *nd;
        Py_ssize_t nn, vn, j;
        if (!header_pair(PySequence_Fast_ITEMS(headers)[i], &name, &value))
            goto give_up;
        nd = PyUnicode_1BYTE_DATA(name);
        nn = PyUnicode_GET_LENGTH(name);
        vn = PyUnicode_GET_LENGTH(value);
        if (nn == 0 || end - w < nn + 2 + vn + 2 + 2 ||
            !clean_text(PyUnicode_1BYTE_DATA(value), vn))
            goto give_up;
        for (j = 0; j < nn; j++)
            if (!token_chars[nd[j]])
                goto give_up;
        memcpy(w, nd, nn);
        w += nn;
        *w++ = ':';
        *w++ = ' ';
        memcpy(w, PyUnicode_1BYTE_DATA(value), vn);
        w += vn;
        *w++ = '\r';
        *w++ = '\n';
    }
    if (w + 2 != end)
        goto give_up;
    *w++ = '\r';
    *w++ = '\n';
    *count = (int)n;
    return head;
give_up:
    Py_DECREF(head);
    return NULL;
}

/* The head of the pending response; on failure a Python error is set
 * (ResponseError from response.build_head, which names the bad part). */
static PyObject *make_head(Exchange *x, int *count)
{
    /* Held: build_head runs Python, and another thread could replace
     * x->pending (start_response with exc_info) meanwhile. */
    PyObject *pending = x->pending, *head, *res;

    Py_INCREF(pending);
    head = fast_head(PyTuple_GET_ITEM(pending, 0), PyTuple_GET_ITEM(pending, 1), count);
    if (head != NULL || PyErr_Occurred()) {
        Py_DECREF(pending);
        return head;
    }
    res = PyObject_CallFunctionObjArgs(py_build_head, PyTuple_GET_ITEM(pending, 0),
                                       PyTuple_GET_ITEM(pending, 1), NULL);
    Py_DECREF(pending);
    if (res == NULL)
        return NULL;
    if (!PyTuple_Check(res) || PyTuple_GET_SIZE(res) != 2) {
        Py_DECREF(res);
        PyErr_SetString(PyExc_SystemError, "build_head must return (bytes, int)");
        return NULL;
    }
    head = PyTuple_GET_ITEM(res, 0);
    Py_INCREF(head);
    *count = (int)PyLong_AsLong(PyTuple_GET_ITEM(res, 1));
    Py_DECREF(res);
    return head;
}

/* Send ``n`` body buffers, preceded by the head if it has not gone out. */
static int send_body(Exchange *x, struct iovec *body, int n)
{
    struct iovec iov[65];
    int cnt = 0, count = 0, i, rc;
    PyObject *head = NULL;

    if (!x->sent) {
        if (x->pending == NULL) {
            PyErr_SetString(PyExc_AssertionError, "write() before start_response()");
            return -1;
        }
        head = make_head(x, &count);
        if (head == NULL)
            return -1;
        x->headers_count = count;
        x->head_size = (int)PyBytes_GET_SIZE(head);
        {   /* the three digits after "HTTP/1.1 ", validated by either builder */
            const char *s = PyBytes_AS_STRING(head) + 9;
            x->status = (s[0] - '0') * 100 + (s[1] - '0') * 10 + (s[2] - '0');
        }
        x->sent = 1;
        iov[cnt].iov_base = PyBytes_AS_STRING(head);
        iov[cnt].iov_len = (size_t)PyBytes_GET_SIZE(head);
        cnt++;
        if (x->head_only)
            n = 0;
    } else if (x->head_only) {
        return 0;
    }
    for (i = 0; i < n; i++)
        if (body[i].iov_len)
            iov[cnt++] = body[i];
    rc = cnt ? send_iov(x, iov, cnt) : 0;
    Py_XDECREF(head);
    return rc;
}

static PyObject *Exchange_write(Exchange *x, PyObject *data)
{
    Py_buffer b;
    struct iovec iov;
    int rc;

    if (PyObject_GetBuffer(data, &b, PyBUF_SIMPLE) < 0)
        return NULL;
    iov.iov_base = b.buf;
    iov.iov_len = (size_t)b.len;
    rc = send_body(x, &iov, 1);
    PyBuffer_Release(&b);
    if (rc < 0)
        return NULL;
    Py_RETURN_NONE;
}

static PyObject *Exchange_start_response(Exchange *x, PyObject *const *args,
                                         Py_ssize_t nargs, PyObject *kwnames)
{
    PyObject *status, *headers, *exc_info = Py_None;
    Py_ssize_t nkw = kwnames ? PyTuple_GET_SIZE(kwnames) : 0;

    if (nargs + nkw < 2 || nargs + nkw > 3 || nargs < 2 ||
        (nkw == 1 && !is_str(PyTuple_GET_ITEM(kwnames, 0), "exc_info", 8))) {
        PyErr_SetString(PyExc_TypeError,
                        "start_response(status, headers, exc_info=None)");
        return NULL;
    }
    status = args[0];
    headers = args[1];
    if (nargs + nkw == 3)
        exc_info = args[2];
    if (exc_info != Py_None) {
        if (x->sent) {
            /* PEP 3333: too late to change the response; re-raise. */
            PyObject *val, *tb;
            if (!PyTuple_Check(exc_info) || PyTuple_GET_SIZE(exc_info) < 3) {
                PyErr_SetString(PyExc_TypeError, "exc_info must be a sys.exc_info() tuple");
                return NULL;
            }
            val = PyTuple_GET_ITEM(exc_info, 1);
            tb = PyTuple_GET_ITEM(exc_info, 2);
            if (!PyExceptionInstance_Check(val)) {
                PyErr_SetString(PyExc_TypeError, "exceptions must derive from BaseException");
                return NULL;
            }
            if (tb != Py_None)
                PyException_SetTraceback(val, tb);
            PyErr_SetObject((PyObject *)Py_TYPE(val), val);
            return NULL;
        }
    } else if (x->pending != NULL) {
        PyErr_SetString(HeadersAlreadySent, "start_response() called twice without exc_info");
        return NULL;
    }
    Py_XSETREF(x->pending, PyTuple_Pack(2, status, headers));
    if (x->pending == NULL)
        return NULL;
    return PyObject_GetAttr((PyObject *)x, s_write);
}

/* send_result(result) -> True, or False for a FileWrapper the caller
 * sendfile()s. The handler's former _send_result, in C. */
static PyObject *Exchange_send_result(Exchange *x, PyObject *result)
{
    PyTypeObject *kind = Py_TYPE(result);

    if (kind == &PyBytes_Type) { /* not PEP 3333, but uWSGI accepts it */
        struct iovec iov = {PyBytes_AS_STRING(result), (size_t)PyBytes_GET_SIZE(result)};
        if (send_body(x, &iov, 1) < 0)
            return NULL;
        Py_RETURN_TRUE;
    }
    if (kind == &PyList_Type || kind == &PyTuple_Type) {
        Py_ssize_t n = PySequence_Fast_GET_SIZE(result), i;
        PyObject **items = PySequence_Fast_ITEMS(result);
        struct iovec iov[64];
        int all_bytes = n <= 64;
        for (i = 0; all_bytes && i < n; i++) {
            if (!PyBytes_CheckExact(items[i]))
                all_bytes = 0;
            else {
                iov[i].iov_base = PyBytes_AS_STRING(items[i]);
                iov[i].iov_len = (size_t)PyBytes_GET_SIZE(items[i]);
            }
        }
        if (all_bytes) { /* sendmsg() gathers them: no join copy */
            /* Hold the items: a wait for the socket releases the GIL, and
             * another thread could empty a list the app shares. */
            PyObject *held[64];
            int rc;
            for (i = 0; i < n; i++) {
                held[i] = items[i];
                Py_INCREF(held[i]);
            }
            rc = send_body(x, iov, (int)n);
            for (i = 0; i < n; i++)
                Py_DECREF(held[i]);
            if (rc < 0)
                return NULL;
            Py_RETURN_TRUE;
        }
        {
            PyObject *empty = PyBytes_FromStringAndSize(NULL, 0), *joined, *r;
            if (empty == NULL)
                return NULL;
            joined = PyObject_CallMethod(empty, "join", "O", result);
            Py_DECREF(empty);
            if (joined == NULL)
                return NULL;
            r = Exchange_write(x, joined);
            Py_DECREF(joined);
            if (r == NULL)
                return NULL;
            Py_DECREF(r);
            Py_RETURN_TRUE;
        }
    }
    if ((PyObject *)kind == FileWrapperType)
        Py_RETURN_FALSE; /* the handler decides: sendfile() or iterate */
    {
        PyObject *it = PyObject_GetIter(result), *chunk;
        if (it == NULL)
            return NULL;
        while ((chunk = PyIter_Next(it)) != NULL) {
            int truth = PyObject_IsTrue(chunk);
            PyObject *r = NULL;
            if (truth > 0)
                r = Exchange_write(x, chunk);
            Py_DECREF(chunk);
            if (truth < 0 || (truth > 0 && r == NULL)) {
                Py_DECREF(it);
                return NULL;
            }
            Py_XDECREF(r);
            if (truth > 0 && x->head_only)
                break;
        }
        Py_DECREF(it);
        if (PyErr_Occurred())
            return NULL;
        if (!x->sent) {
            if (send_body(x, NULL, 0) < 0)
                return NULL;
        }
        Py_RETURN_TRUE;
    }
}

static int Exchange_init(Exchange *x, PyObject *args, PyObject *kw)
{
    int fd, head_only;
    double timeout;

    if (!PyArg_ParseTuple(args, "ipd:Exchange", &fd, &head_only, &timeout))
        return -1;
    x->fd = fd;
    x->head_only = head_only;
    x->timeout = timeout;
    Py_CLEAR(x->pending);
    x->sent = 0;
    x->tx = 0;
    x->headers_count = x->head_size = x->status = 0;
    return 0;
}

static int Exchange_traverse(Exchange *x, visitproc visit, void *arg)
{
    Py_VISIT(x->pending);
    return 0;
}

static int Exchange_clear(Exchange *x)
{
    Py_CLEAR(x->pending);
    return 0;
}

static void Exchange_dealloc(Exchange *x)
{
    PyObject_GC_UnTrack(x);
    Py_CLEAR(x->pending);
    Py_TYPE(x)->tp_free((PyObject *)x);
}

static PyMethodDef Exchange_methods[] = {
    {"start_response", (PyCFunction)(void (*)(void))Exchange_start_response,
     METH_FASTCALL | METH_KEYWORDS,
     "PEP 3333 start_response(status, headers, exc_info=None)"},
    {"write", (PyCFunction)Exchange_write, METH_O, "PEP 3333 write(data)"},
    {"send_result", (PyCFunction)Exchange_send_result, METH_O,
     "send the app's return value; False: a FileWrapper for the caller"},
    {NULL}};

static PyMemberDef Exchange_members[] = {
    {"fd", T_INT, offsetof(Exchange, fd), READONLY, NULL},
    {"head_only", T_INT, offsetof(Exchange, head_only), READONLY, NULL},
    {"timeout", T_DOUBLE, offsetof(Exchange, timeout), READONLY, NULL},
    {"pending", T_OBJECT, offsetof(Exchange, pending), READONLY, NULL},
    {"sent", T_INT, offsetof(Exchange, sent), 0, NULL},
    {"tx", T_LONGLONG, offsetof(Exchange, tx), 0, NULL},
    {"headers_count", T_INT, offsetof(Exchange, headers_count), 0, NULL},
    {"head_size", T_INT, offsetof(Exchange, head_size), 0, NULL},
    {"status", T_INT, offsetof(Exchange, status), 0, NULL},
    {NULL}};

static PyTypeObject ExchangeType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "uwsgigw._fastpath.Exchange",
    .tp_doc = "The response state of one request (handler._Exchange in C).",
    .tp_basicsize = sizeof(Exchange),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)Exchange_init,
    .tp_dealloc = (destructor)Exchange_dealloc,
    .tp_traverse = (traverseproc)Exchange_traverse,
    .tp_clear = (inquiry)Exchange_clear,
    .tp_methods = Exchange_methods,
    .tp_members = Exchange_members,
};

/* ------------------------------------------------------ the request log -- */

/* uWSGI's default request line (reqlog.default_line) built in C: the
 * Python version is one %-format plus an isprintable() check and an encode,
 * ~2.5 us per request; this is a few hundred ns. Returns the line as bytes
 * (newline included), or None when a string is not latin-1 (an app put
 * one into the environ): reqlog's Python path then escapes it. */

typedef struct {
    char *p, *end;
} out_buf;

static int put_bytes(out_buf *o, const char *s, Py_ssize_t n)
{
    if (o->end - o->p < n)
        return -1;
    memcpy(o->p, s, n);
    o->p += n;
    return 0;
}

static int put_lit(out_buf *o, const char *s)
{
    return put_bytes(o, s, (Py_ssize_t)strlen(s));
}

static int put_num(out_buf *o, long long v)
{
    char tmp[24], *p = tmp + sizeof tmp; /* digits right to left: no printf */
    unsigned long long u = v < 0 ? 0ULL - (unsigned long long)v : (unsigned long long)v;

    do {
        *--p = (char)('0' + u % 10);
        u /= 10;
    } while (u);
    if (v < 0)
        *--p = '-';
    return put_bytes(o, p, tmp + sizeof tmp - p);
}

/* A str as the client's bytes; control characters as \xNN (reqlog._CTRL). */
static int put_text(out_buf *o, PyObject *s)
{
    const unsigned char *d;
    Py_ssize_t n, i;

    if (s == NULL)
        return 0; /* a missing var logs as empty, as env.get(key, "") */
    if (!PyUnicode_Check(s) || PyUnicode_KIND(s) != PyUnicode_1BYTE_KIND)
        return -2;
    d = PyUnicode_1BYTE_DATA(s);
    n = PyUnicode_GET_LENGTH(s);
    for (i = 0; i < n; i++) {
        unsigned char c = d[i];
        if (c < 0x20 || c == 0x7f) {
            char esc[5];
            snprintf(esc, sizeof esc, "\\x%02x", c);
            if (put_bytes(o, esc, 4) < 0)
                return -1;
        } else {
            if (o->p >= o->end)
                return -1;
            *o->p++ = (char)c;
        }
    }
    return 0;
}

static PyObject *s_REMOTE_ADDR, *s_REMOTE_USER, *s_REQUEST_METHOD, *s_REQUEST_URI,
    *s_SERVER_PROTOCOL;

static PyObject *env_get(PyObject *env, PyObject *key)
{
    return PyDict_GetItemWithError(env, key); /* borrowed; NULL if missing */
}

/* uwsgi_line(env, info, exchange, pid, requests, total, ctime, msecs, core) */
static PyObject *fp_uwsgi_line(PyObject *mod, PyObject *const *args, Py_ssize_t nargs)
{
    PyObject *env, *uri, *out;
    Exchange *x;
    long long info, v[5];
    int i, rc = 0;
    char stack[2048];
    char *buf = stack;
    Py_ssize_t cap = sizeof stack, need = 512;
    out_buf o;

    if (nargs != 9 || !PyDict_Check(args[0])) {
        PyErr_SetString(PyExc_TypeError, "uwsgi_line(env, info, exchange, pid, requests, "
                                         "total, ctime, msecs, core)");
        return NULL;
    }
    if (Py_TYPE(args[2]) != &ExchangeType)
        Py_RETURN_NONE; /* the Python exchange: reqlog formats it */
    env = args[0];
    x = (Exchange *)args[2];
    info = PyLong_AsLongLong(args[1]);
    for (i = 0; i < 5; i++) /* pid, requests, total, msecs, core (skipping ctime) */
        v[i] = PyLong_AsLongLong(args[i < 3 ? 3 + i : 4 + i]);
    if (PyErr_Occurred())
        return NULL;
    uri = env_get(env, s_REQUEST_URI);
    if (uri == NULL || (PyUnicode_Check(uri) && PyUnicode_GET_LENGTH(uri) == 0))
        uri = env_get(env, s_PATH_INFO); /* env.get("REQUEST_URI") or PATH_INFO */
    if (PyErr_Occurred())
        return NULL;
    {   /* worst case: every byte escaped to 4 */
        PyObject *parts[6] = {env_get(env, s_REMOTE_ADDR), env_get(env, s_REMOTE_USER),
                              env_get(env, s_REQUEST_METHOD), uri,
                              env_get(env, s_SERVER_PROTOCOL), args[6]};
        if (PyErr_Occurred())
            return NULL;
        for (i = 0; i < 6; i++) {
            if (parts[i] != NULL && PyUnicode_Check(parts[i]))
                need += 4 * PyUnicode_GET_LENGTH(parts[i]);
        }
        if (need > cap) {
            buf = PyMem_Malloc(need);
            if (buf == NULL)
                return PyErr_NoMemory();
            cap = need;
        }
        o.p = buf;
        o.end = buf + cap;
        rc |= put_lit(&o, "[pid: ");
        rc |= put_num(&o, v[0]);
        rc |= put_lit(&o, "|app: 0|req: ");
        rc |= put_num(&o, v[1]);
        rc |= put_lit(&o, "/");
        rc |= put_num(&o, v[2]);
        rc |= put_lit(&o, "] ");
        rc |= put_text(&o, parts[0]);
        rc |= put_lit(&o, " (");
        rc |= put_text(&o, parts[1]);
        rc |= put_lit(&o, ") {");
        rc |= put_num(&o, info >> 42);
        rc |= put_lit(&o, " vars in ");
        rc |= put_num(&o, ((info >> 17) & 0x1FFFF) - 4);
        rc |= put_lit(&o, " bytes} [");
        rc |= put_text(&o, parts[5]);
        rc |= put_lit(&o, "] ");
        if (parts[2] == NULL) { /* env["REQUEST_METHOD"]: always set by base */
            PyErr_SetObject(PyExc_KeyError, s_REQUEST_METHOD);
            goto fail;
        }
        rc |= put_text(&o, parts[2]);
        rc |= put_lit(&o, " ");
        rc |= put_text(&o, parts[3]);
        rc |= put_lit(&o, " => generated ");
        rc |= put_num(&o, x->tx - x->head_size);
        rc |= put_lit(&o, " bytes in ");
        rc |= put_num(&o, v[3]);
        rc |= put_lit(&o, " msecs (");
        rc |= put_text(&o, parts[4]);
        rc |= put_lit(&o, " ");
        rc |= put_num(&o, x->status);
        rc |= put_lit(&o, ") ");
        rc |= put_num(&o, x->headers_count);
        rc |= put_lit(&o, " headers in ");
        rc |= put_num(&o, x->head_size);
        rc |= put_lit(&o, " bytes (1 switches on core ");
        rc |= put_num(&o, v[4]);
        rc |= put_lit(&o, ")\n");
    }
    if (rc != 0) { /* a str that is not latin-1 (or not a str): Python's turn */
        if (buf != stack)
            PyMem_Free(buf);
        Py_RETURN_NONE;
    }
    out = PyBytes_FromStringAndSize(buf, o.p - buf);
    if (buf != stack)
        PyMem_Free(buf);
    return out;
fail:
    if (buf != stack)
        PyMem_Free(buf);
    return NULL;
}

/* ---------------------------------------------------------------- Core -- */

/* One worker thread's request loop body in C: Core.serve(fd) runs a whole
 * request without a body (read, environ, app, response, counters, request
 * log) and returns None; any other request comes back to handler.py as
 * read_request's answer, and Python carries on from there. The rare turns
 * of a request C does run (no app mounted, the app raising, a FileWrapper,
 * a failing close(), a log format other than the default) call the
 * handler's own Python methods, so each exists once. */

typedef struct {
    PyObject_HEAD
    PyObject *h;             /* the ConnectionHandler */
    PyObject *buf;           /* its read buffer (bytearray) */
    long long max_block;
    PyObject *base;          /* base environ */
    double timeout;
    PyObject *pick_app;
    PyObject *new_input;     /* io.BytesIO */
    PyObject *slot;          /* the CoreSlot (keeps its memory alive) */
    char *slot_mem;          /* its address */
    PyObject *count_request;
    PyObject *ctime;         /* reqlog.ctime */
    PyObject *reqlog;        /* the modules whose settings are read per request */
    PyObject *log;
    PyObject *default_emit;  /* reqlog._default_emit: C builds that line */
    int track_requests, log_requests;
    long long pid, core;
} Core;

/* CoreSlot field offsets (scoreboard.py), given by fastpath.py from ctypes. */
static Py_ssize_t off_busy_since, off_requests, off_tx, off_rt_total, off_rt_count;

static PyObject *s_env, *s_requests, *s_tx, *s_emit, *s_emit_filtered, *s_fd_attr,
    *s_wsgi_input, *s_start_response, *s_close, *s_no_app, *s_app_failed,
    *s_close_failed, *s_send_file, *s_HEAD;

static double now_realtime(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

#define SLOT(c, off, type) (*(type *)((c)->slot_mem + (off)))

static PyObject *new_exchange(int fd, int head_only, double timeout)
{
    Exchange *x = PyObject_GC_New(Exchange, &ExchangeType);
    if (x == NULL)
        return NULL;
    x->fd = fd;
    x->head_only = head_only;
    x->timeout = timeout;
    x->pending = NULL;
    x->sent = 0;
    x->tx = 0;
    x->headers_count = x->head_size = x->status = 0;
    PyObject_GC_Track(x);
    return (PyObject *)x;
}

/* Call h.<name>(args...) with ``exc`` as the exception being handled, so
 * the Python side's log.exception() sees its traceback. */
static int call_handling(Core *c, PyObject *name, PyObject *exc, PyObject *a, PyObject *b)
{
    PyObject *ot, *ov, *otb, *r;
    PyObject *type = (PyObject *)Py_TYPE(exc), *tb = PyException_GetTraceback(exc);

    PyErr_GetExcInfo(&ot, &ov, &otb);
    Py_INCREF(type);
    Py_INCREF(exc);
    PyErr_SetExcInfo(type, exc, tb); /* steals the three */
    if (a == NULL)
        r = PyObject_CallMethodOneArg(c->h, name, exc);
    else
        r = PyObject_CallMethodObjArgs(c->h, name, a, b, exc, NULL);
    PyErr_SetExcInfo(ot, ov, otb);
    Py_XDECREF(r);
    return r == NULL ? -1 : 0;
}

/* The exception now raised, normalised; NULL (and still raised) if it is
 * not an Exception (KeyboardInterrupt, SystemExit: those propagate). */
static PyObject *take_exception(void)
{
    PyObject *t, *v, *tb;

    if (!PyErr_ExceptionMatches(PyExc_Exception))
        return NULL;
    PyErr_Fetch(&t, &v, &tb);
    PyErr_NormalizeException(&t, &v, &tb);
    if (tb != NULL)
        PyException_SetTraceback(v, tb);
    Py_XDECREF(t);
    Py_XDECREF(tb);
    return v;
}

/* handler._run_app in C; 0, or -1 with an exception that must propagate. */
static int run_app(Core *c, PyObject *x, PyObject *env)
{
    PyObject *app, *sr, *result = NULL, *close, *exc;
    int rc = 0;

    app = PyObject_CallOneArg(c->pick_app, env);
    if (app == NULL)
        return -1;
    if (app == Py_None) {
        Py_DECREF(app);
        app = PyObject_CallMethodObjArgs(c->h, s_no_app, x, env, NULL);
        Py_XDECREF(app);
        return app == NULL ? -1 : 0;
    }
    sr = PyObject_GetAttr(x, s_start_response);
    if (sr != NULL) {
        PyObject *args[2] = {env, sr};
        result = PyObject_Vectorcall(app, args, 2, NULL);
        Py_DECREF(sr);
    }
    Py_DECREF(app);
    if (result != NULL) {
        PyObject *done = Exchange_send_result((Exchange *)x, result);
        if (done == Py_False) {
            PyObject *r = PyObject_CallMethodObjArgs(c->h, s_send_file, x, result, NULL);
            Py_XDECREF(r);
            if (r == NULL) {
                Py_DECREF(done);
                done = NULL;
            }
        }
        if (done == NULL)
            rc = -1;
        Py_XDECREF(done);
    } else {
        rc = -1;
    }
    if (rc < 0) {
        exc = take_exception();
        if (exc != NULL) {
            rc = call_handling(c, s_app_failed, exc, x, env);
            Py_DECREF(exc);
        }
    }
    if (result != NULL) {
        /* PEP 3333: close() whatever happened; an error pending from above
         * is kept aside meanwhile. */
        PyObject *t, *v, *tb;
        PyErr_Fetch(&t, &v, &tb);
        close = PyObject_GetAttr(result, s_close);
        if (close == NULL) {
            PyErr_Clear();
        } else {
            PyObject *r = PyObject_CallNoArgs(close);
            Py_DECREF(close);
            if (r == NULL) {
                exc = take_exception();
                if (exc != NULL) {
                    if (call_handling(c, s_close_failed, exc, NULL, NULL) < 0) {
                        if (t == NULL)
                            PyErr_Fetch(&t, &v, &tb);
                        else
                            PyErr_Clear(); /* the app's own error goes first */
                        rc = -1;
                    }
                    Py_DECREF(exc);
                } else if (t == NULL) {
                    PyErr_Fetch(&t, &v, &tb); /* a BaseException from close() */
                    rc = -1;
                }
            }
            Py_XDECREF(r);
        }
        Py_DECREF(result);
        PyErr_Restore(t, v, tb);
    }
    return rc;
}

/* handler._log_request in C. */
static int log_request(Core *c, PyObject *env, long long info, PyObject *x, double started)
{
    PyObject *o, *total, *emit;
    long long requests, tx;
    double elapsed;
    int rc = 0;

    o = PyObject_GetAttr(c->h, s_requests);
    if (o == NULL)
        return -1;
    requests = PyLong_AsLongLong(o) + 1;
    Py_DECREF(o);
    o = PyLong_FromLongLong(requests);
    if (o == NULL || PyObject_SetAttr(c->h, s_requests, o) < 0) {
        Py_XDECREF(o);
        return -1;
    }
    Py_DECREF(o);
    total = PyObject_CallNoArgs(c->count_request);
    if (total == NULL)
        return -1;
    elapsed = now_realtime() - started;
    SLOT(c, off_rt_total, double) += elapsed;
    SLOT(c, off_rt_count, uint64_t) = (uint64_t)requests;
    emit = PyObject_GetAttr(c->reqlog, c->log_requests ? s_emit : s_emit_filtered);
    if (emit == NULL) {
        Py_DECREF(total);
        return -1;
    }
    if (emit != Py_None) {
        PyObject *line = NULL;
        if (emit == c->default_emit) {
            PyObject *st = PyFloat_FromDouble(started), *ct = NULL;
            if (st != NULL)
                ct = PyObject_CallOneArg(c->ctime, st);
            Py_XDECREF(st);
            if (ct != NULL) {
                PyObject *args[9];
                args[0] = env;
                args[1] = PyLong_FromLongLong(info);
                args[2] = x;
                args[3] = PyLong_FromLongLong(c->pid);
                args[4] = PyLong_FromLongLong(requests);
                args[5] = total;
                args[6] = ct;
                args[7] = PyLong_FromLongLong((long long)(elapsed * 1000));
                args[8] = PyLong_FromLongLong(c->core);
                if (args[1] && args[3] && args[4] && args[7] && args[8])
                    line = fp_uwsgi_line(NULL, args, 9);
                Py_XDECREF(args[1]);
                Py_XDECREF(args[3]);
                Py_XDECREF(args[4]);
                Py_XDECREF(args[7]);
                Py_XDECREF(args[8]);
                Py_DECREF(ct);
            }
            if (line == NULL)
                rc = -1;
        }
        if (line != NULL && line != Py_None) {
            PyObject *fdo = PyObject_GetAttr(c->log, s_fd_attr);
            int logfd = fdo ? (int)PyLong_AsLong(fdo) : -1;
            Py_XDECREF(fdo);
            if (PyErr_Occurred()) {
                rc = -1;
            } else {
                ssize_t w;
                do { /* one line per write(): O_APPEND keeps lines whole */
                    w = write(logfd, PyBytes_AS_STRING(line), (size_t)PyBytes_GET_SIZE(line));
                } while (w < 0 && errno == EINTR);
            }
        } else if (rc == 0) { /* another format, or a line C cannot build */
            PyObject *st = PyFloat_FromDouble(started), *el = PyFloat_FromDouble(elapsed);
            PyObject *inf = PyLong_FromLongLong(info), *r = NULL;
            if (st && el && inf) {
                PyObject *args[7] = {c->h, env, inf, x, st, el, total};
                r = PyObject_Vectorcall(emit, args, 7, NULL);
            }
            Py_XDECREF(st);
            Py_XDECREF(el);
            Py_XDECREF(inf);
            if (r == NULL)
                rc = -1;
            Py_XDECREF(r);
        }
        Py_XDECREF(line);
    }
    Py_DECREF(emit);
    Py_DECREF(total);
    if (rc < 0)
        return -1;
    o = PyObject_GetAttr(c->h, s_tx);
    if (o == NULL)
        return -1;
    tx = PyLong_AsLongLong(o) + ((Exchange *)x)->tx;
    Py_DECREF(o);
    o = PyLong_FromLongLong(tx);
    if (o == NULL || PyObject_SetAttr(c->h, s_tx, o) < 0) {
        Py_XDECREF(o);
        return -1;
    }
    Py_DECREF(o);
    SLOT(c, off_tx, uint64_t) = (uint64_t)tx;
    SLOT(c, off_requests, uint64_t) = (uint64_t)requests;
    return 0;
}

static PyObject *Core_serve(Core *c, PyObject *fdobj)
{
    PyObject *args[5], *req, *env, *x = NULL, *input, *method;
    long long length, info;
    double started;
    int fd = (int)PyLong_AsLong(fdobj), rc;

    if (fd == -1 && PyErr_Occurred())
        return NULL;
    started = now_realtime();
    args[0] = fdobj;
    args[1] = c->buf;
    args[2] = PyLong_FromLongLong(c->max_block);
    args[3] = c->base;
    args[4] = PyFloat_FromDouble(c->timeout);
    if (args[2] == NULL || args[4] == NULL) {
        Py_XDECREF(args[2]);
        Py_XDECREF(args[4]);
        return NULL;
    }
    req = fp_read_request(NULL, args, 5);
    Py_DECREF(args[2]);
    Py_DECREF(args[4]);
    if (req == NULL || !PyTuple_Check(req))
        return req; /* an int: Python reads on */
    length = PyLong_AsLongLong(PyTuple_GET_ITEM(req, 1));
    if (length != 0 || c->track_requests)
        return req; /* a body to read, or the slot's request text: Python */
    info = PyLong_AsLongLong(PyTuple_GET_ITEM(req, 3));
    env = PyTuple_GET_ITEM(req, 0);
    Py_INCREF(env);
    Py_DECREF(req);
    input = PyObject_CallNoArgs(c->new_input);
    if (input == NULL || PyDict_SetItem(env, s_wsgi_input, input) < 0 ||
        PyObject_SetAttr(c->h, s_env, env) < 0) {
        Py_XDECREF(input);
        Py_DECREF(env);
        return NULL;
    }
    Py_DECREF(input);
    SLOT(c, off_busy_since, double) = started;
    method = PyDict_GetItemWithError(env, s_REQUEST_METHOD);
    x = new_exchange(fd, method != NULL && PyUnicode_Check(method) &&
                             PyUnicode_Compare(method, s_HEAD) == 0, c->timeout);
    if (x == NULL) {
        Py_DECREF(env);
        return NULL;
    }
    rc = run_app(c, x, env);
    if (rc == 0) {
        rc = PyObject_SetAttr(c->h, s_env, Py_None);
        if (rc == 0)
            rc = log_request(c, env, info, x, started);
    } else {
        PyObject *t, *v, *tb;
        PyErr_Fetch(&t, &v, &tb);
        if (PyObject_SetAttr(c->h, s_env, Py_None) < 0)
            PyErr_Clear();
        PyErr_Restore(t, v, tb);
    }
    Py_DECREF(x);
    Py_DECREF(env);
    if (rc < 0)
        return NULL;
    Py_RETURN_NONE;
}

static int Core_init(Core *c, PyObject *args, PyObject *kw)
{
    PyObject *slot_addr;

    if (!PyArg_ParseTuple(args, "OOLOdOOOOOOOOOppLL:Core", &c->h, &c->buf, &c->max_block,
                          &c->base, &c->timeout, &c->pick_app, &c->new_input, &c->slot,
                          &slot_addr, &c->count_request, &c->ctime, &c->reqlog, &c->log,
                          &c->default_emit, &c->track_requests, &c->log_requests, &c->pid,
                          &c->core))
        return -1;
    if (!PyByteArray_Check(c->buf) || !PyDict_CheckExact(c->base)) {
        PyErr_SetString(PyExc_TypeError, "Core: buf must be a bytearray, base a dict");
        return -1;
    }
    c->slot_mem = PyLong_AsVoidPtr(slot_addr);
    if (c->slot_mem == NULL)
        return -1;
    Py_INCREF(c->h);
    Py_INCREF(c->buf);
    Py_INCREF(c->base);
    Py_INCREF(c->pick_app);
    Py_INCREF(c->new_input);
    Py_INCREF(c->slot);
    Py_INCREF(c->count_request);
    Py_INCREF(c->ctime);
    Py_INCREF(c->reqlog);
    Py_INCREF(c->log);
    Py_INCREF(c->default_emit);
    return 0;
}

static int Core_traverse(Core *c, visitproc visit, void *arg)
{
    Py_VISIT(c->h);
    Py_VISIT(c->buf);
    Py_VISIT(c->base);
    Py_VISIT(c->pick_app);
    Py_VISIT(c->new_input);
    Py_VISIT(c->slot);
    Py_VISIT(c->count_request);
    Py_VISIT(c->ctime);
    Py_VISIT(c->reqlog);
    Py_VISIT(c->log);
    Py_VISIT(c->default_emit);
    return 0;
}

static int Core_clear(Core *c)
{
    Py_CLEAR(c->h);
    Py_CLEAR(c->buf);
    Py_CLEAR(c->base);
    Py_CLEAR(c->pick_app);
    Py_CLEAR(c->new_input);
    Py_CLEAR(c->slot);
    Py_CLEAR(c->count_request);
    Py_CLEAR(c->ctime);
    Py_CLEAR(c->reqlog);
    Py_CLEAR(c->log);
    Py_CLEAR(c->default_emit);
    return 0;
}

static void Core_dealloc(Core *c)
{
    PyObject_GC_UnTrack(c);
    Core_clear(c);
    Py_TYPE(c)->tp_free((PyObject *)c);
}

static PyMethodDef Core_methods[] = {
    {"serve", (PyCFunction)Core_serve, METH_O,
     "serve(fd) -> None when the request was served here, else read_request's answer"},
    {NULL}};

static PyTypeObject CoreType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "uwsgigw._fastpath.Core",
    .tp_doc = "A request thread's common request, in C (see handler.py).",
    .tp_basicsize = sizeof(Core),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)Core_init,
    .tp_dealloc = (destructor)Core_dealloc,
    .tp_traverse = (traverseproc)Core_traverse,
    .tp_clear = (inquiry)Core_clear,
    .tp_methods = Core_methods,
};

static PyObject *fp_slot_layout(PyObject *mod, PyObject *args)
{
    if (!PyArg_ParseTuple(args, "nnnnn:slot_layout", &off_busy_since, &off_requests, &off_tx,
                          &off_rt_total, &off_rt_count))
        return NULL;
    Py_RETURN_NONE;
}

/* -------------------------------------------------------------- module -- */

static PyObject *fp_init(PyObject *mod, PyObject *args)
{
    PyObject *re, *has, *bh, *fw;

    if (!PyArg_ParseTuple(args, "OOOO:init", &re, &has, &bh, &fw))
        return NULL;
    Py_INCREF(re);
    Py_INCREF(has);
    Py_INCREF(bh);
    Py_INCREF(fw);
    Py_XSETREF(ResponseError, re);
    Py_XSETREF(HeadersAlreadySent, has);
    Py_XSETREF(py_build_head, bh);
    Py_XSETREF(FileWrapperType, fw);
    Py_RETURN_NONE;
}

static PyMethodDef fp_methods[] = {
    {"init", fp_init, METH_VARARGS, "init(ResponseError, HeadersAlreadySent, build_head, FileWrapper)"},
    {"accept", fp_accept, METH_O, "accept(listen_fd) -> fd, or -1 when none waits"},
    {"read_request", (PyCFunction)(void (*)(void))fp_read_request, METH_FASTCALL,
     "read_request(fd, buffer, max_block, base, timeout) -> (env, length, n, info) | int"},
    {"slot_layout", fp_slot_layout, METH_VARARGS,
     "slot_layout(busy_since, requests, tx, rt_total, rt_count): CoreSlot offsets"},
    {"uwsgi_line", (PyCFunction)(void (*)(void))fp_uwsgi_line, METH_FASTCALL,
     "uwsgi_line(env, info, exchange, pid, requests, total, ctime, msecs, core) -> bytes | None"},
    {"environ_from", fp_environ_from, METH_VARARGS,
     "environ_from(data, max_block, base) -> (env, length, info) | None"},
    {NULL}};

static struct PyModuleDef fp_module = {
    PyModuleDef_HEAD_INIT, "uwsgigw._fastpath",
    "The per-request hot path in C; see csrc/fastpath.c.", -1, fp_methods};

#define INTERN(var, text)                                   \
    do {                                                    \
        if ((var = PyUnicode_InternFromString(text)) == NULL) \
            return NULL;                                    \
    } while (0)

PyMODINIT_FUNC PyInit__fastpath(void)
{
    PyObject *m;

    INTERN(s_CONTENT_TYPE, "CONTENT_TYPE");
    INTERN(s_CONTENT_LENGTH, "CONTENT_LENGTH");
    INTERN(s_HTTPS, "HTTPS");
    INTERN(s_REQUEST_SCHEME, "REQUEST_SCHEME");
    INTERN(s_url_scheme, "wsgi.url_scheme");
    INTERN(s_https, "https");
    INTERN(s_SCRIPT_NAME, "SCRIPT_NAME");
    INTERN(s_PATH_INFO, "PATH_INFO");
    INTERN(s_write, "write");
    INTERN(s_comma, ", ");
    INTERN(s_REMOTE_ADDR, "REMOTE_ADDR");
    INTERN(s_env, "env");
    INTERN(s_requests, "requests");
    INTERN(s_tx, "tx");
    INTERN(s_emit, "emit");
    INTERN(s_emit_filtered, "emit_filtered");
    INTERN(s_fd_attr, "_fd");
    INTERN(s_wsgi_input, "wsgi.input");
    INTERN(s_start_response, "start_response");
    INTERN(s_close, "close");
    INTERN(s_no_app, "_no_app");
    INTERN(s_app_failed, "_app_failed");
    INTERN(s_close_failed, "_close_failed");
    INTERN(s_send_file, "_send_file");
    INTERN(s_HEAD, "HEAD");
    INTERN(s_REMOTE_USER, "REMOTE_USER");
    INTERN(s_REQUEST_METHOD, "REQUEST_METHOD");
    INTERN(s_REQUEST_URI, "REQUEST_URI");
    INTERN(s_SERVER_PROTOCOL, "SERVER_PROTOCOL");
    INTERN(s_semicolon, "; ");
    if (PyType_Ready(&ExchangeType) < 0 || PyType_Ready(&CoreType) < 0)
        return NULL;
    m = PyModule_Create(&fp_module);
    if (m == NULL)
        return NULL;
    Py_INCREF(&ExchangeType);
    if (PyModule_AddObject(m, "Exchange", (PyObject *)&ExchangeType) < 0) {
        Py_DECREF(&ExchangeType);
        Py_DECREF(m);
        return NULL;
    }
    Py_INCREF(&CoreType);
    if (PyModule_AddObject(m, "Core", (PyObject *)&CoreType) < 0) {
        Py_DECREF(&CoreType);
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
