/*
 * uWSGI's default request line, built in C from a request record (the
 * record and its fields: uwsgigw/observe/record.py; declarations in fastpath.h).
 *
 * reqlog.default_line is the Python version: one %-format plus an
 * isprintable() check and an encode, ~2.5 us per request; this is a few
 * hundred ns, and the C core calls it with no Python call at all.
 */
#include "fastpath.h"

#include <stdio.h>
#include <string.h>
#include <time.h>

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

/* time.ctime(sec) (uWSGI's [ctime]), computed once per second and kept in
 * C: the C core writes a line without calling Python. The GIL is held. */
static PyObject *ctime_text(double t)
{
    static long long cached_sec = -1;
    static PyObject *cached;
    long long sec = (long long)t;

    if (sec != cached_sec || cached == NULL) {
        time_t tt = (time_t)sec;
        struct tm tm;
        char text[64];
        PyObject *fresh;
        if (localtime_r(&tt, &tm) == NULL || strftime(text, sizeof text, "%a %b %e %H:%M:%S %Y",
                                                      &tm) == 0)
            return PyUnicode_FromString("?");
        fresh = PyUnicode_FromString(text);
        if (fresh == NULL)
            return NULL;
        Py_XSETREF(cached, fresh);
        cached_sec = sec;
    }
    Py_INCREF(cached);
    return cached;
}

static PyObject *env_get(PyObject *env, PyObject *key)
{
    return PyDict_GetItemWithError(env, key); /* borrowed; NULL if missing */
}

PyObject *fp_default_line(const fp_record *r)
{
    PyObject *env = r->env, *uri, *ctime, *out = NULL;
    int i, rc = 0;
    char stack[2048];
    char *buf = stack;
    Py_ssize_t cap = sizeof stack, need = 512;
    out_buf o;

    uri = env_get(env, fp.REQUEST_URI);
    if (uri == NULL || (PyUnicode_Check(uri) && PyUnicode_GET_LENGTH(uri) == 0))
        uri = env_get(env, fp.PATH_INFO); /* env.get("REQUEST_URI") or PATH_INFO */
    if (PyErr_Occurred())
        return NULL;
    ctime = ctime_text(r->started);
    if (ctime == NULL)
        return NULL;
    {   /* worst case: every byte escaped to 4 */
        PyObject *parts[6] = {env_get(env, fp.REMOTE_ADDR), env_get(env, fp.REMOTE_USER),
                              env_get(env, fp.REQUEST_METHOD), uri,
                              env_get(env, fp.SERVER_PROTOCOL), ctime};
        if (PyErr_Occurred())
            goto done;
        for (i = 0; i < 6; i++) {
            if (parts[i] != NULL && PyUnicode_Check(parts[i]))
                need += 4 * PyUnicode_GET_LENGTH(parts[i]);
        }
        if (need > cap) {
            buf = PyMem_Malloc(need);
            if (buf == NULL) {
                PyErr_NoMemory();
                goto done;
            }
            cap = need;
        }
        o.p = buf;
        o.end = buf + cap;
        rc |= put_lit(&o, "[pid: ");
        rc |= put_num(&o, r->pid);
        rc |= put_lit(&o, "|app: 0|req: ");
        rc |= put_num(&o, r->requests);
        rc |= put_lit(&o, "/");
        rc |= put_num(&o, r->total);
        rc |= put_lit(&o, "] ");
        rc |= put_text(&o, parts[0]);
        rc |= put_lit(&o, " (");
        rc |= put_text(&o, parts[1]);
        rc |= put_lit(&o, ") {");
        rc |= put_num(&o, r->nvars);
        rc |= put_lit(&o, " vars in ");
        rc |= put_num(&o, r->pktsize);
        rc |= put_lit(&o, " bytes} [");
        rc |= put_text(&o, parts[5]);
        rc |= put_lit(&o, "] ");
        rc |= put_text(&o, parts[2]);
        rc |= put_lit(&o, " ");
        rc |= put_text(&o, parts[3]);
        rc |= put_lit(&o, " => generated ");
        rc |= put_num(&o, r->tx - r->head_size);
        rc |= put_lit(&o, " bytes in ");
        rc |= put_num(&o, (long long)(r->elapsed * 1000));
        rc |= put_lit(&o, " msecs (");
        rc |= put_text(&o, parts[4]);
        rc |= put_lit(&o, " ");
        rc |= put_num(&o, r->status);
        rc |= put_lit(&o, ") ");
        rc |= put_num(&o, r->headers_count);
        rc |= put_lit(&o, " headers in ");
        rc |= put_num(&o, r->head_size);
        rc |= put_lit(&o, " bytes (1 switches on core ");
        rc |= put_num(&o, r->core);
        rc |= put_lit(&o, ")\n");
    }
    if (rc != 0) { /* a str that is not latin-1 (or not a str): Python's turn */
        Py_INCREF(Py_None);
        out = Py_None;
    } else {
        out = PyBytes_FromStringAndSize(buf, o.p - buf);
    }
done:
    if (buf != stack)
        PyMem_Free(buf);
    Py_DECREF(ctime);
    return out;
}

/* fp_record <-> record.RequestRecord: a tuple read by position (the order is
 * checked against the type's _fields at init). */
enum { R_ENV, R_STATUS, R_TX, R_HEAD_SIZE, R_HEADERS, R_NVARS, R_PKTSIZE, R_MODIFIER1,
       R_STARTED, R_ELAPSED, R_PID, R_WORKER_ID, R_CORE, R_REQUESTS, R_TOTAL, R_FIELDS };

PyObject *fp_record_tuple(const fp_record *r)
{
    PyObject *args[R_FIELDS], *record = NULL;
    long long ints[R_FIELDS] = {0, r->status, r->tx, r->head_size, r->headers_count, r->nvars,
                                r->pktsize, r->modifier1, 0, 0, r->pid, r->worker_id,
                                r->core, r->requests, r->total};
    int i, ok = 1;

    args[R_ENV] = r->env;
    Py_INCREF(r->env);
    for (i = 1; i < R_FIELDS; i++) {
        if (i == R_STARTED || i == R_ELAPSED)
            args[i] = PyFloat_FromDouble(i == R_STARTED ? r->started : r->elapsed);
        else
            args[i] = PyLong_FromLongLong(ints[i]);
        ok = ok && args[i] != NULL;
    }
    if (ok)
        record = PyObject_Vectorcall(fp.RequestRecord, args, R_FIELDS, NULL);
    for (i = 0; i < R_FIELDS; i++)
        Py_XDECREF(args[i]);
    return record;
}

/* uwsgi_line(record) -> bytes | None: the line for a record.RequestRecord
 * (reqlog._default_emit, for the Python paths). */
PyObject *fp_uwsgi_line(PyObject *mod, PyObject *record)
{
    fp_record r;
    long long *ints[R_FIELDS] = {NULL, &r.status, &r.tx, &r.head_size, &r.headers_count,
                                 &r.nvars, &r.pktsize, &r.modifier1, NULL, NULL, &r.pid,
                                 &r.worker_id, &r.core, &r.requests, &r.total};
    int i;

    if (!PyTuple_Check(record) || PyTuple_GET_SIZE(record) != R_FIELDS ||
        !PyDict_Check(PyTuple_GET_ITEM(record, R_ENV))) {
        PyErr_SetString(PyExc_TypeError, "uwsgi_line(record): a record.RequestRecord");
        return NULL;
    }
    r.env = PyTuple_GET_ITEM(record, R_ENV);
    r.started = PyFloat_AsDouble(PyTuple_GET_ITEM(record, R_STARTED));
    r.elapsed = PyFloat_AsDouble(PyTuple_GET_ITEM(record, R_ELAPSED));
    for (i = 1; i < R_FIELDS; i++)
        if (ints[i] != NULL)
            *ints[i] = PyLong_AsLongLong(PyTuple_GET_ITEM(record, i));
    if (PyErr_Occurred())
        return NULL;
    return fp_default_line(&r);
}
