"""``http-enable-proxy-protocol``: the PROXY header that starts each HTTP
connection from a TCP load balancer, read before the first request.

The header is read under ``http-headers-timeout`` (it is part of what a
client must send before its request head; a balancer sends it at once).
What it says replaces the connection's peer, as HAProxy's ``accept-proxy``
and nginx's ``listen ... proxy_protocol`` with ``real_ip_header
proxy_protocol`` do: its source address and port become REMOTE_ADDR and
REMOTE_PORT, and it is that address -- the client the balancer saw, not the
balancer -- that ``forwarded-allow-ips`` is checked against, so a client
behind a layer-4 balancer cannot set its own X-Forwarded-For. A LOCAL
command (the balancer's own health check) or an UNKNOWN/UNSPEC family keeps
the real peer (spec 2.1, 2.2). A connection that closes before sending a
byte is a TCP health check: closed without a log line; a malformed,
truncated or late header is closed with a line naming the setting.
"""

from __future__ import annotations

import asyncio

from .. import log
from ..protocol.proxy import ProxyHeaderError, ProxyParser

SETTING = "http-enable-proxy-protocol"


async def receive(connection) -> bool:
    """Read and apply the PROXY header of ``connection`` (an
    HttpConnection): its peer and trust set from the header, the bytes
    after it fed to its request parser. False when the connection is to be
    closed (logged, but for one closed before its first byte)."""
    ctx = connection.ctx
    parser = ProxyParser()
    got = 0
    where = connection.peer[0] or "unix"
    try:
        async with asyncio.timeout(ctx.http_headers_timeout):
            header = None
            while header is None:
                data = await connection._recv(ctx.http_headers_timeout)
                if not data:
                    if got:
                        log.rate_limited("proxy-header-eof", "%s: closed after %d bytes of an "
                                         "incomplete PROXY header (%s)" % (where, got, SETTING))
                    return False
                got += len(data)
                header = parser.feed(data)
    except TimeoutError:
        log.rate_limited("proxy-header-timeout", "%s: no complete PROXY header within %gs "
                         "(%s, http-headers-timeout)" % (where, ctx.http_headers_timeout,
                                                         SETTING))
        return False
    except ProxyHeaderError as exc:
        log.rate_limited("proxy-header-v%d" % exc.version, "%s: connection closed: %s; %s is on, "
                         "so every connection must start with one" % (where, exc, SETTING))
        return False
    client = header.client
    if client is not None:
        if header.family == "UNIX":
            connection.peer = ("", "")  # a unix client of the balancer: as our unix peers
        else:
            connection.peer = (client[0], str(client[1]))
        allow = ctx.forwarded_allow
        connection.trusted = not connection.peer[0] or (
            allow is not None and allow.admits((connection.peer[0], 0)))
    if parser.rest:
        connection.parser.feed(parser.rest)
    return True
