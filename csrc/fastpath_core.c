/*
 * Core: a request without a body, start to end: part of csrc/fastpath.c, the one translation unit of
 * uwsgigw._fastpath. It is #included there (after the shared hooks and
 * interned strings) and never compiled alone.
 */

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

static PyObject *s_env, *s_emit, *s_emit_filtered, *s_fd_attr,
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
    x->aborted = 0;
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
    PyObject *total, *emit;
    long long requests;
    double elapsed;
    int rc = 0;

    /* The slot holds the thread's counts (handler.requests reads it). */
    requests = (long long)++SLOT(c, off_requests, uint64_t);
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
                long long v[5] = {c->pid, requests, PyLong_AsLongLong(total),
                                  (long long)(elapsed * 1000), c->core};
                if (!PyErr_Occurred())
                    line = uwsgi_line(env, info, (Exchange *)x, v, ct);
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
    SLOT(c, off_tx, uint64_t) += (uint64_t)((Exchange *)x)->tx;
    return 0;
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

static PyObject *Core_serve(Core *c, PyObject *fdobj)
{
    PyObject *req, *env, *x = NULL, *input, *method;
    long long length, info;
    Py_ssize_t held;
    double started;
    int fd = (int)PyLong_AsLong(fdobj), rc;

    if (fd == -1 && PyErr_Occurred())
        return NULL;
    started = now_realtime();
    req = read_request(fd, c->buf, c->max_block, c->base, c->timeout);
    if (req == NULL || !PyTuple_Check(req))
        return req; /* an int: Python reads on */
    length = PyLong_AsLongLong(PyTuple_GET_ITEM(req, 1));
    if (length != 0 || c->track_requests)
        return req; /* a body to read, or the slot's request text: Python */
    info = PyLong_AsLongLong(PyTuple_GET_ITEM(req, 3));
    held = PyLong_AsSsize_t(PyTuple_GET_ITEM(req, 4));
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
    if (rc == 0 && !((Exchange *)x)->aborted)
        finish(fd, PyByteArray_AS_STRING(c->buf), (size_t)PyByteArray_GET_SIZE(c->buf), held);
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
