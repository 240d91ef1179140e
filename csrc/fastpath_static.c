/*
 * StaticCache: a repeat static-map hit answered in C on a uwsgi socket
 * (declarations in fastpath.h; the Python side in uwsgigw/cycle/static.py
 * and static_app.py).
 *
 * The Python lookup (cycle/static.py) stays the one place that decides what a
 * request gets. When its answer is a plain one -- a 200 whose head depends on
 * nothing but the file (no range, no condition, no gzip variant, no
 * time-based Expires), found in the first map the path matches -- the
 * picker stores it here under PATH_INFO: the directory descriptor and the
 * relative path it opened, the file's identity (st_dev, st_ino, mtime, size)
 * and the response head it built.
 *
 * A later request for that PATH_INFO (GET or HEAD, with no If-None-Match,
 * If-Modified-Since or Range) opens the same path beneath the same
 * directory with openat2(RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS), exactly
 * as the lookup does, fstat()s the descriptor and, when it is still a
 * regular file with the same identity, sends the stored head and the bytes
 * (pread + one sendmsg up to 64 KiB, sendfile above). Anything else -- the
 * open failing, another file, a condition to evaluate -- drops the entry
 * and hands the request to Python, which answers it and may store it again.
 * So nothing is ever answered from a stale path check: each hit is one
 * open, beneath the directory, and a check of the open descriptor.
 */
#include "fastpath.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdint.h>
#include <string.h>
#include <sys/sendfile.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <unistd.h>

/* Bounded so a crawler walking every URL (or every spelling of one: a raw
 * packet's PATH_INFO may be 64 KiB of "./") cannot grow a worker: when full,
 * the entries are dropped and refilled by the requests that come. */
#define FP_STATIC_MAX 2048
#define FP_STATIC_BYTES (1024 * 1024) /* keys and entries, about 3,000 common ones */
/* Up to this size the body is read and sent with the head in one sendmsg(),
 * as the Python responder does (static_app._SMALL). */
#define FP_STATIC_SMALL (64 * 1024)

/* One entry, packed in a bytes object: this header, then rel (NUL ended),
 * then the head. */
typedef struct {
    int dirfd;
    int headers_count;
    int accel; /* the head names the file for nginx (X-Accel-Redirect): no body, GET only */
    int rel_len, head_len;
    unsigned long long dev, ino;
    long long mtime_ns, size;
} fp_static_entry;

typedef struct {
    PyObject_HEAD
    PyObject *entries; /* PATH_INFO (str) -> packed entry (bytes) */
    Py_ssize_t bytes;  /* what the entries and their keys hold */
} StaticCache;

static Py_ssize_t entry_cost(PyObject *path, PyObject *packed)
{
    return PyUnicode_GET_LENGTH(path) + PyBytes_GET_SIZE(packed);
}

/* Drop path's entry (if any), keeping the byte count. */
static void drop(StaticCache *sc, PyObject *path)
{
    PyObject *old = PyDict_GetItemWithError(sc->entries, path);

    if (old != NULL) {
        sc->bytes -= entry_cost(path, old);
        if (PyDict_DelItem(sc->entries, path) < 0)
            PyErr_Clear();
    }
    PyErr_Clear();
}

static PyObject *IF_MODIFIED_SINCE, *IF_NONE_MATCH, *RANGE;

static int conditional(PyObject *env)
{
    /* A condition or a range needs static_rules: Python evaluates it. */
    return PyDict_GetItemWithError(env, IF_NONE_MATCH) != NULL ||
           PyDict_GetItemWithError(env, IF_MODIFIED_SINCE) != NULL ||
           PyDict_GetItemWithError(env, RANGE) != NULL || PyErr_Occurred();
}

/* As static_open.open_beneath: the kernel refuses a way out of dirfd. */
static int open_beneath(int dirfd, const char *rel)
{
    return fp_openat2(dirfd, rel, O_RDONLY | O_NONBLOCK | O_NOCTTY | O_CLOEXEC,
                      FP_RESOLVE_BENEATH | FP_RESOLVE_NO_MAGICLINKS);
}

/* sendfile() len bytes of fd from offset to x->fd, each wait bounded by
 * socket-timeout (SO_SNDTIMEO on the blocking socket, as handler.sendfile_all). */
static int send_file_bytes(Exchange *x, int fd, long long offset, long long len)
{
    struct timeval tv;
    off_t off = (off_t)offset;

    tv.tv_sec = (time_t)x->timeout;
    tv.tv_usec = (suseconds_t)((x->timeout - (double)tv.tv_sec) * 1e6);
    if (setsockopt(x->fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv) < 0) {
        PyErr_SetFromErrno(PyExc_OSError);
        return -1;
    }
    while (len > 0) {
        ssize_t n;
        Py_BEGIN_ALLOW_THREADS
        n = sendfile(x->fd, fd, &off, (size_t)len);
        Py_END_ALLOW_THREADS
        if (n < 0) {
            if (errno == EINTR) {
                if (PyErr_CheckSignals() < 0)
                    return -1;
                continue;
            }
            if (errno == EAGAIN || errno == EWOULDBLOCK)
                PyErr_Format(PyExc_TimeoutError,
                             "sendfile: no progress in %gs (socket-timeout)", x->timeout);
            else
                PyErr_SetFromErrno(PyExc_OSError);
            return -1;
        }
        if (n == 0)
            break; /* the file shrank: the body stays short */
        x->tx += n;
        x->body_sent += n;
        len -= n;
    }
    if (len > 0)
        x->aborted = 1; /* close without finishing: nginx sees the cut */
    return 0;
}

/* Head (and for a small file the body) in one sendmsg(); then sendfile. */
static int send_hit(Exchange *x, const fp_static_entry *e, const char *head, int fd)
{
    struct iovec iov[2];
    char *body = NULL;
    long long size = e->size;
    int cnt = 1, rc;

    iov[0].iov_base = (void *)head;
    iov[0].iov_len = (size_t)e->head_len;
    x->sent = 1;
    x->status = 200;
    x->head_size = e->head_len;
    x->headers_count = e->headers_count;
    if (x->head_only || e->accel)
        return fp_send_iov(x, iov, 1);
    if (size > 0 && size <= FP_STATIC_SMALL) {
        ssize_t got;
        body = PyMem_RawMalloc((size_t)size);
        if (body == NULL) {
            PyErr_NoMemory();
            return -1;
        }
        Py_BEGIN_ALLOW_THREADS
        got = pread(fd, body, (size_t)size, 0);
        Py_END_ALLOW_THREADS
        if (got < 0) {
            PyErr_SetFromErrno(PyExc_OSError);
            PyMem_RawFree(body);
            return -1;
        }
        iov[1].iov_base = body;
        iov[1].iov_len = (size_t)got;
        cnt = 2;
        rc = fp_send_iov(x, iov, cnt);
        PyMem_RawFree(body);
        if (rc == 0) {
            x->body_sent = got;
            if (got < size)
                x->aborted = 1; /* the file shrank meanwhile: a visible cut */
        }
        return rc;
    }
    if (fp_send_iov(x, iov, 1) < 0)
        return -1;
    return send_file_bytes(x, fd, 0, size);
}

/* 1: answered here; 0: Python answers (nothing sent); -1: an error set
 * after the answer began (the caller's failure turn explains it). */
int fp_static_serve(PyObject *cache, Exchange *x, PyObject *env)
{
    StaticCache *sc = (StaticCache *)cache;
    PyObject *method, *path, *packed;
    const fp_static_entry *e;
    const char *rel;
    struct stat st;
    int fd, rc;

    if (PyDict_GET_SIZE(sc->entries) == 0)
        return 0; /* nothing stored yet: an app request pays no lookup */
    method = PyDict_GetItemWithError(env, fp.REQUEST_METHOD);
    path = PyDict_GetItemWithError(env, fp.PATH_INFO);
    if (method == NULL || path == NULL || !PyUnicode_CheckExact(path))
        goto python;
    if (!(fp_is_str(method, "GET", 3) || fp_is_str(method, "HEAD", 4)))
        goto python;
    packed = PyDict_GetItemWithError(sc->entries, path);
    if (packed == NULL || conditional(env))
        goto python;
    Py_INCREF(packed); /* held: dropping the entry below must not free it */
    e = (const fp_static_entry *)PyBytes_AS_STRING(packed);
    rel = (const char *)(e + 1);
    if (e->accel && x->head_only) {
        Py_DECREF(packed);
        goto python; /* a HEAD gets the file's own headers (static_app) */
    }
    fd = open_beneath(e->dirfd, rel);
    if (fd < 0) {
        rc = 0;
    } else if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode) ||
               (unsigned long long)st.st_dev != e->dev ||
               (unsigned long long)st.st_ino != e->ino || (long long)st.st_size != e->size ||
               (long long)st.st_mtim.tv_sec * 1000000000LL + st.st_mtim.tv_nsec != e->mtime_ns) {
        rc = 0;
    } else {
        rc = send_hit(x, e, rel + e->rel_len + 1, fd) < 0 ? -1 : 1;
    }
    if (fd >= 0)
        close(fd);
    if (rc == 0)
        drop(sc, path); /* (gone already when a concurrent miss dropped it) */
    Py_DECREF(packed);
    return rc;
python:
    PyErr_Clear(); /* an odd environ only means Python answers */
    return 0;
}

/* put(path_info, dirfd, rel, dev, ino, mtime_ns, size, status, headers, accel) */
static PyObject *StaticCache_put(StaticCache *sc, PyObject *args)
{
    PyObject *path, *rel, *status, *headers, *head, *packed;
    fp_static_entry e;
    unsigned long long dev, ino;
    long long mtime_ns, size;
    int dirfd, accel, count = 0;
    char *w;

    if (!PyArg_ParseTuple(args, "UiSKKLLUOp:put", &path, &dirfd, &rel, &dev, &ino, &mtime_ns,
                          &size, &status, &headers, &accel))
        return NULL;
    if ((size_t)PyBytes_GET_SIZE(rel) != strlen(PyBytes_AS_STRING(rel)))
        Py_RETURN_FALSE; /* a NUL inside: never a file */
    head = fp_uwsgi_head(status, headers, &count);
    if (head == NULL) {
        if (PyErr_Occurred())
            return NULL;
        Py_RETURN_FALSE; /* not plainly valid: the Python responder explains it */
    }
    memset(&e, 0, sizeof e);
    e.dirfd = dirfd;
    e.headers_count = count;
    e.accel = accel;
    e.rel_len = (int)PyBytes_GET_SIZE(rel);
    e.head_len = (int)PyBytes_GET_SIZE(head);
    e.dev = dev;
    e.ino = ino;
    e.mtime_ns = mtime_ns;
    e.size = size;
    packed = PyBytes_FromStringAndSize(NULL, (Py_ssize_t)sizeof e + e.rel_len + 1 + e.head_len);
    if (packed == NULL) {
        Py_DECREF(head);
        return NULL;
    }
    w = PyBytes_AS_STRING(packed);
    memcpy(w, &e, sizeof e);
    memcpy(w + sizeof e, PyBytes_AS_STRING(rel), (size_t)e.rel_len + 1);
    memcpy(w + sizeof e + e.rel_len + 1, PyBytes_AS_STRING(head), (size_t)e.head_len);
    Py_DECREF(head);
    if (entry_cost(path, packed) > FP_STATIC_BYTES / 16) {
        Py_DECREF(packed); /* a path this long is an odd spelling: not worth a place */
        Py_RETURN_FALSE;
    }
    drop(sc, path);
    if (PyDict_GET_SIZE(sc->entries) >= FP_STATIC_MAX ||
        sc->bytes + entry_cost(path, packed) > FP_STATIC_BYTES) {
        PyDict_Clear(sc->entries);
        sc->bytes = 0;
    }
    if (PyDict_SetItem(sc->entries, path, packed) < 0) {
        Py_DECREF(packed);
        return NULL;
    }
    sc->bytes += entry_cost(path, packed);
    Py_DECREF(packed);
    Py_RETURN_TRUE;
}

static PyObject *StaticCache_clear_method(StaticCache *sc, PyObject *noargs)
{
    PyDict_Clear(sc->entries);
    sc->bytes = 0;
    Py_RETURN_NONE;
}

static Py_ssize_t StaticCache_len(StaticCache *sc)
{
    return PyDict_GET_SIZE(sc->entries);
}

static int StaticCache_init(StaticCache *sc, PyObject *args, PyObject *kw)
{
    if (!PyArg_ParseTuple(args, ":StaticCache"))
        return -1;
    if (IF_NONE_MATCH == NULL) {
        IF_NONE_MATCH = PyUnicode_InternFromString("HTTP_IF_NONE_MATCH");
        IF_MODIFIED_SINCE = PyUnicode_InternFromString("HTTP_IF_MODIFIED_SINCE");
        RANGE = PyUnicode_InternFromString("HTTP_RANGE");
        if (IF_NONE_MATCH == NULL || IF_MODIFIED_SINCE == NULL || RANGE == NULL)
            return -1;
    }
    Py_XSETREF(sc->entries, PyDict_New());
    sc->bytes = 0;
    return sc->entries == NULL ? -1 : 0;
}

static int StaticCache_traverse(StaticCache *sc, visitproc visit, void *arg)
{
    Py_VISIT(sc->entries);
    return 0;
}

static int StaticCache_tp_clear(StaticCache *sc)
{
    Py_CLEAR(sc->entries);
    return 0;
}

static void StaticCache_dealloc(StaticCache *sc)
{
    PyObject_GC_UnTrack(sc);
    StaticCache_tp_clear(sc);
    Py_TYPE(sc)->tp_free((PyObject *)sc);
}

static PyMethodDef StaticCache_methods[] = {
    {"put", (PyCFunction)StaticCache_put, METH_VARARGS,
     "put(path_info: str, dirfd: int, rel: bytes, dev, ino, mtime_ns, size, status: str, "
     "headers: list[(str, str)], accel: bool) -> bool: store a plain 200 answer (False "
     "when its head is not plainly valid: not stored)"},
    {"clear", (PyCFunction)StaticCache_clear_method, METH_NOARGS, "drop every entry"},
    {NULL}};

static PySequenceMethods StaticCache_as_sequence = {
    .sq_length = (lenfunc)StaticCache_len,
};

PyTypeObject StaticCacheType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "uwsgigw._fastpath.StaticCache",
    .tp_doc = "StaticCache(): plain static-map answers a uwsgi socket's Core sends again "
              "after reopening and checking the file (csrc/fastpath_static.c)",
    .tp_basicsize = sizeof(StaticCache),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)StaticCache_init,
    .tp_dealloc = (destructor)StaticCache_dealloc,
    .tp_traverse = (traverseproc)StaticCache_traverse,
    .tp_clear = (inquiry)StaticCache_tp_clear,
    .tp_methods = StaticCache_methods,
    .tp_as_sequence = &StaticCache_as_sequence,
};
