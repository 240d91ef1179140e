"""The ASGI 3 ``http`` and ``websocket`` scopes, built from the same decoded
vars as the WSGI environ.

:func:`build_scope` takes the environ that :func:`uwsgigw.protocol.environ.build_environ`
made (repeated headers merged, ``UWSGI_*`` stripped, CONTENT_LENGTH validated,
modifier1 30 and ``mount`` applied), so both kinds of app see one request the
same way. Pure function: dict in, dict out.

Paths follow the ASGI spec as uvicorn implements it (and Starlette >= 0.35
relies on): ``path`` is the full decoded path *including* ``root_path``
(SCRIPT_NAME), ``raw_path`` the undecoded bytes of REQUEST_URI before ``?``.
"""

from __future__ import annotations

_SPEC = {"version": "3.0", "spec_version": "2.4"}
_HTTP_VERSIONS = {"HTTP/1.1": "1.1", "HTTP/1.0": "1.0", "HTTP/2.0": "2", "HTTP/2": "2",
                  "HTTP/3.0": "3", "HTTP/3": "3"}
# HTTP_ACCEPT_ENCODING -> b"accept-encoding", cached: the set of header names
# a site sees is small.
_names: dict[str, bytes] = {}


def _header_name(key: str) -> bytes:
    name = _names.get(key)
    if name is None:
        name = key[5:].lower().replace("_", "-").encode("latin-1")
        if len(_names) < 4096:
            _names[key] = name
    return name


def _utf8(value: str) -> str:
    """A latin-1 CGI string (raw bytes) -> the text ASGI wants (UTF-8)."""
    if value.isascii():
        return value
    return value.encode("latin-1").decode("utf-8", "replace")


def _port(value) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def build_scope(env: dict, state: dict | None = None) -> dict:
    """Return the ASGI ``http`` scope for one request's environ."""
    headers = []
    for key, value in env.items():
        if key[:5] == "HTTP_":
            headers.append((_header_name(key), value.encode("latin-1")))
    # CGI moves these two out of HTTP_*; ASGI has them as ordinary headers.
    content_type = env.get("CONTENT_TYPE")
    if content_type:
        headers.append((b"content-type", content_type.encode("latin-1")))
    content_length = env.get("CONTENT_LENGTH")
    if content_length:
        headers.append((b"content-length", content_length.encode("latin-1")))

    root_path = _utf8(env.get("SCRIPT_NAME", ""))
    path = root_path + _utf8(env.get("PATH_INFO", "")) or "/"
    uri = env.get("REQUEST_URI")
    if uri:
        raw_path = uri.partition("?")[0].encode("latin-1")
    else:  # a client other than nginx (uwsgi_curl, a health check)
        raw_path = (env.get("SCRIPT_NAME", "") + env.get("PATH_INFO", "")).encode("latin-1")

    remote = env.get("REMOTE_ADDR")
    client = (remote, _port(env.get("REMOTE_PORT")) or 0) if remote else None
    server_host = env.get("SERVER_ADDR") or env.get("SERVER_NAME")
    server_port = _port(env.get("SERVER_PORT"))
    server = (server_host, server_port) if server_host else None

    scope = {
        "type": "http",
        "asgi": _SPEC,
        "http_version": _HTTP_VERSIONS.get(env.get("SERVER_PROTOCOL", ""), "1.1"),
        "method": env.get("REQUEST_METHOD", "GET"),
        "scheme": env.get("wsgi.url_scheme", "http"),
        "path": path,
        "raw_path": raw_path,
        "query_string": env.get("QUERY_STRING", "").encode("latin-1"),
        "root_path": root_path,
        "headers": headers,
        "client": client,
        "server": server,
        "extensions": {},
    }
    if state is not None:
        # The lifespan state: each request gets a shallow copy (ASGI spec).
        scope["state"] = state.copy()
    return scope


# The ASGI extension a websocket scope offers: a refusal with the app's own
# HTTP response instead of a bare 403 (websocket.http.response.start/body).
_WEBSOCKET_EXTENSIONS = {"websocket.http.response": {}}


def websocket_scope(env: dict, state: dict | None, subprotocols: list) -> dict:
    """The ASGI ``websocket`` scope of an Upgrade request's environ: the
    ``http`` scope's keys without ``method``, ``ws``/``wss`` for the scheme,
    and the subprotocols the client offered (Sec-WebSocket-Protocol)."""
    scope = build_scope(env, state)
    scope["type"] = "websocket"
    scope["scheme"] = "wss" if scope["scheme"] == "https" else "ws"
    del scope["method"]
    scope["subprotocols"] = list(subprotocols)
    scope["extensions"] = {k: dict(v) for k, v in _WEBSOCKET_EXTENSIONS.items()}
    return scope
