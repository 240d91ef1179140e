/*
 * HTTP response framing in C: cycle/framing.py's http_head for the common
 * response, the Date header, chunk size lines (declarations in fastpath.h).
 *
 * On an HTTP socket the server frames the body: the app's Content-Length
 * as given, else chunked (HTTP/1.1) or close-delimited (HTTP/1.0), nothing
 * for HEAD/204/304; a Date header unless the app sent one; Connection as
 * the request and the server allow. The C builder takes responses whose
 * headers are plainly valid and carry no hop-by-hop field; any other goes
 * to framing.http_head, the one place that explains and decides the rest
 * (tests/test_http_fast.py checks the two give the same bytes).
 */
#include "fastpath.h"

#include <string.h>
#include <time.h>

/* -------------------------------------------------------------- Date -- */

static const char days[7][4] = {"Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"};
static const char months[12][4] = {"Jan", "Feb", "Mar", "Apr", "May", "Jun",
                                   "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};
static time_t date_sec = -1;
static char date_text[30]; /* "Sun, 06 Nov 1994 08:49:37 GMT" (RFC 9110 5.6.7) */

/* The Date value of this second, formatted once per second (the GIL
 * serialises callers). Not strftime: %a and %b follow the locale. */
static const char *http_date(void)
{
    time_t now = time(NULL);
    struct tm tm;

    if (now != date_sec && gmtime_r(&now, &tm) != NULL) {
        snprintf(date_text, sizeof date_text, "%s, %02d %s %04d %02d:%02d:%02d GMT",
                 days[tm.tm_wday], tm.tm_mday, months[tm.tm_mon], tm.tm_year + 1900,
                 tm.tm_hour, tm.tm_min, tm.tm_sec);
        date_sec = now;
    }
    return date_text;
}

PyObject *fp_http_date_py(PyObject *mod, PyObject *noargs)
{
    return PyUnicode_FromString(http_date());
}

int fp_chunk_size_line(char *out, size_t n)
{
    return snprintf(out, 20, "%zx\r\n", n);
}

/* --------------------------------------------------------------- head -- */

static int latin1_str(PyObject *s)
{
    return PyUnicode_CheckExact(s) && PyUnicode_KIND(s) == PyUnicode_1BYTE_KIND;
}

static int clean(const unsigned char *d, Py_ssize_t n)
{
    return memchr(d, '\r', n) == NULL && memchr(d, '\n', n) == NULL &&
           memchr(d, '\0', n) == NULL;
}

static int lower_is(const unsigned char *p, Py_ssize_t n, const char *lit)
{
    Py_ssize_t i;
    for (i = 0; i < n; i++)
        if (lit[i] == '\0' || (p[i] | 0x20) != lit[i])
            return 0;
    return lit[n] == '\0';
}

/* framing._HOP_BY_HOP: the server's own framing fields. */
static int hop_by_hop(const unsigned char *p, Py_ssize_t n)
{
    switch (n) {
    case 2:
        return lower_is(p, n, "te");
    case 7:
        return lower_is(p, n, "trailer") || lower_is(p, n, "upgrade");
    case 10:
        return lower_is(p, n, "connection") || lower_is(p, n, "keep-alive");
    case 16:
        return lower_is(p, n, "proxy-connection");
    case 17:
        return lower_is(p, n, "transfer-encoding");
    }
    return 0;
}

#define PUT(w, s, n)             \
    do {                         \
        memcpy((w), (s), (n));   \
        (w) += (n);              \
    } while (0)

/* The head for the plainly valid response, or NULL without an error:
 * framing.http_head decides then. */
static PyObject *fast(Exchange *x, PyObject *status, PyObject *headers, int *count)
{
    const unsigned char *sd;
    Py_ssize_t sn, n, i, size;
    long long length = -1;
    int has_date = 0, mode, keep = x->keep_alive, extra = 0;
    PyObject *head;
    char *w;
    const char *date;

    if (!latin1_str(status) || !PyList_CheckExact(headers))
        return NULL;
    sd = PyUnicode_1BYTE_DATA(status);
    sn = PyUnicode_GET_LENGTH(status);
    if (sn < 3 || sd[0] < '2' || sd[0] > '9' || sd[1] < '0' || sd[1] > '9' ||
        sd[2] < '0' || sd[2] > '9' || (sn > 3 && sd[3] != ' ') || !clean(sd, sn) ||
        ((sd[0] == '2' || sd[0] == '3') && sd[1] == '0' && sd[2] == '4'))
        return NULL; /* 1xx, 204, 304 and anything odd: framing.py */
    n = PyList_GET_SIZE(headers);
    size = 9 + sn + 2 + 2;
    for (i = 0; i < n; i++) {
        PyObject *h = PyList_GET_ITEM(headers, i), *name, *value;
        const unsigned char *nd;
        Py_ssize_t nn, j;
        if (!PyTuple_CheckExact(h) || PyTuple_GET_SIZE(h) != 2)
            return NULL;
        name = PyTuple_GET_ITEM(h, 0);
        value = PyTuple_GET_ITEM(h, 1);
        if (!latin1_str(name) || !latin1_str(value))
            return NULL;
        nd = PyUnicode_1BYTE_DATA(name);
        nn = PyUnicode_GET_LENGTH(name);
        if (nn == 0 || !clean(PyUnicode_1BYTE_DATA(value), PyUnicode_GET_LENGTH(value)) ||
            hop_by_hop(nd, nn))
            return NULL;
        for (j = 0; j < nn; j++)
            if (!fp_token_chars[nd[j]])
                return NULL;
        if (nn == 14 && lower_is(nd, nn, "content-length")) {
            const unsigned char *vd = PyUnicode_1BYTE_DATA(value);
            Py_ssize_t vn = PyUnicode_GET_LENGTH(value);
            if (length >= 0 || vn == 0 || vn > 18)
                return NULL;
            length = 0;
            for (j = 0; j < vn; j++) {
                if (vd[j] < '0' || vd[j] > '9')
                    return NULL;
                length = length * 10 + (vd[j] - '0');
            }
        } else if (nn == 4 && lower_is(nd, nn, "date")) {
            has_date = 1;
        }
        size += nn + 2 + PyUnicode_GET_LENGTH(value) + 2;
    }
    if (x->head_only)
        mode = FP_BODY_NONE;
    else if (length >= 0)
        mode = FP_BODY_LENGTH;
    else if (x->http == 11)
        mode = FP_BODY_CHUNKED;
    else {
        mode = FP_BODY_CLOSE;
        keep = 0;
    }
    date = http_date();
    size += (mode == FP_BODY_CHUNKED ? 28 : 0) + (has_date ? 0 : 6 + 29 + 2) +
            (keep ? (x->http == 10 ? 24 : 0) : 19);
    head = PyBytes_FromStringAndSize(NULL, size);
    if (head == NULL)
        return NULL; /* MemoryError stays set */
    w = PyBytes_AS_STRING(head);
    PUT(w, "HTTP/1.1 ", 9);
    PUT(w, sd, sn);
    PUT(w, "\r\n", 2);
    if (PyList_GET_SIZE(headers) != n)
        goto give_up; /* making the bytes ran code that changed the list */
    for (i = 0; i < n; i++) {
        PyObject *h = PyList_GET_ITEM(headers, i);
        PyObject *name = PyTuple_GET_ITEM(h, 0), *value = PyTuple_GET_ITEM(h, 1);
        Py_ssize_t nn = PyUnicode_GET_LENGTH(name), vn = PyUnicode_GET_LENGTH(value);
        if (!PyTuple_CheckExact(h) || w + nn + vn + 4 > PyBytes_AS_STRING(head) + size)
            goto give_up;
        PUT(w, PyUnicode_1BYTE_DATA(name), nn);
        PUT(w, ": ", 2);
        PUT(w, PyUnicode_1BYTE_DATA(value), vn);
        PUT(w, "\r\n", 2);
    }
    if (mode == FP_BODY_CHUNKED) {
        PUT(w, "Transfer-Encoding: chunked\r\n", 28);
        extra++;
    }
    if (!has_date) {
        PUT(w, "Date: ", 6);
        PUT(w, date, 29);
        PUT(w, "\r\n", 2);
        extra++;
    }
    if (!keep) {
        PUT(w, "Connection: close\r\n", 19);
        extra++;
    } else if (x->http == 10) {
        PUT(w, "Connection: keep-alive\r\n", 24);
        extra++;
    }
    PUT(w, "\r\n", 2);
    if (w != PyBytes_AS_STRING(head) + size)
        goto give_up;
    x->mode = mode;
    x->length = length;
    x->keep_alive = keep;
    *count = (int)n + extra;
    return head;
give_up:
    Py_DECREF(head);
    return NULL;
}

/* framing.Framing's mode names, for what framing.http_head returns. */
static int mode_of(PyObject *name)
{
    if (fp_is_str(name, "length", 6))
        return FP_BODY_LENGTH;
    if (fp_is_str(name, "chunked", 7))
        return FP_BODY_CHUNKED;
    if (fp_is_str(name, "close", 5))
        return FP_BODY_CLOSE;
    return FP_BODY_NONE;
}

static long long int_attr(PyObject *o, const char *name)
{
    PyObject *v = PyObject_GetAttrString(o, name);
    long long r;
    if (v == NULL)
        return -2;
    r = PyLong_AsLongLong(v);
    Py_DECREF(v);
    return r;
}

int fp_http_finish(Exchange *x)
{
    if (!x->sent || x->aborted)
        return 0;
    if (x->mode == FP_BODY_CHUNKED) {
        struct iovec last = {"0\r\n\r\n", 5};
        x->mode = FP_BODY_NONE; /* once */
        return fp_send_iov(x, &last, 1);
    }
    if (x->mode == FP_BODY_LENGTH && x->body_sent < x->length)
        x->aborted = 1; /* fewer bytes than promised: the client must see the cut */
    else if (x->mode == FP_BODY_CLOSE)
        x->keep_alive = 0;
    return 0;
}

PyObject *fp_http_head(Exchange *x, PyObject *status, PyObject *headers, int *count)
{
    PyObject *framing, *head, *mode;
    long long n, length, keep;

    head = fast(x, status, headers, count);
    if (head != NULL || PyErr_Occurred())
        return head;
    framing = PyObject_CallFunction(fp.http_head, "OOsii", status, headers,
                                    x->http == 10 ? "1.0" : "1.1", x->head_only,
                                    x->keep_alive);
    if (framing == NULL)
        return NULL;
    head = PyObject_GetAttrString(framing, "head");
    mode = PyObject_GetAttrString(framing, "mode");
    n = int_attr(framing, "headers_count");
    length = int_attr(framing, "length");
    keep = int_attr(framing, "keep_alive");
    Py_DECREF(framing);
    if (head == NULL || mode == NULL || !PyBytes_Check(head) || PyErr_Occurred()) {
        if (!PyErr_Occurred())
            PyErr_SetString(PyExc_SystemError, "http_head must return a Framing");
        Py_XDECREF(head);
        Py_XDECREF(mode);
        return NULL;
    }
    x->mode = mode_of(mode);
    Py_DECREF(mode);
    x->length = length;
    x->keep_alive = keep != 0;
    if (x->mode == FP_BODY_NONE)
        x->head_only = 1;
    *count = (int)n;
    return head;
}

static const char *const mode_names[] = {"length", "chunked", "close", "none"};

/* _fastpath.http_frame(status, headers, version, head_only, keep_alive):
 * framing.http_head's answer for the plainly valid response, as a tuple
 * (head, headers_count, mode, length, keep_alive) -- or None, and
 * framing.py decides (framing.use_c_frame installs it). */
PyObject *fp_http_frame_py(PyObject *mod, PyObject *const *args, Py_ssize_t nargs)
{
    Exchange x;
    PyObject *head;
    int count = 0, head_only, keep;

    if (nargs != 5) {
        PyErr_SetString(PyExc_TypeError,
                        "http_frame(status, headers, version, head_only, keep_alive)");
        return NULL;
    }
    head_only = PyObject_IsTrue(args[3]);
    keep = PyObject_IsTrue(args[4]);
    if (head_only < 0 || keep < 0)
        return NULL;
    memset(&x, 0, sizeof x); /* only the fields fast() reads and writes */
    x.http = fp_is_str(args[2], "1.0", 3) ? 10 : 11;
    x.head_only = head_only;
    x.keep_alive = keep;
    head = fast(&x, args[0], args[1], &count);
    if (head == NULL) {
        if (PyErr_Occurred())
            return NULL;
        Py_RETURN_NONE;
    }
    return Py_BuildValue("(NisLO)", head, count, mode_names[x.mode], x.length,
                         x.keep_alive ? Py_True : Py_False);
}

