"""The option table: every uwsgigw option, declared once.

Each ``Option`` carries its uWSGI name and aliases, short flag, kind (which
parser in ``optypes`` reads it), default, help text and status:

- ``implemented``: uwsgigw does what uWSGI does with it;
- ``mapped``: accepted because real configs carry it, and ``maps_to`` says
  what it amounts to in uwsgigw (``thunder-lock``: the kernel already wakes
  one worker per connection).

uWSGI options uwsgigw does not run at all live in ``uwsgi_compat`` with the
advice to give instead. The click command line (``cli``), the INI reader
(``ini``/``config``), the ``UWSGIGW_<NAME>`` environment variables and the
settings reference in README.md are all generated from these two tables
(gunicorn's ``config.py`` Setting table is the model).

``python -m uwsgigw.config.options`` prints the settings reference;
``python -m uwsgigw.config.options --write README.md`` refreshes the README block.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import Any, Callable

from . import options_static, optypes
from .uwsgi_compat import UNSUPPORTED, Unsupported, groups

IMPLEMENTED = "implemented"
MAPPED = "mapped"

# Kinds: which parser reads the text. Lists are ``multi=True`` of a kind.
BOOL, INT, SIZE, MEGABYTES, SECONDS, BUFFER = "bool", "int", "size", "megabytes", "seconds", "buffer"
TEXT, PATH, ANY, MODE, CHOICE, SOCKET = "text", "path", "any", "mode", "choice", "socket"
KEYVALUE, MOUNT, OWNER, PLUGIN = "keyvalue", "mount", "owner", "plugin"
NETWORKS = "networks"
BOOL_OR_ADDRESS = "bool-or-address"

README_START = "<!-- settings:start -->"
README_END = "<!-- settings:end -->"


@dataclass(frozen=True)
class Option:
    name: str
    kind: str
    default: Any
    help: str
    group: str
    aliases: tuple[str, ...] = ()
    short: str | None = None
    multi: bool = False
    status: str = IMPLEMENTED
    maps_to: str = ""
    minimum: int | None = 0
    choices: tuple[str, ...] = ()
    # What start-up warns about when missing on this machine: "dir", "file",
    # "map", "parent", "socket", "pythonpath", "user", "group", "owner" (--check
    # predicts them in preflight.py, as errors where start-up would stop).
    check: str | None = None
    metavar: str = "VALUE"
    flag_value: str | None = None  # CLI: the value of a bare --flag
    cli: bool = True

    @property
    def attr(self) -> str:
        return self.name.replace("-", "_")

    @property
    def env(self) -> str:
        return "UWSGIGW_" + self.name.upper().replace("-", "_")

    @property
    def names(self) -> tuple[str, ...]:
        return (self.name,) + self.aliases

    def parse(self, text: str, warn: optypes.Warn) -> Any:
        """One value (one INI line, one ``--flag VALUE``) -> its Python value."""
        return _PARSERS[self.kind](self, text, warn)

    def initial(self) -> Any:
        return list(self.default) if self.multi else self.default


def _plugin(opt: Option, text: str, warn: optypes.Warn) -> str:
    # uWSGI needs "plugin = python3" in distro builds; uwsgigw *is* the
    # Python plugin. Anything else (router_static, bonjour, a .so) is not here.
    value = optypes.check_text(text)
    for name in (p.strip() for p in value.split(",")):
        base = name.rsplit("/", 1)[-1].removesuffix("_plugin.so").removesuffix(".so")
        if name and not (base.startswith("python") or base in ("0", "wsgi")):
            warn("plugin %r is not available: uwsgigw runs Python WSGI apps and "
                 "has no uWSGI plugins" % name)
    return value


def _bool_or_address(opt: Option, text: str, warn: optypes.Warn) -> str | None:
    """uWSGI's ``stats-http`` is a flag; uwsgigw also takes an address there.

    Off words give None; an address (it has ``:``, ``/`` or ``@``) is checked
    like a socket; any other word is on, as for every uWSGI boolean.
    """
    value = text.strip()
    if value.lower() in optypes.FALSE_WORDS or value == "0":
        return None
    if any(c in value for c in ":/@"):
        return optypes.check_socket(value, warn)
    return "on"


def _int(what: str, example: str) -> Callable[[Option, str, optypes.Warn], int]:
    return lambda o, t, w: optypes.parse_int(t, w, minimum=o.minimum, what=what,
                                             example=example)


_PARSERS: dict[str, Callable[[Option, str, optypes.Warn], Any]] = {
    BOOL: lambda o, t, w: optypes.parse_bool(t),
    INT: _int("a whole number", "4"),
    SIZE: _int("a size in bytes", "8192"),
    MEGABYTES: _int("a number of megabytes", "512"),
    SECONDS: lambda o, t, w: optypes.parse_seconds(t, w),
    BUFFER: lambda o, t, w: optypes.parse_buffer_size(t, w),
    TEXT: lambda o, t, w: optypes.check_text(t),
    PATH: lambda o, t, w: optypes.check_text(t),
    ANY: lambda o, t, w: t,
    MODE: lambda o, t, w: optypes.parse_mode(t, w),
    CHOICE: lambda o, t, w: optypes.parse_choice(t, o.choices),
    SOCKET: lambda o, t, w: optypes.check_socket(t, w),
    KEYVALUE: lambda o, t, w: optypes.check_key_value(t),
    MOUNT: lambda o, t, w: optypes.check_mount(t),
    OWNER: lambda o, t, w: optypes.check_owner(t),
    PLUGIN: _plugin,
    BOOL_OR_ADDRESS: _bool_or_address,
    NETWORKS: lambda o, t, w: optypes.normalise(t),
    **options_static.PARSERS,
}

SOCKETS, APP, PROCS, REQS, HTTP, LOGS, RECYCLE, CONF, STATIC = (
    "Sockets", "Application", "Processes", "Requests", "HTTP sockets", "Logging",
    "Timeouts and recycling", "Configuration", "Static files")

OPTIONS: list[Option] = [
    # -- sockets -------------------------------------------------------------
    Option("socket", SOCKET, [], "bind to a unix socket path or TCP HOST:PORT / :PORT "
           "(repeat for more); nginx connects with uwsgi_pass", SOCKETS,
           aliases=("uwsgi-socket",), short="s", multi=True, check="socket",
           metavar="ADDRESS"),
    Option("http-socket", SOCKET, [], "bind an HTTP listener to a unix socket path or "
           "TCP HOST:PORT / :PORT (repeat for more): it speaks HTTP/1.1 (keep-alive, "
           "pipelining) to nginx proxy_pass, a load balancer or clients directly, served "
           "by the workers' event loop", SOCKETS,
           aliases=("http11-socket", "http"), multi=True, check="socket",
           metavar="ADDRESS"),
    Option("uwsgi-allow-from", NETWORKS, [], "accept TCP connections only from these "
           "peer networks (e.g. 127.0.0.1, 10.0.0.0/8, ::1; commas or repeat); others "
           "are closed unread and logged. Unix sockets are not filtered", SOCKETS,
           multi=True, metavar="NETWORKS"),
    Option("chmod-socket", MODE, "660", "permissions of unix sockets, three octal "
           "digits; given without a value: 666, as in uWSGI", SOCKETS,
           aliases=("chmod",), short="C", metavar="MODE", flag_value="666"),
    Option("chown-socket", OWNER, None, "owner of unix sockets, USER or USER:GROUP",
           SOCKETS, check="owner", metavar="USER[:GROUP]"),
    Option("listen", INT, 1024, "listen queue (backlog) of each socket; the kernel "
           "caps it at net.core.somaxconn", SOCKETS, short="l", minimum=1,
           metavar="N"),
    Option("protocol", CHOICE, "uwsgi", "protocol of the sockets", SOCKETS,
           aliases=("socket-protocol",), choices=("uwsgi",), status=MAPPED,
           maps_to="uwsgigw speaks the uwsgi protocol only; protocol = uwsgi is "
           "accepted, anything else is refused", metavar="uwsgi"),
    Option("decoder", CHOICE, "auto", "uwsgi packet decoder: auto (C, else Python), "
           "c (fail with an install hint if not built) or python", SOCKETS,
           choices=("auto", "c", "python"), metavar="auto|c|python"),
    # -- application ---------------------------------------------------------
    Option("module", TEXT, None, "import the WSGI app from MODULE or MODULE:CALLABLE "
           "(e.g. mysite.wsgi:application)", APP, aliases=("wsgi",), short="w",
           metavar="MODULE[:CALLABLE]"),
    Option("callable", TEXT, "application", "name of the WSGI callable when module or "
           "wsgi-file does not name one", APP, metavar="NAME"),
    Option("wsgi-file", PATH, None, "load the WSGI app from this Python file "
           "(relative to chdir)", APP, aliases=("file",), check="file",
           metavar="FILE"),
    Option("mount", MOUNT, [], "serve another app under a URL prefix: "
           "/PREFIX=module[:callable] (repeatable; the longest prefix wins)", APP,
           multi=True, metavar="/PREFIX=APP"),
    Option("manage-script-name", BOOL, False, "for mount: set SCRIPT_NAME to the "
           "prefix and strip it from PATH_INFO", APP),
    Option("chdir", PATH, None, "change to this directory before loading the app",
           APP, check="dir", metavar="DIR"),
    Option("home", PATH, None, "virtualenv to import the app from (its "
           "site-packages go on sys.path)", APP,
           aliases=("virtualenv", "venv", "pyhome"), short="H", check="dir",
           metavar="DIR"),
    Option("pythonpath", PATH, [], "add a directory (or a glob of them) to sys.path "
           "(repeatable)", APP, aliases=("python-path", "pp"), multi=True,
           check="pythonpath", metavar="DIR"),
    Option("env", KEYVALUE, [], "set an environment variable for the app: KEY=VALUE "
           "(repeatable)", APP, multi=True, metavar="KEY=VALUE"),
    Option("need-app", BOOL, True, "stop start-up when no app can be loaded", APP),
    Option("lazy-apps", BOOL, False, "load the app in each worker instead of once "
           "in the master before forking", APP, aliases=("lazy",)),
    Option("single-interpreter", BOOL, False, "use one Python interpreter", APP,
           short="i", status=MAPPED,
           maps_to="uwsgigw always runs one interpreter per process"),
    Option("enable-threads", BOOL, False, "let the app start threads", APP, short="T",
           status=MAPPED, maps_to="Python threads always work in uwsgigw"),
    Option("plugin", PLUGIN, [], "uWSGI plugins to load", APP,
           aliases=("plugins", "need-plugin", "need-plugins"), multi=True,
           status=MAPPED, maps_to="uwsgigw is itself the Python plugin: python/python3 "
           "is accepted, other plugins are not available", metavar="NAME"),
    # -- processes -----------------------------------------------------------
    Option("master", BOOL, False, "run a master process that supervises the workers",
           PROCS, short="M"),
    Option("processes", INT, 1, "number of worker processes", PROCS,
           aliases=("workers",), short="p", minimum=1, metavar="N"),
    Option("threads", INT, 1, "threads per worker (wsgi.multithread is true above 1)",
           PROCS, minimum=1, metavar="N"),
    Option("asgi", BOOL, False, "run the app(s) on the async worker: an asyncio event "
           "loop per worker (uvloop when installed); on by itself when a loaded callable "
           "is an ASGI app. WSGI apps next to it run in a pool of `threads` threads",
           PROCS),
    Option("async-concurrency", INT, 1000, "async worker: requests in flight per worker; "
           "at the limit it stops accepting and connections wait in the listen queue",
           PROCS, minimum=1, metavar="N"),
    Option("thunder-lock", BOOL, False, "serialize accept()", PROCS, status=MAPPED,
           maps_to="the kernel already wakes one worker per connection"),
    Option("die-on-term", BOOL, False, "exit on SIGTERM instead of reloading", PROCS,
           status=MAPPED, maps_to="SIGTERM is always a graceful stop in uwsgigw "
           "(what systemd and docker send)"),
    Option("uid", TEXT, None, "run the workers as this user (dropped after binding "
           "the sockets)", PROCS, check="user", metavar="USER"),
    Option("gid", TEXT, None, "run the workers as this group (dropped after binding "
           "the sockets)", PROCS, check="group", metavar="GROUP"),
    Option("pidfile", PATH, None, "write the master's pid to this file", PROCS,
           check="parent", metavar="FILE"),
    Option("vacuum", BOOL, False, "remove the unix sockets and the pidfile on exit; "
           "where the uid/gid dropped to may not (a root-owned /run directory, a sticky "
           "one), a tiny privileged process started before the drop removes them once "
           "the master has exited, even if it was killed", PROCS),
    Option("daemonize", PATH, None, "detach from the terminal and log to this file",
           PROCS, short="d", check="parent", metavar="LOGFILE"),
    Option("stats", SOCKET, None, "serve stats on this unix path or HOST:PORT: one JSON "
           "document per connection in uWSGI's schema, for uwsgitop and the Prometheus "
           "uwsgi exporters; served by the master", PROCS, aliases=("stats-server",),
           metavar="ADDRESS"),
    Option("stats-http", BOOL_OR_ADDRESS, None, "true: the stats socket speaks HTTP, as "
           "in uWSGI (GET / is the JSON, GET /metrics the same figures in Prometheus "
           "text format); an ADDRESS: serve that HTTP on its own socket, next to the "
           "plain stats socket", PROCS, metavar="true|ADDRESS", flag_value="true"),
    # -- requests ------------------------------------------------------------
    Option("buffer-size", BUFFER, 4096, "largest uwsgi vars block (request headers) "
           "accepted, in bytes; 65536 is read as 65535, the protocol maximum", REQS,
           short="b", metavar="BYTES"),
    Option("post-buffering", SIZE, 0, "request bodies of this many bytes or more are "
           "spooled to a temp file before the app runs (0: off)", REQS,
           metavar="BYTES"),
    Option("post-buffering-bufsize", SIZE, 8192, "read size while buffering a request "
           "body to disk; uwsgigw reads at least 256 KB at a time", REQS, minimum=1,
           metavar="BYTES"),
    Option("socket-timeout", SECONDS, 4.0, "timeout in seconds for every read and "
           "write on a connection: nginx's, or on an HTTP socket each read and write of a "
           "request body or a response", REQS, aliases=("http-timeout",), short="z",
           metavar="SECONDS"),
    Option("limit-post", SIZE, 0, "refuse request bodies larger than this many bytes "
           "with 413 (0: no limit)", REQS, metavar="BYTES"),
    # -- HTTP sockets --------------------------------------------------------
    Option("http-keepalive", BOOL, True, "keep HTTP/1.1 connections open between requests "
           "(as in uWSGI, 0 or off disables it; any other number is on)", HTTP),
    Option("http-keepalive-timeout", SECONDS, 75.0, "seconds a kept-alive HTTP connection "
           "may stay idle between requests; keep it above nginx's upstream "
           "keepalive_timeout (60 s), or nginx reuses a connection the server is closing",
           HTTP, metavar="SECONDS"),
    Option("http-headers-timeout", SECONDS, 60.0, "seconds a client has to send a whole "
           "request head (request line and headers), against slowloris; like nginx's "
           "client_header_timeout", HTTP, metavar="SECONDS"),
    Option("forwarded-allow-ips", NETWORKS, ["127.0.0.1/32", "::1/128"], "peers whose "
           "X-Forwarded-For and X-Forwarded-Proto are trusted on HTTP sockets (Gunicorn's "
           "and Uvicorn's name; commas or repeat; setting it replaces the default); peers "
           "of unix sockets are always trusted", HTTP, multi=True, metavar="NETWORKS"),
    Option("http-enable-proxy-protocol", BOOL, False, "every connection to an HTTP socket "
           "starts with a PROXY protocol header (v1 or v2, HAProxy's spec) from a TCP load "
           "balancer (HAProxy send-proxy, AWS NLB, nginx stream proxy_protocol on); its "
           "source address becomes REMOTE_ADDR/REMOTE_PORT and the address forwarded-allow-ips "
           "is checked against. A connection without a valid header within "
           "http-headers-timeout is closed and logged. Any peer may send it (as with nginx's "
           "listen ... proxy_protocol): let only the balancer reach the socket "
           "(uwsgi-allow-from)", HTTP, aliases=("enable-proxy-protocol",)),
    Option("http-auto-chunked", BOOL, False, "chunk responses without a length", HTTP,
           status=MAPPED, maps_to="on HTTP/1.1 a response without a length is always sent "
           "chunked"),
    Option("http-chunked-input", BOOL, False, "accept chunked request bodies", HTTP,
           status=MAPPED, maps_to="chunked request bodies are always de-chunked before the "
           "app reads them"),
    Option("http-manage-expect", BOOL, False, "answer Expect: 100-continue", HTTP,
           status=MAPPED, maps_to="Expect: 100-continue is always handled"),
    Option("http-raw-body", BOOL, False, "uWSGI's HTTP router: pass the request body to "
           "the backend as it comes, unparsed (for WebSockets and Icecast)", HTTP,
           status=MAPPED, maps_to="uwsgigw does not expose raw bodies: the app reads the "
           "body as HTTP framing delimits it; ignored"),
    Option("websockets-max-size", INT, 1024, "largest WebSocket message an ASGI app "
           "receives, in KB (as in uWSGI); a bigger one closes the connection with 1009 "
           "(message too big)", HTTP, minimum=1, metavar="KB"),
    Option("http-websockets", BOOL, False, "uWSGI's HTTP router: pass WebSocket upgrades "
           "on to the backend", HTTP, status=MAPPED, maps_to="WebSockets always work for "
           "ASGI apps on an HTTP socket (the websocket scope); a WSGI app gets an Upgrade "
           "request as a plain HTTP request"),
    Option("http-processes", INT, 1, "processes of uWSGI's separate HTTP router", HTTP,
           aliases=("http-workers",), status=MAPPED, maps_to="the HTTP listener runs in "
           "the workers (processes), there is no router process", metavar="N"),
    # -- logging -------------------------------------------------------------
    Option("logto", PATH, None, "write the log to this file instead of stderr", LOGS,
           check="parent", metavar="FILE"),
    Option("disable-logging", BOOL, False, "do not log requests (errors still are)",
           LOGS, short="L"),
    Option("log-format", ANY, None, "request log line with uWSGI's %(var) "
           "placeholders: addr, user, host, method, uri, proto, uagent, referer, "
           "status, size, rsize, hsize, headers, cl, msecs, micros, secs, time, ltime, "
           "ftime, ctime, epoch, tmsecs, tmicros, pid, wid, core, switches, vars, "
           "pktsize, modifier1, modifier2, rss, vsz, rssM, vszM, werr, rerr, ioerr, "
           "var.NAME (any request var), and uwsgigw's request_id, req, total; empty "
           "values log as -", LOGS, aliases=("logformat",), metavar="FORMAT"),
    Option("log-4xx", BOOL, False, "log 4xx responses even with disable-logging", LOGS),
    Option("log-5xx", BOOL, False, "log 5xx responses even with disable-logging", LOGS),
    Option("log-slow", INT, 0, "log requests that took this many milliseconds or more "
           "even with disable-logging (0: off)", LOGS, metavar="MSECS"),
    Option("log-json", BOOL, False, "write request lines, and the master's spawn, "
           "death, harakiri, recycle and reload events, as JSON objects (one per "
           "line; with log-format, its %(var) names are the keys); the request id "
           "comes from X-Request-ID or is generated", LOGS),
    Option("memory-report", BOOL, False, "add the worker's memory use to request "
           "log lines (uWSGI's {address space usage: ...} {rss usage: ...})", LOGS,
           short="m"),
    # -- timeouts and recycling ----------------------------------------------
    Option("harakiri", INT, 0, "kill a worker whose request runs longer than this "
           "many seconds, after dumping its threads' tracebacks (0: off)", RECYCLE,
           short="t", metavar="SECONDS"),
    Option("harakiri-verbose", BOOL, False, "log details about harakiri kills",
           RECYCLE),
    Option("max-requests", INT, 0, "recycle a worker gracefully after this many "
           "requests (0: never)", RECYCLE, short="R", metavar="N"),
    Option("max-requests-delta", INT, 0, "add worker id * this to each worker's "
           "max-requests, so they do not all recycle at once", RECYCLE, metavar="N"),
    Option("reload-on-rss", MEGABYTES, 0, "recycle a worker after a request when its "
           "resident memory exceeds this many megabytes (0: off)", RECYCLE,
           metavar="MB"),
    Option("reload-on-as", MEGABYTES, 0, "recycle a worker after a request when its "
           "address space exceeds this many megabytes (0: off)", RECYCLE,
           metavar="MB"),
    Option("worker-reload-mercy", INT, 60, "seconds a recycled or reloaded worker "
           "gets to finish its request before it is killed", RECYCLE,
           metavar="SECONDS"),
    Option("reload-mercy", INT, 60, "seconds the master waits for all workers "
           "during a reload or stop", RECYCLE, metavar="SECONDS"),
    # -- configuration -------------------------------------------------------
    Option("ini", TEXT, [], "load options from FILE or FILE:SECTION (default section "
           "[uwsgi]); repeatable, later files win", CONF, multi=True,
           metavar="FILE[:SECTION]"),
    Option("strict", BOOL, False, "make unknown options errors (uWSGI's strict "
           "mode; strict = true in an INI file does the same)", CONF),
    Option("set-placeholder", KEYVALUE, [], "define %(NAME) for INI files without "
           "making it an option: NAME=VALUE", CONF, aliases=("set-ph",),
           multi=True, metavar="NAME=VALUE"),
]
# -- static files: the rows live in options_static.py (only for this file's length)
OPTIONS += [Option(group=STATIC, **row) for row in options_static.ROWS]

BY_NAME: dict[str, Option] = {}
for _opt in OPTIONS:
    for _name in _opt.names:
        if _name in BY_NAME or _name in UNSUPPORTED:
            raise RuntimeError("option name declared twice: %s" % _name)
        BY_NAME[_name] = _opt
BY_ATTR: dict[str, Option] = {o.attr: o for o in OPTIONS}
BY_ENV: dict[str, Option] = {o.env: o for o in OPTIONS}


def find(key: str) -> Option | None:
    return BY_NAME.get(key)


def unsupported(key: str) -> Unsupported | None:
    return UNSUPPORTED.get(key)


def known_names() -> list[str]:
    """Every name uwsgigw recognises, for "did you mean" suggestions."""
    return sorted(set(BY_NAME) | set(UNSUPPORTED))


# -- settings reference ------------------------------------------------------

def _default_text(opt: Option) -> str:
    if opt.multi:
        return ", ".join(opt.default) or "(none)"
    if opt.default is None:
        return "(not set)"
    if isinstance(opt.default, bool):
        return "true" if opt.default else "false"
    if isinstance(opt.default, float) and opt.default.is_integer():
        return str(int(opt.default))
    return str(opt.default)


def _row(opt: Option) -> str:
    names = ", ".join("`%s`" % a for a in opt.aliases)
    if opt.short:
        names = ", ".join(filter(None, [names, "`-%s`" % opt.short]))
    text = opt.help
    if opt.multi:
        text += " (list)"
    if opt.status == MAPPED:
        text += ". **Accepted:** " + opt.maps_to
    return "| `%s` | %s | %s | %s |" % (opt.name, names or "", _default_text(opt),
                                        text.replace("|", "\\|"))


_INTRO = """\
Generated from `uwsgigw/config/options.py` by `python -m uwsgigw.config.options`; do not edit
by hand.

Every option can be set in the `[uwsgi]` section of an INI file
(`name = value`), on the command line (`--name value`, or `--name` for a
boolean) or in the environment as `UWSGIGW_<NAME>` (upper case, dashes as
underscores: `UWSGIGW_BUFFER_SIZE=8192`). Precedence: defaults < INI files
(in the order given) < environment < command line; every value goes through
the same validator. List options accumulate across INI lines and across
repeated command-line flags; a higher layer replaces a lower layer's list;
scalars take the last value. Booleans: `false`, `off`, `no` and `0` are off,
anything else (even an empty value, or the bare key) is on.

INI files follow uWSGI: `--ini FILE[:SECTION]` (default `[uwsgi]`), `ini =`
includes, `;`/`#` comment lines, magic variables (`%d %n %p %s %e %c %x %h %k
%%` ...), `$(ENV)`, `@(file)`, `%(key)` references to any key (also your own
placeholders) with uWSGI's `%(a + b)` arithmetic, and the
`if-env`/`if-not-env`/`if-opt`/`if-not-opt`/`if-exists`/`if-not-exists`/
`for`...`endif`/`endfor` blocks with `%(_)`. As in uWSGI, `%(key)` is
resolved after every file is read: the first value of that exact key wins
(it may be defined further down), and a reference to nothing is left as
written, which keeps `log-format`'s request-time `%(addr)`. Unlike uWSGI, a
` # comment` or ` ; comment` after a value is removed, Unicode blanks such as
U+00A0 count as spaces, and an unset `$(VAR)` leaves the line out with a
warning (uWSGI would use the text `$(VAR)` as the value).

Unknown keys are warnings naming the file and line (with the closest known
name); `--strict` or `strict = true` makes them errors. A key used only as a
`%(placeholder)` is not unknown. uWSGI options uwsgigw does not run are
warnings (never errors: the file is valid uWSGI) that say what to do instead;
they are listed after the options.

`uwsgigw --ini FILE --check` predicts start-up for the same command line and
environment, without serving: it exits 1 when start-up would stop, with one
error line on stderr for each reason, and 0 otherwise. Besides bad values,
missing includes and no socket (uwsgi or HTTP), it asks this machine what start-up
would: whether `logto`/`daemonize` and `pidfile` can be written, the decoder
is there, each unix socket's directory exists and is writable (and the path
is not another live socket), each TCP address can be bound (a moment's bind;
an address held by the server in `pidfile` is only a warning, for a check
before a reload), `uid`, `gid` and `chown-socket` name users and groups that
exist (and can be switched to), `chdir` and `home` exist, and the app
imports -- in a child process, after `env`, `chdir`, `home`, `pythonpath`
and the privilege drop, with the exception's last line as the error (a
warning with `need-app = false`). Such errors say "on this machine". What
does not stop start-up is a warning on stdout: a `pythonpath` that is not
there, a unix socket none of nginx's usual users (`www-data`, `nginx`,
`nobody`) could connect to, an import slower than 30 s (not checked). Only
sockets passed by systemd socket activation (`LISTEN_FDS` set) cannot be
checked before start-up: that is a warning that says so. `--print-config`
prints the effective configuration, with where each value came from."""


def settings_markdown() -> str:
    """The README's settings reference, generated from the tables."""
    out = [_INTRO]
    for group in (SOCKETS, APP, PROCS, REQS, HTTP, LOGS, RECYCLE, STATIC, CONF):
        out += ["", "### " + group, "", "| option | also | default | meaning |",
                "|---|---|---|---|"]
        out += [_row(o) for o in OPTIONS if o.group == group]
    out += ["", "### uWSGI options uwsgigw does not support", "",
            "| options | what to do instead |", "|---|---|"]
    for advice, names in groups():
        names = [n for n in names if n not in BY_NAME]
        if not names:
            continue
        out.append("| %s | %s |" % (", ".join("`%s`" % n for n in names), advice))
    return "\n".join(out) + "\n"


def replace_readme_block(readme: str) -> str:
    head, sep, rest = readme.partition(README_START)
    _, sep2, tail = rest.partition(README_END)
    if not sep or not sep2:
        raise ValueError("README has no %s ... %s block" % (README_START, README_END))
    return head + README_START + "\n" + settings_markdown() + README_END + tail


def main(argv: list[str]) -> int:
    if argv[:1] == ["--write"] and len(argv) == 2:
        with open(argv[1], encoding="utf-8") as f:
            text = f.read()
        with open(argv[1], "w", encoding="utf-8") as f:
            f.write(replace_readme_block(text))
        return 0
    if argv:
        sys.stderr.write("usage: python -m uwsgigw.config.options [--write README.md]\n")
        return 2
    sys.stdout.write(settings_markdown())
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
