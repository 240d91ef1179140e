/*
 * Core.serve_http: the common HTTP/1.1 request start to end in C
 * (declarations in fastpath.h; the Python side is uwsgigw/asgi/http_front.py).
 * A request the parser (fastpath_httpparse.c) takes runs here; the parser
 * declines the rest, and the connection goes to llhttp's driver.
 *
 * The environ is protocol/http.py's environ_vars over the base environ; the
 * response is framed as cycle/framing.py frames it (fastpath_httphead.c).
 */
#include "fastpath.h"

#include <errno.h>
#include <string.h>
#include <sys/socket.h>

/* ----------------------------------------------------------- environ -- */

static int hexval(unsigned char ch)
{
    if (ch >= '0' && ch <= '9')
        return ch - '0';
    ch |= 0x20;
    return ch >= 'a' && ch <= 'f' ? ch - 'a' + 10 : -1;
}

/* PATH_INFO: the path percent-decoded (urllib's unquote_to_bytes: a '%'
 * without two hex digits stays), then read as latin-1 (PEP 3333). */
static PyObject *path_info(const char *p, size_t n)
{
    char small[512], *out;
    size_t i, w = 0;
    PyObject *s;

    if (memchr(p, '%', n) == NULL)
        return PyUnicode_DecodeLatin1(p, (Py_ssize_t)n, NULL);
    out = n <= sizeof small ? small : PyMem_Malloc(n);
    if (out == NULL)
        return PyErr_NoMemory();
    for (i = 0; i < n; i++) {
        int hi, lo;
        if (p[i] == '%' && i + 2 < n && (hi = hexval((unsigned char)p[i + 1])) >= 0 &&
            (lo = hexval((unsigned char)p[i + 2])) >= 0) {
            out[w++] = (char)(hi * 16 + lo);
            i += 2;
        } else {
            out[w++] = p[i];
        }
    }
    s = PyUnicode_DecodeLatin1(out, (Py_ssize_t)w, NULL);
    if (out != small)
        PyMem_Free(out);
    return s;
}

static int set_str(PyObject *env, PyObject *key, const char *p, size_t n)
{
    PyObject *v = PyUnicode_DecodeLatin1(p, (Py_ssize_t)n, NULL);
    int rc;
    if (v == NULL)
        return -1;
    rc = PyDict_SetItem(env, key, v);
    Py_DECREF(v);
    return rc;
}

static int all_digits(const char *p, size_t n)
{
    size_t i;
    if (n == 0)
        return 0;
    for (i = 0; i < n; i++)
        if (p[i] < '0' || p[i] > '9')
            return 0;
    return 1;
}

/* SERVER_NAME and SERVER_PORT from Host, as environ_vars reads it. */
static int server_vars(PyObject *env, const fp_http_req *q, PyObject *name, PyObject *port)
{
    const char *h, *rest;
    size_t n, nn;
    int rc;

    if (q->host < 0 || q->f[q->host].vlen == 0)
        return PyDict_SetItem(env, fp.SERVER_NAME, name) < 0 ||
                       PyDict_SetItem(env, fp.SERVER_PORT, port) < 0 ? -1 : 0;
    h = q->f[q->host].value;
    n = q->f[q->host].vlen;
    rest = NULL;
    if (h[0] == '[') { /* [v6]:port; without ']' the name is empty */
        const char *close = memchr(h, ']', n);
        nn = close == NULL ? 0 : (size_t)(close - h) + 1;
        if (close != NULL && nn < n && h[nn] == ':' && all_digits(h + nn + 1, n - nn - 1))
            rest = h + nn + 1;
    } else {
        const char *colon = NULL, *c;
        for (c = h; c < h + n; c++)
            if (*c == ':')
                colon = c;
        nn = colon == NULL ? n : (size_t)(colon - h);
        if (colon != NULL && all_digits(colon + 1, n - nn - 1))
            rest = colon + 1;
    }
    if (set_str(env, fp.SERVER_NAME, h, nn) < 0)
        return -1;
    if (rest == NULL)
        return PyDict_SetItem(env, fp.SERVER_PORT, port);
    rc = set_str(env, fp.SERVER_PORT, rest, (size_t)(h + n - rest));
    return rc;
}

/* The environ of q over the base; *nvars as the record counts it (keys and
 * values of the request's vars). conn: (REMOTE_ADDR, REMOTE_PORT,
 * SERVER_NAME, SERVER_PORT) of the connection. */
static PyObject *http_environ(PyObject *base, const fp_http_req *q, PyObject *conn,
                              long long *nvars)
{
    PyObject *env = PyDict_Copy(base), *seen[FP_MAX_BASE_SEEN];
    const char *qmark;
    size_t plen;
    int nseen = 0, i, distinct = 9, type = 0;

    if (env == NULL)
        return NULL;
    qmark = memchr(q->target, '?', q->tlen);
    plen = qmark == NULL ? q->tlen : (size_t)(qmark - q->target);
    if (PyDict_SetItem(env, fp.REQUEST_METHOD, q->head ? fp.HEAD : fp.GET) < 0 ||
        set_str(env, fp.REQUEST_URI, q->target, q->tlen) < 0)
        goto fail;
    {
        PyObject *path = path_info(q->target, plen);
        if (path == NULL || PyDict_SetItem(env, fp.PATH_INFO, path) < 0) {
            Py_XDECREF(path);
            goto fail;
        }
        Py_DECREF(path);
    }
    if ((qmark == NULL ? PyDict_SetItem(env, fp.QUERY_STRING, fp.empty)
                       : set_str(env, fp.QUERY_STRING, qmark + 1, q->tlen - plen - 1)) < 0 ||
        PyDict_SetItem(env, fp.SERVER_PROTOCOL, q->v10 ? fp.HTTP_1_0 : fp.HTTP_1_1) < 0 ||
        PyDict_SetItem(env, fp.REMOTE_ADDR, PyTuple_GET_ITEM(conn, 0)) < 0 ||
        PyDict_SetItem(env, fp.REMOTE_PORT, PyTuple_GET_ITEM(conn, 1)) < 0 ||
        server_vars(env, q, PyTuple_GET_ITEM(conn, 2), PyTuple_GET_ITEM(conn, 3)) < 0)
        goto fail;
    for (i = 0; i < q->nfields; i++) {
        const fp_hfield *f = &q->f[i];
        char key[5 + FP_HTTP_MAX_NAME];
        PyObject *k, *v;
        uint32_t j;
        int rc;

        if (fp_field_is(f, "content-type", 12)) {
            type = 1; /* the last one wins, as in environ_vars */
            if (set_str(env, fp.CONTENT_TYPE, f->value, f->vlen) < 0)
                goto fail;
            continue;
        }
        memcpy(key, "HTTP_", 5);
        for (j = 0; j < f->nlen; j++) {
            char ch = f->name[j];
            key[5 + j] = ch == '-' ? '_' : (ch >= 'a' && ch <= 'z') ? (char)(ch - 32) : ch;
        }
        k = fp_key_str(key, 5 + f->nlen);
        if (k == NULL)
            goto fail;
        v = PyUnicode_DecodeLatin1(f->value, f->vlen, NULL);
        rc = v == NULL ? -1 : fp_put_var(env, base, k, v, seen, &nseen);
        Py_DECREF(k);
        Py_XDECREF(v);
        if (rc < 0)
            goto fail;
        distinct += rc == 0;
    }
    fp_release_seen(seen, nseen);
    *nvars = 2LL * (distinct + type);
    return env;
fail:
    fp_release_seen(seen, nseen);
    Py_DECREF(env);
    return NULL;
}

static int conn_tuple(PyObject *conn)
{
    if (PyTuple_Check(conn) && PyTuple_GET_SIZE(conn) == 5)
        return 1;
    PyErr_SetString(PyExc_TypeError, "conn: (REMOTE_ADDR, REMOTE_PORT, SERVER_NAME, "
                                     "SERVER_PORT, trusted)");
    return 0;
}

/* _fastpath.http_environ(data, max_head, base, conn) -> (environ, nvars) for
 * the head the C parser takes, else None: for the differential tests. */
PyObject *fp_http_environ_py(PyObject *mod, PyObject *args)
{
    Py_buffer data;
    Py_ssize_t max_head;
    PyObject *base, *conn, *env;
    fp_http_req r;
    long long nvars = 0;

    if (!PyArg_ParseTuple(args, "y*nO!O:http_environ", &data, &max_head, &PyDict_Type, &base,
                          &conn))
        return NULL;
    if (!conn_tuple(conn)) {
        PyBuffer_Release(&data);
        return NULL;
    }
    if (fp_http_parse(data.buf, (size_t)data.len, (size_t)max_head, &r) != FP_HTTP_DONE) {
        PyBuffer_Release(&data);
        Py_RETURN_NONE;
    }
    env = http_environ(base, &r, conn, &nvars);
    PyBuffer_Release(&data);
    return env == NULL ? NULL : Py_BuildValue("(NL)", env, nvars);
}

/* ------------------------------------------------------------- serve -- */

/* The whole environ of q: the vars, X-Forwarded-* from a trusted peer
 * (forwarded-allow-ips, through the Python hook), an empty wsgi.input. */
static PyObject *request_environ(Core *c, const fp_http_req *q, PyObject *conn,
                                 long long *nvars)
{
    PyObject *env = http_environ(c->base, q, conn, nvars), *input;

    if (env == NULL)
        return NULL;
    if (q->forwarded && PyObject_IsTrue(PyTuple_GET_ITEM(conn, 4)) && c->forwarded != Py_None) {
        PyObject *res = PyObject_CallOneArg(c->forwarded, env);
        if (res == NULL) {
            Py_DECREF(env);
            return NULL;
        }
        Py_DECREF(res);
    }
    input = PyObject_CallNoArgs(c->new_input);
    if (input == NULL || PyDict_SetItem(env, fp.wsgi_input, input) < 0) {
        Py_XDECREF(input);
        Py_DECREF(env);
        return NULL;
    }
    Py_DECREF(input);
    return env;
}

/* One parsed request, start to end: 1 when the connection may carry the
 * next, 0 when it must close, -1 with an exception that must propagate. */
/* Run the WSGI app for env (the request's whole environ) and answer it on
 * fd: 1 when the connection may carry the next request, 0 when it must
 * close, -1 with an exception that must propagate. keep_alive: what the
 * request, http-keepalive and a stopping worker allow. */
static int run_request(Core *c, int fd, PyObject *env, int head_only, int v10,
                       int keep_alive, long long nvars, long long size, double started)
{
    PyObject *x;
    Exchange *e;
    fp_record r;
    int rc, keep;

    if (PyObject_SetAttr(c->hooks, fp.env, env) < 0)
        return -1;
    if (c->track_requests)
        fp_track(c, env);
    SLOT(c, fp.off_busy_since, double) = started;
    x = fp_new_exchange(fd, head_only, c->timeout);
    if (x == NULL)
        return -1;
    e = (Exchange *)x;
    e->http = v10 ? 10 : 11;
    e->keep_alive = keep_alive;
    e->stop_flag = c->stop_flag;
    rc = fp_run_app(c, x, env);
    keep = e->sent && !e->aborted && e->keep_alive;
    r.env = env;
    r.nvars = nvars;
    r.pktsize = size;
    r.modifier1 = 0;
    r.started = started;
    rc = fp_end_request(c, e, &r, rc);
    if (rc >= 0 && e->offloaded)
        keep = 2; /* the front sends the rest, then decides */
    Py_DECREF(x);
    return rc < 0 ? -1 : keep;
}

static int serve_one(Core *c, int fd, const fp_http_req *q, PyObject *conn, int stopping)
{
    double started = fp_now_realtime();
    long long nvars = 0;
    PyObject *env = request_environ(c, q, conn, &nvars);
    int rc;

    if (env == NULL)
        return -1;
    rc = run_request(c, fd, env, q->head, q->v10, q->keep_alive && c->http_keepalive && !stopping,
                     nvars, q->size, started);
    Py_DECREF(env);
    return rc;
}

/* Keep data[0:n] as the connection's pending bytes (a bytearray); data
 * is in pending's own buffer or elsewhere (the read buffer). */
static int keep_pending(PyObject *pending, const char *data, size_t n)
{
    char *buf = PyByteArray_AS_STRING(pending);
    size_t size = (size_t)PyByteArray_GET_SIZE(pending);

    if (size > 0 && data >= buf && data <= buf + size) {
        if (data != buf && n > 0)
            memmove(buf, data, n); /* before the resize: it may move the buffer */
        return PyByteArray_Resize(pending, (Py_ssize_t)n);
    }
    if (PyByteArray_Resize(pending, (Py_ssize_t)n) < 0)
        return -1;
    if (n > 0)
        memcpy(PyByteArray_AS_STRING(pending), data, n);
    return 0;
}

enum { SERVE_WAIT = 0, SERVE_SERVED = 1, SERVE_CLOSE = 2, SERVE_DECLINE = 3, SERVE_OFFLOAD = 4 };

/* Core.serve_http(fd, pending, conn, stopping) -> int.
 *
 * Reads what the socket has (non-blocking) after ``pending`` (a bytearray:
 * the connection's bytes not yet used) and serves every complete request
 * the parser takes, in order. Returns 0 (nothing complete: wait), 1 (served
 * some, the connection waits for the next), 2 (close it: the client closed,
 * or the answer said Connection: close, or a response was cut short), 3
 * (a request the parser declined: ``pending`` starts with it, for llhttp)
 * or 4 (a response's body goes on from the event loop: the hooks' send_file
 * set exchange.offloaded; what is pending waits for it).
 * ``conn``: (REMOTE_ADDR, REMOTE_PORT, SERVER_NAME, SERVER_PORT, trusted);
 * ``stopping``: the worker is stopping (answers say Connection: close);
 * ``budget`` (optional): requests to serve at most in this call, -1 for no
 * bound (max-requests: the caller checks its limit before the rest). */
/* The arguments both entry points take: fd, pending (a bytearray), conn,
 * stopping. 0, or -1 with TypeError. */
static int http_args(PyObject *const *args, Py_ssize_t nargs, const char *name, int *fd,
                     int *stopping)
{
    if (nargs < 4 || !PyByteArray_Check(args[1])) {
        PyErr_Format(PyExc_TypeError, "%s(fd, bytearray, conn, stopping)", name);
        return -1;
    }
    if (!conn_tuple(args[2]))
        return -1;
    *fd = (int)PyLong_AsLong(args[0]);
    if (*fd == -1 && PyErr_Occurred())
        return -1;
    *stopping = PyObject_IsTrue(args[3]);
    return *stopping < 0 ? -1 : 0;
}

/* Read what the socket has (non-blocking) after the pending bytes: *data,
 * *n are then all the unused bytes (in stack, or in pending's buffer).
 * Returns 0; 2 when the client closed its side (or reset) after sending
 * what is pending: that is still to be answered; 1 when it closed with
 * nothing pending; -1 on error. */
static int take_input(int fd, PyObject *pending, char *stack, size_t cap, const char **data,
                      size_t *n)
{
    size_t had = (size_t)PyByteArray_GET_SIZE(pending);
    ssize_t got;
    int eof = 0;

    do
        got = recv(fd, stack, cap, MSG_DONTWAIT);
    while (got < 0 && errno == EINTR);
    if (got == 0 || (got < 0 && errno != EAGAIN && errno != EWOULDBLOCK)) {
        if (had == 0)
            return 1; /* closed or reset: nothing to answer */
        eof = 2;
        got = 0;
    } else if (got < 0) {
        got = 0;
    }
    if (had == 0) {
        *data = stack;
        *n = (size_t)got;
        return eof;
    }
    if (got && PyByteArray_Resize(pending, (Py_ssize_t)(had + (size_t)got)) < 0)
        return -1;
    memcpy(PyByteArray_AS_STRING(pending) + had, stack, (size_t)got);
    *data = PyByteArray_AS_STRING(pending);
    *n = had + (size_t)got;
    return eof;
}

PyObject *fp_core_serve_http(Core *c, PyObject *const *args, Py_ssize_t nargs)
{
    char stack[16384];
    PyObject *pending = args[1], *conn = args[2];
    const char *data;
    size_t n, off = 0;
    fp_http_req req;
    int fd, stopping, code = SERVE_WAIT, served = 0, rc, eof;
    long budget = -1;

    if (http_args(args, nargs, "serve_http", &fd, &stopping) < 0)
        return NULL;
    if (nargs == 5 && (budget = PyLong_AsLong(args[4])) == -1 && PyErr_Occurred())
        return NULL;
    eof = take_input(fd, pending, stack, sizeof stack, &data, &n);
    if (eof == 1 || eof < 0)
        return eof < 0 ? NULL : PyLong_FromLong(SERVE_CLOSE);
    while (off < n) {
        rc = fp_http_parse(data + off, n - off, (size_t)c->max_block, &req);
        if (rc == FP_HTTP_MORE)
            break;
        if (rc == FP_HTTP_DECLINE) {
            code = SERVE_DECLINE;
            break;
        }
        rc = serve_one(c, fd, &req, conn, stopping);
        off += req.head_len;
        served = 1;
        if (rc < 0)
            return NULL; /* the caller closes the connection */
        if (rc == 0) {
            code = SERVE_CLOSE;
            break;
        }
        if (rc == 2) {
            code = SERVE_OFFLOAD; /* what is pending waits for the file's end */
            break;
        }
        if (budget > 0 && --budget == 0)
            break; /* max-requests: the caller checks it before what is pending */
    }
    if (code != SERVE_CLOSE && keep_pending(pending, data + off, n - off) < 0)
        return NULL;
    if (eof && code != SERVE_DECLINE && code != SERVE_OFFLOAD)
        code = SERVE_CLOSE; /* the client sends no more: what it sent is answered */
    else if (code == SERVE_WAIT && served)
        code = SERVE_SERVED;
    return PyLong_FromLong(code);
}

/* Core.read_http(fd, pending, conn, stopping) -> int | tuple: for apps C
 * does not run (ASGI). Reads as serve_http does and parses one request:
 * 0 (wait), 2 (close), 3 (declined) as serve_http, or (environ, keep_alive,
 * head_only, version, nvars, size) with the rest kept in ``pending``;
 * keep_alive is what the request, http-keepalive and ``stopping`` allow. */
PyObject *fp_core_read_http(Core *c, PyObject *const *args, Py_ssize_t nargs)
{
    char stack[16384];
    PyObject *pending = args[1], *env;
    const char *data;
    size_t n;
    fp_http_req req;
    long long nvars = 0;
    int fd, stopping, rc, eof;

    if (http_args(args, nargs, "read_http", &fd, &stopping) < 0)
        return NULL;
    eof = take_input(fd, pending, stack, sizeof stack, &data, &n);
    if (eof == 1 || eof < 0)
        return eof < 0 ? NULL : PyLong_FromLong(SERVE_CLOSE);
    rc = n == 0 ? FP_HTTP_MORE : fp_http_parse(data, n, (size_t)c->max_block, &req);
    if (rc != FP_HTTP_DONE) {
        if (keep_pending(pending, data, n) < 0)
            return NULL;
        if (rc == FP_HTTP_MORE)
            return PyLong_FromLong(eof ? SERVE_CLOSE : SERVE_WAIT); /* a head never ends */
        return PyLong_FromLong(SERVE_DECLINE);
    }
    env = request_environ(c, &req, args[2], &nvars);
    if (env == NULL || keep_pending(pending, data + req.head_len, n - req.head_len) < 0) {
        Py_XDECREF(env);
        return NULL;
    }
    return Py_BuildValue("(NOOsLL)", env,
                         req.keep_alive && c->http_keepalive && !stopping ? Py_True : Py_False,
                         req.head ? Py_True : Py_False, req.v10 ? "1.0" : "1.1", nvars,
                         req.size);
}

/* Core.run_http(fd, head, started) -> bool: the WSGI app for a request
 * read_http gave (``head``: its tuple), in a thread of the worker's pool,
 * answered on fd; True when the connection may carry the next request.
 * ``started``: when the request began (time.time()). */
PyObject *fp_core_run_http(Core *c, PyObject *const *args, Py_ssize_t nargs)
{
    PyObject *head, *env, *keep, *head_only, *version;
    long long nvars, size;
    double started;
    int fd, rc;

    if (nargs != 3 || !PyTuple_Check(args[1]) || PyTuple_GET_SIZE(args[1]) != 6) {
        PyErr_SetString(PyExc_TypeError, "run_http(fd, read_http's tuple, started)");
        return NULL;
    }
    fd = (int)PyLong_AsLong(args[0]);
    started = PyFloat_AsDouble(args[2]);
    if (PyErr_Occurred())
        return NULL;
    head = args[1];
    env = PyTuple_GET_ITEM(head, 0);
    keep = PyTuple_GET_ITEM(head, 1);
    head_only = PyTuple_GET_ITEM(head, 2);
    version = PyTuple_GET_ITEM(head, 3);
    nvars = PyLong_AsLongLong(PyTuple_GET_ITEM(head, 4));
    size = PyLong_AsLongLong(PyTuple_GET_ITEM(head, 5));
    if (PyErr_Occurred())
        return NULL;
    if (!PyDict_CheckExact(env)) {
        PyErr_SetString(PyExc_TypeError, "run_http: the environ must be a dict");
        return NULL;
    }
    rc = run_request(c, fd, env, head_only == Py_True, fp_is_str(version, "1.0", 3),
                     keep == Py_True, nvars, size, started);
    if (rc < 0)
        return NULL;
    return PyBool_FromLong(rc);
}

