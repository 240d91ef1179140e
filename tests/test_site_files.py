"""The deployment files in nginx/ work as shipped: site.conf + uwsgi_params in a
real nginx, site.ini in uwsgigw, and ``make run``'s devnginx demo.

Only the machine-specific lines are rewritten (ports, socket path, project
directory); everything else is the file users copy.
"""

from __future__ import annotations

import grp
import os
import pwd
import re
import signal
import stat
import subprocess

import pytest

from conftest import (DJANGO_DIR, NGINX_DIR, http_request, python_module_cmd, server_env,
                      wait_until)
from uwsgigw import devnginx

STANDARD_PARAMS = [
    ("QUERY_STRING", "$query_string"), ("REQUEST_METHOD", "$request_method"),
    ("CONTENT_TYPE", "$content_type"), ("CONTENT_LENGTH", "$content_length"),
    ("REQUEST_URI", "$request_uri"), ("PATH_INFO", "$document_uri"),
    ("DOCUMENT_ROOT", "$document_root"), ("SERVER_PROTOCOL", "$server_protocol"),
    ("REQUEST_SCHEME", "$scheme"), ("HTTPS", "$https if_not_empty"),
    ("REMOTE_ADDR", "$remote_addr"), ("REMOTE_PORT", "$remote_port"),
    ("SERVER_PORT", "$server_port"), ("SERVER_NAME", "$server_name"),
]


def parse_params(text: str) -> list[tuple[str, str]]:
    out = []
    for line in text.splitlines():
        m = re.match(r"\s*uwsgi_param\s+(\S+)\s+(.+?);\s*$", line)
        if m:
            out.append((m.group(1), re.sub(r"\s+", " ", m.group(2))))
    return out


def test_uwsgi_params_is_the_standard_list():
    assert parse_params((NGINX_DIR / "uwsgi_params").read_text()) == STANDARD_PARAMS


def test_uwsgi_params_matches_the_system_copy():
    system = "/etc/nginx/uwsgi_params"
    if not os.path.exists(system):
        pytest.skip("no system nginx uwsgi_params")
    # Debian adds HTTP_HOST $host as a security workaround; the rest must match.
    theirs = [p for p in parse_params(open(system).read()) if p[0] != "HTTP_HOST"]
    assert theirs == STANDARD_PARAMS


def test_site_conf_has_the_templated_lines():
    text = (NGINX_DIR / "site.conf").read_text()
    out = devnginx.render_site(text, listen="127.0.0.1:1234", upstream="/tmp/x.sock",
                               params_path="/p/uwsgi_params", static_dir="/s")
    assert "listen 127.0.0.1:1234;" in out
    assert "uwsgi_pass unix:/tmp/x.sock;" in out
    assert "include /p/uwsgi_params;" in out
    assert "alias /s/;" in out
    assert "client_max_body_size 100m;" in out
    # Anything else is untouched.
    changed = [a for a, b in zip(text.splitlines(), out.splitlines()) if a != b]
    assert len(changed) == 4, changed


def test_templating_fails_loudly_when_site_conf_drifts():
    text = (NGINX_DIR / "site.conf").read_text().replace("listen 80;", "listen 8080;")
    with pytest.raises(devnginx.DevNginxError, match="listen 80"):
        devnginx.render_site(text, listen="127.0.0.1:1", upstream="/x", params_path="/p",
                             static_dir="/s")


@pytest.mark.parametrize("target,expected", [
    ("/run/a.sock", "unix:/run/a.sock"), ("unix:/run/a.sock", "unix:/run/a.sock"),
    ("127.0.0.1:8000", "127.0.0.1:8000"), ("[::1]:8000", "[::1]:8000"),
    (":8000", "127.0.0.1:8000"),
])
def test_upstream_forms(target, expected):
    assert devnginx.normalize_upstream(target) == expected


# -- site.ini ------------------------------------------------------------------------

def template_ini(text: str, replacements: dict[str, str]) -> str:
    """Replace ``key = value`` lines (keeping their `` # comment``) by key."""
    out, seen = [], set()
    for line in text.splitlines():
        m = re.match(r"(\s*)([\w-]+)(\s*=\s*)(.*?)(\s+#.*)?$", line)
        if m and m.group(2) in replacements:
            seen.add(m.group(2))
            line = "%s%s%s%s%s" % (m.group(1), m.group(2), m.group(3),
                                   replacements[m.group(2)], m.group(5) or "")
        out.append(line)
    assert seen == set(replacements), "site.ini lacks %s" % (set(replacements) - seen)
    return "\n".join(out) + "\n"


def test_site_ini_has_the_expected_options():
    text = (NGINX_DIR / "site.ini").read_text()
    assert text.lstrip().startswith("[uwsgi]")
    for key in ("module", "master", "processes", "socket", "chmod-socket", "chown-socket",
                "vacuum", "harakiri", "buffer-size", "post-buffering"):
        assert re.search(r"^%s\s*=" % re.escape(key), text, re.M), key
    assert "socket = /run/uwsgigw/site.sock" in text
    assert "uwsgi_pass unix:/run/uwsgigw/site.sock;" in (NGINX_DIR / "site.conf").read_text()


@pytest.fixture
def site(tmp_path, uwsgigw_factory, nginx_factory):
    from conftest import short_tmpdir
    sock = os.path.join(short_tmpdir(), "site.sock")
    ini = tmp_path / "site.ini"
    ini.write_text(template_ini((NGINX_DIR / "site.ini").read_text(),
                                {"base": str(DJANGO_DIR), "socket": sock}))
    server = uwsgigw_factory("--ini", str(ini), socket=sock)
    nginx = nginx_factory(sock)
    return server, nginx


def test_site_conf_and_site_ini_serve_the_django_project(site):
    server, nginx = site
    r = http_request(nginx.port, "GET", "/")
    assert r.status == 200, (r.body, server.log_text(), nginx.error_log())
    assert r.body == b"Hello from Django on uwsgigw"
    assert "2 workers" in server.log_text()  # processes = 2 from the INI


def test_ini_socket_mode_and_vacuum(site):
    server, _ = site
    st = os.stat(server.socket)
    assert stat.S_IMODE(st.st_mode) == 0o660  # chmod-socket = 660
    if os.geteuid() == 0:  # chown-socket = www-data:www-data
        assert (pwd.getpwuid(st.st_uid).pw_name, grp.getgrgid(st.st_gid).gr_name) == (
            "www-data", "www-data")
    assert server.stop() == 0
    assert not os.path.exists(server.socket)  # vacuum = true


def test_ini_buffer_size_allows_big_headers(site):
    _, nginx = site
    # ~18 KB of headers: over uWSGI's default 4096, under the INI's 65536.
    headers = {"X-Big-%d" % i: "h" * 6000 for i in range(3)}
    r = http_request(nginx.port, "GET", "/", headers=headers)
    assert r.status == 200


def test_ini_post_buffering_form(site):
    _, nginx = site
    body = b"name=" + b"n" * 100_000 + b"&tags=a"
    r = http_request(nginx.port, "POST", "/form/", body=body,
                     headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert r.status == 200 and b'"tags": ["a"]' in r.body


def test_static_location_is_served_by_nginx(site):
    server, nginx = site
    with open(os.path.join(nginx.static_dir, "hello.txt"), "w") as f:
        f.write("static hello\n")
    mark = server.log_mark()
    r = http_request(nginx.port, "GET", "/static/hello.txt")
    assert r.status == 200 and r.body == b"static hello\n"
    assert r.header("Content-Type").startswith("text/plain")
    assert "/static/hello.txt" not in server.log_since(mark)


# -- make run ------------------------------------------------------------------------

def test_devnginx_demo(tmp_path):
    """``python -m uwsgigw.devnginx --demo`` (what ``make run`` starts), the installed one:
    its nginx/ files come from the package when installed from a wheel."""
    out_path = tmp_path / "demo.out"
    with open(out_path, "wb") as out:
        proc = subprocess.Popen(python_module_cmd("uwsgigw.devnginx", "--demo", "--port", "0"),
                                stdin=subprocess.DEVNULL, stdout=out,
                                stderr=subprocess.STDOUT, env=server_env(),
                                start_new_session=True)
    children: list[int] = []
    try:
        def banner():
            text = out_path.read_text(errors="replace")
            if proc.poll() is not None:
                raise AssertionError("devnginx exited %s:\n%s" % (proc.returncode, text))
            return re.search(r"at (http://127\.0\.0\.1:(\d+))/", text) and \
                re.search(r"nginx pid (\d+), uwsgigw pid (\d+)", text) and text
        text = wait_until(banner, 60, what="the demo banner")
        port = int(re.search(r"at http://127\.0\.0\.1:(\d+)/", text).group(1))
        children = [int(p) for p in re.search(r"nginx pid (\d+), uwsgigw pid (\d+)",
                                              text).groups()]
        r = http_request(port, "GET", "/")
        assert r.status == 200 and b"Hello from uwsgigw" in r.body
        assert http_request(port, "GET", "/health").body == b"ok\n"
        os.kill(proc.pid, signal.SIGTERM)
        assert proc.wait(30) == 0
        for pid in children:  # devnginx stopped both of its children
            wait_until(lambda: not _alive(pid), 10, what="pid %d to exit" % pid)
    finally:
        devnginx.stop_process_group(proc, signal.SIGTERM, 10)
        for pid in children:  # each child leads its own process group
            if _alive(pid):
                try:
                    os.killpg(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie is dead for our purposes (its parent reaps it).
    try:
        with open("/proc/%d/stat" % pid) as f:
            return f.read().split(") ")[-1][0] != "Z"
    except FileNotFoundError:
        return False
