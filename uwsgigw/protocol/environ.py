"""Build the PEP 3333 environ from the decoded uwsgi vars.

Pure functions: decoded items in, dict out. The hot path uses builtins only
(``dict(zip(...))``, ``str.join``); the slow paths (repeated headers,
``UWSGI_*`` vars) run only when a cheap check says they are needed.
"""

from __future__ import annotations

from .errors import BadContentLength

# Headers nginx before 1.23 sends once per occurrence. HTTP (RFC 9110 5.3)
# says repeated fields combine with ", "; Cookie is the exception (RFC 6265
# 5.4 joins cookie-pairs with "; ").
_COOKIE = "HTTP_COOKIE"
_MAGIC_PREFIX = "\0UWSGI_"
_MAX_CONTENT_LENGTH_DIGITS = 18


def base_environ(*, errors, file_wrapper, multithread: bool, multiprocess: bool) -> dict:
    """The per-worker constant part of every environ, copied per request.

    The CGI defaults cover vars that a non-nginx client (uwsgi_curl, a health
    check) may leave out but PEP 3333 requires; nginx's values override them.
    """
    return {
        "REQUEST_METHOD": "GET",
        "SCRIPT_NAME": "",
        "PATH_INFO": "",
        "QUERY_STRING": "",
        "SERVER_NAME": "localhost",
        "SERVER_PORT": "80",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "wsgi.version": (1, 0),
        "wsgi.url_scheme": "http",
        "wsgi.errors": errors,
        "wsgi.multithread": multithread,
        "wsgi.multiprocess": multiprocess,
        "wsgi.run_once": False,
        "wsgi.input_terminated": True,
        "wsgi.file_wrapper": file_wrapper,
    }


def merge_repeated(items: list[str]) -> dict[str, str]:
    """Vars in wire order -> dict, joining repeated keys as HTTP does."""
    env: dict[str, str] = {}
    for i in range(0, len(items), 2):
        key, value = items[i], items[i + 1]
        if key in env:
            sep = "; " if key == _COOKIE else ", "
            env[key] = env[key] + sep + value
        else:
            env[key] = value
    return env


def request_vars(items: list[str]) -> dict[str, str]:
    """The request's own vars, duplicates merged, ``UWSGI_*`` stripped.

    uWSGI acts on UWSGI_FILE/UWSGI_SCRIPT/... by loading code named by the
    request: remote code execution for anyone who can reach the socket. We
    drop every such var so no app or middleware can act on it either.
    """
    pairs = iter(items)
    env = dict(zip(pairs, pairs))  # (k0, v0), (k1, v1), ... without slicing copies
    if len(env) * 2 != len(items):
        env = merge_repeated(items)
    # nginx also passes Content-Type/-Length as HTTP_* vars; CGI (RFC 3875
    # 4.1.18) and PEP 3333 keep only CONTENT_*, and the body is never framed
    # from a client header.
    env.pop("HTTP_CONTENT_LENGTH", None)
    env.pop("HTTP_CONTENT_TYPE", None)
    if _MAGIC_PREFIX in "\0" + "\0".join(env):
        for key in [k for k in env if k.startswith("UWSGI_")]:
            del env[key]
    return env


def content_length(env: dict) -> int:
    """Validate CONTENT_LENGTH in place; return the body size (0 if none).

    nginx de-chunks and buffers bodies, so CONTENT_LENGTH is the only framing
    (never Transfer-Encoding). An empty value means "no body" and is removed,
    as is an empty CONTENT_TYPE (PEP 3333: absent rather than empty).
    """
    if env.get("CONTENT_TYPE") == "":
        del env["CONTENT_TYPE"]
    value = env.get("CONTENT_LENGTH")
    if value is None:
        return 0
    if value == "":
        del env["CONTENT_LENGTH"]
        return 0
    # isascii(): latin-1 decoding makes "\xb2" (superscript two) isdigit().
    if not (value.isascii() and value.isdigit() and len(value) <= _MAX_CONTENT_LENGTH_DIGITS):
        raise BadContentLength(
            "invalid CONTENT_LENGTH %r: expected 1-18 ASCII digits" % value[:40]
        )
    return int(value)


def build_environ(base: dict, items: list[str], modifier1: int) -> tuple[dict, int]:
    """Return (environ, body length) for one request; raises BadContentLength.

    ``wsgi.input`` is set by the caller, which owns the socket.
    """
    env = base.copy()
    env.update(request_vars(items))
    length = content_length(env)
    if env.get("HTTPS", "").lower() in ("on", "1") or env.get("REQUEST_SCHEME") == "https":
        env["wsgi.url_scheme"] = "https"
    if modifier1 == 30:
        # modifier1 30 (uWSGI's UWSGI_MODIFIER_MANAGE_PATH_INFO): PATH_INFO
        # still carries the SCRIPT_NAME prefix; strip it.
        script_name = env["SCRIPT_NAME"]
        path = env["PATH_INFO"]
        if script_name and path.startswith(script_name):
            env["PATH_INFO"] = path[len(script_name):]
    return env, length
