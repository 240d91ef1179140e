"""``uwsgigw healthcheck``: one request to a uwsgi or HTTP socket, without nginx.

For systemd (``ExecStartPost=``/watchdog scripts), Docker ``HEALTHCHECK`` and
Kubernetes exec probes, which cannot speak the uwsgi protocol themselves
(nor, in a slim image, HTTP: no curl)::

    uwsgigw healthcheck /run/uwsgigw/app.sock /health
    uwsgigw healthcheck 127.0.0.1:8001 /api/ping -H 'Host: example.com' -q
    uwsgigw healthcheck :8001 /items -X POST -d '{"a": 1}' -H 'Content-Type: application/json'
    uwsgigw healthcheck --http :8000 /health          # an http-socket
    uwsgigw healthcheck http://127.0.0.1:8000/health  # the same
    uwsgigw healthcheck --ini /app/uwsgi.ini /health  # the socket that file serves

Which protocol it speaks: ``--protocol http`` (``--http``) or ``uwsgi``; an
``http://HOST:PORT/PATH`` address is HTTP; with ``--ini FILE`` (and the
``UWSGIGW_*`` environment, as the server reads them) the probe goes to the
first ``http-socket`` the configuration binds, in HTTP, or its first
``socket``, in the uwsgi protocol, when it has no HTTP socket or
``--protocol uwsgi`` is given; otherwise uwsgi, as before.

Over uwsgi the request carries the vars nginx's ``uwsgi_params`` would send
for it (REQUEST_METHOD, REQUEST_URI, PATH_INFO decoded, QUERY_STRING,
SERVER_*, REMOTE_ADDR 127.0.0.1, HTTP_* for each header), then the body;
over HTTP it is an HTTP/1.1 request with ``Connection: close``. The response
is printed as it came (status line, headers, body); ``-q`` prints nothing.

Exit status: 0 for a 2xx or 3xx answer, 1 for anything else -- another
status, a refused or timed-out connection, a malformed answer -- with the
reason on stderr (Docker reserves exit code 2).
"""

from __future__ import annotations

import os
import socket
import struct
import sys
import time
from dataclasses import dataclass, field
from typing import NamedTuple
from urllib.parse import unquote_to_bytes, urlsplit

import click

from . import __version__
from .process.sockets import parse_address

HEALTHY, UNHEALTHY = 0, 1
# PROXY protocol v2 (HAProxy's spec 2.2): signature, version 2 + LOCAL, UNSPEC, no
# addresses: "the connection was established on purpose by the proxy without
# being relayed" -- a health check; the server keeps the real peer.
PROXY_V2_LOCAL = b"\r\n\r\n\x00\r\nQUIT\n\x20\x00\x00\x00"
MAX_RESPONSE = 16 << 20  # bytes kept of an answer; the rest is read and dropped


class HealthcheckError(Exception):
    """The request could not be made or the answer not read; says why."""


@dataclass
class Response:
    status: int
    reason: str
    headers: list[tuple[str, str]] = field(default_factory=list)
    body: bytes = b""
    raw: bytes = b""


def _b(text: str) -> bytes:
    return text.encode("latin-1")


def request_vars(method: str, target: str, headers: list[tuple[str, str]], body_len: int,
                 host: str = "localhost") -> list[tuple[bytes, bytes]]:
    """The vars nginx's uwsgi_params would send for this request."""
    path, _, query = target.partition("?")
    content_type = ""
    extra = []
    for name, value in headers:
        key = name.strip().upper().replace("-", "_")
        if key == "CONTENT_TYPE":
            content_type = value
        elif key == "CONTENT_LENGTH":
            continue  # nginx sends the real one
        else:
            if key == "HOST":
                host = value
            extra.append(("HTTP_" + key, value))
    if not any(k == "HTTP_HOST" for k, _ in extra):
        extra.insert(0, ("HTTP_HOST", host))
    if not any(k == "HTTP_USER_AGENT" for k, _ in extra):
        extra.append(("HTTP_USER_AGENT", "uwsgigw-healthcheck/%s" % __version__))
    server_name = host.rsplit(":", 1)[0] if not host.startswith("[") else host
    pairs = [("QUERY_STRING", query), ("REQUEST_METHOD", method.upper()),
             ("CONTENT_TYPE", content_type), ("CONTENT_LENGTH", str(body_len) if body_len else ""),
             ("REQUEST_URI", target), ("DOCUMENT_ROOT", ""),
             ("SERVER_PROTOCOL", "HTTP/1.1"), ("REQUEST_SCHEME", "http"),
             ("REMOTE_ADDR", "127.0.0.1"), ("REMOTE_PORT", "0"), ("SERVER_PORT", "80"),
             ("SERVER_NAME", server_name)] + extra
    out = [(_b(k), _b(v)) for k, v in pairs]
    out.insert(5, (b"PATH_INFO", unquote_to_bytes(path)))
    return out


def packet(pairs: list[tuple[bytes, bytes]], body: bytes = b"") -> bytes:
    """A uwsgi packet: header (modifier1 0, u16le size, modifier2 0), vars, body."""
    block = b"".join(struct.pack("<H", len(k)) + k + struct.pack("<H", len(v)) + v
                     for k, v in pairs)
    if len(block) > 65535:
        raise HealthcheckError("the request vars take %d bytes; the uwsgi protocol "
                               "allows 65535" % len(block))
    return struct.pack("<BHB", 0, len(block), 0) + block + body


def parse_response(raw: bytes) -> Response:
    head, sep, body = raw.partition(b"\r\n\r\n")
    if not sep:
        raise HealthcheckError("no complete response head in %d bytes%s" % (
            len(raw), ": %r" % raw[:200] if raw else " (the server closed the connection)"))
    lines = head.decode("latin-1").split("\r\n")
    parts = lines[0].split(" ", 2)
    if len(parts) < 2 or not parts[0].startswith("HTTP/") or not parts[1].isdigit():
        raise HealthcheckError("not an HTTP status line: %r" % lines[0][:200])
    headers = []
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers.append((name, value.strip()))
    return Response(int(parts[1]), parts[2] if len(parts) > 2 else "", headers, body, raw)


def http_request_bytes(method: str, target: str, headers: list[tuple[str, str]],
                       body: bytes, host: str = "localhost") -> bytes:
    """An HTTP/1.1 request (RFC 9112): Host (``host`` unless given),
    User-Agent, ``Connection: close`` so the answer ends at the close, and
    Content-Length for a body (a given one is replaced)."""
    lines = ["%s %s HTTP/1.1" % (method.upper(), target)]
    names = {name.lower() for name, _ in headers}
    if "host" not in names:
        lines.append("Host: %s" % host)
    if "user-agent" not in names:
        lines.append("User-Agent: uwsgigw-healthcheck/%s" % __version__)
    for name, value in headers:
        if name.lower() not in ("content-length", "connection", "transfer-encoding"):
            lines.append("%s: %s" % (name, value))
    lines.append("Connection: close")
    if body or method.upper() in ("POST", "PUT", "PATCH"):
        lines.append("Content-Length: %d" % len(body))
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


def request(address: str, method: str = "GET", target: str = "/",
            headers: list[tuple[str, str]] | None = None, body: bytes = b"",
            timeout: float = 5.0, host: str = "localhost",
            protocol: str = "uwsgi", proxy_header: bool = False) -> Response:
    """Send one request to a uwsgi socket (``protocol="uwsgi"``) or an HTTP
    one (``"http"``; ``proxy_header``: after a PROXY v2 LOCAL header, the
    spec's way for a balancer's own health check); the parsed answer.
    ``timeout``: seconds for the whole exchange. Raises HealthcheckError."""
    if not target.startswith("/"):
        target = "/" + target
    if protocol == "http":
        data = http_request_bytes(method, target, headers or [], body, host)
        if proxy_header:
            data = PROXY_V2_LOCAL + data
    else:
        data = packet(request_vars(method, target, headers or [], len(body), host), body)
    deadline = time.monotonic() + timeout
    try:
        family, addr = parse_address(address)
    except Exception as exc:
        raise HealthcheckError("bad address %r: %s" % (address, exc)) from None
    if family != socket.AF_UNIX and addr[0] in ("0.0.0.0", "::"):
        # ":8001" binds everything; ask loopback
        addr = ("127.0.0.1" if addr[0] == "0.0.0.0" else "::1", addr[1])
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.settimeout(timeout)
        try:
            sock.connect(addr)
            sock.sendall(data)
        except socket.timeout:
            raise HealthcheckError("%s: timed out after %gs" % (address, timeout)) from None
        except OSError as exc:
            raise HealthcheckError("%s: %s" % (address, exc.strerror or exc)) from None
        chunks, size = [], 0
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise HealthcheckError("%s: no complete answer within %gs" % (address, timeout))
            sock.settimeout(left)
            try:
                chunk = sock.recv(65536)
            except socket.timeout:
                raise HealthcheckError("%s: no complete answer within %gs"
                                       % (address, timeout)) from None
            except ConnectionResetError:
                break  # keep what came before the reset
            if not chunk:
                break
            if size < MAX_RESPONSE:
                chunks.append(chunk)
            size += len(chunk)
    finally:
        sock.close()
    return parse_response(b"".join(chunks))


def parse_header(text: str) -> tuple[str, str]:
    name, sep, value = text.partition(":")
    if not sep or not name.strip() or any(c in text for c in "\r\n\0"):
        raise click.BadParameter("expected 'Name: value', got %r" % text)
    return name.strip(), value.strip()


class Target(NamedTuple):
    """What to probe: ``protocol`` "uwsgi" or "http"; ``host`` the Host
    header; ``proxy_header``: open with a PROXY v2 LOCAL header (the server
    has http-enable-proxy-protocol on)."""

    address: str
    path: str
    protocol: str
    host: str = "localhost"
    proxy_header: bool = False


def resolve(address: str | None, path: str | None, protocol: str | None,
            ini: str | None, environ) -> Target:
    """The Target from the command line's ADDRESS, PATH, --protocol and --ini
    (see the module docstring). Raises click.UsageError for a contradiction,
    HealthcheckError for a configuration that names no socket to probe."""
    if ini:
        if address is not None and path is not None:
            raise click.UsageError("with --ini, give only PATH: the address comes from "
                                   "the configuration")
        path = address if path is None else path
        from .config.settings import ConfigError, build  # the server's own reading
        try:
            cfg = build({"ini": (ini,)}, environ)
        except ConfigError as exc:
            raise HealthcheckError("%s: %s" % (ini, exc)) from None
        if protocol != "uwsgi" and cfg.http_socket:
            return Target(cfg.http_socket[0], path or "/", "http",
                          proxy_header=cfg.http_enable_proxy_protocol)
        if protocol != "http" and cfg.socket:
            return Target(cfg.socket[0], path or "/", "uwsgi")
        raise HealthcheckError("%s binds no %s to probe" % (
            ini, {"http": "http-socket", "uwsgi": "socket"}.get(protocol or "",
                                                              "socket nor http-socket")))
    if address is None:
        raise click.UsageError("missing ADDRESS (or --ini FILE)")
    if address.lower().startswith("http://"):
        if protocol == "uwsgi":
            raise click.UsageError("an http:// address is an HTTP socket, not --protocol uwsgi")
        url = urlsplit(address)
        try:
            port = url.port or 80
        except ValueError:
            port = 0
        if not url.hostname or url.username or url.password or not port:
            raise click.UsageError("expected http://HOST[:PORT][/PATH], got %r" % address)
        host = "[%s]" % url.hostname if ":" in url.hostname else url.hostname
        target = (url.path or "/") + ("?" + url.query if url.query else "")
        return Target("%s:%d" % (host, port), path or target, "http", url.netloc)
    return Target(address, path or "/", protocol or "uwsgi")


def _mismatch_hint(resp: Response, protocol: str) -> str:
    """A hint when the answer says the socket speaks the other protocol."""
    text = resp.body[:300].decode("latin-1")
    if protocol == "http" and "reached the uwsgi socket" in text:
        return " (ADDRESS is a uwsgi socket: drop --http/--protocol http)"
    if protocol == "uwsgi" and resp.status == 400 and "uwsgi" not in text.lower():
        return " (if ADDRESS is an http-socket, add --http)"
    return ""


@click.command("healthcheck", context_settings={"help_option_names": ["-h", "--help"]},
               epilog="Exit status: 0 for a 2xx or 3xx answer, 1 otherwise.")
@click.argument("address", required=False)
@click.argument("path", required=False)
@click.option("-X", "--method", default="GET", show_default=True, help="request method")
@click.option("-H", "--header", "headers", multiple=True, metavar="'NAME: VALUE'",
              help="a request header (repeatable); Host defaults to localhost")
@click.option("-d", "--data", default=None, metavar="BODY", help="request body")
@click.option("--data-file", type=click.File("rb"), default=None, metavar="FILE",
              help="request body from a file ('-': standard input)")
@click.option("--timeout", type=float, default=5.0, show_default=True,
              help="seconds for the whole exchange")
@click.option("-P", "--protocol", type=click.Choice(["uwsgi", "http"]), default=None,
              help="what ADDRESS speaks: uwsgi (default) or http (an http-socket); an "
              "http:// ADDRESS is http; with --ini: which of its sockets to probe")
@click.option("--http", "http_flag", is_flag=True, help="same as --protocol http")
@click.option("--ini", default=None, metavar="FILE[:SECTION]",
              help="probe the server this INI file (and the UWSGIGW_* environment) "
              "configures: its first http-socket over HTTP, else its first socket over "
              "uwsgi; then the only argument is PATH")
@click.option("--proxy-protocol", is_flag=True, help="HTTP: open with a PROXY protocol v2 "
              "LOCAL header, for a socket with http-enable-proxy-protocol (with --ini: "
              "whenever the configuration enables it)")
@click.option("-q", "--quiet", is_flag=True, help="print nothing; only the exit status")
def command(address, path, method, headers, data, data_file, timeout, protocol, http_flag,
            ini, proxy_protocol, quiet) -> None:
    """Send one request to ADDRESS -- a uwsgi socket, or an HTTP socket with
    --http or an http:// address: unix path, @abstract, HOST:PORT or :PORT --
    for PATH (default /, may hold ?query) and print the answer; for health
    checks by systemd, Docker and Kubernetes."""
    if http_flag:
        if protocol == "uwsgi":
            raise click.UsageError("--http contradicts --protocol uwsgi")
        protocol = "http"
    pairs = [parse_header(h) for h in headers]
    body = data.encode("utf-8") if data is not None else (data_file.read() if data_file else b"")
    try:
        target = resolve(address, path, protocol, ini, os.environ)
        if proxy_protocol:
            target = target._replace(proxy_header=True)
        address, protocol = target.address, target.protocol
        if target.proxy_header and protocol != "http":
            raise click.UsageError("--proxy-protocol is for HTTP sockets")
        resp = request(address, method, target.path, pairs, body, timeout, target.host,
                       protocol, target.proxy_header)
    except HealthcheckError as exc:
        click.echo("uwsgigw healthcheck: %s" % exc, err=True)
        sys.exit(UNHEALTHY)
    if not quiet:
        out = sys.stdout.buffer
        out.write(resp.raw if resp.raw.endswith(b"\n") or not resp.raw else resp.raw + b"\n")
        out.flush()
    if 200 <= resp.status < 400:
        sys.exit(HEALTHY)
    click.echo("uwsgigw healthcheck: %s answered %d %s%s" % (
        address, resp.status, resp.reason, _mismatch_hint(resp, protocol)), err=True)
    sys.exit(UNHEALTHY)
