/*
 * uwsgigw._fastpath: the declarations its C files share.
 *
 * Each fastpath_*.c is its own translation unit and includes only this
 * header (and the decoder's), so the files can be read, and built, in any
 * order. What crosses into Python is declared in uwsgigw/wsgi/fastpath.py, the one
 * place that says what C may call: the hooks object's public methods, the
 * settings it reads once, the record and head tuples it builds.
 *
 *   fastpath.c           the module: init(), the state below, the method table
 *   fastpath_environ.c   var-name cache, environ, read_request, accept
 *   fastpath_exchange.c  Exchange: start_response/write, the response head
 *   fastpath_reqlog.c    the default request line from an fp_record
 *   fastpath_core.c      Core: a request without a body, start to end
 */
#ifndef UWSGIGW_FASTPATH_H
#define UWSGIGW_FASTPATH_H

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h>

#include <stdint.h>

#include "uwsgi_decoder.h"

/* ------------------------------------------------------------ state -- */

/* Everything the module shares: set once by init() and module creation,
 * then only read (the GIL is held whenever C touches Python objects). */
typedef struct {
    /* The Python pieces C defers to (uwsgigw/wsgi/fastpath.py passes them). */
    PyObject *ResponseError;      /* response.ResponseError */
    PyObject *HeadersAlreadySent; /* response.HeadersAlreadySent */
    PyObject *build_head;         /* response.build_head: explains what C refuses */
    PyObject *FileWrapper;        /* response.FileWrapper (the type) */
    PyObject *RequestHead;        /* request.RequestHead (a namedtuple type) */
    PyObject *RequestRecord;      /* record.RequestRecord (a namedtuple type) */
    /* CoreSlot field offsets and the size of its req text (scoreboard.py). */
    Py_ssize_t off_busy_since, off_requests, off_tx, off_rt_total, off_rt_count, off_req;
    Py_ssize_t req_size;
    /* Interned strings used per request. */
    PyObject *CONTENT_TYPE, *CONTENT_LENGTH, *HTTPS, *REQUEST_SCHEME, *url_scheme, *https,
        *SCRIPT_NAME, *PATH_INFO, *REMOTE_ADDR, *REMOTE_USER, *REQUEST_METHOD, *REQUEST_URI,
        *SERVER_PROTOCOL, *HEAD, *wsgi_input, *write, *comma, *semicolon, *start_response,
        *close, *env;
    /* The hooks' public method names (fastpath.CoreHooks). */
    PyObject *no_app, *app_failed, *close_failed, *send_file;
} fp_state;

extern fp_state fp;

/* One scratch for uwsgi_decode(): written and read within one call, with
 * the GIL held. The environ walks the validated packet in the caller's
 * buffer, never this scratch, because building it runs Python code. */
extern uwsgi_scratch fp_scratch;

double fp_now_monotonic(void);
double fp_now_realtime(void);
int fp_is_str(PyObject *v, const char *lit, Py_ssize_t n);

/* ----------------------------------------------------------- environ -- */

/* A request head as read_request() reads it (request.RequestHead's fields).
 * env is a new reference owned by whoever holds the struct. */
typedef struct {
    PyObject *env;
    long long length;    /* CONTENT_LENGTH, 0 when none */
    long long consumed;  /* bytes of the packet: 4 + datasize */
    long long nvars;     /* items: keys and values */
    long long modifier1;
    Py_ssize_t nread;    /* bytes in the buffer */
    Py_ssize_t held;     /* of which still in the kernel's queue (peeked) */
} fp_head;

enum { FP_HEAD = 0, FP_HANDOVER = 1, FP_TIMEOUT = 2, FP_ERROR = -1 };

/* Read, decode and build the environ (see fastpath_environ.c): FP_HEAD with
 * *out filled; FP_HANDOVER with out->nread bytes in buf (all consumed) for
 * Python to explain; FP_TIMEOUT; FP_ERROR with a Python error set. */
int fp_read_head(int fd, PyObject *buf, long long max_block, PyObject *base, double timeout,
                 fp_head *out);
PyObject *fp_head_tuple(fp_head *h); /* steals h->env; a RequestHead */

PyObject *fp_read_request(PyObject *mod, PyObject *const *args, Py_ssize_t nargs);
PyObject *fp_environ_from(PyObject *mod, PyObject *args);
PyObject *fp_accept(PyObject *mod, PyObject *arg);

/* ---------------------------------------------------------- exchange -- */

typedef struct {
    PyObject_HEAD
    int fd;
    int head_only;   /* no body goes out: HEAD, or a 204/304 answer */
    double timeout;
    PyObject *pending; /* (status, headers) once start_response ran */
    int sent;
    long long tx;
    int headers_count;
    int head_size;
    int status;
    int aborted; /* cut short after the head: close without finishing (ending.py) */
} Exchange;

extern PyTypeObject ExchangeType;

PyObject *fp_new_exchange(int fd, int head_only, double timeout);
PyObject *Exchange_send_result(Exchange *x, PyObject *result);

/* ------------------------------------------------------------ record -- */

/* The request record (record.RequestRecord) as C holds it; env borrowed. */
typedef struct {
    PyObject *env;
    long long status, tx, head_size, headers_count, nvars, pktsize, modifier1;
    double started, elapsed;
    long long pid, worker_id, core, requests, total;
} fp_record;

/* The default request line for r, as bytes with its newline; Py_None when a
 * string is not latin-1 (Python's formatter then escapes it); NULL on error. */
PyObject *fp_default_line(const fp_record *r);
PyObject *fp_record_tuple(const fp_record *r); /* a record.RequestRecord */
PyObject *fp_uwsgi_line(PyObject *mod, PyObject *record);

/* -------------------------------------------------------------- core -- */

extern PyTypeObject CoreType;

#endif /* UWSGIGW_FASTPATH_H */
