/*
 * Exchange: PEP 3333 start_response/write and the response head, in C
 * (handler._Exchange's twin; declarations in fastpath.h).
 */
#include "fastpath.h"

#include <string.h>
#include <sys/uio.h>

PyObject *fp_new_exchange(int fd, int head_only, double timeout)
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
    x->aborted = x->offloaded = 0;
    x->http = x->keep_alive = 0;
    x->mode = FP_BODY_NONE;
    x->length = x->body_sent = 0;
    x->stop_flag = NULL;
    PyObject_GC_Track(x);
    return (PyObject *)x;
}

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
PyObject *fp_uwsgi_head(PyObject *status, PyObject *headers, int *count)
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
    /* 1xx (refused), 204 and 304 (no framing headers): build_head's rules. */
    if (sd[0] == '1' || ((sd[0] == '2' || sd[0] == '3') && sd[1] == '0' && sd[2] == '4'))
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
            if (!fp_token_chars[nd[j]])
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
    if (x->http) { /* the server frames the body (fastpath_httphead.c) */
        if (x->stop_flag != NULL && *x->stop_flag)
            x->keep_alive = 0; /* the worker was told to stop while the app ran */
        head = fp_http_head(x, PyTuple_GET_ITEM(pending, 0), PyTuple_GET_ITEM(pending, 1),
                            count);
        Py_DECREF(pending);
        return head;
    }
    head = fp_uwsgi_head(PyTuple_GET_ITEM(pending, 0), PyTuple_GET_ITEM(pending, 1), count);
    if (head != NULL || PyErr_Occurred()) {
        Py_DECREF(pending);
        return head;
    }
    res = PyObject_CallFunctionObjArgs(fp.build_head, PyTuple_GET_ITEM(pending, 0),
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

/* Send ``n`` body buffers, preceded by the head if it has not gone out;
 * on an HTTP socket framed as the head said (chunks, Content-Length). */
static int send_body(Exchange *x, struct iovec *body, int n)
{
    struct iovec iov[1 + 1 + 64 + 1];
    char size_line[20];
    int cnt = 0, count = 0, i, rc;
    long long total = 0;
    PyObject *head = NULL;

    if (x->http && !x->head_only && x->sent && x->mode == FP_BODY_NONE)
        return 0;
    for (i = 0; i < n; i++)
        total += (long long)body[i].iov_len;
    if (!x->sent) {
        if (x->pending == NULL) {
            PyErr_SetString(PyExc_AssertionError, "write() before start_response()");
            return -1;
        }
        head = make_head(x, &count);
        if (head == NULL)
            return -1;
    }
    if (x->http && x->mode == FP_BODY_LENGTH && !x->head_only &&
        x->body_sent + total > x->length) { /* refused before a byte of it goes */
        Py_XDECREF(head);
        PyErr_Format(fp.ResponseError,
                     "the app sent more than its Content-Length of %lld bytes", x->length);
        return -1;
    }
    if (!x->sent) {
        x->headers_count = count;
        x->head_size = (int)PyBytes_GET_SIZE(head);
        {   /* the three digits after "HTTP/1.1 ", validated by either builder */
            const char *s = PyBytes_AS_STRING(head) + 9;
            x->status = (s[0] - '0') * 100 + (s[1] - '0') * 10 + (s[2] - '0');
        }
        if (x->status == 204 || x->status == 304)
            x->head_only = 1; /* no body, whatever the app returns (request.body_allowed) */
        x->sent = 1;
        iov[cnt].iov_base = PyBytes_AS_STRING(head);
        iov[cnt].iov_len = (size_t)PyBytes_GET_SIZE(head);
        cnt++;
        if (x->head_only)
            n = 0;
    } else if (x->head_only) {
        return 0;
    }
    {
        size_t total = 0;
        int size_at = cnt;
        if (x->http && x->mode == FP_BODY_CHUNKED)
            cnt++; /* the one chunk's size line, once the size is known */
        for (i = 0; i < n && i < 64; i++) {
            if (!body[i].iov_len)
                continue;
            iov[cnt++] = body[i];
            total += body[i].iov_len;
        }
        x->body_sent += (long long)total;
        if (x->http && x->mode == FP_BODY_CHUNKED) {
            if (total == 0) {
                cnt = size_at; /* nothing: no chunk (a zero one would end the body) */
            } else {
                iov[size_at].iov_base = size_line;
                iov[size_at].iov_len = (size_t)fp_chunk_size_line(size_line, total);
                iov[cnt].iov_base = "\r\n";
                iov[cnt++].iov_len = 2;
            }
        }
    }
    rc = cnt ? fp_send_iov(x, iov, cnt) : 0;
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
        (nkw == 1 && !fp_is_str(PyTuple_GET_ITEM(kwnames, 0), "exc_info", 8))) {
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
        PyErr_SetString(fp.HeadersAlreadySent, "start_response() called twice without exc_info");
        return NULL;
    }
    Py_XSETREF(x->pending, PyTuple_Pack(2, status, headers));
    if (x->pending == NULL)
        return NULL;
    return PyObject_GetAttr((PyObject *)x, fp.write);
}

/* send_result(result) -> True, or False for a FileWrapper the caller
 * sendfile()s. The handler's former _send_result, in C. */
/* The whole result went out: on an HTTP socket, end the body. */
static PyObject *sent_all(Exchange *x)
{
    if (x->http && fp_http_finish(x) < 0)
        return NULL;
    Py_RETURN_TRUE;
}

PyObject *Exchange_send_result(Exchange *x, PyObject *result)
{
    PyTypeObject *kind = Py_TYPE(result);

    if (kind == &PyBytes_Type) { /* not PEP 3333, but uWSGI accepts it */
        struct iovec iov = {PyBytes_AS_STRING(result), (size_t)PyBytes_GET_SIZE(result)};
        if (send_body(x, &iov, 1) < 0)
            return NULL;
        return sent_all(x);
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
            return sent_all(x);
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
            return sent_all(x);
        }
    }
    if ((PyObject *)kind == fp.FileWrapper)
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
        return sent_all(x);
    }
}

static int Exchange_init(Exchange *x, PyObject *args, PyObject *kw)
{
    int fd, head_only;
    double timeout;

    int http = 0, keep_alive = 0;

    if (!PyArg_ParseTuple(args, "ipd|ip:Exchange", &fd, &head_only, &timeout, &http,
                          &keep_alive))
        return -1;
    if (http != 0 && http != 10 && http != 11) {
        PyErr_SetString(PyExc_ValueError, "http must be 0 (uwsgi), 10 or 11");
        return -1;
    }
    x->http = http;
    x->keep_alive = keep_alive;
    x->mode = FP_BODY_NONE;
    x->length = x->body_sent = 0;
    x->fd = fd;
    x->head_only = head_only;
    x->timeout = timeout;
    Py_CLEAR(x->pending);
    x->sent = 0;
    x->tx = 0;
    x->headers_count = x->head_size = x->status = 0;
    x->aborted = x->offloaded = 0;
    return 0;
}

static PyObject *Exchange_finish(Exchange *x, PyObject *noargs)
{
    if (fp_http_finish(x) < 0)
        return NULL;
    Py_RETURN_NONE;
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
    {"finish", (PyCFunction)Exchange_finish, METH_NOARGS,
     "HTTP: end the body (the last chunk; a short Content-Length marks it aborted)"},
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
    {"aborted", T_BOOL, offsetof(Exchange, aborted), 0, NULL},
    {"http", T_INT, offsetof(Exchange, http), READONLY,
     "0 on a uwsgi socket, else the request's HTTP version: 10 or 11"},
    {"keep_alive", T_BOOL, offsetof(Exchange, keep_alive), 0,
     "HTTP: the connection may carry another request"},
    {"body_sent", T_LONGLONG, offsetof(Exchange, body_sent), 0,
     "HTTP: body bytes sent (a sendfile outside the exchange adds its own)"},
    {"mode", T_INT, offsetof(Exchange, mode), READONLY, "HTTP: FP_BODY_* (framing.py)"},
    {"length", T_LONGLONG, offsetof(Exchange, length), READONLY, "HTTP: Content-Length"},
    {"offloaded", T_BOOL, offsetof(Exchange, offloaded), 0,
     "HTTP: the body goes on from the event loop; serve_http returns 4"},
    {NULL}};

PyTypeObject ExchangeType = {
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
