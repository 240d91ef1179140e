"""The static-file resolver (uwsgigw/cycle/static.py): what a request for a
static file gets, on real directories, files, symlinks and FIFOs.

Every safety case runs twice: with openat2(2) and with the user-space walk
that replaces it on kernels without it (``OPENAT2.ok`` off).
"""

from __future__ import annotations

import calendar
import json
import os
import pwd
import shutil
import stat
import threading
import tempfile
import time
from email.utils import parsedate_tz
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from uwsgigw.cli import load
from uwsgigw.config.settings import Config, ConfigError
from uwsgigw.cycle import static_open
from uwsgigw.cycle.static import StaticFiles
from uwsgigw.cycle.static_rules import accepted_codings, parse_range

CSS = b"body { color: red }\n"
JS = b"console.log('plain');\n" * 10


@pytest.fixture(scope="module")
def tree():
    """A world-readable tree (not under pytest's 0700 tmp dir: the 403 test
    reads it as nobody)."""
    top = Path(tempfile.mkdtemp(prefix="static-resolver-"))
    os.chmod(top, 0o755)
    s = top / "static"
    for d in ("static/sub", "static/emptydir", "static/deep/er", "static2", "static_evil",
              "secret", "safe", "root2/m2"):
        (top / d).mkdir(parents=True)
    (s / "a.css").write_bytes(CSS)
    (s / "app.js").write_bytes(JS)
    (s / "app.js.gz").write_bytes(b"GZ" * 5)
    (s / "app.js.br").write_bytes(b"BR" * 3)
    (s / "plain.txt").write_bytes(b"plain\n")
    (s / "sub" / "index.html").write_bytes(b"<p>index</p>\n")
    (s / "deep" / "er" / "f.txt").write_bytes(b"deep\n")
    (s / "x.unknownext").write_bytes(b"?")
    (s / "noext").write_bytes(b"?")
    (s / "page.php").write_bytes(b"<?php")
    (s / "a\\b").write_bytes(b"backslash")
    (s / "unreadable.txt").write_bytes(b"no")
    os.chmod(s / "unreadable.txt", 0)
    os.mkfifo(s / "fifo")
    (s / "link_in").symlink_to("a.css")
    (s / "link_abs_in").symlink_to(s / "a.css")
    (s / "link_out").symlink_to("../secret/x")
    (s / "link_abs_out").symlink_to(top / "secret" / "x")
    (s / "link_safe").symlink_to(top / "safe" / "s.txt")
    (s / "dirlink_out").symlink_to("../secret")
    (s / "dirlink_in").symlink_to("deep")
    (s / "loop").symlink_to("loop")
    (s / "proc").symlink_to("/proc/self/root/etc/passwd")
    (top / "static2" / "only2.txt").write_bytes(b"from the second map\n")
    (top / "static2" / "a.css").write_bytes(b"shadowed\n")
    (top / "static_evil" / "x").write_bytes(b"evil\n")
    (top / "secret" / "x").write_bytes(b"secret\n")
    (top / "safe" / "s.txt").write_bytes(b"safe\n")
    (top / "fav.ico").write_bytes(b"ICO")
    (top / "root2" / "m2" / "f.txt").write_bytes(b"map2\n")
    for path in top.rglob("*"):
        if not path.is_symlink() and path.name not in ("unreadable.txt", "fifo"):
            os.chmod(path, 0o755 if path.is_dir() else 0o644)
    yield top
    shutil.rmtree(top)


@pytest.fixture(params=["openat2", "walk"])
def opener(request, monkeypatch):
    if request.param == "openat2" and not static_open.OPENAT2.ok:
        pytest.skip("openat2(2) is not available here")
    if request.param == "walk":
        monkeypatch.setattr(static_open.OPENAT2, "ok", False)
    return request.param


def make(tree: Path, **values) -> StaticFiles:
    values.setdefault("static_map", ["/static=%s/static" % tree, "/static=%s/static2" % tree,
                                     "/favicon.ico=%s/fav.ico" % tree])
    values.setdefault("static_map2", ["/m2=%s/root2" % tree])
    values.setdefault("static_index", ["index.html"])
    found = StaticFiles.from_config(Config.defaults(**values))
    assert found is not None
    return found


def get(sf: StaticFiles, path: str, method: str = "GET", **headers):
    environ = {"REQUEST_METHOD": method, "PATH_INFO": path, "REQUEST_URI": path}
    environ.update(("HTTP_" + k.upper(), v) for k, v in headers.items())
    answer = sf._lookup(environ)  # not lookup(): an exception must fail the test
    if answer is None:
        return None
    body = b""
    if answer.fd is not None:
        body = os.pread(answer.fd, answer.length, answer.offset)
        answer.close()
        answer.close()  # idempotent
    answer.body = body
    answer.h = dict(answer.headers)
    assert len(answer.h) == len(answer.headers), answer.headers  # no header twice
    return answer


# -- what is served, what falls through, what is refused ----------------------------

CASES = [
    # (PATH_INFO, status or None, body)
    ("/static/a.css", 200, CSS),
    ("/static/only2.txt", 200, b"from the second map\n"),  # missing in map 1: map 2
    ("/static/missing.css", None, None),
    ("/static/sub/", 200, b"<p>index</p>\n"),
    ("/static/sub", 200, b"<p>index</p>\n"),
    ("/static/emptydir", None, None),
    ("/static/fifo", None, None),  # never opened for reading (would block)
    ("/static/a.css/", None, None),
    ("/static/link_in", 200, CSS),
    ("/static/link_abs_in", 200, CSS),  # absolute, but back inside the map
    ("/static/dirlink_in/er/f.txt", 200, b"deep\n"),
    ("/static/deep/er/../../a.css", 200, CSS),  # '..' that stays inside
    ("/static/./sub/./index.html", 200, b"<p>index</p>\n"),
    ("/static//a.css", 200, CSS),
    ("/static/link_out", 403, b""),
    ("/static/link_abs_out", 403, b""),
    ("/static/dirlink_out/x", 403, b""),
    ("/static/link_safe", 403, b""),  # no static-safe here
    ("/static/proc", 403, b""),
    ("/static/loop", None, None),
    ("/static/../secret/x", 403, b""),
    ("/static/../static_evil/x", 403, b""),  # /static/..%2fstatic_evil/x, decoded
    ("/static/sub/../../secret/x", 403, b""),
    ("/static/../../../../../../etc/passwd", 403, b""),
    ("/static/..", 403, b""),
    ("/static/a\\b", 200, b"backslash"),  # '\\' is a plain byte on POSIX
    ("/static/..\\secret\\x", None, None),
    ("/static/..\\..\\secret/x", None, None),
    ("/static/a.css\x00.png", None, None),
    ("/static/\xc0\xae\xc0\xae/secret/x", None, None),  # overlong UTF-8 '..'
    ("/static/%2e%2e/secret/x", None, None),  # not decoded again
    ("/static/\u0101.css", None, None),  # not latin-1: cannot be a PEP 3333 path
    ("/staticfoo", None, None),  # a prefix matches whole segments
    ("/static_evil/x", None, None),
    ("static/a.css", None, None),
    ("/favicon.ico", 200, b"ICO"),
    ("/favicon.ico/x", None, None),
    ("/m2/f.txt", 200, b"map2\n"),  # static-map2: DIR + the whole PATH_INFO
    ("/m2/../static/a.css", None, None),  # beneath root2: root2/static/a.css is not there
    ("/", None, None),
    ("", None, None),
]


@pytest.mark.parametrize("path, status, body", CASES, ids=[c[0] or "empty" for c in CASES])
def test_what_each_path_gets(tree, opener, path, status, body):
    answer = get(make(tree), path)
    if status is None:
        assert answer is None
        return
    assert answer is not None and answer.status == status and answer.body == body
    if status == 403:
        assert answer.fd is None and answer.log and "static: 403" in answer.log
    else:
        real = os.path.realpath(answer.path)
        assert any(real.startswith(str(tree / d) + "/") or real == str(tree / d)
                   for d in ("static", "static2", "fav.ico", "root2")), real


def test_refusal_says_why_and_names_static_safe(tree, opener):
    answer = get(make(tree), "/static/link_out")
    assert "resolves to %s/secret/x, outside %s/static" % (tree, tree) in answer.log
    assert "static-safe" in answer.log


def test_static_safe_allows_symlinks_into_that_directory_only(tree, opener):
    sf = make(tree, static_safe=[str(tree / "safe")])
    answer = get(sf, "/static/link_safe")
    assert answer.status == 200 and answer.body == b"safe\n"
    assert answer.path == str(tree / "safe" / "s.txt")
    assert get(sf, "/static/link_out").status == 403
    assert get(sf, "/static/../safe/s.txt").status == 200  # as uWSGI: the real path counts


def test_only_get_and_head(tree):
    sf = make(tree)
    for method in ("POST", "PUT", "DELETE", "OPTIONS", "get", None):
        assert get(sf, "/static/a.css", method=method) is None


def test_head_has_the_get_headers_and_no_body(tree):
    sf = make(tree)
    full, head = get(sf, "/static/a.css"), get(sf, "/static/a.css", "HEAD", range="bytes=0-1")
    assert head.status == 200 and head.fd is None and head.length == 0
    assert head.headers == full.headers and head.h["Content-Length"] == str(len(CSS))


def test_skip_ext_on_path_info_and_on_the_file(tree):
    sf = make(tree, static_skip_ext=[".php", ".html"])
    assert get(sf, "/static/page.php") is None
    assert get(sf, "/static/sub/") is None  # its index is sub/index.html
    assert get(sf, "/static/a.css").status == 200


def test_prefix_with_trailing_slash_and_root_prefix(tree):
    sf = make(tree, static_map=["/s/=%s/static" % tree], static_map2=[])
    assert get(sf, "/s/a.css").body == CSS and get(sf, "/s") is None
    sf = make(tree, static_map=["/=%s/static" % tree], static_map2=[])
    assert get(sf, "/a.css").body == CSS and get(sf, "/../secret/x").status == 403


def test_check_static_looks_up_the_whole_path_info_first(tree):
    sf = make(tree, check_static=[str(tree / "static2")])
    assert get(sf, "/a.css").body == b"shadowed\n"
    assert get(sf, "/static/a.css").body == CSS  # not in static2/static/: the map


def test_missing_map_directory_is_skipped_then_found_when_it_appears(tree, tmp_path):
    later = tmp_path / "later"
    sf = make(tree, static_map=["/late=%s" % later, "/late=%s/static" % tree])
    assert get(sf, "/late/a.css").body == CSS
    later.mkdir()
    (later / "a.css").write_bytes(b"late\n")
    assert get(sf, "/late/a.css").body == b"late\n"


def test_relative_directories_resolve_against_the_working_directory(tree, monkeypatch):
    monkeypatch.chdir(tree)
    sf = make(tree, static_map=["/static=static"], static_map2=[])
    assert get(sf, "/static/a.css").path == str(tree / "static" / "a.css")


def test_unreadable_file_is_403_with_a_log_line(tree):
    # root reads everything: a forked child drops to nobody and asks.
    if os.geteuid() != 0 and os.access(tree / "static" / "unreadable.txt", os.R_OK):
        pytest.skip("this user can read a mode-000 file")
    sf = make(tree)
    rfd, wfd = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: never returns into pytest
        try:
            os.close(rfd)
            if os.geteuid() == 0:
                nobody = pwd.getpwnam("nobody")
                os.setgid(nobody.pw_gid)
                os.setuid(nobody.pw_uid)
            a, b = get(sf, "/static/unreadable.txt"), get(sf, "/static/a.css")
            os.write(wfd, json.dumps([a.status, a.fd, a.log, b.status]).encode())
        finally:
            os._exit(0)
    os.close(wfd)
    with os.fdopen(rfd, "rb") as f:
        out = f.read()
    assert os.waitpid(pid, 0)[1] == 0
    status, fd, line, ok = json.loads(out)
    assert (status, fd, ok) == (403, None, 200)
    assert "unreadable.txt: permission denied" in line


# -- headers -------------------------------------------------------------------------

def test_content_type_length_last_modified_etag(tree):
    sf = make(tree)
    a = get(sf, "/static/a.css")
    mtime = int(os.stat(tree / "static" / "a.css").st_mtime)
    assert a.h["Content-Type"] == "text/css" and a.h["Content-Length"] == str(len(CSS))
    assert calendar.timegm(parsedate_tz(a.h["Last-Modified"])[:6] + (0, 1, 0)) == mtime
    assert a.h["ETag"] == '"%x-%x"' % (mtime, len(CSS)) and a.h["Accept-Ranges"] == "bytes"
    assert get(sf, "/static/x.unknownext").h["Content-Type"] == "application/octet-stream"
    assert get(sf, "/static/noext").h["Content-Type"] == "application/octet-stream"


def test_mimefile_adds_and_overrides_types(tree, tmp_path):
    mime = tmp_path / "mime.types"
    mime.write_text("# comment\ntext/x-unknown unknownext other\ntext/x-css-mine css\n")
    sf = make(tree, mimefile=[str(mime)])
    assert get(sf, "/static/x.unknownext").h["Content-Type"] == "text/x-unknown"
    assert get(sf, "/static/a.css").h["Content-Type"] == "text/x-css-mine"


def test_if_modified_since_and_if_none_match(tree):
    sf = make(tree, static_expires=["\\.css$ 600"])
    a = get(sf, "/static/a.css")
    lm, tag = a.h["Last-Modified"], a.h["ETag"]
    hit = get(sf, "/static/a.css", if_modified_since=lm)
    assert hit.status == 304 and hit.fd is None and hit.body == b""
    assert hit.h["ETag"] == tag and "Expires" in hit.h and hit.h["Cache-Control"] == "max-age=600"
    assert "Content-Length" not in hit.h
    assert get(sf, "/static/a.css", if_modified_since="Mon, 01 Jan 1990 00:00:00 GMT").status == 200
    assert get(sf, "/static/a.css", if_modified_since="yesterday").status == 200
    assert get(sf, "/static/a.css", if_none_match=tag).status == 304
    assert get(sf, "/static/a.css", if_none_match='W/' + tag).status == 304
    assert get(sf, "/static/a.css", if_none_match='"x", ' + tag).status == 304
    assert get(sf, "/static/a.css", if_none_match="*").status == 304
    # If-None-Match wins over If-Modified-Since
    assert get(sf, "/static/a.css", if_none_match='"other"', if_modified_since=lm).status == 200


RANGES = [
    # (Range, If-Range (None, "tag", "lm", "stale", "weak"), status, body, Content-Range)
    ("bytes=0-3", None, 206, CSS[:4], "bytes 0-3/%d" % len(CSS)),
    ("bytes=5-", None, 206, CSS[5:], "bytes 5-%d/%d" % (len(CSS) - 1, len(CSS))),
    ("bytes=-4", None, 206, CSS[-4:], "bytes %d-%d/%d" % (len(CSS) - 4, len(CSS) - 1, len(CSS))),
    ("bytes=-1000", None, 206, CSS, "bytes 0-%d/%d" % (len(CSS) - 1, len(CSS))),
    ("bytes=3-1000", None, 206, CSS[3:], "bytes 3-%d/%d" % (len(CSS) - 1, len(CSS))),
    ("BYTES = 0-0", None, 206, CSS[:1], "bytes 0-0/%d" % len(CSS)),
    ("bytes=1000-", None, 416, b"", "bytes */%d" % len(CSS)),
    ("bytes=-0", None, 416, b"", "bytes */%d" % len(CSS)),
    ("bytes=3-1", None, 200, CSS, None),
    ("bytes=0-1,3-4", None, 200, CSS, None),
    ("items=0-1", None, 200, CSS, None),
    ("bytes=a-b", None, 200, CSS, None),
    ("bytes=", None, 200, CSS, None),
    ("bytes=0-3", "tag", 206, CSS[:4], "bytes 0-3/%d" % len(CSS)),
    ("bytes=0-3", "lm", 206, CSS[:4], "bytes 0-3/%d" % len(CSS)),
    ("bytes=0-3", "stale", 200, CSS, None),
    ("bytes=0-3", "weak", 200, CSS, None),
    ("bytes=0-3", '"other"', 200, CSS, None),
]


@pytest.mark.parametrize("rng, if_range, status, body, content_range", RANGES)
def test_ranges(tree, rng, if_range, status, body, content_range):
    sf = make(tree)
    plain = get(sf, "/static/a.css")
    headers = {"range": rng}
    if if_range is not None:
        headers["if_range"] = {"tag": plain.h["ETag"], "lm": plain.h["Last-Modified"],
                               "stale": "Mon, 01 Jan 1990 00:00:00 GMT",
                               "weak": "W/" + plain.h["ETag"]}.get(if_range, if_range)
    a = get(sf, "/static/a.css", **headers)
    assert (a.status, a.body, a.h.get("Content-Range")) == (status, body, content_range)
    assert a.h["Content-Length"] == str(len(body))
    if status == 416:
        assert a.fd is None


def test_empty_file_ignores_range(tmp_path):
    (tmp_path / "e.txt").write_bytes(b"")
    sf = StaticFiles.from_config(Config.defaults(static_map=["/s=%s" % tmp_path]))
    a = get(sf, "/s/e.txt", range="bytes=0-")
    assert (a.status, a.body, a.h["Content-Length"]) == (200, b"", "0")


GZIP = [
    # (Accept-Encoding, body, Content-Encoding)
    ("gzip", b"GZ" * 5, "gzip"),
    ("gzip, deflate, br", b"BR" * 3, "br"),
    ("br;q=0, gzip", b"GZ" * 5, "gzip"),
    ("gzip;q=0", JS, None),
    ("gzip;q=0.000, br;q=0", JS, None),
    ("x-gzip", b"GZ" * 5, "gzip"),
    ("*", b"BR" * 3, "br"),
    ("*, gzip;q=0, br;q=0", JS, None),
    ("identity", JS, None),
    ("", JS, None),
    (None, JS, None),
]


@pytest.mark.parametrize("accept, body, coding", GZIP)
def test_precompressed_variants(tree, accept, body, coding):
    sf = make(tree, static_gzip_all=True)
    headers = {} if accept is None else {"accept_encoding": accept}
    a = get(sf, "/static/app.js", **headers)
    assert a.body == body and a.h.get("Content-Encoding") == coding
    assert a.h["Content-Type"] in ("application/javascript", "text/javascript")
    assert a.h["Vary"] == "Accept-Encoding"  # also on the plain answer: a variant exists
    assert a.h["Content-Length"] == str(len(body))


def test_variant_rules_and_no_vary_without_a_variant(tree):
    assert "Content-Encoding" not in get(make(tree), "/static/app.js", accept_encoding="gzip").h
    for values in ({"static_gzip_ext": [".js"]}, {"static_gzip": [r"app\.js$"]},
                   {"static_gzip_dir": [str(tree / "static")]}, {"static_gzip_all": True}):
        sf = make(tree, **values)
        assert get(sf, "/static/app.js", accept_encoding="gzip").h["Content-Encoding"] == "gzip"
        plain = get(sf, "/static/plain.txt", accept_encoding="gzip")
        assert "Vary" not in plain.h and "Content-Encoding" not in plain.h
    sf = make(tree, static_gzip_ext=[".css"])
    assert "Content-Encoding" not in get(sf, "/static/app.js", accept_encoding="gzip").h


def test_variant_304_and_range_use_the_variant(tree):
    sf = make(tree, static_gzip_all=True)
    gz = get(sf, "/static/app.js", accept_encoding="gzip")
    assert gz.h["ETag"] != get(sf, "/static/app.js").h["ETag"]
    r = get(sf, "/static/app.js", accept_encoding="gzip", range="bytes=0-1")
    assert (r.status, r.body, r.h["Content-Range"]) == (206, b"GZ", "bytes 0-1/10")
    n = get(sf, "/static/app.js", accept_encoding="gzip", if_none_match=gz.h["ETag"])
    assert n.status == 304 and n.h["Vary"] == "Accept-Encoding"


def http_seconds(text: str) -> int:
    return calendar.timegm(parsedate_tz(text)[:6] + (0, 1, 0))


def test_expires_and_max_age_agree(tree):
    sf = make(tree, static_expires=["/* 31557600"])
    before = int(time.time())
    a = get(sf, "/static/a.css")
    assert a.h["Cache-Control"] == "max-age=31557600"
    assert before + 31557600 <= http_seconds(a.h["Expires"]) <= int(time.time()) + 31557600


def test_expires_mtime_counts_from_the_file(tree, tmp_path):
    (tmp_path / "old.png").write_bytes(b"png")
    os.utime(tmp_path / "old.png", (1000, 1000))
    (tmp_path / "new.png").write_bytes(b"png")
    mtime = int(os.stat(tmp_path / "new.png").st_mtime)
    sf = StaticFiles.from_config(Config.defaults(
        static_map=["/s=%s" % tmp_path], static_expires_type_mtime=["image/png=3600"]))
    old, new = get(sf, "/s/old.png"), get(sf, "/s/new.png")
    assert http_seconds(old.h["Expires"]) == 4600 and old.h["Cache-Control"] == "max-age=0"
    assert http_seconds(new.h["Expires"]) == mtime + 3600
    left = int(new.h["Cache-Control"].split("=")[1])
    assert 0 <= mtime + 3600 - int(time.time()) - left <= 1


@pytest.mark.parametrize("values, path, seconds", [
    ({"static_expires_type": ["text/css=10"]}, "/static/a.css", 10),
    ({"static_expires_type": ["text/css=10"]}, "/static/app.js", None),
    ({"static_expires_uri": ["^/static/a 20"]}, "/static/a.css", 20),
    ({"static_expires_path_info": ["css$ 30"]}, "/static/a.css", 30),
    ({"static_expires": ["static/a\\.css$ 40"]}, "/static/a.css", 40),
    # uWSGI's order: file path, then PATH_INFO, REQUEST_URI, type; the first wins
    ({"static_expires_type": ["text/css=10"], "static_expires_uri": [". 20"],
      "static_expires_path_info": [". 30"], "static_expires": ["nomatch 1", ". 40"]},
     "/static/a.css", 40),
    ({"static_expires_type": ["text/css=10"], "static_expires_uri": [". 20"]},
     "/static/a.css", 20),
])
def test_expires_rules(tree, values, path, seconds):
    a = get(make(tree, **values), path)
    if seconds is None:
        assert "Expires" not in a.h and "Cache-Control" not in a.h
    else:
        assert a.h["Cache-Control"] == "max-age=%d" % seconds


# -- robustness ------------------------------------------------------------------------

def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


TOKENS = ["/", "//", ".", "..", "../", "/..", "static", "static2", "static_evil", "secret",
          "a.css", "app.js", "sub", "index.html", "link_out", "link_in", "dirlink_out",
          "dirlink_in", "loop", "fifo", "proc", "link_safe", "unreadable.txt", "\\", "\x00",
          "%2f", "%2e", "\xc0\xae", "\xff", "\u0101", "\ud800", "~", "*", "?", " ", ";", "m2",
          "favicon.ico", "deep", "er", "f.txt", "x"]


@settings(max_examples=600, deadline=None, suppress_health_check=list(HealthCheck))
@given(parts=st.lists(st.one_of(st.sampled_from(TOKENS), st.text(max_size=4)), max_size=12),
       method=st.sampled_from(["GET", "HEAD"]),
       headers=st.dictionaries(st.sampled_from(["range", "if_range", "if_modified_since",
                                                "if_none_match", "accept_encoding"]),
                               st.text(max_size=30)))
def test_fuzz_never_raises_never_leaves_the_maps(tree, parts, method, headers):
    static_open.OPENAT2.ok = bool(len(parts) % 2) and OPENAT2_AVAILABLE
    try:
        sf = fuzz_resolver(tree)
        before = open_fds()
        path = "".join(parts)
        answer = get(sf, path, method, **headers)
        assert open_fds() == before  # nothing leaked (get() closed the answer)
        if answer is not None and answer.status not in (403,):
            real = os.path.realpath(answer.path)
            assert any(real == str(tree / d) or real.startswith(str(tree / d) + "/")
                       for d in ("static", "static2", "fav.ico", "root2", "safe")), (path, real)
            assert not real.startswith(str(tree / "secret"))
            assert not real.startswith(str(tree / "static_evil"))
    finally:
        static_open.OPENAT2.ok = OPENAT2_AVAILABLE


OPENAT2_AVAILABLE = static_open.OPENAT2.ok
_FUZZ: dict = {}


def fuzz_resolver(tree: Path) -> StaticFiles:
    if tree not in _FUZZ:
        _FUZZ.clear()
        _FUZZ[tree] = make(tree, static_safe=[str(tree / "safe")], static_gzip_all=True,
                           check_static=[str(tree / "static2")],
                           static_expires=["\\.css$ 60"], static_expires_uri_mtime=[". 5"])
        for root in [m.root for m in _FUZZ[tree].maps] + _FUZZ[tree].safe:
            assert root.ready()  # opened once and kept: not a leak
    return _FUZZ[tree]


def test_lookup_never_raises_on_odd_environs(tree):
    sf = make(tree)
    for environ in ({}, {"REQUEST_METHOD": "GET"}, {"REQUEST_METHOD": "GET", "PATH_INFO": None},
                    {"REQUEST_METHOD": "GET", "PATH_INFO": b"/static/a.css"},
                    {"REQUEST_METHOD": "GET", "PATH_INFO": "/static/a.css",
                     "HTTP_RANGE": "bytes=99999999999999999999999-",
                     "HTTP_IF_MODIFIED_SINCE": "Mon, 01 Jan 99999 00:00:00 GMT"}):
        answer = sf.lookup(environ)
        if answer is not None:
            answer.close()


def test_walk_refuses_what_openat2_refuses(tree):
    root = os.open(tree / "static", os.O_PATH | os.O_DIRECTORY)
    try:
        for rel in (b"../secret/x", b"link_out", b"link_abs_in", b"dirlink_out/x", b"/etc/passwd"):
            with pytest.raises(OSError) as info:
                static_open.walk_beneath(root, rel, os.O_RDONLY)
            assert info.value.errno == 18, rel  # EXDEV
        with pytest.raises(OSError) as info:
            static_open.walk_beneath(root, b"loop", os.O_RDONLY)
        assert info.value.errno == 40  # ELOOP
        fd = static_open.walk_beneath(root, b"dirlink_in/er/../er/f.txt", os.O_RDONLY)
        assert os.read(fd, 100) == b"deep\n"
        os.close(fd)
    finally:
        os.close(root)


def test_parsers_directly():
    assert parse_range("bytes=0-", 0) is None
    assert parse_range("bytes=" + "9" * 5000, 10) is None
    assert accepted_codings("GZIP;Q=1.0") == {"gzip"}
    assert accepted_codings("gzip;q=nan, br;q=abc") == set()


# -- configuration ----------------------------------------------------------------------

def cfg_from(tmp_path, text: str) -> Config:
    path = tmp_path / "site.ini"
    path.write_text("[uwsgi]\nsocket = :1\nmodule = app\n" + text)
    return load(["--ini", str(path)], {})


def test_every_static_option_from_ini(tmp_path):
    cfg = cfg_from(tmp_path, """
static-map = /static=/srv/static
static-map = /static = /srv/other
static-map2 = /m2=/srv/m2
check-static = /srv/a
static-check = /srv/b
static-index = index.html
static-safe = /srv/safe
static-skip-ext = .php
static-gzip-all = true
static-gzip-dir = /srv/static/CACHE
static-gzip-prefix = /srv/gz
static-gzip-ext = .js
static-gzip-suffix = .css
static-gzip = \\.svg$
static-expires = /* 31557600
static-expires-mtime = \\.png$ 10
static-expires-uri = ^/static 20
static-expires-uri-mtime = ^/m 21
static-expires-path-info = css$ 30
static-expires-path-info-mtime = js$ 31
static-expires-type = text/css=40
static-expires-type-mtime = image/png=41
mime-file = /etc/mime.types
honour-range = true
file-serve-mode = x-accel-redirect
offload-threads = 4
static-offload-to-thread = 2
static-cache-paths = 30
static-cache-paths-name = paths
""")
    assert cfg.static_map == ["/static=/srv/static", "/static=/srv/other"]
    assert cfg.static_map2 == ["/m2=/srv/m2"] and cfg.check_static == ["/srv/a", "/srv/b"]
    assert cfg.static_index == ["index.html"] and cfg.static_safe == ["/srv/safe"]
    assert cfg.static_gzip_all is True and cfg.static_gzip_dir == ["/srv/static/CACHE", "/srv/gz"]
    assert cfg.static_gzip_ext == [".js", ".css"] and cfg.static_gzip == ["\\.svg$"]
    assert cfg.static_expires == ["/* 31557600"] and cfg.static_expires_type == ["text/css=40"]
    assert cfg.static_expires_path_info_mtime == ["js$ 31"]
    assert cfg.mimefile == ["/etc/mime.types"] and cfg.file_serve_mode == "x-accel-redirect"
    assert cfg.offload_threads == 4
    assert not [w for w in cfg.warnings if "on this machine" not in w]
    notes = "\n".join(cfg.notes)
    for name in ("honour-range", "offload-threads",
                 "static-offload-to-thread", "static-cache-paths", "static-cache-paths-name"):
        assert "%s is accepted" % name in notes
    sf = StaticFiles.from_config(cfg)
    assert [m.kind for m in sf.maps] == ["check", "check", "map", "map", "map2"]
    assert len(sf.expires) == 8


@pytest.mark.parametrize("line, expected", [
    ("static-map = /static", "expected /PREFIX=DIR"),
    ("static-map = /static=", "expected /PREFIX=DIR"),
    ("static-map2 = =/srv", "expected /PREFIX=DIR"),
    ("static-expires = \\.css$", "expected REGEX SECONDS"),
    ("static-expires = ([ 10", "valid regular expression"),
    ("static-expires-uri = ^/s ten", "a whole number of seconds"),
    ("static-expires-type = text/css", "expected MIME/TYPE=SECONDS"),
    ("static-expires-type-mtime = text/css=-1", "a whole number of seconds"),
    ("static-gzip = *x", "valid regular expression"),
    ("file-serve-mode = carrier-pigeon", "expected one of x-sendfile"),
    ("offload-threads = many", "expected a whole number"),
])
def test_malformed_values_are_errors_naming_the_option(tmp_path, line, expected):
    with pytest.raises(ConfigError) as info:
        cfg_from(tmp_path, line + "\n")
    (message,) = info.value.messages
    assert "site.ini:4: %s = " % line.split(" =")[0] in message and expected in message


def test_from_config_is_none_without_maps_and_checks_what_it_uses(tmp_path):
    assert StaticFiles.from_config(Config.defaults(static_index=["index.html"])) is None
    with pytest.raises(ConfigError, match="static-map = 'nothing'"):
        StaticFiles.from_config(Config.defaults(static_map=["nothing"]))
    with pytest.raises(ConfigError, match="static-expires-uri"):
        StaticFiles.from_config(Config.defaults(static_map=["/s=/x"],
                                                static_expires_uri=["([ 1"]))


def test_unreadable_mimefile_is_logged_not_fatal(tmp_path, capfd):
    sf = StaticFiles.from_config(Config.defaults(static_map=["/s=%s" % tmp_path],
                                                 mimefile=[str(tmp_path / "none.types")]))
    assert sf is not None
    assert "mimefile = %s: cannot be read" % (tmp_path / "none.types") in capfd.readouterr().err


def test_device_inside_a_map_is_not_served(tmp_path):
    try:
        os.mknod(tmp_path / "null", 0o666 | stat.S_IFCHR, os.makedev(1, 3))
    except OSError as exc:
        pytest.skip("cannot make a device node here: %s" % exc)
    sf = StaticFiles.from_config(Config.defaults(static_map=["/s=%s" % tmp_path]))
    assert get(sf, "/s/null") is None


def test_swapping_a_directory_for_a_symlink_never_leads_out(tree, opener, tmp_path):
    # A writer flips race/d between a real directory and a symlink to the
    # secret directory while lookups run: every answer is the inside file or
    # a miss/403, never the secret.
    top = tmp_path / "top"
    (top / "race").mkdir(parents=True)
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "f.txt").write_bytes(b"SECRET")
    inside = top / "race" / "inside"
    inside.mkdir()
    (inside / "f.txt").write_bytes(b"inside")
    link = top / "race" / "d"
    stop = threading.Event()

    def flip():
        while not stop.is_set():
            for target in (outside, "inside"):
                tmp = top / "race" / "tmp"
                tmp.symlink_to(target)
                os.replace(tmp, link)

    sf = StaticFiles.from_config(Config.defaults(static_map=["/s=%s/race" % top]))
    writer = threading.Thread(target=flip)
    writer.start()
    seen = set()
    try:
        deadline = time.monotonic() + 1.0
        while time.monotonic() < deadline:
            a = get(sf, "/s/d/f.txt")
            seen.add(None if a is None else (a.status, a.body))
    finally:
        stop.set()
        writer.join()
    assert (200, b"SECRET") not in seen
    assert (403, b"") in seen  # the outside target was met, and refused
    assert (200, b"inside") in seen


def test_refusal_log_line_cannot_be_forged_by_the_path(tree):
    answer = get(make(tree), "/static/../x\n[pid: 1] GET /admin => 200\r\x1b[2J")
    assert answer.status == 403
    assert "\n" not in answer.log and "\r" not in answer.log and "\x1b" not in answer.log
    assert "x\\x0a[pid: 1]" in answer.log


def test_missing_static_directories_are_warned_at_start_up(tmp_path):
    (tmp_path / "there").mkdir()
    cfg = cfg_from(tmp_path, "chdir = %s\nstatic-map = /a=there\nstatic-map = /b=/no/such\n"
                             "static-map2 = /c=gone\ncheck-static = missing\n" % tmp_path)
    site = tmp_path / "site.ini"
    assert [w for w in cfg.warnings if "static" in w] == [
        "%s:6: static-map = /b=/no/such: no such directory (skipped until it exists) on this "
        "machine" % site,
        "%s:7: static-map2 = /c=gone: no such directory (skipped until it exists) on this "
        "machine" % site,
        "%s:8: check-static = missing: no such directory (skipped until it exists) on this "
        "machine" % site]


def test_execute_only_directory_serves_its_index_and_refuses_the_rest(tree, tmp_path):
    top = Path(tempfile.mkdtemp(prefix="static-xonly-"))
    try:
        os.chmod(top, 0o755)
        (top / "x").mkdir()
        (top / "x" / "index.html").write_bytes(b"idx")
        (top / "x" / "mode000").write_bytes(b"no")
        os.chmod(top / "x" / "index.html", 0o644)
        os.chmod(top / "x" / "mode000", 0)
        os.chmod(top / "x", 0o711)
        no_index = StaticFiles.from_config(Config.defaults(static_map=["/s=%s" % top]))
        with_index = StaticFiles.from_config(Config.defaults(static_map=["/s=%s" % top],
                                                             static_index=["index.html"]))
        out = as_nobody(lambda: [getattr(get(with_index, "/s/x/"), "status", None),
                                 getattr(get(with_index, "/s/x/"), "body", b"").decode(),
                                 getattr(get(no_index, "/s/x/"), "status", None),
                                 getattr(get(with_index, "/s/x/mode000"), "status", None)])
        assert out == [200, "idx", None, 403]  # a directory without index: the app
    finally:
        shutil.rmtree(top)


def as_nobody(job):
    """``job()``'s JSON-able result, computed in a forked child running as nobody."""
    rfd, wfd = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            os.close(rfd)
            if os.geteuid() == 0:
                nobody = pwd.getpwnam("nobody")
                os.setgid(nobody.pw_gid)
                os.setuid(nobody.pw_uid)
            os.write(wfd, json.dumps(job()).encode())
        finally:
            os._exit(0)
    os.close(wfd)
    with os.fdopen(rfd, "rb") as f:
        out = f.read()
    assert os.waitpid(pid, 0)[1] == 0
    return json.loads(out)
