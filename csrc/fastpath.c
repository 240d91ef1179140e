/*
 * uwsgigw._fastpath: the per-request hot path in C (CPython C API).
 *
 * The cffi decoder (uwsgi_decoder.c) cannot create Python objects, so every
 * request paid for a Python pass that turned its output into strings, a dict
 * and a response head. This module does those steps in C for the common
 * request and hands everything unusual back to the Python code, which stays
 * the one place where errors are explained (uwsgigw/wsgi/handler.py):
 *
 *   accept(listen_fd)        accept4() -> int fd (no socket object, no
 *                            getsockname() as socket.socket(fileno=) does)
 *   read_request(fd, buf, max_block, base, timeout)
 *                            the vars block read, decoded and made an environ:
 *                            a request.RequestHead, or an int when Python must
 *                            take over; TimeoutError after socket-timeout
 *   environ_from(data, max_block, base)
 *                            decode + environ of a buffer (tests, bench)
 *   Exchange(fd, head_only, timeout)
 *                            PEP 3333 start_response/write; builds the head
 *                            and sends head + body in one sendmsg()
 *   uwsgi_line(record)       uWSGI's default request line
 *   Core(hooks, settings).serve(fd)
 *                            a request without a body, start to end
 *   Core(...).serve_http(fd, pending, conn, stopping)
 *                            the same for HTTP connections (fastpath_http.c)
 *
 * fastpath.h declares what the files share; uwsgigw/wsgi/fastpath.py declares
 * the seam with Python. Semantics mirror uwsgigw/protocol/environ.py and handler.py's
 * _Exchange exactly; tests/test_fastpath.py compares them on random packets
 * and responses. Validation is by uwsgi_decode() (the same C the cffi decoder
 * runs), so a packet it accepts can be walked without further checks.
 */
#include "fastpath.h"

#include <time.h>

fp_state fp;
uwsgi_scratch fp_scratch;

double fp_now_monotonic(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

double fp_now_realtime(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

int fp_is_str(PyObject *v, const char *lit, Py_ssize_t n)
{
    return v != NULL && PyUnicode_Check(v) && PyUnicode_KIND(v) == PyUnicode_1BYTE_KIND &&
           PyUnicode_GET_LENGTH(v) == n && memcmp(PyUnicode_1BYTE_DATA(v), lit, n) == 0;
}

/* C reads these tuples by position: the Python types must list the fields
 * in this order (checked once, at init). */
static const char *const head_fields[] = {"env", "length", "consumed", "nvars", "modifier1",
                                          "nread", "held", NULL};
static const char *const record_fields[] = {
    "env", "status", "tx", "head_size", "headers_count", "nvars", "pktsize", "modifier1",
    "started", "elapsed", "pid", "worker_id", "core", "requests", "total", NULL};

static int check_fields(PyObject *type, const char *const *names)
{
    PyObject *fields = PyObject_GetAttrString(type, "_fields");
    Py_ssize_t i, n = 0;
    int ok;

    if (fields == NULL)
        return -1;
    while (names[n] != NULL)
        n++;
    ok = PyTuple_Check(fields) && PyTuple_GET_SIZE(fields) == n;
    for (i = 0; ok && i < n; i++)
        ok = PyUnicode_Check(PyTuple_GET_ITEM(fields, i)) &&
             PyUnicode_CompareWithASCIIString(PyTuple_GET_ITEM(fields, i), names[i]) == 0;
    Py_DECREF(fields);
    if (!ok) {
        PyErr_Format(PyExc_TypeError, "%R: its fields are not the ones C reads, in order",
                     type);
        return -1;
    }
    return 0;
}

/* init(ResponseError, HeadersAlreadySent, build_head, FileWrapper, RequestHead,
 *      RequestRecord, (busy_since, requests, tx, rt_total, rt_count, req, req_size)) */
static PyObject *fp_init(PyObject *mod, PyObject *args)
{
    PyObject *re, *has, *bh, *fw, *head, *record, *layout;

    if (!PyArg_ParseTuple(args, "OOOOOOO:init", &re, &has, &bh, &fw, &head, &record, &layout))
        return NULL;
    if (check_fields(head, head_fields) < 0 || check_fields(record, record_fields) < 0)
        return NULL;
    if (!PyArg_ParseTuple(layout, "nnnnnnn:slot layout", &fp.off_busy_since, &fp.off_requests,
                          &fp.off_tx, &fp.off_rt_total, &fp.off_rt_count, &fp.off_req,
                          &fp.req_size))
        return NULL;
    Py_INCREF(re);
    Py_INCREF(has);
    Py_INCREF(bh);
    Py_INCREF(fw);
    Py_INCREF(head);
    Py_INCREF(record);
    Py_XSETREF(fp.ResponseError, re);
    Py_XSETREF(fp.HeadersAlreadySent, has);
    Py_XSETREF(fp.build_head, bh);
    Py_XSETREF(fp.FileWrapper, fw);
    Py_XSETREF(fp.RequestHead, head);
    Py_XSETREF(fp.RequestRecord, record);
    Py_RETURN_NONE;
}

/* init_http(http_head): cycle/framing.http_head, for the responses C
 * leaves to it (fastpath_httphead.c). */
static PyObject *fp_init_http(PyObject *mod, PyObject *http_head)
{
    Py_INCREF(http_head);
    Py_XSETREF(fp.http_head, http_head);
    Py_RETURN_NONE;
}

static PyMethodDef fp_methods[] = {
    {"init_http", fp_init_http, METH_O, "init_http(framing.http_head)"},
    {"http_parse", fp_http_parse_py, METH_VARARGS,
     "http_parse(data, max_head) -> 0 (more), -1 (declined) or (method, target, version, "
     "fields, keep_alive, size, host, head_len): the C head parser, for tests"},
    {"http_environ", fp_http_environ_py, METH_VARARGS,
     "http_environ(data, max_head, base, conn) -> (environ, nvars) | None, for tests"},
    {"http_frame", (PyCFunction)(void (*)(void))fp_http_frame_py, METH_FASTCALL,
     "http_frame(status, headers, version, head_only, keep_alive) -> (head, headers_count, "
     "mode, length, keep_alive) | None: framing.http_head's common case"},
    {"http_date", fp_http_date_py, METH_NOARGS, "http_date() -> the Date of this second"},
    {"openat2", (PyCFunction)(void (*)(void))fp_openat2_py, METH_FASTCALL,
     "openat2(dirfd, path, flags, resolve) -> fd | -errno (fastpath_open.c)"},
    {"init", fp_init, METH_VARARGS,
     "init(ResponseError, HeadersAlreadySent, build_head, FileWrapper, RequestHead, "
     "RequestRecord, slot_layout)"},
    {"accept", fp_accept, METH_O, "accept(listen_fd) -> fd, or -1 when none waits"},
    {"read_request", (PyCFunction)(void (*)(void))fp_read_request, METH_FASTCALL,
     "read_request(fd, buffer, max_block, base, timeout) -> RequestHead | int"},
    {"uwsgi_line", fp_uwsgi_line, METH_O,
     "uwsgi_line(record) -> bytes (uWSGI's default line) | None"},
    {"environ_from", fp_environ_from, METH_VARARGS,
     "environ_from(data, max_block, base) -> RequestHead | None"},
    {NULL}};

static struct PyModuleDef fp_module = {
    PyModuleDef_HEAD_INIT, "uwsgigw._fastpath",
    "The per-request hot path in C; see csrc/fastpath.c.", -1, fp_methods};

#define INTERN(var, text)                                      \
    do {                                                       \
        if ((fp.var = PyUnicode_InternFromString(text)) == NULL) \
            return NULL;                                       \
    } while (0)

static int add_type(PyObject *m, const char *name, PyTypeObject *type)
{
    Py_INCREF(type);
    if (PyModule_AddObject(m, name, (PyObject *)type) < 0) {
        Py_DECREF(type);
        return -1;
    }
    return 0;
}

PyMODINIT_FUNC PyInit__fastpath(void)
{
    PyObject *m;

    INTERN(CONTENT_TYPE, "CONTENT_TYPE");
    INTERN(CONTENT_LENGTH, "CONTENT_LENGTH");
    INTERN(HTTPS, "HTTPS");
    INTERN(REQUEST_SCHEME, "REQUEST_SCHEME");
    INTERN(url_scheme, "wsgi.url_scheme");
    INTERN(https, "https");
    INTERN(SCRIPT_NAME, "SCRIPT_NAME");
    INTERN(PATH_INFO, "PATH_INFO");
    INTERN(REMOTE_ADDR, "REMOTE_ADDR");
    INTERN(REMOTE_USER, "REMOTE_USER");
    INTERN(REQUEST_METHOD, "REQUEST_METHOD");
    INTERN(REQUEST_URI, "REQUEST_URI");
    INTERN(SERVER_PROTOCOL, "SERVER_PROTOCOL");
    INTERN(HEAD, "HEAD");
    INTERN(wsgi_input, "wsgi.input");
    INTERN(write, "write");
    INTERN(comma, ", ");
    INTERN(semicolon, "; ");
    INTERN(start_response, "start_response");
    INTERN(close, "close");
    INTERN(env, "env");
    INTERN(no_app, "no_app");
    INTERN(app_failed, "app_failed");
    INTERN(close_failed, "close_failed");
    INTERN(send_file, "send_file");
    INTERN(GET, "GET");
    INTERN(QUERY_STRING, "QUERY_STRING");
    INTERN(SERVER_NAME, "SERVER_NAME");
    INTERN(SERVER_PORT, "SERVER_PORT");
    INTERN(REMOTE_PORT, "REMOTE_PORT");
    INTERN(HTTP_1_0, "HTTP/1.0");
    INTERN(HTTP_1_1, "HTTP/1.1");
    INTERN(empty, "");
    if (PyType_Ready(&ExchangeType) < 0 || PyType_Ready(&CoreType) < 0 ||
        PyType_Ready(&StaticCacheType) < 0)
        return NULL;
    m = PyModule_Create(&fp_module);
    if (m == NULL)
        return NULL;
    if (add_type(m, "Exchange", &ExchangeType) < 0 || add_type(m, "Core", &CoreType) < 0 ||
        add_type(m, "StaticCache", &StaticCacheType) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
