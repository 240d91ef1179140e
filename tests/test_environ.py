"""build_environ: PEP 3333 rules on decoded uwsgi vars (pure functions)."""

import pytest

from uwsgigw.protocol.environ import base_environ, build_environ, merge_repeated, request_vars
from uwsgigw.protocol.errors import BadContentLength


def flat(pairs):
    return [x for pair in pairs for x in pair]


BASE = base_environ(errors=None, file_wrapper=None, multithread=False, multiprocess=True)

NGINX_GET = [
    ("QUERY_STRING", "a=1"), ("REQUEST_METHOD", "GET"), ("CONTENT_TYPE", ""),
    ("CONTENT_LENGTH", ""), ("REQUEST_URI", "/p?a=1"), ("PATH_INFO", "/p"),
    ("DOCUMENT_ROOT", "/usr/share/nginx/html"), ("SERVER_PROTOCOL", "HTTP/1.1"),
    ("REQUEST_SCHEME", "http"), ("REMOTE_ADDR", "127.0.0.1"), ("REMOTE_PORT", "5555"),
    ("SERVER_PORT", "80"), ("SERVER_NAME", "_"), ("HTTP_HOST", "example.org"),
]


def test_nginx_get_environ():
    env, length = build_environ(BASE, flat(NGINX_GET), 0)
    assert length == 0
    assert env["PATH_INFO"] == "/p"
    assert env["QUERY_STRING"] == "a=1"
    assert env["SCRIPT_NAME"] == ""
    assert env["wsgi.url_scheme"] == "http"
    assert env["wsgi.input_terminated"] is True
    assert env["wsgi.multiprocess"] is True
    assert env["wsgi.multithread"] is False
    assert env["wsgi.run_once"] is False
    # PEP 3333: empty CONTENT_LENGTH / CONTENT_TYPE are absent, not empty.
    assert "CONTENT_LENGTH" not in env and "CONTENT_TYPE" not in env
    assert all(type(v) is str for k, v in env.items() if not k.startswith("wsgi."))


def test_base_is_not_mutated():
    build_environ(BASE, flat(NGINX_GET + [("HTTPS", "on")]), 0)
    assert BASE["wsgi.url_scheme"] == "http"
    assert "HTTPS" not in BASE


@pytest.mark.parametrize("value", ["0", "5", "123456789012345678"])
def test_content_length_valid(value):
    env, length = build_environ(BASE, ["CONTENT_LENGTH", value], 0)
    assert length == int(value)
    assert env["CONTENT_LENGTH"] == value


@pytest.mark.parametrize("value", ["-1", "1e3", " 5", "5 ", "0x10", "+5",
                                   "1234567890123456789", "\xb2", "½", "5\x00"])
def test_content_length_invalid(value):
    with pytest.raises(BadContentLength) as info:
        build_environ(BASE, ["CONTENT_LENGTH", value], 0)
    assert "CONTENT_LENGTH" in str(info.value)
    assert info.value.status_hint == 400


@pytest.mark.parametrize("pairs,scheme", [
    ([("HTTPS", "on")], "https"),
    ([("HTTPS", "ON")], "https"),
    ([("REQUEST_SCHEME", "https")], "https"),
    ([("HTTPS", "off")], "http"),
    ([("HTTP_X_FORWARDED_PROTO", "https")], "http"),
    ([("HTTP_X_FORWARDED_SSL", "on")], "http"),
])
def test_url_scheme_only_from_https_or_request_scheme(pairs, scheme):
    env, _ = build_environ(BASE, flat(pairs), 0)
    assert env["wsgi.url_scheme"] == scheme


def test_uwsgi_magic_vars_are_stripped():
    items = flat([("UWSGI_FILE", "/tmp/evil.py"), ("UWSGI_SCRIPT", "evil"),
                  ("UWSGI_CHDIR", "/"), ("PATH_INFO", "/"), ("HTTP_X", "UWSGI_FILE")])
    env, _ = build_environ(BASE, items, 0)
    assert not [k for k in env if k.startswith("UWSGI_")]
    assert env["HTTP_X"] == "UWSGI_FILE"  # values are not keys


def test_repeated_headers_are_merged():
    items = flat([("HTTP_ACCEPT", "a"), ("HTTP_COOKIE", "x=1"), ("HTTP_ACCEPT", "b"),
                  ("HTTP_COOKIE", "y=2"), ("HTTP_ACCEPT", "c")])
    env = request_vars(items)
    assert env["HTTP_ACCEPT"] == "a, b, c"
    assert env["HTTP_COOKIE"] == "x=1; y=2"
    assert merge_repeated(items) == env


def test_modifier30_strips_script_name():
    items = flat([("SCRIPT_NAME", "/app"), ("PATH_INFO", "/app/x/y")])
    env, _ = build_environ(BASE, items, 30)
    assert (env["SCRIPT_NAME"], env["PATH_INFO"]) == ("/app", "/x/y")
    env, _ = build_environ(BASE, items, 0)
    assert env["PATH_INFO"] == "/app/x/y"


def test_latin1_values_are_native_strings():
    raw = "caf\xe9".encode("latin-1").decode("latin-1")
    env, _ = build_environ(BASE, ["PATH_INFO", raw], 0)
    assert env["PATH_INFO"].encode("latin-1") == b"caf\xe9"


def test_http_content_headers_are_not_duplicated():
    items = flat([("CONTENT_LENGTH", "3"), ("HTTP_CONTENT_LENGTH", "3"),
                  ("CONTENT_TYPE", "text/plain"), ("HTTP_CONTENT_TYPE", "text/plain")])
    env, length = build_environ(BASE, items, 0)
    assert length == 3 and env["CONTENT_TYPE"] == "text/plain"
    assert "HTTP_CONTENT_LENGTH" not in env and "HTTP_CONTENT_TYPE" not in env


def test_body_never_framed_from_http_content_length():
    env, length = build_environ(BASE, ["HTTP_CONTENT_LENGTH", "100"], 0)
    assert length == 0 and "CONTENT_LENGTH" not in env
