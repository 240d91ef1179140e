/*
 * Core: a request without a body, start to end, in C (declarations in
 * fastpath.h; the seam with Python in uwsgigw/wsgi/fastpath.py).
 *
 * Core(hooks, settings).serve(fd) runs a whole request without a body --
 * read, environ, app, response, the end of the connection, the counters and
 * the request line -- and returns None. Any other request comes back to
 * Python as read_request's answer (a RequestHead with a body to read, or the
 * int of a hand-over), and handler.py carries on from there.
 *
 * The rare turns of a request (no app mounted, the app raising, a
 * FileWrapper, a failing close()) call the hooks' public methods
 * (fastpath.CoreHooks), so each exists once, in Python. The settings are
 * read once, here; none of them is looked up per request. With the default
 * request log (chosen once by reqlog: settings.line_fd >= 0) the line is
 * built and written in C; otherwise the record goes to settings.emit.
 */
#include "fastpath.h"

#include <errno.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

/* Call hooks.<name>(args...) with ``exc`` as the exception being handled,
 * so the Python side's log.exception() sees its traceback. */
static int call_handling(Core *c, PyObject *name, PyObject *exc, PyObject *a, PyObject *b)
{
    PyObject *ot, *ov, *otb, *r;
    PyObject *type = (PyObject *)Py_TYPE(exc), *tb = PyException_GetTraceback(exc);

    PyErr_GetExcInfo(&ot, &ov, &otb);
    Py_INCREF(type);
    Py_INCREF(exc);
    PyErr_SetExcInfo(type, exc, tb); /* steals the three */
    if (a == NULL)
        r = PyObject_CallMethodOneArg(c->hooks, name, exc);
    else
        r = PyObject_CallMethodObjArgs(c->hooks, name, a, b, exc, NULL);
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
int fp_run_app(Core *c, PyObject *x, PyObject *env)
{
    PyObject *app, *sr, *result = NULL, *close, *exc;
    int rc = 0;

    if (c->static_cache != Py_None && !((Exchange *)x)->http) {
        rc = fp_static_serve(c->static_cache, (Exchange *)x, env);
        if (rc > 0)
            return 0; /* a repeat static hit, answered in C */
        if (rc < 0) {
            exc = take_exception();
            if (exc != NULL) {
                rc = call_handling(c, fp.app_failed, exc, x, env);
                Py_DECREF(exc);
            }
            return rc;
        }
    }
    app = PyObject_CallOneArg(c->pick_app, env);
    if (app == NULL)
        return -1;
    if (app == Py_None) {
        Py_DECREF(app);
        app = PyObject_CallMethodObjArgs(c->hooks, fp.no_app, x, env, NULL);
        Py_XDECREF(app);
        return app == NULL ? -1 : 0;
    }
    sr = PyObject_GetAttr(x, fp.start_response);
    if (sr != NULL) {
        PyObject *args[2] = {env, sr};
        result = PyObject_Vectorcall(app, args, 2, NULL);
        Py_DECREF(sr);
    }
    Py_DECREF(app);
    if (result != NULL) {
        PyObject *done = Exchange_send_result((Exchange *)x, result);
        if (done == Py_False) {
            PyObject *r = PyObject_CallMethodObjArgs(c->hooks, fp.send_file, x, result, NULL);
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
            rc = call_handling(c, fp.app_failed, exc, x, env);
            Py_DECREF(exc);
        }
    }
    if (result != NULL) {
        /* PEP 3333: close() whatever happened; an error pending from above
         * is kept aside meanwhile. */
        PyObject *t, *v, *tb;
        PyErr_Fetch(&t, &v, &tb);
        close = PyObject_GetAttr(result, fp.close);
        if (close == NULL) {
            PyErr_Clear();
        } else {
            PyObject *r = PyObject_CallNoArgs(close);
            Py_DECREF(close);
            if (r == NULL) {
                exc = take_exception();
                if (exc != NULL) {
                    if (call_handling(c, fp.close_failed, exc, NULL, NULL) < 0) {
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

/* ending.finish for a request without a body: shutdown(SHUT_WR), so nginx
 * sees the end now even if a process the app forked holds the descriptor,
 * then read the held tail (queued already) so the close is not a reset. */
static void finish(int fd, char *scratch, size_t cap, Py_ssize_t held)
{
    if (shutdown(fd, SHUT_WR) < 0)
        return; /* the peer is gone */
    while (held > 0) {
        ssize_t got = recv(fd, scratch, (size_t)held < cap ? (size_t)held : cap, MSG_DONTWAIT);
        if (got > 0)
            held -= got;
        else if (got < 0 && errno == EINTR)
            continue;
        else
            return;
    }
}

/* request.describe(env) -- "METHOD URI" (PATH_INFO when there is no
 * REQUEST_URI) -- into the slot, for harakiri's log line, as handler.py
 * writes it; before busy_since, which tells readers it is there. */
void fp_track(Core *c, PyObject *env)
{
    char *req = c->slot + fp.off_req;
    Py_ssize_t size = fp.req_size, n = 0;
    PyObject *parts[2] = {PyDict_GetItemWithError(env, fp.REQUEST_METHOD),
                          PyDict_GetItemWithError(env, fp.REQUEST_URI)};
    int i;

    if (parts[1] == NULL)
        parts[1] = PyDict_GetItemWithError(env, fp.PATH_INFO);
    PyErr_Clear(); /* a missing or odd var only makes the text shorter */
    for (i = 0; i < 2; i++) {
        PyObject *s = parts[i];
        Py_ssize_t len;
        if (i == 1 && n < size)
            req[n++] = ' ';
        if (s == NULL || !PyUnicode_Check(s) || PyUnicode_KIND(s) != PyUnicode_1BYTE_KIND)
            continue;
        len = PyUnicode_GET_LENGTH(s);
        if (len > size - n)
            len = size - n;
        memcpy(req + n, PyUnicode_1BYTE_DATA(s), (size_t)len);
        n += len;
    }
    if (n < size)
        req[n] = '\0';
}

/* record.account in C: the same counts on the same slot (its C twin). */
void fp_account(Core *c, fp_record *r, long long tx, double elapsed)
{
    uint64_t requests = SLOT(c, fp.off_requests, uint64_t) + 1;

    SLOT(c, fp.off_requests, uint64_t) = requests;
    SLOT(c, fp.off_rt_total, double) += elapsed;
    SLOT(c, fp.off_rt_count, uint64_t) = requests;
    SLOT(c, fp.off_tx, uint64_t) += (uint64_t)tx;
    r->requests = (long long)requests;
    r->total = (long long)++*c->total; /* no lock, as server.SharedCounter.incr */
}

/* The request line: the default one written here, or the record emitted. */
int fp_log_request(Core *c, const fp_record *r)
{
    PyObject *line, *record, *res;

    if (c->line_fd >= 0) {
        line = fp_default_line(r);
        if (line == NULL)
            return -1;
        if (line != Py_None) {
            ssize_t w;
            do { /* one line per write(): O_APPEND keeps lines whole */
                w = write(c->line_fd, PyBytes_AS_STRING(line), (size_t)PyBytes_GET_SIZE(line));
            } while (w < 0 && errno == EINTR);
            Py_DECREF(line);
            return 0;
        }
        Py_DECREF(line); /* not latin-1: Python's formatter escapes it */
    }
    if (c->emit == Py_None)
        return 0;
    record = fp_record_tuple(r);
    if (record == NULL)
        return -1;
    res = PyObject_CallOneArg(c->emit, record);
    Py_DECREF(record);
    Py_XDECREF(res);
    return res == NULL ? -1 : 0;
}

int fp_end_request(Core *c, Exchange *e, fp_record *r, int rc)
{
    if (rc < 0) {
        PyObject *t, *v, *tb;
        PyErr_Fetch(&t, &v, &tb);
        if (PyObject_SetAttr(c->hooks, fp.env, Py_None) < 0)
            PyErr_Clear();
        PyErr_Restore(t, v, tb);
        return -1;
    }
    rc = PyObject_SetAttr(c->hooks, fp.env, Py_None);
    r->status = e->status;
    r->tx = e->tx;
    r->head_size = e->head_size;
    r->headers_count = e->headers_count;
    r->elapsed = fp_now_realtime() - r->started;
    r->pid = c->pid;
    r->worker_id = c->worker_id;
    r->core = c->core;
    fp_account(c, r, e->tx, r->elapsed);
    if (rc == 0)
        rc = fp_log_request(c, r);
    return rc;
}

static PyObject *Core_serve(Core *c, PyObject *fdobj)
{
    PyObject *env, *x = NULL, *input, *method;
    fp_head h = {0};
    fp_record r;
    double started;
    int fd = (int)PyLong_AsLong(fdobj), rc;

    if (fd == -1 && PyErr_Occurred())
        return NULL;
    started = fp_now_realtime();
    switch (fp_read_head(fd, c->buf, c->max_block, c->base, c->timeout, &h)) {
    case FP_HEAD:
        break;
    case FP_HANDOVER:
        return PyLong_FromSsize_t(h.nread); /* Python explains it */
    case FP_TIMEOUT:
        PyErr_SetString(PyExc_TimeoutError, "vars block not complete within socket-timeout");
        return NULL;
    default:
        return NULL;
    }
    if (h.length != 0)
        return fp_head_tuple(&h); /* a body to read: Python */
    env = h.env;
    input = PyObject_CallNoArgs(c->new_input);
    if (input == NULL || PyDict_SetItem(env, fp.wsgi_input, input) < 0 ||
        PyObject_SetAttr(c->hooks, fp.env, env) < 0) {
        Py_XDECREF(input);
        Py_DECREF(env);
        return NULL;
    }
    Py_DECREF(input);
    if (c->track_requests)
        fp_track(c, env);
    SLOT(c, fp.off_busy_since, double) = started;
    method = PyDict_GetItemWithError(env, fp.REQUEST_METHOD);
    x = fp_new_exchange(fd, method != NULL && PyUnicode_Check(method) &&
                                PyUnicode_Compare(method, fp.HEAD) == 0, c->timeout);
    if (x == NULL) {
        Py_DECREF(env);
        return NULL;
    }
    rc = fp_run_app(c, x, env);
    if (rc == 0 && !((Exchange *)x)->aborted)
        finish(fd, PyByteArray_AS_STRING(c->buf), (size_t)PyByteArray_GET_SIZE(c->buf), h.held);
    r.env = env;
    r.nvars = h.nvars;
    r.pktsize = h.consumed - 4;
    r.modifier1 = h.modifier1;
    r.started = started;
    rc = fp_end_request(c, (Exchange *)x, &r, rc);
    Py_DECREF(x);
    Py_DECREF(env);
    if (rc < 0)
        return NULL;
    Py_RETURN_NONE;
}

/* A settings attribute as a new reference (NULL with AttributeError). */
static PyObject *setting(PyObject *settings, const char *name)
{
    return PyObject_GetAttrString(settings, name);
}

static int setting_ll(PyObject *settings, const char *name, long long *out)
{
    PyObject *v = setting(settings, name);
    if (v == NULL)
        return -1;
    *out = PyLong_AsLongLong(v);
    Py_DECREF(v);
    return (*out == -1 && PyErr_Occurred()) ? -1 : 0;
}

static int Core_init(Core *c, PyObject *args, PyObject *kw)
{
    PyObject *hooks, *settings, *v;
    long long slot_address, total_address, track, line_fd, keepalive, stop_flag;

    if (!PyArg_ParseTuple(args, "OO:Core", &hooks, &settings))
        return -1;
    Py_INCREF(hooks);
    Py_INCREF(settings);
    Py_XSETREF(c->hooks, hooks);
    Py_XSETREF(c->settings, settings);
    Py_XSETREF(c->buf, setting(settings, "buffer"));
    Py_XSETREF(c->base, setting(settings, "base_environ"));
    Py_XSETREF(c->pick_app, setting(settings, "pick_app"));
    Py_XSETREF(c->new_input, setting(settings, "new_input"));
    Py_XSETREF(c->emit, setting(settings, "emit"));
    Py_XSETREF(c->forwarded, setting(settings, "forwarded"));
    Py_XSETREF(c->static_cache, setting(settings, "static_cache"));
    if (c->buf == NULL || c->base == NULL || c->pick_app == NULL || c->new_input == NULL ||
        c->emit == NULL || c->forwarded == NULL || c->static_cache == NULL)
        return -1;
    if (c->static_cache != Py_None && !PyObject_TypeCheck(c->static_cache, &StaticCacheType)) {
        PyErr_SetString(PyExc_TypeError, "Core: static_cache must be a StaticCache or None");
        return -1;
    }
    if (!PyByteArray_Check(c->buf) || !PyDict_CheckExact(c->base)) {
        PyErr_SetString(PyExc_TypeError, "Core: buffer must be a bytearray, "
                                         "base_environ a dict");
        return -1;
    }
    if (setting_ll(settings, "max_block", &c->max_block) < 0 ||
        setting_ll(settings, "slot_address", &slot_address) < 0 ||
        setting_ll(settings, "total_address", &total_address) < 0 ||
        setting_ll(settings, "track_requests", &track) < 0 ||
        setting_ll(settings, "line_fd", &line_fd) < 0 ||
        setting_ll(settings, "pid", &c->pid) < 0 ||
        setting_ll(settings, "worker_id", &c->worker_id) < 0 ||
        setting_ll(settings, "core", &c->core) < 0 ||
        setting_ll(settings, "http_keepalive", &keepalive) < 0 ||
        setting_ll(settings, "stop_flag_address", &stop_flag) < 0)
        return -1;
    c->http_keepalive = keepalive != 0;
    c->stop_flag = (const int *)(intptr_t)stop_flag;
    v = setting(settings, "socket_timeout");
    if (v == NULL)
        return -1;
    c->timeout = PyFloat_AsDouble(v);
    Py_DECREF(v);
    if (c->timeout == -1.0 && PyErr_Occurred())
        return -1;
    if (slot_address == 0 || total_address == 0) {
        PyErr_SetString(PyExc_ValueError, "Core: slot_address and total_address are needed");
        return -1;
    }
    c->slot = (char *)(intptr_t)slot_address;
    c->total = (uint64_t *)(intptr_t)total_address;
    c->track_requests = track != 0;
    c->line_fd = (int)line_fd;
    return 0;
}

static int Core_traverse(Core *c, visitproc visit, void *arg)
{
    Py_VISIT(c->hooks);
    Py_VISIT(c->settings);
    Py_VISIT(c->buf);
    Py_VISIT(c->base);
    Py_VISIT(c->pick_app);
    Py_VISIT(c->new_input);
    Py_VISIT(c->emit);
    Py_VISIT(c->forwarded);
    Py_VISIT(c->static_cache);
    return 0;
}

static int Core_clear(Core *c)
{
    Py_CLEAR(c->hooks);
    Py_CLEAR(c->settings);
    Py_CLEAR(c->buf);
    Py_CLEAR(c->base);
    Py_CLEAR(c->pick_app);
    Py_CLEAR(c->new_input);
    Py_CLEAR(c->emit);
    Py_CLEAR(c->forwarded);
    Py_CLEAR(c->static_cache);
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
     "serve(fd) -> None when the request was served here, else read_request's answer "
     "(a RequestHead with a body to read, or an int: Python takes over); TimeoutError "
     "after socket-timeout"},
    {"serve_http", (PyCFunction)(void (*)(void))fp_core_serve_http, METH_FASTCALL,
     "serve_http(fd, pending, conn, stopping) -> 0 wait, 1 served (wait for the next), "
     "2 close, 3 declined (pending starts with a head for llhttp); see fastpath_http.c"},
    {"read_http", (PyCFunction)(void (*)(void))fp_core_read_http, METH_FASTCALL,
     "read_http(fd, pending, conn, stopping) -> 0, 2, 3 as serve_http, or (environ, "
     "keep_alive, head_only, version, nvars, size): one request for an app C does not run"},
    {"run_http", (PyCFunction)(void (*)(void))fp_core_run_http, METH_FASTCALL,
     "run_http(fd, head, started) -> bool: the WSGI app for read_http's head, answered "
     "(in a pool thread); True when the connection may carry the next request"},
    {NULL}};

PyTypeObject CoreType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "uwsgigw._fastpath.Core",
    .tp_doc = "Core(hooks, settings): a request thread's common request, in C "
              "(uwsgigw/wsgi/fastpath.py declares both arguments).",
    .tp_basicsize = sizeof(Core),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)Core_init,
    .tp_dealloc = (destructor)Core_dealloc,
    .tp_traverse = (traverseproc)Core_traverse,
    .tp_clear = (inquiry)Core_clear,
    .tp_methods = Core_methods,
};
