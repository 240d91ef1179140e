/*
 * uwsgigw._fastpath: the per-request hot path in C (CPython C API).
 *
 * The cffi decoder (uwsgi_decoder.c) cannot create Python objects, so every
 * request paid for a Python pass that turned its output into strings, a dict
 * and a response head. This module does those steps in C for the common
 * request and hands everything unusual back to the Python code, which stays
 * the one place where errors are explained (uwsgigw/handler.py):
 *
 *   accept(listen_fd)        accept4() -> int fd (no socket object, no
 *                            getsockname() as socket.socket(fileno=) does)
 *   read_request(fd, buf, max_block, base, timeout)
 *                            the vars block read, decoded and made an
 *                            environ; an int when Python must take over
 *   environ_from(data, max_block, base)
 *                            decode + environ of a buffer (tests, bench)
 *   Exchange(fd, head_only, timeout)
 *                            PEP 3333 start_response/write; builds the head
 *                            and sends head + body in one sendmsg()
 *   uwsgi_line(...)          uWSGI's default request line
 *   Core(handler, ...).serve(fd)
 *                            a request without a body, start to end
 *
 * Files: fastpath_environ.c (names, environ, read_request, accept),
 * fastpath_exchange.c, fastpath_reqlog.c, fastpath_core.c; this file holds
 * the shared hooks and the module, and includes the others.
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

/* The sections live in their own files (one job each) but build as one unit,
 * so everything stays static and the compiler sees the whole hot path. */
#include "fastpath_environ.c"
#include "fastpath_exchange.c"
#include "fastpath_reqlog.c"
#include "fastpath_core.c"

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
