"""The request log and the master's event lines.

One line per request, written with one ``os.write`` on the server log (see
log.py for why that keeps concurrent writers apart):

- the uWSGI default line (what log parsers such as goaccess expect)::

    [pid: P|app: 0|req: R/T] ADDR (USER) {N vars in B bytes} [ctime] METHOD URI
    => generated X bytes in Y msecs (PROTO STATUS) H headers in HB bytes
    (1 switches on core C)

  built by a single ``%`` format, as uWSGI's ``uwsgi_logit_simple`` does;
- ``log-format`` with uWSGI's ``%(var)`` placeholders (``core/logging.c``,
  ``uwsgi_register_logchunks``). The format is compiled once at start-up
  into one generated function -- one ``%`` format over inline expressions,
  no per-request parsing or dict lookups by name. As in uWSGI an empty value
  is logged as ``-``, and a name uWSGI does not define (a "logvar" apps set
  through the uwsgi module, which uwsgigw has not) logs as ``-`` too;
- ``log-json``: one JSON object per line; with ``log-format`` its keys are
  the placeholders used there, otherwise a fixed set. Strings are escaped by
  the json module's C encoder (quotes, backslashes, control characters,
  non-ASCII as ``\\uXXXX``); the latin-1 native strings of PEP 3333 are read
  back as the UTF-8 the client almost always sent, when they are.

Text lines are written as the bytes the client sent (latin-1 round trip),
as uWSGI does, except ASCII control characters, which become ``\\xNN`` so a
forged User-Agent cannot add fake lines or drive the reader's terminal.

``disable-logging`` turns the request log off; ``log-4xx``, ``log-5xx`` and
``log-slow`` then still log what they select (uWSGI's ``log_request``).
``memory-report`` prefixes uWSGI's ``{address space usage: ...} {rss usage:
...}`` (read from /proc/self/statm after the request).

Every driver hands each finished request's :class:`uwsgigw.observe.record.RequestRecord`
to :data:`emit` (logging on) or :data:`emit_filtered` (``disable-logging``);
either is None when nothing can be logged, so a disabled log costs one
attribute load and a comparison per request. The default line has a C
formatter too (``fastpath.uwsgi_line``, handed over by the C backend when it
loads: :func:`use_c_line`); the C core then writes it without a Python call
(:func:`c_default_line`).

Master events (spawn, death, harakiri, recycle, reload) go through
:func:`event`: the usual text line, or with ``log-json`` the same message as
a JSON object with its fields.
"""

from __future__ import annotations

import codecs
import itertools
import json
import os
import re
import time
from typing import TYPE_CHECKING, Any, Callable

from .. import log
from .record import RequestRecord

if TYPE_CHECKING:
    from ..config.settings import Config

Emit = Callable[[RequestRecord], None]  # emit(record): format and write one line

_quote = json.encoder.encode_basestring_ascii  # C: '"..."' with \uXXXX escapes
_time = time.time
_CTRL = re.compile(r"[\x00-\x1f\x7f]")


def _ctrl_escape(match: re.Match) -> str:
    return "\\x%02x" % ord(match.group())


def write_text(line: str) -> None:
    """One request line as the client's bytes, control characters escaped.

    ``isprintable`` (C, ~0.3 us) passes the usual ASCII line; only a line
    with something else in it (UTF-8 bytes read as latin-1, controls) pays
    for the regex.
    """
    if not line.isprintable():
        line = _CTRL.sub(_ctrl_escape, line)
    try:
        os.write(log._fd, (line + "\n").encode("latin-1", "backslashreplace"))
    except OSError:
        pass


def write_json(line: str) -> None:
    """A JSON line is pure ASCII by construction."""
    try:
        os.write(log._fd, (line + "\n").encode("ascii"))
    except OSError:
        pass


# -- cheap per-second and per-process values ---------------------------------

def _per_second(make: Callable[[int], Any], doc: str) -> Callable[[float], Any]:
    """``make(whole seconds)``, computed once per second and reused.

    The cache is one tuple, read and replaced whole, so threads sharing it
    never see a time paired with another second's text.
    """
    cache = (-1, None)

    def per_second(t: float):
        nonlocal cache
        sec = int(t)
        cached = cache
        if cached[0] != sec:
            cached = cache = (sec, make(sec))
        return cached[1]

    per_second.__doc__ = doc
    return per_second


ctime = _per_second(time.ctime, "``time.ctime`` (uWSGI's ``[ctime]``), formatted once per second.")
ltime = _per_second(lambda sec: time.strftime("%d/%b/%Y:%H:%M:%S %z", time.localtime(sec)),
                    "Apache's time, uWSGI's ``%(ltime)``: ``09/May/2026:07:35:25 +0000``.")


_iso_cache: tuple[int, str, str] = (-1, "", "")


def iso_time(t: float) -> str:
    """ISO 8601 local time with milliseconds and offset, for JSON lines.

    Its own cache rather than _per_second: the milliseconds are added per
    call, and inlining the lookup keeps a JSON line ~100 ns cheaper."""
    global _iso_cache
    sec = int(t)
    cached = _iso_cache
    if cached[0] != sec:
        tm = time.localtime(sec)
        z = time.strftime("%z", tm)
        cached = _iso_cache = (sec, time.strftime("%Y-%m-%dT%H:%M:%S", tm),
                               z[:3] + ":" + z[3:] if len(z) == 5 else "Z")
    return "%s.%03d%s" % (cached[1], int((t - sec) * 1000), cached[2])


class _Process:
    """Per-process state, reset in a forked child (os.register_at_fork)."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        # Request ids: a random per-process prefix and a counter, ~0.1 us
        # (uuid4 per request costs a getrandom() syscall and ~1.5 us).
        self.prefix = os.urandom(6).hex()
        self.ids = itertools.count(1)
        self.statm_fd = -1


_proc = _Process()
os.register_at_fork(after_in_child=_proc.reset)
_PAGE = os.sysconf("SC_PAGE_SIZE")


def request_id(env: dict) -> str:
    """X-Request-ID from nginx (``uwsgi_param HTTP_X_REQUEST_ID $request_id``
    or the client's header), else ``<process prefix>-<n>``."""
    rid = env.get("HTTP_X_REQUEST_ID")
    if rid:
        return rid[:200]
    return "%s-%d" % (_proc.prefix, next(_proc.ids))


def statm() -> tuple[int, int]:
    """(vsz, rss) of this process in bytes: one pread of /proc/self/statm."""
    fd = _proc.statm_fd
    try:
        if fd < 0:  # opened per process: /proc/self is resolved at open time
            fd = _proc.statm_fd = os.open("/proc/self/statm", os.O_RDONLY | os.O_CLOEXEC)
        fields = os.pread(fd, 128, 0).split()
        return int(fields[0]) * _PAGE, int(fields[1]) * _PAGE
    except (OSError, IndexError, ValueError):
        return 0, 0


def memory_prefix() -> str:
    vsz, rss = statm()
    return "{address space usage: %d bytes/%dMB} {rss usage: %d bytes/%dMB} " % (
        vsz, vsz >> 20, rss, rss >> 20)


def json_text(value: str | None) -> str:
    """A PEP 3333 string as a JSON string (null when missing).

    The environ holds the request's bytes decoded as latin-1; they are
    almost always UTF-8, so non-ASCII values are shown as that text where
    they decode, and byte for byte (U+0080-U+00FF) where they do not.
    """
    if value is None:
        return "null"
    if not value.isascii():
        value = value.encode("latin-1", "replace").decode("utf-8", _BYTE_AS_LATIN1)
    return _quote(value)


def _byte_as_latin1(exc: UnicodeDecodeError) -> tuple[str, int]:
    # A byte that is not part of valid UTF-8 stays what latin-1 said it was.
    return exc.object[exc.start:exc.end].decode("latin-1"), exc.end


_BYTE_AS_LATIN1 = "uwsgigw-byte-as-latin1"
codecs.register_error(_BYTE_AS_LATIN1, _byte_as_latin1)


# -- the %(var) table ----------------------------------------------------------
#
# Each variable is a Python expression over ``r``, the RequestRecord the
# generated function receives (uwsgigw/observe/record.py lists its fields). "s" values
# log "-" when empty (uWSGI's rule); "n" values are numbers.

VARS: dict[str, tuple[str, str]] = {
    # uWSGI's "offsetof" variables: straight from the request
    "uri": ('r.env.get("REQUEST_URI")', "s"),
    "method": ('r.env.get("REQUEST_METHOD")', "s"),
    "user": ('r.env.get("REMOTE_USER")', "s"),
    "addr": ('r.env.get("REMOTE_ADDR")', "s"),
    "host": ('r.env.get("HTTP_HOST")', "s"),
    "proto": ('r.env.get("SERVER_PROTOCOL")', "s"),
    "uagent": ('r.env.get("HTTP_USER_AGENT")', "s"),
    "referer": ('r.env.get("HTTP_REFERER")', "s"),
    # uWSGI's functions
    "status": ("r.status", "n"),
    "rsize": ("r.tx - r.head_size", "n"),  # response body bytes
    "hsize": ("r.head_size", "n"),  # status line + headers bytes
    "size": ("r.tx", "n"),  # both
    "cl": ('int(r.env.get("CONTENT_LENGTH") or 0)', "n"),  # request body bytes
    "micros": ("int(r.elapsed * 1000000)", "n"),
    "msecs": ("int(r.elapsed * 1000)", "n"),
    "secs": ('"%f" % r.elapsed', "n"),
    "tmsecs": ("int(r.started * 1000)", "n"),  # start, epoch milliseconds
    "tmicros": ("int(r.started * 1000000)", "n"),
    "time": ("int(r.started)", "n"),  # start, epoch seconds
    "ltime": ("ltime(r.started)", "s"),
    "ftime": ("ltime(r.started)", "s"),  # uWSGI: ltime unless logformat-strftime
    "ctime": ("ctime(r.started)", "s"),
    "epoch": ("int(_time())", "n"),  # now
    "pid": ("r.pid", "n"),
    "wid": ("r.worker_id", "n"),
    "core": ("r.core", "n"),
    "switches": ("1", "n"),
    "vars": ("r.nvars", "n"),  # uWSGI counts keys and values
    "pktsize": ("r.pktsize", "n"),
    "modifier1": ("r.modifier1", "n"),
    "modifier2": ("0", "n"),  # the decoder refuses any other
    "headers": ("r.headers_count", "n"),
    "werr": ("0", "n"),
    "rerr": ("0", "n"),
    "ioerr": ("0", "n"),
    "vsz": ("statm()[0]", "n"),
    "rss": ("statm()[1]", "n"),
    "vszM": ("statm()[0] >> 20", "n"),
    "rssM": ("statm()[1] >> 20", "n"),
    # uwsgigw's own
    "request_id": ("request_id(r.env)", "s"),
    "req": ("r.requests", "n"),  # this core's requests (R in req: R/T)
    "total": ("r.total", "n"),  # the server's requests (T)
}
_NAMESPACE = {"ltime": ltime, "ctime": ctime, "statm": statm, "_time": _time,
              "request_id": request_id, "json_text": json_text, "iso_time": iso_time}
_PLACEHOLDER = re.compile(r"%\(([^)]*)\)")


def _expr(name: str) -> tuple[str, str]:
    """(expression, kind) for ``%(name)``; unknown names log "-" as in uWSGI."""
    if name in VARS:
        return VARS[name]
    if name.startswith("var.") and len(name) > 4:  # any request var
        return "r.env.get(%r)" % name[4:], "s"
    return '""', "s"  # a uWSGI logvar or metric.*: not available here


def unknown_names(fmt: str) -> list[str]:
    return [n for n in _PLACEHOLDER.findall(fmt)
            if n not in VARS and not (n.startswith("var.") and len(n) > 4)]


def _generate(body: str) -> Callable[..., str]:
    # The source is built only from the VARS table and repr() of the user's
    # text and names, so eval runs nothing the configuration wrote.
    return eval("lambda r: " + body, dict(_NAMESPACE))


def compile_format(fmt: str) -> Callable[[RequestRecord], str]:
    """``log-format`` -> f(record) -> the line."""
    pieces, exprs, pos = [], [], 0
    for m in _PLACEHOLDER.finditer(fmt):
        pieces.append(fmt[pos:m.start()].replace("%", "%%"))
        expr, kind = _expr(m.group(1))
        pieces.append("%s")
        exprs.append("(%s or '-')" % expr if kind == "s" else expr)
        pos = m.end()
    pieces.append(fmt[pos:].replace("%", "%%"))
    template = "".join(pieces)
    if not exprs:
        return _generate(repr(template.replace("%%", "%")))
    return _generate("%r %% (%s,)" % (template, ", ".join(exprs)))


# The JSON keys when log-format does not choose them (uWSGI's names).
JSON_FIELDS = ("request_id", "pid", "wid", "core", "addr", "user", "method", "uri",
               "proto", "status", "rsize", "hsize", "headers", "cl", "micros", "msecs",
               "host", "uagent", "referer", "req", "total")


def compile_json(names: list[str] | tuple[str, ...],
                 memory: bool = False) -> Callable[[RequestRecord], str]:
    """The JSON line for ``names`` -> f(record) -> the line."""
    parts, exprs = ['{"timestamp":%s,"type":"request"'], ["json_text(iso_time(r.started))"]
    seen = set()
    for name in ["request_id", "wid"] + list(names):
        if name in seen:
            continue
        seen.add(name)
        expr, kind = _expr(name)
        key = _quote(name).replace("%", "%%")
        if kind == "s":
            parts.append(",%s:%%s" % key)
            exprs.append("json_text(%s)" % expr)
        elif name == "secs":  # the only float
            parts.append(",%s:%%.6f" % key)
            exprs.append("r.elapsed")
        else:
            parts.append(",%s:%%d" % key)
            exprs.append(expr)
    if memory:
        parts.append(',"vsz":%d,"rss":%d')
        exprs += ["statm()[0]", "statm()[1]"]
    body = "%r %% (%s,)" % ("".join(parts) + "}", ", ".join(exprs))
    return _generate(body)


def _json_num(v: Any) -> str:
    if isinstance(v, float):
        return repr(round(v, 6))
    return str(int(v)) if not isinstance(v, str) else _quote(v)


# -- the default uWSGI line ----------------------------------------------------

_DEFAULT = ("[pid: %d|app: 0|req: %d/%d] %s (%s) {%d vars in %d bytes} [%s] %s %s => "
            "generated %d bytes in %d msecs (%s %d) %d headers in %d bytes "
            "(1 switches on core %d)")


def default_line(r: RequestRecord) -> str:
    """uWSGI's default line: one ``%`` format (logging.c, uwsgi_logit_simple)."""
    env = r.env
    return _DEFAULT % (
        r.pid, r.requests, r.total, env.get("REMOTE_ADDR", ""), env.get("REMOTE_USER", ""),
        r.nvars, r.pktsize, ctime(r.started), env.get("REQUEST_METHOD", ""),
        env.get("REQUEST_URI") or env.get("PATH_INFO", ""), r.tx - r.head_size,
        int(r.elapsed * 1000), env.get("SERVER_PROTOCOL", ""), r.status, r.headers_count,
        r.head_size, r.core)


# The default line's C formatter, fastpath.uwsgi_line: the C backend hands
# it over when it loads (wsgi/fastpath.py), so this module imports nothing
# above it. None: the Python formatter below.
_uwsgi_line_c: Callable[[RequestRecord], bytes | None] | None = None


def use_c_line(formatter: Callable[[RequestRecord], bytes | None]) -> None:
    """Format the default line with ``formatter`` (the C one) from now on."""
    global _uwsgi_line_c
    _uwsgi_line_c = formatter


def _default_emit(r: RequestRecord) -> None:
    # The default line for the Python paths: C builds it when it can
    # (latin-1 strings), else write_text's steps inline.
    data = None
    if _uwsgi_line_c is not None:
        data = _uwsgi_line_c(r)
    if data is None:
        line = default_line(r)
        if not line.isprintable():
            line = _CTRL.sub(_ctrl_escape, line)
        data = (line + "\n").encode("latin-1", "backslashreplace")
    try:
        os.write(log._fd, data)
    except OSError:
        pass


# -- configuration -------------------------------------------------------------

emit: Emit | None = _default_emit  # logging on (the default)
emit_filtered: Emit | None = None  # disable-logging: log-4xx/5xx/slow, or nothing
json_mode = False


def build_emit(fmt: str | None = None, as_json: bool = False,
               memory: bool = False) -> Emit:
    """The function that formats and writes one request line."""
    if as_json:
        names = [n for n in _PLACEHOLDER.findall(fmt)] if fmt else list(JSON_FIELDS)
        line = compile_json(names, memory)
        writer = write_json
    else:
        line = compile_format(fmt) if fmt else default_line
        writer = write_text
        if memory:
            base = line
            line = lambda r: memory_prefix() + base(r)  # noqa: E731
    if line is default_line and writer is write_text:
        return _default_emit

    def emit_line(r: RequestRecord) -> None:
        writer(line(r))
    return emit_line


def build_filter(inner: Emit, log_4xx: bool, log_5xx: bool, slow_ms: int) -> Emit | None:
    """uWSGI's conditional logging: what still gets logged under disable-logging."""
    if not (log_4xx or log_5xx or slow_ms):
        return None
    slow = slow_ms / 1000.0 if slow_ms else float("inf")

    def emit_selected(r: RequestRecord) -> None:
        status = r.status
        if ((log_4xx and 400 <= status < 500) or (log_5xx and 500 <= status < 600)
                or r.elapsed >= slow):
            inner(r)
    return emit_selected


def setup(cfg: Config) -> list[str]:
    """Compile the request log for ``cfg``; returns warnings for the log.

    With logging on, log-4xx/log-5xx/log-slow add nothing (every line is
    logged already), as in uWSGI.
    """
    global emit, emit_filtered, json_mode
    fmt = cfg.log_format or None
    json_mode = cfg.log_json
    line = build_emit(fmt, json_mode, cfg.memory_report)
    emit = None if cfg.disable_logging else line
    emit_filtered = build_filter(line, cfg.log_4xx, cfg.log_5xx, cfg.log_slow)
    return ["log-format: %%(%s) is not a uWSGI log variable uwsgigw knows; it logs as "
            "'-' (known: %s, var.NAME)" % (name, ", ".join(sorted(VARS)))
            for name in dict.fromkeys(unknown_names(fmt or ""))]


def emitter(log_requests: bool) -> Emit | None:
    """What a driver calls with each record: :data:`emit` with the request
    log on, else :data:`emit_filtered` (either may be None: nothing to log)."""
    return emit if log_requests else emit_filtered


def c_default_line(log_requests: bool) -> bool:
    """True when the line to write is the default one and C can build it:
    the C core then formats and writes it itself, with no Python call."""
    return emitter(log_requests) is _default_emit and _uwsgi_line_c is not None


# -- master events ---------------------------------------------------------------

_LEVELS = {"info": log.info, "warning": log.warning, "error": log.error}


def event(kind: str, msg: str, level: str = "info", **fields: Any) -> None:
    """A master event: the text line, or with log-json a JSON object.

    ``kind`` is spawn, death, harakiri, recycle, reload, cron or cheaper; ``fields`` are
    JSON scalars (worker, worker_pid, reason, ...).
    """
    if not json_mode:
        _LEVELS[level](msg)
        return
    now = _time()
    parts = ['{"timestamp":%s,"type":"event","event":%s,"level":%s,"pid":%d' % (
        _quote(iso_time(now)), _quote(kind), _quote(level), os.getpid())]
    for key, value in fields.items():
        if isinstance(value, bool) or value is None:
            text = json.dumps(value)
        elif isinstance(value, (int, float)):
            text = _json_num(value)
        else:
            text = json_text(str(value))
        parts.append(",%s:%s" % (_quote(key), text))
    parts.append(',"msg":%s}' % json_text(msg))
    write_json("".join(parts))


# -- ``python -m uwsgigw.observe.reqlog``: what a request line costs -----------------------------

def _bench(number: int = 100000) -> None:  # pragma: no cover - a measuring tool
    import timeit

    env = {"QUERY_STRING": "x=1&y=2", "REQUEST_METHOD": "GET", "CONTENT_TYPE": "",
           "CONTENT_LENGTH": "", "REQUEST_URI": "/path/to/page?x=1&y=2",
           "PATH_INFO": "/path/to/page", "SERVER_PROTOCOL": "HTTP/1.1",
           "REMOTE_ADDR": "127.0.0.1", "REMOTE_PORT": "40000", "SERVER_PORT": "80",
           "SERVER_NAME": "localhost", "HTTP_HOST": "localhost",
           "HTTP_USER_AGENT": "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 "
                              "(KHTML, like Gecko) Chrome/120.0 Safari/537.36",
           "HTTP_REFERER": "http://localhost/"}
    record = RequestRecord(env, 200, 1234, 120, 3, 2 * len(env),
                           sum(4 + len(k) + len(v) for k, v in env.items()), 0, _time(),
                           0.00123, os.getpid(), 1, 0, 10, 5)
    saved, log._fd = log._fd, os.open(os.devnull, os.O_WRONLY)
    combined = ('%(addr) - %(user) [%(ltime)] "%(method) %(uri) %(proto)" %(status) '
                '%(size) "%(referer)" "%(uagent)" %(msecs)')
    cases = [("default uWSGI line", build_emit(None)),
             ("log-format (Apache combined)", build_emit(combined)),
             ("log-json", build_emit(None, as_json=True)),
             ("log-json + memory-report", build_emit(None, as_json=True, memory=True)),
             ("disable-logging + log-5xx, a 200", build_filter(build_emit(None), False,
                                                               True, 0))]
    try:
        print("per request, formatting and os.write to /dev/null (%d runs):" % number)
        for name, fn in cases:
            seconds = min(timeit.repeat(lambda: fn(record), number=number, repeat=3))
            print("  %-34s %6.2f us" % (name, seconds / number * 1e6))
    finally:
        os.close(log._fd)
        log._fd = saved


if __name__ == "__main__":  # pragma: no cover
    _bench()
