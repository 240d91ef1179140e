"""``uwsgigw healthcheck``: one uwsgi request to a socket, without nginx.

For systemd (``ExecStartPost=``/watchdog scripts), Docker ``HEALTHCHECK`` and
Kubernetes exec probes, which cannot speak the uwsgi protocol themselves::

    uwsgigw healthcheck /run/uwsgigw/app.sock /health
    uwsgigw healthcheck 127.0.0.1:8001 /api/ping -H 'Host: example.com' -q
    uwsgigw healthcheck :8001 /items -X POST -d '{"a": 1}' -H 'Content-Type: application/json'

The request carries the vars nginx's ``uwsgi_params`` would send for it
(REQUEST_METHOD, REQUEST_URI, PATH_INFO decoded, QUERY_STRING, SERVER_*,
REMOTE_ADDR 127.0.0.1, HTTP_* for each header), then the body. The response
is printed as it came (status line, headers, body); ``-q`` prints nothing.

Exit status: 0 for a 2xx or 3xx answer, 1 for anything else -- another
status, a refused or timed-out connection, a malformed answer -- with the
reason on stderr (Docker reserves exit code 2).
"""

from __future__ import annotations

import socket
import struct
import sys
import time
from dataclasses import dataclass, field
from urllib.parse import unquote_to_bytes

import click

from . import __version__
from .process.sockets import parse_address

HEALTHY, UNHEALTHY = 0, 1
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


def request(address: str, method: str = "GET", target: str = "/",
            headers: list[tuple[str, str]] | None = None, body: bytes = b"",
            timeout: float = 5.0, host: str = "localhost") -> Response:
    """Send one request to a uwsgi socket; the parsed answer."""
    if not target.startswith("/"):
        target = "/" + target
    data = packet(request_vars(method, target, headers or [], len(body), host), body)
    deadline = time.monotonic() + timeout
    try:
        family, addr = parse_address(address)
    except Exception as exc:
        raise HealthcheckError("bad address %r: %s" % (address, exc)) from None
    if family != socket.AF_UNIX and addr[0] == "0.0.0.0":
        addr = ("127.0.0.1", addr[1])  # ":8001" binds everything; ask loopback
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


@click.command("healthcheck", context_settings={"help_option_names": ["-h", "--help"]},
               epilog="Exit status: 0 for a 2xx or 3xx answer, 1 otherwise.")
@click.argument("address")
@click.argument("path", default="/", required=False)
@click.option("-X", "--method", default="GET", show_default=True, help="request method")
@click.option("-H", "--header", "headers", multiple=True, metavar="'NAME: VALUE'",
              help="a request header (repeatable); Host defaults to localhost")
@click.option("-d", "--data", default=None, metavar="BODY", help="request body")
@click.option("--data-file", type=click.File("rb"), default=None, metavar="FILE",
              help="request body from a file ('-': standard input)")
@click.option("--timeout", type=float, default=5.0, show_default=True,
              help="seconds for the whole exchange")
@click.option("-q", "--quiet", is_flag=True, help="print nothing; only the exit status")
def command(address, path, method, headers, data, data_file, timeout, quiet) -> None:
    """Send one request to the uwsgi socket ADDRESS (unix path, @abstract,
    HOST:PORT or :PORT) for PATH (default /, may hold ?query) and print
    the answer; for health checks by systemd, Docker and Kubernetes."""
    pairs = [parse_header(h) for h in headers]
    body = data.encode("utf-8") if data is not None else (data_file.read() if data_file else b"")
    try:
        resp = request(address, method, path, pairs, body, timeout)
    except HealthcheckError as exc:
        click.echo("uwsgigw healthcheck: %s" % exc, err=True)
        sys.exit(UNHEALTHY)
    if not quiet:
        out = sys.stdout.buffer
        out.write(resp.raw if resp.raw.endswith(b"\n") or not resp.raw else resp.raw + b"\n")
        out.flush()
    if 200 <= resp.status < 400:
        sys.exit(HEALTHY)
    click.echo("uwsgigw healthcheck: %s answered %d %s" % (address, resp.status, resp.reason),
               err=True)
    sys.exit(UNHEALTHY)
