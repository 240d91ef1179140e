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
 *   fastpath_http.c      Core.serve_http: the same on an HTTP connection
 *   fastpath_httpparse.c the restricted HTTP/1.1 request-head parser
 *   fastpath_httphead.c  HTTP response framing: the head, Date, chunks
 *   fastpath_wire.c      sending a response within socket-timeout; tchar
 *   fastpath_static.c    StaticCache: a repeat static-map hit answered in C
 */
#ifndef UWSGIGW_FASTPATH_H
#define UWSGIGW_FASTPATH_H

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h>

#include <stdint.h>
#include <sys/uio.h>

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
    /* HTTP: framing.http_head (explains what C refuses) and the strings it needs. */
    PyObject *http_head, *GET, *QUERY_STRING, *SERVER_NAME, *SERVER_PORT, *REMOTE_PORT,
        *HTTP_1_0, *HTTP_1_1, *empty;
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

/* The var-name cache (a new reference to the str for key bytes p[0:n]) and
 * one request var put into the environ, joining repeats (1 when joined). */
#define FP_MAX_BASE_SEEN 64
PyObject *fp_key_str(const char *p, uint32_t n);
int fp_put_var(PyObject *env, PyObject *base, PyObject *k, PyObject *v, PyObject **seen,
               int *nseen);
void fp_release_seen(PyObject **seen, int nseen);

PyObject *fp_read_request(PyObject *mod, PyObject *const *args, Py_ssize_t nargs);
PyObject *fp_environ_from(PyObject *mod, PyObject *args);
PyObject *fp_accept(PyObject *mod, PyObject *arg);

/* ---------------------------------------------------------- exchange -- */

/* How an HTTP response body goes (cycle/framing.py's modes). */
enum { FP_BODY_LENGTH = 0, FP_BODY_CHUNKED = 1, FP_BODY_CLOSE = 2, FP_BODY_NONE = 3 };

typedef struct {
    PyObject_HEAD
    int fd;
    int head_only;   /* no body goes out: HEAD, or a 204/304 answer */
    /* On an HTTP socket the server frames the body (framing.py); on a uwsgi
     * socket nginx does. http: 0 (uwsgi), 10 or 11 (the request's version). */
    int http;
    int keep_alive;  /* HTTP: the connection may carry another request */
    int mode;        /* HTTP: FP_BODY_* once the head went out */
    long long length, body_sent; /* HTTP: Content-Length, body bytes sent */
    const int *stop_flag; /* HTTP: non-zero once a stop signal came: Connection: close */
    double timeout;
    PyObject *pending; /* (status, headers) once start_response ran */
    int sent;
    long long tx;
    int headers_count;
    int head_size;
    int status;
    int aborted; /* cut short after the head: close without finishing (ending.py) */
    /* HTTP: the body goes on from the event loop (a sendfile the client was
     * slow to take: http_front.py); serve_http stops the batch there. */
    int offloaded;
} Exchange;

extern PyTypeObject ExchangeType;

PyObject *fp_new_exchange(int fd, int head_only, double timeout);
PyObject *Exchange_send_result(Exchange *x, PyObject *result);
/* HTTP: end the body (the last chunk; a short Content-Length aborts). */
int fp_http_finish(Exchange *x);
int fp_send_iov(Exchange *x, struct iovec *iov, int cnt);
/* The uwsgi socket's head for (status, headers) when every part is plainly
 * valid; else NULL, with an error set only for MemoryError. */
PyObject *fp_uwsgi_head(PyObject *status, PyObject *headers, int *count);
extern const unsigned char fp_token_chars[256]; /* RFC 9110 tchar */

/* The HTTP head of x->pending's (status, headers) as framing.http_head
 * builds it, setting x's mode, length, keep_alive; NULL with an error set. */
PyObject *fp_http_head(Exchange *x, PyObject *status, PyObject *headers, int *count);
/* Up to 16 bytes "%x\r\n" for a chunk of n bytes into out; its length. */
int fp_chunk_size_line(char *out, size_t n);

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

typedef struct {
    PyObject_HEAD
    PyObject *hooks;     /* handler.ConnectionHandler: no_app, app_failed, ... and env */
    PyObject *settings;  /* fastpath.CoreSettings: keeps what C points into alive */
    PyObject *buf;       /* the read buffer (bytearray) */
    PyObject *base;      /* base environ */
    PyObject *pick_app;
    PyObject *new_input; /* io.BytesIO */
    PyObject *emit;      /* reqlog's emitter for the record, or None */
    long long max_block;
    double timeout;
    char *slot;          /* this core's scoreboard slot (scoreboard.CoreSlot) */
    uint64_t *total;     /* the server's request count, in shared memory */
    int track_requests;  /* write "METHOD URI" to the slot (harakiri logs it) */
    int line_fd;         /* >= 0: write the default line here; -1: emit */
    long long pid, worker_id, core;
    /* HTTP sockets (fastpath_http.c) */
    PyObject *forwarded; /* forwarded(env): X-Forwarded-* from a trusted peer */
    int http_keepalive;  /* http-keepalive: 0 closes after every answer */
    const int *stop_flag; /* set by the worker's stop-signal handler, or NULL */
    PyObject *static_cache; /* a StaticCache (uwsgi sockets), or None */
} Core;

/* ------------------------------------------------------ static cache -- */

extern PyTypeObject StaticCacheType;
/* openat2(2) (fastpath_open.c): the descriptor or -errno; GIL released. */
#define FP_RESOLVE_NO_MAGICLINKS 0x02
#define FP_RESOLVE_BENEATH 0x08
int fp_openat2(int dirfd, const char *path, unsigned long long flags,
               unsigned long long resolve);
/* 1: the request was a repeat static hit, answered; 0: not one, nothing
 * sent; -1: an error set once the answer began (fastpath_static.c). */
int fp_static_serve(PyObject *cache, Exchange *x, PyObject *env);

#define SLOT(c, off, type) (*(type *)((c)->slot + (off)))

int fp_run_app(Core *c, PyObject *x, PyObject *env);
void fp_track(Core *c, PyObject *env);
void fp_account(Core *c, fp_record *r, long long tx, double elapsed);
int fp_log_request(Core *c, const fp_record *r);
/* A request's end both C drivers share: the hooks' env cleared and, when
 * it ran (rc == 0), r -- env, nvars, pktsize, modifier1, started filled by
 * the caller -- completed from e, counted and logged. rc, or -1. */
int fp_end_request(Core *c, Exchange *e, fp_record *r, int rc);
PyObject *fp_core_serve_http(Core *c, PyObject *const *args, Py_ssize_t nargs);
PyObject *fp_core_read_http(Core *c, PyObject *const *args, Py_ssize_t nargs);
PyObject *fp_core_run_http(Core *c, PyObject *const *args, Py_ssize_t nargs);

extern PyTypeObject CoreType;

/* -------------------------------------------------------------- http -- */

/* A request head the C parser took (fastpath_http.c): GET or HEAD, no body,
 * nothing unusual; anything else it declines and llhttp parses. */
#define FP_HTTP_MAX_FIELDS 100
#define FP_HTTP_MAX_NAME 128
typedef struct {
    const char *name, *value;
    uint32_t nlen, vlen;
} fp_hfield;

typedef struct {
    const char *target;
    uint32_t tlen;
    int head;         /* HEAD, else GET */
    int v10;          /* HTTP/1.0, else 1.1 */
    int keep_alive;   /* what the request allows */
    int host;         /* index of Host in f, -1 when none */
    int forwarded;    /* X-Forwarded-For or -Proto is among the fields */
    int nfields;
    size_t head_len;  /* bytes through the blank line */
    long long size;   /* line + fields as protocol/http.py counts them */
    fp_hfield f[FP_HTTP_MAX_FIELDS];
} fp_http_req;

enum { FP_HTTP_MORE = 0, FP_HTTP_DONE = 1, FP_HTTP_DECLINE = -1 };
int fp_http_parse(const char *buf, size_t n, size_t max_head, fp_http_req *r);
/* Is f's name ``lit`` (lower-case letters and '-', n of them), in any case? */
int fp_field_is(const fp_hfield *f, const char *lit, uint32_t n);
PyObject *fp_http_parse_py(PyObject *mod, PyObject *args);
PyObject *fp_http_environ_py(PyObject *mod, PyObject *args);
PyObject *fp_http_date_py(PyObject *mod, PyObject *noargs);
PyObject *fp_openat2_py(PyObject *mod, PyObject *const *args, Py_ssize_t nargs);
PyObject *fp_http_frame_py(PyObject *mod, PyObject *const *args, Py_ssize_t nargs);


#endif /* UWSGIGW_FASTPATH_H */
