/*
 * uWSGI's default request line: part of csrc/fastpath.c, the one translation unit of
 * uwsgigw._fastpath. It is #included there (after the shared hooks and
 * interned strings) and never compiled alone.
 */

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
/* The line for one request; v: pid, requests, total, msecs, core. */
static PyObject *uwsgi_line(PyObject *env, long long info, Exchange *x, const long long v[5],
                            PyObject *ctime)
{
    PyObject *uri, *out;
    int i, rc = 0;
    char stack[2048];
    char *buf = stack;
    Py_ssize_t cap = sizeof stack, need = 512;
    out_buf o;

    uri = env_get(env, s_REQUEST_URI);
    if (uri == NULL || (PyUnicode_Check(uri) && PyUnicode_GET_LENGTH(uri) == 0))
        uri = env_get(env, s_PATH_INFO); /* env.get("REQUEST_URI") or PATH_INFO */
    if (PyErr_Occurred())
        return NULL;
    {   /* worst case: every byte escaped to 4 */
        PyObject *parts[6] = {env_get(env, s_REMOTE_ADDR), env_get(env, s_REMOTE_USER),
                              env_get(env, s_REQUEST_METHOD), uri,
                              env_get(env, s_SERVER_PROTOCOL), ctime};
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

static PyObject *fp_uwsgi_line(PyObject *mod, PyObject *const *args, Py_ssize_t nargs)
{
    long long info, v[5];
    int i;

    if (nargs != 9 || !PyDict_Check(args[0])) {
        PyErr_SetString(PyExc_TypeError, "uwsgi_line(env, info, exchange, pid, requests, "
                                         "total, ctime, msecs, core)");
        return NULL;
    }
    if (Py_TYPE(args[2]) != &ExchangeType)
        Py_RETURN_NONE; /* the Python exchange: reqlog formats it */
    info = PyLong_AsLongLong(args[1]);
    for (i = 0; i < 5; i++) /* pid, requests, total, msecs, core (skipping ctime) */
        v[i] = PyLong_AsLongLong(args[i < 3 ? 3 + i : 4 + i]);
    if (PyErr_Occurred())
        return NULL;
    return uwsgi_line(args[0], info, (Exchange *)args[2], v, args[6]);
}
