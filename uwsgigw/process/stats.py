"""The stats server: uWSGI's JSON on a unix or TCP socket, HTTP and Prometheus.

``stats = ADDRESS``: each connection gets one JSON document and is closed,
in the schema of uWSGI's ``uwsgi_master_generate_stats`` (core/master_utils.c),
so ``uwsgitop`` and the Prometheus uwsgi exporters (timonwong/uwsgi_exporter's
``UwsgiStats``) read it unchanged. ``stats-http = true`` makes that socket
speak HTTP instead (as uWSGI does); ``stats-http = ADDRESS`` adds an HTTP
socket next to the plain one. Over HTTP, ``GET /metrics`` answers the same
figures in the Prometheus text format, with the metric names the exporter
uses (``uwsgi_worker_requests_total{worker_id="1"}`` ...), so dashboards
built for it work without running it.

The master serves it from its own loop, like uWSGI, but never blocks: the
sockets are non-blocking, the master's ``select`` waits on them next to its
wake-up pipe, a reply that does not fit the socket buffer at once waits for
the socket to become writable, and a connection gets ``CONNECTION_TIMEOUT``
seconds in all. No thread: the master forks workers, and a second thread in
a forking process is a hazard (locks held across fork).

Values come from the shared scoreboard (scoreboard.py), which the workers
update with plain memory writes, and from the kernel:

- ``rss``/``vsz``: /proc/<pid>/statm of each worker, read per document;
- ``listen_queue``: connections waiting in each listening socket's accept
  queue. TCP: ``getsockopt(TCP_INFO)``, whose ``tcpi_unacked`` is the queue
  and ``tcpi_sacked`` the backlog for a listening socket (uWSGI's
  ``get_tcp_info``). Unix: the kernel's sock_diag netlink interface
  (``UNIX_DIAG_RQLEN``, what ``ss -xl`` shows); uWSGI only has that on
  Unbit's patched kernels (``SIOBKLGQ``) and reports 0 elsewhere;
- ``listen_queue_errors``: as in uWSGI, the times the master found a queue
  full in its once-a-second check (each is also logged).

Per worker id the counters (requests, exceptions, tx, running_time) add up
over the processes that had that id, as uWSGI's do: the master folds a dead
worker's final figures into ``Master.carried``. ``delta_requests`` counts
since the current process started; ``respawn_count`` counts spawns, the
first included (uWSGI's meaning).
"""

from __future__ import annotations

import errno
import json
import os
import socket
import struct
import time

from .. import __version__, log
from ..observe.scoreboard import ACCEPTING, read_statm
from .sockets import Listener, bind_unix, parse_address
from .vacuum import remove_socket

CONNECTION_TIMEOUT = 5.0  # seconds a stats client gets, request and reply
MAX_CONNECTIONS = 64
MAX_REQUEST = 8192  # bytes of HTTP request head

# -- listen queues from the kernel -------------------------------------------------

_TCP_INFO_LEN = 104
_NETLINK_SOCK_DIAG = 4
_SOCK_DIAG_BY_FAMILY = 20
_NLM_F_REQUEST = 1
_NLMSG_ERROR = 2
_TCP_LISTEN = 10
_UDIAG_SHOW_RQLEN = 0x10
_UNIX_DIAG_RQLEN = 4
_NOCOOKIE = 0xFFFFFFFF


def tcp_queue(sock: socket.socket) -> tuple[int, int] | None:
    """(queued, backlog) of a listening TCP socket: TCP_INFO's tcpi_unacked and
    tcpi_sacked, which Linux fills with sk_ack_backlog/sk_max_ack_backlog."""
    try:
        info = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, _TCP_INFO_LEN)
    except OSError:
        return None
    if len(info) < 32:
        return None
    unacked, sacked = struct.unpack_from("=II", info, 24)
    return (unacked, sacked) if sacked else None  # 0: a kernel without it


def unix_queue(sock: socket.socket) -> tuple[int, int] | None:
    """(queued, backlog) of a listening unix socket via NETLINK_SOCK_DIAG:
    one exact lookup by inode with UDIAG_SHOW_RQLEN (rqueue: connections
    waiting for accept(); wqueue: the backlog)."""
    try:
        inode = os.fstat(sock.fileno()).st_ino
        with socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM, _NETLINK_SOCK_DIAG) as nl:
            nl.settimeout(0.5)
            req = struct.pack("=BBHIIIII", socket.AF_UNIX, 0, 0, 1 << _TCP_LISTEN, inode,
                              _UDIAG_SHOW_RQLEN, _NOCOOKIE, _NOCOOKIE)
            nl.sendto(struct.pack("=IHHII", 16 + len(req), _SOCK_DIAG_BY_FAMILY,
                                  _NLM_F_REQUEST, 1, 0) + req, (0, 0))
            data = nl.recv(8192)
    except OSError:  # no unix_diag in this kernel, or not allowed
        return None
    if len(data) < 32:
        return None
    length, kind = struct.unpack_from("=IH", data)
    if kind == _NLMSG_ERROR or struct.unpack_from("=I", data, 20)[0] != inode:
        return None
    offset = 32  # nlmsghdr (16) + unix_diag_msg (16), then rtattrs
    while offset + 4 <= min(length, len(data)):
        rta_len, rta_type = struct.unpack_from("=HH", data, offset)
        if rta_len < 4:
            break
        if rta_type == _UNIX_DIAG_RQLEN and rta_len >= 12:
            return struct.unpack_from("=II", data, offset + 4)
        offset += (rta_len + 3) & ~3
    return None


def socket_queue(sock: socket.socket) -> tuple[int, int]:
    """(queued, backlog) of any listening socket; (0, 0) when unknown."""
    found = unix_queue(sock) if sock.family == socket.AF_UNIX else tcp_queue(sock)
    return found or (0, 0)


# -- the document ---------------------------------------------------------------------

def _pick(procs: list, generation: int):
    """The process shown for a worker id: the current generation's, if any."""
    if not procs:
        return None
    return max(procs, key=lambda w: (w.generation == generation and not w.retiring,
                                     w.generation, w.spawned))


def _worker(master, wid: int, procs: list, cheap: bool = False) -> dict:
    shown = _pick(procs, master.generation)
    requests, exceptions, tx, rt_total = master.carried.get(wid, (0, 0, 0, 0.0, 0))[:4]
    for w in procs:
        for core in w.cores():
            requests += core.requests
            exceptions += core.exceptions
            tx += core.tx
            rt_total += core.rt_total
    respawns, harakiris = master.counts.get(wid, (0, 0))[:2]
    entry = {"id": wid, "pid": 0, "accepting": 0, "requests": requests,
             "delta_requests": 0, "exceptions": exceptions, "harakiri_count": harakiris,
             "signals": 0, "signal_queue": 0, "status": "cheap" if cheap else "idle",
             "rss": 0, "vsz": 0,
             "running_time": int(rt_total * 1e6), "last_spawn": 0,
             "respawn_count": respawns + (1 if shown else 0), "tx": tx, "avg_rt": 0,
             "apps": [], "cores": []}
    if shown is None:
        return entry
    slot, cores = shown.slot, shown.cores()
    delta = sum(c.requests for c in cores)
    timed = sum(c.rt_count for c in cores)
    mem = read_statm(shown.pid) or (0, 0)
    busy = any(c.busy_since for c in cores)
    entry.update(
        pid=shown.pid, accepting=int(slot.state == ACCEPTING and not shown.retiring),
        delta_requests=delta, signals=int(slot.signals),
        status="busy" if busy else "idle", rss=mem[0], vsz=mem[1],
        last_spawn=int(slot.last_spawn),
        avg_rt=int(sum(c.rt_total for c in cores) / timed * 1e6) if timed else 0)
    entry["apps"] = [{"id": 0, "modifier1": 0, "mountpoint": "", "startup_time": 0,
                      "requests": delta, "exceptions": sum(c.exceptions for c in cores),
                      "chdir": master.cfg.chdir or ""}]
    for i, core in enumerate(cores):
        since = core.busy_since
        entry["cores"].append({
            "id": i, "requests": core.requests, "static_requests": 0,
            "routed_requests": 0, "offloaded_requests": 0, "write_errors": 0,
            "read_errors": 0, "in_request": 1 if since else 0, "vars": [],
            "req_info": {"request_start": int(since * 1e6)} if since else {}})
    return entry


def snapshot(master, errors: int = 0) -> dict:
    """The stats document of a running master (master.py's ``Master``)."""
    sockets = []
    for listener in master.listeners:
        queued, backlog = socket_queue(listener.sock)
        sockets.append({"name": listener.spec, "proto": listener.protocol, "queue": queued,
                        "max_queue": backlog, "shared": 0, "can_offload": 0})
    backlog_now = max((s["queue"] for s in sockets), default=0)
    by_id: dict[int, list] = {}
    for w in list(master.workers.values()):
        by_id.setdefault(w.id, []).append(w)
    extra = master.services.stats()  # e.g. uWSGI's "daemons" list (services.py)
    cheaper = extra.get("cheaper") or {}  # cheaper.py: ids up to processes, "cheap" if idle
    ids = sorted(set(range(1, max(master.target, cheaper.get("max", 0)) + 1)) | set(by_id))
    try:
        cwd = os.getcwd()
    except OSError:
        cwd = ""
    doc = {
        "version": __version__, "listen_queue": backlog_now, "listen_queue_errors": errors,
        "signal_queue": 0, "load": backlog_now, "pid": os.getpid(), "uid": os.getuid(),
        "gid": os.getgid(), "cwd": cwd, "locks": [], "sockets": sockets,
        "workers": [_worker(master, wid, by_id.get(wid, []), bool(cheaper)) for wid in ids],
    }
    doc.update(extra)
    return doc


# -- Prometheus text format -------------------------------------------------------------

_WORKER_GAUGES = [  # (name, help, value from the worker entry)
    ("accepting", "Is this worker accepting requests?", lambda w: w["accepting"]),
    ("delta_requests", "Number of delta requests", lambda w: w["delta_requests"]),
    ("signal_queue_length", "Length of signal queue.", lambda w: w["signal_queue"]),
    ("rss_bytes", "Worker RSS bytes.", lambda w: w["rss"]),
    ("vsz_bytes", "Worker VSZ bytes.", lambda w: w["vsz"]),
    ("running_time_seconds", "Worker running time in seconds.",
     lambda w: w["running_time"] / 1e6),
    ("last_spawn_time_seconds", "Last spawn time in seconds since epoch.",
     lambda w: w["last_spawn"]),
    ("average_response_time_seconds", "Average response time in seconds.",
     lambda w: w["avg_rt"] / 1e6),
    ("busy", "Is core in busy", lambda w: int(w["status"] == "busy")),
    ("idle", "Is core in idle", lambda w: int(w["status"] == "idle")),
    ("cheap", "Is core in cheap mode", lambda w: int(w["status"] == "cheap")),
    ("apps", "Number of apps.", lambda w: len(w["apps"])),
    ("cores", "Number of cores.", lambda w: len(w["cores"])),
]
_WORKER_COUNTERS = [
    ("requests_total", "Total number of requests.", "requests"),
    ("exceptions_total", "Total number of exceptions.", "exceptions"),
    ("harakiri_count_total", "Total number of harakiri count.", "harakiri_count"),
    ("signals_total", "Total number of signals.", "signals"),
    ("respawn_count_total", "Total number of respawn count.", "respawn_count"),
    ("transmitted_bytes_total", "Worker transmitted bytes.", "tx"),
]


def _label(value) -> str:
    return str(value).replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _num(value) -> str:
    if isinstance(value, float):
        return repr(value)
    return str(int(value))


def prometheus_text(doc: dict) -> str:
    """The document as Prometheus text format 0.0.4, uwsgi_exporter's names."""
    out: list[str] = []

    def family(name: str, kind: str, text: str, samples) -> None:
        out.append("# HELP %s %s" % (name, text))
        out.append("# TYPE %s %s" % (name, kind))
        for labels, value in samples:
            lab = ",".join('%s="%s"' % (k, _label(v)) for k, v in labels)
            out.append("%s%s %s" % (name, "{%s}" % lab if lab else "", _num(value)))

    workers = [w for w in doc["workers"] if w["id"]]
    family("uwsgi_up", "gauge", "Whether the uWSGI server is up.", [((), 1)])
    family("uwsgi_listen_queue_length", "gauge", "Length of listen queue.",
           [((), doc["listen_queue"])])
    family("uwsgi_listen_queue_errors", "gauge", "Number of listen queue errors.",
           [((), doc["listen_queue_errors"])])
    family("uwsgi_signal_queue_length", "gauge", "Length of signal queue.",
           [((), doc["signal_queue"])])
    family("uwsgi_workers", "gauge", "Number of workers.", [((), len(workers))])
    family("uwsgigw_workers_running", "gauge", "Worker processes running (cheaper mode: "
           "between cheaper and processes).", [((), sum(1 for w in workers if w["pid"]))])
    seen, sockets = set(), []
    for s in doc["sockets"]:  # one series per (name, proto), the first wins
        if (s["name"], s["proto"]) not in seen:
            seen.add((s["name"], s["proto"]))
            sockets.append(s)
    for name, text, key in [("queue_length", "Length of socket queue.", "queue"),
                            ("max_queue_length", "Max length of socket queue.", "max_queue"),
                            ("shared", "Is shared socket?", "shared"),
                            ("can_offload", "Can socket offload?", "can_offload")]:
        family("uwsgi_socket_" + name, "gauge", text,
               [((("name", s["name"]), ("proto", s["proto"])), s[key]) for s in sockets])
    for name, text, get in _WORKER_GAUGES:
        family("uwsgi_worker_" + name, "gauge", text,
               [((("worker_id", w["id"]),), get(w)) for w in workers])
    for name, text, key in _WORKER_COUNTERS:
        family("uwsgi_worker_" + name, "counter", text,
               [((("worker_id", w["id"]),), w[key]) for w in workers])

    def app_labels(w, a):
        return (("worker_id", w["id"]), ("app_id", a["id"]),
                ("mountpoint", a["mountpoint"]), ("chdir", a["chdir"]))
    apps = [(w, a) for w in workers for a in w["apps"]]
    family("uwsgi_worker_app_startup_time_seconds", "gauge",
           "How long this app took to start.",
           [(app_labels(w, a), a["startup_time"]) for w, a in apps])
    family("uwsgi_worker_app_requests_total", "counter", "Total number of requests.",
           [(app_labels(w, a), a["requests"]) for w, a in apps])
    family("uwsgi_worker_app_exceptions_total", "counter", "Total number of exceptions.",
           [(app_labels(w, a), a["exceptions"]) for w, a in apps])
    cores = [(w, c) for w in workers for c in w["cores"]]
    family("uwsgi_worker_core_busy", "gauge", "Is core busy",
           [((("worker_id", w["id"]), ("core_id", c["id"])), c["in_request"])
            for w, c in cores])
    for key, text in [("requests", "Total number of requests."),
                      ("static_requests", "Total number of static requests."),
                      ("routed_requests", "Total number of routed requests."),
                      ("offloaded_requests", "Total number of offloaded requests."),
                      ("write_errors", "Total number of write errors."),
                      ("read_errors", "Total number of read errors.")]:
        family("uwsgi_worker_core_%s_total" % key, "counter", text,
               [((("worker_id", w["id"]), ("core_id", c["id"])), c[key]) for w, c in cores])
    return "\n".join(out) + "\n"


# -- serving ----------------------------------------------------------------------------

def _http_response(status: str, ctype: str, body: bytes, head_only: bool) -> bytes:
    head = ("HTTP/1.0 %s\r\nConnection: close\r\nAccess-Control-Allow-Origin: *\r\n"
            "Content-Type: %s\r\nContent-Length: %d\r\n\r\n" % (status, ctype, len(body)))
    return head.encode("ascii") + (b"" if head_only else body)


class _Conn:
    __slots__ = ("sock", "http", "inbuf", "out", "deadline")

    def __init__(self, sock: socket.socket, http: bool, deadline: float):
        self.sock = sock
        self.http = http
        self.inbuf = b""
        self.out: memoryview | None = None
        self.deadline = deadline


class StatsServer:
    """The master's stats sockets and their open connections."""

    def __init__(self, master, listeners: list[tuple[Listener, bool]]):
        self.master = master
        self.listeners = listeners  # (listener, speaks HTTP)
        self.conns: dict[int, _Conn] = {}
        self.errors = 0  # listen_queue_errors
        self.next_sample = 0.0

    @classmethod
    def start(cls, master) -> "StatsServer | None":
        """Bind what ``stats``/``stats-http`` ask for; None when not configured.

        A stats socket that cannot be bound is logged, not fatal: monitoring
        must not take the application down (nor fail a reload).
        """
        cfg = master.cfg
        spec = cfg.stats
        http = cfg.stats_http
        wanted = []
        if spec:
            wanted.append((spec, http == "on"))
        if http and http != "on":
            wanted.append((http, True))
        elif http == "on" and not spec:
            log.warning("stats-http = true needs stats = ADDRESS; no stats server")
        listeners = []
        for address, speaks_http in wanted:
            try:
                listener = bind(address, cfg.chmod_socket)
            except Exception as exc:  # SocketError, OSError, a bad address
                log.error("cannot start the stats server on %s: %s" % (address, exc))
                continue
            listeners.append((listener, speaks_http))
            log.info("stats server on %s (%s)" % (address, "HTTP: / is JSON, /metrics "
                     "is Prometheus" if speaks_http else "JSON, the uwsgitop schema"))
        return cls(master, listeners) if listeners else None

    # -- the master loop's view ---------------------------------------------------------

    def fds(self) -> tuple[list[int], list[int]]:
        """(read, write) descriptors for the master's select()."""
        reads = [l.fileno() for l, _ in self.listeners]
        writes = []
        for fd, conn in self.conns.items():
            (writes if conn.out is not None else reads).append(fd)
        return reads, writes

    def handle(self, readable, writable) -> None:
        now = time.monotonic()
        for listener, speaks_http in self.listeners:
            if listener.fileno() in readable:
                self._accept(listener, speaks_http, now)
        for fd in list(self.conns):
            conn = self.conns.get(fd)
            if conn is None:
                continue
            try:
                if conn.out is not None:
                    if fd in writable:
                        self._send(conn)
                elif fd in readable:
                    self._read(conn)
            except OSError:
                self._close(conn)
        self.expire(now)

    def expire(self, now: float) -> None:
        for conn in [c for c in self.conns.values() if now >= c.deadline]:
            self._close(conn)

    def tick(self, mono: float) -> None:
        """Once a second: look for full listen queues (uWSGI's
        master_check_listen_queue), count and log them."""
        self.expire(mono)
        if mono < self.next_sample:
            return
        self.next_sample = mono + 1.0
        for listener in self.master.listeners:
            queued, backlog = socket_queue(listener.sock)
            if backlog and queued >= backlog:
                self.errors += 1
                log.rate_limited("listen-queue-" + listener.spec,
                                 "listen queue of socket %s full (%d/%d): requests wait; "
                                 "add workers or threads, or raise listen" % (
                                     listener.spec, queued, backlog), every=10.0)

    def document(self) -> dict:
        return snapshot(self.master, self.errors)

    # -- connections --------------------------------------------------------------------

    def _accept(self, listener: Listener, speaks_http: bool, now: float) -> None:
        for _ in range(16):
            try:
                sock, _ = listener.sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                if exc.errno not in (errno.ECONNABORTED, errno.EPROTO):
                    log.rate_limited("stats-accept", "stats server: accept() failed: %s"
                                     % exc, level="ERROR")
                return
            if len(self.conns) >= MAX_CONNECTIONS:
                sock.close()
                continue
            sock.setblocking(False)
            conn = _Conn(sock, speaks_http, now + CONNECTION_TIMEOUT)
            self.conns[sock.fileno()] = conn
            try:
                if speaks_http:
                    self._read(conn)
                else:
                    self._reply(conn, self._json())
            except OSError:
                self._close(conn)

    def _json(self) -> bytes:
        try:
            return json.dumps(self.document(), indent=1).encode("utf-8")
        except Exception:  # a bug here must not take the master down
            log.exception("stats server: cannot build the stats document")
            return b"{}"

    def _read(self, conn: _Conn) -> None:
        try:
            data = conn.sock.recv(4096)
        except BlockingIOError:
            return
        if not data:
            self._close(conn)
            return
        conn.inbuf += data
        if b"\r\n\r\n" in conn.inbuf or b"\n\n" in conn.inbuf:
            self._reply(conn, self._http(conn.inbuf))
        elif len(conn.inbuf) > MAX_REQUEST:
            self._reply(conn, _http_response("431 Request Header Fields Too Large",
                                             "text/plain", b"request too large\n", False))

    def _http(self, request: bytes) -> bytes:
        line = request.split(b"\n", 1)[0].decode("latin-1").strip()
        parts = line.split()
        if len(parts) < 2:
            return _http_response("400 Bad Request", "text/plain", b"bad request\n", False)
        method, target = parts[0], parts[1]
        if method not in ("GET", "HEAD"):
            return _http_response("405 Method Not Allowed", "text/plain",
                                  b"GET or HEAD\n", False)
        head_only = method == "HEAD"
        path = target.split("?", 1)[0]
        if path.rstrip("/") == "/metrics":
            try:
                body = prometheus_text(self.document()).encode("utf-8")
            except Exception:
                log.exception("stats server: cannot build /metrics")
                return _http_response("500 Internal Server Error", "text/plain",
                                      b"error\n", head_only)
            return _http_response("200 OK", "text/plain; version=0.0.4; charset=utf-8",
                                  body, head_only)
        return _http_response("200 OK", "application/json", self._json(), head_only)

    def _reply(self, conn: _Conn, data: bytes) -> None:
        conn.out = memoryview(data)
        self._send(conn)

    def _send(self, conn: _Conn) -> None:
        try:
            sent = conn.sock.send(conn.out)
        except BlockingIOError:
            return
        conn.out = conn.out[sent:]
        if not len(conn.out):
            self._close(conn)

    def _close(self, conn: _Conn) -> None:
        self.conns.pop(conn.sock.fileno(), None)
        try:
            conn.sock.shutdown(socket.SHUT_WR)
            # Read what the client still sent, so close() does not reset the
            # connection (and lose the reply) over unread bytes.
            conn.sock.recv(65536)
        except OSError:
            pass
        conn.sock.close()

    # -- shutting down ------------------------------------------------------------------

    def close_in_child(self) -> None:
        """In a forked worker: close our copies of the descriptors, nothing more.

        A worker holding the listening socket open would keep it accepting
        into a backlog nobody serves once the master is gone (and a
        reloading master could not bind it again). No shutdown(), no unlink:
        the master's connections and socket file stay as they are.
        """
        for conn in self.conns.values():
            conn.sock.close()
        for listener, _ in self.listeners:
            listener.sock.close()
        self.conns.clear()
        self.listeners = []

    def close(self) -> None:
        for conn in list(self.conns.values()):
            self._close(conn)
        for listener, _ in self.listeners:
            listener.sock.close()
            if listener.path:
                remove_socket(listener.path)  # a failure is logged (vacuum.py)
        self.listeners = []


def bind(address: str, chmod: str) -> Listener:
    """A non-blocking listening socket for the stats server."""
    family, addr = parse_address(address)
    if family == socket.AF_UNIX:
        listener = bind_unix(address, addr, 64, int(chmod, 8), None)
    else:
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(addr)
        except OSError:
            sock.close()
            raise
        sock.listen(64)
        listener = Listener(address, sock)
        try:
            import ipaddress
            if not ipaddress.ip_address(addr[0]).is_loopback:
                log.warning("stats server %s is reachable from the network and shows "
                            "server internals; bind it to 127.0.0.1 or a unix socket, or "
                            "firewall it" % address)
        except ValueError:
            pass
    listener.sock.setblocking(False)
    return listener
